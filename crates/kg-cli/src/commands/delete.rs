//! `kg delete` and `kg prune`: documents out of the graph and the run
//! state.
//!
//! A document's `source` is its file's canonical absolute path (as ingest
//! recorded it), so a path on the command line is made absolute and, when
//! it still exists, canonical; a folder stands for every document whose
//! source lies under it. Each document goes in one transaction
//! (`GraphStore::remove_document`: its chunks with their embeddings and
//! links, the MENTIONS, and the entities and relations only it supported),
//! after the run state forgot it, so that a later run adds the file again
//! if it comes back.

use std::path::{Path, PathBuf};

use kg_core::DocumentId;
use kg_store::{CurrentDocument, GraphStore};

use super::{App, Exit};
use crate::build;
use crate::lock::Resource;

/// The source prefix a path on the command line stands for, and whether
/// it is a folder (then every source under it matches).
fn source_of(path: &Path) -> anyhow::Result<(String, bool)> {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    let resolved: PathBuf = abs.canonicalize().unwrap_or(abs);
    let is_dir = resolved.is_dir();
    Ok((resolved.display().to_string(), is_dir))
}

/// The documents `path` stands for.
async fn documents_at<S: GraphStore>(
    store: &S,
    path: &Path,
) -> anyhow::Result<Vec<CurrentDocument>> {
    let (source, is_dir) = source_of(path)?;
    let prefix = if is_dir {
        format!("{}{}", source.trim_end_matches('/'), '/')
    } else {
        source.clone()
    };
    let docs = store.documents_under(&prefix).await?;
    Ok(docs
        .into_iter()
        .filter(|d| is_dir || d.source == source || d.source.starts_with(&format!("{source}/")))
        .collect())
}

/// Forgets and removes `docs` (or, dry, lists them).
async fn remove(app: &mut App, docs: Vec<CurrentDocument>, dry_run: bool) -> anyhow::Result<Exit> {
    let mut docs = docs;
    docs.sort_by(|a, b| (&a.source, &a.id).cmp(&(&b.source, &b.id)));
    docs.dedup();
    if dry_run {
        for d in &docs {
            println!("would remove {} {}", d.id, d.source);
        }
        println!("{} document(s) would be removed", docs.len());
        return Ok(Exit::Done);
    }
    let store = build::store(&app.settings).await?;
    let state = app.open_state()?;
    let lease = app.writer_lease(&state).await?;
    let lost = lease.lost_token();
    let (mut n, mut chunks, mut entities, mut relations) = (0u64, 0u64, 0u64, 0u64);
    let mut failed = Vec::new();
    for d in &docs {
        if app.cancel.is_cancelled() || lost.is_cancelled() {
            break;
        }
        // Forget first: a document the state still called done after its
        // graph was gone would be skipped if the file came back.
        state.forget_document(&d.id)?;
        match store.remove_document(&d.id).await {
            Ok(r) => {
                n += 1;
                chunks += r.chunks;
                entities += r.entities;
                relations += r.relations;
                println!("removed {} {}", d.id, d.source);
            }
            Err(e) => failed.push(format!("{}: {}", d.source, crate::logging::cause_chain(&e))),
        }
    }
    // What the removed chunks said is gone: the descriptions of what
    // they mentioned are made again from the mentions left.
    let described = if lost.is_cancelled() {
        None
    } else {
        let summariser = build::summariser(&app.settings)?;
        app.describe(&store, summariser.as_ref()).await
    };
    let lost = lease.lost_reason();
    lease.release().await;
    eprintln!(
        "removed {n} document(s): {chunks} chunks, {entities} entities and {relations} relations \
         no longer supported"
    );
    if let Some(line) = described {
        eprintln!("{line}");
    }
    if let Some(reason) = lost {
        anyhow::bail!("{reason}; the removal stopped: run it again once the other kg is done");
    }
    for f in &failed {
        eprintln!("kg: not removed (left whole): {f}");
    }
    Ok(if failed.is_empty() && !app.cancel.is_cancelled() {
        Exit::Done
    } else {
        Exit::Failed
    })
}

/// `kg delete PATH... [--document-id ID...] [--dry-run]`.
pub async fn delete(
    app: &mut App,
    paths: Vec<PathBuf>,
    ids: Vec<String>,
    dry_run: bool,
) -> anyhow::Result<Exit> {
    let _lock = app.lock(&[Resource::Store]).await?;
    let store = build::store(&app.settings).await?;
    let mut docs = Vec::new();
    for p in &paths {
        let found = documents_at(&store, p).await?;
        if found.is_empty() {
            eprintln!("kg: no document in the graph comes from {}", p.display());
        }
        docs.extend(found);
    }
    if !ids.is_empty() {
        let all = store.documents_under("").await?;
        for id in ids {
            match all.iter().find(|d| d.id.as_str() == id) {
                Some(d) => docs.push(d.clone()),
                None => {
                    eprintln!("kg: no document {id} in the graph");
                    docs.push(CurrentDocument {
                        source: String::new(),
                        id: DocumentId::from_raw(id),
                    });
                }
            }
        }
    }
    drop(store);
    remove(app, docs, dry_run).await
}

/// `kg prune PATH... [--dry-run]`: the documents under these folders
/// whose source file is gone.
pub async fn prune(app: &mut App, paths: Vec<PathBuf>, dry_run: bool) -> anyhow::Result<Exit> {
    let _lock = app.lock(&[Resource::Store]).await?;
    let store = build::store(&app.settings).await?;
    let mut docs = Vec::new();
    for p in &paths {
        for d in documents_at(&store, p).await? {
            if !Path::new(&d.source).exists() {
                docs.push(d);
            }
        }
    }
    drop(store);
    remove(app, docs, dry_run).await
}
