//! `godel`: the command-line interface, `godel up` — every service in one process —
//! and `godel audit verify`.

mod audit;
mod cli;
mod credentials;
mod up;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Up(args) => up::run(args),
        cli::Command::Audit(cli::AuditCommand::Verify(args)) => audit::verify(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("godel: {err:#}");
            ExitCode::FAILURE
        }
    }
}
