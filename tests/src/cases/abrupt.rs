//! Case 4, half-open and abrupt ends: users who vanish in the middle of a
//! line (with a FIN or a reset), reset their connection, half-close it,
//! send their `NAME` as a last unterminated line, or are killed with
//! SIGKILL while the server is writing to them. Each is announced by
//! exactly one `LEAVE`, and its name can be taken again at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;

use super::{assert_alive, server, Row};
use crate::wire::{self, LineReader, Next};
use crate::witness::{Event, Witnesses};
use crate::TIMEOUT;

/// The ways a client goes away.
const KINDS: [&str; 7] = [
    "cutfin",
    "cutclose",
    "cutrst",
    "reset",
    "halfclose",
    "eofname",
    "killed",
];

/// Messages the talker sends each round while the victims do not read, so
/// that the server is in the middle of writing to them when they go.
const BURST: usize = 64;
const PADDING: usize = 4000;

pub async fn abrupt_ends(scale: &super::Scale, _seed: u64) -> Row {
    let started = Instant::now();
    let server = server(&[]);
    let witnesses = Witnesses::start(server.addr()).await;
    let (talker_in, mut talker) = wire::login(server.addr(), "talker").await;
    let drain = tokio::spawn(drain(talker_in));
    let padding = "p".repeat(PADDING);
    let mut said = 0;
    let mut names = Vec::new();
    for round in 0..scale.abrupt_rounds {
        let victims = Victims::arrive(server.addr(), round, &witnesses).await;
        let mut burst = String::new();
        for _ in 0..BURST {
            burst.push_str(&format!("MSG {said} {padding}\n"));
            said += 1;
        }
        talker.write_all(burst.as_bytes()).await.expect("talker");
        let gone = victims.vanish().await;
        for name in &gone {
            witnesses.wait_seen(&Event::Leave(name.clone()), 1).await;
        }
        // The names are free at once: the first try succeeds.
        for name in &gone {
            let (mut reader, mut writer) = wire::login(server.addr(), name).await;
            writer.write_all(b"LEAVE\n").await.expect("send");
            while reader.line().await != "BYE" {}
        }
        for name in &gone {
            witnesses.wait_seen(&Event::Leave(name.clone()), 2).await;
        }
        names.extend(gone);
    }
    let verdict = witnesses.finish().await;
    verdict.assert_intact();
    let events = &verdict.events;
    let talked = verdict.foreign_from("talker");
    let cut_off: HashMap<&String, u64> = names
        .iter()
        .map(|name| (name, verdict.foreign_from(name).count))
        .collect();
    drain.abort();
    let expected = |name: &str| {
        vec![
            Event::Join(name.to_owned()),
            Event::Leave(name.to_owned()),
            Event::Join(name.to_owned()),
            Event::Leave(name.to_owned()),
        ]
    };
    for name in &names {
        let theirs: Vec<Event> = events
            .iter()
            .filter(|e| matches!(e, Event::Join(n) | Event::Leave(n) if n == name))
            .cloned()
            .collect();
        assert_eq!(
            theirs,
            expected(name),
            "{name}: not exactly one LEAVE a login"
        );
        // A line cut off by a clean end still counts; one cut off by a reset
        // never arrived whole; a FIN and a reset close behind it race.
        let partial = match name.trim_end_matches(|c: char| c.is_ascii_digit()) {
            "cutfin" => 1..=1,
            "cutclose" => 0..=1,
            _ => 0..=0,
        };
        assert!(
            partial.contains(&cut_off[name]),
            "{name}'s unfinished line was broadcast {} times",
            cut_off[name]
        );
    }
    assert_eq!(
        (talked.count, talked.misnumbered),
        (said as u64, 0),
        "the talker's messages"
    );
    assert_alive(&server, "abrupt ends");
    let mut row = Row::new("4 abrupt ends", started);
    row.tried = format!(
        "{} rounds × {} ways to vanish ({}) while a talker sent {} × {} B the victims never \
         read; then each name taken again",
        scale.abrupt_rounds,
        KINDS.len(),
        KINDS.join(", "),
        BURST,
        PADDING
    );
    row.held = format!(
        "every one of the {} logins announced by exactly one `LEAVE`; every name free again \
         at the first `NAME`; the cut-off line handled after a FIN, never after a reset; {}",
        names.len() * 2,
        verdict.summary()
    );
    row.lost = verdict.lost;
    row
}

/// One round's victims, logged in and not reading.
struct Victims {
    connected: Vec<(String, LineReader, OwnedWriteHalf)>,
    eof_name: (String, LineReader, OwnedWriteHalf),
    killed: (String, tokio::process::Child),
}

impl Victims {
    async fn arrive(addr: SocketAddr, round: usize, witnesses: &Witnesses) -> Victims {
        let mut connected = Vec::new();
        for kind in ["cutfin", "cutclose", "cutrst", "reset", "halfclose"] {
            let name = format!("{kind}{round}");
            let (reader, writer) = wire::login(addr, &name).await;
            connected.push((name, reader, writer));
        }
        let eof = format!("eofname{round}");
        let (reader, writer) = wire::connect(addr).await;
        let eof_name = (eof, reader, writer);
        // A separate process, so SIGKILL is a real death: the kernel closes
        // its socket with data still unread.
        let killed = format!("killed{round}");
        let child = tokio::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "exec 3<>/dev/tcp/{}/{} && printf 'NAME {killed}\\n' >&3 && exec sleep 30",
                addr.ip(),
                addr.port()
            ))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn bash");
        witnesses.wait_seen(&Event::Join(killed.clone()), 1).await;
        Victims {
            connected,
            eof_name,
            killed: (killed, child),
        }
    }

    /// Makes every victim go, each its own way; returns their names.
    async fn vanish(self) -> Vec<String> {
        let mut names = Vec::new();
        let mut half_closed = Vec::new();
        for (name, mut reader, mut writer) in self.connected {
            match name.trim_end_matches(|c: char| c.is_ascii_digit()) {
                "cutfin" | "halfclose" => {
                    if name.starts_with("cutfin") {
                        writer.write_all(b"MSG partial line").await.expect("send");
                    }
                    writer.shutdown().await.expect("half-close");
                    half_closed.push(tokio::spawn(async move {
                        // Whatever was queued, then the server's close.
                        loop {
                            match reader.next(TIMEOUT).await {
                                Next::Line(_) => {}
                                Next::Closed => break,
                                other => panic!("half-closed client got {other:?}"),
                            }
                        }
                        drop(writer);
                    }));
                }
                "cutclose" => {
                    // Closing with unread input: Linux sends the FIN, then a
                    // reset for the unread data.
                    writer.write_all(b"MSG partial line").await.expect("send");
                    drop((reader, writer));
                }
                "cutrst" => {
                    writer.write_all(b"MSG partial line").await.expect("send");
                    wire::reset(reader, writer);
                }
                _ => wire::reset(reader, writer),
            }
            names.push(name);
        }
        let (name, mut reader, mut writer) = self.eof_name;
        writer
            .write_all(format!("NAME {name}").as_bytes())
            .await
            .expect("send");
        writer.shutdown().await.expect("half-close");
        assert_eq!(reader.line().await, format!("WELCOME {name}"));
        assert!(reader.line().await.starts_with("NAMES "));
        loop {
            match reader.next(TIMEOUT).await {
                Next::Line(_) => {}
                Next::Closed => break,
                other => panic!("{name} got {other:?}"),
            }
        }
        names.push(name);
        let (name, mut child) = self.killed;
        child.start_kill().expect("SIGKILL");
        child.wait().await.expect("reap the killed client");
        names.push(name);
        for task in half_closed {
            task.await.expect("half-closed client");
        }
        names
    }
}

/// Reads and forgets everything: a client that keeps up.
async fn drain(mut reader: LineReader) {
    while let Next::Line(_) = reader.next(TIMEOUT * 100).await {}
}
