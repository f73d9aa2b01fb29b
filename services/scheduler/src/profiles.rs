//! Agent profiles: how a team's tasks are run — the adapter (`sim`, `pi`,
//! `claude-code`, `codex` or a command adapter the orchestrators define), the model,
//! the task types the profile handles, the runtime, limits, the expected cost per task
//! (for plan budgets) and a preference (lower first: the planner picks the first
//! profile handling a type).
//!
//! Godel ships built-in profiles ([`builtin`]): `simulated` first, so a new team's
//! plans run on the simulated agent until it adds its own; a team profile with a
//! built-in's name replaces it for that team.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use godel_error::Error;
use godel_planner::{Catalog, ProfileInfo, TaskType};
use godel_store::Db;
use godel_store::sea_orm::{ConnectionTrait, QueryResult};
use godel_types::{ProfileId, TeamId};

use crate::queue::store::{db_err, db_now, get, parse_id, stmt, time};

/// Limits a profile puts on each of its sessions; 0 / `None`: no bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProfileLimits {
    pub max_duration: Option<Duration>,
    pub max_tokens: u64,
    pub max_cost_micro_usd: u64,
}

/// What a team asks a profile to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileSpec {
    pub name: String,
    pub adapter: String,
    /// Empty: the adapter's configured default.
    pub model: String,
    pub task_types: BTreeSet<TaskType>,
    /// `process` (the worktree runtime).
    pub runtime: String,
    pub limits: ProfileLimits,
    pub estimated_cost_micro_usd: u64,
    pub preference: i32,
}

/// A stored or built-in profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub id: ProfileId,
    /// `None` for a built-in profile.
    pub team_id: Option<TeamId>,
    pub spec: ProfileSpec,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl Profile {
    pub fn is_builtin(&self) -> bool {
        self.team_id.is_none()
    }
}

/// The runtimes a profile may name.
const RUNTIMES: &[&str] = &["process"];

/// The profiles every team has unless it replaces them (by name).
pub fn builtin() -> Vec<Profile> {
    let all: BTreeSet<TaskType> = TaskType::ALL.iter().copied().collect();
    let agent = |n: u128, name: &str, adapter: &str, cost: u64, preference: i32| Profile {
        id: ProfileId::from_uuid(uuid::Uuid::from_u128(
            0x0193_0000_0000_7000_8000_0000_0000_0000 + n,
        )),
        team_id: None,
        spec: ProfileSpec {
            name: name.to_owned(),
            adapter: adapter.to_owned(),
            model: String::new(),
            task_types: all.clone(),
            runtime: "process".to_owned(),
            limits: ProfileLimits {
                max_duration: Some(Duration::from_secs(3600)),
                max_tokens: 0,
                max_cost_micro_usd: if cost == 0 { 0 } else { 5_000_000 },
            },
            estimated_cost_micro_usd: cost,
            preference,
        },
        created_at: None,
        updated_at: None,
    };
    vec![
        agent(1, "simulated", "sim", 0, 900),
        agent(2, "pi", "pi", 200_000, 910),
        agent(3, "claude-code", "claude-code", 300_000, 920),
        agent(4, "codex", "codex", 300_000, 930),
    ]
}

/// Names and adapters: 1-64 of `a-z`, `0-9`, `-`, `_`.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn check(spec: &ProfileSpec) -> Result<(), Error> {
    if !valid_name(&spec.name) {
        return Err(Error::invalid_argument(
            "profile.name",
            "a profile name is 1-64 characters of a-z, 0-9, `-` or `_`",
        ));
    }
    if !valid_name(&spec.adapter) {
        return Err(Error::invalid_argument(
            "profile.adapter",
            "name an adapter: sim, pi, claude-code, codex or a command adapter of the orchestrators",
        ));
    }
    if spec.task_types.is_empty() {
        return Err(Error::invalid_argument(
            "profile.task_types",
            "a profile handles at least one task type",
        ));
    }
    if !RUNTIMES.contains(&spec.runtime.as_str()) {
        return Err(Error::invalid_argument(
            "profile.runtime",
            format!(
                "unknown runtime `{}` (known: {})",
                spec.runtime,
                RUNTIMES.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Task types by name; an unknown one is `invalid_argument` naming it.
pub fn task_types(names: &[String], field: &str) -> Result<BTreeSet<TaskType>, Error> {
    names
        .iter()
        .map(|name| {
            TaskType::from_name(name).ok_or_else(|| {
                let known: Vec<&str> = TaskType::ALL.iter().map(|t| t.as_str()).collect();
                Error::invalid_argument(
                    field,
                    format!("unknown task type `{name}` (known: {})", known.join(", ")),
                )
            })
        })
        .collect()
}

const COLUMNS: &str = "id, team_id, name, adapter, model, task_types, runtime, max_duration_ms, \
    max_tokens, max_cost_micro_usd, estimated_cost_micro_usd, preference, created_at, updated_at";

fn from_row(row: &QueryResult) -> Result<Profile, Error> {
    let id: String = get(row, "id")?;
    let team: String = get(row, "team_id")?;
    let types: String = get(row, "task_types")?;
    let names: Vec<String> = serde_json::from_str(&types)
        .map_err(|_| crate::queue::store::corrupt("task_types", &types))?;
    let duration: i64 = get(row, "max_duration_ms")?;
    let unsigned = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(Profile {
        id: parse_id("profiles.id", &id)?,
        team_id: Some(parse_id("profiles.team_id", &team)?),
        spec: ProfileSpec {
            name: get(row, "name")?,
            adapter: get(row, "adapter")?,
            model: get(row, "model")?,
            task_types: names
                .iter()
                .filter_map(|n| TaskType::from_name(n))
                .collect(),
            runtime: get(row, "runtime")?,
            limits: ProfileLimits {
                max_duration: (duration > 0).then(|| Duration::from_millis(unsigned(duration))),
                max_tokens: unsigned(get(row, "max_tokens")?),
                max_cost_micro_usd: unsigned(get(row, "max_cost_micro_usd")?),
            },
            estimated_cost_micro_usd: unsigned(get(row, "estimated_cost_micro_usd")?),
            preference: get(row, "preference")?,
        },
        created_at: Some(time(get(row, "created_at")?)),
        updated_at: Some(time(get(row, "updated_at")?)),
    })
}

/// A team's profiles, stored in the scheduler's database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Profiles {
    db: Db,
}

impl Profiles {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Creates or replaces `team`'s profile named `spec.name`.
    pub async fn put(&self, team: TeamId, spec: ProfileSpec) -> Result<Profile, Error> {
        check(&spec)?;
        let conn = self.db.conn();
        let now = db_now(conn).await?;
        let types: Vec<&str> = spec.task_types.iter().map(|t| t.as_str()).collect();
        let signed = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let duration = spec
            .limits
            .max_duration
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let row = conn
            .query_one_raw(stmt(
                conn,
                format!(
                    "INSERT INTO profiles ({COLUMNS}) VALUES \
                     ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13) \
                     ON CONFLICT (team_id, name) DO UPDATE SET adapter = excluded.adapter, \
                     model = excluded.model, task_types = excluded.task_types, \
                     runtime = excluded.runtime, max_duration_ms = excluded.max_duration_ms, \
                     max_tokens = excluded.max_tokens, \
                     max_cost_micro_usd = excluded.max_cost_micro_usd, \
                     estimated_cost_micro_usd = excluded.estimated_cost_micro_usd, \
                     preference = excluded.preference, updated_at = excluded.updated_at \
                     RETURNING {COLUMNS}"
                ),
                [
                    ProfileId::new().to_string().into(),
                    team.to_string().into(),
                    spec.name.clone().into(),
                    spec.adapter.clone().into(),
                    spec.model.clone().into(),
                    serde_json::to_string(&types).unwrap_or_default().into(),
                    spec.runtime.clone().into(),
                    duration.into(),
                    signed(spec.limits.max_tokens).into(),
                    signed(spec.limits.max_cost_micro_usd).into(),
                    signed(spec.estimated_cost_micro_usd).into(),
                    spec.preference.into(),
                    now.into(),
                ],
            ))
            .await
            .map_err(db_err("saving a profile"))?
            .ok_or_else(|| Error::internal("saving a profile returned no row"))?;
        from_row(&row)
    }

    /// `team`'s profiles and the built-ins it has not replaced, most preferred first
    /// (then by name).
    pub async fn list(&self, team: TeamId) -> Result<Vec<Profile>, Error> {
        let conn = self.db.conn();
        let rows = conn
            .query_all_raw(stmt(
                conn,
                format!("SELECT {COLUMNS} FROM profiles WHERE team_id = $1"),
                [team.to_string().into()],
            ))
            .await
            .map_err(db_err("listing profiles"))?;
        let mut profiles = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
        let own: BTreeSet<String> = profiles.iter().map(|p| p.spec.name.clone()).collect();
        profiles.extend(
            builtin()
                .into_iter()
                .filter(|p| !own.contains(&p.spec.name)),
        );
        profiles.sort_by(|a, b| {
            (a.spec.preference, &a.spec.name).cmp(&(b.spec.preference, &b.spec.name))
        });
        Ok(profiles)
    }

    /// `team`'s profile `name` (its own, else the built-in).
    pub async fn get(&self, team: TeamId, name: &str) -> Result<Profile, Error> {
        self.list(team)
            .await?
            .into_iter()
            .find(|p| p.spec.name == name)
            .ok_or_else(|| Error::not_found(format!("profile `{name}` in team {team}")))
    }

    /// Deletes `team`'s own profile `name` (a built-in it replaced comes back).
    /// Built-ins cannot be deleted.
    pub async fn delete(&self, team: TeamId, name: &str) -> Result<(), Error> {
        let conn = self.db.conn();
        let deleted = conn
            .execute_raw(stmt(
                conn,
                "DELETE FROM profiles WHERE team_id = $1 AND name = $2",
                [team.to_string().into(), name.to_owned().into()],
            ))
            .await
            .map_err(db_err("deleting a profile"))?
            .rows_affected();
        if deleted == 0 {
            if builtin().iter().any(|p| p.spec.name == name) {
                return Err(Error::failed_precondition(format!(
                    "`{name}` is a built-in profile: it cannot be deleted (replace it with a profile of the same name)"
                )));
            }
            return Err(Error::not_found(format!("profile `{name}` in team {team}")));
        }
        Ok(())
    }
}

/// The planning catalog of `profiles` (in their order), with plan bounds.
pub fn catalog(profiles: &[Profile], max_nodes: usize, max_cost_micro_usd: u64) -> Catalog {
    Catalog {
        profiles: profiles
            .iter()
            .map(|p| ProfileInfo {
                name: p.spec.name.clone(),
                handles: p.spec.task_types.clone(),
                estimated_cost_micro_usd: p.spec.estimated_cost_micro_usd,
            })
            .collect(),
        max_nodes,
        max_cost_micro_usd,
    }
}
