//! Process signals: the first SIGINT/SIGTERM starts graceful shutdown, a second one
//! exits at once.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::RuntimeError;

/// Exit code of a process stopped by a second signal (128 + SIGINT).
pub const FORCED_EXIT_CODE: i32 = 130;

/// A token cancelled by the first SIGINT or SIGTERM this process receives; a second
/// one exits the process immediately with code 130. Call once, from the binary, inside
/// the Tokio runtime, and pass the token to `Service::start`/`run`.
pub fn shutdown_token() -> Result<CancellationToken, RuntimeError> {
    let mut terminate = signal(SignalKind::terminate()).map_err(RuntimeError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(RuntimeError::Signals)?;
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let first = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!(
            signal = first,
            "shutting down gracefully; signal again to exit at once"
        );
        cancel.cancel();
        let second = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::warn!(
            signal = second,
            "second signal: exiting without finishing shutdown"
        );
        std::process::exit(FORCED_EXIT_CODE);
    });
    Ok(token)
}
