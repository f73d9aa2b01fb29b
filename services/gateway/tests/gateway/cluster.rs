//! The internal services started for real (SQLite files, the in-process bus), an
//! org-admin from auth's bootstrap, and gateways pointed at them.

use std::path::Path;
use std::sync::Arc;

use godel_bus::BusConfig;
use godel_cache::{Cache, CacheConfig};
use godel_gateway::{Dependencies, GatewayConfig, UpstreamsConfig};
use godel_identity::BearerInterceptor;
use godel_proto::auth::v1::auth_service_client::AuthServiceClient;
use godel_proto::auth::v1::authenticate_request::Credential;
use godel_proto::auth::v1::{AuthenticateRequest, CreateApiKeyRequest, CreateTeamRequest};
use godel_runtime::{RunningService, ServerConfig};
use godel_store::DatabaseConfig;
use godel_test_utils::redis::TestRedis;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub type AuthClient = AuthServiceClient<InterceptedService<Channel, BearerInterceptor>>;

/// Every permission a team member needs for the gateway's routes.
pub const MEMBER: &[&str] = &[
    "tasks:create",
    "tasks:read",
    "tasks:cancel",
    "plans:create",
    "plans:read",
    "plans:cancel",
    "sessions:read",
    "sessions:stop",
    "teams:read",
    "audit:read",
];

pub struct Cluster {
    pub shutdown: CancellationToken,
    pub auth: RunningService,
    pub scheduler: RunningService,
    pub orchestrator: RunningService,
    pub audit: RunningService,
    /// The org-admin API key from auth's bootstrap.
    pub admin_key: String,
    pub admin_team: String,
    pub redis: TestRedis,
    /// The bus the services publish on (in-process), given to the gateways.
    pub bus: Arc<dyn godel_bus::Bus>,
    _dir: tempfile::TempDir,
}

fn database(dir: &Path, service: &str) -> DatabaseConfig {
    DatabaseConfig {
        url: format!(
            "sqlite://{}?mode=rwc",
            dir.join(format!("{service}.db")).display()
        )
        .into(),
        ..DatabaseConfig::default()
    }
}

fn grpc(s: &RunningService) -> String {
    format!("http://{}", s.grpc_addr())
}

impl Cluster {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts the services, auth with the settings `configure` adjusts.
    pub async fn start_with(configure: impl FnOnce(&mut godel_auth::AuthConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let redis = TestRedis::new().await;
        let bus = godel_bus::connect(&BusConfig::default()).await.unwrap();
        let deps = || godel_backend::Dependencies { bus: bus.clone() };
        let shutdown = CancellationToken::new();

        let mut auth_config = godel_auth::AuthConfig {
            server: ServerConfig::local(),
            database: database(dir.path(), "auth"),
            ..Default::default()
        };
        configure(&mut auth_config);
        let admin = godel_auth::bootstrap(&auth_config).await.unwrap().unwrap();
        let auth = godel_auth::start(auth_config, deps(), shutdown.clone())
            .await
            .unwrap();
        let identity = godel_identity::IdentityConfig {
            auth_url: grpc(&auth),
            ..Default::default()
        };
        let scheduler = godel_scheduler::start(
            godel_scheduler::SchedulerConfig {
                server: ServerConfig::local(),
                database: database(dir.path(), "scheduler"),
                ..Default::default()
            },
            deps(),
            shutdown.clone(),
        )
        .await
        .unwrap();
        let mut orchestrator_config = godel_orchestrator::OrchestratorConfig {
            server: ServerConfig::local(),
            database: database(dir.path(), "orchestrator"),
            ..Default::default()
        }
        .with_data_dir(dir.path());
        orchestrator_config.identity = identity.clone();
        let orchestrator = godel_orchestrator::start(orchestrator_config, deps(), shutdown.clone())
            .await
            .unwrap();
        let audit = godel_audit::start(
            godel_audit::AuditConfig {
                server: ServerConfig::local(),
                database: database(dir.path(), "audit"),
                identity,
                ..Default::default()
            }
            .with_data_dir(dir.path()),
            deps(),
            shutdown.clone(),
        )
        .await
        .unwrap();
        Self {
            shutdown,
            auth,
            scheduler,
            orchestrator,
            audit,
            admin_key: admin.api_key.secret.clone(),
            admin_team: admin.team.id.to_string(),
            redis,
            bus,
            _dir: dir,
        }
    }

    /// A gateway config pointed at the services, rate limits in this test's Redis.
    pub fn gateway_config(&self) -> GatewayConfig {
        GatewayConfig {
            server: ServerConfig::local(),
            upstreams: UpstreamsConfig {
                auth: grpc(&self.auth),
                scheduler: grpc(&self.scheduler),
                orchestrator: grpc(&self.orchestrator),
                audit: grpc(&self.audit),
                ..Default::default()
            },
            cache: CacheConfig::redis(&self.redis.url, &self.redis.key_prefix),
            ..Default::default()
        }
    }

    /// Starts a gateway on `config` with the cache it names.
    pub async fn gateway(&self, config: GatewayConfig) -> Gateway {
        let cache = godel_cache::connect(&config.cache).await.unwrap();
        self.gateway_with(config, cache).await
    }

    /// Starts a gateway on `config` with `cache` for its rate limits.
    pub async fn gateway_with(&self, config: GatewayConfig, cache: Arc<dyn Cache>) -> Gateway {
        let deps = Dependencies {
            cache,
            bus: self.bus.clone(),
        };
        let running = godel_gateway::start(config, deps, self.shutdown.clone())
            .await
            .unwrap();
        Gateway {
            base: format!("http://{}", running.http_addr()),
            _running: running,
        }
    }

    /// An auth client acting with `api_key`'s access token.
    pub async fn auth_as(&self, api_key: &str) -> AuthClient {
        let token = self.token(api_key).await;
        let channel = Channel::from_shared(grpc(&self.auth))
            .unwrap()
            .connect()
            .await
            .unwrap();
        AuthServiceClient::with_interceptor(channel, BearerInterceptor::new(&token).unwrap())
    }

    /// The access token auth exchanges `api_key` for.
    pub async fn token(&self, api_key: &str) -> String {
        let mut auth = AuthServiceClient::connect(grpc(&self.auth)).await.unwrap();
        auth.authenticate(AuthenticateRequest {
            credential: Some(Credential::ApiKey(api_key.to_owned())),
            team_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .access_token
    }

    /// A new team; returns its id.
    pub async fn team(&self, name: &str) -> String {
        let mut admin = self.auth_as(&self.admin_key).await;
        admin
            .create_team(CreateTeamRequest {
                name: name.to_owned(),
                display_name: name.to_owned(),
            })
            .await
            .unwrap()
            .into_inner()
            .team
            .unwrap()
            .id
    }

    /// A new API key of `team` with `permissions` (and `org_roles`); returns (key id,
    /// secret).
    pub async fn api_key(
        &self,
        team: &str,
        permissions: &[&str],
        org_roles: &[&str],
    ) -> (String, String) {
        let mut admin = self.auth_as(&self.admin_key).await;
        let created = admin
            .create_api_key(CreateApiKeyRequest {
                team_id: team.to_owned(),
                name: format!("key-{}", uuid::Uuid::new_v4()),
                permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
                org_roles: org_roles.iter().map(|r| (*r).to_owned()).collect(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        (created.key.unwrap().id, created.secret)
    }

    /// A gateway config whose audit sink writes with a new `audit-writer` key.
    pub async fn audited_config(&self) -> GatewayConfig {
        let (_, secret) = self.api_key(&self.admin_team, &[], &["audit-writer"]).await;
        let mut config = self.gateway_config();
        config.audit.api_key = Some(secret.into());
        config.audit.flush_interval = std::time::Duration::from_millis(20);
        config
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A running gateway and its base URL.
pub struct Gateway {
    pub base: String,
    _running: RunningService,
}

impl Gateway {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}
