//! What the backend needs from a GPU, as one small trait ([`Gpu`]): device
//! memory by address, kernel launches by name with addresses and scalars
//! as arguments, the half-precision product, synchronization, and graph
//! capture.
//!
//! [`CudaGpu`] is the real one (cudarc: the driver, NVRTC and cuBLAS). The
//! tests of `sovra-gpu-check` implement it with the kernels compiled for the
//! CPU (`gpu-check/tests/emulated/`, `gpu-check/kernels/emulation/`), so the backend's own code (every launch's
//! arguments, the workspace, passes, padding, graphs) runs in CI against the
//! CPU model; only this file's calls into CUDA need a real device.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use cudarc::cublas::{CudaBlas, result as blas, sys as blas_sys};
use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaGraph, CudaSlice, CudaStream, DevicePtr, LaunchConfig,
    PushKernelArg, result as driver,
};
use cudarc::nvrtc::Ptx;

use super::backend::CudaLoadError;
use super::kernels::{self, Half, KERNELS};

/// A failed device call, in words.
pub type GpuError = String;

/// Bytes of workspace cuBLAS gets up front (NVIDIA's figure for Hopper),
/// so that it never allocates inside a captured CUDA graph.
const CUBLAS_WORKSPACE_BYTES: usize = 32 << 20;

/// An argument of a kernel launch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Karg {
    /// A device address (a buffer, or a place inside one).
    Address(u64),
    I32(i32),
    I64(i64),
    U32(u32),
    F32(f32),
}

/// A GPU the backend can run on.
pub trait Gpu: Send + Sync + 'static {
    /// Keeps an allocation alive; dropping it frees the memory.
    type Memory: Send + Sync;
    /// A captured sequence of launches.
    type Graph: Send;

    /// The device, as operators name it (`cuda:0`).
    fn name(&self) -> String;

    /// The 16-bit float its kernels write for the products, and the
    /// products read.
    fn half(&self) -> Half;

    /// `bytes` of zeroed device memory and its address.
    fn alloc(&self, bytes: usize) -> Result<(u64, Self::Memory), GpuError>;

    /// Copies `bytes` to device address `address` (in stream order).
    fn write(&self, address: u64, bytes: &[u8]) -> Result<(), GpuError>;

    /// Copies `out.len()` bytes from device address `address`, after every
    /// launch before it has finished.
    fn read(&self, address: u64, out: &mut [u8]) -> Result<(), GpuError>;

    /// Launches `kernel` on `grid.0 × grid.1` blocks of `threads` threads.
    /// `args` must match the kernel's parameters; the caller guarantees that
    /// every address points into memory large enough for what the kernel
    /// touches there.
    fn launch(
        &self,
        kernel: &str,
        grid: (u32, u32),
        threads: u32,
        args: &[Karg],
    ) -> Result<(), GpuError>;

    /// `y[n × rows] = x[n × cols] · wᵀ` (or `y +=` it when `accumulate`): `w`
    /// row-major halves `rows × cols`, `x` halves, `y` f32, f32 accumulation.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        w: u64,
        rows: usize,
        cols: usize,
        x: u64,
        n: usize,
        y: u64,
        accumulate: bool,
    ) -> Result<(), GpuError>;

    /// Waits for everything launched so far.
    fn synchronize(&self) -> Result<(), GpuError>;

    /// Records instead of running every launch and product that follows,
    /// until [`Gpu::end_capture`].
    fn begin_capture(&self) -> Result<(), GpuError>;

    /// The recorded graph; the device runs launches again.
    fn end_capture(&self) -> Result<Self::Graph, GpuError>;

    /// Runs a recorded graph.
    fn replay(&self, graph: &Self::Graph) -> Result<(), GpuError>;
}

/// Values a device buffer may hold.
pub trait Element: Copy + Default + 'static {
    fn to_bytes(values: &[Self]) -> Vec<u8>;
    fn from_bytes(bytes: &[u8]) -> Vec<Self>;
}

macro_rules! element {
    ($t:ty) => {
        impl Element for $t {
            fn to_bytes(values: &[Self]) -> Vec<u8> {
                values.iter().flat_map(|v| v.to_le_bytes()).collect()
            }
            fn from_bytes(bytes: &[u8]) -> Vec<Self> {
                bytes
                    .chunks_exact(std::mem::size_of::<$t>())
                    .map(|b| <$t>::from_le_bytes(b.try_into().expect("whole elements")))
                    .collect()
            }
        }
    };
}

element!(f32);
element!(u16);
element!(i32);
element!(u8);

/// `len` values of `T` in device memory.
pub struct Buffer<T, G: Gpu> {
    address: u64,
    len: usize,
    _memory: G::Memory,
    _values: PhantomData<T>,
}

impl<T, G: Gpu> std::fmt::Debug for Buffer<T, G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffer")
            .field("address", &format_args!("{:#x}", self.address))
            .field("len", &self.len)
            .finish()
    }
}

impl<T: Element, G: Gpu> Buffer<T, G> {
    /// `len` zeros (at least one element, so that every buffer has an address).
    pub fn zeros(gpu: &G, len: usize) -> Result<Self, GpuError> {
        let (address, memory) = gpu.alloc(len.max(1) * std::mem::size_of::<T>())?;
        Ok(Buffer {
            address,
            len,
            _memory: memory,
            _values: PhantomData,
        })
    }

    /// A buffer holding `values`.
    pub fn from_host(gpu: &G, values: &[T]) -> Result<Self, GpuError> {
        let buffer = Self::zeros(gpu, values.len())?;
        buffer.write(gpu, 0, values)?;
        Ok(buffer)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The argument naming this buffer from element `offset` on.
    pub fn at(&self, offset: usize) -> Karg {
        assert!(
            offset <= self.len,
            "offset {offset} past {} elements",
            self.len
        );
        Karg::Address(self.address + (offset * std::mem::size_of::<T>()) as u64)
    }

    /// The argument naming the whole buffer.
    pub fn arg(&self) -> Karg {
        self.at(0)
    }

    /// The device address of element `offset`.
    pub fn address(&self, offset: usize) -> u64 {
        assert!(offset <= self.len);
        self.address + (offset * std::mem::size_of::<T>()) as u64
    }

    /// Writes `values` from element `offset` on.
    pub fn write(&self, gpu: &G, offset: usize, values: &[T]) -> Result<(), GpuError> {
        assert!(
            offset + values.len() <= self.len,
            "{} values at {offset} past {} elements",
            values.len(),
            self.len
        );
        if values.is_empty() {
            return Ok(());
        }
        gpu.write(self.address(offset), &T::to_bytes(values))
    }

    /// Elements `range`.
    pub fn read(&self, gpu: &G, range: std::ops::Range<usize>) -> Result<Vec<T>, GpuError> {
        assert!(
            range.end <= self.len,
            "{range:?} past {} elements",
            self.len
        );
        let mut bytes = vec![0u8; range.len() * std::mem::size_of::<T>()];
        if !bytes.is_empty() {
            gpu.read(self.address(range.start), &mut bytes)?;
        }
        Ok(T::from_bytes(&bytes))
    }
}

fn cuda_error(e: impl std::fmt::Debug) -> GpuError {
    format!("{e:?}")
}

/// A CUDA device through cudarc: one non-blocking stream for all work, a
/// cuBLAS handle with its workspace, and the kernels compiled by NVRTC for
/// the device's architecture.
pub struct CudaGpu {
    ordinal: usize,
    half: Half,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    functions: HashMap<&'static str, CudaFunction>,
    /// Kept alive for cuBLAS, which was handed its address.
    _blas_workspace: CudaSlice<u8>,
}

impl std::fmt::Debug for CudaGpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaGpu")
            .field("ordinal", &self.ordinal)
            .finish_non_exhaustive()
    }
}

/// A captured CUDA graph.
pub struct CudaGraphHandle(CudaGraph);

impl std::fmt::Debug for CudaGraphHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CudaGraphHandle")
    }
}

// SAFETY: a CUDA graph may be launched from any thread as long as calls on
// it are serialized; the backend keeps it under its step lock.
unsafe impl Send for CudaGraphHandle {}

impl CudaGpu {
    /// Opens device `ordinal` and loads the kernels, products on `half`.
    pub fn open(ordinal: usize, half: Half) -> Result<Self, CudaLoadError> {
        let cuda = |e: cudarc::driver::DriverError| CudaLoadError::Cuda(format!("{e:?}"));
        let context = CudaContext::new(ordinal).map_err(cuda)?;
        // One stream does all the work, in order, so cudarc's cross-stream
        // events are not needed; without them nothing but kernels and
        // copies reaches the stream, which graph capture requires.
        // SAFETY: called before any allocation, and only `stream` is used,
        // so no buffer is ever used on two streams.
        unsafe { context.disable_event_tracking() };
        let (major, minor) = context.compute_capability().map_err(cuda)?;
        let compiled = kernels::compiled(&format!("sm_{major}{minor}"), half)?;
        let image = if compiled.cubin.is_empty() {
            Ptx::from_src(compiled.ptx.clone())
        } else {
            Ptx::from_binary(compiled.cubin.clone())
        };
        let module = context.load_module(image).map_err(cuda)?;
        let mut functions = HashMap::new();
        for &name in KERNELS {
            functions.insert(name, module.load_function(name).map_err(cuda)?);
        }
        let stream = context.new_stream().map_err(cuda)?;
        let blas = CudaBlas::new(Arc::clone(&stream))
            .map_err(|e| CudaLoadError::Cuda(format!("{e:?}")))?;
        let workspace = stream
            .alloc_zeros::<u8>(CUBLAS_WORKSPACE_BYTES)
            .map_err(cuda)?;
        {
            let (pointer, _guard) = workspace.device_ptr(&stream);
            // SAFETY: the handle is live; the workspace is a field of the
            // same struct and is dropped after the handle.
            let status = unsafe {
                blas_sys::cublasSetWorkspace_v2(
                    *blas.handle(),
                    pointer as *mut _,
                    CUBLAS_WORKSPACE_BYTES,
                )
            };
            if status != blas_sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
                return Err(CudaLoadError::Cuda(format!(
                    "cublasSetWorkspace: {status:?}"
                )));
            }
        }
        Ok(CudaGpu {
            ordinal,
            half,
            stream,
            blas,
            functions,
            _blas_workspace: workspace,
        })
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Ends a capture that failed half-way, if the stream is still in one,
    /// so that the device runs launches again (what it recorded is dropped).
    fn abandon_capture(&self) {
        use cudarc::driver::sys::CUstreamCaptureStatus as Status;
        let stream = self.stream.cu_stream();
        // SAFETY: the stream is live; a graph ended here is destroyed once.
        unsafe {
            if matches!(
                driver::stream::is_capturing(stream),
                Ok(Status::CU_STREAM_CAPTURE_STATUS_ACTIVE
                    | Status::CU_STREAM_CAPTURE_STATUS_INVALIDATED)
            ) && let Ok(graph) = driver::stream::end_capture(stream)
                && !graph.is_null()
            {
                let _ = driver::graph::destroy(graph);
            }
        }
    }
}

impl Gpu for CudaGpu {
    type Memory = CudaSlice<u8>;
    type Graph = CudaGraphHandle;

    fn name(&self) -> String {
        format!("cuda:{}", self.ordinal)
    }

    fn half(&self) -> Half {
        self.half
    }

    fn alloc(&self, bytes: usize) -> Result<(u64, CudaSlice<u8>), GpuError> {
        let memory = self.stream.alloc_zeros::<u8>(bytes).map_err(cuda_error)?;
        let address = memory.device_ptr(&self.stream).0;
        Ok((address, memory))
    }

    fn write(&self, address: u64, bytes: &[u8]) -> Result<(), GpuError> {
        self.stream.context().bind_to_thread().map_err(cuda_error)?;
        // SAFETY: `address` points into a live allocation with room for
        // `bytes` (checked by `Buffer::write`); a copy from pageable memory
        // has taken the bytes when it returns.
        unsafe { driver::memcpy_htod_async(address, bytes, self.stream.cu_stream()) }
            .map_err(cuda_error)
    }

    fn read(&self, address: u64, out: &mut [u8]) -> Result<(), GpuError> {
        self.stream.context().bind_to_thread().map_err(cuda_error)?;
        // SAFETY: as for `write`; the stream is synchronized before `out`
        // is read.
        unsafe { driver::memcpy_dtoh_async(out, address, self.stream.cu_stream()) }
            .map_err(cuda_error)?;
        self.stream.synchronize().map_err(cuda_error)
    }

    fn launch(
        &self,
        kernel: &str,
        grid: (u32, u32),
        threads: u32,
        args: &[Karg],
    ) -> Result<(), GpuError> {
        let function = self
            .functions
            .get(kernel)
            .ok_or_else(|| format!("no kernel `{kernel}`"))?;
        let mut launch = self.stream.launch_builder(function);
        for arg in args {
            match arg {
                Karg::Address(a) => launch.arg(a),
                Karg::I32(v) => launch.arg(v),
                Karg::I64(v) => launch.arg(v),
                Karg::U32(v) => launch.arg(v),
                Karg::F32(v) => launch.arg(v),
            };
        }
        if grid.0 == 0 || grid.1 == 0 {
            return Err(format!("`{kernel}` launched on an empty grid"));
        }
        let config = LaunchConfig {
            grid_dim: (grid.0, grid.1, 1),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments match the kernel (the emulated tests check
        // every call site against the kernels' signatures) and address
        // memory sized by the caller for the grid.
        unsafe { launch.launch(config) }
            .map(|_| ())
            .map_err(cuda_error)
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
        // cuBLAS runs on the thread's current context.
        self.stream.context().bind_to_thread().map_err(cuda_error)?;
        let (alpha, beta) = (1.0f32, if accumulate { 1.0f32 } else { 0.0 });
        let half = match self.half {
            Half::F16 => blas_sys::cudaDataType_t::CUDA_R_16F,
            Half::Bf16 => blas_sys::cudaDataType_t::CUDA_R_16BF,
        };
        // Row-major W (rows × cols) is column-major Wᵀ; the product in
        // column-major terms is Y (rows × n) = Wᵀᵀ · X.
        // SAFETY: the addresses hold rows·cols, n·cols and n·rows elements.
        unsafe {
            blas::gemm_ex(
                *self.blas.handle(),
                blas_sys::cublasOperation_t::CUBLAS_OP_T,
                blas_sys::cublasOperation_t::CUBLAS_OP_N,
                rows as i32,
                n as i32,
                cols as i32,
                (&alpha) as *const f32 as *const _,
                w as *const _,
                half,
                cols as i32,
                x as *const _,
                half,
                cols as i32,
                (&beta) as *const f32 as *const _,
                y as *mut _,
                blas_sys::cudaDataType_t::CUDA_R_32F,
                rows as i32,
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(cuda_error)
    }

    fn synchronize(&self) -> Result<(), GpuError> {
        self.stream.synchronize().map_err(cuda_error)
    }

    fn begin_capture(&self) -> Result<(), GpuError> {
        // An error an earlier drop left on the context would surface inside
        // the capture and be taken for a capture failure: report it apart.
        if let Err(e) = self.stream.context().check_err() {
            tracing::warn!(error = ?e, "a deferred CUDA error from an earlier release");
        }
        // Thread-local: a call on this thread that cannot be captured (a
        // synchronization, a synchronous copy) fails instead of running.
        self.stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(cuda_error)
    }

    fn end_capture(&self) -> Result<CudaGraphHandle, GpuError> {
        // cudarc's end_capture first reports any deferred error, and then
        // would not end the capture; report it apart so that it does.
        if let Err(e) = self.stream.context().check_err() {
            tracing::warn!(error = ?e, "a deferred CUDA error from an earlier release");
        }
        let ended = self.stream.end_capture(CUgraphInstantiate_flags(0));
        if ended.is_err() {
            self.abandon_capture();
        }
        let graph = ended
            .map_err(cuda_error)?
            .ok_or_else(|| "the capture recorded nothing".to_owned())?;
        // Set up its resources now rather than in the first replay.
        graph.upload().map_err(cuda_error)?;
        Ok(CudaGraphHandle(graph))
    }

    fn replay(&self, graph: &CudaGraphHandle) -> Result<(), GpuError> {
        graph.0.launch().map_err(cuda_error)
    }
}
