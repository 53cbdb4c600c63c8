//! The hardening suite, fast sizes: faults, abuse and load against the real
//! `chat-server`, each while two witnesses chat and must lose nothing. The
//! cases live in `chat_tests::cases`; `tests/soak.rs` runs them at full size.
//!
//! The cases run one at a time (they measure latency, CPU and memory), each
//! on its own runtime. `cargo test -p chat-tests --test hardening -- --nocapture`
//! prints what each tried and what held.

use chat_tests::cases::{self, run_exclusive, Scale};

/// Fixed, so a failure replays; the soak runner varies it.
const SEED: u64 = 0x5eed_0001;

#[test]
fn garbage_gets_exact_errors_and_memory_stays_flat() {
    run_exclusive(cases::garbage(&Scale::fast(), SEED));
}

#[test]
fn terminal_injection_is_refused_and_reaches_no_one() {
    run_exclusive(cases::injection(&Scale::fast(), SEED));
}

#[test]
fn slowloris_connections_are_closed_at_the_login_timeout() {
    run_exclusive(cases::slowloris(&Scale::fast(), SEED));
}

#[test]
fn abrupt_ends_are_announced_once_and_names_freed() {
    run_exclusive(cases::abrupt_ends(&Scale::fast(), SEED));
}

#[test]
fn churn_leaves_no_descriptor_thread_or_name_behind() {
    run_exclusive(cases::churn(&Scale::fast(), SEED));
}

#[test]
fn a_flood_holds_no_one_back_and_stays_in_order() {
    run_exclusive(cases::flood(&Scale::fast(), SEED));
}

#[test]
fn slow_readers_at_scale_cost_bounded_memory_and_are_told_what_they_missed() {
    run_exclusive(cases::slow_readers(&Scale::fast(), SEED));
}

#[test]
fn limits_refuse_exactly_the_excess_and_survive_descriptor_exhaustion() {
    run_exclusive(cases::limits(&Scale::fast(), SEED));
}

#[test]
fn shutdown_under_load_tells_everyone_and_exits_cleanly() {
    run_exclusive(cases::shutdown_under_load(&Scale::fast(), SEED));
}

#[test]
fn the_budgets_hold_under_the_five_attacks_and_the_metrics_siege() {
    run_exclusive(cases::budgets(&Scale::fast(), SEED));
}

#[test]
fn the_decoder_survives_fuzzing_and_agrees_with_a_model() {
    run_exclusive(cases::parser_fuzz(&Scale::fast(), SEED));
}

/// The minimal reproduction of a server bug found by the slow-readers case:
/// see `chat_tests::cases::stuck_reader_backlog` and docs/RELIABILITY.md.
#[test]
fn a_stuck_reader_is_told_dropped_once_past_its_backlog() {
    run_exclusive(cases::stuck_reader_backlog(&Scale::fast(), SEED));
}
