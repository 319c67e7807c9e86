//! Prometheus metrics, under the upstream's names where they exist (contract §12.2) so existing
//! dashboards keep working.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
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
        for collector in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_response_time.clone()),
            Box::new(exports_created.clone()),
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
