//! `kg resolve [--dry-run]`: near-duplicate entities merged over the whole
//! graph.

use super::{App, Exit};
use crate::build;
use crate::lock::Resource;
use crate::resolution;

/// `kg resolve`.
pub async fn resolve(app: &mut App, dry_run: bool) -> anyhow::Result<Exit> {
    let _lock = app.lock(&[Resource::Store]).await?;
    let store = build::store(&app.settings).await?;
    let config = app.settings.resolve.clone();
    if config.mode != kg_resolve::Mode::Fuzzy {
        eprintln!(
            "resolve.mode is {:?}: nothing beyond the exact keys to merge",
            config.mode
        );
        return Ok(Exit::Done);
    }
    let plan = resolution::plan(&store, &config, None).await?;
    if dry_run {
        print!("{}", resolution::render_plan(&plan));
        return Ok(Exit::Done);
    }
    let state = app.open_state()?;
    let lease = app.writer_lease(&state).await?;
    lease.stop_on_loss(&app.cancel);
    let applied = resolution::apply(&store, &plan, &app.cancel).await;
    // The kept entities' descriptions, from all their mentions; and any
    // an earlier step left to do.
    if lease.lost_reason().is_none() {
        let summariser = build::summariser(&app.settings)?;
        let described = app.describe(&store, summariser.as_ref()).await;
        if let Some(line) = described {
            eprintln!("{line}");
        }
    }
    let lost = lease.lost_reason();
    lease.release().await;
    eprintln!("{}", resolution::note(&applied));
    if let Some(reason) = lost {
        anyhow::bail!(
            "{reason}; the merges stopped: run kg resolve again once the other kg is done"
        );
    }
    Ok(if applied.interrupted || !applied.failed.is_empty() {
        Exit::Failed
    } else {
        Exit::Done
    })
}
