//! The baseline for `scripts/bench-http`: a plain axum handler doing natively
//! what the `hello` agent does through a sovra node (check a bearer key by
//! hash, parse the JSON input, answer a JSON greeting), with no sandbox,
//! database or audit. Prints `listening on http://ADDR` and serves until
//! killed.

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

#[derive(serde::Deserialize)]
struct Invoke {
    input: String,
}

async fn invoke(headers: HeaderMap, Json(body): Json<Invoke>) -> (StatusCode, Json<Value>) {
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let expected = Sha256::digest(std::env::var("KEY").unwrap_or_default().as_bytes());
    if Sha256::digest(key.as_bytes()) != expected {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "unauthorized"})),
        );
    }
    (
        StatusCode::OK,
        Json(json!({"output": format!("Hello, {}!", body.input)})),
    )
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening on http://{}", listener.local_addr()?);
    let app = axum::Router::new().route("/invoke", post(invoke));
    axum::serve(listener, app).await
}
