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
/// wake-up latency (even with the timer slack cut to [`TIMER_SLACK`], tens
/// of microseconds at the 99th percentile on a 2-core VM), with a margin.
/// Stops: ticks starting tens of microseconds late after a sleep.
const SPIN_WINDOW: Duration = Duration::from_micros(200);

/// The control threads' timer slack (Linux's default is 50 µs).
const TIMER_SLACK: Duration = Duration::from_micros(1);

/// The niceness of an episode's loop thread and its controller's thread:
/// above the node's own threads (0) and far above other guests' (+10), so
/// that a tenant flooding the node with invocations cannot make a tick
/// late. A controller spinning at it is interrupted once its episode has
/// missed its limit of ticks, so the boost is bounded in time.
pub const CONTROL_NICENESS: i32 = -10;

/// The scheduler time slice asked for the control threads: a thread with
/// a short slice preempts longer-sliced work as soon as it wakes (Linux's
/// EEVDF scheduler, 6.12 and later), instead of waiting out a spinning
/// guest's slice (1.5 ms on two cores). Fair scheduling all the same: it
/// cannot starve anything.
pub const CONTROL_SLICE: std::time::Duration = std::time::Duration::from_micros(100);

/// Gives the calling thread [`CONTROL_NICENESS`] and [`CONTROL_SLICE`]
/// where the OS allows it (the niceness needs `CAP_SYS_NICE`, the slice a
/// 6.12 kernel); elsewhere what it allows, and says so once.
pub fn prioritize_this_thread() {
    static WARNED: std::sync::Once = std::sync::Once::new();
    if let Err(error) = set_latency_sensitive() {
        WARNED.call_once(|| {
            tracing::warn!(
                %error,
                "cannot raise the control threads' priority: other work on the node may \
                 delay ticks"
            );
        });
    }
}

/// `struct sched_attr` as the kernel first defined it
/// (`SCHED_ATTR_SIZE_VER0`).
#[repr(C)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

#[cfg(target_os = "linux")]
fn set_latency_sensitive() -> std::io::Result<()> {
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: 0, // SCHED_OTHER
        flags: 0,
        nice: CONTROL_NICENESS,
        priority: 0,
        runtime: CONTROL_SLICE.as_nanos() as u64,
        deadline: 0,
        period: 0,
    };
    // SAFETY: `sched_setattr(0, attr, 0)` reads `size` bytes of `attr`, a
    // live, properly laid out `sched_attr`, and changes only the calling
    // thread's scheduling.
    let result = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    // SAFETY: PR_SET_TIMERSLACK takes an integer and changes only the
    // calling thread's timer slack.
    unsafe {
        libc::prctl(
            libc::PR_SET_TIMERSLACK,
            TIMER_SLACK.as_nanos() as libc::c_ulong,
        )
    };
    if result == 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    // An older kernel takes no slice for SCHED_OTHER: the niceness alone.
    rustix::process::setpriority_process(None, CONTROL_NICENESS)?;
    Err(error)
}

#[cfg(not(target_os = "linux"))]
fn set_latency_sensitive() -> std::io::Result<()> {
    rustix::process::setpriority_process(None, CONTROL_NICENESS).map_err(Into::into)
}

/// The real-time priority (SCHED_FIFO, 1-99) of a real-time episode's loop
/// thread. Only the loop's own code runs on it (sensors, checks, the
/// world): bounded work each tick, then a sleep, so it can never hold a core.
/// Guest code never runs at it: the controller's thread stays fair-share.
pub const LOOP_RT_PRIORITY: i32 = 10;

/// The calling thread's scheduling while it runs a loop; restored (to
/// fair-share with the niceness it had) when dropped.
#[derive(Debug)]
pub struct LoopPriority {
    realtime: bool,
    nice: Option<i32>,
}

impl LoopPriority {
    /// Raises the calling thread for a loop paced by `pacing`: what
    /// [`prioritize_this_thread`] gives, and SCHED_FIFO for a real-time
    /// loop where the OS allows it (`CAP_SYS_NICE`; never for a lockstep
    /// loop, which does not sleep).
    pub fn raise(pacing: Pacing) -> Self {
        let nice = rustix::process::getpriority_process(None).ok();
        prioritize_this_thread();
        let realtime = pacing == Pacing::RealTime && set_fifo(LOOP_RT_PRIORITY).is_ok();
        LoopPriority { realtime, nice }
    }
}

impl Drop for LoopPriority {
    fn drop(&mut self) {
        if self.realtime {
            let _ = set_fair_share();
        }
        if let Some(nice) = self.nice {
            let _ = rustix::process::setpriority_process(None, nice);
        }
    }
}

#[cfg(target_os = "linux")]
fn set_fifo(priority: i32) -> std::io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: `param` is a live `sched_param`; pid 0 is the calling thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(target_os = "linux")]
fn set_fair_share() -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: as in `set_fifo`.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn set_fifo(_priority: i32) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

#[cfg(not(target_os = "linux"))]
fn set_fair_share() -> std::io::Result<()> {
    Ok(())
}

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
