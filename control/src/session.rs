//! One episode of a sandboxed controller, from its checks to its summary
//! and its audit record: what `sovra control`, a node's episode API and the
//! tests all run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sovra_runtime::audit::{AuditRecord, unix_millis};
use sovra_runtime::{Agent, ControllerSetup, InvokeError, Runtime};

use crate::driver::{ControllerReport, SandboxedDriver};
use crate::episode::{
    self, EpisodeSpec, EpisodeSummary, SpecError, StopHandle, StopReason, TelemetrySample,
    TickTimes,
};
use crate::world::{UnknownWorld, WorldOptions, simulated};

/// A finished episode.
#[derive(Debug)]
pub struct Episode {
    pub id: String,
    pub summary: EpisodeSummary,
    pub times: TickTimes,
    /// The controller's log lines and model use.
    pub controller: ControllerReport,
}

/// Why an episode could not start (nothing ran, the world was not touched).
#[derive(Debug, thiserror::Error)]
pub enum EpisodeError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    World(#[from] UnknownWorld),
    /// The controller was refused (not a controller, a grant missing, no
    /// room on the node) or could not be instantiated.
    #[error("the controller cannot run: {0}")]
    Controller(#[from] InvokeError),
}

/// A fresh episode id: the start time and a counter.
pub fn new_episode_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("ep-{millis:x}-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// What one episode runs.
#[derive(Debug, Clone)]
pub struct EpisodePlan {
    pub world: String,
    pub world_options: WorldOptions,
    pub spec: EpisodeSpec,
}

/// Runs `agent` (a controller) against the simulated world `plan.world`,
/// as episode `id` (see [`new_episode_id`]), until the episode ends; blocks the calling thread meanwhile (the loop
/// runs on it, the guest on a thread of its own).
pub fn run_sandboxed(
    runtime: &Runtime,
    agent: Arc<Agent>,
    setup: ControllerSetup,
    id: &str,
    plan: &EpisodePlan,
    stop: &StopHandle,
    telemetry: &mut dyn FnMut(&TelemetrySample<'_>),
) -> Result<Episode, EpisodeError> {
    let mut world = simulated(&plan.world, &plan.world_options)?;
    plan.spec.validate(world.as_ref())?;
    let id = id.to_owned();
    let started_at = SystemTime::now();
    let audit = AuditRecord {
        invocation_id: id.clone(),
        tenant: setup.tenant.to_string(),
        agent: agent.manifest().name.clone(),
        agent_digest: agent.digest().to_string(),
        started_at_ms: unix_millis(started_at),
        duration_us: 0,
        outcome: String::new(),
        error: None,
        denials: Vec::new(),
        usage: Vec::new(),
        parent: None,
    };
    // A step still running this long after it began is interrupted: the
    // loop has stopped the episode for missed deadlines by then.
    let step_limit =
        (plan.spec.period() * (plan.spec.miss_limit + 1)).max(Duration::from_millis(2));
    let mut driver =
        match SandboxedDriver::start(runtime.clone(), agent, setup, id.clone(), step_limit) {
            Ok(driver) => driver,
            Err(error) => {
                let denials = match &error {
                    InvokeError::NotGranted { interface, .. } => {
                        vec![format!("import: {interface}")]
                    }
                    _ => Vec::new(),
                };
                runtime.audit().record(AuditRecord {
                    outcome: error.kind().to_owned(),
                    error: Some(error.to_string()),
                    denials,
                    ..audit
                });
                return Err(error.into());
            }
        };
    let (summary, times) = episode::run(world.as_mut(), &mut driver, &plan.spec, stop, telemetry)?;
    let controller = driver.finish();
    // The episode is in the node's audit log like an invocation: its
    // outcome is `ok` when it completed, else how it ended.
    let completed = summary.stop == StopReason::Completed;
    runtime.audit().record(AuditRecord {
        duration_us: started_at.elapsed().map_or(0, |d| d.as_micros() as u64),
        outcome: if completed { "ok" } else { summary.stop.kind() }.to_owned(),
        error: (!completed).then(|| summary.stop.to_string()),
        usage: controller.usage.clone(),
        ..audit
    });
    Ok(Episode {
        id,
        summary,
        times,
        controller,
    })
}
