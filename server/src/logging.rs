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
    let logs = tracing_subscriber::registry().with(stderr);
    match test_hook::panic_in_hub() {
        Some(hook) => logs.with(hook).init(),
        None => logs.init(),
    }
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

/// A test-only way to make the hub task panic, to prove that the server
/// then exits instead of serving half-alive.
///
/// With `CHAT_TEST_PANIC_HUB=1` in a debug build, the first event the hub
/// logs (its first login) panics, inside the hub task, exactly as the
/// failed log write of issue 12 did. It needs no hook in the hub's code:
/// events are told apart by the module that logs them. Release builds
/// ignore the variable.
mod test_hook {
    use std::sync::atomic::{AtomicBool, Ordering};

    use tracing::{Event, Subscriber};
    use tracing_subscriber::layer::{Context, Layer};

    /// Whether code of `module` runs in a hub task: the hub's does, but of
    /// the cluster's tasks only the node is the hub (not the driver, not
    /// the reader).
    fn in_hub_task(module: &str) -> bool {
        match module.strip_prefix("chat_server::hub::cluster") {
            Some(cluster) => cluster.starts_with("::node"),
            None => module.starts_with("chat_server::hub"),
        }
    }

    pub(super) struct PanicInHub {
        fired: AtomicBool,
    }

    pub(super) fn panic_in_hub() -> Option<PanicInHub> {
        let wanted = cfg!(debug_assertions)
            && std::env::var_os("CHAT_TEST_PANIC_HUB").is_some_and(|v| v == "1");
        wanted.then(|| PanicInHub {
            fired: AtomicBool::new(false),
        })
    }

    impl<S: Subscriber> Layer<S> for PanicInHub {
        fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
            let module = event.metadata().module_path().unwrap_or_default();
            if in_hub_task(module) && !self.fired.swap(true, Ordering::Relaxed) {
                panic!("injected by CHAT_TEST_PANIC_HUB");
            }
        }
    }
}
