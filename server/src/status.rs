//! `--metrics <addr>`: a small HTTP/1 endpoint for the operator's tools.
//!
//! - `/metrics`: every metric, as Prometheus text ([`crate::metrics`]);
//! - `/healthz`: 200 while the process serves at all (for a supervisor that
//!   restarts what hangs);
//! - `/readyz`: 200 while the server can log users in, 503 otherwise: before
//!   it listens, while a cluster node cannot reach the bus or is settling
//!   after a Redis restart, and once it is shutting down. A load balancer
//!   sends new connections only to nodes that answer 200.
//!
//! It answers once per connection and serves [`MAX_CONNECTIONS`] at a time;
//! it listens on loopback unless `--metrics-public` says otherwise.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::hub::Hub;
use crate::logging::Repeating;
use crate::metrics;
use crate::server::next_connection;

/// Longest a readiness check waits for the hub's answer: a hub that
/// cannot answer this fast is not ready to log anyone in.
const READY_LIMIT: Duration = Duration::from_secs(1);
/// Longest one HTTP connection may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait, after an answer, for the client to close its side.
const LINGER: Duration = Duration::from_secs(1);
/// Most a client may send after its request before it is closed anyway.
const LINGER_BYTES: usize = 64 * 1024;
/// Connections the endpoint serves at once; more are closed at once. A
/// scraper, a supervisor and a load balancer need a few; without a bound,
/// idle connections could take every file descriptor the chat needs.
pub const MAX_CONNECTIONS: usize = 64;

/// The endpoint's repeating warnings ([`Repeating`]).
static REFUSED: Repeating = Repeating::new(
    "metrics endpoint: refused",
    "connection",
    "connections",
    "64 are being served",
);
static ACCEPT_FAILED: Repeating = Repeating::new(
    "metrics endpoint: accept failed",
    "time",
    "times",
    "pausing 100 ms after each",
);

/// Whether the chat listeners are up; `/readyz` says not ready before.
#[derive(Clone, Default)]
pub struct Listening(Arc<AtomicBool>);

impl Listening {
    pub fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Serves the endpoint on `listener` until `shutdown`: one answer per
/// connection, [`MAX_CONNECTIONS`] connections at a time.
pub fn serve(
    listener: TcpListener,
    hub: Hub,
    listening: Listening,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let serving = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        while let Some((stream, peer)) = next_connection(&listener, &shutdown, &ACCEPT_FAILED).await
        {
            let Ok(permit) = serving.clone().try_acquire_owned() else {
                metrics::metrics_refused();
                REFUSED.warn(peer.ip());
                drop(stream);
                continue;
            };
            let (hub, listening, shutdown) = (hub.clone(), listening.clone(), shutdown.clone());
            tokio::spawn(async move {
                let mut stream = stream;
                let service = service_fn(move |request| {
                    answer(request, hub.clone(), listening.clone(), shutdown.clone())
                });
                // No keep-alive: the connection closes after one answer.
                let connection = http1::Builder::new()
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(&mut stream), service);
                match tokio::time::timeout(REQUEST_TIMEOUT, connection).await {
                    Ok(Ok(())) => linger(&mut stream).await,
                    Ok(Err(e)) => debug!(error = %e, "metrics endpoint: connection failed"),
                    Err(_) => {}
                }
                drop(permit);
            });
        }
    })
}

/// After the answer: half-closes and reads what the client sent beyond its
/// one request (a pipelined second one), briefly, before the close. Closing
/// with unread input would make the kernel send a reset, which can destroy
/// the answer before the client reads it.
async fn linger(stream: &mut TcpStream) {
    let _ = tokio::time::timeout(LINGER, async {
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => left = left.saturating_sub(n),
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// Whether the endpoint may listen on `addr`: loopback always, any other
/// address only with `--metrics-public`, since the endpoint is not
/// authenticated. The error says how to mend it.
pub fn check_address(addr: SocketAddr, public: bool) -> Result<(), String> {
    if addr.ip().to_canonical().is_loopback() || public {
        return Ok(());
    }
    Err(format!(
        "--metrics {addr}: not a loopback address, and the metrics endpoint has no \
         authentication; listen on 127.0.0.1 or [::1], or give --metrics-public \
         (metrics-public = true) to serve it on {addr} anyway"
    ))
}

async fn answer(
    request: Request<Incoming>,
    hub: Hub,
    listening: Listening,
    shutdown: CancellationToken,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return Ok(plain(StatusCode::METHOD_NOT_ALLOWED, "GET only\n"));
    }
    Ok(match request.uri().path() {
        "/metrics" => Response::builder()
            .header(CONTENT_TYPE, metrics::CONTENT_TYPE)
            .header(CACHE_CONTROL, "no-store")
            .body(Full::new(Bytes::from(metrics::render())))
            .unwrap_or_default(),
        "/healthz" => plain(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if ready(&hub, &listening, &shutdown).await {
                plain(StatusCode::OK, "ready\n")
            } else {
                plain(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        _ => plain(StatusCode::NOT_FOUND, "try /metrics, /healthz or /readyz\n"),
    })
}

/// Whether a user could log in now: the listeners are up, the server is
/// not stopping, and the hub answers `WHO` (in cluster mode: the node is
/// joined to the bus), and, in cluster mode, the cluster is not settling
/// after Redis lost its data.
async fn ready(hub: &Hub, listening: &Listening, shutdown: &CancellationToken) -> bool {
    if !listening.get() || shutdown.is_cancelled() || metrics::bus_settling_now() {
        return false;
    }
    matches!(
        tokio::time::timeout(READY_LIMIT, hub.serves()).await,
        Ok(true)
    )
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from_static(text.as_bytes())))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_unless_public() {
        for loopback in [
            "127.0.0.1:9464",
            "127.3.2.1:0",
            "[::1]:9464",
            "[::ffff:127.0.0.1]:1",
        ] {
            check_address(loopback.parse().unwrap(), false).expect(loopback);
        }
        for public in ["0.0.0.0:9464", "[::]:9464", "192.0.2.1:9464"] {
            let error = check_address(public.parse().unwrap(), false).expect_err(public);
            assert!(error.contains("--metrics-public"), "{error}");
            check_address(public.parse().unwrap(), true).expect(public);
        }
    }
}
