//! The internal services the gateway forwards to, and their health as a readiness check.
//!
//! An upstream is one address (a Kubernetes Service: the cluster spreads connections
//! over its ready pods) or several, comma-separated (`http://a:9090,http://b:9090`).
//! With several, the gateway balances calls itself over the instances that report
//! `SERVING` on the gRPC health service: each is probed every
//! `upstreams.probe_interval`, leaves the balancer as soon as it reports anything
//! else or stops answering (an instance that is shutting down turns its readiness off
//! before it stops accepting calls) and rejoins when it serves again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::{Error, UpstreamsConfig};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One internal service: a lazily connected gRPC channel, balanced over its
/// instances when it has several.
pub(crate) struct Upstream {
    name: &'static str,
    channel: Channel,
    /// One per configured address, probed when there are several.
    instances: Vec<Instance>,
}

/// One address of an upstream and whether it last reported `SERVING`.
#[derive(Clone)]
struct Instance {
    url: String,
    endpoint: Endpoint,
    /// A channel of its own for health checks, apart from the balanced one.
    health: Channel,
    serving: Arc<AtomicBool>,
}

impl Upstream {
    /// The channel, for the service's gRPC client.
    pub(crate) fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The upstreams in the configuration: auth, scheduler, orchestrator, audit.
    /// Channels connect on first use and reconnect by themselves, so the gateway
    /// starts before its upstreams do. Upstreams with several instances are probed
    /// until `shutdown`.
    pub(crate) fn all(
        config: &UpstreamsConfig,
        shutdown: &CancellationToken,
    ) -> Result<[Self; 4], Error> {
        let [auth, scheduler, orchestrator, audit] = [
            ("auth", &config.auth),
            ("scheduler", &config.scheduler),
            ("orchestrator", &config.orchestrator),
            ("audit", &config.audit),
        ]
        .map(|(name, urls)| Self::new(name, urls, config.probe_interval, shutdown));
        Ok([auth?, scheduler?, orchestrator?, audit?])
    }

    fn new(
        name: &'static str,
        urls: &str,
        probe_interval: Duration,
        shutdown: &CancellationToken,
    ) -> Result<Self, Error> {
        let instances = addresses(urls)
            .map(|url| {
                let endpoint = Endpoint::from_shared(url.to_owned())
                    .map_err(|source| Error::Upstream {
                        service: name,
                        url: url.to_owned(),
                        source,
                    })?
                    .connect_timeout(CONNECT_TIMEOUT);
                Ok(Instance {
                    url: url.to_owned(),
                    health: endpoint.connect_lazy(),
                    endpoint,
                    serving: Arc::new(AtomicBool::new(true)),
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let channel = match instances.as_slice() {
            [] => {
                return Err(Error::UpstreamMissing { service: name });
            }
            [one] => one.endpoint.connect_lazy(),
            several => {
                let (channel, changes) = Channel::balance_channel::<usize>(several.len() * 2);
                let probes = several.iter().cloned().enumerate().collect();
                tokio::spawn(probe(
                    name,
                    probes,
                    changes,
                    probe_interval,
                    shutdown.clone(),
                ));
                channel
            }
        };
        Ok(Self {
            name,
            channel,
            instances,
        })
    }
}

/// The addresses of a comma-separated list, trimmed, empty entries skipped.
fn addresses(urls: &str) -> impl Iterator<Item = &str> {
    urls.split(',').map(str::trim).filter(|url| !url.is_empty())
}

/// Puts every instance in the balancer, then every `interval` takes out those that do
/// not report `SERVING` and puts back those that do again.
async fn probe(
    service: &'static str,
    probes: Vec<(usize, Instance)>,
    changes: Sender<Change<usize, Endpoint>>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    for (key, p) in &probes {
        if changes
            .send(Change::Insert(*key, p.endpoint.clone()))
            .await
            .is_err()
        {
            return;
        }
    }
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let checks = probes.iter().map(|(key, p)| async move {
            let result =
                tokio::time::timeout(interval.max(CONNECT_TIMEOUT), health(&p.health)).await;
            (*key, p, matches!(result, Ok(Ok(()))))
        });
        for (key, p, now_serving) in futures::future::join_all(checks).await {
            let was_serving = p.serving.swap(now_serving, Ordering::SeqCst);
            let change = match (was_serving, now_serving) {
                (true, false) => {
                    tracing::info!(service, instance = %p.url, "upstream instance left the balancer");
                    Change::Remove(key)
                }
                (false, true) => {
                    tracing::info!(service, instance = %p.url, "upstream instance rejoined the balancer");
                    Change::Insert(key, p.endpoint.clone())
                }
                _ => continue,
            };
            if changes.send(change).await.is_err() {
                return;
            }
        }
    }
}

/// Whether the instance behind `channel` reports `SERVING`.
async fn health(channel: &Channel) -> Result<(), String> {
    let mut client = HealthClient::new(channel.clone());
    let response = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(|status| format!("health check failed: {}", status.message()))?;
    match response.into_inner().status() {
        ServingStatus::Serving => Ok(()),
        other => Err(format!("reports {}", other.as_str_name())),
    }
}

#[async_trait::async_trait]
impl godel_runtime::ReadinessCheck for Upstream {
    fn name(&self) -> &str {
        self.name
    }

    /// One instance: its health. Several: ready while any of them serves.
    async fn check(&self) -> Result<(), String> {
        match self.instances.as_slice() {
            [one] => health(&one.health).await,
            several => {
                if several.iter().any(|i| i.serving.load(Ordering::SeqCst)) {
                    Ok(())
                } else {
                    Err(format!("none of its {} instances serves", several.len()))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_comma_separated_and_trimmed() {
        let list: Vec<&str> = addresses(" http://a:1, http://b:2 ,,").collect();
        assert_eq!(list, ["http://a:1", "http://b:2"]);
        assert_eq!(addresses("http://one:1").count(), 1);
        assert_eq!(addresses(" , ").count(), 0);
    }
}
