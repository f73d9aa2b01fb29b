//! Store failures, each naming the operation (and table) that failed.

use std::path::PathBuf;

use godel_bus::BusError;
use godel_types::EventId;
use sea_orm::DbErr;

/// A failure of the store: connecting, migrating, reading or writing a table, or
/// relaying the outbox.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid database setting `{field}`: {reason}")]
    InvalidConfig { field: &'static str, reason: String },

    #[error("cannot create the directory {} for the SQLite database", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("connecting to the database at {url} failed")]
    Connect {
        /// The URL with any password replaced by `***`.
        url: String,
        #[source]
        source: DbErr,
    },

    #[error("creating the schema `{schema}` failed")]
    CreateSchema {
        schema: String,
        #[source]
        source: DbErr,
    },

    #[error("the database did not answer a ping")]
    Ping {
        #[source]
        source: DbErr,
    },

    #[error("applying migrations (migration table `{table}`) failed")]
    Migrate {
        table: String,
        #[source]
        source: DbErr,
    },

    #[error("{operation} on table `{table}` failed")]
    Query {
        operation: &'static str,
        table: &'static str,
        #[source]
        source: DbErr,
    },

    #[error("row {key} of table `{table}` is unreadable: {reason}")]
    CorruptRow {
        table: &'static str,
        key: String,
        reason: String,
    },

    #[error("publishing outbox event {event_id} failed")]
    Publish {
        event_id: EventId,
        #[source]
        source: BusError,
    },
}

impl StoreError {
    pub(crate) fn query(
        operation: &'static str,
        table: &'static str,
    ) -> impl FnOnce(DbErr) -> Self {
        move |source| Self::Query {
            operation,
            table,
            source,
        }
    }
}

/// `url` with the password (if any) replaced by `***`, for errors and logs.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
        None => url.to_owned(),
    }
}

/// True when `err` says the database could not be reached or gave no connection in
/// time (a pool acquire timeout, a refused or dropped connection): a condition that
/// passes, to report as "unavailable, retry" rather than as an internal error.
pub fn is_unavailable(err: &sea_orm::DbErr) -> bool {
    matches!(
        err,
        sea_orm::DbErr::ConnectionAcquire(_) | sea_orm::DbErr::Conn(_)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn pool_and_connection_failures_are_unavailable() {
        use sea_orm::{ConnAcquireErr, DbErr, RuntimeErr};
        assert!(super::is_unavailable(&DbErr::ConnectionAcquire(
            ConnAcquireErr::Timeout
        )));
        assert!(super::is_unavailable(&DbErr::Conn(RuntimeErr::Internal(
            "refused".into()
        ))));
        assert!(!super::is_unavailable(&DbErr::RecordNotFound("x".into())));
    }

    use super::redact_url;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact_url("postgres://godel:s3cr:et@db:5432/godel?sslmode=require"),
            "postgres://godel:***@db:5432/godel?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://godel@db/godel"),
            "postgres://godel@db/godel"
        );
        assert_eq!(
            redact_url("sqlite://data/a.db?mode=rwc"),
            "sqlite://data/a.db?mode=rwc"
        );
    }
}
