//! The Neo4j backend over Bolt (neo4rs, patched: see `vendor/neo4rs`).
//!
//! - **Fail fast.** neo4rs opens connections lazily and its `Graph::run`
//!   retries for a minute. [`Neo4jStore::connect`] therefore opens one
//!   transaction (`RETURN 1`) under [`Neo4jConfig::connect_timeout`] before
//!   anything else: a wrong password, an unreachable host or a TLS mismatch
//!   fails within seconds, and the error names the URI, never the password.
//! - **One transaction per batch**, explicit (`BEGIN`, `UNWIND $rows ...`,
//!   `COMMIT`), never the driver's auto-retrying helpers: the batch writer
//!   owns retries, so it can count them, back off and dead-letter.
//! - **Queries** are fixed text per [`GroupKey`]; the only variable parts are
//!   kg-core validated identifiers ([`Label::cypher`], [`RelType::cypher`]),
//!   all data is in `$rows`. Properties are set with `+=` from maps that
//!   hold no nulls, so a write never erases a property; relation chunk lists
//!   grow as a set union.
//! - **Vector search.** The index is created on servers that take `CREATE
//!   VECTOR INDEX` (Neo4j ≥ 5.11). Search uses it where it exists, else
//!   `vector.similarity.cosine()` (Neo4j ≥ 5.18, and the ArcadeDB test
//!   server, which reports 5.26 but has no vector index), so only `k` rows
//!   cross the wire; only a server with neither gets its chunk vectors read
//!   and ranked in the client. Scores are cosines (-1..=1): Neo4j's
//!   `(1 + cos) / 2` is converted back; a probe on the first search tells
//!   which scale the function uses.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use kg_core::{ChunkId, DocumentId, EntityId, Label, NodeId, NodeRef, Record, RelType};
use neo4rs::{query, BoltList, BoltMap, BoltString, BoltType, ConfigBuilder, Graph, Query, Txn};
use tokio::sync::mpsc;

use crate::config::Neo4jConfig;
use crate::error::{BatchFailure, FailureClass, StoreError};
use crate::plan::{Batch, GroupKey, Param, Row};
use crate::shared::{cosine, csv_properties, media_type, top_k, StoredValue};
use crate::store::{
    merged_fields, ChunkGraph, ChunkInfo, CurrentDocument, EntityMatch, EntityMerge, EntityRow,
    EntitySummary, GraphCounts, GraphSink, GraphStore, MergeOutcome, Reached, RelationSummary,
    Removed, SchemaReport, Scope, Scored,
};

mod descriptions;

const BACKEND: &str = "neo4j";
const VECTOR_INDEX: &str = "kg_chunk_embedding";
const ENTITY_VECTOR_INDEX: &str = "kg_entity_embedding";
const FULLTEXT_INDEX: &str = "kg_chunk_text";

/// Fulltext search not tried yet.
const FULLTEXT_UNKNOWN: u8 = 0;
/// Neo4j's fulltext index (`db.index.fulltext.queryNodes`).
const FULLTEXT_NATIVE: u8 = 1;
/// No fulltext procedure (ArcadeDB): BM25 computed by kg.
const FULLTEXT_BM25: u8 = 2;

/// A Neo4j (or Bolt-speaking) graph store.
pub struct Neo4jStore {
    graph: Graph,
    config: Neo4jConfig,
    node_constraints: Mutex<HashSet<Label>>,
    vector_warned: AtomicBool,
    in_use: Arc<AtomicUsize>,
    ranking: AtomicU8,
    entity_ranking: AtomicU8,
    function_scale: AtomicU8,
    fulltext: AtomicU8,
}

/// A connection in use: decrements the count when dropped (after the
/// transaction it belongs to has been committed or rolled back).
struct InUse(Arc<AtomicUsize>);

impl Drop for InUse {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Neo4jStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Neo4jStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Converts a parameter to Bolt.
fn bolt(p: &Param) -> BoltType {
    match p {
        Param::Null => BoltType::Null(neo4rs::BoltNull),
        Param::Bool(b) => BoltType::from(*b),
        Param::Int(i) => BoltType::from(*i),
        Param::Float(f) => BoltType::from(*f),
        Param::Str(s) => BoltType::String(BoltString::from(s.as_str())),
        Param::StrList(v) => {
            let mut l = BoltList::with_capacity(v.len());
            for s in v {
                l.push(BoltType::String(BoltString::from(s.as_str())));
            }
            BoltType::List(l)
        }
        Param::Vector(v) => {
            let mut l = BoltList::with_capacity(v.len());
            for x in v {
                l.push(BoltType::from(f64::from(*x)));
            }
            BoltType::List(l)
        }
        Param::Map(m) => {
            let mut map = BoltMap::with_capacity(m.len());
            for (k, v) in m {
                map.put(BoltString::from(k.as_str()), bolt(v));
            }
            BoltType::Map(map)
        }
    }
}

fn bolt_row(r: &Row) -> BoltType {
    let mut map = BoltMap::with_capacity(r.fields.len());
    for (k, v) in &r.fields {
        map.put(BoltString::from(*k), bolt(v));
    }
    BoltType::Map(map)
}

/// The statements that write one group's rows, run in order in one
/// transaction with the same `$rows`. Identifiers come only from validated
/// kg-core types; everything else is a parameter.
///
/// `HAS_CHUNK` is merged from the chunk's side (`MERGE (c)<-[:HAS_CHUNK]-(d)`,
/// the same relationship): on the ArcadeDB test server, merging it from
/// the document's side cost time growing with the document's chunk count
/// for every link; Neo4j plans both forms alike.
///
/// Entities take two statements: update the ones that exist, create the
/// rest with both labels. `MERGE (n:Entity {id}) SET n:Person` would be one,
/// but adding a label to a node inside an explicit transaction fails on
/// ArcadeDB when a uniqueness constraint covers the node (it re-creates the
/// vertex under a new type), and `MERGE (n:Entity:Person {id})` would try
/// to create a second node where a placeholder `(:Entity {id})` exists. A
/// placeholder (an entity a relationship named before its own record came)
/// therefore keeps the bare `Entity` label; its `type` property is set.
pub fn cypher_for(key: &GroupKey) -> Vec<String> {
    const U: &str = "UNWIND $rows AS row ";
    let one = |s: String| vec![s];
    match key {
        GroupKey::Documents => one(format!("{U}MERGE (n:Document {{id: row.id}}) SET n += row.props")),
        GroupKey::Chunks => one(format!("{U}MERGE (n:Chunk {{id: row.id}}) SET n += row.props")),
        GroupKey::ChunkEmbeddings => one(format!(
            "{U}MERGE (n:Chunk {{id: row.id}}) SET n.embedding = row.vector, n.embedding_model = row.model"
        )),
        GroupKey::EntityEmbeddings => one(format!(
            "{U}MERGE (n:Entity {{id: row.id}}) SET n.embedding = row.vector, n.embedding_model = row.model"
        )),
        GroupKey::Entities(label) => vec![
            format!("{U}MATCH (n:Entity {{id: row.id}}) SET n += row.props"),
            format!(
                "{U}OPTIONAL MATCH (m:Entity {{id: row.id}}) WITH row, m WHERE m IS NULL \
                 CREATE (n:Entity:{} {{id: row.id}}) SET n += row.props",
                label.cypher()
            ),
        ],
        GroupKey::ExtractedEntities(label) => vec![
            format!(
                "{U}MATCH (n:Entity {{id: row.id}}) \
                 SET n.name = coalesce(n.name, row.name), n.type = coalesce(n.type, row.type), \
                 n.description = coalesce(n.description, row.description)"
            ),
            format!(
                "{U}OPTIONAL MATCH (m:Entity {{id: row.id}}) WITH row, m WHERE m IS NULL \
                 CREATE (n:Entity:{} {{id: row.id}}) \
                 SET n.name = row.name, n.type = row.type, n.description = row.description",
                label.cypher()
            ),
        ],
        GroupKey::Nodes(label) => one(format!(
            "{U}MERGE (n:{} {{id: row.id}}) SET n += row.props",
            label.cypher()
        )),
        GroupKey::HasChunk => one(format!(
            "{U}MERGE (d:Document {{id: row.document}}) MERGE (c:Chunk {{id: row.chunk}}) \
             MERGE (c)<-[:HAS_CHUNK]-(d)"
        )),
        GroupKey::NextChunk => one(format!(
            "{U}MERGE (a:Chunk {{id: row.from}}) MERGE (b:Chunk {{id: row.to}}) \
             MERGE (a)-[:NEXT_CHUNK]->(b)"
        )),
        GroupKey::Mentions => one(format!(
            "{U}MERGE (c:Chunk {{id: row.chunk}}) MERGE (e:Entity {{id: row.entity}}) \
             MERGE (c)-[m:MENTIONS]->(e) \
             SET e.description_dirty = CASE WHEN size(row.descriptions) = 0 \
             THEN e.description_dirty ELSE true END, \
             m.descriptions = CASE WHEN size(row.descriptions) = 0 THEN m.descriptions \
             ELSE coalesce(m.descriptions, []) + \
             [x IN row.descriptions WHERE NOT x IN coalesce(m.descriptions, [])] END"
        )),
        GroupKey::Relations(rel) => one(format!(
            "{U}MERGE (a:Entity {{id: row.source}}) MERGE (b:Entity {{id: row.target}}) \
             MERGE (a)-[r:{}]->(b) \
             SET r.description = CASE WHEN row.overwrite THEN coalesce(row.description, r.description) \
             ELSE coalesce(r.description, row.description) END, \
             r.weight = CASE WHEN row.overwrite OR r.weight IS NULL OR row.weight > r.weight \
             THEN row.weight ELSE r.weight END, \
             r.chunks = coalesce(r.chunks, []) + [x IN row.chunks WHERE NOT x IN coalesce(r.chunks, [])], \
             r.description_dirty = CASE WHEN size(row.descriptions) = 0 \
             THEN r.description_dirty ELSE true END, \
             r.descriptions = CASE WHEN size(row.descriptions) = 0 THEN r.descriptions \
             ELSE coalesce(r.descriptions, []) + \
             [x IN row.descriptions WHERE NOT x IN coalesce(r.descriptions, [])] END",
            rel.cypher()
        )),
        GroupKey::Edges { rel_type, from, to } => one(format!(
            "{U}MERGE (a:{} {{id: row.from}}) MERGE (b:{} {{id: row.to}}) \
             MERGE (a)-[r:{}]->(b) SET r += row.props",
            from.cypher(),
            to.cypher(),
            rel_type.cypher()
        )),
    }
}

/// The code and message of a server's FAILURE answer: from a Neo4j error,
/// or from the debug dump neo4rs makes of a FAILURE that answers `BEGIN` or
/// `COMMIT` (an "unexpected response").
fn server_failure(e: &neo4rs::Error) -> Option<(String, String)> {
    match e {
        neo4rs::Error::Neo4j(n) => Some((n.code().to_owned(), n.message().to_owned())),
        neo4rs::Error::UnexpectedMessage(m) => {
            let code = dumped_string(m, "code")?;
            Some((code, dumped_string(m, "message").unwrap_or_default()))
        }
        _ => None,
    }
}

/// The string value of `key` in neo4rs' debug dump of a Bolt map.
fn dumped_string(dump: &str, key: &str) -> Option<String> {
    let marker = format!("BoltString {{ value: \"{key}\" }}: String(BoltString {{ value: \"");
    let start = dump.find(&marker)? + marker.len();
    let mut out = String::new();
    let mut chars = dump.get(start..)?.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                'n' | 'r' | 't' => out.push(' '),
                other => out.push(other),
            },
            '"' => return Some(out),
            c => out.push(c),
        }
    }
    None
}

/// A neo4rs error in one line: `code: message` when the server answered,
/// never the driver's debug dump of the answer.
fn describe(e: &neo4rs::Error) -> String {
    match server_failure(e) {
        Some((code, message)) => format!("{code}: {}", message.replace(['\n', '\r'], " ")),
        None => e.to_string(),
    }
}

/// Sorts a neo4rs error into retry-or-not.
fn classify(e: &neo4rs::Error) -> BatchFailure {
    match e {
        neo4rs::Error::Neo4j(n) => {
            let code = n.code();
            let msg = format!("{code}: {}", n.message());
            let lower = msg.to_ascii_lowercase();
            let transient = code.starts_with("Neo.TransientError")
                || code.contains("Deadlock")
                || code.contains("NotALeader")
                || code.contains("LeaderSwitch")
                || lower.contains("concurrentmodification")
                || lower.contains("concurrent modification");
            let too_big = lower.contains("memory") && !lower.contains("constraint");
            BatchFailure {
                class: if transient {
                    FailureClass::Transient
                } else {
                    FailureClass::Permanent
                },
                unreachable: false,
                too_big,
                message: msg,
            }
        }
        // neo4rs reports a FAILURE answer to COMMIT (where some servers
        // check constraints) as an unexpected message: read the code in it.
        neo4rs::Error::UnexpectedMessage(m) if m.contains("Neo.ClientError") => {
            BatchFailure::permanent(describe(e))
        }
        neo4rs::Error::UnexpectedMessage(m)
            if m.contains("Neo.TransientError")
                || m.to_ascii_lowercase().contains("concurrent") =>
        {
            BatchFailure::transient(describe(e))
        }
        neo4rs::Error::IOError { .. }
        | neo4rs::Error::ConnectionError
        | neo4rs::Error::UnexpectedMessage(_) => BatchFailure {
            unreachable: true,
            ..BatchFailure::transient(e.to_string())
        },
        neo4rs::Error::AuthenticationError(_) => BatchFailure {
            unreachable: true,
            ..BatchFailure::permanent(e.to_string())
        },
        other => BatchFailure::permanent(other.to_string()),
    }
}

/// Attempts of one read or short write ([`Neo4jStore::fetch`]) while the
/// server calls its failure transient.
const FETCH_ATTEMPTS: u32 = 8;

/// Attempts of a writer-lease transaction (one hot record, many takers).
const LEASE_ATTEMPTS: u32 = 20;

/// Whether a failed single-statement transaction is worth running again:
/// the server called the failure transient, or (when asked) the
/// connection failed.
fn worth_again(e: &neo4rs::Error, through_connection_failures: bool) -> bool {
    let f = classify(e);
    f.class == FailureClass::Transient && (through_connection_failures || !f.unreachable)
}

fn q_err(what: impl Into<String>) -> impl FnOnce(neo4rs::Error) -> StoreError {
    let what = what.into();
    move |e| StoreError::Query {
        backend: BACKEND,
        what,
        detail: describe(&e),
    }
}

impl Neo4jStore {
    /// Connects and verifies connectivity with one `RETURN 1` transaction
    /// under the connect timeout. Fails with [`StoreError::Connect`] naming
    /// the URI (without user info) on a wrong password, an unreachable host,
    /// a TLS mismatch or a timeout.
    pub async fn connect(config: Neo4jConfig) -> Result<Self, StoreError> {
        config.validate()?;
        let uri = config.display_uri();
        let fail = |detail: String| StoreError::Connect {
            uri: uri.clone(),
            detail,
        };
        // A server that answers but has no such database says so in one
        // line, naming it; anything else is a connection failure.
        let refused = |e: neo4rs::Error| match server_failure(&e) {
            Some((code, _)) if code == "Neo.ClientError.Database.DatabaseNotFound" => {
                StoreError::UnknownDatabase {
                    uri: uri.clone(),
                    database: config.database.clone(),
                }
            }
            _ => fail(describe(&e)),
        };
        let neo = ConfigBuilder::default()
            .uri(config.uri.as_str())
            .user(config.user.as_str())
            .password(config.password.expose())
            .db(config.database.as_str())
            .fetch_size(config.fetch_size)
            .max_connections(config.max_pool_size)
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let graph = Graph::connect(neo).await.map_err(refused)?;
        let probe = async {
            let mut txn = graph.start_txn().await?;
            txn.run(query("RETURN 1")).await?;
            txn.commit().await
        };
        match tokio::time::timeout(config.connect_timeout, probe).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(refused(e)),
            Err(_) => {
                return Err(fail(format!(
                    "no answer within {:?} (host down, firewall, or TLS mismatch?)",
                    config.connect_timeout
                )))
            }
        }
        tracing::info!(uri = %uri, database = %config.database, "connected to Neo4j");
        Ok(Self {
            graph,
            config,
            node_constraints: Mutex::new(HashSet::new()),
            vector_warned: AtomicBool::new(false),
            in_use: Arc::new(AtomicUsize::new(0)),
            ranking: AtomicU8::new(RANK_UNKNOWN),
            entity_ranking: AtomicU8::new(RANK_UNKNOWN),
            function_scale: AtomicU8::new(RANK_UNKNOWN),
            fulltext: AtomicU8::new(FULLTEXT_UNKNOWN),
        })
    }

    /// The underlying neo4rs graph (for benchmarks and tests that need raw
    /// queries).
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The configuration (password hidden in `Debug`).
    pub fn config(&self) -> &Neo4jConfig {
        &self.config
    }

    /// Opens a transaction on a pooled connection; the connection counts
    /// as in use until the returned guard drops.
    async fn begin(&self) -> Result<(Txn, InUse), neo4rs::Error> {
        match tokio::time::timeout(self.config.acquire_timeout, self.graph.start_txn()).await {
            Ok(Ok(txn)) => {
                self.in_use.fetch_add(1, Ordering::Relaxed);
                Ok((txn, InUse(self.in_use.clone())))
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(neo4rs::Error::ConnectionError),
        }
    }

    /// Bolt connections kg holds right now (one per open transaction), for
    /// the `kg_bolt_connections_in_use` gauge. At most
    /// [`Neo4jStore::max_connections`].
    pub fn connections_in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }

    /// The connection pool's size.
    pub fn max_connections(&self) -> usize {
        self.config.max_pool_size
    }

    /// Runs `q` in its own transaction and collects every row, again while
    /// the server calls the failure transient (a deadlock, or ArcadeDB's
    /// "record was deleted during read" when another transaction changed
    /// what this one read): the failed transaction changed nothing, so
    /// running it again is safe, as Neo4j's own drivers do for managed
    /// transactions. A connection failure is not retried here: the caller
    /// hears of a database that went away at once.
    async fn fetch(&self, q: Query, what: &str) -> Result<Vec<neo4rs::Row>, StoreError> {
        self.fetch_with(q, what, FETCH_ATTEMPTS, false).await
    }

    /// [`Self::fetch`], also retried when the connection fails, and more
    /// often: for short transactions on one hot record, such as the writer
    /// lease.
    async fn fetch_retrying(&self, q: Query, what: &str) -> Result<Vec<neo4rs::Row>, StoreError> {
        self.fetch_with(q, what, LEASE_ATTEMPTS, true).await
    }

    async fn fetch_with(
        &self,
        q: Query,
        what: &str,
        attempts: u32,
        through_connection_failures: bool,
    ) -> Result<Vec<neo4rs::Row>, StoreError> {
        let mut attempt = 1u32;
        loop {
            let once = async {
                let (mut txn, _in_use) = self.begin().await?;
                let mut stream = txn.execute(q.clone()).await?;
                let mut rows = Vec::new();
                while let Some(row) = stream.next(txn.handle()).await? {
                    rows.push(row);
                }
                txn.commit().await?;
                Ok::<_, neo4rs::Error>(rows)
            };
            match once.await {
                Ok(rows) => return Ok(rows),
                Err(e) if attempt < attempts && worth_again(&e, through_connection_failures) => {
                    tracing::debug!(what, attempt, error = %describe(&e), "transient failure: again");
                    let jitter = rand::random::<u64>() % (20 * u64::from(attempt));
                    tokio::time::sleep(std::time::Duration::from_millis(5 + jitter)).await;
                    attempt += 1;
                }
                Err(e) => return Err(q_err(what)(e)),
            }
        }
    }

    /// Runs one statement in its own transaction.
    async fn exec(&self, q: Query, what: &str) -> Result<(), StoreError> {
        let (mut txn, _in_use) = self.begin().await.map_err(q_err(what))?;
        txn.run(q).await.map_err(q_err(what))?;
        txn.commit().await.map_err(q_err(what))
    }

    async fn ensure_node_constraint(&self, label: &Label) -> Result<(), BatchFailure> {
        let known = self
            .node_constraints
            .lock()
            .map(|s| s.contains(label))
            .unwrap_or(false);
        if known {
            return Ok(());
        }
        let name = format!("kg_{}_id", label.as_str().to_ascii_lowercase());
        let text = format!(
            "CREATE CONSTRAINT {name} IF NOT EXISTS FOR (n:{}) REQUIRE n.id IS UNIQUE",
            label.cypher()
        );
        let (mut txn, _in_use) = self.begin().await.map_err(|e| classify(&e))?;
        txn.run(query(&text)).await.map_err(|e| classify(&e))?;
        txn.commit().await.map_err(|e| classify(&e))?;
        if let Ok(mut s) = self.node_constraints.lock() {
            s.insert(label.clone());
        }
        Ok(())
    }
}

fn entity_summary(r: &neo4rs::Row, id: &str, name: &str, ty: &str) -> EntitySummary {
    EntitySummary {
        id: r
            .get::<Option<String>>(id)
            .ok()
            .flatten()
            .unwrap_or_default(),
        name: r
            .get::<Option<String>>(name)
            .ok()
            .flatten()
            .unwrap_or_default(),
        entity_type: r
            .get::<Option<String>>(ty)
            .ok()
            .flatten()
            .unwrap_or_default(),
    }
}

impl GraphSink for Neo4jStore {
    async fn write_batch(&self, batch: Arc<Batch>) -> Result<(), BatchFailure> {
        self.write_batches(vec![batch]).await
    }

    async fn write_batches(&self, batches: Vec<Arc<Batch>>) -> Result<(), BatchFailure> {
        for batch in &batches {
            if let GroupKey::Nodes(label) = &batch.key {
                self.ensure_node_constraint(label).await?;
            }
        }
        let (mut txn, _in_use) = self.begin().await.map_err(|e| classify(&e))?;
        let mut result = Ok(());
        'batches: for batch in &batches {
            let mut rows = BoltList::with_capacity(batch.rows.len());
            for r in &batch.rows {
                rows.push(bolt_row(r));
            }
            let rows = BoltType::List(rows);
            let statements = cypher_for(&batch.key);
            // The last statement takes the rows; only earlier ones
            // (entities have two) need a copy of them.
            let last = statements.len().saturating_sub(1);
            let mut rows = Some(rows);
            for (i, text) in statements.iter().enumerate() {
                let param = if i == last { rows.take() } else { rows.clone() };
                let Some(param) = param else {
                    break;
                };
                result = txn.run(query(text).param("rows", param)).await;
                if result.is_err() {
                    break 'batches;
                }
            }
        }
        match result {
            Ok(()) => txn.commit().await.map_err(|e| classify(&e)),
            Err(e) => {
                // Best effort: a failed statement has already doomed the
                // transaction, and a dead connection cannot roll back.
                let _ = txn.rollback().await;
                Err(classify(&e))
            }
        }
    }
}

fn version_at_least(version: &str, major: u32, minor: u32) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (ma, mi) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (ma, mi) >= (major, minor)
}

fn labels_key(mut labels: Vec<String>) -> String {
    labels.sort();
    labels.join(":")
}

/// `MATCH ({var}:{label})` over the scope: every such node, or, for a list
/// of ids, each one looked up by id (through the label's uniqueness
/// constraint), never a scan of the label checking a long list.
fn scoped_match(var: &str, label: &str, scope: &Scope) -> String {
    match scope {
        Scope::All => format!("MATCH ({var}:{label})"),
        Scope::Ids(_) => {
            format!("UNWIND $ids AS scoped_id MATCH ({var}:{label} {{id: scoped_id}}) WITH DISTINCT {var}")
        }
    }
}

fn scope_params(q: Query, scope: &Scope) -> Query {
    match scope {
        Scope::All => q.param("all", true).param("ids", Vec::<String>::new()),
        Scope::Ids(ids) => q.param("all", false).param("ids", ids.clone()),
    }
}

fn opt_string(r: &neo4rs::Row, key: &str) -> Option<String> {
    r.get::<Option<String>>(key).ok().flatten()
}

fn opt_i64(r: &neo4rs::Row, key: &str) -> Option<i64> {
    r.get::<Option<i64>>(key).ok().flatten()
}

fn vector(r: &neo4rs::Row, key: &str) -> Option<Vec<f32>> {
    r.get::<Option<Vec<f64>>>(key)
        .ok()
        .flatten()
        .map(|v| v.into_iter().map(|x| x as f32).collect())
}

fn strings(r: &neo4rs::Row, key: &str) -> Vec<String> {
    r.get::<Option<Vec<String>>>(key)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// A stored property map as [`StoredValue`]s.
fn stored_props(map: &BoltType) -> Vec<(String, StoredValue)> {
    let BoltType::Map(m) = map else {
        return Vec::new();
    };
    m.value
        .iter()
        .map(|(k, v)| {
            let value = match v {
                BoltType::String(s) => StoredValue::Str(s.value.clone()),
                BoltType::Integer(i) => StoredValue::Int(i.value),
                BoltType::Float(f) => StoredValue::Float(f.value),
                BoltType::Boolean(b) => StoredValue::Bool(b.value),
                BoltType::List(l) => l
                    .iter()
                    .map(|x| match x {
                        BoltType::String(s) => Some(s.value.clone()),
                        _ => None,
                    })
                    .collect::<Option<Vec<String>>>()
                    .map_or(StoredValue::Other, StoredValue::StrList),
                _ => StoredValue::Other,
            };
            (k.value.clone(), value)
        })
        .collect()
}

/// Runs `q` inside `txn` and collects every row.
async fn rows_in(txn: &mut Txn, q: Query) -> Result<Vec<neo4rs::Row>, neo4rs::Error> {
    let mut stream = txn.execute(q).await?;
    let mut rows = Vec::new();
    while let Some(row) = stream.next(txn.handle()).await? {
        rows.push(row);
    }
    Ok(rows)
}

impl Neo4jStore {
    /// Removes one document version in one transaction (see
    /// [`GraphStore::remove_document`]).
    ///
    /// Chunks are found by `HAS_CHUNK` and by `document_id` (indexed as
    /// `kg_chunk_document` where the server takes the index); relationships
    /// from the entities the removed chunks mention, and trimmed on the
    /// server.
    async fn remove_version(&self, id: &str) -> Result<Removed, neo4rs::Error> {
        let (mut txn, _in_use) = self.begin().await?;
        let result = async {
            let chunks: Vec<String> = rows_in(
                &mut txn,
                // By link and by property: a run killed between writing a
                // chunk and its HAS_CHUNK leaves a chunk with only the latter.
                query(
                    "MATCH (:Document {id: $id})-[:HAS_CHUNK]->(c:Chunk) RETURN c.id AS id \
                     UNION MATCH (c:Chunk) WHERE c.document_id = $id RETURN c.id AS id",
                )
                .param("id", id),
            )
            .await?
            .iter()
            .filter_map(|r| opt_string(r, "id"))
            .collect();
            let mut entities: Vec<String> = rows_in(
                &mut txn,
                query(
                    "UNWIND $chunks AS cid MATCH (:Chunk {id: cid})-[:MENTIONS]->(e:Entity) \
                     RETURN DISTINCT e.id AS id",
                )
                .param("chunks", chunks.clone()),
            )
            .await?
            .iter()
            .filter_map(|r| opt_string(r, "id"))
            .collect();
            entities.sort();
            entities.dedup();
            // Relationships citing removed chunks lose them, on the server
            // (a hub entity's relationships never cross the wire); those
            // left citing nothing go.
            let gone = rows_in(
                &mut txn,
                query(
                    "UNWIND $ids AS eid MATCH (:Entity {id: eid})-[r]-(:Entity) \
                     WHERE any(x IN r.chunks WHERE x IN $chunks) \
                     WITH DISTINCT r \
                     SET r.chunks = [x IN r.chunks WHERE NOT x IN $chunks], \
                     r.description_dirty = CASE WHEN r.descriptions IS NULL \
                     THEN r.description_dirty ELSE true END, \
                     r.descriptions = CASE WHEN r.descriptions IS NULL THEN null ELSE \
                     [x IN r.descriptions WHERE NOT any(c IN $chunks WHERE x STARTS WITH c + ' ')] END \
                     WITH r WHERE size(r.chunks) = 0 \
                     DELETE r RETURN count(*) AS n",
                )
                .param("ids", entities.clone())
                .param("chunks", chunks.clone()),
            )
            .await?
            .first()
            .and_then(|r| opt_i64(r, "n"))
            .unwrap_or(0);
            txn.run(
                query("UNWIND $chunks AS cid MATCH (c:Chunk {id: cid}) DETACH DELETE c")
                    .param("chunks", chunks.clone()),
            )
            .await?;
            txn.run(query("MATCH (d:Document {id: $id}) DETACH DELETE d").param("id", id))
                .await?;
            let orphans: Vec<String> = rows_in(
                &mut txn,
                query(
                    "UNWIND $ids AS eid MATCH (e:Entity {id: eid}) OPTIONAL MATCH (e)-[r]-() \
                     WITH e, count(r) AS n WHERE n = 0 RETURN e.id AS id",
                )
                .param("ids", entities.clone()),
            )
            .await?
            .iter()
            .filter_map(|r| opt_string(r, "id"))
            .collect();
            if !orphans.is_empty() {
                txn.run(
                    query("UNWIND $ids AS eid MATCH (e:Entity {id: eid}) DELETE e")
                        .param("ids", orphans.clone()),
                )
                .await?;
            }
            // The entities left lost what the removed chunks said of them.
            let left: Vec<String> = entities
                .into_iter()
                .filter(|e| !orphans.contains(e))
                .collect();
            txn.run(
                query("UNWIND $ids AS eid MATCH (e:Entity {id: eid}) SET e.description_dirty = true")
                    .param("ids", left),
            )
            .await?;
            Ok::<_, neo4rs::Error>(Removed {
                chunks: chunks.len() as u64,
                entities: orphans.len() as u64,
                relations: u64::try_from(gone).unwrap_or(0),
            })
        }
        .await;
        match result {
            Ok(counts) => {
                txn.commit().await?;
                Ok(counts)
            }
            Err(e) => {
                let _ = txn.rollback().await;
                Err(e)
            }
        }
    }
}

impl Neo4jStore {
    /// Merges one group in one transaction (see [`GraphStore::merge_entities`]).
    ///
    /// Relationship types cannot be parameters in Cypher: the types at the
    /// merged entities are read first, and each one, a validated
    /// [`RelType`], gets its own statement. Every pattern starts at the
    /// merged entity, found by its indexed id: servers whose planner
    /// matches from the left (ArcadeDB) would otherwise scan every chunk or
    /// entity for each merge.
    async fn merge_group(&self, m: &EntityMerge) -> Result<MergeOutcome, neo4rs::Error> {
        let (mut txn, _in_use) = self.begin().await?;
        let result = async {
            let mut ids: Vec<String> = vec![m.keep.clone()];
            for id in &m.merged {
                if !ids.contains(id) {
                    ids.push(id.clone());
                }
            }
            let rows = rows_in(
                &mut txn,
                query(
                    "UNWIND $ids AS mid MATCH (m:Entity {id: mid}) \
                     RETURN m.id AS id, m.name AS name, m.aliases AS aliases, m.description AS description",
                )
                .param("ids", ids.clone()),
            )
            .await?;
            let mut found: HashMap<String, (String, Vec<String>, String)> = HashMap::new();
            for r in &rows {
                if let Some(id) = opt_string(r, "id") {
                    found.insert(
                        id,
                        (
                            opt_string(r, "name").unwrap_or_default(),
                            strings(r, "aliases"),
                            opt_string(r, "description").unwrap_or_default(),
                        ),
                    );
                }
            }
            let Some(kept) = found.get(&m.keep).cloned() else {
                return Ok(MergeOutcome::default());
            };
            let merged: Vec<String> = ids
                .iter()
                .skip(1)
                .filter(|id| found.contains_key(*id))
                .cloned()
                .collect();
            if merged.is_empty() {
                return Ok(MergeOutcome::default());
            }
            let mut members = vec![kept];
            members.extend(merged.iter().filter_map(|id| found.get(id).cloned()));
            let group: Vec<String> = merged.iter().cloned().chain([m.keep.clone()]).collect();
            let count = |rows: Vec<neo4rs::Row>| -> u64 {
                rows.first()
                    .and_then(|r| opt_i64(r, "n"))
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0)
            };
            let mut out = MergeOutcome {
                entities: merged.len() as u64,
                ..MergeOutcome::default()
            };
            out.self_loops = count(
                rows_in(
                    &mut txn,
                    query(
                        "UNWIND $ids AS mid MATCH (m:Entity {id: mid})-[r]-(o:Entity) \
                         WHERE o.id IN $group RETURN count(DISTINCT r) AS n",
                    )
                    .param("ids", merged.clone())
                    .param("group", group.clone()),
                )
                .await?,
            );
            out.mentions = count(
                rows_in(
                    &mut txn,
                    query(
                        "UNWIND $ids AS mid MATCH (m:Entity {id: mid})<-[:MENTIONS]-(c:Chunk) \
                         WITH DISTINCT c MATCH (k:Entity {id: $keep}) \
                         MERGE (c)-[:MENTIONS]->(k) RETURN count(*) AS n",
                    )
                    .param("ids", merged.clone())
                    .param("keep", m.keep.clone()),
                )
                .await?,
            );
            // What the chunks said of the merged entities, onto the kept
            // entity's MENTIONS from those chunks.
            txn.run(
                query(
                    "MATCH (k:Entity {id: $keep}) \
                     UNWIND $ids AS mid MATCH (m:Entity {id: mid}) \
                     MATCH (c:Chunk)-[r:MENTIONS]->(m) \
                     WHERE r.descriptions IS NOT NULL \
                     MATCH (c)-[n:MENTIONS]->(k) \
                     SET n.descriptions = coalesce(n.descriptions, []) + \
                     [x IN r.descriptions WHERE NOT x IN coalesce(n.descriptions, [])]",
                )
                .param("ids", merged.clone())
                .param("keep", m.keep.clone()),
            )
            .await?;
            for outgoing in [true, false] {
                let pattern = if outgoing {
                    "(m:Entity {id: mid})-[r]->(o:Entity)"
                } else {
                    "(m:Entity {id: mid})<-[r]-(o:Entity)"
                };
                let types: Vec<String> = rows_in(
                    &mut txn,
                    query(&format!(
                        "UNWIND $ids AS mid MATCH {pattern} WHERE NOT o.id IN $group \
                         RETURN DISTINCT type(r) AS t"
                    ))
                    .param("ids", merged.clone())
                    .param("group", group.clone()),
                )
                .await?
                .iter()
                .filter_map(|r| opt_string(r, "t"))
                .collect();
                for t in types {
                    let rel = RelType::new(&t).map_err(|e| {
                        neo4rs::Error::UnexpectedMessage(format!("relationship type {t:?}: {e}"))
                    })?;
                    let (from, to) = if outgoing { ("k", "o") } else { ("o", "k") };
                    let typed = if outgoing {
                        format!("(m:Entity {{id: mid}})-[r:{}]->(o:Entity)", rel.cypher())
                    } else {
                        format!("(m:Entity {{id: mid}})<-[r:{}]-(o:Entity)", rel.cypher())
                    };
                    out.relations += count(
                        rows_in(
                            &mut txn,
                            query(&format!(
                                "UNWIND $ids AS mid MATCH {typed} WHERE NOT o.id IN $group \
                                 MATCH (k:Entity {{id: $keep}}) \
                                 MERGE ({from})-[n:{}]->({to}) \
                                 SET n.description = coalesce(n.description, r.description), \
                                 n.weight = CASE WHEN n.weight IS NULL OR r.weight > n.weight \
                                 THEN r.weight ELSE n.weight END, \
                                 n.chunks = coalesce(n.chunks, []) + \
                                 [x IN coalesce(r.chunks, []) WHERE NOT x IN coalesce(n.chunks, [])], \
                                 n.description_dirty = CASE WHEN r.descriptions IS NULL \
                                 THEN n.description_dirty ELSE true END, \
                                 n.descriptions = CASE WHEN r.descriptions IS NULL THEN n.descriptions \
                                 ELSE coalesce(n.descriptions, []) + \
                                 [x IN r.descriptions WHERE NOT x IN coalesce(n.descriptions, [])] END \
                                 RETURN count(*) AS n",
                                rel.cypher()
                            ))
                            .param("ids", merged.clone())
                            .param("group", group.clone())
                            .param("keep", m.keep.clone()),
                        )
                        .await?,
                    );
                }
            }
            txn.run(
                query(
                    "MATCH (k:Entity {id: $keep}) WHERE k.embedding IS NULL \
                     UNWIND $ids AS mid MATCH (m:Entity {id: mid}) WHERE m.embedding IS NOT NULL \
                     WITH k, m LIMIT 1 \
                     SET k.embedding = m.embedding, k.embedding_model = m.embedding_model",
                )
                .param("ids", merged.clone())
                .param("keep", m.keep.clone()),
            )
            .await?;
            txn.run(
                query("UNWIND $ids AS mid MATCH (m:Entity {id: mid}) DETACH DELETE m")
                    .param("ids", merged.clone()),
            )
            .await?;
            let (aliases, description) = merged_fields(&m.name, &members);
            txn.run(
                query(
                    "MATCH (k:Entity {id: $keep}) \
                     SET k.name = $name, k.aliases = $aliases, k.description = $description, \
                     k.description_dirty = true",
                )
                .param("keep", m.keep.clone())
                .param("name", m.name.clone())
                .param("aliases", aliases)
                .param("description", description),
            )
            .await?;
            Ok::<_, neo4rs::Error>(out)
        }
        .await;
        match result {
            Ok(counts) => {
                txn.commit().await?;
                Ok(counts)
            }
            Err(e) => {
                let _ = txn.rollback().await;
                Err(e)
            }
        }
    }
}

/// What a vector search ranks: a label, its vector index, and how errors
/// name the search.
#[derive(Clone, Copy)]
struct VectorTarget {
    label: &'static str,
    index: &'static str,
    what: &'static str,
}

/// Chunks, by `Chunk.embedding`.
const CHUNK_VECTORS: VectorTarget = VectorTarget {
    label: "Chunk",
    index: VECTOR_INDEX,
    what: "vector search",
};

/// Entities, by `Entity.embedding`.
const ENTITY_VECTORS: VectorTarget = VectorTarget {
    label: "Entity",
    index: ENTITY_VECTOR_INDEX,
    what: "entity vector search",
};

/// How a server ranks by similarity, found on the first search: per
/// target (`ranking`, `entity_ranking`) `RANK_INDEX` or `RANK_CLIENT` (no
/// index); for the function (`function_scale`) one of the function modes
/// or `RANK_CLIENT` (no function).
const RANK_UNKNOWN: u8 = 0;
/// `db.index.vector.queryNodes` on the vector index.
const RANK_INDEX: u8 = 1;
/// `vector.similarity.cosine()` returning `(1 + cos) / 2` (Neo4j).
const RANK_FUNCTION_NORMALISED: u8 = 2;
/// `vector.similarity.cosine()` returning the cosine itself (ArcadeDB).
const RANK_FUNCTION_RAW: u8 = 3;
/// Neither: vectors are read and ranked in the client.
const RANK_CLIENT: u8 = 4;

/// Whether `e` is the server's answer to a query it does not take (an
/// unknown procedure or function, a missing index), as opposed to a
/// failure on the way there.
fn server_refused(e: &StoreError) -> bool {
    // Not every client error: a timed-out transaction or a missing
    // database says nothing about the index or the function.
    const REFUSALS: &[&str] = &[
        "Neo.ClientError.Procedure.",
        "Neo.ClientError.Statement.SyntaxError",
        "Neo.ClientError.Statement.SemanticError",
        "Neo.ClientError.Statement.NotSupported",
        "Neo.ClientError.Schema.",
    ];
    matches!(e, StoreError::Query { detail, .. } if REFUSALS.iter().any(|r| detail.contains(r)))
}

/// Whether `e` says the server has no usable fulltext index: a refusal
/// ([`server_refused`]), or ArcadeDB's answer, which has the procedure but
/// cannot create its full-text index from Cypher ("Index with name ... was
/// not found", "... is not a full-text index").
fn fulltext_refused(e: &StoreError) -> bool {
    server_refused(e)
        || matches!(e, StoreError::Query { detail, .. }
            if detail.contains("fulltext") && (detail.contains("not found") || detail.contains("not a full-text index")))
}

/// A server's similarity score as a cosine (-1..=1). Neo4j's vector index
/// and its `vector.similarity.cosine()` both report `(1 + cos) / 2`.
fn score_to_cosine(score: f64, normalised: bool) -> f32 {
    if normalised {
        (2.0 * score - 1.0) as f32
    } else {
        score as f32
    }
}

fn scored_rows(rows: &[neo4rs::Row], normalised: bool) -> Vec<(f32, String)> {
    rows.iter()
        .filter_map(|r| {
            let score = r.get::<f64>("score").ok()?;
            Some((
                score_to_cosine(score, normalised),
                r.get::<String>("id").ok()?,
            ))
        })
        .collect()
}

impl Neo4jStore {
    /// How search ranks chunks on this server, once a search has found out:
    /// `"vector index"`, `"vector.similarity.cosine"`, `"client"`, or
    /// `"unknown"` before the first search.
    pub fn search_method(&self) -> &'static str {
        match self.ranking.load(Ordering::Relaxed) {
            RANK_INDEX => "vector index",
            RANK_UNKNOWN => "unknown",
            _ => match self.function_scale.load(Ordering::Relaxed) {
                RANK_FUNCTION_NORMALISED | RANK_FUNCTION_RAW => "vector.similarity.cosine",
                RANK_CLIENT => "client",
                _ => "unknown",
            },
        }
    }

    /// The `k` nodes of `target` nearest to `query_vector`: through the
    /// target's vector index where there is one, else with
    /// `vector.similarity.cosine()` (only `k` rows cross the wire), else
    /// ranked in the client. The first search finds out which (a failed
    /// index query means no index; [`Self::function_scale`] probes the
    /// function once for both targets) and later ones go straight to it.
    async fn nearest(
        &self,
        target: &VectorTarget,
        query_vector: &[f32],
        k: usize,
    ) -> Result<Vec<(f32, String)>, StoreError> {
        let VectorTarget { label, index, what } = *target;
        let ranking = match target.label {
            "Entity" => &self.entity_ranking,
            _ => &self.ranking,
        };
        let qv: Vec<f64> = query_vector.iter().map(|x| f64::from(*x)).collect();
        let mode = ranking.load(Ordering::Relaxed);
        if mode == RANK_INDEX || mode == RANK_UNKNOWN {
            let result = self
                .fetch(
                    query(&format!(
                        "CALL db.index.vector.queryNodes('{index}', $k, $v) \
                         YIELD node, score RETURN node.id AS id, score"
                    ))
                    .param("k", k as i64)
                    .param("v", qv.clone()),
                    what,
                )
                .await;
            match result {
                Ok(rows) => {
                    ranking.store(RANK_INDEX, Ordering::Relaxed);
                    return Ok(scored_rows(&rows, true));
                }
                // A server that answered "no" has no index; an error on the
                // way (connection, timeout) says nothing about it.
                Err(e) if mode == RANK_INDEX || !server_refused(&e) => return Err(e),
                Err(e) => {
                    tracing::debug!("no vector index on {label}.embedding to search: {e}");
                    ranking.store(RANK_CLIENT, Ordering::Relaxed);
                }
            }
        }
        let scale = self.function_scale().await?;
        if scale != RANK_CLIENT {
            let rows = self
                .fetch(
                    query(&format!(
                        "MATCH (n:{label}) WHERE size(n.embedding) = $dims \
                         WITH n, vector.similarity.cosine(n.embedding, $v) AS score \
                         WHERE score IS NOT NULL \
                         RETURN n.id AS id, score ORDER BY score DESC, id LIMIT $k"
                    ))
                    .param("k", k as i64)
                    .param("dims", query_vector.len() as i64)
                    .param("v", qv),
                    &format!("{what} (vector.similarity.cosine)"),
                )
                .await?;
            return Ok(scored_rows(&rows, scale == RANK_FUNCTION_NORMALISED));
        }
        if !self.vector_warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                uri = %self.config.display_uri(),
                "the server has no vector index and no vector.similarity.cosine(): search reads every vector"
            );
        }
        let rows = self
            .fetch(
                query(&format!(
                    "MATCH (n:{label}) WHERE n.embedding IS NOT NULL \
                     RETURN n.id AS id, n.embedding AS v"
                )),
                &format!("{what} (every vector)"),
            )
            .await?;
        let scored = rows
            .iter()
            .filter_map(|r| {
                let v = vector(r, "v")?;
                Some((cosine(query_vector, &v), r.get::<String>("id").ok()?))
            })
            .collect();
        Ok(top_k(scored, k))
    }
}

impl Neo4jStore {
    /// How `vector.similarity.cosine()` scales its result on this server
    /// (probed once): `RANK_FUNCTION_NORMALISED`, `RANK_FUNCTION_RAW`, or
    /// `RANK_CLIENT` when there is no such function.
    async fn function_scale(&self) -> Result<u8, StoreError> {
        let known = self.function_scale.load(Ordering::Relaxed);
        if known != RANK_UNKNOWN {
            return Ok(known);
        }
        let probe = match self
            .fetch(
                query("RETURN vector.similarity.cosine([1.0, 0.0], [0.0, 1.0]) AS x"),
                "vector function probe",
            )
            .await
        {
            Ok(rows) => rows.first().and_then(|r| r.get::<f64>("x").ok()),
            Err(e) if server_refused(&e) => None,
            Err(e) => return Err(e),
        };
        let found = match probe {
            Some(x) if (x - 0.5).abs() < 1e-6 => RANK_FUNCTION_NORMALISED,
            Some(x) if x.abs() < 1e-6 => RANK_FUNCTION_RAW,
            _ => RANK_CLIENT,
        };
        self.function_scale.store(found, Ordering::Relaxed);
        Ok(found)
    }

    /// BM25 computed by kg, for a server without a fulltext procedure: the
    /// chunks whose lowercased text contains a term are the candidates
    /// (every chunk that has the term as a word is among them, so document
    /// frequencies are exact); term frequencies and lengths are counted
    /// with the same tokenizer as queries. The collection's average length
    /// in words is estimated from its average length in characters and
    /// the candidates' characters per word.
    async fn bm25_chunks(&self, terms: &[String], k: usize) -> Result<Vec<Scored>, StoreError> {
        let stats = self
            .fetch(
                query(
                    "MATCH (c:Chunk) WHERE c.text IS NOT NULL \
                     RETURN count(c) AS n, avg(size(c.text)) AS chars",
                ),
                "fulltext: collection statistics",
            )
            .await?;
        let (n, avg_chars) = stats
            .first()
            .map(|r| {
                (
                    r.get::<i64>("n").unwrap_or(0),
                    r.get::<f64>("chars").unwrap_or(0.0),
                )
            })
            .unwrap_or((0, 0.0));
        let rows = self
            .fetch(
                // One row per chunk, lowercased once: `UNWIND $terms`
                // before the match made a row per (term, chunk) and
                // lowercased every text once per term, several times
                // slower on ArcadeDB.
                query(
                    "MATCH (c:Chunk) WHERE c.text IS NOT NULL \
                     WITH c, toLower(c.text) AS low \
                     WHERE any(t IN $terms WHERE low CONTAINS t) \
                     RETURN c.id AS id, c.text AS text",
                )
                .param("terms", terms.to_vec()),
                "fulltext: candidates",
            )
            .await?;
        let candidates: Vec<(String, String)> = rows
            .iter()
            .filter_map(|r| Some((opt_string(r, "id")?, opt_string(r, "text")?)))
            .collect();
        let (chars, words) = candidates.iter().fold((0usize, 0usize), |(c, w), (_, t)| {
            (c + t.chars().count(), w + crate::fulltext::words(t).count())
        });
        let chars_per_word = if words > 0 {
            chars as f64 / words as f64
        } else {
            6.0
        };
        Ok(crate::fulltext::rank_bm25(
            terms,
            candidates,
            u64::try_from(n).unwrap_or(0),
            avg_chars / chars_per_word,
            k,
        )
        .into_iter()
        .map(|(score, id)| Scored { id, score })
        .collect())
    }

    /// How fulltext search runs on this server, once a search has found
    /// out: `"fulltext index"`, `"bm25 (kg)"` or `"unknown"`.
    pub fn fulltext_method(&self) -> &'static str {
        match self.fulltext.load(Ordering::Relaxed) {
            FULLTEXT_NATIVE => "fulltext index",
            FULLTEXT_BM25 => "bm25 (kg)",
            _ => "unknown",
        }
    }
}

impl GraphStore for Neo4jStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn ensure_schema(&self, vector_dims: Option<usize>) -> Result<SchemaReport, StoreError> {
        let mut report = SchemaReport::default();
        for label in ["Document", "Chunk", "Entity"] {
            let name = format!("kg_{}_id", label.to_ascii_lowercase());
            self.exec(
                query(&format!(
                    "CREATE CONSTRAINT {name} IF NOT EXISTS FOR (n:{label}) REQUIRE n.id IS UNIQUE"
                )),
                &format!("constraint {name}"),
            )
            .await?;
            report.constraints.push(name);
        }
        // Removing earlier versions looks documents up by source and chunks
        // by document; without these indexes each is a label scan. A server
        // that refuses them still works, only slower.
        for (name, label, property) in [
            ("kg_document_source", "Document", "source"),
            ("kg_chunk_document", "Chunk", "document_id"),
            // The description step looks up the entities marked dirty.
            ("kg_entity_description_dirty", "Entity", "description_dirty"),
        ] {
            if let Err(e) = self
                .exec(
                    query(&format!(
                        "CREATE INDEX {name} IF NOT EXISTS FOR (n:{label}) ON (n.{property})"
                    )),
                    &format!("index {name}"),
                )
                .await
            {
                tracing::debug!("no index on {label}.{property}: {e}");
            }
        }
        match self
            .exec(
                query(&format!(
                    "CREATE FULLTEXT INDEX {FULLTEXT_INDEX} IF NOT EXISTS \
                     FOR (c:Chunk) ON EACH [c.text]"
                )),
                "fulltext index",
            )
            .await
        {
            Ok(()) => report.constraints.push(FULLTEXT_INDEX.into()),
            Err(e) => tracing::debug!("no fulltext index on Chunk.text ({e}): kg computes BM25"),
        }
        let Some(dims) = vector_dims else {
            report.vector_index_skipped = Some("no embedding dimensions given".into());
            return Ok(report);
        };
        let version = self
            .fetch(
                query("CALL dbms.components() YIELD name, versions RETURN versions[0] AS v"),
                "server version",
            )
            .await
            .ok()
            .and_then(|rows| rows.first().and_then(|r| opt_string(r, "v")))
            .unwrap_or_default();
        let skip = if !version_at_least(&version, 5, 11) {
            Some(format!(
                "server version {version:?} has no vector index (needs Neo4j 5.11 or later)"
            ))
        } else {
            let text = format!(
                "CREATE VECTOR INDEX {VECTOR_INDEX} IF NOT EXISTS FOR (c:Chunk) ON (c.embedding) \
                 OPTIONS {{indexConfig: {{`vector.dimensions`: {dims}, \
                 `vector.similarity_function`: 'cosine'}}}}"
            );
            match self.exec(query(&text), "vector index").await {
                Ok(()) => {
                    let entity_text = format!(
                        "CREATE VECTOR INDEX {ENTITY_VECTOR_INDEX} IF NOT EXISTS \
                         FOR (e:Entity) ON (e.embedding) \
                         OPTIONS {{indexConfig: {{`vector.dimensions`: {dims}, \
                         `vector.similarity_function`: 'cosine'}}}}"
                    );
                    match self.exec(query(&entity_text), "entity vector index").await {
                        Ok(()) => self.entity_ranking.store(RANK_INDEX, Ordering::Relaxed),
                        Err(e) => tracing::warn!("no vector index on Entity.embedding: {e}"),
                    }
                    None
                }
                Err(e) => Some(format!("the server refused the vector index: {e}")),
            }
        };
        match skip {
            None => {
                self.ranking.store(RANK_INDEX, Ordering::Relaxed);
                report.vector_index = true;
            }
            Some(why) => {
                if !self.vector_warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        uri = %self.config.display_uri(),
                        "no vector index on Chunk.embedding ({why}); search ranks with vector.similarity.cosine() where the server has it, else in the client"
                    );
                }
                report.vector_index_skipped = Some(why);
            }
        }
        Ok(report)
    }

    async fn fulltext_chunks(&self, text: &str, k: usize) -> Result<Vec<Scored>, StoreError> {
        let terms = crate::fulltext::query_terms(text);
        if terms.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let mode = self.fulltext.load(Ordering::Relaxed);
        if mode != FULLTEXT_BM25 {
            let result = self
                .fetch(
                    query(&format!(
                        "CALL db.index.fulltext.queryNodes('{FULLTEXT_INDEX}', $q) \
                         YIELD node, score RETURN node.id AS id, score \
                         ORDER BY score DESC, id LIMIT $k"
                    ))
                    .param("q", crate::fulltext::lucene_query(&terms))
                    .param("k", k as i64),
                    "fulltext search",
                )
                .await;
            match result {
                Ok(rows) => {
                    self.fulltext.store(FULLTEXT_NATIVE, Ordering::Relaxed);
                    return Ok(scored_rows(&rows, false)
                        .into_iter()
                        .map(|(score, id)| Scored { id, score })
                        .collect());
                }
                Err(e) if mode == FULLTEXT_NATIVE || !fulltext_refused(&e) => return Err(e),
                Err(e) => {
                    tracing::info!(
                        "no fulltext index procedure on this server ({e}): kg ranks chunks by BM25 itself"
                    );
                    self.fulltext.store(FULLTEXT_BM25, Ordering::Relaxed);
                }
            }
        }
        self.bm25_chunks(&terms, k).await
    }

    async fn vector_chunks(&self, v: &[f32], k: usize) -> Result<Vec<Scored>, StoreError> {
        Ok(self
            .nearest(&CHUNK_VECTORS, v, k)
            .await?
            .into_iter()
            .map(|(score, id)| Scored { id, score })
            .collect())
    }

    async fn vector_entities(&self, v: &[f32], k: usize) -> Result<Vec<EntityMatch>, StoreError> {
        let best = self.nearest(&ENTITY_VECTORS, v, k).await?;
        let ids: Vec<String> = best.iter().map(|(_, id)| id.clone()).collect();
        let rows = self
            .fetch(
                query(
                    "UNWIND $ids AS eid MATCH (e:Entity {id: eid}) \
                     RETURN e.id AS id, e.name AS name, e.type AS type",
                )
                .param("ids", ids),
                "entity lookup",
            )
            .await?;
        let found: Vec<EntitySummary> = rows
            .iter()
            .map(|r| entity_summary(r, "id", "name", "type"))
            .collect();
        Ok(best
            .into_iter()
            .filter_map(|(score, id)| {
                let entity = found.iter().find(|e| e.id == id)?.clone();
                Some(EntityMatch { entity, score })
            })
            .collect())
    }

    async fn entities_by_name(&self, text: &str, k: usize) -> Result<Vec<EntityMatch>, StoreError> {
        let rows = self
            .fetch(
                query(
                    "MATCH (e:Entity) WHERE e.name IS NOT NULL AND size(e.name) >= 2 \
                     AND $text CONTAINS toLower(e.name) \
                     RETURN e.id AS id, e.name AS name, e.type AS type",
                )
                .param("text", text.to_lowercase()),
                "entity lookup by name",
            )
            .await?;
        let found = rows
            .iter()
            .map(|r| entity_summary(r, "id", "name", "type"))
            .collect();
        Ok(crate::fulltext::rank_name_matches(text, found, k))
    }

    async fn expand(
        &self,
        seeds: &[String],
        hops: u8,
        max_neighbours: usize,
        per_entity: usize,
    ) -> Result<Vec<Reached>, StoreError> {
        let mut out = Vec::new();
        for seed in seeds {
            let mut reached: Vec<(String, u8)> = vec![(seed.clone(), 0)];
            let mut seen: HashSet<String> = HashSet::from([seed.clone()]);
            let mut frontier = vec![seed.clone()];
            for hop in 1..=hops.min(2) {
                let rows = self
                    .fetch(
                        query(
                            "UNWIND $ids AS eid MATCH (e:Entity {id: eid})-[r]-(n:Entity) \
                             WHERE n.id <> eid \
                             RETURN n.id AS id, max(coalesce(r.weight, 0.0)) AS w \
                             ORDER BY w DESC, id LIMIT $limit",
                        )
                        .param("ids", frontier.clone())
                        .param("limit", (max_neighbours * frontier.len().max(1)) as i64),
                        "graph expansion",
                    )
                    .await?;
                let mut next = Vec::new();
                for r in rows {
                    let Some(id) = opt_string(&r, "id") else {
                        continue;
                    };
                    if next.len() < max_neighbours && seen.insert(id.clone()) {
                        next.push(id);
                    }
                }
                reached.extend(next.iter().map(|n| (n.clone(), hop)));
                frontier = next;
            }
            let ids: Vec<String> = reached.iter().map(|(id, _)| id.clone()).collect();
            let rows = self
                .fetch(
                    query(
                        "UNWIND $ids AS eid MATCH (e:Entity {id: eid}) \
                         MATCH (c:Chunk)-[:MENTIONS]->(e) \
                         WITH e, c ORDER BY c.id \
                         WITH e, collect(c.id) AS chunks \
                         RETURN e.id AS id, e.name AS name, e.type AS type, chunks",
                    )
                    .param("ids", ids),
                    "graph expansion: chunks",
                )
                .await?;
            for (entity, hops) in &reached {
                let Some(r) = rows
                    .iter()
                    .find(|r| opt_string(r, "id").as_deref() == Some(entity.as_str()))
                else {
                    continue;
                };
                let summary = entity_summary(r, "id", "name", "type");
                let mut chunks = strings(r, "chunks");
                chunks.sort();
                chunks.truncate(per_entity);
                out.extend(chunks.into_iter().map(|chunk_id| Reached {
                    chunk_id,
                    entity: summary.clone(),
                    seed: seed.clone(),
                    hops: *hops,
                }));
            }
        }
        Ok(out)
    }

    async fn chunks(&self, ids: &[String]) -> Result<Vec<ChunkInfo>, StoreError> {
        let rows = self
            .fetch(
                query(
                    "UNWIND $ids AS cid MATCH (c:Chunk {id: cid}) \
                     OPTIONAL MATCH (d:Document {id: c.document_id}) \
                     RETURN c.id AS id, c.document_id AS doc, c.index AS idx, c.text AS text, \
                     c.source AS source, d.title AS title, c.page_start AS ps, c.page_end AS pe",
                )
                .param("ids", ids.to_vec()),
                "chunks",
            )
            .await?;
        let found: Vec<ChunkInfo> = rows
            .iter()
            .map(|r| ChunkInfo {
                id: opt_string(r, "id").unwrap_or_default(),
                document_id: opt_string(r, "doc").unwrap_or_default(),
                index: opt_i64(r, "idx").and_then(|x| u32::try_from(x).ok()),
                text: opt_string(r, "text").unwrap_or_default(),
                source: opt_string(r, "source").unwrap_or_default(),
                title: opt_string(r, "title"),
                page_start: opt_i64(r, "ps").and_then(|x| u32::try_from(x).ok()),
                page_end: opt_i64(r, "pe").and_then(|x| u32::try_from(x).ok()),
            })
            .collect();
        Ok(ids
            .iter()
            .filter_map(|id| found.iter().find(|c| &c.id == id).cloned())
            .collect())
    }

    async fn chunk_graph(&self, ids: &[String]) -> Result<ChunkGraph, StoreError> {
        let rows = self
            .fetch(
                query(
                    "UNWIND $ids AS cid MATCH (c:Chunk {id: cid})-[:MENTIONS]->(e:Entity) \
                     RETURN c.id AS chunk, e.id AS id, e.name AS name, e.type AS type",
                )
                .param("ids", ids.to_vec()),
                "chunk entities",
            )
            .await?;
        let mut mentions: Vec<(String, EntitySummary)> = rows
            .iter()
            .map(|r| {
                (
                    opt_string(r, "chunk").unwrap_or_default(),
                    entity_summary(r, "id", "name", "type"),
                )
            })
            .collect();
        mentions.sort();
        mentions.dedup();
        let mut ents: Vec<String> = mentions.iter().map(|(_, e)| e.id.clone()).collect();
        ents.sort();
        ents.dedup();
        let rows = self
            .fetch(
                query(
                    "UNWIND $ids AS eid MATCH (a:Entity {id: eid})-[r]->(b:Entity) \
                     WHERE b.id IN $ids \
                     RETURN a.id AS aid, a.name AS aname, a.type AS atype, type(r) AS t, \
                     b.id AS bid, b.name AS bname, b.type AS btype, r.description AS d",
                )
                .param("ids", ents),
                "chunk relations",
            )
            .await?;
        let mut relations: Vec<RelationSummary> = rows
            .iter()
            .map(|r| RelationSummary {
                from: entity_summary(r, "aid", "aname", "atype"),
                rel_type: opt_string(r, "t").unwrap_or_default(),
                to: entity_summary(r, "bid", "bname", "btype"),
                description: opt_string(r, "d").unwrap_or_default(),
            })
            .collect();
        relations.sort();
        relations.dedup();
        Ok(ChunkGraph {
            mentions,
            relations,
        })
    }

    async fn identity(&self) -> Result<String, StoreError> {
        // Two machines asking at once may both create a marker: the
        // smallest identity wins for both, and the next call reads it.
        self.exec(
            query(
                "OPTIONAL MATCH (m:KgStore) WITH count(m) AS n WHERE n = 0 \
                 CREATE (:KgStore {identity: $identity})",
            )
            .param("identity", crate::store::new_identity()),
            "store identity",
        )
        .await?;
        let rows = self
            .fetch(
                query("MATCH (m:KgStore) RETURN m.identity AS identity ORDER BY identity LIMIT 1"),
                "store identity",
            )
            .await?;
        rows.first()
            .and_then(|r| r.get::<String>("identity").ok())
            .ok_or_else(|| StoreError::Query {
                backend: "neo4j",
                what: "store identity".into(),
                detail: "the :KgStore marker has no identity".into(),
            })
    }

    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        note: &str,
        ttl: std::time::Duration,
        now_ms: i64,
    ) -> Result<crate::lease::LeaseState, StoreError> {
        let identity = self.identity().await?;
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
        // Writing the marker first takes its write lock (Neo4j) before the
        // lease is created or read, so two takers serialise; an optimistic
        // store (ArcadeDB) fails one of two concurrent writers at commit.
        let q = query(
            "MATCH (m:KgStore {identity: $identity}) \
             SET m.lease_touched_ms = $now \
             WITH m MERGE (l:KgLease {name: $name}) \
             WITH l, (l.holder IS NULL OR l.holder = $holder OR l.expires_ms < $now) AS free \
             SET l.holder = CASE WHEN free THEN $holder ELSE l.holder END, \
                 l.note = CASE WHEN free THEN $note ELSE l.note END, \
                 l.expires_ms = CASE WHEN free THEN $now + $ttl ELSE l.expires_ms END \
             RETURN l.holder AS holder, l.note AS note, l.expires_ms AS expires",
        )
        .param("identity", identity)
        .param("name", name)
        .param("now", now_ms)
        .param("holder", holder)
        .param("note", note)
        .param("ttl", ttl_ms);
        let rows = self.fetch_retrying(q, "writer lease").await?;
        let row = rows.first().ok_or_else(|| StoreError::Query {
            backend: "neo4j",
            what: "writer lease".into(),
            detail: "the :KgStore marker went away while the lease was taken".into(),
        })?;
        if row.get::<String>("holder").ok().as_deref() == Some(holder) {
            return Ok(crate::lease::LeaseState::Granted);
        }
        let expires = row.get::<i64>("expires").unwrap_or(now_ms);
        Ok(crate::lease::LeaseState::Held {
            note: row
                .get::<String>("note")
                .unwrap_or_else(|_| "a kg that did not say who it is".to_owned()),
            expires_in: crate::lease::until(expires, now_ms),
        })
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let q = query(
            "MATCH (l:KgLease {name: $name}) WHERE l.holder = $holder \
             SET l.holder = null, l.note = null, l.expires_ms = null",
        )
        .param("name", name)
        .param("holder", holder);
        self.fetch_retrying(q, "writer lease release")
            .await
            .map(drop)
    }

    async fn counts(&self, scope: &Scope) -> Result<GraphCounts, StoreError> {
        let mut counts = GraphCounts::default();
        let rows = self
            .fetch(
                scope_params(
                    query(
                        "MATCH (n) WHERE NOT n:KgStore AND NOT n:KgLease AND ($all OR n.id IN $ids) \
                         RETURN labels(n) AS labels, count(*) AS c",
                    ),
                    scope,
                ),
                "node counts",
            )
            .await?;
        for r in rows {
            let key = labels_key(strings(&r, "labels"));
            *counts.nodes.entry(key).or_default() += r.get::<i64>("c").unwrap_or(0) as u64;
        }
        let rows = self
            .fetch(
                scope_params(
                    query(
                        "MATCH (a)-[r]->() WHERE $all OR a.id IN $ids \
                         RETURN type(r) AS t, count(*) AS c",
                    ),
                    scope,
                ),
                "relationship counts",
            )
            .await?;
        for r in rows {
            let key: String = r.get("t").unwrap_or_default();
            *counts.relationships.entry(key).or_default() += r.get::<i64>("c").unwrap_or(0) as u64;
        }
        Ok(counts)
    }

    async fn earlier_versions(
        &self,
        current: &[CurrentDocument],
    ) -> Result<Vec<DocumentId>, StoreError> {
        let keep: HashSet<&str> = current.iter().map(|c| c.id.as_str()).collect();
        let mut stale: Vec<String> = Vec::new();
        for part in current.chunks(1_000) {
            let mut docs = BoltList::with_capacity(part.len());
            for c in part {
                let mut m = BoltMap::with_capacity(2);
                m.put(
                    BoltString::from("source"),
                    BoltType::from(c.source.as_str()),
                );
                m.put(BoltString::from("id"), BoltType::from(c.id.as_str()));
                docs.push(BoltType::Map(m));
            }
            let rows = self
                .fetch(
                    query(
                        "UNWIND $docs AS d MATCH (o:Document) WHERE o.source = d.source AND o.id <> d.id \
                         RETURN DISTINCT o.id AS id",
                    )
                    .param("docs", BoltType::List(docs)),
                    "find earlier versions of changed documents",
                )
                .await?;
            stale.extend(rows.iter().filter_map(|r| opt_string(r, "id")));
        }
        stale.retain(|id| !keep.contains(id.as_str()));
        stale.sort();
        stale.dedup();
        Ok(stale.into_iter().map(DocumentId::from_raw).collect())
    }

    async fn remove_document(&self, id: &DocumentId) -> Result<Removed, StoreError> {
        let removed = self
            .remove_version(id.as_str())
            .await
            .map_err(q_err(format!("remove document {id}")))?;
        tracing::info!(document = %id, chunks = removed.chunks, entities = removed.entities, relations = removed.relations, "removed an earlier version of a changed document");
        Ok(removed)
    }

    async fn stream_entities(&self, out: mpsc::Sender<EntityRow>) -> Result<u64, StoreError> {
        let mut after = String::new();
        let mut sent = 0u64;
        loop {
            let rows = self
                .fetch(
                    query(
                        "MATCH (n:Entity) WHERE n.type IS NOT NULL AND n.name IS NOT NULL \
                         AND n.id > $after WITH n ORDER BY n.id LIMIT $page \
                         OPTIONAL MATCH (n)<-[:MENTIONS]-(c:Chunk) \
                         WITH n, count(c) AS mentions \
                         RETURN n.id AS id, n.type AS type, n.name AS name, mentions ORDER BY id",
                    )
                    .param("after", after.clone())
                    .param("page", READ_PAGE),
                    "read entities for resolution",
                )
                .await?;
            let full = rows.len() as i64 >= READ_PAGE;
            for r in rows {
                let (Some(id), Some(entity_type), Some(name)) = (
                    opt_string(&r, "id"),
                    opt_string(&r, "type"),
                    opt_string(&r, "name"),
                ) else {
                    continue;
                };
                after.clone_from(&id);
                let row = EntityRow {
                    id,
                    entity_type,
                    name,
                    mentions: opt_i64(&r, "mentions")
                        .and_then(|n| u64::try_from(n).ok())
                        .unwrap_or(0),
                };
                if out.send(row).await.is_err() {
                    return Ok(sent);
                }
                sent += 1;
            }
            if !full {
                return Ok(sent);
            }
        }
    }

    async fn entity_vectors(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, Vec<f32>>, StoreError> {
        let mut out = HashMap::new();
        for part in ids.chunks(READ_PAGE as usize) {
            let rows = self
                .fetch(
                    query(
                        "UNWIND $ids AS eid MATCH (n:Entity {id: eid}) \
                         WHERE n.embedding IS NOT NULL RETURN n.id AS id, n.embedding AS v",
                    )
                    .param("ids", part.to_vec()),
                    "read entity vectors",
                )
                .await?;
            for r in rows {
                if let (Some(id), Some(v)) = (opt_string(&r, "id"), vector(&r, "v")) {
                    out.insert(id, v);
                }
            }
        }
        Ok(out)
    }

    async fn merge_entities(&self, merge: &EntityMerge) -> Result<MergeOutcome, StoreError> {
        self.merge_group(merge)
            .await
            .map_err(q_err(format!("merge entities into {}", merge.keep)))
    }

    async fn documents_under(&self, prefix: &str) -> Result<Vec<CurrentDocument>, StoreError> {
        let rows = self
            .fetch(
                query(
                    "MATCH (d:Document) WHERE d.source STARTS WITH $prefix \
                     RETURN d.source AS source, d.id AS id ORDER BY source, id",
                )
                .param("prefix", prefix),
                "list documents",
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                Some(CurrentDocument {
                    source: opt_string(r, "source")?,
                    id: DocumentId::from_raw(opt_string(r, "id")?),
                })
            })
            .collect())
    }

    async fn stale_descriptions(
        &self,
        relations: bool,
        after: Option<&crate::Described>,
        limit: usize,
    ) -> Result<Vec<crate::DescriptionSet>, StoreError> {
        if relations {
            self.stale_relation_descriptions(after, limit).await
        } else {
            self.stale_entity_descriptions(after, limit).await
        }
    }

    async fn set_descriptions(
        &self,
        updates: &[crate::DescriptionUpdate],
    ) -> Result<u64, StoreError> {
        self.write_descriptions(updates).await
    }

    async fn read_records(
        &self,
        scope: &Scope,
        out: mpsc::Sender<Record>,
    ) -> Result<u64, StoreError> {
        let mut out = Out { tx: out, sent: 0 };
        // Each step returns false once the receiver is gone.
        let _ = self.read_documents(scope, &mut out).await?
            && self.read_chunks(scope, &mut out).await?
            && self.read_entity_records(scope, &mut out).await?
            && self.read_relations(scope, &mut out).await?
            && self.read_nodes(scope, &mut out).await?
            && self.read_edges(scope, &mut out).await?;
        Ok(out.sent)
    }

    async fn read_entities(
        &self,
        scope: &Scope,
        out: mpsc::Sender<Record>,
    ) -> Result<u64, StoreError> {
        let mut out = Out { tx: out, sent: 0 };
        self.read_entity_records(scope, &mut out).await?;
        Ok(out.sent)
    }
}

/// Rows per page when reading the graph back.
const READ_PAGE: i64 = 1_000;

/// Where read-back records go, and how many went.
struct Out {
    tx: mpsc::Sender<Record>,
    sent: u64,
}

impl Out {
    /// Sends `r`; false when the receiver is gone.
    async fn send(&mut self, r: Record) -> bool {
        let ok = self.tx.send(r).await.is_ok();
        self.sent += u64::from(ok);
        ok
    }
}

/// Reading the graph back, page by page: each page is one query in its
/// own transaction, `LIMIT`ed and ordered, and the next one starts after
/// the last key of the one before (never `SKIP`, which reads everything
/// skipped again). Each returns false once the receiver is gone.
impl Neo4jStore {
    async fn page(
        &self,
        q: Query,
        scope: &Scope,
        what: &str,
    ) -> Result<Vec<neo4rs::Row>, StoreError> {
        self.fetch(scope_params(q, scope).param("page", READ_PAGE), what)
            .await
    }

    async fn read_documents(&self, scope: &Scope, out: &mut Out) -> Result<bool, StoreError> {
        let mut after = String::new();
        loop {
            let rows = self
                .page(
                    query(&format!(
                        "{} WITH n WHERE n.id > $after \
                         RETURN n.id AS id, n.source AS source, n.title AS title, n.sha256 AS sha256, \
                         n.pages AS pages, n.media_type AS media_type, n.bytes AS bytes \
                         ORDER BY id LIMIT $page",
                        scoped_match("n", "Document", scope)
                    ))
                    .param("after", after.clone()),
                    scope,
                    "read documents",
                )
                .await?;
            let full = rows.len() as i64 >= READ_PAGE;
            for r in rows {
                let Some(id) = opt_string(&r, "id") else {
                    continue;
                };
                after.clone_from(&id);
                let doc = Record::Document(kg_core::Document {
                    id: DocumentId::from_raw(id),
                    source: opt_string(&r, "source").unwrap_or_default(),
                    title: opt_string(&r, "title"),
                    sha256: opt_string(&r, "sha256").unwrap_or_default(),
                    pages: opt_i64(&r, "pages").and_then(|p| u32::try_from(p).ok()),
                    media_type: media_type(opt_string(&r, "media_type").as_deref()),
                    bytes: opt_i64(&r, "bytes")
                        .and_then(|b| u64::try_from(b).ok())
                        .unwrap_or(0),
                });
                if !out.send(doc).await {
                    return Ok(false);
                }
            }
            if !full {
                return Ok(true);
            }
        }
    }

    /// Chunks in document and index order (so that a writer links
    /// `NEXT_CHUNK` again across its windows), each followed by its
    /// embedding.
    async fn read_chunks(&self, scope: &Scope, out: &mut Out) -> Result<bool, StoreError> {
        let (mut doc, mut index, mut after) = (String::new(), -2i64, String::new());
        loop {
            let rows = self
                .page(
                    query(&format!(
                        "{} \
                         WITH n, coalesce(n.document_id, '') AS doc, coalesce(n.index, -1) AS idx \
                         WHERE doc > $doc OR (doc = $doc AND (idx > $idx OR (idx = $idx AND n.id > $after))) \
                         RETURN n.id AS id, doc, idx, n.text AS text, n.tokens AS tokens, \
                         n.source AS source, n.page_start AS ps, n.page_end AS pe, \
                         n.embedding AS v, n.embedding_model AS model \
                         ORDER BY doc, idx, id LIMIT $page",
                        scoped_match("n", "Chunk", scope)
                    ))
                    .param("doc", doc.clone())
                    .param("idx", index)
                    .param("after", after.clone()),
                    scope,
                    "read chunks",
                )
                .await?;
            let full = rows.len() as i64 >= READ_PAGE;
            for r in rows {
                let Some(id) = opt_string(&r, "id") else {
                    continue;
                };
                doc = opt_string(&r, "doc").unwrap_or_default();
                index = opt_i64(&r, "idx").unwrap_or(-1);
                after.clone_from(&id);
                let embedding = vector(&r, "v").map(|v| {
                    Record::Embedding(kg_core::Embedding {
                        id: id.clone(),
                        target: kg_core::EmbeddingTarget::Chunk,
                        vector: v,
                        model: opt_string(&r, "model").unwrap_or_default(),
                    })
                });
                // A chunk only a relationship or a vector created has no
                // record to give back (its vector still goes).
                let chunk = opt_string(&r, "text").map(|text| {
                    Record::Chunk(kg_core::Chunk {
                        id: ChunkId::from_raw(id),
                        document_id: DocumentId::from_raw(doc.clone()),
                        index: u32::try_from(index).unwrap_or(0),
                        text,
                        tokens: opt_i64(&r, "tokens")
                            .and_then(|i| u32::try_from(i).ok())
                            .unwrap_or(0),
                        source: opt_string(&r, "source").unwrap_or_default(),
                        page_start: opt_i64(&r, "ps").and_then(|i| u32::try_from(i).ok()),
                        page_end: opt_i64(&r, "pe").and_then(|i| u32::try_from(i).ok()),
                    })
                });
                for record in chunk.into_iter().chain(embedding) {
                    if !out.send(record).await {
                        return Ok(false);
                    }
                }
            }
            if !full {
                return Ok(true);
            }
        }
    }

    /// Entities with a type, each with the chunks that mention it and
    /// followed by its embedding.
    async fn read_entity_records(&self, scope: &Scope, out: &mut Out) -> Result<bool, StoreError> {
        let mut after = String::new();
        loop {
            let rows = self
                .page(
                    query(&format!(
                        "{} WITH n WHERE n.type IS NOT NULL AND n.id > $after \
                         WITH n ORDER BY n.id LIMIT $page \
                         OPTIONAL MATCH (n)<-[:MENTIONS]-(c:Chunk) \
                         WITH n, collect(c.id) AS chunks \
                         RETURN n.id AS id, n.name AS name, n.type AS type, \
                         n.description AS description, n.aliases AS aliases, n.embedding AS v, \
                         n.embedding_model AS model, chunks ORDER BY id",
                        scoped_match("n", "Entity", scope)
                    ))
                    .param("after", after.clone()),
                    scope,
                    "read entities",
                )
                .await?;
            let full = rows.len() as i64 >= READ_PAGE;
            let ids: Vec<String> = rows.iter().filter_map(|r| opt_string(r, "id")).collect();
            let mut described = self.mention_descriptions(&ids).await?;
            for r in rows {
                let Some(id) = opt_string(&r, "id") else {
                    continue;
                };
                after.clone_from(&id);
                let Some(ty) = opt_string(&r, "type").and_then(|t| Label::new(&t).ok()) else {
                    continue;
                };
                let embedding = vector(&r, "v").map(|v| {
                    Record::Embedding(kg_core::Embedding {
                        id: id.clone(),
                        target: kg_core::EmbeddingTarget::Entity,
                        vector: v,
                        model: opt_string(&r, "model").unwrap_or_default(),
                    })
                });
                let mut chunk_ids: Vec<ChunkId> = strings(&r, "chunks")
                    .into_iter()
                    .map(ChunkId::from_raw)
                    .collect();
                chunk_ids.sort();
                chunk_ids.dedup();
                let mention_descriptions = described.remove(&id).unwrap_or_default();
                let entity = Record::Entity(kg_core::Entity {
                    id: EntityId::from_raw(id),
                    name: opt_string(&r, "name").unwrap_or_default(),
                    entity_type: ty,
                    description: opt_string(&r, "description").unwrap_or_default(),
                    aliases: strings(&r, "aliases"),
                    chunk_ids,
                    mention_descriptions,
                });
                for record in std::iter::once(entity).chain(embedding) {
                    if !out.send(record).await {
                        return Ok(false);
                    }
                }
            }
            if !full {
                return Ok(true);
            }
        }
    }

    async fn read_relations(&self, scope: &Scope, out: &mut Out) -> Result<bool, StoreError> {
        let (mut s, mut t, mut o) = (String::new(), String::new(), String::new());
        loop {
            let rows = self
                .page(
                    query(&format!(
                        "{} MATCH (a)-[r]->(b:Entity) \
                         WITH a, r, b, type(r) AS t \
                         WHERE a.id > $s OR (a.id = $s AND (t > $t OR (t = $t AND b.id > $o))) \
                         RETURN a.id AS s, t, b.id AS o, r.description AS description, \
                         r.weight AS weight, r.chunks AS chunks, r.descriptions AS descriptions \
                         ORDER BY s, t, o LIMIT $page",
                        scoped_match("a", "Entity", scope)
                    ))
                    .param("s", s.clone())
                    .param("t", t.clone())
                    .param("o", o.clone()),
                    scope,
                    "read relations",
                )
                .await?;
            let full = rows.len() as i64 >= READ_PAGE;
            for r in rows {
                let (Some(rs), Some(rt), Some(ro)) = (
                    opt_string(&r, "s"),
                    opt_string(&r, "t"),
                    opt_string(&r, "o"),
                ) else {
                    continue;
                };
                (s, t, o) = (rs.clone(), rt.clone(), ro.clone());
                let Ok(rel_type) = RelType::new(&rt) else {
                    continue;
                };
                let relation = Record::Relation(kg_core::Relation {
                    source_id: EntityId::from_raw(rs),
                    target_id: EntityId::from_raw(ro),
                    rel_type,
                    description: opt_string(&r, "description").unwrap_or_default(),
                    weight: r.get::<Option<f64>>("weight").ok().flatten().unwrap_or(1.0) as f32,
                    chunk_ids: strings(&r, "chunks")
                        .into_iter()
                        .map(ChunkId::from_raw)
                        .collect(),
                    chunk_descriptions: crate::descriptions::entries_by_chunk(&strings(
                        &r,
                        "descriptions",
                    )),
                });
                if !out.send(relation).await {
                    return Ok(false);
                }
            }
            if !full {
                return Ok(true);
            }
        }
    }

    /// CSV-mapped nodes, label by label (each label's id constraint orders
    /// its pages).
    async fn read_nodes(&self, scope: &Scope, out: &mut Out) -> Result<bool, StoreError> {
        let labels: BTreeSet<Label> = self
            .fetch(
                scope_params(
                    query(
                        "MATCH (n) WHERE n.kg_source IS NOT NULL AND n.key IS NOT NULL \
                         AND ($all OR n.id IN $ids) RETURN DISTINCT labels(n) AS labels",
                    ),
                    scope,
                ),
                "read node labels",
            )
            .await?
            .iter()
            .filter_map(|r| {
                strings(r, "labels")
                    .first()
                    .and_then(|l| Label::new(l).ok())
            })
            .collect();
        for label in labels {
            let mut after = String::new();
            loop {
                let rows = self
                    .page(
                        query(&format!(
                            "{} WITH n WHERE n.kg_source IS NOT NULL \
                             AND n.key IS NOT NULL AND n.id > $after \
                             RETURN n.id AS id, labels(n) AS labels, properties(n) AS props \
                             ORDER BY id LIMIT $page",
                            scoped_match("n", &label.cypher(), scope)
                        ))
                        .param("after", after.clone()),
                        scope,
                        "read nodes",
                    )
                    .await?;
                let full = rows.len() as i64 >= READ_PAGE;
                for r in rows {
                    let Some(id) = opt_string(&r, "id") else {
                        continue;
                    };
                    after.clone_from(&id);
                    // A node of two labels is read under its first one only.
                    let first = strings(&r, "labels")
                        .first()
                        .and_then(|l| Label::new(l).ok());
                    if first.as_ref() != Some(&label) {
                        continue;
                    }
                    let Ok(props) = r.get::<BoltType>("props") else {
                        continue;
                    };
                    let key = match &props {
                        BoltType::Map(m) => m.get::<String>("key").unwrap_or_default(),
                        _ => continue,
                    };
                    let (properties, source, line) = csv_properties(stored_props(&props));
                    let node = Record::Node(kg_core::GraphNode {
                        id: NodeId::from_raw(id),
                        label: label.clone(),
                        key,
                        properties,
                        source,
                        line,
                    });
                    if !out.send(node).await {
                        return Ok(false);
                    }
                }
                if !full {
                    break;
                }
            }
        }
        Ok(true)
    }

    /// CSV-mapped relationships, by start label and type (the label's id
    /// constraint orders the pages).
    async fn read_edges(&self, scope: &Scope, out: &mut Out) -> Result<bool, StoreError> {
        // Found over the whole graph: checking each relationship's start
        // against a long list of ids costs more than a page query of a
        // kind with nothing in scope.
        let kinds: BTreeSet<(Label, RelType)> = self
            .fetch(
                query(
                    "MATCH (a)-[r]->() WHERE r.kg_source IS NOT NULL \
                     RETURN DISTINCT labels(a) AS labels, type(r) AS t",
                ),
                "read edge types",
            )
            .await?
            .iter()
            .filter_map(|r| {
                let label = strings(r, "labels")
                    .first()
                    .and_then(|l| Label::new(l).ok())?;
                Some((
                    label,
                    opt_string(r, "t").and_then(|t| RelType::new(&t).ok())?,
                ))
            })
            .collect();
        for (from, rel_type) in kinds {
            let (mut a, mut b) = (String::new(), String::new());
            loop {
                let rows = self
                    .page(
                        query(&format!(
                            "{} MATCH (x)-[r:{}]->(y) WITH x, r, y \
                             WHERE r.kg_source IS NOT NULL \
                             AND (x.id > $a OR (x.id = $a AND y.id > $b)) \
                             RETURN labels(x) AS al, x.id AS a, labels(y) AS bl, y.id AS b, \
                             properties(r) AS props ORDER BY a, b LIMIT $page",
                            scoped_match("x", &from.cypher(), scope),
                            rel_type.cypher()
                        ))
                        .param("a", a.clone())
                        .param("b", b.clone()),
                        scope,
                        "read edges",
                    )
                    .await?;
                let full = rows.len() as i64 >= READ_PAGE;
                for r in rows {
                    let (Some(ra), Some(rb)) = (opt_string(&r, "a"), opt_string(&r, "b")) else {
                        continue;
                    };
                    (a, b) = (ra.clone(), rb.clone());
                    let label_of =
                        |k: &str| strings(&r, k).first().and_then(|l| Label::new(l).ok());
                    let (Some(al), Some(bl)) = (label_of("al"), label_of("bl")) else {
                        continue;
                    };
                    // A start node of two labels is read under its first one only.
                    if al != from {
                        continue;
                    }
                    let Ok(props) = r.get::<BoltType>("props") else {
                        continue;
                    };
                    let (properties, source, line) = csv_properties(stored_props(&props));
                    let edge = Record::Edge(kg_core::GraphEdge {
                        rel_type: rel_type.clone(),
                        from: NodeRef {
                            label: al,
                            id: NodeId::from_raw(ra),
                        },
                        to: NodeRef {
                            label: bl,
                            id: NodeId::from_raw(rb),
                        },
                        properties,
                        source,
                        line,
                    });
                    if !out.send(edge).await {
                        return Ok(false);
                    }
                }
                if !full {
                    break;
                }
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_never_reach_query_text() {
        // Only kg-core identifiers can name a label: a hostile one is
        // rejected before a GroupKey can exist, and a valid one is quoted.
        assert!(Label::new("Person`}) DETACH DELETE n //").is_err());
        let key = GroupKey::Nodes(Label::new("air port").unwrap());
        let text = cypher_for(&key).join("\n");
        assert!(text.contains("MERGE (n:`AirPort` {id: row.id})"), "{text}");
        assert_eq!(text.matches('`').count(), 2);
    }

    #[test]
    fn neo4j_scores_convert_back_to_cosines() {
        // Neo4j: (1 + cos) / 2, so orthogonal is 0.5 and opposite 0.
        assert_eq!(score_to_cosine(1.0, true), 1.0);
        assert_eq!(score_to_cosine(0.5, true), 0.0);
        assert_eq!(score_to_cosine(0.0, true), -1.0);
        assert_eq!(score_to_cosine(0.25, true), -0.5);
        // A server computing the cosine itself is taken as is.
        assert_eq!(score_to_cosine(-0.5, false), -0.5);
    }

    #[test]
    fn only_a_server_refusal_means_unsupported() {
        let q = |detail: &str| StoreError::Query {
            backend: BACKEND,
            what: "vector search".into(),
            detail: detail.into(),
        };
        assert!(server_refused(&q(
            "Neo4j error `Neo.ClientError.Statement.SyntaxError`: Unknown function 'vector.similarity.cosine'"
        )));
        assert!(server_refused(&q(
            "Neo4j error `Neo.ClientError.Procedure.ProcedureCallFailed`: no such vector schema index"
        )));
        // ArcadeDB's answer to the vector index procedure.
        assert!(server_refused(&q(
            "Neo4j error `Neo.ClientError.Statement.SemanticError`: Error executing procedure"
        )));
        assert!(!server_refused(&q(
            "Neo4j error `Neo.ClientError.Transaction.TransactionTimedOut`: timed out"
        )));
        assert!(!server_refused(&q("IO error: connection reset by peer")));
        assert!(!server_refused(&q("connection error")));
    }

    #[test]
    fn classifies_errors() {
        let io = neo4rs::Error::IOError {
            detail: std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset"),
        };
        let f = classify(&io);
        assert_eq!(f.class, FailureClass::Transient);
        assert!(f.unreachable);
        assert_eq!(
            classify(&neo4rs::Error::ConversionError).class,
            FailureClass::Permanent
        );
    }

    #[test]
    fn reads_are_run_again_on_transient_server_failures_only() {
        // ArcadeDB's answer when another transaction deleted a record this
        // read was reading (seen with tests sharing one server).
        let deleted = neo4rs::Error::UnexpectedMessage(
            r#"unexpected response for PULL: Failure(Failure { metadata: BoltMap { value: {BoltString { value: "message" }: String(BoltString { value: "Multi-page record #5:199318 was deleted during read" }), BoltString { value: "code" }: String(BoltString { value: "Neo.TransientError.Transaction.DeadlockDetected" })} } })"#.into(),
        );
        assert!(worth_again(&deleted, false));
        let io = neo4rs::Error::IOError {
            detail: std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"),
        };
        assert!(
            !worth_again(&io, false),
            "a database that went away is said at once"
        );
        assert!(worth_again(&io, true), "the lease rides out a blip");
        let syntax = neo4rs::Error::UnexpectedMessage(
            r#"unexpected response for RUN: Failure(Failure { metadata: BoltMap { value: {BoltString { value: "message" }: String(BoltString { value: "bad" }), BoltString { value: "code" }: String(BoltString { value: "Neo.ClientError.Statement.SyntaxError" })} } })"#.into(),
        );
        assert!(!worth_again(&syntax, true));
    }

    #[test]
    fn server_failures_read_as_one_line() {
        // What neo4rs makes of ArcadeDB's answer to BEGIN on a missing database.
        let dump = r#"unexpected response for BEGIN: Failure(Failure { metadata: BoltMap { value: {BoltString { value: "message" }: String(BoltString { value: "Cannot open database: nosuchdb - Database '/data/databases/nosuchdb' does not exist" }), BoltString { value: "code" }: String(BoltString { value: "Neo.ClientError.Database.DatabaseNotFound" })} } })"#;
        let e = neo4rs::Error::UnexpectedMessage(dump.into());
        assert_eq!(
            server_failure(&e).map(|(code, _)| code).as_deref(),
            Some("Neo.ClientError.Database.DatabaseNotFound")
        );
        assert_eq!(
            describe(&e),
            "Neo.ClientError.Database.DatabaseNotFound: Cannot open database: nosuchdb - \
             Database '/data/databases/nosuchdb' does not exist"
        );
        let f = classify(&e);
        assert_eq!(f.class, FailureClass::Permanent);
        assert!(!f.message.contains("BoltString"), "{}", f.message);
        // Escapes in the dump are read back; line breaks become spaces.
        let dump = r#"Failure { BoltString { value: "message" }: String(BoltString { value: "say \"hi\"\nthere" }), BoltString { value: "code" }: String(BoltString { value: "Neo.ClientError.Statement.SyntaxError" }) }"#;
        assert_eq!(
            describe(&neo4rs::Error::UnexpectedMessage(dump.into())),
            "Neo.ClientError.Statement.SyntaxError: say \"hi\" there"
        );
        // Anything else keeps the driver's own words.
        assert_eq!(
            describe(&neo4rs::Error::ConnectionError),
            "connection error"
        );
        let odd = neo4rs::Error::UnexpectedMessage("unexpected response for PULL: Ignored".into());
        assert_eq!(describe(&odd), "unexpected response for PULL: Ignored");
    }

    #[test]
    fn versions_compare() {
        assert!(version_at_least("5.26.0", 5, 11));
        assert!(version_at_least("5.11", 5, 11));
        assert!(!version_at_least("5.10.3", 5, 11));
        assert!(!version_at_least("4.4.0", 5, 11));
        assert!(!version_at_least("", 5, 11));
    }
}
