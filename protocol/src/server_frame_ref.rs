//! A borrowed view of a server frame: the frame's parts as slices of the
//! line, with no allocation.
//!
//! This is the one parser of server frames. [`ServerFrame::parse`] is this
//! view made owned; code that reads frames by the million (`chat-bench`) or
//! tracks the lobby from the bus (the cluster room) uses the view directly
//! instead of matching prefixes such as `"JOIN "` by hand.

use crate::error::ErrorCode;
use crate::server_frame::{MalformedFrame, ServerFrame};
use crate::time::Timestamp;

/// A frame from the server, borrowed from its line.
///
/// Variants mirror [`ServerFrame`]'s. Frames whose first argument starts with
/// `#` are about that room, the others are the lobby's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerFrameRef<'a> {
    /// `WELCOME <name>`
    Welcome(&'a str),
    /// `NAMES <name> …`: the lobby's members.
    Names(NameList<'a>),
    /// `JOIN <name>`: someone logged in.
    Join(&'a str),
    /// `MSG <from> <text>`
    Msg { from: &'a str, text: &'a str },
    /// `LEAVE <name> [<text>]`: someone left the server.
    Leave {
        name: &'a str,
        text: Option<&'a str>,
    },
    /// `DROPPED <n>`
    Dropped(u64),
    /// `PONG [<token>]`
    Pong(Option<&'a str>),
    /// `BYE`
    Bye,
    /// `ERROR <code> [<detail>]` with a code this crate knows.
    Error {
        code: ErrorCode,
        detail: Option<&'a str>,
    },
    /// `ERROR <code> [<detail>]` with a code this crate does not know.
    UnknownError {
        code: &'a str,
        detail: Option<&'a str>,
    },
    /// `NAMES <room> <name> …`: a room's members.
    RoomNames { room: &'a str, names: NameList<'a> },
    /// `JOIN <room> <name>`
    RoomJoin { room: &'a str, name: &'a str },
    /// `LEAVE <room> <name> [<text>]`: someone parted a room.
    RoomLeave {
        room: &'a str,
        name: &'a str,
        text: Option<&'a str>,
    },
    /// `SAY <room> <from> <text>`
    Say {
        room: &'a str,
        from: &'a str,
        text: &'a str,
    },
    /// `TELL <from> <to> <text>`
    Tell {
        from: &'a str,
        to: &'a str,
        text: &'a str,
    },
    /// `TOPIC <room> <setter> <text>`
    Topic {
        room: &'a str,
        setter: &'a str,
        text: &'a str,
    },
    /// `TOPIC <room>`: the room has no topic.
    NoTopic(&'a str),
    /// `ROOMS [<room> <count> …]`
    Rooms(RoomList<'a>),
    /// `HISTORY [<room>] <k>`: `k` `HIST` frames follow.
    History { room: Option<&'a str>, count: u64 },
    /// `HIST [<room>] <time> <from> <text>`
    Hist {
        room: Option<&'a str>,
        time: Timestamp,
        from: &'a str,
        text: &'a str,
    },
    /// `REGISTERED <name>`
    Registered(&'a str),
    /// `UNREGISTERED <name>`
    Unregistered(&'a str),
    /// `OK <verb> <name>`: an operator's request was carried out.
    Ok { verb: &'a str, name: &'a str },
    /// `BANS [<name> <until> …]`
    Bans(BanList<'a>),
}

/// The bans of a `BANS` frame, as sent.
#[derive(Debug, Clone, Copy)]
pub struct BanList<'a> {
    /// Checked when parsed: pairs of a name and a time.
    raw: &'a str,
}

impl<'a> BanList<'a> {
    /// `raw` as a list, or `None` if it is not made of name and time pairs.
    fn checked(raw: &'a str) -> Option<BanList<'a>> {
        let mut tokens = raw.split(' ').filter(|t| !t.is_empty());
        while let Some(_name) = tokens.next() {
            tokens.next()?.parse::<Timestamp>().ok()?;
        }
        Some(BanList { raw })
    }

    /// Each banned name and when its ban ends, in the server's order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, Timestamp)> + 'a {
        let mut tokens = self.raw.split(' ').filter(|t| !t.is_empty());
        std::iter::from_fn(move || {
            let name = tokens.next()?;
            // Checked when parsed.
            let until = tokens.next()?.parse().ok()?;
            Some((name, until))
        })
    }
}

impl PartialEq for BanList<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for BanList<'_> {}

/// The names of a `NAMES` frame, as sent: space-separated, in the server's
/// order.
#[derive(Debug, Clone, Copy)]
pub struct NameList<'a> {
    raw: &'a str,
}

impl<'a> NameList<'a> {
    /// The names as they stand in the line, separated by spaces.
    pub fn as_str(&self) -> &'a str {
        self.raw
    }

    pub fn iter(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.raw.split(' ').filter(|n| !n.is_empty())
    }

    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

/// Two lists are equal when they hold the same names in the same order.
impl PartialEq for NameList<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for NameList<'_> {}

/// The rooms of a `ROOMS` frame with their member counts, as sent.
#[derive(Debug, Clone, Copy)]
pub struct RoomList<'a> {
    /// Checked when parsed: pairs of a `#room` and a decimal count.
    raw: &'a str,
}

impl<'a> RoomList<'a> {
    /// Splits `raw` into its pairs, or `None` if it is not made of them.
    fn checked(raw: &'a str) -> Option<RoomList<'a>> {
        let mut tokens = raw.split(' ').filter(|t| !t.is_empty());
        while let Some(room) = tokens.next() {
            let count = tokens.next()?;
            if !room.starts_with('#') || count.parse::<u64>().is_err() {
                return None;
            }
        }
        Some(RoomList { raw })
    }

    /// The pairs as they stand in the line.
    pub fn as_str(&self) -> &'a str {
        self.raw
    }

    /// Each room and its member count, in the server's order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, u64)> + 'a {
        let mut tokens = self.raw.split(' ').filter(|t| !t.is_empty());
        std::iter::from_fn(move || {
            let room = tokens.next()?;
            // Checked when parsed, so the count is there and a number.
            let count = tokens.next()?.parse().ok()?;
            Some((room, count))
        })
    }

    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

impl PartialEq for RoomList<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for RoomList<'_> {}

/// Why a line is not a server frame, before it is tied to its line.
type Reason = &'static str;

impl<'a> ServerFrameRef<'a> {
    /// Parses one line, without its line ending, as the client sees it.
    /// Nothing is allocated unless the line is malformed.
    pub fn parse(line: &'a str) -> Result<ServerFrameRef<'a>, MalformedFrame> {
        parse(line).map_err(|reason| MalformedFrame {
            line: line.to_owned(),
            reason,
        })
    }

    /// Parses one line straight from a buffer; its `\n` or `\r\n` ending, if
    /// still there, is ignored. The bytes must be UTF-8.
    pub fn from_bytes(line: &'a [u8]) -> Result<ServerFrameRef<'a>, MalformedFrame> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match std::str::from_utf8(line) {
            Ok(line) => ServerFrameRef::parse(line),
            Err(_) => Err(MalformedFrame {
                line: String::from_utf8_lossy(line).into_owned(),
                reason: "not UTF-8",
            }),
        }
    }

    /// The frame's verb as sent on the wire.
    pub fn verb(&self) -> &'static str {
        match self {
            ServerFrameRef::Welcome(_) => "WELCOME",
            ServerFrameRef::Names(_) | ServerFrameRef::RoomNames { .. } => "NAMES",
            ServerFrameRef::Join(_) | ServerFrameRef::RoomJoin { .. } => "JOIN",
            ServerFrameRef::Msg { .. } => "MSG",
            ServerFrameRef::Leave { .. } | ServerFrameRef::RoomLeave { .. } => "LEAVE",
            ServerFrameRef::Dropped(_) => "DROPPED",
            ServerFrameRef::Pong(_) => "PONG",
            ServerFrameRef::Bye => "BYE",
            ServerFrameRef::Error { .. } | ServerFrameRef::UnknownError { .. } => "ERROR",
            ServerFrameRef::Say { .. } => "SAY",
            ServerFrameRef::Tell { .. } => "TELL",
            ServerFrameRef::Topic { .. } | ServerFrameRef::NoTopic(_) => "TOPIC",
            ServerFrameRef::Rooms(_) => "ROOMS",
            ServerFrameRef::History { .. } => "HISTORY",
            ServerFrameRef::Hist { .. } => "HIST",
            ServerFrameRef::Registered(_) => "REGISTERED",
            ServerFrameRef::Unregistered(_) => "UNREGISTERED",
            ServerFrameRef::Ok { .. } => "OK",
            ServerFrameRef::Bans(_) => "BANS",
        }
    }

    /// The room the frame is about; `None` for the lobby's frames and for
    /// those about no room (`TELL`, `ROOMS`, `PONG`, …).
    pub fn room(&self) -> Option<&'a str> {
        match *self {
            ServerFrameRef::RoomNames { room, .. }
            | ServerFrameRef::RoomJoin { room, .. }
            | ServerFrameRef::RoomLeave { room, .. }
            | ServerFrameRef::Say { room, .. }
            | ServerFrameRef::Topic { room, .. }
            | ServerFrameRef::NoTopic(room) => Some(room),
            ServerFrameRef::History { room, .. } | ServerFrameRef::Hist { room, .. } => room,
            _ => None,
        }
    }

    /// The owned frame.
    pub fn into_owned(self) -> ServerFrame {
        let owned = |s: &str| s.to_owned();
        let names = |list: NameList<'_>| list.iter().map(owned).collect();
        match self {
            ServerFrameRef::Welcome(name) => ServerFrame::Welcome(owned(name)),
            ServerFrameRef::Names(list) => ServerFrame::Names(names(list)),
            ServerFrameRef::Join(name) => ServerFrame::Join(owned(name)),
            ServerFrameRef::Msg { from, text } => ServerFrame::Msg {
                from: owned(from),
                text: owned(text),
            },
            ServerFrameRef::Leave { name, text } => ServerFrame::Leave {
                name: owned(name),
                text: text.map(owned),
            },
            ServerFrameRef::Dropped(n) => ServerFrame::Dropped(n),
            ServerFrameRef::Pong(token) => ServerFrame::Pong(token.map(owned)),
            ServerFrameRef::Bye => ServerFrame::Bye,
            ServerFrameRef::Error { code, detail } => ServerFrame::Error {
                code,
                detail: detail.map(owned),
            },
            ServerFrameRef::UnknownError { code, detail } => ServerFrame::UnknownError {
                code: owned(code),
                detail: detail.map(owned),
            },
            ServerFrameRef::RoomNames { room, names: list } => ServerFrame::RoomNames {
                room: owned(room),
                names: names(list),
            },
            ServerFrameRef::RoomJoin { room, name } => ServerFrame::RoomJoin {
                room: owned(room),
                name: owned(name),
            },
            ServerFrameRef::RoomLeave { room, name, text } => ServerFrame::RoomLeave {
                room: owned(room),
                name: owned(name),
                text: text.map(owned),
            },
            ServerFrameRef::Say { room, from, text } => ServerFrame::Say {
                room: owned(room),
                from: owned(from),
                text: owned(text),
            },
            ServerFrameRef::Tell { from, to, text } => ServerFrame::Tell {
                from: owned(from),
                to: owned(to),
                text: owned(text),
            },
            ServerFrameRef::Topic { room, setter, text } => ServerFrame::Topic {
                room: owned(room),
                setter: owned(setter),
                text: owned(text),
            },
            ServerFrameRef::NoTopic(room) => ServerFrame::NoTopic(owned(room)),
            ServerFrameRef::Rooms(list) => {
                ServerFrame::Rooms(list.iter().map(|(r, n)| (owned(r), n)).collect())
            }
            ServerFrameRef::History { room, count } => ServerFrame::History {
                room: room.map(owned),
                count,
            },
            ServerFrameRef::Hist {
                room,
                time,
                from,
                text,
            } => ServerFrame::Hist {
                room: room.map(owned),
                time,
                from: owned(from),
                text: owned(text),
            },
            ServerFrameRef::Registered(name) => ServerFrame::Registered(owned(name)),
            ServerFrameRef::Unregistered(name) => ServerFrame::Unregistered(owned(name)),
            ServerFrameRef::Ok { verb, name } => ServerFrame::Ok {
                verb: owned(verb),
                name: owned(name),
            },
            ServerFrameRef::Bans(list) => {
                ServerFrame::Bans(list.iter().map(|(n, t)| (owned(n), t)).collect())
            }
        }
    }
}

impl From<ServerFrameRef<'_>> for ServerFrame {
    fn from(frame: ServerFrameRef<'_>) -> ServerFrame {
        frame.into_owned()
    }
}

/// Splits off the first space-separated token; the rest is what follows that
/// one space, if there is one.
fn token(rest: &str) -> (&str, Option<&str>) {
    match rest.split_once(' ') {
        Some((token, rest)) => (token, Some(rest)),
        None => (rest, None),
    }
}

/// Splits `rest` into its room, if its first token is one (`#` and a valid
/// name), and what follows that room and one space. A first token that
/// starts with `#` but is no room (`#` alone) is not taken for one, so that
/// every line reads back the same once written out again.
fn about_room(rest: &str) -> (Option<&str>, Option<&str>) {
    let (first, after) = token(rest);
    if crate::is_valid_room(first) {
        (Some(first), after)
    } else {
        (None, Some(rest))
    }
}

/// `<a> <b> <text>`: two tokens then a text, which may be empty but not
/// absent.
fn two_and_text(rest: Option<&str>) -> Option<(&str, &str, &str)> {
    let (a, rest) = rest?.split_once(' ')?;
    let (b, text) = rest.split_once(' ')?;
    (!a.is_empty() && !b.is_empty()).then_some((a, b, text))
}

/// An argument that may be missing; an empty one is missing too (a v1
/// `LEAVE` or `PONG` without its text).
fn non_empty(rest: Option<&str>) -> Option<&str> {
    rest.filter(|r| !r.is_empty())
}

fn parse(line: &str) -> Result<ServerFrameRef<'_>, Reason> {
    let (verb, rest) = token(line);
    Ok(match verb {
        "WELCOME" => ServerFrameRef::Welcome(non_empty(rest).ok_or("WELCOME without a name")?),
        "NAMES" => match about_room(rest.unwrap_or("")) {
            (Some(room), names) => ServerFrameRef::RoomNames {
                room,
                names: NameList {
                    raw: names.unwrap_or(""),
                },
            },
            (None, names) => {
                let raw = names.unwrap_or("");
                // A name never starts with `#`: such a list is no lobby's.
                if raw.split(' ').any(|n| n.starts_with('#')) {
                    return Err("NAMES with a room where a name is due");
                }
                ServerFrameRef::Names(NameList { raw })
            }
        },
        "JOIN" => match about_room(non_empty(rest).ok_or("JOIN without a name")?) {
            (Some(room), name) => ServerFrameRef::RoomJoin {
                room,
                name: non_empty(name).ok_or("JOIN of a room without a name")?,
            },
            (None, name) => ServerFrameRef::Join(name.unwrap_or("")),
        },
        "MSG" => {
            let (from, text) = rest
                .and_then(|r| r.split_once(' '))
                .ok_or("MSG without sender and text")?;
            ServerFrameRef::Msg { from, text }
        }
        "LEAVE" => match about_room(non_empty(rest).ok_or("LEAVE without a name")?) {
            (Some(room), rest) => {
                let (name, text) = token(non_empty(rest).ok_or("LEAVE of a room without a name")?);
                ServerFrameRef::RoomLeave {
                    room,
                    name,
                    text: non_empty(text),
                }
            }
            (None, rest) => {
                let (name, text) = token(rest.unwrap_or(""));
                if name.is_empty() {
                    return Err("LEAVE without a name");
                }
                ServerFrameRef::Leave {
                    name,
                    text: non_empty(text),
                }
            }
        },
        "DROPPED" => ServerFrameRef::Dropped(
            rest.and_then(|r| r.parse().ok())
                .ok_or("DROPPED without a count")?,
        ),
        "PONG" => ServerFrameRef::Pong(non_empty(rest)),
        "BYE" => ServerFrameRef::Bye,
        "ERROR" => {
            let (code, detail) = token(non_empty(rest).ok_or("ERROR without a code")?);
            if code.is_empty() {
                return Err("ERROR without a code");
            }
            let detail = non_empty(detail);
            match code.parse() {
                Ok(code) => ServerFrameRef::Error { code, detail },
                Err(_) => ServerFrameRef::UnknownError { code, detail },
            }
        }
        "SAY" => {
            let (room, from, text) = two_and_text(rest)
                .filter(|(room, ..)| room.starts_with('#'))
                .ok_or("SAY without a room, a sender and a text")?;
            ServerFrameRef::Say { room, from, text }
        }
        "TELL" => {
            let (from, to, text) =
                two_and_text(rest).ok_or("TELL without a sender, a receiver and a text")?;
            ServerFrameRef::Tell { from, to, text }
        }
        "TOPIC" => match about_room(rest.unwrap_or("")) {
            (Some(room), None | Some("")) => ServerFrameRef::NoTopic(room),
            (Some(room), Some(rest)) => {
                let (setter, text) = rest.split_once(' ').ok_or("TOPIC without a text")?;
                ServerFrameRef::Topic { room, setter, text }
            }
            (None, _) => return Err("TOPIC without a room"),
        },
        "ROOMS" => ServerFrameRef::Rooms(
            RoomList::checked(rest.unwrap_or("")).ok_or("ROOMS without room and count pairs")?,
        ),
        "HISTORY" => {
            let (room, count) = about_room(non_empty(rest).ok_or("HISTORY without a count")?);
            let count = count
                .and_then(|c| c.parse().ok())
                .ok_or("HISTORY without a count")?;
            ServerFrameRef::History { room, count }
        }
        "HIST" => {
            let (room, rest) = about_room(rest.unwrap_or(""));
            let (time, from, text) =
                two_and_text(rest).ok_or("HIST without a time, a sender and a text")?;
            let time = time.parse().map_err(|_| "HIST with a bad time")?;
            ServerFrameRef::Hist {
                room,
                time,
                from,
                text,
            }
        }
        "REGISTERED" => {
            ServerFrameRef::Registered(non_empty(rest).ok_or("REGISTERED without a name")?)
        }
        "UNREGISTERED" => {
            ServerFrameRef::Unregistered(non_empty(rest).ok_or("UNREGISTERED without a name")?)
        }
        "OK" => {
            let (verb, name) = non_empty(rest)
                .and_then(|r| r.split_once(' '))
                .filter(|(verb, name)| !verb.is_empty() && !name.is_empty())
                .ok_or("OK without a verb and a name")?;
            ServerFrameRef::Ok { verb, name }
        }
        "BANS" => ServerFrameRef::Bans(
            BanList::checked(rest.unwrap_or("")).ok_or("BANS without name and time pairs")?,
        ),
        _ => return Err("unknown verb"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_slices_of_the_line() {
        let line = "SAY #rust alice  hi  both ";
        let ServerFrameRef::Say { room, from, text } = ServerFrameRef::parse(line).unwrap() else {
            panic!("not a SAY");
        };
        assert_eq!((room, from, text), ("#rust", "alice", " hi  both "));
        assert!(line.as_bytes().as_ptr_range().contains(&text.as_ptr()));
    }

    #[test]
    fn bytes_may_keep_their_line_ending() {
        for bytes in [&b"JOIN bob"[..], b"JOIN bob\n", b"JOIN bob\r\n"] {
            assert_eq!(
                ServerFrameRef::from_bytes(bytes),
                Ok(ServerFrameRef::Join("bob"))
            );
        }
        let error = ServerFrameRef::from_bytes(b"MSG a \xff\n").unwrap_err();
        assert_eq!(error.reason, "not UTF-8");
    }

    #[test]
    fn lists_iterate_without_allocating() {
        let Ok(ServerFrameRef::RoomNames { room, names }) =
            ServerFrameRef::parse("NAMES #rust alice Bob")
        else {
            panic!("not a room's NAMES");
        };
        assert_eq!(room, "#rust");
        assert_eq!(names.as_str(), "alice Bob");
        assert_eq!(names.iter().collect::<Vec<_>>(), ["alice", "Bob"]);
        assert!(!names.is_empty());

        let Ok(ServerFrameRef::Rooms(rooms)) = ServerFrameRef::parse("ROOMS #a 1 #B 22") else {
            panic!("not ROOMS");
        };
        assert_eq!(rooms.iter().collect::<Vec<_>>(), [("#a", 1), ("#B", 22)]);
        let Ok(ServerFrameRef::Rooms(none)) = ServerFrameRef::parse("ROOMS") else {
            panic!("not ROOMS");
        };
        assert!(none.is_empty());
    }

    #[test]
    fn lobby_names_may_be_empty() {
        let Ok(ServerFrameRef::Names(names)) = ServerFrameRef::parse("NAMES") else {
            panic!("not NAMES");
        };
        assert!(names.is_empty());
        assert_eq!(names.iter().count(), 0);
    }

    #[test]
    fn names_compare_by_their_names() {
        assert_eq!(
            ServerFrameRef::parse("NAMES a  b"),
            ServerFrameRef::parse("NAMES a b")
        );
        assert_ne!(
            ServerFrameRef::parse("NAMES a b"),
            ServerFrameRef::parse("NAMES b a")
        );
    }

    #[test]
    fn frames_tell_their_verb_and_room() {
        for (line, verb, room) in [
            ("WELCOME a", "WELCOME", None),
            ("NAMES a", "NAMES", None),
            ("NAMES #r a", "NAMES", Some("#r")),
            ("JOIN a", "JOIN", None),
            ("JOIN #r a", "JOIN", Some("#r")),
            ("LEAVE a bye", "LEAVE", None),
            ("LEAVE #r a bye", "LEAVE", Some("#r")),
            ("MSG a hi", "MSG", None),
            ("SAY #r a hi", "SAY", Some("#r")),
            ("TELL a b hi", "TELL", None),
            ("TOPIC #r", "TOPIC", Some("#r")),
            ("TOPIC #r a t", "TOPIC", Some("#r")),
            ("ROOMS #r 1", "ROOMS", None),
            ("HISTORY 0", "HISTORY", None),
            ("HISTORY #r 3", "HISTORY", Some("#r")),
            ("HIST 2026-11-29T12:00:00.123Z a hi", "HIST", None),
            ("HIST #r 2026-11-29T12:00:00.123Z a hi", "HIST", Some("#r")),
            ("DROPPED 3", "DROPPED", None),
            ("PONG", "PONG", None),
            ("BYE", "BYE", None),
            ("ERROR bad-room x", "ERROR", None),
            ("ERROR what x", "ERROR", None),
        ] {
            let frame = ServerFrameRef::parse(line).unwrap();
            assert_eq!(frame.verb(), verb, "{line}");
            assert_eq!(frame.room(), room, "{line}");
            assert_eq!(frame.into_owned().to_string(), line);
        }
    }

    #[test]
    fn the_time_is_read_into_a_timestamp() {
        let Ok(ServerFrameRef::Hist { time, .. }) =
            ServerFrameRef::parse("HIST #r 2026-11-29T12:00:00.123Z bob hi")
        else {
            panic!("not HIST");
        };
        assert_eq!(time.unix_millis(), 1_795_953_600_123);
    }

    #[test]
    fn a_topic_with_a_setter_needs_a_text() {
        assert_eq!(
            ServerFrameRef::parse("TOPIC #r "),
            Ok(ServerFrameRef::NoTopic("#r"))
        );
        assert!(ServerFrameRef::parse("TOPIC #r bob").is_err());
        assert_eq!(
            ServerFrameRef::parse("TOPIC #r bob "),
            Ok(ServerFrameRef::Topic {
                room: "#r",
                setter: "bob",
                text: ""
            })
        );
    }
}
