//! Reading a router's answer in a test.

/// The JSON body of a router's response; panics when it is not JSON.
pub async fn json_body(response: axum::response::Response) -> serde_json::Value {
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("a readable body");
    serde_json::from_slice(&bytes).expect("a JSON body")
}
