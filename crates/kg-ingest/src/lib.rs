//! kg-ingest: files to documents, chunks and CSV-mapped graph rows.
//!
//! Give it paths (files and directory trees) and a bounded channel; it walks
//! them lazily, reads files in parallel and sends kg-core [`Record`]s in a
//! deterministic order: for each PDF, text or Markdown file a
//! [`Record::Document`] then its [`Record::Chunk`]s (token-aware, with
//! overlap and page numbers); for each mapped CSV its [`Record::Node`]s and
//! [`Record::Edge`]s; and for every file or row that cannot be read, a
//! [`Record::SetAside`] with a stable reason code ([`SetAsideReason`]).
//! [`IngestSummary`] counts it all. A [`CancellationToken`] stops a run
//! promptly: nothing more is sent, and the summary says the run was
//! interrupted and which files were left unfinished.
//!
//! PDFs go through two engines (`pdf_oxide` first, `pdf-extract` as the
//! fallback), each contained by `catch_unwind` and a timeout; see [`pdf`] and
//! docs/ingest.md. Their page texts lose their running headers, footers and
//! page numbers, and get words hyphenated across lines joined, before they
//! are chunked; see [`furniture`].
//!
//! What it must never do: call an LLM or the network, write anywhere but the
//! output channel, let a panic from a file escape, drop an input silently, or
//! hold the whole corpus in memory.
//!
//! Alone, from a shell: `cargo run -p kg-ingest --example ingest_jsonl --
//! PATH...` writes the records as JSON Lines (see docs/ingest.md).
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use kg_core::Record;
//! use kg_ingest::{ingest, CancellationToken, IngestConfig};
//!
//! let dir = tempfile::tempdir()?;
//! std::fs::write(dir.path().join("history.md"), "# Debian\n\nIan Murdock founded Debian in 1993.\n")?;
//! std::fs::write(dir.path().join("empty.txt"), "")?;
//!
//! let runtime = tokio::runtime::Runtime::new()?;
//! let summary = runtime.block_on(async {
//!     let (tx, mut rx) = tokio::sync::mpsc::channel(64);
//!     // Cancelling this token (on Ctrl-C, say) would end the run early.
//!     let cancel = CancellationToken::new();
//!     let paths = vec![dir.path().to_path_buf()];
//!     let run = tokio::spawn(ingest(paths, IngestConfig::default(), tx, cancel.clone()));
//!     while let Some(record) = rx.recv().await {
//!         if let Record::Chunk(chunk) = record {
//!             assert!(chunk.text.contains("Ian Murdock"));
//!         }
//!     }
//!     run.await
//! })??;
//! assert_eq!((summary.documents, summary.chunks), (1, 1));
//! assert_eq!(summary.set_aside_by_reason.get("empty_file"), Some(&1));
//! assert!(!summary.interrupted && summary.unfinished.is_empty());
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod chunk;
mod config;
mod csv_graph;
mod error;
pub mod furniture;
pub mod pdf;
mod pipeline;
mod summary;
mod text;
mod walk;

pub use chunk::{Chunker, PagedText};
pub use config::{
    ColumnType, CsvEncoding, CsvFileMapping, CsvMapping, IngestConfig, NodeEnd, NodeMapping,
    PdfEngine, RelationMapping, Renamed,
};
pub use error::{IngestError, SetAsideReason};
pub use kg_core::Record;
pub use pipeline::{ingest, ingest_to_vec};
pub use summary::{IngestSummary, SkippedPath};
pub use tokio_util::sync::CancellationToken;
