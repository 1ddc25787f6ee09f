//! The shape check of one trace, shared by the end-to-end tests and `stack-check`.

use std::collections::BTreeSet;

use crate::receiver::ReceivedSpan;

/// What is wrong with the shape of one trace, as sentences; empty when nothing is.
///
/// A trace is well formed when all its spans share one trace id, exactly one span (the root)
/// has its parent outside the trace (none, or the caller's span), and every server span other
/// than the root hangs under a client span of another service. A lost or misparented span
/// shows up as a second root.
pub fn topology_problems(spans: &[ReceivedSpan]) -> Vec<String> {
    let mut problems = Vec::new();
    let trace_ids: BTreeSet<&str> = spans.iter().map(|s| s.trace_id.as_str()).collect();
    if trace_ids.len() > 1 {
        problems.push(format!(
            "spans of {} traces: {trace_ids:?}",
            trace_ids.len()
        ));
    }
    let parent_of = |span: &ReceivedSpan| spans.iter().find(|p| p.span_id == span.parent_span_id);
    let roots: Vec<String> = spans
        .iter()
        .filter(|s| parent_of(s).is_none())
        .map(|s| format!("{} {}", s.service_name, s.name))
        .collect();
    if roots.len() != 1 {
        problems.push(format!(
            "{} spans without their parent in the trace: {roots:?}",
            roots.len()
        ));
    }
    for server in spans.iter().filter(|s| s.kind == "server") {
        let Some(parent) = parent_of(server) else {
            continue;
        };
        if parent.kind != "client" || parent.service_name == server.service_name {
            problems.push(format!(
                "{} {} hangs under {} {} ({}), not under a client span of its caller",
                server.service_name, server.name, parent.service_name, parent.name, parent.kind
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn span(service: &str, id: &str, parent: &str, kind: &'static str) -> ReceivedSpan {
        ReceivedSpan {
            service_name: service.into(),
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: id.into(),
            parent_span_id: parent.into(),
            name: format!("{kind} {id}"),
            kind,
            start_unix_nanos: 0,
            end_unix_nanos: 1,
            is_error: false,
            attributes: BTreeMap::new(),
            attribute_kinds: BTreeMap::new(),
            events: Vec::new(),
        }
    }

    #[test]
    fn a_trace_whose_hops_are_parented_by_client_spans_has_no_problems() {
        let spans = [
            span("gateway", "a", "", "server"),
            span("gateway", "b", "a", "client"),
            span("order", "c", "b", "server"),
        ];
        assert_eq!(topology_problems(&spans), Vec::<String>::new());
    }

    #[test]
    fn a_lost_client_span_shows_as_a_second_root() {
        let spans = [
            span("gateway", "a", "", "server"),
            span("order", "c", "b", "server"),
        ];
        assert_eq!(topology_problems(&spans).len(), 1);
    }

    #[test]
    fn a_server_span_under_a_span_of_its_own_service_is_misparented() {
        let spans = [
            span("order", "a", "", "server"),
            span("order", "c", "a", "server"),
        ];
        assert!(topology_problems(&spans)[0].contains("not under a client span"));
    }
}
