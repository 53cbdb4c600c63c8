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
//! Each inbox holds `--client-buffer` frames. A publisher that finds a
//! receiver's inbox full afterwards waits until it drains, and the session
//! does not read its client's next frame meanwhile: overload slows the
//! senders, through TCP. Only a receiver whose socket has taken no bytes for
//! [`STALL_LIMIT`] while its inbox is full is *detached*: its inbox then
//! keeps the newest frames, the oldest are counted as skipped, and when it
//! reads again it is told `DROPPED <n>` before the frames that follow the
//! gap; once it has drained them it is attached again. So a slow reader
//! holds nobody back for longer than that, once, and a reader that keeps up
//! never loses a frame.

use std::collections::VecDeque;
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
/// An empty queue whose buffer holds more frames than this gives it back:
/// after a burst, an idle user should not keep the burst's buffer.
const QUEUE_KEEP: usize = 4;

/// Frames addressed to one connection.
pub struct Inbox {
    queue: Mutex<Queue>,
    capacity: usize,
    /// Frames queued, for publishers' checks without the lock.
    len: AtomicUsize,
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
}

struct Queue {
    frames: VecDeque<Bytes>,
    /// Frames dropped from the front while detached, owed as `DROPPED`
    /// before the frames now queued.
    skipped: u64,
    attached: bool,
    /// The session has ended: nothing more is queued or waited for.
    closed: bool,
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
                skipped: 0,
                attached: true,
                closed: false,
            }),
            capacity: capacity.max(1),
            len: AtomicUsize::new(0),
            stalled_since: AtomicU64::new(0),
            detached_at: AtomicU64::new(0),
            socket: AtomicI32::new(-1),
            reader: AtomicWaker::new(),
            space: Notify::new(),
            publisher_waits: AtomicBool::new(false),
        })
    }

    /// Queues a frame for this connection. The caller holds the lock that
    /// orders the room the frame belongs to.
    pub fn push(&self, frame: &Bytes) -> Pushed {
        let mut queue = self.lock();
        if queue.closed {
            return Pushed::Done;
        }
        if queue.attached && queue.frames.len() >= self.capacity && self.stopped(Instant::now()) {
            self.detach(&mut queue);
        }
        if !queue.attached && queue.frames.len() >= self.capacity {
            // Keep the newest: the oldest becomes part of the gap.
            queue.frames.pop_front();
            queue.skipped += 1;
        }
        queue.frames.push_back(frame.clone());
        let len = queue.frames.len();
        self.len.store(len, Ordering::Release);
        let attached = queue.attached;
        drop(queue);
        if len == 1 {
            self.reader.wake();
        }
        if attached && len > self.capacity {
            Pushed::Full
        } else {
            Pushed::Done
        }
    }

    /// Queues a reply that must keep its place among the broadcasts (a
    /// room's `NAMES` for its joiner): never refused for a full inbox.
    pub fn push_reply(&self, frame: Bytes) {
        let mut queue = self.lock();
        if queue.closed {
            return;
        }
        queue.frames.push_back(frame);
        let len = queue.frames.len();
        self.len.store(len, Ordering::Release);
        drop(queue);
        if len == 1 {
            self.reader.wake();
        }
    }

    /// Ready when frames are queued; registers the session to be woken.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.len.load(Ordering::Acquire) > 0 {
            return Poll::Ready(());
        }
        self.reader.register(cx.waker());
        if self.len.load(Ordering::Acquire) > 0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Moves queued frames to `out` until it holds `limit` bytes, after a
    /// `DROPPED` for any gap before them. Once the queue is empty, a
    /// detached inbox is attached again.
    pub fn take(&self, out: &mut BytesMut, limit: usize) {
        let mut queue = self.lock();
        let was_full = queue.frames.len() >= self.capacity;
        if queue.skipped > 0 {
            crate::metrics::dropped(queue.skipped);
            ServerFrame::Dropped(queue.skipped).write_to(out);
            queue.skipped = 0;
        }
        let mut taken = 0;
        while out.len() < limit {
            let Some(frame) = queue.frames.pop_front() else {
                break;
            };
            out.extend_from_slice(&frame);
            taken += 1;
        }
        crate::metrics::delivered(taken);
        if queue.frames.is_empty() {
            if queue.frames.capacity() > QUEUE_KEEP {
                queue.frames = VecDeque::new();
            }
            queue.attached = true;
        }
        let len = queue.frames.len();
        self.len.store(len, Ordering::SeqCst);
        drop(queue);
        if was_full && len <= self.capacity {
            self.wake_publishers();
        }
    }

    /// Whether frames are waiting.
    pub fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
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
        self.len.store(0, Ordering::Release);
        drop(queue);
        self.wake_publishers();
    }

    /// Notes whether the client's socket is taking bytes: `false` when a
    /// write found it full, `true` when a write went through.
    pub fn socket_flowing(&self, flowing: bool) {
        let since = &self.stalled_since;
        let stalled = since.load(Ordering::Relaxed) != 0;
        if flowing && stalled {
            since.store(0, Ordering::Relaxed);
        } else if !flowing && !stalled {
            since.store(millis(Instant::now()) + 1, Ordering::Relaxed);
        }
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
            queued = queue.frames.len(),
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
            if self.len.load(Ordering::SeqCst) <= self.capacity {
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
        let mut out = BytesMut::new();
        inbox.take(&mut out, usize::MAX);
        String::from_utf8(out.to_vec()).expect("UTF-8")
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
        let mut out = BytesMut::new();
        inbox.take(&mut out, 1);
        assert_eq!(&out[..], b"MSG a 0\n");
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
