//! Version 3 across a cluster (`PROTOCOL.md`, "What survives a restart":
//! in cluster mode all of it lives in the cluster's Redis, shared by every
//! node): an account made on one node is asked for on another, a ban or a
//! kick reaches the node its user is on, and a name is taken back from a
//! connection on another node.

use std::time::Duration;

use chat_tests::cluster::{redis_available, user, Redis};
use chat_tests::{Client, Server, TIMEOUT};

const PASSWORD: &str = "hunter22";

/// Two nodes on one Redis, with carol as operator.
fn two_nodes(redis: &Redis) -> (Server, Server) {
    let node = |id: &str| {
        Server::start(&[
            "--cluster",
            &redis.url(),
            "--node-id",
            id,
            "--lease",
            "2s",
            "--operator",
            "carol",
        ])
    };
    (node("a"), node("b"))
}

/// `NAME <name> <password>` until the node is ready: `WELCOME`, `NAMES`.
async fn login_with_password(server: &Server, name: &str) -> Client {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut client = server.connect().await;
    loop {
        client.send(&format!("NAME {name} {PASSWORD}")).await;
        let answer = client.recv().await;
        if answer == format!("WELCOME {name}") {
            client.expect_prefix("NAMES ").await;
            return client;
        }
        assert!(answer.starts_with("ERROR unavailable"), "{answer}");
        assert!(tokio::time::Instant::now() < deadline, "never logged in");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Registers `name` on `server` and leaves.
async fn register(server: &Server, name: &str) {
    let mut client = user(server, name).await;
    assert_eq!(
        client.request(&format!("REGISTER {PASSWORD}")).await,
        [format!("REGISTERED {name}")]
    );
    client.send("LEAVE").await;
    client.expect("BYE").await;
}

#[tokio::test]
async fn an_account_made_on_one_node_is_asked_for_on_another() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis);
    register(&a, "alice").await;
    let mut probe = b.connect().await;
    probe.send("NAME alice").await;
    probe.expect_error("name-registered").await;
    probe.send("NAME alice wrong-password").await;
    probe.expect_error("bad-password").await;
    probe.send(&format!("NAME alice {PASSWORD}")).await;
    probe.expect("WELCOME alice").await;
}

#[tokio::test]
async fn a_name_is_taken_back_from_another_node() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis);
    register(&a, "alice").await;
    let mut stale = login_with_password(&a, "alice").await;
    let mut fresh = login_with_password(&b, "alice").await;
    stale.expect_error("logged-in-elsewhere").await;
    stale.expect_closed().await;
    fresh.send("MSG mine again").await;
    fresh.recv_until("MSG alice mine again").await;
}

#[tokio::test]
async fn a_ban_on_one_node_closes_and_refuses_a_user_of_another() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis);
    register(&a, "carol").await;
    let mut carol = login_with_password(&a, "carol").await;
    let mut bob = user(&b, "bob").await;
    carol.recv_until("JOIN bob").await;
    assert_eq!(
        carol
            .request("BAN bob 10m spam")
            .await
            .last()
            .map(String::as_str),
        Some("OK BAN bob")
    );
    let banned = bob.expect_prefix("ERROR banned ").await;
    assert!(banned.ends_with(" spam"), "{banned:?}");
    bob.expect_closed().await;
    carol.recv_until("LEAVE bob").await;
    // Refused on either node, at once.
    for node in [&a, &b] {
        let mut again = node.connect().await;
        again.send("NAME bob").await;
        again.expect_prefix("ERROR banned ").await;
    }
    assert_eq!(carol.request("UNBAN bob").await, ["OK UNBAN bob"]);
    user(&b, "bob").await;
}

#[tokio::test]
async fn a_kick_and_a_mute_reach_a_user_on_another_node() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis);
    register(&a, "carol").await;
    let mut carol = login_with_password(&a, "carol").await;
    let mut dave = user(&b, "dave").await;
    carol.recv_until("JOIN dave").await;
    assert_eq!(carol.request("MUTE dave 10m").await, ["OK MUTE dave"]);
    // The mute is read by dave's node within half a second.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        dave.send("MSG can I talk").await;
        let answer = dave.recv().await;
        if answer.starts_with("ERROR muted ") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never muted: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    carol.send("KICK dave bye").await;
    dave.recv_until("ERROR kicked carol bye").await;
    dave.expect_closed().await;
    carol.recv_until("OK KICK dave").await;
    carol.send("KICK nobody").await;
    carol
        .recv_until("ERROR no-such-user nobody is logged in under that name")
        .await;
}
