//! Pi (`@mariozechner/pi-coding-agent`) in `--mode rpc`: JSONL commands on a stdin
//! pipe Godel owns, JSONL events and command responses on stdout.
//!
//! Configuration: `PI_CODING_AGENT_DIR` (in the session's home) holds a
//! `models.json` with one provider, `godel`, whose `baseUrl` is the LLM proxy and
//! whose `apiKey` names the `GODEL_SESSION_TOKEN` variable (so no file holds even the
//! session token); `PI_OFFLINE=1` stops update checks and telemetry; sessions are
//! kept under the home, outside the worktree.
//!
//! The run: the prompt is sent as a `prompt` command; when `agent_end` arrives the
//! parser asks for `get_session_stats` and, once it is answered, closes Pi's stdin,
//! on which Pi exits. Cancel sends `abort` (then closes stdin). `SteerSession` sends
//! `steer` with the caller's message while Pi runs. Success is read from
//! `agent_end`: the last assistant message's `stopReason` (`error`/`aborted` fail,
//! with its `errorMessage`) — Pi exits 0 either way.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::{
    AdapterError, Launch, Protocol, count_lines, event, json_line, micro_usd, number, raw,
    relative, text, write_config,
};
use crate::config::AgentCli;
use crate::runtime::event::{AgentState, ChangeKind, EventBody, LineParser, OutputStream, Parsed};
use crate::runtime::process::{Interrupt, StdinMode};
use crate::session::LlmAccess;

/// The provider name in `models.json`.
const PROVIDER: &str = "godel";

/// Request ids of the commands the parser sends.
const PROMPT_ID: &str = "godel-prompt";
const STATS_ID: &str = "godel-stats";

/// Pi's configuration directory inside the session's home.
pub fn config_dir(home: &Path) -> PathBuf {
    home.join(".pi/agent")
}

/// Writes `models.json` and returns how Pi is started.
pub(super) fn launch(
    settings: &AgentCli,
    prompt: &str,
    home: &Path,
    llm: &LlmAccess,
) -> Result<Launch, AdapterError> {
    let dir = config_dir(home);
    let models = json!({"providers": {PROVIDER: {
        "baseUrl": format!("{}/v1", llm.base_url.trim_end_matches('/')),
        "api": "openai-completions",
        "apiKey": "GODEL_SESSION_TOKEN",
        "models": [{"id": settings.model}],
    }}});
    write_config("pi", &dir.join("models.json"), &format!("{models:#}\n"))?;
    let sessions = home.join(".pi/sessions");
    Ok(Launch {
        args: vec![
            "--mode".into(),
            "rpc".into(),
            "--provider".into(),
            PROVIDER.into(),
            "--model".into(),
            OsString::from(&settings.model),
            "--session-dir".into(),
            sessions.into(),
        ],
        env: vec![
            ("PI_CODING_AGENT_DIR".to_owned(), dir.display().to_string()),
            ("PI_OFFLINE".to_owned(), "1".to_owned()),
        ],
        stdin: StdinMode::Pipe,
        interrupt: Some(Interrupt::Stdin(command(&json!({"type": "abort"})))),
        protocol: Protocol::PiRpc {
            prompt: prompt.to_owned(),
        },
    })
}

/// The RPC command that steers Pi with `message`: queued while it works and
/// delivered after its current tool calls (the rest of them skipped).
pub(super) fn steer_command(message: &str) -> Vec<u8> {
    command(&json!({"type": "steer", "message": message}))
}

/// One RPC command as a JSONL line.
fn command(value: &Value) -> Vec<u8> {
    let mut line = value.to_string().into_bytes();
    line.push(b'\n');
    line
}

/// A tool call seen at `tool_execution_start`, until its end.
#[derive(Debug)]
struct Running {
    name: String,
    args: Value,
    /// Whether the file the call names existed when it started.
    existed: bool,
}

/// Parses Pi's RPC output.
#[derive(Debug)]
pub struct Parser {
    workdir: PathBuf,
    prompt: String,
    running: HashMap<String, Running>,
}

impl Parser {
    pub fn new(workdir: &Path, prompt: &str) -> Self {
        Self {
            workdir: workdir.to_path_buf(),
            prompt: prompt.to_owned(),
            running: HashMap::new(),
        }
    }

    fn file_change(
        &self,
        call: &Running,
        raw: &str,
    ) -> Option<crate::runtime::event::SessionEvent> {
        let path = text(&call.args, "path");
        if path.is_empty() {
            return None;
        }
        let (kind, added, removed) = match call.name.as_str() {
            "write" => (
                if call.existed {
                    ChangeKind::Modified
                } else {
                    ChangeKind::Added
                },
                count_lines(text(&call.args, "content")),
                0,
            ),
            "edit" => {
                let edits = call.args.get("edits").and_then(Value::as_array);
                let (added, removed) = edits.into_iter().flatten().fold((0, 0), |(a, r), e| {
                    (
                        a + count_lines(text(e, "newText")),
                        r + count_lines(text(e, "oldText")),
                    )
                });
                (ChangeKind::Modified, added, removed)
            }
            _ => return None,
        };
        Some(event(
            EventBody::FileChange {
                path: relative(&self.workdir, path),
                kind,
                old_path: None,
                lines_added: added,
                lines_removed: removed,
            },
            raw,
        ))
    }

    fn assistant_message(message: &Value, raw: &str) -> Vec<crate::runtime::event::SessionEvent> {
        let mut events = Vec::new();
        for block in message
            .get("content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            match text(block, "type") {
                "text" if !text(block, "text").is_empty() => events.push(event(
                    EventBody::AssistantMessage {
                        text: text(block, "text").to_owned(),
                    },
                    raw,
                )),
                "toolCall" => events.push(event(
                    EventBody::ToolCall {
                        call_id: text(block, "id").to_owned(),
                        name: text(block, "name").to_owned(),
                        input_json: block
                            .get("arguments")
                            .cloned()
                            .unwrap_or(Value::Null)
                            .to_string(),
                    },
                    raw,
                )),
                _ => {}
            }
        }
        if let Some(usage) = message.get("usage") {
            let input =
                number(usage, "input") + number(usage, "cacheRead") + number(usage, "cacheWrite");
            let output = number(usage, "output");
            let cost = usage
                .get("cost")
                .and_then(|c| c.get("total"))
                .and_then(Value::as_f64)
                .unwrap_or_default();
            if input + output > 0 {
                events.push(event(
                    EventBody::Usage {
                        input_tokens: input,
                        output_tokens: output,
                        cost_micro_usd: micro_usd(cost),
                    },
                    raw,
                ));
            }
        }
        events
    }

    /// The outcome `agent_end` reports: done, or the last assistant message's error.
    fn agent_end(value: &Value, raw: &str) -> crate::runtime::event::SessionEvent {
        let last = value
            .get("messages")
            .and_then(Value::as_array)
            .and_then(|messages| {
                messages
                    .iter()
                    .rev()
                    .find(|m| text(m, "role") == "assistant")
            });
        let Some(last) = last else {
            return event(
                EventBody::Error {
                    code: "no_reply".to_owned(),
                    message: "the agent ended without a reply from the model".to_owned(),
                },
                raw,
            );
        };
        let message = text(last, "errorMessage");
        match text(last, "stopReason") {
            "error" => event(
                EventBody::Error {
                    code: "provider_error".to_owned(),
                    message: message.to_owned(),
                },
                raw,
            ),
            "aborted" => event(
                EventBody::Error {
                    code: crate::runtime::event::INTERRUPTED.to_owned(),
                    message: if message.is_empty() {
                        "the agent was aborted".to_owned()
                    } else {
                        message.to_owned()
                    },
                },
                raw,
            ),
            reason => event(
                EventBody::State {
                    state: AgentState::Done,
                    reason: format!("stop reason: {reason}"),
                },
                raw,
            ),
        }
    }
}

impl LineParser for Parser {
    fn opening(&mut self) -> Option<Vec<u8>> {
        Some(command(
            &json!({"id": PROMPT_ID, "type": "prompt", "message": self.prompt}),
        ))
    }

    fn parse(&mut self, stream: OutputStream, line: &str) -> Parsed {
        let value = match json_line(stream, line) {
            Ok(value) => value,
            Err(raw) => return raw,
        };
        let raw_event = || raw(stream, line);
        let state = |state: AgentState, reason: &str| {
            Parsed::one(event(
                EventBody::State {
                    state,
                    reason: reason.to_owned(),
                },
                line,
            ))
        };
        match text(&value, "type") {
            "response" => match (text(&value, "id"), value.get("success")) {
                (PROMPT_ID, Some(Value::Bool(false))) => Parsed {
                    events: vec![event(
                        EventBody::Error {
                            code: "prompt_rejected".to_owned(),
                            message: text(&value, "error").to_owned(),
                        },
                        line,
                    )],
                    reply: None,
                    close_stdin: true,
                },
                (STATS_ID, _) => Parsed {
                    close_stdin: true,
                    ..raw_event()
                },
                (PROMPT_ID, _) => Parsed::default(),
                _ => raw_event(),
            },
            "agent_start" => state(AgentState::Thinking, "the agent started"),
            "turn_start" => state(AgentState::Thinking, "a turn started"),
            // Streaming deltas and echoes of what `message_end`/`tool_execution_end`
            // report in full.
            "message_start" | "message_update" | "turn_end" => Parsed::default(),
            "message_end" => {
                let message = value.get("message").cloned().unwrap_or(Value::Null);
                if text(&message, "role") == "assistant" {
                    Parsed::events(Self::assistant_message(&message, line))
                } else {
                    Parsed::default()
                }
            }
            "tool_execution_start" => {
                let name = text(&value, "toolName").to_owned();
                let args = value.get("args").cloned().unwrap_or(Value::Null);
                let existed = Some(text(&args, "path"))
                    .filter(|p| !p.is_empty())
                    .is_some_and(|p| self.workdir.join(p).exists());
                let parsed = state(AgentState::ToolRunning, &name);
                self.running.insert(
                    text(&value, "toolCallId").to_owned(),
                    Running {
                        name,
                        args,
                        existed,
                    },
                );
                parsed
            }
            "tool_execution_end" => {
                let id = text(&value, "toolCallId").to_owned();
                let is_error = value
                    .get("isError")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let output = value
                    .get("result")
                    .and_then(|r| r.get("content"))
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|block| text(block, "text"))
                    .collect::<Vec<_>>()
                    .join("\n");
                let mut events = vec![event(
                    EventBody::ToolResult {
                        call_id: id.clone(),
                        output,
                        is_error,
                    },
                    line,
                )];
                if let Some(call) = self.running.remove(&id)
                    && !is_error
                {
                    events.extend(self.file_change(&call, line));
                }
                Parsed::events(events)
            }
            "agent_end" => Parsed {
                events: vec![Self::agent_end(&value, line)],
                reply: Some(command(
                    &json!({"id": STATS_ID, "type": "get_session_stats"}),
                )),
                close_stdin: false,
            },
            _ => raw_event(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::event::{Verdict, judge};

    /// Lines recorded from Pi 0.73.1 writing `hello.txt` against the scripted
    /// provider (long fields shortened).
    const RUN: &[&str] = &[
        r#"{"id":"godel-prompt","type":"response","command":"prompt","success":true}"#,
        r#"{"type":"agent_start"}"#,
        r#"{"type":"turn_start"}"#,
        r#"{"type":"message_start","message":{"role":"user","content":[{"type":"text","text":"write hello.txt"}],"timestamp":1}}"#,
        r#"{"type":"message_end","message":{"role":"assistant","content":[{"type":"toolCall","id":"call_1","name":"write","arguments":{"content":"hello\n","path":"/w/s1/hello.txt"}}],"api":"openai-completions","provider":"godel","model":"m","usage":{"input":120,"output":30,"cacheRead":0,"cacheWrite":0,"totalTokens":150,"cost":{"input":0,"output":0,"cacheRead":0,"cacheWrite":0,"total":0.0015}},"stopReason":"toolUse","timestamp":2,"responseId":"chatcmpl-1"}}"#,
        r#"{"type":"tool_execution_start","toolCallId":"call_1","toolName":"write","args":{"content":"hello\n","path":"/w/s1/hello.txt"}}"#,
        r#"{"type":"tool_execution_end","toolCallId":"call_1","toolName":"write","result":{"content":[{"type":"text","text":"Successfully wrote 6 bytes to /w/s1/hello.txt"}]},"isError":false}"#,
        r#"{"type":"message_end","message":{"role":"assistant","content":[{"type":"text","text":"Done: I wrote the file."}],"usage":{"input":120,"output":30,"cacheRead":0,"cacheWrite":0,"totalTokens":150,"cost":{"total":0}},"stopReason":"stop","timestamp":3}}"#,
        r#"{"type":"agent_end","messages":[{"role":"user","content":[]},{"role":"assistant","content":[{"type":"text","text":"Done: I wrote the file."}],"stopReason":"stop"}]}"#,
        r#"{"id":"godel-stats","type":"response","command":"get_session_stats","success":true,"data":{"userMessages":1}}"#,
    ];

    fn parse_all(parser: &mut Parser, lines: &[&str]) -> Vec<Parsed> {
        lines
            .iter()
            .map(|line| parser.parse(OutputStream::Stdout, line))
            .collect()
    }

    #[test]
    fn a_run_becomes_normalized_events() {
        let mut parser = Parser::new(Path::new("/w/s1"), "write hello.txt");
        let opening = String::from_utf8(parser.opening().unwrap()).unwrap();
        assert!(opening.contains(r#""type":"prompt""#) && opening.ends_with('\n'));
        let parsed = parse_all(&mut parser, RUN);
        let events: Vec<_> = parsed.iter().flat_map(|p| p.events.clone()).collect();
        let bodies: Vec<_> = events.iter().map(|e| e.body.clone()).collect();
        assert!(bodies.contains(&EventBody::ToolCall {
            call_id: "call_1".into(),
            name: "write".into(),
            input_json: r#"{"content":"hello\n","path":"/w/s1/hello.txt"}"#.into(),
        }));
        assert!(bodies.contains(&EventBody::FileChange {
            path: "hello.txt".into(),
            kind: ChangeKind::Added,
            old_path: None,
            lines_added: 1,
            lines_removed: 0,
        }));
        assert!(bodies.contains(&EventBody::Usage {
            input_tokens: 120,
            output_tokens: 30,
            cost_micro_usd: 1500,
        }));
        assert!(bodies.contains(&EventBody::AssistantMessage {
            text: "Done: I wrote the file.".into()
        }));
        assert!(matches!(
            bodies
                .iter()
                .find(|b| matches!(b, EventBody::ToolResult { .. })),
            Some(EventBody::ToolResult {
                is_error: false,
                ..
            })
        ));
        assert_eq!(judge(&events), Verdict::Succeeded);
        // agent_end asks for the session stats; their answer ends the input.
        let end = &parsed[RUN.len() - 2];
        assert!(
            String::from_utf8(end.reply.clone().unwrap())
                .unwrap()
                .contains("get_session_stats")
        );
        assert!(!end.close_stdin);
        assert!(parsed[RUN.len() - 1].close_stdin);
        // Every event keeps its line.
        assert!(events.iter().all(|e| RUN.contains(&e.raw.as_str())));
    }

    #[test]
    fn a_provider_error_fails_the_run() {
        let mut parser = Parser::new(Path::new("/w/s1"), "p");
        let line = r#"{"type":"agent_end","messages":[{"role":"user","content":[]},{"role":"assistant","content":[],"usage":{"input":0,"output":0},"stopReason":"error","errorMessage":"401 scripted provider error: Unauthorized"}]}"#;
        let events = parser.parse(OutputStream::Stdout, line).events;
        assert_eq!(
            judge(&events),
            Verdict::Failed {
                reason: "provider_error: 401 scripted provider error: Unauthorized".into()
            }
        );
        let rejected = parser.parse(
            OutputStream::Stdout,
            r#"{"id":"godel-prompt","type":"response","command":"prompt","success":false,"error":"no model"}"#,
        );
        assert!(rejected.close_stdin);
        assert!(matches!(judge(&rejected.events), Verdict::Failed { .. }));
    }

    #[test]
    fn other_lines_are_kept_raw() {
        let mut parser = Parser::new(Path::new("/w"), "p");
        for (stream, line) in [
            (OutputStream::Stdout, "not json"),
            (
                OutputStream::Stdout,
                r#"{"type":"auto_retry_start","attempt":1}"#,
            ),
            (OutputStream::Stderr, r#"{"type":"agent_end"}"#),
        ] {
            let parsed = parser.parse(stream, line);
            assert_eq!(
                parsed.events[0].body,
                EventBody::Raw {
                    stream,
                    text: line.into()
                }
            );
        }
    }
}
