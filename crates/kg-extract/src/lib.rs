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
//! ([`cache`]) and cost accounting. A [`Resolver`] folds the
//! extractions of a run into [`kg_core::Entity`] and [`kg_core::Relation`]
//! records.
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
//! ```no_run
//! use kg_extract::{ExtractConfig, Extractor, LlmEndpoint, Resolver};
//! use kg_core::Record;
//! use tokio_util::sync::CancellationToken;
//! # async fn demo(chunks: Vec<kg_core::Chunk>) -> Result<(), kg_extract::ExtractError> {
//! let mut endpoint = LlmEndpoint::new("http://localhost:11434/v1", "llama3.1");
//! endpoint.api_key = std::env::var("OPENAI_API_KEY").ok().map(kg_core::Secret::new);
//! let mut config = ExtractConfig::new(endpoint);
//! config.concurrency = 16;
//! config.cache_dir = Some("kg-data/cache".into());
//! let extractor = Extractor::new(config)?;
//! let (tx, mut rx) = tokio::sync::mpsc::channel(64);
//! let run = extractor.run(futures::stream::iter(chunks), tx, CancellationToken::new());
//! let collect = async {
//!     let mut resolver = Resolver::new();
//!     while let Some(record) = rx.recv().await {
//!         if let Record::Extraction(x) = &record {
//!             resolver.add(x);
//!         }
//!         // ... write `record` out ...
//!     }
//!     resolver
//! };
//! let (summary, resolver) = tokio::join!(run, collect);
//! let summary = summary?;
//! println!("{} calls, {} cached, {} set aside", summary.llm_calls, summary.cache_hits, summary.set_aside);
//! for record in resolver.into_records() { /* Entity, then Relation records */ }
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod answer;
pub mod cache;
pub mod config;
mod error;
mod extractor;
pub mod prompt;
pub mod resolve;

pub use config::{
    default_completion_cap, AnswerFormat, ExtractConfig, ExtractSchema, LlmEndpoint, ModelPrice,
    PriceTable,
};
pub use error::ExtractError;
pub use extractor::{CostEstimate, ExtractProgress, ExtractSummary, Extractor};
pub use resolve::Resolver;

/// Re-exported so callers can set budgets and retries without naming
/// kg-core's modules.
pub use kg_core::{ratelimit::RateLimits, retry::RetryPolicy};
/// Re-exported so callers can tune the circuit breaker without naming
/// kg-llm.
pub use kg_llm::BreakerConfig;
