//! Tensor models: ONNX graphs loaded with tract, optimized once at load and
//! shared by every tenant allowed them (a perception model, a controller's
//! policy network). Each call's tensors are checked against the model's
//! inputs (names, element types, shapes, byte lengths) before anything
//! runs, so a guest's mistake is `invalid-input` naming the tensor, never a
//! failure deep inside the graph.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tract_onnx::prelude::{
    DatumType, Framework, InferenceModelExt, IntoTValue, TVec, Tensor, TractResult,
    TypedRunnableModel, tvec,
};

use super::LoadError;
use crate::service::{ModelService, RequestContext};
use crate::{InferenceError, ModelDescriptor, ModelKind, NamedTensor, TensorSpec, TensorType};

/// Bytes of an ONNX file.
/// Stops: a models file pointing the host at a huge file it would read whole.
pub const MAX_TENSOR_MODEL_BYTES: u64 = 256 << 20;

/// Elements of one tensor a call passes (a dimension of any size, like a
/// batch, is bounded by this).
/// Stops: a call whose small input makes the graph's activations huge.
pub const MAX_TENSOR_ELEMENTS: usize = 4 << 20;

/// Time a call may be expected to take and still run on the caller's own
/// thread (the caller's execution slot is held meanwhile, as for the
/// guest's own code). Handing a call to a worker thread costs tens of
/// microseconds, more than a small model's whole run.
pub const QUICK_RUN_BUDGET: Duration = Duration::from_micros(200);

/// A loaded tensor model.
pub struct TensorEngine {
    descriptor: ModelDescriptor,
    plan: Arc<TypedRunnableModel>,
    /// Measured at load: one run with every dimension of any size at 1,
    /// and the elements its inputs held.
    unit_run: (Duration, usize),
}

impl std::fmt::Debug for TensorEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorEngine")
            .field("descriptor", &self.descriptor)
            .finish_non_exhaustive()
    }
}

impl TensorEngine {
    /// Loads and optimizes the ONNX model at `path`.
    pub fn load(name: &str, path: &Path) -> Result<Self, LoadError> {
        let onnx = |error: String| LoadError::Onnx {
            path: path.display().to_string(),
            error,
        };
        let size = std::fs::metadata(path)
            .map_err(|e| onnx(e.to_string()))?
            .len();
        if size > MAX_TENSOR_MODEL_BYTES {
            return Err(onnx(format!(
                "{size} bytes; a tensor model may be at most {MAX_TENSOR_MODEL_BYTES}"
            )));
        }
        let model = tract_onnx::onnx()
            .model_for_path(path)
            .and_then(|m| m.into_optimized())
            .map_err(|e| onnx(format!("{e:#}")))?;
        let specs =
            |outlets: &[tract_onnx::prelude::OutletId]| -> Result<Vec<TensorSpec>, LoadError> {
                outlets
                    .iter()
                    .map(|&outlet| {
                        let fact = model.outlet_fact(outlet).map_err(|e| onnx(e.to_string()))?;
                        let name = model.node(outlet.node).name.clone();
                        let element_type = tensor_type(fact.datum_type).ok_or_else(|| {
                            onnx(format!(
                                "tensor `{name}` is of type {:?}, which sovra does not carry",
                                fact.datum_type
                            ))
                        })?;
                        let shape = fact
                            .shape
                            .iter()
                            .map(|dim| dim.to_i64().ok().and_then(|d| u32::try_from(d).ok()))
                            .collect();
                        Ok(TensorSpec {
                            name,
                            element_type,
                            shape,
                        })
                    })
                    .collect()
            };
        let mut descriptor = ModelDescriptor::new(name, ModelKind::Tensor, 0, 0);
        descriptor.inputs = specs(model.input_outlets().map_err(|e| onnx(e.to_string()))?)?;
        descriptor.outputs = specs(model.output_outlets().map_err(|e| onnx(e.to_string()))?)?;
        let plan = tract_onnx::prelude::IntoRunnable::into_runnable(model)
            .map_err(|e| onnx(format!("{e:#}")))?;
        let mut engine = TensorEngine {
            descriptor,
            plan,
            unit_run: (Duration::MAX, 1),
        };
        engine.unit_run = engine.time_unit_run();
        Ok(engine)
    }

    /// The fastest of a few runs on zeros with every dimension of any size
    /// at 1, and the elements of those inputs; `Duration::MAX` when such a
    /// run fails (its calls then always go to a worker).
    fn time_unit_run(&self) -> (Duration, usize) {
        let inputs: Vec<NamedTensor> = self
            .descriptor
            .inputs
            .iter()
            .map(|spec| {
                let shape: Vec<u32> = spec.shape.iter().map(|d| d.unwrap_or(1)).collect();
                let elements: usize = shape.iter().map(|&d| d as usize).product();
                NamedTensor {
                    name: spec.name.clone(),
                    shape,
                    element_type: spec.element_type,
                    data: vec![0; elements * spec.element_type.size()],
                }
            })
            .collect();
        let elements = inputs
            .iter()
            .map(NamedTensor::elements)
            .sum::<usize>()
            .max(1);
        let context = RequestContext {
            tenant: String::new(),
            deadline: None,
        };
        let mut fastest = Duration::MAX;
        for _ in 0..3 {
            let started = Instant::now();
            if self.run_tensor(&context, inputs.clone()).is_err() {
                return (Duration::MAX, elements);
            }
            fastest = fastest.min(started.elapsed());
        }
        (fastest, elements)
    }

    /// `inputs` as tract tensors in the model's input order, or the error
    /// naming the first that does not match the model.
    fn check(&self, mut inputs: Vec<NamedTensor>) -> Result<TVec<Tensor>, InferenceError> {
        let invalid = |what: String| InferenceError::InvalidInput(what);
        if inputs.len() != self.descriptor.inputs.len() {
            return Err(invalid(format!(
                "model `{}` takes {} input tensors ({}); {} were given",
                self.descriptor.name,
                self.descriptor.inputs.len(),
                names(&self.descriptor.inputs),
                inputs.len()
            )));
        }
        let mut ordered = tvec![];
        for spec in &self.descriptor.inputs {
            let at = inputs
                .iter()
                .position(|t| t.name == spec.name)
                .ok_or_else(|| {
                    invalid(format!(
                        "model `{}` takes input `{}`, which was not given (it takes {})",
                        self.descriptor.name,
                        spec.name,
                        names(&self.descriptor.inputs)
                    ))
                })?;
            let input = inputs.swap_remove(at);
            if input.element_type != spec.element_type {
                return Err(invalid(format!(
                    "input `{}` must be {:?}, not {:?}",
                    spec.name, spec.element_type, input.element_type
                )));
            }
            let fits = input.shape.len() == spec.shape.len()
                && input
                    .shape
                    .iter()
                    .zip(&spec.shape)
                    .all(|(&given, &wanted)| given > 0 && wanted.is_none_or(|w| w == given));
            if !fits {
                return Err(invalid(format!(
                    "input `{}` has shape {:?}; the model takes {}",
                    spec.name,
                    input.shape,
                    shape_text(&spec.shape)
                )));
            }
            let elements = input
                .shape
                .iter()
                .try_fold(1usize, |n, &d| n.checked_mul(d as usize))
                .filter(|&n| n <= MAX_TENSOR_ELEMENTS)
                .ok_or_else(|| {
                    invalid(format!(
                        "input `{}` has more than {MAX_TENSOR_ELEMENTS} elements",
                        spec.name
                    ))
                })?;
            let bytes = elements * spec.element_type.size();
            if input.data.len() != bytes {
                return Err(invalid(format!(
                    "input `{}` of shape {:?} and type {:?} is {bytes} bytes; {} were given",
                    spec.name,
                    input.shape,
                    spec.element_type,
                    input.data.len()
                )));
            }
            let shape: Vec<usize> = input.shape.iter().map(|&d| d as usize).collect();
            ordered.push(
                to_tract(&shape, input.element_type, &input.data)
                    .map_err(|e| InferenceError::Internal(format!("input `{}`: {e}", spec.name)))?,
            );
        }
        Ok(ordered)
    }
}

impl ModelService for TensorEngine {
    fn descriptor(&self) -> &ModelDescriptor {
        &self.descriptor
    }

    /// Expected time: the unit run's, scaled by how many more elements the
    /// call's inputs hold (a batch of 8 rows, about 8 times as long).
    fn runs_quickly(&self, inputs: &[NamedTensor]) -> bool {
        let (unit, unit_elements) = self.unit_run;
        let elements: usize = inputs.iter().map(NamedTensor::elements).sum();
        let scale = elements.div_ceil(unit_elements).max(1) as u32;
        unit.checked_mul(scale)
            .is_some_and(|expected| expected <= QUICK_RUN_BUDGET)
    }

    fn run_tensor(
        &self,
        context: &RequestContext,
        inputs: Vec<NamedTensor>,
    ) -> Result<Vec<NamedTensor>, InferenceError> {
        let inputs = self.check(inputs)?;
        if context.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(InferenceError::Unavailable(
                "the call's deadline passed before the model ran".into(),
            ));
        }
        let inputs = inputs.into_iter().map(|t| t.into_tvalue()).collect();
        let plan = Arc::clone(&self.plan);
        // Each run starts a fresh state of the shared plan: a panic leaves
        // nothing of it behind.
        let outputs =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || plan.run(inputs)))
                .map_err(|_| {
                    InferenceError::Internal(format!("model `{}` panicked", self.descriptor.name))
                })?
                .map_err(|e| {
                    InferenceError::Internal(format!("model `{}`: {e:#}", self.descriptor.name))
                })?;
        outputs
            .iter()
            .zip(&self.descriptor.outputs)
            .map(|(value, spec)| from_tract(&spec.name, value))
            .collect()
    }
}

/// The element type sovra carries for a tract datum type.
fn tensor_type(datum: DatumType) -> Option<TensorType> {
    Some(match datum {
        DatumType::F32 => TensorType::F32,
        DatumType::F16 => TensorType::F16,
        DatumType::I32 => TensorType::I32,
        DatumType::I64 => TensorType::I64,
        DatumType::U8 => TensorType::U8,
        _ => return None,
    })
}

/// A tract tensor of `shape` from little-endian `data` (already checked to
/// hold exactly its elements).
fn to_tract(shape: &[usize], element_type: TensorType, data: &[u8]) -> TractResult<Tensor> {
    fn values<T: Copy, const N: usize>(data: &[u8], from: fn([u8; N]) -> T) -> Vec<T> {
        data.chunks_exact(N)
            .map(|c| from(c.try_into().expect("chunks of N bytes")))
            .collect()
    }
    match element_type {
        TensorType::F32 => Tensor::from_shape(shape, &values(data, f32::from_le_bytes)),
        TensorType::F16 => Tensor::from_shape(
            shape,
            &values(data, |b: [u8; 2]| {
                tract_onnx::prelude::f16::from_bits(u16::from_le_bytes(b))
            }),
        ),
        TensorType::I32 => Tensor::from_shape(shape, &values(data, i32::from_le_bytes)),
        TensorType::I64 => Tensor::from_shape(shape, &values(data, i64::from_le_bytes)),
        TensorType::U8 => Tensor::from_shape(shape, data),
        TensorType::Bf16 => Err(anyhow::anyhow!("bf16 tensors are not carried")),
    }
}

/// A model output as sovra carries it (little-endian bytes).
fn from_tract(name: &str, value: &Tensor) -> Result<NamedTensor, InferenceError> {
    let internal = |e: String| InferenceError::Internal(format!("output `{name}`: {e}"));
    let element_type = tensor_type(value.datum_type())
        .ok_or_else(|| internal(format!("type {:?} is not carried", value.datum_type())))?;
    let data = match element_type {
        TensorType::F32 => le_bytes(value, f32::to_le_bytes),
        TensorType::F16 => le_bytes(value, |v: tract_onnx::prelude::f16| {
            v.to_bits().to_le_bytes()
        }),
        TensorType::I32 => le_bytes(value, i32::to_le_bytes),
        TensorType::I64 => le_bytes(value, i64::to_le_bytes),
        TensorType::U8 => le_bytes(value, u8::to_le_bytes),
        TensorType::Bf16 => Err("bf16 tensors are not carried".to_owned()),
    }
    .map_err(internal)?;
    let shape = value
        .shape()
        .iter()
        .map(|&d| u32::try_from(d).map_err(|_| internal(format!("dimension {d} is too large"))))
        .collect::<Result<_, _>>()?;
    Ok(NamedTensor {
        name: name.to_owned(),
        shape,
        element_type,
        data,
    })
}

/// `value`'s elements in order, each as little-endian bytes.
fn le_bytes<T: tract_onnx::prelude::Datum + Copy, const N: usize>(
    value: &Tensor,
    to: fn(T) -> [u8; N],
) -> Result<Vec<u8>, String> {
    Ok(value
        .to_plain_array_view::<T>()
        .map_err(|e| e.to_string())?
        .iter()
        .flat_map(|&v| to(v))
        .collect())
}

fn names(specs: &[TensorSpec]) -> String {
    specs
        .iter()
        .map(|s| format!("`{}`", s.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `[batch, 4]`-style text of a shape (`?` where any size is taken).
fn shape_text(shape: &[Option<u32>]) -> String {
    let dims: Vec<String> = shape
        .iter()
        .map(|d| d.map_or_else(|| "?".to_owned(), |d| d.to_string()))
        .collect();
    format!("[{}]", dims.join(", "))
}
