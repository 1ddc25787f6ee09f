//! The metrics a [`crate::receiver::start_otlp`] receiver got, flattened for tests: one
//! [`ReceivedMetric`] per instrument per export, with its service, unit and data points, each
//! point's attributes with the kind of value they were sent as, and a histogram's bucket
//! bounds.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};

use crate::receiver::{ValueKind, attributes, kinds, service_name};

/// One instrument's data as one export carried it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedMetric {
    /// `service.name` of the resource that sent it.
    pub service_name: String,
    /// The instrumentation scope's name (the meter's).
    pub scope: String,
    /// The instrument's name.
    pub name: String,
    /// Its unit (`s`, `{span}`, …).
    pub unit: String,
    /// `gauge`, `sum`, `histogram`, `exponential_histogram` or `summary`.
    pub kind: &'static str,
    /// For a sum: whether it is monotonic (a counter).
    pub monotonic: bool,
    /// For a sum or histogram: `cumulative` or `delta` (`unspecified` otherwise).
    pub temporality: &'static str,
    /// Its data points.
    pub points: Vec<DataPoint>,
}

/// One data point: a time series' attributes and value.
#[derive(Debug, Clone, PartialEq)]
pub struct DataPoint {
    /// The attributes, values rendered as strings.
    pub attributes: BTreeMap<String, String>,
    /// The kind of each attribute's value on the wire.
    pub attribute_kinds: BTreeMap<String, ValueKind>,
    /// The value.
    pub value: PointValue,
}

impl DataPoint {
    /// The attribute `key`, if set.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    /// The kind of value the attribute `key` was sent as, if set.
    pub fn attribute_kind(&self, key: &str) -> Option<ValueKind> {
        self.attribute_kinds.get(key).copied()
    }

    /// The sorted keys of the attributes.
    pub fn keys(&self) -> Vec<&str> {
        self.attributes.keys().map(String::as_str).collect()
    }

    /// The value of a gauge or sum as a float, whichever number type it was sent as.
    pub fn number(&self) -> Option<f64> {
        match self.value {
            PointValue::Int(value) => Some(value as f64),
            PointValue::Double(value) => Some(value),
            PointValue::Histogram { .. } | PointValue::Other => None,
        }
    }
}

/// A data point's value.
#[derive(Debug, Clone, PartialEq)]
pub enum PointValue {
    /// A gauge's or sum's `as_int`.
    Int(i64),
    /// A gauge's or sum's `as_double`.
    Double(f64),
    /// An explicit-bucket histogram point.
    Histogram {
        /// How many measurements.
        count: u64,
        /// Their sum, if sent.
        sum: Option<f64>,
        /// The explicit bucket boundaries.
        bounds: Vec<f64>,
        /// How many measurements fell in each bucket (one more than `bounds`).
        bucket_counts: Vec<u64>,
    },
    /// A kind of point these tests do not read (exponential histograms, summaries).
    Other,
}

/// Flattens an export request into metrics.
pub fn flatten_metrics(request: ExportMetricsServiceRequest) -> Vec<ReceivedMetric> {
    let mut flat = Vec::new();
    for resource_metrics in request.resource_metrics {
        let service_name = service_name(resource_metrics.resource.as_ref());
        for scope_metrics in resource_metrics.scope_metrics {
            let scope = scope_metrics.scope.map(|s| s.name).unwrap_or_default();
            for metric in scope_metrics.metrics {
                let (kind, monotonic, temporality, points) = match metric.data {
                    Some(metric::Data::Gauge(gauge)) => {
                        ("gauge", false, 0, numbers(gauge.data_points))
                    }
                    Some(metric::Data::Sum(sum)) => (
                        "sum",
                        sum.is_monotonic,
                        sum.aggregation_temporality,
                        numbers(sum.data_points),
                    ),
                    Some(metric::Data::Histogram(histogram)) => (
                        "histogram",
                        false,
                        histogram.aggregation_temporality,
                        histogram
                            .data_points
                            .into_iter()
                            .map(|point| {
                                data_point(
                                    &point.attributes,
                                    PointValue::Histogram {
                                        count: point.count,
                                        sum: point.sum,
                                        bounds: point.explicit_bounds,
                                        bucket_counts: point.bucket_counts,
                                    },
                                )
                            })
                            .collect(),
                    ),
                    Some(metric::Data::ExponentialHistogram(h)) => (
                        "exponential_histogram",
                        false,
                        h.aggregation_temporality,
                        Vec::new(),
                    ),
                    Some(metric::Data::Summary(_)) => ("summary", false, 0, Vec::new()),
                    None => ("none", false, 0, Vec::new()),
                };
                flat.push(ReceivedMetric {
                    service_name: service_name.clone(),
                    scope: scope.clone(),
                    name: metric.name,
                    unit: metric.unit,
                    kind,
                    monotonic,
                    // AggregationTemporality numbering from the OTLP protobuf.
                    temporality: match temporality {
                        1 => "delta",
                        2 => "cumulative",
                        _ => "unspecified",
                    },
                    points,
                });
            }
        }
    }
    flat
}

fn numbers(
    points: Vec<opentelemetry_proto::tonic::metrics::v1::NumberDataPoint>,
) -> Vec<DataPoint> {
    points
        .into_iter()
        .map(|point| {
            let value = match point.value {
                Some(number_data_point::Value::AsInt(value)) => PointValue::Int(value),
                Some(number_data_point::Value::AsDouble(value)) => PointValue::Double(value),
                None => PointValue::Other,
            };
            data_point(&point.attributes, value)
        })
        .collect()
}

fn data_point(kvs: &[KeyValue], value: PointValue) -> DataPoint {
    DataPoint {
        attributes: attributes(kvs),
        attribute_kinds: kinds(kvs),
        value,
    }
}

/// Every metric received so far, in arrival order, with look-ups by name and service.
#[derive(Debug, Default, Clone)]
pub struct ReceivedMetrics {
    /// Every metric of every export, in arrival order.
    pub all: Vec<ReceivedMetric>,
}

impl ReceivedMetrics {
    /// Adds what `request` carried.
    pub fn extend(&mut self, request: ExportMetricsServiceRequest) {
        self.all.extend(flatten_metrics(request));
    }

    /// The latest export of `name` by `service`, if it sent one. Temporality is cumulative,
    /// so the latest holds every series so far.
    pub fn latest(&self, service: &str, name: &str) -> Option<&ReceivedMetric> {
        self.all
            .iter()
            .rev()
            .find(|m| m.service_name == service && m.name == name)
    }

    /// The services that sent `name`, sorted, each once.
    pub fn services_sending(&self, name: &str) -> Vec<&str> {
        let mut services: Vec<&str> = self
            .all
            .iter()
            .filter(|m| m.name == name)
            .map(|m| m.service_name.as_str())
            .collect();
        services.sort_unstable();
        services.dedup();
        services
    }
}
