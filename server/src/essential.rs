//! The tasks the server cannot live without, and noticing when one fails.
//!
//! Without the hub nobody can log in; without the signal watcher SIGTERM
//! is ignored; without the cluster's driver, reader or room the node is cut
//! off for good. A server that kept accepting connections after losing one
//! of them would be half-alive: answering, but not serving. So each is
//! watched, and when one panics, or ends before shutdown, the server stops
//! and exits non-zero.

use std::any::Any;

use futures::stream::FuturesUnordered;
use futures::{FutureExt as _, StreamExt as _};
use tokio::task::{JoinError, JoinHandle};
use tokio_util::sync::CancellationToken;

/// A task the server cannot live without, and the name it is reported by.
pub type Essential = (&'static str, JoinHandle<()>);

type Ended = futures::future::BoxFuture<'static, (&'static str, Result<(), JoinError>)>;

/// The essential tasks still running.
#[derive(Default)]
pub struct Essentials {
    running: FuturesUnordered<Ended>,
}

impl Essentials {
    pub fn new() -> Essentials {
        Essentials::default()
    }

    /// Watches `tasks` from now on.
    pub fn watch(&mut self, tasks: impl IntoIterator<Item = Essential>) {
        for (name, task) in tasks {
            self.running.push(async move { (name, task.await) }.boxed());
        }
    }

    /// Resolves, with what went wrong, when an essential task panics, or
    /// ends while `shutdown` has not fired; never otherwise. After
    /// shutdown, tasks ending is expected: they end as the server stops.
    pub async fn failure(&mut self, shutdown: &CancellationToken) -> String {
        loop {
            match self.running.next().await {
                Some((_, Ok(()))) if shutdown.is_cancelled() => {}
                Some((name, ended)) => return describe(name, ended),
                None => std::future::pending().await,
            }
        }
    }

    /// A panic among the tasks that have already ended, if any: the last
    /// check before a clean exit.
    pub fn panicked(&mut self) -> Option<String> {
        while let Some(Some((name, ended))) = self.running.next().now_or_never() {
            if ended.is_err() {
                return Some(describe(name, ended));
            }
        }
        None
    }
}

/// Says how a task ended, in words for stderr.
pub fn describe(name: &str, ended: Result<(), JoinError>) -> String {
    match ended {
        Ok(()) => format!("the {name} task ended unexpectedly"),
        Err(e) if e.is_panic() => {
            format!("the {name} task panicked: {}", panic_text(&*e.into_panic()))
        }
        Err(_) => format!("the {name} task was cancelled"),
    }
}

fn panic_text(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_panic_is_a_failure_with_its_message() {
        let mut essentials = Essentials::new();
        essentials.watch([
            ("calm", tokio::spawn(std::future::pending())),
            ("hub", tokio::spawn(async { panic!("boom") })),
        ]);
        let failure = essentials.failure(&CancellationToken::new()).await;
        assert_eq!(failure, "the hub task panicked: boom");
    }

    #[tokio::test]
    async fn ending_is_a_failure_only_before_shutdown() {
        let shutdown = CancellationToken::new();
        let mut essentials = Essentials::new();
        essentials.watch([("driver", tokio::spawn(async {}))]);
        let failure = essentials.failure(&shutdown).await;
        assert_eq!(failure, "the driver task ended unexpectedly");

        shutdown.cancel();
        essentials.watch([("signal", tokio::spawn(async {}))]);
        let waited =
            tokio::time::timeout(Duration::from_millis(50), essentials.failure(&shutdown)).await;
        assert!(
            waited.is_err(),
            "a task that ends after shutdown is no failure"
        );
        assert_eq!(essentials.panicked(), None);
    }
}
