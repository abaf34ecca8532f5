//! The OpenAI-compatible path against kg-fake-llm: batching by count and
//! tokens, the persistent cache, dimension checks, retries, set-asides and
//! errors that stop a run.

use std::sync::Arc;
use std::time::Duration;

use futures::stream;
use kg_core::retry::RetryPolicy;
use kg_core::{Chunk, ChunkId, DocumentId, Record};
use kg_embed::openai::ApiKey;
use kg_embed::{
    embed_chunks, embed_query, EmbedCache, EmbedError, EmbedOptions, EmbedSummary, Embedder,
    OpenAiEmbedConfig, OpenAiEmbedder,
};
use kg_fake_llm::{FakeConfig, FakeLlm, Fault, FaultRates};
use tokio::sync::mpsc;

fn chunks(n: usize) -> Vec<Chunk> {
    let doc = DocumentId::from_content_sha256(&kg_core::sha256_hex(b"debian.md"));
    (0..n)
        .map(|i| {
            let text = format!(
                "Paragraph {i}: Debian {} was released after {} months of freezing; \
                 the release team thanked {} developers.",
                i % 13,
                i % 7 + 2,
                100 + i
            );
            Chunk {
                id: ChunkId::new(&doc, i as u32, &text),
                document_id: doc.clone(),
                index: i as u32,
                text,
                tokens: 0,
                source: "debian.md".into(),
                page_start: None,
                page_end: None,
            }
        })
        .collect()
}

fn config(base_url: String, batch: usize) -> OpenAiEmbedConfig {
    let mut c = OpenAiEmbedConfig::new(base_url, "text-embedding-3-small");
    c.batch_size = batch;
    c.concurrency = 3;
    c.timeout = Duration::from_secs(5);
    c.retry = RetryPolicy::new(3, Duration::from_millis(5), Duration::from_millis(20))
        .expect("retry policy");
    c
}

async fn run(
    embedder: &Arc<OpenAiEmbedder>,
    input: Vec<Chunk>,
    cache: Option<Arc<EmbedCache>>,
) -> (Result<EmbedSummary, EmbedError>, Vec<Record>) {
    let (tx, mut rx) = mpsc::channel(16);
    let options = EmbedOptions {
        cache,
        ..EmbedOptions::default()
    };
    let collect = async {
        let mut records = Vec::new();
        while let Some(r) = rx.recv().await {
            records.push(r);
        }
        records
    };
    tokio::join!(
        embed_chunks(Arc::clone(embedder), stream::iter(input), options, tx),
        collect
    )
}

fn embeddings(records: &[Record]) -> Vec<&kg_core::Embedding> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Embedding(e) => Some(e),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_requests_and_a_rerun_makes_none() {
    let server = FakeLlm::start(FakeConfig::default()).await.unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let input = chunks(100);

    let embedder = Arc::new(OpenAiEmbedder::new(config(server.base_url(), 16)).unwrap());
    assert_eq!(
        embedder.dimensions(),
        None,
        "unknown before the first answer"
    );
    let cache = Arc::new(EmbedCache::open(cache_dir.path()).unwrap());
    let (summary, records) = run(&embedder, input.clone(), Some(cache)).await;
    let summary = summary.expect("first run");
    // ceil(100 / 16) = 7 requests, not 100.
    assert_eq!(server.counters().embedding_requests, 7);
    assert_eq!(server.counters().embedded_inputs, 100);
    assert_eq!(
        (summary.embedded, summary.cached, summary.batches),
        (100, 0, 7)
    );
    assert_eq!(embedder.stats().requests, 7);
    assert_eq!(
        embedder.dimensions(),
        Some(64),
        "learned from the first answer"
    );
    assert_eq!(summary.dimensions, Some(64));
    let vectors = embeddings(&records);
    assert_eq!(vectors.len(), 100);
    let mut ids: Vec<&str> = vectors.iter().map(|e| e.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 100);
    assert!(vectors
        .iter()
        .all(|e| e.vector.len() == 64 && e.model == "text-embedding-3-small"));

    // Each vector is the one the server gives for that chunk's text alone.
    let probe = &input[42];
    let alone = embed_query(embedder.as_ref(), &probe.text).await.unwrap();
    let batched = vectors.iter().find(|e| e.id == probe.id.as_str()).unwrap();
    assert_eq!(alone, batched.vector);
    let requests_so_far = server.counters().embedding_requests;

    // Re-run with a fresh client and the cache reopened from disk: zero calls.
    let embedder = Arc::new(OpenAiEmbedder::new(config(server.base_url(), 16)).unwrap());
    let cache = Arc::new(EmbedCache::open(cache_dir.path()).unwrap());
    let (summary, records) = run(&embedder, input, Some(cache)).await;
    let summary = summary.expect("second run");
    assert_eq!(server.counters().embedding_requests, requests_so_far);
    assert_eq!(
        (summary.embedded, summary.cached, summary.batches),
        (0, 100, 0)
    );
    assert_eq!(embeddings(&records).len(), 100);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_budget_splits_requests() {
    let server = FakeLlm::start(FakeConfig::default()).await.unwrap();
    let input = chunks(30);
    let mut cfg = config(server.base_url(), 100);
    let probe = OpenAiEmbedder::new(cfg.clone()).unwrap();
    let costs: Vec<usize> = input.iter().map(|c| probe.count_tokens(&c.text)).collect();
    let largest = *costs.iter().max().unwrap();
    assert!(largest > 10, "cl100k counts real tokens: {costs:?}");
    // Room for three of the largest chunks per request.
    cfg.max_tokens_per_request = largest * 3;
    let budget = cfg.max_tokens_per_request;
    // The same greedy packing the driver does, for the expected count.
    let (mut expected, mut used) = (0, 0);
    for &c in &costs {
        if expected == 0 || used + c > budget {
            expected += 1;
            used = 0;
        }
        used += c;
    }
    assert!(
        expected >= 10,
        "the budget, not the count, must decide: {expected}"
    );

    let embedder = Arc::new(OpenAiEmbedder::new(cfg).unwrap());
    let (summary, records) = run(&embedder, input, None).await;
    let summary = summary.expect("run");
    assert_eq!(server.counters().embedding_requests, expected as u64);
    assert_eq!(summary.batches, expected as u64);
    assert_eq!(embeddings(&records).len(), 30);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dimension_change_mid_run_stops_the_run() {
    let server = FakeLlm::start(FakeConfig {
        embedding_dim_switch: Some((2, 32)),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let mut cfg = config(server.base_url(), 10);
    cfg.concurrency = 1;
    let embedder = Arc::new(OpenAiEmbedder::new(cfg).unwrap());
    let (result, records) = run(&embedder, chunks(60), None).await;
    match result {
        Err(e @ EmbedError::DimensionMismatch { .. }) => {
            let EmbedError::DimensionMismatch {
                expected, actual, ..
            } = &e
            else {
                unreachable!()
            };
            assert_eq!((*expected, *actual), (64, 32));
            assert!(e.to_string().contains("request 3"), "{e}");
        }
        other => panic!("expected a dimension mismatch, got {other:?}"),
    }
    // What was written before is consistent: the two good batches only.
    let written = embeddings(&records);
    assert_eq!(written.len(), 20);
    assert!(written.iter().all(|e| e.vector.len() == 64));
    assert!(
        server.counters().embedding_requests < 6,
        "the run stopped early"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_retried_after_retry_after() {
    let server = FakeLlm::start(FakeConfig {
        fail_first_attempts: 1,
        forced_fault: Fault::RateLimited,
        retry_after: Duration::from_millis(30),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let embedder = Arc::new(OpenAiEmbedder::new(config(server.base_url(), 8)).unwrap());
    let started = std::time::Instant::now();
    let (summary, records) = run(&embedder, chunks(24), None).await;
    let summary = summary.expect("retries succeed");
    assert_eq!((summary.embedded, summary.set_aside), (24, 0));
    assert_eq!(embeddings(&records).len(), 24);
    // Each of the 3 batches: a 429, then a success.
    let counters = server.counters();
    assert_eq!(counters.by_status.get(&429), Some(&3));
    assert_eq!(counters.by_status.get(&200), Some(&3));
    assert_eq!(embedder.stats().retries, 3);
    assert!(
        started.elapsed() >= Duration::from_millis(30),
        "Retry-After was honoured"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_batches_are_set_aside_and_the_run_goes_on() {
    let server = FakeLlm::start(FakeConfig {
        faults: FaultRates {
            server_error: 1.0,
            ..FaultRates::default()
        },
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let embedder = Arc::new(OpenAiEmbedder::new(config(server.base_url(), 10)).unwrap());
    let mut input = chunks(25);
    input[3].text = "   ".into();
    let (summary, records) = run(&embedder, input.clone(), None).await;
    let summary = summary.expect("set-asides do not fail the run");
    assert_eq!(
        (summary.embedded, summary.set_aside, summary.failed_batches),
        (0, 25, 3)
    );
    assert_eq!(records.len(), 25, "every item ends as one record");
    // 3 batches of the 24 non-empty texts, 3 attempts each.
    assert_eq!(server.counters().embedding_requests, 9);
    for r in &records {
        let Record::SetAside(s) = r else {
            panic!("expected a set-aside, got {r:?}")
        };
        assert_eq!(s.stage, kg_core::Stage::Embed);
        if s.item == input[3].id.as_str() {
            assert_eq!(s.reason.code(), "empty_text");
        } else {
            assert_eq!(s.reason.code(), "embed_server_error");
            assert!(s.detail.contains("HTTP 500"), "{}", s.detail);
        }
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_key_stops_the_run_without_leaking_it() {
    let server = FakeLlm::start(FakeConfig {
        api_key: Some("right-key".into()),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let mut cfg = config(server.base_url(), 10);
    cfg.api_key = Some(ApiKey::new("sk-wrong-secret-123"));
    cfg.concurrency = 4;
    assert!(!format!("{cfg:?}").contains("sk-wrong-secret-123"));
    let embedder = Arc::new(OpenAiEmbedder::new(cfg).unwrap());
    let (result, records) = run(&embedder, chunks(50), None).await;
    match result {
        Err(e @ EmbedError::Http { status: 401, .. }) => {
            assert!(e.is_fatal());
            let shown = e.to_string();
            assert!(shown.contains(&server.base_url()), "names the URL: {shown}");
            assert!(!shown.contains("sk-wrong-secret-123"), "{shown}");
        }
        other => panic!("expected HTTP 401, got {other:?}"),
    }
    assert!(records.is_empty());
    // Not retried, and with 4 workers still at most one more request than
    // the first (slow start sends one until the server has answered).
    let sent = server.counters().embedding_requests;
    assert!(sent <= 2, "{sent} requests");
    assert_eq!(embedder.stats().requests, sent);

    // With the right key the same server answers.
    let mut cfg = config(server.base_url(), 10);
    cfg.api_key = Some(ApiKey::new("right-key"));
    let embedder = Arc::new(OpenAiEmbedder::new(cfg).unwrap());
    let v = embed_query(embedder.as_ref(), "Who founded Debian?")
        .await
        .unwrap();
    assert_eq!(v.len(), 64);
    server.shutdown().await;
}

#[tokio::test]
async fn bad_configuration_is_refused_up_front() {
    let mut cfg = OpenAiEmbedConfig::new("localhost:8080/v1", "m");
    assert!(matches!(
        OpenAiEmbedder::new(cfg.clone()),
        Err(EmbedError::Config(_))
    ));
    cfg.base_url = "http://127.0.0.1:9/v1".into();
    cfg.batch_size = 0;
    assert!(matches!(
        OpenAiEmbedder::new(cfg.clone()),
        Err(EmbedError::Config(_))
    ));
    cfg.batch_size = 1;
    cfg.retry = RetryPolicy::new(2, Duration::from_millis(1), Duration::from_millis(2)).unwrap();
    let embedder = OpenAiEmbedder::new(cfg).unwrap();
    assert_eq!(embedder.url(), "http://127.0.0.1:9/v1/embeddings");
    // Nobody listens on port 9: a transport error naming the endpoint.
    let err = embed_query(&embedder, "x").await.unwrap_err();
    assert!(matches!(err, EmbedError::Transport { .. }), "{err:?}");
    assert!(err.to_string().contains("127.0.0.1:9"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_finishes_batches_in_flight_and_reports_what_was_done() {
    let server = FakeLlm::start(FakeConfig {
        latency: Duration::from_millis(100),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let mut cfg = config(server.base_url(), 5);
    cfg.concurrency = 2;
    let embedder = Arc::new(OpenAiEmbedder::new(cfg).unwrap());
    let cancel = tokio_util::sync::CancellationToken::new();
    let options = EmbedOptions {
        cancel: cancel.clone(),
        ..EmbedOptions::default()
    };
    let (tx, mut rx) = mpsc::channel(4);
    let collect = async {
        let mut records = Vec::new();
        while let Some(r) = rx.recv().await {
            records.push(r);
            if records.len() == 5 {
                cancel.cancel(); // Ctrl-C after the first batch came back
            }
        }
        records
    };
    let (result, records) = tokio::join!(
        embed_chunks(
            Arc::clone(&embedder),
            stream::iter(chunks(200)),
            options,
            tx
        ),
        collect
    );
    match result {
        Err(EmbedError::Cancelled { done }) => {
            assert_eq!(
                done,
                records.len() as u64,
                "every finished item was emitted"
            );
            // Batches are whole: what was started was finished.
            assert_eq!(done % 5, 0);
            assert!((5..=20).contains(&done), "done {done}");
        }
        other => panic!("expected Cancelled, got {other:?}"),
    }
    assert!(embeddings(&records).len() == records.len());
    assert!(server.counters().embedding_requests <= 4);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_stops_the_run_quickly() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener); // nobody listens there any more
    let mut cfg = OpenAiEmbedConfig::new(format!("http://{addr}/v1"), "text-embedding-3-small");
    cfg.api_key = Some(ApiKey::new("sk-dead-secret"));
    cfg.batch_size = 10;
    cfg.concurrency = 4;
    // Default retries and breaker, as a user gets them.
    let embedder = Arc::new(OpenAiEmbedder::new(cfg).unwrap());
    let (result, records) =
        tokio::time::timeout(Duration::from_secs(60), run(&embedder, chunks(200), None))
            .await
            .expect("hang guard: the run must stop on its own");
    match result {
        Err(e @ EmbedError::EndpointUnreachable { .. }) => {
            assert!(e.is_fatal());
            assert_eq!(e.reason_code(), "embed_endpoint_unreachable");
            let shown = e.to_string();
            assert!(
                shown.contains(&format!("http://{addr}/v1/embeddings")),
                "{shown}"
            );
            assert!(!shown.contains("sk-dead-secret"), "{shown}");
        }
        other => panic!("expected EndpointUnreachable, got {other:?}"),
    }
    assert!(records.is_empty());
    let stats = embedder.stats();
    assert_eq!(stats.requests, 0, "nothing reached a server");
    assert!(
        (1..=3).contains(&stats.connection_failures),
        "a few attempts, not 20 batches × 6: {stats:?}"
    );
}

#[tokio::test]
async fn a_cancelled_embedder_sends_nothing_and_sets_aside_as_cancelled() {
    let server = FakeLlm::start(FakeConfig::default()).await.unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    cancel.cancel();
    let embedder = OpenAiEmbedder::new(config(server.base_url(), 10))
        .unwrap()
        .with_cancel(cancel);
    let err = embed_query(&embedder, "Who founded Debian?")
        .await
        .unwrap_err();
    assert!(
        matches!(err, EmbedError::NotSent { request: 1, .. }),
        "{err:?}"
    );
    assert!(!err.is_fatal());
    assert_eq!(err.set_aside_reason(), kg_core::SetAsideReason::Cancelled);
    assert_eq!(server.counters().embedding_requests, 0);
}
