//! The store traits both backends implement, and what they answer.
//!
//! [`GraphSink`] is the one thing the batch writer needs: write one batch
//! (or a few small ones) in one transaction, or say why not and whether a
//! retry could help.
//! [`GraphStore`] adds what the CLI needs around it: the schema, search,
//! counts and reading the graph back as records.
//!
//! The methods return `impl Future + Send` so that a writer can be spawned
//! on a multi-threaded runtime. To pick a backend at run time, use
//! [`crate::AnyStore`].
//!
//! This module knows no backend: the backends ([`crate::neo4j`],
//! [`crate::embedded`]) import it, never the other way round.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;

use kg_core::{DocumentId, Record};
use tokio::sync::mpsc;

use crate::descriptions::{Described, DescriptionSet, DescriptionUpdate};
use crate::error::{BatchFailure, StoreError};
use crate::plan::Batch;

/// Writes batches, one transaction each (or one for a few small ones).
pub trait GraphSink: Send + Sync {
    /// Writes `batch` in one transaction: all of it or none of it.
    fn write_batch(
        &self,
        batch: Arc<Batch>,
    ) -> impl Future<Output = Result<(), BatchFailure>> + Send;

    /// Writes `batches` in one transaction, in their order: all of them or
    /// none. The batch writer sends groups too small to fill a batch of
    /// their own this way, so that a window of many small groups costs one
    /// transaction, not one per group.
    ///
    /// The default writes them one after another, one transaction each:
    /// not atomic (a failure leaves the earlier ones committed), which the
    /// writer tolerates because every write is an idempotent `MERGE` and a
    /// failed unit is retried or dead-lettered whole. Both backends
    /// override it with one transaction.
    fn write_batches(
        &self,
        batches: Vec<Arc<Batch>>,
    ) -> impl Future<Output = Result<(), BatchFailure>> + Send {
        async move {
            for batch in batches {
                self.write_batch(batch).await?;
            }
            Ok(())
        }
    }
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

/// A chunk or entity id with a retrieval score (higher is better; cosine
/// for vector search, BM25 for fulltext).
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// Chunk or entity id.
    pub id: String,
    /// The score.
    pub score: f32,
}

/// An entity found for a question, with a score (cosine for vector
/// matches; for name matches, the share of the question's terms the name
/// covers, 0..=1).
#[derive(Debug, Clone, PartialEq)]
pub struct EntityMatch {
    /// The entity.
    pub entity: EntitySummary,
    /// The score.
    pub score: f32,
}

/// A chunk reached from a seed entity: it mentions `entity`, which is the
/// seed itself (`hops` 0) or a neighbour 1 or 2 relationships away.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reached {
    /// The chunk.
    pub chunk_id: String,
    /// The entity the chunk mentions.
    pub entity: EntitySummary,
    /// The seed entity it was reached from.
    pub seed: String,
    /// Relationships between the seed and `entity`: 0, 1 or 2.
    pub hops: u8,
}

/// A chunk with its document, for showing and citing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkInfo {
    /// Chunk id.
    pub id: String,
    /// Document id.
    pub document_id: String,
    /// Position in the document.
    pub index: Option<u32>,
    /// Text.
    pub text: String,
    /// The source file.
    pub source: String,
    /// The document's title, when it has one.
    pub title: Option<String>,
    /// First page (PDF).
    pub page_start: Option<u32>,
    /// Last page (PDF).
    pub page_end: Option<u32>,
}

/// A relationship between two entities, as context for an answer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RelationSummary {
    /// Source entity.
    pub from: EntitySummary,
    /// Relationship type.
    pub rel_type: String,
    /// Target entity.
    pub to: EntitySummary,
    /// Its description.
    pub description: String,
}

/// The entities a set of chunks mentions and the relationships among them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkGraph {
    /// `(chunk id, entity)`, sorted.
    pub mentions: Vec<(String, EntitySummary)>,
    /// Relationships between two of those entities, sorted.
    pub relations: Vec<RelationSummary>,
}

/// An entity as resolution reads it ([`GraphStore::stream_entities`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityRow {
    /// Entity id.
    pub id: String,
    /// Type label.
    pub entity_type: String,
    /// Name.
    pub name: String,
    /// Chunks that mention it.
    pub mentions: u64,
}

/// One merge of entities into one ([`GraphStore::merge_entities`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityMerge {
    /// The entity that stays.
    pub keep: String,
    /// Its name after the merge.
    pub name: String,
    /// The entities that go into it.
    pub merged: Vec<String>,
}

/// What one merge did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MergeOutcome {
    /// Entities merged away (0 when the merge was already done).
    pub entities: u64,
    /// `MENTIONS` moved onto the kept entity.
    pub mentions: u64,
    /// Entity relationships moved onto it (united with one it had, or new).
    pub relations: u64,
    /// Relationships between members of the group, dropped (they would
    /// point from the kept entity to itself).
    pub self_loops: u64,
}

/// The longest merged description, in characters.
pub(crate) const MAX_MERGED_DESCRIPTION: usize = 2_000;

/// Name, aliases and description of the entity kept by a merge: `name`;
/// every other name and alias of the group as aliases (sorted, once
/// each); the kept description, then each other distinct one, on lines
/// of their own up to [`MAX_MERGED_DESCRIPTION`] characters.
pub(crate) fn merged_fields(
    name: &str,
    members: &[(String, Vec<String>, String)],
) -> (Vec<String>, String) {
    let mut aliases: Vec<String> = members
        .iter()
        .flat_map(|(n, a, _)| std::iter::once(n.clone()).chain(a.iter().cloned()))
        .filter(|a| a != name && !a.is_empty())
        .collect();
    aliases.sort();
    aliases.dedup();
    let mut description = String::new();
    for (_, _, d) in members {
        let d = d.trim();
        if d.is_empty() || description.lines().any(|l| l == d) {
            continue;
        }
        if description.chars().count() + d.chars().count() + 1 > MAX_MERGED_DESCRIPTION {
            break;
        }
        if !description.is_empty() {
            description.push('\n');
        }
        description.push_str(d);
    }
    (aliases, description)
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

    /// The `k` chunks with the best keyword (fulltext) scores for `text`:
    /// BM25 from the backend's fulltext index (SQLite FTS5, Neo4j's
    /// fulltext index) or, on a server without one, computed by kg. The
    /// text is cut into terms first ([`crate::fulltext::query_terms`]), so
    /// no input is a syntax error: text without terms finds nothing.
    fn fulltext_chunks(
        &self,
        text: &str,
        k: usize,
    ) -> impl Future<Output = Result<Vec<Scored>, StoreError>> + Send;

    /// The `k` chunks nearest to `query_vector` by cosine, best first (ids
    /// and scores only; [`Self::chunks`] fetches the rest).
    fn vector_chunks(
        &self,
        query_vector: &[f32],
        k: usize,
    ) -> impl Future<Output = Result<Vec<Scored>, StoreError>> + Send;

    /// The `k` entities whose vectors are nearest to `query_vector`.
    fn vector_entities(
        &self,
        query_vector: &[f32],
        k: usize,
    ) -> impl Future<Output = Result<Vec<EntityMatch>, StoreError>> + Send;

    /// Entities whose name (2 characters or more) occurs in `text` as whole
    /// words, at most `k`, longest names first.
    fn entities_by_name(
        &self,
        text: &str,
        k: usize,
    ) -> impl Future<Output = Result<Vec<EntityMatch>, StoreError>> + Send;

    /// The chunks that mention the `seeds` and, with `hops` 1 or 2, their
    /// entity neighbours up to that many relationships away: at most
    /// `per_entity` chunks for each entity reached (lowest chunk ids first)
    /// and `max_neighbours` neighbours for each seed.
    fn expand(
        &self,
        seeds: &[String],
        hops: u8,
        max_neighbours: usize,
        per_entity: usize,
    ) -> impl Future<Output = Result<Vec<Reached>, StoreError>> + Send;

    /// The chunks with these ids, with their document's title (missing ids
    /// are left out), in the order asked.
    fn chunks(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<ChunkInfo>, StoreError>> + Send;

    /// The entities these chunks mention and the relationships among them.
    fn chunk_graph(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<ChunkGraph, StoreError>> + Send;

    /// Counts nodes and relationships in `scope` (the identity marker of
    /// [`Self::identity`] is not counted).
    fn counts(&self, scope: &Scope)
        -> impl Future<Output = Result<GraphCounts, StoreError>> + Send;

    /// An id the store keeps for itself: drawn at random the first time it
    /// is asked for, the same for as long as the store's data lives, and a
    /// new one once the store is replaced or emptied (another database, a
    /// deleted SQLite file, `MATCH (n) DETACH DELETE n`). A run state keeps
    /// it to know that it describes this very store. Neo4j keeps it in one
    /// `:KgStore` node, the embedded store in a table.
    fn identity(&self) -> impl Future<Output = Result<String, StoreError>> + Send;

    /// Takes or renews the store's lease `name` (kg's runs take
    /// [`crate::lease::WRITER`]) for `holder` until `ttl` from `now_ms`
    /// (milliseconds since the Unix epoch, the caller's clock): granted when
    /// nobody holds it, `holder` already holds it, or the last holder's
    /// lease has expired; else says who holds it and for how long still.
    /// `note` is what another kg shows of this holder. One transaction that
    /// serialises with any other taker: two machines asking at once cannot
    /// both be granted. See [`crate::lease`].
    fn try_lease(
        &self,
        name: &str,
        holder: &str,
        note: &str,
        ttl: std::time::Duration,
        now_ms: i64,
    ) -> impl Future<Output = Result<crate::lease::LeaseState, StoreError>> + Send;

    /// Gives lease `name` up if `holder` holds it (else changes nothing).
    fn release_lease(
        &self,
        name: &str,
        holder: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

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

    /// Every entity with a type, in id order, with its mention count, into
    /// `out` (a bounded channel the caller drains; memory does not grow
    /// with the graph: Neo4j keyset pages, SQLite row by row). Says how many
    /// it sent; a receiver that goes away ends the read early.
    fn stream_entities(
        &self,
        out: mpsc::Sender<EntityRow>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The vectors of those of `ids` that have one.
    fn entity_vectors(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<HashMap<String, Vec<f32>>, StoreError>> + Send;

    /// Merges `merge.merged` into `merge.keep` in one transaction (whole,
    /// or not at all): every `MENTIONS` of a merged entity moves to the
    /// kept one; every relationship to or from another entity moves too,
    /// united with the kept entity's own of the same type and other end
    /// (chunk lists united, the larger weight, the kept description);
    /// relationships inside the group go; the kept entity takes `name`,
    /// every other name and alias as aliases, and the distinct
    /// descriptions; the merged entities go. Idempotent: merged entities
    /// that are gone are skipped, and a missing kept entity merges nothing.
    fn merge_entities(
        &self,
        merge: &EntityMerge,
    ) -> impl Future<Output = Result<MergeOutcome, StoreError>> + Send;

    /// Up to `limit` entities (`relations` false) or entity relationships
    /// (true) whose descriptions changed since their description was last
    /// made (marked `description_dirty`), in key order after `after`, each
    /// with its distinct descriptions (see [`crate::descriptions`]). Memory
    /// is the page.
    fn stale_descriptions(
        &self,
        relations: bool,
        after: Option<&Described>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<DescriptionSet>, StoreError>> + Send;

    /// Writes descriptions back, in one transaction: the description, and
    /// where the update has a key, the key and a cleared dirty mark.
    /// Entities or relationships that are gone are skipped. Says how many
    /// it wrote.
    fn set_descriptions(
        &self,
        updates: &[DescriptionUpdate],
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The documents whose source starts with `prefix` (all for `""`),
    /// sorted by source and id.
    fn documents_under(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<CurrentDocument>, StoreError>> + Send;

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

    /// Streams the graph in `scope` back as records into `out`, and says
    /// how many it sent: documents; chunks ordered by document and index,
    /// each followed by its embedding; entities (with the chunks that
    /// mention them), each followed by its embedding; relations; CSV nodes
    /// and edges. Written back through a [`crate::BatchWriter`], they
    /// rebuild the same graph, `NEXT_CHUNK` links included (the writer links
    /// consecutive chunks of a document, across its windows too).
    ///
    /// Memory does not grow with the graph: Neo4j is read page by page
    /// (keyset pages in a fixed order, never `SKIP`), SQLite row by row,
    /// and `out` is a bounded channel the caller drains. A receiver that
    /// goes away ends the read early (`Ok` with the count sent so far).
    fn read_records(
        &self,
        scope: &Scope,
        out: mpsc::Sender<Record>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The entities of [`Self::read_records`] alone: each entity in `scope`
    /// (with the chunks that mention it and what they said of it), then its
    /// embedding, in id order, and nothing else: what a caller that needs
    /// the entities reads without reading every chunk back. Same memory
    /// bound and early end as [`Self::read_records`]. The default filters
    /// [`Self::read_records`]; both backends read the entities only.
    fn read_entities(
        &self,
        scope: &Scope,
        out: mpsc::Sender<Record>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        async move {
            let (tx, mut rx) = mpsc::channel(256);
            let forward = async {
                let mut sent = 0u64;
                while let Some(r) = rx.recv().await {
                    let entity = match &r {
                        Record::Entity(_) => true,
                        Record::Embedding(e) => e.target == kg_core::EmbeddingTarget::Entity,
                        _ => false,
                    };
                    if entity {
                        if out.send(r).await.is_err() {
                            break;
                        }
                        sent += 1;
                    }
                }
                sent
            };
            let (read, sent) = tokio::join!(self.read_records(scope, tx), forward);
            read.map(|_| sent)
        }
    }

    /// [`Self::read_records`] collected into a vector: for tests and small
    /// graphs (it holds the whole scope in memory).
    fn read_all(
        &self,
        scope: &Scope,
    ) -> impl Future<Output = Result<Vec<Record>, StoreError>> + Send {
        async move {
            let (tx, mut rx) = mpsc::channel(1_024);
            let mut out = Vec::new();
            let collect = async {
                while let Some(r) = rx.recv().await {
                    out.push(r);
                }
            };
            let (read, ()) = tokio::join!(self.read_records(scope, tx), collect);
            read?;
            Ok(out)
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

    fn write_batches(
        &self,
        batches: Vec<Arc<Batch>>,
    ) -> impl Future<Output = Result<(), BatchFailure>> + Send {
        (**self).write_batches(batches)
    }
}

impl<T: GraphStore> GraphStore for Arc<T> {
    fn backend(&self) -> &'static str {
        (**self).backend()
    }

    fn ensure_schema(
        &self,
        vector_dims: Option<usize>,
    ) -> impl Future<Output = Result<SchemaReport, StoreError>> + Send {
        (**self).ensure_schema(vector_dims)
    }

    fn fulltext_chunks(
        &self,
        text: &str,
        k: usize,
    ) -> impl Future<Output = Result<Vec<Scored>, StoreError>> + Send {
        (**self).fulltext_chunks(text, k)
    }

    fn vector_chunks(
        &self,
        query_vector: &[f32],
        k: usize,
    ) -> impl Future<Output = Result<Vec<Scored>, StoreError>> + Send {
        (**self).vector_chunks(query_vector, k)
    }

    fn vector_entities(
        &self,
        query_vector: &[f32],
        k: usize,
    ) -> impl Future<Output = Result<Vec<EntityMatch>, StoreError>> + Send {
        (**self).vector_entities(query_vector, k)
    }

    fn entities_by_name(
        &self,
        text: &str,
        k: usize,
    ) -> impl Future<Output = Result<Vec<EntityMatch>, StoreError>> + Send {
        (**self).entities_by_name(text, k)
    }

    fn expand(
        &self,
        seeds: &[String],
        hops: u8,
        max_neighbours: usize,
        per_entity: usize,
    ) -> impl Future<Output = Result<Vec<Reached>, StoreError>> + Send {
        (**self).expand(seeds, hops, max_neighbours, per_entity)
    }

    fn chunks(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<ChunkInfo>, StoreError>> + Send {
        (**self).chunks(ids)
    }

    fn chunk_graph(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<ChunkGraph, StoreError>> + Send {
        (**self).chunk_graph(ids)
    }

    fn identity(&self) -> impl Future<Output = Result<String, StoreError>> + Send {
        (**self).identity()
    }

    fn counts(
        &self,
        scope: &Scope,
    ) -> impl Future<Output = Result<GraphCounts, StoreError>> + Send {
        (**self).counts(scope)
    }

    fn try_lease(
        &self,
        name: &str,
        holder: &str,
        note: &str,
        ttl: std::time::Duration,
        now_ms: i64,
    ) -> impl Future<Output = Result<crate::lease::LeaseState, StoreError>> + Send {
        (**self).try_lease(name, holder, note, ttl, now_ms)
    }

    fn release_lease(
        &self,
        name: &str,
        holder: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).release_lease(name, holder)
    }

    fn earlier_versions(
        &self,
        current: &[CurrentDocument],
    ) -> impl Future<Output = Result<Vec<DocumentId>, StoreError>> + Send {
        (**self).earlier_versions(current)
    }

    fn remove_document(
        &self,
        id: &DocumentId,
    ) -> impl Future<Output = Result<Removed, StoreError>> + Send {
        (**self).remove_document(id)
    }

    fn read_records(
        &self,
        scope: &Scope,
        out: mpsc::Sender<Record>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        (**self).read_records(scope, out)
    }

    fn read_entities(
        &self,
        scope: &Scope,
        out: mpsc::Sender<Record>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        (**self).read_entities(scope, out)
    }
    fn stream_entities(
        &self,
        out: mpsc::Sender<EntityRow>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        (**self).stream_entities(out)
    }

    fn entity_vectors(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<HashMap<String, Vec<f32>>, StoreError>> + Send {
        (**self).entity_vectors(ids)
    }

    fn merge_entities(
        &self,
        merge: &EntityMerge,
    ) -> impl Future<Output = Result<MergeOutcome, StoreError>> + Send {
        (**self).merge_entities(merge)
    }

    fn documents_under(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<CurrentDocument>, StoreError>> + Send {
        (**self).documents_under(prefix)
    }

    fn stale_descriptions(
        &self,
        relations: bool,
        after: Option<&Described>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<DescriptionSet>, StoreError>> + Send {
        (**self).stale_descriptions(relations, after, limit)
    }

    fn set_descriptions(
        &self,
        updates: &[DescriptionUpdate],
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        (**self).set_descriptions(updates)
    }
}

/// A fresh random store identity: 128 bits in hex.
pub(crate) fn new_identity() -> String {
    format!("{:032x}", rand::random::<u128>())
}
