//! A team's plans, newest first, a page at a time.

use std::collections::HashMap;

use godel_error::Error;
use godel_store::sea_orm::ConnectionTrait;
use godel_types::{PlanId, TeamId};

use super::{PLAN_COLUMNS, Plan, plan_from_parts, plan_row};
use crate::queue::Queue;
use crate::queue::store::{self, db_err, get, stmt};
use crate::queue::task::TaskState;

/// One page of plans and where the next one starts.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanPage {
    /// Newest first.
    pub plans: Vec<Plan>,
    /// The last plan of this page when more follow.
    pub next: Option<PlanId>,
}

impl Queue {
    /// `team`'s plans older than `before` (all when `None`), newest first; at most
    /// `limit` (0: the configured default page size; capped at the largest one). Ids
    /// grow with time, so the id orders them.
    pub async fn list_plans(
        &self,
        team: TeamId,
        before: Option<PlanId>,
        limit: usize,
    ) -> Result<PlanPage, Error> {
        let limit = match limit {
            0 => self.config.default_page_size,
            n => n.min(self.config.max_page_size),
        };
        let conn = self.db.conn();
        let mut sql = format!("SELECT {PLAN_COLUMNS} FROM plans WHERE team_id = $1");
        let mut values = vec![team.to_string().into()];
        if let Some(before) = before {
            values.push(before.to_string().into());
            sql.push_str(&format!(" AND id < ${}", values.len()));
        }
        values.push(i64::try_from(limit + 1).unwrap_or(i64::MAX).into());
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", values.len()));
        let rows = conn
            .query_all_raw(stmt(conn, sql, values))
            .await
            .map_err(db_err("listing plans"))?;
        let mut rows = rows.iter().map(plan_row).collect::<Result<Vec<_>, _>>()?;
        let more = rows.len() > limit;
        rows.truncate(limit);
        let mut states: HashMap<PlanId, Vec<TaskState>> = HashMap::new();
        if !rows.is_empty() {
            let placeholders: Vec<String> = (1..=rows.len()).map(|i| format!("${i}")).collect();
            let ids: Vec<_> = rows.iter().map(|r| r.id.to_string().into()).collect();
            let task_rows = conn
                .query_all_raw(stmt(
                    conn,
                    format!(
                        "SELECT plan_id, state FROM tasks WHERE plan_id IN ({})",
                        placeholders.join(", ")
                    ),
                    ids,
                ))
                .await
                .map_err(db_err("reading the task states of plans"))?;
            for row in &task_rows {
                let plan: PlanId =
                    store::parse_id("tasks.plan_id", &get::<String>(row, "plan_id")?)?;
                let state: String = get(row, "state")?;
                let state =
                    TaskState::parse(&state).ok_or_else(|| store::corrupt("state", &state))?;
                states.entry(plan).or_default().push(state);
            }
        }
        let plans: Vec<Plan> = rows
            .into_iter()
            .map(|row| {
                let tasks = states.remove(&row.id).unwrap_or_default();
                plan_from_parts(row, tasks)
            })
            .collect();
        let next = if more {
            plans.last().map(|p| p.id)
        } else {
            None
        };
        Ok(PlanPage { plans, next })
    }
}
