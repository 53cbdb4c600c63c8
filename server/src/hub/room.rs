//! The single-process room: the hub task when there is no cluster.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use chat_protocol::{name_key, ErrorCode, ServerFrame};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::{Entering, Inbox, Leaving, Welcome};

/// The state the hub task owns.
pub(crate) struct Room {
    /// Logged-in users by lower-cased name, which is also `NAMES` order.
    users: BTreeMap<String, Arc<str>>,
    /// The encoded `NAMES` frame, kept until the user set changes.
    names: Option<Bytes>,
    messages: broadcast::Sender<Bytes>,
    shutdown: CancellationToken,
    /// Never cancelled: a single process always vouches for its users.
    evicted: CancellationToken,
}

impl Room {
    pub(crate) fn new(messages: broadcast::Sender<Bytes>, shutdown: CancellationToken) -> Room {
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
                Some(gone) = leaving.recv() => self.leave(gone),
                Some(newcomer) = entering.recv() => self.enter(newcomer),
                Some(reply) = census.recv() => {
                    let _ = reply.send(Ok(self.names()));
                }
                else => break,
            }
        }
    }

    fn enter(&mut self, Entering { name, reply }: Entering) {
        let key = name_key(&name);
        if self.users.contains_key(&key) {
            let _ = reply.send(Err(ErrorCode::NameTaken));
            return;
        }
        let name: Arc<str> = name.into();
        self.broadcast(ServerFrame::Join(name.to_string()));
        // Subscribed after its own JOIN: a newcomer sees only what follows.
        let messages = self.messages.subscribe();
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
            // The session vanished while waiting; undo the login so the name
            // is not held by nobody.
            self.leave(Leaving { name, text: None });
        }
    }

    fn leave(&mut self, Leaving { name, text }: Leaving) {
        if self.users.remove(&name_key(&name)).is_none() {
            return;
        }
        self.names = None;
        info!(user = %name, users = self.users.len(), "leave");
        if !self.shutdown.is_cancelled() {
            self.broadcast(ServerFrame::Leave {
                name: name.to_string(),
                text,
            });
        }
    }

    fn names(&mut self) -> Bytes {
        self.names
            .get_or_insert_with(|| ServerFrame::names_bytes(self.users.values().map(|n| &**n)))
            .clone()
    }

    fn broadcast(&self, frame: ServerFrame) {
        let _ = self.messages.send(frame.to_bytes());
    }
}
