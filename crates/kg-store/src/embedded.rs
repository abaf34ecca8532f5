//! The embedded store: the same graph in one SQLite file, for machines
//! with no Neo4j.
//!
//! Why SQLite (rusqlite, `bundled`): one file under `./kg-data/`, nothing to
//! install or run, transactions with rollback (a failed batch leaves no
//! trace, exactly like a Neo4j transaction), WAL for a reader beside the
//! writer, and JSON functions for property maps. A graph this size (chunks,
//! entities and their relationships, up to millions of rows) needs no graph
//! engine: every query kg asks is a lookup by id or one hop, which an index
//! answers. Vector search is an exact cosine scan in Rust over the
//! memory-mapped file: only the rows whose vector has the question's
//! length, each blob borrowed from SQLite and decoded into one buffer, a
//! bounded top-k. Fast enough for the corpora kg targets (tens of
//! milliseconds at 10,000 chunks × 384 dims; 100k chunks × 1,536 dims is
//! ~600 MB to read per question); Neo4j is the answer beyond that.
//!
//! The tables mirror the graph model: `documents`, `chunks`, `entities`,
//! `nodes` (CSV-mapped, properties as a JSON object) and one `rels` table
//! for every relationship (`src`, `type`, `dst`, unique together, like
//! Cypher's `MERGE (a)-[:T]->(b)`). Writes follow the Neo4j backend's
//! semantics: upserts that never erase a value with a null, relationship
//! ends created as placeholders when missing, chunk lists grown as sets.
//!
//! SQLite calls block, so they run on tokio's blocking pool.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kg_core::{ChunkId, DocumentId, EntityId, Label, NodeId, NodeRef, Record, RelType};
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use crate::config::EmbeddedConfig;
use crate::error::{BatchFailure, StoreError};
use crate::plan::{Batch, GroupKey, Param, Row};
use crate::shared::{
    cosine_with_norm, csv_properties, decode_vector_into, media_type, norm, StoredValue, TopK,
};
use crate::store::{
    merged_fields, ChunkGraph, ChunkInfo, CurrentDocument, EntityMatch, EntityMerge, EntityRow,
    EntitySummary, GraphCounts, GraphSink, GraphStore, MergeOutcome, Reached, RelationSummary,
    Removed, SchemaReport, Scope, Scored,
};

mod descriptions;

const BACKEND: &str = "embedded";

/// How much of the database file SQLite maps into memory (`PRAGMA
/// mmap_size`): address space, not memory; pages are read on demand.
const MMAP_BYTES: i64 = 1 << 30;

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY, source TEXT, title TEXT, sha256 TEXT, pages INTEGER,
    media_type TEXT, bytes INTEGER);
CREATE TABLE IF NOT EXISTS chunks (
    id TEXT PRIMARY KEY, document_id TEXT, idx INTEGER, text TEXT, tokens INTEGER,
    source TEXT, page_start INTEGER, page_end INTEGER, embedding BLOB, embedding_model TEXT);
CREATE TABLE IF NOT EXISTS entities (
    id TEXT PRIMARY KEY, label TEXT, name TEXT, type TEXT, description TEXT, aliases TEXT,
    embedding BLOB, embedding_model TEXT);
CREATE TABLE IF NOT EXISTS nodes (
    id TEXT PRIMARY KEY, label TEXT NOT NULL, props TEXT NOT NULL DEFAULT '{}');
CREATE TABLE IF NOT EXISTS rels (
    src TEXT NOT NULL, type TEXT NOT NULL, dst TEXT NOT NULL,
    src_label TEXT NOT NULL, dst_label TEXT NOT NULL, props TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (src, type, dst));
CREATE INDEX IF NOT EXISTS rels_dst ON rels (dst);
CREATE INDEX IF NOT EXISTS chunks_document ON chunks (document_id);
CREATE INDEX IF NOT EXISTS documents_source ON documents (source);
CREATE INDEX IF NOT EXISTS rels_src ON rels (src, type);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    text, content = 'chunks', content_rowid = 'rowid', tokenize = 'unicode61 remove_diacritics 0');
CREATE TRIGGER IF NOT EXISTS chunks_fts_insert AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts (rowid, text) VALUES (new.rowid, new.text);
END;
CREATE TRIGGER IF NOT EXISTS chunks_fts_delete AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts (chunks_fts, rowid, text) VALUES ('delete', old.rowid, old.text);
END;
CREATE TRIGGER IF NOT EXISTS chunks_fts_update AFTER UPDATE OF text ON chunks BEGIN
    INSERT INTO chunks_fts (chunks_fts, rowid, text) VALUES ('delete', old.rowid, old.text);
    INSERT INTO chunks_fts (rowid, text) VALUES (new.rowid, new.text);
END;
";

/// Creates the schema; a database made before the fulltext table existed
/// gets its chunks indexed once.
fn apply_schema(c: &Connection) -> rusqlite::Result<()> {
    let had_fts: bool = c
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'chunks_fts'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n > 0)?;
    c.execute_batch(SCHEMA)?;
    descriptions::migrate(c)?;
    if !had_fts {
        c.execute("INSERT INTO chunks_fts (chunks_fts) VALUES ('rebuild')", [])?;
    }
    Ok(())
}

/// The embedded SQLite graph store.
pub struct EmbeddedStore {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .finish()
    }
}

fn embedded_err(path: &std::path::Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |e| StoreError::Embedded {
        path: path.to_owned(),
        detail: e.to_string(),
    }
}

fn to_json(p: &Param) -> Value {
    match p {
        Param::Null => Value::Null,
        Param::Bool(b) => json!(b),
        Param::Int(i) => json!(i),
        Param::Float(f) => json!(f),
        Param::Str(s) => json!(s),
        Param::StrList(v) => json!(v),
        Param::Vector(v) => json!(v),
        Param::Map(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()),
    }
}

fn sql(p: Option<&Param>) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match p {
        None | Some(Param::Null) => V::Null,
        Some(Param::Bool(b)) => V::Integer(i64::from(*b)),
        Some(Param::Int(i)) => V::Integer(*i),
        Some(Param::Float(f)) => V::Real(*f),
        Some(Param::Str(s)) => V::Text(s.clone()),
        Some(other) => V::Text(to_json(other).to_string()),
    }
}

fn prop<'a>(row: &'a Row, key: &str) -> Option<&'a Param> {
    match row.get("props") {
        Some(Param::Map(m)) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
        _ => None,
    }
}

fn vector_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn blob_vector(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn classify(e: &rusqlite::Error) -> BatchFailure {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            BatchFailure::transient(e.to_string())
        }
        _ => BatchFailure::permanent(e.to_string()),
    }
}

/// Merges `new` into the JSON object `old` (`+=`: nulls never erase).
fn merge_json(old: Option<String>, new: &Param) -> String {
    let mut base: Map<String, Value> = old
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    if let Value::Object(m) = to_json(new) {
        for (k, v) in m {
            if !v.is_null() {
                base.insert(k, v);
            }
        }
    }
    Value::Object(base).to_string()
}

/// Placeholder end nodes, like Cypher's `MERGE (n:Label {id})`.
fn ensure_node(tx: &Connection, table_label: &str, id: &str) -> rusqlite::Result<()> {
    match table_label {
        "Document" => tx
            .prepare_cached("INSERT OR IGNORE INTO documents (id) VALUES (?1)")?
            .execute([id])
            .map(drop),
        "Chunk" => tx
            .prepare_cached("INSERT OR IGNORE INTO chunks (id) VALUES (?1)")?
            .execute([id])
            .map(drop),
        "Entity" => tx
            .prepare_cached("INSERT OR IGNORE INTO entities (id) VALUES (?1)")?
            .execute([id])
            .map(drop),
        label => tx
            .prepare_cached("INSERT OR IGNORE INTO nodes (id, label) VALUES (?1, ?2)")?
            .execute([id, label])
            .map(drop),
    }
}

/// `MERGE (a)-[:rel]->(b)`, with placeholder ends.
fn ensure_rel(
    tx: &Connection,
    (src_label, src): (&str, &str),
    rel: &str,
    (dst_label, dst): (&str, &str),
) -> rusqlite::Result<()> {
    ensure_node(tx, src_label, src)?;
    ensure_node(tx, dst_label, dst)?;
    tx.prepare_cached(
        "INSERT OR IGNORE INTO rels (src, type, dst, src_label, dst_label) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute([src, rel, dst, src_label, dst_label])
    .map(drop)
}

/// [`ensure_rel`], then the relationship's properties (for a merge).
fn upsert_rel(
    tx: &Connection,
    from: (&str, &str),
    rel: &str,
    to: (&str, &str),
) -> rusqlite::Result<Option<String>> {
    ensure_rel(tx, from, rel, to)?;
    tx.prepare_cached("SELECT props FROM rels WHERE src = ?1 AND type = ?2 AND dst = ?3")?
        .query_row([from.1, rel, to.1], |r| r.get(0))
        .optional()
}

fn set_rel_props(
    tx: &Connection,
    src: &str,
    rel: &str,
    dst: &str,
    props: &str,
) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE rels SET props = ?4 WHERE src = ?1 AND type = ?2 AND dst = ?3")?
        .execute([src, rel, dst, props])
        .map(drop)
}

fn write_rows(tx: &Connection, key: &GroupKey, rows: &[Row]) -> rusqlite::Result<()> {
    match key {
        GroupKey::Documents => {
            let mut st = tx.prepare_cached(
                "INSERT INTO documents (id, source, title, sha256, pages, media_type, bytes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (id) DO UPDATE SET
                   source = coalesce(excluded.source, source), title = coalesce(excluded.title, title),
                   sha256 = coalesce(excluded.sha256, sha256), pages = coalesce(excluded.pages, pages),
                   media_type = coalesce(excluded.media_type, media_type), bytes = coalesce(excluded.bytes, bytes)",
            )?;
            for r in rows {
                st.execute(params![
                    r.str("id"),
                    sql(prop(r, "source")),
                    sql(prop(r, "title")),
                    sql(prop(r, "sha256")),
                    sql(prop(r, "pages")),
                    sql(prop(r, "media_type")),
                    sql(prop(r, "bytes")),
                ])?;
            }
        }
        GroupKey::Chunks => {
            let mut st = tx.prepare_cached(
                "INSERT INTO chunks (id, document_id, idx, text, tokens, source, page_start, page_end)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (id) DO UPDATE SET
                   document_id = coalesce(excluded.document_id, document_id), idx = coalesce(excluded.idx, idx),
                   text = coalesce(excluded.text, text), tokens = coalesce(excluded.tokens, tokens),
                   source = coalesce(excluded.source, source),
                   page_start = coalesce(excluded.page_start, page_start),
                   page_end = coalesce(excluded.page_end, page_end)",
            )?;
            for r in rows {
                st.execute(params![
                    r.str("id"),
                    sql(prop(r, "document_id")),
                    sql(prop(r, "index")),
                    sql(prop(r, "text")),
                    sql(prop(r, "tokens")),
                    sql(prop(r, "source")),
                    sql(prop(r, "page_start")),
                    sql(prop(r, "page_end")),
                ])?;
            }
        }
        GroupKey::ChunkEmbeddings | GroupKey::EntityEmbeddings => {
            let table = if matches!(key, GroupKey::ChunkEmbeddings) {
                "chunks"
            } else {
                "entities"
            };
            let mut st = tx.prepare_cached(&format!(
                "INSERT INTO {table} (id, embedding, embedding_model) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET embedding = excluded.embedding,
                   embedding_model = excluded.embedding_model"
            ))?;
            for r in rows {
                let blob = match r.get("vector") {
                    Some(Param::Vector(v)) => vector_blob(v),
                    _ => Vec::new(),
                };
                st.execute(params![r.str("id"), blob, r.str("model")])?;
            }
        }
        GroupKey::Entities(label) => {
            let mut st = tx.prepare_cached(
                "INSERT INTO entities (id, label, name, type, description, aliases)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (id) DO UPDATE SET label = excluded.label,
                   name = coalesce(excluded.name, name), type = coalesce(excluded.type, type),
                   description = coalesce(excluded.description, description),
                   aliases = coalesce(excluded.aliases, aliases)",
            )?;
            for r in rows {
                st.execute(params![
                    r.str("id"),
                    label.as_str(),
                    sql(prop(r, "name")),
                    sql(prop(r, "type")),
                    sql(prop(r, "description")),
                    sql(prop(r, "aliases")),
                ])?;
            }
        }
        GroupKey::ExtractedEntities(label) => {
            let mut st = tx.prepare_cached(
                "INSERT INTO entities (id, label, name, type, description) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (id) DO UPDATE SET label = excluded.label,
                   name = coalesce(name, excluded.name), type = coalesce(type, excluded.type),
                   description = coalesce(description, excluded.description)",
            )?;
            for r in rows {
                st.execute(params![
                    r.str("id"),
                    label.as_str(),
                    sql(r.get("name")),
                    sql(r.get("type")),
                    sql(r.get("description")),
                ])?;
            }
        }
        GroupKey::Nodes(label) => {
            for r in rows {
                let id = r.str("id");
                let old: Option<String> = tx
                    .prepare_cached("SELECT props FROM nodes WHERE id = ?1")?
                    .query_row([id], |x| x.get(0))
                    .optional()?;
                let merged = merge_json(old, r.get("props").unwrap_or(&Param::Null));
                tx.prepare_cached(
                    "INSERT INTO nodes (id, label, props) VALUES (?1, ?2, ?3)
                     ON CONFLICT (id) DO UPDATE SET props = excluded.props",
                )?
                .execute([id, label.as_str(), merged.as_str()])?;
            }
        }
        GroupKey::HasChunk => {
            for r in rows {
                ensure_rel(
                    tx,
                    ("Document", r.str("document")),
                    "HAS_CHUNK",
                    ("Chunk", r.str("chunk")),
                )?;
            }
        }
        GroupKey::NextChunk => {
            for r in rows {
                ensure_rel(
                    tx,
                    ("Chunk", r.str("from")),
                    "NEXT_CHUNK",
                    ("Chunk", r.str("to")),
                )?;
            }
        }
        GroupKey::Mentions => {
            for r in rows {
                ensure_rel(
                    tx,
                    ("Chunk", r.str("chunk")),
                    "MENTIONS",
                    ("Entity", r.str("entity")),
                )?;
                if let Some(Param::StrList(ds)) = r.get("descriptions") {
                    descriptions::add_to_mention(tx, r.str("chunk"), r.str("entity"), ds)?;
                }
            }
        }
        GroupKey::Relations(rel) => {
            for r in rows {
                let (src, dst) = (r.str("source"), r.str("target"));
                let old = upsert_rel(tx, ("Entity", src), rel.as_str(), ("Entity", dst))?;
                let mut props: Map<String, Value> = old
                    .and_then(|s| serde_json::from_str(&s).ok())
                    .unwrap_or_default();
                let overwrite = matches!(r.get("overwrite"), Some(Param::Bool(true)));
                if let Some(Param::Str(d)) = r.get("description") {
                    if overwrite || !props.contains_key("description") {
                        props.insert("description".into(), json!(d));
                    }
                }
                if let Some(Param::Float(w)) = r.get("weight") {
                    let old_w = props.get("weight").and_then(Value::as_f64);
                    if overwrite || old_w.is_none_or(|o| *w > o) {
                        props.insert("weight".into(), json!(w));
                    }
                }
                let mut chunks: Vec<Value> = props
                    .get("chunks")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                if let Some(Param::StrList(new)) = r.get("chunks") {
                    for c in new {
                        let c = json!(c);
                        if !chunks.contains(&c) {
                            chunks.push(c);
                        }
                    }
                }
                props.insert("chunks".into(), Value::Array(chunks));
                if let Some(Param::StrList(ds)) = r.get("descriptions") {
                    if !ds.is_empty() {
                        descriptions::unite(&mut props, ds);
                        descriptions::mark_relation(&mut props);
                    }
                }
                set_rel_props(
                    tx,
                    src,
                    rel.as_str(),
                    dst,
                    &Value::Object(props).to_string(),
                )?;
            }
        }
        GroupKey::Edges { rel_type, from, to } => {
            for r in rows {
                let (src, dst) = (r.str("from"), r.str("to"));
                let old = upsert_rel(
                    tx,
                    (from.as_str(), src),
                    rel_type.as_str(),
                    (to.as_str(), dst),
                )?;
                let merged = merge_json(old, r.get("props").unwrap_or(&Param::Null));
                set_rel_props(tx, src, rel_type.as_str(), dst, &merged)?;
            }
        }
    }
    Ok(())
}

/// `(clause, param)`: restricts `column` to the scope's ids.
fn scope_sql(scope: &Scope, column: &str) -> (String, String) {
    match scope {
        Scope::All => ("1 = 1 OR ?1 IS NULL".into(), "[]".into()),
        Scope::Ids(ids) => (
            format!("{column} IN (SELECT value FROM json_each(?1))"),
            serde_json::to_string(ids).unwrap_or_else(|_| "[]".into()),
        ),
    }
}

fn entity_labels_key(label: Option<String>) -> String {
    match label {
        Some(l) if !l.is_empty() => {
            let mut v = ["Entity".to_owned(), l];
            v.sort();
            v.join(":")
        }
        _ => "Entity".into(),
    }
}

impl EmbeddedStore {
    /// Opens (creating if needed) `graph.sqlite` in the data directory.
    pub fn open(config: &EmbeddedConfig) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| StoreError::Embedded {
            path: config.data_dir.clone(),
            detail: e.to_string(),
        })?;
        let path = config.data_dir.join("graph.sqlite");
        let conn = Connection::open(&path).map_err(embedded_err(&path))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(embedded_err(&path))?;
        // Reads through a memory map instead of a read() call and a copy per
        // page: the vector scan reads every chunk's page.
        conn.pragma_update(None, "mmap_size", MMAP_BYTES)
            .map_err(embedded_err(&path))?;
        apply_schema(&conn).map_err(embedded_err(&path))?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Runs `f` with the SQLite connection: an escape hatch for maintenance
    /// and tests (e.g. to inject a failure with a trigger).
    pub fn with_connection<T>(&self, f: impl FnOnce(&Connection) -> T) -> Result<T, StoreError> {
        let conn = self.conn.lock().map_err(|_| StoreError::Embedded {
            path: self.path.clone(),
            detail: "connection lock poisoned".into(),
        })?;
        Ok(f(&conn))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        let path = self.path.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let mut c = conn.lock().map_err(|_| StoreError::Embedded {
                path: path.clone(),
                detail: "connection lock poisoned".into(),
            })?;
            f(&mut c).map_err(|e| StoreError::Embedded {
                path: path.clone(),
                detail: e.to_string(),
            })
        })
        .await;
        joined.map_err(|e| StoreError::Embedded {
            path: self.path.clone(),
            detail: format!("worker failed: {e}"),
        })?
    }
}

impl GraphSink for EmbeddedStore {
    async fn write_batch(&self, batch: Arc<Batch>) -> Result<(), BatchFailure> {
        self.write_batches(vec![batch]).await
    }

    async fn write_batches(&self, batches: Vec<Arc<Batch>>) -> Result<(), BatchFailure> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = conn
                .lock()
                .map_err(|_| BatchFailure::permanent("connection lock poisoned"))?;
            // Dropping `tx` on error rolls every batch of it back.
            let tx = c.transaction().map_err(|e| classify(&e))?;
            for batch in &batches {
                write_rows(&tx, &batch.key, &batch.rows).map_err(|e| classify(&e))?;
            }
            tx.commit().map_err(|e| classify(&e))
        })
        .await
        .map_err(|e| BatchFailure::permanent(format!("worker failed: {e}")))?
    }
}

/// Finds the earlier versions of `current`'s sources (see
/// [`GraphStore::earlier_versions`]).
fn earlier_versions(c: &Connection, current: &[CurrentDocument]) -> rusqlite::Result<Vec<String>> {
    let keep: HashSet<&str> = current.iter().map(|d| d.id.as_str()).collect();
    let mut st = c.prepare_cached("SELECT id FROM documents WHERE source = ?1 AND id <> ?2")?;
    let mut stale = Vec::new();
    for d in current {
        let ids = st.query_map(params![d.source, d.id.as_str()], |r| r.get::<_, String>(0))?;
        for id in ids {
            let id = id?;
            if !keep.contains(id.as_str()) {
                stale.push(id);
            }
        }
    }
    stale.sort();
    stale.dedup();
    Ok(stale)
}

/// Removes one document version in one transaction (see
/// [`GraphStore::remove_document`]).
fn remove_version(c: &mut Connection, id: &str) -> rusqlite::Result<Removed> {
    let tx = c.transaction()?;
    let chunks: Vec<String> = tx
        .prepare(
            "SELECT id FROM chunks WHERE document_id = ?1
             UNION SELECT dst FROM rels WHERE src = ?1 AND type = 'HAS_CHUNK'",
        )?
        .query_map([id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let chunk_list = Value::from(chunks.clone()).to_string();
    let entities: Vec<String> = tx
        .prepare(
            "SELECT DISTINCT dst FROM rels WHERE type = 'MENTIONS'
             AND src IN (SELECT value FROM json_each(?1))",
        )?
        .query_map([&chunk_list], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let entity_list = Value::from(entities.clone()).to_string();
    let removed: HashSet<&str> = chunks.iter().map(String::as_str).collect();
    let citing: Vec<(String, String, String, String)> = tx
        .prepare(
            "SELECT src, type, dst, props FROM rels
             WHERE src_label = 'Entity' AND dst_label = 'Entity'
             AND (src IN (SELECT value FROM json_each(?1)) OR dst IN (SELECT value FROM json_each(?1)))",
        )?
        .query_map([&entity_list], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut relations = 0u64;
    for (src, rel, dst, props) in citing {
        let mut props: Map<String, Value> = serde_json::from_str(&props).unwrap_or_default();
        let Some(cited) = props.get("chunks").and_then(Value::as_array) else {
            continue;
        };
        let kept: Vec<Value> = cited
            .iter()
            .filter(|c| !c.as_str().is_some_and(|c| removed.contains(c)))
            .cloned()
            .collect();
        if kept.len() == cited.len() {
            continue;
        }
        if kept.is_empty() {
            tx.prepare_cached("DELETE FROM rels WHERE src = ?1 AND type = ?2 AND dst = ?3")?
                .execute([&src, &rel, &dst])?;
            relations += 1;
        } else {
            props.insert("chunks".into(), Value::Array(kept));
            if descriptions::trim(&mut props, &removed) {
                descriptions::mark_relation(&mut props);
            }
            set_rel_props(&tx, &src, &rel, &dst, &Value::Object(props).to_string())?;
        }
    }
    tx.execute(
        "DELETE FROM rels WHERE src IN (SELECT value FROM json_each(?1))
         OR dst IN (SELECT value FROM json_each(?1))",
        [&chunk_list],
    )?;
    tx.execute(
        "DELETE FROM chunks WHERE id IN (SELECT value FROM json_each(?1))",
        [&chunk_list],
    )?;
    tx.execute("DELETE FROM rels WHERE src = ?1 OR dst = ?1", [id])?;
    tx.execute("DELETE FROM documents WHERE id = ?1", [id])?;
    let orphans = tx.execute(
        "DELETE FROM entities WHERE id IN (SELECT value FROM json_each(?1))
         AND NOT EXISTS (SELECT 1 FROM rels WHERE rels.src = entities.id)
         AND NOT EXISTS (SELECT 1 FROM rels WHERE rels.dst = entities.id)",
        [&entity_list],
    )?;
    // The entities left lost what the removed chunks said about them.
    tx.execute(
        "UPDATE entities SET description_dirty = 1 WHERE id IN (SELECT value FROM json_each(?1))",
        [&entity_list],
    )?;
    tx.commit()?;
    Ok(Removed {
        chunks: chunks.len() as u64,
        entities: orphans as u64,
        relations,
    })
}

/// A relationship's properties after uniting `moving` into `kept` (the
/// kept relationship's, if it had one): chunk and description lists
/// united (marked dirty when that added descriptions), the larger weight,
/// the kept description (else the moving one), other keys kept.
fn unite_rel_props(kept: Option<&str>, moving: &str) -> String {
    let mut out: Map<String, Value> = kept
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    let new: Map<String, Value> = serde_json::from_str(moving).unwrap_or_default();
    for (k, v) in new {
        match k.as_str() {
            "chunks" => {
                let mut chunks: Vec<Value> = out
                    .get("chunks")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for c in v.as_array().into_iter().flatten() {
                    if !chunks.contains(c) {
                        chunks.push(c.clone());
                    }
                }
                out.insert(k, Value::Array(chunks));
            }
            "descriptions" => {
                let new: Vec<String> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect();
                if descriptions::unite(&mut out, &new) {
                    descriptions::mark_relation(&mut out);
                }
            }
            "weight" => {
                let old = out.get("weight").and_then(Value::as_f64);
                if let Some(w) = v.as_f64() {
                    if old.is_none_or(|o| w > o) {
                        out.insert(k, v);
                    }
                }
            }
            _ => {
                out.entry(k).or_insert(v);
            }
        }
    }
    Value::Object(out).to_string()
}

/// Merges one group in one transaction (see [`GraphStore::merge_entities`]).
fn merge_group(c: &mut Connection, m: &EntityMerge) -> rusqlite::Result<MergeOutcome> {
    let tx = c.transaction()?;
    let fields = |id: &str| -> rusqlite::Result<Option<(String, Vec<String>, String)>> {
        tx.prepare_cached("SELECT name, aliases, description FROM entities WHERE id = ?1")?
            .query_row([id], |r| {
                Ok((
                    r.get::<_, Option<String>>(0)?.unwrap_or_default(),
                    r.get::<_, Option<String>>(1)?
                        .and_then(|a| serde_json::from_str(&a).ok())
                        .unwrap_or_default(),
                    r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                ))
            })
            .optional()
    };
    let Some(kept) = fields(&m.keep)? else {
        return Ok(MergeOutcome::default());
    };
    let mut members = vec![kept];
    let mut merged: Vec<&str> = Vec::new();
    for id in &m.merged {
        if id == &m.keep || merged.contains(&id.as_str()) {
            continue;
        }
        if let Some(f) = fields(id)? {
            members.push(f);
            merged.push(id);
        }
    }
    if merged.is_empty() {
        return Ok(MergeOutcome::default());
    }
    let group: HashSet<&str> = merged.iter().copied().chain([m.keep.as_str()]).collect();
    let mut out = MergeOutcome::default();
    let keep = m.keep.as_str();
    let mut mentioning: HashSet<String> = HashSet::new();
    for &mid in &merged {
        let outgoing: Vec<(String, String, String, String)> = tx
            .prepare_cached("SELECT type, dst, dst_label, props FROM rels WHERE src = ?1")?
            .query_map([mid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (rel, dst, dst_label, props) in outgoing {
            if group.contains(dst.as_str()) {
                out.self_loops += 1;
                continue;
            }
            let old = upsert_rel(&tx, ("Entity", keep), &rel, (&dst_label, &dst))?;
            set_rel_props(
                &tx,
                keep,
                &rel,
                &dst,
                &unite_rel_props(old.as_deref(), &props),
            )?;
            out.relations += 1;
        }
        let incoming: Vec<(String, String, String, String)> = tx
            .prepare_cached("SELECT src, type, src_label, props FROM rels WHERE dst = ?1")?
            .query_map([mid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (src, rel, src_label, props) in incoming {
            if group.contains(src.as_str()) {
                out.self_loops += 1;
                continue;
            }
            let old = upsert_rel(&tx, (&src_label, &src), &rel, ("Entity", keep))?;
            if rel == "MENTIONS" {
                let moving: Map<String, Value> = serde_json::from_str(&props).unwrap_or_default();
                let moving = descriptions::list(&moving, "descriptions");
                descriptions::add_to_mention(&tx, &src, keep, &moving)?;
                mentioning.insert(src);
            } else {
                set_rel_props(
                    &tx,
                    &src,
                    &rel,
                    keep,
                    &unite_rel_props(old.as_deref(), &props),
                )?;
                out.relations += 1;
            }
        }
        tx.prepare_cached(
            "UPDATE entities SET embedding = (SELECT embedding FROM entities WHERE id = ?2),
                embedding_model = (SELECT embedding_model FROM entities WHERE id = ?2)
             WHERE id = ?1 AND embedding IS NULL",
        )?
        .execute([keep, mid])?;
        tx.prepare_cached("DELETE FROM rels WHERE src = ?1 OR dst = ?1")?
            .execute([mid])?;
        tx.prepare_cached("DELETE FROM entities WHERE id = ?1")?
            .execute([mid])?;
        out.entities += 1;
    }
    out.mentions = mentioning.len() as u64;
    descriptions::mark_entity(&tx, keep)?;
    let (aliases, description) = merged_fields(&m.name, &members);
    tx.prepare_cached(
        "UPDATE entities SET name = ?2, aliases = ?3, description = ?4 WHERE id = ?1",
    )?
    .execute(params![
        keep,
        m.name,
        Value::from(aliases).to_string(),
        description
    ])?;
    tx.commit()?;
    Ok(out)
}

fn summary(id: String, name: Option<String>, ty: Option<String>) -> EntitySummary {
    EntitySummary {
        id,
        name: name.unwrap_or_default(),
        entity_type: ty.unwrap_or_default(),
    }
}

impl GraphStore for EmbeddedStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn ensure_schema(&self, vector_dims: Option<usize>) -> Result<SchemaReport, StoreError> {
        // The primary keys are the uniqueness constraints; vector search is
        // an exact scan, so there is no index to build.
        self.blocking(|c| apply_schema(c)).await?;
        Ok(SchemaReport {
            constraints: vec![
                "documents.id".into(),
                "chunks.id".into(),
                "entities.id".into(),
                "nodes.id".into(),
                "chunks_fts (FTS5, BM25)".into(),
            ],
            vector_index: false,
            vector_index_skipped: Some(match vector_dims {
                Some(_) => "the embedded store searches by exact scan".into(),
                None => "no embedding dimensions given".into(),
            }),
        })
    }

    async fn fulltext_chunks(&self, text: &str, k: usize) -> Result<Vec<Scored>, StoreError> {
        let terms = crate::fulltext::query_terms(text);
        if terms.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let q = crate::fulltext::fts5_query(&terms);
        self.blocking(move |c| {
            c.prepare_cached(
                "SELECT c.id, -bm25(chunks_fts) FROM chunks_fts JOIN chunks c ON c.rowid = chunks_fts.rowid
                 WHERE chunks_fts MATCH ?1 ORDER BY bm25(chunks_fts), c.id LIMIT ?2",
            )?
            .query_map(params![q, k as i64], |r| {
                Ok(Scored {
                    id: r.get(0)?,
                    score: r.get::<_, f64>(1)? as f32,
                })
            })?
            .collect()
        })
        .await
    }

    async fn vector_chunks(&self, v: &[f32], k: usize) -> Result<Vec<Scored>, StoreError> {
        let qv = v.to_vec();
        self.blocking(move |c| scan_vectors(c, "chunks", &qv, k))
            .await
    }

    async fn vector_entities(&self, v: &[f32], k: usize) -> Result<Vec<EntityMatch>, StoreError> {
        let qv = v.to_vec();
        self.blocking(move |c| {
            let best = scan_vectors(c, "entities", &qv, k)?;
            let mut out = Vec::new();
            for s in best {
                if let Some(entity) = entity_by_id(c, &s.id)? {
                    out.push(EntityMatch {
                        entity,
                        score: s.score,
                    });
                }
            }
            Ok(out)
        })
        .await
    }

    async fn entities_by_name(&self, text: &str, k: usize) -> Result<Vec<EntityMatch>, StoreError> {
        let text = text.to_owned();
        self.blocking(move |c| {
            let lower = text.to_lowercase();
            let found: Vec<EntitySummary> = c
                .prepare_cached(
                    "SELECT id, name, type FROM entities
                     WHERE length(name) >= 2 AND instr(?1, lower(name)) > 0",
                )?
                .query_map([&lower], |r| Ok(summary(r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(crate::fulltext::rank_name_matches(&text, found, k))
        })
        .await
    }

    async fn expand(
        &self,
        seeds: &[String],
        hops: u8,
        max_neighbours: usize,
        per_entity: usize,
    ) -> Result<Vec<Reached>, StoreError> {
        let seeds = seeds.to_vec();
        self.blocking(move |c| expand_sql(c, &seeds, hops, max_neighbours, per_entity))
            .await
    }

    async fn chunks(&self, ids: &[String]) -> Result<Vec<ChunkInfo>, StoreError> {
        let ids = ids.to_vec();
        self.blocking(move |c| {
            let mut st = c.prepare_cached(
                "SELECT c.id, c.document_id, c.idx, c.text, c.source, d.title, c.page_start, c.page_end
                 FROM chunks c LEFT JOIN documents d ON d.id = c.document_id WHERE c.id = ?1",
            )?;
            let mut out = Vec::new();
            for id in &ids {
                let found = st
                    .query_row([id], |r| {
                        Ok(ChunkInfo {
                            id: r.get(0)?,
                            document_id: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                            index: u32_of(r.get(2)?),
                            text: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                            source: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                            title: r.get(5)?,
                            page_start: u32_of(r.get(6)?),
                            page_end: u32_of(r.get(7)?),
                        })
                    })
                    .optional()?;
                out.extend(found);
            }
            Ok(out)
        })
        .await
    }

    async fn chunk_graph(&self, ids: &[String]) -> Result<ChunkGraph, StoreError> {
        let list = serde_json::to_string(ids).unwrap_or_else(|_| "[]".into());
        self.blocking(move |c| {
            let mut mentions: Vec<(String, EntitySummary)> = c
                .prepare_cached(
                    "SELECT r.src, e.id, e.name, e.type FROM rels r JOIN entities e ON e.id = r.dst
                     WHERE r.type = 'MENTIONS' AND r.src IN (SELECT value FROM json_each(?1))",
                )?
                .query_map([&list], |r| {
                    Ok((r.get(0)?, summary(r.get(1)?, r.get(2)?, r.get(3)?)))
                })?
                .collect::<rusqlite::Result<_>>()?;
            mentions.sort();
            mentions.dedup();
            let mut ents: Vec<&str> = mentions.iter().map(|(_, e)| e.id.as_str()).collect();
            ents.sort_unstable();
            ents.dedup();
            let ent_list = serde_json::to_string(&ents).unwrap_or_else(|_| "[]".into());
            let mut relations: Vec<RelationSummary> = c
                .prepare_cached(
                    "SELECT a.id, a.name, a.type, r.type, b.id, b.name, b.type, r.props
                     FROM rels r JOIN entities a ON a.id = r.src JOIN entities b ON b.id = r.dst
                     WHERE r.src_label = 'Entity' AND r.dst_label = 'Entity'
                       AND r.src IN (SELECT value FROM json_each(?1))
                       AND r.dst IN (SELECT value FROM json_each(?1))",
                )?
                .query_map([&ent_list], |r| {
                    let props: Map<String, Value> =
                        serde_json::from_str(&r.get::<_, String>(7)?).unwrap_or_default();
                    Ok(RelationSummary {
                        from: summary(r.get(0)?, r.get(1)?, r.get(2)?),
                        rel_type: r.get(3)?,
                        to: summary(r.get(4)?, r.get(5)?, r.get(6)?),
                        description: props
                            .get("description")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            relations.sort();
            Ok(ChunkGraph {
                mentions,
                relations,
            })
        })
        .await
    }

    async fn identity(&self) -> Result<String, StoreError> {
        let fresh = crate::store::new_identity();
        self.blocking(move |c| {
            c.execute_batch(
                "CREATE TABLE IF NOT EXISTS kg_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            )?;
            c.execute(
                "INSERT OR IGNORE INTO kg_meta (key, value) VALUES ('identity', ?1)",
                [&fresh],
            )?;
            c.query_row(
                "SELECT value FROM kg_meta WHERE key = 'identity'",
                [],
                |r| r.get(0),
            )
        })
        .await
    }

    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        note: &str,
        ttl: std::time::Duration,
        now_ms: i64,
    ) -> Result<crate::lease::LeaseState, StoreError> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
        let (holder, note) = (holder.to_owned(), note.to_owned());
        let keys = lease_keys(name);
        self.blocking(move |c| {
            // IMMEDIATE: the write lock first, then the read, so two
            // processes on one file serialise.
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS kg_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            )?;
            let get = |key: &str| -> rusqlite::Result<Option<String>> {
                tx.query_row("SELECT value FROM kg_meta WHERE key = ?1", [key], |r| {
                    r.get(0)
                })
                .optional()
            };
            let current = get(&keys[0])?;
            let expires: i64 = get(&keys[2])?.and_then(|v| v.parse().ok()).unwrap_or(0);
            let free = current.as_deref().is_none_or(|h| h == holder) || expires < now_ms;
            if !free {
                let other =
                    get(&keys[1])?.unwrap_or_else(|| "a kg that did not say who it is".to_owned());
                tx.commit()?;
                return Ok(crate::lease::LeaseState::Held {
                    note: other,
                    expires_in: crate::lease::until(expires, now_ms),
                });
            }
            let until = now_ms.saturating_add(ttl_ms).to_string();
            for (key, value) in keys.iter().zip([&holder, &note, &until]) {
                tx.execute(
                    "INSERT INTO kg_meta (key, value) VALUES (?1, ?2) \
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    [key, value],
                )?;
            }
            tx.commit()?;
            Ok(crate::lease::LeaseState::Granted)
        })
        .await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let holder = holder.to_owned();
        let keys = lease_keys(name);
        self.blocking(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS kg_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            )?;
            let current: Option<String> = tx
                .query_row(
                    "SELECT value FROM kg_meta WHERE key = ?1",
                    [&keys[0]],
                    |r| r.get(0),
                )
                .optional()?;
            if current.as_deref() == Some(holder.as_str()) {
                for key in &keys {
                    tx.execute("DELETE FROM kg_meta WHERE key = ?1", [key])?;
                }
            }
            tx.commit()
        })
        .await
    }

    async fn counts(&self, scope: &Scope) -> Result<GraphCounts, StoreError> {
        let scope = scope.clone();
        self.blocking(move |c| {
            let mut counts = GraphCounts::default();
            let (w, p) = scope_sql(&scope, "id");
            for (label, table) in [("Document", "documents"), ("Chunk", "chunks")] {
                let n: i64 = c.query_row(
                    &format!("SELECT count(*) FROM {table} WHERE {w}"),
                    [&p],
                    |r| r.get(0),
                )?;
                if n > 0 {
                    counts.nodes.insert(label.into(), n as u64);
                }
            }
            let mut st = c.prepare(&format!(
                "SELECT label, count(*) FROM entities WHERE {w} GROUP BY label"
            ))?;
            let rows = st.query_map([&p], |r| {
                Ok((r.get::<_, Option<String>>(0)?, r.get::<_, i64>(1)?))
            })?;
            for row in rows {
                let (label, n) = row?;
                *counts.nodes.entry(entity_labels_key(label)).or_default() += n as u64;
            }
            let mut st = c.prepare(&format!(
                "SELECT label, count(*) FROM nodes WHERE {w} GROUP BY label"
            ))?;
            let rows = st.query_map([&p], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            for row in rows {
                let (label, n) = row?;
                *counts.nodes.entry(label).or_default() += n as u64;
            }
            let (w, p) = scope_sql(&scope, "src");
            let mut st = c.prepare(&format!(
                "SELECT type, count(*) FROM rels WHERE {w} GROUP BY type"
            ))?;
            let rows = st.query_map([&p], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            for row in rows {
                let (t, n) = row?;
                counts.relationships.insert(t, n as u64);
            }
            Ok(counts)
        })
        .await
    }

    async fn earlier_versions(
        &self,
        current: &[CurrentDocument],
    ) -> Result<Vec<DocumentId>, StoreError> {
        let current = current.to_vec();
        let stale = self
            .blocking(move |c| earlier_versions(c, &current))
            .await?;
        Ok(stale.into_iter().map(DocumentId::from_raw).collect())
    }

    async fn remove_document(&self, id: &DocumentId) -> Result<Removed, StoreError> {
        let doc = id.to_string();
        let removed = self.blocking(move |c| remove_version(c, &doc)).await?;
        tracing::info!(document = %id, chunks = removed.chunks, entities = removed.entities, relations = removed.relations, "removed an earlier version of a changed document");
        Ok(removed)
    }

    async fn stream_entities(&self, out: mpsc::Sender<EntityRow>) -> Result<u64, StoreError> {
        let path = self.path.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let mut c = Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            c.busy_timeout(std::time::Duration::from_secs(30))?;
            let tx = c.transaction()?;
            let mut st = tx.prepare(
                "SELECT e.id, e.type, e.name,
                    (SELECT count(*) FROM rels r WHERE r.dst = e.id AND r.type = 'MENTIONS')
                 FROM entities e WHERE e.type IS NOT NULL AND e.name IS NOT NULL ORDER BY e.id",
            )?;
            let mut rows = st.query([])?;
            let mut sent = 0u64;
            while let Some(r) = rows.next()? {
                let row = EntityRow {
                    id: r.get(0)?,
                    entity_type: r.get(1)?,
                    name: r.get(2)?,
                    mentions: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                };
                if out.blocking_send(row).is_err() {
                    break;
                }
                sent += 1;
            }
            Ok(sent)
        })
        .await;
        joined
            .map_err(|e| StoreError::Embedded {
                path: self.path.clone(),
                detail: format!("worker failed: {e}"),
            })?
            .map_err(embedded_err(&self.path))
    }

    async fn entity_vectors(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, Vec<f32>>, StoreError> {
        let list = Value::from(ids.to_vec()).to_string();
        self.blocking(move |c| {
            let mut st = c.prepare(
                "SELECT id, embedding FROM entities
                 WHERE id IN (SELECT value FROM json_each(?1)) AND embedding IS NOT NULL",
            )?;
            let rows = st.query_map([&list], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    blob_vector(&r.get::<_, Vec<u8>>(1)?),
                ))
            })?;
            rows.collect()
        })
        .await
    }

    async fn merge_entities(&self, merge: &EntityMerge) -> Result<MergeOutcome, StoreError> {
        let m = merge.clone();
        self.blocking(move |c| merge_group(c, &m)).await
    }

    async fn documents_under(&self, prefix: &str) -> Result<Vec<CurrentDocument>, StoreError> {
        let prefix = prefix.to_owned();
        self.blocking(move |c| {
            let mut st = c.prepare(
                "SELECT source, id FROM documents
                 WHERE source IS NOT NULL AND substr(source, 1, length(?1)) = ?1
                 ORDER BY source, id",
            )?;
            let rows = st.query_map([&prefix], |r| {
                Ok(CurrentDocument {
                    source: r.get(0)?,
                    id: DocumentId::from_raw(r.get::<_, String>(1)?),
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn stale_descriptions(
        &self,
        relations: bool,
        after: Option<&crate::Described>,
        limit: usize,
    ) -> Result<Vec<crate::DescriptionSet>, StoreError> {
        let after = after.cloned();
        self.blocking(move |c| descriptions::stale(c, relations, after.as_ref(), limit))
            .await
    }

    async fn set_descriptions(
        &self,
        updates: &[crate::DescriptionUpdate],
    ) -> Result<u64, StoreError> {
        let updates = updates.to_vec();
        self.blocking(move |c| descriptions::set(c, &updates)).await
    }

    async fn read_records(
        &self,
        scope: &Scope,
        out: mpsc::Sender<Record>,
    ) -> Result<u64, StoreError> {
        self.read_back(scope, false, out).await
    }

    async fn read_entities(
        &self,
        scope: &Scope,
        out: mpsc::Sender<Record>,
    ) -> Result<u64, StoreError> {
        self.read_back(scope, true, out).await
    }
}

impl EmbeddedStore {
    /// [`GraphStore::read_records`], or its entities only.
    async fn read_back(
        &self,
        scope: &Scope,
        entities_only: bool,
        out: mpsc::Sender<Record>,
    ) -> Result<u64, StoreError> {
        // A connection of its own, read-only, in one read transaction: a
        // consistent snapshot (WAL), and the writer's connection stays free
        // while the caller drains the channel at its own pace.
        let (scope, path) = (scope.clone(), self.path.clone());
        let err = |e: rusqlite::Error| StoreError::Embedded {
            path: self.path.clone(),
            detail: e.to_string(),
        };
        let joined = tokio::task::spawn_blocking(move || {
            let mut c = Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            c.busy_timeout(std::time::Duration::from_secs(30))?;
            let tx = c.transaction()?;
            let mut sent = 0u64;
            stream_records(&tx, &scope, entities_only, &mut |r| {
                let ok = out.blocking_send(r).is_ok();
                sent += u64::from(ok);
                ok
            })?;
            Ok(sent)
        })
        .await;
        joined
            .map_err(|e| StoreError::Embedded {
                path: self.path.clone(),
                detail: format!("worker failed: {e}"),
            })?
            .map_err(err)
    }
}

/// The stored JSON property map as [`StoredValue`]s.
fn json_props(text: &str) -> Vec<(String, StoredValue)> {
    let map: Map<String, Value> = serde_json::from_str(text).unwrap_or_default();
    map.into_iter()
        .map(|(k, v)| {
            let value = match v {
                Value::String(s) => StoredValue::Str(s),
                Value::Bool(b) => StoredValue::Bool(b),
                Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                    (Some(i), _) => StoredValue::Int(i),
                    (None, Some(f)) => StoredValue::Float(f),
                    (None, None) => StoredValue::Other,
                },
                Value::Array(a) => a
                    .into_iter()
                    .map(|x| match x {
                        Value::String(s) => Some(s),
                        _ => None,
                    })
                    .collect::<Option<Vec<String>>>()
                    .map_or(StoredValue::Other, StoredValue::StrList),
                _ => StoredValue::Other,
            };
            (k, value)
        })
        .collect()
}

fn u32_of(v: Option<i64>) -> Option<u32> {
    v.and_then(|x| u32::try_from(x).ok())
}

/// The embedding record of `id` from a row whose column `col` holds the
/// vector blob and `col + 1` the model, if it has a vector.
fn stored_embedding(
    r: &rusqlite::Row<'_>,
    col: usize,
    id: &str,
    target: kg_core::EmbeddingTarget,
) -> rusqlite::Result<Option<Record>> {
    let Some(blob) = r.get::<_, Option<Vec<u8>>>(col)? else {
        return Ok(None);
    };
    Ok(Some(Record::Embedding(kg_core::Embedding {
        id: id.to_owned(),
        target,
        vector: blob_vector(&blob),
        model: r.get::<_, Option<String>>(col + 1)?.unwrap_or_default(),
    })))
}

/// Reads the graph in `scope` row by row, handing each record to `emit`
/// (which says false once nobody wants more): documents; chunks in
/// document and index order, each followed by its embedding; entities with
/// the chunks that mention them, each followed by its embedding;
/// relations; CSV nodes and edges.
fn stream_records(
    c: &Connection,
    scope: &Scope,
    entities_only: bool,
    emit: &mut dyn FnMut(Record) -> bool,
) -> rusqlite::Result<()> {
    let (w, p) = scope_sql(scope, "id");
    if !entities_only {
        let mut st = c.prepare(&format!(
            "SELECT id, source, title, sha256, pages, media_type, bytes FROM documents WHERE {w}
             ORDER BY id"
        ))?;
        let mut rows = st.query([&p])?;
        while let Some(r) = rows.next()? {
            let doc = Record::Document(kg_core::Document {
                id: DocumentId::from_raw(r.get::<_, String>(0)?),
                source: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                title: r.get(2)?,
                sha256: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                pages: u32_of(r.get(4)?),
                media_type: media_type(r.get::<_, Option<String>>(5)?.as_deref()),
                bytes: r
                    .get::<_, Option<i64>>(6)?
                    .and_then(|b| u64::try_from(b).ok())
                    .unwrap_or(0),
            });
            if !emit(doc) {
                return Ok(());
            }
        }
        let mut st = c.prepare(&format!(
            "SELECT id, document_id, idx, text, tokens, source, page_start, page_end, embedding,
                    embedding_model FROM chunks WHERE ({w}) ORDER BY document_id, idx, id"
        ))?;
        let mut rows = st.query([&p])?;
        while let Some(r) = rows.next()? {
            let id: String = r.get(0)?;
            let embedding = stored_embedding(r, 8, &id, kg_core::EmbeddingTarget::Chunk)?;
            // A chunk only a relationship or a vector created has no record to
            // give back (its vector still goes).
            let chunk = match r.get::<_, Option<String>>(3)? {
                Some(text) => Some(Record::Chunk(kg_core::Chunk {
                    id: ChunkId::from_raw(id),
                    document_id: DocumentId::from_raw(
                        r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    ),
                    index: u32_of(r.get(2)?).unwrap_or(0),
                    text,
                    tokens: u32_of(r.get(4)?).unwrap_or(0),
                    source: r.get::<_, Option<String>>(5)?.unwrap_or_default(),
                    page_start: u32_of(r.get(6)?),
                    page_end: u32_of(r.get(7)?),
                })),
                None => None,
            };
            for record in chunk.into_iter().chain(embedding) {
                if !emit(record) {
                    return Ok(());
                }
            }
        }
    }
    let mut mentions = c.prepare(
        "SELECT src, props FROM rels WHERE dst = ?1 AND type = 'MENTIONS' AND src_label = 'Chunk'
         ORDER BY src",
    )?;
    let mut st = c.prepare(&format!(
        "SELECT id, name, type, description, aliases, embedding, embedding_model FROM entities
         WHERE {w} ORDER BY id"
    ))?;
    let mut rows = st.query([&p])?;
    while let Some(r) = rows.next()? {
        let id: String = r.get(0)?;
        let embedding = stored_embedding(r, 5, &id, kg_core::EmbeddingTarget::Entity)?;
        let ty = r
            .get::<_, Option<String>>(2)?
            .and_then(|t| Label::new(&t).ok());
        let entity = match ty {
            Some(entity_type) => {
                let mut chunk_ids: Vec<ChunkId> = Vec::new();
                let mut mention_descriptions = std::collections::BTreeMap::new();
                let found = mentions.query_map([&id], |m| {
                    Ok((m.get::<_, String>(0)?, m.get::<_, String>(1)?))
                })?;
                for found in found {
                    let (chunk, props) = found?;
                    let props: Map<String, Value> =
                        serde_json::from_str(&props).unwrap_or_default();
                    let ds = descriptions::list(&props, "descriptions");
                    if !ds.is_empty() {
                        mention_descriptions.insert(ChunkId::from_raw(chunk.clone()), ds);
                    }
                    chunk_ids.push(ChunkId::from_raw(chunk));
                }
                chunk_ids.dedup();
                Some(Record::Entity(kg_core::Entity {
                    id: EntityId::from_raw(id),
                    name: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    entity_type,
                    description: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                    aliases: r
                        .get::<_, Option<String>>(4)?
                        .and_then(|a| serde_json::from_str(&a).ok())
                        .unwrap_or_default(),
                    chunk_ids,
                    mention_descriptions,
                }))
            }
            None => None,
        };
        for record in entity.into_iter().chain(embedding) {
            if !emit(record) {
                return Ok(());
            }
        }
    }
    if entities_only {
        return Ok(());
    }
    let (ws, ps) = scope_sql(scope, "src");
    let mut st = c.prepare(&format!(
        "SELECT src, type, dst, props FROM rels
         WHERE src_label = 'Entity' AND dst_label = 'Entity' AND ({ws}) ORDER BY src, type, dst"
    ))?;
    let mut rows = st.query([&ps])?;
    while let Some(r) = rows.next()? {
        let Ok(t) = RelType::new(&r.get::<_, String>(1)?) else {
            continue;
        };
        let props: Map<String, Value> =
            serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or_default();
        let relation = Record::Relation(kg_core::Relation {
            source_id: EntityId::from_raw(r.get::<_, String>(0)?),
            target_id: EntityId::from_raw(r.get::<_, String>(2)?),
            rel_type: t,
            description: props
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            weight: props.get("weight").and_then(Value::as_f64).unwrap_or(1.0) as f32,
            chunk_ids: props
                .get("chunks")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(ChunkId::from_raw)
                        .collect()
                })
                .unwrap_or_default(),
            chunk_descriptions: crate::descriptions::entries_by_chunk(&descriptions::list(
                &props,
                "descriptions",
            )),
        });
        if !emit(relation) {
            return Ok(());
        }
    }
    let mut st = c.prepare(&format!(
        "SELECT id, label, props FROM nodes WHERE {w} ORDER BY id"
    ))?;
    let mut rows = st.query([&p])?;
    while let Some(r) = rows.next()? {
        let Ok(label) = Label::new(&r.get::<_, String>(1)?) else {
            continue;
        };
        let text: String = r.get(2)?;
        let key = serde_json::from_str::<Map<String, Value>>(&text)
            .ok()
            .and_then(|m| m.get("key").and_then(Value::as_str).map(str::to_owned));
        let Some(key) = key else { continue };
        let (properties, source, line) = csv_properties(json_props(&text));
        let node = Record::Node(kg_core::GraphNode {
            id: NodeId::from_raw(r.get::<_, String>(0)?),
            label,
            key,
            properties,
            source,
            line,
        });
        if !emit(node) {
            return Ok(());
        }
    }
    let mut st = c.prepare(&format!(
        "SELECT src_label, src, type, dst_label, dst, props FROM rels
         WHERE src_label NOT IN ('Document', 'Chunk', 'Entity') AND ({ws}) ORDER BY src, type, dst"
    ))?;
    let mut rows = st.query([&ps])?;
    while let Some(r) = rows.next()? {
        let (Ok(fl), Ok(t), Ok(tl)) = (
            Label::new(&r.get::<_, String>(0)?),
            RelType::new(&r.get::<_, String>(2)?),
            Label::new(&r.get::<_, String>(3)?),
        ) else {
            continue;
        };
        let (properties, source, line) = csv_properties(json_props(&r.get::<_, String>(5)?));
        let edge = Record::Edge(kg_core::GraphEdge {
            rel_type: t,
            from: NodeRef {
                label: fl,
                id: NodeId::from_raw(r.get::<_, String>(1)?),
            },
            to: NodeRef {
                label: tl,
                id: NodeId::from_raw(r.get::<_, String>(4)?),
            },
            properties,
            source,
            line,
        });
        if !emit(edge) {
            return Ok(());
        }
    }
    Ok(())
}

/// Cosine of `qv` with every vector of `table` (`chunks` or `entities`), the
/// `k` best (ties by id; vectors of another length have no cosine with
/// `qv` and are not ranked).
///
/// An exact scan that reads only what it ranks by: rows whose blob has
/// `qv`'s length, each blob borrowed from SQLite and decoded into one
/// reused buffer, and a bounded heap that copies a row's id only when the
/// row gets into the `k` best.
fn scan_vectors(
    c: &Connection,
    table: &str,
    qv: &[f32],
    k: usize,
) -> rusqlite::Result<Vec<Scored>> {
    if k == 0 || qv.is_empty() {
        return Ok(Vec::new());
    }
    let q_norm = norm(qv);
    let mut best = TopK::new(k);
    let mut buf: Vec<f32> = Vec::with_capacity(qv.len());
    let mut st = c.prepare_cached(&format!(
        "SELECT embedding, id FROM {table} WHERE length(embedding) = ?1"
    ))?;
    let mut rows = st.query([(qv.len() * 4) as i64])?;
    while let Some(r) = rows.next()? {
        let ValueRef::Blob(blob) = r.get_ref(0)? else {
            continue;
        };
        if !decode_vector_into(blob, &mut buf) {
            continue;
        }
        let score = cosine_with_norm(qv, q_norm, &buf);
        if !best.admits_score(score) {
            continue;
        }
        let ValueRef::Text(id) = r.get_ref(1)? else {
            continue;
        };
        let Ok(id) = std::str::from_utf8(id) else {
            continue;
        };
        if best.admits(score, id) {
            best.push_owned(score, id.to_owned());
        }
    }
    Ok(best
        .into_sorted()
        .into_iter()
        .map(|(score, id)| Scored { id, score })
        .collect())
}

fn entity_by_id(c: &Connection, id: &str) -> rusqlite::Result<Option<EntitySummary>> {
    c.prepare_cached("SELECT id, name, type FROM entities WHERE id = ?1")?
        .query_row([id], |r| Ok(summary(r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()
}

/// Entity neighbours of `id` (either direction), heaviest relationships
/// first, at most `limit`.
fn neighbour_ids(c: &Connection, id: &str, limit: usize) -> rusqlite::Result<Vec<String>> {
    c.prepare_cached(
        "SELECT other, max(w) AS w FROM (
           SELECT dst AS other, coalesce(json_extract(props, '$.weight'), 0) AS w FROM rels
             WHERE src = ?1 AND src_label = 'Entity' AND dst_label = 'Entity'
           UNION ALL
           SELECT src AS other, coalesce(json_extract(props, '$.weight'), 0) AS w FROM rels
             WHERE dst = ?1 AND src_label = 'Entity' AND dst_label = 'Entity')
         WHERE other <> ?1 GROUP BY other ORDER BY w DESC, other LIMIT ?2",
    )?
    .query_map(params![id, limit as i64], |r| r.get(0))?
    .collect()
}

fn expand_sql(
    c: &Connection,
    seeds: &[String],
    hops: u8,
    max_neighbours: usize,
    per_entity: usize,
) -> rusqlite::Result<Vec<Reached>> {
    let mut out = Vec::new();
    let mut chunks_of = c.prepare_cached(
        "SELECT src FROM rels WHERE dst = ?1 AND type = 'MENTIONS' ORDER BY src LIMIT ?2",
    )?;
    for seed in seeds {
        // (entity, hops), each entity once, nearest first.
        let mut reached: Vec<(String, u8)> = vec![(seed.clone(), 0)];
        let mut seen: HashSet<String> = HashSet::from([seed.clone()]);
        let mut frontier = vec![seed.clone()];
        for hop in 1..=hops.min(2) {
            let mut next = Vec::new();
            for e in &frontier {
                for n in neighbour_ids(c, e, max_neighbours)? {
                    if next.len() >= max_neighbours {
                        break;
                    }
                    if seen.insert(n.clone()) {
                        next.push(n);
                    }
                }
            }
            reached.extend(next.iter().map(|n| (n.clone(), hop)));
            frontier = next;
        }
        for (entity, hops) in reached {
            let Some(summary) = entity_by_id(c, &entity)? else {
                continue;
            };
            let ids: Vec<String> = chunks_of
                .query_map(params![entity, per_entity as i64], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            out.extend(ids.into_iter().map(|chunk_id| Reached {
                chunk_id,
                entity: summary.clone(),
                seed: seed.clone(),
                hops,
            }));
        }
    }
    Ok(out)
}

/// The `kg_meta` keys of lease `name`: holder, note, expiry.
fn lease_keys(name: &str) -> [String; 3] {
    ["holder", "note", "expires_ms"].map(|k| format!("lease:{name}:{k}"))
}
