//! "No frame is ever lost for a client that keeps up" (`PROTOCOL.md`,
//! Ordering and delivery), at a backlog far smaller than the bursts: the
//! server must slow the senders, never skip frames for readers that read.

use std::collections::HashMap;

use chat_tests::wire::{self, LineReader};
use chat_tests::Server;
use tokio::io::AsyncWriteExt;

/// Reads until `messages` `MSG` frames have arrived; returns them in order.
/// Any `DROPPED` fails: this reader reads everything its socket receives.
async fn read_messages(who: String, mut reader: LineReader, messages: usize) -> Vec<String> {
    let mut got = Vec::with_capacity(messages);
    while got.len() < messages {
        let line = reader.line().await;
        assert!(
            !line.starts_with("DROPPED"),
            "{who}, a reader that keeps up, got {line:?} after {} messages",
            got.len()
        );
        if line.starts_with("MSG ") {
            got.push(line);
        }
    }
    got
}

/// Checks that each sender's numbered messages arrived in the order sent.
fn assert_each_senders_order(who: &str, messages: &[String]) {
    let mut next: HashMap<&str, u64> = HashMap::new();
    for line in messages {
        let mut parts = line.split(' ');
        let (Some("MSG"), Some(from), Some(number)) = (parts.next(), parts.next(), parts.next())
        else {
            panic!("{who}: unexpected {line:?}");
        };
        let number: u64 = number.parse().expect("a numbered message");
        let due = next.entry(from).or_default();
        assert_eq!(number, *due, "{who}: {from}'s messages out of order");
        *due += 1;
    }
}

/// `count` numbered `MSG` frames in one buffer, to be written at once.
fn burst(count: usize) -> String {
    (0..count).map(|n| format!("MSG {n} pipelined\n")).collect()
}

#[tokio::test]
async fn two_pipelining_senders_reach_two_readers_whole_with_a_small_backlog() {
    const EACH: usize = 2_000;
    let server = Server::start(&["--client-buffer", "64"]);
    // Every user reads everything while the senders send, the senders too.
    let mut reading = Vec::new();
    let mut idle_writers = Vec::new();
    for name in ["r1", "r2"] {
        let (reader, writer) = wire::login(server.addr(), name).await;
        reading.push((
            name,
            tokio::spawn(read_messages(name.into(), reader, 2 * EACH)),
        ));
        idle_writers.push(writer);
    }
    let mut senders = Vec::new();
    for name in ["s1", "s2"] {
        let (reader, writer) = wire::login(server.addr(), name).await;
        reading.push((
            name,
            tokio::spawn(read_messages(name.into(), reader, 2 * EACH)),
        ));
        senders.push(writer);
    }
    let sending = senders.into_iter().map(|mut writer| {
        tokio::spawn(async move {
            writer
                .write_all(burst(EACH).as_bytes())
                .await
                .expect("send");
            writer
        })
    });
    let sending: Vec<_> = sending.collect();
    let mut orders = Vec::new();
    for (name, task) in reading {
        let messages = task.await.expect("a reader");
        assert_each_senders_order(name, &messages);
        orders.push((name, messages));
    }
    for sender in sending {
        sender.await.expect("a sender");
    }
    let (first, order) = &orders[0];
    for (name, other) in &orders[1..] {
        assert!(order == other, "{first} and {name} saw different orders");
    }
}

#[tokio::test]
async fn a_5000_frame_burst_reaches_a_reader_whole_with_a_small_backlog() {
    const FRAMES: usize = 5_000;
    let server = Server::start(&["--client-buffer", "64"]);
    let (reader, _reader_out) = wire::login(server.addr(), "reader").await;
    let reading = tokio::spawn(read_messages("reader".into(), reader, FRAMES));
    let (echoes, mut sender) = wire::login(server.addr(), "sender").await;
    let echoed = tokio::spawn(read_messages("sender".into(), echoes, FRAMES));
    sender
        .write_all(burst(FRAMES).as_bytes())
        .await
        .expect("send");
    let messages = reading.await.expect("the reader");
    assert_each_senders_order("reader", &messages);
    assert_eq!(messages.len(), FRAMES);
    assert_eq!(echoed.await.expect("the sender's echoes").len(), FRAMES);
}

#[tokio::test]
async fn bursts_larger_than_the_backlog_lose_nothing_for_a_reader_within_them() {
    const BURST: usize = 200;
    const BURSTS: usize = 10;
    let server = Server::start(&["--client-buffer", "64"]);
    let (mut reader, _reader_out) = wire::login(server.addr(), "reader").await;
    let (echoes, mut sender) = wire::login(server.addr(), "sender").await;
    let echoed = tokio::spawn(read_messages("sender".into(), echoes, BURST * BURSTS));
    let mut received = Vec::new();
    for round in 0..BURSTS {
        let lines: String = (round * BURST..(round + 1) * BURST)
            .map(|n| format!("MSG {n} burst\n"))
            .collect();
        sender.write_all(lines.as_bytes()).await.expect("send");
        // The reader takes the whole burst before the next one is sent.
        let mut burst = Vec::new();
        while burst.len() < BURST {
            let line = reader.line().await;
            assert!(
                !line.starts_with("DROPPED"),
                "the reader got {line:?} in burst {round}, {} frames in",
                burst.len()
            );
            if line.starts_with("MSG ") {
                burst.push(line);
            }
        }
        received.extend(burst);
    }
    assert_each_senders_order("reader", &received);
    echoed.await.expect("the sender's echoes");
}

#[tokio::test]
async fn a_leaver_gets_everything_broadcast_before_its_own_leave() {
    let server = Server::start(&[]);
    for round in 0..20 {
        let (mut bob, mut bob_out) = wire::login(server.addr(), &format!("bob{round}")).await;
        let (mut carol, mut carol_out) = wire::login(server.addr(), &format!("carol{round}")).await;
        bob.until(&format!("JOIN carol{round}")).await;
        wire::send(&mut bob_out, "LEAVE\n").await;
        assert_eq!(bob.line().await, "BYE");
        // Bob has his BYE, so his LEAVE comes before carol's in the one
        // order: she must hear of it before her own BYE.
        wire::send(&mut carol_out, "LEAVE\n").await;
        let seen = carol.until("BYE").await;
        assert!(
            seen.contains(&format!("LEAVE bob{round}")),
            "round {round}: carol left without hearing bob go: {seen:?}"
        );
    }
}

/// Reads until `wanted`; returns how many `DROPPED` frames came before it
/// and how many `MSG`s.
async fn count_until(reader: &mut LineReader, wanted: &str) -> (usize, usize) {
    let (mut dropped, mut messages) = (0, 0);
    loop {
        let line = reader.line().await;
        if line == wanted {
            return (dropped, messages);
        }
        if line.starts_with("DROPPED ") {
            dropped += 1;
        } else if line.starts_with("MSG ") {
            messages += 1;
        }
    }
}

/// `PROTOCOL.md`: "A client that sends without reading is a slow reader
/// like any other, and nothing more": its own frames keep being handled
/// and reach everyone, whole and in order, while the broadcasts it does
/// not read are skipped for it alone.
#[tokio::test]
async fn a_sender_that_never_reads_stalls_nobody() {
    const MESSAGES: usize = 30_000;
    let server = Server::start(&[]);
    let (reader, _reader_out) = wire::login(server.addr(), "reader").await;
    let reading = tokio::spawn(read_messages("reader".into(), reader, MESSAGES));
    // A user who reads nothing at all: skipped, never waited for.
    let (_deaf, mut deaf_out) = wire::connect_small_buffer(server.addr()).await;
    wire::send(&mut deaf_out, "NAME deaf\n").await;
    let (mut sender, mut sender_out) = wire::connect_small_buffer(server.addr()).await;
    wire::send(&mut sender_out, "NAME sender\n").await;
    assert_eq!(sender.line().await, "WELCOME sender");
    // About 420 bytes a message, all sent before a single line is read.
    let padding = "x".repeat(400);
    let sending = tokio::spawn(async move {
        for window in 0..MESSAGES / 200 {
            let lines: String = (window * 200..(window + 1) * 200)
                .map(|n| format!("MSG {n} {padding}\n"))
                .collect();
            sender_out.write_all(lines.as_bytes()).await.expect("send");
        }
        sender_out
    });
    let messages = reading.await.expect("the reader");
    assert_eq!(messages.len(), MESSAGES);
    assert_each_senders_order("reader", &messages);
    // Only now does the sender read: it was skipped, told so, and its
    // PONG still comes after everything.
    let mut sender_out = sending.await.expect("the sender");
    wire::send(&mut sender_out, "PING end\n").await;
    let (dropped, echoes) = count_until(&mut sender, "PONG end").await;
    assert!(
        dropped > 0,
        "the sender read nothing for {MESSAGES} echoes, yet none was skipped ({echoes} arrived)"
    );
}

/// A script that writes a thousand `MSG`s and a `PING` before it reads a
/// line gets its `PONG`, and everyone else every message.
#[tokio::test]
async fn a_script_that_writes_before_it_reads_never_deadlocks() {
    const MESSAGES: usize = 1_000;
    let server = Server::start(&["--client-buffer", "16"]);
    let (reader, _reader_out) = wire::login(server.addr(), "reader").await;
    let reading = tokio::spawn(read_messages("reader".into(), reader, MESSAGES));
    let (mut script, mut script_out) = wire::connect_small_buffer(server.addr()).await;
    let mut lines = String::from("NAME script\n");
    lines.extend((0..MESSAGES).map(|n| format!("MSG {n} {}\n", "y".repeat(200))));
    lines.push_str("PING done\n");
    let writing = tokio::spawn(async move {
        script_out.write_all(lines.as_bytes()).await.expect("send");
        script_out
    });
    let messages = reading.await.expect("the reader");
    assert_each_senders_order("reader", &messages);
    assert_eq!(script.line().await, "WELCOME script");
    count_until(&mut script, "PONG done").await;
    drop(writing.await.expect("the script"));
}

/// Only unread answers to a client's own requests hold it back: while
/// more than 64 KiB of `PONG`s wait unread, nothing more it sends is
/// handled; once it reads them, it is served again, in order.
#[tokio::test]
async fn unread_answers_stop_the_reading_until_they_are_read() {
    const PINGS: usize = 100_000;
    let server = Server::start(&[]);
    let (mut witness, _witness_out) = wire::login(server.addr(), "witness").await;
    let (mut pinger, mut pinger_out) = wire::connect_small_buffer(server.addr()).await;
    wire::send(&mut pinger_out, "NAME pinger\n").await;
    assert_eq!(pinger.line().await, "WELCOME pinger");
    assert!(pinger.line().await.starts_with("NAMES "));
    assert_eq!(witness.line().await, "JOIN pinger");
    let token = "t".repeat(200);
    let sending = tokio::spawn(async move {
        for window in 0..PINGS / 1_000 {
            let lines: String = (window * 1_000..(window + 1) * 1_000)
                .map(|n| format!("PING {n}{token}\n"))
                .collect();
            pinger_out.write_all(lines.as_bytes()).await.expect("send");
        }
        pinger_out.write_all(b"MSG after\n").await.expect("send");
        pinger_out
    });
    // 20 MiB of PONGs is more than every buffer between the two: the
    // server must stop reading the pinger before its MSG.
    match witness.next(std::time::Duration::from_secs(1)).await {
        wire::Next::TimedOut => {}
        other => panic!("the pinger's MSG was handled before it read its PONGs: {other:?}"),
    }
    for n in 0..PINGS {
        let line = pinger.line().await;
        assert!(
            line.starts_with(&format!("PONG {n}t")),
            "PONG {n} expected, got {line:?}"
        );
    }
    assert_eq!(pinger.line().await, "MSG pinger after");
    assert_eq!(witness.line().await, "MSG pinger after");
    drop(sending.await.expect("the pinger"));
}

/// "Budgets" (`PROTOCOL.md`): a client whose socket has taken nothing for
/// `--stall-timeout` while output waits for it is disconnected, and
/// everyone else sees its `LEAVE`; the readers lose nothing meanwhile.
#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_at_the_stall_timeout() {
    const MESSAGES: usize = 600;
    let server = Server::start(&["--stall-timeout", "2s"]);
    let (mut witness, _witness_out) = wire::login(server.addr(), "witness").await;
    let (mut deaf, mut deaf_out) = wire::connect_small_buffer(server.addr()).await;
    wire::send(&mut deaf_out, "NAME deaf\n").await;
    assert_eq!(deaf.line().await, "WELCOME deaf");
    assert_eq!(witness.line().await, "JOIN deaf");
    let (mut talker, mut talker_out) = wire::login(server.addr(), "talker").await;
    assert_eq!(witness.line().await, "JOIN talker");
    let watching = tokio::spawn(async move {
        let lines = witness.until("LEAVE deaf").await;
        (lines, std::time::Instant::now())
    });
    let draining = tokio::spawn(async move { talker.until("LEAVE deaf").await });
    // 1.8 MB, far more than the deaf client's socket buffers take.
    let padding = "z".repeat(3_000);
    let lines: String = (0..MESSAGES)
        .map(|n| format!("MSG {n} {padding}\n"))
        .collect();
    talker_out.write_all(lines.as_bytes()).await.expect("send");
    let sent = std::time::Instant::now();
    let (seen, left_at) = watching.await.expect("the witness");
    let messages: Vec<&String> = seen.iter().filter(|l| l.starts_with("MSG ")).collect();
    assert_eq!(messages.len(), MESSAGES, "the witness lost nothing");
    assert!(!seen.iter().any(|l| l.starts_with("DROPPED")));
    assert!(
        left_at.duration_since(sent) >= std::time::Duration::from_millis(1_500),
        "not before the stall timeout: {:?}",
        left_at.duration_since(sent)
    );
    draining.await.expect("the talker");
    // Whatever the deaf client reads now ends with the connection closed.
    loop {
        match deaf.next(chat_tests::TIMEOUT).await {
            wire::Next::Line(_) | wire::Next::NotUtf8(_) => {}
            wire::Next::Closed | wire::Next::Failed(_) => break,
            wire::Next::TimedOut => panic!("the deaf client is still connected"),
        }
    }
}

/// "Clients that stop reading" (`PROTOCOL.md`, Budgets): besides
/// `--client-buffer` frames, a client that does not read holds at most
/// 512 KiB of unread output. 400 messages of 3 KB are far fewer frames
/// than the buffer but 1.2 MB: a client that stopped reading is skipped
/// past 512 KiB, told `DROPPED`, and gets the newest.
#[tokio::test]
async fn a_client_that_stops_reading_holds_at_most_512_kib_of_big_frames() {
    const MESSAGES: usize = 400;
    let server = Server::start(&["--client-buffer", "1024"]);
    let (mut deaf, mut deaf_out) = wire::connect_small_buffer(server.addr()).await;
    wire::send(&mut deaf_out, "NAME deaf\n").await;
    assert_eq!(deaf.line().await, "WELCOME deaf");
    assert!(deaf.line().await.starts_with("NAMES "));
    let (mut talker, mut talker_out) = wire::login(server.addr(), "talker").await;
    let padding = "b".repeat(3_000);
    let lines: String = (0..MESSAGES)
        .map(|n| format!("MSG {n} {padding}\n"))
        .collect();
    let draining = tokio::spawn(async move { talker.until("PONG sent").await });
    wire::send(&mut talker_out, &format!("{lines}PING sent\n")).await;
    let echoes = draining.await.expect("the talker");
    assert_eq!(
        echoes.iter().filter(|l| l.starts_with("MSG ")).count(),
        MESSAGES,
        "the talker reads, and loses nothing"
    );
    // Now the deaf client reads what was kept for it.
    wire::send(&mut deaf_out, "PING late\n").await;
    let kept = deaf.until("PONG late").await;
    let dropped: u64 = kept
        .iter()
        .filter_map(|l| l.strip_prefix("DROPPED "))
        .map(|n| n.parse::<u64>().expect("DROPPED <n>"))
        .sum();
    let messages = kept.iter().filter(|l| l.starts_with("MSG ")).count() as u64;
    assert!(dropped > 0, "nothing skipped for a client holding 1.2 MB");
    assert_eq!(
        dropped + messages,
        MESSAGES as u64,
        "skipped and kept add up"
    );
    assert!(
        messages * 3_015 <= 512 * 1024 + 128 * 1024,
        "{messages} big frames kept, more than 512 KiB and what its socket held"
    );
    assert!(
        kept.iter()
            .rev()
            .find(|l| l.starts_with("MSG "))
            .is_some_and(|l| l.starts_with(&format!("MSG talker {} ", MESSAGES - 1))),
        "the newest is kept"
    );
}
