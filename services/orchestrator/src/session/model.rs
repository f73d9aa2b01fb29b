//! What a session is: its states and the transitions allowed between them, the
//! session record, and the entries of its event log.

use std::time::Duration;

use chrono::{DateTime, Utc};
use godel_types::{OrchestratorId, ProfileId, SessionId, TaskId, TeamId};
use serde::{Deserialize, Serialize};

use crate::runtime::confine::ConfinementLevel;
use crate::runtime::event::{AgentState, ChangeKind, EventBody, OutputStream};
use crate::runtime::worktree::DiffSummary;

/// Where a session is in its life.
///
/// ```text
/// pending → starting → running ⇄ awaiting_approval
///    │          │          │             │
///    └──────────┴──────────┴─────────────┴──→ succeeded | failed | cancelled | lost
/// ```
///
/// Only `running` may become `succeeded`; every non-terminal state may become
/// `failed`, `cancelled` or `lost`; terminal states never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    Pending,
    Starting,
    Running,
    AwaitingApproval,
    Succeeded,
    Failed,
    Cancelled,
    Lost,
}

impl SessionState {
    pub const ALL: [Self; 8] = [
        Self::Pending,
        Self::Starting,
        Self::Running,
        Self::AwaitingApproval,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
        Self::Lost,
    ];

    /// The snake_case name, as stored and as the event subject's last token.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::AwaitingApproval => "awaiting_approval",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Lost => "lost",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Cancelled | Self::Lost
        )
    }

    /// Whether a session in this state may move to `to`.
    pub fn can_move_to(self, to: Self) -> bool {
        use SessionState::*;
        match (self, to) {
            (Pending, Starting)
            | (Starting, Running)
            | (Running, AwaitingApproval)
            | (AwaitingApproval, Running)
            | (Running, Succeeded) => true,
            (from, Failed | Cancelled | Lost) => !from.is_terminal(),
            _ => false,
        }
    }
}

/// The repository a session works in, as requested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    /// A clone URL, or an absolute path when local repositories are allowed.
    pub url: String,
    /// Branch, tag or commit to start from; `None` for the default branch.
    pub git_ref: Option<String>,
}

/// Bounds a session is stopped at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionLimits {
    /// Wall-clock time; `None` means the configured default.
    pub max_duration: Option<Duration>,
    /// Cost reported by the agent, in millionths of a US dollar; 0 means no bound.
    pub max_cost_micro_usd: u64,
    /// Input plus output tokens reported by the agent; 0 means no bound.
    pub max_tokens: u64,
}

/// Token and cost totals of a session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_micro_usd: u64,
}

/// How a session ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionResult {
    /// The agent's exit code, when it exited by itself.
    pub exit_code: Option<i32>,
    /// The signal that killed the agent, by name.
    pub exit_signal: Option<String>,
    /// `succeeded`, or why it failed, judged from the event stream.
    pub outcome: String,
    /// The commit holding the work, when it succeeded and changed something.
    pub commit: Option<String>,
    pub diff: Option<DiffSummary>,
    /// What the quality gate and the plan merge did, once the agent succeeded.
    pub integration: Option<Integration>,
}

/// What happened after the agent succeeded: the quality gate, the merge onto the
/// plan's integration branch, and whether a failure there is one retrying cannot fix.
/// Stored as JSON with the session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Integration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<MergeSummary>,
    /// The code of a failure a retry would only repeat (`gate_failed`,
    /// `merge_conflict`, `plan_closed`): its task fails for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permanent_failure: Option<String>,
}

/// How the quality gate ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateSummary {
    pub command: String,
    pub passed: bool,
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    /// One line: what ran and how it ended.
    pub summary: String,
    /// The end of its output (at most 16 KiB).
    pub output: String,
}

/// What merging the task's branch onto its plan's integration branch did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeSummary {
    /// `godel/plan-<plan-id>`.
    pub branch: String,
    /// The integration branch's head after the merge; `None` on a conflict.
    pub commit: Option<String>,
    /// The conflicting files, when the merge failed.
    #[serde(default)]
    pub conflicts: Vec<String>,
}

/// A session as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub id: SessionId,
    pub team_id: TeamId,
    pub task_id: TaskId,
    pub epoch: u64,
    pub profile_id: Option<ProfileId>,
    pub adapter: String,
    /// `process`: the worktree runtime.
    pub runtime: String,
    pub repository: Repository,
    /// `godel/<task-id>`, once the worktree exists.
    pub branch: Option<String>,
    pub base_commit: Option<String>,
    pub orchestrator_id: OrchestratorId,
    pub state: SessionState,
    /// The confinement applied to the agent, once it started.
    pub confinement: Option<ConfinementLevel>,
    pub task_type: String,
    pub prompt: String,
    pub payload: serde_json::Value,
    pub limits: SessionLimits,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    /// Why it failed or was stopped.
    pub error: Option<String>,
    pub result: Option<SessionResult>,
    pub usage: Usage,
    /// The offset of the latest event in its log (0 before the first).
    pub last_event_offset: u64,
}

/// What a session's event log holds: the agent's normalized events plus what the
/// orchestrator itself records (state changes, the runtime start). Stored as JSON
/// tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LogBody {
    AssistantMessage {
        text: String,
    },
    ToolCall {
        call_id: String,
        name: String,
        input_json: String,
    },
    ToolResult {
        call_id: String,
        output: String,
        is_error: bool,
    },
    FileChange {
        path: String,
        change: ChangeKind,
        old_path: Option<String>,
        lines_added: u32,
        lines_removed: u32,
    },
    Usage {
        input_tokens: u64,
        output_tokens: u64,
        cost_micro_usd: u64,
    },
    AgentState {
        state: AgentState,
        reason: String,
    },
    Error {
        code: String,
        message: String,
    },
    Raw {
        stream: OutputStream,
        text: String,
    },
    StateChange {
        from: Option<SessionState>,
        to: SessionState,
        reason: String,
    },
    RuntimeStarted {
        runtime: String,
        confinement: ConfinementLevel,
        branch: String,
        base_commit: String,
    },
}

impl LogBody {
    /// The `kind` tag, also stored in its own column.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::AssistantMessage { .. } => "assistant_message",
            Self::ToolCall { .. } => "tool_call",
            Self::ToolResult { .. } => "tool_result",
            Self::FileChange { .. } => "file_change",
            Self::Usage { .. } => "usage",
            Self::AgentState { .. } => "agent_state",
            Self::Error { .. } => "error",
            Self::Raw { .. } => "raw",
            Self::StateChange { .. } => "state_change",
            Self::RuntimeStarted { .. } => "runtime_started",
        }
    }
}

impl From<EventBody> for LogBody {
    fn from(body: EventBody) -> Self {
        match body {
            EventBody::AssistantMessage { text } => Self::AssistantMessage { text },
            EventBody::ToolCall {
                call_id,
                name,
                input_json,
            } => Self::ToolCall {
                call_id,
                name,
                input_json,
            },
            EventBody::ToolResult {
                call_id,
                output,
                is_error,
            } => Self::ToolResult {
                call_id,
                output,
                is_error,
            },
            EventBody::FileChange {
                path,
                kind,
                old_path,
                lines_added,
                lines_removed,
            } => Self::FileChange {
                path,
                change: kind,
                old_path,
                lines_added,
                lines_removed,
            },
            EventBody::Usage {
                input_tokens,
                output_tokens,
                cost_micro_usd,
            } => Self::Usage {
                input_tokens,
                output_tokens,
                cost_micro_usd,
            },
            EventBody::State { state, reason } => Self::AgentState { state, reason },
            EventBody::Error { code, message } => Self::Error { code, message },
            EventBody::Raw { stream, text } => Self::Raw { stream, text },
        }
    }
}

/// An event to append: its body and the output line it came from (empty for
/// events the orchestrator records itself).
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub body: LogBody,
    pub raw: String,
}

impl NewEvent {
    /// An event the orchestrator records (no output line).
    pub fn own(body: LogBody) -> Self {
        Self {
            body,
            raw: String::new(),
        }
    }
}

/// One entry of a session's event log.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedEvent {
    pub session_id: SessionId,
    /// 1, 2, 3, … without gaps within the session.
    pub offset: u64,
    pub occurred_at: DateTime<Utc>,
    pub body: LogBody,
    pub raw: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_follow_the_diagram() {
        use SessionState::*;
        assert!(Pending.can_move_to(Starting));
        assert!(Starting.can_move_to(Running));
        assert!(Running.can_move_to(AwaitingApproval));
        assert!(AwaitingApproval.can_move_to(Running));
        assert!(Running.can_move_to(Succeeded));
        assert!(Pending.can_move_to(Cancelled));
        assert!(AwaitingApproval.can_move_to(Lost));
        assert!(!Pending.can_move_to(Running));
        assert!(!Pending.can_move_to(Succeeded));
        assert!(!Starting.can_move_to(Succeeded));
        assert!(!Running.can_move_to(Pending));
        for terminal in [Succeeded, Failed, Cancelled, Lost] {
            for to in SessionState::ALL {
                assert!(!terminal.can_move_to(to), "{terminal:?} -> {to:?}");
            }
        }
        for state in SessionState::ALL {
            assert_eq!(SessionState::parse(state.as_str()), Some(state));
        }
    }

    #[test]
    fn log_bodies_round_trip_through_json() {
        let body = LogBody::RuntimeStarted {
            runtime: "process".into(),
            confinement: ConfinementLevel::Partial,
            branch: "godel/x".into(),
            base_commit: "abc".into(),
        };
        let json = serde_json::to_string(&body).unwrap();
        assert!(json.contains(r#""kind":"runtime_started""#), "{json}");
        assert!(json.contains(r#""confinement":"partial""#), "{json}");
        assert_eq!(serde_json::from_str::<LogBody>(&json).unwrap(), body);
    }
}
