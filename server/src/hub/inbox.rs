//! A connection's inbox: the frames addressed to it, and the flow control
//! between the publishers that fill it and the session that drains it.
//!
//! Publishing a frame pushes one shared, encoded copy (a `Bytes`) into the
//! inbox of each receiver — the room's members, the lobby's users, the
//! two ends of a `TELL` — under the lock that orders that room, so every
//! member sees one order and a frame reaches only those it is for. Whatever
//! one user sends is pushed before its next frame is read, so its frames
//! reach each receiver in the order sent, across rooms.
//!
//! Each inbox holds `--client-buffer` frames, and at most [`MAX_UNREAD`]
//! bytes together with what its session has queued for the socket. A
//! publisher that finds a
//! receiver's inbox full afterwards waits until it drains, and the session
//! does not read its client's next frame meanwhile: overload slows the
//! senders, through TCP. Only a receiver whose socket has taken no bytes for
//! [`STALL_LIMIT`] while its inbox is full is *detached*: its inbox then
//! keeps the newest frames, the oldest are counted as skipped, and when it
//! reads again it is told `DROPPED <n>` before the frames that follow the
//! gap; once it has drained them it is attached again. So a slow reader
//! holds nobody back for longer than that, once, and a reader that keeps up
//! never loses a frame.
//!
//! Replies (`PONG`, `ERROR`, the `NAMES` of `WHO`, a `HISTORY` reply) go
//! through the inbox too, so that everything a connection is sent has one
//! order. A reply is never skipped: it is the asker's own, and the only
//! thing that may hold a client that does not read back. The inbox counts
//! their bytes, and the session reads no more input while too many wait.
//!
//! A detached inbox keeps the newest broadcasts within both bounds, the
//! frames and the bytes, so a client that stopped reading costs at most
//! [`MAX_UNREAD`] however large the frames: room for the lobby's `NAMES`
//! at `--max-clients`, plus what the replies' gate lets wait.

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chat_protocol::ServerFrame;
use futures::task::AtomicWaker;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::debug;

use super::Refusal;

/// How long a receiver's socket may take no bytes at all, while its inbox
/// is full, before it counts as stopped. A client that reads anything at
/// all makes its socket writable again far sooner; this bounds how long
/// one reader that stopped can hold a busy room back, once.
pub const STALL_LIMIT: Duration = Duration::from_millis(250);
/// A receiver that was skipped this recently is skipped again as soon as
/// its socket is full and its inbox too, without the [`STALL_LIMIT`] wait:
/// a client that keeps pausing costs the room one pause, not one each time.
const REPEAT_WINDOW: Duration = Duration::from_secs(10);
/// How soon a waiting publisher looks again at a receiver whose stall has
/// lasted long enough but whose socket still takes bytes.
const RECHECK_WRITABLE: Duration = Duration::from_millis(10);
/// A waiting publisher looks again this often even if nobody woke it, so a
/// wake-up lost to a race costs a pause, never a hang.
const RECHECK: Duration = Duration::from_millis(50);
/// Unread output one client may hold, in bytes: the frames in its inbox
/// and what its session has queued for the socket (the contract's 512 KiB).
/// Broadcasts beyond it wait for the client, or are skipped once it has
/// stopped reading; replies are never skipped, and the session's input
/// gate keeps them far below it.
pub const MAX_UNREAD: usize = 512 * 1024;
/// An empty queue whose buffer holds more frames than this gives it back:
/// after a burst, an idle user should not keep the burst's buffer.
const QUEUE_KEEP: usize = 4;

/// Frames addressed to one connection.
pub struct Inbox {
    queue: Mutex<Queue>,
    capacity: usize,
    /// Broadcast frames queued, for publishers' checks without the lock.
    len: AtomicUsize,
    /// Bytes of replies queued, for the session's input gate.
    reply_bytes: AtomicUsize,
    /// Bytes of every frame queued, and of what the session has queued
    /// for the socket: together they are bounded by [`MAX_UNREAD`].
    queued_bytes: AtomicUsize,
    output_bytes: AtomicUsize,
    /// Bytes of replies ever queued, for the session to measure how large
    /// an answer was.
    answered: AtomicU64,
    /// When the client's socket stopped taking bytes, as milliseconds since
    /// [`epoch`] plus one; 0 while it takes them.
    stalled_since: AtomicU64,
    /// When it was last detached, as milliseconds since [`epoch`] plus one;
    /// 0 if never.
    detached_at: AtomicU64,
    /// The client's socket, asked directly before a receiver is judged to
    /// have stopped; -1 when unknown. Only read under the queue's lock,
    /// while the inbox is open: the session closes its inbox before its
    /// socket.
    socket: AtomicI32,
    /// The session, when it waits for frames.
    reader: AtomicWaker,
    /// Publishers waiting for this inbox to drain.
    space: Notify,
    publisher_waits: AtomicBool,
    /// The hub has ended this connection (a kick, a ban, its name taken
    /// back): the session says why and closes.
    ending: AtomicBool,
    /// The client's address, for a ban.
    peer: OnceLock<IpAddr>,
}

struct Queue {
    frames: VecDeque<Queued>,
    /// Broadcast frames among `frames`: only they count toward the
    /// capacity, and only they are ever skipped.
    broadcasts: usize,
    /// Bytes of the replies among `frames`.
    reply_bytes: usize,
    /// Bytes of all of `frames`.
    bytes: usize,
    /// Frames dropped from the front while detached, owed as `DROPPED`
    /// before the frames now queued.
    skipped: u64,
    attached: bool,
    /// The session has ended: nothing more is queued or waited for.
    closed: bool,
    /// Why the hub ended the connection, for the session to say.
    farewell: Option<Refusal>,
}

/// One frame waiting in an inbox.
enum Queued {
    /// Broadcast to a room (the lobby included) or sent with `TELL`: may be
    /// skipped for a client that stopped reading.
    Broadcast(Bytes),
    /// The answer to this connection's own request: never skipped.
    Reply(Bytes),
}

/// What a publisher must do after pushing to an inbox.
#[must_use]
pub enum Pushed {
    Done,
    /// The inbox is over its capacity: wait with [`drained`] before the
    /// sender's next frame.
    Full,
}

impl Inbox {
    /// An inbox that holds `capacity` frames before publishers wait.
    pub fn new(capacity: usize) -> Arc<Inbox> {
        Arc::new(Inbox {
            queue: Mutex::new(Queue {
                frames: VecDeque::new(),
                broadcasts: 0,
                reply_bytes: 0,
                bytes: 0,
                skipped: 0,
                attached: true,
                closed: false,
                farewell: None,
            }),
            capacity: capacity.max(1),
            len: AtomicUsize::new(0),
            reply_bytes: AtomicUsize::new(0),
            queued_bytes: AtomicUsize::new(0),
            output_bytes: AtomicUsize::new(0),
            answered: AtomicU64::new(0),
            stalled_since: AtomicU64::new(0),
            detached_at: AtomicU64::new(0),
            socket: AtomicI32::new(-1),
            reader: AtomicWaker::new(),
            space: Notify::new(),
            publisher_waits: AtomicBool::new(false),
            ending: AtomicBool::new(false),
            peer: OnceLock::new(),
        })
    }

    /// The hub ends this connection: nothing more is queued for it, and its
    /// session is woken to say why and close.
    pub fn end(&self, farewell: Refusal) {
        let mut queue = self.lock();
        if queue.closed {
            return;
        }
        queue.farewell = Some(farewell);
        drop(queue);
        self.ending.store(true, Ordering::Release);
        self.reader.wake();
    }

    /// Whether the hub has ended this connection.
    pub fn is_ending(&self) -> bool {
        self.ending.load(Ordering::Acquire)
    }

    /// Why the hub ended this connection, once it has.
    pub fn farewell(&self) -> Option<Refusal> {
        if !self.ending.load(Ordering::Acquire) {
            return None;
        }
        self.lock().farewell.take()
    }

    /// The client's address, once the session has said it.
    pub fn set_peer(&self, peer: IpAddr) {
        let _ = self.peer.set(peer);
    }

    pub fn peer(&self) -> IpAddr {
        self.peer
            .get()
            .copied()
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
    }

    /// Queues a broadcast frame for this connection. The caller holds the
    /// lock that orders the room the frame belongs to.
    pub fn push(&self, frame: &Bytes) -> Pushed {
        let mut queue = self.lock();
        if queue.closed || queue.farewell.is_some() {
            return Pushed::Done;
        }
        let output = self.output_bytes.load(Ordering::Acquire);
        if queue.attached
            && queue.over(self.capacity, output, frame.len())
            && self.stopped(Instant::now())
        {
            self.detach(&mut queue);
        }
        queue.frames.push_back(Queued::Broadcast(frame.clone()));
        queue.broadcasts += 1;
        queue.bytes += frame.len();
        if !queue.attached {
            // Keep the newest: the oldest broadcasts become part of the gap,
            // the new one too if the replies alone fill the bound.
            while queue.broadcasts > 0 && queue.over(self.capacity, output, 0) {
                queue.skip_oldest_broadcast();
            }
        }
        let (len, attached) = (queue.frames.len(), queue.attached);
        let over = queue.over(self.capacity, output, 0);
        self.publish_counts(&queue);
        drop(queue);
        if len == 1 {
            self.wake_reader();
        }
        if attached && over {
            Pushed::Full
        } else {
            Pushed::Done
        }
    }

    /// Makes the queue's counts visible to checks that take no lock.
    fn publish_counts(&self, queue: &Queue) {
        self.len.store(queue.broadcasts, Ordering::SeqCst);
        self.reply_bytes.store(queue.reply_bytes, Ordering::Release);
        self.queued_bytes.store(queue.bytes, Ordering::SeqCst);
    }

    /// Whether broadcasts are over either bound, seen without the lock.
    fn over_bounds(&self) -> bool {
        self.len.load(Ordering::SeqCst) > self.capacity
            || self.queued_bytes.load(Ordering::SeqCst) + self.output_bytes.load(Ordering::SeqCst)
                > MAX_UNREAD
    }

    /// The session's output queue now holds `bytes`: they count toward
    /// [`MAX_UNREAD`] with the frames still here.
    pub fn output_queued(&self, bytes: usize) {
        let before = self.output_bytes.swap(bytes, Ordering::SeqCst);
        if bytes < before {
            self.wake_publishers();
        }
    }

    /// Since when the client's socket has taken nothing while output waited
    /// for it, if it is stalled now.
    pub fn stalled_since(&self) -> Option<Instant> {
        match self.stalled_since.load(Ordering::Relaxed) {
            0 => None,
            since => Some(epoch() + Duration::from_millis(since - 1)),
        }
    }

    /// Queues a reply to this connection's own request, after everything
    /// already queued for it: never refused or skipped for a full inbox.
    pub fn push_reply(&self, frame: Bytes) {
        let mut queue = self.lock();
        if queue.closed {
            return;
        }
        queue.reply_bytes += frame.len();
        queue.bytes += frame.len();
        self.answered
            .fetch_add(frame.len() as u64, Ordering::Relaxed);
        self.reply_bytes.store(queue.reply_bytes, Ordering::Release);
        self.queued_bytes.store(queue.bytes, Ordering::SeqCst);
        queue.frames.push_back(Queued::Reply(frame));
        let len = queue.frames.len();
        drop(queue);
        if len == 1 {
            self.wake_reader();
        }
    }

    /// Bytes of replies ever queued here: how large an answer was is the
    /// difference before and after it.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// Bytes of replies waiting here for the session to take them.
    pub fn reply_bytes(&self) -> usize {
        self.reply_bytes.load(Ordering::Acquire)
    }

    /// Ready when frames are queued; registers the session to be woken.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.is_empty() || self.ending.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        self.reader.register(cx.waker());
        if self.is_empty() && !self.ending.load(Ordering::Acquire) {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }

    /// Moves queued frames to `out` until it holds `limit` bytes, after a
    /// `DROPPED` for any gap before them, noting in `replies` where each
    /// reply ends. Once the queue is empty, a detached inbox is attached
    /// again.
    pub fn take(&self, out: &mut Outgoing, limit: usize) {
        let mut queue = self.lock();
        if queue.skipped > 0 {
            crate::metrics::dropped(queue.skipped);
            ServerFrame::Dropped(queue.skipped).write_to(&mut out.bytes);
            queue.skipped = 0;
        }
        let mut taken = 0;
        while out.bytes.len() < limit {
            match queue.frames.pop_front() {
                None => break,
                Some(Queued::Broadcast(frame)) => {
                    out.bytes.extend_from_slice(&frame);
                    queue.broadcasts -= 1;
                    queue.bytes -= frame.len();
                    taken += 1;
                }
                Some(Queued::Reply(frame)) => {
                    queue.reply_bytes -= frame.len();
                    queue.bytes -= frame.len();
                    out.push_reply(&frame);
                }
            }
        }
        crate::metrics::delivered(taken);
        if queue.frames.is_empty() {
            if queue.frames.capacity() > QUEUE_KEEP {
                queue.frames = VecDeque::new();
            }
            queue.attached = true;
        }
        self.output_bytes.store(out.len(), Ordering::SeqCst);
        self.publish_counts(&queue);
        drop(queue);
        if !self.over_bounds() {
            self.wake_publishers();
        }
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0 && self.reply_bytes.load(Ordering::Acquire) == 0
    }

    /// The client's socket, for the check in [`Inbox::stopped`].
    pub fn watch_socket(&self, fd: RawFd) {
        self.socket.store(fd, Ordering::Relaxed);
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// The session has ended: drop what is queued and release publishers.
    pub fn close(&self) {
        let mut queue = self.lock();
        queue.closed = true;
        queue.frames = VecDeque::new();
        queue.broadcasts = 0;
        queue.reply_bytes = 0;
        queue.bytes = 0;
        self.publish_counts(&queue);
        drop(queue);
        self.wake_publishers();
    }

    /// Notes whether the client's socket is taking bytes: `false` when a
    /// write found it full, `true` when a write went through.
    /// Returns whether the socket has just stopped taking bytes.
    pub fn socket_flowing(&self, flowing: bool) -> bool {
        let since = &self.stalled_since;
        let stalled = since.load(Ordering::Relaxed) != 0;
        if flowing && stalled {
            since.store(0, Ordering::Relaxed);
        } else if !flowing && !stalled {
            since.store(millis(Instant::now()) + 1, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Whether the socket has taken nothing for [`STALL_LIMIT`], or is
    /// full again soon after this receiver was last skipped, and is full
    /// right now: a session that is merely not scheduled has a socket that
    /// would take bytes, and is waited for. Called with the queue locked.
    fn stopped(&self, now: Instant) -> bool {
        let now = millis(now);
        let stalled = match self.stalled_since.load(Ordering::Relaxed) {
            0 => false,
            since if now >= since - 1 + STALL_LIMIT.as_millis() as u64 => true,
            _ => match self.detached_at.load(Ordering::Relaxed) {
                0 => false,
                at => now < at - 1 + REPEAT_WINDOW.as_millis() as u64,
            },
        };
        stalled && !self.socket_writable()
    }

    /// Asks the socket whether it would take bytes now.
    fn socket_writable(&self) -> bool {
        let fd = self.socket.load(Ordering::Relaxed);
        if fd < 0 {
            return false;
        }
        let mut poll = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no waiting; the fd stays open while the
        // inbox is, and the caller holds the queue's lock, which closing
        // the inbox takes before the session drops its socket.
        let ready = unsafe { libc::poll(&mut poll, 1, 0) };
        ready == 1 && poll.revents & libc::POLLOUT != 0
    }

    /// Stops waiting for this receiver: from now on its inbox keeps the
    /// newest frames and counts the rest.
    fn detach(&self, queue: &mut Queue) {
        queue.attached = false;
        self.detached_at
            .store(millis(Instant::now()) + 1, Ordering::Relaxed);
        debug!(
            queued = queue.broadcasts,
            "a reader stopped reading; skipping it"
        );
    }

    /// When the socket will count as stopped if it stays stalled.
    fn stops_at(&self) -> Option<Instant> {
        match self.stalled_since.load(Ordering::Relaxed) {
            0 => None,
            since => Some(epoch() + Duration::from_millis(since - 1) + STALL_LIMIT),
        }
    }

    /// Waits until this inbox is back within its capacity, or detaches it
    /// if its client has stopped reading.
    async fn drained(&self) {
        loop {
            let space = self.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            self.publisher_waits.store(true, Ordering::SeqCst);
            if !self.over_bounds() {
                return;
            }
            let now = Instant::now();
            {
                let mut queue = self.lock();
                if queue.closed || !queue.attached {
                    return;
                }
                if self.stopped(now) {
                    self.detach(&mut queue);
                    return;
                }
            }
            // Until the stall would count, or soon if it would but the
            // socket still takes bytes (its session is not scheduled yet).
            let recheck = match self.stops_at() {
                Some(at) if at > now => at.min(now + RECHECK),
                Some(_) => now + RECHECK_WRITABLE,
                None => now + RECHECK,
            };
            let _ = tokio::time::timeout_at(recheck, space).await;
        }
    }

    /// Wakes the session for its first frame, unless the session is the
    /// one pushing it (its own reply, its own broadcast's echo): it looks
    /// at its inbox again before it waits (see [`reading`]), and a task
    /// that wakes itself is rescheduled as if it yielded, which also wakes
    /// an idle worker thread for nothing: twice the wake-ups for every
    /// `PING`.
    fn wake_reader(&self) {
        if !RUNNING.with(|running| std::ptr::eq(running.get(), self)) {
            self.reader.wake();
        }
    }

    fn wake_publishers(&self) {
        if self.publisher_waits.swap(false, Ordering::SeqCst) {
            self.space.notify_waiters();
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Every change to a queue is complete before anything can panic, so
        // a poisoned lock still guards a consistent queue.
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Queue {
    /// Drops the oldest broadcast frame, counting it as skipped; replies
    /// before it keep their places.
    fn skip_oldest_broadcast(&mut self) {
        let oldest = self
            .frames
            .iter()
            .position(|f| matches!(f, Queued::Broadcast(_)));
        if let Some(at) = oldest {
            if let Some(Queued::Broadcast(frame)) = self.frames.remove(at) {
                self.bytes -= frame.len();
            }
            self.broadcasts -= 1;
            self.skipped += 1;
        }
    }

    /// Whether broadcasts are over a bound, with `output` bytes queued in
    /// the session and `adding` more about to come: more than `capacity`
    /// frames, or more than [`MAX_UNREAD`] bytes unread.
    fn over(&self, capacity: usize, output: usize, adding: usize) -> bool {
        self.broadcasts + usize::from(adding > 0) > capacity
            || self.bytes + output + adding > MAX_UNREAD
    }
}

/// A session's output: the bytes its connection has yet to take, and how
/// many of them are replies. Replies are what may hold back a client that
/// does not read; broadcasts it does not read wait in its inbox, to be
/// skipped.
#[derive(Default)]
pub struct Outgoing {
    /// Encoded frames waiting for the connection.
    pub bytes: BytesMut,
    /// Where each reply in `bytes` ends, counted from the first byte ever
    /// queued, with its length.
    replies: VecDeque<(u64, usize)>,
    /// Bytes given to the connection so far.
    sent: u64,
    /// Bytes of the replies in `bytes`, counted whole until they are sent.
    reply_bytes: usize,
}

impl Outgoing {
    /// Queues a reply.
    pub fn push_reply(&mut self, frame: &[u8]) {
        self.bytes.extend_from_slice(frame);
        let end = self.sent + self.bytes.len() as u64;
        self.replies.push_back((end, frame.len()));
        self.reply_bytes += frame.len();
    }

    /// The connection took `n` bytes from the front.
    pub fn sent(&mut self, n: usize) {
        use bytes::Buf;
        self.bytes.advance(n);
        self.sent += n as u64;
        while let Some(&(end, len)) = self.replies.front() {
            if end > self.sent {
                break;
            }
            self.replies.pop_front();
            self.reply_bytes -= len;
        }
    }

    /// Bytes of replies queued here and not yet sent.
    pub fn reply_bytes(&self) -> usize {
        self.reply_bytes
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Gives back the memory of an emptied queue that grew past `keep`:
    /// after a burst an idle user should not keep the burst's buffer.
    pub fn shrink(&mut self, keep: usize) {
        if self.bytes.is_empty() && self.bytes.capacity() > keep {
            self.bytes = BytesMut::new();
        }
        if self.replies.is_empty() && self.replies.capacity() > QUEUE_KEEP {
            self.replies = VecDeque::new();
        }
    }
}

thread_local! {
    /// The inbox whose session this thread is polling now, if any.
    static RUNNING: Cell<*const Inbox> = const { Cell::new(std::ptr::null()) };
}

/// Polls `session`, a loop that reads `inbox`, with the frames pushed to
/// `inbox` meanwhile waking nobody. The loop must look at the inbox after
/// anything it polls may have pushed to it, before it waits: the session's
/// `select!` polls its inbox after its requests and publishes, and goes
/// round again after handling a frame.
pub async fn reading<F: Future>(inbox: &Inbox, session: F) -> F::Output {
    /// Puts back what was running before, even if the poll panics.
    struct Restore(*const Inbox);
    impl Drop for Restore {
        fn drop(&mut self) {
            RUNNING.with(|running| running.set(self.0));
        }
    }
    let mut session = std::pin::pin!(session);
    std::future::poll_fn(|cx| {
        let _restore = Restore(RUNNING.with(|running| running.replace(inbox)));
        session.as_mut().poll(cx)
    })
    .await
}

/// Pushes `frame` to every inbox of `to`, collecting the ones left over
/// their capacity in `full`.
pub fn fan_out<'a>(
    to: impl IntoIterator<Item = &'a Arc<Inbox>>,
    frame: &Bytes,
    full: &mut Vec<Arc<Inbox>>,
) {
    for inbox in to {
        if let Pushed::Full = inbox.push(frame) {
            full.push(inbox.clone());
        }
    }
}

/// The inboxes of `to`, each once: a `TELL` to yourself reaches you once.
pub fn once_each<'a>(to: impl IntoIterator<Item = &'a Arc<Inbox>>) -> Vec<&'a Arc<Inbox>> {
    let mut each: Vec<&Arc<Inbox>> = Vec::with_capacity(2);
    for inbox in to {
        if !each.iter().any(|seen| Arc::ptr_eq(seen, inbox)) {
            each.push(inbox);
        }
    }
    each
}

/// Waits until every inbox of `full` has drained below its capacity or
/// has been detached: a publisher's pause before its sender's next frame.
pub async fn drained(full: Vec<Arc<Inbox>>) {
    for inbox in full {
        inbox.drained().await;
    }
}

/// The instant stall times are counted from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn millis(at: Instant) -> u64 {
    at.saturating_duration_since(epoch()).as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u64) -> Bytes {
        Bytes::from(format!("MSG a {n}\n"))
    }

    fn take_all(inbox: &Inbox) -> String {
        let mut out = Outgoing::default();
        inbox.take(&mut out, usize::MAX);
        String::from_utf8(out.bytes.to_vec()).expect("UTF-8")
    }

    #[test]
    fn a_session_pushing_to_its_own_inbox_does_not_wake_itself() {
        struct Wakes(AtomicUsize);
        impl futures::task::ArcWake for Wakes {
            fn wake_by_ref(wakes: &Arc<Self>) {
                wakes.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let wakes = Arc::new(Wakes(AtomicUsize::new(0)));
        let waker = futures::task::waker(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let inbox = Inbox::new(8);
        assert!(inbox.poll_ready(&mut cx).is_pending(), "waiting for frames");

        // Its own reply and its own broadcast, pushed while it runs.
        let session = reading(&inbox, async {
            inbox.push_reply(Bytes::from_static(b"PONG 1\n"));
            let _ = inbox.push(&frame(0));
        });
        let mut session = std::pin::pin!(session);
        assert!(session.as_mut().poll(&mut cx).is_ready());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
        assert_eq!(take_all(&inbox), "PONG 1\nMSG a 0\n");

        // Anyone else's push wakes it.
        assert!(inbox.poll_ready(&mut cx).is_pending());
        let _ = inbox.push(&frame(1));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn frames_come_out_in_order() {
        let inbox = Inbox::new(8);
        for n in 0..3 {
            assert!(matches!(inbox.push(&frame(n)), Pushed::Done));
        }
        assert_eq!(take_all(&inbox), "MSG a 0\nMSG a 1\nMSG a 2\n");
        assert!(inbox.is_empty());
    }

    #[test]
    fn a_full_inbox_asks_the_publisher_to_wait() {
        let inbox = Inbox::new(2);
        assert!(matches!(inbox.push(&frame(0)), Pushed::Done));
        assert!(matches!(inbox.push(&frame(1)), Pushed::Done));
        assert!(matches!(inbox.push(&frame(2)), Pushed::Full));
        let mut out = Outgoing::default();
        inbox.take(&mut out, 1);
        assert_eq!(&out.bytes[..], b"MSG a 0\n");
    }

    #[test]
    fn a_stopped_reader_is_told_what_it_missed_then_gets_the_newest() {
        let inbox = Inbox::new(2);
        inbox.socket_flowing(false);
        // Pretend the socket stalled long ago.
        inbox.stalled_since.store(1, Ordering::Relaxed);
        std::thread::sleep(STALL_LIMIT + Duration::from_millis(10));
        for n in 0..5 {
            let _ = inbox.push(&frame(n));
        }
        assert_eq!(inbox.len.load(Ordering::Relaxed), 2, "the newest frames");
        inbox.socket_flowing(true);
        assert_eq!(take_all(&inbox), "DROPPED 3\nMSG a 3\nMSG a 4\n");
        let _ = inbox.push(&frame(5));
        assert_eq!(take_all(&inbox), "MSG a 5\n", "attached again");
    }

    #[test]
    fn a_stopped_reader_keeps_every_reply() {
        let inbox = Inbox::new(2);
        inbox.socket_flowing(false);
        inbox.stalled_since.store(1, Ordering::Relaxed);
        std::thread::sleep(STALL_LIMIT + Duration::from_millis(10));
        let _ = inbox.push(&frame(0));
        inbox.push_reply(Bytes::from_static(b"PONG 1\n"));
        for n in 1..5 {
            let _ = inbox.push(&frame(n));
        }
        inbox.push_reply(Bytes::from_static(b"PONG 2\n"));
        assert_eq!(inbox.reply_bytes(), 14);
        inbox.socket_flowing(true);
        assert_eq!(
            take_all(&inbox),
            "DROPPED 3\nPONG 1\nMSG a 3\nMSG a 4\nPONG 2\n"
        );
        assert_eq!(inbox.reply_bytes(), 0);
        assert!(inbox.is_empty());
    }

    #[test]
    fn a_stopped_reader_keeps_the_newest_broadcasts_within_the_byte_bound() {
        let inbox = Inbox::new(1024);
        inbox.socket_flowing(false);
        inbox.stalled_since.store(1, Ordering::Relaxed);
        std::thread::sleep(STALL_LIMIT + Duration::from_millis(10));
        let big = |n: u64| Bytes::from(format!("MSG a {n} {}\n", "x".repeat(4000)));
        inbox.push_reply(Bytes::from(format!("NAMES {}\n", "y".repeat(100_000))));
        for n in 0..300 {
            let _ = inbox.push(&big(n));
        }
        let held = inbox.queued_bytes.load(Ordering::Relaxed);
        assert!(held <= MAX_UNREAD, "{held} bytes held");
        assert!(held > MAX_UNREAD - 8 * 1024, "as many as fit: {held}");
        inbox.socket_flowing(true);
        let got = take_all(&inbox);
        let lines: Vec<&str> = got.lines().collect();
        assert!(lines[0].starts_with("DROPPED "), "{}", &lines[0]);
        assert!(lines[1].starts_with("NAMES "), "the reply is kept");
        assert!(lines.last().is_some_and(|l| l.starts_with("MSG a 299 ")));
    }

    #[test]
    fn a_reader_that_keeps_up_makes_publishers_wait_past_the_byte_bound() {
        let inbox = Inbox::new(1024);
        let big = Bytes::from(format!("MSG a {}\n", "x".repeat(64 * 1024)));
        let pushed: Vec<bool> = (0..9)
            .map(|_| matches!(inbox.push(&big), Pushed::Full))
            .collect();
        assert_eq!(pushed.iter().filter(|full| **full).count(), 2, "{pushed:?}");
        assert_eq!(inbox.len.load(Ordering::Relaxed), 9, "nothing skipped");
    }

    #[test]
    fn replies_count_until_the_connection_takes_them() {
        let inbox = Inbox::new(8);
        let _ = inbox.push(&frame(0));
        inbox.push_reply(Bytes::from_static(b"PONG\n"));
        let _ = inbox.push(&frame(1));
        let mut out = Outgoing::default();
        inbox.take(&mut out, usize::MAX);
        assert_eq!(out.reply_bytes(), 5);
        // "MSG a 0\n" is 8 bytes: the reply is not sent yet.
        out.sent(8);
        assert_eq!(out.reply_bytes(), 5);
        out.sent(3);
        assert_eq!(out.reply_bytes(), 5, "a reply counts whole until sent");
        out.sent(2);
        assert_eq!(out.reply_bytes(), 0);
        assert_eq!(&out.bytes[..], b"MSG a 1\n");
    }

    #[test]
    fn a_closed_inbox_takes_nothing() {
        let inbox = Inbox::new(2);
        inbox.close();
        assert!(matches!(inbox.push(&frame(0)), Pushed::Done));
        assert!(inbox.is_empty());
    }

    #[test]
    fn a_waiting_publisher_goes_on_when_the_reader_drains() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let inbox = Inbox::new(2);
            let publisher = {
                let inbox = inbox.clone();
                tokio::spawn(async move {
                    for n in 0..1000 {
                        let mut full = Vec::new();
                        fan_out([&inbox], &frame(n), &mut full);
                        drained(full).await;
                    }
                })
            };
            let mut got = String::new();
            let expected: String = (0..1000).map(|n| format!("MSG a {n}\n")).collect();
            while got.len() < expected.len() {
                std::future::poll_fn(|cx| inbox.poll_ready(cx)).await;
                got.push_str(&take_all(&inbox));
            }
            publisher.await.expect("publisher");
            assert_eq!(got, expected);
        });
    }
}
