//! Witnesses: two well-behaved users who chat through a whole case and must
//! receive every one of their numbered messages, in order, exactly once,
//! whatever else the server is put through meanwhile.
//!
//! Each witness sends `MSG <n> <µs since start>` at a steady pace and reads
//! everything the server sends it. A witness's view checks, line by line:
//! its own and the other's numbers arrive without gap, repeat or reordering;
//! no `DROPPED`, no `ERROR`; nothing that could drive a terminal (control or
//! bidi characters) ever reaches it; and both witnesses see the same
//! broadcasts in the same order (compared by a running hash). It also keeps
//! what the cases want to look at: the `JOIN`/`LEAVE` events of other users
//! and the messages of other senders, with their numbering checked too.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::wire::{self, Batch, LineReader, Next};
use crate::TIMEOUT;

/// The witnesses' names.
pub const NAMES: [&str; 2] = ["witness-a", "witness-b"];

/// Time between two messages of one witness: 200 a second each.
const PACE: Duration = Duration::from_millis(5);

/// Problems kept verbatim for the failure message.
const SAMPLES: usize = 8;

/// A change of the room seen by a witness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Join(String),
    Leave(String),
}

/// The messages of one other sender, as one witness saw them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Foreign {
    pub count: u64,
    /// Messages whose text starts with a number: each must be one more than
    /// the previous, starting at 0 (the cases' senders number theirs).
    pub numbered: u64,
    pub misnumbered: u64,
    /// The number the next numbered message must carry.
    pub next: u64,
}

/// Everything one witness saw.
#[derive(Debug, Default)]
struct View {
    /// Next number expected from each witness.
    next: [u64; 2],
    received: [u64; 2],
    /// The witness's last (`stop`) frame arrived.
    done: [bool; 2],
    gaps: u64,
    repeats: u64,
    dropped: u64,
    unsafe_lines: u64,
    unexpected: u64,
    errors: Vec<String>,
    samples: Vec<String>,
    foreign: HashMap<String, Foreign>,
    events: Vec<Event>,
    latencies_us: Vec<u64>,
    /// Running hash of the broadcasts seen while both witnesses were in.
    order_hash: u64,
    ordered: u64,
    hashing: bool,
    /// The last line, when it was an `ERROR`.
    last_error: Option<String>,
    ending: Option<String>,
}

impl View {
    fn sample(&mut self, problem: String) {
        if self.samples.len() < SAMPLES {
            self.samples.push(problem);
        }
    }

    fn hash(&mut self, line: &str) {
        if !self.hashing {
            return;
        }
        // FNV-1a over the line and its terminator.
        for &b in line.as_bytes().iter().chain(b"\n") {
            self.order_hash ^= u64::from(b);
            self.order_hash = self.order_hash.wrapping_mul(0x100_0000_01b3);
        }
        self.ordered += 1;
    }

    /// Takes one line the server sent to witness `me`.
    fn take(&mut self, me: usize, line: &str, epoch: Instant) {
        if self.done == [true, true] {
            // Past both stop frames: the other witness stopped reading too.
            return;
        }
        if chat_protocol::forbidden_char(line).is_some() {
            self.unsafe_lines += 1;
            self.sample(format!("terminal-unsafe line {line:?}"));
        }
        let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
        match verb {
            "MSG" => {
                self.hash(line);
                let (from, text) = rest.split_once(' ').unwrap_or((rest, ""));
                match NAMES.iter().position(|n| *n == from) {
                    Some(sender) => self.take_witness_frame(sender, text, line, epoch),
                    None => self.take_foreign(from, text),
                }
            }
            "JOIN" | "LEAVE" => {
                self.hash(line);
                let name = rest.split(' ').next().unwrap_or("").to_owned();
                if verb == "JOIN" && me == 0 && name == NAMES[1] {
                    // From here on both witnesses get the same broadcasts.
                    self.hashing = true;
                } else if !NAMES.contains(&name.as_str()) {
                    self.events.push(if verb == "JOIN" {
                        Event::Join(name)
                    } else {
                        Event::Leave(name)
                    });
                }
            }
            "DROPPED" => {
                self.dropped += rest.parse::<u64>().unwrap_or(u64::MAX / 2);
                self.sample(format!("a witness was told {line:?}"));
            }
            "ERROR" => {
                self.errors.push(line.to_owned());
                self.last_error = Some(line.to_owned());
                return;
            }
            _ => {
                self.unexpected += 1;
                self.sample(format!("unexpected line {line:?}"));
            }
        }
        self.last_error = None;
        if self.done == [true, true] {
            self.hashing = false;
        }
    }

    fn take_witness_frame(&mut self, sender: usize, text: &str, line: &str, epoch: Instant) {
        let (number, payload) = text.split_once(' ').unwrap_or((text, ""));
        let Ok(n) = number.parse::<u64>() else {
            self.unexpected += 1;
            self.sample(format!("malformed witness frame {line:?}"));
            return;
        };
        let expected = self.next[sender];
        if n > expected {
            self.gaps += n - expected;
            self.sample(format!("{} {expected}..{n} missing", NAMES[sender]));
        } else if n < expected {
            self.repeats += 1;
            self.sample(format!("{} {n} after {}", NAMES[sender], expected - 1));
            return;
        }
        self.next[sender] = n + 1;
        self.received[sender] += 1;
        match payload {
            "stop" => self.done[sender] = true,
            sent_at => {
                if let Ok(sent_at) = sent_at.parse::<u64>() {
                    let now = epoch.elapsed().as_micros() as u64;
                    self.latencies_us.push(now.saturating_sub(sent_at));
                }
            }
        }
    }

    fn take_foreign(&mut self, from: &str, text: &str) {
        if !self.foreign.contains_key(from) {
            self.foreign.insert(from.to_owned(), Foreign::default());
        }
        let Some(entry) = self.foreign.get_mut(from) else {
            return;
        };
        entry.count += 1;
        let Some(n) = text.split(' ').next().and_then(|n| n.parse::<u64>().ok()) else {
            return;
        };
        entry.numbered += 1;
        let due = entry.next;
        entry.next = n + 1;
        if n != due {
            entry.misnumbered += 1;
            self.sample(format!("{from}'s message {n} came when {due} was due"));
        }
    }
}

/// The two witnesses of one case.
pub struct Witnesses {
    epoch: Instant,
    views: [Arc<Mutex<View>>; 2],
    stop: watch::Sender<Option<Instant>>,
    /// While set, the witnesses skip their turns to speak (they still read).
    paused: Arc<AtomicBool>,
    writers: Vec<JoinHandle<(OwnedWriteHalf, u64)>>,
    readers: Vec<JoinHandle<LineReader>>,
}

impl Witnesses {
    /// Logs both witnesses in and starts their conversation.
    pub async fn start(addr: SocketAddr) -> Witnesses {
        Witnesses::start_paced(addr, PACE).await
    }

    /// Like [`Witnesses::start`], each witness speaking once every `pace`:
    /// against a server that applies its flood control to loopback
    /// (`--limits-on-loopback`), slower than it allows, or the witnesses
    /// measure their own allowance.
    pub async fn start_paced(addr: SocketAddr, pace: Duration) -> Witnesses {
        let epoch = Instant::now();
        let (stop, stopped) = watch::channel(None);
        let views = [
            Arc::new(Mutex::new(View::default())),
            Arc::new(Mutex::new(View {
                hashing: true,
                ..View::default()
            })),
        ];
        let mut witnesses = Witnesses {
            epoch,
            views,
            stop,
            paused: Arc::new(AtomicBool::new(false)),
            writers: Vec::new(),
            readers: Vec::new(),
        };
        let mut halves = Vec::new();
        for (me, name) in NAMES.iter().enumerate() {
            let (reader, writer) = wire::login(addr, name).await;
            let view = witnesses.views[me].clone();
            let stopped = stopped.clone();
            // The reader tells the writer when the server has closed, so
            // the witness closes too, as any client would.
            let closed = Arc::new(Notify::new());
            witnesses.readers.push(tokio::spawn(read(
                me,
                reader,
                view,
                epoch,
                stopped,
                closed.clone(),
            )));
            halves.push((writer, closed));
        }
        for (writer, closed) in halves {
            let paused = witnesses.paused.clone();
            witnesses.writers.push(tokio::spawn(write(
                writer,
                pace,
                epoch,
                stopped.clone(),
                paused,
                closed,
            )));
        }
        witnesses
    }

    /// Stops (`true`) or restarts the witnesses' talk, so a case can
    /// measure the server idle; what they sent before is still checked.
    pub fn pause(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
    }

    fn view(&self) -> MutexGuard<'_, View> {
        lock(&self.views[0])
    }

    /// How many times the first witness saw `event` so far.
    pub fn seen(&self, event: &Event) -> usize {
        self.view().events.iter().filter(|e| *e == event).count()
    }

    /// Waits until the first witness has seen `event` `times` times.
    pub async fn wait_seen(&self, event: &Event, times: usize) {
        crate::probe::eventually(&format!("{event:?} seen {times}×"), TIMEOUT, || {
            let seen = self.seen(event);
            if seen >= times {
                Ok(())
            } else {
                Err(seen)
            }
        })
        .await
    }

    /// Waits until the first witness has seen `count` events in all.
    pub async fn wait_events(&self, count: usize, limit: Duration) {
        crate::probe::eventually(&format!("{count} JOIN/LEAVE events"), limit, || {
            let seen = self.view().events.len();
            if seen >= count {
                Ok(())
            } else {
                Err(seen)
            }
        })
        .await
    }

    /// Stops the conversation: each witness sends a last numbered `stop`
    /// frame, both wait until they have read both, then leave with `LEAVE`
    /// (after `BYE` the other's `LEAVE` is a broadcast like any other).
    pub async fn finish(mut self) -> Verdict {
        let _ = self.stop.send(Some(Instant::now()));
        let mut ends = Vec::new();
        for writer in std::mem::take(&mut self.writers) {
            ends.push(writer.await.expect("witness writer"));
        }
        let mut readers = Vec::new();
        for reader in std::mem::take(&mut self.readers) {
            readers.push(reader.await.expect("witness reader"));
        }
        let sent = [ends[0].1, ends[1].1];
        let verdict = self.verdict(sent, false);
        for ((mut writer, _), mut reader) in ends.into_iter().zip(readers) {
            if writer.write_all(b"LEAVE\n").await.is_ok() {
                loop {
                    match reader.next(TIMEOUT).await {
                        Next::Line(line) if line == "BYE" => break,
                        Next::Line(_) => {}
                        other => panic!("a witness got {other:?} instead of BYE"),
                    }
                }
            }
        }
        verdict
    }

    /// Ends the witnesses of a server that was told to shut down: both must
    /// have received an unbroken prefix of each other's messages, then
    /// `ERROR shutting-down`, then the end of the connection.
    pub async fn finish_at_shutdown(mut self) -> Verdict {
        let mut readers = Vec::new();
        for reader in std::mem::take(&mut self.readers) {
            readers.push(reader.await.expect("witness reader"));
        }
        let _ = self.stop.send(Some(Instant::now()));
        let mut sent = [0; 2];
        for (i, writer) in std::mem::take(&mut self.writers).into_iter().enumerate() {
            sent[i] = writer.await.expect("witness writer").1;
        }
        self.verdict(sent, true)
    }

    fn verdict(&self, sent: [u64; 2], shutdown: bool) -> Verdict {
        let views = [lock(&self.views[0]), lock(&self.views[1])];
        let mut verdict = Verdict {
            shutdown,
            sent: sent.iter().sum(),
            elapsed: self.epoch.elapsed(),
            ..Verdict::default()
        };
        let mut latencies = Vec::new();
        for view in &views {
            for (sender, &sent) in sent.iter().enumerate() {
                verdict.delivered += view.received[sender];
                verdict.lost += sent.saturating_sub(view.received[sender]);
            }
            verdict.gaps += view.gaps;
            verdict.repeats += view.repeats;
            verdict.dropped += view.dropped;
            verdict.unsafe_lines += view.unsafe_lines;
            verdict.unexpected += view.unexpected;
            verdict.errors.extend(view.errors.iter().cloned());
            verdict.samples.extend(view.samples.iter().cloned());
            verdict
                .endings
                .push(view.ending.clone().unwrap_or_else(|| "open".into()));
            verdict.last_lines.push(view.last_error.clone());
            latencies.extend_from_slice(&view.latencies_us);
        }
        verdict.events = views[0].events.clone();
        verdict.foreign = views[0].foreign.clone();
        verdict.same_order =
            views[0].ordered == views[1].ordered && views[0].order_hash == views[1].order_hash;
        verdict.ordered = views[0].ordered.min(views[1].ordered);
        latencies.sort_unstable();
        let at = |q: f64| -> Duration {
            match latencies.len() {
                0 => Duration::ZERO,
                n => Duration::from_micros(latencies[((n - 1) as f64 * q).round() as usize]),
            }
        };
        verdict.p50 = at(0.50);
        verdict.p99 = at(0.99);
        verdict.max = at(1.0);
        verdict
    }
}

impl Drop for Witnesses {
    fn drop(&mut self) {
        for task in &self.writers {
            task.abort();
        }
        for task in &self.readers {
            task.abort();
        }
    }
}

fn lock(view: &Mutex<View>) -> MutexGuard<'_, View> {
    view.lock().unwrap_or_else(|e| e.into_inner())
}

async fn write(
    mut writer: OwnedWriteHalf,
    pace: Duration,
    epoch: Instant,
    mut stopped: watch::Receiver<Option<Instant>>,
    paused: Arc<AtomicBool>,
    closed: Arc<Notify>,
) -> (OwnedWriteHalf, u64) {
    let mut pace = tokio::time::interval(pace);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0;
    loop {
        tokio::select! {
            _ = pace.tick() => {}
            _ = stopped.changed() => {}
            () = closed.notified() => {
                let _ = writer.shutdown().await;
                return (writer, n);
            }
        }
        let stopping = stopped.borrow().is_some();
        if !stopping && paused.load(Ordering::Relaxed) {
            continue;
        }
        let frame = if stopping {
            format!("MSG {n} stop\n")
        } else {
            format!("MSG {n} {}\n", epoch.elapsed().as_micros())
        };
        if writer.write_all(frame.as_bytes()).await.is_err() {
            // Only a server that is shutting down closes on a witness.
            return (writer, n);
        }
        n += 1;
        if stopping {
            return (writer, n);
        }
    }
}

async fn read(
    me: usize,
    mut reader: LineReader,
    view: Arc<Mutex<View>>,
    epoch: Instant,
    stopped: watch::Receiver<Option<Instant>>,
    closed: Arc<Notify>,
) -> LineReader {
    loop {
        // Lines are taken in batches, without copies: a witness must keep
        // up with a flood as well as the flooder's own reader does.
        let batch = reader
            .batch(Duration::from_millis(200), |line| {
                let mut view = lock(&view);
                match line {
                    Ok(line) => view.take(me, line, epoch),
                    Err(bytes) => {
                        view.unsafe_lines += 1;
                        view.sample(format!("line not UTF-8: {bytes:?}"));
                    }
                }
            })
            .await;
        let mut view = lock(&view);
        let ending = match batch {
            Batch::Lines if view.done == [true, true] => "finished".to_owned(),
            Batch::Lines => continue,
            Batch::Closed => {
                closed.notify_one();
                "closed by the server".to_owned()
            }
            Batch::Failed(e) => {
                closed.notify_one();
                format!("failed: {e}")
            }
            Batch::TimedOut => match *stopped.borrow() {
                Some(at) if at.elapsed() > TIMEOUT => {
                    "timed out waiting for the stop frames".to_owned()
                }
                _ => continue,
            },
        };
        view.ending = Some(ending);
        return reader;
    }
}

/// What the witnesses of one case experienced.
#[derive(Debug, Default, Clone)]
pub struct Verdict {
    /// Whether the case ended with the server shutting down.
    pub shutdown: bool,
    /// Numbered frames sent, both witnesses together.
    pub sent: u64,
    /// Witness frames received, both witnesses together (each frame is
    /// delivered twice: to its sender and to the other).
    pub delivered: u64,
    pub lost: u64,
    pub gaps: u64,
    pub repeats: u64,
    pub dropped: u64,
    pub unsafe_lines: u64,
    pub unexpected: u64,
    pub errors: Vec<String>,
    pub samples: Vec<String>,
    pub endings: Vec<String>,
    /// Each witness's last line, when it was an `ERROR`.
    pub last_lines: Vec<Option<String>>,
    pub same_order: bool,
    /// Broadcasts both saw in the same order.
    pub ordered: u64,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub elapsed: Duration,
    /// The first witness's JOIN/LEAVE events of other users, in order.
    pub events: Vec<Event>,
    /// The first witness's record of other users' messages.
    pub foreign: HashMap<String, Foreign>,
}

impl Verdict {
    /// Panics unless the witnesses lost nothing and saw nothing wrong.
    pub fn assert_intact(&self) {
        let ok = self.lost == 0
            && self.gaps == 0
            && self.repeats == 0
            && self.dropped == 0
            && self.unsafe_lines == 0
            && self.unexpected == 0
            && self.errors.is_empty()
            && self.same_order
            && self.endings.iter().all(|e| e == "finished");
        assert!(ok, "the witnesses were harmed: {self:#?}");
    }

    /// Panics unless, up to the shutdown, the witnesses lost nothing, and
    /// then each got `ERROR shutting-down` and a clean close.
    pub fn assert_cut_by_shutdown(&self) {
        let told = self.last_lines.iter().all(|l| {
            l.as_deref()
                .is_some_and(|l| l.starts_with("ERROR shutting-down"))
        });
        let ok = self.gaps == 0
            && self.repeats == 0
            && self.dropped == 0
            && self.unsafe_lines == 0
            && self.unexpected == 0
            && self.errors.len() == 2
            && told
            && self.endings.iter().all(|e| e == "closed by the server");
        assert!(ok, "the witnesses were harmed by the shutdown: {self:#?}");
    }

    /// What the first witness saw of `from`'s messages.
    pub fn foreign_from(&self, from: &str) -> Foreign {
        self.foreign.get(from).cloned().unwrap_or_default()
    }

    /// Messages of other users the first witness saw, all senders together.
    pub fn foreign_total(&self) -> u64 {
        self.foreign.values().map(|f| f.count).sum()
    }

    /// One line for the case's report.
    pub fn summary(&self) -> String {
        format!(
            "witnesses: {} sent, {} delivered, {} lost, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.sent,
            self.delivered,
            self.lost + self.gaps + self.dropped,
            ms(self.p50),
            ms(self.p99),
            ms(self.max)
        )
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
