//! A Bolt server killed (SIGKILL, by PID) and restarted in the middle of a
//! write: the run either completes by retrying, or ends with failed batches
//! in the dead-letter file; a re-run of that file then brings the database
//! to the counts of an undisturbed run (the same input written to the
//! embedded store).
//!
//! This test starts its own private ArcadeDB server on free ports (never
//! the shared one), from the installed `arcadedb_embedded` Python package:
//! `KG_ARCADEDB_PKG` (the package directory) if set, else the package
//! importable from `${KG_CACHE_DIR:-~/.cache/kg}/venv`, else from
//! `~/.cache/kg/arcadedb-venv`. It needs NEO4J_USER/NEO4J_PASSWORD only for
//! the shape of the environment; the private server's root password is
//! its own.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use kg_core::*;
use kg_store::{
    rerun_dead_letters, BatchWriter, EmbeddedConfig, EmbeddedStore, GraphStore, Neo4jConfig,
    Neo4jStore, RetryPolicy, Scope, Secret, StoreError, WriterConfig,
};

const PASSWORD: &str = "kgkilltest";

fn arcadedb_package() -> PathBuf {
    if let Ok(p) = std::env::var("KG_ARCADEDB_PKG") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let cache = std::env::var("KG_CACHE_DIR").unwrap_or_else(|_| format!("{home}/.cache/kg"));
    for venv in [
        format!("{cache}/venv"),
        format!("{home}/.cache/kg/arcadedb-venv"),
    ] {
        let out = Command::new(format!("{venv}/bin/python3"))
            .args([
                "-c",
                "import arcadedb_embedded, os; print(os.path.dirname(arcadedb_embedded.__file__))",
            ])
            .output();
        if let Ok(out) = out {
            if out.status.success() {
                return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            }
        }
    }
    panic!(
        "no ArcadeDB package for the private kill/restart server: set KG_ARCADEDB_PKG to the \
         arcadedb_embedded package directory, or install it in $KG_CACHE_DIR/venv"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

struct Server {
    child: Child,
}

impl Server {
    fn start(pkg: &Path, data: &Path, http: u16, bolt: u16, log: &Path) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(pkg.join("jre/bin/java"))
            .arg("-Xmx1g")
            .arg("-cp")
            .arg(format!("{}/jars/*", pkg.display()))
            .arg(format!("-Darcadedb.server.rootPath={}", data.display()))
            .arg(format!("-Darcadedb.server.rootPassword={PASSWORD}"))
            .arg("-Darcadedb.server.mode=development")
            .arg("-Darcadedb.server.httpIncomingHost=127.0.0.1")
            .arg(format!("-Darcadedb.server.httpIncomingPort={http}"))
            .arg("-Darcadedb.server.plugins=Bolt:com.arcadedb.bolt.BoltProtocolPlugin")
            .arg(format!("-Darcadedb.bolt.port={bolt}"))
            .arg("-Darcadedb.bolt.host=127.0.0.1")
            .arg("-Darcadedb.server.defaultDatabases=neo4j[root]")
            .arg("com.arcadedb.server.ArcadeDBServer")
            // ArcadeDB writes its own ./log directory: keep it in the temp dir.
            .current_dir(data.parent().unwrap_or(data))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        Self { child }
    }

    /// SIGKILL by PID: no shutdown hook runs.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn config(bolt: u16) -> Neo4jConfig {
    let mut c = Neo4jConfig::new(
        format!("bolt://127.0.0.1:{bolt}"),
        "root",
        Secret::new(PASSWORD),
    );
    c.connect_timeout = Duration::from_secs(3);
    c
}

async fn wait_until_up(bolt: u16, log: &Path) -> Neo4jStore {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match Neo4jStore::connect(config(bolt)).await {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline => {
                let _: StoreError = e;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!(
                "private ArcadeDB did not come up on port {bolt}: {e}\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bolt_server_killed_mid_write_then_rerun_matches_undisturbed_counts() {
    let pkg = arcadedb_package();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("arcadedb");
    std::fs::create_dir_all(&data).unwrap();
    let log = dir.path().join("arcadedb.log");
    let (http, bolt) = (free_port(), free_port());
    let mut server = Server::start(&pkg, &data, http, bolt, &log);
    let store = wait_until_up(bolt, &log).await;
    store.ensure_schema(None).await.unwrap();

    let tag = unique_tag("kill");
    let records = big_corpus(&tag);

    // The undisturbed run: the same input into the embedded store.
    let reference_dir = tempfile::tempdir().unwrap();
    let reference = BatchWriter::new(
        EmbeddedStore::open(&EmbeddedConfig {
            data_dir: reference_dir.path().into(),
        })
        .unwrap(),
        writer_config(reference_dir.path()),
    );
    reference
        .write_records(records.clone())
        .await
        .unwrap()
        .check()
        .unwrap();
    let want = reference.sink().counts(&Scope::All).await.unwrap();

    // Small fixed batches make for many transactions; retries span ~40 s.
    let cfg = WriterConfig {
        dead_letter: dir.path().join("dead-letter.jsonl"),
        retry: RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(5),
        },
        ..WriterConfig::default()
    }
    .fixed_batch_rows(100);
    let writer = Arc::new(BatchWriter::new(store, cfg));
    let w = writer.clone();
    let input = records.clone();
    let write = tokio::spawn(async move { w.write_records(input).await });

    // Kill once some chunks have landed, while the rest are in flight.
    let probe = Neo4jStore::connect(config(bolt)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = probe
            .counts(&Scope::All)
            .await
            .map(|c| c.nodes.get("Chunk").copied().unwrap_or(0));
        if matches!(n, Ok(n) if n >= 2_000) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !write.is_finished(),
        "the write finished before the kill: make the corpus bigger"
    );
    server.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut server = Server::start(&pkg, &data, http, bolt, &log);

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
            let _ = wait_until_up(bolt, &log).await;
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
            .read_records(&Scope::Ids(node_ids(&fixture(&tag))))
            .await
            .unwrap(),
    );
    assert_eq!(back, expected_read_back(&fixture(&tag)));
    server.kill();
}
