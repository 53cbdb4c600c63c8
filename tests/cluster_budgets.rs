//! The budgets of an address and of history in cluster mode, end to end:
//! real `redis-server`, two real `chat-server` nodes, clients from several
//! 127.0.0.x addresses. The contract (`PROTOCOL.md`, "Budgets") says the
//! users of one address together can be in at most `--max-rooms-per-ip`
//! rooms, and all history kept takes at most `--history-memory`, the oldest
//! messages of the room that holds the most forgotten first; in a cluster
//! both hold for the whole cluster, not per node.
//!
//! What Redis counts is read back from it too (`chat:ip-rooms`,
//! `chat:history-bytes`), so that a count that drifts fails here even
//! where the frames still look right.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use chat_tests::cluster::{redis_available, Redis};
use chat_tests::history::history;
use chat_tests::{Client, Server, TIMEOUT};

/// A node on `url` with a 2 s lease and `extra` flags.
fn node(url: &str, id: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--cluster", url, "--node-id", id, "--lease", "2s"];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// Logs in from 127.0.0.`host` on a node that may still be starting:
/// `unavailable` answers are retried.
async fn login_from(server: &Server, host: u8, name: &str) -> Client {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut client = Client::connect_from(server.addr(), Ipv4Addr::new(127, 0, 0, host)).await;
        client.send(&format!("NAME {name}")).await;
        let answer = client.recv().await;
        if answer == format!("WELCOME {name}") {
            client.expect_prefix("NAMES").await;
            return client;
        }
        assert!(answer.starts_with("ERROR unavailable"), "{answer}");
        assert!(Instant::now() < deadline, "node never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `JOIN <room>`: whether it was admitted (`NAMES <room> …`) or refused
/// with `too-many-rooms`; anything else fails the test. Lobby frames that
/// arrive meanwhile are let pass.
async fn join(client: &mut Client, room: &str) -> bool {
    let lines = client.request(&format!("JOIN {room}")).await;
    let names = format!("NAMES {room} ");
    let admitted = lines.iter().any(|l| l.starts_with(&names));
    let refused = lines.iter().any(|l| l.starts_with("ERROR too-many-rooms"));
    assert!(admitted != refused, "JOIN {room}: {lines:?}");
    admitted
}

/// The memberships Redis counts for `address`.
fn counted(redis: &Redis, address: &str) -> i64 {
    let answer = redis.command(&format!(
        "EVAL \"return tonumber(redis.call('HGET', 'chat:ip-rooms', '{address}') or '0')\" 0"
    ));
    answer
        .strip_prefix(':')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("HGET chat:ip-rooms {address}: {answer}"))
}

/// The bytes of history Redis counts, all lists together.
fn history_bytes(redis: &Redis) -> usize {
    let answer =
        redis.command("EVAL \"return tonumber(redis.call('GET', 'chat:history-bytes') or '0')\" 0");
    answer
        .strip_prefix(':')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("GET chat:history-bytes: {answer}"))
}

/// What a history answer counts toward `--history-memory`: each message's
/// sender and text.
fn bytes(history: &[(u64, String, String)]) -> usize {
    history
        .iter()
        .map(|(_, from, text)| from.len() + text.len())
        .sum()
}

/// The users of 127.0.0.2 on both nodes share one `--max-rooms-per-ip` of
/// 3: the fourth room, on either node, is refused; another address is not
/// held back; two nodes asked at once for the last room admit exactly one;
/// a `PART` on one node frees a room for the other; a node killed with
/// SIGKILL gives its users' rooms back once its lease has run out.
#[tokio::test]
async fn the_users_of_one_address_share_max_rooms_per_ip_across_nodes() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let flags = [
        "--limits-on-loopback",
        "--flood-rate",
        "0",
        "--max-rooms-per-ip",
        "3",
    ];
    let a = node(&redis.url(), "a", &flags);
    let mut b = node(&redis.url(), "b", &flags);
    let mut ann = login_from(&a, 2, "ann").await;
    let mut bob = login_from(&b, 2, "bob").await;
    let mut cid = login_from(&b, 3, "cid").await;

    // Three rooms for 127.0.0.2, two on a and one on b; the fourth is
    // refused on both nodes.
    assert!(join(&mut ann, "#one").await);
    assert!(join(&mut ann, "#two").await);
    assert!(join(&mut bob, "#three").await);
    assert!(!join(&mut bob, "#four").await, "a fourth room on b");
    assert!(!join(&mut ann, "#four").await, "a fourth room on a");
    assert!(!join(&mut bob, "#one").await, "an existing room counts too");
    assert_eq!(counted(&redis, "127.0.0.2"), 3, "refusals count nothing");
    // 127.0.0.3 is not held back by it.
    for room in ["#one", "#three", "#four"] {
        assert!(join(&mut cid, room).await, "{room} for 127.0.0.3");
    }
    assert!(!join(&mut cid, "#five").await);

    // A PART on b frees a room for a.
    let parted = bob.request("PART #three").await;
    assert!(parted.iter().any(|l| l == "LEAVE #three bob"), "{parted:?}");
    assert_eq!(counted(&redis, "127.0.0.2"), 2);

    // The last room asked for from both nodes at once: one is admitted.
    let (on_a, on_b) = tokio::join!(join(&mut ann, "#race-a"), join(&mut bob, "#race-b"));
    assert!(
        on_a != on_b,
        "both nodes admitted the last room: {on_a} {on_b}"
    );
    assert_eq!(counted(&redis, "127.0.0.2"), 3);
    // Whoever won gives it back; bob ends in one room on b.
    if on_a {
        ann.request("PART #race-a").await;
        assert!(join(&mut bob, "#six").await);
    }
    assert_eq!(counted(&redis, "127.0.0.2"), 3);
    assert!(!join(&mut ann, "#seven").await);

    // Node b dies: bob's room comes back once its lease is out (the
    // survivor announces bob's LEAVE when it reaps b).
    b.kill();
    drop((bob, cid));
    ann.recv_until("LEAVE bob").await;
    assert_eq!(counted(&redis, "127.0.0.2"), 2);
    assert_eq!(counted(&redis, "127.0.0.3"), 0);
    assert!(join(&mut ann, "#seven").await, "bob's room given back");
    assert!(!join(&mut ann, "#eight").await);

    // A user who leaves gives back every room of its own.
    ann.send("LEAVE").await;
    ann.recv_until("BYE").await;
    let deadline = Instant::now() + TIMEOUT;
    while counted(&redis, "127.0.0.2") != 0 {
        assert!(Instant::now() < deadline, "ann's rooms never given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Loopback is spared `--max-rooms-per-ip` in a cluster too unless
/// `--limits-on-loopback` is given, and nothing is counted for it.
#[tokio::test]
async fn loopback_is_spared_max_rooms_per_ip_across_nodes() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let a = node(&redis.url(), "a", &["--max-rooms-per-ip", "1"]);
    let b = node(&redis.url(), "b", &["--max-rooms-per-ip", "1"]);
    let mut ann = login_from(&a, 2, "ann").await;
    let mut bob = login_from(&b, 2, "bob").await;
    for room in ["#one", "#two"] {
        assert!(join(&mut ann, room).await);
        assert!(join(&mut bob, room).await);
    }
    assert_eq!(counted(&redis, "127.0.0.2"), 0);
}

/// All history in Redis, the lobby's and every room's, takes at most
/// `--history-memory` (64 KiB here): the oldest messages of the room that
/// holds the most are forgotten first, down to 1/16 below it, and the
/// smaller room and the lobby keep theirs, as seen through `HISTORY` from
/// either node. Redis's count agrees with what `HISTORY` shows, and a room
/// forgotten takes its history out of the count.
#[tokio::test]
async fn history_memory_bounds_the_clusters_history_biggest_room_first() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let flags = ["--history-memory", "64KiB", "--history", "1000"];
    let a = node(&redis.url(), "a", &flags);
    let b = node(&redis.url(), "b", &flags);
    let mut ann = login_from(&a, 2, "ann").await;
    let mut bob = login_from(&b, 3, "bob").await;
    for room in ["#big", "#small"] {
        assert!(join(&mut ann, room).await);
        assert!(join(&mut bob, room).await);
    }
    let padding = "m".repeat(2_990);
    let mut lines = String::from("MSG lobby\n");
    lines.extend((0..3).map(|n| format!("SAY #small small{n}\n")));
    lines.extend((0..30).map(|n| format!("SAY #big {n:03}{padding}\n")));
    ann.send_raw(lines.as_bytes()).await;
    ann.barrier().await;
    // The second half from the other node.
    let lines: String = (30..60)
        .map(|n| format!("SAY #big {n:03}{padding}\n"))
        .collect();
    bob.recv_until(&format!("SAY #big ann 029{padding}")).await;
    bob.send_raw(lines.as_bytes()).await;
    bob.barrier().await;
    ann.recv_until(&format!("SAY #big bob 059{padding}")).await;

    for client in [&mut ann, &mut bob] {
        let small = history(client, "HISTORY #small 1000", Some("#small")).await;
        let small_texts: Vec<&str> = small.iter().map(|(_, _, t)| t.as_str()).collect();
        assert_eq!(small_texts, ["small0", "small1", "small2"]);
        let lobby = history(client, "HISTORY 1000", None).await;
        assert_eq!(lobby.len(), 1);
        assert_eq!(lobby[0].2, "lobby");
        let big = history(client, "HISTORY #big 1000", Some("#big")).await;
        let kept = bytes(&big) + bytes(&small) + bytes(&lobby);
        assert!(kept <= 64 * 1024, "{kept} bytes kept");
        assert!(
            kept > 64 * 1024 - 64 * 1024 / 16 - 3_000,
            "{kept} bytes kept: forgot more than a pass needs"
        );
        assert_eq!(history_bytes(&redis), kept, "Redis counts what is kept");
        let numbers: Vec<&str> = big.iter().map(|(_, _, text)| &text[..3]).collect();
        let first = 60 - big.len();
        let newest: Vec<String> = (first..60).map(|n| format!("{n:03}")).collect();
        assert!(big.len() >= 10 && big.len() < 60, "{} kept", big.len());
        assert_eq!(numbers, newest, "the newest are kept, in order");
    }

    // #big forgotten: its history is out of the count.
    let small = history(&mut ann, "HISTORY #small 1000", Some("#small")).await;
    let lobby = history(&mut ann, "HISTORY 1000", None).await;
    ann.send("PART #big").await;
    ann.recv_until("LEAVE #big ann").await;
    bob.recv_until("LEAVE #big ann").await;
    assert!(
        history_bytes(&redis) > bytes(&small) + bytes(&lobby),
        "#big has members"
    );
    bob.send("PART #big").await;
    bob.recv_until("LEAVE #big bob").await;
    assert_eq!(history_bytes(&redis), bytes(&small) + bytes(&lobby));
}
