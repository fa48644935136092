//! Infers with Spin 1's unversioned `fermyon:spin/llm`: stdin is
//! `MODEL PROMPT`; prints the text, or the error and exits non-zero.

use std::io::Read;

wit_bindgen::generate!({
    path: "../../../runtime/wit-spin",
    world: "spin1-llm",
    generate_all,
});

use fermyon::spin::llm::{InferencingParams, infer};

fn main() {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).expect("stdin");
    let (model, prompt) = input.trim().split_once(' ').unwrap_or((input.trim(), ""));
    let params = InferencingParams {
        max_tokens: 16,
        repeat_penalty: 1.1,
        repeat_penalty_last_n_token_count: 64,
        temperature: 0.0,
        top_k: 40,
        top_p: 0.9,
    };
    match infer(model, prompt, Some(params)) {
        Ok(result) => println!("{}", result.text.trim()),
        Err(error) => {
            eprintln!("infer failed: {error:?}");
            std::process::exit(1);
        }
    }
}
