//! Facts about the pinned versions, taken from their sources: which components Jaeger 2.15.0
//! is built with and which settings each accepts.

/// The component types Jaeger 2.15.0 is built with, by section: cmd/jaeger/internal/
/// components.go at tag v2.15.0 (jaegertracing/jaeger), the types from each factory's
/// `MustNewType` (collector v0.145.0 names the OTLP exporters otlp_grpc and otlp_http and keeps
/// otlp and otlphttp as deprecated aliases).
pub const JAEGER_COMPONENTS: [(&str, &[&str]); 5] = [
    (
        "extensions",
        &[
            "healthcheckv2",
            "pprof",
            "zpages",
            "basicauth",
            "sigv4auth",
            "jaeger_mcp",
            "jaeger_query",
            "jaeger_storage",
            "remote_sampling",
            "expvar",
            "storage_cleaner",
            "remote_storage",
        ],
    ),
    ("receivers", &["otlp", "nop", "jaeger", "kafka", "zipkin"]),
    (
        "exporters",
        &[
            "debug",
            "otlp_grpc",
            "otlp",
            "otlp_http",
            "otlphttp",
            "nop",
            "jaeger_storage_exporter",
            "kafka",
            "prometheus",
        ],
    ),
    (
        "processors",
        &[
            "batch",
            "memory_limiter",
            "tail_sampling",
            "attributes",
            "filter",
            "adaptive_sampling",
        ],
    ),
    ("connectors", &["forward", "spanmetrics"]),
];

/// The settings each component type used in config.yaml accepts, as dotted paths (`*` any
/// name, `[]` each item of a list). The collector refuses unknown keys at start, so a key
/// outside these is a Jaeger that does not start. Sources, at the versions Jaeger 2.15.0's
/// go.mod pins:
/// - jaeger_query, jaeger_storage, remote_sampling, jaeger_storage_exporter: Jaeger v2.15.0,
///   cmd/jaeger/internal/extension/{jaegerquery/config.go, jaegerquery/internal/flags.go,
///   remotesampling/config.go}, cmd/internal/storageconfig/config.go,
///   internal/config/promcfg/config.go, internal/storage/v2/memory/config.go;
/// - spanmetrics: connector/spanmetricsconnector/config.go, v0.142.0 (contrib);
/// - tail_sampling: processor/tailsamplingprocessor/config.go, v0.142.0;
/// - prometheus: exporter/prometheusexporter/config.go, v0.144.0;
/// - otlp receiver, batch: collector v0.145.0; memory_limiter: collector v0.145.0,
///   internal/memorylimiter/config.go; healthcheckv2: contrib v0.144.0.
///
/// The contrib keys listed are the long-standing ones, present in those files both in the
/// 2022 versions and in v0.135 to v0.150 (the module at exactly v0.142.0 was not at hand).
pub const ACCEPTED_SETTINGS: [(&str, &[&str]); 11] = [
    (
        "jaeger_query",
        &[
            "storage.traces",
            "storage.traces_archive",
            "storage.metrics",
            "ui.config_file",
            "ui.assets_path",
            "ui.log_access",
            "base_path",
            "bearer_token_propagation",
            "max_clock_skew_adjust",
            "enable_tracing",
            "http.endpoint",
            "grpc.endpoint",
        ],
    ),
    (
        "jaeger_storage",
        &[
            "backends.*.memory.max_traces",
            "metric_backends.*.prometheus.endpoint",
            "metric_backends.*.prometheus.connect_timeout",
            "metric_backends.*.prometheus.token_file_path",
            "metric_backends.*.prometheus.token_override_from_context",
            "metric_backends.*.prometheus.metric_namespace",
            "metric_backends.*.prometheus.latency_unit",
            "metric_backends.*.prometheus.normalize_calls",
            "metric_backends.*.prometheus.normalize_duration",
        ],
    ),
    (
        "remote_sampling",
        &[
            "file.path",
            "file.reload_interval",
            "file.default_sampling_probability",
            "http.endpoint",
            "grpc.endpoint",
        ],
    ),
    (
        "healthcheckv2",
        &[
            "use_v2",
            "http.endpoint",
            "http.status.enabled",
            "http.status.path",
        ],
    ),
    (
        "otlp",
        &["protocols.grpc.endpoint", "protocols.http.endpoint"],
    ),
    (
        "batch",
        &["timeout", "send_batch_size", "send_batch_max_size"],
    ),
    (
        "memory_limiter",
        &[
            "check_interval",
            "limit_mib",
            "spike_limit_mib",
            "limit_percentage",
            "spike_limit_percentage",
            "min_gc_interval_when_soft_limited",
            "min_gc_interval_when_hard_limited",
        ],
    ),
    ("jaeger_storage_exporter", &["trace_storage"]),
    (
        "spanmetrics",
        &[
            "namespace",
            "histogram.unit",
            "histogram.explicit.buckets",
            "histogram.exponential.max_size",
            "dimensions[].name",
            "dimensions[].default",
            "exclude_dimensions",
            "aggregation_temporality",
            "metrics_flush_interval",
            "metrics_expiration",
            "exemplars.enabled",
            "resource_metrics_key_attributes",
        ],
    ),
    (
        "tail_sampling",
        &[
            "decision_wait",
            "num_traces",
            "expected_new_traces_per_sec",
            "policies[].name",
            "policies[].type",
            "policies[].latency.threshold_ms",
            "policies[].status_code.status_codes",
            "policies[].probabilistic.sampling_percentage",
            "policies[].probabilistic.hash_salt",
            "policies[].string_attribute.key",
            "policies[].string_attribute.values",
            "policies[].numeric_attribute.key",
            "policies[].numeric_attribute.min_value",
            "policies[].numeric_attribute.max_value",
            "policies[].rate_limiting.spans_per_second",
        ],
    ),
    (
        "prometheus",
        &[
            "endpoint",
            "namespace",
            "const_labels",
            "send_timestamps",
            "metric_expiration",
            "resource_to_telemetry_conversion.enabled",
            "enable_open_metrics",
            "add_metric_suffixes",
        ],
    ),
];

/// The tail-sampling policy types of processor/tailsamplingprocessor/config.go (v0.142.0, and
/// every version since 2022) whose settings [`ACCEPTED_SETTINGS`] lists; each policy's settings
/// sit under the key named like its type.
pub const TAIL_SAMPLING_POLICIES: [&str; 6] = [
    "latency",
    "status_code",
    "probabilistic",
    "string_attribute",
    "numeric_attribute",
    "rate_limiting",
];
