//! The room's broadcast ring, with flow control: publishers wait for
//! readers that drain, and only a reader whose socket has stopped draining is
//! skipped.
//!
//! Frames are encoded once and kept in a `tokio::sync::broadcast` ring that
//! every session reads at its own pace. On its own, that ring lets a burst
//! overwrite frames that a session had not yet been *scheduled* to take,
//! which punishes readers that keep up. So publishing goes through a gate:
//!
//! - Every reader's position (frames taken) is shared in its [`Cursor`].
//!   A frame may be published only while no *attached* reader would fall
//!   more than `capacity` (`--client-buffer`) frames behind; otherwise the
//!   publisher waits. Sessions stop reading their client's input while they
//!   wait to publish, so overload slows the senders through TCP.
//! - A reader is *detached* when it holds the publishers back while its
//!   socket has taken no bytes for [`STALL_LIMIT`]: its client has stopped
//!   reading. Publishers then overwrite its frames; when it reads again the
//!   ring tells it how many it lost (`DROPPED <n>`), and it is attached again
//!   once it has caught up with the head.
//!
//! The gate keeps `floor`, the fewest frames any attached reader has taken,
//! and recomputes it (one pass over the readers) only when the head reaches
//! `floor + capacity`; readers that leave the floor wake a waiting publisher
//! when the last of them has. So the fast path is one uncontended lock per
//! frame published and two relaxed stores per batch a reader takes.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::broadcast::{self, error::TryRecvError};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::debug;

/// How long a reader's socket may take no bytes at all, while the reader
/// holds the publishers back, before it counts as stopped. A client that
/// reads anything at all makes its socket writable again far sooner; this
/// bounds how long one reader that stopped can pause a busy room, once.
pub const STALL_LIMIT: Duration = Duration::from_millis(250);
/// A waiting publisher looks again this often even if nobody woke it, so a
/// wake-up lost to a race costs a pause, never a hang.
const RECHECK: Duration = Duration::from_millis(50);

/// The publishing side of a room's broadcasts.
pub struct Ring {
    frames: broadcast::Sender<Bytes>,
    capacity: u64,
    gate: Mutex<Gate>,
    /// A copy of `Gate::floor` that readers check without the lock.
    floor: AtomicU64,
    /// Attached readers still at `floor` when it was last computed.
    at_floor: AtomicI64,
    /// A publisher is waiting for the floor to move.
    waiting: AtomicBool,
    moved: Notify,
    epoch: Instant,
}

struct Gate {
    /// Frames published so far.
    head: u64,
    /// No attached reader has taken fewer frames than this.
    floor: u64,
    readers: Vec<Arc<Cursor>>,
}

/// A reader's state as publishers see it.
pub struct Cursor {
    /// Frames this reader has taken (or been told it lost).
    taken: AtomicU64,
    /// When its socket stopped taking bytes, as milliseconds since the
    /// ring's epoch plus one; 0 while it takes them.
    stalled_since: AtomicU64,
    /// Whether publishers wait for it.
    attached: AtomicBool,
    /// Its index in `Gate::readers`, changed only under the gate's lock.
    index: AtomicUsize,
}

/// Why a publisher cannot go on yet.
struct Blocked {
    /// When a stalled reader it waits for will count as stopped.
    recheck: Instant,
}

impl Ring {
    /// A ring that lets attached readers fall at most `capacity` frames
    /// behind the newest.
    pub fn new(capacity: usize) -> Arc<Ring> {
        let capacity = capacity.max(1);
        // The broadcast ring rounds up to a power of two: never smaller than
        // what the gate allows, so an attached reader never loses a frame.
        let (frames, _) = broadcast::channel(capacity);
        Arc::new(Ring {
            frames,
            capacity: capacity as u64,
            gate: Mutex::new(Gate {
                head: 0,
                floor: 0,
                readers: Vec::new(),
            }),
            floor: AtomicU64::new(0),
            at_floor: AtomicI64::new(0),
            waiting: AtomicBool::new(false),
            moved: Notify::new(),
            epoch: Instant::now(),
        })
    }

    /// A reader of everything published from now on.
    pub fn subscribe(self: &Arc<Ring>) -> Reader {
        let mut gate = self.lock();
        self.register(&mut gate)
    }

    /// Publishes `frame` if no attached reader would fall too far behind;
    /// hands it back otherwise.
    pub fn try_publish(&self, frame: Bytes) -> Result<(), Bytes> {
        let mut gate = self.lock();
        match self.admit(&mut gate) {
            Ok(()) => {
                self.send(&mut gate, frame);
                Ok(())
            }
            Err(_) => Err(frame),
        }
    }

    /// Publishes `frame`, waiting while attached readers are too far behind.
    pub async fn publish(self: &Arc<Ring>, frame: Bytes) {
        self.publish_with(frame, |_, _| ()).await;
    }

    /// Publishes `frame` (a newcomer's `JOIN`) and, in the same step,
    /// subscribes the newcomer: it gets everything after its own `JOIN`.
    pub async fn publish_and_subscribe(self: &Arc<Ring>, frame: Bytes) -> Reader {
        self.publish_with(frame, |ring, gate| ring.register(gate))
            .await
    }

    async fn publish_with<T>(
        self: &Arc<Ring>,
        frame: Bytes,
        then: impl FnOnce(&Arc<Ring>, &mut Gate) -> T,
    ) -> T {
        loop {
            // Registered before looking, so a reader that moves between the
            // look and the wait still wakes this publisher.
            let moved = self.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            let blocked = {
                let mut gate = self.lock();
                match self.admit(&mut gate) {
                    Ok(()) => {
                        self.send(&mut gate, frame);
                        return then(self, &mut gate);
                    }
                    Err(blocked) => blocked,
                }
            };
            let _ = tokio::time::timeout_at(blocked.recheck, moved).await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, Gate> {
        // A panic elsewhere while holding the lock leaves the counters
        // consistent (each is one store), so a poisoned lock is still usable.
        self.gate
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn send(&self, gate: &mut Gate, frame: Bytes) {
        gate.head += 1;
        // An error only means nobody is subscribed: nobody to tell.
        let _ = self.frames.send(frame);
    }

    fn register(self: &Arc<Ring>, gate: &mut Gate) -> Reader {
        let cursor = Arc::new(Cursor {
            taken: AtomicU64::new(gate.head),
            stalled_since: AtomicU64::new(0),
            attached: AtomicBool::new(true),
            index: AtomicUsize::new(gate.readers.len()),
        });
        gate.readers.push(cursor.clone());
        Reader {
            frames: self.frames.subscribe(),
            taken: gate.head,
            cursor,
            ring: self.clone(),
        }
    }

    fn deregister(&self, cursor: &Cursor) {
        let mut gate = self.lock();
        let index = cursor.index.load(Ordering::Relaxed);
        gate.readers.swap_remove(index);
        if let Some(moved) = gate.readers.get(index) {
            moved.index.store(index, Ordering::Relaxed);
        }
        drop(gate);
        self.wake();
    }

    /// Whether the next frame may be published; recomputes the floor, and
    /// detaches readers that stopped, when the cached floor says no.
    fn admit(&self, gate: &mut Gate) -> Result<(), Blocked> {
        if gate.head - gate.floor < self.capacity {
            return Ok(());
        }
        let now = Instant::now();
        let now_ms = self.millis(now);
        let stall_ms = STALL_LIMIT.as_millis() as u64;
        // Readers that have taken fewer frames than this hold the next one up.
        let needed = gate.head + 1 - self.capacity;
        let mut floor = gate.head;
        let mut at_floor = 0;
        let mut recheck = now + RECHECK;
        for reader in &gate.readers {
            if !reader.attached.load(Ordering::Relaxed) {
                continue;
            }
            let taken = reader.taken.load(Ordering::SeqCst);
            if taken < needed {
                let stalled = reader.stalled_since.load(Ordering::Relaxed);
                if stalled != 0 && now_ms >= stalled - 1 + stall_ms {
                    reader.attached.store(false, Ordering::Relaxed);
                    debug!(
                        behind = gate.head - taken,
                        "a reader stopped reading; skipping it"
                    );
                    continue;
                }
                if stalled != 0 {
                    let stops = self.epoch
                        + Duration::from_millis(stalled - 1)
                        + STALL_LIMIT
                        + Duration::from_millis(1);
                    recheck = recheck.min(stops);
                }
            }
            match taken.cmp(&floor) {
                std::cmp::Ordering::Less => {
                    floor = taken;
                    at_floor = 1;
                }
                std::cmp::Ordering::Equal => at_floor += 1,
                std::cmp::Ordering::Greater => {}
            }
        }
        gate.floor = floor;
        self.floor.store(floor, Ordering::SeqCst);
        self.at_floor.store(at_floor, Ordering::SeqCst);
        if gate.head - floor < self.capacity {
            return Ok(());
        }
        self.waiting.store(true, Ordering::SeqCst);
        Err(Blocked { recheck })
    }

    fn wake(&self) {
        if self.waiting.swap(false, Ordering::SeqCst) {
            self.moved.notify_waiters();
        }
    }

    fn millis(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64
    }
}

/// A session's subscription: the frames after its login, in order.
pub struct Reader {
    frames: broadcast::Receiver<Bytes>,
    /// Frames taken so far; published to `cursor` after each batch.
    taken: u64,
    cursor: Arc<Cursor>,
    ring: Arc<Ring>,
}

/// What a reader finds next in the ring.
pub enum Next {
    Frame(Bytes),
    /// Frames overwritten before this reader took them.
    Lost(u64),
    Empty,
}

impl Reader {
    /// Waits for the next frame; `None` once the ring is gone.
    pub async fn recv(&mut self) -> Option<Next> {
        match self.frames.recv().await {
            Ok(frame) => {
                self.taken += 1;
                Some(Next::Frame(frame))
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                self.taken += n;
                Some(Next::Lost(n))
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// The next frame if one is there.
    pub fn try_recv(&mut self) -> Next {
        match self.frames.try_recv() {
            Ok(frame) => {
                self.taken += 1;
                Next::Frame(frame)
            }
            Err(TryRecvError::Lagged(n)) => {
                self.taken += n;
                Next::Lost(n)
            }
            Err(TryRecvError::Empty | TryRecvError::Closed) => {
                if !self.cursor.attached.load(Ordering::Relaxed) {
                    self.reattach();
                }
                Next::Empty
            }
        }
    }

    /// Shares how far this reader has got, waking a publisher that waits
    /// for it. Called after each batch rather than each frame.
    pub fn advance(&mut self) {
        let before = self.cursor.taken.swap(self.taken, Ordering::SeqCst);
        if before == self.taken || !self.ring.waiting.load(Ordering::SeqCst) {
            return;
        }
        if before <= self.ring.floor.load(Ordering::SeqCst)
            && self.ring.at_floor.fetch_sub(1, Ordering::SeqCst) <= 1
        {
            self.ring.wake();
        }
    }

    /// The handle the session's writer uses to report its socket.
    pub fn socket(&self) -> Socket {
        Socket {
            cursor: self.cursor.clone(),
            ring: self.ring.clone(),
        }
    }

    /// Caught up after being skipped: publishers wait for it again.
    fn reattach(&mut self) {
        let gate = self.ring.lock();
        // Only at the head, so that it is never counted while behind.
        if gate.head == self.taken {
            self.cursor.taken.store(self.taken, Ordering::SeqCst);
            self.cursor.attached.store(true, Ordering::Relaxed);
        }
    }
}

/// How a reader's client socket is doing, as its writer sees it.
pub struct Socket {
    cursor: Arc<Cursor>,
    ring: Arc<Ring>,
}

impl Socket {
    /// Notes whether the client's socket is taking bytes: `false` when a
    /// write found it full, `true` when a write went through.
    pub fn flowing(&self, flowing: bool) {
        let since = &self.cursor.stalled_since;
        let stalled = since.load(Ordering::Relaxed) != 0;
        if flowing && stalled {
            since.store(0, Ordering::Relaxed);
        } else if !flowing && !stalled {
            let now = self.ring.millis(Instant::now());
            since.store(now + 1, Ordering::Relaxed);
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.ring.deregister(&self.cursor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u64) -> Bytes {
        Bytes::from(format!("MSG a {n}\n"))
    }

    fn take_all(reader: &mut Reader) -> (Vec<Bytes>, u64) {
        let (mut frames, mut lost) = (Vec::new(), 0);
        loop {
            match reader.try_recv() {
                Next::Frame(f) => frames.push(f),
                Next::Lost(n) => lost += n,
                Next::Empty => break,
            }
        }
        reader.advance();
        (frames, lost)
    }

    #[test]
    fn publishers_stop_at_a_readers_capacity() {
        let ring = Ring::new(4);
        let mut reader = ring.subscribe();
        for n in 0..4 {
            assert!(ring.try_publish(frame(n)).is_ok());
        }
        assert!(
            ring.try_publish(frame(4)).is_err(),
            "the reader is 4 behind"
        );
        let (frames, lost) = take_all(&mut reader);
        assert_eq!((frames.len(), lost), (4, 0));
        assert!(ring.try_publish(frame(4)).is_ok());
    }

    #[test]
    fn without_readers_nothing_waits() {
        let ring = Ring::new(2);
        for n in 0..10 {
            assert!(ring.try_publish(frame(n)).is_ok());
        }
    }

    #[test]
    fn a_reader_whose_socket_is_full_is_waited_for_until_the_stall_limit() {
        let ring = Ring::new(2);
        let mut stuck = ring.subscribe();
        stuck.socket().flowing(false);
        assert!(ring.try_publish(frame(0)).is_ok());
        assert!(ring.try_publish(frame(1)).is_ok());
        assert!(ring.try_publish(frame(2)).is_err(), "stalled only just now");
        // Pretend the stall began long ago.
        stuck.cursor.stalled_since.store(1, Ordering::Relaxed);
        std::thread::sleep(STALL_LIMIT + Duration::from_millis(20));
        for n in 2..10 {
            assert!(ring.try_publish(frame(n)).is_ok(), "frame {n}");
        }
        // It reads again: told what it lost, then in order, then attached.
        stuck.socket().flowing(true);
        let (frames, lost) = take_all(&mut stuck);
        assert_eq!(frames.len() as u64 + lost, 10);
        assert!(lost > 0);
        assert_eq!(frames.last(), Some(&frame(9)));
        assert!(stuck.cursor.attached.load(Ordering::Relaxed));
        assert!(ring.try_publish(frame(10)).is_ok());
        assert!(ring.try_publish(frame(11)).is_ok());
        assert!(ring.try_publish(frame(12)).is_err());
    }

    #[test]
    fn a_reader_that_leaves_releases_the_publishers() {
        let ring = Ring::new(1);
        let reader = ring.subscribe();
        assert!(ring.try_publish(frame(0)).is_ok());
        assert!(ring.try_publish(frame(1)).is_err());
        drop(reader);
        assert!(ring.try_publish(frame(1)).is_ok());
    }

    #[test]
    fn a_newcomer_starts_after_its_own_join() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let ring = Ring::new(8);
            ring.publish(frame(0)).await;
            let mut newcomer = ring.publish_and_subscribe(frame(1)).await;
            ring.publish(frame(2)).await;
            let (frames, _) = take_all(&mut newcomer);
            assert_eq!(frames, vec![frame(2)]);
        });
    }

    #[test]
    fn a_waiting_publisher_goes_on_when_the_reader_moves() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let ring = Ring::new(2);
            let mut reader = ring.subscribe();
            let publisher = {
                let ring = ring.clone();
                tokio::spawn(async move {
                    for n in 0..1000 {
                        ring.publish(frame(n)).await;
                    }
                })
            };
            let mut got = Vec::new();
            while got.len() < 1000 {
                match reader.recv().await {
                    Some(Next::Frame(f)) => got.push(f),
                    other => panic!("lost frames: {}", matches!(other, Some(Next::Lost(_)))),
                }
                let (more, lost) = take_all(&mut reader);
                assert_eq!(lost, 0);
                got.extend(more);
            }
            publisher.await.expect("publisher");
            assert_eq!(got, (0..1000).map(frame).collect::<Vec<_>>());
        });
    }
}
