//! The two languages the bench speaks, and the payload it sends in both.
//!
//! Every bench message carries its own evidence, so a receiver needs no
//! shared state to check it: `m <sender> <seq> <sent-ns>`. The registration
//! barrier sends `s <round>`. Parsing them is a few byte comparisons, no
//! allocation: at a million deliveries a second the bench shares the cores
//! with the server it measures.

use std::io::Write as _;

use clap::ValueEnum;

use crate::{proto, raw};

/// How to talk to a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Dialect {
    /// Our protocol: `NAME` to log in, `MSG` to broadcast (`chat-protocol`).
    Chat,
    /// No login; every line is broadcast to all as `<addr>: <line>` (the
    /// gopl seed server).
    Raw,
}

/// What a line from the server means to the bench.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// This connection is in: `WELCOME` / `You are <addr>`.
    Welcome,
    /// The users already in, self included, separated by spaces.
    Names(&'a [u8]),
    /// Someone else arrived.
    Join(&'a [u8]),
    /// A broadcast text, as its sender wrote it.
    Text(&'a [u8]),
    /// `NAMES <room> …`: this connection's `JOIN` of `<room>` went through.
    RoomNames(&'a [u8]),
    /// `SAY <room> <from> <text>`: a room's message, its text as sent.
    Say { room: &'a [u8], text: &'a [u8] },
    /// `DROPPED <n>`.
    Dropped(u64),
    /// `PONG <token>`: the server has handled everything this connection
    /// sent before the `PING`.
    Pong(&'a [u8]),
    /// The server refused the connection because it is full.
    Full,
    /// Any other refusal or error; its line.
    Error(&'a [u8]),
    /// Anything else (`LEAVE`, `PONG`, departures).
    Other,
}

/// A bench text, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    Message { sender: u32, seq: u64, sent_ns: u64 },
    Sync(u32),
}

impl Dialect {
    /// What a connection sends to log in as `name`, if anything.
    pub fn login(self, name: &str) -> Option<String> {
        match self {
            Dialect::Chat => Some(proto::login(name)),
            Dialect::Raw => None,
        }
    }

    /// A `PING <token>`, where the dialect has one.
    pub fn ping(self, token: &str) -> Option<String> {
        match self {
            Dialect::Chat => Some(proto::ping(token)),
            Dialect::Raw => None,
        }
    }

    /// Appends the line that broadcasts `text`.
    pub fn write_text(self, out: &mut Vec<u8>, text: std::fmt::Arguments<'_>) {
        if self == Dialect::Chat {
            out.extend_from_slice(proto::MSG_PREFIX);
        }
        // Writing into a Vec cannot fail.
        let _ = out.write_fmt(text);
        out.push(b'\n');
    }

    /// Appends message `seq` of `sender`, stamped now-ish (`sent_ns`).
    pub fn write_message(self, out: &mut Vec<u8>, sender: u32, seq: u64, sent_ns: u64) {
        self.write_text(out, format_args!("m {sender} {seq} {sent_ns}"));
    }

    /// Appends the barrier's round `round`.
    pub fn write_sync(self, out: &mut Vec<u8>, round: u32) {
        self.write_text(out, format_args!("s {round}"));
    }

    /// Reads one line (without its `\n`).
    pub fn parse(self, line: &[u8]) -> Event<'_> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match self {
            Dialect::Chat => proto::parse(line),
            Dialect::Raw => raw::parse(line),
        }
    }
}

/// Appends message `seq` of `sender` said in `room` (`SAY`: our dialect
/// only, the raw one has no rooms).
pub fn write_say(out: &mut Vec<u8>, room: &str, sender: u32, seq: u64, sent_ns: u64) {
    out.extend_from_slice(proto::SAY_PREFIX);
    out.extend_from_slice(room.as_bytes());
    out.push(b' ');
    // Writing into a Vec cannot fail.
    let _ = writeln!(out, "m {sender} {seq} {sent_ns}");
}

impl Payload {
    pub fn parse(text: &[u8]) -> Option<Payload> {
        let mut fields = text.split(|&b| b == b' ');
        match fields.next()? {
            b"m" => {
                let sender = number(fields.next()?)?;
                let seq = number(fields.next()?)?;
                let sent_ns = number(fields.next()?)?;
                Some(Payload::Message {
                    sender: u32::try_from(sender).ok()?,
                    seq,
                    sent_ns,
                })
            }
            b"s" => Some(Payload::Sync(u32::try_from(number(fields.next()?)?).ok()?)),
            _ => None,
        }
    }
}

/// A decimal number in ASCII, without `str` and UTF-8 checks.
pub fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_in_both_dialects() {
        for (dialect, prefix) in [
            (Dialect::Chat, "MSG u_7 "),
            (Dialect::Raw, "127.0.0.1:5000: "),
        ] {
            let mut out = Vec::new();
            dialect.write_message(&mut out, 7, 42, 123_456_789);
            let sent = std::str::from_utf8(&out).unwrap();
            let body = sent.strip_prefix("MSG ").unwrap_or(sent).trim_end();
            let line = format!("{prefix}{body}");
            let Event::Text(text) = dialect.parse(line.as_bytes()) else {
                panic!("{line:?} is not a text");
            };
            assert_eq!(
                Payload::parse(text),
                Some(Payload::Message {
                    sender: 7,
                    seq: 42,
                    sent_ns: 123_456_789
                })
            );
        }
    }

    #[test]
    fn room_messages_round_trip() {
        let mut out = Vec::new();
        write_say(&mut out, "#b1_r4", 41, 7, 99);
        assert_eq!(out, b"SAY #b1_r4 m 41 7 99\n");
        let Event::Say { room, text } = Dialect::Chat.parse(b"SAY #b1_r4 b1_41 m 41 7 99") else {
            panic!("not a SAY");
        };
        assert_eq!(room, b"#b1_r4");
        assert_eq!(
            Payload::parse(text),
            Some(Payload::Message {
                sender: 41,
                seq: 7,
                sent_ns: 99
            })
        );
    }

    #[test]
    fn sync_and_garbage() {
        assert_eq!(Payload::parse(b"s 3"), Some(Payload::Sync(3)));
        assert_eq!(Payload::parse(b"hello there"), None);
        assert_eq!(Payload::parse(b"m 1 2"), None);
        assert_eq!(Payload::parse(b"m 1 x 3"), None);
        assert_eq!(number(b"99999999999999999999"), None);
    }
}
