//! HTTP on both sides of a hop: the server layer that continues the caller's trace, the traced
//! client that propagates it, the JSON extractor whose errors are problem+json, and health.

mod client;
mod json;
mod server;

pub use client::{Call, ServiceClient};
pub use json::Json;
pub use server::{health_routes, serve, traced, traced_edge};
