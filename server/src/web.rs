//! The third door: `--web-addr` (HTTP) and `--web-tls-addr` (HTTPS) serve
//! the browser client's page and, at `/ws`, the chat itself as a
//! WebSocket, a connection like any other for the session.
//!
//! - [`http`]: what is answered: the page's files ([`assets`]), the
//!   upgrade, checked against [`origin`] and let in by the
//!   [`Gate`](crate::gate::Gate) under the client's address ([`proxy`]);
//! - [`socket`]: the WebSocket as a session's connection.
//!
//! Where the limits apply. A connection on this port is first an HTTP
//! connection, bounded here by its TCP peer: [`MAX_HTTP_CONNECTIONS`] in
//! all, [`HTTP_PER_ADDRESS`] from one address (a trusted proxy's count only
//! in the total), headers within [`HEADER_TIMEOUT`], at most
//! [`HTTP_LIFETIME`] before it becomes a WebSocket or is closed. Only the
//! upgrade request says who the client is (`X-Forwarded-For` behind a
//! trusted proxy), so that is where the chat's own limits apply —
//! `--max-clients`, `--max-per-ip`, the connect rate and bans — through
//! the same gate as TCP and TLS. From then on the connection holds its
//! chat places, not its HTTP ones; its login timeout still counts from
//! the TCP accept.

pub mod assets;
mod http;
pub mod origin;
pub mod proxy;
mod socket;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tracing::debug;

use crate::gate::{self, Admission, Gate, Handles};
use crate::hub::Refusal;
use crate::limits::{PerAddress, Slot};
use crate::logging::Repeating;
use crate::metrics::{self, Door, Limit};
use crate::server::next_connection;
use crate::session;

/// HTTP connections (page loads, upgrades not yet made) open at once on
/// the web doors; more are closed at once. WebSockets do not count here
/// but toward `--max-clients`.
pub const MAX_HTTP_CONNECTIONS: usize = 1024;
/// HTTP connections open at once from one address (IPv6: one /64); a
/// browser opens about six. Loopback is spared unless
/// `--limits-on-loopback`; a trusted proxy, which carries everyone's,
/// counts only toward [`MAX_HTTP_CONNECTIONS`].
pub const HTTP_PER_ADDRESS: usize = 16;
/// Time a request's headers may take to arrive, from the first byte (and
/// a TLS handshake on the HTTPS door).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest an HTTP connection stays open if it does not become a
/// WebSocket: keep-alive between page loads, within bounds.
pub const HTTP_LIFETIME: Duration = Duration::from_secs(60);
/// Time an HTTP connection being closed (its lifetime is up, the server
/// stops) has to finish the answer in progress.
const HTTP_CLOSE_GRACE: Duration = Duration::from_secs(2);
/// The most a request's head may take; longer ones get 431.
const MAX_HEAD: usize = 16 * 1024;
/// Headers a request may have.
const MAX_HEADERS: usize = 64;

/// The web doors' state: the gate, and the bounds on HTTP connections.
pub(crate) struct Web {
    gate: Arc<Gate>,
    connections: Arc<Semaphore>,
    per_address: Arc<PerAddress>,
}

/// One HTTP connection's state, shared with its requests' answers.
#[derive(Default)]
struct HttpConnection {
    requests: AtomicU32,
    /// The upgrade an answer switched to, for the connection's task to
    /// take up once hyper lets go.
    upgrade: Mutex<Option<Upgrade>>,
}

/// A WebSocket about to open: the upgrade, whose it is, and its place at
/// the gate (or the refusal to tell it, with its place among refusals).
struct Upgrade {
    on_upgrade: OnUpgrade,
    client: SocketAddr,
    admitted: Result<Admission, (Refusal, OwnedSemaphorePermit)>,
}

/// An HTTP connection's places, given back when it ends or upgrades.
struct HttpPlaces {
    _permit: OwnedSemaphorePermit,
    _slot: Option<Slot>,
}

static ACCEPT_FAILED: Repeating = Repeating::new(
    "web door: accept failed",
    "time",
    "times",
    "pausing 100 ms after each",
);

impl Web {
    pub fn new(gate: &Arc<Gate>) -> Arc<Web> {
        Arc::new(Web {
            gate: gate.clone(),
            connections: Arc::new(Semaphore::new(MAX_HTTP_CONNECTIONS)),
            per_address: PerAddress::new(HTTP_PER_ADDRESS, gate.config.limits_on_loopback),
        })
    }

    /// One web door's accept loop (HTTPS with `tls`), until shutdown.
    pub async fn accept(self: &Arc<Self>, listener: TcpListener, tls: Option<TlsAcceptor>) {
        while let Some((stream, peer)) =
            next_connection(&listener, &self.gate.shutdown, &ACCEPT_FAILED).await
        {
            let accepted = Instant::now();
            let Some(places) = self.places(peer) else {
                gate::warn_refused(
                    chat_protocol::ErrorCode::TooManyConnections,
                    Limit::HttpConnections,
                    peer,
                );
                continue;
            };
            let _ = stream.set_nodelay(true);
            let web = self.clone();
            let tls = tls.clone();
            self.gate.tasks.spawn(async move {
                web.connection(stream, peer, tls, accepted, places).await;
            });
        }
    }

    /// A place for one more HTTP connection from `peer`, if there is one.
    fn places(&self, peer: SocketAddr) -> Option<HttpPlaces> {
        let permit = self.connections.clone().try_acquire_owned().ok()?;
        let proxy = self
            .gate
            .config
            .trusted_proxies
            .iter()
            .any(|net| net.contains(peer.ip()));
        let slot = match proxy {
            true => None,
            false => Some(self.per_address.admit(peer.ip())?),
        };
        Some(HttpPlaces {
            _permit: permit,
            _slot: slot,
        })
    }

    /// One connection: HTTP until it upgrades or ends, then, if it
    /// upgraded, the WebSocket's session. Each phase is boxed, so that
    /// what a WebSocket user's task keeps is only its session.
    async fn connection(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        tls: Option<TlsAcceptor>,
        accepted: Instant,
        places: HttpPlaces,
    ) {
        let socket = stream.as_raw_fd();
        let upgrade = match tls {
            None => Box::pin(self.http(stream, peer, Door::Web, places)).await,
            Some(acceptor) => {
                Box::pin(async {
                    let handshake = tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(stream)) => self.http(stream, peer, Door::WebTls, places).await,
                        _ => {
                            metrics::tls_handshake_failed();
                            debug!(%peer, "web door: TLS handshake failed or timed out");
                            None
                        }
                    }
                })
                .await
            }
        };
        if let Some(upgrade) = upgrade {
            Box::pin(self.websocket(upgrade, socket, accepted)).await;
        }
    }

    /// Serves HTTP on `io` until the connection upgrades (returned) or
    /// ends: closed by the client, timed out, or past [`HTTP_LIFETIME`].
    async fn http<S>(
        self: &Arc<Self>,
        io: S,
        peer: SocketAddr,
        door: Door,
        places: HttpPlaces,
    ) -> Option<Upgrade>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let state = Arc::new(HttpConnection::default());
        let service = {
            let (web, state) = (self.clone(), state.clone());
            service_fn(move |request| {
                let answer = http::answer(request, &web, peer, door, &state);
                async move { Ok::<_, Infallible>(answer) }
            })
        };
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .max_buf_size(MAX_HEAD)
            .max_headers(MAX_HEADERS)
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        tokio::pin!(connection);
        let ended = tokio::select! {
            ended = connection.as_mut() => Some(ended),
            () = tokio::time::sleep(HTTP_LIFETIME) => None,
            () = self.gate.shutdown.cancelled() => None,
        };
        match ended {
            Some(Err(e)) => debug!(%peer, error = %e, "web door: HTTP connection failed"),
            Some(Ok(())) => {}
            None => {
                connection.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(HTTP_CLOSE_GRACE, connection).await;
            }
        }
        drop(places);
        let upgrade = state
            .upgrade
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        upgrade
    }

    /// The WebSocket's session, or its refusal, on the upgraded connection.
    async fn websocket(&self, upgrade: Upgrade, socket: RawFd, accepted: Instant) {
        let Upgrade {
            on_upgrade,
            client,
            admitted,
        } = upgrade;
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                debug!(%client, error = %e, "web door: the upgrade failed");
                return;
            }
        };
        let max_line = self.gate.config.max_line;
        let connection = socket::connection(TokioIo::new(upgraded), socket, max_line).await;
        match admitted {
            Ok(admission) => {
                let Handles {
                    hub,
                    config,
                    shutdown,
                } = self.gate.handles();
                let config = Gate::config_after_handshake(&config, accepted);
                session::run(connection, client, hub, config, shutdown).await;
                drop(admission);
            }
            Err((refusal, place)) => {
                metrics::error_sent(refusal.code);
                session::refuse(connection, refusal).await;
                drop(place);
            }
        }
    }
}
