//! [`Auth`]: the handle on the auth database every identity operation goes through,
//! and the helpers the operations share (transactions that
//! wake the outbox relay, IAM events, database errors).

use std::pin::Pin;

use chrono::{DateTime, Utc};
use godel_error::Error;
pub use godel_identity::Principal;
use godel_proto::common::v1::{Caller, SubjectKind};
use godel_proto::events::v1::{IamChange, IamEvent};
use godel_store::sea_orm::{DatabaseTransaction, DbErr, SqlErr, TransactionError};
use godel_store::{Db, OutboxEvent, RelayNotifier};
use godel_types::TeamId;

use crate::config::TokenConfig;

/// The CloudEvents `source` of the events the auth service publishes.
const EVENT_SOURCE: &str = "/godel/auth";

/// The caller of an IAM event, as its payload names it.
pub(crate) fn caller_pb(principal: Principal, team: TeamId) -> Caller {
    let kind = match principal {
        Principal::User(_) => SubjectKind::User,
        Principal::ApiKey(_) => SubjectKind::ApiKey,
    };
    Caller {
        subject_kind: kind.into(),
        subject_id: principal.to_string(),
        team_id: team.to_string(),
        roles: Vec::new(),
    }
}

/// The auth service's identity core: teams, users, memberships, roles,
/// authorization, signing keys and access tokens, refresh tokens, API keys and
/// quotas, all stored in the service's own database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Auth {
    pub(crate) db: Db,
    notifier: Option<RelayNotifier>,
    pub(crate) tokens: TokenConfig,
}

impl Auth {
    /// An `Auth` on a migrated database (see [`Migrator`](crate::Migrator)). With a
    /// `notifier` the outbox relay is woken after every change; without one the
    /// relay finds the events at its next poll.
    pub fn new(db: Db, notifier: Option<RelayNotifier>, tokens: TokenConfig) -> Self {
        Self {
            db,
            notifier,
            tokens,
        }
    }

    /// The database this `Auth` works on.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Runs `f` in a transaction and wakes the outbox relay after it commits.
    pub(crate) async fn write<F, T>(&self, f: F) -> Result<T, Error>
    where
        F: for<'c> FnOnce(
                &'c DatabaseTransaction,
            )
                -> Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'c>>
            + Send,
        T: Send,
    {
        let out = self.db.transaction(f).await.map_err(|e| match e {
            TransactionError::Connection(source) => db_error("running a transaction")(source),
            TransactionError::Transaction(e) => e,
        })?;
        if let Some(notifier) = &self.notifier {
            notifier.notify();
        }
        Ok(out)
    }
}

/// Maps a database failure to an `internal` answer, logging the cause here (the
/// answer never carries database details).
pub(crate) fn db_error(operation: &'static str) -> impl FnOnce(DbErr) -> Error {
    move |source| {
        tracing::error!(error = %source, operation, "auth database operation failed");
        if godel_store::is_unavailable(&source) {
            Error::unavailable(format!("{operation} failed: the database is unavailable"))
        } else {
            Error::internal(format!("{operation} failed"))
        }
    }
}

/// True when `err` is a unique-constraint violation.
pub(crate) fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

/// An IAM event for the outbox: subject `godel.v1.team.<team>.iam.<change>`.
pub(crate) fn iam_event(
    team: TeamId,
    change: IamChange,
    actor: Principal,
    subject_id: String,
    roles: Vec<String>,
    at: DateTime<Utc>,
) -> Result<OutboxEvent, Error> {
    let event = change
        .as_str_name()
        .trim_start_matches("IAM_CHANGE_")
        .to_ascii_lowercase();
    let data = IamEvent {
        team_id: team.to_string(),
        change: change.into(),
        actor: Some(caller_pb(actor, team)),
        subject_id: subject_id.clone(),
        roles,
        occurred_at: Some(godel_proto::convert::to_timestamp(at)),
    };
    godel_backend::cloud_event(
        godel_bus::Subject::iam(team, &event),
        EVENT_SOURCE,
        "iam",
        &subject_id,
        at,
        &data,
    )
}

/// Writes `events` to the outbox in `txn`.
pub(crate) async fn enqueue(
    txn: &DatabaseTransaction,
    events: &[OutboxEvent],
) -> Result<(), Error> {
    godel_store::outbox::enqueue(txn, events)
        .await
        .map_err(|source| {
            tracing::error!(error = %source, "writing IAM events to the outbox failed");
            Error::internal("writing events failed")
        })
}

/// Strings to a JSON array (for list columns).
pub(crate) fn json_strings<S: AsRef<str>>(items: &[S]) -> serde_json::Value {
    serde_json::Value::Array(
        items
            .iter()
            .map(|s| serde_json::Value::String(s.as_ref().to_owned()))
            .collect(),
    )
}

/// A JSON array of strings back to strings; anything else is a corrupt row.
pub(crate) fn strings_from_json(
    value: &serde_json::Value,
    what: &str,
) -> Result<Vec<String>, Error> {
    let corrupt = || {
        tracing::error!(column = what, "stored list is not a JSON array of strings");
        Error::internal(format!("stored {what} are unreadable"))
    };
    let serde_json::Value::Array(items) = value else {
        return Err(corrupt());
    };
    items
        .iter()
        .map(|v| v.as_str().map(str::to_owned).ok_or_else(corrupt))
        .collect()
}

/// Current time truncated to microseconds, so what is returned equals what
/// PostgreSQL stores.
pub(crate) fn now() -> DateTime<Utc> {
    micros(Utc::now())
}

pub(crate) fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// The organisation roles a row holds: `org-admin` from its flag, the others from
/// its `org_roles` column. A name this version does not know (a newer role) is
/// ignored, never widened.
pub(crate) fn org_roles_from(
    org_admin: bool,
    stored: &serde_json::Value,
) -> Result<Vec<godel_identity::OrgRole>, Error> {
    let mut roles: Vec<godel_identity::OrgRole> = strings_from_json(stored, "organisation roles")?
        .iter()
        .filter_map(|name| godel_identity::OrgRole::from_name(name))
        .filter(|role| *role != godel_identity::OrgRole::Admin)
        .collect();
    if org_admin {
        roles.push(godel_identity::OrgRole::Admin);
    }
    roles.sort();
    roles.dedup();
    Ok(roles)
}

/// The `org_roles` column value for `roles` (`org-admin` lives in its own flag).
pub(crate) fn org_roles_json(roles: &[godel_identity::OrgRole]) -> serde_json::Value {
    let names: Vec<&str> = roles
        .iter()
        .filter(|role| **role != godel_identity::OrgRole::Admin)
        .map(|role| role.name())
        .collect();
    json_strings(&names)
}
