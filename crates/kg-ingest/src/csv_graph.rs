//! CSV rows to graph nodes and relations, through a mapping, without an LLM.
//!
//! Rows are streamed: one row is decoded, mapped and emitted before the next
//! is read, so a CSV of any size is read in constant memory. A row that cannot
//! be mapped (wrong number of fields, a number that does not parse, an empty
//! key) is emitted as one `bad_csv_row` set-aside item naming the file and
//! line, and nothing else of that row is emitted: a row is all or nothing.
//! The rest of the file goes on.
//!
//! A relation end whose key matches no node read in the run (see
//! [`KeyIndex`]) is not emitted: the store would MERGE an empty placeholder
//! node for it. That relation becomes one `unknown_endpoint` set-aside item
//! naming the file, line, label and key; the rest of its row is kept.
//!
//! A field that is not valid UTF-8 (in a file the mapping does not declare
//! Latin-1) is decoded as Windows-1252 and counted, so that the run can warn.
//!
//! An empty property cell is a missing property, not an error (CSV has no
//! null). Keys are trimmed ([`NodeId::new`] trims too), so ` ATL` and `ATL`
//! are one airport.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use kg_core::{
    GraphEdge, GraphNode, Label, NodeId, NodeRef, PropertyKey, PropertyValue, Record, RelType,
    SetAside, Stage,
};

use crate::config::{ColumnType, CsvEncoding, CsvFileMapping, CsvMapping};
use crate::error::SetAsideReason;
use crate::text::{decode_latin1, decode_windows_1252};

/// Counts from one CSV file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct CsvStats {
    pub rows: u64,
    /// Fields (header names included) that were not valid UTF-8 and were
    /// decoded as Windows-1252 instead.
    pub windows_1252_fields: u64,
    /// The line of the first such field.
    pub first_windows_1252_line: Option<u64>,
}

/// Why a whole CSV file was given up.
#[derive(Debug)]
pub(crate) enum CsvFileFailure {
    /// Set aside the file with this reason and detail.
    SetAside(SetAsideReason, String),
    /// The output channel is closed: stop the run.
    OutputClosed,
}

/// The output receiver is gone.
#[derive(Debug)]
pub(crate) struct OutputClosed;

struct Property {
    key: PropertyKey,
    column: usize,
    name: String,
    column_type: ColumnType,
}

struct End {
    label: Label,
    /// `None`: the row's own node.
    column: Option<(usize, String)>,
    /// Marked `external` in the mapping: the key is not checked.
    external: bool,
}

/// The keys of the nodes read in this run, for each label a relation end
/// checks (see [`crate::CsvMapping::checked_labels`]): one `String` per key.
#[derive(Debug, Default)]
pub(crate) struct KeyIndex {
    labels: HashMap<Label, LabelKeys>,
}

#[derive(Debug, Default)]
struct LabelKeys {
    keys: HashSet<String>,
    /// Node files of this label read in this run.
    files_read: u64,
    /// The mapping entries that map this label's nodes.
    node_files: Vec<String>,
}

impl KeyIndex {
    /// An empty index for the labels `mapping` checks.
    pub(crate) fn new(mapping: &CsvMapping) -> Self {
        let labels = mapping
            .checked_labels()
            .into_iter()
            .map(|label| {
                let node_files = mapping
                    .node_files(label)
                    .into_iter()
                    .map(str::to_string)
                    .collect();
                let keys = LabelKeys {
                    node_files,
                    ..LabelKeys::default()
                };
                (label.clone(), keys)
            })
            .collect();
        Self { labels }
    }

    /// Whether keys of `label` are kept.
    pub(crate) fn wants(&self, label: &Label) -> bool {
        self.labels.contains_key(label)
    }

    /// Remembers a node's key (if its label is checked).
    pub(crate) fn insert(&mut self, label: &Label, key: &str) {
        if let Some(l) = self.labels.get_mut(label) {
            if !l.keys.contains(key) {
                l.keys.insert(key.to_string());
            }
        }
    }

    /// Notes that a node file of `label` was read.
    pub(crate) fn file_read(&mut self, label: &Label) {
        if let Some(l) = self.labels.get_mut(label) {
            l.files_read += 1;
        }
    }

    /// `None` when `key` is a known `label` node, else why not.
    fn unknown(&self, label: &Label, key: &str) -> Option<String> {
        let Some(l) = self.labels.get(label) else {
            return Some(format!("no {label} node is known in this run"));
        };
        if l.keys.contains(key) {
            return None;
        }
        let files = l.node_files.join(", ");
        Some(if l.files_read == 0 {
            format!(
                "no {label} node file ({files}) was read in this run, so no {label} node has key {key:?}; ingest it together with this file, or mark this end `external = true` in the CSV mapping if those nodes are loaded separately"
            )
        } else {
            format!(
                "no {label} node has key {key:?} (the {label} nodes come from {files}, {} keys)",
                l.keys.len()
            )
        })
    }
}

struct Relation {
    rel_type: RelType,
    from: End,
    to: End,
    properties: Vec<Property>,
}

struct Node {
    label: Label,
    id_column: (usize, String),
    properties: Vec<Property>,
}

/// A mapping with column names resolved to positions.
struct Compiled {
    node: Option<Node>,
    relations: Vec<Relation>,
}

fn mismatch(source: &str, what: String) -> CsvFileFailure {
    CsvFileFailure::SetAside(
        SetAsideReason::CsvMappingMismatch,
        format!("{source}: {what}"),
    )
}

fn compile(
    mapping: &CsvFileMapping,
    headers: &[String],
    source: &str,
) -> Result<Compiled, CsvFileFailure> {
    let position = |name: &str| -> Result<(usize, String), CsvFileFailure> {
        headers
            .iter()
            .position(|h| h == name)
            .map(|i| (i, name.to_string()))
            .ok_or_else(|| {
                mismatch(
                    source,
                    format!("the mapping names column {name:?}, which the file lacks (columns: {headers:?})"),
                )
            })
    };
    let properties =
        |spec: &BTreeMap<String, ColumnType>| -> Result<Vec<Property>, CsvFileFailure> {
            spec.iter()
                .map(|(name, column_type)| {
                    let (column, name) = position(name)?;
                    let key = PropertyKey::new(&name)
                        .map_err(|e| mismatch(source, format!("column {name:?}: {e}")))?;
                    Ok(Property {
                        key,
                        column,
                        name,
                        column_type: *column_type,
                    })
                })
                .collect()
        };
    let node = match &mapping.node {
        Some(n) => Some(Node {
            label: n.label.clone(),
            id_column: position(&n.id_column)?,
            properties: properties(&n.properties)?,
        }),
        None => None,
    };
    let mut relations = Vec::new();
    for r in &mapping.relations {
        let from = match (&r.from, &node) {
            (Some(end), _) => End {
                label: end.label.clone(),
                column: Some(position(&end.column)?),
                external: end.external,
            },
            (None, Some(n)) => End {
                label: n.label.clone(),
                column: None,
                external: false,
            },
            (None, None) => {
                return Err(mismatch(
                    source,
                    format!("relation {} has no `from` and no node", r.rel_type),
                ))
            }
        };
        relations.push(Relation {
            rel_type: r.rel_type.clone(),
            from,
            to: End {
                label: r.to.label.clone(),
                column: Some(position(&r.to.column)?),
                external: r.to.external,
            },
            properties: properties(&r.properties)?,
        });
    }
    Ok(Compiled { node, relations })
}

/// Parses an ISO `YYYY-MM-DD` date (checks ranges, not the calendar).
fn parse_date(v: &str) -> Option<String> {
    let b = v.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    if b.len() != 10 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    if !(digits(0..4) && digits(5..7) && digits(8..10)) {
        return None;
    }
    let month: u32 = v.get(5..7)?.parse().ok()?;
    let day: u32 = v.get(8..10)?.parse().ok()?;
    ((1..=12).contains(&month) && (1..=31).contains(&day)).then(|| v.to_string())
}

fn parse_value(raw: &str, column_type: ColumnType) -> Result<PropertyValue, String> {
    match column_type {
        ColumnType::String => Ok(PropertyValue::String(raw.to_string())),
        ColumnType::Int => raw
            .parse::<i64>()
            .map(PropertyValue::Int)
            .map_err(|e| format!("{raw:?} is not an integer ({e})")),
        ColumnType::Float => match raw.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(PropertyValue::Float(f)),
            Ok(_) => Err(format!("{raw:?} is not a finite number")),
            Err(e) => Err(format!("{raw:?} is not a number ({e})")),
        },
        ColumnType::Bool => match raw.to_ascii_lowercase().as_str() {
            "true" | "yes" | "y" | "1" => Ok(PropertyValue::Bool(true)),
            "false" | "no" | "n" | "0" => Ok(PropertyValue::Bool(false)),
            _ => Err(format!("{raw:?} is not a boolean")),
        },
        ColumnType::Date => parse_date(raw)
            .map(PropertyValue::Date)
            .ok_or_else(|| format!("{raw:?} is not a YYYY-MM-DD date")),
    }
}

fn read_properties(
    fields: &[String],
    spec: &[Property],
) -> Result<BTreeMap<PropertyKey, PropertyValue>, String> {
    let mut out = BTreeMap::new();
    for p in spec {
        let raw = fields.get(p.column).map(|s| s.trim()).unwrap_or_default();
        if raw.is_empty() {
            continue;
        }
        let value =
            parse_value(raw, p.column_type).map_err(|e| format!("column {:?}: {e}", p.name))?;
        out.insert(p.key.clone(), value);
    }
    Ok(out)
}

fn key_of<'a>(fields: &'a [String], (column, name): &(usize, String)) -> Result<&'a str, String> {
    match fields.get(*column).map(|s| s.trim()) {
        Some(k) if !k.is_empty() => Ok(k),
        _ => Err(format!("key column {name:?} is empty")),
    }
}

/// Maps one decoded row to its records, or says why it cannot be. With
/// `keys`, a relation whose checked end matches no known node becomes an
/// `unknown_endpoint` set-aside instead of an edge (the rest of the row is
/// kept: its node, if any, is known to other files' relations already).
fn map_row(
    compiled: &Compiled,
    fields: &[String],
    source: &str,
    line: u64,
    keys: Option<&KeyIndex>,
) -> Result<Vec<Record>, String> {
    let mut records = Vec::with_capacity(1 + compiled.relations.len());
    let mut own: Option<NodeRef> = None;
    if let Some(node) = &compiled.node {
        let key = key_of(fields, &node.id_column)?;
        let id = NodeId::new(&node.label, key);
        own = Some(NodeRef {
            label: node.label.clone(),
            id: id.clone(),
        });
        records.push(Record::Node(GraphNode {
            id,
            label: node.label.clone(),
            key: key.to_string(),
            properties: read_properties(fields, &node.properties)?,
            source: source.to_string(),
            line,
        }));
    }
    for rel in &compiled.relations {
        let end = |end: &End| -> Result<NodeRef, String> {
            match (&end.column, &own) {
                (Some(col), _) => Ok(NodeRef {
                    label: end.label.clone(),
                    id: NodeId::new(&end.label, key_of(fields, col)?),
                }),
                (None, Some(own)) => Ok(own.clone()),
                (None, None) => Err("relation start is the row's node, but there is none".into()),
            }
        };
        records.push(Record::Edge(GraphEdge {
            rel_type: rel.rel_type.clone(),
            from: end(&rel.from)?,
            to: end(&rel.to)?,
            properties: read_properties(fields, &rel.properties)?,
            source: source.to_string(),
            line,
        }));
    }
    // Only once the whole row is known to map: a malformed row is one
    // `bad_csv_row`, whatever its keys.
    if let Some(keys) = keys {
        // The edges are the last records, one per relation, in order.
        let first_edge = records.len().saturating_sub(compiled.relations.len());
        for (i, rel) in compiled.relations.iter().enumerate() {
            let problem = [("from", &rel.from), ("to", &rel.to)].into_iter().find_map(
                |(side, end)| match &end.column {
                    Some(col) if !end.external => {
                        let key = key_of(fields, col).ok()?;
                        keys.unknown(&end.label, key).map(|why| {
                            format!(
                                "{} {side} {} (column {:?}): {why}",
                                rel.rel_type, end.label, col.1
                            )
                        })
                    }
                    _ => None,
                },
            );
            if let (Some(problem), Some(slot)) = (problem, records.get_mut(first_edge + i)) {
                *slot = Record::SetAside(SetAside {
                    stage: Stage::Ingest,
                    item: format!("{source}:{line}"),
                    reason: SetAsideReason::UnknownEndpoint,
                    detail: format!("{source}:{line}: {problem}"),
                });
            }
        }
    }
    Ok(records)
}

fn bad_row(source: &str, line: u64, detail: String) -> Record {
    Record::SetAside(SetAside {
        stage: Stage::Ingest,
        item: format!("{source}:{line}"),
        reason: SetAsideReason::BadCsvRow,
        detail: format!("{source}:{line}: {detail}"),
    })
}

/// Drops comment lines before the csv parser sees them, remembering where:
/// the csv crate's own comment support does not count comment lines, so
/// every line number after one would be off. [`CommentFilter::lines_before`]
/// gives the correction for a record starting at a given byte.
struct CommentFilter<R> {
    inner: R,
    comment: Option<u8>,
    at_line_start: bool,
    in_comment: bool,
    /// Bytes handed to the parser so far.
    emitted: u64,
    /// Parser byte offset at which each dropped comment line sat.
    dropped_at: Vec<u64>,
}

impl<R: BufRead> CommentFilter<R> {
    fn new(inner: R, comment: Option<u8>) -> Self {
        Self {
            inner,
            comment,
            at_line_start: true,
            in_comment: false,
            emitted: 0,
            dropped_at: Vec::new(),
        }
    }

    /// Comment lines dropped at or before parser byte `byte`.
    fn lines_before(&self, byte: u64) -> u64 {
        self.dropped_at.partition_point(|&b| b <= byte) as u64
    }
}

impl<R: BufRead> std::io::Read for CommentFilter<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some(comment) = self.comment else {
            return self.inner.read(buf);
        };
        let mut written = 0;
        while written < buf.len() {
            let available = self.inner.fill_buf()?;
            if available.is_empty() {
                break;
            }
            let mut used = 0;
            for &b in available {
                if written == buf.len() {
                    break;
                }
                used += 1;
                if self.at_line_start && b == comment {
                    self.in_comment = true;
                    self.dropped_at.push(self.emitted + written as u64);
                }
                self.at_line_start = b == b'\n';
                if self.in_comment {
                    if b == b'\n' {
                        self.in_comment = false;
                    }
                    continue;
                }
                if let Some(slot) = buf.get_mut(written) {
                    *slot = b;
                    written += 1;
                }
            }
            self.inner.consume(used);
        }
        self.emitted += written as u64;
        Ok(written)
    }
}

/// Streams one CSV file through its mapping, handing each record to `emit`.
/// Blocking: call it from the blocking pool.
/// With `keys`, relation ends are checked against the nodes read so far.
pub(crate) fn map_csv_file(
    path: &Path,
    source: &str,
    mapping: &CsvFileMapping,
    keys: Option<&KeyIndex>,
    emit: &mut dyn FnMut(Record) -> Result<(), OutputClosed>,
) -> Result<CsvStats, CsvFileFailure> {
    let unreadable = |e: &dyn std::fmt::Display| {
        CsvFileFailure::SetAside(SetAsideReason::UnreadableFile, format!("{source}: {e}"))
    };
    let file = File::open(path).map_err(|e| unreadable(&e))?;
    let mut input = BufReader::with_capacity(64 * 1024, file);
    // Skip a UTF-8 byte order mark, which would otherwise glue itself to
    // the first header name.
    if input
        .fill_buf()
        .map_err(|e| unreadable(&e))?
        .starts_with(b"\xEF\xBB\xBF")
    {
        input.consume(3);
    }
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(u8::try_from(mapping.delimiter).unwrap_or(b','))
        .escape(mapping.escape.and_then(|c| u8::try_from(c).ok()))
        .has_headers(mapping.has_headers)
        .from_reader(CommentFilter::new(
            input,
            mapping.comment.and_then(|c| u8::try_from(c).ok()),
        ));

    let mut stats = CsvStats::default();
    // UTF-8 unless the mapping says otherwise; a field that is not valid
    // UTF-8 is not mangled into U+FFFD but read as Windows-1252 (what
    // spreadsheets export as "Latin-1"/"ANSI"), and counted so the run warns.
    let decode = |bytes: &[u8], line: u64, stats: &mut CsvStats| -> String {
        match mapping.encoding {
            CsvEncoding::Latin1 => decode_latin1(bytes),
            CsvEncoding::Utf8 => match std::str::from_utf8(bytes) {
                Ok(s) => s.to_string(),
                Err(_) => {
                    stats.windows_1252_fields += 1;
                    stats.first_windows_1252_line.get_or_insert(line);
                    decode_windows_1252(bytes)
                }
            },
        }
    };

    let headers: Vec<String> = if mapping.has_headers {
        let raw = reader.byte_headers().map_err(|e| unreadable(&e))?.clone();
        let line = raw.position().map_or(1, csv::Position::line);
        raw.iter()
            .map(|h| decode(h, line, &mut stats).trim().to_string())
            .collect()
    } else {
        mapping.columns.clone()
    };
    let compiled = compile(mapping, &headers, source)?;

    let mut record = csv::ByteRecord::new();
    let mut fields: Vec<String> = Vec::with_capacity(headers.len());
    loop {
        let true_line = |p: &csv::Position, r: &csv::Reader<CommentFilter<BufReader<File>>>| {
            p.line() + r.get_ref().lines_before(p.byte())
        };
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => match e.kind() {
                csv::ErrorKind::UnequalLengths {
                    expected_len, len, ..
                } => {
                    stats.rows += 1;
                    let line = e.position().map_or(0, |p| true_line(p, &reader));
                    let detail = format!("{len} fields where the header has {expected_len}");
                    emit(bad_row(source, line, detail))
                        .map_err(|_| CsvFileFailure::OutputClosed)?;
                    continue;
                }
                _ => return Err(unreadable(&e)),
            },
        }
        stats.rows += 1;
        let line = record.position().map_or(0, |p| true_line(p, &reader));
        fields.clear();
        for f in record.iter() {
            let decoded = decode(f, line, &mut stats);
            fields.push(decoded);
        }
        let outcome = if fields.len() != headers.len() {
            Err(format!(
                "{} fields where {} columns are declared",
                fields.len(),
                headers.len()
            ))
        } else {
            map_row(&compiled, &fields, source, line, keys)
        };
        match outcome {
            Ok(records) => {
                for r in records {
                    emit(r).map_err(|_| CsvFileFailure::OutputClosed)?;
                }
            }
            Err(detail) => {
                emit(bad_row(source, line, detail)).map_err(|_| CsvFileFailure::OutputClosed)?;
            }
        }
    }
    Ok(stats)
}

/// The keys of the nodes a CSV file yields (rows that map; relation ends
/// not checked), read ahead of its records when its own relations need
/// them. `None` when the file cannot be read at all; its records pass then
/// says why.
pub(crate) fn node_keys(
    path: &Path,
    source: &str,
    mapping: &CsvFileMapping,
) -> Option<HashSet<String>> {
    let mut keys = HashSet::new();
    let mut collect = |record: Record| {
        if let Record::Node(n) = record {
            keys.insert(n.key);
        }
        Ok(())
    };
    map_csv_file(path, source, mapping, None, &mut collect).ok()?;
    Some(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comment_lines_are_dropped_and_remembered() -> std::io::Result<()> {
        use std::io::Read;
        let input = b"a;1\n# note; here\nb;2\n#\nc" as &[u8];
        let mut filter = CommentFilter::new(input, Some(b'#'));
        let mut out = String::new();
        filter.read_to_string(&mut out)?;
        assert_eq!(out, "a;1\nb;2\nc");
        assert_eq!(filter.lines_before(0), 0);
        assert_eq!(
            filter.lines_before(4),
            1,
            "b;2 starts at byte 4, after one comment"
        );
        assert_eq!(filter.lines_before(8), 2);
        Ok(())
    }

    #[test]
    fn values_parse_by_type() {
        assert_eq!(
            parse_value("42", ColumnType::Int),
            Ok(PropertyValue::Int(42))
        );
        assert!(parse_value("4x2", ColumnType::Int).is_err());
        assert_eq!(
            parse_value("-89.23", ColumnType::Float),
            Ok(PropertyValue::Float(-89.23))
        );
        assert!(parse_value("NaN", ColumnType::Float).is_err());
        assert_eq!(
            parse_value("Yes", ColumnType::Bool),
            Ok(PropertyValue::Bool(true))
        );
        assert!(parse_value("maybe", ColumnType::Bool).is_err());
        assert_eq!(
            parse_value("1993-08-16", ColumnType::Date),
            Ok(PropertyValue::Date("1993-08-16".into()))
        );
        assert!(parse_value("1993-13-16", ColumnType::Date).is_err());
        assert!(parse_value("16/08/1993", ColumnType::Date).is_err());
    }
}
