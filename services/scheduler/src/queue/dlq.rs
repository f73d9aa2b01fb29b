//! The dead-letter queue: tasks that failed for good, kept with their error history
//! until they are requeued or purged.

use chrono::{DateTime, Utc};
use godel_error::Error;
use godel_store::sea_orm::ConnectionTrait;
use godel_types::{TaskId, TeamId};

use super::store::{self, Transition, db_err, stmt};
use super::task::{DeadLetter, ListTasks, Page, Task, TaskState};
use super::{Queue, events, plans};

impl Queue {
    /// A page of `team`'s dead-lettered tasks in id order, after `after` (of one task
    /// type when `task_type` is set), each with its error history, oldest first.
    pub async fn dead_letters(
        &self,
        team: TeamId,
        after: Option<TaskId>,
        limit: usize,
        task_type: Option<String>,
    ) -> Result<Page<DeadLetter>, Error> {
        let filter = ListTasks {
            state: Some(TaskState::DeadLettered),
            after,
            limit,
            task_type,
            ..ListTasks::default()
        };
        let page = self.list(team, filter).await?;
        let ids: Vec<TaskId> = page.items.iter().map(|t| t.id).collect();
        let mut histories = store::errors_of_many(self.db.conn(), &ids).await?;
        Ok(Page {
            items: page
                .items
                .into_iter()
                .map(|task| {
                    let errors = histories.remove(&task.id).unwrap_or_default();
                    DeadLetter { task, errors }
                })
                .collect(),
            next: page.next,
        })
    }

    /// A dead-lettered task of `team` with its error history, oldest first.
    pub async fn dead_letter(&self, team: TeamId, id: TaskId) -> Result<DeadLetter, Error> {
        let conn = self.db.conn();
        let task = store::load_task(conn, id, Some(team), false)
            .await?
            .filter(|t| t.state == TaskState::DeadLettered)
            .ok_or_else(|| Error::not_found(format!("dead-lettered task {id}")))?;
        let errors = store::errors_of(conn, id).await?;
        Ok(DeadLetter { task, errors })
    }

    /// Puts a dead-lettered task back in the queue with its attempts reset; its next
    /// claim gives it a new epoch. The error history is kept. In a plan, the
    /// dependents its failure cancelled wait for it again and the plan reopens.
    pub async fn requeue_dead_letter(&self, team: TeamId, id: TaskId) -> Result<Task, Error> {
        let txn = self.begin().await?;
        let now = store::db_now(&txn).await?;
        let task = store::load_task(&txn, id, Some(team), true)
            .await?
            .filter(|t| t.state == TaskState::DeadLettered)
            .ok_or_else(|| Error::not_found(format!("dead-lettered task {id}")))?;
        let mut change = Transition::new(&task, TaskState::Queued, now);
        change.not_before = Some(now);
        change.reset_attempts = true;
        let updated = change
            .apply(&txn)
            .await?
            .ok_or_else(|| Error::aborted(format!("task {id} changed meanwhile; retry")))?;
        const REASON: &str = "requeued from the dead-letter queue";
        let mut events = vec![events::task_event(
            &updated,
            Some(TaskState::DeadLettered),
            REASON,
            now,
        )?];
        events.extend(plans::after_requeue(&txn, &updated, now).await?);
        self.commit(txn, &events).await?;
        Ok(updated)
    }

    /// Deletes `team`'s dead-lettered tasks — only those in `ids` when it is not
    /// empty — with their error history. Returns how many tasks were deleted.
    pub async fn purge_dead_letters(&self, team: TeamId, ids: &[TaskId]) -> Result<u64, Error> {
        self.purge_dead_letters_before(team, ids, None).await
    }

    /// Like [`purge_dead_letters`](Self::purge_dead_letters), only for tasks
    /// dead-lettered before `before` when it is set.
    pub async fn purge_dead_letters_before(
        &self,
        team: TeamId,
        ids: &[TaskId],
        before: Option<DateTime<Utc>>,
    ) -> Result<u64, Error> {
        let txn = self.begin().await?;
        let mut values = vec![team.to_string().into()];
        values.extend(ids.iter().map(|id| id.to_string().into()));
        let mut only = if ids.is_empty() {
            String::new()
        } else {
            format!(" AND id IN ({})", store::placeholders(2, ids.len()))
        };
        if let Some(before) = before {
            // A dead-lettered task is not written again until it is requeued, so
            // `updated_at` is when it was dead-lettered.
            values.push(before.timestamp_micros().into());
            only.push_str(&format!(" AND updated_at < ${}", values.len()));
        }
        let selected = format!("team_id = $1 AND state = 'dead_lettered'{only}");
        txn.execute_raw(stmt(
            &txn,
            format!(
                "DELETE FROM task_errors WHERE task_id IN (SELECT id FROM tasks WHERE {selected})"
            ),
            values.clone(),
        ))
        .await
        .map_err(db_err("purging task errors"))?;
        let deleted = txn
            .execute_raw(stmt(
                &txn,
                format!("DELETE FROM tasks WHERE {selected}"),
                values,
            ))
            .await
            .map_err(db_err("purging dead letters"))?
            .rows_affected();
        self.commit(txn, &[]).await?;
        Ok(deleted)
    }
}
