//! The batch writer: records in, transactions out, acknowledgements and
//! metrics back.
//!
//! Design, in the order things happen:
//!
//! - **Windows, by size and time.** The input is cut into windows by
//!   [`kg_core::batch::batches`]: a window closes when it holds
//!   [`WriterConfig::window_records`] records, when
//!   [`WriterConfig::window_linger`] has passed since its first record came
//!   (so a trickle is written without waiting for a full window), or when
//!   the input ends. Memory is bounded by two windows, not the corpus. Each
//!   window is planned ([`mod@crate::plan`]) into groups; the next window is read
//!   and planned, on a blocking thread, while the current one's transactions
//!   run, so planning does not wait on the server nor the server on planning.
//!   **Group commit:** while a window is written, the next one does not close
//!   on its linger (it could not start anyway): what arrives during a write
//!   goes out together in the next one, so a slow trickle from upstream
//!   stages (as in `kg run`) makes few large windows, not many small ones.
//! - **`NEXT_CHUNK` across windows.** The planner links consecutive chunks
//!   of a document within a window, and the writer remembers the last chunk
//!   of the most recent documents ([`ChunkTail`], 64 documents) so that a
//!   window's first chunk of a document is linked to its predecessor from an
//!   earlier window, for every caller of the writer. This assumes what
//!   ingest does: a document's chunks come in order, one document after the
//!   other (a document interleaved with more than 64 others may lose a
//!   link at a window boundary; nothing else is lost). The remembered chunk
//!   is only named by the link: it is not written again, nor acknowledged
//!   again.
//! - **Nodes, then relationships.** Node groups are written first, one
//!   group at a time with up to [`WriterConfig::node_concurrency`] of its
//!   batches in flight (the planner merges rows naming the same node, so
//!   those batches never race to MERGE one node). Relationship batches then
//!   run one after another: a relationship locks both of its end nodes, and
//!   two batches sharing nodes in opposite order deadlock in Neo4j.
//! - **Small groups share a transaction.** A window has a group per node
//!   label and per relationship type; in a small window (a trickle, as
//!   `kg run` writes) most groups hold a few rows, and a transaction per
//!   group would spend the window on round trips and commits. Consecutive
//!   groups of a phase whose rows all fit in one batch of their kind go
//!   together, in plan order, in one transaction
//!   ([`GraphSink::write_batches`]), up to the smallest of their kinds'
//!   batch sizes ([`WriterConfig::combine_small_groups`]). Only single
//!   batches teach the sizers. A shared transaction that fails for good is
//!   tried again one group at a time, so a bad group fails alone, as it
//!   would have apart.
//! - **Adaptive batch size.** Inside a window, each kind of group has its own
//!   [`BatchSizer`]:
//!   it starts near 1,000 rows and hill-climbs on measured throughput
//!   (rows/s), probing a size half again larger or smaller and keeping the
//!   faster one, so it settles where the server writes fastest rather than
//!   where a latency target stops it (the two differ: on the test server,
//!   batches of 7,500 rows were well under 500 ms and 25% slower per row
//!   than batches of 1,000). [`WriterConfig::target_batch_time`] stays as a
//!   latency ceiling; a timeout or a memory error halves the size; always
//!   within `[min_batch_rows, max_batch_rows]`. Fixed sizes of 50–250 pay a
//!   round trip per few rows; a fixed large size risks timeouts on big rows.
//! - **One transaction per batch, retried.** A transient failure (transient
//!   server error, deadlock, connection reset, leader switch, timeout) is
//!   retried by kg-core's [`RetryPolicy`] (exponential backoff, random
//!   jitter; [`BatchFailure`] says what is worth a retry). A permanent
//!   failure (or a transient one that outlives the retries) rolls the batch
//!   back, writes the records behind it to the dead-letter JSON Lines file,
//!   and the writer goes on with the next batch. When the store looks
//!   unreachable for [`WriterConfig::max_unreachable_batches`] batches in a
//!   row, the writer stops trying and dead-letters what comes next: nothing
//!   is lost, and the run ends quickly with exit code 3 instead of retrying
//!   for hours. Every [`WriterConfig::unreachable_retry_after`] a write
//!   tries the store once more (one attempt of one batch), so a long run
//!   picks up again when the server comes back; [`rerun_dead_letters`]
//!   tries it at once.
//! - **Acknowledgements.** After a window's transactions end, the writer
//!   sends one `Vec<`[`Ack`]`>` with one entry per record of the window
//!   (SetAside records excepted: they are reported, not written):
//!   [`AckOutcome::Committed`] when every row planned from the record
//!   committed, else [`AckOutcome::Failed`] with the batch and the reason:
//!   `batch_failed` (the record is in the dead-letter file) or `cancelled`.
//! - **Cancellation.** When [`WriterConfig::cancel`] fires, a batch waiting
//!   to retry wakes at once and gives up, no new batch starts, the writer
//!   stops reading its input, and the write returns with its report. The
//!   records it had taken and not written are acknowledged `cancelled` and
//!   are not dead-lettered (a re-run writes them); a transaction already
//!   running is let finish.
//! - **Schema.** [`BatchWriter::open`] creates the constraints and indexes
//!   at once and the vector index on `Chunk.embedding` when the first chunk
//!   embedding arrives (its length is the dimension); [`BatchWriter::new`]
//!   does no schema work.
//! - **Report.** [`WriteReport`] holds the metrics; [`WriteReport::check`]
//!   turns failed batches into [`StoreError::BatchesFailed`] for the CLI's
//!   exit code 3. [`rerun_dead_letters`] writes a dead-letter file again.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, Stream, StreamExt};
use kg_core::batch::{batches, BatchLimits, Batches};
use kg_core::retry::{GaveUp, RetryFailure, RetryPolicy, ScheduledRetry};
use kg_core::{jsonl, EmbeddingTarget, Record, RecordKey, SetAside, SetAsideReason, Stage};
use std::future::Future;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::{BatchFailure, StoreError};
use crate::plan::{plan_linked, Batch, ChunkTail, Group, GroupKey, Phase, PlannedRow};
use crate::store::{GraphSink, GraphStore, SchemaReport};

/// Metric (histogram, seconds): each transaction's time, by `group` (the
/// kind of rows) and `outcome` (`committed` or `failed`). Recorded through
/// the `metrics` facade: nothing unless the application installs a
/// recorder (`kg --metrics-addr` does).
pub const TRANSACTION_SECONDS: &str = "kg_store_transaction_seconds";
/// Metric (histogram): rows of each committed transaction, as the batch
/// sizer chose them, by `group`.
pub const BATCH_ROWS: &str = "kg_store_batch_rows";
/// Metric (counter): transactions retried after a transient failure.
pub const RETRIES: &str = "kg_store_retries_total";

/// What became of one record of a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckOutcome {
    /// Every row planned from the record committed.
    Committed,
    /// At least one row of the record did not commit.
    Failed {
        /// [`SetAsideReason::BatchFailed`]: a batch behind the record kept
        /// failing, and the record is in the dead-letter file.
        /// [`SetAsideReason::Cancelled`]: the write was cancelled before
        /// the record's rows were all written; it is not dead-lettered, and
        /// a re-run writes it.
        reason: SetAsideReason,
        /// The number of (one of) the batch(es) that did not commit
        /// ([`FailedBatch::number`]); 0 when the record's rows never got a
        /// batch (cancelled before).
        batch: u64,
    },
}

/// The acknowledgement of one record: its key and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The record ([`Record::key`]).
    pub key: RecordKey,
    /// Committed, or failed and why.
    pub outcome: AckOutcome,
}

/// The writer's retry policy by default: 8 attempts, backoff from 200 ms
/// doubling to 5 s with random jitter (about 16 s in all: enough for a
/// server restart or a leader election).
pub fn default_retry_policy() -> RetryPolicy {
    // Cannot fail: 8 attempts >= 1, and 5 s >= 200 ms.
    RetryPolicy::new(8, Duration::from_millis(200), Duration::from_secs(5)).unwrap_or_default()
}

/// How the writer windows, batches, retries and dead-letters.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Rows in a kind's first batch (default 1,000).
    pub initial_batch_rows: usize,
    /// Smallest batch (default 50).
    pub min_batch_rows: usize,
    /// Largest batch (default 20,000).
    pub max_batch_rows: usize,
    /// Latency ceiling: the sizer keeps transactions under it (default
    /// 500 ms); within it, the size goes where rows/s is highest.
    pub target_batch_time: Duration,
    /// A transaction taking longer is abandoned and retried smaller
    /// (default 60 s).
    pub batch_timeout: Duration,
    /// Node batches in flight at once (default 1). More can help on a
    /// Neo4j cluster with cores to spare; on the ArcadeDB test server, two
    /// concurrent MERGE transactions on one label were slower than one.
    pub node_concurrency: usize,
    /// Most records per window (default 20,000).
    pub window_records: usize,
    /// Longest a window waits for more records after its first one came
    /// (default 100 ms): a slow input is written as it comes.
    pub window_linger: Duration,
    /// Retries of transient failures ([`default_retry_policy`]: 8 attempts,
    /// 200 ms doubling to 5 s).
    pub retry: RetryPolicy,
    /// After this many batches in a row failed because the store was
    /// unreachable, the writer gives up on it: batches are dead-lettered
    /// without trying (default 3).
    pub max_unreachable_batches: usize,
    /// Once given up on, the store is tried again, with one attempt of one
    /// batch, by the first window that starts this long after (default
    /// 30 s); [`rerun_dead_letters`] tries it at once.
    pub unreachable_retry_after: Duration,
    /// Where failed batches' records go (JSON Lines of kg-core records).
    pub dead_letter: PathBuf,
    /// Stops the write when it fires (see the module docs); by default a
    /// token nothing fires.
    pub cancel: CancellationToken,
    /// Whether consecutive groups too small to fill a batch of their own
    /// share one transaction (default true; see the module docs).
    pub combine_small_groups: bool,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            initial_batch_rows: 1_000,
            min_batch_rows: 50,
            max_batch_rows: 20_000,
            target_batch_time: Duration::from_millis(500),
            batch_timeout: Duration::from_secs(60),
            node_concurrency: 1,
            window_records: 20_000,
            window_linger: Duration::from_millis(100),
            retry: default_retry_policy(),
            max_unreachable_batches: 3,
            unreachable_retry_after: Duration::from_secs(30),
            dead_letter: PathBuf::from("kg-store-dead-letter.jsonl"),
            cancel: CancellationToken::new(),
            combine_small_groups: true,
        }
    }
}

impl WriterConfig {
    /// Every batch exactly `rows` rows (for comparisons and tests).
    pub fn fixed_batch_rows(mut self, rows: usize) -> Self {
        self.initial_batch_rows = rows;
        self.min_batch_rows = rows;
        self.max_batch_rows = rows;
        self
    }
}

/// Picks batch sizes for one kind of row by hill-climbing on measured
/// throughput (rows per second of transaction time).
///
/// A latency target alone keeps growing a batch as long as it stays under
/// the target, past the size where the server writes fastest (on the
/// ArcadeDB test server, 1,000-row batches wrote 45% faster than 20,000-row
/// ones, all well under half a second). So the sizer measures rows/s:
///
/// - it remembers the best size so far and its (smoothed) rate;
/// - it *probes* a neighbour size (×1.5 or ÷1.5): a probe that beats the
///   best by [`BatchSizer::GAIN`] becomes the new best and the climb goes on
///   in that direction; one that does not sends the sizer back to the best
///   size and turns the next probe the other way;
/// - settled on the best size, it probes again every
///   [`BatchSizer::PROBE_EVERY`] batches, so it follows a server whose load
///   changes;
/// - the latency target stays as a ceiling: a transaction slower than it
///   scales the size down to fit, and no probe grows past it; a timeout or
///   a memory error halves the size. All within `[min, max]`.
#[derive(Debug, Clone)]
pub struct BatchSizer {
    rows: usize,
    min: usize,
    max: usize,
    ceiling: Duration,
    /// The best size measured so far and its smoothed rows/s.
    best: Option<(usize, f64)>,
    /// Direction of the next probe: larger when true.
    up: bool,
    /// Batches committed at the best size since the last probe.
    settled: u32,
}

impl BatchSizer {
    /// Factor between a size and the neighbour it probes.
    pub const STEP: f64 = 1.5;
    /// How much faster (rows/s) a probe must be to become the best: below
    /// it, the difference is within the noise of a shared machine.
    pub const GAIN: f64 = 1.03;
    /// Batches at the best size between two probes.
    pub const PROBE_EVERY: u32 = 6;

    /// A sizer starting at `initial`, bounded by `[min, max]`, keeping
    /// transactions under `ceiling`.
    pub fn new(initial: usize, min: usize, max: usize, ceiling: Duration) -> Self {
        let min = min.max(1);
        let max = max.max(min);
        Self {
            rows: initial.clamp(min, max),
            min,
            max,
            ceiling,
            best: None,
            up: true,
            settled: 0,
        }
    }

    /// The size of the next batch.
    pub fn next_size(&self) -> usize {
        self.rows
    }

    /// The best size measured so far, if any.
    pub fn best_size(&self) -> Option<usize> {
        self.best.map(|(rows, _)| rows)
    }

    /// A batch of `rows` rows committed in `elapsed`.
    pub fn on_success(&mut self, rows: usize, elapsed: Duration) {
        if rows < self.rows / 2 {
            // A short tail batch says little about the full size.
            return;
        }
        let took = elapsed.as_secs_f64().max(1e-6);
        let ceiling = self.ceiling.as_secs_f64();
        if took > ceiling {
            // Over the latency ceiling: scale to fit, a little under it,
            // and climb again from there.
            let next = rows as f64 * (ceiling / took) * 0.9;
            self.rows = (next as usize).clamp(self.min, self.max);
            self.best = None;
            self.up = false;
            self.settled = 0;
            return;
        }
        if rows != self.rows {
            // A tail, or a batch cut before the size last changed (with
            // concurrent batches): it does not measure the current size.
            return;
        }
        let rate = rows as f64 / took;
        match self.best {
            None => {
                self.best = Some((self.rows, rate));
                self.probe(rate);
            }
            Some((best_rows, best_rate)) if best_rows == self.rows => {
                // The best size again: smooth its rate, probe now and then.
                let smoothed = 0.5 * best_rate + 0.5 * rate;
                self.best = Some((best_rows, smoothed));
                self.settled += 1;
                if self.settled >= Self::PROBE_EVERY {
                    self.probe(smoothed);
                }
            }
            Some((best_rows, best_rate)) => {
                if rate > best_rate * Self::GAIN {
                    // Better: the new best; go on the same way.
                    self.best = Some((self.rows, rate));
                    self.probe(rate);
                } else {
                    // Not better: back to the best, next probe the other way.
                    self.rows = best_rows;
                    self.up = !self.up;
                    self.settled = 0;
                }
            }
        }
    }

    /// Moves to the neighbour of the best size in the current direction
    /// (the other one when that is out of bounds or over the ceiling).
    fn probe(&mut self, best_rate: f64) {
        self.settled = 0;
        let Some((best, _)) = self.best else {
            return;
        };
        for _ in 0..2 {
            let next = if self.up {
                (best as f64 * Self::STEP).ceil() as usize
            } else {
                (best as f64 / Self::STEP).floor() as usize
            }
            .clamp(self.min, self.max);
            // A larger batch is expected to take about size / rate.
            let fits = !self.up || next as f64 / best_rate.max(1e-9) <= self.ceiling.as_secs_f64();
            if next != best && fits {
                self.rows = next;
                return;
            }
            self.up = !self.up;
        }
        self.rows = best;
    }

    /// A batch failed because it was too big (timeout, memory).
    pub fn on_too_big(&mut self) {
        self.rows = (self.rows / 2).clamp(self.min, self.max);
        self.best = None;
        self.up = false;
        self.settled = 0;
    }
}

/// A batch that failed for good: rolled back and dead-lettered.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedBatch {
    /// Batch number within the write.
    pub number: u64,
    /// Its group (`chunks`, `relations:WORKS_FOR`...).
    pub group: String,
    /// Rows in it.
    pub rows: usize,
    /// Attempts made.
    pub attempts: u32,
    /// The last error.
    pub error: String,
}

/// What a write did.
#[derive(Debug, Clone, Default)]
pub struct WriteReport {
    /// Records read (SetAside ones included).
    pub records: u64,
    /// Windows the input was cut into.
    pub windows: u64,
    /// Rows written (in committed batches).
    pub rows: u64,
    /// Batches committed.
    pub batches: u64,
    /// Size of each committed batch, in order.
    pub batch_sizes: Vec<usize>,
    /// Retries of transient failures.
    pub retries: u64,
    /// Batches that failed for good.
    pub failed_batches: Vec<FailedBatch>,
    /// Records written to the dead-letter file.
    pub dead_lettered_records: u64,
    /// The dead-letter file, when anything was written to it.
    pub dead_letter: Option<PathBuf>,
    /// Inputs set aside: SetAside records passed through from earlier
    /// stages, and one per failed batch.
    pub set_aside: Vec<SetAside>,
    /// Records read but not (wholly) written because the write was
    /// cancelled: acknowledged `cancelled`, not dead-lettered, not in
    /// `set_aside`.
    pub cancelled_records: u64,
    /// Wall time of the whole write.
    pub total_time: Duration,
    /// Sum of the committed transactions' times.
    pub batch_time: Duration,
}

impl WriteReport {
    /// Committed batches over all batches, 0..=1 (1 when there were none).
    pub fn success_rate(&self) -> f64 {
        let all = self.all_batches();
        if all == 0 {
            1.0
        } else {
            self.batches as f64 / all as f64
        }
    }

    /// Every batch that ended, committed or failed for good (`batches`
    /// counts only the committed ones).
    pub fn all_batches(&self) -> u64 {
        self.batches + self.failed_batches.len() as u64
    }

    /// Rows written per second of wall time.
    pub fn rows_per_sec(&self) -> f64 {
        let s = self.total_time.as_secs_f64();
        if s > 0.0 {
            self.rows as f64 / s
        } else {
            0.0
        }
    }

    /// Whether anything was set aside (failed batches or SetAside inputs):
    /// the CLI's exit code 3.
    pub fn has_set_aside(&self) -> bool {
        !self.set_aside.is_empty()
    }

    /// Whether the write was cancelled with records left unwritten.
    pub fn was_cancelled(&self) -> bool {
        self.cancelled_records > 0
    }

    /// `Err` listing the failed batches when there were any (cancelled
    /// records are not failures: see [`Self::was_cancelled`]).
    pub fn check(&self) -> Result<(), StoreError> {
        if self.failed_batches.is_empty() {
            return Ok(());
        }
        // The first few, each with its error; the dead-letter file has
        // every record of every one.
        const LISTED: usize = 5;
        let mut summary = self
            .failed_batches
            .iter()
            .take(LISTED)
            .map(|b| {
                format!(
                    "batch {} ({}, {} rows, {} attempts): {}",
                    b.number, b.group, b.rows, b.attempts, b.error
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        if self.failed_batches.len() > LISTED {
            summary.push_str(&format!(
                "; and {} more batches ({} records dead-lettered in all)",
                self.failed_batches.len() - LISTED,
                self.dead_lettered_records
            ));
        }
        Err(StoreError::BatchesFailed {
            count: self.failed_batches.len(),
            dead_letter: self.dead_letter.clone().unwrap_or_default(),
            summary,
        })
    }

    fn absorb(&mut self, other: WriteReport) {
        self.records += other.records;
        self.windows += other.windows;
        self.rows += other.rows;
        self.batches += other.batches;
        self.batch_sizes.extend(other.batch_sizes);
        self.retries += other.retries;
        self.failed_batches.extend(other.failed_batches);
        self.dead_lettered_records += other.dead_lettered_records;
        if other.dead_letter.is_some() {
            self.dead_letter = other.dead_letter;
        }
        self.set_aside.extend(other.set_aside);
        self.cancelled_records += other.cancelled_records;
        self.batch_time += other.batch_time;
    }
}

/// Creates the vector index on `Chunk.embedding` with the given dimensions
/// (set by [`BatchWriter::open`], where the sink is a [`GraphStore`]).
type VectorIndexHook<S> =
    for<'a> fn(
        &'a S,
        usize,
    ) -> Pin<Box<dyn Future<Output = Result<SchemaReport, StoreError>> + Send + 'a>>;

fn vector_index_hook<S: GraphStore>(
    store: &S,
    dims: usize,
) -> Pin<Box<dyn Future<Output = Result<SchemaReport, StoreError>> + Send + '_>> {
    Box::pin(store.ensure_schema(Some(dims)))
}

/// Writes records to a [`GraphSink`] in adaptive, retried batches.
pub struct BatchWriter<S> {
    sink: S,
    config: WriterConfig,
    sizers: Mutex<HashMap<&'static str, BatchSizer>>,
    next_batch: AtomicU64,
    unreachable_streak: AtomicUsize,
    /// When the writer gave up on an unreachable store.
    given_up_at: Mutex<Option<Instant>>,
    /// Trying a given-up store again: one attempt per batch, no retries.
    probing: AtomicBool,
    dead_letter: Mutex<Option<BufWriter<File>>>,
    /// The last chunk of the most recent documents, across windows and
    /// writes.
    tail: Arc<Mutex<ChunkTail>>,
    /// Set by [`BatchWriter::open`]: the vector index, once.
    vector_index: Option<VectorIndexHook<S>>,
    vector_index_tried: AtomicBool,
}

/// A window, planned.
struct PlannedWindow {
    records: Arc<Vec<Record>>,
    groups: Vec<Group>,
    /// The length of the window's first chunk vector.
    chunk_dims: Option<usize>,
}

/// What became of one record of the window being written (the worst of
/// its rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Committed,
    Cancelled(u64),
    /// Dead-lettered.
    Failed(u64),
}

/// The records of a window and what became of them so far.
struct WindowState<'w> {
    records: &'w [Record],
    status: Vec<Status>,
}

impl WindowState<'_> {
    /// Marks `records` cancelled (unless they failed already).
    fn cancel(&mut self, records: &[usize], batch: u64) {
        for &i in records {
            if let Some(s @ Status::Committed) = self.status.get_mut(i) {
                *s = Status::Cancelled(batch);
            }
        }
    }

    /// Marks `records` failed, returning those not dead-lettered before.
    fn fail(&mut self, records: &[usize], batch: u64) -> Vec<&Record> {
        let mut fresh = Vec::new();
        for &i in records {
            let (Some(s), Some(r)) = (self.status.get_mut(i), self.records.get(i)) else {
                continue;
            };
            if !matches!(s, Status::Failed(_)) {
                *s = Status::Failed(batch);
                fresh.push(r);
            }
        }
        fresh
    }

    fn acks(&self) -> Vec<Ack> {
        self.records
            .iter()
            .zip(&self.status)
            .filter(|(r, _)| !matches!(r, Record::SetAside(_)))
            .map(|(r, s)| Ack {
                key: r.key(),
                outcome: match *s {
                    Status::Committed => AckOutcome::Committed,
                    Status::Cancelled(batch) => AckOutcome::Failed {
                        reason: SetAsideReason::Cancelled,
                        batch,
                    },
                    Status::Failed(batch) => AckOutcome::Failed {
                        reason: SetAsideReason::BatchFailed,
                        batch,
                    },
                },
            })
            .collect()
    }

    fn cancelled(&self) -> u64 {
        self.records
            .iter()
            .zip(&self.status)
            .filter(|(r, s)| matches!(s, Status::Cancelled(_)) && !matches!(r, Record::SetAside(_)))
            .count() as u64
    }
}

/// How one batch ended.
enum BatchResult {
    Committed,
    /// Failed for good: dead-lettered.
    Failed(BatchFailure),
    /// The write was cancelled while the batch waited to retry.
    Cancelled(BatchFailure),
}

/// A phase's groups as [`BatchWriter::pack`] cuts them.
enum Packed {
    /// Written in batches of its own.
    Group(Group),
    /// Small groups, written in one transaction.
    Together(Vec<Group>),
}

/// What one transaction writes: one batch, or several small ones of
/// consecutive groups ([`GraphSink::write_batches`]).
struct Unit {
    batches: Vec<Arc<Batch>>,
}

impl Unit {
    fn one(batch: Arc<Batch>) -> Self {
        Self {
            batches: vec![batch],
        }
    }

    /// The first batch's number: the unit's in messages.
    fn number(&self) -> u64 {
        self.batches.first().map_or(0, |b| b.number)
    }

    fn rows(&self) -> usize {
        self.batches.iter().map(|b| b.rows.len()).sum()
    }

    /// The metrics label: the batch's kind, or `combined`.
    fn kind(&self) -> &'static str {
        match self.batches.as_slice() {
            [one] => one.key.kind(),
            _ => "combined",
        }
    }

    /// The groups written, for messages (`Chunks`, `Chunks + Mentions`).
    fn groups(&self) -> String {
        let names: Vec<String> = self.batches.iter().map(|b| b.key.to_string()).collect();
        names.join(" + ")
    }
}

struct Outcome {
    unit: Unit,
    /// Indices of the records behind the batch, in the window.
    records: Vec<usize>,
    attempts: u32,
    elapsed: Duration,
    result: BatchResult,
}

impl<S: GraphStore> BatchWriter<S> {
    /// A writer to `store` that makes sure of the schema: the uniqueness
    /// constraints and lookup indexes now ([`GraphStore::ensure_schema`]
    /// without dimensions), and the vector index on `Chunk.embedding` when
    /// the first chunk embedding comes, with its length as the dimension
    /// (once per writer; a store that cannot have one says why once, and
    /// the write goes on). Callers who know the dimension in advance can
    /// also call `ensure_schema(Some(dims))` themselves.
    pub async fn open(store: S, config: WriterConfig) -> Result<Self, StoreError> {
        let report = store.ensure_schema(None).await?;
        tracing::debug!(constraints = ?report.constraints, "schema ensured");
        let mut writer = Self::new(store, config);
        writer.vector_index = Some(vector_index_hook::<S>);
        Ok(writer)
    }
}

impl<S: GraphSink> BatchWriter<S> {
    /// A writer to `sink`. No schema work: see [`BatchWriter::open`].
    pub fn new(sink: S, config: WriterConfig) -> Self {
        Self {
            sink,
            config,
            sizers: Mutex::new(HashMap::new()),
            next_batch: AtomicU64::new(1),
            unreachable_streak: AtomicUsize::new(0),
            given_up_at: Mutex::new(None),
            probing: AtomicBool::new(false),
            dead_letter: Mutex::new(None),
            tail: Arc::new(Mutex::new(ChunkTail::new())),
            vector_index: None,
            vector_index_tried: AtomicBool::new(false),
        }
    }

    /// The sink.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// Gives the sink back.
    pub fn into_sink(self) -> S {
        self.sink
    }

    /// The configuration.
    pub fn config(&self) -> &WriterConfig {
        &self.config
    }

    /// Writes a vector of records, with no acknowledgements (convenience
    /// over [`Self::write_stream`]).
    pub async fn write_records(&self, records: Vec<Record>) -> Result<WriteReport, StoreError> {
        self.write_stream(futures::stream::iter(records), None)
            .await
    }

    /// Writes records from a channel until it closes (or the write is
    /// cancelled); see [`Self::write_stream`] for `acks`.
    pub async fn write_channel(
        &self,
        mut rx: mpsc::Receiver<Record>,
        acks: Option<mpsc::Sender<Vec<Ack>>>,
    ) -> Result<WriteReport, StoreError> {
        self.write_stream(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)), acks)
            .await
    }

    /// Writes every record of `records`, window by window, until the input
    /// ends or [`WriterConfig::cancel`] fires.
    ///
    /// With `acks`, after each window's transactions end, one `Vec<Ack>`
    /// goes there with one [`Ack`] per record of the window that is not a
    /// `SetAside` (none for a window of SetAside records only). The writer
    /// waits for room in that channel, so keep receiving; a receiver that
    /// is gone is not an error. Records the writer never took from the
    /// input (after a cancellation) are not acknowledged.
    ///
    /// `Err` only when the dead-letter file cannot be written (then nothing
    /// would be safe); failed batches are in the report
    /// ([`WriteReport::check`]).
    pub async fn write_stream(
        &self,
        records: impl Stream<Item = Record>,
        acks: Option<mpsc::Sender<Vec<Ack>>>,
    ) -> Result<WriteReport, StoreError> {
        let started = Instant::now();
        let mut report = WriteReport::default();
        // On cancellation the input ends: the window being filled goes out
        // at once (and is acknowledged as cancelled), nothing more is read.
        let input = records.take_until(self.config.cancel.clone().cancelled_owned());
        let limits = BatchLimits::new(self.config.window_records.max(1), self.config.window_linger);
        let mut windows = batches(input, limits, |_: &Record| 1);
        let mut planned = self.next_window(&mut windows).await;
        while let Some(window) = planned.take() {
            // Group commit: while this window's transactions run, the next
            // window fills from the input. It does not close on its linger
            // while the writer is busy (it could not start anyway), so what
            // arrives during a write goes out together in the next one,
            // however slowly the writer goes. A window that fills up (or
            // the input's end) closes at once and is planned while this
            // write goes on.
            let write = self.write_window(window, acks.as_ref());
            tokio::pin!(write);
            let written = tokio::select! {
                biased;
                part = &mut write => Some(part),
                () = windows.fill() => None,
            };
            let (part, next) = match written {
                // Its linger counts from its first record, so a window that
                // filled during a long write goes at once.
                Some(part) => (part, self.next_window(&mut windows).await),
                None => futures::join!(write, self.next_window(&mut windows)),
            };
            report.absorb(part?);
            planned = next;
        }
        self.flush_dead_letter()?;
        report.total_time = started.elapsed();
        tracing::info!(
            records = report.records,
            windows = report.windows,
            rows = report.rows,
            batches = report.batches,
            failed = report.failed_batches.len(),
            cancelled_records = report.cancelled_records,
            rows_per_sec = report.rows_per_sec() as u64,
            "store write finished"
        );
        Ok(report)
    }

    /// The next window of `windows`, planned; `None` when the input ended.
    async fn next_window<In, W>(&self, windows: &mut Batches<In, W>) -> Option<PlannedWindow>
    where
        In: Stream<Item = Record>,
        W: FnMut(&Record) -> usize,
    {
        let window = windows.next().await?;
        Some(self.plan_window(window).await)
    }

    /// Plans a window on a blocking thread, off the runtime's workers (and,
    /// for a window that filled up, while the window before is written):
    /// planning is CPU work, a few µs a row. Windows are planned in order,
    /// so the chunk tail passes from one to the next.
    async fn plan_window(&self, window: Vec<Record>) -> PlannedWindow {
        let started = Instant::now();
        let records = Arc::new(window);
        let (shared, tail) = (Arc::clone(&records), Arc::clone(&self.tail));
        let plan_here = move || {
            let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
            plan_linked(&shared, &mut tail)
        };
        let groups = match tokio::task::spawn_blocking(plan_here.clone()).await {
            Ok(groups) => groups,
            // A panic in the planner is a bug: let it surface as if planned here.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Cancelled (the runtime is shutting down): plan here.
            Err(_) => plan_here(),
        };
        let chunk_dims = records.iter().find_map(|r| match r {
            Record::Embedding(e) if e.target == EmbeddingTarget::Chunk && !e.vector.is_empty() => {
                Some(e.vector.len())
            }
            _ => None,
        });
        tracing::debug!(
            records = records.len(),
            groups = groups.len(),
            rows = groups.iter().map(|g| g.rows.len()).sum::<usize>(),
            plan_ms = started.elapsed().as_secs_f64() * 1e3,
            "window planned"
        );
        PlannedWindow {
            records,
            groups,
            chunk_dims,
        }
    }

    async fn write_window(
        &self,
        window: PlannedWindow,
        acks: Option<&mpsc::Sender<Vec<Ack>>>,
    ) -> Result<WriteReport, StoreError> {
        // Also between windows of one long write (one channel for a whole
        // run): a store that came back is found again.
        self.maybe_try_again();
        let started = Instant::now();
        let PlannedWindow {
            records,
            groups,
            chunk_dims,
        } = window;
        let mut report = WriteReport {
            records: records.len() as u64,
            windows: 1,
            ..WriteReport::default()
        };
        for r in records.iter() {
            if let Record::SetAside(s) = r {
                report.set_aside.push(s.clone());
            }
        }
        let mut state = WindowState {
            records: &records,
            status: vec![Status::Committed; records.len()],
        };
        if self.config.cancel.is_cancelled() {
            // Nothing of this window starts.
            for g in &groups {
                for row in &g.rows {
                    state.cancel(&row.records, 0);
                }
            }
        } else {
            if let Some(dims) = chunk_dims {
                self.ensure_vector_index(dims).await;
            }
            let (nodes, rels): (Vec<Group>, Vec<Group>) = groups
                .into_iter()
                .partition(|g| g.key.phase() == Phase::Nodes);
            // One node group at a time, its batches concurrently: batches of
            // one group never share a node (see `plan`), but two groups may
            // (chunks and chunk embeddings both MERGE the same Chunk).
            // Relationship batches one at a time (see the module docs).
            // In both phases, consecutive small groups go together in one
            // transaction, in plan order.
            let phases = [(nodes, self.config.node_concurrency.max(1)), (rels, 1)];
            for (groups, concurrency) in phases {
                for part in self.pack(groups) {
                    match part {
                        Packed::Group(group) => {
                            self.write_groups(vec![group], concurrency, &mut state, &mut report)
                                .await?
                        }
                        Packed::Together(groups) => {
                            self.write_together(groups, &mut state, &mut report).await?
                        }
                    }
                }
            }
        }
        report.cancelled_records = state.cancelled();
        tracing::debug!(
            records = report.records,
            batches = report.all_batches(),
            rows = report.rows,
            transactions_ms = report.batch_time.as_secs_f64() * 1e3,
            write_ms = started.elapsed().as_secs_f64() * 1e3,
            "window written"
        );
        if let Some(tx) = acks {
            let acks = state.acks();
            if !acks.is_empty() && tx.send(acks).await.is_err() {
                tracing::debug!("nobody receives the store's acknowledgements any more");
            }
        }
        Ok(report)
    }

    /// The vector index, once per writer opened on a [`GraphStore`].
    async fn ensure_vector_index(&self, dims: usize) {
        let Some(hook) = self.vector_index else {
            return;
        };
        if self.vector_index_tried.swap(true, Ordering::Relaxed) {
            return;
        }
        match hook(&self.sink, dims).await {
            Ok(SchemaReport {
                vector_index: true, ..
            }) => tracing::info!(dims, "vector index on Chunk.embedding ensured"),
            Ok(report) => tracing::info!(
                dims,
                "no vector index on Chunk.embedding: {}",
                report.vector_index_skipped.unwrap_or_default()
            ),
            Err(e) => tracing::warn!(
                dims,
                "cannot create the vector index on Chunk.embedding (search still works, slower): {e}"
            ),
        }
    }

    /// Writes groups with at most `concurrency` batches in flight, cutting
    /// each batch at the size its kind's sizer says at that moment. Once
    /// the write is cancelled, no batch starts: the rows left are marked
    /// cancelled, and the batches in flight end.
    async fn write_groups(
        &self,
        groups: Vec<Group>,
        concurrency: usize,
        state: &mut WindowState<'_>,
        report: &mut WriteReport,
    ) -> Result<(), StoreError> {
        let mut queue: VecDeque<(GroupKey, std::vec::IntoIter<PlannedRow>)> = groups
            .into_iter()
            .map(|g| (g.key, g.rows.into_iter()))
            .collect();
        let mut in_flight = FuturesUnordered::new();
        loop {
            while in_flight.len() < concurrency {
                if self.config.cancel.is_cancelled() {
                    for (_, rows) in queue.drain(..) {
                        for row in rows {
                            state.cancel(&row.records, 0);
                        }
                    }
                    break;
                }
                let Some((key, rows)) = queue.front_mut() else {
                    break;
                };
                if rows.len() == 0 {
                    queue.pop_front();
                    continue;
                }
                let size = self.sizer_size(key.kind());
                let (batch, records) = self.batch_of(key.clone(), rows.by_ref().take(size));
                in_flight.push(self.run_batch(Unit::one(batch), records));
            }
            let Some(outcome) = in_flight.next().await else {
                break;
            };
            self.record_outcome(outcome, state, report)?;
        }
        Ok(())
    }

    /// Cuts a phase's groups, in their order, into groups written on their
    /// own and runs of consecutive small groups written together: a group
    /// is small when all its rows fit in one batch of its kind's size, and
    /// a run holds no more rows than the smallest of its kinds' sizes.
    fn pack(&self, groups: Vec<Group>) -> Vec<Packed> {
        let mut parts = Vec::new();
        let mut run: Vec<Group> = Vec::new();
        let (mut run_rows, mut run_cap) = (0usize, usize::MAX);
        let close = |run: &mut Vec<Group>, parts: &mut Vec<Packed>| match run.len() {
            0 => {}
            1 => parts.extend(run.pop().map(Packed::Group)),
            _ => parts.push(Packed::Together(std::mem::take(run))),
        };
        for group in groups {
            let size = self.sizer_size(group.key.kind());
            let rows = group.rows.len();
            if !self.config.combine_small_groups || rows >= size {
                close(&mut run, &mut parts);
                (run_rows, run_cap) = (0, usize::MAX);
                parts.push(Packed::Group(group));
                continue;
            }
            if run_rows + rows > run_cap.min(size) {
                close(&mut run, &mut parts);
                (run_rows, run_cap) = (0, usize::MAX);
            }
            run_rows += rows;
            run_cap = run_cap.min(size);
            run.push(group);
        }
        close(&mut run, &mut parts);
        parts
    }

    /// The next numbered batch of `key` from `rows`, with the window's
    /// indices of the records behind them (sorted, once each).
    fn batch_of(
        &self,
        key: GroupKey,
        rows: impl IntoIterator<Item = PlannedRow>,
    ) -> (Arc<Batch>, Vec<usize>) {
        let rows = rows.into_iter();
        let mut batch_rows = Vec::with_capacity(rows.size_hint().0);
        let mut records = Vec::new();
        for planned in rows {
            records.extend(planned.records);
            batch_rows.push(planned.row);
        }
        records.sort_unstable();
        records.dedup();
        let batch = Arc::new(Batch {
            number: self.next_batch.fetch_add(1, Ordering::Relaxed),
            key,
            rows: batch_rows,
        });
        (batch, records)
    }

    /// Writes small groups in one transaction (see [`Self::pack`]).
    async fn write_together(
        &self,
        groups: Vec<Group>,
        state: &mut WindowState<'_>,
        report: &mut WriteReport,
    ) -> Result<(), StoreError> {
        if self.config.cancel.is_cancelled() {
            for g in groups {
                for row in g.rows {
                    state.cancel(&row.records, 0);
                }
            }
            return Ok(());
        }
        let parts: Vec<(Arc<Batch>, Vec<usize>)> = groups
            .into_iter()
            .map(|g| self.batch_of(g.key, g.rows))
            .collect();
        let mut records: Vec<usize> = parts.iter().flat_map(|(_, r)| r.iter().copied()).collect();
        records.sort_unstable();
        records.dedup();
        let unit = Unit {
            batches: parts.iter().map(|(b, _)| b.clone()).collect(),
        };
        let outcome = self.run_batch(unit, records).await;
        match &outcome.result {
            // One bad group must not take the others down with it: a
            // shared transaction that failed for good is tried again one
            // group at a time, so what fails is exactly what failed apart.
            // (Not when the store is unreachable: that would only cost
            // more attempts.)
            BatchResult::Failed(f) if !f.unreachable => {
                tracing::warn!(
                    batch = outcome.unit.number(),
                    groups = %outcome.unit.groups(),
                    error = %f.message,
                    "a shared transaction failed; its groups are written one at a time"
                );
                for (batch, records) in parts {
                    if self.config.cancel.is_cancelled() {
                        state.cancel(&records, 0);
                        continue;
                    }
                    let outcome = self.run_batch(Unit::one(batch), records).await;
                    self.record_outcome(outcome, state, report)?;
                }
                Ok(())
            }
            _ => self.record_outcome(outcome, state, report),
        }
    }

    /// Runs `f` on the sizer of `kind` (created on first use); `None` if
    /// the lock is poisoned.
    fn with_sizer<T>(&self, kind: &'static str, f: impl FnOnce(&mut BatchSizer) -> T) -> Option<T> {
        let mut sizers = self.sizers.lock().ok()?;
        Some(f(sizers.entry(kind).or_insert_with(|| self.new_sizer())))
    }

    fn sizer_size(&self, kind: &'static str) -> usize {
        self.with_sizer(kind, |s| s.next_size())
            .unwrap_or(self.config.initial_batch_rows)
    }

    fn new_sizer(&self) -> BatchSizer {
        BatchSizer::new(
            self.config.initial_batch_rows,
            self.config.min_batch_rows,
            self.config.max_batch_rows,
            self.config.target_batch_time,
        )
    }

    /// One batch, one transaction per attempt, retried by the policy.
    async fn run_batch(&self, unit: Unit, records: Vec<usize>) -> Outcome {
        // A store the writer is trying again after giving up gets one
        // attempt per batch until one commits.
        let policy: Cow<'_, RetryPolicy> = if self.probing.load(Ordering::Relaxed) {
            Cow::Owned(RetryPolicy::new(1, Duration::ZERO, Duration::ZERO).unwrap_or_default())
        } else {
            Cow::Borrowed(&self.config.retry)
        };
        let tried = AtomicU32::new(0);
        let skipped = AtomicBool::new(false);
        let last_elapsed = Mutex::new(Duration::ZERO);
        let attempt = |_: u32| {
            let (unit, tried, skipped, last_elapsed) = (&unit, &tried, &skipped, &last_elapsed);
            async move {
                if self.store_given_up() {
                    skipped.store(true, Ordering::Relaxed);
                    return Err(BatchFailure {
                        unreachable: true,
                        ..BatchFailure::permanent(
                            "not attempted: the store was unreachable for the batches before",
                        )
                    });
                }
                tried.fetch_add(1, Ordering::Relaxed);
                let started = Instant::now();
                let write = async {
                    match unit.batches.as_slice() {
                        [one] => self.sink.write_batch(one.clone()).await,
                        all => self.sink.write_batches(all.to_vec()).await,
                    }
                };
                let result = match tokio::time::timeout(self.config.batch_timeout, write).await {
                    Ok(r) => r,
                    Err(_) => Err(BatchFailure {
                        too_big: true,
                        ..BatchFailure::transient(format!(
                            "transaction timed out after {:?}",
                            self.config.batch_timeout
                        ))
                    }),
                };
                let elapsed = started.elapsed();
                if let Ok(mut e) = last_elapsed.lock() {
                    *e = elapsed;
                }
                metrics::histogram!(
                    TRANSACTION_SECONDS,
                    "group" => unit.kind(),
                    "outcome" => if result.is_ok() { "committed" } else { "failed" }
                )
                .record(elapsed.as_secs_f64());
                if let Err(f) = &result {
                    if f.too_big {
                        // A combined unit is as big as its smallest sizer
                        // allows: each of its kinds halves.
                        for b in &unit.batches {
                            self.with_sizer(b.key.kind(), BatchSizer::on_too_big);
                        }
                    }
                }
                result
            }
        };
        let on_retry = |f: &BatchFailure, r: ScheduledRetry| {
            metrics::counter!(RETRIES, "group" => unit.kind()).increment(1);
            tracing::warn!(
                batch = unit.number(),
                group = %unit.groups(),
                attempt = r.failed_attempt,
                error = %f.message,
                "transient failure, retrying in {:?}",
                r.delay
            );
        };
        let result = policy.run(&self.config.cancel, attempt, on_retry).await;
        let attempts = tried.load(Ordering::Relaxed);
        let elapsed = last_elapsed.lock().map(|e| *e).unwrap_or_default();
        let result = match result {
            Ok(()) => {
                metrics::histogram!(BATCH_ROWS, "group" => unit.kind()).record(unit.rows() as f64);
                self.store_answered();
                BatchResult::Committed
            }
            Err(RetryFailure {
                error,
                gave_up: GaveUp::Cancelled,
                ..
            }) => BatchResult::Cancelled(error),
            Err(RetryFailure { error, .. }) => {
                if skipped.load(Ordering::Relaxed) {
                    // Not tried: says nothing new about the store.
                } else if !error.unreachable {
                    // The server answered (even "not now"): it is there.
                    self.store_answered();
                } else {
                    let streak = self.unreachable_streak.fetch_add(1, Ordering::Relaxed) + 1;
                    if streak >= self.config.max_unreachable_batches.max(1) {
                        if let Ok(mut at) = self.given_up_at.lock() {
                            at.get_or_insert_with(Instant::now);
                        }
                    }
                }
                BatchResult::Failed(error)
            }
        };
        Outcome {
            unit,
            records,
            attempts,
            elapsed,
            result,
        }
    }

    /// Half-open: if the writer gave up on the store long enough ago
    /// ([`WriterConfig::unreachable_retry_after`]), the next failure gives
    /// up again at once, and each batch gets one attempt until one commits.
    /// A store that stays down then costs one failed attempt per interval,
    /// not a round of retries per write.
    fn maybe_try_again(&self) {
        if !self.store_given_up() {
            return;
        }
        let Ok(mut at) = self.given_up_at.lock() else {
            return;
        };
        let due = at.is_none_or(|t| t.elapsed() >= self.config.unreachable_retry_after);
        if due {
            *at = None;
            self.probing.store(true, Ordering::Relaxed);
            self.unreachable_streak.store(
                self.config.max_unreachable_batches.max(1) - 1,
                Ordering::Relaxed,
            );
        }
    }

    /// Tries the store again from scratch (full retries): the user says it
    /// is back ([`rerun_dead_letters`]).
    pub fn reset_unreachable(&self) {
        self.store_answered();
    }

    /// The store answered: closes the breaker (no streak, full retries).
    fn store_answered(&self) {
        self.unreachable_streak.store(0, Ordering::Relaxed);
        self.probing.store(false, Ordering::Relaxed);
        if let Ok(mut at) = self.given_up_at.lock() {
            *at = None;
        }
    }

    fn store_given_up(&self) -> bool {
        self.unreachable_streak.load(Ordering::Relaxed)
            >= self.config.max_unreachable_batches.max(1)
    }

    fn record_outcome(
        &self,
        outcome: Outcome,
        state: &mut WindowState<'_>,
        report: &mut WriteReport,
    ) -> Result<(), StoreError> {
        let rows = outcome.unit.rows();
        let number = outcome.unit.number();
        report.retries += u64::from(outcome.attempts.saturating_sub(1));
        match outcome.result {
            BatchResult::Committed => {
                report.rows += rows as u64;
                report.batches += 1;
                report.batch_sizes.push(rows);
                report.batch_time += outcome.elapsed;
                // A combined unit's time says little about any one kind's
                // best size: only single batches teach the sizers.
                if let [one] = outcome.unit.batches.as_slice() {
                    self.with_sizer(one.key.kind(), |s| s.on_success(rows, outcome.elapsed));
                }
                tracing::debug!(
                    batch = number,
                    group = %outcome.unit.groups(),
                    rows,
                    ms = outcome.elapsed.as_millis() as u64,
                    "batch committed"
                );
            }
            BatchResult::Cancelled(f) => {
                tracing::info!(
                    batch = number,
                    group = %outcome.unit.groups(),
                    rows,
                    attempts = outcome.attempts,
                    last_error = %f.message,
                    "batch cancelled while waiting to retry; its records are left for a re-run"
                );
                state.cancel(&outcome.records, number);
            }
            BatchResult::Failed(f) => {
                tracing::error!(
                    batch = number,
                    group = %outcome.unit.groups(),
                    rows,
                    attempts = outcome.attempts,
                    error = %f.message,
                    "batch failed; its records go to the dead-letter file"
                );
                let fresh = state.fail(&outcome.records, number);
                self.dead_letter_records(&fresh)?;
                report.dead_lettered_records += fresh.len() as u64;
                report.dead_letter = Some(self.config.dead_letter.clone());
                report.set_aside.push(SetAside {
                    stage: Stage::Store,
                    item: format!("batch {number} ({})", outcome.unit.groups()),
                    reason: SetAsideReason::BatchFailed,
                    detail: format!(
                        "{rows} rows, {} attempts: {}; records in {}",
                        outcome.attempts,
                        f.message,
                        self.config.dead_letter.display()
                    ),
                });
                report.failed_batches.push(FailedBatch {
                    number,
                    group: outcome.unit.groups(),
                    rows,
                    attempts: outcome.attempts,
                    error: f.message,
                });
            }
        }
        Ok(())
    }

    fn dead_letter_records(&self, records: &[&Record]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let path = &self.config.dead_letter;
        let err = |e: std::io::Error| StoreError::DeadLetter {
            path: path.clone(),
            detail: e.to_string(),
        };
        let mut guard = self
            .dead_letter
            .lock()
            .map_err(|_| StoreError::DeadLetter {
                path: path.clone(),
                detail: "writer lock poisoned".into(),
            })?;
        if guard.is_none() {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(err)?;
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(err)?;
            *guard = Some(BufWriter::new(file));
        }
        if let Some(out) = guard.as_mut() {
            for r in records {
                jsonl::write_record(out, r).map_err(err)?;
            }
            out.flush().map_err(err)?;
        }
        Ok(())
    }

    fn flush_dead_letter(&self) -> Result<(), StoreError> {
        if let Ok(mut guard) = self.dead_letter.lock() {
            if let Some(out) = guard.as_mut() {
                out.flush().map_err(|e| StoreError::DeadLetter {
                    path: self.config.dead_letter.clone(),
                    detail: e.to_string(),
                })?;
            }
            *guard = None;
        }
        Ok(())
    }
}

/// Reads a dead-letter file's records (a bad line is an error naming it).
pub fn read_dead_letters(path: &Path) -> Result<Vec<Record>, StoreError> {
    let file = File::open(path).map_err(|e| StoreError::DeadLetter {
        path: path.to_owned(),
        detail: e.to_string(),
    })?;
    jsonl::RecordReader::new(BufReader::new(file), path.display().to_string())
        .map(|r| {
            r.map_err(|e| StoreError::DeadLetter {
                path: path.to_owned(),
                detail: e.to_string(),
            })
        })
        .collect()
}

/// Writes the records of the writer's dead-letter file again. The file is
/// first moved aside (`<file>.replay`), so the batches that fail again land
/// in a fresh dead-letter file and a third run can retry those. With no
/// dead-letter file there is nothing to do: an empty report.
pub async fn rerun_dead_letters<S: GraphSink>(
    writer: &BatchWriter<S>,
) -> Result<WriteReport, StoreError> {
    let path = writer.config().dead_letter.clone();
    let replay = PathBuf::from(format!("{}.replay", path.display()));
    if !replay.exists() {
        if !path.exists() {
            return Ok(WriteReport::default());
        }
        std::fs::rename(&path, &replay).map_err(|e| StoreError::DeadLetter {
            path: path.clone(),
            detail: format!("cannot move aside to {}: {e}", replay.display()),
        })?;
    }
    // A replay file left by an interrupted re-run is read again: writing is
    // idempotent.
    let records = read_dead_letters(&replay)?;
    writer.reset_unreachable();
    let report = writer.write_records(records).await?;
    std::fs::remove_file(&replay).map_err(|e| StoreError::DeadLetter {
        path: replay.clone(),
        detail: e.to_string(),
    })?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{FailRule, MemorySink};
    use crate::plan::Row;
    use kg_core::{Chunk, ChunkId, Document, DocumentId, MediaType};

    fn corpus(docs: usize, chunks_per_doc: usize) -> Vec<Record> {
        let mut out = Vec::new();
        for d in 0..docs {
            let sha = kg_core::sha256_hex(format!("doc {d}").as_bytes());
            let id = DocumentId::from_content_sha256(&sha);
            out.push(Record::Document(Document {
                id: id.clone(),
                source: format!("corpus/{d}.txt"),
                title: None,
                sha256: sha,
                pages: None,
                media_type: MediaType::Text,
                bytes: 1_000,
            }));
            for i in 0..chunks_per_doc {
                let text = format!("Paragraph {i} of document {d}: the Bolt writer test corpus.");
                out.push(Record::Chunk(Chunk {
                    id: ChunkId::new(&id, i as u32, &text),
                    document_id: id.clone(),
                    index: i as u32,
                    text,
                    tokens: 12,
                    source: format!("corpus/{d}.txt"),
                    page_start: None,
                    page_end: None,
                }));
            }
        }
        out
    }

    fn config(dir: &Path) -> WriterConfig {
        WriterConfig {
            dead_letter: dir.join("dead.jsonl"),
            retry: RetryPolicy::new(3, Duration::from_millis(1), Duration::from_millis(5)).unwrap(),
            ..WriterConfig::default()
        }
    }

    /// A modelled server: a fixed cost per transaction, a cost per row,
    /// and a cost growing with the square of the batch (big transactions
    /// get slower per row). Fastest at 1,000 rows: 33.3k rows/s.
    fn modelled_time(rows: usize) -> Duration {
        let r = rows as f64;
        Duration::from_secs_f64(5e-3 + r * 20e-6 + r * r * 5e-9)
    }

    fn modelled_rate(rows: usize) -> f64 {
        rows as f64 / modelled_time(rows).as_secs_f64()
    }

    #[test]
    fn sizer_climbs_to_the_fastest_size_and_stays_near_it() {
        let optimum = modelled_rate(1_000);
        for initial in [50, 1_000, 20_000] {
            let mut s = BatchSizer::new(initial, 50, 20_000, Duration::from_secs(2));
            let mut used = Vec::new();
            for _ in 0..60 {
                let n = s.next_size();
                used.push(n);
                s.on_success(n, modelled_time(n));
            }
            let best = s.best_size().unwrap();
            assert!(
                modelled_rate(best) >= 0.95 * optimum,
                "from {initial}: settled on {best} ({:.0} rows/s), sizes {used:?}",
                modelled_rate(best)
            );
            // Once settled, most batches are at the best size: probes are rare.
            let tail = &used[40..];
            let at_best = tail.iter().filter(|n| **n == best).count();
            assert!(at_best * 10 >= tail.len() * 7, "sizes {used:?}");
        }
    }

    #[test]
    fn sizer_probes_the_neighbours_and_returns_when_they_are_slower() {
        let mut s = BatchSizer::new(1_000, 50, 20_000, Duration::from_secs(2));
        s.on_success(1_000, modelled_time(1_000));
        // First probe: larger.
        assert_eq!(s.next_size(), 1_500);
        s.on_success(1_500, modelled_time(1_500));
        // Slower: back to the best size.
        assert_eq!(s.next_size(), 1_000);
        for _ in 0..BatchSizer::PROBE_EVERY {
            assert_eq!(s.next_size(), 1_000);
            s.on_success(1_000, modelled_time(1_000));
        }
        // The next probe goes the other way.
        assert_eq!(s.next_size(), 666);
        s.on_success(666, modelled_time(666));
        assert_eq!(s.next_size(), 1_000);
        // A short tail batch says nothing, even a slow one.
        s.on_success(10, Duration::from_secs(1));
        assert_eq!(s.next_size(), 1_000);
        assert_eq!(s.best_size(), Some(1_000));
    }

    #[test]
    fn sizer_keeps_under_the_latency_ceiling_and_halves_on_errors() {
        // A server writing 1,000 rows/s whatever the size: throughput says
        // nothing, the ceiling (500 ms) bounds the batch.
        let ceiling = Duration::from_millis(500);
        let mut s = BatchSizer::new(1_000, 50, 20_000, ceiling);
        s.on_success(1_000, Duration::from_secs(1));
        assert_eq!(s.next_size(), 450);
        for _ in 0..30 {
            let n = s.next_size();
            assert!(n <= 500, "{n} rows would take over the ceiling");
            s.on_success(n, Duration::from_millis(n as u64));
        }
        for _ in 0..20 {
            s.on_too_big();
        }
        assert_eq!(s.next_size(), 50);
        assert_eq!(s.best_size(), None);
        // Bounds hold at the top too.
        let mut s = BatchSizer::new(100_000, 50, 20_000, ceiling);
        assert_eq!(s.next_size(), 20_000);
        s.on_success(20_000, Duration::from_millis(10));
        assert!(s.next_size() <= 20_000);
    }

    #[tokio::test]
    async fn writes_every_row_nodes_before_relationships() {
        let dir = tempfile::tempdir().unwrap();
        let records = corpus(3, 400);
        let writer = BatchWriter::new(MemorySink::new(), config(dir.path()));
        let report = writer.write_records(records).await.unwrap();
        report.check().unwrap();
        // 3 documents + 1200 chunks + 1200 HAS_CHUNK + 1197 NEXT_CHUNK.
        assert_eq!(report.rows, 3 + 1_200 + 1_200 + 1_197);
        assert_eq!(writer.sink().rows(), report.rows);
        assert_eq!(report.records, 1_203);
        let batches = writer.sink().batches();
        let first_rel = batches
            .iter()
            .position(|(_, g, _)| g == "has_chunk" || g == "next_chunk")
            .unwrap();
        assert!(batches[..first_rel]
            .iter()
            .all(|(_, g, _)| g == "documents" || g == "chunks"));
        assert!(batches[first_rel..]
            .iter()
            .all(|(_, g, _)| g == "has_chunk" || g == "next_chunk"));
        assert_eq!(report.batch_sizes.iter().sum::<usize>() as u64, report.rows);
        assert_eq!(report.success_rate(), 1.0);
        assert!(!dir.path().join("dead.jsonl").exists());
    }

    /// A sink whose chunk batches take the modelled server's time, four
    /// times over (fastest at 1,000 rows; tens of ms per batch, so that the
    /// timer's granularity does not decide).
    struct ModelledSink(MemorySink);

    impl GraphSink for ModelledSink {
        async fn write_batch(&self, batch: Arc<Batch>) -> Result<(), BatchFailure> {
            if batch.key == GroupKey::Chunks {
                tokio::time::sleep(modelled_time(batch.rows.len()) * 4).await;
            }
            self.0.write_batch(batch).await
        }
    }

    #[tokio::test]
    async fn batch_size_climbs_from_the_first_batch_to_the_fastest_size() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.initial_batch_rows = 100;
        let writer = BatchWriter::new(ModelledSink(MemorySink::new()), cfg);
        let report = writer.write_records(corpus(1, 12_000)).await.unwrap();
        report.check().unwrap();
        assert_eq!(report.rows, 1 + 12_000 * 3 - 1);
        let sizes: Vec<usize> = writer
            .sink()
            .0
            .batches()
            .into_iter()
            .filter(|(_, g, _)| g == "chunks")
            .map(|(_, _, n)| n)
            .collect();
        // 100 rows pay the per-transaction cost: the first probe, 150, is faster.
        assert_eq!(&sizes[..2], &[100, 150], "{sizes:?}");
        // It climbs to the fastest sizes and does not run off to the
        // maximum, as a latency target alone would (every batch here is far
        // under the 500 ms target).
        let largest = sizes.iter().copied().max().unwrap_or(0);
        assert!((700..=2_600).contains(&largest), "{sizes:?}");
        let late = &sizes[sizes.len() / 2..sizes.len() - 1];
        assert!(late.iter().all(|n| (300..=2_600).contains(n)), "{sizes:?}");
    }

    #[tokio::test]
    async fn transient_failures_are_retried_permanent_ones_dead_lettered() {
        let dir = tempfile::tempdir().unwrap();
        let records = corpus(2, 30);
        let rule = FailRule(Arc::new(|batch: &Batch, attempt: u32| {
            match (&batch.key, attempt) {
                // Chunks fail twice with a deadlock, then land.
                (GroupKey::Chunks, 0 | 1) => Some(BatchFailure::transient(
                    "Neo.TransientError.Transaction.DeadlockDetected",
                )),
                // Documents always violate a constraint.
                (GroupKey::Documents, _) => Some(BatchFailure::permanent(
                    "Neo.ClientError.Schema.ConstraintValidationFailed",
                )),
                _ => None,
            }
        }));
        let mut cfg = config(dir.path());
        cfg.window_records = 1_000;
        let writer = BatchWriter::new(MemorySink::failing(rule), cfg);
        let mut input = records.clone();
        input.push(Record::SetAside(SetAside {
            stage: Stage::Ingest,
            item: "corpus/broken.pdf".into(),
            reason: kg_core::SetAsideReason::EncryptedPdf,
            detail: "the PDF is encrypted".into(),
        }));
        let report = writer.write_records(input).await.unwrap();
        assert_eq!(report.retries, 2);
        assert_eq!(report.failed_batches.len(), 1);
        assert_eq!(report.failed_batches[0].group, "documents");
        assert_eq!(report.failed_batches[0].attempts, 1);
        assert_eq!(report.set_aside.len(), 2);
        assert_eq!(
            report.set_aside[0].reason,
            kg_core::SetAsideReason::EncryptedPdf
        );
        assert_eq!(
            report.set_aside[1].reason,
            kg_core::SetAsideReason::BatchFailed
        );
        let err = report.check().unwrap_err();
        assert!(
            err.to_string().contains("ConstraintValidationFailed"),
            "{err}"
        );
        assert!(err.to_string().contains("documents"), "{err}");
        // The two document records are in the dead-letter file, nothing else.
        let dead = read_dead_letters(&dir.path().join("dead.jsonl")).unwrap();
        assert_eq!(dead.len(), 2);
        assert!(dead.iter().all(|r| matches!(r, Record::Document(_))));
        assert_eq!(report.dead_lettered_records, 2);
        assert_eq!(writer.sink().rows(), report.rows);
        assert!(
            (report.success_rate() - report.batches as f64 / (report.batches + 1) as f64).abs()
                < 1e-9
        );
    }

    #[tokio::test]
    async fn an_unreachable_store_stops_being_tried() {
        let dir = tempfile::tempdir().unwrap();
        let down = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let is_down = down.clone();
        let rule = FailRule(Arc::new(move |_: &Batch, _| {
            is_down
                .load(std::sync::atomic::Ordering::Relaxed)
                .then(|| BatchFailure {
                    unreachable: true,
                    ..BatchFailure::transient("connection refused")
                })
        }));
        let mut cfg = config(dir.path()).fixed_batch_rows(100);
        cfg.node_concurrency = 1;
        // Long enough that the write right after the first one comes
        // before it on a busy machine.
        cfg.unreachable_retry_after = Duration::from_secs(1);
        let writer = BatchWriter::new(MemorySink::failing(rule), cfg);
        let records = corpus(1, 1_000);
        let report = writer.write_records(records.clone()).await.unwrap();
        assert_eq!(report.batches, 0);
        // 1 document batch + 10 chunk batches + relationship batches, all failed;
        // only the first three were tried (3 attempts each).
        assert!(report.failed_batches.len() > 10);
        assert!(report.failed_batches[..3].iter().all(|b| b.attempts == 3));
        assert!(report.failed_batches[3..].iter().all(|b| b.attempts == 0));
        assert_eq!(report.retries, 6);
        // Every record is in the dead-letter file exactly once.
        let dead = read_dead_letters(&dir.path().join("dead.jsonl")).unwrap();
        assert_eq!(dead.len(), records.len());
        // The error lists the first batches, then counts the rest.
        let message = report.check().unwrap_err().to_string();
        assert!(message.contains("batch 1 ("), "{message}");
        assert!(
            message.contains(&format!(
                "and {} more batches ({} records dead-lettered in all)",
                report.failed_batches.len() - 5,
                records.len()
            )),
            "{message}"
        );
        assert!(message.len() < 2_000, "{} bytes", message.len());
        // Given up: a write right after does not try the store at all.
        let again = writer.write_records(corpus(1, 10)).await.unwrap();
        assert!(!again.failed_batches.is_empty());
        assert!(again.failed_batches.iter().all(|b| b.attempts == 0));
        // Once the retry interval is over, one attempt of one batch, no
        // retries, then given up again.
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let probe = writer.write_records(corpus(1, 10)).await.unwrap();
        assert_eq!(probe.failed_batches[0].attempts, 1, "{probe:?}");
        assert!(probe.failed_batches[1..].iter().all(|b| b.attempts == 0));
        assert_eq!(probe.retries, 0);
        // The store is back: after the interval the next write lands.
        down.store(false, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        writer
            .write_records(corpus(1, 10))
            .await
            .unwrap()
            .check()
            .unwrap();
        // And a re-run of the dead letters lands everything.
        let rerun = rerun_dead_letters(&writer).await.unwrap();
        rerun.check().unwrap();
        assert!(rerun.records >= records.len() as u64);
    }

    /// A probe that reaches a server which answers "not now" (a transient
    /// error, not a dead connection) closes the breaker: the batches after
    /// it get their full retries again, and the write after that lands.
    #[tokio::test]
    async fn a_store_that_answers_closes_the_breaker() {
        use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
        let dir = tempfile::tempdir().unwrap();
        // 0: down (connection refused), 1: starting up, 2: up.
        let phase = Arc::new(AtomicU8::new(0));
        let now = phase.clone();
        let rule = FailRule(Arc::new(move |_: &Batch, _| match now.load(Relaxed) {
            0 => Some(BatchFailure {
                unreachable: true,
                ..BatchFailure::transient("connection refused")
            }),
            1 => Some(BatchFailure::transient(
                "Neo.TransientError.General.DatabaseUnavailable: starting",
            )),
            _ => None,
        }));
        let mut cfg = config(dir.path()).fixed_batch_rows(100);
        cfg.node_concurrency = 1;
        cfg.unreachable_retry_after = Duration::from_millis(50);
        let writer = BatchWriter::new(MemorySink::failing(rule), cfg);
        let down = writer.write_records(corpus(1, 500)).await.unwrap();
        assert!(down.failed_batches.iter().any(|b| b.attempts == 0));

        phase.store(1, Relaxed);
        tokio::time::sleep(Duration::from_millis(80)).await;
        let starting = writer.write_records(corpus(1, 500)).await.unwrap();
        assert_eq!(starting.failed_batches[0].attempts, 1, "the probe");
        assert!(
            starting.failed_batches[1..].iter().all(|b| b.attempts == 3),
            "full retries once the server answered: {:?}",
            starting.failed_batches
        );

        phase.store(2, Relaxed);
        writer
            .write_records(corpus(1, 500))
            .await
            .unwrap()
            .check()
            .unwrap();
    }

    #[tokio::test]
    async fn rerun_writes_the_dead_letters_and_clears_them() {
        let dir = tempfile::tempdir().unwrap();
        let records = corpus(1, 5);
        let failing = BatchWriter::new(
            MemorySink::failing(FailRule(Arc::new(|b: &Batch, _| {
                (b.key == GroupKey::Chunks).then(|| BatchFailure::permanent("type error"))
            }))),
            config(dir.path()),
        );
        let report = failing.write_records(records).await.unwrap();
        assert_eq!(report.dead_lettered_records, 5);
        let healthy = BatchWriter::new(MemorySink::new(), config(dir.path()));
        let rerun = rerun_dead_letters(&healthy).await.unwrap();
        rerun.check().unwrap();
        assert_eq!(rerun.records, 5);
        // 5 chunks, 5 HAS_CHUNK, 4 NEXT_CHUNK.
        assert_eq!(healthy.sink().rows(), 14);
        assert!(!dir.path().join("dead.jsonl").exists());
        assert!(!dir.path().join("dead.jsonl.replay").exists());
        assert_eq!(rerun_dead_letters(&healthy).await.unwrap().records, 0);
    }

    /// A sink that keeps each transaction as the groups it held, in order,
    /// and refuses every transaction that holds `refuse` (a group kind).
    #[derive(Default)]
    struct TransactionSink {
        transactions: Mutex<Vec<Vec<(&'static str, usize)>>>,
        refuse: Option<&'static str>,
    }

    impl GraphSink for TransactionSink {
        async fn write_batch(&self, batch: Arc<Batch>) -> Result<(), BatchFailure> {
            self.write_batches(vec![batch]).await
        }

        async fn write_batches(&self, batches: Vec<Arc<Batch>>) -> Result<(), BatchFailure> {
            let groups: Vec<(&'static str, usize)> = batches
                .iter()
                .map(|b| (b.key.kind(), b.rows.len()))
                .collect();
            if groups.iter().any(|(g, _)| Some(*g) == self.refuse) {
                return Err(BatchFailure::permanent("refused"));
            }
            self.transactions.lock().unwrap().push(groups);
            Ok(())
        }
    }

    /// What `kg run` sends in one small window: 2 documents of 3 chunks,
    /// their vectors, and extractions naming entities of 4 types and
    /// relations of 3 types: 15 groups of a few rows each.
    fn small_window() -> Vec<Record> {
        use kg_core::{EntityId, ExtractedEntity, ExtractedRelation, Extraction, Label, RelType};
        let mut out = corpus(2, 3);
        let chunks: Vec<ChunkId> = out
            .iter()
            .filter_map(|r| match r {
                Record::Chunk(c) => Some(c.id.clone()),
                _ => None,
            })
            .collect();
        let types = ["Person", "Organization", "Product", "Place"];
        let rels = ["WORKS_AT", "MAKES", "LOCATED_IN"];
        for (i, chunk) in chunks.iter().enumerate() {
            out.push(Record::Embedding(kg_core::Embedding {
                id: chunk.as_str().to_owned(),
                target: EmbeddingTarget::Chunk,
                vector: vec![0.5; 8],
                model: "m".into(),
            }));
            let entity = |t: usize| {
                let label = Label::new(types[t % types.len()]).unwrap();
                let name = format!("Name {}", t);
                ExtractedEntity {
                    id: EntityId::new(&label, &name),
                    name,
                    entity_type: label,
                    description: format!("seen in chunk {i}"),
                }
            };
            let (a, b) = (entity(i), entity(i + 1));
            out.push(Record::Extraction(Extraction {
                chunk_id: chunk.clone(),
                relations: vec![ExtractedRelation {
                    source: a.name.clone(),
                    target: b.name.clone(),
                    source_id: a.id.clone(),
                    target_id: b.id.clone(),
                    rel_type: RelType::new(rels[i % rels.len()]).unwrap(),
                    description: String::new(),
                    strength: 1.0,
                }],
                entities: vec![a, b],
                model: "m".into(),
            }));
        }
        out
    }

    #[tokio::test]
    async fn small_groups_share_one_transaction_per_phase() {
        let dir = tempfile::tempdir().unwrap();
        let records = small_window();
        let groups = crate::plan::plan(&records);
        assert!(groups.len() >= 12, "{} groups", groups.len());
        let planned_rows: usize = groups.iter().map(|g| g.rows.len()).sum();

        let together = BatchWriter::new(TransactionSink::default(), config(dir.path()));
        let report = together.write_records(records.clone()).await.unwrap();
        report.check().unwrap();
        let transactions = together.sink().transactions.lock().unwrap().clone();
        // One transaction for the nodes, one for the relationships.
        assert_eq!(transactions.len(), 2, "{transactions:?}");
        assert_eq!(report.batches, 2);
        assert_eq!(report.rows as usize, planned_rows);
        // In plan order: the chunks before their vectors, every node
        // before any relationship.
        let order: Vec<&str> = transactions.iter().flatten().map(|(g, _)| *g).collect();
        let planned: Vec<&str> = groups.iter().map(|g| g.key.kind()).collect();
        assert_eq!(order, planned);

        // Turned off: a transaction per group.
        let apart = BatchWriter::new(
            TransactionSink::default(),
            WriterConfig {
                combine_small_groups: false,
                ..config(dir.path())
            },
        );
        let report = apart.write_records(records).await.unwrap();
        report.check().unwrap();
        assert_eq!(
            apart.sink().transactions.lock().unwrap().len(),
            groups.len()
        );
    }

    #[tokio::test]
    async fn a_shared_transaction_that_fails_is_split_and_fails_only_the_bad_group() {
        let dir = tempfile::tempdir().unwrap();
        let records = small_window();
        let sink = TransactionSink {
            refuse: Some("mentions"),
            ..TransactionSink::default()
        };
        let writer = BatchWriter::new(sink, config(dir.path()));
        let (tx, mut rx) = mpsc::channel(4);
        let report = writer
            .write_stream(futures::stream::iter(records.clone()), Some(tx))
            .await
            .unwrap();
        assert_eq!(report.failed_batches.len(), 1);
        assert_eq!(report.failed_batches[0].group, "mentions");
        // The relationships' shared transaction failed and was split: each
        // of its other groups committed on its own.
        let groups = crate::plan::plan(&records);
        let rel_groups = groups
            .iter()
            .filter(|g| g.key.phase() == Phase::Relationships)
            .count();
        let transactions = writer.sink().transactions.lock().unwrap().clone();
        assert_eq!(transactions.len(), 1 + rel_groups - 1, "{transactions:?}");
        assert!(transactions[1..].iter().all(|t| t.len() == 1));
        // Exactly the records behind a MENTIONS row failed, and went to the
        // dead-letter file.
        let behind_mentions: std::collections::BTreeSet<usize> = groups
            .iter()
            .filter(|g| g.key == GroupKey::Mentions)
            .flat_map(|g| g.rows.iter().flat_map(|r| r.records.iter().copied()))
            .collect();
        assert!(!behind_mentions.is_empty() && behind_mentions.len() < records.len());
        let mut acks = Vec::new();
        while let Ok(batch) = rx.try_recv() {
            acks.extend(batch);
        }
        assert_eq!(acks.len(), records.len());
        for (i, ack) in acks.iter().enumerate() {
            assert_eq!(ack.key, records[i].key());
            let committed = ack.outcome == AckOutcome::Committed;
            assert_eq!(committed, !behind_mentions.contains(&i), "{ack:?}");
        }
        let dead = read_dead_letters(&dir.path().join("dead.jsonl")).unwrap();
        assert_eq!(dead.len(), behind_mentions.len());
    }

    /// A sink that keeps every committed row, for checks of what exactly
    /// was written.
    #[derive(Default)]
    struct RecordingSink(Mutex<Vec<(GroupKey, Row)>>);

    impl RecordingSink {
        fn rows_of(&self, key: &GroupKey) -> Vec<Row> {
            self.0
                .lock()
                .unwrap()
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, r)| r.clone())
                .collect()
        }
    }

    impl GraphSink for RecordingSink {
        async fn write_batch(&self, batch: Arc<Batch>) -> Result<(), BatchFailure> {
            let mut rows = self.0.lock().unwrap();
            rows.extend(batch.rows.iter().map(|r| (batch.key.clone(), r.clone())));
            Ok(())
        }
    }

    /// Documents of various sizes, one after the other, as ingest sends them.
    fn uneven_corpus() -> Vec<Record> {
        let mut out = Vec::new();
        for (d, n) in [1usize, 250, 17, 3, 400, 64, 2, 129]
            .into_iter()
            .enumerate()
        {
            let mut doc = corpus(1, n);
            // Distinct documents: corpus(1, _) always makes document 0.
            let sha = kg_core::sha256_hex(format!("uneven {d}").as_bytes());
            let id = DocumentId::from_content_sha256(&sha);
            for r in doc.iter_mut() {
                match r {
                    Record::Document(x) => x.id = id.clone(),
                    Record::Chunk(c) => {
                        c.document_id = id.clone();
                        c.id = ChunkId::new(&id, c.index, &c.text);
                    }
                    _ => {}
                }
            }
            out.extend(doc);
        }
        out
    }

    fn expected_links(records: &[Record]) -> Vec<(String, String)> {
        let mut by_doc: HashMap<String, Vec<(u32, String)>> = HashMap::new();
        for r in records {
            if let Record::Chunk(c) = r {
                by_doc
                    .entry(c.document_id.to_string())
                    .or_default()
                    .push((c.index, c.id.to_string()));
            }
        }
        let mut links = Vec::new();
        for chunks in by_doc.values_mut() {
            chunks.sort();
            for w in chunks.windows(2) {
                links.push((w[0].1.clone(), w[1].1.clone()));
            }
        }
        links.sort();
        links
    }

    async fn send_all(records: Vec<Record>, capacity: usize) -> mpsc::Receiver<Record> {
        let (tx, rx) = mpsc::channel(capacity);
        tokio::spawn(async move {
            for r in records {
                if tx.send(r).await.is_err() {
                    return;
                }
            }
        });
        rx
    }

    /// A document's chunks straddle windows (small ones here, cut by size
    /// and by time as the producer trickles): every consecutive pair is
    /// linked exactly once, the chunk carried from the window before is
    /// neither written again nor acknowledged again, and every record is
    /// acknowledged once.
    #[tokio::test]
    async fn next_chunk_links_cross_windows_and_every_record_is_acked_once() {
        let dir = tempfile::tempdir().unwrap();
        let records = uneven_corpus();
        let chunks = records
            .iter()
            .filter(|r| matches!(r, Record::Chunk(_)))
            .count();
        let mut cfg = config(dir.path());
        cfg.window_records = 97;
        let writer = BatchWriter::new(RecordingSink::default(), cfg);
        let (ack_tx, mut ack_rx) = mpsc::channel(4);
        let rx = send_all(records.clone(), 16).await;
        let acks = tokio::spawn(async move {
            let mut all = Vec::new();
            let mut sends = 0;
            while let Some(window) = ack_rx.recv().await {
                sends += 1;
                all.extend(window);
            }
            (sends, all)
        });
        let report = writer.write_channel(rx, Some(ack_tx)).await.unwrap();
        report.check().unwrap();
        let (sends, acks) = acks.await.unwrap();
        assert!(report.windows >= 10, "{} windows", report.windows);
        assert_eq!(sends, report.windows);
        let links: Vec<(String, String)> = {
            let mut l: Vec<_> = writer
                .sink()
                .rows_of(&GroupKey::NextChunk)
                .iter()
                .map(|r| (r.str("from").to_owned(), r.str("to").to_owned()))
                .collect();
            l.sort();
            l
        };
        assert_eq!(links, expected_links(&records));
        assert_eq!(links.len(), chunks - 8);
        // The carried chunk is named by the link, not written again.
        assert_eq!(writer.sink().rows_of(&GroupKey::Chunks).len(), chunks);
        // One ack per record, all committed.
        let mut keys: Vec<String> = acks.iter().map(|a| format!("{:?}", a.key)).collect();
        keys.sort();
        let mut want: Vec<String> = records.iter().map(|r| format!("{:?}", r.key())).collect();
        want.sort();
        assert_eq!(keys, want);
        assert!(acks.iter().all(|a| a.outcome == AckOutcome::Committed));
    }

    /// The tail survives between writes of one writer: a caller that cuts
    /// its own windows (one `write_records` each) still gets every link.
    #[tokio::test]
    async fn next_chunk_links_across_separate_writes_of_one_writer() {
        let dir = tempfile::tempdir().unwrap();
        let records = uneven_corpus();
        let writer = BatchWriter::new(RecordingSink::default(), config(dir.path()));
        for part in records.chunks(50) {
            writer
                .write_records(part.to_vec())
                .await
                .unwrap()
                .check()
                .unwrap();
        }
        let mut links: Vec<(String, String)> = writer
            .sink()
            .rows_of(&GroupKey::NextChunk)
            .iter()
            .map(|r| (r.str("from").to_owned(), r.str("to").to_owned()))
            .collect();
        links.sort();
        assert_eq!(links, expected_links(&records));
    }

    /// One batch fails for good: exactly the records behind it (the ones in
    /// the dead-letter file) are acknowledged `batch_failed` with its
    /// number, every other record `committed`, each record once.
    #[tokio::test]
    async fn a_failed_batch_fails_exactly_the_acks_of_its_records() {
        let dir = tempfile::tempdir().unwrap();
        let records = uneven_corpus();
        // The chunk batch holding chunk 100 of the 250-chunk document.
        let victim = records
            .iter()
            .find_map(|r| match r {
                Record::Chunk(c) if c.index == 100 => Some(c.id.to_string()),
                _ => None,
            })
            .unwrap();
        let rule = FailRule(Arc::new(move |b: &Batch, _| {
            (b.key == GroupKey::Chunks && b.rows.iter().any(|r| r.str("id") == victim))
                .then(|| BatchFailure::permanent("Neo.ClientError.Statement.TypeError"))
        }));
        let mut cfg = config(dir.path()).fixed_batch_rows(40);
        cfg.window_records = 300;
        let writer = BatchWriter::new(MemorySink::failing(rule), cfg);
        let (ack_tx, mut ack_rx) = mpsc::channel(64);
        let report = writer
            .write_channel(send_all(records.clone(), 64).await, Some(ack_tx))
            .await
            .unwrap();
        assert!(report.windows >= 3, "{report:?}");
        assert_eq!(report.failed_batches.len(), 1, "{report:?}");
        let failed_number = report.failed_batches[0].number;
        let mut acks = Vec::new();
        while let Some(w) = ack_rx.recv().await {
            acks.extend(w);
        }
        assert_eq!(acks.len(), records.len());
        let dead: Vec<RecordKey> = read_dead_letters(&dir.path().join("dead.jsonl"))
            .unwrap()
            .iter()
            .map(Record::key)
            .collect();
        assert_eq!(dead.len(), 40);
        for ack in &acks {
            if dead.contains(&ack.key) {
                assert_eq!(
                    ack.outcome,
                    AckOutcome::Failed {
                        reason: SetAsideReason::BatchFailed,
                        batch: failed_number
                    }
                );
            } else {
                assert_eq!(ack.outcome, AckOutcome::Committed, "{:?}", ack.key);
            }
        }
        let mut keys: Vec<String> = acks.iter().map(|a| format!("{:?}", a.key)).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(
            keys.len(),
            records.len(),
            "an ack per record, no record twice"
        );
    }

    /// A store failing transiently forever, a backoff of 30 s, and a
    /// cancellation 100 ms in: the batch waiting to retry wakes and gives
    /// up, no other batch starts, every record is acknowledged `cancelled`,
    /// and nothing is dead-lettered.
    #[tokio::test]
    async fn cancellation_wakes_the_backoff_and_acks_everything_cancelled() {
        let dir = tempfile::tempdir().unwrap();
        let attempts = Arc::new(AtomicU32::new(0));
        let seen = attempts.clone();
        let rule = FailRule(Arc::new(move |_: &Batch, _| {
            seen.fetch_add(1, Ordering::SeqCst);
            Some(BatchFailure::transient(
                "Neo.TransientError.General.DatabaseUnavailable",
            ))
        }));
        let cancel = CancellationToken::new();
        let cfg = WriterConfig {
            dead_letter: dir.path().join("dead.jsonl"),
            retry: RetryPolicy::new(8, Duration::from_secs(30), Duration::from_secs(30)).unwrap(),
            cancel: cancel.clone(),
            ..WriterConfig::default()
        };
        let writer = Arc::new(BatchWriter::new(MemorySink::failing(rule), cfg));
        let records = uneven_corpus();
        let (ack_tx, mut ack_rx) = mpsc::channel(64);
        let write = {
            let (writer, records) = (writer.clone(), records.clone());
            tokio::spawn(async move {
                writer
                    .write_stream(futures::stream::iter(records), Some(ack_tx))
                    .await
            })
        };
        // Cancel once the first batch is waiting to retry.
        while attempts.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        cancel.cancel();
        // A hang guard, far below the 15 s the first backoff waits at least.
        let report = tokio::time::timeout(Duration::from_secs(10), write)
            .await
            .expect("the write did not return after the cancellation")
            .unwrap()
            .unwrap();
        assert_eq!(
            attempts.load(Ordering::SeqCst),
            1,
            "no second attempt, no other batch"
        );
        assert_eq!(report.batches, 0);
        assert!(report.failed_batches.is_empty(), "{report:?}");
        assert_eq!(report.cancelled_records, records.len() as u64);
        assert!(report.was_cancelled());
        report.check().unwrap();
        let mut acks = Vec::new();
        while let Some(w) = ack_rx.recv().await {
            acks.extend(w);
        }
        assert_eq!(acks.len(), records.len());
        assert!(acks.iter().all(|a| matches!(
            a.outcome,
            AckOutcome::Failed {
                reason: SetAsideReason::Cancelled,
                ..
            }
        )));
        // The batch that was tried is named; the others never had one.
        assert!(acks
            .iter()
            .any(|a| matches!(a.outcome, AckOutcome::Failed { batch: 1, .. })));
        assert!(!dir.path().join("dead.jsonl").exists());
    }
}
