//! What a session needs of a connection, whatever door it came through:
//! decoded frames in, encoded lines out, and the socket under both.
//!
//! TCP and TLS give a byte stream, read as lines by the protocol's codec
//! ([`Lines`]); another kind of connection (a WebSocket, whose messages are
//! frames already) needs only its own stream of frames and a writer.

use std::io;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use chat_protocol::{ClientFrame, Rejection, ServerCodec};
use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::FramedRead;

use super::CLOSE_GRACE;

/// One frame from a client: a request, or why its line was refused.
pub type Incoming = io::Result<Result<ClientFrame, Rejection>>;

/// A connection to serve.
pub struct Connection<I, W> {
    /// The client's frames, in the order sent; ends when the client closes.
    pub frames: I,
    /// Where encoded lines go.
    pub output: W,
    /// The socket underneath, asked directly whether the client still
    /// reads before it is skipped (see the inbox).
    pub socket: RawFd,
}

/// Read buffer a connection starts with; it doubles for long lines. A
/// login fits, and an idle user keeps no more.
const READ_BUFFER_START: usize = 64;
/// An empty read buffer larger than this is released, after a long line.
const READ_KEEP: usize = 4 * 1024;

impl<R: AsyncRead, W: AsyncWrite> Connection<Lines<R>, W> {
    /// A byte stream's connection (TCP, TLS): lines of at most `max_line`
    /// bytes.
    pub fn lines(read: R, write: W, socket: RawFd, max_line: usize) -> Self {
        Connection {
            frames: Lines(FramedRead::with_capacity(
                read,
                ServerCodec::new(max_line),
                READ_BUFFER_START,
            )),
            output: write,
            socket,
        }
    }
}

/// A byte stream read as the protocol's lines. After a long line its
/// buffer is given back, so an idle user does not keep it.
pub struct Lines<R>(FramedRead<R, ServerCodec>);

impl<R: AsyncRead + Unpin> Stream for Lines<R> {
    type Item = Incoming;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Incoming>> {
        let framed = &mut self.get_mut().0;
        let polled = framed.poll_next_unpin(cx);
        if polled.is_ready() {
            let buffer = framed.read_buffer_mut();
            if buffer.is_empty() && buffer.capacity() > READ_KEEP {
                *buffer = BytesMut::with_capacity(READ_BUFFER_START);
            }
        }
        polled
    }
}

/// Flushes what is queued, half-closes, and reads until the client closes
/// too (within [`CLOSE_GRACE`]). Closing with unread input would make the
/// kernel send a reset, which can destroy the last frames before the client
/// reads them.
pub(super) async fn close<I, W>(frames: &mut I, output: &mut W, queue: &mut BytesMut)
where
    I: Stream<Item = Incoming> + Unpin,
    W: AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        output.write_all_buf(queue).await?;
        output.shutdown().await?;
        while let Some(Ok(_)) = frames.next().await {}
        Ok::<_, io::Error>(())
    })
    .await;
}
