//! `godel`: the command-line interface, `godel up` — every service in one process —
//! and the commands that talk to it.

mod audit;
mod cli;
mod credentials;
mod key;
mod login;
mod profile;
mod provider_key;
mod rest;
mod session;
mod sse;
mod task;
mod team;
mod up;
mod work;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Up(args) => up::run(args),
        cli::Command::Audit(cli::AuditCommand::Verify(args)) => audit::verify(args),
        cli::Command::Audit(cli::AuditCommand::Query(args)) => audit::query::run_query(args),
        cli::Command::Login(args) => login::login(args),
        cli::Command::Logout(args) => login::logout(args),
        cli::Command::Do(args) => work::run_do(args),
        cli::Command::Plan(args) => work::run_plan(args),
        cli::Command::Watch(args) => work::run_watch(args),
        cli::Command::ProviderKey(args) => provider_key::run_provider_key(args),
        cli::Command::SimAgent(args) => Ok(godel_orchestrator::runtime::sim_agent::main(args)),
        cli::Command::Task(args) => task::run_task(args),
        cli::Command::Session(args) => session::run_session(args),
        cli::Command::Team(args) => team::run_team(args),
        cli::Command::Key(args) => key::run_key(args),
        cli::Command::Profile(args) => profile::run_profile(args),
        cli::Command::Completions(args) => {
            clap_complete::generate(
                args.shell,
                &mut cli::Cli::command(),
                "godel",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("godel: {err:#}");
            ExitCode::FAILURE
        }
    }
}
