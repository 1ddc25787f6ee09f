//! The payment API: `POST /payments`, `GET /payments/{order_id}` and
//! `POST /payments/{order_id}/refund`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json as JsonResponse, Router};
use ordertrail_shared::api::{ChargeRequest, Payment, PaymentStatus};
use ordertrail_shared::card::CardNumber;
use ordertrail_shared::http::Json;
use ordertrail_shared::{audit, record_failure};
use tracing::field::Empty;

use crate::AppState;
use crate::error::ApiError;
use crate::metrics::metrics;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/payments", post(charge))
        .route("/payments/{order_id}", get(payment))
        .route("/payments/{order_id}/refund", post(refund))
}

/// Charges the card once per order: 201 when captured now, 200 when it was captured before,
/// 402 when declined (now or before); 504 when a `provider_timeout` fault strikes, after the
/// payment was recorded as the provider decided (see `ordertrail_shared::faults::Kind`).
#[tracing::instrument(
    name = "payment.charge",
    skip_all,
    fields(order.id = %request.order_id, order.total_cents = request.amount_cents, payment.id = Empty, payment.card.brand = Empty, payment.card.last4 = Empty)
)]
async fn charge(
    State(state): State<AppState>,
    Json(request): Json<ChargeRequest>,
) -> Result<(StatusCode, JsonResponse<Payment>), ApiError> {
    if request.order_id.is_empty() || request.amount_cents < 0 {
        return Err(ApiError::Invalid(
            "order_id must be set and amount_cents must not be negative".into(),
        ));
    }
    let decline_reason = simulate(&request.card.card_number);
    let card = request.card.card_number.masked();
    // The card leaves memory here: nothing below can reach the number.
    let ChargeRequest {
        order_id,
        amount_cents,
        card: _,
    } = request;
    let span = tracing::Span::current();
    span.record("payment.card.brand", card.brand.as_str())
        .record("payment.card.last4", card.last4.as_str());

    let attempt = Payment {
        payment_id: uuid::Uuid::now_v7().to_string(),
        order_id,
        status: if decline_reason.is_some() {
            PaymentStatus::Declined
        } else {
            PaymentStatus::Captured
        },
        amount_cents,
        card,
        decline_reason: decline_reason.map(str::to_owned),
    };
    let (payment, created) = state.store.insert(&attempt).await?;
    span.record("payment.id", payment.payment_id.as_str());
    if created && payment.status == PaymentStatus::Captured {
        audit!("payment-captured", "payment captured");
    }
    // Counted once, when decided: a retried charge replays the same decline.
    if created && let Some(reason) = decline_reason {
        metrics().declined(reason);
    }
    // The provider has decided, and the payment says what; its answer is what gets lost.
    if let Some(delay) = state.store.database().faults().provider_timeout() {
        tokio::time::sleep(delay).await;
        let err = ApiError::ProviderTimeout(delay);
        record_failure!(INFO, err.kind(), &err, "the card provider did not answer");
        return Err(err);
    }
    match payment.status {
        PaymentStatus::Declined => {
            let err = ApiError::Declined(Box::new(payment));
            record_failure!(INFO, err.kind(), &err, "payment declined");
            Err(err)
        }
        _ if created => Ok((StatusCode::CREATED, JsonResponse(payment))),
        _ => Ok((StatusCode::OK, JsonResponse(payment))),
    }
}

/// Stripe's test cards: the decline reason for the two declining numbers, none for the rest.
/// This is the only place that reads a card's digits.
fn simulate(card: &CardNumber) -> Option<&'static str> {
    match card.expose_digits() {
        "4000000000000002" => Some("card_declined"),
        "4000000000009995" => Some("insufficient_funds"),
        _ => None,
    }
}

async fn payment(
    State(state): State<AppState>,
    Path(order_id): Path<String>,
) -> Result<JsonResponse<Payment>, ApiError> {
    Ok(JsonResponse(state.store.get(&order_id).await?))
}

#[tracing::instrument(name = "payment.refund", skip_all, fields(order.id = %order_id))]
async fn refund(
    State(state): State<AppState>,
    Path(order_id): Path<String>,
) -> Result<JsonResponse<Payment>, ApiError> {
    let (payment, refunded) = state.store.refund(&order_id).await?;
    if refunded {
        audit!(
            "payment-refunded",
            payment.id = %payment.payment_id,
            order.total_cents = payment.amount_cents,
            "payment refunded"
        );
    }
    Ok(JsonResponse(payment))
}
