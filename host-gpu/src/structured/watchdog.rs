//! A deadline on each piece of a guide's work: a thread that cancels a
//! matcher still computing when its time is up, so that a grammar built to
//! make one step's mask slow fails its own sequence instead of stalling
//! every sequence of the model. Fuel limits bound most of llguidance's work;
//! this bounds the rest (an Earley row that explodes inside one mask).

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use llguidance::CancellationHandle;

/// The process's one watchdog thread and the work it watches.
pub(super) struct Watchdog {
    watches: Mutex<Watches>,
    changed: Condvar,
}

#[derive(Default)]
struct Watches {
    next: u64,
    /// Work under way: when its time is up, and how to cancel it.
    running: BTreeMap<u64, (Instant, CancellationHandle)>,
}

/// Work being watched; dropping it ends the watch.
pub(super) struct Watch {
    id: u64,
}

impl Watchdog {
    /// The watchdog, its thread started on first use. Without a thread
    /// (the system refused one) work runs unwatched, which is logged.
    pub fn get() -> &'static Watchdog {
        static WATCHDOG: OnceLock<&'static Watchdog> = OnceLock::new();
        WATCHDOG.get_or_init(|| {
            let watchdog: &'static Watchdog = Box::leak(Box::new(Watchdog {
                watches: Mutex::new(Watches::default()),
                changed: Condvar::new(),
            }));
            let started = std::thread::Builder::new()
                .name("sovra-guide-watchdog".into())
                .spawn(|| watchdog.run());
            if let Err(e) = started {
                tracing::error!(error = %e, "no watchdog thread: constrained steps run without a time limit");
            }
            watchdog
        })
    }

    /// Watches work that `cancel` cancels, for `limit` from now.
    pub fn watch(&'static self, cancel: &CancellationHandle, limit: Duration) -> Watch {
        let mut watches = self.lock();
        watches.next += 1;
        let id = watches.next;
        watches
            .running
            .insert(id, (Instant::now() + limit, cancel.clone()));
        drop(watches);
        self.changed.notify_one();
        Watch { id }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Watches> {
        self.watches.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Cancels work whose time is up, sleeping until the next deadline.
    fn run(&self) {
        let mut watches = self.lock();
        loop {
            let now = Instant::now();
            watches.running.retain(|_, (deadline, cancel)| {
                let late = *deadline <= now;
                if late {
                    cancel.cancel();
                }
                !late
            });
            let next = watches
                .running
                .values()
                .map(|(deadline, _)| *deadline)
                .min();
            watches = match next {
                Some(deadline) => {
                    self.changed
                        .wait_timeout(watches, deadline - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => self
                    .changed
                    .wait(watches)
                    .unwrap_or_else(|p| p.into_inner()),
            };
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        Watchdog::get().lock().running.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_past_its_time_is_cancelled_and_finished_work_is_not() {
        let watchdog = Watchdog::get();
        let finished = CancellationHandle::default();
        drop(watchdog.watch(&finished, Duration::from_millis(20)));
        let slow = CancellationHandle::default();
        let _watch = watchdog.watch(&slow, Duration::from_millis(1));
        let waited = Instant::now();
        while !slow.is_cancelled() && waited.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(slow.is_cancelled(), "the late work was not cancelled");
        std::thread::sleep(Duration::from_millis(40));
        assert!(
            !finished.is_cancelled(),
            "work that ended in time was cancelled"
        );
    }
}
