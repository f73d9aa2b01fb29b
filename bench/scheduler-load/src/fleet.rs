//! Simulated orchestrators: each registers over gRPC, heartbeats, consumes its
//! dispatch subject on NATS and completes every task it is handed over gRPC.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use godel_bus::{ConsumerConfig, Subject};
use godel_proto::events::v1::DispatchEvent;
use godel_proto::scheduler::v1 as pb;
use godel_proto::scheduler::v1::scheduler_service_client::SchedulerServiceClient;
use godel_scheduler::Dependencies;
use godel_types::OrchestratorId;
use tonic::transport::Channel;

pub type Client = SchedulerServiceClient<Channel>;

pub async fn connect(endpoint: &str) -> Result<Client> {
    Client::connect(endpoint.to_owned())
        .await
        .with_context(|| format!("connecting to {endpoint}"))
}

enum Mark {
    /// Submitted; its scheduled time and whether it falls in the measured window.
    Sent(Instant, bool),
    /// Dispatched before the submission's answer arrived.
    Seen(Instant),
}

/// Submission and dispatch times per task, whichever is learned first.
#[derive(Default)]
pub struct Marks {
    pending: Mutex<HashMap<String, Mark>>,
    latencies: Mutex<Vec<Duration>>,
    /// From the lease's commit (the event's `occurred_at`, database clock) to the
    /// dispatch event reaching the orchestrator: the outbox relay and NATS.
    delivery: Mutex<Vec<Duration>>,
}

impl Marks {
    pub fn sent(&self, task: String, scheduled: Instant, measured: bool) {
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        match pending.remove(&task) {
            Some(Mark::Seen(at)) => {
                drop(pending);
                if measured {
                    self.record(at.saturating_duration_since(scheduled));
                }
            }
            _ => {
                pending.insert(task, Mark::Sent(scheduled, measured));
            }
        }
    }

    fn seen(&self, task: String, at: Instant) {
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        match pending.remove(&task) {
            Some(Mark::Sent(scheduled, measured)) => {
                drop(pending);
                if measured {
                    self.record(at.saturating_duration_since(scheduled));
                }
            }
            _ => {
                pending.insert(task, Mark::Seen(at));
            }
        }
    }

    fn record(&self, latency: Duration) {
        if let Ok(mut l) = self.latencies.lock() {
            l.push(latency);
        }
    }

    fn delivered(&self, lag: Duration) {
        if let Ok(mut d) = self.delivery.lock() {
            d.push(lag);
        }
    }

    pub fn delivery(&self) -> Vec<Duration> {
        self.delivery.lock().map(|d| d.clone()).unwrap_or_default()
    }

    pub fn latencies(&self) -> Vec<Duration> {
        self.latencies.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

pub struct Fleet {
    ids: Vec<OrchestratorId>,
    capacity: u32,
    client: Client,
    marks: Arc<Marks>,
    dispatched: Arc<AtomicU64>,
    completed: Arc<AtomicU64>,
    draining: Arc<AtomicBool>,
    order: Arc<Mutex<Vec<String>>>,
}

impl Fleet {
    pub async fn start(
        endpoint: &str,
        deps: &Dependencies,
        count: u32,
        capacity: u32,
    ) -> Result<Self> {
        let mut client = connect(endpoint).await?;
        let fleet = Self {
            ids: (0..count).map(|_| OrchestratorId::new()).collect(),
            capacity,
            client: client.clone(),
            marks: Arc::default(),
            dispatched: Arc::default(),
            completed: Arc::default(),
            draining: Arc::default(),
            order: Arc::default(),
        };
        for id in &fleet.ids {
            let mut consumer = deps
                .bus
                .consumer(ConsumerConfig::new(
                    format!("bench-{id}"),
                    vec![Subject::dispatch(*id).to_string()],
                ))
                .await
                .context("creating a dispatch consumer")?;
            client
                .register_orchestrator(pb::RegisterOrchestratorRequest {
                    orchestrator_id: id.to_string(),
                    capacity,
                    runtimes: vec!["process".into()],
                    version: "bench".into(),
                    ..Default::default()
                })
                .await?;
            let id = *id;
            let client = connect(endpoint).await?;
            let marks = fleet.marks.clone();
            let dispatched = fleet.dispatched.clone();
            let completed = fleet.completed.clone();
            let order = fleet.order.clone();
            tokio::spawn(async move {
                while let Ok(Some(delivery)) = consumer.next().await {
                    let at = Instant::now();
                    let Ok(event) =
                        godel_proto::cloudevent::decode::<DispatchEvent>(&delivery.payload)
                    else {
                        continue;
                    };
                    let _ = delivery.ack().await;
                    if let Some(ts) = &event.data.occurred_at {
                        let leased = std::time::UNIX_EPOCH
                            + Duration::new(ts.seconds.max(0) as u64, ts.nanos.max(0) as u32);
                        if let Ok(lag) = std::time::SystemTime::now().duration_since(leased) {
                            marks.delivered(lag);
                        }
                    }
                    let tasks = event.data.tasks;
                    dispatched.fetch_add(tasks.len() as u64, Ordering::Relaxed);
                    if let Ok(mut order) = order.lock() {
                        order.extend(tasks.iter().map(|t| t.team_id.clone()));
                    }
                    for t in &tasks {
                        marks.seen(t.task_id.clone(), at);
                    }
                    let client = client.clone();
                    let completed = completed.clone();
                    tokio::spawn(async move {
                        let calls = tasks.into_iter().map(|t| {
                            let mut client = client.clone();
                            async move {
                                client
                                    .complete_task(pb::CompleteTaskRequest {
                                        orchestrator_id: id.to_string(),
                                        task_id: t.task_id,
                                        epoch: t.epoch,
                                        result_json: String::new(),
                                    })
                                    .await
                                    .is_ok()
                            }
                        });
                        let done = futures::future::join_all(calls).await;
                        let ok = done.iter().filter(|ok| **ok).count() as u64;
                        completed.fetch_add(ok, Ordering::Relaxed);
                    });
                }
            });
        }
        let ids = fleet.ids.clone();
        let draining = fleet.draining.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(3)).await;
                let drain = draining.load(Ordering::Relaxed);
                for id in &ids {
                    let _ = heartbeat(&mut client, *id, capacity, drain).await;
                }
            }
        });
        Ok(fleet)
    }

    pub fn marks(&self) -> Arc<Marks> {
        self.marks.clone()
    }

    pub fn dispatched(&self) -> u64 {
        self.dispatched.load(Ordering::Relaxed)
    }

    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
    }

    /// Marks every orchestrator draining: nothing more is placed on them.
    pub async fn pause(&self) -> Result<()> {
        self.draining.store(true, Ordering::Relaxed);
        self.beat_all().await
    }

    /// Ends [`pause`](Self::pause); returns the teams of dispatched tasks, in order.
    pub async fn resume(&self) -> Result<Arc<Mutex<Vec<String>>>> {
        if let Ok(mut order) = self.order.lock() {
            order.clear();
        }
        self.draining.store(false, Ordering::Relaxed);
        self.beat_all().await?;
        Ok(self.order.clone())
    }

    async fn beat_all(&self) -> Result<()> {
        let mut client = self.client.clone();
        let drain = self.draining.load(Ordering::Relaxed);
        for id in &self.ids {
            heartbeat(&mut client, *id, self.capacity, drain).await?;
        }
        Ok(())
    }

    /// Waits until `n` tasks were completed, or `timeout`.
    pub async fn wait_completed(&self, n: u64, timeout: Duration) {
        let until = Instant::now() + timeout;
        while self.completed() < n && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn heartbeat(
    client: &mut Client,
    id: OrchestratorId,
    capacity: u32,
    draining: bool,
) -> Result<()> {
    client
        .heartbeat_orchestrator(pb::HeartbeatOrchestratorRequest {
            orchestrator_id: id.to_string(),
            capacity,
            active_sessions: 0,
            draining,
        })
        .await?;
    Ok(())
}
