//! Connecting to PostgreSQL or SQLite, and the [`Db`] handle services keep.

use std::path::Path;
use std::str::FromStr;

use sea_orm::sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous as SqlxSync,
};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    DbErr, Statement, TransactionError, TransactionTrait,
};

use crate::config::{DatabaseConfig, SqliteSynchronous};
use crate::error::{StoreError, redact_url};

/// Which database engine a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A pooled connection to a service's database. Cheap to clone (the pool is shared).
#[derive(Debug, Clone)]
pub struct Db {
    conn: DatabaseConnection,
    backend: Backend,
    max_connections: u32,
}

impl Db {
    /// The sea-orm connection, for queries and transactions.
    pub fn conn(&self) -> &DatabaseConnection {
        &self.conn
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The most connections the pool opens (always 1 for SQLite): the most
    /// transactions that can run at once.
    pub fn max_connections(&self) -> u32 {
        self.max_connections
    }

    /// Runs `SELECT 1` on a pooled connection (for readiness probes).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let stmt = Statement::from_string(self.conn.get_database_backend(), "SELECT 1");
        match self.conn.query_one_raw(stmt).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(StoreError::Ping {
                source: DbErr::RecordNotFound("SELECT 1 returned no row".to_owned()),
            }),
            Err(source) => Err(StoreError::Ping { source }),
        }
    }

    /// Runs `f` in a transaction: committed when it returns `Ok`, rolled back on `Err`
    /// (or when the future is dropped). Write business rows and
    /// [`outbox::enqueue`](crate::outbox::enqueue) the events announcing them here.
    pub async fn transaction<F, T, E>(&self, f: F) -> Result<T, TransactionError<E>>
    where
        F: for<'c> FnOnce(
                &'c DatabaseTransaction,
            )
                -> std::pin::Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
            + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        self.conn.transaction(f).await
    }

    /// Closes every pooled connection.
    pub async fn close(self) -> Result<(), StoreError> {
        self.conn.close().await.map_err(|source| StoreError::Query {
            operation: "closing the pool",
            table: "-",
            source,
        })
    }
}

/// Opens a connection pool as `config` says.
///
/// PostgreSQL: when `config.schema` is set, the schema is created if missing and every
/// pooled connection gets `SET search_path = "<schema>"` when it is opened.
///
/// SQLite: the parent directory is created, and the single pooled connection is opened
/// with `journal_mode=WAL`, the configured `synchronous`, `busy_timeout` and
/// `foreign_keys=ON` (see [`SqliteOptions`](crate::SqliteOptions) for why one).
pub async fn connect(config: &DatabaseConfig) -> Result<Db, StoreError> {
    if config.url.expose().starts_with("postgres://")
        || config.url.expose().starts_with("postgresql://")
    {
        connect_postgres(config).await
    } else if config.url.expose().starts_with("sqlite:") {
        connect_sqlite(config).await
    } else {
        Err(StoreError::InvalidConfig {
            field: "url",
            reason: format!(
                "`{}` is neither a postgres:// nor a sqlite: URL",
                redact_url(config.url.expose())
            ),
        })
    }
}

async fn connect_postgres(config: &DatabaseConfig) -> Result<Db, StoreError> {
    if let Some(schema) = &config.schema {
        validate_schema(schema)?;
    }
    if config.max_connections == 0 || config.min_connections > config.max_connections {
        return Err(StoreError::InvalidConfig {
            field: "max_connections",
            reason: format!(
                "need 0 < max_connections ({}) and min_connections ({}) <= max_connections",
                config.max_connections, config.min_connections
            ),
        });
    }
    let mut opts = ConnectOptions::new(config.url.expose().clone());
    opts.max_connections(config.max_connections)
        .min_connections(config.min_connections)
        .connect_timeout(config.connect_timeout)
        .sqlx_logging(false);
    if let Some(schema) = &config.schema {
        opts.set_schema_search_path(schema.clone());
    }
    let conn = Database::connect(opts)
        .await
        .map_err(|source| StoreError::Connect {
            url: redact_url(config.url.expose()),
            source,
        })?;
    if let Some(schema) = &config.schema {
        create_schema(&conn, schema).await?;
    }
    Ok(Db {
        conn,
        backend: Backend::Postgres,
        max_connections: config.max_connections,
    })
}

/// `CREATE SCHEMA IF NOT EXISTS` can still fail with a unique violation when two
/// processes run it at the same moment; the schema existing afterwards is success.
async fn create_schema(conn: &DatabaseConnection, schema: &str) -> Result<(), StoreError> {
    let created = conn
        .execute_unprepared(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
        .await;
    let Err(source) = created else {
        return Ok(());
    };
    let exists = conn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT 1 FROM pg_namespace WHERE nspname = $1",
            [schema.into()],
        ))
        .await;
    match exists {
        Ok(Some(_)) => Ok(()),
        _ => Err(StoreError::CreateSchema {
            schema: schema.to_owned(),
            source,
        }),
    }
}

/// Schema names are interpolated into SQL, so only plain identifiers are accepted.
fn validate_schema(schema: &str) -> Result<(), StoreError> {
    let mut chars = schema.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if first_ok && rest_ok && schema.len() <= 63 {
        return Ok(());
    }
    Err(StoreError::InvalidConfig {
        field: "schema",
        reason: format!(
            "`{schema}` must be 1-63 characters of a-z, 0-9 and _, not starting with a digit"
        ),
    })
}

async fn connect_sqlite(config: &DatabaseConfig) -> Result<Db, StoreError> {
    let parsed = SqliteConnectOptions::from_str(config.url.expose()).map_err(|e| {
        StoreError::InvalidConfig {
            field: "url",
            reason: format!("`{}` is not a valid SQLite URL: {e}", config.url.expose()),
        }
    })?;
    create_parent_dir(parsed.get_filename()).await?;

    let sqlite = config.sqlite.clone();
    let mut opts = ConnectOptions::new(config.url.expose().clone());
    // One connection, never closed while idle: see `SqliteOptions`. Keeping it open
    // also keeps an in-memory database alive.
    opts.max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_timeout(config.connect_timeout)
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(move |o| {
            o.create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(match sqlite.synchronous {
                    SqliteSynchronous::Full => SqlxSync::Full,
                    SqliteSynchronous::Normal => SqlxSync::Normal,
                })
                .busy_timeout(sqlite.busy_timeout)
                .foreign_keys(true)
        });
    let conn = Database::connect(opts)
        .await
        .map_err(|source| StoreError::Connect {
            url: redact_url(config.url.expose()),
            source,
        })?;
    Ok(Db {
        conn,
        backend: Backend::Sqlite,
        max_connections: 1,
    })
}

async fn create_parent_dir(file: &Path) -> Result<(), StoreError> {
    if file.as_os_str() == ":memory:" {
        return Ok(());
    }
    let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|source| StoreError::CreateDir {
            path: dir.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(validate_schema("scheduler").is_ok());
        assert!(validate_schema("godel_test_1_ab12").is_ok());
        assert!(validate_schema("_x").is_ok());
        assert!(validate_schema("").is_err());
        assert!(validate_schema("1abc").is_err());
        assert!(validate_schema("a\"; DROP").is_err());
        assert!(validate_schema("Upper").is_err());
        assert!(validate_schema(&"a".repeat(64)).is_err());
    }

    #[tokio::test]
    async fn rejects_unknown_url_schemes() {
        let cfg = DatabaseConfig {
            url: "mysql://root:pw@localhost/db".into(),
            ..DatabaseConfig::default()
        };
        let err = connect(&cfg).await.unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidConfig { field: "url", .. }),
            "{err}"
        );
        assert!(!err.to_string().contains("pw"), "{err}");
    }
}
