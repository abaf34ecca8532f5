//! The retry policy: exponential backoff with jitter, honouring
//! `Retry-After`, retrying only what a retry can fix.
//!
//! Errors say for themselves whether a retry can help, through
//! [`Retryable::retry_decision`]: a 429 or a 5xx is worth another attempt
//! (after the server's `Retry-After` if it sent one), a 401 is not: a wrong
//! key must stop the run at the first call, not after a thousand. The policy
//! only decides *when* and *how often*.
//!
//! The delay before retry `n` (1-based) is "equal jitter" backoff: half of
//! `min(max_delay, base_delay * 2^(n-1))` fixed, the other half uniformly
//! random. The fixed half keeps a retry from hammering the server at once;
//! the random half spreads the retries of many workers that failed together.
//! A `Retry-After` replaces the computed delay (capped at
//! [`RetryPolicy::max_retry_after`]), plus up to a quarter of `base_delay`
//! of jitter so that the workers told the same instant don't all come back
//! at it.
//!
//! ```
//! use std::time::Duration;
//! use kg_core::retry::{RetryDecision, RetryPolicy, Retryable};
//! use tokio_util::sync::CancellationToken;
//!
//! #[derive(Debug)]
//! struct Busy;
//! impl std::fmt::Display for Busy {
//!     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
//!         f.write_str("server busy")
//!     }
//! }
//! impl Retryable for Busy {
//!     fn retry_decision(&self) -> RetryDecision {
//!         RetryDecision::Retry { after: None }
//!     }
//! }
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let policy = RetryPolicy::new(5, Duration::from_millis(1), Duration::from_millis(10)).unwrap();
//! let mut retries = 0;
//! let answer = policy
//!     .run(&CancellationToken::new(), |attempt| async move {
//!         if attempt < 3 { Err(Busy) } else { Ok(attempt) }
//!     }, |_err, _retry| retries += 1)
//!     .await
//!     .unwrap();
//! assert_eq!((answer, retries), (3, 2));
//! # });
//! ```

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

/// What an error says about trying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// A transient failure (429, 5xx, timeout, connection error): try again,
    /// no sooner than `after` if the server said so.
    Retry {
        /// The server's `Retry-After`, if any.
        after: Option<Duration>,
    },
    /// Retrying cannot help (400, 401, 403, 404, a bad request).
    Fatal,
}

/// An error that knows whether a retry can help.
pub trait Retryable {
    /// Whether, and when, to try again after this error.
    fn retry_decision(&self) -> RetryDecision;
}

/// Why [`RetryPolicy::run`] gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GaveUp {
    /// The error was [`RetryDecision::Fatal`].
    Fatal,
    /// Every attempt failed with a retriable error.
    Exhausted,
    /// The cancellation token fired while waiting to retry.
    Cancelled,
}

/// The last error of a failed [`RetryPolicy::run`], with how it ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("gave up after {attempts} attempt(s) ({gave_up:?}): {error}")]
pub struct RetryFailure<E: std::fmt::Display> {
    /// The last error.
    pub error: E,
    /// How many attempts were made.
    pub attempts: u32,
    /// Why no further attempt was made.
    pub gave_up: GaveUp,
}

/// One scheduled retry, as reported to the `on_retry` callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduledRetry {
    /// The attempt that failed, from 1.
    pub failed_attempt: u32,
    /// How long the policy waits before the next attempt.
    pub delay: Duration,
}

/// A retry setting out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetryConfigError {
    /// `max_attempts` must be at least 1.
    #[error("max attempts must be at least 1")]
    NoAttempts,
    /// `max_delay` is shorter than `base_delay`.
    #[error("max delay {max:?} is shorter than base delay {base:?}")]
    MaxBelowBase {
        /// The base delay given.
        base: Duration,
        /// The max delay given.
        max: Duration,
    },
}

/// How often and how long to wait between attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    max_attempts: u32,
    base_delay: Duration,
    max_delay: Duration,
    max_retry_after: Duration,
}

impl Default for RetryPolicy {
    /// 6 attempts, 500 ms base, 30 s cap, `Retry-After` honoured up to 120 s.
    fn default() -> Self {
        Self {
            max_attempts: 6,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// At most `max_attempts` attempts (the first one included), backoff
    /// from `base_delay` doubling up to `max_delay`.
    pub fn new(
        max_attempts: u32,
        base_delay: Duration,
        max_delay: Duration,
    ) -> Result<Self, RetryConfigError> {
        if max_attempts == 0 {
            return Err(RetryConfigError::NoAttempts);
        }
        if max_delay < base_delay {
            return Err(RetryConfigError::MaxBelowBase {
                base: base_delay,
                max: max_delay,
            });
        }
        Ok(Self {
            max_attempts,
            base_delay,
            max_delay,
            max_retry_after: Duration::from_secs(120).max(max_delay),
        })
    }

    /// Caps how long a server's `Retry-After` may make us wait.
    pub fn with_max_retry_after(mut self, cap: Duration) -> Self {
        self.max_retry_after = cap;
        self
    }

    /// The most attempts, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The longest `Retry-After` honoured.
    pub fn max_retry_after(&self) -> Duration {
        self.max_retry_after
    }

    /// The delay before the retry that follows failed attempt
    /// `failed_attempt` (from 1), given the server's `Retry-After`.
    pub fn delay(&self, failed_attempt: u32, retry_after: Option<Duration>) -> Duration {
        let mut rng = rand::thread_rng();
        if let Some(after) = retry_after {
            let spread = self.base_delay / 4;
            let jitter = spread.mul_f64(rng.gen::<f64>());
            return after.min(self.max_retry_after) + jitter;
        }
        let exp = failed_attempt.saturating_sub(1).min(30);
        let cap = self
            .base_delay
            .saturating_mul(1u32 << exp)
            .min(self.max_delay);
        let half = cap / 2;
        half + half.mul_f64(rng.gen::<f64>())
    }

    /// Runs `op` (given the attempt number, from 1) until it succeeds, fails
    /// fatally, runs out of attempts, or `cancel` fires during a wait.
    /// `on_retry` is called before each wait (to count retries, log, adapt
    /// concurrency).
    pub async fn run<T, E, Op, Fut>(
        &self,
        cancel: &CancellationToken,
        mut op: Op,
        mut on_retry: impl FnMut(&E, ScheduledRetry),
    ) -> Result<T, RetryFailure<E>>
    where
        E: Retryable + std::fmt::Display,
        Op: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut attempt = 1;
        loop {
            let error = match op(attempt).await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            let after = match error.retry_decision() {
                RetryDecision::Fatal => {
                    return Err(RetryFailure {
                        error,
                        attempts: attempt,
                        gave_up: GaveUp::Fatal,
                    })
                }
                RetryDecision::Retry { after } => after,
            };
            if attempt >= self.max_attempts {
                return Err(RetryFailure {
                    error,
                    attempts: attempt,
                    gave_up: GaveUp::Exhausted,
                });
            }
            let delay = self.delay(attempt, after);
            on_retry(
                &error,
                ScheduledRetry {
                    failed_attempt: attempt,
                    delay,
                },
            );
            tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    return Err(RetryFailure { error, attempts: attempt, gave_up: GaveUp::Cancelled });
                }
                () = tokio::time::sleep(delay) => {}
            }
            attempt += 1;
        }
    }
}

/// The wait an HTTP error answer asks for: OpenAI's `retry-after-ms` header
/// (`ms`) when present and valid, else `Retry-After` (`secs`).
pub fn retry_after(ms: Option<&str>, secs: Option<&str>) -> Option<Duration> {
    ms.and_then(parse_retry_after_ms)
        .or_else(|| secs.and_then(parse_retry_after))
}

/// Parses an HTTP `Retry-After` value in delay-seconds (`"2"`, or `"1.5"`
/// as some servers send). An HTTP date is not supported and yields `None`.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)))
}

/// Parses a `retry-after-ms` header value (milliseconds).
pub fn parse_retry_after_ms(value: &str) -> Option<Duration> {
    let ms: f64 = value.trim().parse().ok()?;
    (ms.is_finite() && ms >= 0.0).then(|| Duration::from_secs_f64(ms.min(86_400_000.0) / 1000.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug, PartialEq)]
    enum TestError {
        Busy(Option<Duration>),
        Denied,
    }
    impl std::fmt::Display for TestError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{self:?}")
        }
    }
    impl Retryable for TestError {
        fn retry_decision(&self) -> RetryDecision {
            match self {
                TestError::Busy(after) => RetryDecision::Retry { after: *after },
                TestError::Denied => RetryDecision::Fatal,
            }
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy::new(4, Duration::from_millis(2), Duration::from_millis(8)).unwrap()
    }

    #[test]
    fn config_is_validated() {
        assert_eq!(
            RetryPolicy::new(0, Duration::ZERO, Duration::ZERO),
            Err(RetryConfigError::NoAttempts)
        );
        assert!(matches!(
            RetryPolicy::new(3, Duration::from_secs(2), Duration::from_secs(1)),
            Err(RetryConfigError::MaxBelowBase { .. })
        ));
    }

    #[test]
    fn delays_grow_within_bounds() {
        let p = RetryPolicy::new(10, Duration::from_millis(100), Duration::from_secs(1)).unwrap();
        for _ in 0..50 {
            let d1 = p.delay(1, None);
            assert!(
                d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100),
                "{d1:?}"
            );
            let d3 = p.delay(3, None);
            assert!(
                d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400),
                "{d3:?}"
            );
            let d9 = p.delay(9, None);
            assert!(
                d9 >= Duration::from_millis(500) && d9 <= Duration::from_secs(1),
                "{d9:?}"
            );
            let ra = p.delay(1, Some(Duration::from_secs(3)));
            assert!(
                ra >= Duration::from_secs(3) && ra <= Duration::from_millis(3025),
                "{ra:?}"
            );
        }
        let capped = p.clone().with_max_retry_after(Duration::from_secs(2));
        assert!(capped.delay(1, Some(Duration::from_secs(60))) <= Duration::from_millis(2025));
    }

    #[tokio::test]
    async fn fatal_stops_at_first_attempt() {
        let calls = AtomicU32::new(0);
        let err = fast()
            .run(
                &CancellationToken::new(),
                |_| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    async { Err::<(), _>(TestError::Denied) }
                },
                |_, _| {},
            )
            .await
            .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!((err.attempts, err.gave_up), (1, GaveUp::Fatal));
        assert_eq!(err.error, TestError::Denied);
    }

    #[tokio::test]
    async fn retriable_errors_exhaust_attempts() {
        let mut retries = Vec::new();
        let err = fast()
            .run(
                &CancellationToken::new(),
                |_| async { Err::<(), _>(TestError::Busy(None)) },
                |_, r| retries.push(r.failed_attempt),
            )
            .await
            .unwrap_err();
        assert_eq!((err.attempts, err.gave_up), (4, GaveUp::Exhausted));
        assert_eq!(retries, vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn retry_after_is_waited_for() {
        let start = tokio::time::Instant::now();
        let got = fast()
            .run(
                &CancellationToken::new(),
                |attempt| async move {
                    if attempt == 1 {
                        Err(TestError::Busy(Some(Duration::from_millis(150))))
                    } else {
                        Ok(attempt)
                    }
                },
                |_, r| assert!(r.delay >= Duration::from_millis(150)),
            )
            .await
            .unwrap();
        assert_eq!(got, 2);
        assert!(start.elapsed() >= Duration::from_millis(150));
    }

    #[tokio::test]
    async fn cancellation_interrupts_the_wait() {
        let cancel = CancellationToken::new();
        let policy = RetryPolicy::new(3, Duration::from_secs(60), Duration::from_secs(60)).unwrap();
        let trigger = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            trigger.cancel();
        });
        let err = policy
            .run(
                &cancel,
                |_| async { Err::<(), _>(TestError::Busy(None)) },
                |_, _| {},
            )
            .await
            .unwrap_err();
        assert_eq!((err.attempts, err.gave_up), (1, GaveUp::Cancelled));
    }

    #[test]
    fn parses_retry_after_values() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 0.5 "), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(
            parse_retry_after_ms("250"),
            Some(Duration::from_millis(250))
        );
        // Milliseconds win; an unreadable one falls back to seconds.
        assert_eq!(
            retry_after(Some("250"), Some("2")),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            retry_after(Some("soon"), Some("2")),
            Some(Duration::from_secs(2))
        );
        assert_eq!(retry_after(None, None), None);
    }
}
