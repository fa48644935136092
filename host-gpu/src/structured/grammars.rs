//! Compiling constraints for one model, once each: the llguidance parser
//! factory over the model's vocabulary (built on the first constrained
//! request), and the compiled constraints most recently asked for.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use llguidance::api::{ParserLimits, TopLevelGrammar};
use llguidance::earley::SlicedBiasComputer;
use llguidance::toktrie::{InferenceCapabilities, TokEnv};
use llguidance::{Matcher, ParserFactory};

use super::guide::Guide;
use super::vocabulary::Vocabulary;
use crate::tokenizer::{TokenId, Tokenizer};
use crate::{Constraint, InferenceError};

/// Compiled constraints (and refusals) kept per model, least recently used
/// first out. Stops: a stream of distinct schemas growing the host's memory
/// without bound; a schema refused once is refused again without compiling.
pub const COMPILED_CACHE_ENTRIES: usize = 32;

/// Work one constraint may make llguidance do.
/// Stops: schemas and grammars built to be slow to compile or to step
/// (fuel is counted, so a refusal does not depend on the machine's speed),
/// and lexers that grow without bound (each state is 1-2 KiB).
fn limits() -> ParserLimits {
    ParserLimits {
        // About 20 ms of lexer construction.
        initial_lexer_fuel: 1_000_000,
        // About 15 ms of lexing for one step's mask.
        step_lexer_fuel: 200_000,
        step_max_items: 50_000,
        max_items_in_row: 2_000,
        // At most some 20 MiB of lexer per sequence.
        max_lexer_states: 10_000,
        // Symbols in the grammar's productions: a schema of some hundreds
        // of KiB, well above what `MAX_CONSTRAINT_BYTES` lets in.
        max_grammar_size: 200_000,
        precompute_large_lexemes: true,
        verbose_errors: false,
    }
}

/// One model's compiled constraints.
pub struct Grammars {
    model: String,
    tokenizer: Arc<Tokenizer>,
    end_tokens: Vec<TokenId>,
    factory: OnceLock<Result<ParserFactory, InferenceError>>,
    compiled: Mutex<Compiled>,
}

impl std::fmt::Debug for Grammars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grammars")
            .field("model", &self.model)
            .field("cached", &self.cached())
            .finish_non_exhaustive()
    }
}

/// The cache: each constraint's compiled start (or why it was refused),
/// and when it was last asked for.
#[derive(Default)]
struct Compiled {
    entries: HashMap<Constraint, (Result<Matcher, String>, u64)>,
    clock: u64,
}

impl Grammars {
    /// Constraints for model `model`, whose generations end with any of
    /// `end_tokens`.
    pub fn new(model: &str, tokenizer: Arc<Tokenizer>, end_tokens: Vec<TokenId>) -> Self {
        Grammars {
            model: model.to_owned(),
            tokenizer,
            end_tokens,
            factory: OnceLock::new(),
            compiled: Mutex::new(Compiled::default()),
        }
    }

    /// A guide for one sequence held to `constraint`: compiled now, or
    /// taken from the cache. A constraint that does not parse, or takes
    /// more than [`limits`] to compile, is `InvalidInput`, naming why.
    pub fn guide(&self, constraint: &Constraint) -> Result<Guide, InferenceError> {
        let factory = self.factory()?;
        let mut compiled = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
        compiled.clock += 1;
        let now = compiled.clock;
        if let Some((start, used)) = compiled.entries.get_mut(constraint) {
            *used = now;
            return self.start_from(constraint, start);
        }
        // Compiling under the lock: two requests for one new schema compile
        // it once (fuel bounds how long the other waits).
        let start = compile(factory, constraint);
        if compiled.entries.len() >= COMPILED_CACHE_ENTRIES {
            let oldest = compiled
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(c, _)| c.clone());
            if let Some(oldest) = oldest {
                compiled.entries.remove(&oldest);
            }
        }
        let start = &compiled
            .entries
            .entry(constraint.clone())
            .or_insert((start, now))
            .0;
        self.start_from(constraint, start)
    }

    /// How many compiled constraints (and refusals) are cached.
    pub fn cached(&self) -> usize {
        self.compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entries
            .len()
    }

    fn start_from(
        &self,
        constraint: &Constraint,
        start: &Result<Matcher, String>,
    ) -> Result<Guide, InferenceError> {
        match start {
            Ok(matcher) => Ok(Guide::new(
                matcher.deep_clone(),
                constraint.kind(),
                self.end_tokens.clone(),
            )),
            Err(why) => Err(InferenceError::InvalidInput(format!(
                "the {} cannot be used: {why}",
                constraint.kind()
            ))),
        }
    }

    /// The parser factory, built on first use (the token trie and its
    /// slices take a moment for a large vocabulary).
    fn factory(&self) -> Result<&ParserFactory, InferenceError> {
        let factory = self.factory.get_or_init(|| {
            if self.end_tokens.is_empty() {
                // Nothing could end a complete answer.
                return Err(InferenceError::Unsupported {
                    model: self.model.clone(),
                    operation: "constrained generation (it has no end-of-sequence token)",
                });
            }
            let vocabulary = Vocabulary::new(Arc::clone(&self.tokenizer), &self.end_tokens);
            let env: TokEnv = Arc::new(vocabulary);
            let capabilities = InferenceCapabilities {
                ff_tokens: true,
                conditional_ff_tokens: false,
                backtrack: false,
                fork: false,
            };
            let mut factory =
                ParserFactory::new(&env, capabilities, &SlicedBiasComputer::general_slices())
                    .map_err(|e| {
                        InferenceError::Internal(format!(
                            "the token trie of model `{}`: {e}",
                            self.model
                        ))
                    })?;
            factory.quiet();
            *factory.limits_mut() = limits();
            Ok(factory)
        });
        factory.as_ref().map_err(Clone::clone)
    }
}

/// `constraint` compiled to a matcher at its start, or why it cannot be.
fn compile(factory: &ParserFactory, constraint: &Constraint) -> Result<Matcher, String> {
    let grammar = match constraint {
        Constraint::JsonSchema(schema) => {
            let schema: serde_json::Value =
                serde_json::from_str(schema).map_err(|e| format!("the schema is not JSON: {e}"))?;
            TopLevelGrammar::from_json_schema(schema)
        }
        Constraint::Regex(regex) => TopLevelGrammar::from_regex(regex),
        Constraint::Grammar(lark) => TopLevelGrammar::from_lark(lark.clone()),
    };
    let parser = factory
        .create_parser(grammar)
        .map_err(|e| first_line(&e.to_string()))?;
    let matcher = Matcher::new(Ok(parser)).into_cancellable();
    match matcher.get_error() {
        Some(why) => Err(first_line(&why)),
        None => Ok(matcher),
    }
}

/// An llguidance error's first line (later lines may hold the grammar).
fn first_line(error: &str) -> String {
    error.lines().next().unwrap_or(error).trim().to_owned()
}
