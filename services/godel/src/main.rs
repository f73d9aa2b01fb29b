//! `godel`: the command-line interface, and `godel up` — every service in one process.

mod cli;
mod up;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Up(args) => up::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("godel: {err:#}");
            ExitCode::FAILURE
        }
    }
}
