//! The server against the contract, over real TCP.

use chat_tests::Server;

#[tokio::test]
async fn seed_session_two_users_greet_and_one_leaves() {
    let server = Server::start(&[]);
    let (mut alice, names) = server.login("alice").await;
    assert_eq!(names, ["alice"]);
    let (mut bob, names) = server.login("bob").await;
    assert_eq!(names, ["alice", "bob"]);
    alice.expect("JOIN bob").await;
    alice.send("MSG hi bob").await;
    alice.expect("MSG alice hi bob").await;
    bob.expect("MSG alice hi bob").await;
    bob.send("MSG hello alice").await;
    bob.expect("MSG bob hello alice").await;
    alice.expect("MSG bob hello alice").await;
    alice.send("LEAVE see you").await;
    alice.expect("BYE").await;
    alice.expect_closed().await;
    bob.expect("LEAVE alice see you").await;
    let (_carol, names) = server.login("carol").await;
    assert_eq!(names, ["bob", "carol"]);
    bob.expect("JOIN carol").await;
}
