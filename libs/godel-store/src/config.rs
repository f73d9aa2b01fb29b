//! Database settings shared by every service.

use std::time::Duration;

use godel_config::Secret;
use serde::{Deserialize, Serialize};

/// Where a service's database is and how to pool connections to it.
///
/// `url` is `postgres://user:pass@host:port/db` or `sqlite://path/to/file.db?mode=rwc`.
/// Durations are written as `"5s"`, `"250ms"`, … (see `godel_config::duration`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Connection URL. It may hold a password, so it is a [`Secret`]: redacted in
    /// `Debug` and `--dump-config`; errors show it with the password replaced.
    pub url: Secret<String>,
    /// Most pooled connections (PostgreSQL; SQLite always uses one, see [`SqliteOptions`]).
    pub max_connections: u32,
    /// Connections kept open while idle (PostgreSQL).
    pub min_connections: u32,
    /// How long to wait for a connection (opening one or taking one from the pool).
    #[serde(with = "godel_config::duration")]
    pub connect_timeout: Duration,
    /// PostgreSQL schema holding this service's tables: created when missing and set
    /// as `search_path` on every pooled connection, so one database can host one
    /// schema per service (or per test). `None` uses the server's default (`public`).
    pub schema: Option<String>,
    /// SQLite-only settings (ignored for PostgreSQL).
    pub sqlite: SqliteOptions,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: Secret::new("sqlite://godel.db?mode=rwc".to_owned()),
            max_connections: 10,
            min_connections: 0,
            connect_timeout: Duration::from_secs(5),
            schema: None,
            sqlite: SqliteOptions::default(),
        }
    }
}

/// SQLite settings.
///
/// A SQLite database is opened with one pooled connection in WAL mode: SQLite allows
/// one writer at a time anyway, and with two pooled connections a transaction that
/// reads then writes (sea-orm begins them `DEFERRED`) can fail with `SQLITE_BUSY` when
/// another connection writes first — a lock upgrade that `busy_timeout` cannot wait
/// out. One connection queues transactions in the pool instead, in FIFO order.
/// `busy_timeout` still applies to other processes opening the same file (the CLI,
/// a backup).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqliteOptions {
    /// How long a statement waits for a lock held by another process.
    #[serde(with = "godel_config::duration")]
    pub busy_timeout: Duration,
    /// When commits reach the disk.
    pub synchronous: SqliteSynchronous,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            busy_timeout: Duration::from_secs(5),
            synchronous: SqliteSynchronous::Full,
        }
    }
}

/// SQLite's `synchronous` pragma (in WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SqliteSynchronous {
    /// Every commit is fsynced before it returns: an acknowledged write survives a power
    /// loss. The default, because the database is the source of truth and a client
    /// told "accepted" must not lose its task; batching writes keeps the fsync count low.
    #[default]
    Full,
    /// Commits are fsynced at checkpoints only: still consistent and safe against a
    /// process crash, but the last commits may roll back on power loss or an OS crash.
    Normal,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_partial_toml_over_defaults() {
        let cfg: DatabaseConfig = toml::from_str(
            r#"
            url = "postgres://godel:pw@db/godel"
            schema = "scheduler"
            connect_timeout = "1500ms"
            [sqlite]
            synchronous = "normal"
            "#,
        )
        .unwrap();
        assert_eq!(cfg.url.expose(), "postgres://godel:pw@db/godel");
        assert!(!format!("{cfg:?}").contains("pw"));
        assert_eq!(cfg.schema.as_deref(), Some("scheduler"));
        assert_eq!(cfg.connect_timeout, Duration::from_millis(1500));
        assert_eq!(
            cfg.max_connections,
            DatabaseConfig::default().max_connections
        );
        assert_eq!(cfg.sqlite.synchronous, SqliteSynchronous::Normal);
        assert_eq!(cfg.sqlite.busy_timeout, Duration::from_secs(5));
    }

    #[test]
    fn dumps_without_the_url_and_rejects_unknown_fields() {
        let cfg = DatabaseConfig {
            url: Secret::new("postgres://godel:pw@db/godel".to_owned()),
            ..DatabaseConfig::default()
        };
        let text = toml::to_string(&cfg).unwrap();
        assert!(text.contains("connect_timeout = \"5s\""), "{text}");
        assert!(!text.contains("pw"), "{text}");
        let back = toml::from_str::<DatabaseConfig>(&text).unwrap();
        assert_eq!(back.sqlite, cfg.sqlite);
        assert_eq!(back.connect_timeout, cfg.connect_timeout);
        assert!(toml::from_str::<DatabaseConfig>("uri = \"x\"").is_err());
    }
}
