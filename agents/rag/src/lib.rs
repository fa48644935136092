//! `rag`: answers questions from the tenant's own documents.
//!
//! - `ingest TEXT`: splits TEXT into passages (blank-line separated) and stores
//!   each in vector memory, embedded with `minilm`; metadata `source` names it.
//! - anything else is a question: the closest passages are retrieved and
//!   given to `smollm2` as context; the answer ends with the passages it cites.

use sovra_sdk::{Agent, Error, Request, Response, inference, log, vector};

const COLLECTION: &str = "documents";
const EMBEDDER: &str = "minilm";
const GENERATOR: &str = "smollm2";
/// Passages retrieved per question.
const TOP_K: u32 = 2;

struct Rag;

fn ingest(text: &str, source: &str) -> Result<Response, Error> {
    let passages: Vec<&str> = text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()).collect();
    if passages.is_empty() {
        return Err(Error::InvalidInput("nothing to ingest".into()));
    }
    for (i, passage) in passages.iter().enumerate() {
        let id = format!("{source}#{i}");
        vector::upsert_text(COLLECTION, &id, passage, &[("source", source)], EMBEDDER)?;
    }
    Ok(Response::text(format!("ingested {} passages from {source}", passages.len())))
}

fn answer(question: &str) -> Result<Response, Error> {
    let hits = vector::query_text(COLLECTION, question, EMBEDDER, TOP_K)?;
    if hits.is_empty() {
        return Ok(Response::text("I have no documents to answer from yet."));
    }
    let context: String = hits.iter().map(|h| format!("- {}\n", h.text)).collect();
    let completion = inference::chat(GENERATOR)
        .system("Answer the question using only the context. Be brief.")
        .user(format!("Context:\n{context}\nQuestion: {question}"))
        .max_tokens(64)
        .repeat_penalty(1.2)
        .generate()?;
    let cited: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
    log::log(log::Level::Info, "retrieved", &[("passages", &cited.join(","))]);
    Ok(Response::text(format!("{}\n[sources: {}]", completion.text.trim(), cited.join(", ")))
        .with_metadata("sources", cited.join(",")))
}

impl Agent for Rag {
    fn handle(request: Request) -> Result<Response, Error> {
        let input = request.input.trim();
        match input.strip_prefix("ingest ") {
            Some(text) => ingest(text, request.metadata("source").unwrap_or("doc")),
            None if input.is_empty() => Err(Error::InvalidInput("ask a question or `ingest TEXT`".into())),
            None => answer(input),
        }
    }
}

sovra_sdk::export_agent!(Rag);
