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
//! A relation without `from` starts at the row's own node. An end's label
//! must be mapped as a node by some entry, unless the end says
//! `external = true` (its nodes come from elsewhere). Labels, types and
//! property keys are kg-core validated identifiers, checked when the mapping
//! is parsed; a name that had to be rewritten is reported ([`Renamed`]), and
//! two spellings that become one identifier are refused.

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
    /// UTF-8 (a BOM is skipped). A field whose bytes are not valid UTF-8
    /// is decoded as Windows-1252 (the Latin-1 superset spreadsheets write),
    /// and the run warns, naming the file and the encoding it assumed.
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
    /// Labels, relationship types and property keys the mapping spells
    /// differently from the identifier they became (`geo location` →
    /// `GeoLocation`), each once. Filled by [`CsvMapping::parse`], which also
    /// logs each at warn level; [`crate::ingest`] repeats them in
    /// [`crate::IngestSummary::warnings`].
    #[serde(skip)]
    pub renamed: Vec<Renamed>,
}

/// A name from the mapping that was rewritten into a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renamed {
    /// `"label"`, `"relationship type"` or `"property key"`.
    pub kind: &'static str,
    /// As written in the mapping (for a property key: the CSV column).
    pub original: String,
    /// The identifier it became.
    pub identifier: String,
    /// The `file` entry of the mapping where it was first seen.
    pub file: String,
}

impl std::fmt::Display for Renamed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CSV mapping ({}): {} {:?} is used as {:?}",
            self.file, self.kind, self.original, self.identifier
        )
    }
}

/// The names of a mapping as written, before they became identifiers: read
/// from the same TOML as [`CsvMapping`], entry for entry.
#[derive(Deserialize)]
struct Spelled {
    #[serde(default)]
    csv: Vec<SpelledFile>,
}

#[derive(Deserialize)]
struct SpelledFile {
    #[serde(default)]
    node: Option<SpelledNode>,
    #[serde(default)]
    relations: Vec<SpelledRelation>,
}

#[derive(Deserialize)]
struct SpelledNode {
    label: String,
    #[serde(default)]
    properties: BTreeMap<String, toml::Value>,
}

#[derive(Deserialize)]
struct SpelledEnd {
    label: String,
}

#[derive(Deserialize)]
struct SpelledRelation {
    #[serde(rename = "type")]
    rel_type: String,
    #[serde(default)]
    from: Option<SpelledEnd>,
    to: SpelledEnd,
    #[serde(default)]
    properties: BTreeMap<String, toml::Value>,
}

/// Collects renames and refuses two spellings of one identifier.
#[derive(Default)]
struct Spellings {
    /// (kind, scope, identifier) → (original, file) of its first use.
    first: BTreeMap<(&'static str, String, String), (String, String)>,
    renamed: Vec<Renamed>,
}

impl Spellings {
    /// Notes that `original` (in the entry for `file`) became `identifier`;
    /// `scope` is where identifiers must be unique: "" (the whole mapping)
    /// for labels and relationship types; one node or relation of one entry
    /// for property keys, since two columns becoming one key would overwrite
    /// each other, while one key spelled differently by the headers of two
    /// files is the same property on purpose.
    fn note(
        &mut self,
        kind: &'static str,
        scope: &str,
        original: &str,
        identifier: &str,
        file: &str,
    ) -> Result<(), String> {
        let slot = (kind, scope.to_string(), identifier.to_string());
        match self.first.get(&slot) {
            Some((first, first_file)) if first != original => {
                let within = if scope.is_empty() {
                    String::new()
                } else {
                    format!(" of {scope}")
                };
                return Err(format!(
                    "{kind}s{within} {first:?} (entry {first_file}) and {original:?} (entry {file}) both become {identifier:?} and would be merged; spell them the same, or make them different identifiers"
                ));
            }
            Some(_) => return Ok(()),
            None => {}
        }
        self.first
            .insert(slot, (original.to_string(), file.to_string()));
        if original != identifier {
            self.renamed.push(Renamed {
                kind,
                original: original.to_string(),
                identifier: identifier.to_string(),
                file: file.to_string(),
            });
        }
        Ok(())
    }
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

impl CsvFileMapping {
    /// Whether some relation of this entry has an end whose key is checked
    /// (not `external`, not the row's own node): such a file is read after
    /// the node files, once every key is known.
    pub fn checks_keys(&self) -> bool {
        self.relations
            .iter()
            .flat_map(|r| r.from.iter().chain([&r.to]))
            .any(|end| !end.external)
    }
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
    /// The nodes of this label come from outside this run (an earlier run,
    /// another tool): their keys are not checked, and a key that matches no
    /// node leaves an empty placeholder node in the store. Without it, the
    /// label must be mapped as a node by some entry, and a relation whose
    /// key matches none of the nodes read in the run is set aside
    /// (`unknown_endpoint`).
    #[serde(default)]
    pub external: bool,
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

/// Every label, relationship type and property key of `mapping` next to
/// its spelling in the file: the renames, or why two spellings clash.
fn check_spellings(mapping: &CsvMapping, spelled: &Spelled) -> Result<Vec<Renamed>, String> {
    let mut spellings = Spellings::default();
    for (m, raw) in mapping.csv.iter().zip(&spelled.csv) {
        let file = m.file.as_str();
        if let (Some(node), Some(raw_node)) = (&m.node, &raw.node) {
            let label = node.label.as_str();
            spellings.note("label", "", &raw_node.label, label, file)?;
            for column in raw_node.properties.keys() {
                if let Ok(key) = PropertyKey::new(column) {
                    let scope = format!("the {label} nodes of {file}");
                    spellings.note("property key", &scope, column, key.as_str(), file)?;
                }
            }
        }
        for (r, raw_r) in m.relations.iter().zip(&raw.relations) {
            let rel_type = r.rel_type.as_str();
            spellings.note("relationship type", "", &raw_r.rel_type, rel_type, file)?;
            if let (Some(from), Some(raw_from)) = (&r.from, &raw_r.from) {
                spellings.note("label", "", &raw_from.label, from.label.as_str(), file)?;
            }
            spellings.note("label", "", &raw_r.to.label, r.to.label.as_str(), file)?;
            for column in raw_r.properties.keys() {
                if let Ok(key) = PropertyKey::new(column) {
                    spellings.note(
                        "property key",
                        &format!("the {rel_type} relations of {file}"),
                        column,
                        key.as_str(),
                        file,
                    )?;
                }
            }
        }
    }
    Ok(spellings.renamed)
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
        // toml's message names the line, the column and the offending key
        // (`unknown field `lable`, expected one of `label`, ...`).
        let mut mapping: CsvMapping = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let spelled: Spelled = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        mapping.renamed = check_spellings(&mapping, &spelled).map_err(invalid)?;
        for r in &mapping.renamed {
            tracing::warn!(mapping = %origin.display(), "{r}");
        }
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
                for end in r.from.iter().chain([&r.to]) {
                    if !end.external && mapping.node_files(&end.label).is_empty() {
                        return Err(invalid(format!(
                            "{}: relation {} ends at {}, which no entry maps as a node; map a node file for {}, or mark that end `external = true` if those nodes come from elsewhere",
                            m.file, r.rel_type, end.label, end.label
                        )));
                    }
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

    /// The `file` names of the entries that map rows to `label` nodes.
    pub fn node_files(&self, label: &Label) -> Vec<&str> {
        self.csv
            .iter()
            .filter(|m| m.node.as_ref().is_some_and(|n| n.label == *label))
            .map(|m| m.file.as_str())
            .collect()
    }

    /// The labels whose keys relation ends are checked against (ends not
    /// marked `external`).
    pub fn checked_labels(&self) -> std::collections::BTreeSet<&Label> {
        self.csv
            .iter()
            .flat_map(|m| m.relations.iter())
            .flat_map(|r| r.from.iter().chain([&r.to]))
            .filter(|end| !end.external)
            .map(|end| &end.label)
            .collect()
    }

    /// The entry for a CSV at `path`, matched by file name.
    pub fn for_path(&self, path: &Path) -> Option<&CsvFileMapping> {
        let name = path.file_name()?.to_str()?;
        self.csv.iter().find(|m| m.file == name)
    }
}
