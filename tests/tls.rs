//! TLS end to end: the contract's "Running in public" section. The server
//! gets a certificate made on the spot; a tokio-rustls client and the real
//! `chat-client --tls --ca` talk version 1 through it; a client that does not
//! trust the certificate refuses it; SIGHUP swaps the certificate under live
//! connections.

#[path = "support/tls.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chat_tests::{binary, Client, TIMEOUT};
use support::{start_fails, trusting, Pair, Running, Scratch, TlsClient};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

fn tls_server(scratch: &Scratch, pair: &Pair, extra: &[&str]) -> Running {
    let (cert, key) = pair.write(&scratch.0);
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let mut args = vec!["--tls-cert", cert, "--tls-key", key];
    args.extend_from_slice(extra);
    Running::start(&args)
}

#[tokio::test]
async fn a_v1_session_over_tls_meets_a_plaintext_one() {
    let scratch = Scratch::new("v1");
    let pair = Pair::generate();
    let server = tls_server(&scratch, &pair, &[]);
    let connector = trusting(&[&pair.der]);
    let mut alice = TlsClient::connect(server.tls_addr(), &connector).await;
    assert_eq!(alice.presented, pair.der);
    alice.send("PING before").await;
    alice.expect("PONG before").await;
    alice.send("MSG too soon").await;
    alice.expect_error("not-logged-in").await;
    assert_eq!(alice.login("alice").await, ["alice"]);
    let mut bob = Client::connect(server.addr).await;
    assert_eq!(bob.login("bob").await, ["alice", "bob"]);
    alice.expect("JOIN bob").await;
    alice.send("MSG hi  bob ").await;
    alice.expect("MSG alice hi  bob ").await;
    bob.expect("MSG alice hi  bob ").await;
    bob.send("MSG hello alice").await;
    alice.expect("MSG bob hello alice").await;
    alice.send("WHO").await;
    alice.expect("NAMES alice bob").await;
    alice.send("LEAVE see you").await;
    alice.expect("BYE").await;
    alice.expect_closed().await;
    bob.expect("MSG bob hello alice").await;
    bob.expect("LEAVE alice see you").await;
}

#[tokio::test]
async fn chat_client_talks_over_tls_with_its_ca() {
    let scratch = Scratch::new("client");
    let pair = Pair::generate();
    let server = tls_server(&scratch, &pair, &[]);
    let mut bob = Client::connect(server.addr).await;
    bob.login("bob").await;
    let output = tokio::process::Command::new(binary("chat-client"))
        .args(["--name", "carol", "--raw", "--tls", "--ca"])
        .arg(scratch.path("cert.pem"))
        .arg("--addr")
        .arg(server.tls_addr().to_string())
        .env_remove("CHAT_ADDR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chat-client");
    let mut child = output;
    {
        use tokio::io::AsyncWriteExt as _;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"hello over tls\n").await.expect("stdin");
    }
    let output = tokio::time::timeout(TIMEOUT, child.wait_with_output())
        .await
        .expect("chat-client ends")
        .expect("chat-client output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("WELCOME carol"), "{stdout}");
    assert!(stdout.contains("MSG carol hello over tls"), "{stdout}");
    bob.expect("JOIN carol").await;
    bob.expect("MSG carol hello over tls").await;
    bob.expect("LEAVE carol").await;
}

#[tokio::test]
async fn chat_client_refuses_an_untrusted_certificate_and_never_falls_back() {
    let scratch = Scratch::new("untrusted");
    let pair = Pair::generate();
    let server = tls_server(&scratch, &pair, &[]);
    let stranger = Pair::generate();
    let other = scratch.path("other.pem");
    std::fs::write(&other, &stranger.cert_pem).unwrap();
    let tls_addr = server.tls_addr().to_string();
    let system = ["--tls"].as_slice();
    let other_ca = ["--ca", other.to_str().unwrap()];
    for trust in [system, other_ca.as_slice()] {
        let output = Command::new(binary("chat-client"))
            .args(["--name", "mallory", "--raw", "--addr", &tls_addr])
            .args(trust)
            .env_remove("CHAT_ADDR")
            .stdin(Stdio::null())
            .output()
            .expect("run chat-client");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{trust:?}: {stderr}");
        assert!(
            stderr.contains("does not verify") || stderr.contains("no trusted certificates"),
            "{trust:?}: {stderr}"
        );
        assert!(output.stdout.is_empty(), "{trust:?}");
    }
    // Nobody logged in through the refused handshakes.
    let mut bob = Client::connect(server.addr).await;
    assert_eq!(bob.login("bob").await, ["bob"]);
}

#[tokio::test]
async fn sighup_swaps_the_certificate_without_dropping_anyone() {
    let scratch = Scratch::new("reload");
    let first = Pair::generate();
    let mut server = tls_server(&scratch, &first, &[]);
    let trusts_first = trusting(&[&first.der]);
    let mut old = TlsClient::connect(server.tls_addr(), &trusts_first).await;
    old.login("old").await;

    let second = Pair::generate();
    second.write(&scratch.0);
    server.signal(libc::SIGHUP);
    let trusts_second = trusting(&[&second.der]);
    let deadline = Instant::now() + TIMEOUT;
    let mut new = loop {
        if let Ok(client) = TlsClient::try_connect(server.tls_addr(), &trusts_second).await {
            break client;
        }
        assert!(Instant::now() < deadline, "the new certificate never came");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(new.presented, second.der);
    new.login("new").await;
    old.expect("JOIN new").await;
    old.send("MSG still here").await;
    old.expect("MSG old still here").await;
    new.expect("MSG old still here").await;

    // A pair that cannot be read is refused and the one in use kept.
    std::fs::write(scratch.path("cert.pem"), "not a certificate").unwrap();
    server.signal(libc::SIGHUP);
    old.send("PING after").await;
    old.expect("PONG after").await;
    for _ in 0..5 {
        let client = TlsClient::connect(server.tls_addr(), &trusts_second).await;
        assert_eq!(client.presented, second.der);
    }
    assert!(server.alive());
}

#[tokio::test]
async fn a_handshake_that_never_comes_is_closed_at_the_login_timeout() {
    let scratch = Scratch::new("slow");
    let pair = Pair::generate();
    let server = tls_server(&scratch, &pair, &["--login-timeout", "300ms"]);
    let mut silent = TcpStream::connect(server.tls_addr()).await.unwrap();
    let started = Instant::now();
    let mut sink = [0u8; 64];
    let read = tokio::time::timeout(TIMEOUT, silent.read(&mut sink))
        .await
        .expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(started.elapsed() >= Duration::from_millis(250));
    // The plaintext listener is untouched by TLS.
    let mut plain = Client::connect(server.addr).await;
    plain.login("plain").await;
}

#[test]
fn a_tls_setup_that_cannot_work_stops_the_server_at_start() {
    let scratch = Scratch::new("bad");
    let (cert, key) = Pair::generate().write(&scratch.0);
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let (code, stderr) = start_fails(&["--tls-cert", cert]);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("--tls-key"), "{stderr}");
    let (code, stderr) = start_fails(&["--tls-key", key]);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("--tls-cert"), "{stderr}");
    let missing = scratch.path("missing.pem");
    let (code, stderr) = start_fails(&["--tls-cert", missing.to_str().unwrap(), "--tls-key", key]);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("missing.pem"), "{stderr}");
    let (code, stderr) = start_fails(&["--tls-cert", key, "--tls-key", key]);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("no certificate"), "{stderr}");
}

#[test]
fn mkcert_makes_a_pair_the_server_starts_with() {
    let scratch = Scratch::new("mkcert");
    let status = Command::new(binary("chat-server"))
        .args(["mkcert", "--out"])
        .arg(&scratch.0)
        .stdout(Stdio::null())
        .status()
        .expect("run mkcert");
    assert!(status.success());
    let (cert, key) = (scratch.path("cert.pem"), scratch.path("key.pem"));
    let _server = Running::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
}
