//! Embeddings from any OpenAI-compatible `/v1/embeddings` server.
//!
//! One [`OpenAiEmbedder`] call turns many texts into vectors with as few
//! requests as the limits allow:
//!
//! - **Many inputs per request**, up to [`OpenAiEmbedConfig::batch_size`]
//!   texts and [`OpenAiEmbedConfig::max_tokens_per_request`] tokens, counted
//!   with tiktoken (the model's encoding, `cl100k_base` for models tiktoken
//!   does not know). A text bigger than the budget goes alone; the server has
//!   the last word on whether it fits the model.
//! - **Bounded, adaptive concurrency** (kg-core's AIMD limiter): at most
//!   [`OpenAiEmbedConfig::concurrency`] requests in flight across every
//!   caller of one embedder, halved on a 429 or a timeout and grown back on
//!   success.
//! - **Budgets before sending**: requests- and tokens-per-minute buckets
//!   (kg-core's rate limiter) so a big run does not earn 429s to begin with.
//! - **Retries** with kg-core's policy: 429, 5xx, timeouts and dropped
//!   connections are retried with backoff, after `Retry-After` (or OpenAI's
//!   `retry-after-ms`) when the server sends one; a 400/401/403/404 is not.
//! - **One dimension per run**: the first answer fixes the dimension (unless
//!   [`OpenAiEmbedConfig::dimensions`] does); any later vector of another
//!   length is [`EmbedError::DimensionMismatch`], never written.
//!
//! The transport is `reqwest` rather than `async-openai`'s client: the
//! retry policy needs the HTTP status and the `Retry-After` headers, which
//! `async-openai` (0.28) folds into an `ApiError` after running its own
//! backoff; and OpenAI-compatible servers (vLLM, Ollama, llama.cpp, TEI)
//! differ in optional fields (`usage`, `object`, `index`), which the lenient
//! answer types here accept. The wire format is OpenAI's.
//!
//! The API key is sent as a bearer token and is never logged, formatted by
//! `Debug`, or put in an error message.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use kg_core::adaptive::AdaptiveConcurrency;
use kg_core::ratelimit::{RateLimiter, RateLimits};
use kg_core::retry::{retry_after, RetryDecision, RetryPolicy, Retryable};
use serde::{Deserialize, Serialize};
use tiktoken_rs::CoreBPE;
use tokio_util::sync::CancellationToken;

use crate::{BatchLimits, EmbedError, Embedder};

/// An API key: kg-core's [`kg_core::Secret`] (`Debug` and `Display` print `***`).
pub type ApiKey = kg_core::Secret;

/// Settings of an [`OpenAiEmbedder`].
#[derive(Debug, Clone)]
pub struct OpenAiEmbedConfig {
    /// The API base, e.g. `https://api.openai.com/v1` (`/embeddings` is
    /// appended).
    pub base_url: String,
    /// The bearer token; `None` for servers that need none.
    pub api_key: Option<ApiKey>,
    /// The model name the server knows, e.g. `text-embedding-3-small`.
    pub model: String,
    /// Most texts per request.
    pub batch_size: usize,
    /// Most tokens (tiktoken) per request, over all its texts.
    pub max_tokens_per_request: usize,
    /// Most requests in flight at once.
    pub concurrency: usize,
    /// Requests- and tokens-per-minute budgets.
    pub rate_limits: RateLimits,
    /// Timeout of one HTTP request.
    pub timeout: Duration,
    /// Retries of a failed request.
    pub retry: RetryPolicy,
    /// Asks the server for vectors of this size (OpenAI's `dimensions`
    /// parameter) and expects it from the first answer on.
    pub dimensions: Option<usize>,
}

/// Texts per request unless configured.
pub const DEFAULT_API_BATCH: usize = 128;
/// Tokens per request unless configured (OpenAI accepts 300 000).
pub const DEFAULT_MAX_TOKENS_PER_REQUEST: usize = 100_000;
/// Requests in flight unless configured.
pub const DEFAULT_API_CONCURRENCY: usize = 4;

impl OpenAiEmbedConfig {
    /// Defaults for `model` at `base_url`: 128 texts and 100 000 tokens per
    /// request, 4 requests in flight, no rate budget, a 60 s timeout,
    /// kg-core's default retry policy.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            model: model.into(),
            batch_size: DEFAULT_API_BATCH,
            max_tokens_per_request: DEFAULT_MAX_TOKENS_PER_REQUEST,
            concurrency: DEFAULT_API_CONCURRENCY,
            rate_limits: RateLimits::default(),
            timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
            dimensions: None,
        }
    }
}

/// Counters of an [`OpenAiEmbedder`], since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenAiStats {
    /// HTTP requests sent (retries included).
    pub requests: u64,
    /// Requests that were retries of a failed one.
    pub retries: u64,
    /// Requests that failed for good (after their retries).
    pub failed: u64,
    /// Texts embedded.
    pub inputs: u64,
    /// Prompt tokens, as the server reported them (or as counted, when it
    /// does not report usage).
    pub prompt_tokens: u64,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    retries: AtomicU64,
    failed: AtomicU64,
    inputs: AtomicU64,
    prompt_tokens: AtomicU64,
}

/// A client of an OpenAI-compatible embeddings endpoint.
pub struct OpenAiEmbedder {
    config: OpenAiEmbedConfig,
    url: String,
    http: reqwest::Client,
    bpe: &'static CoreBPE,
    limiter: RateLimiter,
    concurrency: AdaptiveConcurrency,
    /// The learned dimension; 0 until the first answer.
    dimensions: AtomicUsize,
    /// Numbers requests in logs and errors.
    next_request: AtomicU64,
    counters: Counters,
    cancel: CancellationToken,
}

impl std::fmt::Debug for OpenAiEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiEmbedder")
            .field("url", &self.url)
            .field("model", &self.config.model)
            .field("dimensions", &self.dimensions())
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct EmbeddingsRequest<'a> {
    model: &'a str,
    input: &'a [String],
    encoding_format: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<usize>,
}

#[derive(Deserialize)]
struct EmbeddingsResponse {
    data: Vec<EmbeddingData>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct EmbeddingData {
    #[serde(default)]
    index: Option<usize>,
    embedding: Vec<f32>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u64,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: String,
}

impl Retryable for EmbedError {
    fn retry_decision(&self) -> RetryDecision {
        if self.is_retriable() {
            RetryDecision::Retry {
                after: self.retry_after(),
            }
        } else {
            RetryDecision::Fatal
        }
    }
}

/// A reqwest error with its cause chain (reqwest's own message is terse).
fn error_chain(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

fn shorten(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl OpenAiEmbedder {
    /// Checks the configuration and builds the client (no request is sent).
    pub fn new(config: OpenAiEmbedConfig) -> Result<Self, EmbedError> {
        if config.batch_size == 0 {
            return Err(EmbedError::Config(
                "embedding batch size must be at least 1".into(),
            ));
        }
        if config.max_tokens_per_request == 0 {
            return Err(EmbedError::Config(
                "max tokens per embedding request must be at least 1".into(),
            ));
        }
        if config.model.trim().is_empty() {
            return Err(EmbedError::Config("embedding model name is empty".into()));
        }
        if config.dimensions == Some(0) {
            return Err(EmbedError::Config(
                "embedding dimensions must be at least 1".into(),
            ));
        }
        let base = config.base_url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(EmbedError::Config(format!(
                "embedding base URL {base:?} must start with http:// or https://"
            )));
        }
        let url = format!("{base}/embeddings");
        let concurrency = AdaptiveConcurrency::new(1, config.concurrency.max(1), 0.5)
            .map_err(|e| EmbedError::Config(e.to_string()))?;
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| EmbedError::Config(format!("HTTP client: {}", error_chain(&e))))?;
        // The model's encoding, or cl100k_base (OpenAI's embedding models'
        // encoding) for names tiktoken does not know. Both are process-wide
        // singletons: loaded once, shared by every embedder.
        let bpe = tiktoken_rs::bpe_for_model(&config.model)
            .unwrap_or_else(|_| tiktoken_rs::cl100k_base_singleton());
        Ok(Self {
            limiter: RateLimiter::new(config.rate_limits),
            dimensions: AtomicUsize::new(config.dimensions.unwrap_or(0)),
            url,
            http,
            bpe,
            concurrency,
            next_request: AtomicU64::new(1),
            counters: Counters::default(),
            cancel: CancellationToken::new(),
            config,
        })
    }

    /// Makes retry waits end early when `cancel` fires (the request then
    /// fails with its last error).
    pub fn with_cancel(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// The endpoint requests go to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The counters so far.
    pub fn stats(&self) -> OpenAiStats {
        let c = &self.counters;
        OpenAiStats {
            requests: c.requests.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            inputs: c.inputs.load(Ordering::Relaxed),
            prompt_tokens: c.prompt_tokens.load(Ordering::Relaxed),
        }
    }

    /// Splits `0..texts.len()` into request ranges by count and token
    /// budget.
    fn plan_requests(&self, texts: &[String]) -> Vec<(std::ops::Range<usize>, usize)> {
        let mut plan = Vec::new();
        let (mut start, mut tokens) = (0usize, 0usize);
        for (i, text) in texts.iter().enumerate() {
            let t = self.count_tokens(text);
            let full = i - start >= self.config.batch_size
                || (i > start && tokens + t > self.config.max_tokens_per_request);
            if full {
                plan.push((start..i, tokens));
                start = i;
                tokens = 0;
            }
            tokens += t;
        }
        if start < texts.len() {
            plan.push((start..texts.len(), tokens));
        }
        plan
    }

    /// One request, with its retries.
    async fn request(&self, texts: &[String], tokens: usize) -> Result<Vec<Vec<f32>>, EmbedError> {
        let request_no = self.next_request.fetch_add(1, Ordering::Relaxed);
        let tokens_u32 = u32::try_from(tokens).unwrap_or(u32::MAX);
        let result = self
            .config
            .retry
            .run(
                &self.cancel,
                |attempt| async move {
                    let permit = self.concurrency.acquire().await;
                    self.limiter.acquire(tokens_u32).await;
                    let result = self.send_once(request_no, attempt, texts, tokens).await;
                    match &result {
                        Ok(_) => permit.succeeded(),
                        Err(EmbedError::Http { status: 429, .. })
                        | Err(EmbedError::Transport { timeout: true, .. }) => permit.overloaded(),
                        Err(_) => drop(permit),
                    }
                    result
                },
                |error, retry| {
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        request = request_no,
                        attempt = retry.failed_attempt,
                        delay_ms = retry.delay.as_millis() as u64,
                        %error,
                        "embeddings request failed; retrying"
                    );
                },
            )
            .await;
        result.map_err(|failure| {
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
            failure.error
        })
    }

    async fn send_once(
        &self,
        request_no: u64,
        attempt: u32,
        texts: &[String],
        tokens: usize,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let body = EmbeddingsRequest {
            model: &self.config.model,
            input: texts,
            encoding_format: "float",
            dimensions: self.config.dimensions,
        };
        let mut builder = self.http.post(&self.url).json(&body);
        if let Some(key) = &self.config.api_key {
            builder = builder.bearer_auth(key.expose());
        }
        tracing::debug!(
            request = request_no,
            attempt,
            inputs = texts.len(),
            tokens,
            "embeddings request"
        );
        let transport = |e: reqwest::Error| EmbedError::Transport {
            url: self.url.clone(),
            request: request_no,
            timeout: e.is_timeout(),
            detail: error_chain(&e),
        };
        let response = builder.send().await.map_err(transport)?;
        let status = response.status();
        if !status.is_success() {
            let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok());
            let retry_after = retry_after(header("retry-after-ms"), header("retry-after"));
            let text = response.text().await.unwrap_or_default();
            let message = serde_json::from_str::<ErrorBody>(&text)
                .map(|b| b.error.message)
                .unwrap_or(text);
            return Err(EmbedError::Http {
                url: self.url.clone(),
                request: request_no,
                status: status.as_u16(),
                message: shorten(message.trim(), 300),
                retry_after_secs: retry_after.map(|d| d.as_secs_f64()),
            });
        }
        let bytes = response.bytes().await.map_err(transport)?;
        let malformed = |detail: String| EmbedError::MalformedResponse {
            url: self.url.clone(),
            request: request_no,
            detail,
        };
        let answer: EmbeddingsResponse = serde_json::from_slice(&bytes)
            .map_err(|e| malformed(format!("not an embeddings answer: {e}")))?;
        if answer.data.len() != texts.len() {
            return Err(malformed(format!(
                "{} vectors for {} inputs",
                answer.data.len(),
                texts.len()
            )));
        }
        let mut vectors: Vec<Option<Vec<f32>>> = vec![None; texts.len()];
        for (position, item) in answer.data.into_iter().enumerate() {
            let index = item.index.unwrap_or(position);
            match vectors.get_mut(index) {
                Some(slot @ None) => *slot = Some(item.embedding),
                Some(Some(_)) => return Err(malformed(format!("index {index} answered twice"))),
                None => {
                    return Err(malformed(format!(
                        "index {index} out of range for {} inputs",
                        texts.len()
                    )))
                }
            }
        }
        let vectors: Vec<Vec<f32>> = vectors.into_iter().flatten().collect();
        for v in &vectors {
            if v.is_empty() {
                return Err(malformed("an empty vector".into()));
            }
            self.check_dimension(v.len(), request_no)?;
        }
        let reported = answer.usage.map(|u| u.prompt_tokens).filter(|t| *t > 0);
        self.counters
            .prompt_tokens
            .fetch_add(reported.unwrap_or(tokens as u64), Ordering::Relaxed);
        self.counters
            .inputs
            .fetch_add(texts.len() as u64, Ordering::Relaxed);
        Ok(vectors)
    }

    fn check_dimension(&self, actual: usize, request_no: u64) -> Result<(), EmbedError> {
        match self
            .dimensions
            .compare_exchange(0, actual, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                tracing::info!(model = %self.config.model, dimensions = actual, "embedding dimension learned from the first answer");
                Ok(())
            }
            Err(expected) if expected == actual => Ok(()),
            Err(expected) => Err(EmbedError::DimensionMismatch {
                model: self.config.model.clone(),
                expected,
                actual,
                context: format!("answer to request {request_no}"),
            }),
        }
    }
}

impl Embedder for OpenAiEmbedder {
    fn model_id(&self) -> &str {
        &self.config.model
    }

    fn dimensions(&self) -> Option<usize> {
        match self.dimensions.load(Ordering::Acquire) {
            0 => None,
            d => Some(d),
        }
    }

    fn batch_limits(&self) -> BatchLimits {
        BatchLimits {
            max_inputs: self.config.batch_size,
            max_tokens: Some(self.config.max_tokens_per_request),
            concurrency: self.config.concurrency.max(1),
        }
    }

    fn count_tokens(&self, text: &str) -> usize {
        self.bpe.encode_ordinary(text).len()
    }

    fn embed<'a>(
        &'a self,
        texts: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>> {
        Box::pin(async move {
            if texts.is_empty() {
                return Ok(Vec::new());
            }
            let plan = self.plan_requests(texts);
            let requests = plan.into_iter().map(|(range, tokens)| {
                let slice = texts.get(range).unwrap_or_default();
                self.request(slice, tokens)
            });
            let answers = futures::future::try_join_all(requests).await?;
            Ok(answers.into_iter().flatten().collect())
        })
    }
}
