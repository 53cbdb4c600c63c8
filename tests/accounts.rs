//! Version 3 (`PROTOCOL.md`, "Version 3: accounts, moderation, and what
//! survives a restart"), end to end: registered names and their passwords,
//! operators and what they may do, and what a restart keeps.

use std::path::PathBuf;
use std::time::Duration;

use chat_tests::{Client, Server};

const PASSWORD: &str = "hunter22";

/// A data directory of the test's own, removed when dropped.
struct DataDir(PathBuf);

impl DataDir {
    fn new(name: &str) -> DataDir {
        let dir = std::env::temp_dir().join(format!("chat-data-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        DataDir(dir)
    }

    fn arg(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temp path")
    }

    /// Every byte of every file in it, for looking for what must not be
    /// there.
    fn contents(&self) -> Vec<u8> {
        let mut all = Vec::new();
        for entry in std::fs::read_dir(&self.0).expect("the data dir exists") {
            let path = entry.expect("an entry").path();
            if path.is_file() {
                all.extend(std::fs::read(&path).unwrap_or_default());
            }
        }
        all
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Logs `name` in and registers it with [`PASSWORD`].
async fn registered(server: &Server, name: &str) -> Client {
    let mut client = server.user(name).await;
    assert_eq!(
        client.request(&format!("REGISTER {PASSWORD}")).await,
        [format!("REGISTERED {name}")]
    );
    client
}

/// Logs in with the password: `WELCOME`, `NAMES`.
async fn login_with_password(server: &Server, name: &str) -> Client {
    let mut client = server.connect().await;
    client.send(&format!("NAME {name} {PASSWORD}")).await;
    client.expect(&format!("WELCOME {name}")).await;
    client.expect_prefix("NAMES ").await;
    client
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test]
async fn a_registered_name_logs_in_only_with_its_password() {
    let server = Server::start(&[]);
    let mut alice = registered(&server, "alice").await;
    alice.send("LEAVE").await;
    alice.expect("BYE").await;

    let mut other = server.connect().await;
    for (line, code) in [
        ("NAME alice", "name-registered"),
        ("NAME ALICE", "name-registered"),
        ("NAME alice wrong-password", "bad-password"),
        ("NAME alice short", "bad-password"),
        ("NAME bob some-password", "not-registered"),
    ] {
        other.send(line).await;
        other.expect_error(code).await;
    }
    // Every refusal kept the connection open for another try.
    other.send(&format!("NAME alice {PASSWORD}")).await;
    other.expect("WELCOME alice").await;
}

#[tokio::test]
async fn register_password_and_unregister_answer_as_the_contract_says() {
    let server = Server::start(&[]);
    let mut alice = server.user("alice").await;
    for (line, code) in [
        ("REGISTER short", "weak-password"),
        ("REGISTER has space", "weak-password"),
        ("PASSWORD hunter22 new-password", "not-registered"),
        ("UNREGISTER hunter22", "not-registered"),
    ] {
        alice.send(line).await;
        alice.expect_error(code).await;
    }
    assert_eq!(
        alice.request(&format!("REGISTER {PASSWORD}")).await,
        ["REGISTERED alice"]
    );
    alice.send("REGISTER another-one").await;
    alice.expect_error("already-registered").await;
    alice.send("PASSWORD wrong-one new-password").await;
    alice.expect_error("bad-password").await;
    alice.send(&format!("PASSWORD {PASSWORD} tiny")).await;
    alice.expect_error("weak-password").await;
    assert_eq!(
        alice
            .request(&format!("PASSWORD {PASSWORD} new-password"))
            .await,
        ["REGISTERED alice"]
    );
    alice.send(&format!("UNREGISTER {PASSWORD}")).await;
    alice.expect_error("bad-password").await;
    assert_eq!(
        alice.request("UNREGISTER new-password").await,
        ["UNREGISTERED alice"]
    );
    alice.send("LEAVE").await;
    alice.expect("BYE").await;
    // No longer registered: the name is anyone's again.
    server.user("alice").await;
}

#[tokio::test]
async fn the_right_password_takes_the_name_back_from_a_stale_connection() {
    let server = Server::start(&[]);
    let mut stale = registered(&server, "alice").await;
    let mut witness = server.user("witness").await;
    stale.expect("JOIN witness").await;

    let mut fresh = login_with_password(&server, "alice").await;
    stale.expect_error("logged-in-elsewhere").await;
    stale.expect_closed().await;
    witness.expect("LEAVE alice").await;
    witness.expect("JOIN alice").await;
    // The name is the new connection's: it chats as alice.
    fresh.send("MSG back").await;
    fresh.expect("MSG alice back").await;
    witness.expect("MSG alice back").await;
}

#[tokio::test]
async fn five_wrong_passwords_in_a_minute_lock_the_name_for_a_minute() {
    let server = Server::start(&[]);
    let mut alice = registered(&server, "alice").await;
    let mut guesser = server.connect().await;
    for n in 0..5 {
        guesser.send(&format!("NAME alice guess-{n}-wrong")).await;
        guesser.expect_error("bad-password").await;
    }
    // Right or wrong, from anywhere: too many tries.
    guesser.send("NAME alice guess-5-wrong").await;
    guesser.expect_error("too-many-tries").await;
    let mut owner = server.connect().await;
    owner.send(&format!("NAME alice {PASSWORD}")).await;
    owner.expect_error("too-many-tries").await;
    // The logged-in owner's own PASSWORD is refused the same way.
    alice
        .send(&format!("PASSWORD {PASSWORD} whatever-new"))
        .await;
    alice.expect_error("too-many-tries").await;
}

/// An operator, `carol`, logged in with her password on `server`.
async fn operator(server: &Server) -> Client {
    let mut carol = registered(server, "carol").await;
    carol.send("LEAVE").await;
    carol.expect("BYE").await;
    login_with_password(server, "carol").await
}

#[tokio::test]
async fn an_operator_kicks_and_everyone_else_sees_the_leave() {
    let server = Server::start(&["--operator", "carol", "--operator", "dave"]);
    let mut carol = operator(&server).await;
    let mut bob = server.user("bob").await;
    let mut witness = server.user("witness").await;
    bob.expect("JOIN witness").await;
    carol.recv_until("JOIN witness").await;

    // Who may kick whom comes before whether the target is there.
    bob.send("KICK witness").await;
    bob.expect_error("not-operator").await;
    carol.send("KICK carol").await;
    carol.expect_error("not-operator").await;
    carol.send("KICK dave").await;
    carol.expect_error("not-operator").await;
    carol.send("KICK nobody").await;
    carol.expect_error("no-such-user").await;
    carol.send("KICK b!d").await;
    carol.expect_error("bad-name").await;

    assert_eq!(
        carol.request("KICK bob be nice").await,
        ["LEAVE bob", "OK KICK bob"]
    );
    bob.expect("ERROR kicked carol be nice").await;
    bob.expect_closed().await;
    witness.expect("LEAVE bob").await;
    // A kick is not a ban: bob may come back.
    server.user("bob").await;
}

#[tokio::test]
async fn a_ban_closes_the_user_and_refuses_the_name_until_unbanned() {
    let server = Server::start(&["--operator", "carol"]);
    let mut carol = operator(&server).await;
    let mut bob = server.user("bob").await;
    carol.recv_until("JOIN bob").await;

    for (line, code) in [
        ("BAN bob", "bad-duration"),
        ("BAN bob 0s", "bad-duration"),
        ("BAN bob 366d", "bad-duration"),
        ("BAN bob 10x", "bad-duration"),
    ] {
        carol.send(line).await;
        carol.expect_error(code).await;
    }
    bob.send("BAN carol 10m").await;
    bob.expect_error("not-operator").await;

    let answer = carol.request("BAN bob 10m spam").await;
    assert_eq!(answer, ["LEAVE bob", "OK BAN bob"]);
    let banned = bob.expect_prefix("ERROR banned ").await;
    assert!(banned.ends_with(" spam"), "{banned:?}");
    bob.expect_closed().await;

    let mut again = server.connect().await;
    again.send("NAME bob").await;
    let refused = again.expect_prefix("ERROR banned ").await;
    assert_eq!(refused, banned, "the same ban, until the same time");
    again.expect_closed().await;
    // A name need not be logged in to be banned.
    assert_eq!(carol.request("BAN ghost 1h").await, ["OK BAN ghost"]);

    let bans = carol.request("BANS").await;
    let fields: Vec<&str> = bans[0].split(' ').collect();
    assert_eq!((fields[0], fields[1], fields[3]), ("BANS", "bob", "ghost"));
    assert_eq!(fields.len(), 5, "{bans:?}");

    assert_eq!(carol.request("UNBAN bob").await, ["OK UNBAN bob"]);
    assert_eq!(carol.request("UNBAN never").await, ["OK UNBAN never"]);
    // Kept connected: its LEAVE must not come between plain's frames.
    let _bob = server.user("bob").await;
    let mut plain = server.user("plain").await;
    plain.send("BANS").await;
    plain.expect_error("not-operator").await;
}

#[tokio::test]
async fn a_ban_refuses_the_address_too_when_loopback_is_not_spared() {
    let server = Server::start(&[
        "--operator",
        "carol",
        "--limits-on-loopback",
        "--flood-rate",
        "0",
    ]);
    let mut carol = operator(&server).await;
    let mut bob = server.user("bob").await;
    carol.recv_until("JOIN bob").await;
    carol.request("BAN bob 10m").await;
    bob.expect_prefix("ERROR banned ").await;
    // Every connection from bob's address is refused at once: carol's
    // address too, here, since both are 127.0.0.1.
    let mut next = server.connect().await;
    next.expect_prefix("ERROR banned ").await;
    next.expect_closed().await;
}

#[tokio::test]
async fn a_muted_user_may_do_everything_but_send() {
    let server = Server::start(&["--operator", "carol"]);
    let mut carol = operator(&server).await;
    let mut bob = server.user("bob").await;
    carol.recv_until("JOIN bob").await;
    carol.send("MUTE nobody 1m").await;
    carol.expect_error("no-such-user").await;
    carol.send("UNMUTE nobody").await;
    carol.expect_error("no-such-user").await;
    assert_eq!(carol.request("MUTE bob 5m").await, ["OK MUTE bob"]);

    bob.request("JOIN #r").await;
    for line in ["MSG hi", "SAY #r hi", "TELL carol hi", "TOPIC #r new topic"] {
        bob.send(line).await;
        let muted = bob.expect_prefix("ERROR muted ").await;
        assert_eq!(muted.split(' ').count(), 3, "until when: {muted:?}");
    }
    // Everything else works: asking the topic, WHO, HISTORY.
    assert_eq!(bob.request("TOPIC #r").await, ["TOPIC #r"]);
    assert_eq!(bob.request("WHO").await, ["NAMES bob carol"]);
    assert_eq!(carol.request("UNMUTE bob").await, ["OK UNMUTE bob"]);
    bob.send("MSG free").await;
    bob.expect("MSG bob free").await;
}

#[tokio::test]
async fn accounts_bans_mutes_and_lobby_history_survive_a_restart() {
    let dir = DataDir::new("restart");
    let args = ["--data-dir", dir.arg(), "--operator", "carol"];
    let mut server = Server::start(&args);
    {
        let mut carol = operator(&server).await;
        // Kept until the end: a LEAVE of hers could reach dave first.
        let _alice = registered(&server, "alice").await;
        let mut dave = server.user("dave").await;
        dave.send("MSG remember me").await;
        dave.expect("MSG dave remember me").await;
        let banned = carol.request("BAN bob 1h").await;
        assert_eq!(banned.last().map(String::as_str), Some("OK BAN bob"));
        let muted = carol.request("MUTE dave 1h").await;
        assert_eq!(muted, ["OK MUTE dave"]);
    }
    server.signal(libc::SIGTERM);
    server
        .wait_exit(Duration::from_secs(10))
        .expect("the server stops");

    let server = Server::start(&args);
    let mut probe = server.connect().await;
    probe.send("NAME alice").await;
    probe.expect_error("name-registered").await;
    probe.send("NAME bob").await;
    probe.expect_prefix("ERROR banned ").await;
    let mut dave = server.user("dave").await;
    dave.send("MSG still muted?").await;
    dave.expect_prefix("ERROR muted ").await;
    let history = dave.request("HISTORY").await;
    assert_eq!(history[0], "HISTORY 1", "{history:?}");
    assert!(history[1].ends_with(" dave remember me"), "{history:?}");
    // Nothing kept the password itself, only its hash.
    assert!(!contains(&dir.contents(), PASSWORD));
}

#[tokio::test]
async fn a_registration_survives_kill_9_right_after_its_answer() {
    let dir = DataDir::new("kill9");
    let mut server = Server::start(&["--data-dir", dir.arg()]);
    registered(&server, "alice").await;
    server.kill();
    let server = Server::start(&["--data-dir", dir.arg()]);
    let mut probe = server.connect().await;
    probe.send("NAME alice").await;
    probe.expect_error("name-registered").await;
}

/// The contract: a kill -9 loses at most the last second of lobby history.
/// Nothing but the lines themselves reaches the store here, so only its
/// own batching can have committed them.
#[tokio::test]
async fn lobby_lines_a_second_old_survive_kill_9() {
    let dir = DataDir::new("kill9-lobby");
    let mut server = Server::start(&["--data-dir", dir.arg()]);
    let mut dave = server.user("dave").await;
    for n in 0..3 {
        dave.send(&format!("MSG line {n}")).await;
        dave.expect(&format!("MSG dave line {n}")).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.kill();
    let server = Server::start(&["--data-dir", dir.arg()]);
    let mut erin = server.user("erin").await;
    let history = erin.request("HISTORY").await;
    assert_eq!(history[0], "HISTORY 3", "{history:?}");
    for (n, line) in history[1..].iter().enumerate() {
        assert!(line.ends_with(&format!(" dave line {n}")), "{history:?}");
    }
}

#[tokio::test]
async fn an_ephemeral_server_keeps_nothing() {
    let mut server = Server::start(&["--ephemeral"]);
    registered(&server, "alice").await;
    server.kill();
    let server = Server::start(&["--ephemeral"]);
    server.user("alice").await;
}

#[tokio::test]
async fn a_second_server_on_the_same_data_dir_stops_with_a_clear_message() {
    let dir = DataDir::new("twice");
    let _first = Server::start(&["--data-dir", dir.arg()]);
    let output = std::process::Command::new(chat_tests::binary("chat-server"))
        .args(["--addr", "127.0.0.1:0", "--data-dir", dir.arg()])
        .output()
        .expect("run chat-server");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("in use by another chat-server"), "{stderr}");
}
