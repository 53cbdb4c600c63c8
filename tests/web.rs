//! The web door end to end: the contract's "The web door" section. The
//! server serves its page over HTTP and the chat as a WebSocket at `/ws`;
//! a tokio-tungstenite client talks to it beside plain TCP users, through
//! the same limits, origins checked, `X-Forwarded-For` believed only from
//! a trusted proxy, and over HTTPS with a certificate made on the spot.

#[path = "support/tls.rs"]
mod support;

use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use chat_tests::{binary, Client, TIMEOUT};
use futures::{SinkExt as _, StreamExt as _};
use support::{start_fails, trusting, Pair, Running, Scratch};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// A server with the web door (and whatever else `extra` asks for).
fn web_server(extra: &[&str]) -> (Running, SocketAddr) {
    let mut args = vec!["--web-addr", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let running = Running::start(&args);
    let web = running.web_addr.expect("the web door");
    (running, web)
}

/// A WebSocket client that asserts what the server sends, one frame per
/// text message.
struct Ws<S> {
    stream: WebSocketStream<S>,
}

/// Opens `/ws` over `stream`, with `headers` added to the upgrade request.
async fn open<S>(stream: S, url: &str, headers: &[(&'static str, &str)]) -> Result<Ws<S>, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut request = url.into_client_request().expect("a request");
    for (name, value) in headers {
        request
            .headers_mut()
            .append(*name, HeaderValue::from_str(value).expect("a header value"));
    }
    let (stream, _) =
        tokio::time::timeout(TIMEOUT, tokio_tungstenite::client_async(request, stream))
            .await
            .expect("the upgrade timed out")?;
    Ok(Ws { stream })
}

/// Connects to the web door from `source` (127.0.0.x) and opens `/ws`.
async fn ws_from(
    web: SocketAddr,
    source: Ipv4Addr,
    headers: &[(&'static str, &str)],
) -> Result<Ws<TcpStream>, WsError> {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(source.into(), 0))
        .expect("bind the source address");
    let stream = socket.connect(web).await.expect("connect");
    open(stream, &format!("ws://{web}/ws"), headers).await
}

/// Connects to the web door and opens `/ws`.
async fn ws(web: SocketAddr) -> Ws<TcpStream> {
    ws_with(web, &[]).await.expect("the upgrade")
}

async fn ws_with(
    web: SocketAddr,
    headers: &[(&'static str, &str)],
) -> Result<Ws<TcpStream>, WsError> {
    let stream = TcpStream::connect(web).await.expect("connect");
    open(stream, &format!("ws://{web}/ws"), headers).await
}

impl<S: AsyncRead + AsyncWrite + Unpin> Ws<S> {
    async fn send(&mut self, text: &str) {
        self.stream
            .send(Message::text(text))
            .await
            .expect("send a message");
    }

    /// The next message that is not a ping or pong, or `None` at the end.
    async fn next(&mut self) -> Option<Message> {
        loop {
            let next = tokio::time::timeout(TIMEOUT, self.stream.next())
                .await
                .expect("timed out waiting for a message");
            match next {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(message)) => return Some(message),
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// The next text message: one frame.
    async fn recv(&mut self) -> String {
        match self.next().await {
            Some(Message::Text(text)) => {
                let text = text.to_string();
                assert!(!text.contains('\n'), "a line ending in {text:?}");
                text
            }
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    async fn expect(&mut self, line: &str) {
        assert_eq!(self.recv().await, line);
    }

    async fn expect_error(&mut self, code: &str) {
        let line = self.recv().await;
        let got = line
            .strip_prefix("ERROR ")
            .and_then(|r| r.split(' ').next());
        assert_eq!(got, Some(code), "expected ERROR {code}, got {line:?}");
    }

    /// Asserts the server closes the WebSocket next, with `code`.
    async fn expect_close(&mut self, code: CloseCode) {
        match self.next().await {
            Some(Message::Close(Some(frame))) => assert_eq!(frame.code, code, "{frame:?}"),
            other => panic!("expected a Close with {code}, got {other:?}"),
        }
    }

    async fn login(&mut self, name: &str) -> Vec<String> {
        self.send(&format!("NAME {name}")).await;
        self.expect(&format!("WELCOME {name}")).await;
        chat_tests::names_listed(&self.recv().await)
    }

    /// Every frame before the answer to a fresh `PING`.
    async fn barrier(&mut self) -> Vec<String> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let token = format!("ws-barrier-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        self.send(&format!("PING {token}")).await;
        let mut before = Vec::new();
        loop {
            let line = self.recv().await;
            if line == format!("PONG {token}") {
                return before;
            }
            before.push(line);
        }
    }
}

/// An HTTP answer, read whole (the request asks for `Connection: close`).
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `method path` with `headers` over `stream` and reads the answer.
async fn request_over<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    // A connection closed at once (refused) may reset the request: that
    // and an empty answer are status 0.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut raw = Vec::new();
    let read = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut raw))
        .await
        .expect("the answer timed out");
    if read.is_err() || raw.is_empty() {
        return Answer {
            status: 0,
            headers: Vec::new(),
            body: Vec::new(),
        };
    }
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a whole head");
    let head = String::from_utf8(raw[..end].to_vec()).expect("an ASCII head");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    }
}

async fn request(web: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let stream = TcpStream::connect(web).await.expect("connect");
    request_over(stream, method, path, headers).await
}

/// A file of the page, as the server must serve it.
fn page_file(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../server/web")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[tokio::test]
async fn the_page_is_served_with_its_type_policy_and_tag() {
    let (_server, web) = web_server(&[]);
    let page = request(web, "GET", "/", &[]).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.body, page_file("index.html"));
    let policy = page.header("content-security-policy").expect("a CSP");
    for rule in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(policy.contains(rule), "{rule} missing from {policy}");
    }
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    let etag = page.header("etag").expect("an ETag").to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");

    let again = request(web, "GET", "/", &[("If-None-Match", &etag)]).await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    let changed = request(web, "GET", "/", &[("If-None-Match", "\"other\"")]).await;
    assert_eq!(changed.status, 200);

    let script = request(web, "GET", "/app.js", &[]).await;
    assert_eq!(script.status, 200);
    assert_eq!(
        script.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(script.body, page_file("app.js"));
    assert_ne!(script.header("etag"), Some(etag.as_str()));
    let style = request(web, "GET", "/style.css", &[]).await;
    assert_eq!(
        style.header("content-type"),
        Some("text/css; charset=utf-8")
    );
    assert_eq!(style.body, page_file("style.css"));

    let head = request(web, "HEAD", "/", &[]).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    let length = page_file("index.html").len().to_string();
    assert_eq!(head.header("content-length"), Some(length.as_str()));

    for missing in ["/favicon.svg", "/nope", "/web/index.html"] {
        let answer = request(web, "GET", missing, &[]).await;
        assert_eq!(answer.status, 404, "{missing}");
        assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
    }
    let post = request(web, "POST", "/", &[("Content-Length", "0")]).await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    let plain_ws = request(web, "GET", "/ws", &[]).await;
    assert_eq!(plain_ws.status, 426, "a GET of /ws that is no upgrade");
}

#[tokio::test]
async fn the_page_is_gzipped_for_a_client_that_takes_it() {
    let (_server, web) = web_server(&[]);
    let plain = request(web, "GET", "/index.html", &[]).await;
    assert_eq!(plain.header("content-encoding"), None);
    let gzipped = request(
        web,
        "GET",
        "/index.html",
        &[("Accept-Encoding", "gzip, br")],
    )
    .await;
    assert_eq!(gzipped.status, 200);
    assert_eq!(gzipped.header("content-encoding"), Some("gzip"));
    assert_eq!(gzipped.header("vary"), Some("accept-encoding"));
    assert!(gzipped.body.len() < plain.body.len());
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&gzipped.body[..])
        .read_to_end(&mut unzipped)
        .expect("gunzip");
    assert_eq!(unzipped, page_file("index.html"));
    let etag = gzipped.header("etag").expect("an ETag");
    assert_ne!(Some(etag), plain.header("etag"), "one tag per encoding");
    let fresh = request(
        web,
        "GET",
        "/index.html",
        &[("Accept-Encoding", "gzip"), ("If-None-Match", etag)],
    )
    .await;
    assert_eq!(fresh.status, 304);
    let refused = request(
        web,
        "GET",
        "/index.html",
        &[("Accept-Encoding", "gzip;q=0")],
    )
    .await;
    assert_eq!(refused.header("content-encoding"), None);
}

#[tokio::test]
async fn a_websocket_user_and_a_tcp_user_share_the_lobby_and_rooms_in_one_order() {
    let (server, web) = web_server(&[]);
    let mut alice = ws(web).await;
    alice.send("PING before").await;
    alice.expect("PONG before").await;
    alice.send("MSG too soon").await;
    alice.expect_error("not-logged-in").await;
    assert_eq!(alice.login("alice").await, ["alice"]);
    let mut bob = Client::connect(server.addr).await;
    assert_eq!(bob.login("bob").await, ["alice", "bob"]);
    alice.expect("JOIN bob").await;
    alice.send("MSG hi  bob ").await;
    bob.send("MSG hello alice").await;
    // One order for both, whatever door.
    let first = alice.recv().await;
    let second = alice.recv().await;
    assert_eq!(bob.recv().await, first);
    assert_eq!(bob.recv().await, second);
    let mut seen = [first, second];
    seen.sort();
    assert_eq!(seen, ["MSG alice hi  bob ", "MSG bob hello alice"]);

    alice.send("JOIN #web").await;
    alice.expect("NAMES #web alice").await;
    bob.send("JOIN #web").await;
    bob.expect("NAMES #web alice bob").await;
    alice.expect("JOIN #web bob").await;
    bob.send("SAY #web from tcp").await;
    alice.send("SAY #web from the browser").await;
    let first = alice.recv().await;
    let second = alice.recv().await;
    assert_eq!(bob.recv().await, first);
    assert_eq!(bob.recv().await, second);
    alice.send("TELL bob psst").await;
    alice.expect("TELL alice bob psst").await;
    bob.expect("TELL alice bob psst").await;
    alice.send("WHO").await;
    alice.expect("NAMES alice bob").await;
    alice.send("LEAVE see you").await;
    alice.expect("BYE").await;
    alice.expect_close(CloseCode::Normal).await;
    bob.expect("LEAVE alice see you").await;
}

#[tokio::test]
async fn a_message_with_a_line_ending_is_bad_text_and_nothing_is_broadcast() {
    let (server, web) = web_server(&[]);
    let mut alice = ws(web).await;
    alice.login("alice").await;
    let mut bob = server_user(&server, "bob").await;
    alice.expect("JOIN bob").await;
    for text in ["MSG one\nMSG two", "MSG one\r", "MSG one\r\n", "\n"] {
        alice.send(text).await;
        alice.expect_error("bad-text").await;
    }
    assert_eq!(alice.barrier().await, Vec::<String>::new());
    bob.expect_quiet().await;
    alice.send("MSG still here").await;
    alice.expect("MSG alice still here").await;
    bob.expect("MSG alice still here").await;
}

async fn server_user(server: &Running, name: &str) -> Client {
    let mut client = Client::connect(server.addr).await;
    client.login(name).await;
    client
}

#[tokio::test]
async fn a_binary_message_closes_the_websocket_with_1003_and_everyone_hears_leave() {
    let (server, web) = web_server(&[]);
    let mut alice = ws(web).await;
    alice.login("alice").await;
    let mut bob = server_user(&server, "bob").await;
    alice.expect("JOIN bob").await;
    alice
        .stream
        .send(Message::binary(b"MSG hi".to_vec()))
        .await
        .expect("send");
    alice.expect_close(CloseCode::Unsupported).await;
    bob.expect("LEAVE alice").await;
    bob.expect_quiet().await;
}

#[tokio::test]
async fn a_message_over_max_line_is_line_too_long_and_a_huge_one_closes() {
    let (server, web) = web_server(&["--max-line", "64"]);
    let mut alice = ws(web).await;
    alice.login("alice").await;
    let mut bob = server_user(&server, "bob").await;
    alice.expect("JOIN bob").await;
    let exactly = format!("MSG {}", "a".repeat(60));
    alice.send(&exactly).await;
    alice.expect(&format!("MSG alice {}", "a".repeat(60))).await;
    bob.expect(&format!("MSG alice {}", "a".repeat(60))).await;
    alice.send(&format!("MSG {}", "b".repeat(61))).await;
    alice.expect_error("line-too-long").await;
    // The connection goes on.
    alice.send("MSG after").await;
    alice.expect("MSG alice after").await;
    bob.expect("MSG alice after").await;
    // Far past the limit, the message cannot be skipped: told, then closed
    // with 1009.
    alice.send(&format!("MSG {}", "c".repeat(100_000))).await;
    alice.expect_error("line-too-long").await;
    alice.expect_close(CloseCode::Size).await;
    bob.expect("LEAVE alice").await;
}

#[tokio::test]
async fn a_closed_websocket_is_a_closed_connection() {
    let (server, web) = web_server(&[]);
    let mut bob = server_user(&server, "bob").await;
    let mut alice = ws(web).await;
    alice.login("alice").await;
    bob.expect("JOIN alice").await;
    alice.stream.close(None).await.expect("close");
    bob.expect("LEAVE alice").await;
    // The TCP connection dropped without a Close frame: the same.
    let mut carol = ws(web).await;
    carol.login("carol").await;
    bob.expect("JOIN carol").await;
    drop(carol);
    bob.expect("LEAVE carol").await;
}

#[tokio::test]
async fn pings_are_answered_with_pongs() {
    let (_server, web) = web_server(&[]);
    let mut alice = ws(web).await;
    alice
        .stream
        .send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .expect("ping");
    let pong = tokio::time::timeout(TIMEOUT, alice.stream.next())
        .await
        .expect("a pong in time");
    match pong {
        Some(Ok(Message::Pong(data))) => assert_eq!(&data[..], b"are you there"),
        other => panic!("expected a pong, got {other:?}"),
    }
    alice.login("alice").await;
}

#[tokio::test]
async fn the_login_timeout_counts_for_a_websocket_too() {
    let (_server, web) = web_server(&["--login-timeout", "500ms"]);
    let mut idle = ws(web).await;
    idle.expect_error("login-timeout").await;
    idle.expect_close(CloseCode::Normal).await;
}

#[tokio::test]
async fn only_the_own_origin_listed_ones_and_none_may_open_the_websocket() {
    let (_server, web) = web_server(&["--web-origin", "https://chat.example.com"]);
    let own = format!("http://{web}");
    // The client's Host is the address it connected to.
    for origin in [
        own.as_str(),
        "https://chat.example.com",
        "HTTPS://Chat.Example.com:443",
    ] {
        let mut allowed = ws_with(web, &[("origin", origin)])
            .await
            .unwrap_or_else(|e| panic!("{origin}: {e}"));
        allowed.send("PING ok").await;
        allowed.expect("PONG ok").await;
    }
    let mut none = ws_with(web, &[]).await.expect("no Origin: not a browser");
    none.send("PING ok").await;
    none.expect("PONG ok").await;
    let other_port = format!("http://{}:{}", web.ip(), web.port() + 1);
    let https_own = format!("https://{web}");
    for origin in [
        "https://evil.example",
        "null",
        other_port.as_str(),
        https_own.as_str(),
    ] {
        match ws_with(web, &[("origin", origin)]).await {
            Err(WsError::Http(answer)) => assert_eq!(answer.status(), 403, "{origin}"),
            Err(e) => panic!("{origin}: expected 403, got {e}"),
            Ok(_) => panic!("{origin}: the upgrade was allowed"),
        }
    }
}

/// Whether a WebSocket from `source` with `X-Forwarded-For: forwarded`
/// is admitted (`PING` answered; kept open) or refused with
/// `too-many-connections`.
async fn forwarded(web: SocketAddr, source: Ipv4Addr, forwarded: &str) -> Option<Ws<TcpStream>> {
    let mut ws = ws_from(web, source, &[("x-forwarded-for", forwarded)])
        .await
        .expect("the upgrade");
    ws.send("PING in").await;
    let line = ws.recv().await;
    if line == "PONG in" {
        return Some(ws);
    }
    assert!(line.starts_with("ERROR too-many-connections"), "{line}");
    ws.expect_close(CloseCode::Normal).await;
    None
}

#[tokio::test]
async fn x_forwarded_for_is_ignored_from_an_untrusted_peer() {
    let (_server, web) = web_server(&[
        "--max-per-ip",
        "1",
        "--limits-on-loopback",
        "--trusted-proxy",
        "127.0.0.2",
    ]);
    let stranger = Ipv4Addr::new(127, 0, 0, 3);
    let _first = forwarded(web, stranger, "198.51.100.1").await.expect("in");
    // Another client address claimed: still the stranger's one place.
    assert!(forwarded(web, stranger, "198.51.100.2").await.is_none());
}

#[tokio::test]
async fn x_forwarded_for_from_a_trusted_proxy_names_the_client() {
    let (_server, web) = web_server(&[
        "--max-per-ip",
        "1",
        "--limits-on-loopback",
        "--trusted-proxy",
        "127.0.0.2",
        "--trusted-proxy",
        "10.0.0.0/8",
    ]);
    let proxy = Ipv4Addr::new(127, 0, 0, 2);
    let _one = forwarded(web, proxy, "198.51.100.1").await.expect("in");
    let _two = forwarded(web, proxy, "198.51.100.2, 10.1.2.3")
        .await
        .expect("another client behind two proxies");
    assert!(
        forwarded(web, proxy, "198.51.100.1").await.is_none(),
        "the first client's second connection"
    );
    assert!(
        forwarded(web, proxy, "203.0.113.9, 198.51.100.1")
            .await
            .is_none(),
        "what the client wrote itself, left of the proxy's entry, is not believed"
    );
}

#[tokio::test]
async fn a_ban_follows_the_forwarded_address() {
    let (server, web) = web_server(&[
        "--trusted-proxy",
        "127.0.0.2",
        "--limits-on-loopback",
        "--operator",
        "op",
    ]);
    let mut op = server_user(&server, "op").await;
    assert_eq!(op.request("REGISTER hunter22").await, ["REGISTERED op"]);
    op.send("LEAVE").await;
    op.expect("BYE").await;
    let mut op = Client::connect(server.addr).await;
    op.send("NAME op hunter22").await;
    op.expect("WELCOME op").await;
    op.expect_prefix("NAMES").await;
    let proxy = Ipv4Addr::new(127, 0, 0, 2);
    let behind = |client: &'static str| async move {
        ws_from(web, proxy, &[("x-forwarded-for", client)]).await
    };
    let mut mallory = behind("198.51.100.66").await.expect("in");
    mallory.login("mallory").await;
    op.expect("JOIN mallory").await;
    assert_eq!(
        op.request("BAN mallory 1h spam").await,
        ["LEAVE mallory", "OK BAN mallory"]
    );
    mallory.expect_error("banned").await;
    mallory.expect_close(CloseCode::Normal).await;
    // The client's address is banned, whatever name it comes back with...
    let mut again = behind("198.51.100.66").await.expect("the upgrade");
    again.expect_error("banned").await;
    again.expect_close(CloseCode::Normal).await;
    // ...and not the proxy's: another client behind it is let in.
    let mut other = behind("198.51.100.67").await.expect("in");
    other.login("other").await;
}

#[tokio::test]
async fn websockets_count_toward_max_clients_like_any_connection() {
    let (server, web) = web_server(&["--max-clients", "2"]);
    let mut bob = server_user(&server, "bob").await;
    let mut alice = ws(web).await;
    alice.login("alice").await;
    bob.expect("JOIN alice").await;
    let mut third = ws(web).await;
    third.expect_error("server-full").await;
    third.expect_close(CloseCode::Normal).await;
    let mut tcp = Client::connect(server.addr).await;
    tcp.expect_error("server-full").await;
    tcp.expect_closed().await;
    // A page load is not a chat connection: it is served.
    assert_eq!(request(web, "GET", "/", &[]).await.status, 200);
}

#[tokio::test]
async fn the_https_door_serves_the_page_and_the_chat_with_the_certificate() {
    let scratch = Scratch::new("web-tls");
    let pair = Pair::generate();
    let (cert, key) = pair.write(&scratch.0);
    let running = Running::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--web-tls-addr",
        "127.0.0.1:0",
    ]);
    let web_tls = running.web_tls_addr.expect("the HTTPS door");
    let connector = trusting(&[&pair.der]);
    let tls = |connector: tokio_rustls::TlsConnector| async move {
        let stream = TcpStream::connect(web_tls).await.expect("connect");
        let name = ServerName::try_from("localhost").expect("a name");
        connector
            .connect(name, stream)
            .await
            .expect("TLS handshake")
    };
    let page = request_over(tls(connector.clone()).await, "GET", "/", &[]).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.body, page_file("index.html"));
    let own = format!("https://localhost:{}", web_tls.port());
    let mut alice = open(
        tls(connector.clone()).await,
        &format!("wss://localhost:{}/ws", web_tls.port()),
        &[("origin", &own)],
    )
    .await
    .expect("the upgrade over TLS");
    alice.login("alice").await;
    let mut bob = Client::connect(running.addr).await;
    bob.login("bob").await;
    alice.expect("JOIN bob").await;
    alice.send("MSG over wss").await;
    alice.expect("MSG alice over wss").await;
    bob.expect("MSG alice over wss").await;
    // A plain-HTTP origin is not this door's own.
    let plain_origin = format!("http://localhost:{}", web_tls.port());
    match open(
        tls(connector).await,
        &format!("wss://localhost:{}/ws", web_tls.port()),
        &[("origin", &plain_origin)],
    )
    .await
    {
        Err(WsError::Http(answer)) => assert_eq!(answer.status(), 403),
        Err(e) => panic!("expected 403, got {e}"),
        Ok(_) => panic!("an http origin opened the wss door"),
    }
}

/// A TCP connection to the web door from `source`, sending nothing.
async fn idle_from(web: SocketAddr, source: Ipv4Addr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(source.into(), 0))
        .expect("bind the source address");
    socket.connect(web).await.expect("connect")
}

#[tokio::test]
async fn one_address_holds_at_most_16_http_connections_and_a_trusted_proxy_more() {
    let (_server, web) = web_server(&["--limits-on-loopback", "--trusted-proxy", "127.0.0.6"]);
    let greedy = Ipv4Addr::new(127, 0, 0, 4);
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(idle_from(web, greedy).await);
    }
    // Served in turn, so all 16 are counted before the 17th is accepted.
    let page = request_over(idle_from(web, greedy).await, "GET", "/", &[]).await;
    assert_eq!(page.status, 0, "the 17th was answered");
    let other = idle_from(web, Ipv4Addr::new(127, 0, 0, 5)).await;
    assert_eq!(request_over(other, "GET", "/", &[]).await.status, 200);
    let proxy = Ipv4Addr::new(127, 0, 0, 6);
    for _ in 0..16 {
        held.push(idle_from(web, proxy).await);
    }
    let behind = idle_from(web, proxy).await;
    assert_eq!(request_over(behind, "GET", "/", &[]).await.status, 200);
}

#[tokio::test]
async fn a_stopping_server_tells_websocket_users_and_closes() {
    let (mut server, web) = web_server(&[]);
    let mut alice = ws(web).await;
    alice.login("alice").await;
    server.signal(libc::SIGTERM);
    alice.expect_error("shutting-down").await;
    alice.expect_close(CloseCode::Normal).await;
    assert!(server.stop().success());
}

#[tokio::test]
async fn the_web_doors_count_in_the_metrics_by_door() {
    let (server, web) = web_server(&["--metrics", "127.0.0.1:0"]);
    let mut alice = ws(web).await;
    alice.login("alice").await;
    let metrics = server.metrics_addr.expect("metrics");
    let text = String::from_utf8(request(metrics, "GET", "/metrics", &[]).await.body).unwrap();
    assert!(
        text.contains("chat_connections_open{listener=\"web\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("chat_connections_open{listener=\"plain\"} 0"),
        "{text}"
    );
}

#[test]
fn print_config_shows_the_web_options() {
    let output = Command::new(binary("chat-server"))
        .args([
            "--web-addr",
            "127.0.0.1:8080",
            "--web-tls-addr",
            "0.0.0.0:8444",
            "--web-origin",
            "HTTPS://Chat.Example.com",
            "--trusted-proxy",
            "10.1.2.3/8",
            "--trusted-proxy",
            "127.0.0.1",
            "--print-config",
        ])
        .output()
        .expect("run chat-server");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{printed}");
    for line in [
        "web-addr = \"127.0.0.1:8080\"",
        "web-tls-addr = \"0.0.0.0:8444\"",
        "web-origins = [\"https://chat.example.com\"]",
        "trusted-proxies = [\"10.0.0.0/8\", \"127.0.0.1\"]",
    ] {
        assert!(printed.contains(line), "{line} missing:\n{printed}");
    }
}

#[test]
fn bad_web_options_stop_the_server_with_a_clear_message() {
    let cases: [(&[&str], &str); 5] = [
        (&["--web-addr", "8080"], "--web-addr needs host:port"),
        (
            &["--web-tls-addr", "nowhere"],
            "--web-tls-addr needs host:port",
        ),
        (
            &["--web-tls-addr", "127.0.0.1:0"],
            "--tls-cert and --tls-key",
        ),
        (&["--web-origin", "chat.example.com"], "is not an origin"),
        (&["--trusted-proxy", "10.0.0.0/40"], "CIDR"),
    ];
    for (args, wanted) in cases {
        let (code, stderr) = start_fails(args);
        assert!(matches!(code, Some(c) if c != 0), "{args:?}: {code:?}");
        assert!(stderr.contains(wanted), "{args:?}: {stderr}");
    }
    let (code, stderr) = start_fails(&["--web-addr", "192.0.2.1:1"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("--web-addr"), "{stderr}");
}
