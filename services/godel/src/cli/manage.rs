//! Command-line syntax of the commands that manage a team's resources: tasks and
//! their dead letters, sessions, the team itself, API keys, agent profiles, the
//! audit query, and shell completions.

use clap::{Args, Subcommand};

use super::ApiArgs;

#[derive(Debug, Args)]
pub struct TaskArgs {
    #[command(subcommand)]
    pub command: TaskCommand,

    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Submit a task.
    Submit {
        /// The kind of work (for example `implement`, `code.fix`).
        #[arg(long = "type", value_name = "TYPE")]
        task_type: String,
        /// The task's input: a JSON object, or `@file` to read it from a file.
        #[arg(long, value_name = "JSON|@FILE")]
        payload: Option<String>,
        /// 1 (lowest) to 100 (highest); the server's default when absent.
        #[arg(long, value_name = "N")]
        priority: Option<u32>,
        /// Submitting again with the same key returns the first task.
        #[arg(long, value_name = "KEY")]
        idempotency_key: Option<String>,
    },
    /// The team's tasks, oldest first.
    List {
        /// Only tasks in this state (`queued`, `running`, `succeeded`, `failed` …).
        #[arg(long, value_name = "STATE")]
        state: Option<String>,
        /// Only tasks of this plan (`pln_…`).
        #[arg(long, value_name = "PLAN_ID")]
        plan: Option<String>,
        /// Most tasks to show.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// One task: its state, attempts, last error and result.
    Show {
        /// `tsk_…`
        task_id: String,
    },
    /// Cancel a task (and stop its session, if one runs).
    Cancel {
        /// `tsk_…`
        task_id: String,
        /// Why, for the record.
        #[arg(long, default_value = "cancelled from the command line")]
        reason: String,
    },
    /// Tasks that failed for good: list, show, requeue, purge.
    #[command(subcommand)]
    Dlq(DlqCommand),
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// The team's dead-lettered tasks.
    List {
        /// Most to show.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// One dead letter: why, and every attempt's error.
    Show {
        /// `tsk_…`
        task_id: String,
    },
    /// Queue a dead-lettered task again.
    Requeue {
        /// `tsk_…`
        task_id: String,
    },
    /// Delete dead letters for good: all, those dead-lettered before a time, or
    /// the tasks named.
    Purge {
        /// Only those dead-lettered before this time (RFC 3339).
        #[arg(long, value_name = "TIME")]
        before: Option<chrono::DateTime<chrono::Utc>>,
        /// Only these tasks (`tsk_…`); repeatable.
        #[arg(long = "task-id", value_name = "ID")]
        task_ids: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct SessionArgs {
    #[command(subcommand)]
    pub command: SessionCommand,

    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// The team's agent sessions, newest first.
    List {
        /// Only sessions in this state (`running`, `succeeded`, `failed` …).
        #[arg(long, value_name = "STATE")]
        state: Option<String>,
        /// Only sessions of this task (`tsk_…`).
        #[arg(long = "task", value_name = "TASK_ID")]
        task: Option<String>,
        /// Most sessions to show.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// One session: state, agent, runtime, branch, usage, error.
    Show {
        /// `ses_…`
        session_id: String,
    },
    /// What the agent did: messages, tool calls and results, file changes, usage,
    /// state changes and errors. Exits 0 once printed (with --follow: once the
    /// session ended).
    Logs {
        /// `ses_…`
        session_id: String,
        /// Keep following until the session ends (resuming if the connection drops).
        #[arg(long, short = 'f')]
        follow: bool,
        /// First event to show (its offset: 1, 2, 3 …).
        #[arg(long, value_name = "N", default_value_t = 1)]
        from: u64,
    },
    /// Stop a session: ask the agent to stop, or kill it (--force).
    Stop {
        /// `ses_…`
        session_id: String,
        /// Kill at once instead of asking the agent to stop.
        #[arg(long)]
        force: bool,
        /// Why, for the record.
        #[arg(long, default_value = "stopped from the command line")]
        reason: String,
    },
}

#[derive(Debug, Args)]
pub struct TeamArgs {
    #[command(subcommand)]
    pub command: TeamCommand,

    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, Subcommand)]
pub enum TeamCommand {
    /// The teams the credential can act in.
    List,
    /// One team (default: the current one, see --team).
    Show {
        /// `team_…`
        team_id: Option<String>,
    },
    /// The team's members (list by default).
    Members {
        #[command(subcommand)]
        command: Option<MembersCommand>,
    },
    /// The team's roles, built-in and custom (list by default).
    Roles {
        #[command(subcommand)]
        command: Option<RolesCommand>,
    },
    /// The team's limits (show by default).
    Quotas {
        #[command(subcommand)]
        command: Option<QuotasCommand>,
    },
}

#[derive(Debug, Subcommand)]
pub enum MembersCommand {
    List,
    /// Add a user to the team, or replace their roles there.
    Add {
        /// `usr_…`
        user_id: String,
        /// A role (`team-admin`, `developer`, `viewer`, `auditor` or a custom one);
        /// repeatable.
        #[arg(long = "role", value_name = "ROLE", required = true)]
        roles: Vec<String>,
    },
    /// Remove a user from the team.
    Remove {
        /// `usr_…`
        user_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RolesCommand {
    List,
    /// A custom role.
    Create {
        name: String,
        /// A permission (`tasks:create`, …; see docs/permissions.md); repeatable.
        #[arg(long = "permission", value_name = "PERMISSION", required = true)]
        permissions: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum QuotasCommand {
    Show,
    /// Replace the limits as a whole: a limit not given goes back to the default.
    Set {
        /// Most agent sessions running at once.
        #[arg(long, value_name = "N")]
        max_concurrent_sessions: Option<u32>,
        /// Most tasks waiting (blocked or queued) at once.
        #[arg(long, value_name = "N")]
        max_queued_tasks: Option<u32>,
        /// API requests per minute.
        #[arg(long, value_name = "N")]
        rate_limit_per_minute: Option<u32>,
        /// Monthly model spend, in millionths of a US dollar.
        #[arg(long, value_name = "MICRO_USD")]
        monthly_budget_micro_usd: Option<u64>,
    },
}

#[derive(Debug, Args)]
pub struct KeyArgs {
    #[command(subcommand)]
    pub command: KeyCommand,

    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// The team's API keys (never their secrets).
    List,
    /// Create an API key; its secret is printed once, now.
    Create {
        /// A name for people.
        name: String,
        /// A permission (`tasks:create`, …); repeatable. The credential cannot grant
        /// permissions it does not hold.
        #[arg(long = "permission", value_name = "PERMISSION", required = true)]
        permissions: Vec<String>,
        /// When the key stops working (RFC 3339); never, when absent.
        #[arg(long, value_name = "RFC3339")]
        expires: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Revoke an API key: it stops working within the gateway's key cache time.
    Revoke {
        /// `key_…`
        key_id: String,
    },
}

#[derive(Debug, Args)]
pub struct ProfileArgs {
    #[command(subcommand)]
    pub command: ProfileCommand,

    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// The team's agent profiles and the built-in ones.
    List,
    /// Create or replace one of the team's profiles.
    Put {
        /// 1-64 of a-z, 0-9, `-`, `_`.
        name: String,
        /// The agent adapter (`sim`, `pi`, `claude-code`, `codex`).
        #[arg(long, value_name = "ADAPTER")]
        adapter: String,
        /// The model the agent uses.
        #[arg(long, value_name = "MODEL")]
        model: Option<String>,
        /// A task type it is for; repeatable.
        #[arg(long = "task-type", value_name = "TYPE")]
        task_types: Vec<String>,
        /// Lower is preferred among profiles for the same task type.
        #[arg(long, value_name = "N")]
        preference: Option<i32>,
        /// The estimated cost of one task, in millionths of a US dollar.
        #[arg(long, value_name = "MICRO_USD")]
        estimated_cost_micro_usd: Option<u64>,
    },
    /// Delete one of the team's profiles.
    Delete { name: String },
}

#[derive(Debug, Args)]
pub struct AuditQueryArgs {
    /// Exact action, or a prefix ending in `.` (`task.`).
    #[arg(long, value_name = "ACTION")]
    pub action: Option<String>,

    /// Only records at or after this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub since: Option<chrono::DateTime<chrono::Utc>>,

    /// Only records before this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub until: Option<chrono::DateTime<chrono::Utc>>,

    /// Most records to show.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,

    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    pub shell: clap_complete::Shell,
}
