//! A stable-toolchain fuzzer for the server's decoder (`ServerCodec`).
//!
//! cargo-fuzz needs a nightly toolchain, so this is a plain loop: seeded
//! inputs built from hostile pieces (frames, random bytes, control and bidi
//! characters, invalid UTF-8, CR placements, lines just under, at and over
//! the limit), decoded whole, cut at random points and byte by byte. Each
//! decoding must not panic and must give exactly the items a reference
//! model gives; every frame it accepts must be free of forbidden characters
//! and re-parse to itself.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chat_protocol::{
    forbidden_char, is_valid_name, ClientFrame, ErrorCode, Rejection, ServerCodec, Verb,
};
use tokio_util::codec::Decoder;

use crate::rng::Rng;

/// What a fuzz run did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub cases: u64,
    pub bytes: u64,
    pub items: u64,
    pub accepted: u64,
    pub refused: u64,
}

/// One decoded item, comparable whatever produced it.
type Item = Result<ClientFrame, (ErrorCode, Option<Verb>)>;

/// Runs cases from `seed` until `max_cases` or `max_time`, whichever comes
/// first; panics with the case's seed and input on the first failure.
pub fn run(seed: u64, max_cases: u64, max_time: Duration) -> Stats {
    let started = Instant::now();
    let mut stats = Stats::default();
    while stats.cases < max_cases && started.elapsed() < max_time {
        let case_seed = seed
            .wrapping_mul(0x1000_0000_01b3)
            .wrapping_add(stats.cases);
        let mut rng = Rng::new(case_seed);
        let max_line = *rng.pick(&[8, 16, 17, 31, 64, 100, 4096]);
        let input = generate(&mut rng, max_line);
        let outcome = catch_unwind(AssertUnwindSafe(|| check(&mut rng, &input, max_line)));
        match outcome {
            Ok(items) => {
                stats.items += items.len() as u64;
                stats.accepted += items.iter().filter(|i| i.is_ok()).count() as u64;
                stats.refused += items.iter().filter(|i| i.is_err()).count() as u64;
            }
            Err(panic) => {
                let message = crate::panic_message(&*panic);
                panic!(
                    "fuzz case {case_seed} (max line {max_line}) failed: {message}\ninput: {:?}",
                    String::from_utf8_lossy(&input)
                );
            }
        }
        stats.cases += 1;
        stats.bytes += input.len() as u64;
    }
    stats
}

/// Decodes `input` several ways and checks them against the model and the
/// frame invariants; returns the items.
fn check(rng: &mut Rng, input: &[u8], max_line: usize) -> Vec<Item> {
    let expected = model(input, max_line);
    let whole = decode(input, max_line, &[]);
    assert_eq!(whole, expected, "decoded whole");
    let cuts: Vec<usize> = (0..rng.below(12))
        .map(|_| rng.below(input.len() + 1))
        .collect();
    assert_eq!(decode(input, max_line, &cuts), expected, "cut at {cuts:?}");
    if rng.one_in(8) {
        let every: Vec<usize> = (0..=input.len()).collect();
        assert_eq!(decode(input, max_line, &every), expected, "byte by byte");
    }
    for frame in expected.iter().flatten() {
        check_frame(frame);
    }
    expected
}

/// What an accepted frame must be, whatever the parser's inner workings.
fn check_frame(frame: &ClientFrame) {
    let argument = match frame {
        ClientFrame::Name(a) | ClientFrame::Msg(a) => Some(a.as_str()),
        ClientFrame::Leave(a) | ClientFrame::Ping(a) => a.as_deref(),
        _ => None,
    };
    if let Some(argument) = argument {
        assert_eq!(
            forbidden_char(argument),
            None,
            "{frame:?} carries a forbidden character"
        );
    }
    match frame {
        ClientFrame::Name(name) => assert!(is_valid_name(name), "{frame:?} accepted"),
        ClientFrame::Msg(text) => assert!(!text.trim_matches(' ').is_empty(), "{frame:?}"),
        _ => {}
    }
    assert_eq!(
        ClientFrame::parse(&frame.to_string()).as_ref(),
        Ok(frame),
        "{frame:?} does not re-parse to itself"
    );
}

/// Feeds `input` to a fresh `ServerCodec` in pieces ending at `cuts`, then
/// ends the stream.
fn decode(input: &[u8], max_line: usize, cuts: &[usize]) -> Vec<Item> {
    let mut codec = ServerCodec::new(max_line);
    let mut points: Vec<usize> = cuts.to_vec();
    points.push(input.len());
    points.sort_unstable();
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    let mut from = 0;
    for to in points {
        buf.extend_from_slice(&input[from..to]);
        from = to;
        while let Some(item) = codec.decode(&mut buf).expect("decoding bytes never fails") {
            items.push(comparable(item));
        }
    }
    while let Some(item) = codec
        .decode_eof(&mut buf)
        .expect("decoding bytes never fails")
    {
        items.push(comparable(item));
    }
    items
}

fn comparable(item: Result<ClientFrame, Rejection>) -> Item {
    item.map_err(|r| (r.code, r.verb))
}

/// The reference: lines are split at `\n` (the last one may lack it), one
/// `\r` before the end is dropped, a line over `max_line` bytes is one
/// `line-too-long`, one that is not UTF-8 is one `invalid-utf8`, and any
/// other is parsed. Written without buffers or windows, as the contract
/// says it, so it cannot share the codec's bugs.
fn model(input: &[u8], max_line: usize) -> Vec<Item> {
    let mut lines: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
        .into_iter()
        .map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() > max_line {
                return Err((ErrorCode::LineTooLong, None));
            }
            let Ok(text) = std::str::from_utf8(line) else {
                return Err((ErrorCode::InvalidUtf8, None));
            };
            let parsed = comparable(ClientFrame::parse(text));
            // Independent of the parser: a known verb whose argument holds a
            // forbidden character is always refused as bad text.
            let (verb, rest) = text.split_once(' ').unwrap_or((text, ""));
            if let Some(verb) = Verb::parse(verb) {
                if forbidden_char(rest).is_some() {
                    assert_eq!(parsed, Err((ErrorCode::BadText, Some(verb))), "{text:?}");
                }
            }
            parsed
        })
        .collect()
}

/// A hostile input for a decoder with limit `max_line`.
fn generate(rng: &mut Rng, max_line: usize) -> Vec<u8> {
    let mut input = Vec::new();
    for _ in 0..rng.between(1, 24) {
        match rng.below(10) {
            0 | 1 => input.extend(valid_frame(rng).as_bytes()),
            2 => {
                let len = rng.below(40);
                input.extend(rng.bytes(len));
            }
            3 => {
                let c = *rng.pick(&[
                    '\0', '\x07', '\x08', '\x1b', '\r', '\x7f', '\u{85}', '\u{9b}', '\u{202e}',
                    '\u{2066}', '\t', '\u{200f}',
                ]);
                let mut utf8 = [0; 4];
                input.extend(c.encode_utf8(&mut utf8).as_bytes());
            }
            4 => input.extend(*rng.pick(&[
                &b"\xff"[..],
                b"\xc0\x80",
                b"\xed\xa0\x80",
                b"\xe2\x82",
                b"\x80",
                b"\xf0\x9f\x98",
            ])),
            5 => input.extend(*rng.pick(&[&b"\r\n"[..], b"\r", b"\r\r\n", b"\n\r", b"\n"])),
            6 => {
                // Around the limit: one under, at, one over, far over.
                let len = match rng.below(4) {
                    0 => max_line.saturating_sub(1),
                    1 => max_line,
                    2 => max_line + 1,
                    _ => rng.between(max_line + 2, 3 * max_line + 3),
                };
                input.extend(vec![b'x'; len]);
            }
            7 => input.extend(*rng.pick(&[&b" "[..], b"  ", b"MSG ", b"msg", b"PING", b"NAME "])),
            _ => input.push(b'\n'),
        }
    }
    input
}

fn valid_frame(rng: &mut Rng) -> String {
    let verb = *rng.pick(&[
        "NAME", "MSG", "LEAVE", "WHO", "PING", "name", "Msg", "BOGUS",
    ]);
    let argument = *rng.pick(&["alice", "a b  c ", "", " ", "é✓", "_x", "ok.1-2"]);
    let end = *rng.pick(&["\n", "\r\n", ""]);
    if argument.is_empty() && rng.one_in(2) {
        format!("{verb}{end}")
    } else {
        format!("{verb} {argument}{end}")
    }
}
