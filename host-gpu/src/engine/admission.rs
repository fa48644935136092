//! Who joins the batch next: the scheduler's admission policy, kept apart
//! from the stepping so it can be read (and tested) on its own.
//!
//! Every engine serves all the tenants allowed to use its model from one KV
//! pool and one set of sequence slots. Two rules decide admission:
//!
//! - **A tenant's share.** One tenant's live sequences may together reserve
//!   at most [`TenantShare::blocks`] of the pool and hold at most
//!   [`TenantShare::sequences`] slots. A request of a tenant at its share
//!   waits for that tenant's own sequences to finish; it never holds up
//!   another tenant's request queued behind it. A tenant's own requests
//!   keep their order: none overtakes its older one that waits.
//! - **Arrival order otherwise.** Among the requests whose tenants are under
//!   their share, the oldest goes first, and when it does not fit the free
//!   pool nobody overtakes it (so a large request is not starved by a stream
//!   of small ones; each live sequence is bounded, so room comes).

use std::collections::HashMap;

use crate::model::blocks_for;

/// Share of an engine's pool and slots one tenant may hold, in percent, by default.
/// Stops: one tenant's flood of long generations taking the whole KV cache
/// and every batch slot, so that other tenants' requests only wait.
pub const DEFAULT_TENANT_SHARE_PERCENT: u8 = 50;

/// What one tenant may hold at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantShare {
    /// Cache blocks its live sequences may reserve together.
    pub blocks: usize,
    /// Live sequences.
    pub sequences: usize,
}

impl TenantShare {
    /// `percent` (1..=100) of `capacity_blocks` and of `max_sequences`,
    /// rounded up, and at least one of each.
    pub fn of(percent: u8, capacity_blocks: usize, max_sequences: usize) -> Self {
        let part = |total: usize| {
            (total.saturating_mul(usize::from(percent.min(100))))
                .div_ceil(100)
                .max(1)
        };
        TenantShare {
            blocks: part(capacity_blocks),
            sequences: part(max_sequences),
        }
    }
}

/// What the live sequences hold, in total and per tenant.
#[derive(Debug, Default)]
pub(super) struct Holdings {
    blocks: usize,
    sequences: usize,
    by_tenant: HashMap<String, (usize, usize)>,
}

impl Holdings {
    /// Counts one live sequence of `tenant` that may fill `kv_tokens` positions.
    pub fn add(&mut self, tenant: &str, kv_tokens: usize) {
        let blocks = blocks_for(kv_tokens);
        self.blocks += blocks;
        self.sequences += 1;
        let held = self.by_tenant.entry(tenant.to_owned()).or_default();
        held.0 += blocks;
        held.1 += 1;
    }

    fn of(&self, tenant: &str) -> (usize, usize) {
        self.by_tenant.get(tenant).copied().unwrap_or_default()
    }
}

/// The engine's limits, as admission sees them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Budget {
    pub capacity_blocks: usize,
    pub max_sequences: usize,
    pub share: TenantShare,
}

/// The index in `waiting` (tenant, cache positions; oldest first) of the
/// next request to admit beside `held`, if any may join now.
pub(super) fn next<'a>(
    waiting: impl IntoIterator<Item = (&'a str, usize)>,
    held: &Holdings,
    budget: &Budget,
) -> Option<usize> {
    if held.sequences >= budget.max_sequences {
        return None;
    }
    // Tenants whose oldest waiting request is over their share.
    let mut waiting_on_share: Vec<&str> = Vec::new();
    for (index, (tenant, kv_tokens)) in waiting.into_iter().enumerate() {
        if waiting_on_share.contains(&tenant) {
            continue;
        }
        let needed = blocks_for(kv_tokens);
        let (tenant_blocks, tenant_sequences) = held.of(tenant);
        let within_share = tenant_sequences < budget.share.sequences
            && (tenant_sequences == 0 || tenant_blocks + needed <= budget.share.blocks);
        if !within_share {
            waiting_on_share.push(tenant);
            continue;
        }
        // An empty engine takes any request it accepted, so that one larger
        // than the pool's free part cannot wait forever.
        let fits = held.sequences == 0 || held.blocks + needed <= budget.capacity_blocks;
        return fits.then_some(index);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::BLOCK_TOKENS;

    const BLOCK: usize = BLOCK_TOKENS;

    fn budget(capacity_blocks: usize, share_percent: u8) -> Budget {
        Budget {
            capacity_blocks,
            max_sequences: 8,
            share: TenantShare::of(share_percent, capacity_blocks, 8),
        }
    }

    /// Admits from `queue` until nothing more may join; returns the tenants admitted, in order.
    fn admit_all(
        queue: &mut Vec<(&'static str, usize)>,
        held: &mut Holdings,
        budget: &Budget,
    ) -> Vec<&'static str> {
        let mut admitted = Vec::new();
        while let Some(i) = next(queue.iter().map(|&(t, k)| (t, k)), held, budget) {
            let (tenant, kv) = queue.remove(i);
            held.add(tenant, kv);
            admitted.push(tenant);
        }
        admitted
    }

    #[test]
    fn shares_round_up_and_never_reach_zero() {
        assert_eq!(
            TenantShare::of(50, 10, 64),
            TenantShare {
                blocks: 5,
                sequences: 32
            }
        );
        assert_eq!(
            TenantShare::of(1, 10, 64),
            TenantShare {
                blocks: 1,
                sequences: 1
            }
        );
        assert_eq!(TenantShare::of(100, 7, 3).blocks, 7);
        assert_eq!(TenantShare::of(200, 7, 3).blocks, 7, "capped at the whole");
    }

    #[test]
    fn a_flooding_tenant_stops_at_its_share_and_others_go_past_it() {
        // Ten blocks, half for one tenant; every request takes two blocks.
        let budget = budget(10, 50);
        let mut queue = vec![("a", 2 * BLOCK); 6];
        queue.push(("b", 2 * BLOCK));
        let mut held = Holdings::default();
        let admitted = admit_all(&mut queue, &mut held, &budget);
        assert_eq!(
            admitted,
            ["a", "a", "b"],
            "a holds 4 of its 5 blocks; b is not held up"
        );
        assert_eq!(queue.len(), 4, "a's other requests wait for a's own");
    }

    #[test]
    fn without_shares_the_flood_would_take_the_pool() {
        let budget = budget(10, 100);
        let mut queue = vec![("a", 2 * BLOCK); 6];
        queue.push(("b", 2 * BLOCK));
        let admitted = admit_all(&mut queue, &mut Holdings::default(), &budget);
        assert_eq!(admitted, ["a"; 5], "b waits behind a");
    }

    #[test]
    fn a_request_that_does_not_fit_is_not_overtaken() {
        let budget = budget(10, 100);
        let mut held = Holdings::default();
        held.add("a", 8 * BLOCK);
        let mut queue = vec![("b", 4 * BLOCK), ("c", BLOCK)];
        assert_eq!(
            admit_all(&mut queue, &mut held, &budget),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn a_tenants_small_requests_do_not_overtake_its_large_one() {
        // a holds 3 of its 5 blocks: its 3-block request waits, and so does
        // the 1-block one behind it (else a stream of small ones could
        // starve the large one); b goes on.
        let budget = budget(10, 50);
        let mut held = Holdings::default();
        held.add("a", 3 * BLOCK);
        let mut queue = vec![("a", 3 * BLOCK), ("a", BLOCK), ("b", BLOCK)];
        assert_eq!(admit_all(&mut queue, &mut held, &budget), ["b"]);
    }

    #[test]
    fn slots_are_shared_too() {
        let budget = Budget {
            capacity_blocks: 100,
            max_sequences: 4,
            share: TenantShare::of(50, 100, 4),
        };
        let mut queue = vec![("a", BLOCK); 4];
        queue.extend([("b", BLOCK); 3]);
        let admitted = admit_all(&mut queue, &mut Holdings::default(), &budget);
        assert_eq!(
            admitted,
            ["a", "a", "b", "b"],
            "two slots each, four in all"
        );
    }

    #[test]
    fn a_lone_request_larger_than_the_share_runs_when_its_tenant_holds_nothing() {
        // The engine refuses requests above the share up front; the policy
        // still never leaves a request that could never join.
        let budget = budget(10, 20);
        let mut queue = vec![("a", 5 * BLOCK), ("a", BLOCK)];
        let admitted = admit_all(&mut queue, &mut Holdings::default(), &budget);
        assert_eq!(admitted, ["a"]);
    }
}
