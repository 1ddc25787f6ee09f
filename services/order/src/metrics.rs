//! The order service's business instruments: orders by outcome, revenue, compensations run,
//! orders finished by the recovery sweep, and work on orders given up for the sweep.
//!
//! The instruments are made once per process, from `telemetry::meter()`, the first time
//! [`OrderMetrics::global`] is called: after telemetry is installed, since a meter taken from
//! the provider in place before (a no-op) stays one. The saga holds a handle, so that a test
//! can give it instruments on a meter of its own.
//!
//! Every attribute takes a value from a closed set: no order or customer id, no free text.

use std::sync::LazyLock;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Meter};
use opentelemetry_semantic_conventions::attribute::ERROR_TYPE;
use ordertrail_shared::api::OrderStatus;
use ordertrail_shared::telemetry;

/// The status an order ended in: `confirmed` or `failed`; the same field as the log lines'.
const ORDER_STATUS: &str = "order.status";
/// The compensation a failed checkout ran: `refund` or `release`.
const SAGA_COMPENSATION: &str = "saga.compensation";

/// The failure codes a checkout ends with (`Failure::code`, which for a decline is payment's
/// reason). Any other code is counted as `_OTHER`, the conventions' fallback for `error.type`,
/// so that a reason another service invents cannot grow the number of series.
const FAILURE_CODES: [&str; 8] = [
    "out_of_stock",
    "unknown_product",
    "card_declined",
    "insufficient_funds",
    "payment_refused",
    "service_unavailable",
    "reservation_lost",
    "interrupted",
];

static GLOBAL: LazyLock<OrderMetrics> = LazyLock::new(|| OrderMetrics::new(&telemetry::meter()));

/// What a failed checkout undid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compensation {
    /// Money taken was refunded.
    Refund,
    /// Stock reserved was released.
    Release,
}

impl Compensation {
    fn as_str(self) -> &'static str {
        match self {
            Self::Refund => "refund",
            Self::Release => "release",
        }
    }
}

/// Why the work on an order was given up before it ended (`crate::claim::hold`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Abandoned {
    /// Its claim was lost.
    ClaimLost,
    /// It ran past the saga's time limit.
    TimedOut,
}

impl Abandoned {
    /// The `error.type`: `timeout` is the conventions' own value.
    fn as_str(self) -> &'static str {
        match self {
            Self::ClaimLost => "claim_lost",
            Self::TimedOut => "timeout",
        }
    }
}

/// The order service's business instruments. Cheap to clone: each is a shared handle.
#[derive(Debug, Clone)]
pub(crate) struct OrderMetrics {
    orders: Counter<u64>,
    revenue: Counter<u64>,
    compensations: Counter<u64>,
    recoveries: Counter<u64>,
    abandoned: Counter<u64>,
}

impl OrderMetrics {
    /// The process's instruments, on the global meter provider.
    pub(crate) fn global() -> Self {
        GLOBAL.clone()
    }

    /// Instruments on `meter`.
    // Units are UCUM annotations (`{order}`): the conventions' unit for a count of things.
    // UCUM has no currency, so revenue is `{cent}` (of the one currency the shop sells in);
    // Prometheus drops annotations from names, so these become `ordertrail_orders_total` and
    // `ordertrail_revenue_total`.
    pub(crate) fn new(meter: &Meter) -> Self {
        Self {
            orders: meter
                .u64_counter("ordertrail.orders")
                .with_unit("{order}")
                .with_description(
                    "Orders that reached a final status, by status and failure reason",
                )
                .build(),
            revenue: meter
                .u64_counter("ordertrail.revenue")
                .with_unit("{cent}")
                .with_description("Total of the confirmed orders, in cents")
                .build(),
            compensations: meter
                .u64_counter("ordertrail.saga.compensations")
                .with_unit("{compensation}")
                .with_description(
                    "Compensations that gave back money or stock, counted when their order failed, by kind",
                )
                .build(),
            recoveries: meter
                .u64_counter("ordertrail.saga.recoveries")
                .with_unit("{order}")
                .with_description(
                    "Open orders the recovery sweep brought to a final answer, by final status",
                )
                .build(),
            abandoned: meter
                .u64_counter("ordertrail.saga.abandoned")
                .with_unit("{order}")
                .with_description(
                    "Work on an order given up before it ended, left to the recovery sweep, by reason",
                )
                .build(),
        }
    }

    /// An order was confirmed: one more, and its total in revenue.
    pub(crate) fn confirmed(&self, total_cents: i64) {
        self.orders
            .add(1, &[KeyValue::new(ORDER_STATUS, "confirmed")]);
        // A total is never negative: it is inventory's sum of positive quantities at prices
        // its database keeps from going negative. This database does not check it (SQLite
        // cannot add a constraint to an existing table), so a bad total adds nothing.
        self.revenue
            .add(u64::try_from(total_cents).unwrap_or(0), &[]);
    }

    /// An order failed with the failure `code`.
    pub(crate) fn failed(&self, code: &str) {
        let reason = FAILURE_CODES
            .into_iter()
            .find(|known| *known == code)
            .unwrap_or("_OTHER");
        self.orders.add(
            1,
            &[
                KeyValue::new(ORDER_STATUS, "failed"),
                KeyValue::new(ERROR_TYPE, reason),
            ],
        );
    }

    /// A compensation gave back what the checkout took, and its order failed.
    pub(crate) fn compensated(&self, compensation: Compensation) {
        self.compensations.add(
            1,
            &[KeyValue::new(SAGA_COMPENSATION, compensation.as_str())],
        );
    }

    /// The sweep finished a stalled order, which ended `status`, and kept its answer.
    pub(crate) fn recovered(&self, status: OrderStatus) {
        self.recoveries
            .add(1, &[KeyValue::new(ORDER_STATUS, status.as_str())]);
    }

    /// The work on an order was given up, for the sweep.
    pub(crate) fn abandoned(&self, why: Abandoned) {
        self.abandoned
            .add(1, &[KeyValue::new(ERROR_TYPE, why.as_str())]);
    }
}

#[cfg(test)]
mod tests {
    use ordertrail_testkit::CapturedMetrics;

    use super::*;
    use crate::domain::Failure;

    #[test]
    fn every_failure_the_checkout_makes_is_counted_under_its_own_reason() {
        let codes = [
            Failure::out_of_stock("x").code,
            Failure::unknown_product("x").code,
            Failure::declined("card_declined").code,
            Failure::declined("insufficient_funds").code,
            Failure::declined("payment_refused").code,
            Failure::unavailable("payment").code,
            Failure::reservation_lost().code,
            Failure::interrupted().code,
        ];
        for code in codes {
            assert!(FAILURE_CODES.contains(&code.as_str()), "{code}");
        }
    }

    #[test]
    fn an_unknown_failure_reason_is_counted_as_other() {
        let captured = CapturedMetrics::start();
        let metrics = OrderMetrics::new(&captured.meter());

        metrics.failed("a reason payment made up, with an order id o-123");

        assert_eq!(
            captured.sum(
                "ordertrail.orders",
                &[(ORDER_STATUS, "failed"), (ERROR_TYPE, "_OTHER")]
            ),
            Some(1)
        );
        assert_eq!(
            captured.unit("ordertrail.orders").as_deref(),
            Some("{order}")
        );
    }
}
