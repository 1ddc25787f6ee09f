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

fn unfinished() -> Answer {
    answer(
        409,
        "application/problem+json",
        json!({
            "type": "/problems/checkout-unfinished", "title": "checkout unfinished",
            "status": 409, "trace_id": TRACE,
            "detail": "the checkout of order 0190a7d2 stopped before it finished; it is finished shortly",
            "order_id": "0190a7d2-8a3b-7cc1-9f4e-1d2c3b4a5f60",
        }),
    )
}

#[test]
fn a_checkout_unfinished_is_a_valid_answer_to_every_order_but_not_a_final_one() {
    let answer = unfinished();
    for scenario in Scenario::ALL {
        let verdict = check::check(scenario, &answer);
        if scenario == Scenario::Reads {
            assert!(verdict.is_err(), "reads accepted a checkout unfinished");
        } else {
            assert_eq!(verdict, Ok(()), "{scenario:?}");
        }
    }
    assert!(answer.is_unfinished());
    assert!(!answer.is_in_progress());
    assert!(!answer.is_final());
    let in_progress = problem(409, "request in progress", None);
    assert!(!in_progress.is_unfinished());
    assert!(!problem(409, "checkout failed", Some("out_of_stock")).is_unfinished());
}

#[test]
fn a_checkout_unfinished_must_have_its_problem_shape_and_name_the_order() {
    let mut no_order = unfinished();
    let mut body: Value = no_order.json().unwrap();
    body.as_object_mut().unwrap().remove("order_id");
    no_order.body = body.to_string().into_bytes();
    let mut empty_order = unfinished();
    body["order_id"] = "".into();
    empty_order.body = body.to_string().into_bytes();
    let mut wrong_type = unfinished();
    let mut body: Value = wrong_type.json().unwrap();
    body["type"] = "about:blank".into();
    wrong_type.body = body.to_string().into_bytes();
    let mut no_trace = unfinished();
    let mut body: Value = no_trace.json().unwrap();
    body.as_object_mut().unwrap().remove("trace_id");
    no_trace.body = body.to_string().into_bytes();
    let mut wrong_status = unfinished();
    wrong_status.status = 500;
    let mut not_a_problem = unfinished();
    not_a_problem.content_type = Some("application/json".into());

    for (what, answer) in [
        ("no order_id", no_order),
        ("an empty order_id", empty_order),
        ("the type about:blank", wrong_type),
        ("no trace_id", no_trace),
        ("the content type application/json", not_a_problem),
    ] {
        for scenario in [Scenario::Captured, Scenario::OutOfStock, Scenario::Retried] {
            assert!(
                check::check(scenario, &answer).is_err(),
                "{scenario:?} accepted a checkout unfinished with {what}"
            );
        }
    }
    assert!(!wrong_status.is_unfinished());
    assert!(check::check(Scenario::Declined, &wrong_status).is_err());
}

#[test]
fn two_copies_of_a_key_need_one_checkout_and_the_same_final_answer() {
    let json = "application/json";
    let confirmed = answer(201, json, order("confirmed"));
    let in_progress = problem(409, "request in progress", None);
    let declined = problem(402, "checkout failed", Some("card_declined"));

    assert_eq!(check::copies(Some(&confirmed), Some(&in_progress)), Ok(()));
    assert_eq!(check::copies(Some(&in_progress), Some(&confirmed)), Ok(()));
    assert_eq!(check::copies(Some(&confirmed), Some(&confirmed)), Ok(()));
    assert_eq!(
        check::copies(Some(&unfinished()), Some(&in_progress)),
        Ok(())
    );
    assert_eq!(
        check::copies(Some(&in_progress), Some(&unfinished())),
        Ok(())
    );
    assert_eq!(check::copies(None, Some(&in_progress)), Ok(()));
    assert_eq!(
        check::copies(Some(&in_progress), Some(&in_progress)),
        Err("neither copy of one key got a final answer: both got 409 request in progress".into())
    );
    assert_eq!(
        check::copies(Some(&confirmed), Some(&declined)),
        Err("the two copies of one key got different answers".into())
    );
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
