//! Frames the server sends to clients.

use std::fmt::{self, Write as _};

use bytes::{Bytes, BytesMut};

use crate::error::ErrorCode;

/// A frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerFrame {
    /// `WELCOME <name>`: login accepted under that name.
    Welcome(String),
    /// `NAMES <name> …`: everyone logged in, sorted by lower-cased name.
    Names(Vec<String>),
    /// `JOIN <name>`: someone logged in.
    Join(String),
    /// `MSG <from> <text>`: a message, its text exactly as sent.
    Msg { from: String, text: String },
    /// `LEAVE <name> [<text>]`: someone is gone, with their parting text if any.
    Leave { name: String, text: Option<String> },
    /// `DROPPED <n>`: this client read too slowly and missed `n` broadcast frames.
    Dropped(u64),
    /// `PONG [<token>]`: the answer to `PING`.
    Pong(Option<String>),
    /// `BYE`: the answer to `LEAVE`; the connection closes next.
    Bye,
    /// `ERROR <code> [<detail>]`: a refusal, or the reason for a close.
    Error {
        code: ErrorCode,
        detail: Option<String>,
    },
}

/// A line from the server that is not a v1 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedFrame {
    /// The offending line.
    pub line: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl fmt::Display for MalformedFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "malformed server frame ({}): {:?}",
            self.reason, self.line
        )
    }
}

impl std::error::Error for MalformedFrame {}

impl ServerFrame {
    /// The frame's verb as sent on the wire.
    pub fn verb(&self) -> &'static str {
        match self {
            ServerFrame::Welcome(_) => "WELCOME",
            ServerFrame::Names(_) => "NAMES",
            ServerFrame::Join(_) => "JOIN",
            ServerFrame::Msg { .. } => "MSG",
            ServerFrame::Leave { .. } => "LEAVE",
            ServerFrame::Dropped(_) => "DROPPED",
            ServerFrame::Pong(_) => "PONG",
            ServerFrame::Bye => "BYE",
            ServerFrame::Error { .. } => "ERROR",
        }
    }

    /// A shorthand for an `ERROR` frame with a detail.
    pub fn error(code: ErrorCode, detail: impl Into<String>) -> ServerFrame {
        ServerFrame::Error {
            code,
            detail: Some(detail.into()),
        }
    }

    /// Appends the frame and its `\n` to `dst`.
    pub fn write_to(&self, dst: &mut BytesMut) {
        // Writing into a BytesMut cannot fail.
        let _ = writeln!(dst, "{self}");
    }

    /// The frame as one shared, ready-to-send line (with its `\n`), so that a
    /// broadcast is encoded once however many users receive it.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.encoded_len_hint());
        self.write_to(&mut buf);
        buf.freeze()
    }

    /// The `NAMES` frame for a list of names, encoded straight into one
    /// buffer: a room of thousands needs no `String` per name for it.
    pub fn names_bytes<'a>(names: impl IntoIterator<Item = &'a str> + Clone) -> Bytes {
        let len = names
            .clone()
            .into_iter()
            .map(|n| n.len() + 1)
            .sum::<usize>();
        let mut buf = BytesMut::with_capacity(6 + len + 1);
        buf.extend_from_slice(b"NAMES");
        for name in names {
            buf.extend_from_slice(b" ");
            buf.extend_from_slice(name.as_bytes());
        }
        buf.extend_from_slice(b"\n");
        buf.freeze()
    }

    fn encoded_len_hint(&self) -> usize {
        match self {
            ServerFrame::Msg { from, text } => 6 + from.len() + text.len(),
            ServerFrame::Names(names) => 6 + names.iter().map(|n| n.len() + 1).sum::<usize>(),
            _ => 64,
        }
    }

    /// Parses one line (without its line ending) as the client sees it.
    pub fn parse(line: &str) -> Result<ServerFrame, MalformedFrame> {
        let malformed = |reason| MalformedFrame {
            line: line.to_owned(),
            reason,
        };
        let (verb, rest) = match line.split_once(' ') {
            Some((verb, rest)) => (verb, Some(rest)),
            None => (line, None),
        };
        let non_empty = |rest: Option<&str>, reason| match rest {
            Some(r) if !r.is_empty() => Ok(r.to_owned()),
            _ => Err(malformed(reason)),
        };
        let optional = |rest: Option<&str>| rest.filter(|r| !r.is_empty()).map(str::to_owned);
        match verb {
            "WELCOME" => Ok(ServerFrame::Welcome(non_empty(
                rest,
                "WELCOME without a name",
            )?)),
            "NAMES" => Ok(ServerFrame::Names(
                rest.unwrap_or("")
                    .split(' ')
                    .filter(|n| !n.is_empty())
                    .map(str::to_owned)
                    .collect(),
            )),
            "JOIN" => Ok(ServerFrame::Join(non_empty(rest, "JOIN without a name")?)),
            "MSG" => {
                let (from, text) = rest
                    .and_then(|r| r.split_once(' '))
                    .ok_or_else(|| malformed("MSG without sender and text"))?;
                Ok(ServerFrame::Msg {
                    from: from.to_owned(),
                    text: text.to_owned(),
                })
            }
            "LEAVE" => {
                let rest = non_empty(rest, "LEAVE without a name")?;
                Ok(match rest.split_once(' ') {
                    Some((name, text)) => ServerFrame::Leave {
                        name: name.to_owned(),
                        text: optional(Some(text)),
                    },
                    None => ServerFrame::Leave {
                        name: rest,
                        text: None,
                    },
                })
            }
            "DROPPED" => rest
                .and_then(|r| r.parse().ok())
                .map(ServerFrame::Dropped)
                .ok_or_else(|| malformed("DROPPED without a count")),
            "PONG" => Ok(ServerFrame::Pong(optional(rest))),
            "BYE" => Ok(ServerFrame::Bye),
            "ERROR" => {
                let rest = rest.ok_or_else(|| malformed("ERROR without a code"))?;
                let (code, detail) = match rest.split_once(' ') {
                    Some((code, detail)) => (code, optional(Some(detail))),
                    None => (rest, None),
                };
                let code = code
                    .parse()
                    .map_err(|_| malformed("ERROR with an unknown code"))?;
                Ok(ServerFrame::Error { code, detail })
            }
            _ => Err(malformed("unknown verb")),
        }
    }
}

/// Formats the frame as its line, without the line ending.
impl fmt::Display for ServerFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.verb())?;
        match self {
            ServerFrame::Welcome(name) | ServerFrame::Join(name) => write!(f, " {name}"),
            ServerFrame::Names(names) => names.iter().try_for_each(|n| write!(f, " {n}")),
            ServerFrame::Msg { from, text } => write!(f, " {from} {text}"),
            ServerFrame::Leave { name, text } => {
                write!(f, " {name}")?;
                text.iter().try_for_each(|t| write!(f, " {t}"))
            }
            ServerFrame::Dropped(n) => write!(f, " {n}"),
            ServerFrame::Pong(token) => token.iter().try_for_each(|t| write!(f, " {t}")),
            ServerFrame::Bye => Ok(()),
            ServerFrame::Error { code, detail } => {
                write!(f, " {code}")?;
                detail.iter().try_for_each(|d| write!(f, " {d}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_frames() -> Vec<(ServerFrame, &'static str)> {
        vec![
            (ServerFrame::Welcome("alice".into()), "WELCOME alice"),
            (
                ServerFrame::Names(vec!["alice".into(), "Bob".into()]),
                "NAMES alice Bob",
            ),
            (ServerFrame::Join("bob".into()), "JOIN bob"),
            (
                ServerFrame::Msg {
                    from: "alice".into(),
                    text: " hi  bob ".into(),
                },
                "MSG alice  hi  bob ",
            ),
            (
                ServerFrame::Leave {
                    name: "alice".into(),
                    text: None,
                },
                "LEAVE alice",
            ),
            (
                ServerFrame::Leave {
                    name: "alice".into(),
                    text: Some("see you".into()),
                },
                "LEAVE alice see you",
            ),
            (ServerFrame::Dropped(12), "DROPPED 12"),
            (ServerFrame::Pong(None), "PONG"),
            (ServerFrame::Pong(Some("t 1".into())), "PONG t 1"),
            (ServerFrame::Bye, "BYE"),
            (
                ServerFrame::Error {
                    code: ErrorCode::NameTaken,
                    detail: None,
                },
                "ERROR name-taken",
            ),
            (
                ServerFrame::error(ErrorCode::BadName, "names are short"),
                "ERROR bad-name names are short",
            ),
        ]
    }

    #[test]
    fn formats_and_parses_every_frame() {
        for (frame, line) in all_frames() {
            assert_eq!(frame.to_string(), line);
            assert_eq!(ServerFrame::parse(line), Ok(frame.clone()), "{line}");
            assert_eq!(frame.to_bytes(), format!("{line}\n").as_bytes());
        }
    }

    #[test]
    fn names_bytes_match_the_names_frame() {
        let names = ["alice", "Bob", "c.d"];
        let frame = ServerFrame::Names(names.iter().map(|n| n.to_string()).collect());
        assert_eq!(ServerFrame::names_bytes(names), frame.to_bytes());
        assert_eq!(ServerFrame::names_bytes([]), "NAMES\n".as_bytes());
    }

    #[test]
    fn malformed_lines_are_reported() {
        for line in [
            "",
            "HELLO",
            "WELCOME",
            "MSG alice",
            "DROPPED x",
            "ERROR nope",
            "ERROR",
        ] {
            assert!(ServerFrame::parse(line).is_err(), "{line:?}");
        }
    }
}
