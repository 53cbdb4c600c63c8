//! Case 1, garbage: seeded random byte streams from many connections at once
//! (binary, NUL, invalid UTF-8, lone `\r`, control characters, huge lines,
//! 1 MiB lines), each line answered with exactly the contract's error; then
//! one line that never ends, through which the server's memory must not grow.

use std::net::SocketAddr;
use std::time::Instant;

use tokio::io::AsyncWriteExt;

use super::{assert_alive, assert_answers, is_broadcast_from_others, server, Row};
use crate::probe::Usage;
use crate::rng::Rng;
use crate::wire;
use crate::witness::{Event, Witnesses};

/// Byte sequences that are never UTF-8, whatever surrounds them.
const NEVER_UTF8: [&[u8]; 6] = [
    b"\xff",
    b"\xfe",
    b"\xc0\x80",
    b"\xc1\xbf",
    b"\xed\xa0\x80",
    b"\xf5\x80\x80\x80",
];

/// ASCII bytes that are forbidden in a text (a lone `\r` among them).
const FORBIDDEN_ASCII: [u8; 8] = [0x00, 0x01, 0x07, 0x08, 0x0d, 0x1b, 0x1f, 0x7f];

const MAX_LINE: usize = 4096;

pub async fn garbage(scale: &super::Scale, seed: u64) -> Row {
    let started = Instant::now();
    let server = server(&[]);
    let scripts: Vec<Script> = (0..scale.garbage_connections)
        .map(|i| script(i, scale.garbage_lines, seed.wrapping_add(i as u64)))
        .collect();
    let witnesses = Witnesses::start(server.addr()).await;
    let mut connections = Vec::new();
    for (i, script) in scripts.into_iter().enumerate() {
        connections.push(tokio::spawn(garbage_connection(
            server.addr(),
            i,
            script,
            seed.wrapping_add(i as u64),
        )));
    }
    let mut bytes = 0;
    for connection in connections {
        bytes += connection.await.expect("a garbage connection");
    }
    for i in (0..scale.garbage_connections).step_by(2) {
        witnesses.wait_seen(&Event::Leave(format!("g{i}")), 1).await;
    }
    let memory = unterminated_line(&server, scale.unterminated_mib).await;
    let verdict = witnesses.finish().await;
    verdict.assert_intact();
    assert_eq!(verdict.foreign_total(), 0, "garbage reached the witnesses");
    assert_alive(&server, "garbage");
    let mut row = Row::new("1 garbage", started);
    row.tried = format!(
        "{} connections at once, {} seeded lines each ({:.1} MiB: invalid UTF-8, NUL and \
         binary, lone CR, control characters, lines of 4 KiB to 1 MiB), half of them \
         logged in; then one {} MiB line with no newline (seed {seed})",
        scale.garbage_connections,
        scale.garbage_lines,
        bytes as f64 / (1 << 20) as f64,
        scale.unterminated_mib
    );
    row.held = format!(
        "every line got exactly its `ERROR` (`invalid-utf8`, `line-too-long`, `bad-text`, \
         `unknown-command`, `not-logged-in`), in order, then `PONG`; nothing broadcast; \
         RSS {:.1} MiB after the first MiB of the endless line, {:.1} MiB after all {} MiB; \
         server up; {}",
        memory.0 as f64 / 1024.0,
        memory.1 as f64 / 1024.0,
        scale.unterminated_mib,
        verdict.summary()
    );
    row.lost = verdict.lost;
    row.peak_rss_mib = Some(memory.1 as f64 / 1024.0);
    row
}

/// One garbage line and the error code it must get.
fn garbage_line(rng: &mut Rng, logged_in: bool, huge: bool) -> (Vec<u8>, &'static str) {
    if huge {
        // One 1 MiB line: no newline for a long while, then one.
        let mut line = b"MSG ".to_vec();
        line.extend(rng.bytes_without_newline(1 << 20));
        line.push(b'\n');
        return (line, "line-too-long");
    }
    let mut line;
    let code = match rng.below(7) {
        0 => {
            let len = rng.between(0, 300);
            line = rng.bytes_without_newline(len);
            let at = rng.below(line.len() + 1);
            let bad = *rng.pick(&NEVER_UTF8);
            line.splice(at..at, bad.iter().copied());
            "invalid-utf8"
        }
        1 => {
            // NUL first, then anything ASCII: UTF-8, but no verb.
            line = vec![0];
            line.extend(random_ascii(rng, 0, 200, 0x00..0x80));
            "unknown-command"
        }
        2 | 3 => {
            let verb: &[u8] = if rng.one_in(2) { b"PING " } else { b"MSG " };
            line = verb.to_vec();
            line.extend(random_ascii(rng, 0, 100, 0x20..0x7f));
            let at = rng.between(verb.len(), line.len() + 1);
            line.insert(at, *rng.pick(&FORBIDDEN_ASCII));
            // A `\r` just before the `\n` would end the line instead.
            line.push(b'.');
            if verb == b"MSG " && !logged_in {
                "not-logged-in"
            } else {
                "bad-text"
            }
        }
        4 => {
            line = b"MSG ".to_vec();
            let len = rng.between(MAX_LINE, 5 * MAX_LINE);
            line.extend(rng.bytes_without_newline(len));
            "line-too-long"
        }
        5 => {
            line = vec![b'\r'; rng.between(1, 4)];
            line.extend(random_ascii(rng, 0, 20, 0x21..0x7f));
            "unknown-command"
        }
        _ => {
            // Random Unicode, any plane, behind a character no verb has.
            line = b"#".to_vec();
            for _ in 0..rng.between(0, 60) {
                if let Some(c) = char::from_u32(rng.below(0x11_0000) as u32) {
                    if c != '\n' {
                        let mut utf8 = [0; 4];
                        line.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                    }
                }
            }
            "unknown-command"
        }
    };
    line.push(b'\n');
    (line, code)
}

fn random_ascii(
    rng: &mut Rng,
    min: usize,
    max: usize,
    range: std::ops::Range<u8>,
) -> impl Iterator<Item = u8> + '_ {
    let len = rng.between(min, max);
    (0..len).map(move |_| match range.start + rng.below(range.len()) as u8 {
        b'\n' => b'.',
        b => b,
    })
}

/// One connection's garbage, made before the case starts (so that making it
/// does not slow the witnesses down): the bytes cut into writes, and the
/// answers they must get.
struct Script {
    chunks: Vec<Vec<u8>>,
    expected: Vec<String>,
    bytes: usize,
}

fn script(i: usize, lines: usize, seed: u64) -> Script {
    let mut rng = Rng::new(seed);
    let logged_in = i & 1 == 0;
    let huge_at = rng.below(lines);
    let mut bytes = Vec::new();
    let mut expected = Vec::new();
    for n in 0..lines {
        let (line, code) = garbage_line(&mut rng, logged_in, n == huge_at);
        bytes.extend(line);
        expected.push(format!("ERROR {code}"));
    }
    bytes.extend(format!("PING end-{i}\n").as_bytes());
    expected.push(format!("PONG end-{i}"));
    let mut chunks = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rng.between(1, 65_536).min(rest.len()));
        chunks.push(chunk.to_vec());
        rest = tail;
    }
    Script {
        chunks,
        expected,
        bytes: bytes.len(),
    }
}

/// Sends one connection's garbage while reading the answers; returns the
/// bytes sent.
async fn garbage_connection(addr: SocketAddr, i: usize, script: Script, seed: u64) -> usize {
    let me = format!("g{i}");
    let (mut reader, mut writer) = if i & 1 == 0 {
        wire::login(addr, &me).await
    } else {
        wire::connect(addr).await
    };
    let token = script.expected.last().expect("a PONG at the end").clone();
    let send = async {
        for chunk in &script.chunks {
            writer.write_all(chunk).await.expect("send garbage");
        }
    };
    let answers = async {
        let mut answers = Vec::new();
        loop {
            let line = reader.line().await;
            if is_broadcast_from_others(&line, &me) {
                continue;
            }
            let end = line == token;
            answers.push(line);
            if end {
                return answers;
            }
        }
    };
    let ((), answers) = tokio::join!(send, answers);
    assert_answers(
        &answers,
        &script.expected,
        &format!("garbage connection {i} (seed {seed})"),
    );
    script.bytes
}

/// Streams one line that never ends and returns the server's RSS (KiB) after
/// its first MiB and after all of it (measured once `PONG` proves every
/// byte was read).
async fn unterminated_line(server: &crate::Server, mib: usize) -> (u64, u64) {
    let (mut reader, mut writer) = wire::connect(server.addr()).await;
    let chunk = vec![b'u'; 1 << 20];
    writer.write_all(b"MSG ").await.expect("send");
    writer.write_all(&chunk).await.expect("send");
    // Reported as soon as the line passes the limit, before its end.
    let refused = reader.line().await;
    assert!(
        refused.starts_with("ERROR line-too-long"),
        "got {refused:?}"
    );
    writer.write_all(b"\nPING first\n").await.expect("send");
    assert_eq!(reader.line().await, "PONG first");
    writer.write_all(b"MSG ").await.expect("send");
    writer.write_all(&chunk).await.expect("send");
    assert!(reader.line().await.starts_with("ERROR line-too-long"));
    let first = Usage::of(server.pid()).rss_kib;
    for _ in 1..mib {
        writer.write_all(&chunk).await.expect("send");
    }
    writer.write_all(b"\nPING last\n").await.expect("send");
    assert_eq!(reader.line().await, "PONG last");
    let last = Usage::of(server.pid()).rss_kib;
    assert!(
        last <= first + 4 * 1024,
        "the server's memory grew with an unterminated line: {first} KiB after 1 MiB, \
         {last} KiB after {mib} MiB"
    );
    (first, last)
}
