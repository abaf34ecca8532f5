//! From records to batches: the write plan.
//!
//! A window of [`Record`]s is turned into rows grouped by what query writes
//! them ([`GroupKey`]): one group per node label set and per relationship
//! type, so that each group is one parameterised `UNWIND $rows` statement
//! whose only variable parts are validated identifiers ([`Label`],
//! [`RelType`]) and whose data is all in `$rows`.
//!
//! Groups fall in two [`Phase`]s: node groups (MERGE on id, safe to run
//! concurrently) and relationship groups (which lock both end nodes, so the
//! writer runs them one after another, after the nodes). Relationship
//! queries MERGE their end nodes by id too, so a relation whose node arrives
//! in a later window still lands, on a placeholder that the node's own
//! record fills in later.
//!
//! Every row remembers the index of the record it came from: a batch that
//! fails is dead-lettered as the *records* behind it, which a re-run writes
//! again whole (writing is idempotent, so rows of the record that had landed
//! are merged onto themselves).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;

use kg_core::{EmbeddingTarget, EntityId, Label, PropertyValue, Record, RelType};

use crate::descriptions::encode_chunk_description;

/// A parameter value: the data half of a query, never query text.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// Null (only where a query reads it with `coalesce`).
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A list of strings (aliases, chunk ids).
    StrList(Vec<String>),
    /// An embedding vector.
    Vector(Vec<f32>),
    /// A property map for `SET n += $map`; it never holds a null, so `+=`
    /// never erases a property.
    Map(Vec<(String, Param)>),
}

/// One row of an `UNWIND $rows` batch: named fields.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Row {
    /// The fields, in the order the planner wrote them.
    pub fields: Vec<(&'static str, Param)>,
}

impl Row {
    fn with(mut self, key: &'static str, value: Param) -> Self {
        self.fields.push((key, value));
        self
    }

    /// The field named `key`.
    pub fn get(&self, key: &str) -> Option<&Param> {
        self.fields.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The string field named `key` (empty when absent or not a string).
    pub fn str(&self, key: &str) -> &str {
        match self.get(key) {
            Some(Param::Str(s)) => s,
            _ => "",
        }
    }
}

/// When a group is written: nodes first, then relationships.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// MERGE of nodes by id; batches may run concurrently.
    Nodes,
    /// MERGE of relationships; batches run one after another.
    Relationships,
}

/// What a group of rows is, and so which query writes it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GroupKey {
    /// `(:Document)` nodes.
    Documents,
    /// `(:Chunk)` nodes.
    Chunks,
    /// Resolved entities of one type: `(:Entity:<Type>)`, properties
    /// overwritten (non-null values only).
    Entities(Label),
    /// Entities as one chunk's extraction named them: properties set only
    /// where the node has none yet, so a resolved entity keeps its own.
    ExtractedEntities(Label),
    /// CSV-mapped nodes of one label.
    Nodes(Label),
    /// `Chunk.embedding` vectors (after the chunks, so a chunk is created
    /// by its own record, not by its vector).
    ChunkEmbeddings,
    /// `Entity.embedding` vectors (after the entities, so that an entity
    /// gets its type label when it is created).
    EntityEmbeddings,
    /// `(:Document)-[:HAS_CHUNK]->(:Chunk)`.
    HasChunk,
    /// `(:Chunk)-[:NEXT_CHUNK]->(:Chunk)`.
    NextChunk,
    /// `(:Chunk)-[:MENTIONS]->(:Entity)`.
    Mentions,
    /// Entity relations of one type.
    Relations(RelType),
    /// CSV-mapped relations of one type between two labels.
    Edges {
        /// The relationship type.
        rel_type: RelType,
        /// Label of the start node.
        from: Label,
        /// Label of the end node.
        to: Label,
    },
}

impl GroupKey {
    /// Nodes or relationships.
    pub fn phase(&self) -> Phase {
        match self {
            Self::Documents
            | Self::Chunks
            | Self::ChunkEmbeddings
            | Self::EntityEmbeddings
            | Self::Entities(_)
            | Self::ExtractedEntities(_)
            | Self::Nodes(_) => Phase::Nodes,
            Self::HasChunk
            | Self::NextChunk
            | Self::Mentions
            | Self::Relations(_)
            | Self::Edges { .. } => Phase::Relationships,
        }
    }

    /// The shape of the rows, for batch sizing: groups of one kind have rows
    /// of similar cost whatever their label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Documents => "documents",
            Self::Chunks => "chunks",
            Self::ChunkEmbeddings => "chunk_embeddings",
            Self::EntityEmbeddings => "entity_embeddings",
            Self::Entities(_) => "entities",
            Self::ExtractedEntities(_) => "extracted_entities",
            Self::Nodes(_) => "nodes",
            Self::HasChunk => "has_chunk",
            Self::NextChunk => "next_chunk",
            Self::Mentions => "mentions",
            Self::Relations(_) => "relations",
            Self::Edges { .. } => "edges",
        }
    }
}

impl fmt::Display for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Entities(l) => write!(f, "entities:{l}"),
            Self::ExtractedEntities(l) => write!(f, "extracted_entities:{l}"),
            Self::Nodes(l) => write!(f, "nodes:{l}"),
            Self::Relations(t) => write!(f, "relations:{t}"),
            Self::Edges { rel_type, from, to } => write!(f, "edges:{from}-{rel_type}->{to}"),
            other => f.write_str(other.kind()),
        }
    }
}

/// A row and the indices (in its window) of the records it came from
/// (more than one when rows for the same node were merged).
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRow {
    /// Indices of the source records in the window.
    pub records: Vec<usize>,
    /// The row.
    pub row: Row,
}

/// One group's rows, in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// What the rows are.
    pub key: GroupKey,
    /// The rows.
    pub rows: Vec<PlannedRow>,
}

/// One batch: rows of one group, written in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Running number within a write (1-based), for messages.
    pub number: u64,
    /// What the rows are.
    pub key: GroupKey,
    /// The rows.
    pub rows: Vec<Row>,
}

fn s(v: &str) -> Param {
    Param::Str(v.to_owned())
}

fn opt_str(v: &str) -> Option<Param> {
    (!v.is_empty()).then(|| s(v))
}

/// Converts a CSV property value; dates travel as ISO strings.
pub(crate) fn property_param(v: &PropertyValue) -> Param {
    match v {
        PropertyValue::String(x) | PropertyValue::Date(x) => s(x),
        PropertyValue::Int(x) => Param::Int(*x),
        PropertyValue::Float(x) => Param::Float(*x),
        PropertyValue::Bool(x) => Param::Bool(*x),
    }
}

/// Property keys kg sets itself on CSV-mapped nodes and edges; a CSV column
/// with one of these names is not written (it would overwrite the identity).
pub const RESERVED_PROPERTY_KEYS: &[&str] = &["id", "key", "kg_source", "kg_line", "kg_date_keys"];

fn csv_props(
    properties: &BTreeMap<kg_core::PropertyKey, PropertyValue>,
    source: &str,
    line: u64,
) -> Vec<(String, Param)> {
    let mut props = Vec::with_capacity(properties.len() + 3);
    let mut dates = Vec::new();
    for (k, v) in properties {
        if RESERVED_PROPERTY_KEYS.contains(&k.as_str()) {
            continue;
        }
        if matches!(v, PropertyValue::Date(_)) {
            dates.push(k.as_str().to_owned());
        }
        props.push((k.as_str().to_owned(), property_param(v)));
    }
    props.push(("kg_source".into(), s(source)));
    props.push(("kg_line".into(), Param::Int(line as i64)));
    if !dates.is_empty() {
        props.push(("kg_date_keys".into(), Param::StrList(dates)));
    }
    props
}

/// The row of one typed relation between two entities, from an extraction
/// (`overwrite` false: a chunk's view adds to what is there) or a resolved
/// relation (`overwrite` true).
///
/// `descriptions` are the chunks' own descriptions of it, as
/// [`crate::descriptions::encode_chunk_description`] entries: kept with
/// their chunks, so that removing a chunk removes what it said.
fn relation_row(
    source: &EntityId,
    target: &EntityId,
    description: &str,
    weight: f32,
    chunks: Vec<String>,
    descriptions: Vec<String>,
    overwrite: bool,
) -> Row {
    Row::default()
        .with("source", s(source.as_str()))
        .with("target", s(target.as_str()))
        .with("description", opt_str(description).unwrap_or(Param::Null))
        .with("weight", Param::Float(f64::from(weight)))
        .with("chunks", Param::StrList(chunks))
        .with("descriptions", Param::StrList(descriptions))
        .with("overwrite", Param::Bool(overwrite))
}

/// A `MENTIONS` row: `descriptions` are what the chunk said about the
/// entity (none, one, or several after a merge).
fn mention_row(chunk: &str, entity: &EntityId, descriptions: Vec<String>) -> Row {
    Row::default()
        .with("chunk", s(chunk))
        .with("entity", s(entity.as_str()))
        .with("descriptions", Param::StrList(descriptions))
}

/// The non-empty text of `d`, trimmed, as a list of none or one.
fn described(d: &str) -> Vec<String> {
    let d = d.trim();
    if d.is_empty() {
        Vec::new()
    } else {
        vec![d.to_owned()]
    }
}

fn dedup(mut v: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    v.retain(|x| seen.insert(x.clone()));
    v
}

/// The last chunk (id and index) of the most recent documents, so that
/// `NEXT_CHUNK` links a window's first chunk of a document to its
/// predecessor in an earlier window ([`plan_linked`]).
///
/// Bounded: it remembers [`ChunkTail::DOCUMENTS`] documents, the ones whose
/// chunks came last. That is plenty for what ingest sends (a document's
/// chunks in order, one document after the other); a document interleaved
/// with more than that many others may lose a link at a window boundary.
#[derive(Debug, Clone, Default)]
pub struct ChunkTail {
    /// Oldest first: (document id, index, chunk id).
    recent: VecDeque<(String, u32, String)>,
}

impl ChunkTail {
    /// How many documents it remembers.
    pub const DOCUMENTS: usize = 64;

    /// Remembers nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Documents remembered.
    pub fn len(&self) -> usize {
        self.recent.len()
    }

    /// Whether it remembers no document.
    pub fn is_empty(&self) -> bool {
        self.recent.is_empty()
    }

    /// The last chunk seen of `document`: its index and id.
    pub fn last_chunk(&self, document: &str) -> Option<(u32, &str)> {
        self.recent
            .iter()
            .rev()
            .find(|(d, _, _)| d == document)
            .map(|(_, index, id)| (*index, id.as_str()))
    }

    fn remember(&mut self, document: &str, index: u32, id: &str) {
        self.recent.retain(|(d, _, _)| d != document);
        self.recent
            .push_back((document.to_owned(), index, id.to_owned()));
        while self.recent.len() > Self::DOCUMENTS {
            self.recent.pop_front();
        }
    }
}

/// Plans a window of records into groups, in a fixed order (nodes first).
/// `SetAside` records produce no rows; the writer reports them.
///
/// `NEXT_CHUNK` links chunks of one document whose indices follow each other
/// within the window (the ingest stage emits a document's chunks together).
/// [`plan_linked`] also links across windows.
pub fn plan(records: &[Record]) -> Vec<Group> {
    plan_linked(records, &mut ChunkTail::new())
}

/// [`plan`], with `NEXT_CHUNK` across windows: a document's first chunk in
/// this window is linked to the last one `tail` remembers of it from an
/// earlier window when their indices follow each other (the link row
/// belongs to this window's chunk record; the earlier chunk is only named).
/// Then `tail` remembers this window's last chunk of each of its documents.
pub fn plan_linked(records: &[Record], tail: &mut ChunkTail) -> Vec<Group> {
    let mut groups: BTreeMap<GroupKey, Vec<PlannedRow>> = BTreeMap::new();
    let mut push = |key: GroupKey, record: usize, row: Row| {
        groups.entry(key).or_default().push(PlannedRow {
            records: vec![record],
            row,
        });
    };
    // document id -> index -> (chunk id, record)
    let mut chunk_order: HashMap<&str, BTreeMap<u32, (&str, usize)>> = HashMap::new();
    for (i, record) in records.iter().enumerate() {
        match record {
            Record::Document(d) => {
                let mut props = vec![
                    ("source".to_owned(), s(&d.source)),
                    ("sha256".to_owned(), s(&d.sha256)),
                    ("media_type".to_owned(), s(d.media_type.as_str())),
                    ("bytes".to_owned(), Param::Int(d.bytes as i64)),
                ];
                if let Some(t) = &d.title {
                    props.push(("title".into(), s(t)));
                }
                if let Some(p) = d.pages {
                    props.push(("pages".into(), Param::Int(i64::from(p))));
                }
                push(
                    GroupKey::Documents,
                    i,
                    Row::default()
                        .with("id", s(d.id.as_str()))
                        .with("props", Param::Map(props)),
                );
            }
            Record::Chunk(c) => {
                let mut props = vec![
                    ("document_id".to_owned(), s(c.document_id.as_str())),
                    ("index".to_owned(), Param::Int(i64::from(c.index))),
                    ("text".to_owned(), s(&c.text)),
                    ("tokens".to_owned(), Param::Int(i64::from(c.tokens))),
                    ("source".to_owned(), s(&c.source)),
                ];
                if let Some(p) = c.page_start {
                    props.push(("page_start".into(), Param::Int(i64::from(p))));
                }
                if let Some(p) = c.page_end {
                    props.push(("page_end".into(), Param::Int(i64::from(p))));
                }
                push(
                    GroupKey::Chunks,
                    i,
                    Row::default()
                        .with("id", s(c.id.as_str()))
                        .with("props", Param::Map(props)),
                );
                push(
                    GroupKey::HasChunk,
                    i,
                    Row::default()
                        .with("document", s(c.document_id.as_str()))
                        .with("chunk", s(c.id.as_str())),
                );
                chunk_order
                    .entry(c.document_id.as_str())
                    .or_default()
                    .insert(c.index, (c.id.as_str(), i));
            }
            Record::Extraction(x) => {
                for e in &x.entities {
                    push(
                        GroupKey::ExtractedEntities(e.entity_type.clone()),
                        i,
                        Row::default()
                            .with("id", s(e.id.as_str()))
                            .with("name", s(&e.name))
                            .with("type", s(e.entity_type.as_str()))
                            .with(
                                "description",
                                opt_str(&e.description).unwrap_or(Param::Null),
                            ),
                    );
                    push(
                        GroupKey::Mentions,
                        i,
                        mention_row(x.chunk_id.as_str(), &e.id, described(&e.description)),
                    );
                }
                for r in &x.relations {
                    let entries = described(&r.description)
                        .iter()
                        .map(|d| encode_chunk_description(x.chunk_id.as_str(), d))
                        .collect();
                    push(
                        GroupKey::Relations(r.rel_type.clone()),
                        i,
                        relation_row(
                            &r.source_id,
                            &r.target_id,
                            &r.description,
                            r.strength,
                            vec![x.chunk_id.to_string()],
                            entries,
                            false,
                        ),
                    );
                }
            }
            Record::Entity(e) => {
                let mut props = vec![
                    ("name".to_owned(), s(&e.name)),
                    ("type".to_owned(), s(e.entity_type.as_str())),
                ];
                if let Some(d) = opt_str(&e.description) {
                    props.push(("description".into(), d));
                }
                if !e.aliases.is_empty() {
                    props.push(("aliases".into(), Param::StrList(dedup(e.aliases.clone()))));
                }
                push(
                    GroupKey::Entities(e.entity_type.clone()),
                    i,
                    Row::default()
                        .with("id", s(e.id.as_str()))
                        .with("props", Param::Map(props)),
                );
                let described_only = e
                    .mention_descriptions
                    .keys()
                    .filter(|c| !e.chunk_ids.contains(c));
                for c in e.chunk_ids.iter().chain(described_only) {
                    let descriptions = e
                        .mention_descriptions
                        .get(c)
                        .map(|ds| ds.iter().flat_map(|d| described(d)).collect())
                        .unwrap_or_default();
                    push(
                        GroupKey::Mentions,
                        i,
                        mention_row(c.as_str(), &e.id, descriptions),
                    );
                }
            }
            Record::Relation(r) => push(
                GroupKey::Relations(r.rel_type.clone()),
                i,
                relation_row(
                    &r.source_id,
                    &r.target_id,
                    &r.description,
                    r.weight,
                    dedup(r.chunk_ids.iter().map(|c| c.to_string()).collect()),
                    dedup(
                        r.chunk_descriptions
                            .iter()
                            .flat_map(|(c, ds)| {
                                ds.iter()
                                    .flat_map(|d| described(d))
                                    .map(|d| encode_chunk_description(c.as_str(), &d))
                            })
                            .collect(),
                    ),
                    true,
                ),
            ),
            Record::Embedding(emb) => push(
                match emb.target {
                    EmbeddingTarget::Chunk => GroupKey::ChunkEmbeddings,
                    EmbeddingTarget::Entity => GroupKey::EntityEmbeddings,
                },
                i,
                Row::default()
                    .with("id", s(&emb.id))
                    .with("vector", Param::Vector(emb.vector.clone()))
                    .with("model", s(&emb.model)),
            ),
            Record::Node(n) => {
                let mut props = vec![("key".to_owned(), s(&n.key))];
                props.extend(csv_props(&n.properties, &n.source, n.line));
                push(
                    GroupKey::Nodes(n.label.clone()),
                    i,
                    Row::default()
                        .with("id", s(n.id.as_str()))
                        .with("props", Param::Map(props)),
                );
            }
            Record::Edge(e) => push(
                GroupKey::Edges {
                    rel_type: e.rel_type.clone(),
                    from: e.from.label.clone(),
                    to: e.to.label.clone(),
                },
                i,
                Row::default()
                    .with("from", s(e.from.id.as_str()))
                    .with("to", s(e.to.id.as_str()))
                    .with(
                        "props",
                        Param::Map(csv_props(&e.properties, &e.source, e.line)),
                    ),
            ),
            Record::SetAside(_) => {}
        }
    }
    // Which chunk of each document came last in the window (by position):
    // the tail is updated in that order, so it keeps the documents most
    // likely to go on in the next window.
    let mut last: Vec<(usize, &str, u32, &str)> = Vec::with_capacity(chunk_order.len());
    for (&document, chunks) in &chunk_order {
        // The first chunk in the window may follow one from before.
        let mut prev: Option<(u32, &str)> = tail.last_chunk(document);
        for (&index, &(id, record)) in chunks {
            if let Some((pi, pid)) = prev {
                if pi.checked_add(1) == Some(index) {
                    push(
                        GroupKey::NextChunk,
                        record,
                        Row::default().with("from", s(pid)).with("to", s(id)),
                    );
                }
            }
            prev = Some((index, id));
        }
        let at = chunks.values().map(|(_, r)| *r).max().unwrap_or(0);
        if let Some((&index, &(id, _))) = chunks.iter().next_back() {
            last.push((at, document, index, id));
        }
    }
    last.sort_unstable();
    for (_, document, index, id) in last {
        tail.remember(document, index, id);
    }
    let mut out: Vec<Group> = groups
        .into_iter()
        .map(|(key, rows)| {
            let rows = if key.phase() == Phase::Nodes {
                merge_same_node(&key, rows)
            } else {
                rows
            };
            Group { key, rows }
        })
        .collect();
    out.sort_by_key(|g| g.key.phase());
    out
}

/// Merges the rows of a node group that name the same node into one row.
///
/// Two rows for one id in one statement are harmless, but in two batches
/// running at once they are two transactions racing to MERGE one node:
/// Neo4j serialises them on the uniqueness constraint's lock, other Bolt
/// servers (ArcadeDB) may create the node twice or fail one commit. After
/// this, the batches of one node group never share an id. The merge keeps
/// the statement's semantics: `+=` maps apply in order (later values win),
/// extraction rows keep the first non-null value (`coalesce`), embeddings
/// keep the last vector.
fn merge_same_node(key: &GroupKey, rows: Vec<PlannedRow>) -> Vec<PlannedRow> {
    let mut index: HashMap<String, usize> = HashMap::with_capacity(rows.len());
    let mut out: Vec<PlannedRow> = Vec::with_capacity(rows.len());
    for planned in rows {
        let id = planned.row.str("id").to_owned();
        match index.get(&id) {
            None => {
                index.insert(id, out.len());
                out.push(planned);
            }
            Some(&at) => {
                let Some(into) = out.get_mut(at) else {
                    continue;
                };
                for r in planned.records {
                    if !into.records.contains(&r) {
                        into.records.push(r);
                    }
                }
                merge_fields(key, &mut into.row, planned.row);
            }
        }
    }
    out
}

fn merge_fields(key: &GroupKey, into: &mut Row, from: Row) {
    for (k, v) in from.fields {
        let Some(slot) = into.fields.iter_mut().find(|(ik, _)| *ik == k) else {
            into.fields.push((k, v));
            continue;
        };
        match (key, &mut slot.1, v) {
            (_, Param::Map(old), Param::Map(new)) => {
                for (nk, nv) in new {
                    match old.iter_mut().find(|(ok, _)| *ok == nk) {
                        Some(o) => o.1 = nv,
                        None => old.push((nk, nv)),
                    }
                }
            }
            (GroupKey::ExtractedEntities(_), old, new) => {
                if *old == Param::Null {
                    *old = new;
                }
            }
            (_, old, new) => *old = new,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kg_core::*;

    #[test]
    fn rows_naming_one_node_are_merged_keeping_the_statement_semantics() {
        let person = Label::new("Person").unwrap();
        let id = EntityId::new(&person, "Ian Murdock");
        let chunk = |n: u8| ChunkId::from_raw(format!("c{n}"));
        let x = |c: u8, desc: &str| {
            Record::Extraction(Extraction {
                chunk_id: chunk(c),
                entities: vec![ExtractedEntity {
                    id: id.clone(),
                    name: "Ian Murdock".into(),
                    entity_type: person.clone(),
                    description: desc.into(),
                }],
                relations: vec![],
                model: "m".into(),
            })
        };
        let records = vec![x(1, ""), x(2, "founder"), x(3, "leader")];
        let groups = plan(&records);
        let ents = groups
            .iter()
            .find(|g| g.key == GroupKey::ExtractedEntities(person.clone()))
            .unwrap();
        assert_eq!(ents.rows.len(), 1);
        assert_eq!(ents.rows[0].records, vec![0, 1, 2]);
        // coalesce: the first non-null description wins.
        assert_eq!(
            ents.rows[0].row.get("description"),
            Some(&Param::Str("founder".into()))
        );
        // Relationship rows are not merged: one MENTIONS per chunk.
        let mentions = groups.iter().find(|g| g.key == GroupKey::Mentions).unwrap();
        assert_eq!(mentions.rows.len(), 3);
        // Node groups come first.
        let phases: Vec<Phase> = groups.iter().map(|g| g.key.phase()).collect();
        assert!(phases.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn property_maps_hold_no_nulls_and_later_values_win() {
        let doc = DocumentId::from_content_sha256("ab");
        let d = |title: Option<&str>| {
            Record::Document(Document {
                id: doc.clone(),
                source: "a.pdf".into(),
                title: title.map(str::to_owned),
                sha256: "ab".into(),
                pages: None,
                media_type: MediaType::Pdf,
                bytes: 3,
            })
        };
        let groups = plan(&[d(Some("First")), d(None), d(Some("Second"))]);
        let docs = &groups[0];
        assert_eq!(docs.key, GroupKey::Documents);
        assert_eq!(docs.rows.len(), 1);
        let Some(Param::Map(props)) = docs.rows[0].row.get("props") else {
            panic!("no props");
        };
        assert!(props.iter().all(|(_, v)| *v != Param::Null));
        assert!(props.iter().all(|(k, _)| k != "pages"));
        assert!(props.contains(&("title".to_owned(), Param::Str("Second".into()))));
    }

    #[test]
    fn next_chunk_links_consecutive_chunks_of_a_document() {
        let doc = DocumentId::from_content_sha256("cd");
        let chunk = |i: u32| {
            Record::Chunk(Chunk {
                id: ChunkId::new(&doc, i, &format!("text {i}")),
                document_id: doc.clone(),
                index: i,
                text: format!("text {i}"),
                tokens: 2,
                source: "b.txt".into(),
                page_start: None,
                page_end: None,
            })
        };
        // Out of order, with a gap at 3.
        let groups = plan(&[chunk(2), chunk(0), chunk(1), chunk(4)]);
        let next = groups
            .iter()
            .find(|g| g.key == GroupKey::NextChunk)
            .unwrap();
        let pairs: Vec<(String, String)> = next
            .rows
            .iter()
            .map(|r| (r.row.str("from").to_owned(), r.row.str("to").to_owned()))
            .collect();
        let id = |i: u32| ChunkId::new(&doc, i, &format!("text {i}")).to_string();
        assert_eq!(pairs, vec![(id(0), id(1)), (id(1), id(2))]);
    }

    #[test]
    fn next_chunk_links_a_window_to_the_tail_of_the_one_before() {
        let doc = |n: &str| DocumentId::from_content_sha256(n);
        let (a, b) = (doc("aa"), doc("bb"));
        let chunk = |d: &DocumentId, i: u32| {
            Record::Chunk(Chunk {
                id: ChunkId::new(d, i, &format!("text {i}")),
                document_id: d.clone(),
                index: i,
                text: format!("text {i}"),
                tokens: 2,
                source: "b.txt".into(),
                page_start: None,
                page_end: None,
            })
        };
        let id = |d: &DocumentId, i: u32| ChunkId::new(d, i, &format!("text {i}")).to_string();
        let links = |groups: &[Group]| -> Vec<(String, String, Vec<usize>)> {
            let mut l: Vec<_> = groups
                .iter()
                .filter(|g| g.key == GroupKey::NextChunk)
                .flat_map(|g| g.rows.iter())
                .map(|r| {
                    (
                        r.row.str("from").to_owned(),
                        r.row.str("to").to_owned(),
                        r.records.clone(),
                    )
                })
                .collect();
            l.sort();
            l
        };
        let mut tail = ChunkTail::new();
        let first = plan_linked(&[chunk(&a, 0), chunk(&a, 1), chunk(&b, 0)], &mut tail);
        assert_eq!(links(&first), vec![(id(&a, 0), id(&a, 1), vec![1])]);
        assert_eq!(tail.last_chunk(a.as_str()), Some((1, id(&a, 1).as_str())));
        // The next window goes on with both documents; b skips an index.
        let second = plan_linked(&[chunk(&a, 2), chunk(&b, 2), chunk(&a, 3)], &mut tail);
        let mut want = vec![
            (id(&a, 1), id(&a, 2), vec![0]),
            (id(&a, 2), id(&a, 3), vec![2]),
        ];
        want.sort();
        assert_eq!(links(&second), want);
        // The chunk from before is only named: no chunk row for it.
        let chunk_rows = second
            .iter()
            .find(|g| g.key == GroupKey::Chunks)
            .map(|g| g.rows.len());
        assert_eq!(chunk_rows, Some(3));
        // Without a tail (plain `plan`) nothing links across windows.
        assert_eq!(links(&plan(&[chunk(&a, 4)])), vec![]);
        // Bounded: the oldest documents are forgotten first.
        let mut tail = ChunkTail::new();
        for n in 0..(ChunkTail::DOCUMENTS + 5) {
            plan_linked(&[chunk(&doc(&format!("{n:04x}")), 0)], &mut tail);
        }
        assert_eq!(tail.len(), ChunkTail::DOCUMENTS);
        assert!(tail.last_chunk(doc("0000").as_str()).is_none());
        assert!(tail
            .last_chunk(doc(&format!("{:04x}", ChunkTail::DOCUMENTS + 4)).as_str())
            .is_some());
    }
}
