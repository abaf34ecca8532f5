//! The store contract against the embedded SQLite backend: the same checks
//! as `bolt_store.rs`, on a fresh store per test.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use kg_core::{DocumentId, Label, Record};
use kg_store::{
    export_embedded, Batch, BatchFailure, BatchWriter, ChunkGraph, ChunkInfo, CurrentDocument,
    EmbeddedConfig, EmbeddedStore, EntityMatch, GraphCounts, GraphSink, GraphStore, MemorySink,
    Reached, Removed, SchemaReport, Scope, Scored, StoreError,
};
use tokio::sync::mpsc;

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
async fn embedded_supersede_removes_the_earlier_version_of_a_changed_document() {
    let dir = tempfile::tempdir().unwrap();
    let tag = unique_tag("sup");
    let old_first_chunk = first_chunk_of_old_pdf(&tag);
    let writer = BatchWriter::new(open(dir.path()), writer_config(dir.path()));
    let unlink = async {
        writer
            .sink()
            .with_connection(|c| {
                c.execute(
                    "DELETE FROM rels WHERE type = 'HAS_CHUNK' AND dst = ?1",
                    [old_first_chunk.as_str()],
                )
            })
            .unwrap()
            .unwrap();
    };
    check_supersede(&writer, &tag, unlink).await;
}

/// A removal that fails is rolled back: the old version stays whole, it is
/// reported in `failed`, and a later call (the fault gone) removes it.
#[tokio::test]
async fn embedded_supersede_failure_leaves_the_old_version_whole() {
    let dir = tempfile::tempdir().unwrap();
    let tag = unique_tag("supfail");
    let store = open(dir.path());
    let v1 = fixture(&tag);
    let (_, _, v2) = changed_pdf(&tag);
    let mut all = v1.clone();
    all.extend(v2.iter().cloned());
    let scope = Scope::Ids(node_ids(&all));
    let writer = BatchWriter::new(store, writer_config(dir.path()));
    write_ok(&writer, v1.clone()).await;
    write_ok(&writer, v2).await;
    let before = writer.sink().counts(&scope).await.unwrap();
    writer
        .sink()
        .with_connection(|c| {
            c.execute_batch(
                "CREATE TRIGGER keep_documents BEFORE DELETE ON documents
                 BEGIN SELECT RAISE(ABORT, 'documents are read-only today'); END;",
            )
        })
        .unwrap()
        .unwrap();
    let current = current_after_change(&tag, &v1);
    let gone = writer.sink().supersede(&current).await.unwrap();
    assert!(gone.documents.is_empty(), "{gone:?}");
    assert_eq!(gone.failed.len(), 1, "{gone:?}");
    assert!(gone.failed[0].1.contains("read-only"), "{gone:?}");
    assert_eq!(writer.sink().counts(&scope).await.unwrap(), before);

    writer
        .sink()
        .with_connection(|c| c.execute_batch("DROP TRIGGER keep_documents"))
        .unwrap()
        .unwrap();
    let gone = writer.sink().supersede(&current).await.unwrap();
    assert_eq!(gone.documents.len(), 1, "{gone:?}");
    assert_eq!(gone.chunks, 3);
}

/// An entity relation that carries a lexical type (a hand-written JSONL
/// file can hold one; kg-extract rejects them) stays an entity relation:
/// the target's mentions still list only chunks.
#[tokio::test]
async fn embedded_entity_relation_named_mentions_is_not_a_chunk_mention() {
    let dir = tempfile::tempdir().unwrap();
    let tag = unique_tag("mentions");
    let mut records = fixture(&tag);
    let entities: Vec<kg_core::Entity> = records
        .iter()
        .filter_map(|r| match r {
            kg_core::Record::Entity(e) => Some(e.clone()),
            _ => None,
        })
        .collect();
    let (from, to) = (&entities[0], &entities[1]);
    records.push(kg_core::Record::Relation(kg_core::Relation {
        source_id: from.id.clone(),
        target_id: to.id.clone(),
        rel_type: kg_core::RelType::new("MENTIONS").unwrap(),
        description: "an odd relation".into(),
        weight: 0.5,
        chunk_ids: from.chunk_ids.clone(),
        chunk_descriptions: Default::default(),
    }));
    let writer = BatchWriter::new(open(dir.path()), writer_config(dir.path()));
    write_ok(&writer, records.clone()).await;
    let back = writer
        .sink()
        .read_all(&Scope::Ids(node_ids(&records)))
        .await
        .unwrap();
    let target = back
        .iter()
        .find_map(|r| match r {
            kg_core::Record::Entity(e) if e.id == to.id => Some(e.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        target.chunk_ids, to.chunk_ids,
        "an entity read back as a chunk"
    );
}

#[tokio::test]
async fn embedded_hostile_data_is_only_data() {
    let dir = tempfile::tempdir().unwrap();
    check_hostile_data(open(dir.path()), dir.path(), &unique_tag("hostile")).await;
}

#[tokio::test]
async fn embedded_vector_search_finds_the_chunk_its_entities_and_relations() {
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
        write_ok(&writer, records.clone()).await;
    }
    // Reopened from disk, then exported through a writer into a second
    // embedded store: the same graph comes out.
    let reopened = open(dir.path());
    let other_dir = tempfile::tempdir().unwrap();
    let target = BatchWriter::open(open(other_dir.path()), writer_config(other_dir.path()))
        .await
        .unwrap();
    let report = export_embedded(&reopened, &target).await.unwrap();
    report.check().unwrap();
    let scope = Scope::Ids(node_ids(&records));
    assert_eq!(
        target.sink().counts(&scope).await.unwrap(),
        expected_counts()
    );
    assert_eq!(
        canonical(target.sink().read_all(&Scope::All).await.unwrap()),
        expected_read_back(&records)
    );
    // Through windows of three records, NEXT_CHUNK is rebuilt all the same:
    // chunks come back in document and index order.
    let small_dir = tempfile::tempdir().unwrap();
    let mut small = writer_config(small_dir.path());
    small.window_records = 3;
    let small = BatchWriter::new(open(small_dir.path()), small);
    let report = export_embedded(&reopened, &small).await.unwrap();
    report.check().unwrap();
    assert!(report.windows >= 5, "{} windows", report.windows);
    assert_eq!(
        small.sink().counts(&scope).await.unwrap(),
        expected_counts()
    );
    // The in-memory sink sees the same number of rows as a first write.
    let mem = BatchWriter::new(MemorySink::new(), writer_config(dir.path()));
    let r = export_embedded(&reopened, &mem).await.unwrap();
    assert_eq!(r.rows, mem.sink().rows());
    assert!(r.rows > 0);
}

/// A reader whose consumer goes away stops early, without an error.
#[tokio::test]
async fn embedded_read_back_stops_when_the_receiver_goes() {
    let dir = tempfile::tempdir().unwrap();
    let records = fixture(&unique_tag("stop"));
    let writer = BatchWriter::new(open(dir.path()), writer_config(dir.path()));
    write_ok(&writer, records).await;
    let all = writer.sink().read_all(&Scope::All).await.unwrap().len() as u64;
    let (tx, mut rx) = mpsc::channel(1);
    let read = writer.sink().read_records(&Scope::All, tx);
    let take_three = async move {
        for _ in 0..3 {
            rx.recv().await.unwrap();
        }
        // rx dropped here.
    };
    let (sent, ()) = tokio::join!(read, take_three);
    let sent = sent.unwrap();
    assert!((3..all).contains(&sent), "sent {sent} of {all}");
}

/// 50,000 chunks through `write_channel` in windows of 6,000 records, then
/// of the default 20,000: `NEXT_CHUNK` links every consecutive pair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_next_chunk_is_complete_across_windows() {
    for window in [Some(6_000), None] {
        let dir = tempfile::tempdir().unwrap();
        check_next_chunk_across_windows(
            open(dir.path()),
            dir.path(),
            &unique_tag("links"),
            window,
            |writer, _| async move { writer.sink().counts(&Scope::All).await.unwrap() },
        )
        .await;
    }
}

/// An embedded store that says which schema calls it got.
struct SchemaCalls {
    inner: EmbeddedStore,
    calls: Arc<Mutex<Vec<Option<usize>>>>,
}

impl GraphSink for SchemaCalls {
    async fn write_batch(&self, batch: Arc<Batch>) -> Result<(), BatchFailure> {
        self.inner.write_batch(batch).await
    }
}

impl GraphStore for SchemaCalls {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn ensure_schema(&self, dims: Option<usize>) -> Result<SchemaReport, StoreError> {
        self.calls.lock().unwrap().push(dims);
        self.inner.ensure_schema(dims).await
    }
    async fn fulltext_chunks(&self, text: &str, k: usize) -> Result<Vec<Scored>, StoreError> {
        self.inner.fulltext_chunks(text, k).await
    }
    async fn vector_chunks(&self, v: &[f32], k: usize) -> Result<Vec<Scored>, StoreError> {
        self.inner.vector_chunks(v, k).await
    }
    async fn vector_entities(&self, v: &[f32], k: usize) -> Result<Vec<EntityMatch>, StoreError> {
        self.inner.vector_entities(v, k).await
    }
    async fn entities_by_name(&self, text: &str, k: usize) -> Result<Vec<EntityMatch>, StoreError> {
        self.inner.entities_by_name(text, k).await
    }
    async fn expand(
        &self,
        seeds: &[String],
        hops: u8,
        max_neighbours: usize,
        per_entity: usize,
    ) -> Result<Vec<Reached>, StoreError> {
        self.inner
            .expand(seeds, hops, max_neighbours, per_entity)
            .await
    }
    async fn chunks(&self, ids: &[String]) -> Result<Vec<ChunkInfo>, StoreError> {
        self.inner.chunks(ids).await
    }
    async fn chunk_graph(&self, ids: &[String]) -> Result<ChunkGraph, StoreError> {
        self.inner.chunk_graph(ids).await
    }
    async fn counts(&self, scope: &Scope) -> Result<GraphCounts, StoreError> {
        self.inner.counts(scope).await
    }
    async fn identity(&self) -> Result<String, StoreError> {
        self.inner.identity().await
    }
    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        note: &str,
        ttl: std::time::Duration,
        now_ms: i64,
    ) -> Result<kg_store::lease::LeaseState, StoreError> {
        self.inner.try_lease(name, holder, note, ttl, now_ms).await
    }
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.inner.release_lease(name, holder).await
    }
    async fn earlier_versions(
        &self,
        current: &[CurrentDocument],
    ) -> Result<Vec<DocumentId>, StoreError> {
        self.inner.earlier_versions(current).await
    }
    async fn remove_document(&self, id: &DocumentId) -> Result<Removed, StoreError> {
        self.inner.remove_document(id).await
    }
    async fn read_records(
        &self,
        scope: &Scope,
        out: mpsc::Sender<Record>,
    ) -> Result<u64, StoreError> {
        self.inner.read_records(scope, out).await
    }
    async fn stream_entities(
        &self,
        out: mpsc::Sender<kg_store::EntityRow>,
    ) -> Result<u64, StoreError> {
        self.inner.stream_entities(out).await
    }
    async fn entity_vectors(
        &self,
        ids: &[String],
    ) -> Result<std::collections::HashMap<String, Vec<f32>>, StoreError> {
        self.inner.entity_vectors(ids).await
    }
    async fn merge_entities(
        &self,
        merge: &kg_store::EntityMerge,
    ) -> Result<kg_store::MergeOutcome, StoreError> {
        self.inner.merge_entities(merge).await
    }
    async fn documents_under(&self, prefix: &str) -> Result<Vec<CurrentDocument>, StoreError> {
        self.inner.documents_under(prefix).await
    }
    async fn stale_descriptions(
        &self,
        relations: bool,
        after: Option<&kg_store::Described>,
        limit: usize,
    ) -> Result<Vec<kg_store::DescriptionSet>, StoreError> {
        self.inner.stale_descriptions(relations, after, limit).await
    }
    async fn set_descriptions(
        &self,
        updates: &[kg_store::DescriptionUpdate],
    ) -> Result<u64, StoreError> {
        self.inner.set_descriptions(updates).await
    }
}

/// `open` ensures the constraints at once and the vector index when the
/// first chunk vector comes, with its length, once per writer (through
/// windows and writes); `new` does no schema work.
#[tokio::test]
async fn embedded_open_ensures_the_schema_and_the_vector_index_once() {
    let dir = tempfile::tempdir().unwrap();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let store = SchemaCalls {
        inner: open(dir.path()),
        calls: calls.clone(),
    };
    let mut config = writer_config(dir.path());
    config.window_records = 5;
    let writer = BatchWriter::open(store, config).await.unwrap();
    assert_eq!(*calls.lock().unwrap(), vec![None]);
    // No chunk vector yet: no vector index.
    let records = fixture(&unique_tag("schema"));
    let without_vectors: Vec<Record> = records
        .iter()
        .filter(|r| !matches!(r, Record::Embedding(_)))
        .cloned()
        .collect();
    write_ok(&writer, without_vectors).await;
    assert_eq!(*calls.lock().unwrap(), vec![None]);
    // The fixture's chunk vectors have 16 dimensions; several windows and
    // two writes carry them.
    write_ok(&writer, records.clone()).await;
    write_ok(&writer, records.clone()).await;
    assert_eq!(*calls.lock().unwrap(), vec![None, Some(16)]);

    let calls = Arc::new(Mutex::new(Vec::new()));
    let plain = BatchWriter::new(
        SchemaCalls {
            inner: open(dir.path()),
            calls: calls.clone(),
        },
        writer_config(dir.path()),
    );
    write_ok(&plain, records).await;
    assert!(calls.lock().unwrap().is_empty());
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

/// The identity lives in the SQLite file: the same after a reopen, new
/// when the file is deleted.
#[tokio::test]
async fn embedded_identity_is_stable_until_the_file_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path()).identity().await.unwrap();
    assert_eq!(first.len(), 32, "{first}");
    assert_eq!(open(dir.path()).identity().await.unwrap(), first);
    let data = dir.path().join("kg-data");
    std::fs::remove_file(data.join("graph.sqlite")).unwrap();
    for extra in ["graph.sqlite-wal", "graph.sqlite-shm"] {
        let _ = std::fs::remove_file(data.join(extra));
    }
    let second = open(dir.path()).identity().await.unwrap();
    assert_ne!(second, first);
}

/// The writer lease in the SQLite file: one holder at a time, renewals,
/// expiry, release by the holder only.
#[tokio::test]
async fn embedded_lease_has_one_holder_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    check_lease_contract(&open(dir.path()), "writer").await;
}

/// Eight handles on one file (eight connections) asking at once: one
/// holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_lease_race_has_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let stores = (0..8).map(|_| open(dir.path())).collect();
    check_lease_race(stores, "writer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_lease_guard_waits_renews_and_is_told_when_lost() {
    let dir = tempfile::tempdir().unwrap();
    check_lease_guard(std::sync::Arc::new(open(dir.path())), "writer").await;
}

#[tokio::test]
async fn embedded_merge_entities_keeps_provenance_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let writer = BatchWriter::open(open(dir.path()), writer_config(dir.path()))
        .await
        .unwrap();
    check_merge_entities(&writer, &unique_tag("merge")).await;
}

/// Every entity streams once, in id order, with its mention count.
#[tokio::test]
async fn embedded_streams_entities_with_mention_counts() {
    let dir = tempfile::tempdir().unwrap();
    let writer = BatchWriter::open(open(dir.path()), writer_config(dir.path()))
        .await
        .unwrap();
    let tag = unique_tag("stream");
    write_ok(&writer, fixture(&tag)).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let collect = async {
        let mut v = Vec::new();
        while let Some(r) = rx.recv().await {
            v.push(r);
        }
        v
    };
    let (sent, rows) = tokio::join!(writer.sink().stream_entities(tx), collect);
    assert_eq!(sent.unwrap(), rows.len() as u64);
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert!(rows.windows(2).all(|w| w[0].id < w[1].id));
    let ian = rows
        .iter()
        .find(|r| r.name.starts_with("Ian Murdock"))
        .unwrap();
    assert_eq!((ian.entity_type.as_str(), ian.mentions), ("Person", 2));
    let docs = writer.sink().documents_under(&tag).await.unwrap();
    assert_eq!(docs.len(), 2);
    assert!(writer
        .sink()
        .documents_under("/nowhere")
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn embedded_descriptions_stay_with_their_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let writer = BatchWriter::open(open(dir.path()), writer_config(dir.path()))
        .await
        .unwrap();
    check_descriptions(&writer, &unique_tag("desc")).await;
}

/// The vector scan ranks exactly as a naive scan: every stored vector
/// compared in `f64`, NaN (another length) left out, best cosine first and
/// ties by id; `k` beyond the rows gives every comparable row. Vectors
/// have small integer components, so both sums are exact and the scores
/// equal to the bit; duplicated and scaled copies make exact ties.
#[tokio::test]
async fn embedded_vector_scan_ranks_as_a_naive_scan() {
    use kg_core::{Chunk, ChunkId, Document, Embedding, EmbeddingTarget, MediaType};
    const DIMS: usize = 16;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut int_vector =
        |dims: usize| -> Vec<f32> { (0..dims).map(|_| (next() % 7) as f32 - 3.0).collect() };
    let dir = tempfile::tempdir().unwrap();
    let tag = unique_tag("scan");
    let sha = kg_core::sha256_hex(tag.as_bytes());
    let doc = DocumentId::from_content_sha256(&sha);
    let mut records = vec![Record::Document(Document {
        id: doc.clone(),
        source: format!("{tag}.txt"),
        title: None,
        sha256: sha,
        pages: None,
        media_type: MediaType::Text,
        bytes: 0,
    })];
    // (chunk id, vector) as stored.
    let mut stored: Vec<(String, Vec<f32>)> = Vec::new();
    for i in 0..260u32 {
        let vector = match i {
            // Exact copies and a doubled copy of chunk 0's vector: ties.
            200..=203 => stored[0].1.clone(),
            204 => stored[0].1.iter().map(|x| 2.0 * x).collect(),
            // All zeros: cosine 0.
            205 => vec![0.0; DIMS],
            // Another model's length: never ranked.
            206..=215 => int_vector(DIMS / 2),
            _ => int_vector(DIMS),
        };
        let text = format!("chunk {i} [{tag}]");
        let id = ChunkId::new(&doc, i, &text);
        records.push(Record::Chunk(Chunk {
            id: id.clone(),
            document_id: doc.clone(),
            index: i,
            text,
            tokens: 3,
            source: format!("{tag}.txt"),
            page_start: None,
            page_end: None,
        }));
        // Chunks 250.. have no vector at all.
        if i < 250 {
            records.push(Record::Embedding(Embedding {
                id: id.to_string(),
                target: EmbeddingTarget::Chunk,
                vector: vector.clone(),
                model: if vector.len() == DIMS { "m16" } else { "m8" }.into(),
            }));
            stored.push((id.to_string(), vector));
        }
    }
    let writer = BatchWriter::new(open(dir.path()), writer_config(dir.path()));
    write_ok(&writer, records).await;
    let store = writer.sink();

    let naive = |q: &[f32], k: usize| -> Vec<(String, f32)> {
        let mut all: Vec<(String, f32)> = stored
            .iter()
            .filter(|(_, v)| v.len() == q.len())
            .map(|(id, v)| {
                let dot: f64 = q
                    .iter()
                    .zip(v)
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum();
                let nq: f64 = q.iter().map(|a| f64::from(*a) * f64::from(*a)).sum();
                let nv: f64 = v.iter().map(|b| f64::from(*b) * f64::from(*b)).sum();
                let score = if nq == 0.0 || nv == 0.0 {
                    0.0
                } else {
                    (dot / (nq.sqrt() * nv.sqrt())) as f32
                };
                (id.clone(), score)
            })
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(k);
        all
    };
    let mut queries: Vec<Vec<f32>> = (0..20).map(|_| int_vector(DIMS)).collect();
    // Chunk 0's own vector: six chunks tie at cosine 1.
    queries.push(stored[0].1.clone());
    for q in &queries {
        for k in [1usize, 3, 7, 50, 1_000] {
            let got: Vec<(String, f32)> = store
                .vector_chunks(q, k)
                .await
                .unwrap()
                .into_iter()
                .map(|s| (s.id, s.score))
                .collect();
            assert_eq!(got, naive(q, k), "k {k}, query {q:?}");
        }
    }
    let tie = store.vector_chunks(&stored[0].1, 6).await.unwrap();
    assert!(
        tie.iter().all(|s| (s.score - 1.0).abs() < 1e-6),
        "six exact matches: {tie:?}"
    );
    let mut tied_ids: Vec<&str> = tie.iter().map(|s| s.id.as_str()).collect();
    let in_order = tied_ids.clone();
    tied_ids.sort();
    assert_eq!(in_order, tied_ids, "ties are ranked by id");
    // Every 16-dimension vector and nothing else when k exceeds the rows.
    assert_eq!(
        store.vector_chunks(&queries[0], 1_000).await.unwrap().len(),
        240
    );
    // The other model's length finds only its own ten; a length nobody
    // stored, or k = 0, finds nothing.
    assert_eq!(
        store
            .vector_chunks(&int_vector(DIMS / 2), 100)
            .await
            .unwrap()
            .len(),
        10
    );
    assert!(store
        .vector_chunks(&int_vector(5), 10)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .vector_chunks(&queries[0], 0)
        .await
        .unwrap()
        .is_empty());
}
