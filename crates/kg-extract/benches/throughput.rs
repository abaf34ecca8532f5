//! Extraction throughput against a fake server with 200 ms latency.
//!
//! With latency L and concurrency c, no client can beat c / L chunks per
//! second; this bench measures how close kg-extract gets, for c = 5, 20, 50,
//! and prints the ratio measured / limit as `kg-bench:` lines (the goal is
//! at least 0.95). Each configuration extracts 20 × c chunks (20 rounds of 200 ms,
//! about 4 s) after a warm-up round that opens the connections; the limit
//! is the baseline, computed from the same run's settings.

use std::time::{Duration, Instant};

use kg_core::{Chunk, ChunkId, DocumentId};
use kg_extract::{ExtractConfig, Extractor, LlmEndpoint};
use kg_fake_llm::{FakeConfig, FakeLlm};
use tokio_util::sync::CancellationToken;

const LATENCY: Duration = Duration::from_millis(200);
const ROUNDS: usize = 20;

fn chunks(n: usize, salt: &str) -> Vec<Chunk> {
    let doc = DocumentId::from_content_sha256(&kg_core::sha256_hex(salt.as_bytes()));
    (0..n)
        .map(|i| {
            let text = format!(
                "Ian Murdock founded Debian in {}. Linus Torvalds wrote Linux in Helsinki ({salt} {i}).",
                1990 + i % 10
            );
            Chunk {
                id: ChunkId::new(&doc, i as u32, &text),
                document_id: doc.clone(),
                index: i as u32,
                tokens: 20,
                text,
                source: "bench.md".into(),
                page_start: None,
                page_end: None,
            }
        })
        .collect()
}

async fn extract(extractor: &Extractor, input: Vec<Chunk>) -> u64 {
    let (tx, mut rx) = tokio::sync::mpsc::channel(256);
    let drain = async {
        let mut n = 0u64;
        while rx.recv().await.is_some() {
            n += 1;
        }
        n
    };
    let (summary, n) = tokio::join!(
        extractor.run(futures::stream::iter(input), tx, CancellationToken::new()),
        drain
    );
    match summary {
        Ok(s) if s.extracted == n => n,
        other => panic!("bench run failed: {other:?}"),
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let server = FakeLlm::start(FakeConfig {
            latency: LATENCY,
            ..FakeConfig::default()
        })
        .await
        .expect("fake server");
        for c in [5usize, 20, 50] {
            let mut config = ExtractConfig::new(LlmEndpoint::new(server.base_url(), "bench-model"));
            config.concurrency = c;
            let extractor = Extractor::new(config).expect("extractor");
            extract(&extractor, chunks(c, &format!("warm-up {c}"))).await;
            let n = c * ROUNDS;
            let start = Instant::now();
            let done = extract(&extractor, chunks(n, &format!("bench {c}"))).await;
            let secs = start.elapsed().as_secs_f64();
            let measured = done as f64 / secs;
            let limit = c as f64 / LATENCY.as_secs_f64();
            println!(
                "kg-bench: extract concurrency={c} latency_ms=200 chunks={done} measured={measured:.1}/s limit={limit:.1}/s ratio={:.3}",
                measured / limit
            );
        }
        server.shutdown().await;
    });
}
