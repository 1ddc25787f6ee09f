//! The checker: every documented answer passes, and a wrong status or a body that is not the
//! contract is unexpected.

use serde_json::{Value, json};

use crate::load::check::{self, Answer};
use crate::load::scenario::Scenario;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn answer(status: u16, content_type: &str, body: Value) -> Answer {
    Answer {
        status,
        content_type: Some(content_type.into()),
        traceresponse: None,
        body: body.to_string().into_bytes(),
    }
}

fn order(status: &str) -> Value {
    json!({
        "order_id": "0190a7d2-8a3b-7cc1-9f4e-1d2c3b4a5f60", "customer_id": "load-1",
        "status": status, "total_cents": 1450,
        "items": [{"sku": "TRAIL-MUG", "quantity": 1, "unit_price_cents": 1450}],
        "trace_id": TRACE,
    })
}

fn problem(status: u16, title: &str, reason: Option<&str>) -> Answer {
    let mut body =
        json!({"type": "about:blank", "title": title, "status": status, "trace_id": TRACE});
    if let Some(reason) = reason {
        body["reason"] = reason.into();
    }
    answer(status, "application/problem+json", body)
}

#[test]
fn the_checker_passes_every_documented_answer() {
    let json = "application/json";
    let expected = [
        (Scenario::Captured, answer(201, json, order("confirmed"))),
        (Scenario::Captured, answer(202, json, order("paid"))),
        (
            Scenario::Declined,
            problem(402, "checkout failed", Some("card_declined")),
        ),
        (
            Scenario::Insufficient,
            problem(402, "checkout failed", Some("insufficient_funds")),
        ),
        (
            Scenario::OutOfStock,
            problem(409, "checkout failed", Some("out_of_stock")),
        ),
        (
            Scenario::Reads,
            answer(
                200,
                json,
                json!([{"sku": "TRAIL-MUG", "name": "Mug", "price_cents": 1450, "stock": 3}]),
            ),
        ),
        (Scenario::Retried, answer(201, json, order("confirmed"))),
        (Scenario::Retried, problem(409, "request in progress", None)),
    ];
    for (scenario, answer) in expected {
        assert_eq!(
            check::check(scenario, &answer),
            Ok(()),
            "{scenario:?} {}",
            answer.status
        );
    }
}

#[test]
fn the_checker_counts_a_wrong_status_or_a_body_that_is_not_the_contract() {
    let json = "application/json";
    let mut no_trace = problem(402, "checkout failed", Some("card_declined"));
    no_trace.body =
        br#"{"type":"about:blank","title":"x","status":402,"reason":"card_declined"}"#.to_vec();
    let unexpected = [
        (Scenario::Captured, answer(200, json, json!({}))),
        (Scenario::Captured, answer(201, json, json!({}))),
        (Scenario::Captured, answer(201, json, order("failed"))),
        (
            Scenario::Captured,
            answer(201, "text/html", order("confirmed")),
        ),
        (
            Scenario::Captured,
            problem(503, "service unavailable", None),
        ),
        (
            Scenario::Declined,
            problem(402, "checkout failed", Some("insufficient_funds")),
        ),
        (
            Scenario::Declined,
            answer(402, json, json!({"reason": "card_declined"})),
        ),
        (Scenario::Declined, no_trace),
        (Scenario::OutOfStock, answer(201, json, order("confirmed"))),
        (Scenario::Reads, answer(200, json, json!({}))),
        (
            Scenario::Reads,
            answer(200, json, json!([{"sku": "TRAIL-MUG"}])),
        ),
        (
            Scenario::Retried,
            problem(409, "checkout failed", Some("out_of_stock")),
        ),
    ];
    for (scenario, answer) in unexpected {
        assert!(
            check::check(scenario, &answer).is_err(),
            "{scenario:?} {} {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
    }
}

#[test]
fn a_captured_order_out_of_stock_says_restocking_is_off() {
    let verdict = check::check(
        Scenario::Captured,
        &problem(409, "checkout failed", Some("out_of_stock")),
    );
    assert!(verdict.unwrap_err().contains("restocking is off"));
}

#[test]
fn a_replay_must_equal_the_first_final_answer() {
    let first = answer(201, "application/json", order("confirmed"));
    let declined = problem(402, "checkout failed", Some("card_declined"));
    assert_eq!(check::replay(&first, &first.clone()), Ok(()));
    assert!(check::replay(&first, &declined).is_err());
    assert!(check::replay(&first, &problem(409, "request in progress", None)).is_err());
    let mut other_order = order("confirmed");
    other_order["order_id"] = "0190a7d2-0000-7cc1-9f4e-1d2c3b4a5f60".into();
    assert!(check::replay(&first, &answer(201, "application/json", other_order)).is_err());

    let pending = answer(202, "application/json", order("paid"));
    assert_eq!(
        check::replay(&pending, &problem(409, "request in progress", None)),
        Ok(())
    );
    assert_eq!(check::replay(&pending, &first), Ok(()));
}

#[test]
fn the_trace_id_comes_from_traceresponse_or_else_the_problem() {
    let mut answer = problem(402, "checkout failed", Some("card_declined"));
    assert_eq!(answer.trace_id().as_deref(), Some(TRACE));
    answer.traceresponse = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
    assert_eq!(
        answer.trace_id().as_deref(),
        Some("0af7651916cd43dd8448eb211c80319c")
    );
    answer.traceresponse = Some("garbage".into());
    answer.body = b"{}".to_vec();
    assert_eq!(answer.trace_id(), None);
}
