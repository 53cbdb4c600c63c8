//! Case 2, terminal injection: every character that could drive another
//! user's terminal (C0 but TAB, DEL, C1, the bidi embeddings, overrides and
//! isolates), in every argument of every frame, at the start, middle and end,
//! plus real escape sequences: each is refused, and nothing of it reaches
//! anyone. Harmless look-alikes (TAB, NBSP, bidi marks) pass through exactly.

use std::time::Instant;

use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;

use super::{assert_alive, assert_answers, is_broadcast_from_others, server, Row};
use crate::rng::Rng;
use crate::wire::{self, LineReader};
use crate::witness::Witnesses;

/// Escape sequences an attacker would really send.
const PAYLOADS: [&str; 8] = [
    "\x1b[2J\x1b[Hscreen wiped",
    "\x1b]0;window title\x07",
    "\x1b]8;;http://evil/\x1b\\link\x1b]8;;\x1b\\",
    "\x08\x08\x08\x08rewritten",
    "ring\x07ring",
    "\u{9b}31mred via C1 CSI",
    "invoice\u{202e}fdp.exe",
    "a\u{2066}hidden\u{2069}b",
];

/// Characters that look suspicious but are allowed, and must arrive intact.
const HARMLESS: [&str; 6] = ["\t", "\u{a0}", "\u{200e}", "\u{200f}", "\u{feff}", "é✓漢😀"];

fn forbidden() -> Vec<char> {
    (0u32..0x20)
        .filter(|&c| c != u32::from(b'\t') && c != u32::from(b'\n'))
        .chain([0x7f])
        .chain(0x80..0xa0)
        .chain(0x202a..=0x202e)
        .chain(0x2066..=0x2069)
        .filter_map(char::from_u32)
        .collect()
}

/// A text with `bad` at the start, in the middle or at the end.
fn text_with(rng: &mut Rng, bad: &str, place: usize) -> String {
    let words = ["hello", "look here", "x", "click me", "totally safe"];
    let word = *rng.pick(&words);
    match place {
        0 => format!("{bad}{word}"),
        1 => format!("{word}{bad}{word}"),
        // A `\r` right before the `\n` is a CRLF line ending, not text: one
        // more keeps it in the text.
        _ if bad == "\r" => format!("{word}\r\r"),
        _ => format!("{word}{bad}"),
    }
}

pub async fn injection(scale: &super::Scale, seed: u64) -> Row {
    let started = Instant::now();
    let server = server(&[]);
    let witnesses = Witnesses::start(server.addr()).await;
    let (mut mallory, mut mallory_out) = wire::login(server.addr(), "mallory").await;
    let (mut anonymous, mut anonymous_out) = wire::connect(server.addr()).await;
    let mut bad: Vec<String> = forbidden().into_iter().map(String::from).collect();
    bad.extend(PAYLOADS.iter().map(|p| p.to_string()));
    let mut refused = 0;
    for round in 0..scale.injection_rounds {
        let mut rng = Rng::new(seed.wrapping_add(round as u64));
        let (mut as_user, mut user_expects) = (String::new(), Vec::new());
        let (mut as_anonymous, mut anonymous_expects) = (String::new(), Vec::new());
        for bad in &bad {
            for place in 0..3 {
                let text = text_with(&mut rng, bad, place);
                for (frame, code) in [
                    (format!("MSG {text}"), "bad-text"),
                    (format!("LEAVE {text}"), "bad-text"),
                    (format!("PING {text}"), "bad-text"),
                    (format!("WHO {text}"), "bad-text"),
                    (format!("NAME {text}"), "already-logged-in"),
                ] {
                    as_user.push_str(&frame);
                    as_user.push('\n');
                    user_expects.push(format!("ERROR {code}"));
                }
                let name = text.replace(' ', "_");
                for (frame, code) in [
                    (format!("NAME {name}"), "bad-text"),
                    (format!("PING {text}"), "bad-text"),
                    (format!("MSG {text}"), "not-logged-in"),
                ] {
                    as_anonymous.push_str(&frame);
                    as_anonymous.push('\n');
                    anonymous_expects.push(format!("ERROR {code}"));
                }
            }
        }
        refused += user_expects.len() + anonymous_expects.len() + 2;
        let user_answers = exchange(&mut mallory, &mut mallory_out, &as_user, "mallory");
        let anonymous_answers = exchange(&mut anonymous, &mut anonymous_out, &as_anonymous, "");
        let (user_answers, anonymous_answers) = tokio::join!(user_answers, anonymous_answers);
        assert_answers(&user_answers, &user_expects, "mallory");
        assert_answers(&anonymous_answers, &anonymous_expects, "anonymous");
        // C1 as raw 8-bit bytes is not UTF-8 at all.
        let raw = exchange_bytes(
            &mut mallory,
            &mut mallory_out,
            b"MSG \x9b31m raw C1\nMSG \x1b\x9b\n",
            "mallory",
        )
        .await;
        assert_answers(
            &raw,
            &["ERROR invalid-utf8".into(), "ERROR invalid-utf8".into()],
            "raw C1 bytes",
        );
    }
    // Mallory's bad LEAVEs did not make her leave; the look-alikes pass.
    let mut harmless = String::new();
    for (n, c) in HARMLESS.iter().enumerate() {
        harmless.push_str(&format!("MSG {n} a{c}b\n"));
    }
    let echoes = exchange(&mut mallory, &mut mallory_out, &harmless, "mallory").await;
    let expected: Vec<String> = HARMLESS
        .iter()
        .enumerate()
        .map(|(n, c)| format!("MSG mallory {n} a{c}b"))
        .collect();
    assert_eq!(echoes, expected, "harmless characters are kept exactly");
    let who = exchange(&mut mallory, &mut mallory_out, "WHO\n", "mallory").await;
    assert_eq!(who, ["NAMES mallory witness-a witness-b"]);
    let verdict = witnesses.finish().await;
    verdict.assert_intact();
    let seen = verdict.foreign_from("mallory");
    assert_eq!(
        (seen.count, seen.misnumbered),
        (HARMLESS.len() as u64, 0),
        "only the harmless messages reached the witnesses"
    );
    assert_alive(&server, "injection");
    let mut row = Row::new("2 terminal injection", started);
    row.tried = format!(
        "{} frames: {} forbidden characters (C0 but TAB, DEL, C1, U+202A–E, U+2066–9) and {} \
         escape sequences, at start, middle and end of MSG, LEAVE, PING, WHO and NAME, \
         logged in and not, plus raw 8-bit C1; {} round(s) (seed {seed})",
        refused,
        forbidden().len(),
        PAYLOADS.len(),
        scale.injection_rounds
    );
    row.held = format!(
        "each refused with its exact code (`bad-text`, `already-logged-in`, \
         `not-logged-in`, `invalid-utf8`); no line any client received held a control or bidi \
         character; only the {} harmless look-alikes (TAB, NBSP, LRM, RLM, BOM, non-ASCII) \
         were broadcast, byte for byte; the injector still logged in; {}",
        HARMLESS.len(),
        verdict.summary()
    );
    row.lost = verdict.lost;
    row
}

/// Sends `frames` then a `PING`, reading meanwhile; returns this
/// connection's own answers (broadcasts from others left out).
async fn exchange(
    reader: &mut LineReader,
    writer: &mut OwnedWriteHalf,
    frames: &str,
    me: &str,
) -> Vec<String> {
    exchange_bytes(reader, writer, frames.as_bytes(), me).await
}

async fn exchange_bytes(
    reader: &mut LineReader,
    writer: &mut OwnedWriteHalf,
    frames: &[u8],
    me: &str,
) -> Vec<String> {
    let token = format!("PONG injection-{me}");
    let mut frames = frames.to_vec();
    frames.extend_from_slice(format!("PING injection-{me}\n").as_bytes());
    let send = async { writer.write_all(&frames).await.expect("send") };
    let answers = async {
        let mut answers = Vec::new();
        loop {
            let line = reader.line().await;
            if line == token {
                return answers;
            }
            if !is_broadcast_from_others(&line, me) {
                answers.push(line);
            }
        }
    };
    tokio::join!(send, answers).1
}
