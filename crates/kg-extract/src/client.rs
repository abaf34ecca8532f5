//! One chat-completion call over HTTP, and what its failure means.
//!
//! Requests are async-openai's `CreateChatCompletionRequest`, answers are
//! read as its `CreateChatCompletionResponse` where the server sends one
//! exactly (falling back to the few fields we need where it does not:
//! llama.cpp and Ollama omit or vary `usage` and other fields). The transport
//! is our own reqwest client rather than async-openai's `Client` because the
//! latter retries 429s by itself with its own backoff (up to minutes, blind
//! to our budgets and counters) and hides the HTTP status and `Retry-After`
//! we need to decide between "retry later", "give up on this chunk" and
//! "stop the run". One retry layer, ours, sees every attempt.

use std::time::Duration;

use async_openai::types::{
    CompletionUsage, CreateChatCompletionRequest, CreateChatCompletionResponse,
};
use kg_core::retry::{retry_after, RetryDecision, Retryable};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use serde_json::Value;

use crate::answer::AnswerError;
use crate::config::LlmEndpoint;
use crate::ExtractError;

/// Why one call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum CallError {
    /// The server answered with an error status.
    #[error("HTTP {status}: {message}")]
    Status {
        status: u16,
        retry_after: Option<Duration>,
        message: String,
    },
    /// No complete answer within the request timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Connecting failed or the connection broke mid-answer.
    #[error("connection failed: {0}")]
    Connection(String),
    /// The HTTP answer is not a chat completion.
    #[error("malformed response: {0}")]
    Malformed(String),
    /// The completion's content is unusable.
    #[error("{0}")]
    Answer(AnswerError),
    /// The run was cancelled while this call waited for its turn.
    #[error("cancelled before the call was made")]
    Cancelled,
}

impl CallError {
    /// A stable snake_case reason for a set-aside record.
    pub fn reason(&self) -> kg_core::SetAsideReason {
        use kg_core::SetAsideReason as R;
        match self {
            CallError::Status { status: 429, .. } => R::RateLimited,
            CallError::Status { status, .. } if *status >= 500 => R::ServerError,
            CallError::Status { .. } => R::BadRequest,
            CallError::Timeout(_) => R::Timeout,
            CallError::Connection(_) => R::ConnectionError,
            CallError::Malformed(_) => R::MalformedResponse,
            CallError::Answer(a) => a.reason(),
            CallError::Cancelled => R::Cancelled,
        }
    }

    /// A 429 or a timeout: the server is overloaded, concurrency should drop.
    pub fn is_overload(&self) -> bool {
        matches!(
            self,
            CallError::Status { status: 429, .. } | CallError::Timeout(_)
        )
    }

    /// A 400 that says the server lacks `json_schema` response formats.
    pub fn is_schema_unsupported(&self) -> bool {
        match self {
            CallError::Status {
                status: 400 | 422,
                message,
                ..
            } => {
                let m = message.to_ascii_lowercase();
                m.contains("json_schema") || m.contains("response_format")
            }
            _ => false,
        }
    }
}

impl Retryable for CallError {
    fn retry_decision(&self) -> RetryDecision {
        match self {
            CallError::Status {
                status,
                retry_after,
                ..
            } => match status {
                408 | 409 | 425 | 429 | 500..=599 => RetryDecision::Retry {
                    after: *retry_after,
                },
                _ => RetryDecision::Fatal,
            },
            CallError::Timeout(_) | CallError::Connection(_) | CallError::Malformed(_) => {
                RetryDecision::Retry { after: None }
            }
            // A model may answer properly the next time; no need to back off
            // from the server for it.
            CallError::Answer(_) => RetryDecision::Retry {
                after: Some(Duration::ZERO),
            },
            CallError::Cancelled => RetryDecision::Fatal,
        }
    }
}

/// A completion's content and token usage.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Completion {
    pub content: String,
    pub finish_reason: Option<String>,
    /// `(prompt, completion)` tokens, if the server reported them.
    pub usage: Option<(u64, u64)>,
}

/// The HTTP side of the chat API.
#[derive(Debug, Clone)]
pub(crate) struct ChatClient {
    http: reqwest::Client,
    url: String,
    timeout: Duration,
}

impl ChatClient {
    pub fn new(endpoint: &LlmEndpoint) -> Result<Self, ExtractError> {
        let mut headers = HeaderMap::new();
        if let Some(key) = &endpoint.api_key {
            let mut v = HeaderValue::from_str(&format!("Bearer {}", key.expose())).map_err(|_| {
                ExtractError::Client("the API key is not a valid header value".into())
            })?;
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        }
        if let Some(org) = &endpoint.organization {
            let v = HeaderValue::from_str(org).map_err(|_| {
                ExtractError::Client("the organization is not a valid header value".into())
            })?;
            headers.insert(HeaderName::from_static("openai-organization"), v);
        }
        for (k, v) in &endpoint.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| ExtractError::Client(format!("header name {k:?} is invalid")))?;
            let mut value = HeaderValue::from_str(v)
                .map_err(|_| ExtractError::Client(format!("value of header {k:?} is invalid")))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(endpoint.request_timeout)
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| ExtractError::Client(e.to_string()))?;
        Ok(Self {
            http,
            url: endpoint.chat_url(),
            timeout: endpoint.request_timeout,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// One attempt: send, read, decode. No retries here.
    pub async fn complete(
        &self,
        request: &CreateChatCompletionRequest,
    ) -> Result<Completion, CallError> {
        let response = self
            .http
            .post(&self.url)
            .json(request)
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        let status = response.status();
        if !status.is_success() {
            let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok());
            let retry_after = retry_after(header("retry-after-ms"), header("retry-after"));
            let body = response.text().await.unwrap_or_default();
            return Err(CallError::Status {
                status: status.as_u16(),
                retry_after,
                message: error_message(&body),
            });
        }
        let bytes = response.bytes().await.map_err(|e| self.transport(e))?;
        decode(&bytes)
    }

    fn transport(&self, e: reqwest::Error) -> CallError {
        if e.is_timeout() {
            CallError::Timeout(self.timeout)
        } else {
            // Connection refused/reset, a body cut mid-way: all transient.
            // Walk the source chain for a useful message; never includes
            // headers, so no key can leak.
            let mut msg = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                source = s.source();
            }
            CallError::Connection(msg)
        }
    }
}

/// The `error.message` of an OpenAI-style error body, or the body's start.
fn error_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| body.chars().take(300).collect())
}

/// Decodes a completion, strictly by async-openai's type where possible,
/// else by the fields we need.
pub(crate) fn decode(bytes: &[u8]) -> Result<Completion, CallError> {
    if let Ok(typed) = serde_json::from_slice::<CreateChatCompletionResponse>(bytes) {
        let choice = typed
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| CallError::Malformed("no choices".into()))?;
        return Ok(Completion {
            content: choice.message.content.unwrap_or_default(),
            finish_reason: choice
                .finish_reason
                .and_then(|f| serde_json::to_value(f).ok())
                .and_then(|v| v.as_str().map(str::to_string)),
            usage: typed.usage.map(|u: CompletionUsage| {
                (u64::from(u.prompt_tokens), u64::from(u.completion_tokens))
            }),
        });
    }
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| CallError::Malformed(format!("not JSON: {e}")))?;
    let choice = v
        .pointer("/choices/0")
        .ok_or_else(|| CallError::Malformed("no choices".into()))?;
    let content = choice
        .pointer("/message/content")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let usage = v.get("usage").and_then(|u| {
        let p = u.get("prompt_tokens").and_then(Value::as_u64);
        let c = u.get("completion_tokens").and_then(Value::as_u64);
        match (p, c) {
            (None, None) => None,
            (p, c) => Some((p.unwrap_or(0), c.unwrap_or(0))),
        }
    });
    Ok(Completion {
        content,
        finish_reason: choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .map(str::to_string),
        usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_openai_and_lenient_shapes() {
        let openai = br#"{"id":"x","object":"chat.completion","created":1,"model":"m",
            "choices":[{"index":0,"message":{"role":"assistant","content":"{}"},"finish_reason":"stop","logprobs":null}],
            "usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}"#;
        let c = decode(openai).unwrap();
        assert_eq!(
            (c.content.as_str(), c.usage, c.finish_reason.as_deref()),
            ("{}", Some((10, 5)), Some("stop"))
        );
        // llama.cpp-like: no `object`, usage without total.
        let lenient = br#"{"choices":[{"message":{"content":"hi"},"finish_reason":"length"}],"usage":{"prompt_tokens":3}}"#;
        let c = decode(lenient).unwrap();
        assert_eq!(
            (c.content.as_str(), c.usage, c.finish_reason.as_deref()),
            ("hi", Some((3, 0)), Some("length"))
        );
        let no_usage = br#"{"choices":[{"message":{"content":"hi"}}]}"#;
        assert_eq!(decode(no_usage).unwrap().usage, None);
        assert!(matches!(
            decode(b"{\"choices\":[]}"),
            Err(CallError::Malformed(_))
        ));
        assert!(matches!(decode(b"<html>"), Err(CallError::Malformed(_))));
    }

    #[test]
    fn classifies_statuses() {
        let s = |status| CallError::Status {
            status,
            retry_after: None,
            message: String::new(),
        };
        for code in [429, 500, 502, 503, 504, 408] {
            assert!(
                matches!(s(code).retry_decision(), RetryDecision::Retry { .. }),
                "{code}"
            );
        }
        for code in [400, 401, 403, 404, 422] {
            assert_eq!(s(code).retry_decision(), RetryDecision::Fatal, "{code}");
        }
        assert!(s(429).is_overload());
        assert!(CallError::Timeout(Duration::from_secs(1)).is_overload());
        assert!(!s(500).is_overload());
        let schema = CallError::Status {
            status: 400,
            retry_after: None,
            message: "response_format json_schema unsupported".into(),
        };
        assert!(schema.is_schema_unsupported());
        assert!(!s(400).is_schema_unsupported());
    }
}
