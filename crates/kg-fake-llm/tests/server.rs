//! The fake server over real HTTP, as the kg clients see it.

use std::time::Duration;

use kg_fake_llm::{FakeConfig, FakeLlm, Fault, FaultRates};
use serde_json::{json, Value};

fn chat_body(text: &str) -> Value {
    json!({
        "model": "fake-model",
        "messages": [
            {"role": "system", "content": "Extract entities."},
            {"role": "user", "content": format!("Text:\n<chunk>{text}</chunk>")}
        ],
        "response_format": {"type": "json_object"}
    })
}

async fn post(url: &str, key: Option<&str>, body: &Value) -> reqwest::Response {
    let mut req = reqwest::Client::new().post(url).json(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send().await.expect("request reaches the fake server")
}

#[tokio::test]
async fn chat_answers_with_entities_relations_and_usage() {
    let server = FakeLlm::start(FakeConfig::default()).await.unwrap();
    let url = format!("{}/chat/completions", server.base_url());
    let r = post(
        &url,
        None,
        &chat_body("Ada Lovelace worked with Charles Babbage in London."),
    )
    .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let content = body["choices"][0]["message"]["content"].as_str().unwrap();
    let answer: Value = serde_json::from_str(content).unwrap();
    let names: Vec<&str> = answer["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Ada Lovelace", "Charles Babbage", "London"]);
    assert_eq!(answer["relations"].as_array().unwrap().len(), 3);
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(server.counters().chat_requests, 1);
    assert_eq!(server.counters().by_status.get(&200), Some(&1));
    server.shutdown().await;

    let quiet = FakeLlm::start(FakeConfig {
        omit_usage: true,
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let url = format!("{}/chat/completions", quiet.base_url());
    let body: Value = post(&url, None, &chat_body("Alice met Bob."))
        .await
        .json()
        .await
        .unwrap();
    assert!(body.get("usage").is_none());
}

#[tokio::test]
async fn a_wrong_key_is_refused_with_401() {
    let server = FakeLlm::start(FakeConfig {
        api_key: Some("sk-right".into()),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let url = format!("{}/chat/completions", server.base_url());
    let r = post(&url, Some("sk-wrong"), &chat_body("Alice met Bob.")).await;
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key");
    assert_eq!(
        post(&url, None, &chat_body("Alice met Bob."))
            .await
            .status(),
        401
    );
    assert_eq!(
        post(&url, Some("sk-right"), &chat_body("Alice met Bob."))
            .await
            .status(),
        200
    );
    let c = server.counters();
    assert_eq!((c.unauthorized, c.chat_requests), (2, 3));
}

#[tokio::test]
async fn forced_429s_carry_retry_after_then_succeed() {
    let server = FakeLlm::start(FakeConfig {
        fail_first_attempts: 2,
        forced_fault: Fault::RateLimited,
        retry_after: Duration::from_millis(250),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let url = format!("{}/chat/completions", server.base_url());
    for _ in 0..2 {
        let r = post(&url, None, &chat_body("Alice met Bob.")).await;
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "0.250");
        assert_eq!(r.headers()["retry-after-ms"], "250");
    }
    assert_eq!(
        post(&url, None, &chat_body("Alice met Bob."))
            .await
            .status(),
        200
    );
    // Another text has its own first attempts.
    assert_eq!(
        post(&url, None, &chat_body("Carol met Dan."))
            .await
            .status(),
        429
    );
    let c = server.counters();
    assert_eq!(c.by_status.get(&429), Some(&3));
    assert_eq!(c.faults.get("rate_limited"), Some(&3));
}

#[tokio::test]
async fn faults_are_deterministic_for_a_seed() {
    let config = FakeConfig {
        faults: FaultRates {
            server_error: 0.3,
            rate_limited: 0.2,
            ..FaultRates::default()
        },
        retry_after: Duration::from_millis(1),
        ..FakeConfig::default()
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        let server = FakeLlm::start(config.clone()).await.unwrap();
        let url = format!("{}/chat/completions", server.base_url());
        let mut statuses = Vec::new();
        for i in 0..40 {
            statuses.push(
                post(&url, None, &chat_body(&format!("Alice met Bob {i} times.")))
                    .await
                    .status()
                    .as_u16(),
            );
        }
        runs.push(statuses);
    }
    assert_eq!(runs[0], runs[1]);
    let failures = runs[0].iter().filter(|s| **s != 200).count();
    assert!((8..=32).contains(&failures), "about half fail: {failures}");
}

#[tokio::test]
async fn malformed_answers_are_malformed() {
    for (fault, check) in [
        (Fault::NonJson, "non_json"),
        (Fault::OffSchema, "off_schema"),
        (Fault::Truncated, "truncated"),
    ] {
        let server = FakeLlm::start(FakeConfig {
            fail_first_attempts: 1,
            forced_fault: fault,
            ..FakeConfig::default()
        })
        .await
        .unwrap();
        let url = format!("{}/chat/completions", server.base_url());
        let body: Value = post(&url, None, &chat_body("Ada Lovelace met Charles Babbage."))
            .await
            .json()
            .await
            .unwrap();
        let content = body["choices"][0]["message"]["content"].as_str().unwrap();
        let parsed = serde_json::from_str::<Value>(content);
        match fault {
            Fault::OffSchema => assert!(parsed.unwrap().get("entities").is_none()),
            Fault::Truncated => {
                assert!(parsed.is_err(), "{content}");
                assert_eq!(body["choices"][0]["finish_reason"], "length");
            }
            _ => assert!(parsed.is_err(), "{content}"),
        }
        assert_eq!(server.counters().faults.get(check), Some(&1));
    }
}

#[tokio::test]
async fn hostile_types_and_schema_rejection() {
    let server = FakeLlm::start(FakeConfig {
        hostile_types: 1.0,
        reject_json_schema: true,
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let url = format!("{}/chat/completions", server.base_url());
    let mut strict = chat_body("Alice met Bob.");
    strict["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": true}});
    let r = post(&url, None, &strict).await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("json_schema"));
    let body: Value = post(&url, None, &chat_body("Alice met Bob."))
        .await
        .json()
        .await
        .unwrap();
    let answer: Value =
        serde_json::from_str(body["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    let types: Vec<&str> = answer["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(
        types.iter().any(|t| t.contains(['`', '}', '\n', '\''])),
        "{types:?}"
    );
    assert_eq!(server.counters().hostile_answers, 1);
}

#[tokio::test]
async fn dropped_connections_and_hangs_fail_on_the_client() {
    let server = FakeLlm::start(FakeConfig {
        faults: FaultRates {
            dropped_connection: 1.0,
            ..FaultRates::default()
        },
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let url = format!("{}/chat/completions", server.base_url());
    let sent = reqwest::Client::new()
        .post(&url)
        .json(&chat_body("Alice met Bob."))
        .send()
        .await;
    let failed = match sent {
        Err(_) => true,
        Ok(r) => r.bytes().await.is_err(),
    };
    assert!(failed, "a cut connection must surface as an error");
    server.shutdown().await;

    let server = FakeLlm::start(FakeConfig {
        faults: FaultRates {
            timeout: 1.0,
            ..FaultRates::default()
        },
        hang: Duration::from_secs(60),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let url = format!("{}/embeddings", server.base_url());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let err = client
        .post(&url)
        .json(&json!({"model": "m", "input": "x"}))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    assert_eq!(server.counters().faults.get("timeout"), Some(&1));
    // Shutdown does not wait for the 60 s hang.
    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .unwrap();
}

#[tokio::test]
async fn embeddings_are_unit_vectors_and_the_dimension_can_switch() {
    let server = FakeLlm::start(FakeConfig {
        embedding_dim: 16,
        embedding_dim_switch: Some((2, 24)),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let url = format!("{}/embeddings", server.base_url());
    let body = json!({"model": "fake-embedding", "input": ["Debian is a Linux distribution", "Debian Linux"]});
    let first: Value = post(&url, None, &body).await.json().await.unwrap();
    let data = first["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["index"], 1);
    let v: Vec<f64> = data[0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(v.len(), 16);
    assert!((v.iter().map(|x| x * x).sum::<f64>().sqrt() - 1.0).abs() < 1e-4);
    let second: Value = post(&url, None, &body).await.json().await.unwrap();
    assert_eq!(first["data"], second["data"], "deterministic");
    let third: Value = post(&url, None, &body).await.json().await.unwrap();
    assert_eq!(
        third["data"][0]["embedding"].as_array().unwrap().len(),
        24,
        "switched after 2 requests"
    );
    let b64: Value = post(
        &url,
        None,
        &json!({"model": "m", "input": "x", "encoding_format": "base64", "dimensions": 8}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        b64["data"][0]["embedding"].as_str().unwrap().len(),
        44,
        "8 f32 = 32 bytes = 44 base64 chars"
    );
    let bad = post(&url, None, &json!({"model": "m", "input": [1, 2, 3]})).await;
    assert_eq!(bad.status(), 400);
    let stats: Value = reqwest::get(format!("http://{}/stats", server.addr()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["embedding_requests"], 5);
    assert_eq!(stats["embedded_inputs"], 7);
    assert_eq!(stats["by_status"]["400"], 1);
}

#[tokio::test]
async fn endless_json_runs_to_the_requested_cap() {
    let server = FakeLlm::start(FakeConfig {
        faults: FaultRates {
            endless_json: 1.0,
            ..FaultRates::default()
        },
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let url = format!("{}/chat/completions", server.base_url());
    for (field, cap) in [("max_completion_tokens", 300u64), ("max_tokens", 120)] {
        let mut body = chat_body("Ada Lovelace worked with Charles Babbage in London.");
        body[field] = json!(cap);
        let answer: Value = post(&url, None, &body).await.json().await.unwrap();
        let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
        assert_eq!(answer["choices"][0]["finish_reason"], "length");
        assert_eq!(answer["usage"]["completion_tokens"], cap);
        assert_eq!(content.len() as u64, cap * 4, "cut at the cap");
        assert!(content.starts_with("{\"entities\":[{"), "{content}");
        assert!(serde_json::from_str::<Value>(content).is_err());
        assert!(
            content.matches("Ada Lovelace").count() > 2,
            "the same entities again and again"
        );
        assert_eq!(server.counters().last_max_tokens, Some(cap));
    }
    // Without a cap it runs to the model's own limit.
    let answer: Value = post(&url, None, &chat_body("Alice met Bob."))
        .await
        .json()
        .await
        .unwrap();
    let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(content.len() as u64, kg_fake_llm::DEFAULT_ENDLESS_CAP * 4);
    let c = server.counters();
    assert_eq!((c.last_max_tokens, c.uncapped_chat_requests), (None, 1));
    assert_eq!(c.faults.get("endless_json"), Some(&3));
}

#[tokio::test]
async fn streamed_answers_are_server_sent_events() {
    let server = FakeLlm::start(FakeConfig::default()).await.unwrap();
    let url = format!("{}/chat/completions", server.base_url());
    let plain: Value = post(&url, None, &chat_body("Ada Lovelace met Charles Babbage."))
        .await
        .json()
        .await
        .unwrap();
    let mut body = chat_body("Ada Lovelace met Charles Babbage.");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let r = post(&url, None, &body).await;
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let text = r.text().await.unwrap();
    let mut content = String::new();
    let mut finish = None;
    let mut usage = None;
    let mut done = false;
    for line in text.lines().filter(|l| !l.is_empty()) {
        let data = line.strip_prefix("data: ").expect("only data lines");
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let chunk: Value = serde_json::from_str(data).unwrap();
        assert_eq!(chunk["object"], "chat.completion.chunk");
        if let Some(choice) = chunk["choices"].get(0) {
            content.push_str(choice["delta"]["content"].as_str().unwrap_or(""));
            if let Some(f) = choice["finish_reason"].as_str() {
                finish = Some(f.to_string());
            }
        }
        if chunk["usage"].is_object() {
            usage = Some(chunk["usage"].clone());
        }
    }
    assert!(done, "ends with [DONE]");
    assert_eq!(content, plain["choices"][0]["message"]["content"]);
    assert_eq!(finish.as_deref(), Some("stop"));
    assert_eq!(usage, Some(plain["usage"].clone()));
    assert_eq!(server.counters().streamed_answers, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_are_counted_with_their_peak() {
    let server = FakeLlm::start(FakeConfig {
        latency: Duration::from_millis(150),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let url = format!("{}/chat/completions", server.base_url());
    // One alone first, then five at once.
    post(&url, None, &chat_body("Alice met Bob.")).await;
    let five = (0..5).map(|i| {
        let url = url.clone();
        async move { post(&url, None, &chat_body(&format!("Carol met Dan {i}."))).await }
    });
    futures::future::join_all(five).await;
    let c = server.counters();
    assert_eq!(c.in_flight, 0);
    assert_eq!(c.peak_in_flight, 5);
    assert_eq!(c.peak_in_flight_before_first_answer, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_and_embedding_spans_run_from_the_first_request_to_the_last_answer() {
    let server = FakeLlm::start(FakeConfig {
        latency: Duration::from_millis(100),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let c = server.counters();
    assert_eq!((c.first_chat_request, c.last_chat_answer), (None, None));
    assert_eq!(c.chat_span(), None);
    let url = format!("{}/chat/completions", server.base_url());
    // Three requests one after the other: the span covers all three
    // latencies, each answer after its request.
    for i in 0..3 {
        post(&url, None, &chat_body(&format!("Alice met Bob {i}."))).await;
    }
    let c = server.counters();
    let (first, last) = (c.first_chat_request.unwrap(), c.last_chat_answer.unwrap());
    assert!(last > first, "{first:?} .. {last:?}");
    assert!(c.chat_span().unwrap() >= Duration::from_millis(300));
    assert_eq!(c.embedding_span(), None);

    let url = format!("{}/embeddings", server.base_url());
    post(&url, None, &json!({"model": "e", "input": ["one", "two"]})).await;
    let c2 = server.counters();
    // Embeddings have their own span, after the chats; the chat span is unchanged.
    assert!(c2.first_embedding_request.unwrap() >= last);
    assert!(c2.embedding_span().unwrap() >= Duration::from_millis(100));
    assert_eq!(c2.chat_span(), c.chat_span());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_extraction_span_leaves_out_summaries_asked_for_after() {
    let server = FakeLlm::start(FakeConfig {
        latency: Duration::from_millis(100),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let url = format!("{}/chat/completions", server.base_url());
    for i in 0..2 {
        post(&url, None, &chat_body(&format!("Alice met Bob {i}."))).await;
    }
    let after_extractions = server.counters();
    assert_eq!(after_extractions.extraction_requests(), 2);
    let span = after_extractions.extraction_span().unwrap();
    assert!(span >= Duration::from_millis(200), "{span:?}");
    // Then a description summary, as kg run's description step asks.
    let summary = "Summarise the descriptions of Person \"Alice\": one paragraph.\n\
                   <<<DESCRIPTION 1>>>\na person\n<<<END DESCRIPTION 1>>>\n\
                   <<<DESCRIPTION 2>>>\nmet Bob\n<<<END DESCRIPTION 2>>>";
    post(&url, None, &chat_body(summary)).await;
    let c = server.counters();
    assert_eq!(c.summaries, 1);
    assert_eq!(c.chat_requests, 3);
    assert_eq!(c.extraction_requests(), 2);
    assert_eq!(
        c.extraction_span(),
        Some(span),
        "the summary is not extraction"
    );
    assert!(c.chat_span().unwrap() >= span + Duration::from_millis(100));
}
