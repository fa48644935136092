//! CUDA graphs for decode steps.
//!
//! A decode step of a small model is mostly launch overhead: a 1B-class
//! model launches about 150 kernels and products per step, each costing the
//! host a few microseconds, while the GPU reads the weights in half a
//! millisecond. A graph launches the whole step at once. Its kernels read
//! their inputs (tokens, positions, block tables) from the step's device
//! buffers, which are filled before each replay, so one graph serves every
//! decode step of its batch size; batches are padded up to the next of
//! [`DECODE_BATCHES`] with rows that touch only the scratch cache block.
//!
//! A batch size is captured the second time it is seen (the first runs
//! eagerly and lets cuBLAS settle its choices). If capture fails, graphs
//! are turned off for the backend and every step runs eagerly, which gives
//! the same results. `SOVRA_CUDA_GRAPHS=0` turns them off from the start.

use std::collections::HashMap;

/// The batch sizes a decode graph is captured for.
pub const DECODE_BATCHES: [usize; 7] = [1, 2, 4, 8, 16, 32, 64];

/// Environment variable that turns decode graphs off when set to `0`.
pub const GRAPHS_VARIABLE: &str = "SOVRA_CUDA_GRAPHS";

/// The captured graphs of one backend, by batch size.
pub(super) struct DecodeGraphs<Graph> {
    enabled: bool,
    /// Batch sizes already run once.
    seen: Vec<usize>,
    graphs: HashMap<usize, Graph>,
}

/// What to do with a decode step of a given batch size.
pub(super) enum Decode<'a, Graph> {
    /// Replay this graph.
    Replay(&'a Graph),
    /// Capture the step, then replay it.
    Capture,
    /// Run eagerly.
    Eager,
}

impl<Graph> DecodeGraphs<Graph> {
    /// On unless [`GRAPHS_VARIABLE`] is `0`.
    pub fn from_environment() -> Self {
        let enabled = std::env::var(GRAPHS_VARIABLE).map_or(true, |v| v != "0");
        DecodeGraphs {
            enabled,
            seen: Vec::new(),
            graphs: HashMap::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Turns graphs on or off (off drops the captured ones).
    pub fn set_enabled(&mut self, enabled: bool) {
        self.enabled = enabled;
        if !enabled {
            self.graphs.clear();
            self.seen.clear();
        }
    }

    /// The padded batch a decode step of `n` rows runs as, if a graph may
    /// serve it.
    pub fn batch_for(&self, n: usize) -> Option<usize> {
        if !self.enabled {
            return None;
        }
        DECODE_BATCHES.iter().copied().find(|&b| b >= n)
    }
}

/// The largest decode graph must fit the rows the workspace computes
/// logits for at once, and its tokens.
const _: () = {
    let largest = DECODE_BATCHES[DECODE_BATCHES.len() - 1];
    assert!(largest <= crate::engine::MAX_LIVE_SEQUENCES);
    assert!(largest <= crate::engine::MAX_STEP_TOKENS);
};

impl<Graph> DecodeGraphs<Graph> {
    /// What to do for a step of padded batch `batch`.
    pub fn plan(&mut self, batch: usize) -> Decode<'_, Graph> {
        if let Some(graph) = self.graphs.get(&batch) {
            return Decode::Replay(graph);
        }
        if self.seen.contains(&batch) {
            Decode::Capture
        } else {
            self.seen.push(batch);
            Decode::Eager
        }
    }

    pub fn insert(&mut self, batch: usize, graph: Graph) {
        self.graphs.insert(batch, graph);
    }

    pub fn replay(&self, batch: usize) -> Option<&Graph> {
        self.graphs.get(&batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_up_and_stop_at_sixty_four() {
        let graphs = DecodeGraphs::<()> {
            enabled: true,
            seen: Vec::new(),
            graphs: HashMap::new(),
        };
        assert_eq!(graphs.batch_for(1), Some(1));
        assert_eq!(graphs.batch_for(3), Some(4));
        assert_eq!(graphs.batch_for(33), Some(64));
        assert_eq!(graphs.batch_for(65), None);
    }

    #[test]
    fn a_batch_runs_eagerly_first_then_is_captured() {
        let mut graphs = DecodeGraphs::<()> {
            enabled: true,
            seen: Vec::new(),
            graphs: HashMap::new(),
        };
        assert!(matches!(graphs.plan(8), Decode::Eager));
        assert!(matches!(graphs.plan(8), Decode::Capture));
        assert!(matches!(graphs.plan(4), Decode::Eager));
        graphs.set_enabled(false);
        assert_eq!(graphs.batch_for(8), None);
    }
}
