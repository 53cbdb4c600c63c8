//! Version 2 against the contract (`PROTOCOL.md`, "Version 2: rooms, direct
//! messages, history"), over real TCP: every frame, every error code and
//! which one wins, the life of a room, ordering, isolation and history.
//!
//! Synchronisation is by `PING` barriers: a frame another user sent is in
//! this user's stream once that user has its own answer or barrier back.

use std::collections::HashMap;
use std::time::Duration;

use chat_tests::history::{hist, history, now_millis, parse_time};
use chat_tests::wire::{self, LineReader};
use chat_tests::{Client, Server};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;

/// Logs in as `name` and joins `rooms`, checking each `NAMES <room>` starts
/// the answer; returns the client with nothing pending.
async fn member(server: &Server, name: &str, rooms: &[&str]) -> Client {
    let mut client = server.user(name).await;
    for room in rooms {
        client.send(&format!("JOIN {room}")).await;
        let names = client.expect_prefix("NAMES #").await;
        let listed = names.split(' ').nth(1).unwrap_or_default();
        assert!(listed.eq_ignore_ascii_case(room), "JOIN {room}: {names:?}");
    }
    client.barrier().await;
    client
}

/// The texts of a history answer.
fn texts(history: &[(u64, String, String)]) -> Vec<&str> {
    history.iter().map(|(_, _, text)| text.as_str()).collect()
}

// ---------------------------------------------------------------------------
// The example and the frames one by one
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_contracts_version_2_example() {
    let server = Server::start(&[]);
    let mut bob = member(&server, "bob", &["#rust"]).await;
    assert_eq!(
        bob.request("TOPIC #rust async book club").await,
        ["TOPIC #rust bob async book club"]
    );
    assert_eq!(
        bob.request("SAY #rust anyone here?").await,
        ["SAY #rust bob anyone here?"]
    );
    let mut alice = server.user("alice").await;
    bob.expect("JOIN alice").await;
    alice.send("JOIN #rust").await;
    alice.expect("NAMES #rust alice bob").await;
    alice.expect("TOPIC #rust bob async book club").await;
    alice.send("SAY #rust hi both").await;
    alice.expect("SAY #rust alice hi both").await;
    alice.send("TELL bob see you at 5?").await;
    alice.expect("TELL alice bob see you at 5?").await;
    let said = history(&mut alice, "HISTORY #rust 2", Some("#rust")).await;
    assert_eq!(
        said.iter()
            .map(|(_, f, t)| (f.as_str(), t.as_str()))
            .collect::<Vec<_>>(),
        [("bob", "anyone here?"), ("alice", "hi both")]
    );
    alice.send("PART #rust later").await;
    alice.expect("LEAVE #rust alice later").await;
    alice.expect_quiet().await;
    assert_eq!(
        bob.barrier().await,
        [
            "JOIN #rust alice",
            "SAY #rust alice hi both",
            "TELL alice bob see you at 5?",
            "LEAVE #rust alice later"
        ]
    );
}

#[tokio::test]
async fn join_creates_a_room_answers_names_and_tells_the_other_members_only() {
    let server = Server::start(&[]);
    let mut outsider = server.user("outsider").await;
    let mut alice = server.user("alice").await;
    assert_eq!(alice.request("JOIN #r").await, ["NAMES #r alice"]);
    let mut bob = server.user("bob").await;
    assert_eq!(bob.request("JOIN #r").await, ["NAMES #r alice bob"]);
    assert_eq!(alice.barrier().await, ["JOIN bob", "JOIN #r bob"]);
    let mut carol = server.user("carol").await;
    assert_eq!(carol.request("join #R").await, ["NAMES #r alice bob carol"]);
    assert_eq!(alice.barrier().await, ["JOIN carol", "JOIN #r carol"]);
    assert_eq!(bob.barrier().await, ["JOIN carol", "JOIN #r carol"]);
    assert_eq!(
        outsider.barrier().await,
        ["JOIN alice", "JOIN bob", "JOIN carol"]
    );
}

#[tokio::test]
async fn join_answers_names_then_the_topic_when_there_is_one() {
    let server = Server::start(&[]);
    let mut alice = member(&server, "alice", &["#r"]).await;
    alice.send("TOPIC #r  spaced   topic ").await;
    alice.expect("TOPIC #r alice  spaced   topic ").await;
    let mut bob = server.user("bob").await;
    assert_eq!(
        bob.request("JOIN #r").await,
        ["NAMES #r alice bob", "TOPIC #r alice  spaced   topic "]
    );
    assert_eq!(alice.barrier().await, ["JOIN bob", "JOIN #r bob"]);
}

#[tokio::test]
async fn rooms_keep_the_spelling_of_their_creation_and_match_any_case() {
    let server = Server::start(&[]);
    let mut alice = member(&server, "alice", &["#RuSt"]).await;
    let mut bob = server.user("bob").await;
    assert_eq!(bob.request("JOIN #rust").await, ["NAMES #RuSt alice bob"]);
    assert_eq!(alice.barrier().await, ["JOIN bob", "JOIN #RuSt bob"]);
    assert_eq!(bob.request("SAY #RUST hi").await, ["SAY #RuSt bob hi"]);
    assert_eq!(bob.request("TOPIC #rUST t").await, ["TOPIC #RuSt bob t"]);
    assert_eq!(bob.request("TOPIC #rust").await, ["TOPIC #RuSt bob t"]);
    assert_eq!(bob.request("WHO #RUST").await, ["NAMES #RuSt alice bob"]);
    assert_eq!(bob.request("ROOMS").await, ["ROOMS #RuSt 2"]);
    let said = history(&mut bob, "HISTORY #rust", Some("#RuSt")).await;
    assert_eq!(texts(&said), ["hi"]);
    refused(&mut bob, "already-in-room", &["JOIN #RUST"]).await;
    assert_eq!(bob.request("PART #rust bye").await, ["LEAVE #RuSt bob bye"]);
    assert_eq!(
        alice.barrier().await,
        [
            "SAY #RuSt bob hi",
            "TOPIC #RuSt bob t",
            "LEAVE #RuSt bob bye"
        ]
    );
    // Forgotten with its last member; created again, spelled anew.
    assert_eq!(alice.request("PART #RUST").await, ["LEAVE #RuSt alice"]);
    assert_eq!(bob.request("JOIN #RUST").await, ["NAMES #RUST bob"]);
    assert_eq!(alice.request("ROOMS").await, ["ROOMS #RUST 1"]);
}

#[tokio::test]
async fn names_in_frames_are_spelled_as_the_users_logged_in() {
    let server = Server::start(&[]);
    let mut clients = Vec::new();
    for name in ["Zed", "alice", "a_b", "Bob", "a.b", "a-b", "9lives"] {
        clients.push(member(&server, name, &["#r"]).await);
    }
    let mut carol = server.user("carol").await;
    assert_eq!(
        carol.request("JOIN #r").await,
        ["NAMES #r 9lives a-b a.b a_b alice Bob carol Zed"]
    );
    assert_eq!(
        carol.request("WHO #r").await,
        ["NAMES #r 9lives a-b a.b a_b alice Bob carol Zed"]
    );
    assert_eq!(carol.request("TELL bob hi").await, ["TELL carol Bob hi"]);
    assert_eq!(carol.request("TELL ZED hi").await, ["TELL carol Zed hi"]);
    assert_eq!(
        carol.request("TELL CaRoL me").await,
        ["TELL carol carol me"]
    );
    let bob = &mut clients[3];
    bob.barrier().await;
    assert_eq!(bob.request("TOPIC #r x").await, ["TOPIC #r Bob x"]);
    assert_eq!(bob.request("SAY #r y").await, ["SAY #r Bob y"]);
    assert_eq!(carol.barrier().await, ["TOPIC #r Bob x", "SAY #r Bob y"]);
    assert_eq!(carol.request("TOPIC #r").await, ["TOPIC #r Bob x"]);
    let said = history(&mut carol, "HISTORY #r", Some("#r")).await;
    assert_eq!(said[0].1, "Bob");
    assert_eq!(bob.request("PART #r").await, ["LEAVE #r Bob"]);
}

#[tokio::test]
async fn part_reaches_every_member_the_leaver_too_with_or_without_text() {
    let server = Server::start(&[]);
    let mut outsider = server.user("outsider").await;
    let mut alice = member(&server, "alice", &["#r"]).await;
    let mut bob = member(&server, "bob", &["#r"]).await;
    let mut carol = member(&server, "carol", &["#r"]).await;
    alice.barrier().await;
    bob.barrier().await;
    outsider.barrier().await;
    for (frame, leave) in [
        ("PART #r see  you ", "LEAVE #r carol see  you "),
        ("PART #r", "LEAVE #r carol"),
        ("PART #r ", "LEAVE #r carol"),
        ("PART #r    ", "LEAVE #r carol"),
        ("PART #r \tbye", "LEAVE #r carol \tbye"),
        ("PART #r  x", "LEAVE #r carol  x"),
    ] {
        assert_eq!(carol.request(frame).await, [leave], "{frame:?}");
        assert_eq!(alice.barrier().await, [leave], "{frame:?}");
        assert_eq!(bob.barrier().await, [leave], "{frame:?}");
        assert_eq!(carol.request("JOIN #r").await, ["NAMES #r alice bob carol"]);
        alice.expect("JOIN #r carol").await;
        bob.expect("JOIN #r carol").await;
    }
    outsider.expect_quiet().await;
    assert_eq!(
        carol.request("SAY #r still in").await,
        ["SAY #r carol still in"]
    );
}

#[tokio::test]
async fn say_reaches_every_member_and_keeps_the_text_exactly() {
    let server = Server::start(&[]);
    let mut outsider = server.user("outsider").await;
    let mut alice = member(&server, "alice", &["#r"]).await;
    let mut bob = member(&server, "bob", &["#r"]).await;
    alice.barrier().await;
    outsider.barrier().await;
    for text in [
        "hi",
        "  leading",
        "inner   spaces",
        "trailing  ",
        "tab\there",
        "\tleading tab",
        "#r looks like a room",
        "ünïcödé ✓ 漢字 😀",
    ] {
        let said = format!("SAY #r alice {text}");
        assert_eq!(
            alice.request(&format!("SAY #r {text}")).await,
            std::slice::from_ref(&said)
        );
        assert_eq!(bob.barrier().await, [said]);
    }
    assert_eq!(
        bob.request("say #R lower case verb").await,
        ["SAY #r bob lower case verb"]
    );
    alice.expect("SAY #r bob lower case verb").await;
    outsider.expect_quiet().await;
}

#[tokio::test]
async fn tell_reaches_the_receiver_and_the_sender_only() {
    let server = Server::start(&[]);
    let mut alice = server.user("alice").await;
    let mut bob = server.user("Bob").await;
    let mut carol = member(&server, "carol", &["#r"]).await;
    alice.barrier().await;
    bob.barrier().await;
    for (frame, told) in [
        ("TELL bob see you at 5?", "TELL alice Bob see you at 5?"),
        ("TELL BOB  two  spaces ", "TELL alice Bob  two  spaces "),
        ("tell Bob tab\tin", "TELL alice Bob tab\tin"),
    ] {
        assert_eq!(alice.request(frame).await, [told], "{frame:?}");
        assert_eq!(bob.barrier().await, [told], "{frame:?}");
    }
    assert_eq!(bob.request("TELL carol hey").await, ["TELL Bob carol hey"]);
    assert_eq!(carol.barrier().await, ["TELL Bob carol hey"]);
    alice.expect_quiet().await;
}

#[tokio::test]
async fn tell_to_yourself_reaches_you_once() {
    let server = Server::start(&[]);
    let mut alice = server.user("Alice").await;
    let mut bob = server.user("bob").await;
    alice.barrier().await;
    assert_eq!(
        alice.request("TELL alice note to self").await,
        ["TELL Alice Alice note to self"]
    );
    assert_eq!(
        alice.request("TELL ALICE again").await,
        ["TELL Alice Alice again"]
    );
    bob.expect_quiet().await;
}

#[tokio::test]
async fn topic_is_set_by_a_member_asked_for_and_replaced_never_cleared() {
    let server = Server::start(&[]);
    let mut outsider = server.user("outsider").await;
    let mut alice = member(&server, "alice", &["#r"]).await;
    let mut bob = member(&server, "bob", &["#r"]).await;
    alice.barrier().await;
    outsider.barrier().await;
    assert_eq!(alice.request("TOPIC #r").await, ["TOPIC #r"]);
    assert_eq!(alice.request("TOPIC #r   ").await, ["TOPIC #r"]);
    bob.expect_quiet().await;
    assert_eq!(
        alice.request("TOPIC #r first topic").await,
        ["TOPIC #r alice first topic"]
    );
    assert_eq!(bob.barrier().await, ["TOPIC #r alice first topic"]);
    assert_eq!(
        bob.request("TOPIC #r").await,
        ["TOPIC #r alice first topic"]
    );
    assert_eq!(
        bob.request("topic #R  second  ").await,
        ["TOPIC #r bob  second  "]
    );
    assert_eq!(alice.barrier().await, ["TOPIC #r bob  second  "]);
    // Blank is a question, not a clearing.
    assert_eq!(
        alice.request("TOPIC #r  ").await,
        ["TOPIC #r bob  second  "]
    );
    assert_eq!(alice.request("TOPIC #r").await, ["TOPIC #r bob  second  "]);
    // The setter leaving does not take the topic away.
    assert_eq!(bob.request("PART #r").await, ["LEAVE #r bob"]);
    alice.barrier().await;
    assert_eq!(alice.request("TOPIC #r").await, ["TOPIC #r bob  second  "]);
    bob.barrier().await;
    bob.expect_quiet().await;
    outsider.expect_quiet().await;
}

#[tokio::test]
async fn who_room_lists_the_members_to_anyone_and_nothing_for_no_room() {
    let server = Server::start(&[]);
    let _alice = member(&server, "alice", &["#r"]).await;
    let _bob = member(&server, "Bob", &["#r", "#s"]).await;
    let mut carol = server.user("carol").await;
    assert_eq!(carol.request("WHO #r").await, ["NAMES #r alice Bob"]);
    assert_eq!(carol.request("who #S").await, ["NAMES #s Bob"]);
    assert_eq!(carol.request("WHO #nope").await, ["NAMES #nope"]);
    // The lobby's WHO is version 1's.
    assert_eq!(carol.request("WHO").await, ["NAMES alice Bob carol"]);
    // Asking created nothing.
    assert_eq!(carol.request("ROOMS").await, ["ROOMS #r 2 #s 1"]);
}

#[tokio::test]
async fn rooms_lists_every_room_with_its_count_sorted_like_names() {
    let server = Server::start(&[]);
    let mut alice = server.user("alice").await;
    assert_eq!(alice.request("ROOMS").await, ["ROOMS"]);
    let mut bob = server.user("bob").await;
    alice.barrier().await;
    for room in ["#b", "#A", "#a_b", "#a.b", "#a-b", "#9", "#Zz"] {
        bob.send(&format!("JOIN {room}")).await;
    }
    bob.barrier().await;
    for room in ["#a", "#a.b"] {
        alice.send(&format!("JOIN {room}")).await;
    }
    alice.barrier().await;
    bob.barrier().await;
    assert_eq!(
        alice.request("ROOMS").await,
        ["ROOMS #9 1 #A 2 #a-b 1 #a.b 2 #a_b 1 #b 1 #Zz 1"]
    );
    assert_eq!(
        bob.request("rooms").await,
        ["ROOMS #9 1 #A 2 #a-b 1 #a.b 2 #a_b 1 #b 1 #Zz 1"]
    );
    for room in ["#b", "#A", "#a_b", "#a.b", "#a-b", "#9", "#Zz"] {
        bob.send(&format!("PART {room}")).await;
    }
    bob.barrier().await;
    alice.barrier().await;
    assert_eq!(alice.request("ROOMS").await, ["ROOMS #A 1 #a.b 1"]);
    assert_eq!(alice.request("PART #a").await, ["LEAVE #A alice"]);
    assert_eq!(alice.request("PART #a.b").await, ["LEAVE #a.b alice"]);
    assert_eq!(alice.request("ROOMS").await, ["ROOMS"]);
}

// ---------------------------------------------------------------------------
// History
// ---------------------------------------------------------------------------

#[tokio::test]
async fn room_history_is_oldest_first_with_utc_millisecond_times() {
    let server = Server::start(&[]);
    let mut alice = member(&server, "alice", &["#r"]).await;
    let mut bob = member(&server, "bob", &["#r"]).await;
    alice.barrier().await;
    let before = now_millis();
    for (who, text, answer) in [
        ("alice", "one", &["SAY #r alice one"][..]),
        (
            "bob",
            " two  spaced ",
            &["SAY #r alice one", "SAY #r bob  two  spaced "],
        ),
        (
            "alice",
            "three\tx",
            &["SAY #r bob  two  spaced ", "SAY #r alice three\tx"],
        ),
    ] {
        let sender = if who == "alice" { &mut alice } else { &mut bob };
        assert_eq!(sender.request(&format!("SAY #r {text}")).await, answer);
    }
    let after = now_millis();
    bob.barrier().await;
    alice.barrier().await;
    let said = history(&mut bob, "HISTORY #r", Some("#r")).await;
    assert_eq!(
        said.iter()
            .map(|(_, f, t)| (f.as_str(), t.as_str()))
            .collect::<Vec<_>>(),
        [
            ("alice", "one"),
            ("bob", " two  spaced "),
            ("alice", "three\tx")
        ]
    );
    for (time, _, _) in &said {
        assert!(
            before.saturating_sub(2_000) <= *time && *time <= after + 2_000,
            "time {time} not between {before} and {after}: not UTC now?"
        );
    }
    let last_two = history(&mut bob, "HISTORY #r 2", Some("#r")).await;
    assert_eq!(texts(&last_two), [" two  spaced ", "three\tx"]);
    assert_eq!(last_two[..], said[1..]);
    let last = history(&mut bob, "history #R 1", Some("#r")).await;
    assert_eq!(texts(&last), ["three\tx"]);
    let all = history(&mut bob, "HISTORY #r 99", Some("#r")).await;
    assert_eq!(all, said);
}

#[tokio::test]
async fn lobby_history_holds_the_lobbys_msgs_only() {
    let server = Server::start(&[]);
    let mut alice = member(&server, "alice", &["#r"]).await;
    let mut bob = member(&server, "bob", &["#r"]).await;
    alice.barrier().await;
    let before = now_millis();
    assert_eq!(
        alice.request("MSG  first  lobby ").await,
        ["MSG alice  first  lobby "]
    );
    assert_eq!(
        alice.request("SAY #r in a room").await,
        ["SAY #r alice in a room"]
    );
    assert_eq!(
        bob.request("TELL alice a secret").await,
        [
            "MSG alice  first  lobby ",
            "SAY #r alice in a room",
            "TELL bob alice a secret"
        ]
    );
    assert_eq!(
        bob.request("TOPIC #r a topic").await,
        ["TOPIC #r bob a topic"]
    );
    assert_eq!(bob.request("MSG second").await, ["MSG bob second"]);
    let mut carol = server.user("carol").await;
    carol.send("LEAVE").await;
    carol.expect("BYE").await;
    assert_eq!(
        alice.request("PART #r bye").await,
        [
            "TELL bob alice a secret",
            "TOPIC #r bob a topic",
            "MSG bob second",
            "JOIN carol",
            "LEAVE carol",
            "LEAVE #r alice bye"
        ]
    );
    let after = now_millis();
    bob.barrier().await;
    alice.barrier().await;
    let said = history(&mut bob, "HISTORY", None).await;
    assert_eq!(
        said.iter()
            .map(|(_, f, t)| (f.as_str(), t.as_str()))
            .collect::<Vec<_>>(),
        [("alice", " first  lobby "), ("bob", "second")]
    );
    for (time, _, _) in &said {
        assert!(before.saturating_sub(2_000) <= *time && *time <= after + 2_000);
    }
    assert_eq!(
        texts(&history(&mut alice, "HISTORY 1", None).await),
        ["second"]
    );
    assert_eq!(history(&mut alice, "HISTORY 2", None).await, said);
    // A newcomer may read what was said before it came.
    let mut dave = server.user("dave").await;
    assert_eq!(history(&mut dave, "HISTORY", None).await, said);
    // The room's history has its SAY only.
    let mut erin = member(&server, "erin", &["#r"]).await;
    assert_eq!(
        texts(&history(&mut erin, "HISTORY #r", Some("#r")).await),
        ["in a room"]
    );
}

#[tokio::test]
async fn tells_are_not_kept() {
    let server = Server::start(&[]);
    let mut alice = member(&server, "alice", &["#r"]).await;
    let mut bob = member(&server, "bob", &["#r"]).await;
    assert_eq!(
        alice.request("TELL bob secret").await,
        ["JOIN bob", "JOIN #r bob", "TELL alice bob secret"]
    );
    assert_eq!(
        alice.request("TELL alice self").await,
        ["TELL alice alice self"]
    );
    bob.barrier().await;
    assert_eq!(alice.request("HISTORY").await, ["HISTORY 0"]);
    assert_eq!(bob.request("HISTORY #r").await, ["HISTORY #r 0"]);
}

#[tokio::test]
async fn history_serves_50_by_default_and_at_most_the_kept_100() {
    let server = Server::start(&[]);
    let mut alice = member(&server, "alice", &["#r"]).await;
    let lobby: String = (0..120).map(|n| format!("MSG m{n}\n")).collect();
    let room: String = (0..120).map(|n| format!("SAY #r s{n}\n")).collect();
    alice.send_raw(lobby.as_bytes()).await;
    alice.send_raw(room.as_bytes()).await;
    assert_eq!(alice.barrier().await.len(), 240);
    let expect = |prefix: &str, from: usize| -> Vec<String> {
        (from..120).map(|n| format!("{prefix}{n}")).collect()
    };
    let said = history(&mut alice, "HISTORY", None).await;
    assert_eq!(texts(&said), expect("m", 70));
    let said = history(&mut alice, "HISTORY 100", None).await;
    assert_eq!(texts(&said), expect("m", 20));
    let said = history(&mut alice, "HISTORY 101", None).await;
    assert_eq!(texts(&said), expect("m", 20));
    let said = history(&mut alice, "HISTORY 99999999999999999999999", None).await;
    assert_eq!(texts(&said), expect("m", 20));
    let said = history(&mut alice, "HISTORY #r", Some("#r")).await;
    assert_eq!(texts(&said), expect("s", 70));
    let said = history(&mut alice, "HISTORY #r 1000", Some("#r")).await;
    assert_eq!(texts(&said), expect("s", 20));
}

#[tokio::test]
async fn history_count_is_capped_at_the_history_flag() {
    let server = Server::start(&["--history", "5"]);
    let mut alice = member(&server, "alice", &["#r"]).await;
    for n in 0..3 {
        assert_eq!(
            alice.request(&format!("MSG m{n}")).await,
            [format!("MSG alice m{n}")]
        );
        assert_eq!(
            alice.request(&format!("SAY #r s{n}")).await,
            [format!("SAY #r alice s{n}")]
        );
    }
    assert_eq!(
        texts(&history(&mut alice, "HISTORY 10", None).await),
        ["m0", "m1", "m2"]
    );
    for n in 3..8 {
        assert_eq!(
            alice.request(&format!("MSG m{n}")).await,
            [format!("MSG alice m{n}")]
        );
        assert_eq!(
            alice.request(&format!("SAY #r s{n}")).await,
            [format!("SAY #r alice s{n}")]
        );
    }
    let five = ["m3", "m4", "m5", "m6", "m7"];
    assert_eq!(texts(&history(&mut alice, "HISTORY", None).await), five);
    assert_eq!(texts(&history(&mut alice, "HISTORY 6", None).await), five);
    assert_eq!(texts(&history(&mut alice, "HISTORY 5", None).await), five);
    assert_eq!(
        texts(&history(&mut alice, "HISTORY 2", None).await),
        ["m6", "m7"]
    );
    assert_eq!(
        texts(&history(&mut alice, "HISTORY #r 50", Some("#r")).await),
        ["s3", "s4", "s5", "s6", "s7"]
    );
}

#[tokio::test]
async fn history_zero_keeps_nothing() {
    let server = Server::start(&["--history", "0"]);
    let mut alice = member(&server, "alice", &["#r"]).await;
    assert_eq!(alice.request("MSG m").await, ["MSG alice m"]);
    assert_eq!(alice.request("SAY #r s").await, ["SAY #r alice s"]);
    assert_eq!(alice.request("HISTORY").await, ["HISTORY 0"]);
    assert_eq!(alice.request("HISTORY 5").await, ["HISTORY 0"]);
    assert_eq!(alice.request("HISTORY #r").await, ["HISTORY #r 0"]);
    assert_eq!(alice.request("HISTORY #r 1").await, ["HISTORY #r 0"]);
    // The count's form is still checked.
    alice.send("HISTORY 0").await;
    alice.expect_error("bad-count").await;
}

#[tokio::test]
async fn nothing_comes_between_history_and_its_hist_frames() {
    const SAYS: usize = 400;
    const ASKS: usize = 30;
    const SEEDS: usize = 10;
    let server = Server::start(&[]);
    let (mut alice, mut alice_out) = wire::login(server.addr(), "alice").await;
    wire::send(&mut alice_out, "JOIN #r\n").await;
    assert_eq!(alice.line().await, "NAMES #r alice");
    let (mut bob, mut bob_out) = wire::login(server.addr(), "bob").await;
    wire::send(&mut bob_out, "JOIN #r\n").await;
    assert_eq!(bob.line().await, "NAMES #r alice bob");
    assert_eq!(alice.line().await, "JOIN bob");
    assert_eq!(alice.line().await, "JOIN #r bob");
    // Something to read back first, in the room and the lobby.
    let seeds: String = (0..SEEDS)
        .map(|n| format!("SAY #r s{n}\nMSG s{n}\n"))
        .collect();
    wire::send(&mut bob_out, &seeds).await;
    for _ in 0..2 * SEEDS {
        let line = alice.line().await;
        assert!(
            line.starts_with("SAY #r bob s") || line.starts_with("MSG bob s"),
            "{line:?}"
        );
    }
    let flood: String = (0..SAYS)
        .map(|n| format!("SAY #r {n}\nMSG {n}\n"))
        .collect();
    let bob_reads = tokio::spawn(async move {
        let mut seen = 0;
        while seen < 2 * SAYS + 2 * SEEDS {
            let line = bob.line().await;
            if line.starts_with("SAY #r bob") || line.starts_with("MSG bob") {
                seen += 1;
            }
        }
    });
    let bob_sends = tokio::spawn(async move {
        wire::send(&mut bob_out, &flood).await;
        bob_out
    });
    let asks: String = (0..ASKS)
        .map(|n| {
            if n % 2 == 0 {
                "HISTORY #r 7\n"
            } else {
                "HISTORY 9\n"
            }
        })
        .collect();
    wire::send(&mut alice_out, &asks).await;
    let (mut answers, mut says) = (0, 0);
    while answers < ASKS || says < 2 * SAYS {
        let line = alice.line().await;
        if let Some(k) = line.strip_prefix("HISTORY ") {
            let (room, k) = match k.strip_prefix("#r ") {
                Some(k) => (Some("#r"), k),
                None => (None, k),
            };
            let k: usize = k.parse().expect("HISTORY [<room>] <k>");
            assert_eq!(k, if room.is_some() { 7 } else { 9 }, "{line:?}");
            for _ in 0..k {
                let line = alice.line().await;
                let (time, _, _) = hist(&line, room);
                assert!(parse_time(time).is_some(), "{line:?}");
            }
            answers += 1;
        } else {
            assert!(
                line.starts_with("SAY #r bob ") || line.starts_with("MSG bob "),
                "alice got {line:?}"
            );
            says += 1;
        }
    }
    bob_reads.await.expect("bob reads");
    bob_sends.await.expect("bob sends");
}

#[tokio::test]
async fn a_room_is_forgotten_with_its_topic_and_history_when_its_last_member_parts() {
    let server = Server::start(&[]);
    let mut alice = member(&server, "alice", &["#r"]).await;
    let mut bob = member(&server, "bob", &["#r"]).await;
    assert_eq!(
        alice.request("TOPIC #r old topic").await,
        ["JOIN bob", "JOIN #r bob", "TOPIC #r alice old topic"]
    );
    assert_eq!(
        alice.request("SAY #r old words").await,
        ["SAY #r alice old words"]
    );
    assert_eq!(
        bob.request("PART #r").await,
        [
            "TOPIC #r alice old topic",
            "SAY #r alice old words",
            "LEAVE #r bob"
        ]
    );
    // Still there with one member: topic and history kept.
    assert_eq!(
        bob.request("JOIN #r").await,
        ["NAMES #r alice bob", "TOPIC #r alice old topic"]
    );
    assert_eq!(
        texts(&history(&mut bob, "HISTORY #r", Some("#r")).await),
        ["old words"]
    );
    assert_eq!(bob.request("PART #r").await, ["LEAVE #r bob"]);
    assert_eq!(
        alice.request("PART #r").await,
        [
            "LEAVE #r bob",
            "JOIN #r bob",
            "LEAVE #r bob",
            "LEAVE #r alice"
        ]
    );
    assert_eq!(bob.request("ROOMS").await, ["ROOMS"]);
    assert_eq!(bob.request("WHO #r").await, ["NAMES #r"]);
    assert_eq!(bob.request("JOIN #r").await, ["NAMES #r bob"]);
    assert_eq!(bob.request("TOPIC #r").await, ["TOPIC #r"]);
    assert_eq!(bob.request("HISTORY #r").await, ["HISTORY #r 0"]);
}

// ---------------------------------------------------------------------------
// Leaving the server
// ---------------------------------------------------------------------------

/// Alice (in #a and #b with bob, alone in #c with a topic and history)
/// leaves the server by `how`; bob hears only the lobby's LEAVE.
async fn leaving_the_server_leaves_every_room(how: &str) {
    let server = Server::start(&[]);
    let mut bob = member(&server, "bob", &["#a", "#b"]).await;
    let mut alice = member(&server, "alice", &["#a", "#b", "#c"]).await;
    assert_eq!(
        alice.request("TOPIC #c mine").await,
        ["TOPIC #c alice mine"]
    );
    assert_eq!(
        alice.request("SAY #c mine too").await,
        ["SAY #c alice mine too"]
    );
    assert_eq!(
        alice.request("SAY #a last words").await,
        ["SAY #a alice last words"]
    );
    assert_eq!(
        bob.barrier().await,
        [
            "JOIN alice",
            "JOIN #a alice",
            "JOIN #b alice",
            "SAY #a alice last words"
        ]
    );
    let expected = match how {
        "LEAVE" => {
            alice.send("LEAVE").await;
            alice.expect("BYE").await;
            alice.expect_closed().await;
            "LEAVE alice"
        }
        "LEAVE with text" => {
            alice.send("LEAVE so long").await;
            alice.expect("BYE").await;
            alice.expect_closed().await;
            "LEAVE alice so long"
        }
        "close" => {
            drop(alice);
            "LEAVE alice"
        }
        "reset" => {
            alice.reset();
            "LEAVE alice"
        }
        other => unreachable!("{other}"),
    };
    bob.expect(expected).await;
    bob.expect_quiet().await;
    assert_eq!(bob.request("WHO #a").await, ["NAMES #a bob"]);
    assert_eq!(bob.request("ROOMS").await, ["ROOMS #a 1 #b 1"]);
    assert_eq!(bob.request("WHO #c").await, ["NAMES #c"]);
    // #c was forgotten: topic and history too.
    assert_eq!(bob.request("JOIN #c").await, ["NAMES #c bob"]);
    assert_eq!(bob.request("HISTORY #c").await, ["HISTORY #c 0"]);
    // Alice may come back; she is in no room.
    let mut alice = server.user("alice").await;
    assert_eq!(bob.barrier().await, ["JOIN alice"]);
    alice.send("SAY #a back").await;
    alice.expect_error("not-in-room").await;
    assert_eq!(alice.request("JOIN #a").await, ["NAMES #a alice bob"]);
}

#[tokio::test]
async fn leave_leaves_every_room_with_only_the_lobbys_leave() {
    leaving_the_server_leaves_every_room("LEAVE").await;
}

#[tokio::test]
async fn leave_with_text_leaves_every_room_with_only_the_lobbys_leave() {
    leaving_the_server_leaves_every_room("LEAVE with text").await;
}

#[tokio::test]
async fn a_disconnect_leaves_every_room_with_only_the_lobbys_leave() {
    leaving_the_server_leaves_every_room("close").await;
}

#[tokio::test]
async fn a_reset_leaves_every_room_with_only_the_lobbys_leave() {
    leaving_the_server_leaves_every_room("reset").await;
}

#[tokio::test]
async fn an_idle_timeout_leaves_every_room_with_only_the_lobbys_leave() {
    let server = Server::start(&["--idle-timeout", "1s"]);
    let (mut bob, mut bob_out) = wire::login(server.addr(), "bob").await;
    wire::send(&mut bob_out, "JOIN #r\n").await;
    assert_eq!(bob.line().await, "NAMES #r bob");
    let mut alice = member(&server, "alice", &["#r", "#alone"]).await;
    // Bob keeps himself alive while alice idles out.
    let mut keepalive = tokio::time::interval(Duration::from_millis(200));
    let mut seen = Vec::new();
    loop {
        tokio::select! {
            line = bob.line() => {
                if line == "LEAVE alice" {
                    break;
                }
                if !line.starts_with("PONG") {
                    seen.push(line);
                }
            }
            _ = keepalive.tick() => wire::send(&mut bob_out, "PING\n").await,
        }
    }
    assert_eq!(seen, ["JOIN alice", "JOIN #r alice"]);
    alice.expect_error("idle-timeout").await;
    wire::send(&mut bob_out, "WHO #r\nROOMS\nPING end\n").await;
    let rest = bob.until("PONG end").await;
    let rest: Vec<_> = rest
        .into_iter()
        .filter(|l| !l.starts_with("PONG"))
        .collect();
    assert_eq!(rest, ["NAMES #r bob", "ROOMS #r 1"]);
}

// ---------------------------------------------------------------------------
// Errors, and what wins
// ---------------------------------------------------------------------------

/// Sends each frame and expects `ERROR <code>` for it, nothing else.
async fn refused(client: &mut Client, code: &str, frames: &[&str]) {
    for frame in frames {
        let answer = client.request(frame).await;
        assert_eq!(answer.len(), 1, "{frame:?}: {answer:?}");
        let got = answer[0]
            .strip_prefix("ERROR ")
            .and_then(|r| r.split(' ').next());
        assert_eq!(
            got,
            Some(code),
            "{frame:?}: expected ERROR {code}, got {answer:?}"
        );
    }
}

/// Bytes-level version of [`refused`], for frames with control characters.
async fn refused_raw(client: &mut Client, code: &str, frames: &[&[u8]]) {
    for frame in frames {
        client.send_raw(frame).await;
        let answer = client.barrier().await;
        assert_eq!(answer.len(), 1, "{frame:?}: {answer:?}");
        let got = answer[0]
            .strip_prefix("ERROR ")
            .and_then(|r| r.split(' ').next());
        assert_eq!(
            got,
            Some(code),
            "{frame:?}: expected ERROR {code}, got {answer:?}"
        );
    }
}

#[tokio::test]
async fn version_2_frames_need_a_login() {
    let server = Server::start(&[]);
    let _alice = member(&server, "alice", &["#r"]).await;
    let mut early = server.connect().await;
    refused(
        &mut early,
        "not-logged-in",
        &[
            "JOIN #r",
            "JOIN #new",
            "PART #r",
            "PART #r bye",
            "SAY #r hi",
            "TELL alice hi",
            "TOPIC #r",
            "TOPIC #r new topic",
            "WHO #r",
            "ROOMS",
            "HISTORY",
            "HISTORY 5",
            "HISTORY #r",
            "HISTORY #r 5",
            "join #r",
            "say #r hi",
        ],
    )
    .await;
    early.login("late").await;
    assert_eq!(early.request("WHO #r").await, ["NAMES #r alice"]);
    assert_eq!(early.request("ROOMS").await, ["ROOMS #r 1"]);
    assert_eq!(early.request("HISTORY").await, ["HISTORY 0"]);
}

#[tokio::test]
async fn bad_or_missing_rooms_are_bad_room() {
    let server = Server::start(&[]);
    let mut alice = member(&server, "alice", &["#r"]).await;
    let mut bob = member(&server, "bob", &["#r"]).await;
    alice.barrier().await;
    let long = format!("JOIN #{}", "a".repeat(33));
    refused(
        &mut alice,
        "bad-room",
        &[
            "JOIN",
            "JOIN #",
            "JOIN rust",
            "JOIN #a b",
            "JOIN #r x",
            "JOIN ##a",
            "JOIN #_a",
            "JOIN #-a",
            "JOIN #.a",
            "JOIN #a!",
            "JOIN #é",
            "JOIN #a#b",
            &long,
            "WHO rust",
            "WHO #a b",
            "WHO #",
            "WHO #r x",
            "PART",
            "PART rust",
            "PART #",
            "PART rust bye",
            "SAY",
            "SAY rust hi",
            "SAY # hi",
            "SAY #b!d hi",
            "TOPIC",
            "TOPIC rust",
            "TOPIC rust new",
            "TOPIC #b!d new",
            "HISTORY #",
            "HISTORY #b!d",
            "HISTORY #b!d 5",
            "HISTORY ## 5",
        ],
    )
    .await;
    bob.expect_quiet().await;
    assert_eq!(alice.request("ROOMS").await, ["ROOMS #r 2"]);
    let longest = format!("#{}", "a".repeat(32));
    assert_eq!(
        alice.request(&format!("JOIN {longest}")).await,
        [format!("NAMES {longest} alice")]
    );
}

#[tokio::test]
async fn not_in_room_for_say_part_topic_and_history() {
    let server = Server::start(&[]);
    let mut alice = member(&server, "alice", &["#r"]).await;
    assert_eq!(
        alice.request("TOPIC #r kept").await,
        ["TOPIC #r alice kept"]
    );
    let mut bob = server.user("bob").await;
    alice.barrier().await;
    refused(
        &mut bob,
        "not-in-room",
        &[
            "SAY #r hi",
            "SAY #R hi",
            "SAY #nowhere hi",
            "PART #r",
            "PART #r bye",
            "PART #nowhere",
            "TOPIC #r",
            "TOPIC #r   ",
            "TOPIC #r hijack",
            "TOPIC #nowhere",
            "TOPIC #nowhere set",
            "HISTORY #r",
            "HISTORY #r 5",
            "HISTORY #nowhere",
        ],
    )
    .await;
    alice.expect_quiet().await;
    assert_eq!(bob.request("ROOMS").await, ["ROOMS #r 1"]);
    assert_eq!(alice.request("TOPIC #r").await, ["TOPIC #r alice kept"]);
    assert_eq!(alice.request("HISTORY #r").await, ["HISTORY #r 0"]);
    // After PART one is not in it any more.
    assert_eq!(alice.request("JOIN #s").await, ["NAMES #s alice"]);
    assert_eq!(alice.request("PART #s").await, ["LEAVE #s alice"]);
    refused(
        &mut alice,
        "not-in-room",
        &["PART #s", "SAY #s hi", "HISTORY #s"],
    )
    .await;
}

#[tokio::test]
async fn join_of_a_room_one_is_in_is_already_in_room() {
    let server = Server::start(&[]);
    let mut alice = member(&server, "Alice", &["#Rust"]).await;
    let mut bob = member(&server, "bob", &["#rust"]).await;
    alice.barrier().await;
    refused(
        &mut bob,
        "already-in-room",
        &["JOIN #rust", "JOIN #RUST", "join #Rust"],
    )
    .await;
    alice.expect_quiet().await;
    assert_eq!(bob.request("WHO #rust").await, ["NAMES #Rust Alice bob"]);
}

#[tokio::test]
async fn tell_to_nobody_is_no_such_user_and_bad_names_are_bad_name() {
    let server = Server::start(&[]);
    let mut alice = server.user("alice").await;
    let bob = server.user("bob").await;
    drop(bob);
    alice.expect("JOIN bob").await;
    alice.expect("LEAVE bob").await;
    refused(
        &mut alice,
        "no-such-user",
        &["TELL nobody hi", "TELL bob are you there", "TELL x y"],
    )
    .await;
    let long = format!("TELL {} hi", "a".repeat(33));
    refused(
        &mut alice,
        "bad-name",
        &[
            "TELL",
            "TELL b!d hi",
            "TELL b!d",
            "TELL b!d   ",
            "TELL  hi",
            "TELL _x hi",
            "TELL #r hi",
            "TELL é hi",
            &long,
        ],
    )
    .await;
    alice.expect_quiet().await;
}

#[tokio::test]
async fn say_and_tell_without_text_are_empty_message_even_for_a_non_member() {
    let server = Server::start(&[]);
    let mut alice = member(&server, "alice", &["#r"]).await;
    let mut bob = member(&server, "bob", &["#r"]).await;
    alice.barrier().await;
    refused(
        &mut alice,
        "empty-message",
        &[
            "SAY #r",
            "SAY #r ",
            "SAY #r     ",
            "TELL bob",
            "TELL bob ",
            "TELL bob    ",
            "TELL alice",
            // The form is judged before the state of the rooms and users.
            "SAY #x",
            "SAY #x   ",
            "TELL nobody",
            "TELL nobody  ",
        ],
    )
    .await;
    bob.expect_quiet().await;
    assert_eq!(bob.request("HISTORY #r").await, ["HISTORY #r 0"]);
    assert_eq!(bob.request("ROOMS").await, ["ROOMS #r 2"]);
}

#[tokio::test]
async fn history_counts_must_be_numbers_from_one_and_nothing_more() {
    let server = Server::start(&[]);
    let mut alice = member(&server, "alice", &["#r"]).await;
    assert_eq!(alice.request("MSG kept").await, ["MSG alice kept"]);
    refused(
        &mut alice,
        "bad-count",
        &[
            "HISTORY 0",
            "HISTORY -1",
            "HISTORY abc",
            "HISTORY 1.5",
            "HISTORY +5",
            "HISTORY 5x",
            "HISTORY 5 6",
            "HISTORY 5 #r",
            "HISTORY #r 0",
            "HISTORY #r -1",
            "HISTORY #r abc",
            "HISTORY #r 5 6",
            "HISTORY #r 5 extra",
            "HISTORY #r #r",
            "HISTORY rust",
            // Form before state: not a member, but the count is judged first.
            "HISTORY #nowhere 0",
            "HISTORY #nowhere abc",
        ],
    )
    .await;
    assert_eq!(texts(&history(&mut alice, "HISTORY", None).await), ["kept"]);
}

#[tokio::test]
async fn control_characters_in_any_v2_text_are_bad_text_and_win_over_everything() {
    let server = Server::start(&[]);
    let mut alice = member(&server, "alice", &["#r"]).await;
    let mut bob = member(&server, "bob", &["#r"]).await;
    assert_eq!(
        alice.request("TOPIC #r clean").await,
        ["JOIN bob", "JOIN #r bob", "TOPIC #r alice clean"]
    );
    bob.barrier().await;
    let c1 = "SAY #r c1\u{85}x\n";
    refused_raw(
        &mut alice,
        "bad-text",
        &[
            b"SAY #r bell\x07\n",
            b"SAY #r \x1b[2Jgotcha\n",
            b"SAY #r del\x7f\n",
            c1.as_bytes(),
            b"TELL bob nul\x00\n",
            b"TELL alice esc\x1b\n",
            b"TOPIC #r evil\x1b]0;title\x07\n",
            b"PART #r bye\x08\n",
            b"JOIN #r\x07\n",
            b"JOIN #new\x1b\n",
            b"WHO #r\x07\n",
            b"HISTORY #r 5\x07\n",
            // bad-text wins over bad-room, bad-name, bad-count, empty-message,
            // not-in-room and no-such-user.
            b"SAY #b!d \x07\n",
            b"SAY rust \x07\n",
            b"TELL b!d \x07\n",
            b"TELL nobody \x07\n",
            b"SAY #nowhere \x07\n",
            b"TOPIC #nowhere \x07\n",
            b"PART #nowhere \x07\n",
            b"HISTORY abc\x07\n",
            b"HISTORY #b!d 0\x07\n",
            b"SAY #r \x07\n",
        ],
    )
    .await;
    bob.expect_quiet().await;
    // Nothing changed: still a member, topic and history untouched.
    assert_eq!(alice.request("WHO #r").await, ["NAMES #r alice bob"]);
    assert_eq!(alice.request("TOPIC #r").await, ["TOPIC #r alice clean"]);
    assert_eq!(alice.request("HISTORY #r").await, ["HISTORY #r 0"]);
    assert_eq!(alice.request("ROOMS").await, ["ROOMS #r 2"]);
}

#[tokio::test]
async fn form_errors_win_over_state_errors() {
    let server = Server::start(&["--max-rooms-per-user", "1"]);
    let mut alice = member(&server, "alice", &["#r"]).await;
    // bad-name before empty-message, bad-room before empty-message.
    refused(&mut alice, "bad-name", &["TELL b!d"]).await;
    refused(&mut alice, "bad-room", &["SAY #b!d", "SAY b!d", "SAY"]).await;
    // empty-message before not-in-room and no-such-user.
    refused(&mut alice, "empty-message", &["SAY #other", "TELL ghost"]).await;
    // bad-room before too-many-rooms, already-in-room.
    refused(&mut alice, "bad-room", &["JOIN #a b", "JOIN #r x"]).await;
    // already-in-room before too-many-rooms.
    refused(&mut alice, "already-in-room", &["JOIN #r", "JOIN #R"]).await;
    refused(&mut alice, "too-many-rooms", &["JOIN #s"]).await;
    // bad-count before not-in-room.
    refused(&mut alice, "bad-count", &["HISTORY #s 0"]).await;
    refused(&mut alice, "not-in-room", &["HISTORY #s 1"]).await;
}

#[tokio::test]
async fn too_many_rooms_per_user_and_the_lobby_does_not_count() {
    let server = Server::start(&["--max-rooms-per-user", "2"]);
    let mut bob = member(&server, "bob", &["#c"]).await;
    let mut alice = server.user("alice").await;
    bob.barrier().await;
    assert_eq!(alice.request("JOIN #a").await, ["NAMES #a alice"]);
    assert_eq!(alice.request("JOIN #b").await, ["NAMES #b alice"]);
    // Neither a new room nor an existing one.
    refused(
        &mut alice,
        "too-many-rooms",
        &["JOIN #new", "JOIN #c", "join #C"],
    )
    .await;
    bob.expect_quiet().await;
    assert_eq!(alice.request("ROOMS").await, ["ROOMS #a 1 #b 1 #c 1"]);
    assert_eq!(alice.request("WHO #c").await, ["NAMES #c bob"]);
    assert_eq!(alice.request("PART #a").await, ["LEAVE #a alice"]);
    assert_eq!(alice.request("JOIN #c").await, ["NAMES #c alice bob"]);
    assert_eq!(bob.barrier().await, ["JOIN #c alice"]);
    // Others are limited on their own count.
    assert_eq!(bob.request("JOIN #b").await, ["NAMES #b alice bob"]);
}

#[tokio::test]
async fn one_room_per_user_is_one_besides_the_lobby() {
    let server = Server::start(&["--max-rooms-per-user", "1", "--max-rooms", "1"]);
    let mut alice = server.user("alice").await;
    assert_eq!(alice.request("JOIN #a").await, ["NAMES #a alice"]);
    assert_eq!(
        alice.request("MSG lobby still works").await,
        ["MSG alice lobby still works"]
    );
    refused(&mut alice, "too-many-rooms", &["JOIN #b"]).await;
}

#[tokio::test]
async fn too_many_rooms_in_all_refuses_new_rooms_only() {
    let server = Server::start(&["--max-rooms", "2"]);
    let _alice = member(&server, "alice", &["#a"]).await;
    let mut bob = member(&server, "bob", &["#b"]).await;
    let mut carol = server.user("carol").await;
    bob.barrier().await;
    refused(&mut carol, "too-many-rooms", &["JOIN #c", "JOIN #d"]).await;
    assert_eq!(carol.request("ROOMS").await, ["ROOMS #a 1 #b 1"]);
    assert_eq!(carol.request("WHO #c").await, ["NAMES #c"]);
    // Existing rooms may still be joined.
    assert_eq!(carol.request("JOIN #A").await, ["NAMES #a alice carol"]);
    assert_eq!(carol.request("JOIN #b").await, ["NAMES #b bob carol"]);
    // Once a room is forgotten there is space again.
    assert_eq!(
        bob.request("PART #b").await,
        ["JOIN #b carol", "LEAVE #b bob"]
    );
    assert_eq!(
        carol.request("PART #b").await,
        ["LEAVE #b bob", "LEAVE #b carol"]
    );
    assert_eq!(carol.request("JOIN #c").await, ["NAMES #c carol"]);
    refused(&mut bob, "too-many-rooms", &["JOIN #d"]).await;
    drop(carol);
    bob.expect("LEAVE carol").await;
    assert_eq!(bob.request("JOIN #d").await, ["NAMES #d bob"]);
}

#[tokio::test]
async fn refused_requests_reach_nobody_and_connections_stay_open() {
    let server = Server::start(&["--max-rooms", "1", "--max-rooms-per-user", "1"]);
    let mut alice = member(&server, "alice", &["#r"]).await;
    let mut bob = member(&server, "bob", &["#r"]).await;
    let mut carol = server.user("carol").await;
    alice.barrier().await;
    bob.barrier().await;
    for (frame, code) in [
        ("JOIN #x", "too-many-rooms"),
        ("JOIN #r", "already-in-room"),
        ("TELL nobody hi", "no-such-user"),
        ("SAY #r", "empty-message"),
        ("HISTORY #r 0", "bad-count"),
        ("PART #x", "not-in-room"),
        ("JOIN rust", "bad-room"),
        ("TELL b!d hi", "bad-name"),
    ] {
        refused(&mut bob, code, &[frame]).await;
    }
    refused(
        &mut carol,
        "not-in-room",
        &["SAY #r hi", "TOPIC #r hi", "PART #r"],
    )
    .await;
    alice.expect_quiet().await;
    carol.expect_quiet().await;
    assert_eq!(
        bob.request("SAY #r still here").await,
        ["SAY #r bob still here"]
    );
    alice.expect("SAY #r bob still here").await;
}

// ---------------------------------------------------------------------------
// Isolation
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_non_member_never_sees_a_rooms_frames() {
    let server = Server::start(&[]);
    let mut outsider = member(&server, "outsider", &["#other"]).await;
    let mut alice = member(&server, "alice", &["#r"]).await;
    outsider.barrier().await;
    let mut bob = server.user("bob").await;
    assert_eq!(bob.request("JOIN #r").await, ["NAMES #r alice bob"]);
    assert_eq!(
        alice.request("SAY #r hi").await,
        ["JOIN bob", "JOIN #r bob", "SAY #r alice hi"]
    );
    assert_eq!(alice.request("TOPIC #r t").await, ["TOPIC #r alice t"]);
    assert_eq!(
        bob.request("SAY #r yo").await,
        ["SAY #r alice hi", "TOPIC #r alice t", "SAY #r bob yo"]
    );
    assert_eq!(bob.request("PART #r bye").await, ["LEAVE #r bob bye"]);
    assert_eq!(
        alice.request("PART #r").await,
        ["SAY #r bob yo", "LEAVE #r bob bye", "LEAVE #r alice"]
    );
    assert_eq!(outsider.barrier().await, ["JOIN bob"]);
}

#[tokio::test]
async fn a_version_1_client_sees_exactly_version_1_frames() {
    let server = Server::start(&[]);
    let mut old = server.user("old").await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    alice.barrier().await;
    assert_eq!(alice.request("JOIN #r").await, ["NAMES #r alice"]);
    assert_eq!(bob.request("JOIN #r").await, ["NAMES #r alice bob"]);
    assert_eq!(
        alice.request("SAY #r hi bob").await,
        ["JOIN #r bob", "SAY #r alice hi bob"]
    );
    assert_eq!(
        bob.request("TELL alice psst").await,
        ["SAY #r alice hi bob", "TELL bob alice psst"]
    );
    assert_eq!(
        alice.request("TELL alice self").await,
        ["TELL bob alice psst", "TELL alice alice self"]
    );
    assert_eq!(alice.request("TOPIC #r t").await, ["TOPIC #r alice t"]);
    assert_eq!(
        alice.request("MSG hello all").await,
        ["MSG alice hello all"]
    );
    assert_eq!(
        bob.request("PART #r bye").await,
        [
            "TOPIC #r alice t",
            "MSG alice hello all",
            "LEAVE #r bob bye"
        ]
    );
    assert_eq!(bob.request("JOIN #s").await, ["NAMES #s bob"]);
    assert_eq!(bob.request("SAY #s alone").await, ["SAY #s bob alone"]);
    let said = alice.request("HISTORY #r").await;
    assert_eq!(said[..2], ["LEAVE #r bob bye", "HISTORY #r 1"]);
    assert!(
        said.len() == 3 && said[2].starts_with("HIST #r ") && said[2].ends_with(" alice hi bob"),
        "{said:?}"
    );
    assert_eq!(alice.request("ROOMS").await, ["ROOMS #r 1 #s 1"]);
    assert_eq!(alice.request("WHO #r").await, ["NAMES #r alice"]);
    bob.send("LEAVE later").await;
    bob.expect("BYE").await;
    let mut carol = member(&server, "carol", &["#r"]).await;
    assert_eq!(
        carol.request("SAY #r from carol").await,
        ["SAY #r carol from carol"]
    );
    drop(carol);
    let seen = old.recv_until("LEAVE carol").await;
    assert_eq!(
        seen,
        [
            "JOIN alice",
            "JOIN bob",
            "MSG alice hello all",
            "LEAVE bob later",
            "JOIN carol",
        ]
    );
    old.expect_quiet().await;
    assert_eq!(old.request("WHO").await, ["NAMES alice old"]);
    old.send("MSG still v1").await;
    old.expect("MSG old still v1").await;
}

// ---------------------------------------------------------------------------
// Ordering
// ---------------------------------------------------------------------------

/// Reads until `done` says the frames seen so far are enough; returns the
/// frames for which `keep` holds, in order. Fails on `DROPPED`.
async fn read_until(
    who: &str,
    reader: &mut LineReader,
    keep: impl Fn(&str) -> bool,
    mut done: impl FnMut(&str) -> bool,
) -> Vec<String> {
    let mut kept = Vec::new();
    loop {
        let line = reader.line().await;
        assert!(!line.starts_with("DROPPED"), "{who} got {line:?}");
        let finished = done(&line);
        if keep(&line) {
            kept.push(line);
        }
        if finished {
            return kept;
        }
    }
}

#[tokio::test]
async fn all_members_see_a_rooms_frames_in_one_order() {
    const EACH: usize = 300;
    const CHURNS: usize = 20;
    let server = Server::start(&[]);
    let names = ["s1", "s2", "s3", "r1"];
    let mut members = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let (mut reader, mut writer) = wire::login(server.addr(), name).await;
        wire::send(&mut writer, "JOIN #r\nPING joined\n").await;
        reader.until("PONG joined").await;
        members.push((*name, reader, writer));
        // Earlier members hear the newcomer: drain that first.
        for (earlier, reader, writer) in members.iter_mut().take(i) {
            wire::send(writer, "PING sync\n").await;
            let got = reader.until("PONG sync").await;
            assert!(
                got.contains(&format!("JOIN #r {name}")),
                "{earlier}: {got:?}"
            );
        }
    }
    // A churner that is in and out of the room all along.
    let (mut churn, mut churn_out) = wire::login(server.addr(), "churn").await;
    for (_, reader, _) in members.iter_mut() {
        reader.until("JOIN churn").await;
    }
    let is_room_frame = |line: &str| {
        line.starts_with("SAY #r ")
            || line.starts_with("TOPIC #r ")
            || line.starts_with("JOIN #r churn")
            || line.starts_with("LEAVE #r churn")
    };
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for (name, mut reader, writer) in members {
        writers.push((name, writer));
        readers.push(tokio::spawn(async move {
            let (mut says, mut leaves) = (0, 0);
            let frames = read_until(name, &mut reader, is_room_frame, |line| {
                if line.starts_with("SAY #r ") {
                    says += 1;
                }
                if line.starts_with("LEAVE #r churn") {
                    leaves += 1;
                }
                says == 3 * EACH && leaves == CHURNS
            })
            .await;
            (name, frames)
        }));
    }
    let churner = tokio::spawn(async move {
        let mut leaves = 0;
        read_until(
            "churn",
            &mut churn,
            |_| false,
            |line| {
                if line == "LEAVE #r churn" {
                    leaves += 1;
                }
                leaves == CHURNS
            },
        )
        .await;
    });
    let mut sending = Vec::new();
    for (name, mut writer) in writers {
        if name == "r1" {
            sending.push(tokio::spawn(async move { writer }));
            continue;
        }
        let burst: String = (0..EACH)
            .map(|n| {
                if n % 50 == 25 {
                    format!("TOPIC #r {name} {n}\nSAY #r {n}\n")
                } else {
                    format!("SAY #r {n}\n")
                }
            })
            .collect();
        sending.push(tokio::spawn(async move {
            wire::send(&mut writer, &burst).await;
            writer
        }));
    }
    let churn_burst = "JOIN #r\nPART #r\n".repeat(CHURNS);
    wire::send(&mut churn_out, &churn_burst).await;
    let mut orders = Vec::new();
    for reader in readers {
        orders.push(reader.await.expect("a member"));
    }
    churner.await.expect("the churner");
    for sender in sending {
        sender.await.expect("a sender");
    }
    // Each sender's SAYs in the order sent, in everyone's view.
    for (name, frames) in &orders {
        let mut next: HashMap<&str, usize> = HashMap::new();
        for line in frames {
            if let Some(rest) = line.strip_prefix("SAY #r ") {
                let (from, n) = rest.split_once(' ').expect("SAY #r <from> <n>");
                let due = next.entry(from).or_default();
                assert_eq!(
                    n.parse::<usize>().unwrap(),
                    *due,
                    "{name}: {from} out of order"
                );
                *due += 1;
            }
        }
    }
    let (first, order) = &orders[0];
    for (name, other) in &orders[1..] {
        if order != other {
            let at = order.iter().zip(other).position(|(a, b)| a != b);
            panic!("{first} and {name} saw #r in different orders, first at {at:?}");
        }
    }
}

#[tokio::test]
async fn one_senders_frames_arrive_in_order_across_rooms_the_lobby_and_tell() {
    const ROUNDS: usize = 100;
    let server = Server::start(&[]);
    let (mut alice, mut alice_out) = wire::login(server.addr(), "alice").await;
    let (mut bob, mut bob_out) = wire::login(server.addr(), "bob").await;
    let (mut carol, mut carol_out) = wire::login(server.addr(), "carol").await;
    wire::send(&mut alice_out, "JOIN #a\nJOIN #b\nPING in\n").await;
    alice.until("PONG in").await;
    wire::send(&mut bob_out, "JOIN #a\nJOIN #b\nPING in\n").await;
    bob.until("PONG in").await;
    wire::send(&mut carol_out, "JOIN #a\nPING in\n").await;
    carol.until("PONG in").await;
    wire::send(&mut alice_out, "PING sync\n").await;
    alice.until("PONG sync").await;
    wire::send(&mut bob_out, "PING sync\n").await;
    bob.until("PONG sync").await;
    let mut burst = String::new();
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    for _ in 0..ROUNDS {
        burst += &format!("SAY #a {}\n", next());
        burst += &format!("MSG {}\n", next());
        burst += &format!("TELL bob {}\n", next());
        burst += &format!("SAY #b {}\n", next());
        burst += &format!("TOPIC #a {}\n", next());
        burst += &format!("TELL carol {}\n", next());
        burst += &format!("TELL alice {}\n", next());
    }
    burst += "MSG end\n";
    let from_alice = |line: &str| {
        line.starts_with("SAY #a alice ")
            || line.starts_with("SAY #b alice ")
            || line.starts_with("MSG alice ")
            || line.starts_with("TELL alice ")
            || line.starts_with("TOPIC #a alice ")
    };
    let mut readers = Vec::new();
    for (name, mut reader) in [("alice", alice), ("bob", bob), ("carol", carol)] {
        readers.push(tokio::spawn(async move {
            let frames = read_until(name, &mut reader, from_alice, |l| l == "MSG alice end").await;
            (name, frames)
        }));
    }
    wire::send(&mut alice_out, &burst).await;
    for reader in readers {
        let (name, frames) = reader.await.expect("a reader");
        let numbers: Vec<usize> = frames[..frames.len() - 1]
            .iter()
            .map(|l| l.rsplit(' ').next().unwrap().parse().expect("numbered"))
            .collect();
        assert!(
            numbers.windows(2).all(|w| w[0] < w[1]),
            "{name} got alice's frames out of order: {frames:?}"
        );
        let per_round = match name {
            "alice" => 7,
            "bob" => 5,
            _ => 4,
        };
        assert_eq!(numbers.len(), per_round * ROUNDS, "{name}: {frames:?}");
    }
    drop((bob_out, carol_out));
}

#[tokio::test]
async fn a_users_last_say_arrives_before_the_lobbys_leave() {
    let server = Server::start(&[]);
    let (mut bob, mut bob_out) = wire::login(server.addr(), "bob").await;
    wire::send(&mut bob_out, "JOIN #r\n").await;
    assert_eq!(bob.line().await, "NAMES #r bob");
    for round in 0..30 {
        let name = format!("alice{round}");
        let (mut alice, mut alice_out) = wire::login(server.addr(), &name).await;
        wire::send(&mut alice_out, "JOIN #r\nPING in\n").await;
        alice.until("PONG in").await;
        let ending = match round % 3 {
            0 => "LEAVE\n",
            1 => "LEAVE bye\n",
            _ => "",
        };
        wire::send(
            &mut alice_out,
            &format!("SAY #r one\nTELL bob two\nSAY #r three\nMSG four\nSAY #r last\n{ending}"),
        )
        .await;
        if ending.is_empty() {
            // A clean close: the server reads all that came before it.
            alice_out.shutdown().await.expect("shutdown");
            alice.until_closed().await;
        }
        let leave = match round % 3 {
            1 => format!("LEAVE {name} bye"),
            _ => format!("LEAVE {name}"),
        };
        let seen = bob.until(&leave).await;
        assert_eq!(
            seen,
            [
                format!("JOIN {name}"),
                format!("JOIN #r {name}"),
                format!("SAY #r {name} one"),
                format!("TELL {name} bob two"),
                format!("SAY #r {name} three"),
                format!("MSG {name} four"),
                format!("SAY #r {name} last"),
            ],
            "round {round}"
        );
    }
    wire::send(&mut bob_out, "WHO #r\n").await;
    assert_eq!(bob.line().await, "NAMES #r bob");
}

#[tokio::test]
async fn one_users_joins_parts_and_messages_arrive_in_the_order_sent() {
    let server = Server::start(&[]);
    let mut bob = member(&server, "bob", &["#r"]).await;
    let mut alice = server.user("alice").await;
    bob.expect("JOIN alice").await;
    alice
        .send_raw(
            b"MSG 1\nJOIN #r\nSAY #r 2\nTELL bob 3\nTOPIC #r 4\nPART #r 5\nMSG 6\n\
              JOIN #R\nSAY #r 7\nPART #r\nTELL bob 8\nLEAVE 9\n",
        )
        .await;
    let seen = bob.recv_until("LEAVE alice 9").await;
    assert_eq!(
        seen,
        [
            "MSG alice 1",
            "JOIN #r alice",
            "SAY #r alice 2",
            "TELL alice bob 3",
            "TOPIC #r alice 4",
            "LEAVE #r alice 5",
            "MSG alice 6",
            "JOIN #r alice",
            "SAY #r alice 7",
            "LEAVE #r alice",
            "TELL alice bob 8",
        ]
    );
    bob.expect_quiet().await;
}

#[tokio::test]
async fn concurrent_joiners_each_see_every_member_once() {
    const JOINERS: usize = 8;
    let server = Server::start(&[]);
    let mut clients = Vec::new();
    for i in 0..JOINERS {
        clients.push(wire::login(server.addr(), &format!("j{i}")).await);
    }
    let all: Vec<String> = (0..JOINERS).map(|i| format!("j{i}")).collect();
    let mut tasks = Vec::new();
    for (i, (mut reader, mut writer)) in clients.into_iter().enumerate() {
        let all = all.clone();
        tasks.push(tokio::spawn(async move {
            wire::send(&mut writer, "JOIN #r\n").await;
            let me = format!("j{i}");
            let mut known: Vec<String> = Vec::new();
            let mut named = false;
            while known.len() < all.len() {
                let line = reader.line().await;
                if let Some(names) = line.strip_prefix("NAMES #r ") {
                    assert!(!named, "{me}: two NAMES");
                    named = true;
                    for name in names.split(' ') {
                        assert!(!known.contains(&name.to_owned()), "{me}: {name} twice");
                        known.push(name.to_owned());
                    }
                    assert!(known.contains(&me), "{me}: not in its own NAMES");
                } else if let Some(name) = line.strip_prefix("JOIN #r ") {
                    assert!(named, "{me}: JOIN #r {name} before its NAMES");
                    assert!(!known.contains(&name.to_owned()), "{me}: {name} twice");
                    known.push(name.to_owned());
                } else {
                    assert!(line.starts_with("JOIN j"), "{me}: {line:?}");
                }
            }
            known.sort();
            assert_eq!(known, all, "{me}");
            writer
        }));
    }
    for task in tasks {
        task.await.expect("a joiner");
    }
}

#[tokio::test]
async fn dropped_counts_every_frame_skipped_whatever_its_room() {
    const EACH: usize = 6_000;
    let server = Server::start(&["--client-buffer", "64"]);
    let mut slow = Client::connect_small_buffer(server.addr()).await;
    slow.login("slow").await;
    slow.send("JOIN #a").await;
    slow.expect("NAMES #a slow").await;
    slow.send("JOIN #b").await;
    slow.expect("NAMES #b slow").await;
    let mut talkers = Vec::new();
    for (name, room) in [("alice", "#a"), ("bob", "#b")] {
        let (mut reader, mut writer) = wire::login(server.addr(), name).await;
        wire::send(&mut writer, &format!("JOIN {room}\nPING in\n")).await;
        reader.until("PONG in").await;
        talkers.push((name, room, reader, writer));
    }
    slow.barrier().await;
    let padding = "p".repeat(400);
    let mut running = Vec::new();
    for (name, room, mut reader, mut writer) in talkers {
        let burst: String = (0..EACH)
            .map(|n| match n % 4 {
                0 => format!("TELL slow {n} {padding}\n"),
                1 => format!("MSG {n} {padding}\n"),
                _ => format!("SAY {room} {n} {padding}\n"),
            })
            .collect();
        running.push(tokio::spawn(async move {
            let writing = async { wire::send(&mut writer, &burst).await };
            // The talker reads its own echoes, and the other's MSGs.
            let reading = async {
                let mut own = 0;
                while own < EACH {
                    let line = reader.line().await;
                    assert!(!line.starts_with("DROPPED"), "{name}: {line}");
                    let echo = line.starts_with(&format!("SAY {room} {name} "))
                        || line.starts_with(&format!("MSG {name} "))
                        || line.starts_with(&format!("TELL {name} "));
                    if echo {
                        own += 1;
                    }
                }
                reader
            };
            let ((), reader) = tokio::join!(writing, reading);
            (reader, writer)
        }));
    }
    let mut back = Vec::new();
    for task in running {
        back.push(task.await.expect("talkers keep up and lose nothing"));
    }
    let (_, alice_out) = &mut back[0];
    wire::send(alice_out, "SAY #a done\n").await;
    let (mut received, mut dropped) = (0usize, 0usize);
    loop {
        let line = slow.recv().await;
        if let Some(n) = line.strip_prefix("DROPPED ") {
            dropped += n.parse::<usize>().expect("DROPPED <n>");
            continue;
        }
        received += 1;
        if line == "SAY #a alice done" {
            break;
        }
    }
    assert!(
        dropped > 0,
        "the slow reader was never told it missed frames"
    );
    // Every TELL, MSG and SAY of both (their JOINs came before the
    // barrier), then done.
    assert_eq!(received + dropped, 2 * EACH + 1, "frames unaccounted for");
    slow.expect_quiet().await;
}

// ---------------------------------------------------------------------------
// Cluster mode
// ---------------------------------------------------------------------------

/// Logs in on a cluster node that may still be starting.
async fn cluster_user(server: &Server, name: &str) -> Client {
    let deadline = std::time::Instant::now() + chat_tests::TIMEOUT;
    let mut client = server.connect().await;
    loop {
        client.send(&format!("NAME {name}")).await;
        let answer = client.recv().await;
        if answer == format!("WELCOME {name}") {
            client.expect_prefix("NAMES ").await;
            return client;
        }
        assert!(answer.starts_with("ERROR unavailable"), "{answer}");
        assert!(
            std::time::Instant::now() < deadline,
            "node never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]

async fn cluster_rooms_tell_and_history_are_cluster_wide() {
    use chat_tests::cluster::{redis_available, Redis};
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let url = redis.url();
    let a = Server::start(&["--cluster", &url, "--node-id", "a", "--lease", "2s"]);
    let b = Server::start(&["--cluster", &url, "--node-id", "b", "--lease", "2s"]);
    let mut alice = cluster_user(&a, "alice").await;
    let mut bob = cluster_user(&b, "bob").await;
    alice.expect("JOIN bob").await;
    assert_eq!(alice.request("JOIN #r").await, ["NAMES #r alice"]);
    assert_eq!(bob.request("JOIN #R").await, ["NAMES #r alice bob"]);
    alice.expect("JOIN #r bob").await;
    assert_eq!(alice.request("TOPIC #r t").await, ["TOPIC #r alice t"]);
    bob.expect("TOPIC #r alice t").await;
    assert_eq!(bob.request("SAY #r hi").await, ["SAY #r bob hi"]);
    alice.expect("SAY #r bob hi").await;
    assert_eq!(
        bob.request("TELL ALICE psst").await,
        ["TELL bob alice psst"]
    );
    alice.expect("TELL bob alice psst").await;
    assert_eq!(alice.request("ROOMS").await, ["ROOMS #r 2"]);
    assert_eq!(bob.request("WHO #r").await, ["NAMES #r alice bob"]);
    let said = history(&mut alice, "HISTORY #r", Some("#r")).await;
    assert_eq!(texts(&said), ["hi"]);
    assert_eq!(bob.request("MSG lobby").await, ["MSG bob lobby"]);
    alice.expect("MSG bob lobby").await;
    let said = history(&mut alice, "HISTORY", None).await;
    assert_eq!(texts(&said), ["lobby"]);
    assert_eq!(bob.request("PART #r bye").await, ["LEAVE #r bob bye"]);
    alice.expect("LEAVE #r bob bye").await;
}

#[tokio::test]
async fn a_rooms_history_keeps_what_departed_members_said() {
    let server = Server::start(&[]);
    let mut alice = member(&server, "Alice", &["#r"]).await;
    let mut bob = member(&server, "bob", &["#r"]).await;
    assert_eq!(
        alice.request("SAY #r before parting").await,
        ["JOIN bob", "JOIN #r bob", "SAY #r Alice before parting"]
    );
    assert_eq!(alice.request("PART #r").await, ["LEAVE #r Alice"]);
    let mut carol = member(&server, "carol", &["#r"]).await;
    assert_eq!(carol.request("SAY #r after").await, ["SAY #r carol after"]);
    carol.send("LEAVE").await;
    carol.expect("BYE").await;
    bob.recv_until("LEAVE carol").await;
    let said = history(&mut bob, "HISTORY #r", Some("#r")).await;
    assert_eq!(
        said.iter()
            .map(|(_, f, t)| (f.as_str(), t.as_str()))
            .collect::<Vec<_>>(),
        [("Alice", "before parting"), ("carol", "after")]
    );
}

#[tokio::test]
async fn shutdown_closes_room_members_without_room_leaves() {
    let mut server = Server::start(&[]);
    let mut alice = member(&server, "alice", &["#r", "#s"]).await;
    let mut bob = member(&server, "bob", &["#r", "#s"]).await;
    assert_eq!(
        alice.request("TOPIC #r t").await,
        ["JOIN bob", "JOIN #r bob", "JOIN #s bob", "TOPIC #r alice t"]
    );
    bob.barrier().await;
    server.signal(libc::SIGTERM);
    for (name, client) in [("alice", &mut alice), ("bob", &mut bob)] {
        let mut lines = Vec::new();
        while let Some(line) = client.try_recv().await {
            lines.push(line);
        }
        assert!(
            lines.iter().any(|l| l.starts_with("ERROR shutting-down")),
            "{name}: {lines:?}"
        );
        assert!(
            !lines.iter().any(|l| l.starts_with("LEAVE #")),
            "{name} got a room-level LEAVE: {lines:?}"
        );
    }
    server
        .wait_exit(Duration::from_secs(5))
        .expect("the server exits within 5 s");
}

/// Logs in as `name` from the loopback address `127.0.0.<host>`, so that
/// tests with `--limits-on-loopback` can tell addresses apart.
async fn login_from(server: &Server, host: u8, name: &str) -> (LineReader, OwnedWriteHalf) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(std::net::SocketAddr::from(([127, 0, 0, host], 0)))
        .expect("bind a loopback source address");
    let stream = tokio::time::timeout(chat_tests::TIMEOUT, socket.connect(server.addr()))
        .await
        .expect("connect timed out")
        .expect("connect");
    let (read, mut writer) = stream.into_split();
    let mut reader = LineReader::new(read);
    wire::send(&mut writer, &format!("NAME {name}\n")).await;
    assert_eq!(reader.line().await, format!("WELCOME {name}"));
    assert!(reader.line().await.starts_with("NAMES "));
    (reader, writer)
}

/// Sends `line` and a `PING`; returns what came before the `PONG`.
async fn ask(reader: &mut LineReader, writer: &mut OwnedWriteHalf, line: &str) -> Vec<String> {
    wire::send(writer, &format!("{line}\nPING asked\n")).await;
    reader.until("PONG asked").await
}

/// Whether `lines` hold `wanted`, or a line starting with it.
fn holds(lines: &[String], wanted: &str) -> bool {
    lines.iter().any(|l| l.starts_with(wanted))
}

/// "Budgets" (`PROTOCOL.md`): the users of one address together can be in
/// at most `--max-rooms-per-ip` rooms; a `JOIN` beyond it gets
/// `ERROR too-many-rooms`, another address is not held back, and a `PART`
/// or a user gone frees memberships again.
#[tokio::test]
async fn the_users_of_one_address_share_max_rooms_per_ip() {
    let server = Server::start(&[
        "--limits-on-loopback",
        "--flood-rate",
        "0",
        "--max-rooms-per-ip",
        "3",
    ]);
    let (mut a1, mut a1_out) = login_from(&server, 2, "a1").await;
    let (mut a2, mut a2_out) = login_from(&server, 2, "a2").await;
    let (mut b, mut b_out) = login_from(&server, 3, "b").await;
    let joined = |lines: Vec<String>, room: &str| holds(&lines, &format!("NAMES {room} "));
    let refused = |lines: Vec<String>| holds(&lines, "ERROR too-many-rooms");
    assert!(joined(ask(&mut a1, &mut a1_out, "JOIN #one").await, "#one"));
    assert!(joined(ask(&mut a1, &mut a1_out, "JOIN #two").await, "#two"));
    assert!(joined(
        ask(&mut a2, &mut a2_out, "JOIN #three").await,
        "#three"
    ));
    assert!(
        refused(ask(&mut a2, &mut a2_out, "JOIN #one").await),
        "a fourth membership for 127.0.0.2"
    );
    // Another address is not held back by it.
    for room in ["#one", "#two", "#four"] {
        assert!(joined(
            ask(&mut b, &mut b_out, &format!("JOIN {room}")).await,
            room
        ));
    }
    assert!(refused(ask(&mut b, &mut b_out, "JOIN #five").await));
    // A PART frees one membership.
    assert!(holds(
        &ask(&mut a1, &mut a1_out, "PART #two").await,
        "LEAVE #two a1"
    ));
    assert!(joined(ask(&mut a2, &mut a2_out, "JOIN #six").await, "#six"));
    assert!(refused(ask(&mut a2, &mut a2_out, "JOIN #seven").await));
    // A user gone frees all of its own: a1's #one.
    wire::send(&mut a1_out, "LEAVE\n").await;
    a1.until("BYE").await;
    a2.until("LEAVE a1").await;
    assert!(joined(
        ask(&mut a2, &mut a2_out, "JOIN #seven").await,
        "#seven"
    ));
    assert!(refused(ask(&mut a2, &mut a2_out, "JOIN #eight").await));
}

/// "History memory" (`PROTOCOL.md`, Budgets): all history kept takes at
/// most `--history-memory`; beyond it the oldest messages of the room that
/// holds the most are forgotten first, and the smaller rooms and the lobby
/// keep theirs.
#[tokio::test]
async fn history_memory_forgets_the_oldest_of_the_room_that_holds_the_most() {
    let server = Server::start(&["--history-memory", "64KiB", "--history", "1000"]);
    let mut ann = member(&server, "ann", &["#big", "#small"]).await;
    let padding = "m".repeat(2_990);
    let mut lines = String::from("MSG lobby\n");
    lines.extend((0..3).map(|n| format!("SAY #small small{n}\n")));
    lines.extend((0..60).map(|n| format!("SAY #big {n:03}{padding}\n")));
    ann.send_raw(lines.as_bytes()).await;
    ann.barrier().await;
    let small = history(&mut ann, "HISTORY #small 1000", Some("#small")).await;
    assert_eq!(texts(&small), ["small0", "small1", "small2"]);
    let lobby = history(&mut ann, "HISTORY 1000", None).await;
    assert_eq!(texts(&lobby), ["lobby"]);
    let big = history(&mut ann, "HISTORY #big 1000", Some("#big")).await;
    let kept: usize = big
        .iter()
        .map(|(_, from, text)| from.len() + text.len())
        .sum();
    assert!(kept <= 64 * 1024, "{kept} bytes kept");
    assert!(big.len() >= 10 && big.len() < 60, "{} kept", big.len());
    let numbers: Vec<&str> = big.iter().map(|(_, _, text)| &text[..3]).collect();
    let first = 60 - big.len();
    let newest: Vec<String> = (first..60).map(|n| format!("{n:03}")).collect();
    assert_eq!(numbers, newest, "the newest are kept, in order");
}

/// The budgets' settings come from flags, `CHAT_…` variables and the
/// config file alike, and `--print-config` shows them as the file takes
/// them back.
#[test]
fn the_budgets_are_flags_variables_and_keys() {
    use std::process::Command;
    let file = std::env::temp_dir().join(format!("budgets-{}.toml", std::process::id()));
    std::fs::write(&file, "history-memory = \"512KiB\"\nmax-rooms-per-ip = 7\n").expect("write");
    let printed = Command::new(chat_tests::binary("chat-server"))
        .arg("--config")
        .arg(&file)
        .args(["--flood-rate-per-ip", "3", "--print-config"])
        .env("CHAT_STALL_TIMEOUT", "2m")
        .env("CHAT_FLOOD_BURST_PER_IP", "9")
        .output()
        .expect("run chat-server");
    std::fs::remove_file(&file).ok();
    let stdout = String::from_utf8_lossy(&printed.stdout);
    assert!(printed.status.success(), "{stdout}");
    for line in [
        "history-memory = \"512KiB\"",
        "max-rooms-per-ip = 7",
        "stall-timeout = \"2m\"",
        "flood-burst-per-ip = 9",
        "flood-rate-per-ip = 3",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "{line} missing:\n{stdout}"
        );
    }
}
