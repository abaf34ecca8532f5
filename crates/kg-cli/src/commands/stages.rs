//! `kg ingest`, `kg extract` and `kg embed`: one stage each, JSON Lines in
//! and out.

use std::path::PathBuf;

use anyhow::Context as _;
use kg_core::{Chunk, Record, Stage};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{App, Exit, NO_LLM_NOTE};
use crate::build;
use crate::config::Settings;
use crate::jsonl_io;
use crate::lock::Resource;
use crate::pipeline::{self, stream_of, Ctx};

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
        let (bar, ctx) = (bar.clone(), ctx.clone());
        let (tx, mut rx) = mpsc::channel::<Chunk>(extractor.concurrency() * 2);
        tokio::spawn(async move {
            while let Some(c) = rx.recv().await {
                bar.add_total(1);
                // The stage's time starts when it takes its first chunk,
                // not at its first answer (as in `kg run`).
                ctx.stats.touch("extract");
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
            let mut used = extractor.progress().snapshot();
            used.cost_usd = extractor.cost(&used);
            app.stats.add_llm_usage(&used);
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
pub(super) async fn estimate_chunks(
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
            total.completion_tokens_max += e.completion_tokens_max;
            let add = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) => Some(a + b),
                (a, b) => a.or(b),
            };
            total.cost_usd = add(total.cost_usd, e.cost_usd);
            total.cost_usd_max = add(total.cost_usd_max, e.cost_usd_max);
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
        "kg --dry-run: extraction estimate (model {}, ${}/M prompt, ${}/M completion tokens)\n  chunks             {}\n  already cached     {}\n  LLM calls          {}\n  prompt tokens      ~{}\n  completion tokens  ~{} (at most {}: every answer is capped)\n  estimated cost     ~${:.4} (at most ${:.4})",
        settings.model,
        settings.input_price_per_mtok,
        settings.output_price_per_mtok,
        e.chunks,
        e.cached,
        e.chunks - e.cached,
        e.prompt_tokens,
        e.completion_tokens,
        e.completion_tokens_max,
        e.cost_usd.unwrap_or(0.0),
        e.cost_usd_max.unwrap_or(0.0)
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
        let (bar, ctx) = (bar.clone(), ctx.clone());
        // The stage's time starts when it takes its first chunk, not at its
        // first vector (a single batch would read as no time at all).
        futures::StreamExt::inspect(stream_of(chunk_rx), move |_| {
            bar.add_total(1);
            ctx.stats.touch("embed");
        })
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
