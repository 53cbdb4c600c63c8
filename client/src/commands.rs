//! What a line typed at the interactive prompt asks for.
//!
//! A line is a message unless it starts with `/`. Doubling the slash sends a
//! message that starts with one (`//shrug` says `/shrug`), so every text can
//! still be said.

/// One typed line, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Send this text to the room, exactly as typed.
    Say(String),
    /// `/who`: ask who is in the room.
    Who,
    /// `/quit [text]`: leave, with an optional parting text.
    Quit(Option<String>),
    /// `/help`: show the commands.
    Help,
    /// A `/word` that is not a command; nothing is sent.
    Unknown(String),
    /// An empty line, or only spaces: nothing to do.
    Nothing,
}

/// The commands and what they do, as `/help` shows them.
pub const HELP: &[(&str, &str)] = &[
    ("/who", "list who is in the room"),
    (
        "/quit [text]",
        "leave, with an optional parting text (Ctrl-D too)",
    ),
    ("/help", "show this help"),
    ("//text", "send a message that starts with /"),
    ("Ctrl-C", "clear the line; Up and Down browse earlier lines"),
];

/// Understands one typed line (without its line ending).
pub fn parse(line: &str) -> Command {
    if line.bytes().all(|b| b == b' ') {
        return Command::Nothing;
    }
    let Some(rest) = line.strip_prefix('/') else {
        return Command::Say(line.to_owned());
    };
    if rest.starts_with('/') {
        return Command::Say(rest.to_owned());
    }
    let (word, argument) = match rest.split_once(' ') {
        Some((word, argument)) => (word, argument.trim_matches(' ')),
        None => (rest, ""),
    };
    match word.to_ascii_lowercase().as_str() {
        "who" => Command::Who,
        "help" => Command::Help,
        "quit" if argument.is_empty() => Command::Quit(None),
        "quit" => Command::Quit(Some(argument.to_owned())),
        _ => Command::Unknown(format!("/{word}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn say(text: &str) -> Command {
        Command::Say(text.to_owned())
    }

    #[test]
    fn plain_lines_are_said_exactly() {
        assert_eq!(parse("hello"), say("hello"));
        assert_eq!(parse("  two  spaces  "), say("  two  spaces  "));
        assert_eq!(
            parse(" /who"),
            say(" /who"),
            "only a leading slash is a command"
        );
        assert_eq!(parse("a/b"), say("a/b"));
    }

    #[test]
    fn blank_lines_do_nothing() {
        assert_eq!(parse(""), Command::Nothing);
        assert_eq!(parse("   "), Command::Nothing);
    }

    #[test]
    fn commands_are_recognised_in_any_case() {
        assert_eq!(parse("/who"), Command::Who);
        assert_eq!(parse("/WHO"), Command::Who);
        assert_eq!(parse("/help"), Command::Help);
        assert_eq!(parse("/quit"), Command::Quit(None));
        assert_eq!(parse("/Quit"), Command::Quit(None));
    }

    #[test]
    fn quit_takes_a_parting_text() {
        assert_eq!(
            parse("/quit see you"),
            Command::Quit(Some("see you".into()))
        );
        assert_eq!(
            parse("/quit  see  you "),
            Command::Quit(Some("see  you".into()))
        );
        assert_eq!(parse("/quit   "), Command::Quit(None));
    }

    #[test]
    fn a_double_slash_says_a_line_starting_with_a_slash() {
        assert_eq!(parse("//shrug"), say("/shrug"));
        assert_eq!(parse("//"), say("/"));
        assert_eq!(parse("///x"), say("//x"));
    }

    #[test]
    fn unknown_commands_send_nothing() {
        assert_eq!(parse("/x"), Command::Unknown("/x".into()));
        assert_eq!(parse("/me waves"), Command::Unknown("/me".into()));
        assert_eq!(parse("/"), Command::Unknown("/".into()));
    }
}
