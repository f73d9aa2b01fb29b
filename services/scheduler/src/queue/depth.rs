//! Queue depths for backpressure without counting the queue on every submission.
//!
//! A snapshot of waiting (queued and blocked) tasks per team, read with one grouped
//! count at most every `depth_refresh`, plus this replica's own submissions since. A
//! submission within the limits by the snapshot is accepted at once; one that would
//! pass a limit is checked again against a fresh count before it is refused, so a
//! refusal is always based on the database's current depth. Submissions through other
//! replicas within one refresh interval can take a team past its limit by what they
//! added — the limits are safety valves against runaway queues, not quotas.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use godel_error::Error;
use godel_store::sea_orm::ConnectionTrait;
use godel_types::TeamId;

use super::store::{db_err, get, stmt};

#[derive(Debug, Default)]
struct Snapshot {
    taken: Option<Instant>,
    teams: HashMap<TeamId, u64>,
    total: u64,
}

/// Waiting tasks per team and in all, as last counted plus what was added since.
#[derive(Debug)]
pub(crate) struct Depths {
    snapshot: Mutex<Snapshot>,
    max_age: Duration,
}

impl Depths {
    pub(crate) fn new(max_age: Duration) -> Self {
        Self {
            snapshot: Mutex::new(Snapshot::default()),
            max_age,
        }
    }

    /// `(team's waiting tasks, all waiting tasks)`: from the snapshot when it is
    /// younger than the refresh interval and `fresh` is false, else counted now.
    pub(crate) async fn of<C: ConnectionTrait>(
        &self,
        conn: &C,
        team: TeamId,
        fresh: bool,
    ) -> Result<(u64, u64), Error> {
        if !fresh {
            let snapshot = self.lock();
            if snapshot.taken.is_some_and(|t| t.elapsed() < self.max_age) {
                return Ok((
                    snapshot.teams.get(&team).copied().unwrap_or(0),
                    snapshot.total,
                ));
            }
        }
        let taken = Instant::now();
        let rows = conn
            .query_all_raw(stmt(
                conn,
                "SELECT team_id, COUNT(*) AS n FROM tasks WHERE state IN ('queued', 'blocked') \
                 GROUP BY team_id",
                [],
            ))
            .await
            .map_err(db_err("counting waiting tasks"))?;
        let mut teams = HashMap::with_capacity(rows.len());
        let mut total = 0u64;
        for row in &rows {
            let id: String = get(row, "team_id")?;
            let n = u64::try_from(get::<i64>(row, "n")?).unwrap_or(0);
            total = total.saturating_add(n);
            if let Ok(id) = id.parse::<TeamId>() {
                teams.insert(id, n);
            }
        }
        let of_team = teams.get(&team).copied().unwrap_or(0);
        *self.lock() = Snapshot {
            taken: Some(taken),
            teams,
            total,
        };
        Ok((of_team, total))
    }

    /// Counts `n` tasks this replica is adding for `team`.
    pub(crate) fn added(&self, team: TeamId, n: u64) {
        let mut snapshot = self.lock();
        let of_team = snapshot.teams.entry(team).or_default();
        *of_team = of_team.saturating_add(n);
        snapshot.total = snapshot.total.saturating_add(n);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        // The snapshot is plain numbers: a panic while holding it leaves nothing
        // half-written worth refusing to read.
        self.snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
