//! How the bench's users reach the server: over TCP, one protocol line per
//! line (the server's `--addr`), or over a WebSocket on its web door
//! (`--web-addr`, `ws://<addr>/ws`), one protocol frame per text message
//! without its line ending, both ways (PROTOCOL.md, "The web door").
//!
//! The worker speaks lines either way: a [`Writer`] takes the same bytes a
//! TCP connection would be given and sends each line as one message, and
//! [`poll_lines`] turns every message a WebSocket already has into a line
//! of one buffer, so that the worker parses a batch of them at once, as it
//! does a TCP read. The WebSocket is the server's own library,
//! `tokio-tungstenite`, as a client; after the handshake, reading a message
//! does not allocate (its payload is a slice of the connection's read
//! buffer, handed back before the next read).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use clap::ValueEnum;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, Stream, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

/// How the bench's users connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Transport {
    /// A TCP connection to the server's `--addr`, lines as they are.
    #[default]
    Tcp,
    /// A WebSocket to `ws://<web-addr>/ws`, one text message per line.
    Ws,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Ws => "ws",
        }
    }
}

/// The path the server serves its WebSocket at.
pub const WS_PATH: &str = "/ws";

/// Bytes a WebSocket reads from its socket at once. tungstenite allocates
/// (and on each read, zeroes) this much per connection: 5 000 users of one
/// worker hold 40 MiB. A TCP user shares the worker's one 256 KiB buffer
/// instead; at the server's batches of 40-byte frames, 8 KiB is still about
/// 200 messages a read.
const READ_BUFFER: usize = 8 * 1024;

/// Lines [`poll_lines`] gathers at most before handing them over: one TCP
/// read's worth.
pub const BATCH_LIMIT: usize = 256 * 1024;

type WsStream = WebSocketStream<TcpStream>;

/// The receiving half of a user's WebSocket.
pub type WsReader = SplitStream<WsStream>;

/// The WebSocket settings of a bench user.
fn config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(READ_BUFFER)
}

/// Upgrades `stream`, connected to the server's web door at `addr`, to a
/// WebSocket on [`WS_PATH`]; returns its two halves. No `Origin`: the
/// bench is not a browser, which the server lets in.
pub async fn handshake(stream: TcpStream, addr: &str) -> io::Result<(Writer, Reader)> {
    let url = format!("ws://{addr}{WS_PATH}");
    let (socket, _response) =
        tokio_tungstenite::client_async_with_config(url.as_str(), stream, Some(config()))
            .await
            .map_err(|e| io::Error::other(format!("WebSocket handshake with {url}: {e}")))?;
    let (sink, stream) = socket.split();
    Ok((Writer::Ws(sink), Reader::Ws(stream)))
}

/// The sending half of a user's connection.
pub enum Writer {
    Tcp(OwnedWriteHalf),
    Ws(SplitSink<WsStream, Message>),
}

impl Writer {
    /// Sends `lines`, each ending in `\n`: as they are over TCP; over a
    /// WebSocket, each as one text message without its `\n`, all written
    /// with one flush.
    pub async fn write_all(&mut self, lines: &[u8]) -> io::Result<()> {
        match self {
            Writer::Tcp(write) => write.write_all(lines).await,
            Writer::Ws(sink) => {
                let mut start = 0;
                for end in memchr::memchr_iter(b'\n', lines) {
                    let line = std::str::from_utf8(&lines[start..end])
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    start = end + 1;
                    sink.feed(Message::text(line)).await.map_err(ws_error)?;
                }
                sink.flush().await.map_err(ws_error)
            }
        }
    }
}

/// The receiving half of a user's connection.
pub enum Reader {
    Tcp(OwnedReadHalf),
    Ws(WsReader),
}

/// What [`poll_lines`] found after the lines it gathered.
#[derive(Debug)]
pub enum Batch {
    /// The connection is still open: ask again.
    More,
    /// The server closed the WebSocket (`None`), or it failed.
    End(Option<io::Error>),
}

/// Appends every message `stream` already has to `out`, each as a line
/// ending in `\n`, up to about [`BATCH_LIMIT`] bytes; pending only while
/// there is none and the WebSocket is open. A ping is answered by
/// tungstenite; a binary message is not the protocol's and ends it.
pub fn poll_lines(stream: &mut WsReader, cx: &mut Context<'_>, out: &mut Vec<u8>) -> Poll<Batch> {
    loop {
        if out.len() >= BATCH_LIMIT {
            return Poll::Ready(Batch::More);
        }
        match Pin::new(&mut *stream).poll_next(cx) {
            Poll::Ready(Some(Ok(Message::Text(text)))) => {
                out.extend_from_slice(text.as_bytes());
                out.push(b'\n');
            }
            Poll::Ready(Some(Ok(Message::Binary(_)))) => {
                return Poll::Ready(Batch::End(Some(io::Error::other(
                    "the server sent a binary WebSocket message",
                ))))
            }
            Poll::Ready(Some(Ok(Message::Close(_)))) | Poll::Ready(None) => {
                return Poll::Ready(Batch::End(None))
            }
            Poll::Ready(Some(Ok(_))) => {}
            Poll::Ready(Some(Err(
                tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed,
            ))) => return Poll::Ready(Batch::End(None)),
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Batch::End(Some(ws_error(e)))),
            Poll::Pending if out.is_empty() => return Poll::Pending,
            Poll::Pending => return Poll::Ready(Batch::More),
        }
    }
}

fn ws_error(e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => e,
        e => io::Error::other(format!("WebSocket: {e}")),
    }
}

/// For the unit tests: a stream's next message, as a line.
#[cfg(test)]
async fn next_lines(stream: &mut WsReader) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let batch = std::future::poll_fn(|cx| poll_lines(stream, cx, &mut out)).await;
    (out, matches!(batch, Batch::More))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server's end (tokio-tungstenite, as `chat-server` uses it) and a
    /// bench user's, over loopback.
    async fn pair() -> (WsStream, Writer, Reader) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = async {
            let (stream, _) = listener.accept().await.unwrap();
            tokio_tungstenite::accept_async(stream).await.unwrap()
        };
        let client = async {
            let stream = TcpStream::connect(&addr).await.unwrap();
            handshake(stream, &addr).await.unwrap()
        };
        let (server, (writer, reader)) = tokio::join!(server, client);
        (server, writer, reader)
    }

    #[tokio::test]
    async fn each_line_is_one_text_message_without_its_line_ending() {
        let (mut server, mut writer, _reader) = pair().await;
        writer.write_all(b"NAME b1\nMSG m 1 2 3\n").await.unwrap();
        for want in ["NAME b1", "MSG m 1 2 3"] {
            match server.next().await.unwrap().unwrap() {
                Message::Text(text) => assert_eq!(text.as_str(), want),
                other => panic!("not a text: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn the_messages_at_hand_come_as_one_batch_of_lines() {
        let (mut server, _writer, reader) = pair().await;
        let Reader::Ws(mut reader) = reader else {
            unreachable!("a WebSocket")
        };
        for text in ["WELCOME b1", "NAMES b1", "MSG b0 m 0 0 5"] {
            server.feed(Message::text(text)).await.unwrap();
        }
        server.flush().await.unwrap();
        let want = b"WELCOME b1\nNAMES b1\nMSG b0 m 0 0 5\n";
        let mut seen = Vec::new();
        while seen.len() < want.len() {
            let (lines, open) = next_lines(&mut reader).await;
            assert!(open);
            seen.extend(lines);
        }
        assert_eq!(seen, want);
        server.close(None).await.unwrap();
        let (lines, open) = next_lines(&mut reader).await;
        assert!(lines.is_empty() && !open, "a close ends the batch");
    }
}
