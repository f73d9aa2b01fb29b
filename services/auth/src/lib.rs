//! The auth service: identity — OIDC sign-in, users, teams, roles and RBAC decisions, Godel-issued tokens and API keys, quotas.
//!
//! Owns (DESIGN.md §2): users, teams, members, roles, refresh-token families, API keys, quotas and signing keys. A library with [`serve`] (production: its own
//! database and NATS) and [`start`] (dependencies passed in, as `godel up` does with
//! the in-process bus); `main.rs` only calls [`serve`].
//!
//! The identity core is [`Auth`], a handle on the service's database:
//! - [`permission`]: the permission catalog and the built-in roles
//!   (`docs/permissions.md`), defined in `godel-identity` and re-exported here;
//! - [`directory`]: teams, users (provisioned by `(issuer, subject)`), memberships,
//!   custom roles;
//! - [`authz`]: [`Auth::authorize`] — may a caller use a permission in a team;
//! - [`tokens`]: Ed25519-signed access JWTs, signing-key rotation, the JWKS;
//! - [`refresh`]: rotating refresh tokens with reuse detection, logout;
//! - [`api_keys`]: `gdl_…` keys, stored hashed, team- and permission-scoped;
//! - [`quotas`]: per-team limits;
//! - [`oidc`]: single sign-on with OpenID Connect identity providers — sign-in,
//!   provisioning by `(iss, sub)`, group → role mappings;
//! - [`rotation`]: the signing-key rotation schedule, safe with several replicas;
//! - [`bootstrap`](mod@bootstrap): the first org-admin of a fresh deployment;
//! - [`grpc`]: the gRPC `AuthService` over all of the above, checking each admin
//!   call's caller with `godel-identity`.
//!
//! Every change to teams, members, roles, keys and quotas writes an `IamEvent` to
//! the outbox in the same transaction.

pub mod api_keys;
pub mod authz;
pub mod bootstrap;
mod config;
pub mod directory;
mod entity;
pub mod grpc;
mod migrations;
pub mod oidc;
pub mod quotas;
pub mod refresh;
pub mod rotation;
mod store;
pub mod tokens;

use godel_backend::{Backend, BackendError};
use godel_runtime::{RunningService, Service};
use godel_store::StoreError;
use tokio_util::sync::CancellationToken;

pub use bootstrap::BootstrapAdmin;
pub use config::{AuthConfig, TokenConfig};
pub use godel_backend::Dependencies;
pub use godel_identity::permission;
pub use migrations::Migrator;
pub use oidc::Oidc;
pub use oidc::config::{ClientAuth, GroupMapping, OidcConfig, ProviderConfig};
pub use store::{Auth, Principal};

/// The service name: health-check name, metrics label, outbox relay name.
pub const SERVICE: &str = "auth";

/// Why the auth service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the auth service cannot start")]
    Backend(#[from] BackendError),
    #[error("the auth service failed")]
    Runtime(#[source] godel_runtime::RuntimeError),
    #[error("cannot open the auth database")]
    Database(#[source] StoreError),
    #[error("creating the first admin failed")]
    Bootstrap(#[source] godel_error::Error),
    #[error("creating the first token signing key failed")]
    SigningKey(#[source] godel_error::Error),
    #[error("invalid setting `tokens.signing_key_encryption_key`")]
    SigningKeyEncryption(#[source] tokens::seal::SealError),
    #[error("cannot set up single sign-on")]
    Oidc(#[source] oidc::OidcError),
}

/// Fails on settings that would only fail later, at the first token.
fn check(config: &AuthConfig) -> Result<(), Error> {
    if let Some(key) = &config.tokens.signing_key_encryption_key {
        tokens::seal::parse_key(key.expose()).map_err(Error::SigningKeyEncryption)?;
    }
    config
        .oidc
        .check()
        .map_err(|e| Error::Oidc(oidc::OidcError::Config(e)))?;
    Ok(())
}

/// Runs the service until `shutdown` is cancelled and it has drained.
pub async fn serve(config: AuthConfig, shutdown: CancellationToken) -> Result<(), Error> {
    let deps = Dependencies::connect(&config.bus).await?;
    start(config, deps, shutdown)
        .await?
        .wait()
        .await
        .map_err(Error::Runtime)
}

/// Opens and migrates the database, makes sure a token signing key exists, then
/// starts the listeners (serving the gRPC `AuthService`, see [`grpc`]), the
/// outbox relay and the signing-key rotation schedule ([`rotation`]). Returns once the service is listening; [`RunningService::wait`]
/// waits for its end.
pub async fn start(
    config: AuthConfig,
    deps: Dependencies,
    shutdown: CancellationToken,
) -> Result<RunningService, Error> {
    check(&config)?;
    let backend = Backend::open::<migrations::Migrator>(SERVICE, &config.database, deps).await?;
    let auth = Auth::new(
        backend.db().clone(),
        Some(backend.notifier()),
        config.tokens.clone(),
    );
    auth.ensure_signing_key().await.map_err(Error::SigningKey)?;
    let oidc = Oidc::new(auth.clone(), &config.oidc).map_err(Error::Oidc)?;
    let rotate_every = config.tokens.rotate_every;
    let rotating = auth.clone();
    let mut service = Service::new(SERVICE, config.server)
        .reflection(godel_proto::FILE_DESCRIPTOR_SET)
        .grpc_service(grpc::server(auth, oidc));
    if !rotate_every.is_zero() {
        service = service.background("signing-key rotation", move |stop| async move {
            rotation::run(rotating, rotate_every, stop).await;
            Ok(())
        });
    }
    backend
        .install(service)
        .start(shutdown)
        .await
        .map_err(Error::Runtime)
}

/// For `godel up`: on an empty auth database, creates the first org-admin user, the
/// `default` team and an org-admin API key, and returns them (print the key's
/// secret once; it is stored only hashed). Returns `None` on every later start.
/// Opens and migrates the database itself; call it before [`start`]. The IAM events
/// it writes are published by the service's outbox relay once it runs.
pub async fn bootstrap(config: &AuthConfig) -> Result<Option<BootstrapAdmin>, Error> {
    check(config)?;
    let db = godel_store::connect(&config.database)
        .await
        .map_err(Error::Database)?;
    godel_store::migrate::<Migrator>(&db)
        .await
        .map_err(Error::Database)?;
    let auth = Auth::new(db.clone(), None, config.tokens.clone());
    let admin = auth.bootstrap().await.map_err(Error::Bootstrap);
    if let Err(e) = db.close().await {
        tracing::warn!(error = %e, "closing the bootstrap connection failed");
    }
    admin
}
