//! Command-line syntax of `godel`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
}

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
    /// Verifying needs `audit:read`.
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
