//! `kg store`: records from JSON Lines (or the embedded store) into the
//! graph.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use kg_core::{Record, Stage};
use tokio::sync::mpsc;

use super::{App, Exit};
use crate::build;
use crate::jsonl_io;
use crate::lock::Resource;
use crate::pipeline::{self, stream_of, DocTracker};

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
    let state = app.open_state()?;
    let lease = app.writer_lease(&state).await?;
    lease.stop_on_loss(&app.cancel);
    replay_dead_letters(app, &writer).await;
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
        let (writer, stats) = (writer.clone(), app.stats.clone());
        // As in `kg run`: the store's time runs from the first record it
        // takes (not its first acknowledgement, a whole window later).
        let input = futures::StreamExt::inspect(stream_of(store_rx), move |_| {
            stats.touch("store");
        });
        tokio::spawn(async move { writer.write_stream(input, Some(ack_tx)).await })
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
    if let Some(reason) = lease.lost_reason() {
        app.finish(true);
        anyhow::bail!("{reason}; kg store stopped: run it again once the other kg is done");
    }
    // Without a run state of documents, "complete" means: nothing of this
    // input was set aside and the input was read to its end.
    if app.stats.set_aside_total() == 0 && !app.cancel.is_cancelled() {
        let note = pipeline::replace_earlier_versions(writer.sink(), &ctx, documents).await;
        app.notes.extend(note);
        // Descriptions from every mention, as `kg run` makes them.
        let summariser = build::summariser(&app.settings)?;
        let described = app.describe(writer.sink(), summariser.as_ref()).await;
        app.notes.extend(described);
        // Entity vectors for graph search, as `kg run` writes them, so that
        // a pipe of the stages builds the graph `kg run` builds.
        match build::embed_stage(&app.settings, &app.cancel).await {
            Ok(stage) => {
                let done = crate::entity_vectors::embed_entities(
                    &writer,
                    stage.embedder,
                    stage.cache,
                    &app.cancel,
                )
                .await?;
                tracing::info!(
                    embedded = done.embedded,
                    cached = done.cached,
                    written = done.written,
                    "entity vectors"
                );
            }
            Err(e) => app.notes.push(format!(
                "entity vectors were not written ({e}): graph search finds entities by name only \
                 until `kg store` runs with an embedder configured, or `kg run` runs"
            )),
        }
    } else if !documents.is_empty() {
        app.notes.push(
            "earlier versions of changed documents were kept, because part of this input was \
             set aside or interrupted; a complete re-run replaces them"
                .into(),
        );
    }
    lease.release().await;
    Ok(app.finish(app.cancel.is_cancelled()))
}

/// Writes again what an earlier run's store could not (its dead-letter
/// file), before the new input: batches that commit now leave the file,
/// those that fail again go to a fresh one.
pub(super) async fn replay_dead_letters(
    app: &mut App,
    writer: &kg_store::BatchWriter<kg_store::AnyStore>,
) {
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
pub(super) fn report_failed_batches(app: &mut App, report: &kg_store::WriteReport) {
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
    let lease = app.writer_lease(&*app.open_state()?).await?;
    lease.stop_on_loss(&app.cancel);
    let report = kg_store::export_embedded(&embedded, &writer)
        .await
        .map_err(|e| pipeline::StageError::failed("store", &e))?;
    if let Some(reason) = lease.lost_reason() {
        app.finish(true);
        anyhow::bail!("{reason}; the copy stopped: run it again once the other kg is done");
    }
    lease.release().await;
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
