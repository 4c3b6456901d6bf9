//! What a bench run measured: per-worker tallies (an HDR histogram of latencies, counts by
//! operation, errors by kind), merged into one [`Report`] printed as text or JSON.

use std::collections::BTreeMap;
use std::io::Write;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The longest latency the histogram tracks, in microseconds (an hour; longer ones are clamped).
const LATENCY_US_MAX: u64 = 3_600_000_000;
/// Significant decimal digits the histogram keeps (0.1% relative error).
const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;
/// How many characters of an error message are kept as the sample of its kind.
const ERROR_SAMPLE_CHARS_MAX: usize = 200;

/// One worker's (or the merged) counts.
pub struct Tally {
    /// Latency of every successful operation (conflicts included), in microseconds.
    pub latency_us: Histogram<u64>,
    /// Successful operations by name (`put`, `get`, `cas`).
    pub ops: BTreeMap<&'static str, u64>,
    /// Compare-and-swaps that found another revision (answered, so not errors).
    pub cas_conflicts: u64,
    /// Failed operations by error kind.
    pub errors: BTreeMap<String, u64>,
    /// The first message seen of each error kind, to tell the person what happened.
    pub error_samples: BTreeMap<String, String>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally::new()
    }
}

impl Tally {
    /// An empty tally.
    pub fn new() -> Tally {
        Tally {
            latency_us: Histogram::new_with_bounds(1, LATENCY_US_MAX, LATENCY_SIGNIFICANT_DIGITS)
                .unwrap_or_else(|_| Histogram::new(LATENCY_SIGNIFICANT_DIGITS).expect("3 digits")),
            ops: BTreeMap::new(),
            cas_conflicts: 0,
            errors: BTreeMap::new(),
            error_samples: BTreeMap::new(),
        }
    }

    /// Counts one answered operation that took `latency_us`.
    pub fn ok(&mut self, op: &'static str, latency_us: u64) {
        self.latency_us
            .saturating_record(latency_us.clamp(1, LATENCY_US_MAX));
        *self.ops.entry(op).or_insert(0) += 1;
    }

    /// Counts one failed operation.
    pub fn error(&mut self, kind: &str, message: &str) {
        *self.errors.entry(kind.to_string()).or_insert(0) += 1;
        self.error_samples
            .entry(kind.to_string())
            .or_insert_with(|| message.chars().take(ERROR_SAMPLE_CHARS_MAX).collect());
    }

    /// Adds `other` into this tally.
    pub fn merge(&mut self, other: Tally) {
        // Both histograms share bounds, so adding cannot fail; if it ever did, say so.
        if let Err(e) = self.latency_us.add(&other.latency_us) {
            self.error("report", &format!("histogram merge failed: {e}"));
        }
        for (op, n) in other.ops {
            *self.ops.entry(op).or_insert(0) += n;
        }
        self.cas_conflicts += other.cas_conflicts;
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_insert(0) += n;
        }
        for (kind, message) in other.error_samples {
            self.error_samples.entry(kind).or_insert(message);
        }
    }

    /// Successful operations.
    pub fn ok_total(&self) -> u64 {
        self.ops.values().sum()
    }

    /// Failed operations.
    pub fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// The slowest operation.
    pub max: f64,
    /// The arithmetic mean.
    pub mean: f64,
}

/// The whole run, as printed. Field names are the JSON keys.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// `line` or `http`.
    pub protocol: super::args::Protocol,
    /// The node addresses given.
    pub nodes: Vec<String>,
    /// Concurrent clients.
    pub clients: usize,
    /// Requests in flight per client.
    pub pipeline: usize,
    /// TCP connections the load used.
    pub connections: usize,
    /// Bytes per written value.
    pub value_size: usize,
    /// Distinct keys.
    pub keys: u64,
    /// The operation weights.
    pub mix: String,
    /// Whether every key was written once before the measured run.
    pub prefilled: bool,
    /// Wall time of the measured run, in seconds.
    pub elapsed_secs: f64,
    /// Operations attempted (successes plus errors).
    pub requests: u64,
    /// Successful operations (compare-and-swap conflicts count as answered).
    pub ok: u64,
    /// Failed operations.
    pub errors_total: u64,
    /// Successful operations per second.
    pub throughput_ops_per_sec: f64,
    /// Latency of successful operations.
    pub latency_ms: Latency,
    /// Successful operations by kind.
    pub ops: BTreeMap<String, u64>,
    /// Compare-and-swaps that met another revision.
    pub cas_conflicts: u64,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// One message per error kind.
    pub error_samples: BTreeMap<String, String>,
}

/// Everything about the run's setup the report repeats.
/// (Each field is copied into the [`Report`] field of the same name.)
pub struct Setup {
    /// `line` or `http`.
    pub protocol: super::args::Protocol,
    /// The node addresses given.
    pub nodes: Vec<String>,
    /// Concurrent clients.
    pub clients: usize,
    /// Requests in flight per client.
    pub pipeline: usize,
    /// TCP connections the load used.
    pub connections: usize,
    /// Bytes per written value.
    pub value_size: usize,
    /// Distinct keys.
    pub keys: u64,
    /// The operation weights, as `put=..,get=..,cas=..`.
    pub mix: String,
    /// Whether every key was written once before the measured run.
    pub prefilled: bool,
}

impl Report {
    /// Builds the report from the merged tally and the measured wall time.
    pub fn new(setup: Setup, tally: &Tally, elapsed_secs: f64) -> Report {
        let ms = |us: u64| us as f64 / 1000.0;
        let h = &tally.latency_us;
        let ok = tally.ok_total();
        let errors_total = tally.errors_total();
        Report {
            protocol: setup.protocol,
            nodes: setup.nodes,
            clients: setup.clients,
            pipeline: setup.pipeline,
            connections: setup.connections,
            value_size: setup.value_size,
            keys: setup.keys,
            mix: setup.mix,
            prefilled: setup.prefilled,
            elapsed_secs,
            requests: ok + errors_total,
            ok,
            errors_total,
            throughput_ops_per_sec: if elapsed_secs > 0.0 {
                ok as f64 / elapsed_secs
            } else {
                0.0
            },
            latency_ms: Latency {
                p50: ms(h.value_at_quantile(0.50)),
                p90: ms(h.value_at_quantile(0.90)),
                p99: ms(h.value_at_quantile(0.99)),
                p999: ms(h.value_at_quantile(0.999)),
                max: ms(h.max()),
                mean: h.mean() / 1000.0,
            },
            ops: tally
                .ops
                .iter()
                .map(|(k, v)| ((*k).to_string(), *v))
                .collect(),
            cas_conflicts: tally.cas_conflicts,
            errors: tally.errors.clone(),
            error_samples: tally.error_samples.clone(),
        }
    }

    /// Writes the report for people.
    pub fn write_text(&self, out: &mut impl Write) -> std::io::Result<()> {
        let protocol = match self.protocol {
            super::args::Protocol::Line => "line protocol (pipelined)",
            super::args::Protocol::Http => "HTTP/1.1 keep-alive",
        };
        writeln!(
            out,
            "consens bench: {protocol} to {} node(s) [{}]",
            self.nodes.len(),
            self.nodes.join(", ")
        )?;
        writeln!(
            out,
            "  {} clients x pipeline {} = {} requests in flight over {} connections; mix {}; {} B values; {} keys{}",
            self.clients,
            self.pipeline,
            self.clients * self.pipeline,
            self.connections,
            self.mix,
            self.value_size,
            self.keys,
            if self.prefilled { " (prefilled)" } else { "" }
        )?;
        writeln!(
            out,
            "requests:   {} in {:.2} s ({} ok, {} errors)",
            self.requests, self.elapsed_secs, self.ok, self.errors_total
        )?;
        writeln!(out, "throughput: {:.0} ops/s", self.throughput_ops_per_sec)?;
        let l = &self.latency_ms;
        writeln!(
            out,
            "latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  (mean {:.3})",
            l.p50, l.p90, l.p99, l.p999, l.max, l.mean
        )?;
        let ops: Vec<String> = self.ops.iter().map(|(k, v)| format!("{k} {v}")).collect();
        writeln!(out, "ops:        {}", ops.join(", "))?;
        if self.cas_conflicts > 0 {
            writeln!(out, "cas conflicts (answered): {}", self.cas_conflicts)?;
        }
        if self.errors.is_empty() {
            writeln!(out, "errors:     none")?;
        } else {
            writeln!(out, "errors by kind:")?;
            for (kind, n) in &self.errors {
                let sample = self.error_samples.get(kind).map_or("", String::as_str);
                writeln!(out, "  {kind}: {n}  (e.g. {sample})")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_merge_and_report() {
        let mut a = Tally::new();
        for us in 1..=1000 {
            a.ok("put", us);
        }
        let mut b = Tally::new();
        b.ok("get", 5000);
        b.error("no_quorum", "no quorum: the request was not proposed");
        b.error("no_quorum", "second");
        a.merge(b);
        assert_eq!(a.ok_total(), 1001);
        assert_eq!(a.errors_total(), 2);
        let setup = Setup {
            protocol: super::super::args::Protocol::Line,
            nodes: vec!["n".into()],
            clients: 1,
            pipeline: 1,
            connections: 1,
            value_size: 100,
            keys: 10,
            mix: "put=1".into(),
            prefilled: false,
        };
        let report = Report::new(setup, &a, 2.0);
        assert!((report.throughput_ops_per_sec - 500.5).abs() < 1e-9);
        assert!((report.latency_ms.p50 - 0.5).abs() < 0.01);
        assert!((report.latency_ms.max - 5.0).abs() < 0.01);
        assert_eq!(report.errors.get("no_quorum"), Some(&2));
        assert_eq!(
            report.error_samples.get("no_quorum").map(String::as_str),
            Some("no quorum: the request was not proposed")
        );
        let mut text = Vec::new();
        report.write_text(&mut text).expect("writes");
        let text = String::from_utf8(text).expect("utf8");
        assert!(text.contains("p99.9"), "{text}");
        let json = serde_json::to_value(&report).expect("json");
        assert!(json["latency_ms"]["p999"].is_number());
    }
}
