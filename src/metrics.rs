//! Prometheus metrics, under the upstream's names where they exist (contract §12.2) so existing
//! dashboards keep working.

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// The service's metrics and the registry they are exposed from.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `export_service_http_requests_total{code, method}`.
    pub http_requests: IntCounterVec,
    /// `export_service_http_response_time_seconds{method}`.
    pub http_response_time: HistogramVec,
    /// `export_service_exports_created_total{format}`: exports accepted by the public API.
    pub exports_created: IntCounterVec,
    /// `export_service_kafka_produced{topic}`: events acknowledged by the broker.
    pub kafka_produced: IntCounterVec,
    /// `export_service_kafka_produce_failures{topic}`: events the broker did not acknowledge.
    pub kafka_produce_failures: IntCounterVec,
    /// `export_service_publish_seconds{topic}`: time from hand-off to acknowledgement.
    pub publish_seconds: HistogramVec,
    /// `export_service_outbox_pending`: events not yet acknowledged.
    pub outbox_pending: IntGauge,
    /// `export_service_outbox_oldest_age_seconds`: how long the oldest of them has waited.
    pub outbox_oldest_age: Gauge,
}

impl Metrics {
    /// Creates and registers every metric, plus the process collector (memory, CPU, fds).
    pub fn new() -> Self {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "export_service_http_requests_total",
                "HTTP requests by status code and method",
            ),
            &["code", "method"],
        )
        .expect("valid metric");
        let http_response_time = HistogramVec::new(
            HistogramOpts::new(
                "export_service_http_response_time_seconds",
                "HTTP response time by method",
            ),
            &["method"],
        )
        .expect("valid metric");
        let exports_created = IntCounterVec::new(
            Opts::new(
                "export_service_exports_created_total",
                "Exports accepted by the public API, by format",
            ),
            &["format"],
        )
        .expect("valid metric");
        let kafka_produced = IntCounterVec::new(
            Opts::new(
                "export_service_kafka_produced",
                "Events acknowledged by the broker",
            ),
            &["topic"],
        )
        .expect("valid metric");
        let kafka_produce_failures = IntCounterVec::new(
            Opts::new(
                "export_service_kafka_produce_failures",
                "Events the broker did not acknowledge (they are retried)",
            ),
            &["topic"],
        )
        .expect("valid metric");
        let publish_seconds = HistogramVec::new(
            HistogramOpts::new(
                "export_service_publish_seconds",
                "Time from handing an event to the producer to its acknowledgement",
            ),
            &["topic"],
        )
        .expect("valid metric");
        let outbox_pending = IntGauge::new(
            "export_service_outbox_pending",
            "Events in the outbox not yet acknowledged by the broker",
        )
        .expect("valid metric");
        let outbox_oldest_age = Gauge::new(
            "export_service_outbox_oldest_age_seconds",
            "Age of the oldest unacknowledged event in the outbox",
        )
        .expect("valid metric");
        for collector in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_response_time.clone()),
            Box::new(exports_created.clone()),
            Box::new(kafka_produced.clone()),
            Box::new(kafka_produce_failures.clone()),
            Box::new(publish_seconds.clone()),
            Box::new(outbox_pending.clone()),
            Box::new(outbox_oldest_age.clone()),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ] {
            registry
                .register(collector)
                .expect("metric registered once");
        }
        Self {
            registry,
            http_requests,
            http_response_time,
            exports_created,
            kafka_produced,
            kafka_produce_failures,
            publish_seconds,
            outbox_pending,
            outbox_oldest_age,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("encoding metrics into memory cannot fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Metrics")
    }
}
