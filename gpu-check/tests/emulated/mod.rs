// Each test binary uses only part of this module.
#![allow(dead_code)]

//! A GPU on the CPU for the tests: `host-gpu/kernels/llama.cu` compiled with
//! g++ against an emulation of the CUDA execution model
//! (`gpu-check/kernels/emulation/`), in a child process that holds the device
//! memory, runs the kernels and the half-precision product (f16 or bf16), and answers over a pipe (the
//! protocol is in runner.cpp). It implements sovra's [`Gpu`] trait, so the
//! CUDA backend's own code runs on it. Capture records the launches and
//! products as CUDA does (and, as CUDA's thread-local capture mode does,
//! refuses copies and allocations while capturing); a replay sends them
//! again.
//!
//! `build()` skips (with a message) when no C++20 compiler is found (`CXX`
//! or g++); `SOVRA_REQUIRE_EMULATION=1` makes that a failure.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use sovra_gpu::cuda::{Gpu, GpuError, Half, Karg};

/// How a block's threads switch between one another in the emulated GPU.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    /// The few-instruction switch on x86-64 (`swapcontext` elsewhere).
    Native,
    /// `swapcontext` everywhere: the portable path, built to test it.
    Portable,
}

/// The emulated GPU's program for `half`, compiled once per test binary,
/// or `None` (with a message) without a compiler.
pub fn build(half: Half) -> Option<PathBuf> {
    build_with(half, Switch::Native)
}

/// [`build`] with a choice of fiber switch.
pub fn build_with(half: Half, switch: Switch) -> Option<PathBuf> {
    static BUILT: [OnceLock<Option<PathBuf>>; 4] = [const { OnceLock::new() }; 4];
    let slot = (half == Half::Bf16) as usize * 2 + (switch == Switch::Portable) as usize;
    BUILT[slot].get_or_init(|| compile(half, switch)).clone()
}

fn compile(half: Half, switch: Switch) -> Option<PathBuf> {
    let compiler = std::env::var("CXX").unwrap_or_else(|_| "g++".into());
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels/emulation/runner.cpp");
    let name = match switch {
        Switch::Native => format!("sovra-emulated-gpu-{}", half.name()),
        Switch::Portable => format!("sovra-emulated-gpu-{}-portable", half.name()),
    };
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let mut command = Command::new(&compiler);
    // No shadow stack: the fiber switch returns into code that no call
    // put on one.
    command
        .args(["-std=c++20", "-O2", "-fcf-protection=none", "-o"])
        .arg(&out);
    if half == Half::Bf16 {
        command.arg("-DSOVRA_HALF_BF16");
    }
    if switch == Switch::Portable {
        command.arg("-DSOVRA_EMULATION_UCONTEXT");
    }
    let status = command.arg(&source).status();
    match status {
        Ok(status) if status.success() => Some(out),
        Ok(status) => panic!(
            "{compiler} could not compile {}: {status}",
            source.display()
        ),
        Err(error) => {
            assert!(
                std::env::var_os("SOVRA_REQUIRE_EMULATION").is_none(),
                "SOVRA_REQUIRE_EMULATION is set but {compiler} cannot run: {error}"
            );
            eprintln!("skipping: no C++ compiler ({compiler}: {error})");
            None
        }
    }
}

struct Pipe {
    child: Child,
    input: BufWriter<ChildStdin>,
    output: BufReader<ChildStdout>,
}

impl Pipe {
    /// Sends one request and reads its status (and, for a read, `reply` bytes).
    fn call(&mut self, request: &[u8], reply: usize) -> Result<Vec<u8>, GpuError> {
        let io = |e: std::io::Error| format!("the emulated GPU is gone: {e}");
        self.input.write_all(request).map_err(io)?;
        self.input.flush().map_err(io)?;
        let mut status = [0u8; 1];
        self.output.read_exact(&mut status).map_err(io)?;
        if status[0] != 0 {
            let mut n = [0u8; 4];
            self.output.read_exact(&mut n).map_err(io)?;
            let mut reason = vec![0u8; u32::from_le_bytes(n) as usize];
            self.output.read_exact(&mut reason).map_err(io)?;
            return Err(String::from_utf8_lossy(&reason).into_owned());
        }
        let mut bytes = vec![0u8; reply];
        self.output.read_exact(&mut bytes).map_err(io)?;
        Ok(bytes)
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The emulated GPU.
pub struct EmulatedGpu {
    half: Half,
    pipe: Arc<Mutex<Pipe>>,
    next_id: AtomicU64,
    /// While capturing: the launches and products recorded so far.
    capture: Mutex<Option<Vec<Vec<u8>>>>,
}

/// An allocation of the emulated GPU; dropping it frees it there.
pub struct Memory {
    pipe: Arc<Mutex<Pipe>>,
    id: u64,
}

impl Drop for Memory {
    fn drop(&mut self) {
        let mut request = vec![2u8];
        request.extend(self.id.to_le_bytes());
        let _ = lock(&self.pipe).call(&request, 0);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl EmulatedGpu {
    /// Starts the emulated GPU with products on `half`, or `None` without
    /// a compiler.
    pub fn start(half: Half) -> Option<Self> {
        Self::start_with(half, Switch::Native)
    }

    /// [`EmulatedGpu::start`] with a choice of fiber switch.
    pub fn start_with(half: Half, switch: Switch) -> Option<Self> {
        let runner = build_with(half, switch)?;
        let mut child = Command::new(runner)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the emulated GPU");
        let input = BufWriter::new(child.stdin.take().unwrap());
        let output = BufReader::new(child.stdout.take().unwrap());
        Some(EmulatedGpu {
            half,
            pipe: Arc::new(Mutex::new(Pipe {
                child,
                input,
                output,
            })),
            next_id: AtomicU64::new(1),
            capture: Mutex::new(None),
        })
    }

    fn refuse_while_capturing(&self, what: &str) -> Result<(), GpuError> {
        if lock(&self.capture).is_some() {
            return Err(format!("{what} is not allowed while capturing"));
        }
        Ok(())
    }

    /// Runs `request` now, or records it while capturing.
    fn run_or_record(&self, request: Vec<u8>) -> Result<(), GpuError> {
        if let Some(recorded) = lock(&self.capture).as_mut() {
            recorded.push(request);
            return Ok(());
        }
        lock(&self.pipe).call(&request, 0).map(|_| ())
    }
}

impl Gpu for EmulatedGpu {
    type Memory = Memory;
    type Graph = Vec<Vec<u8>>;

    fn name(&self) -> String {
        "emulated:0".into()
    }

    fn half(&self) -> Half {
        self.half
    }

    fn alloc(&self, bytes: usize) -> Result<(u64, Memory), GpuError> {
        self.refuse_while_capturing("an allocation")?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut request = vec![1u8];
        request.extend(id.to_le_bytes());
        request.extend((bytes as u64).to_le_bytes());
        lock(&self.pipe).call(&request, 0)?;
        Ok((
            id << 40,
            Memory {
                pipe: Arc::clone(&self.pipe),
                id,
            },
        ))
    }

    fn write(&self, address: u64, bytes: &[u8]) -> Result<(), GpuError> {
        self.refuse_while_capturing("a copy to the device")?;
        let mut request = vec![3u8];
        request.extend(address.to_le_bytes());
        request.extend((bytes.len() as u64).to_le_bytes());
        request.extend(bytes);
        lock(&self.pipe).call(&request, 0).map(|_| ())
    }

    fn read(&self, address: u64, out: &mut [u8]) -> Result<(), GpuError> {
        self.refuse_while_capturing("a copy from the device")?;
        let mut request = vec![4u8];
        request.extend(address.to_le_bytes());
        request.extend((out.len() as u64).to_le_bytes());
        let bytes = lock(&self.pipe).call(&request, out.len())?;
        out.copy_from_slice(&bytes);
        Ok(())
    }

    fn launch(
        &self,
        kernel: &str,
        grid: (u32, u32),
        threads: u32,
        args: &[Karg],
    ) -> Result<(), GpuError> {
        let mut request = vec![5u8];
        request.extend((kernel.len() as u32).to_le_bytes());
        request.extend(kernel.as_bytes());
        for v in [grid.0, grid.1, threads, args.len() as u32] {
            request.extend(v.to_le_bytes());
        }
        for arg in args {
            match arg {
                Karg::Address(a) => {
                    request.push(8);
                    request.extend(a.to_le_bytes());
                }
                Karg::I32(v) => {
                    request.push(4);
                    request.extend(v.to_le_bytes());
                }
                Karg::I64(v) => {
                    request.push(5);
                    request.extend(v.to_le_bytes());
                }
                Karg::U32(v) => {
                    request.push(6);
                    request.extend(v.to_le_bytes());
                }
                Karg::F32(v) => {
                    request.push(7);
                    request.extend(v.to_le_bytes());
                }
            }
        }
        self.run_or_record(request)
    }

    fn gemm(
        &self,
        w: u64,
        rows: usize,
        cols: usize,
        x: u64,
        n: usize,
        y: u64,
        accumulate: bool,
    ) -> Result<(), GpuError> {
        let mut request = vec![6u8];
        for v in [w, rows as u64, cols as u64, x, n as u64, y] {
            request.extend(v.to_le_bytes());
        }
        request.push(u8::from(accumulate));
        self.run_or_record(request)
    }

    fn synchronize(&self) -> Result<(), GpuError> {
        self.refuse_while_capturing("a synchronization")
    }

    fn begin_capture(&self) -> Result<(), GpuError> {
        let mut capture = lock(&self.capture);
        if capture.is_some() {
            return Err("already capturing".into());
        }
        *capture = Some(Vec::new());
        Ok(())
    }

    fn end_capture(&self) -> Result<Vec<Vec<u8>>, GpuError> {
        let recorded = lock(&self.capture).take().ok_or("not capturing")?;
        if recorded.is_empty() {
            return Err("the capture recorded nothing".into());
        }
        Ok(recorded)
    }

    fn replay(&self, graph: &Vec<Vec<u8>>) -> Result<(), GpuError> {
        self.refuse_while_capturing("a replay")?;
        let mut pipe = lock(&self.pipe);
        for request in graph {
            pipe.call(request, 0)?;
        }
        Ok(())
    }
}
