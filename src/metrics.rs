//! Prometheus metrics, under the upstream's names where they exist (contract §12.2) so existing
//! dashboards keep working.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
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
    /// `export_service_internal_api_requests_total{base_path}` (upstream name).
    pub internal_requests: IntCounterVec,
    /// `export_service_total_s3_uploads`: uploads stored (upstream name).
    pub uploads: IntCounter,
    /// `export_service_failed_s3_uploads`: uploads not stored (upstream name).
    pub failed_uploads: IntCounter,
    /// `export_service_upload_sizes{app}`: stored upload sizes in bytes (upstream name, buckets).
    pub upload_sizes: HistogramVec,
    /// `export_service_packaging_seconds`: time to build and store an archive.
    pub packaging_seconds: Histogram,
    /// `export_service_packaged_bytes_total`: archive bytes written.
    pub packaged_bytes: IntCounter,
    /// `export_service_packaging_failures_total`: packaging attempts that failed.
    pub packaging_failures: IntCounter,
    /// `export_service_plugin_invocations_total{plugin, version}`: uploads run through a plugin.
    pub plugin_invocations: IntCounterVec,
    /// `export_service_plugin_failures_total{plugin, version, reason}`: uploads a plugin failed
    /// or rejected.
    pub plugin_failures: IntCounterVec,
    /// `export_service_plugin_seconds{plugin, version}`: wall time of uploads through a plugin.
    pub plugin_seconds: HistogramVec,
    /// `export_service_plugin_binding_info{application, resource, scope, plugin, version}`: how
    /// many registry bindings in force on this replica have these labels (organisation-scoped
    /// ones are counted, not named, to bound the series).
    pub plugin_binding_info: IntGaugeVec,
    /// `export_service_plugin_load_failures_total{plugin, version}`: bindings this replica could
    /// not apply (it kept the previous one).
    pub plugin_load_failures: IntCounterVec,
    /// `export_service_plugin_canary_rollbacks_total{application}`: canaries this replica rolled
    /// back because they failed more than the stable version.
    pub plugin_canary_rollbacks: IntCounterVec,
    /// `export_service_plugin_loads_total{source}`: registry plugins this replica made ready,
    /// by how (`compiled`, or the fleet's artefact from the object `store` or the `disk`).
    pub plugin_loads: IntCounterVec,
    /// Requests refused because they reached a limit, by limit (`payload_size`,
    /// `upload_slots`, `upload_duration`, `connections`, …).
    pub refusals: IntCounterVec,
    /// Upload slots in use on this replica, by application.
    pub upload_slots_in_use: IntGaugeVec,
    /// Packaging attempts that failed for a transient cause and were rescheduled.
    pub packaging_retries: IntCounter,
    /// Age of the oldest packaging job not yet finished (due, being built or waiting for a
    /// retry).
    pub packaging_oldest_waiting: Gauge,
    /// Object store operations that failed and are retried, by operation.
    pub store_retries: IntCounterVec,
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
        let internal_requests = IntCounterVec::new(
            Opts::new(
                "export_service_internal_api_requests_total",
                "Internal API requests by mount",
            ),
            &["base_path"],
        )
        .expect("valid metric");
        let uploads = IntCounter::new("export_service_total_s3_uploads", "Uploads stored")
            .expect("valid metric");
        let failed_uploads = IntCounter::new(
            "export_service_failed_s3_uploads",
            "Uploads that were not stored",
        )
        .expect("valid metric");
        let upload_sizes = HistogramVec::new(
            HistogramOpts::new(
                "export_service_upload_sizes",
                "Stored upload sizes in bytes",
            )
            .buckets(vec![10_240.0, 102_400.0, 1_024_000.0, 10_240_000.0]),
            &["app"],
        )
        .expect("valid metric");
        let packaging_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "export_service_packaging_seconds",
                "Time to build and store one archive",
            )
            .buckets(vec![0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0]),
        )
        .expect("valid metric");
        let packaged_bytes = IntCounter::new(
            "export_service_packaged_bytes_total",
            "Archive bytes written",
        )
        .expect("valid metric");
        let packaging_failures = IntCounter::new(
            "export_service_packaging_failures_total",
            "Packaging attempts that failed",
        )
        .expect("valid metric");
        let plugin_labels = ["plugin", "version"];
        let plugin_invocations = IntCounterVec::new(
            Opts::new(
                "export_service_plugin_invocations_total",
                "Uploads run through a plugin, by plugin and version",
            ),
            &plugin_labels,
        )
        .expect("valid metric");
        let plugin_failures = IntCounterVec::new(
            Opts::new(
                "export_service_plugin_failures_total",
                "Uploads a plugin failed or rejected, by plugin, version and reason",
            ),
            &["plugin", "version", "reason"],
        )
        .expect("valid metric");
        let plugin_seconds = HistogramVec::new(
            HistogramOpts::new(
                "export_service_plugin_seconds",
                "Wall time of uploads through a plugin, by plugin and version",
            ),
            &plugin_labels,
        )
        .expect("valid metric");
        let plugin_binding_info = IntGaugeVec::new(
            Opts::new(
                "export_service_plugin_binding_info",
                "Registry bindings in force on this replica, by scope",
            ),
            &["application", "resource", "scope", "plugin", "version"],
        )
        .expect("valid metric");
        let plugin_load_failures = IntCounterVec::new(
            Opts::new(
                "export_service_plugin_load_failures_total",
                "Plugin bindings this replica could not apply, by plugin and version",
            ),
            &plugin_labels,
        )
        .expect("valid metric");
        let plugin_canary_rollbacks = IntCounterVec::new(
            Opts::new(
                "export_service_plugin_canary_rollbacks_total",
                "Plugin canaries rolled back automatically, by application",
            ),
            &["application"],
        )
        .expect("valid metric");
        let plugin_loads = IntCounterVec::new(
            Opts::new(
                "export_service_plugin_loads_total",
                "Registry plugins this replica made ready, by source (compiled, store, disk)",
            ),
            &["source"],
        )
        .expect("valid metric");
        let refusals = IntCounterVec::new(
            Opts::new(
                "export_service_refusals_total",
                "Requests refused because they reached a limit, by limit",
            ),
            &["limit"],
        )
        .expect("valid metric");
        let upload_slots_in_use = IntGaugeVec::new(
            Opts::new(
                "export_service_upload_slots_in_use",
                "Upload slots in use on this replica, by application",
            ),
            &["application"],
        )
        .expect("valid metric");
        let packaging_retries = IntCounter::new(
            "export_service_packaging_retries_total",
            "Packaging attempts that failed for a transient cause and were rescheduled",
        )
        .expect("valid metric");
        let packaging_oldest_waiting = Gauge::new(
            "export_service_packaging_oldest_waiting_seconds",
            "Age of the oldest packaging job not yet finished",
        )
        .expect("valid metric");
        let store_retries = IntCounterVec::new(
            Opts::new(
                "export_service_store_retries_total",
                "Object store operations that failed transiently and are retried, by operation",
            ),
            &["operation"],
        )
        .expect("valid metric");
        for collector in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(refusals.clone()),
            Box::new(upload_slots_in_use.clone()),
            Box::new(packaging_retries.clone()),
            Box::new(packaging_oldest_waiting.clone()),
            Box::new(store_retries.clone()),
            Box::new(plugin_invocations.clone()),
            Box::new(plugin_failures.clone()),
            Box::new(plugin_seconds.clone()),
            Box::new(plugin_binding_info.clone()),
            Box::new(plugin_load_failures.clone()),
            Box::new(plugin_canary_rollbacks.clone()),
            Box::new(plugin_loads.clone()),
            Box::new(internal_requests.clone()),
            Box::new(uploads.clone()),
            Box::new(failed_uploads.clone()),
            Box::new(upload_sizes.clone()),
            Box::new(packaging_seconds.clone()),
            Box::new(packaged_bytes.clone()),
            Box::new(packaging_failures.clone()),
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
            internal_requests,
            uploads,
            failed_uploads,
            upload_sizes,
            packaging_seconds,
            packaged_bytes,
            packaging_failures,
            plugin_invocations,
            plugin_failures,
            plugin_seconds,
            plugin_binding_info,
            plugin_load_failures,
            plugin_canary_rollbacks,
            plugin_loads,
            refusals,
            upload_slots_in_use,
            packaging_retries,
            packaging_oldest_waiting,
            store_retries,
        }
    }

    /// Counts a request refused at `limit` (`export_service_refusals_total`).
    pub fn refuse(&self, limit: &str) {
        self.refusals.with_label_values(&[limit]).inc();
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
