//! What the TLS, limits and metrics tests share: certificates made on the
//! spot, a server started with the listeners those tests need, and a line
//! client that speaks TLS.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use chat_tests::{binary, TIMEOUT};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader as AsyncBufReader, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::crypto::ring as provider;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// A scratch directory, emptied first, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("chat-tests-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        Scratch(dir)
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A self-signed certificate for localhost and 127.0.0.1, and its key.
pub struct Pair {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl Pair {
    pub fn generate() -> Pair {
        let pair = rcgen::generate_simple_self_signed(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ])
        .expect("generate a certificate");
        Pair {
            cert_pem: pair.cert.pem(),
            key_pem: pair.signing_key.serialize_pem(),
            der: pair.cert.der().clone(),
        }
    }

    /// Writes the pair as `cert.pem` and `key.pem` in `dir`; returns both paths.
    pub fn write(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, &self.cert_pem).expect("write cert.pem");
        std::fs::write(&key, &self.key_pem).expect("write key.pem");
        (cert, key)
    }
}

/// A running `chat-server` with whichever listeners its flags ask for,
/// killed when dropped.
pub struct Running {
    child: Child,
    pub addr: SocketAddr,
    pub tls_addr: Option<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
    /// The web doors (`--web-addr`, `--web-tls-addr`), when asked for.
    pub web_addr: Option<SocketAddr>,
    pub web_tls_addr: Option<SocketAddr>,
    /// Its log lines, as they come, when started with [`Running::logged`].
    log: Option<mpsc::Receiver<String>>,
}

impl Running {
    /// Starts the server on free loopback ports (`--addr`, and `--tls-addr`
    /// with TLS, are added) and reads the lines that name its listeners.
    pub fn start(args: &[&str]) -> Running {
        Running::spawn(args, false)
    }

    /// [`start`](Running::start), keeping its log (stderr, at `info`) for
    /// [`until_logged`](Running::until_logged).
    pub fn logged(args: &[&str]) -> Running {
        Running::spawn(args, true)
    }

    fn spawn(args: &[&str], logged: bool) -> Running {
        let tls = args.contains(&"--tls-cert");
        let metrics = args.contains(&"--metrics");
        let web = args.contains(&"--web-addr");
        let web_tls = args.contains(&"--web-tls-addr");
        let mut command = Command::new(binary("chat-server"));
        command.args(["--addr", "127.0.0.1:0"]);
        if tls {
            command.args(["--tls-addr", "127.0.0.1:0"]);
        }
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        // In memory unless the test gives a data directory, as
        // `Server::start` does: many servers run at once, and none may
        // take `chat-data`.
        if !args
            .iter()
            .any(|a| matches!(*a, "--data-dir" | "--ephemeral"))
        {
            command.arg("--ephemeral");
        }
        if logged {
            command.env("RUST_LOG", "info").stderr(Stdio::piped());
        } else if std::env::var_os("CHAT_TEST_LOG").is_none() {
            command.stderr(Stdio::null());
        }
        let mut child = command.spawn().expect("spawn chat-server");
        let log = child.stderr.take().map(|stderr| {
            let (lines, log) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if lines.send(line).is_err() {
                        break;
                    }
                }
            });
            log
        });
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = |prefix: &str| -> SocketAddr {
            let mut line = String::new();
            stdout
                .read_line(&mut line)
                .expect("read a line of the server's");
            line.trim()
                .strip_prefix(prefix)
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("expected {prefix:?}…, got {line:?}"))
        };
        let addr = line("listening on ");
        let tls_addr = tls.then(|| line("listening for TLS on "));
        let web_addr = web.then(|| line("listening for HTTP on "));
        let web_tls_addr = web_tls.then(|| line("listening for HTTPS on "));
        let metrics_addr = metrics.then(|| line("metrics on "));
        Running {
            child,
            addr,
            tls_addr,
            metrics_addr,
            web_addr,
            web_tls_addr,
            log,
        }
    }

    /// Waits for the next log line that contains `text`, and returns it;
    /// lines before it are passed over.
    pub fn until_logged(&mut self, text: &str) -> String {
        let log = self.log.as_ref().expect("started with Running::logged");
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match log.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(e) => panic!("no log line with {text:?} ({e})"),
            }
        }
    }

    /// Every log line written so far (waits a moment for the last ones).
    pub fn log_lines(&mut self) -> Vec<String> {
        let log = self.log.as_ref().expect("started with Running::logged");
        let mut lines = Vec::new();
        while let Ok(line) = log.recv_timeout(std::time::Duration::from_millis(200)) {
            lines.push(line);
        }
        lines
    }

    /// Stops the server with SIGTERM and returns its exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "the server did not stop");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    pub fn tls_addr(&self) -> SocketAddr {
        self.tls_addr.expect("a TLS listener")
    }

    /// Sends a signal to the server process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill({signal}) failed");
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `chat-server` with `args` expecting it to refuse to start: returns
/// its exit code and what it said on stderr.
pub fn start_fails(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(binary("chat-server"))
        .args(["--addr", "127.0.0.1:0", "--tls-addr", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run chat-server");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains("listening"), "it started: {stdout}");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A TLS client config that trusts exactly `roots`.
pub fn trusting(roots: &[&CertificateDer<'static>]) -> TlsConnector {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add((*root).clone()).expect("a usable root");
    }
    let config = ClientConfig::builder_with_provider(Arc::new(provider::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("protocol versions")
        .with_root_certificates(store)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// A raw line client over TLS that asserts what the server sends.
pub struct TlsClient {
    reader: AsyncBufReader<ReadHalf<TlsStream<TcpStream>>>,
    writer: WriteHalf<TlsStream<TcpStream>>,
    /// The certificate the server presented.
    pub presented: CertificateDer<'static>,
}

impl TlsClient {
    /// Connects and completes the handshake, or returns why it failed.
    pub async fn try_connect(
        addr: SocketAddr,
        connector: &TlsConnector,
    ) -> std::io::Result<TlsClient> {
        let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("connect timed out")?;
        let name = ServerName::try_from("localhost").expect("a server name");
        let stream = tokio::time::timeout(TIMEOUT, connector.connect(name, stream))
            .await
            .expect("handshake timed out")?;
        let presented = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .expect("the server presents a certificate")
            .clone()
            .into_owned();
        let (read, writer) = tokio::io::split(stream);
        Ok(TlsClient {
            reader: AsyncBufReader::new(read),
            writer,
            presented,
        })
    }

    pub async fn connect(addr: SocketAddr, connector: &TlsConnector) -> TlsClient {
        TlsClient::try_connect(addr, connector)
            .await
            .expect("TLS handshake")
    }

    pub async fn send(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("send");
        self.writer.flush().await.expect("flush");
    }

    /// The next line, or `None` at the end of the stream.
    pub async fn try_recv(&mut self) -> Option<String> {
        let mut line = String::new();
        let n = tokio::time::timeout(TIMEOUT, self.reader.read_line(&mut line))
            .await
            .expect("timed out waiting for a line")
            .ok()?;
        if n == 0 {
            return None;
        }
        assert_eq!(line.pop(), Some('\n'), "line without \\n: {line:?}");
        Some(line)
    }

    pub async fn recv(&mut self) -> String {
        self.try_recv()
            .await
            .expect("connection closed, expected a line")
    }

    pub async fn expect(&mut self, line: &str) {
        assert_eq!(self.recv().await, line);
    }

    pub async fn expect_error(&mut self, code: &str) {
        let line = self.recv().await;
        let got = line
            .strip_prefix("ERROR ")
            .and_then(|r| r.split(' ').next());
        assert_eq!(got, Some(code), "expected ERROR {code}, got {line:?}");
    }

    /// Asserts an orderly close next: end of stream, not an error.
    pub async fn expect_closed(&mut self) {
        let mut line = String::new();
        let read = tokio::time::timeout(TIMEOUT, self.reader.read_line(&mut line))
            .await
            .expect("timed out waiting for the connection to close");
        match read {
            Ok(0) => {}
            Ok(_) => panic!("expected the connection to close, got {line:?}"),
            Err(e) => panic!("expected an orderly close (end of stream), got an error: {e}"),
        }
    }

    /// Logs in, consuming `WELCOME` and `NAMES`; returns the names listed.
    pub async fn login(&mut self, name: &str) -> Vec<String> {
        self.send(&format!("NAME {name}")).await;
        self.expect(&format!("WELCOME {name}")).await;
        chat_tests::names_listed(&self.recv().await)
    }
}
