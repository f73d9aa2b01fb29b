//! The audit record of every API call: built by the request pipeline, queued in a
//! bounded channel (a request never waits for it; a full queue drops the record,
//! counts `godel_gateway_audit_dropped_total` and logs) and appended to the audit
//! service in batches by a background task, with the gateway's own credential (an API
//! key holding the `audit-writer` organisation role, `audit.api_key`).

use std::sync::Arc;
use std::time::Duration;

use godel_proto::audit::v1::AppendRequest;
use godel_proto::audit::v1::AuditRecord;
use godel_proto::audit::v1::audit_service_client::AuditServiceClient;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::authn::Authenticator;
use crate::config::AuditConfig;

/// Where the pipeline puts records; cheap to clone.
#[derive(Clone)]
pub(crate) struct AuditSink {
    tx: Option<mpsc::Sender<AuditRecord>>,
}

impl AuditSink {
    /// A sink and the receiving end for [`run`]; a sink that drops everything when
    /// auditing is not configured.
    pub(crate) fn new(config: &AuditConfig) -> (Self, Option<mpsc::Receiver<AuditRecord>>) {
        if config.api_key.is_none() {
            return (Self { tx: None }, None);
        }
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        (Self { tx: Some(tx) }, Some(rx))
    }

    /// Queues `record` without waiting.
    pub(crate) fn record(&self, record: AuditRecord) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(record) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(record)) => {
                metrics::counter!("godel_gateway_audit_dropped_total").increment(1);
                tracing::warn!(action = %record.action, resource = %record.resource, trace_id = %record.trace_id, "the audit queue is full; dropped an API call's audit record");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                metrics::counter!("godel_gateway_audit_dropped_total").increment(1);
            }
        }
    }
}

/// How many times a batch is tried before it is given up (counted and logged).
const ATTEMPTS: u32 = 5;

/// Sends queued records until `shutdown`, then sends what is left and returns.
pub(crate) async fn run(
    mut rx: mpsc::Receiver<AuditRecord>,
    client: AuditServiceClient<Channel>,
    authn: Arc<Authenticator>,
    api_key: String,
    config: AuditConfig,
    shutdown: CancellationToken,
) -> Result<(), godel_runtime::BoxError> {
    let batch_size = config.batch_size.clamp(1, 1000);
    loop {
        let first = tokio::select! {
            record = rx.recv() => record,
            () = shutdown.cancelled() => None,
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        let deadline = tokio::time::sleep(config.flush_interval);
        tokio::pin!(deadline);
        while batch.len() < batch_size {
            tokio::select! {
                record = rx.recv() => match record {
                    Some(record) => batch.push(record),
                    None => break,
                },
                () = &mut deadline => break,
                () = shutdown.cancelled() => break,
            }
        }
        send(&client, &authn, &api_key, batch, &shutdown).await;
    }
    // Shutting down: the servers have drained, so whatever is queued is final.
    rx.close();
    let mut rest = Vec::new();
    while let Some(record) = rx.recv().await {
        rest.push(record);
        if rest.len() == batch_size {
            send(
                &client,
                &authn,
                &api_key,
                std::mem::take(&mut rest),
                &shutdown,
            )
            .await;
        }
    }
    if !rest.is_empty() {
        send(&client, &authn, &api_key, rest, &shutdown).await;
    }
    Ok(())
}

async fn send(
    client: &AuditServiceClient<Channel>,
    authn: &Authenticator,
    api_key: &str,
    records: Vec<AuditRecord>,
    shutdown: &CancellationToken,
) {
    let count = records.len() as u64;
    let mut backoff = Duration::from_millis(100);
    for attempt in 1..=ATTEMPTS {
        match append(client, authn, api_key, records.clone()).await {
            Ok(()) => {
                metrics::counter!("godel_gateway_audit_sent_total").increment(count);
                return;
            }
            Err(e) if attempt < ATTEMPTS && !shutdown.is_cancelled() => {
                tracing::warn!(error = %e, attempt, "appending audit records failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            Err(e) => {
                metrics::counter!("godel_gateway_audit_failed_total").increment(count);
                tracing::error!(error = %e, records = count, "appending audit records failed; gave them up");
                return;
            }
        }
    }
}

async fn append(
    client: &AuditServiceClient<Channel>,
    authn: &Authenticator,
    api_key: &str,
    records: Vec<AuditRecord>,
) -> Result<(), godel_error::Error> {
    let authenticated = authn.api_key(api_key).await?;
    let mut request = tonic::Request::new(AppendRequest { records });
    godel_identity::attach_token(&mut request, &authenticated.token)?;
    client
        .clone()
        .append(request)
        .await
        .map_err(|status| godel_error::Error::from_status(&status))?;
    Ok(())
}
