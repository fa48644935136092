//! The CUDA kernels, run on the CPU: `kernels/llama.cu` compiled with g++
//! against an emulation of the CUDA execution model (real threads per block,
//! barriers for `__syncthreads` and warp shuffles; `kernels/emulation/`),
//! then every kernel check of `sovra_gpu::cuda::check_kernels_with` against
//! its host reference. This is the same set of checks the GPU check runs on
//! a device; here it proves the kernels' logic where no GPU is lent.
//!
//! Skipped with a message when no C++20 compiler is found (`CXX` or g++);
//! `SOVRA_REQUIRE_EMULATION=1` makes that a failure.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::OnceLock;

use sovra_gpu::cuda::{Arg, KernelRunner, check_kernels_with};

/// The emulated kernels' program, compiled once for this test binary, or
/// `None` (with a message) without a compiler.
fn build_runner() -> Option<PathBuf> {
    static RUNNER: OnceLock<Option<PathBuf>> = OnceLock::new();
    RUNNER.get_or_init(compile).clone()
}

fn compile() -> Option<PathBuf> {
    let compiler = std::env::var("CXX").unwrap_or_else(|_| "g++".into());
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels/emulation/runner.cpp");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sovra-kernel-emulation");
    let status = Command::new(&compiler)
        .args(["-std=c++20", "-O2", "-pthread", "-o"])
        .arg(&out)
        .arg(&source)
        .status();
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

/// The emulated kernels behind a pipe (the protocol is in runner.cpp).
struct Emulated {
    child: Child,
    input: BufWriter<ChildStdin>,
    output: BufReader<ChildStdout>,
}

impl Emulated {
    fn start(runner: &Path) -> Self {
        let mut child = Command::new(runner)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the emulated kernels");
        let input = BufWriter::new(child.stdin.take().unwrap());
        let output = BufReader::new(child.stdout.take().unwrap());
        Emulated {
            child,
            input,
            output,
        }
    }

    fn read_bytes(&mut self, n: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; n];
        self.output
            .read_exact(&mut bytes)
            .expect("the runner's reply");
        bytes
    }

    fn read_u64(&mut self) -> u64 {
        u64::from_le_bytes(self.read_bytes(8).try_into().unwrap())
    }
}

impl Drop for Emulated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn buffer_bytes(arg: &Arg) -> Option<(u8, Vec<u8>)> {
    Some(match arg {
        Arg::F32s(v) => (0, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        Arg::U16s(v) => (1, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        Arg::I32s(v) => (2, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        Arg::Bytes(v) => (3, v.clone()),
        _ => return None,
    })
}

impl KernelRunner for Emulated {
    fn launch(
        &mut self,
        kernel: &str,
        grid: (u32, u32),
        threads: u32,
        args: &mut [Arg],
    ) -> Result<(), String> {
        let mut request = Vec::new();
        request.extend((kernel.len() as u32).to_le_bytes());
        request.extend(kernel.as_bytes());
        for v in [grid.0, grid.1, threads, args.len() as u32] {
            request.extend(v.to_le_bytes());
        }
        for arg in args.iter() {
            match (arg, buffer_bytes(arg)) {
                (_, Some((kind, bytes))) => {
                    request.push(kind);
                    request.extend((bytes.len() as u64).to_le_bytes());
                    request.extend(bytes);
                }
                (Arg::I32(v), None) => {
                    request.push(4);
                    request.extend(v.to_le_bytes());
                }
                (Arg::I64(v), None) => {
                    request.push(5);
                    request.extend(v.to_le_bytes());
                }
                (Arg::U32(v), None) => {
                    request.push(6);
                    request.extend(v.to_le_bytes());
                }
                (Arg::F32(v), None) => {
                    request.push(7);
                    request.extend(v.to_le_bytes());
                }
                _ => unreachable!(),
            }
        }
        self.input.write_all(&request).map_err(|e| e.to_string())?;
        self.input.flush().map_err(|e| e.to_string())?;
        let status = self.read_bytes(1)[0];
        let refusal = if status == 0 {
            None
        } else {
            let n = u32::from_le_bytes(self.read_bytes(4).try_into().unwrap()) as usize;
            Some(String::from_utf8_lossy(&self.read_bytes(n)).into_owned())
        };
        for arg in args.iter_mut() {
            if buffer_bytes(arg).is_none() {
                continue;
            }
            let n = self.read_u64() as usize;
            let bytes = self.read_bytes(n);
            match arg {
                Arg::F32s(v) => {
                    for (x, b) in v.iter_mut().zip(bytes.chunks_exact(4)) {
                        *x = f32::from_le_bytes(b.try_into().unwrap());
                    }
                }
                Arg::U16s(v) => {
                    for (x, b) in v.iter_mut().zip(bytes.chunks_exact(2)) {
                        *x = u16::from_le_bytes(b.try_into().unwrap());
                    }
                }
                Arg::I32s(v) => {
                    for (x, b) in v.iter_mut().zip(bytes.chunks_exact(4)) {
                        *x = i32::from_le_bytes(b.try_into().unwrap());
                    }
                }
                Arg::Bytes(v) => *v = bytes,
                _ => {}
            }
        }
        refusal.map_or(Ok(()), Err)
    }
}

#[test]
fn every_kernel_matches_its_host_reference_on_the_emulated_gpu() {
    let Some(runner) = build_runner() else { return };
    let mut emulated = Emulated::start(&runner);
    let checks = check_kernels_with(&mut emulated);
    for check in &checks {
        eprintln!(
            "{:<40} error {:.2e} (tolerance {:.0e}) {}",
            check.kernel,
            check.error,
            check.tolerance,
            check.failure.as_deref().unwrap_or("")
        );
    }
    let wrong: Vec<_> = checks.iter().filter(|c| !c.passed()).collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn a_launch_with_the_wrong_arguments_is_refused_not_run() {
    let Some(runner) = build_runner() else { return };
    let mut emulated = Emulated::start(&runner);
    let mut args = [Arg::F32s(vec![1.0; 4]), Arg::I32(4)];
    let error = emulated
        .launch("rms_norm", (1, 1), 32, &mut args)
        .unwrap_err();
    assert!(error.contains("takes (ffhis)"), "{error}");
    assert_eq!(args[0], Arg::F32s(vec![1.0; 4]));
}
