//! What one call can end with, and what each ending means for the caller.

use std::fmt;
use std::time::Duration;

use kg_core::retry::{RetryDecision, Retryable};
use kg_core::SetAsideReason;

/// Why a call failed. Messages name the endpoint where it matters and never
/// contain the API key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// The server answered with an error status.
    #[error("HTTP {status}: {message}")]
    Status {
        /// The HTTP status code.
        status: u16,
        /// The server's `error.message` (or the start of its body).
        message: String,
        /// The wait the server asked for (`retry-after-ms`, `Retry-After`).
        retry_after: Option<Duration>,
    },
    /// No (complete) answer within the request timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// No HTTP answer at all: connection refused, DNS failure, TLS error,
    /// connect timeout. Feeds the circuit breaker.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The connection broke after the server was reached (a cut answer).
    #[error("connection broken: {0}")]
    Transport(String),
    /// The server answered 200 with something that is not the API's answer.
    #[error("malformed response: {0}")]
    Malformed(String),
    /// The request could not be encoded.
    #[error("cannot encode the request: {0}")]
    Encode(String),
    /// The caller cancelled before the request was sent, or during a retry
    /// wait.
    #[error("cancelled before the call was made")]
    Cancelled,
    /// The circuit breaker is open: the last attempts could not even
    /// connect. Every call fails at once until the breaker's cooldown ends.
    #[error("the LLM endpoint {url} is unreachable: {attempts} connection attempt(s) in a row failed (last: {last_error})")]
    EndpointUnreachable {
        /// The endpoint, credentials in the URL redacted.
        url: String,
        /// Consecutive attempts that could not connect.
        attempts: u32,
        /// The last connection error.
        last_error: String,
    },
}

impl CallError {
    /// Whether no call to this endpoint can succeed now: a refused key
    /// (401, 403), a wrong URL or model (404), an unreachable endpoint. A
    /// stage stops its run on these.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            CallError::Status {
                status: 401 | 403 | 404,
                ..
            } | CallError::EndpointUnreachable { .. }
        )
    }

    /// A 429 or a timeout: the server is overloaded, concurrency should drop.
    pub fn is_overload(&self) -> bool {
        matches!(
            self,
            CallError::Status { status: 429, .. } | CallError::Timeout(_)
        )
    }

    /// The HTTP status, if the server answered with an error status.
    pub fn status(&self) -> Option<u16> {
        match self {
            CallError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The set-aside reason of a chat call that failed with this error.
    pub fn chat_reason(&self) -> SetAsideReason {
        use SetAsideReason as R;
        match self {
            CallError::Status { status: 429, .. } => R::RateLimited,
            CallError::Status { status, .. } if *status >= 500 => R::ServerError,
            CallError::Status { .. } | CallError::Encode(_) => R::BadRequest,
            CallError::Timeout(_) => R::Timeout,
            CallError::Connect(_)
            | CallError::Transport(_)
            | CallError::EndpointUnreachable { .. } => R::ConnectionError,
            CallError::Malformed(_) => R::MalformedResponse,
            CallError::Cancelled => R::Cancelled,
        }
    }

    /// The set-aside reason of an embeddings call that failed with this
    /// error.
    pub fn embed_reason(&self) -> SetAsideReason {
        use SetAsideReason as R;
        match self {
            CallError::Status { status: 429, .. } => R::EmbedRateLimited,
            CallError::Status { status, .. } if *status >= 500 => R::EmbedServerError,
            CallError::Status { .. } | CallError::Encode(_) => R::EmbedRejected,
            CallError::Timeout(_)
            | CallError::Connect(_)
            | CallError::Transport(_)
            | CallError::EndpointUnreachable { .. } => R::EmbedTransport,
            CallError::Malformed(_) => R::EmbedMalformedResponse,
            CallError::Cancelled => R::Cancelled,
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
            CallError::Timeout(_)
            | CallError::Connect(_)
            | CallError::Transport(_)
            | CallError::Malformed(_) => RetryDecision::Retry { after: None },
            CallError::Encode(_) | CallError::Cancelled | CallError::EndpointUnreachable { .. } => {
                RetryDecision::Fatal
            }
        }
    }
}

/// The error of a call whose answer the caller also checks
/// ([`crate::Client::complete_with`]): the call failed, or the caller
/// rejected the answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Checked<E> {
    /// The call itself failed.
    Call(CallError),
    /// The call succeeded but the caller's check rejected the answer.
    Check(E),
}

impl<E: fmt::Display> fmt::Display for Checked<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Checked::Call(e) => e.fmt(f),
            Checked::Check(e) => e.fmt(f),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for Checked<E> {}

impl<E: Retryable> Retryable for Checked<E> {
    fn retry_decision(&self) -> RetryDecision {
        match self {
            Checked::Call(e) => e.retry_decision(),
            Checked::Check(e) => e.retry_decision(),
        }
    }
}

/// The `error.message` of an OpenAI-style error body, or the body's start.
pub(crate) fn error_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .and_then(serde_json::Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| body.trim().chars().take(300).collect())
}

/// A reqwest error with its cause chain (reqwest's own message is terse),
/// without the URL (the caller names the endpoint itself, redacted).
/// reqwest errors never include headers, so no key can leak.
pub(crate) fn error_chain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let part = s.to_string();
        if !msg.contains(&part) {
            msg.push_str(": ");
            msg.push_str(&part);
        }
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16) -> CallError {
        CallError::Status {
            status,
            message: String::new(),
            retry_after: None,
        }
    }

    #[test]
    fn classifies_statuses() {
        for code in [429, 500, 502, 503, 504, 408, 409, 425] {
            assert!(
                matches!(status(code).retry_decision(), RetryDecision::Retry { .. }),
                "{code}"
            );
        }
        for code in [400, 401, 403, 404, 422] {
            assert_eq!(
                status(code).retry_decision(),
                RetryDecision::Fatal,
                "{code}"
            );
        }
        for code in [401, 403, 404] {
            assert!(status(code).is_fatal(), "{code}");
        }
        assert!(!status(400).is_fatal() && !status(429).is_fatal());
        assert!(status(429).is_overload());
        assert!(CallError::Timeout(Duration::from_secs(1)).is_overload());
        assert!(!status(500).is_overload());
        let unreachable = CallError::EndpointUnreachable {
            url: "http://h/v1/chat/completions".into(),
            attempts: 3,
            last_error: "connection refused".into(),
        };
        assert!(unreachable.is_fatal());
        assert_eq!(unreachable.retry_decision(), RetryDecision::Fatal);
        assert_eq!(
            CallError::Connect("refused".into()).retry_decision(),
            RetryDecision::Retry { after: None }
        );
        let after = CallError::Status {
            status: 429,
            message: String::new(),
            retry_after: Some(Duration::from_millis(250)),
        };
        assert_eq!(
            after.retry_decision(),
            RetryDecision::Retry {
                after: Some(Duration::from_millis(250))
            }
        );
    }

    #[test]
    fn reasons_keep_the_existing_codes() {
        use SetAsideReason as R;
        for (e, chat, embed) in [
            (status(429), R::RateLimited, R::EmbedRateLimited),
            (status(503), R::ServerError, R::EmbedServerError),
            (status(400), R::BadRequest, R::EmbedRejected),
            (
                CallError::Timeout(Duration::from_secs(1)),
                R::Timeout,
                R::EmbedTransport,
            ),
            (
                CallError::Connect("x".into()),
                R::ConnectionError,
                R::EmbedTransport,
            ),
            (
                CallError::Transport("x".into()),
                R::ConnectionError,
                R::EmbedTransport,
            ),
            (
                CallError::Malformed("x".into()),
                R::MalformedResponse,
                R::EmbedMalformedResponse,
            ),
            (CallError::Cancelled, R::Cancelled, R::Cancelled),
        ] {
            assert_eq!(e.chat_reason(), chat, "{e}");
            assert_eq!(e.embed_reason(), embed, "{e}");
        }
    }

    #[test]
    fn error_messages_come_from_the_body() {
        assert_eq!(
            error_message(r#"{"error": {"message": "Incorrect API key provided."}}"#),
            "Incorrect API key provided."
        );
        assert_eq!(error_message("  Not Found \n"), "Not Found");
        assert_eq!(error_message(&"x".repeat(1000)).len(), 300);
    }
}
