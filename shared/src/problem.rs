//! RFC 9457 problem details, the one error shape every ordertrail endpoint answers with.

use std::fmt;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::telemetry::current_trace_id;

/// The media type of a problem document.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// A problem document: `type`, `title`, `status`, `detail`, the `trace_id` of the request that
/// failed (so a user can paste it into Jaeger) and any extension members.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Problem {
    /// A URI reference naming the problem type; `about:blank` when the status says it all.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short, human-readable summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request, for a human.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The trace this request belongs to, as 32 lowercase hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Extension members such as `order_id` or `reason`.
    #[serde(flatten)]
    pub extensions: Map<String, Value>,
}

impl Problem {
    /// A problem with the given status and title, stamped with the current trace id.
    pub fn new(status: StatusCode, title: impl Into<String>) -> Self {
        Self {
            kind: "about:blank".to_owned(),
            title: title.into(),
            status: status.as_u16(),
            detail: None,
            trace_id: current_trace_id(),
            extensions: Map::new(),
        }
    }

    /// Sets the problem type URI, for problems a client is expected to tell apart.
    pub fn with_type(mut self, kind: impl Into<String>) -> Self {
        self.kind = kind.into();
        self
    }

    /// Sets the human-readable detail, made safe to show: see [`printable`].
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(printable(&detail.into()));
        self
    }

    /// Adds an extension member.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extensions.insert(key.to_owned(), value.into());
        self
    }

    /// The problem answering `error` with `status` and `title`: the error's message is the
    /// detail (made safe to show, as by [`Problem::with_detail`]). For an error the client may
    /// read in full; an internal one is [`Problem::internal`].
    ///
    /// Each service's `ApiError::problem` maps its variants with this, one arm each, adding a
    /// problem type or extension members where a client tells the problems apart.
    pub fn from_error(
        status: StatusCode,
        title: impl Into<String>,
        error: &dyn fmt::Display,
    ) -> Self {
        Self::new(status, title).with_detail(error.to_string())
    }

    /// A 500 that hides `err` from the client and logs it once, with its cause chain.
    pub fn internal(err: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error = err, error.type = "internal", "request failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }

    /// The status as a [`StatusCode`], falling back to 500 for a nonsensical one.
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// The longest detail a problem carries, in characters.
const MAX_DETAIL_CHARS: usize = 300;

/// `text` fit to show a human, whatever a caller put in it: control characters and bidi
/// controls (which can reorder what a terminal or a browser shows) become U+FFFD, and a
/// long text is cut at [`MAX_DETAIL_CHARS`] characters.
fn printable(text: &str) -> String {
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
    };
    let mut shown: String = text
        .chars()
        .take(MAX_DETAIL_CHARS)
        .map(|c| if unsafe_char(c) { '\u{FFFD}' } else { c })
        .collect();
    if text.chars().nth(MAX_DETAIL_CHARS).is_some() {
        shown.push('…');
    }
    shown
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let mut response = (status, axum::Json(self)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detail_never_carries_control_or_bidi_characters_nor_runs_on() {
        let problem = Problem::new(StatusCode::NOT_FOUND, "not found")
            .with_detail("no order a\u{202E}gnp.exe\r\n\u{1b}[31mred\u{2066}");
        assert_eq!(
            problem.detail.as_deref(),
            Some("no order a\u{FFFD}gnp.exe\u{FFFD}\u{FFFD}\u{FFFD}[31mred\u{FFFD}")
        );
        let long = Problem::new(StatusCode::NOT_FOUND, "not found").with_detail("x".repeat(10_000));
        assert_eq!(long.detail.unwrap().chars().count(), MAX_DETAIL_CHARS + 1);
    }
}
