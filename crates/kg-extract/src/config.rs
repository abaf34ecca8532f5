//! Extraction settings: the endpoint, the schema, limits, cache and prices.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use kg_core::pool::MAX_WORKERS;
use kg_core::ratelimit::RateLimits;
use kg_core::retry::RetryPolicy;
use kg_core::Chunk;
use kg_llm::{BreakerConfig, EndpointConfig};
use serde::{Deserialize, Serialize};

use crate::{ExtractError, ExtractSchema};

/// Where the OpenAI-compatible chat API is and how to talk to it.
#[derive(Clone, PartialEq)]
pub struct LlmEndpoint {
    /// Base URL up to and including `/v1` (`https://api.openai.com/v1`,
    /// `http://localhost:11434/v1` for Ollama, ...).
    pub base_url: String,
    /// The API key, sent as `Authorization: Bearer`; never logged.
    pub api_key: Option<kg_core::Secret>,
    /// The model name.
    pub model: String,
    /// `OpenAI-Organization` header, if any.
    pub organization: Option<String>,
    /// Extra headers (e.g. `api-key` for Azure-style gateways).
    pub headers: Vec<(String, String)>,
    /// Timeout of one HTTP request, answer included.
    pub request_timeout: Duration,
}

impl fmt::Debug for LlmEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmEndpoint")
            .field("base_url", &kg_core::secret::redact_url(&self.base_url))
            .field("api_key", &self.api_key)
            .field("model", &self.model)
            .field("organization", &self.organization)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl LlmEndpoint {
    /// An endpoint at `base_url` serving `model`, no key, 120 s timeout.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            model: model.into(),
            organization: None,
            headers: Vec::new(),
            request_timeout: Duration::from_secs(120),
        }
    }

    /// `{base_url}/chat/completions`.
    pub fn chat_url(&self) -> String {
        self.to_endpoint_config().chat_url()
    }

    /// The kg-llm endpoint this describes (everything but the model).
    pub fn to_endpoint_config(&self) -> EndpointConfig {
        let mut e = EndpointConfig::new(self.base_url.clone());
        e.api_key = self.api_key.clone();
        e.organization = self.organization.clone();
        e.headers = self.headers.clone();
        e.request_timeout = self.request_timeout;
        e
    }

    /// The kg-llm client of this endpoint with these limits (what the
    /// extractor and the summariser each talk through).
    pub(crate) fn client(
        &self,
        concurrency: usize,
        rate_limits: RateLimits,
        retry: &RetryPolicy,
        breaker: BreakerConfig,
    ) -> Result<kg_llm::Client, ExtractError> {
        let mut llm = kg_llm::ClientConfig::new(self.to_endpoint_config());
        llm.concurrency = concurrency;
        llm.rate_limits = rate_limits;
        llm.retry = retry.clone();
        llm.breaker = breaker;
        kg_llm::Client::new(llm).map_err(|e| ExtractError::Client(e.0))
    }
}

/// The smallest completion cap sized from a chunk.
pub const MIN_COMPLETION_CAP: u32 = 512;
/// The largest completion cap sized from a chunk.
pub const MAX_COMPLETION_CAP: u32 = 4096;

/// The completion cap of a chunk when none is configured:
/// `clamp(chunk_tokens × 2 + 256, 512, 4096)`, where `chunk_tokens` is the
/// chunk's token count (or its length / 4 when the chunk has none). An
/// extraction (names, types, one-sentence descriptions, relations) is
/// rarely longer than twice its text; the floor leaves room for the JSON
/// around a short chunk's few entities, the ceiling bounds what a model
/// stuck in a loop can cost.
pub fn default_completion_cap(chunk: &Chunk) -> u32 {
    let tokens = if chunk.tokens > 0 {
        chunk.tokens
    } else {
        u32::try_from(chunk.text.len() / 4).unwrap_or(u32::MAX)
    };
    tokens
        .saturating_mul(2)
        .saturating_add(256)
        .clamp(MIN_COMPLETION_CAP, MAX_COMPLETION_CAP)
}

/// How to ask for JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AnswerFormat {
    /// `json_schema` (strict); if the server rejects it with a 400, switch
    /// to `json_object` for the rest of the run.
    #[default]
    Auto,
    /// Always `json_schema`, strict.
    JsonSchema,
    /// Always `json_object` (the schema goes in the prompt only).
    JsonObject,
}

/// Price of one model, in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ModelPrice {
    /// Per million prompt tokens.
    pub prompt_per_million: f64,
    /// Per million completion tokens.
    pub completion_per_million: f64,
}

/// Prices by model name. [`PriceTable::default`] knows a few OpenAI models
/// (list prices when written; override them from configuration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceTable(pub BTreeMap<String, ModelPrice>);

impl Default for PriceTable {
    fn default() -> Self {
        let mut m = BTreeMap::new();
        for (name, p, c) in [
            ("gpt-4o-mini", 0.15, 0.60),
            ("gpt-4o", 2.50, 10.00),
            ("gpt-4.1-mini", 0.40, 1.60),
            ("gpt-4.1", 2.00, 8.00),
            ("gpt-4.1-nano", 0.10, 0.40),
        ] {
            m.insert(
                name.to_string(),
                ModelPrice {
                    prompt_per_million: p,
                    completion_per_million: c,
                },
            );
        }
        Self(m)
    }
}

impl PriceTable {
    /// The cost of the tokens with `model`, or `None` for an unknown model.
    pub fn cost(&self, model: &str, prompt: u64, completion: u64) -> Option<f64> {
        let p = self.0.get(model)?;
        Some(
            (prompt as f64 * p.prompt_per_million + completion as f64 * p.completion_per_million)
                / 1e6,
        )
    }
}

/// Everything an [`crate::Extractor`] needs. Build with
/// [`ExtractConfig::new`], adjust fields, and [`ExtractConfig::validate`]
/// (the extractor does it too).
#[derive(Debug, Clone)]
pub struct ExtractConfig {
    /// The chat API.
    pub endpoint: LlmEndpoint,
    /// What may be extracted.
    pub schema: ExtractSchema,
    /// How JSON is asked for.
    pub answer_format: AnswerFormat,
    /// The most LLM calls in flight (1..=50); the adaptive limit moves below
    /// it on 429s and timeouts.
    pub concurrency: usize,
    /// Worker tasks of the pool (1..=50); `None` = `concurrency`.
    pub workers: Option<usize>,
    /// Requests and tokens per minute.
    pub rate_limits: RateLimits,
    /// Attempts and backoff for 429, 5xx, timeouts, connection errors and
    /// unparsable answers.
    pub retry: RetryPolicy,
    /// When connection failures (nothing answers at the base URL) stop the
    /// run: by default 3 failed attempts over 2 s.
    pub breaker: BreakerConfig,
    /// Directory of the response cache; `None` disables it.
    pub cache_dir: Option<PathBuf>,
    /// Prices for the cost figure.
    pub prices: PriceTable,
    /// The completion cap of every answer; `None` sizes it per chunk
    /// ([`default_completion_cap`]). A cap is always sent, so a model stuck
    /// in a loop costs at most the cap.
    pub max_completion_tokens: Option<u32>,
    /// Sampling temperature (0 keeps answers repeatable).
    pub temperature: f32,
}

impl ExtractConfig {
    /// Defaults for `endpoint`: open schema, auto JSON format, concurrency
    /// 8, no rate budget, default retry policy, no cache.
    pub fn new(endpoint: LlmEndpoint) -> Self {
        Self {
            endpoint,
            schema: ExtractSchema::open(),
            answer_format: AnswerFormat::Auto,
            concurrency: 8,
            workers: None,
            rate_limits: RateLimits::default(),
            retry: RetryPolicy::default(),
            breaker: BreakerConfig::default(),
            cache_dir: None,
            prices: PriceTable::default(),
            max_completion_tokens: None,
            temperature: 0.0,
        }
    }

    /// Checks ranges and the endpoint.
    pub fn validate(&self) -> Result<(), ExtractError> {
        if !(1..=MAX_WORKERS).contains(&self.concurrency) {
            return Err(ExtractError::Config(format!(
                "concurrency {} is out of range: use 1 to {MAX_WORKERS}",
                self.concurrency
            )));
        }
        if let Some(w) = self.workers {
            if !(1..=MAX_WORKERS).contains(&w) {
                return Err(ExtractError::Config(format!(
                    "workers {w} is out of range: use 1 to {MAX_WORKERS}"
                )));
            }
        }
        let url = &self.endpoint.base_url;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ExtractError::Config(format!(
                "LLM base URL {url:?} must start with http:// or https://"
            )));
        }
        if self.endpoint.model.trim().is_empty() {
            return Err(ExtractError::Config("the model name is empty".into()));
        }
        if self.endpoint.request_timeout.is_zero() {
            return Err(ExtractError::Config("the request timeout is zero".into()));
        }
        if self.max_completion_tokens == Some(0) {
            return Err(ExtractError::Config(
                "max completion tokens must be at least 1".into(),
            ));
        }
        self.breaker
            .validate()
            .map_err(|e| ExtractError::Config(e.0))?;
        if !(0.0..=2.0).contains(&self.temperature) {
            return Err(ExtractError::Config(format!(
                "temperature {} is out of range 0..=2",
                self.temperature
            )));
        }
        Ok(())
    }

    /// The worker count actually used.
    pub fn worker_count(&self) -> usize {
        self.workers.unwrap_or(self.concurrency)
    }

    /// The completion cap sent with `chunk`: the configured one, else
    /// [`default_completion_cap`].
    pub fn completion_cap(&self, chunk: &Chunk) -> u32 {
        self.max_completion_tokens
            .unwrap_or_else(|| default_completion_cap(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kg_core::{ChunkId, DocumentId};

    fn chunk(tokens: u32, text: &str) -> Chunk {
        let doc = DocumentId::from_content_sha256(&kg_core::sha256_hex(b"d"));
        Chunk {
            id: ChunkId::new(&doc, 0, text),
            document_id: doc,
            index: 0,
            text: text.into(),
            tokens,
            source: "d.md".into(),
            page_start: None,
            page_end: None,
        }
    }

    #[test]
    fn the_completion_cap_is_sized_from_the_chunk() {
        assert_eq!(default_completion_cap(&chunk(10, "x")), 512, "floor");
        assert_eq!(default_completion_cap(&chunk(500, "x")), 1256);
        assert_eq!(default_completion_cap(&chunk(5000, "x")), 4096, "ceiling");
        // No token count: a quarter of the characters.
        assert_eq!(default_completion_cap(&chunk(0, &"abcd".repeat(600))), 1456);
        let mut config = ExtractConfig::new(LlmEndpoint::new("http://u:pw@h/v1", "m"));
        let shown = format!("{config:?}");
        assert!(
            shown.contains("http://***@h/v1") && !shown.contains("pw"),
            "{shown}"
        );
        assert_eq!(config.completion_cap(&chunk(500, "x")), 1256);
        config.max_completion_tokens = Some(300);
        assert_eq!(config.completion_cap(&chunk(500, "x")), 300);
        config.max_completion_tokens = Some(0);
        assert!(config.validate().is_err());
    }
}
