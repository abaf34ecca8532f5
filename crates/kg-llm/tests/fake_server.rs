//! The client against kg-fake-llm: slow start, the fatal latch, the
//! breaker, retries, streaming and embeddings, counted on both sides.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_openai::types::{
    ChatCompletionRequestMessage, ChatCompletionRequestUserMessage,
    ChatCompletionRequestUserMessageContent, CreateChatCompletionRequest,
};
use futures::StreamExt;
use kg_core::retry::{GaveUp, RetryDecision, Retryable};
use kg_fake_llm::{FakeConfig, FakeLlm, Fault, FaultRates};
use kg_llm::{
    BreakerConfig, CallError, Checked, Client, ClientConfig, Completion, EndpointConfig,
    RetryPolicy,
};
use tokio_util::sync::CancellationToken;

/// Hang guard: no test may take longer than this.
const GUARD: Duration = Duration::from_secs(60);

fn config(base_url: String, concurrency: usize) -> ClientConfig {
    let mut endpoint = EndpointConfig::new(base_url);
    endpoint.request_timeout = Duration::from_secs(5);
    let mut c = ClientConfig::new(endpoint);
    c.concurrency = concurrency;
    c.retry = RetryPolicy::new(6, Duration::from_millis(2), Duration::from_millis(20)).unwrap();
    c
}

#[allow(deprecated)] // `max_tokens` is what non-OpenAI servers understand.
fn request(text: &str) -> CreateChatCompletionRequest {
    CreateChatCompletionRequest {
        model: "fake-model".into(),
        messages: vec![ChatCompletionRequestMessage::User(
            ChatCompletionRequestUserMessage {
                content: ChatCompletionRequestUserMessageContent::Text(format!(
                    "Extract:\n<chunk>\n{text}\n</chunk>"
                )),
                name: None,
            },
        )],
        max_tokens: Some(512),
        ..Default::default()
    }
}

/// A port nobody listens on: bound, then released.
fn closed_port() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

/// `n` calls at once, the i-th asking `text(i)`; their results in order,
/// under the hang guard.
async fn complete_all(
    client: &Client,
    cancel: &CancellationToken,
    n: usize,
    text: impl Fn(usize) -> String,
) -> Vec<Result<Completion, CallError>> {
    let calls = (0..n).map(|i| {
        let (client, cancel, text) = (client.clone(), cancel.clone(), text(i));
        async move { client.complete(&request(&text), &cancel).await }
    });
    guarded(futures::future::join_all(calls)).await
}

async fn guarded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(GUARD, f)
        .await
        .expect("hang guard: the test did not finish")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_key_costs_one_request_whatever_the_concurrency() {
    let server = FakeLlm::start(FakeConfig {
        api_key: Some("sk-right".into()),
        latency: Duration::from_millis(50),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let mut cfg = config(server.base_url(), 8);
    cfg.endpoint.api_key = Some(kg_core::Secret::new("sk-wrong-and-secret"));
    let client = Client::new(cfg).unwrap();
    let cancel = CancellationToken::new();
    let results = complete_all(&client, &cancel, 50, |i| {
        format!("Alice met Bob {i} times.")
    })
    .await;
    assert_eq!(
        server.counters().models_requests,
        1,
        "exactly one request: the key probe"
    );
    assert_eq!(server.counters().chat_requests, 0, "no paid call");
    for r in &results {
        match r {
            Err(e @ CallError::Status { status: 401, .. }) => {
                assert!(e.is_fatal());
                assert!(!e.to_string().contains("sk-wrong-and-secret"), "{e}");
            }
            other => panic!("expected the 401, got {other:?}"),
        }
    }
    let stats = client.stats();
    assert_eq!((stats.calls, stats.client_errors), (0, 1));
    assert_eq!(
        stats.refused, 49,
        "the others were refused without a request"
    );
    assert!(stats.fatal_latched);

    // The latch holds until reopened; reopening sends one request again
    // (the key was probed already: this time the call itself is the probe).
    assert!(client.complete(&request("x"), &cancel).await.is_err());
    assert_eq!(server.counters().chat_requests, 0);
    client.reopen();
    assert!(client.complete(&request("x"), &cancel).await.is_err());
    assert_eq!(server.counters().chat_requests, 1);
    assert_eq!(server.counters().models_requests, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_models_route_the_first_call_is_the_probe() {
    let server = FakeLlm::start(FakeConfig {
        api_key: Some("sk-right".into()),
        models_route: false,
        latency: Duration::from_millis(50),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let mut cfg = config(server.base_url(), 8);
    cfg.endpoint.api_key = Some(kg_core::Secret::new("sk-wrong"));
    let client = Client::new(cfg).unwrap();
    let cancel = CancellationToken::new();
    let results = complete_all(&client, &cancel, 20, |i| {
        format!("Alice met Bob {i} times.")
    })
    .await;
    let c = server.counters();
    assert_eq!((c.models_requests, c.chat_requests), (1, 1), "{c:?}");
    assert!(results
        .iter()
        .all(|r| matches!(r, Err(CallError::Status { status: 401, .. }))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_start_sends_one_request_then_full_concurrency() {
    let server = FakeLlm::start(FakeConfig {
        latency: Duration::from_millis(200),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let client = Client::new(config(server.base_url(), 8)).unwrap();
    let cancel = CancellationToken::new();
    assert!(!client.stats().answered);
    let results = complete_all(&client, &cancel, 24, |i| {
        format!("Ada Lovelace met Charles Babbage {i}.")
    })
    .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let c = server.counters();
    assert_eq!(c.chat_requests, 24);
    assert_eq!(c.models_requests, 1, "one key probe");
    assert_eq!(
        c.peak_in_flight_before_first_answer, 8,
        "the key probe opened the gate: full concurrency from the first call"
    );
    assert_eq!(c.peak_in_flight, 8, "the configured concurrency");
    let stats = client.stats();
    assert!(stats.answered);
    assert_eq!((stats.calls, stats.retries, stats.failed), (24, 0, 0));
    assert_eq!(stats.in_flight, 0);
    assert!(stats.prompt_tokens > 0 && stats.completion_tokens > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_models_route_slow_start_sends_one_request_first() {
    let server = FakeLlm::start(FakeConfig {
        latency: Duration::from_millis(200),
        models_route: false,
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let client = Client::new(config(server.base_url(), 8)).unwrap();
    let cancel = CancellationToken::new();
    let results = complete_all(&client, &cancel, 24, |i| format!("Ada met Charles {i}.")).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let c = server.counters();
    assert_eq!((c.models_requests, c.chat_requests), (1, 24));
    assert_eq!(
        c.peak_in_flight_before_first_answer, 1,
        "one request until the endpoint answered"
    );
    assert_eq!(c.peak_in_flight, 8, "then the configured concurrency");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_opens_the_breaker_after_a_few_attempts() {
    let addr = closed_port();
    let base = format!("http://user:pw@{addr}/v1");
    let mut cfg = config(base, 8);
    cfg.endpoint.api_key = Some(kg_core::Secret::new("sk-live-secret"));
    cfg.retry = RetryPolicy::new(10, Duration::from_millis(2), Duration::from_millis(20)).unwrap();
    cfg.breaker = BreakerConfig {
        failures: 3,
        window: Duration::from_millis(300),
        cooldown: Duration::from_secs(60),
    };
    let client = Client::new(cfg).unwrap();
    let cancel = CancellationToken::new();
    let results = complete_all(&client, &cancel, 20, |i| format!("call {i}")).await;
    for r in &results {
        match r {
            Err(e @ CallError::EndpointUnreachable { attempts, url, .. }) => {
                assert!(e.is_fatal());
                assert_eq!(*attempts, 3);
                assert_eq!(url, &format!("http://***@{addr}/v1"));
                let shown = e.to_string();
                assert!(shown.contains(&addr.to_string()), "names the URL: {shown}");
                assert!(
                    !shown.contains("sk-live-secret") && !shown.contains("pw@"),
                    "{shown}"
                );
            }
            other => panic!("expected the breaker, got {other:?}"),
        }
    }
    let stats = client.stats();
    assert_eq!(
        stats.connection_failures, 3,
        "3 attempts in all, not 20 × 10"
    );
    assert_eq!(stats.calls, 0, "nothing reached a server");
    assert!(stats.breaker_open);
    // A later call fails at once, without trying.
    assert!(matches!(
        client.complete(&request("later"), &cancel).await,
        Err(CallError::EndpointUnreachable { .. })
    ));
    assert_eq!(client.stats().connection_failures, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_lets_a_probe_through_after_its_cooldown() {
    let addr = closed_port();
    let mut cfg = config(format!("http://{addr}/v1"), 4);
    cfg.retry = RetryPolicy::new(2, Duration::from_millis(1), Duration::from_millis(2)).unwrap();
    cfg.breaker = BreakerConfig {
        failures: 2,
        window: Duration::ZERO,
        cooldown: Duration::from_millis(200),
    };
    let client = Client::new(cfg).unwrap();
    let cancel = CancellationToken::new();
    let first = client.complete(&request("Alice met Bob."), &cancel).await;
    assert!(
        matches!(first, Err(CallError::EndpointUnreachable { .. })),
        "{first:?}"
    );
    // The server comes up on that port.
    let server = FakeLlm::start(FakeConfig {
        bind: addr,
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let answered = guarded(async {
        loop {
            match client.complete(&request("Alice met Bob."), &cancel).await {
                Ok(c) => break c,
                Err(CallError::EndpointUnreachable { .. }) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
    })
    .await;
    assert!(answered.content.contains("Alice"));
    assert_eq!(server.counters().chat_requests, 1);
    let stats = client.stats();
    assert!(stats.answered && !stats.breaker_open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let server = FakeLlm::start(FakeConfig {
        fail_first_attempts: 1,
        forced_fault: Fault::RateLimited,
        retry_after: Duration::from_millis(300),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let client = Client::new(config(server.base_url(), 4)).unwrap();
    let start = std::time::Instant::now();
    let answer = client
        .complete(&request("Alice met Bob."), &CancellationToken::new())
        .await
        .unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "waited {:?}",
        start.elapsed()
    );
    assert!(answer.content.contains("Alice"));
    let stats = client.stats();
    assert_eq!((stats.calls, stats.rate_limited, stats.retries), (2, 1, 1));
    assert!(stats.answered, "a 429 is an answer: slow start is over");
    assert!(stats.concurrency_limit < 4, "a 429 lowers the limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_cut_answers_are_calls_not_connection_failures() {
    let server = FakeLlm::start(FakeConfig {
        faults: FaultRates {
            timeout: 1.0,
            ..FaultRates::default()
        },
        hang: Duration::from_secs(10),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let mut cfg = config(server.base_url(), 2);
    cfg.endpoint.request_timeout = Duration::from_millis(100);
    cfg.retry = RetryPolicy::new(2, Duration::from_millis(1), Duration::from_millis(2)).unwrap();
    cfg.breaker = BreakerConfig {
        failures: 1,
        window: Duration::ZERO,
        cooldown: Duration::from_secs(60),
    };
    let client = Client::new(cfg).unwrap();
    let result =
        guarded(client.complete(&request("Alice met Bob."), &CancellationToken::new())).await;
    assert!(matches!(result, Err(CallError::Timeout(_))), "{result:?}");
    let stats = client.stats();
    assert_eq!((stats.calls, stats.timeouts, stats.failed), (2, 2, 1));
    assert_eq!(stats.connection_failures, 0);
    assert!(!stats.breaker_open, "a timeout is not a connection failure");

    let server = FakeLlm::start(FakeConfig {
        fail_first_attempts: 1,
        forced_fault: Fault::DroppedConnection,
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let client = Client::new(config(server.base_url(), 2)).unwrap();
    let answer = client
        .complete(&request("Alice met Bob."), &CancellationToken::new())
        .await;
    assert!(answer.is_ok(), "{answer:?}");
    let stats = client.stats();
    assert_eq!(
        (stats.calls, stats.transport_errors, stats.retries),
        (2, 1, 1)
    );
    assert_eq!(server.counters().chat_requests, 2);
}

/// A check that rejects the first answer it sees.
#[derive(Debug, PartialEq)]
struct Rejected(bool);

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rejected (retry: {})", self.0)
    }
}

impl Retryable for Rejected {
    fn retry_decision(&self) -> RetryDecision {
        if self.0 {
            RetryDecision::Retry {
                after: Some(Duration::ZERO),
            }
        } else {
            RetryDecision::Fatal
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_answer_is_retried_under_the_same_policy() {
    let server = FakeLlm::start(FakeConfig::default()).await.unwrap();
    let client = Client::new(config(server.base_url(), 2)).unwrap();
    let cancel = CancellationToken::new();
    let seen = AtomicU32::new(0);
    let attempts = Mutex::new(Vec::new());
    let content = client
        .complete_with(
            &cancel,
            |attempt| {
                attempts.lock().unwrap().push(attempt);
                request("Alice met Bob.")
            },
            |c| match seen.fetch_add(1, Ordering::SeqCst) {
                0 => Err(Rejected(true)),
                _ => Ok(c.content),
            },
        )
        .await
        .unwrap();
    assert!(content.contains("Bob"));
    assert_eq!(*attempts.lock().unwrap(), vec![1, 2]);
    assert_eq!(server.counters().chat_requests, 2);
    assert_eq!(client.stats().retries, 1);

    let failure = client
        .complete_with(
            &cancel,
            |_| request("Alice met Bob."),
            |_| Err::<(), _>(Rejected(false)),
        )
        .await
        .unwrap_err();
    assert_eq!(failure.error, Checked::Check(Rejected(false)));
    assert_eq!((failure.attempts, failure.gave_up), (1, GaveUp::Fatal));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_deltas_make_up_the_answer() {
    let server = FakeLlm::start(FakeConfig::default()).await.unwrap();
    let client = Client::new(config(server.base_url(), 2)).unwrap();
    let cancel = CancellationToken::new();
    let req = request("Ian Murdock founded Debian at Purdue University.");
    let whole = client.complete(&req, &cancel).await.unwrap();
    let deltas: Vec<_> = guarded(client.complete_stream(&req, &cancel).collect::<Vec<_>>()).await;
    let deltas: Vec<_> = deltas.into_iter().map(Result::unwrap).collect();
    assert!(deltas.len() > 3, "streamed in pieces: {}", deltas.len());
    let text: String = deltas.iter().map(|d| d.content.as_str()).collect();
    assert_eq!(text, whole.content);
    assert_eq!(
        deltas
            .iter()
            .filter_map(|d| d.finish_reason.as_deref())
            .collect::<Vec<_>>(),
        ["stop"]
    );
    let usage: Vec<_> = deltas.iter().filter_map(|d| d.usage).collect();
    assert_eq!(
        usage,
        vec![whole.usage.unwrap()],
        "usage from the final chunk"
    );
    assert_eq!(server.counters().streamed_answers, 1);
    let stats = client.stats();
    assert_eq!((stats.calls, stats.usage_missing), (2, 0));
    assert_eq!(stats.in_flight, 0, "the slot is given back at the end");

    // Without usage from the server: none in the deltas, estimated counts.
    let quiet = FakeLlm::start(FakeConfig {
        omit_usage: true,
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let client = Client::new(config(quiet.base_url(), 2)).unwrap();
    let deltas: Vec<_> = guarded(client.complete_stream(&req, &cancel).collect::<Vec<_>>()).await;
    let text: String = deltas
        .into_iter()
        .map(|d| {
            let d = d.unwrap();
            assert_eq!(d.usage, None);
            d.content
        })
        .collect();
    assert_eq!(text, whole.content);
    let stats = client.stats();
    assert_eq!(stats.usage_missing, 1);
    assert!(
        stats.completion_tokens > 0 && stats.prompt_tokens > 0,
        "estimated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_cannot_start_ends_with_the_error() {
    let server = FakeLlm::start(FakeConfig {
        api_key: Some("sk-right".into()),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let client = Client::new(config(server.base_url(), 2)).unwrap();
    let items: Vec<_> = guarded(
        client
            .complete_stream(&request("x"), &CancellationToken::new())
            .collect::<Vec<_>>(),
    )
    .await;
    assert!(
        matches!(
            items.as_slice(),
            [Err(CallError::Status { status: 401, .. })]
        ),
        "{items:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_come_back_in_order_and_counted() {
    let server = FakeLlm::start(FakeConfig::default()).await.unwrap();
    let client = Client::new(config(server.base_url(), 2)).unwrap();
    let cancel = CancellationToken::new();
    let texts: Vec<String> = ["Debian", "Ubuntu builds on Debian", "Linux kernel"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let vectors = client
        .embed("fake-embedding", &texts, None, &cancel)
        .await
        .unwrap();
    assert_eq!(vectors.len(), 3);
    assert!(vectors.iter().all(|v| v.len() == 64));
    let alone = client
        .embed("fake-embedding", &texts[1..2], None, &cancel)
        .await
        .unwrap();
    assert_eq!(alone[0], vectors[1], "input order kept");
    let small = client
        .embed("fake-embedding", &texts[..1], Some(8), &cancel)
        .await
        .unwrap();
    assert_eq!(small[0].len(), 8, "dimensions are asked for");
    assert!(client
        .embed("fake-embedding", &[], None, &cancel)
        .await
        .unwrap()
        .is_empty());
    let stats = client.stats();
    assert_eq!((stats.calls, stats.embedded_inputs), (3, 5));
    assert_eq!(server.counters().embedding_requests, 3);
    assert!(stats.prompt_tokens > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_path_is_a_latched_404() {
    let server = FakeLlm::start(FakeConfig::default()).await.unwrap();
    let client = Client::new(config(format!("http://{}/nope", server.addr()), 4)).unwrap();
    let cancel = CancellationToken::new();
    let texts = vec!["Debian".to_string()];
    let calls = (0..10).map(|_| client.embed("m", &texts, None, &cancel));
    let results = guarded(futures::future::join_all(calls)).await;
    assert!(results
        .iter()
        .all(|r| matches!(r, Err(e @ CallError::Status { status: 404, .. }) if e.is_fatal())));
    assert_eq!(client.stats().calls, 1);
    assert_eq!(
        client.embeddings_url(),
        format!("http://{}/nope/embeddings", server.addr())
    );
}
