//! BERT-family sentence encoders (all-MiniLM-L6-v2 and the like) from
//! `model.safetensors` + `config.json`: embeddings, post-norm transformer
//! layers with exact (erf) GELU, then mean pooling and L2 normalisation as
//! sentence-transformers does.

use std::path::Path;

use rayon::prelude::*;

use crate::cpu::{dot, lane_sum, softmax};
use crate::safetensors::{SafetensorsError, SafetensorsFile};

/// A dense layer: `y = x · Wᵀ + b`, `W` stored `[out][in]`.
struct Linear {
    weight: Vec<f32>,
    bias: Vec<f32>,
    inputs: usize,
    outputs: usize,
}

impl Linear {
    fn load(
        file: &SafetensorsFile,
        name: &str,
        outputs: usize,
        inputs: usize,
    ) -> Result<Self, SafetensorsError> {
        Ok(Linear {
            weight: file.f32(&format!("{name}.weight"), &[outputs, inputs])?,
            bias: file.f32(&format!("{name}.bias"), &[outputs])?,
            inputs,
            outputs,
        })
    }

    /// Layers with the same inputs stacked into one, their outputs side
    /// by side.
    fn stacked(parts: Vec<Linear>) -> Linear {
        let inputs = parts[0].inputs;
        debug_assert!(parts.iter().all(|p| p.inputs == inputs));
        Linear {
            outputs: parts.iter().map(|p| p.outputs).sum(),
            weight: parts
                .iter()
                .flat_map(|p| p.weight.iter().copied())
                .collect(),
            bias: parts.iter().flat_map(|p| p.bias.iter().copied()).collect(),
            inputs,
        }
    }

    /// Every row of `x` through the layer, into `y` (its memory reused).
    fn apply(&self, x: &[f32], y: &mut Vec<f32>) {
        debug_assert_eq!(self.bias.len(), self.outputs);
        crate::cpu::linear_into(x, &self.weight, &self.bias, self.inputs, y);
    }
}

/// Rows one parallel task of the element-wise passes takes (each row is
/// only hundreds of values: tasks of one row would cost more to hand out
/// than to run).
const ROWS_PER_TASK: usize = 16;

struct LayerNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

impl LayerNorm {
    fn load(
        file: &SafetensorsFile,
        name: &str,
        dim: usize,
        eps: f32,
    ) -> Result<Self, SafetensorsError> {
        Ok(LayerNorm {
            weight: file.f32(&format!("{name}.weight"), &[dim])?,
            bias: file.f32(&format!("{name}.bias"), &[dim])?,
            eps,
        })
    }

    /// Normalizes every row of `x` in place.
    fn apply(&self, x: &mut [f32]) {
        let dim = self.weight.len();
        x.par_chunks_mut(dim * ROWS_PER_TASK)
            .for_each(|rows| rows.chunks_exact_mut(dim).for_each(|row| self.row(row)));
    }

    /// `x = norm(x + added)` (the residual stream plus a sublayer's
    /// output), row by row, in one pass.
    fn add_and_apply(&self, x: &mut [f32], added: &[f32]) {
        let dim = self.weight.len();
        debug_assert_eq!(x.len(), added.len());
        x.par_chunks_mut(dim * ROWS_PER_TASK)
            .zip(added.par_chunks(dim * ROWS_PER_TASK))
            .for_each(|(rows, added)| {
                for (row, added) in rows.chunks_exact_mut(dim).zip(added.chunks_exact(dim)) {
                    row.iter_mut().zip(added).for_each(|(v, a)| *v += a);
                    self.row(row);
                }
            });
    }

    fn row(&self, row: &mut [f32]) {
        let dim = row.len();
        let mean = lane_sum(row, |v| v) / dim as f32;
        let var = lane_sum(row, |v| (v - mean) * (v - mean)) / dim as f32;
        let scale = 1.0 / (var + self.eps).sqrt();
        for ((v, w), b) in row.iter_mut().zip(&self.weight).zip(&self.bias) {
            *v = (*v - mean) * scale * w + b;
        }
    }
}

struct Layer {
    /// Query, key and value stacked: one product, rows `3 × hidden` wide.
    qkv: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

/// The buffers of one forward pass, kept between calls: fresh ones of
/// megabytes are fresh pages, each zeroed by the kernel on first touch.
#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    qkv: Vec<f32>,
    context: Vec<f32>,
    projected: Vec<f32>,
    inner: Vec<f32>,
}

/// Scratch sets kept for the next calls (concurrent callers beyond this
/// make their own and drop them): each is at most about 30 MiB, for a
/// batch of `MAX_BATCH_TOKENS` tokens.
const KEPT_SCRATCH: usize = 1;

/// A loaded sentence encoder.
pub struct BertModel {
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    embedding_norm: LayerNorm,
    layers: Vec<Layer>,
    hidden: usize,
    heads: usize,
    max_positions: usize,
    scratch: std::sync::Mutex<Vec<Scratch>>,
}

impl std::fmt::Debug for BertModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BertModel")
            .field("hidden", &self.hidden)
            .field("layers", &self.layers.len())
            .finish_non_exhaustive()
    }
}

/// erf with absolute error below 1.5e-7 (Abramowitz and Stegun 7.1.26).
fn erf(x: f32) -> f32 {
    // Abramowitz and Stegun 7.1.26 (error under 1.5e-7), in f32 with the
    // branchless exp so that the GELU loop vectorizes.
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
    (1.0 - poly * crate::cpu::exp(-a * a)).copysign(x)
}

/// Values one parallel task of GELU takes.
const GELU_VALUES_PER_TASK: usize = 16 * 1024;

fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x / std::f32::consts::SQRT_2))
}

impl BertModel {
    /// Loads `dir/model.safetensors` with the shape in `dir/config.json`.
    pub fn load(dir: &Path) -> Result<Self, SafetensorsError> {
        let config_path = dir.join("config.json");
        let invalid = |what: String| SafetensorsError::Invalid {
            path: config_path.clone(),
            what,
        };
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&config_path).map_err(|source| {
                SafetensorsError::Io {
                    path: config_path.clone(),
                    source,
                }
            })?)
            .map_err(|e| invalid(format!("not JSON: {e}")))?;
        let int = |key: &str| {
            config[key]
                .as_u64()
                .map(|v| v as usize)
                .filter(|&v| v > 0 && v <= 1 << 20)
                .ok_or_else(|| invalid(format!("`{key}` is missing or out of range")))
        };
        let (hidden, heads, layers, intermediate) = (
            int("hidden_size")?,
            int("num_attention_heads")?,
            int("num_hidden_layers")?,
            int("intermediate_size")?,
        );
        let (vocab, max_positions, types) = (
            int("vocab_size")?,
            int("max_position_embeddings")?,
            int("type_vocab_size")?,
        );
        if hidden % heads != 0 {
            return Err(invalid(format!(
                "{heads} heads do not divide hidden size {hidden}"
            )));
        }
        if config["hidden_act"].as_str() != Some("gelu") {
            return Err(invalid("only hidden_act = \"gelu\" is supported".into()));
        }
        let eps = config["layer_norm_eps"].as_f64().unwrap_or(1e-12) as f32;
        let file = SafetensorsFile::open(&dir.join("model.safetensors"))?;
        let layers = (0..layers)
            .map(|i| {
                let name = |part: &str| format!("encoder.layer.{i}.{part}");
                let projection = |part: &str| {
                    Linear::load(
                        &file,
                        &name(&format!("attention.self.{part}")),
                        hidden,
                        hidden,
                    )
                };
                Ok(Layer {
                    qkv: Linear::stacked(vec![
                        projection("query")?,
                        projection("key")?,
                        projection("value")?,
                    ]),
                    attention_out: Linear::load(
                        &file,
                        &name("attention.output.dense"),
                        hidden,
                        hidden,
                    )?,
                    attention_norm: LayerNorm::load(
                        &file,
                        &name("attention.output.LayerNorm"),
                        hidden,
                        eps,
                    )?,
                    intermediate: Linear::load(
                        &file,
                        &name("intermediate.dense"),
                        intermediate,
                        hidden,
                    )?,
                    output: Linear::load(&file, &name("output.dense"), hidden, intermediate)?,
                    output_norm: LayerNorm::load(&file, &name("output.LayerNorm"), hidden, eps)?,
                })
            })
            .collect::<Result<Vec<_>, SafetensorsError>>()?;
        Ok(BertModel {
            word: file.f32("embeddings.word_embeddings.weight", &[vocab, hidden])?,
            position: file.f32(
                "embeddings.position_embeddings.weight",
                &[max_positions, hidden],
            )?,
            token_type: file.f32("embeddings.token_type_embeddings.weight", &[types, hidden])?,
            embedding_norm: LayerNorm::load(&file, "embeddings.LayerNorm", hidden, eps)?,
            layers,
            hidden,
            heads,
            max_positions,
            scratch: Default::default(),
        })
    }

    pub fn hidden(&self) -> usize {
        self.hidden
    }

    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// The normalised mean-pooled embedding of one tokenized text.
    pub fn embed(&self, ids: &[u32]) -> Vec<f32> {
        self.embed_batch(&[ids]).pop().unwrap_or_default()
    }

    /// The embeddings of several tokenized texts, computed together: their
    /// rows go through every product at once (one pass over the weights for
    /// all of them), and each row attends only to its own text.
    pub fn embed_batch(&self, texts: &[&[u32]]) -> Vec<Vec<f32>> {
        let h = self.hidden;
        let vocab = self.word.len() / h;
        // Each row's text, as the range of rows it spans.
        let mut spans = Vec::new();
        // Buffers reused by every layer, and by the next call.
        let mut scratch = self.lock_scratch().pop().unwrap_or_default();
        let Scratch {
            x,
            qkv,
            context,
            projected,
            inner,
        } = &mut scratch;
        x.clear();
        for ids in texts {
            let span = spans.len()..spans.len() + ids.len();
            for (t, &id) in ids.iter().enumerate() {
                let id = (id as usize).min(vocab - 1);
                x.extend((0..h).map(|j| {
                    self.word[id * h + j] + self.position[t * h + j] + self.token_type[j]
                }));
                spans.push(span.clone());
            }
        }
        let n = spans.len();
        self.embedding_norm.apply(x);
        let head_dim = h / self.heads;
        let scale = 1.0 / (head_dim as f32).sqrt();
        for layer in &self.layers {
            layer.qkv.apply(x, qkv);
            let qkv: &[f32] = qkv;
            context.clear();
            context.resize(n * h, 0.0f32);
            context.par_chunks_mut(head_dim).enumerate().for_each_init(
                Vec::new,
                |scores, (pair, out)| {
                    let (t, head) = (pair / self.heads, pair % self.heads);
                    // Row p's query (part 0), key (1) or value (2) of this head.
                    let at = |p: usize, part: usize| {
                        let start = p * 3 * h + part * h + head * head_dim;
                        &qkv[start..start + head_dim]
                    };
                    let qt = at(t, 0);
                    scores.clear();
                    scores.extend(spans[t].clone().map(|p| dot(qt, at(p, 1)) * scale));
                    softmax(scores);
                    for (p, &weight) in spans[t].clone().zip(scores.iter()) {
                        for (o, val) in out.iter_mut().zip(at(p, 2)) {
                            *o += weight * val;
                        }
                    }
                },
            );
            layer.attention_out.apply(context, projected);
            layer.attention_norm.add_and_apply(x, projected);
            layer.intermediate.apply(x, inner);
            inner
                .par_chunks_mut(GELU_VALUES_PER_TASK)
                .for_each(|values| values.iter_mut().for_each(|v| *v = gelu(*v)));
            layer.output.apply(inner, projected);
            layer.output_norm.add_and_apply(x, projected);
        }
        let mut rows = x.chunks_exact(h);
        let vectors = texts
            .iter()
            .map(|ids| {
                let mut pooled = vec![0.0f32; h];
                for row in rows.by_ref().take(ids.len()) {
                    for (p, v) in pooled.iter_mut().zip(row) {
                        *p += v / ids.len() as f32;
                    }
                }
                let norm = pooled.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                pooled.iter_mut().for_each(|v| *v /= norm);
                pooled
            })
            .collect();
        let mut kept = self.lock_scratch();
        if kept.len() < KEPT_SCRATCH {
            kept.push(scratch);
        }
        vectors
    }

    fn lock_scratch(&self) -> std::sync::MutexGuard<'_, Vec<Scratch>> {
        self.scratch.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn erf_is_accurate() {
        for (x, want) in [
            (0.0f32, 0.0f32),
            (0.5, 0.520_499_9),
            (1.0, 0.842_700_8),
            (-2.0, -0.995_322_3),
        ] {
            assert!((super::erf(x) - want).abs() < 2e-7, "erf({x})");
        }
    }
}
