//! The audit log's domain values: records as written and as stored.

use chrono::{DateTime, Utc};
use godel_types::{AuditRecordId, TeamId};

use crate::canonical::Hash;

/// What kind of principal acted. The numbers are the stored (and proto) values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ActorKind {
    #[default]
    Unspecified,
    User,
    ApiKey,
    Service,
}

impl ActorKind {
    pub fn number(self) -> i32 {
        match self {
            Self::Unspecified => 0,
            Self::User => 1,
            Self::ApiKey => 2,
            Self::Service => 3,
        }
    }

    /// Unknown numbers read as `Unspecified`.
    pub fn from_number(n: i32) -> Self {
        match n {
            1 => Self::User,
            2 => Self::ApiKey,
            3 => Self::Service,
            _ => Self::Unspecified,
        }
    }
}

/// How the audited action ended. The numbers are the stored (and proto) values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Outcome {
    #[default]
    Unspecified,
    Success,
    Denied,
    Failure,
}

impl Outcome {
    pub fn number(self) -> i32 {
        match self {
            Self::Unspecified => 0,
            Self::Success => 1,
            Self::Denied => 2,
            Self::Failure => 3,
        }
    }

    /// Unknown numbers read as `Unspecified`.
    pub fn from_number(n: i32) -> Self {
        match n {
            1 => Self::Success,
            2 => Self::Denied,
            3 => Self::Failure,
            _ => Self::Unspecified,
        }
    }
}

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Actor {
    pub kind: ActorKind,
    /// `usr_…`, `key_…` or a service name.
    pub subject_id: String,
    /// The team the call acted in.
    pub team_id: Option<TeamId>,
    pub roles: Vec<String>,
}

/// The redactable contents of a record (the payload table).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordBody {
    pub actor: Actor,
    /// `<resource>.<verb>`, for example `task.submit`.
    pub action: String,
    pub resource: String,
    pub outcome: Outcome,
    /// W3C trace id: 32 hex digits, or empty.
    pub trace_id: String,
    pub client_ip: String,
    /// A JSON object, or empty.
    pub details_json: String,
}

/// A record to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    /// Chosen by the writer; makes appends idempotent.
    pub id: AuditRecordId,
    /// Stored with nanosecond precision (years 1678 to 2261).
    pub occurred_at: DateTime<Utc>,
    pub team_id: Option<TeamId>,
    pub body: RecordBody,
}

/// A stored record: its place in the chain and, unless erased, its body (as redacted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub sequence: u64,
    pub id: AuditRecordId,
    pub occurred_at: DateTime<Utc>,
    pub team_id: Option<TeamId>,
    /// `None` once retention or erasure removed it.
    pub body: Option<RecordBody>,
    pub prev_hash: Hash,
    pub hash: Hash,
}
