//! `--metrics <addr>`: a small HTTP/1 endpoint for the operator's tools.
//!
//! - `/metrics`: every metric, as Prometheus text ([`crate::metrics`]);
//! - `/healthz`: 200 while the process serves at all (for a supervisor that
//!   restarts what hangs);
//! - `/readyz`: 200 while the server can log users in, 503 otherwise: before
//!   it listens, while a cluster node cannot reach the bus or is settling
//!   after a Redis restart, and once it is shutting down. A load balancer
//!   sends new connections only to nodes that answer 200.

use std::convert::Infallible;
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
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::hub::Hub;
use crate::metrics;

/// Longest a readiness check waits for the hub's answer: a hub that
/// cannot answer this fast is not ready to log anyone in.
const READY_LIMIT: Duration = Duration::from_secs(1);
/// Longest one HTTP connection may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Serves the endpoint on `listener` until `shutdown`.
pub fn serve(
    listener: TcpListener,
    hub: Hub,
    listening: Listening,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        debug!(error = %e, "metrics endpoint: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let (hub, listening, shutdown) = (hub.clone(), listening.clone(), shutdown.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    answer(request, hub.clone(), listening.clone(), shutdown.clone())
                });
                let connection = http1::Builder::new()
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), service);
                if let Ok(Err(e)) = tokio::time::timeout(REQUEST_TIMEOUT, connection).await {
                    debug!(error = %e, "metrics endpoint: connection failed");
                }
            });
        }
    })
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
