//! `kg schema suggest PATH... [--sample N]`: ingest, keep a fixed sample of
//! the chunks, extract it with the open schema (through the same extractor,
//! cache and limits as `kg run`), and print the types the LLM used as a
//! proposed `[extract.schema]` block (kg-extract's `SchemaSuggestion`).

use std::path::PathBuf;

use kg_core::Record;
use tokio::sync::mpsc;

use super::{App, Exit, NO_LLM_NOTE};
use crate::build;
use crate::lock::Resource;
use crate::pipeline::{self, stream_of};

/// `kg schema suggest`.
pub async fn schema_suggest(
    app: &mut App,
    paths: Vec<PathBuf>,
    sample: u32,
    min_chunks: u64,
    dry_run: bool,
) -> anyhow::Result<Exit> {
    if !dry_run && !app.settings.llm_configured() {
        anyhow::bail!("{NO_LLM_NOTE}");
    }
    // The suggestion is what the LLM names on its own: the open schema,
    // whatever schema is configured (and the open schema's cache entries,
    // which a later open `kg run` reuses).
    app.settings.schema = kg_extract::ExtractSchema::open();
    let config = build::ingest_config(&app.settings)?;
    let (tx, mut rx) = mpsc::channel(256);
    let ingest = tokio::spawn(kg_ingest::ingest(paths, config, tx, app.cancel.clone()));
    let mut chunks = kg_extract::ChunkSample::new(sample as usize);
    let mut set_aside = 0u64;
    while let Some(r) = rx.recv().await {
        match r {
            Record::Chunk(c) => chunks.offer(c),
            Record::SetAside(s) => {
                set_aside += 1;
                tracing::warn!(item = %s.item, reason = %s.reason, "set aside: {}", s.detail);
            }
            _ => {}
        }
    }
    ingest
        .await?
        .map_err(|e| pipeline::StageError::failed("ingest", &e))?;
    let seen = chunks.seen();
    let sampled = chunks.into_chunks();
    if sampled.is_empty() {
        anyhow::bail!(
            "no text to sample: the paths gave no chunks ({set_aside} file(s) set aside)"
        );
    }
    if dry_run {
        let (tx, rx) = mpsc::channel(sampled.len());
        for c in sampled {
            let _ = tx.send(Record::Chunk(c)).await;
        }
        drop(tx);
        let estimate = super::stages::estimate_chunks(app, rx).await?;
        println!("{}", super::render_estimate(&estimate, &app.settings));
        return Ok(Exit::Done);
    }
    let _lock = app.lock(&[Resource::ExtractCache]).await?;
    let extractor = build::extractor(&app.settings)?;
    let bar = app.progress.stage("extract");
    bar.add_total(sampled.len() as u64);
    let (chunk_tx, chunk_rx) = mpsc::channel(sampled.len());
    for c in sampled {
        let _ = chunk_tx.send(c).await;
    }
    drop(chunk_tx);
    let (out_tx, mut out_rx) = mpsc::channel(256);
    let collect = {
        let bar = bar.clone();
        tokio::spawn(async move {
            let mut suggestion = kg_extract::SchemaSuggestion::default();
            let mut failed = 0u64;
            while let Some(r) = out_rx.recv().await {
                match r {
                    Record::Extraction(x) => {
                        suggestion.add(&x);
                        bar.done(1);
                    }
                    Record::SetAside(s) => {
                        failed += 1;
                        bar.done(1);
                        tracing::warn!(item = %s.item, reason = %s.reason, "not extracted: {}", s.detail);
                    }
                    _ => {}
                }
            }
            (suggestion, failed)
        })
    };
    let result = extractor
        .run(stream_of(chunk_rx), out_tx, app.cancel.clone())
        .await;
    let (suggestion, failed) = collect.await?;
    bar.finish();
    app.progress.clear();
    let summary = result.map_err(|e| pipeline::StageError::failed("extract", &e))?;
    app.stats.add_llm_usage(&summary);
    if suggestion.chunks() == 0 {
        anyhow::bail!("no sampled chunk could be extracted ({failed} failed): nothing to suggest");
    }
    print!("{}", suggestion.to_toml(min_chunks, seen));
    eprintln!(
        "kg schema suggest: {} of {seen} chunks sampled, {} extracted ({} LLM calls, {} from the cache, {failed} failed)",
        suggestion.chunks() + failed,
        suggestion.chunks(),
        summary.llm_calls,
        summary.cache_hits,
    );
    Ok(if app.cancel.is_cancelled() {
        Exit::Failed
    } else {
        Exit::Done
    })
}
