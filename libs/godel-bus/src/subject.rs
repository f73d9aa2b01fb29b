//! Typed, versioned subjects — the only place subject strings are built.
//!
//! Catalog (see `docs/events.md`):
//! - `godel.v1.team.<team_id>.task.<event>`
//! - `godel.v1.team.<team_id>.plan.<event>`
//! - `godel.v1.team.<team_id>.session.<event>`
//! - `godel.v1.team.<team_id>.iam.<event>` (team, role and key changes)
//! - `godel.v1.dispatch.<orchestrator_id>`

use std::fmt;

use godel_types::{OrchestratorId, TeamId};

use crate::BusError;

/// The version segment every subject starts with.
pub const ROOT: &str = "godel.v1";

/// A logical subject (without any deployment or test prefix).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subject(String);

impl Subject {
    /// A task state change of `team`.
    pub fn task(team: TeamId, event: &str) -> Self {
        Self(format!("{ROOT}.team.{team}.task.{event}"))
    }

    /// A plan state change of `team`.
    pub fn plan(team: TeamId, event: &str) -> Self {
        Self(format!("{ROOT}.team.{team}.plan.{event}"))
    }

    /// A session state change or session event of `team`.
    pub fn session(team: TeamId, event: &str) -> Self {
        Self(format!("{ROOT}.team.{team}.session.{event}"))
    }

    /// A change to a team, its members, roles or keys.
    pub fn iam(team: TeamId, event: &str) -> Self {
        Self(format!("{ROOT}.team.{team}.iam.{event}"))
    }

    /// Work announced to one orchestrator instance.
    pub fn dispatch(orchestrator: OrchestratorId) -> Self {
        Self(format!("{ROOT}.dispatch.{orchestrator}"))
    }

    /// Filter matching every event of every team.
    pub fn all_team_events() -> String {
        format!("{ROOT}.team.>")
    }

    /// Filter matching every task event of one team.
    pub fn team_task_events(team: TeamId) -> String {
        format!("{ROOT}.team.{team}.task.*")
    }

    /// Filter matching every plan event of one team.
    pub fn team_plan_events(team: TeamId) -> String {
        format!("{ROOT}.team.{team}.plan.*")
    }

    /// Filter matching every event of one team.
    pub fn team_events(team: TeamId) -> String {
        format!("{ROOT}.team.{team}.>")
    }

    /// Parses and validates a subject read back from the bus.
    pub fn parse(s: &str) -> Result<Self, BusError> {
        let invalid = |reason: &str| BusError::InvalidSubject {
            subject: s.to_owned(),
            reason: reason.to_owned(),
        };
        if !s.starts_with(ROOT) || s.len() == ROOT.len() {
            return Err(invalid("must start with `godel.v1.`"));
        }
        if s.split('.')
            .any(|t| t.is_empty() || t.contains(['*', '>', ' ']))
        {
            return Err(invalid(
                "tokens must be non-empty and contain no wildcards or spaces",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last token (the event name).
    pub fn event(&self) -> &str {
        self.0.rsplit('.').next().unwrap_or_default()
    }
}

/// True when `subject` matches the NATS filter `filter` (`*` = one token, `>` = rest).
pub fn matches(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut s = subject.split('.');
    loop {
        match (f.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Subject({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_versioned_subjects() {
        let team = TeamId::new();
        let s = Subject::task(team, "queued");
        assert_eq!(s.as_str(), format!("godel.v1.team.{team}.task.queued"));
        assert_eq!(s.event(), "queued");
        assert_eq!(Subject::parse(s.as_str()).unwrap(), s);
    }

    #[test]
    fn wildcard_matching() {
        let team = TeamId::new();
        let s = Subject::session(team, "started");
        assert!(matches(&Subject::all_team_events(), s.as_str()));
        assert!(matches(&Subject::team_events(team), s.as_str()));
        assert!(!matches(&Subject::team_events(TeamId::new()), s.as_str()));
        assert!(matches(
            &Subject::team_task_events(team),
            Subject::task(team, "queued").as_str()
        ));
        assert!(!matches(&Subject::team_task_events(team), s.as_str()));
        assert!(matches(
            &Subject::team_plan_events(team),
            Subject::plan(team, "submitted").as_str()
        ));
        assert!(matches("godel.v1.team.*.session.*", s.as_str()));
        assert!(!matches("godel.v1.team.*.task.*", s.as_str()));
        assert!(!matches("godel.v1.team", s.as_str()));
        assert!(!matches("godel.v1.>", "godel.v1"));
    }

    #[test]
    fn rejects_bad_subjects() {
        assert!(Subject::parse("other.v1.x").is_err());
        assert!(Subject::parse("godel.v1..x").is_err());
        assert!(Subject::parse("godel.v1.team.*").is_err());
        assert!(Subject::parse("godel.v1").is_err());
    }
}
