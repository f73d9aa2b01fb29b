//! `godel`: the command-line interface, `godel up` — every service in one process —
//! and `godel audit verify`.

mod audit;
mod cli;
mod credentials;
mod login;
mod provider_key;
mod rest;
mod up;
mod work;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Up(args) => up::run(args),
        cli::Command::Audit(cli::AuditCommand::Verify(args)) => audit::verify(args),
        cli::Command::Login(args) => login::login(args),
        cli::Command::Logout(args) => login::logout(args),
        cli::Command::Do(args) => work::run_do(args),
        cli::Command::Plan(args) => work::run_plan(args),
        cli::Command::Watch(args) => work::run_watch(args),
        cli::Command::ProviderKey(args) => provider_key::run_provider_key(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("godel: {err:#}");
            ExitCode::FAILURE
        }
    }
}
