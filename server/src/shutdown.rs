//! Turns SIGINT and SIGTERM into a cancellation every task can watch.

use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Returns a token that is cancelled at the first SIGINT or SIGTERM, and
/// the task that watches for them: without it the server could not be
/// stopped, so it is one of the server's essential tasks.
pub fn on_signal() -> std::io::Result<(CancellationToken, JoinHandle<()>)> {
    let token = CancellationToken::new();
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let cancel = token.clone();
    let watcher = tokio::spawn(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        // Cancel first: whatever happens to the log line, the server stops.
        cancel.cancel();
        info!(signal = name, "stopping");
    });
    Ok((token, watcher))
}
