//! The accept loops: the plaintext listener and, with `--tls-cert`, the TLS
//! one, beside the web doors ([`crate::web`]); one session task per
//! connection, let in or refused by the [`Gate`], and a drain on shutdown;
//! and the wait, in cluster mode, until the node can serve at all.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::essential::{self, Essential, Essentials};
use crate::gate::{self, Gate, Handles};
use crate::hub::accounts::{Accounts, Backend};
use crate::hub::cluster::{self, ClusterConfig};
use crate::hub::{Hub, Refusal};
use crate::limits::PerAddress;
use crate::logging::Repeating;
use crate::metrics::{self, Limit};
use crate::passwords::Hasher;
use crate::session;
use crate::session::Connection;
use crate::store::Store;
use crate::web;

/// Connections the kernel may queue before they are accepted; a login storm
/// of thousands must not see refused connects.
const LISTEN_BACKLOG: u32 = 4096;
/// Kernel send buffer of each connection. Left alone, Linux grows it to
/// megabytes for a client that stops reading, and that buffer, not
/// `--client-buffer`, would become the backlog: the client would be told
/// `DROPPED` late or never, and the host's socket memory would go to readers
/// that never read. Accepted sockets inherit it from the listener.
const SEND_BUFFER: u32 = 64 * 1024;
/// Refused connections from one address that may wait in a TLS handshake
/// at once (the refusal is told inside TLS); more are closed at once,
/// without one. One address once held 200 descriptors with stalled
/// handshakes that were to be refused anyway.
const TLS_REFUSALS_PER_ADDRESS: usize = 16;
/// Pause after a failed accept (for example out of file descriptors), so the
/// loop neither spins nor gives up.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait for sessions to say goodbye after a shutdown signal; with
/// a cluster's final second to free names ([`Hub::close`]), the process
/// ends within 5 s.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
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

/// The server's listening sockets: the plaintext one, the TLS one with
/// its acceptor when `--tls-cert` and `--tls-key` are given, and the web
/// doors (`--web-addr`, `--web-tls-addr`) when asked for.
pub struct Listeners {
    pub plain: TcpListener,
    pub tls: Option<(TcpListener, TlsAcceptor)>,
    pub web: Option<TcpListener>,
    pub web_tls: Option<(TcpListener, TlsAcceptor)>,
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

/// Which line listener a connection came through. Only the accept path
/// knows: sessions are the same on both.
#[derive(Clone)]
enum Door {
    Plain,
    Tls(TlsAcceptor),
}

impl Door {
    fn metric(&self) -> metrics::Door {
        match self {
            Door::Plain => metrics::Door::Plain,
            Door::Tls(_) => metrics::Door::Tls,
        }
    }
}

/// The accept loops: serve the listeners until `shutdown` fires, then tell
/// every connection `ERROR shutting-down`, wait (boundedly) for them to
/// close, and close the hub (in cluster mode: free this node's names).
async fn serve(listeners: Listeners, hub: Hub, config: Config, shutdown: CancellationToken) {
    let gate = Gate::new(hub, config, shutdown);
    // Refusals waiting in a TLS handshake, per address, loopback included
    // ([`TLS_REFUSALS_PER_ADDRESS`]).
    let tls_refusals = PerAddress::new(TLS_REFUSALS_PER_ADDRESS, true);
    let plain = accept(listeners.plain, Door::Plain, &gate, &tls_refusals);
    let tls = async {
        if let Some((listener, acceptor)) = listeners.tls {
            accept(listener, Door::Tls(acceptor), &gate, &tls_refusals).await;
        }
    };
    let web = web::Web::new(&gate);
    let web_plain = async {
        if let Some(listener) = listeners.web {
            web.accept(listener, None).await;
        }
    };
    let web_tls = async {
        if let Some((listener, acceptor)) = listeners.web_tls {
            web.accept(listener, Some(acceptor)).await;
        }
    };
    tokio::join!(plain, tls, web_plain, web_tls);
    let tasks = &gate.tasks;
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
    gate.hub.close().await;
}

/// One line listener's accept loop, until shutdown.
async fn accept(
    listener: TcpListener,
    door: Door,
    gate: &Arc<Gate>,
    tls_refusals: &Arc<PerAddress>,
) {
    while let Some((stream, peer)) =
        next_connection(&listener, &gate.shutdown, &ACCEPT_FAILED).await
    {
        admit(stream, peer, &door, gate, tls_refusals, Instant::now());
    }
}

/// The next connection `listener` accepts, or `None` once `shutdown` is
/// cancelled. A failed accept (out of file descriptors, say) is warned of
/// with `failed` and followed by a pause, so that no accept loop spins or
/// gives up.
pub async fn next_connection(
    listener: &TcpListener,
    shutdown: &CancellationToken,
    failed: &'static Repeating,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return None,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok(accepted) => return Some(accepted),
            Err(e) => {
                failed.warn(e);
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Gives an accepted connection its session, or refuses it as the
/// [`Gate`] says. Either way the work, TLS handshake included, happens in
/// the connection's own task, never in the accept loop; `accepted` is when
/// the login timeout started.
fn admit(
    stream: TcpStream,
    peer: SocketAddr,
    door: &Door,
    gate: &Arc<Gate>,
    tls_refusals: &Arc<PerAddress>,
    accepted: Instant,
) {
    // Replies are batched per write already; Nagle would only add delay.
    let _ = stream.set_nodelay(true);
    let door = door.clone();
    let refused = match gate.admit(peer.ip(), door.metric()) {
        Ok(admission) => {
            let connection = gate.clone();
            gate.tasks.spawn(async move {
                connect(stream, peer, door, &connection, accepted).await;
                drop(admission);
            });
            return;
        }
        Err(refused) => refused,
    };
    // On the TLS port the refusal costs a handshake: an address gets a few
    // at a time, and the rest are closed without one.
    let waiting = match door {
        Door::Plain => None,
        Door::Tls(_) => match tls_refusals.admit(peer.ip()) {
            Some(slot) => Some(slot),
            None => return gate::warn_refused(refused.refusal.code, Limit::TlsHandshakes, peer),
        },
    };
    let Some(permit) = gate.refusal_place(&refused, peer) else {
        return;
    };
    let connection = gate.clone();
    gate.tasks.spawn(async move {
        refuse(stream, peer, door, &connection, refused.refusal, accepted).await;
        drop((permit, waiting));
    });
}

static ACCEPT_FAILED: Repeating = Repeating::new(
    "accept failed",
    "time",
    "times",
    "pausing 100 ms after each",
);

/// Serves one admitted connection: a session straight away on the
/// plaintext listener, after the handshake on the TLS one.
async fn connect(
    mut stream: TcpStream,
    peer: SocketAddr,
    door: Door,
    gate: &Gate,
    accepted: Instant,
) {
    match door {
        Door::Plain => {
            let Handles {
                hub,
                config,
                shutdown,
            } = gate.handles();
            let socket = stream.as_raw_fd();
            let (read, write) = stream.split();
            let connection = Connection::lines(read, write, socket, config.max_line);
            session::run(connection, peer, hub, config, shutdown).await;
        }
        // Boxed: a TLS stream and its handshake are far larger than a TCP
        // socket, and every plaintext user's task would otherwise carry
        // room for them (2.8 KiB a task instead of 1.3).
        Door::Tls(acceptor) => Box::pin(serve_tls(acceptor, stream, peer, gate, accepted)).await,
    }
}

/// The TLS listener's session, after the handshake, with what the
/// handshake left of the login timeout.
async fn serve_tls(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    gate: &Gate,
    accepted: Instant,
) {
    let Some(stream) = handshake(&acceptor, stream, peer, gate, accepted).await else {
        return;
    };
    let Handles {
        hub,
        config,
        shutdown,
    } = gate.handles();
    let config = Gate::config_after_handshake(&config, accepted);
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
    gate: &Gate,
    refusal: Refusal,
    accepted: Instant,
) {
    metrics::error_sent(refusal.code);
    match door {
        Door::Plain => {
            let socket = stream.as_raw_fd();
            let (read, write) = stream.split();
            let connection = Connection::lines(read, write, socket, gate.config.max_line);
            session::refuse(connection, refusal).await;
        }
        Door::Tls(acceptor) => {
            if let Some(stream) = handshake(&acceptor, stream, peer, gate, accepted).await {
                let socket = stream.get_ref().0.as_raw_fd();
                let (read, write) = tokio::io::split(stream);
                let connection = Connection::lines(read, write, socket, gate.config.max_line);
                session::refuse(connection, refusal).await;
            }
        }
    }
}

/// The TLS handshake, bounded by `--login-timeout` from the accept (a
/// client that never finishes it must not hold a connection longer than
/// one that never logs in) and cut short by shutdown.
pub(crate) async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    gate: &Gate,
    accepted: Instant,
) -> Option<TlsStream<TcpStream>> {
    let deadline = accepted + gate.config.login_timeout;
    let outcome = tokio::select! {
        _ = gate.shutdown.cancelled() => return None,
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
