//! The gate every attempt passes first: slow start, a latch for fatal
//! answers, and the circuit breaker for connection failures.
//!
//! States, for one endpoint:
//!
//! - **slow start** (the initial state): until the endpoint has answered
//!   (any HTTP answer that is not fatal), one request at a time: the
//!   *probe*. A wrong key, URL or port is found with one request, not with
//!   `concurrency` of them.
//! - **open**: the endpoint answered; every attempt passes (the adaptive
//!   concurrency limit behind the gate bounds them).
//! - **fatal** (latched): a 401, 403 or 404 answer. Every attempt, queued or
//!   new, fails at once with that answer, without a request, until
//!   [`crate::Client::reopen`].
//! - **broken** (breaker open): `failures` consecutive attempts could not
//!   connect, over at least `window`. Every attempt fails at once with
//!   [`CallError::EndpointUnreachable`] until `cooldown` has passed; then
//!   slow start again: one probe finds out whether the endpoint is back.
//!
//! A connection failure sends an open gate back to slow start, and each
//! probe after one waits `BreakerConfig::probe_spacing` after the last
//! failure, so a dead endpoint costs `failures` attempts (plus those that
//! were already in flight), however many calls are queued.

use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::BreakerConfig;
use crate::CallError;

#[derive(Debug, Default)]
struct State {
    /// The endpoint answered since the last connection failure.
    open: bool,
    /// A probe is out (slow start).
    probe_busy: bool,
    /// No probe before this instant (spacing after a connection failure).
    next_probe: Option<Instant>,
    /// Consecutive attempts that could not connect.
    failures: u32,
    /// When the first of them failed.
    first_failure: Option<Instant>,
    /// The last connection error.
    last_error: String,
    /// The breaker is open until then.
    broken_until: Option<Instant>,
    /// A latched fatal answer.
    fatal: Option<CallError>,
}

/// A snapshot of the gate, for stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct GateView {
    pub open: bool,
    pub broken: bool,
    pub fatal: bool,
}

#[derive(Debug)]
pub(crate) struct Gate {
    state: Mutex<State>,
    changed: Notify,
    config: BreakerConfig,
    /// The endpoint, redacted, for errors.
    url: String,
}

/// Leave to make one attempt. Report how it went with one of its methods;
/// dropping it unreported is neutral (a timeout, a cancellation).
#[derive(Debug)]
pub(crate) struct Pass<'a> {
    gate: &'a Gate,
    probe: bool,
}

impl Gate {
    pub fn new(config: BreakerConfig, url: String) -> Self {
        Self {
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            config,
            url,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A few fields, consistent after every statement: a panic elsewhere
        // cannot leave them torn.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn unreachable(&self, s: &State) -> CallError {
        CallError::EndpointUnreachable {
            url: self.url.clone(),
            attempts: s.failures,
            last_error: s.last_error.clone(),
        }
    }

    /// Fails with the latched or breaker error, if any; ends an expired
    /// breaker (half-open: back to slow start).
    fn refuse(&self, s: &mut State, now: Instant) -> Result<(), CallError> {
        if let Some(e) = &s.fatal {
            return Err(e.clone());
        }
        if let Some(until) = s.broken_until {
            if now < until {
                return Err(self.unreachable(s));
            }
            tracing::info!(url = %self.url, "breaker cooldown over: one probe tries the endpoint again");
            s.broken_until = None;
            s.open = false;
            s.next_probe = None;
        }
        Ok(())
    }

    /// Waits for leave to make one attempt.
    pub async fn enter(&self, cancel: &CancellationToken) -> Result<Pass<'_>, CallError> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Register before looking, so a change between the look and the
            // wait is not missed.
            notified.as_mut().enable();
            let wake_at = {
                let mut s = self.lock();
                let now = Instant::now();
                self.refuse(&mut s, now)?;
                if s.open {
                    return Ok(Pass {
                        gate: self,
                        probe: false,
                    });
                }
                match s.next_probe {
                    _ if s.probe_busy => None,
                    Some(at) if at > now => Some(at),
                    _ => {
                        s.probe_busy = true;
                        return Ok(Pass {
                            gate: self,
                            probe: true,
                        });
                    }
                }
            };
            let spaced = async {
                match wake_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Err(CallError::Cancelled),
                () = &mut notified => {}
                () = spaced => {}
            }
        }
    }

    /// Fails if a fatal answer was latched or the breaker opened since the
    /// pass was given (checked again just before sending).
    pub fn check(&self) -> Result<(), CallError> {
        let mut s = self.lock();
        self.refuse(&mut s, Instant::now())
    }

    /// Back to the initial state: no latch, no breaker, slow start.
    pub fn reset(&self) {
        *self.lock() = State::default();
        self.changed.notify_waiters();
    }

    pub fn view(&self) -> GateView {
        let s = self.lock();
        GateView {
            open: s.open,
            broken: s.broken_until.is_some_and(|t| Instant::now() < t),
            fatal: s.fatal.is_some(),
        }
    }
}

impl Pass<'_> {
    /// Whether this is slow start's single probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    fn finish(&mut self, s: &mut State) {
        if self.probe {
            s.probe_busy = false;
            self.probe = false;
        }
    }

    /// The server answered with a status that is not fatal (a success, a
    /// 429, a 5xx, a 400...): the endpoint works, full concurrency.
    pub fn answered(mut self) {
        let gate = self.gate;
        {
            let mut s = gate.lock();
            self.finish(&mut s);
            if !s.open || s.failures > 0 || s.broken_until.is_some() {
                tracing::debug!(url = %gate.url, "the endpoint answered: full concurrency");
            }
            s.open = true;
            s.failures = 0;
            s.first_failure = None;
            s.next_probe = None;
            s.broken_until = None;
        }
        gate.changed.notify_waiters();
    }

    /// A fatal answer (401, 403, 404): latched, every other call fails with
    /// it at once.
    pub fn fatal(mut self, error: &CallError) {
        let gate = self.gate;
        {
            let mut s = gate.lock();
            self.finish(&mut s);
            s.failures = 0;
            s.first_failure = None;
            if s.fatal.is_none() {
                tracing::error!(url = %gate.url, "{error}: no further call is sent");
                s.fatal = Some(error.clone());
            }
        }
        gate.changed.notify_waiters();
    }

    /// The attempt could not connect. Returns the breaker's error if this
    /// failure opened it.
    pub fn connect_failed(mut self, detail: &str) -> Option<CallError> {
        let gate = self.gate;
        let config = gate.config;
        let tripped = {
            let mut s = gate.lock();
            self.finish(&mut s);
            let now = Instant::now();
            s.failures = s.failures.saturating_add(1);
            let first = *s.first_failure.get_or_insert(now);
            s.last_error = detail.to_string();
            s.open = false;
            s.next_probe = Some(now + config.probe_spacing());
            if s.broken_until.is_none()
                && s.failures >= config.failures
                && now.duration_since(first) >= config.window
            {
                s.broken_until = Some(now + config.cooldown);
                let e = gate.unreachable(&s);
                tracing::error!(cooldown_s = config.cooldown.as_secs_f64(), "{e}");
                Some(e)
            } else {
                tracing::debug!(url = %gate.url, failures = s.failures, "connection failed: {detail}");
                None
            }
        };
        gate.changed.notify_waiters();
        tripped
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if self.probe {
            {
                let mut s = self.gate.lock();
                s.probe_busy = false;
            }
            self.gate.changed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn gate(failures: u32, window_ms: u64) -> Arc<Gate> {
        Arc::new(Gate::new(
            BreakerConfig {
                failures,
                window: Duration::from_millis(window_ms),
                cooldown: Duration::from_secs(30),
            },
            "http://h/v1/chat/completions".into(),
        ))
    }

    /// Whether `enter` would wait (does not complete at once).
    async fn waits(g: &Gate) -> bool {
        let cancel = CancellationToken::new();
        tokio::time::timeout(Duration::from_millis(1), g.enter(&cancel))
            .await
            .is_err()
    }

    #[tokio::test(start_paused = true)]
    async fn one_probe_until_an_answer_then_everyone() {
        let g = gate(3, 2000);
        let cancel = CancellationToken::new();
        let probe = g.enter(&cancel).await.unwrap();
        assert!(probe.probe);
        assert!(waits(&g).await, "a second call waits for the first answer");
        drop(probe); // neutral (a timeout): the next caller probes
        let probe = g.enter(&cancel).await.unwrap();
        assert!(probe.probe);
        probe.answered();
        let a = g.enter(&cancel).await.unwrap();
        let b = g.enter(&cancel).await.unwrap();
        assert!(!a.probe && !b.probe, "open: no more probing");
        assert!(g.view().open);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fatal_answer_is_latched_until_reset() {
        let g = gate(3, 2000);
        let cancel = CancellationToken::new();
        let waiter = {
            let g = Arc::clone(&g);
            tokio::spawn(async move {
                let cancel = CancellationToken::new();
                g.enter(&cancel).await.map(|_| ())
            })
        };
        let probe = g.enter(&cancel).await.unwrap();
        tokio::task::yield_now().await;
        let denied = CallError::Status {
            status: 401,
            message: "bad key".into(),
            retry_after: None,
        };
        probe.fatal(&denied);
        assert_eq!(
            waiter.await.unwrap(),
            Err(denied.clone()),
            "the waiter fails too"
        );
        assert_eq!(g.enter(&cancel).await.err(), Some(denied.clone()));
        assert_eq!(g.check(), Err(denied));
        g.reset();
        assert!(g.enter(&cancel).await.unwrap().probe);
    }

    #[tokio::test(start_paused = true)]
    async fn connection_failures_are_spaced_then_open_the_breaker() {
        let g = gate(3, 2000);
        let cancel = CancellationToken::new();
        let start = Instant::now();
        let mut tripped = None;
        let mut attempts = 0;
        while tripped.is_none() {
            let pass = g.enter(&cancel).await.unwrap();
            attempts += 1;
            tripped = pass.connect_failed("connection refused");
        }
        assert_eq!(attempts, 3);
        assert_eq!(start.elapsed(), Duration::from_secs(2), "1 s apart");
        match g.enter(&cancel).await {
            Err(CallError::EndpointUnreachable {
                attempts,
                last_error,
                url,
            }) => {
                assert_eq!((attempts, last_error.as_str()), (3, "connection refused"));
                assert_eq!(url, "http://h/v1/chat/completions");
            }
            other => panic!("expected the breaker, got {other:?}"),
        }
        assert!(g.view().broken);
        // After the cooldown one probe may try; its failure re-opens at once.
        tokio::time::advance(Duration::from_secs(31)).await;
        let probe = g.enter(&cancel).await.unwrap();
        assert!(probe.probe);
        assert!(probe.connect_failed("refused again").is_some());
        assert!(g.enter(&cancel).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_resets_the_failure_count() {
        let g = gate(3, 0);
        let cancel = CancellationToken::new();
        for _ in 0..2 {
            let pass = g.enter(&cancel).await.unwrap();
            assert!(pass.connect_failed("refused").is_none());
        }
        g.enter(&cancel).await.unwrap().answered();
        for _ in 0..2 {
            let pass = g.enter(&cancel).await.unwrap();
            assert!(pass.connect_failed("refused").is_none(), "count restarted");
        }
        let pass = g.enter(&cancel).await.unwrap();
        assert!(pass.connect_failed("refused").is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_failures_in_flight_does_not_open_before_the_window() {
        let g = gate(3, 2000);
        let cancel = CancellationToken::new();
        g.enter(&cancel).await.unwrap().answered();
        // Eight requests in flight when the server dies: all fail at once.
        let passes: Vec<_> = futures::future::join_all((0..8).map(|_| g.enter(&cancel)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let tripped: Vec<_> = passes
            .into_iter()
            .filter_map(|p| p.connect_failed("reset"))
            .collect();
        assert!(tripped.is_empty(), "8 failures within 0 s: not yet");
        assert!(!g.view().open, "back to slow start");
        // Paced probes then fill the window.
        let mut probes = 0;
        loop {
            let pass = g.enter(&cancel).await.unwrap();
            probes += 1;
            if pass.connect_failed("refused").is_some() {
                break;
            }
        }
        assert_eq!(probes, 2, "1 s apart, the window is 2 s");
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_is_cancellable() {
        let g = gate(3, 2000);
        let cancel = CancellationToken::new();
        let _probe = g.enter(&cancel).await.unwrap();
        cancel.cancel();
        assert_eq!(g.enter(&cancel).await.err(), Some(CallError::Cancelled));
    }
}
