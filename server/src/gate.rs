//! The gate every door's connections pass through: what the doors share
//! (the hub, the settings, the shutdown, the tasks) and the one place the
//! limits of a new chat connection are checked, whichever door it came
//! through — TCP, TLS, or a WebSocket whose client address was only
//! known once its request's headers were read.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_protocol::ErrorCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::hub::{Hub, Refusal};
use crate::limits::{ConnectRate, PerAddress, Slot};
use crate::logging::Repeating;
use crate::metrics::{self, Door, Limit, OpenConnection};

/// Refusals (`server-full`, `too-many-connections`) in progress at once; beyond it excess connections
/// are dropped without a word rather than costing memory.
const MAX_REFUSALS: usize = 1024;
/// Shutdown tokens the sessions are spread over: every session polls its
/// token each time it wakes, under the lock of that token's waiters.
const SHUTDOWN_SHARDS: usize = 64;
/// The least login time a session is given after a handshake (TLS, or an
/// HTTP upgrade) that took nearly all of `--login-timeout`: enough to be
/// told `login-timeout`.
const LEAST_LOGIN_TIME: Duration = Duration::from_millis(1);

/// What every door shares: the hub, the settings and the limits.
pub(crate) struct Gate {
    pub hub: Hub,
    pub config: Arc<Config>,
    pub shutdown: CancellationToken,
    /// Children of `shutdown` that the sessions watch, spread so that the
    /// lock each one's waiters sit behind is shared by few sessions.
    stopping: Vec<CancellationToken>,
    /// Which of `stopping` the next connection watches.
    next: AtomicUsize,
    pub tasks: TaskTracker,
    /// `--max-clients`, across every door.
    connections: Arc<Semaphore>,
    /// `--max-per-ip`, across every door.
    per_address: Arc<PerAddress>,
    /// `--connect-burst` and `--connect-rate`, across every door.
    connect_rate: ConnectRate,
    refusals: Arc<Semaphore>,
}

/// What an admitted chat connection holds while it is open: its place in
/// `--max-clients` and in its address's `--max-per-ip`, and its count in
/// the metrics. Dropping it gives them back.
pub(crate) struct Admission {
    _permit: OwnedSemaphorePermit,
    _slot: Slot,
    _open: OpenConnection,
}

/// Why a connection is refused: what it is told, and which limit said so.
pub(crate) struct Refused {
    pub refusal: Refusal,
    pub limit: Limit,
}

/// What a session needs of the server: the hub, the settings, and the
/// shutdown token of its shard.
pub(crate) struct Handles {
    pub hub: Hub,
    pub config: Arc<Config>,
    pub shutdown: CancellationToken,
}

impl Gate {
    pub fn new(hub: Hub, config: Config, shutdown: CancellationToken) -> Arc<Gate> {
        Arc::new(Gate {
            connections: Arc::new(Semaphore::new(config.max_clients)),
            per_address: PerAddress::new(config.max_per_ip, config.limits_on_loopback),
            connect_rate: ConnectRate::new(
                config.connect_burst,
                config.connect_rate,
                config.limits_on_loopback,
            ),
            refusals: Arc::new(Semaphore::new(MAX_REFUSALS)),
            config: Arc::new(config),
            hub,
            stopping: (0..SHUTDOWN_SHARDS)
                .map(|_| shutdown.child_token())
                .collect(),
            next: Default::default(),
            shutdown,
            tasks: TaskTracker::new(),
        })
    }

    /// Lets a new chat connection from `ip` in through `door`, or says why
    /// not: the server is full, the address is banned, has too many
    /// connections open or opens them too fast (`server-full` wins when
    /// several hold). The only place these limits are checked.
    pub fn admit(&self, ip: IpAddr, door: Door) -> Result<Admission, Refused> {
        let refused = |refusal: Refusal, limit| Err(Refused { refusal, limit });
        let Ok(permit) = self.connections.clone().try_acquire_owned() else {
            return refused(ErrorCode::ServerFull.into(), Limit::MaxClients);
        };
        if let Some(banned) = self.hub.address_banned(ip) {
            return refused(banned, Limit::Banned);
        }
        let Some(slot) = self.per_address.admit(ip) else {
            return refused(ErrorCode::TooManyConnections.into(), Limit::MaxPerIp);
        };
        if !self.connect_rate.admit(ip) {
            let why = "too many new connections from your address; try again in a second";
            return refused(
                Refusal::new(ErrorCode::TooManyConnections, why),
                Limit::ConnectRate,
            );
        }
        Ok(Admission {
            _permit: permit,
            _slot: slot,
            _open: metrics::connection_opened(door),
        })
    }

    /// A place for one more refusal in progress, or `None` (counted and
    /// warned of) when too many are: the connection is then closed without
    /// a word.
    pub fn refusal_place(
        &self,
        refused: &Refused,
        peer: SocketAddr,
    ) -> Option<OwnedSemaphorePermit> {
        match self.refusals.clone().try_acquire_owned() {
            Ok(permit) => {
                warn_refused(refused.refusal.code, refused.limit, peer);
                Some(permit)
            }
            Err(_) => {
                warn_refused(refused.refusal.code, Limit::Refusals, peer);
                None
            }
        }
    }

    /// The handles of the next session.
    pub fn handles(&self) -> Handles {
        let shard = self.next.fetch_add(1, Ordering::Relaxed);
        Handles {
            hub: self.hub.clone(),
            config: self.config.clone(),
            shutdown: self.stopping[shard % SHUTDOWN_SHARDS].clone(),
        }
    }

    /// The settings for a session whose connection was accepted at
    /// `accepted` and needed a handshake first: the login timeout counts
    /// from the accept, so it is given what the handshake left of it (a
    /// trickled handshake once held a slot for the handshake's time plus
    /// the whole login timeout).
    pub fn config_after_handshake(config: &Arc<Config>, accepted: Instant) -> Arc<Config> {
        let left = config
            .login_timeout
            .saturating_sub(accepted.elapsed())
            .max(LEAST_LOGIN_TIME);
        Arc::new(Config {
            login_timeout: left,
            ..Config::clone(config)
        })
    }
}

/// Counts a refusal and warns of it, at most once a second for each limit.
pub(crate) fn warn_refused(code: ErrorCode, limit: Limit, peer: SocketAddr) {
    metrics::refused(code, limit);
    let warning = match limit {
        Limit::MaxClients => &REFUSED_FULL,
        Limit::MaxPerIp => &REFUSED_OPEN,
        Limit::ConnectRate => &REFUSED_NEW,
        Limit::Banned => &REFUSED_BANNED,
        Limit::TlsHandshakes => &REFUSED_HANDSHAKES,
        Limit::Refusals => &REFUSED_UNANSWERED,
        Limit::HttpConnections => &REFUSED_HTTP,
    };
    warning.warn(peer.ip());
}

/// The accept paths' warnings, one kind per limit: strangers can cause
/// them by the thousand, so each is written at most once a second, with a
/// count ([`Repeating`]).
static REFUSED_FULL: Repeating = refusals("the server is full (--max-clients)");
static REFUSED_OPEN: Repeating = refusals("too many from one address (--max-per-ip)");
static REFUSED_NEW: Repeating =
    refusals("opened too fast from one address (--connect-burst, --connect-rate)");
static REFUSED_BANNED: Repeating = refusals("the address is banned");
static REFUSED_HANDSHAKES: Repeating = refusals(
    "too many refused TLS handshakes waiting from one address; closed without a handshake",
);
static REFUSED_UNANSWERED: Repeating =
    refusals("too many refusals in progress; closed without a word");
static REFUSED_HTTP: Repeating = refusals(
    "too many HTTP connections on the web door, from one address or in all; closed without a word",
);

const fn refusals(why: &'static str) -> Repeating {
    Repeating::new("refused", "connection", "connections", why)
}
