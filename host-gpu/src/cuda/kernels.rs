//! The CUDA C kernels (`host-gpu/kernels/llama.cu`) and their compilation
//! with NVRTC for one architecture, once per architecture and half per
//! process ([`compiled`]; every model loaded onto a GPU shares it). NVRTC
//! runs without a GPU, so CI compiles every kernel for `sm_90`
//! (`gpu-check/tests/cuda.rs`) and fails on any error or warning; CI also
//! runs them on the CPU (`gpu-check/kernels/emulation/`,
//! `gpu-check/tests/kernel_emulation.rs`).

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::sync::{Arc, Mutex, OnceLock};

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
    "dequant_bf16",
    "fill_random_half",
    "embed",
    "rms_norm",
    "rms_norm_rows",
    "add_bias",
    "rope",
    "kv_write",
    "attention",
    "silu_mul",
    "argmax_rows",
];

/// The compiled kernels and what NVRTC said while making them.
#[derive(Debug, Clone)]
pub struct CompiledKernels {
    /// PTX (checked for every kernel's entry point).
    pub ptx: String,
    /// Machine code for exactly the target architecture, which the driver
    /// loads without compiling PTX again (so a driver older than NVRTC
    /// still loads it).
    pub cubin: Vec<u8>,
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

/// The 16-bit float the matrix products read (weights and the activations
/// that feed a product).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Half {
    /// IEEE half: ten bits of mantissa, largest value 65504.
    F16,
    /// bfloat16: seven bits of mantissa, f32's range.
    Bf16,
}

impl Half {
    pub fn name(self) -> &'static str {
        match self {
            Half::F16 => "f16",
            Half::Bf16 => "bf16",
        }
    }
}

/// [`SOURCE`] compiled for `arch` and `half`, from this process's cache
/// when an earlier load compiled it (NVRTC takes a second or two; a node
/// loads several models). A failure is not cached, so it is reported again.
pub fn compiled(arch: &str, half: Half) -> Result<Arc<CompiledKernels>, KernelError> {
    type Cache = Mutex<HashMap<(String, Half), Arc<CompiledKernels>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Mutex::default);
    let lock = || cache.lock().unwrap_or_else(|p| p.into_inner());
    let key = (arch.to_owned(), half);
    if let Some(kernels) = lock().get(&key) {
        return Ok(Arc::clone(kernels));
    }
    let kernels = Arc::new(compile(arch, half)?);
    lock().insert(key, Arc::clone(&kernels));
    Ok(kernels)
}

/// Compiles [`SOURCE`] for `arch` (such as `sm_90`) with products on `half`.
pub fn compile(arch: &str, half: Half) -> Result<CompiledKernels, KernelError> {
    // SAFETY: only opens the library by name.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(KernelError::NoNvrtc);
    }
    let nvrtc = |e: result::NvrtcError| KernelError::Nvrtc(format!("{e:?}"));
    let source = CString::new(SOURCE).expect("the source has no NUL");
    let name = CString::new("llama.cu").expect("no NUL");
    let program = result::create_program(&source, Some(&name)).map_err(nvrtc)?;
    // Fast division and flush-to-zero, but accurate sin/cos (RoPE angles
    // grow with the position); the kernels call __expf where they want it.
    let mut options = vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++17".to_owned(),
        "--ftz=true".to_owned(),
        "--prec-div=false".to_owned(),
        "--fmad=true".to_owned(),
    ];
    if half == Half::Bf16 {
        options.push("-DSOVRA_HALF_BF16".to_owned());
    }
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
        Ok(()) => unsafe { result::get_ptx(program) }
            .map(text)
            .map_err(nvrtc)
            .and_then(|ptx| Ok((ptx, cubin(program)?))),
    };
    // SAFETY: destroyed once, after its last use.
    let _ = unsafe { result::destroy_program(program) };
    let (ptx, cubin) = outcome?;
    for kernel in KERNELS {
        if !ptx.contains(&format!(".entry {kernel}(")) {
            return Err(KernelError::Missing(kernel));
        }
    }
    Ok(CompiledKernels { ptx, cubin, log })
}

/// The machine code of a compiled program (empty when NVRTC made none,
/// as for a virtual `compute_XX` target).
fn cubin(program: cudarc::nvrtc::sys::nvrtcProgram) -> Result<Vec<u8>, KernelError> {
    use cudarc::nvrtc::sys;
    let check = |r: sys::nvrtcResult| match r {
        sys::nvrtcResult::NVRTC_SUCCESS => Ok(()),
        other => Err(KernelError::Nvrtc(format!("{other:?}"))),
    };
    let mut size = 0usize;
    // SAFETY: `program` compiled; `size` is a valid out pointer.
    check(unsafe { sys::nvrtcGetCUBINSize(program, &mut size) })?;
    let mut bytes = vec![0u8; size];
    if size > 0 {
        // SAFETY: `bytes` holds the `size` bytes NVRTC said it needs.
        check(unsafe { sys::nvrtcGetCUBIN(program, bytes.as_mut_ptr().cast()) })?;
    }
    Ok(bytes)
}
