//! Frames a client sends to the server.

use std::fmt;
use std::num::NonZeroU64;
use std::time::Duration;

use crate::account::{format_duration, parse_duration, Password, DURATION_RULES, PASSWORD_RULES};
use crate::error::ErrorCode;
use crate::text::{
    forbidden_char, forbidden_char_description, is_blank, is_valid_name, is_valid_room,
};

/// The verbs a client may send. The server matches them case-insensitively.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Name,
    Msg,
    Leave,
    Who,
    Ping,
    Join,
    Part,
    Say,
    Tell,
    Topic,
    Rooms,
    History,
    Register,
    Password,
    Unregister,
    Kick,
    Ban,
    Unban,
    Mute,
    Unmute,
    Bans,
}

impl Verb {
    /// Every verb: version 1's, then version 2's, then version 3's.
    pub const ALL: [Verb; 21] = [
        Verb::Name,
        Verb::Msg,
        Verb::Leave,
        Verb::Who,
        Verb::Ping,
        Verb::Join,
        Verb::Part,
        Verb::Say,
        Verb::Tell,
        Verb::Topic,
        Verb::Rooms,
        Verb::History,
        Verb::Register,
        Verb::Password,
        Verb::Unregister,
        Verb::Kick,
        Verb::Ban,
        Verb::Unban,
        Verb::Mute,
        Verb::Unmute,
        Verb::Bans,
    ];

    /// The verb in its canonical (upper case) form.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Name => "NAME",
            Verb::Msg => "MSG",
            Verb::Leave => "LEAVE",
            Verb::Who => "WHO",
            Verb::Ping => "PING",
            Verb::Join => "JOIN",
            Verb::Part => "PART",
            Verb::Say => "SAY",
            Verb::Tell => "TELL",
            Verb::Topic => "TOPIC",
            Verb::Rooms => "ROOMS",
            Verb::History => "HISTORY",
            Verb::Register => "REGISTER",
            Verb::Password => "PASSWORD",
            Verb::Unregister => "UNREGISTER",
            Verb::Kick => "KICK",
            Verb::Ban => "BAN",
            Verb::Unban => "UNBAN",
            Verb::Mute => "MUTE",
            Verb::Unmute => "UNMUTE",
            Verb::Bans => "BANS",
        }
    }

    /// Looks a verb up, ignoring ASCII case.
    pub fn parse(s: &str) -> Option<Verb> {
        Verb::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s))
    }

    /// Whether the verb is allowed before login.
    pub fn allowed_before_login(self) -> bool {
        matches!(self, Verb::Name | Verb::Ping)
    }
}

/// A request from a client.
///
/// Frames without a room are the lobby's, as in version 1; rooms and names
/// are kept as the client spelled them (the server compares them with
/// [`room_key`](crate::room_key) and [`name_key`](crate::name_key)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// `NAME <name>`: log in.
    Name(String),
    /// `MSG <text>`: say something to the lobby; the text is kept exactly.
    Msg(String),
    /// `LEAVE [<text>]`: leave the server, with an optional parting text.
    Leave(Option<String>),
    /// `WHO`: ask for the lobby's `NAMES` list.
    Who,
    /// `PING [<token>]`: ask for a `PONG` once earlier frames are handled.
    Ping(Option<String>),
    /// `JOIN <room>`: enter a room, creating it if need be.
    Join(String),
    /// `PART <room> [<text>]`: leave a room, with an optional parting text.
    Part { room: String, text: Option<String> },
    /// `SAY <room> <text>`: a message to a room; the text is kept exactly.
    Say { room: String, text: String },
    /// `TELL <name> <text>`: a message to one user; the text is kept exactly.
    Tell { to: String, text: String },
    /// `TOPIC <room> [<text>]`: set the room's topic, or ask for it (`None`).
    Topic { room: String, text: Option<String> },
    /// `WHO <room>`: ask for a room's `NAMES` list.
    RoomWho(String),
    /// `ROOMS`: ask for the list of rooms.
    Rooms,
    /// `HISTORY [<room>] [<n>]`: ask for the last messages of a room, or of
    /// the lobby when `room` is `None`. A count larger than any `u64` is
    /// taken as `u64::MAX`; the server caps it at its `--history`.
    History {
        room: Option<String>,
        count: Option<NonZeroU64>,
    },
    /// `NAME <name> <password>`: log in to a registered name. The password
    /// may break the rules; it is then simply wrong.
    Login { name: String, password: Password },
    /// `REGISTER <password>`: register the name logged in under.
    Register(Password),
    /// `PASSWORD <old> <new>`: change the password; `new` follows the rules.
    ChangePassword { old: Password, new: Password },
    /// `UNREGISTER <password>`: the name is no longer registered.
    Unregister(Password),
    /// `KICK <name> [<text>]`: an operator closes a user's connection.
    Kick { name: String, text: Option<String> },
    /// `BAN <name> <duration> [<text>]`: an operator bans a name and the
    /// address it was connected from.
    Ban {
        name: String,
        duration: Duration,
        text: Option<String>,
    },
    /// `UNBAN <name>`: lifts the ban of the name and of its address.
    Unban(String),
    /// `MUTE <name> <duration> [<text>]`: the user's messages are refused
    /// for that long.
    Mute {
        name: String,
        duration: Duration,
        text: Option<String>,
    },
    /// `UNMUTE <name>`.
    Unmute(String),
    /// `BANS`: the bans in force.
    Bans,
}

/// Why a line is not an acceptable client frame: the `ERROR` to answer with.
///
/// Only the frame's form is judged here (`unknown-command`, `bad-text`,
/// `bad-name`, `bad-room`, `bad-count`, `empty-message`, in the contract's
/// order of precedence); whatever depends on the state (`not-logged-in`,
/// `not-in-room`, …) is the server's to decide afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The code for the `ERROR` frame.
    pub code: ErrorCode,
    /// The verb, when it was recognised. The server needs it to decide
    /// between this rejection and `not-logged-in` / `already-logged-in`.
    pub verb: Option<Verb>,
    /// A short human explanation for the `ERROR` frame.
    pub detail: String,
}

impl Rejection {
    pub fn new(code: ErrorCode, verb: Option<Verb>, detail: impl Into<String>) -> Rejection {
        Rejection {
            code,
            verb,
            detail: detail.into(),
        }
    }
}

impl Rejection {
    /// A frame over `max_line` bytes, skipped: the same words whatever
    /// carried it (a line, a WebSocket message).
    pub fn line_too_long(max_line: usize) -> Rejection {
        Rejection::new(
            ErrorCode::LineTooLong,
            None,
            format!("frames are at most {max_line} bytes; the line was skipped"),
        )
    }

    /// A frame that is not UTF-8, skipped.
    pub fn invalid_utf8() -> Rejection {
        Rejection::new(
            ErrorCode::InvalidUtf8,
            None,
            "frames must be UTF-8; the line was skipped",
        )
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}

impl std::error::Error for Rejection {}

/// What to tell a user whose name breaks the rules.
pub const NAME_RULES: &str =
    "a name is 1 to 32 ASCII letters, digits, '_', '-' or '.', starting with a letter or digit";

/// What to tell a user whose room name breaks the rules.
pub const ROOM_RULES: &str = "a room is '#' then 1 to 32 ASCII letters, digits, '_', '-' or '.', \
     starting with a letter or digit";

/// What to tell a user whose `HISTORY` arguments are wrong.
pub const COUNT_RULES: &str =
    "HISTORY takes an optional room, then an optional count: a decimal number from 1";

const COMMANDS: &str = "commands are NAME, MSG, LEAVE, WHO, PING, JOIN, PART, SAY, TELL, TOPIC, \
     ROOMS, HISTORY, REGISTER, PASSWORD, UNREGISTER, KICK, BAN, UNBAN, MUTE, UNMUTE and BANS";

impl ClientFrame {
    /// Parses one line (without its line ending).
    ///
    /// Checks are made in the order a user can act on, which is the
    /// contract's: an unknown verb first, then forbidden characters anywhere
    /// in the arguments (`bad-text`), then the form of the room, name or count
    /// (`bad-room`, `bad-name`, `bad-count`), then a missing text
    /// (`empty-message`).
    pub fn parse(line: &str) -> Result<ClientFrame, Rejection> {
        let (verb_text, rest) = match line.split_once(' ') {
            Some((verb, rest)) => (verb, Some(rest)),
            None => (line, None),
        };
        let Some(verb) = Verb::parse(verb_text) else {
            let detail = if line.is_empty() {
                format!("empty line; {COMMANDS}")
            } else {
                COMMANDS.to_owned()
            };
            return Err(Rejection::new(ErrorCode::UnknownCommand, None, detail));
        };
        let rest = rest.unwrap_or("");
        if let Some(c) = forbidden_char(rest) {
            let detail = format!("{} is not allowed", forbidden_char_description(c));
            return Err(Rejection::new(ErrorCode::BadText, Some(verb), detail));
        }
        Self::parse_arguments(verb, rest)
            .map_err(|(code, detail)| Rejection::new(code, Some(verb), detail))
    }

    /// The verb's own rules, once the verb is known and `rest` (everything
    /// after the verb and one space) is free of forbidden characters.
    fn parse_arguments(verb: Verb, rest: &str) -> Result<ClientFrame, (ErrorCode, &'static str)> {
        let empty = |what| (ErrorCode::EmptyMessage, what);
        Ok(match verb {
            Verb::Name => {
                let (name_text, password) = token(rest);
                let name = name(name_text)?;
                match password.filter(|p| !p.is_empty()) {
                    None => ClientFrame::Name(name),
                    Some(password) => ClientFrame::Login {
                        name,
                        password: Password::new(password),
                    },
                }
            }
            Verb::Msg if is_blank(rest) => return Err(empty("MSG needs a text")),
            Verb::Msg => ClientFrame::Msg(rest.to_owned()),
            Verb::Leave => ClientFrame::Leave(text(Some(rest))),
            Verb::Who if is_blank(rest) => ClientFrame::Who,
            Verb::Who => ClientFrame::RoomWho(room(rest)?),
            Verb::Ping if rest.is_empty() => ClientFrame::Ping(None),
            Verb::Ping => ClientFrame::Ping(Some(rest.to_owned())),
            Verb::Join => ClientFrame::Join(room(rest)?),
            Verb::Part => {
                let (room_text, rest) = token(rest);
                ClientFrame::Part {
                    room: room(room_text)?,
                    text: text(rest),
                }
            }
            Verb::Say => {
                let (room_text, rest) = token(rest);
                let room = room(room_text)?;
                let text = text(rest).ok_or(empty("SAY needs a room and a text"))?;
                ClientFrame::Say { room, text }
            }
            Verb::Tell => {
                let (name_text, rest) = token(rest);
                let to = name(name_text)?;
                let text = text(rest).ok_or(empty("TELL needs a name and a text"))?;
                ClientFrame::Tell { to, text }
            }
            Verb::Topic => {
                let (room_text, rest) = token(rest);
                ClientFrame::Topic {
                    room: room(room_text)?,
                    text: text(rest),
                }
            }
            Verb::Rooms => ClientFrame::Rooms,
            Verb::History => history(rest)?,
            Verb::Register => ClientFrame::Register(new_password(rest)?),
            Verb::Password => {
                let (old, new) = token(rest);
                ClientFrame::ChangePassword {
                    old: Password::new(old),
                    new: new_password(new.unwrap_or(""))?,
                }
            }
            Verb::Unregister => ClientFrame::Unregister(Password::new(rest)),
            Verb::Kick => {
                let (name_text, rest) = token(rest);
                ClientFrame::Kick {
                    name: name(name_text)?,
                    text: text(rest),
                }
            }
            Verb::Ban | Verb::Mute => {
                let (name_text, rest) = token(rest);
                let name = name(name_text)?;
                let (duration_text, rest) = token(rest.unwrap_or(""));
                let duration = parse_duration(duration_text)
                    .ok_or((ErrorCode::BadDuration, DURATION_RULES))?;
                ClientFrame::restriction(verb == Verb::Ban, name, duration, text(rest))
            }
            Verb::Unban => ClientFrame::Unban(name(rest)?),
            Verb::Unmute => ClientFrame::Unmute(name(rest)?),
            Verb::Bans => ClientFrame::Bans,
        })
    }

    /// The frame's verb.
    pub fn verb(&self) -> Verb {
        match self {
            ClientFrame::Name(_) => Verb::Name,
            ClientFrame::Msg(_) => Verb::Msg,
            ClientFrame::Leave(_) => Verb::Leave,
            ClientFrame::Who | ClientFrame::RoomWho(_) => Verb::Who,
            ClientFrame::Ping(_) => Verb::Ping,
            ClientFrame::Join(_) => Verb::Join,
            ClientFrame::Part { .. } => Verb::Part,
            ClientFrame::Say { .. } => Verb::Say,
            ClientFrame::Tell { .. } => Verb::Tell,
            ClientFrame::Topic { .. } => Verb::Topic,
            ClientFrame::Rooms => Verb::Rooms,
            ClientFrame::History { .. } => Verb::History,
            ClientFrame::Login { .. } => Verb::Name,
            ClientFrame::Register(_) => Verb::Register,
            ClientFrame::ChangePassword { .. } => Verb::Password,
            ClientFrame::Unregister(_) => Verb::Unregister,
            ClientFrame::Kick { .. } => Verb::Kick,
            ClientFrame::Ban { .. } => Verb::Ban,
            ClientFrame::Unban(_) => Verb::Unban,
            ClientFrame::Mute { .. } => Verb::Mute,
            ClientFrame::Unmute(_) => Verb::Unmute,
            ClientFrame::Bans => Verb::Bans,
        }
    }
}

impl ClientFrame {
    /// `BAN` (when `ban`) or `MUTE` of `name` for `duration`.
    pub fn restriction(
        ban: bool,
        name: String,
        duration: Duration,
        text: Option<String>,
    ) -> ClientFrame {
        if ban {
            ClientFrame::Ban {
                name,
                duration,
                text,
            }
        } else {
            ClientFrame::Mute {
                name,
                duration,
                text,
            }
        }
    }
}

/// A new password (`REGISTER`, `PASSWORD`): one that breaks the rules is
/// `weak-password`, a matter of the frame's form.
fn new_password(text: &str) -> Result<Password, (ErrorCode, &'static str)> {
    let password = Password::new(text);
    if password.is_acceptable() {
        Ok(password)
    } else {
        Err((ErrorCode::WeakPassword, PASSWORD_RULES))
    }
}

/// Splits off the first argument: the token up to the first space, and the
/// rest after that one space (`None` when there is no space at all).
fn token(rest: &str) -> (&str, Option<&str>) {
    match rest.split_once(' ') {
        Some((token, rest)) => (token, Some(rest)),
        None => (rest, None),
    }
}

/// A text argument: absent, empty or spaces only is no text.
fn text(rest: Option<&str>) -> Option<String> {
    rest.filter(|t| !is_blank(t)).map(str::to_owned)
}

fn name(text: &str) -> Result<String, (ErrorCode, &'static str)> {
    if is_valid_name(text) {
        Ok(text.to_owned())
    } else {
        Err((ErrorCode::BadName, NAME_RULES))
    }
}

fn room(text: &str) -> Result<String, (ErrorCode, &'static str)> {
    if is_valid_room(text) {
        Ok(text.to_owned())
    } else {
        Err((ErrorCode::BadRoom, ROOM_RULES))
    }
}

/// `HISTORY [<room>] [<n>]`: arguments are taken left to right, a first one
/// starting with `#` is the room, any other is the count, and nothing may
/// follow the count.
fn history(rest: &str) -> Result<ClientFrame, (ErrorCode, &'static str)> {
    if is_blank(rest) {
        return Ok(ClientFrame::History {
            room: None,
            count: None,
        });
    }
    let mut args = rest.split(' ');
    let mut next = args.next();
    let room = match next {
        Some(first) if first.starts_with('#') => {
            next = args.next();
            Some(room(first)?)
        }
        _ => None,
    };
    let count = match next {
        Some(count_text) => Some(count(count_text).ok_or((ErrorCode::BadCount, COUNT_RULES))?),
        None => None,
    };
    if args.next().is_some() {
        return Err((ErrorCode::BadCount, COUNT_RULES));
    }
    Ok(ClientFrame::History { room, count })
}

/// A decimal count from 1; one beyond `u64` is taken as `u64::MAX`, since
/// the server caps the count anyway.
fn count(text: &str) -> Option<NonZeroU64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value = text.bytes().fold(0u64, |n, digit| {
        n.saturating_mul(10).saturating_add(u64::from(digit - b'0'))
    });
    NonZeroU64::new(value)
}

/// Formats the frame as its line, without the line ending.
impl fmt::Display for ClientFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.verb().as_str())?;
        match self {
            ClientFrame::Name(arg)
            | ClientFrame::Msg(arg)
            | ClientFrame::Leave(Some(arg))
            | ClientFrame::Ping(Some(arg))
            | ClientFrame::Join(arg)
            | ClientFrame::RoomWho(arg) => write!(f, " {arg}"),
            ClientFrame::Leave(None)
            | ClientFrame::Who
            | ClientFrame::Ping(None)
            | ClientFrame::Rooms
            | ClientFrame::Bans => Ok(()),
            ClientFrame::Unban(name) | ClientFrame::Unmute(name) => write!(f, " {name}"),
            ClientFrame::Login { name, password } => write!(f, " {name} {}", password.expose()),
            ClientFrame::Register(password) | ClientFrame::Unregister(password) => {
                write!(f, " {}", password.expose())
            }
            ClientFrame::ChangePassword { old, new } => {
                write!(f, " {} {}", old.expose(), new.expose())
            }
            ClientFrame::Kick { name, text } => {
                write!(f, " {name}")?;
                text.iter().try_for_each(|t| write!(f, " {t}"))
            }
            ClientFrame::Ban {
                name,
                duration,
                text,
            }
            | ClientFrame::Mute {
                name,
                duration,
                text,
            } => {
                write!(f, " {name} {}", format_duration(*duration))?;
                text.iter().try_for_each(|t| write!(f, " {t}"))
            }
            ClientFrame::Say { room: first, text } | ClientFrame::Tell { to: first, text } => {
                write!(f, " {first} {text}")
            }
            ClientFrame::Part { room, text } | ClientFrame::Topic { room, text } => {
                write!(f, " {room}")?;
                text.iter().try_for_each(|t| write!(f, " {t}"))
            }
            ClientFrame::History { room, count } => {
                room.iter().try_for_each(|r| write!(f, " {r}"))?;
                count.iter().try_for_each(|n| write!(f, " {n}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(line: &str) -> ErrorCode {
        ClientFrame::parse(line).unwrap_err().code
    }

    #[test]
    fn parses_every_frame() {
        let cases = [
            ("NAME alice", ClientFrame::Name("alice".into())),
            ("MSG hello", ClientFrame::Msg("hello".into())),
            ("LEAVE", ClientFrame::Leave(None)),
            ("LEAVE see you", ClientFrame::Leave(Some("see you".into()))),
            ("WHO", ClientFrame::Who),
            ("PING", ClientFrame::Ping(None)),
            ("PING 42", ClientFrame::Ping(Some("42".into()))),
        ];
        for (line, frame) in cases {
            assert_eq!(ClientFrame::parse(line), Ok(frame.clone()), "{line}");
            assert_eq!(frame.to_string(), line);
        }
    }

    #[test]
    fn verbs_ignore_case() {
        assert_eq!(
            ClientFrame::parse("msg hi"),
            Ok(ClientFrame::Msg("hi".into()))
        );
        assert_eq!(
            ClientFrame::parse("Name Bob"),
            Ok(ClientFrame::Name("Bob".into()))
        );
        assert_eq!(ClientFrame::parse("wHo"), Ok(ClientFrame::Who));
    }

    #[test]
    fn message_text_is_kept_exactly() {
        assert_eq!(
            ClientFrame::parse("MSG  two  spaces  "),
            Ok(ClientFrame::Msg(" two  spaces  ".into()))
        );
        assert_eq!(
            ClientFrame::parse("MSG tab\there ✓"),
            Ok(ClientFrame::Msg("tab\there ✓".into()))
        );
    }

    #[test]
    fn empty_messages_are_refused() {
        assert_eq!(code("MSG"), ErrorCode::EmptyMessage);
        assert_eq!(code("MSG "), ErrorCode::EmptyMessage);
        assert_eq!(code("MSG     "), ErrorCode::EmptyMessage);
    }

    #[test]
    fn version_3_frames_parse_and_read_back() {
        let pw = |p: &str| Password::new(p);
        let cases = [
            (
                "NAME alice hunter22",
                ClientFrame::Login {
                    name: "alice".into(),
                    password: pw("hunter22"),
                },
            ),
            ("REGISTER hunter22", ClientFrame::Register(pw("hunter22"))),
            (
                "PASSWORD hunter22 correct-horse",
                ClientFrame::ChangePassword {
                    old: pw("hunter22"),
                    new: pw("correct-horse"),
                },
            ),
            (
                "UNREGISTER hunter22",
                ClientFrame::Unregister(pw("hunter22")),
            ),
            (
                "KICK bob",
                ClientFrame::Kick {
                    name: "bob".into(),
                    text: None,
                },
            ),
            (
                "KICK bob  be nice",
                ClientFrame::Kick {
                    name: "bob".into(),
                    text: Some(" be nice".into()),
                },
            ),
            (
                "BAN bob 10m spam",
                ClientFrame::Ban {
                    name: "bob".into(),
                    duration: Duration::from_secs(600),
                    text: Some("spam".into()),
                },
            ),
            (
                "MUTE bob 90s",
                ClientFrame::Mute {
                    name: "bob".into(),
                    duration: Duration::from_secs(90),
                    text: None,
                },
            ),
            ("UNBAN bob", ClientFrame::Unban("bob".into())),
            ("UNMUTE bob", ClientFrame::Unmute("bob".into())),
            ("BANS", ClientFrame::Bans),
        ];
        for (line, frame) in cases {
            assert_eq!(ClientFrame::parse(line), Ok(frame.clone()), "{line}");
            assert_eq!(frame.to_string(), line);
        }
        // A wrong-looking password at login is the server's to refuse.
        assert_eq!(
            ClientFrame::parse("NAME alice short"),
            Ok(ClientFrame::Login {
                name: "alice".into(),
                password: pw("short")
            })
        );
        assert_eq!(
            ClientFrame::parse("name alice "),
            Ok(ClientFrame::Name("alice".into()))
        );
    }

    #[test]
    fn version_3_form_errors_come_in_the_contracts_order() {
        assert_eq!(code("REGISTER short"), ErrorCode::WeakPassword);
        assert_eq!(code("REGISTER"), ErrorCode::WeakPassword);
        assert_eq!(code("REGISTER two words"), ErrorCode::WeakPassword);
        assert_eq!(code("PASSWORD hunter22"), ErrorCode::WeakPassword);
        assert_eq!(code("PASSWORD x short"), ErrorCode::WeakPassword);
        assert_eq!(code("KICK"), ErrorCode::BadName);
        assert_eq!(code("BAN b!d 10m"), ErrorCode::BadName);
        assert_eq!(code("BAN b!d nonsense"), ErrorCode::BadName);
        assert_eq!(code("BAN bob"), ErrorCode::BadDuration);
        assert_eq!(code("BAN bob 10x spam"), ErrorCode::BadDuration);
        assert_eq!(code("MUTE bob 0s"), ErrorCode::BadDuration);
        assert_eq!(code("MUTE bob 366d"), ErrorCode::BadDuration);
        assert_eq!(code("BAN bob\x07 1m"), ErrorCode::BadText);
        assert_eq!(code("REGISTER pass\x07word"), ErrorCode::BadText);
        assert_eq!(code("UNBAN"), ErrorCode::BadName);
        assert_eq!(code("UNMUTE bob extra"), ErrorCode::BadName);
    }

    #[test]
    fn a_password_never_shows_in_a_frames_debug() {
        let frame = ClientFrame::parse("PASSWORD hunter22 correct-horse").unwrap();
        let shown = format!("{frame:?}");
        assert!(!shown.contains("hunter22") && !shown.contains("correct-horse"));
    }

    #[test]
    fn bad_names_are_refused() {
        assert_eq!(code("NAME"), ErrorCode::BadName);
        assert_eq!(code("NAME "), ErrorCode::BadName);
        assert_eq!(code("NAME al!ce secret99"), ErrorCode::BadName);
        assert_eq!(code("NAME _alice"), ErrorCode::BadName);
        assert_eq!(
            code(&format!("NAME {}", "a".repeat(33))),
            ErrorCode::BadName
        );
    }

    #[test]
    fn control_characters_are_bad_text_in_names_and_texts() {
        assert_eq!(code("NAME al\x1bice"), ErrorCode::BadText);
        assert_eq!(code("MSG \x1b[2J"), ErrorCode::BadText);
        assert_eq!(code("MSG a\rb"), ErrorCode::BadText);
        assert_eq!(code("LEAVE bye\x07"), ErrorCode::BadText);
        assert_eq!(code("MSG \u{9b}31m"), ErrorCode::BadText);
        assert_eq!(code("MSG evil\u{202e}txt"), ErrorCode::BadText);
        assert_eq!(code("PING \0"), ErrorCode::BadText);
    }

    #[test]
    fn bad_text_details_call_bidi_controls_what_they_are() {
        let detail = |line: &str| ClientFrame::parse(line).unwrap_err().detail;
        assert_eq!(
            detail("MSG evil\u{202e}txt"),
            "bidirectional-override character U+202E (RIGHT-TO-LEFT OVERRIDE) is not allowed"
        );
        assert_eq!(
            detail("SAY #r a\u{2067}b"),
            "bidirectional-isolate character U+2067 (RIGHT-TO-LEFT ISOLATE) is not allowed"
        );
        assert_eq!(
            detail("MSG \x1b[2J"),
            "control character U+001B is not allowed"
        );
    }

    #[test]
    fn unknown_verbs_are_refused_with_no_verb() {
        for line in ["", "HELLO", "MSGX hi", "MSG\thi", " MSG hi", "NAMES"] {
            let rejection = ClientFrame::parse(line).unwrap_err();
            assert_eq!(rejection.code, ErrorCode::UnknownCommand, "{line:?}");
            assert_eq!(rejection.verb, None);
        }
    }

    #[test]
    fn rejections_name_the_verb_they_belong_to() {
        assert_eq!(ClientFrame::parse("msg").unwrap_err().verb, Some(Verb::Msg));
        assert_eq!(
            ClientFrame::parse("NAME !").unwrap_err().verb,
            Some(Verb::Name)
        );
    }

    #[test]
    fn blank_parting_text_is_no_text() {
        assert_eq!(ClientFrame::parse("LEAVE "), Ok(ClientFrame::Leave(None)));
        assert_eq!(ClientFrame::parse("LEAVE   "), Ok(ClientFrame::Leave(None)));
    }

    #[test]
    fn ping_token_is_echoed_exactly() {
        assert_eq!(ClientFrame::parse("PING "), Ok(ClientFrame::Ping(None)));
        assert_eq!(
            ClientFrame::parse("PING a b "),
            Ok(ClientFrame::Ping(Some("a b ".into())))
        );
    }

    #[test]
    fn who_without_a_room_is_the_lobbys() {
        assert_eq!(ClientFrame::parse("WHO "), Ok(ClientFrame::Who));
        assert_eq!(ClientFrame::parse("WHO   "), Ok(ClientFrame::Who));
        assert_eq!(
            ClientFrame::parse("who #Rust"),
            Ok(ClientFrame::RoomWho("#Rust".into()))
        );
    }

    #[test]
    fn who_with_anything_but_one_room_is_bad_room() {
        for line in ["WHO rust", "WHO is there", "WHO #a b", "WHO #", "WHO  #a"] {
            assert_eq!(code(line), ErrorCode::BadRoom, "{line:?}");
        }
    }

    #[test]
    fn only_name_and_ping_are_allowed_before_login() {
        let allowed: Vec<Verb> = Verb::ALL
            .into_iter()
            .filter(|v| v.allowed_before_login())
            .collect();
        assert_eq!(allowed, [Verb::Name, Verb::Ping]);
    }

    #[test]
    fn verbs_have_one_spelling_each() {
        for verb in Verb::ALL {
            assert_eq!(Verb::parse(verb.as_str()), Some(verb));
            assert_eq!(Verb::parse(&verb.as_str().to_lowercase()), Some(verb));
        }
    }

    fn history(room: Option<&str>, count: Option<u64>) -> ClientFrame {
        ClientFrame::History {
            room: room.map(str::to_owned),
            count: count.map(|n| NonZeroU64::new(n).unwrap()),
        }
    }

    #[test]
    fn parses_every_version_2_frame() {
        let cases = [
            ("JOIN #rust", ClientFrame::Join("#rust".into())),
            (
                "PART #rust",
                ClientFrame::Part {
                    room: "#rust".into(),
                    text: None,
                },
            ),
            (
                "PART #rust later",
                ClientFrame::Part {
                    room: "#rust".into(),
                    text: Some("later".into()),
                },
            ),
            (
                "SAY #rust hi both",
                ClientFrame::Say {
                    room: "#rust".into(),
                    text: "hi both".into(),
                },
            ),
            (
                "TELL bob see you at 5?",
                ClientFrame::Tell {
                    to: "bob".into(),
                    text: "see you at 5?".into(),
                },
            ),
            (
                "TOPIC #rust",
                ClientFrame::Topic {
                    room: "#rust".into(),
                    text: None,
                },
            ),
            (
                "TOPIC #rust async book club",
                ClientFrame::Topic {
                    room: "#rust".into(),
                    text: Some("async book club".into()),
                },
            ),
            ("WHO #rust", ClientFrame::RoomWho("#rust".into())),
            ("ROOMS", ClientFrame::Rooms),
            ("HISTORY", history(None, None)),
            ("HISTORY 5", history(None, Some(5))),
            ("HISTORY #rust", history(Some("#rust"), None)),
            ("HISTORY #rust 2", history(Some("#rust"), Some(2))),
        ];
        for (line, frame) in cases {
            assert_eq!(ClientFrame::parse(line), Ok(frame.clone()), "{line}");
            assert_eq!(frame.to_string(), line);
        }
    }

    #[test]
    fn version_2_verbs_ignore_case_but_rooms_keep_theirs() {
        assert_eq!(
            ClientFrame::parse("join #Rust"),
            Ok(ClientFrame::Join("#Rust".into()))
        );
        assert_eq!(
            ClientFrame::parse("Say #RUST x"),
            Ok(ClientFrame::Say {
                room: "#RUST".into(),
                text: "x".into()
            })
        );
        assert_eq!(ClientFrame::parse("rooms"), Ok(ClientFrame::Rooms));
        assert_eq!(ClientFrame::parse("hIsToRy 3"), Ok(history(None, Some(3))));
    }

    #[test]
    fn texts_are_everything_after_the_first_argument_and_one_space() {
        assert_eq!(
            ClientFrame::parse("SAY #r  two  spaces  "),
            Ok(ClientFrame::Say {
                room: "#r".into(),
                text: " two  spaces  ".into()
            })
        );
        assert_eq!(
            ClientFrame::parse("TELL Bob tab\there ✓"),
            Ok(ClientFrame::Tell {
                to: "Bob".into(),
                text: "tab\there ✓".into()
            })
        );
        assert_eq!(
            ClientFrame::parse("PART #r  bye "),
            Ok(ClientFrame::Part {
                room: "#r".into(),
                text: Some(" bye ".into())
            })
        );
        assert_eq!(
            ClientFrame::parse("TOPIC #r #not a room"),
            Ok(ClientFrame::Topic {
                room: "#r".into(),
                text: Some("#not a room".into())
            })
        );
    }

    #[test]
    fn blank_texts_are_no_texts() {
        for line in ["SAY #r", "SAY #r ", "SAY #r    ", "TELL bob", "TELL bob  "] {
            assert_eq!(code(line), ErrorCode::EmptyMessage, "{line:?}");
        }
        for line in ["PART #r", "PART #r ", "PART #r   "] {
            assert_eq!(
                ClientFrame::parse(line),
                Ok(ClientFrame::Part {
                    room: "#r".into(),
                    text: None
                }),
                "{line:?}"
            );
        }
        for line in ["TOPIC #r", "TOPIC #r ", "TOPIC #r   "] {
            assert_eq!(
                ClientFrame::parse(line),
                Ok(ClientFrame::Topic {
                    room: "#r".into(),
                    text: None
                }),
                "{line:?}"
            );
        }
    }

    #[test]
    fn a_room_is_one_token() {
        assert_eq!(code("JOIN #a b"), ErrorCode::BadRoom);
        assert_eq!(code("JOIN #a "), ErrorCode::BadRoom);
        assert_eq!(code("JOIN  #a"), ErrorCode::BadRoom);
        assert_eq!(code("SAY  #a hi"), ErrorCode::BadRoom);
    }

    #[test]
    fn bad_or_missing_rooms_are_bad_room() {
        for line in [
            "JOIN",
            "JOIN ",
            "JOIN rust",
            "JOIN #",
            "JOIN #_a",
            "JOIN #a!",
            "JOIN ##a",
            "PART",
            "PART rust bye",
            "SAY",
            "SAY rust hi",
            "SAY hi",
            "TOPIC",
            "TOPIC rust",
            "HISTORY #",
            "HISTORY #b!d 5",
        ] {
            assert_eq!(code(line), ErrorCode::BadRoom, "{line:?}");
        }
        assert_eq!(
            code(&format!("JOIN #{}", "a".repeat(33))),
            ErrorCode::BadRoom
        );
    }

    #[test]
    fn bad_or_missing_names_after_tell_are_bad_name() {
        for line in [
            "TELL",
            "TELL ",
            "TELL b!d hi",
            "TELL #rust hi",
            "TELL  bob hi",
        ] {
            assert_eq!(code(line), ErrorCode::BadName, "{line:?}");
        }
    }

    #[test]
    fn history_counts_are_decimal_numbers_from_one() {
        assert_eq!(ClientFrame::parse("HISTORY 1"), Ok(history(None, Some(1))));
        assert_eq!(
            ClientFrame::parse("HISTORY 007"),
            Ok(history(None, Some(7)))
        );
        assert_eq!(
            ClientFrame::parse("HISTORY #r 99999999999999999999999"),
            Ok(history(Some("#r"), Some(u64::MAX)))
        );
        for line in [
            "HISTORY 0",
            "HISTORY 00",
            "HISTORY -1",
            "HISTORY +1",
            "HISTORY 1.5",
            "HISTORY x",
            "HISTORY rust",
            "HISTORY #r 0",
            "HISTORY #r -3",
            "HISTORY #r ten",
            "HISTORY #r #s",
        ] {
            assert_eq!(code(line), ErrorCode::BadCount, "{line:?}");
        }
    }

    #[test]
    fn history_takes_a_room_then_a_count_and_nothing_more() {
        assert_eq!(ClientFrame::parse("HISTORY "), Ok(history(None, None)));
        for line in [
            "HISTORY 5 #r",
            "HISTORY #r 5 6",
            "HISTORY 5 5",
            "HISTORY #r 5 ",
            "HISTORY #r ",
            "HISTORY  5",
        ] {
            assert_eq!(code(line), ErrorCode::BadCount, "{line:?}");
        }
    }

    #[test]
    fn history_arguments_are_checked_left_to_right() {
        assert_eq!(code("HISTORY #b!d 0"), ErrorCode::BadRoom);
        assert_eq!(code("HISTORY #b!d x y"), ErrorCode::BadRoom);
        assert_eq!(code("HISTORY 0 #b!d"), ErrorCode::BadCount);
    }

    #[test]
    fn rooms_ignores_arguments() {
        assert_eq!(ClientFrame::parse("ROOMS please"), Ok(ClientFrame::Rooms));
    }

    #[test]
    fn bad_text_wins_over_every_other_error() {
        for line in [
            "JOIN #r\x07",
            "JOIN \x1b",
            "PART #b!d \x07",
            "SAY #b!d \x07",
            "SAY #r \x1b[2J",
            "SAY \x07",
            "TELL b!d \u{202e}",
            "TELL bob \x7f",
            "TOPIC #r evil\u{9b}",
            "WHO \x00",
            "HISTORY 0\x07",
            "ROOMS \r",
        ] {
            let rejection = ClientFrame::parse(line).unwrap_err();
            assert_eq!(rejection.code, ErrorCode::BadText, "{line:?}");
        }
    }

    #[test]
    fn form_errors_win_over_empty_message() {
        assert_eq!(code("SAY #b!d"), ErrorCode::BadRoom);
        assert_eq!(code("SAY #b!d   "), ErrorCode::BadRoom);
        assert_eq!(code("TELL b!d"), ErrorCode::BadName);
        assert_eq!(code("TELL b!d "), ErrorCode::BadName);
    }

    #[test]
    fn version_2_rejections_name_their_verb() {
        for (line, verb) in [
            ("JOIN x", Verb::Join),
            ("part", Verb::Part),
            ("SAY #r", Verb::Say),
            ("TELL", Verb::Tell),
            ("TOPIC x", Verb::Topic),
            ("WHO x", Verb::Who),
            ("HISTORY 0", Verb::History),
        ] {
            assert_eq!(
                ClientFrame::parse(line).unwrap_err().verb,
                Some(verb),
                "{line:?}"
            );
        }
    }
}
