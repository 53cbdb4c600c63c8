//! Case 8, limits. A connection storm past `--max-clients`: exactly the
//! excess get `ERROR server-full`, and freed places are given out again at
//! once. Then the server runs out of file descriptors (its limit lowered
//! with `prlimit`): the accept loop neither dies nor spins, the users already
//! in are served, and the waiting connections are served as descriptors come
//! back.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

use super::{assert_alive, server, Row};
use crate::probe::{self, Usage};
use crate::wire::{self, LineReader, Next};
use crate::witness::Witnesses;
use crate::TIMEOUT;

/// Descriptors the server is left beyond those it has open when its limit
/// is lowered.
const SPARE_FDS: u64 = 20;
/// Free descriptor numbers the server may have below its highest open one.
const HOLES: u64 = 4;
/// CPU the server may use in a second while it cannot accept: a spinning
/// accept loop would take the whole second.
const CPU_WHILE_EXHAUSTED: Duration = Duration::from_millis(200);

pub async fn limits(scale: &super::Scale, _seed: u64) -> Row {
    let started = Instant::now();
    let storm = storm(scale).await;
    let exhaustion = exhaustion(scale).await;
    let mut row = Row::new("8 limits", started);
    row.tried = format!("{}; {}", storm.0, exhaustion.0);
    row.held = format!("{}; {}", storm.1, exhaustion.1);
    row.lost = storm.2 + exhaustion.2;
    row
}

/// What one connection of a storm got.
enum Outcome {
    Admitted(LineReader, tokio::net::tcp::OwnedWriteHalf),
    Refused,
}

/// Connects and pings: admitted if `PONG` comes, refused if
/// `ERROR server-full` and a close come.
async fn knock(addr: SocketAddr) -> Outcome {
    let (mut reader, mut writer) = wire::connect(addr).await;
    // The refusal may close before the PING is read: a failed write is fine.
    let _ = writer.write_all(b"PING knock\n").await;
    let first = reader.line().await;
    if first == "PONG knock" {
        return Outcome::Admitted(reader, writer);
    }
    assert!(
        first.starts_with("ERROR server-full"),
        "expected PONG or ERROR server-full, got {first:?}"
    );
    match reader.next(TIMEOUT).await {
        Next::Closed => Outcome::Refused,
        other => panic!("a refused connection got {other:?} instead of a close"),
    }
}

async fn storm(scale: &super::Scale) -> (String, String, u64) {
    let max = scale.max_clients;
    let server = server(&["--max-clients", &max.to_string()]);
    let witnesses = Witnesses::start(server.addr()).await;
    let room = max - 2;
    let total = room + scale.storm_excess;
    let mut knocks = Vec::new();
    for _ in 0..total {
        knocks.push(tokio::spawn(knock(server.addr())));
    }
    let mut admitted = Vec::new();
    let mut refused = 0;
    for knock in knocks {
        match knock.await.expect("a storm connection") {
            Outcome::Admitted(reader, writer) => admitted.push((reader, writer)),
            Outcome::Refused => refused += 1,
        }
    }
    assert_eq!(
        (admitted.len(), refused),
        (room, scale.storm_excess),
        "admitted and refused in a storm of {total} with {room} places free"
    );
    // Half of them leave; their places are taken again straight away.
    let freed = admitted.len() / 2;
    admitted.truncate(admitted.len() - freed);
    let mut retries = 0;
    let reopened = Instant::now();
    for _ in 0..freed {
        loop {
            match knock(server.addr()).await {
                Outcome::Admitted(reader, writer) => {
                    admitted.push((reader, writer));
                    break;
                }
                Outcome::Refused => {
                    retries += 1;
                    assert!(
                        reopened.elapsed() < TIMEOUT,
                        "freed places were not given out again"
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }
    let regained = reopened.elapsed();
    assert!(
        matches!(knock(server.addr()).await, Outcome::Refused),
        "one more than the limit was admitted"
    );
    let verdict = witnesses.finish().await;
    verdict.assert_intact();
    assert_alive(&server, "connection storm");
    (
        format!(
            "a storm of {total} simultaneous connections on `--max-clients {max}` (2 taken \
             by the witnesses), then {freed} leaving and {freed} new ones"
        ),
        format!(
            "exactly {refused} got `ERROR server-full` and a close, {room} were served; the \
             {freed} freed places were taken again in {:.0} ms ({retries} refusals while the \
             leavers' sessions ended), the next one refused; {}",
            regained.as_secs_f64() * 1000.0,
            verdict.summary()
        ),
        verdict.lost,
    )
}

/// One connection waiting to be served: it pings once and reports when
/// the `PONG` comes, then stays until told to go.
async fn patient(
    addr: SocketAddr,
    me: usize,
    served: Arc<Mutex<Vec<usize>>>,
    go: oneshot::Receiver<()>,
) {
    let (mut reader, mut writer) = wire::connect(addr).await;
    writer.write_all(b"PING patient\n").await.expect("send");
    match reader.next(Duration::from_secs(60)).await {
        Next::Line(line) if line == "PONG patient" => {}
        other => panic!("a waiting connection got {other:?}"),
    }
    served.lock().expect("served list").push(me);
    let _ = go.await;
}

/// Waits until `count` has not changed for half a second.
async fn settle(count: &impl Fn() -> usize) {
    let quiet = Duration::from_millis(500);
    let started = Instant::now();
    let mut last = (count(), Instant::now());
    while last.1.elapsed() < quiet && started.elapsed() < TIMEOUT {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = count();
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
}

async fn exhaustion(scale: &super::Scale) -> (String, String, u64) {
    let server = server(&[]);
    let witnesses = Witnesses::start(server.addr()).await;
    let before = Usage::of(server.pid()).fds as u64;
    let limit = before + SPARE_FDS;
    probe::set_fd_soft_limit(server.pid(), limit);
    let total = SPARE_FDS as usize + scale.fd_excess;
    let served = Arc::new(Mutex::new(Vec::new()));
    let count = || served.lock().expect("served list").len();
    let mut goes = Vec::new();
    let mut waiting = Vec::new();
    for me in 0..total {
        let (go, gone) = oneshot::channel();
        goes.push(Some(go));
        waiting.push(tokio::spawn(patient(
            server.addr(),
            me,
            served.clone(),
            gone,
        )));
    }
    probe::eventually("some connections served", TIMEOUT, || match count() {
        0 => Err(0),
        n => Ok(n),
    })
    .await;
    // The loop keeps failing to accept: it must pause, not spin. The
    // witnesses fall silent and the logins in progress finish first, so
    // the second measured holds the accept loop's work and little else.
    witnesses.pause(true);
    settle(&count).await;
    let cpu_before = Usage::of(server.pid()).cpu;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu = Usage::of(server.pid()).cpu - cpu_before;
    witnesses.pause(false);
    let first_served = served.lock().expect("served list").clone();
    let at_limit = first_served.len();
    // The limit bounds descriptor numbers, not their count: holes left by
    // earlier closes below the highest one may be reused too.
    assert!(
        at_limit as u64 <= SPARE_FDS + HOLES && at_limit < total,
        "{at_limit} of {total} served with {SPARE_FDS} spare descriptors"
    );
    assert!(
        cpu < CPU_WHILE_EXHAUSTED,
        "the server used {cpu:?} of CPU in 1 s while out of descriptors"
    );
    assert_alive(&server, "descriptor exhaustion");
    // The served ones leave: waiting ones take their descriptors.
    for me in first_served {
        if let Some(go) = goes[me].take() {
            let _ = go.send(());
        }
    }
    let after_leaving = probe::eventually("waiting connections served", TIMEOUT, || {
        let n = count();
        if n >= (2 * at_limit).min(total) {
            Ok(n)
        } else {
            Err(n)
        }
    })
    .await;
    // With the limit back, everyone is served.
    probe::set_fd_soft_limit(server.pid(), u64::MAX);
    probe::eventually("all waiting connections served", TIMEOUT, || {
        let n = count();
        if n == total {
            Ok(n)
        } else {
            Err(n)
        }
    })
    .await;
    for go in goes.into_iter().flatten() {
        let _ = go.send(());
    }
    for task in waiting {
        task.await.expect("a waiting connection");
    }
    let verdict = witnesses.finish().await;
    verdict.assert_intact();
    assert_alive(&server, "descriptor exhaustion");
    (
        format!(
            "{total} connections with the server's descriptor limit lowered to {limit} \
             ({SPARE_FDS} spare)"
        ),
        format!(
            "{at_limit} served at the limit, the rest waited; the accept loop used {:.0} ms of \
             CPU in 1 s; {after_leaving} served once the first left, all {total} once the limit \
             was raised; {}",
            cpu.as_secs_f64() * 1000.0,
            verdict.summary()
        ),
        verdict.lost,
    )
}
