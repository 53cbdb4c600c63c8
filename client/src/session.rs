//! Following a logged-in conversation until it ends: the part both modes
//! share. Each frame that arrives is noted by the mode's [`Track`], then
//! rendered and handed to its [`Show`]; the ending says why it stopped and
//! how to exit.

use std::future::Future;
use std::io;
use std::time::Duration;

use chat_protocol::{ClientFrame, ServerFrame};
use futures::StreamExt as _;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

use crate::connection::{closes, error_of, is_own_pong, Closing, Incoming, Sent};
use crate::render::{closed_by_server, Format, Renderer};
use crate::Exit;

/// How long to wait for `BYE` after sending `LEAVE`. The server answers at
/// once; the bound is for a server that is wedged, so that leaving always
/// ends the program.
pub const BYE_WAIT: Duration = Duration::from_secs(5);

/// Where rendered lines go: stdout in pipes, above the prompt at a terminal.
pub trait Show {
    /// Shows one line (without a line ending). Waiting here is how a slow
    /// terminal holds the conversation back, until the server skips frames
    /// for it and says so with `DROPPED`.
    fn show(&mut self, line: String) -> impl Future<Output = io::Result<()>>;
}

/// What a mode keeps track of as frames arrive, besides showing them.
pub trait Track {
    /// Takes note of `frame`, before it is shown; returns a frame to send in
    /// answer, if it calls for one.
    fn track(&mut self, frame: &ServerFrame) -> Option<ClientFrame>;
}

/// Keeping track of nothing: the netcat way.
impl Track for () {
    fn track(&mut self, _: &ServerFrame) -> Option<ClientFrame> {
        None
    }
}

/// Why a conversation stopped.
#[derive(Debug)]
pub enum Ending {
    /// The user left: `BYE` arrived, or did not within [`BYE_WAIT`].
    Left,
    /// The server closed the connection, with its reason if it gave one.
    Closed { reason: Option<Closing> },
    /// The connection broke.
    Broken(io::Error),
    /// What arrived could not be shown (stdout was closed, say).
    CannotShow(io::Error),
}

impl Ending {
    /// The exit that goes with this ending.
    pub fn exit(&self) -> Exit {
        match self {
            Ending::Left => Exit::Left,
            Ending::Closed {
                reason: Some(closing),
            } => closing.exit().unwrap_or(Exit::Disconnected),
            Ending::Closed { .. } | Ending::Broken(_) => Exit::Disconnected,
            Ending::CannotShow(_) => Exit::Failed,
        }
    }

    /// What to tell the user, unless they simply left.
    pub fn describe(&self) -> Option<String> {
        match self {
            Ending::Left => None,
            Ending::Closed { reason: None } => Some("connection closed by server".to_owned()),
            Ending::Closed {
                reason: Some(closing),
            } => Some(closed_by_server(&closing.code, closing.detail.as_deref())),
            Ending::Broken(e) => Some(format!("connection to the server broke: {e}")),
            Ending::CannotShow(e) => Some(format!("cannot show what arrives: {e}")),
        }
    }
}

/// Where [`follow`] takes what arrives, and what it does with it.
pub struct Follower<'a, S, T> {
    /// Turns frames into lines.
    pub renderer: &'a mut Renderer,
    /// Where the lines go.
    pub out: &'a mut S,
    /// What notes the frames first.
    pub tracker: &'a mut T,
    /// Where the tracker's answers go: the writer's queue.
    pub answers: &'a mpsc::Sender<ClientFrame>,
}

/// Shows what arrives on `incoming` until the conversation ends.
///
/// `writer` is the task sending the user's frames: once it has sent
/// `LEAVE`, the conversation ends at `BYE`, or after [`BYE_WAIT`] without
/// one. An `ERROR` that announces a close is kept as the reason for it
/// rather than shown as news (except in raw format, which shows everything).
pub async fn follow<S: Show, T: Track>(
    incoming: &mut Incoming,
    writer: &mut JoinHandle<io::Result<Sent>>,
    follower: Follower<'_, S, T>,
) -> Ending {
    let Follower {
        renderer,
        out,
        tracker,
        answers,
    } = follower;
    let format = renderer.format();
    let mut reason = None;
    let mut writing = true;
    let mut bye_deadline = None;
    loop {
        tokio::select! {
            arrival = incoming.next() => {
                let frame = match arrival {
                    None => return Ending::Closed { reason },
                    Some(Err(e)) => return Ending::Broken(e),
                    Some(Ok(Err(unreadable))) => {
                        if let Some(line) = renderer.unreadable(&unreadable) {
                            if let Err(e) = out.show(line).await {
                                return Ending::CannotShow(e);
                            }
                        }
                        continue;
                    }
                    Some(Ok(Ok(frame))) => frame,
                };
                if let Some(answer) = tracker.track(&frame) {
                    // A writer that is gone ends the conversation soon.
                    let _ = answers.send(answer).await;
                }
                // The answers to the client's own pings are nobody else's
                // business, even in raw format.
                if is_own_pong(&frame) {
                    continue;
                }
                if let Some((code, detail)) = error_of(&frame) {
                    if closes(code) {
                        reason = Some(Closing::new(code, detail));
                        if format != Format::Raw {
                            continue;
                        }
                    }
                }
                for line in renderer.frame(&frame) {
                    if let Err(e) = out.show(line).await {
                        return Ending::CannotShow(e);
                    }
                }
                if frame == ServerFrame::Bye {
                    return Ending::Left;
                }
            }
            sent = &mut *writer, if writing => {
                writing = false;
                // A failed write needs no handling here: the connection is
                // gone, and reading says so next.
                if let Ok(Ok(Sent::Leave)) = sent {
                    bye_deadline = Some(Instant::now() + BYE_WAIT);
                }
            }
            () = sleep_until(bye_deadline.unwrap_or_else(Instant::now)), if bye_deadline.is_some() => {
                return Ending::Left;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endings_map_to_exit_codes() {
        assert_eq!(Ending::Left.exit(), Exit::Left);
        assert_eq!(Ending::Closed { reason: None }.exit(), Exit::Disconnected);
        assert_eq!(
            Ending::Broken(io::ErrorKind::ConnectionReset.into()).exit(),
            Exit::Disconnected
        );
        assert_eq!(
            Ending::CannotShow(io::ErrorKind::BrokenPipe.into()).exit(),
            Exit::Failed
        );
    }

    #[test]
    fn closes_are_explained_with_the_servers_reason() {
        assert_eq!(Ending::Left.describe(), None);
        assert_eq!(
            Ending::Closed { reason: None }.describe().as_deref(),
            Some("connection closed by server")
        );
        assert_eq!(
            Ending::Closed {
                reason: Some(Closing::new(
                    "shutting-down",
                    Some("the server is shutting down")
                ))
            }
            .describe()
            .as_deref(),
            Some("connection closed by server (the server is shutting down)")
        );
    }

    #[test]
    fn being_kicked_or_banned_ends_with_its_own_exit() {
        let closed = |code: &str, detail: &str| Ending::Closed {
            reason: Some(Closing::new(code, Some(detail))),
        };
        assert_eq!(closed("kicked", "carol spam").exit(), Exit::Kicked);
        assert_eq!(
            closed("banned", "2026-12-07T14:05:00.000Z spam").exit(),
            Exit::Banned
        );
        assert_eq!(
            closed("logged-in-elsewhere", "elsewhere").exit(),
            Exit::LoggedInElsewhere
        );
        assert_eq!(closed("idle-timeout", "idle").exit(), Exit::Disconnected);
        assert_eq!(
            closed("kicked", "carol spamming").describe().as_deref(),
            Some("you were kicked by carol: spamming")
        );
    }
}
