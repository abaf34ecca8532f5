//! The store contract against the embedded SQLite backend: the same checks
//! as `bolt_store.rs`, on a fresh store per test.

mod common;

use common::*;
use kg_core::Label;
use kg_store::{
    export_embedded, BatchWriter, EmbeddedConfig, EmbeddedStore, GraphStore, MemorySink, Scope,
};

fn open(dir: &std::path::Path) -> EmbeddedStore {
    EmbeddedStore::open(&EmbeddedConfig {
        data_dir: dir.join("kg-data"),
    })
    .unwrap()
}

#[tokio::test]
async fn embedded_round_trip_reads_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    check_round_trip(open(dir.path()), dir.path(), &unique_tag("rt")).await;
}

#[tokio::test]
async fn embedded_writing_twice_keeps_counts() {
    let dir = tempfile::tempdir().unwrap();
    check_idempotent(open(dir.path()), dir.path(), &unique_tag("idem")).await;
}

#[tokio::test]
async fn embedded_hostile_data_is_only_data() {
    let dir = tempfile::tempdir().unwrap();
    check_hostile_data(open(dir.path()), dir.path(), &unique_tag("hostile")).await;
}

#[tokio::test]
async fn embedded_search_finds_chunk_entities_and_neighbours() {
    let dir = tempfile::tempdir().unwrap();
    check_search(open(dir.path()), dir.path(), &unique_tag("search")).await;
}

#[tokio::test]
async fn embedded_failed_batch_is_rolled_back_and_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let tag = unique_tag("fail");
    let failing = Label::new("Gate").unwrap();
    let store = open(dir.path());
    // The injected fault: a trigger that rejects the node keyed `dup-<tag>`
    // the way a uniqueness constraint would.
    let trigger = format!(
        "CREATE TRIGGER reject_dup BEFORE INSERT ON nodes
         WHEN json_extract(NEW.props, '$.key') = 'dup-{tag}'
         BEGIN SELECT RAISE(ABORT, 'constraint violation: Gate.key dup-{tag} already exists'); END;"
    );
    store
        .with_connection(|c| c.execute_batch(&trigger))
        .unwrap()
        .unwrap();
    let writer = BatchWriter::new(store, writer_config(dir.path()));
    let remove = async {
        writer
            .sink()
            .with_connection(|c| c.execute_batch("DROP TRIGGER reject_dup"))
            .unwrap()
            .unwrap();
    };
    check_failed_batch_dead_lettered(&writer, &tag, &failing, remove).await;
}

#[tokio::test]
async fn embedded_store_persists_and_exports_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let tag = unique_tag("export");
    let records = fixture(&tag);
    {
        let writer = BatchWriter::new(open(dir.path()), writer_config(dir.path()));
        writer
            .write_records(records.clone())
            .await
            .unwrap()
            .check()
            .unwrap();
    }
    // Reopened from disk, then exported through a writer into a second
    // embedded store: the same graph comes out.
    let reopened = open(dir.path());
    let other_dir = tempfile::tempdir().unwrap();
    let target = BatchWriter::new(open(other_dir.path()), writer_config(other_dir.path()));
    let report = export_embedded(&reopened, &target).await.unwrap();
    report.check().unwrap();
    let scope = Scope::Ids(node_ids(&records));
    assert_eq!(
        target.sink().counts(&scope).await.unwrap(),
        expected_counts()
    );
    assert_eq!(
        canonical(target.sink().read_records(&Scope::All).await.unwrap()),
        expected_read_back(&records)
    );
    // The in-memory sink sees the same number of rows as a first write.
    let mem = BatchWriter::new(MemorySink::new(), writer_config(dir.path()));
    let r = export_embedded(&reopened, &mem).await.unwrap();
    assert_eq!(r.rows, mem.sink().rows());
    assert!(r.rows > 0);
}

#[tokio::test]
async fn embedded_store_open_fails_on_unusable_dir() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = EmbeddedStore::open(&EmbeddedConfig {
        data_dir: file.clone(),
    })
    .unwrap_err();
    assert!(matches!(err, kg_store::StoreError::Embedded { .. }));
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}
