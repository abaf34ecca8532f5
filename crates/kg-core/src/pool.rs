//! The bounded worker pool every stage that calls a slow service runs on.
//!
//! A [`WorkerPool`] is a fixed number of worker tasks (1..=[`MAX_WORKERS`])
//! fed through one bounded queue. It exists so that a stage can hold a
//! *window* of the corpus, not the corpus:
//!
//! - **Backpressure.** [`PoolInput::submit`] waits while the queue is full,
//!   so a producer reading files or chunks slows down to the pace of the
//!   workers instead of memory growing. The queue holds at most
//!   [`PoolConfig::queue_capacity`] items (by default twice the workers,
//!   and at least [`MIN_DEFAULT_QUEUE`]).
//! - **Streaming.** Each item's [`Outcome`] is sent to [`PoolOutput`] as soon
//!   as its work finishes; nothing is collected before the caller sees it.
//!   The output channel is bounded as well, so a slow consumer slows the
//!   workers down in turn.
//! - **Nothing lost.** One item's failure never stops the pool: every
//!   submitted item ends as exactly one [`Outcome`]: `Done`, `Failed` or,
//!   after shutdown, `Returned` (handed back unstarted).
//! - **Graceful shutdown.** When the [`CancellationToken`] fires (the CLI
//!   wires it to Ctrl-C), workers finish the item they are working on, start
//!   nothing new, and hand every queued item back as [`Outcome::Returned`];
//!   [`PoolInput::submit`] hands the item it was given back as
//!   [`Closed`]. The work function may watch the same token to abort early.
//! - **Observable.** [`PoolStats`] (processed, succeeded, failed, retried,
//!   in flight, returned) are atomics readable at any time from any thread.
//!
//! Per-item overhead matters when the work is cheap (cache hits): each
//! worker times its last batch, and while the work takes under 20 µs an
//! item it pulls up to [`PoolConfig::pull_batch`] items per lock of the
//! queue (never more than its fair share, `queued / workers`), which
//! amortises the lock, the wake-ups and the counter updates. Slow work (an
//! LLM call) is pulled one item at a time, so no worker sits on a backlog
//! while another idles. `benches/pool.rs` measures the overhead.
//!
//! ```
//! use kg_core::pool::{Outcome, PoolConfig, WorkerPool};
//! use tokio_util::sync::CancellationToken;
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let config = PoolConfig::new(4).unwrap();
//! let (input, mut output) = WorkerPool::start(&config, CancellationToken::new(), |n: u32| async move {
//!     if n == 3 { Err(format!("item {n} is bad")) } else { Ok(n * 2) }
//! });
//! tokio::spawn(async move {
//!     for n in 0..10 {
//!         if input.submit(n).await.is_err() { break; }
//!     }
//!     // dropping `input` closes the queue: the workers drain it and stop
//! });
//! let (mut done, mut failed) = (0, 0);
//! while let Some(outcome) = output.recv().await {
//!     match outcome {
//!         Outcome::Done(_) => done += 1,
//!         Outcome::Failed(_) => failed += 1,
//!         Outcome::Returned(_) => unreachable!("not cancelled"),
//!     }
//! }
//! assert_eq!((done, failed), (9, 1));
//! assert_eq!(output.stats().snapshot().processed, 10);
//! # });
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;

/// The most workers a pool may have.
pub const MAX_WORKERS: usize = 50;

/// The number of workers of [`PoolConfig::default`].
pub const DEFAULT_WORKERS: usize = 8;

/// The smallest default queue: room for batches when work is cheap.
pub const MIN_DEFAULT_QUEUE: usize = 64;

/// Work that takes less than this per item (including handing its outcome
/// on) is "cheap": workers then pull batches. Slower work is pulled one item
/// at a time, so no worker holds a backlog another could be working on.
const CHEAP_WORK: Duration = Duration::from_micros(20);

/// The most items a worker takes from the queue at once.
pub const MAX_PULL_BATCH: usize = 256;

/// A pool setting out of its allowed range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolConfigError {
    /// The worker count is not in 1..=[`MAX_WORKERS`].
    #[error("worker count {0} is out of range: use 1 to {MAX_WORKERS}")]
    Workers(usize),
    /// The queue capacity is zero.
    #[error("queue capacity must be at least 1, got {0}")]
    QueueCapacity(usize),
    /// The pull batch is not in 1..=[`MAX_PULL_BATCH`].
    #[error("pull batch {0} is out of range: use 1 to {MAX_PULL_BATCH}")]
    PullBatch(usize),
}

/// Validated pool settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    workers: usize,
    queue_capacity: usize,
    pull_batch: usize,
}

impl PoolConfig {
    /// `workers` worker tasks (1..=[`MAX_WORKERS`]), a queue of twice as
    /// many items (at least [`MIN_DEFAULT_QUEUE`]), and a pull batch of 32.
    pub fn new(workers: usize) -> Result<Self, PoolConfigError> {
        if !(1..=MAX_WORKERS).contains(&workers) {
            return Err(PoolConfigError::Workers(workers));
        }
        Ok(Self {
            workers,
            queue_capacity: (workers * 2).max(MIN_DEFAULT_QUEUE),
            pull_batch: 32,
        })
    }

    /// Sets how many submitted items may wait in the queue.
    pub fn with_queue_capacity(mut self, capacity: usize) -> Result<Self, PoolConfigError> {
        if capacity == 0 {
            return Err(PoolConfigError::QueueCapacity(capacity));
        }
        self.queue_capacity = capacity;
        Ok(self)
    }

    /// Sets the most items a worker takes from the queue at once.
    pub fn with_pull_batch(mut self, batch: usize) -> Result<Self, PoolConfigError> {
        if !(1..=MAX_PULL_BATCH).contains(&batch) {
            return Err(PoolConfigError::PullBatch(batch));
        }
        self.pull_batch = batch;
        Ok(self)
    }

    /// The number of worker tasks.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// How many items may wait in the queue.
    pub fn queue_capacity(&self) -> usize {
        self.queue_capacity
    }

    /// The most items a worker takes from the queue at once.
    pub fn pull_batch(&self) -> usize {
        self.pull_batch
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            workers: DEFAULT_WORKERS,
            queue_capacity: (DEFAULT_WORKERS * 2).max(MIN_DEFAULT_QUEUE),
            pull_batch: 32,
        }
    }
}

/// How one submitted item ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<I, O, E> {
    /// The work function returned `Ok`.
    Done(O),
    /// The work function returned `Err`.
    Failed(E),
    /// The pool was cancelled before the item was started: it is handed
    /// back untouched, for the caller to report or re-queue.
    Returned(I),
}

/// [`PoolInput::submit`] after shutdown: the item, handed back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the worker pool is shut down; the item was handed back")]
pub struct Closed<I>(pub I);

#[derive(Debug, Default)]
struct Counters {
    submitted: AtomicU64,
    processed: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    in_flight: AtomicU64,
    returned: AtomicU64,
}

/// Live counters of a pool, cheap to clone and read from any thread.
///
/// The work function may hold a clone and call [`PoolStats::add_retries`]
/// when it retries an item internally (the pool itself never retries).
#[derive(Debug, Clone, Default)]
pub struct PoolStats(Arc<Counters>);

/// A point-in-time copy of [`PoolStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStatsSnapshot {
    /// Items accepted by [`PoolInput::submit`].
    pub submitted: u64,
    /// Items whose work finished (`succeeded + failed`).
    pub processed: u64,
    /// Items whose work returned `Ok`.
    pub succeeded: u64,
    /// Items whose work returned `Err`.
    pub failed: u64,
    /// Retries reported by the work function.
    pub retried: u64,
    /// Items taken by a worker and not yet finished.
    pub in_flight: u64,
    /// Items handed back unstarted at shutdown.
    pub returned: u64,
}

impl PoolStats {
    /// Reads every counter.
    pub fn snapshot(&self) -> PoolStatsSnapshot {
        let c = &self.0;
        PoolStatsSnapshot {
            submitted: c.submitted.load(Ordering::Relaxed),
            processed: c.processed.load(Ordering::Relaxed),
            succeeded: c.succeeded.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            retried: c.retried.load(Ordering::Relaxed),
            in_flight: c.in_flight.load(Ordering::Relaxed),
            returned: c.returned.load(Ordering::Relaxed),
        }
    }

    /// Counts `n` retries done inside the work function.
    pub fn add_retries(&self, n: u64) {
        self.0.retried.fetch_add(n, Ordering::Relaxed);
    }
}

/// The producer side of a pool: submit items here. Clone it for several
/// producers; the queue closes when every clone is dropped.
#[derive(Debug)]
pub struct PoolInput<I> {
    queue: mpsc::Sender<I>,
    stats: PoolStats,
    cancel: CancellationToken,
}

impl<I> Clone for PoolInput<I> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
            stats: self.stats.clone(),
            cancel: self.cancel.clone(),
        }
    }
}

impl<I: Send> PoolInput<I> {
    /// Queues `item`, waiting while the queue is full. After shutdown (the
    /// token fired, or every worker is gone) the item is handed back.
    pub async fn submit(&self, item: I) -> Result<(), Closed<I>> {
        // Reserve a slot first so the item stays ours until it is queued:
        // cancellation while waiting for room hands it straight back.
        let permit = tokio::select! {
            biased;
            () = self.cancel.cancelled() => return Err(Closed(item)),
            permit = self.queue.reserve() => match permit {
                Ok(permit) => permit,
                Err(_) => return Err(Closed(item)),
            },
        };
        // Count before queueing so that `submitted >= processed` always
        // holds for an observer.
        self.stats.0.submitted.fetch_add(1, Ordering::Relaxed);
        permit.send(item);
        Ok(())
    }

    /// The pool's live counters.
    pub fn stats(&self) -> PoolStats {
        self.stats.clone()
    }
}

/// The consumer side of a pool: one [`Outcome`] per submitted item, in the
/// order they finish. Also a [`futures::Stream`].
#[derive(Debug)]
pub struct PoolOutput<I, O, E> {
    results: mpsc::Receiver<Outcome<I, O, E>>,
    stats: PoolStats,
}

impl<I, O, E> PoolOutput<I, O, E> {
    /// The next outcome; `None` once every input handle is dropped (or the
    /// pool was cancelled) and every item has been reported.
    pub async fn recv(&mut self) -> Option<Outcome<I, O, E>> {
        self.results.recv().await
    }

    /// The pool's live counters.
    pub fn stats(&self) -> PoolStats {
        self.stats.clone()
    }
}

impl<I, O, E> futures::Stream for PoolOutput<I, O, E> {
    type Item = Outcome<I, O, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.results.poll_recv(cx)
    }
}

/// The pool itself: see the [module docs](self).
#[derive(Debug)]
pub struct WorkerPool;

impl WorkerPool {
    /// Starts `config.workers()` worker tasks on the current tokio runtime,
    /// each running `work` on one item at a time, and returns the two ends.
    ///
    /// The pool stops when every [`PoolInput`] is dropped and the queue is
    /// drained, or when `cancel` fires (see the module docs for what happens
    /// to queued work then). Must be called within a tokio runtime.
    pub fn start<I, O, E, F, Fut>(
        config: &PoolConfig,
        cancel: CancellationToken,
        work: F,
    ) -> (PoolInput<I>, PoolOutput<I, O, E>)
    where
        I: Send + 'static,
        O: Send + 'static,
        E: Send + 'static,
        F: Fn(I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, E>> + Send,
    {
        let (queue_tx, queue_rx) = mpsc::channel(config.queue_capacity);
        // Room for every item a worker can hold, so a worker rarely waits
        // on the consumer while holding a pulled batch.
        let (results_tx, results_rx) =
            mpsc::channel(config.workers * config.pull_batch.min(8) + config.queue_capacity);
        let stats = PoolStats::default();
        let shared = Arc::new(Shared {
            queue: Mutex::new(queue_rx),
            work,
            stats: stats.clone(),
            cancel: cancel.clone(),
            workers: config.workers,
            pull_batch: config.pull_batch,
        });
        for _ in 0..config.workers {
            let shared = Arc::clone(&shared);
            let results = results_tx.clone();
            tokio::spawn(async move { shared.run_worker(results).await });
        }
        (
            PoolInput {
                queue: queue_tx,
                stats: stats.clone(),
                cancel,
            },
            PoolOutput {
                results: results_rx,
                stats,
            },
        )
    }
}

struct Shared<I, F> {
    queue: Mutex<mpsc::Receiver<I>>,
    work: F,
    stats: PoolStats,
    cancel: CancellationToken,
    workers: usize,
    pull_batch: usize,
}

impl<I, F> Shared<I, F> {
    /// Takes the next items for one worker: its fair share of the queue,
    /// between 1 and `pull_batch`. Empty when the queue is closed and
    /// drained, or on cancellation.
    async fn pull(&self, batch: &mut Vec<I>, cheap_work: bool) {
        let mut queue = tokio::select! {
            biased;
            () = self.cancel.cancelled() => return,
            queue = self.queue.lock() => queue,
        };
        let share = if cheap_work {
            (queue.len() / self.workers).clamp(1, self.pull_batch)
        } else {
            1
        };
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => {}
            _ = queue.recv_many(batch, share) => {}
        }
    }

    async fn run_worker<O, E, Fut>(&self, results: mpsc::Sender<Outcome<I, O, E>>)
    where
        F: Fn(I) -> Fut,
        Fut: Future<Output = Result<O, E>>,
    {
        let counters = &self.stats.0;
        let mut batch = Vec::with_capacity(self.pull_batch);
        // Start by assuming slow work (one item at a time); switch to
        // batches only once a batch showed the work is cheap.
        let mut cheap_work = false;
        loop {
            self.pull(&mut batch, cheap_work).await;
            if batch.is_empty() {
                break;
            }
            let started = Instant::now();
            let taken = batch.len() as u64;
            counters.in_flight.fetch_add(taken, Ordering::Relaxed);
            let (mut ok, mut failed, mut returned) = (0u64, 0u64, 0u64);
            for item in batch.drain(..) {
                let outcome = if self.cancel.is_cancelled() {
                    returned += 1;
                    Outcome::Returned(item)
                } else {
                    match (self.work)(item).await {
                        Ok(out) => {
                            ok += 1;
                            Outcome::Done(out)
                        }
                        Err(err) => {
                            failed += 1;
                            Outcome::Failed(err)
                        }
                    }
                };
                // With slow work, publish each item's counts as it ends so
                // observers see progress; with a large batch of fast work,
                // once per batch (see the module docs on overhead).
                if taken == 1 {
                    self.flush(&mut ok, &mut failed, &mut returned);
                }
                if results.send(outcome).await.is_err() {
                    // The consumer is gone: nobody can see outcomes any more.
                    // Keep draining so producers never hang on a full queue.
                    tracing::debug!("pool output dropped; discarding outcome");
                }
            }
            self.flush(&mut ok, &mut failed, &mut returned);
            cheap_work = started.elapsed() < CHEAP_WORK * taken as u32;
        }
        // Cancelled: hand back whatever is still queued. Only one worker at a
        // time holds the lock; the first one closes and drains the queue.
        // `recv` (not `try_recv`) also waits for a producer that reserved a
        // slot just before the close to put its item in, so none is lost.
        if self.cancel.is_cancelled() {
            let mut queue = self.queue.lock().await;
            queue.close();
            while let Some(item) = queue.recv().await {
                counters.returned.fetch_add(1, Ordering::Relaxed);
                if results.send(Outcome::Returned(item)).await.is_err() {
                    tracing::debug!("pool output dropped; discarding returned item");
                }
            }
        }
    }

    fn flush(&self, ok: &mut u64, failed: &mut u64, returned: &mut u64) {
        let c = &self.stats.0;
        let done = *ok + *failed;
        let all = done + *returned;
        if all == 0 {
            return;
        }
        if *ok > 0 {
            c.succeeded.fetch_add(*ok, Ordering::Relaxed);
        }
        if *failed > 0 {
            c.failed.fetch_add(*failed, Ordering::Relaxed);
        }
        if *returned > 0 {
            c.returned.fetch_add(*returned, Ordering::Relaxed);
        }
        if done > 0 {
            c.processed.fetch_add(done, Ordering::Relaxed);
        }
        c.in_flight.fetch_sub(all, Ordering::Relaxed);
        (*ok, *failed, *returned) = (0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use std::time::Duration;
    use tokio::sync::Semaphore;

    #[test]
    fn worker_count_is_validated() {
        assert_eq!(PoolConfig::new(0), Err(PoolConfigError::Workers(0)));
        assert_eq!(PoolConfig::new(51), Err(PoolConfigError::Workers(51)));
        assert!(PoolConfig::new(0)
            .unwrap_err()
            .to_string()
            .contains("1 to 50"));
        assert_eq!(PoolConfig::new(1).unwrap().workers(), 1);
        let c = PoolConfig::new(50).unwrap();
        assert_eq!((c.workers(), c.queue_capacity()), (50, 100));
        assert_eq!(
            PoolConfig::new(4).unwrap().queue_capacity(),
            MIN_DEFAULT_QUEUE
        );
        assert!(c.clone().with_queue_capacity(0).is_err());
        assert!(c.clone().with_pull_batch(0).is_err());
        assert!(c.with_pull_batch(MAX_PULL_BATCH + 1).is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_item_ends_and_failures_do_not_stop_the_pool() {
        let config = PoolConfig::new(7).unwrap();
        let (input, output) =
            WorkerPool::start(&config, CancellationToken::new(), |n: u64| async move {
                if n % 10 == 3 {
                    Err(format!("item {n} failed"))
                } else {
                    tokio::task::yield_now().await;
                    Ok(n)
                }
            });
        let producer = tokio::spawn(async move {
            for n in 0..5000u64 {
                input.submit(n).await.map_err(|c| c.0)?;
            }
            Ok::<_, u64>(())
        });
        let outcomes: Vec<_> = output.collect().await;
        assert_eq!(producer.await.unwrap(), Ok(()));
        let mut seen = vec![false; 5000];
        let mut failed = 0;
        for o in outcomes {
            let n = match o {
                Outcome::Done(n) => n,
                Outcome::Failed(msg) => {
                    failed += 1;
                    msg.split(' ').nth(1).unwrap().parse().unwrap()
                }
                Outcome::Returned(n) => panic!("item {n} returned without cancellation"),
            };
            assert!(!seen[n as usize], "item {n} reported twice");
            seen[n as usize] = true;
        }
        assert!(seen.iter().all(|s| *s), "every item reported");
        assert_eq!(failed, 500);
    }

    #[tokio::test]
    async fn results_stream_before_input_ends_and_stats_are_live() {
        let config = PoolConfig::new(3).unwrap();
        let (input, mut output) =
            WorkerPool::start(&config, CancellationToken::new(), |n: u32| async move {
                Ok::<_, ()>(n + 1)
            });
        for n in 0..20 {
            // One at a time: the outcome must arrive while the input is open.
            input.submit(n).await.unwrap();
            assert_eq!(output.recv().await, Some(Outcome::Done(n + 1)));
        }
        let stats = input.stats().snapshot();
        assert_eq!(
            (stats.submitted, stats.processed, stats.succeeded),
            (20, 20, 20)
        );
        drop(input);
        assert_eq!(output.recv().await, None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_makes_the_producer_wait() {
        let gate = Arc::new(Semaphore::new(0));
        let config = PoolConfig::new(2)
            .unwrap()
            .with_queue_capacity(4)
            .unwrap()
            .with_pull_batch(1)
            .unwrap();
        let work_gate = Arc::clone(&gate);
        let (input, mut output) =
            WorkerPool::start(&config, CancellationToken::new(), move |n: u32| {
                let gate = Arc::clone(&work_gate);
                async move {
                    gate.acquire().await.map_err(|_| ())?.forget();
                    Ok::<_, ()>(n)
                }
            });
        let stats = input.stats();
        let producer = tokio::spawn(async move {
            for n in 0..100 {
                input.submit(n).await.unwrap();
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let s = stats.snapshot();
        // 2 workers hold one item each, 4 wait in the queue, the producer waits.
        assert_eq!((s.in_flight, s.submitted, s.processed), (2, 6, 0), "{s:?}");
        assert!(!producer.is_finished());
        gate.add_permits(100);
        let mut n = 0;
        while output.recv().await.is_some() {
            n += 1;
        }
        assert_eq!(n, 100);
        assert!(producer.is_finished());
        assert_eq!(stats.snapshot().in_flight, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_work_is_taken_one_item_at_a_time() {
        // A big queue would allow batches; slow work must not be hoarded:
        // never more items in flight than workers.
        let config = PoolConfig::new(4).unwrap();
        let (input, mut output) =
            WorkerPool::start(&config, CancellationToken::new(), |n: u32| async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Ok::<_, ()>(n)
            });
        let stats = input.stats();
        tokio::spawn(async move {
            for n in 0..60 {
                input.submit(n).await.unwrap();
            }
        });
        let mut max_in_flight = 0;
        let mut done = 0;
        loop {
            max_in_flight = max_in_flight.max(stats.snapshot().in_flight);
            match tokio::time::timeout(Duration::from_millis(1), output.recv()).await {
                Ok(Some(_)) => done += 1,
                Ok(None) => break,
                Err(_) => {}
            }
        }
        assert_eq!(done, 60);
        assert!(max_in_flight <= 4, "in flight {max_in_flight} > 4 workers");
        stats.add_retries(3);
        assert_eq!(stats.snapshot().retried, 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancellation_finishes_in_flight_and_hands_back_the_rest() {
        let gate = Arc::new(Semaphore::new(0));
        let cancel = CancellationToken::new();
        let config = PoolConfig::new(3)
            .unwrap()
            .with_queue_capacity(6)
            .unwrap()
            .with_pull_batch(1)
            .unwrap();
        let work_gate = Arc::clone(&gate);
        let (input, mut output) = WorkerPool::start(&config, cancel.clone(), move |n: u32| {
            let gate = Arc::clone(&work_gate);
            async move {
                gate.acquire().await.map_err(|_| ())?.forget();
                Ok::<_, ()>(n)
            }
        });
        let producer_input = input.clone();
        let producer = tokio::spawn(async move {
            let mut refused = Vec::new();
            for n in 0..50 {
                if let Err(Closed(item)) = producer_input.submit(n).await {
                    refused.push(item);
                }
            }
            refused
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(input.stats().snapshot().in_flight, 3);
        cancel.cancel();
        gate.add_permits(3); // let the three in-flight items finish
        drop(input);
        let (mut done, mut returned) = (Vec::new(), Vec::new());
        while let Some(o) = output.recv().await {
            match o {
                Outcome::Done(n) => done.push(n),
                Outcome::Returned(n) => returned.push(n),
                Outcome::Failed(()) => panic!("nothing fails here"),
            }
        }
        let refused = producer.await.unwrap();
        assert_eq!(done.len(), 3, "in-flight work finished");
        assert_eq!(returned.len(), 6, "queued work handed back: {returned:?}");
        let mut all: Vec<u32> = done.into_iter().chain(returned).chain(refused).collect();
        all.sort_unstable();
        assert_eq!(
            all,
            (0..50).collect::<Vec<_>>(),
            "no item lost or duplicated"
        );
        let s = output.stats().snapshot();
        assert_eq!((s.processed, s.returned, s.in_flight), (3, 6, 0));
    }
}
