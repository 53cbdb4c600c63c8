//! Our protocol, through `chat-protocol`: frames are built and, except for
//! the three that come by the million (`MSG`, `JOIN`, `NAMES`), parsed by
//! the protocol crate itself. The hot three are split by hand so that a
//! delivery costs no allocation.

use chat_protocol::{ClientFrame, ErrorCode, ServerFrame, ServerFrameRef};

use crate::dialect::Event;

/// `MSG ` as the client writes it, ahead of each bench text.
pub const MSG_PREFIX: &[u8] = b"MSG ";

/// The `NAME` frame with its line ending.
pub fn login(name: &str) -> String {
    format!("{}\n", ClientFrame::Name(name.to_owned()))
}

/// `SAY ` as the client writes it, ahead of the room and each bench text.
pub const SAY_PREFIX: &[u8] = b"SAY ";

/// The `JOIN <room>` frame with its line ending.
pub fn join(room: &str) -> String {
    format!("{}\n", ClientFrame::Join(room.to_owned()))
}

/// The `PING` frame with its line ending.
pub fn ping(token: &str) -> String {
    format!("{}\n", ClientFrame::Ping(Some(token.to_owned())))
}

pub fn parse(line: &[u8]) -> Event<'_> {
    let (verb, rest) = match memchr::memchr(b' ', line) {
        Some(at) => (&line[..at], &line[at + 1..]),
        None => (line, &b""[..]),
    };
    match verb {
        // Version 2: a frame whose first argument is a room.
        _ if rest.starts_with(b"#") => room_frame(line),
        b"MSG" => match memchr::memchr(b' ', rest) {
            Some(at) => Event::Text(&rest[at + 1..]),
            None => Event::Error(line),
        },
        b"JOIN" => Event::Join(rest),
        b"NAMES" => Event::Names(rest),
        b"PONG" => Event::Pong(rest),
        _ => {
            let Ok(line) = std::str::from_utf8(line) else {
                return Event::Error(line);
            };
            match ServerFrame::parse(line) {
                Ok(ServerFrame::Welcome(_)) => Event::Welcome,
                Ok(ServerFrame::Dropped(n)) => Event::Dropped(n),
                Ok(ServerFrame::Error {
                    code: ErrorCode::ServerFull,
                    ..
                }) => Event::Full,
                Ok(ServerFrame::Error { .. } | ServerFrame::UnknownError { .. }) | Err(_) => {
                    Event::Error(line.as_bytes())
                }
                Ok(_) => Event::Other,
            }
        }
    }
}

/// A frame about a room: the bench needs its `NAMES` (the reply to a
/// `JOIN`) and its `SAY`s; `JOIN`, `LEAVE` and `TOPIC` of others are noise.
fn room_frame(line: &[u8]) -> Event<'_> {
    match ServerFrameRef::from_bytes(line) {
        Ok(ServerFrameRef::RoomNames { room, .. }) => Event::RoomNames(room.as_bytes()),
        Ok(ServerFrameRef::Say { room, text, .. }) => Event::Say {
            room: room.as_bytes(),
            text: text.as_bytes(),
        },
        Ok(_) => Event::Other,
        Err(_) => Event::Error(line),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        assert_eq!(login("u1_3"), "NAME u1_3\n");
        assert_eq!(parse(b"WELCOME bob"), Event::Welcome);
        assert_eq!(parse(b"NAMES a b"), Event::Names(b"a b"));
        assert_eq!(parse(b"JOIN a"), Event::Join(b"a"));
        assert_eq!(parse(b"MSG a m 1 2 3"), Event::Text(b"m 1 2 3"));
        assert_eq!(parse(b"DROPPED 12"), Event::Dropped(12));
        assert_eq!(parse(b"PONG sent"), Event::Pong(b"sent"));
        assert_eq!(parse(b"ERROR server-full go away"), Event::Full);
        assert_eq!(
            parse(b"ERROR name-taken x"),
            Event::Error(b"ERROR name-taken x")
        );
        assert_eq!(parse(b"LEAVE a"), Event::Other);
        assert_eq!(join("#r1"), "JOIN #r1\n");
        assert_eq!(parse(b"NAMES #r1 a b"), Event::RoomNames(b"#r1"));
        assert_eq!(parse(b"JOIN #r1 b"), Event::Other);
        assert_eq!(
            parse(b"SAY #r1 a m 1 2 3"),
            Event::Say {
                room: b"#r1",
                text: b"m 1 2 3"
            }
        );
    }
}
