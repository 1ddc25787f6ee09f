//! Metric capture for the service crates' tests: a meter provider of the test's own, read by the
//! SDK's in-memory exporter.
//!
//! A meter provider cannot be scoped to a thread as a `tracing` subscriber can, so a test hands
//! [`CapturedMetrics::meter`] to the code under test instead of going through the global one.

use std::collections::BTreeMap;
use std::time::Duration;

use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

/// One data point of a counter or gauge: its attributes, as text, and its value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Point {
    /// The attributes, by key.
    pub attributes: BTreeMap<String, String>,
    /// The value (cumulative, for a counter).
    pub value: i64,
}

/// A meter provider whose metrics are read in memory, on demand.
pub struct CapturedMetrics {
    exporter: InMemoryMetricExporter,
    provider: SdkMeterProvider,
}

impl CapturedMetrics {
    /// A provider that exports only when read.
    pub fn start() -> Self {
        let exporter = InMemoryMetricExporter::default();
        // The reader's own interval never comes in a test: every read flushes.
        let reader = PeriodicReader::builder(exporter.clone())
            .with_interval(Duration::from_secs(3600))
            .build();
        let provider = SdkMeterProvider::builder().with_reader(reader).build();
        Self { exporter, provider }
    }

    /// A meter of this provider, for the instruments under test.
    pub fn meter(&self) -> Meter {
        self.provider.meter("test")
    }

    /// The unit of the instrument `name`, if it has recorded anything.
    pub fn unit(&self, name: &str) -> Option<String> {
        self.read(name, |metric| metric.unit().to_owned())
    }

    /// Every data point of the counter or gauge `name`, sorted by attributes; none if it
    /// recorded nothing.
    pub fn points(&self, name: &str) -> Vec<Point> {
        let mut points = self
            .read(name, |metric| match metric.data() {
                AggregatedMetrics::U64(data) => points(data, |v| i64::try_from(v).unwrap()),
                AggregatedMetrics::I64(data) => points(data, |v| v),
                AggregatedMetrics::F64(_) => panic!("{name} records floats"),
            })
            .unwrap_or_default();
        points.sort();
        points
    }

    /// The value of the data point of `name` whose attributes are exactly `attributes`.
    pub fn sum(&self, name: &str, attributes: &[(&str, &str)]) -> Option<i64> {
        let wanted: BTreeMap<String, String> = attributes
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.points(name)
            .into_iter()
            .find(|point| point.attributes == wanted)
            .map(|point| point.value)
    }

    /// Flushes, and applies `f` to the metric `name` of the latest export (cumulative, so the
    /// latest holds everything recorded so far).
    fn read<T>(
        &self,
        name: &str,
        f: impl FnOnce(&opentelemetry_sdk::metrics::data::Metric) -> T,
    ) -> Option<T> {
        self.provider
            .force_flush()
            .expect("flush the test meter provider");
        let exports = self.exporter.get_finished_metrics().unwrap_or_default();
        let latest: &ResourceMetrics = exports.last()?;
        latest
            .scope_metrics()
            .flat_map(|scope| scope.metrics())
            .find(|metric| metric.name() == name)
            .map(f)
    }
}

fn points<T: Copy>(data: &MetricData<T>, value: impl Fn(T) -> i64) -> Vec<Point> {
    fn text(attributes: impl Iterator<Item = opentelemetry::KeyValue>) -> BTreeMap<String, String> {
        attributes
            .map(|kv| (kv.key.to_string(), kv.value.to_string()))
            .collect()
    }
    match data {
        MetricData::Sum(sum) => sum
            .data_points()
            .map(|p| Point {
                attributes: text(p.attributes().cloned()),
                value: value(p.value()),
            })
            .collect(),
        MetricData::Gauge(gauge) => gauge
            .data_points()
            .map(|p| Point {
                attributes: text(p.attributes().cloned()),
                value: value(p.value()),
            })
            .collect(),
        MetricData::Histogram(_) | MetricData::ExponentialHistogram(_) => {
            panic!("a histogram has no single value")
        }
    }
}
