//! The records that flow between stages, one per JSON Lines line.
//!
//! Each record carries a `"kind"` tag so that `kg store` can take any mix of
//! them from any number of files. docs/cli.md lists the fields users see.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::id::{ChunkId, DocumentId, EntityId, NodeId};
use crate::ident::{Label, PropertyKey, RelType};
use crate::reason::SetAsideReason;

/// What kind of file a document came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaType {
    /// A PDF file.
    Pdf,
    /// Plain text.
    Text,
    /// Markdown.
    Markdown,
    /// A CSV file mapped to graph nodes and relations.
    Csv,
}

impl MediaType {
    /// Its name, as in JSON and in the graph: `pdf`, `text`, `markdown`,
    /// `csv`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pdf => "pdf",
            Self::Text => "text",
            Self::Markdown => "markdown",
            Self::Csv => "csv",
        }
    }

    /// The media type `name` ([`Self::as_str`]) stands for.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Pdf, Self::Text, Self::Markdown, Self::Csv]
            .into_iter()
            .find(|m| m.as_str() == name)
    }
}

/// A source file, as read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// Content address of the bytes.
    pub id: DocumentId,
    /// Where it was read from: the file's canonical absolute path.
    pub source: String,
    /// A title, where the file has one (PDF metadata, first Markdown heading).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// SHA-256 of the file's bytes, 64 hex digits.
    pub sha256: String,
    /// Number of pages, for paged formats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pages: Option<u32>,
    /// What kind of file it is.
    pub media_type: MediaType,
    /// Size of the file in bytes.
    pub bytes: u64,
}

/// A piece of a document's text, the unit of extraction and embedding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    /// Content address (document, index, normalised text).
    pub id: ChunkId,
    /// The document it belongs to.
    pub document_id: DocumentId,
    /// Position in the document, from 0.
    pub index: u32,
    /// The text.
    pub text: String,
    /// Its length in tokens of the chunker's tokenizer.
    pub tokens: u32,
    /// The document's source path (repeated so a chunk stands on its own).
    pub source: String,
    /// First page the chunk's text comes from (1-based), for paged formats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_start: Option<u32>,
    /// Last page the chunk's text comes from (1-based), for paged formats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_end: Option<u32>,
}

/// An entity as named in one chunk by the LLM, with its resolved id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExtractedEntity {
    /// The resolved entity's id (type + normalised name).
    pub id: EntityId,
    /// The name as written.
    pub name: String,
    /// The entity type, a validated label.
    #[serde(rename = "type")]
    pub entity_type: Label,
    /// What the chunk says about it.
    #[serde(default)]
    pub description: String,
}

/// A relation between two entities of the same extraction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExtractedRelation {
    /// Source entity name as written.
    pub source: String,
    /// Target entity name as written.
    pub target: String,
    /// Resolved id of the source entity.
    pub source_id: EntityId,
    /// Resolved id of the target entity.
    pub target_id: EntityId,
    /// The relationship type, validated.
    #[serde(rename = "type")]
    pub rel_type: RelType,
    /// What the chunk says about the relation.
    #[serde(default)]
    pub description: String,
    /// How strongly the text supports it, 0..=1.
    #[serde(default = "default_strength")]
    pub strength: f32,
}

fn default_strength() -> f32 {
    1.0
}

/// What the LLM found in one chunk, validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Extraction {
    /// The chunk it was extracted from.
    pub chunk_id: ChunkId,
    /// Entities named in the chunk.
    pub entities: Vec<ExtractedEntity>,
    /// Relations between those entities.
    pub relations: Vec<ExtractedRelation>,
    /// The model that answered.
    #[serde(default)]
    pub model: String,
}

/// An entity after resolution across chunks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entity {
    /// Resolved id.
    pub id: EntityId,
    /// Canonical name.
    pub name: String,
    /// Entity type.
    #[serde(rename = "type")]
    pub entity_type: Label,
    /// Merged description.
    #[serde(default)]
    pub description: String,
    /// Other names it was given.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Chunks that mention it.
    #[serde(default)]
    pub chunk_ids: Vec<ChunkId>,
    /// What each mentioning chunk said about it (distinct texts, per
    /// chunk): the descriptions `description` is made from, kept with
    /// their chunks so that removing a chunk removes what it said.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mention_descriptions: BTreeMap<ChunkId, Vec<String>>,
}

/// A relation after resolution: one per (source, type, target).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Relation {
    /// Source entity.
    pub source_id: EntityId,
    /// Target entity.
    pub target_id: EntityId,
    /// Relationship type.
    #[serde(rename = "type")]
    pub rel_type: RelType,
    /// Merged description.
    #[serde(default)]
    pub description: String,
    /// Strength (the maximum seen).
    #[serde(default = "default_strength")]
    pub weight: f32,
    /// Chunks the relation was extracted from.
    #[serde(default)]
    pub chunk_ids: Vec<ChunkId>,
    /// What each of those chunks said about it (distinct texts, per
    /// chunk), as for [`Entity::mention_descriptions`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub chunk_descriptions: BTreeMap<ChunkId, Vec<String>>,
}

/// What an embedding belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmbeddingTarget {
    /// A chunk's text.
    Chunk,
    /// An entity's name and description.
    Entity,
}

/// A vector for a chunk or an entity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    /// Id of the chunk or entity.
    pub id: String,
    /// What `id` names.
    #[serde(default = "default_target")]
    pub target: EmbeddingTarget,
    /// The vector.
    pub vector: Vec<f32>,
    /// The model that made it.
    pub model: String,
}

fn default_target() -> EmbeddingTarget {
    EmbeddingTarget::Chunk
}

/// A property value of a CSV-mapped node or relation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum PropertyValue {
    /// Text.
    String(String),
    /// A 64-bit integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A calendar date, ISO 8601 `YYYY-MM-DD`.
    Date(String),
}

/// A node mapped from a CSV row (no LLM involved).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphNode {
    /// Content address of label + key.
    pub id: NodeId,
    /// The node label from the mapping.
    pub label: Label,
    /// The value of the mapping's id column.
    pub key: String,
    /// Typed properties.
    #[serde(default)]
    pub properties: BTreeMap<PropertyKey, PropertyValue>,
    /// File it came from.
    pub source: String,
    /// 1-based line number in that file.
    pub line: u64,
}

/// One end of a [`GraphEdge`]: a mapped node named by label and id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeRef {
    /// The node's label.
    pub label: Label,
    /// The node's id ([`NodeId::new`] of label and key).
    pub id: NodeId,
}

/// A relation mapped from a CSV row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphEdge {
    /// Relationship type from the mapping.
    #[serde(rename = "type")]
    pub rel_type: RelType,
    /// Start node.
    pub from: NodeRef,
    /// End node.
    pub to: NodeRef,
    /// Typed properties.
    #[serde(default)]
    pub properties: BTreeMap<PropertyKey, PropertyValue>,
    /// File it came from.
    pub source: String,
    /// 1-based line number in that file.
    pub line: u64,
}

/// The stage that set an item aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Reading files.
    Ingest,
    /// LLM extraction.
    Extract,
    /// Embedding.
    Embed,
    /// Writing the graph.
    Store,
}

/// An input that could not be processed, with why. Nothing is dropped
/// silently: each such input ends as one of these, in the summary and in the
/// stage's output, and a re-run retries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetAside {
    /// Which stage gave up on it.
    pub stage: Stage,
    /// What it is: a file path, `path:line`, a chunk id, a batch number.
    pub item: String,
    /// Why, as a stable code (`encrypted_pdf`, `bad_csv_row`, ...; written
    /// as that snake_case string).
    pub reason: SetAsideReason,
    /// The human-readable detail, with the cause chain.
    pub detail: String,
}

/// One line of a JSON Lines file between stages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// A source document.
    Document(Document),
    /// A chunk of a document.
    Chunk(Chunk),
    /// What the LLM found in a chunk.
    Extraction(Extraction),
    /// A resolved entity.
    Entity(Entity),
    /// A resolved relation.
    Relation(Relation),
    /// A chunk or entity vector.
    Embedding(Embedding),
    /// A CSV-mapped node.
    Node(GraphNode),
    /// A CSV-mapped relation.
    Edge(GraphEdge),
    /// An input set aside, with its reason.
    SetAside(SetAside),
}

/// Names one record, small enough to acknowledge: what a sink reports as
/// committed or failed, and what a caller tracks until then.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RecordKey {
    /// A document.
    Document(DocumentId),
    /// A chunk.
    Chunk(ChunkId),
    /// The extraction of a chunk.
    Extraction(ChunkId),
    /// A resolved entity.
    Entity(EntityId),
    /// A resolved relation.
    Relation {
        /// Source entity.
        source: EntityId,
        /// Relationship type.
        rel_type: RelType,
        /// Target entity.
        target: EntityId,
    },
    /// A chunk's or an entity's vector.
    Embedding {
        /// What the id names.
        target: EmbeddingTarget,
        /// The chunk or entity id.
        id: String,
    },
    /// A CSV-mapped node.
    Node(NodeId),
    /// A CSV-mapped relation, by where it was read.
    Edge {
        /// The CSV file.
        source: String,
        /// Its 1-based line.
        line: u64,
    },
    /// A set-aside record, by its item.
    SetAside(String),
}

impl Record {
    /// The key that names this record.
    pub fn key(&self) -> RecordKey {
        match self {
            Record::Document(d) => RecordKey::Document(d.id.clone()),
            Record::Chunk(c) => RecordKey::Chunk(c.id.clone()),
            Record::Extraction(x) => RecordKey::Extraction(x.chunk_id.clone()),
            Record::Entity(e) => RecordKey::Entity(e.id.clone()),
            Record::Relation(r) => RecordKey::Relation {
                source: r.source_id.clone(),
                rel_type: r.rel_type.clone(),
                target: r.target_id.clone(),
            },
            Record::Embedding(e) => RecordKey::Embedding {
                target: e.target,
                id: e.id.clone(),
            },
            Record::Node(n) => RecordKey::Node(n.id.clone()),
            Record::Edge(e) => RecordKey::Edge {
                source: e.source.clone(),
                line: e.line,
            },
            Record::SetAside(s) => RecordKey::SetAside(s.item.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_type_names_are_their_json_names_and_read_back() {
        for m in [
            MediaType::Pdf,
            MediaType::Text,
            MediaType::Markdown,
            MediaType::Csv,
        ] {
            assert_eq!(
                serde_json::to_string(&m).unwrap(),
                format!("\"{}\"", m.as_str())
            );
            assert_eq!(MediaType::from_name(m.as_str()), Some(m));
        }
        assert_eq!(MediaType::from_name("docx"), None);
    }
}
