//! [`MemorySink`]: a sink that writes nothing, for benchmarks of the
//! writer's own overhead and for tests that inject failures.

use std::sync::Arc;

use crate::error::BatchFailure;
use crate::plan::Batch;
use crate::store::GraphSink;

/// A sink that keeps only counts in memory: measures the writer's own
/// overhead (benchmarks) and lets tests inject failures.
#[derive(Default)]
pub struct MemorySink {
    rows: std::sync::atomic::AtomicU64,
    batches: std::sync::Mutex<Vec<(u64, String, usize)>>,
    attempts: std::sync::Mutex<std::collections::HashMap<u64, u32>>,
    fail_when: Option<FailRule>,
}

/// Which batches a [`MemorySink`] fails, and how.
#[derive(Clone)]
pub struct FailRule(
    /// Fails a batch when this returns `Some(failure)`; called with the
    /// batch and the attempt number of that batch (0-based).
    #[allow(clippy::type_complexity)]
    pub Arc<dyn Fn(&Batch, u32) -> Option<BatchFailure> + Send + Sync>,
);

impl MemorySink {
    /// A sink that accepts everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// A sink that fails batches as `rule` says.
    pub fn failing(rule: FailRule) -> Self {
        Self {
            fail_when: Some(rule),
            ..Self::default()
        }
    }

    /// Rows accepted so far.
    pub fn rows(&self) -> u64 {
        self.rows.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `(batch number, group, rows)` of each accepted batch.
    pub fn batches(&self) -> Vec<(u64, String, usize)> {
        self.batches.lock().map(|b| b.clone()).unwrap_or_default()
    }
}

impl GraphSink for MemorySink {
    async fn write_batch(&self, batch: Arc<Batch>) -> Result<(), BatchFailure> {
        if let Some(rule) = &self.fail_when {
            let attempt = match self.attempts.lock() {
                Ok(mut a) => {
                    let n = a.entry(batch.number).or_insert(0);
                    *n += 1;
                    *n - 1
                }
                Err(_) => 0,
            };
            if let Some(f) = (rule.0)(&batch, attempt) {
                return Err(f);
            }
        }
        self.rows.fetch_add(
            batch.rows.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        if let Ok(mut b) = self.batches.lock() {
            b.push((batch.number, batch.key.to_string(), batch.rows.len()));
        }
        Ok(())
    }
}
