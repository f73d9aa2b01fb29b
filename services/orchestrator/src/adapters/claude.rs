//! Claude Code (`@anthropic-ai/claude-code`) in print mode:
//! `claude -p PROMPT --output-format stream-json --verbose --no-session-persistence
//! --permission-mode acceptEdits --model MODEL`, stdin from `/dev/null`.
//!
//! Configuration is all in the environment: `ANTHROPIC_BASE_URL` (the LLM proxy),
//! `ANTHROPIC_AUTH_TOKEN` (the session token, sent as `Authorization: Bearer`),
//! `CLAUDE_CONFIG_DIR` in the session's home, non-essential traffic, the
//! auto-updater, telemetry and error reporting off, and few retries (it retries a
//! 401 about ten times with backoff otherwise). `IS_SANDBOX=1` is set when the
//! orchestrator runs as root: Claude Code refuses `bypassPermissions` as root
//! otherwise (a permission mode an operator may pick through `sessions.claude_code.args`).
//!
//! Events: `system/init`, `assistant` (text, `tool_use`), `user` (`tool_result`, with
//! `tool_use_result` describing a file write or edit), `result`. Success is
//! `result.is_error == false`.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{
    AdapterError, Launch, Protocol, count_lines, event, json_line, micro_usd, number, raw,
    relative, text,
};
use crate::config::AgentCli;
use crate::runtime::event::{
    AgentState, ChangeKind, EventBody, LineParser, OutputStream, Parsed, SessionEvent,
};
use crate::runtime::process::StdinMode;
use crate::session::LlmAccess;

/// How many times Claude Code retries a failed model call.
const MAX_RETRIES: &str = "1";

/// Claude Code's configuration directory inside the session's home.
pub fn config_dir(home: &Path) -> PathBuf {
    home.join(".claude")
}

/// Returns how Claude Code is started (it needs no configuration file).
pub(super) fn launch(
    settings: &AgentCli,
    prompt: &str,
    home: &Path,
    llm: &LlmAccess,
) -> Result<Launch, AdapterError> {
    let mut env = vec![
        (
            "ANTHROPIC_BASE_URL".to_owned(),
            llm.base_url.trim_end_matches('/').to_owned(),
        ),
        (
            "ANTHROPIC_AUTH_TOKEN".to_owned(),
            llm.token.expose().clone(),
        ),
        (
            "CLAUDE_CONFIG_DIR".to_owned(),
            config_dir(home).display().to_string(),
        ),
        (
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".to_owned(),
            "1".to_owned(),
        ),
        ("DISABLE_AUTOUPDATER".to_owned(), "1".to_owned()),
        ("DISABLE_TELEMETRY".to_owned(), "1".to_owned()),
        ("DISABLE_ERROR_REPORTING".to_owned(), "1".to_owned()),
        ("CLAUDE_CODE_MAX_RETRIES".to_owned(), MAX_RETRIES.to_owned()),
    ];
    if running_as_root() {
        env.push(("IS_SANDBOX".to_owned(), "1".to_owned()));
    }
    Ok(Launch {
        args: vec![
            "-p".into(),
            OsString::from(prompt),
            "--output-format".into(),
            "stream-json".into(),
            "--verbose".into(),
            "--no-session-persistence".into(),
            "--permission-mode".into(),
            "acceptEdits".into(),
            "--model".into(),
            OsString::from(&settings.model),
        ],
        env,
        stdin: StdinMode::Null,
        interrupt: None,
        protocol: Protocol::ClaudeCode,
    })
}

/// Whether the orchestrator (and so the agent) runs as root: `/proc/self` belongs
/// to the process's effective user.
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Parses Claude Code's stream-json output.
#[derive(Debug)]
pub struct Parser {
    workdir: PathBuf,
    /// Tool calls by id, until their result: `(name, input)`.
    calls: HashMap<String, (String, Value)>,
}

impl Parser {
    pub fn new(workdir: &Path) -> Self {
        Self {
            workdir: workdir.to_path_buf(),
            calls: HashMap::new(),
        }
    }

    fn assistant(&mut self, value: &Value, line: &str) -> Vec<SessionEvent> {
        let mut events = Vec::new();
        for block in content(value) {
            match text(block, "type") {
                "text" if !text(block, "text").is_empty() => events.push(event(
                    EventBody::AssistantMessage {
                        text: text(block, "text").to_owned(),
                    },
                    line,
                )),
                "tool_use" => {
                    let id = text(block, "id").to_owned();
                    let name = text(block, "name").to_owned();
                    let input = block.get("input").cloned().unwrap_or(Value::Null);
                    events.push(event(
                        EventBody::ToolCall {
                            call_id: id.clone(),
                            name: name.clone(),
                            input_json: input.to_string(),
                        },
                        line,
                    ));
                    self.calls.insert(id, (name, input));
                }
                _ => {}
            }
        }
        events
    }

    fn user(&mut self, value: &Value, line: &str) -> Vec<SessionEvent> {
        let mut events = Vec::new();
        for block in content(value) {
            if text(block, "type") != "tool_result" {
                continue;
            }
            let id = text(block, "tool_use_id").to_owned();
            let is_error = block
                .get("is_error")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let output = match block.get("content") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .map(|p| text(p, "text"))
                    .collect::<Vec<_>>()
                    .join("\n"),
                _ => String::new(),
            };
            events.push(event(
                EventBody::ToolResult {
                    call_id: id.clone(),
                    output,
                    is_error,
                },
                line,
            ));
            let call = self.calls.remove(&id);
            if !is_error {
                events.extend(self.file_change(value.get("tool_use_result"), call, line));
            }
        }
        events
    }

    /// The file a successful write or edit changed: from `tool_use_result` when
    /// Claude Code describes it, else from the tool call's input.
    fn file_change(
        &self,
        described: Option<&Value>,
        call: Option<(String, Value)>,
        line: &str,
    ) -> Option<SessionEvent> {
        if let Some(result) = described.filter(|r| !text(r, "filePath").is_empty()) {
            let kind = match text(result, "type") {
                "create" => ChangeKind::Added,
                "update" => ChangeKind::Modified,
                _ if result.get("structuredPatch").is_some() => ChangeKind::Modified,
                _ => return None,
            };
            let (added, removed) = match kind {
                ChangeKind::Added => (count_lines(text(result, "content")), 0),
                _ => patch_lines(result.get("structuredPatch")),
            };
            return Some(event(
                EventBody::FileChange {
                    path: relative(&self.workdir, text(result, "filePath")),
                    kind,
                    old_path: None,
                    lines_added: added,
                    lines_removed: removed,
                },
                line,
            ));
        }
        let (name, input) = call?;
        let (kind, added, removed) = match name.as_str() {
            "Write" => (
                ChangeKind::Modified,
                count_lines(text(&input, "content")),
                0,
            ),
            "Edit" => (
                ChangeKind::Modified,
                count_lines(text(&input, "new_string")),
                count_lines(text(&input, "old_string")),
            ),
            "MultiEdit" | "NotebookEdit" => (ChangeKind::Modified, 0, 0),
            _ => return None,
        };
        let path = [text(&input, "file_path"), text(&input, "notebook_path")]
            .into_iter()
            .find(|p| !p.is_empty())?;
        Some(event(
            EventBody::FileChange {
                path: relative(&self.workdir, path),
                kind,
                old_path: None,
                lines_added: added,
                lines_removed: removed,
            },
            line,
        ))
    }

    fn result(value: &Value, line: &str) -> Vec<SessionEvent> {
        let mut events = Vec::new();
        if let Some(usage) = value.get("usage") {
            let input = number(usage, "input_tokens")
                + number(usage, "cache_creation_input_tokens")
                + number(usage, "cache_read_input_tokens");
            let output = number(usage, "output_tokens");
            let cost = value
                .get("total_cost_usd")
                .and_then(Value::as_f64)
                .unwrap_or_default();
            if input + output > 0 || cost > 0.0 {
                events.push(event(
                    EventBody::Usage {
                        input_tokens: input,
                        output_tokens: output,
                        cost_micro_usd: micro_usd(cost),
                    },
                    line,
                ));
            }
        }
        let is_error = value
            .get("is_error")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let summary = match value.get("result") {
            Some(Value::String(s)) => s.clone(),
            _ => value
                .get("errors")
                .map(Value::to_string)
                .unwrap_or_default(),
        };
        events.push(event(
            if is_error {
                let code = if value.get("api_error_status").is_some_and(|s| !s.is_null()) {
                    "provider_error"
                } else {
                    "agent_error"
                };
                EventBody::Error {
                    code: code.to_owned(),
                    message: format!("{}: {summary}", text(value, "subtype")),
                }
            } else {
                EventBody::State {
                    state: AgentState::Done,
                    reason: summary,
                }
            },
            line,
        ));
        events
    }
}

/// The content blocks of an `assistant` or `user` event's message.
fn content(value: &Value) -> impl Iterator<Item = &Value> {
    value
        .get("message")
        .and_then(|m| m.get("content"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// Lines added and removed in a structured patch (hunks of `+`/`-` lines).
fn patch_lines(patch: Option<&Value>) -> (u32, u32) {
    let lines = patch
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|hunk| hunk.get("lines").and_then(Value::as_array))
        .flatten()
        .filter_map(Value::as_str);
    lines.fold((0, 0), |(a, r), line| match line.as_bytes().first() {
        Some(b'+') => (a + 1, r),
        Some(b'-') => (a, r + 1),
        _ => (a, r),
    })
}

impl LineParser for Parser {
    fn parse(&mut self, stream: OutputStream, line: &str) -> Parsed {
        let value = match json_line(stream, line) {
            Ok(value) => value,
            Err(kept) => return kept,
        };
        let events = match (text(&value, "type"), text(&value, "subtype")) {
            ("system", "init") => vec![event(
                EventBody::State {
                    state: AgentState::Thinking,
                    reason: format!(
                        "started: model {}, permission mode {}",
                        text(&value, "model"),
                        text(&value, "permissionMode")
                    ),
                },
                line,
            )],
            ("assistant", _) => self.assistant(&value, line),
            ("user", _) => self.user(&value, line),
            ("result", _) => Self::result(&value, line),
            // Partial messages (`--include-partial-messages`) repeat what the
            // complete ones report.
            ("stream_event", _) => Vec::new(),
            _ => return raw(stream, line),
        };
        if events.is_empty() && text(&value, "type") != "stream_event" {
            return raw(stream, line);
        }
        Parsed::events(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::event::{Verdict, judge};

    /// Lines recorded from Claude Code 2.1.197 writing `hello.txt` against the
    /// scripted provider (long fields shortened).
    const RUN: &[&str] = &[
        r#"{"type":"system","subtype":"init","cwd":"/w/s1","session_id":"s","tools":["Bash","Edit","Write"],"mcp_servers":[],"model":"claude-sonnet-4-5","permissionMode":"acceptEdits","apiKeySource":"none"}"#,
        r#"{"type":"assistant","message":{"content":[{"id":"toolu_1","input":{"file_path":"/w/s1/hello.txt","content":"hello\n"},"name":"Write","type":"tool_use"}],"id":"msg_1","model":"claude-sonnet-4-5","role":"assistant","stop_reason":null,"type":"message","usage":{"input_tokens":120,"output_tokens":1}},"parent_tool_use_id":null,"session_id":"s"}"#,
        r#"{"type":"user","message":{"role":"user","content":[{"tool_use_id":"toolu_1","type":"tool_result","content":"File created successfully at: /w/s1/hello.txt"}]},"parent_tool_use_id":null,"session_id":"s","tool_use_result":{"type":"create","filePath":"/w/s1/hello.txt","content":"hello\n","structuredPatch":[],"originalFile":null}}"#,
        r#"{"type":"assistant","message":{"content":[{"text":"Done: I wrote the file.","type":"text"}],"id":"msg_2","role":"assistant","type":"message","usage":{"input_tokens":120,"output_tokens":1}},"session_id":"s"}"#,
        r#"{"type":"result","subtype":"success","is_error":false,"api_error_status":null,"num_turns":2,"result":"Done: I wrote the file.","stop_reason":"end_turn","session_id":"s","total_cost_usd":0.00162,"usage":{"input_tokens":240,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":60}}"#,
    ];

    #[test]
    fn a_run_becomes_normalized_events() {
        let mut parser = Parser::new(Path::new("/w/s1"));
        let events: Vec<_> = RUN
            .iter()
            .flat_map(|line| parser.parse(OutputStream::Stdout, line).events)
            .collect();
        let bodies: Vec<_> = events.iter().map(|e| e.body.clone()).collect();
        assert!(matches!(
            &bodies[0],
            EventBody::State { state: AgentState::Thinking, reason } if reason.contains("claude-sonnet-4-5")
        ));
        assert!(bodies.contains(&EventBody::ToolCall {
            call_id: "toolu_1".into(),
            name: "Write".into(),
            input_json: r#"{"content":"hello\n","file_path":"/w/s1/hello.txt"}"#.into(),
        }));
        assert!(bodies.contains(&EventBody::FileChange {
            path: "hello.txt".into(),
            kind: ChangeKind::Added,
            old_path: None,
            lines_added: 1,
            lines_removed: 0,
        }));
        assert!(bodies.contains(&EventBody::Usage {
            input_tokens: 240,
            output_tokens: 60,
            cost_micro_usd: 1620,
        }));
        assert!(bodies.contains(&EventBody::AssistantMessage {
            text: "Done: I wrote the file.".into()
        }));
        assert_eq!(judge(&events), Verdict::Succeeded);
    }

    #[test]
    fn an_error_result_fails_the_run() {
        let mut parser = Parser::new(Path::new("/w"));
        let line = r#"{"type":"result","subtype":"success","is_error":true,"api_error_status":401,"num_turns":1,"result":"Failed to authenticate. API Error: 401","total_cost_usd":0,"usage":{"input_tokens":0,"output_tokens":0}}"#;
        let events = parser.parse(OutputStream::Stdout, line).events;
        assert_eq!(events.len(), 1);
        assert_eq!(
            judge(&events),
            Verdict::Failed {
                reason: "provider_error: success: Failed to authenticate. API Error: 401".into()
            }
        );
    }

    #[test]
    fn an_edit_counts_its_patch_lines() {
        let mut parser = Parser::new(Path::new("/w"));
        parser.parse(
            OutputStream::Stdout,
            r#"{"type":"assistant","message":{"content":[{"id":"t2","name":"Edit","type":"tool_use","input":{"file_path":"/w/a.rs","old_string":"a","new_string":"b\nc"}}]}}"#,
        );
        let events = parser
            .parse(
                OutputStream::Stdout,
                r#"{"type":"user","message":{"content":[{"tool_use_id":"t2","type":"tool_result","content":[{"type":"text","text":"ok"}]}]},"tool_use_result":{"filePath":"/w/a.rs","structuredPatch":[{"lines":["-a","+b","+c"," d"]}]}}"#,
            )
            .events;
        assert_eq!(
            events[1].body,
            EventBody::FileChange {
                path: "a.rs".into(),
                kind: ChangeKind::Modified,
                old_path: None,
                lines_added: 2,
                lines_removed: 1,
            }
        );
    }
}
