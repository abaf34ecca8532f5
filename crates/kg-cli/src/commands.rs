//! The subcommands: each builds its stages from the settings, wires them
//! with [`crate::pipeline`] and turns the result into an exit code.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use kg_core::{Chunk, Record, Stage};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::backends;
use crate::config::Settings;
use crate::jsonl_io;
use crate::logging::Progress;
use crate::pipeline::{self, count_record, Ctx, RunBars, RunConfig, StoreBatching};
use crate::state::RunState;
use crate::stats::RunStats;

/// How a command ended, as the process exit code of ../shared/CLI.md.
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
}

impl App {
    fn ctx(&self, state: Arc<RunState>) -> Ctx {
        Ctx {
            stats: self.stats.clone(),
            state,
            cancel: self.cancel.clone(),
            input_price_per_mtok: self.settings.input_price_per_mtok,
            output_price_per_mtok: self.settings.output_price_per_mtok,
        }
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
    let ingester = Arc::new(backends::ingester(&app.settings)?);
    let (name, out) = jsonl_io::open_output(output.as_deref())?;
    let (tx, rx) = mpsc::channel(256);
    let state = app.open_state()?;
    let ctx = app.ctx(state);
    let bar = app.progress.stage("ingest");
    let writer = jsonl_io::spawn_writer(name, out, rx, move |r| {
        if let Record::SetAside(s) = r {
            ctx.record_set_aside(s);
        }
        if let Record::Document(_) = r {
            bar.add_total(1);
            bar.done(1);
        }
        count_record(&ctx.stats, r);
        ctx.stats.touch("ingest");
    });
    let result = {
        use crate::stages::Ingester;
        ingester.ingest(paths, tx, app.cancel.clone()).await
    };
    writer.await.context("output writer thread")??;
    result?;
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

fn writer_counting(ctx: Ctx, output: Option<PathBuf>) -> anyhow::Result<Output> {
    let (name, out) = jsonl_io::open_output(output.as_deref())?;
    let (tx, rx) = mpsc::channel(256);
    let writer = jsonl_io::spawn_writer(name, out, rx, move |r| {
        if let Record::SetAside(s) = r {
            ctx.record_set_aside(s);
        }
        count_record(&ctx.stats, r);
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
    let state = app.open_state()?;
    let ctx = app.ctx(state.clone());
    if dry_run {
        return dry_run_extract(app, input, &state).await;
    }
    if !app.settings.llm_configured() {
        anyhow::bail!("{NO_LLM_NOTE}");
    }
    let extractor = Arc::new(backends::extractor(&app.settings)?);
    let (out_tx, writer) = writer_counting(ctx.clone(), output)?;
    let (chunk_tx, chunk_rx) = mpsc::channel(app.settings.concurrency * 2);
    let reader = spawn_passthrough(
        input,
        Stage::Extract,
        out_tx.clone(),
        chunk_tx,
        app.cancel.clone(),
    );
    let bar = app.progress.stage("extract");
    let result = pipeline::extract_chunks(
        extractor,
        ctx,
        chunk_rx,
        out_tx,
        app.settings.concurrency,
        bar,
        None,
    )
    .await;
    reader.await.context("reader task")??;
    writer.await.context("output writer thread")??;
    if let Err(e) = result {
        app.finish(true);
        return Err(e.into());
    }
    Ok(app.finish(app.cancel.is_cancelled()))
}

/// `kg extract --dry-run`: tokens and cost of extracting the input's chunks
/// with the configured model, counting what the cache already holds as free.
async fn dry_run_extract(
    app: &mut App,
    input: Option<PathBuf>,
    state: &RunState,
) -> anyhow::Result<Exit> {
    let (tx, rx) = mpsc::channel(256);
    let reader = jsonl_io::spawn_reader(input.into_iter().collect(), Stage::Extract, tx);
    let estimate = estimate_chunks(app, rx, state).await?;
    reader.await.context("input reader thread")??;
    println!("{}", estimate.render(&app.settings));
    Ok(Exit::Done)
}

/// Estimates the chunks among `rx`'s records, a window at a time.
async fn estimate_chunks(
    app: &App,
    mut rx: mpsc::Receiver<Record>,
    state: &RunState,
) -> anyhow::Result<CostEstimate> {
    let extractor = backends::extractor(&app.settings)?;
    let mut estimate = CostEstimate::default();
    let mut window = Vec::with_capacity(256);
    loop {
        let next = rx.recv().await;
        let end = next.is_none();
        if let Some(Record::Chunk(c)) = next {
            estimate.chunks += 1;
            if state
                .cached_extraction(&app.settings.model, backends::PROMPT_VERSION, &c.id)?
                .is_some()
            {
                estimate.cached += 1;
            } else {
                window.push(c);
            }
        }
        if window.len() >= 256 || (end && !window.is_empty()) {
            let e = extractor.estimate(&window)?;
            estimate.prompt_tokens += e.prompt_tokens;
            estimate.completion_tokens += e.completion_tokens;
            window.clear();
        }
        if end {
            return Ok(estimate);
        }
    }
}

/// Tokens and cost an extraction would take.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CostEstimate {
    /// Chunks seen.
    pub chunks: u64,
    /// Chunks already in the cache (free).
    pub cached: u64,
    /// Prompt tokens of the chunks to call (kg-extract's tiktoken count).
    pub prompt_tokens: u64,
    /// Completion tokens expected (kg-extract's heuristic).
    pub completion_tokens: u64,
}

impl CostEstimate {
    /// Estimated cost in USD.
    pub fn cost(&self, settings: &Settings) -> f64 {
        self.prompt_tokens as f64 * settings.input_price_per_mtok / 1e6
            + self.completion_tokens as f64 * settings.output_price_per_mtok / 1e6
    }

    /// The report printed by `--dry-run`.
    pub fn render(&self, settings: &Settings) -> String {
        format!(
            "kg --dry-run: extraction estimate (model {}, ${}/M prompt, ${}/M completion tokens)\n  chunks             {}\n  already cached     {}\n  LLM calls          {}\n  prompt tokens      ~{}\n  completion tokens  ~{}\n  estimated cost     ~${:.4}",
            settings.model,
            settings.input_price_per_mtok,
            settings.output_price_per_mtok,
            self.chunks,
            self.cached,
            self.chunks - self.cached,
            self.prompt_tokens,
            self.completion_tokens,
            self.cost(settings)
        )
    }
}

/// `kg embed [-i FILE] [-o FILE]`.
pub async fn embed(
    app: &mut App,
    input: Option<PathBuf>,
    output: Option<PathBuf>,
) -> anyhow::Result<Exit> {
    let embedder = Arc::new(backends::embedder(&app.settings).await?);
    let state = app.open_state()?;
    let ctx = app.ctx(state);
    let (out_tx, writer) = writer_counting(ctx.clone(), output)?;
    let (chunk_tx, chunk_rx) = mpsc::channel(app.settings.embed_batch * 2);
    let reader = spawn_passthrough(
        input,
        Stage::Embed,
        out_tx.clone(),
        chunk_tx,
        app.cancel.clone(),
    );
    let bar = app.progress.stage("embed");
    pipeline::embed_chunks(
        embedder,
        ctx,
        chunk_rx,
        out_tx,
        app.settings.embed_batch,
        bar,
        None,
    )
    .await;
    reader.await.context("reader task")??;
    writer.await.context("output writer thread")??;
    Ok(app.finish(app.cancel.is_cancelled()))
}

/// `kg store [-i FILE...]`, or `--from-embedded`.
pub async fn store(
    app: &mut App,
    inputs: Vec<PathBuf>,
    from_embedded: bool,
) -> anyhow::Result<Exit> {
    if from_embedded {
        return store_from_embedded(app).await;
    }
    let store = Arc::new(backends::store(&app.settings, None).await?);
    store.spawn_connection_gauge();
    let state = app.open_state()?;
    let ctx = app.ctx(state);
    let (tx, rx) = mpsc::channel(1024);
    let reader = jsonl_io::spawn_reader(inputs, Stage::Store, tx);
    let bar = app.progress.stage("store");
    let documents = pipeline::store_records(
        store.clone(),
        ctx.clone(),
        rx,
        StoreBatching::default(),
        bar,
        None,
    )
    .await;
    reader.await.context("input reader thread")??;
    // Without a run state of documents, "complete" means: nothing of this
    // input was set aside and the input was read to its end.
    if app.stats.set_aside_total() == 0 && !app.cancel.is_cancelled() {
        let note = pipeline::replace_earlier_versions(store.as_ref(), &ctx, documents).await;
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

async fn store_from_embedded(app: &mut App) -> anyhow::Result<Exit> {
    if app.settings.neo4j_uri.is_none() {
        anyhow::bail!(
            "--from-embedded copies the embedded store to Neo4j: set --neo4j-uri or NEO4J_URI"
        );
    }
    let copied = backends::copy_embedded_to_neo4j(&app.settings, &app.stats).await?;
    app.notes.push(format!(
        "copied {copied} records from the embedded store in {} to {}",
        app.settings.data_dir.display(),
        app.settings.neo4j_uri.as_deref().unwrap_or_default()
    ));
    Ok(app.finish(false))
}

/// `kg run PATH...`.
pub async fn run(app: &mut App, paths: Vec<PathBuf>, dry_run: bool) -> anyhow::Result<Exit> {
    let state = app.open_state()?;
    let ctx = app.ctx(state.clone());
    let ingester = Arc::new(backends::ingester(&app.settings)?);
    if dry_run {
        return dry_run_run(app, ingester, paths, &state).await;
    }
    let extractor = if app.settings.llm_configured() {
        Some(Arc::new(backends::extractor(&app.settings)?))
    } else {
        app.notes.push(NO_LLM_NOTE.to_string());
        None
    };
    let embedder = Arc::new(backends::embedder(&app.settings).await?);
    let store = Arc::new(backends::store(&app.settings, embedder.dimensions()).await?);
    store.spawn_connection_gauge();
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
    let config = RunConfig {
        paths,
        concurrency: app.settings.concurrency,
        embed_batch: app.settings.embed_batch,
        store: StoreBatching::default(),
    };
    let outcome = pipeline::run(
        pipeline::Stages {
            ingester,
            extractor,
            embedder: Some(embedder),
            store: store.clone(),
        },
        config,
        ctx.clone(),
        bars,
    )
    .await;
    let note = pipeline::replace_earlier_versions(store.as_ref(), &ctx, outcome.documents).await;
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

async fn dry_run_run<I: crate::stages::Ingester>(
    app: &mut App,
    ingester: Arc<I>,
    paths: Vec<PathBuf>,
    state: &RunState,
) -> anyhow::Result<Exit> {
    let (tx, rx) = mpsc::channel(256);
    let cancel = app.cancel.clone();
    let task = tokio::spawn(async move { ingester.ingest(paths, tx, cancel).await });
    let estimate = estimate_chunks(app, rx, state).await?;
    task.await.context("ingest task")??;
    println!("{}", estimate.render(&app.settings));
    Ok(Exit::Done)
}

/// `kg search TEXT -k N [--json]`.
pub async fn search(app: &mut App, text: &str, k: usize, json: bool) -> anyhow::Result<Exit> {
    let embedder = backends::embedder(&app.settings).await?;
    let store = backends::store(&app.settings, None).await?;
    let vector = {
        use crate::stages::Embedder;
        embedder
            .embed_query(text)
            .await
            .map_err(|e| anyhow::anyhow!("embedding the query: {} ({})", e.detail, e.reason))?
    };
    let hits = store.search(&vector, k).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&hits)?);
    } else {
        print!("{}", backends::render_hits(text, &hits));
    }
    Ok(if hits.is_empty() {
        Exit::Failed
    } else {
        Exit::Done
    })
}
