//! The delivery checker: what one receiver saw of every sender's messages.
//!
//! Each sender numbers its messages 0, 1, 2, … and every receiver must see
//! each number exactly once, in order. Anything else is counted, not
//! asserted, so a run reports every kind of fault at once:
//! - *lost*: never arrived, and no `DROPPED` explains it;
//! - *skipped*: missing after the server said `DROPPED <n>`, which the
//!   contract allows for a slow reader (counted apart from losses);
//! - *duplicated*: arrived a second time;
//! - *reordered*: arrived after a later message of the same sender.
//!
//! It also folds the order in which every message arrived into a digest, so
//! that receivers can be compared: the contract has every user see all
//! broadcasts in one total order, so every receiver that got all of a run
//! (and no `DROPPED`) must end with the same digest.

use std::ops::Range;

/// Per-receiver bookkeeping for a fixed set of senders `0..senders`, each
/// sending `messages` messages.
#[derive(Debug, Clone)]
pub struct Checker {
    streams: Vec<Stream>,
    messages: u64,
    /// Bumped at every `DROPPED`, so a gap can tell whether one came between
    /// its two ends.
    drop_epoch: u32,
    /// Sum of the `n` of every `DROPPED <n>`.
    dropped_frames: u64,
    /// Senders whose last message has been seen (or skipped past).
    finished: usize,
    counts: Counts,
    /// Every (sender, seq) taken, in arrival order, folded into one number.
    order: u64,
}

/// One sender as seen by one receiver.
#[derive(Debug, Clone, Default)]
struct Stream {
    next: u64,
    /// The epoch at the last message from this sender.
    epoch: u32,
    /// Numbers jumped over and not (yet) explained; a late arrival fills
    /// its hole and counts as reordered.
    holes: Vec<Range<u64>>,
}

/// The totals a checker reports; they add up over receivers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Messages taken (in order, or late into a hole).
    pub received: u64,
    pub lost: u64,
    pub skipped: u64,
    pub duplicated: u64,
    pub reordered: u64,
    /// Messages from a sender number outside the run, or a number past
    /// the sender's last.
    pub foreign: u64,
    /// Sum of `DROPPED <n>` counts (frames of any kind, not only ours).
    pub dropped_frames: u64,
}

impl Counts {
    pub fn add(&mut self, other: &Counts) {
        self.received += other.received;
        self.lost += other.lost;
        self.skipped += other.skipped;
        self.duplicated += other.duplicated;
        self.reordered += other.reordered;
        self.foreign += other.foreign;
        self.dropped_frames += other.dropped_frames;
    }

    /// Whether the server broke the contract: a `DROPPED` is allowed, a
    /// silent loss, a duplicate or a reorder is not.
    pub fn faults(&self) -> u64 {
        self.lost + self.duplicated + self.reordered + self.foreign
    }
}

impl Checker {
    pub fn new(senders: usize, messages: u64) -> Checker {
        Checker {
            streams: vec![Stream::default(); senders],
            messages,
            drop_epoch: 0,
            dropped_frames: 0,
            finished: if messages == 0 { senders } else { 0 },
            counts: Counts::default(),
            order: 0,
        }
    }

    /// Takes message `seq` of `sender`.
    pub fn message(&mut self, sender: usize, seq: u64) {
        let word = (sender as u64).rotate_right(16) ^ seq;
        self.order = (self.order.rotate_left(5) ^ word).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let Some(stream) = self.streams.get_mut(sender) else {
            self.counts.foreign += 1;
            return;
        };
        if seq >= self.messages {
            self.counts.foreign += 1;
            return;
        }
        if seq >= stream.next {
            if seq > stream.next {
                let hole = stream.next..seq;
                if stream.epoch != self.drop_epoch {
                    self.counts.skipped += hole.end - hole.start;
                } else {
                    stream.holes.push(hole);
                }
            }
            stream.next = seq + 1;
            stream.epoch = self.drop_epoch;
            self.counts.received += 1;
            if stream.next == self.messages {
                self.finished += 1;
            }
            return;
        }
        match stream.holes.iter().position(|h| h.contains(&seq)) {
            Some(at) => {
                let hole = stream.holes.swap_remove(at);
                stream.holes.extend(
                    [hole.start..seq, seq + 1..hole.end]
                        .into_iter()
                        .filter(|h| !h.is_empty()),
                );
                self.counts.reordered += 1;
                self.counts.received += 1;
            }
            None => self.counts.duplicated += 1,
        }
    }

    /// Takes `DROPPED <n>`: the next gap of every sender is explained.
    pub fn dropped(&mut self, n: u64) {
        self.dropped_frames += n;
        self.drop_epoch = self.drop_epoch.wrapping_add(1);
    }

    /// The next number expected from `sender` (how far its stream got).
    pub fn next(&self, sender: usize) -> u64 {
        self.streams.get(sender).map_or(0, |s| s.next)
    }

    /// The arrival order of everything taken so far, as one number: two
    /// receivers that saw the same messages in the same order agree on it.
    pub fn order(&self) -> u64 {
        self.order
    }

    /// Whether a `DROPPED` came since the checker was made.
    pub fn saw_dropped(&self) -> bool {
        self.drop_epoch != 0
    }

    /// Whether every sender's last message has been seen.
    pub fn is_complete(&self) -> bool {
        self.finished == self.streams.len()
    }

    /// The totals, counting whatever never came as lost (or skipped, when a
    /// `DROPPED` came after the sender's last message seen).
    pub fn counts(&self) -> Counts {
        let mut counts = self.counts;
        counts.dropped_frames = self.dropped_frames;
        for stream in &self.streams {
            counts.lost += stream.holes.iter().map(|h| h.end - h.start).sum::<u64>();
            let tail = self.messages - stream.next;
            if stream.epoch != self.drop_epoch {
                counts.skipped += tail;
            } else {
                counts.lost += tail;
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(senders: usize, messages: u64, seen: &[(usize, u64)]) -> (Counts, bool) {
        let mut checker = Checker::new(senders, messages);
        for &(sender, seq) in seen {
            checker.message(sender, seq);
        }
        (checker.counts(), checker.is_complete())
    }

    #[test]
    fn in_order_interleaved_is_clean_and_complete() {
        let (counts, complete) = run(2, 3, &[(0, 0), (1, 0), (1, 1), (0, 1), (0, 2), (1, 2)]);
        assert_eq!(
            counts,
            Counts {
                received: 6,
                ..Counts::default()
            }
        );
        assert!(complete);
    }

    #[test]
    fn a_gap_is_lost_and_a_missing_tail_too() {
        let (counts, complete) = run(2, 4, &[(0, 0), (0, 2), (0, 3), (1, 0), (1, 1)]);
        assert_eq!(counts.lost, 1 + 2);
        assert_eq!(counts.received, 5);
        assert!(!complete);
    }

    #[test]
    fn a_repeat_is_a_duplicate() {
        let (counts, _) = run(1, 3, &[(0, 0), (0, 1), (0, 1), (0, 0), (0, 2)]);
        assert_eq!(counts.duplicated, 2);
        assert_eq!(counts.received, 3);
        assert_eq!(counts.faults(), 2);
    }

    #[test]
    fn a_late_message_fills_its_hole_as_reordered() {
        let (counts, complete) = run(1, 5, &[(0, 0), (0, 3), (0, 1), (0, 4), (0, 2), (0, 2)]);
        assert_eq!(counts.reordered, 2);
        assert_eq!(counts.duplicated, 1);
        assert_eq!(counts.lost, 0);
        assert_eq!(counts.received, 5);
        assert!(complete);
    }

    #[test]
    fn a_gap_after_dropped_is_skipped_not_lost() {
        let mut checker = Checker::new(2, 10);
        checker.message(0, 0);
        checker.message(1, 0);
        checker.dropped(7);
        checker.message(0, 5);
        // Sender 1 never comes back: its tail is skipped too.
        for seq in 6..10 {
            checker.message(0, seq);
        }
        // A gap after the DROPPED was explained, a later one is not.
        let counts = checker.counts();
        assert_eq!(counts.skipped, 4 + 9);
        assert_eq!(counts.lost, 0);
        assert_eq!(counts.dropped_frames, 7);
        assert_eq!(counts.faults(), 0);
    }

    #[test]
    fn only_the_first_gap_after_dropped_is_explained() {
        let mut checker = Checker::new(1, 10);
        checker.message(0, 0);
        checker.dropped(2);
        checker.message(0, 3);
        checker.message(0, 6);
        checker.message(0, 9);
        let counts = checker.counts();
        assert_eq!(counts.skipped, 2);
        assert_eq!(counts.lost, 2 + 2);
    }

    #[test]
    fn unknown_senders_and_numbers_are_foreign() {
        let (counts, _) = run(1, 2, &[(0, 0), (3, 0), (0, 7), (0, 1)]);
        assert_eq!(counts.foreign, 2);
        assert_eq!(counts.received, 2);
    }

    #[test]
    fn the_order_digest_tells_interleavings_apart() {
        let digest = |seen: &[(usize, u64)]| {
            let mut checker = Checker::new(2, 2);
            for &(sender, seq) in seen {
                checker.message(sender, seq);
            }
            checker.order()
        };
        let a = digest(&[(0, 0), (1, 0), (0, 1), (1, 1)]);
        // Same per-sender order, another interleaving: not the same order.
        let b = digest(&[(0, 0), (0, 1), (1, 0), (1, 1)]);
        assert_eq!(a, digest(&[(0, 0), (1, 0), (0, 1), (1, 1)]));
        assert_ne!(a, b);
        assert_ne!(a, digest(&[(1, 0), (0, 0), (0, 1), (1, 1)]));
    }

    #[test]
    fn no_messages_means_complete_at_once() {
        assert!(Checker::new(3, 0).is_complete());
    }
}
