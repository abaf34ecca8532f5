//! The crate's error type.

use std::path::PathBuf;

/// What can stop an extraction run (per-chunk failures do not: they become
/// [`kg_core::SetAside`] records).
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// A configuration value is out of range or inconsistent.
    #[error("invalid extraction config: {0}")]
    Config(String),
    /// An entity type, relation type or pattern of the schema is not a safe
    /// identifier, or is reserved.
    #[error("invalid extraction schema: {0}")]
    Schema(String),
    /// The server refused the credentials (401/403): every call would fail
    /// the same way, so the run stops at the first one.
    #[error("the LLM server at {url} refused the API key (HTTP {status}): {message}")]
    Unauthorized {
        /// The endpoint called.
        url: String,
        /// 401 or 403.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The endpoint or model does not exist (404): a wrong base URL or model
    /// name; the run stops at the first call.
    #[error(
        "the LLM server at {url} answered 404 (wrong base URL or model {model:?}?): {message}"
    )]
    NotFound {
        /// The endpoint called.
        url: String,
        /// The model asked for.
        model: String,
        /// The server's message.
        message: String,
    },
    /// Nothing answers at the base URL: the circuit breaker opened after
    /// consecutive connection failures (refused, DNS, TLS). The run stops
    /// at once instead of trying every chunk.
    #[error("the LLM server at {url} cannot be reached: {attempts} connection attempt(s) in a row failed (last: {last_error}); check the base URL and that the server runs, then re-run: the run resumes where it stopped")]
    EndpointUnreachable {
        /// The endpoint called (credentials in the URL redacted).
        url: String,
        /// Consecutive attempts that could not connect.
        attempts: u32,
        /// The last connection error.
        last_error: String,
    },
    /// The HTTP client could not be built (bad header value, TLS setup).
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
    /// The response cache could not be opened or written.
    #[error("response cache {path}: {source}")]
    Cache {
        /// The cache file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The receiver of the output records went away mid-run.
    #[error("the output channel was closed after {sent} record(s)")]
    OutputClosed {
        /// Records delivered before it closed.
        sent: u64,
    },
}
