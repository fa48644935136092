//! Greedy generation from a GGUF model, for a quick look:
//! `cargo run --release -p sovra-gpu --example greedy -- models/SmolLM2-135M-Instruct.Q4_1.gguf "prompt"`

use std::time::Instant;

use sovra_gpu::gguf::GgufFile;
use sovra_gpu::model::LlamaModel;
use sovra_gpu::tokenizer;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("model path");
    let prompt = args.next().unwrap_or_else(|| {
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n".into()
    });
    let file = GgufFile::open(path.as_ref()).unwrap();
    let tokenizer = tokenizer::from_gguf(&file).unwrap();
    let model = LlamaModel::from_gguf(&file).unwrap();
    let mut cache = model.new_cache();
    let mut tokens = tokenizer.encode(&prompt);
    let started = Instant::now();
    let owners = vec![0; tokens.len()];
    let mut logits = model
        .forward(&tokens, &owners, &mut [&mut cache], &[tokens.len() - 1])
        .unwrap();
    let prefill = started.elapsed();
    let started = Instant::now();
    let mut generated = Vec::new();
    for _ in 0..32 {
        let next = logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i as u32)
            .unwrap();
        if Some(next) == tokenizer.eos() {
            break;
        }
        generated.push(next);
        tokens.push(next);
        logits = model
            .forward(&[next], &[0], &mut [&mut cache], &[0])
            .unwrap();
    }
    let decode = started.elapsed();
    println!("{}", tokenizer.decode(&generated));
    eprintln!(
        "prefill {} tokens in {prefill:?}; decoded {} tokens in {decode:?} ({:.1} tok/s)",
        owners.len(),
        generated.len(),
        generated.len() as f64 / decode.as_secs_f64()
    );
    eprintln!("ids: {generated:?}");
}
