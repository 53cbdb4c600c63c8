//! The interactive mode: a person at a terminal.
//!
//! The main thread runs the line editor (rustyline), which blocks while the
//! user types; the conversation runs on the tokio runtime and shows what
//! arrives through the [`Screen`], above the prompt. The editor hands typed
//! lines to the conversation's writer over a channel.
//!
//! Both sides share the user's [`Rooms`]: the conversation keeps them as the
//! server tells, the editor reads them for the prompt (`alice #rust>`), for
//! where a plain line goes, and for Tab completion. A command that changes
//! rooms (`/join`, `/part`) is followed by a `PING`, and the next prompt
//! waits for its `PONG`: the server answers frames in order, so by then the
//! rooms are as the server has them, and the prompt says where the user is.
//! Joining a room also asks for its recent history, shown above the prompt.
//!
//! Passwords (a registered name's at login, and those of `/register`,
//! `/password` and `/unregister`) are read at prompts of their own, with
//! the terminal's echo off ([`crate::password::read_hidden`]), never by the
//! editor: what the editor reads can end up in its history.
//!
//! When the conversation ends by itself (the server went away) the editor is
//! still waiting for a key. rustyline turns SIGINT into
//! `ReadlineError::Interrupted` (Ctrl-C itself is only a key in raw mode), so
//! the conversation raises SIGINT until the editor has noticed. Between two
//! prompts tokio's handler absorbs the signal instead of the default action,
//! which would kill the process.

use std::borrow::Cow;
use std::cell::RefCell;
use std::future::Future;
use std::num::NonZeroU64;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chat_protocol::{name_key, ClientFrame, ErrorCode, Password, ServerFrame, PASSWORD_RULES};
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::Validator;
use rustyline::{
    Cmd, ColorMode, CompletionType, ConditionalEventHandler, Config, Editor, Event, EventContext,
    EventHandler, Helper, KeyCode, KeyEvent, Modifiers, Movement, RepeatCount,
};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::commands::{self, Command, Place, HELP};
use crate::complete::complete;
use crate::connection::{
    is_about_password, send_frames, sync_ping, synced, too_long, Closing, Connection, Incoming,
    LoggedIn, LoginError, Sent,
};
use crate::password::{read_hidden, Typed, PASSWORD_TRIES};
use crate::reflow::{terminal_cols, Layout, Reflow, Shown};
use crate::render::{clean, login_refusal, unavailable, Format, Renderer, Style};
use crate::rooms::{Change, Rooms};
use crate::screen::{rows_taken, Screen};
use crate::session::{follow, Ending, Follower, Track, BYE_WAIT};
use crate::{piped, Exit, Options};

type LineEditor = Editor<Watcher, FileHistory>;

/// Typed lines waiting for the writer. A person cannot outtype it; the
/// bound only matters if the server stops reading.
const TYPED_BACKLOG: usize = 64;

/// How often the editor is interrupted until it notices that the
/// conversation has ended: the first signal can come just before the editor
/// starts waiting, and be absorbed.
const WAKE_INTERVAL: Duration = Duration::from_millis(100);

/// How long the last lines may take to reach the screen at exit.
const FLUSH_LIMIT: Duration = Duration::from_secs(1);

/// How long the next prompt waits for the server to answer a `/join` or a
/// `/part`. It answers at once; the bound is for one that does not, and
/// then the prompt comes anyway, perhaps still showing the old room.
const SYNC_LIMIT: Duration = Duration::from_secs(5);

/// How many of a room's last messages are shown on joining it.
const JOIN_HISTORY: NonZeroU64 = NonZeroU64::new(20).expect("not zero");

/// The user's rooms, shared by the editor and the conversation.
type SharedRooms = Arc<Mutex<Rooms>>;

/// The rooms, whatever a panic elsewhere left them like: they are only
/// ever changed whole, a frame at a time.
fn lock<T>(shared: &Mutex<T>) -> MutexGuard<'_, T> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs the interactive mode until the user leaves or the server goes away.
pub fn run(options: &Options, runtime: &Runtime) -> Exit {
    let _in_runtime = runtime.enter();
    let config = editor_config();
    let layout = Layout {
        widths: config.grapheme_cluster_mode(),
        tab_stop: usize::from(config.tab_stop()),
    };
    let mut editor = match LineEditor::with_config(config) {
        Ok(editor) => editor,
        Err(e) => {
            eprintln!("chat-client: cannot use the terminal: {e}");
            return Exit::Failed;
        }
    };
    let rooms = SharedRooms::default();
    let shown = Shown::default();
    editor.set_helper(Some(Watcher {
        typed: RefCell::default(),
        rooms: rooms.clone(),
        reflow: RefCell::default(),
        shown: shown.clone(),
        layout,
    }));
    // A terminal rustyline cannot drive (TERM=dumb, say) still works the
    // netcat way, where Ctrl-C keeps its default action.
    let Ok(printer) = editor.create_external_printer() else {
        return runtime.block_on(piped::run(options));
    };
    let interrupts = match Interrupts::listen() {
        Ok(interrupts) => interrupts,
        Err(e) => {
            eprintln!("chat-client: cannot handle SIGINT: {e}");
            return Exit::Failed;
        }
    };
    let screen = match Screen::start(printer, shown, runtime.handle().clone()) {
        Ok(screen) => screen,
        Err(e) => {
            eprintln!("chat-client: cannot start: {e}");
            return Exit::Failed;
        }
    };
    let style = Style {
        colors: options.colors(),
        timestamps: true,
    };
    let switched = Switched::default();
    bind_keys(&mut editor, &screen, style, &rooms, &switched);

    let mut chat = Chat {
        editor,
        screen: screen.clone(),
        style,
        layout,
        // Opened once the name is known: each name has its own.
        history: History { file: None },
        interrupts,
        runtime,
        rooms,
        switched,
        syncs: 0,
    };
    let exit = match options.password() {
        Err(why) => {
            chat.problem(&why);
            Exit::Password
        }
        Ok(password) => match chat.connect(options) {
            Ok(connection) => chat.log_in_and_talk(connection, options, password),
            Err(exit) => exit,
        },
    };
    screen.flush(runtime.handle(), FLUSH_LIMIT);
    exit
}

/// Ctrl-C while the program waits for the network (connecting, logging
/// in). The terminal is not in raw mode then, so Ctrl-C is not a key for
/// the editor but a SIGINT, which tokio's handler takes instead of its
/// default action: that handler must stay, to absorb the signals that wake
/// the editor (see the module's documentation).
struct Interrupts {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Interrupts {
    fn listen() -> std::io::Result<Interrupts> {
        Ok(Interrupts {
            #[cfg(unix)]
            signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?,
        })
    }

    /// Runs `work` to its end, or `None` if the user presses Ctrl-C first.
    fn or_interrupt<T>(&mut self, runtime: &Runtime, work: impl Future<Output = T>) -> Option<T> {
        #[cfg(unix)]
        return runtime.block_on(async {
            tokio::select! {
                done = work => Some(done),
                _ = self.signal.recv() => None,
            }
        });
        #[cfg(not(unix))]
        Some(runtime.block_on(work))
    }
}

/// The line editor's settings: rustyline's own (100 lines of history,
/// consecutive duplicates dropped, Emacs keys), except that lines enter the
/// history only through [`History::add`], which also writes them out, and
/// that Tab completes as shells do: as far as all candidates agree, then a
/// second Tab lists them.
fn editor_config() -> Config {
    Config::builder()
        .auto_add_history(false)
        .completion_type(CompletionType::List)
        // The helper adds no colors, but it must see every drawing of the
        // prompt to put it right after a resize, and rustyline shows it
        // none with colors off (NO_COLOR set).
        .color_mode(ColorMode::Forced)
        .build()
}

/// The editor's helper, which watches what is typed and completes words.
/// When the conversation ends by itself it interrupts the editor, and the
/// prompt with the half-typed line is erased like an accepted line; that
/// takes knowing the line, which rustyline does not return with
/// `Interrupted`. It asks the helper for a hint at every change of the
/// line, so the hint is where the line is seen.
///
/// It also sees every drawing of the prompt, as its highlighter, and puts
/// right where rustyline draws it after the terminal was resized (see
/// [`crate::reflow`]).
struct Watcher {
    typed: RefCell<String>,
    /// What completion draws names and rooms from.
    rooms: SharedRooms,
    /// Where rustyline last put the cursor.
    reflow: RefCell<Reflow>,
    /// The lines above the prompt, to print again after a resize.
    shown: Shown,
    layout: Layout,
}

impl Watcher {
    /// The line as it was when the editor last changed it.
    fn typed(&self) -> String {
        self.typed.borrow().clone()
    }
}

impl Hinter for Watcher {
    type Hint = String;

    fn hint(&self, line: &str, pos: usize, _: &rustyline::Context<'_>) -> Option<String> {
        let mut typed = self.typed.borrow_mut();
        typed.clear();
        typed.push_str(line);
        self.reflow.borrow_mut().saw(line, pos);
        None
    }
}

impl Completer for Watcher {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let (start, candidates) = complete(line, pos, &lock(&self.rooms));
        let pairs = candidates
            .into_iter()
            .map(|c| Pair {
                display: c.display,
                replacement: c.replacement,
            })
            .collect();
        Ok((start, pairs))
    }
}

/// No colors: only a look at each drawing.
impl Highlighter for Watcher {
    fn highlight<'l>(&self, line: &'l str, pos: usize) -> Cow<'l, str> {
        self.reflow.borrow_mut().saw(line, pos);
        Cow::Borrowed(line)
    }

    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(&'s self, prompt: &'p str, _: bool) -> Cow<'b, str> {
        let Some(cols) = terminal_cols() else {
            return Cow::Borrowed(prompt);
        };
        let repair = self
            .reflow
            .borrow_mut()
            .repair(prompt, cols, self.layout, &self.shown);
        if repair.is_empty() {
            Cow::Borrowed(prompt)
        } else {
            Cow::Owned(repair + prompt)
        }
    }

    /// The cursor moved without a drawing.
    fn highlight_char(&self, line: &str, pos: usize, _: rustyline::highlight::CmdKind) -> bool {
        self.reflow.borrow_mut().saw(line, pos);
        false
    }
}

impl Validator for Watcher {}

impl Helper for Watcher {}

/// Enter, and Ctrl-D on an empty line, hold what arrives back until the
/// line is erased; Ctrl-C clears the line instead of ending anything;
/// Alt-Left and Alt-Right switch rooms.
fn bind_keys(
    editor: &mut LineEditor,
    screen: &Screen,
    style: Style,
    rooms: &SharedRooms,
    switched: &Switched,
) {
    for (key, step) in [(KeyCode::Left, -1), (KeyCode::Right, 1)] {
        editor.bind_sequence(
            KeyEvent(key, Modifiers::ALT),
            EventHandler::Conditional(Box::new(SwitchRoom {
                step,
                screen: screen.clone(),
                rooms: rooms.clone(),
                switched: switched.clone(),
            })),
        );
    }
    for enter in [
        KeyEvent(KeyCode::Enter, Modifiers::NONE),
        KeyEvent::ctrl('J'),
    ] {
        editor.bind_sequence(
            enter,
            EventHandler::Conditional(Box::new(AcceptLine {
                screen: screen.clone(),
            })),
        );
    }
    editor.bind_sequence(
        KeyEvent::ctrl('D'),
        EventHandler::Conditional(Box::new(EndOfInput {
            screen: screen.clone(),
        })),
    );
    editor.bind_sequence(
        KeyEvent::ctrl('C'),
        EventHandler::Conditional(Box::new(ClearLine {
            screen: screen.clone(),
            style,
        })),
    );
}

/// Enter: accept the line, and keep what arrives back until it is erased.
struct AcceptLine {
    screen: Screen,
}

impl ConditionalEventHandler for AcceptLine {
    fn handle(&self, _: &Event, _: RepeatCount, _: bool, _: &EventContext) -> Option<Cmd> {
        self.screen.hold();
        Some(Cmd::AcceptLine)
    }
}

/// Ctrl-D: on an empty line, leave like `/quit`, erasing the prompt like
/// any accepted line; elsewhere, rustyline's own (delete a character).
struct EndOfInput {
    screen: Screen,
}

impl ConditionalEventHandler for EndOfInput {
    fn handle(&self, _: &Event, _: RepeatCount, _: bool, ctx: &EventContext) -> Option<Cmd> {
        if !ctx.line().is_empty() {
            return None;
        }
        self.screen.hold();
        Some(Cmd::EndOfFile)
    }
}

/// The line being typed when a key switched rooms, with the cursor's
/// place in it, to be typed on at the new room's prompt.
#[derive(Clone, Default)]
struct Switched {
    line: Arc<Mutex<Option<(String, usize)>>>,
}

impl Switched {
    fn take(&self) -> Option<(String, usize)> {
        lock(&self.line).take()
    }
}

/// Alt-Left, Alt-Right: make the previous or next room current. rustyline
/// cannot change the prompt while a line is edited, so the editor is
/// interrupted, the prompt erased, and the line given back at the new one.
struct SwitchRoom {
    step: isize,
    screen: Screen,
    rooms: SharedRooms,
    switched: Switched,
}

impl ConditionalEventHandler for SwitchRoom {
    fn handle(&self, _: &Event, _: RepeatCount, _: bool, ctx: &EventContext) -> Option<Cmd> {
        if !lock(&self.rooms).cycle(self.step) {
            return Some(Cmd::Noop);
        }
        *lock(&self.switched.line) = Some((ctx.line().to_owned(), ctx.pos()));
        self.screen.hold();
        Some(Cmd::Interrupt)
    }
}

/// Ctrl-C: clear the line; on an empty line, say how to leave.
struct ClearLine {
    screen: Screen,
    style: Style,
}

impl ConditionalEventHandler for ClearLine {
    fn handle(&self, _: &Event, _: RepeatCount, _: bool, ctx: &EventContext) -> Option<Cmd> {
        if ctx.line().is_empty() {
            self.screen
                .print(self.style.notice("to leave, type /quit or press Ctrl-D"));
            Some(Cmd::Noop)
        } else {
            Some(Cmd::Kill(Movement::WholeBuffer))
        }
    }
}

/// The typed-line history, kept in a file across runs when there is one.
struct History {
    file: Option<PathBuf>,
}

impl History {
    /// Loads the history file, creating its directory if needed. A history
    /// that cannot be kept is worth a warning, not a refusal to chat.
    fn open(
        editor: &mut LineEditor,
        file: Option<PathBuf>,
        screen: &Screen,
        style: Style,
    ) -> History {
        let Some(file) = file else {
            return History { file: None };
        };
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Err(e) = std::fs::create_dir_all(dir) {
                let warning = format!("history is not kept: cannot create {}: {e}", dir.display());
                screen.print(style.problem(&warning));
                return History { file: None };
            }
        }
        match editor.load_history(&file) {
            Ok(()) => {}
            Err(ReadlineError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                let warning = format!("history is not kept: cannot read {}: {e}", file.display());
                screen.print(style.problem(&warning));
                return History { file: None };
            }
        }
        History { file: Some(file) }
    }

    /// Remembers a typed line, in the file at once so that a crash or a
    /// second client running at the same time loses nothing.
    fn add(&mut self, editor: &mut LineEditor, line: &str) {
        // A password command is not kept, with what follows it: a
        // password typed on the line by mistake would stay in the file.
        if commands::parse(line) == Command::Nothing || commands::holds_secret(line) {
            return;
        }
        let _ = editor.add_history_entry(line);
        if let Some(file) = &self.file {
            // Already warned about at start if the file is unusable; a
            // failure now (a full disk) is not worth interrupting the chat.
            let _ = editor.append_history(file);
        }
    }
}

/// The interactive session, from login to the end.
struct Chat<'r> {
    editor: LineEditor,
    screen: Screen,
    style: Style,
    layout: Layout,
    history: History,
    interrupts: Interrupts,
    runtime: &'r Runtime,
    rooms: SharedRooms,
    switched: Switched,
    /// How many waits for the server's answers ([`sync_ping`]) were sent.
    syncs: u64,
}

impl Chat<'_> {
    /// Connects to the server; the exit if that fails or the user gives up.
    fn connect(&mut self, options: &Options) -> Result<Connection, Exit> {
        let trust = options.trust();
        let connect = Connection::connect(&options.addr, trust.as_ref());
        match self.interrupts.or_interrupt(self.runtime, connect) {
            Some(Ok(connection)) => Ok(connection),
            Some(Err(e)) => {
                self.screen.print(self.style.problem(&e.to_string()));
                Err(Exit::Failed)
            }
            None => {
                let gave_up = format!("gave up connecting to {}", options.addr);
                self.screen.print(self.style.notice(&gave_up));
                Err(Exit::Failed)
            }
        }
    }

    fn log_in_and_talk(
        &mut self,
        connection: Connection,
        options: &Options,
        password: Option<Password>,
    ) -> Exit {
        let raw = options.raw;
        let format = if raw {
            Format::Raw
        } else {
            Format::Human(self.style)
        };
        let (connection, logged_in) = match self.log_in(connection, options, password) {
            Ok(logged_in) => logged_in,
            Err(exit) => return exit,
        };
        self.history = History::open(
            &mut self.editor,
            options.history_file(&logged_in.name),
            &self.screen,
            self.style,
        );
        let mut renderer = Renderer::new(format);
        for frame in &logged_in.frames {
            lock(&self.rooms).observe(frame);
            for line in renderer.frame(frame) {
                self.screen.print(line);
            }
        }
        if !raw {
            self.screen.print(
                self.style
                    .notice("type a message and press Enter; /help lists the commands"),
            );
        }

        let (incoming, outgoing) = connection.split();
        let (typed, typed_rx) = mpsc::channel(TYPED_BACKLOG);
        let (ended, ending) = oneshot::channel();
        let (synced, synced_rx) = watch::channel(0);
        let noticed = CancellationToken::new();
        let writer = self
            .runtime
            .spawn(send_frames(outgoing, typed_rx, options.keepalive()));
        let following = Following {
            rooms: self.rooms.clone(),
            synced,
            // Raw format is for scripts, which ask for what they want.
            history: (!raw).then_some(JOIN_HISTORY),
        };
        self.runtime.spawn(converse(
            incoming,
            writer,
            Conversation {
                renderer,
                following,
                answers: typed.clone(),
            },
            self.screen.clone(),
            ended,
            noticed.clone(),
        ));
        if let Some(room) = &options.room {
            self.send_and_wait(ClientFrame::Join(room.clone()), &typed, &synced_rx);
        }
        let ending = self.talk(&typed, &synced_rx, ending);
        noticed.cancel();
        self.report(&ending);
        ending.exit()
    }

    /// Tells the user how the conversation ended, unless they simply left.
    fn report(&self, ending: &Ending) {
        if let Some(text) = ending.describe() {
            self.screen.print(self.style.notice(&text));
        }
    }

    /// Logs in, asking for another name for as long as the server refuses
    /// one, and for the password of a registered name; the connection that
    /// is logged in, or the exit if the user gave up, the server closed the
    /// connection, a password did not do, or nothing there is a chat
    /// server.
    ///
    /// Each name the user chooses at the `name>` prompt, and each password
    /// typed, is tried on a new connection. The server closes a connection
    /// that has not logged in within its login timeout (30 s by default;
    /// `PING` does not count), and a person may well take longer to choose:
    /// the old connection could be gone, while a new one has the whole
    /// timeout for the name.
    ///
    /// The password `given` up front (`--password-file`, `CHAT_PASSWORD`)
    /// is for `--name` only, not for another name chosen at `name>`.
    fn log_in(
        &mut self,
        mut connection: Connection,
        options: &Options,
        given: Option<Password>,
    ) -> Result<(Connection, LoggedIn), Exit> {
        let mut name = options.name.clone();
        let mut password = given.clone();
        let mut wrong = 0;
        loop {
            let (screen, style) = (self.screen.clone(), self.style);
            let retrying = move |detail: Option<&str>, delay| {
                let delay = humantime::format_duration(delay);
                let waiting = format!(
                    "{}; trying again in {delay} (Ctrl-C gives up)",
                    unavailable(detail)
                );
                screen.print(style.notice(&waiting));
            };
            let login = connection.login_patiently(
                &name,
                password.as_ref(),
                options.login_timeout,
                retrying,
            );
            let Some(answer) = self.interrupts.or_interrupt(self.runtime, login) else {
                self.screen.print(self.style.notice("gave up logging in"));
                return Err(Exit::NotLoggedIn);
            };
            match answer {
                Ok(welcomed) => return Ok((connection, welcomed)),
                Err(LoginError::Refused { code, .. })
                    if code == ErrorCode::NameRegistered.as_str()
                        || code == ErrorCode::BadPassword.as_str() =>
                {
                    if code == ErrorCode::BadPassword.as_str() {
                        wrong += 1;
                        if wrong >= PASSWORD_TRIES {
                            let problem = format!(
                                "wrong password for {}, {wrong} times: giving up",
                                clean(&name)
                            );
                            self.problem(&problem);
                            return Err(Exit::Password);
                        }
                        self.problem(&format!("wrong password for {}", clean(&name)));
                    } else {
                        self.screen.print(self.style.notice(&format!(
                            "the name {} is registered: type its password \
                             (it does not show; Ctrl-C gives up)",
                            clean(&name)
                        )));
                    }
                    let prompt = format!("password for {}: ", clean(&name));
                    let Some(typed) = self.ask_login_password(&prompt) else {
                        self.screen.print(self.style.notice("gave up logging in"));
                        return Err(Exit::NotLoggedIn);
                    };
                    password = Some(typed);
                    drop(connection);
                    connection = self.connect(options)?;
                }
                Err(LoginError::Refused { code, detail }) if is_about_password(&code) => {
                    self.problem(&login_refusal(&name, &code, detail.as_deref()));
                    return Err(Exit::Password);
                }
                Err(LoginError::Refused { code, detail }) => {
                    let refusal = login_refusal(&name, &code, detail.as_deref());
                    self.screen.print(self.style.problem(&refusal));
                    self.screen.print(
                        self.style
                            .notice("choose another name (Ctrl-C or Ctrl-D gives up)"),
                    );
                    name = self.ask_name().ok_or(Exit::NotLoggedIn)?;
                    password = given
                        .clone()
                        .filter(|_| name_key(&name) == name_key(&options.name));
                    wrong = 0;
                    // Closed before connecting again, so that it does not
                    // count against the server's connections per address.
                    drop(connection);
                    connection = self.connect(options)?;
                }
                Err(LoginError::Unavailable { detail }) => {
                    let still = unavailable(detail.as_deref());
                    let problem = format!("cannot log in: {still}; try again later");
                    self.screen.print(self.style.problem(&problem));
                    return Err(Exit::Unavailable);
                }
                Err(LoginError::Closed { reason }) => {
                    let exit = reason
                        .as_ref()
                        .and_then(Closing::exit)
                        .unwrap_or(Exit::NotLoggedIn);
                    self.report(&Ending::Closed { reason });
                    return Err(exit);
                }
                Err(LoginError::Broken(e)) => {
                    self.report(&Ending::Broken(e));
                    return Err(Exit::NotLoggedIn);
                }
                Err(LoginError::NoChatServer(why)) => {
                    self.screen.print(self.style.problem(&why));
                    return Err(Exit::Failed);
                }
            }
        }
    }

    /// Reads the password of a registered name at a hidden prompt, until
    /// one that could be a password is typed; `None` if the user gives up
    /// (Ctrl-C, or Ctrl-D on an empty line).
    fn ask_login_password(&mut self, prompt: &str) -> Option<Password> {
        loop {
            let typed = self.ask_hidden(&[prompt], &|| false)?.pop()?;
            if typed.is_acceptable() {
                return Some(typed);
            }
            self.problem(&format!("that cannot be the password: {PASSWORD_RULES}"));
        }
    }

    /// Reads one line at each of `prompts`, none of them shown as typed;
    /// `None` if the user gives up at one (Ctrl-C, or Ctrl-D on an empty
    /// line), the terminal fails, or `stop` says the conversation ended.
    ///
    /// What arrives meanwhile is kept back, so that it does not land on
    /// the prompt's row; once done, the prompts are erased like an accepted
    /// line, and what was kept back is shown.
    fn ask_hidden(&mut self, prompts: &[&str], stop: &dyn Fn() -> bool) -> Option<Vec<Password>> {
        // The erasure of the line that asked for this goes first (it ends
        // any holding), then the hold, then whatever the painter was
        // printing when it came: the prompt is drawn after all of it.
        self.screen.flush(self.runtime.handle(), FLUSH_LIMIT);
        self.screen.hold();
        self.screen.flush(self.runtime.handle(), FLUSH_LIMIT);
        let mut typed = Vec::new();
        let mut rows = 0;
        let mut failed = None;
        for prompt in prompts {
            rows += self.rows_taken(prompt, "");
            match read_hidden(prompt, stop) {
                Ok(Typed::Line(password)) => typed.push(password),
                Ok(Typed::GaveUp | Typed::Stopped) => break,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        self.screen.release(rows);
        if let Some(e) = failed {
            self.problem(&format!("cannot read the password: {e}"));
        }
        (typed.len() == prompts.len()).then_some(typed)
    }

    /// The current password, typed at a hidden prompt for `what`
    /// (`/password`, `/unregister`), if it could be one; otherwise says why
    /// nothing is sent. One that breaks the rules is wrong anyway, and a
    /// space in it would shift the frame's arguments.
    fn ask_current_password(
        &mut self,
        what: &str,
        label: &str,
        stop: &dyn Fn() -> bool,
    ) -> Option<Password> {
        let prompt = format!("{what}: {label}: ");
        let Some(password) = self
            .ask_hidden(&[&prompt], stop)
            .and_then(|mut typed| typed.pop())
        else {
            self.screen
                .print(self.style.notice(&format!("{what}: nothing was sent")));
            return None;
        };
        if !password.is_acceptable() {
            self.problem(&format!(
                "{what}: that cannot be the {label}: {PASSWORD_RULES}; nothing was sent"
            ));
            return None;
        }
        Some(password)
    }

    /// A new password, typed twice at hidden prompts for `what` (`/register`
    /// or `/password`), if both agree and it follows the rules; otherwise
    /// says why nothing is sent.
    fn ask_new_password(&mut self, what: &str, stop: &dyn Fn() -> bool) -> Option<Password> {
        let first = format!("{what}: new password: ");
        let again = format!("{what}: the new password again: ");
        let Some([new, repeated]) = self
            .ask_hidden(&[&first, &again], stop)
            .and_then(|typed| <[Password; 2]>::try_from(typed).ok())
        else {
            self.screen
                .print(self.style.notice(&format!("{what}: nothing was sent")));
            return None;
        };
        if new != repeated {
            self.problem(&format!(
                "{what}: the two new passwords differ; nothing was sent"
            ));
            return None;
        }
        if !new.is_acceptable() {
            self.problem(&format!("{what}: {PASSWORD_RULES}; nothing was sent"));
            return None;
        }
        Some(new)
    }

    /// Reads a name at a `name>` prompt; `None` when the user gives up,
    /// with Ctrl-D or Ctrl-C (which, only here, does not just clear the
    /// line: there is no conversation to stay in yet).
    fn ask_name(&mut self) -> Option<String> {
        let clear_line = self
            .editor
            .bind_sequence(KeyEvent::ctrl('C'), EventHandler::Simple(Cmd::Interrupt));
        let name = loop {
            self.new_prompt();
            let answer = self.editor.readline("name> ");
            self.screen.release(0);
            match answer {
                Ok(name) if name.trim().is_empty() => continue,
                Ok(name) => break Some(name.trim().to_owned()),
                Err(_) => break None,
            }
        };
        if let Some(clear_line) = clear_line {
            self.editor.bind_sequence(KeyEvent::ctrl('C'), clear_line);
        }
        name
    }

    /// The prompt loop: reads lines and acts on them until the conversation
    /// ends.
    fn talk(
        &mut self,
        typed: &mpsc::Sender<ClientFrame>,
        synced: &watch::Receiver<u64>,
        mut ending: oneshot::Receiver<Ending>,
    ) -> Ending {
        // What is given back to the line, before and after the cursor: what
        // could not be sent, for the user to fix, or what was being typed
        // when a key switched rooms.
        let mut retype = (String::new(), String::new());
        loop {
            if let Some(ended) = try_ending(&mut ending) {
                return ended;
            }
            let prompt = self.prompt();
            let (left, right) = std::mem::take(&mut retype);
            self.new_prompt();
            let input = match self.editor.readline_with_initial(&prompt, (&left, &right)) {
                Ok(input) => input,
                // The conversation ended and interrupted the editor, or
                // someone sent SIGINT, which is a request to leave. Either
                // way the prompt goes, as with /quit. Or a key switched
                // rooms: then the line is typed on at the new prompt.
                Err(ReadlineError::Interrupted) => {
                    let switched = self.switched.take();
                    let line = match &switched {
                        Some((line, _)) => line.clone(),
                        None => self.editor.helper().map(Watcher::typed).unwrap_or_default(),
                    };
                    let rows = self.rows_taken(&prompt, &line);
                    self.screen.release(rows);
                    if let Some((line, pos)) = switched {
                        let pos = if line.is_char_boundary(pos) {
                            pos
                        } else {
                            line.len()
                        };
                        let (left, right) = line.split_at(pos);
                        retype = (left.to_owned(), right.to_owned());
                        continue;
                    }
                    return try_ending(&mut ending)
                        .unwrap_or_else(|| self.leave(None, typed, ending));
                }
                Err(ReadlineError::Eof) => {
                    let rows = self.rows_taken(&prompt, "");
                    self.screen.release(rows);
                    return self.leave(None, typed, ending);
                }
                Err(e) => {
                    self.screen
                        .print(self.style.problem(&format!("the terminal failed: {e}")));
                    return Ending::CannotShow(std::io::Error::other(e.to_string()));
                }
            };
            let rows = self.rows_taken(&prompt, &input);
            self.screen.release(rows);
            self.history.add(&mut self.editor, &input);
            // A paste can bring several lines at once: each is its own.
            let lines: Vec<&str> = input.split('\n').collect();
            for (at, line) in lines.iter().enumerate() {
                let command = commands::parse(line.trim_end_matches('\r'));
                let Some(request) = self.request(command, typed) else {
                    continue;
                };
                // Sent, the server would refuse it and the text would be
                // gone: it stays in the line instead, with what follows.
                // Unless that is taller than the terminal: rustyline draws
                // the whole line at every key, from the top of the screen,
                // so each drawing would scroll a partial copy into the
                // scrollback, and this notice off the screen. It is in the
                // history then, as typed.
                if let Some(why) = too_long(&request.frame) {
                    let rest = lines[at..].join("\n");
                    let problem = if self.fits_on_screen(&prompt, &rest) {
                        retype = (rest, String::new());
                        format!("not sent: {why}; edit it below")
                    } else {
                        format!(
                            "not sent: {why}; it is taller than the terminal, so it is \
                             not put back to edit: shorten it and paste it again, \
                             or press Up to edit it here"
                        )
                    };
                    self.screen.print(self.style.problem(&problem));
                    break;
                }
                if let ClientFrame::Leave(text) = request.frame {
                    return self.leave(text, typed, ending);
                }
                let sent = if request.changes_rooms {
                    self.send_and_wait(request.frame, typed, synced)
                } else {
                    typed.blocking_send(request.frame).is_ok()
                };
                if !sent {
                    // The writer is gone: the conversation is ending.
                    return self.wait(ending);
                }
            }
        }
    }

    /// The prompt, which says who and where the user is: `alice #rust> `,
    /// or `alice> ` in the lobby.
    fn prompt(&self) -> String {
        let rooms = lock(&self.rooms);
        match rooms.current() {
            Some(room) => format!("{} {}> ", clean(rooms.me()), clean(room)),
            None => format!("{}> ", clean(rooms.me())),
        }
    }

    /// What to send for a typed command, if anything; commands that need
    /// no server (`/help`, `/go`) and mistakes are dealt with here.
    fn request(&mut self, command: Command, typed: &mpsc::Sender<ClientFrame>) -> Option<Request> {
        // A hidden prompt stops waiting once the conversation has ended:
        // the writer is gone then.
        let ended = || typed.is_closed();
        let current = lock(&self.rooms).current().map(str::to_owned);
        let frame = match command {
            Command::Say(text) => match current {
                Some(room) => ClientFrame::Say { room, text },
                None => ClientFrame::Msg(text),
            },
            Command::Join(room) => {
                // Already there: only a switch, as the user meant.
                if lock(&self.rooms).go(Some(&room)) {
                    return None;
                }
                return Some(Request::changing_rooms(ClientFrame::Join(room)));
            }
            Command::Part { room, text } => {
                let Some(room) = room.or(current) else {
                    self.problem("the lobby cannot be left; /quit leaves the server");
                    return None;
                };
                let Some(room) = lock(&self.rooms).joined_room(&room).map(str::to_owned) else {
                    self.problem(&format!("you are not in {room}"));
                    return None;
                };
                return Some(Request::changing_rooms(ClientFrame::Part { room, text }));
            }
            Command::Go(room) => {
                if !lock(&self.rooms).go(room.as_deref()) {
                    let room = room.unwrap_or_default();
                    self.problem(&format!("you are not in {room}; /join {room} enters it"));
                }
                return None;
            }
            Command::Tell { to, text } => ClientFrame::Tell { to, text },
            Command::Topic(text) => {
                let Some(room) = current else {
                    self.problem("the lobby has no topic; /join a room first");
                    return None;
                };
                ClientFrame::Topic { room, text }
            }
            Command::Who(place) => {
                let room = match place {
                    Place::Here => current,
                    Place::Lobby => None,
                    Place::Room(room) => Some(room),
                };
                room.map_or(ClientFrame::Who, ClientFrame::RoomWho)
            }
            Command::Rooms => ClientFrame::Rooms,
            Command::Register => ClientFrame::Register(self.ask_new_password("/register", &ended)?),
            Command::ChangePassword => {
                let old = self.ask_current_password("/password", "current password", &ended)?;
                let new = self.ask_new_password("/password", &ended)?;
                ClientFrame::ChangePassword { old, new }
            }
            Command::Unregister => ClientFrame::Unregister(self.ask_current_password(
                "/unregister",
                "password",
                &ended,
            )?),
            Command::Moderate(frame) => frame,
            Command::History(count) => ClientFrame::History {
                room: current,
                count,
            },
            Command::Quit(text) => ClientFrame::Leave(text),
            Command::Help => {
                self.help();
                return None;
            }
            Command::Usage(how) => {
                self.problem(&how);
                return None;
            }
            Command::Unknown(word) => {
                self.problem(&format!(
                    "unknown command {word}: /help lists the commands, \
                     and // starts a message with /"
                ));
                return None;
            }
            Command::Nothing => return None,
        };
        Some(Request {
            frame,
            changes_rooms: false,
        })
    }

    fn problem(&self, text: &str) {
        self.screen.print(self.style.problem(text));
    }

    /// Sends `frame`, then waits until the server has answered it (or
    /// [`SYNC_LIMIT`] has passed), so that the next prompt shows the rooms
    /// as the answer left them. Whether the writer took the frames.
    fn send_and_wait(
        &mut self,
        frame: ClientFrame,
        typed: &mpsc::Sender<ClientFrame>,
        synced: &watch::Receiver<u64>,
    ) -> bool {
        self.syncs += 1;
        let wanted = self.syncs;
        if typed.blocking_send(frame).is_err() || typed.blocking_send(sync_ping(wanted)).is_err() {
            return false;
        }
        let mut synced = synced.clone();
        let answered = synced.wait_for(|&n| n >= wanted);
        // Late, or the conversation ended: the prompt comes anyway.
        let _ = self
            .runtime
            .block_on(tokio::time::timeout(SYNC_LIMIT, answered));
        true
    }

    /// Leaves the chat: sends `LEAVE` and waits for the conversation to end
    /// (at `BYE`, or after [`BYE_WAIT`]).
    fn leave(
        &self,
        text: Option<String>,
        typed: &mpsc::Sender<ClientFrame>,
        ending: oneshot::Receiver<Ending>,
    ) -> Ending {
        // If the writer is gone, the conversation is ending anyway.
        let _ = typed.blocking_send(ClientFrame::Leave(text));
        self.wait(ending)
    }

    /// Waits for the conversation's ending. It comes within [`BYE_WAIT`]
    /// of a `LEAVE`, and at once when the connection is gone; the bound is
    /// there so that nothing unforeseen can keep the user waiting.
    fn wait(&self, ending: oneshot::Receiver<Ending>) -> Ending {
        let limit = BYE_WAIT + Duration::from_secs(1);
        match self.runtime.block_on(tokio::time::timeout(limit, ending)) {
            Ok(Ok(ending)) => ending,
            Ok(Err(_)) => stopped(),
            Err(_) => Ending::Left,
        }
    }

    fn help(&self) {
        self.screen.print(self.style.notice("commands:"));
        for (command, what) in HELP {
            self.screen.print(format!("    {command:<20} {what}"));
        }
    }

    /// Readies the helper for a prompt of its own, laid out afresh at
    /// whatever width the terminal has now.
    fn new_prompt(&mut self) {
        if let Some(watcher) = self.editor.helper_mut() {
            watcher.reflow.borrow_mut().forget();
        }
    }

    /// Whether the prompt with `line` leaves a row free on the screen, for
    /// a notice above it.
    fn fits_on_screen(&mut self, prompt: &str, line: &str) -> bool {
        match self.editor.dimensions() {
            Some((_, rows)) => self.rows_taken(prompt, line) < usize::from(rows),
            None => true,
        }
    }

    /// The rows the prompt and the accepted line take on screen.
    fn rows_taken(&mut self, prompt: &str, line: &str) -> usize {
        match self.editor.dimensions() {
            Some((cols, _)) => rows_taken(
                prompt,
                line,
                usize::from(cols),
                self.layout.widths,
                self.layout.tab_stop,
            ),
            // Not a terminal after all: nothing to erase.
            None => 0,
        }
    }
}

/// The conversation's ending, if it has ended.
fn try_ending(ending: &mut oneshot::Receiver<Ending>) -> Option<Ending> {
    use tokio::sync::oneshot::error::TryRecvError;
    match ending.try_recv() {
        Ok(ending) => Some(ending),
        Err(TryRecvError::Empty) => None,
        Err(TryRecvError::Closed) => Some(stopped()),
    }
}

/// The ending when the conversation stopped without saying how, which only
/// a bug can cause.
fn stopped() -> Ending {
    Ending::Broken(std::io::Error::other("the conversation stopped"))
}

/// A frame to send for a typed line.
struct Request {
    frame: ClientFrame,
    /// Whether the answer changes the user's rooms, so that the next
    /// prompt waits for it.
    changes_rooms: bool,
}

impl Request {
    fn changing_rooms(frame: ClientFrame) -> Request {
        Request {
            frame,
            changes_rooms: true,
        }
    }
}

/// What the conversation keeps track of for the editor.
struct Following {
    rooms: SharedRooms,
    /// The last wait for answers that the server has answered.
    synced: watch::Sender<u64>,
    /// How many messages of a room's history to show on joining it, if any.
    history: Option<NonZeroU64>,
}

impl Track for Following {
    fn track(&mut self, frame: &ServerFrame) -> Option<ClientFrame> {
        if let Some(n) = synced(frame) {
            self.synced.send_replace(n);
            return None;
        }
        match lock(&self.rooms).observe(frame)? {
            // After the join's NAMES and TOPIC, which come together.
            Change::Joined(room) => self.history.map(|count| ClientFrame::History {
                room: Some(room),
                count: Some(count),
            }),
        }
    }
}

/// The conversation's side of the session.
struct Conversation {
    renderer: Renderer,
    following: Following,
    /// The writer's queue, for what the conversation sends by itself.
    answers: mpsc::Sender<ClientFrame>,
}

/// The network side: shows what arrives while `writer` sends what the user
/// typed, and once the conversation ends, reports how and interrupts the
/// editor until the program has `noticed`.
async fn converse(
    mut incoming: Incoming,
    mut writer: JoinHandle<std::io::Result<Sent>>,
    conversation: Conversation,
    screen: Screen,
    ended: oneshot::Sender<Ending>,
    noticed: CancellationToken,
) {
    let Conversation {
        mut renderer,
        mut following,
        answers,
    } = conversation;
    let mut lines = screen.lines();
    let follower = Follower {
        renderer: &mut renderer,
        out: &mut lines,
        tracker: &mut following,
        answers: &answers,
    };
    let ending = follow(&mut incoming, &mut writer, follower).await;
    // The editor's waits for answers end with the conversation.
    drop(following);
    writer.abort();
    lines.barrier().await;
    let _ = ended.send(ending);
    while !noticed.is_cancelled() {
        interrupt_editor();
        tokio::select! {
            () = noticed.cancelled() => {}
            () = tokio::time::sleep(WAKE_INTERVAL) => {}
        }
    }
}

/// Makes a waiting `readline` return `Interrupted`.
#[cfg(unix)]
fn interrupt_editor() {
    use nix::sys::signal::{raise, Signal};
    let _ = raise(Signal::SIGINT);
}

#[cfg(not(unix))]
fn interrupt_editor() {}
