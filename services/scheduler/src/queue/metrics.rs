//! Queue metrics (Prometheus, through the `metrics` facade). Labels carry the team,
//! never a task id:
//!
//! | metric | kind | labels | what |
//! |---|---|---|---|
//! | `godel_scheduler_queue_depth` | gauge | `team`, `state` | tasks per team in each unfinished state and `dead_lettered` |
//! | `godel_scheduler_oldest_queued_age_seconds` | gauge | `team` | how long the team's oldest runnable queued task has waited |
//! | `godel_scheduler_dispatched_total` | counter | `team` | tasks leased |
//! | `godel_scheduler_dispatch_latency_seconds` | histogram | `team` | submission to first lease |
//!
//! The gauges are refreshed by [`Queue::run_metrics`] every `metrics_interval`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use godel_error::Error;
use godel_store::sea_orm::ConnectionTrait;
use godel_types::TeamId;
use tokio_util::sync::CancellationToken;

use super::Queue;
use super::store::{self, db_err, get, stmt};
use super::task::{LeasedTask, TaskState};

pub const QUEUE_DEPTH: &str = "godel_scheduler_queue_depth";
pub const OLDEST_QUEUED_AGE: &str = "godel_scheduler_oldest_queued_age_seconds";
pub const DISPATCHED: &str = "godel_scheduler_dispatched_total";
pub const DISPATCH_LATENCY: &str = "godel_scheduler_dispatch_latency_seconds";

/// The states whose counts are reported.
pub const COUNTED_STATES: [TaskState; 5] = [
    TaskState::Blocked,
    TaskState::Queued,
    TaskState::Leased,
    TaskState::Running,
    TaskState::DeadLettered,
];

/// The queue's shape now, per team.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueStats {
    /// Tasks per team and state, for the [`COUNTED_STATES`]; absent means zero.
    pub depth: HashMap<(TeamId, TaskState), u64>,
    /// Per team with runnable queued tasks (`not_before` passed): how long the oldest
    /// has been runnable, by the database's clock.
    pub oldest_queued: HashMap<TeamId, Duration>,
}

impl QueueStats {
    /// Tasks of `team` in `state`.
    pub fn count(&self, team: TeamId, state: TaskState) -> u64 {
        self.depth.get(&(team, state)).copied().unwrap_or(0)
    }
}

impl Queue {
    /// Counts tasks per team and state and finds each team's oldest runnable queued
    /// task: what the queue gauges report.
    pub async fn stats(&self) -> Result<QueueStats, Error> {
        let conn = self.db.conn();
        let now = store::db_now(conn).await?;
        let states = COUNTED_STATES
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        let rows = conn
            .query_all_raw(stmt(
                conn,
                format!(
                    "SELECT team_id, state, COUNT(*) AS n FROM tasks WHERE state IN ({states}) \
                     GROUP BY team_id, state"
                ),
                [],
            ))
            .await
            .map_err(db_err("counting tasks per team"))?;
        let mut stats = QueueStats::default();
        for row in &rows {
            let team: TeamId = store::parse_id("team_id", &get::<String>(row, "team_id")?)?;
            let state: String = get(row, "state")?;
            let state = TaskState::parse(&state).ok_or_else(|| store::corrupt("state", &state))?;
            let n = u64::try_from(get::<i64>(row, "n")?).unwrap_or(0);
            stats.depth.insert((team, state), n);
        }
        let rows = conn
            .query_all_raw(stmt(
                conn,
                "SELECT team_id, MIN(not_before) AS since FROM tasks WHERE state = 'queued' \
                 AND not_before <= $1 GROUP BY team_id",
                [now.into()],
            ))
            .await
            .map_err(db_err("finding the oldest queued tasks"))?;
        for row in &rows {
            let team: TeamId = store::parse_id("team_id", &get::<String>(row, "team_id")?)?;
            let since: i64 = get(row, "since")?;
            let waited = u64::try_from(now.saturating_sub(since)).unwrap_or(0);
            stats
                .oldest_queued
                .insert(team, Duration::from_micros(waited));
        }
        Ok(stats)
    }

    /// Refreshes the queue gauges every `metrics_interval` until `stop` is cancelled.
    /// A team that has no tasks left in a state is reported at zero once, then
    /// dropped.
    pub async fn run_metrics(&self, stop: CancellationToken) {
        metrics::describe_gauge!(QUEUE_DEPTH, "Tasks per team and state.");
        metrics::describe_gauge!(
            OLDEST_QUEUED_AGE,
            metrics::Unit::Seconds,
            "How long the team's oldest runnable queued task has waited."
        );
        metrics::describe_counter!(DISPATCHED, "Tasks leased to orchestrators.");
        metrics::describe_histogram!(
            DISPATCH_LATENCY,
            metrics::Unit::Seconds,
            "Time from submission to first lease."
        );
        let mut tick = tokio::time::interval(self.config.metrics_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut depth_seen: HashSet<(TeamId, TaskState)> = HashSet::new();
        let mut age_seen: HashSet<TeamId> = HashSet::new();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let stats = match self.stats().await {
                Ok(stats) => stats,
                Err(e) => {
                    tracing::warn!(error = %e, "refreshing the queue metrics failed");
                    continue;
                }
            };
            for (team, state) in depth_seen.difference(&stats.depth.keys().copied().collect()) {
                depth_gauge(*team, *state).set(0.0);
            }
            for ((team, state), n) in &stats.depth {
                depth_gauge(*team, *state).set(*n as f64);
            }
            depth_seen = stats.depth.keys().copied().collect();
            for team in age_seen.difference(&stats.oldest_queued.keys().copied().collect()) {
                metrics::gauge!(OLDEST_QUEUED_AGE, "team" => team.to_string()).set(0.0);
            }
            for (team, age) in &stats.oldest_queued {
                metrics::gauge!(OLDEST_QUEUED_AGE, "team" => team.to_string())
                    .set(age.as_secs_f64());
            }
            age_seen = stats.oldest_queued.keys().copied().collect();
        }
    }
}

fn depth_gauge(team: TeamId, state: TaskState) -> metrics::Gauge {
    metrics::gauge!(QUEUE_DEPTH, "team" => team.to_string(), "state" => state.as_str())
}

/// Counts the dispatches of a claim per team and records, for first leases, the
/// time from submission to the lease at `now` (database microseconds).
pub(crate) fn record_dispatch(leased: &[LeasedTask], now: i64) {
    let mut per_team: HashMap<TeamId, u64> = HashMap::new();
    for l in leased {
        *per_team.entry(l.task.team_id).or_default() += 1;
        if l.epoch == 1 {
            let waited = now.saturating_sub(l.task.created_at.timestamp_micros());
            metrics::histogram!(DISPATCH_LATENCY, "team" => l.task.team_id.to_string())
                .record(waited as f64 / 1e6);
        }
    }
    for (team, n) in per_team {
        metrics::counter!(DISPATCHED, "team" => team.to_string()).increment(n);
    }
}
