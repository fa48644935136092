//! `wasi:nn` for guests written for it (the interface wasmtime-wasi-nn 48
//! implements), over sovra's tensor models.
//!
//! - `load-by-name` resolves only models on the tenant's allowlist, and only
//!   tensor models; names are the operator's model names.
//! - `load` (model bytes from the guest) is always refused with `security`:
//!   guests never hand the node weights to run.
//! - `compute` goes through the same path as `sovra:agent/inference`'s
//!   `run-tensor` ([`Sandbox::run_tensor_model`]): the same input checks,
//!   deadline, engine and audit of denials.
//!
//! Failures reach the guest as wasi-nn `error` resources (a code and a
//! message), decided from sovra's own error by [`crate::host::error::convert`],
//! so budgets still trap and denials are still audited.

use std::sync::Arc;

use sovra_gpu::{self as gpu, ModelKind, ModelService};
use wasmtime::component::Resource;

use crate::bindings::GuestError;
use crate::bindings::nn::wasi::nn::errors::{self, ErrorCode};
use crate::bindings::nn::wasi::nn::tensor::{self, TensorType};
use crate::bindings::nn::wasi::nn::{graph, inference};
use crate::host::HostError;
use crate::host::inference::checked_tensor;
use crate::host::wasi::HostCallResultLimitExceeded;
use crate::limits::MAX_NN_TENSOR_BYTES;
use crate::sandbox::Sandbox;

/// A tensor held by the host for the guest.
#[derive(Debug)]
pub struct NnTensor {
    dimensions: Vec<u32>,
    ty: TensorType,
    data: Vec<u8>,
}

/// A tensor model the guest loaded by name.
pub struct NnGraph {
    service: Arc<dyn ModelService>,
}

/// An execution context of a loaded model.
pub struct NnExecution {
    service: Arc<dyn ModelService>,
}

/// A wasi-nn error: its code and a message.
#[derive(Debug)]
pub struct NnError {
    code: ErrorCode,
    data: String,
}

impl std::fmt::Debug for NnGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NnGraph")
            .field("model", &self.service.descriptor().name)
            .finish()
    }
}

impl std::fmt::Debug for NnExecution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NnExecution")
            .field("model", &self.service.descriptor().name)
            .finish()
    }
}

/// What a wasi-nn call returns: its value, or an error resource.
type NnResult<T> = wasmtime::Result<Result<T, Resource<NnError>>>;

impl Sandbox {
    /// A wasi-nn error resource for the guest.
    fn nn_error<T>(&mut self, code: ErrorCode, data: impl Into<String>) -> NnResult<T> {
        let error = self.table.push(NnError {
            code,
            data: data.into(),
        })?;
        Ok(Err(error))
    }

    /// `error` as the guest sees it through wasi-nn (traps stay traps).
    fn nn_failure<T>(&mut self, error: HostError) -> NnResult<T> {
        let (code, message) = match crate::host::error::convert(self, error)? {
            GuestError::AccessDenied(m) => (ErrorCode::Security, format!("access denied: {m}")),
            GuestError::NotFound(m) => (ErrorCode::NotFound, m),
            GuestError::InvalidInput(m) => (ErrorCode::InvalidArgument, m),
            GuestError::QuotaExceeded(m) => (ErrorCode::Security, format!("quota exceeded: {m}")),
            GuestError::LimitExceeded(m) => (ErrorCode::TooLarge, format!("limit exceeded: {m}")),
            GuestError::Unavailable(m) => (ErrorCode::RuntimeError, format!("unavailable: {m}")),
            GuestError::Internal(m) => (ErrorCode::RuntimeError, m),
        };
        self.nn_error(code, message)
    }

    /// Counts `bytes` more tensor data held for the guest; traps past
    /// [`MAX_NN_TENSOR_BYTES`].
    fn hold_tensor_bytes(&mut self, call: &'static str, bytes: usize) -> wasmtime::Result<()> {
        let held = self.nn_tensor_bytes.saturating_add(bytes);
        if held > MAX_NN_TENSOR_BYTES {
            return Err(wasmtime::Error::new(HostCallResultLimitExceeded {
                call,
                requested: held as u64,
                limit: MAX_NN_TENSOR_BYTES as u64,
            }));
        }
        self.nn_tensor_bytes = held;
        Ok(())
    }

    fn push_tensor(
        &mut self,
        call: &'static str,
        tensor: NnTensor,
    ) -> wasmtime::Result<Resource<NnTensor>> {
        self.hold_tensor_bytes(call, tensor.data.len())?;
        Ok(self.table.push(tensor)?)
    }

    fn take_tensor(&mut self, handle: Resource<NnTensor>) -> wasmtime::Result<NnTensor> {
        let tensor = self.table.delete(handle)?;
        self.nn_tensor_bytes -= tensor.data.len();
        Ok(tensor)
    }
}

fn engine_type(ty: TensorType) -> Option<gpu::TensorType> {
    Some(match ty {
        TensorType::Fp32 => gpu::TensorType::F32,
        TensorType::Fp16 => gpu::TensorType::F16,
        TensorType::Bf16 => gpu::TensorType::Bf16,
        TensorType::U8 => gpu::TensorType::U8,
        TensorType::I32 => gpu::TensorType::I32,
        TensorType::I64 => gpu::TensorType::I64,
        TensorType::Fp64 => return None,
    })
}

fn nn_type(ty: gpu::TensorType) -> TensorType {
    match ty {
        gpu::TensorType::F32 => TensorType::Fp32,
        gpu::TensorType::F16 => TensorType::Fp16,
        gpu::TensorType::Bf16 => TensorType::Bf16,
        gpu::TensorType::U8 => TensorType::U8,
        gpu::TensorType::I32 => TensorType::I32,
        gpu::TensorType::I64 => TensorType::I64,
    }
}

impl tensor::Host for Sandbox {}

impl tensor::HostTensor for Sandbox {
    async fn new(
        &mut self,
        dimensions: Vec<u32>,
        ty: TensorType,
        data: Vec<u8>,
    ) -> wasmtime::Result<Resource<NnTensor>> {
        self.charge_host_call()?;
        self.push_tensor(
            "wasi:nn/tensor.constructor",
            NnTensor {
                dimensions,
                ty,
                data,
            },
        )
    }

    async fn dimensions(&mut self, tensor: Resource<NnTensor>) -> wasmtime::Result<Vec<u32>> {
        self.charge_host_call()?;
        Ok(self.table.get(&tensor)?.dimensions.clone())
    }

    async fn ty(&mut self, tensor: Resource<NnTensor>) -> wasmtime::Result<TensorType> {
        self.charge_host_call()?;
        Ok(self.table.get(&tensor)?.ty)
    }

    async fn data(&mut self, tensor: Resource<NnTensor>) -> wasmtime::Result<Vec<u8>> {
        self.charge_host_call()?;
        Ok(self.table.get(&tensor)?.data.clone())
    }

    async fn drop(&mut self, tensor: Resource<NnTensor>) -> wasmtime::Result<()> {
        self.take_tensor(tensor)?;
        Ok(())
    }
}

impl graph::Host for Sandbox {
    async fn load(
        &mut self,
        builder: Vec<Vec<u8>>,
        _encoding: graph::GraphEncoding,
        _target: graph::ExecutionTarget,
    ) -> NnResult<Resource<NnGraph>> {
        self.charge_host_call()?;
        drop(builder);
        self.denials
            .push("wasi:nn load of guest-supplied model bytes".into());
        self.nn_error(
            ErrorCode::Security,
            "sovra runs only the operator's models: name one the tenant allows with load-by-name",
        )
    }

    async fn load_by_name(&mut self, name: String) -> NnResult<Resource<NnGraph>> {
        self.charge_host_call()?;
        let service = match self.allowed_model(&name) {
            Ok(service) => service,
            Err(error) => return self.nn_failure(error),
        };
        let kind = service.descriptor().kind;
        if kind != ModelKind::Tensor {
            return self.nn_error(
                ErrorCode::UnsupportedOperation,
                format!("`{name}` is a {kind:?} model; wasi:nn runs tensor models"),
            );
        }
        Ok(Ok(self.table.push(NnGraph { service })?))
    }
}

impl graph::HostGraph for Sandbox {
    async fn init_execution_context(
        &mut self,
        graph: Resource<NnGraph>,
    ) -> NnResult<Resource<NnExecution>> {
        self.charge_host_call()?;
        let service = Arc::clone(&self.table.get(&graph)?.service);
        Ok(Ok(self.table.push(NnExecution { service })?))
    }

    async fn drop(&mut self, graph: Resource<NnGraph>) -> wasmtime::Result<()> {
        self.table.delete(graph)?;
        Ok(())
    }
}

impl inference::Host for Sandbox {}

impl inference::HostGraphExecutionContext for Sandbox {
    async fn compute(
        &mut self,
        execution: Resource<NnExecution>,
        inputs: Vec<(String, Resource<NnTensor>)>,
    ) -> NnResult<Vec<(String, Resource<NnTensor>)>> {
        self.charge_host_call()?;
        let service = Arc::clone(&self.table.get(&execution)?.service);
        // The input tensors are the guest's to give: owned handles, taken.
        let mut engine_inputs = Vec::with_capacity(inputs.len());
        for (name, handle) in inputs {
            let tensor = self.take_tensor(handle)?;
            let Some(element_type) = engine_type(tensor.ty) else {
                return self.nn_error(
                    ErrorCode::InvalidArgument,
                    format!("tensor `{name}` is FP64, which no sovra model takes"),
                );
            };
            let checked = checked_tensor(gpu::NamedTensor {
                name,
                shape: tensor.dimensions,
                element_type,
                data: tensor.data,
            });
            match checked {
                Ok(tensor) => engine_inputs.push(tensor),
                Err(message) => return self.nn_error(ErrorCode::InvalidArgument, message),
            }
        }
        let outputs = match self.run_tensor_model(service, engine_inputs).await {
            Ok(outputs) => outputs,
            Err(error) => return self.nn_failure(error),
        };
        let mut named = Vec::with_capacity(outputs.len());
        for output in outputs {
            let tensor = NnTensor {
                dimensions: output.shape,
                ty: nn_type(output.element_type),
                data: output.data,
            };
            named.push((output.name, self.push_tensor("wasi:nn compute", tensor)?));
        }
        Ok(Ok(named))
    }

    async fn drop(&mut self, execution: Resource<NnExecution>) -> wasmtime::Result<()> {
        self.table.delete(execution)?;
        Ok(())
    }
}

impl errors::Host for Sandbox {}

impl errors::HostError for Sandbox {
    async fn code(&mut self, error: Resource<NnError>) -> wasmtime::Result<ErrorCode> {
        self.charge_host_call()?;
        Ok(self.table.get(&error)?.code)
    }

    async fn data(&mut self, error: Resource<NnError>) -> wasmtime::Result<String> {
        self.charge_host_call()?;
        Ok(self.table.get(&error)?.data.clone())
    }

    async fn drop(&mut self, error: Resource<NnError>) -> wasmtime::Result<()> {
        self.table.delete(error)?;
        Ok(())
    }
}
