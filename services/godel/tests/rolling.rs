//! A rolling restart under load, in the production shape: two instances of every
//! service on PostgreSQL, NATS JetStream and Redis, two gateways balancing over the
//! internal services' instances, and a client submitting and reading tasks through
//! the gateways. Every instance is restarted in turn (a graceful shutdown, then a new
//! instance on the same ports, as a Kubernetes rolling update replaces a pod). No
//! request may fail beyond the client's retry policy, and every submitted task must
//! succeed.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use godel_bus::BusConfig;
use godel_cache::CacheConfig;
use godel_identity::BearerInterceptor;
use godel_proto::auth::v1::auth_service_client::AuthServiceClient;
use godel_proto::auth::v1::authenticate_request::Credential;
use godel_proto::auth::v1::{AuthenticateRequest, CreateApiKeyRequest, CreateTeamRequest};
use godel_runtime::{RunningService, ServerConfig};
use godel_store::DatabaseConfig;
use godel_store::sea_orm::ConnectionTrait;
use godel_test_utils::eventually;
use godel_test_utils::git::init_repo;
use godel_test_utils::nats::TestNats;
use godel_test_utils::postgres::TestDb;
use godel_test_utils::redis::TestRedis;
use godel_types::OrchestratorId;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Instances of each internal service, and gateways.
const REPLICAS: usize = 2;
/// The client's retry policy: attempts per request, and the pause between them.
const ATTEMPTS: u32 = 10;
const BACKOFF: Duration = Duration::from_millis(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    Auth,
    Scheduler,
    Orchestrator,
    Audit,
    Gateway,
}

/// A free port on 127.0.0.1, kept for an instance across its restarts.
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn server() -> ServerConfig {
    ServerConfig {
        http_addr: free_addr(),
        grpc_addr: free_addr(),
        shutdown_grace: Duration::from_secs(20),
        // Readiness is off this long before the listeners close: the gateways' probes
        // (every 200 ms) take the instance out of their balancers first.
        drain_delay: Duration::from_secs(1),
    }
}

fn grpc(server: &ServerConfig) -> String {
    format!("http://{}", server.grpc_addr)
}

/// One instance: where it listens, and the running service while it runs.
struct Instance {
    role: Role,
    index: usize,
    server: ServerConfig,
    shutdown: CancellationToken,
    running: Option<RunningService>,
}

struct Env {
    db: TestDb,
    _nats: TestNats,
    redis: TestRedis,
    bus: BusConfig,
    dir: tempfile::TempDir,
    orchestrator_ids: [OrchestratorId; REPLICAS],
    servers: BTreeMap<(Role, usize), ServerConfig>,
    /// The gateways' `audit-writer` key.
    audit_key: Option<String>,
}

impl Env {
    fn database(&self, service: &str) -> DatabaseConfig {
        DatabaseConfig {
            url: self.db.url.clone().into(),
            schema: Some(format!("{}_{service}", self.db.schema.as_deref().unwrap())),
            max_connections: 4,
            ..DatabaseConfig::default()
        }
    }

    fn urls(&self, role: Role) -> String {
        (0..REPLICAS)
            .map(|i| grpc(&self.servers[&(role, i)]))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn identity(&self) -> godel_identity::IdentityConfig {
        godel_identity::IdentityConfig {
            auth_url: grpc(&self.servers[&(Role::Auth, 0)]),
            ..Default::default()
        }
    }

    fn auth_config(&self, server: ServerConfig) -> godel_auth::AuthConfig {
        godel_auth::AuthConfig {
            server,
            database: self.database("auth"),
            bus: self.bus.clone(),
            ..Default::default()
        }
    }

    async fn start(&self, role: Role, index: usize, shutdown: CancellationToken) -> RunningService {
        let server = self.servers[&(role, index)].clone();
        match role {
            Role::Auth => {
                let config = self.auth_config(server);
                let deps = godel_auth::Dependencies::connect(&config.bus)
                    .await
                    .unwrap();
                godel_auth::start(config, deps, shutdown).await.unwrap()
            }
            Role::Scheduler => {
                let config = godel_scheduler::SchedulerConfig {
                    server,
                    database: self.database("scheduler"),
                    bus: self.bus.clone(),
                    ..Default::default()
                };
                let deps = godel_scheduler::Dependencies::connect(&config.bus)
                    .await
                    .unwrap();
                godel_scheduler::start(config, deps, shutdown)
                    .await
                    .unwrap()
            }
            Role::Orchestrator => {
                let mut config = godel_orchestrator::OrchestratorConfig {
                    server,
                    database: self.database("orchestrator"),
                    bus: self.bus.clone(),
                    ..Default::default()
                }
                .with_data_dir(&self.dir.path().join(format!("orchestrator-{index}")));
                config.identity = self.identity();
                config.sessions.allow_local_repositories = true;
                config.sessions.sim_agent_path = sim_agent();
                config.intake = godel_orchestrator::IntakeConfig {
                    enabled: true,
                    // Each orchestrator leases through its own scheduler instance.
                    scheduler_endpoint: grpc(&self.servers[&(Role::Scheduler, index)]),
                    orchestrator_id: Some(self.orchestrator_ids[index]),
                    drain_timeout: Duration::from_secs(5),
                    ..Default::default()
                };
                let deps = godel_orchestrator::Dependencies::connect(&config.bus)
                    .await
                    .unwrap();
                godel_orchestrator::start(config, deps, shutdown)
                    .await
                    .unwrap()
            }
            Role::Audit => {
                // Replicas share the checkpoint signing and pseudonym keys.
                let config = godel_audit::AuditConfig {
                    server,
                    database: self.database("audit"),
                    bus: self.bus.clone(),
                    identity: self.identity(),
                    ..Default::default()
                }
                .with_data_dir(&self.dir.path().join("audit"));
                let deps = godel_audit::Dependencies::connect(&config.bus)
                    .await
                    .unwrap();
                godel_audit::start(config, deps, shutdown).await.unwrap()
            }
            Role::Gateway => {
                let mut config = godel_gateway::GatewayConfig {
                    server,
                    upstreams: godel_gateway::UpstreamsConfig {
                        auth: self.urls(Role::Auth),
                        scheduler: self.urls(Role::Scheduler),
                        orchestrator: self.urls(Role::Orchestrator),
                        audit: self.urls(Role::Audit),
                        probe_interval: Duration::from_millis(200),
                    },
                    cache: CacheConfig::redis(&self.redis.url, &self.redis.key_prefix),
                    bus: self.bus.clone(),
                    ..Default::default()
                };
                config.rate_limit.per_minute = 1_000_000;
                config.audit.api_key = self.audit_key.clone().map(Into::into);
                let deps = godel_gateway::Dependencies::connect(&config).await.unwrap();
                godel_gateway::start(config, deps, shutdown).await.unwrap()
            }
        }
    }
}

/// The simulated agent, built beside the `godel` binary by the workspace build.
fn sim_agent() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_godel"))
        .parent()
        .unwrap()
        .join("godel-sim-agent");
    assert!(
        path.exists(),
        "{} is missing: build the workspace (cargo build --workspace)",
        path.display()
    );
    path
}

async fn wait_ready(instance: &Instance) {
    let url = format!(
        "http://{}/readyz",
        instance.running.as_ref().unwrap().http_addr()
    );
    eventually(
        &format!("{:?} {} ready", instance.role, instance.index),
        Duration::from_secs(30),
        || {
            let url = url.clone();
            async move {
                let response = reqwest::get(&url).await.ok()?;
                (response.status() == StatusCode::OK).then_some(())
            }
        },
    )
    .await;
}

/// What the client saw.
#[derive(Debug, Default)]
struct Outcome {
    requests: u64,
    retried: u64,
    /// Why attempts were retried: a status, or `connect`/`other` for transport errors.
    retry_causes: BTreeMap<String, u64>,
    /// Requests that still failed after every attempt: (what, last error).
    failed: Vec<(String, String)>,
    tasks: Vec<String>,
}

/// The load's client: the gateways, its API key and what it saw.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    gateways: Vec<String>,
    key: String,
    outcome: Arc<Mutex<Outcome>>,
}

impl Client {
    /// Sends one request under the retry policy, starting at gateway `start` and
    /// moving to the next on every retry; a connection error or a 502/503/504 is
    /// retried, anything else is the answer.
    async fn call(
        &self,
        start: usize,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Option<Value> {
        let Self {
            http,
            gateways,
            key,
            outcome,
        } = self;
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                outcome.lock().unwrap().retried += 1;
                tokio::time::sleep(BACKOFF).await;
            }
            let base = &gateways[(start + attempt as usize) % gateways.len()];
            let mut request = http
                .request(method.clone(), format!("{base}{path}"))
                .bearer_auth(key);
            if let Some(body) = body {
                request = request.json(body);
            }
            match request.send().await {
                Ok(response) if response.status().is_success() => {
                    outcome.lock().unwrap().requests += 1;
                    return Some(response.json().await.unwrap());
                }
                Ok(response)
                    if matches!(
                        response.status(),
                        StatusCode::BAD_GATEWAY
                            | StatusCode::SERVICE_UNAVAILABLE
                            | StatusCode::GATEWAY_TIMEOUT
                    ) =>
                {
                    let status = response.status();
                    *outcome
                        .lock()
                        .unwrap()
                        .retry_causes
                        .entry(status.as_u16().to_string())
                        .or_default() += 1;
                    last = format!("{status}: {}", response.text().await.unwrap_or_default());
                }
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    outcome
                        .lock()
                        .unwrap()
                        .failed
                        .push((format!("{method} {path}"), format!("{status}: {text}")));
                    return None;
                }
                Err(e) => {
                    let cause = if e.is_connect() { "connect" } else { "other" };
                    *outcome
                        .lock()
                        .unwrap()
                        .retry_causes
                        .entry(cause.to_owned())
                        .or_default() += 1;
                    last = format!("{e}");
                }
            }
        }
        outcome
            .lock()
            .unwrap()
            .failed
            .push((format!("{method} {path}"), last));
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_of_every_service_under_load_drops_no_request_and_loses_no_task() {
    let db = TestDb::postgres().await;
    let nats = TestNats::new().await;
    let redis = TestRedis::new().await;
    let bus = BusConfig::nats(&nats.url, &nats.stream_name, &nats.subject_prefix);
    let mut servers = BTreeMap::new();
    for role in [
        Role::Auth,
        Role::Scheduler,
        Role::Orchestrator,
        Role::Audit,
        Role::Gateway,
    ] {
        for index in 0..REPLICAS {
            servers.insert((role, index), server());
        }
    }
    let mut env = Env {
        db,
        _nats: nats,
        redis,
        bus,
        dir: tempfile::tempdir().unwrap(),
        orchestrator_ids: [OrchestratorId::new(), OrchestratorId::new()],
        servers,
        audit_key: None,
    };
    let admin = godel_auth::bootstrap(&env.auth_config(env.servers[&(Role::Auth, 0)].clone()))
        .await
        .unwrap()
        .expect("a new database bootstraps an admin");

    let mut instances: Vec<Instance> = Vec::new();
    let start_role = |role: Role| (0..REPLICAS).map(move |index| (role, index));
    // The internal services first; the gateways once their audit key exists.
    for (role, index) in [Role::Auth, Role::Scheduler, Role::Orchestrator, Role::Audit]
        .into_iter()
        .flat_map(start_role)
    {
        let shutdown = CancellationToken::new();
        let running = env.start(role, index, shutdown.clone()).await;
        instances.push(Instance {
            role,
            index,
            server: env.servers[&(role, index)].clone(),
            shutdown,
            running: Some(running),
        });
    }
    for instance in &instances {
        wait_ready(instance).await;
    }

    // A team, a developer's API key for the load and an audit-writer key for the
    // gateways, through auth.
    let auth_url = grpc(&env.servers[&(Role::Auth, 0)]);
    let admin_token = AuthServiceClient::connect(auth_url.clone())
        .await
        .unwrap()
        .authenticate(AuthenticateRequest {
            credential: Some(Credential::ApiKey(admin.api_key.secret.clone())),
            team_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .access_token;
    let channel = tonic::transport::Channel::from_shared(auth_url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut auth =
        AuthServiceClient::with_interceptor(channel, BearerInterceptor::new(&admin_token).unwrap());
    let team = auth
        .create_team(CreateTeamRequest {
            name: "rolling".into(),
            display_name: "Rolling".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .team
        .unwrap()
        .id;
    let key = |permissions: &[&str], org_roles: &[&str], team: &str| {
        let request = CreateApiKeyRequest {
            team_id: team.to_owned(),
            name: format!("key-{}", OrchestratorId::new()),
            permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
            org_roles: org_roles.iter().map(|r| (*r).to_owned()).collect(),
            ..Default::default()
        };
        let mut auth = auth.clone();
        async move {
            auth.create_api_key(request)
                .await
                .unwrap()
                .into_inner()
                .secret
        }
    };
    let load_key = key(&["tasks:create", "tasks:read", "teams:read"], &[], &team).await;
    env.audit_key = Some(key(&[], &["audit-writer"], &admin.team.id.to_string()).await);

    for index in 0..REPLICAS {
        let shutdown = CancellationToken::new();
        let running = env.start(Role::Gateway, index, shutdown.clone()).await;
        let instance = Instance {
            role: Role::Gateway,
            index,
            server: env.servers[&(Role::Gateway, index)].clone(),
            shutdown,
            running: Some(running),
        };
        wait_ready(&instance).await;
        instances.push(instance);
    }
    let gateways: Vec<String> = (0..REPLICAS)
        .map(|i| format!("http://{}", env.servers[&(Role::Gateway, i)].http_addr))
        .collect();

    let repo = env.dir.path().join("repo");
    init_repo(&repo);

    // The load: every 100 ms a task is submitted (with an idempotency key, so a retried
    // submission is the same task), read back, and the team read — through the two
    // gateways in turn; at most `MAX_IN_FLIGHT` iterations at once, so a slow machine
    // sheds load at the client instead of piling it up.
    const MAX_IN_FLIGHT: usize = 16;
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let client = Client {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
        gateways: gateways.clone(),
        key: load_key.clone(),
        outcome: outcome.clone(),
    };
    let stop_load = Arc::new(AtomicBool::new(false));
    let load = {
        let stop_load = stop_load.clone();
        let team = team.clone();
        let repo = repo.display().to_string();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(100));
            let mut n = 0usize;
            let mut inflight = tokio::task::JoinSet::new();
            while !stop_load.load(Ordering::SeqCst) {
                ticks.tick().await;
                while inflight.try_join_next().is_some() {}
                if inflight.len() >= MAX_IN_FLIGHT {
                    continue;
                }
                n += 1;
                let (client, team, repo) = (client.clone(), team.clone(), repo.clone());
                inflight.spawn(async move {
                    let body = json!({
                        "task_type": "implement",
                        "idempotency_key": format!("rolling-{n}"),
                        "payload": {
                            "repository": repo,
                            "adapter": "sim",
                            "prompt": "change something",
                            "sim": {"edits": 1, "duration_ms": 50},
                        },
                    });
                    let path = format!("/v1/teams/{team}/tasks");
                    let Some(task) = client
                        .call(n, reqwest::Method::POST, &path, Some(&body))
                        .await
                    else {
                        return;
                    };
                    let id = task["task"]["id"].as_str().unwrap().to_owned();
                    client.outcome.lock().unwrap().tasks.push(id.clone());
                    let path = format!("/v1/teams/{team}/tasks/{id}");
                    client.call(n + 1, reqwest::Method::GET, &path, None).await;
                    let path = format!("/v1/teams/{team}");
                    client.call(n, reqwest::Method::GET, &path, None).await;
                });
            }
            while inflight.join_next().await.is_some() {}
        })
    };

    // The rolling restart: one instance at a time, each back and ready before the
    // next goes, as `maxUnavailable: 0` does.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for instance in &mut instances {
        instance.shutdown.cancel();
        tokio::time::timeout(
            Duration::from_secs(30),
            instance.running.take().unwrap().wait(),
        )
        .await
        .unwrap_or_else(|_| panic!("{:?} {} stops in time", instance.role, instance.index))
        .unwrap_or_else(|e| panic!("{:?} {} stopped with {e}", instance.role, instance.index));
        instance.shutdown = CancellationToken::new();
        instance.running = Some(
            env.start(instance.role, instance.index, instance.shutdown.clone())
                .await,
        );
        assert_eq!(
            instance.running.as_ref().unwrap().grpc_addr(),
            instance.server.grpc_addr,
            "the new instance listens where the old one did"
        );
        wait_ready(instance).await;
        // The gateways' probes see it serving again before the next one goes.
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_load.store(true, Ordering::SeqCst);
    load.await.unwrap();

    let (requests, retried, causes, failed, tasks) = {
        let outcome = outcome.lock().unwrap();
        (
            outcome.requests,
            outcome.retried,
            outcome.retry_causes.clone(),
            outcome.failed.clone(),
            outcome.tasks.clone(),
        )
    };
    eprintln!(
        "rolling restart: {requests} requests answered, {retried} retries ({causes:?}), {} tasks",
        tasks.len()
    );
    assert!(
        failed.is_empty(),
        "requests failed beyond the retry policy: {failed:?}"
    );
    assert!(tasks.len() > 100, "the load ran: {} tasks", tasks.len());

    // Every submitted task runs to success: none was lost in the restarts.
    let http = reqwest::Client::new();
    for id in &tasks {
        let url = format!("{}/v1/teams/{team}/tasks/{id}", gateways[0]);
        let key = load_key.clone();
        let http = http.clone();
        let task = eventually(&format!("task {id} ends"), Duration::from_secs(120), || {
            let (url, key, http) = (url.clone(), key.clone(), http.clone());
            async move {
                let task: Value = http
                    .get(&url)
                    .bearer_auth(&key)
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                let state = task["task"]["state"].as_str()?.to_owned();
                matches!(
                    state.as_str(),
                    "TASK_STATE_SUCCEEDED" | "TASK_STATE_DEAD_LETTERED" | "TASK_STATE_CANCELLED"
                )
                .then_some(task)
            }
        })
        .await;
        assert_eq!(
            task["task"]["state"], "TASK_STATE_SUCCEEDED",
            "task {id}: {task}"
        );
    }

    for instance in &mut instances {
        instance.shutdown.cancel();
    }
    for instance in &mut instances {
        if let Some(running) = instance.running.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), running.wait()).await;
        }
    }
    let conn = godel_store::connect(&DatabaseConfig {
        url: env.db.url.clone().into(),
        ..DatabaseConfig::default()
    })
    .await
    .unwrap();
    for name in ["auth", "scheduler", "orchestrator", "audit"] {
        let schema = format!("{}_{name}", env.db.schema.as_deref().unwrap());
        conn.conn()
            .execute_unprepared(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await
            .unwrap();
    }
    env.db.cleanup().await;
}
