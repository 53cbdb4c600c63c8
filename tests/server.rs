//! The server against the contract (`PROTOCOL.md`), over real TCP: every
//! frame, every error code, the delivery rules, timeouts, limits, shutdown.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chat_tests::{Client, Server, TIMEOUT};

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
    bob.expect_quiet().await;
}

#[tokio::test]
async fn names_lists_everyone_sorted_by_lower_cased_name() {
    let server = Server::start(&[]);
    let mut clients = Vec::new();
    for name in ["Zed", "alice", "a_b", "Bob", "a.b", "a-b", "9lives"] {
        clients.push(server.user(name).await);
    }
    let (mut last, names) = server.login("carol").await;
    assert_eq!(
        names,
        ["9lives", "a-b", "a.b", "a_b", "alice", "Bob", "carol", "Zed"]
    );
    last.send("WHO").await;
    last.expect("NAMES 9lives a-b a.b a_b alice Bob carol Zed")
        .await;
}

#[tokio::test]
async fn newcomer_sees_only_what_follows_its_welcome_and_not_its_own_join() {
    let server = Server::start(&[]);
    let mut alice = server.user("alice").await;
    alice.send("MSG before bob").await;
    alice.expect("MSG alice before bob").await;
    let mut bob = server.user("bob").await;
    assert_eq!(bob.barrier().await, Vec::<String>::new());
    alice.expect("JOIN bob").await;
    alice.send("MSG after bob").await;
    bob.expect("MSG alice after bob").await;
}

#[tokio::test]
async fn name_taken_in_any_case_and_retry_on_the_same_connection() {
    let server = Server::start(&[]);
    let mut alice = server.user("Alice").await;
    let mut other = server.connect().await;
    for attempt in ["alice", "ALICE", "Alice"] {
        other.send(&format!("NAME {attempt}")).await;
        other.expect_error("name-taken").await;
    }
    let names = other.login("alicia").await;
    assert_eq!(names, ["Alice", "alicia"]);
    alice.expect("JOIN alicia").await;
}

#[tokio::test]
async fn name_rules_are_enforced_and_the_connection_stays_open() {
    let server = Server::start(&[]);
    let mut client = server.connect().await;
    let too_long = format!("NAME {}", "a".repeat(33));
    for bad in [
        "NAME", "NAME ", "NAME _x", "NAME -x", "NAME a!", "NAME é", &too_long,
    ] {
        client.send(bad).await;
        client.expect_error("bad-name").await;
    }
    // Since version 3 a second word is a password, here for a name that
    // is not registered.
    client.send("NAME a b").await;
    client.expect_error("not-registered").await;
    let longest = "b".repeat(32);
    assert_eq!(client.login(&longest).await, [longest]);
}

#[tokio::test]
async fn frames_other_than_name_and_ping_need_a_login() {
    let server = Server::start(&[]);
    let mut client = server.connect().await;
    for frame in ["MSG hello", "WHO", "LEAVE", "LEAVE bye", "MSG"] {
        client.send(frame).await;
        client.expect_error("not-logged-in").await;
    }
    client.send("PING early").await;
    client.expect("PONG early").await;
    client.send("PING").await;
    client.expect("PONG").await;
    client.login("late").await;
}

#[tokio::test]
async fn second_name_is_refused() {
    let server = Server::start(&[]);
    let mut alice = server.user("alice").await;
    alice.send("NAME bob").await;
    alice.expect_error("already-logged-in").await;
    alice.send("NAME alice").await;
    alice.expect_error("already-logged-in").await;
    alice.send("NAME !!").await;
    alice.expect_error("already-logged-in").await;
    alice.send("WHO").await;
    alice.expect("NAMES alice").await;
}

#[tokio::test]
async fn unknown_commands_are_refused_before_and_after_login() {
    let server = Server::start(&[]);
    let mut client = server.connect().await;
    for frame in ["HELLO", "", "NAMES", "JOINED #x", "MSGhi"] {
        client.send(frame).await;
        client.expect_error("unknown-command").await;
    }
    client.login("alice").await;
    client.send("SHOUT hi").await;
    client.expect_error("unknown-command").await;
    client.expect_quiet().await;
}

#[tokio::test]
async fn verbs_are_case_insensitive_and_crlf_is_accepted() {
    let server = Server::start(&[]);
    let mut client = server.connect().await;
    client.send_raw(b"name alice\r\n").await;
    client.expect("WELCOME alice").await;
    client.expect("NAMES alice").await;
    client.send_raw(b"Msg hi there\r\nwho\r\nping x\r\n").await;
    client.expect("MSG alice hi there").await;
    client.expect("NAMES alice").await;
    client.expect("PONG x").await;
}

#[tokio::test]
async fn message_text_is_kept_exactly() {
    let server = Server::start(&[]);
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    alice.expect("JOIN bob").await;
    for text in [
        "  leading",
        "inner   spaces",
        "trailing  ",
        "tab\there",
        "ünïcödé ✓ 漢字 😀",
    ] {
        alice.send(&format!("MSG {text}")).await;
        let expected = format!("MSG alice {text}");
        alice.expect(&expected).await;
        bob.expect(&expected).await;
    }
}

#[tokio::test]
async fn empty_messages_are_refused_and_not_broadcast() {
    let server = Server::start(&[]);
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    alice.expect("JOIN bob").await;
    for frame in ["MSG", "MSG ", "MSG    "] {
        alice.send(frame).await;
        alice.expect_error("empty-message").await;
    }
    bob.expect_quiet().await;
}

#[tokio::test]
async fn control_characters_are_bad_text_and_nothing_is_broadcast() {
    let server = Server::start(&[]);
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    alice.expect("JOIN bob").await;
    let frames: [&[u8]; 7] = [
        b"MSG \x1b[2Jgotcha\n",
        b"MSG bell\x07\n",
        b"MSG back\x08space\n",
        b"MSG nul\x00\n",
        b"MSG del\x7f\n",
        "MSG c1\u{9b}31m\n".as_bytes(),
        "MSG \u{202e}txt.exe\n".as_bytes(),
    ];
    for frame in frames {
        alice.send_raw(frame).await;
        alice.expect_error("bad-text").await;
    }
    alice.send_raw(b"LEAVE bye\x1b]0;title\x07\n").await;
    alice.expect_error("bad-text").await;
    // The detail says what the character is: a bidirectional control is
    // not called a control character.
    alice.send("MSG invoice\u{202e}fdp.exe").await;
    alice
        .expect(
            "ERROR bad-text bidirectional-override character U+202E \
             (RIGHT-TO-LEFT OVERRIDE) is not allowed",
        )
        .await;
    alice.send("MSG bell\x07").await;
    alice
        .expect("ERROR bad-text control character U+0007 is not allowed")
        .await;
    let mut eve = server.connect().await;
    eve.send_raw(b"NAME ev\x1be\n").await;
    eve.expect_error("bad-text").await;
    bob.expect_quiet().await;
    alice.expect_quiet().await;
}

#[tokio::test]
async fn over_long_lines_are_refused_and_the_rest_of_the_line_discarded() {
    let server = Server::start(&["--max-line", "64"]);
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    alice.expect("JOIN bob").await;
    let exactly = format!("MSG {}", "x".repeat(60));
    alice.send(&exactly).await;
    alice.expect(&format!("MSG alice {}", "x".repeat(60))).await;
    bob.expect(&format!("MSG alice {}", "x".repeat(60))).await;
    // Over the limit by one byte, and far over it in several writes.
    alice.send(&format!("MSG {}", "y".repeat(61))).await;
    alice.expect_error("line-too-long").await;
    alice
        .send_raw(format!("MSG {}", "z".repeat(10_000)).as_bytes())
        .await;
    alice.send_raw("z".repeat(100_000).as_bytes()).await;
    alice.send_raw(b"zzz\nMSG after\n").await;
    alice.expect_error("line-too-long").await;
    alice.expect("MSG alice after").await;
    bob.expect("MSG alice after").await;
}

#[tokio::test]
async fn default_limit_is_4096_bytes_without_the_line_ending() {
    let server = Server::start(&[]);
    let mut alice = server.user("alice").await;
    let text = "t".repeat(4096 - 4);
    alice.send_raw(format!("MSG {text}\r\n").as_bytes()).await;
    alice.expect(&format!("MSG alice {text}")).await;
    alice.send(&format!("MSG {text}t")).await;
    alice.expect_error("line-too-long").await;
}

#[tokio::test]
async fn invalid_utf8_is_refused_and_the_connection_goes_on() {
    let server = Server::start(&[]);
    let mut client = server.connect().await;
    client.send_raw(b"NAME \xff\xfe\n").await;
    client.expect_error("invalid-utf8").await;
    client.login("alice").await;
    client.send_raw(b"MSG caf\xe9\nMSG ok\n").await;
    client.expect_error("invalid-utf8").await;
    client.expect("MSG alice ok").await;
}

#[tokio::test]
async fn leave_without_text_and_with_text() {
    let server = Server::start(&[]);
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let mut carol = server.user("carol").await;
    bob.send("LEAVE").await;
    bob.expect("JOIN carol").await;
    bob.expect("BYE").await;
    bob.expect_closed().await;
    carol.send("LEAVE  off  to bed ").await;
    carol.expect("LEAVE bob").await;
    carol.expect("BYE").await;
    carol.expect_closed().await;
    alice.expect("JOIN bob").await;
    alice.expect("JOIN carol").await;
    alice.expect("LEAVE bob").await;
    alice.expect("LEAVE carol  off  to bed ").await;
    alice.expect_quiet().await;
    // The names are free again at once.
    server.user("bob").await;
    server.user("CAROL").await;
}

#[tokio::test]
async fn frames_after_leave_are_ignored() {
    let server = Server::start(&[]);
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    alice.expect("JOIN bob").await;
    bob.send_raw(b"LEAVE\nMSG ghost\n").await;
    bob.expect("BYE").await;
    bob.expect_closed().await;
    alice.expect("LEAVE bob").await;
    alice.expect_quiet().await;
}

#[tokio::test]
async fn abrupt_disconnects_are_announced_exactly_once() {
    let server = Server::start(&[]);
    let mut alice = server.user("alice").await;
    // A clean close mid-session, a reset, and a close in the middle of a line.
    let bob = server.user("bob").await;
    alice.expect("JOIN bob").await;
    drop(bob);
    alice.expect("LEAVE bob").await;
    let carol = server.user("carol").await;
    alice.expect("JOIN carol").await;
    carol.reset();
    alice.expect("LEAVE carol").await;
    let mut dave = server.user("dave").await;
    alice.expect("JOIN dave").await;
    dave.send_raw(b"MSG half a li").await;
    dave.shutdown_write().await;
    // The cut-off last line still counts, then the user is gone.
    alice.expect("MSG dave half a li").await;
    alice.expect("LEAVE dave").await;
    drop(dave);
    alice.expect_quiet().await;
    for name in ["bob", "carol", "dave"] {
        server.user(name).await;
    }
}

#[tokio::test]
async fn ping_answers_after_earlier_frames_are_handled() {
    let server = Server::start(&[]);
    let mut alice = server.user("alice").await;
    alice.send_raw(b"MSG one\nMSG two\nWHO\nPING t\n").await;
    alice.expect("MSG alice one").await;
    alice.expect("MSG alice two").await;
    alice.expect("NAMES alice").await;
    alice.expect("PONG t").await;
    alice.send("PING  spaced token ").await;
    alice.expect("PONG  spaced token ").await;
}

#[tokio::test]
async fn all_users_see_broadcasts_in_one_order() {
    const SENDERS: usize = 4;
    const EACH: usize = 300;
    let server = Server::start(&[]);
    let mut watcher = server.user("watcher").await;
    let mut senders = Vec::new();
    for i in 0..SENDERS {
        senders.push(server.user(&format!("s{i}")).await);
    }
    let mut sends = Vec::new();
    for (i, mut sender) in senders.into_iter().enumerate() {
        sends.push(tokio::spawn(async move {
            let mut burst = String::new();
            for n in 0..EACH {
                burst.push_str(&format!("MSG {n}\n"));
            }
            sender.send_raw(burst.as_bytes()).await;
            // Read everything this sender receives: its own view of the order.
            let mut seen = Vec::new();
            while seen.len() < SENDERS * EACH {
                let line = sender.recv().await;
                if line.starts_with("MSG ") {
                    seen.push(line);
                }
            }
            (i, seen)
        }));
    }
    let mut watched = Vec::new();
    while watched.len() < SENDERS * EACH {
        let line = watcher.recv().await;
        if line.starts_with("MSG ") {
            watched.push(line);
        }
    }
    // Each sender's own messages arrive in the order sent...
    let mut next: HashMap<String, usize> = HashMap::new();
    for line in &watched {
        let mut parts = line.split(' ');
        let (from, n) = (parts.nth(1).unwrap(), parts.next().unwrap());
        let expected = next.entry(from.to_owned()).or_default();
        assert_eq!(n, expected.to_string(), "{from} out of order");
        *expected += 1;
    }
    // ...and every user saw the very same interleaving.
    for send in sends {
        let (i, seen) = send.await.unwrap();
        assert!(seen == watched, "sender s{i} saw another order");
    }
}

#[tokio::test]
async fn login_timeout_closes_connections_that_never_log_in() {
    let server = Server::start(&["--login-timeout", "300ms"]);
    let mut idle = server.connect().await;
    let mut pinging = server.connect().await;
    let mut failing = server.connect().await;
    let start = Instant::now();
    pinging.send("PING").await;
    pinging.expect("PONG").await;
    failing.send("NAME !").await;
    failing.expect_error("bad-name").await;
    for client in [&mut idle, &mut pinging, &mut failing] {
        client.expect_error("login-timeout").await;
        client.expect_closed().await;
    }
    assert!(start.elapsed() >= Duration::from_millis(250));
    // A login in time is not affected.
    server.user("quick").await.expect_quiet().await;
}

#[tokio::test]
async fn idle_users_are_disconnected_and_announced() {
    let server = Server::start(&["--idle-timeout", "600ms"]);
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    alice.expect("JOIN bob").await;
    // Bob keeps pinging (activity); alice says nothing and is dropped.
    let deadline = Instant::now() + TIMEOUT;
    let mut seen = Vec::new();
    while !seen.contains(&"LEAVE alice".to_owned()) {
        assert!(Instant::now() < deadline, "alice was never dropped");
        tokio::time::sleep(Duration::from_millis(100)).await;
        seen.extend(bob.barrier().await);
    }
    assert_eq!(seen, ["LEAVE alice"]);
    alice.expect_error("idle-timeout").await;
    alice.expect_closed().await;
    server.user("alice").await;
}

#[tokio::test]
async fn server_full_refuses_extra_connections_until_one_leaves() {
    let server = Server::start(&["--max-clients", "2"]);
    let mut alice = server.user("alice").await;
    let _waiting = server.connect().await;
    let mut extra = server.connect().await;
    extra.expect_error("server-full").await;
    extra.expect_closed().await;
    alice.send("LEAVE").await;
    alice.expect("BYE").await;
    alice.expect_closed().await;
    drop(alice);
    // The freed slot is given to the next connection.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut next = server.connect().await;
        next.send("PING").await;
        match next.recv().await.as_str() {
            "PONG" => break,
            refused => assert!(refused.starts_with("ERROR server-full")),
        }
        assert!(Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sigterm_tells_everyone_and_exits_cleanly() {
    shutdown_on(libc::SIGTERM).await;
}

#[tokio::test]
async fn sigint_tells_everyone_and_exits_cleanly() {
    shutdown_on(libc::SIGINT).await;
}

async fn shutdown_on(signal: i32) {
    let mut server = Server::start(&[]);
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let mut anonymous = server.connect().await;
    anonymous.expect_quiet().await;
    alice.expect("JOIN bob").await;
    // A reader that never reads does not hold the shutdown up.
    let mut stuck = Client::connect_small_buffer(server.addr()).await;
    stuck.login("stuck").await;
    alice.expect("JOIN stuck").await;
    bob.expect("JOIN stuck").await;
    let start = Instant::now();
    server.signal(signal);
    for client in [&mut alice, &mut bob, &mut anonymous] {
        client.expect_error("shutting-down").await;
        client.expect_closed().await;
    }
    let status = server
        .wait_exit(Duration::from_secs(5))
        .expect("the server exits within 5 s");
    assert!(status.success(), "exit status {status}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

/// One client stops reading while two others exchange 50 000 messages: they
/// finish and lose nothing; the slow one later gets `DROPPED <n>` and then
/// frames in order again, and what it got plus what it was told it missed
/// adds up to everything that was broadcast.
#[tokio::test]
async fn a_slow_reader_holds_no_one_back_and_is_told_what_it_missed() {
    const EACH: usize = 25_000;
    let server = Server::start(&[]);
    let mut slow = Client::connect_small_buffer(server.addr()).await;
    slow.login("slow").await;
    let mut alice = server.user("alice").await;
    let bob = server.user("bob").await;
    alice.expect("JOIN bob").await;
    let padding = "p".repeat(200);
    let talkers = [("alice", alice), ("bob", bob)].map(|(name, mut client)| {
        let padding = padding.clone();
        tokio::spawn(async move {
            // Each talker keeps at most WINDOW of its own messages in flight
            // (it waits for its echo), so both stay well within the backlog:
            // they are clients that keep up, whatever the machine's speed.
            const WINDOW: usize = 250;
            let mut next = HashMap::from([("alice", 0usize), ("bob", 0usize)]);
            for window in 0..EACH / WINDOW {
                let burst: String = (window * WINDOW..(window + 1) * WINDOW)
                    .map(|n| format!("MSG {n} {padding}\n"))
                    .collect();
                client.send_raw(burst.as_bytes()).await;
                loop {
                    let line = client.recv().await;
                    let mut parts = line.splitn(4, ' ');
                    assert_eq!(parts.next(), Some("MSG"), "{name} got {line:.40}");
                    let from = parts.next().unwrap();
                    let n: usize = parts.next().unwrap().parse().unwrap();
                    let expected = next.get_mut(from).unwrap();
                    assert_eq!(n, *expected, "{name}: {from} out of order or lost");
                    *expected += 1;
                    if from == name && n + 1 == (window + 1) * WINDOW {
                        break;
                    }
                }
            }
            // The other talker's last messages.
            let other = if name == "alice" { "bob" } else { "alice" };
            while next[other] < EACH {
                let line = client.recv().await;
                let mut parts = line.splitn(4, ' ');
                assert_eq!(parts.nth(1), Some(other), "{name} got {line:.40}");
                let n: usize = parts.next().unwrap().parse().unwrap();
                assert_eq!(n, next[other], "{name}: {other} out of order or lost");
                *next.get_mut(other).unwrap() += 1;
            }
            client
        })
    });
    let started = Instant::now();
    let mut talkers_back = Vec::new();
    for talker in talkers {
        talkers_back.push(talker.await.expect("talkers keep up and lose nothing"));
    }
    let took = started.elapsed();
    assert!(took < TIMEOUT, "the talkers were held back: {took:?}");
    let mut alice = talkers_back.swap_remove(0);
    alice.send("MSG done").await;
    // The slow reader wakes up: frames in order, a DROPPED, in order again.
    let mut received = 0usize;
    let mut dropped = 0usize;
    let mut next = HashMap::from([("alice", 0usize), ("bob", 0usize)]);
    let mut joins = 0;
    loop {
        let line = slow.recv().await;
        if let Some(n) = line.strip_prefix("DROPPED ") {
            dropped += n.parse::<usize>().unwrap();
            continue;
        }
        received += 1;
        if line == "MSG alice done" {
            break;
        }
        if line.starts_with("JOIN ") {
            joins += 1;
            continue;
        }
        let mut parts = line.splitn(4, ' ');
        let from = parts.nth(1).unwrap();
        let n: usize = parts.next().unwrap().parse().unwrap();
        let expected = next.get_mut(from).unwrap();
        assert!(n >= *expected, "{from} {n} arrived after {expected}");
        *expected = n + 1;
    }
    assert!(
        dropped > 0,
        "the slow reader was never told it missed frames"
    );
    assert_eq!(joins, 2, "the JOINs came before the flood");
    assert_eq!(
        received + dropped,
        2 + 2 * EACH + 1,
        "frames unaccounted for"
    );
    slow.expect_quiet().await;
}

/// A `chat-server` started by hand, for the tests that need its standard
/// streams or environment arranged otherwise than [`Server`] does; killed
/// when dropped.
struct Spawned {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl Spawned {
    /// Starts the server on a free port, lets `arrange` set up its streams
    /// and environment, and reads its output up to `listening on
    /// <address>`: from `output` if given, else from its piped stdout.
    fn start(
        args: &[&str],
        arrange: impl FnOnce(&mut std::process::Command),
        output: Option<&mut dyn std::io::BufRead>,
    ) -> Spawned {
        let mut command = std::process::Command::new(chat_tests::binary("chat-server"));
        command
            .args(["--addr", "127.0.0.1:0", "--ephemeral"])
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null());
        arrange(&mut command);
        let mut child = command.spawn().expect("spawn chat-server");
        // The command holds copies of the pipe ends given to the child.
        drop(command);
        let mut piped;
        let output = match output {
            Some(output) => output,
            None => {
                piped = std::io::BufReader::new(child.stdout.take().expect("piped stdout"));
                &mut piped as &mut dyn std::io::BufRead
            }
        };
        let mut spawned = Spawned {
            child,
            addr: ([0, 0, 0, 0], 0).into(),
        };
        let mut line = String::new();
        loop {
            line.clear();
            let n = output
                .read_line(&mut line)
                .expect("read the server's output");
            assert!(n > 0, "the server ended before listening");
            if let Some(addr) = line.trim().strip_prefix("listening on ") {
                spawned.addr = addr.parse().expect("an address");
                return spawned;
            }
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `chat-server 2>&1 | tee log`, then `tee` goes away: every log line now
/// fails with EPIPE. The server must go on serving (a lost log line is the
/// only cost) and still stop on SIGTERM.
#[tokio::test]
async fn a_server_whose_output_pipe_is_gone_keeps_serving_and_stops_on_sigterm() {
    let (output, pipe) = std::io::pipe().expect("a pipe");
    let mut output = std::io::BufReader::new(output);
    let mut server = Spawned::start(
        &[],
        |command| {
            let copy = pipe.try_clone().expect("clone the pipe");
            command.stdout(copy).stderr(pipe);
        },
        Some(&mut output),
    );
    // The reader goes, as `tee` does at Ctrl-C.
    drop(output);
    let mut alice = Client::connect(server.addr).await;
    alice.login("alice").await;
    let mut bob = Client::connect(server.addr).await;
    assert_eq!(bob.login("bob").await, ["alice", "bob"]);
    alice.expect("JOIN bob").await;
    alice.send("MSG still here").await;
    for client in [&mut alice, &mut bob] {
        client.expect("MSG alice still here").await;
    }
    bob.send("LEAVE").await;
    bob.expect("BYE").await;
    alice.expect("LEAVE bob").await;
    // SAFETY: kill(2) on our own child's pid has no memory effects.
    assert_eq!(unsafe { libc::kill(server.pid(), libc::SIGTERM) }, 0);
    alice.expect_error("shutting-down").await;
    alice.expect_closed().await;
    let status = server
        .wait_exit(Duration::from_secs(5))
        .expect("the server exits within 5 s");
    assert!(status.success(), "exit status {status}");
}

/// A hub that panics (here by a test hook that only debug builds have)
/// must not leave a server that accepts connections it cannot serve: the
/// process ends, with a failure status and a message saying why.
#[tokio::test]
async fn a_panic_in_the_hub_ends_the_process_with_a_failure() {
    if !cfg!(debug_assertions) {
        eprintln!("SKIPPED: the hub panic hook exists only in debug builds");
        return;
    }
    let mut server = Spawned::start(
        &[],
        |command| {
            command
                .env("CHAT_TEST_PANIC_HUB", "1")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
        },
        None,
    );
    let mut alice = Client::connect(server.addr).await;
    alice.send("NAME alice").await;
    // Whatever alice is told, it is `shutting-down`, and the connection
    // closes: it does not stay open on a server that cannot log anyone in.
    while let Some(line) = alice.try_recv().await {
        assert!(line.starts_with("ERROR shutting-down"), "{line:?}");
    }
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("the server exits");
    assert!(!status.success(), "exit status {status}");
    assert!(
        status.code().is_some(),
        "killed instead of exiting: {status}"
    );
    let mut stderr = String::new();
    std::io::Read::read_to_string(
        server.child.stderr.as_mut().expect("piped stderr"),
        &mut stderr,
    )
    .expect("read stderr");
    assert!(
        stderr.contains("the hub task panicked: injected by CHAT_TEST_PANIC_HUB"),
        "{stderr}"
    );
}

/// A bad `--config` file stops the server before it listens, with one
/// line a person can act on: the file and line, the key, what it wants
/// with an example, and what it got; not serde's "expected u32" or clap's
/// "0 is not in 1..=4294967295".
#[test]
fn a_bad_config_file_says_which_key_and_what_it_wants() {
    let dir = std::env::temp_dir().join(format!("chat-tests-{}-config", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let cases = [
        (
            "flood-rate = 2.5\n",
            ":1: flood-rate: expected a whole number of frames a second (0 turns flood control \
             off), like `flood-rate = 5`, not `2.5`",
        ),
        (
            "addr = \"127.0.0.1:0\"\nmax-clients = 0\n",
            ":2: max-clients: expected a whole number of connections, at least 1, like \
             `max-clients = 10000`, not `0`",
        ),
        (
            "# limits\nlogin-timeout = \"soon\"\n",
            ":2: login-timeout: expected a duration longer than zero, as a string with a unit or \
             a whole number of seconds, like `login-timeout = \"30s\"`, not `\"soon\"`",
        ),
        (
            "max_clients = 5\n",
            ":1: unknown key `max_clients`; did you mean `max-clients`?",
        ),
    ];
    for (n, (text, wanted)) in cases.into_iter().enumerate() {
        let path = dir.join(format!("bad-{n}.toml"));
        std::fs::write(&path, text).expect("write the config file");
        let output = std::process::Command::new(chat_tests::binary("chat-server"))
            .arg("--config")
            .arg(&path)
            .args(["--addr", "127.0.0.1:0"])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run chat-server");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{text:?}: {stderr}");
        assert!(output.stdout.is_empty(), "it started: {text:?}");
        let expected = format!("chat-server: {}{wanted}", path.display());
        assert!(stderr.starts_with(&expected), "{text:?}:\n{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The config file must be a regular file of at most 1 MiB: a FIFO, a
/// device, a directory or a bigger file stops the server at start with a
/// message that names it and says why, at once: without waiting for a
/// FIFO's writer, and without reading `/dev/zero` until memory runs out.
#[test]
fn a_config_file_that_is_not_a_small_regular_file_stops_the_server_at_once() {
    let dir = std::env::temp_dir().join(format!("chat-tests-{}-config-kind", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let fifo = dir.join("fifo.toml");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
    let big = dir.join("big.toml");
    // 2 MiB of comments: valid TOML, only too big.
    let line = format!("# {}\n", "x".repeat(1021));
    std::fs::write(&big, line.repeat(2048)).expect("write the big file");
    let limit = dir.join("limit.toml");
    let mut text = "max-clients = 7\n".to_owned();
    text.push_str(&"#".repeat((1 << 20) - text.len() - 1));
    text.push('\n');
    std::fs::write(&limit, &text).expect("write a file of exactly 1 MiB");
    let cases = [
        (fifo.clone(), "is a FIFO"),
        ("/dev/zero".into(), "is a device"),
        (dir.clone(), "is a directory"),
        (big.clone(), "is larger than 1 MiB"),
    ];
    let server = chat_tests::binary("chat-server");
    for (path, why) in cases {
        let started = Instant::now();
        let mut child = std::process::Command::new(&server)
            .arg("--config")
            .arg(&path)
            .args(["--addr", "127.0.0.1:0", "--ephemeral"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run chat-server");
        while child.try_wait().expect("try_wait").is_none() {
            if started.elapsed() > TIMEOUT {
                let _ = child.kill();
                panic!("{}: the server neither started nor stopped", path.display());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let output = child.wait_with_output().expect("output");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{}: {stderr}",
            path.display()
        );
        assert!(output.stdout.is_empty(), "it started: {}", path.display());
        let expected = format!("chat-server: the config file {} {why}", path.display());
        assert!(stderr.starts_with(&expected), "{why}:\n{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    }
    // Exactly 1 MiB is still fine.
    let output = std::process::Command::new(chat_tests::binary("chat-server"))
        .arg("--config")
        .arg(&limit)
        .arg("--print-config")
        .output()
        .expect("run chat-server");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("max-clients = 7"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}
