//! Frames the server sends to clients.

use std::fmt::{self, Write as _};

use bytes::{Bytes, BytesMut};

use crate::error::ErrorCode;
use crate::server_frame_ref::ServerFrameRef;
use crate::time::Timestamp;

/// A frame from the server.
///
/// Frames without a room are the lobby's, exactly as in version 1; version
/// 2's room frames are variants of their own (`RoomNames`, `RoomJoin`,
/// `RoomLeave`), so code written for version 1 keeps its meaning.
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
    /// `ERROR <code> [<detail>]` whose code is not one of [`ErrorCode`]'s
    /// (from a newer server), kept as sent so that it can be shown. Parsing
    /// never gives this for a code [`ErrorCode`] knows.
    UnknownError {
        code: String,
        detail: Option<String>,
    },
    /// `NAMES <room> <name> …`: a room's members, sorted like the lobby's.
    RoomNames { room: String, names: Vec<String> },
    /// `JOIN <room> <name>`: someone entered a room.
    RoomJoin { room: String, name: String },
    /// `LEAVE <room> <name> [<text>]`: someone left a room with `PART`.
    RoomLeave {
        room: String,
        name: String,
        text: Option<String>,
    },
    /// `SAY <room> <from> <text>`: a message in a room, its text exactly as
    /// sent.
    Say {
        room: String,
        from: String,
        text: String,
    },
    /// `TELL <from> <to> <text>`: a message to one user, its text exactly as
    /// sent.
    Tell {
        from: String,
        to: String,
        text: String,
    },
    /// `TOPIC <room> <setter> <text>`: a room's topic and who set it.
    Topic {
        room: String,
        setter: String,
        text: String,
    },
    /// `TOPIC <room>`: the room has no topic.
    NoTopic(String),
    /// `ROOMS [<room> <count> …]`: every room and its number of members.
    Rooms(Vec<(String, u64)>),
    /// `HISTORY [<room>] <k>`: a history reply of `k` messages of a room, or
    /// of the lobby when `room` is `None`; `k` `HIST` frames follow.
    History { room: Option<String>, count: u64 },
    /// `HIST [<room>] <time> <from> <text>`: one message of a history reply.
    Hist {
        room: Option<String>,
        time: Timestamp,
        from: String,
        text: String,
    },
    /// `REGISTERED <name>`: the name is registered (after `REGISTER` or
    /// `PASSWORD`).
    Registered(String),
    /// `UNREGISTERED <name>`: the name is no longer registered.
    Unregistered(String),
    /// `OK <verb> <name>`: an operator's `KICK`, `BAN`, `UNBAN`, `MUTE` or
    /// `UNMUTE` was carried out.
    Ok { verb: String, name: String },
    /// `BANS [<name> <until> …]`: the bans in force, sorted like names.
    Bans(Vec<(String, Timestamp)>),
}

/// A line from the server that is not a frame.
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
            ServerFrame::Error { .. } | ServerFrame::UnknownError { .. } => "ERROR",
            ServerFrame::RoomNames { .. } => "NAMES",
            ServerFrame::RoomJoin { .. } => "JOIN",
            ServerFrame::RoomLeave { .. } => "LEAVE",
            ServerFrame::Say { .. } => "SAY",
            ServerFrame::Tell { .. } => "TELL",
            ServerFrame::Topic { .. } | ServerFrame::NoTopic(_) => "TOPIC",
            ServerFrame::Rooms(_) => "ROOMS",
            ServerFrame::History { .. } => "HISTORY",
            ServerFrame::Hist { .. } => "HIST",
            ServerFrame::Registered(_) => "REGISTERED",
            ServerFrame::Unregistered(_) => "UNREGISTERED",
            ServerFrame::Ok { .. } => "OK",
            ServerFrame::Bans(_) => "BANS",
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
        names_line(None, names)
    }

    /// The `NAMES <room>` frame for a room's members, encoded like
    /// [`ServerFrame::names_bytes`].
    pub fn room_names_bytes<'a>(
        room: &str,
        names: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Bytes {
        names_line(Some(room), names)
    }

    fn encoded_len_hint(&self) -> usize {
        match self {
            ServerFrame::Msg { from, text } => 6 + from.len() + text.len(),
            ServerFrame::Names(names) => 6 + names.iter().map(|n| n.len() + 1).sum::<usize>(),
            ServerFrame::Say { room, from, text } => 6 + room.len() + from.len() + text.len(),
            ServerFrame::RoomNames { room, names } => {
                7 + room.len() + names.iter().map(|n| n.len() + 1).sum::<usize>()
            }
            _ => 64,
        }
    }

    /// Parses one line (without its line ending) as the client sees it.
    ///
    /// See [`ServerFrameRef::parse`] for the same without allocation.
    pub fn parse(line: &str) -> Result<ServerFrame, MalformedFrame> {
        ServerFrameRef::parse(line).map(ServerFrameRef::into_owned)
    }
}

/// `NAMES [<room>] <name> …` and its `\n`, in one buffer of the right size.
fn names_line<'a>(room: Option<&str>, names: impl IntoIterator<Item = &'a str> + Clone) -> Bytes {
    let len = room.map_or(0, |r| r.len() + 1)
        + names
            .clone()
            .into_iter()
            .map(|n| n.len() + 1)
            .sum::<usize>();
    let mut buf = BytesMut::with_capacity(5 + len + 1);
    buf.extend_from_slice(b"NAMES");
    if let Some(room) = room {
        buf.extend_from_slice(b" ");
        buf.extend_from_slice(room.as_bytes());
    }
    for name in names {
        buf.extend_from_slice(b" ");
        buf.extend_from_slice(name.as_bytes());
    }
    buf.extend_from_slice(b"\n");
    buf.freeze()
}

/// Formats the frame as its line, without the line ending.
impl fmt::Display for ServerFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.verb())?;
        match self {
            ServerFrame::Welcome(name)
            | ServerFrame::Join(name)
            | ServerFrame::Registered(name)
            | ServerFrame::Unregistered(name) => write!(f, " {name}"),
            ServerFrame::Ok { verb, name } => write!(f, " {verb} {name}"),
            ServerFrame::Bans(bans) => bans
                .iter()
                .try_for_each(|(name, until)| write!(f, " {name} {until}")),
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
            ServerFrame::UnknownError { code, detail } => {
                write!(f, " {code}")?;
                detail.iter().try_for_each(|d| write!(f, " {d}"))
            }
            ServerFrame::RoomNames { room, names } => {
                write!(f, " {room}")?;
                names.iter().try_for_each(|n| write!(f, " {n}"))
            }
            ServerFrame::RoomJoin { room, name } => write!(f, " {room} {name}"),
            ServerFrame::RoomLeave { room, name, text } => {
                write!(f, " {room} {name}")?;
                text.iter().try_for_each(|t| write!(f, " {t}"))
            }
            ServerFrame::Say {
                room: first,
                from: second,
                text,
            }
            | ServerFrame::Tell {
                from: first,
                to: second,
                text,
            }
            | ServerFrame::Topic {
                room: first,
                setter: second,
                text,
            } => write!(f, " {first} {second} {text}"),
            ServerFrame::NoTopic(room) => write!(f, " {room}"),
            ServerFrame::Rooms(rooms) => rooms
                .iter()
                .try_for_each(|(room, count)| write!(f, " {room} {count}")),
            ServerFrame::History { room, count } => {
                room.iter().try_for_each(|r| write!(f, " {r}"))?;
                write!(f, " {count}")
            }
            ServerFrame::Hist {
                room,
                time,
                from,
                text,
            } => {
                room.iter().try_for_each(|r| write!(f, " {r}"))?;
                write!(f, " {time} {from} {text}")
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
            (ServerFrame::Registered("alice".into()), "REGISTERED alice"),
            (
                ServerFrame::Unregistered("alice".into()),
                "UNREGISTERED alice",
            ),
            (
                ServerFrame::Ok {
                    verb: "KICK".into(),
                    name: "bob".into(),
                },
                "OK KICK bob",
            ),
            (ServerFrame::Bans(Vec::new()), "BANS"),
            (
                ServerFrame::Bans(vec![(
                    "bob".into(),
                    "2026-11-29T12:00:00.123Z".parse().unwrap(),
                )]),
                "BANS bob 2026-11-29T12:00:00.123Z",
            ),
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
            (
                ServerFrame::error(ErrorCode::BadRoom, "rooms start with #"),
                "ERROR bad-room rooms start with #",
            ),
            (
                ServerFrame::UnknownError {
                    code: "slow-down".into(),
                    detail: Some("too fast".into()),
                },
                "ERROR slow-down too fast",
            ),
            (
                ServerFrame::UnknownError {
                    code: "Bad-Name".into(),
                    detail: None,
                },
                "ERROR Bad-Name",
            ),
            (
                ServerFrame::RoomNames {
                    room: "#rust".into(),
                    names: vec!["alice".into(), "bob".into()],
                },
                "NAMES #rust alice bob",
            ),
            (
                ServerFrame::RoomNames {
                    room: "#Empty".into(),
                    names: vec![],
                },
                "NAMES #Empty",
            ),
            (
                ServerFrame::RoomJoin {
                    room: "#rust".into(),
                    name: "alice".into(),
                },
                "JOIN #rust alice",
            ),
            (
                ServerFrame::RoomLeave {
                    room: "#rust".into(),
                    name: "alice".into(),
                    text: None,
                },
                "LEAVE #rust alice",
            ),
            (
                ServerFrame::RoomLeave {
                    room: "#rust".into(),
                    name: "alice".into(),
                    text: Some("later".into()),
                },
                "LEAVE #rust alice later",
            ),
            (
                ServerFrame::Say {
                    room: "#rust".into(),
                    from: "alice".into(),
                    text: " hi  both ".into(),
                },
                "SAY #rust alice  hi  both ",
            ),
            (
                ServerFrame::Tell {
                    from: "alice".into(),
                    to: "bob".into(),
                    text: "see you at 5?".into(),
                },
                "TELL alice bob see you at 5?",
            ),
            (
                ServerFrame::Topic {
                    room: "#rust".into(),
                    setter: "bob".into(),
                    text: "async book club".into(),
                },
                "TOPIC #rust bob async book club",
            ),
            (ServerFrame::NoTopic("#rust".into()), "TOPIC #rust"),
            (ServerFrame::Rooms(vec![]), "ROOMS"),
            (
                ServerFrame::Rooms(vec![("#ops-2".into(), 1), ("#Rust".into(), 12)]),
                "ROOMS #ops-2 1 #Rust 12",
            ),
            (
                ServerFrame::History {
                    room: Some("#rust".into()),
                    count: 2,
                },
                "HISTORY #rust 2",
            ),
            (
                ServerFrame::History {
                    room: None,
                    count: 0,
                },
                "HISTORY 0",
            ),
            (
                ServerFrame::Hist {
                    room: Some("#rust".into()),
                    time: "2026-11-29T12:00:00.123Z".parse().unwrap(),
                    from: "bob".into(),
                    text: "anyone here?".into(),
                },
                "HIST #rust 2026-11-29T12:00:00.123Z bob anyone here?",
            ),
            (
                ServerFrame::Hist {
                    room: None,
                    time: "2026-11-29T12:00:03.456Z".parse().unwrap(),
                    from: "alice".into(),
                    text: " hi ".into(),
                },
                "HIST 2026-11-29T12:00:03.456Z alice  hi ",
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
        let frame = ServerFrame::RoomNames {
            room: "#rust".into(),
            names: names.iter().map(|n| n.to_string()).collect(),
        };
        assert_eq!(
            ServerFrame::room_names_bytes("#rust", names),
            frame.to_bytes()
        );
        assert_eq!(
            ServerFrame::room_names_bytes("#rust", []),
            "NAMES #rust\n".as_bytes()
        );
    }

    #[test]
    fn a_first_argument_with_a_hash_is_a_room() {
        assert_eq!(
            ServerFrame::parse("JOIN bob"),
            Ok(ServerFrame::Join("bob".into()))
        );
        assert!(matches!(
            ServerFrame::parse("JOIN #rust bob"),
            Ok(ServerFrame::RoomJoin { .. })
        ));
        assert_eq!(ServerFrame::parse("NAMES"), Ok(ServerFrame::Names(vec![])));
        assert_eq!(
            ServerFrame::parse("NAMES #rust"),
            Ok(ServerFrame::RoomNames {
                room: "#rust".into(),
                names: vec![]
            })
        );
        assert!(matches!(
            ServerFrame::parse("LEAVE bob #rust"),
            Ok(ServerFrame::Leave { .. })
        ));
    }

    #[test]
    fn unknown_error_codes_are_kept_as_sent() {
        assert_eq!(
            ServerFrame::parse("ERROR nope"),
            Ok(ServerFrame::UnknownError {
                code: "nope".into(),
                detail: None
            })
        );
        assert_eq!(
            ServerFrame::parse("ERROR too-many-rooms"),
            Ok(ServerFrame::Error {
                code: ErrorCode::TooManyRooms,
                detail: None
            })
        );
    }

    #[test]
    fn malformed_lines_are_reported() {
        for line in [
            "",
            "HELLO",
            "WELCOME",
            "MSG alice",
            "DROPPED x",
            "ERROR",
            "ERROR ",
            "ERROR  detail",
            "JOIN #rust",
            "LEAVE #rust",
            "SAY #rust alice",
            "SAY rust alice hi",
            "SAY",
            "TELL alice bob",
            "TELL alice",
            "TOPIC",
            "TOPIC rust",
            "TOPIC #rust bob",
            "ROOMS #rust",
            "ROOMS #rust x",
            "ROOMS rust 1",
            "ROOMS #a 1 #b",
            "HISTORY",
            "HISTORY #rust",
            "HISTORY -1",
            "HISTORY #rust x",
            "HIST",
            "HIST #rust bob hi",
            "HIST yesterday bob hi",
            "HIST #rust 2026-11-29T12:00:00.123Z bob",
            "HIST 2026-11-29T12:00:00.123+01:00 bob hi",
        ] {
            assert!(ServerFrame::parse(line).is_err(), "{line:?}");
        }
    }
}
