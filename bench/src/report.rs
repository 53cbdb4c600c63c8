//! Results: what a scenario run measured, the human table, and one
//! machine-readable JSON line per scenario with the ratios.

use std::fmt::Write as _;

use crate::control::Tally;

/// Which way a number is good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
    /// Context only; no ratio.
    Neither,
}

#[derive(Debug, Clone)]
pub struct Metric {
    /// Key in the JSON line.
    pub key: &'static str,
    /// Row label in the table.
    pub label: &'static str,
    pub value: f64,
    pub better: Better,
}

/// One scenario run against one server.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub metrics: Vec<Metric>,
    /// Everything that makes the run a failure (losses, refusals, timeouts).
    pub problems: Vec<String>,
    /// Counters worth seeing even when fine (`DROPPED`, errors).
    pub notes: Vec<String>,
}

impl Outcome {
    pub fn metric(&mut self, key: &'static str, label: &'static str, value: f64, better: Better) {
        self.metrics.push(Metric {
            key,
            label,
            value,
            better,
        });
    }

    /// The value of metric `key`, if measured.
    pub fn value(&self, key: &str) -> Option<f64> {
        self.metrics.iter().find(|m| m.key == key).map(|m| m.value)
    }

    /// Turns the delivery checks of a tally into problems and notes.
    pub fn check_deliveries(&mut self, tally: &Tally, strict: bool) {
        let c = &tally.counts;
        if c.faults() > 0 {
            self.problems.push(format!(
                "messages lost {}, duplicated {}, reordered {}, foreign {}",
                c.lost, c.duplicated, c.reordered, c.foreign
            ));
        }
        if tally.distinct_orders() > 1 {
            let mut seen: Vec<String> = tally.orders.iter().map(|o| o.1.to_string()).collect();
            if tally.orders_other > 0 {
                seen.push(format!("{} in yet others", tally.orders_other));
            }
            self.problems.push(format!(
                "no total order: receivers saw the run's messages in {} different orders \
                 (receivers per order: {})",
                tally.distinct_orders(),
                seen.join(", ")
            ));
        }
        let disordered = tally.disordered_rooms();
        if disordered > 0 {
            self.problems.push(format!(
                "no order per room: in {disordered} rooms the members saw the room's messages \
                 in different orders"
            ));
        }
        if tally.incomplete > 0 {
            self.problems.push(format!(
                "{} users did not see every message in time",
                tally.incomplete
            ));
        }
        if c.dropped_frames > 0 || c.skipped > 0 {
            let note = format!(
                "DROPPED: {} frames reported, {} bench messages skipped",
                c.dropped_frames, c.skipped
            );
            if strict {
                self.problems.push(note);
            } else {
                self.notes.push(note);
            }
        }
        for e in &tally.errors {
            self.notes.push(format!("error: {e}"));
        }
    }
}

/// All runs of one scenario: ours, and the peer's if comparing.
pub struct Comparison<'a> {
    pub scenario: &'a str,
    pub params: String,
    pub sides: Vec<(String, Vec<Outcome>)>,
    /// The second side is a baseline that the first is a multiple of, by
    /// this name: the machine's floor (no chat server; `x floor`: 1.0 is as
    /// good as it gets), the lobby for rooms (`x lobby`). The ratio is then
    /// the first side's value over the second's, rather than how many times
    /// better the first is. With more than two sides, the first is shown
    /// as a multiple of each of the others, named by their labels.
    pub baseline: Option<String>,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// How many times better the first side is than the second on `better`.
fn ratio(better: Better, ours: f64, peer: f64) -> Option<f64> {
    let r = match better {
        Better::Higher => ours / peer,
        Better::Lower => peer / ours,
        Better::Neither => return None,
    };
    r.is_finite().then_some(r)
}

/// A figure for a table: fewer decimals the larger it is, `-` if none.
pub(crate) fn show(value: f64) -> String {
    if !value.is_finite() {
        "-".to_owned()
    } else if value.abs() >= 1000.0 {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

impl Comparison<'_> {
    /// The ratio of the two sides' values for a metric, if it has one.
    fn ratio(&self, better: Better, ours: f64, peer: f64) -> Option<f64> {
        if self.baseline.is_none() {
            return ratio(better, ours, peer);
        }
        let r = ours / peer;
        (better != Better::Neither && r.is_finite()).then_some(r)
    }

    fn ratio_name(&self) -> String {
        match &self.baseline {
            Some(baseline) => format!("x {baseline}"),
            None => "ratio".to_owned(),
        }
    }

    /// The ratio columns: which side over which, and the column's name.
    fn ratio_columns(&self) -> Vec<(usize, usize, String)> {
        match (self.sides.len(), &self.baseline) {
            (2, _) => vec![(0, 1, self.ratio_name())],
            (n, Some(_)) if n > 2 => (1..n)
                .map(|i| (0, i, format!("x {}", self.sides[i].0)))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Metric keys in first-seen order, with labels and direction.
    fn rows(&self) -> Vec<(&'static str, &'static str, Better)> {
        let mut rows: Vec<(&str, &str, Better)> = Vec::new();
        for (_, outcomes) in &self.sides {
            for m in outcomes.iter().flat_map(|o| &o.metrics) {
                if !rows.iter().any(|r| r.0 == m.key) {
                    rows.push((m.key, m.label, m.better));
                }
            }
        }
        rows
    }

    fn medians(&self, key: &str) -> Vec<f64> {
        self.sides
            .iter()
            .map(|(_, outcomes)| {
                let mut values: Vec<f64> = outcomes
                    .iter()
                    .flat_map(|o| &o.metrics)
                    .filter(|m| m.key == key)
                    .map(|m| m.value)
                    .collect();
                median(&mut values)
            })
            .collect()
    }

    /// The median of metric `key` on the side labelled `side`, if that
    /// side measured it.
    pub fn median(&self, side: &str, key: &str) -> Option<f64> {
        let index = self.sides.iter().position(|s| s.0 == side)?;
        let value = self.medians(key)[index];
        value.is_finite().then_some(value)
    }

    /// The human table (medians over runs) and what went wrong, if anything.
    pub fn table(&self) -> String {
        let runs = self.sides.first().map_or(0, |s| s.1.len());
        let mut out = format!(
            "\n== {} ({}; median of {runs} run(s))\n",
            self.scenario, self.params
        );
        let mut header = format!("{:<34}", "");
        for (label, _) in &self.sides {
            let _ = write!(header, "{label:>14}");
        }
        let columns = self.ratio_columns();
        for (_, _, name) in &columns {
            let _ = write!(header, "{name:>12}");
        }
        out.push_str(header.trim_end());
        out.push('\n');
        for (key, label, better) in self.rows() {
            let values = self.medians(key);
            let mut row = format!("{label:<34}");
            for v in &values {
                let _ = write!(row, "{:>14}", show(*v));
            }
            for &(first, second, _) in &columns {
                match self.ratio(better, values[first], values[second]) {
                    Some(r) if columns.len() > 1 => {
                        let _ = write!(row, "{:>11.2}x", r);
                    }
                    Some(r) => {
                        let _ = write!(row, "{:>11.1}x", r);
                    }
                    None => {
                        let _ = write!(row, "{:>12}", "");
                    }
                }
            }
            let row = row.trim_end().to_owned();
            out.push_str(&row);
            out.push('\n');
        }
        for (label, outcomes) in &self.sides {
            for (run, o) in outcomes.iter().enumerate() {
                for p in &o.problems {
                    let _ = writeln!(out, "FAIL {label} run {}: {p}", run + 1);
                }
                for n in &o.notes {
                    let _ = writeln!(out, "note {label} run {}: {n}", run + 1);
                }
            }
        }
        out
    }

    /// One JSON line: parameters, each side's medians and problems, ratios.
    pub fn json(&self) -> String {
        let mut out = format!(
            "{{\"scenario\":\"{}\",\"params\":\"{}\"",
            self.scenario, self.params
        );
        let rows = self.rows();
        let all: Vec<Vec<f64>> = rows.iter().map(|r| self.medians(r.0)).collect();
        for (i, (label, outcomes)) in self.sides.iter().enumerate() {
            let _ = write!(out, ",\"{label}\":{{\"runs\":{}", outcomes.len());
            for (row, values) in rows.iter().zip(&all) {
                if values[i].is_finite() {
                    let _ = write!(out, ",\"{}\":{}", row.0, values[i]);
                }
            }
            let problems: usize = outcomes.iter().map(|o| o.problems.len()).sum();
            let _ = write!(out, ",\"problems\":{problems}}}");
        }
        for (one, other, name) in self.ratio_columns() {
            let key = name.replace(' ', "_");
            let _ = write!(out, ",\"{key}\":{{");
            let mut first = true;
            for (row, values) in rows.iter().zip(&all) {
                if let Some(r) = self.ratio(row.2, values[one], values[other]) {
                    let _ = write!(out, "{}\"{}\":{r:.3}", if first { "" } else { "," }, row.0);
                    first = false;
                }
            }
            out.push('}');
        }
        out.push('}');
        out
    }

    pub fn failed(&self) -> bool {
        self.sides
            .iter()
            .any(|(_, outcomes)| outcomes.iter().any(|o| !o.problems.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(value: f64) -> Outcome {
        let mut o = Outcome::default();
        o.metric("rate", "deliveries/s", value, Better::Higher);
        o.metric("p99_ms", "p99 ms", 1000.0 / value, Better::Lower);
        o
    }

    #[test]
    fn ratios_favour_the_better_side_both_ways() {
        let c = Comparison {
            scenario: "throughput",
            params: "users=2".into(),
            sides: vec![
                (
                    "ours".into(),
                    vec![outcome(100.0), outcome(300.0), outcome(200.0)],
                ),
                ("peer".into(), vec![outcome(10.0)]),
            ],
            baseline: None,
        };
        let json = c.json();
        assert!(
            json.contains("\"ratio\":{\"rate\":20.000,\"p99_ms\":20.000}"),
            "{json}"
        );
        assert!(c.table().contains("20.0x"));
        assert!(!c.failed());
    }

    #[test]
    fn against_the_floor_ours_is_a_multiple_of_it() {
        let c = Comparison {
            scenario: "fanout",
            params: "users=2".into(),
            sides: vec![
                ("ours".into(), vec![outcome(10.0)]),
                ("floor".into(), vec![outcome(40.0)]),
            ],
            baseline: Some("floor".into()),
        };
        let json = c.json();
        // Both ways: ours is a quarter of the floor's rate and takes 4x
        // its time.
        assert!(
            json.contains("\"x_floor\":{\"rate\":0.250,\"p99_ms\":4.000}"),
            "{json}"
        );
        assert!(c.table().contains("x floor"));
    }

    #[test]
    fn with_three_sides_the_first_is_a_multiple_of_each_other() {
        let c = Comparison {
            scenario: "budgets",
            params: "users=2".into(),
            sides: vec![
                ("on".into(), vec![outcome(10.0)]),
                ("off".into(), vec![outcome(10.0)]),
                ("floor".into(), vec![outcome(40.0)]),
            ],
            baseline: Some("off".into()),
        };
        let json = c.json();
        assert!(
            json.contains("\"x_off\":{\"rate\":1.000,\"p99_ms\":1.000}"),
            "{json}"
        );
        assert!(
            json.contains("\"x_floor\":{\"rate\":0.250,\"p99_ms\":4.000}"),
            "{json}"
        );
        let table = c.table();
        assert!(table.contains("x off     x floor"), "{table}");
        assert!(table.contains("1.00x       0.25x"), "{table}");
    }
}
