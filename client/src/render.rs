//! Turning the server's frames into lines for people.
//!
//! `MSG alice hi` becomes `alice: hi`, `JOIN bob` becomes `* bob joined`,
//! refusals become `! …`. At a terminal a line also gets the time and colored
//! names ([`Style`]); in pipes it stays plain so scripts can match it, and
//! `--raw` skips rendering altogether ([`Format::Raw`]).
//!
//! Whatever the server sends is shown, never obeyed: a control character in
//! a name or text (which a conforming server never forwards) is drawn as
//! U+FFFD rather than reaching the terminal, where it could move the cursor
//! or rewrite the screen.

use std::borrow::Cow;

use chat_protocol::{forbidden_char, ClientDecodeError, ErrorCode, ServerFrame, NAME_RULES};

use crate::color;

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

impl Format {
    /// The line to print for `frame`, if it is worth a line.
    pub fn frame(&self, frame: &ServerFrame) -> Option<String> {
        match self {
            Format::Raw => Some(frame.to_string()),
            Format::Human(style) => style.frame_at(frame, &now()),
        }
    }

    /// The line to print for a server line that is not a frame this client
    /// knows.
    pub fn unreadable(&self, error: &ClientDecodeError) -> Option<String> {
        match (self, error) {
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

    fn frame_at(&self, frame: &ServerFrame, time: &str) -> Option<String> {
        let body = match frame {
            ServerFrame::Welcome(name) => format!("* logged in as {}", self.name(name)),
            ServerFrame::Names(names) if names.is_empty() => "* the room is empty".to_owned(),
            ServerFrame::Names(names) => {
                let names: Vec<String> = names.iter().map(|n| self.name(n)).collect();
                format!("* in the room: {}", names.join(", "))
            }
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
            ServerFrame::Bye => "* you left the room".to_owned(),
            ServerFrame::UnknownError { code, detail } => {
                return Some(self.problem_at(&refusal(code, detail.as_deref()), time))
            }
            ServerFrame::Error { code, detail } => {
                return Some(self.problem_at(&refusal(code.as_str(), detail.as_deref()), time))
            }
            other => clean(&other.to_string()).into_owned(),
        };
        Some(self.line_at(&body, time))
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

/// What an `ERROR` says, for people: the server's own words when it gave
/// some, after the code that names the kind of problem.
fn refusal(code: &str, detail: Option<&str>) -> String {
    match detail {
        Some(detail) => format!("{}: {}", clean(code), clean(detail)),
        None => clean(code).into_owned(),
    }
}

/// Why the server would not let the user in as `name`, in plain words.
pub fn login_refusal(name: &str, code: &str, detail: Option<&str>) -> String {
    match code.parse() {
        Ok(ErrorCode::NameTaken) => format!("the name {} is taken", clean(name)),
        Ok(ErrorCode::BadName | ErrorCode::BadText) => {
            format!("{name:?} cannot be a name: {NAME_RULES}")
        }
        _ => refusal(code, detail),
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
        Style::PLAIN.frame_at(&frame, "12:34")
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
                "* in the room: alice, bob",
            ),
            (ServerFrame::Names(vec![]), "* the room is empty"),
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
            (ServerFrame::Bye, "* you left the room"),
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
            style.frame_at(&msg("bob", "hi"), "09:05").as_deref(),
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
        let line = style.frame_at(&msg("bob", "hi"), "09:05").unwrap();
        assert_eq!(
            line,
            format!("\x1b[2m09:05\x1b[0m {}: hi", color::paint_name("bob"))
        );
        let error = style
            .frame_at(&ServerFrame::error(ErrorCode::BadText, "no"), "09:05")
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
        let frame = msg("alice", " hi ");
        assert_eq!(Format::Raw.frame(&frame).as_deref(), Some("MSG alice  hi "));
        assert_eq!(Format::Raw.frame(&ServerFrame::Bye).as_deref(), Some("BYE"));
    }

    #[test]
    fn errors_with_newer_codes_show_the_code_and_detail_as_sent() {
        let human = Format::Human(Style::PLAIN);
        let cases = [
            ("ERROR bad-room no room #x", "! bad-room: no room #x"),
            ("ERROR not-in-room", "! not-in-room"),
            ("ERROR some-future-code", "! some-future-code"),
            (
                "ERROR from-the-future nobody is called bob",
                "! from-the-future: nobody is called bob",
            ),
            ("ERROR future-code \x1b[2J", "! future-code: \u{fffd}[2J"),
        ];
        for (line, shown) in cases {
            let frame = ServerFrame::parse(line).expect("an ERROR frame");
            assert_eq!(human.frame(&frame).as_deref(), Some(shown), "{line:?}");
        }
        let frame = ServerFrame::parse("ERROR future-code no room #x").expect("a frame");
        assert_eq!(
            Format::Raw.frame(&frame).as_deref(),
            Some("ERROR future-code no room #x")
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
}
