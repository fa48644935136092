//! `sovra control`: run one episode of a controller against a simulated
//! world and print its summary.
//!
//! ```text
//! sovra control cartpole-policy.wasm --world cartpole --rate 100Hz --duration 10s \
//!     --models models.toml --allow-model cartpole-policy
//! ```

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use sovra_control::{
    EpisodeError, EpisodePlan, EpisodeSpec, Pacing, StopHandle, StopReason, WorldOptions,
    new_episode_id, run_sandboxed,
};
use sovra_gpu::cuda::DeviceChoice;
use sovra_runtime::policy::{self, Ceilings, Effective, Grant};
use sovra_runtime::units::{parse_bytes, parse_duration};
use sovra_runtime::{ControllerSetup, TenantId};
use sovra_server::config::CompileLimits;

use crate::exit::{Code, Failure, WithCode};
use crate::run::{Loader, parse_pair};

#[derive(Args)]
pub struct ControlArgs {
    /// The controller component (world `controller`).
    component: PathBuf,
    /// The simulated world: cartpole or arm.
    #[arg(long, default_value = "cartpole")]
    world: String,
    /// Ticks per second, such as 100Hz or 1kHz.
    #[arg(long, value_parser = parse_rate, default_value = "100Hz")]
    rate: u32,
    /// World time the episode runs for, such as 10s.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    duration: Duration,
    /// How long after a tick is due its actions must be in (default: one tick).
    #[arg(long, value_parser = parse_duration)]
    deadline: Option<Duration>,
    /// Consecutive failed ticks (late, unusable, erroring) that stop the episode.
    #[arg(long, default_value_t = sovra_control::episode::DEFAULT_MISS_LIMIT)]
    miss_limit: u32,
    /// An actuator's range, narrower than the world's: NAME=MIN:MAX (repeatable).
    #[arg(long = "limit", value_parser = parse_limit)]
    limits: Vec<(String, f32, f32)>,
    /// A parameter for the controller's init, as key=value (repeatable).
    #[arg(long = "param", value_parser = parse_pair)]
    parameters: Vec<(String, String)>,
    /// Standard deviation of the sensor noise, in each channel's unit.
    #[arg(long, default_value_t = 0.0)]
    noise: f32,
    /// Seed of the sensor noise.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run ticks back to back instead of on the wall clock (deadlines hold).
    #[arg(long)]
    lockstep: bool,
    /// Tenant to run as.
    #[arg(long, default_value = "dev")]
    tenant: String,
    /// A tensor model the controller may use (repeatable).
    #[arg(long = "allow-model")]
    allow_model: Vec<String>,
    /// Memory limit, such as 64MiB (default: the manifest's, else 64MiB).
    #[arg(long, value_parser = parse_bytes)]
    max_memory: Option<u64>,
    /// The operator's model file (models.toml).
    #[arg(long, env = "SOVRA_MODELS")]
    models: Option<PathBuf>,
    /// Where text models run (tensor models run on the CPU).
    #[arg(long, env = "SOVRA_DEVICE", default_value = "auto")]
    device: DeviceChoice,
    /// Where compiled code lives [env: SOVRA_DATA_DIR; default: .sovra]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// `100`, `100Hz`, `1kHz`.
fn parse_rate(text: &str) -> Result<u32, String> {
    let lower = text.trim().to_ascii_lowercase();
    let (number, scale) = if let Some(n) = lower.strip_suffix("khz") {
        (n, 1000.0)
    } else if let Some(n) = lower.strip_suffix("hz") {
        (n, 1.0)
    } else {
        (lower.as_str(), 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a rate such as 100Hz or 1kHz"))?;
    let hz = value * scale;
    if !(hz >= 1.0 && hz <= f64::from(u32::MAX) && hz.fract() == 0.0) {
        return Err(format!("`{text}` is not a whole number of Hz"));
    }
    Ok(hz as u32)
}

/// `force=-5:5`.
fn parse_limit(text: &str) -> Result<(String, f32, f32), String> {
    let bad = || format!("`{text}` is not NAME=MIN:MAX");
    let (name, range) = text.split_once('=').ok_or_else(bad)?;
    let (min, max) = range.split_once(':').ok_or_else(bad)?;
    Ok((
        name.to_owned(),
        min.trim().parse().map_err(|_| bad())?,
        max.trim().parse().map_err(|_| bad())?,
    ))
}

pub fn control(args: ControlArgs) -> Result<ExitCode, Failure> {
    let tenant = TenantId::new(&args.tenant).code(Code::Usage)?;
    let grant = Grant {
        models: args.allow_model.iter().cloned().collect::<BTreeSet<_>>(),
        max_memory: args.max_memory,
        ..Grant::default()
    };
    policy::check_ceilings(&grant, &Ceilings::local()).code(Code::Usage)?;
    let tokio = tokio::runtime::Runtime::new().code(Code::Host)?;
    let loader = Loader::new(
        &tokio,
        args.data_dir.clone(),
        args.models.as_deref(),
        args.device,
        CompileLimits::default(),
    )?;
    let agent = loader.load(&args.component, None)?;
    let Effective { grants, limits } =
        policy::effective(agent.manifest(), &grant, &Ceilings::local());
    let setup = ControllerSetup {
        max_memory: limits.max_memory,
        ..ControllerSetup::new(tenant, grants)
    };
    let mut spec = EpisodeSpec::new(args.rate, args.duration);
    spec.deadline = args.deadline;
    spec.miss_limit = args.miss_limit;
    spec.limits = args.limits.clone();
    spec.parameters = args.parameters.clone();
    if args.lockstep {
        spec.pacing = Pacing::Lockstep;
    }
    let plan = EpisodePlan {
        world: args.world.clone(),
        world_options: WorldOptions {
            sensor_noise: args.noise,
            seed: args.seed,
        },
        spec,
    };
    let stop = StopHandle::default();
    let id = new_episode_id();
    let episode = run_sandboxed(
        &loader.runtime,
        agent,
        setup,
        &id,
        &plan,
        &stop,
        &mut |_| {},
    );
    let episode = match episode {
        Ok(episode) => episode,
        Err(EpisodeError::Controller(error)) => {
            return Err(Failure {
                code: Code::of(&error),
                error: anyhow::Error::new(error).context("the controller cannot run"),
            });
        }
        Err(error) => return Err(error).code(Code::Usage),
    };
    for line in &episode.controller.logs {
        eprintln!("[controller {}] {}", line.level.as_str(), line.message);
    }
    if args.json {
        let json = serde_json::to_string_pretty(&episode.summary).context("summary as JSON");
        println!("{}", json.code(Code::Host)?);
    } else {
        print_summary(&episode.summary);
    }
    Ok(match episode.summary.stop {
        StopReason::Completed => ExitCode::SUCCESS,
        _ => Code::AgentError.into(),
    })
}

fn print_summary(summary: &sovra_control::EpisodeSummary) {
    println!(
        "episode: {} at {} Hz, {} ticks ({:.2} s of world time in {:.2} s)",
        summary.world, summary.rate_hz, summary.ticks, summary.world_time_s, summary.wall_time_s
    );
    println!("ended: {}", summary.stop);
    println!(
        "ticks: {} missed, {} late (node stalled), {} unusable, {} erroring, {} safe actions, \
         {} values clamped",
        summary.missed_ticks,
        summary.late_ticks,
        summary.invalid_actions,
        summary.guest_errors,
        summary.safe_actions,
        summary.clamped_actions
    );
    for (name, figures) in [
        ("jitter", summary.jitter),
        ("tick", summary.tick_duration),
        ("controller", summary.step_latency),
    ] {
        println!(
            "{name:>10}: p50 {} µs, p99 {} µs, max {} µs",
            figures.p50_us, figures.p99_us, figures.max_us
        );
    }
    for (name, value) in &summary.world_report {
        println!("{name}: {value:.4}");
    }
}
