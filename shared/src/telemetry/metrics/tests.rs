use super::*;

fn config(vars: &[(&str, &str)]) -> (MetricsConfig, Vec<String>) {
    let vars: std::collections::HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let mut warnings = Vec::new();
    let config = MetricsConfig::from_vars(|name| vars.get(name).cloned(), false, &mut warnings);
    (config, warnings)
}

#[test]
fn metrics_go_where_spans_go_every_minute_by_default() {
    let (config, warnings) = config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://jaeger:4317")]);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(config.endpoint.as_deref(), Some("http://jaeger:4317"));
    assert_eq!(config.protocol, OtlpProtocol::Grpc);
    assert_eq!(config.interval, Duration::from_secs(60));
    assert_eq!(config.timeout, Duration::from_secs(10));
}
