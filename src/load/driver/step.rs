//! One step of each scenario: its requests sent, their answers read, measured, checked and
//! counted.

use reqwest::header::CONTENT_TYPE;
use tokio::time::Instant;

use super::Driver;
use crate::load::check::{self, Answer};
use crate::load::report::{Kind, Sample, Status};
use crate::load::root_cause;
use crate::load::scenario::{self, Scenario};

/// The largest body read from an answer; a longer one is cut and judged as it is.
const MAX_BODY: usize = 1 << 20;

impl Driver {
    /// Runs the `n`th step, a `scenario` due at `due`.
    pub(super) async fn step(&self, scenario: Scenario, n: u64, due: Instant) {
        if scenario == Scenario::Retried {
            return self.retried(n, due).await;
        }
        let sent = self.send(scenario, n, None).await;
        let verdict = match &sent {
            Ok(answer) => check::check(scenario, answer),
            Err(err) => Err(err.clone()),
        };
        if scenario == Scenario::Captured && may_have_sold(sent.as_ref().ok()) {
            self.restocker.sold(&scenario::lines(scenario, n));
        }
        self.record(Kind::Scenario(scenario), &sent, due, verdict);
    }

    /// Two copies of one keyed order at once, then a replay after the answer.
    async fn retried(&self, n: u64, due: Instant) {
        let key = format!("load-{}-{n}", self.run_id);
        let copy = || async {
            let sent = self.send(Scenario::Retried, n, Some(&key)).await;
            (sent, Instant::now())
        };
        let [(first, first_ended), (second, second_ended)]: [(Result<Answer, String>, Instant); 2] =
            futures::future::join(copy(), copy()).await.into();
        let verdict = |sent: &Result<Answer, String>| match sent {
            Ok(answer) => check::check(Scenario::Retried, answer),
            Err(err) => Err(err.clone()),
        };
        let first_verdict = verdict(&first);
        let second_verdict = verdict(&second)
            .and_then(|()| check::copies(first.as_ref().ok(), second.as_ref().ok()));
        let sold = [&first, &second]
            .into_iter()
            .any(|sent| may_have_sold(sent.as_ref().ok()));
        let kind = Kind::Scenario(Scenario::Retried);
        self.record_at(kind, &first, due, first_ended, first_verdict);
        self.record_at(kind, &second, due, second_ended, second_verdict);
        if sold {
            self.restocker.sold(&scenario::lines(Scenario::Retried, n));
        }
        // Without a final answer (a copy stopped unfinished, the other waited on it) there is
        // nothing to replay yet: the sweep finishes the order in its own time.
        let Some(first) = [first, second]
            .into_iter()
            .filter_map(Result::ok)
            .find(Answer::is_final)
        else {
            return;
        };
        let replayed_at = Instant::now();
        let sent = self.send(Scenario::Retried, n, Some(&key)).await;
        let verdict = match &sent {
            Ok(answer) => check::replay(&first, answer),
            Err(err) => Err(err.clone()),
        };
        self.record(Kind::Replay, &sent, replayed_at, verdict);
    }

    fn record(
        &self,
        kind: Kind,
        sent: &Result<Answer, String>,
        due: Instant,
        verdict: check::Verdict,
    ) {
        self.record_at(kind, sent, due, Instant::now(), verdict);
    }

    fn record_at(
        &self,
        kind: Kind,
        sent: &Result<Answer, String>,
        due: Instant,
        ended: Instant,
        verdict: check::Verdict,
    ) {
        let (status, trace_id) = match sent {
            Ok(answer) if answer.is_unfinished() => (Status::Unfinished, answer.trace_id()),
            Ok(answer) => (Status::Answered(answer.status), answer.trace_id()),
            Err(_) => (Status::NoAnswer, None),
        };
        self.report().record(Sample {
            kind,
            status,
            latency: ended.saturating_duration_since(due),
            trace_id,
            verdict,
        });
    }

    /// Sends the request of the `n`th step of `scenario` and reads the answer whole.
    async fn send(&self, scenario: Scenario, n: u64, key: Option<&str>) -> Result<Answer, String> {
        let request = match scenario::order_body(scenario, n) {
            None => self.http.get(self.products.clone()),
            Some(body) => {
                let request = self.http.post(self.orders.clone()).json(&body);
                match key {
                    Some(key) => request.header("idempotency-key", key),
                    None => request,
                }
            }
        };
        let mut response = request.send().await.map_err(no_answer)?;
        let header = |name: &str| {
            let value = response.headers().get(name)?;
            value.to_str().ok().map(str::to_owned)
        };
        let (content_type, traceresponse) =
            (header(CONTENT_TYPE.as_str()), header("traceresponse"));
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(no_answer)? {
            body.extend_from_slice(&chunk[..chunk.len().min(MAX_BODY - body.len())]);
            if body.len() >= MAX_BODY {
                break;
            }
        }
        Ok(Answer {
            status,
            content_type,
            traceresponse,
            body,
        })
    }
}

/// Whether an order's stock may have been taken: no answer, a checkout unfinished (the sweep
/// may still confirm it), or any answer but a 4xx (the order failed, its stock released).
/// Putting back a little too much is harmless.
fn may_have_sold(answer: Option<&Answer>) -> bool {
    answer.is_none_or(|answer| answer.is_unfinished() || !(400..500).contains(&answer.status))
}

/// Why there was no answer, in a few words.
fn no_answer(err: reqwest::Error) -> String {
    if err.is_timeout() {
        return "no answer within --timeout".to_owned();
    }
    let what = if err.is_connect() {
        "cannot connect"
    } else {
        "the request failed"
    };
    format!("{what}: {}", root_cause(&err))
}
