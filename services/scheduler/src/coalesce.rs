//! Group commit for single-item requests (DESIGN.md §3 invariant 4): requests that
//! arrive while a transaction is being written wait in a channel and go into the next
//! one together, so many callers share one transaction and its fsync instead of each
//! paying for their own. Under light load a batch is a single request and waits for
//! nothing; under heavy load batches grow by themselves.

use std::future::Future;
use std::sync::Arc;

use godel_error::Error;
use tokio::sync::{Mutex, mpsc, oneshot};

type Reply<O> = oneshot::Sender<Result<O, Error>>;

/// Hands items to a batch writer and returns each item's own outcome. Cheap to
/// clone; the writers stop when the last clone is dropped.
#[derive(Debug)]
pub struct Coalescer<I, O> {
    tx: mpsc::Sender<(I, Reply<O>)>,
}

impl<I, O> Clone for Coalescer<I, O> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<I: Send + 'static, O: Send + 'static> Coalescer<I, O> {
    /// Starts `writers` tasks that each take up to `max_batch` waiting items and pass
    /// them to `write`, which returns one outcome per item, in order (or fails them
    /// all). Several writers let one batch be written while the next one fills.
    pub fn spawn<F, Fut>(name: &'static str, writers: usize, max_batch: usize, write: F) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<Result<O, Error>>, Error>> + Send,
    {
        let max_batch = max_batch.max(1);
        let (tx, rx) = mpsc::channel(max_batch.saturating_mul(4));
        let rx = Arc::new(Mutex::new(rx));
        let write = Arc::new(write);
        for _ in 0..writers.max(1) {
            let rx = rx.clone();
            let write = write.clone();
            tokio::spawn(async move {
                while let Some(batch) = next_batch(&rx, max_batch).await {
                    let (items, replies): (Vec<I>, Vec<Reply<O>>) = batch.into_iter().unzip();
                    let n = items.len();
                    match write(items).await {
                        Ok(outcomes) if outcomes.len() == n => {
                            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                                // The caller may have gone away; nothing to tell it.
                                let _ = reply.send(outcome);
                            }
                        }
                        Ok(outcomes) => {
                            tracing::error!(
                                name,
                                n,
                                got = outcomes.len(),
                                "a batch write lost outcomes"
                            );
                            let e = Error::internal(format!("the {name} batch lost outcomes"));
                            for reply in replies {
                                let _ = reply.send(Err(e.clone()));
                            }
                        }
                        Err(e) => {
                            for reply in replies {
                                let _ = reply.send(Err(e.clone()));
                            }
                        }
                    }
                }
            });
        }
        Self { tx }
    }

    /// Queues `item` for the next batch and waits for its outcome.
    pub async fn call(&self, item: I) -> Result<O, Error> {
        let (reply, outcome) = oneshot::channel();
        self.tx
            .send((item, reply))
            .await
            .map_err(|_| Error::unavailable("the scheduler is shutting down"))?;
        outcome
            .await
            .map_err(|_| Error::unavailable("the scheduler is shutting down"))?
    }
}

/// Waits for one item, then takes whatever else is already waiting, up to `max`.
async fn next_batch<T>(rx: &Mutex<mpsc::Receiver<T>>, max: usize) -> Option<Vec<T>> {
    let mut rx = rx.lock().await;
    let first = rx.recv().await?;
    let mut batch = Vec::with_capacity(max.min(64));
    batch.push(first);
    while batch.len() < max {
        match rx.try_recv() {
            Ok(item) => batch.push(item),
            Err(_) => break,
        }
    }
    Some(batch)
}
