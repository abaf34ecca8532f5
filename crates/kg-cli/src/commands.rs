//! The subcommands: each builds its stages from the settings, wires them
//! with [`crate::pipeline`] and turns the result into an exit code.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use kg_core::{Chunk, Record, Stage};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::build;
use crate::config::Settings;
use crate::jsonl_io;
use crate::lock::{DataDirLock, Resource};
use crate::logging::Progress;
use crate::pipeline::{self, stream_of, Ctx, DocTracker, RunBars};
use crate::state::RunState;
use crate::stats::RunStats;

/// How a command ended, as the process exit code of docs/cli.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: everything done.
    Done,
    /// 1: failed (the message says what and how far it got).
    Failed,
    /// 2: usage error.
    Usage,
    /// 3: finished, but some inputs were set aside.
    SetAside,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Done => 0,
            Exit::Failed => 1,
            Exit::Usage => 2,
            Exit::SetAside => 3,
        }
    }
}

/// The note printed when extraction is skipped for want of an LLM.
pub const NO_LLM_NOTE: &str = "entity extraction skipped: no LLM configured. To enable it, set \
OPENAI_API_KEY (OpenAI), or OPENAI_BASE_URL / --llm-base-url for an OpenAI-compatible server \
(Ollama: http://localhost:11434/v1, vLLM, llama.cpp), and KG_MODEL / --model.";

/// What every command shares.
pub struct App {
    /// Effective settings.
    pub settings: Settings,
    /// Counters.
    pub stats: Arc<RunStats>,
    /// Progress bars.
    pub progress: Progress,
    /// Ctrl-C.
    pub cancel: CancellationToken,
    /// When the command started.
    pub started: Instant,
    /// Lines for the summary's notes.
    pub notes: Vec<String>,
    /// Whether to wait for another kg holding a data-dir lock (else exit 1).
    pub wait_for_locks: bool,
}

impl App {
    fn ctx(&self, state: Arc<RunState>) -> Ctx {
        Ctx {
            stats: self.stats.clone(),
            state,
            cancel: self.cancel.clone(),
        }
    }

    /// Takes the data-dir locks a command needs (see [`crate::lock`]).
    async fn lock(&self, resources: &[Resource]) -> anyhow::Result<DataDirLock> {
        Ok(DataDirLock::acquire(
            &self.settings.data_dir,
            resources,
            self.wait_for_locks,
            &self.cancel,
        )
        .await?)
    }

    fn open_state(&self) -> anyhow::Result<Arc<RunState>> {
        Ok(Arc::new(RunState::open(&self.settings.data_dir)?))
    }

    /// Prints the summary (stderr: stdout may carry records) and returns
    /// the exit code the counters call for.
    pub fn finish(&self, interrupted: bool) -> Exit {
        self.progress.clear();
        let text = self
            .stats
            .render_summary(self.started.elapsed(), &self.notes);
        if self.settings.log_format == crate::config::LogFormat::Json {
            let s = &self.stats;
            tracing::info!(
                documents = s.documents.get(),
                documents_unchanged = s.documents_unchanged.get(),
                pages = s.pages.get(),
                chunks = s.chunks.get(),
                entities = s.entities.get(),
                entities_distinct = s.distinct_counts().0,
                relations = s.relations.get(),
                relations_distinct = s.distinct_counts().1,
                documents_replaced = s.documents_replaced.get(),
                embeddings = s.embeddings.get(),
                records_stored = s.records_stored.get(),
                set_aside = s.set_aside_total(),
                llm_calls = s.llm_calls.get(),
                cached_extractions = s.extraction_cache_hits.get(),
                cached_embeddings = s.embedding_cache_hits.get(),
                prompt_tokens = s.prompt_tokens.get(),
                completion_tokens = s.completion_tokens.get(),
                estimated_cost_usd = s.cost_micro_usd.get() as f64 / 1e6,
                seconds = self.started.elapsed().as_secs_f64(),
                interrupted,
                "summary"
            );
        } else {
            eprint!("{text}");
        }
        if interrupted {
            Exit::Failed
        } else if self.stats.set_aside_total() > 0 {
            Exit::SetAside
        } else {
            Exit::Done
        }
    }
}

/// `kg ingest PATH... [-o FILE]`.
pub async fn ingest(
    app: &mut App,
    paths: Vec<PathBuf>,
    output: Option<PathBuf>,
) -> anyhow::Result<Exit> {
    let config = build::ingest_config(&app.settings)?;
    let (name, out) = jsonl_io::open_output(output.as_deref())?;
    let (tx, rx) = mpsc::channel(256);
    let state = app.open_state()?;
    let ctx = app.ctx(state);
    let bar = app.progress.stage("ingest");
    let writer = jsonl_io::spawn_writer(name, out, rx, move |r| {
        match r {
            Record::SetAside(s) => ctx.record_set_aside(s),
            Record::Document(_) => {
                bar.add_total(1);
                bar.done(1);
            }
            _ => {}
        }
        ctx.stats.count(r);
        ctx.stats.touch("ingest");
    });
    let result = kg_ingest::ingest(paths, config, tx, app.cancel.clone()).await;
    writer.await.context("output writer thread")??;
    let summary = result.map_err(|e| pipeline::StageError::failed("ingest", &e))?;
    if summary.interrupted {
        app.notes.push(format!(
            "interrupted: {} file(s) not read; run the same command again",
            summary.unfinished.len()
        ));
    }
    Ok(app.finish(app.cancel.is_cancelled()))
}

/// Reads `input` (or stdin), passes every record through to the output, and
/// sends each chunk to `chunks_tx` too.
fn spawn_passthrough(
    input: Option<PathBuf>,
    stage: Stage,
    out: mpsc::Sender<Record>,
    chunks_tx: mpsc::Sender<Chunk>,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let (raw_tx, mut raw_rx) = mpsc::channel(256);
    let reader = jsonl_io::spawn_reader(input.into_iter().collect(), stage, raw_tx);
    tokio::spawn(async move {
        loop {
            let r = tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                r = raw_rx.recv() => match r { Some(r) => r, None => break },
            };
            if let Record::Chunk(c) = &r {
                if chunks_tx.send(c.clone()).await.is_err() {
                    break;
                }
            }
            if out.send(r).await.is_err() {
                break;
            }
        }
        drop(raw_rx);
        // After Ctrl-C the reader may sit in a blocking read of stdin:
        // do not wait for it (it stops at its next record).
        if !cancel.is_cancelled() {
            reader.await.context("input reader thread")??;
        }
        Ok(())
    })
}

/// A one-stage command's output: the record sender and the writer thread.
type Output = (
    mpsc::Sender<Record>,
    tokio::task::JoinHandle<Result<(), jsonl_io::IoError>>,
);

/// The output of a one-stage command: records counted as written, the
/// set-aside ones recorded, the stage's own output on `bar`.
fn writer_counting(
    ctx: Ctx,
    output: Option<PathBuf>,
    stage: Stage,
    bar: crate::logging::StageBar,
) -> anyhow::Result<Output> {
    let (name, out) = jsonl_io::open_output(output.as_deref())?;
    let (tx, rx) = mpsc::channel(256);
    let writer = jsonl_io::spawn_writer(name, out, rx, move |r| {
        let ours = match r {
            Record::SetAside(s) => {
                ctx.record_set_aside(s);
                s.stage == stage
            }
            Record::Extraction(_) => stage == Stage::Extract,
            Record::Embedding(_) => stage == Stage::Embed,
            _ => false,
        };
        if ours {
            bar.done(1);
            ctx.stats.touch(crate::stats::stage_name(stage));
        }
        ctx.stats.count(r);
    });
    Ok((tx, writer))
}

/// `kg extract [-i FILE] [-o FILE]`.
pub async fn extract(
    app: &mut App,
    input: Option<PathBuf>,
    output: Option<PathBuf>,
    dry_run: bool,
) -> anyhow::Result<Exit> {
    if dry_run {
        return dry_run_extract(app, input).await;
    }
    if !app.settings.llm_configured() {
        anyhow::bail!("{NO_LLM_NOTE}");
    }
    let _lock = app.lock(&[Resource::ExtractCache]).await?;
    let state = app.open_state()?;
    let ctx = app.ctx(state);
    let extractor = build::extractor(&app.settings)?;
    let bar = app.progress.stage("extract");
    let (out_tx, writer) = writer_counting(ctx.clone(), output, Stage::Extract, bar.clone())?;
    let (chunk_tx, chunk_rx) = mpsc::channel(extractor.concurrency() * 2);
    let counting = {
        let bar = bar.clone();
        let (tx, mut rx) = mpsc::channel::<Chunk>(extractor.concurrency() * 2);
        tokio::spawn(async move {
            while let Some(c) = rx.recv().await {
                bar.add_total(1);
                if chunk_tx.send(c).await.is_err() {
                    break;
                }
            }
        });
        tx
    };
    let reader = spawn_passthrough(
        input,
        Stage::Extract,
        out_tx.clone(),
        counting,
        app.cancel.clone(),
    );
    let result = extractor
        .run(stream_of(chunk_rx), out_tx, app.cancel.clone())
        .await;
    reader.await.context("reader task")??;
    writer.await.context("output writer thread")??;
    bar.finish();
    match result {
        Ok(summary) => {
            app.stats.add_llm_usage(&summary);
            Ok(app.finish(app.cancel.is_cancelled()))
        }
        Err(e) => {
            app.stats
                .add_llm_usage(&extractor.progress().snapshot());
            app.finish(true);
            Err(pipeline::StageError::failed("extract", &e).into())
        }
    }
}

/// `kg extract --dry-run`: tokens and cost of extracting the input's chunks
/// with the configured model, counting what the cache already holds as free.
async fn dry_run_extract(app: &mut App, input: Option<PathBuf>) -> anyhow::Result<Exit> {
    let (tx, rx) = mpsc::channel(256);
    let reader = jsonl_io::spawn_reader(input.into_iter().collect(), Stage::Extract, tx);
    let estimate = estimate_chunks(app, rx).await?;
    reader.await.context("input reader thread")??;
    println!("{}", render_estimate(&estimate, &app.settings));
    Ok(Exit::Done)
}

/// Estimates the chunks among `rx`'s records, a window at a time, with
/// kg-extract's estimate (which counts what its cache holds as free).
async fn estimate_chunks(
    app: &App,
    mut rx: mpsc::Receiver<Record>,
) -> anyhow::Result<kg_extract::CostEstimate> {
    // Opening the response cache may cut a torn last line: not while a run
    // appends to it.
    let _lock = app.lock(&[Resource::ExtractCache]).await?;
    let extractor = build::extractor(&app.settings)?;
    let mut total = kg_extract::CostEstimate::default();
    let mut window = Vec::with_capacity(256);
    loop {
        let next = rx.recv().await;
        let end = next.is_none();
        if let Some(Record::Chunk(c)) = next {
            window.push(c);
        }
        if window.len() >= 256 || (end && !window.is_empty()) {
            let e = extractor.estimate(&window)?;
            total.chunks += e.chunks;
            total.cached += e.cached;
            total.prompt_tokens += e.prompt_tokens;
            total.completion_tokens += e.completion_tokens;
            total.cost_usd = match (total.cost_usd, e.cost_usd) {
                (Some(a), Some(b)) => Some(a + b),
                (a, b) => a.or(b),
            };
            window.clear();
        }
        if end {
            return Ok(total);
        }
    }
}

/// The report printed by `--dry-run`.
pub fn render_estimate(e: &kg_extract::CostEstimate, settings: &Settings) -> String {
    format!(
        "kg --dry-run: extraction estimate (model {}, ${}/M prompt, ${}/M completion tokens)\n  chunks             {}\n  already cached     {}\n  LLM calls          {}\n  prompt tokens      ~{}\n  completion tokens  ~{}\n  estimated cost     ~${:.4}",
        settings.model,
        settings.input_price_per_mtok,
        settings.output_price_per_mtok,
        e.chunks,
        e.cached,
        e.chunks - e.cached,
        e.prompt_tokens,
        e.completion_tokens,
        e.cost_usd.unwrap_or(0.0)
    )
}

/// `kg embed [-i FILE] [-o FILE]`.
pub async fn embed(
    app: &mut App,
    input: Option<PathBuf>,
    output: Option<PathBuf>,
) -> anyhow::Result<Exit> {
    let _lock = app.lock(&[Resource::EmbedCache]).await?;
    let stage = build::embed_stage(&app.settings, &app.cancel).await?;
    let state = app.open_state()?;
    let ctx = app.ctx(state);
    let bar = app.progress.stage("embed");
    let (out_tx, writer) = writer_counting(ctx.clone(), output, Stage::Embed, bar.clone())?;
    let (chunk_tx, chunk_rx) = mpsc::channel::<Chunk>(256);
    let reader = spawn_passthrough(
        input,
        Stage::Embed,
        out_tx.clone(),
        chunk_tx,
        app.cancel.clone(),
    );
    let options = kg_embed::EmbedOptions {
        cache: stage.cache.clone(),
        cancel: app.cancel.clone(),
        ..kg_embed::EmbedOptions::default()
    };
    let chunks = {
        let bar = bar.clone();
        futures::StreamExt::inspect(stream_of(chunk_rx), move |_| bar.add_total(1))
    };
    let result = kg_embed::embed_chunks(stage.embedder, chunks, options, out_tx).await;
    reader.await.context("reader task")??;
    writer.await.context("output writer thread")??;
    bar.finish();
    match result {
        Ok(summary) => app.stats.embedding_cache_hits.add(summary.cached),
        Err(kg_embed::EmbedError::Cancelled { .. }) => {}
        Err(e) => {
            app.finish(true);
            return Err(pipeline::StageError::failed("embed", &e).into());
        }
    }
    Ok(app.finish(app.cancel.is_cancelled()))
}

/// `kg store [-i FILE...]`, or `--from-embedded`.
pub async fn store(
    app: &mut App,
    inputs: Vec<PathBuf>,
    from_embedded: bool,
) -> anyhow::Result<Exit> {
    let _lock = app.lock(&[Resource::Store]).await?;
    if from_embedded {
        return store_from_embedded(app).await;
    }
    let writer = Arc::new(build::writer(&app.settings, &app.cancel).await?);
    build::spawn_connection_gauge(&writer);
    replay_dead_letters(app, &writer).await;
    let state = app.open_state()?;
    let ctx = app.ctx(state);
    let tracker = Arc::new(DocTracker::new(
        None,
        app.stats.clone(),
        false,
        false,
        String::new(),
    ));
    let (raw_tx, mut raw_rx) = mpsc::channel(1024);
    let reader = jsonl_io::spawn_reader(inputs, Stage::Store, raw_tx);
    let (store_tx, store_rx) = mpsc::channel::<Record>(1024);
    let (ack_tx, mut ack_rx) = mpsc::channel::<Vec<kg_store::Ack>>(16);
    let bar = app.progress.stage("store");
    let write = {
        let writer = writer.clone();
        tokio::spawn(async move { writer.write_stream(stream_of(store_rx), Some(ack_tx)).await })
    };
    let acks = {
        let (tracker, bar, stats) = (tracker.clone(), bar.clone(), app.stats.clone());
        tokio::spawn(async move {
            while let Some(acks) = ack_rx.recv().await {
                stats.touch("store");
                bar.done(acks.len() as u64);
                tracker.acked(&acks);
            }
        })
    };
    let mut documents = Vec::new();
    while let Some(record) = raw_rx.recv().await {
        match record {
            Record::SetAside(s) => ctx.record_set_aside(&s),
            record => {
                if let Record::Document(d) = &record {
                    documents.push(kg_store::CurrentDocument {
                        source: d.source.clone(),
                        id: d.id.clone(),
                    });
                }
                tracker.sent(&record);
                bar.add_total(1);
                if store_tx.send(record).await.is_err() {
                    break;
                }
            }
        }
    }
    drop(store_tx);
    reader.await.context("input reader thread")??;
    let report = write
        .await
        .map_err(|e| anyhow::anyhow!("store task: {e}"))?
        .map_err(|e| pipeline::StageError::failed("store", &e))?;
    acks.await.context("acknowledgement task")?;
    bar.finish();
    app.stats.record_write(&report);
    report_failed_batches(app, &report);
    // Without a run state of documents, "complete" means: nothing of this
    // input was set aside and the input was read to its end.
    if app.stats.set_aside_total() == 0 && !app.cancel.is_cancelled() {
        let note = pipeline::replace_earlier_versions(writer.sink(), &ctx, documents).await;
        app.notes.extend(note);
    } else if !documents.is_empty() {
        app.notes.push(
            "earlier versions of changed documents were kept, because part of this input was \
             set aside or interrupted; a complete re-run replaces them"
                .into(),
        );
    }
    Ok(app.finish(app.cancel.is_cancelled()))
}

/// Writes again what an earlier run's store could not (its dead-letter
/// file), before the new input: batches that commit now leave the file,
/// those that fail again go to a fresh one.
async fn replay_dead_letters(app: &mut App, writer: &kg_store::BatchWriter<kg_store::AnyStore>) {
    match kg_store::rerun_dead_letters(writer).await {
        Ok(report) if report.records > 0 => {
            app.stats.record_write(&report);
            if report.failed_batches.is_empty() {
                app.notes.push(format!(
                    "wrote the {} records an earlier run could not store",
                    report.records
                ));
            } else {
                report_failed_batches(app, &report);
            }
        }
        Ok(_) => {}
        Err(e) => app.notes.push(format!(
            "the dead letters of an earlier run could not be written again: {}",
            crate::logging::cause_chain(&e)
        )),
    }
}

/// Sets aside (and explains) the batches a write could not commit.
fn report_failed_batches(app: &mut App, report: &kg_store::WriteReport) {
    if let Err(e) = report.check() {
        app.notes.push(crate::logging::cause_chain(&e));
    }
    for s in &report.set_aside {
        if s.stage == Stage::Store {
            app.stats.set_aside(s);
        }
    }
}

async fn store_from_embedded(app: &mut App) -> anyhow::Result<Exit> {
    if app.settings.neo4j_uri.is_none() {
        anyhow::bail!(
            "--from-embedded copies the embedded store to Neo4j: set --neo4j-uri or NEO4J_URI"
        );
    }
    let embedded = kg_store::EmbeddedStore::open(&kg_store::EmbeddedConfig {
        data_dir: app.settings.data_dir.clone(),
    })
    .map_err(|e| pipeline::StageError::failed("store", &e))?;
    let writer = build::writer(&app.settings, &app.cancel).await?;
    let report = kg_store::export_embedded(&embedded, &writer)
        .await
        .map_err(|e| pipeline::StageError::failed("store", &e))?;
    app.stats.records_stored.add(report.records);
    app.stats.record_write(&report);
    report_failed_batches(app, &report);
    app.notes.push(format!(
        "copied {} records from the embedded store in {} to {}",
        report.records,
        app.settings.data_dir.display(),
        kg_core::secret::redact_url(app.settings.neo4j_uri.as_deref().unwrap_or_default())
    ));
    Ok(app.finish(false))
}

/// `kg run PATH...`.
pub async fn run(app: &mut App, paths: Vec<PathBuf>, dry_run: bool) -> anyhow::Result<Exit> {
    let ingest = build::ingest_config(&app.settings)?;
    if dry_run {
        return dry_run_run(app, ingest, paths).await;
    }
    let _lock = app
        .lock(&[Resource::Store, Resource::ExtractCache, Resource::EmbedCache])
        .await?;
    let state = app.open_state()?;
    let ctx = app.ctx(state);
    let extractor = if app.settings.llm_configured() {
        Some(build::extractor(&app.settings)?)
    } else {
        app.notes.push(NO_LLM_NOTE.to_string());
        None
    };
    let embedder = build::embed_stage(&app.settings, &app.cancel).await?;
    let writer = Arc::new(build::writer(&app.settings, &app.cancel).await?);
    build::spawn_connection_gauge(&writer);
    replay_dead_letters(app, &writer).await;
    let bars = RunBars {
        ingest: app.progress.stage("ingest"),
        extract: if extractor.is_some() {
            app.progress.stage("extract")
        } else {
            crate::logging::Progress::default().stage("extract")
        },
        embed: app.progress.stage("embed"),
        store: app.progress.stage("store"),
    };
    let outcome = pipeline::run(
        pipeline::Stages {
            ingest,
            extractor,
            embedder,
            writer: writer.clone(),
        },
        paths,
        ctx.clone(),
        bars,
    )
    .await;
    let note = pipeline::replace_earlier_versions(writer.sink(), &ctx, outcome.documents).await;
    app.notes.extend(note);
    if let Some(e) = outcome.error {
        app.finish(true);
        return Err(e.into());
    }
    if outcome.interrupted {
        app.notes.push(format!(
            "interrupted: {} document(s) not finished; run the same command again to finish them \
             (nothing done so far is repeated)",
            outcome.unfinished_documents
        ));
    }
    Ok(app.finish(outcome.interrupted))
}

async fn dry_run_run(
    app: &mut App,
    ingest: kg_ingest::IngestConfig,
    paths: Vec<PathBuf>,
) -> anyhow::Result<Exit> {
    let (tx, rx) = mpsc::channel(256);
    let cancel = app.cancel.clone();
    let task = tokio::spawn(kg_ingest::ingest(paths, ingest, tx, cancel));
    let estimate = estimate_chunks(app, rx).await?;
    task.await
        .context("ingest task")?
        .map_err(|e| pipeline::StageError::failed("ingest", &e))?;
    println!("{}", render_estimate(&estimate, &app.settings));
    Ok(Exit::Done)
}

/// `kg search TEXT -k N [--json]`.
pub async fn search(app: &mut App, text: &str, k: usize, json: bool) -> anyhow::Result<Exit> {
    let embedder = build::embedder(&app.settings, &app.cancel).await?;
    let store = build::store(&app.settings).await?;
    let vector = kg_embed::embed_query(embedder.as_ref(), text)
        .await
        .map_err(|e| anyhow::anyhow!("embedding the query: {}", crate::logging::cause_chain(&e)))?;
    let hits: Vec<crate::search::Hit> = kg_store::GraphStore::search(&store, &vector, k)
        .await
        .map_err(|e| pipeline::StageError::failed("search", &e))?
        .hits
        .into_iter()
        .map(Into::into)
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&hits)?);
    } else {
        print!("{}", crate::search::render_hits(text, &hits));
    }
    Ok(if hits.is_empty() {
        Exit::Failed
    } else {
        Exit::Done
    })
}
