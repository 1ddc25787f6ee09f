//! The subscriber's two per-layer filters: which spans become OpenTelemetry spans, and which
//! events become log lines.
//!
//! Both are wrapped in [`Rechecked`], for a reason that is easy to undo by accident: with
//! per-layer filters, tracing-subscriber carries each filter's verdict from `enabled` to
//! `on_event`/`on_new_span` in thread-local bits, and only a dispatched event or span clears
//! them. A call to `enabled` that dispatches nothing leaves them set, and the next event or span
//! on that thread whose call site is cached as `Interest::always` skips `enabled`, reads the
//! stale bits and is dropped by the layers they name (tokio-rs/tracing#2519). Such calls are
//! routine: `try_init` installs tracing-log's `LogTracer`, which answers `log::log_enabled!` by
//! asking the dispatcher, and sqlx asks it for every PostgreSQL notice (and after every query
//! once `RUST_LOG` enables `debug` for any target). That is how a restart against a migrated
//! database lost its "listening" line: the "relation _sqlx_migrations already exists" notice
//! was checked, filtered out by both layers, and took the next line (or span) with it.
//!
//! A single global filter would not do: the OpenTelemetry layer and the log lines want
//! different things (`RUST_LOG` must not turn spans off, and log lines do want the warnings of
//! the crates the exporter uses).

use tracing::subscriber::Interest;
use tracing::{Event, Metadata, span};
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::{Context, Filter};

/// Spans (and span events) of our own crates only: the exporter's HTTP/2 and gRPC stack, and
/// the crates it calls, must not trace themselves in a loop.
pub(super) fn span_filter() -> Rechecked<Targets> {
    let exporter_crates = [
        "h2",
        "hyper",
        "hyper_util",
        "tonic",
        "tower",
        "reqwest",
        "sqlx",
        "opentelemetry",
        "opentelemetry_sdk",
        "opentelemetry_otlp",
    ];
    Rechecked(
        Targets::new()
            .with_default(tracing::Level::INFO)
            .with_targets(exporter_crates.map(|target| (target, LevelFilter::OFF))),
    )
}

/// Log lines as `filter` (`RUST_LOG`) selects them, less the events that repeat, once per
/// batch, what the span loss warning already says (see [`reported_by_the_loss_warning`]).
pub(super) fn log_filter(filter: EnvFilter) -> Rechecked<LogLines> {
    Rechecked(LogLines(filter))
}

/// Whether `metadata` is the OpenTelemetry SDK's or exporter's own report of one failed export.
///
/// `CountingExporter` settles every batch and logs one warning, with the first error, when
/// spans start being lost and one line when they stop (`CountingMetricExporter` does the same
/// for metric exports); the SDK logs an ERROR per failed batch or metric export
/// (every `OTEL_BSP_SCHEDULE_DELAY` while the collector is down), and the exporter, with its
/// `internal-logs` feature, a WARN per batch too. They are matched by target and event name,
/// so that the SDK's other warnings (a bad sampler variable, a shutdown that timed out) still
/// reach the log. These lines are dropped whatever `RUST_LOG` says.
fn reported_by_the_loss_warning(metadata: &Metadata<'_>) -> bool {
    match metadata.target() {
        "opentelemetry_sdk" => matches!(
            metadata.name(),
            "BatchSpanProcessor.ExportError" | "PeriodicReader.ExportError"
        ),
        "opentelemetry_otlp" => metadata.name().starts_with("Export.Failed."),
        _ => false,
    }
}

/// The log lines' filter: an [`EnvFilter`] that also refuses what
/// [`reported_by_the_loss_warning`] matches.
pub(super) struct LogLines(EnvFilter);

impl<S> Filter<S> for LogLines {
    fn enabled(&self, metadata: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        !reported_by_the_loss_warning(metadata) && Filter::enabled(&self.0, metadata, cx)
    }
    fn callsite_enabled(&self, metadata: &'static Metadata<'static>) -> Interest {
        if reported_by_the_loss_warning(metadata) {
            Interest::never()
        } else {
            Filter::<S>::callsite_enabled(&self.0, metadata)
        }
    }
    fn event_enabled(&self, event: &Event<'_>, cx: &Context<'_, S>) -> bool {
        Filter::event_enabled(&self.0, event, cx)
    }
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Filter::<S>::max_level_hint(&self.0)
    }
    // `EnvFilter` follows span entries and exits for its span-scoped directives.
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, cx: Context<'_, S>) {
        Filter::on_new_span(&self.0, attrs, id, cx);
    }
    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, cx: Context<'_, S>) {
        Filter::on_record(&self.0, id, values, cx);
    }
    fn on_enter(&self, id: &span::Id, cx: Context<'_, S>) {
        Filter::on_enter(&self.0, id, cx);
    }
    fn on_exit(&self, id: &span::Id, cx: Context<'_, S>) {
        Filter::on_exit(&self.0, id, cx);
    }
    fn on_close(&self, id: span::Id, cx: Context<'_, S>) {
        Filter::on_close(&self.0, id, cx);
    }
}

/// A per-layer filter whose verdict is asked again for every span and event: a call site it
/// enables gets `Interest::sometimes` instead of `always`, so that `enabled` runs, and every
/// filter rewrites its bit, before each span or event is dispatched. Stale bits left by a
/// check that dispatched nothing are then overwritten instead of read (see the module
/// documentation). Call sites it disables stay `never`, so they cost nothing.
///
/// The price is one `enabled` per enabled span or event: a few target comparisons.
pub(super) struct Rechecked<F>(F);

impl<S, F: Filter<S>> Filter<S> for Rechecked<F> {
    fn enabled(&self, metadata: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        self.0.enabled(metadata, cx)
    }
    fn callsite_enabled(&self, metadata: &'static Metadata<'static>) -> Interest {
        if self.0.callsite_enabled(metadata).is_never() {
            Interest::never()
        } else {
            Interest::sometimes()
        }
    }
    fn event_enabled(&self, event: &Event<'_>, cx: &Context<'_, S>) -> bool {
        self.0.event_enabled(event, cx)
    }
    fn max_level_hint(&self) -> Option<LevelFilter> {
        self.0.max_level_hint()
    }
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, cx: Context<'_, S>) {
        self.0.on_new_span(attrs, id, cx);
    }
    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, cx: Context<'_, S>) {
        self.0.on_record(id, values, cx);
    }
    fn on_enter(&self, id: &span::Id, cx: Context<'_, S>) {
        self.0.on_enter(id, cx);
    }
    fn on_exit(&self, id: &span::Id, cx: Context<'_, S>) {
        self.0.on_exit(id, cx);
    }
    fn on_close(&self, id: span::Id, cx: Context<'_, S>) {
        self.0.on_close(id, cx);
    }
}
