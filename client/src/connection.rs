//! One connection to the server: connecting, logging in, and then the two
//! directions apart.
//!
//! After login the socket is split, as in the seed's netcat: what the user
//! says is written by its own task ([`send_frames`]) while the conversation
//! is read elsewhere ([`Incoming`]). Neither direction ever waits for the
//! other, so a client that pastes a lot while the chat is busy cannot wedge
//! itself against a server that has stopped reading until it is read from.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use chat_protocol::{
    is_valid_name, ClientCodec, ClientDecodeError, ClientFrame, ErrorCode, LineError, Password,
    ServerFrame, MAX_LINE, NAME_RULES, PASSWORD_RULES,
};
use futures::{SinkExt as _, StreamExt as _};
use humantime::format_duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout_at, Instant};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::tls::{self, TlsError, Trust};
use crate::Exit;

/// How long connecting may take before the client gives up: long enough for
/// a slow network, short enough that a mistyped address does not look like a
/// hang.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The reading half of a connection, plain TCP or TLS alike.
pub type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;

/// The writing half of a connection, plain TCP or TLS alike.
pub type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// The server's side of the conversation, frame by frame.
pub type Incoming = FramedRead<ReadHalf, ClientCodec>;

/// The writing side of a connection, for [`send_frames`].
pub type Outgoing = FramedWrite<WriteHalf, ClientCodec>;

/// How long to wait before each new try of a login that the server
/// answered with `ERROR unavailable`. A cluster node says so while it cannot
/// reach Redis, and after Redis comes back it takes no login until the users
/// it kept hold their names again, which takes up to a name lease (10 s by
/// default): the tries span a little more than that, then the client gives
/// up with [`LoginError::Unavailable`].
pub const UNAVAILABLE_BACKOFF: [Duration; 5] = [
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
];

/// A connection, not yet split into its two directions.
pub struct Connection {
    /// Where it goes, as the user gave it, to say so in messages.
    addr: String,
    incoming: Incoming,
    outgoing: Outgoing,
    /// Over plaintext, the first bytes the server sent, to tell a TLS
    /// server answering in TLS from a peer that is no chat server at all.
    first_bytes: Option<FirstBytes>,
}

/// Why no connection could be made.
#[derive(Debug)]
pub enum ConnectError {
    /// No TCP connection.
    Tcp { addr: String, error: io::Error },
    /// Connected, but TLS could not be set up or the server's certificate
    /// did not verify.
    Tls(TlsError),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Tcp { addr, error } => {
                write!(f, "cannot connect to {addr}: {error}")?;
                if error.kind() == io::ErrorKind::ConnectionRefused {
                    write!(f, " (is chat-server running there?)")?;
                }
                Ok(())
            }
            ConnectError::Tls(error) => write!(f, "{error}"),
        }
    }
}

impl std::error::Error for ConnectError {}

/// A successful login.
#[derive(Debug)]
pub struct LoggedIn {
    /// The name the server welcomed.
    pub name: String,
    /// The frames that answered the login, `WELCOME` first, `NAMES` last,
    /// to be shown like any others.
    pub frames: Vec<ServerFrame>,
}

/// Why a login did not succeed.
#[derive(Debug)]
pub enum LoginError {
    /// The name was refused; the connection stays open for another try.
    /// The code is as sent: a newer server may use codes this client does
    /// not know.
    Refused {
        code: String,
        detail: Option<String>,
    },
    /// The server cannot log anyone in right now (`ERROR unavailable`: a
    /// cluster node cut off from Redis, or settling after Redis came back),
    /// and was still so after every try of [`Connection::login_patiently`].
    /// Nothing is wrong with the name.
    Unavailable { detail: Option<String> },
    /// The server closed the connection, with its reason if it gave one.
    Closed { reason: Option<Closing> },
    /// The connection failed.
    Broken(io::Error),
    /// Whatever answered is not a chat server: it said something that is
    /// not a frame, or nothing at all within the login timeout, or it is a
    /// TLS listener answering a plaintext client. The text says so, with
    /// the address.
    NoChatServer(String),
}

impl Connection {
    /// Connects to `addr` (`host:port`), over TLS if `tls` says whom to
    /// trust.
    pub async fn connect(addr: &str, tls: Option<&Trust>) -> Result<Connection, ConnectError> {
        let failed = |error| ConnectError::Tcp {
            addr: addr.to_owned(),
            error,
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| failed(io::ErrorKind::TimedOut.into()))?
            .map_err(failed)?;
        // Chat lines are small and typed one at a time: send each at once.
        stream.set_nodelay(true).map_err(failed)?;
        let mut first_bytes = None;
        let (read, write): (ReadHalf, WriteHalf) = match tls {
            None => {
                let (read, write) = stream.into_split();
                let seen = FirstBytes::default();
                first_bytes = Some(seen.clone());
                (Box::new(seen.watch(read)), Box::new(write))
            }
            Some(trust) => {
                let stream = tls::handshake(stream, addr, trust)
                    .await
                    .map_err(ConnectError::Tls)?;
                let (read, write) = tokio::io::split(stream);
                (Box::new(read), Box::new(write))
            }
        };
        Ok(Connection {
            addr: addr.to_owned(),
            incoming: FramedRead::new(read, ClientCodec::new()),
            outgoing: FramedWrite::new(write, ClientCodec::new()),
            first_bytes,
        })
    }

    /// Logs in as `name`, with the `password` of a registered name if
    /// there is one; on success returns the name the server welcomed and
    /// the frames that answered, `WELCOME` first and `NAMES` last.
    ///
    /// A name or a password that breaks the rules is refused here, without
    /// asking the server: it could hold a line break, which would smuggle a
    /// second frame onto the wire.
    ///
    /// The whole answer must come within `limit`, and be made of frames: a
    /// port where something else listens (a silent service, a web or SSH
    /// server) is [`LoginError::NoChatServer`], not a wait without end.
    pub async fn login(
        &mut self,
        name: &str,
        password: Option<&Password>,
        limit: Duration,
    ) -> Result<LoggedIn, LoginError> {
        if !is_valid_name(name) {
            return Err(LoginError::Refused {
                code: ErrorCode::BadName.to_string(),
                detail: Some(NAME_RULES.to_owned()),
            });
        }
        let frame = match password {
            None => ClientFrame::Name(name.to_owned()),
            // The server calls such a password wrong; this says why.
            Some(password) if !password.is_acceptable() => {
                return Err(LoginError::Refused {
                    code: ErrorCode::BadPassword.to_string(),
                    detail: Some(PASSWORD_RULES.to_owned()),
                })
            }
            Some(password) => ClientFrame::Login {
                name: name.to_owned(),
                password: password.clone(),
            },
        };
        self.outgoing
            .send(&frame)
            .await
            .map_err(LoginError::Broken)?;
        let deadline = Instant::now() + limit;
        let mut reason = None;
        let name = loop {
            let waiting = || format!("no answer to NAME within {}", format_duration(limit));
            match self.next_frame(&mut reason, deadline, waiting).await? {
                ServerFrame::Welcome(name) => break name,
                ref frame if error_of(frame).is_some() => {
                    if let Some((code, detail)) = error_of(frame) {
                        error(&mut reason, code, detail)?;
                    }
                }
                // Nothing else is due before WELCOME.
                _ => {}
            }
        };
        let mut frames = vec![ServerFrame::Welcome(name.clone())];
        loop {
            let waiting = || format!("no NAMES after WELCOME within {}", format_duration(limit));
            let frame = self.next_frame(&mut reason, deadline, waiting).await?;
            let names = matches!(frame, ServerFrame::Names(_));
            // The contract puts NAMES right after WELCOME; should anything
            // come between, it is kept, not lost.
            frames.push(frame);
            if names {
                return Ok(LoggedIn { name, frames });
            }
        }
    }

    /// Logs in as `name` like [`Connection::login`], but while the server
    /// answers that it is unavailable, tries again after each delay of
    /// [`UNAVAILABLE_BACKOFF`]; `retrying` is told before each wait, with
    /// the server's detail and the delay, so that the user knows why
    /// nothing happens.
    pub async fn login_patiently(
        &mut self,
        name: &str,
        password: Option<&Password>,
        limit: Duration,
        mut retrying: impl FnMut(Option<&str>, Duration),
    ) -> Result<LoggedIn, LoginError> {
        let mut delays = UNAVAILABLE_BACKOFF.iter();
        loop {
            match self.login(name, password, limit).await {
                Err(LoginError::Unavailable { detail }) => {
                    let Some(&delay) = delays.next() else {
                        return Err(LoginError::Unavailable { detail });
                    };
                    retrying(detail.as_deref(), delay);
                    tokio::time::sleep(delay).await;
                }
                answer => return answer,
            }
        }
    }

    /// The next frame during login, by `deadline`; `waiting` says what was
    /// awaited in vain if it passes.
    async fn next_frame(
        &mut self,
        reason: &mut Option<Closing>,
        deadline: Instant,
        waiting: impl Fn() -> String,
    ) -> Result<ServerFrame, LoginError> {
        let arrival = timeout_at(deadline, self.incoming.next())
            .await
            .map_err(|_| self.no_chat_server(&waiting()))?;
        match arrival {
            Some(Ok(Ok(frame))) => Ok(frame),
            // What a TLS server sends a plaintext client (an alert, then
            // the close) is no frame: it would read as a line of odd bytes.
            _ if self.first_bytes.as_ref().is_some_and(FirstBytes::are_tls) => {
                Err(LoginError::NoChatServer(format!(
                    "{} answered in TLS: this looks like a TLS port; add --tls \
                     (and --ca <pem> if its certificate is not from a public CA)",
                    self.addr
                )))
            }
            Some(Ok(Err(unreadable))) => Err(self.no_chat_server(&not_a_frame(&unreadable))),
            Some(Err(e)) => Err(LoginError::Broken(e)),
            None => Err(LoginError::Closed {
                reason: reason.take(),
            }),
        }
    }

    fn no_chat_server(&self, why: &str) -> LoginError {
        LoginError::NoChatServer(format!("no chat server at {} ({why})", self.addr))
    }

    /// Splits the logged-in connection into its two directions.
    pub fn split(self) -> (Incoming, Outgoing) {
        (self.incoming, self.outgoing)
    }
}

/// The first bytes a plaintext connection received, kept by the reading
/// half ([`FirstBytes::watch`]) for the login to look at.
#[derive(Clone, Default)]
struct FirstBytes(Arc<Mutex<Vec<u8>>>);

impl FirstBytes {
    /// Enough to recognise the start of a TLS record: its content type and
    /// the major version.
    const KEPT: usize = 2;

    /// `read`, keeping the first bytes it reads here.
    fn watch<R: AsyncRead + Unpin>(&self, read: R) -> Watched<R> {
        Watched {
            read,
            first: Some(self.clone()),
        }
    }

    /// Whether they start a TLS record: an alert (0x15) or a handshake
    /// (0x16) of TLS 1.x (0x03), as a TLS server answers anything else.
    fn are_tls(&self) -> bool {
        let kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        matches!(kept[..], [0x15 | 0x16, 0x03, ..])
    }
}

/// A reading half that hands the first bytes it reads to a [`FirstBytes`].
struct Watched<R> {
    read: R,
    /// Until it has them.
    first: Option<FirstBytes>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Watched<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.read).poll_read(cx, buf);
        if let Some(first) = &self.first {
            let mut kept = first.0.lock().unwrap_or_else(PoisonError::into_inner);
            let wanted = FirstBytes::KEPT - kept.len();
            let new = &buf.filled()[before..];
            kept.extend_from_slice(&new[..wanted.min(new.len())]);
            if kept.len() == FirstBytes::KEPT {
                drop(kept);
                self.first = None;
            }
        }
        polled
    }
}

/// What a line that is not a frame says about the peer, for
/// [`LoginError::NoChatServer`]: the start of the line, quoted and escaped
/// so that nothing in it acts on the terminal.
fn not_a_frame(unreadable: &ClientDecodeError) -> String {
    /// Enough of a line to recognise the service that sent it.
    const SHOWN: usize = 60;
    match unreadable {
        ClientDecodeError::Malformed(malformed) => {
            let line = &malformed.line;
            let mut start: String = line.chars().take(SHOWN).collect();
            if start.len() < line.len() {
                start.push('…');
            }
            format!("it sent {start:?} instead of WELCOME")
        }
        ClientDecodeError::Line(LineError::InvalidUtf8) => {
            "it sent a line that is not UTF-8 instead of WELCOME".to_owned()
        }
        ClientDecodeError::Line(LineError::TooLong) => {
            "it sent a line far too long for a frame instead of WELCOME".to_owned()
        }
    }
}

/// An `ERROR` during login: kept as the `reason` if it announces a close,
/// the server being unavailable if it says so, a refusal of the name
/// otherwise.
fn error(reason: &mut Option<Closing>, code: &str, detail: Option<&str>) -> Result<(), LoginError> {
    if closes(code) {
        *reason = Some(Closing::new(code, detail));
        return Ok(());
    }
    if code == ErrorCode::Unavailable.as_str() {
        return Err(LoginError::Unavailable {
            detail: detail.map(str::to_owned),
        });
    }
    Err(LoginError::Refused {
        code: code.to_owned(),
        detail: detail.map(str::to_owned),
    })
}

/// Whether an `ERROR` with this code announces that the server closes the
/// connection, so that it is the reason for the close rather than news.
pub fn closes(code: &str) -> bool {
    [
        ErrorCode::LoginTimeout,
        ErrorCode::IdleTimeout,
        ErrorCode::ServerFull,
        ErrorCode::ShuttingDown,
        ErrorCode::TooManyConnections,
        ErrorCode::LoggedInElsewhere,
        ErrorCode::Kicked,
        ErrorCode::Banned,
    ]
    .iter()
    .any(|closing| closing.as_str() == code)
}

/// Whether a login was refused for its password (or the lack of one).
pub fn is_about_password(code: &str) -> bool {
    [
        ErrorCode::NameRegistered,
        ErrorCode::BadPassword,
        ErrorCode::NotRegistered,
        ErrorCode::TooManyTries,
    ]
    .iter()
    .any(|c| c.as_str() == code)
}

/// The `ERROR` that announced a close: why the server closed the
/// connection, as it said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closing {
    /// The code as sent: a newer server may use codes this client does not
    /// know.
    pub code: String,
    pub detail: Option<String>,
}

impl Closing {
    pub fn new(code: &str, detail: Option<&str>) -> Closing {
        Closing {
            code: code.to_owned(),
            detail: detail.map(str::to_owned),
        }
    }

    /// The exit of its own that this close calls for, if any: being
    /// replaced, kicked or banned is not the server going away.
    pub fn exit(&self) -> Option<Exit> {
        Some(match self.code.parse().ok()? {
            ErrorCode::LoggedInElsewhere => Exit::LoggedInElsewhere,
            ErrorCode::Kicked => Exit::Kicked,
            ErrorCode::Banned => Exit::Banned,
            _ => return None,
        })
    }
}

/// The code and detail of an `ERROR` frame, whether its code is one the
/// protocol crate knows or a newer server's, as sent.
pub fn error_of(frame: &ServerFrame) -> Option<(&str, Option<&str>)> {
    match frame {
        ServerFrame::Error { code, detail } => Some((code.as_str(), detail.as_deref())),
        ServerFrame::UnknownError { code, detail } => Some((code, detail.as_deref())),
        _ => None,
    }
}

/// The longest text a `MSG` frame can carry: the protocol's frame limit
/// less the frame's own bytes, `MSG ` before the text.
pub const MAX_TEXT: usize = MAX_LINE - "MSG ".len();

/// Why `frame` cannot be sent, if it is longer than the protocol allows:
/// the server would refuse it with `line-too-long`, and the text would be
/// lost. Says how long the text is and how long it may be.
pub fn too_long(frame: &ClientFrame) -> Option<String> {
    let bytes = frame.to_string().len();
    if bytes <= MAX_LINE {
        return None;
    }
    let (what, text) = match frame {
        ClientFrame::Msg(text) | ClientFrame::Say { text, .. } | ClientFrame::Tell { text, .. } => {
            ("a message", text.len())
        }
        ClientFrame::Leave(Some(text))
        | ClientFrame::Part {
            text: Some(text), ..
        } => ("a parting text", text.len()),
        ClientFrame::Topic {
            text: Some(text), ..
        } => ("a topic", text.len()),
        // Names and rooms are checked before they are sent, and the rest
        // is short.
        _ => ("a frame", bytes),
    };
    let limit = MAX_LINE - (bytes - text);
    Some(format!(
        "{what} holds at most {limit} bytes, this one has {text}"
    ))
}

/// How the writing side ended.
#[derive(Debug)]
pub enum Sent {
    /// `LEAVE` went out; the server answers `BYE` and closes.
    Leave,
    /// Everyone who could send frames is gone, without a `LEAVE`.
    Stopped,
}

/// The token of the client's own keepalive `PING`s: their `PONG`s are
/// known by it, and not shown.
pub const KEEPALIVE_TOKEN: &str = "keepalive";

/// What starts the token of the client's own `PING`s that wait for the
/// answers to the frames sent before them (see [`sync_ping`]).
const SYNC_TOKEN: &str = "sync-";

/// The `PING` whose `PONG` tells that every frame sent before it has been
/// answered: the client's `n`th wait of that kind.
pub fn sync_ping(n: u64) -> ClientFrame {
    ClientFrame::Ping(Some(format!("{SYNC_TOKEN}{n}")))
}

/// Which wait `frame` ends, if it answers a [`sync_ping`].
pub fn synced(frame: &ServerFrame) -> Option<u64> {
    match frame {
        ServerFrame::Pong(Some(token)) => token.strip_prefix(SYNC_TOKEN)?.parse().ok(),
        _ => None,
    }
}

/// Whether `frame` answers one of the client's own `PING`s: its keepalive,
/// or a wait for answers.
pub fn is_own_pong(frame: &ServerFrame) -> bool {
    matches!(frame, ServerFrame::Pong(Some(token)) if token == KEEPALIVE_TOKEN)
        || synced(frame).is_some()
}

/// Writes each frame from `frames` to the server, in order, until `LEAVE`
/// has been sent (then closes the writing side, as the server expects) or
/// there is nothing more to send.
///
/// With a `keepalive`, a `PING` goes out whenever that long has passed
/// without a frame: the server disconnects a user who sends nothing for its
/// idle timeout, and a person who only reads is still there.
pub async fn send_frames(
    mut outgoing: Outgoing,
    mut frames: mpsc::Receiver<ClientFrame>,
    keepalive: Option<Duration>,
) -> io::Result<Sent> {
    let next_ping = || keepalive.map(|interval| Instant::now() + interval);
    let mut ping_at = next_ping();
    loop {
        let frame = tokio::select! {
            frame = frames.recv() => match frame {
                Some(frame) => frame,
                None => return Ok(Sent::Stopped),
            },
            () = sleep_until(ping_at.unwrap_or_else(Instant::now)), if ping_at.is_some() => {
                ClientFrame::Ping(Some(KEEPALIVE_TOKEN.to_owned()))
            }
        };
        outgoing.send(&frame).await?;
        if let ClientFrame::Leave(_) = frame {
            outgoing.close().await?;
            return Ok(Sent::Leave);
        }
        ping_at = next_ping();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_message_fits_the_frame_limit_exactly() {
        let longest = ClientFrame::Msg("a".repeat(MAX_TEXT));
        assert_eq!(longest.to_string().len(), MAX_LINE);
        assert_eq!(too_long(&longest), None);
        assert_eq!(
            too_long(&ClientFrame::Msg("a".repeat(10_000))).as_deref(),
            Some("a message holds at most 4092 bytes, this one has 10000")
        );
        assert_eq!(
            too_long(&ClientFrame::Leave(Some("é".repeat(3000)))).as_deref(),
            Some("a parting text holds at most 4090 bytes, this one has 6000")
        );
        assert_eq!(too_long(&ClientFrame::Who), None);
        let say = ClientFrame::Say {
            room: "#rust".into(),
            text: "a".repeat(5000),
        };
        assert_eq!(
            too_long(&say).as_deref(),
            Some("a message holds at most 4086 bytes, this one has 5000")
        );
        let tell = ClientFrame::Tell {
            to: "bob".into(),
            text: "a".repeat(4096 - "TELL bob ".len()),
        };
        assert_eq!(too_long(&tell), None);
        let topic = ClientFrame::Topic {
            room: "#a".into(),
            text: Some("a".repeat(4090)),
        };
        assert_eq!(
            too_long(&topic).as_deref(),
            Some("a topic holds at most 4087 bytes, this one has 4090")
        );
    }

    #[test]
    fn being_replaced_kicked_or_banned_has_an_exit_of_its_own() {
        let exit = |code: &str| Closing::new(code, Some("carol")).exit();
        assert_eq!(exit("logged-in-elsewhere"), Some(Exit::LoggedInElsewhere));
        assert_eq!(exit("kicked"), Some(Exit::Kicked));
        assert_eq!(exit("banned"), Some(Exit::Banned));
        assert_eq!(exit("shutting-down"), None);
        assert_eq!(exit("from-the-future"), None);
        for code in ["logged-in-elsewhere", "kicked", "banned", "idle-timeout"] {
            assert!(closes(code), "{code}");
        }
        assert!(!closes("muted"));
    }

    #[test]
    fn own_pongs_are_known_by_their_token() {
        let pong = |token: &str| ServerFrame::Pong(Some(token.to_owned()));
        assert_eq!(sync_ping(7).to_string(), "PING sync-7");
        assert_eq!(synced(&pong("sync-7")), Some(7));
        assert_eq!(synced(&pong("sync-x")), None);
        assert!(is_own_pong(&pong("sync-7")));
        assert!(is_own_pong(&pong(KEEPALIVE_TOKEN)));
        assert!(!is_own_pong(&pong("someone else's")));
        assert!(!is_own_pong(&ServerFrame::Pong(None)));
    }
}
