//! Turning the server's frames into lines for people.
//!
//! `MSG alice hi` becomes `alice: hi`, `JOIN bob` becomes `* bob joined`,
//! refusals become `! …`. A room's lines carry its tag (`[#rust] bob: hi`),
//! the lobby's none, so they read as in version 1; direct messages read
//! `bob -> you: hi`, and a history's messages carry their own time in the
//! tag (`[#rust 12:00] bob: hi`). At a terminal a line also gets the time and colored
//! names ([`Style`]); in pipes it stays plain so scripts can match it, and
//! `--raw` skips rendering altogether ([`Format::Raw`]).
//!
//! Whatever the server sends is shown, never obeyed: a control character in
//! a name or text (which a conforming server never forwards) is drawn as
//! U+FFFD rather than reaching the terminal, where it could move the cursor
//! or rewrite the screen.

use std::borrow::Cow;

use chat_protocol::{
    forbidden_char, name_key, ClientDecodeError, ErrorCode, ServerFrame, Timestamp, DURATION_RULES,
    NAME_RULES, PASSWORD_RULES, ROOM_RULES,
};
use chrono::{DateTime, Datelike as _, Local, TimeZone};

use crate::color;
use crate::password::PASSWORD_VAR;

/// How frames are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Rendered for people, in a style.
    Human(Style),
    /// The frames exactly as they came, for scripts that parse them.
    Raw,
}

/// How a rendered line is decorated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// Names in their colors, errors in red, times dimmed.
    pub colors: bool,
    /// `HH:MM` in local time before each line.
    pub timestamps: bool,
}

impl Style {
    /// No decoration at all: what pipes get.
    pub const PLAIN: Style = Style {
        colors: false,
        timestamps: false,
    };
}

/// Turns the frames of one conversation into lines, in order.
///
/// It remembers what a frame alone does not say: the user's own name (from
/// `WELCOME`), to show direct messages as `alice -> you`, and how many
/// `HIST` lines of a history reply are still due, to close the reply with
/// `* end of history`.
#[derive(Debug, Clone)]
pub struct Renderer {
    format: Format,
    me: String,
    history_left: u64,
}

impl Renderer {
    pub fn new(format: Format) -> Renderer {
        Renderer {
            format,
            me: String::new(),
            history_left: 0,
        }
    }

    /// How frames are printed.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The lines to print for `frame`: none, one, or two at the end of a
    /// history reply.
    pub fn frame(&mut self, frame: &ServerFrame) -> Vec<String> {
        if let ServerFrame::Welcome(name) = frame {
            self.me = name.clone();
        }
        let style = match self.format {
            Format::Raw => return vec![frame.to_string()],
            Format::Human(style) => style,
        };
        match frame {
            ServerFrame::History { count, .. } => self.history_left = *count,
            ServerFrame::Hist { .. } => {
                let mut lines = Vec::from_iter(style.frame_at(frame, &now(), &self.me));
                if self.history_left > 0 {
                    self.history_left -= 1;
                    if self.history_left == 0 {
                        lines.push(style.notice("end of history"));
                    }
                }
                return lines;
            }
            _ => {}
        }
        Vec::from_iter(style.frame_at(frame, &now(), &self.me))
    }

    /// The line to print for a server line that is not a frame this client
    /// knows.
    pub fn unreadable(&self, error: &ClientDecodeError) -> Option<String> {
        match (self.format, error) {
            (Format::Raw, ClientDecodeError::Malformed(malformed)) => Some(malformed.line.clone()),
            (Format::Raw, ClientDecodeError::Line(_)) => None,
            (Format::Human(style), error) => Some(style.problem_at(
                &format!("unreadable line from the server ({error})"),
                &now(),
            )),
        }
    }
}

impl Style {
    /// A message from this program itself, such as a hint: `* text`.
    pub fn notice(&self, text: &str) -> String {
        self.line_at(&format!("* {}", clean(text)), &now())
    }

    /// A problem this program reports itself: `! text`.
    pub fn problem(&self, text: &str) -> String {
        self.problem_at(text, &now())
    }

    /// `name`, cleaned and colored as the style says.
    fn name(&self, name: &str) -> String {
        let name = clean(name);
        if self.colors {
            color::paint_name(&name)
        } else {
            name.into_owned()
        }
    }

    /// Text that must stand out: a direct message's `-> you`.
    fn marked(&self, text: &str) -> String {
        if self.colors {
            color::bold(text)
        } else {
            text.to_owned()
        }
    }

    /// `frame` as a line, at `time`, for the user called `me`.
    fn frame_at(&self, frame: &ServerFrame, time: &str, me: &str) -> Option<String> {
        let is_me = |name: &str| !me.is_empty() && name_key(name) == name_key(me);
        let body = match frame {
            ServerFrame::Welcome(name) => format!("* logged in as {}", self.name(name)),
            ServerFrame::Names(names) if names.is_empty() => "* the lobby is empty".to_owned(),
            ServerFrame::Names(names) => format!("* in the lobby: {}", self.names(names)),
            ServerFrame::Join(name) => format!("* {} joined", self.name(name)),
            ServerFrame::Msg { from, text } => format!("{}: {}", self.name(from), clean(text)),
            ServerFrame::Leave { name, text: None } => format!("* {} left", self.name(name)),
            ServerFrame::Leave {
                name,
                text: Some(text),
            } => format!("* {} left ({})", self.name(name), clean(text)),
            ServerFrame::Dropped(1) => {
                "* 1 message was skipped because this terminal fell behind".to_owned()
            }
            ServerFrame::Dropped(n) => {
                format!("* {n} messages were skipped because this terminal fell behind")
            }
            ServerFrame::Pong(_) => return None,
            ServerFrame::Bye => "* you left the chat".to_owned(),
            ServerFrame::UnknownError { code, detail } => {
                return Some(self.problem_at(&refusal(code, detail.as_deref()), time))
            }
            ServerFrame::Error { code, detail } => {
                let said = about_you(*code, detail.as_deref())
                    .unwrap_or_else(|| refusal(code.as_str(), detail.as_deref()));
                return Some(self.problem_at(&said, time));
            }
            ServerFrame::RoomNames { room, names } if names.is_empty() => {
                format!("{} * nobody is there", tag(room))
            }
            ServerFrame::RoomNames { room, names } => {
                format!("{} * in the room: {}", tag(room), self.names(names))
            }
            ServerFrame::RoomJoin { room, name } => {
                format!("{} * {} joined", tag(room), self.name(name))
            }
            ServerFrame::RoomLeave { room, name, text } => {
                let who = if is_me(name) {
                    format!("you left {}", clean(room))
                } else {
                    format!("{} left", self.name(name))
                };
                match text {
                    Some(text) => format!("{} * {who} ({})", tag(room), clean(text)),
                    None => format!("{} * {who}", tag(room)),
                }
            }
            ServerFrame::Say { room, from, text } => {
                format!("{} {}: {}", tag(room), self.name(from), clean(text))
            }
            ServerFrame::Tell { from, to, text } => {
                let who = |name: &str| {
                    if is_me(name) {
                        self.marked("you")
                    } else {
                        self.name(name)
                    }
                };
                let (from, to) = (who(from), who(to));
                format!("{from} {} {to}: {}", self.marked("->"), clean(text))
            }
            ServerFrame::Topic { room, setter, text } => format!(
                "{} * topic: {} (set by {})",
                tag(room),
                clean(text),
                self.name(setter)
            ),
            ServerFrame::NoTopic(room) => format!("{} * no topic is set", tag(room)),
            ServerFrame::Rooms(rooms) if rooms.is_empty() => "* there are no rooms".to_owned(),
            ServerFrame::Rooms(rooms) => {
                let rooms: Vec<String> = rooms
                    .iter()
                    .map(|(room, count)| format!("{} ({count})", clean(room)))
                    .collect();
                format!("* rooms: {}", rooms.join(", "))
            }
            ServerFrame::History { room, count: 0 } => {
                format!("* no messages in {} yet", place(room.as_deref()))
            }
            ServerFrame::History { room, .. } => {
                format!("* history of {}:", place(room.as_deref()))
            }
            ServerFrame::Hist {
                room,
                time: sent,
                from,
                text,
            } => {
                // A message of the past: its own time instead of now's,
                // inside the tag, and dimmed.
                let when = message_time(*sent, &Local::now());
                let tag = match room {
                    Some(room) => format!("[{} {when}]", clean(room)),
                    None => format!("[{when}]"),
                };
                return Some(if self.colors {
                    format!(
                        "{} {}{}",
                        color::dim(&tag),
                        self.name(from),
                        color::dim(&format!(": {}", clean(text)))
                    )
                } else {
                    format!("{tag} {}: {}", self.name(from), clean(text))
                });
            }
            ServerFrame::Registered(name) => format!(
                "* the name {} is registered to you: from now on it logs in only with your password",
                self.name(name)
            ),
            ServerFrame::Unregistered(name) => format!(
                "* the name {} is no longer registered: anyone may log in with it",
                self.name(name)
            ),
            ServerFrame::Ok { verb, name } => {
                let name = self.name(name);
                match verb.to_ascii_uppercase().as_str() {
                    "KICK" => format!("* {name} was kicked"),
                    "BAN" => format!("* {name} is banned"),
                    "UNBAN" => format!("* {name} is no longer banned"),
                    "MUTE" => format!("* {name} is muted"),
                    "UNMUTE" => format!("* {name} is no longer muted"),
                    _ => format!("* done: {} {name}", clean(&verb.to_lowercase())),
                }
            }
            ServerFrame::Bans(bans) if bans.is_empty() => "* nobody is banned".to_owned(),
            ServerFrame::Bans(bans) => {
                let now = Local::now();
                let bans: Vec<String> = bans
                    .iter()
                    .map(|(name, until)| {
                        format!("{} until {}", self.name(name), until_at(*until, &now))
                    })
                    .collect();
                format!("* banned: {}", bans.join(", "))
            }
        };
        Some(self.line_at(&body, time))
    }

    fn names(&self, names: &[String]) -> String {
        let names: Vec<String> = names.iter().map(|n| self.name(n)).collect();
        names.join(", ")
    }

    fn problem_at(&self, text: &str, time: &str) -> String {
        let body = format!("! {}", clean(text));
        let body = if self.colors {
            color::alarm(&body)
        } else {
            body
        };
        self.line_at(&body, time)
    }

    fn line_at(&self, body: &str, time: &str) -> String {
        match (self.timestamps, self.colors) {
            (false, _) => body.to_owned(),
            (true, false) => format!("{time} {body}"),
            (true, true) => format!("{} {body}", color::dim(time)),
        }
    }
}

/// `[#rust]`: what marks a room's lines. The lobby's lines have none, and
/// read as in version 1.
fn tag(room: &str) -> String {
    format!("[{}]", clean(room))
}

/// A room, or the lobby, in a sentence.
fn place(room: Option<&str>) -> Cow<'_, str> {
    match room {
        Some(room) => clean(room),
        None => Cow::Borrowed("the lobby"),
    }
}

/// When a message of a history was sent, in the time zone of `now`:
/// `HH:MM` if that was today, with the date before it otherwise.
fn message_time<Tz: TimeZone>(sent: Timestamp, now: &DateTime<Tz>) -> String
where
    Tz::Offset: std::fmt::Display,
{
    let sent = DateTime::<chrono::Utc>::from(sent.to_system_time()).with_timezone(&now.timezone());
    if sent.date_naive() == now.date_naive() {
        sent.format("%H:%M").to_string()
    } else {
        sent.format("%Y-%m-%d %H:%M").to_string()
    }
}

/// When a ban or a mute ends, in the time zone of `now`: `14:05` if that
/// is today, `14:05 (Tue 8 Dec)` another day, with the year if not this one.
fn until_at<Tz: TimeZone>(until: Timestamp, now: &DateTime<Tz>) -> String
where
    Tz::Offset: std::fmt::Display,
{
    let until =
        DateTime::<chrono::Utc>::from(until.to_system_time()).with_timezone(&now.timezone());
    let format = if until.date_naive() == now.date_naive() {
        "%H:%M"
    } else if until.year() == now.year() {
        "%H:%M (%a %-d %b)"
    } else {
        "%H:%M (%a %-d %b %Y)"
    };
    until.format(format).to_string()
}

/// An `<until>` as sent, in local time; as sent (cleaned) if it is not a
/// time.
fn until_text(text: &str) -> String {
    match text.parse::<Timestamp>() {
        Ok(until) => until_at(until, &Local::now()),
        Err(_) => clean(text).into_owned(),
    }
}

/// What an `ERROR` that is about the user, rather than about a request,
/// means, as a sentence: who did what, why, until when.
fn about_you(code: ErrorCode, detail: Option<&str>) -> Option<String> {
    let detail = detail
        .map(|d| d.trim_matches(' '))
        .filter(|d| !d.is_empty());
    let (first, text) = match detail.map(|d| d.split_once(' ').unwrap_or((d, ""))) {
        Some((first, text)) => (
            Some(first),
            Some(text.trim_matches(' ')).filter(|t| !t.is_empty()),
        ),
        None => (None, None),
    };
    let why = |text: Option<&str>| text.map(|t| format!(": {}", clean(t))).unwrap_or_default();
    Some(match code {
        ErrorCode::Kicked => match first {
            Some(by) => format!("you were kicked by {}{}", clean(by), why(text)),
            None => "you were kicked by an operator".to_owned(),
        },
        ErrorCode::Banned => match first {
            Some(until) => format!("you are banned until {}{}", until_text(until), why(text)),
            None => "you are banned".to_owned(),
        },
        ErrorCode::Muted => match first {
            Some(until) => format!(
                "you are muted until {}; your message was not sent",
                until_text(until)
            ),
            None => "you are muted; your message was not sent".to_owned(),
        },
        ErrorCode::LoggedInElsewhere => {
            "you logged in somewhere else; this session is closed".to_owned()
        }
        _ => return None,
    })
}

/// Why the server closed the connection, for people: a sentence for being
/// replaced, kicked or banned, the server's words otherwise.
pub fn closed_by_server(code: &str, detail: Option<&str>) -> String {
    if let Some(sentence) = code.parse().ok().and_then(|code| about_you(code, detail)) {
        return sentence;
    }
    format!(
        "connection closed by server ({})",
        clean(detail.unwrap_or(code))
    )
}

/// What an `ERROR` says, for people: the server's own words when it gave
/// some, after the code that names the kind of problem, and what to do
/// about it where the client knows better than the code.
fn refusal(code: &str, detail: Option<&str>) -> String {
    let known = code.parse::<ErrorCode>().ok();
    let said = match detail {
        Some(detail) => Some(clean(detail)),
        None => known.and_then(explanation).map(Cow::Borrowed),
    };
    let mut line = match said {
        Some(said) => format!("{}: {said}", clean(code)),
        None => clean(code).into_owned(),
    };
    if let Some(hint) = known.and_then(hint) {
        line.push_str(&format!(" ({hint})"));
    }
    line
}

/// What a version 2 refusal means, for a server that sent only the code.
fn explanation(code: ErrorCode) -> Option<&'static str> {
    Some(match code {
        ErrorCode::BadRoom => ROOM_RULES,
        ErrorCode::NotInRoom => "you are not in that room",
        ErrorCode::AlreadyInRoom => "you are already in that room",
        ErrorCode::NoSuchUser => "nobody is logged in under that name",
        ErrorCode::BadCount => "a count is a number from 1",
        ErrorCode::TooManyRooms => "no more rooms for now",
        ErrorCode::NameRegistered => "the name is registered; it logs in with its password",
        ErrorCode::BadPassword => "wrong password",
        ErrorCode::WeakPassword => PASSWORD_RULES,
        ErrorCode::NotRegistered => "the name is not registered",
        ErrorCode::AlreadyRegistered => "the name is registered already",
        ErrorCode::TooManyTries => "too many wrong passwords for this name in the last minute",
        ErrorCode::NotOperator => {
            "only operators may do that, and not to themselves or another operator"
        }
        ErrorCode::BadDuration => DURATION_RULES,
        _ => return None,
    })
}

/// What to do about a refusal, where there is something to do.
fn hint(code: ErrorCode) -> Option<&'static str> {
    Some(match code {
        ErrorCode::NoSuchUser => "/who lists who is here",
        ErrorCode::TooManyRooms => "/part a room first, or try later",
        ErrorCode::TooManyTries => "wait a minute, then try again",
        ErrorCode::AlreadyRegistered => "/password changes its password",
        ErrorCode::NotRegistered => "/register registers it",
        // The client sends no verb but the protocol's: an older server.
        ErrorCode::UnknownCommand => {
            "this server speaks version 1 only: no rooms, direct messages or history"
        }
        _ => return None,
    })
}

/// Why the server would not let the user in as `name`, in plain words.
pub fn login_refusal(name: &str, code: &str, detail: Option<&str>) -> String {
    match code.parse() {
        Ok(ErrorCode::NameTaken) => format!("the name {} is taken", clean(name)),
        Ok(ErrorCode::BadName | ErrorCode::BadText) => {
            format!("{name:?} cannot be a name: {NAME_RULES}")
        }
        Ok(ErrorCode::NameRegistered) => format!(
            "the name {} is registered: give its password with --password-file or {PASSWORD_VAR}",
            clean(name)
        ),
        Ok(ErrorCode::BadPassword) => format!("wrong password for {}", clean(name)),
        Ok(ErrorCode::NotRegistered) => format!(
            "a password was given, but the name {} is not registered; \
             log in without one (no --password-file, no {PASSWORD_VAR})",
            clean(name)
        ),
        Ok(ErrorCode::TooManyTries) => format!(
            "too many wrong passwords for {} in the last minute; wait a minute, then try again",
            clean(name)
        ),
        Ok(known) => about_you(known, detail).unwrap_or_else(|| refusal(code, detail)),
        _ => refusal(code, detail),
    }
}

/// What `ERROR unavailable` in answer to a login means: the server cannot
/// log anyone in right now, whatever the name.
pub fn unavailable(detail: Option<&str>) -> String {
    match detail {
        Some(detail) => format!("the server is unavailable right now ({})", clean(detail)),
        None => "the server is unavailable right now".to_owned(),
    }
}

/// The current local time as `HH:MM`.
fn now() -> String {
    chrono::Local::now().format("%H:%M").to_string()
}

/// `text` with every character that could act on a terminal replaced.
pub(crate) fn clean(text: &str) -> Cow<'_, str> {
    if forbidden_char(text).is_none() {
        return Cow::Borrowed(text);
    }
    let mut buf = [0; 4];
    Cow::Owned(
        text.chars()
            .map(|c| match forbidden_char(c.encode_utf8(&mut buf)) {
                Some(_) => char::REPLACEMENT_CHARACTER,
                None => c,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(frame: ServerFrame) -> Option<String> {
        Style::PLAIN.frame_at(&frame, "12:34", "alice")
    }

    fn parsed(line: &str) -> ServerFrame {
        ServerFrame::parse(line).expect("a frame")
    }

    /// What a piped client logged in as alice prints for `lines`, in order.
    fn piped(lines: &[&str]) -> Vec<String> {
        let mut renderer = Renderer::new(Format::Human(Style::PLAIN));
        renderer.frame(&parsed("WELCOME alice"));
        lines
            .iter()
            .flat_map(|line| renderer.frame(&parsed(line)))
            .collect()
    }

    fn msg(from: &str, text: &str) -> ServerFrame {
        ServerFrame::Msg {
            from: from.into(),
            text: text.into(),
        }
    }

    #[test]
    fn frames_read_like_a_conversation() {
        let cases = [
            (ServerFrame::Welcome("alice".into()), "* logged in as alice"),
            (
                ServerFrame::Names(vec!["alice".into(), "bob".into()]),
                "* in the lobby: alice, bob",
            ),
            (ServerFrame::Names(vec![]), "* the lobby is empty"),
            (ServerFrame::Join("bob".into()), "* bob joined"),
            (msg("alice", "hi"), "alice: hi"),
            (
                ServerFrame::Leave {
                    name: "bob".into(),
                    text: None,
                },
                "* bob left",
            ),
            (
                ServerFrame::Leave {
                    name: "bob".into(),
                    text: Some("see you".into()),
                },
                "* bob left (see you)",
            ),
            (
                ServerFrame::Dropped(12),
                "* 12 messages were skipped because this terminal fell behind",
            ),
            (
                ServerFrame::Dropped(1),
                "* 1 message was skipped because this terminal fell behind",
            ),
            (ServerFrame::Bye, "* you left the chat"),
            (
                ServerFrame::error(
                    ErrorCode::BadText,
                    "control character U+001B is not allowed",
                ),
                "! bad-text: control character U+001B is not allowed",
            ),
            (
                ServerFrame::Error {
                    code: ErrorCode::EmptyMessage,
                    detail: None,
                },
                "! empty-message",
            ),
        ];
        for (frame, line) in cases {
            assert_eq!(plain(frame.clone()).as_deref(), Some(line), "{frame:?}");
        }
    }

    #[test]
    fn texts_are_shown_exactly() {
        assert_eq!(
            plain(msg("bob", "  a  b ")).as_deref(),
            Some("bob:   a  b ")
        );
        assert_eq!(
            plain(msg("bob", "tab\there ✓")).as_deref(),
            Some("bob: tab\there ✓")
        );
    }

    #[test]
    fn pongs_are_not_shown() {
        assert_eq!(plain(ServerFrame::Pong(Some("x".into()))), None);
    }

    #[test]
    fn timestamps_come_first() {
        let style = Style {
            colors: false,
            timestamps: true,
        };
        assert_eq!(
            style
                .frame_at(&msg("bob", "hi"), "09:05", "alice")
                .as_deref(),
            Some("09:05 bob: hi")
        );
        assert_eq!(style.line_at("* note", "23:59"), "23:59 * note");
    }

    #[test]
    fn colors_paint_names_times_and_errors() {
        let style = Style {
            colors: true,
            timestamps: true,
        };
        let line = style.frame_at(&msg("bob", "hi"), "09:05", "alice").unwrap();
        assert_eq!(
            line,
            format!("\x1b[2m09:05\x1b[0m {}: hi", color::paint_name("bob"))
        );
        let error = style
            .frame_at(
                &ServerFrame::error(ErrorCode::BadText, "no"),
                "09:05",
                "alice",
            )
            .unwrap();
        assert!(error.contains("\x1b[31m! bad-text: no\x1b[0m"), "{error:?}");
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(
            plain(msg("eve", "\x1b[2Jgotcha\u{202e}")).as_deref(),
            Some("eve: \u{fffd}[2Jgotcha\u{fffd}")
        );
        assert_eq!(
            plain(ServerFrame::Join("e\x07ve".into())).as_deref(),
            Some("* e\u{fffd}ve joined")
        );
    }

    #[test]
    fn raw_format_prints_frames_as_they_came() {
        let mut raw = Renderer::new(Format::Raw);
        for line in [
            "MSG alice  hi ",
            "BYE",
            "SAY #rust bob  hi ",
            "TELL bob alice psst",
            "HISTORY #rust 1",
            "HIST #rust 2026-11-29T12:00:00.123Z bob anyone here?",
            "ROOMS",
            "TOPIC #rust",
        ] {
            assert_eq!(raw.frame(&parsed(line)), [line]);
        }
    }

    #[test]
    fn errors_with_newer_codes_show_the_code_and_detail_as_sent() {
        let mut human = Renderer::new(Format::Human(Style::PLAIN));
        let cases = [
            ("ERROR bad-room no room #x", "! bad-room: no room #x"),
            ("ERROR some-future-code", "! some-future-code"),
            (
                "ERROR from-the-future nobody is called bob",
                "! from-the-future: nobody is called bob",
            ),
            ("ERROR future-code \x1b[2J", "! future-code: \u{fffd}[2J"),
        ];
        for (line, shown) in cases {
            let frame = ServerFrame::parse(line).expect("an ERROR frame");
            assert_eq!(human.frame(&frame), [shown], "{line:?}");
        }
        let frame = ServerFrame::parse("ERROR future-code no room #x").expect("a frame");
        assert_eq!(
            Renderer::new(Format::Raw).frame(&frame),
            ["ERROR future-code no room #x"]
        );
    }

    #[test]
    fn login_refusals_say_what_to_do() {
        assert_eq!(
            login_refusal("alice", "name-taken", Some("that name is in use")),
            "the name alice is taken"
        );
        let bad = login_refusal("al ice", "bad-name", None);
        assert!(
            bad.starts_with("\"al ice\" cannot be a name: a name is 1 to 32"),
            "{bad}"
        );
        assert_eq!(
            login_refusal("x", "server-full", Some("too many connections")),
            "server-full: too many connections"
        );
        assert_eq!(
            login_refusal("x", "bad-flavour", Some("as sent")),
            "bad-flavour: as sent"
        );
    }

    #[test]
    fn room_lines_carry_their_tag_and_lobby_lines_none() {
        assert_eq!(
            piped(&[
                "NAMES #rust alice bob",
                "TOPIC #rust bob async book club",
                "SAY #rust bob  hi  all ",
                "JOIN #rust carol",
                "LEAVE #rust carol later",
                "LEAVE #rust bob",
                "NAMES #nope",
                "TOPIC #rust",
                "MSG bob lobby talk",
                "LEAVE #rust alice",
                "LEAVE #rust ALICE see you",
            ]),
            [
                "[#rust] * in the room: alice, bob",
                "[#rust] * topic: async book club (set by bob)",
                "[#rust] bob:  hi  all ",
                "[#rust] * carol joined",
                "[#rust] * carol left (later)",
                "[#rust] * bob left",
                "[#nope] * nobody is there",
                "[#rust] * no topic is set",
                "bob: lobby talk",
                "[#rust] * you left #rust",
                "[#rust] * you left #rust (see you)",
            ]
        );
    }

    #[test]
    fn direct_messages_say_who_to_whom() {
        assert_eq!(
            piped(&[
                "TELL bob alice see you at 5?",
                "TELL alice bob  ok ",
                "TELL Alice ALICE note to self",
            ]),
            [
                "bob -> you: see you at 5?",
                "you -> bob:  ok ",
                "you -> you: note to self",
            ]
        );
    }

    #[test]
    fn direct_messages_stand_out_in_color() {
        let style = Style {
            colors: true,
            timestamps: false,
        };
        let line = style
            .frame_at(&parsed("TELL bob alice psst"), "09:05", "alice")
            .unwrap();
        assert_eq!(
            line,
            format!(
                "{} {} {}: psst",
                color::paint_name("bob"),
                color::bold("->"),
                color::bold("you")
            )
        );
    }

    #[test]
    fn rooms_are_listed_with_their_sizes() {
        assert_eq!(
            piped(&["ROOMS #ops 2 #rust 3", "ROOMS"]),
            ["* rooms: #ops (2), #rust (3)", "* there are no rooms"]
        );
    }

    #[test]
    fn a_history_is_marked_as_the_past_and_closed() {
        let today = Local::now().format("%Y-%m-%d").to_string();
        let lines = piped(&[
            "HISTORY #rust 2",
            &format!("HIST #rust {today}T12:00:00.123Z bob anyone here?"),
            &format!("HIST #rust {today}T12:00:03.456Z alice hi both"),
            "SAY #rust bob now",
            "HISTORY 0",
            "HISTORY 1",
            "HIST 2026-11-28T12:00:00.000Z bob yesterday",
        ]);
        let at = |text: &str| {
            let utc = format!("{text}Z").parse::<Timestamp>().expect("a time");
            message_time(utc, &Local::now())
        };
        assert_eq!(
            lines,
            [
                "* history of #rust:".to_owned(),
                format!(
                    "[#rust {}] bob: anyone here?",
                    at(&format!("{today}T12:00:00.123"))
                ),
                format!(
                    "[#rust {}] alice: hi both",
                    at(&format!("{today}T12:00:03.456"))
                ),
                "* end of history".to_owned(),
                "[#rust] bob: now".to_owned(),
                "* no messages in the lobby yet".to_owned(),
                "* history of the lobby:".to_owned(),
                format!("[{}] bob: yesterday", at("2026-11-28T12:00:00.000")),
                "* end of history".to_owned(),
            ]
        );
    }

    #[test]
    fn history_times_are_local_with_the_date_unless_today() {
        let zone = chrono::FixedOffset::east_opt(3600).expect("UTC+1");
        let now = zone.with_ymd_and_hms(2026, 11, 29, 18, 0, 0).unwrap();
        let time = |text: &str| text.parse::<Timestamp>().expect("a time");
        assert_eq!(
            message_time(time("2026-11-29T12:00:00.123Z"), &now),
            "13:00"
        );
        assert_eq!(
            message_time(time("2026-11-28T22:59:00.000Z"), &now),
            "2026-11-28 23:59"
        );
        assert_eq!(
            message_time(time("2026-11-28T23:00:00.000Z"), &now),
            "00:00"
        );
    }

    #[test]
    fn history_lines_are_dimmed_but_names_keep_their_color() {
        let style = Style {
            colors: true,
            timestamps: true,
        };
        let frame = parsed("HIST #rust 2026-11-29T12:00:00.123Z bob hi");
        let line = style.frame_at(&frame, "09:05", "alice").unwrap();
        assert!(line.starts_with("\x1b[2m[#rust "), "{line:?}");
        assert!(line.contains(&color::paint_name("bob")), "{line:?}");
        assert!(line.ends_with(&color::dim(": hi")), "{line:?}");
        assert!(!line.contains("09:05"), "a history line has its own time");
    }

    #[test]
    fn version_2_refusals_say_what_to_do() {
        let cases = [
            (
                "ERROR not-in-room",
                "! not-in-room: you are not in that room",
            ),
            (
                "ERROR not-in-room you are not in that room; JOIN it first",
                "! not-in-room: you are not in that room; JOIN it first",
            ),
            (
                "ERROR no-such-user nobody is called zed",
                "! no-such-user: nobody is called zed (/who lists who is here)",
            ),
            ("ERROR bad-count", "! bad-count: a count is a number from 1"),
            (
                "ERROR unknown-command commands are NAME, MSG, LEAVE, WHO and PING",
                "! unknown-command: commands are NAME, MSG, LEAVE, WHO and PING \
                 (this server speaks version 1 only: no rooms, direct messages or history)",
            ),
        ];
        for (line, shown) in cases {
            assert_eq!(plain(parsed(line)).as_deref(), Some(shown), "{line:?}");
        }
        let bad_room = plain(parsed("ERROR bad-room")).unwrap();
        assert!(
            bad_room.starts_with("! bad-room: a room is '#' then"),
            "{bad_room}"
        );
    }

    #[test]
    fn being_removed_reads_as_a_sentence() {
        let today = Local::now().format("%Y-%m-%d").to_string();
        let until = format!("{today}T23:59:00.000Z");
        let local = until_text(&until);
        let cases = [
            (
                "ERROR kicked carol spamming  again".to_owned(),
                "! you were kicked by carol: spamming  again".to_owned(),
            ),
            (
                "ERROR kicked carol".to_owned(),
                "! you were kicked by carol".to_owned(),
            ),
            (
                format!("ERROR banned {until} spam"),
                format!("! you are banned until {local}: spam"),
            ),
            (
                format!("ERROR banned {until}"),
                format!("! you are banned until {local}"),
            ),
            (
                format!("ERROR muted {until}"),
                format!("! you are muted until {local}; your message was not sent"),
            ),
            (
                "ERROR muted".to_owned(),
                "! you are muted; your message was not sent".to_owned(),
            ),
            (
                "ERROR logged-in-elsewhere your name logged in from another connection".to_owned(),
                "! you logged in somewhere else; this session is closed".to_owned(),
            ),
            (
                "ERROR banned someday \x1b[2J".to_owned(),
                "! you are banned until someday: \u{fffd}[2J".to_owned(),
            ),
        ];
        for (line, shown) in cases {
            assert_eq!(
                plain(parsed(&line)).as_deref(),
                Some(shown.as_str()),
                "{line:?}"
            );
        }
        assert_eq!(
            closed_by_server("kicked", Some("carol spamming")),
            "you were kicked by carol: spamming"
        );
        assert_eq!(
            closed_by_server("idle-timeout", Some("idle for 300s")),
            "connection closed by server (idle for 300s)"
        );
        assert_eq!(
            closed_by_server("from-the-future", None),
            "connection closed by server (from-the-future)"
        );
    }

    #[test]
    fn until_is_local_with_the_day_unless_today() {
        let zone = chrono::FixedOffset::east_opt(3600).expect("UTC+1");
        let now = zone.with_ymd_and_hms(2026, 12, 7, 9, 0, 0).unwrap();
        let time = |text: &str| text.parse::<Timestamp>().expect("a time");
        assert_eq!(until_at(time("2026-12-07T13:05:00.000Z"), &now), "14:05");
        assert_eq!(
            until_at(time("2026-12-14T13:05:00.000Z"), &now),
            "14:05 (Mon 14 Dec)"
        );
        assert_eq!(
            until_at(time("2027-01-05T08:00:00.000Z"), &now),
            "09:00 (Tue 5 Jan 2027)"
        );
    }

    #[test]
    fn accounts_and_moderation_answers_read_as_sentences() {
        let today = Local::now().format("%Y-%m-%d").to_string();
        let until = format!("{today}T23:59:00.000Z");
        let local = until_text(&until);
        assert_eq!(
            piped(&[
                "REGISTERED alice",
                "UNREGISTERED alice",
                "OK KICK bob",
                "OK BAN eve",
                "OK UNBAN eve",
                "OK MUTE bob",
                "OK UNMUTE bob",
                "OK FROB bob",
                "BANS",
                &format!("BANS eve {until} zed {until}"),
            ]),
            [
                "* the name alice is registered to you: from now on it logs in only with your password".to_owned(),
                "* the name alice is no longer registered: anyone may log in with it".to_owned(),
                "* bob was kicked".to_owned(),
                "* eve is banned".to_owned(),
                "* eve is no longer banned".to_owned(),
                "* bob is muted".to_owned(),
                "* bob is no longer muted".to_owned(),
                "* done: frob bob".to_owned(),
                "* nobody is banned".to_owned(),
                format!("* banned: eve until {local}, zed until {local}"),
            ]
        );
    }

    #[test]
    fn account_refusals_say_what_to_do() {
        let cases = [
            ("ERROR not-operator", "! not-operator: only operators may do that, and not to themselves or another operator"),
            ("ERROR weak-password", "! weak-password: a password is one word of 8 to 128 bytes, without spaces or control characters"),
            ("ERROR already-registered", "! already-registered: the name is registered already (/password changes its password)"),
            ("ERROR not-registered", "! not-registered: the name is not registered (/register registers it)"),
            ("ERROR bad-password", "! bad-password: wrong password"),
        ];
        for (line, shown) in cases {
            assert_eq!(plain(parsed(line)).as_deref(), Some(shown), "{line:?}");
        }
        assert!(plain(parsed("ERROR bad-duration"))
            .unwrap()
            .starts_with("! bad-duration: a duration is a number and a unit"));
        assert_eq!(
            login_refusal("alice", "bad-password", Some("wrong password")),
            "wrong password for alice"
        );
        assert_eq!(
            login_refusal("alice", "too-many-tries", None),
            "too many wrong passwords for alice in the last minute; wait a minute, then try again"
        );
        assert!(login_refusal("alice", "name-registered", None).contains("--password-file"));
        assert!(login_refusal("alice", "not-registered", None)
            .starts_with("a password was given, but the name alice is not registered"));
        assert!(
            login_refusal("alice", "banned", Some("2026-12-07T14:05:00.000Z"))
                .starts_with("you are banned until ")
        );
    }
}
