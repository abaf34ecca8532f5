//! kg-embed: chunk and entity embeddings, from an OpenAI-compatible API or a
//! local sentence-transformers model.
//!
//! - [`Embedder`] is what both sources implement: a model id, a dimension, the
//!   batch shape it wants, and `embed(texts) -> vectors`.
//! - [`LocalEmbedder`] runs a sentence-transformers BERT folder (MiniLM and
//!   kin) on the CPU with kg-embed's own BERT forward pass: no network, no
//!   key.
//! - [`OpenAiEmbedder`] calls any `/v1/embeddings` server: many inputs per
//!   request (by count and a cl100k token budget), bounded concurrency, retries
//!   honouring `Retry-After`, requests- and tokens-per-minute limits.
//! - [`embed_items`] (and [`embed_chunks`], [`embed_entities`]) is the
//!   streaming driver: it takes a stream of chunks or entities, serves what
//!   it can from the [`EmbedCache`], batches the rest, keeps a bounded number
//!   of batches in flight and sends `Record::Embedding` (or
//!   `Record::SetAside` for a batch that kept failing) down a channel.
//! - [`embed_query`] embeds one search text for `kg search`.
//!
//! The `kg` CLI builds one embedder from its settings (`--embedder local`
//! with a model folder, the default, or `--embedder openai`), opens the
//! cache in its data directory, and runs [`embed_chunks`] beside
//! extraction; the records go on to kg-store, which puts each vector on its
//! chunk and makes the vector index from the first one's dimension.
//!
//! What this crate must never do: talk to the graph database, depend on
//! another stage crate, log or print an API key, or let vectors of two
//! different dimensions into one run (a dimension change stops the run with
//! [`EmbedError::DimensionMismatch`]).
//!
//! Alone, from a shell: `cargo run -p kg-embed --example embed_jsonl` reads
//! records as JSON Lines and adds an embedding for each chunk (see
//! docs/embed.md).
//!
//! The whole stage on three chunks, through the API embedder against
//! kg-fake-llm (the project's fake OpenAI-compatible server); a
//! [`LocalEmbedder::load`]ed model folder goes in the same place:
//!
//! ```
//! use std::sync::Arc;
//! use kg_core::{Chunk, ChunkId, DocumentId, Record};
//! use kg_embed::{cosine, embed_chunks, embed_query, EmbedCache, EmbedOptions};
//! use kg_embed::{OpenAiEmbedConfig, OpenAiEmbedder};
//! use kg_fake_llm::{FakeConfig, FakeLlm};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # tokio::runtime::Runtime::new()?.block_on(async {
//!
//! let server = FakeLlm::start(FakeConfig::default()).await?; // 64 dimensions
//! let config = OpenAiEmbedConfig::new(server.base_url(), "text-embedding-3-small");
//! let embedder = Arc::new(OpenAiEmbedder::new(config)?);
//! let dir = tempfile::tempdir()?;
//! let cache = Arc::new(EmbedCache::open(dir.path())?);
//!
//! let doc = DocumentId::from_content_sha256(&kg_core::sha256_hex(b"history.md"));
//! let texts = [
//!     "Ian Murdock founded Debian in 1993.",
//!     "Red Hat sells support for Fedora.",
//!     "Guido van Rossum created Python.",
//! ];
//! let chunks: Vec<Chunk> = texts.iter().enumerate().map(|(i, text)| Chunk {
//!     id: ChunkId::new(&doc, i as u32, text),
//!     document_id: doc.clone(),
//!     index: i as u32,
//!     text: text.to_string(),
//!     tokens: 8,
//!     source: "history.md".into(),
//!     page_start: None,
//!     page_end: None,
//! }).collect();
//!
//! // Chunks in as a stream, records out through a channel; run twice.
//! let mut embeddings = Vec::new();
//! for _ in 0..2 {
//!     let options = EmbedOptions { cache: Some(cache.clone()), ..EmbedOptions::default() };
//!     let (tx, mut rx) = tokio::sync::mpsc::channel(16);
//!     let stream = futures::stream::iter(chunks.clone());
//!     let run = embed_chunks(embedder.clone(), stream, options, tx);
//!     let collect = async {
//!         let mut records = Vec::new();
//!         while let Some(record) = rx.recv().await {
//!             records.push(record);
//!         }
//!         records
//!     };
//!     let (summary, records) = tokio::join!(run, collect);
//!     let summary = summary?;
//!     assert_eq!((summary.items, summary.set_aside), (3, 0));
//!     assert_eq!(summary.dimensions, Some(64));
//!     embeddings = records;
//! }
//! // The second run came entirely from the cache: one request in all.
//! assert_eq!(server.counters().embedding_requests, 1);
//!
//! let query = embed_query(embedder.as_ref(), "Who founded Debian?").await?;
//! let best = embeddings.iter().filter_map(|r| match r {
//!     Record::Embedding(e) => Some((cosine(&query, &e.vector), &e.id)),
//!     _ => None,
//! }).max_by(|a, b| a.0.total_cmp(&b.0));
//! assert_eq!(best.map(|(_, id)| id.clone()), Some(chunks[0].id.as_str().to_string()));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })
//! # }
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

    /// [`Embedder::embed`] for texts whose [`Embedder::count_tokens`] the
    /// caller already has (`tokens[i]` for `texts[i]`; the driver counts
    /// every text once, for its batch budget), so that an embedder that
    /// plans requests by tokens does not count them again. By default the
    /// counts are not used.
    fn embed_counted<'a>(
        &'a self,
        texts: &'a [String],
        tokens: &'a [usize],
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>> {
        let _ = tokens;
        self.embed(texts)
    }
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
    fn embed_counted<'a>(
        &'a self,
        texts: &'a [String],
        tokens: &'a [usize],
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>> {
        (**self).embed_counted(texts, tokens)
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
    fn embed_counted<'a>(
        &'a self,
        texts: &'a [String],
        tokens: &'a [usize],
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>> {
        (**self).embed_counted(texts, tokens)
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
