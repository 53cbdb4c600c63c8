//! The accept loops: the plaintext listener and, with `--tls-cert`, the TLS
//! one; limits, one session task per connection, and a drain on shutdown;
//! and the wait, in cluster mode, until the node can serve at all.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_protocol::ErrorCode;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::essential::{self, Essential, Essentials};
use crate::hub::accounts::{Accounts, Backend};
use crate::hub::cluster::{self, ClusterConfig};
use crate::hub::{Hub, Refusal};
use crate::limits::{ConnectRate, PerAddress};
use crate::logging::Repeating;
use crate::metrics::{self, Limit};
use crate::passwords::Hasher;
use crate::session;
use crate::session::Connection;
use crate::store::Store;

/// Connections the kernel may queue before they are accepted; a login storm
/// of thousands must not see refused connects.
const LISTEN_BACKLOG: u32 = 4096;
/// Kernel send buffer of each connection. Left alone, Linux grows it to
/// megabytes for a client that stops reading, and that buffer, not
/// `--client-buffer`, would become the backlog: the client would be told
/// `DROPPED` late or never, and the host's socket memory would go to readers
/// that never read. Accepted sockets inherit it from the listener.
const SEND_BUFFER: u32 = 64 * 1024;
/// Refusals (`server-full`, `too-many-connections`) in progress at once; beyond it excess connections
/// are dropped without a word rather than costing memory.
const MAX_REFUSALS: usize = 1024;
/// Refused connections from one address that may wait in a TLS handshake
/// at once (the refusal is told inside TLS); more are closed at once,
/// without one. One address once held 200 descriptors with stalled
/// handshakes that were to be refused anyway.
const TLS_REFUSALS_PER_ADDRESS: usize = 16;
/// Pause after a failed accept (for example out of file descriptors), so the
/// loop neither spins nor gives up.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Shutdown tokens the sessions are spread over: every session polls its
/// token each time it wakes, under the lock of that token's waiters.
const SHUTDOWN_SHARDS: usize = 64;
/// Longest wait for sessions to say goodbye after a shutdown signal; with
/// a cluster's final second to free names ([`Hub::close`]), the process
/// ends within 5 s.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// The least login time a session is given after a TLS handshake that
/// took nearly all of `--login-timeout`: enough to be told
/// `login-timeout`.
const LEAST_LOGIN_TIME: Duration = Duration::from_millis(1);
/// How often a starting node asks its hub whether it can serve yet.
const READY_POLL: Duration = Duration::from_millis(10);

/// Binds the listening socket.
pub async fn bind(addr: &str) -> io::Result<TcpListener> {
    let mut last_error = None;
    for addr in tokio::net::lookup_host(addr).await? {
        match listen(addr) {
            Ok(listener) => return Ok(listener),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("the address resolved to nothing")))
}

fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_send_buffer_size(SEND_BUFFER)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Starts the hub: the local one, or this node's share of a cluster. The
/// hub's tasks come back with it, to be watched as [`Essential`]s. A data
/// directory that cannot be used (another server holds it, a newer release
/// wrote it) stops the server here, with the reason.
pub async fn start_hub(
    config: &Config,
    shutdown: &CancellationToken,
) -> Result<(Hub, Vec<Essential>), String> {
    match &config.cluster {
        None => {
            let store = if config.ephemeral {
                Store::ephemeral(config.history)
            } else {
                Store::open(&config.data_dir, config.history).map_err(|e| e.to_string())?
            };
            let said = store
                .lobby_history(config.history)
                .await
                .map_err(|e| e.to_string())?;
            let registered = store.count_accounts().await.map_err(|e| e.to_string())?;
            metrics::account_registered(registered as i64);
            let accounts = Accounts::load(
                Backend::Disk(store),
                Hasher::owasp(),
                &config.operators,
                config.limits_on_loopback,
            )
            .await?;
            let accounts = Arc::new(accounts);
            let watched = accounts.clone();
            metrics::accounts_from(move || {
                let (bans, mutes) = watched.in_force();
                let hasher = watched.hasher();
                metrics::AccountsNow {
                    bans,
                    mutes,
                    hashing_waiting: hasher.waiting(),
                    hashing_jobs: hasher.jobs_done(),
                    hashing_seconds: hasher.total_work().as_secs_f64(),
                }
            });
            let (hub, task) = Hub::start_local(
                config.client_buffer,
                config.room_limits(),
                accounts,
                shutdown.clone(),
            );
            hub.restore_lobby(said);
            Ok((hub, vec![("hub", task)]))
        }
        Some(url) => cluster::start(
            &ClusterConfig {
                url: url.clone(),
                node_id: config
                    .node_id
                    .clone()
                    .unwrap_or_else(cluster::random_node_id),
                lease: config.lease,
            },
            config.client_buffer,
            config.room_limits(),
            cluster::ModerationConfig {
                hasher: Hasher::owasp(),
                operators: config.operators.clone(),
                on_loopback: config.limits_on_loopback,
            },
        ),
    }
}

/// Waits until the hub can log someone in, so that a server never says
/// it listens before it can serve: at once for the local hub; in cluster
/// mode once the node has reached the bus and follows its stream (`WHO`
/// is answered then, not `unavailable`). Gives up after one lease, the
/// longest the cluster's settling after a Redis restart lasts, and returns
/// whether the hub is ready.
pub async fn until_ready(hub: &Hub, config: &Config) -> bool {
    let limit = match config.cluster {
        Some(_) => config.lease,
        None => Duration::ZERO,
    };
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if hub.serves().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(READY_POLL).await;
    }
}

/// The server's listening sockets: the plaintext one, and the TLS one
/// with its acceptor when `--tls-cert` and `--tls-key` are given.
pub struct Listeners {
    pub plain: TcpListener,
    pub tls: Option<(TcpListener, TlsAcceptor)>,
}

/// Serves the listeners until `shutdown` fires, then drains the connections
/// and lets the hub go. If an essential task (or the accept loop itself)
/// fails first, stops the same way and returns what went wrong: the server
/// must exit rather than keep accepting connections it cannot serve.
pub async fn run(
    listeners: Listeners,
    hub: Hub,
    config: Config,
    shutdown: CancellationToken,
    mut essentials: Essentials,
) -> Result<(), String> {
    let mut serving = tokio::spawn(serve(listeners, hub, config, shutdown.clone()));
    let failure = tokio::select! {
        served = &mut serving => {
            return match served {
                Ok(()) => essentials.panicked().map_or(Ok(()), Err),
                Err(e) => Err(essential::describe("accept loop", Err(e))),
            };
        }
        failure = essentials.failure(&shutdown) => failure,
    };
    error!(%failure, "an essential task failed; stopping");
    // Everyone hears `shutting-down` and the drain is bounded, as on a
    // signal; then the process exits non-zero.
    shutdown.cancel();
    let _ = tokio::time::timeout(2 * DRAIN_TIMEOUT, serving).await;
    Err(failure)
}

/// Which listener a connection came through. Only the accept path knows:
/// sessions are the same on both.
#[derive(Clone)]
enum Door {
    Plain,
    Tls(TlsAcceptor),
}

/// What every accept loop shares: the hub, the settings and the limits.
struct Shared {
    hub: Hub,
    config: Arc<Config>,
    shutdown: CancellationToken,
    /// Children of `shutdown` that the sessions watch, spread so that the
    /// lock each one's waiters sit behind is shared by few sessions.
    stopping: Vec<CancellationToken>,
    /// Which of `stopping` the next connection watches.
    next: std::sync::atomic::AtomicUsize,
    tasks: TaskTracker,
    /// `--max-clients`, across both listeners.
    connections: Arc<Semaphore>,
    /// `--max-per-ip`, across both listeners.
    per_address: Arc<PerAddress>,
    /// `--connect-burst` and `--connect-rate`, across both listeners.
    connect_rate: ConnectRate,
    /// Refusals waiting in a TLS handshake, per address, loopback
    /// included ([`TLS_REFUSALS_PER_ADDRESS`]).
    tls_refusals: Arc<PerAddress>,
    refusals: Arc<Semaphore>,
}

/// The accept loops: serve the listeners until `shutdown` fires, then tell
/// every connection `ERROR shutting-down`, wait (boundedly) for them to
/// close, and close the hub (in cluster mode: free this node's names).
async fn serve(listeners: Listeners, hub: Hub, config: Config, shutdown: CancellationToken) {
    let shared = Arc::new(Shared {
        connections: Arc::new(Semaphore::new(config.max_clients)),
        per_address: PerAddress::new(config.max_per_ip, config.limits_on_loopback),
        connect_rate: ConnectRate::new(
            config.connect_burst,
            config.connect_rate,
            config.limits_on_loopback,
        ),
        tls_refusals: PerAddress::new(TLS_REFUSALS_PER_ADDRESS, true),
        refusals: Arc::new(Semaphore::new(MAX_REFUSALS)),
        config: Arc::new(config),
        hub,
        stopping: (0..SHUTDOWN_SHARDS)
            .map(|_| shutdown.child_token())
            .collect(),
        next: Default::default(),
        shutdown,
        tasks: TaskTracker::new(),
    });
    let plain = accept(listeners.plain, Door::Plain, &shared);
    match listeners.tls {
        Some((listener, acceptor)) => {
            tokio::join!(plain, accept(listener, Door::Tls(acceptor), &shared));
        }
        None => plain.await,
    }
    let tasks = &shared.tasks;
    tasks.close();
    info!(connections = tasks.len(), "shutting down");
    if tokio::time::timeout(DRAIN_TIMEOUT, tasks.wait())
        .await
        .is_err()
    {
        warn!(left = tasks.len(), "some connections did not close in time");
    }
    // Sessions told the hub of their users' leaves as they ended; in a
    // cluster those may still be queued, so the node frees whatever names
    // it holds in one step, and the others announce them at once.
    shared.hub.close().await;
}

/// One listener's accept loop, until shutdown.
async fn accept(listener: TcpListener, door: Door, shared: &Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => admit(stream, peer, &door, shared, Instant::now()),
            Err(e) => {
                ACCEPT_FAILED.warn(e);
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Gives an accepted connection its session, or refuses it if the server is
/// full, its address is banned, has too many connections open or opens
/// them too fast (`server-full` wins when several hold). Either way the
/// work, TLS handshake included, happens in the connection's own task,
/// never in the accept loop; `accepted` is when the login timeout started.
fn admit(
    stream: TcpStream,
    peer: SocketAddr,
    door: &Door,
    shared: &Arc<Shared>,
    accepted: Instant,
) {
    // Replies are batched per write already; Nagle would only add delay.
    let _ = stream.set_nodelay(true);
    let door = door.clone();
    let (refusal, limit) = match shared.connections.clone().try_acquire_owned() {
        Ok(_) if shared.hub.address_banned(peer.ip()).is_some() => {
            let banned = shared.hub.address_banned(peer.ip());
            (
                banned.unwrap_or_else(|| ErrorCode::Banned.into()),
                Limit::Banned,
            )
        }
        Ok(permit) => match shared.per_address.admit(peer.ip()) {
            Some(slot) if shared.connect_rate.admit(peer.ip()) => {
                let connection = shared.clone();
                let open = metrics::connection_opened(matches!(door, Door::Tls(_)));
                shared.tasks.spawn(async move {
                    connect(stream, peer, door, &connection, accepted).await;
                    drop((permit, slot, open));
                });
                return;
            }
            Some(_) => {
                let why = "too many new connections from your address; try again in a second";
                (
                    Refusal::new(ErrorCode::TooManyConnections, why),
                    Limit::ConnectRate,
                )
            }
            None => (ErrorCode::TooManyConnections.into(), Limit::MaxPerIp),
        },
        Err(_) => (ErrorCode::ServerFull.into(), Limit::MaxClients),
    };
    // On the TLS port the refusal costs a handshake: an address gets a few
    // at a time, and the rest are closed without one.
    let waiting = match door {
        Door::Plain => None,
        Door::Tls(_) => match shared.tls_refusals.admit(peer.ip()) {
            Some(slot) => Some(slot),
            None => return refused(refusal.code, Limit::TlsHandshakes, peer),
        },
    };
    let Ok(permit) = shared.refusals.clone().try_acquire_owned() else {
        return refused(refusal.code, Limit::Refusals, peer);
    };
    refused(refusal.code, limit, peer);
    let connection = shared.clone();
    shared.tasks.spawn(async move {
        refuse(stream, peer, door, &connection, refusal, accepted).await;
        drop((permit, waiting));
    });
}

/// Counts a refusal and warns of it, at most once a second for each limit.
fn refused(code: ErrorCode, limit: Limit, peer: SocketAddr) {
    metrics::refused(code, limit);
    let warning = match limit {
        Limit::MaxClients => &REFUSED_FULL,
        Limit::MaxPerIp => &REFUSED_OPEN,
        Limit::ConnectRate => &REFUSED_NEW,
        Limit::Banned => &REFUSED_BANNED,
        Limit::TlsHandshakes => &REFUSED_HANDSHAKES,
        Limit::Refusals => &REFUSED_UNANSWERED,
    };
    warning.warn(peer.ip());
}

/// The accept path's warnings, one kind per limit: strangers can cause
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
static ACCEPT_FAILED: Repeating = Repeating::new(
    "accept failed",
    "time",
    "times",
    "pausing 100 ms after each",
);

const fn refusals(why: &'static str) -> Repeating {
    Repeating::new("refused", "connection", "connections", why)
}

/// Serves one admitted connection: a session straight away on the
/// plaintext listener, after the handshake on the TLS one.
async fn connect(
    mut stream: TcpStream,
    peer: SocketAddr,
    door: Door,
    shared: &Shared,
    accepted: Instant,
) {
    match door {
        Door::Plain => {
            let (hub, config, shutdown) = session_handles(shared);
            let socket = stream.as_raw_fd();
            let (read, write) = stream.split();
            let connection = Connection::lines(read, write, socket, config.max_line);
            session::run(connection, peer, hub, config, shutdown).await;
        }
        // Boxed: a TLS stream and its handshake are far larger than a TCP
        // socket, and every plaintext user's task would otherwise carry
        // room for them (2.8 KiB a task instead of 1.3).
        Door::Tls(acceptor) => Box::pin(serve_tls(acceptor, stream, peer, shared, accepted)).await,
    }
}

/// What a session needs of the server: the hub, the settings, and the
/// shutdown token of its shard.
fn session_handles(shared: &Shared) -> (Hub, Arc<Config>, CancellationToken) {
    let shard = shared
        .next
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    (
        shared.hub.clone(),
        shared.config.clone(),
        shared.stopping[shard % SHUTDOWN_SHARDS].clone(),
    )
}

/// The TLS listener's session, after the handshake. The login timeout
/// counts from the accept: the session is given what the handshake left
/// of it (a trickled handshake once held a slot for the handshake's time
/// plus the whole login timeout).
async fn serve_tls(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    accepted: Instant,
) {
    let Some(stream) = handshake(&acceptor, stream, peer, shared, accepted).await else {
        return;
    };
    let (hub, config, shutdown) = session_handles(shared);
    let left = config
        .login_timeout
        .saturating_sub(accepted.elapsed())
        .max(LEAST_LOGIN_TIME);
    let config = Arc::new(Config {
        login_timeout: left,
        ..Config::clone(&config)
    });
    let socket = stream.get_ref().0.as_raw_fd();
    let (read, write) = tokio::io::split(stream);
    let connection = Connection::lines(read, write, socket, config.max_line);
    session::run(connection, peer, hub, config, shutdown).await;
}

/// Tells a connection over a limit why it is refused, inside TLS on the TLS
/// listener, and closes it.
async fn refuse(
    mut stream: TcpStream,
    peer: SocketAddr,
    door: Door,
    shared: &Shared,
    refusal: Refusal,
    accepted: Instant,
) {
    metrics::error_sent(refusal.code);
    match door {
        Door::Plain => {
            let socket = stream.as_raw_fd();
            let (read, write) = stream.split();
            let connection = Connection::lines(read, write, socket, shared.config.max_line);
            session::refuse(connection, refusal.clone()).await;
        }
        Door::Tls(acceptor) => {
            if let Some(stream) = handshake(&acceptor, stream, peer, shared, accepted).await {
                let socket = stream.get_ref().0.as_raw_fd();
                let (read, write) = tokio::io::split(stream);
                let connection = Connection::lines(read, write, socket, shared.config.max_line);
                session::refuse(connection, refusal.clone()).await;
            }
        }
    }
}

/// The TLS handshake, bounded by `--login-timeout` from the accept (a
/// client that never finishes it must not hold a connection longer than
/// one that never logs in) and cut short by shutdown.
async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    accepted: Instant,
) -> Option<TlsStream<TcpStream>> {
    let deadline = accepted + shared.config.login_timeout;
    let outcome = tokio::select! {
        _ = shared.shutdown.cancelled() => return None,
        outcome = tokio::time::timeout_at(deadline.into(), acceptor.accept(stream)) => outcome,
    };
    match outcome {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            metrics::tls_handshake_failed();
            debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            metrics::tls_handshake_failed();
            debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}
