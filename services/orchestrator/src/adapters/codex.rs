//! Codex (`@openai/codex`) non-interactive:
//! `codex exec --json --ephemeral -s SANDBOX -m MODEL PROMPT`, stdin from
//! `/dev/null` (it waits on an open pipe); see [`sandbox`] for the sandbox mode.
//!
//! Configuration: `$CODEX_HOME/config.toml` (in the session's home) selects the
//! `godel` model provider — the LLM proxy's Responses API, with the token read from
//! the `GODEL_SESSION_TOKEN` variable (`env_key`), so no file holds it — and turns
//! off update checks, analytics, apps and plugins (which would reach outside hosts)
//! and shell snapshots (which would copy the environment, token included, into a
//! file).
//! The model must be one of Codex's catalog ids; the proxy maps it.
//!
//! Events: `thread.started`, `turn.started`, `item.started|completed`
//! (`command_execution`, `file_change`, `agent_message`, `reasoning`, `mcp_tool_call`,
//! `error`, …), `turn.completed` (usage: tokens only), `turn.failed`, `error`.
//! Success is `turn.completed`; `turn.failed` fails the run (Codex's exit code is
//! not consulted).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{
    AdapterError, Launch, Protocol, event, json_line, number, raw, relative, text, write_config,
};
use crate::config::AgentCli;
use crate::runtime::event::{
    AgentState, ChangeKind, EventBody, LineParser, OutputStream, Parsed, SessionEvent,
};
use crate::runtime::process::StdinMode;
use crate::session::LlmAccess;

/// Codex's home (`CODEX_HOME`) inside the session's home.
pub fn config_dir(home: &Path) -> PathBuf {
    home.join(".codex")
}

/// A TOML basic string (JSON string escapes are valid TOML escapes).
fn toml_string(value: &str) -> String {
    Value::String(value.to_owned()).to_string()
}

/// Codex's own sandbox mode. Under Godel's Landlock confinement Codex's sandbox
/// cannot start (it needs mounts, which Landlock forbids, and its writes fail while
/// Codex still reports success), so Godel's confinement is the boundary — as for
/// every agent — and Codex runs without its own. Without Landlock, Codex confines
/// its tools to the workspace itself (its default, read-only, would make every
/// write fail silently).
fn sandbox(confined: bool) -> &'static str {
    if confined {
        "danger-full-access"
    } else {
        "workspace-write"
    }
}

/// Writes `config.toml` and returns how Codex is started.
pub(super) fn launch(
    settings: &AgentCli,
    prompt: &str,
    home: &Path,
    llm: &LlmAccess,
    confined: bool,
) -> Result<Launch, AdapterError> {
    let dir = config_dir(home);
    let base_url = format!("{}/v1", llm.base_url.trim_end_matches('/'));
    let config = format!(
        r#"# Written by Godel for one session: models only through Godel's LLM proxy.
model_provider = "godel"
check_for_update_on_startup = false

[model_providers.godel]
name = "Godel"
base_url = {base_url}
env_key = "GODEL_SESSION_TOKEN"
wire_api = "responses"

[analytics]
enabled = false

[features]
apps = false
plugins = false
remote_plugin = false
shell_snapshot = false
"#,
        base_url = toml_string(&base_url)
    );
    write_config("codex", &dir.join("config.toml"), &config)?;
    Ok(Launch {
        args: vec![
            "exec".into(),
            "--json".into(),
            "--ephemeral".into(),
            "-s".into(),
            sandbox(confined).into(),
            "-m".into(),
            OsString::from(&settings.model),
            OsString::from(prompt),
        ],
        env: vec![("CODEX_HOME".to_owned(), dir.display().to_string())],
        stdin: StdinMode::Null,
        interrupt: None,
        protocol: Protocol::Codex,
    })
}

/// Parses `codex exec --json` output.
#[derive(Debug)]
pub struct Parser {
    workdir: PathBuf,
}

impl Parser {
    pub fn new(workdir: &Path) -> Self {
        Self {
            workdir: workdir.to_path_buf(),
        }
    }

    fn started(item: &Value, line: &str) -> Vec<SessionEvent> {
        let id = text(item, "id").to_owned();
        let call = |name: &str, input: Value| {
            vec![
                event(
                    EventBody::ToolCall {
                        call_id: id.clone(),
                        name: name.to_owned(),
                        input_json: input.to_string(),
                    },
                    line,
                ),
                event(
                    EventBody::State {
                        state: AgentState::ToolRunning,
                        reason: name.to_owned(),
                    },
                    line,
                ),
            ]
        };
        match text(item, "type") {
            "command_execution" => call(
                "command_execution",
                serde_json::json!({"command": text(item, "command")}),
            ),
            "file_change" => call(
                "apply_patch",
                serde_json::json!({"changes": item.get("changes").cloned().unwrap_or(Value::Null)}),
            ),
            "mcp_tool_call" => call(
                &format!("{}/{}", text(item, "server"), text(item, "tool")),
                item.get("arguments").cloned().unwrap_or(Value::Null),
            ),
            _ => Vec::new(),
        }
    }

    fn completed(&self, item: &Value, line: &str) -> Vec<SessionEvent> {
        let id = text(item, "id").to_owned();
        let failed = text(item, "status") == "failed";
        match text(item, "type") {
            "agent_message" => vec![event(
                EventBody::AssistantMessage {
                    text: text(item, "text").to_owned(),
                },
                line,
            )],
            "command_execution" => {
                let exit = item.get("exit_code").and_then(Value::as_i64);
                vec![event(
                    EventBody::ToolResult {
                        call_id: id,
                        output: text(item, "aggregated_output").to_owned(),
                        is_error: failed || exit.is_some_and(|code| code != 0),
                    },
                    line,
                )]
            }
            "file_change" => {
                let mut events = vec![event(
                    EventBody::ToolResult {
                        call_id: id,
                        output: String::new(),
                        is_error: failed,
                    },
                    line,
                )];
                if !failed {
                    let changes = item.get("changes").and_then(Value::as_array);
                    events.extend(changes.into_iter().flatten().filter_map(|change| {
                        let kind = match text(change, "kind") {
                            "add" => ChangeKind::Added,
                            "delete" => ChangeKind::Deleted,
                            "update" => ChangeKind::Modified,
                            _ => return None,
                        };
                        Some(event(
                            EventBody::FileChange {
                                path: relative(&self.workdir, text(change, "path")),
                                kind,
                                old_path: None,
                                lines_added: 0,
                                lines_removed: 0,
                            },
                            line,
                        ))
                    }));
                }
                events
            }
            "mcp_tool_call" => vec![event(
                EventBody::ToolResult {
                    call_id: id,
                    output: item
                        .get("result")
                        .or_else(|| item.get("error"))
                        .map(Value::to_string)
                        .unwrap_or_default(),
                    is_error: failed,
                },
                line,
            )],
            "error" => vec![event(
                EventBody::Error {
                    code: "agent_error".to_owned(),
                    message: text(item, "message").to_owned(),
                },
                line,
            )],
            _ => Vec::new(),
        }
    }
}

impl LineParser for Parser {
    fn parse(&mut self, stream: OutputStream, line: &str) -> Parsed {
        let value = match json_line(stream, line) {
            Ok(value) => value,
            Err(kept) => return kept,
        };
        let item = value.get("item").cloned().unwrap_or(Value::Null);
        let events = match text(&value, "type") {
            "thread.started" | "turn.started" => vec![event(
                EventBody::State {
                    state: AgentState::Thinking,
                    reason: text(&value, "type").to_owned(),
                },
                line,
            )],
            "item.started" => Self::started(&item, line),
            "item.completed" => self.completed(&item, line),
            "turn.completed" => {
                let usage = value.get("usage").cloned().unwrap_or(Value::Null);
                vec![
                    event(
                        EventBody::Usage {
                            input_tokens: number(&usage, "input_tokens"),
                            output_tokens: number(&usage, "output_tokens"),
                            // Codex reports tokens only; the proxy prices them.
                            cost_micro_usd: 0,
                        },
                        line,
                    ),
                    event(
                        EventBody::State {
                            state: AgentState::Done,
                            reason: "turn completed".to_owned(),
                        },
                        line,
                    ),
                ]
            }
            "turn.failed" => vec![event(
                EventBody::Error {
                    code: "turn_failed".to_owned(),
                    message: value
                        .get("error")
                        .map(|e| text(e, "message").to_owned())
                        .unwrap_or_default(),
                },
                line,
            )],
            "error" => vec![event(
                EventBody::Error {
                    code: "stream_error".to_owned(),
                    message: text(&value, "message").to_owned(),
                },
                line,
            )],
            _ => Vec::new(),
        };
        if events.is_empty() {
            return raw(stream, line);
        }
        Parsed::events(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::event::{Verdict, judge};

    /// Lines recorded from Codex 0.169.0 writing `hello.txt` against the scripted
    /// provider.
    const RUN: &[&str] = &[
        r#"{"type":"thread.started","thread_id":"01a20910-4623-7db3-ad2e-9196c9da1cb0"}"#,
        r#"{"type":"turn.started"}"#,
        r#"{"type":"item.started","item":{"id":"item_0","type":"file_change","changes":[{"path":"/w/s1/hello.txt","kind":"add"}],"status":"in_progress"}}"#,
        r#"{"type":"item.completed","item":{"id":"item_0","type":"file_change","changes":[{"path":"/w/s1/hello.txt","kind":"add"}],"status":"completed"}}"#,
        r#"{"type":"item.completed","item":{"id":"item_1","type":"agent_message","text":"Done: I wrote the file."}}"#,
        r#"{"type":"turn.completed","usage":{"input_tokens":240,"cached_input_tokens":0,"cache_write_input_tokens":0,"output_tokens":60,"reasoning_output_tokens":0}}"#,
    ];

    /// Codex 0.169.0 against a provider answering 401.
    const UNAUTHORIZED: &[&str] = &[
        r#"{"type":"thread.started","thread_id":"t"}"#,
        r#"{"type":"turn.started"}"#,
        r#"{"type":"error","message":"Reconnecting... 1/5 (unexpected status 401 Unauthorized: scripted provider error: Unauthorized, url: http://127.0.0.1:44843/v1/responses)"}"#,
        r#"{"type":"error","message":"unexpected status 401 Unauthorized: scripted provider error: Unauthorized, url: http://127.0.0.1:44843/v1/responses"}"#,
        r#"{"type":"turn.failed","error":{"message":"unexpected status 401 Unauthorized: scripted provider error: Unauthorized, url: http://127.0.0.1:44843/v1/responses"}}"#,
    ];

    fn parse(lines: &[&str]) -> Vec<SessionEvent> {
        let mut parser = Parser::new(Path::new("/w/s1"));
        lines
            .iter()
            .flat_map(|line| parser.parse(OutputStream::Stdout, line).events)
            .collect()
    }

    #[test]
    fn a_run_becomes_normalized_events() {
        let events = parse(RUN);
        let bodies: Vec<_> = events.iter().map(|e| e.body.clone()).collect();
        assert!(matches!(
            &bodies[2],
            EventBody::ToolCall { call_id, name, .. } if call_id == "item_0" && name == "apply_patch"
        ));
        assert!(bodies.contains(&EventBody::FileChange {
            path: "hello.txt".into(),
            kind: ChangeKind::Added,
            old_path: None,
            lines_added: 0,
            lines_removed: 0,
        }));
        assert!(bodies.contains(&EventBody::Usage {
            input_tokens: 240,
            output_tokens: 60,
            cost_micro_usd: 0,
        }));
        assert!(bodies.contains(&EventBody::AssistantMessage {
            text: "Done: I wrote the file.".into()
        }));
        assert_eq!(judge(&events), Verdict::Succeeded);
    }

    #[test]
    fn a_failed_turn_fails_the_run() {
        let events = parse(UNAUTHORIZED);
        let Verdict::Failed { reason } = judge(&events) else {
            panic!("a failed turn must fail the run");
        };
        assert!(
            reason.starts_with("turn_failed: unexpected status 401"),
            "{reason}"
        );
    }

    #[test]
    fn a_command_with_a_non_zero_exit_is_a_failed_tool_result() {
        let events = parse(&[
            r#"{"type":"item.completed","item":{"id":"item_1","type":"command_execution","command":"false","aggregated_output":"","exit_code":1,"status":"failed"}}"#,
        ]);
        assert!(matches!(
            events[0].body,
            EventBody::ToolResult { is_error: true, .. }
        ));
    }

    #[test]
    fn the_config_names_the_token_variable_not_the_token() {
        let home = tempfile::tempdir().unwrap();
        let llm = LlmAccess {
            base_url: "http://127.0.0.1:9/".to_owned(),
            token: godel_config::Secret::new("tok_secret".to_owned()),
        };
        let launch = launch(&AgentCli::default(), "p", home.path(), &llm, true).unwrap();
        assert!(launch.args.iter().any(|a| a == "danger-full-access"));
        let config = std::fs::read_to_string(config_dir(home.path()).join("config.toml")).unwrap();
        assert!(config.contains(r#"base_url = "http://127.0.0.1:9/v1""#));
        assert!(config.contains(r#"env_key = "GODEL_SESSION_TOKEN""#));
        assert!(!config.contains("tok_secret"));
    }
}
