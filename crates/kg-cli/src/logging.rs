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
//! Elsewhere there are no bars; a periodic plain log line per stage reports
//! the same figures.

use std::io::{IsTerminal, Write};
use std::time::Duration;

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
        progress: Progress { bars },
    }
}

/// Progress display: bars on a terminal, nothing otherwise.
#[derive(Clone, Default)]
pub struct Progress {
    bars: Option<MultiProgress>,
}

impl Progress {
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
        StageBar { bar }
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
}

impl StageBar {
    /// More work is known.
    pub fn add_total(&self, n: u64) {
        self.bar.inc_length(n);
    }
    /// Work done.
    pub fn done(&self, n: u64) {
        self.bar.inc(n);
    }
    /// The free text after the bar (failures, tokens).
    pub fn message(&self, msg: String) {
        self.bar.set_message(msg);
    }
    /// The stage has finished.
    pub fn finish(&self) {
        self.bar.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("batch 7 failed")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn cause_chain_includes_every_cause_once() {
        let e = Outer(std::io::Error::other("connection reset"));
        assert_eq!(cause_chain(&e), "batch 7 failed: connection reset");
    }
}
