//! Our protocol, through `chat-protocol`: frames are built by the protocol
//! crate, and read through its borrowed view, [`ServerFrameRef`], which
//! splits a line into slices of itself: a delivery costs no allocation, as
//! the bench shares the cores with the server it measures.

use chat_protocol::{ClientFrame, ErrorCode, ServerFrameRef};

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
    match ServerFrameRef::from_bytes(line) {
        Ok(ServerFrameRef::Msg { text, .. }) => Event::Text(text.as_bytes()),
        Ok(ServerFrameRef::Join(name)) => Event::Join(name.as_bytes()),
        Ok(ServerFrameRef::Names(names)) => Event::Names(names.as_str().as_bytes()),
        Ok(ServerFrameRef::Pong(token)) => Event::Pong(token.unwrap_or_default().as_bytes()),
        Ok(ServerFrameRef::Welcome(_)) => Event::Welcome,
        // Version 2: a room's members, and its messages.
        Ok(ServerFrameRef::RoomNames { room, .. }) => Event::RoomNames(room.as_bytes()),
        Ok(ServerFrameRef::Say { room, text, .. }) => Event::Say {
            room: room.as_bytes(),
            text: text.as_bytes(),
        },
        Ok(ServerFrameRef::Dropped(n)) => Event::Dropped(n),
        Ok(ServerFrameRef::Error {
            code: ErrorCode::ServerFull,
            ..
        }) => Event::Full,
        Ok(ServerFrameRef::Error { .. } | ServerFrameRef::UnknownError { .. }) | Err(_) => {
            Event::Error(line)
        }
        Ok(_) => Event::Other,
    }
}

/// A frame about a room: the bench needs its `NAMES` (the reply to a
/// `JOIN`) and its `SAY`s; `JOIN`, `LEAVE` and `TOPIC` of others are noise.
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
        assert_eq!(parse(b"PONG"), Event::Pong(b""));
        assert_eq!(parse(b"NAMES"), Event::Names(b""));
        assert_eq!(parse(b"ERROR server-full go away"), Event::Full);
        assert_eq!(
            parse(b"ERROR name-taken x"),
            Event::Error(b"ERROR name-taken x")
        );
        assert_eq!(parse(b"LEAVE a"), Event::Other);
        assert_eq!(parse(b"MSG a"), Event::Error(b"MSG a"));
        assert_eq!(parse(b"what"), Event::Error(b"what"));
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
