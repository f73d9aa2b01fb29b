//! Typed identifiers and small domain values shared by every Godel crate.
//!
//! Every id is a UUIDv7 (time-ordered) behind a type of its own, written with a
//! short prefix (`tsk_…`, `team_…`) so ids never mix in signatures, logs or URLs.
//! This crate does no I/O.

mod id;

pub use id::{
    ApiKeyId, AuditRecordId, EventId, IdParseError, OrchestratorId, PlanId, ProfileId, RoleId,
    SecretId, SessionId, TaskId, TeamId, UserId,
};
