//! The single-process room: the hub task when there is no cluster.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use chat_protocol::{name_key, ErrorCode, ServerFrame};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::{Entering, Inbox, Leaving, Ring, Welcome};

/// The state the hub task owns.
pub(crate) struct Room {
    /// Logged-in users by lower-cased name, which is also `NAMES` order.
    users: BTreeMap<String, Arc<str>>,
    /// The encoded `NAMES` frame, kept until the user set changes.
    names: Option<Bytes>,
    messages: Arc<Ring>,
    shutdown: CancellationToken,
    /// Never cancelled: a single process always vouches for its users.
    evicted: CancellationToken,
}

impl Room {
    pub(crate) fn new(messages: Arc<Ring>, shutdown: CancellationToken) -> Room {
        Room {
            users: BTreeMap::new(),
            names: None,
            messages,
            shutdown,
            evicted: CancellationToken::new(),
        }
    }

    pub(crate) async fn run(mut self, inbox: Inbox) {
        let Inbox {
            mut entering,
            mut leaving,
            mut census,
        } = inbox;
        loop {
            tokio::select! {
                // Leaves first: a name freed by a disconnect is free for the
                // next login.
                biased;
                Some(gone) = leaving.recv() => self.leave(gone).await,
                Some(newcomer) = entering.recv() => self.enter(newcomer).await,
                Some(reply) = census.recv() => {
                    let _ = reply.send(Ok(self.names()));
                }
                else => break,
            }
        }
    }

    async fn enter(&mut self, Entering { name, reply }: Entering) {
        let key = name_key(&name);
        if self.users.contains_key(&key) {
            let _ = reply.send(Err(ErrorCode::NameTaken));
            return;
        }
        if reply.is_closed() {
            // The session vanished while waiting: nobody to log in.
            return;
        }
        let name: Arc<str> = name.into();
        let join = ServerFrame::Join(name.to_string()).to_bytes();
        // Subscribed right after its own JOIN: it sees only what follows.
        let messages = self.messages.publish_and_subscribe(join).await;
        self.users.insert(key, name.clone());
        self.names = None;
        let welcome = Welcome {
            name: name.clone(),
            names: self.names(),
            messages,
            evicted: self.evicted.clone(),
        };
        info!(user = %name, users = self.users.len(), "login");
        if reply.send(Ok(welcome)).is_err() {
            // The session vanished meanwhile; undo the login so the name
            // is not held by nobody.
            let gone = Leaving {
                name,
                text: None,
                cause: "closed during login",
                placed: None,
            };
            self.leave(gone).await;
        }
    }

    async fn leave(&mut self, gone: Leaving) {
        let Leaving {
            name,
            text,
            cause,
            placed,
        } = gone;
        let removed = self.users.remove(&name_key(&name)).is_some();
        let announced = removed && !self.shutdown.is_cancelled();
        if let Some(placed) = placed {
            let _ = placed.send(announced);
        }
        if !removed {
            return;
        }
        self.names = None;
        info!(user = %name, cause, users = self.users.len(), "leave");
        if announced {
            let leave = ServerFrame::Leave {
                name: name.to_string(),
                text,
            };
            self.messages.publish(leave.to_bytes()).await;
        }
    }

    fn names(&mut self) -> Bytes {
        self.names
            .get_or_insert_with(|| ServerFrame::names_bytes(self.users.values().map(|n| &**n)))
            .clone()
    }
}
