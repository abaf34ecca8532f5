//! The crate's one error type, and the reason codes of set-aside inputs.
//!
//! Two kinds of failure are kept apart on purpose:
//! - an [`IngestError`] stops the run: the configuration or mapping is wrong,
//!   a path named by the caller does not exist, or the output channel is gone;
//! - a [`SetAsideReason`] is about one input (a file or a CSV row): it becomes
//!   a [`kg_core::SetAside`] record and the run goes on.

use std::path::PathBuf;

/// What stops an ingest run. Messages name the file or setting involved.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A configuration value is out of range (the message says which).
    #[error("invalid ingest configuration: {0}")]
    InvalidConfig(String),
    /// The CSV mapping file could not be read.
    #[error("cannot read CSV mapping {path}: {source}")]
    MappingIo {
        /// The mapping file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The CSV mapping file is not valid (TOML syntax, unknown type, bad label, ...).
    #[error("invalid CSV mapping {path}: {message}")]
    InvalidMapping {
        /// The mapping file (or `<inline>` when parsed from a string).
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A path given to [`crate::ingest`] does not exist or cannot be inspected.
    #[error("input path {path} cannot be read: {source}")]
    InputPath {
        /// The path as given.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The receiver of the output channel was dropped before the run ended.
    #[error("the output channel was closed after {records_sent} records; ingest stopped")]
    OutputClosed {
        /// How many records had been sent.
        records_sent: u64,
    },
    /// A worker task failed in a way the per-file guards could not contain
    /// (the runtime is shutting down). Not retriable within this run.
    #[error("ingest worker for {path} failed: {message}")]
    Worker {
        /// The file being read.
        path: PathBuf,
        /// The join error.
        message: String,
    },
}

impl IngestError {
    /// Whether the run was refused for its settings or its CSV mapping (a
    /// usage error: nothing was read), as opposed to failing while it ran.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            Self::InvalidConfig(_) | Self::MappingIo { .. } | Self::InvalidMapping { .. }
        )
    }
}

/// Why an input was set aside: kg-core's one reason type, re-exported
/// (ingest uses the codes from `empty_file` to `bad_csv_row`).
pub use kg_core::SetAsideReason;
