//! Frames a client sends to the server.

use std::fmt;

use crate::error::ErrorCode;
use crate::text::{forbidden_char, is_blank, is_valid_name};

/// The verbs a client may send. The server matches them case-insensitively.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Name,
    Msg,
    Leave,
    Who,
    Ping,
}

impl Verb {
    /// The verb in its canonical (upper case) form.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Name => "NAME",
            Verb::Msg => "MSG",
            Verb::Leave => "LEAVE",
            Verb::Who => "WHO",
            Verb::Ping => "PING",
        }
    }

    /// Looks a verb up, ignoring ASCII case.
    pub fn parse(s: &str) -> Option<Verb> {
        [Verb::Name, Verb::Msg, Verb::Leave, Verb::Who, Verb::Ping]
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s))
    }

    /// Whether the verb is allowed before login.
    pub fn allowed_before_login(self) -> bool {
        matches!(self, Verb::Name | Verb::Ping)
    }
}

/// A request from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// `NAME <name>`: log in.
    Name(String),
    /// `MSG <text>`: say something to the room; the text is kept exactly.
    Msg(String),
    /// `LEAVE [<text>]`: leave, with an optional parting text.
    Leave(Option<String>),
    /// `WHO`: ask for the `NAMES` list.
    Who,
    /// `PING [<token>]`: ask for a `PONG` once earlier frames are handled.
    Ping(Option<String>),
}

/// Why a line is not an acceptable client frame: the `ERROR` to answer with.
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

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}

impl std::error::Error for Rejection {}

/// What to tell a user whose name breaks the rules.
pub const NAME_RULES: &str =
    "a name is 1 to 32 ASCII letters, digits, '_', '-' or '.', starting with a letter or digit";

impl ClientFrame {
    /// Parses one line (without its line ending).
    ///
    /// Checks are made in the order a user can act on: an unknown verb first,
    /// then forbidden characters anywhere in the arguments, then the verb's own
    /// rules.
    pub fn parse(line: &str) -> Result<ClientFrame, Rejection> {
        let (verb_text, rest) = match line.split_once(' ') {
            Some((verb, rest)) => (verb, Some(rest)),
            None => (line, None),
        };
        let Some(verb) = Verb::parse(verb_text) else {
            let detail = if line.is_empty() {
                "empty line; commands are NAME, MSG, LEAVE, WHO and PING"
            } else {
                "commands are NAME, MSG, LEAVE, WHO and PING"
            };
            return Err(Rejection::new(ErrorCode::UnknownCommand, None, detail));
        };
        let rest = rest.unwrap_or("");
        if let Some(c) = forbidden_char(rest) {
            let detail = format!("control character U+{:04X} is not allowed", c as u32);
            return Err(Rejection::new(ErrorCode::BadText, Some(verb), detail));
        }
        match verb {
            Verb::Name if is_valid_name(rest) => Ok(ClientFrame::Name(rest.to_owned())),
            Verb::Name => Err(Rejection::new(ErrorCode::BadName, Some(verb), NAME_RULES)),
            Verb::Msg if is_blank(rest) => Err(Rejection::new(
                ErrorCode::EmptyMessage,
                Some(verb),
                "MSG needs a text",
            )),
            Verb::Msg => Ok(ClientFrame::Msg(rest.to_owned())),
            Verb::Leave if is_blank(rest) => Ok(ClientFrame::Leave(None)),
            Verb::Leave => Ok(ClientFrame::Leave(Some(rest.to_owned()))),
            Verb::Who => Ok(ClientFrame::Who),
            Verb::Ping if rest.is_empty() => Ok(ClientFrame::Ping(None)),
            Verb::Ping => Ok(ClientFrame::Ping(Some(rest.to_owned()))),
        }
    }

    /// The frame's verb.
    pub fn verb(&self) -> Verb {
        match self {
            ClientFrame::Name(_) => Verb::Name,
            ClientFrame::Msg(_) => Verb::Msg,
            ClientFrame::Leave(_) => Verb::Leave,
            ClientFrame::Who => Verb::Who,
            ClientFrame::Ping(_) => Verb::Ping,
        }
    }
}

/// Formats the frame as its line, without the line ending.
impl fmt::Display for ClientFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.verb().as_str())?;
        match self {
            ClientFrame::Name(arg)
            | ClientFrame::Msg(arg)
            | ClientFrame::Leave(Some(arg))
            | ClientFrame::Ping(Some(arg)) => write!(f, " {arg}"),
            ClientFrame::Leave(None) | ClientFrame::Who | ClientFrame::Ping(None) => Ok(()),
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
    fn bad_names_are_refused() {
        assert_eq!(code("NAME"), ErrorCode::BadName);
        assert_eq!(code("NAME "), ErrorCode::BadName);
        assert_eq!(code("NAME al ice"), ErrorCode::BadName);
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
    fn who_ignores_arguments() {
        assert_eq!(ClientFrame::parse("WHO is there"), Ok(ClientFrame::Who));
    }

    #[test]
    fn only_name_and_ping_are_allowed_before_login() {
        assert!(Verb::Name.allowed_before_login());
        assert!(Verb::Ping.allowed_before_login());
        assert!(!Verb::Msg.allowed_before_login());
        assert!(!Verb::Who.allowed_before_login());
        assert!(!Verb::Leave.allowed_before_login());
    }
}
