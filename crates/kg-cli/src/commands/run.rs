//! `kg run`: every stage at once, streaming.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::mpsc;

use super::stages::{estimate_chunks, render_estimate};
use super::store::replay_dead_letters;
use super::{App, Exit, NO_LLM_NOTE};
use crate::build;
use crate::lock::Resource;
use crate::pipeline::{self, RunBars};

/// `kg run PATH...`.
pub async fn run(app: &mut App, paths: Vec<PathBuf>, dry_run: bool) -> anyhow::Result<Exit> {
    let ingest = build::ingest_config(&app.settings)?;
    if dry_run {
        return dry_run_run(app, ingest, paths).await;
    }
    let _lock = app
        .lock(&[
            Resource::Store,
            Resource::ExtractCache,
            Resource::EmbedCache,
        ])
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
    let entity_embedder = (embedder.embedder.clone(), embedder.cache.clone());
    let writer = Arc::new(build::writer(&app.settings, &app.cancel).await?);
    build::spawn_connection_gauge(&writer);
    check_store(app, &ctx, &writer).await?;
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
    if !outcome.interrupted {
        // Entity vectors for graph search (docs/query.md).
        let (model, cache) = entity_embedder;
        let done =
            crate::entity_vectors::embed_entities(&writer, model, cache, &app.cancel).await?;
        tracing::info!(
            embedded = done.embedded,
            cached = done.cached,
            written = done.written,
            "entity vectors"
        );
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

/// Ties the run state to this store: a state written against another
/// store, or against this one before it was emptied, does not make this
/// run skip documents the store does not have (see `crate::state`).
async fn check_store(
    app: &mut App,
    ctx: &pipeline::Ctx,
    writer: &kg_store::BatchWriter<kg_store::AnyStore>,
) -> anyhow::Result<()> {
    use kg_store::GraphStore as _;
    let identity = writer
        .sink()
        .identity()
        .await
        .map_err(|e| pipeline::StageError::failed("store", &e))?;
    let description = build::store_description(&app.settings);
    if let crate::state::StoreMatch::Other { was, forgotten } =
        ctx.state.check_store(&identity, &description)?
    {
        if forgotten > 0 {
            let note = format!(
                "the run state described another store ({was}); {description} is new or was \
                 emptied, so the {forgotten} document(s) done before are written again, from \
                 the caches (no LLM call for a chunk answered before)"
            );
            tracing::warn!("{note}");
            app.notes.push(note);
        }
    }
    Ok(())
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
