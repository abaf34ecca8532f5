//! The crate's one error type.
//!
//! Variants are what a caller can act on: the store could not be reached
//! (check the URI, the credentials, the server), a batch failed (the records
//! are in the dead-letter file; a re-run retries them), the embedded store's
//! files are unusable, the dead-letter file could not be read or written.
//! Messages name the URI (never the password), the batch or the file.

use std::path::PathBuf;

use kg_core::retry::{RetryDecision, Retryable};

/// Everything that can go wrong in kg-store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The Neo4j server could not be reached or refused us: wrong password,
    /// unreachable host, TLS mismatch, timeout. `uri` never holds a password.
    #[error("cannot connect to Neo4j at {uri}: {detail}")]
    Connect {
        /// The URI as configured (user info removed).
        uri: String,
        /// What went wrong.
        detail: String,
    },
    /// The server answered, but has no database of that name
    /// (`NEO4J_DATABASE`).
    #[error(
        "Neo4j at {uri} has no database named {database:?}: set NEO4J_DATABASE to a database the server has"
    )]
    UnknownDatabase {
        /// The URI as configured (user info removed).
        uri: String,
        /// The database asked for.
        database: String,
    },
    /// A query failed outside the batch writer (schema, search, counts).
    #[error("query against {backend} failed ({what}): {detail}")]
    Query {
        /// `neo4j` or `embedded`.
        backend: &'static str,
        /// What the query was for.
        what: String,
        /// The server's or SQLite's message.
        detail: String,
    },
    /// The embedded store's directory or database file is unusable.
    #[error("embedded store at {path}: {detail}")]
    Embedded {
        /// The data directory or file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The dead-letter file could not be read or written.
    #[error("dead-letter file {path}: {detail}")]
    DeadLetter {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The configuration is not usable (bad URI scheme, zero pool size...).
    #[error("invalid store configuration: {0}")]
    Config(String),
    /// The write finished but some batches kept failing: their records are
    /// in the dead-letter file, and a re-run retries them. The CLI exits 3.
    #[error(
        "{count} batch(es) failed and were set aside in {dead_letter}: {summary}",
        dead_letter = .dead_letter.display()
    )]
    BatchesFailed {
        /// How many batches failed.
        count: usize,
        /// Where their records are.
        dead_letter: PathBuf,
        /// One line per failed batch: number, group, rows, cause.
        summary: String,
    },
}

/// Whether a failed batch is worth another attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Transient: deadlock, transient server error, leader switch,
    /// connection reset or refused, timeout. Retried with backoff.
    Transient,
    /// The data or the query is wrong (constraint violation, type error):
    /// retrying cannot help. Rolled back and dead-lettered at once.
    Permanent,
}

/// Why one batch failed, as a backend reports it to the batch writer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct BatchFailure {
    /// Retry or not.
    pub class: FailureClass,
    /// Whether the store itself looks unreachable (connection-level), as
    /// opposed to a server that answered with an error.
    pub unreachable: bool,
    /// Whether the batch was too big (timeout, memory): the writer shrinks.
    pub too_big: bool,
    /// The backend's message (no secrets: servers do not echo passwords).
    pub message: String,
}

impl BatchFailure {
    /// A failure that retrying cannot fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            class: FailureClass::Permanent,
            unreachable: false,
            too_big: false,
            message: message.into(),
        }
    }

    /// A failure worth retrying.
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            class: FailureClass::Transient,
            unreachable: false,
            too_big: false,
            message: message.into(),
        }
    }
}

impl Retryable for BatchFailure {
    /// A transient failure is worth another attempt (the store sends no
    /// `Retry-After`: the policy's backoff decides when); a permanent one
    /// is not.
    fn retry_decision(&self) -> RetryDecision {
        match self.class {
            FailureClass::Transient => RetryDecision::Retry { after: None },
            FailureClass::Permanent => RetryDecision::Fatal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_failures_are_retried() {
        assert_eq!(
            BatchFailure::transient("deadlock").retry_decision(),
            RetryDecision::Retry { after: None }
        );
        assert_eq!(
            BatchFailure::permanent("constraint").retry_decision(),
            RetryDecision::Fatal
        );
    }
}
