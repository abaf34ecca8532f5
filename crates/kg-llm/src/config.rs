//! Where the server is, how to talk to it, and how hard to push it.

use std::fmt;
use std::time::Duration;

use kg_core::ratelimit::RateLimits;
use kg_core::retry::RetryPolicy;
use kg_core::Secret;

/// A setting that cannot work, found before any request is sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid LLM client configuration: {0}")]
pub struct ConfigError(pub String);

/// Where an OpenAI-compatible API is and how to authenticate to it.
#[derive(Clone, PartialEq)]
pub struct EndpointConfig {
    /// Base URL up to and including `/v1` (`https://api.openai.com/v1`,
    /// `http://localhost:11434/v1` for Ollama, ...).
    pub base_url: String,
    /// The API key, sent as `Authorization: Bearer`; never logged, never in
    /// an error message.
    pub api_key: Option<Secret>,
    /// `OpenAI-Organization` header, if any.
    pub organization: Option<String>,
    /// Extra headers (e.g. `api-key` for Azure-style gateways); their values
    /// are treated as secrets.
    pub headers: Vec<(String, String)>,
    /// Timeout of one HTTP request, answer included (for a streamed answer:
    /// until the first byte, then between two pieces).
    pub request_timeout: Duration,
    /// Timeout of establishing a connection (TCP and TLS); capped by
    /// `request_timeout`. A connect timeout counts as a connection failure
    /// for the breaker.
    pub connect_timeout: Duration,
}

impl fmt::Debug for EndpointConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointConfig")
            .field("base_url", &kg_core::secret::redact_url(&self.base_url))
            .field("api_key", &self.api_key)
            .field("organization", &self.organization)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl EndpointConfig {
    /// An endpoint at `base_url`, no key, a 120 s request timeout and a
    /// 10 s connect timeout.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            organization: None,
            headers: Vec::new(),
            request_timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(10),
        }
    }

    fn base(&self) -> &str {
        self.base_url.trim_end_matches('/')
    }

    /// `{base_url}/chat/completions`.
    pub fn chat_url(&self) -> String {
        format!("{}/chat/completions", self.base())
    }

    /// `{base_url}/embeddings`.
    pub fn embeddings_url(&self) -> String {
        format!("{}/embeddings", self.base())
    }

    /// `{base_url}/models`: the key probe's target.
    pub fn models_url(&self) -> String {
        format!("{}/models", self.base())
    }

    /// Checks the URL and the timeouts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let base = self.base();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ConfigError(format!(
                "base URL {:?} must start with http:// or https://",
                kg_core::secret::redact_url(base)
            )));
        }
        if self.request_timeout.is_zero() {
            return Err(ConfigError("the request timeout is zero".into()));
        }
        if self.connect_timeout.is_zero() {
            return Err(ConfigError("the connect timeout is zero".into()));
        }
        Ok(())
    }
}

/// When consecutive connection failures open the circuit breaker.
///
/// The breaker opens after `failures` consecutive attempts that got no HTTP
/// answer at all (connection refused, DNS, TLS, connect timeout), the
/// first and the last at least `window` apart. While it is not open, such
/// failures put the client back into slow start and space its probes
/// `window / (failures - 1)` apart, so with the defaults (3 over 2 s) a
/// dead endpoint costs 3 attempts and about 2 s, whatever the concurrency
/// and the number of calls queued. Once open, every call fails at once
/// with [`crate::CallError::EndpointUnreachable`] for `cooldown`; after it,
/// one probe may try again (half-open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive connection failures that open the breaker (at least 1).
    pub failures: u32,
    /// The least time between the first and the last of them.
    pub window: Duration,
    /// How long the breaker stays open before one probe may try again.
    pub cooldown: Duration,
}

impl Default for BreakerConfig {
    /// 3 failures over 2 s; open for 30 s.
    fn default() -> Self {
        Self {
            failures: 3,
            window: Duration::from_secs(2),
            cooldown: Duration::from_secs(30),
        }
    }
}

impl BreakerConfig {
    /// Checks that at least one failure is asked for.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.failures == 0 {
            return Err(ConfigError(
                "the breaker needs at least 1 failure to open".into(),
            ));
        }
        Ok(())
    }

    /// The least time between two probes after a connection failure.
    pub fn probe_spacing(&self) -> Duration {
        self.window / self.failures.saturating_sub(1).max(1)
    }
}

/// Everything a [`crate::Client`] needs.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The server.
    pub endpoint: EndpointConfig,
    /// The most requests in flight (at least 1): the maximum of the
    /// adaptive limit, reached once the endpoint has answered.
    pub concurrency: usize,
    /// Requests and (estimated) tokens per minute.
    pub rate_limits: RateLimits,
    /// Attempts and backoff of one logical call.
    pub retry: RetryPolicy,
    /// When connection failures stop every call.
    pub breaker: BreakerConfig,
}

impl ClientConfig {
    /// Defaults for `endpoint`: 8 in flight, no rate budget, kg-core's
    /// default retry policy, the default breaker.
    pub fn new(endpoint: EndpointConfig) -> Self {
        Self {
            endpoint,
            concurrency: 8,
            rate_limits: RateLimits::default(),
            retry: RetryPolicy::default(),
            breaker: BreakerConfig::default(),
        }
    }

    /// Checks every part.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.endpoint.validate()?;
        self.breaker.validate()?;
        if self.concurrency == 0 {
            return Err(ConfigError("concurrency must be at least 1".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_validation() {
        let mut e = EndpointConfig::new("http://u:pw@h:1/v1/");
        assert_eq!(e.chat_url(), "http://u:pw@h:1/v1/chat/completions");
        assert_eq!(e.embeddings_url(), "http://u:pw@h:1/v1/embeddings");
        assert!(e.validate().is_ok());
        e.api_key = Some(Secret::new("sk-hidden"));
        let shown = format!("{e:?}");
        assert!(
            !shown.contains("sk-hidden") && !shown.contains("pw"),
            "{shown}"
        );
        e.base_url = "localhost:8080/v1".into();
        assert!(e.validate().is_err());
        let mut c = ClientConfig::new(EndpointConfig::new("http://h/v1"));
        c.concurrency = 0;
        assert!(c.validate().is_err());
        c.concurrency = 1;
        c.breaker.failures = 0;
        assert!(c.validate().is_err());
    }

    #[test]
    fn probes_are_spaced_to_fill_the_window() {
        let b = BreakerConfig::default();
        assert_eq!(b.probe_spacing(), Duration::from_secs(1));
        let one = BreakerConfig { failures: 1, ..b };
        assert_eq!(one.probe_spacing(), Duration::from_secs(2));
    }
}
