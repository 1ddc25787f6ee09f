//! The payment service's business instrument: payments declined, by reason.
//!
//! Made once per process from `telemetry::meter()`, on first use: after telemetry is
//! installed, since a meter taken from the provider in place before (a no-op) stays one.

use std::sync::LazyLock;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Meter};
use opentelemetry_semantic_conventions::attribute::ERROR_TYPE;
use ordertrail_shared::telemetry;

static GLOBAL: LazyLock<PaymentMetrics> =
    LazyLock::new(|| PaymentMetrics::new(&telemetry::meter()));

/// The process's instruments, on the global meter provider.
pub(crate) fn metrics() -> &'static PaymentMetrics {
    &GLOBAL
}

/// The payment service's business instruments.
#[derive(Debug)]
pub(crate) struct PaymentMetrics {
    declines: Counter<u64>,
}

impl PaymentMetrics {
    fn new(meter: &Meter) -> Self {
        Self {
            // `{payment}`: a count of payments, as a UCUM annotation (the conventions' form
            // for a count of things); Prometheus names it `ordertrail_payment_declines_total`.
            declines: meter
                .u64_counter("ordertrail.payment.declines")
                .with_unit("{payment}")
                .with_description("Charges the card provider declined, by decline reason")
                .build(),
        }
    }

    /// A charge was declined for `reason`, one of the provider's fixed reasons (so the
    /// attribute stays low-cardinality); under `error.type`, as the order service counts the
    /// order that failed for it.
    pub(crate) fn declined(&self, reason: &'static str) {
        self.declines.add(1, &[KeyValue::new(ERROR_TYPE, reason)]);
    }
}

#[cfg(test)]
mod tests {
    use ordertrail_testkit::CapturedMetrics;

    use super::*;

    #[test]
    fn declines_are_counted_by_reason() {
        let captured = CapturedMetrics::start();
        let metrics = PaymentMetrics::new(&captured.meter());

        metrics.declined("card_declined");
        metrics.declined("insufficient_funds");
        metrics.declined("card_declined");

        let declines = "ordertrail.payment.declines";
        assert_eq!(
            captured.sum(declines, &[(ERROR_TYPE, "card_declined")]),
            Some(2)
        );
        assert_eq!(
            captured.sum(declines, &[(ERROR_TYPE, "insufficient_funds")]),
            Some(1)
        );
        assert_eq!(captured.unit(declines).as_deref(), Some("{payment}"));
    }
}
