//! Cluster mode end to end: real `redis-server`, several real `chat-server`
//! nodes, plain TCP clients. The contract's promises must hold across
//! nodes, through a node's death, a Redis restart and a node cut off.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chat_tests::cluster::{login, redis_available, user, Proxy, Redis};
use chat_tests::{Client, Server, TIMEOUT};

const LEASE: Duration = Duration::from_secs(2);

fn node(url: &str, id: &str) -> Server {
    Server::start(&["--cluster", url, "--node-id", id, "--lease", "2s"])
}

fn nodes(redis: &Redis, ids: &[&str]) -> Vec<Server> {
    ids.iter().map(|id| node(&redis.url(), id)).collect()
}

/// Two nodes, `b` reaching Redis through a proxy that can cut it off,
/// with alice logged in on `a` and bob on `b`.
struct Pair {
    _redis: Redis,
    proxy: Proxy,
    _a: Server,
    b: Server,
    alice: Client,
    bob: Client,
}

impl Pair {
    async fn start() -> Pair {
        let redis = Redis::start();
        let proxy = Proxy::start(redis.addr()).await;
        let a = node(&redis.url(), "a");
        let b = node(&proxy.url(), "b");
        let mut alice = user(&a, "alice").await;
        let bob = user(&b, "bob").await;
        alice.expect("JOIN bob").await;
        Pair {
            _redis: redis,
            proxy,
            _a: a,
            b,
            alice,
            bob,
        }
    }
}

#[tokio::test]
async fn nodes_share_one_room_names_and_presence() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let servers = nodes(&redis, &["a", "b", "c"]);
    let (mut alice, names) = login(&servers[0], "alice").await;
    assert_eq!(names, ["alice"]);
    let (mut bob, names) = login(&servers[1], "bob").await;
    assert_eq!(names, ["alice", "bob"]);
    let (mut carol, names) = login(&servers[2], "Carol").await;
    assert_eq!(names, ["alice", "bob", "Carol"]);
    alice.expect("JOIN bob").await;
    alice.expect("JOIN Carol").await;
    bob.expect("JOIN Carol").await;

    bob.send("MSG hi  all ").await;
    for client in [&mut alice, &mut bob, &mut carol] {
        client.expect("MSG bob hi  all ").await;
    }

    // Names are unique across nodes, in any case.
    let mut dave = servers[2].connect().await;
    dave.send("NAME ALICE").await;
    dave.expect_error("name-taken").await;
    let mut eve = servers[0].connect().await;
    eve.send("NAME carol").await;
    eve.expect_error("name-taken").await;

    carol.send("WHO").await;
    carol.expect("NAMES alice bob Carol").await;

    // A LEAVE on one node frees the name on another at once.
    alice.send("LEAVE later").await;
    alice.expect("BYE").await;
    bob.expect("LEAVE alice later").await;
    carol.expect("LEAVE alice later").await;
    assert_eq!(dave.login("alice").await, ["alice", "bob", "Carol"]);
    bob.expect("JOIN alice").await;
    carol.expect("JOIN alice").await;
    for client in [&mut bob, &mut carol, &mut dave] {
        client.expect_quiet().await;
    }
}

#[tokio::test]
async fn every_user_on_every_node_sees_one_order() {
    if !redis_available() {
        return;
    }
    const EACH: usize = 200;
    let redis = Redis::start();
    let servers = nodes(&redis, &["a", "b", "c"]);
    let mut watchers = Vec::new();
    for (i, server) in servers.iter().enumerate() {
        watchers.push(user(server, &format!("w{i}")).await);
    }
    let mut senders = Vec::new();
    for (i, server) in servers.iter().enumerate() {
        senders.push(user(server, &format!("s{i}")).await);
    }
    // Let every JOIN reach every watcher before the race starts.
    for (i, watcher) in watchers.iter_mut().enumerate() {
        // Watcher i sees the JOINs of the watchers after it and of the senders.
        let mut joins = 0;
        while joins < 5 - i {
            if watcher.recv().await.starts_with("JOIN ") {
                joins += 1;
            }
        }
    }
    let total = EACH * senders.len();
    let mut views = Vec::new();
    let later_joins = senders.len() - 1;
    for (i, mut sender) in senders.into_iter().enumerate() {
        views.push(tokio::spawn(async move {
            let burst: String = (0..EACH).map(|n| format!("MSG {n}\n")).collect();
            // Besides the messages, a sender sees the JOINs of those after it.
            let lines = sender
                .send_and_collect(burst.as_bytes(), total + later_joins - i)
                .await;
            lines
                .into_iter()
                .filter(|l| l.starts_with("MSG "))
                .take(total)
                .collect::<Vec<_>>()
        }));
    }
    for mut watcher in watchers {
        views.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while seen.len() < total {
                let line = watcher.recv().await;
                if line.starts_with("MSG ") {
                    seen.push(line);
                }
            }
            seen
        }));
    }
    let mut first: Option<Vec<String>> = None;
    for view in views {
        let seen = view.await.expect("a client failed");
        assert_eq!(seen.len(), total);
        match &first {
            None => {
                let mut next: HashMap<&str, usize> = HashMap::new();
                for line in &seen {
                    let mut parts = line.split(' ');
                    let (from, n) = (parts.nth(1).unwrap(), parts.next().unwrap());
                    let expected = next.entry(from).or_default();
                    assert_eq!(n, expected.to_string(), "{from} out of order");
                    *expected += 1;
                }
                first = Some(seen);
            }
            Some(order) => assert!(*order == seen, "two users saw different orders"),
        }
    }
}

#[tokio::test]
async fn a_dead_nodes_users_are_announced_once_within_the_lease() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let mut servers = nodes(&redis, &["a", "b", "c"]);
    let mut alice = user(&servers[0], "alice").await;
    let mut carol = user(&servers[2], "carol").await;
    let _bob = user(&servers[1], "bob").await;
    let _dave = user(&servers[1], "dave").await;
    for client in [&mut alice, &mut carol] {
        let _ = client.recv_until("JOIN dave").await;
    }
    let killed = Instant::now();
    servers[1].kill();
    for client in [&mut alice, &mut carol] {
        let mut gone = vec![client.recv().await, client.recv().await];
        gone.sort();
        assert_eq!(gone, ["LEAVE bob", "LEAVE dave"]);
    }
    let took = killed.elapsed();
    assert!(took < LEASE + Duration::from_secs(1), "took {took:?}");
    // Exactly once: nothing more arrives, and the names are free again.
    tokio::time::sleep(LEASE / 2).await;
    alice.expect_quiet().await;
    carol.expect_quiet().await;
    user(&servers[0], "bob").await;
    user(&servers[2], "dave").await;
}

#[tokio::test]
async fn a_stopping_node_frees_its_names_at_once() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let mut servers = nodes(&redis, &["a", "b"]);
    let mut alice = user(&servers[0], "alice").await;
    let mut bob = user(&servers[1], "bob").await;
    alice.expect("JOIN bob").await;
    let stopped = Instant::now();
    servers[1].signal(libc::SIGTERM);
    bob.expect_error("shutting-down").await;
    alice.expect("LEAVE bob").await;
    assert!(stopped.elapsed() < LEASE, "waited for the lease instead");
    assert!(servers[1]
        .wait_exit(Duration::from_secs(5))
        .is_some_and(|s| s.success()));
    user(&servers[0], "bob").await;
}

#[tokio::test]
async fn a_redis_restart_costs_nobody_their_name_or_a_confirmed_message() {
    if !redis_available() {
        return;
    }
    let mut redis = Redis::start();
    let servers = nodes(&redis, &["a", "b"]);
    let mut alice = user(&servers[0], "alice").await;
    let mut bob = user(&servers[1], "bob").await;
    alice.expect("JOIN bob").await;

    redis.kill();
    // Until the bus is back, requests are refused, never silently lost.
    let mut confirmed = Vec::new();
    let mut n = 0;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        n += 1;
        alice.send(&format!("MSG during {n}")).await;
        let answer = alice.recv().await;
        if answer.starts_with("ERROR unavailable") {
            break;
        }
        assert_eq!(answer, format!("MSG alice during {n}"));
        confirmed.push(answer);
        assert!(Instant::now() < deadline, "the outage was never noticed");
    }
    alice.send("WHO").await;
    alice.expect_error("unavailable").await;
    let mut newcomer = servers[1].connect().await;
    newcomer.send("NAME carol").await;
    newcomer.expect_error("unavailable").await;

    redis.restart();
    // Chat resumes without restarting any node.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        n += 1;
        alice.send(&format!("MSG after {n}")).await;
        let answer = alice.recv().await;
        if answer == format!("MSG alice after {n}") {
            confirmed.push(answer);
            break;
        }
        assert!(answer.starts_with("ERROR unavailable"), "{answer}");
        assert!(Instant::now() < deadline, "the bus never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Bob got every message alice was not refused, in order.
    let mut got = Vec::new();
    while got.len() < confirmed.len() {
        let line = bob.recv().await;
        if line.starts_with("MSG alice") {
            got.push(line);
        }
    }
    assert_eq!(got, confirmed);
    // The users who stayed hold their names again: a node that starts now
    // learns the room from Redis alone, and logins resume once they do.
    let late = node(&redis.url(), "c");
    let (_carol, names) = login(&late, "carol").await;
    assert_eq!(names, ["alice", "bob", "carol"]);
    newcomer.send("NAME Alice").await;
    newcomer.expect_error("name-taken").await;
    alice.expect("JOIN carol").await;
    bob.expect("JOIN carol").await;
}

#[tokio::test]
async fn a_node_cut_off_briefly_catches_up_in_order() {
    if !redis_available() {
        return;
    }
    let mut pair = Pair::start().await;
    let mut carol = user(&pair.b, "carol").await;
    pair.alice.expect("JOIN carol").await;
    pair.bob.expect("JOIN carol").await;

    pair.proxy.cut();
    // Bob's node notices: its requests are refused meanwhile.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        pair.bob.send("MSG ping").await;
        let answer = pair.bob.recv().await;
        if answer.starts_with("ERROR unavailable") {
            break;
        }
        assert_eq!(answer, "MSG bob ping");
        assert!(Instant::now() < deadline, "the cut was never noticed");
    }
    let said: Vec<String> = (0..5).map(|n| format!("MSG alice meanwhile {n}")).collect();
    for n in 0..5 {
        pair.alice.send(&format!("MSG meanwhile {n}")).await;
    }
    let mut echoed = Vec::new();
    while echoed.len() < said.len() {
        let line = pair.alice.recv().await;
        if line.starts_with("MSG alice meanwhile") {
            echoed.push(line);
        }
    }
    assert_eq!(echoed, said);
    // Leaving still works during the outage; the others hear of it later.
    carol.send("LEAVE off").await;
    carol.expect("BYE").await;
    carol.expect_closed().await;
    pair.proxy.restore();
    // Within the lease: bob is still in, and gets what was said, in order.
    let mut got = Vec::new();
    while got.len() < said.len() {
        let line = pair.bob.recv().await;
        if line.starts_with("MSG alice") {
            got.push(line);
        } else {
            assert!(
                line.starts_with("MSG bob") || line.starts_with("ERROR unavailable"),
                "{line}"
            );
        }
    }
    assert_eq!(got, said);
    pair.bob.expect("LEAVE carol off").await;
    let before = pair.alice.recv_until("LEAVE carol off").await;
    assert!(before.iter().all(|l| l.starts_with("MSG ")), "{before:?}");
    let seen = pair.alice.barrier().await;
    assert!(seen.is_empty(), "bob was never announced gone: {seen:?}");
}

#[tokio::test]
async fn a_node_cut_off_past_the_lease_closes_its_users() {
    if !redis_available() {
        return;
    }
    let mut pair = Pair::start().await;

    let cut = Instant::now();
    pair.proxy.cut();
    // The others announce bob gone within the lease (plus the reaping tick).
    pair.alice.expect("LEAVE bob").await;
    assert!(cut.elapsed() < LEASE + Duration::from_secs(1));
    // Bob's node closes his connection, since the room has let him go.
    pair.bob
        .expect("ERROR unavailable lost contact with the rest of the cluster; closing")
        .await;
    pair.bob.expect_closed().await;
    pair.proxy.restore();
    // The name is bob's to take again, on either node.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut again = pair.b.connect().await;
        again.send("NAME bob").await;
        let answer = again.recv().await;
        if answer == "WELCOME bob" {
            break;
        }
        assert!(answer.starts_with("ERROR unavailable"), "{answer}");
        assert!(Instant::now() < deadline, "node b never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pair.alice.expect("JOIN bob").await;
}

/// A node says `listening on` only once it can serve: a login the moment
/// the last of three nodes prints its address succeeds on every node,
/// without one `ERROR unavailable`.
#[tokio::test]
async fn a_node_listens_only_once_it_can_log_users_in() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let servers = nodes(&redis, &["a", "b", "c"]);
    let mut clients = Vec::new();
    for (server, name) in servers.iter().zip(["ann", "ben", "cat"]) {
        let mut client = server.connect().await;
        client.send(&format!("NAME {name}")).await;
        clients.push((client, name));
    }
    for (client, name) in &mut clients {
        client.expect(&format!("WELCOME {name}")).await;
    }
}

/// A node stopped with SIGTERM frees its users' names itself, in one step,
/// after its connections are drained: the other nodes announce each of them
/// at once, not after the lease, even when its clients hang up the moment
/// they hear `shutting-down` (so no close grace keeps the stopping node
/// alive), and the node leaves nothing of itself behind in Redis.
#[tokio::test]
async fn a_stopping_node_departs_even_when_its_clients_hang_up_at_once() {
    if !redis_available() {
        return;
    }
    let lease = Duration::from_secs(10);
    let redis = Redis::start();
    let url = redis.url();
    let start = |id| Server::start(&["--cluster", &url, "--node-id", id, "--lease", "10s"]);
    let (a, mut b) = (start("a"), start("b"));
    let mut alice = user(&a, "alice").await;
    let mut leaving = Vec::new();
    for name in ["bob", "dave", "erin"] {
        leaving.push(user(&b, name).await);
        alice.expect(&format!("JOIN {name}")).await;
    }
    let stopped = Instant::now();
    b.signal(libc::SIGTERM);
    for mut client in leaving {
        // Past the JOINs of those who logged in after it.
        let mut line = client.recv().await;
        while line.starts_with("JOIN ") {
            line = client.recv().await;
        }
        assert!(line.starts_with("ERROR shutting-down"), "{line:?}");
        drop(client);
    }
    let mut gone = vec![alice.recv().await, alice.recv().await, alice.recv().await];
    gone.sort();
    assert_eq!(gone, ["LEAVE bob", "LEAVE dave", "LEAVE erin"]);
    let took = stopped.elapsed();
    assert!(took < lease / 4, "took {took:?}: waited for the lease");
    let status = b
        .wait_exit(Duration::from_secs(5))
        .expect("b exits within 5 s");
    assert!(status.success(), "exit status {status}");
    // Announced once, and the names are free at once.
    alice.expect_quiet().await;
    for name in ["bob", "dave", "erin"] {
        a.login(name).await;
    }
    // It was b's own departure, not the lease or a survivor's reaping: b
    // took its heartbeat and its membership with it (docs/CLUSTER.md).
    assert_eq!(redis_integer(&redis, "EXISTS chat:node:b"), 0);
    assert_eq!(redis_integer(&redis, "SISMEMBER chat:nodes b"), 0);
    assert_eq!(redis_integer(&redis, "SISMEMBER chat:nodes a"), 1);
}

/// Asks Redis one inline command whose answer is an integer.
fn redis_integer(redis: &Redis, command: &str) -> i64 {
    let reply = redis.command(command);
    reply
        .strip_prefix(':')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{command}: not an integer reply: {reply:?}"))
}

/// A client that pipelines: thousands of `MSG`s, some bad frames among
/// them, and a `PING` at the end, all in one write. Every node's users get
/// every message once, in the order sent; the sender's errors come in the
/// place of their frames among its replies, and its `PONG` after its own
/// last message.
#[tokio::test]
async fn a_pipelining_sender_keeps_its_order_and_its_replies_in_place() {
    if !redis_available() {
        return;
    }
    const COUNT: usize = 3_000;
    let redis = Redis::start();
    let servers = nodes(&redis, &["a", "b"]);
    let mut alice = user(&servers[0], "alice").await;
    let mut bob = user(&servers[1], "bob").await;
    alice.expect("JOIN bob").await;
    let mut burst = String::new();
    for n in 0..COUNT {
        burst.push_str(&format!("MSG {n}\n"));
        if n % 1000 == 500 {
            burst.push_str(&format!("BOGUS {n}\nTELL nobody {n}\n"));
        }
    }
    burst.push_str("PING done\n");
    alice.send_raw(burst.as_bytes()).await;
    // The sender: its errors in their places among its frames' answers
    // (an error answers its frame once the messages before it are in the
    // stream), its own messages in order, and PONG after the last one.
    let lines = alice.recv_until("PONG done").await;
    let said: Vec<&String> = lines.iter().filter(|l| l.starts_with("MSG ")).collect();
    let expected: Vec<String> = (0..COUNT).map(|n| format!("MSG alice {n}")).collect();
    assert_eq!(said, expected.iter().collect::<Vec<_>>());
    let errors: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("ERROR "))
        .map(|e| e.split(' ').next().unwrap_or(""))
        .collect();
    assert_eq!(
        errors,
        ["unknown-command", "no-such-user"].repeat(COUNT / 1000)
    );
    assert_eq!(lines.len(), COUNT + errors.len(), "{:?}", &lines[..5]);
    // A user on the other node: the same messages, the same order.
    for n in 0..COUNT {
        bob.expect(&format!("MSG alice {n}")).await;
    }
}

/// A `--cluster` URL's password is never printed: not by `--print-config`,
/// not in the error for a URL that does not parse, not in the warning of
/// a node that cannot reach its Redis. None of it needs a Redis.
#[test]
fn a_cluster_password_is_never_printed() {
    use std::io::{BufRead as _, Read as _};
    use std::process::{Command, Stdio};
    let run = |args: &[&str]| {
        Command::new(chat_tests::binary("chat-server"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run chat-server")
    };
    let printed = run(&[
        "--cluster",
        "redis://chat:s3cret@10.0.0.5:6379",
        "--print-config",
    ]);
    let stdout = String::from_utf8_lossy(&printed.stdout);
    assert!(printed.status.success(), "{stdout}");
    assert!(
        stdout.contains("cluster = \"redis://chat:***@10.0.0.5:6379\""),
        "{stdout}"
    );
    assert!(stdout.contains("# The password in cluster is shown as ***"));
    assert!(!stdout.contains("s3cret"), "{stdout}");

    let bad = run(&["--cluster", "redis://:s3cret@10.0.0.5:port"]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("chat-server: --cluster redis://:***@10.0.0.5:port: "),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");

    // Nothing listens on this port: the node gives up waiting after one
    // lease, warns, and serves.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("redis://:s3cret@127.0.0.1:{port}");
    let mut child = Command::new(chat_tests::binary("chat-server"))
        .args(["--addr", "127.0.0.1:0", "--lease", "1s", "--cluster", &url])
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chat-server");
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("read stdout");
    assert!(first.starts_with("listening on "), "{first:?}");
    let _ = child.kill();
    let _ = child.wait();
    let mut log = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut log)
        .expect("read stderr");
    assert!(log.contains("cannot reach the cluster bus"), "{log}");
    assert!(
        log.contains(&format!("redis://:***@127.0.0.1:{port}")),
        "{log}"
    );
    assert!(!log.contains("s3cret"), "{log}");
}

/// Without `redis-server` a cluster test fails, saying how to install it,
/// unless skipping is asked for (`CHAT_TEST_SKIP_CLUSTER=1`); then it says
/// SKIPPED where `cargo test` shows it. Under CI it fails even then. Run
/// on one of this suite's own tests, with a PATH where no redis-server is.
#[test]
fn a_cluster_test_without_redis_fails_unless_skipping_is_asked_for() {
    use chat_tests::cluster::SKIP_CLUSTER;
    let run = |env: &[(&str, &str)]| {
        let output = std::process::Command::new(std::env::current_exe().expect("this test"))
            .args(["--exact", "nodes_share_one_room_names_and_presence"])
            .env("PATH", "/nonexistent")
            .env_remove("CI")
            .env_remove(SKIP_CLUSTER)
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run the test");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), all)
    };
    let (passed, output) = run(&[]);
    assert!(!passed, "a missing redis-server passed unseen:\n{output}");
    assert!(
        output.contains("redis-server is not installed: install it"),
        "{output}"
    );
    assert!(output.contains("CHAT_TEST_SKIP_CLUSTER=1"), "{output}");

    let (passed, output) = run(&[(SKIP_CLUSTER, "1")]);
    assert!(passed, "{output}");
    assert!(
        output.contains("SKIPPED nodes_share_one_room_names_and_presence: redis-server"),
        "{output}"
    );

    let (passed, output) = run(&[(SKIP_CLUSTER, "1"), ("CI", "true")]);
    assert!(!passed, "CI skipped a cluster test:\n{output}");
    assert!(output.contains("CI must run the cluster tests"), "{output}");
}
