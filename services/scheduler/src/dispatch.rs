//! The dispatch loop: on the one replica elected to lead it ([`crate::leader`]), it
//! leases ready tasks in batches to the least-loaded healthy orchestrators with free
//! capacity and announces each batch on `godel.v1.dispatch.<orchestrator_id>` through
//! the outbox, in the transaction that leased it.
//!
//! It runs a round whenever this replica's queue changed (new work, freed capacity)
//! and otherwise every `dispatch_interval`, which finds work submitted through other
//! replicas. Standbys try to take the lease every third of its TTL, so a dead leader
//! is replaced within about one TTL; a leader shutting down cleanly releases it.

use std::time::{Duration, Instant};

use godel_error::{Error, ErrorCode};
use tokio_util::sync::CancellationToken;

use crate::leader::{Election, Term};
use crate::queue::Queue;
use crate::registry::Registry;

/// The name of the dispatch loop's leader lease.
pub const LEADER_LEASE: &str = "dispatch";

/// The dispatch loop of one replica. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    queue: Queue,
    registry: Registry,
    election: Election,
}

impl Dispatcher {
    /// A dispatcher over `queue` and `registry` (the same database), standing for the
    /// leader lease with a TTL of the queue's `leader_ttl`.
    pub fn new(queue: Queue, registry: Registry) -> Self {
        let election = Election::new(queue.db().clone(), LEADER_LEASE, queue.config().leader_ttl);
        Self {
            queue,
            registry,
            election,
        }
    }

    /// This replica's candidacy (its holder id, for tests and logs).
    pub fn election(&self) -> &Election {
        &self.election
    }

    /// Runs until `stop` is cancelled, then releases the lease if it holds it.
    pub async fn run(self, stop: CancellationToken) {
        let changed = self.queue.changed();
        let ttl = self.election.ttl();
        let renew_every = ttl / 3;
        let interval = self.queue.config().dispatch_interval;
        let mut term: Option<Term> = None;
        let mut renewed_at = Instant::now();
        while !stop.is_cancelled() {
            term = self
                .keep_leadership(term, &mut renewed_at, renew_every)
                .await;
            if let Some(t) = &term {
                match self.round(t).await {
                    Ok(_) => {}
                    Err(e) if e.code == ErrorCode::FailedPrecondition => {
                        tracing::warn!(epoch = t.epoch, "lost the dispatch leadership");
                        term = None;
                    }
                    Err(e) => tracing::warn!(error = %e, "a dispatch round failed"),
                }
            }
            let leading = term.is_some();
            let wait = if leading { interval } else { renew_every };
            tokio::select! {
                () = stop.cancelled() => break,
                () = changed.notified(), if leading => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        if let Some(t) = term {
            match self.election.release(&t).await {
                Ok(()) => tracing::info!(epoch = t.epoch, "released the dispatch leadership"),
                Err(e) => tracing::warn!(error = %e, "cannot release the dispatch leadership"),
            }
        }
    }

    /// Takes the lease when we have none, renews it when due; the term we hold after.
    async fn keep_leadership(
        &self,
        term: Option<Term>,
        renewed_at: &mut Instant,
        renew_every: Duration,
    ) -> Option<Term> {
        match term {
            None => match self.election.acquire().await {
                Ok(Some(t)) => {
                    tracing::info!(epoch = t.epoch, holder = %t.holder, "leading dispatch");
                    *renewed_at = Instant::now();
                    Some(t)
                }
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot stand for the dispatch leadership");
                    None
                }
            },
            Some(t) if renewed_at.elapsed() >= renew_every => match self.election.renew(&t).await {
                Ok(true) => {
                    *renewed_at = Instant::now();
                    Some(t)
                }
                Ok(false) => {
                    tracing::warn!(epoch = t.epoch, "the dispatch leadership expired");
                    None
                }
                // The fence in every dispatch still guards us; give up once the lease
                // must have run out.
                Err(e) if renewed_at.elapsed() < self.election.ttl() => {
                    tracing::warn!(error = %e, "cannot renew the dispatch leadership");
                    Some(t)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew the dispatch leadership; standing down");
                    None
                }
            },
            Some(t) => Some(t),
        }
    }

    /// One round as leader in `term`: leases batches to the least-loaded healthy
    /// orchestrators with room until the ready tasks or the free capacity run out.
    /// Returns how many tasks it dispatched.
    pub async fn round(&self, term: &Term) -> Result<usize, Error> {
        let mut targets: Vec<_> = self
            .registry
            .list()
            .await?
            .into_iter()
            .filter(|o| o.healthy && !o.draining && o.free() > 0)
            .collect();
        let batch = self.queue.config().dispatch_batch.max(1);
        let lease_duration = self.queue.config().default_lease_duration;
        let mut dispatched = 0;
        loop {
            let Some(target) = targets
                .iter_mut()
                .filter(|o| o.free() > 0)
                .min_by(|a, b| a.placement_order(b))
            else {
                return Ok(dispatched);
            };
            let want = usize::try_from(target.free())
                .unwrap_or(usize::MAX)
                .min(batch);
            let started = Instant::now();
            let leased = self
                .queue
                .dispatch(target.id, want, lease_duration, term)
                .await?;
            tracing::debug!(
                orchestrator = %target.id,
                leased = leased.len(),
                elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
                "dispatched a batch"
            );
            target.load = target
                .load
                .saturating_add(u64::try_from(leased.len()).unwrap_or(u64::MAX));
            dispatched += leased.len();
            if leased.len() < want {
                return Ok(dispatched);
            }
        }
    }
}
