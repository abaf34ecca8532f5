//! The one error type of this crate.
//!
//! Variants are split by what a caller can do about them: a bad model folder
//! or a bad configuration is fixed by the user; a dimension mismatch, a
//! rejected API key or an unreachable endpoint stops the whole run
//! ([`EmbedError::is_fatal`]); a batch that kept failing after its retries
//! is set aside and the run goes on.
//! Messages name the path, the model or the batch involved, never the API key.

use std::path::PathBuf;

/// Everything that can go wrong while embedding.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The model folder lacks a file the local embedder needs.
    #[error("model folder {dir}: missing {file} (a sentence-transformers folder has config.json, tokenizer.json and model.safetensors)")]
    ModelFileMissing {
        /// The model folder.
        dir: PathBuf,
        /// The missing file's name.
        file: &'static str,
    },
    /// A model file exists but could not be read or parsed, or its tensors
    /// do not have the shapes its config.json announces.
    #[error("model file {path}: {detail}")]
    ModelInvalid {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The local model failed while computing a batch.
    #[error("local model {model}: inference failed on a batch of {batch_len} texts: {detail}")]
    Inference {
        /// The model id.
        model: String,
        /// Number of texts in the batch.
        batch_len: usize,
        /// The candle or tokenizer error.
        detail: String,
    },
    /// The configuration cannot work (zero batch size, bad URL, ...).
    #[error("invalid embedder configuration: {0}")]
    Config(String),
    /// A vector's length differs from the dimension learned from the first
    /// answer (or configured). Writing it would corrupt the vector index, so
    /// the run stops.
    #[error("model {model} returned a {actual}-dimensional vector, but earlier answers had {expected} dimensions ({context}); the server's model changed mid-run: stop, and re-embed everything with one model")]
    DimensionMismatch {
        /// The model id.
        model: String,
        /// The dimension learned first.
        expected: usize,
        /// The dimension just seen.
        actual: usize,
        /// Where it was seen (a request number, the cache).
        context: String,
    },
    /// The server answered with an HTTP error status.
    #[error("embeddings request {request} to {url} failed with HTTP {status}: {message}")]
    Http {
        /// The endpoint (no credentials).
        url: String,
        /// Which request of the run (1-based), to find it in the logs.
        request: u64,
        /// The HTTP status code.
        status: u16,
        /// The server's error message, shortened.
        message: String,
        /// Seconds the server asked us to wait (`Retry-After`), if any.
        retry_after_secs: Option<f64>,
    },
    /// The request could not be sent or its answer not received (connection
    /// refused, reset, timeout).
    #[error("embeddings request {request} to {url} failed: {detail}")]
    Transport {
        /// The endpoint (no credentials).
        url: String,
        /// Which request of the run (1-based).
        request: u64,
        /// The transport error, with its cause chain.
        detail: String,
        /// Whether it was a timeout.
        timeout: bool,
    },
    /// Nothing answers at the base URL: the circuit breaker opened after
    /// consecutive connection failures (refused, DNS, TLS). Every later
    /// batch would fail the same way, so the run stops.
    #[error("the embeddings server at {url} cannot be reached: {attempts} connection attempt(s) in a row failed (last: {last_error}); check the base URL and that the server runs, then re-run: the cache keeps every vector computed")]
    EndpointUnreachable {
        /// The endpoint (no credentials).
        url: String,
        /// Consecutive attempts that could not connect.
        attempts: u32,
        /// The last connection error.
        last_error: String,
    },
    /// The request was not sent: the embedder's cancellation token fired
    /// while it waited for a slot or a budget. Its items are set aside as
    /// `cancelled` (the next run does them).
    #[error("embeddings request {request} to {url} was not sent: cancelled")]
    NotSent {
        /// The endpoint (no credentials).
        url: String,
        /// Which request of the run (1-based).
        request: u64,
    },
    /// The server answered 200 with something that is not a valid embeddings
    /// answer for the request (bad JSON, wrong number of vectors, bad index).
    #[error("embeddings request {request} to {url}: malformed answer: {detail}")]
    MalformedResponse {
        /// The endpoint.
        url: String,
        /// Which request of the run (1-based).
        request: u64,
        /// What is wrong with it.
        detail: String,
    },
    /// The persistent cache could not be read or written.
    #[error("embedding cache {path}: {source}")]
    Cache {
        /// The cache file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The run was cancelled before it finished.
    #[error("embedding cancelled after {done} items")]
    Cancelled {
        /// Items written (or set aside) before the cancellation.
        done: u64,
    },
    /// The output channel's receiver was dropped: nobody is listening.
    #[error("embedding output channel closed after {done} items")]
    OutputClosed {
        /// Items sent before the channel closed.
        done: u64,
    },
}

impl EmbedError {
    /// Whether retrying the same request later may succeed: rate limits
    /// (429), server errors (5xx), 408/409/425, timeouts, dropped
    /// connections and malformed answers (what kg-llm retries).
    pub fn is_retriable(&self) -> bool {
        match self {
            EmbedError::Http { status, .. } => {
                matches!(status, 408 | 409 | 425 | 429) || *status >= 500
            }
            EmbedError::Transport { .. } | EmbedError::MalformedResponse { .. } => true,
            _ => false,
        }
    }

    /// Whether the whole run must stop rather than set this batch aside: a
    /// dimension change, a rejected key (401/403), a missing model (404), an
    /// unreachable endpoint, a broken configuration or cache, a
    /// cancellation. Every later batch would fail the same way or, worse,
    /// corrupt the index.
    pub fn is_fatal(&self) -> bool {
        match self {
            EmbedError::DimensionMismatch { .. }
            | EmbedError::EndpointUnreachable { .. }
            | EmbedError::Config(_)
            | EmbedError::Cache { .. }
            | EmbedError::Cancelled { .. }
            | EmbedError::OutputClosed { .. }
            | EmbedError::ModelFileMissing { .. }
            | EmbedError::ModelInvalid { .. } => true,
            EmbedError::Http { status, .. } => matches!(status, 401 | 403 | 404),
            _ => false,
        }
    }

    /// The wait the server asked for, if it sent `Retry-After`.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            EmbedError::Http {
                retry_after_secs: Some(s),
                ..
            } if s.is_finite() && *s >= 0.0 => Some(std::time::Duration::from_secs_f64(*s)),
            _ => None,
        }
    }

    /// The reason of the set-aside records of a batch that failed with this
    /// error (only errors that do not stop the run set items aside).
    pub fn set_aside_reason(&self) -> kg_core::SetAsideReason {
        use kg_core::SetAsideReason as R;
        match self {
            EmbedError::Http { status: 429, .. } => R::EmbedRateLimited,
            EmbedError::Http { status, .. } if *status >= 500 => R::EmbedServerError,
            EmbedError::Http { .. } => R::EmbedRejected,
            EmbedError::Transport { .. } | EmbedError::EndpointUnreachable { .. } => {
                R::EmbedTransport
            }
            EmbedError::MalformedResponse { .. } => R::EmbedMalformedResponse,
            EmbedError::Cancelled { .. } | EmbedError::NotSent { .. } => R::Cancelled,
            _ => R::EmbedInferenceFailed,
        }
    }

    /// A stable snake_case code for this error, for messages and metrics.
    pub fn reason_code(&self) -> &'static str {
        match self {
            EmbedError::ModelFileMissing { .. } => "embed_model_missing",
            EmbedError::ModelInvalid { .. } => "embed_model_invalid",
            EmbedError::Inference { .. } => "embed_inference_failed",
            EmbedError::Config(_) => "embed_config",
            EmbedError::DimensionMismatch { .. } => "embed_dimension_mismatch",
            EmbedError::Http { status: 429, .. } => "embed_rate_limited",
            EmbedError::Http { status, .. } if *status >= 500 => "embed_server_error",
            EmbedError::Http { .. } => "embed_rejected",
            EmbedError::Transport { .. } => "embed_transport",
            EmbedError::EndpointUnreachable { .. } => "embed_endpoint_unreachable",
            EmbedError::NotSent { .. } => "embed_not_sent",
            EmbedError::MalformedResponse { .. } => "embed_malformed_response",
            EmbedError::Cache { .. } => "embed_cache",
            EmbedError::Cancelled { .. } => "embed_cancelled",
            EmbedError::OutputClosed { .. } => "embed_output_closed",
        }
    }
}
