//! The store contract against the Bolt server named by `NEO4J_URI` (the
//! shared ArcadeDB test server in development and CI). Each test tags its
//! ids and text and counts only its own nodes: tests run in parallel with
//! other crates' tests on the same database. Fails, never skips, when
//! `NEO4J_URI` is unset.

mod common;

use std::time::Duration;

use common::*;
use kg_core::{Embedding, EmbeddingTarget, Label, Record};
use kg_store::{BatchWriter, GraphCounts, GraphStore, Neo4jConfig, Neo4jStore, Scope, StoreError};
use neo4rs::query;

async fn connect() -> Neo4jStore {
    let cfg = neo4j_config();
    let uri = cfg.display_uri();
    match Neo4jStore::connect(cfg).await {
        Ok(s) => s,
        Err(e) => panic!("cannot reach the Bolt test server at {uri}: {e}"),
    }
}

async fn run(store: &Neo4jStore, text: &str) {
    let mut txn = store.graph().start_txn().await.unwrap();
    txn.run(query(text)).await.unwrap();
    txn.commit().await.unwrap();
}

#[tokio::test]
async fn bolt_round_trip_reads_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    check_round_trip(connect().await, dir.path(), &unique_tag("rt")).await;
}

/// 50,000 chunks through `write_channel` in windows of 6,000 records, then
/// of the default 20,000: `NEXT_CHUNK` links every consecutive pair
/// (counted on the server from the test's own documents, which are removed
/// afterwards: 150,000 rows are too many to leave on a shared server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bolt_next_chunk_is_complete_across_windows() {
    for window in [Some(6_000), None] {
        let dir = tempfile::tempdir().unwrap();
        check_next_chunk_across_windows(
            connect().await,
            dir.path(),
            &unique_tag("links"),
            window,
            |writer, records| async move {
                let counts = own_chunk_links(writer.sink(), &records).await;
                for r in &records {
                    if let Record::Document(d) = r {
                        writer.sink().remove_document(&d.id).await.unwrap();
                    }
                }
                counts
            },
        )
        .await;
    }
}

/// `HAS_CHUNK` and `NEXT_CHUNK` of the documents among `records`.
async fn own_chunk_links(store: &Neo4jStore, records: &[Record]) -> GraphCounts {
    let docs: Vec<String> = records
        .iter()
        .filter_map(|r| match r {
            Record::Document(d) => Some(d.id.to_string()),
            _ => None,
        })
        .collect();
    let mut counts = GraphCounts::default();
    for (name, text) in [
        (
            "HAS_CHUNK",
            "UNWIND $docs AS d MATCH (:Document {id: d})-[r:HAS_CHUNK]->(:Chunk) RETURN count(r) AS n",
        ),
        (
            "NEXT_CHUNK",
            "UNWIND $docs AS d MATCH (:Document {id: d})-[:HAS_CHUNK]->(:Chunk)-[r:NEXT_CHUNK]->(:Chunk) \
             RETURN count(r) AS n",
        ),
    ] {
        let mut txn = store.graph().start_txn().await.unwrap();
        let mut rows = txn
            .execute(query(text).param("docs", docs.clone()))
            .await
            .unwrap();
        let mut n = 0i64;
        while let Some(r) = rows.next(txn.handle()).await.unwrap() {
            n += r.get::<i64>("n").unwrap();
        }
        txn.commit().await.unwrap();
        counts.relationships.insert(name.into(), n as u64);
    }
    counts
}

/// Reading back goes page by page (more than two pages here), in document
/// and index order, and stops early when the receiver goes away.
#[tokio::test]
async fn bolt_read_back_pages_in_order_and_stops_when_the_receiver_goes() {
    let dir = tempfile::tempdir().unwrap();
    let tag = unique_tag("pages");
    let mut records = long_corpus(&tag, 2_500);
    let chunk_ids: Vec<String> = records
        .iter()
        .filter_map(|r| match r {
            Record::Chunk(c) => Some(c.id.to_string()),
            _ => None,
        })
        .collect();
    for (i, id) in chunk_ids.iter().enumerate() {
        records.push(Record::Embedding(Embedding {
            id: id.clone(),
            target: EmbeddingTarget::Chunk,
            vector: vec![1.0, i as f32, 0.5, -1.0],
            model: "fake-embed".into(),
        }));
    }
    let writer = BatchWriter::new(connect().await, writer_config(dir.path()));
    write_ok(&writer, records.clone()).await;
    let scope = Scope::Ids(node_ids(&records));
    let back = writer.sink().read_all(&scope).await.unwrap();
    assert_eq!(back.len(), records.len());
    assert_eq!(canonical(back.clone()), canonical(records.clone()));
    // The chunks of one document come in index order, each followed by its
    // vector.
    let mut last: Option<(String, u32)> = None;
    for pair in back
        .iter()
        .skip_while(|r| matches!(r, Record::Document(_)))
        .collect::<Vec<_>>()
        .chunks(2)
    {
        let (Record::Chunk(c), Record::Embedding(e)) = (pair[0], pair[1]) else {
            panic!("expected a chunk and its vector, got {pair:?}");
        };
        assert_eq!(c.id.as_str(), e.id);
        let key = (c.document_id.to_string(), c.index);
        assert!(
            last.as_ref().is_none_or(|l| *l < key),
            "{last:?} then {key:?}"
        );
        last = Some(key);
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let read = writer.sink().read_records(&scope, tx);
    let take_five = async move {
        for _ in 0..5 {
            rx.recv().await.unwrap();
        }
    };
    let (sent, ()) = tokio::join!(read, take_five);
    let sent = sent.unwrap();
    assert!((5..100).contains(&sent), "sent {sent}");
}

/// A database the server does not have: one line naming it and the URI,
/// not the driver's dump of the server's answer, and never the password.
#[tokio::test]
async fn bolt_unknown_database_fails_naming_it_and_the_uri() {
    let mut cfg = neo4j_config();
    cfg.database = "nosuchdb".into();
    let uri = cfg.display_uri();
    let password = cfg.password.expose().to_owned();
    let err = connect_err(cfg).await;
    assert!(
        matches!(&err, StoreError::UnknownDatabase { database, .. } if database == "nosuchdb"),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("\"nosuchdb\"") && msg.contains(&uri), "{msg}");
    assert!(!msg.contains('\n') && !msg.contains("BoltString"), "{msg}");
    assert!(password.is_empty() || !msg.contains(&password), "{msg}");
}

#[tokio::test]
async fn bolt_supersede_removes_the_earlier_version_of_a_changed_document() {
    let dir = tempfile::tempdir().unwrap();
    let tag = unique_tag("sup");
    let old_first_chunk = first_chunk_of_old_pdf(&tag);
    let writer = BatchWriter::new(connect().await, writer_config(dir.path()));
    let unlink = async {
        run(
            writer.sink(),
            &format!(
                "MATCH (:Document)-[r:HAS_CHUNK]->(:Chunk {{id: '{old_first_chunk}'}}) DELETE r"
            ),
        )
        .await;
    };
    check_supersede(&writer, &tag, unlink).await;
}

/// While the writer runs, connections are counted as in use (never more
/// than the pool); when it is done, every one is back, also after a batch
/// that failed and was rolled back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bolt_connections_in_use_are_counted_and_given_back() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let tag = unique_tag("conns");
    let store = Arc::new(connect().await);
    assert_eq!(store.connections_in_use(), 0);
    let doc = kg_core::DocumentId::from_content_sha256(&kg_core::sha256_hex(tag.as_bytes()));
    let records: Vec<kg_core::Record> = (0..3_000u32)
        .map(|i| {
            let text = format!("Chunk {i} of the connection test [{tag}]");
            kg_core::Record::Chunk(kg_core::Chunk {
                id: kg_core::ChunkId::new(&doc, i, &text),
                document_id: doc.clone(),
                index: i,
                tokens: 8,
                text,
                source: format!("{tag}/conns.txt"),
                page_start: None,
                page_end: None,
            })
        })
        .collect();
    let (stop, peak) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let sampler = {
        let (store, stop, peak) = (store.clone(), stop.clone(), peak.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(store.connections_in_use(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        })
    };
    let writer = BatchWriter::new(store.clone(), writer_config(dir.path()));
    write_ok(&writer, records).await;
    stop.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    let peak = peak.load(Ordering::Relaxed);
    assert!(
        peak >= 1 && peak <= store.max_connections(),
        "peak {peak} of {}",
        store.max_connections()
    );
    assert_eq!(store.connections_in_use(), 0);

    // A batch the server rejects (a uniqueness constraint of this test's
    // own label): rolled back, dead-lettered, every connection given back.
    let gate = Label::new(&format!("Gate{tag}")).unwrap();
    run(
        &store,
        &format!(
            "CREATE CONSTRAINT kg_test_{tag}_key IF NOT EXISTS FOR (n:{}) REQUIRE n.key IS UNIQUE",
            gate.cypher()
        ),
    )
    .await;
    run(
        &store,
        &format!(
            "CREATE (:{} {{id: 'squatter-{tag}', key: 'dup-{tag}'}})",
            gate.cypher()
        ),
    )
    .await;
    let clash = kg_core::Record::Node(kg_core::GraphNode {
        id: kg_core::NodeId::new(&gate, &format!("dup-{tag}")),
        label: gate.clone(),
        key: format!("dup-{tag}"),
        properties: std::collections::BTreeMap::new(),
        source: format!("{tag}/gates.csv"),
        line: 2,
    });
    let report = writer.write_records(vec![clash]).await.unwrap();
    assert_eq!(report.failed_batches.len(), 1, "{report:?}");
    assert_eq!(store.connections_in_use(), 0);
}

#[tokio::test]
async fn bolt_writing_twice_keeps_counts() {
    let dir = tempfile::tempdir().unwrap();
    check_idempotent(connect().await, dir.path(), &unique_tag("idem")).await;
}

#[tokio::test]
async fn bolt_hostile_data_is_only_data() {
    let dir = tempfile::tempdir().unwrap();
    check_hostile_data(connect().await, dir.path(), &unique_tag("hostile")).await;
}

#[tokio::test]
async fn bolt_vector_search_finds_the_chunk_its_entities_and_relations() {
    let dir = tempfile::tempdir().unwrap();
    let tag = unique_tag("search");
    check_search(connect().await, dir.path(), &tag).await;
    // A new process (`kg search`) finds out how the server ranks: the
    // vector index on Neo4j, vector.similarity.cosine() on the ArcadeDB test
    // server; never by reading every vector into the client.
    let store = connect().await;
    assert_eq!(store.search_method(), "unknown");
    let hits = store
        .vector_chunks(&query_vector(&tag, 2), 1)
        .await
        .unwrap();
    assert_ne!(store.search_method(), "client");
    assert_ne!(store.search_method(), "unknown");
    let found = store.chunks(&[hits[0].id.clone()]).await.unwrap();
    assert!(
        found[0].text.starts_with("Bruce Perens succeeded"),
        "{found:?}"
    );
}

#[tokio::test]
async fn bolt_failed_batch_is_rolled_back_and_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let tag = unique_tag("fail");
    // A label of this test's own, with a uniqueness constraint on `key`
    // and a node already holding the key the batch will try to use.
    let failing = Label::new(&format!("Gate{tag}")).unwrap();
    let store = connect().await;
    run(
        &store,
        &format!(
            "CREATE CONSTRAINT kg_test_{tag}_key IF NOT EXISTS FOR (n:{}) REQUIRE n.key IS UNIQUE",
            failing.cypher()
        ),
    )
    .await;
    run(
        &store,
        &format!(
            "CREATE (:{} {{id: 'squatter-{tag}', key: 'dup-{tag}'}})",
            failing.cypher()
        ),
    )
    .await;
    let writer = BatchWriter::new(store, writer_config(dir.path()));
    let remove = async {
        run(
            writer.sink(),
            &format!(
                "MATCH (n:{} {{id: 'squatter-{tag}'}}) DELETE n",
                failing.cypher()
            ),
        )
        .await;
    };
    check_failed_batch_dead_lettered(&writer, &tag, &failing, remove).await;
}

#[tokio::test]
async fn bolt_schema_is_idempotent_and_warns_without_vector_index() {
    let store = connect().await;
    let first = store.ensure_schema(Some(16)).await.unwrap();
    let second = store.ensure_schema(Some(16)).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(
        first.constraints,
        vec!["kg_document_id", "kg_chunk_id", "kg_entity_id"]
    );
    // Either the server took the vector index, or it said why not.
    assert!(first.vector_index || first.vector_index_skipped.is_some());
    let rows = {
        let mut txn = store.graph().start_txn().await.unwrap();
        let mut s = txn.execute(query("SHOW CONSTRAINTS")).await.unwrap();
        let mut names = Vec::new();
        while let Some(r) = s.next(txn.handle()).await.unwrap() {
            names.push(r.get::<String>("name").unwrap_or_default());
        }
        txn.commit().await.unwrap();
        names
    };
    for name in ["kg_document_id", "kg_chunk_id", "kg_entity_id"] {
        assert!(
            rows.iter().any(|n| n == name),
            "{name} missing from {rows:?}"
        );
    }
}

async fn connect_err(cfg: Neo4jConfig) -> StoreError {
    // Whatever the cause, the answer comes within seconds, not after the
    // driver's own minute of retries.
    match tokio::time::timeout(Duration::from_secs(20), Neo4jStore::connect(cfg)).await {
        Ok(Ok(_)) => panic!("connected with a bad configuration"),
        Ok(Err(e)) => e,
        Err(_) => panic!("connect did not give up within 20 s"),
    }
}

#[tokio::test]
async fn bolt_wrong_password_fails_fast_naming_the_uri_not_the_password() {
    let mut cfg = neo4j_config();
    cfg.password = secret("not-the-password-Xy7");
    let uri = cfg.display_uri();
    let err = connect_err(cfg).await;
    assert!(matches!(err, StoreError::Connect { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&uri), "{msg}");
    assert!(!msg.contains("not-the-password-Xy7"), "{msg}");
}

#[tokio::test]
async fn bolt_unreachable_host_fails_fast() {
    // A closed port on this machine, and a blackholed address.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let base = neo4j_config();
    for uri in [
        format!("bolt://127.0.0.1:{port}"),
        "bolt://10.255.255.1:7687".to_string(),
    ] {
        let mut cfg = Neo4jConfig::new(uri.clone(), base.user.clone(), base.password.clone());
        cfg.connect_timeout = Duration::from_secs(3);
        let err = connect_err(cfg).await;
        assert!(matches!(err, StoreError::Connect { .. }), "{err:?}");
        assert!(err.to_string().contains(&uri), "{err}");
    }
}

#[tokio::test]
async fn bolt_tls_mismatch_fails_fast() {
    // The test server speaks plain Bolt: asking for TLS must fail, quickly.
    let base = neo4j_config();
    let plain = base.uri.clone();
    let Some(rest) = plain
        .strip_prefix("bolt://")
        .or_else(|| plain.strip_prefix("neo4j://"))
    else {
        panic!("the test server URI {plain} is expected to be plain bolt:// or neo4j://");
    };
    let uri = format!("bolt+s://{rest}");
    let mut cfg = Neo4jConfig::new(uri.clone(), base.user.clone(), base.password.clone());
    cfg.connect_timeout = Duration::from_secs(3);
    let err = connect_err(cfg).await;
    assert!(matches!(err, StoreError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains(&uri), "{err}");
}

/// The store's identity holds across calls and connections, is not counted
/// as a node, and is new once the marker is gone (an emptied database).
#[tokio::test]
async fn bolt_identity_is_stable_until_the_store_is_emptied() {
    let store = connect().await;
    let first = store.identity().await.unwrap();
    assert_eq!(first.len(), 32, "{first}");
    assert_eq!(connect().await.identity().await.unwrap(), first);
    let counts = store.counts(&Scope::All).await.unwrap();
    assert!(!counts.nodes.contains_key("KgStore"), "{counts:?}");
    run(&store, "MATCH (m:KgStore) DETACH DELETE m").await;
    let second = store.identity().await.unwrap();
    assert_ne!(second, first);
    assert_eq!(store.identity().await.unwrap(), second);
}

/// The lease contract over Bolt, on a lease of the test's own (the shared
/// server's runs hold the writer lease meanwhile); the lease node is not
/// counted as graph.
#[tokio::test]
async fn bolt_lease_has_one_holder_at_a_time() {
    let store = connect().await;
    check_lease_contract(&store, &unique_tag("lease")).await;
    let counts = store.counts(&Scope::All).await.unwrap();
    assert!(!counts.nodes.contains_key("KgLease"), "{counts:?}");
}

/// Eight connections asking at once: at most one is granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bolt_lease_race_has_one_winner() {
    let mut stores = Vec::new();
    for _ in 0..8 {
        stores.push(connect().await);
    }
    check_lease_race(stores, &unique_tag("race")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bolt_lease_guard_waits_renews_and_is_told_when_lost() {
    check_lease_guard(std::sync::Arc::new(connect().await), &unique_tag("guard")).await;
}

#[tokio::test]
async fn bolt_merge_entities_keeps_provenance_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let writer = BatchWriter::open(connect().await, writer_config(dir.path()))
        .await
        .unwrap();
    check_merge_entities(&writer, &unique_tag("merge")).await;
}

#[tokio::test]
async fn bolt_descriptions_stay_with_their_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let writer = BatchWriter::open(connect().await, writer_config(dir.path()))
        .await
        .unwrap();
    check_descriptions(&writer, &unique_tag("desc")).await;
}
