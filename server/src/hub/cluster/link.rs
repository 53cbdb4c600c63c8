//! The driver's connection to Redis, and its health.
//!
//! A node must keep serving through a Redis outage, so losing the link is
//! an ordinary state here, not an error: the link is opened again after a
//! pause that doubles from [`BACKOFF_START`] up to a quarter lease, and an
//! outage is logged once when it starts and once when it ends, however
//! many attempts it takes in between.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::scripts::Scripts;

/// First pause after a failed connection attempt; it doubles up to a cap
/// well under the lease.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Bounds of the wait for one round trip, which is a quarter lease: long
/// enough for a busy Redis, short enough to notice an outage well within
/// the lease.
const MIN_COMMAND_TIMEOUT: Duration = Duration::from_millis(250);
const MAX_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest wait for one round trip before the link counts as down.
pub(crate) fn command_timeout(lease: Duration) -> Duration {
    (lease / 4).clamp(MIN_COMMAND_TIMEOUT, MAX_COMMAND_TIMEOUT)
}

pub(super) struct Link {
    client: redis::Client,
    lease: Duration,
    conn: Option<MultiplexedConnection>,
    /// Whether the link was ever up, to tell joining from coming back.
    joined: bool,
    next_attempt: Instant,
    backoff: Duration,
    /// When the outage in progress started (at start: not yet joined).
    down_since: Option<Instant>,
}

impl Link {
    pub(super) fn new(client: redis::Client, lease: Duration) -> Link {
        let now = Instant::now();
        Link {
            client,
            lease,
            conn: None,
            joined: false,
            next_attempt: now,
            backoff: BACKOFF_START,
            down_since: Some(now),
        }
    }

    /// The connection, if the link is up.
    pub(super) fn conn(&self) -> Option<MultiplexedConnection> {
        self.conn.clone()
    }

    /// Whether the link is down and the backoff allows another attempt.
    pub(super) fn should_connect(&self) -> bool {
        self.conn.is_none() && Instant::now() >= self.next_attempt
    }

    /// Opens a connection with every script loaded; the link counts as up
    /// only once the caller has also agreed on the epoch ([`Link::up`]).
    pub(super) async fn open(
        &self,
        scripts: &Scripts,
    ) -> redis::RedisResult<MultiplexedConnection> {
        let timeout = command_timeout(self.lease);
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        for script in scripts.all() {
            script.prepare_invoke().load_async(&mut conn).await?;
        }
        Ok(conn)
    }

    /// The link works: commands go through `conn` from now on.
    pub(super) fn up(&mut self, conn: MultiplexedConnection) {
        if let Some(since) = self.down_since.take() {
            if self.joined {
                info!(after = ?since.elapsed(), "cluster bus reachable again");
            } else {
                info!("joined the cluster bus");
            }
        }
        self.joined = true;
        self.conn = Some(conn);
        self.backoff = BACKOFF_START;
    }

    /// An attempt to connect failed: wait a little longer before the next.
    pub(super) fn attempt_failed(&mut self, error: &dyn std::fmt::Display) {
        self.down(error);
        self.next_attempt = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(self.lease / 4);
    }

    /// A round trip failed on a link that was up: try again at once.
    pub(super) fn broke(&mut self, error: &dyn std::fmt::Display) {
        self.down(error);
        self.next_attempt = Instant::now();
    }

    /// Redis changed under us: drop the connection so that the next round
    /// opens a new one, which detects the new epoch. Not an outage.
    pub(super) fn restart(&mut self) {
        self.conn = None;
    }

    fn down(&mut self, error: &dyn std::fmt::Display) {
        self.conn = None;
        if self.down_since.is_none() {
            warn!(%error, "lost the cluster bus; refusing requests until it returns");
            self.down_since = Some(Instant::now());
        } else {
            debug!(%error, "cluster bus still unreachable");
        }
    }
}
