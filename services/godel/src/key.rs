//! `godel key …`: the team's API keys. A new key's secret is printed once, on
//! creation; the server keeps only its hash.
//!
//! Exit codes: 0 done, 2 an error (printed with its fix).

use std::process::ExitCode;

use serde_json::json;

use crate::cli::{KeyArgs, KeyCommand, Output};
use crate::rest::Api;
use crate::work::render::text;
use crate::work::{emit, print_json, run};

/// `godel key …`.
pub fn run_key(args: KeyArgs) -> anyhow::Result<ExitCode> {
    run(async move {
        let api = Api::connect(&args.api).await?;
        let text_out = args.api.output == Output::Text;
        let answer = match args.command {
            KeyCommand::List => {
                let listed = api.get(&api.team_path("/api-keys")).await?;
                if text_out {
                    let keys = listed["keys"].as_array().cloned().unwrap_or_default();
                    if keys.is_empty() {
                        emit(
                            "No API keys. Create one: godel key create <name> --permission <p>\n",
                        )?;
                    }
                    for key in &keys {
                        let permissions: Vec<&str> = key["permissions"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|p| p.as_str())
                            .collect();
                        let expires = text(&key["expiresAt"]);
                        emit(&format!(
                            "{}  {:<20} {}{}\n",
                            text(&key["id"]),
                            text(&key["name"]),
                            permissions.join(", "),
                            if expires.is_empty() {
                                String::new()
                            } else {
                                format!("  expires {expires}")
                            }
                        ))?;
                    }
                }
                listed
            }
            KeyCommand::Create {
                name,
                permissions,
                expires,
            } => {
                let created = api
                    .post(
                        &api.team_path("/api-keys"),
                        &json!({"name": name, "permissions": permissions, "expires_at": expires}),
                    )
                    .await?;
                if text_out {
                    emit(&format!(
                        "Created API key {} ({name}).\n\nSecret — shown only now, store it safely:\n\n    {}\n\nUse it as GODEL_TOKEN or --token.\n",
                        text(&created["key"]["id"]),
                        text(&created["secret"]),
                    ))?;
                }
                created
            }
            KeyCommand::Revoke { key_id } => {
                let revoked = api
                    .delete(&api.team_path(&format!("/api-keys/{key_id}")))
                    .await?;
                if text_out {
                    emit(&format!("Revoked API key {key_id}.\n"))?;
                }
                revoked
            }
        };
        if !text_out {
            print_json(&answer)?;
        }
        Ok(ExitCode::SUCCESS)
    })
}
