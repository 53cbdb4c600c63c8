//! A WebSocket as one more kind of [`Connection`]: the session reads
//! frames from [`Frames`] and writes its encoded lines to [`Output`], as
//! over TCP, and never learns the difference.
//!
//! - In: each text message is one frame, without a line ending. One that
//!   holds a line ending is `bad-text`; one over `--max-line` is
//!   `line-too-long`; both leave the connection open. tungstenite refuses
//!   messages over [`message_limit`] before buffering them: the client is
//!   told `line-too-long` and the WebSocket is closed with 1009, since the
//!   rest of such a message cannot be skipped. Text that is not UTF-8 is
//!   `invalid-utf8` and closes with 1007, as RFC 6455 says. A binary
//!   message closes with 1003. Pings are answered by tungstenite; control
//!   frames never reach the session's flood control, so they have an
//!   allowance of their own ([`CONTROL_BURST`], then one every
//!   [`CONTROL_EVERY`]): beyond it the socket is not read until the next
//!   one is due, as flood control delays frames.
//! - Out: every `\n`-ended line becomes one text message. The frames are
//!   built here, straight from the session's queue, into a buffer that is
//!   let go once written: tungstenite's own write buffer never gives its
//!   memory back, and an idle user would keep the largest burst it was
//!   ever sent. Control frames (pongs, the close) still go through
//!   tungstenite; [`Wire`] keeps the two from interleaving.
//! - The session's close (flush, half-close) becomes a Close frame; its
//!   wait for the client to go becomes the wait for the client's Close.

use std::io;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use chat_protocol::{ClientFrame, ErrorCode, Rejection};
use futures::{Future, Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::session::{Connection, Incoming};

/// Bytes tungstenite reads from the socket at a time, and what its read
/// buffer starts with: a chat frame fits, and an idle user keeps no more.
const READ_BUFFER: usize = 512;
/// Bytes of the session's lines framed in one write (at least one line);
/// what [`Wire`] holds while the socket takes them.
const WRITE_BATCH: usize = 16 * 1024;

/// Control frames (pings, pongs) a client may send at once; a browser
/// sends none, and the page keeps alive with the protocol's `PING`.
const CONTROL_BURST: u32 = 8;
/// Then one control frame per this long.
const CONTROL_EVERY: Duration = Duration::from_millis(250);

/// The largest message tungstenite reads whole: twice `--max-line` (so a
/// message a little too long is told `line-too-long` and the connection
/// goes on, as a long line does over TCP), and never less than 4 KiB.
/// Past it tungstenite stops before buffering the message.
pub fn message_limit(max_line: usize) -> usize {
    (2 * max_line).max(4096)
}

/// A WebSocket's connection for a session, over `io` (the upgraded HTTP
/// connection), whose socket is `socket`.
pub async fn connection<S>(
    io: S,
    socket: RawFd,
    max_line: usize,
) -> Connection<Frames<S>, Output<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let limit = message_limit(max_line);
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        // Only control frames go through tungstenite's writer: they go out
        // at once, and its buffer stays as small as they are.
        .write_buffer_size(0)
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    let wire = Wire {
        io,
        framed: BytesMut::new(),
    };
    let ws = WebSocketStream::from_raw_socket(wire, Role::Server, Some(config)).await;
    let shared = Arc::new(Mutex::new(Shared {
        ws,
        max_line,
        reading: Reading::Open,
        close_code: CloseCode::Normal,
        peer_closed: false,
        close_sent: false,
        controls: Controls::new(),
    }));
    Connection {
        frames: Frames(shared.clone()),
        output: Output(shared),
        socket,
    }
}

/// What both halves of the connection share. Only the session's own task
/// polls either, so the lock is never contended.
struct Shared<S> {
    ws: WebSocketStream<Wire<S>>,
    max_line: usize,
    reading: Reading,
    /// The code of the Close frame the server sends.
    close_code: CloseCode,
    /// The client sent a Close: nothing more can be sent but the reply.
    peer_closed: bool,
    /// The server sent its Close: nothing more is sent.
    close_sent: bool,
    controls: Controls,
}

/// The client's allowance of control frames.
struct Controls {
    left: u32,
    /// When `left` was last brought up to date.
    since: Instant,
    /// While the allowance is spent: the wait until the next is due, which
    /// reading waits for. Only a client that overspends ever has one.
    pause: Option<Pin<Box<Sleep>>>,
}

impl Controls {
    fn new() -> Self {
        Controls {
            left: CONTROL_BURST,
            since: Instant::now(),
            pause: None,
        }
    }

    /// Spends one control frame; if none was left, reading pauses until
    /// the next is due.
    fn spend(&mut self) {
        let now = Instant::now();
        let earned = (now - self.since).as_millis() / CONTROL_EVERY.as_millis();
        let earned = earned.min(u128::from(CONTROL_BURST)) as u32;
        self.left = (self.left + earned).min(CONTROL_BURST);
        self.since = match self.left {
            CONTROL_BURST => now,
            _ => self.since + CONTROL_EVERY * earned,
        };
        match self.left {
            // This one takes the next that comes due, and reading waits
            // for it.
            0 => {
                self.since += CONTROL_EVERY;
                self.pause = Some(Box::pin(tokio::time::sleep_until(self.since)));
            }
            _ => self.left -= 1,
        }
    }

    /// Ready when reading may go on.
    fn poll_pause(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(pause) = &mut self.pause {
            ready!(pause.as_mut().poll(cx));
            self.pause = None;
        }
        Poll::Ready(())
    }
}

enum Reading {
    Open,
    /// One more frame was owed before the end (a `line-too-long` before
    /// the close of an oversized message): the next poll ends the stream.
    Ending,
    /// The session saw the end; what comes now is read and thrown away
    /// until the client closes.
    Draining,
}

fn lock<S>(shared: &Mutex<Shared<S>>) -> MutexGuard<'_, Shared<S>> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// The client's frames, one per text message.
pub struct Frames<S>(Arc<Mutex<Shared<S>>>);

/// Where the session's encoded lines go, one text message each.
pub struct Output<S>(Arc<Mutex<Shared<S>>>);

/// A text message as the session's frame: one frame, without a line
/// ending, of at most `max_line` bytes.
fn frame(text: &str, max_line: usize) -> Result<ClientFrame, Rejection> {
    if text.contains(['\n', '\r']) {
        return Err(Rejection::new(
            ErrorCode::BadText,
            None,
            "a WebSocket message is one frame, without a line ending",
        ));
    }
    if text.len() > max_line {
        return Err(Rejection::line_too_long(max_line));
    }
    ClientFrame::parse(text)
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for Frames<S> {
    type Item = Incoming;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Incoming>> {
        let mut guard = lock(&self.0);
        let shared = &mut *guard;
        loop {
            match shared.reading {
                Reading::Open => {}
                Reading::Ending => {
                    shared.reading = Reading::Draining;
                    return Poll::Ready(None);
                }
                Reading::Draining => return shared.poll_drain(cx),
            }
            ready!(shared.controls.poll_pause(cx));
            let message = match ready!(Pin::new(&mut shared.ws).poll_next(cx)) {
                None => return Poll::Ready(None),
                Some(Ok(message)) => message,
                Some(Err(e)) => return Poll::Ready(shared.failed(e)),
            };
            match message {
                Message::Text(text) => {
                    return Poll::Ready(Some(Ok(frame(text.as_str(), shared.max_line))))
                }
                Message::Binary(_) => {
                    shared.close_code = CloseCode::Unsupported;
                    shared.reading = Reading::Draining;
                    return Poll::Ready(None);
                }
                Message::Close(_) => {
                    shared.peer_closed = true;
                    shared.reading = Reading::Draining;
                    return Poll::Ready(None);
                }
                // tungstenite has queued the pong; it goes out before its
                // next read, or with the session's next write.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => shared.controls.spend(),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Shared<S> {
    /// What a read error means for the session: an oversized or non-UTF-8
    /// message is told as over TCP, then the WebSocket closes (it cannot
    /// be read past); anything else ends the connection.
    fn failed(&mut self, error: WsError) -> Option<Incoming> {
        let (rejection, code) = match error {
            WsError::ConnectionClosed | WsError::AlreadyClosed => return None,
            WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
                (Rejection::line_too_long(self.max_line), CloseCode::Size)
            }
            WsError::Utf8(_) => (Rejection::invalid_utf8(), CloseCode::Invalid),
            WsError::Io(e) => return Some(Err(e)),
            other => return Some(Err(io::Error::other(other))),
        };
        self.close_code = code;
        self.reading = Reading::Ending;
        Some(Ok(Err(rejection)))
    }

    /// Reads and throws away what the client still sends until it closes:
    /// through tungstenite while it parses (the client's Close, and the
    /// reply to it, go by it), then from the socket itself (after an
    /// oversized message tungstenite cannot read on). Closing with input
    /// unread would make the kernel reset the connection, which can
    /// destroy the last frames before the client reads them.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<Option<Incoming>> {
        while let Some(Ok(_)) = ready!(Pin::new(&mut self.ws).poll_next(cx)) {}
        let io = &mut self.ws.get_mut().io;
        let mut scratch = [0; 256];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match ready!(Pin::new(&mut *io).poll_read(cx, &mut buf)) {
                Ok(()) if !buf.filled().is_empty() => {}
                _ => return Poll::Ready(None),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Output<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut shared = lock(&self.0);
        if shared.close_sent || shared.peer_closed {
            // Nobody left to tell.
            return Poll::Ready(Ok(buf.len()));
        }
        // Control frames and the rest of earlier lines go first; until they
        // are out, the socket takes nothing new.
        ready!(Pin::new(&mut shared.ws).poll_flush(cx)).map_err(ws_io)?;
        let wire = shared.ws.get_mut();
        let mut taken = 0;
        while taken < buf.len() && wire.framed.len() < WRITE_BATCH {
            let rest = &buf[taken..];
            let line = match rest.iter().position(|&b| b == b'\n') {
                Some(end) => &rest[..end],
                // The session queues whole lines; a tail without its end
                // would only come from a bug, and is sent as it is.
                None => rest,
            };
            put_text_frame(&mut wire.framed, line);
            taken += (line.len() + 1).min(rest.len());
        }
        if let Poll::Ready(Err(e)) = wire.poll_write_framed(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(taken))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut shared = lock(&self.0);
        Pin::new(&mut shared.ws).poll_flush(cx).map_err(ws_io)
    }

    /// Sends the Close frame (1000, or the code a protocol error called
    /// for) once, and flushes it; the socket closes when the session ends.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut guard = lock(&self.0);
        let shared = &mut *guard;
        if !shared.close_sent {
            if !shared.peer_closed {
                ready!(Pin::new(&mut shared.ws).poll_ready(cx)).map_err(ws_io)?;
                let close = CloseFrame {
                    code: shared.close_code,
                    reason: "".into(),
                };
                Pin::new(&mut shared.ws)
                    .start_send(Message::Close(Some(close)))
                    .map_err(ws_io)?;
            }
            shared.close_sent = true;
        }
        Pin::new(&mut shared.ws).poll_flush(cx).map_err(ws_io)
    }
}

fn ws_io(error: WsError) -> io::Error {
    match error {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => io::ErrorKind::BrokenPipe.into(),
        other => io::Error::other(other),
    }
}

/// A server's text frame: final, unmasked, `payload` as it is (the
/// session's lines are UTF-8).
fn put_text_frame(out: &mut BytesMut, payload: &[u8]) {
    const FIN_TEXT: u8 = 0x81;
    out.reserve(payload.len() + 10);
    out.put_u8(FIN_TEXT);
    match payload.len() {
        len @ 0..=125 => out.put_u8(len as u8),
        len @ 126..=0xffff => {
            out.put_u8(126);
            out.put_u16(len as u16);
        }
        len => {
            out.put_u8(127);
            out.put_u64(len as u64);
        }
    }
    out.put_slice(payload);
}

/// The socket under tungstenite, with the data frames built by [`Output`]
/// waiting ahead of anything tungstenite writes: a pong must not land in
/// the middle of a frame the socket took only half of.
pub struct Wire<S> {
    io: S,
    /// Data frames not yet written.
    framed: BytesMut,
}

impl<S: AsyncWrite + Unpin> Wire<S> {
    /// Writes the data frames waiting; ready once they are all out.
    fn poll_write_framed(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.framed.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.framed))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.framed.advance(n);
        }
        // Let go of the buffer once it is written: after `advance` its
        // capacity says nothing of the allocation behind it, which is as
        // large as the largest batch, and an idle user should keep none.
        if self.framed.capacity() != 0 {
            self.framed = BytesMut::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Wire<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Wire<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let wire = self.get_mut();
        ready!(wire.poll_write_framed(cx))?;
        Pin::new(&mut wire.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let wire = self.get_mut();
        ready!(wire.poll_write_framed(cx))?;
        Pin::new(&mut wire.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let wire = self.get_mut();
        ready!(wire.poll_write_framed(cx))?;
        Pin::new(&mut wire.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    use futures::{SinkExt as _, StreamExt as _};
    use tokio::io::DuplexStream;
    use tokio_util::sync::CancellationToken;

    /// The server's side as a session sees it, and a client's WebSocket.
    async fn pair(
        max_line: usize,
    ) -> (
        Connection<Frames<DuplexStream>, Output<DuplexStream>>,
        WebSocketStream<DuplexStream>,
    ) {
        let (server, client) = tokio::io::duplex(64 * 1024);
        let connection = connection(server, -1, max_line).await;
        let client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        (connection, client)
    }

    async fn next_text(client: &mut WebSocketStream<DuplexStream>) -> String {
        match client.next().await {
            Some(Ok(Message::Text(text))) => text.to_string(),
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn each_line_is_one_text_message_and_each_message_one_frame() {
        use tokio::io::AsyncWriteExt as _;
        let (mut connection, mut client) = pair(16).await;
        let long = "x".repeat(70_000);
        let lines = format!("WELCOME alice\nNAMES alice bob\n\nMSG bob {long}\n");
        // Written while the client reads: more than the pipe holds.
        let write = async {
            connection.output.write_all(lines.as_bytes()).await.unwrap();
            connection.output.flush().await.unwrap();
        };
        let read = async {
            assert_eq!(next_text(&mut client).await, "WELCOME alice");
            assert_eq!(next_text(&mut client).await, "NAMES alice bob");
            assert_eq!(next_text(&mut client).await, "");
            assert_eq!(next_text(&mut client).await, format!("MSG bob {long}"));
        };
        tokio::join!(write, read);

        for (sent, wanted) in [
            ("PING t", Ok(ClientFrame::Ping(Some("t".into())))),
            ("MSG a\nMSG b", Err(ErrorCode::BadText)),
            ("PING t\r", Err(ErrorCode::BadText)),
            ("MSG 0123456789abc", Err(ErrorCode::LineTooLong)),
        ] {
            client.send(Message::text(sent)).await.unwrap();
            let got = connection.frames.next().await.unwrap().unwrap();
            assert_eq!(got.map_err(|r| r.code), wanted, "{sent:?}");
        }
    }

    /// Pings beyond the allowance are not read until they are due, so a
    /// ping flood costs what flood control lets a frame flood cost.
    #[tokio::test(start_paused = true)]
    async fn control_frames_past_their_allowance_wait() {
        let (mut connection, mut client) = pair(4096).await;
        let extra = 4;
        for _ in 0..CONTROL_BURST + extra {
            client.send(Message::Ping(vec![1].into())).await.unwrap();
        }
        client.send(Message::text("PING after")).await.unwrap();
        let started = Instant::now();
        let got = connection.frames.next().await.unwrap().unwrap();
        assert_eq!(got, Ok(ClientFrame::Ping(Some("after".into()))));
        let waited = started.elapsed();
        assert!(
            waited >= CONTROL_EVERY * extra && waited < CONTROL_EVERY * (extra + 2),
            "{} pings past the allowance waited {waited:?}",
            extra
        );
    }

    #[tokio::test]
    async fn a_binary_message_ends_the_frames_and_the_close_says_1003() {
        use tokio::io::AsyncWriteExt as _;
        let (mut connection, mut client) = pair(4096).await;
        client.send(Message::binary(vec![1, 2, 3])).await.unwrap();
        assert!(connection.frames.next().await.is_none());
        connection.output.write_all(b"BYE\n").await.unwrap();
        connection.output.shutdown().await.unwrap();
        assert_eq!(next_text(&mut client).await, "BYE");
        match client.next().await {
            Some(Ok(Message::Close(Some(close)))) => assert_eq!(close.code, CloseCode::Unsupported),
            other => panic!("expected a Close, got {other:?}"),
        }
        // The client's reply completes the close; the frames end there.
        drop(client);
        assert!(connection.frames.next().await.is_none());
    }

    /// What an idle WebSocket user's session costs in its task: the
    /// connection's halves are a pointer each, so it is the TCP
    /// session's size (`session::tests::the_session_future_stays_small`).
    #[tokio::test]
    async fn the_websocket_session_future_stays_small() {
        let (hub, _requests) = crate::session::tests::small_hub();
        let (connection, _client) = pair(4096).await;
        let shared = std::mem::size_of::<Shared<tokio::io::DuplexStream>>();
        println!("the WebSocket's shared state: {shared} bytes");
        let session = crate::session::run(
            connection,
            "127.0.0.1:1".parse().unwrap(),
            hub,
            Arc::new(Config::default()),
            CancellationToken::new(),
        );
        let size = std::mem::size_of_val(&session);
        println!("WebSocket session future: {size} bytes");
        assert!(size <= 2048, "the session future grew to {size} bytes");
    }
}
