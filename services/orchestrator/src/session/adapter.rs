//! Adapters: how a session's agent is started. `sim` runs the simulated agent
//! (`godel-sim-agent`) with flags from the task payload's `sim` object; `pi`,
//! `claude-code` and `codex` run those agent CLIs (see [`crate::adapters`], which
//! also parses their output); every name in `sessions.commands` is a generic command
//! adapter. The simulated agent and commands print lines that
//! [`crate::runtime::event::parse_line`] normalizes.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use godel_config::Secret;
use godel_error::Error;

use super::model::Session;
use crate::adapters::{self, Cli};
use crate::config::SessionsConfig;
use crate::runtime::process::{AgentSpec, StopPolicy};

/// The simulated agent's adapter name.
pub const SIM: &str = "sim";

/// The simulated agent's binary name.
const SIM_BINARY: &str = "godel-sim-agent";

/// Text flags of the simulated agent a payload may set (`{"sim": {"dir": "sim/api"}}`):
/// `dir` must be a relative path without `..`.
const SIM_TEXT_FLAGS: &[&str] = &["dir", "label"];

/// Numeric flags of the simulated agent a payload may set (`{"sim": {"edits": 3, …}}`).
const SIM_FLAGS: &[&str] = &[
    "duration_ms",
    "edits",
    "lines_per_file",
    "tokens_in",
    "tokens_out",
    "cost_micro_usd",
    "failure_rate",
    "seed",
    "failure_exit_code",
];

/// Refuses an unknown adapter or a payload it cannot take.
pub(crate) fn validate(
    config: &SessionsConfig,
    adapter: &str,
    payload: &serde_json::Value,
) -> Result<(), Error> {
    if adapter == SIM {
        sim_args(payload)?;
        return Ok(());
    }
    if Cli::from_name(adapter).is_some() {
        return Ok(());
    }
    if config.commands.contains_key(adapter) {
        return Ok(());
    }
    Err(Error::invalid_argument(
        "adapter",
        format!("unknown adapter `{adapter}`"),
    ))
}

/// How a session's agent reaches Godel's LLM proxy: the proxy's base URL (no path,
/// `http://host:port`) and the session's token, which is bound to the session's team,
/// session and budget and expires with it. The only credential an agent ever holds.
#[derive(Debug, Clone)]
pub struct LlmAccess {
    pub base_url: String,
    pub token: Secret<String>,
}

/// The agent process of `session`, working in `workdir` with its home at `home`,
/// talking to models through `llm` when the orchestrator runs its LLM proxy.
pub(crate) fn agent_spec(
    config: &SessionsConfig,
    session: &Session,
    workdir: &Path,
    home: &Path,
    llm: Option<&LlmAccess>,
) -> Result<AgentSpec, Error> {
    if let Some(cli) = Cli::from_name(&session.adapter) {
        let spec = adapters::spec(cli, config, &session.prompt, workdir, home, llm)
            .map_err(|e| Error::failed_precondition(e.to_string()))?;
        return Ok(with_session(config, session, spec));
    }
    let (program, args): (PathBuf, Vec<OsString>) = if session.adapter == SIM {
        let mut args: Vec<OsString> = config.sim_agent_args.iter().map(OsString::from).collect();
        args.extend(sim_args(&session.payload)?);
        // Lines name the task unless the payload chose a label: two tasks writing
        // the same file write different lines.
        if session.payload.pointer("/sim/label").is_none() {
            args.push(OsString::from("--label"));
            args.push(OsString::from(session.task_id.to_string()));
        }
        (sim_agent_path(config), args)
    } else {
        let command = config.commands.get(&session.adapter).ok_or_else(|| {
            Error::failed_precondition(format!(
                "the adapter `{}` is not configured on this orchestrator",
                session.adapter
            ))
        })?;
        (
            command.program.clone(),
            command.args.iter().map(OsString::from).collect(),
        )
    };
    let mut spec = AgentSpec::new(program, args, workdir, home);
    if let Some(llm) = llm {
        spec.env.extend([
            ("GODEL_LLM_BASE_URL".to_owned(), llm.base_url.clone()),
            ("GODEL_SESSION_TOKEN".to_owned(), llm.token.expose().clone()),
        ]);
    }
    Ok(with_session(config, session, spec))
}

/// Adds what every adapter's agent gets: the session's variables, Landlock by the
/// configuration (with git usable in its worktree), its wall-clock limit and the configured stop waits.
fn with_session(config: &SessionsConfig, session: &Session, mut spec: AgentSpec) -> AgentSpec {
    spec.env.extend([
        ("GODEL_SESSION_ID".to_owned(), session.id.to_string()),
        ("GODEL_TASK_ID".to_owned(), session.task_id.to_string()),
        ("GODEL_TASK_TYPE".to_owned(), session.task_type.clone()),
        ("GODEL_TASK_PAYLOAD".to_owned(), session.payload.to_string()),
        ("GODEL_PROMPT".to_owned(), session.prompt.clone()),
    ]);
    spec.landlock = config.landlock;
    spec.allow_worktree_git();
    spec.limits.wall_clock = Some(
        session
            .limits
            .max_duration
            .unwrap_or(config.default_max_duration),
    );
    spec.stop = StopPolicy {
        interrupt_wait: config.interrupt_wait,
        term_wait: config.term_wait,
        ..spec.stop
    };
    spec
}

/// The configured simulated agent, else the one next to the running executable,
/// else the one on `PATH`.
fn sim_agent_path(config: &SessionsConfig) -> PathBuf {
    if !config.sim_agent_path.as_os_str().is_empty() {
        return config.sim_agent_path.clone();
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(SIM_BINARY)))
        .filter(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from(SIM_BINARY))
}

/// `--flag value` pairs from the payload's `sim` object.
pub(crate) fn sim_args(payload: &serde_json::Value) -> Result<Vec<OsString>, Error> {
    let Some(sim) = payload.get("sim") else {
        return Ok(Vec::new());
    };
    let Some(sim) = sim.as_object() else {
        return Err(Error::invalid_argument(
            "payload_json",
            "`sim` must be an object of simulated agent flags",
        ));
    };
    let mut args = Vec::new();
    for (name, value) in sim {
        if SIM_TEXT_FLAGS.contains(&name.as_str()) {
            let Some(text) = value.as_str() else {
                return Err(Error::invalid_argument(
                    "payload_json",
                    format!("`sim.{name}` must be a string"),
                ));
            };
            let escapes = text.starts_with('/')
                || std::path::Path::new(text)
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir));
            if name == "dir" && (text.is_empty() || escapes) {
                return Err(Error::invalid_argument(
                    "payload_json",
                    "`sim.dir` must be a relative path inside the worktree (no `..`)",
                ));
            }
            args.push(OsString::from(format!("--{name}")));
            args.push(OsString::from(text));
            continue;
        }
        if !SIM_FLAGS.contains(&name.as_str()) {
            return Err(Error::invalid_argument(
                "payload_json",
                format!(
                    "unknown simulated agent flag `sim.{name}` (known: {}, {})",
                    SIM_TEXT_FLAGS.join(", "),
                    SIM_FLAGS.join(", ")
                ),
            ));
        }
        if !value.is_number() {
            return Err(Error::invalid_argument(
                "payload_json",
                format!("`sim.{name}` must be a number"),
            ));
        }
        args.push(OsString::from(format!("--{}", name.replace('_', "-"))));
        args.push(OsString::from(value.to_string()));
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_flags_come_from_the_payload() {
        let args =
            sim_args(&serde_json::json!({"sim": {"edits": 2, "failure_rate": 1.0}})).unwrap();
        assert_eq!(args, ["--edits", "2", "--failure-rate", "1.0"]);
        assert!(sim_args(&serde_json::json!({"sim": {"dir": "/etc"}})).is_err());
        assert!(sim_args(&serde_json::json!({"sim": {"dir": "a/../../x"}})).is_err());
        assert!(sim_args(&serde_json::json!({"sim": {"workdir": "/tmp"}})).is_err());
        let args = sim_args(&serde_json::json!({"sim": {"dir": "sim/api"}})).unwrap();
        assert_eq!(args, ["--dir", "sim/api"]);
        assert!(sim_args(&serde_json::json!({"sim": {"edits": "x"}})).is_err());
        assert!(sim_args(&serde_json::json!({})).unwrap().is_empty());
    }
}
