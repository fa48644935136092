//! The CUDA C kernels (`host-gpu/kernels/llama.cu`) and their compilation
//! with NVRTC for one architecture. NVRTC runs without a GPU, so CI compiles
//! every kernel for `sm_90` (the `nvrtc` test) and fails on any error or
//! warning.

use std::ffi::{CStr, CString};

use cudarc::nvrtc::result;

/// The kernels' source.
pub const SOURCE: &str = include_str!("../../kernels/llama.cu");

/// Every kernel the backend launches (each must be in the compiled code).
pub const KERNELS: &[&str] = &[
    "dequant_f32",
    "dequant_f16",
    "dequant_q8_0",
    "dequant_q4_0",
    "dequant_q4_1",
    "dequant_q4_k",
    "dequant_q6_k",
    "fill_random_bf16",
    "embed",
    "rms_norm",
    "rms_norm_f32",
    "add_bias",
    "rope",
    "kv_write",
    "attention",
    "silu_mul",
    "add_into",
    "gather_rows",
    "to_bf16",
];

/// PTX and what NVRTC said while making it.
#[derive(Debug, Clone)]
pub struct CompiledKernels {
    pub ptx: String,
    /// NVRTC's log (warnings), empty when it had nothing to say.
    pub log: String,
}

/// Why the kernels did not compile.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KernelError {
    #[error("NVRTC (libnvrtc.so) was not found; put it on LD_LIBRARY_PATH")]
    NoNvrtc,
    #[error("NVRTC failed: {0}")]
    Nvrtc(String),
    #[error("the kernels do not compile for {arch}:\n{log}")]
    Compile { arch: String, log: String },
    #[error("the compiled code lacks kernel `{0}`")]
    Missing(&'static str),
}

fn text(raw: Vec<std::os::raw::c_char>) -> String {
    // SAFETY: NVRTC returns NUL-terminated strings.
    unsafe { CStr::from_ptr(raw.as_ptr()) }
        .to_string_lossy()
        .trim()
        .to_owned()
}

/// Compiles [`SOURCE`] for `arch` (such as `sm_90`).
pub fn compile(arch: &str) -> Result<CompiledKernels, KernelError> {
    // SAFETY: only opens the library by name.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(KernelError::NoNvrtc);
    }
    let nvrtc = |e: result::NvrtcError| KernelError::Nvrtc(format!("{e:?}"));
    let source = CString::new(SOURCE).expect("the source has no NUL");
    let name = CString::new("llama.cu").expect("no NUL");
    let program = result::create_program(&source, Some(&name)).map_err(nvrtc)?;
    let options = [
        format!("--gpu-architecture={arch}"),
        "--std=c++17".to_owned(),
        "--use_fast_math".to_owned(),
    ];
    // SAFETY: `program` is a live program; the options are valid strings.
    let compiled = unsafe { result::compile_program(program, &options) };
    // SAFETY: as above; the log exists after a compile, failed or not.
    let log = unsafe { result::get_program_log(program) }
        .map(text)
        .unwrap_or_default();
    let outcome = match compiled {
        Err(_) => Err(KernelError::Compile {
            arch: arch.to_owned(),
            log: log.clone(),
        }),
        // SAFETY: the program compiled.
        Ok(()) => unsafe { result::get_ptx(program) }.map(text).map_err(nvrtc),
    };
    // SAFETY: destroyed once, after its last use.
    let _ = unsafe { result::destroy_program(program) };
    let ptx = outcome?;
    for kernel in KERNELS {
        if !ptx.contains(&format!(".entry {kernel}(")) {
            return Err(KernelError::Missing(kernel));
        }
    }
    Ok(CompiledKernels { ptx, log })
}
