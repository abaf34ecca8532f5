//! `kg run`: the stage crates composed through bounded channels.
//!
//! ```text
//!                              ┌─▶ kg_extract::Extractor::run ──┐
//! kg_ingest::ingest ─▶ route ──┼─▶ kg_embed::embed_chunks ──────┼─▶ kg_store::BatchWriter ─▶ acks
//!                              └─▶ documents, chunks, CSV rows ─┘        (windows, batches)
//! ```
//!
//! Each stage is its crate's own streaming function, with its cache,
//! concurrency, batching, retries and rate limits inside: what `kg run`
//! runs is exactly what a library user of that crate gets. This module only
//! wires them: it routes ingested records, takes the set-aside records out
//! of the stages' outputs (they are counted and logged here, never written
//! to the graph), and follows each record until the store acknowledges it.
//!
//! Every channel is bounded, so the slowest stage sets the pace and memory
//! holds a window of the corpus, whatever its size.
//!
//! **Acknowledgements.** The store acknowledges every record as committed
//! or failed ([`kg_store::Ack`]). A document is `done` in the run state only
//! when its document record and, for each of its chunks, the chunk, its
//! extraction and its embedding are committed ([`DocTracker`]). Until then
//! a re-run processes it again, which costs no LLM call (the stages' caches
//! keep every answer as soon as it arrives) and adds no node (the store
//! MERGEs on content-addressed ids). The summary counts what was committed,
//! not what was produced.
//!
//! **Shutdown.** Ctrl-C (the [`CancellationToken`] of [`Ctx`]) stops ingest
//! and the router; the extractor and the embedder finish the calls in
//! flight (paid for, and cached) and hand the rest back; the writer stops
//! starting transactions. Documents not acknowledged stay unfinished for
//! the next run. A stage that fails as a whole (a refused key, a panic)
//! stops the intake the same way and its error ends the run with exit 1.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use kg_core::{
    Chunk, ChunkId, DocumentId, EmbeddingTarget, Record, RecordKey, SetAside, SetAsideReason,
};
use kg_store::{Ack, AckOutcome, BatchWriter, CurrentDocument, GraphSink, GraphStore};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::logging::StageBar;
use crate::metrics_export as m;
use crate::state::RunState;
use crate::stats::{RunStats, Tally};

/// A stage failed as a whole (not one item): the command exits 1.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StageError {
    /// The stage is not available in this configuration.
    #[error("{stage} is not available: {reason}")]
    Unavailable {
        /// The stage.
        stage: &'static str,
        /// Why, and what to do about it.
        reason: String,
    },
    /// The stage could not start or stopped with an error.
    #[error("{stage} failed: {message}")]
    Failed {
        /// The stage.
        stage: &'static str,
        /// What went wrong, with its cause chain.
        message: String,
    },
    /// The stage's configuration is wrong (a bad CSV mapping, an invalid
    /// setting): nothing ran, exit code 2.
    #[error("{stage}: {message}")]
    Config {
        /// The stage.
        stage: &'static str,
        /// What is wrong and where.
        message: String,
    },
    /// A stage task panicked (a bug): the run stops.
    #[error("{stage} panicked: {message}")]
    Panicked {
        /// The stage.
        stage: &'static str,
        /// The panic message.
        message: String,
    },
}

impl StageError {
    /// Whether this is a configuration error (exit code 2).
    pub fn is_config(&self) -> bool {
        matches!(self, StageError::Config { .. })
    }

    /// `Failed` for `stage` from an error and its causes.
    pub fn failed(stage: &'static str, e: &(dyn std::error::Error + 'static)) -> Self {
        StageError::Failed {
            stage,
            message: crate::logging::cause_chain(e),
        }
    }
}

fn join_error(stage: &'static str, e: tokio::task::JoinError) -> StageError {
    if e.is_panic() {
        let payload = e.into_panic();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        StageError::Panicked { stage, message }
    } else {
        StageError::Failed {
            stage,
            message: format!("its task was cancelled: {e}"),
        }
    }
}

/// What every stage task shares.
#[derive(Clone)]
pub struct Ctx {
    /// Counters for the summary.
    pub stats: Arc<RunStats>,
    /// The run state (documents done, dead letters).
    pub state: Arc<RunState>,
    /// Fired by Ctrl-C.
    pub cancel: CancellationToken,
}

impl Ctx {
    /// Records a set-aside input: in the summary, in the log (once, here:
    /// the stage crates log set-asides at debug level only), and in the
    /// dead letters unless it is an interruption.
    pub fn record_set_aside(&self, item: &SetAside) {
        self.stats.set_aside(item);
        if item.reason.is_cancellation() {
            tracing::debug!(stage = crate::stats::stage_name(item.stage), item = %item.item, "not done: interrupted");
            return;
        }
        tracing::warn!(
            stage = crate::stats::stage_name(item.stage),
            item = %item.item,
            reason = %item.reason,
            "set aside: {}",
            item.detail
        );
        if let Err(e) = self.state.dead_letter(item) {
            tracing::error!(item = %item.item, "cannot record dead letter: {}", crate::logging::cause_chain(&e));
        }
    }
}

/// Follows records from the moment they are handed to the store until it
/// acknowledges them: counts what was committed, and marks a document done
/// in the run state when every part of it is (see the module docs).
pub struct DocTracker {
    inner: Mutex<TrackerInner>,
    state: Option<Arc<RunState>>,
    stats: Arc<RunStats>,
    parts_per_chunk: u32,
    stages: String,
}

#[derive(Default)]
struct TrackerInner {
    docs: HashMap<DocumentId, DocProgress>,
    /// Chunk → (its document, parts not acknowledged yet).
    chunks: HashMap<ChunkId, (DocumentId, u32)>,
    /// Records handed to the store and not acknowledged yet, with what they
    /// add to the summary once committed.
    pending: HashMap<RecordKey, (u32, Tally)>,
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
    /// A tracker whose documents are done in `state` when each chunk's
    /// record, extraction (if `extract`) and embedding (if `embed`) are
    /// committed; `stages` (see [`crate::state::stages_key`]) is recorded
    /// with each done document. Without a state it only counts.
    pub fn new(
        state: Option<Arc<RunState>>,
        stats: Arc<RunStats>,
        extract: bool,
        embed: bool,
        stages: String,
    ) -> Self {
        Self {
            inner: Mutex::default(),
            state,
            stats,
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
        if g.chunks.contains_key(&chunk.id) {
            return;
        }
        let parts = self.parts_per_chunk;
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

    /// A stage set a part of a chunk aside: its document will not be done.
    pub fn failed(&self, chunk: &ChunkId) {
        let mut g = self.lock();
        if let Some(doc) = Self::part_done(&mut g, chunk, true) {
            self.settle(&mut g, &doc);
        }
    }

    /// `record` is being handed to the store.
    pub fn sent(&self, record: &Record) {
        let tally = Tally::of(record);
        let mut g = self.lock();
        let entry = g.pending.entry(record.key()).or_insert((0, tally));
        entry.0 += 1;
    }

    /// The store acknowledged these records.
    pub fn acked(&self, acks: &[Ack]) {
        let mut g = self.lock();
        let mut touched = HashSet::new();
        for ack in acks {
            let committed = matches!(ack.outcome, AckOutcome::Committed);
            if let Some((n, tally)) = g.pending.get_mut(&ack.key) {
                if committed {
                    self.stats.add_tally(tally);
                    self.stats.records_stored.add(1);
                }
                *n -= 1;
                if *n == 0 {
                    g.pending.remove(&ack.key);
                }
            }
            let doc = match &ack.key {
                RecordKey::Document(id) => {
                    if let Some(p) = g.docs.get_mut(id) {
                        p.committed = true;
                        p.failed |= !committed;
                    }
                    Some(id.clone())
                }
                RecordKey::Chunk(id) | RecordKey::Extraction(id) => {
                    Self::part_done(&mut g, id, !committed)
                }
                RecordKey::Embedding {
                    target: EmbeddingTarget::Chunk,
                    id,
                } => Self::part_done(&mut g, &ChunkId::from_raw(id.clone()), !committed),
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

    fn part_done(g: &mut TrackerInner, chunk: &ChunkId, failed: bool) -> Option<DocumentId> {
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

    fn settle(&self, g: &mut TrackerInner, id: &DocumentId) {
        let Some(d) = g.docs.get(id) else { return };
        if !(d.ingested && d.committed && d.outstanding == 0) {
            return;
        }
        if !d.failed {
            if let Some(state) = &self.state {
                if let Err(e) = state.document_done(id, d.chunks, &self.stages) {
                    tracing::error!(document = %id, "cannot mark document done: {}", crate::logging::cause_chain(&e));
                }
            }
        }
        g.docs.remove(id);
    }

    /// Documents not finished yet (for the interrupted message).
    pub fn unfinished(&self) -> usize {
        self.lock().docs.len()
    }
}

/// A channel's receiving end as a stream (what the stage crates take).
pub fn stream_of<T>(mut rx: mpsc::Receiver<T>) -> impl Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Passes a stage's output on to the store, taking its set-aside records
/// out (counted, logged, and the chunk's document marked unfinished).
async fn forward(
    stage: &'static str,
    mut rx: mpsc::Receiver<Record>,
    store: mpsc::Sender<Record>,
    tracker: Arc<DocTracker>,
    ctx: Ctx,
    bar: StageBar,
) {
    while let Some(record) = rx.recv().await {
        ctx.stats.touch(stage);
        bar.done(1);
        match record {
            Record::SetAside(s) => {
                metrics::counter!(m::ITEMS, "stage" => stage, "outcome" => "set_aside")
                    .increment(1);
                tracker.failed(&ChunkId::from_raw(s.item.clone()));
                ctx.record_set_aside(&s);
            }
            record => {
                metrics::counter!(m::ITEMS, "stage" => stage, "outcome" => "done").increment(1);
                tracker.sent(&record);
                if store.send(record).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The stages of one `kg run`, built by [`crate::build`].
pub struct Stages<S> {
    /// How files are read and chunked.
    pub ingest: kg_ingest::IngestConfig,
    /// Chunks → extractions; `None` when no LLM is configured.
    pub extractor: Option<kg_extract::Extractor>,
    /// Chunks → vectors.
    pub embedder: EmbedStage,
    /// Records → the graph.
    pub writer: Arc<BatchWriter<S>>,
}

/// The embedding stage: an embedder and its cache.
#[derive(Clone)]
pub struct EmbedStage {
    /// The model, local or behind an API.
    pub embedder: Arc<dyn kg_embed::Embedder>,
    /// The persistent cache (keyed by model and text).
    pub cache: Option<Arc<kg_embed::EmbedCache>>,
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
    /// Documents not completely committed (interrupted or failed parts),
    /// counting files ingest had not finished reading.
    pub unfinished_documents: usize,
    /// The first stage that failed as a whole.
    pub error: Option<StageError>,
    /// The documents of this run that are done (processed completely now,
    /// or skipped as done before): the current versions of their sources,
    /// whose earlier versions can go.
    pub documents: Vec<CurrentDocument>,
}

/// The first error of the run; later ones are usually its consequences.
#[derive(Clone, Default)]
struct FirstError(Arc<Mutex<Option<StageError>>>);

impl FirstError {
    fn set(&self, e: StageError) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            tracing::error!("{e}");
            *slot = Some(e);
        }
    }
    fn take(&self) -> Option<StageError> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// `kg run`: every stage at once, streaming (see the module docs).
pub async fn run<S>(stages: Stages<S>, paths: Vec<PathBuf>, ctx: Ctx, bars: RunBars) -> RunOutcome
where
    S: GraphSink + 'static,
{
    let Stages {
        ingest: ingest_config,
        extractor,
        embedder,
        writer,
    } = stages;
    let stages_key = crate::state::stages_key(
        extractor
            .as_ref()
            .map(|x| (x.model().to_string(), x.prompt_version())),
        Some(embedder.embedder.model_id()),
    );
    let tracker = Arc::new(DocTracker::new(
        Some(ctx.state.clone()),
        ctx.stats.clone(),
        extractor.is_some(),
        true,
        stages_key,
    ));
    let first_error = FirstError::default();
    // Stops the intake (ingest and the router) when a stage fails; Ctrl-C
    // does too, through its parent.
    let stop = ctx.cancel.child_token();
    let concurrency = extractor.as_ref().map_or(1, |x| x.concurrency());
    let embed_batch = embedder.embedder.batch_limits().max_inputs.max(1);

    let (raw_tx, mut raw_rx) = mpsc::channel::<Record>(64);
    let (store_tx, store_rx) = mpsc::channel::<Record>(1024);
    let (extract_tx, extract_rx) = mpsc::channel::<Chunk>(concurrency * 2);
    let (embed_tx, embed_rx) = mpsc::channel::<Chunk>((embed_batch * 2).max(64));
    let (ack_tx, mut ack_rx) = mpsc::channel::<Vec<Ack>>(16);
    spawn_queue_sampler(
        vec![
            ("extract", extract_tx.downgrade()),
            ("embed", embed_tx.downgrade()),
        ],
        store_tx.downgrade(),
        stop.clone(),
    );

    // Ingest.
    let ingest = {
        let (stop, errors) = (stop.clone(), first_error.clone());
        tokio::spawn(async move {
            let result = kg_ingest::ingest(paths, ingest_config, raw_tx, stop.clone()).await;
            match &result {
                Ok(summary) => log_ingest_summary(summary),
                Err(kg_ingest::IngestError::OutputClosed { .. }) if stop.is_cancelled() => {}
                Err(e) => {
                    errors.set(StageError::failed("ingest", e));
                    stop.cancel();
                }
            }
            result.ok()
        })
    };

    // Extract.
    let extract = extractor.map(|extractor| {
        let (out_tx, out_rx) = mpsc::channel::<Record>(concurrency * 2);
        let fwd = tokio::spawn(forward(
            "extract",
            out_rx,
            store_tx.clone(),
            tracker.clone(),
            ctx.clone(),
            bars.extract.clone(),
        ));
        let (ctx2, stop2, errors) = (ctx.clone(), stop.clone(), first_error.clone());
        let task = tokio::spawn(async move {
            let progress = extractor.progress();
            let before = progress.snapshot();
            let publish = |now: &kg_extract::ExtractSummary| {
                let d = now.clone().minus(&before);
                metrics::counter!(m::LLM_CALLS).absolute(d.llm_calls);
                metrics::counter!(m::LLM_RETRIES).absolute(d.retries);
                metrics::counter!(m::LLM_RATE_LIMITED).absolute(d.rate_limited);
                metrics::counter!(m::CACHE_HITS, "stage" => "extract").absolute(d.cache_hits);
                metrics::counter!(m::TOKENS, "kind" => "prompt").absolute(d.prompt_tokens);
                metrics::counter!(m::TOKENS, "kind" => "completion").absolute(d.completion_tokens);
                m::publish_schema_drops(&d.dropped_by_schema);
                d
            };
            let run = extractor.run(stream_of(extract_rx), out_tx, ctx2.cancel.clone());
            tokio::pin!(run);
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            let result = loop {
                tokio::select! {
                    r = &mut run => break r,
                    _ = tick.tick() => { publish(&progress.snapshot()); }
                }
            };
            let mut used = publish(&progress.snapshot());
            used.cost_usd = extractor.cost(&used);
            ctx2.stats.add_llm_usage(&used);
            if let Err(e) = &result {
                errors.set(StageError::failed("extract", e));
                stop2.cancel();
            }
        });
        (task, fwd)
    });

    // Embed.
    let embed = {
        let (out_tx, out_rx) = mpsc::channel::<Record>((embed_batch * 2).max(64));
        let fwd = tokio::spawn(forward(
            "embed",
            out_rx,
            store_tx.clone(),
            tracker.clone(),
            ctx.clone(),
            bars.embed.clone(),
        ));
        let (ctx2, stop2, errors) = (ctx.clone(), stop.clone(), first_error.clone());
        let task = tokio::spawn(async move {
            let options = kg_embed::EmbedOptions {
                cache: embedder.cache.clone(),
                cancel: ctx2.cancel.clone(),
                ..kg_embed::EmbedOptions::default()
            };
            let result =
                kg_embed::embed_chunks(embedder.embedder, stream_of(embed_rx), options, out_tx)
                    .await;
            match result {
                Ok(summary) => ctx2.stats.embedding_cache_hits.add(summary.cached),
                Err(kg_embed::EmbedError::Cancelled { .. }) => {}
                Err(e) => {
                    errors.set(StageError::failed("embed", &e));
                    stop2.cancel();
                }
            }
        });
        (task, fwd)
    };

    // Store, and its acknowledgements.
    let store = {
        let (writer, errors, stop2) = (writer.clone(), first_error.clone(), stop.clone());
        let stats = ctx.stats.clone();
        tokio::spawn(async move {
            // The store's time runs from the first record it takes (not its
            // first acknowledgement, a whole batch later) to its last ack.
            let input = futures::StreamExt::inspect(stream_of(store_rx), move |_| {
                stats.touch("store");
            });
            match writer.write_stream(input, Some(ack_tx)).await {
                Ok(report) => Some(report),
                Err(e) => {
                    errors.set(StageError::failed("store", &e));
                    stop2.cancel();
                    None
                }
            }
        })
    };
    let acks = {
        let (tracker, ctx2, bar) = (tracker.clone(), ctx.clone(), bars.store.clone());
        tokio::spawn(async move {
            while let Some(acks) = ack_rx.recv().await {
                ctx2.stats.touch("store");
                bar.done(acks.len() as u64);
                tracker.acked(&acks);
            }
        })
    };

    // The router: the only place that decides what goes where.
    let mut router = Router {
        ctx: &ctx,
        tracker: &tracker,
        bars: &bars,
        store_tx: &store_tx,
        extract_tx: extract.as_ref().map(|_| &extract_tx),
        embed_tx: &embed_tx,
        skipped: HashSet::new(),
        current: None,
        documents: Vec::new(),
    };
    let mut exhausted = false;
    loop {
        let record = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            r = raw_rx.recv() => match r { Some(r) => r, None => { exhausted = true; break } },
        };
        ctx.stats.touch("ingest");
        // A full channel blocks the router; a stop must not wait for it.
        // The record being routed is dropped: its document is not done, so
        // the next run processes it.
        let ok = tokio::select! {
            biased;
            _ = stop.cancelled() => false,
            ok = router.route(record) => ok,
        };
        if !ok {
            break;
        }
    }
    let documents = std::mem::take(&mut router.documents);
    drop(router);
    drop(raw_rx);
    drop((extract_tx, embed_tx, store_tx));

    let ingest_summary = match ingest.await {
        Ok(summary) => summary,
        Err(e) => {
            first_error.set(join_error("ingest", e));
            None
        }
    };
    bars.ingest.finish();
    let ingest_unfinished = ingest_summary.as_ref().map_or(0, |s| s.unfinished.len());
    if exhausted && !stop.is_cancelled() && ingest_summary.is_some() {
        tracker.all_ingested();
    }
    for (stage, task) in extract
        .into_iter()
        .flat_map(|(t, f)| [("extract", t), ("extract", f)])
        .chain([("embed", embed.0), ("embed", embed.1)])
    {
        if let Err(e) = task.await {
            first_error.set(join_error(stage, e));
        }
    }
    bars.extract.finish();
    bars.embed.finish();
    let report = match store.await {
        Ok(r) => r,
        Err(e) => {
            first_error.set(join_error("store", e));
            None
        }
    };
    if let Err(e) = acks.await {
        first_error.set(join_error("store", e));
    }
    bars.store.finish();
    if let Some(report) = &report {
        ctx.stats.record_write(report);
    }
    let interrupted = ctx.cancel.is_cancelled();
    RunOutcome {
        interrupted,
        unfinished_documents: tracker.unfinished() + ingest_unfinished,
        error: first_error.take(),
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

fn log_ingest_summary(summary: &kg_ingest::IngestSummary) {
    tracing::info!(
        files_read = summary.files_read,
        documents = summary.documents,
        chunks = summary.chunks,
        csv_rows = summary.csv_rows,
        set_aside = summary.set_aside_total(),
        "ingest finished"
    );
    for s in &summary.skipped {
        tracing::debug!(path = %s.path, reason = %s.reason, "skipped");
    }
}

/// Routes ingested records to the stages.
struct Router<'a> {
    ctx: &'a Ctx,
    tracker: &'a Arc<DocTracker>,
    bars: &'a RunBars,
    store_tx: &'a mpsc::Sender<Record>,
    extract_tx: Option<&'a mpsc::Sender<Chunk>>,
    embed_tx: &'a mpsc::Sender<Chunk>,
    /// Documents done before, whose chunks are not sent on.
    skipped: HashSet<DocumentId>,
    /// The document whose chunks are arriving.
    current: Option<DocumentId>,
    /// Every document of the run, for replacing earlier versions.
    documents: Vec<CurrentDocument>,
}

impl Router<'_> {
    async fn to_store(&self, record: Record) -> bool {
        self.tracker.sent(&record);
        self.bars.store.add_total(1);
        self.store_tx.send(record).await.is_ok()
    }

    async fn route(&mut self, record: Record) -> bool {
        let (ctx, tracker) = (self.ctx, self.tracker);
        // kg-ingest sends each document followed by all of its chunks, one
        // document after the other: any other record means the current
        // document has entered the pipeline completely.
        if let Some(cur) = self.current.as_ref() {
            let same = matches!(&record, Record::Chunk(c) if &c.document_id == cur);
            if !same {
                tracker.ingested(cur);
                self.current = None;
            }
        }
        match record {
            Record::Document(d) => {
                self.bars.ingest.add_total(1);
                self.bars.ingest.done(1);
                self.documents.push(CurrentDocument {
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
                if done || self.skipped.contains(&d.id) {
                    tracing::info!(file = %d.source, document = %d.id, "unchanged since a finished run, skipped");
                    ctx.stats.documents_unchanged.add(1);
                    // Moved or renamed (same content, another path): the
                    // graph and the state take the new source, so that the
                    // file's next edit finds this version to replace.
                    let moved = !self.skipped.contains(&d.id)
                        && matches!(ctx.state.document_source(&d.id), Ok(Some(old)) if old != d.source);
                    self.skipped.insert(d.id.clone());
                    if moved {
                        tracing::info!(file = %d.source, document = %d.id, "moved or renamed: the document takes the new path");
                        if let Err(e) = ctx.state.set_document_source(&d.id, &d.source) {
                            tracing::error!(file = %d.source, "cannot record the new path in the run state: {}", crate::logging::cause_chain(&e));
                        }
                        return self.to_store(Record::Document(d)).await;
                    }
                    return true;
                }
                if let Err(e) = ctx.state.document_started(&d.id, &d.source) {
                    tracing::error!(file = %d.source, "cannot record document in run state: {}", crate::logging::cause_chain(&e));
                }
                let _ = ctx.state.clear_dead_letters_of(&d.source);
                tracker.document(&d.id);
                self.current = Some(d.id.clone());
                self.to_store(Record::Document(d)).await
            }
            Record::Chunk(c) => {
                if self.skipped.contains(&c.document_id) {
                    return true;
                }
                tracker.chunk(&c);
                if let Some(tx) = self.extract_tx {
                    self.bars.extract.add_total(1);
                    ctx.stats.touch("extract");
                    if tx.send(c.clone()).await.is_err() {
                        return false;
                    }
                }
                self.bars.embed.add_total(1);
                ctx.stats.touch("embed");
                if self.embed_tx.send(c.clone()).await.is_err() {
                    return false;
                }
                self.to_store(Record::Chunk(c)).await
            }
            Record::SetAside(s) => {
                ctx.record_set_aside(&s);
                true
            }
            other => self.to_store(other).await,
        }
    }
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
            let detail = crate::logging::cause_chain(&e);
            tracing::error!("cannot look up earlier versions of changed documents: {detail}");
            return Some(format!(
                "earlier versions of changed documents were not removed ({detail}); the next run retries"
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
                stage: kg_core::Stage::Store,
                item: format!("earlier version {id}"),
                reason: SetAsideReason::SupersedeFailed,
                detail: crate::logging::cause_chain(&e),
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

    fn acks(records: &[Record], outcome: AckOutcome) -> Vec<Ack> {
        records
            .iter()
            .map(|r| Ack {
                key: r.key(),
                outcome: outcome.clone(),
            })
            .collect()
    }

    #[test]
    fn a_document_is_done_only_when_every_part_of_every_chunk_is_committed() {
        let dir = tempfile::tempdir().unwrap();
        let state = Arc::new(RunState::open(dir.path()).unwrap());
        let stats = Arc::new(RunStats::default());
        let tracker = DocTracker::new(
            Some(state.clone()),
            stats.clone(),
            true,
            true,
            "extract=m@v;embed=e".into(),
        );
        let (a, b) = (doc("a.md"), doc("b.md"));
        for d in [&a, &b] {
            state.document_started(&d.id, &d.source).unwrap();
            tracker.document(&d.id);
        }
        let (a0, a1, b0) = (chunk(&a, 0), chunk(&a, 1), chunk(&b, 0));
        for c in [&a0, &a1, &b0] {
            tracker.chunk(c);
        }
        let docs = [Record::Document(a.clone()), Record::Document(b.clone())];
        let all: Vec<Record> = docs
            .iter()
            .cloned()
            .chain(parts(&a0))
            .chain(parts(&a1))
            .chain(parts(&b0))
            .collect();
        for r in &all {
            tracker.sent(r);
        }
        tracker.acked(&acks(&docs, AckOutcome::Committed));
        tracker.acked(&acks(&parts(&a0), AckOutcome::Committed));
        let mut a1_parts = parts(&a1);
        let last = a1_parts.pop().unwrap();
        tracker.acked(&acks(&a1_parts, AckOutcome::Committed));
        tracker.ingested(&a.id);
        assert_eq!(
            state.document_status(&a.id).unwrap(),
            Some(DocStatus::InProgress)
        );
        tracker.acked(&acks(&[last], AckOutcome::Committed));
        assert_eq!(state.document_status(&a.id).unwrap(), Some(DocStatus::Done));
        // b: its embedding failed in the store; committed otherwise, never done.
        let mut b_parts = parts(&b0);
        let b_embedding = b_parts.pop().unwrap();
        tracker.acked(&acks(&b_parts, AckOutcome::Committed));
        tracker.acked(&acks(
            &[b_embedding],
            AckOutcome::Failed {
                reason: SetAsideReason::BatchFailed,
                batch: 7,
            },
        ));
        tracker.all_ingested();
        assert_eq!(
            state.document_status(&b.id).unwrap(),
            Some(DocStatus::InProgress)
        );
        assert_eq!(tracker.unfinished(), 0);
        // The summary counts what was committed: 2 documents, 3 chunks,
        // 3 extractions, 2 embeddings (b's failed).
        assert_eq!(stats.documents.get(), 2);
        assert_eq!(stats.chunks.get(), 3);
        assert_eq!(stats.extractions.get(), 3);
        assert_eq!(stats.embeddings.get(), 2);
        assert_eq!(stats.records_stored.get(), all.len() as u64 - 1);
    }

    #[test]
    fn a_chunk_set_aside_by_a_stage_keeps_its_document_unfinished() {
        let dir = tempfile::tempdir().unwrap();
        let state = Arc::new(RunState::open(dir.path()).unwrap());
        let tracker = DocTracker::new(
            Some(state.clone()),
            Arc::new(RunStats::default()),
            true,
            false,
            "s".into(),
        );
        let a = doc("a.md");
        state.document_started(&a.id, &a.source).unwrap();
        tracker.document(&a.id);
        let c = chunk(&a, 0);
        tracker.chunk(&c);
        tracker.failed(&c.id);
        let records = [Record::Document(a.clone()), Record::Chunk(c.clone())];
        for r in &records {
            tracker.sent(r);
        }
        tracker.acked(&acks(&records, AckOutcome::Committed));
        tracker.all_ingested();
        assert_eq!(
            state.document_status(&a.id).unwrap(),
            Some(DocStatus::InProgress)
        );
    }

    /// Vectors without a model: the pipeline test needs an embedder, not
    /// good vectors.
    struct CountingEmbedder;

    impl kg_embed::Embedder for CountingEmbedder {
        fn model_id(&self) -> &str {
            "test/len"
        }
        fn dimensions(&self) -> Option<usize> {
            Some(2)
        }
        fn batch_limits(&self) -> kg_embed::BatchLimits {
            kg_embed::BatchLimits {
                max_inputs: 8,
                max_tokens: None,
                concurrency: 2,
            }
        }
        fn count_tokens(&self, text: &str) -> usize {
            text.split_whitespace().count()
        }
        fn embed<'a>(
            &'a self,
            texts: &'a [String],
        ) -> futures::future::BoxFuture<'a, Result<Vec<Vec<f32>>, kg_embed::EmbedError>> {
            Box::pin(async move { Ok(texts.iter().map(|t| vec![t.len() as f32, 1.0]).collect()) })
        }
    }

    #[tokio::test]
    async fn a_panic_in_the_store_ends_the_run_with_its_message() {
        use kg_store::memory::{FailRule, MemorySink};
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("notes.md");
        let text: String = (0..40)
            .map(|i| format!("Paragraph {i} says something about the harbour and its ships.\n\n"))
            .collect();
        std::fs::write(&input, text).unwrap();
        let state = Arc::new(RunState::open(&dir.path().join("state")).unwrap());
        let ctx = Ctx {
            stats: Arc::new(RunStats::default()),
            state: state.clone(),
            cancel: CancellationToken::new(),
        };
        let sink = MemorySink::failing(FailRule(Arc::new(|_, _| {
            panic!("injected store panic");
        })));
        let stages = Stages {
            ingest: kg_ingest::IngestConfig::default(),
            extractor: None,
            embedder: EmbedStage {
                embedder: Arc::new(CountingEmbedder),
                cache: None,
            },
            writer: Arc::new(BatchWriter::new(sink, kg_store::WriterConfig::default())),
        };
        let progress = crate::logging::Progress::default();
        let bars = RunBars {
            ingest: progress.stage("ingest"),
            extract: progress.stage("extract"),
            embed: progress.stage("embed"),
            store: progress.stage("store"),
        };
        let outcome =
            tokio::time::timeout(Duration::from_secs(60), run(stages, vec![input], ctx, bars))
                .await
                .expect("the run ends after the panic instead of hanging");
        let error = outcome.error.expect("the panic is the run's error");
        assert!(
            matches!(error, StageError::Panicked { stage: "store", .. }),
            "{error}"
        );
        assert!(
            error.to_string().contains("injected store panic"),
            "{error}"
        );
        assert!(outcome.unfinished_documents >= 1);
        assert!(outcome.documents.is_empty(), "nothing is done");
    }

    #[tokio::test]
    async fn the_store_time_starts_at_its_first_record_not_its_first_ack() {
        use kg_store::memory::{FailRule, MemorySink};
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("notes.md");
        std::fs::write(&input, "One short paragraph about the harbour.\n").unwrap();
        let state = Arc::new(RunState::open(&dir.path().join("state")).unwrap());
        let stats = Arc::new(RunStats::default());
        let ctx = Ctx {
            stats: stats.clone(),
            state,
            cancel: CancellationToken::new(),
        };
        // Every batch takes 300 ms: the store's first ack comes after the
        // first batch, its last after the last one.
        let sink = MemorySink::failing(FailRule(Arc::new(|_, _| {
            std::thread::sleep(Duration::from_millis(300));
            None
        })));
        let writer = Arc::new(BatchWriter::new(sink, kg_store::WriterConfig::default()));
        let stages = Stages {
            ingest: kg_ingest::IngestConfig::default(),
            extractor: None,
            embedder: EmbedStage {
                embedder: Arc::new(CountingEmbedder),
                cache: None,
            },
            writer: writer.clone(),
        };
        let progress = crate::logging::Progress::default();
        let bars = RunBars {
            ingest: progress.stage("ingest"),
            extract: progress.stage("extract"),
            embed: progress.stage("embed"),
            store: progress.stage("store"),
        };
        let outcome = run(stages, vec![input], ctx, bars).await;
        let batches = writer.sink().batches().len() as u32;
        assert!(outcome.error.is_none(), "{:?}", outcome.error);
        assert!(
            stats.records_stored.get() >= 3,
            "document, chunk, embedding"
        );
        // Every 300 ms batch (one at a time) lies between the first record
        // the store took and its last ack; timed from the first ack, the
        // first batch was missing.
        assert!(batches >= 1);
        let store = stats.stage_time("store").expect("the store took records");
        assert!(
            store >= Duration::from_millis(300) * batches,
            "{store:?} for {batches} batches"
        );
    }

    #[tokio::test]
    async fn a_panicking_task_becomes_an_error_with_its_message() {
        let task = tokio::spawn(async {
            if true {
                panic!("injected store panic");
            }
        });
        let e = join_error("store", task.await.unwrap_err());
        assert!(matches!(e, StageError::Panicked { stage: "store", .. }));
        assert!(e.to_string().contains("injected store panic"), "{e}");
    }
}
