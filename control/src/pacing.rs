//! The loop's clock: when each tick starts.

use std::time::{Duration, Instant};

/// How ticks follow each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    /// Tick `n` starts at `start + n × period`, on the wall clock: the
    /// controller drives a machine (or a simulator standing in for one).
    RealTime,
    /// Each tick starts when the previous one ends; deadlines still hold per
    /// tick. Simulated time runs as fast as the host can step it.
    Lockstep,
}

/// How long before a tick the thread stops sleeping and spins: the OS's
/// timer slack (50 µs) and wake-up latency, with a margin.
/// Stops: ticks starting up to a few hundred microseconds late after a sleep.
const SPIN_WINDOW: Duration = Duration::from_micros(200);

/// Waits until `due`: sleeps to within [`SPIN_WINDOW`], then spins.
pub fn sleep_until(due: Instant) {
    let now = Instant::now();
    if due > now + SPIN_WINDOW {
        std::thread::sleep(due - now - SPIN_WINDOW);
    }
    while Instant::now() < due {
        std::hint::spin_loop();
    }
}
