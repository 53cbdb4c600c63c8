//! Logging to stderr that can never take the server down.
//!
//! Logs are written from every task, the hub's and the signal watcher's
//! included. If stderr goes away (`chat-server 2>&1 | tee log`, and `tee`
//! is stopped), a write fails with `EPIPE`; tracing's fmt layer would then
//! report its own failure with `eprintln!`, which panics when stderr is
//! gone, inside whichever task was logging. So every write here reports
//! success whatever happened: a lost log line is the only cost.

use std::io::{self, IsTerminal as _, Write};

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// Starts logging: `RUST_LOG` filters (default `info`), lines go to stderr.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(|| LossyStderr)
        .with_ansi(io::stderr().is_terminal())
        .log_internal_errors(false)
        .with_filter(filter);
    tracing_subscriber::registry().with(stderr).init();
}

/// Stderr whose writes cannot fail: an error is swallowed, and the line
/// lost.
pub struct LossyStderr;

impl Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let _ = io::stderr().write_all(buf);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stderr().flush();
        Ok(())
    }
}

/// Says something on stderr if it can, for the messages that do not go
/// through the log (start-up failures, a fatal end).
pub fn say(message: std::fmt::Arguments<'_>) {
    let _ = writeln!(io::stderr(), "chat-server: {message}");
}
