//! kg-extract: entities and relations from chunks, through any
//! OpenAI-compatible chat API, with entity resolution.
//!
//! An [`Extractor`] sends each [`kg_core::Chunk`] to the chat API with a
//! prompt and a JSON schema ([`prompt`]), validates the answer into a
//! [`kg_core::Extraction`] whose types are safe identifiers ([`answer`]),
//! and streams it out; a chunk that cannot be extracted ends as a
//! [`kg_core::SetAside`] with a reason code. The calls go through kg-llm's
//! client (request/token budgets, slow start, a circuit breaker, adaptive
//! concurrency, retries honouring `Retry-After`, token counts); around
//! them: a bounded worker pool, a completion cap on every answer (sized
//! from the chunk) with repair of cut answers, a persistent response cache
//! ([`cache`]) and cost accounting ([`Extractor::estimate`] prices a run
//! before it is made).
//!
//! Extractions carry entity ids that are already resolved keys
//! ([`kg_core::EntityId`]: type plus normalised name), so kg-store merges
//! the same entity from many chunks as it writes them; that is what the
//! `kg` CLI does. A [`Resolver`] does the same folding in memory, into
//! [`kg_core::Entity`] and [`kg_core::Relation`] records with aliases and
//! merged descriptions, for a caller that wants them without a store.
//!
//! Works with OpenAI, Ollama, vLLM and llama.cpp's server: structured
//! outputs (`json_schema`, strict) where the server has them, JSON mode and
//! tolerant parsing where it does not, estimated tokens where it sends no
//! `usage`.
//!
//! This crate must never: let a type name from an answer reach an
//! identifier unvalidated; treat an unusable answer as "nothing found";
//! retry a 400/401/403/404; log an API key; hold the whole corpus in memory.
//!
//! Alone, from a shell: `cargo run -p kg-extract --example extract_jsonl`
//! reads records as JSON Lines and adds an extraction for each chunk (see
//! docs/extract.md).
//!
//! The whole stage on two chunks, against kg-fake-llm (the project's fake
//! OpenAI-compatible server) standing in for a real one:
//!
//! ```
//! use kg_core::{Chunk, ChunkId, DocumentId, Record};
//! use kg_extract::{ExtractConfig, Extractor, LlmEndpoint, Resolver};
//! use kg_fake_llm::{FakeConfig, FakeLlm};
//! use tokio_util::sync::CancellationToken;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # tokio::runtime::Runtime::new()?.block_on(async {
//!
//! let server = FakeLlm::start(FakeConfig::default()).await?;
//! // In real use: "http://localhost:11434/v1" (Ollama), or OpenAI with a key.
//! let mut endpoint = LlmEndpoint::new(server.base_url(), "gpt-4o-mini");
//! endpoint.api_key = Some(kg_core::Secret::new("sk-test"));
//! let mut config = ExtractConfig::new(endpoint);
//! config.concurrency = 4;
//! let extractor = Extractor::new(config)?;
//!
//! let doc = DocumentId::from_content_sha256(&kg_core::sha256_hex(b"history.md"));
//! let texts = ["Ian Murdock founded Debian in 1993.", "Canonical builds Ubuntu on Debian."];
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
//! // Chunks in as a stream, records out through a channel.
//! let (tx, mut rx) = tokio::sync::mpsc::channel(16);
//! let run = extractor.run(futures::stream::iter(chunks), tx, CancellationToken::new());
//! let collect = async {
//!     let mut records = Vec::new();
//!     while let Some(record) = rx.recv().await {
//!         records.push(record);
//!     }
//!     records
//! };
//! let (summary, records) = tokio::join!(run, collect);
//! let summary = summary?;
//! assert_eq!((summary.chunks, summary.extracted, summary.set_aside), (2, 2, 0));
//! assert_eq!(summary.llm_calls, 2);
//!
//! let mut resolver = Resolver::new();
//! for record in &records {
//!     match record {
//!         Record::Extraction(x) => resolver.add(x),
//!         other => panic!("a chunk was set aside: {other:?}"),
//!     }
//! }
//! let (entities, _relations) = resolver.finish();
//! // "Debian", named in both chunks, is one entity mentioned by both.
//! let debian: Vec<_> = entities.iter().filter(|e| e.name == "Debian").collect();
//! assert_eq!(debian.len(), 1);
//! assert_eq!(debian[0].chunk_ids.len(), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```

#![warn(missing_docs)]

pub mod answer;
pub mod cache;
pub mod config;
mod error;
mod extractor;
pub mod prompt;
pub mod resolve;
pub mod schema;
pub mod suggest;
pub mod summarise;

pub use config::{
    default_completion_cap, AnswerFormat, ExtractConfig, LlmEndpoint, ModelPrice, PriceTable,
};
pub use error::ExtractError;
pub use extractor::{prompt_version, CostEstimate, ExtractProgress, ExtractSummary, Extractor};
pub use resolve::Resolver;
pub use schema::{ExtractSchema, SchemaDrops, SchemaFileError, SchemaMode, TypeNotes};
pub use suggest::{ChunkSample, SchemaSuggestion, TypeCount};
pub use summarise::{Summariser, Summary, SummaryConfig, SummaryStats};

/// Re-exported so callers can set budgets and retries without naming
/// kg-core's modules.
pub use kg_core::{ratelimit::RateLimits, retry::RetryPolicy};
/// Re-exported so callers can tune the circuit breaker without naming
/// kg-llm.
pub use kg_llm::BreakerConfig;
