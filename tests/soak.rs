//! The soak runner: every hardening case at full size, repeated with new
//! seeds while time remains, then a long parser fuzz pass; it prints the
//! results table that `docs/RELIABILITY.md` records and stops by itself.
//!
//! ```sh
//! cargo test --release -p chat-tests --test soak -- --ignored --nocapture
//! SOAK_SECS=600 SOAK_SEED=7 SOAK_REPORT=/tmp/soak.md cargo test --release -p chat-tests --test soak -- --ignored --nocapture
//! ```
//!
//! `SOAK_SECS` (default 60) is the run's length: the first round always
//! runs whole, another starts only if it should end in time, and the fuzz
//! pass takes what is left (at least [`Scale::soak`]'s `fuzz_time`).
//! `SOAK_REPORT` names a file to write the table to.

use std::time::{Duration, Instant};

use chat_tests::cases::{self, run_exclusive, table, Row, Scale};

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a whole number, got {value:?}")),
        Err(_) => default,
    }
}

/// The ten server cases, each on a fresh server (case 10 is the fuzz pass).
type Case = fn(&Scale, u64) -> Row;
const SERVER_CASES: [(&str, Case); 10] = [
    ("1 garbage", |s, seed| {
        run_exclusive(cases::garbage(s, seed))
    }),
    ("2 terminal injection", |s, seed| {
        run_exclusive(cases::injection(s, seed))
    }),
    ("3 slowloris", |s, seed| {
        run_exclusive(cases::slowloris(s, seed))
    }),
    ("4 abrupt ends", |s, seed| {
        run_exclusive(cases::abrupt_ends(s, seed))
    }),
    ("5 churn", |s, seed| run_exclusive(cases::churn(s, seed))),
    ("6 flood", |s, seed| run_exclusive(cases::flood(s, seed))),
    ("7 slow readers", |s, seed| {
        run_exclusive(cases::slow_readers(s, seed))
    }),
    ("8 limits", |s, seed| run_exclusive(cases::limits(s, seed))),
    ("9 shutdown under load", |s, seed| {
        run_exclusive(cases::shutdown_under_load(s, seed))
    }),
    ("11 budgets", |s, seed| {
        run_exclusive(cases::budgets(s, seed))
    }),
];

/// Runs one case; a failure becomes a row that says so (and fails the run
/// at the end) instead of ending the soak before its summary.
fn attempt(name: &'static str, case: impl FnOnce() -> Row) -> (Row, bool) {
    let started = Instant::now();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(case)) {
        Ok(row) => (row, true),
        Err(panic) => {
            let message = chat_tests::panic_message(&*panic);
            let mut short: String = message.split_whitespace().collect::<Vec<_>>().join(" ");
            if short.chars().count() > 400 {
                short = short.chars().take(400).collect::<String>() + " …";
            }
            // A witnesses' verdict says how many of their frames were lost.
            let lost = message
                .split_once("lost: ")
                .and_then(|(_, rest)| rest.split(',').next())
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0);
            let row = Row {
                case: name,
                tried: "(see the log)".into(),
                held: format!("**FAILED**: {short}"),
                took: started.elapsed(),
                lost,
                peak_rss_mib: None,
            };
            (row, false)
        }
    }
}

#[test]
#[ignore = "the soak runner: cargo test --release -p chat-tests --test soak -- --ignored"]
fn soak() {
    let secs = env_u64("SOAK_SECS", 60);
    let seed = env_u64("SOAK_SEED", 0x50a4);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let mut scale = Scale::soak();
    let mut rows = Vec::new();
    let mut rounds = 0;
    let mut failed = Vec::new();
    loop {
        let round_started = Instant::now();
        for (name, case) in SERVER_CASES {
            let (row, passed) = attempt(name, || case(&scale, seed.wrapping_add(rounds)));
            if !passed {
                failed.push(name);
            }
            rows.push(row);
        }
        rounds += 1;
        let round_took = round_started.elapsed();
        if Instant::now() + round_took + scale.fuzz_time > deadline {
            break;
        }
    }
    scale.fuzz_time = scale
        .fuzz_time
        .max(deadline.saturating_duration_since(Instant::now()));
    let (row, passed) = attempt("10 parser fuzz", || {
        run_exclusive(cases::parser_fuzz(&scale, seed))
    });
    if !passed {
        failed.push("10 parser fuzz");
    }
    rows.push(row);
    let lost: u64 = rows.iter().map(|r| r.lost).sum();
    let crashes = rows
        .iter()
        .filter(|r| r.held.contains("the server process died"))
        .count();
    let peak = rows
        .iter()
        .filter_map(|r| r.peak_rss_mib)
        .fold(0.0, f64::max);
    let summary = format!(
        "soak: {secs} s asked, {:.0} s run, {rounds} round(s) of the ten server cases, \
         {} case runs, {} failed {failed:?}; witness frames lost: {lost}; \
         server crashes: {crashes}; peak server RSS {peak:.1} MiB (seed {seed}, {})",
        started.elapsed().as_secs_f64(),
        rows.len(),
        failed.len(),
        if cfg!(debug_assertions) {
            "debug build"
        } else {
            "release build"
        }
    );
    let report = format!("{}\n{summary}\n", table(&rows));
    println!("\n{report}");
    if let Ok(path) = std::env::var("SOAK_REPORT") {
        std::fs::write(&path, &report).unwrap_or_else(|e| panic!("write {path}: {e}"));
    }
    assert!(failed.is_empty(), "failed cases: {failed:?}");
    assert_eq!(lost, 0, "witness frames were lost");
}
