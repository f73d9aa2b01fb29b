//! Adapters: how a session's agent is started. `sim` runs the simulated agent
//! (`godel-sim-agent`) with flags from the task payload's `sim` object; every name in
//! `sessions.commands` is a generic command adapter. Both print lines that
//! [`crate::runtime::event::parse_line`] normalizes.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use godel_error::Error;

use super::model::Session;
use crate::config::SessionsConfig;
use crate::runtime::process::{AgentSpec, StopPolicy};

/// The simulated agent's adapter name.
pub const SIM: &str = "sim";

/// The simulated agent's binary name.
const SIM_BINARY: &str = "godel-sim-agent";

/// Flags of the simulated agent a payload may set (`{"sim": {"edits": 3, …}}`),
/// all numeric.
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
    if config.commands.contains_key(adapter) {
        return Ok(());
    }
    Err(Error::invalid_argument(
        "adapter",
        format!("unknown adapter `{adapter}`"),
    ))
}

/// The agent process of `session`, working in `workdir` with its home at `home`.
pub(crate) fn agent_spec(
    config: &SessionsConfig,
    session: &Session,
    workdir: &Path,
    home: &Path,
) -> Result<AgentSpec, Error> {
    let (program, args): (PathBuf, Vec<OsString>) = if session.adapter == SIM {
        (sim_agent_path(config), sim_args(&session.payload)?)
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
    spec.env.extend([
        ("GODEL_SESSION_ID".to_owned(), session.id.to_string()),
        ("GODEL_TASK_ID".to_owned(), session.task_id.to_string()),
        ("GODEL_TASK_TYPE".to_owned(), session.task_type.clone()),
        ("GODEL_TASK_PAYLOAD".to_owned(), session.payload.to_string()),
        ("GODEL_PROMPT".to_owned(), session.prompt.clone()),
    ]);
    spec.landlock = config.landlock;
    spec.limits.wall_clock = Some(
        session
            .limits
            .max_duration
            .unwrap_or(config.default_max_duration),
    );
    spec.stop = StopPolicy {
        interrupt_wait: config.interrupt_wait,
        term_wait: config.term_wait,
        ..StopPolicy::default()
    };
    Ok(spec)
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
fn sim_args(payload: &serde_json::Value) -> Result<Vec<OsString>, Error> {
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
        if !SIM_FLAGS.contains(&name.as_str()) {
            return Err(Error::invalid_argument(
                "payload_json",
                format!(
                    "unknown simulated agent flag `sim.{name}` (known: {})",
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
        assert!(sim_args(&serde_json::json!({"sim": {"edits": "x"}})).is_err());
        assert!(sim_args(&serde_json::json!({})).unwrap().is_empty());
    }
}
