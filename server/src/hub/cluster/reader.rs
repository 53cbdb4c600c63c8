//! The reader: follows the stream and hands each entry to the room.
//!
//! It has a connection of its own, because a blocking `XREAD` would hold up
//! every command behind it on a shared one. It reads from the last entry it
//! delivered, so after an outage it resumes exactly where it stopped; the
//! room sees a gap in entry numbers where the stream no longer holds them.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use tokio::sync::mpsc;
use tracing::debug;

use super::scripts::{self, stream_seq};
use crate::metrics;

/// Entries asked for per read.
const READ_COUNT: usize = 1024;
/// How long one `XREAD` blocks on an idle stream.
const BLOCK: Duration = Duration::from_millis(1000);
/// Pause before reconnecting or retrying a snapshot.
const RETRY: Duration = Duration::from_millis(100);

/// What the reader tells the room.
pub(crate) enum Delivery {
    /// Where reading starts: everyone logged in as of entry `position`.
    Snapshot { users: Vec<Arc<str>>, position: u64 },
    /// Redis lost its data: the stream starts again from its first entry.
    Restart,
    /// Entries in stream order.
    Entries(Vec<Entry>),
}

/// One broadcast frame from the stream.
pub(crate) struct Entry {
    /// Its number in the stream's order.
    pub seq: u64,
    /// The frame, with its `\n`, ready for the inboxes.
    pub frame: Bytes,
    /// The token of the login or room join that appended a `JOIN`.
    pub token: Option<String>,
    /// On a room's `JOIN`: what the joiner is owed at that point, the
    /// members (names separated by spaces) and the topic (`<setter> <text>`).
    pub names: Option<String>,
    pub topic: Option<String>,
}

pub(crate) async fn run(
    client: redis::Client,
    deliveries: mpsc::Sender<Delivery>,
    timeout: Duration,
) {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(BLOCK + timeout));
    let snapshot = scripts::snapshot();
    let mut epoch: Option<String> = None;
    let mut position = 0u64;
    let mut conn: Option<MultiplexedConnection> = None;
    loop {
        let Some(link) = &mut conn else {
            match client
                .get_multiplexed_async_connection_with_config(&config)
                .await
            {
                Ok(mut link) => {
                    let view: redis::RedisResult<(Option<String>, i64, Vec<String>, String)> =
                        snapshot
                            .key(scripts::EPOCH)
                            .key(scripts::USERS)
                            .key(scripts::STREAM)
                            .key(scripts::SETTLE)
                            .invoke_async(&mut link)
                            .await;
                    match view {
                        // No epoch yet (the driver creates it), or survivors
                        // still registering: the picture is not complete.
                        Ok((None, ..)) => {}
                        Ok((Some(current), settling, users, last)) => match &epoch {
                            None if settling == 1 => {}
                            None => {
                                position = scripts::seq_of_id(&last).unwrap_or(0);
                                let users = users
                                    .iter()
                                    .filter_map(|owner| scripts::held_name(owner).map(Arc::from))
                                    .collect();
                                if deliveries
                                    .send(Delivery::Snapshot { users, position })
                                    .await
                                    .is_err()
                                {
                                    return;
                                }
                                epoch = Some(current);
                                conn = Some(link);
                                continue;
                            }
                            Some(known) if *known != current => {
                                position = 0;
                                metrics::bus_stream_restarted();
                                if deliveries.send(Delivery::Restart).await.is_err() {
                                    return;
                                }
                                epoch = Some(current);
                                conn = Some(link);
                                continue;
                            }
                            Some(_) => {
                                conn = Some(link);
                                continue;
                            }
                        },
                        Err(e) => debug!(error = %e, "stream snapshot failed"),
                    }
                }
                Err(e) => debug!(error = %e, "stream reader cannot connect"),
            }
            tokio::time::sleep(RETRY).await;
            continue;
        };
        let read: redis::RedisResult<Value> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(scripts::STREAM)
            .arg(format!("0-{position}"))
            .query_async(link)
            .await;
        match read {
            Ok(value) => {
                let entries = parse_entries(value);
                if let Some(last) = entries.last() {
                    position = last.seq;
                    metrics::bus_read(position);
                    if deliveries.send(Delivery::Entries(entries)).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                debug!(error = %e, "stream read failed");
                conn = None;
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// The entries of an `XREAD` reply on one stream (nil when it timed out).
fn parse_entries(reply: Value) -> Vec<Entry> {
    let Value::Array(streams) = reply else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for stream in streams {
        let Value::Array(mut key_and_entries) = stream else {
            continue;
        };
        let Some(Value::Array(entries)) = key_and_entries.pop() else {
            continue;
        };
        for entry in entries {
            let Value::Array(mut id_and_fields) = entry else {
                continue;
            };
            let (Some(Value::Array(fields)), Some(id)) = (id_and_fields.pop(), id_and_fields.pop())
            else {
                continue;
            };
            let Some(seq) = stream_seq(&id) else { continue };
            let mut frame = None;
            let (mut token, mut names, mut topic) = (None, None, None);
            let mut fields = fields.into_iter();
            while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
                let (Value::BulkString(name), Value::BulkString(value)) = (name, value) else {
                    continue;
                };
                match name.as_slice() {
                    b"f" => {
                        let mut line = BytesMut::with_capacity(value.len() + 1);
                        line.put_slice(&value);
                        line.put_u8(b'\n');
                        frame = Some(line.freeze());
                    }
                    b"t" => token = String::from_utf8(value).ok(),
                    b"n" => names = String::from_utf8(value).ok(),
                    b"p" => topic = String::from_utf8(value).ok(),
                    _ => {}
                }
            }
            if let Some(frame) = frame {
                out.push(Entry {
                    seq,
                    frame,
                    token,
                    names,
                    topic,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn entry(id: &str, fields: &[&str]) -> Value {
        Value::Array(vec![
            bulk(id),
            Value::Array(fields.iter().map(|f| bulk(f)).collect()),
        ])
    }

    fn xread(entries: Vec<Value>) -> Value {
        Value::Array(vec![Value::Array(vec![
            bulk(scripts::STREAM),
            Value::Array(entries),
        ])])
    }

    #[test]
    fn a_timed_out_read_has_no_entries() {
        assert!(parse_entries(Value::Nil).is_empty());
    }

    #[test]
    fn entries_come_with_their_number_frame_and_token() {
        let reply = xread(vec![
            entry("0-7", &["f", "MSG bob hi"]),
            entry("0-9", &["f", "JOIN amy", "t", "node-a:3"]),
        ]);
        let entries = parse_entries(reply);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].seq, 7);
        assert_eq!(&entries[0].frame[..], b"MSG bob hi\n");
        assert_eq!(entries[0].token, None);
        assert_eq!(entries[1].seq, 9);
        assert_eq!(&entries[1].frame[..], b"JOIN amy\n");
        assert_eq!(entries[1].token.as_deref(), Some("node-a:3"));
        assert_eq!(entries[1].names, None);
    }

    #[test]
    fn a_rooms_join_carries_its_members_and_topic() {
        let reply = xread(vec![entry(
            "0-4",
            &[
                "f",
                "JOIN #r amy",
                "t",
                "node-a:5",
                "n",
                "amy Bob",
                "p",
                "bob a topic",
            ],
        )]);
        let entries = parse_entries(reply);
        assert_eq!(&entries[0].frame[..], b"JOIN #r amy\n");
        assert_eq!(entries[0].names.as_deref(), Some("amy Bob"));
        assert_eq!(entries[0].topic.as_deref(), Some("bob a topic"));
    }

    #[test]
    fn entries_without_a_frame_or_a_number_are_skipped() {
        let reply = xread(vec![
            entry("0-1", &["t", "node-a:1"]),
            entry("5-2", &["f", "MSG bob hi"]),
            Value::Int(3),
            entry("0-3", &["x", "y", "f", "MSG bob ok", "odd"]),
        ]);
        let entries = parse_entries(reply);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].seq, 3);
        assert_eq!(&entries[0].frame[..], b"MSG bob ok\n");
    }
}
