//! kg-query: answering questions from a kg graph.
//!
//! - [`search`] retrieves chunks for a question in one of four [`Mode`]s:
//!   `vector` (cosine over chunk vectors), `fulltext` (BM25 over chunk
//!   text), `hybrid` (the two fused by weighted reciprocal rank fusion,
//!   [`fusion`]) and `graph` (hybrid plus the chunks of the entities the
//!   question names or resembles and of their 1–2 hop neighbours). Every
//!   hit says why it was found.
//! - [`prompt`] builds a grounded prompt from the hits: numbered, fenced
//!   sources (fence markers inside them neutralised) and the entities and
//!   relations they mention.
//! - [`citations`] reads `[n]` markers out of an answer and resolves them
//!   to the sources, flagging numbers that point at no source.
//! - [`eval`] is the retrieval evaluation's judge (eval/README.md):
//!   normalisation, relevance, recall@k and MRR@k.
//!
//! The store and the embedder come in through this crate's own traits
//! ([`Retriever`], [`QueryEmbedder`]); the CLI implements them on kg-store
//! and kg-embed. This crate depends on kg-core and kg-llm only.

#![warn(missing_docs)]

pub mod citations;
pub mod eval;
pub mod fusion;
pub mod prompt;
mod search;
mod source;

pub use search::{
    candidates, search, Candidates, Hit, Mode, Retrieved, SearchOptions, Why, WhyEntity,
    DEFAULT_FUSION,
};
pub use source::{
    ChunkDoc, ChunkGraph, EntityHit, EntityRef, QueryEmbedder, QueryError, Reach, Relation,
    Retriever, ScoredId,
};
