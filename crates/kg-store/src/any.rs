//! [`AnyStore`]: either backend, chosen at run time.
//!
//! The one module that knows both backends; they know only the traits
//! ([`crate::store`]) and the helpers they share (the private `shared`
//! module).

use std::collections::HashMap;
use std::sync::Arc;

use kg_core::{DocumentId, Record};
use tokio::sync::mpsc;

use crate::config::StoreConfig;
use crate::descriptions::{Described, DescriptionSet, DescriptionUpdate};
use crate::embedded::EmbeddedStore;
use crate::error::{BatchFailure, StoreError};
use crate::neo4j::Neo4jStore;
use crate::plan::Batch;
use crate::store::{
    ChunkGraph, ChunkInfo, CurrentDocument, EntityMatch, EntityMerge, EntityRow, GraphCounts,
    GraphSink, GraphStore, MergeOutcome, Reached, Removed, SchemaReport, Scope, Scored,
};

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

    async fn write_batches(&self, batches: Vec<Arc<Batch>>) -> Result<(), BatchFailure> {
        match self {
            Self::Neo4j(s) => s.write_batches(batches).await,
            Self::Embedded(s) => s.write_batches(batches).await,
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

    async fn fulltext_chunks(&self, text: &str, k: usize) -> Result<Vec<Scored>, StoreError> {
        match self {
            Self::Neo4j(s) => s.fulltext_chunks(text, k).await,
            Self::Embedded(s) => s.fulltext_chunks(text, k).await,
        }
    }

    async fn vector_chunks(&self, v: &[f32], k: usize) -> Result<Vec<Scored>, StoreError> {
        match self {
            Self::Neo4j(s) => s.vector_chunks(v, k).await,
            Self::Embedded(s) => s.vector_chunks(v, k).await,
        }
    }

    async fn vector_entities(&self, v: &[f32], k: usize) -> Result<Vec<EntityMatch>, StoreError> {
        match self {
            Self::Neo4j(s) => s.vector_entities(v, k).await,
            Self::Embedded(s) => s.vector_entities(v, k).await,
        }
    }

    async fn entities_by_name(&self, text: &str, k: usize) -> Result<Vec<EntityMatch>, StoreError> {
        match self {
            Self::Neo4j(s) => s.entities_by_name(text, k).await,
            Self::Embedded(s) => s.entities_by_name(text, k).await,
        }
    }

    async fn expand(
        &self,
        seeds: &[String],
        hops: u8,
        max_neighbours: usize,
        per_entity: usize,
    ) -> Result<Vec<Reached>, StoreError> {
        match self {
            Self::Neo4j(s) => s.expand(seeds, hops, max_neighbours, per_entity).await,
            Self::Embedded(s) => s.expand(seeds, hops, max_neighbours, per_entity).await,
        }
    }

    async fn chunks(&self, ids: &[String]) -> Result<Vec<ChunkInfo>, StoreError> {
        match self {
            Self::Neo4j(s) => s.chunks(ids).await,
            Self::Embedded(s) => s.chunks(ids).await,
        }
    }

    async fn chunk_graph(&self, ids: &[String]) -> Result<ChunkGraph, StoreError> {
        match self {
            Self::Neo4j(s) => s.chunk_graph(ids).await,
            Self::Embedded(s) => s.chunk_graph(ids).await,
        }
    }

    async fn counts(&self, scope: &Scope) -> Result<GraphCounts, StoreError> {
        match self {
            Self::Neo4j(s) => s.counts(scope).await,
            Self::Embedded(s) => s.counts(scope).await,
        }
    }

    async fn identity(&self) -> Result<String, StoreError> {
        match self {
            Self::Neo4j(s) => s.identity().await,
            Self::Embedded(s) => s.identity().await,
        }
    }

    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        note: &str,
        ttl: std::time::Duration,
        now_ms: i64,
    ) -> Result<crate::lease::LeaseState, StoreError> {
        match self {
            Self::Neo4j(s) => s.try_lease(name, holder, note, ttl, now_ms).await,
            Self::Embedded(s) => s.try_lease(name, holder, note, ttl, now_ms).await,
        }
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        match self {
            Self::Neo4j(s) => s.release_lease(name, holder).await,
            Self::Embedded(s) => s.release_lease(name, holder).await,
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

    async fn read_records(
        &self,
        scope: &Scope,
        out: mpsc::Sender<Record>,
    ) -> Result<u64, StoreError> {
        match self {
            Self::Neo4j(s) => s.read_records(scope, out).await,
            Self::Embedded(s) => s.read_records(scope, out).await,
        }
    }

    async fn read_entities(
        &self,
        scope: &Scope,
        out: mpsc::Sender<Record>,
    ) -> Result<u64, StoreError> {
        match self {
            Self::Neo4j(s) => s.read_entities(scope, out).await,
            Self::Embedded(s) => s.read_entities(scope, out).await,
        }
    }

    async fn stream_entities(&self, out: mpsc::Sender<EntityRow>) -> Result<u64, StoreError> {
        match self {
            Self::Neo4j(s) => s.stream_entities(out).await,
            Self::Embedded(s) => s.stream_entities(out).await,
        }
    }

    async fn entity_vectors(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, Vec<f32>>, StoreError> {
        match self {
            Self::Neo4j(s) => s.entity_vectors(ids).await,
            Self::Embedded(s) => s.entity_vectors(ids).await,
        }
    }

    async fn merge_entities(&self, merge: &EntityMerge) -> Result<MergeOutcome, StoreError> {
        match self {
            Self::Neo4j(s) => s.merge_entities(merge).await,
            Self::Embedded(s) => s.merge_entities(merge).await,
        }
    }

    async fn documents_under(&self, prefix: &str) -> Result<Vec<CurrentDocument>, StoreError> {
        match self {
            Self::Neo4j(s) => s.documents_under(prefix).await,
            Self::Embedded(s) => s.documents_under(prefix).await,
        }
    }

    async fn stale_descriptions(
        &self,
        relations: bool,
        after: Option<&Described>,
        limit: usize,
    ) -> Result<Vec<DescriptionSet>, StoreError> {
        match self {
            Self::Neo4j(s) => s.stale_descriptions(relations, after, limit).await,
            Self::Embedded(s) => s.stale_descriptions(relations, after, limit).await,
        }
    }

    async fn set_descriptions(&self, updates: &[DescriptionUpdate]) -> Result<u64, StoreError> {
        match self {
            Self::Neo4j(s) => s.set_descriptions(updates).await,
            Self::Embedded(s) => s.set_descriptions(updates).await,
        }
    }
}
