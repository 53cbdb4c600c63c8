//! The control channel between the coordinating process and its workers:
//! one command per line on the worker's stdin, one reply per command on its
//! stdout. Text, so a stuck run can be debugged by reading it.

use std::collections::HashMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;

use crate::check::Counts;

/// What a worker is told to do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Connect and log in every user, at most `concurrency` logins in
    /// flight; `start_ns` is when the coordinator said go.
    Connect {
        concurrency: usize,
        start_ns: u64,
        timeout_ms: u64,
    },
    /// Registration barrier round `round`: the worker that holds user 0
    /// broadcasts it (`send`); all wait until each of their users saw it.
    Sync {
        round: u32,
        send: bool,
        timeout_ms: u64,
    },
    /// Rooms: users `0..size * rooms` each `JOIN` room `id / size`; the
    /// others stay in the lobby only. The worker waits until every `JOIN`
    /// was answered. From then on, a run's senders are the first `senders`
    /// of each room (not of the lobby), and each room's members check that
    /// room's messages only.
    Join {
        size: u32,
        rooms: u32,
        timeout_ms: u64,
    },
    /// Get ready to check a run of `messages` from each of `senders`.
    /// Every worker is armed before any sender starts: a worker that
    /// learned of the run late would take its first messages for strays.
    Arm { senders: u32, messages: u64 },
    /// Users `0..senders` send `messages` each, at `rate` a second each
    /// (0: as fast as `window` allows); everyone checks what arrives.
    Run {
        senders: u32,
        messages: u64,
        rate: f64,
        window: u64,
        timeout_ms: u64,
    },
    /// Send the tally.
    Report,
}

impl Command {
    pub fn to_line(&self) -> String {
        match self {
            Command::Connect {
                concurrency,
                start_ns,
                timeout_ms,
            } => format!("connect {concurrency} {start_ns} {timeout_ms}\n"),
            Command::Sync {
                round,
                send,
                timeout_ms,
            } => format!("sync {round} {} {timeout_ms}\n", u8::from(*send)),
            Command::Join {
                size,
                rooms,
                timeout_ms,
            } => format!("join {size} {rooms} {timeout_ms}\n"),
            Command::Arm { senders, messages } => format!("arm {senders} {messages}\n"),
            Command::Run {
                senders,
                messages,
                rate,
                window,
                timeout_ms,
            } => format!("run {senders} {messages} {rate} {window} {timeout_ms}\n"),
            Command::Report => "report\n".to_owned(),
        }
    }

    pub fn parse(line: &str) -> Option<Command> {
        let mut words = line.split_whitespace();
        let verb = words.next()?;
        let mut next = || words.next();
        Some(match verb {
            "connect" => Command::Connect {
                concurrency: next()?.parse().ok()?,
                start_ns: next()?.parse().ok()?,
                timeout_ms: next()?.parse().ok()?,
            },
            "sync" => Command::Sync {
                round: next()?.parse().ok()?,
                send: next()? == "1",
                timeout_ms: next()?.parse().ok()?,
            },
            "join" => Command::Join {
                size: next()?.parse().ok()?,
                rooms: next()?.parse().ok()?,
                timeout_ms: next()?.parse().ok()?,
            },
            "arm" => Command::Arm {
                senders: next()?.parse().ok()?,
                messages: next()?.parse().ok()?,
            },
            "run" => Command::Run {
                senders: next()?.parse().ok()?,
                messages: next()?.parse().ok()?,
                rate: next()?.parse().ok()?,
                window: next()?.parse().ok()?,
                timeout_ms: next()?.parse().ok()?,
            },
            "report" => Command::Report,
            _ => return None,
        })
    }
}

/// A latency or completion-time histogram in microseconds, up to an hour.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid")
}

/// Everything a worker measured, in a form that adds up across workers.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Users logged in, refused as `server-full`, or failed otherwise.
    pub logged_in: u64,
    pub full: u64,
    pub failed: u64,
    /// Users that did not see every message of the run before the timeout.
    pub incomplete: u64,
    pub counts: Counts,
    /// When the first and the last bench message arrived.
    pub first_ns: u64,
    pub last_ns: u64,
    /// When the first and the last sender had written all its messages
    /// (into its socket: the kernel buffers hold much of a burst).
    pub written_first_ns: u64,
    pub written_last_ns: u64,
    /// When the first and the last sender got the `PONG` to the `PING` it
    /// wrote after its messages: by then the server had handled all of them
    /// (and the sender had read what was queued for it before the `PONG`).
    /// A server that slows its senders holds them back at least this long.
    pub handled_first_ns: u64,
    pub handled_last_ns: u64,
    /// Other users each user learned of (`NAMES` + `JOIN`, or arrivals).
    pub known_sum: u64,
    pub known_min: u64,
    pub known_max: u64,
    /// Send-to-receive time of every bench message, µs.
    pub latency: Histogram<u64>,
    /// Per user: connect start to the last arrival it saw, µs.
    pub membership: Histogram<u64>,
    /// CPU the workers spent since the run was armed, ns: what the bench
    /// itself took from the cores it shares with the server.
    pub bench_cpu_ns: u64,
    /// The first few error lines, to show what went wrong.
    pub errors: Vec<String>,
    /// The arrival orders of the run's messages (see
    /// [`crate::check::Checker::order`]) and how many receivers saw each,
    /// over the receivers that got all of the run without a `DROPPED`.
    /// One entry when the server keeps one total order.
    pub orders: Vec<(u64, u64)>,
    /// Receivers whose order did not fit in `orders` (already too many).
    pub orders_other: u64,
    /// With rooms, each room has its own order, the same for its members:
    /// rooms whose members (all held by one worker) saw more than one.
    pub rooms_disordered: u64,
    /// The orders of the rooms a worker holds only some members of (its
    /// first and last): (room, order, receivers), compared across workers.
    pub room_orders: Vec<(u32, u64, u64)>,
}

impl Default for Tally {
    fn default() -> Tally {
        Tally {
            logged_in: 0,
            full: 0,
            failed: 0,
            incomplete: 0,
            counts: Counts::default(),
            first_ns: u64::MAX,
            last_ns: 0,
            written_first_ns: u64::MAX,
            written_last_ns: 0,
            handled_first_ns: u64::MAX,
            handled_last_ns: 0,
            known_sum: 0,
            known_min: u64::MAX,
            known_max: 0,
            latency: histogram(),
            membership: histogram(),
            bench_cpu_ns: 0,
            errors: Vec::new(),
            orders: Vec::new(),
            orders_other: 0,
            rooms_disordered: 0,
            room_orders: Vec::new(),
        }
    }
}

/// Errors a tally carries at most: enough to diagnose, bounded.
pub const MAX_ERRORS: usize = 5;
/// Distinct arrival orders a tally carries at most; two already mean the
/// total order broke.
pub const MAX_ORDERS: usize = 8;

impl Tally {
    pub fn add(&mut self, other: &Tally) {
        self.logged_in += other.logged_in;
        self.full += other.full;
        self.failed += other.failed;
        self.incomplete += other.incomplete;
        self.counts.add(&other.counts);
        self.first_ns = self.first_ns.min(other.first_ns);
        self.last_ns = self.last_ns.max(other.last_ns);
        self.written_first_ns = self.written_first_ns.min(other.written_first_ns);
        self.written_last_ns = self.written_last_ns.max(other.written_last_ns);
        self.handled_first_ns = self.handled_first_ns.min(other.handled_first_ns);
        self.handled_last_ns = self.handled_last_ns.max(other.handled_last_ns);
        self.known_sum += other.known_sum;
        self.known_min = self.known_min.min(other.known_min);
        self.known_max = self.known_max.max(other.known_max);
        self.bench_cpu_ns += other.bench_cpu_ns;
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.membership.add(&other.membership);
        for e in &other.errors {
            if self.errors.len() < MAX_ERRORS {
                self.errors.push(e.clone());
            }
        }
        for &(order, receivers) in &other.orders {
            self.add_order(order, receivers);
        }
        self.orders_other += other.orders_other;
        self.rooms_disordered += other.rooms_disordered;
        for &(room, order, receivers) in &other.room_orders {
            self.add_room_order(room, order, receivers);
        }
    }

    /// Counts `receivers` more members of `room` that saw it in `order`.
    pub fn add_room_order(&mut self, room: u32, order: u64, receivers: u64) {
        match self
            .room_orders
            .iter_mut()
            .find(|(r, o, _)| (*r, *o) == (room, order))
        {
            Some((_, _, n)) => *n += receivers,
            None => self.room_orders.push((room, order, receivers)),
        }
    }

    /// Rooms whose members did not all see the room in one order.
    pub fn disordered_rooms(&self) -> u64 {
        let mut rooms: Vec<u32> = self.room_orders.iter().map(|r| r.0).collect();
        rooms.sort_unstable();
        let split = rooms.chunk_by(|a, b| a == b).filter(|c| c.len() > 1);
        self.rooms_disordered + split.count() as u64
    }

    /// Counts `receivers` more receivers that saw the run in `order`.
    pub fn add_order(&mut self, order: u64, receivers: u64) {
        if let Some((_, n)) = self.orders.iter_mut().find(|(o, _)| *o == order) {
            *n += receivers;
        } else if self.orders.len() < MAX_ORDERS {
            self.orders.push((order, receivers));
        } else {
            self.orders_other += receivers;
        }
    }

    /// How many different arrival orders the receivers saw (at least).
    pub fn distinct_orders(&self) -> usize {
        self.orders.len() + usize::from(self.orders_other > 0)
    }

    /// The tally as lines: `tally k=v …`, `lat`/`mem` buckets, `error`s, `end`.
    pub fn to_lines(&self) -> String {
        let c = &self.counts;
        let mut out = format!(
            "tally logged_in={} full={} failed={} incomplete={} received={} lost={} skipped={} \
             duplicated={} reordered={} foreign={} dropped_frames={} first_ns={} last_ns={} \
             written_first_ns={} written_last_ns={} handled_first_ns={} handled_last_ns={} \
             known_sum={} known_min={} known_max={} bench_cpu_ns={} orders_other={} \
             rooms_disordered={}\n",
            self.logged_in,
            self.full,
            self.failed,
            self.incomplete,
            c.received,
            c.lost,
            c.skipped,
            c.duplicated,
            c.reordered,
            c.foreign,
            c.dropped_frames,
            self.first_ns,
            self.last_ns,
            self.written_first_ns,
            self.written_last_ns,
            self.handled_first_ns,
            self.handled_last_ns,
            self.known_sum,
            self.known_min,
            self.known_max,
            self.bench_cpu_ns,
            self.orders_other,
            self.rooms_disordered
        );
        for (tag, h) in [("lat", &self.latency), ("mem", &self.membership)] {
            for v in h.iter_recorded() {
                let _ = writeln!(
                    out,
                    "{tag} {} {}",
                    v.value_iterated_to(),
                    v.count_at_value()
                );
            }
        }
        for (order, receivers) in &self.orders {
            let _ = writeln!(out, "order {order} {receivers}");
        }
        for (room, order, receivers) in &self.room_orders {
            let _ = writeln!(out, "room_order {room} {order} {receivers}");
        }
        for e in &self.errors {
            let _ = writeln!(out, "error {}", e.replace('\n', " "));
        }
        out.push_str("end\n");
        out
    }

    /// Reads one line of [`Tally::to_lines`]; `Ok(true)` at `end`.
    pub fn read_line(&mut self, line: &str) -> Result<bool, String> {
        let (tag, rest) = line.split_once(' ').unwrap_or((line, ""));
        match tag {
            "end" => return Ok(true),
            "error" => self.errors.push(rest.to_owned()),
            "order" => {
                let (order, receivers) = rest
                    .split_once(' ')
                    .and_then(|(o, n)| Some((o.parse().ok()?, n.parse().ok()?)))
                    .ok_or_else(|| format!("bad order line {line:?}"))?;
                self.add_order(order, receivers);
            }
            "room_order" => {
                let mut words = rest.split(' ').map(str::parse::<u64>);
                let mut next = || words.next().and_then(Result::ok);
                let (room, order, receivers) = (next(), next(), next());
                let (Some(room), Some(order), Some(receivers)) = (room, order, receivers) else {
                    return Err(format!("bad room order line {line:?}"));
                };
                let room = u32::try_from(room).map_err(|_| format!("bad room in {line:?}"))?;
                self.add_room_order(room, order, receivers);
            }
            "lat" | "mem" => {
                let (value, count) = rest
                    .split_once(' ')
                    .and_then(|(v, c)| Some((v.parse().ok()?, c.parse().ok()?)))
                    .ok_or_else(|| format!("bad bucket line {line:?}"))?;
                let h = if tag == "lat" {
                    &mut self.latency
                } else {
                    &mut self.membership
                };
                h.saturating_record_n(value, count);
            }
            "tally" => {
                let fields: HashMap<&str, u64> = rest
                    .split_whitespace()
                    .filter_map(|kv| {
                        let (k, v) = kv.split_once('=')?;
                        Some((k, v.parse().ok()?))
                    })
                    .collect();
                let get = |k: &str| {
                    fields
                        .get(k)
                        .copied()
                        .ok_or_else(|| format!("tally without {k}"))
                };
                self.logged_in = get("logged_in")?;
                self.full = get("full")?;
                self.failed = get("failed")?;
                self.incomplete = get("incomplete")?;
                self.counts = Counts {
                    received: get("received")?,
                    lost: get("lost")?,
                    skipped: get("skipped")?,
                    duplicated: get("duplicated")?,
                    reordered: get("reordered")?,
                    foreign: get("foreign")?,
                    dropped_frames: get("dropped_frames")?,
                };
                self.first_ns = get("first_ns")?;
                self.last_ns = get("last_ns")?;
                self.written_first_ns = get("written_first_ns")?;
                self.written_last_ns = get("written_last_ns")?;
                self.handled_first_ns = get("handled_first_ns")?;
                self.handled_last_ns = get("handled_last_ns")?;
                self.known_sum = get("known_sum")?;
                self.known_min = get("known_min")?;
                self.known_max = get("known_max")?;
                self.bench_cpu_ns = get("bench_cpu_ns")?;
                self.orders_other = get("orders_other")?;
                self.rooms_disordered = get("rooms_disordered")?;
            }
            _ => return Err(format!("unexpected line from a worker: {line:?}")),
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip() {
        for command in [
            Command::Connect {
                concurrency: 10,
                start_ns: 99,
                timeout_ms: 5,
            },
            Command::Sync {
                round: 2,
                send: true,
                timeout_ms: 7,
            },
            Command::Join {
                size: 10,
                rooms: 1000,
                timeout_ms: 9,
            },
            Command::Arm {
                senders: 3,
                messages: 4,
            },
            Command::Run {
                senders: 10,
                messages: 2000,
                rate: 50.5,
                window: 64,
                timeout_ms: 1000,
            },
            Command::Report,
        ] {
            assert_eq!(Command::parse(&command.to_line()), Some(command));
        }
    }

    #[test]
    fn tallies_round_trip() {
        let mut tally = Tally {
            logged_in: 3,
            first_ns: 10,
            last_ns: 20,
            written_last_ns: 15,
            handled_first_ns: 17,
            known_sum: 6,
            known_min: 2,
            known_max: 2,
            errors: vec!["ERROR name-taken".into()],
            orders: vec![(u64::MAX, 2), (7, 1)],
            rooms_disordered: 1,
            room_orders: vec![(4, u64::MAX, 3), (4, 5, 1), (9, 6, 2)],
            ..Tally::default()
        };
        tally.counts.received = 9;
        tally.latency.record(150).unwrap();
        tally.latency.record(150).unwrap();
        tally.membership.record(7).unwrap();
        let mut read = Tally::default();
        for line in tally.to_lines().lines() {
            if read.read_line(line).unwrap() {
                break;
            }
        }
        assert_eq!(read.to_lines(), tally.to_lines());
        assert_eq!(read.latency.len(), 2);
        assert_eq!(read.distinct_orders(), 2);
        assert_eq!(read.disordered_rooms(), 2);
    }

    #[test]
    fn a_room_split_between_workers_is_ordered_if_both_halves_agree() {
        let mut a = Tally::default();
        a.add_room_order(7, 42, 6);
        let mut b = Tally::default();
        b.add_room_order(7, 42, 4);
        b.add_room_order(8, 1, 10);
        let mut total = Tally::default();
        total.add(&a);
        total.add(&b);
        assert_eq!(total.disordered_rooms(), 0);
        assert_eq!(total.room_orders[0], (7, 42, 10));
        let mut c = Tally::default();
        c.add_room_order(8, 2, 1);
        total.add(&c);
        assert_eq!(total.disordered_rooms(), 1);
    }

    #[test]
    fn orders_add_up_and_stay_bounded() {
        let mut tally = Tally::default();
        for order in 0..MAX_ORDERS as u64 + 3 {
            tally.add_order(order, 1);
        }
        tally.add_order(0, 4);
        assert_eq!(tally.orders[0], (0, 5));
        assert_eq!(tally.orders.len(), MAX_ORDERS);
        assert_eq!(tally.orders_other, 3);
        assert_eq!(tally.distinct_orders(), MAX_ORDERS + 1);
    }
}
