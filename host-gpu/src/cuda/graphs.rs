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
use std::sync::Arc;

use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{CudaGraph, CudaStream};

/// The batch sizes a decode graph is captured for.
pub const DECODE_BATCHES: [usize; 7] = [1, 2, 4, 8, 16, 32, 64];

/// Environment variable that turns decode graphs off when set to `0`.
pub const GRAPHS_VARIABLE: &str = "SOVRA_CUDA_GRAPHS";

/// A captured decode step.
struct DecodeGraph(CudaGraph);

// SAFETY: a CUDA graph may be launched from any thread as long as calls on
// it are serialized; it lives inside the backend's step lock, which does.
unsafe impl Send for DecodeGraph {}

/// The captured graphs of one backend, by batch size.
pub(super) struct DecodeGraphs {
    enabled: bool,
    /// Batch sizes already run once.
    seen: Vec<usize>,
    graphs: HashMap<usize, DecodeGraph>,
}

/// What to do with a decode step of a given batch size.
pub(super) enum Decode<'a> {
    /// Replay this graph.
    Replay(&'a CudaGraph),
    /// Capture the step, then replay it.
    Capture,
    /// Run eagerly.
    Eager,
}

impl DecodeGraphs {
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

impl DecodeGraphs {
    /// What to do for a step of padded batch `batch`.
    pub fn plan(&mut self, batch: usize) -> Decode<'_> {
        if let Some(graph) = self.graphs.get(&batch) {
            return Decode::Replay(&graph.0);
        }
        if self.seen.contains(&batch) {
            Decode::Capture
        } else {
            self.seen.push(batch);
            Decode::Eager
        }
    }

    pub fn insert(&mut self, batch: usize, graph: CudaGraph) {
        self.graphs.insert(batch, DecodeGraph(graph));
    }

    pub fn replay(&self, batch: usize) -> Option<&CudaGraph> {
        self.graphs.get(&batch).map(|g| &g.0)
    }
}

/// Captures what `record` launches on `stream` (launching nothing) into a
/// graph. On failure the stream is out of capture mode again and nothing
/// was run.
pub(super) fn capture<E: std::fmt::Debug>(
    stream: &Arc<CudaStream>,
    record: impl FnOnce() -> Result<(), E>,
) -> Result<CudaGraph, String> {
    // An error an earlier drop left on the context would surface inside
    // the capture and be taken for a capture failure: report it apart.
    if let Err(e) = stream.context().check_err() {
        tracing::warn!(error = ?e, "a deferred CUDA error from an earlier release");
    }
    // Thread-local: a call on this thread that cannot be captured (an
    // allocation, a synchronization) fails instead of running.
    stream
        .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
        .map_err(|e| format!("begin capture: {e:?}"))?;
    let recorded = record();
    let ended = stream.end_capture(CUgraphInstantiate_flags(0));
    if let Err(e) = recorded {
        return Err(format!("while capturing: {e:?}"));
    }
    match ended {
        Ok(Some(graph)) => {
            // Set up its resources now rather than in the first replay.
            graph.upload().map_err(|e| format!("upload: {e:?}"))?;
            Ok(graph)
        }
        Ok(None) => Err("the capture recorded nothing".into()),
        Err(e) => Err(format!("end capture: {e:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_up_and_stop_at_sixty_four() {
        let graphs = DecodeGraphs {
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
        let mut graphs = DecodeGraphs {
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
