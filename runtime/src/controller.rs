//! Controllers: components of the `controller` world, kept alive for a whole
//! episode. The episode's loop (in `sovra-control`) owns the clock and calls
//! [`Controller::step`] once per tick; this module owns the sandbox: the
//! tenant's grants (tensor models, logging, `safety`), the memory limit, a
//! hard deadline on every call, and the signals through which the guest asks
//! for an emergency stop and the loop stops a guest that runs on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::Store;

use crate::bindings::controller::exports::sovra::agent::control;
use crate::bindings::{self, GuestError};
use crate::capability::{Grants, ImportNeed};
use crate::error::{InvokeError, LoadError};
use crate::invocation::{Invocation, ModelUsage};
use crate::limits::{HOST_CALL_GRACE, Limits, MAX_HOST_CALLS};
use crate::names::TenantId;
use crate::outcome::{agent_error, classify_trap};
use crate::runtime::{Agent, Runtime};
use crate::sandbox::{DeadlineExceeded, LogLine, Sandbox};

/// Host calls one tick may make (a tick runs a model or two and logs).
/// Stops: a controller flooding the host (its log, the model engine) from
/// inside one tick; the per-invocation budget would last a long episode
/// only a few seconds.
pub const MAX_HOST_CALLS_PER_TICK: u64 = 256;

/// Observation channels and actuators one episode may have.
/// Stops: a world configuration that makes every tick copy megabytes.
pub const MAX_CHANNELS: usize = 256;

/// What a controller instance runs with.
#[derive(Debug, Clone)]
pub struct ControllerSetup {
    pub tenant: TenantId,
    /// What the tenant granted: tensor models by name (storage and tools are
    /// not part of the controller world).
    pub grants: Grants,
    /// Linear memory the instance may use over the whole episode.
    pub max_memory: u64,
}

impl ControllerSetup {
    pub fn new(tenant: TenantId, grants: Grants) -> Self {
        ControllerSetup {
            tenant,
            grants,
            max_memory: Limits::default().max_memory,
        }
    }
}

/// One actuator and the range its actions are clamped into.
#[derive(Debug, Clone, PartialEq)]
pub struct ActuatorRange {
    pub name: String,
    pub min: f32,
    pub max: f32,
}

/// What `init` tells the controller about its episode.
#[derive(Debug, Clone, PartialEq)]
pub struct EpisodeConfig {
    pub world: String,
    pub rate_hz: u32,
    pub observations: Vec<String>,
    pub actuators: Vec<ActuatorRange>,
    pub parameters: Vec<(String, String)>,
}

/// Shared between a controller's sandbox and the loop that drives it.
#[derive(Debug, Default)]
pub struct ControllerSignals {
    emergency_stop: Mutex<Option<String>>,
    stopping: AtomicBool,
}

impl ControllerSignals {
    pub(crate) fn request_emergency_stop(&self, reason: String) {
        self.emergency_stop
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(reason);
    }

    /// The reason of the first emergency stop the guest asked for, if any.
    pub fn emergency_stop(&self) -> Option<String> {
        self.emergency_stop
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Interrupts the guest at its next epoch tick (within a millisecond),
    /// whatever it runs, and refuses every later call.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}

/// A live controller instance and its sandbox.
pub struct Controller {
    // Dropped before the permit: the pool slot is free once the permit is.
    store: Store<Sandbox>,
    bindings: bindings::controller::Controller,
    signals: Arc<ControllerSignals>,
    observation: control::Observation,
    /// Set by a trap: the instance cannot be entered again.
    failed: Option<InvokeError>,
    _permit: crate::runtime::SandboxPermit,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("controller", &self.store.data().identity.agent)
            .field("tenant", &self.store.data().identity.tenant)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// A fresh instance of the controller `agent` for one episode, in a
    /// sandbox of `setup.tenant` holding its grants. Refused before anything
    /// runs when it is not a controller or imports what was not granted.
    pub async fn instantiate_controller(
        &self,
        agent: &Agent,
        setup: ControllerSetup,
        episode_id: &str,
    ) -> Result<Controller, InvokeError> {
        let Some(pre) = agent.controller_entry() else {
            return Err(InvokeError::InvalidInvocation(format!(
                "`{}` is not a controller (its world is `{}`)",
                agent.manifest().name,
                agent.manifest().world.as_str()
            )));
        };
        for (interface, need) in agent.needs() {
            if let ImportNeed::Grant(capability) = need
                && !setup.grants.allows(*capability)
            {
                return Err(InvokeError::NotGranted {
                    interface: interface.clone(),
                    capability: *capability,
                });
            }
        }
        let limits = Limits {
            max_memory: setup.max_memory,
            ..Limits::default()
        };
        limits.validate()?;
        let permit = self.try_sandbox_permit()?;
        let mut invocation = Invocation::new(setup.tenant, "");
        invocation.grants = setup.grants;
        invocation.limits = limits;
        let (mut store, _stdio) = self.new_store(agent, &invocation, episode_id)?;
        let signals = Arc::new(ControllerSignals::default());
        store.data_mut().controller = Some(Arc::clone(&signals));
        // Replaces the invocation's callback: a controller holds no
        // execution slot (its ticks are short and bounded by the loop) and
        // stops when its call's deadline passes or its loop stops it.
        store.epoch_deadline_callback(|context| {
            let sandbox = context.data();
            let stopping = sandbox
                .controller
                .as_ref()
                .is_some_and(|signals| signals.is_stopping());
            if stopping || Instant::now() >= sandbox.inference.deadline {
                Err(wasmtime::Error::new(DeadlineExceeded))
            } else {
                Ok(wasmtime::UpdateDeadline::Continue(1))
            }
        });
        store.data_mut().inference.deadline = Instant::now() + Limits::default().timeout;
        let bindings = pre
            .instantiate_async(&mut store)
            .await
            .map_err(|trap| classify_trap(&trap, store.data(), Limits::default()))?;
        Ok(Controller {
            store,
            bindings,
            signals,
            observation: control::Observation {
                tick: 0,
                time: 0.0,
                values: Vec::new(),
            },
            failed: None,
            _permit: permit,
        })
    }
}

impl Controller {
    /// The signals its loop watches and stops it through.
    pub fn signals(&self) -> Arc<ControllerSignals> {
        Arc::clone(&self.signals)
    }

    /// Calls the guest's `init`, bounded by `limit`.
    pub async fn init(
        &mut self,
        config: &EpisodeConfig,
        limit: Duration,
    ) -> Result<(), InvokeError> {
        if config.observations.len() > MAX_CHANNELS || config.actuators.len() > MAX_CHANNELS {
            return Err(InvokeError::InvalidInvocation(format!(
                "an episode has at most {MAX_CHANNELS} observation channels and actuators"
            )));
        }
        let config = control::EpisodeConfig {
            world_name: config.world.clone(),
            rate_hz: config.rate_hz,
            observations: config.observations.clone(),
            actuators: config
                .actuators
                .iter()
                .map(|a| control::Actuator {
                    name: a.name.clone(),
                    min: a.min,
                    max: a.max,
                })
                .collect(),
            parameters: config
                .parameters
                .iter()
                .map(|(key, value)| bindings::Pair {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
        };
        self.prepare_call(limit, MAX_HOST_CALLS)?;
        let call = self
            .bindings
            .sovra_agent_control()
            .call_init(&mut self.store, &config);
        let outcome = tokio::time::timeout(limit + HOST_CALL_GRACE, call).await;
        self.finish_call(outcome, limit)
    }

    /// One tick: the guest's actions for `values`, bounded by `limit` (the
    /// call traps when its deadline passes). Checks nothing of the actions:
    /// that is the loop's job.
    pub async fn step(
        &mut self,
        tick: u64,
        time: f64,
        values: &[f32],
        limit: Duration,
    ) -> Result<Vec<f32>, InvokeError> {
        self.observation.tick = tick;
        self.observation.time = time;
        self.observation.values.clear();
        self.observation.values.extend_from_slice(values);
        self.prepare_call(limit, MAX_HOST_CALLS_PER_TICK)?;
        let call = self
            .bindings
            .sovra_agent_control()
            .call_step(&mut self.store, &self.observation);
        let outcome = tokio::time::timeout(limit + HOST_CALL_GRACE, call).await;
        self.finish_call(outcome, limit)
    }

    fn prepare_call(&mut self, limit: Duration, host_calls: u64) -> Result<(), InvokeError> {
        if let Some(failed) = &self.failed {
            return Err(failed.clone());
        }
        if self.signals.is_stopping() {
            return Err(InvokeError::Unavailable("the episode is stopping".into()));
        }
        let sandbox = self.store.data_mut();
        sandbox.inference.deadline = Instant::now() + limit;
        sandbox.host_calls = 0;
        sandbox.host_call_limit = host_calls;
        Ok(())
    }

    fn finish_call<T>(
        &mut self,
        outcome: Result<wasmtime::Result<Result<T, GuestError>>, tokio::time::error::Elapsed>,
        limit: Duration,
    ) -> Result<T, InvokeError> {
        let limits = Limits {
            timeout: limit,
            ..Limits::default()
        };
        let error = match outcome {
            Ok(Ok(Ok(value))) => return Ok(value),
            Ok(Ok(Err(guest_error))) => return Err(InvokeError::Agent(agent_error(guest_error))),
            Ok(Err(trap)) => classify_trap(&trap, self.store.data(), limits),
            // A host call ran past the deadline and its grace: the guest is
            // suspended inside it and cannot be resumed.
            Err(_elapsed) => InvokeError::Timeout { limit },
        };
        self.failed = Some(error.clone());
        Err(error)
    }

    /// Log lines kept so far (bounded like an invocation's), and how many
    /// were dropped.
    pub fn logs(&self) -> (&[LogLine], usize) {
        let logs = &self.store.data().logs;
        (&logs.lines, logs.dropped)
    }

    /// Model use so far.
    pub fn usage(&self) -> Vec<ModelUsage> {
        crate::invocation::usage_by_model(&self.store.data().meters)
    }
}

/// Checks a component's world before an episode is set up: the message a
/// caller sees for a component that is not a controller.
pub fn require_controller(agent: &Agent) -> Result<(), LoadError> {
    match agent.manifest().world {
        crate::World::Controller => Ok(()),
        other => Err(LoadError::WrongWorld(format!(
            "`{}` implements the `{}` world; episodes run controllers",
            agent.manifest().name,
            other.as_str()
        ))),
    }
}
