//! The `main` of every service binary: flags, layered configuration,
//! `--dump-config`, telemetry, signals, and an exit code — so each `main.rs` is one call.

use std::future::Future;
use std::process::ExitCode;

use clap::{Args, Command, FromArgMatches};
use godel_config::ConfigArgs;
use godel_telemetry::TelemetryConfig;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

/// A service's whole configuration, as `main` needs to see it.
pub trait ServiceConfig: Serialize + DeserializeOwned + Default {
    /// The telemetry section (logs, traces), set up before the service starts.
    fn telemetry(&self) -> &TelemetryConfig;
}

/// Exit code for bad flags or configuration.
pub const USAGE_EXIT_CODE: u8 = 2;

/// Parses `--config`, `--set` and `--dump-config`, loads the configuration, sets up
/// telemetry and signal handling, and runs `serve` until SIGINT/SIGTERM. Errors are
/// printed with their causes; the exit code is 0 on a clean stop, 1 on a failure and
/// [`USAGE_EXIT_CODE`] for bad configuration.
pub fn main<C, F, Fut, E>(binary: &'static str, serve: F) -> ExitCode
where
    C: ServiceConfig,
    F: FnOnce(C, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::error::Error,
{
    let command = ConfigArgs::augment_args(
        Command::new(binary)
            .version(env!("CARGO_PKG_VERSION"))
            .about("A Godel service. Configuration: defaults, --config FILE, GODEL_* environment, --set."),
    );
    let args = match ConfigArgs::from_arg_matches(&command.get_matches()) {
        Ok(args) => args,
        Err(err) => err.exit(),
    };
    let config: C = match godel_config::load(&args) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{binary}: {}", chain(&err));
            return ExitCode::from(USAGE_EXIT_CODE);
        }
    };
    if args.dump_config {
        return match godel_config::dump(&config) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("{binary}: {}", chain(&err));
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("{binary}: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let telemetry = match godel_telemetry::init(config.telemetry()) {
            Ok(guard) => guard,
            Err(err) => {
                eprintln!("{binary}: {}", chain(&err));
                return ExitCode::from(USAGE_EXIT_CODE);
            }
        };
        let shutdown = match crate::signals::shutdown_token() {
            Ok(token) => token,
            Err(err) => {
                eprintln!("{binary}: {}", chain(&err));
                return ExitCode::FAILURE;
            }
        };
        let result = serve(config, shutdown).await;
        let code = match &result {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                tracing::error!(error = %chain(err), "{binary} stopped with an error");
                eprintln!("{binary}: {}", chain(err));
                ExitCode::FAILURE
            }
        };
        if let Err(err) = telemetry.shutdown().await {
            eprintln!("{binary}: {}", chain(&err));
        }
        code
    })
}

pub use godel_error::chain;
