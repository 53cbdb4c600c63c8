//! Case 3, slowloris: hundreds of connections that trickle `NAME …` one
//! byte a second and never finish the line. Each is closed with
//! `ERROR login-timeout` at `--login-timeout` (not before, not long after),
//! the witnesses notice nothing, and every descriptor is given back.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use super::{assert_alive, server, Row};
use crate::probe::{self, Usage};
use crate::wire::{self, Next};
use crate::witness::Witnesses;
use crate::TIMEOUT;

/// Lateness allowed past the timeout: hundreds of timers fire at once on a
/// shared two-core machine, in a debug build.
const SLACK: Duration = Duration::from_secs(3);

pub async fn slowloris(scale: &super::Scale, _seed: u64) -> Row {
    let started = Instant::now();
    let timeout = scale.login_timeout;
    let server = server(&["--login-timeout", &format!("{}ms", timeout.as_millis())]);
    let witnesses = Witnesses::start(server.addr()).await;
    let idle = Usage::of(server.pid());
    let mut trickles = Vec::new();
    for i in 0..scale.slowloris_connections {
        trickles.push(tokio::spawn(trickle(server.addr(), i, timeout)));
    }
    let mut sent = 0;
    let mut latest = Duration::ZERO;
    let mut earliest = Duration::MAX;
    for trickle in trickles {
        let (bytes, after) = trickle.await.expect("a slowloris connection");
        sent += bytes;
        latest = latest.max(after);
        earliest = earliest.min(after);
    }
    assert!(
        earliest >= timeout,
        "a connection was closed after {earliest:?}, before the {timeout:?} login timeout"
    );
    assert!(
        latest <= timeout + SLACK,
        "a connection was closed only after {latest:?} (timeout {timeout:?})"
    );
    let fds = probe::eventually("file descriptors back to idle", TIMEOUT, || {
        let now = Usage::of(server.pid()).fds;
        if now <= idle.fds {
            Ok(now)
        } else {
            Err(now)
        }
    })
    .await;
    let verdict = witnesses.finish().await;
    verdict.assert_intact();
    assert!(
        verdict.events.is_empty(),
        "a slowloris logged in: {:?}",
        verdict.events
    );
    assert_alive(&server, "slowloris");
    let mut row = Row::new("3 slowloris", started);
    row.tried = format!(
        "{} connections trickling `NAME …` one byte a second, never ending the line \
         ({sent} bytes); `--login-timeout {}ms`",
        scale.slowloris_connections,
        timeout.as_millis()
    );
    row.held = format!(
        "all closed with `ERROR login-timeout`, the first {:.2} s and the last {:.2} s after \
         connecting; server fds back to idle ({} → {fds}); {}",
        earliest.as_secs_f64(),
        latest.as_secs_f64(),
        idle.fds,
        verdict.summary()
    );
    row.lost = verdict.lost;
    row
}

/// One slowloris connection: returns the bytes it trickled and when the
/// server closed it.
async fn trickle(addr: SocketAddr, i: usize, timeout: Duration) -> (usize, Duration) {
    // Taken before connecting: the server's clock starts at its accept,
    // which comes later, so a timeout is never measured early.
    let connected = Instant::now();
    let (mut reader, mut writer) = wire::connect(addr).await;
    let name = format!("NAME slowloris{i}");
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    let dribble = tokio::spawn(async move {
        for &byte in name.as_bytes() {
            if writer.write_all(&[byte]).await.is_err() {
                break;
            }
            counter.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let first = reader.next(timeout + SLACK + TIMEOUT).await;
    let after = connected.elapsed();
    match first {
        Next::Line(line) if line.starts_with("ERROR login-timeout") => {}
        other => panic!("slowloris {i}: expected ERROR login-timeout, got {other:?}"),
    }
    dribble.abort();
    let sent = sent.load(Ordering::Relaxed);
    match reader.next(TIMEOUT).await {
        Next::Closed => {}
        other => panic!("slowloris {i}: expected the connection closed, got {other:?}"),
    }
    (sent, after)
}
