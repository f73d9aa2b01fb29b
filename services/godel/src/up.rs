//! `godel up`: the five services in one process, on SQLite and the in-process bus and
//! cache. The same service libraries as in production (DESIGN.md §3 invariant 10);
//! only their dependencies differ.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use godel_bus::BusConfig;
use godel_cache::CacheConfig;
use godel_config::Secret;
use godel_runtime::{RunningService, ServerConfig};
use godel_store::DatabaseConfig;
use godel_telemetry::{LogFormat, TelemetryConfig};
use godel_types::OrchestratorId;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cli::UpArgs;

/// Settings of `godel up` (layered like every Godel config: defaults, `--config`
/// file, `GODEL_*` environment, `--set`, then the dedicated flags).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpConfig {
    /// Data directory; `None` = the platform default (see `godel up --help`).
    pub data_dir: Option<PathBuf>,
    /// Address every service listens on.
    pub host: IpAddr,
    /// Gateway HTTP on `base_port`, then each service's HTTP and gRPC ports; 0 = free ports.
    pub base_port: u16,
    /// How long Ctrl-C may take to stop everything.
    #[serde(with = "godel_config::duration")]
    pub shutdown_grace: Duration,
    pub telemetry: TelemetryConfig,
    /// Single sign-on (auth's `oidc`). With providers, the gateway serves `/auth` at
    /// `http://<host>:<base_port>`, the redirect URI to register being
    /// `http://<host>:<base_port>/auth/callback`.
    pub oidc: godel_auth::OidcConfig,
    /// The real agent CLIs sessions run and the model providers Godel's LLM proxy
    /// forwards to (the orchestrator's `sessions.pi`/`claude_code`/`codex` and
    /// `proxy.providers`).
    pub agents: AgentsConfig,
}

/// Agent CLIs and model providers for `godel up`'s sessions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentsConfig {
    /// Pi (`pi` on the PATH by default); talks to the `openai` provider.
    pub pi: godel_orchestrator::AgentCli,
    /// Claude Code (`claude`); talks to the `anthropic` provider.
    pub claude_code: godel_orchestrator::AgentCli,
    /// Codex (`codex`); talks to the `openai` provider.
    pub codex: godel_orchestrator::AgentCli,
    /// Where each provider's API is (`openai`: `https://api.openai.com`,
    /// `anthropic`: `https://api.anthropic.com`).
    pub providers: std::collections::BTreeMap<String, godel_orchestrator::ProviderUpstream>,
    /// The model the LLM planner asks — through the LLM proxy, as the person
    /// planning, with their team's `openai` key. A team without that key gets the
    /// deterministic planner, and is told why.
    pub planner_model: String,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        let sessions = godel_orchestrator::SessionsConfig::default();
        Self {
            planner_model: sessions.pi.model.clone(),
            pi: sessions.pi,
            claude_code: sessions.claude_code,
            codex: sessions.codex,
            providers: godel_orchestrator::ProxyConfig::default().providers,
        }
    }
}

impl Default for UpConfig {
    fn default() -> Self {
        Self {
            data_dir: None,
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            base_port: 7700,
            shutdown_grace: Duration::from_secs(10),
            telemetry: TelemetryConfig {
                log_level: "info,opentelemetry=warn,sqlx=warn,sea_orm=warn,sea_orm_migration=warn"
                    .to_owned(),
                log_format: LogFormat::Pretty,
                service_name: "godel".to_owned(),
                ..TelemetryConfig::default()
            },
            oidc: godel_auth::OidcConfig::default(),
            agents: AgentsConfig::default(),
        }
    }
}

impl UpConfig {
    /// Where the orchestrator's LLM proxy listens: after the services' ports, or a
    /// free port (chosen now, so the scheduler's planner knows it before the
    /// orchestrator starts).
    fn proxy_addr(&self) -> anyhow::Result<SocketAddr> {
        if self.base_port != 0 {
            return Ok(SocketAddr::new(self.host, self.base_port + 10));
        }
        let probe = std::net::TcpListener::bind(SocketAddr::new(self.host, 0))
            .context("cannot find a free port for the LLM proxy")?;
        Ok(probe.local_addr()?)
    }

    /// The listeners of the `index`-th service (gateway 0, auth 1, …).
    fn server(&self, index: u16) -> ServerConfig {
        let port = |offset: u16| {
            if self.base_port == 0 {
                0
            } else {
                self.base_port + 2 * index + offset
            }
        };
        ServerConfig {
            http_addr: SocketAddr::new(self.host, port(0)),
            grpc_addr: SocketAddr::new(self.host, port(1)),
            shutdown_grace: self.shutdown_grace,
            drain_delay: Duration::ZERO,
        }
    }

    /// The gateway's sign-in settings: none without identity providers, else its own
    /// loopback origin with cookies lacking `Secure` (plain http on this machine).
    fn login(&self) -> anyhow::Result<godel_gateway::LoginConfig> {
        if self.oidc.providers.is_empty() {
            return Ok(godel_gateway::LoginConfig::default());
        }
        if self.base_port == 0 || !self.host.is_loopback() {
            anyhow::bail!(
                "single sign-on (`oidc.providers`) in `godel up` needs a loopback `host` and a \
                 fixed `base_port`: the providers' redirect URI names the gateway's address"
            );
        }
        let host = match self.host {
            IpAddr::V6(ip) => format!("[{ip}]"),
            IpAddr::V4(ip) => ip.to_string(),
        };
        Ok(godel_gateway::LoginConfig {
            public_url: Some(format!("http://{host}:{}", self.base_port)),
            secure_cookies: false,
            ..Default::default()
        })
    }

    fn database(&self, data_dir: &Path, service: &str) -> DatabaseConfig {
        let file = data_dir.join(format!("{service}.db"));
        DatabaseConfig {
            url: Secret::new(format!("sqlite://{}?mode=rwc", file.display())),
            schema: None,
            ..DatabaseConfig::default()
        }
    }
}

/// Runs `godel up` until Ctrl-C (or SIGTERM) and a clean shutdown.
pub fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    let mut config: UpConfig = godel_config::load(&args.config)?;
    if let Some(dir) = args.data_dir {
        config.data_dir = Some(dir);
    }
    if let Some(port) = args.base_port {
        config.base_port = port;
    }
    if args.config.dump_config {
        print!("{}", godel_config::dump(&config)?);
        return Ok(ExitCode::SUCCESS);
    }
    if config.base_port > u16::MAX - 10 {
        anyhow::bail!(
            "base_port {} leaves no room for ten ports",
            config.base_port
        );
    }
    let data_dir = match &config.data_dir {
        Some(dir) => dir.clone(),
        None => default_data_dir()?,
    };
    create_data_dir(&data_dir)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let telemetry = godel_telemetry::init(&config.telemetry)?;
        let shutdown = godel_runtime::signals::shutdown_token()?;
        let result = up(&config, &data_dir, shutdown).await;
        if let Err(err) = telemetry.shutdown().await {
            eprintln!("godel: {err}");
        }
        result.map(|()| ExitCode::SUCCESS)
    })
}

/// Starts the services (the gateway last, pointed at the others), prints where they
/// are, and waits. When one stops with an error, the others are shut down too.
async fn up(config: &UpConfig, data_dir: &Path, shutdown: CancellationToken) -> anyhow::Result<()> {
    let bus = godel_bus::connect(&BusConfig::default()).await?;
    let cache = godel_cache::connect(&CacheConfig::default()).await?;
    // The orchestrator stops first, while the scheduler still answers, so the tasks
    // of sessions it stops are handed back at once instead of when their leases
    // expire; then the rest stop.
    let orchestrator_shutdown = CancellationToken::new();
    let rest_shutdown = CancellationToken::new();

    let proxy_addr = config.proxy_addr()?;
    let started = async {
        let auth_config = godel_auth::AuthConfig {
            server: config.server(1),
            database: config.database(data_dir, "auth"),
            oidc: config.oidc.clone(),
            ..Default::default()
        };
        let admin = godel_auth::bootstrap(&auth_config).await?;
        let auth = godel_auth::start(
            auth_config,
            godel_auth::Dependencies { bus: bus.clone() },
            rest_shutdown.clone(),
        )
        .await?;
        let scheduler = godel_scheduler::start(
            godel_scheduler::SchedulerConfig {
                server: config.server(2),
                database: config.database(data_dir, "scheduler"),
                // The LLM planner asks through the LLM proxy as the person planning.
                planner: godel_scheduler::PlannerConfig {
                    llm_base_url: Some(format!("http://{proxy_addr}")),
                    llm_model: config.agents.planner_model.clone(),
                    ..Default::default()
                },
                ..Default::default()
            },
            godel_scheduler::Dependencies { bus: bus.clone() },
            rest_shutdown.clone(),
        )
        .await?;
        // Services verify callers against this auth service's key set.
        let identity = godel_identity::IdentityConfig {
            auth_url: format!("http://{}", auth.grpc_addr()),
            ..Default::default()
        };
        let mut orchestrator_config = godel_orchestrator::OrchestratorConfig {
            server: config.server(3),
            database: config.database(data_dir, "orchestrator"),
            ..Default::default()
        }
        .with_data_dir(data_dir);
        // One user on their own machine: sessions may work in repositories by path.
        orchestrator_config.sessions.allow_local_repositories = true;
        // Built with `cargo run -p godel` or installed alone, `godel` has no
        // `godel-sim-agent` beside it: it runs the simulated agent itself.
        if let Some((program, args)) = sim_agent_command()? {
            orchestrator_config.sessions.sim_agent_path = program;
            orchestrator_config.sessions.sim_agent_args = args;
        }
        // Agents reach models only through the LLM proxy, with a per-session token;
        // teams' provider keys stay encrypted under `<data_dir>/orchestrator/kek`.
        orchestrator_config.proxy.enabled = true;
        orchestrator_config.proxy.listen = proxy_addr;
        orchestrator_config.proxy.providers = config.agents.providers.clone();
        orchestrator_config.sessions.pi = config.agents.pi.clone();
        orchestrator_config.sessions.claude_code = config.agents.claude_code.clone();
        orchestrator_config.sessions.codex = config.agents.codex.clone();
        orchestrator_config.identity = identity.clone();
        orchestrator_config.intake = godel_orchestrator::IntakeConfig {
            enabled: true,
            scheduler_endpoint: format!("http://{}", scheduler.grpc_addr()),
            orchestrator_id: Some(orchestrator_id(data_dir)?),
            drain_timeout: config.shutdown_grace / 2,
            ..Default::default()
        };
        let orchestrator = godel_orchestrator::start(
            orchestrator_config,
            godel_orchestrator::Dependencies { bus: bus.clone() },
            orchestrator_shutdown.clone(),
        )
        .await?;
        let audit = godel_audit::start(
            godel_audit::AuditConfig {
                server: config.server(4),
                database: config.database(data_dir, "audit"),
                identity,
                ..Default::default()
            }
            .with_data_dir(data_dir),
            godel_audit::Dependencies { bus: bus.clone() },
            rest_shutdown.clone(),
        )
        .await?;
        let grpc = |s: &RunningService| format!("http://{}", s.grpc_addr());
        let audit_key = gateway_audit_key(data_dir, &grpc(&auth), admin.as_ref()).await?;
        let gateway = godel_gateway::start(
            godel_gateway::GatewayConfig {
                server: config.server(0),
                upstreams: godel_gateway::UpstreamsConfig {
                    auth: grpc(&auth),
                    scheduler: grpc(&scheduler),
                    orchestrator: grpc(&orchestrator),
                    audit: grpc(&audit),
                    ..Default::default()
                },
                cache: CacheConfig::default(),
                audit: godel_gateway::AuditConfig {
                    api_key: audit_key.map(Secret::new),
                    ..Default::default()
                },
                login: config.login()?,
                ..Default::default()
            },
            godel_gateway::Dependencies {
                cache: cache.clone(),
                bus: bus.clone(),
            },
            rest_shutdown.clone(),
        )
        .await?;
        anyhow::Ok((
            vec![
                ("gateway", gateway),
                ("auth", auth),
                ("scheduler", scheduler),
                ("orchestrator", orchestrator),
                ("audit", audit),
            ],
            admin,
        ))
    }
    .await;
    let (services, admin) = match started {
        Ok(started) => started,
        Err(err) => {
            // Stop whatever did start before reporting.
            orchestrator_shutdown.cancel();
            rest_shutdown.cancel();
            return Err(err.context("godel up could not start"));
        }
    };

    print_banner(data_dir, &services, admin.as_ref());

    let orchestrator_stopped = CancellationToken::new();
    let mut running = JoinSet::new();
    for (name, service) in services {
        let stopped = (name == "orchestrator").then(|| orchestrator_stopped.clone());
        running.spawn(async move {
            let result = service.wait().await;
            if let Some(stopped) = stopped {
                stopped.cancel();
            }
            (name, result)
        });
    }
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            orchestrator_shutdown.cancel();
            orchestrator_stopped.cancelled().await;
            rest_shutdown.cancel();
        });
    }
    let mut failed = Vec::new();
    while let Some(joined) = running.join_next().await {
        let (name, result) = joined.context("a service task panicked")?;
        if let Err(err) = result {
            tracing::error!(service = name, error = %err, "service stopped with an error");
            failed.push(format!("{name}: {err}"));
            shutdown.cancel();
        }
    }
    if failed.is_empty() {
        println!("Godel stopped.");
        Ok(())
    } else {
        anyhow::bail!("services stopped with errors: {}", failed.join("; "))
    }
}

fn print_banner(
    data_dir: &Path,
    services: &[(&str, RunningService)],
    admin: Option<&godel_auth::BootstrapAdmin>,
) {
    let gateway = services[0].1.http_addr();
    let mut out = format!("Godel is up: http://{gateway}\n\n");
    match admin {
        Some(admin) => out.push_str(&format!(
            "First start: created the org-admin `{}`, the team `{}` and an org-admin\n\
             API key. The key is shown only now; keep it:\n\n  {}\n\n",
            admin.user.display_name, admin.team.name, admin.api_key.secret
        )),
        None => out.push_str(
            "The org-admin API key was printed when this data directory was first used.\n\n",
        ),
    }
    for (name, service) in services {
        out.push_str(&format!(
            "  {name:<13} http://{}  grpc {}\n",
            service.http_addr(),
            service.grpc_addr()
        ));
    }
    out.push_str(&format!(
        "  data          {} (SQLite; kept across restarts)\n\n\
         Readiness:  curl http://{gateway}/readyz\n\
         Metrics:    /metrics on each service's http address\n\
         Stop with Ctrl-C.\n",
        data_dir.display()
    ));
    print!("{out}");
}

/// `godel sim-agent` when no `godel-sim-agent` binary is beside this executable;
/// `None` when one is (the orchestrator then finds it there).
fn sim_agent_command() -> anyhow::Result<Option<(PathBuf, Vec<String>)>> {
    let exe = std::env::current_exe().context("cannot find the godel executable")?;
    let beside = exe.with_file_name("godel-sim-agent");
    Ok((!beside.is_file()).then(|| (exe, vec!["sim-agent".to_owned()])))
}

fn default_data_dir() -> anyhow::Result<PathBuf> {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(xdg).join("godel"));
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .context("neither XDG_DATA_HOME nor HOME is set: pass --data-dir")?;
    Ok(PathBuf::from(home).join(".local/share/godel"))
}

fn create_data_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))
}

/// The gateway's audit credential: an API key holding the `audit-writer`
/// organisation role, created with the bootstrap admin at first start and kept in
/// `<data_dir>/gateway/audit-key` (mode 0600). `None` (API calls are then not
/// audited, and the gateway warns) when a later start finds no such file.
async fn gateway_audit_key(
    data_dir: &Path,
    auth_url: &str,
    admin: Option<&godel_auth::BootstrapAdmin>,
) -> anyhow::Result<Option<String>> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    use godel_proto::auth::v1::CreateApiKeyRequest;
    use godel_proto::auth::v1::auth_service_client::AuthServiceClient;

    let path = data_dir.join("gateway").join("audit-key");
    match std::fs::read_to_string(&path) {
        Ok(text) => return Ok(Some(text.trim().to_owned())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
    let Some(admin) = admin else {
        tracing::warn!(path = %path.display(), "no gateway audit key: API calls are not audited");
        return Ok(None);
    };
    let token = crate::credentials::access_token(&admin.api_key.secret, auth_url).await?;
    let bearer = godel_identity::BearerInterceptor::new(&token)
        .map_err(|e| anyhow::anyhow!("the admin's access token is unusable: {e}"))?;
    let channel = tonic::transport::Channel::from_shared(auth_url.to_owned())?
        .connect()
        .await
        .with_context(|| format!("cannot reach the auth service at {auth_url}"))?;
    let created = AuthServiceClient::with_interceptor(channel, bearer)
        .create_api_key(CreateApiKeyRequest {
            team_id: admin.team.id.to_string(),
            name: "gateway-audit".to_owned(),
            org_roles: vec!["audit-writer".to_owned()],
            ..Default::default()
        })
        .await
        .context("creating the gateway's audit key failed")?
        .into_inner();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut file| writeln!(file, "{}", created.secret))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Some(created.secret))
}

/// The orchestrator's stable id: read from `<data_dir>/orchestrator/id`, created there
/// on first start, so a restart resumes its dispatch subject and its sessions.
fn orchestrator_id(data_dir: &Path) -> anyhow::Result<OrchestratorId> {
    let path = data_dir.join("orchestrator").join("id");
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{} does not hold an orchestrator id", path.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let id = OrchestratorId::new();
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            std::fs::write(&path, format!("{id}\n"))
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(id)
        }
        Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
}

#[cfg(test)]
mod login_tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn sign_in_is_served_on_the_loopback_gateway_only_with_providers() {
        let mut config = UpConfig::default();
        assert_eq!(config.login().unwrap().public_url, None);
        config.oidc.providers.push(godel_auth::ProviderConfig {
            name: "corp".into(),
            display_name: String::new(),
            issuer: "https://login.example.com".into(),
            client_id: "godel".into(),
            client_secret: None,
            client_auth: godel_auth::ClientAuth::None,
            scopes: Vec::new(),
            algorithms: vec!["RS256".into()],
            groups_claim: "groups".into(),
            leeway: Duration::from_secs(60),
            redirect_uris: vec!["http://127.0.0.1:7700/auth/callback".into()],
            group_mappings: Vec::new(),
        });
        let login = config.login().unwrap();
        assert_eq!(login.public_url.as_deref(), Some("http://127.0.0.1:7700"));
        assert!(!login.secure_cookies);
        config.base_port = 0;
        assert!(config.login().is_err());
        config.base_port = 7700;
        config.host = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        assert!(config.login().is_err());
    }
}
