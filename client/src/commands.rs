//! What a line typed at the interactive prompt asks for.
//!
//! A line is a message to the current room (or the lobby) unless it starts
//! with `/`. Doubling the slash sends a message that starts with one
//! (`//shrug` says `/shrug`), so every text can still be said.
//!
//! Parsing knows only the line, not where the user is: `/part` without a
//! room means the current one, and the caller fills that in.

use std::num::NonZeroU64;

use chat_protocol::{is_valid_name, is_valid_room, parse_duration, ClientFrame, DURATION_RULES};

/// One typed line, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Send this text to the current room, exactly as typed.
    Say(String),
    /// `/join #room`: enter a room, which becomes the current one.
    Join(String),
    /// `/part [#room] [text]`: leave a room (`None`: the current one), with
    /// an optional parting text.
    Part {
        room: Option<String>,
        text: Option<String>,
    },
    /// `/go [#room]`: make a joined room current; `None` is the lobby.
    Go(Option<String>),
    /// `/msg name text`: a message to one person.
    Tell { to: String, text: String },
    /// `/topic [text]`: set the current room's topic, or show it (`None`).
    Topic(Option<String>),
    /// `/who [#room | lobby]`: ask who is in a room.
    Who(Place),
    /// `/rooms`: ask which rooms there are.
    Rooms,
    /// `/history [n]`: the current room's (or lobby's) last messages.
    History(Option<NonZeroU64>),
    /// `/quit [text]`: leave, with an optional parting text.
    Quit(Option<String>),
    /// `/register`: register the name logged in under; the password is
    /// asked for at a hidden prompt, twice.
    Register,
    /// `/password`: change the password; the old one and the new one
    /// (twice) are asked for at hidden prompts.
    ChangePassword,
    /// `/unregister`: the name is no longer registered; the password is
    /// asked for at a hidden prompt.
    Unregister,
    /// An operator's request, ready to send: `/kick`, `/ban`, `/unban`,
    /// `/mute`, `/unmute` or `/bans`.
    Moderate(ClientFrame),
    /// `/help`: show the commands.
    Help,
    /// A command used the wrong way; nothing is sent. Says how to use it.
    Usage(String),
    /// A `/word` that is not a command; nothing is sent.
    Unknown(String),
    /// An empty line, or only spaces: nothing to do.
    Nothing,
}

/// Which room a command is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// The current room, or the lobby when that is where the user is.
    Here,
    /// The lobby, wherever the user is.
    Lobby,
    /// This room.
    Room(String),
}

/// The commands and what they do, as `/help` shows them.
pub const HELP: &[(&str, &str)] = &[
    (
        "/join #room",
        "enter a room (made if new); it becomes the current room",
    ),
    (
        "/part [#room] [text]",
        "leave a room, the current one by default",
    ),
    (
        "/go [#room]",
        "switch to a room you are in; to the lobby without one",
    ),
    ("Alt-Left/Right", "switch to the previous or next room"),
    ("/msg name text", "a message to one person only"),
    ("/topic [text]", "show the current room's topic, or set it"),
    (
        "/who [#room]",
        "list who is here, or in #room; /who lobby: everyone",
    ),
    ("/rooms", "list the rooms and how many are in each"),
    ("/history [n]", "show the last n (50) messages here"),
    (
        "/quit [text]",
        "leave, with an optional parting text (Ctrl-D too)",
    ),
    (
        "/register",
        "register your name: it then logs in only with the password asked for",
    ),
    (
        "/password",
        "change your password (asks the old one, then the new)",
    ),
    (
        "/unregister",
        "your name is no longer registered (asks the password)",
    ),
    ("/kick name [text]", "operators: close someone's connection"),
    (
        "/ban name duration [text]",
        "operators: keep a name and its address out (10m, 2h, 7d)",
    ),
    ("/unban name", "operators: lift a ban"),
    (
        "/mute name duration [text]",
        "operators: refuse someone's messages for a while",
    ),
    ("/unmute name", "operators: lift a mute"),
    ("/bans", "operators: list the bans in force"),
    ("/help", "show this help"),
    ("//text", "send a message that starts with /"),
    ("Tab", "complete a command, a name or a room"),
    ("Ctrl-C", "clear the line; Up and Down browse earlier lines"),
];

/// The command words, for completion.
pub const WORDS: &[&str] = &[
    "/ban",
    "/bans",
    "/go",
    "/help",
    "/history",
    "/join",
    "/kick",
    "/msg",
    "/mute",
    "/part",
    "/password",
    "/quit",
    "/register",
    "/rooms",
    "/topic",
    "/unban",
    "/unmute",
    "/unregister",
    "/who",
];

/// The commands that ask for a password: a line that starts with one is
/// never kept in the history, in case a password was typed after it.
const SECRET_WORDS: &[&str] = &["/password", "/register", "/unregister"];

/// Whether `line` is a command that deals with passwords, which no
/// history may keep.
pub fn holds_secret(line: &str) -> bool {
    line.split('\n').any(|line| {
        let word = line.split(' ').next().unwrap_or_default();
        SECRET_WORDS.iter().any(|w| w.eq_ignore_ascii_case(word))
    })
}

/// What a command's first argument is, for completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Argument {
    /// A room the user is in (`/go`, `/part`).
    JoinedRoom,
    /// Any room (`/join`, `/who`).
    AnyRoom,
    /// A user's name (`/msg`).
    Name,
    /// Nothing to complete.
    Other,
}

/// What the first argument of the command `word` (`/join`) is.
pub fn argument_of(word: &str) -> Argument {
    match word.to_ascii_lowercase().as_str() {
        "/go" | "/part" => Argument::JoinedRoom,
        "/join" | "/who" => Argument::AnyRoom,
        "/msg" | "/kick" | "/ban" | "/unban" | "/mute" | "/unmute" => Argument::Name,
        _ => Argument::Other,
    }
}

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
        Some((word, argument)) => (word, argument),
        None => (rest, ""),
    };
    let trimmed = argument.trim_matches(' ');
    match word.to_ascii_lowercase().as_str() {
        "who" if trimmed.is_empty() => Command::Who(Place::Here),
        "who" if trimmed.eq_ignore_ascii_case("lobby") => Command::Who(Place::Lobby),
        "who" => room(trimmed, "/who [#room]").map_or_else(|u| u, |r| Command::Who(Place::Room(r))),
        "help" => Command::Help,
        "quit" => Command::Quit(text(trimmed)),
        "join" => room(trimmed, "/join #room").map_or_else(|u| u, Command::Join),
        "part" => part(trimmed),
        "go" if trimmed.is_empty() || trimmed.eq_ignore_ascii_case("lobby") => Command::Go(None),
        "go" => room(trimmed, "/go [#room]").map_or_else(|u| u, |r| Command::Go(Some(r))),
        "msg" => tell(argument),
        "register" | "password" | "unregister" if !trimmed.is_empty() => Command::Usage(format!(
            "not sent: type /{} alone; the password is asked for where it does not show",
            word.to_ascii_lowercase()
        )),
        "register" => Command::Register,
        "password" => Command::ChangePassword,
        "unregister" => Command::Unregister,
        "kick" => kick(trimmed),
        "ban" | "mute" => ban_or_mute(&word.to_ascii_lowercase(), trimmed),
        "unban" => one_name(trimmed, "/unban name")
            .map_or_else(|u| u, |name| Command::Moderate(ClientFrame::Unban(name))),
        "unmute" => one_name(trimmed, "/unmute name")
            .map_or_else(|u| u, |name| Command::Moderate(ClientFrame::Unmute(name))),
        "bans" => Command::Moderate(ClientFrame::Bans),
        "topic" => Command::Topic(text(argument)),
        "rooms" => Command::Rooms,
        "history" if trimmed.is_empty() => Command::History(None),
        "history" => match trimmed.parse::<NonZeroU64>() {
            Ok(n) if trimmed.bytes().all(|b| b.is_ascii_digit()) => Command::History(Some(n)),
            _ => usage("/history [n]", "n is a number from 1"),
        },
        _ => Command::Unknown(format!("/{word}")),
    }
}

fn usage(form: &str, why: &str) -> Command {
    Command::Usage(format!("{why}: {form}"))
}

/// A text argument: none if blank.
fn text(argument: &str) -> Option<String> {
    (!argument.bytes().all(|b| b == b' ')).then(|| argument.to_owned())
}

/// Exactly one room, spelled with its `#`.
fn room(argument: &str, form: &str) -> Result<String, Command> {
    if is_valid_room(argument) {
        return Ok(argument.to_owned());
    }
    let why = if argument.is_empty() {
        "name a room".to_owned()
    } else if !argument.starts_with('#') && is_valid_room(&format!("#{argument}")) {
        format!("rooms start with #, as in #{argument}")
    } else {
        format!("{argument:?} is not a room: '#' then 1 to 32 letters, digits, '_', '-' or '.'")
    };
    Err(usage(form, &why))
}

/// `/part [#room] [text]`: a first word starting with `#` is the room.
fn part(argument: &str) -> Command {
    let (first, rest) = argument.split_once(' ').unwrap_or((argument, ""));
    if !first.starts_with('#') {
        return Command::Part {
            room: None,
            text: text(argument),
        };
    }
    match room(first, "/part [#room] [text]") {
        Ok(room) => Command::Part {
            room: Some(room),
            text: text(rest.trim_matches(' ')),
        },
        Err(usage) => usage,
    }
}

/// A name, the first word of `argument`, and the rest (a text, or more).
fn name_and_rest<'a>(argument: &'a str, form: &str) -> Result<(String, &'a str), Command> {
    let (name, rest) = argument.split_once(' ').unwrap_or((argument, ""));
    if name.is_empty() {
        return Err(usage(form, "name someone"));
    }
    if !is_valid_name(name) {
        return Err(usage(form, &format!("{name:?} is not a name")));
    }
    Ok((name.to_owned(), rest.trim_start_matches(' ')))
}

/// Exactly one name.
fn one_name(argument: &str, form: &str) -> Result<String, Command> {
    let (name, rest) = name_and_rest(argument, form)?;
    if rest.is_empty() {
        Ok(name)
    } else {
        Err(usage(form, "only a name"))
    }
}

/// `/kick name [text]`.
fn kick(argument: &str) -> Command {
    match name_and_rest(argument, "/kick name [text]") {
        Ok((name, text)) => Command::Moderate(ClientFrame::Kick {
            name,
            text: self::text(text),
        }),
        Err(usage) => usage,
    }
}

/// `/ban name duration [text]` and `/mute name duration [text]`: the
/// duration is checked here, with the rule, rather than by the server.
fn ban_or_mute(verb: &str, argument: &str) -> Command {
    let form = format!("/{verb} name duration [text]");
    let (name, rest) = match name_and_rest(argument, &form) {
        Ok(parts) => parts,
        Err(usage) => return usage,
    };
    let (duration, text) = rest.split_once(' ').unwrap_or((rest, ""));
    if duration.is_empty() {
        return usage(&form, &format!("say for how long: {DURATION_RULES}"));
    }
    let Some(duration) = parse_duration(duration) else {
        return usage(
            &form,
            &format!("{duration:?} is not a duration: {DURATION_RULES}"),
        );
    };
    let text = self::text(text.trim_start_matches(' '));
    Command::Moderate(ClientFrame::restriction(
        verb == "ban",
        name,
        duration,
        text,
    ))
}

/// `/msg name text`: the text is everything after the name and one space,
/// kept exactly like a message's.
fn tell(argument: &str) -> Command {
    const FORM: &str = "/msg name text";
    let argument = argument.trim_start_matches(' ');
    let (to, text) = argument.split_once(' ').unwrap_or((argument, ""));
    if to.is_empty() {
        return usage(FORM, "name someone");
    }
    if !is_valid_name(to) {
        return usage(FORM, &format!("{to:?} is not a name"));
    }
    if text.bytes().all(|b| b == b' ') {
        return usage(FORM, &format!("say something to {to}"));
    }
    Command::Tell {
        to: to.to_owned(),
        text: text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn say(text: &str) -> Command {
        Command::Say(text.to_owned())
    }

    fn some(text: &str) -> Option<String> {
        Some(text.to_owned())
    }

    fn is_usage(command: &Command, wanted: &str) -> bool {
        matches!(command, Command::Usage(text) if text.contains(wanted))
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
        assert_eq!(parse("#rust is nice"), say("#rust is nice"));
    }

    #[test]
    fn blank_lines_do_nothing() {
        assert_eq!(parse(""), Command::Nothing);
        assert_eq!(parse("   "), Command::Nothing);
    }

    #[test]
    fn commands_are_recognised_in_any_case() {
        assert_eq!(parse("/who"), Command::Who(Place::Here));
        assert_eq!(parse("/WHO"), Command::Who(Place::Here));
        assert_eq!(parse("/help"), Command::Help);
        assert_eq!(parse("/quit"), Command::Quit(None));
        assert_eq!(parse("/Quit"), Command::Quit(None));
        assert_eq!(parse("/ROOMS"), Command::Rooms);
        assert_eq!(parse("/Join #a"), Command::Join("#a".into()));
    }

    #[test]
    fn quit_takes_a_parting_text() {
        assert_eq!(parse("/quit see you"), Command::Quit(some("see you")));
        assert_eq!(parse("/quit  see  you "), Command::Quit(some("see  you")));
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

    #[test]
    fn join_takes_one_room() {
        assert_eq!(parse("/join #Rust"), Command::Join("#Rust".into()));
        assert_eq!(parse("/join  #rust "), Command::Join("#rust".into()));
        assert!(is_usage(&parse("/join"), "name a room: /join #room"));
        assert!(is_usage(
            &parse("/join rust"),
            "rooms start with #, as in #rust"
        ));
        assert!(is_usage(&parse("/join #a #b"), "\"#a #b\" is not a room"));
        assert!(is_usage(&parse("/join #"), "is not a room"));
    }

    #[test]
    fn part_takes_an_optional_room_then_an_optional_text() {
        assert_eq!(
            parse("/part"),
            Command::Part {
                room: None,
                text: None
            }
        );
        assert_eq!(
            parse("/part #rust"),
            Command::Part {
                room: some("#rust"),
                text: None
            }
        );
        assert_eq!(
            parse("/part #rust  see you "),
            Command::Part {
                room: some("#rust"),
                text: some("see you")
            }
        );
        assert_eq!(
            parse("/part see you"),
            Command::Part {
                room: None,
                text: some("see you")
            }
        );
        assert!(is_usage(&parse("/part #b!d bye"), "is not a room"));
    }

    #[test]
    fn go_switches_to_a_room_or_the_lobby() {
        assert_eq!(parse("/go #rust"), Command::Go(some("#rust")));
        assert_eq!(parse("/go"), Command::Go(None));
        assert_eq!(parse("/go lobby"), Command::Go(None));
        assert!(is_usage(&parse("/go rust"), "as in #rust"));
    }

    #[test]
    fn msg_tells_one_person_the_text_exactly() {
        assert_eq!(
            parse("/msg bob see you at 5?"),
            Command::Tell {
                to: "bob".into(),
                text: "see you at 5?".into()
            }
        );
        assert_eq!(
            parse("/msg  bob  two spaces "),
            Command::Tell {
                to: "bob".into(),
                text: " two spaces ".into()
            }
        );
        assert!(is_usage(&parse("/msg"), "name someone"));
        assert!(is_usage(&parse("/msg bob"), "say something to bob"));
        assert!(is_usage(&parse("/msg bob   "), "say something to bob"));
        assert!(is_usage(&parse("/msg #rust hi"), "\"#rust\" is not a name"));
    }

    #[test]
    fn topic_sets_with_a_text_and_asks_without() {
        assert_eq!(parse("/topic"), Command::Topic(None));
        assert_eq!(parse("/topic   "), Command::Topic(None));
        assert_eq!(
            parse("/topic async book club"),
            Command::Topic(some("async book club"))
        );
    }

    #[test]
    fn who_takes_an_optional_room() {
        assert_eq!(parse("/who"), Command::Who(Place::Here));
        assert_eq!(parse("/who lobby"), Command::Who(Place::Lobby));
        assert_eq!(parse("/who #ops"), Command::Who(Place::Room("#ops".into())));
        assert!(is_usage(&parse("/who ops"), "as in #ops"));
    }

    #[test]
    fn history_takes_an_optional_count_from_1() {
        assert_eq!(parse("/history"), Command::History(None));
        assert_eq!(parse("/history 20"), Command::History(NonZeroU64::new(20)));
        for bad in [
            "/history 0",
            "/history -1",
            "/history +5",
            "/history x",
            "/history 1 2",
        ] {
            assert!(is_usage(&parse(bad), "n is a number from 1"), "{bad}");
        }
    }

    #[test]
    fn password_commands_take_no_argument_and_are_never_kept() {
        assert_eq!(parse("/register"), Command::Register);
        assert_eq!(parse("/PASSWORD "), Command::ChangePassword);
        assert_eq!(parse("/unregister"), Command::Unregister);
        for typed in [
            "/register hunter22",
            "/password old new",
            "/unregister hunter22",
        ] {
            let command = parse(typed);
            assert!(is_usage(&command, "alone"), "{typed}: {command:?}");
            assert!(!format!("{command:?}").contains("hunter22"));
            assert!(holds_secret(typed), "{typed}");
        }
        assert!(holds_secret("/Register"));
        assert!(holds_secret("hi\n/password x y"));
        assert!(!holds_secret("/registered"));
        assert!(!holds_secret("register me"));
    }

    #[test]
    fn moderation_takes_a_name_a_duration_and_a_text() {
        use std::time::Duration;
        let moderate = |frame| Command::Moderate(frame);
        assert_eq!(
            parse("/kick bob  spamming again"),
            moderate(ClientFrame::Kick {
                name: "bob".into(),
                text: some("spamming again")
            })
        );
        assert_eq!(
            parse("/kick bob"),
            moderate(ClientFrame::Kick {
                name: "bob".into(),
                text: None
            })
        );
        assert_eq!(
            parse("/ban eve 7d spam"),
            moderate(ClientFrame::Ban {
                name: "eve".into(),
                duration: Duration::from_secs(7 * 86_400),
                text: some("spam")
            })
        );
        assert_eq!(
            parse("/mute eve 10m"),
            moderate(ClientFrame::Mute {
                name: "eve".into(),
                duration: Duration::from_secs(600),
                text: None
            })
        );
        assert_eq!(
            parse("/unban eve"),
            moderate(ClientFrame::Unban("eve".into()))
        );
        assert_eq!(
            parse("/unmute eve"),
            moderate(ClientFrame::Unmute("eve".into()))
        );
        assert_eq!(parse("/bans"), moderate(ClientFrame::Bans));
        assert!(is_usage(&parse("/kick"), "name someone: /kick name [text]"));
        assert!(is_usage(&parse("/kick #x"), "\"#x\" is not a name"));
        assert!(is_usage(
            &parse("/ban eve"),
            "say for how long: a duration is"
        ));
        assert!(is_usage(
            &parse("/mute eve 10 minutes"),
            "\"10\" is not a duration: a duration is a number and a unit"
        ));
        assert!(is_usage(
            &parse("/ban eve 400d"),
            "from 1 second to 365 days"
        ));
        assert!(is_usage(
            &parse("/unban eve now"),
            "only a name: /unban name"
        ));
    }

    #[test]
    fn every_command_is_in_the_help_and_completes() {
        for word in WORDS {
            assert!(
                HELP.iter()
                    .any(|(form, _)| form.split(' ').next() == Some(word)),
                "{word} is not in /help"
            );
            assert!(
                !matches!(parse(word), Command::Unknown(_)),
                "{word} is not parsed"
            );
        }
        assert_eq!(argument_of("/JOIN"), Argument::AnyRoom);
        assert_eq!(argument_of("/go"), Argument::JoinedRoom);
        assert_eq!(argument_of("/msg"), Argument::Name);
        assert_eq!(argument_of("/kick"), Argument::Name);
        assert_eq!(argument_of("/Unmute"), Argument::Name);
        assert_eq!(argument_of("/quit"), Argument::Other);
    }
}
