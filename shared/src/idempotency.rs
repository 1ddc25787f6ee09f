//! The `Idempotency-Key` header, read once at the edge of each service that takes it.

use axum::http::{HeaderMap, StatusCode};

use crate::problem::Problem;

/// The header a client sets to make a retried `POST` safe.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The longest key.
const MAX_LEN: usize = 255;

/// A key as a client sent it: 1 to 255 visible ASCII characters, no space or tab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

/// Why a request's `Idempotency-Key` cannot be used; answered 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidKey {
    /// The header was sent more than once: which one is meant cannot be known.
    #[error("send one Idempotency-Key header, not several")]
    Repeated,
    /// Empty, too long, or not visible ASCII.
    #[error("Idempotency-Key must be 1 to {MAX_LEN} visible ASCII characters, without spaces")]
    Malformed,
}

impl IdempotencyKey {
    /// The key of a request with `headers`, `None` when it sent none.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, InvalidKey> {
        let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(InvalidKey::Repeated);
        }
        let bytes = value.as_bytes();
        // `HeaderValue::to_str` lets spaces and tabs through; a key must not hold them.
        if bytes.is_empty() || bytes.len() > MAX_LEN || !bytes.iter().all(u8::is_ascii_graphic) {
            return Err(InvalidKey::Malformed);
        }
        let key = std::str::from_utf8(bytes).map_err(|_| InvalidKey::Malformed)?;
        Ok(Some(Self(key.to_owned())))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<InvalidKey> for Problem {
    fn from(err: InvalidKey) -> Self {
        Problem::from_error(StatusCode::BAD_REQUEST, "invalid Idempotency-Key", &err)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(IDEMPOTENCY_KEY, HeaderValue::from_bytes(value).unwrap());
        }
        headers
    }

    #[test]
    fn a_key_is_one_to_255_visible_ascii_characters() {
        assert_eq!(IdempotencyKey::from_headers(&headers(&[])), Ok(None));
        let key = IdempotencyKey::from_headers(&headers(&[b"7d1c4a52-order-1"])).unwrap();
        assert_eq!(key.unwrap().as_str(), "7d1c4a52-order-1");
        let longest = "k".repeat(MAX_LEN);
        assert!(IdempotencyKey::from_headers(&headers(&[longest.as_bytes()])).is_ok());
        for bad in [
            &b""[..],
            b"with space",
            b"with\ttab",
            "k".repeat(MAX_LEN + 1).as_bytes(),
            b"caf\xc3\xa9",
        ] {
            assert_eq!(
                IdempotencyKey::from_headers(&headers(&[bad])),
                Err(InvalidKey::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_key_sent_twice_is_refused_even_when_both_agree() {
        assert_eq!(
            IdempotencyKey::from_headers(&headers(&[b"a", b"a"])),
            Err(InvalidKey::Repeated)
        );
    }
}
