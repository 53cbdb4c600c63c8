//! The requests of version 2 as script calls, and their answers read back.
//!
//! Rooms, `TELL`, topics and history live in Redis and change only inside
//! scripts that also append the frame to the stream, so a room's state and
//! its frames have one order. A [`Call`] is one such script call, built
//! here and carried to Redis by the driver in its next round trip; the
//! functions below turn the answers into frames. Both halves are pure, so
//! they are tested without Redis.

use bytes::{Bytes, BytesMut};
use chat_protocol::{ErrorCode, ServerFrame, Timestamp};
use redis::{Script, Value};

use super::pipeline::Reply;
use super::scripts::{self, Scripts, STREAM_MAXLEN};
use crate::hub::{Limits, Membership, Receipt};
use crate::limits::Key;

/// One script call: which script, its keys, and its arguments after the
/// epoch, which the driver adds.
pub(crate) struct Call {
    pub(super) script: fn(&Scripts) -> &Script,
    pub(super) keys: Vec<String>,
    pub(super) args: Vec<String>,
}

impl Call {
    fn new(script: fn(&Scripts) -> &Script, keys: &[&str]) -> Call {
        let mut all = vec![scripts::EPOCH.to_owned()];
        all.extend(keys.iter().map(|k| k.to_string()));
        Call {
            script,
            keys: all,
            args: Vec::new(),
        }
    }

    fn arg(mut self, arg: impl ToString) -> Call {
        self.args.push(arg.to_string());
        self
    }

    /// A `MSG` (`room` empty) or a `SAY` (`room` its key), kept in the
    /// history list `history` up to `--history` records, all history
    /// within `--history-memory`.
    pub(crate) fn say(
        frame: &Bytes,
        record: String,
        history: &str,
        room: &str,
        limits: &Limits,
    ) -> Call {
        Call::new(|s| &s.say, &[scripts::STREAM, history])
            .arg(line(frame))
            .arg(record)
            .arg(STREAM_MAXLEN)
            .arg(limits.history)
            .arg(room)
            .arg(limits.history_memory)
    }

    /// A user of `node` enters a room, within `--max-rooms` and, for the
    /// joiner's address, `--max-rooms-per-ip`; `token` marks its `JOIN` in
    /// the stream.
    pub(crate) fn join(room: &Joining<'_>, node: &str, limits: &Limits, token: &str) -> Call {
        Call::new(
            |s| &s.join,
            &[scripts::USERS, scripts::ROOMS, scripts::STREAM],
        )
        .arg(room.key)
        .arg(room.spelled)
        .arg(room.user_key)
        .arg(room.user)
        .arg(node)
        .arg(limits.max_rooms)
        .arg(token)
        .arg(STREAM_MAXLEN)
        .arg(address(room.address))
        .arg(limits.max_rooms_per_ip)
    }

    /// A user parts a room, announced by `frame`.
    pub(crate) fn part(room: &str, user_key: &str, frame: &Bytes) -> Call {
        Call::new(|s| &s.part, &[scripts::ROOMS, scripts::STREAM])
            .arg(room)
            .arg(user_key)
            .arg(line(frame))
            .arg(STREAM_MAXLEN)
    }

    pub(crate) fn tell(from: &str, to_key: &str, text: &str) -> Call {
        Call::new(|s| &s.tell, &[scripts::USERS, scripts::STREAM])
            .arg(from)
            .arg(to_key)
            .arg(text)
            .arg(STREAM_MAXLEN)
    }

    /// A topic set by `setter`, announced by `frame`.
    pub(crate) fn topic(room: &str, setter: &str, text: &str, frame: &Bytes) -> Call {
        Call::new(|s| &s.topic, &[scripts::ROOMS, scripts::STREAM])
            .arg(room)
            .arg(format!("{setter} {text}"))
            .arg(line(frame))
            .arg(STREAM_MAXLEN)
    }

    pub(crate) fn who(room: &str) -> Call {
        Call::new(|s| &s.who, &[scripts::ROOMS]).arg(room)
    }

    pub(crate) fn rooms() -> Call {
        Call::new(|s| &s.rooms, &[scripts::ROOMS])
    }

    /// The last `count` records of the history list `history`.
    pub(crate) fn history(history: &str, count: u64) -> Call {
        Call::new(|s| &s.history, &[history]).arg(count)
    }

    /// This node's users put back in their rooms, each membership counted
    /// under its address again.
    pub(crate) fn enroll(memberships: &[Membership]) -> Call {
        let mut call = Call::new(|s| &s.enroll, &[scripts::ROOMS]);
        for membership in memberships {
            call = call
                .arg(&membership.room_key)
                .arg(&membership.room)
                .arg(&membership.user_key)
                .arg(&membership.user)
                .arg(address(membership.address));
        }
        call
    }

    /// The users in `users` (key, name) that nobody registered again are
    /// announced gone, each once.
    pub(crate) fn bury<'a>(users: impl IntoIterator<Item = (&'a str, &'a str)>) -> Call {
        let mut call = Call::new(
            |s| &s.bury,
            &[scripts::USERS, scripts::STREAM, scripts::BURIED],
        )
        .arg(STREAM_MAXLEN);
        for (key, name) in users {
            call = call.arg(key).arg(name);
        }
        call
    }
}

/// The room a user enters, as the join script needs it.
pub(crate) struct Joining<'a> {
    pub key: &'a str,
    pub spelled: &'a str,
    pub user_key: &'a str,
    pub user: &'a str,
    /// What the joiner's memberships count under (`--max-rooms-per-ip`),
    /// if they count: [`Limits::rooms_address`].
    pub address: Option<Key>,
}

/// An address as the scripts take it: `203.0.113.5`, `2001:db8::/64`, or
/// empty for a user whose memberships do not count.
fn address(key: Option<Key>) -> String {
    key.map(|key| key.to_string()).unwrap_or_default()
}

/// A frame without its `\n`, as the stream keeps it.
fn line(frame: &Bytes) -> &str {
    let bytes = &frame[..frame.len().saturating_sub(1)];
    // Frames are built from checked text.
    std::str::from_utf8(bytes).unwrap_or_default()
}

/// A history record: `<time> <from> <text>`.
pub(crate) fn record(from: &str, text: &str) -> String {
    format!("{} {from} {text}", Timestamp::now())
}

/// A reading script's answer: the stream's last entry when it ran, and
/// what it read.
fn read(reply: Reply) -> Result<(Receipt, Vec<String>), ErrorCode> {
    let Value::Array(values) = reply.0 else {
        return Err(ErrorCode::Unavailable);
    };
    let mut values = values.into_iter();
    let last = values
        .next()
        .and_then(|id| scripts::stream_seq(&id))
        .ok_or(ErrorCode::Unavailable)?;
    let read = values
        .map(|v| match v {
            Value::Int(n) => Ok(n.to_string()),
            v => redis::from_redis_value::<String>(v).map_err(|_| ErrorCode::Unavailable),
        })
        .collect::<Result<_, _>>()?;
    Ok((Receipt(last), read))
}

/// A reply read from Redis, with the stream entry it follows.
pub(crate) type Placed = (Receipt, Bytes);

/// `NAMES <room> …` from the who script; `asked` names a room that does
/// not exist.
pub(crate) fn names(reply: Reply, asked: &str) -> Result<Placed, ErrorCode> {
    let (last, values) = read(reply)?;
    let Some((spelled, pairs)) = values.split_first() else {
        return Err(ErrorCode::Unavailable);
    };
    let room = if spelled.is_empty() { asked } else { spelled };
    let mut members: Vec<(&str, &str)> = pairs
        .chunks_exact(2)
        .map(|kv| (kv[0].as_str(), kv[1].as_str()))
        .collect();
    members.sort_unstable();
    let names = members.iter().map(|(_, name)| *name);
    Ok((last, ServerFrame::room_names_bytes(room, names)))
}

/// `ROOMS …` from the rooms script, sorted like names.
pub(crate) fn rooms(reply: Reply) -> Result<Placed, ErrorCode> {
    let (last, values) = read(reply)?;
    let mut listed: Vec<(&str, &str, u64)> = values
        .chunks_exact(3)
        .filter_map(|r| Some((r[0].as_str(), r[1].as_str(), r[2].parse().ok()?)))
        .collect();
    listed.sort_unstable();
    let rooms = listed
        .into_iter()
        .map(|(_, name, count)| (name.to_owned(), count))
        .collect();
    Ok((last, ServerFrame::Rooms(rooms).to_bytes()))
}

/// A `HISTORY` reply, all its frames at once, from the history script's
/// records; a record that does not read back is left out.
pub(crate) fn history(reply: Reply, room: Option<&str>) -> Result<Placed, ErrorCode> {
    let (last, records) = read(reply)?;
    let said: Vec<ServerFrame> = records
        .iter()
        .filter_map(|record| {
            let (time, rest) = record.split_once(' ')?;
            let (from, text) = rest.split_once(' ')?;
            Some(ServerFrame::Hist {
                room: room.map(str::to_owned),
                time: time.parse().ok()?,
                from: from.to_owned(),
                text: text.to_owned(),
            })
        })
        .collect();
    let mut out = BytesMut::new();
    ServerFrame::History {
        room: room.map(str::to_owned),
        count: said.len() as u64,
    }
    .write_to(&mut out);
    for frame in &said {
        frame.write_to(&mut out);
    }
    Ok((last, out.freeze()))
}

/// An empty `HISTORY` reply, for a server that keeps none.
pub(crate) fn no_history(room: Option<&str>) -> Bytes {
    ServerFrame::History {
        room: room.map(str::to_owned),
        count: 0,
    }
    .to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(resp: &str) -> Reply {
        Reply(redis::parse_redis_value(resp.as_bytes()).unwrap())
    }

    /// An array reply of bulk strings.
    fn bulks(items: &[&str]) -> Reply {
        Reply(Value::Array(
            items
                .iter()
                .map(|s| Value::BulkString(s.as_bytes().to_vec()))
                .collect(),
        ))
    }

    fn text(placed: Result<Placed, ErrorCode>) -> String {
        let (last, bytes) = placed.unwrap();
        assert_eq!(last, Receipt(7));
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn a_call_names_the_epoch_first_and_frames_without_their_newline() {
        let call = Call::part("#r", "bob", &Bytes::from_static(b"LEAVE #r bob bye\n"));
        assert_eq!(call.keys, [scripts::EPOCH, scripts::ROOMS, scripts::STREAM]);
        assert_eq!(call.args[..3], ["#r", "bob", "LEAVE #r bob bye"]);
    }

    #[test]
    fn join_outcomes_are_codes() {
        assert_eq!(Reply(Value::Int(1)).joined(), Ok(()));
        assert_eq!(Reply(Value::Int(0)).joined(), Err(ErrorCode::AlreadyInRoom));
        assert_eq!(Reply(Value::Int(-4)).joined(), Err(ErrorCode::TooManyRooms));
        assert_eq!(Reply(Value::Int(-5)).joined(), Err(ErrorCode::TooManyRooms));
        for not_now in [-1, -3] {
            assert_eq!(
                Reply(Value::Int(not_now)).joined(),
                Err(ErrorCode::Unavailable)
            );
        }
    }

    #[test]
    fn a_tell_to_nobody_is_no_such_user() {
        assert_eq!(Reply(Value::Int(0)).told(), Err(ErrorCode::NoSuchUser));
        assert_eq!(wire("$4\r\n0-42\r\n").told(), Ok(Receipt(42)));
        assert_eq!(Reply(Value::Int(-1)).told(), Err(ErrorCode::Unavailable));
    }

    #[test]
    fn names_are_sorted_by_key_and_keep_the_rooms_spelling() {
        let reply = bulks(&["0-7", "#Rust", "bob", "Bob", "alice", "alice"]);
        assert_eq!(text(names(reply, "#rust")), "NAMES #Rust alice Bob\n");
        let nobody = bulks(&["0-7", ""]);
        assert_eq!(text(names(nobody, "#gone")), "NAMES #gone\n");
        assert!(names(Reply(Value::Int(-1)), "#r").is_err());
        assert!(names(bulks(&["not an id", ""]), "#r").is_err());
    }

    #[test]
    fn rooms_are_sorted_by_key_with_their_counts() {
        let reply =
            wire("*7\r\n$3\r\n0-7\r\n$1\r\nb\r\n$2\r\n#B\r\n:2\r\n$1\r\na\r\n$2\r\n#a\r\n:1\r\n");
        assert_eq!(text(rooms(reply)), "ROOMS #a 1 #B 2\n");
        assert_eq!(text(rooms(bulks(&["0-7"]))), "ROOMS\n");
    }

    #[test]
    fn history_records_read_back_as_hist_frames() {
        let reply = bulks(&[
            "0-7",
            "2026-11-29T12:00:00.123Z bob hi  there",
            "broken!",
            "2026-11-29T12:00:01.000Z amy x",
        ]);
        assert_eq!(
            text(history(reply, Some("#r"))),
            "HISTORY #r 2\nHIST #r 2026-11-29T12:00:00.123Z bob hi  there\n\
             HIST #r 2026-11-29T12:00:01.000Z amy x\n"
        );
        assert_eq!(text(history(bulks(&["0-7"]), None)), "HISTORY 0\n");
        assert_eq!(&no_history(None)[..], b"HISTORY 0\n");
    }

    #[test]
    fn a_record_starts_with_the_time() {
        let said = record("bob", "hi there");
        let (time, rest) = said.split_once(' ').unwrap();
        assert!(time.parse::<Timestamp>().is_ok());
        assert_eq!(rest, "bob hi there");
    }

    /// The scripts count a record as what follows its time, less the one
    /// space between sender and text: a single process's rule.
    #[test]
    fn a_record_counts_like_a_message_in_a_single_process() {
        for (from, text) in [("bob", "hi there"), ("Zoë", "  ü  "), ("a", "x")] {
            let said = record(from, text);
            let first = said.find(' ').unwrap() + 1;
            assert_eq!(
                said.len() - first - 1,
                crate::hub::room::HistoryMemory::bytes_of(from, text)
            );
        }
    }

    #[test]
    fn a_join_carries_the_address_it_counts_under_and_its_budget() {
        let limits = Limits {
            max_rooms: 10,
            max_rooms_per_user: 5,
            max_rooms_per_ip: 7,
            limits_on_loopback: false,
            history: 100,
            history_memory: 4096,
        };
        let call = |peer: [u8; 4]| {
            let joining = Joining {
                key: "#r",
                spelled: "#R",
                user_key: "bob",
                user: "Bob",
                address: limits.rooms_address(std::net::IpAddr::from(peer)),
            };
            Call::join(&joining, "node-a", &limits, "node-a:1").args
        };
        let counted = call([203, 0, 113, 5]);
        assert_eq!(counted[..5], ["#r", "#R", "bob", "Bob", "node-a"]);
        assert_eq!(
            counted[5..],
            ["10", "node-a:1", "100000", "203.0.113.5", "7"]
        );
        assert_eq!(call([127, 0, 0, 2])[8], "", "loopback is spared");
        let frame = Bytes::from_static(b"MSG bob hi\n");
        let say = Call::say(&frame, record("bob", "hi"), "chat:history", "", &limits);
        assert_eq!(say.args[3..], ["100", "", "4096"]);
    }
}
