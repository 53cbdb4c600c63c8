//! `web`: the web door against TCP, in one invocation (issue 19). `main`
//! runs the `throughput` and `fanout` scenarios (their own code) on the
//! same server build with the users over WebSockets (`ws`) and over TCP
//! (`tcp`), and the fan-out on the floor too, alternating, each run on a
//! fresh server; then [`verdict`] puts the figures the issue sets targets
//! for in one table:
//! - server CPU per delivery under throughput load, WebSocket over TCP:
//!   at most [`CPU_RATIO_TARGET`];
//! - one message to `--fanout-users` idle WebSocket users: p99 as a
//!   multiple of the floor's (no figure set: shown), and of TCP's;
//! - server RSS per idle WebSocket user, measured before that message: at
//!   most [`RSS_TARGET_KIB`], next to TCP's.

use std::fmt::Write as _;

use clap::Args;

use super::{fanout, throughput};
use crate::report::{show, Comparison};

/// The table of the throughput runs (`ws`, `tcp`).
pub const THROUGHPUT: &str = "web-throughput";
/// The table of the fan-out runs (`ws`, `tcp`, `floor`).
pub const FANOUT: &str = "web-fanout";
/// Server CPU per delivery over WebSocket, as a multiple of TCP's, at most.
pub const CPU_RATIO_TARGET: f64 = 1.5;
/// Server RSS per idle WebSocket user (KiB), at most.
pub const RSS_TARGET_KIB: f64 = 8.0;

#[derive(Debug, Clone, Args)]
pub struct Sizes {
    /// Users in the throughput runs.
    #[arg(long, default_value_t = 100)]
    pub throughput_users: u32,
    /// Senders in the throughput runs.
    #[arg(long, default_value_t = 10)]
    pub throughput_senders: u32,
    /// Messages per sender in the throughput runs.
    #[arg(long, default_value_t = 2000)]
    pub throughput_messages: u64,
    /// Messages a sender may have that some receiver has not had yet.
    #[arg(long, default_value_t = 64)]
    pub window: u64,
    /// Idle users the fan-out's one message reaches; their memory is
    /// measured before it.
    #[arg(long, default_value_t = 5000)]
    pub fanout_users: u32,
}

impl Sizes {
    pub fn throughput(&self) -> throughput::Sizes {
        throughput::Sizes {
            users: self.throughput_users,
            senders: self.throughput_senders,
            messages: self.throughput_messages,
            window: self.window,
            rate: 0.0,
        }
    }

    pub fn fanout(&self) -> fanout::Sizes {
        fanout::Sizes {
            users: self.fanout_users,
        }
    }

    /// Small enough for CI.
    pub fn smoke() -> Sizes {
        Sizes {
            throughput_users: 20,
            throughput_senders: 4,
            throughput_messages: 500,
            window: 64,
            fanout_users: 200,
        }
    }
}

/// One row of the verdict: what, each side's median, the target, and
/// whether it is met (`None`: no figure set).
struct Row {
    label: String,
    key: &'static str,
    ws: f64,
    tcp: f64,
    floor: Option<f64>,
    target: String,
    met: Option<bool>,
}

/// The targets' table and its JSON line, from the `web` comparisons among
/// `comparisons`; `None` if they are not there.
pub fn verdict(comparisons: &[Comparison<'_>]) -> Option<(String, String)> {
    let find = |name: &str| comparisons.iter().find(|c| c.scenario == name);
    let (throughput, fanout) = (find(THROUGHPUT)?, find(FANOUT)?);
    let get = |c: &Comparison<'_>, side: &str, key: &str| c.median(side, key).unwrap_or(f64::NAN);
    let users = fanout.params.clone();
    let cpu = |side| get(throughput, side, "cpu_per_delivery_us");
    let cpu_ratio = cpu("ws") / cpu("tcp");
    let rss = get(fanout, "ws", "rss_per_user_kib");
    let rows = [
        Row {
            label: "server CPU per delivery, throughput (µs)".into(),
            key: "cpu_per_delivery_us",
            ws: cpu("ws"),
            tcp: cpu("tcp"),
            floor: None,
            target: format!("ws ≤ {CPU_RATIO_TARGET}x tcp"),
            met: cpu_ratio
                .is_finite()
                .then_some(cpu_ratio <= CPU_RATIO_TARGET),
        },
        Row {
            label: "deliveries/s, throughput".into(),
            key: "deliveries_per_s",
            ws: get(throughput, "ws", "deliveries_per_s"),
            tcp: get(throughput, "tcp", "deliveries_per_s"),
            floor: None,
            target: String::new(),
            met: None,
        },
        Row {
            label: format!("fan-out ({users}): p99 (ms)"),
            key: "fanout_p99_ms",
            ws: get(fanout, "ws", "p99_ms"),
            tcp: get(fanout, "tcp", "p99_ms"),
            floor: Some(get(fanout, "floor", "p99_ms")),
            target: "against the floor".into(),
            met: None,
        },
        Row {
            label: "server RSS per idle user (KiB)".into(),
            key: "rss_per_user_kib",
            ws: rss,
            tcp: get(fanout, "tcp", "rss_per_user_kib"),
            floor: None,
            target: format!("ws ≤ {RSS_TARGET_KIB} KiB"),
            met: rss.is_finite().then_some(rss <= RSS_TARGET_KIB),
        },
        Row {
            label: "bench CPU per delivery, throughput (µs)".into(),
            key: "bench_cpu_per_delivery_us",
            ws: get(throughput, "ws", "bench_cpu_per_delivery_us"),
            tcp: get(throughput, "tcp", "bench_cpu_per_delivery_us"),
            floor: None,
            target: "context: the load generator".into(),
            met: None,
        },
    ];
    let runs = throughput.sides.first().map_or(0, |s| s.1.len());
    let mut table = format!(
        "\n== web: the web door against TCP, issue 19's targets (medians of {runs} run(s))\n"
    );
    let _ = writeln!(
        table,
        "{:<44}{:>11}{:>11}{:>11}{:>9}{:>10}  {:<30}met",
        "", "ws", "tcp", "floor", "x tcp", "x floor", "target"
    );
    let mut json = String::from("{\"scenario\":\"web\"");
    for row in &rows {
        let floor = row.floor.unwrap_or(f64::NAN);
        let met = match row.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        let _ = writeln!(
            table,
            "{:<44}{:>11}{:>11}{:>11}{:>9}{:>10}  {:<30}{met}",
            row.label,
            show(row.ws),
            show(row.tcp),
            show(floor),
            times(row.ws / row.tcp),
            times(row.ws / floor),
            row.target,
        );
        let _ = write!(json, ",\"{}\":{{", row.key);
        let mut fields = vec![
            ("ws", row.ws),
            ("tcp", row.tcp),
            ("x_tcp", row.ws / row.tcp),
        ];
        if row.floor.is_some() {
            fields.extend([("floor", floor), ("x_floor", row.ws / floor)]);
        }
        let fields: Vec<String> = fields
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(k, v)| format!("\"{k}\":{v:.4}"))
            .collect();
        json.push_str(&fields.join(","));
        if let Some(met) = row.met {
            let _ = write!(json, ",\"met\":{met}");
        }
        json.push('}');
    }
    json.push('}');
    Some((table, json))
}

fn times(ratio: f64) -> String {
    if ratio.is_finite() {
        format!("{ratio:.2}x")
    } else {
        "-".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Better, Outcome};

    fn outcome(figures: &[(&'static str, f64)]) -> Outcome {
        let mut o = Outcome::default();
        for &(key, value) in figures {
            o.metric(key, key, value, Better::Lower);
        }
        o
    }

    #[test]
    fn the_verdict_holds_each_figure_to_its_target() {
        let throughput = Comparison {
            scenario: THROUGHPUT,
            params: "users=100".into(),
            sides: vec![
                ("ws".into(), vec![outcome(&[("cpu_per_delivery_us", 0.3)])]),
                (
                    "tcp".into(),
                    vec![outcome(&[("cpu_per_delivery_us", 0.15)])],
                ),
            ],
            baseline: Some("tcp".into()),
        };
        let fanout = Comparison {
            scenario: FANOUT,
            params: "users=5000".into(),
            sides: vec![
                (
                    "ws".into(),
                    vec![outcome(&[("p99_ms", 40.0), ("rss_per_user_kib", 6.0)])],
                ),
                (
                    "tcp".into(),
                    vec![outcome(&[("p99_ms", 30.0), ("rss_per_user_kib", 3.5)])],
                ),
                ("floor".into(), vec![outcome(&[("p99_ms", 20.0)])]),
            ],
            baseline: Some("tcp".into()),
        };
        let (table, json) = verdict(&[throughput, fanout]).expect("both tables");
        let line = |start: &str| table.lines().find(|l| l.starts_with(start)).unwrap();
        let cpu = line("server CPU per delivery");
        assert!(cpu.contains("2.00x") && cpu.ends_with("NO"), "{table}");
        let p99 = line("fan-out (users=5000): p99");
        assert!(p99.contains("1.33x") && p99.contains("2.00x"), "{table}");
        assert!(line("server RSS per idle user").ends_with("yes"), "{table}");
        assert!(
            json.contains("\"cpu_per_delivery_us\":{\"ws\":0.3000,\"tcp\":0.1500,\"x_tcp\":2.0000,\"met\":false}"),
            "{json}"
        );
        assert!(json.contains("\"x_floor\":2.0000"), "{json}");
        assert!(verdict(&[]).is_none());
    }
}
