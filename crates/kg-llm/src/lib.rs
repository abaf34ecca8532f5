//! kg-llm: one client for OpenAI-compatible HTTP APIs, shared by every
//! stage that talks to a model: chat completions (kg-extract), streamed
//! chat completions (`kg ask`), embeddings (kg-embed).
//!
//! # Why one client
//!
//! Talking to a paid, rate-limited, sometimes absent server is the same
//! problem whatever is asked: budgets before sending, a retry policy that
//! sees the HTTP status and `Retry-After`, concurrency that backs off when
//! the server is overloaded, counters, and knowing when to stop. Written
//! once here, beside kg-core, the stage crates keep to what they are about
//! (prompts and validation, batching and caching) and never import each
//! other.
//!
//! # One logical call
//!
//! [`Client::complete`], [`Client::complete_with`],
//! [`Client::complete_stream`] and [`Client::embed`] run one *logical*
//! call; each of its attempts goes, in order, through:
//!
//! 1. **the gate** (slow start, fatal latch, circuit breaker; below);
//! 2. **the budgets**: kg-core's [`RateLimiter`](kg_core::ratelimit), one
//!    request and its estimated tokens (prompt plus completion cap);
//! 3. **the adaptive limit**: kg-core's
//!    [`AdaptiveConcurrency`](kg_core::adaptive) (AIMD, at most
//!    [`ClientConfig::concurrency`]), halved on a 429 or a timeout;
//! 4. **the HTTP attempt** (reqwest, async-openai's types as the wire
//!    format);
//!
//! all inside kg-core's [`RetryPolicy`](kg_core::retry::RetryPolicy): 429,
//! 408, 409, 425, 5xx, timeouts, connection errors and malformed answers
//! are retried with backoff, after the server's `retry-after-ms` /
//! `Retry-After` when it sends one; 400, 401, 403, 404 never are. Waits
//! end early when the caller's `CancellationToken` fires. async-openai's
//! own client is not used: it retries 429s by itself, blind to our budgets
//! and counters, and hides the status and `Retry-After` this needs.
//!
//! # The gate
//!
//! - **Slow start.** Until the endpoint has answered once (any HTTP answer
//!   that is not fatal: a 200, a 429, a 500, a 400), one request at a time.
//!   A wrong key, URL or port costs one request, not `concurrency` of them.
//!   The client's first probe is a key probe, `GET {base}/models` (fast on
//!   OpenAI, Ollama, vLLM and llama.cpp): a success opens the gate at once,
//!   so a healthy server costs one short round trip, not a whole completion,
//!   before full concurrency; a 401/403 is latched like any fatal answer
//!   (a wrong key costs no paid call); anything else (no such route, a
//!   timeout within 5 s) says nothing and the first real call is the
//!   probe.
//! - **Fatal latch.** A 401, 403 or 404 is remembered: every queued and
//!   later attempt fails at once with the same error, without a request,
//!   until [`Client::reopen`]. A stage that stops its run on
//!   [`CallError::is_fatal`] so sends at most the one request.
//! - **Circuit breaker.** Attempts that get no HTTP answer at all
//!   (connection refused, DNS failure, TLS error, connect timeout) put the
//!   gate back into slow start, with probes spaced out; after
//!   [`BreakerConfig::failures`] of them in a row spanning at least
//!   [`BreakerConfig::window`] (default 3 over 2 s) the breaker opens: every
//!   call fails at once with [`CallError::EndpointUnreachable`] (fatal,
//!   naming the URL with any credentials redacted, never the key) for
//!   [`BreakerConfig::cooldown`] (30 s), then one probe may try again. A
//!   dead endpoint costs about 3 attempts and 2 s, however many calls wait.
//!
//! # What counts as a call
//!
//! [`LlmStats::calls`] counts attempts that reached a server: it answered
//! (any status), or its answer timed out or broke after the connection was
//! made. Attempts that could not connect are counted apart
//! ([`LlmStats::connection_failures`]), and attempts the gate refused
//! ([`LlmStats::refused`]) sent nothing. Tokens come from `usage`; where a
//! server sends none they are estimated (4 characters a token) and counted
//! in [`LlmStats::usage_missing`].
//!
//! This crate must never: log or return the API key; retry a 400, 401, 403
//! or 404; send more than one request before the endpoint has answered.
//!
//! ```no_run
//! use async_openai::types::{
//!     ChatCompletionRequestMessage, ChatCompletionRequestUserMessage,
//!     ChatCompletionRequestUserMessageContent, CreateChatCompletionRequest,
//! };
//! use futures::StreamExt;
//! use kg_llm::{Client, ClientConfig, EndpointConfig};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mut endpoint = EndpointConfig::new("http://localhost:11434/v1");
//! endpoint.api_key = std::env::var("OPENAI_API_KEY").ok().map(kg_core::Secret::new);
//! let client = Client::new(ClientConfig::new(endpoint))?;
//! let cancel = CancellationToken::new();
//!
//! #[allow(deprecated)]
//! let request = CreateChatCompletionRequest {
//!     model: "llama3.1".into(),
//!     messages: vec![ChatCompletionRequestMessage::User(ChatCompletionRequestUserMessage {
//!         content: ChatCompletionRequestUserMessageContent::Text("Who founded Debian?".into()),
//!         name: None,
//!     })],
//!     max_tokens: Some(256),
//!     ..Default::default()
//! };
//! let answer = client.complete(&request, &cancel).await?;
//! println!("{} ({:?})", answer.content, answer.finish_reason);
//!
//! // The same, streamed.
//! let mut deltas = client.complete_stream(&request, &cancel);
//! while let Some(delta) = deltas.next().await {
//!     print!("{}", delta?.content);
//! }
//!
//! let vectors = client
//!     .embed("nomic-embed-text", &["Debian".to_string()], None, &cancel)
//!     .await?;
//! println!("{} dimensions; {:?}", vectors[0].len(), client.stats());
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod chat;
mod client;
mod config;
mod embed;
mod error;
mod gate;
mod stats;

pub use chat::{Completion, Delta, Usage};
pub use client::Client;
pub use config::{BreakerConfig, ClientConfig, ConfigError, EndpointConfig};
pub use error::{CallError, Checked};
pub use stats::LlmStats;

/// Re-exported so callers can set budgets and retries without naming
/// kg-core's modules.
pub use kg_core::{ratelimit::RateLimits, retry::RetryPolicy};
