//! Structured output: generation held to a JSON Schema, a regular
//! expression or a grammar ([`Constraint`](crate::Constraint)), with
//! llguidance computing the tokens allowed at each step over a token trie of
//! the model's own vocabulary.
//!
//! A text engine's [`Grammars`] compiles each constraint once per model
//! (cached, refusals too) and gives every constrained sequence its own
//! [`Guide`]. The scheduler has the guide compute the step's token mask
//! beside the forward pass, samples within it, and feeds it the token
//! chosen; the guide answers with the tokens the grammar forces next
//! (fast-forward), which join the sequence without being sampled one by one.
//! [`tool_calls`] builds the constraint for a chat that offers the model
//! tools, and reads its answer back.

mod grammars;
mod guide;
pub mod tool_calls;
mod vocabulary;
mod watchdog;

pub use grammars::{COMPILED_CACHE_ENTRIES, Grammars};
pub use guide::{Guide, MAX_GUIDE_STEP};
