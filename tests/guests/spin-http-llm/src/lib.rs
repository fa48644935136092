//! A Spin HTTP component using Spin's LLM interface, written as Spin's
//! documentation shows: `POST /infer` with a prompt infers with the model
//! named by the `x-model` header (default `smollm2`), `POST /embed` with
//! lines of text answers the embedding length and the token count; `GET
//! /flood` (hostile) answers a body larger than the host reads.

use spin_sdk::http::{IntoResponse, Method, Request, Response};
use spin_sdk::{http_component, llm};

#[http_component]
fn handle(request: Request) -> anyhow::Result<impl IntoResponse> {
    let body = String::from_utf8_lossy(request.body()).into_owned();
    let model = request
        .header("x-model")
        .and_then(|value| value.as_str())
        .unwrap_or("smollm2")
        .to_owned();
    match (request.method(), request.path()) {
        (Method::Post, "/infer") => {
            let params = llm::InferencingParams {
                max_tokens: 24,
                temperature: 0.0,
                ..Default::default()
            };
            let result = llm::infer_with_options(llm::InferencingModel::Other(&model), &body, params)?;
            Ok(Response::builder()
                .status(200)
                .header("content-type", "text/plain")
                .header("x-generated-tokens", result.usage.generated_token_count.to_string())
                .body(result.text)
                .build())
        }
        (Method::Post, "/embed") => {
            let lines: Vec<String> = body.lines().map(str::to_owned).collect();
            let result = llm::generate_embeddings(llm::EmbeddingModel::Other(&model), &lines)?;
            let lengths: Vec<String> = result.embeddings.iter().map(|e| e.len().to_string()).collect();
            Ok(Response::builder()
                .status(200)
                .body(format!("{} tokens={}", lengths.join(","), result.usage.prompt_token_count))
                .build())
        }
        // Hostile: a body larger than any host reads.
        (Method::Get, "/flood") => Ok(Response::builder()
            .status(200)
            .body(vec![b'x'; 20 << 20])
            .build()),
        _ => Ok(Response::builder().status(404).body("no such route").build()),
    }
}
