//! The device KV pool's bookkeeping, kept on the host: which blocks are
//! free ([`BlockBook`]), which belong to a sequence ([`CudaCache`]), and a
//! step's inputs as the kernels read them ([`StepPlan`]).
//!
//! The pool itself is one device allocation of `capacity + 1` blocks laid
//! out like the CPU pool. The extra block is scratch: rows that pad a
//! decode step up to a captured graph's batch write their keys and values
//! there and attend only to it, so they never touch a sequence's cache.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::engine::SequenceCache;
use crate::model::{BLOCK_TOKENS, KvCacheFull, blocks_for};

/// Which cache blocks are free.
#[derive(Debug)]
pub(super) struct BlockBook {
    free: Vec<u32>,
    capacity: usize,
}

impl BlockBook {
    /// Blocks `0..capacity` free; block `capacity` is the scratch block.
    pub fn new(capacity: usize) -> Arc<Mutex<BlockBook>> {
        Arc::new(Mutex::new(BlockBook {
            free: (0..capacity as u32).rev().collect(),
            capacity,
        }))
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn in_use(&self) -> usize {
        self.capacity - self.free.len()
    }

    /// The block no sequence ever holds.
    pub fn scratch(&self) -> u32 {
        self.capacity as u32
    }
}

pub(super) fn lock(book: &Mutex<BlockBook>) -> MutexGuard<'_, BlockBook> {
    book.lock().unwrap_or_else(|p| p.into_inner())
}

/// One sequence's blocks in the device pool.
#[derive(Debug)]
pub struct CudaCache {
    book: Arc<Mutex<BlockBook>>,
    blocks: Vec<u32>,
    len: usize,
}

impl CudaCache {
    pub(super) fn new(book: &Arc<Mutex<BlockBook>>) -> Self {
        CudaCache {
            book: Arc::clone(book),
            blocks: Vec::new(),
            len: 0,
        }
    }

    fn reserve(&mut self, positions: usize) -> Result<(), KvCacheFull> {
        let needed = blocks_for(positions).saturating_sub(self.blocks.len());
        if needed == 0 {
            return Ok(());
        }
        let mut book = lock(&self.book);
        if book.free.len() < needed {
            return Err(KvCacheFull {
                capacity: book.capacity,
            });
        }
        let at = book.free.len() - needed;
        self.blocks.extend(book.free.drain(at..));
        Ok(())
    }
}

impl SequenceCache for CudaCache {
    fn filled(&self) -> usize {
        self.len
    }
}

impl Drop for CudaCache {
    fn drop(&mut self) {
        lock(&self.book).free.append(&mut self.blocks);
    }
}

/// A step's inputs as the kernels take them, one entry per token unless
/// said otherwise.
#[derive(Debug, Default)]
pub(super) struct StepPlan {
    pub tokens: Vec<i32>,
    /// Position in its sequence.
    pub positions: Vec<i32>,
    /// Where its sequence's block table starts in `tables`.
    pub starts: Vec<i32>,
    /// Pool slot (block * BLOCK_TOKENS + offset) its key and value go to.
    pub slots: Vec<i32>,
    /// The block tables of every sequence of the step, one after another.
    pub tables: Vec<i32>,
    /// Each cache's length once the step has run.
    pub ends: Vec<usize>,
}

impl StepPlan {
    /// Places `tokens` (each at the next position of `caches[owners[i]]`),
    /// taking the blocks they need from the pool.
    pub fn new(
        tokens: &[u32],
        owners: &[usize],
        caches: &mut [&mut CudaCache],
    ) -> Result<StepPlan, KvCacheFull> {
        assert_eq!(owners.len(), tokens.len());
        let mut ends: Vec<usize> = caches.iter().map(|cache| cache.len).collect();
        let positions: Vec<i32> = owners
            .iter()
            .map(|&s| {
                ends[s] += 1;
                (ends[s] - 1) as i32
            })
            .collect();
        for (cache, &end) in caches.iter_mut().zip(&ends) {
            cache.reserve(end)?;
        }
        let mut tables = Vec::new();
        let mut table_of = Vec::with_capacity(caches.len());
        for cache in caches.iter() {
            table_of.push(tables.len() as i32);
            tables.extend(cache.blocks.iter().map(|&b| b as i32));
        }
        let slots = owners
            .iter()
            .zip(&positions)
            .map(|(&s, &p)| {
                let p = p as usize;
                (caches[s].blocks[p / BLOCK_TOKENS] as usize * BLOCK_TOKENS + p % BLOCK_TOKENS)
                    as i32
            })
            .collect();
        Ok(StepPlan {
            tokens: tokens.iter().map(|&t| t as i32).collect(),
            positions,
            starts: owners.iter().map(|&s| table_of[s]).collect(),
            slots,
            tables,
            ends,
        })
    }

    /// Whether every token is the only one of a distinct sequence (a
    /// decode step).
    pub fn is_decode(&self, owners: &[usize]) -> bool {
        let mut seen = vec![false; self.ends.len()];
        owners
            .iter()
            .all(|&s| !std::mem::replace(&mut seen[s], true))
    }

    /// Pads the step to `rows` tokens that write to and read only the
    /// scratch block, whose table entry is at `scratch_table`.
    pub fn pad(&mut self, rows: usize, scratch_block: u32, scratch_table: i32) {
        let n = self.tokens.len();
        debug_assert!(rows >= n);
        self.tokens.resize(rows, 0);
        self.positions.resize(rows, 0);
        self.starts.resize(rows, scratch_table);
        self.slots
            .resize(rows, (scratch_block as usize * BLOCK_TOKENS) as i32);
    }

    /// Every cache takes its new length (after the step ran).
    pub fn commit(&self, caches: &mut [&mut CudaCache]) {
        for (cache, &end) in caches.iter_mut().zip(&self.ends) {
            cache.len = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_places_tokens_in_their_sequences_blocks() {
        let book = BlockBook::new(8);
        let (mut a, mut b) = (CudaCache::new(&book), CudaCache::new(&book));
        // a already holds 15 positions: its 16th fills block 0, its 17th starts block 1.
        a.reserve(15).unwrap();
        a.len = 15;
        let owners = [0, 0, 1];
        let plan = StepPlan::new(&[7, 8, 9], &owners, &mut [&mut a, &mut b]).unwrap();
        assert_eq!(plan.positions, [15, 16, 0]);
        assert_eq!(plan.ends, [17, 1]);
        assert_eq!(a.blocks.len(), 2);
        assert_eq!(b.blocks.len(), 1);
        let block = |cache: &CudaCache, i: usize| cache.blocks[i] as i32;
        assert_eq!(
            plan.slots,
            [block(&a, 0) * 16 + 15, block(&a, 1) * 16, block(&b, 0) * 16]
        );
        assert_eq!(plan.starts, [0, 0, 2]);
        assert_eq!(plan.tables, [block(&a, 0), block(&a, 1), block(&b, 0)]);
        assert!(!plan.is_decode(&owners));
        assert_eq!(lock(&book).in_use(), 3);
        drop(a);
        assert_eq!(lock(&book).in_use(), 1);
    }

    #[test]
    fn padding_rows_touch_only_the_scratch_block() {
        let book = BlockBook::new(4);
        let mut a = CudaCache::new(&book);
        let owners = [0];
        let mut plan = StepPlan::new(&[5], &owners, &mut [&mut a]).unwrap();
        assert!(plan.is_decode(&owners));
        let scratch = lock(&book).scratch();
        assert_eq!(scratch, 4);
        plan.pad(4, scratch, 9);
        assert_eq!(plan.tokens, [5, 0, 0, 0]);
        assert_eq!(plan.positions[1..], [0, 0, 0]);
        assert_eq!(plan.starts[1..], [9, 9, 9]);
        assert_eq!(plan.slots[1..], [64, 64, 64]);
        plan.commit(&mut [&mut a]);
        assert_eq!(a.filled(), 1);
    }

    #[test]
    fn a_full_pool_refuses_and_the_sequence_keeps_its_blocks() {
        let book = BlockBook::new(2);
        let mut a = CudaCache::new(&book);
        let tokens = vec![1u32; 3 * BLOCK_TOKENS];
        let owners = vec![0; tokens.len()];
        assert_eq!(
            StepPlan::new(&tokens, &owners, &mut [&mut a]).unwrap_err(),
            KvCacheFull { capacity: 2 }
        );
        assert_eq!(lock(&book).in_use(), 0);
    }
}
