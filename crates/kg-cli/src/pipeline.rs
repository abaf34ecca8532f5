//! The stages wired together through bounded channels.
//!
//! ```text
//!                       ┌─▶ chunks ─▶ extract (N in flight) ─┐
//! ingest ─▶ records ─▶ route                                  ├─▶ records ─▶ store (batches)
//!                       ├─▶ chunks ─▶ embed (batches) ───────┤
//!                       └─▶ documents, chunks, CSV rows ─────┘
//! ```
//!
//! Every channel is bounded, so a slow stage slows the ones upstream instead
//! of memory growing: the pipeline holds a window of the corpus (a few
//! hundred records), whatever its size. The stage functions here are the
//! same in `kg run` and in the one-stage commands (`kg extract` is a reader,
//! [`extract_chunks`] and a writer).
//!
//! **Acknowledgements.** A document is `done` in the run state only when
//! the store has committed its document record and, for each of its chunks,
//! the chunk, its extraction and its embedding ([`DocTracker`]). Until then a
//! re-run processes it again, which costs no LLM call (the caches in
//! [`crate::state`] are written as soon as an answer arrives) and adds no
//! node (the store MERGEs on content-addressed ids).
//!
//! **Shutdown.** The [`CancellationToken`] (Ctrl-C) stops the router from
//! taking new records; everything already in a channel or in flight is
//! finished and committed, then every task ends because its input closed.
//!
//! **Failures.** An item that fails (an LLM answer that never validates, a
//! batch that keeps failing) becomes a [`SetAside`] record; the sink counts
//! it in the summary and the dead-letter table. Nothing is dropped silently.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kg_core::{Chunk, ChunkId, DocumentId, EmbeddingTarget, Record, SetAside, Stage};
use kg_store::CurrentDocument;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::logging::StageBar;
use crate::metrics_export as m;
use crate::stages::{Embedder, Extractor, GraphStore, Ingester, StageError, Usage};
use crate::state::RunState;
use crate::stats::RunStats;

/// What every stage task shares.
#[derive(Clone)]
pub struct Ctx {
    /// Counters for the summary.
    pub stats: Arc<RunStats>,
    /// The run state (caches, documents, dead letters).
    pub state: Arc<RunState>,
    /// Fired by Ctrl-C.
    pub cancel: CancellationToken,
    /// USD per million prompt tokens.
    pub input_price_per_mtok: f64,
    /// USD per million completion tokens.
    pub output_price_per_mtok: f64,
}

impl Ctx {
    /// Records a set-aside input in the summary and the dead letters.
    pub fn record_set_aside(&self, item: &SetAside) {
        self.stats.set_aside(item);
        tracing::warn!(
            stage = crate::stats::stage_name(item.stage),
            item = %item.item,
            reason = %item.reason,
            "set aside: {}",
            item.detail
        );
        // Chunks handed back by Ctrl-C are not failures: the next run
        // processes their documents anyway.
        if item.reason.is_cancellation() {
            return;
        }
        if let Err(e) = self.state.dead_letter(item) {
            tracing::error!(item = %item.item, "cannot record dead letter: {}", crate::logging::cause_chain(&e));
        }
    }
}

/// Counts a record reaching a sink (the store, or a one-stage command's
/// output) in the summary.
pub fn count_record(stats: &RunStats, record: &Record) {
    match record {
        Record::Document(d) => {
            stats.documents.add(1);
            stats.pages.add(u64::from(d.pages.unwrap_or(0)));
        }
        Record::Chunk(_) => stats.chunks.add(1),
        Record::Extraction(x) => {
            stats.extractions.add(1);
            stats.entities.add(x.entities.len() as u64);
            stats.relations.add(x.relations.len() as u64);
            stats.distinct(
                x.entities.iter().map(|e| e.id.as_str()),
                x.relations.iter().map(|r| {
                    (
                        r.source_id.as_str(),
                        r.rel_type.as_str(),
                        r.target_id.as_str(),
                    )
                }),
            );
        }
        Record::Entity(e) => {
            stats.entities.add(1);
            stats.distinct([e.id.as_str()], []);
        }
        Record::Relation(r) => {
            stats.relations.add(1);
            stats.distinct(
                [],
                [(
                    r.source_id.as_str(),
                    r.rel_type.as_str(),
                    r.target_id.as_str(),
                )],
            );
        }
        Record::Embedding(_) => stats.embeddings.add(1),
        Record::Node(_) => stats.nodes.add(1),
        Record::Edge(_) => stats.edges.add(1),
        Record::SetAside(_) => {}
    }
}

/// Tracks which documents are completely committed (see module docs).
pub struct DocTracker {
    inner: Mutex<TrackerInner>,
    state: Arc<RunState>,
    parts_per_chunk: u32,
    stages: String,
}

#[derive(Default)]
struct TrackerInner {
    docs: HashMap<DocumentId, DocProgress>,
    chunks: HashMap<ChunkId, (DocumentId, u32)>,
}

#[derive(Default)]
struct DocProgress {
    chunks: u64,
    outstanding: u64,
    committed: bool,
    ingested: bool,
    failed: bool,
}

impl DocTracker {
    /// A tracker where each chunk needs the chunk record plus an extraction
    /// (if `extract`) and an embedding (if `embed`); `stages` (see
    /// [`crate::state::stages_key`]) is recorded with each done document.
    pub fn new(state: Arc<RunState>, extract: bool, embed: bool, stages: String) -> Self {
        Self {
            inner: Mutex::default(),
            state,
            parts_per_chunk: 1 + u32::from(extract) + u32::from(embed),
            stages,
        }
    }

    /// What this run does to a document (see [`crate::state::stages_key`]).
    pub fn stages(&self) -> &str {
        &self.stages
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TrackerInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A document entered the pipeline.
    pub fn document(&self, id: &DocumentId) {
        self.lock().docs.entry(id.clone()).or_default();
    }

    /// A chunk entered the pipeline.
    pub fn chunk(&self, chunk: &Chunk) {
        let mut g = self.lock();
        let parts = self.parts_per_chunk;
        if g.chunks.contains_key(&chunk.id) {
            return;
        }
        let doc = g.docs.entry(chunk.document_id.clone()).or_default();
        doc.chunks += 1;
        doc.outstanding += u64::from(parts);
        g.chunks
            .insert(chunk.id.clone(), (chunk.document_id.clone(), parts));
    }

    /// Every chunk of `id` has entered the pipeline.
    pub fn ingested(&self, id: &DocumentId) {
        let mut g = self.lock();
        if let Some(d) = g.docs.get_mut(id) {
            d.ingested = true;
        }
        self.settle(&mut g, id);
    }

    /// Every chunk of every document has entered the pipeline.
    pub fn all_ingested(&self) {
        let mut g = self.lock();
        let ids: Vec<DocumentId> = g.docs.keys().cloned().collect();
        for id in ids {
            if let Some(d) = g.docs.get_mut(&id) {
                d.ingested = true;
            }
            self.settle(&mut g, &id);
        }
    }

    fn part_done(&self, g: &mut TrackerInner, chunk: &ChunkId, failed: bool) -> Option<DocumentId> {
        let (doc, remaining) = g.chunks.get_mut(chunk)?;
        *remaining = remaining.saturating_sub(1);
        let doc = doc.clone();
        if *remaining == 0 {
            g.chunks.remove(chunk);
        }
        if let Some(d) = g.docs.get_mut(&doc) {
            d.outstanding = d.outstanding.saturating_sub(1);
            d.failed |= failed;
        }
        Some(doc)
    }

    /// A part of a chunk failed (set aside): its document will not be done.
    pub fn failed(&self, chunk: &ChunkId) {
        let mut g = self.lock();
        if let Some(doc) = self.part_done(&mut g, chunk, true) {
            self.settle(&mut g, &doc);
        }
    }

    /// The store committed (or, with `failed`, gave up on) these records.
    pub fn committed(&self, records: &[Record], failed: bool) {
        let mut g = self.lock();
        let mut touched = HashSet::new();
        for r in records {
            let doc = match r {
                Record::Document(d) => {
                    if let Some(p) = g.docs.get_mut(&d.id) {
                        p.committed = true;
                        p.failed |= failed;
                    }
                    Some(d.id.clone())
                }
                Record::Chunk(c) => self.part_done(&mut g, &c.id, failed),
                Record::Extraction(x) => self.part_done(&mut g, &x.chunk_id, failed),
                Record::Embedding(e) if e.target == EmbeddingTarget::Chunk => {
                    self.part_done(&mut g, &ChunkId::from_raw(e.id.clone()), failed)
                }
                _ => None,
            };
            if let Some(d) = doc {
                touched.insert(d);
            }
        }
        for d in touched {
            self.settle(&mut g, &d);
        }
    }

    fn settle(&self, g: &mut TrackerInner, id: &DocumentId) {
        let Some(d) = g.docs.get(id) else { return };
        if !(d.ingested && d.committed && d.outstanding == 0) {
            return;
        }
        if !d.failed {
            if let Err(e) = self.state.document_done(id, d.chunks, &self.stages) {
                tracing::error!(document = %id, "cannot mark document done: {}", crate::logging::cause_chain(&e));
            }
        }
        g.docs.remove(id);
    }

    /// Documents not finished yet (for the interrupted message).
    pub fn unfinished(&self) -> usize {
        self.lock().docs.len()
    }
}

/// Extracts chunks from `rx`, sending extractions (or set-asides) to `out`.
///
/// Chunks whose extraction is in the run-state cache go straight to `out`
/// and cost no call; the rest stream through the extractor, and each answer
/// is cached as soon as it arrives (before it is stored), so that a run
/// killed at any point repeats no call on restart.
pub async fn extract_chunks<X: Extractor>(
    extractor: Arc<X>,
    ctx: Ctx,
    mut rx: mpsc::Receiver<Chunk>,
    out: mpsc::Sender<Record>,
    concurrency: usize,
    bar: StageBar,
    tracker: Option<Arc<DocTracker>>,
) -> Result<(), StageError> {
    let model = extractor.model().to_string();
    let version = extractor.prompt_version().to_string();
    let (miss_tx, miss_rx) = mpsc::channel::<Chunk>(concurrency.max(1) * 2);
    let (answer_tx, mut answer_rx) = mpsc::channel::<Record>(concurrency.max(1) * 2);
    let before = extractor.usage();

    // Cache hits go out at once; misses go to the extractor.
    let filter = {
        let (ctx, out, bar, model, version) = (
            ctx.clone(),
            out.clone(),
            bar.clone(),
            model.clone(),
            version.clone(),
        );
        async move {
            while let Some(chunk) = rx.recv().await {
                ctx.stats.touch("extract");
                match ctx.state.cached_extraction(&model, &version, &chunk.id) {
                    Ok(Some(x)) => {
                        ctx.stats.extraction_cache_hits.add(1);
                        metrics::counter!(m::CACHE_HITS, "stage" => "extract").increment(1);
                        bar.done(1);
                        if out.send(Record::Extraction(x)).await.is_err() {
                            break;
                        }
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(chunk = %chunk.id, "extraction cache unreadable, calling the LLM: {}", crate::logging::cause_chain(&e))
                    }
                }
                metrics::gauge!(m::IN_FLIGHT, "stage" => "extract").increment(1.0);
                if miss_tx.send(chunk).await.is_err() {
                    break;
                }
            }
        }
    };
    // Answers are cached, counted and passed on.
    let post = {
        let (ctx, out, bar, extractor) = (ctx.clone(), out.clone(), bar.clone(), extractor.clone());
        async move {
            while let Some(record) = answer_rx.recv().await {
                metrics::gauge!(m::IN_FLIGHT, "stage" => "extract").decrement(1.0);
                match &record {
                    Record::Extraction(x) => {
                        if let Err(e) = ctx.state.cache_extraction(&model, &version, x) {
                            tracing::error!(chunk = %x.chunk_id, "cannot cache extraction: {}", crate::logging::cause_chain(&e));
                        }
                        metrics::counter!(m::ITEMS, "stage" => "extract", "outcome" => "done")
                            .increment(1);
                    }
                    Record::SetAside(s) => {
                        if s.reason.is_cancellation() {
                            tracing::info!(chunk = %s.item, "not extracted: interrupted");
                        } else {
                            tracing::error!(chunk = %s.item, reason = %s.reason, "extraction failed: {}", s.detail);
                        }
                        metrics::counter!(m::ITEMS, "stage" => "extract", "outcome" => "set_aside")
                            .increment(1);
                        if let Some(t) = &tracker {
                            t.failed(&ChunkId::from_raw(s.item.clone()));
                        }
                    }
                    _ => {}
                }
                bar.done(1);
                let u = extractor.usage();
                bar.message(format!(
                    "calls {} retries {} 429s {} tokens {}",
                    u.calls - before.calls,
                    u.retries - before.retries,
                    u.rate_limited - before.rate_limited,
                    u.prompt_tokens + u.completion_tokens
                        - before.prompt_tokens
                        - before.completion_tokens
                ));
                if out.send(record).await.is_err() {
                    break;
                }
            }
        }
    };
    // The extractor's worker pool may hold a few dozen chunks it has not
    // started; on Ctrl-C they come back as `cancelled` set-asides (their
    // documents stay unfinished for the next run) instead of being called.
    let run = extractor.run(miss_rx, answer_tx, ctx.cancel.clone());
    // The extractor's counters are published while it runs (not only at the
    // end), so /metrics shows calls, retries, 429s and tokens live.
    let publish = |now: &Usage| {
        metrics::counter!(m::LLM_CALLS).absolute(now.calls - before.calls);
        metrics::counter!(m::LLM_RETRIES).absolute(now.retries - before.retries);
        metrics::counter!(m::LLM_RATE_LIMITED).absolute(now.rate_limited - before.rate_limited);
        metrics::counter!(m::TOKENS, "kind" => "prompt")
            .absolute(now.prompt_tokens - before.prompt_tokens);
        metrics::counter!(m::TOKENS, "kind" => "completion")
            .absolute(now.completion_tokens - before.completion_tokens);
    };
    let work = async { tokio::join!(run, filter, post) };
    tokio::pin!(work);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let (result, (), ()) = loop {
        tokio::select! {
            out = &mut work => break out,
            _ = tick.tick() => publish(&extractor.usage()),
        }
    };
    let after = extractor.usage();
    publish(&after);
    let prompt = after.prompt_tokens - before.prompt_tokens;
    let completion = after.completion_tokens - before.completion_tokens;
    ctx.stats.llm_calls.add(after.calls - before.calls);
    ctx.stats.prompt_tokens.add(prompt);
    ctx.stats.completion_tokens.add(completion);
    ctx.stats.add_cost(
        prompt,
        completion,
        ctx.input_price_per_mtok,
        ctx.output_price_per_mtok,
    );
    bar.finish();
    result
}

/// Embeds chunks from `rx` in batches of up to `batch`, sending embeddings
/// (or set-asides) to `out`. Cached chunks cost nothing.
pub async fn embed_chunks<B: Embedder>(
    embedder: Arc<B>,
    ctx: Ctx,
    mut rx: mpsc::Receiver<Chunk>,
    out: mpsc::Sender<Record>,
    batch: usize,
    bar: StageBar,
    tracker: Option<Arc<DocTracker>>,
) {
    let model = embedder.model().to_string();
    let batch = batch.max(1);
    let mut chunks = Vec::with_capacity(batch);
    // A batch waits this long at most for more chunks: batches fill up under
    // load, and a trickle is not held back.
    let linger = Duration::from_millis(50);
    while let Some(first) = rx.recv().await {
        chunks.push(first);
        let deadline = tokio::time::Instant::now() + linger;
        while chunks.len() < batch {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(c)) => chunks.push(c),
                _ => break,
            }
        }
        ctx.stats.touch("embed");
        let mut misses = Vec::new();
        let mut records = Vec::with_capacity(chunks.len());
        for c in chunks.drain(..) {
            match ctx.state.cached_embedding(&model, c.id.as_str()) {
                Ok(Some(e)) => {
                    ctx.stats.embedding_cache_hits.add(1);
                    metrics::counter!(m::CACHE_HITS, "stage" => "embed").increment(1);
                    records.push(Record::Embedding(e));
                }
                _ => misses.push(c),
            }
        }
        if !misses.is_empty() {
            metrics::histogram!(m::EMBED_BATCH_SIZE).record(misses.len() as f64);
            metrics::gauge!(m::IN_FLIGHT, "stage" => "embed").set(misses.len() as f64);
            match embedder.embed(&misses).await {
                Ok(embeddings) if embeddings.len() == misses.len() => {
                    if let Err(e) = ctx.state.cache_embeddings(&model, &embeddings) {
                        tracing::error!(
                            "cannot cache embeddings: {}",
                            crate::logging::cause_chain(&e)
                        );
                    }
                    records.extend(embeddings.into_iter().map(Record::Embedding));
                }
                other => {
                    let (reason, detail) = match other {
                        Err(e) => (e.reason, e.detail),
                        Ok(v) => (
                            kg_core::SetAsideReason::EmbeddingCountMismatch,
                            format!("asked for {} embeddings, got {}", misses.len(), v.len()),
                        ),
                    };
                    tracing::error!(chunks = misses.len(), reason = %reason, "embedding batch failed: {detail}");
                    for c in &misses {
                        if let Some(t) = &tracker {
                            t.failed(&c.id);
                        }
                        records.push(Record::SetAside(SetAside {
                            stage: Stage::Embed,
                            item: format!("chunk {} of {}", c.id, c.source),
                            reason: reason.clone(),
                            detail: detail.clone(),
                        }));
                    }
                }
            }
            metrics::gauge!(m::IN_FLIGHT, "stage" => "embed").set(0.0);
        }
        bar.done(records.len() as u64);
        bar.message(format!("cached {}", ctx.stats.embedding_cache_hits.get()));
        for r in records {
            if out.send(r).await.is_err() {
                return;
            }
        }
    }
    bar.finish();
}

/// How the store stage batches.
#[derive(Debug, Clone, Copy)]
pub struct StoreBatching {
    /// Most records per batch.
    pub max_records: usize,
    /// Longest a batch waits to fill up.
    pub linger: Duration,
}

impl Default for StoreBatching {
    fn default() -> Self {
        Self {
            max_records: 500,
            linger: Duration::from_millis(200),
        }
    }
}

/// Writes the records of `rx` to the store in batches; set-aside records
/// are counted, not written.
pub async fn store_records<S: GraphStore>(
    store: Arc<S>,
    ctx: Ctx,
    mut rx: mpsc::Receiver<Record>,
    batching: StoreBatching,
    bar: StageBar,
    tracker: Option<Arc<DocTracker>>,
) -> Vec<CurrentDocument> {
    let mut committed_documents = Vec::new();
    let mut batch: Vec<Record> = Vec::with_capacity(batching.max_records);
    let mut batch_number = 0u64;
    let mut links = ChunkLinks::default();
    loop {
        let Some(first) = rx.recv().await else { break };
        let deadline = tokio::time::Instant::now() + batching.linger;
        let push = |r: Record, batch: &mut Vec<Record>| {
            if let Record::SetAside(s) = &r {
                ctx.record_set_aside(s);
            } else {
                batch.push(r);
            }
        };
        push(first, &mut batch);
        while batch.len() < batching.max_records {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(r)) => push(r, &mut batch),
                _ => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        batch_number += 1;
        ctx.stats.touch("store");
        bar.add_total(batch.len() as u64);
        metrics::histogram!(m::WINDOW_RECORDS).record(batch.len() as f64);
        metrics::gauge!(m::IN_FLIGHT, "stage" => "store").set(batch.len() as f64);
        let started = Instant::now();
        let carried = links.carry_over(&batch);
        let result = if carried.is_empty() {
            store.write_batch(batch_number, &batch).await
        } else {
            let mut window = carried;
            window.extend(batch.iter().cloned());
            store.write_batch(batch_number, &window).await
        };
        links.remember(&batch);
        metrics::histogram!(m::WINDOW_SECONDS).record(started.elapsed().as_secs_f64());
        metrics::gauge!(m::IN_FLIGHT, "stage" => "store").set(0.0);
        match result {
            Ok(set_aside) => {
                for s in &set_aside {
                    ctx.record_set_aside(s);
                }
                ctx.stats.batches.add(1);
                ctx.stats.records_stored.add(batch.len() as u64);
                for r in &batch {
                    count_record(&ctx.stats, r);
                    if let Record::Document(d) = r {
                        committed_documents.push(CurrentDocument {
                            source: d.source.clone(),
                            id: d.id.clone(),
                        });
                    }
                }
                if let Some(t) = &tracker {
                    t.committed(&batch, !set_aside.is_empty());
                }
            }
            Err(e) => {
                ctx.stats.failed_batches.add(1);
                metrics::counter!(m::FAILED_BATCHES).increment(1);
                tracing::error!(batch = batch_number, records = batch.len(), reason = %e.reason, "store batch failed: {}", e.detail);
                ctx.record_set_aside(&SetAside {
                    stage: Stage::Store,
                    item: format!("batch {batch_number} ({} records)", batch.len()),
                    reason: e.reason,
                    detail: e.detail,
                });
                if let Some(t) = &tracker {
                    t.committed(&batch, true);
                }
            }
        }
        bar.done(batch.len() as u64);
        bar.message(format!(
            "batches {} failed {}",
            ctx.stats.batches.get(),
            ctx.stats.failed_batches.get()
        ));
        batch.clear();
    }
    bar.finish();
    committed_documents
}

/// Removes from the graph the earlier versions of `documents`, which must
/// be completely committed: a changed file's old document, chunks,
/// mentions and the entities and relations only they supported. Each
/// earlier version is forgotten in the run state before it is removed, so
/// that a file changed back is processed again rather than skipped.
///
/// Runs after the store has committed everything, so a source is never
/// without a graph: until its new version is whole, the old one stays, and
/// a re-run (which finds the new version done) removes it then. Returns a
/// line for the summary's notes when there is something to say.
pub async fn replace_earlier_versions<S: GraphStore>(
    store: &S,
    ctx: &Ctx,
    documents: Vec<CurrentDocument>,
) -> Option<String> {
    let mut current = documents;
    current.sort_by(|a, b| (&a.source, &a.id).cmp(&(&b.source, &b.id)));
    current.dedup();
    if current.is_empty() {
        return None;
    }
    let stale = match store.earlier_versions(&current).await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::error!(reason = %e.reason, "cannot look up earlier versions of changed documents: {}", e.detail);
            return Some(format!(
                "earlier versions of changed documents were not removed ({}); the next run retries",
                e.detail
            ));
        }
    };
    let (mut documents, mut chunks, mut entities, mut relations) = (0u64, 0u64, 0u64, 0u64);
    for id in &stale {
        // Forget first: a version the state still called done after its
        // graph was gone would be skipped, graphless, if the file went back
        // to it. Forgotten but not removed (the removal failed, or the run
        // was killed here) costs only a re-read from the caches, and the
        // next run removes it.
        if let Err(e) = ctx.state.forget_document(id) {
            tracing::error!(document = %id, "cannot forget an earlier version in the run state, keeping it: {}", crate::logging::cause_chain(&e));
            continue;
        }
        match store.remove_document(id).await {
            Ok(r) => {
                let _ = ctx
                    .state
                    .clear_dead_letters_of(&format!("earlier version {id}"));
                documents += 1;
                chunks += r.chunks;
                entities += r.entities;
                relations += r.relations;
            }
            Err(e) => ctx.record_set_aside(&SetAside {
                stage: Stage::Store,
                item: format!("earlier version {id}"),
                reason: e.reason,
                detail: e.detail,
            }),
        }
    }
    ctx.stats.documents_replaced.add(documents);
    ctx.stats.chunks_replaced.add(chunks);
    (documents > 0).then(|| {
        format!(
            "replaced {documents} earlier version(s) of changed documents: removed {chunks} chunks, \
             {entities} entities no longer mentioned, {relations} relations no longer supported"
        )
    })
}

/// The last chunk written of the most recent documents, so that a window
/// that starts with a document's chunk `i` can carry chunk `i - 1` along:
/// kg-store links `NEXT_CHUNK` only between chunks of one window, and a
/// document's chunks may straddle two windows. Re-writing a chunk is a MERGE
/// (it adds nothing); the carried chunk is not counted again.
#[derive(Default)]
struct ChunkLinks {
    recent: std::collections::VecDeque<Chunk>,
}

impl ChunkLinks {
    /// Documents whose last chunk is remembered (ingest sends documents one
    /// after the other, so a handful is plenty).
    const DOCUMENTS: usize = 16;

    fn carry_over(&self, window: &[Record]) -> Vec<Record> {
        let mut first: HashMap<&DocumentId, u32> = HashMap::new();
        for r in window {
            if let Record::Chunk(c) = r {
                let e = first.entry(&c.document_id).or_insert(c.index);
                *e = (*e).min(c.index);
            }
        }
        self.recent
            .iter()
            .filter(|c| first.get(&c.document_id).is_some_and(|&i| c.index + 1 == i))
            .map(|c| Record::Chunk(c.clone()))
            .collect()
    }

    fn remember(&mut self, window: &[Record]) {
        for r in window {
            if let Record::Chunk(c) = r {
                match self
                    .recent
                    .iter_mut()
                    .find(|k| k.document_id == c.document_id)
                {
                    Some(k) if k.index < c.index => *k = c.clone(),
                    Some(_) => {}
                    None => {
                        if self.recent.len() == Self::DOCUMENTS {
                            self.recent.pop_front();
                        }
                        self.recent.push_back(c.clone());
                    }
                }
            }
        }
    }
}

/// The stages of one `kg run`.
pub struct Stages<I, X, B, S> {
    /// Files → records.
    pub ingester: Arc<I>,
    /// Chunks → extractions; `None` when no LLM is configured.
    pub extractor: Option<Arc<X>>,
    /// Chunks → embeddings; `None` to skip embedding.
    pub embedder: Option<Arc<B>>,
    /// Records → graph.
    pub store: Arc<S>,
}

/// Sizes of one `kg run`.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Files and directories.
    pub paths: Vec<PathBuf>,
    /// LLM requests in flight.
    pub concurrency: usize,
    /// Chunks per embedding batch.
    pub embed_batch: usize,
    /// Store batching.
    pub store: StoreBatching,
}

/// Bars of the stages of one run.
#[derive(Clone)]
pub struct RunBars {
    /// Ingest.
    pub ingest: StageBar,
    /// Extract.
    pub extract: StageBar,
    /// Embed.
    pub embed: StageBar,
    /// Store.
    pub store: StageBar,
}

/// How a run ended.
#[derive(Debug)]
pub struct RunOutcome {
    /// Ctrl-C stopped it before the input was exhausted.
    pub interrupted: bool,
    /// Documents not completely committed (interrupted or failed parts).
    pub unfinished_documents: usize,
    /// A stage that failed as a whole.
    pub error: Option<StageError>,
    /// The documents of this run that are done (processed completely now,
    /// or skipped as done before): the current versions of their sources,
    /// whose earlier versions can go.
    pub documents: Vec<CurrentDocument>,
}

fn spawn_queue_sampler(
    samples: Vec<(&'static str, mpsc::WeakSender<Chunk>)>,
    store: mpsc::WeakSender<Record>,
    cancel: CancellationToken,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let mut alive = false;
            for (stage, weak) in &samples {
                if let Some(s) = weak.upgrade() {
                    alive = true;
                    metrics::gauge!(m::QUEUED, "stage" => *stage)
                        .set((s.max_capacity() - s.capacity()) as f64);
                }
            }
            if let Some(s) = store.upgrade() {
                alive = true;
                metrics::gauge!(m::QUEUED, "stage" => "store")
                    .set((s.max_capacity() - s.capacity()) as f64);
            }
            if !alive {
                return;
            }
        }
    });
}

/// `kg run`: every stage at once, streaming.
pub async fn run<I, X, B, S>(
    stages: Stages<I, X, B, S>,
    config: RunConfig,
    ctx: Ctx,
    bars: RunBars,
) -> RunOutcome
where
    I: Ingester,
    X: Extractor,
    B: Embedder,
    S: GraphStore,
{
    let stages_key = crate::state::stages_key(
        stages
            .extractor
            .as_ref()
            .map(|x| (x.model(), x.prompt_version())),
        stages.embedder.as_ref().map(|b| b.model()),
    );
    let tracker = Arc::new(DocTracker::new(
        ctx.state.clone(),
        stages.extractor.is_some(),
        stages.embedder.is_some(),
        stages_key,
    ));
    let (raw_tx, mut raw_rx) = mpsc::channel::<Record>(64);
    let (store_tx, store_rx) = mpsc::channel::<Record>(config.store.max_records * 2);
    let (extract_tx, extract_rx) = mpsc::channel::<Chunk>(config.concurrency.max(1) * 2);
    let (embed_tx, embed_rx) = mpsc::channel::<Chunk>(config.embed_batch.max(1) * 2);
    spawn_queue_sampler(
        vec![
            ("extract", extract_tx.downgrade()),
            ("embed", embed_tx.downgrade()),
        ],
        store_tx.downgrade(),
        ctx.cancel.child_token(),
    );

    // The ingester stops at the cancel token; its own token so that a failed
    // downstream can stop it too.
    let ingest_cancel = ctx.cancel.child_token();
    let ingester = stages.ingester.clone();
    let paths = config.paths.clone();
    let ingest_token = ingest_cancel.clone();
    let ingest = tokio::spawn(async move { ingester.ingest(paths, raw_tx, ingest_token).await });

    let extract = stages.extractor.clone().map(|x| {
        tokio::spawn(extract_chunks(
            x,
            ctx.clone(),
            extract_rx,
            store_tx.clone(),
            config.concurrency,
            bars.extract.clone(),
            Some(tracker.clone()),
        ))
    });
    let embed = stages.embedder.clone().map(|b| {
        tokio::spawn(embed_chunks(
            b,
            ctx.clone(),
            embed_rx,
            store_tx.clone(),
            config.embed_batch,
            bars.embed.clone(),
            Some(tracker.clone()),
        ))
    });
    let store = tokio::spawn(store_records(
        stages.store.clone(),
        ctx.clone(),
        store_rx,
        config.store,
        bars.store.clone(),
        Some(tracker.clone()),
    ));

    // The router: the only place that decides what goes where.
    let mut interrupted = false;
    let mut exhausted = false;
    let mut skipped: HashSet<DocumentId> = HashSet::new();
    let mut current: Option<DocumentId> = None;
    let mut documents: Vec<CurrentDocument> = Vec::new();
    let send_extract = stages.extractor.is_some();
    let send_embed = stages.embedder.is_some();
    loop {
        let record = tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => { interrupted = true; break; }
            r = raw_rx.recv() => match r { Some(r) => r, None => { exhausted = true; break } },
        };
        ctx.stats.touch("ingest");
        let routed = route(
            record,
            &ctx,
            &tracker,
            &mut skipped,
            &mut current,
            &mut documents,
            &bars,
            &store_tx,
            send_extract.then_some(&extract_tx),
            send_embed.then_some(&embed_tx),
        );
        // A full channel blocks the router; Ctrl-C must not wait for it.
        // The record being routed is dropped: its document is not marked
        // done, so the next run processes it.
        let ok = tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => { interrupted = true; break; }
            ok = routed => ok,
        };
        if !ok {
            break;
        }
    }
    // Stop the ingester (Ctrl-C, or a stage downstream stopped) unless it
    // finished; a failed extractor shows as its channel closing.
    ingest_cancel.cancel();
    drop(raw_rx);
    drop((extract_tx, embed_tx, store_tx));
    let ingest_result = match ingest.await {
        Ok(r) => r,
        Err(e) => Err(StageError::Failed {
            stage: "ingest",
            message: format!("task ended abnormally: {e}"),
        }),
    };
    bars.ingest.finish();
    if exhausted && ingest_result.is_ok() {
        tracker.all_ingested();
    }
    let mut error = ingest_result.err();
    if let Some(task) = extract {
        let result = task.await.unwrap_or_else(|e| {
            Err(StageError::Failed {
                stage: "extract",
                message: format!("task ended abnormally: {e}"),
            })
        });
        if let Err(e) = result {
            error.get_or_insert(e);
        }
    }
    if let Some(task) = embed {
        let _ = task.await;
    }
    let _ = store.await;
    RunOutcome {
        // The input may all have been routed before Ctrl-C came; the run
        // was still cut short (chunks came back unstarted).
        interrupted: interrupted || ctx.cancel.is_cancelled(),
        unfinished_documents: tracker.unfinished(),
        error,
        documents: documents
            .into_iter()
            .filter(|d| {
                ctx.state
                    .is_done_with(&d.id, tracker.stages())
                    .unwrap_or(false)
            })
            .collect(),
    }
}

#[allow(clippy::too_many_arguments)]
async fn route(
    record: Record,
    ctx: &Ctx,
    tracker: &Arc<DocTracker>,
    skipped: &mut HashSet<DocumentId>,
    current: &mut Option<DocumentId>,
    documents: &mut Vec<CurrentDocument>,
    bars: &RunBars,
    store_tx: &mpsc::Sender<Record>,
    extract_tx: Option<&mpsc::Sender<Chunk>>,
    embed_tx: Option<&mpsc::Sender<Chunk>>,
) -> bool {
    async fn send<T>(tx: &mpsc::Sender<T>, v: T) -> bool {
        tx.send(v).await.is_ok()
    }
    // kg-ingest sends each document followed by all of its chunks, one
    // document after the other: any other record means the current document
    // has entered the pipeline completely.
    if let Some(cur) = current.as_ref() {
        let same = matches!(&record, Record::Chunk(c) if &c.document_id == cur);
        if !same {
            tracker.ingested(cur);
            *current = None;
        }
    }
    match record {
        Record::Document(d) => {
            bars.ingest.add_total(1);
            bars.ingest.done(1);
            documents.push(CurrentDocument {
                source: d.source.clone(),
                id: d.id.clone(),
            });
            let done = ctx
                .state
                .is_done_with(&d.id, tracker.stages())
                .unwrap_or_else(|e| {
                    tracing::warn!(file = %d.source, "run state unreadable, processing the document: {}", crate::logging::cause_chain(&e));
                    false
                });
            if done || skipped.contains(&d.id) {
                tracing::info!(file = %d.source, document = %d.id, "unchanged since a finished run, skipped");
                ctx.stats.documents_unchanged.add(1);
                // Moved or renamed (same content, another path): the graph
                // and the state take the new source, so that the file's
                // next edit finds this version to replace.
                let moved = !skipped.contains(&d.id)
                    && matches!(ctx.state.document_source(&d.id), Ok(Some(old)) if old != d.source);
                skipped.insert(d.id.clone());
                if moved {
                    tracing::info!(file = %d.source, document = %d.id, "moved or renamed: the document takes the new path");
                    if let Err(e) = ctx.state.set_document_source(&d.id, &d.source) {
                        tracing::error!(file = %d.source, "cannot record the new path in the run state: {}", crate::logging::cause_chain(&e));
                    }
                    return send(store_tx, Record::Document(d)).await;
                }
                return true;
            }
            if let Err(e) = ctx.state.document_started(&d.id, &d.source) {
                tracing::error!(file = %d.source, "cannot record document in run state: {}", crate::logging::cause_chain(&e));
            }
            let _ = ctx.state.clear_dead_letters_of(&d.source);
            tracker.document(&d.id);
            *current = Some(d.id.clone());
            send(store_tx, Record::Document(d)).await
        }
        Record::Chunk(c) => {
            if skipped.contains(&c.document_id) {
                return true;
            }
            tracker.chunk(&c);
            if let Some(tx) = extract_tx {
                bars.extract.add_total(1);
                if !send(tx, c.clone()).await {
                    return false;
                }
            }
            if let Some(tx) = embed_tx {
                bars.embed.add_total(1);
                if !send(tx, c.clone()).await {
                    return false;
                }
            }
            send(store_tx, Record::Chunk(c)).await
        }
        other => send(store_tx, other).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::DocStatus;
    use kg_core::{Document, Embedding, Extraction, MediaType};

    fn doc(name: &str) -> Document {
        let sha = kg_core::sha256_hex(name.as_bytes());
        Document {
            id: DocumentId::from_content_sha256(&sha),
            source: name.into(),
            title: None,
            sha256: sha,
            pages: None,
            media_type: MediaType::Markdown,
            bytes: 10,
        }
    }

    fn chunk(d: &Document, index: u32) -> Chunk {
        let text = format!("chunk {index} of {}", d.source);
        Chunk {
            id: ChunkId::new(&d.id, index, &text),
            document_id: d.id.clone(),
            index,
            text,
            tokens: 4,
            source: d.source.clone(),
            page_start: None,
            page_end: None,
        }
    }

    fn parts(c: &Chunk) -> Vec<Record> {
        vec![
            Record::Chunk(c.clone()),
            Record::Extraction(Extraction {
                chunk_id: c.id.clone(),
                entities: vec![],
                relations: vec![],
                model: "m".into(),
            }),
            Record::Embedding(Embedding {
                id: c.id.to_string(),
                target: EmbeddingTarget::Chunk,
                vector: vec![1.0],
                model: "e".into(),
            }),
        ]
    }

    #[test]
    fn a_document_is_done_only_when_every_part_of_every_chunk_is_committed() {
        let dir = tempfile::tempdir().unwrap();
        let state = Arc::new(RunState::open(dir.path()).unwrap());
        let tracker = DocTracker::new(state.clone(), true, true, "extract=m@v;embed=e".into());
        let (a, b) = (doc("a.md"), doc("b.md"));
        for d in [&a, &b] {
            state.document_started(&d.id, &d.source).unwrap();
            tracker.document(&d.id);
        }
        let (a0, a1, b0) = (chunk(&a, 0), chunk(&a, 1), chunk(&b, 0));
        for c in [&a0, &a1, &b0] {
            tracker.chunk(c);
        }
        tracker.committed(
            &[Record::Document(a.clone()), Record::Document(b.clone())],
            false,
        );
        tracker.committed(&parts(&a0), false);
        let mut a1_parts = parts(&a1);
        let last = a1_parts.pop().unwrap();
        tracker.committed(&a1_parts, false);
        tracker.ingested(&a.id);
        assert_eq!(
            state.document_status(&a.id).unwrap(),
            Some(DocStatus::InProgress)
        );
        tracker.committed(&[last], false);
        assert_eq!(state.document_status(&a.id).unwrap(), Some(DocStatus::Done));
        // b: its extraction failed; committed but never done.
        tracker.failed(&b0.id);
        let b_rest: Vec<Record> = parts(&b0)
            .into_iter()
            .filter(|r| !matches!(r, Record::Extraction(_)))
            .collect();
        tracker.committed(&b_rest, false);
        tracker.all_ingested();
        assert_eq!(
            state.document_status(&b.id).unwrap(),
            Some(DocStatus::InProgress)
        );
        assert_eq!(tracker.unfinished(), 0);
    }

    #[test]
    fn a_window_starting_mid_document_carries_the_previous_chunk() {
        let d = doc("long.md");
        let other = doc("other.md");
        let mut links = ChunkLinks::default();
        links.remember(&[Record::Chunk(chunk(&d, 0)), Record::Chunk(chunk(&d, 1))]);
        let carried =
            links.carry_over(&[Record::Chunk(chunk(&d, 2)), Record::Chunk(chunk(&other, 0))]);
        assert_eq!(carried, vec![Record::Chunk(chunk(&d, 1))]);
        // Not contiguous: nothing to carry.
        assert!(links.carry_over(&[Record::Chunk(chunk(&d, 5))]).is_empty());
        for i in 0..(ChunkLinks::DOCUMENTS as u32 + 1) {
            links.remember(&[Record::Chunk(chunk(&doc(&format!("f{i}.md")), 0))]);
        }
        assert!(
            links.carry_over(&[Record::Chunk(chunk(&d, 2))]).is_empty(),
            "bounded memory"
        );
    }
}
