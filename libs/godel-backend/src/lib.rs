//! The wiring every stateful Godel service (auth, scheduler, orchestrator, audit)
//! shares: its own database, opened and migrated; the bus; the outbox relay that
//! publishes what its transactions wrote (DESIGN.md §3 invariant 1); and readiness
//! checks that really ping both.
//!
//! ```ignore
//! let backend = Backend::open::<Migrator>(SERVICE, &config.database, deps.bus).await?;
//! let notifier = backend.notifier(); // hand to request handlers: notify after commit
//! backend.install(Service::new(SERVICE, config.server)).start(shutdown).await?;
//! // in a handler, inside the request's span:
//! db.transaction(|txn| Box::pin(async move {
//!     write_the_change(txn).await?;
//!     godel_store::outbox::enqueue(txn, &[outbox_event(subject, payload)]).await
//! })).await?;
//! notifier.notify();
//! ```

use std::sync::Arc;

use godel_bus::{Bus, BusConfig, BusError, Headers, Subject};
use godel_runtime::{Service, readiness_check};
use godel_store::sea_orm_migration::MigratorTrait;
use godel_store::{
    DatabaseConfig, Db, OutboxEvent, OutboxRelay, RelayConfig, RelayNotifier, StoreError,
};

/// Why a service's backend could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot open the {service} database")]
    Database {
        service: &'static str,
        #[source]
        source: StoreError,
    },
    #[error("cannot migrate the {service} database")]
    Migrate {
        service: &'static str,
        #[source]
        source: StoreError,
    },
    #[error("cannot connect to the bus")]
    Bus(#[source] BusError),
}

/// What a stateful service is given rather than building itself: shared by every
/// service in `godel up`, built from the configuration in production.
#[derive(Clone)]
pub struct Dependencies {
    pub bus: Arc<dyn Bus>,
}

impl Dependencies {
    /// Connects to the bus `config` names (NATS in production).
    pub async fn connect(config: &BusConfig) -> Result<Self, BackendError> {
        let bus = godel_bus::connect(config)
            .await
            .map_err(BackendError::Bus)?;
        Ok(Self { bus })
    }
}

/// An event for the outbox, carrying the current span's trace context
/// (`traceparent`) so whoever consumes it continues the trace of the request that
/// caused it (DESIGN.md §3 invariant 8). Enqueue it in the same transaction as the
/// change it announces (`godel_store::outbox::enqueue`).
pub fn outbox_event(subject: Subject, payload: impl Into<bytes::Bytes>) -> OutboxEvent {
    let mut headers = Headers::new();
    godel_telemetry::inject_into(&mut headers);
    OutboxEvent::new(subject, headers, payload)
}

/// An outbox event whose payload is a CloudEvent (`dev.godel.<area>.<event>.v1`, the
/// event being `subject`'s last token) carrying `data` as proto3 JSON, with the same
/// id as the outbox row (so `Nats-Msg-Id` and the CloudEvents `id` agree) and the
/// current trace context. `resource` is the CloudEvents `subject`: the id of what
/// changed. The one place services turn a state change into a published event.
pub fn cloud_event<T: serde::Serialize>(
    subject: Subject,
    source: &str,
    area: &str,
    resource: &str,
    time: chrono::DateTime<chrono::Utc>,
    data: &T,
) -> Result<OutboxEvent, godel_error::Error> {
    let event = subject.event().to_owned();
    cloud_event_named(subject, &event, source, area, resource, time, data)
}

/// Like [`cloud_event`], for subjects whose last token is not the event's name (it
/// names a recipient, as `godel.v1.dispatch.<orchestrator_id>` does): the CloudEvent
/// type is `dev.godel.<area>.<event>.v1`.
pub fn cloud_event_named<T: serde::Serialize>(
    subject: Subject,
    event: &str,
    source: &str,
    area: &str,
    resource: &str,
    time: chrono::DateTime<chrono::Utc>,
    data: &T,
) -> Result<OutboxEvent, godel_error::Error> {
    let event_type = godel_proto::cloudevent::event_type(area, event);
    let mut event = outbox_event(subject, Vec::new());
    let payload =
        godel_proto::cloudevent::encode(event.id, source, &event_type, resource, time, data)
            .map_err(|source| {
                tracing::error!(error = %source, event_type, "cannot encode an event");
                godel_error::Error::internal(format!("cannot encode the {event_type} event"))
            })?;
    event.payload = payload.into();
    Ok(event)
}

/// A service's open database, its bus and its outbox relay.
pub struct Backend {
    db: Db,
    bus: Arc<dyn Bus>,
    relay: OutboxRelay,
}

impl Backend {
    /// Connects to the service's database and applies `M`'s pending migrations.
    pub async fn open<M: MigratorTrait>(
        service: &'static str,
        database: &DatabaseConfig,
        deps: Dependencies,
    ) -> Result<Self, BackendError> {
        let db = godel_store::connect(database)
            .await
            .map_err(|source| BackendError::Database { service, source })?;
        godel_store::migrate::<M>(&db)
            .await
            .map_err(|source| BackendError::Migrate { service, source })?;
        let relay = OutboxRelay::new(db.clone(), deps.bus.clone(), RelayConfig::new(service));
        Ok(Self {
            db,
            bus: deps.bus,
            relay,
        })
    }

    /// The database, for the service's own stores.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The bus, for services that also consume.
    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.bus
    }

    /// Wakes the outbox relay; call after committing a transaction that enqueued events.
    pub fn notifier(&self) -> RelayNotifier {
        self.relay.notifier()
    }

    /// Adds the `database` and `bus` readiness checks and the outbox relay (as a
    /// background task, stopped during shutdown) to `service`.
    pub fn install(self, service: Service) -> Service {
        let Self { db, bus, relay } = self;
        service
            .readiness(readiness_check("database", move || {
                let db = db.clone();
                async move { db.ping().await }
            }))
            .readiness(readiness_check("bus", move || {
                let bus = bus.clone();
                async move { bus.check().await }
            }))
            .background("outbox-relay", move |stop| async move {
                relay.run(stop).await;
                Ok(())
            })
    }
}
