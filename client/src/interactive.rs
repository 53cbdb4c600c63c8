//! The interactive mode: a person at a terminal.
//!
//! The main thread runs the line editor (rustyline), which blocks while the
//! user types; the conversation runs on the tokio runtime and shows what
//! arrives through the [`Screen`], above the prompt. The editor hands typed
//! lines to the conversation's writer over a channel.
//!
//! When the conversation ends by itself (the server went away) the editor is
//! still waiting for a key. rustyline turns SIGINT into
//! `ReadlineError::Interrupted` (Ctrl-C itself is only a key in raw mode), so
//! the conversation raises SIGINT until the editor has noticed. Between two
//! prompts tokio's handler absorbs the signal instead of the default action,
//! which would kill the process.

use std::cell::RefCell;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use chat_protocol::ClientFrame;
use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::Validator;
use rustyline::{
    Cmd, ConditionalEventHandler, Config, Editor, Event, EventContext, EventHandler, Helper,
    KeyCode, KeyEvent, Modifiers, Movement, RepeatCount,
};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::commands::{self, Command, HELP};
use crate::connection::{send_frames, too_long, Connection, Incoming, LoggedIn, LoginError, Sent};
use crate::render::{login_refusal, Format, Style};
use crate::screen::{rows_taken, Screen};
use crate::session::{follow, Ending, BYE_WAIT};
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
    editor.set_helper(Some(Watcher::default()));
    // A terminal rustyline cannot drive (TERM=dumb, say) still works the
    // netcat way, where Ctrl-C keeps its default action.
    let Ok(printer) = editor.create_external_printer() else {
        return runtime.block_on(piped::run(options));
    };
    let mut interrupts = match Interrupts::listen() {
        Ok(interrupts) => interrupts,
        Err(e) => {
            eprintln!("chat-client: cannot handle SIGINT: {e}");
            return Exit::Failed;
        }
    };
    let screen = match Screen::start(printer, runtime.handle().clone()) {
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
    bind_keys(&mut editor, &screen, style);

    let trust = options.trust();
    let connected =
        interrupts.or_interrupt(runtime, Connection::connect(&options.addr, trust.as_ref()));
    let exit = match connected {
        None => {
            let gave_up = format!("gave up connecting to {}", options.addr);
            screen.print(style.notice(&gave_up));
            Exit::Failed
        }
        Some(Err(e)) => {
            screen.print(style.problem(&e.to_string()));
            Exit::Failed
        }
        Some(Ok(connection)) => {
            let mut chat = Chat {
                editor,
                screen: screen.clone(),
                style,
                layout,
                // Opened once the name is known: each name has its own.
                history: History { file: None },
                interrupts,
                runtime,
            };
            chat.log_in_and_talk(connection, options)
        }
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
/// history only through [`History::add`], which also writes them out.
fn editor_config() -> Config {
    Config::builder().auto_add_history(false).build()
}

/// How rustyline lays a line out, to measure the accepted one.
#[derive(Clone, Copy)]
struct Layout {
    widths: rustyline::GraphemeClusterMode,
    tab_stop: usize,
}

/// The editor's helper, which only watches what is typed. When the
/// conversation ends by itself it interrupts the editor, and the prompt
/// with the half-typed line is erased like an accepted line; that takes
/// knowing the line, which rustyline does not return with `Interrupted`.
/// It asks the helper for a hint at every change of the line, so the
/// hint is where the line is seen.
#[derive(Default)]
struct Watcher {
    typed: RefCell<String>,
}

impl Watcher {
    /// The line as it was when the editor last changed it.
    fn typed(&self) -> String {
        self.typed.borrow().clone()
    }
}

impl Hinter for Watcher {
    type Hint = String;

    fn hint(&self, line: &str, _: usize, _: &rustyline::Context<'_>) -> Option<String> {
        let mut typed = self.typed.borrow_mut();
        typed.clear();
        typed.push_str(line);
        None
    }
}

impl Completer for Watcher {
    type Candidate = String;
}

impl Highlighter for Watcher {}

impl Validator for Watcher {}

impl Helper for Watcher {}

/// Enter, and Ctrl-D on an empty line, hold the room's lines back until the
/// line is erased; Ctrl-C clears the line instead of ending anything.
fn bind_keys(editor: &mut LineEditor, screen: &Screen, style: Style) {
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

/// Enter: accept the line, and keep the room's lines back until it is erased.
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
        if commands::parse(line) == Command::Nothing {
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
}

impl Chat<'_> {
    fn log_in_and_talk(&mut self, mut connection: Connection, options: &Options) -> Exit {
        let raw = options.raw;
        let format = if raw {
            Format::Raw
        } else {
            Format::Human(self.style)
        };
        let logged_in = match self.log_in(&mut connection, options) {
            Ok(logged_in) => logged_in,
            Err(exit) => return exit,
        };
        self.history = History::open(
            &mut self.editor,
            options.history_file(&logged_in.name),
            &self.screen,
            self.style,
        );
        for line in logged_in.frames.iter().filter_map(|f| format.frame(f)) {
            self.screen.print(line);
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
        let noticed = CancellationToken::new();
        let writer = self
            .runtime
            .spawn(send_frames(outgoing, typed_rx, options.keepalive()));
        self.runtime.spawn(converse(
            incoming,
            writer,
            format,
            self.screen.clone(),
            ended,
            noticed.clone(),
        ));
        let ending = self.talk(&format!("{}> ", logged_in.name), &typed, ending);
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
    /// one; the exit if the user gave up, the server closed the connection,
    /// or nothing there is a chat server.
    fn log_in(&mut self, connection: &mut Connection, options: &Options) -> Result<LoggedIn, Exit> {
        let mut name = options.name.clone();
        loop {
            let login = connection.login(&name, options.login_timeout);
            let Some(answer) = self.interrupts.or_interrupt(self.runtime, login) else {
                self.screen.print(self.style.notice("gave up logging in"));
                return Err(Exit::NotLoggedIn);
            };
            match answer {
                Ok(welcomed) => return Ok(welcomed),
                Err(LoginError::Refused { code, detail }) => {
                    let refusal = login_refusal(&name, &code, detail.as_deref());
                    self.screen.print(self.style.problem(&refusal));
                    self.screen.print(
                        self.style
                            .notice("choose another name (Ctrl-C or Ctrl-D gives up)"),
                    );
                    name = self.ask_name().ok_or(Exit::NotLoggedIn)?;
                }
                Err(LoginError::Closed { reason }) => {
                    self.report(&Ending::Closed { reason });
                    return Err(Exit::NotLoggedIn);
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

    /// Reads a name at a `name>` prompt; `None` when the user gives up,
    /// with Ctrl-D or Ctrl-C (which, only here, does not just clear the
    /// line: there is no conversation to stay in yet).
    fn ask_name(&mut self) -> Option<String> {
        let clear_line = self
            .editor
            .bind_sequence(KeyEvent::ctrl('C'), EventHandler::Simple(Cmd::Interrupt));
        let name = loop {
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
        prompt: &str,
        typed: &mpsc::Sender<ClientFrame>,
        mut ending: oneshot::Receiver<Ending>,
    ) -> Ending {
        // What could not be sent, put back in the line for the user to fix.
        let mut retype = String::new();
        loop {
            if let Some(ended) = try_ending(&mut ending) {
                return ended;
            }
            let input = match self
                .editor
                .readline_with_initial(prompt, (&std::mem::take(&mut retype), ""))
            {
                Ok(input) => input,
                // The conversation ended and interrupted the editor, or
                // someone sent SIGINT, which is a request to leave. Either
                // way the prompt goes, as with /quit.
                Err(ReadlineError::Interrupted) => {
                    let line = self.editor.helper().map(Watcher::typed).unwrap_or_default();
                    let rows = self.rows_taken(prompt, &line);
                    self.screen.release(rows);
                    return try_ending(&mut ending)
                        .unwrap_or_else(|| self.leave(None, typed, ending));
                }
                Err(ReadlineError::Eof) => {
                    let rows = self.rows_taken(prompt, "");
                    self.screen.release(rows);
                    return self.leave(None, typed, ending);
                }
                Err(e) => {
                    self.screen
                        .print(self.style.problem(&format!("the terminal failed: {e}")));
                    return Ending::CannotShow(std::io::Error::other(e.to_string()));
                }
            };
            let rows = self.rows_taken(prompt, &input);
            self.screen.release(rows);
            self.history.add(&mut self.editor, &input);
            // A paste can bring several lines at once: each is its own.
            let lines: Vec<&str> = input.split('\n').collect();
            for (at, line) in lines.iter().enumerate() {
                let frame = match commands::parse(line.trim_end_matches('\r')) {
                    Command::Say(text) => ClientFrame::Msg(text),
                    Command::Who => ClientFrame::Who,
                    Command::Quit(text) => ClientFrame::Leave(text),
                    Command::Help => {
                        self.help();
                        continue;
                    }
                    Command::Unknown(word) => {
                        let hint = format!(
                            "unknown command {word}: /help lists the commands, \
                             and // starts a message with /"
                        );
                        self.screen.print(self.style.problem(&hint));
                        continue;
                    }
                    Command::Nothing => continue,
                };
                // Sent, the server would refuse it and the text would be
                // gone: it stays in the line instead, with what follows.
                if let Some(why) = too_long(&frame) {
                    let problem = format!("not sent: {why}; edit it below");
                    self.screen.print(self.style.problem(&problem));
                    retype = lines[at..].join("\n");
                    break;
                }
                if let ClientFrame::Leave(text) = frame {
                    return self.leave(text, typed, ending);
                }
                if typed.blocking_send(frame).is_err() {
                    // The writer is gone: the conversation is ending.
                    return self.wait(ending);
                }
            }
        }
    }

    /// Leaves the room: sends `LEAVE` and waits for the conversation to end
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
            self.screen.print(format!("    {command:<14} {what}"));
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

/// The network side: shows what arrives while `writer` sends what the user
/// typed, and once the conversation ends, reports how and interrupts the
/// editor until the program has `noticed`.
async fn converse(
    mut incoming: Incoming,
    mut writer: JoinHandle<std::io::Result<Sent>>,
    format: Format,
    screen: Screen,
    ended: oneshot::Sender<Ending>,
    noticed: CancellationToken,
) {
    let mut lines = screen.lines();
    let ending = follow(&mut incoming, format, &mut writer, &mut lines).await;
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
