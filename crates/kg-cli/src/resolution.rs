//! Entity resolution over the store: kg-resolve's plan from the store's
//! entity stream, and the plan applied one group per transaction. Used by
//! `kg resolve` (the whole graph) and as the last step of `kg run` (the
//! entities the run stored, against the whole graph).

use std::collections::HashMap;

use anyhow::Context as _;
use kg_resolve::{Candidate, Plan, ResolveConfig, Resolver};
use kg_store::{EntityMerge, EntityRow, GraphStore};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Which entities count: all, or those for which the function says true
/// (a pair counts when one of its two does).
pub type Touched = Option<Box<dyn Fn(&str) -> bool + Send>>;

/// Streams every entity of `store` through a [`Resolver`] (blocking and
/// matching on a blocking thread, its sort spilling to temporary files
/// past its buffer), reads the vectors of the matched entities, and
/// returns the plan.
pub async fn plan<S: GraphStore>(
    store: &S,
    config: &ResolveConfig,
    touched: Touched,
) -> anyhow::Result<Plan> {
    let (tx, mut rx) = mpsc::channel::<EntityRow>(4_096);
    let mut resolver = Resolver::new(config.clone());
    if let Some(t) = touched {
        resolver.restrict_to(t);
    }
    let matcher = tokio::task::spawn_blocking(move || {
        while let Some(row) = rx.blocking_recv() {
            resolver.push(Candidate {
                id: row.id,
                entity_type: row.entity_type,
                name: row.name,
                mentions: row.mentions,
            })?;
        }
        resolver.finish()
    });
    let streamed = store.stream_entities(tx).await;
    let matches = matcher
        .await
        .context("resolution worker")?
        .context("entity resolution")?;
    streamed.context("reading entities for resolution")?;
    let ids: Vec<String> = matches.ids().map(str::to_owned).collect();
    let vectors = if ids.is_empty() {
        HashMap::new()
    } else {
        store
            .entity_vectors(&ids)
            .await
            .context("reading entity vectors")?
    };
    Ok(matches.plan(config, &vectors))
}

/// What applying a plan did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Groups merged.
    pub groups: u64,
    /// Entities merged away.
    pub entities: u64,
    /// `MENTIONS` moved.
    pub mentions: u64,
    /// Relationships moved or united.
    pub relations: u64,
    /// Groups that failed (rolled back, whole), with why.
    pub failed: Vec<(String, String)>,
    /// Whether `cancel` stopped it before the end.
    pub interrupted: bool,
}

/// Applies `plan`, one transaction per group, until `cancel` fires.
pub async fn apply<S: GraphStore>(store: &S, plan: &Plan, cancel: &CancellationToken) -> Applied {
    let mut out = Applied::default();
    for g in &plan.groups {
        if cancel.is_cancelled() {
            out.interrupted = true;
            break;
        }
        let merge = EntityMerge {
            keep: g.keep.clone(),
            name: g.name.clone(),
            merged: g.merged.iter().map(|m| m.0.clone()).collect(),
        };
        match store.merge_entities(&merge).await {
            Ok(m) => {
                out.groups += u64::from(m.entities > 0);
                out.entities += m.entities;
                out.mentions += m.mentions;
                out.relations += m.relations;
            }
            Err(e) => out
                .failed
                .push((g.keep.clone(), crate::logging::cause_chain(&e))),
        }
    }
    out
}

/// The plan as text: one block per group, the kept name first.
pub fn render_plan(plan: &Plan) -> String {
    let mut s = String::new();
    for g in &plan.groups {
        s.push_str(&format!(
            "{} {:?} ({}) score {:.2}\n",
            g.entity_type,
            g.name,
            g.keep,
            g.score()
        ));
        for (id, name, score) in &g.merged {
            s.push_str(&format!("  <- {name:?} ({id}) {score:.2}\n"));
        }
    }
    s.push_str(&format!(
        "{} group(s), {} entities to merge away, of {} read ({} comparisons)\n",
        plan.groups.len(),
        plan.merged_entities(),
        plan.entities,
        plan.comparisons
    ));
    if plan.skipped_groups > 0 {
        s.push_str(&format!(
            "{} group(s) larger than {} members left alone\n",
            plan.skipped_groups,
            ResolveConfig::default().max_group
        ));
    }
    s
}

/// One line for the summary.
pub fn note(applied: &Applied) -> String {
    let mut s = format!(
        "resolution merged {} entities into {} ({} mentions and {} relations moved)",
        applied.entities, applied.groups, applied.mentions, applied.relations
    );
    if !applied.failed.is_empty() {
        s.push_str(&format!(
            "; {} group(s) failed and were left whole (first: {} {}); `kg resolve` retries",
            applied.failed.len(),
            applied.failed[0].0,
            applied.failed[0].1
        ));
    }
    if applied.interrupted {
        s.push_str("; interrupted: `kg resolve` finishes it");
    }
    s
}
