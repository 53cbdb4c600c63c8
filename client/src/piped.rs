//! The piped mode: the seed's netcat, for scripts and tests.
//!
//! Every stdin line is sent as a message: to the lobby (`MSG`), or with
//! `--room #x` to that room (`JOIN #x` after login, then `SAY #x`). Whatever
//! arrives is printed on stdout, one line per frame, rendered without colors
//! or times but with the room's tag (or raw with `--raw`), so a script can
//! match it. There are no commands: a line that starts with `/` is a
//! message like any other. At the end of stdin the client leaves, prints
//! what arrives until `BYE`, and exits 0. The client's own messages
//! (refusals, the reason for a close) go to stderr, never among the
//! conversation's lines.
//!
//! Nobody is there to type a password: a registered name logs in with the
//! one given up front (`--password-file`, `CHAT_PASSWORD`), and any
//! trouble with it ends the run with [`Exit::Password`].

use std::io::{self, Read as _, Write as _};
use std::thread;

use bytes::BytesMut;
use chat_protocol::{is_blank, ClientFrame, LineCodec, LineError, MAX_LINE};
use tokio::sync::mpsc;
use tokio_util::codec::Decoder as _;

use crate::connection::{is_about_password, send_frames, Connection, LoginError};
use crate::render::{login_refusal, unavailable, Format, Renderer, Style};
use crate::session::{follow, Ending, Follower, Show};
use crate::{Exit, Options};

/// Stdin lines read ahead of the socket.
const STDIN_BACKLOG: usize = 64;

/// Runs the piped mode until stdin ends and the server says `BYE`, or the
/// server goes away.
pub async fn run(options: &Options) -> Exit {
    let format = if options.raw {
        Format::Raw
    } else {
        Format::Human(Style::PLAIN)
    };
    // Before connecting: a password file that cannot be read is a mistake
    // to fix first.
    let password = match options.password() {
        Ok(password) => password,
        Err(why) => {
            eprintln!("chat-client: {why}");
            return Exit::Password;
        }
    };
    let mut connection = match Connection::connect(&options.addr, options.trust().as_ref()).await {
        Ok(connection) => connection,
        Err(e) => {
            eprintln!("chat-client: {e}");
            return Exit::Failed;
        }
    };
    let retrying = |detail: Option<&str>, delay| {
        let delay = humantime::format_duration(delay);
        eprintln!(
            "chat-client: {}; trying again in {delay}",
            unavailable(detail)
        );
    };
    let login = connection.login_patiently(
        &options.name,
        password.as_ref(),
        options.login_timeout,
        retrying,
    );
    let logged_in = match login.await {
        Ok(logged_in) => logged_in,
        // Not a login that failed: there was nobody to log in with.
        Err(LoginError::NoChatServer(why)) => {
            eprintln!("chat-client: {why}");
            return Exit::Failed;
        }
        Err(LoginError::Unavailable { detail }) => {
            let still = unavailable(detail.as_deref());
            eprintln!("chat-client: cannot log in: {still}; try again later");
            return Exit::Unavailable;
        }
        Err(e) => {
            let exit = login_exit(&e);
            eprintln!("chat-client: cannot log in: {}", why_not(&options.name, e));
            return exit;
        }
    };
    let mut out = Stdout;
    let mut renderer = Renderer::new(format);
    for line in logged_in.frames.iter().flat_map(|f| renderer.frame(f)) {
        if let Err(e) = out.show(line).await {
            return report(Ending::CannotShow(e));
        }
    }

    let (mut incoming, outgoing) = connection.split();
    let (frames, frames_rx) = mpsc::channel(STDIN_BACKLOG);
    let mut writer = tokio::spawn(send_frames(outgoing, frames_rx, options.keepalive()));
    let to = match &options.room {
        Some(room) => {
            // Before any line of stdin: the server handles a connection's
            // frames in order, so every SAY finds the user in the room.
            let _ = frames.send(ClientFrame::Join(room.clone())).await;
            To::Room(room.clone())
        }
        None => To::Lobby,
    };
    let answers = frames.clone();
    // A thread of its own, never joined: a read from a terminal or a pipe
    // that stays open cannot be cancelled, and must not keep the program
    // from exiting when the server goes away.
    if let Err(e) = thread::Builder::new()
        .name("stdin".into())
        .spawn(move || read_stdin(&to, &frames))
    {
        eprintln!("chat-client: cannot read stdin: {e}");
        return Exit::Failed;
    }
    let follower = Follower {
        renderer: &mut renderer,
        out: &mut out,
        tracker: &mut (),
        answers: &answers,
    };
    let ending = follow(&mut incoming, &mut writer, follower).await;
    report(ending)
}

/// Where stdin's lines go.
enum To {
    Lobby,
    Room(String),
}

impl To {
    /// The frame that says `text` there.
    fn say(&self, text: String) -> ClientFrame {
        match self {
            To::Lobby => ClientFrame::Msg(text),
            To::Room(room) => ClientFrame::Say {
                room: room.clone(),
                text,
            },
        }
    }

    /// The longest text a line may hold: what fits in a frame with the
    /// verb and the room before it.
    fn max_text(&self) -> usize {
        let frame = self.say(String::new());
        MAX_LINE - frame.to_string().len()
    }
}

/// How a refused or closed login ends the program: a password that did
/// not do, and being banned, have exits of their own; the rest is a login
/// that did not happen. No password is asked for: there is nobody at a
/// terminal to ask.
fn login_exit(error: &LoginError) -> Exit {
    match error {
        LoginError::Refused { code, .. } if is_about_password(code) => Exit::Password,
        LoginError::Closed {
            reason: Some(closing),
        } => closing.exit().unwrap_or(Exit::NotLoggedIn),
        _ => Exit::NotLoggedIn,
    }
}

/// Why the login as `name` failed, in plain words.
fn why_not(name: &str, error: LoginError) -> String {
    match error {
        LoginError::Refused { code, detail } => login_refusal(name, &code, detail.as_deref()),
        LoginError::Unavailable { detail } => unavailable(detail.as_deref()),
        LoginError::Closed { reason } => describe(Ending::Closed { reason }),
        LoginError::Broken(e) => describe(Ending::Broken(e)),
        LoginError::NoChatServer(why) => why,
    }
}

fn describe(ending: Ending) -> String {
    ending.describe().unwrap_or_default()
}

/// Tells stderr how the conversation ended, unless the user simply left.
fn report(ending: Ending) -> Exit {
    if let Some(text) = ending.describe() {
        eprintln!("chat-client: {text}");
    }
    ending.exit()
}

/// Sends each stdin line as a message `to` the lobby or a room, then
/// `LEAVE` at the end of stdin.
///
/// Lines are split by the protocol's own line codec, so they are bounded as
/// the server bounds them: a line too long for a frame, or not UTF-8, is
/// skipped with a warning instead of being refused by the server. Blank
/// lines are skipped too; the server would refuse them.
fn read_stdin(to: &To, frames: &mpsc::Sender<ClientFrame>) {
    let max_text = to.max_text();
    let mut codec = LineCodec::new(max_text);
    let mut buffer = BytesMut::new();
    let mut chunk = vec![0; 8192];
    let mut stdin = io::stdin().lock();
    loop {
        let at_end = match stdin.read(&mut chunk) {
            Ok(0) => true,
            Ok(n) => {
                buffer.extend_from_slice(&chunk[..n]);
                false
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("chat-client: cannot read stdin: {e}");
                true
            }
        };
        loop {
            let decoded = if at_end {
                codec.decode_eof(&mut buffer)
            } else {
                codec.decode(&mut buffer)
            };
            // The line codec's errors are I/O errors, and it does no I/O.
            let Ok(Some(line)) = decoded else { break };
            let text = match line {
                Ok(text) if is_blank(&text) => continue,
                Ok(text) => text,
                Err(LineError::TooLong) => {
                    eprintln!("chat-client: a line longer than {max_text} bytes was not sent");
                    continue;
                }
                Err(LineError::InvalidUtf8) => {
                    eprintln!("chat-client: a line that is not UTF-8 was not sent");
                    continue;
                }
            };
            if frames.blocking_send(to.say(text)).is_err() {
                // The conversation is over.
                return;
            }
        }
        if at_end {
            let _ = frames.blocking_send(ClientFrame::Leave(None));
            return;
        }
    }
}

/// Stdout, a line at a time, flushed so that a script reading the other end
/// sees each line as it arrives.
struct Stdout;

impl Show for Stdout {
    async fn show(&mut self, line: String) -> io::Result<()> {
        let mut out = io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()
    }
}
