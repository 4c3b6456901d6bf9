//! The operator's view of where time goes: Prometheus metrics, served as text on `/_metrics`.
//!
//! One [`Metrics`] per node, shared by the event loop (proposals, batches, WAL syncs, elections,
//! catch-up and snapshot transfers), the UDP transport (datagrams by fate) and the client handle
//! (requests by kind and outcome, with latency). Every handle is a cheap clone of an atomic, so
//! recording never takes a lock on the hot path.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Latency buckets: 50 µs doubling up to about 1.6 s (16 buckets).
const LATENCY_BUCKETS_START_SECONDS: f64 = 0.000_05;
const LATENCY_BUCKETS_COUNT: u16 = 16;
/// Event-loop iteration buckets: 10 µs doubling up to about 1.3 s (18 buckets).
const LOOP_BUCKETS_START_SECONDS: f64 = 0.000_01;
const LOOP_BUCKETS_COUNT: u16 = 18;
/// Batch-size buckets: 1, 2, 4, … 4096 commands.
const BATCH_BUCKETS_COUNT: u16 = 13;

/// A client request's kind and what became of it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `put`, `cas`, `delete`, `get`, `get_stale`.
    pub kind: &'static str,
    /// `ok`, `not_found`, `conflict`, `no_quorum`, `outcome_unknown`, `unavailable`, …
    pub outcome: &'static str,
}

/// A dropped datagram's reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    pub reason: &'static str,
}

/// A peer-to-peer transfer's kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransferLabels {
    /// `catch_up_requested`, `catch_up_served`, `snapshot_chunk_sent`,
    /// `snapshot_chunk_received`, `snapshot_installed`, `snapshot_taken`.
    pub kind: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(
        LATENCY_BUCKETS_START_SECONDS,
        2.0,
        LATENCY_BUCKETS_COUNT,
    ))
}

/// Every metric of one node.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<RequestLabels, Histogram, fn() -> Histogram>,
    /// Client commands handed to the consensus core.
    pub proposals: Counter,
    /// Commands per accept message this node sent as leader.
    pub batch_commands: Histogram,
    /// Undecided slots the leader has in flight.
    pub slots_in_flight: Gauge,
    pub wal_sync_seconds: Histogram,
    pub wal_bytes: Counter,
    /// Wall-clock time of one event-loop wake-up: handling its inputs and draining the core.
    /// The loop answers nothing else meanwhile, so its tail is every request's added delay.
    pub loop_iteration_seconds: Histogram,
    /// Elections this node started.
    pub elections: Counter,
    /// The round of the highest ballot this node promised.
    pub ballot_round: Gauge,
    pub transfers: Family<TransferLabels, Counter>,
    pub datagrams_sent: Counter,
    pub datagram_bytes_sent: Counter,
    pub datagrams_send_failed: Counter,
    pub datagrams_received: Counter,
    pub datagram_bytes_received: Counter,
    pub datagrams_dropped: Family<DropLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("consens");
        let requests = Family::<RequestLabels, Counter>::default();
        let request_seconds =
            Family::<RequestLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        let batch_commands = Histogram::new(exponential_buckets(1.0, 2.0, BATCH_BUCKETS_COUNT));
        let metrics = Metrics {
            requests,
            request_seconds,
            proposals: Counter::default(),
            batch_commands,
            slots_in_flight: Gauge::default(),
            wal_sync_seconds: latency_histogram(),
            wal_bytes: Counter::default(),
            loop_iteration_seconds: Histogram::new(exponential_buckets(
                LOOP_BUCKETS_START_SECONDS,
                2.0,
                LOOP_BUCKETS_COUNT,
            )),
            elections: Counter::default(),
            ballot_round: Gauge::default(),
            transfers: Family::default(),
            datagrams_sent: Counter::default(),
            datagram_bytes_sent: Counter::default(),
            datagrams_send_failed: Counter::default(),
            datagrams_received: Counter::default(),
            datagram_bytes_received: Counter::default(),
            datagrams_dropped: Family::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "requests",
            "Client requests by kind and outcome",
            metrics.requests.clone(),
        );
        r.register(
            "request_seconds",
            "Client request latency by kind and outcome",
            metrics.request_seconds.clone(),
        );
        r.register(
            "proposals",
            "Client commands handed to the consensus core",
            metrics.proposals.clone(),
        );
        r.register(
            "batch_commands",
            "Commands per accept message sent as leader",
            metrics.batch_commands.clone(),
        );
        r.register(
            "slots_in_flight",
            "Undecided slots the leader has in flight",
            metrics.slots_in_flight.clone(),
        );
        r.register(
            "wal_sync_seconds",
            "WAL group-commit sync latency",
            metrics.wal_sync_seconds.clone(),
        );
        r.register(
            "wal_bytes",
            "Payload bytes appended to the WAL",
            metrics.wal_bytes.clone(),
        );
        r.register(
            "loop_iteration_seconds",
            "Event-loop work per wake-up (inputs handled, core drained), wall clock",
            metrics.loop_iteration_seconds.clone(),
        );
        r.register(
            "elections",
            "Elections this node started",
            metrics.elections.clone(),
        );
        r.register(
            "ballot_round",
            "Round of the highest ballot promised",
            metrics.ballot_round.clone(),
        );
        r.register(
            "transfers",
            "Catch-up and snapshot transfers by kind",
            metrics.transfers.clone(),
        );
        r.register(
            "datagrams_sent",
            "Peer datagrams sent",
            metrics.datagrams_sent.clone(),
        );
        r.register(
            "datagram_bytes_sent",
            "Peer datagram bytes sent",
            metrics.datagram_bytes_sent.clone(),
        );
        r.register(
            "datagrams_send_failed",
            "Peer datagrams the kernel did not take (covered by retransmission)",
            metrics.datagrams_send_failed.clone(),
        );
        r.register(
            "datagrams_received",
            "Peer datagrams received",
            metrics.datagrams_received.clone(),
        );
        r.register(
            "datagram_bytes_received",
            "Peer datagram bytes received",
            metrics.datagram_bytes_received.clone(),
        );
        r.register(
            "datagrams_dropped",
            "Peer datagrams dropped, by reason",
            metrics.datagrams_dropped.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Counts one transfer event.
    pub fn transfer(&self, kind: &'static str) {
        self.transfers.get_or_create(&TransferLabels { kind }).inc();
    }

    /// Counts one dropped datagram.
    pub fn dropped(&self, reason: &'static str) {
        self.dropped_many(reason, 1);
    }

    /// Counts `count` more datagrams dropped for `reason`.
    pub fn dropped_many(&self, reason: &'static str, count: u64) {
        self.datagrams_dropped
            .get_or_create(&DropLabels { reason })
            .inc_by(count);
    }

    /// Records one client request.
    pub fn request(&self, kind: &'static str, outcome: &'static str, seconds: f64) {
        let labels = RequestLabels { kind, outcome };
        self.requests.get_or_create(&labels).inc();
        self.request_seconds.get_or_create(&labels).observe(seconds);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "metrics not encodable");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_was_recorded() {
        let m = Metrics::new();
        m.request("put", "ok", 0.001);
        m.dropped("malformed");
        m.transfer("snapshot_installed");
        m.wal_sync_seconds.observe(0.0002);
        m.loop_iteration_seconds.observe(0.003);
        let text = m.render();
        assert!(
            text.contains(r#"consens_requests_total{kind="put",outcome="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"consens_datagrams_dropped_total{reason="malformed"} 1"#),
            "{text}"
        );
        assert!(text.contains("consens_wal_sync_seconds_count 1"), "{text}");
        assert!(
            text.contains(r#"consens_loop_iteration_seconds_bucket{le="0.00256"} 0"#)
                && text.contains(r#"consens_loop_iteration_seconds_bucket{le="0.00512"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"consens_transfers_total{kind="snapshot_installed"} 1"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
