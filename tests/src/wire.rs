//! Raw connections split into a line reader and a writer, for the cases that
//! read and write at the same time (witnesses, flooders, slowloris), which
//! the lock-step [`crate::Client`] cannot do.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::TIMEOUT;

/// What reading the next line gave.
#[derive(Debug)]
pub enum Next {
    /// A line, without its `\n`.
    Line(String),
    /// A line that is not UTF-8 (never acceptable from the server).
    NotUtf8(Vec<u8>),
    /// The server closed the connection (a clean end of stream).
    Closed,
    /// Nothing arrived in time.
    TimedOut,
    /// The connection failed (for example reset).
    Failed(io::Error),
}

/// What reading a batch of lines gave.
#[derive(Debug)]
pub enum Batch {
    /// Some bytes arrived; every complete line among them was handed over.
    Lines,
    Closed,
    TimedOut,
    Failed(io::Error),
}

/// The reading half of a connection, line by line.
pub struct LineReader {
    inner: BufReader<OwnedReadHalf>,
    line: Vec<u8>,
}

impl LineReader {
    pub fn new(read: OwnedReadHalf) -> LineReader {
        LineReader {
            inner: BufReader::with_capacity(64 * 1024, read),
            line: Vec::new(),
        }
    }

    /// The next line, waiting at most `limit`. A line cut off by the end of
    /// the stream is returned as it is.
    pub async fn next(&mut self, limit: Duration) -> Next {
        // A line begun before a timeout stays in `self.line` and is
        // completed here: timing out loses nothing.
        let read = tokio::time::timeout(limit, self.inner.read_until(b'\n', &mut self.line)).await;
        match read {
            Err(_) => Next::TimedOut,
            Ok(Err(e)) => Next::Failed(e),
            Ok(Ok(0)) if self.line.is_empty() => Next::Closed,
            Ok(Ok(_)) => {
                if self.line.last() == Some(&b'\n') {
                    self.line.pop();
                }
                match String::from_utf8(std::mem::take(&mut self.line)) {
                    Ok(line) => Next::Line(line),
                    Err(e) => Next::NotUtf8(e.into_bytes()),
                }
            }
        }
    }

    /// Waits up to `limit` for input, then hands every complete line that
    /// arrived to `each` without copying it (`Err` with the raw bytes for a
    /// line that is not UTF-8). For readers that must keep up with a flood.
    pub async fn batch(
        &mut self,
        limit: Duration,
        mut each: impl FnMut(Result<&str, &[u8]>),
    ) -> Batch {
        let available = match tokio::time::timeout(limit, self.inner.fill_buf()).await {
            Err(_) => return Batch::TimedOut,
            Ok(Err(e)) => return Batch::Failed(e),
            Ok(Ok(available)) => available,
        };
        if available.is_empty() {
            return Batch::Closed;
        }
        let mut emit = |line: &[u8]| match std::str::from_utf8(line) {
            Ok(line) => each(Ok(line)),
            Err(_) => each(Err(line)),
        };
        let mut start = 0;
        while let Some(at) = available[start..].iter().position(|&b| b == b'\n') {
            let end = start + at;
            if self.line.is_empty() {
                emit(&available[start..end]);
            } else {
                self.line.extend_from_slice(&available[start..end]);
                emit(&self.line);
                self.line.clear();
            }
            start = end + 1;
        }
        self.line.extend_from_slice(&available[start..]);
        let consumed = available.len();
        self.inner.consume(consumed);
        Batch::Lines
    }

    /// The next line, which must come within [`TIMEOUT`].
    pub async fn line(&mut self) -> String {
        match self.next(TIMEOUT).await {
            Next::Line(line) => line,
            other => panic!("expected a line, got {other:?}"),
        }
    }

    /// Reads lines until one equals `wanted`; returns the lines before it.
    pub async fn until(&mut self, wanted: &str) -> Vec<String> {
        let mut before = Vec::new();
        loop {
            let line = self.line().await;
            if line == wanted {
                return before;
            }
            before.push(line);
        }
    }

    /// Reads until the server closes; returns the lines on the way.
    pub async fn until_closed(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            match self.next(TIMEOUT).await {
                Next::Line(line) => lines.push(line),
                Next::Closed => return lines,
                other => panic!("expected the connection to close, got {other:?} after {lines:?}"),
            }
        }
    }
}

/// Connects to `addr` within [`TIMEOUT`].
pub async fn connect(addr: SocketAddr) -> (LineReader, OwnedWriteHalf) {
    let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect");
    let (read, write) = stream.into_split();
    (LineReader::new(read), write)
}

/// Connects with a 2 KiB receive buffer, so that a client that stops
/// reading backs up into the server instead of into its own kernel.
pub async fn connect_small_buffer(addr: SocketAddr) -> (LineReader, OwnedWriteHalf) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(2048).expect("SO_RCVBUF");
    let stream = tokio::time::timeout(TIMEOUT, socket.connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect");
    let (read, write) = stream.into_split();
    (LineReader::new(read), write)
}

/// Connects and logs in as `name`, consuming `WELCOME` and `NAMES`.
pub async fn login(addr: SocketAddr, name: &str) -> (LineReader, OwnedWriteHalf) {
    let (mut reader, mut writer) = connect(addr).await;
    send(&mut writer, &format!("NAME {name}\n")).await;
    assert_eq!(reader.line().await, format!("WELCOME {name}"));
    let names = reader.line().await;
    assert!(names.starts_with("NAMES "), "expected NAMES, got {names:?}");
    (reader, writer)
}

/// Writes all of `text`; panics if the connection fails.
pub async fn send(writer: &mut OwnedWriteHalf, text: &str) {
    writer.write_all(text.as_bytes()).await.expect("send");
}

/// Aborts a connection with a TCP reset and nothing before it.
///
/// The halves are joined again first: dropping a tokio write half on its own
/// sends a FIN, and the server would see a clean end of stream instead.
pub fn reset(reader: LineReader, writer: OwnedWriteHalf) {
    use std::os::fd::AsRawFd;
    let stream = reader
        .inner
        .into_inner()
        .reunite(writer)
        .expect("halves of one connection");
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a correctly sized value.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER failed");
    drop(stream);
}
