//! What the pipeline needs from each stage, as traits.
//!
//! The pipeline ([`crate::pipeline`]) is written against these four traits,
//! not against the stage crates directly: the wiring (bounded channels,
//! caches, acknowledgements, shutdown) is the same whatever the backend, and
//! it can be tested on its own. [`crate::backends`] implements them on top
//! of kg-ingest, kg-extract, kg-embed and kg-store.

use std::future::Future;
use std::path::PathBuf;

use kg_core::DocumentId;
use kg_core::{Chunk, Embedding, Record, SetAside};
use kg_store::{CurrentDocument, Removed};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A stage failed as a whole (not one item): the command exits 1.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The stage is not available in this build or configuration.
    #[error("{stage} is not available: {reason}")]
    Unavailable {
        /// The stage.
        stage: &'static str,
        /// Why, and what to do about it.
        reason: String,
    },
    /// The stage could not start or stopped with an error.
    #[error("{stage} failed: {message}")]
    Failed {
        /// The stage.
        stage: &'static str,
        /// What went wrong, with its cause chain.
        message: String,
    },
}

/// One item that failed; it will be set aside with this reason.
#[derive(Debug, Clone)]
pub struct ItemError {
    /// Why.
    pub reason: kg_core::SetAsideReason,
    /// Human-readable detail with the cause chain.
    pub detail: String,
}

/// What extraction cost so far.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// LLM calls made (retries included).
    pub calls: u64,
    /// Retries (calls beyond the first per chunk).
    pub retries: u64,
    /// 429 answers.
    pub rate_limited: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
}

/// Files → records.
pub trait Ingester: Send + Sync + 'static {
    /// Streams the records of `paths` (documents, chunks, CSV nodes and
    /// edges, set-asides) into `out`, stopping early when `cancel` fires.
    fn ingest(
        &self,
        paths: Vec<PathBuf>,
        out: mpsc::Sender<Record>,
        cancel: CancellationToken,
    ) -> impl Future<Output = Result<(), StageError>> + Send;
}

/// Chunks → extractions, as a stream (the extractor runs its own worker
/// pool, rate limits and adaptive concurrency across all of them).
pub trait Extractor: Send + Sync + 'static {
    /// The model, part of the cache key.
    fn model(&self) -> &str;
    /// The prompt version, part of the cache key.
    fn prompt_version(&self) -> &str;
    /// Extracts every chunk of `chunks` until it closes, sending one
    /// `Record::Extraction` or `Record::SetAside` (item = chunk id) per
    /// chunk to `out`. `Err` for what stops the stage (a refused key, a
    /// wrong URL or model). When `cancel` fires, calls in flight finish and
    /// chunks not started are set aside with reason `cancelled`.
    fn run(
        &self,
        chunks: mpsc::Receiver<Chunk>,
        out: mpsc::Sender<Record>,
        cancel: CancellationToken,
    ) -> impl Future<Output = Result<(), StageError>> + Send;
    /// Calls, retries and tokens so far (lifetime of the extractor).
    fn usage(&self) -> Usage;
}

/// Chunks → embeddings.
pub trait Embedder: Send + Sync + 'static {
    /// The model, part of the cache key.
    fn model(&self) -> &str;
    /// Embeds a batch; one embedding per chunk, same order.
    fn embed(
        &self,
        chunks: &[Chunk],
    ) -> impl Future<Output = Result<Vec<Embedding>, ItemError>> + Send;
    /// Embeds a query text.
    fn embed_query(&self, text: &str) -> impl Future<Output = Result<Vec<f32>, ItemError>> + Send;
}

/// Records → the graph.
pub trait GraphStore: Send + Sync + 'static {
    /// Writes one window of records (retrying transient failures). `Ok`
    /// means committed, except the records it lists as set aside (rows the
    /// store rejected); `Err` means the window was not (completely) written.
    fn write_batch(
        &self,
        batch_number: u64,
        records: &[Record],
    ) -> impl Future<Output = Result<Vec<SetAside>, ItemError>> + Send;

    /// The earlier versions of these documents' sources (see
    /// `kg_store::GraphStore::earlier_versions`).
    fn earlier_versions(
        &self,
        current: &[CurrentDocument],
    ) -> impl Future<Output = Result<Vec<DocumentId>, ItemError>> + Send;

    /// Removes one document version, whole or not at all (see
    /// `kg_store::GraphStore::remove_document`).
    fn remove_document(
        &self,
        id: &DocumentId,
    ) -> impl Future<Output = Result<Removed, ItemError>> + Send;
}
