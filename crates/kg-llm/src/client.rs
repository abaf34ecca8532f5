//! The client: one logical call through the gate, the budgets, the
//! adaptive limit, the HTTP attempt and the retry policy.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_openai::types::CreateChatCompletionRequest;
use futures::stream::BoxStream;
use futures::StreamExt;
use kg_core::adaptive::{AdaptiveConcurrency, ConcurrencyPermit};
use kg_core::ratelimit::RateLimiter;
use kg_core::retry::{retry_after, RetryDecision, RetryFailure, RetryPolicy, Retryable};
use kg_core::secret::redact_url;
use kg_core::Secret;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::chat::{self, Completion, Delta, Usage};
use crate::config::{ClientConfig, ConfigError};
use crate::embed;
use crate::error::{error_chain, error_message, Checked};
use crate::gate::Gate;
use crate::stats::{Counters, LlmStats};
use crate::CallError;

/// A client of one OpenAI-compatible endpoint; clones share everything
/// (connections, budgets, gate, counters). See the crate docs.
#[derive(Clone)]
pub struct Client(Arc<Inner>);

struct Inner {
    http: reqwest::Client,
    /// Where requests go (may hold credentials in the URL).
    chat_target: String,
    embeddings_target: String,
    models_target: String,
    /// Whether the key probe (`GET /models`) has been sent.
    key_probed: AtomicBool,
    /// The same, credentials in the URL redacted: what messages show.
    chat_url_shown: String,
    embeddings_url_shown: String,
    base_url_shown: String,
    key: Option<Secret>,
    timeout: Duration,
    limiter: RateLimiter,
    concurrency: AdaptiveConcurrency,
    retry: RetryPolicy,
    gate: Gate,
    counters: Counters,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.0.base_url_shown)
            .finish_non_exhaustive()
    }
}

/// A request body ready to send, with its token estimates.
struct Prepared {
    body: Vec<u8>,
    /// Charged against the token budget: prompt plus completion cap.
    budget: u32,
    /// Counted as prompt tokens when the answer has no `usage`.
    prompt_estimate: u64,
}

/// A success status, its body still to read.
struct Answer {
    response: reqwest::Response,
    permit: ConcurrencyPermit,
    prompt_estimate: u64,
}

/// The longest the key probe waits for `GET /models`.
const KEY_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the key probe found.
enum KeyProbe {
    /// The endpoint answered with a success: key and URL work.
    Works,
    /// 401 or 403: the key is refused.
    Fatal(CallError),
    /// No answer that says anything (no such route, a timeout, an error).
    Unknown,
}

/// A check that never rejects, for [`Client::complete`].
#[derive(Debug)]
enum NoCheck {}

impl fmt::Display for NoCheck {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {}
    }
}

impl Retryable for NoCheck {
    fn retry_decision(&self) -> RetryDecision {
        match *self {}
    }
}

fn header_value(value: &str, what: &str) -> Result<HeaderValue, ConfigError> {
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| ConfigError(format!("{what} is not a valid header value")))?;
    v.set_sensitive(true);
    Ok(v)
}

impl Client {
    /// Checks `config` and builds the HTTP client (no request is sent).
    pub fn new(config: ClientConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let endpoint = &config.endpoint;
        let mut headers = HeaderMap::new();
        if let Some(key) = &endpoint.api_key {
            headers.insert(
                AUTHORIZATION,
                header_value(&format!("Bearer {}", key.expose()), "the API key")?,
            );
        }
        if let Some(org) = &endpoint.organization {
            headers.insert(
                HeaderName::from_static("openai-organization"),
                header_value(org, "the organization")?,
            );
        }
        for (k, v) in &endpoint.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| ConfigError(format!("header name {k:?} is invalid")))?;
            headers.insert(
                name,
                header_value(v, &format!("the value of header {k:?}"))?,
            );
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(endpoint.connect_timeout.min(endpoint.request_timeout))
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| {
                ConfigError(format!("cannot build the HTTP client: {}", error_chain(e)))
            })?;
        let concurrency = AdaptiveConcurrency::new(1, config.concurrency, 0.5)
            .map_err(|e| ConfigError(e.to_string()))?;
        let base_url_shown = redact_url(endpoint.base_url.trim_end_matches('/'));
        Ok(Self(Arc::new(Inner {
            http,
            chat_target: endpoint.chat_url(),
            embeddings_target: endpoint.embeddings_url(),
            models_target: endpoint.models_url(),
            key_probed: AtomicBool::new(false),
            chat_url_shown: redact_url(&endpoint.chat_url()),
            embeddings_url_shown: redact_url(&endpoint.embeddings_url()),
            gate: Gate::new(config.breaker, base_url_shown.clone()),
            base_url_shown,
            key: endpoint.api_key.clone(),
            timeout: endpoint.request_timeout,
            limiter: RateLimiter::new(config.rate_limits),
            concurrency,
            retry: config.retry,
            counters: Counters::default(),
        })))
    }

    /// The chat completions URL, credentials redacted (for messages).
    pub fn chat_url(&self) -> &str {
        &self.0.chat_url_shown
    }

    /// The embeddings URL, credentials redacted (for messages).
    pub fn embeddings_url(&self) -> &str {
        &self.0.embeddings_url_shown
    }

    /// The base URL, credentials redacted (for messages).
    pub fn base_url(&self) -> &str {
        &self.0.base_url_shown
    }

    /// The counters so far, and the state of the gate and the limit.
    pub fn stats(&self) -> LlmStats {
        let inner = &self.0;
        let gate = inner.gate.view();
        LlmStats {
            in_flight: inner.concurrency.in_flight() as u64,
            concurrency_limit: inner.concurrency.limit() as u64,
            answered: gate.open,
            breaker_open: gate.broken,
            fatal_latched: gate.fatal,
            ..inner.counters.snapshot()
        }
    }

    /// Forgets a latched fatal answer and an open breaker, and starts over
    /// in slow start: for a caller that fixed the cause (a new key in a
    /// proxy, a server started) and wants to try again with this client.
    pub fn reopen(&self) {
        self.0.gate.reset();
    }

    /// One chat completion, retried by the policy.
    pub async fn complete(
        &self,
        request: &CreateChatCompletionRequest,
        cancel: &CancellationToken,
    ) -> Result<Completion, CallError> {
        self.complete_with(cancel, |_| request.clone(), Ok::<_, NoCheck>)
            .await
            .map_err(|f| match f.error {
                Checked::Call(e) => e,
                Checked::Check(never) => match never {},
            })
    }

    /// One chat completion whose answer `check` must accept, all under one
    /// retry policy: `request(attempt)` builds each attempt's request (from
    /// 1; built once the gate lets the attempt through, so it sees the
    /// caller's latest settings); a rejection is retried as its
    /// [`Retryable`] decision says. The failure carries the last error, the
    /// attempts made and why it gave up.
    pub async fn complete_with<T, E, R, C>(
        &self,
        cancel: &CancellationToken,
        request: R,
        check: C,
    ) -> Result<T, RetryFailure<Checked<E>>>
    where
        R: Fn(u32) -> CreateChatCompletionRequest,
        C: Fn(Completion) -> Result<T, E>,
        E: Retryable + fmt::Display,
    {
        let inner = &*self.0;
        let (request, check) = (&request, &check);
        let result = inner
            .retry
            .run(
                cancel,
                |attempt| async move {
                    let completion = inner
                        .chat_once(|| request(attempt), cancel)
                        .await
                        .map_err(Checked::Call)?;
                    check(completion).map_err(Checked::Check)
                },
                |error, retry| inner.retried("chat", error, retry),
            )
            .await;
        if result.is_err() {
            inner.counters.add(|c| &c.failed, 1);
        }
        result
    }

    /// A streamed chat completion: the answer as it is generated. The
    /// request is sent with `stream: true` and
    /// `stream_options.include_usage`; the last delta carries the usage when
    /// the server reports it (else it is `None` everywhere: estimate it).
    /// Attempts are retried by the policy until the answer starts; an error
    /// after that ends the stream with that error. A server that answers
    /// with a whole (non-streamed) completion yields it as one delta.
    pub fn complete_stream(
        &self,
        request: &CreateChatCompletionRequest,
        cancel: &CancellationToken,
    ) -> BoxStream<'static, Result<Delta, CallError>> {
        let body = serde_json::to_value(request)
            .map(|mut v| {
                v["stream"] = json!(true);
                v["stream_options"] = json!({"include_usage": true});
                v
            })
            .map_err(|e| CallError::Encode(e.to_string()));
        let state = StreamState::Start {
            inner: Arc::clone(&self.0),
            body,
            cancel: cancel.clone(),
        };
        futures::stream::unfold(state, StreamState::next).boxed()
    }

    /// The vectors of `inputs` (in order) from `model`, `dimensions` asked
    /// for if given, retried by the policy. The token budget is charged an
    /// estimate of 4 characters a token; see [`Client::embed_counted`].
    pub async fn embed(
        &self,
        model: &str,
        inputs: &[String],
        dimensions: Option<usize>,
        cancel: &CancellationToken,
    ) -> Result<Vec<Vec<f32>>, CallError> {
        let tokens = inputs.iter().map(|s| s.len() as u64 / 4 + 1).sum();
        self.embed_counted(model, inputs, dimensions, tokens, cancel)
            .await
    }

    /// [`Client::embed`] for a caller that counted the inputs' tokens
    /// itself (with the model's tokenizer): `tokens` is charged against the
    /// token budget and counted when the server reports no usage.
    pub async fn embed_counted(
        &self,
        model: &str,
        inputs: &[String],
        dimensions: Option<usize>,
        tokens: u64,
        cancel: &CancellationToken,
    ) -> Result<Vec<Vec<f32>>, CallError> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let inner = &*self.0;
        let result = inner
            .retry
            .run(
                cancel,
                |_| inner.embed_once(model, inputs, dimensions, tokens, cancel),
                |error, retry| inner.retried("embeddings", error, retry),
            )
            .await;
        result.map_err(|failure| {
            inner.counters.add(|c| &c.failed, 1);
            failure.error
        })
    }
}

impl Inner {
    fn retried(&self, what: &str, error: &dyn fmt::Display, retry: kg_core::retry::ScheduledRetry) {
        self.counters.add(|c| &c.retries, 1);
        tracing::debug!(
            url = %self.base_url_shown,
            attempt = retry.failed_attempt,
            delay_ms = retry.delay.as_millis() as u64,
            "{what} call failed, retrying: {error}"
        );
    }

    /// Removes the key from a server's message, should it echo it.
    fn scrub(&self, message: String) -> String {
        match &self.key {
            Some(k) if k.expose().len() >= 4 && message.contains(k.expose()) => {
                message.replace(k.expose(), "***")
            }
            _ => message,
        }
    }

    /// One HTTP attempt up to a success status: gate, budgets, adaptive
    /// limit, send, status. Counts what happened and tells the gate.
    async fn exchange(
        &self,
        url: &str,
        prepare: impl FnOnce() -> Result<Prepared, CallError>,
        cancel: &CancellationToken,
        stream: bool,
    ) -> Result<Answer, CallError> {
        let mut pass = match self.gate.enter(cancel).await {
            Ok(pass) => pass,
            Err(e) => {
                if e != CallError::Cancelled {
                    self.counters.add(|c| &c.refused, 1);
                }
                return Err(e);
            }
        };
        if pass.is_probe() && !self.key_probed.swap(true, Ordering::Relaxed) {
            match self.probe_key(cancel).await {
                KeyProbe::Works => {
                    // The endpoint and key work: every waiting attempt may
                    // go, this one with them.
                    pass.answered();
                    pass = match self.gate.enter(cancel).await {
                        Ok(pass) => pass,
                        Err(e) => {
                            if e != CallError::Cancelled {
                                self.counters.add(|c| &c.refused, 1);
                            }
                            return Err(e);
                        }
                    };
                }
                KeyProbe::Fatal(e) => {
                    self.counters.add(|c| &c.client_errors, 1);
                    pass.fatal(&e);
                    return Err(e);
                }
                KeyProbe::Unknown => {}
            }
        }
        let Prepared {
            body,
            budget,
            prompt_estimate,
        } = prepare()?;
        let permit = tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(CallError::Cancelled),
            permit = async {
                self.limiter.acquire(budget).await;
                self.concurrency.acquire().await
            } => permit,
        };
        // A fatal answer or the breaker may have come while this attempt
        // waited for its budget or its slot.
        if let Err(e) = self.gate.check() {
            self.counters.add(|c| &c.refused, 1);
            return Err(e);
        }
        let mut builder = self
            .http
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        let sent = if stream {
            builder = builder.header(ACCEPT, "text/event-stream");
            // No total timeout on a stream: the first byte, then each piece.
            match tokio::time::timeout(self.timeout, builder.send()).await {
                Ok(sent) => sent,
                Err(_) => {
                    self.counters.add(|c| &c.calls, 1);
                    self.counters.add(|c| &c.timeouts, 1);
                    permit.overloaded();
                    return Err(CallError::Timeout(self.timeout));
                }
            }
        } else {
            builder.timeout(self.timeout).send().await
        };
        let response = match sent {
            Ok(response) => response,
            Err(e) if e.is_connect() => {
                drop(permit);
                self.counters.add(|c| &c.connection_failures, 1);
                let detail = error_chain(e);
                return Err(pass
                    .connect_failed(&detail)
                    .unwrap_or(CallError::Connect(detail)));
            }
            Err(e) => {
                self.counters.add(|c| &c.calls, 1);
                return Err(self.broken(e, permit));
            }
        };
        self.counters.add(|c| &c.calls, 1);
        let status = response.status();
        if status.is_success() {
            pass.answered();
            return Ok(Answer {
                response,
                permit,
                prompt_estimate,
            });
        }
        let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok());
        let retry_after = retry_after(header("retry-after-ms"), header("retry-after"));
        let text = match tokio::time::timeout(self.timeout, response.text()).await {
            Ok(Ok(text)) => text,
            _ => String::new(),
        };
        let error = CallError::Status {
            status: status.as_u16(),
            message: self.scrub(error_message(&text)),
            retry_after,
        };
        match status.as_u16() {
            429 => self.counters.add(|c| &c.rate_limited, 1),
            500..=599 => self.counters.add(|c| &c.server_errors, 1),
            _ => self.counters.add(|c| &c.client_errors, 1),
        }
        if error.is_fatal() {
            pass.fatal(&error);
        } else {
            pass.answered();
        }
        if error.is_overload() {
            permit.overloaded();
        }
        Err(error)
    }

    /// Slow start's first probe asks `GET {base}/models` before the real
    /// request: it answers at once on OpenAI, Ollama, vLLM and llama.cpp,
    /// so a working key opens the gate without the first completion's
    /// latency, and a wrong key is found without a paid call. Anything but
    /// a success or 401/403 (a server without the route, a timeout, no
    /// connection) tells nothing: the real request is the probe, as before.
    async fn probe_key(&self, cancel: &CancellationToken) -> KeyProbe {
        let request = self
            .http
            .get(&self.models_target)
            .timeout(self.timeout.min(KEY_PROBE_TIMEOUT))
            .send();
        let response = tokio::select! {
            biased;
            () = cancel.cancelled() => return KeyProbe::Unknown,
            r = request => match r {
                Ok(r) => r,
                Err(_) => return KeyProbe::Unknown,
            },
        };
        let status = response.status();
        if status.is_success() {
            tracing::debug!(url = %self.base_url_shown, "the key probe was answered: full concurrency");
            return KeyProbe::Works;
        }
        if !matches!(status.as_u16(), 401 | 403) {
            return KeyProbe::Unknown;
        }
        let text = match tokio::time::timeout(KEY_PROBE_TIMEOUT, response.text()).await {
            Ok(Ok(text)) => text,
            _ => String::new(),
        };
        KeyProbe::Fatal(CallError::Status {
            status: status.as_u16(),
            message: self.scrub(error_message(&text)),
            retry_after: None,
        })
    }

    /// A failure after the connection was made: a timeout (overload) or a
    /// broken answer.
    fn broken(&self, e: reqwest::Error, permit: ConcurrencyPermit) -> CallError {
        if e.is_timeout() {
            self.counters.add(|c| &c.timeouts, 1);
            permit.overloaded();
            CallError::Timeout(self.timeout)
        } else {
            self.counters.add(|c| &c.transport_errors, 1);
            CallError::Transport(error_chain(e))
        }
    }

    /// Reads a whole success body and decodes it; a malformed body is
    /// counted. The permit is handed back for the caller to report success.
    async fn read<T>(
        &self,
        answer: Answer,
        decode: impl FnOnce(&[u8]) -> Result<T, CallError>,
    ) -> Result<(T, ConcurrencyPermit, u64), CallError> {
        let Answer {
            response,
            permit,
            prompt_estimate,
        } = answer;
        match response.bytes().await {
            Ok(bytes) => match decode(&bytes) {
                Ok(value) => Ok((value, permit, prompt_estimate)),
                Err(e) => Err(self.malformed(e)),
            },
            Err(e) => Err(self.broken(e, permit)),
        }
    }

    fn count_chat_usage(&self, usage: Option<Usage>, prompt_estimate: u64, content_chars: u64) {
        let c = &self.counters;
        match usage {
            Some(u) => {
                c.add(|c| &c.prompt_tokens, u.prompt_tokens);
                c.add(|c| &c.completion_tokens, u.completion_tokens);
            }
            None => {
                c.add(|c| &c.usage_missing, 1);
                c.add(|c| &c.prompt_tokens, prompt_estimate);
                c.add(|c| &c.completion_tokens, content_chars / 4);
            }
        }
    }

    fn malformed(&self, e: CallError) -> CallError {
        if matches!(e, CallError::Malformed(_)) {
            self.counters.add(|c| &c.malformed, 1);
        }
        e
    }

    /// One chat attempt.
    async fn chat_once(
        &self,
        request: impl FnOnce() -> CreateChatCompletionRequest,
        cancel: &CancellationToken,
    ) -> Result<Completion, CallError> {
        let answer = self
            .exchange(
                &self.chat_target,
                || prepare_chat(&request()),
                cancel,
                false,
            )
            .await?;
        let (completion, permit, prompt_estimate) = self.read(answer, chat::decode).await?;
        permit.succeeded();
        self.count_chat_usage(
            completion.usage,
            prompt_estimate,
            completion.content.len() as u64,
        );
        Ok(completion)
    }

    /// One embeddings attempt.
    async fn embed_once(
        &self,
        model: &str,
        inputs: &[String],
        dimensions: Option<usize>,
        tokens: u64,
        cancel: &CancellationToken,
    ) -> Result<Vec<Vec<f32>>, CallError> {
        let prepare = || {
            let body = serde_json::to_vec(&embed::EmbeddingsRequest {
                model,
                input: inputs,
                encoding_format: "float",
                dimensions,
            })
            .map_err(|e| CallError::Encode(e.to_string()))?;
            Ok(Prepared {
                body,
                budget: u32::try_from(tokens).unwrap_or(u32::MAX),
                prompt_estimate: tokens,
            })
        };
        let answer = self
            .exchange(&self.embeddings_target, prepare, cancel, false)
            .await?;
        let ((vectors, reported), permit, _) = self
            .read(answer, |bytes| embed::decode(bytes, inputs.len()))
            .await?;
        permit.succeeded();
        let c = &self.counters;
        if reported.is_none() {
            c.add(|c| &c.usage_missing, 1);
        }
        c.add(|c| &c.prompt_tokens, reported.unwrap_or(tokens));
        c.add(|c| &c.embedded_inputs, inputs.len() as u64);
        Ok(vectors)
    }

    /// Sends a streamed request, retried until the answer starts.
    async fn open_stream(
        self: &Arc<Self>,
        body: &Value,
        cancel: &CancellationToken,
    ) -> Result<Opened, CallError> {
        let result = self
            .retry
            .run(
                cancel,
                |_| async move {
                    let answer = self
                        .exchange(&self.chat_target, || prepare_value(body), cancel, true)
                        .await?;
                    let event_stream = answer
                        .response
                        .headers()
                        .get(CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.starts_with("text/event-stream"));
                    if event_stream {
                        return Ok(Opened::Events(Box::new(Events {
                            inner: Arc::clone(self),
                            response: answer.response,
                            permit: Some(answer.permit),
                            prompt_estimate: answer.prompt_estimate,
                            buffer: Vec::new(),
                            ready: VecDeque::new(),
                            content_chars: 0,
                            usage: None,
                            finished: false,
                        })));
                    }
                    // A server that ignored `stream`: one whole answer.
                    let read = self.read(answer, chat::decode);
                    let (completion, permit, prompt_estimate) =
                        match tokio::time::timeout(self.timeout, read).await {
                            Ok(read) => read?,
                            Err(_) => {
                                self.counters.add(|c| &c.timeouts, 1);
                                return Err(CallError::Timeout(self.timeout));
                            }
                        };
                    permit.succeeded();
                    self.count_chat_usage(
                        completion.usage,
                        prompt_estimate,
                        completion.content.len() as u64,
                    );
                    Ok(Opened::Whole(Delta {
                        content: completion.content,
                        finish_reason: completion.finish_reason,
                        usage: completion.usage,
                    }))
                },
                |error, retry| self.retried("streamed chat", error, retry),
            )
            .await;
        result.map_err(|failure| {
            self.counters.add(|c| &c.failed, 1);
            failure.error
        })
    }
}

fn prepare_value(request: &Value) -> Result<Prepared, CallError> {
    let prompt_estimate = chat::estimate_prompt_tokens(request);
    let cap = chat::completion_cap(request).unwrap_or(0);
    let body = serde_json::to_vec(request).map_err(|e| CallError::Encode(e.to_string()))?;
    Ok(Prepared {
        body,
        budget: u32::try_from(prompt_estimate.saturating_add(cap)).unwrap_or(u32::MAX),
        prompt_estimate,
    })
}

fn prepare_chat(request: &CreateChatCompletionRequest) -> Result<Prepared, CallError> {
    let value = serde_json::to_value(request).map_err(|e| CallError::Encode(e.to_string()))?;
    prepare_value(&value)
}

enum Opened {
    Events(Box<Events>),
    Whole(Delta),
}

/// A streamed answer being read.
struct Events {
    inner: Arc<Inner>,
    response: reqwest::Response,
    /// Held until the answer ends (it occupies a slot all along).
    permit: Option<ConcurrencyPermit>,
    prompt_estimate: u64,
    /// Bytes of an unfinished line.
    buffer: Vec<u8>,
    ready: VecDeque<Delta>,
    content_chars: u64,
    usage: Option<Usage>,
    finished: bool,
}

impl Events {
    /// Reads the next piece of the body into `ready`.
    async fn read_more(&mut self) -> Result<(), CallError> {
        let timeout = self.inner.timeout;
        let piece = match tokio::time::timeout(timeout, self.response.chunk()).await {
            Err(_) => {
                self.inner.counters.add(|c| &c.timeouts, 1);
                if let Some(p) = self.permit.take() {
                    p.overloaded();
                }
                return Err(CallError::Timeout(timeout));
            }
            Ok(Err(e)) => {
                self.inner.counters.add(|c| &c.transport_errors, 1);
                return Err(CallError::Transport(error_chain(e)));
            }
            Ok(Ok(piece)) => piece,
        };
        match piece {
            Some(bytes) => {
                self.buffer.extend_from_slice(&bytes);
                while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = self.buffer.drain(..=end).collect();
                    self.line(&line)?;
                    if self.finished {
                        break;
                    }
                }
            }
            None => {
                // The body ended without `[DONE]`: take what is there.
                let rest = std::mem::take(&mut self.buffer);
                self.line(&rest)?;
                self.finish();
            }
        }
        Ok(())
    }

    fn line(&mut self, line: &[u8]) -> Result<(), CallError> {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches(['\r', '\n']);
        let Some(data) = line.strip_prefix("data:") else {
            return Ok(()); // comments, `event:`, `id:`, blank separators
        };
        let data = data.trim();
        if data == "[DONE]" {
            self.finish();
            return Ok(());
        }
        let delta = chat::decode_chunk(data).map_err(|e| self.inner.malformed(e))?;
        self.content_chars += delta.content.len() as u64;
        if delta.usage.is_some() {
            self.usage = delta.usage;
        }
        if !delta.content.is_empty() || delta.finish_reason.is_some() || delta.usage.is_some() {
            self.ready.push_back(delta);
        }
        Ok(())
    }

    fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        if let Some(p) = self.permit.take() {
            p.succeeded();
        }
        self.inner
            .count_chat_usage(self.usage, self.prompt_estimate, self.content_chars);
    }
}

enum StreamState {
    Start {
        inner: Arc<Inner>,
        body: Result<Value, CallError>,
        cancel: CancellationToken,
    },
    Reading(Box<Events>),
    Done,
}

impl StreamState {
    async fn next(self) -> Option<(Result<Delta, CallError>, StreamState)> {
        let mut state = self;
        loop {
            state = match state {
                StreamState::Done => return None,
                StreamState::Start {
                    inner,
                    body,
                    cancel,
                } => {
                    let body = match body {
                        Ok(body) => body,
                        Err(e) => return Some((Err(e), StreamState::Done)),
                    };
                    match inner.open_stream(&body, &cancel).await {
                        Ok(Opened::Events(events)) => StreamState::Reading(events),
                        Ok(Opened::Whole(delta)) => return Some((Ok(delta), StreamState::Done)),
                        Err(e) => return Some((Err(e), StreamState::Done)),
                    }
                }
                StreamState::Reading(mut events) => {
                    if let Some(delta) = events.ready.pop_front() {
                        return Some((Ok(delta), StreamState::Reading(events)));
                    }
                    if events.finished {
                        return None;
                    }
                    if let Err(e) = events.read_more().await {
                        return Some((Err(e), StreamState::Done));
                    }
                    StreamState::Reading(events)
                }
            }
        }
    }
}
