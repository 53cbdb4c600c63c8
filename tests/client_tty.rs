//! `chat-client` at a terminal, as a person uses it: the client runs in a
//! tmux pane of the harness ([`chat_tests::tty::Pane`]), which types with
//! `send-keys` and reads the screen with `capture-pane`. Other users are raw
//! protocol clients of the harness. Where tmux is not installed the tests
//! say so and pass, except in CI, where they fail.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use chat_tests::tty::{shows, Pane, SIZE};
use chat_tests::Server;

/// The heart of the issue: a message arriving while the user is halfway
/// through a line appears above the prompt, and the half-typed line is
/// intact and still editable. Then commands, Ctrl-C, the history file, and
/// `/quit` with a parting text.
#[tokio::test(flavor = "multi_thread")]
async fn typing_is_never_garbled_by_incoming_messages() {
    let server = Server::start(&[]);
    let mut bob = server.user("bob").await;
    let Some(pane) = Pane::start(&server, &["--name", "alice"]) else {
        return;
    };
    pane.wait_for("the room's names", |s| {
        shows(s, "* in the lobby: alice, bob")
    });
    pane.wait_for_last_line("alice>");
    bob.expect("JOIN alice").await;

    pane.type_text("hello half");
    pane.wait_for_last_line("alice> hello half");
    bob.send("MSG are you there?").await;
    let screen = pane.wait_for_last_line_after("bob: are you there?", "alice> hello half");
    assert_eq!(
        screen.iter().filter(|l| l.contains("hello half")).count(),
        1,
        "the half-typed line is drawn once:\n{}",
        screen.join("\n")
    );

    // The half-typed line is still being edited: finish it and send it.
    pane.type_text(" done");
    pane.press("Enter");
    bob.expect("MSG bob are you there?").await;
    bob.expect("MSG alice hello half done").await;
    let screen = pane.wait_for("the message to come back", |s| {
        shows(s, "alice: hello half done") && s.last().map(String::as_str) == Some("alice>")
    });
    assert_eq!(
        screen
            .iter()
            .filter(|l| l.contains("hello half done"))
            .count(),
        1,
        "the user's own message is shown once:\n{}",
        screen.join("\n")
    );

    // Unknown commands send nothing: the next frame bob gets is the next
    // message.
    pane.type_text("/nope");
    pane.press("Enter");
    pane.wait_for("the hint", |s| {
        shows(
            s,
            "unknown command /nope: /help lists the commands, and // starts a message with /",
        )
    });
    pane.type_text("//slash");
    pane.press("Enter");
    bob.expect("MSG alice /slash").await;

    pane.type_text("/who");
    pane.press("Enter");
    pane.wait_for("the room's names again", |s| {
        s.iter()
            .filter(|l| l.ends_with("* in the lobby: alice, bob"))
            .count()
            == 2
    });

    // Ctrl-C clears the line.
    pane.type_text("oops");
    pane.wait_for_last_line("alice> oops");
    pane.press("C-c");
    pane.wait_for_last_line("alice>");

    pane.type_text("/quit see you");
    pane.press("Enter");
    bob.expect("LEAVE alice see you").await;
    assert_eq!(pane.wait_for_exit(), 0);
    assert!(shows(&pane.screen(), "* you left the chat"));

    let kept = pane.history();
    assert!(
        kept.lines().any(|l| l == "hello half done"),
        "history: {kept:?}"
    );
    assert!(
        kept.lines().any(|l| l == "/quit see you"),
        "history: {kept:?}"
    );
}

/// Keys that reach the client in the same read as Enter are not lost: a
/// fast typist's next lines, or a paste without bracketed paste, are each
/// sent, in order, and the unfinished rest stays on the input line.
#[tokio::test(flavor = "multi_thread")]
async fn keys_read_with_enter_are_kept() {
    let server = Server::start(&[]);
    let mut bob = server.user("bob").await;
    let Some(pane) = Pane::start(&server, &["--name", "alice"]) else {
        return;
    };
    pane.wait_for_last_line("alice>");
    bob.expect("JOIN alice").await;

    pane.send_keys(&["delta 4", "Enter", "echo 5", "Enter", "foxtrot 6"]);
    bob.expect("MSG alice delta 4").await;
    bob.expect("MSG alice echo 5").await;
    let screen = pane.wait_for_last_line_after("alice: echo 5", "alice> foxtrot 6");
    bob.expect_quiet().await;
    for said in ["delta 4", "echo 5"] {
        assert_eq!(
            screen.iter().filter(|l| l.contains(said)).count(),
            1,
            "{said:?} is shown once, and no prompt with it stays:\n{}",
            screen.join("\n")
        );
    }
    pane.press("Enter");
    bob.expect("MSG alice foxtrot 6").await;
    pane.wait_for_last_line_after("alice: foxtrot 6", "alice>");

    pane.paste_unmarked("golf 7\nhotel 8\nindia 9\njuliet");
    for said in ["golf 7", "hotel 8", "india 9"] {
        bob.expect(&format!("MSG alice {said}")).await;
    }
    pane.wait_for_last_line_after("alice: india 9", "alice> juliet");
    bob.expect_quiet().await;

    pane.press("C-u");
    pane.press("C-d");
    bob.expect("LEAVE alice").await;
    assert_eq!(pane.wait_for_exit(), 0);
}

/// A taken name is said plainly and another is asked for at the prompt;
/// when the server goes away, the client erases the prompt, says why and
/// exits 3 by itself, although it was waiting for the user to type.
#[tokio::test(flavor = "multi_thread")]
async fn taken_name_then_server_goes_away() {
    let server = Server::start(&[]);
    let mut bob = server.user("bob").await;
    let Some(pane) = Pane::start(&server, &["--name", "Bob"]) else {
        return;
    };
    pane.wait_for("the refusal", |s| shows(s, "! the name Bob is taken"));
    pane.wait_for_last_line("name>");
    pane.type_text("carol");
    pane.press("Enter");
    pane.wait_for("the login", |s| shows(s, "* in the lobby: bob, carol"));
    pane.wait_for_last_line("carol>");
    bob.expect("JOIN carol").await;

    pane.type_text("half");
    pane.wait_for_last_line("carol> half");
    server.signal(libc::SIGTERM);
    assert_eq!(pane.wait_for_exit(), 3);
    // The prompt went, as it does with /quit: it does not stay above the
    // reason as if the client still took input.
    let transcript = pane.transcript();
    assert!(
        shows(
            &transcript,
            "* connection closed by server (the server is shutting down)",
        ),
        "the transcript:\n{}",
        transcript.join("\n")
    );
    assert!(
        !transcript.iter().any(|l| l.starts_with("carol>")),
        "the prompt stayed:\n{}",
        transcript.join("\n")
    );
}

/// A person may take longer to choose a name than the server gives a
/// connection to log in: the name typed at the `name>` prompt after the
/// server's login timeout still logs in.
#[tokio::test(flavor = "multi_thread")]
async fn a_name_chosen_after_the_login_timeout_logs_in() {
    let server = Server::start(&["--login-timeout", "1s"]);
    let mut bob = server.user("bob").await;
    let Some(pane) = Pane::start(&server, &["--name", "bob"]) else {
        return;
    };
    pane.wait_for("the refusal", |s| shows(s, "! the name bob is taken"));
    pane.wait_for_last_line("name>");
    // Nothing to wait for but time: the server closes the connection it
    // gave the refused name once its login timeout has passed.
    std::thread::sleep(Duration::from_millis(1500));
    pane.type_text("carol");
    pane.press("Enter");
    bob.expect("JOIN carol").await;
    let screen = pane.wait_for_last_line_after("* in the lobby: bob, carol", "carol>");
    assert!(
        !screen.iter().any(|l| l.contains("connection closed")),
        "the screen:\n{}",
        screen.join("\n")
    );
    pane.type_text("made it");
    pane.press("Enter");
    bob.expect("MSG carol made it").await;
    pane.press("C-d");
    bob.expect("LEAVE carol").await;
    assert_eq!(pane.wait_for_exit(), 0);
}

/// Ctrl-C leaves while the client waits for the login's answer, where the
/// terminal is not the editor's and Ctrl-C used to do nothing but echo.
#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_leaves_while_logging_in() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let Some(pane) = Pane::start_at(addr, &["--name", "alice", "--login-timeout", "1m"]) else {
        return;
    };
    let (stream, _) = listener.accept().expect("the client connects");
    let mut login = String::new();
    BufReader::new(&stream)
        .read_line(&mut login)
        .expect("read the login");
    assert_eq!(login, "NAME alice\n");
    pane.press("C-c");
    assert_eq!(pane.wait_for_exit(), 2);
    assert!(shows(&pane.transcript(), "* gave up logging in"));
}

/// Whatever listens at the address but never answers is said not to be a
/// chat server once the login timeout has passed: exit code 1.
#[tokio::test(flavor = "multi_thread")]
async fn silent_listener_is_no_chat_server() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let Some(pane) = Pane::start_at(addr, &["--name", "alice", "--login-timeout", "1s"]) else {
        return;
    };
    assert_eq!(pane.wait_for_exit(), 1);
    let screen = pane.transcript();
    assert!(
        shows(
            &screen,
            &format!("! no chat server at {addr} (no answer to NAME within 1s)")
        ),
        "the screen:\n{}",
        screen.join("\n")
    );
    drop(listener);
}

/// At the `name>` prompt, with no conversation to stay in yet, Ctrl-C
/// gives up like Ctrl-D instead of only clearing the line.
#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_at_the_name_prompt_gives_up() {
    let server = Server::start(&[]);
    let _bob = server.user("bob").await;
    let Some(pane) = Pane::start(&server, &["--name", "bob"]) else {
        return;
    };
    pane.wait_for("the refusal", |s| shows(s, "! the name bob is taken"));
    pane.wait_for_last_line("name>");
    pane.type_text("car");
    pane.wait_for_last_line("name> car");
    pane.press("C-c");
    assert_eq!(pane.wait_for_exit(), 2);
}

/// A pasted line too long for a frame is not sent, and so not refused and
/// lost: the client says what the limit for a message's text is (4096 less
/// `MSG `) and puts the text back in the line, where it can be shortened
/// and sent. (Two bytes a column: too long, but not too tall to edit.)
#[tokio::test(flavor = "multi_thread")]
async fn a_line_too_long_stays_in_the_line() {
    let server = Server::start(&[]);
    let mut bob = server.user("bob").await;
    let Some(pane) = Pane::start(&server, &["--name", "alice"]) else {
        return;
    };
    pane.wait_for_last_line("alice>");
    bob.expect("JOIN alice").await;

    let longest = "é".repeat(4092 / 2);
    pane.paste(&format!("{longest}b"));
    pane.press("Enter");
    pane.wait_for("the refusal", |s| {
        shows(
            s,
            "! not sent: a message holds at most 4092 bytes, this one has 4093; edit it below",
        )
    });
    bob.expect_quiet().await;

    // The text is still there: one character less, and it goes.
    pane.wait_for("the text back in the line", |s| {
        s.last().is_some_and(|l| l.ends_with("ééb"))
    });
    pane.press("BSpace");
    pane.press("Enter");
    bob.expect(&format!("MSG alice {longest}")).await;
    pane.wait_for_last_line("alice>");
}

/// A paste taller than the terminal, and too long to send: rustyline would
/// draw it whole at every key, each drawing scrolling a partial copy of the
/// prompt into the scrollback and the notice off the screen. It is not put
/// back in the line then: the notice stays on screen and says how to get
/// the text back, and the paste's own drawing is the only partial copy.
#[tokio::test(flavor = "multi_thread")]
async fn a_paste_taller_than_the_terminal_leaves_no_copies() {
    let server = Server::start(&[]);
    let mut bob = server.user("bob").await;
    let Some(pane) = Pane::start(&server, &["--name", "alice"]) else {
        return;
    };
    pane.wait_for_last_line("alice>");
    bob.expect("JOIN alice").await;

    // 41 rows of a 100-column terminal of 30.
    pane.paste(&"a".repeat(4093));
    pane.press("Enter");
    let screen = pane.wait_for("the refusal above an empty line", |s| {
        s.iter().any(|l| {
            l.contains("! not sent: a message holds at most 4092 bytes, this one has 4093; it is")
        }) && s.last().map(String::as_str) == Some("alice>")
    });
    let said = screen.join("\n");
    assert!(
        said.contains("or press Up to edit it here"),
        "the screen:\n{said}"
    );
    bob.expect_quiet().await;
    pane.type_text("short");
    pane.press("Enter");
    bob.expect("MSG alice short").await;
    pane.wait_for_last_line_after("alice: short", "alice>");
    let transcript = pane.transcript();
    let copies = transcript
        .iter()
        .filter(|l| l.starts_with("alice> a"))
        .count();
    assert!(copies <= 1, "the transcript:\n{}", transcript.join("\n"));
    pane.press("C-d");
    bob.expect("LEAVE alice").await;
    assert_eq!(pane.wait_for_exit(), 0);
}

/// Resizing the terminal while a line is typed redraws the prompt in
/// place: a message that arrived while the terminal was narrow is still on
/// screen after it is widened again (it used to be erased by the redraw),
/// and no stale copy of the prompt is left above it, on the screen or in
/// the scrollback.
#[tokio::test(flavor = "multi_thread")]
async fn resizing_keeps_messages_and_leaves_no_stale_prompts() {
    let server = Server::start(&[]);
    let mut bob = server.user("bob").await;
    let Some(pane) = Pane::start(&server, &["--name", "alice"]) else {
        return;
    };
    pane.wait_for_last_line("alice>");
    bob.expect("JOIN alice").await;
    // 7 + 53 columns: one row at 100 columns, three at 25.
    let half = "a half-typed line that wraps when the terminal narrows";
    pane.type_text(half);
    let typed = format!("alice> {half}");
    pane.wait_for_last_line(&typed);

    pane.resize(25, SIZE.1);
    pane.wait_for("the prompt to wrap", |s| {
        s.last().is_some_and(|l| typed.ends_with(l.as_str()))
    });
    bob.send("MSG hi, narrow").await;
    bob.expect("MSG bob hi, narrow").await;
    pane.wait_for("the message", |s| shows(s, "bob: hi, narrow"));
    pane.resize(SIZE.0, SIZE.1);
    let screen = pane.wait_for_last_line_after("bob: hi, narrow", &typed);
    let prompts = |lines: &[String]| lines.iter().filter(|l| l.contains("alice>")).count();
    assert_eq!(prompts(&screen), 1, "the screen:\n{}", screen.join("\n"));
    let transcript = pane.transcript();
    assert_eq!(
        prompts(&transcript),
        1,
        "the transcript:\n{}",
        transcript.join("\n")
    );
    assert!(
        !transcript
            .iter()
            .any(|l| l.contains("wraps when") && !l.starts_with("alice>")),
        "a stale part of the prompt:\n{}",
        transcript.join("\n")
    );

    // The line is still being edited, and goes as typed.
    pane.press("Enter");
    bob.expect(&format!("MSG alice {half}")).await;
    pane.wait_for_last_line_after(&format!("alice: {half}"), "alice>");
    pane.press("C-d");
    bob.expect("LEAVE alice").await;
    assert_eq!(pane.wait_for_exit(), 0);
}

/// Each name has its own history by default: what bob typed (his
/// `/quit see you`) is not what Up brings back for alice, whose own lines
/// it does bring back.
#[tokio::test(flavor = "multi_thread")]
async fn history_is_kept_per_name() {
    let server = Server::start(&[]);
    let data = std::env::temp_dir().join(format!("chat-client-tty-data-{}", std::process::id()));
    std::fs::create_dir_all(&data).expect("create the data directory");
    let session = |name: &str| Pane::start_with(server.addr(), &["--name", name], Some(&data));

    let Some(alice) = session("alice") else {
        return;
    };
    alice.wait_for_last_line("alice>");
    alice.type_text("hello");
    alice.press("Enter");
    alice.wait_for("the message", |s| shows(s, "alice: hello"));
    alice.press("C-d");
    assert_eq!(alice.wait_for_exit(), 0);
    drop(alice);

    let bob = session("bob").expect("tmux is there");
    bob.wait_for_last_line("bob>");
    bob.type_text("/quit see you");
    bob.press("Enter");
    assert_eq!(bob.wait_for_exit(), 0);
    drop(bob);

    let alice = session("alice").expect("tmux is there");
    alice.wait_for_last_line("alice>");
    alice.press("Up");
    alice.wait_for_last_line("alice> hello");
    alice.press("C-u");
    alice.press("C-d");
    assert_eq!(alice.wait_for_exit(), 0);
    drop(alice);

    let kept = |name: &str| {
        std::fs::read_to_string(data.join("chat-client").join(format!("{name}.history")))
            .expect("the history file")
    };
    let (of_alice, of_bob) = (kept("alice"), kept("bob"));
    let _ = std::fs::remove_dir_all(&data);
    assert!(of_alice.lines().any(|l| l == "hello"), "{of_alice:?}");
    assert!(!of_alice.contains("see you"), "{of_alice:?}");
    assert!(of_bob.lines().any(|l| l == "/quit see you"), "{of_bob:?}");
}

/// The lines on screen from the last one ending with `first` on, each
/// without its time (`13:40 `), where it has one.
fn from_last<'s>(screen: &'s [String], first: &str) -> Vec<&'s str> {
    let from = screen
        .iter()
        .rposition(|l| l.ends_with(first))
        .unwrap_or_else(|| panic!("no {first:?} on the screen:\n{}", screen.join("\n")));
    screen[from..]
        .iter()
        .map(|l| match l.split_once(' ') {
            Some((time, rest)) if time.len() == 5 && time.as_bytes()[2] == b':' => rest,
            _ => l.as_str(),
        })
        .collect()
}

/// Whether `line` is a history line: `[#rust 12:00] bob: hi` for
/// `("[#rust ", "] bob: hi")`.
fn is_history(line: &str, tag: &str, said: &str) -> bool {
    line.strip_prefix(tag)
        .and_then(|rest| rest.strip_suffix(said))
        .is_some_and(|time| time.len() == 5 && time.as_bytes()[2] == b':')
}

/// Rooms as a person uses them: `/join` shows who is there, the topic and
/// the recent history (marked as the past, with each message's time), then
/// the prompt says where the user is and plain lines go there; `/msg` and
/// direct messages read who to whom; Alt-Left and Alt-Right switch between
/// the lobby and the room without losing a half-typed line; `/part` goes
/// back to the lobby.
#[tokio::test(flavor = "multi_thread")]
async fn rooms_direct_messages_and_history_as_a_person_types_them() {
    let server = Server::start(&[]);
    let mut bob = server.user("bob").await;
    bob.send("JOIN #rust").await;
    bob.expect("NAMES #rust bob").await;
    bob.send("TOPIC #rust async book club").await;
    bob.expect("TOPIC #rust bob async book club").await;
    bob.send("SAY #rust anyone here?").await;
    bob.expect("SAY #rust bob anyone here?").await;
    let Some(pane) = Pane::start(&server, &["--name", "alice"]) else {
        return;
    };
    pane.wait_for_last_line("alice>");
    bob.expect("JOIN alice").await;

    pane.type_text("/join #rust");
    pane.press("Enter");
    bob.expect("JOIN #rust alice").await;
    let screen = pane.wait_for_last_line_after("* end of history", "alice #rust>");
    let shown = from_last(&screen, "[#rust] * in the room: alice, bob");
    assert_eq!(shown.len(), 6, "the screen:\n{}", screen.join("\n"));
    assert_eq!(
        shown[..3],
        [
            "[#rust] * in the room: alice, bob",
            "[#rust] * topic: async book club (set by bob)",
            "* history of #rust:",
        ]
    );
    // A history line has its own time, in the tag, instead of now's.
    assert!(
        is_history(shown[3], "[#rust ", "] bob: anyone here?"),
        "{shown:?}"
    );
    assert_eq!(shown[4..], ["* end of history", "alice #rust>"]);

    pane.type_text("hi both");
    pane.press("Enter");
    bob.expect("SAY #rust alice hi both").await;
    pane.wait_for_last_line_after("[#rust] alice: hi both", "alice #rust>");

    pane.type_text("/msg bob see you at 5?");
    pane.press("Enter");
    bob.expect("TELL alice bob see you at 5?").await;
    pane.wait_for_last_line_after("you -> bob: see you at 5?", "alice #rust>");
    bob.send("TELL alice ok!").await;
    bob.expect("TELL bob alice ok!").await;
    pane.wait_for_last_line_after("bob -> you: ok!", "alice #rust>");
    pane.type_text("/msg zed hello?");
    pane.press("Enter");
    pane.wait_for_line_above(
        "! no-such-user: nobody is logged in under that name (/who lists who is here)",
        "alice #rust>",
    );

    // A half-typed line survives a switch, and goes where the prompt says.
    pane.type_text("for the lobby");
    pane.press("M-Left");
    pane.wait_for_last_line("alice> for the lobby");
    pane.press("Enter");
    bob.expect("MSG alice for the lobby").await;
    pane.wait_for_last_line_after("alice: for the lobby", "alice>");
    pane.press("M-Right");
    pane.wait_for_last_line("alice #rust>");

    pane.type_text("/go");
    pane.press("Enter");
    pane.wait_for_last_line("alice>");
    pane.type_text("/go #nope");
    pane.press("Enter");
    pane.wait_for("the refusal", |s| {
        shows(s, "! you are not in #nope; /join #nope enters it")
    });
    pane.type_text("/go #RUST");
    pane.press("Enter");
    pane.wait_for_last_line("alice #rust>");

    pane.type_text("/topic");
    pane.press("Enter");
    pane.wait_for_line_above(
        "[#rust] * topic: async book club (set by bob)",
        "alice #rust>",
    );
    pane.type_text("/who");
    pane.press("Enter");
    pane.wait_for_line_above("[#rust] * in the room: alice, bob", "alice #rust>");
    pane.type_text("/who lobby");
    pane.press("Enter");
    pane.wait_for("the lobby's names", |s| {
        matches!(s, [.., above, last] if last == "alice #rust>"
            && above.ends_with(" * in the lobby: alice, bob")
            && !above.contains("[#rust]"))
    });
    pane.type_text("/history 1");
    pane.press("Enter");
    let screen = pane.wait_for_line_above("* end of history", "alice #rust>");
    let shown = from_last(&screen, "* history of #rust:");
    assert!(
        is_history(shown[1], "[#rust ", "] alice: hi both"),
        "{shown:?}"
    );

    pane.type_text("/part later");
    pane.press("Enter");
    bob.expect("LEAVE #rust alice later").await;
    pane.wait_for_last_line_after("[#rust] * you left #rust (later)", "alice>");

    pane.type_text("/part");
    pane.press("Enter");
    pane.wait_for("the refusal", |s| {
        shows(s, "! the lobby cannot be left; /quit leaves the server")
    });
    pane.type_text("/history");
    pane.press("Enter");
    let screen = pane.wait_for_line_above("* end of history", "alice>");
    let shown = from_last(&screen, "* history of the lobby:");
    assert!(
        is_history(shown[1], "[", "] alice: for the lobby"),
        "{shown:?}"
    );

    pane.press("C-d");
    bob.expect("LEAVE alice").await;
    assert_eq!(pane.wait_for_exit(), 0);
}

/// `--room` at a terminal: the client joins the room before the first
/// prompt, which is the room's. `/help` lists the room commands with the
/// others.
#[tokio::test(flavor = "multi_thread")]
async fn room_flag_joins_before_the_first_prompt() {
    let server = Server::start(&[]);
    let Some(pane) = Pane::start(&server, &["--name", "alice", "--room", "#ops"]) else {
        return;
    };
    pane.wait_for_last_line_after("* no messages in #ops yet", "alice #ops>");
    assert!(shows(&pane.screen(), "[#ops] * in the room: alice"));

    pane.type_text("/help");
    pane.press("Enter");
    // The help's last line: the lines before it may show before the whole
    // help has been printed.
    let screen = pane.wait_for_last_line_after("Up and Down browse earlier lines", "alice #ops>");
    for command in [
        "/join #room",
        "/part [#room] [text]",
        "/go [#room]",
        "Alt-Left/Right",
        "/msg name text",
        "/topic [text]",
        "/who [#room]",
        "/rooms",
        "/history [n]",
        "/quit [text]",
        "Tab",
    ] {
        assert!(
            screen.iter().any(|l| l.trim_start().starts_with(command)),
            "{command} is not in the help:\n{}",
            screen.join("\n")
        );
    }
    pane.press("C-d");
    assert_eq!(pane.wait_for_exit(), 0);
}

/// A refused `/join` leaves the user where they were: the prompt waits for
/// the answer, and the answer is no room.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_join_changes_nothing() {
    let server = Server::start(&["--max-rooms-per-user", "1"]);
    let mut bob = server.user("bob").await;
    let Some(pane) = Pane::start(&server, &["--name", "alice", "--room", "#a"]) else {
        return;
    };
    pane.wait_for_last_line_after("* no messages in #a yet", "alice #a>");
    bob.expect("JOIN alice").await;
    pane.type_text("/join #b");
    pane.press("Enter");
    let screen = pane.wait_for("the refusal", |s| {
        s.iter().any(|l| l.contains("! too-many-rooms: "))
            && s.last().map(String::as_str) == Some("alice #a>")
    });
    assert!(
        shows(&screen, "(/part a room first, or try later)"),
        "{}",
        screen.join("\n")
    );
    pane.type_text("still here");
    pane.press("Enter");
    pane.wait_for_last_line_after("[#a] alice: still here", "alice #a>");
    pane.press("C-d");
    bob.expect("LEAVE alice").await;
    assert_eq!(pane.wait_for_exit(), 0);
}

/// Tab completes what a person would otherwise type out: commands, the
/// names of people in the lobby, and rooms (joined ones, and those the
/// last `/rooms` listed).
#[tokio::test(flavor = "multi_thread")]
async fn tab_completes_commands_names_and_rooms() {
    let server = Server::start(&[]);
    let mut bob = server.user("bob").await;
    let mut carol = server.user("carol").await;
    bob.expect("JOIN carol").await;
    bob.send("JOIN #rust").await;
    bob.expect("NAMES #rust bob").await;
    for room in ["#ruby", "#ops"] {
        carol.send(&format!("JOIN {room}")).await;
        carol.expect(&format!("NAMES {room} carol")).await;
    }
    let Some(pane) = Pane::start(&server, &["--name", "alice"]) else {
        return;
    };
    pane.wait_for_last_line("alice>");
    let _dave = server.user("dave").await;
    pane.wait_for("dave", |s| shows(s, "* dave joined"));

    pane.type_text("/ro");
    pane.press("Tab");
    pane.wait_for_last_line("alice> /rooms");
    pane.press("Enter");
    pane.wait_for("the rooms", |s| {
        shows(s, "* rooms: #ops (1), #ruby (1), #rust (1)")
    });

    pane.type_text("/j");
    pane.press("Tab");
    pane.wait_for_last_line("alice> /join");
    pane.type_text("#ru");
    pane.press("Tab");
    pane.press("Tab");
    // Two rooms start so: a second Tab lists them.
    pane.wait_for("the candidates", |s| {
        s.iter()
            .any(|l| l.contains("#rust") && l.contains("#ruby") && !l.contains('>'))
    });
    pane.type_text("s");
    pane.press("Tab");
    pane.wait_for_last_line("alice> /join #rust");
    pane.press("Enter");
    bob.expect("JOIN alice").await;
    bob.expect("JOIN dave").await;
    bob.expect("JOIN #rust alice").await;
    pane.wait_for_last_line_after("* no messages in #rust yet", "alice #rust>");

    // The first word of a message addresses someone.
    pane.type_text("ca");
    pane.press("Tab");
    pane.wait_for_last_line("alice #rust> carol:");
    pane.type_text("hi, and D");
    pane.press("Tab");
    pane.wait_for_last_line("alice #rust> carol: hi, and dave");
    pane.press("Enter");
    bob.expect("SAY #rust alice carol: hi, and dave ").await;

    pane.type_text("/msg B");
    pane.press("Tab");
    pane.wait_for_last_line("alice #rust> /msg bob");
    pane.type_text("psst");
    pane.press("Enter");
    bob.expect("TELL alice bob psst").await;

    pane.type_text("/part #");
    pane.press("Tab");
    pane.wait_for_last_line("alice #rust> /part #rust");
    pane.press("C-u");
    pane.press("C-d");
    bob.expect("LEAVE alice").await;
    assert_eq!(pane.wait_for_exit(), 0);
}

/// One connection to a scripted server, from the test's own thread.
struct Scripted {
    from_client: BufReader<TcpStream>,
    to_client: TcpStream,
}

impl Scripted {
    /// The client's next connection to `listener`.
    fn accept(listener: &TcpListener) -> Scripted {
        let (stream, _) = listener.accept().expect("the client connects");
        stream
            .set_read_timeout(Some(chat_tests::TIMEOUT))
            .expect("a read timeout");
        Scripted {
            to_client: stream.try_clone().expect("a second handle"),
            from_client: BufReader::new(stream),
        }
    }

    /// Asserts the next line the client sends.
    fn expect(&mut self, line: &str) {
        let mut got = String::new();
        self.from_client
            .read_line(&mut got)
            .expect("a line from the client");
        assert_eq!(got, format!("{line}\n"));
    }

    fn send(&mut self, lines: &[&str]) {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        self.to_client
            .write_all(text.as_bytes())
            .expect("write to the client");
    }
}

/// A registered name at a terminal: the client asks for the password at
/// a prompt that shows nothing of what is typed, tries it on a new
/// connection, says so when it is wrong and asks again; `/register` asks
/// for the new password twice, without echo either, and sends
/// `REGISTER <password>`; `/password` with two new passwords that differ
/// sends nothing. No password is ever on the screen, in the scrollback or
/// in the history file.
#[tokio::test(flavor = "multi_thread")]
async fn passwords_are_asked_for_without_showing_them() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let Some(pane) = Pane::start_at(addr, &["--name", "alice"]) else {
        return;
    };
    let mut first = Scripted::accept(&listener);
    first.expect("NAME alice");
    first.send(&["ERROR name-registered alice is registered; NAME alice <password>"]);
    let screen = pane.wait_for_last_line("password for alice:");
    assert!(
        shows(
            &screen,
            "* the name alice is registered: type its password (it does not show; Ctrl-C gives up)"
        ),
        "{}",
        screen.join("\n")
    );
    pane.type_text("wrong-secret1");
    pane.press("Enter");
    let mut second = Scripted::accept(&listener);
    second.expect("NAME alice wrong-secret1");
    second.send(&["ERROR bad-password wrong password"]);
    pane.wait_for_last_line_after("! wrong password for alice", "password for alice:");
    pane.type_text("right-secret1");
    // What is typed is not echoed: the prompt's row stays as it was.
    assert_eq!(
        pane.screen().last().map(String::as_str),
        Some("password for alice:")
    );
    pane.press("Enter");
    let mut chat = Scripted::accept(&listener);
    chat.expect("NAME alice right-secret1");
    chat.send(&["WELCOME alice", "NAMES alice"]);
    pane.wait_for_last_line("alice>");

    // A password typed on the line by mistake is not sent, nor kept.
    pane.type_text("/register oops-secret1");
    pane.press("Enter");
    pane.wait_for_last_line_after(
        "! not sent: type /register alone; the password is asked for where it does not show",
        "alice>",
    );
    pane.type_text("/register");
    pane.press("Enter");
    pane.wait_for_last_line("/register: new password:");
    pane.type_text("new-secret1");
    pane.press("Enter");
    pane.wait_for_last_line("/register: the new password again:");
    pane.type_text("new-secret1");
    pane.press("Enter");
    chat.expect("REGISTER new-secret1");
    chat.send(&["REGISTERED alice"]);
    pane.wait_for_last_line_after(
        "* the name alice is registered to you: from now on it logs in only with your password",
        "alice>",
    );

    pane.type_text("/password");
    pane.press("Enter");
    pane.wait_for_last_line("/password: current password:");
    pane.type_text("new-secret1");
    pane.press("Enter");
    pane.wait_for_last_line("/password: new password:");
    pane.type_text("other-secret1");
    pane.press("Enter");
    pane.wait_for_last_line("/password: the new password again:");
    pane.type_text("other-secret2");
    pane.press("Enter");
    pane.wait_for_last_line_after(
        "! /password: the two new passwords differ; nothing was sent",
        "alice>",
    );
    pane.type_text("hello");
    pane.press("Enter");
    chat.expect("MSG hello");
    chat.send(&["MSG alice hello"]);
    pane.wait_for_last_line_after("alice: hello", "alice>");
    pane.press("C-d");
    chat.expect("LEAVE");
    chat.send(&["BYE"]);
    assert_eq!(pane.wait_for_exit(), 0);

    let transcript = pane.transcript().join("\n");
    assert!(
        !transcript.contains("secret"),
        "the transcript:\n{transcript}"
    );
    let kept = pane.history();
    assert_eq!(kept.lines().last(), Some("hello"), "history: {kept:?}");
    assert!(
        !kept.contains("secret") && !kept.contains("/register") && !kept.contains("/password"),
        "history: {kept:?}"
    );
}

/// Ctrl-C at the password prompt gives up logging in: exit 2, and the
/// terminal echoes again afterwards (the shell's prompt after the client
/// is not the test's business, but the client's own last words are).
#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_at_the_password_prompt_gives_up() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let Some(pane) = Pane::start_at(addr, &["--name", "alice"]) else {
        return;
    };
    let mut first = Scripted::accept(&listener);
    first.expect("NAME alice");
    first.send(&["ERROR name-registered"]);
    pane.wait_for_last_line("password for alice:");
    pane.type_text("half");
    pane.press("C-c");
    assert_eq!(pane.wait_for_exit(), 2);
    assert!(shows(&pane.transcript(), "* gave up logging in"));
}

/// An operator's commands at the prompt: a bad duration is refused before
/// sending, with the rule; `/kick` goes out as typed and its answer reads
/// as a sentence. Then the operator is kicked in turn: the client says by
/// whom and why, and exits 7 by itself.
#[tokio::test(flavor = "multi_thread")]
async fn operators_moderate_and_being_kicked_ends_the_client() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let Some(pane) = Pane::start_at(addr, &["--name", "alice"]) else {
        return;
    };
    let mut chat = Scripted::accept(&listener);
    chat.expect("NAME alice");
    chat.send(&["WELCOME alice", "NAMES alice eve"]);
    pane.wait_for_last_line("alice>");

    pane.type_text("/ban eve 2x");
    pane.press("Enter");
    pane.wait_for("the rule", |s| {
        s.iter()
            .any(|l| l.contains("! \"2x\" is not a duration: a duration is a number and a unit"))
    });
    pane.type_text("/kick e");
    pane.press("Tab");
    pane.wait_for_last_line("alice> /kick eve");
    pane.type_text("spamming  again");
    pane.press("Enter");
    chat.expect("KICK eve spamming  again");
    chat.send(&["OK KICK eve", "LEAVE eve"]);
    pane.wait_for_last_line_after("* eve left", "alice>");
    assert!(shows(&pane.screen(), "* eve was kicked"));

    pane.type_text("half");
    chat.send(&["ERROR kicked carol enough"]);
    drop(chat);
    assert_eq!(pane.wait_for_exit(), 7);
    let transcript = pane.transcript();
    assert!(
        shows(&transcript, "* you were kicked by carol: enough"),
        "the transcript:\n{}",
        transcript.join("\n")
    );
}
