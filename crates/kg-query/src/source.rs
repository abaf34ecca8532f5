//! What retrieval needs from a store and an embedder, as traits of this
//! crate (the CLI implements them on kg-store's and kg-embed's types).

use std::future::Future;

use serde::Serialize;

/// Why retrieval failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The store failed.
    #[error("store: {0}")]
    Store(String),
    /// The embedder failed.
    #[error("embedding the question: {0}")]
    Embed(String),
    /// The chat endpoint failed.
    #[error("chat: {0}")]
    Llm(#[from] kg_llm::CallError),
}

/// A chunk or entity id with a score.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ScoredId {
    /// The id.
    pub id: String,
    /// The score (higher is better).
    pub score: f32,
}

/// An entity, as retrieval shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
pub struct EntityRef {
    /// Entity id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Type.
    #[serde(rename = "type")]
    pub entity_type: String,
}

/// An entity found for a question, with a score.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityHit {
    /// The entity.
    pub entity: EntityRef,
    /// Cosine (vector) or share of the question's terms (name).
    pub score: f32,
}

/// A chunk reached from a seed entity through `hops` relationships.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    /// The chunk.
    pub chunk_id: String,
    /// The entity it mentions.
    pub entity: EntityRef,
    /// The seed entity's id.
    pub seed: String,
    /// 0, 1 or 2.
    pub hops: u8,
}

/// A chunk with its document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChunkDoc {
    /// Chunk id.
    pub id: String,
    /// Document id.
    pub document_id: String,
    /// Text.
    pub text: String,
    /// Source file.
    pub source: String,
    /// Document title.
    pub title: Option<String>,
    /// First page.
    pub page_start: Option<u32>,
    /// Last page.
    pub page_end: Option<u32>,
}

/// A relationship between two entities.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Relation {
    /// Source entity.
    pub from: EntityRef,
    /// Type.
    pub rel_type: String,
    /// Target entity.
    pub to: EntityRef,
    /// Description.
    pub description: String,
}

/// The entities some chunks mention and the relationships among them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChunkGraph {
    /// `(chunk id, entity)`.
    pub mentions: Vec<(String, EntityRef)>,
    /// Relationships among those entities.
    pub relations: Vec<Relation>,
}

/// The store, as retrieval sees it.
pub trait Retriever: Send + Sync {
    /// The `k` best chunks by keyword score (any text is safe: no syntax).
    fn fulltext(
        &self,
        text: &str,
        k: usize,
    ) -> impl Future<Output = Result<Vec<ScoredId>, QueryError>> + Send;
    /// The `k` chunks nearest to `vector`.
    fn vector_chunks(
        &self,
        vector: &[f32],
        k: usize,
    ) -> impl Future<Output = Result<Vec<ScoredId>, QueryError>> + Send;
    /// The `k` entities nearest to `vector`.
    fn vector_entities(
        &self,
        vector: &[f32],
        k: usize,
    ) -> impl Future<Output = Result<Vec<EntityHit>, QueryError>> + Send;
    /// Entities named in `text`.
    fn entities_by_name(
        &self,
        text: &str,
        k: usize,
    ) -> impl Future<Output = Result<Vec<EntityHit>, QueryError>> + Send;
    /// Chunks of the seeds and of their neighbours up to `hops` away.
    fn expand(
        &self,
        seeds: &[String],
        hops: u8,
        max_neighbours: usize,
        per_entity: usize,
    ) -> impl Future<Output = Result<Vec<Reach>, QueryError>> + Send;
    /// Chunks by id, in the order asked (missing ones left out).
    fn chunks(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<ChunkDoc>, QueryError>> + Send;
    /// Entities and relations of these chunks.
    fn chunk_graph(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<ChunkGraph, QueryError>> + Send;
}

/// Embeds a question with the model the chunks were embedded with.
pub trait QueryEmbedder: Send + Sync {
    /// The question's vector.
    fn embed_query(&self, text: &str) -> impl Future<Output = Result<Vec<f32>, QueryError>> + Send;
}
