//! The orchestrator registry: orchestrator instances register (capacity, runtimes,
//! labels) and heartbeat; one whose last heartbeat, by the database's clock, is older
//! than the TTL is unhealthy and gets no new work. Placement picks the least-loaded
//! healthy instance with room, where load is the tasks it holds leased or running.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use godel_error::Error;
use godel_store::Db;
use godel_store::sea_orm::{ConnectionTrait, QueryResult};
use godel_types::OrchestratorId;

use crate::queue::store::{self, db_err, get, stmt};

/// Longest accepted runtime name, label key or value, endpoint or version, in bytes.
pub const MAX_FIELD_LEN: usize = 256;

/// What an orchestrator instance says about itself when it registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Chosen by the instance, stable for its lifetime.
    pub id: OrchestratorId,
    /// How many sessions it runs at once.
    pub capacity: u32,
    /// Runtimes it can start sessions in (`process`, `docker`, …).
    pub runtimes: Vec<String>,
    /// Labels for placement (`zone=a`).
    pub labels: BTreeMap<String, String>,
    /// Where its gRPC API listens.
    pub endpoint: String,
    /// Its build version, for people.
    pub version: String,
}

/// A registered orchestrator instance as the scheduler sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orchestrator {
    pub id: OrchestratorId,
    pub capacity: u32,
    pub runtimes: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub endpoint: String,
    pub version: String,
    /// Sessions running at its last heartbeat, as it reported.
    pub active_sessions: u32,
    /// Shutting down: nothing is placed on it.
    pub draining: bool,
    pub registered_at: DateTime<Utc>,
    /// Database time of its last registration or heartbeat.
    pub last_heartbeat: DateTime<Utc>,
    /// Its last heartbeat is within the TTL.
    pub healthy: bool,
    /// Tasks it holds leased or running.
    pub load: u64,
}

impl Orchestrator {
    /// Capacity not taken by its load.
    pub fn free(&self) -> u64 {
        u64::from(self.capacity).saturating_sub(self.load)
    }

    /// Placement preference: less load first, then more free capacity, then id.
    pub fn placement_order(&self, other: &Self) -> std::cmp::Ordering {
        self.load
            .cmp(&other.load)
            .then(other.free().cmp(&self.free()))
            .then(self.id.cmp(&other.id))
    }
}

/// The registry over the scheduler's database. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    db: Db,
    ttl: Duration,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

const COLUMNS: &str = "id, capacity, runtimes, labels, endpoint, version, active_sessions, \
    draining, registered_at, last_heartbeat, (SELECT COUNT(*) FROM tasks WHERE \
    tasks.lease_owner = orchestrators.id AND tasks.state IN ('leased', 'running')) AS load";

impl Registry {
    /// A registry over `db` (migrated with the scheduler's migrations); instances
    /// silent for longer than `ttl` are unhealthy.
    pub fn new(db: Db, ttl: Duration) -> Self {
        Self { db, ttl }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Registers an instance, or re-registers it (after a restart) with what it says
    /// now; its heartbeat is set to the database's current time.
    pub async fn register(&self, registration: Registration) -> Result<Orchestrator, Error> {
        validate(&registration)?;
        let conn = self.db.conn();
        let now = store::db_now(conn).await?;
        let runtimes = serde_json::to_string(&registration.runtimes)
            .map_err(|_| Error::invalid_argument("runtimes", "runtimes cannot be encoded"))?;
        let labels = serde_json::to_string(&registration.labels)
            .map_err(|_| Error::invalid_argument("labels", "labels cannot be encoded"))?;
        conn.execute_raw(stmt(
            conn,
            "INSERT INTO orchestrators (id, capacity, runtimes, labels, endpoint, version, \
             active_sessions, draining, registered_at, last_heartbeat) VALUES ($1, $2, $3, $4, \
             $5, $6, 0, 0, $7, $7) ON CONFLICT (id) DO UPDATE SET capacity = excluded.capacity, \
             runtimes = excluded.runtimes, labels = excluded.labels, endpoint = \
             excluded.endpoint, version = excluded.version, active_sessions = 0, draining = 0, \
             registered_at = excluded.registered_at, last_heartbeat = excluded.last_heartbeat",
            [
                registration.id.to_string().into(),
                i64::from(registration.capacity).into(),
                runtimes.into(),
                labels.into(),
                registration.endpoint.into(),
                registration.version.into(),
                now.into(),
            ],
        ))
        .await
        .map_err(db_err("registering an orchestrator"))?;
        self.get(registration.id).await
    }

    /// Records a heartbeat of `id` at the database's current time with its current
    /// capacity, running sessions and whether it is draining. Returns `false` when the
    /// instance is not registered (it should register again).
    pub async fn heartbeat(
        &self,
        id: OrchestratorId,
        capacity: u32,
        active_sessions: u32,
        draining: bool,
    ) -> Result<bool, Error> {
        let conn = self.db.conn();
        let now = store::db_now(conn).await?;
        let updated = conn
            .execute_raw(stmt(
                conn,
                "UPDATE orchestrators SET capacity = $1, active_sessions = $2, draining = $3, \
                 last_heartbeat = $4 WHERE id = $5",
                [
                    i64::from(capacity).into(),
                    i64::from(active_sessions).into(),
                    i32::from(draining).into(),
                    now.into(),
                    id.to_string().into(),
                ],
            ))
            .await
            .map_err(db_err("recording an orchestrator heartbeat"))?
            .rows_affected();
        Ok(updated > 0)
    }

    /// The instance `id`.
    pub async fn get(&self, id: OrchestratorId) -> Result<Orchestrator, Error> {
        let conn = self.db.conn();
        let now = store::db_now(conn).await?;
        let row = conn
            .query_one_raw(stmt(
                conn,
                format!("SELECT {COLUMNS} FROM orchestrators WHERE id = $1"),
                [id.to_string().into()],
            ))
            .await
            .map_err(db_err("reading an orchestrator"))?
            .ok_or_else(|| Error::not_found(format!("orchestrator {id}")))?;
        self.read_row(&row, now)
    }

    /// Every registered instance, healthy or not, by id.
    pub async fn list(&self) -> Result<Vec<Orchestrator>, Error> {
        let conn = self.db.conn();
        let now = store::db_now(conn).await?;
        let rows = conn
            .query_all_raw(stmt(
                conn,
                format!("SELECT {COLUMNS} FROM orchestrators ORDER BY id"),
                [],
            ))
            .await
            .map_err(db_err("listing orchestrators"))?;
        rows.iter().map(|r| self.read_row(r, now)).collect()
    }

    /// The least-loaded healthy, non-draining instance with room for `n` more tasks
    /// (ties: more free capacity, then id), or `None` when none has room.
    pub async fn place(&self, n: u64) -> Result<Option<Orchestrator>, Error> {
        let n = n.max(1);
        Ok(self
            .list()
            .await?
            .into_iter()
            .filter(|o| o.healthy && !o.draining && o.free() >= n)
            .min_by(Orchestrator::placement_order))
    }

    fn read_row(&self, row: &QueryResult, now: i64) -> Result<Orchestrator, Error> {
        let runtimes: String = get(row, "runtimes")?;
        let labels: String = get(row, "labels")?;
        let last_heartbeat: i64 = get(row, "last_heartbeat")?;
        let count = |col: &str| -> Result<u32, Error> {
            Ok(u32::try_from(get::<i64>(row, col)?).unwrap_or(u32::MAX))
        };
        Ok(Orchestrator {
            id: store::parse_id("orchestrators.id", &get::<String>(row, "id")?)?,
            capacity: count("capacity")?,
            runtimes: serde_json::from_str(&runtimes)
                .map_err(|_| store::corrupt("orchestrators.runtimes", &runtimes))?,
            labels: serde_json::from_str(&labels)
                .map_err(|_| store::corrupt("orchestrators.labels", &labels))?,
            endpoint: get(row, "endpoint")?,
            version: get(row, "version")?,
            active_sessions: count("active_sessions")?,
            draining: get::<i32>(row, "draining")? != 0,
            registered_at: store::time(get(row, "registered_at")?),
            last_heartbeat: store::time(last_heartbeat),
            healthy: now.saturating_sub(last_heartbeat) <= store::micros(self.ttl),
            load: u64::try_from(get::<i64>(row, "load")?).unwrap_or(0),
        })
    }
}

/// Checks a registration, naming the offending field.
fn validate(r: &Registration) -> Result<(), Error> {
    let too_long = |field: String, what: &str| {
        Error::invalid_argument(
            field,
            format!("{what} must be at most {MAX_FIELD_LEN} bytes"),
        )
    };
    for (i, runtime) in r.runtimes.iter().enumerate() {
        if runtime.trim().is_empty() {
            return Err(Error::invalid_argument(
                format!("runtimes[{i}]"),
                "a runtime name must not be empty",
            ));
        }
        if runtime.len() > MAX_FIELD_LEN {
            return Err(too_long(format!("runtimes[{i}]"), "a runtime name"));
        }
    }
    for (key, value) in &r.labels {
        if key.trim().is_empty() {
            return Err(Error::invalid_argument(
                "labels",
                "a label key must not be empty",
            ));
        }
        if key.len() > MAX_FIELD_LEN || value.len() > MAX_FIELD_LEN {
            return Err(too_long(format!("labels[{key}]"), "a label key or value"));
        }
    }
    if r.endpoint.len() > MAX_FIELD_LEN {
        return Err(too_long("endpoint".to_owned(), "endpoint"));
    }
    if r.version.len() > MAX_FIELD_LEN {
        return Err(too_long("version".to_owned(), "version"));
    }
    Ok(())
}
