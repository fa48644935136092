//! The control loop of one episode: the host owns the clock. At each tick it
//! reads the world's sensors, gives the controller until the tick's deadline
//! to answer, checks and clamps the answer to the actuators' limits (or
//! applies the world's safe action instead), and advances the world. A
//! controller that fails [`EpisodeSpec::miss_limit`] ticks in a row, traps,
//! asks for an emergency stop or lets the world fail ends the episode with a
//! typed [`StopReason`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use sovra_runtime::{ActuatorRange, EpisodeConfig, InvokeError};

use crate::driver::Driver;
use crate::pacing::{Pacing, sleep_until};
use crate::stats::{Histogram, Percentiles};
use crate::world::World;

/// Fastest tick rate an episode may ask for.
/// Stops: an episode asking for a rate no host can keep, which would only
/// burn a core on missed ticks.
pub const MAX_RATE_HZ: u32 = 2_000;

/// Longest episode.
/// Stops: an episode holding a sandbox and a core indefinitely.
pub const MAX_EPISODE_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Most consecutive failed ticks an operator may tolerate.
pub const MAX_MISS_LIMIT: u32 = 1_000;

/// Consecutive failed ticks (missed, invalid or refused) that stop an
/// episode when the operator set none.
pub const DEFAULT_MISS_LIMIT: u32 = 10;

/// How an episode runs.
#[derive(Debug, Clone, PartialEq)]
pub struct EpisodeSpec {
    /// Ticks per second.
    pub rate_hz: u32,
    /// World time the episode runs for.
    pub duration: Duration,
    /// How long after a tick is due its actions must be in (at most the
    /// tick's period, which is the default).
    pub deadline: Option<Duration>,
    /// Consecutive failed ticks that stop the episode.
    pub miss_limit: u32,
    pub pacing: Pacing,
    /// Actuator limits narrower than the world's own: `(name, min, max)`.
    pub limits: Vec<(String, f32, f32)>,
    /// Parameters passed to the controller's `init`.
    pub parameters: Vec<(String, String)>,
    /// A telemetry sample every this many ticks (0: none).
    pub telemetry_every: u32,
}

impl EpisodeSpec {
    pub fn new(rate_hz: u32, duration: Duration) -> Self {
        EpisodeSpec {
            rate_hz,
            duration,
            deadline: None,
            miss_limit: DEFAULT_MISS_LIMIT,
            pacing: Pacing::RealTime,
            limits: Vec::new(),
            parameters: Vec::new(),
            telemetry_every: 0,
        }
    }

    /// The length of one tick.
    pub fn period(&self) -> Duration {
        Duration::from_secs_f64(1.0 / f64::from(self.rate_hz.max(1)))
    }

    /// Ticks in the whole episode.
    pub fn ticks(&self) -> u64 {
        (self.duration.as_secs_f64() * f64::from(self.rate_hz)).round() as u64
    }

    /// Checks the spec against the node's bounds and the world's actuators,
    /// and gives the actuator ranges it runs with.
    pub fn validate(&self, world: &dyn World) -> Result<Vec<ActuatorRange>, SpecError> {
        if !(1..=MAX_RATE_HZ).contains(&self.rate_hz) {
            return Err(SpecError(format!(
                "rate {} Hz is outside 1..={MAX_RATE_HZ} Hz",
                self.rate_hz
            )));
        }
        if self.duration.is_zero() || self.duration > MAX_EPISODE_DURATION {
            return Err(SpecError(format!(
                "duration {:?} is outside (0, {MAX_EPISODE_DURATION:?}]",
                self.duration
            )));
        }
        if let Some(deadline) = self.deadline
            && (deadline.is_zero() || deadline > self.period())
        {
            return Err(SpecError(format!(
                "deadline {deadline:?} is outside (0, {:?}] (one tick at {} Hz)",
                self.period(),
                self.rate_hz
            )));
        }
        if !(1..=MAX_MISS_LIMIT).contains(&self.miss_limit) {
            return Err(SpecError(format!(
                "miss limit {} is outside 1..={MAX_MISS_LIMIT}",
                self.miss_limit
            )));
        }
        let mut ranges: Vec<ActuatorRange> = world
            .actuators()
            .iter()
            .map(|a| ActuatorRange {
                name: a.name.to_owned(),
                min: a.min,
                max: a.max,
            })
            .collect();
        for (name, min, max) in &self.limits {
            let Some(range) = ranges.iter_mut().find(|r| &r.name == name) else {
                return Err(SpecError(format!(
                    "world `{}` has no actuator `{name}` (it has: {})",
                    world.name(),
                    world
                        .actuators()
                        .iter()
                        .map(|a| a.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            };
            if !(min.is_finite() && max.is_finite() && min <= max) {
                return Err(SpecError(format!(
                    "limits of `{name}` must be finite with min <= max (given {min}..{max})"
                )));
            }
            if *min < range.min || *max > range.max {
                return Err(SpecError(format!(
                    "limits of `{name}` ({min}..{max}) exceed what it physically gives \
                     ({}..{})",
                    range.min, range.max
                )));
            }
            range.min = *min;
            range.max = *max;
        }
        Ok(ranges)
    }
}

/// An episode spec outside what the node or the world allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid episode: {0}")]
pub struct SpecError(pub String);

/// Why an episode ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum StopReason {
    /// It ran its whole duration.
    Completed,
    /// The controller answered no tick in time `consecutive` times in a row.
    DeadlineMissed { consecutive: u32 },
    /// The controller's answers could not be used (wrong length, NaN or
    /// infinite values) `consecutive` times in a row.
    InvalidAction { consecutive: u32, detail: String },
    /// The controller returned an error `consecutive` times in a row.
    GuestError { consecutive: u32, error: String },
    /// The controller trapped or hit a sandbox limit: its instance is gone.
    GuestFault { fault: String, error: String },
    /// The controller asked for an emergency stop.
    EmergencyStop { reason: String },
    /// The world failed (the pole fell, a joint overspeeds).
    WorldFailed { reason: String },
    /// The operator or the tenant stopped it.
    Stopped,
    /// The controller's `init` failed: no tick ran.
    InitFailed { error: String },
}

impl StopReason {
    /// A short stable name for metrics, exit codes and records.
    pub fn kind(&self) -> &'static str {
        match self {
            StopReason::Completed => "completed",
            StopReason::DeadlineMissed { .. } => "deadline-missed",
            StopReason::InvalidAction { .. } => "invalid-action",
            StopReason::GuestError { .. } => "guest-error",
            StopReason::GuestFault { .. } => "guest-fault",
            StopReason::EmergencyStop { .. } => "emergency-stop",
            StopReason::WorldFailed { .. } => "world-failed",
            StopReason::Stopped => "stopped",
            StopReason::InitFailed { .. } => "init-failed",
        }
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::Completed => write!(f, "completed"),
            StopReason::DeadlineMissed { consecutive } => {
                write!(f, "deadline missed on {consecutive} ticks in a row")
            }
            StopReason::InvalidAction {
                consecutive,
                detail,
            } => write!(
                f,
                "unusable actions on {consecutive} ticks in a row ({detail})"
            ),
            StopReason::GuestError { consecutive, error } => {
                write!(f, "controller failed {consecutive} ticks in a row: {error}")
            }
            StopReason::GuestFault { error, .. } => write!(f, "controller fault: {error}"),
            StopReason::EmergencyStop { reason } => write!(f, "emergency stop: {reason}"),
            StopReason::WorldFailed { reason } => write!(f, "world failed: {reason}"),
            StopReason::Stopped => write!(f, "stopped"),
            StopReason::InitFailed { error } => write!(f, "init failed: {error}"),
        }
    }
}

/// What happened in one episode.
#[derive(Debug, Clone, Serialize)]
pub struct EpisodeSummary {
    pub world: String,
    pub rate_hz: u32,
    pub stop: StopReason,
    /// Ticks run.
    pub ticks: u64,
    /// World time simulated, in seconds.
    pub world_time_s: f64,
    /// Wall time the episode took, in seconds.
    pub wall_time_s: f64,
    /// Ticks whose actions came too late (or could not be asked for).
    pub missed_ticks: u64,
    /// Ticks the node itself started after their deadline (it was
    /// stalled): the actuators held their last command, the controller was
    /// not asked and not blamed.
    pub late_ticks: u64,
    /// Ticks whose actions were unusable (NaN, infinite, wrongly sized).
    pub invalid_actions: u64,
    /// Ticks on which the controller returned an error.
    pub guest_errors: u64,
    /// Action values outside an actuator's range, clamped into it.
    pub clamped_actions: u64,
    /// Ticks given the world's safe action instead of the controller's.
    pub safe_actions: u64,
    /// Emergency stops the controller asked for (0 or 1).
    pub emergency_stops: u64,
    /// How late each tick started after it was due.
    pub jitter: Percentiles,
    /// How long each tick took, from its start to the world advanced.
    pub tick_duration: Percentiles,
    /// How long the controller took to answer, on ticks it answered in time.
    pub step_latency: Percentiles,
    /// The world's own figures (worst pole angle, tracking error).
    pub world_report: Vec<(String, f64)>,
}

/// One tick, as telemetry reports it.
#[derive(Debug, Clone, Serialize)]
pub struct TelemetrySample<'a> {
    pub tick: u64,
    pub time: f64,
    pub observation: &'a [f32],
    pub action: &'a [f32],
    /// The safe action replaced the controller's on this tick.
    pub safe: bool,
}

/// Stops a running episode from another thread.
#[derive(Debug, Clone, Default)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    pub fn stop(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Histograms of an episode, kept apart from the summary so that a node can
/// merge them into its metrics.
#[derive(Debug, Clone, Default)]
pub struct TickTimes {
    pub jitter: Histogram,
    pub tick_duration: Histogram,
    pub step_latency: Histogram,
}

/// Why one tick's actions were not the controller's.
enum Failed {
    Missed,
    Invalid(String),
    Error(String),
}

/// Runs one episode of `driver` against `world` under `spec`; returns when
/// it ends, whatever the controller does.
pub fn run(
    world: &mut dyn World,
    driver: &mut dyn Driver,
    spec: &EpisodeSpec,
    stop: &StopHandle,
    telemetry: &mut dyn FnMut(&TelemetrySample<'_>),
) -> Result<(EpisodeSummary, TickTimes), SpecError> {
    let ranges = spec.validate(world)?;
    let config = EpisodeConfig {
        world: world.name().to_owned(),
        rate_hz: spec.rate_hz,
        observations: world
            .observations()
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        actuators: ranges.clone(),
        parameters: spec.parameters.clone(),
    };
    let _priority = crate::pacing::LoopPriority::raise(spec.pacing);
    let mut loop_state = Loop::new(world, spec, ranges);
    if let Err(error) = driver.init(&config) {
        let stop = StopReason::InitFailed {
            error: error.to_string(),
        };
        return Ok(loop_state.finish(world, stop));
    }
    let stop_reason = loop_state.tick_until_stopped(world, driver, stop, telemetry);
    Ok(loop_state.finish(world, stop_reason))
}

/// The loop's counters and buffers.
struct Loop<'s> {
    spec: &'s EpisodeSpec,
    ranges: Vec<ActuatorRange>,
    observation: Vec<f32>,
    action: Vec<f32>,
    summary: EpisodeSummary,
    times: TickTimes,
    started: Instant,
}

impl<'s> Loop<'s> {
    fn new(world: &dyn World, spec: &'s EpisodeSpec, ranges: Vec<ActuatorRange>) -> Self {
        Loop {
            spec,
            observation: vec![0.0; world.observations().len()],
            action: vec![0.0; ranges.len()],
            ranges,
            summary: EpisodeSummary {
                world: world.name().to_owned(),
                rate_hz: spec.rate_hz,
                stop: StopReason::Completed,
                ticks: 0,
                world_time_s: 0.0,
                wall_time_s: 0.0,
                missed_ticks: 0,
                late_ticks: 0,
                invalid_actions: 0,
                guest_errors: 0,
                clamped_actions: 0,
                safe_actions: 0,
                emergency_stops: 0,
                jitter: Percentiles::default(),
                tick_duration: Percentiles::default(),
                step_latency: Percentiles::default(),
                world_report: Vec::new(),
            },
            times: TickTimes::default(),
            started: Instant::now(),
        }
    }

    fn tick_until_stopped(
        &mut self,
        world: &mut dyn World,
        driver: &mut dyn Driver,
        stop: &StopHandle,
        telemetry: &mut dyn FnMut(&TelemetrySample<'_>),
    ) -> StopReason {
        let period = self.spec.period();
        let deadline = self.spec.deadline.unwrap_or(period);
        let mut consecutive = 0u32;
        self.started = Instant::now();
        for tick in 0..self.spec.ticks() {
            if stop.is_stopped() {
                return StopReason::Stopped;
            }
            let due = match self.spec.pacing {
                Pacing::RealTime => {
                    let due = self.started + period * tick as u32;
                    sleep_until(due);
                    due
                }
                Pacing::Lockstep => Instant::now(),
            };
            let began = Instant::now();
            self.times.jitter.record(began - due);
            let time = tick as f64 * period.as_secs_f64();
            world.observe(&mut self.observation);
            if began >= due + deadline {
                // The node itself was stalled past this tick's deadline:
                // no controller could have answered it. The actuators hold
                // their last command, as a machine's do, and the controller
                // is not blamed.
                self.summary.late_ticks += 1;
                self.advance(world, tick, period, false, telemetry);
                if let Some(reason) = world.failure() {
                    return StopReason::WorldFailed { reason };
                }
                continue;
            }

            let answer = if driver.begin_step(tick, time, &self.observation, due + deadline) {
                driver.finish_step(due + deadline)
            } else {
                None
            };
            let failed = match answer {
                Some(Ok(actions)) => match self.accept(&actions) {
                    Ok(()) => {
                        self.times.step_latency.record(began.elapsed());
                        None
                    }
                    Err(detail) => Some(Failed::Invalid(detail)),
                },
                Some(Err(InvokeError::Agent(error))) => Some(Failed::Error(error.to_string())),
                Some(Err(fault)) => {
                    // The instance trapped: its world is left safe.
                    world.safe_action(&mut self.action);
                    self.summary.safe_actions += 1;
                    self.advance(world, tick, period, true, telemetry);
                    return StopReason::GuestFault {
                        fault: fault.kind().to_owned(),
                        error: fault.to_string(),
                    };
                }
                None => Some(Failed::Missed),
            };
            let emergency = driver.emergency_stop();
            let safe = failed.is_some() || emergency.is_some();
            if safe {
                world.safe_action(&mut self.action);
                self.summary.safe_actions += 1;
            }
            self.advance(world, tick, period, safe, telemetry);

            if let Some(reason) = emergency {
                self.summary.emergency_stops = 1;
                return StopReason::EmergencyStop { reason };
            }
            match failed {
                None => consecutive = 0,
                Some(failed) => {
                    consecutive += 1;
                    let reason = match failed {
                        Failed::Missed => {
                            self.summary.missed_ticks += 1;
                            StopReason::DeadlineMissed { consecutive }
                        }
                        Failed::Invalid(detail) => {
                            self.summary.invalid_actions += 1;
                            StopReason::InvalidAction {
                                consecutive,
                                detail,
                            }
                        }
                        Failed::Error(error) => {
                            self.summary.guest_errors += 1;
                            StopReason::GuestError { consecutive, error }
                        }
                    };
                    if consecutive >= self.spec.miss_limit {
                        return reason;
                    }
                }
            }
            if let Some(reason) = world.failure() {
                return StopReason::WorldFailed { reason };
            }
            self.times.tick_duration.record(began.elapsed());
        }
        StopReason::Completed
    }

    /// Checks the controller's actions and clamps them into `self.action`.
    fn accept(&mut self, actions: &[f32]) -> Result<(), String> {
        if actions.len() != self.ranges.len() {
            return Err(format!(
                "{} values for {} actuators",
                actions.len(),
                self.ranges.len()
            ));
        }
        if let Some((range, value)) = self
            .ranges
            .iter()
            .zip(actions)
            .find(|(_, value)| !value.is_finite())
        {
            return Err(format!("`{}` is {value}", range.name));
        }
        for ((slot, range), value) in self.action.iter_mut().zip(&self.ranges).zip(actions) {
            let clamped = value.clamp(range.min, range.max);
            if clamped != *value {
                self.summary.clamped_actions += 1;
            }
            *slot = clamped;
        }
        Ok(())
    }

    fn advance(
        &mut self,
        world: &mut dyn World,
        tick: u64,
        period: Duration,
        safe: bool,
        telemetry: &mut dyn FnMut(&TelemetrySample<'_>),
    ) {
        world.advance(&self.action, period);
        self.summary.ticks = tick + 1;
        let every = u64::from(self.spec.telemetry_every);
        if every > 0 && tick.is_multiple_of(every) {
            telemetry(&TelemetrySample {
                tick,
                time: tick as f64 * period.as_secs_f64(),
                observation: &self.observation,
                action: &self.action,
                safe,
            });
        }
    }

    fn finish(mut self, world: &dyn World, stop: StopReason) -> (EpisodeSummary, TickTimes) {
        let summary = &mut self.summary;
        summary.stop = stop;
        summary.world_time_s = summary.ticks as f64 * self.spec.period().as_secs_f64();
        summary.wall_time_s = self.started.elapsed().as_secs_f64();
        summary.jitter = self.times.jitter.summary();
        summary.tick_duration = self.times.tick_duration.summary();
        summary.step_latency = self.times.step_latency.summary();
        summary.world_report = world
            .report()
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect();
        (self.summary, self.times)
    }
}
