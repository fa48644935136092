//! The GPU check, for a machine with an NVIDIA GPU and no Rust toolchain
//! (`scripts/gpu-check` runs this binary, built beforehand with
//! `cargo build --release -p sovra-gpu-check --bin gpu_check`): probes CUDA,
//! then runs `checks.rs` on device 0 at full size (what it checks and
//! measures is listed there) and prints the report as markdown.
//!
//! Exit code 0 when every check passes, 1 when one fails, 2 without a GPU.

use sovra_gpu_check::checks;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use sovra_gpu::cuda::{self, CudaGpu};

/// Device-to-device copy bandwidth (bytes read + written per second).
fn copy_bandwidth(gpu: &CudaGpu) -> Option<f64> {
    let stream = gpu.stream();
    let bytes = 1usize << 30;
    let measure = || -> Result<f64, cudarc::driver::DriverError> {
        let src = stream.alloc_zeros::<u8>(bytes)?;
        let mut dst = stream.alloc_zeros::<u8>(bytes)?;
        stream.memcpy_dtod(&src, &mut dst)?;
        stream.synchronize()?;
        let rounds = 10;
        let started = Instant::now();
        for _ in 0..rounds {
            stream.memcpy_dtod(&src, &mut dst)?;
        }
        stream.synchronize()?;
        Ok((2 * bytes * rounds) as f64 / started.elapsed().as_secs_f64())
    };
    match measure() {
        Ok(bandwidth) => Some(bandwidth),
        Err(e) => {
            println!("cannot measure the copy bandwidth: {e}");
            None
        }
    }
}

fn main() -> ExitCode {
    let repo = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let probe = cuda::probe();
    println!("## CUDA probe\n\n{probe:#?}\n");
    if !probe.usable(0) {
        println!("no usable GPU: {:?}", probe.problem);
        return ExitCode::from(2);
    }
    let device = checks::Device {
        open: &|half| CudaGpu::open(0, half),
        copy_bandwidth: &copy_bandwidth,
    };
    let passed = checks::run(
        &device,
        &repo,
        &checks::Plan::full(),
        &mut std::io::stdout(),
    );
    if passed {
        println!("\nall checks passed");
        ExitCode::SUCCESS
    } else {
        println!("\nSOME CHECKS FAILED");
        ExitCode::from(1)
    }
}
