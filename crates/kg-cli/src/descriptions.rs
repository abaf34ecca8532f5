//! The description step: every entity and relation whose descriptions
//! changed since its description was last made (the store marks them: see
//! kg-store's `descriptions` module) gets it made again, from the distinct
//! descriptions of the chunks that still mention it: up to
//! `descriptions.max_distinct` of them joined on lines, past it one
//! summary by kg-extract's [`Summariser`] (cached: an unchanged set is
//! skipped by the store's key before any lookup, and a set summarised
//! before costs no call).
//!
//! It runs over the marked ones only, so its cost follows what changed,
//! not the graph: after `kg run` and `kg store` wrote (before the entity
//! vectors, so they embed the new descriptions) and again after
//! resolution merged, after `kg resolve`, and after `kg delete`/`kg prune`.
//! Memory is one page of the store's. A summary that fails keeps the
//! joined descriptions and the mark (the next step tries again), and is
//! reported; the graph is never left without a description it had.

use std::sync::Arc;

use futures::StreamExt as _;
use kg_extract::summarise::{join_descriptions, needs_summary, DescriptionInput};
use kg_extract::{Summariser, Summary, SummaryStats};
use kg_store::{Described, DescriptionSet, DescriptionUpdate, GraphStore};
use tokio_util::sync::CancellationToken;

/// Entities or relations read per page.
const PAGE: usize = 256;

/// What one description step did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DescriptionsDone {
    /// Entities whose description was made again.
    pub entities: u64,
    /// Relations whose description was made again.
    pub relations: u64,
    /// Of all those, the ones whose set had not changed (nothing to do).
    pub unchanged: u64,
    /// Descriptions joined (up to the bound).
    pub joined: u64,
    /// Summaries asked of the LLM (made or cached).
    pub summaries: u64,
    /// Of those, answered from the cache.
    pub cached: u64,
    /// Summaries that failed: joined descriptions kept, retried next time.
    pub failed: u64,
    /// Past the bound but no LLM configured: joined for now.
    pub deferred: u64,
    /// The first failure's error.
    pub first_failure: Option<String>,
    /// The summariser's calls and tokens in this step.
    pub llm: SummaryStats,
    /// Whether `cancel` stopped it before the end.
    pub interrupted: bool,
}

impl DescriptionsDone {
    /// Whether it did anything worth a line in the summary.
    pub fn is_empty(&self) -> bool {
        self.entities + self.relations == 0 && !self.interrupted
    }

    /// One line for the summary.
    pub fn note(&self) -> String {
        let mut s = format!(
            "descriptions made again for {} entities and {} relations: {} joined, {} summaries \
             ({} by the LLM, {} cached; {} LLM calls, {} prompt + {} completion tokens)",
            self.entities,
            self.relations,
            self.joined,
            self.summaries,
            self.summaries.saturating_sub(self.cached),
            self.cached,
            self.llm.llm_calls,
            self.llm.prompt_tokens,
            self.llm.completion_tokens
        );
        if self.failed > 0 {
            s.push_str(&format!(
                "; {} summaries failed and kept the joined descriptions, retried next time \
                 (first: {})",
                self.failed,
                self.first_failure.as_deref().unwrap_or("?")
            ));
        }
        if self.deferred > 0 {
            s.push_str(&format!(
                "; {} past the bound were joined: no LLM is configured to summarise them",
                self.deferred
            ));
        }
        if self.interrupted {
            s.push_str("; interrupted: the next run finishes it");
        }
        s
    }
}

fn minus(a: SummaryStats, b: SummaryStats) -> SummaryStats {
    SummaryStats {
        made: a.made.saturating_sub(b.made),
        cached: a.cached.saturating_sub(b.cached),
        failed: a.failed.saturating_sub(b.failed),
        llm_calls: a.llm_calls.saturating_sub(b.llm_calls),
        prompt_tokens: a.prompt_tokens.saturating_sub(b.prompt_tokens),
        completion_tokens: a.completion_tokens.saturating_sub(b.completion_tokens),
    }
}

/// What becomes of one set.
enum Outcome {
    Unchanged,
    Joined,
    Summarised { cached: bool },
    Failed(String),
    Deferred,
}

async fn decide(
    set: &DescriptionSet,
    bound: usize,
    summariser: Option<&Summariser>,
    cancel: &CancellationToken,
) -> (DescriptionUpdate, Outcome) {
    let update = |description: String, key: Option<String>| DescriptionUpdate {
        target: set.target.clone(),
        description,
        key,
    };
    if set.unchanged() || set.distinct == 0 {
        // Nothing new (or nothing said at all): the description stands.
        return (
            update(set.description.clone(), Some(set.key.clone())),
            Outcome::Unchanged,
        );
    }
    let joined = || join_descriptions(&set.descriptions);
    if !needs_summary(set.distinct, bound) {
        return (update(joined(), Some(set.key.clone())), Outcome::Joined);
    }
    let Some(summariser) = summariser else {
        return (update(joined(), None), Outcome::Deferred);
    };
    let input = DescriptionInput {
        kind: &set.kind,
        name: &set.name,
        descriptions: &set.descriptions,
        set_key: &set.key,
    };
    match summariser.summarise(&input, cancel).await {
        Summary::Made { text, cached } => (
            update(text, Some(set.key.clone())),
            Outcome::Summarised { cached },
        ),
        Summary::Failed { joined, error } => (update(joined, None), Outcome::Failed(error)),
    }
}

/// Makes the description of every marked entity, then relation, again
/// (see the module docs). `bound` is `descriptions.max_distinct`; without
/// a summariser, sets past it are joined and stay marked. `Err` only when
/// the store cannot be read or written.
pub async fn refresh<S: GraphStore>(
    store: &S,
    summariser: Option<&Arc<Summariser>>,
    bound: usize,
    concurrency: usize,
    cancel: &CancellationToken,
) -> anyhow::Result<DescriptionsDone> {
    let mut done = DescriptionsDone::default();
    let before = summariser.map(|s| s.stats()).unwrap_or_default();
    let summariser = summariser.map(|s| &**s);
    'kinds: for relations in [false, true] {
        let mut after: Option<Described> = None;
        loop {
            if cancel.is_cancelled() {
                done.interrupted = true;
                break 'kinds;
            }
            let page = store
                .stale_descriptions(relations, after.as_ref(), PAGE)
                .await
                .map_err(|e| {
                    anyhow::anyhow!("reading descriptions: {}", crate::logging::cause_chain(&e))
                })?;
            let Some(last) = page.last() else { break };
            after = Some(last.target.clone());
            let decided: Vec<(DescriptionUpdate, Outcome)> = futures::stream::iter(&page)
                .map(|set| decide(set, bound, summariser, cancel))
                .buffered(concurrency.max(1))
                .collect()
                .await;
            let mut updates = Vec::with_capacity(decided.len());
            for (update, outcome) in decided {
                match outcome {
                    Outcome::Unchanged => done.unchanged += 1,
                    Outcome::Joined => done.joined += 1,
                    Outcome::Summarised { cached } => {
                        done.summaries += 1;
                        done.cached += u64::from(cached);
                    }
                    Outcome::Failed(e) => {
                        tracing::warn!(target = ?update.target, "summary failed: {e}");
                        done.failed += 1;
                        done.first_failure.get_or_insert(e);
                    }
                    Outcome::Deferred => done.deferred += 1,
                }
                updates.push(update);
            }
            let n = updates.len() as u64;
            store.set_descriptions(&updates).await.map_err(|e| {
                anyhow::anyhow!("writing descriptions: {}", crate::logging::cause_chain(&e))
            })?;
            if relations {
                done.relations += n;
            } else {
                done.entities += n;
            }
            tracing::info!(
                entities = done.entities,
                relations = done.relations,
                summaries = done.summaries,
                cached = done.cached,
                failed = done.failed,
                "descriptions"
            );
        }
    }
    if let Some(s) = summariser {
        done.llm = minus(s.stats(), before);
    }
    Ok(done)
}

/// [`refresh`] with the settings' bound and concurrency, as a command runs
/// it: the line for the summary, if it did anything; a store failure is a
/// line too (the marks stay, so the next step does it), never a failed
/// command.
pub async fn step<S: GraphStore>(
    store: &S,
    summariser: Option<&Arc<Summariser>>,
    settings: &crate::config::Settings,
    stats: &crate::stats::RunStats,
    cancel: &CancellationToken,
) -> Option<String> {
    match refresh(
        store,
        summariser,
        settings.max_distinct_descriptions,
        settings.concurrency,
        cancel,
    )
    .await
    {
        Ok(done) if done.is_empty() => None,
        Ok(done) => {
            // The summaries' calls, tokens and cost count in the run's
            // totals, as the extraction's do.
            let cost = summariser.and_then(|s| s.cost(&done.llm));
            stats.add_summary_usage(&done.llm, cost);
            Some(done.note())
        }
        Err(e) => Some(format!(
            "descriptions were not made again ({}): the next run or `kg resolve` does it",
            crate::logging::cause_chain(e.as_ref())
        )),
    }
}
