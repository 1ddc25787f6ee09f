//! HTTP on both sides of a hop: the service bootstrap with its limits, the server layer that
//! continues the caller's trace, the traced client that propagates it, the JSON extractor
//! whose errors are problem+json, and health checks.

mod client;
mod json;
mod limits;
mod server;
mod service;

pub use client::{Call, ServiceClient};
pub use json::Json;
pub use limits::Limits;
pub use server::{Door, app, internal_app};
pub use service::Service;
