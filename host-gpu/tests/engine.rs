//! The text engine on the real SmolLM2 model: streaming, batching,
//! stop sequences, limits, cancellation and seeded sampling.

mod support;

use std::sync::Arc;

use sovra_gpu::cuda::DeviceChoice;
use sovra_gpu::engine::{EngineLimits, TextEngine};
use sovra_gpu::{
    ChatMessage, FinishReason, GenerateRequest, GenerationEvent, ModelService, Prompt,
    RequestContext, Role, Sampling,
};
use support::{SMOLLM2, context, model_file, smollm2_engine};

fn chat(text: &str, sampling: Sampling) -> GenerateRequest {
    GenerateRequest {
        model: "smollm2".into(),
        prompt: Prompt::Chat(vec![ChatMessage {
            role: Role::User,
            content: text.into(),
        }]),
        sampling,
    }
}

/// Runs a generation to its end: (text, reason, generated tokens).
async fn run(engine: &TextEngine, request: GenerateRequest) -> (String, FinishReason, u32) {
    let mut generation = engine.start_generation(&context(), request).unwrap();
    let mut text = String::new();
    loop {
        match generation
            .next()
            .await
            .expect("the engine finishes every generation")
        {
            GenerationEvent::Text(piece) => text.push_str(&piece),
            GenerationEvent::Finished { reason, usage } => {
                return (text, reason, usage.generated_tokens);
            }
            GenerationEvent::Failed(error) => panic!("generation failed: {error}"),
        }
    }
}

fn greedy(max_tokens: u32) -> Sampling {
    Sampling {
        max_tokens,
        ..Sampling::default()
    }
}

#[tokio::test]
async fn batched_sequences_match_their_solo_runs() {
    let Some(engine) = smollm2_engine() else {
        return;
    };
    let prompts = [
        "What is the capital of France?",
        "Write a haiku about the sea.",
        "Count to five.",
        "Who wrote Hamlet?",
    ];
    let mut solo = Vec::new();
    for prompt in prompts {
        solo.push(run(&engine, chat(prompt, greedy(16))).await);
    }
    let together: Vec<_> = prompts
        .iter()
        .map(|prompt| {
            let engine = Arc::clone(&engine);
            let request = chat(prompt, greedy(16));
            tokio::spawn(async move { run(&engine, request).await })
        })
        .collect();
    for (task, expected) in together.into_iter().zip(&solo) {
        assert_eq!(&task.await.unwrap(), expected);
    }
}

#[tokio::test]
async fn max_tokens_and_stop_sequences_end_generation() {
    let Some(engine) = smollm2_engine() else {
        return;
    };
    let (text, reason, generated) = run(
        &engine,
        chat("Tell me a long story about a dragon.", greedy(5)),
    )
    .await;
    assert_eq!((reason, generated), (FinishReason::Length, 5));
    assert!(!text.is_empty());

    let (full, _, _) = run(
        &engine,
        chat("Tell me a long story about a dragon.", greedy(24)),
    )
    .await;
    let words: Vec<&str> = full.split_whitespace().collect();
    assert!(words.len() > 3, "{full:?}");
    let stop = words[2].to_owned();
    let sampling = Sampling {
        stop: vec![stop.clone()],
        ..greedy(24)
    };
    let (cut, reason, _) = run(
        &engine,
        chat("Tell me a long story about a dragon.", sampling),
    )
    .await;
    assert_eq!(reason, FinishReason::Stop);
    assert!(!cut.contains(&stop), "{cut:?} contains the stop {stop:?}");
    assert!(
        full.starts_with(&cut),
        "{cut:?} is not a prefix of {full:?}"
    );
}

#[tokio::test]
async fn same_seed_same_text() {
    let Some(engine) = smollm2_engine() else {
        return;
    };
    let sampling = |seed| Sampling {
        temperature: 0.9,
        top_k: 40,
        top_p: 0.95,
        seed: Some(seed),
        ..greedy(16)
    };
    let a = run(&engine, chat("Say something surprising.", sampling(7))).await;
    let b = run(&engine, chat("Say something surprising.", sampling(7))).await;
    assert_eq!(a, b);
}

#[tokio::test]
async fn a_dropped_generation_does_not_stop_others() {
    let Some(engine) = smollm2_engine() else {
        return;
    };
    let mut abandoned = engine
        .start_generation(&context(), chat("Tell me a story.", greedy(200)))
        .unwrap();
    let _ = abandoned.next().await;
    drop(abandoned);
    let cancelled = engine
        .start_generation(&context(), chat("Tell me a story.", greedy(200)))
        .unwrap();
    cancelled.cancel();
    let (text, reason, _) = run(&engine, chat("What is the capital of France?", greedy(8))).await;
    assert!(!text.is_empty());
    assert!(matches!(reason, FinishReason::Length | FinishReason::Stop));
    // The dropped and the cancelled sequence left at the next step, and
    // their cache blocks went back to the pool with them.
    assert_eq!(engine.kv_cache_usage().0, 0);
}

#[tokio::test]
async fn bad_requests_are_refused_up_front() {
    let Some(engine) = smollm2_engine() else {
        return;
    };
    let too_long = Prompt::Text("word ".repeat(9000));
    let request = GenerateRequest {
        model: "smollm2".into(),
        prompt: too_long,
        sampling: greedy(4),
    };
    let error = engine.start_generation(&context(), request).unwrap_err();
    assert!(error.to_string().contains("at most"), "{error}");
    let error = engine
        .start_generation(&context(), chat("hi", greedy(0)))
        .unwrap_err();
    assert!(error.to_string().contains("max-tokens"), "{error}");
}

#[tokio::test]
async fn a_full_cache_makes_requests_wait_not_fail() {
    let Some(path) = model_file(SMOLLM2) else {
        return;
    };
    // Room for about one request of this size at a time.
    // 30 layers, keys and values of 192 dimensions, f32.
    let per_token = 30 * 192 * 2 * 4;
    let limits = EngineLimits {
        kv_cache_bytes: 80 * per_token,
        tenant_share_percent: 100,
    };
    let engine = Arc::new(
        TextEngine::load_with_limits("smollm2", &path, limits, DeviceChoice::Cpu).unwrap(),
    );
    let prompts = [
        "What is the capital of France?",
        "Count to five.",
        "Who wrote Hamlet?",
    ];
    let mut solo = Vec::new();
    for prompt in prompts {
        solo.push(run(&engine, chat(prompt, greedy(12))).await);
    }
    let together: Vec<_> = prompts
        .iter()
        .map(|prompt| {
            let engine = Arc::clone(&engine);
            let request = chat(prompt, greedy(12));
            tokio::spawn(async move { run(&engine, request).await })
        })
        .collect();
    for (task, expected) in together.into_iter().zip(&solo) {
        assert_eq!(&task.await.unwrap(), expected);
    }
    // Every finished sequence gave its blocks back to the pool.
    let (in_use, capacity) = engine.kv_cache_usage();
    assert_eq!(in_use, 0);
    assert_eq!(capacity, 80 * per_token, "five blocks of 16 positions");
    let error = engine
        .start_generation(&context(), chat("hi", greedy(500)))
        .unwrap_err();
    assert!(error.to_string().contains("KV cache"), "{error}");
}

#[tokio::test]
async fn one_tenants_flood_does_not_hold_up_another_tenant() {
    let Some(path) = model_file(SMOLLM2) else {
        return;
    };
    let max_tokens = 8;
    let request = || chat("Count to five.", greedy(max_tokens));
    let limits = |kv_cache_bytes| EngineLimits {
        kv_cache_bytes,
        tenant_share_percent: 50,
    };
    let load = |kv_cache_bytes| {
        TextEngine::load_with_limits("smollm2", &path, limits(kv_cache_bytes), DeviceChoice::Cpu)
            .unwrap()
    };
    let probe = load(1 << 30);
    let prompt = probe.prompt_tokens(&request().prompt).unwrap().len();
    drop(probe);
    // Room for four such requests; one tenant may hold two of them.
    // 30 layers, keys and values of 192 dimensions, f32.
    let per_token = 30 * 192 * 2 * 4;
    let per_request = (prompt + max_tokens as usize).div_ceil(16) * 16 * per_token;
    let engine = load(4 * per_request);

    let tenant = |name: &str| RequestContext {
        tenant: name.into(),
        deadline: None,
    };
    // Tenant a asks six times, then tenant b once, all before the first step ends.
    let mut generations = Vec::new();
    for i in 0..6 {
        let generation = engine.start_generation(&tenant("a"), request()).unwrap();
        generations.push((format!("a{i}"), generation));
    }
    let generation = engine.start_generation(&tenant("b"), request()).unwrap();
    generations.push(("b".into(), generation));
    let (done, mut finished) = tokio::sync::mpsc::unbounded_channel();
    for (name, mut generation) in generations {
        let done = done.clone();
        tokio::spawn(async move {
            loop {
                match generation.next().await.expect("a final event") {
                    GenerationEvent::Text(_) => {}
                    GenerationEvent::Finished { .. } => break,
                    GenerationEvent::Failed(error) => panic!("{name}: {error}"),
                }
            }
            done.send(name).unwrap();
        });
    }
    drop(done);
    let mut order = Vec::new();
    while let Some(name) = finished.recv().await {
        order.push(name);
    }
    assert_eq!(order.len(), 7);
    // a holds two sequences at a time, so b ran beside a0 and a1 instead of
    // waiting behind four of a's (the pool alone would have let a take all).
    let b = order.iter().position(|n| n == "b").unwrap();
    assert!(b < 3, "b finished at {b} of {order:?}");
    assert_eq!(engine.kv_cache_usage().0, 0);
    // One request larger than a tenant's share could never run: refused.
    let above_share = (2 * per_request / per_token) as u32;
    let error = engine
        .start_generation(&tenant("a"), chat("Count to five.", greedy(above_share)))
        .unwrap_err();
    assert!(error.to_string().contains("one tenant may hold"), "{error}");
}

#[test]
fn a_cache_too_small_for_one_block_is_refused_at_load() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/reference/tiny/llama-spm.gguf");
    let limits = EngineLimits {
        kv_cache_bytes: 64,
        tenant_share_percent: 50,
    };
    let error = TextEngine::load_with_limits("tiny", &path, limits, DeviceChoice::Cpu).unwrap_err();
    assert!(error.to_string().contains("holds no block"), "{error}");
}

#[tokio::test]
async fn the_cache_a_tenant_reserves_is_reported_while_its_sequence_lives() {
    let Some(engine) = smollm2_engine() else {
        return;
    };
    assert!(engine.status().kv_reserved_by_tenant.is_empty());
    let mut generation = engine
        .start_generation(&context(), chat("Tell me a story.", greedy(200)))
        .unwrap();
    let _ = generation.next().await;
    let reserved = engine.status().kv_reserved_by_tenant;
    assert_eq!(reserved.len(), 1, "{reserved:?}");
    assert_eq!(reserved[0].0, "t");
    // Prompt plus 200 tokens, in whole blocks of 16 positions.
    // 30 layers, keys and values of 192 dimensions, f32.
    let per_token = 30 * 192 * 2 * 4;
    assert!(reserved[0].1 >= 200 * per_token, "{reserved:?}");
    drop(generation);
    for _ in 0..200 {
        if engine.status().kv_reserved_by_tenant.is_empty() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the cancelled sequence's reservation is still reported");
}
