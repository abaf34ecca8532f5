//! kg-store: the batch writer that puts kg graph records into Neo4j over
//! Bolt, or into the embedded SQLite store when there is no Neo4j.
//!
//! What it does: takes any mix of kg-core [`Record`](kg_core::Record)s
//! (documents, chunks, extractions, entities, relations, embeddings, CSV
//! nodes and edges) from a stream or a channel, cuts it into windows by
//! size and time, plans each window into parameterised `UNWIND $rows`
//! batches grouped by label and relationship type ([`mod@plan`]), and writes
//! them one transaction per batch with adaptive batch sizes, retries of
//! transient failures and a dead-letter file for batches that keep failing
//! ([`BatchWriter`]). It links a document's consecutive chunks
//! (`NEXT_CHUNK`) across windows, acknowledges every record once its
//! window is done ([`Ack`]), stops cleanly when told to (a
//! `CancellationToken` in [`WriterConfig`]), and, opened on a store
//! ([`BatchWriter::open`]), makes sure of the schema itself: constraints at
//! once, the vector index when the first chunk vector comes. Both backends
//! implement [`GraphStore`]: schema, search (cosine over chunk vectors,
//! then the entities the chunks mention and their neighbours), counts,
//! removing earlier versions of changed documents, and streaming the graph
//! back as records ([`export_embedded`]).
//!
//! What it must never do: put data into query text (labels, relationship
//! types and property keys are kg-core validated identifiers, everything
//! else is a parameter); print a password (the [`Secret`] wrapper, URIs
//! without user info in messages); lose a record (every record is written,
//! or dead-lettered with the batch that failed, or acknowledged as
//! cancelled, and reported); erase a property with a null (`+=` from maps
//! without nulls).
//!
//! Modules: the traits and what they answer in [`store`], the two backends
//! in [`neo4j`] and [`embedded`] (each knows only the traits and the
//! helpers they share, never the other), [`AnyStore`] to pick one at run
//! time, [`MemorySink`] for benchmarks and fault injection.
//!
//! The Neo4j driver is neo4rs 0.8 patched to set `TCP_NODELAY` (see
//! `vendor/neo4rs/PATCH.md`): without it, every transaction waits ~40 ms on
//! Nagle's algorithm against the server's delayed ACK.
//!
//! Alone, from a shell: `cargo run -p kg-store --example store_jsonl --
//! DATA_DIR` writes JSON Lines of records into the embedded store (see
//! docs/store.md).
//!
//! A whole write, from opening the store to reading the graph back:
//!
//! ```
//! use kg_core::{Chunk, ChunkId, Document, DocumentId, MediaType, Record};
//! use kg_store::{
//!     AckOutcome, BatchWriter, EmbeddedConfig, EmbeddedStore, GraphStore, Scope, WriterConfig,
//! };
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let store = EmbeddedStore::open(&EmbeddedConfig { data_dir: dir.path().into() }).unwrap();
//! let config = WriterConfig { dead_letter: dir.path().join("dead.jsonl"), ..WriterConfig::default() };
//! // `open` makes sure of the schema; `BatchWriter::new` would not.
//! let writer = BatchWriter::open(store, config).await.unwrap();
//!
//! let doc = DocumentId::from_content_sha256(&kg_core::sha256_hex(b"debian.txt"));
//! let mut records = vec![Record::Document(Document {
//!     id: doc.clone(),
//!     source: "/corpus/debian.txt".into(),
//!     title: None,
//!     sha256: kg_core::sha256_hex(b"debian.txt"),
//!     pages: None,
//!     media_type: MediaType::Text,
//!     bytes: 54,
//! })];
//! for (index, text) in ["Debian was founded in 1993.", "Ian Murdock founded it."].iter().enumerate() {
//!     records.push(Record::Chunk(Chunk {
//!         id: ChunkId::new(&doc, index as u32, text),
//!         document_id: doc.clone(),
//!         index: index as u32,
//!         text: text.to_string(),
//!         tokens: 6,
//!         source: "/corpus/debian.txt".into(),
//!         page_start: None,
//!         page_end: None,
//!     }));
//! }
//!
//! // Records in through a channel, acknowledgements out through another.
//! let (tx, rx) = tokio::sync::mpsc::channel(16);
//! let (ack_tx, mut ack_rx) = tokio::sync::mpsc::channel(16);
//! let produce = async move {
//!     for r in records {
//!         tx.send(r).await.unwrap();
//!     }
//! };
//! let (report, ()) = tokio::join!(writer.write_channel(rx, Some(ack_tx)), produce);
//! let report = report.unwrap();
//! report.check().unwrap(); // Err (exit code 3) when batches were set aside
//!
//! let mut acked = 0;
//! while let Some(window) = ack_rx.recv().await {
//!     assert!(window.iter().all(|a| a.outcome == AckOutcome::Committed));
//!     acked += window.len();
//! }
//! assert_eq!(acked, 3);
//! let counts = writer.sink().counts(&Scope::All).await.unwrap();
//! assert_eq!(counts.nodes["Document"], 1);
//! assert_eq!(counts.nodes["Chunk"], 2);
//! assert_eq!(counts.relationships["HAS_CHUNK"], 2);
//! assert_eq!(counts.relationships["NEXT_CHUNK"], 1);
//! assert_eq!(writer.sink().read_all(&Scope::All).await.unwrap().len(), 3);
//! # });
//! ```

#![warn(missing_docs)]

pub mod any;
pub mod config;
pub mod descriptions;
pub mod embedded;
pub mod error;
pub mod export;
pub mod fulltext;
pub mod lease;
pub mod memory;
pub mod neo4j;
pub mod plan;
mod shared;
pub mod store;
pub mod writer;

pub use any::AnyStore;
pub use config::{EmbeddedConfig, Neo4jConfig, Secret, StoreConfig};
pub use descriptions::{Described, DescriptionSet, DescriptionUpdate};
pub use embedded::EmbeddedStore;
pub use error::{BatchFailure, FailureClass, StoreError};
pub use export::export_embedded;
pub use kg_core::retry::RetryPolicy;
pub use lease::{Lease, LeaseError, LeaseRequest, LeaseState};
pub use memory::{FailRule, MemorySink};
pub use neo4j::Neo4jStore;
pub use plan::{plan, plan_linked, Batch, ChunkTail, Group, GroupKey, Param, Phase, Row};
pub use store::{
    ChunkGraph, ChunkInfo, CurrentDocument, EntityMatch, EntityMerge, EntityRow, EntitySummary,
    GraphCounts, GraphSink, GraphStore, MergeOutcome, Reached, RelationSummary, Removed,
    SchemaReport, Scope, Scored, Superseded,
};
pub use writer::{
    default_retry_policy, read_dead_letters, rerun_dead_letters, Ack, AckOutcome, BatchSizer,
    BatchWriter, FailedBatch, WriteReport, WriterConfig,
};
