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
