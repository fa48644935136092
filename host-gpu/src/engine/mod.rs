//! The text-generation engine of one model: prompt rendering and
//! tokenization on the caller's thread, then a scheduler thread that steps
//! every live sequence together ([`scheduler`]) on a [`Backend`] (the CPU's
//! or a CUDA GPU's; the scheduler has nothing device-specific in it).

mod admission;
mod backend;
mod device_check;
mod embedding;
mod scheduler;
mod tensor;
mod text;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

pub use admission::{DEFAULT_TENANT_SHARE_PERCENT, TenantShare};
pub use backend::{Backend, BackendError, CpuBackend, RowOutput, SequenceCache, Wanted};
pub use device_check::{AGREEMENT_TOLERANCE, Disagreement, agrees_with_cpu, relative_error};
pub use embedding::{EmbeddingEngine, MAX_BATCH_TOKENS, MAX_EMBED_TOKENS};
pub use scheduler::{MAX_LIVE_SEQUENCES, MAX_STEP_TOKENS, PREFILL_CHUNK};
pub use tensor::{MAX_TENSOR_ELEMENTS, MAX_TENSOR_MODEL_BYTES, QUICK_RUN_BUDGET, TensorEngine};

use crate::chat_template::ChatTemplate;
use crate::cuda::{
    CudaBackend, CudaGpu, CudaLoadError, CudaProbe, Device, DeviceChoice, DeviceUnavailable, Gpu,
    GpuBackend, Half,
};
use crate::gguf::{GgufError, GgufFile};
use crate::model::{BLOCK_TOKENS, LlamaModel, blocks_for};
use crate::sampling::Sampler;
use crate::service::{
    CancelToken, Generation, ModelService, ModelStatus, RequestContext, UsageMeter,
};
use crate::structured::Grammars;
use crate::tokenizer::{self, TokenId, Tokenizer};
use crate::{GenerateRequest, InferenceError, ModelDescriptor, ModelKind, Prompt};

/// Tokens that end generation besides the file's EOS, when the vocabulary has them.
const END_OF_GENERATION: &[&str] = &["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>"];

/// Limits of one text engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineLimits {
    /// Bytes of KV cache all live sequences may reserve together; requests
    /// beyond it wait (back-pressure), and a single request larger than it
    /// is refused.
    /// Stops: concurrent long generations exhausting host memory.
    pub kv_cache_bytes: usize,
    /// Percent (1..=100) of the KV cache and of the batch's sequence slots
    /// that one tenant's sequences may hold together; its further requests
    /// wait for its own, and one request larger than the share is refused.
    /// Stops: one tenant's flood starving the others of the shared model.
    pub tenant_share_percent: u8,
}

impl Default for EngineLimits {
    fn default() -> Self {
        EngineLimits {
            kv_cache_bytes: 1 << 30,
            tenant_share_percent: DEFAULT_TENANT_SHARE_PERCENT,
        }
    }
}

/// What this machine's CUDA looks like, probed once per process.
fn cuda_probe() -> &'static CudaProbe {
    static PROBE: OnceLock<CudaProbe> = OnceLock::new();
    PROBE.get_or_init(crate::cuda::probe)
}

/// A backend's cache pool, as read at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CacheStats {
    /// Blocks held by live sequences.
    blocks_in_use: usize,
    /// Blocks the pool holds at most.
    capacity_blocks: usize,
    /// Bytes one block takes on the device.
    block_bytes: usize,
}

impl CacheStats {
    fn of<B: Backend>(backend: &B) -> Self {
        CacheStats {
            blocks_in_use: backend.cache_blocks_in_use(),
            capacity_blocks: backend.cache_capacity_blocks(),
            block_bytes: backend.cache_block_bytes(),
        }
    }

    fn bytes_in_use(&self) -> usize {
        self.blocks_in_use * self.block_bytes
    }

    fn capacity_bytes(&self) -> usize {
        self.capacity_blocks.saturating_mul(self.block_bytes)
    }
}

/// Reads the scheduler's backend's cache pool.
type CacheUsage = Box<dyn Fn() -> CacheStats + Send + Sync>;

/// A loaded text-generation model and its scheduler.
pub struct TextEngine {
    descriptor: ModelDescriptor,
    /// Where the scheduler's backend runs (`cpu`, `cuda:0`).
    device: String,
    cache_usage: CacheUsage,
    tenant_usage: scheduler::TenantUsage,
    tokenizer: Arc<Tokenizer>,
    template: Option<ChatTemplate>,
    /// The constraints compiled for this model.
    grammars: Grammars,
    tenant_share_percent: u8,
    commands: Mutex<Sender<scheduler::Admission>>,
    seeds: AtomicU64,
}

impl std::fmt::Debug for TextEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextEngine")
            .field("descriptor", &self.descriptor)
            .finish_non_exhaustive()
    }
}

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Tokenizer(#[from] tokenizer::TokenizerError),
    #[error("{path}: {error}")]
    Template { path: String, error: InferenceError },
    #[error(transparent)]
    Safetensors(#[from] crate::safetensors::SafetensorsError),
    #[error(transparent)]
    Device(#[from] DeviceUnavailable),
    #[error("invalid engine limits: {0}")]
    Limits(String),
    #[error("{path}: not a model sovra can run: {error}")]
    Onnx { path: String, error: String },
    #[error("{path}: cannot load onto the GPU: {error}")]
    Cuda { path: String, error: CudaLoadError },
    /// The operating system would not start the model's scheduler thread.
    #[error("cannot start the scheduler thread of model `{model}`: {source}")]
    SchedulerThread {
        model: String,
        source: std::io::Error,
    },
}

/// Starts the scheduler thread on `backend`; returns how to read its cache use.
fn start<B: Backend>(
    thread: std::thread::Builder,
    backend: Arc<B>,
    tokenizer: Arc<Tokenizer>,
    end_tokens: Vec<TokenId>,
    tenant_share_percent: u8,
    usage: scheduler::TenantUsage,
    commands: std::sync::mpsc::Receiver<scheduler::Admission>,
) -> std::io::Result<CacheUsage> {
    let pool = Arc::clone(&backend);
    thread.spawn(move || {
        scheduler::run(
            backend,
            tokenizer,
            end_tokens,
            tenant_share_percent,
            usage,
            commands,
        )
    })?;
    Ok(Box::new(move || CacheStats::of(&*pool)))
}

/// Uploads `model` to CUDA device `ordinal`, checked against the CPU (see
/// [`load_checked`]).
fn load_on_gpu(
    model: &LlamaModel,
    ordinal: usize,
    cache_bytes: usize,
    name: &str,
) -> Result<CudaBackend, CudaLoadError> {
    load_checked(
        |half| CudaGpu::open(ordinal, half),
        model,
        cache_bytes,
        name,
    )
}

/// Uploads `model` to the GPU that `open` gives for a half, and keeps it
/// only once its logits agree with the CPU's ([`device_check`]). Products
/// run on f16 first (the closer to exact); a model whose activations pass
/// f16's range disagrees there, and goes to bf16. When only the decode
/// graphs can be at fault (the prompt and the first, eager, decode step
/// agreed) and the device agrees without them, they are turned off. The
/// first disagreement is the error when nothing agrees.
pub fn load_checked<G: Gpu>(
    open: impl Fn(Half) -> Result<G, CudaLoadError>,
    model: &LlamaModel,
    cache_bytes: usize,
    name: &str,
) -> Result<GpuBackend<G>, CudaLoadError> {
    let mut first: Option<Disagreement> = None;
    for half in [Half::F16, Half::Bf16] {
        let backend = GpuBackend::on(open(half)?, model, cache_bytes)?;
        let disagreement = match device_check::agrees_with_cpu(&backend, model) {
            Ok(()) => None,
            Err(d) if backend.graphs() && d.step_index >= 2 => {
                backend.set_graphs(false);
                match device_check::agrees_with_cpu(&backend, model) {
                    Ok(()) => {
                        tracing::warn!(model = name, "{d}; decode graphs are off for this model");
                        None
                    }
                    Err(_) => Some(d),
                }
            }
            Err(d) => Some(d),
        };
        match disagreement {
            None => {
                if let Some(first) = &first {
                    tracing::warn!(model = name, "{first}; products run on {}", half.name());
                }
                return Ok(backend);
            }
            Some(d) => {
                first.get_or_insert(d);
            }
        }
    }
    Err(first.expect("every half was tried").into())
}

impl TextEngine {
    /// Loads a GGUF model and starts its scheduler, on the first usable
    /// CUDA device or else the CPU; agents will know it as `name`.
    pub fn load(name: &str, path: &Path) -> Result<Self, LoadError> {
        Self::load_with_limits(name, path, EngineLimits::default(), DeviceChoice::Auto)
    }

    /// [`TextEngine::load`] with explicit limits, on `device`: `Auto` takes
    /// the first usable CUDA device and otherwise the CPU; a named device
    /// that cannot take the model is an error.
    pub fn load_with_limits(
        name: &str,
        path: &Path,
        limits: EngineLimits,
        device: DeviceChoice,
    ) -> Result<Self, LoadError> {
        let file = GgufFile::open(path)?;
        let tokenizer = Arc::new(tokenizer::from_gguf(&file)?);
        let model = Arc::new(LlamaModel::from_gguf(&file)?);
        let token_text =
            |id: Option<TokenId>| id.map(|id| tokenizer.decode(&[id])).unwrap_or_default();
        let template = match file.get("tokenizer.chat_template").and_then(|v| v.as_str()) {
            Some(source) => Some(
                ChatTemplate::new(
                    source,
                    &token_text(tokenizer.bos()),
                    &token_text(tokenizer.eos()),
                )
                .map_err(|error| LoadError::Template {
                    path: path.display().to_string(),
                    error,
                })?,
            ),
            None => None,
        };
        let mut end_tokens: Vec<TokenId> = tokenizer.eos().into_iter().collect();
        end_tokens.extend(
            END_OF_GENERATION
                .iter()
                .filter_map(|t| tokenizer.token_id(t)),
        );
        let descriptor = ModelDescriptor::new(
            name,
            ModelKind::TextGeneration,
            model.config().context_length as u32,
            0,
        );
        if !(1..=100).contains(&limits.tenant_share_percent) {
            return Err(LoadError::Limits(format!(
                "the tenant share is {}%; it must be 1-100",
                limits.tenant_share_percent
            )));
        }
        let share = limits.tenant_share_percent;
        let block_bytes = crate::model::block_bytes(model.config());
        if limits.kv_cache_bytes < block_bytes {
            return Err(LoadError::Limits(format!(
                "a KV cache of {} KiB holds no block of model `{name}` ({} KiB for {BLOCK_TOKENS} positions)",
                limits.kv_cache_bytes >> 10,
                block_bytes.div_ceil(1024)
            )));
        }
        let (resolved, note) = device.resolve(cuda_probe())?;
        if let Some(note) = note {
            tracing::info!(model = name, "{note}");
        }
        let (commands, receiver) = channel();
        let thread = std::thread::Builder::new().name(format!("sovra-engine-{name}"));
        let scheduler_tokenizer = Arc::clone(&tokenizer);
        let grammars = Grammars::new(name, Arc::clone(&tokenizer), end_tokens.clone());
        let gpu = match resolved {
            Device::Cpu => None,
            Device::Cuda(ordinal) => {
                match load_on_gpu(&model, ordinal, limits.kv_cache_bytes, name) {
                    Ok(backend) => Some(backend),
                    Err(error) if device == DeviceChoice::Auto => {
                        tracing::warn!(
                            model = name,
                            device = %resolved,
                            %error,
                            "running on the CPU instead"
                        );
                        None
                    }
                    Err(error) => {
                        return Err(LoadError::Cuda {
                            path: path.display().to_string(),
                            error,
                        });
                    }
                }
            }
        };
        let tenant_usage = scheduler::TenantUsage::default();
        let device_name = gpu
            .as_ref()
            .map_or_else(|| "cpu".to_owned(), |b| b.device());
        let spawned = match gpu {
            Some(backend) => {
                drop(model);
                tracing::info!(model = name, device = %resolved, "model loaded onto the GPU");
                start(
                    thread,
                    Arc::new(backend),
                    scheduler_tokenizer,
                    end_tokens,
                    share,
                    Arc::clone(&tenant_usage),
                    receiver,
                )
            }
            None => start(
                thread,
                Arc::new(CpuBackend::new(model, limits.kv_cache_bytes)),
                scheduler_tokenizer,
                end_tokens,
                share,
                Arc::clone(&tenant_usage),
                receiver,
            ),
        };
        let cache_usage = spawned.map_err(|source| LoadError::SchedulerThread {
            model: name.to_owned(),
            source,
        })?;
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Ok(TextEngine {
            descriptor,
            device: device_name,
            cache_usage,
            tenant_usage,
            tokenizer,
            template,
            grammars,
            tenant_share_percent: share,
            commands: Mutex::new(commands),
            seeds: AtomicU64::new(seed),
        })
    }

    /// KV cache bytes held by live sequences, and the engine's budget.
    pub fn kv_cache_usage(&self) -> (usize, usize) {
        let stats = (self.cache_usage)();
        (stats.bytes_in_use(), stats.capacity_bytes())
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The prompt's tokens, rendered with the chat template when it is a chat.
    pub fn prompt_tokens(&self, prompt: &Prompt) -> Result<Vec<TokenId>, InferenceError> {
        let text = match prompt {
            Prompt::Text(text) => text.clone(),
            Prompt::Chat(messages) => match &self.template {
                Some(template) => template.render(messages)?,
                None => {
                    return Err(InferenceError::InvalidInput(format!(
                        "model `{}` has no chat template; send a text prompt",
                        self.descriptor.name
                    )));
                }
            },
        };
        let mut tokens = self.tokenizer.encode(&text);
        // A template that writes the BOS text itself (llama-2 style) plus a
        // tokenizer that adds BOS would start the prompt with two.
        if matches!(prompt, Prompt::Chat(_))
            && tokens.len() >= 2
            && tokens[0] == tokens[1]
            && Some(tokens[0]) == self.tokenizer.bos()
        {
            tokens.remove(0);
        }
        Ok(tokens)
    }
}

impl ModelService for TextEngine {
    fn descriptor(&self) -> &ModelDescriptor {
        &self.descriptor
    }

    fn status(&self) -> ModelStatus {
        let stats = (self.cache_usage)();
        let reserved = self
            .tenant_usage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(tenant, &blocks)| (tenant.clone(), (blocks * stats.block_bytes) as u64))
            .collect();
        ModelStatus {
            device: self.device.clone(),
            kv_cache: Some((stats.bytes_in_use() as u64, stats.capacity_bytes() as u64)),
            kv_reserved_by_tenant: reserved,
        }
    }

    fn start_generation(
        &self,
        context: &RequestContext,
        request: GenerateRequest,
    ) -> Result<Generation, InferenceError> {
        request.sampling.validate()?;
        let prompt = self.prompt_tokens(&request.prompt)?;
        if prompt.is_empty() {
            return Err(InferenceError::InvalidInput("the prompt is empty".into()));
        }
        let context_length = self.descriptor.context_length as usize;
        if prompt.len() >= context_length {
            return Err(InferenceError::LimitExceeded(format!(
                "the prompt is {} tokens; model `{}` takes at most {}",
                prompt.len(),
                self.descriptor.name,
                context_length - 1
            )));
        }
        let kv_tokens = (prompt.len() + request.sampling.max_tokens as usize).min(context_length);
        let pool = (self.cache_usage)();
        let share = TenantShare::of(
            self.tenant_share_percent,
            pool.capacity_blocks,
            MAX_LIVE_SEQUENCES,
        );
        let needed = blocks_for(kv_tokens);
        if needed > share.blocks {
            let mib = |blocks: usize| blocks.saturating_mul(pool.block_bytes) >> 20;
            return Err(InferenceError::LimitExceeded(format!(
                "the request needs {} MiB of KV cache; one tenant may hold {} MiB of this engine's {} MiB",
                mib(needed),
                mib(share.blocks),
                mib(pool.capacity_blocks)
            )));
        }
        let guide = match &request.sampling.constraint {
            Some(constraint) => Some(self.grammars.guide(constraint)?),
            None => None,
        };
        let (events, receiver) = tokio::sync::mpsc::unbounded_channel();
        let cancel = CancelToken::new();
        let meter = Arc::new(UsageMeter::default());
        let admission = scheduler::Admission {
            tenant: context.tenant.clone(),
            prompt,
            kv_tokens,
            sampler: Sampler::new(
                request.sampling.clone(),
                self.seeds.fetch_add(0x9E37_79B9, Ordering::Relaxed),
            ),
            guide,
            max_tokens: request.sampling.max_tokens,
            stops: request.sampling.stop,
            events,
            cancel: cancel.clone(),
            meter: Arc::clone(&meter),
        };
        self.commands
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(admission)
            .map_err(|_| {
                InferenceError::Unavailable(format!(
                    "the engine of `{}` has stopped",
                    self.descriptor.name
                ))
            })?;
        Ok(Generation::new(receiver, cancel, meter))
    }
}
