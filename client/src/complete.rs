//! Tab completion: the word before the cursor, completed from what the
//! client knows.
//!
//! - A `/word` at the start of the line is a command.
//! - A word starting with `#` is a room: the joined ones, then those of the
//!   last `/rooms` answer (only joined ones after `/go` and `/part`).
//! - Any other word is a name: everyone in the lobby, as `NAMES`, `JOIN`
//!   and `LEAVE` said. The first word of a message completes to `name: `,
//!   the way one addresses someone in a chat.
//!
//! Matching ignores case, as the server's comparisons do; the completion is
//! spelled as the server spells the name or room.

use chat_protocol::{is_valid_name, is_valid_room, name_key, room_key};

use crate::commands::{argument_of, Argument, WORDS};
use crate::rooms::Rooms;

/// One possible completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// What the list of candidates shows.
    pub display: String,
    /// What replaces the word.
    pub replacement: String,
}

/// Where the word being completed starts in `line`, and what it could be.
pub fn complete(line: &str, pos: usize, rooms: &Rooms) -> (usize, Vec<Candidate>) {
    let before = line.get(..pos).unwrap_or(line);
    let start = before.rfind(' ').map_or(0, |space| space + 1);
    let word = &before[start..];
    let earlier: Vec<&str> = before[..start]
        .split(' ')
        .filter(|w| !w.is_empty())
        .collect();
    let command = line.starts_with('/') && !line.starts_with("//");

    let candidates = if command && earlier.is_empty() {
        if start > 0 {
            // Spaces before the command word: not a command any more.
            Vec::new()
        } else {
            matching(WORDS.iter().copied(), word, str::to_ascii_lowercase, " ")
        }
    } else if command {
        let argument = if earlier.len() == 1 {
            argument_of(earlier[0])
        } else {
            Argument::Other
        };
        match argument {
            Argument::JoinedRoom => matching(rooms.joined_rooms(), word, room_key, " "),
            Argument::AnyRoom => matching(rooms.known_rooms().into_iter(), word, room_key, " "),
            Argument::Name => matching(rooms.names(), word, name_key, " "),
            Argument::Other => words(rooms, word, " "),
        }
    } else if earlier.is_empty() && start == 0 {
        words(rooms, word, ": ")
    } else {
        words(rooms, word, " ")
    };
    (start, candidates)
}

/// A room or a name in a text, unless there is no word to go on.
fn words(rooms: &Rooms, word: &str, after_name: &str) -> Vec<Candidate> {
    if word.starts_with('#') {
        matching(rooms.known_rooms().into_iter(), word, room_key, " ")
    } else if word.is_empty() {
        Vec::new()
    } else {
        matching(rooms.names(), word, name_key, after_name)
    }
}

/// The `options` that start with `word` (compared by `key`), each followed
/// by `after` when it replaces the word. Only names and rooms within the
/// rules are offered: what a server sends is never typed for the user
/// unless it is plainly a name or a room.
fn matching<'a>(
    options: impl Iterator<Item = &'a str>,
    word: &str,
    key: fn(&str) -> String,
    after: &str,
) -> Vec<Candidate> {
    let wanted = key(word);
    options
        .filter(|option| option.starts_with('/') || is_valid_name(option) || is_valid_room(option))
        .filter(|option| key(option).starts_with(&wanted))
        .map(|option| Candidate {
            display: option.to_owned(),
            replacement: format!("{option}{after}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_protocol::ServerFrame;

    fn rooms() -> Rooms {
        let mut rooms = Rooms::default();
        for line in [
            "WELCOME alice",
            "NAMES alice Bob bobby b\x1bx carol",
            "NAMES #Rust alice bob",
            "NAMES #ops alice",
            "ROOMS #go 4 #ops 1 #rust 2 #ruby 1",
        ] {
            rooms.observe(&ServerFrame::parse(line).expect("a frame"));
        }
        rooms
    }

    /// The replacements for the word at the end of `line`.
    fn at_end(line: &str) -> Vec<String> {
        let (start, candidates) = complete(line, line.len(), &rooms());
        assert!(start <= line.len());
        candidates.into_iter().map(|c| c.replacement).collect()
    }

    #[test]
    fn commands_complete_at_the_start() {
        assert_eq!(at_end("/j"), ["/join "]);
        assert_eq!(at_end("/H"), ["/help ", "/history "]);
        assert_eq!(
            at_end("/"),
            WORDS.iter().map(|w| format!("{w} ")).collect::<Vec<_>>()
        );
        assert_eq!(at_end("/zz"), Vec::<String>::new());
        assert_eq!(at_end(" /j"), Vec::<String>::new());
    }

    #[test]
    fn rooms_complete_after_room_commands() {
        assert_eq!(at_end("/join #r"), ["#Rust ", "#ruby "]);
        assert_eq!(at_end("/join "), ["#Rust ", "#ops ", "#go ", "#ruby "]);
        assert_eq!(at_end("/go "), ["#Rust ", "#ops "]);
        assert_eq!(at_end("/part #R"), ["#Rust "]);
        assert_eq!(at_end("/who #g"), ["#go "]);
    }

    #[test]
    fn names_complete_after_msg_and_in_texts() {
        assert_eq!(at_end("/msg b"), ["Bob ", "bobby "]);
        assert_eq!(at_end("/msg BOBB"), ["bobby "]);
        assert_eq!(at_end("/msg "), ["alice ", "Bob ", "bobby ", "carol "]);
        assert_eq!(at_end("ca"), ["carol: "]);
        assert_eq!(at_end("hi ca"), ["carol "]);
        assert_eq!(at_end("see #o"), ["#ops "]);
        assert_eq!(at_end("/msg bob hi c"), ["carol "]);
    }

    #[test]
    fn names_complete_after_the_operator_commands() {
        for command in ["/kick", "/ban", "/unban", "/mute", "/UNMUTE"] {
            assert_eq!(
                at_end(&format!("{command} b")),
                ["Bob ", "bobby "],
                "{command}"
            );
        }
        assert_eq!(at_end("/ban"), ["/ban ", "/bans "]);
        assert_eq!(at_end("/reg"), ["/register "]);
        assert_eq!(at_end("/ban bob 10m sp"), Vec::<String>::new());
    }

    #[test]
    fn nothing_to_go_on_completes_nothing() {
        assert_eq!(at_end(""), Vec::<String>::new());
        assert_eq!(at_end("hi "), Vec::<String>::new());
        assert_eq!(at_end("/quit "), Vec::<String>::new());
        assert_eq!(at_end("zed"), Vec::<String>::new());
    }

    #[test]
    fn the_word_is_the_one_before_the_cursor() {
        let rooms = rooms();
        let line = "hi ca and more";
        let (start, candidates) = complete(line, 5, &rooms);
        assert_eq!(start, 3);
        assert_eq!(candidates[0].replacement, "carol ");
        assert_eq!(candidates[0].display, "carol");
    }
}
