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
