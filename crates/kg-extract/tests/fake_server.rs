//! Extraction against the fake OpenAI-compatible server, under faults.

use std::collections::BTreeSet;
use std::time::Duration;

use kg_core::{Chunk, ChunkId, DocumentId, Record};
use kg_extract::{
    AnswerFormat, ExtractConfig, ExtractError, ExtractSchema, ExtractSummary, Extractor,
    LlmEndpoint, Resolver, RetryPolicy,
};
use kg_fake_llm::{FakeConfig, FakeLlm, FakeLlmHandle, Fault, FaultRates};
use tokio_util::sync::CancellationToken;

const SENTENCES: &[&str] = &[
    "Ian Murdock founded the Debian Project in 1993 while studying at Purdue University.",
    "Linus Torvalds released the Linux kernel from Helsinki, and Richard Stallman started GNU in Boston.",
    "Canonical Ltd builds Ubuntu on top of Debian, with Mark Shuttleworth as its founder.",
    "Red Hat sells support for Fedora and works with IBM in Raleigh.",
    "The Apache Software Foundation hosts Apache Kafka, first written at LinkedIn by Jay Kreps.",
    "Guido van Rossum created Python at CWI in Amsterdam.",
    "Mozilla ships Firefox, and Brendan Eich designed JavaScript at Netscape.",
];

fn chunks(n: usize) -> Vec<Chunk> {
    let doc = DocumentId::from_content_sha256(&kg_core::sha256_hex(b"history of free software"));
    (0..n)
        .map(|i| {
            let text = format!(
                "{} {} (Part {i}.)",
                SENTENCES[i % SENTENCES.len()],
                SENTENCES[(i * 3 + 1) % SENTENCES.len()]
            );
            Chunk {
                id: ChunkId::new(&doc, i as u32, &text),
                document_id: doc.clone(),
                index: i as u32,
                tokens: text.split_whitespace().count() as u32,
                text,
                source: "history.md".into(),
                page_start: None,
                page_end: None,
            }
        })
        .collect()
}

fn config(server: &FakeLlmHandle) -> ExtractConfig {
    let mut endpoint = LlmEndpoint::new(server.base_url(), "gpt-4o-mini");
    endpoint.api_key = Some(kg_core::Secret::new("sk-test"));
    endpoint.request_timeout = Duration::from_millis(500);
    let mut config = ExtractConfig::new(endpoint);
    config.concurrency = 8;
    config.retry =
        RetryPolicy::new(10, Duration::from_millis(2), Duration::from_millis(20)).unwrap();
    config
}

async fn run(
    extractor: &Extractor,
    input: Vec<Chunk>,
) -> (Result<ExtractSummary, ExtractError>, Vec<Record>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let collect = async {
        let mut records = Vec::new();
        while let Some(r) = rx.recv().await {
            records.push(r);
        }
        records
    };
    let (summary, records) = tokio::join!(
        extractor.run(futures::stream::iter(input), tx, CancellationToken::new()),
        collect
    );
    (summary, records)
}

/// Every input chunk appears exactly once in the output.
fn assert_every_chunk_accounted(input: &[Chunk], records: &[Record]) {
    let want: BTreeSet<String> = input.iter().map(|c| c.id.to_string()).collect();
    let mut got = Vec::new();
    for r in records {
        match r {
            Record::Extraction(x) => got.push(x.chunk_id.to_string()),
            Record::SetAside(s) => got.push(s.item.clone()),
            other => panic!("unexpected record {other:?}"),
        }
    }
    assert_eq!(got.len(), input.len(), "one record per chunk");
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extracts_every_chunk_and_resolves_entities() {
    let server = FakeLlm::start(FakeConfig::default()).await.unwrap();
    let input = chunks(21);
    let extractor = Extractor::new(config(&server)).unwrap();
    let (summary, records) = run(&extractor, input.clone()).await;
    let summary = summary.unwrap();
    assert_every_chunk_accounted(&input, &records);
    assert_eq!(
        (summary.chunks, summary.extracted, summary.set_aside),
        (21, 21, 0)
    );
    assert_eq!(summary.llm_calls, 21);
    assert_eq!(server.counters().chat_requests, 21);
    assert!(summary.prompt_tokens > 0 && summary.completion_tokens > 0);
    assert!(summary.cost_usd.is_some_and(|c| c > 0.0));
    let mut resolver = Resolver::new();
    for r in &records {
        if let Record::Extraction(x) = r {
            assert!(!x.entities.is_empty());
            resolver.add(x);
        }
    }
    let (entities, relations) = resolver.finish();
    let debian: Vec<_> = entities.iter().filter(|e| e.name == "Debian").collect();
    assert_eq!(debian.len(), 1, "one Debian across all chunks");
    assert!(debian[0].chunk_ids.len() > 1);
    assert!(
        entities.len() < summary.entities as usize,
        "mentions merged"
    );
    assert!(!relations.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_chunk_ends_extracted_or_reported_under_each_fault() {
    let faults = [
        FaultRates {
            server_error: 0.4,
            ..FaultRates::default()
        },
        FaultRates {
            rate_limited: 0.4,
            ..FaultRates::default()
        },
        FaultRates {
            timeout: 0.3,
            ..FaultRates::default()
        },
        FaultRates {
            dropped_connection: 0.4,
            ..FaultRates::default()
        },
        FaultRates {
            non_json: 0.4,
            ..FaultRates::default()
        },
        FaultRates {
            off_schema: 0.4,
            ..FaultRates::default()
        },
        FaultRates {
            truncated: 0.4,
            ..FaultRates::default()
        },
        FaultRates {
            server_error: 0.1,
            rate_limited: 0.1,
            timeout: 0.05,
            dropped_connection: 0.1,
            non_json: 0.1,
            off_schema: 0.1,
            truncated: 0.1,
            endless_json: 0.05,
        },
    ];
    for rates in faults {
        let server = FakeLlm::start(FakeConfig {
            faults: rates,
            retry_after: Duration::from_millis(5),
            hang: Duration::from_secs(5),
            ..FakeConfig::default()
        })
        .await
        .unwrap();
        let input = chunks(30);
        let extractor = Extractor::new(config(&server)).unwrap();
        let (summary, records) = run(&extractor, input.clone()).await;
        let summary = summary.unwrap();
        assert_every_chunk_accounted(&input, &records);
        // 10 attempts at <= 40% failure: everything gets through.
        assert_eq!(summary.extracted, 30, "{rates:?}: {summary:?}");
        assert!(
            summary.retries + summary.repaired_answers > 0,
            "{rates:?}: faults were injected and retried (or, cut answers, repaired)"
        );
        if rates.truncated == 0.4 {
            assert!(summary.repaired_answers > 0, "{summary:?}");
        }
        let c = server.counters();
        assert_eq!(c.chat_requests, summary.llm_calls, "{rates:?}");
        assert!(!c.faults.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_failures_are_set_aside_with_a_reason() {
    for (rates, reason) in [
        (
            FaultRates {
                server_error: 1.0,
                ..FaultRates::default()
            },
            "server_error",
        ),
        (
            FaultRates {
                non_json: 1.0,
                ..FaultRates::default()
            },
            "unparsable_answer",
        ),
        (
            FaultRates {
                off_schema: 1.0,
                ..FaultRates::default()
            },
            "off_schema_answer",
        ),
    ] {
        let server = FakeLlm::start(FakeConfig {
            faults: rates,
            ..FakeConfig::default()
        })
        .await
        .unwrap();
        let input = chunks(5);
        let mut cfg = config(&server);
        cfg.retry =
            RetryPolicy::new(3, Duration::from_millis(1), Duration::from_millis(5)).unwrap();
        let extractor = Extractor::new(cfg).unwrap();
        let (summary, records) = run(&extractor, input.clone()).await;
        let summary = summary.unwrap();
        assert_every_chunk_accounted(&input, &records);
        assert_eq!((summary.extracted, summary.set_aside), (0, 5));
        assert_eq!(server.counters().chat_requests, 15, "3 attempts each");
        for r in &records {
            let Record::SetAside(s) = r else {
                panic!("expected set-aside, got {r:?}")
            };
            assert_eq!(s.reason.code(), reason);
            assert_eq!(s.stage, kg_core::Stage::Extract);
            assert!(
                s.detail.contains("history.md") && s.detail.contains("3 attempt"),
                "{}",
                s.detail
            );
        }
    }
}

#[tokio::test]
async fn rate_limited_calls_wait_for_retry_after() {
    let server = FakeLlm::start(FakeConfig {
        fail_first_attempts: 1,
        forced_fault: Fault::RateLimited,
        retry_after: Duration::from_millis(300),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let extractor = Extractor::new(config(&server)).unwrap();
    let start = tokio::time::Instant::now();
    let (summary, records) = run(&extractor, chunks(1)).await;
    let summary = summary.unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "waited {:?}",
        start.elapsed()
    );
    assert!(matches!(records.as_slice(), [Record::Extraction(_)]));
    assert_eq!(
        (summary.rate_limited, summary.retries, summary.llm_calls),
        (1, 1, 2)
    );
    let c = server.counters();
    assert_eq!(
        (c.by_status.get(&429), c.by_status.get(&200)),
        (Some(&1), Some(&1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_stops_the_run_at_the_first_call() {
    let server = FakeLlm::start(FakeConfig {
        api_key: Some("sk-right".into()),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let mut cfg = config(&server);
    cfg.endpoint.api_key = Some(kg_core::Secret::new("sk-wrong-and-secret"));
    cfg.concurrency = 1;
    let extractor = Extractor::new(cfg).unwrap();
    let (result, _records) = run(&extractor, chunks(200)).await;
    let err = result.unwrap_err();
    assert!(
        matches!(err, ExtractError::Unauthorized { status: 401, .. }),
        "{err}"
    );
    assert!(
        !err.to_string().contains("sk-wrong-and-secret"),
        "the key never shows: {err}"
    );
    assert_eq!(
        (
            server.counters().models_requests,
            server.counters().chat_requests
        ),
        (1, 0),
        "stopped at the first request (the key probe), no paid call"
    );

    // With 8 workers too: slow start sends one request until the endpoint
    // has answered, and the 401 is latched for the others (at most 2 allowed).
    let mut cfg = config(&server);
    cfg.endpoint.api_key = Some(kg_core::Secret::new("sk-wrong"));
    cfg.concurrency = 8;
    let before = server.counters().chat_requests;
    let extractor = Extractor::new(cfg).unwrap();
    let (result, records) = run(&extractor, chunks(200)).await;
    assert!(matches!(result, Err(ExtractError::Unauthorized { .. })));
    let sent = server.counters().chat_requests - before;
    assert_eq!(sent, 0, "the key probe's 401 is latched");
    assert_eq!(server.counters().models_requests, 2);
    assert_eq!(extractor.progress().snapshot().llm_calls, 0);
    assert!(records.iter().all(|r| matches!(r,
        Record::SetAside(s) if s.reason == kg_core::SetAsideReason::Cancelled)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_model_or_url_is_fatal_too() {
    let server = FakeLlm::start(FakeConfig::default()).await.unwrap();
    let mut cfg = config(&server);
    cfg.endpoint.base_url = format!("http://{}/nope", server.addr());
    let (result, _) = run(&Extractor::new(cfg).unwrap(), chunks(50)).await;
    assert!(
        matches!(result, Err(ExtractError::NotFound { .. })),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_type_names_never_reach_an_identifier() {
    let server = FakeLlm::start(FakeConfig {
        hostile_types: 1.0,
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let input = chunks(14);
    let extractor = Extractor::new(config(&server)).unwrap();
    let (summary, records) = run(&extractor, input.clone()).await;
    let summary = summary.unwrap();
    assert_every_chunk_accounted(&input, &records);
    assert_eq!(summary.extracted, 14);
    assert_eq!(server.counters().hostile_answers, 14);
    assert!(summary.rejected_entities >= 14, "{summary:?}");
    let mut resolver = Resolver::new();
    for r in &records {
        let Record::Extraction(x) = r else {
            panic!("{r:?}")
        };
        for e in &x.entities {
            let t = e.entity_type.as_str();
            assert!(
                t.bytes().all(|b| b.is_ascii_alphanumeric())
                    && t.as_bytes()[0].is_ascii_uppercase(),
                "{t:?}"
            );
            assert_ne!(
                e.name, "Mallory",
                "the entity with a hostile type is rejected"
            );
        }
        for rel in &x.relations {
            assert!(rel
                .rel_type
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'));
        }
        resolver.add(x);
    }
    let line = serde_json::to_string(&resolver.finish()).unwrap();
    for bad in ["`", "})", "DETACH", "DROP"] {
        assert!(!line.contains(bad), "{bad} leaked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_with_the_cache_makes_zero_calls() {
    let server = FakeLlm::start(FakeConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = chunks(12);
    let mut cfg = config(&server);
    cfg.cache_dir = Some(dir.path().to_path_buf());
    let first = Extractor::new(cfg.clone()).unwrap();
    let estimate_before = first.estimate(&input).unwrap();
    assert_eq!((estimate_before.chunks, estimate_before.cached), (12, 0));
    assert!(
        estimate_before.prompt_tokens > 12 * 100,
        "system prompt and text counted"
    );
    assert!(estimate_before.cost_usd.is_some_and(|c| c > 0.0));
    // The upper bound: every answer at its cap (512 for chunks this short).
    assert_eq!(estimate_before.completion_tokens_max, 12 * 512);
    assert!(estimate_before.completion_tokens < estimate_before.completion_tokens_max);
    assert!(estimate_before.cost_usd_max > estimate_before.cost_usd);
    assert_eq!(
        server.counters().chat_requests,
        0,
        "estimating calls nothing"
    );
    let (s1, r1) = run(&first, input.clone()).await;
    assert_eq!(s1.unwrap().llm_calls, 12);
    drop(first);
    let calls = server.counters().chat_requests;

    let second = Extractor::new(cfg.clone()).unwrap();
    let estimate_after = second.estimate(&input).unwrap();
    assert_eq!(
        (
            estimate_after.cached,
            estimate_after.prompt_tokens,
            estimate_after.completion_tokens_max
        ),
        (12, 0, 0)
    );
    let (s2, r2) = run(&second, input.clone()).await;
    let s2 = s2.unwrap();
    assert_eq!(
        server.counters().chat_requests,
        calls,
        "zero calls on the re-run"
    );
    assert_eq!((s2.llm_calls, s2.cache_hits, s2.extracted), (0, 12, 12));
    let sorted = |mut r: Vec<Record>| {
        r.sort_by_key(|x| match x {
            Record::Extraction(x) => x.chunk_id.to_string(),
            _ => String::new(),
        });
        r
    };
    assert_eq!(sorted(r1), sorted(r2), "the same extractions");

    // A different model is a different key.
    cfg.endpoint.model = "gpt-4o".into();
    let (s3, _) = run(&Extractor::new(cfg).unwrap(), input).await;
    assert_eq!(s3.unwrap().llm_calls, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_without_json_schema_or_usage_still_work() {
    let server = FakeLlm::start(FakeConfig {
        reject_json_schema: true,
        omit_usage: true,
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let input = chunks(10);
    let mut cfg = config(&server);
    cfg.concurrency = 1;
    let extractor = Extractor::new(cfg).unwrap();
    let (summary, records) = run(&extractor, input.clone()).await;
    let summary = summary.unwrap();
    assert_every_chunk_accounted(&input, &records);
    assert_eq!(summary.extracted, 10);
    assert_eq!(
        summary.llm_calls, 11,
        "one rejected json_schema call, then JSON mode"
    );
    assert_eq!(server.counters().by_status.get(&400), Some(&1));
    assert_eq!(summary.usage_missing, 10);
    assert!(summary.prompt_tokens > 0, "estimated when usage is missing");

    // A strict schema's enums reach the server and shape the answer.
    let mut cfg = config(&server);
    cfg.answer_format = AnswerFormat::JsonSchema;
    cfg.schema =
        ExtractSchema::new(&["Person", "Organization"], &["RELATED_TO"], &[], true).unwrap();
    let (result, records) = run(&Extractor::new(cfg).unwrap(), chunks(2)).await;
    assert_eq!(
        result.unwrap().set_aside,
        2,
        "forced json_schema on a server without it: set aside"
    );
    assert!(records.iter().all(
        |r| matches!(r, Record::SetAside(s) if s.reason == kg_core::SetAsideReason::BadRequest)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_hands_back_unstarted_chunks() {
    let server = FakeLlm::start(FakeConfig {
        latency: Duration::from_millis(100),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let input = chunks(40);
    let mut cfg = config(&server);
    cfg.concurrency = 2;
    let extractor = Extractor::new(cfg).unwrap();
    let cancel = CancellationToken::new();
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(250)).await;
        trigger.cancel();
    });
    let collect = async {
        let mut records = Vec::new();
        while let Some(r) = rx.recv().await {
            records.push(r);
        }
        records
    };
    let (summary, records) = tokio::join!(
        extractor.run(futures::stream::iter(input.clone()), tx, cancel),
        collect
    );
    let summary = summary.unwrap();
    let extracted = records
        .iter()
        .filter(|r| matches!(r, Record::Extraction(_)))
        .count() as u64;
    assert!(
        (2..40).contains(&extracted),
        "some done, not all: {extracted}"
    );
    assert!(records.iter().all(|r| match r {
        Record::SetAside(s) => s.reason == kg_core::SetAsideReason::Cancelled,
        _ => true,
    }));
    assert_eq!(summary.extracted, extracted);
    assert_eq!(summary.set_aside, summary.cancelled);
    // Chunks the stream never yielded are not reported; every chunk read is.
    assert_eq!(records.len() as u64, summary.chunks);
    assert_eq!(server.counters().chat_requests, summary.llm_calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_lower_the_adaptive_concurrency() {
    let server = FakeLlm::start(FakeConfig {
        fail_first_attempts: 1,
        forced_fault: Fault::RateLimited,
        retry_after: Duration::from_millis(5),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let input = chunks(8);
    let extractor = Extractor::new(config(&server)).unwrap();
    let (summary, records) = run(&extractor, input.clone()).await;
    let summary = summary.unwrap();
    assert_every_chunk_accounted(&input, &records);
    assert_eq!((summary.extracted, summary.rate_limited), (8, 8));
    assert!(
        summary.final_concurrency < 8,
        "429s halved the limit and 8 successes cannot restore it: {}",
        summary.final_concurrency
    );
}

/// A port nobody listens on: bound, then released.
fn closed_port() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_stops_the_run_quickly() {
    let addr = closed_port();
    let mut endpoint = LlmEndpoint::new(format!("http://{addr}/v1"), "gpt-4o-mini");
    endpoint.api_key = Some(kg_core::Secret::new("sk-dead-secret"));
    let mut cfg = ExtractConfig::new(endpoint);
    cfg.concurrency = 8;
    // Default retry policy and breaker: what a user gets.
    let extractor = Extractor::new(cfg).unwrap();
    let input = chunks(500);
    let (result, records) = tokio::time::timeout(Duration::from_secs(60), run(&extractor, input))
        .await
        .expect("hang guard: the run must stop on its own");
    let err = result.unwrap_err();
    match &err {
        ExtractError::EndpointUnreachable { url, attempts, .. } => {
            assert_eq!(url, &format!("http://{addr}/v1/chat/completions"));
            assert_eq!(*attempts, 3);
        }
        other => panic!("expected EndpointUnreachable, got {other}"),
    }
    let shown = err.to_string();
    assert!(
        shown.contains(&addr.to_string()) && shown.contains("re-run"),
        "{shown}"
    );
    assert!(!shown.contains("sk-dead-secret"), "{shown}");
    let progress = extractor.progress().snapshot();
    assert_eq!(progress.llm_calls, 0, "no call reached a server");
    assert!(progress.connection_failures >= 1);
    assert!(progress.connection_failures <= 3, "{progress:?}");
    // What was read is accounted for, as cancelled: a re-run does it.
    assert_eq!(records.len() as u64, progress.chunks);
    assert!(records.iter().all(|r| matches!(r,
        Record::SetAside(s) if s.reason == kg_core::SetAsideReason::Cancelled)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_model_costs_at_most_the_cap_and_is_repaired() {
    let server = FakeLlm::start(FakeConfig {
        faults: FaultRates {
            endless_json: 1.0,
            ..FaultRates::default()
        },
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let input = chunks(20);
    let extractor = Extractor::new(config(&server)).unwrap();
    let (summary, records) = run(&extractor, input.clone()).await;
    let summary = summary.unwrap();
    assert_every_chunk_accounted(&input, &records);
    let c = server.counters();
    assert_eq!(c.uncapped_chat_requests, 0, "every request carries a cap");
    let cap = kg_extract::default_completion_cap(&input[19]);
    assert_eq!((c.last_max_tokens, cap), (Some(512), 512));
    // Each endless answer ran to the cap and was repaired: its complete
    // entities kept, the loop's repeats resolved to one each.
    assert_eq!((summary.extracted, summary.repaired_answers), (20, 20));
    assert_eq!(summary.llm_calls, 20);
    assert_eq!(
        summary.completion_tokens,
        20 * 512,
        "the cap bounds the cost"
    );
    for r in &records {
        let Record::Extraction(x) = r else {
            panic!("{r:?}")
        };
        assert!(!x.entities.is_empty());
        let mut ids: Vec<_> = x.entities.iter().map(|e| e.id.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), x.entities.len(), "no duplicate entities");
    }

    // A cap too small for even one entity: asked once more for a shorter
    // answer, then set aside as truncated_answer.
    let mut cfg = config(&server);
    cfg.max_completion_tokens = Some(10);
    let before = server.counters().chat_requests;
    let (summary, records) = run(&Extractor::new(cfg).unwrap(), chunks(6)).await;
    let summary = summary.unwrap();
    assert_eq!((summary.extracted, summary.set_aside), (0, 6));
    assert_eq!(
        server.counters().chat_requests - before,
        12,
        "2 attempts each"
    );
    assert_eq!(server.counters().last_max_tokens, Some(10));
    for r in &records {
        let Record::SetAside(s) = r else {
            panic!("{r:?}")
        };
        assert_eq!(s.reason, kg_core::SetAsideReason::TruncatedAnswer);
        assert!(s.detail.contains("2 attempt"), "{}", s.detail);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_answers_are_repaired_or_set_aside_as_truncated() {
    let server = FakeLlm::start(FakeConfig {
        faults: FaultRates {
            truncated: 1.0,
            ..FaultRates::default()
        },
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let input = chunks(21);
    let extractor = Extractor::new(config(&server)).unwrap();
    let (summary, records) = run(&extractor, input.clone()).await;
    let summary = summary.unwrap();
    assert_every_chunk_accounted(&input, &records);
    assert_eq!(summary.extracted + summary.set_aside, 21);
    assert!(
        summary.extracted > 0,
        "half an answer usually keeps an entity"
    );
    assert_eq!(summary.repaired_answers, summary.extracted);
    // A repaired chunk cost one call; one that could not be repaired two
    // (the second asking for a shorter answer).
    assert_eq!(
        server.counters().chat_requests,
        summary.extracted + 2 * summary.set_aside
    );
    for r in &records {
        match r {
            Record::Extraction(x) => assert!(!x.entities.is_empty()),
            Record::SetAside(s) => {
                assert_eq!(s.reason, kg_core::SetAsideReason::TruncatedAnswer)
            }
            other => panic!("{other:?}"),
        }
    }
}
