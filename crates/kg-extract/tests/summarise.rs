//! The description summariser against kg-fake-llm: one call per set, the
//! answer cached (a second summariser on the same cache makes no call), a
//! new set a new call; a model that never answers with JSON leaves the
//! joined descriptions and says why.

use std::time::Duration;

use kg_extract::summarise::{join_descriptions, DescriptionInput, Summary};
use kg_extract::{LlmEndpoint, RetryPolicy, Summariser, SummaryConfig};
use kg_fake_llm::{FakeConfig, FakeLlm, FaultRates};
use tokio_util::sync::CancellationToken;

fn config(url: String, cache: Option<&std::path::Path>) -> SummaryConfig {
    let mut endpoint = LlmEndpoint::new(url, "fake-model");
    endpoint.api_key = Some(kg_core::Secret::new("sk-test"));
    let mut c = SummaryConfig::new(endpoint);
    c.cache_dir = cache.map(|p| p.to_path_buf());
    c.retry = RetryPolicy::new(3, Duration::from_millis(1), Duration::from_millis(5)).unwrap();
    c
}

fn descriptions(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("Ada, as chunk {i:02} says"))
        .collect()
}

#[tokio::test]
async fn a_summary_is_one_call_then_cached_and_a_new_set_calls_again() {
    let server = FakeLlm::start(FakeConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    let ds = descriptions(30);
    let input = DescriptionInput {
        kind: "Person",
        name: "Ada Lovelace",
        descriptions: &ds,
        set_key: "set-1",
    };
    let first = Summariser::new(config(server.base_url(), Some(dir.path()))).unwrap();
    let made = first.summarise(&input, &cancel).await;
    let Summary::Made { text, cached } = made else {
        panic!("no summary: {made:?}");
    };
    assert!(!cached);
    assert!(
        text.starts_with("Summary of 30 descriptions of Person \"Ada Lovelace\""),
        "{text}"
    );
    assert_eq!(server.counters().summaries, 1);
    let again = first.summarise(&input, &cancel).await;
    assert_eq!(
        again,
        Summary::Made {
            text: text.clone(),
            cached: true
        }
    );
    let stats = first.stats();
    assert_eq!((stats.made, stats.cached, stats.llm_calls), (1, 1, 1));
    assert!(
        stats.prompt_tokens > 0 && stats.completion_tokens > 0,
        "{stats:?}"
    );
    drop(first);

    // A later run, on the same cache: no call.
    let second = Summariser::new(config(server.base_url(), Some(dir.path()))).unwrap();
    assert_eq!(
        second.summarise(&input, &cancel).await,
        Summary::Made { text, cached: true }
    );
    assert_eq!(server.counters().chat_requests, 1);
    // New descriptions, a new set key: a new call.
    let more = descriptions(31);
    let changed = DescriptionInput {
        descriptions: &more,
        set_key: "set-2",
        ..input
    };
    assert!(matches!(
        second.summarise(&changed, &cancel).await,
        Summary::Made { cached: false, .. }
    ));
    assert_eq!(server.counters().chat_requests, 2);
    server.shutdown().await;
}

#[tokio::test]
async fn an_answer_that_is_never_json_keeps_the_joined_descriptions() {
    let server = FakeLlm::start(FakeConfig {
        faults: FaultRates {
            non_json: 1.0,
            ..FaultRates::default()
        },
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let summariser = Summariser::new(config(server.base_url(), Some(dir.path()))).unwrap();
    let ds = descriptions(6);
    let input = DescriptionInput {
        kind: "Person",
        name: "Ada Lovelace",
        descriptions: &ds,
        set_key: "set-1",
    };
    let out = summariser
        .summarise(&input, &CancellationToken::new())
        .await;
    let Summary::Failed { joined, error } = out else {
        panic!("a prose answer was taken: {out:?}");
    };
    assert_eq!(joined, join_descriptions(&ds));
    assert_eq!(joined.lines().count(), 6);
    assert!(error.contains("not JSON"), "{error}");
    // Asked under the retry policy (3 attempts), nothing cached.
    assert_eq!(server.counters().chat_requests, 3);
    assert_eq!(summariser.stats().failed, 1);
    let retry = summariser
        .summarise(&input, &CancellationToken::new())
        .await;
    assert!(matches!(retry, Summary::Failed { .. }));
    assert_eq!(
        server.counters().chat_requests,
        6,
        "a failure is not cached"
    );
    server.shutdown().await;
}
