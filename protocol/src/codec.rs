//! tokio-util codecs: line framing, and the two directions built on it.
//!
//! [`LineCodec`] follows `tokio_util::codec::LinesCodec` but reports an
//! over-long or non-UTF-8 line as an *item* rather than a decoder error: a
//! `Framed` stream ends at the first decoder error, and the contract wants the
//! connection to go on after both.

use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::client_frame::{ClientFrame, Rejection};
use crate::server_frame::{MalformedFrame, ServerFrame};

/// Longest frame a client may send, in bytes without the line ending.
pub const MAX_LINE: usize = 4096;

/// Longest line a client accepts from the server. Server frames are not bound
/// by [`MAX_LINE`]: `NAMES` grows with the room.
pub const MAX_SERVER_LINE: usize = 8 << 20;

/// A line that could not be taken as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineError {
    /// The line was longer than the limit; all of it has been skipped.
    TooLong,
    /// The line was not UTF-8; it has been skipped.
    InvalidUtf8,
}

/// Splits a byte stream into `\n`-terminated lines of at most `max_length`
/// bytes (a `\r` before the `\n` is dropped and not counted).
///
/// Memory stays bounded by the limit: the tail of an over-long line is
/// discarded as it arrives, never buffered.
#[derive(Debug, Clone)]
pub struct LineCodec {
    max_length: usize,
    /// Where to resume the search for `\n`, so each byte is scanned once.
    next_index: usize,
    /// Inside an over-long line that was already reported.
    discarding: bool,
}

impl LineCodec {
    pub fn new(max_length: usize) -> LineCodec {
        LineCodec {
            max_length,
            next_index: 0,
            discarding: false,
        }
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    fn take_line(&mut self, buf: &mut BytesMut, newline_at: usize) -> Result<String, LineError> {
        let line = buf.split_to(newline_at + 1);
        self.next_index = 0;
        let mut content = &line[..newline_at];
        if let [head @ .., b'\r'] = content {
            content = head;
        }
        if content.len() > self.max_length {
            return Err(LineError::TooLong);
        }
        std::str::from_utf8(content)
            .map(str::to_owned)
            .map_err(|_| LineError::InvalidUtf8)
    }
}

impl Decoder for LineCodec {
    type Item = Result<String, LineError>;
    type Error = io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Option<Self::Item>> {
        if self.discarding {
            match buf.iter().position(|&b| b == b'\n') {
                Some(at) => {
                    buf.advance(at + 1);
                    self.discarding = false;
                }
                None => {
                    buf.clear();
                    return Ok(None);
                }
            }
        }
        // A line within the limit has its `\n` within `max_length + 2` bytes
        // (content, an optional `\r`, the `\n`).
        let window = buf.len().min(self.max_length + 2);
        let found = buf[self.next_index..window]
            .iter()
            .position(|&b| b == b'\n')
            .map(|offset| self.next_index + offset);
        match found {
            Some(at) => Ok(Some(self.take_line(buf, at))),
            None if buf.len() > self.max_length + 1 => {
                buf.advance(window);
                self.next_index = 0;
                self.discarding = true;
                Ok(Some(Err(LineError::TooLong)))
            }
            None => {
                self.next_index = window;
                Ok(None)
            }
        }
    }

    /// A last line without `\n` before the end of the stream still counts.
    fn decode_eof(&mut self, buf: &mut BytesMut) -> io::Result<Option<Self::Item>> {
        if let Some(item) = self.decode(buf)? {
            return Ok(Some(item));
        }
        if buf.is_empty() || self.discarding {
            buf.clear();
            return Ok(None);
        }
        buf.put_u8(b'\n');
        let at = buf.len() - 1;
        Ok(Some(self.take_line(buf, at)))
    }
}

impl Encoder<&str> for LineCodec {
    type Error = io::Error;

    fn encode(&mut self, line: &str, dst: &mut BytesMut) -> io::Result<()> {
        dst.reserve(line.len() + 1);
        dst.put_slice(line.as_bytes());
        dst.put_u8(b'\n');
        Ok(())
    }
}

/// The server's side of a connection: decodes client frames, encodes server
/// frames.
///
/// Each decoded item is either a frame or the [`Rejection`] to answer with;
/// only I/O failures end the stream.
#[derive(Debug, Clone)]
pub struct ServerCodec {
    lines: LineCodec,
}

impl ServerCodec {
    pub fn new(max_line: usize) -> ServerCodec {
        ServerCodec {
            lines: LineCodec::new(max_line),
        }
    }

    fn frame(&self, line: Result<String, LineError>) -> Result<ClientFrame, Rejection> {
        match line {
            Ok(line) => ClientFrame::parse(&line),
            Err(LineError::TooLong) => Err(Rejection::line_too_long(self.lines.max_length())),
            Err(LineError::InvalidUtf8) => Err(Rejection::invalid_utf8()),
        }
    }
}

impl Default for ServerCodec {
    fn default() -> Self {
        ServerCodec::new(MAX_LINE)
    }
}

impl Decoder for ServerCodec {
    type Item = Result<ClientFrame, Rejection>;
    type Error = io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Option<Self::Item>> {
        Ok(self.lines.decode(buf)?.map(|line| self.frame(line)))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> io::Result<Option<Self::Item>> {
        Ok(self.lines.decode_eof(buf)?.map(|line| self.frame(line)))
    }
}

impl Encoder<&ServerFrame> for ServerCodec {
    type Error = io::Error;

    fn encode(&mut self, frame: &ServerFrame, dst: &mut BytesMut) -> io::Result<()> {
        frame.write_to(dst);
        Ok(())
    }
}

/// A frame encoded once and shared by every receiver of a broadcast.
impl Encoder<Bytes> for ServerCodec {
    type Error = io::Error;

    fn encode(&mut self, line: Bytes, dst: &mut BytesMut) -> io::Result<()> {
        dst.extend_from_slice(&line);
        Ok(())
    }
}

/// What a client can fail to read from the server, short of an I/O error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientDecodeError {
    /// A line that is not a v1 server frame.
    Malformed(MalformedFrame),
    /// A line that was too long or not UTF-8.
    Line(LineError),
}

impl std::fmt::Display for ClientDecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientDecodeError::Malformed(m) => m.fmt(f),
            ClientDecodeError::Line(LineError::TooLong) => f.write_str("server line too long"),
            ClientDecodeError::Line(LineError::InvalidUtf8) => {
                f.write_str("server line is not UTF-8")
            }
        }
    }
}

impl std::error::Error for ClientDecodeError {}

/// The client's side of a connection: decodes server frames, encodes client
/// frames.
#[derive(Debug, Clone)]
pub struct ClientCodec {
    lines: LineCodec,
}

impl ClientCodec {
    pub fn new() -> ClientCodec {
        ClientCodec {
            lines: LineCodec::new(MAX_SERVER_LINE),
        }
    }

    fn frame(line: Result<String, LineError>) -> Result<ServerFrame, ClientDecodeError> {
        let line = line.map_err(ClientDecodeError::Line)?;
        ServerFrame::parse(&line).map_err(ClientDecodeError::Malformed)
    }
}

impl Default for ClientCodec {
    fn default() -> Self {
        ClientCodec::new()
    }
}

impl Decoder for ClientCodec {
    type Item = Result<ServerFrame, ClientDecodeError>;
    type Error = io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Option<Self::Item>> {
        Ok(self.lines.decode(buf)?.map(ClientCodec::frame))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> io::Result<Option<Self::Item>> {
        Ok(self.lines.decode_eof(buf)?.map(ClientCodec::frame))
    }
}

/// Refuses a frame whose text holds a line break: written as is, it would
/// put a second frame of the caller's choosing on the wire.
impl Encoder<&ClientFrame> for ClientCodec {
    type Error = io::Error;

    fn encode(&mut self, frame: &ClientFrame, dst: &mut BytesMut) -> io::Result<()> {
        use std::fmt::Write as _;
        let start = dst.len();
        // Writing into a BytesMut cannot fail.
        let _ = write!(dst, "{frame}");
        if dst[start..].iter().any(|&b| b == b'\n' || b == b'\r') {
            dst.truncate(start);
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a frame cannot contain a line break",
            ));
        }
        dst.put_u8(b'\n');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    fn decode_all(codec: &mut LineCodec, input: &[u8]) -> Vec<Result<String, LineError>> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(item) = codec.decode(&mut buf).unwrap() {
            out.push(item);
        }
        while let Some(item) = codec.decode_eof(&mut buf).unwrap() {
            out.push(item);
        }
        out
    }

    #[test]
    fn splits_lines_and_accepts_crlf() {
        let mut codec = LineCodec::new(16);
        assert_eq!(
            decode_all(&mut codec, b"one\ntwo\r\n\nthree"),
            vec![
                Ok("one".to_owned()),
                Ok("two".to_owned()),
                Ok(String::new()),
                Ok("three".to_owned())
            ]
        );
    }

    #[test]
    fn limit_excludes_the_line_ending() {
        let mut codec = LineCodec::new(4);
        assert_eq!(
            decode_all(&mut codec, b"abcd\nabcd\r\nabcde\nok\n"),
            vec![
                Ok("abcd".to_owned()),
                Ok("abcd".to_owned()),
                Err(LineError::TooLong),
                Ok("ok".to_owned())
            ]
        );
    }

    #[test]
    fn long_line_is_reported_once_and_its_tail_discarded() {
        let mut codec = LineCodec::new(8);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[b'x'; 20]);
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(Err(LineError::TooLong))
        );
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert!(buf.is_empty(), "the tail is not buffered");
        buf.extend_from_slice(&[b'y'; 1000]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
        buf.extend_from_slice(b"yy\nnext\n");
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(Ok("next".to_owned())));
    }

    #[test]
    fn invalid_utf8_is_reported_and_skipped() {
        let mut codec = LineCodec::new(64);
        assert_eq!(
            decode_all(&mut codec, b"ok\n\xff\xfe\nstill ok\n"),
            vec![
                Ok("ok".to_owned()),
                Err(LineError::InvalidUtf8),
                Ok("still ok".to_owned())
            ]
        );
    }

    #[test]
    fn server_codec_turns_line_errors_into_rejections() {
        let mut codec = ServerCodec::new(8);
        let mut buf = BytesMut::from(&b"MSG hi\nMSG way too long\n\xc3\x28\nBOGUS\n"[..]);
        let mut codes = Vec::new();
        while let Some(item) = codec.decode(&mut buf).unwrap() {
            codes.push(item.map_err(|r| r.code));
        }
        assert_eq!(
            codes,
            vec![
                Ok(ClientFrame::Msg("hi".into())),
                Err(ErrorCode::LineTooLong),
                Err(ErrorCode::InvalidUtf8),
                Err(ErrorCode::UnknownCommand),
            ]
        );
    }

    #[test]
    fn client_codec_refuses_line_breaks_inside_a_frame() {
        let mut codec = ClientCodec::new();
        let mut buf = BytesMut::from(&b"MSG earlier\n"[..]);
        for text in ["hi\nLEAVE pwned", "x\r", "\r\n"] {
            let err = codec
                .encode(&ClientFrame::Msg(text.into()), &mut buf)
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        }
        assert_eq!(
            &buf[..],
            b"MSG earlier\n",
            "nothing of a refused frame is written"
        );
    }

    #[test]
    fn client_codec_round_trips_frames() {
        let mut codec = ClientCodec::new();
        let mut buf = BytesMut::new();
        codec
            .encode(&ClientFrame::Msg("hi there".into()), &mut buf)
            .unwrap();
        assert_eq!(&buf[..], b"MSG hi there\n");
        let mut buf = BytesMut::from(&b"MSG bob hi there\nnonsense\n"[..]);
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(Ok(ServerFrame::Msg {
                from: "bob".into(),
                text: "hi there".into()
            }))
        );
        assert!(matches!(
            codec.decode(&mut buf).unwrap(),
            Some(Err(ClientDecodeError::Malformed(_)))
        ));
    }
}
