//! Case 7, slow readers at scale: many users who never read while senders
//! chat. The server's memory stays under a bound derived from
//! `--client-buffer` and its per-connection output limit; when the slow ones
//! resume, each is told `DROPPED <n>` and what it received plus what it was
//! told it missed is exactly everything broadcast since its login; the
//! witnesses lose nothing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use super::{assert_alive, server, Row, RssWatch};
use crate::probe::Usage;
use crate::wire::{self, LineReader};
use crate::witness::Witnesses;
use crate::Client;

/// `--client-buffer`: broadcast frames a connection may fall behind.
const CLIENT_BUFFER: usize = 256;
/// The most output a client that does not read may hold in the server
/// besides its backlog of frames (`PROTOCOL.md`, "Budgets": 512 KiB).
const UNREAD_OUTPUT_KIB: u64 = 512;
/// Text padding each sender's message: large enough that even the fast
/// run's traffic overflows what the kernel buffers for a stuck reader.
const PADDING: usize = 1000;

/// The RSS the server may reach with `slow` stuck readers, and how it is
/// made up, in KiB.
struct Bound {
    idle: u64,
    /// The newest frames, held once however many inboxes point at them.
    shared_frames: u64,
    per_connection: u64,
    slack: u64,
    connections: u64,
}

impl Bound {
    fn new(idle: u64, connections: usize) -> Bound {
        let frame = (PADDING + 32) as u64;
        Bound {
            idle,
            // Stuck inboxes keep the newest CLIENT_BUFFER frames each, the
            // same frames for all of them.
            shared_frames: (CLIENT_BUFFER as u64 * (frame + 64)).div_ceil(1024),
            // A stuck connection's inbox holds CLIENT_BUFFER references (at
            // most 64 B each), its unread output the contract's budget, plus
            // a read buffer of up to a line, and the session.
            per_connection: (CLIENT_BUFFER as u64 * 64).div_ceil(1024) + UNREAD_OUTPUT_KIB + 5 + 16,
            slack: 16 * 1024,
            connections: connections as u64,
        }
    }

    fn total(&self) -> u64 {
        self.idle + self.shared_frames + self.connections * self.per_connection + self.slack
    }

    fn explain(&self) -> String {
        format!(
            "{:.0} MiB = idle {:.1} + shared frames {} × {} B ({} KiB) + {} × {} KiB per connection + {} MiB slack",
            self.total() as f64 / 1024.0,
            self.idle as f64 / 1024.0,
            CLIENT_BUFFER,
            PADDING + 32 + 64,
            self.shared_frames,
            self.connections,
            self.per_connection,
            self.slack / 1024
        )
    }
}

pub async fn slow_readers(scale: &super::Scale, _seed: u64) -> Row {
    let started = Instant::now();
    let buffer = CLIENT_BUFFER.to_string();
    let server = server(&["--client-buffer", &buffer]);
    let idle = Usage::of(server.pid());
    let n = scale.slow_readers;
    let mut slow = Vec::with_capacity(n);
    for i in 0..n {
        let mut client = Client::connect_small_buffer(server.addr()).await;
        client.login(&format!("slow{i}")).await;
        slow.push(client);
    }
    let watch = RssWatch::start(server.pid());
    let witnesses = Witnesses::start(server.addr()).await;
    let mut senders = Vec::new();
    for j in 0..scale.slow_senders {
        let (reader, writer) = wire::login(server.addr(), &format!("s{j}")).await;
        senders.push(tokio::spawn(sender(
            j,
            reader,
            writer,
            scale.slow_chat,
            scale.slow_pace,
        )));
    }
    let mut sent = 0;
    // The senders stay: one leaving would be one more broadcast.
    let mut connections = Vec::new();
    for sender in senders {
        let (count, reader, writer) = sender.await.expect("a sender");
        sent += count;
        connections.push((reader, writer));
    }
    let verdict = witnesses.finish().await;
    verdict.assert_intact();
    let (reader, writer) = &mut connections[0];
    // The witnesses' BYE can come before the room hears their LEAVE (the
    // hub announces it a moment later), so the end marker waits until s0
    // has seen both: the one order puts it after them for everyone.
    let mut left = 0;
    while left < 2 {
        if reader.line().await.starts_with("LEAVE witness-") {
            left += 1;
        }
    }
    writer.write_all(b"MSG end\n").await.expect("send");
    while reader.line().await != "MSG s0 end" {}
    let peak = watch.peak_kib();
    let peak_tcp = watch.peak_tcp_kib();
    let bound = Bound::new(idle.rss_kib, n);
    assert!(
        peak <= bound.total(),
        "server RSS {peak} KiB with {n} slow readers, over the bound {}",
        bound.explain()
    );
    // JOINs of later slow users, of the witnesses and the senders, every
    // message, the witnesses' LEAVEs, and the end marker.
    let broadcast_after_all = 2 + scale.slow_senders as u64 + sent + verdict.sent + 2 + 1;
    let mut resumed = Vec::new();
    for (i, client) in slow.into_iter().enumerate() {
        let expected = (n - 1 - i) as u64 + broadcast_after_all;
        resumed.push(tokio::spawn(resume(i, client, expected)));
    }
    let mut least_dropped = u64::MAX;
    let mut most_dropped = 0;
    let mut caught_up = Vec::new();
    for task in resumed {
        let (dropped, client) = task.await.expect("a slow reader");
        least_dropped = least_dropped.min(dropped);
        most_dropped = most_dropped.max(dropped);
        caught_up.push(client);
    }
    // Nothing more was owed to anyone.
    for client in &mut caught_up {
        client.expect_quiet().await;
    }
    assert_alive(&server, "slow readers");
    let mut row = Row::new("7 slow readers", started);
    row.tried = format!(
        "{n} users who never read (2 KiB receive buffers) while {} senders chatted \
         {:.0} s ({sent} messages of {} B, {:.0}/s); `--client-buffer {CLIENT_BUFFER}`",
        scale.slow_senders,
        scale.slow_chat.as_secs_f64(),
        PADDING + 10,
        sent as f64 / scale.slow_chat.as_secs_f64()
    );
    row.held = format!(
        "server RSS peaked at {:.1} MiB, under the bound {}; on resuming every slow user \
         got `DROPPED` ({least_dropped} to {most_dropped} frames) and received + dropped = \
         exactly all broadcasts since its login, in order; {}; (not bounded by the server: \
         the host's TCP buffers peaked at {:.0} MiB)",
        peak as f64 / 1024.0,
        bound.explain(),
        verdict.summary(),
        peak_tcp as f64 / 1024.0
    );
    row.lost = verdict.lost;
    row.peak_rss_mib = Some(peak as f64 / 1024.0);
    row
}

/// One sender: a message every `pace` for `chat`, reading everything
/// meanwhile; returns how many it sent and its connection.
async fn sender(
    j: usize,
    reader: LineReader,
    mut writer: tokio::net::tcp::OwnedWriteHalf,
    chat: Duration,
    pace: Duration,
) -> (u64, LineReader, tokio::net::tcp::OwnedWriteHalf) {
    let token = format!("PONG s{j}-end");
    let drain = tokio::spawn(async move {
        let mut reader = reader;
        reader.until(&token).await;
        reader
    });
    let padding = "s".repeat(PADDING);
    let mut pace = tokio::time::interval(pace);
    let deadline = Instant::now() + chat;
    let mut sent = 0;
    while Instant::now() < deadline {
        pace.tick().await;
        writer
            .write_all(format!("MSG {sent} {padding}\n").as_bytes())
            .await
            .expect("send");
        sent += 1;
    }
    writer
        .write_all(format!("PING s{j}-end\n").as_bytes())
        .await
        .expect("send");
    let reader = drain.await.expect("a sender's reader");
    (sent, reader, writer)
}

/// A slow reader reads at last: frames in order, `DROPPED` at least once,
/// and received + dropped = `expected`. Returns how many it was told it
/// missed, and the client (kept: its leaving would be a broadcast).
async fn resume(i: usize, mut client: Client, expected: u64) -> (u64, Client) {
    let mut received = 0;
    let mut dropped = 0;
    let mut next: HashMap<String, u64> = HashMap::new();
    loop {
        let line = client.recv().await;
        if let Some(n) = line.strip_prefix("DROPPED ") {
            dropped += n.parse::<u64>().expect("DROPPED <n>");
            continue;
        }
        received += 1;
        if line == "MSG s0 end" {
            break;
        }
        let mut parts = line.splitn(4, ' ');
        if parts.next() != Some("MSG") {
            continue;
        }
        let from = parts.next().expect("sender").to_owned();
        let Some(number) = parts.next().and_then(|n| n.parse::<u64>().ok()) else {
            continue;
        };
        let due = next.entry(from.clone()).or_default();
        assert!(
            number >= *due,
            "slow{i}: {from}'s {number} came after {}",
            *due - 1
        );
        *due = number + 1;
    }
    assert!(dropped > 0, "slow{i} was never told it missed frames");
    assert_eq!(
        received + dropped,
        expected,
        "slow{i}: {received} received + {dropped} dropped"
    );
    (dropped, client)
}

/// Frames a stuck reader may fall behind before it must be told `DROPPED`
/// in [`stuck_reader_backlog`]: its `--client-buffer` (64), the server's
/// 64 KiB output queue (64 frames of 1 KiB), and 256 KiB of kernel buffers
/// on both ends, with room to spare.
const STUCK_ALLOWANCE: usize = 512;

/// The minimal reproduction for the backlog bug: one reader that stops
/// reading, `--client-buffer 64`, and 2 000 messages of 1 KiB. The
/// contract bounds a connection's backlog by `--client-buffer` frames; this
/// server leaves the kernel to buffer for a stuck reader, whose socket send
/// buffer autotunes to megabytes, so the reader falls thousands of frames
/// behind before it is told `DROPPED`, if it ever is, and the host holds
/// megabytes of kernel memory for each stuck client.
pub async fn stuck_reader_backlog(_scale: &super::Scale, _seed: u64) -> Row {
    const FRAMES: usize = 2_000;
    let started = Instant::now();
    let server = server(&["--client-buffer", "64"]);
    let (mut stuck, mut stuck_out) = wire::connect_small_buffer(server.addr()).await;
    stuck_out.write_all(b"NAME stuck\n").await.expect("send");
    assert_eq!(stuck.line().await, "WELCOME stuck");
    assert_eq!(stuck.line().await, "NAMES stuck");
    let stuck_port = stuck_out.local_addr().expect("local address").port();
    let (mut talker, mut talker_out) = wire::login(server.addr(), "talker").await;
    let padding = "k".repeat(1000);
    let mut burst = String::new();
    for n in 0..FRAMES {
        burst.push_str(&format!("MSG {n} {padding}\n"));
    }
    burst.push_str("PING burst\n");
    let send = async { talker_out.write_all(burst.as_bytes()).await.expect("send") };
    let echoes = async { talker.until("PONG burst").await.len() };
    let ((), echoed) = tokio::join!(send, echoes);
    assert_eq!(echoed, FRAMES, "the talker keeps up and gets every echo");
    let in_kernel = crate::probe::send_queue(server.addr().port(), stuck_port).unwrap_or(0);
    // The stuck reader wakes up.
    stuck_out.write_all(b"PING wake\n").await.expect("send");
    let mut behind = 0;
    let mut dropped = 0;
    loop {
        let line = stuck.line().await;
        if line == "PONG wake" {
            break;
        }
        match line.strip_prefix("DROPPED ") {
            Some(n) => dropped += n.parse::<usize>().expect("DROPPED <n>"),
            None if dropped == 0 => behind += 1,
            None => {}
        }
    }
    assert!(
        dropped > 0 && behind <= STUCK_ALLOWANCE,
        "with --client-buffer 64, a reader that stopped reading got {behind} frames \
         ({} KiB) before any DROPPED ({dropped} dropped in all); the server's kernel send \
         queue to it held {in_kernel} bytes",
        behind
    );
    let mut row = Row::new("7b stuck reader backlog", started);
    row.tried = format!("one stuck reader, `--client-buffer 64`, {FRAMES} messages of 1 KiB");
    row.held = format!(
        "it fell {behind} frames behind before `DROPPED` (allowed {STUCK_ALLOWANCE}); \
         kernel send queue {in_kernel} bytes"
    );
    row
}
