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
    let summariser = build::summariser(&app.settings)?;
    let embedder = build::embed_stage(&app.settings, &app.cancel).await?;
    let entity_embedder = (embedder.embedder.clone(), embedder.cache.clone());
    let writer = Arc::new(build::writer(&app.settings, &app.cancel).await?);
    build::spawn_connection_gauge(&writer);
    check_store(app, &ctx, &writer).await?;
    let lease = app.writer_lease(&ctx.state).await?;
    lease.stop_on_loss(&app.cancel);
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
    if let Some(reason) = lease.lost_reason() {
        // Another kg writes the store now: removing earlier versions could
        // race it, so nothing more is written.
        app.finish(true);
        anyhow::bail!(
            "{reason}; the run stopped ({} document(s) not finished): run it again once the \
             other kg is done (nothing done so far is repeated)",
            outcome.unfinished_documents
        );
    }
    let note = pipeline::replace_earlier_versions(writer.sink(), &ctx, outcome.documents).await;
    app.notes.extend(note);
    let mut vectors = Ok(());
    if outcome.error.is_none() && !outcome.interrupted {
        // Descriptions made from every mention (summarised past the bound)
        // before the entity vectors embed them.
        let described = app.describe(writer.sink(), summariser.as_ref()).await;
        app.notes.extend(described);
        // Entity vectors for graph search (docs/query.md), written while
        // the lease is still held and before resolution, which compares
        // them: `kg run` resolves on the graph `kg resolve` would see.
        let (model, cache) = entity_embedder;
        vectors = crate::entity_vectors::embed_entities(&writer, model, cache, &app.cancel)
            .await
            .map(|done| {
                tracing::info!(
                    embedded = done.embedded,
                    cached = done.cached,
                    written = done.written,
                    "entity vectors"
                );
            });
        resolve_touched(app, writer.sink()).await;
        // Merges marked their kept entities: their descriptions again.
        let described = app.describe(writer.sink(), summariser.as_ref()).await;
        app.notes.extend(described);
    }
    lease.release().await;
    if let Some(e) = outcome.error {
        app.finish(true);
        return Err(e.into());
    }
    vectors?;
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

/// The resolution step: the entities this run stored against the whole
/// graph (`resolve.mode = fuzzy`, the default), one transaction per merge.
/// A failure is a note, not a failed run: the graph is whole either way,
/// and `kg resolve` does it again.
async fn resolve_touched(app: &mut App, store: &kg_store::AnyStore) {
    let config = app.settings.resolve.clone();
    if config.mode != kg_resolve::Mode::Fuzzy || app.stats.distinct_counts().0 == 0 {
        return;
    }
    let stats = app.stats.clone();
    let touched: crate::resolution::Touched =
        Some(Box::new(move |id: &str| stats.stored_entity(id)));
    match crate::resolution::plan(store, &config, touched).await {
        Ok(plan) if plan.groups.is_empty() => {}
        Ok(plan) => {
            let applied = crate::resolution::apply(store, &plan, &app.cancel).await;
            app.notes.push(crate::resolution::note(&applied));
        }
        Err(e) => app.notes.push(format!(
            "entity resolution did not run ({}); `kg resolve` runs it",
            crate::logging::cause_chain(e.as_ref())
        )),
    }
}
