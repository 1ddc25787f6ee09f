//! What every ordertrail service shares: telemetry set-up (traces over OTLP, ECS JSON logs),
//! the HTTP server layer and the traced HTTP client, problem+json errors, the database handle
//! and the card-number type.
//!
//! It holds no business logic: orders, payments and stock live in the service crates.

pub mod api;
pub mod card;
pub mod db;
pub mod faults;
pub mod http;
pub mod idempotency;
pub mod problem;
pub mod shutdown;
pub mod telemetry;

/// What the crate's macros (`audit!`, `record_failure!`) call, by a path that works in every
/// crate that uses them.
#[doc(hidden)]
pub mod __private {
    pub use tracing;
}

/// The baggage key the gateway sets and every service copies onto its spans and log lines.
pub const CUSTOMER_ID: &str = "customer.id";
