//! Command-line syntax of the commands that describe, review and follow work:
//! `godel do`, `godel plan …` and `godel watch`.

use clap::{Args, Subcommand, ValueEnum};

/// How the gateway is reached, as whom, in which team, and how results are printed.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// The gateway's URL (the one `godel up` starts by default).
    #[arg(
        long,
        value_name = "URL",
        env = "GODEL_SERVER",
        default_value = "http://127.0.0.1:7700",
        global = true
    )]
    pub server: String,

    /// An access token or an API key (`gdl_…`, such as the org-admin key `godel up`
    /// prints on first start). Without it, the login `godel login` stored.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "GODEL_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,

    /// The team (`team_…`). Without it, the team the credential acts in, or the
    /// caller's only team.
    #[arg(long, value_name = "TEAM_ID", env = "GODEL_TEAM", global = true)]
    pub team: Option<String>,

    /// `text` for people (colours only on a terminal), `json` for programs.
    #[arg(long, value_enum, default_value_t = Output::Text, global = true)]
    pub output: Output,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// Which planner to ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlannerChoice {
    /// The LLM planner when the server has one configured, else the deterministic one.
    Auto,
    Deterministic,
    Llm,
}

impl PlannerChoice {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Deterministic => "deterministic",
            Self::Llm => "llm",
        }
    }
}

#[derive(Debug, Args)]
pub struct DoArgs {
    /// What you want done, in words.
    pub text: String,

    /// The repository the work happens in: a local path or a git URL.
    #[arg(long, value_name = "PATH|URL")]
    pub repo: String,

    /// The branch or ref the work starts from (default: HEAD).
    #[arg(long = "ref", value_name = "REF")]
    pub git_ref: Option<String>,

    /// A quality gate run after code-changing tasks (a shell command that passes
    /// when it exits 0).
    #[arg(long, value_name = "COMMAND")]
    pub gate: Option<String>,

    /// How long the gate may run (e.g. `10m`).
    #[arg(long, value_name = "DURATION", requires = "gate")]
    pub gate_timeout: Option<String>,

    /// Show the plan without submitting it.
    #[arg(long)]
    pub dry_run: bool,

    /// Submit without asking for approval (needed when not on a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Which planner to ask.
    #[arg(long, value_enum, default_value_t = PlannerChoice::Auto)]
    pub planner: PlannerChoice,

    /// Run every task with this agent profile (`pi`, `claude-code`, `codex`,
    /// `simulated` or one of the team's own) instead of the one the planner chose.
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,

    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, Args)]
pub struct ProviderKeyArgs {
    #[command(subcommand)]
    pub command: ProviderKeyCommand,

    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, Subcommand)]
pub enum ProviderKeyCommand {
    /// List the team's provider keys (metadata only: never the key).
    List,
    /// Store a key for a model provider; the secret is read from stdin (or
    /// --from-env), never from the command line.
    Set(SetProviderKeyArgs),
    /// Replace a stored key's secret; sessions started afterwards use the new one.
    Rotate(RotateProviderKeyArgs),
}

#[derive(Debug, Args)]
pub struct SetProviderKeyArgs {
    /// The provider: `openai` (Pi, Codex) or `anthropic` (Claude Code).
    pub provider: String,

    /// Which of the team's keys for this provider.
    #[arg(long, default_value = "default")]
    pub name: String,

    #[command(flatten)]
    pub source: SecretSource,
}

#[derive(Debug, Args)]
pub struct RotateProviderKeyArgs {
    /// The key's id (`sec_…`, from `godel provider-key list`).
    pub key_id: String,

    #[command(flatten)]
    pub source: SecretSource,
}

/// Where a secret comes from.
#[derive(Debug, Args)]
pub struct SecretSource {
    /// Read the secret from this environment variable instead of stdin.
    #[arg(long, value_name = "VAR")]
    pub from_env: Option<String>,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(subcommand)]
    pub command: PlanCommand,

    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, Subcommand)]
pub enum PlanCommand {
    /// The team's plans, newest first.
    List {
        /// Most plans to show.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// One plan: its tasks as a tree with their states, and its integration branch.
    Show {
        /// `pln_…`
        plan_id: String,
    },
    /// Cancel every unfinished task of a plan.
    Cancel {
        /// `pln_…`
        plan_id: String,
        /// Why, for the record.
        #[arg(long, default_value = "cancelled from the command line")]
        reason: String,
    },
    /// Cancel a plan and reset its integration branch to the commit it started from
    /// (the repository's own branches are not touched).
    Rollback {
        /// `pln_…`
        plan_id: String,
        /// Why, for the record.
        #[arg(long, default_value = "rolled back from the command line")]
        reason: String,
    },
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// A plan (`pln_…`), a task (`tsk_…`) or a session (`ses_…`).
    pub id: String,

    /// How often to ask, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub interval_ms: u64,

    #[command(flatten)]
    pub api: ApiArgs,
}
