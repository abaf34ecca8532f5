//! Retrieval latency of the four search modes (`kg_query::search` through
//! kg-cli's `StoreRetriever`, as `kg search` runs it) on the embedded store
//! with 10,000 synthetic chunks, over the 88 questions of
//! eval/retrieval/questions.jsonl.
//!
//! The corpus: chunks of 300 words drawn (Zipf-like) from the words of the
//! evaluation's questions and evidence plus 5,000 filler words, so
//! questions hit real posting lists; 2,000 entities named after those
//! words, three per chunk, two relations each, all with vectors. Vectors
//! are 384-dimension bags of hashed words, and the question is embedded
//! the same way, so the figures are the store's and the fusion's time
//! without a model (MiniLM adds the same few milliseconds per question to
//! every mode but fulltext).
//!
//! Over Bolt too, the same corpus measured the same way: with
//! `KG_BENCH_BOLT=1` on a fresh ArcadeDB of the bench's own (kg-testkit's
//! `PrivateServer`: `cargo xtask server start` on a free port, so the
//! server holds exactly these 10,000 chunks; `KG_XTASK` names the xtask
//! binary); else, when `NEO4J_URI` is set (with `NEO4J_USER`,
//! `NEO4J_PASSWORD`, `NEO4J_DATABASE`), on that server, which may hold
//! other graphs beside the corpus (the line says how many chunks it
//! holds); the bench removes its document, chunks and entities afterwards.
//! `KG_BENCH_QUESTIONS=N` times every k-th question so that N are timed
//! (all by default).
//!
//! Prints one `kg-bench:` line per backend: p50/p95 per mode (every
//! question, three rounds on the embedded store, one over Bolt) and each
//! mode's p50 as a ratio to vector-only search measured in the same run;
//! then one `kg-bench:` line per mode with the mean time per call of each
//! store primitive the mode used (where a search's time goes); then
//! criterion's own measurement of each mode on the embedded store.
//!
//! `cargo bench -p kg-cli --bench retrieval_modes`

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use kg_cli::query::{EmbedderQuery, StoreRetriever};
use kg_core::{
    Chunk, ChunkId, Document, DocumentId, Embedding, EmbeddingTarget, Entity, EntityId,
    ExtractedEntity, ExtractedRelation, Extraction, Label, MediaType, Record, RelType,
};
use kg_query::{
    ChunkDoc, ChunkGraph, EntityHit, Mode, QueryError, Reach, Retriever, ScoredId, SearchOptions,
};
use kg_store::{
    AnyStore, BatchWriter, EmbeddedConfig, EmbeddedStore, GraphStore, Neo4jConfig, Neo4jStore,
    Scope, Secret, WriterConfig,
};
use kg_testkit::PrivateServer;

#[path = "../tests/support/bag_of_words.rs"]
mod bag_of_words;
use bag_of_words::BagOfWords;

/// The question and chunk embedder (questions go through kg-cli's
/// `EmbedderQuery`, as in `kg search`).
const BAG: BagOfWords = BagOfWords {
    dims: 384,
    model: "bench/bag-of-words",
};
const CHUNKS: usize = 10_000;
const ENTITIES: usize = 2_000;
const MODES: [Mode; 4] = [Mode::Vector, Mode::Fulltext, Mode::Hybrid, Mode::Graph];

fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// The evaluation's questions, and the words of its questions and
/// evidence.
fn questions_and_words() -> (Vec<String>, Vec<String>) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../eval/retrieval/questions.jsonl"
    );
    let body = std::fs::read_to_string(path).expect("eval/retrieval/questions.jsonl");
    let mut questions = Vec::new();
    let mut words = Vec::new();
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        let q: serde_json::Value = serde_json::from_str(line).expect("a question line");
        let question = q["question"].as_str().unwrap_or_default().to_owned();
        let mut text = question.clone();
        for span in q["evidence"].as_array().into_iter().flatten() {
            text.push(' ');
            text.push_str(span.as_str().unwrap_or_default());
        }
        words.extend(
            text.split(|c: char| !c.is_alphanumeric())
                .filter(|w| w.len() > 1)
                .map(str::to_owned),
        );
        questions.push(question);
    }
    words.sort();
    words.dedup();
    (questions, words)
}

/// Every k-th question, so that `KG_BENCH_QUESTIONS` of them are timed
/// (all when unset).
fn sampled(questions: Vec<String>) -> Vec<String> {
    let want = std::env::var("KG_BENCH_QUESTIONS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0 && n < questions.len());
    match want {
        Some(n) => {
            let step = questions.len() / n;
            questions.into_iter().step_by(step.max(1)).take(n).collect()
        }
        None => questions,
    }
}

/// The bench's document: the corpus is one document, so removing it
/// removes the corpus.
fn corpus_document() -> DocumentId {
    DocumentId::from_content_sha256(&kg_core::sha256_hex(b"retrieval-modes-bench"))
}

fn corpus(words: &[String]) -> Vec<Record> {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut vocabulary: Vec<String> = words.to_vec();
    vocabulary.extend((0..5_000).map(|i| format!("filler{i}")));
    // Zipf-like: word i with weight 1 / (i + 10), by inverse transform on
    // the cumulative weights.
    let mut cumulative = Vec::with_capacity(vocabulary.len());
    let mut total = 0.0f64;
    for i in 0..vocabulary.len() {
        total += 1.0 / (i as f64 + 10.0);
        cumulative.push(total);
    }
    // Shuffle so the questions' words are spread over the frequencies.
    for i in (1..vocabulary.len()).rev() {
        vocabulary.swap(i, rng(&mut seed) as usize % (i + 1));
    }
    let draw = |seed: &mut u64| -> &str {
        let x = (rng(seed) % 1_000_000) as f64 / 1_000_000.0 * total;
        let i = cumulative.partition_point(|&c| c < x);
        vocabulary.get(i).map_or("filler", String::as_str)
    };
    let sha = kg_core::sha256_hex(b"retrieval-modes-bench");
    let doc = corpus_document();
    let mut out = vec![Record::Document(Document {
        id: doc.clone(),
        source: "/bench/corpus.txt".into(),
        title: Some("Synthetic corpus".into()),
        sha256: sha,
        pages: None,
        media_type: MediaType::Text,
        bytes: 0,
    })];
    let label = Label::new("Concept").expect("a label");
    let entities: Vec<(EntityId, String)> = (0..ENTITIES)
        .map(|i| {
            let name = format!("{} {i}", draw(&mut seed));
            (EntityId::new(&label, &name), name)
        })
        .collect();
    let mut mentions: Vec<Vec<ChunkId>> = vec![Vec::new(); ENTITIES];
    for i in 0..CHUNKS {
        let text: String = (0..300)
            .map(|_| draw(&mut seed).to_owned())
            .collect::<Vec<_>>()
            .join(" ");
        let id = ChunkId::new(&doc, i as u32, &text);
        out.push(Record::Embedding(Embedding {
            id: id.to_string(),
            target: EmbeddingTarget::Chunk,
            vector: BAG.vector(&text),
            model: "bench/bag-of-words".into(),
        }));
        out.push(Record::Chunk(Chunk {
            id: id.clone(),
            document_id: doc.clone(),
            index: i as u32,
            tokens: 300,
            text,
            source: "/bench/corpus.txt".into(),
            page_start: None,
            page_end: None,
        }));
        let here: Vec<usize> = (0..3).map(|_| rng(&mut seed) as usize % ENTITIES).collect();
        for &e in &here {
            if let Some(m) = mentions.get_mut(e) {
                m.push(id.clone());
            }
        }
        let xent = |e: usize| ExtractedEntity {
            id: entities[e].0.clone(),
            name: entities[e].1.clone(),
            entity_type: label.clone(),
            description: String::new(),
        };
        out.push(Record::Extraction(Extraction {
            chunk_id: id,
            entities: here.iter().map(|&e| xent(e)).collect(),
            relations: here
                .windows(2)
                .map(|p| ExtractedRelation {
                    source: entities[p[0]].1.clone(),
                    target: entities[p[1]].1.clone(),
                    source_id: entities[p[0]].0.clone(),
                    target_id: entities[p[1]].0.clone(),
                    rel_type: RelType::new("RELATED_TO").expect("a type"),
                    description: String::new(),
                    strength: 0.5,
                })
                .collect(),
            model: "bench".into(),
        }));
    }
    for (e, (id, name)) in entities.iter().enumerate() {
        let mut chunks = mentions.get(e).cloned().unwrap_or_default();
        chunks.sort();
        chunks.dedup();
        let entity = Entity {
            id: id.clone(),
            name: name.clone(),
            entity_type: label.clone(),
            description: format!("{name}, a synthetic concept"),
            aliases: Vec::new(),
            chunk_ids: chunks,
            mention_descriptions: Default::default(),
        };
        out.push(Record::Embedding(Embedding {
            id: id.to_string(),
            target: EmbeddingTarget::Entity,
            vector: BAG.vector(&kg_embed::entity_text(&entity)),
            model: "bench/bag-of-words".into(),
        }));
        out.push(Record::Entity(entity));
    }
    out
}

fn percentiles(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let at = |p: f64| {
        v.get(((v.len() as f64 - 1.0) * p).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    (at(0.5), at(0.95))
}

fn options(mode: Mode) -> SearchOptions {
    SearchOptions {
        mode,
        k: 10,
        ..SearchOptions::default()
    }
}

/// Writes `records` into `store` and returns it.
async fn load(store: AnyStore, dir: &std::path::Path, records: Vec<Record>) -> AnyStore {
    let config = WriterConfig {
        dead_letter: dir.join("dead-letter.jsonl"),
        ..WriterConfig::default()
    };
    let writer = BatchWriter::open(store, config).await.expect("a writer");
    writer
        .write_records(records)
        .await
        .expect("the corpus")
        .check()
        .expect("every batch written");
    writer.into_sink()
}

/// A fresh ArcadeDB of the bench's own (kg-testkit's `PrivateServer`,
/// `cargo xtask server start` on a free port), so it holds exactly the
/// bench's corpus; and a store connected to it.
async fn private_bolt() -> (PrivateServer, AnyStore) {
    let server = PrivateServer::start().await.expect("a private Bolt server");
    let s = server.settings();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let mut config = Neo4jConfig::new(
            s.uri.clone(),
            s.user.clone(),
            Secret::new(s.password.clone()),
        );
        if let Some(database) = &s.database {
            config.database = database.clone();
        }
        match Neo4jStore::connect(config).await {
            Ok(store) => return (server, AnyStore::Neo4j(Box::new(store))),
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("private Bolt server on port {}: {e}", server.port()),
        }
    }
}

/// A retriever that times each store primitive it passes on, per name.
struct Timed<'a> {
    inner: StoreRetriever<'a>,
    spent: Mutex<BTreeMap<&'static str, (u32, Duration)>>,
}

impl<'a> Timed<'a> {
    fn new(store: &'a AnyStore) -> Self {
        Self {
            inner: StoreRetriever(store),
            spent: Mutex::new(BTreeMap::new()),
        }
    }

    async fn time<T>(&self, name: &'static str, f: impl std::future::Future<Output = T>) -> T {
        let t = Instant::now();
        let out = f.await;
        let took = t.elapsed();
        if let Ok(mut spent) = self.spent.lock() {
            let e = spent.entry(name).or_default();
            e.0 += 1;
            e.1 += took;
        }
        out
    }

    /// `name mean ms (calls)` per primitive since the last call, and
    /// starts again.
    fn take(&self) -> String {
        let Ok(mut spent) = self.spent.lock() else {
            return String::new();
        };
        let parts: Vec<String> = spent
            .iter()
            .map(|(name, (calls, total))| {
                format!(
                    "{name} {:.2} ms x{calls}",
                    total.as_secs_f64() * 1e3 / f64::from((*calls).max(1))
                )
            })
            .collect();
        spent.clear();
        parts.join(", ")
    }
}

impl Retriever for Timed<'_> {
    async fn fulltext(&self, text: &str, k: usize) -> Result<Vec<ScoredId>, QueryError> {
        self.time("fulltext", self.inner.fulltext(text, k)).await
    }
    async fn vector_chunks(&self, v: &[f32], k: usize) -> Result<Vec<ScoredId>, QueryError> {
        self.time("vector_chunks", self.inner.vector_chunks(v, k))
            .await
    }
    async fn vector_entities(&self, v: &[f32], k: usize) -> Result<Vec<EntityHit>, QueryError> {
        self.time("vector_entities", self.inner.vector_entities(v, k))
            .await
    }
    async fn entities_by_name(&self, text: &str, k: usize) -> Result<Vec<EntityHit>, QueryError> {
        self.time("entities_by_name", self.inner.entities_by_name(text, k))
            .await
    }
    async fn expand(
        &self,
        seeds: &[String],
        hops: u8,
        max_neighbours: usize,
        per_entity: usize,
    ) -> Result<Vec<Reach>, QueryError> {
        self.time(
            "expand",
            self.inner.expand(seeds, hops, max_neighbours, per_entity),
        )
        .await
    }
    async fn chunks(&self, ids: &[String]) -> Result<Vec<ChunkDoc>, QueryError> {
        self.time("chunks", self.inner.chunks(ids)).await
    }
    async fn chunk_graph(&self, ids: &[String]) -> Result<ChunkGraph, QueryError> {
        self.time("chunk_graph", self.inner.chunk_graph(ids)).await
    }
}

/// Times every question in every mode, interleaved so load on the machine
/// hits all modes alike, after a warm-up; prints one `kg-bench:` line.
fn measure(
    rt: &tokio::runtime::Runtime,
    store: &AnyStore,
    backend: &str,
    questions: &[String],
    rounds: usize,
) {
    let retriever = Timed::new(store);
    let embedder = EmbedderQuery(Arc::new(BAG));
    let search = |mode: Mode, q: &str| {
        rt.block_on(kg_query::search(&retriever, &embedder, q, &options(mode)))
            .expect("search")
    };
    for q in questions.iter().take(5) {
        for mode in MODES {
            search(mode, q);
        }
    }
    retriever.take();
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); MODES.len()];
    let mut hits = vec![0usize; MODES.len()];
    let mut spent: Vec<String> = vec![String::new(); MODES.len()];
    // Mode by mode for the breakdown, the modes interleaved per round.
    for _ in 0..rounds {
        for (m, mode) in MODES.iter().enumerate() {
            for q in questions {
                let t = Instant::now();
                let found = search(*mode, q);
                times[m].push(t.elapsed());
                hits[m] += found.hits.len();
            }
            spent[m] = retriever.take();
        }
    }
    let figures: Vec<(f64, f64)> = times.into_iter().map(percentiles).collect();
    let baseline = figures[0].0.max(1e-9);
    let parts: Vec<String> = MODES
        .iter()
        .zip(&figures)
        .zip(&hits)
        .map(|((mode, (p50, p95)), hits)| {
            format!(
                "{} p50 {p50:.2} ms p95 {p95:.2} ms ({:.2}x vector p50, {hits} hits)",
                mode.as_str(),
                p50 / baseline
            )
        })
        .collect();
    println!(
        "kg-bench: retrieval modes, {backend}, {CHUNKS} chunks, {ENTITIES} entities, {} questions x {rounds}, k 10: {}",
        questions.len(),
        parts.join("; ")
    );
    for (mode, spent) in MODES.iter().zip(&spent) {
        println!(
            "kg-bench: {backend}, {} mode, mean per call (last round): {spent}",
            mode.as_str()
        );
    }
}

/// A store on the server `NEO4J_URI` names, without the bench's corpus
/// (a run stopped half way leaves it behind).
async fn env_bolt() -> Option<AnyStore> {
    let config = Neo4jConfig::from_env()?;
    let store = Neo4jStore::connect(config)
        .await
        .expect("the server NEO4J_URI names");
    store
        .remove_document(&corpus_document())
        .await
        .expect("an earlier run's corpus removed");
    Some(AnyStore::Neo4j(Box::new(store)))
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let dir = tempfile::tempdir().expect("a temporary folder");
    let (questions, words) = questions_and_words();
    let records = corpus(&words);
    let questions = sampled(questions);
    let embedded = EmbeddedStore::open(&EmbeddedConfig {
        data_dir: dir.path().join("kg-data"),
    })
    .expect("the embedded store");
    let store = rt.block_on(load(
        AnyStore::Embedded(embedded),
        dir.path(),
        records.clone(),
    ));
    measure(&rt, &store, "embedded store", &questions, 3);
    let private = std::env::var_os("KG_BENCH_BOLT").is_some_and(|v| v == "1");
    let (server, bolt) = if private {
        let (server, bolt) = rt.block_on(private_bolt());
        (Some(server), Some(bolt))
    } else {
        (None, rt.block_on(env_bolt()))
    };
    if let Some(bolt) = bolt {
        let started = Instant::now();
        let bolt = rt.block_on(load(bolt, dir.path(), records));
        let held = rt
            .block_on(bolt.counts(&Scope::All))
            .map_or(0, |c| c.nodes.get("Chunk").copied().unwrap_or(0));
        println!(
            "kg-bench: retrieval modes, Bolt server: {CHUNKS} chunks written in {:.1} s; the server holds {held} chunks",
            started.elapsed().as_secs_f64()
        );
        let backend = if private {
            "Bolt server (private ArcadeDB)"
        } else {
            "Bolt server (NEO4J_URI)"
        };
        measure(&rt, &bolt, backend, &questions, 1);
        if !private {
            let started = Instant::now();
            rt.block_on(bolt.remove_document(&corpus_document()))
                .expect("the corpus removed");
            println!(
                "kg-bench: retrieval modes, Bolt server: corpus removed in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    drop(server);
    let retriever = StoreRetriever(&store);
    let embedder = EmbedderQuery(Arc::new(BAG));
    let mut group = c.benchmark_group("retrieval_modes_10k");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    for mode in MODES {
        let mut i = 0usize;
        group.bench_function(mode.as_str(), |b| {
            b.iter(|| {
                i = (i + 1) % questions.len().max(1);
                let q = questions.get(i).map_or("", String::as_str);
                rt.block_on(kg_query::search(&retriever, &embedder, q, &options(mode)))
                    .expect("search")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
