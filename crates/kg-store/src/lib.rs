//! kg-store: the batch writer that puts kg graph records into Neo4j over
//! Bolt, or into the embedded SQLite store when there is no Neo4j.
//!
//! What it does: takes any mix of kg-core [`Record`](kg_core::Record)s
//! (documents, chunks, extractions, entities, relations, embeddings, CSV
//! nodes and edges), plans them into parameterised `UNWIND $rows` batches
//! grouped by label and relationship type ([`plan`]), and writes them one
//! transaction per batch with adaptive batch sizes, retries of transient
//! failures and a dead-letter file for batches that keep failing
//! ([`BatchWriter`]). Both backends implement [`GraphStore`]: schema
//! (uniqueness constraints, vector index), search (cosine over chunk
//! vectors, then the entities the chunks mention and their neighbours),
//! counts, and reading the graph back as records ([`export_embedded`]).
//!
//! What it must never do: put data into query text (labels, relationship
//! types and property keys are kg-core validated identifiers, everything
//! else is a parameter); print a password (the [`Secret`] wrapper, URIs
//! without user info in messages); lose a record (every record is written,
//! or dead-lettered with the batch that failed, and reported); erase a
//! property with a null (`+=` from maps without nulls).
//!
//! The Neo4j driver is neo4rs 0.8 patched to set `TCP_NODELAY` (see
//! `vendor/neo4rs/PATCH.md`): without it, every transaction waits ~40 ms on
//! Nagle's algorithm against the server's delayed ACK.
//!
//! ```
//! use kg_core::{Chunk, ChunkId, DocumentId, Record};
//! use kg_store::{BatchWriter, EmbeddedConfig, EmbeddedStore, GraphStore, Scope, WriterConfig};
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let store = EmbeddedStore::open(&EmbeddedConfig { data_dir: dir.path().into() }).unwrap();
//! store.ensure_schema(None).await.unwrap();
//! let doc = DocumentId::from_content_sha256("00ff");
//! let chunk = Chunk {
//!     id: ChunkId::new(&doc, 0, "Debian was founded in 1993."),
//!     document_id: doc,
//!     index: 0,
//!     text: "Debian was founded in 1993.".into(),
//!     tokens: 7,
//!     source: "debian.txt".into(),
//!     page_start: None,
//!     page_end: None,
//! };
//! let config = WriterConfig { dead_letter: dir.path().join("dead.jsonl"), ..WriterConfig::default() };
//! let writer = BatchWriter::new(store, config);
//! let report = writer.write_records(vec![Record::Chunk(chunk)]).await.unwrap();
//! report.check().unwrap(); // Err (exit code 3) when batches were set aside
//! let counts = writer.sink().counts(&Scope::All).await.unwrap();
//! assert_eq!(counts.nodes["Chunk"], 1);
//! assert_eq!(counts.relationships["HAS_CHUNK"], 1); // to a placeholder Document
//! # });
//! ```

#![warn(missing_docs)]

pub mod config;
pub mod embedded;
pub mod error;
pub mod export;
pub mod neo4j;
pub mod plan;
pub mod store;
pub mod writer;

pub use config::{EmbeddedConfig, Neo4jConfig, Secret, StoreConfig};
pub use embedded::EmbeddedStore;
pub use error::{BatchFailure, FailureClass, StoreError};
pub use export::export_embedded;
pub use neo4j::Neo4jStore;
pub use plan::{plan, Batch, Group, GroupKey, Param, Phase, Row};
pub use store::{
    AnyStore, CurrentDocument, EntitySummary, FailRule, GraphCounts, GraphSink, GraphStore,
    MemorySink, Neighbour, Removed, SchemaReport, Scope, SearchHit, SearchHits, Superseded,
};
pub use writer::{
    read_dead_letters, rerun_dead_letters, BatchSizer, BatchWriter, FailedBatch, RetryPolicy,
    WriteReport, WriterConfig,
};
