//! kg-core: the domain types every kg stage speaks.
//!
//! Documents, chunks, extractions, embeddings and CSV-mapped graph records
//! ([`Record`]) travel between stages as JSON Lines; ids are content
//! addresses ([`id`]), and every label, relationship type and property key
//! that came from outside is a validated identifier ([`ident`]) before it can
//! reach a query.
//!
//! This crate must never do I/O to outside systems (no network, no database):
//! the stage crates do, and they talk to each other only through these types.
//!
//! ```
//! use kg_core::{Chunk, ChunkId, DocumentId, Record, jsonl};
//! let doc = DocumentId::from_content_sha256(&kg_core::sha256_hex(b"%PDF..."));
//! let text = "Ian Murdock founded Debian in 1993.";
//! let chunk = Chunk {
//!     id: ChunkId::new(&doc, 0, text),
//!     document_id: doc,
//!     index: 0,
//!     text: text.into(),
//!     tokens: 9,
//!     source: "history.pdf".into(),
//!     page_start: Some(1),
//!     page_end: Some(1),
//! };
//! let mut line = Vec::new();
//! jsonl::write_record(&mut line, &Record::Chunk(chunk)).unwrap();
//! assert!(line.starts_with(br#"{"kind":"chunk""#));
//! ```

pub mod adaptive;
pub mod batch;
pub mod id;
pub mod ident;
pub mod jsonl;
pub mod pool;
pub mod ratelimit;
pub mod reason;
pub mod record;
pub mod retry;
pub mod secret;

pub use id::{
    content_hash, entity_key, normalise_text, sha256_hex, ChunkId, DocumentId, EntityId, NodeId,
};
pub use ident::{
    IdentError, Label, PropertyKey, RelType, MAX_IDENT_LEN, RESERVED_LABELS, RESERVED_REL_TYPES,
};
pub use reason::SetAsideReason;
pub use record::{
    Chunk, Document, Embedding, EmbeddingTarget, Entity, ExtractedEntity, ExtractedRelation,
    Extraction, GraphEdge, GraphNode, MediaType, NodeRef, PropertyValue, Record, RecordKey,
    Relation, SetAside, Stage,
};
pub use secret::Secret;
