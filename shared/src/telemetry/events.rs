//! The log lines every service writes the same way: an audit event ([`audit!`](crate::audit)),
//! and a failure recorded on the current span with the one line that goes with it
//! ([`record_failure!`](crate::record_failure)).
//!
//! They are macros, not functions, so that each line names the module that wrote it
//! (`log.logger`), and `RUST_LOG` filters it by that module, as any other line of the service.

/// `event.dataset` of audit events, which Logstash routes to the `ordertrail-audit` index.
pub const AUDIT_DATASET: &str = "ordertrail.audit";

/// Writes an audit event: an INFO line in the [`AUDIT_DATASET`] with `event.action` (a
/// kebab-case verb phrase such as `payment-refunded`) and `event.outcome` = `success`, then the
/// fields and message given, as `tracing::info!` takes them.
///
/// ```
/// let payment_id = "p-1";
/// ordertrail_shared::audit!("payment-refunded", payment.id = %payment_id, "payment refunded");
/// ```
#[macro_export]
macro_rules! audit {
    ($action:literal, $($fields_and_message:tt)+) => {
        $crate::__private::tracing::info!(
            event.dataset = $crate::telemetry::AUDIT_DATASET,
            event.action = $action,
            event.outcome = "success",
            $($fields_and_message)+
        )
    };
}

/// Records an error on the current span ([`record_error`](crate::telemetry::record_error):
/// status Error, `error.type`, an `exception` event) and writes the one log line that goes with
/// it, at the level given (`INFO` for a request refused for the caller's reasons, `WARN` for a
/// call that failed), with `error.type` and `error.message` (the cause chain).
///
/// ```
/// let err = std::io::Error::other("connection refused");
/// ordertrail_shared::record_failure!(WARN, "connect", &err, "call failed");
/// ```
#[macro_export]
macro_rules! record_failure {
    ($level:ident, $error_type:expr, $error:expr, $message:literal) => {{
        let error_type: &str = $error_type;
        let error: &(dyn ::std::error::Error + 'static) = $error;
        $crate::telemetry::record_error(
            &$crate::__private::tracing::Span::current(),
            error_type,
            error,
        );
        $crate::__private::tracing::event!(
            $crate::__private::tracing::Level::$level,
            error.type = error_type,
            error = error,
            $message
        );
    }};
}

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::super::ecs::tests::Captured;
    use super::super::{EcsLayer, ServiceIdentity};

    /// The one line `write` logs.
    fn line_of(write: impl FnOnce()) -> Value {
        let captured = Captured::default();
        let layer = EcsLayer::new(ServiceIdentity::new("payment"), Box::new(captured.clone()));
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), write);
        let mut lines = captured.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        lines.remove(0)
    }

    #[test]
    fn an_audit_event_is_in_the_audit_dataset_with_its_action_and_fields() {
        let line = line_of(|| {
            crate::audit!("payment-refunded", payment.id = "p-1", "payment refunded");
        });
        assert_eq!(line["event.dataset"], "ordertrail.audit");
        assert_eq!(line["event.action"], "payment-refunded");
        assert_eq!(line["event.outcome"], "success");
        assert_eq!(line["payment.id"], "p-1");
        assert_eq!(line["message"], "payment refunded");
        assert_eq!(line["log.level"], "INFO");
        assert_eq!(line["log.logger"], module_path!(), "the caller's module");
    }

    /// Log lines are ECS documents, so their fields keep ECS's names, written as literals in
    /// `tracing` macros (`error.type = ..`) and in the ECS writer (`service.name`...). Where the
    /// semantic conventions name the same thing (tracing-opentelemetry puts an event's fields on
    /// its span event, and the service fields come from the resource), the names must agree.
    #[test]
    fn the_log_fields_the_conventions_also_name_have_their_names() {
        use opentelemetry_semantic_conventions::attribute::{
            ERROR_TYPE, SERVICE_NAME, SERVICE_NAMESPACE, SERVICE_VERSION,
        };
        let error = std::io::Error::other("refused");
        let line = line_of(|| {
            crate::record_failure!(INFO, "connect", &error, "call failed");
        });
        for field in [ERROR_TYPE, SERVICE_NAME, SERVICE_VERSION, SERVICE_NAMESPACE] {
            assert!(line.get(field).is_some(), "{field} in {line}");
        }
    }

    #[test]
    fn a_failure_is_one_line_with_its_type_and_cause_chain_from_the_callers_module() {
        let error = crate::telemetry::tests::Failed(std::io::Error::other("connection reset"));
        let line = line_of(|| {
            crate::record_failure!(WARN, "connect", &error, "call failed");
        });
        assert_eq!(line["error.type"], "connect");
        assert_eq!(line["error.message"], "charge failed: connection reset");
        assert_eq!(line["message"], "call failed");
        assert_eq!(line["log.level"], "WARN");
        assert_eq!(line["log.logger"], module_path!(), "the caller's module");
    }
}
