//! Request and token budgets per minute: token buckets in front of a paid
//! API.
//!
//! Providers limit both requests per minute and tokens per minute; going
//! over either earns 429s, which cost a round trip and a backoff each. A
//! [`RateLimiter`] keeps a run under both budgets *before* sending: every
//! call first [`RateLimiter::acquire`]s one request and its estimated tokens.
//! The buckets are `governor`'s GCRA, which refills continuously (a budget of
//! 600/min lets one request through every 100 ms, with a burst of the full
//! minute's budget when idle).
//!
//! A request estimated at more tokens than the whole per-minute budget would
//! wait forever; it is charged the full budget instead (it waits for an empty
//! minute), and the provider has the last word.
//!
//! ```
//! use std::num::NonZeroU32;
//! use kg_core::ratelimit::{RateLimiter, RateLimits};
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let limiter = RateLimiter::new(RateLimits {
//!     requests_per_minute: NonZeroU32::new(6000),
//!     tokens_per_minute: NonZeroU32::new(1_000_000),
//! });
//! limiter.acquire(1200).await; // one request of ~1200 tokens
//! # });
//! ```

use std::num::NonZeroU32;

use governor::{DefaultDirectRateLimiter, Quota};

/// Per-minute budgets; `None` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimits {
    /// Requests per minute.
    pub requests_per_minute: Option<NonZeroU32>,
    /// Tokens (prompt + completion) per minute.
    pub tokens_per_minute: Option<NonZeroU32>,
}

/// Token buckets for requests and tokens, shared by every worker.
#[derive(Debug)]
pub struct RateLimiter {
    requests: Option<DefaultDirectRateLimiter>,
    tokens: Option<(DefaultDirectRateLimiter, NonZeroU32)>,
}

impl RateLimiter {
    /// Buckets for `limits`.
    pub fn new(limits: RateLimits) -> Self {
        Self {
            requests: limits
                .requests_per_minute
                .map(|n| DefaultDirectRateLimiter::direct(Quota::per_minute(n))),
            tokens: limits
                .tokens_per_minute
                .map(|n| (DefaultDirectRateLimiter::direct(Quota::per_minute(n)), n)),
        }
    }

    /// Whether any budget is set.
    pub fn is_limited(&self) -> bool {
        self.requests.is_some() || self.tokens.is_some()
    }

    /// Waits until one request of `tokens` estimated tokens fits both
    /// budgets, and takes it from them.
    pub async fn acquire(&self, tokens: u32) {
        if let Some(requests) = &self.requests {
            requests.until_ready().await;
        }
        if let (Some((bucket, capacity)), Some(n)) = (&self.tokens, NonZeroU32::new(tokens)) {
            let n = n.min(*capacity);
            // `n <= capacity`, so governor cannot report insufficient
            // capacity; the error arm is unreachable in practice.
            if let Err(e) = bucket.until_n_ready(n).await {
                tracing::warn!("token budget smaller than one request: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn unlimited_never_waits() {
        let limiter = RateLimiter::new(RateLimits::default());
        assert!(!limiter.is_limited());
        // A hang guard, not a speed assertion: unlimited acquires complete.
        let all = async {
            for _ in 0..10_000 {
                limiter.acquire(10_000).await;
            }
        };
        assert!(tokio::time::timeout(Duration::from_secs(30), all)
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn request_budget_spaces_requests_after_the_burst() {
        // 1200/min = one every 50 ms after a burst of 1200; drain the burst
        // with check-free acquires, then time two more.
        let limiter = RateLimiter::new(RateLimits {
            requests_per_minute: NonZeroU32::new(1200),
            tokens_per_minute: None,
        });
        for _ in 0..1200 {
            limiter.acquire(0).await;
        }
        let start = Instant::now();
        limiter.acquire(0).await;
        limiter.acquire(0).await;
        assert!(
            start.elapsed() >= Duration::from_millis(60),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test]
    async fn token_budget_charges_tokens_and_caps_oversized_requests() {
        // 60_000 tokens/min = 1000 tokens per second.
        let limiter = RateLimiter::new(RateLimits {
            requests_per_minute: None,
            tokens_per_minute: NonZeroU32::new(60_000),
        });
        limiter.acquire(60_000).await; // the whole burst
        let start = Instant::now();
        limiter.acquire(100).await; // 100 ms of refill
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(80), "{waited:?}");
        // More than the budget: charged the budget, does not hang forever
        // (would need a full minute; just check it is accepted by starting
        // it and cancelling via timeout).
        let r = tokio::time::timeout(Duration::from_millis(50), limiter.acquire(1_000_000)).await;
        assert!(r.is_err(), "an oversized request waits for a full minute");
    }
}
