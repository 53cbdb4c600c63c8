//! `HISTORY` answers as a client reads them: their shape checked, their
//! times read independently of the server's own code.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::Client;

/// Milliseconds since 1970 by this machine's clock.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// Reads `2026-11-29T12:00:00.123Z` exactly (UTC, RFC 3339, milliseconds)
/// as milliseconds since 1970; `None` for any other shape.
pub fn parse_time(time: &str) -> Option<u64> {
    let b = time.as_bytes();
    if b.len() != 24 {
        return None;
    }
    for (i, &c) in b.iter().enumerate() {
        let ok = match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'.',
            23 => c == b'Z',
            _ => c.is_ascii_digit(),
        };
        if !ok {
            return None;
        }
    }
    let num = |from: usize, to: usize| time[from..to].parse::<i64>().unwrap();
    let (y, m, d) = (num(0, 4), num(5, 7), num(8, 10));
    let (hh, mm, ss, ms) = (num(11, 13), num(14, 16), num(17, 19), num(20, 23));
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((((days * 24 + hh) * 60 + mm) * 60 + ss) as u64 * 1000 + ms as u64)
}

/// One `HIST` line split into (time, from, text) after checking its prefix
/// (`HIST ` or `HIST <room> `).
pub fn hist<'a>(line: &'a str, room: Option<&str>) -> (&'a str, &'a str, &'a str) {
    let prefix = match room {
        Some(room) => format!("HIST {room} "),
        None => "HIST ".to_owned(),
    };
    let rest = line
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("expected {prefix:?}…, got {line:?}"));
    let (time, rest) = rest.split_once(' ').expect("HIST <time> <from> <text>");
    let (from, text) = rest.split_once(' ').expect("HIST <time> <from> <text>");
    (time, from, text)
}

/// Asks for history and checks its shape: `HISTORY [<room>] <k>` and then
/// exactly k `HIST` lines, nothing else, times well formed and not
/// decreasing. Returns (time in ms, from, text) of each, oldest first.
pub async fn history(
    client: &mut Client,
    request: &str,
    room: Option<&str>,
) -> Vec<(u64, String, String)> {
    let lines = client.request(request).await;
    let head = match room {
        Some(room) => format!("HISTORY {room} "),
        None => "HISTORY ".to_owned(),
    };
    let first = lines
        .first()
        .unwrap_or_else(|| panic!("{request}: no answer"));
    let k: usize = first
        .strip_prefix(&head)
        .and_then(|k| k.parse().ok())
        .unwrap_or_else(|| panic!("{request}: expected {head:?}<k>, got {first:?}"));
    assert_eq!(lines.len(), k + 1, "{request}: {lines:?}");
    let mut out = Vec::new();
    for line in &lines[1..] {
        let (time, from, text) = hist(line, room);
        let millis =
            parse_time(time).unwrap_or_else(|| panic!("{request}: bad time {time:?} in {line:?}"));
        if let Some((before, _, _)) = out.last() {
            assert!(*before <= millis, "{request}: times go back: {lines:?}");
        }
        out.push((millis, from.to_owned(), text.to_owned()));
    }
    out
}
