//! Fair share of wasm execution between tenants.
//!
//! Guest code runs only while its invocation holds an execution slot, and
//! there are as many slots as cores. A guest gives its slot up at an epoch
//! tick once it has run for `QUANTUM` (10 ms) while anyone waits for one,
//! and while it waits in a host call (storage, inference), and queues for it
//! again. Slots go to waiting tenants in turn, the tenant running the fewest
//! invocations first; a tenant with nothing running that has to wait takes
//! the next turn and makes the running guests yield at once (the engine's
//! epoch is advanced), instead of after their quantum. So a tenant running
//! eight guests that spin until their deadline gets its turn like any
//! other, and another tenant's call waits for a slot a moment, not for eight
//! time slices.
//!
//! Where a guest runs: first on its caller's thread, for [`INLINE_BUDGET`]
//! (most calls end within it, with no hand-over between threads); a guest
//! still running then moves to the runtime's own guest executor, whose
//! threads the OS schedules below the node's, so long-running guests never
//! hold the threads that accept and answer connections.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use wasmtime::Engine;

use crate::names::TenantId;

/// The node's execution slots and who waits for them.
pub(crate) struct ExecutionSlots {
    engine: Engine,
    state: Mutex<State>,
}

impl std::fmt::Debug for ExecutionSlots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state();
        f.debug_struct("ExecutionSlots")
            .field("free", &state.free)
            .field("waiting_tenants", &state.turns.len())
            .finish()
    }
}

#[derive(Default)]
struct State {
    free: usize,
    /// Tenants with waiting invocations, in turn order.
    turns: VecDeque<TenantId>,
    /// Each waiting tenant's invocations, first come first served.
    waiting: HashMap<TenantId, VecDeque<oneshot::Sender<Slot>>>,
    /// Slots each tenant holds now.
    running: HashMap<TenantId, usize>,
}

/// The right to run guest code; given back when dropped.
struct Slot {
    /// `None` once disarmed: a hand-over that did not happen.
    slots: Option<Arc<ExecutionSlots>>,
    tenant: TenantId,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("tenant", &self.tenant)
            .finish()
    }
}

impl ExecutionSlots {
    pub(crate) fn new(engine: Engine, slots: usize) -> Arc<Self> {
        Arc::new(ExecutionSlots {
            engine,
            state: Mutex::new(State {
                free: slots.max(1),
                ..State::default()
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Who waits for a slot: anyone (a guest past its quantum should give
    /// its slot up), and a tenant with nothing running (every running guest
    /// should give its slot up now).
    fn waiting(&self) -> Waiting {
        let state = self.state();
        Waiting {
            anyone: !state.turns.is_empty(),
            starving: state
                .turns
                .iter()
                .any(|tenant| !state.running.contains_key(tenant)),
        }
    }

    /// A slot for one of `tenant`'s invocations, when its turn comes.
    #[cfg(test)]
    async fn acquire(self: &Arc<Self>, tenant: &TenantId) -> Slot {
        self.reserve(tenant).await_turn().await
    }

    /// Takes a free slot or a place in the queue, at once.
    fn reserve(self: &Arc<Self>, tenant: &TenantId) -> Reservation {
        let receiver = {
            let mut state = self.state();
            if state.free > 0 && state.turns.is_empty() {
                state.free -= 1;
                *state.running.entry(tenant.clone()).or_default() += 1;
                return Reservation(Reserved::Ready(Slot {
                    slots: Some(Arc::clone(self)),
                    tenant: tenant.clone(),
                }));
            }
            let (sender, receiver) = oneshot::channel();
            let starved = state.running.get(tenant).copied().unwrap_or(0) == 0;
            let queue = state.waiting.entry(tenant.clone()).or_default();
            queue.push_back(sender);
            if queue.len() == 1 {
                // A tenant with nothing running is owed the next turn, and
                // should not wait for the others' time slices to end: every
                // running guest is made to check now.
                if starved {
                    state.turns.push_front(tenant.clone());
                    self.engine.increment_epoch();
                } else {
                    state.turns.push_back(tenant.clone());
                }
            }
            receiver
        };
        Reservation(Reserved::Queued(receiver))
    }

    /// Gives a slot back: to the next waiting invocation, else to the pool.
    fn release(self: &Arc<Self>, tenant: &TenantId) {
        let mut state = self.state();
        if let Some(running) = state.running.get_mut(tenant) {
            *running -= 1;
            if *running == 0 {
                state.running.remove(tenant);
            }
        }
        while let Some(next) = next_turn(&mut state) {
            let Some(sender) = state.waiting.get_mut(&next).and_then(VecDeque::pop_front) else {
                continue;
            };
            if state.waiting.get(&next).is_some_and(|q| !q.is_empty()) {
                state.turns.push_back(next.clone());
            } else {
                state.waiting.remove(&next);
            }
            *state.running.entry(next.clone()).or_default() += 1;
            let slot = Slot {
                slots: Some(Arc::clone(self)),
                tenant: next.clone(),
            };
            // Taken with the lock held, so that a refused hand-over (the
            // waiter went away) releases nothing twice: it is undone here.
            match sender.send(slot) {
                Ok(()) => return,
                Err(mut refused) => {
                    refused.slots = None;
                    let running = state.running.get_mut(&next).expect("counted above");
                    *running -= 1;
                    if *running == 0 {
                        state.running.remove(&next);
                    }
                }
            }
        }
        state.free += 1;
    }
}

/// Who waits for an execution slot.
struct Waiting {
    anyone: bool,
    starving: bool,
}

/// A slot, or a place in the queue for one.
pub(crate) struct Reservation(Reserved);

enum Reserved {
    Ready(Slot),
    Queued(oneshot::Receiver<Slot>),
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Reserved::Ready(_) => "Reservation::Ready",
            Reserved::Queued(_) => "Reservation::Queued",
        })
    }
}

impl Reservation {
    /// The slot, once the turn has come.
    async fn await_turn(self) -> Slot {
        match self.0 {
            Reserved::Ready(slot) => slot,
            Reserved::Queued(receiver) => match receiver.await {
                Ok(slot) => slot,
                // The sender is only dropped with the whole scheduler, which
                // this invocation's runtime keeps alive.
                Err(_) => unreachable!("execution slots dropped while an invocation waits"),
            },
        }
    }
}

/// Takes the waiting tenant whose turn it is: the first in turn order among
/// those running the fewest invocations.
fn next_turn(state: &mut State) -> Option<TenantId> {
    let running = |tenant: &TenantId| state.running.get(tenant).copied().unwrap_or(0);
    let index = state
        .turns
        .iter()
        .enumerate()
        .min_by_key(|(index, tenant)| (running(tenant), *index))
        .map(|(index, _)| index)?;
    state.turns.remove(index)
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(slots) = self.slots.take() {
            slots.release(&self.tenant);
        }
    }
}

/// One invocation's turns at running guest code: the slot it holds (if
/// any), kept where its epoch callback and its host calls both reach it.
#[derive(Debug)]
pub(crate) struct Turns {
    slots: Arc<ExecutionSlots>,
    tenant: TenantId,
    /// The slot held, and since when.
    held: Mutex<Option<(Slot, Instant)>>,
    /// Where the guest runs (see [`INLINE_BUDGET`]).
    placement: Mutex<Placement>,
}

/// Where a guest runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// Not started: it waits for its first slot where it was called.
    NotStarted,
    /// On its caller's thread, until then.
    Inline(Instant),
    /// To be moved to, or on, the guest executor.
    Executor,
}

/// How long a guest runs on the thread of its caller (a node's connection)
/// before it moves to the guest executor. Most calls end well within it and
/// pay no hand-over between threads; a long-running guest moves at its next
/// tick after it, so it cannot hold the node's own threads.
pub(crate) const INLINE_BUDGET: Duration = Duration::from_millis(1);

/// How long a guest runs before it gives its slot to a waiting tenant that
/// already has guests running. A guest that got its slot more recently
/// keeps it (a short call is not sent to the back of the queue because a
/// tick fell in its middle); a tenant with nothing running gets a slot at
/// once whatever the quantum.
pub(crate) const QUANTUM: Duration = Duration::from_millis(10);

impl Turns {
    pub(crate) fn new(slots: Arc<ExecutionSlots>, tenant: TenantId) -> Arc<Self> {
        Arc::new(Turns {
            slots,
            tenant,
            held: Mutex::new(None),
            placement: Mutex::new(Placement::NotStarted),
        })
    }

    fn held(&self) -> MutexGuard<'_, Option<(Slot, Instant)>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn placement(&self) -> MutexGuard<'_, Placement> {
        self.placement.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets the guest run on its caller's thread for [`INLINE_BUDGET`].
    pub(crate) fn start_inline(&self) {
        *self.placement() = Placement::Inline(Instant::now() + INLINE_BUDGET);
    }

    /// Whether the guest has run inline long enough to move.
    pub(crate) fn should_move(&self) -> bool {
        *self.placement() == Placement::Executor
    }

    /// Waits for a slot and holds it.
    pub(crate) async fn begin(&self) {
        self.begin_with(self.reserve()).await;
    }

    /// Takes a slot or a place in the queue now, so that the turn can be
    /// awaited where the guest will run: the guest that hands its slot on
    /// then wakes the next one on its own thread, and no thread has to be
    /// woken first.
    pub(crate) fn reserve(&self) -> Reservation {
        self.slots.reserve(&self.tenant)
    }

    /// Waits for the turn `reservation` holds a place for, and holds it.
    pub(crate) async fn begin_with(&self, reservation: Reservation) {
        let slot = reservation.await_turn().await;
        *self.held() = Some((slot, Instant::now()));
    }

    /// Gives the slot up (the guest stopped running).
    pub(crate) fn end(&self) {
        let slot = self.held().take();
        drop(slot);
    }

    /// Runs `work`, a host call that waits, without the slot; queues for one
    /// again afterwards if it held one.
    pub(crate) async fn away<T>(&self, work: impl Future<Output = T>) -> T {
        let slot = self.held().take();
        let had = slot.is_some();
        drop(slot);
        let output = work.await;
        if had {
            self.begin().await;
        }
        output
    }

    /// What the guest does at an epoch tick: yield to the executor, and give
    /// the slot to whoever waits for one and queue again.
    pub(crate) fn at_tick(self: &Arc<Self>) -> wasmtime::UpdateDeadline {
        {
            let mut placement = self.placement();
            if matches!(*placement, Placement::Inline(until) if Instant::now() >= until) {
                // Its caller sees this when the guest yields, and moves it.
                *placement = Placement::Executor;
                return wasmtime::UpdateDeadline::Yield(1);
            }
        }
        let quantum_used = self
            .held()
            .as_ref()
            .is_none_or(|(_, since)| since.elapsed() >= QUANTUM);
        let waiting = self.slots.waiting();
        let must_yield = waiting.starving || (quantum_used && waiting.anyone);
        if !must_yield {
            return wasmtime::UpdateDeadline::Yield(1);
        }
        let turns = Arc::clone(self);
        wasmtime::UpdateDeadline::YieldCustom(
            1,
            Box::pin(async move {
                turns.end();
                turns.begin().await;
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str) -> TenantId {
        TenantId::new(name).unwrap()
    }

    fn slots(n: usize) -> Arc<ExecutionSlots> {
        ExecutionSlots::new(Engine::default(), n)
    }

    #[tokio::test]
    async fn a_tenant_with_nothing_running_goes_before_one_with_many_waiting() {
        let slots = slots(1);
        let running = slots.acquire(&tenant("attacker")).await;
        let mut queued = Vec::new();
        for _ in 0..8 {
            let slots = Arc::clone(&slots);
            queued.push(tokio::spawn(async move {
                slots.acquire(&tenant("attacker")).await
            }));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let victim = {
            let slots = Arc::clone(&slots);
            tokio::spawn(async move { slots.acquire(&tenant("victim")).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(slots.waiting().anyone);
        // The attacker's running guest yields once: the victim is next,
        // though eight of the attacker's arrived before it.
        drop(running);
        let got = tokio::time::timeout(Duration::from_secs(5), victim)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.tenant, tenant("victim"));
        assert!(queued.iter().all(|q| !q.is_finished()));
        drop(got);
        for q in queued {
            drop(q.await.unwrap());
        }
        assert!(!slots.waiting().anyone);
        assert_eq!(slots.state().free, 1);
        assert!(slots.state().running.is_empty());
    }

    #[tokio::test]
    async fn a_waiter_that_goes_away_does_not_lose_the_slot() {
        let slots = slots(1);
        let held = slots.acquire(&tenant("a")).await;
        let gone = {
            let slots = Arc::clone(&slots);
            tokio::spawn(async move { slots.acquire(&tenant("b")).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        gone.abort();
        let _ = gone.await;
        drop(held);
        let again = tokio::time::timeout(Duration::from_secs(5), slots.acquire(&tenant("c")))
            .await
            .expect("the slot came back");
        drop(again);
        assert_eq!(slots.state().free, 1);
    }

    #[tokio::test]
    async fn a_host_call_runs_without_the_slot() {
        let slots = slots(1);
        let turns = Turns::new(Arc::clone(&slots), tenant("a"));
        turns.begin().await;
        let other = Arc::clone(&slots);
        let got_other = turns
            .away(async move {
                // While "a" waits in its host call, "b" can run.
                drop(other.acquire(&tenant("b")).await);
                true
            })
            .await;
        assert!(got_other);
        assert!(
            turns.held().is_some(),
            "the slot is held again after the call"
        );
        turns.end();
        assert_eq!(slots.state().free, 1);
    }
}
