//! One call to another service, retried while it has no usable answer.

use std::time::Duration;

use ordertrail_shared::http::Call;
use ordertrail_shared::problem::Problem;
use serde::de::DeserializeOwned;

/// How often an idempotent step is tried before the saga gives up on its service.
const ATTEMPTS: u32 = 3;
/// The pause before the first retry; it doubles each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// What a call to another service came to, short of success.
#[derive(Debug)]
pub enum StepError {
    /// The service said no (4xx), with its problem document.
    Refused {
        /// What it said.
        problem: Problem,
        /// True when an earlier attempt had no usable answer and so may have been applied
        /// (it timed out but may still run).
        maybe_applied: bool,
    },
    /// No usable answer on any attempt.
    Unreachable {
        /// False when no attempt reached the service (every connection was refused), so the
        /// step surely did not happen; true when one may have (a timeout, a 5xx).
        maybe_applied: bool,
    },
}

impl StepError {
    /// True when the step may have been applied at its service, so that it must be undone.
    pub fn maybe_applied(&self) -> bool {
        match self {
            Self::Refused { maybe_applied, .. } | Self::Unreachable { maybe_applied } => {
                *maybe_applied
            }
        }
    }
}

/// Sends the call built by `make` until it gets an answer that is not a 5xx, at most
/// [`ATTEMPTS`] times with exponential backoff. Only idempotent calls may be retried.
pub async fn retry<T: DeserializeOwned>(make: impl Fn() -> Call) -> Result<T, StepError> {
    let mut backoff = FIRST_BACKOFF;
    let mut maybe_applied = false;
    for attempt in 1..=ATTEMPTS {
        match send(make()).await {
            Err(StepError::Unreachable {
                maybe_applied: this,
            }) => {
                maybe_applied |= this;
                if attempt < ATTEMPTS {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
            }
            Err(StepError::Refused { problem, .. }) => {
                return Err(StepError::Refused {
                    problem,
                    maybe_applied,
                });
            }
            Ok(value) => return Ok(value),
        }
    }
    Err(StepError::Unreachable { maybe_applied })
}

async fn send<T: DeserializeOwned>(call: Call) -> Result<T, StepError> {
    let response = call.send().await.map_err(|err| StepError::Unreachable {
        maybe_applied: !err.is_connect(),
    })?;
    let status = response.status();
    if status.is_success() {
        return response.json().await.map_err(|_| StepError::Unreachable {
            maybe_applied: true,
        });
    }
    if status.is_server_error() {
        return Err(StepError::Unreachable {
            maybe_applied: true,
        });
    }
    let problem = response
        .json::<Problem>()
        .await
        .unwrap_or_else(|_| Problem::new(status, status.canonical_reason().unwrap_or("error")));
    Err(StepError::Refused {
        problem,
        maybe_applied: false,
    })
}
