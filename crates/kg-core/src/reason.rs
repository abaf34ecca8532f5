//! [`SetAsideReason`]: why an input was set aside, as a closed set of
//! stable codes.
//!
//! A [`crate::SetAside`] record carries one of these. In JSON Lines, the
//! summary and the run state it is written as its snake_case code
//! (`encrypted_pdf`, `rate_limited`, `batch_failed`...): users script
//! against the codes, so they are only ever added, never renamed. Code
//! that acts on a reason matches the variant, never a string.

use std::fmt;
use std::str::FromStr;

macro_rules! reasons {
    ($($(#[$doc:meta])* $variant:ident = $code:literal,)*) => {
        /// Why an input was set aside (see the module docs).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum SetAsideReason {
            $($(#[$doc])* $variant,)*
        }

        impl SetAsideReason {
            /// Every reason, in declaration order (for docs and tests).
            pub const ALL: &'static [SetAsideReason] = &[$(Self::$variant,)*];

            /// The stable snake_case code.
            pub fn code(self) -> &'static str {
                match self {
                    $(Self::$variant => $code,)*
                }
            }
        }

        impl FromStr for SetAsideReason {
            type Err = UnknownReason;
            fn from_str(code: &str) -> Result<Self, UnknownReason> {
                match code {
                    $($code => Ok(Self::$variant),)*
                    other => Err(UnknownReason(other.to_string())),
                }
            }
        }
    };
}

reasons! {
    // --- ingest ---
    /// The file has zero bytes.
    EmptyFile = "empty_file",
    /// The file could not be opened or read (permissions, vanished, ...).
    UnreadableFile = "unreadable_file",
    /// Larger than the configured maximum file size.
    FileTooLarge = "file_too_large",
    /// Neither content nor extension is a format kg reads.
    UnsupportedFileType = "unsupported_file_type",
    /// Named `.txt`/`.md` but holds binary data (NUL bytes).
    BinaryFile = "binary_file",
    /// Named `.pdf` but does not start with the `%PDF-` header.
    NotAPdf = "not_a_pdf",
    /// A PDF that ends before its `%%EOF` marker (cut short).
    TruncatedPdf = "truncated_pdf",
    /// A PDF encrypted with a user password other than the empty one.
    EncryptedPdf = "encrypted_pdf",
    /// A readable PDF whose pages carry no text layer (a scan).
    NoTextLayer = "no_text_layer",
    /// Both PDF engines failed (error, panic or timeout).
    PdfUnreadable = "pdf_unreadable",
    /// A CSV file with no entry in the CSV mapping.
    CsvNotMapped = "csv_not_mapped",
    /// A CSV file whose header lacks a column the mapping names.
    CsvMappingMismatch = "csv_mapping_mismatch",
    /// One CSV row that could not be mapped (field count, number, key, ...).
    BadCsvRow = "bad_csv_row",
    /// A CSV relation whose end key matches no node of that label read in
    /// the run (the store would otherwise make an empty placeholder node).
    UnknownEndpoint = "unknown_endpoint",
    // --- extract ---
    /// The LLM server kept answering 429.
    RateLimited = "rate_limited",
    /// The LLM server kept answering 5xx.
    ServerError = "server_error",
    /// The LLM server refused the request (4xx other than auth/not found).
    BadRequest = "bad_request",
    /// No answer within the request timeout, every attempt.
    Timeout = "timeout",
    /// The connection to the LLM server failed or broke, every attempt.
    ConnectionError = "connection_error",
    /// The HTTP answer was not a chat completion.
    MalformedResponse = "malformed_response",
    /// The completion was empty.
    EmptyAnswer = "empty_answer",
    /// The completion was cut off (`finish_reason: length`) and could not
    /// be repaired.
    TruncatedAnswer = "truncated_answer",
    /// The completion was not JSON.
    UnparsableAnswer = "unparsable_answer",
    /// The completion was JSON of the wrong shape.
    OffSchemaAnswer = "off_schema_answer",
    // --- embed ---
    /// Nothing to embed: the text is empty.
    EmptyText = "empty_text",
    /// The embeddings server kept answering 429.
    EmbedRateLimited = "embed_rate_limited",
    /// The embeddings server kept answering 5xx.
    EmbedServerError = "embed_server_error",
    /// The embeddings server refused the request (e.g. a text too long).
    EmbedRejected = "embed_rejected",
    /// The connection to the embeddings server failed, every attempt.
    EmbedTransport = "embed_transport",
    /// The embeddings answer was not what the API promises.
    EmbedMalformedResponse = "embed_malformed_response",
    /// The local model failed on a batch.
    EmbedInferenceFailed = "embed_inference_failed",
    /// A batch came back with another number of vectors than texts.
    EmbeddingCountMismatch = "embedding_count_mismatch",
    // --- store ---
    /// A store batch kept failing; its records are in the dead-letter file.
    BatchFailed = "batch_failed",
    /// Earlier versions of a changed document could not be removed.
    SupersedeFailed = "supersede_failed",
    // --- reading JSON Lines between stages ---
    /// A JSON Lines input could not be read (I/O error).
    UnreadableInput = "unreadable_input",
    /// A JSON Lines line is not a kg record.
    BadJsonlLine = "bad_jsonl_line",
    // --- any stage ---
    /// The run was stopped (Ctrl-C) before this item was done; the next
    /// run does it. Not a failure: never dead-lettered.
    Cancelled = "cancelled",
}

impl SetAsideReason {
    /// Whether this is not a failure but an interruption (Ctrl-C): the
    /// item is simply done by the next run.
    pub fn is_cancellation(self) -> bool {
        self == Self::Cancelled
    }
}

impl fmt::Display for SetAsideReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A reason code this version of kg does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown set-aside reason {0:?}")]
pub struct UnknownReason(pub String);

impl serde::Serialize for SetAsideReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> serde::Deserialize<'de> for SetAsideReason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        code.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case_and_read_back() {
        let mut seen = std::collections::HashSet::new();
        for r in SetAsideReason::ALL {
            let code = r.code();
            assert!(seen.insert(code), "{code} twice");
            assert!(
                code.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{code}"
            );
            assert_eq!(code.parse::<SetAsideReason>(), Ok(*r));
            let json = serde_json::to_string(r).unwrap();
            assert_eq!(json, format!("\"{code}\""));
            assert_eq!(serde_json::from_str::<SetAsideReason>(&json).unwrap(), *r);
        }
        assert!(serde_json::from_str::<SetAsideReason>("\"no_such_reason\"").is_err());
    }
}
