//! Run configuration and the CSV mapping file.
//!
//! [`IngestConfig`] is plain data with defaults; [`IngestConfig::validate`]
//! is called by [`crate::ingest`] before any file is touched, so a bad value
//! fails the run at once instead of after an hour of work.
//!
//! The CSV mapping is TOML. One `[[csv]]` table per CSV file, matched by file
//! name; a file can declare a node (label, id column, typed properties) and
//! any number of relations whose ends are mapped nodes found through key
//! columns:
//!
//! ```toml
//! [[csv]]
//! file = "airports.csv"
//! [csv.node]
//! label = "Airport"
//! id_column = "iata"
//! properties = { name = "string", latitude = "float", longitude = "float" }
//!
//! [[csv]]
//! file = "flights-airport.csv"
//! [[csv.relations]]
//! type = "FLIES_TO"
//! from = { label = "Airport", column = "origin" }
//! to = { label = "Airport", column = "destination" }
//! properties = { count = "int" }
//! ```
//!
//! A relation without `from` starts at the row's own node. Labels, types and
//! property keys are kg-core validated identifiers, checked when the mapping
//! is parsed.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::Path;
use std::time::Duration;

use kg_core::{Label, PropertyKey, RelType};
use serde::Deserialize;

use crate::error::IngestError;

/// Which PDF engine reads a file first. See docs/ingest.md for measurements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PdfEngine {
    /// The `pdf_oxide` crate.
    PdfOxide,
    /// The `pdf-extract` crate (on lopdf).
    PdfExtract,
}

impl PdfEngine {
    /// The engine's name as written in logs and docs.
    pub fn name(self) -> &'static str {
        match self {
            Self::PdfOxide => "pdf_oxide",
            Self::PdfExtract => "pdf-extract",
        }
    }

    /// The other engine.
    pub fn other(self) -> Self {
        match self {
            Self::PdfOxide => Self::PdfExtract,
            Self::PdfExtract => Self::PdfOxide,
        }
    }
}

/// Settings of one ingest run.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Target chunk size in cl100k tokens (default 512).
    pub chunk_tokens: usize,
    /// Tokens shared by consecutive chunks (default 64; must be below `chunk_tokens`).
    pub chunk_overlap: usize,
    /// How CSV files become nodes and relations; `None` sets every CSV aside.
    pub csv_mapping: Option<CsvMapping>,
    /// Longest time one PDF engine may spend on one file (default 60 s).
    pub pdf_timeout: Duration,
    /// The engine tried first; the other one takes over when it fails.
    pub pdf_primary: PdfEngine,
    /// Files read at the same time (default: available cores).
    pub parallelism: NonZeroUsize,
    /// Files larger than this are set aside (default 512 MiB): a file is held
    /// in memory while it is read, so this bounds memory per worker.
    pub max_file_bytes: u64,
    /// At most this many set-aside items are kept in [`crate::IngestSummary::set_aside`]
    /// (default 10 000); all of them are still sent as records and counted.
    pub max_listed_set_aside: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            chunk_tokens: 512,
            chunk_overlap: 64,
            csv_mapping: None,
            pdf_timeout: Duration::from_secs(60),
            pdf_primary: PdfEngine::PdfOxide,
            parallelism: std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN),
            max_file_bytes: 512 * 1024 * 1024,
            max_listed_set_aside: 10_000,
        }
    }
}

impl IngestConfig {
    /// Checks that the values make sense together.
    pub fn validate(&self) -> Result<(), IngestError> {
        if self.chunk_tokens < 16 {
            return Err(IngestError::InvalidConfig(format!(
                "chunk_tokens is {}, it must be at least 16",
                self.chunk_tokens
            )));
        }
        if self.chunk_overlap >= self.chunk_tokens {
            return Err(IngestError::InvalidConfig(format!(
                "chunk_overlap ({}) must be smaller than chunk_tokens ({})",
                self.chunk_overlap, self.chunk_tokens
            )));
        }
        if self.pdf_timeout.is_zero() {
            return Err(IngestError::InvalidConfig(
                "pdf_timeout must be longer than zero".into(),
            ));
        }
        if self.max_file_bytes == 0 {
            return Err(IngestError::InvalidConfig(
                "max_file_bytes must be above zero".into(),
            ));
        }
        Ok(())
    }
}

/// A property column's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// Kept as text.
    String,
    /// A 64-bit integer.
    Int,
    /// A 64-bit float.
    Float,
    /// `true`/`false`, `yes`/`no`, `1`/`0` (any case).
    Bool,
    /// An ISO 8601 date, `YYYY-MM-DD`.
    Date,
}

/// Text encoding of a CSV file: `"utf-8"` (default) or `"latin-1"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum CsvEncoding {
    /// UTF-8 (a BOM is skipped; invalid bytes are replaced and counted).
    #[default]
    #[serde(rename = "utf-8", alias = "utf8", alias = "UTF-8")]
    Utf8,
    /// ISO-8859-1: every byte is one character.
    #[serde(
        rename = "latin-1",
        alias = "latin1",
        alias = "iso-8859-1",
        alias = "ISO-8859-1"
    )]
    Latin1,
}

/// The whole mapping file: one entry per CSV file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvMapping {
    /// The per-file mappings.
    #[serde(default)]
    pub csv: Vec<CsvFileMapping>,
}

/// How one CSV file maps to the graph.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvFileMapping {
    /// The file name this entry applies to (`airports.csv`), matched against
    /// the last component of each CSV path.
    pub file: String,
    /// Field delimiter, one ASCII character (default `,`).
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
    /// Whether the first line is a header (default true).
    #[serde(default = "default_true")]
    pub has_headers: bool,
    /// Column names for a file without a header, in order.
    #[serde(default)]
    pub columns: Vec<String>,
    /// Text encoding (default UTF-8).
    #[serde(default)]
    pub encoding: CsvEncoding,
    /// Lines starting with this ASCII character are comments.
    #[serde(default)]
    pub comment: Option<char>,
    /// Escape character inside quoted fields (e.g. `\\`), besides doubled quotes.
    #[serde(default)]
    pub escape: Option<char>,
    /// The node each row becomes, if any.
    #[serde(default)]
    pub node: Option<NodeMapping>,
    /// Relations each row yields.
    #[serde(default)]
    pub relations: Vec<RelationMapping>,
}

fn default_delimiter() -> char {
    ','
}

fn default_true() -> bool {
    true
}

/// A row → node mapping.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeMapping {
    /// The node label.
    pub label: Label,
    /// The column holding the node's key.
    pub id_column: String,
    /// Property columns and their types; the property key is the column
    /// name normalised as a [`PropertyKey`].
    #[serde(default)]
    pub properties: BTreeMap<String, ColumnType>,
}

/// One end of a mapped relation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEnd {
    /// Label of the node at this end.
    pub label: Label,
    /// Column holding that node's key.
    pub column: String,
}

/// A row → relation mapping.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelationMapping {
    /// The relationship type.
    #[serde(rename = "type")]
    pub rel_type: RelType,
    /// Start node; omitted means the row's own node.
    #[serde(default)]
    pub from: Option<NodeEnd>,
    /// End node.
    pub to: NodeEnd,
    /// Property columns and their types.
    #[serde(default)]
    pub properties: BTreeMap<String, ColumnType>,
}

impl CsvMapping {
    /// Reads and checks a mapping file.
    pub fn from_file(path: &Path) -> Result<Self, IngestError> {
        let text = std::fs::read_to_string(path).map_err(|source| IngestError::MappingIo {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks mapping text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, IngestError> {
        let invalid = |message: String| IngestError::InvalidMapping {
            path: origin.to_path_buf(),
            message,
        };
        let mapping: CsvMapping = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let mut seen = std::collections::BTreeSet::new();
        for m in &mapping.csv {
            if !seen.insert(m.file.as_str()) {
                return Err(invalid(format!("file {:?} is mapped twice", m.file)));
            }
            if !m.delimiter.is_ascii()
                || m.comment.is_some_and(|c| !c.is_ascii())
                || m.escape.is_some_and(|c| !c.is_ascii())
            {
                return Err(invalid(format!(
                    "{}: delimiter, comment and escape must be ASCII characters",
                    m.file
                )));
            }
            if m.node.is_none() && m.relations.is_empty() {
                return Err(invalid(format!(
                    "{}: declares neither a node nor a relation",
                    m.file
                )));
            }
            if !m.has_headers && m.columns.is_empty() {
                return Err(invalid(format!(
                    "{}: has_headers = false needs a `columns` list",
                    m.file
                )));
            }
            for r in &m.relations {
                if r.from.is_none() && m.node.is_none() {
                    return Err(invalid(format!(
                        "{}: relation {} has no `from` and the file maps no node",
                        m.file, r.rel_type
                    )));
                }
            }
            let property_columns = m
                .node
                .iter()
                .flat_map(|n| n.properties.keys())
                .chain(m.relations.iter().flat_map(|r| r.properties.keys()));
            for column in property_columns {
                PropertyKey::new(column)
                    .map_err(|e| invalid(format!("{}: column {column:?}: {e}", m.file)))?;
            }
        }
        Ok(mapping)
    }

    /// The entry for a CSV at `path`, matched by file name.
    pub fn for_path(&self, path: &Path) -> Option<&CsvFileMapping> {
        let name = path.file_name()?.to_str()?;
        self.csv.iter().find(|m| m.file == name)
    }
}
