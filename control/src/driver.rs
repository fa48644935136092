//! How the loop gets a controller's actions: [`Driver`]. The sandboxed
//! driver runs a Wasm controller on a thread of its own, so that the loop's
//! clock never waits for a guest past a tick's deadline; the native driver
//! runs a Rust function in place (the baseline the sandbox is measured
//! against).

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sovra_runtime::{
    Agent, Controller, ControllerSetup, ControllerSignals, EpisodeConfig, InvokeError, LogLine,
    ModelUsage, Runtime,
};

/// How long a controller's `init` may run.
/// Stops: a controller that never finishes setting up holding an episode.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(2);

/// What the loop asks of a controller, one tick at a time.
pub trait Driver {
    /// Calls the controller's `init`.
    fn init(&mut self, config: &EpisodeConfig) -> Result<(), InvokeError>;

    /// Starts the step of `tick`, whose answer is due by `deadline`. A
    /// controller still running an abandoned earlier tick is waited for
    /// until then (each tick has its whole deadline, even when ticks follow
    /// each other at once, as in lockstep); `false` when it is still
    /// running at the deadline, or gone.
    fn begin_step(&mut self, tick: u64, time: f64, values: &[f32], deadline: Instant) -> bool;

    /// Waits until `deadline` for the step begun last: `None` if it has not
    /// answered by then.
    fn finish_step(&mut self, deadline: Instant) -> Option<Result<Vec<f32>, InvokeError>>;

    /// The reason of an emergency stop the controller asked for, if any.
    fn emergency_stop(&self) -> Option<String>;
}

/// A controller written in Rust and run in place, with no sandbox.
pub struct NativeDriver<F> {
    step: F,
    answer: Option<Vec<f32>>,
}

impl<F> std::fmt::Debug for NativeDriver<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeDriver").finish_non_exhaustive()
    }
}

impl<F: FnMut(&[f32]) -> Vec<f32>> NativeDriver<F> {
    pub fn new(step: F) -> Self {
        NativeDriver { step, answer: None }
    }
}

impl<F: FnMut(&[f32]) -> Vec<f32>> Driver for NativeDriver<F> {
    fn init(&mut self, _config: &EpisodeConfig) -> Result<(), InvokeError> {
        Ok(())
    }

    fn begin_step(&mut self, _tick: u64, _time: f64, values: &[f32], _deadline: Instant) -> bool {
        self.answer = Some((self.step)(values));
        true
    }

    fn finish_step(&mut self, _deadline: Instant) -> Option<Result<Vec<f32>, InvokeError>> {
        self.answer.take().map(Ok)
    }

    fn emergency_stop(&self) -> Option<String> {
        None
    }
}

enum Request {
    Init(EpisodeConfig),
    Step {
        tick: u64,
        time: f64,
        values: Vec<f32>,
        limit: Duration,
    },
}

enum Reply {
    Init(Result<(), InvokeError>),
    Step {
        tick: u64,
        result: Result<Vec<f32>, InvokeError>,
        /// The observation buffer, back for the next tick.
        values: Vec<f32>,
    },
}

/// What a sandboxed controller left when its episode ended.
#[derive(Debug, Default)]
pub struct ControllerReport {
    pub logs: Vec<LogLine>,
    pub dropped_logs: usize,
    pub usage: Vec<ModelUsage>,
}

/// A Wasm controller in its sandbox, on a thread of its own.
pub struct SandboxedDriver {
    requests: Option<SyncSender<Request>>,
    replies: Receiver<Reply>,
    signals: Arc<ControllerSignals>,
    thread: Option<JoinHandle<ControllerReport>>,
    /// The tick whose step runs now, if one does.
    running: Option<u64>,
    /// How long one step may run before the guest is interrupted.
    step_limit: Duration,
    spare: Vec<f32>,
}

impl std::fmt::Debug for SandboxedDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxedDriver")
            .field("running", &self.running)
            .finish_non_exhaustive()
    }
}

impl SandboxedDriver {
    /// Instantiates `agent` for `setup` on a new controller thread. A step
    /// still running `step_limit` after it began is interrupted (the loop
    /// has long given the world safe actions by then).
    pub fn start(
        runtime: Runtime,
        agent: Arc<Agent>,
        setup: ControllerSetup,
        episode_id: String,
        step_limit: Duration,
    ) -> Result<Self, InvokeError> {
        let (request_tx, request_rx) = sync_channel::<Request>(1);
        let (reply_tx, reply_rx) = sync_channel::<Reply>(1);
        let (ready_tx, ready_rx) = sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("sovra-controller".into())
            .spawn(move || {
                crate::pacing::prioritize_this_thread();
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(error) => {
                        let _ = ready_tx.send(Err(InvokeError::Internal(format!(
                            "cannot start the controller's thread: {error}"
                        ))));
                        return ControllerReport::default();
                    }
                };
                let controller =
                    rt.block_on(runtime.instantiate_controller(&agent, setup, &episode_id));
                match controller {
                    Ok(controller) => {
                        let _ = ready_tx.send(Ok(controller.signals()));
                        serve(&rt, controller, request_rx, reply_tx)
                    }
                    Err(error) => {
                        let _ = ready_tx.send(Err(error));
                        ControllerReport::default()
                    }
                }
            })
            .map_err(|e| InvokeError::Internal(format!("cannot start a controller thread: {e}")))?;
        let signals = ready_rx
            .recv()
            .map_err(|_| InvokeError::Internal("the controller thread ended".into()))??;
        Ok(SandboxedDriver {
            requests: Some(request_tx),
            replies: reply_rx,
            signals,
            thread: Some(thread),
            running: None,
            step_limit,
            spare: Vec::new(),
        })
    }

    /// Interrupts the guest (within a millisecond) and returns what it left.
    pub fn finish(mut self) -> ControllerReport {
        self.shut_down()
    }

    fn shut_down(&mut self) -> ControllerReport {
        self.signals.stop();
        self.requests = None;
        self.thread
            .take()
            .and_then(|thread| thread.join().ok())
            .unwrap_or_default()
    }

    /// Waits until `deadline` for the reply to a tick that was given up on,
    /// and drops it.
    fn collect_late_reply(&mut self, deadline: Instant) {
        while self.running.is_some() {
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.replies.recv_timeout(wait) {
                Ok(Reply::Step { values, .. }) => {
                    self.spare = values;
                    self.running = None;
                }
                Ok(Reply::Init(_)) => {}
                Err(RecvTimeoutError::Timeout) => return,
                Err(RecvTimeoutError::Disconnected) => self.running = None,
            }
        }
    }
}

impl Drop for SandboxedDriver {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.shut_down();
        }
    }
}

/// The controller thread: one request at a time until the loop hangs up.
fn serve(
    rt: &tokio::runtime::Runtime,
    mut controller: Controller,
    requests: Receiver<Request>,
    replies: SyncSender<Reply>,
) -> ControllerReport {
    while let Ok(request) = requests.recv() {
        let reply = match request {
            Request::Init(config) => {
                Reply::Init(rt.block_on(controller.init(&config, INIT_TIMEOUT)))
            }
            Request::Step {
                tick,
                time,
                values,
                limit,
            } => Reply::Step {
                tick,
                result: rt.block_on(controller.step(tick, time, &values, limit)),
                values,
            },
        };
        if replies.send(reply).is_err() {
            break;
        }
    }
    let (logs, dropped_logs) = controller.logs();
    ControllerReport {
        logs: logs.to_vec(),
        dropped_logs,
        usage: controller.usage(),
    }
}

impl Driver for SandboxedDriver {
    fn init(&mut self, config: &EpisodeConfig) -> Result<(), InvokeError> {
        let gone = || InvokeError::Internal("the controller thread ended".into());
        let requests = self.requests.as_ref().ok_or_else(gone)?;
        requests
            .send(Request::Init(config.clone()))
            .map_err(|_| gone())?;
        match self.replies.recv_timeout(INIT_TIMEOUT * 2) {
            Ok(Reply::Init(result)) => result,
            Ok(Reply::Step { .. }) => Err(InvokeError::Internal("a step answered init".into())),
            Err(_) => Err(InvokeError::Timeout {
                limit: INIT_TIMEOUT,
            }),
        }
    }

    fn begin_step(&mut self, tick: u64, time: f64, values: &[f32], deadline: Instant) -> bool {
        self.collect_late_reply(deadline);
        if self.running.is_some() {
            return false;
        }
        let Some(requests) = &self.requests else {
            return false;
        };
        let mut buffer = std::mem::take(&mut self.spare);
        buffer.clear();
        buffer.extend_from_slice(values);
        let request = Request::Step {
            tick,
            time,
            values: buffer,
            limit: self.step_limit,
        };
        if requests.send(request).is_err() {
            return false;
        }
        self.running = Some(tick);
        true
    }

    fn finish_step(&mut self, deadline: Instant) -> Option<Result<Vec<f32>, InvokeError>> {
        let tick = self.running?;
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.replies.recv_timeout(wait) {
                Ok(Reply::Step {
                    tick: answered,
                    result,
                    values,
                }) => {
                    self.spare = values;
                    self.running = None;
                    if answered == tick {
                        return Some(result);
                    }
                    // A reply to an earlier, abandoned tick: cannot happen
                    // while one step runs at a time, but never mistaken
                    // for this tick's.
                    return None;
                }
                Ok(Reply::Init(_)) => continue,
                Err(RecvTimeoutError::Timeout) => return None,
                Err(RecvTimeoutError::Disconnected) => {
                    self.running = None;
                    return Some(Err(InvokeError::Internal(
                        "the controller thread ended".into(),
                    )));
                }
            }
        }
    }

    fn emergency_stop(&self) -> Option<String> {
        self.signals.emergency_stop()
    }
}
