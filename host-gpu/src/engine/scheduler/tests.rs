//! The scheduler's planning and its rounds on a fake backend, whose caches
//! only count the positions they fill and whose every wanted row comes back
//! as one chosen token.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::mpsc::channel;

use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use super::*;
use crate::engine::{SequenceCache, Wanted};
use crate::gguf::GgufFile;
use crate::model::{BLOCK_TOKENS, LlamaConfig, RopeStyle};
use crate::sampling::Sampler;
use crate::service::{CancelToken, GenerationEvent, UsageMeter};
use crate::{Sampling, Usage};

/// Context length of the fake model.
const CONTEXT: usize = 1024;

/// Rounds a test runs at most before it gives up on a condition.
const MAX_ROUNDS: usize = 1000;

/// A backend that runs no model: a step fills one cache position per token
/// and gives every wanted row the token in `next`.
struct FakeBackend {
    config: LlamaConfig,
    capacity_blocks: usize,
    /// Blocks the live caches hold together.
    blocks_in_use: Arc<AtomicUsize>,
    /// The token every wanted row gives.
    next: AtomicU32,
    /// Whether the next step fails with a device error.
    fail_next_step: AtomicBool,
}

/// A cache that counts the positions it fills and takes its blocks from
/// the fake pool as it crosses into them.
struct FakeCache {
    filled: usize,
    pool: Arc<AtomicUsize>,
}

impl SequenceCache for FakeCache {
    fn filled(&self) -> usize {
        self.filled
    }
}

impl Drop for FakeCache {
    fn drop(&mut self) {
        self.pool
            .fetch_sub(blocks_for(self.filled), Ordering::Relaxed);
    }
}

impl Backend for FakeBackend {
    type Cache = FakeCache;

    fn device(&self) -> String {
        "fake:0".into()
    }

    fn config(&self) -> &LlamaConfig {
        &self.config
    }

    fn new_cache(&self) -> FakeCache {
        FakeCache {
            filled: 0,
            pool: Arc::clone(&self.blocks_in_use),
        }
    }

    fn cache_capacity_blocks(&self) -> usize {
        self.capacity_blocks
    }

    fn cache_block_bytes(&self) -> usize {
        1
    }

    fn cache_blocks_in_use(&self) -> usize {
        self.blocks_in_use.load(Ordering::Relaxed)
    }

    fn step(
        &self,
        tokens: &[u32],
        owners: &[usize],
        caches: &mut [&mut FakeCache],
        wanted: &[Wanted],
    ) -> Result<Vec<RowOutput>, BackendError> {
        assert_eq!(tokens.len(), owners.len());
        assert!(tokens.len() <= MAX_STEP_TOKENS);
        if self.fail_next_step.swap(false, Ordering::Relaxed) {
            return Err(BackendError::Device("the fake device failed".into()));
        }
        for &owner in owners {
            let cache = &mut caches[owner];
            if cache.filled.is_multiple_of(BLOCK_TOKENS) {
                let in_use = self.blocks_in_use.fetch_add(1, Ordering::Relaxed) + 1;
                assert!(
                    in_use <= self.capacity_blocks,
                    "a live sequence found the pool empty"
                );
            }
            cache.filled += 1;
        }
        let next = self.next.load(Ordering::Relaxed);
        Ok(wanted
            .iter()
            .map(|w| {
                assert!(w.row < tokens.len());
                if w.greedy {
                    RowOutput::ArgMax(next)
                } else {
                    let mut logits = vec![0.0; self.config.vocab];
                    logits[next as usize] = 100.0;
                    RowOutput::Logits(logits)
                }
            })
            .collect())
    }
}

/// The tiny test model's tokenizer (the scheduler decodes sampled tokens).
fn tokenizer() -> Arc<Tokenizer> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/tiny/llama-spm.gguf");
    Arc::new(crate::tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap())
}

/// A token whose text is plain letters, which the fake samples unless told otherwise.
fn word(tokenizer: &Tokenizer) -> TokenId {
    *tokenizer.encode("hello").last().unwrap()
}

/// The token that ends generation in these tests.
fn end_token(tokenizer: &Tokenizer) -> TokenId {
    tokenizer.eos().unwrap()
}

/// A scheduler on a fake pool of `capacity_blocks`, one tenant holding at
/// most `share_percent` of it.
fn scheduler(capacity_blocks: usize, share_percent: u8) -> Scheduler<FakeBackend> {
    let tokenizer = tokenizer();
    let backend = FakeBackend {
        config: LlamaConfig {
            architecture: "fake".into(),
            layers: 1,
            embedding: 8,
            feed_forward: 8,
            heads: 1,
            kv_heads: 1,
            head_dim: 8,
            context_length: CONTEXT,
            rope_base: 10_000.0,
            rope_style: RopeStyle::Interleaved,
            rms_eps: 1e-5,
            vocab: tokenizer.vocab_size(),
        },
        capacity_blocks,
        blocks_in_use: Arc::default(),
        next: AtomicU32::new(word(&tokenizer)),
        fail_next_step: AtomicBool::new(false),
    };
    let end_tokens = vec![end_token(&tokenizer)];
    Scheduler::new(
        Arc::new(backend),
        tokenizer,
        end_tokens,
        share_percent,
        TenantUsage::default(),
    )
}

/// The requester's end of one request.
struct Requester {
    events: UnboundedReceiver<GenerationEvent>,
    cancel: CancelToken,
    meter: Arc<UsageMeter>,
}

impl Requester {
    /// Every event sent so far.
    fn events(&mut self) -> Vec<GenerationEvent> {
        std::iter::from_fn(|| self.events.try_recv().ok()).collect()
    }
}

/// A greedy request of `tenant` with a prompt of `prompt_len` tokens that
/// may generate `max_tokens`.
fn request(tenant: &str, prompt_len: usize, max_tokens: u32) -> (Admission, Requester) {
    let (events, receiver) = unbounded_channel();
    let cancel = CancelToken::new();
    let meter = Arc::new(UsageMeter::default());
    let sampling = Sampling {
        max_tokens,
        ..Sampling::default()
    };
    let admission = Admission {
        tenant: tenant.into(),
        prompt: (0..prompt_len as u32).map(|i| 3 + i % 50).collect(),
        kv_tokens: prompt_len + max_tokens as usize,
        sampler: Sampler::new(sampling, 7),
        guide: None,
        max_tokens,
        stops: Vec::new(),
        events,
        cancel: cancel.clone(),
        meter: Arc::clone(&meter),
    };
    let requester = Requester {
        events: receiver,
        cancel,
        meter,
    };
    (admission, requester)
}

/// Queues `tenant`'s request; returns its requester.
fn send(
    scheduler: &mut Scheduler<FakeBackend>,
    tenant: &str,
    prompt_len: usize,
    max_tokens: u32,
) -> Requester {
    let (admission, requester) = request(tenant, prompt_len, max_tokens);
    scheduler.enqueue(admission);
    requester
}

/// The tenants of the live sequences, in their order.
fn live_tenants(scheduler: &Scheduler<FakeBackend>) -> Vec<&str> {
    scheduler.live.iter().map(|s| s.tenant.as_str()).collect()
}

/// The live sequence of `tenant` (tests give each one its own tenant).
fn live_index(scheduler: &Scheduler<FakeBackend>, tenant: &str) -> usize {
    scheduler
        .live
        .iter()
        .position(|s| s.tenant == tenant)
        .unwrap_or_else(|| panic!("{tenant} is not live"))
}

/// Tokens `plan` feeds sequence `s`.
fn fed(plan: &StepPlan, s: usize) -> usize {
    plan.owners.iter().filter(|&&o| o == s).count()
}

/// Runs rounds until nothing is waiting or live.
fn run_until_idle(scheduler: &mut Scheduler<FakeBackend>) {
    for _ in 0..MAX_ROUNDS {
        if scheduler.is_idle() {
            return;
        }
        scheduler.round();
    }
    panic!("still busy after {MAX_ROUNDS} rounds");
}

/// The final event among `events`, if one came.
fn finished(events: &[GenerationEvent]) -> Option<(FinishReason, Usage)> {
    events.iter().find_map(|e| match e {
        GenerationEvent::Finished { reason, usage } => Some((*reason, *usage)),
        _ => None,
    })
}

#[test]
fn nothing_live_plans_no_step() {
    let mut scheduler = scheduler(100, 100);
    assert_eq!(scheduler.plan(), None);
    let _waiting = send(&mut scheduler, "a", 4, 2);
    assert_eq!(scheduler.plan(), None, "a waiting request is not live yet");
    scheduler.admit();
    assert!(scheduler.plan().is_some());
}

#[test]
fn decoding_sequences_get_their_token_before_any_prompt_chunk() {
    let mut scheduler = scheduler(1000, 100);
    let _long = send(&mut scheduler, "long", 3 * PREFILL_CHUNK, 4);
    let _short = send(&mut scheduler, "short", 2, 4);
    let _longer = send(&mut scheduler, "longer", 4 * PREFILL_CHUNK, 4);
    // The short prompt is filled in one step and decodes from then on; the
    // long ones are still filling theirs.
    scheduler.round();
    let short = live_index(&scheduler, "short");
    let long = live_index(&scheduler, "long");
    let longer = live_index(&scheduler, "longer");
    assert!(
        short > long,
        "the decoding sequence is not first among the live"
    );

    let plan = scheduler.plan().unwrap();
    assert_eq!(plan.decoding, [short]);
    assert_eq!(plan.owners[0], short, "its token comes first");
    assert_eq!(
        plan.tokens[0],
        word(&scheduler.tokenizer),
        "the token it sampled last step"
    );
    assert_eq!(fed(&plan, short), 1);
    assert!(plan.owners[1..].iter().all(|&o| o != short));
    let mut prefilling = plan.prefilling.clone();
    prefilling.sort();
    assert_eq!(prefilling, [long, longer]);
    assert_eq!(
        plan.sampled,
        [short],
        "prompts still being filled are not sampled"
    );
    assert_eq!(
        plan.wanted,
        [Wanted {
            row: 0,
            greedy: true
        }]
    );
}

#[test]
fn prompt_chunks_and_steps_stay_within_their_limits() {
    let mut scheduler = scheduler(1000, 100);
    let _requesters: Vec<Requester> = (0..5)
        .map(|i| send(&mut scheduler, &format!("t{i}"), 3 * PREFILL_CHUNK, 4))
        .collect();
    scheduler.admit();
    let plan = scheduler.plan().unwrap();
    assert_eq!(plan.tokens.len(), MAX_STEP_TOKENS, "the step is full");
    assert_eq!(plan.owners.len(), plan.tokens.len());
    assert_eq!(
        plan.prefilling.len(),
        MAX_STEP_TOKENS / PREFILL_CHUNK,
        "one prompt waits for the next step"
    );
    for &s in &plan.prefilling {
        assert_eq!(fed(&plan, s), PREFILL_CHUNK);
    }
    assert!(plan.sampled.is_empty() && plan.wanted.is_empty());
    // Each sequence's tokens are its next ones, in order.
    for &s in &plan.prefilling {
        let seq = &scheduler.live[s];
        let mine: Vec<TokenId> = (0..plan.tokens.len())
            .filter(|&i| plan.owners[i] == s)
            .map(|i| plan.tokens[i])
            .collect();
        assert_eq!(mine, seq.tokens[seq.fed..seq.fed + PREFILL_CHUNK]);
    }
}

#[test]
fn a_long_prompt_is_fed_in_chunks_and_sampled_after_its_last() {
    let mut scheduler = scheduler(1000, 100);
    let prompt = 2 * PREFILL_CHUNK + 10;
    let requester = send(&mut scheduler, "a", prompt, 4);
    let mut fed_after = Vec::new();
    for _ in 0..3 {
        scheduler.round();
        fed_after.push(scheduler.live[0].fed);
    }
    assert_eq!(fed_after, [PREFILL_CHUNK, 2 * PREFILL_CHUNK, prompt]);
    assert_eq!(scheduler.live[0].tokens.len(), prompt + 1, "sampled once");
    assert_eq!(requester.meter.usage().prompt_tokens, prompt as u32);
}

#[test]
fn a_prompt_that_ends_in_the_step_is_sampled_at_its_last_row() {
    let mut scheduler = scheduler(1000, 100);
    let _long = send(&mut scheduler, "long", 3 * PREFILL_CHUNK, 4);
    let _short = send(&mut scheduler, "short", 10, 4);
    scheduler.admit();
    let plan = scheduler.plan().unwrap();
    let short = live_index(&scheduler, "short");
    assert_eq!(fed(&plan, short), 10);
    assert_eq!(plan.sampled, [short]);
    let last = plan.owners.iter().rposition(|&o| o == short).unwrap();
    assert_eq!(plan.wanted[0].row, last);
}

#[test]
fn prefill_turns_rotate_so_no_prompt_is_always_last() {
    let mut scheduler = scheduler(1000, 100);
    let _requesters: Vec<Requester> = (0..5)
        .map(|i| send(&mut scheduler, &format!("t{i}"), 3 * PREFILL_CHUNK, 4))
        .collect();
    scheduler.admit();
    // Four chunks fit in a step: one prompt is left out of each.
    let mut firsts = Vec::new();
    let mut left_out = Vec::new();
    for _ in 0..5 {
        let plan = scheduler.plan().unwrap();
        firsts.push(plan.prefilling[0]);
        left_out.extend((0..5).filter(|s| !plan.prefilling.contains(s)));
    }
    firsts.sort();
    left_out.sort();
    assert_eq!(
        firsts,
        [0, 1, 2, 3, 4],
        "each prompt is served first in turn"
    );
    assert_eq!(
        left_out,
        [0, 1, 2, 3, 4],
        "each prompt waits once, none always"
    );
}

#[test]
fn a_tenant_at_its_share_waits_while_another_tenants_request_joins() {
    // Eight blocks, four for one tenant; every request may fill two.
    let mut scheduler = scheduler(8, 50);
    let request_tokens = 2 * BLOCK_TOKENS;
    let mut a: Vec<Requester> = (0..4)
        .map(|_| send(&mut scheduler, "a", request_tokens - 4, 4))
        .collect();
    let mut b = send(&mut scheduler, "b", request_tokens - 4, 4);
    scheduler.admit();
    assert_eq!(live_tenants(&scheduler), ["a", "a", "b"]);
    assert_eq!(scheduler.waiting.len(), 2, "a's others wait for its own");

    let mut rounds = 0;
    while !scheduler.is_idle() {
        scheduler.round();
        let a_live = live_tenants(&scheduler)
            .iter()
            .filter(|&&t| t == "a")
            .count();
        assert!(a_live <= 2, "a holds at most its share");
        if rounds == 0 {
            let published = scheduler.usage.lock().unwrap().clone();
            assert_eq!(
                published,
                BTreeMap::from([("a".into(), 4), ("b".into(), 2)])
            );
        }
        rounds += 1;
        assert!(rounds < MAX_ROUNDS);
    }
    for requester in a.iter_mut().chain([&mut b]) {
        let events = requester.events();
        assert_eq!(finished(&events).unwrap().0, FinishReason::Length);
    }
}

#[test]
fn a_request_that_does_not_fit_the_cache_waits_until_a_live_one_finishes() {
    // Four blocks: the first request may fill three, the second two.
    let mut scheduler = scheduler(4, 100);
    let mut first = send(&mut scheduler, "first", 3 * BLOCK_TOKENS - 3, 3);
    let mut second = send(&mut scheduler, "second", 2 * BLOCK_TOKENS - 3, 3);
    let mut first_events = Vec::new();
    for round in 0.. {
        assert!(round < MAX_ROUNDS);
        scheduler.round();
        assert_eq!(scheduler.waiting.len(), 1, "second waits");
        assert!(second.events().is_empty());
        first_events.extend(first.events());
        if finished(&first_events).is_some() {
            break;
        }
        assert_eq!(live_tenants(&scheduler), ["first"]);
    }
    assert_eq!(
        scheduler.backend.cache_blocks_in_use(),
        0,
        "first gave its blocks back"
    );
    scheduler.round();
    assert_eq!(
        live_tenants(&scheduler),
        ["second"],
        "it joins once first is gone"
    );
    run_until_idle(&mut scheduler);
    let (reason, usage) = finished(&second.events()).unwrap();
    assert_eq!(reason, FinishReason::Length);
    assert_eq!(usage.generated_tokens, 3);
}

#[test]
fn a_cancelled_sequence_leaves_with_its_cache_freed() {
    let mut scheduler = scheduler(100, 100);
    let mut cancelled = send(&mut scheduler, "cancelled", 40, 20);
    let mut kept = send(&mut scheduler, "kept", 20, 20);
    scheduler.round();
    assert_eq!(
        scheduler.backend.cache_blocks_in_use(),
        blocks_for(40) + blocks_for(20),
        "both prompts are in the cache"
    );

    cancelled.cancel.cancel();
    scheduler.round();
    assert_eq!(live_tenants(&scheduler), ["kept"]);
    let events = cancelled.events();
    assert_eq!(
        events.last(),
        Some(&GenerationEvent::Finished {
            reason: FinishReason::Cancelled,
            usage: Usage {
                prompt_tokens: 40,
                generated_tokens: 1
            }
        })
    );
    assert_eq!(
        cancelled.meter.usage().generated_tokens,
        1,
        "what was computed is counted"
    );
    assert_eq!(
        scheduler.backend.cache_blocks_in_use(),
        blocks_for(scheduler.live[0].fed),
        "only kept's blocks are held"
    );
    assert!(finished(&kept.events()).is_none());
}

#[test]
fn a_sequence_whose_requester_went_away_leaves() {
    let mut scheduler = scheduler(100, 100);
    let gone = send(&mut scheduler, "gone", 20, 20);
    let _kept = send(&mut scheduler, "kept", 20, 20);
    scheduler.round();
    drop(gone);
    scheduler.round();
    assert_eq!(live_tenants(&scheduler), ["kept"]);
}

#[test]
fn a_request_cancelled_while_waiting_never_joins() {
    // Two blocks: the second request waits behind the first.
    let mut scheduler = scheduler(2, 100);
    let _first = send(&mut scheduler, "first", 20, 10);
    let second = send(&mut scheduler, "second", 20, 10);
    let _third = send(&mut scheduler, "third", 4, 4);
    scheduler.round();
    assert_eq!(scheduler.waiting.len(), 2);
    second.cancel.cancel();
    scheduler.round();
    assert_eq!(scheduler.waiting.len(), 1, "the cancelled one was dropped");
    assert_eq!(scheduler.waiting[0].tenant, "third");
}

#[test]
fn a_failed_step_fails_its_sequences_and_the_engine_goes_on() {
    let mut scheduler = scheduler(100, 100);
    let mut one = send(&mut scheduler, "one", 20, 4);
    let mut two = send(&mut scheduler, "two", 30, 4);
    scheduler.round();
    scheduler
        .backend
        .fail_next_step
        .store(true, Ordering::Relaxed);
    scheduler.round();
    assert!(scheduler.live.is_empty());
    assert_eq!(scheduler.backend.cache_blocks_in_use(), 0);
    for requester in [&mut one, &mut two] {
        match requester.events().last() {
            Some(GenerationEvent::Failed(InferenceError::Internal(message))) => {
                assert!(message.starts_with("fake:0: "), "{message}");
            }
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    let mut after = send(&mut scheduler, "after", 10, 2);
    run_until_idle(&mut scheduler);
    assert_eq!(finished(&after.events()).unwrap().0, FinishReason::Length);
}

#[test]
fn sampled_tokens_stream_their_text_and_finish_at_max_tokens() {
    let mut scheduler = scheduler(100, 100);
    let mut requester = send(&mut scheduler, "a", 5, 3);
    run_until_idle(&mut scheduler);
    let events = requester.events();
    let text: String = events
        .iter()
        .filter_map(|e| match e {
            GenerationEvent::Text(text) => Some(text.as_str()),
            _ => None,
        })
        .collect();
    let word = word(&scheduler.tokenizer);
    assert_eq!(text, scheduler.tokenizer.decode(&[word; 3]));
    assert!(!text.is_empty());
    let usage = Usage {
        prompt_tokens: 5,
        generated_tokens: 3,
    };
    assert_eq!(finished(&events), Some((FinishReason::Length, usage)));
    assert_eq!(requester.meter.usage(), usage);
    assert_eq!(scheduler.backend.cache_blocks_in_use(), 0);
}

#[test]
fn an_end_token_finishes_with_stop_and_is_not_streamed() {
    let mut scheduler = scheduler(100, 100);
    let mut requester = send(&mut scheduler, "a", 5, 10);
    scheduler.round();
    let end = end_token(&scheduler.tokenizer);
    scheduler.backend.next.store(end, Ordering::Relaxed);
    scheduler.round();
    assert!(scheduler.is_idle());
    let events = requester.events();
    let word = scheduler.tokenizer.decode(&[word(&scheduler.tokenizer)]);
    assert_eq!(events[0], GenerationEvent::Text(word));
    assert_eq!(
        events[1..],
        [GenerationEvent::Finished {
            reason: FinishReason::Stop,
            usage: Usage {
                prompt_tokens: 5,
                generated_tokens: 1
            }
        }]
    );
}

#[test]
fn the_thread_serves_until_its_senders_are_gone_and_nothing_is_live() {
    let scheduler = scheduler(100, 100);
    let (commands, receiver) = channel();
    let (admission, mut requester) = request("a", 5, 3);
    commands.send(admission).unwrap();
    drop(commands);
    let (done, returned) = channel();
    std::thread::spawn(move || {
        let Scheduler {
            backend,
            tokenizer,
            end_tokens,
            usage,
            ..
        } = scheduler;
        run(backend, tokenizer, end_tokens, 100, usage, receiver);
        done.send(()).unwrap();
    });
    returned
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the thread returns once its work is done");
    let events = requester.events();
    assert_eq!(finished(&events).unwrap().0, FinishReason::Length);
}
