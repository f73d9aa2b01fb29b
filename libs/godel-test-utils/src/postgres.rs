//! A unique PostgreSQL schema — or a SQLite file in a temporary directory — per test.
//!
//! `TestDb::postgres()` creates a fresh schema `godel_test_<unix secs>_<hex>` in the
//! test server's database (env `GODEL_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and panics when the server is
//! unreachable. A schema rather than a database per test: `CREATE SCHEMA` is cheap,
//! needs no template database (concurrent `CREATE DATABASE` fails while anyone is
//! connected to `template1`), and the store points its pool at it with `search_path`
//! exactly as a service sharing a database with others does in production. Advisory
//! locks are database-wide, which is why the store keys its locks by schema.
//!
//! Dropping a `TestDb` drops the schema on a background thread (best-effort, never
//! blocking the test's runtime), and every `TestDb::postgres()` drops test schemas
//! left behind by runs more than 30 minutes old.
//!
//! This module returns plain values (`url`, `schema`): the store crate builds its
//! `DatabaseConfig` from them, so test-utils does not depend on it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sea_orm::sqlx::{self, Connection, Executor, PgConnection, Row};

use crate::{env_or, unique_name, unreachable_service};

/// Environment variable naming the PostgreSQL server used by tests.
pub const POSTGRES_URL_ENV: &str = "GODEL_TEST_POSTGRES_URL";
/// Default PostgreSQL url for tests.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Prefix of every schema handed out by [`TestDb::postgres`].
const SCHEMA_PREFIX: &str = "godel_test";
/// Test schemas older than this are dropped by the next `TestDb::postgres()`.
const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Which database a test body runs on: suites run the same body on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

/// A database for one test: connect with `url` and, on PostgreSQL, `schema` as the
/// schema (`search_path`).
#[derive(Debug)]
pub struct TestDb {
    /// `postgres://…` or `sqlite:///tmp/…/test.db?mode=rwc`.
    pub url: String,
    /// The schema unique to this test (PostgreSQL); `None` for SQLite.
    pub schema: Option<String>,
    /// Keeps the SQLite file's directory alive until the `TestDb` is dropped.
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A fresh database of `kind`: [`TestDb::sqlite`] or [`TestDb::postgres`].
    pub async fn of(kind: DbKind) -> Self {
        match kind {
            DbKind::Sqlite => Self::sqlite(),
            DbKind::Postgres => Self::postgres().await,
        }
    }

    /// A fresh, empty schema on the test PostgreSQL server. Panics when the server is
    /// unreachable (tests never skip).
    pub async fn postgres() -> Self {
        let url = env_or(POSTGRES_URL_ENV, DEFAULT_POSTGRES_URL);
        let mut conn = connect(&url).await;

        static SWEPT: AtomicBool = AtomicBool::new(false);
        if !SWEPT.swap(true, Ordering::SeqCst) {
            drop_stale_schemas(&mut conn).await;
        }

        let schema = unique_name(&format!("{SCHEMA_PREFIX}_{}", unix_secs()));
        if let Err(err) = conn
            .execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
            .await
        {
            panic!("creating the test schema {schema} on {url} failed: {err}");
        }
        let _ = conn.close().await;
        Self {
            url,
            schema: Some(schema),
            _dir: None,
        }
    }

    /// A SQLite database file in a fresh temporary directory (the file itself is
    /// created by whoever connects). Panics when the directory cannot be created.
    pub fn sqlite() -> Self {
        let dir = match tempfile::Builder::new().prefix("godel-test-").tempdir() {
            Ok(dir) => dir,
            Err(err) => {
                panic!("creating a temporary directory for a SQLite test database failed: {err}")
            }
        };
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
        Self {
            url,
            schema: None,
            _dir: Some(dir),
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.schema.is_some()
    }

    /// Drops this test's schema now and waits for it (PostgreSQL; no-op for SQLite).
    pub async fn cleanup(&self) {
        if let Some(schema) = &self.schema {
            drop_schema(&self.url, schema).await;
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(schema) = self.schema.take() else {
            return;
        };
        let url = std::mem::take(&mut self.url);
        // Its own thread and runtime: Drop may run inside (or after) the test's runtime,
        // and must not block it. If the process exits first, the stale sweep drops it.
        let _ = std::thread::Builder::new()
            .name("drop-test-schema".to_owned())
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(drop_schema(&url, &schema));
            });
    }
}

async fn connect(url: &str) -> PgConnection {
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(url)).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(err)) => unreachable_service("PostgreSQL", url, err),
        Err(_) => unreachable_service(
            "PostgreSQL",
            url,
            format!("no connection within {CONNECT_TIMEOUT:?}"),
        ),
    }
}

/// Best-effort `DROP SCHEMA … CASCADE`; gives up after a lock wait of 10 s.
async fn drop_schema(url: &str, schema: &str) {
    let Ok(Ok(mut conn)) = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(url)).await
    else {
        return;
    };
    let _ = conn.execute("SET lock_timeout = '10s'").await;
    let _ = conn
        .execute(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
        )))
        .await;
    let _ = conn.close().await;
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Drops `godel_test_<unix secs>_…` schemas created more than [`STALE_AFTER`] ago.
async fn drop_stale_schemas(conn: &mut PgConnection) {
    let Ok(rows) =
        sqlx::query("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'godel\\_test\\_%'")
            .fetch_all(&mut *conn)
            .await
    else {
        return;
    };
    let now = unix_secs();
    for row in rows {
        let Ok(name) = row.try_get::<String, _>(0) else {
            continue;
        };
        let created = name
            .strip_prefix(SCHEMA_PREFIX)
            .and_then(|rest| rest.strip_prefix('_'))
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok());
        if let Some(created) = created
            && now.saturating_sub(created) > STALE_AFTER.as_secs()
        {
            let _ = conn
                .execute(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS \"{name}\" CASCADE"
                )))
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn schema_exists(url: &str, schema: &str) -> bool {
        let mut conn = connect(url).await;
        let row = sqlx::query("SELECT count(*) FROM pg_namespace WHERE nspname = $1")
            .bind(schema)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        row.get::<i64, _>(0) == 1
    }

    #[tokio::test]
    async fn postgres_schemas_are_unique_and_dropped() {
        let a = TestDb::postgres().await;
        let b = TestDb::postgres().await;
        assert!(a.is_postgres());
        let (sa, sb) = (a.schema.clone().unwrap(), b.schema.clone().unwrap());
        assert_ne!(sa, sb);
        assert!(sa.starts_with("godel_test_"));
        assert!(schema_exists(&a.url, &sa).await);

        a.cleanup().await;
        assert!(!schema_exists(&b.url, &sa).await);

        let url = b.url.clone();
        drop(b);
        crate::eventually(
            "the dropped TestDb's schema is gone",
            Duration::from_secs(10),
            || {
                let (url, sb) = (url.clone(), sb.clone());
                async move { (!schema_exists(&url, &sb).await).then_some(()) }
            },
        )
        .await;
    }

    #[tokio::test]
    async fn stale_schemas_are_swept() {
        let url = env_or(POSTGRES_URL_ENV, DEFAULT_POSTGRES_URL);
        let old = unique_name(&format!("{SCHEMA_PREFIX}_{}", unix_secs() - 2 * 3600));
        let fresh = unique_name(&format!("{SCHEMA_PREFIX}_{}", unix_secs()));
        let mut conn = connect(&url).await;
        for s in [&old, &fresh] {
            conn.execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{s}\"")))
                .await
                .unwrap();
        }
        drop_stale_schemas(&mut conn).await;
        assert!(!schema_exists(&url, &old).await);
        assert!(schema_exists(&url, &fresh).await);
        drop_schema(&url, &fresh).await;
    }

    #[test]
    fn sqlite_gets_a_file_in_a_temp_dir_removed_on_drop() {
        let db = TestDb::sqlite();
        assert!(!db.is_postgres());
        let path = db
            .url
            .strip_prefix("sqlite://")
            .and_then(|p| p.strip_suffix("?mode=rwc"))
            .unwrap()
            .to_owned();
        let dir = std::path::Path::new(&path).parent().unwrap().to_owned();
        assert!(dir.is_dir());
        drop(db);
        assert!(!dir.exists());
    }
}
