//! Version 2 in cluster mode, end to end: real `redis-server`, several real
//! `chat-server` nodes, plain TCP clients. The contract (`PROTOCOL.md`,
//! "Version 2: rooms, direct messages, history" and "Cluster mode") says
//! rooms, members, topics and history are cluster-wide and `TELL` reaches a
//! user on any node; these tests hold the cluster to exactly the frames a
//! single process sends.
//!
//! Synchronisation across nodes: a frame from another node is waited for
//! with `expect`, never with a sleep. A node's answers (`WHO #r`, `ROOMS`,
//! `HISTORY`, a `JOIN`'s `NAMES`) are asked for only once a user on that
//! node has received a frame that the change in question comes before (the
//! change's own frame, or a later frame from the same sender: one sender's
//! frames reach every receiver in the order sent). Where a frame must *not*
//! arrive, the receiver reads strictly up to a later frame from the same
//! sender (a lobby `MSG` marker), so anything misdelivered would show up
//! first.

use std::time::{Duration, Instant};

use chat_tests::cluster::{login, redis_available, user, Redis};
use chat_tests::history::{history, now_millis};
use chat_tests::{Client, Server};

const LEASE: Duration = Duration::from_secs(2);

/// A node on `url` with a 2 s lease and `extra` flags.
fn node(url: &str, id: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--cluster", url, "--node-id", id, "--lease", "2s"];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn nodes(redis: &Redis, ids: &[&str], extra: &[&str]) -> Vec<Server> {
    ids.iter().map(|id| node(&redis.url(), id, extra)).collect()
}

/// Asserts that each of `clients` receives `line` next.
async fn all_expect(clients: &mut [&mut Client], line: &str) {
    for client in clients.iter_mut() {
        client.expect(line).await;
    }
}

/// The (from, text) pairs of a history answer.
fn said(history: &[(u64, String, String)]) -> Vec<(&str, &str)> {
    history
        .iter()
        .map(|(_, from, text)| (from.as_str(), text.as_str()))
        .collect()
}

// ---------------------------------------------------------------------------
// 1. One room across three nodes
// ---------------------------------------------------------------------------

/// Checks that every member saw the same room frames, all of them `SAY #r`,
/// each sender's in the order sent (`SAY #r <from> <n>`, n from 0).
fn one_order(views: &[(&str, Vec<String>)], senders: &[&str], each: usize) {
    for (who, view) in views {
        let mut next = vec![0; senders.len()];
        for line in view {
            let rest = line
                .strip_prefix("SAY #r ")
                .unwrap_or_else(|| panic!("{who} got {line:?} amid the SAYs"));
            let (from, n) = rest.split_once(' ').expect("SAY #r <from> <n>");
            let i = senders
                .iter()
                .position(|s| *s == from)
                .unwrap_or_else(|| panic!("{who}: SAY from {from:?}"));
            assert_eq!(n, next[i].to_string(), "{who}: {from}'s SAYs out of order");
            next[i] += 1;
        }
        assert!(next.iter().all(|&n| n == each), "{who}: {next:?}");
    }
    let (first, order) = &views[0];
    for (who, view) in &views[1..] {
        if order != view {
            let at = order.iter().zip(view).position(|(a, b)| a != b);
            panic!("{first} and {who} saw #r in different orders, first at {at:?}");
        }
    }
}

/// A room whose members are on three nodes is one room, frame for frame as
/// in a single process: it keeps the spelling of its creation (`#R` joins
/// `#r`); each joiner's `NAMES #r` lists every member, itself included,
/// sorted like names, and the other members get `JOIN #r <name>`; `SAY`s
/// pipelined at once from three nodes reach all members in one order, each
/// sender's in the order sent; a `TOPIC` reaches every member, and a later
/// joiner on another node than the setter's gets `NAMES` then the topic;
/// `PART` with a text reaches every member, the leaver too; `WHO #r` and
/// `ROOMS` agree on every node, before and after the last member parts
/// (then `ROOMS` and `NAMES #r`, empty); a non-member on a members' node,
/// and a member once parted, see none of the room's frames; a `JOIN` after
/// that creates the room anew, with the new spelling and no topic.
#[tokio::test]
async fn a_room_spanning_three_nodes_is_one_room() {
    if !redis_available() {
        return;
    }
    const EACH: usize = 40;
    let redis = Redis::start();
    let servers = nodes(&redis, &["a", "b", "c"], &[]);
    let mut alice = user(&servers[0], "alice").await;
    let mut bob = user(&servers[1], "Bob").await;
    let mut carol = user(&servers[2], "carol").await;
    let mut olga = user(&servers[1], "olga").await;
    for line in ["JOIN Bob", "JOIN carol", "JOIN olga"] {
        alice.expect(line).await;
    }
    for line in ["JOIN carol", "JOIN olga"] {
        bob.expect(line).await;
    }
    carol.expect("JOIN olga").await;

    // Joining from three nodes; the first spelling stays.
    assert_eq!(alice.request("JOIN #r").await, ["NAMES #r alice"]);
    assert_eq!(bob.request("JOIN #R").await, ["NAMES #r alice Bob"]);
    alice.expect("JOIN #r Bob").await;
    assert_eq!(carol.request("join #r").await, ["NAMES #r alice Bob carol"]);
    all_expect(&mut [&mut alice, &mut bob], "JOIN #r carol").await;

    // Three nodes talk at once: one order for every member.
    let burst: String = (0..EACH).map(|n| format!("SAY #r {n}\n")).collect();
    let (a, b, c) = tokio::join!(
        alice.send_and_collect(burst.as_bytes(), 3 * EACH),
        bob.send_and_collect(burst.as_bytes(), 3 * EACH),
        carol.send_and_collect(burst.as_bytes(), 3 * EACH),
    );
    one_order(
        &[("alice", a), ("Bob", b), ("carol", c)],
        &["alice", "Bob", "carol"],
        EACH,
    );

    // A topic set on c reaches a and b.
    carol.send("TOPIC #r  the  topic ").await;
    all_expect(
        &mut [&mut carol, &mut alice, &mut bob],
        "TOPIC #r carol  the  topic ",
    )
    .await;

    // A later joiner on a: NAMES, then the topic set on c.
    let mut dave = user(&servers[0], "dave").await;
    all_expect(
        &mut [&mut alice, &mut bob, &mut carol, &mut olga],
        "JOIN dave",
    )
    .await;
    assert_eq!(
        dave.request("JOIN #r").await,
        [
            "NAMES #r alice Bob carol dave",
            "TOPIC #r carol  the  topic "
        ]
    );
    all_expect(&mut [&mut alice, &mut bob, &mut carol], "JOIN #r dave").await;

    // PART on b reaches every member, the leaver too.
    bob.send("PART #r bye").await;
    all_expect(
        &mut [&mut bob, &mut alice, &mut carol, &mut dave],
        "LEAVE #r Bob bye",
    )
    .await;

    // Every node agrees on the members and the rooms.
    for client in [&mut alice, &mut bob, &mut olga, &mut carol, &mut dave] {
        assert_eq!(
            client.request("WHO #r").await,
            ["NAMES #r alice carol dave"]
        );
        assert_eq!(client.request("ROOMS").await, ["ROOMS #r 3"]);
    }

    // The last members part, on a, c and a.
    alice.send("PART #r").await;
    all_expect(&mut [&mut alice, &mut carol, &mut dave], "LEAVE #r alice").await;
    carol.send("PART #r   ").await;
    all_expect(&mut [&mut carol, &mut dave], "LEAVE #r carol").await;
    dave.send("PART #R so long").await;
    dave.expect("LEAVE #r dave so long").await;

    // Everyone who sent a room frame now sends a lobby marker: olga (never
    // a member) and Bob (parted) got nothing of the room before it.
    for (i, name) in ["alice", "Bob", "carol", "dave"].into_iter().enumerate() {
        let mut everyone = [&mut alice, &mut bob, &mut carol, &mut dave, &mut olga];
        everyone[i].send("MSG done").await;
        all_expect(&mut everyone, &format!("MSG {name} done")).await;
    }

    // Forgotten on every node.
    for client in [&mut alice, &mut bob, &mut olga, &mut carol, &mut dave] {
        assert_eq!(client.request("ROOMS").await, ["ROOMS"]);
        assert_eq!(client.request("WHO #r").await, ["NAMES #r"]);
    }

    // Created anew from b, spelled anew, without the old topic.
    assert_eq!(bob.request("JOIN #R").await, ["NAMES #R Bob"]);
    assert_eq!(carol.request("JOIN #r").await, ["NAMES #R Bob carol"]);
    bob.expect("JOIN #R carol").await;
    assert_eq!(carol.request("TOPIC #r").await, ["TOPIC #R"]);
    bob.send("MSG end").await;
    carol.send("MSG end").await;
    for client in [&mut alice, &mut dave, &mut olga] {
        let mut ends = vec![client.recv().await, client.recv().await];
        ends.sort();
        assert_eq!(ends, ["MSG Bob end", "MSG carol end"]);
    }
}

// ---------------------------------------------------------------------------
// 2. TELL across nodes, and one sender's order
// ---------------------------------------------------------------------------

/// `TELL` reaches a user on another node: the receiver and the sender both
/// get `TELL <from> <to> <text>`, names spelled as logged in whatever case
/// the sender typed, the text kept exactly, and nobody else gets it; a
/// `TELL` to a name nobody holds (never held, or held by someone who left
/// on the other node) is `ERROR no-such-user`; a `TELL` to yourself reaches
/// you once. One sender's frames across a room, the lobby and `TELL`
/// (`SAY #r 1`, `MSG 2`, `TELL bob 3`, `SAY #r 4`, `LEAVE`, pipelined on
/// node a) reach a member on node b in exactly that order, the lobby's
/// `LEAVE alice` after the last `SAY`, and no `LEAVE #r alice` at all;
/// a non-member there sees only the `MSG` and the `LEAVE`; the sender gets
/// its own echoes, then `BYE`.
#[tokio::test]
async fn tell_crosses_nodes_and_one_senders_frames_keep_their_order() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let servers = nodes(&redis, &["a", "b"], &[]);
    let mut alice = user(&servers[0], "alice").await;
    let mut bob = user(&servers[1], "bob").await;
    let mut carol = user(&servers[1], "carol").await;
    alice.expect("JOIN bob").await;
    alice.expect("JOIN carol").await;
    bob.expect("JOIN carol").await;

    alice.send("TELL BOB hi  there ").await;
    all_expect(&mut [&mut alice, &mut bob], "TELL alice bob hi  there ").await;
    bob.send("tell Alice back\tat you").await;
    all_expect(&mut [&mut bob, &mut alice], "TELL bob alice back\tat you").await;

    // Nobody by that name, on any node.
    let mut erin = user(&servers[1], "erin").await;
    all_expect(&mut [&mut alice, &mut bob, &mut carol], "JOIN erin").await;
    erin.send("LEAVE").await;
    erin.expect("BYE").await;
    all_expect(&mut [&mut alice, &mut bob, &mut carol], "LEAVE erin").await;
    for frame in ["TELL nobody x", "TELL erin x", "TELL ERIN x"] {
        alice.send(frame).await;
        alice.expect_error("no-such-user").await;
    }

    // To yourself: once.
    alice.send("TELL ALICE note to self").await;
    alice.expect("TELL alice alice note to self").await;
    bob.send("TELL bob me").await;
    bob.expect("TELL bob bob me").await;
    // Each one's next frame is the next message: no TELL went twice or
    // astray (carol got none of them).
    alice.send("MSG m").await;
    all_expect(&mut [&mut alice, &mut bob, &mut carol], "MSG alice m").await;
    bob.send("MSG n").await;
    all_expect(&mut [&mut alice, &mut bob, &mut carol], "MSG bob n").await;

    // One sender's order across a room, the lobby and TELL.
    assert_eq!(alice.request("JOIN #r").await, ["NAMES #r alice"]);
    assert_eq!(bob.request("JOIN #r").await, ["NAMES #r alice bob"]);
    alice.expect("JOIN #r bob").await;
    alice
        .send_raw(b"SAY #r 1\nMSG 2\nTELL bob 3\nSAY #r 4\nLEAVE\n")
        .await;
    let sent = [
        "SAY #r alice 1",
        "MSG alice 2",
        "TELL alice bob 3",
        "SAY #r alice 4",
    ];
    assert_eq!(alice.recv_until("BYE").await, sent);
    alice.expect_closed().await;
    assert_eq!(bob.recv_until("LEAVE alice").await, sent);
    assert_eq!(carol.recv_until("LEAVE alice").await, ["MSG alice 2"]);
    // Out of #r with the lobby's LEAVE alone.
    assert_eq!(bob.request("WHO #r").await, ["NAMES #r bob"]);
    assert_eq!(carol.request("ROOMS").await, ["ROOMS #r 1"]);
    bob.send("SAY #r alone").await;
    bob.expect("SAY #r bob alone").await;
    bob.expect_quiet().await;
    carol.expect_quiet().await;
}

// ---------------------------------------------------------------------------
// 3. History on a node that started later
// ---------------------------------------------------------------------------

/// History is the cluster's, not a node's: `MSG`s and `SAY #r`s sent on
/// nodes a and b (with a `TELL` and a `TOPIC` among them, which are not
/// kept) are served by node c, started afterwards, to a user who logged in
/// there: `HISTORY` to anyone logged in, `HISTORY #r` once a member (before,
/// `ERROR not-in-room`), oldest first, in the contract's form (`HISTORY
/// [#r] <k>`, then k `HIST [#r] <time> <from> <text>`, time RFC 3339 UTC
/// with milliseconds, within the test's run), each sender's name as logged
/// in and each text exact; with `--history 3` on every node only the last 3
/// of each are kept and a larger count is served as 3; every node gives
/// the same answer, times included.
#[tokio::test]
async fn history_is_served_by_a_node_that_started_later() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let servers = nodes(&redis, &["a", "b"], &["--history", "3"]);
    let mut alice = user(&servers[0], "alice").await;
    let mut bob = user(&servers[1], "Bob").await;
    alice.expect("JOIN Bob").await;
    assert_eq!(alice.request("JOIN #r").await, ["NAMES #r alice"]);
    assert_eq!(bob.request("JOIN #r").await, ["NAMES #r alice Bob"]);
    alice.expect("JOIN #r Bob").await;

    let before = now_millis();
    for (sender, frame, seen) in [
        (0, "MSG l1", "MSG alice l1"),
        (1, "SAY #r s1", "SAY #r Bob s1"),
        (1, "MSG  l2  spaced ", "MSG Bob  l2  spaced "),
        (0, "SAY #R s2", "SAY #r alice s2"),
        (0, "TELL bob secret", "TELL alice Bob secret"),
        (1, "TOPIC #r t", "TOPIC #r Bob t"),
        (0, "MSG l3", "MSG alice l3"),
        (1, "SAY #r s3\tx", "SAY #r Bob s3\tx"),
        (1, "MSG l4", "MSG Bob l4"),
        (0, "SAY #r s4", "SAY #r alice s4"),
    ] {
        let mut pair = [&mut alice, &mut bob];
        pair[sender].send(frame).await;
        all_expect(&mut pair, seen).await;
    }
    let after = now_millis();

    let lobby = [("Bob", " l2  spaced "), ("alice", "l3"), ("Bob", "l4")];
    let room = [("alice", "s2"), ("Bob", "s3\tx"), ("alice", "s4")];

    let late = node(&redis.url(), "c", &["--history", "3"]);
    let mut carol = user(&late, "carol").await;
    all_expect(&mut [&mut alice, &mut bob], "JOIN carol").await;
    let lobby_on_c = history(&mut carol, "HISTORY", None).await;
    assert_eq!(said(&lobby_on_c), lobby);
    for (time, _, _) in &lobby_on_c {
        assert!(
            before.saturating_sub(2_000) <= *time && *time <= after + 2_000,
            "time {time} not between {before} and {after}: not UTC now?"
        );
    }
    carol.send("HISTORY #r").await;
    carol.expect_error("not-in-room").await;

    assert_eq!(
        carol.request("JOIN #r").await,
        ["NAMES #r alice Bob carol", "TOPIC #r Bob t"]
    );
    all_expect(&mut [&mut alice, &mut bob], "JOIN #r carol").await;
    let room_on_c = history(&mut carol, "HISTORY #r", Some("#r")).await;
    assert_eq!(said(&room_on_c), room);
    for (time, _, _) in &room_on_c {
        assert!(before.saturating_sub(2_000) <= *time && *time <= after + 2_000);
    }
    // Counts: fewer, and capped at --history.
    assert_eq!(
        history(&mut carol, "HISTORY #R 2", Some("#r")).await,
        room_on_c[1..]
    );
    assert_eq!(
        history(&mut carol, "HISTORY #r 50", Some("#r")).await,
        room_on_c
    );
    assert_eq!(
        history(&mut carol, "HISTORY 1", None).await,
        lobby_on_c[2..]
    );
    assert_eq!(history(&mut carol, "HISTORY 4", None).await, lobby_on_c);

    // The same history on every node.
    for client in [&mut alice, &mut bob] {
        assert_eq!(history(client, "HISTORY", None).await, lobby_on_c);
        assert_eq!(history(client, "HISTORY #r", Some("#r")).await, room_on_c);
    }
}

// ---------------------------------------------------------------------------
// 4. A node's death
// ---------------------------------------------------------------------------

/// A node killed with SIGKILL takes its users out of their rooms with the
/// lobby's `LEAVE` alone: members of `#r` on the surviving nodes a and c get
/// `LEAVE bob` within the lease plus a reaping tick, exactly once, and no
/// `LEAVE #r bob`; `WHO #r` then omits bob on both; `#solo`, which bob held
/// alone (with a topic and history), is gone from `ROOMS` on every node and
/// is created anew, without topic or history, by the next `JOIN`; what bob
/// said in `#r` stays in its history; the name is free again, and the new
/// bob is in no room.
#[tokio::test]
async fn a_dead_nodes_users_leave_their_rooms_with_the_lobbys_leave_alone() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let mut servers = nodes(&redis, &["a", "b", "c"], &[]);
    let mut alice = user(&servers[0], "alice").await;
    let mut bob = user(&servers[1], "bob").await;
    let mut carol = user(&servers[2], "carol").await;
    alice.expect("JOIN bob").await;
    alice.expect("JOIN carol").await;
    bob.expect("JOIN carol").await;
    assert_eq!(alice.request("JOIN #r").await, ["NAMES #r alice"]);
    assert_eq!(bob.request("JOIN #r").await, ["NAMES #r alice bob"]);
    alice.expect("JOIN #r bob").await;
    assert_eq!(carol.request("JOIN #r").await, ["NAMES #r alice bob carol"]);
    all_expect(&mut [&mut alice, &mut bob], "JOIN #r carol").await;
    assert_eq!(bob.request("JOIN #solo").await, ["NAMES #solo bob"]);
    bob.send("TOPIC #solo mine").await;
    bob.expect("TOPIC #solo bob mine").await;
    bob.send("SAY #solo note").await;
    bob.expect("SAY #solo bob note").await;
    bob.send("SAY #r last words").await;
    all_expect(
        &mut [&mut bob, &mut alice, &mut carol],
        "SAY #r bob last words",
    )
    .await;
    for client in [&mut alice, &mut carol] {
        assert_eq!(client.request("ROOMS").await, ["ROOMS #r 3 #solo 1"]);
    }

    let killed = Instant::now();
    servers[1].kill();
    all_expect(&mut [&mut alice, &mut carol], "LEAVE bob").await;
    let took = killed.elapsed();
    assert!(took < LEASE + Duration::from_secs(1), "took {took:?}");
    // Once, and no room-level LEAVE, even a reaping tick or two later.
    tokio::time::sleep(LEASE / 2).await;
    alice.expect_quiet().await;
    carol.expect_quiet().await;

    for client in [&mut alice, &mut carol] {
        assert_eq!(client.request("WHO #r").await, ["NAMES #r alice carol"]);
        assert_eq!(client.request("ROOMS").await, ["ROOMS #r 2"]);
        assert_eq!(client.request("WHO #solo").await, ["NAMES #solo"]);
    }
    let kept = history(&mut alice, "HISTORY #r", Some("#r")).await;
    assert_eq!(said(&kept), [("bob", "last words")]);

    // The name is free; the new bob is in no room, and #solo starts afresh.
    let mut again = user(&servers[2], "bob").await;
    all_expect(&mut [&mut alice, &mut carol], "JOIN bob").await;
    again.send("SAY #r back").await;
    again.expect_error("not-in-room").await;
    assert_eq!(again.request("JOIN #solo").await, ["NAMES #solo bob"]);
    assert_eq!(again.request("TOPIC #solo").await, ["TOPIC #solo"]);
    assert_eq!(again.request("HISTORY #solo").await, ["HISTORY #solo 0"]);
    alice.expect_quiet().await;
    carol.expect_quiet().await;
}

// ---------------------------------------------------------------------------
// 5. Ghosts after Redis restarts empty
// ---------------------------------------------------------------------------

/// The hole in docs/CLUSTER.md ("What is guaranteed"): a node that dies
/// while Redis is down, Redis then restarting empty, never re-registers its
/// users, and nobody used to announce them. The contract still promises
/// that a dead node's users are announced gone exactly once and their
/// names freed: after the settling period (one lease) and a few seconds,
/// the users of both surviving nodes a and c get exactly one `LEAVE <name>`
/// for each of b's users and nothing else, `WHO` no longer lists them, and
/// the names can be taken again by new logins on either node.
#[tokio::test]
async fn a_node_that_died_while_redis_was_down_is_reconciled_after_an_empty_restart() {
    if !redis_available() {
        return;
    }
    let mut redis = Redis::start();
    let mut servers = nodes(&redis, &["a", "b", "c"], &[]);
    let mut alice = user(&servers[0], "alice").await;
    let mut carol = user(&servers[2], "carol").await;
    let _bob = user(&servers[1], "bob").await;
    let _dave = user(&servers[1], "dave").await;
    for line in ["JOIN carol", "JOIN bob", "JOIN dave"] {
        alice.expect(line).await;
    }
    for line in ["JOIN bob", "JOIN dave"] {
        carol.expect(line).await;
    }

    // Redis goes away (with all its data), b dies meanwhile, and Redis
    // comes back empty well within the lease, so a and c keep their users.
    assert_eq!(redis.command("SET chat-tests:before 1"), "+OK");
    redis.kill();
    servers[1].kill();
    redis.restart();
    let restarted = Instant::now();
    // Empty indeed: nothing from before the restart is left.
    assert_eq!(redis.command("EXISTS chat-tests:before"), ":0");

    for client in [&mut alice, &mut carol] {
        let mut gone = vec![client.recv().await, client.recv().await];
        gone.sort();
        assert_eq!(gone, ["LEAVE bob", "LEAVE dave"]);
    }
    let took = restarted.elapsed();
    assert!(
        took < LEASE + Duration::from_secs(3),
        "took {took:?} after the restart"
    );
    // Exactly once, though two survivors reconcile.
    tokio::time::sleep(LEASE).await;
    alice.expect_quiet().await;
    carol.expect_quiet().await;
    assert_eq!(alice.request("WHO").await, ["NAMES alice carol"]);
    assert_eq!(carol.request("WHO").await, ["NAMES alice carol"]);

    // The names are free again, on either node.
    let (_bob, names) = login(&servers[0], "bob").await;
    assert_eq!(names, ["alice", "bob", "carol"]);
    all_expect(&mut [&mut alice, &mut carol], "JOIN bob").await;
    let (_dave, names) = login(&servers[2], "Dave").await;
    assert_eq!(names, ["alice", "bob", "carol", "Dave"]);
    all_expect(&mut [&mut alice, &mut carol], "JOIN Dave").await;
    assert_eq!(alice.request("WHO").await, ["NAMES alice bob carol Dave"]);
}

/// Redis restarts empty: each node puts its users back in their rooms
/// (no frames), so the room goes on across nodes and `WHO` and `ROOMS`
/// list it again; its topic and history were lost with the data.
#[tokio::test]
async fn rooms_are_rebuilt_after_redis_restarts_empty() {
    if !redis_available() {
        return;
    }
    let mut redis = Redis::start();
    let servers = nodes(&redis, &["a", "b"], &[]);
    let mut alice = user(&servers[0], "alice").await;
    let mut bob = user(&servers[1], "bob").await;
    alice.expect("JOIN bob").await;
    assert_eq!(alice.request("JOIN #Rust").await, ["NAMES #Rust alice"]);
    assert_eq!(bob.request("JOIN #rust").await, ["NAMES #Rust alice bob"]);
    alice.expect("JOIN #Rust bob").await;
    assert_eq!(
        alice.request("TOPIC #rust before").await,
        ["TOPIC #Rust alice before"]
    );
    bob.expect("TOPIC #Rust alice before").await;

    redis.kill();
    redis.restart();
    // Once the nodes are back (the settling period), the room is whole.
    let deadline = Instant::now() + LEASE * 3;
    loop {
        let rooms = alice.request("ROOMS").await;
        if rooms == ["ROOMS #Rust 2"] {
            break;
        }
        assert!(Instant::now() < deadline, "never rebuilt: {rooms:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(bob.request("WHO #rust").await, ["NAMES #Rust alice bob"]);
    bob.send("SAY #rust after").await;
    bob.expect("SAY #Rust bob after").await;
    alice.expect("SAY #Rust bob after").await;
    let said = alice.request("HISTORY #rust").await;
    assert_eq!(said[0], "HISTORY #Rust 1", "{said:?}");
    assert_eq!(bob.request("PART #rust").await, ["LEAVE #Rust bob"]);
    alice.expect("LEAVE #Rust bob").await;
    assert_eq!(alice.request("WHO #rust").await, ["NAMES #Rust alice"]);
}
