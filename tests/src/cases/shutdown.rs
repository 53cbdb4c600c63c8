//! Case 9, shutdown under load: SIGTERM while many users chat (and some
//! connections have not logged in). Every connection gets
//! `ERROR shutting-down` as its last line and a clean close, the witnesses
//! lose nothing before it, and the process exits 0 within 5 s.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::{server, Row};
use crate::wire::{self, LineReader, Next};
use crate::witness::Witnesses;

/// The contract's bound on a shutdown.
const EXIT_WITHIN: Duration = Duration::from_secs(5);
/// Connections that never log in.
const ANONYMOUS: usize = 20;
/// Messages a second from all the users together.
const RATE: f64 = 400.0;

pub async fn shutdown_under_load(scale: &super::Scale, _seed: u64) -> Row {
    let started = Instant::now();
    let mut server = server(&[]);
    let witnesses = Witnesses::start(server.addr()).await;
    let (stop, stopped) = watch::channel(false);
    let users = scale.shutdown_users;
    let pace = Duration::from_secs_f64(users as f64 / RATE);
    let mut readers = Vec::new();
    for batch in (0..users).collect::<Vec<_>>().chunks(50) {
        let mut logins = Vec::new();
        for &i in batch {
            logins.push(tokio::spawn(user(server.addr(), i, pace, stopped.clone())));
        }
        for login in logins {
            readers.push(login.await.expect("a user logs in"));
        }
    }
    for _ in 0..ANONYMOUS {
        let (reader, _writer) = wire::connect(server.addr()).await;
        readers.push(tokio::spawn(to_the_end(reader, _writer)));
    }
    tokio::time::sleep(scale.shutdown_chat).await;
    let signalled = Instant::now();
    server.signal(libc::SIGTERM);
    let status = tokio::task::block_in_place(|| server.wait_exit(EXIT_WITHIN))
        .expect("the server exits within 5 s of SIGTERM");
    let exited = signalled.elapsed();
    assert!(status.success(), "exit status {status}");
    let _ = stop.send(true);
    let mut endings = std::collections::BTreeMap::new();
    for reader in readers {
        let ending = reader.await.expect("a connection");
        *endings.entry(ending).or_insert(0) += 1;
    }
    let verdict = witnesses.finish_at_shutdown().await;
    verdict.assert_cut_by_shutdown();
    let told = "ERROR shutting-down, then closed".to_owned();
    assert_eq!(
        endings.keys().collect::<Vec<_>>(),
        [&told],
        "how the connections ended: {endings:?}"
    );
    let mut row = Row::new("9 shutdown under load", started);
    row.tried = format!(
        "SIGTERM while {users} users chatted ({RATE:.0} messages/s in all, each reading \
         everything) and {ANONYMOUS} connections had not logged in"
    );
    row.held = format!(
        "all {} connections got `ERROR shutting-down` as their last line, then a clean \
         close; exit status 0 after {:.2} s (limit 5 s); witnesses lost nothing before \
         the shutdown ({} delivered)",
        users + ANONYMOUS + 2,
        exited.as_secs_f64(),
        verdict.delivered
    );
    row
}

/// A user who chats at `pace` and reads everything; the task returns how
/// its connection ended.
async fn user(
    addr: SocketAddr,
    i: usize,
    pace: Duration,
    mut stopped: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<String> {
    let (mut reader, mut writer) = wire::login(addr, &format!("u{i}")).await;
    let (done, mut finished) = tokio::sync::oneshot::channel();
    let ended = tokio::spawn(async move {
        let ending = last_line(&mut reader).await;
        let _ = done.send(());
        ending
    });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(pace);
        let mut n = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut finished => break,
                _ = stopped.changed() => break,
            }
            let frame = format!("MSG {n} chat\n");
            if writer.write_all(frame.as_bytes()).await.is_err() {
                break;
            }
            n += 1;
        }
        // Closing at once lets the server's lingering close finish.
        drop(writer);
        ended.await.expect("a user's reader")
    })
}

/// A connection that never logs in; returns how it ended.
async fn to_the_end(mut reader: LineReader, _writer: tokio::net::tcp::OwnedWriteHalf) -> String {
    last_line(&mut reader).await
}

/// Reads until the connection ends and describes how.
async fn last_line(reader: &mut LineReader) -> String {
    let mut last = None;
    loop {
        match reader.next(Duration::from_secs(30)).await {
            Next::Line(line) => last = Some(line),
            Next::Closed => {
                return match last {
                    Some(line) if line.starts_with("ERROR shutting-down") => {
                        "ERROR shutting-down, then closed".into()
                    }
                    other => format!("closed after {other:?}"),
                }
            }
            other => return format!("{other:?} after {last:?}"),
        }
    }
}
