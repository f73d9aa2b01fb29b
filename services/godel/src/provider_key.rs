//! `godel provider-key …`: the team's model-provider keys, which Godel's LLM proxy
//! swaps in for agents (who never see them). The secret is read from standard input
//! or an environment variable — never from the command line, where other users of
//! the machine could see it — and is never printed back.
//!
//! Exit codes: 0 done, 2 an error (printed with its fix).

use std::io::{IsTerminal, Read};
use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;

use crate::cli::{Output, ProviderKeyArgs, ProviderKeyCommand, SecretSource};
use crate::rest::Api;
use crate::work::{emit, print_json, run};

/// `godel provider-key`.
pub fn run_provider_key(args: ProviderKeyArgs) -> anyhow::Result<ExitCode> {
    run(async move {
        let api = Api::connect(&args.api).await?;
        let output = args.api.output;
        match args.command {
            ProviderKeyCommand::List => {
                let listed = api.get(&api.team_path("/provider-keys")).await?;
                match output {
                    Output::Json => print_json(&listed)?,
                    Output::Text => {
                        let keys = listed["keys"].as_array().cloned().unwrap_or_default();
                        if keys.is_empty() {
                            emit("No provider keys. Add one with `godel provider-key set`.\n")?;
                        }
                        for key in keys {
                            emit(&format!(
                                "{}  {}/{}  …{}  version {}\n",
                                key["id"].as_str().unwrap_or("?"),
                                key["provider"].as_str().unwrap_or("?"),
                                key["name"].as_str().unwrap_or("?"),
                                key["hint"].as_str().unwrap_or(""),
                                key["version"].as_u64().unwrap_or(0),
                            ))?;
                        }
                    }
                }
            }
            ProviderKeyCommand::Set(set) => {
                let secret = secret(&set.source)?;
                let stored = api
                    .post(
                        &api.team_path("/provider-keys"),
                        &json!({"provider": set.provider, "name": set.name, "secret": secret}),
                    )
                    .await?;
                report(output, &stored, "stored")?;
            }
            ProviderKeyCommand::Rotate(rotate) => {
                let secret = secret(&rotate.source)?;
                let rotated = api
                    .post(
                        &api.team_path(&format!("/provider-keys/{}/rotate", rotate.key_id)),
                        &json!({"secret": secret}),
                    )
                    .await?;
                report(output, &rotated, "rotated")?;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn report(output: Output, response: &serde_json::Value, what: &str) -> anyhow::Result<()> {
    match output {
        Output::Json => print_json(response),
        Output::Text => emit(&format!(
            "Provider key {} {what} (version {}); sessions started from now on use it.\n",
            response["key"]["id"].as_str().unwrap_or("?"),
            response["key"]["version"].as_u64().unwrap_or(0),
        )),
    }
}

/// The secret from `source`, trimmed of surrounding whitespace.
fn secret(source: &SecretSource) -> anyhow::Result<String> {
    let raw = if let Some(var) = &source.from_env {
        std::env::var(var).with_context(|| {
            format!(
                "the environment variable {var} is not set: export it, or pipe the key on stdin"
            )
        })?
    } else {
        let mut stdin = std::io::stdin();
        if stdin.is_terminal() {
            eprintln!("Paste the key, then press Ctrl-D:");
        }
        let mut text = String::new();
        stdin
            .read_to_string(&mut text)
            .context("reading the key from standard input")?;
        text
    };
    let secret = raw.trim().to_owned();
    if secret.is_empty() {
        anyhow::bail!(
            "the key is empty: pipe it on stdin (`printenv OPENAI_API_KEY | godel provider-key set openai`) or pass --from-env VAR"
        );
    }
    Ok(secret)
}
