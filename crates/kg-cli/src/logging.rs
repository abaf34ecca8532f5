//! Logging and progress display.
//!
//! Logs go through `tracing` to stderr via `tracing-appender`'s non-blocking
//! writer: a worker logs into a bounded in-memory queue and a dedicated
//! thread does the I/O, so a slow terminal or pipe never stalls the pipeline
//! (if the queue fills, lines are dropped and counted rather than blocking).
//!
//! On a terminal (and with text logs) each active stage gets a progress bar
//! ([`Progress`]); the log writer then prints *through* the bars
//! (`MultiProgress::suspend`) so lines and bars do not garble each other.
//! Elsewhere there are no bars: [`Progress::spawn_reporter`] logs one
//! `progress` line per active stage at a fixed interval (10 s by default)
//! with its counts, rate and ETA, as text or JSON like every other line.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Formats an error with its full cause chain: `outer: inner: root`.
pub fn cause_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut cur = error.source();
    while let Some(e) = cur {
        let s = e.to_string();
        // thiserror messages often embed their source already.
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}

/// Writes log lines to stderr, around the progress bars if there are any.
struct StderrThroughBars {
    bars: Option<MultiProgress>,
}

impl Write for StderrThroughBars {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &self.bars {
            Some(bars) if !bars.is_hidden() => {
                bars.suspend(|| std::io::stderr().lock().write_all(buf))?;
            }
            _ => std::io::stderr().lock().write_all(buf)?,
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// What [`init`] sets up; keep it alive until the end of `main` (dropping it
/// flushes the log queue).
pub struct Logging {
    _guard: Option<WorkerGuard>,
    /// The progress bars, when stderr is a terminal and logs are text.
    pub progress: Progress,
}

/// Installs the global tracing subscriber.
pub fn init(format: LogFormat, filter: &str) -> Logging {
    let bars = (format == LogFormat::Text && std::io::stderr().is_terminal())
        .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(4)));
    let (writer, guard) = tracing_appender::non_blocking(StderrThroughBars { bars: bars.clone() });
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_target(false);
    let result = match format {
        LogFormat::Json => tracing_subscriber::registry()
            .with(filter)
            .with(fmt.json().flatten_event(true))
            .try_init(),
        LogFormat::Text => tracing_subscriber::registry()
            .with(filter)
            .with(fmt.with_ansi(bars.is_some()))
            .try_init(),
    };
    // A second init (tests) keeps the first subscriber; that is fine.
    let _ = result;
    Logging {
        _guard: Some(guard),
        progress: Progress {
            bars,
            stages: Arc::default(),
        },
    }
}

/// The stages a [`Progress`] follows, with their figures.
type Stages = Arc<Mutex<Vec<(&'static str, Arc<Counts>)>>>;

/// Progress display: bars on a terminal, periodic log lines otherwise.
#[derive(Clone, Default)]
pub struct Progress {
    bars: Option<MultiProgress>,
    stages: Stages,
}

/// One stage's figures, shared by its bar and the reporter.
#[derive(Debug, Default)]
struct Counts {
    total: AtomicU64,
    done: AtomicU64,
    started: OnceLock<Instant>,
    finished: AtomicBool,
}

/// One stage's progress at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct StageProgress {
    /// The stage.
    pub stage: &'static str,
    /// Items done.
    pub done: u64,
    /// Items known so far (more may come while the input is read).
    pub total: u64,
    /// Items per second since its first item.
    pub rate: f64,
    /// Seconds to finish the items known so far at that rate.
    pub eta_secs: Option<f64>,
}

impl Progress {
    /// Every stage that has seen work and is not finished, now.
    pub fn snapshot(&self) -> Vec<StageProgress> {
        let stages = self.stages.lock().unwrap_or_else(|p| p.into_inner());
        stages
            .iter()
            .filter(|(_, c)| !c.finished.load(Ordering::Relaxed))
            .filter_map(|(stage, c)| {
                let started = c.started.get()?;
                let done = c.done.load(Ordering::Relaxed);
                let total = c.total.load(Ordering::Relaxed).max(done);
                let secs = started.elapsed().as_secs_f64();
                let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
                let eta_secs = (rate > 0.0).then(|| (total - done) as f64 / rate);
                Some(StageProgress {
                    stage,
                    done,
                    total,
                    rate,
                    eta_secs,
                })
            })
            .collect()
    }

    /// Where there are no bars (not a terminal, or JSON logs), logs one
    /// `progress` line per active stage every `every`, until the process
    /// ends. Nothing on a terminal: the bars show the same.
    pub fn spawn_reporter(&self, every: Duration) {
        if self.bars.is_some() {
            return;
        }
        let progress = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                for p in progress.snapshot() {
                    tracing::info!(
                        stage = p.stage,
                        done = p.done,
                        total = p.total,
                        rate = (p.rate * 10.0).round() / 10.0,
                        eta_secs = p.eta_secs.map(|s| s.round() as u64),
                        "progress: {} {}/{} at {:.1}/s, eta {}",
                        p.stage,
                        p.done,
                        p.total,
                        p.rate,
                        p.eta_secs
                            .map(|s| format!("{}s", s.round() as u64))
                            .unwrap_or_else(|| "unknown".into())
                    );
                }
            }
        });
    }

    /// A bar for one stage (hidden when not on a terminal).
    pub fn stage(&self, name: &'static str) -> StageBar {
        let bar = match &self.bars {
            Some(m) => {
                let b = m.add(ProgressBar::new(0));
                b.set_style(
                    ProgressStyle::with_template(
                        "{prefix:>8} [{bar:24}] {pos}/{len} {per_sec:>10} eta {eta:>4} {msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                b.set_prefix(name);
                b.enable_steady_tick(Duration::from_millis(250));
                b
            }
            None => ProgressBar::hidden(),
        };
        let counts = Arc::new(Counts::default());
        self.stages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((name, counts.clone()));
        StageBar { bar, counts }
    }

    /// Removes every bar (before printing the summary).
    pub fn clear(&self) {
        if let Some(m) = &self.bars {
            let _ = m.clear();
        }
    }
}

/// One stage's bar.
#[derive(Clone)]
pub struct StageBar {
    bar: ProgressBar,
    counts: Arc<Counts>,
}

impl StageBar {
    /// More work is known.
    pub fn add_total(&self, n: u64) {
        self.bar.inc_length(n);
        self.counts.total.fetch_add(n, Ordering::Relaxed);
        self.counts.started.get_or_init(Instant::now);
    }
    /// Work done.
    pub fn done(&self, n: u64) {
        self.bar.inc(n);
        self.counts.done.fetch_add(n, Ordering::Relaxed);
        self.counts.started.get_or_init(Instant::now);
    }
    /// The free text after the bar (failures, tokens).
    pub fn message(&self, msg: String) {
        self.bar.set_message(msg);
    }
    /// The stage has finished.
    pub fn finish(&self) {
        self.bar.finish();
        self.counts.finished.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("batch 7 failed")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn progress_reports_counts_rate_and_eta_of_active_stages() {
        let progress = Progress::default();
        let extract = progress.stage("extract");
        let _idle = progress.stage("embed");
        extract.add_total(10);
        std::thread::sleep(Duration::from_millis(20));
        extract.done(4);
        let snap = progress.snapshot();
        assert_eq!(snap.len(), 1, "only stages that saw work: {snap:?}");
        let p = &snap[0];
        assert_eq!((p.stage, p.done, p.total), ("extract", 4, 10));
        assert!(p.rate > 0.0);
        let eta = p.eta_secs.unwrap();
        assert!((eta - 6.0 / p.rate).abs() < 1e-6, "{eta}");
        extract.finish();
        assert!(progress.snapshot().is_empty());
    }

    #[test]
    fn cause_chain_includes_every_cause_once() {
        let e = Outer(std::io::Error::other("connection reset"));
        assert_eq!(cause_chain(&e), "batch 7 failed: connection reset");
    }
}
