//! `chat-client` in piped mode, end to end: real client processes against
//! the real server, driven through their stdin and read from their stdout a
//! line at a time. Each step waits for the line that proves the previous one
//! happened, so the conversations are deterministic without sleeps.

#[path = "support/tls.rs"]
mod support;

use std::net::TcpListener as StdListener;
use std::process::{ExitStatus, Stdio};

use chat_tests::{binary, Server, TIMEOUT};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpListener;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use support::{Pair, Running, Scratch};

/// A `chat-client` whose stdin and stdout are pipes held by the test.
struct Piped {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Piped {
    fn spawn(addr: impl ToString, args: &[&str]) -> Piped {
        Piped::spawn_with(addr, args, &[])
    }

    /// Like [`Piped::spawn`], with these environment variables set.
    fn spawn_with(addr: impl ToString, args: &[&str], env: &[(&str, &str)]) -> Piped {
        let mut child = Command::new(binary("chat-client"))
            .arg("--addr")
            .arg(addr.to_string())
            .args(args)
            .env_remove("CHAT_NAME")
            .env_remove("CHAT_ADDR")
            .env_remove("CHAT_PASSWORD")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn chat-client");
        let stdout = child.stdout.take().expect("piped stdout");
        Piped {
            stdin: child.stdin.take(),
            stdout: BufReader::new(stdout).lines(),
            child,
        }
    }

    fn named(server: &Server, name: &str) -> Piped {
        Piped::spawn(server.addr(), &["--name", name])
    }

    /// Writes one line to the client's stdin.
    async fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write to the client's stdin");
    }

    /// Asserts the next line the client prints.
    async fn expect(&mut self, line: &str) {
        let got = tokio::time::timeout(TIMEOUT, self.stdout.next_line())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {line:?}"))
            .expect("read the client's stdout");
        assert_eq!(got.as_deref(), Some(line));
    }

    /// Closes stdin: the end of the script.
    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for the client to exit; returns how, with the rest of its
    /// stdout and all of its stderr.
    async fn finish(mut self) -> (ExitStatus, Vec<String>, String) {
        self.stdin = None;
        let mut rest = Vec::new();
        let mut stderr = String::new();
        let mut err = self.child.stderr.take().expect("piped stderr");
        let status = tokio::time::timeout(TIMEOUT, async {
            while let Some(line) = self.stdout.next_line().await.expect("read stdout") {
                rest.push(line);
            }
            err.read_to_string(&mut stderr).await.expect("read stderr");
            self.child.wait().await.expect("wait for the client")
        })
        .await
        .expect("the client did not exit in time");
        (status, rest, stderr)
    }

    /// Like [`Piped::finish`], but the script's stdin stays open: the client
    /// has to notice the server going away by itself.
    async fn finish_with_stdin_open(mut self) -> (ExitStatus, Vec<String>, String) {
        let stdin = self.stdin.take();
        let finished = self.finish().await;
        drop(stdin);
        finished
    }
}

/// The seed's session: two people log in, talk, and leave, and each sees
/// the other come and go.
#[tokio::test]
async fn two_piped_clients_converse() {
    let server = Server::start(&[]);
    let mut alice = Piped::named(&server, "alice");
    alice.expect("* logged in as alice").await;
    alice.expect("* in the lobby: alice").await;

    let mut bob = Piped::named(&server, "bob");
    bob.expect("* logged in as bob").await;
    bob.expect("* in the lobby: alice, bob").await;
    alice.expect("* bob joined").await;

    alice.say("hi bob").await;
    alice.expect("alice: hi bob").await;
    bob.expect("alice: hi bob").await;

    bob.say("hi alice, bye").await;
    bob.expect("bob: hi alice, bye").await;
    alice.expect("bob: hi alice, bye").await;

    bob.close_stdin();
    bob.expect("* you left the chat").await;
    let (status, rest, stderr) = bob.finish().await;
    assert_eq!(
        (status.code(), rest, stderr.as_str()),
        (Some(0), vec![], "")
    );
    alice.expect("* bob left").await;

    alice.close_stdin();
    alice.expect("* you left the chat").await;
    let (status, rest, stderr) = alice.finish().await;
    assert_eq!(
        (status.code(), rest, stderr.as_str()),
        (Some(0), vec![], "")
    );
}

/// Texts go out exactly as typed, blank lines are not sent, a `\r\n` line
/// ending is one line ending, and the end of stdin is a `LEAVE`.
#[tokio::test]
async fn stdin_lines_become_messages_exactly() {
    let server = Server::start(&[]);
    let mut observer = server.user("observer").await;
    let mut alice = Piped::named(&server, "alice");
    alice.say("  two  spaces  ").await;
    alice.say("").await;
    alice.say("   ").await;
    alice.say("crlf\r").await;
    alice.say("/not a command").await;
    alice.close_stdin();

    observer.expect("JOIN alice").await;
    observer.expect("MSG alice   two  spaces  ").await;
    observer.expect("MSG alice crlf").await;
    observer.expect("MSG alice /not a command").await;
    observer.expect("LEAVE alice").await;

    let (status, out, stderr) = alice.finish().await;
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(
        out,
        [
            "* logged in as alice",
            "* in the lobby: alice, observer",
            "alice:   two  spaces  ",
            "alice: crlf",
            "alice: /not a command",
            "* you left the chat",
        ]
    );
}

/// What others do is rendered for people: parting texts, refusals.
#[tokio::test]
async fn others_are_rendered_for_people() {
    let server = Server::start(&[]);
    let mut alice = Piped::named(&server, "alice");
    alice.expect("* logged in as alice").await;
    alice.expect("* in the lobby: alice").await;

    let mut carol = server.user("carol").await;
    alice.expect("* carol joined").await;
    carol.send("MSG  spaced\ttext ").await;
    alice.expect("carol:  spaced\ttext ").await;
    carol.send("LEAVE see you").await;
    carol.expect_prefix("MSG carol").await;
    carol.expect("BYE").await;
    alice.expect("* carol left (see you)").await;

    // A line the server refuses is reported where the room's lines are.
    alice.say("bell\x07").await;
    alice
        .expect("! bad-text: control character U+0007 is not allowed")
        .await;

    let (status, rest, _) = alice.finish().await;
    assert_eq!(
        (status.code(), rest),
        (Some(0), vec!["* you left the chat".to_owned()])
    );
}

/// `--raw` prints the frames exactly as the server sent them.
#[tokio::test]
async fn raw_prints_frames_as_received() {
    let server = Server::start(&[]);
    let mut alice = Piped::spawn(server.addr(), &["--name", "alice", "--raw"]);
    alice.expect("WELCOME alice").await;
    alice.expect("NAMES alice").await;
    let mut bob = server.user("bob").await;
    alice.expect("JOIN bob").await;
    bob.send("MSG  hi ").await;
    alice.expect("MSG bob  hi ").await;
    alice.close_stdin();
    alice.expect("BYE").await;
    let (status, rest, stderr) = alice.finish().await;
    assert_eq!(
        (status.code(), rest, stderr.as_str()),
        (Some(0), vec![], "")
    );
}

/// A taken name (compared without case) is a login failure: exit code 2,
/// the reason on stderr, nothing on stdout.
#[tokio::test]
async fn taken_name_exits_2() {
    let server = Server::start(&[]);
    let _alice = server.user("alice").await;
    let client = Piped::spawn(server.addr(), &["--name", "ALICE"]);
    let (status, out, stderr) = client.finish().await;
    assert_eq!(status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(out, Vec::<String>::new());
    assert_eq!(
        stderr,
        "chat-client: cannot log in: the name ALICE is taken\n"
    );
}

/// A name against the rules is refused before it reaches the wire, where
/// a line break in it would have made a second frame.
#[tokio::test]
async fn invalid_name_exits_2() {
    let server = Server::start(&[]);
    let mut observer = server.user("observer").await;
    let client = Piped::spawn(server.addr(), &["--name", "eve\nMSG pwned"]);
    let (status, _, stderr) = client.finish().await;
    assert_eq!(status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("cannot be a name"), "stderr: {stderr}");
    observer.expect_quiet().await;
}

/// No server: exit code 1 with a plain message, no panic.
#[tokio::test]
async fn no_server_exits_1() {
    let addr = {
        let listener = StdListener::bind("127.0.0.1:0").expect("bind a free port");
        listener.local_addr().expect("its address")
    };
    let client = Piped::spawn(addr, &["--name", "alice"]);
    let (status, out, stderr) = client.finish().await;
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(out, Vec::<String>::new());
    assert!(
        stderr.starts_with(&format!("chat-client: cannot connect to {addr}: ")),
        "stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}

/// Something that accepts connections but never answers is not taken for a
/// chat server that is slow: after the login timeout (5 s by default) the
/// client says so and exits 1, although stdin is still open.
#[tokio::test]
async fn silent_listener_is_no_chat_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let client = Piped::spawn(addr, &["--name", "alice"]);
    let (stream, _) = tokio::time::timeout(TIMEOUT, listener.accept())
        .await
        .expect("the client connects")
        .expect("accept");
    let (status, out, stderr) = client.finish_with_stdin_open().await;
    drop(stream);
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(out, Vec::<String>::new());
    assert_eq!(
        stderr,
        format!("chat-client: no chat server at {addr} (no answer to NAME within 5s)\n")
    );
}

/// Something that answers with lines that are not frames (an SSH server's
/// banner, say) is not a chat server either: said at once, exit code 1.
#[tokio::test]
async fn listener_answering_garbage_is_no_chat_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let client = Piped::spawn(addr, &["--name", "alice", "--login-timeout", "1m"]);
    let (mut stream, _) = tokio::time::timeout(TIMEOUT, listener.accept())
        .await
        .expect("the client connects")
        .expect("accept");
    stream
        .write_all(b"SSH-2.0-OpenSSH_9.2p1\r\n")
        .await
        .expect("write");
    let (status, out, stderr) = client.finish_with_stdin_open().await;
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(out, Vec::<String>::new());
    assert_eq!(
        stderr,
        format!(
            "chat-client: no chat server at {addr} \
             (it sent \"SSH-2.0-OpenSSH_9.2p1\" instead of WELCOME)\n"
        )
    );
}

/// A server with a TLS listener beside its plaintext one, trusting a
/// certificate made on the spot; the certificate is `cert.pem` in `scratch`.
fn tls_server(scratch: &Scratch) -> Running {
    let (cert, key) = Pair::generate().write(&scratch.0);
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    Running::start(&["--tls-cert", cert, "--tls-key", key])
}

/// `--tls` at the plaintext port (the default address's, 8000): the
/// handshake fails on an answer that is not TLS, and the client says where
/// the TLS port is by default, instead of only rustls's words.
#[tokio::test]
async fn tls_at_the_plaintext_port_points_to_the_tls_port() {
    let scratch = Scratch::new("client-tls-at-plaintext");
    let server = tls_server(&scratch);
    let ca = scratch.path("cert.pem");
    let ca = ca.to_str().unwrap();
    let client = Piped::spawn(server.addr, &["--name", "alice", "--tls", "--ca", ca]);
    let (status, out, stderr) = client.finish_with_stdin_open().await;
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(out, Vec::<String>::new());
    let addr = server.addr;
    assert!(
        stderr.starts_with(&format!(
            "chat-client: TLS handshake with {addr} failed: it does not answer in TLS ("
        )),
        "stderr: {stderr}"
    );
    assert!(
        stderr.ends_with(
            "; this looks like a plaintext port; the server's TLS port is 8443 \
             by default (--addr 127.0.0.1:8443)\n"
        ),
        "stderr: {stderr}"
    );
}

/// A plaintext client at the TLS port: what comes back is a TLS record,
/// not a line, and the client says to add `--tls` instead of showing the
/// record's bytes as if a service had spoken.
#[tokio::test]
async fn plaintext_at_the_tls_port_says_to_add_tls() {
    let scratch = Scratch::new("client-plaintext-at-tls");
    let server = tls_server(&scratch);
    let tls_addr = server.tls_addr();
    let client = Piped::spawn(tls_addr, &["--name", "alice"]);
    let (status, out, stderr) = client.finish_with_stdin_open().await;
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(out, Vec::<String>::new());
    assert_eq!(
        stderr,
        format!(
            "chat-client: {tls_addr} answered in TLS: this looks like a TLS port; \
             add --tls (and --ca <pem> if its certificate is not from a public CA)\n"
        )
    );
    // With --tls it is a chat server after all.
    let ca = scratch.path("cert.pem");
    let mut client = Piped::spawn(tls_addr, &["--name", "alice", "--ca", ca.to_str().unwrap()]);
    client.expect("* logged in as alice").await;
    let (status, rest, stderr) = client.finish().await;
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(rest, ["* in the lobby: alice", "* you left the chat"]);
}

/// Errors with codes newer than the client during login: one that closes
/// the connection (`too-many-connections`) is its reason, another is a
/// refusal; both are said with the code or detail as sent, exit code 2.
#[tokio::test]
async fn newer_error_codes_during_login() {
    for (answer, said) in [
        (
            &b"ERROR too-many-connections 16 connections from 127.0.0.1 already\n"[..],
            "connection closed by server (16 connections from 127.0.0.1 already)",
        ),
        (
            b"ERROR no-logins-today come back tomorrow\n",
            "no-logins-today: come back tomorrow",
        ),
    ] {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let client = Piped::spawn(addr, &["--name", "alice"]);
        let (stream, _) = tokio::time::timeout(TIMEOUT, listener.accept())
            .await
            .expect("the client connects")
            .expect("accept");
        let (read, mut write) = stream.into_split();
        // Read the client's NAME first, as the server does before it closes:
        // a socket closed with unread input is reset, and a reset may discard
        // the ERROR before the client reads it.
        let mut from_client = BufReader::new(read).lines();
        assert_eq!(
            next_line(&mut from_client).await.as_deref(),
            Some("NAME alice")
        );
        write.write_all(answer).await.expect("write");
        drop((from_client, write));
        let (status, out, stderr) = client.finish_with_stdin_open().await;
        assert_eq!(status.code(), Some(2), "stderr: {stderr}");
        assert_eq!(out, Vec::<String>::new());
        assert_eq!(stderr, format!("chat-client: cannot log in: {said}\n"));
    }
}

/// What a cluster node answers to a login while it cannot reach Redis, or
/// is settling after Redis came back.
const UNAVAILABLE: &[u8] = b"ERROR unavailable the room is unreachable; nothing was done\n";

/// A login answered `ERROR unavailable` is not a refused name: the client
/// says the server is unavailable right now and tries again after a
/// while, and logs in once the server takes logins again.
#[tokio::test]
async fn unavailable_server_is_tried_again() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let mut client = Piped::spawn(addr, &["--name", "alice"]);
    let (stream, _) = tokio::time::timeout(TIMEOUT, listener.accept())
        .await
        .expect("the client connects")
        .expect("accept");
    let (read, mut write) = stream.into_split();
    let mut from_client = BufReader::new(read).lines();
    for _ in 0..2 {
        assert_eq!(
            next_line(&mut from_client).await.as_deref(),
            Some("NAME alice")
        );
        write.write_all(UNAVAILABLE).await.expect("write");
    }
    assert_eq!(
        next_line(&mut from_client).await.as_deref(),
        Some("NAME alice")
    );
    write
        .write_all(b"WELCOME alice\nNAMES alice\n")
        .await
        .expect("write");
    client.expect("* logged in as alice").await;
    client.expect("* in the lobby: alice").await;
    client.close_stdin();
    assert_eq!(next_line(&mut from_client).await.as_deref(), Some("LEAVE"));
    write.write_all(b"BYE\n").await.expect("write");
    drop(write);
    let (status, rest, stderr) = client.finish().await;
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(rest, ["* you left the chat"]);
    let waiting = "chat-client: the server is unavailable right now \
                   (the room is unreachable; nothing was done); trying again in";
    assert_eq!(
        stderr,
        format!("{waiting} 500ms\n{waiting} 1s\n"),
        "stderr: {stderr}"
    );
}

/// A server that stays unavailable is given up on after a bounded number
/// of tries, with an exit code of its own (4), not the one of a refused
/// name (2): the same command may work later.
#[tokio::test]
async fn server_still_unavailable_exits_4() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let client = Piped::spawn(addr, &["--name", "alice"]);
    let (stream, _) = tokio::time::timeout(TIMEOUT, listener.accept())
        .await
        .expect("the client connects")
        .expect("accept");
    let (read, mut write) = stream.into_split();
    let mut from_client = BufReader::new(read).lines();
    let mut tries = 0;
    while let Some(line) = next_line(&mut from_client).await {
        assert_eq!(line, "NAME alice");
        tries += 1;
        write.write_all(UNAVAILABLE).await.expect("write");
    }
    assert_eq!(tries, 6, "a first try and five more");
    let (status, out, stderr) = client.finish_with_stdin_open().await;
    assert_eq!(status.code(), Some(4), "stderr: {stderr}");
    assert_eq!(out, Vec::<String>::new());
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 6, "stderr: {stderr}");
    assert!(
        lines[..5]
            .iter()
            .all(|l| l.starts_with("chat-client: the server is unavailable right now (")),
        "stderr: {stderr}"
    );
    assert_eq!(
        lines[5],
        "chat-client: cannot log in: the server is unavailable right now \
         (the room is unreachable; nothing was done); try again later"
    );
    assert!(!stderr.contains("name"), "stderr: {stderr}");
}

/// The server shutting down while the script still has input: the reason
/// on stderr, exit code 3.
#[tokio::test]
async fn server_shutdown_exits_3_with_the_reason() {
    let mut server = Server::start(&[]);
    let mut alice = Piped::named(&server, "alice");
    alice.expect("* logged in as alice").await;
    alice.expect("* in the lobby: alice").await;
    server.signal(libc::SIGTERM);
    let (status, rest, stderr) = alice.finish_with_stdin_open().await;
    assert_eq!(status.code(), Some(3), "stderr: {stderr}");
    assert_eq!(rest, Vec::<String>::new());
    assert_eq!(
        stderr,
        "chat-client: connection closed by server (the server is shutting down)\n"
    );
    server.wait_exit(TIMEOUT).expect("the server stops");
}

/// Against a scripted server: `DROPPED` is explained, an `ERROR` with a
/// code newer than the client shows its code and detail as sent, control
/// characters never reach the terminal, and a server that never answers `LEAVE` with
/// `BYE` does not keep the client: it exits 0 after a bounded wait.
#[tokio::test]
async fn scripted_server_frames_and_a_missing_bye() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let mut client = Piped::spawn(addr, &["--name", "alice"]);
    let (stream, _) = tokio::time::timeout(TIMEOUT, listener.accept())
        .await
        .expect("the client connects")
        .expect("accept");
    let (read, mut write) = stream.into_split();
    let mut from_client = BufReader::new(read).lines();
    assert_eq!(
        next_line(&mut from_client).await.as_deref(),
        Some("NAME alice")
    );
    write
        .write_all(b"WELCOME alice\nNAMES alice\nDROPPED 12\nMSG eve \x1b[2Jhi\nNOT A FRAME\n")
        .await
        .expect("write");
    // Version 2's codes are newer than the client's protocol crate.
    write
        .write_all(b"ERROR bad-room no room is called x\nERROR not-in-room\n")
        .await
        .expect("write");
    client.expect("* logged in as alice").await;
    client.expect("* in the lobby: alice").await;
    client
        .expect("* 12 messages were skipped because this terminal fell behind")
        .await;
    client.expect("eve: \u{fffd}[2Jhi").await;
    client
        .expect(r#"! unreadable line from the server (malformed server frame (unknown verb): "NOT A FRAME")"#)
        .await;
    client.expect("! bad-room: no room is called x").await;
    client
        .expect("! not-in-room: you are not in that room")
        .await;
    client.close_stdin();
    assert_eq!(next_line(&mut from_client).await.as_deref(), Some("LEAVE"));
    // No BYE: the client gives up waiting by itself and exits 0.
    let (status, rest, stderr) = client.finish().await;
    assert_eq!(
        (status.code(), rest, stderr.as_str()),
        (Some(0), vec![], "")
    );
}

/// A person who only reads stays connected: the client's keepalive `PING`s
/// count as activity for the server's idle timeout, and their `PONG`s are
/// not printed, even with `--raw`. A silent raw connection that logged in
/// later is timed out meanwhile, which shows the timeout did strike.
#[tokio::test]
async fn keepalive_keeps_a_quiet_reader_connected() {
    let server = Server::start(&["--idle-timeout", "1s"]);
    let mut alice = Piped::spawn(
        server.addr(),
        &["--name", "alice", "--raw", "--keepalive", "200ms"],
    );
    alice.expect("WELCOME alice").await;
    alice.expect("NAMES alice").await;
    let mut quiet = server.user("quiet").await;
    alice.expect("JOIN quiet").await;
    quiet.expect_error("idle-timeout").await;
    quiet.expect_closed().await;
    alice.expect("LEAVE quiet").await;
    alice.say("still here").await;
    alice.expect("MSG alice still here").await;
    alice.close_stdin();
    alice.expect("BYE").await;
    let (status, rest, stderr) = alice.finish().await;
    assert_eq!(
        (status.code(), rest, stderr.as_str()),
        (Some(0), vec![], "")
    );
}

/// Without a keepalive the quiet reader is what the issue reported: timed
/// out like anyone silent.
#[tokio::test]
async fn without_keepalive_a_quiet_reader_is_timed_out() {
    let server = Server::start(&["--idle-timeout", "500ms"]);
    let alice = Piped::spawn(server.addr(), &["--name", "alice", "--keepalive", "off"]);
    let (status, rest, stderr) = alice.finish_with_stdin_open().await;
    assert_eq!(status.code(), Some(3), "stderr: {stderr}");
    assert_eq!(rest, ["* logged in as alice", "* in the lobby: alice"]);
    assert!(
        stderr.starts_with("chat-client: connection closed by server ("),
        "stderr: {stderr}"
    );
}

/// `--room #x`: the client joins the room after login, says every stdin
/// line there, and prints what arrives with the room's tag; the lobby's
/// lines stay as they were, direct messages say who to whom. No history is
/// asked for: a script gets what is said from now on, as with `nc`.
#[tokio::test]
async fn piped_room_flag_says_lines_in_that_room() {
    let server = Server::start(&[]);
    let mut bob = server.user("bob").await;
    bob.send("JOIN #ops").await;
    bob.expect("NAMES #ops bob").await;
    bob.send("TOPIC #ops deploys at 5").await;
    bob.expect("TOPIC #ops bob deploys at 5").await;
    bob.send("SAY #ops said before alice came").await;
    bob.expect("SAY #ops bob said before alice came").await;

    let mut alice = Piped::spawn(server.addr(), &["--name", "alice", "--room", "#OPS"]);
    alice.expect("* logged in as alice").await;
    alice.expect("* in the lobby: alice, bob").await;
    alice.expect("[#ops] * in the room: alice, bob").await;
    alice
        .expect("[#ops] * topic: deploys at 5 (set by bob)")
        .await;
    bob.expect("JOIN alice").await;
    bob.expect("JOIN #ops alice").await;

    alice.say("hello  ops ").await;
    bob.expect("SAY #ops alice hello  ops ").await;
    alice.expect("[#ops] alice: hello  ops ").await;
    alice.say("/who is a message too").await;
    bob.expect("SAY #ops alice /who is a message too").await;
    alice.expect("[#ops] alice: /who is a message too").await;

    let mut carol = server.user("carol").await;
    alice.expect("* carol joined").await;
    carol.send("JOIN #ops").await;
    alice.expect("[#ops] * carol joined").await;
    bob.send("SAY #ops hi").await;
    alice.expect("[#ops] bob: hi").await;
    bob.send("TELL ALICE psst").await;
    alice.expect("bob -> you: psst").await;
    bob.send("MSG lobby talk").await;
    alice.expect("bob: lobby talk").await;
    carol.send("PART #ops lunch").await;
    alice.expect("[#ops] * carol left (lunch)").await;
    bob.send("LEAVE").await;
    alice.expect("* bob left").await;

    alice.close_stdin();
    alice.expect("* you left the chat").await;
    let (status, rest, stderr) = alice.finish().await;
    assert_eq!(
        (status.code(), rest, stderr.as_str()),
        (Some(0), vec![], "")
    );
}

/// A line too long for a `SAY` in the room is skipped with a warning: the
/// limit counts the room's name too.
#[tokio::test]
async fn piped_room_lines_are_bounded_by_the_frame() {
    let server = Server::start(&[]);
    let mut observer = server.user("observer").await;
    observer.send("JOIN #ops").await;
    observer.expect("NAMES #ops observer").await;
    let mut alice = Piped::spawn(server.addr(), &["--name", "alice", "--room", "#ops"]);
    observer.expect("JOIN alice").await;
    observer.expect("JOIN #ops alice").await;
    let longest = "a".repeat(4096 - "SAY #ops ".len());
    alice.say(&format!("{longest}b")).await;
    alice.say(&longest).await;
    observer.expect(&format!("SAY #ops alice {longest}")).await;
    alice.close_stdin();
    observer.expect("LEAVE alice").await;
    let (status, _, stderr) = alice.finish().await;
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        stderr,
        "chat-client: a line longer than 4087 bytes was not sent\n"
    );
}

/// `--raw` prints version 2 frames exactly as they came.
#[tokio::test]
async fn raw_prints_version_2_frames_as_received() {
    let server = Server::start(&[]);
    let mut bob = server.user("bob").await;
    bob.send("JOIN #Ops").await;
    bob.expect("NAMES #Ops bob").await;
    let mut alice = Piped::spawn(
        server.addr(),
        &["--name", "alice", "--raw", "--room", "#ops"],
    );
    alice.expect("WELCOME alice").await;
    alice.expect("NAMES alice bob").await;
    alice.expect("NAMES #Ops alice bob").await;
    bob.expect("JOIN alice").await;
    bob.expect("JOIN #Ops alice").await;
    for (sent, seen) in [
        ("TOPIC #ops  deploys at 5 ", "TOPIC #Ops bob  deploys at 5 "),
        ("SAY #ops  hi ", "SAY #Ops bob  hi "),
        ("TELL alice psst", "TELL bob alice psst"),
        ("PART #ops bye", "LEAVE #Ops bob bye"),
        ("JOIN #ops", "JOIN #Ops bob"),
    ] {
        bob.send(sent).await;
        alice.expect(seen).await;
    }
    alice.say("hi").await;
    alice.expect("SAY #Ops alice hi").await;
    alice.close_stdin();
    alice.expect("BYE").await;
    let (status, rest, stderr) = alice.finish().await;
    assert_eq!(
        (status.code(), rest, stderr.as_str()),
        (Some(0), vec![], "")
    );
}

/// A scripted server: a listener the test accepts on and answers by hand.
struct Scripted {
    listener: TcpListener,
}

/// One connection to a [`Scripted`] server: what the client sends, line
/// by line, and the way back.
struct Scripting {
    from_client: Lines<BufReader<OwnedReadHalf>>,
    to_client: tokio::net::tcp::OwnedWriteHalf,
}

impl Scripted {
    async fn start() -> Scripted {
        Scripted {
            listener: TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        }
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.listener.local_addr().expect("address")
    }

    async fn accept(&self) -> Scripting {
        let (stream, _) = tokio::time::timeout(TIMEOUT, self.listener.accept())
            .await
            .expect("the client connects")
            .expect("accept");
        let (read, write) = stream.into_split();
        Scripting {
            from_client: BufReader::new(read).lines(),
            to_client: write,
        }
    }
}

impl Scripting {
    /// Asserts the next line the client sends.
    async fn expect(&mut self, line: &str) {
        assert_eq!(
            next_line(&mut self.from_client).await.as_deref(),
            Some(line)
        );
    }

    /// Sends the client these lines.
    async fn send(&mut self, lines: &[&str]) {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        self.to_client
            .write_all(text.as_bytes())
            .await
            .expect("write to the client");
    }
}

/// What the scripted servers' accounts are protected with.
const SECRET: &str = "hunter2-secret";

/// Asserts that no output of the client holds the password.
fn no_secret(out: &[String], stderr: &str) {
    assert!(
        !out.iter().any(|l| l.contains(SECRET)) && !stderr.contains(SECRET),
        "the password was shown: {out:?} {stderr:?}"
    );
}

/// A registered name in a script: the password from `CHAT_PASSWORD`, or
/// from the first line of `--password-file`, goes with the name in one
/// `NAME alice <password>`, and nowhere else: not on stdout, not on
/// stderr, not in `--raw` output.
#[tokio::test]
async fn a_registered_name_logs_in_with_the_password_given_up_front() {
    let scratch = std::env::temp_dir().join(format!("chat-client-pw-{}", std::process::id()));
    std::fs::write(&scratch, format!("{SECRET}\nnot this line\n")).expect("write the file");
    let file = scratch.to_str().expect("a UTF-8 path").to_owned();
    for (args, env) in [
        (vec!["--name", "alice"], vec![("CHAT_PASSWORD", SECRET)]),
        (
            vec!["--name", "alice", "--raw", "--password-file", &file],
            vec![("CHAT_PASSWORD", "not-the-one-used")],
        ),
    ] {
        let server = Scripted::start().await;
        let mut client = Piped::spawn_with(server.addr(), &args, &env);
        let mut conn = server.accept().await;
        conn.expect(&format!("NAME alice {SECRET}")).await;
        conn.send(&["WELCOME alice", "NAMES alice"]).await;
        client.close_stdin();
        conn.expect("LEAVE").await;
        conn.send(&["BYE"]).await;
        drop(conn);
        let (status, out, stderr) = client.finish().await;
        assert_eq!(status.code(), Some(0), "stderr: {stderr}");
        assert_eq!(out.len(), 3, "{out:?}");
        no_secret(&out, &stderr);
    }
    let _ = std::fs::remove_file(&scratch);
}

/// Logins a script cannot complete for want of the right password: each
/// says why on stderr without the password, sends no second `NAME`, and
/// exits 5, not 2 (the name itself is fine).
#[tokio::test]
async fn a_password_that_does_not_do_exits_5() {
    for (password, answer, said) in [
        (
            None,
            "ERROR name-registered alice is registered; NAME alice <password>",
            "the name alice is registered: give its password with --password-file or CHAT_PASSWORD",
        ),
        (
            Some(SECRET),
            "ERROR bad-password wrong password",
            "wrong password for alice",
        ),
        (
            Some(SECRET),
            "ERROR not-registered alice is not registered",
            "a password was given, but the name alice is not registered; \
             log in without one (no --password-file, no CHAT_PASSWORD)",
        ),
        (
            Some(SECRET),
            "ERROR too-many-tries",
            "too many wrong passwords for alice in the last minute; wait a minute, then try again",
        ),
    ] {
        let server = Scripted::start().await;
        let env: Vec<(&str, &str)> = password.map(|p| ("CHAT_PASSWORD", p)).into_iter().collect();
        let client = Piped::spawn_with(server.addr(), &["--name", "alice"], &env);
        let mut conn = server.accept().await;
        match password {
            Some(password) => conn.expect(&format!("NAME alice {password}")).await,
            None => conn.expect("NAME alice").await,
        }
        conn.send(&[answer]).await;
        let (status, out, stderr) = client.finish_with_stdin_open().await;
        assert_eq!(status.code(), Some(5), "stderr: {stderr}");
        assert_eq!(out, Vec::<String>::new());
        assert_eq!(stderr, format!("chat-client: cannot log in: {said}\n"));
        assert_eq!(
            next_line(&mut conn.from_client).await,
            None,
            "no second try"
        );
    }
}

/// A password file that cannot be read is said before anything is
/// tried: exit 5, the path in the message, no connection.
#[tokio::test]
async fn an_unreadable_password_file_exits_5_before_connecting() {
    let server = Scripted::start().await;
    let missing = "/nonexistent/chat-password";
    let client = Piped::spawn(
        server.addr(),
        &["--name", "alice", "--password-file", missing],
    );
    let (status, out, stderr) = client.finish_with_stdin_open().await;
    assert_eq!(status.code(), Some(5), "stderr: {stderr}");
    assert_eq!(out, Vec::<String>::new());
    assert!(
        stderr.starts_with(&format!("chat-client: cannot read {missing}: ")),
        "stderr: {stderr}"
    );
    let connected = tokio::time::timeout(
        std::time::Duration::from_millis(200),
        server.listener.accept(),
    );
    assert!(connected.await.is_err(), "the client connected anyway");
}

/// Being removed by an operator or replaced by another login reads as a
/// sentence (who, why, until when in local time), on stderr, and has an
/// exit code of its own: 6 logged in elsewhere, 7 kicked, 8 banned, at
/// login or later. Being muted is news, not an ending.
#[tokio::test]
async fn kicked_banned_and_replaced_exit_with_their_own_codes() {
    // Never today: the sentence carries the day and the year, in the
    // client's time zone (UTC here).
    let until = "2099-12-07T13:05:00.000Z";
    for (at_login, answer, said, code) in [
        (
            false,
            "ERROR kicked carol spamming  again".to_owned(),
            "you were kicked by carol: spamming  again",
            7,
        ),
        (
            false,
            format!("ERROR banned {until} spam"),
            "you are banned until 13:05 (Mon 7 Dec 2099): spam",
            8,
        ),
        (
            true,
            format!("ERROR banned {until}"),
            "cannot log in: you are banned until 13:05 (Mon 7 Dec 2099)",
            8,
        ),
        (
            false,
            "ERROR logged-in-elsewhere alice logged in from another connection".to_owned(),
            "you logged in somewhere else; this session is closed",
            6,
        ),
    ] {
        let server = Scripted::start().await;
        let mut client = Piped::spawn_with(server.addr(), &["--name", "alice"], &[("TZ", "UTC")]);
        let mut conn = server.accept().await;
        conn.expect("NAME alice").await;
        if !at_login {
            conn.send(&["WELCOME alice", "NAMES alice"]).await;
            client.expect("* logged in as alice").await;
            client.expect("* in the lobby: alice").await;
            client.say("hi").await;
            conn.expect("MSG hi").await;
            conn.send(&[&format!("ERROR muted {until}")]).await;
            client
                .expect("! you are muted until 13:05 (Mon 7 Dec 2099); your message was not sent")
                .await;
        }
        conn.send(&[&answer]).await;
        drop(conn);
        let (status, rest, stderr) = client.finish_with_stdin_open().await;
        assert_eq!(status.code(), Some(code), "stderr: {stderr}");
        assert_eq!(rest, Vec::<String>::new());
        assert_eq!(stderr, format!("chat-client: {said}\n"));
    }
}

/// The next line the client sent to the scripted server.
async fn next_line(lines: &mut Lines<BufReader<OwnedReadHalf>>) -> Option<String> {
    tokio::time::timeout(TIMEOUT, lines.next_line())
        .await
        .expect("a line from the client")
        .expect("read from the client")
}
