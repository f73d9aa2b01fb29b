//! Command-line syntax of `godel`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

mod manage;
mod work;

pub use manage::{
    AuditQueryArgs, CompletionsArgs, DlqCommand, KeyArgs, KeyCommand, MembersCommand, ProfileArgs,
    ProfileCommand, QuotasCommand, RolesCommand, SessionArgs, SessionCommand, TaskArgs,
    TaskCommand, TeamArgs, TeamCommand,
};
pub use work::{
    ApiArgs, DoArgs, Output, PlanArgs, PlanCommand, ProviderKeyArgs, ProviderKeyCommand,
    SecretSource, WatchArgs,
};

/// Godel: a control plane for AI coding agents.
#[derive(Debug, Parser)]
#[command(name = "godel", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every Godel service in this process, with embedded storage (SQLite) and an
    /// in-process bus and cache: nothing else needs to be installed.
    Up(UpArgs),
    /// Audit log tools.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Sign in through an identity provider in the browser and store the login
    /// (`$XDG_CONFIG_HOME/godel/credentials.json`, mode 0600) for later commands.
    Login(LoginArgs),
    /// Sign out: revoke the stored login at its server and delete it.
    Logout(LogoutArgs),
    /// Describe what you want in words: Godel plans it into a DAG of tasks, shows
    /// the plan, and runs it once approved. Exits 0 when submitted (or shown, with
    /// --dry-run), 2 on an error, 3 when not approved.
    Do(DoArgs),
    /// Plans: list, show, cancel, roll back.
    Plan(PlanArgs),
    /// Follow a plan, a task or a session until it ends: a plan as a live tree of its
    /// tasks' states, a task's state changes, a session's log. Exits 0 when it
    /// succeeded, 1 when it failed or was cancelled, 2 on an error.
    Watch(WatchArgs),
    /// Tasks: submit, list, show, cancel, and the dead-letter queue.
    Task(TaskArgs),
    /// Agent sessions: list, show, logs (-f to follow), stop.
    Session(SessionArgs),
    /// Teams: list, show, members, roles, quotas.
    Team(TeamArgs),
    /// The team's API keys: list, create (the secret is shown once), revoke.
    Key(KeyArgs),
    /// The team's agent profiles: list, put, delete.
    Profile(ProfileArgs),
    /// Print a shell completion script: `godel completions bash > ~/.local/share/bash-completion/completions/godel`.
    Completions(CompletionsArgs),
    /// The team's model-provider keys, which Godel's LLM proxy uses for agents (who
    /// never see them): list, set, rotate.
    ProviderKey(ProviderKeyArgs),
    /// The simulated agent (`godel-sim-agent`), for `godel up`'s sessions when that
    /// binary is not installed beside `godel`.
    #[command(name = "sim-agent", hide = true)]
    SimAgent(godel_orchestrator::runtime::sim_agent::SimArgs),
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The gateway's URL (the one `godel up` starts by default).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:7700")]
    pub server: String,

    /// The identity provider to sign in with; needed when the server has several.
    #[arg(long, value_name = "NAME")]
    pub idp: Option<String>,

    /// Print the sign-in URL instead of opening a browser (to open it elsewhere on
    /// this machine: the browser must reach this machine's loopback address).
    #[arg(long)]
    pub no_browser: bool,

    /// How long to wait for the browser to come back.
    #[arg(long = "timeout", value_name = "SECONDS", default_value_t = 300)]
    pub timeout_secs: u64,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check that the audit log was not altered: walk the hash chain and the signed
    /// checkpoints, print what was checked and the first damage found. Exits 1 when
    /// the log is damaged, 2 when it cannot be checked.
    ///
    /// Asks the audit service (`--server`), or reads the database and the checkpoint
    /// directory directly (`--data-dir` of `godel up`, or `--database-url` with
    /// `--checkpoint-dir` and `--public-key`).
    Verify(AuditVerifyArgs),
    /// The team's audit records, newest first, through the gateway.
    Query(AuditQueryArgs),
}

#[derive(Debug, Args)]
pub struct AuditVerifyArgs {
    /// The audit service's gRPC address (the one `godel up` starts by default).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:7709")]
    pub server: String,

    /// Offline: the data directory of `godel up` (its `audit.db`,
    /// `audit-checkpoints/` and `audit-checkpoint-signing.key.pub`).
    #[arg(long, value_name = "DIR", conflicts_with = "database_url")]
    pub data_dir: Option<PathBuf>,

    /// Offline: the audit database (`postgres://…` or `sqlite://…`), opened without
    /// migrating or writing.
    #[arg(long, value_name = "URL", env = "GODEL_AUDIT_DATABASE_URL")]
    pub database_url: Option<String>,

    /// Offline, PostgreSQL: the schema holding the audit tables (the service's
    /// `database.schema`, `audit` by default).
    #[arg(long, value_name = "SCHEMA")]
    pub schema: Option<String>,

    /// Offline: the directory of checkpoint files (`checkpoint.dir`).
    #[arg(long, value_name = "DIR")]
    pub checkpoint_dir: Option<PathBuf>,

    /// Offline: the checkpoint public key, `<checkpoint.signing_key_file>.pub`
    /// (hex). The signing key itself is not needed.
    #[arg(long, value_name = "FILE")]
    pub public_key: Option<PathBuf>,

    /// Online: who asks — an access token, or an API key (`gdl_…`, such as the
    /// org-admin key `godel up` prints on first start) exchanged at `--auth-server`.
    /// Verifying needs `audit:read`. Without it, the login `godel login` stored.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "GODEL_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// Online: the auth service's gRPC address, for exchanging an API key.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:7703")]
    pub auth_server: String,

    /// First sequence to check (0: from the start).
    #[arg(long, value_name = "SEQUENCE", default_value_t = 0)]
    pub from: u64,

    /// Last sequence to check (0: to the end).
    #[arg(long, value_name = "SEQUENCE", default_value_t = 0)]
    pub to: u64,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Where the data lives (created if missing; kept across restarts).
    /// Default: $XDG_DATA_HOME/godel, else ~/.local/share/godel.
    #[arg(long, env = "GODEL_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// First of the ten consecutive ports the services listen on (the gateway takes
    /// the first); 0 lets the system pick free ports.
    #[arg(long, value_name = "PORT")]
    pub base_port: Option<u16>,

    #[command(flatten)]
    pub config: godel_config::ConfigArgs,
}
