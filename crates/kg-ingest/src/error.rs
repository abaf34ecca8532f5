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

/// Why an input was set aside. [`SetAsideReason::code`] is the stable
/// snake_case code written in [`kg_core::SetAside::reason`]; scripts match
/// on it, so codes are only ever added, never renamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SetAsideReason {
    /// The file has zero bytes.
    EmptyFile,
    /// The file could not be opened or read (permissions, vanished, ...).
    UnreadableFile,
    /// Larger than [`crate::IngestConfig::max_file_bytes`].
    FileTooLarge,
    /// Neither content nor extension is a format kg reads.
    UnsupportedFileType,
    /// Named `.txt`/`.md` but holds binary data (NUL bytes).
    BinaryFile,
    /// Named `.pdf` but does not start with the `%PDF-` header.
    NotAPdf,
    /// A PDF that ends before its `%%EOF` marker (cut short).
    TruncatedPdf,
    /// A PDF encrypted with a user password other than the empty one.
    EncryptedPdf,
    /// A readable PDF whose pages carry no text layer (a scan).
    NoTextLayer,
    /// Both PDF engines failed (error, panic or timeout); the detail says how.
    PdfUnreadable,
    /// A CSV file with no entry in the CSV mapping.
    CsvNotMapped,
    /// A CSV file whose header lacks a column the mapping names.
    CsvMappingMismatch,
    /// One CSV row that could not be mapped (field count, number, key, ...).
    BadCsvRow,
}

impl SetAsideReason {
    /// The stable snake_case code.
    pub fn code(self) -> &'static str {
        match self {
            Self::EmptyFile => "empty_file",
            Self::UnreadableFile => "unreadable_file",
            Self::FileTooLarge => "file_too_large",
            Self::UnsupportedFileType => "unsupported_file_type",
            Self::BinaryFile => "binary_file",
            Self::NotAPdf => "not_a_pdf",
            Self::TruncatedPdf => "truncated_pdf",
            Self::EncryptedPdf => "encrypted_pdf",
            Self::NoTextLayer => "no_text_layer",
            Self::PdfUnreadable => "pdf_unreadable",
            Self::CsvNotMapped => "csv_not_mapped",
            Self::CsvMappingMismatch => "csv_mapping_mismatch",
            Self::BadCsvRow => "bad_csv_row",
        }
    }

    /// Every reason, for documentation and exhaustive tests.
    pub const ALL: [SetAsideReason; 13] = [
        Self::EmptyFile,
        Self::UnreadableFile,
        Self::FileTooLarge,
        Self::UnsupportedFileType,
        Self::BinaryFile,
        Self::NotAPdf,
        Self::TruncatedPdf,
        Self::EncryptedPdf,
        Self::NoTextLayer,
        Self::PdfUnreadable,
        Self::CsvNotMapped,
        Self::CsvMappingMismatch,
        Self::BadCsvRow,
    ];
}

impl std::fmt::Display for SetAsideReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}
