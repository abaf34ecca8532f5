//! The subcommands: each builds its stages from the settings ([`crate::build`]),
//! wires them ([`crate::pipeline`] for `kg run`) and turns the result into an
//! exit code. One file per command family: [`stages`] (`kg ingest`, `kg
//! extract`, `kg embed`), [`store`], [`run`], [`search`], [`resolve`],
//! [`delete`] (`kg delete`, `kg prune`), [`schema`] (`kg schema suggest`).

mod ask;
mod delete;
mod resolve;
mod run;
mod schema;
mod search;
mod stages;
mod store;

pub use ask::ask;
pub use delete::{delete, prune};
pub use resolve::resolve;
pub use run::run;
pub use schema::schema_suggest;
pub use search::{search, SearchArgs};
pub use stages::{embed, extract, ingest, render_estimate};
pub use store::store;

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::lock::{DataDirLock, Resource};
use crate::logging::Progress;
use crate::pipeline::Ctx;
use crate::state::RunState;
use crate::stats::RunStats;

/// How a command ended, as the process exit code of docs/cli.md.
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
    /// Whether to wait for another kg holding a data-dir lock (else exit 1).
    pub wait_for_locks: bool,
}

impl App {
    /// The description step (joined or summarised descriptions of what is
    /// marked) with this command's settings; its summary line, if any.
    pub(crate) async fn describe<S: kg_store::GraphStore>(
        &self,
        store: &S,
        summariser: Option<&Arc<kg_extract::Summariser>>,
    ) -> Option<String> {
        crate::descriptions::step(store, summariser, &self.settings, &self.stats, &self.cancel)
            .await
    }

    pub(crate) fn ctx(&self, state: Arc<RunState>) -> Ctx {
        Ctx {
            stats: self.stats.clone(),
            state,
            cancel: self.cancel.clone(),
        }
    }

    /// Takes the data-dir locks a command needs (see [`crate::lock`]).
    pub(crate) async fn lock(&self, resources: &[Resource]) -> anyhow::Result<DataDirLock> {
        Ok(DataDirLock::acquire(
            &self.settings.data_dir,
            resources,
            self.wait_for_locks,
            &self.cancel,
        )
        .await?)
    }

    /// Takes the writer lease of the store the settings name, for this
    /// data dir (see `kg_store::lease`): waits for another kg writing the
    /// same store, or with `--no-wait` exits 1 naming it. The lease has its
    /// own store connection, so that renewals never queue behind writes.
    pub(crate) async fn writer_lease(&self, state: &RunState) -> anyhow::Result<WriterLease> {
        let store = Arc::new(crate::build::store(&self.settings).await?);
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "this host".to_owned());
        let request = kg_store::LeaseRequest {
            name: kg_store::lease::WRITER.to_owned(),
            holder: state.holder_id()?,
            note: format!(
                "kg pid {} on {host}, data dir {}",
                std::process::id(),
                self.settings.data_dir.display()
            ),
            ttl: lease_ttl(),
            wait: self.wait_for_locks,
        };
        let description = crate::build::store_description(&self.settings);
        let lease =
            kg_store::Lease::acquire(store.clone(), &description, &request, &self.cancel).await?;
        Ok(WriterLease { lease, store })
    }

    pub(crate) fn open_state(&self) -> anyhow::Result<Arc<RunState>> {
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
                llm_retries = s.llm_retries.get(),
                connection_failures = s.connection_failures.get(),
                repaired_answers = s.repaired_answers.get(),
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

/// The store's writer lease a writing command holds (see
/// [`App::writer_lease`]).
pub(crate) struct WriterLease {
    lease: kg_store::Lease,
    store: Arc<kg_store::AnyStore>,
}

impl WriterLease {
    /// Why the lease was lost, if it was: the command must stop writing.
    pub(crate) fn lost_reason(&self) -> Option<String> {
        self.lease
            .lost()
            .is_cancelled()
            .then(|| self.lease.lost_reason().unwrap_or_default())
    }

    /// Fires when the lease is lost.
    pub(crate) fn lost_token(&self) -> CancellationToken {
        self.lease.lost()
    }

    /// Cancels `cancel` (stopping the run) if the lease is lost.
    pub(crate) fn stop_on_loss(&self, cancel: &CancellationToken) {
        let (lost, cancel) = (self.lease.lost(), cancel.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = lost.cancelled() => {
                    tracing::error!("the store's writer lease was lost: stopping the run");
                    cancel.cancel();
                }
                () = cancel.cancelled() => {}
            }
        });
    }

    /// Gives the lease up (a failure only delays the next writer until the
    /// lease expires, so it is logged, not fatal).
    pub(crate) async fn release(self) {
        if let Err(e) = self.lease.release(&*self.store).await {
            tracing::warn!(
                "could not give the store's writer lease up (it expires by itself): {e}"
            );
        }
    }
}

/// The writer lease's time to live: `KG_LEASE_SECS` (whole seconds, at
/// least 1), else [`kg_store::lease::DEFAULT_TTL`].
fn lease_ttl() -> std::time::Duration {
    std::env::var("KG_LEASE_SECS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&s| s >= 1)
        .map_or(kg_store::lease::DEFAULT_TTL, std::time::Duration::from_secs)
}
