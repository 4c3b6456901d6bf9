//! The flags of `consens bench`, and the parsing of the two that are not plain numbers
//! (`--duration` and `--mix`).

use std::time::Duration;

use crate::bench::workload::Mix;

/// Default run length when neither `--duration` nor `--requests` is given, in seconds.
pub const DURATION_SECS_DEFAULT: u64 = 10;
/// Default requests each line-protocol client keeps in flight.
pub const PIPELINE_LINE_DEFAULT: usize = 16;
/// Default requests each HTTP client keeps in flight (one connection per request in flight).
pub const PIPELINE_HTTP_DEFAULT: usize = 1;
/// The most concurrent requests a run may ask for (`--clients` × `--pipeline`).
pub const CONCURRENCY_MAX: usize = 65_536;

/// The protocol the load goes through.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// The line protocol through [`crate::client::Client`], pipelined.
    Line,
    /// HTTP/1.1 with keep-alive, one request in flight per connection.
    Http,
}

/// `consens bench`: drive a running cluster and report throughput, latency and errors.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// `line`: the pipelined line protocol via the client library; `http`: the HTTP API.
    #[arg(long, value_enum, default_value_t = Protocol::Line)]
    pub protocol: Protocol,
    /// Node addresses (comma-separated): line-protocol addresses (HTTP port + 1) for
    /// `--protocol line`, HTTP addresses for `--protocol http`. With several, client i starts at
    /// node i mod N, spreading the load. Default: 127.0.0.1:3001 (line) or 127.0.0.1:3000 (http).
    #[arg(long, value_delimiter = ',')]
    pub nodes: Vec<String>,
    /// Concurrent clients; each has its own connection (line) or connections (http).
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Requests each client keeps in flight: line protocol, pipelined on its one connection
    /// (default 16); http, one connection per request in flight (default 1).
    #[arg(long)]
    pub pipeline: Option<usize>,
    /// How long to run: `10s`, `500ms`, `1m` or plain seconds (default 10 s).
    #[arg(long, value_parser = parse_duration, conflicts_with = "requests")]
    pub duration: Option<Duration>,
    /// Stop after this many requests in total instead of after a duration.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Bytes per written value.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Distinct keys, chosen uniformly at random.
    #[arg(long, default_value_t = 1000)]
    pub keys: u64,
    /// Operation mix as weights: `put=..,get=..,cas=..` (e.g. `put=50,get=50`).
    #[arg(long, value_parser = Mix::parse, default_value = "put=100")]
    pub mix: Mix,
    /// Prefix of every key, so runs can stay apart.
    #[arg(long, default_value = "bench/")]
    pub key_prefix: String,
    /// Do not write every key once before the run (reads of missing keys count as successes).
    #[arg(long)]
    pub no_prefill: bool,
    /// A request without reply after this many milliseconds counts as an error.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Print the report as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

impl BenchArgs {
    /// `--pipeline`, or the protocol's default.
    pub fn pipeline(&self) -> usize {
        self.pipeline.unwrap_or(match self.protocol {
            Protocol::Line => PIPELINE_LINE_DEFAULT,
            Protocol::Http => PIPELINE_HTTP_DEFAULT,
        })
    }

    /// `--nodes`, or the protocol's default address of a local default node.
    pub fn nodes(&self) -> Vec<String> {
        if !self.nodes.is_empty() {
            return self.nodes.clone();
        }
        vec![match self.protocol {
            Protocol::Line => "127.0.0.1:3001".to_string(),
            Protocol::Http => "127.0.0.1:3000".to_string(),
        }]
    }

    /// Checks the combinations clap cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.clients == 0 || self.pipeline() == 0 {
            return Err("--clients and --pipeline must be at least 1".into());
        }
        if self.clients.saturating_mul(self.pipeline()) > CONCURRENCY_MAX {
            return Err(format!(
                "--clients × --pipeline must be at most {CONCURRENCY_MAX}"
            ));
        }
        if self.keys == 0 {
            return Err("--keys must be at least 1".into());
        }
        if self.value_size > crate::server::VALUE_BYTES_MAX {
            return Err(format!(
                "--value-size must be at most {}",
                crate::server::VALUE_BYTES_MAX
            ));
        }
        Ok(())
    }
}

/// Parses `10s`, `250ms`, `2m` or a plain number of seconds (fractions allowed).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale_secs) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("not a duration: '{text}' (try 10s, 500ms, 1m)"))?;
    if !value.is_finite() || value <= 0.0 {
        return Err(format!("the duration must be positive: '{text}'"));
    }
    Duration::try_from_secs_f64(value * scale_secs).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
