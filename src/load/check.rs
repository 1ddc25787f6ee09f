//! What each scenario must get back, and the verdict on what it got: an answer that is not the
//! contract, by status or by body, is unexpected and says why.

use ordertrail_shared::api::{Order, OrderStatus, Product};
use ordertrail_shared::problem::{PROBLEM_JSON, Problem};
use serde_json::Value;

use super::scenario::Scenario;

/// One answer, read whole.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The `content-type` header, if any.
    pub content_type: Option<String>,
    /// The `traceresponse` header, if any.
    pub traceresponse: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// The trace of the request: from `traceresponse`, or else from a problem's `trace_id`.
    pub fn trace_id(&self) -> Option<String> {
        let from_header = self
            .traceresponse
            .as_deref()
            .and_then(|header| header.split('-').nth(1))
            .filter(|id| is_trace_id(id))
            .map(str::to_owned);
        from_header.or_else(|| {
            let json = self.json()?;
            let id = json.get("trace_id")?.as_str()?;
            is_trace_id(id).then(|| id.to_owned())
        })
    }

    /// The body as JSON, if it is.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// True for `409 request in progress`: a duplicate of a key whose first request still
    /// runs. Asking again with the key later gets the first request's final answer.
    pub fn is_in_progress(&self) -> bool {
        self.status == 409
            && self
                .problem()
                .is_some_and(|p| p.title == "request in progress")
    }

    /// True for `409 checkout unfinished`: the checkout lost its claim on the order (or ran
    /// past the saga's time limit) and the recovery sweep finishes the order. The answer is
    /// not final, and only a request with an `Idempotency-Key` can get the final one later
    /// (by sending the key again); without a key, the order is to be looked up by its
    /// `order_id`.
    pub fn is_unfinished(&self) -> bool {
        self.status == 409
            && self
                .problem()
                .is_some_and(|p| p.kind == UNFINISHED_TYPE || p.title == UNFINISHED_TITLE)
    }

    /// True for the final answer to a request: neither [`in progress`](Self::is_in_progress)
    /// nor [`unfinished`](Self::is_unfinished).
    pub fn is_final(&self) -> bool {
        !self.is_in_progress() && !self.is_unfinished()
    }

    /// The problem document, when the body is one (whatever the content type says).
    fn problem(&self) -> Option<Problem> {
        serde_json::from_slice(&self.body).ok()
    }

    fn has_type(&self, media_type: &str) -> bool {
        self.content_type
            .as_deref()
            .and_then(|t| t.split(';').next())
            .is_some_and(|t| t.trim().eq_ignore_ascii_case(media_type))
    }

    /// The status and what the problem says, for a verdict: its `reason` when it has one
    /// (`409 checkout failed (out_of_stock)`, the same for every such answer, so that they
    /// group), or else its detail (`503 service unavailable: the order service did not
    /// answer`).
    fn describe(&self) -> String {
        let Some(problem) = self.problem() else {
            return self.status.to_string();
        };
        match (reason(&problem), problem.detail) {
            (Some(reason), _) => format!("{} {} ({reason})", self.status, problem.title),
            (None, Some(detail)) => format!("{} {}: {detail}", self.status, problem.title),
            (None, None) => format!("{} {}", self.status, problem.title),
        }
    }
}

/// The problem type of `409 checkout unfinished`, and its title.
const UNFINISHED_TYPE: &str = "/problems/checkout-unfinished";
const UNFINISHED_TITLE: &str = "checkout unfinished";

/// 32 lowercase hex digits, not all zero.
fn is_trace_id(id: &str) -> bool {
    id.len() == 32
        && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && id.bytes().any(|b| b != b'0')
}

/// Why an answer breaks the contract; `Ok` when it keeps it.
pub type Verdict = Result<(), String>;

/// The verdict on `answer` to one request of `scenario`. For [`Scenario::Retried`] this is the
/// verdict on one of the concurrent copies; [`replay`] judges the replay after the answer.
///
/// Every order may also get `409 checkout unfinished`, an answer that is not final: the load
/// counts it apart (a lost claim on the order is worth seeing) and does not call it unexpected.
pub fn check(scenario: Scenario, answer: &Answer) -> Verdict {
    if scenario != Scenario::Reads && answer.is_unfinished() {
        return unfinished(answer);
    }
    match scenario {
        Scenario::Captured => captured(answer),
        Scenario::Declined => declined(answer, "card_declined"),
        Scenario::Insufficient => declined(answer, "insufficient_funds"),
        Scenario::OutOfStock => problem(answer, &[409], Some("out_of_stock")),
        Scenario::Reads => products(answer),
        Scenario::Retried if answer.is_in_progress() => problem(answer, &[409], None),
        Scenario::Retried => captured(answer),
    }
}

/// The verdict on a replay of an `Idempotency-Key` sent after `first`, the first final answer
/// to it: the same status and body, and a captured order's (a replay of an answer that broke
/// the contract breaks it too). After a `202` (not final: the order was still to be
/// confirmed) a replay may also be `409` in progress or the order's final `201`.
pub fn replay(first: &Answer, replay: &Answer) -> Verdict {
    if same(first, replay) {
        return captured(replay);
    }
    if first.status == 202 {
        if replay.is_in_progress() {
            return problem(replay, &[409], None);
        }
        if replay.status == 201 {
            captured(replay)?;
            let id = |a: &Answer| a.json().map(|v| v["order_id"].clone());
            if id(first) == id(replay) {
                return Ok(());
            }
        }
    }
    Err(format!(
        "the replay answered {} where the first final answer was {}",
        replay.describe(),
        first.describe()
    ))
}

/// The verdict on the second of two concurrent copies of one key, taken with the first (each
/// copy's own is [`check`]'s): when both are final they are the same, and they are not both
/// `409 request in progress`, since one of them runs the checkout, which ends or stops
/// unfinished. A copy without an answer says nothing of the other.
pub fn copies(first: Option<&Answer>, second: Option<&Answer>) -> Verdict {
    let (Some(first), Some(second)) = (first, second) else {
        return Ok(());
    };
    if first.is_in_progress() && second.is_in_progress() {
        return Err(
            "neither copy of one key got a final answer: both got 409 request in progress".into(),
        );
    }
    if first.is_final() && second.is_final() && !same(first, second) {
        return Err("the two copies of one key got different answers".into());
    }
    Ok(())
}

/// Same status and same body (as JSON, or byte for byte when it is not JSON).
pub fn same(a: &Answer, b: &Answer) -> bool {
    a.status == b.status
        && match (a.json(), b.json()) {
            (Some(a), Some(b)) => a == b,
            _ => a.body == b.body,
        }
}

/// `201` with a confirmed order or `202` with a paid one.
fn captured(answer: &Answer) -> Verdict {
    let status = match answer.status {
        201 => OrderStatus::Confirmed,
        202 => OrderStatus::Paid,
        409 if answer.problem().and_then(|p| reason(&p)).as_deref() == Some("out_of_stock") => {
            return Err(format!(
                "{}: a captured product ran out (restocking is off, or inventory could not \
                 be reached: see --inventory-url)",
                answer.describe()
            ));
        }
        _ => return Err(format!("expected 201 or 202, got {}", answer.describe())),
    };
    if !answer.has_type("application/json") {
        return Err(format!(
            "{} with content type {:?}, not application/json",
            answer.status, answer.content_type
        ));
    }
    let order: Order = serde_json::from_slice(&answer.body)
        .map_err(|err| format!("{} with a body that is not an order: {err}", answer.status))?;
    if order.order_id.is_empty() {
        return Err(format!("{} with an empty order_id", answer.status));
    }
    if order.status != status {
        return Err(format!(
            "{} with an order {}, not {}",
            answer.status,
            order.status.as_str(),
            status.as_str()
        ));
    }
    Ok(())
}

/// `409 checkout unfinished`: a problem of its type and title, naming the order.
fn unfinished(answer: &Answer) -> Verdict {
    let problem = problem_document(answer, &[409], None)?;
    if problem.kind != UNFINISHED_TYPE || problem.title != UNFINISHED_TITLE {
        return Err(format!(
            "409 with type {:?} and title {:?}, not {UNFINISHED_TYPE:?} and {UNFINISHED_TITLE:?}",
            problem.kind, problem.title
        ));
    }
    match problem.extensions.get("order_id") {
        Some(Value::String(id)) if !id.is_empty() => Ok(()),
        _ => Err("409 checkout unfinished without an order_id".into()),
    }
}

/// `402` with the decline `reason`.
fn declined(answer: &Answer, expected: &str) -> Verdict {
    problem(answer, &[402], Some(expected))
}

/// `200` with a JSON array of products.
fn products(answer: &Answer) -> Verdict {
    if answer.status != 200 {
        return Err(format!("expected 200, got {}", answer.describe()));
    }
    if !answer.has_type("application/json") {
        return Err(format!(
            "200 with content type {:?}, not application/json",
            answer.content_type
        ));
    }
    serde_json::from_slice::<Vec<Product>>(&answer.body)
        .map(drop)
        .map_err(|err| format!("200 with a body that is not a list of products: {err}"))
}

/// A problem+json document with one of `statuses`, its `status` member agreeing, a trace id,
/// and `reason` when one is expected.
fn problem(answer: &Answer, statuses: &[u16], expected_reason: Option<&str>) -> Verdict {
    problem_document(answer, statuses, expected_reason).map(drop)
}

/// The problem document of [`problem`]'s verdict, when it keeps the contract.
fn problem_document(
    answer: &Answer,
    statuses: &[u16],
    expected_reason: Option<&str>,
) -> Result<Problem, String> {
    if !statuses.contains(&answer.status) {
        let wanted: Vec<String> = statuses.iter().map(u16::to_string).collect();
        return Err(format!(
            "expected {}, got {}",
            wanted.join(" or "),
            answer.describe()
        ));
    }
    if !answer.has_type(PROBLEM_JSON) {
        return Err(format!(
            "{} with content type {:?}, not {PROBLEM_JSON}",
            answer.status, answer.content_type
        ));
    }
    let problem: Problem = serde_json::from_slice(&answer.body).map_err(|err| {
        format!(
            "{} with a body that is not a problem document: {err}",
            answer.status
        )
    })?;
    if problem.status != answer.status {
        return Err(format!(
            "{} with a problem whose status is {}",
            answer.status, problem.status
        ));
    }
    if !problem.trace_id.as_deref().is_some_and(is_trace_id) {
        return Err(format!(
            "{} {} without a trace_id",
            answer.status, problem.title
        ));
    }
    if let Some(expected) = expected_reason {
        let found = reason(&problem);
        if found.as_deref() != Some(expected) {
            return Err(format!(
                "{} with reason {}, not {expected}",
                answer.describe(),
                found.as_deref().unwrap_or("(none)")
            ));
        }
    }
    Ok(problem)
}

fn reason(problem: &Problem) -> Option<String> {
    problem
        .extensions
        .get("reason")?
        .as_str()
        .map(str::to_owned)
}
