//! The metrics-port attack of `hostile`: many HTTP connections to the
//! server's `--metrics` port from a few addresses, half of them idle (they
//! connect and send nothing), half slowloris (a request line, then one
//! header byte every half second, never an end). PROTOCOL.md: the port
//! serves at most 64 connections at once and closes the others at once.
//!
//! From the outside, a connection closed within [`REFUSED_WITHIN`] of its
//! opening was refused; one still open after it is being served (until
//! the server's 10 s request timeout). [`Siege`] counts both and the most
//! served at once, and [`refused_by_server`] reads the server's own count.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{interval, sleep, timeout, Instant};

/// Connections the metrics port serves at once (PROTOCOL.md, "Budgets").
pub const SERVED_AT_ONCE: usize = 64;
/// A connection closed this soon after it opened was refused; one open
/// longer was being served.
const REFUSED_WITHIN: Duration = Duration::from_secs(1);
/// A slowloris connection's pause between two bytes.
const DRIP: Duration = Duration::from_millis(500);

/// What the attack's connections saw, shared by them.
#[derive(Clone, Default)]
pub struct Siege {
    served: Arc<AtomicUsize>,
    most_served: Arc<AtomicUsize>,
    refused: Arc<AtomicU64>,
    closed_later: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

/// A connection being served: counted while it lives.
struct Served(Siege);

impl Served {
    fn new(siege: &Siege) -> Served {
        let now = siege.served.fetch_add(1, Ordering::Relaxed) + 1;
        siege.most_served.fetch_max(now, Ordering::Relaxed);
        Served(siege.clone())
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.0.served.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Siege {
    /// The most connections served at once so far.
    pub fn most_served(&self) -> usize {
        self.most_served.load(Ordering::Relaxed)
    }

    /// Connections closed at once, as refused.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Connections served and then closed by the server (its request
    /// timeout), before the attack ended.
    pub fn closed_later(&self) -> u64 {
        self.closed_later.load(Ordering::Relaxed)
    }

    /// Connections that could not be opened at all.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// One attacking connection from `ip`: idle, or slowloris with `slow`.
    /// Runs until the server closes it (or the attack is dropped).
    pub async fn besiege(self, addr: SocketAddr, ip: Ipv4Addr, slow: bool) {
        let opened = Instant::now();
        let stream = async {
            let socket = TcpSocket::new_v4()?;
            socket.bind(SocketAddr::from((ip, 0)))?;
            socket.connect(addr).await
        };
        let Ok(stream) = stream.await else {
            self.failed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let (mut read, mut write) = stream.into_split();
        let closed = async move {
            let mut buf = [0u8; 1024];
            while let Ok(1..) = read.read(&mut buf).await {}
        };
        tokio::pin!(closed);
        if slow {
            let _ = write
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n")
                .await;
        }
        let mut served = None;
        let mut drip = interval(DRIP);
        loop {
            tokio::select! {
                () = &mut closed => break,
                _ = drip.tick() => {
                    if served.is_none() && opened.elapsed() >= REFUSED_WITHIN {
                        served = Some(Served::new(&self));
                    }
                    if slow {
                        let _ = write.write_all(b"X").await;
                    }
                }
            }
        }
        let counter = match served {
            Some(_) => &self.closed_later,
            None => &self.refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The server's count of metrics connections it closed at once
/// (`chat_metrics_connections_refused`), scraped from `addr`; tried again
/// for a while, since the port may still be full as the attack ends.
pub async fn refused_by_server(addr: &str) -> io::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match scrape(addr).await {
            Ok(text) => {
                return text
                    .lines()
                    .filter(|l| l.starts_with("chat_metrics_connections_refused"))
                    .find_map(|l| l.split_whitespace().last()?.parse().ok())
                    .ok_or_else(|| {
                        io::Error::other("no chat_metrics_connections_refused in /metrics")
                    })
            }
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => sleep(Duration::from_millis(100)).await,
        }
    }
}

/// One `GET /metrics`: the body (and headers) as text.
async fn scrape(addr: &str) -> io::Result<String> {
    let read = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            .await?;
        let mut text = String::new();
        stream.read_to_string(&mut text).await?;
        if !text.starts_with("HTTP/1.1 200") {
            return Err(io::Error::other("the metrics port did not answer 200"));
        }
        Ok(text)
    };
    timeout(Duration::from_secs(2), read)
        .await
        .map_err(|_| io::Error::other("the metrics port did not answer in time"))?
}
