//! Adaptive request concurrency: AIMD, after Vector's "adaptive request
//! concurrency".
//!
//! A fixed concurrency is either too low (the server idles) or too high (it
//! answers 429 and times out, and every rejected call still costs a round
//! trip). An [`AdaptiveConcurrency`] starts at the configured maximum and
//! reacts to what the server says:
//!
//! - **additive increase**: each success adds `1 / limit`, so the limit
//!   grows by about one per round of `limit` successful calls, up to the
//!   maximum;
//! - **multiplicative decrease**: a 429 or a timeout multiplies the limit by
//!   the decrease ratio (0.5 by default), down to the minimum. Only permits
//!   taken *after* the last decrease can decrease it again, so a burst of
//!   429s from calls that were all in flight together counts as one signal,
//!   not fifty.
//!
//! Other failures (a 500, a malformed answer) say nothing about load and
//! leave the limit alone: drop the permit without reporting.
//!
//! ```
//! use kg_core::adaptive::AdaptiveConcurrency;
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let limit = AdaptiveConcurrency::new(1, 8, 0.5).unwrap();
//! let permit = limit.acquire().await;
//! permit.overloaded(); // the server said 429
//! assert_eq!(limit.limit(), 4);
//! # });
//! ```

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// An adaptive-concurrency setting out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AdaptiveConfigError {
    /// `min` must be at least 1 and at most `max`.
    #[error("concurrency bounds {min}..={max} are invalid: need 1 <= min <= max")]
    Bounds {
        /// The minimum given.
        min: usize,
        /// The maximum given.
        max: usize,
    },
    /// The decrease ratio must be in (0, 1).
    #[error("decrease ratio {0} must be between 0 and 1 (exclusive)")]
    Ratio(f64),
}

#[derive(Debug)]
struct State {
    limit: f64,
    in_flight: usize,
    /// Bumped at every decrease; a permit older than the current epoch
    /// cannot decrease again.
    epoch: u64,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    freed: Notify,
    min: usize,
    max: usize,
    ratio: f64,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a few numbers, consistent after every statement; a
        // panic elsewhere while holding the lock cannot leave it torn.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A concurrency limit that adapts to the server (see the module docs).
/// Clones share one limit.
#[derive(Debug, Clone)]
pub struct AdaptiveConcurrency(Arc<Inner>);

/// Permission for one call; report how it went with [`Self::succeeded`] or
/// [`Self::overloaded`], or just drop it (neutral).
#[derive(Debug)]
pub struct ConcurrencyPermit {
    inner: Arc<Inner>,
    epoch: u64,
}

impl AdaptiveConcurrency {
    /// A limit starting at `max`, moving within `min..=max`, decreasing by
    /// `ratio` on overload.
    pub fn new(min: usize, max: usize, ratio: f64) -> Result<Self, AdaptiveConfigError> {
        if min == 0 || min > max {
            return Err(AdaptiveConfigError::Bounds { min, max });
        }
        if !(ratio > 0.0 && ratio < 1.0) {
            return Err(AdaptiveConfigError::Ratio(ratio));
        }
        Ok(Self(Arc::new(Inner {
            state: Mutex::new(State {
                limit: max as f64,
                in_flight: 0,
                epoch: 0,
            }),
            freed: Notify::new(),
            min,
            max,
            ratio,
        })))
    }

    /// Waits for a free slot under the current limit.
    pub async fn acquire(&self) -> ConcurrencyPermit {
        loop {
            let notified = self.0.freed.notified();
            tokio::pin!(notified);
            // Register interest before checking, so a release between the
            // check and the await is not missed.
            notified.as_mut().enable();
            {
                let mut state = self.0.lock();
                if state.in_flight < state.limit.floor() as usize {
                    state.in_flight += 1;
                    return ConcurrencyPermit {
                        inner: Arc::clone(&self.0),
                        epoch: state.epoch,
                    };
                }
            }
            notified.await;
        }
    }

    /// The current limit (whole calls).
    pub fn limit(&self) -> usize {
        self.0.lock().limit.floor() as usize
    }

    /// Calls holding a permit now.
    pub fn in_flight(&self) -> usize {
        self.0.lock().in_flight
    }
}

impl ConcurrencyPermit {
    /// The call succeeded: grow the limit a little.
    pub fn succeeded(self) {
        let mut state = self.inner.lock();
        let before = state.limit.floor();
        state.limit = (state.limit + 1.0 / state.limit).min(self.inner.max as f64);
        if state.limit.floor() > before {
            drop(state);
            self.inner.freed.notify_one();
        }
    }

    /// The server is overloaded (429, timeout): shrink the limit, once per
    /// round of calls.
    pub fn overloaded(self) {
        let mut state = self.inner.lock();
        if self.epoch == state.epoch {
            state.limit = (state.limit * self.inner.ratio).max(self.inner.min as f64);
            state.epoch += 1;
            tracing::debug!(limit = state.limit, "concurrency decreased");
        }
    }
}

impl Drop for ConcurrencyPermit {
    fn drop(&mut self) {
        self.inner.lock().in_flight -= 1;
        self.inner.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bounds_are_validated() {
        assert!(AdaptiveConcurrency::new(0, 4, 0.5).is_err());
        assert!(AdaptiveConcurrency::new(5, 4, 0.5).is_err());
        assert!(AdaptiveConcurrency::new(1, 4, 1.0).is_err());
        assert!(AdaptiveConcurrency::new(1, 4, f64::NAN).is_err());
    }

    #[tokio::test]
    async fn limits_in_flight_and_wakes_waiters() {
        let limit = AdaptiveConcurrency::new(1, 2, 0.5).unwrap();
        let a = limit.acquire().await;
        let _b = limit.acquire().await;
        assert_eq!(limit.in_flight(), 2);
        let waiter = tokio::spawn({
            let limit = limit.clone();
            async move { limit.acquire().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "third call must wait");
        drop(a);
        let c = tokio::time::timeout(Duration::from_secs(1), waiter).await;
        assert!(c.is_ok(), "released slot wakes the waiter");
    }

    #[tokio::test]
    async fn decreases_once_per_round_and_recovers_additively() {
        let limit = AdaptiveConcurrency::new(1, 16, 0.5).unwrap();
        let permits: Vec<_> = futures::future::join_all((0..16).map(|_| limit.acquire())).await;
        for p in permits {
            p.overloaded(); // 16 overloads from one round
        }
        assert_eq!(limit.limit(), 8, "one round of 429s halves once");
        limit.acquire().await.overloaded();
        assert_eq!(limit.limit(), 4);
        for _ in 0..200 {
            limit.acquire().await.succeeded();
        }
        assert_eq!(limit.limit(), 16, "successes grow it back to the max");
        for _ in 0..10 {
            limit.acquire().await.overloaded();
        }
        assert_eq!(limit.limit(), 1, "never below the minimum");
    }
}
