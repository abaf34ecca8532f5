//! The subcommands: each builds its stages from the settings ([`crate::build`]),
//! wires them ([`crate::pipeline`] for `kg run`) and turns the result into an
//! exit code. One file per command family: [`stages`] (`kg ingest`, `kg
//! extract`, `kg embed`), [`store`], [`run`], [`search`].

mod ask;
mod run;
mod search;
mod stages;
mod store;

pub use ask::ask;
pub use run::run;
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
