//! The streaming driver: a stream of chunks or entities in, `Record`s out.
//!
//! ```text
//! items ──▶ cache lookup ──hit──────────────────────────────▶ Record::Embedding
//!               │miss
//!               ▼
//!        pending batch (count + token budget, or a short wait)
//!               │ full
//!               ▼
//!        ≤ concurrency batch tasks ──ok──▶ dimension check ─▶ cache ─▶ Record::Embedding
//!                                  └─err─▶ fatal? stop : Record::SetAside per item
//! ```
//!
//! Design choices:
//! - **Bounded.** Batches run on kg-core's [`WorkerPool`] with
//!   `concurrency` workers and a queue of `concurrency` batches; while it is
//!   full the driver stops reading its input, so backpressure reaches the
//!   upstream stage instead of memory growing. At most
//!   `2 × concurrency + 1` batches exist at once.
//! - **Producer and consumer run side by side**: one half reads the input,
//!   serves cache hits and fills batches, the other turns the pool's
//!   outcomes into records, so requests keep progressing while either waits
//!   on its channel.
//! - **Size and time.** A batch goes when it has `max_inputs` texts, when the
//!   next text would exceed its token budget, or `max_wait` after its first
//!   text arrived (a slow upstream does not hold finished work back).
//! - **Nothing lost.** Every input item ends as exactly one record: an
//!   embedding (fresh or cached) or a set-aside with its reason (its batch
//!   kept failing, or its text is empty: APIs reject empty inputs). Errors that
//!   would hit every later batch too, or corrupt the index (a changed
//!   dimension, a rejected key), stop the run instead ([`EmbedError::is_fatal`]).
//! - **Graceful cancellation.** On cancel the driver stops reading, lets the
//!   batches in flight finish (they are paid for) and emits their records,
//!   drops the queued ones unsent, then returns [`EmbedError::Cancelled`].
//! - Records come out in completion order, not input order; each names its
//!   item by id.

use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use kg_core::pool::{Outcome, PoolConfig, WorkerPool, MAX_WORKERS};
use kg_core::{Chunk, Embedding, EmbeddingTarget, Entity, Record, SetAside, Stage};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{EmbedCache, EmbedError, Embedder};

/// One text to embed, with what its vector belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedItem {
    /// Id of the chunk or entity.
    pub id: String,
    /// What `id` names.
    pub target: EmbeddingTarget,
    /// The text to embed.
    pub text: String,
}

impl EmbedItem {
    /// A chunk's text.
    pub fn from_chunk(chunk: &Chunk) -> Self {
        Self {
            id: chunk.id.as_str().to_string(),
            target: EmbeddingTarget::Chunk,
            text: chunk.text.clone(),
        }
    }

    /// An entity's name, type and description ([`entity_text`]).
    pub fn from_entity(entity: &Entity) -> Self {
        Self {
            id: entity.id.as_str().to_string(),
            target: EmbeddingTarget::Entity,
            text: entity_text(entity),
        }
    }
}

/// The text embedded for an entity: `"Name (Type): description"`, or
/// `"Name (Type)"` without a description. The type disambiguates homonyms
/// ("Debian (Organization)" vs "Debian (Software)") and the description is
/// what a search query usually matches.
pub fn entity_text(entity: &Entity) -> String {
    let description = entity.description.trim();
    if description.is_empty() {
        format!("{} ({})", entity.name, entity.entity_type.as_str())
    } else {
        format!(
            "{} ({}): {}",
            entity.name,
            entity.entity_type.as_str(),
            description
        )
    }
}

/// Options of the driver.
#[derive(Debug, Clone)]
pub struct EmbedOptions {
    /// The persistent cache, if any: hits cost no call, fresh vectors are
    /// added.
    pub cache: Option<Arc<EmbedCache>>,
    /// Stops the run gracefully (see the module docs).
    pub cancel: CancellationToken,
    /// Longest a partly filled batch waits for more input before it goes.
    pub max_wait: Duration,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        Self {
            cache: None,
            cancel: CancellationToken::new(),
            max_wait: Duration::from_millis(200),
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EmbedSummary {
    /// The model id written into every embedding.
    pub model: String,
    /// The vectors' dimension (`None` if nothing was embedded).
    pub dimensions: Option<usize>,
    /// Items read from the input.
    pub items: u64,
    /// Embeddings computed in this run.
    pub embedded: u64,
    /// Embeddings served from the cache.
    pub cached: u64,
    /// Items set aside (their batch kept failing, or their text is empty).
    pub set_aside: u64,
    /// Batches sent to the embedder.
    pub batches: u64,
    /// Batches that failed (their items are set aside).
    pub failed_batches: u64,
    /// Items read but left unembedded because the run stopped early.
    pub abandoned: u64,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
}

impl EmbedSummary {
    /// Records emitted: embeddings plus set-asides.
    pub fn done(&self) -> u64 {
        self.embedded + self.cached + self.set_aside
    }
}

/// Embeds a stream of chunks; see [`embed_items`].
pub async fn embed_chunks<E, S>(
    embedder: Arc<E>,
    chunks: S,
    options: EmbedOptions,
    out: mpsc::Sender<Record>,
) -> Result<EmbedSummary, EmbedError>
where
    E: Embedder + ?Sized + 'static,
    S: Stream<Item = Chunk>,
{
    embed_items(
        embedder,
        chunks.map(|c| EmbedItem::from_chunk(&c)),
        options,
        out,
    )
    .await
}

/// Embeds a stream of entities (name, type and description, for entity
/// search); see [`embed_items`].
pub async fn embed_entities<E, S>(
    embedder: Arc<E>,
    entities: S,
    options: EmbedOptions,
    out: mpsc::Sender<Record>,
) -> Result<EmbedSummary, EmbedError>
where
    E: Embedder + ?Sized + 'static,
    S: Stream<Item = Entity>,
{
    embed_items(
        embedder,
        entities.map(|e| EmbedItem::from_entity(&e)),
        options,
        out,
    )
    .await
}

/// A batch of cache misses on its way through the pool.
struct Batch {
    number: u64,
    items: Vec<EmbedItem>,
    /// Each item's [`Embedder::count_tokens`], when the embedder has a
    /// token budget (counted once, here; empty otherwise).
    tokens: Vec<usize>,
}

/// What the pool hands back: a batch with its vectors, with its error, or
/// (after a stop) unstarted.
type BatchOutcomes = kg_core::pool::PoolOutput<Batch, (Batch, Vec<Vec<f32>>), (Batch, EmbedError)>;

#[derive(Default)]
struct Counters {
    items: AtomicU64,
    embedded: AtomicU64,
    cached: AtomicU64,
    set_aside: AtomicU64,
    batches: AtomicU64,
    failed_batches: AtomicU64,
    abandoned: AtomicU64,
}

impl Counters {
    fn done(&self) -> u64 {
        self.embedded.load(Ordering::Relaxed)
            + self.cached.load(Ordering::Relaxed)
            + self.set_aside.load(Ordering::Relaxed)
    }
}

/// The dimension of this run: configured, or learned from the first vector
/// (cached or fresh), with where it was learned for the error message.
struct Dimension {
    expected: Option<usize>,
    source: String,
}

/// What the producer and the consumer halves share.
struct Shared<'a, E: ?Sized> {
    embedder: &'a Arc<E>,
    options: &'a EmbedOptions,
    out: &'a mpsc::Sender<Record>,
    counters: Counters,
    dimension: Mutex<Dimension>,
    /// Stops the pool and the producer: the caller's cancellation, or a
    /// fatal error in either half.
    stop: CancellationToken,
}

impl<E: Embedder + ?Sized + 'static> Shared<'_, E> {
    fn check_dims(&self, actual: usize, context: impl Fn() -> String) -> Result<(), EmbedError> {
        let mut dim = self.dimension.lock().map_err(|_| EmbedError::Inference {
            model: self.embedder.model_id().to_string(),
            batch_len: 0,
            detail: "dimension lock poisoned".into(),
        })?;
        match dim.expected {
            None => {
                dim.expected = Some(actual);
                dim.source = context();
                Ok(())
            }
            Some(expected) if expected == actual => Ok(()),
            Some(expected) => Err(EmbedError::DimensionMismatch {
                model: self.embedder.model_id().to_string(),
                expected,
                actual,
                context: format!("{}; first seen in {}", context(), dim.source),
            }),
        }
    }

    async fn emit(&self, record: Record) -> Result<(), EmbedError> {
        self.out
            .send(record)
            .await
            .map_err(|_| EmbedError::OutputClosed {
                done: self.counters.done(),
            })
    }

    async fn emit_embedding(&self, item: EmbedItem, vector: Vec<f32>) -> Result<(), EmbedError> {
        self.emit(Record::Embedding(Embedding {
            id: item.id,
            target: item.target,
            vector,
            model: self.embedder.model_id().to_string(),
        }))
        .await
    }

    /// Serves `item` from the cache if it is there; hands it back if not.
    async fn try_cache(&self, item: EmbedItem) -> Result<Option<EmbedItem>, EmbedError> {
        let Some(cache) = &self.options.cache else {
            return Ok(Some(item));
        };
        let Some(vector) = cache.get(self.embedder.model_id(), &item.text)? else {
            return Ok(Some(item));
        };
        self.check_dims(vector.len(), || {
            format!("the cache {} (item {})", cache.path().display(), item.id)
        })?;
        self.emit_embedding(item, vector).await?;
        self.counters.cached.fetch_add(1, Ordering::Relaxed);
        Ok(None)
    }

    /// The producer half: reads items, serves cache hits, fills batches by
    /// count, token budget and time, and queues them on the pool.
    async fn produce<S>(
        &self,
        items: S,
        pool: kg_core::pool::PoolInput<Batch>,
    ) -> Result<(), EmbedError>
    where
        S: Stream<Item = EmbedItem>,
    {
        let limits = self.embedder.batch_limits();
        let max_inputs = limits.max_inputs.max(1);
        let mut items = pin!(items);
        let mut pending: Vec<EmbedItem> = Vec::new();
        let mut counts: Vec<usize> = Vec::new();
        let mut pending_tokens = 0usize;
        let mut deadline = tokio::time::Instant::now();

        let submit =
            |pending: &mut Vec<EmbedItem>, counts: &mut Vec<usize>, pending_tokens: &mut usize| {
                *pending_tokens = 0;
                let items = std::mem::take(pending);
                let tokens = std::mem::take(counts);
                let number = self.counters.batches.fetch_add(1, Ordering::Relaxed) + 1;
                let pool = &pool;
                async move {
                    let batch = Batch {
                        number,
                        items,
                        tokens,
                    };
                    if let Err(closed) = pool.submit(batch).await {
                        // Stopped while waiting for room: never sent, not paid.
                        self.counters.batches.fetch_sub(1, Ordering::Relaxed);
                        self.counters
                            .abandoned
                            .fetch_add(closed.0.items.len() as u64, Ordering::Relaxed);
                    }
                }
            };

        loop {
            tokio::select! {
                biased;
                () = self.stop.cancelled() => {
                    self.counters.abandoned.fetch_add(pending.len() as u64, Ordering::Relaxed);
                    pending.clear();
                    break;
                }
                () = tokio::time::sleep_until(deadline), if !pending.is_empty() => {
                    submit(&mut pending, &mut counts, &mut pending_tokens).await;
                }
                next = items.next() => {
                    let Some(item) = next else {
                        if !pending.is_empty() {
                            submit(&mut pending, &mut counts, &mut pending_tokens).await;
                        }
                        break;
                    };
                    self.counters.items.fetch_add(1, Ordering::Relaxed);
                    if item.text.trim().is_empty() {
                        // APIs reject empty inputs, and a model's vector of
                        // nothing would match every query a little.
                        self.emit(Record::SetAside(SetAside {
                            stage: Stage::Embed,
                            item: item.id,
                            reason: kg_core::SetAsideReason::EmptyText,
                            detail: "nothing to embed: the text is empty".into(),
                        }))
                        .await?;
                        self.counters.set_aside.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let Some(item) = self.try_cache(item).await? else {
                        continue;
                    };
                    let tokens = match limits.max_tokens {
                        Some(_) => {
                            // A tokenizer costs a fraction of a millisecond
                            // a text; with many texts ready, counting them
                            // all in one poll would hold a runtime worker
                            // (and every task queued behind it: LLM calls,
                            // store transactions) for tens of milliseconds.
                            let n = self.embedder.count_tokens(&item.text);
                            tokio::task::yield_now().await;
                            Some(n)
                        }
                        None => None,
                    };
                    let n = tokens.unwrap_or(0);
                    if limits
                        .max_tokens
                        .is_some_and(|budget| !pending.is_empty() && pending_tokens + n > budget)
                    {
                        submit(&mut pending, &mut counts, &mut pending_tokens).await;
                    }
                    if pending.is_empty() {
                        deadline = tokio::time::Instant::now() + self.options.max_wait;
                    }
                    pending.push(item);
                    counts.extend(tokens);
                    pending_tokens += n;
                    if pending.len() >= max_inputs {
                        submit(&mut pending, &mut counts, &mut pending_tokens).await;
                    }
                }
            }
        }
        Ok(())
    }

    /// The consumer half: turns the pool's outcomes into records.
    async fn consume(&self, mut outcomes: BatchOutcomes) -> Result<(), EmbedError> {
        while let Some(outcome) = outcomes.recv().await {
            match outcome {
                Outcome::Done((batch, vectors)) => self.finish_batch(batch, vectors).await?,
                Outcome::Failed((_, e)) if e.is_fatal() => return Err(e),
                Outcome::Failed((batch, e)) => self.set_aside(batch, e).await?,
                Outcome::Returned(batch) => {
                    self.counters
                        .abandoned
                        .fetch_add(batch.items.len() as u64, Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }

    async fn finish_batch(&self, batch: Batch, vectors: Vec<Vec<f32>>) -> Result<(), EmbedError> {
        let number = batch.number;
        if vectors.len() != batch.items.len() {
            let e = EmbedError::Inference {
                model: self.embedder.model_id().to_string(),
                batch_len: batch.items.len(),
                detail: format!(
                    "batch {number}: {} vectors for {} texts",
                    vectors.len(),
                    batch.items.len()
                ),
            };
            return self.set_aside(batch, e).await;
        }
        for v in &vectors {
            self.check_dims(v.len(), || format!("batch {number}"))?;
        }
        for (item, vector) in batch.items.into_iter().zip(vectors) {
            if let Some(cache) = &self.options.cache {
                cache.put(self.embedder.model_id(), &item.text, &vector)?;
            }
            self.emit_embedding(item, vector).await?;
            self.counters.embedded.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn set_aside(&self, batch: Batch, e: EmbedError) -> Result<(), EmbedError> {
        let number = batch.number;
        tracing::debug!(
            batch = number,
            items = batch.items.len(),
            error = %e,
            "embedding batch failed; setting its items aside"
        );
        self.counters.failed_batches.fetch_add(1, Ordering::Relaxed);
        let reason = e.set_aside_reason();
        let detail = format!("batch {number} of {} items: {e}", batch.items.len());
        for item in batch.items {
            self.emit(Record::SetAside(SetAside {
                stage: Stage::Embed,
                item: item.id,
                reason,
                detail: detail.clone(),
            }))
            .await?;
            self.counters.set_aside.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Embeds a stream of items and sends one record per item down `out`:
/// `Record::Embedding` for each vector, `Record::SetAside` for each item
/// whose batch failed after the embedder's retries.
///
/// Returns the run's summary, or the error that stopped it (a dimension
/// change, a rejected key, a cache or output failure, a cancellation).
/// Records emitted before such an error are valid, and the cache keeps every
/// vector computed: a re-run picks up where this one stopped.
pub async fn embed_items<E, S>(
    embedder: Arc<E>,
    items: S,
    options: EmbedOptions,
    out: mpsc::Sender<Record>,
) -> Result<EmbedSummary, EmbedError>
where
    E: Embedder + ?Sized + 'static,
    S: Stream<Item = EmbedItem>,
{
    let started = Instant::now();
    let limits = embedder.batch_limits();
    let workers = limits.concurrency.clamp(1, MAX_WORKERS);
    // One batch per worker pull, a queue as deep as the pool is wide: enough
    // to keep every worker busy, little enough to bound memory.
    let pool_config = PoolConfig::new(workers)
        .and_then(|c| c.with_queue_capacity(workers))
        .and_then(|c| c.with_pull_batch(1))
        .map_err(|e| EmbedError::Config(e.to_string()))?;
    let shared = Shared {
        embedder: &embedder,
        options: &options,
        out: &out,
        counters: Counters::default(),
        dimension: Mutex::new(Dimension {
            expected: embedder.dimensions(),
            source: "the embedder's configuration".to_string(),
        }),
        stop: options.cancel.child_token(),
    };
    let worker_embedder = Arc::clone(&embedder);
    let worker_stop = shared.stop.clone();
    let (input, output) =
        WorkerPool::start(&pool_config, shared.stop.clone(), move |batch: Batch| {
            let embedder = Arc::clone(&worker_embedder);
            let stop = worker_stop.clone();
            async move {
                let texts: Vec<String> = batch.items.iter().map(|i| i.text.clone()).collect();
                // The driver counted each text once for its budget: the
                // embedder plans its requests with those counts.
                let embedded = if batch.tokens.len() == texts.len() {
                    embedder.embed_counted(&texts, &batch.tokens).await
                } else {
                    embedder.embed(&texts).await
                };
                match embedded {
                    Ok(vectors) => Ok((batch, vectors)),
                    Err(e) => {
                        // Stop here, before this worker takes another batch:
                        // waiting for the consumer to see the error let a
                        // worker send one more request with a rejected key.
                        if e.is_fatal() {
                            stop.cancel();
                        }
                        Err((batch, e))
                    }
                }
            }
        });

    let producer = async {
        let result = shared.produce(items, input).await;
        if result.is_err() {
            shared.stop.cancel();
        }
        result
    };
    let consumer = async {
        let result = shared.consume(output).await;
        if result.is_err() {
            shared.stop.cancel();
        }
        result
    };
    let (produced, consumed) = tokio::join!(producer, consumer);

    // Whatever happened, keep what was paid for.
    let synced = match &options.cache {
        Some(cache) => cache.sync(),
        None => Ok(()),
    };
    let c = &shared.counters;
    let summary = EmbedSummary {
        model: embedder.model_id().to_string(),
        dimensions: shared.dimension.lock().ok().and_then(|d| d.expected),
        items: c.items.load(Ordering::Relaxed),
        embedded: c.embedded.load(Ordering::Relaxed),
        cached: c.cached.load(Ordering::Relaxed),
        set_aside: c.set_aside.load(Ordering::Relaxed),
        batches: c.batches.load(Ordering::Relaxed),
        failed_batches: c.failed_batches.load(Ordering::Relaxed),
        abandoned: c.abandoned.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    };
    tracing::info!(
        model = %summary.model,
        items = summary.items,
        embedded = summary.embedded,
        cached = summary.cached,
        set_aside = summary.set_aside,
        abandoned = summary.abandoned,
        batches = summary.batches,
        elapsed_ms = summary.elapsed.as_millis() as u64,
        "embedding run finished"
    );
    // The consumer's error is the cause; the producer's is usually the
    // consequence (its submit refused after the stop), and vice versa.
    consumed?;
    produced?;
    synced?;
    if options.cancel.is_cancelled() {
        return Err(EmbedError::Cancelled {
            done: summary.done(),
        });
    }
    Ok(summary)
}
