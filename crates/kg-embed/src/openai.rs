//! Embeddings from any OpenAI-compatible `/v1/embeddings` server.
//!
//! One [`OpenAiEmbedder`] call turns many texts into vectors with as few
//! requests as the limits allow:
//!
//! - **Many inputs per request**, up to [`OpenAiEmbedConfig::batch_size`]
//!   texts and [`OpenAiEmbedConfig::max_tokens_per_request`] tokens, counted
//!   in `cl100k_base` (the encoding of every OpenAI embedding model; for
//!   other servers' models, whose own tokenizers the server applies, a close
//!   estimate) with [`bpe_openai`], which gives tiktoken's counts. A text
//!   bigger than the budget goes alone; the server has the last word on
//!   whether it fits the model.
//! - **The calls go through kg-llm's [`kg_llm::Client`]**, shared by every
//!   caller of one embedder: requests- and tokens-per-minute budgets before
//!   sending; slow start (one request until the server has answered, so a
//!   rejected key costs one request, not `concurrency`); a latched 401/403/
//!   404; a circuit breaker that turns a dead endpoint into one fatal
//!   [`EmbedError::EndpointUnreachable`] after a few connection attempts;
//!   AIMD concurrency (at most [`OpenAiEmbedConfig::concurrency`] in
//!   flight, halved on a 429 or a timeout); retries with kg-core's policy
//!   (429, 5xx, timeouts, dropped connections, malformed answers; after
//!   `Retry-After` or `retry-after-ms` when sent; never a 400/401/403/404);
//!   lenient answer types that accept servers omitting `usage`, `object`
//!   or `index`, and checks of the answer's indices.
//! - **One dimension per run**: the first answer fixes the dimension (unless
//!   [`OpenAiEmbedConfig::dimensions`] does); any later vector of another
//!   length is [`EmbedError::DimensionMismatch`], never written.
//!
//! The API key is sent as a bearer token and is never logged, formatted by
//! `Debug`, or put in an error message.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bpe_openai::Tokenizer;
use futures::future::BoxFuture;
use kg_core::ratelimit::RateLimits;
use kg_core::retry::{RetryDecision, RetryPolicy, Retryable};
use kg_llm::{BreakerConfig, CallError, Client, ClientConfig, EndpointConfig};
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
    /// Most tokens (cl100k) per request, over all its texts.
    pub max_tokens_per_request: usize,
    /// Most requests in flight at once.
    pub concurrency: usize,
    /// Requests- and tokens-per-minute budgets.
    pub rate_limits: RateLimits,
    /// Timeout of one HTTP request.
    pub timeout: Duration,
    /// Retries of a failed request.
    pub retry: RetryPolicy,
    /// When connection failures (nothing answers at the base URL) stop the
    /// run: by default 3 failed attempts over 2 s.
    pub breaker: BreakerConfig,
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
    /// kg-core's default retry policy, kg-llm's default breaker.
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
            breaker: BreakerConfig::default(),
            dimensions: None,
        }
    }
}

/// Counters of an [`OpenAiEmbedder`], since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenAiStats {
    /// HTTP requests that reached the server (retries included).
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
    /// Attempts that could not connect (refused, DNS, TLS): not requests.
    pub connection_failures: u64,
}

/// A client of an OpenAI-compatible embeddings endpoint.
pub struct OpenAiEmbedder {
    config: OpenAiEmbedConfig,
    client: Client,
    bpe: &'static Tokenizer,
    /// The learned dimension; 0 until the first answer.
    dimensions: AtomicUsize,
    /// Numbers requests in logs and errors.
    next_request: AtomicU64,
    cancel: CancellationToken,
}

impl std::fmt::Debug for OpenAiEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiEmbedder")
            .field("url", &self.url())
            .field("model", &self.config.model)
            .field("dimensions", &self.dimensions())
            .finish_non_exhaustive()
    }
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
                "embedding base URL {:?} must start with http:// or https://",
                kg_core::secret::redact_url(base)
            )));
        }
        let mut endpoint = EndpointConfig::new(base);
        endpoint.api_key = config.api_key.clone();
        endpoint.request_timeout = config.timeout;
        let mut llm = ClientConfig::new(endpoint);
        llm.concurrency = config.concurrency.max(1);
        llm.rate_limits = config.rate_limits;
        llm.retry = config.retry.clone();
        llm.breaker = config.breaker;
        let client = Client::new(llm).map_err(|e| EmbedError::Config(e.0))?;
        // cl100k_base, the encoding of OpenAI's embedding models: a
        // process-wide table, loaded once, shared by every embedder.
        let bpe = bpe_openai::cl100k_base();
        Ok(Self {
            dimensions: AtomicUsize::new(config.dimensions.unwrap_or(0)),
            client,
            bpe,
            next_request: AtomicU64::new(1),
            cancel: CancellationToken::new(),
            config,
        })
    }

    /// Makes waits end early when `cancel` fires: a retry wait (the request
    /// then fails with its last error) or the wait for a slot or a budget
    /// (the request is then not sent: [`EmbedError::NotSent`]).
    pub fn with_cancel(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// The endpoint requests go to (credentials in the URL redacted).
    pub fn url(&self) -> &str {
        self.client.embeddings_url()
    }

    /// The counters so far.
    pub fn stats(&self) -> OpenAiStats {
        let s = self.client.stats();
        OpenAiStats {
            requests: s.calls,
            retries: s.retries,
            failed: s.failed,
            inputs: s.embedded_inputs,
            prompt_tokens: s.prompt_tokens,
            connection_failures: s.connection_failures,
        }
    }

    /// Splits `0..counts.len()` into request ranges by count and token
    /// budget, `counts[i]` being the tokens of text `i`.
    fn plan_requests(&self, counts: &[usize]) -> Vec<(std::ops::Range<usize>, usize)> {
        let mut plan = Vec::new();
        let (mut start, mut tokens) = (0usize, 0usize);
        for (i, &t) in counts.iter().enumerate() {
            let full = i - start >= self.config.batch_size
                || (i > start && tokens + t > self.config.max_tokens_per_request);
            if full {
                plan.push((start..i, tokens));
                start = i;
                tokens = 0;
            }
            tokens += t;
        }
        if start < counts.len() {
            plan.push((start..counts.len(), tokens));
        }
        plan
    }

    /// Sends `texts` in requests planned by `counts` (their tokens).
    async fn embed_planned(
        &self,
        texts: &[String],
        counts: &[usize],
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let plan = self.plan_requests(counts);
        let requests = plan.into_iter().map(|(range, tokens)| {
            let slice = texts.get(range).unwrap_or_default();
            self.request(slice, tokens)
        });
        let answers = futures::future::try_join_all(requests).await?;
        Ok(answers.into_iter().flatten().collect())
    }

    /// One request, with its retries (kg-llm), then the dimension check.
    async fn request(&self, texts: &[String], tokens: usize) -> Result<Vec<Vec<f32>>, EmbedError> {
        let request_no = self.next_request.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            request = request_no,
            inputs = texts.len(),
            tokens,
            "embeddings request"
        );
        let vectors = self
            .client
            .embed_counted(
                &self.config.model,
                texts,
                self.config.dimensions,
                tokens as u64,
                &self.cancel,
            )
            .await
            .map_err(|e| self.error(e, request_no))?;
        for v in &vectors {
            self.check_dimension(v.len(), request_no)?;
        }
        Ok(vectors)
    }

    /// The embedder's error for a failed call.
    fn error(&self, e: CallError, request: u64) -> EmbedError {
        let url = self.url().to_string();
        match e {
            CallError::Status {
                status,
                message,
                retry_after,
            } => EmbedError::Http {
                url,
                request,
                status,
                message: shorten(message.trim(), 300),
                retry_after_secs: retry_after.map(|d| d.as_secs_f64()),
            },
            CallError::Timeout(after) => EmbedError::Transport {
                url,
                request,
                detail: format!("no answer within {after:?}"),
                timeout: true,
            },
            CallError::Connect(detail) | CallError::Transport(detail) => EmbedError::Transport {
                url,
                request,
                detail,
                timeout: false,
            },
            CallError::Malformed(detail) => EmbedError::MalformedResponse {
                url,
                request,
                detail,
            },
            CallError::Encode(detail) => EmbedError::Config(format!(
                "embeddings request {request} could not be encoded: {detail}"
            )),
            CallError::Cancelled => EmbedError::NotSent { url, request },
            CallError::EndpointUnreachable {
                attempts,
                last_error,
                ..
            } => EmbedError::EndpointUnreachable {
                url,
                attempts,
                last_error,
            },
        }
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
        self.bpe.count(text)
    }

    fn embed<'a>(
        &'a self,
        texts: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>> {
        Box::pin(async move {
            if texts.is_empty() {
                return Ok(Vec::new());
            }
            let counts: Vec<usize> = texts.iter().map(|t| self.count_tokens(t)).collect();
            self.embed_planned(texts, &counts).await
        })
    }

    fn embed_counted<'a>(
        &'a self,
        texts: &'a [String],
        tokens: &'a [usize],
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>> {
        if tokens.len() != texts.len() {
            return self.embed(texts);
        }
        Box::pin(async move {
            if texts.is_empty() {
                return Ok(Vec::new());
            }
            self.embed_planned(texts, tokens).await
        })
    }
}
