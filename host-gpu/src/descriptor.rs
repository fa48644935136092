//! What the host knows about a model without loading it: its name, what it
//! does and its sizes.

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
}
