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

/// A truncated certificate (a renewal copied in part) is refused on
/// SIGHUP with a sentence that names the file and says what is wrong, not
/// the parser's bytes; the pair in use is kept.
#[tokio::test]
async fn a_truncated_certificate_on_sighup_is_logged_in_words() {
    let scratch = Scratch::new("truncated");
    let pair = Pair::generate();
    let (cert, key) = pair.write(&scratch.0);
    let mut server = Running::logged(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let connector = trusting(&[&pair.der]);
    let mut alice = TlsClient::connect(server.tls_addr(), &connector).await;
    alice.login("alice").await;
    let renewed = Pair::generate().cert_pem;
    std::fs::write(&cert, &renewed[..renewed.len() / 2]).unwrap();
    server.signal(libc::SIGHUP);
    let line = server.until_logged("SIGHUP");
    assert!(
        line.contains(&format!(
            "SIGHUP: cannot read the TLS certificate {}: it stops in the middle of a PEM block, \
             without its closing line -----END CERTIFICATE-----",
            cert.display()
        )),
        "{line}"
    );
    assert!(
        line.ends_with("keeping the TLS certificate and key in use"),
        "{line}"
    );
    assert!(!line.contains("[45, 45"), "bytes in the log: {line}");
    alice.send("PING after").await;
    alice.expect("PONG after").await;
    let again = TlsClient::connect(server.tls_addr(), &connector).await;
    assert_eq!(again.presented, pair.der, "the pair in use is kept");
}

/// Without TLS there is nothing to reload: SIGHUP (`systemctl reload`) is
/// logged as such and changes nothing. It used to kill the server (exit
/// 129) and cut everyone off without `ERROR shutting-down`.
#[tokio::test]
async fn sighup_without_tls_reloads_nothing_and_drops_nobody() {
    let mut server = Running::logged(&[]);
    let mut alice = Client::connect(server.addr).await;
    alice.login("alice").await;
    let mut bob = Client::connect(server.addr).await;
    bob.login("bob").await;
    alice.expect("JOIN bob").await;
    for _ in 0..2 {
        server.signal(libc::SIGHUP);
        let line = server.until_logged("SIGHUP");
        assert!(line.contains("SIGHUP: nothing to reload"), "{line}");
        alice.send("MSG still here").await;
        alice.expect("MSG alice still here").await;
        bob.expect("MSG alice still here").await;
        assert!(server.alive());
    }
    let mut carol = Client::connect(server.addr).await;
    assert_eq!(carol.login("carol").await, ["alice", "bob", "carol"]);
    alice.expect("JOIN carol").await;
    bob.expect("JOIN carol").await;
    // It still stops as it should, telling everyone.
    let status = server.stop();
    assert!(status.success(), "exit status {status}");
    for client in [&mut alice, &mut bob, &mut carol] {
        client.expect_error("shutting-down").await;
        client.expect_closed().await;
    }
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

/// Runs `chat-server mkcert --out dir` with `extra` flags: its exit code
/// and stderr.
fn mkcert(dir: &std::path::Path, extra: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(binary("chat-server"))
        .args(["mkcert", "--out"])
        .arg(dir)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run mkcert");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// mkcert never overwrites a key by surprise: an existing `cert.pem` or
/// `key.pem` is refused, with what to do, unless `--force` is given.
#[test]
fn mkcert_refuses_to_overwrite_a_pair_unless_forced() {
    let scratch = Scratch::new("mkcert-force");
    let (cert, key) = (scratch.path("cert.pem"), scratch.path("key.pem"));
    assert_eq!(mkcert(&scratch.0, &[]).0, Some(0));
    let first = (std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap());

    let (code, stderr) = mkcert(&scratch.0, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{} and {} already exist; not overwriting (give --force",
            cert.display(),
            key.display()
        )),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&cert).unwrap(), first.0);
    assert_eq!(std::fs::read(&key).unwrap(), first.1);

    // Either file alone is enough to refuse, and nothing is written.
    std::fs::remove_file(&cert).unwrap();
    let (code, stderr) = mkcert(&scratch.0, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{} already exists;", key.display())),
        "{stderr}"
    );
    assert!(!cert.exists());
    assert_eq!(std::fs::read(&key).unwrap(), first.1);

    let (code, stderr) = mkcert(&scratch.0, &["--force"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_ne!(std::fs::read(&key).unwrap(), first.1, "a new key");
    assert!(cert.exists());
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

/// The login timeout counts from the accept, the handshake included: a
/// client that takes most of it to finish the handshake has only what is
/// left to log in (it used to get the whole timeout again after it).
#[tokio::test]
async fn the_login_timeout_counts_from_the_accept_through_the_handshake() {
    use tokio::io::AsyncBufReadExt as _;
    let scratch = Scratch::new("login-from-accept");
    let pair = Pair::generate();
    let server = tls_server(&scratch, &pair, &["--login-timeout", "2s"]);
    let connector = trusting(&[&pair.der]);
    let stream = TcpStream::connect(server.tls_addr()).await.unwrap();
    let accepted = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = connector
        .connect(name, stream)
        .await
        .expect("the handshake, within the login timeout");
    let mut lines = tokio::io::BufReader::new(stream);
    let mut line = String::new();
    tokio::time::timeout(TIMEOUT, lines.read_line(&mut line))
        .await
        .expect("told in time")
        .expect("read");
    assert!(line.starts_with("ERROR login-timeout"), "{line:?}");
    let waited = accepted.elapsed();
    assert!(
        waited >= Duration::from_millis(1900),
        "closed before the timeout: {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(3000),
        "the handshake's time was not counted: {waited:?}"
    );
}

/// A refusal on the TLS port is told inside TLS, after a handshake; but
/// one address may have only 16 such handshakes waiting at once, and more
/// of its connections are closed at once, without one. Other addresses are
/// not held back.
#[tokio::test]
async fn sixteen_refusals_per_address_wait_in_a_handshake_and_more_are_closed_at_once() {
    let scratch = Scratch::new("refusal-handshakes");
    let pair = Pair::generate();
    let server = tls_server(
        &scratch,
        &pair,
        &["--max-per-ip", "1", "--limits-on-loopback"],
    );
    let connector = trusting(&[&pair.der]);
    let mut held = Client::connect(server.addr).await;
    held.send("PING").await;
    held.expect("PONG").await;
    // Refused, and stalled in the handshake: they never send a byte.
    let mut stalled = Vec::new();
    for _ in 0..16 {
        stalled.push(TcpStream::connect(server.tls_addr()).await.unwrap());
    }
    let started = Instant::now();
    let mut over = TcpStream::connect(server.tls_addr()).await.unwrap();
    let mut sink = [0u8; 64];
    let read = tokio::time::timeout(TIMEOUT, over.read(&mut sink))
        .await
        .expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed at once, not at the login timeout"
    );
    // The sixteen still wait.
    for stream in &mut stalled {
        let waited = tokio::time::timeout(Duration::from_millis(20), stream.read(&mut sink)).await;
        assert!(
            waited.is_err(),
            "a stalled handshake was closed: {waited:?}"
        );
    }
    // Another address is served, over TLS too.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(([127, 0, 0, 2], 0).into())
        .expect("bind 127.0.0.2");
    let other = socket.connect(server.tls_addr()).await.expect("connect");
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = connector.connect(name, other).await.expect("handshake");
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
    let mut lines = tokio::io::BufReader::new(stream);
    lines.get_mut().write_all(b"NAME other\n").await.unwrap();
    let mut line = String::new();
    tokio::time::timeout(TIMEOUT, lines.read_line(&mut line))
        .await
        .expect("answered")
        .expect("read");
    assert_eq!(line, "WELCOME other\n");
    // Once the stalled ones go, this address's refusals are told again.
    drop(stalled);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Ok(mut refused) = TlsClient::try_connect(server.tls_addr(), &connector).await {
            refused.expect_error("too-many-connections").await;
            break;
        }
        assert!(Instant::now() < deadline, "never told why again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
