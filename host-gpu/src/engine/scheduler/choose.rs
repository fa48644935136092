//! Each sampled sequence's next token from the step's outputs: the device's
//! arg-max, or the sequence's own sampler's draw from the logits (within
//! what its constraint allows, when it has one).

use rayon::prelude::*;

use super::super::backend::RowOutput;
use super::sequence::Sequence;
use crate::tokenizer::TokenId;

/// Each sampled sequence's next token, in the order of `sampled`
/// (`outputs[i]` is `sampled[i]`'s row). Rows that came back as logits are
/// drawn in parallel when there are several: each sampler's draw is its
/// own, and at a GPU's batch sizes drawing them one after another would
/// take longer than the step.
pub(super) fn choose<C: Send>(
    live: &mut [Sequence<C>],
    outputs: Vec<RowOutput>,
    sampled: &[usize],
) -> Vec<TokenId> {
    let draws = outputs
        .iter()
        .filter(|o| matches!(o, RowOutput::Logits(_)))
        .count();
    if draws <= 1 {
        return outputs
            .into_iter()
            .zip(sampled)
            .map(|(output, &s)| next_token(&mut live[s], output))
            .collect();
    }
    let mut rows: Vec<Option<RowOutput>> = (0..live.len()).map(|_| None).collect();
    for (output, &s) in outputs.into_iter().zip(sampled) {
        rows[s] = Some(output);
    }
    let drawn: Vec<Option<TokenId>> = live
        .par_iter_mut()
        .zip(rows)
        .map(|(seq, row)| row.map(|row| next_token(seq, row)))
        .collect();
    sampled
        .iter()
        .map(|&s| drawn[s].expect("every sampled sequence has a row"))
        .collect()
}

/// `seq`'s next token from its row: the device's arg-max, or its sampler's
/// draw from the logits its constraint allows.
fn next_token<C>(seq: &mut Sequence<C>, row: RowOutput) -> TokenId {
    match row {
        RowOutput::ArgMax(token) => token,
        RowOutput::Logits(mut logits) => {
            if let Some(guide) = &mut seq.guide {
                guide.restrict(&mut logits);
            }
            seq.sampler.sample(&mut logits, &seq.tokens)
        }
    }
}
