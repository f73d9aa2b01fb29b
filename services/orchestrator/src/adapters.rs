//! Adapters for real agent CLIs — Pi ([`pi`]), Claude Code ([`claude`]) and Codex
//! ([`codex`]): how each is started, how its provider configuration is written into
//! the session's private home so that it talks only to Godel's LLM proxy with the
//! session's token, and how its own JSONL output becomes normalized
//! [`SessionEvent`](crate::runtime::event::SessionEvent)s with a verdict judged from
//! the stream (never from the exit code).
//!
//! A session's adapter is chosen by name in `crate::session` (`sim`, a generic
//! command, or one of [`Cli`]); the [`AgentSpec`] it produces carries its
//! [`Protocol`], which the process runtime asks for a [`LineParser`].

pub mod claude;
pub mod codex;
pub mod pi;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::config::{AgentCli, SessionsConfig};
use crate::runtime::confine::{ConfinementLevel, landlock_support};
use crate::runtime::event::{
    CommandParser, EventBody, LineParser, OutputStream, Parsed, SessionEvent,
};
use crate::runtime::process::AgentSpec;
use crate::session::LlmAccess;

/// A real agent CLI Godel has an adapter for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cli {
    Pi,
    ClaudeCode,
    Codex,
}

impl Cli {
    /// Every CLI, in a fixed order.
    pub const ALL: [Cli; 3] = [Cli::Pi, Cli::ClaudeCode, Cli::Codex];

    /// The adapter's name (`pi`, `claude-code`, `codex`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Pi => "pi",
            Self::ClaudeCode => "claude-code",
            Self::Codex => "codex",
        }
    }

    /// Whether a running agent of this CLI can be steered (its protocol has a
    /// [`Protocol::steer_command`]).
    pub fn steerable(self) -> bool {
        matches!(self, Self::Pi)
    }

    /// The CLI whose adapter is called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|cli| cli.name() == name)
    }

    /// This CLI's settings.
    pub fn config(self, config: &SessionsConfig) -> &AgentCli {
        match self {
            Self::Pi => &config.pi,
            Self::ClaudeCode => &config.claude_code,
            Self::Codex => &config.codex,
        }
    }
}

/// How an agent's output is read, and what (if anything) is written to its stdin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Protocol {
    /// The generic command adapter (and the simulated agent): JSON lines in the
    /// simulated agent's shape, other lines as assistant messages.
    #[default]
    Command,
    /// Pi in `--mode rpc`: `prompt` is sent as its first command.
    PiRpc { prompt: String },
    /// Claude Code's `-p --output-format stream-json`.
    ClaudeCode,
    /// Codex's `exec --json`.
    Codex,
}

impl Protocol {
    /// The line that steers a running agent with `message` (it takes the message
    /// into its conversation mid-run), for the protocols that can; `None` otherwise.
    pub fn steer_command(&self, message: &str) -> Option<Vec<u8>> {
        match self {
            Self::PiRpc { .. } => Some(pi::steer_command(message)),
            Self::Command | Self::ClaudeCode | Self::Codex => None,
        }
    }

    /// A fresh parser for one run of an agent working in `workdir` (file paths in
    /// its events are reported relative to it).
    pub fn parser(&self, workdir: &Path) -> Box<dyn LineParser> {
        match self {
            Self::Command => Box::new(CommandParser),
            Self::PiRpc { prompt } => Box::new(pi::Parser::new(workdir, prompt)),
            Self::ClaudeCode => Box::new(claude::Parser::new(workdir)),
            Self::Codex => Box::new(codex::Parser::new(workdir)),
        }
    }
}

/// Why an agent CLI cannot be started.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    #[error(
        "the `{adapter}` adapter needs Godel's LLM proxy (`proxy.enabled`): agents get no provider key"
    )]
    NoProxy { adapter: &'static str },
    #[error(
        "the `{adapter}` program `{program}` is not on PATH; install it or set `sessions.{section}.program`"
    )]
    NotFound {
        adapter: &'static str,
        section: &'static str,
        program: PathBuf,
    },
    #[error("cannot write the `{adapter}` configuration {path}")]
    WriteConfig {
        adapter: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The agent process running `cli` on `prompt` in `workdir`, with its private home
/// (and the CLI's configuration written in it) at `home`, reaching models only
/// through `llm`. The caller adds the session's own variables and limits.
pub fn spec(
    cli: Cli,
    config: &SessionsConfig,
    prompt: &str,
    workdir: &Path,
    home: &Path,
    llm: Option<&LlmAccess>,
) -> Result<AgentSpec, AdapterError> {
    let llm = llm.ok_or(AdapterError::NoProxy {
        adapter: cli.name(),
    })?;
    let settings = cli.config(config);
    let program = resolve(cli, &settings.program)?;
    let confined = config.landlock && landlock_support() != ConfinementLevel::None;
    let launch = match cli {
        Cli::Pi => pi::launch(settings, prompt, home, llm)?,
        Cli::ClaudeCode => claude::launch(settings, prompt, home, llm)?,
        Cli::Codex => codex::launch(settings, prompt, home, llm, confined)?,
    };
    let mut args = launch.args;
    args.extend(settings.args.iter().map(OsString::from));
    let mut spec = AgentSpec::new(&program, args, workdir, home);
    // A CLI installed from npm reads its whole package tree (and its native
    // binaries) at run time: allow the outermost `node_modules` above it.
    if let Some(packages) = node_modules_root(&program) {
        spec.fs.read_only.push(packages);
    }
    // The runtimes under these CLIs read `/proc` (their own cgroup, maps, meminfo;
    // Claude Code's aborts without it). Landlock still denies another process's
    // `environ`, `mem` and the like: those need ptrace access, which Landlock
    // refuses towards processes outside the agent's domain.
    spec.fs.read_only.push(PathBuf::from("/proc"));
    spec.env.extend(launch.env);
    spec.env
        .push(("GODEL_LLM_BASE_URL".to_owned(), llm.base_url.clone()));
    spec.env
        .push(("GODEL_SESSION_TOKEN".to_owned(), llm.token.expose().clone()));
    spec.env.extend(
        settings
            .env
            .iter()
            .map(|(name, value)| (name.clone(), value.clone())),
    );
    spec.stdin = launch.stdin;
    if let Some(interrupt) = launch.interrupt {
        spec.stop.interrupt = interrupt;
    }
    spec.protocol = launch.protocol;
    Ok(spec)
}

/// What one CLI's module decides about its process.
pub(crate) struct Launch {
    pub args: Vec<OsString>,
    pub env: Vec<(String, String)>,
    pub stdin: crate::runtime::process::StdinMode,
    /// The CLI's own interrupt, when not SIGINT.
    pub interrupt: Option<crate::runtime::process::Interrupt>,
    pub protocol: Protocol,
}

/// The CLI's program as an absolute path: as configured, or looked up on `PATH`
/// (the one agents inherit).
fn resolve(cli: Cli, program: &Path) -> Result<PathBuf, AdapterError> {
    let not_found = || AdapterError::NotFound {
        adapter: cli.name(),
        section: match cli {
            Cli::Pi => "pi",
            Cli::ClaudeCode => "claude_code",
            Cli::Codex => "codex",
        },
        program: program.to_path_buf(),
    };
    if program.components().count() > 1 {
        return if program.is_file() {
            Ok(program.to_path_buf())
        } else {
            Err(not_found())
        };
    }
    let path = std::env::var_os("PATH").ok_or_else(not_found)?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .ok_or_else(not_found)
}

/// The outermost `node_modules` directory the program (symlinks resolved) lies in.
fn node_modules_root(program: &Path) -> Option<PathBuf> {
    let real = std::fs::canonicalize(program).ok()?;
    real.ancestors()
        .filter(|dir| dir.file_name().is_some_and(|name| name == "node_modules"))
        .last()
        .map(Path::to_path_buf)
}

/// Writes one configuration file of `adapter`, creating its directory.
pub(crate) fn write_config(
    adapter: &'static str,
    path: &Path,
    contents: &str,
) -> Result<(), AdapterError> {
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, contents)
    };
    write().map_err(|source| AdapterError::WriteConfig {
        adapter,
        path: path.to_path_buf(),
        source,
    })
}

/// `line` kept as it is, as a raw event of `stream`.
pub(crate) fn raw(stream: OutputStream, line: &str) -> Parsed {
    Parsed::one(event(
        EventBody::Raw {
            stream,
            text: line.to_owned(),
        },
        line,
    ))
}

/// A stdout line as JSON; a stderr or non-JSON line comes back as its raw event.
pub(crate) fn json_line(stream: OutputStream, line: &str) -> Result<serde_json::Value, Parsed> {
    if stream == OutputStream::Stderr {
        return Err(raw(stream, line));
    }
    serde_json::from_str(line).map_err(|_| raw(stream, line))
}

/// An event for `body` keeping the line it came from.
pub(crate) fn event(body: EventBody, raw: &str) -> SessionEvent {
    SessionEvent {
        body,
        raw: raw.to_owned(),
    }
}

/// `path` relative to the agent's workspace when it lies inside it (agents report
/// absolute paths); otherwise as given.
pub(crate) fn relative(workdir: &Path, path: &str) -> String {
    let path = Path::new(path);
    let canonical = std::fs::canonicalize(workdir).ok();
    [Some(workdir), canonical.as_deref()]
        .into_iter()
        .flatten()
        .find_map(|root| path.strip_prefix(root).ok())
        .map(|rel| rel.display().to_string())
        .unwrap_or_else(|| path.display().to_string())
}

/// The number of lines of `text` (a last line without a newline counts).
pub(crate) fn count_lines(text: &str) -> u32 {
    u32::try_from(text.lines().count()).unwrap_or(u32::MAX)
}

/// US dollars as millionths, for usage events.
pub(crate) fn micro_usd(dollars: f64) -> u64 {
    if dollars.is_finite() && dollars > 0.0 {
        // Saturating: costs are far below u64::MAX micro-dollars.
        (dollars * 1_000_000.0).round() as u64
    } else {
        0
    }
}

/// A JSON value's string field, or "".
pub(crate) fn text<'a>(value: &'a serde_json::Value, key: &str) -> &'a str {
    value
        .get(key)
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
}

/// A JSON value's unsigned integer field, or 0.
pub(crate) fn number(value: &serde_json::Value, key: &str) -> u64 {
    value
        .get(key)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for cli in Cli::ALL {
            assert_eq!(Cli::from_name(cli.name()), Some(cli));
        }
        assert_eq!(Cli::from_name("claude"), None);
    }

    #[test]
    fn paths_are_made_relative_to_the_workspace() {
        assert_eq!(relative(Path::new("/w/s1"), "/w/s1/src/a.rs"), "src/a.rs");
        assert_eq!(relative(Path::new("/w/s1"), "src/a.rs"), "src/a.rs");
        assert_eq!(relative(Path::new("/w/s1"), "/etc/passwd"), "/etc/passwd");
    }

    #[test]
    fn dollars_become_micro_dollars() {
        assert_eq!(micro_usd(0.00162), 1620);
        assert_eq!(micro_usd(-1.0), 0);
        assert_eq!(micro_usd(f64::NAN), 0);
    }

    #[test]
    fn a_missing_program_or_proxy_is_refused() {
        let config = SessionsConfig {
            pi: AgentCli {
                program: PathBuf::from("/nonexistent/pi"),
                ..AgentCli::default()
            },
            ..SessionsConfig::default()
        };
        let dir = Path::new("/tmp/w");
        let err = spec(Cli::Pi, &config, "p", dir, Path::new("/tmp/h"), None).unwrap_err();
        assert!(matches!(err, AdapterError::NoProxy { adapter: "pi" }));
        let llm = LlmAccess {
            base_url: "http://127.0.0.1:1".to_owned(),
            token: godel_config::Secret::new("tok".to_owned()),
        };
        let err = spec(Cli::Pi, &config, "p", dir, Path::new("/tmp/h"), Some(&llm)).unwrap_err();
        assert!(matches!(err, AdapterError::NotFound { .. }));
    }
}
