//! One request is one trace (DESIGN.md §3 invariant 8): a span started by a caller
//! continues across a gRPC call into a service, through that service's outbox and the
//! real NATS JetStream bus, into a consumer in another service — and all of it
//! arrives at an OTLP receiver as one trace with the right parent links.

#![allow(clippy::unwrap_used)]

use std::pin::Pin;
use std::time::Duration;

use godel_backend::{Backend, Dependencies, outbox_event};
use godel_bus::{BusConfig, ConsumerConfig, Subject};
use godel_proto::audit::v1::audit_service_client::AuditServiceClient;
use godel_proto::audit::v1::audit_service_server::{AuditService, AuditServiceServer};
use godel_proto::audit::v1::{
    AppendRequest, AppendResponse, ApplyRetentionRequest, ApplyRetentionResponse, AuditRecord,
    EraseSubjectRequest, EraseSubjectResponse, ExportRequest, GetRetentionRequest,
    GetRetentionResponse, QueryRequest, QueryResponse, SetTeamRetentionRequest,
    SetTeamRetentionResponse, VerifyRequest, VerifyResponse,
};
use godel_runtime::{ServerConfig, Service};
use godel_store::sea_orm_migration::{MigrationTrait, MigratorTrait};
use godel_store::{Db, RelayNotifier, StoreError};
use godel_telemetry::{
    TelemetryConfig, TraceContextInterceptor, extract_from, flush_provider, otel_layer, set_parent,
    tracer_provider,
};
use godel_test_utils::nats::TestNats;
use godel_test_utils::otlp::OtlpReceiver;
use godel_test_utils::postgres::TestDb;
use godel_types::TeamId;
use opentelemetry::trace::TraceContextExt;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::Registry;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;

struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(godel_store::CreateOutbox)]
    }
}

/// A service whose `Append` writes one outbox event per record, the way every
/// Godel service announces a state change (the other methods are not called).
struct Announcer {
    db: Db,
    notifier: RelayNotifier,
    team: TeamId,
}

#[tonic::async_trait]
impl AuditService for Announcer {
    async fn append(
        &self,
        request: Request<AppendRequest>,
    ) -> Result<Response<AppendResponse>, Status> {
        let records = request.into_inner().records.len();
        let events: Vec<_> = (0..records)
            .map(|_| outbox_event(Subject::iam(self.team, "member_added"), &b"{}"[..]))
            .collect();
        self.db
            .transaction(|txn| {
                Box::pin(async move { godel_store::outbox::enqueue(txn, &events).await })
            })
            .await
            .map_err(|e: godel_store::sea_orm::TransactionError<StoreError>| {
                Status::internal(e.to_string())
            })?;
        self.notifier.notify();
        Ok(Response::new(AppendResponse {
            appended: records as u32,
            duplicates: 0,
        }))
    }

    async fn query(&self, _: Request<QueryRequest>) -> Result<Response<QueryResponse>, Status> {
        Err(Status::unimplemented("not used by this test"))
    }

    async fn verify(&self, _: Request<VerifyRequest>) -> Result<Response<VerifyResponse>, Status> {
        Err(Status::unimplemented("not used by this test"))
    }

    type ExportStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<AuditRecord, Status>> + Send>>;

    async fn export(
        &self,
        _: Request<ExportRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        Err(Status::unimplemented("not used by this test"))
    }

    async fn erase_subject(
        &self,
        _: Request<EraseSubjectRequest>,
    ) -> Result<Response<EraseSubjectResponse>, Status> {
        Err(Status::unimplemented("not used by this test"))
    }

    async fn get_retention(
        &self,
        _: Request<GetRetentionRequest>,
    ) -> Result<Response<GetRetentionResponse>, Status> {
        Err(Status::unimplemented("not used by this test"))
    }

    async fn set_team_retention(
        &self,
        _: Request<SetTeamRetentionRequest>,
    ) -> Result<Response<SetTeamRetentionResponse>, Status> {
        Err(Status::unimplemented("not used by this test"))
    }

    async fn apply_retention(
        &self,
        _: Request<ApplyRetentionRequest>,
    ) -> Result<Response<ApplyRetentionResponse>, Status> {
        Err(Status::unimplemented("not used by this test"))
    }
}

#[tokio::test]
async fn a_trace_continues_across_grpc_the_outbox_and_nats() {
    let receiver = OtlpReceiver::start().await;
    let provider = tracer_provider(&TelemetryConfig {
        otlp_endpoint: Some(receiver.endpoint()),
        service_name: "trace-propagation".to_owned(),
        ..TelemetryConfig::default()
    })
    .unwrap();
    // A current-thread runtime: every task of this test runs on this thread and
    // reports to this subscriber — at INFO, as `godel_telemetry::init` does, so the
    // libraries' own debug spans (h2, sqlx) stay out of the trace.
    let _default = tracing::subscriber::set_default(
        Registry::default().with(otel_layer(&provider).with_filter(LevelFilter::INFO)),
    );

    // Service A: gRPC in, outbox to the real NATS JetStream bus.
    let nats = TestNats::new().await;
    let bus = godel_bus::connect(&BusConfig::nats(
        &nats.url,
        &nats.stream_name,
        &nats.subject_prefix,
    ))
    .await
    .unwrap();
    let db_handle = TestDb::sqlite();
    let database = godel_store::DatabaseConfig {
        url: db_handle.url.clone().into(),
        ..Default::default()
    };
    let backend =
        Backend::open::<Migrator>("announcer", &database, Dependencies { bus: bus.clone() })
            .await
            .unwrap();
    let team = TeamId::new();
    let announcer = Announcer {
        db: backend.db().clone(),
        notifier: backend.notifier(),
        team,
    };
    let shutdown = CancellationToken::new();
    let running = backend
        .install(
            Service::new("announcer", ServerConfig::local())
                .grpc_service(AuditServiceServer::new(announcer)),
        )
        .start(shutdown.clone())
        .await
        .unwrap();

    // Service B: a durable consumer of team events.
    let mut consumer = bus
        .consumer(ConsumerConfig::new(
            "trace-consumer",
            vec![Subject::team_events(team)],
        ))
        .await
        .unwrap();

    // The caller: one span around the gRPC call.
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", running.grpc_addr()))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut client = AuditServiceClient::with_interceptor(channel, TraceContextInterceptor);
    let caller = tracing::info_span!("caller", otel.kind = "client");
    let trace_id = caller
        .context()
        .span()
        .span_context()
        .trace_id()
        .to_string();
    let caller_id = caller.context().span().span_context().span_id().to_string();
    client
        .append(AppendRequest {
            records: vec![AuditRecord::default()],
        })
        .instrument(caller.clone())
        .await
        .unwrap();
    drop(caller);

    let delivery = tokio::time::timeout(Duration::from_secs(20), consumer.next())
        .await
        .expect("the event arrives over NATS")
        .unwrap()
        .expect("bus open");
    assert!(
        delivery.headers.contains_key("traceparent"),
        "{:?}",
        delivery.headers
    );
    let consume = tracing::info_span!("consume", otel.kind = "consumer");
    set_parent(&consume, extract_from(&delivery.headers));
    let consume_id = consume
        .context()
        .span()
        .span_context()
        .span_id()
        .to_string();
    async { delivery.ack().await.unwrap() }
        .instrument(consume.clone())
        .await;
    drop(consume);

    let spans = godel_test_utils::eventually(
        "caller, server and consumer spans at the OTLP receiver",
        Duration::from_secs(20),
        || {
            let provider = provider.clone();
            let receiver = &receiver;
            async move {
                flush_provider(&provider).await.unwrap();
                let spans = receiver.spans();
                let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
                let all = names.contains(&"caller")
                    && names.contains(&"consume")
                    && names.iter().any(|n| n.ends_with("AuditService/Append"));
                all.then_some(spans)
            }
        },
    )
    .await;

    let server = spans
        .iter()
        .find(|s| s.name.ends_with("AuditService/Append"))
        .unwrap();
    let consumer_span = spans.iter().find(|s| s.span_id == consume_id).unwrap();
    assert_eq!(
        server.trace_id, trace_id,
        "the server continues the caller's trace"
    );
    assert_eq!(
        server.parent_span_id, caller_id,
        "the server span's parent is the caller"
    );
    assert_eq!(
        consumer_span.trace_id, trace_id,
        "the consumer continues the same trace"
    );
    assert_eq!(
        consumer_span.parent_span_id, server.span_id,
        "the consumer's parent is the server span that wrote the event"
    );

    shutdown.cancel();
    running.wait().await.unwrap();
}
