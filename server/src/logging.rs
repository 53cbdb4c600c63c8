//! Logging to stderr that can never take the server down.
//!
//! Logs are written from every task, the hub's and the signal watcher's
//! included. If stderr goes away (`chat-server 2>&1 | tee log`, and `tee`
//! is stopped), a write fails with `EPIPE`; tracing's fmt layer would then
//! report its own failure with `eprintln!`, which panics when stderr is
//! gone, inside whichever task was logging. So every write here reports
//! success whatever happened: a lost log line is the only cost.
//!
//! Warnings that strangers can cause by the thousand (refused connections,
//! failed accepts) go through [`Repeating`], at most one line a second per
//! kind.

use std::io::{self, IsTerminal as _, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// A warning that may repeat thousands of times a second (a refused
/// connection, a failed accept), written at most once a second with how
/// many it stands for: `refused 2 999 connections: too many from one
/// address (last: 127.0.0.3)`. One line per event would let whoever causes
/// the events fill the disk and bury everything else in the log.
///
/// The first event after a quiet second is written at once; those in the
/// second that follows are counted, and written together when it ends (by
/// a timer, so the last of a burst is not left untold), with the last
/// one's detail.
pub struct Repeating {
    /// What the count counts, before it: `refused`.
    verb: &'static str,
    /// What is counted, one and many: `connection`, `connections`.
    one: &'static str,
    many: &'static str,
    /// Why, after the count: `too many from one address`.
    why: &'static str,
    window: Mutex<Window>,
}

/// A [`Repeating`] warning's last second.
struct Window {
    /// When a line was last written.
    written_at: Option<Instant>,
    /// Events since, not written yet.
    held: u64,
    /// The detail of the last of them.
    last: String,
    /// Whether a timer will write them.
    flush_due: bool,
}

/// How often, at most, one kind of repeating warning is written.
pub const REPEAT_EVERY: Duration = Duration::from_secs(1);

impl Repeating {
    pub const fn new(
        verb: &'static str,
        one: &'static str,
        many: &'static str,
        why: &'static str,
    ) -> Repeating {
        Repeating {
            verb,
            one,
            many,
            why,
            window: Mutex::new(Window {
                written_at: None,
                held: 0,
                last: String::new(),
                flush_due: false,
            }),
        }
    }

    /// One more event, whose detail is `last` (an address, an error).
    pub fn warn(&'static self, last: impl std::fmt::Display) {
        use std::fmt::Write as _;
        let now = Instant::now();
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        window.held += 1;
        window.last.clear();
        let _ = write!(window.last, "{last}");
        match window.written_at {
            Some(at) if now < at + REPEAT_EVERY => {
                if !window.flush_due {
                    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                        window.flush_due = true;
                        runtime.spawn(async move {
                            tokio::time::sleep_until((at + REPEAT_EVERY).into()).await;
                            self.flush();
                        });
                    }
                }
            }
            _ => self.write(&mut window, now),
        }
    }

    /// Writes what the window holds, if anything.
    fn flush(&self) {
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        window.flush_due = false;
        if window.held > 0 {
            self.write(&mut window, Instant::now());
        }
    }

    fn write(&self, window: &mut Window, now: Instant) {
        let count = window.held;
        let noun = if count == 1 { self.one } else { self.many };
        tracing::warn!(
            count,
            "{} {} {noun}: {} (last: {})",
            self.verb,
            grouped(count),
            self.why,
            window.last
        );
        window.held = 0;
        window.written_at = Some(now);
    }
}

/// `2999` as `2 999`, as the log writes counts.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(digit);
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_grouped_by_thousands() {
        assert_eq!(grouped(1), "1");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(2999), "2 999");
        assert_eq!(grouped(1_234_567), "1 234 567");
    }

    #[tokio::test]
    async fn repeats_are_held_and_written_once_a_second() {
        static REFUSED: Repeating = Repeating::new("refused", "connection", "connections", "test");
        REFUSED.warn("192.0.2.1");
        {
            let window = REFUSED.window.lock().unwrap();
            assert_eq!(window.held, 0, "the first is written at once");
        }
        for n in 0..2999 {
            REFUSED.warn(format_args!("192.0.2.{}", n % 200));
        }
        {
            let window = REFUSED.window.lock().unwrap();
            assert_eq!((window.held, window.flush_due), (2999, true));
            assert_eq!(window.last, "192.0.2.198");
        }
        tokio::time::sleep(REPEAT_EVERY + Duration::from_millis(10)).await;
        let window = REFUSED.window.lock().unwrap();
        assert_eq!((window.held, window.flush_due), (0, false), "written");
    }
}
