//! The normalized session event and the generic "command" adapter's parser.
//!
//! Every adapter turns its agent's output into [`SessionEvent`]s: one schema whatever
//! agent ran. The parser here understands the JSONL the simulated agent prints (see
//! [`crate::runtime::sim_agent`] for the shape), plus
//! `{"type":"state","state":"thinking"|"tool_running"|"awaiting_approval"|"idle","reason":"…"}`
//! for programs that report what they are doing; any other stdout line becomes an
//! assistant message and any stderr line a raw event, each with the original line kept.
//! [`judge`] decides the outcome from the events, never from the exit code.

use serde::{Deserialize, Serialize};

/// Which output stream of the agent a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    Stdout,
    Stderr,
}

impl OutputStream {
    /// `stdout` or `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// What kind of change an agent made to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
    Renamed,
}

/// What the agent is doing, as far as its output tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    Thinking,
    ToolRunning,
    AwaitingApproval,
    Idle,
    /// The agent reported that it finished its work.
    Done,
}

impl AgentState {
    /// `thinking`, `tool_running`, `awaiting_approval`, `idle` or `done`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Thinking => "thinking",
            Self::ToolRunning => "tool_running",
            Self::AwaitingApproval => "awaiting_approval",
            Self::Idle => "idle",
            Self::Done => "done",
        }
    }
}

/// One normalized thing an agent did.
#[derive(Debug, Clone, PartialEq)]
pub enum EventBody {
    /// Text the agent wrote.
    AssistantMessage { text: String },
    /// The agent asked to run a tool; `input_json` is the tool's input as JSON text.
    ToolCall {
        call_id: String,
        name: String,
        input_json: String,
    },
    /// What a tool returned.
    ToolResult {
        call_id: String,
        output: String,
        is_error: bool,
    },
    /// A file the agent changed, relative to the workspace root.
    FileChange {
        path: String,
        kind: ChangeKind,
        old_path: Option<String>,
        lines_added: u32,
        lines_removed: u32,
    },
    /// Usage of one model call (a delta).
    Usage {
        input_tokens: u64,
        output_tokens: u64,
        cost_micro_usd: u64,
    },
    /// The agent changed state.
    State { state: AgentState, reason: String },
    /// The agent reported an error; `code` is stable snake_case.
    Error { code: String, message: String },
    /// Output that did not map to another kind.
    Raw { stream: OutputStream, text: String },
}

/// A normalized event with the output line it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionEvent {
    pub body: EventBody,
    /// The original line, kept as-is.
    pub raw: String,
}

/// The simulated agent's JSONL line (see [`crate::runtime::sim_agent`]).
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum JsonLine {
    Message {
        text: String,
    },
    ToolCall {
        id: String,
        name: String,
        #[serde(default)]
        input: serde_json::Value,
    },
    ToolResult {
        id: String,
        #[serde(default)]
        output: String,
        #[serde(default)]
        is_error: bool,
    },
    FileChange {
        path: String,
        kind: ChangeKind,
        #[serde(default)]
        old_path: Option<String>,
        #[serde(default)]
        lines_added: u32,
        #[serde(default)]
        lines_removed: u32,
    },
    Usage {
        #[serde(default)]
        input_tokens: u64,
        #[serde(default)]
        output_tokens: u64,
        #[serde(default)]
        cost_micro_usd: u64,
    },
    State {
        state: AgentState,
        #[serde(default)]
        reason: String,
    },
    Done {
        #[serde(default)]
        summary: String,
    },
    Error {
        code: String,
        #[serde(default)]
        message: String,
    },
    Interrupted {
        #[serde(default)]
        signal: String,
    },
}

impl From<JsonLine> for EventBody {
    fn from(line: JsonLine) -> Self {
        match line {
            JsonLine::Message { text } => Self::AssistantMessage { text },
            JsonLine::ToolCall { id, name, input } => Self::ToolCall {
                call_id: id,
                name,
                input_json: input.to_string(),
            },
            JsonLine::ToolResult {
                id,
                output,
                is_error,
            } => Self::ToolResult {
                call_id: id,
                output,
                is_error,
            },
            JsonLine::FileChange {
                path,
                kind,
                old_path,
                lines_added,
                lines_removed,
            } => Self::FileChange {
                path,
                kind,
                old_path,
                lines_added,
                lines_removed,
            },
            JsonLine::Usage {
                input_tokens,
                output_tokens,
                cost_micro_usd,
            } => Self::Usage {
                input_tokens,
                output_tokens,
                cost_micro_usd,
            },
            JsonLine::State { state, reason } => Self::State { state, reason },
            JsonLine::Done { summary } => Self::State {
                state: AgentState::Done,
                reason: summary,
            },
            JsonLine::Error { code, message } => Self::Error { code, message },
            JsonLine::Interrupted { signal } => Self::Error {
                code: INTERRUPTED.to_owned(),
                message: format!("the agent stopped on {signal}"),
            },
        }
    }
}

/// The error code of the event an agent prints when it stops on an interrupt.
pub const INTERRUPTED: &str = "interrupted";

/// Parses one output line of the generic command adapter.
///
/// A stdout line that is a JSON object in the simulated agent's shape becomes its
/// event; any other stdout line becomes an assistant message; a stderr line becomes a
/// raw event. The line is kept in [`SessionEvent::raw`] in every case.
pub fn parse_line(stream: OutputStream, line: &str) -> SessionEvent {
    let body = match stream {
        OutputStream::Stdout => match serde_json::from_str::<JsonLine>(line) {
            Ok(parsed) => parsed.into(),
            Err(_) => EventBody::AssistantMessage {
                text: line.to_owned(),
            },
        },
        OutputStream::Stderr => EventBody::Raw {
            stream,
            text: line.to_owned(),
        },
    };
    SessionEvent {
        body,
        raw: line.to_owned(),
    }
}

/// What one output line of an agent produced: its normalized events, and what to
/// send the agent in answer (RPC modes: a command written to its stdin, or the end
/// of its input).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    pub events: Vec<SessionEvent>,
    /// Bytes to write to the agent's stdin (needs a stdin pipe).
    pub reply: Option<Vec<u8>>,
    /// Close the agent's stdin after `reply`: the agent has nothing more to do.
    pub close_stdin: bool,
}

impl Parsed {
    /// One event, nothing to send.
    pub fn one(event: SessionEvent) -> Self {
        Self {
            events: vec![event],
            ..Self::default()
        }
    }

    /// Events, nothing to send.
    pub fn events(events: Vec<SessionEvent>) -> Self {
        Self {
            events,
            ..Self::default()
        }
    }
}

/// One agent's output protocol: turns its output lines into normalized events (a
/// parser may keep state across lines, e.g. a tool call's input until its result),
/// may talk back on the agent's stdin, and judges the run from the events.
pub trait LineParser: Send {
    /// Bytes to write to the agent's stdin right after it started (RPC modes: the
    /// prompt command).
    fn opening(&mut self) -> Option<Vec<u8>> {
        None
    }

    /// Parses one line of `stream` (without its line ending).
    fn parse(&mut self, stream: OutputStream, line: &str) -> Parsed;

    /// The run's outcome from its events; never from the exit code.
    fn judge(&self, events: &[SessionEvent]) -> Verdict {
        judge(events)
    }
}

/// The generic command adapter's protocol: every line through [`parse_line`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CommandParser;

impl LineParser for CommandParser {
    fn parse(&mut self, stream: OutputStream, line: &str) -> Parsed {
        Parsed::one(parse_line(stream, line))
    }
}

/// How a session ended, judged from its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Succeeded,
    Failed { reason: String },
}

/// Judges a run from its events: it succeeded when the agent reported `done` and
/// reported no error after that; otherwise it failed with the last error it reported
/// (or "no done event"). The exit code plays no part.
pub fn judge<'a>(events: impl IntoIterator<Item = &'a SessionEvent>) -> Verdict {
    let mut done = false;
    let mut last_error: Option<(String, String)> = None;
    for event in events {
        match &event.body {
            EventBody::State {
                state: AgentState::Done,
                ..
            } => {
                done = true;
                last_error = None;
            }
            EventBody::Error { code, message } => {
                done = false;
                last_error = Some((code.clone(), message.clone()));
            }
            _ => {}
        }
    }
    match (done, last_error) {
        (true, _) => Verdict::Succeeded,
        (false, Some((code, message))) => Verdict::Failed {
            reason: format!("{code}: {message}"),
        },
        (false, None) => Verdict::Failed {
            reason: "the agent ended without reporting done".to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind_and_keeps_the_line() {
        let line = r#"{"type":"tool_call","id":"c1","name":"write_file","input":{"path":"a"}}"#;
        let event = parse_line(OutputStream::Stdout, line);
        assert_eq!(event.raw, line);
        assert_eq!(
            event.body,
            EventBody::ToolCall {
                call_id: "c1".into(),
                name: "write_file".into(),
                input_json: r#"{"path":"a"}"#.into(),
            }
        );
        let event = parse_line(
            OutputStream::Stdout,
            r#"{"type":"file_change","path":"x","kind":"added","lines_added":3}"#,
        );
        assert!(matches!(
            event.body,
            EventBody::FileChange {
                kind: ChangeKind::Added,
                lines_added: 3,
                ..
            }
        ));
    }

    #[test]
    fn other_lines_become_messages_or_raw() {
        let event = parse_line(OutputStream::Stdout, "hello {");
        assert_eq!(
            event.body,
            EventBody::AssistantMessage {
                text: "hello {".into()
            }
        );
        let event = parse_line(OutputStream::Stdout, r#"{"type":"unknown"}"#);
        assert!(matches!(event.body, EventBody::AssistantMessage { .. }));
        let event = parse_line(OutputStream::Stderr, r#"{"type":"done"}"#);
        assert!(matches!(
            event.body,
            EventBody::Raw {
                stream: OutputStream::Stderr,
                ..
            }
        ));
    }

    #[test]
    fn judges_from_the_stream() {
        let done = parse_line(OutputStream::Stdout, r#"{"type":"done"}"#);
        let error = parse_line(
            OutputStream::Stdout,
            r#"{"type":"error","code":"boom","message":"no"}"#,
        );
        assert_eq!(judge([&done]), Verdict::Succeeded);
        assert_eq!(judge([&error, &done]), Verdict::Succeeded);
        assert_eq!(
            judge([&done, &error]),
            Verdict::Failed {
                reason: "boom: no".into()
            }
        );
        assert!(matches!(judge([]), Verdict::Failed { .. }));
    }
}
