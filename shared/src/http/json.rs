//! A JSON body extractor whose rejections are problem+json like every other error.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::problem::Problem;

/// Like [`axum::Json`], but a malformed body gets a [`Problem`]: 400 for broken JSON, 415
/// without a JSON content type, 422 for JSON of the wrong shape or with invalid values.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(problem(rejection)),
        }
    }
}

fn problem(rejection: JsonRejection) -> Problem {
    let (status, title) = match &rejection {
        JsonRejection::JsonDataError(_) => {
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid request body")
        }
        JsonRejection::MissingJsonContentType(_) => {
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "expected a JSON body")
        }
        _ => (StatusCode::BAD_REQUEST, "malformed JSON body"),
    };
    // The body text names the field and the rule; the card types make sure it never quotes a
    // card number.
    Problem::new(status, title).with_detail(rejection.body_text())
}
