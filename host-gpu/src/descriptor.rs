//! What the host knows about a model without loading it: its name, what it
//! does and its sizes (for a tensor model, the tensors it takes and gives).

use crate::TensorType;

/// What a model does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelKind {
    /// Autoregressive text generation.
    TextGeneration,
    /// Text to a fixed-size vector.
    Embedding,
    /// Tensors in, tensors out.
    Tensor,
}

/// A registered model as agents see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelDescriptor {
    /// The operator-chosen name agents use; never a path.
    pub name: String,
    pub kind: ModelKind,
    /// Maximum prompt plus generated tokens (0 when not applicable).
    pub context_length: u32,
    /// Length of embedding vectors (0 when not applicable).
    pub embedding_length: u32,
    /// A tensor model's inputs, in order (empty for other kinds).
    pub inputs: Vec<TensorSpec>,
    /// A tensor model's outputs, in order (empty for other kinds).
    pub outputs: Vec<TensorSpec>,
}

impl ModelDescriptor {
    /// A descriptor of a model that takes no tensors.
    pub fn new(name: &str, kind: ModelKind, context_length: u32, embedding_length: u32) -> Self {
        ModelDescriptor {
            name: name.to_owned(),
            kind,
            context_length,
            embedding_length,
            inputs: Vec::new(),
            outputs: Vec::new(),
        }
    }
}

/// One tensor a tensor model takes or gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub element_type: TensorType,
    /// Each dimension's size, or `None` where any size is taken (a batch).
    pub shape: Vec<Option<u32>>,
}
