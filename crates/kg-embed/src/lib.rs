//! kg-embed: chunk and entity embeddings, from an OpenAI-compatible API or a
//! local sentence-transformers model.
//!
//! - [`Embedder`] is what both sources implement: a model id, a dimension, the
//!   batch shape it wants, and `embed(texts) -> vectors`.
//! - [`LocalEmbedder`] runs a sentence-transformers BERT folder (MiniLM and
//!   kin) on the CPU with candle: no network, no key.
//! - [`OpenAiEmbedder`] calls any `/v1/embeddings` server: many inputs per
//!   request (by count and a tiktoken budget), bounded concurrency, retries
//!   honouring `Retry-After`, requests- and tokens-per-minute limits.
//! - [`embed_items`] (and [`embed_chunks`], [`embed_entities`]) is the
//!   streaming driver: it takes a stream of chunks or entities, serves what
//!   it can from the [`EmbedCache`], batches the rest, keeps a bounded number
//!   of batches in flight and sends `Record::Embedding` (or
//!   `Record::SetAside` for a batch that kept failing) down a channel.
//! - [`embed_query`] embeds one search text for `kg search`.
//!
//! What this crate must never do: talk to the graph database, depend on
//! another stage crate, log or print an API key, or let vectors of two
//! different dimensions into one run (a dimension change stops the run with
//! [`EmbedError::DimensionMismatch`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), kg_embed::EmbedError> {
//! use std::path::Path;
//! use kg_embed::{embed_query, Embedder, LocalEmbedder};
//!
//! let model = LocalEmbedder::load(Path::new("models/all-MiniLM-L6-v2"))?;
//! let v = embed_query(&model, "Who founded Debian?").await?;
//! assert_eq!(v.len(), 384);
//! assert_eq!(model.dimensions(), Some(384));
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod cache;
pub mod driver;
mod error;
pub mod local;
pub mod openai;

pub use cache::EmbedCache;
pub use driver::{
    embed_chunks, embed_entities, embed_items, entity_text, EmbedItem, EmbedOptions, EmbedSummary,
};
pub use error::EmbedError;
pub use local::{LocalEmbedConfig, LocalEmbedder, LongTexts, Pooling, WINDOW_STRIDE};
pub use openai::{OpenAiEmbedConfig, OpenAiEmbedder, OpenAiStats};

use futures::future::BoxFuture;

/// How an embedder wants its inputs grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most texts per `embed` call.
    pub max_inputs: usize,
    /// Most tokens (of [`Embedder::count_tokens`]) per `embed` call, if the
    /// embedder has such a budget. A single text over the budget still goes,
    /// alone.
    pub max_tokens: Option<usize>,
    /// How many `embed` calls may run at once.
    pub concurrency: usize,
}

/// A source of vectors: a local model or a remote API.
///
/// Object-safe (the CLI picks one at run time as `Box<dyn Embedder>`), hence
/// the boxed future instead of an `async fn`.
pub trait Embedder: Send + Sync {
    /// The model's id, as written into `Embedding.model` and the cache key.
    fn model_id(&self) -> &str;

    /// The vector dimension: known at load time for a local model, after the
    /// first answer for an API model (unless configured).
    fn dimensions(&self) -> Option<usize>;

    /// How the driver should batch inputs for this embedder.
    fn batch_limits(&self) -> BatchLimits;

    /// Tokens `text` costs against [`BatchLimits::max_tokens`].
    fn count_tokens(&self, text: &str) -> usize;

    /// One vector per text, in order. An implementation may split the texts
    /// into several requests or forward passes.
    fn embed<'a>(&'a self, texts: &'a [String])
        -> BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>>;
}

impl<E: Embedder + ?Sized> Embedder for std::sync::Arc<E> {
    fn model_id(&self) -> &str {
        (**self).model_id()
    }
    fn dimensions(&self) -> Option<usize> {
        (**self).dimensions()
    }
    fn batch_limits(&self) -> BatchLimits {
        (**self).batch_limits()
    }
    fn count_tokens(&self, text: &str) -> usize {
        (**self).count_tokens(text)
    }
    fn embed<'a>(
        &'a self,
        texts: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>> {
        (**self).embed(texts)
    }
}

impl<E: Embedder + ?Sized> Embedder for Box<E> {
    fn model_id(&self) -> &str {
        (**self).model_id()
    }
    fn dimensions(&self) -> Option<usize> {
        (**self).dimensions()
    }
    fn batch_limits(&self) -> BatchLimits {
        (**self).batch_limits()
    }
    fn count_tokens(&self, text: &str) -> usize {
        (**self).count_tokens(text)
    }
    fn embed<'a>(
        &'a self,
        texts: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>> {
        (**self).embed(texts)
    }
}

/// Embeds one search text (for `kg search`): the vector to compare against
/// the stored ones, made by the same model.
pub async fn embed_query<E: Embedder + ?Sized>(
    embedder: &E,
    text: &str,
) -> Result<Vec<f32>, EmbedError> {
    let texts = [text.to_string()];
    let mut vectors = embedder.embed(&texts).await?;
    match (vectors.pop(), vectors.is_empty()) {
        (Some(v), true) => Ok(v),
        (v, _) => Err(EmbedError::Inference {
            model: embedder.model_id().to_string(),
            batch_len: 1,
            detail: format!(
                "expected one vector for the query, got {}",
                vectors.len() + usize::from(v.is_some())
            ),
        }),
    }
}

/// Cosine similarity of two vectors (0 when either is zero or their lengths
/// differ). Vectors of this crate are unit length, so this is their dot
/// product; it is here for `kg search` and the tests.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        dot += f64::from(*x) * f64::from(*y);
        na += f64::from(*x) * f64::from(*x);
        nb += f64::from(*y) * f64::from(*y);
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        (dot / (na.sqrt() * nb.sqrt())) as f32
    }
}
