//! Retrieval latency of the store primitives kg-query calls, on synthetic
//! chunks (384-dimension unit vectors, ~300 words of text from a 5,000-word
//! vocabulary): the embedded store at 1,000 chunks (the baseline) and at
//! 10,000, and the Bolt server (NEO4J_URI) at 10,000. Prints `kg-bench:`
//! lines with p50/p95 over 100 queries and the ratio to the baseline, then
//! criterion's own measurement of the 10,000-chunk embedded vector scan.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use kg_core::{
    Chunk, ChunkId, Document, DocumentId, Embedding, EmbeddingTarget, MediaType, Record,
};
use kg_store::{BatchWriter, EmbeddedConfig, EmbeddedStore, GraphStore, WriterConfig};

const DIMS: usize = 384;

fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

fn unit(seed: &mut u64) -> Vec<f32> {
    let v: Vec<f32> = (0..DIMS)
        .map(|_| (rng(seed) % 2000) as f32 / 1000.0 - 1.0)
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

fn word(i: u64) -> String {
    format!("w{i}")
}

fn corpus(tag: &str, n: usize) -> Vec<Record> {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let sha = kg_core::sha256_hex(tag.as_bytes());
    let doc = DocumentId::from_content_sha256(&sha);
    let mut out = vec![Record::Document(Document {
        id: doc.clone(),
        source: format!("{tag}.txt"),
        title: None,
        sha256: sha,
        pages: None,
        media_type: MediaType::Text,
        bytes: 0,
    })];
    for i in 0..n {
        let text: String = (0..300)
            .map(|_| word(rng(&mut seed) % 5_000))
            .collect::<Vec<_>>()
            .join(" ");
        let id = ChunkId::new(&doc, i as u32, &text);
        out.push(Record::Chunk(Chunk {
            id: id.clone(),
            document_id: doc.clone(),
            index: i as u32,
            tokens: 300,
            text,
            source: format!("{tag}.txt"),
            page_start: None,
            page_end: None,
        }));
        out.push(Record::Embedding(Embedding {
            id: id.to_string(),
            target: EmbeddingTarget::Chunk,
            vector: unit(&mut seed),
            model: "bench".into(),
        }));
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

async fn timed<S: GraphStore>(store: &S) -> [(f64, f64); 2] {
    let mut seed = 42u64;
    let (mut vector, mut fulltext) = (Vec::new(), Vec::new());
    for _ in 0..100 {
        let q = unit(&mut seed);
        let t = Instant::now();
        store.vector_chunks(&q, 50).await.unwrap();
        vector.push(t.elapsed());
        let text = format!(
            "what about {} and {} or {}",
            word(rng(&mut seed) % 5_000),
            word(rng(&mut seed) % 5_000),
            word(rng(&mut seed) % 5_000)
        );
        let t = Instant::now();
        store.fulltext_chunks(&text, 50).await.unwrap();
        fulltext.push(t.elapsed());
    }
    [percentiles(vector), percentiles(fulltext)]
}

async fn embedded(dir: &std::path::Path, n: usize) -> EmbeddedStore {
    let store = EmbeddedStore::open(&EmbeddedConfig {
        data_dir: dir.join(n.to_string()),
    })
    .unwrap();
    let writer = BatchWriter::open(store, WriterConfig::default())
        .await
        .unwrap();
    writer.write_records(corpus("bench", n)).await.unwrap();
    writer.into_sink()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let small = rt.block_on(embedded(dir.path(), 1_000));
    let large = rt.block_on(embedded(dir.path(), 10_000));
    let base = rt.block_on(timed(&small));
    let big = rt.block_on(timed(&large));
    for (i, name) in ["vector", "fulltext"].iter().enumerate() {
        println!(
            "kg-bench: embedded {name}: 1k chunks p50 {:.2} ms p95 {:.2} ms; 10k chunks p50 {:.2} ms p95 {:.2} ms ({:.1}x the 1k p50)",
            base[i].0, base[i].1, big[i].0, big[i].1, big[i].0 / base[i].0.max(1e-9)
        );
    }
    if let Some(config) = kg_store::Neo4jConfig::from_env() {
        let store = rt.block_on(kg_store::Neo4jStore::connect(config)).unwrap();
        let tag = format!("bench{}", std::process::id());
        let writer = rt
            .block_on(BatchWriter::open(store, WriterConfig::default()))
            .unwrap();
        rt.block_on(writer.write_records(corpus(&tag, 10_000)))
            .unwrap();
        let bolt = rt.block_on(timed(writer.sink()));
        for (i, name) in ["vector", "fulltext"].iter().enumerate() {
            println!(
                "kg-bench: bolt {name} ({}): 10k+ chunks p50 {:.2} ms p95 {:.2} ms ({:.1}x embedded 10k p50)",
                if i == 0 { writer.sink().search_method() } else { writer.sink().fulltext_method() },
                bolt[i].0, bolt[i].1, bolt[i].0 / big[i].0.max(1e-9)
            );
        }
    }
    let mut seed = 7u64;
    let q = unit(&mut seed);
    c.bench_function("embedded_vector_chunks_10k", |b| {
        b.iter(|| rt.block_on(large.vector_chunks(&q, 50)).unwrap())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
