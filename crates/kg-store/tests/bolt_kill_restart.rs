//! A Bolt server killed (SIGKILL, by PID) in the middle of a write:
//!
//! - restarted at once, the run either completes by retrying, or ends with
//!   failed batches in the dead-letter file;
//! - left down until the writer gives up, every record that did not commit
//!   is in the dead-letter file.
//!
//! Either way, a re-run of that file then brings the database to the counts
//! of an undisturbed run (the same input written to the embedded store).
//!
//! Each test starts its own private ArcadeDB server on a free port (never
//! the shared one) through kg-testkit's `PrivateServer`, which drives
//! `cargo xtask server start|stop` (the `KG_XTASK` binary that `cargo xtask
//! test` exports), so install, readiness and PID handling are the same code
//! as for the shared server.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use kg_core::*;
use kg_store::{
    rerun_dead_letters, BatchWriter, EmbeddedConfig, EmbeddedStore, GraphStore, Neo4jConfig,
    Neo4jStore, RetryPolicy, Scope, Secret, StoreError, WriterConfig,
};
use kg_testkit::PrivateServer;

fn config(server: &PrivateServer) -> Neo4jConfig {
    let s = server.settings();
    let mut c = Neo4jConfig::new(
        s.uri.clone(),
        s.user.clone(),
        Secret::new(s.password.clone()),
    );
    c.connect_timeout = Duration::from_secs(3);
    c
}

/// Connects, retrying while the server finishes coming up.
async fn wait_until_up(server: &PrivateServer) -> Neo4jStore {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match Neo4jStore::connect(config(server)).await {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline => {
                let _: StoreError = e;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!(
                "private ArcadeDB did not come up on port {}: {e}",
                server.port()
            ),
        }
    }
}

/// Many documents of many chunks: enough small transactions that the kill
/// lands in the middle of the write.
fn big_corpus(tag: &str) -> Vec<Record> {
    let mut out = Vec::new();
    for d in 0..40 {
        let sha = sha256_hex(format!("{tag} doc {d}").as_bytes());
        let doc = DocumentId::from_content_sha256(&sha);
        out.push(Record::Document(Document {
            id: doc.clone(),
            source: format!("{tag}/corpus/{d}.md"),
            title: Some(format!("Document {d}")),
            sha256: sha,
            pages: None,
            media_type: MediaType::Markdown,
            bytes: 10_000,
        }));
        for i in 0..500u32 {
            let text = format!(
                "Section {i} of document {d} ({tag}): the writer must survive a server restart \
                 without losing or duplicating a single row."
            );
            out.push(Record::Chunk(Chunk {
                id: ChunkId::new(&doc, i, &text),
                document_id: doc.clone(),
                index: i,
                tokens: 24,
                text,
                source: format!("{tag}/corpus/{d}.md"),
                page_start: None,
                page_end: None,
            }));
        }
    }
    out.extend(fixture(tag));
    out
}

/// The counts of an undisturbed run: `records` into an embedded store.
async fn undisturbed_counts(records: &[Record]) -> kg_store::GraphCounts {
    let dir = tempfile::tempdir().unwrap();
    let reference = BatchWriter::new(
        EmbeddedStore::open(&EmbeddedConfig {
            data_dir: dir.path().into(),
        })
        .unwrap(),
        writer_config(dir.path()),
    );
    write_ok(&reference, records.to_vec()).await;
    reference.sink().counts(&Scope::All).await.unwrap()
}

/// Waits (a minute at most) until the server holds `n` chunks: some have
/// landed, the rest are in flight.
async fn wait_for_chunks(server: &PrivateServer, n: u64) {
    let probe = Neo4jStore::connect(config(server)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = probe
            .counts(&Scope::All)
            .await
            .map(|c| c.nodes.get("Chunk").copied().unwrap_or(0));
        if matches!(got, Ok(got) if got >= n) || Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A write of `records` into `server` in 100-row batches, running in the
/// background, with `retry`; returns once 2,000 chunks have landed and the
/// rest are in flight (the moment to kill the server).
async fn write_until_half_way(
    server: &PrivateServer,
    dir: &std::path::Path,
    records: &[Record],
    retry: RetryPolicy,
) -> (
    Arc<BatchWriter<Neo4jStore>>,
    tokio::task::JoinHandle<Result<kg_store::WriteReport, StoreError>>,
) {
    let store = wait_until_up(server).await;
    store.ensure_schema(None).await.unwrap();
    let cfg = WriterConfig {
        dead_letter: dir.join("dead-letter.jsonl"),
        retry,
        ..WriterConfig::default()
    }
    .fixed_batch_rows(100);
    let writer = Arc::new(BatchWriter::new(store, cfg));
    let w = writer.clone();
    let input = records.to_vec();
    let write = tokio::spawn(async move { w.write_records(input).await });
    wait_for_chunks(server, 2_000).await;
    assert!(
        !write.is_finished(),
        "the write finished before the kill: make the corpus bigger"
    );
    (writer, write)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bolt_server_killed_mid_write_then_rerun_matches_undisturbed_counts() {
    let server = PrivateServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tag = unique_tag("kill");
    let records = big_corpus(&tag);
    let want = undisturbed_counts(&records).await;

    // Retries span 19 to 38 s (jitter): longer than the restart takes.
    let retry = RetryPolicy::new(12, Duration::from_millis(250), Duration::from_secs(5)).unwrap();
    let (writer, write) = write_until_half_way(&server, dir.path(), &records, retry).await;
    server.kill().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.restart().await.unwrap();

    let report = write.await.unwrap().unwrap();
    eprintln!(
        "write after kill: {} batches, {} retries, {} failed, {} records dead-lettered",
        report.batches,
        report.retries,
        report.failed_batches.len(),
        report.dead_lettered_records
    );
    match report.check() {
        Ok(()) => {
            assert!(report.retries > 0, "a kill with no retry? {report:?}");
        }
        Err(StoreError::BatchesFailed { dead_letter, .. }) => {
            assert!(dead_letter.exists());
            let _ = wait_until_up(&server).await;
            let rerun = rerun_dead_letters(&writer).await.unwrap();
            rerun.check().unwrap();
        }
        Err(other) => panic!("unexpected error: {other}"),
    }
    let got = writer.sink().counts(&Scope::All).await.unwrap();
    assert_eq!(got, want, "after the kill and the re-run");
    // And the exact graph: every record reads back.
    let back = canonical(
        writer
            .sink()
            .read_all(&Scope::Ids(node_ids(&fixture(&tag))))
            .await
            .unwrap(),
    );
    assert_eq!(back, expected_read_back(&fixture(&tag)));
    server.stop().await.unwrap();
}

/// The server is killed and stays down past every retry: the writer gives
/// up, and nothing is lost. Every record of a batch that did not commit is
/// in the dead-letter file (batches after the first failures are not even
/// attempted against a store that stopped answering), and once the server
/// is back, a re-run of that file brings the database to the counts of an
/// undisturbed run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bolt_server_down_past_retries_dead_letters_then_rerun_completes() {
    let server = PrivateServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tag = unique_tag("down");
    let records = big_corpus(&tag);
    let want = undisturbed_counts(&records).await;

    // Two quick attempts per batch: the writer gives up long before the
    // server is back.
    let retry =
        RetryPolicy::new(2, Duration::from_millis(100), Duration::from_millis(200)).unwrap();
    let (writer, write) = write_until_half_way(&server, dir.path(), &records, retry).await;
    server.kill().await.unwrap();
    let report = write.await.unwrap().unwrap();
    eprintln!(
        "write with the server down: {} batches committed, {} retries, {} failed, {} records dead-lettered",
        report.batches,
        report.retries,
        report.failed_batches.len(),
        report.dead_lettered_records
    );
    assert!(!report.failed_batches.is_empty(), "{report:?}");
    assert!(report.has_set_aside());
    let dead_letter = match report.check() {
        Err(StoreError::BatchesFailed { dead_letter, .. }) => dead_letter,
        other => panic!("expected failed batches, got {other:?}"),
    };
    // Nothing lost: every record is committed or in the dead-letter file.
    let parked = kg_store::read_dead_letters(&dead_letter).unwrap();
    assert_eq!(parked.len() as u64, report.dead_lettered_records);
    assert!(!parked.is_empty());

    server.restart().await.unwrap();
    let _ = wait_until_up(&server).await;
    let rerun = rerun_dead_letters(&writer).await.unwrap();
    rerun.check().unwrap();
    assert_eq!(rerun.records, parked.len() as u64);
    let got = writer.sink().counts(&Scope::All).await.unwrap();
    assert_eq!(got, want, "after the outage and the re-run");
    let back = canonical(
        writer
            .sink()
            .read_all(&Scope::Ids(node_ids(&fixture(&tag))))
            .await
            .unwrap(),
    );
    assert_eq!(back, expected_read_back(&fixture(&tag)));
    server.stop().await.unwrap();
}
