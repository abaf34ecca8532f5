//! Counters of a client, readable any time.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        #[derive(Debug, Default)]
        pub(crate) struct Counters { $(pub $name: AtomicU64,)* }

        /// What a [`crate::Client`] did since it was made (lifetime totals),
        /// and its state now.
        #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
        pub struct LlmStats {
            $($(#[$doc])* pub $name: u64,)*
            /// Requests in flight now.
            pub in_flight: u64,
            /// The adaptive concurrency limit now.
            pub concurrency_limit: u64,
            /// Whether the endpoint has answered (slow start is over).
            pub answered: bool,
            /// Whether the circuit breaker is open now.
            pub breaker_open: bool,
            /// Whether a fatal answer (401, 403, 404) is latched.
            pub fatal_latched: bool,
        }

        impl Counters {
            pub fn snapshot(&self) -> LlmStats {
                LlmStats {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                    ..LlmStats::default()
                }
            }
        }
    };
}

counters!(
    /// Requests that reached the server: it answered (any status), or the
    /// answer timed out or broke after the connection was made. Attempts
    /// that could not connect are not calls (see `connection_failures`).
    calls,
    /// Attempts beyond the first of each logical call.
    retries,
    /// Logical calls that failed for good (after their retries).
    failed,
    /// 429 answers.
    rate_limited,
    /// 5xx answers.
    server_errors,
    /// Other 4xx answers (400, 401, 403, 404, 422...).
    client_errors,
    /// Attempts with no (complete) answer within the timeout.
    timeouts,
    /// Attempts that could not connect (refused, DNS, TLS, connect timeout).
    connection_failures,
    /// Answers cut after the connection was made.
    transport_errors,
    /// 200 answers that were not the API's answer shape.
    malformed,
    /// Attempts refused by the gate without a request (a latched fatal
    /// answer, an open breaker).
    refused,
    /// Prompt tokens, from `usage` (estimated where it was missing).
    prompt_tokens,
    /// Completion tokens, from `usage` (estimated where it was missing).
    completion_tokens,
    /// Answers without `usage`, whose tokens were estimated.
    usage_missing,
    /// Texts embedded.
    embedded_inputs,
);

impl Counters {
    pub fn add(&self, field: fn(&Counters) -> &AtomicU64, n: u64) {
        field(self).fetch_add(n, Ordering::Relaxed);
    }
}
