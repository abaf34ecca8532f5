//! The store traits both backends implement, and what they answer.
//!
//! [`GraphSink`] is the one thing the batch writer needs: write one batch in
//! one transaction, or say why not and whether a retry could help.
//! [`GraphStore`] adds what the CLI needs around it: the schema, search,
//! counts and reading the graph back as records.
//!
//! The methods return `impl Future + Send` so that a writer can be spawned
//! on a multi-threaded runtime. To pick a backend at run time, use
//! [`AnyStore`].

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use kg_core::{DocumentId, Record};

use crate::config::StoreConfig;
use crate::embedded::EmbeddedStore;
use crate::error::{BatchFailure, StoreError};
use crate::neo4j::Neo4jStore;
use crate::plan::Batch;

/// Writes batches, one transaction each.
pub trait GraphSink: Send + Sync {
    /// Writes `batch` in one transaction: all of it or none of it.
    fn write_batch(
        &self,
        batch: Arc<Batch>,
    ) -> impl Future<Output = Result<(), BatchFailure>> + Send;
}

/// Which part of the graph to count or read: everything, or the nodes whose
/// `id` is in a list and the relationships that start at them (tests on a
/// shared server count only their own ids).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The whole graph.
    All,
    /// Nodes with these ids; relationships starting at them.
    Ids(Vec<String>),
}

/// Node and relationship counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GraphCounts {
    /// Nodes by label set, labels sorted and joined with `:`
    /// (`Chunk`, `Entity:Person`, `Airport`).
    pub nodes: BTreeMap<String, u64>,
    /// Relationships by type.
    pub relationships: BTreeMap<String, u64>,
}

impl GraphCounts {
    /// All nodes.
    pub fn total_nodes(&self) -> u64 {
        self.nodes.values().sum()
    }

    /// All relationships.
    pub fn total_relationships(&self) -> u64 {
        self.relationships.values().sum()
    }
}

/// What [`GraphStore::ensure_schema`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaReport {
    /// Constraints created or already there.
    pub constraints: Vec<String>,
    /// Whether a vector index on `Chunk.embedding` exists now.
    pub vector_index: bool,
    /// Why not, when it does not (server too old, or no dimensions given).
    pub vector_index_skipped: Option<String>,
}

/// An entity as search shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EntitySummary {
    /// Entity id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Type label.
    pub entity_type: String,
}

/// A relationship from a mentioned entity to a neighbour.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Neighbour {
    /// The mentioned entity's id.
    pub from: String,
    /// Relationship type.
    pub rel_type: String,
    /// Whether the relationship points from `from` to `entity`.
    pub outgoing: bool,
    /// The neighbour.
    pub entity: EntitySummary,
}

/// One chunk found by search, with its graph context.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    /// Chunk id.
    pub chunk_id: String,
    /// Cosine similarity to the query, -1..=1.
    pub score: f32,
    /// The chunk's text.
    pub text: String,
    /// The source file.
    pub source: String,
    /// The document id.
    pub document_id: String,
    /// Entities the chunk mentions, by id.
    pub entities: Vec<EntitySummary>,
    /// Their 1-hop entity neighbours.
    pub neighbours: Vec<Neighbour>,
}

/// Search results, best first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchHits {
    /// The hits.
    pub hits: Vec<SearchHit>,
}

/// A source file and the id of its current content (the document id is a
/// content address, so a changed file gets a new id).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CurrentDocument {
    /// The source path, as ingest recorded it in `Document.source`.
    pub source: String,
    /// The id of the source's content now.
    pub id: DocumentId,
}

/// What removing one document version took with it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    /// Its chunks (with their embeddings and links).
    pub chunks: u64,
    /// Entities no chunk mentions any more and no relationship touches.
    pub entities: u64,
    /// Entity relationships every source chunk of which was removed.
    pub relations: u64,
}

/// What [`GraphStore::supersede`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Superseded {
    /// Earlier versions removed, by id (sorted).
    pub documents: Vec<DocumentId>,
    /// Their chunks (with the chunks' embeddings and links).
    pub chunks: u64,
    /// Entities no chunk mentions any more and no relationship touches.
    pub entities: u64,
    /// Entity relationships every source chunk of which was removed.
    pub relations: u64,
    /// Earlier versions that could not be removed (their transaction was
    /// rolled back, so they are still whole), with why.
    pub failed: Vec<(DocumentId, String)>,
}

/// A graph store: a [`GraphSink`] plus schema, search, counts and read-back.
pub trait GraphStore: GraphSink {
    /// `neo4j` or `embedded`, for messages.
    fn backend(&self) -> &'static str;

    /// Creates the uniqueness constraints on `Document.id`, `Chunk.id` and
    /// `Entity.id` and, given dimensions and a server that supports it, the
    /// vector index on `Chunk.embedding`. Idempotent.
    fn ensure_schema(
        &self,
        vector_dims: Option<usize>,
    ) -> impl Future<Output = Result<SchemaReport, StoreError>> + Send;

    /// The `k` chunks nearest to `query_vector` by cosine, with the
    /// entities they mention and those entities' neighbours.
    fn search(
        &self,
        query_vector: &[f32],
        k: usize,
    ) -> impl Future<Output = Result<SearchHits, StoreError>> + Send;

    /// Counts nodes and relationships in `scope`.
    fn counts(&self, scope: &Scope)
        -> impl Future<Output = Result<GraphCounts, StoreError>> + Send;

    /// The earlier versions of `current`'s sources: every document whose
    /// `source` is one of `current`'s but whose id is none of `current`'s
    /// ids (two files with the same content share one document, which
    /// stays). Sorted.
    fn earlier_versions(
        &self,
        current: &[CurrentDocument],
    ) -> impl Future<Output = Result<Vec<DocumentId>, StoreError>> + Send;

    /// Removes one document version in one transaction (whole, or not at
    /// all): the document, its chunks with their `MENTIONS`, `NEXT_CHUNK`
    /// and embeddings; entity relationships lose those chunks from their
    /// `chunks` list and go when it is empty; entities they mentioned go
    /// when nothing links to them any more. A missing document removes
    /// nothing.
    fn remove_document(
        &self,
        id: &DocumentId,
    ) -> impl Future<Output = Result<Removed, StoreError>> + Send;

    /// [`Self::earlier_versions`], then [`Self::remove_document`] for each:
    /// a version that fails to go is listed in [`Superseded::failed`] and
    /// the others still go. `Err` only when the earlier versions cannot
    /// even be looked up.
    ///
    /// Call it once the current versions are committed: until then the
    /// earlier version is the best graph of the source there is. (The CLI
    /// calls the two steps itself, to forget each version in its run state
    /// before removing it.)
    fn supersede(
        &self,
        current: &[CurrentDocument],
    ) -> impl Future<Output = Result<Superseded, StoreError>> + Send {
        async move {
            let mut out = Superseded::default();
            for id in self.earlier_versions(current).await? {
                match self.remove_document(&id).await {
                    Ok(r) => {
                        out.chunks += r.chunks;
                        out.entities += r.entities;
                        out.relations += r.relations;
                        out.documents.push(id);
                    }
                    Err(e) => out.failed.push((id, e.to_string())),
                }
            }
            Ok(out)
        }
    }

    /// Reads the graph in `scope` back as records: documents, chunks,
    /// entities (with the chunks that mention them), relations, embeddings,
    /// CSV nodes and edges. Written back through a [`crate::BatchWriter`],
    /// they rebuild the same graph.
    fn read_records(
        &self,
        scope: &Scope,
    ) -> impl Future<Output = Result<Vec<Record>, StoreError>> + Send;
}

/// Either backend, chosen at run time from a [`StoreConfig`].
pub enum AnyStore {
    /// Neo4j over Bolt (boxed: the pool is much bigger than a path).
    Neo4j(Box<Neo4jStore>),
    /// The embedded SQLite store.
    Embedded(EmbeddedStore),
}

impl AnyStore {
    /// Opens the configured backend; for Neo4j, verifies connectivity first
    /// (fails within the connect timeout, naming the URI).
    pub async fn open(config: &StoreConfig) -> Result<Self, StoreError> {
        Ok(match config {
            StoreConfig::Neo4j(c) => Self::Neo4j(Box::new(Neo4jStore::connect(c.clone()).await?)),
            StoreConfig::Embedded(c) => Self::Embedded(EmbeddedStore::open(c)?),
        })
    }
}

impl AnyStore {
    /// Bolt connections in use and the pool size; `None` for the embedded
    /// store (no connections).
    pub fn connections(&self) -> Option<(usize, usize)> {
        match self {
            Self::Neo4j(s) => Some((s.connections_in_use(), s.max_connections())),
            Self::Embedded(_) => None,
        }
    }
}

impl GraphSink for AnyStore {
    async fn write_batch(&self, batch: Arc<Batch>) -> Result<(), BatchFailure> {
        match self {
            Self::Neo4j(s) => s.write_batch(batch).await,
            Self::Embedded(s) => s.write_batch(batch).await,
        }
    }
}

impl GraphStore for AnyStore {
    fn backend(&self) -> &'static str {
        match self {
            Self::Neo4j(s) => s.backend(),
            Self::Embedded(s) => s.backend(),
        }
    }

    async fn ensure_schema(&self, vector_dims: Option<usize>) -> Result<SchemaReport, StoreError> {
        match self {
            Self::Neo4j(s) => s.ensure_schema(vector_dims).await,
            Self::Embedded(s) => s.ensure_schema(vector_dims).await,
        }
    }

    async fn search(&self, query_vector: &[f32], k: usize) -> Result<SearchHits, StoreError> {
        match self {
            Self::Neo4j(s) => s.search(query_vector, k).await,
            Self::Embedded(s) => s.search(query_vector, k).await,
        }
    }

    async fn counts(&self, scope: &Scope) -> Result<GraphCounts, StoreError> {
        match self {
            Self::Neo4j(s) => s.counts(scope).await,
            Self::Embedded(s) => s.counts(scope).await,
        }
    }

    async fn earlier_versions(
        &self,
        current: &[CurrentDocument],
    ) -> Result<Vec<DocumentId>, StoreError> {
        match self {
            Self::Neo4j(s) => s.earlier_versions(current).await,
            Self::Embedded(s) => s.earlier_versions(current).await,
        }
    }

    async fn remove_document(&self, id: &DocumentId) -> Result<Removed, StoreError> {
        match self {
            Self::Neo4j(s) => s.remove_document(id).await,
            Self::Embedded(s) => s.remove_document(id).await,
        }
    }

    async fn read_records(&self, scope: &Scope) -> Result<Vec<Record>, StoreError> {
        match self {
            Self::Neo4j(s) => s.read_records(scope).await,
            Self::Embedded(s) => s.read_records(scope).await,
        }
    }
}

impl<T: GraphSink> GraphSink for Arc<T> {
    fn write_batch(
        &self,
        batch: Arc<Batch>,
    ) -> impl Future<Output = Result<(), BatchFailure>> + Send {
        (**self).write_batch(batch)
    }
}

/// A sink that keeps only counts in memory: measures the writer's own
/// overhead (benchmarks) and lets tests inject failures.
#[derive(Default)]
pub struct MemorySink {
    rows: std::sync::atomic::AtomicU64,
    batches: std::sync::Mutex<Vec<(u64, String, usize)>>,
    attempts: std::sync::Mutex<std::collections::HashMap<u64, u32>>,
    fail_when: Option<FailRule>,
}

/// Which batches a [`MemorySink`] fails, and how.
#[derive(Clone)]
pub struct FailRule(
    /// Fails a batch when this returns `Some(failure)`; called with the
    /// batch and the attempt number of that batch (0-based).
    #[allow(clippy::type_complexity)]
    pub Arc<dyn Fn(&Batch, u32) -> Option<BatchFailure> + Send + Sync>,
);

impl MemorySink {
    /// A sink that accepts everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// A sink that fails batches as `rule` says.
    pub fn failing(rule: FailRule) -> Self {
        Self {
            fail_when: Some(rule),
            ..Self::default()
        }
    }

    /// Rows accepted so far.
    pub fn rows(&self) -> u64 {
        self.rows.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `(batch number, group, rows)` of each accepted batch.
    pub fn batches(&self) -> Vec<(u64, String, usize)> {
        self.batches.lock().map(|b| b.clone()).unwrap_or_default()
    }
}

impl GraphSink for MemorySink {
    async fn write_batch(&self, batch: Arc<Batch>) -> Result<(), BatchFailure> {
        if let Some(rule) = &self.fail_when {
            let attempt = match self.attempts.lock() {
                Ok(mut a) => {
                    let n = a.entry(batch.number).or_insert(0);
                    *n += 1;
                    *n - 1
                }
                Err(_) => 0,
            };
            if let Some(f) = (rule.0)(&batch, attempt) {
                return Err(f);
            }
        }
        self.rows.fetch_add(
            batch.rows.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        if let Ok(mut b) = self.batches.lock() {
            b.push((batch.number, batch.key.to_string(), batch.rows.len()));
        }
        Ok(())
    }
}
