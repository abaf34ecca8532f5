//! The extraction run: chunks in, extractions (or set-asides) out.
//!
//! Each chunk is one work item of a [`kg_core::pool::WorkerPool`]; a worker
//! looks the chunk up in the cache, and on a miss makes the call through
//! three gates, in order: the request/token budgets
//! ([`kg_core::ratelimit::RateLimiter`]), the adaptive concurrency limit
//! ([`kg_core::adaptive::AdaptiveConcurrency`]), then the HTTP call itself,
//! all inside the retry policy ([`kg_core::retry::RetryPolicy`]). A chunk
//! ends as an [`Extraction`] or a [`SetAside`] with a reason code; a 401,
//! 403 or 404 instead stops the whole run and [`Extractor::run`] returns it
//! as an `Err`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use kg_core::adaptive::AdaptiveConcurrency;
use kg_core::pool::{Closed, Outcome, PoolConfig, WorkerPool};
use kg_core::ratelimit::RateLimiter;
use kg_core::retry::{GaveUp, RetryFailure};
use kg_core::{
    content_hash, normalise_text, Chunk, Extraction, Record, SetAside, SetAsideReason, Stage,
};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::answer::{parse_answer, validate};
use crate::cache::ResponseCache;
use crate::client::{CallError, ChatClient};
use crate::config::{AnswerFormat, ExtractConfig};
use crate::prompt::{answer_schema, system_prompt, RequestTemplate, PROMPT_VERSION};
use crate::ExtractError;

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        #[derive(Debug, Default)]
        struct Counters { $($name: AtomicU64,)* }

        /// Counts of an extraction run (or, from [`ExtractProgress`], of an
        /// extractor's whole life so far).
        #[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
        pub struct ExtractSummary {
            $($(#[$doc])* pub $name: u64,)*
            /// Cost in US dollars from the price table; `None` for a model
            /// without a price.
            pub cost_usd: Option<f64>,
            /// Wall-clock time of the run.
            pub elapsed: Duration,
            /// The adaptive concurrency limit at the end.
            pub final_concurrency: usize,
        }

        impl Counters {
            fn snapshot(&self) -> ExtractSummary {
                ExtractSummary {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                    ..ExtractSummary::default()
                }
            }
        }

        impl ExtractSummary {
            /// The counts of `self` minus those of `before` (a run's share
            /// of the extractor's lifetime counters); cost, elapsed time and
            /// concurrency are kept from `self`.
            pub fn minus(mut self, before: &ExtractSummary) -> Self {
                $(self.$name -= before.$name;)*
                self
            }
        }
    };
}

counters!(
    /// Chunks read from the input.
    chunks,
    /// Chunks that ended as an extraction.
    extracted,
    /// Chunks set aside (failed, or handed back on cancellation).
    set_aside,
    /// Of those, chunks handed back unstarted because the run was cancelled.
    cancelled,
    /// Chunks answered from the cache, without a call.
    cache_hits,
    /// HTTP calls made.
    llm_calls,
    /// Retries (calls beyond the first per chunk).
    retries,
    /// 429 answers.
    rate_limited,
    /// Calls that timed out.
    timeouts,
    /// 5xx answers.
    server_errors,
    /// Connection errors and cut answers.
    connection_errors,
    /// Answers that were empty, not JSON, truncated or off schema.
    invalid_answers,
    /// Prompt tokens, from `usage` (estimated where it was missing).
    prompt_tokens,
    /// Completion tokens, from `usage` (estimated where it was missing).
    completion_tokens,
    /// Answers without `usage`, whose tokens were estimated.
    usage_missing,
    /// Entities in the extractions (before cross-chunk resolution).
    entities,
    /// Relations in the extractions.
    relations,
    /// Entities rejected for an unsafe, reserved or off-schema type.
    rejected_entities,
    /// Relations rejected for an unsafe or off-schema type.
    rejected_relations,
    /// Relations dropped because an endpoint was not an entity of the answer.
    dropped_relations,
    /// Answer entries that were not objects or had no name.
    malformed_entries,
);

/// Live counters for a progress bar; cheap to clone, readable any time.
#[derive(Debug, Clone, Default)]
pub struct ExtractProgress(Arc<Counters>);

impl ExtractProgress {
    /// The counters now (lifetime totals of the extractor).
    pub fn snapshot(&self) -> ExtractSummary {
        self.0.snapshot()
    }

    fn add(&self, field: fn(&Counters) -> &AtomicU64, n: u64) {
        field(&self.0).fetch_add(n, Ordering::Relaxed);
    }
}

/// An estimate of what a run would cost, before spending anything.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct CostEstimate {
    /// Chunks considered.
    pub chunks: u64,
    /// Of those, chunks the cache already answers (free).
    pub cached: u64,
    /// Prompt tokens of the calls still to make (tiktoken count).
    pub prompt_tokens: u64,
    /// Completion tokens expected (a heuristic: half the chunk's tokens
    /// plus 40 per call).
    pub completion_tokens: u64,
    /// Cost in US dollars, `None` for a model without a price.
    pub cost_usd: Option<f64>,
}

struct Inner {
    config: ExtractConfig,
    client: ChatClient,
    template: RequestTemplate,
    cache: Option<ResponseCache>,
    limiter: RateLimiter,
    concurrency: AdaptiveConcurrency,
    json_schema: AtomicBool,
    progress: ExtractProgress,
    schema_fingerprint: String,
}

/// Per-run state shared by the workers.
struct RunCtx {
    cancel: CancellationToken,
    fatal: Mutex<Option<ExtractError>>,
}

/// Extracts entities and relations from chunks (see the crate docs).
#[derive(Clone)]
pub struct Extractor(Arc<Inner>);

impl std::fmt::Debug for Extractor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extractor")
            .field("endpoint", &self.0.config.endpoint)
            .finish_non_exhaustive()
    }
}

impl Extractor {
    /// Validates `config`, builds the HTTP client and opens the cache.
    pub fn new(config: ExtractConfig) -> Result<Self, ExtractError> {
        config.validate()?;
        let client = ChatClient::new(&config.endpoint)?;
        let cache = config
            .cache_dir
            .as_deref()
            .map(ResponseCache::open)
            .transpose()?;
        let template = RequestTemplate {
            model: config.endpoint.model.clone(),
            system: system_prompt(&config.schema),
            schema: answer_schema(&config.schema),
            temperature: config.temperature,
            max_tokens: config.max_completion_tokens,
        };
        let concurrency = AdaptiveConcurrency::new(1, config.concurrency, 0.5)
            .map_err(|e| ExtractError::Config(e.to_string()))?;
        Ok(Self(Arc::new(Inner {
            limiter: RateLimiter::new(config.rate_limits),
            json_schema: AtomicBool::new(config.answer_format != AnswerFormat::JsonObject),
            schema_fingerprint: config.schema.fingerprint(),
            client,
            template,
            cache,
            concurrency,
            progress: ExtractProgress::default(),
            config,
        })))
    }

    /// Live counters, for a progress bar.
    pub fn progress(&self) -> ExtractProgress {
        self.0.progress.clone()
    }

    /// The model asked.
    pub fn model(&self) -> &str {
        &self.0.config.endpoint.model
    }

    /// The version of what is asked: the prompt's version, plus a hash of
    /// the schema when it is not the open one. A document done under
    /// another version is extracted again (answers are cached under the
    /// schema too, so only what the new schema changes costs calls).
    pub fn prompt_version(&self) -> String {
        if self.0.config.schema == crate::ExtractSchema::open() {
            return PROMPT_VERSION.to_string();
        }
        let schema = content_hash(&[self.0.schema_fingerprint.as_bytes()]);
        format!(
            "{PROMPT_VERSION}+{}",
            schema.get(..8).unwrap_or(schema.as_str())
        )
    }

    /// The most LLM calls in flight.
    pub fn concurrency(&self) -> usize {
        self.0.config.concurrency
    }

    /// The cache key of `chunk`: model, prompt version, schema and the
    /// chunk's normalised text.
    pub fn cache_key(&self, chunk: &Chunk) -> String {
        self.0.cache_key(chunk)
    }

    /// Estimates tokens and cost of extracting `chunks` with tiktoken,
    /// without any call; chunks the cache answers cost nothing.
    pub fn estimate<'a>(
        &self,
        chunks: impl IntoIterator<Item = &'a Chunk>,
    ) -> Result<CostEstimate, ExtractError> {
        // Models tiktoken does not know (Ollama, vLLM, llama.cpp names) are
        // estimated with cl100k, a close enough count for a cost estimate.
        let bpe: &tiktoken_rs::CoreBPE = tiktoken_rs::bpe_for_model(&self.0.config.endpoint.model)
            .unwrap_or_else(|_| tiktoken_rs::cl100k_base_singleton());
        // Each message costs a few tokens of framing besides its content.
        let system = bpe
            .encode_with_special_tokens(&self.0.template.system)
            .len() as u64
            + 8;
        let mut est = CostEstimate::default();
        for chunk in chunks {
            est.chunks += 1;
            if self
                .0
                .cache
                .as_ref()
                .is_some_and(|c| c.contains(&self.cache_key(chunk)))
            {
                est.cached += 1;
                continue;
            }
            let user = crate::prompt::user_message(&chunk.text);
            let user_tokens = bpe.encode_with_special_tokens(&user).len() as u64;
            est.prompt_tokens += system + user_tokens;
            est.completion_tokens += user_tokens / 2 + 40;
        }
        est.cost_usd = self.0.config.prices.cost(
            &self.0.config.endpoint.model,
            est.prompt_tokens,
            est.completion_tokens,
        );
        Ok(est)
    }

    /// Extracts every chunk of `chunks`, sending one [`Record::Extraction`]
    /// or [`Record::SetAside`] per chunk to `out` as soon as it is done.
    ///
    /// Run one `run` at a time per extractor: the summary is the difference
    /// of the extractor's lifetime counters over the run.
    ///
    /// Returns the run's summary; `Err` for a fatal error (a refused key,
    /// a wrong URL or model: stops at the first call), or when `out` is
    /// closed. When `cancel` fires, calls in flight finish and every chunk
    /// not started is set aside with reason `cancelled`.
    pub async fn run<S>(
        &self,
        chunks: S,
        out: mpsc::Sender<Record>,
        cancel: CancellationToken,
    ) -> Result<ExtractSummary, ExtractError>
    where
        S: Stream<Item = Chunk>,
    {
        let started = Instant::now();
        let before = self.0.progress.snapshot();
        let ctx = Arc::new(RunCtx {
            cancel: cancel.child_token(),
            fatal: Mutex::new(None),
        });
        let pool = PoolConfig::new(self.0.config.worker_count())
            .map_err(|e| ExtractError::Config(e.to_string()))?;
        let (inner, work_ctx) = (Arc::clone(&self.0), Arc::clone(&ctx));
        let (input, mut output) =
            WorkerPool::start(&pool, ctx.cancel.clone(), move |chunk: Chunk| {
                let (inner, ctx) = (Arc::clone(&inner), Arc::clone(&work_ctx));
                async move { inner.extract_chunk(chunk, &ctx).await }
            });
        let progress = self.0.progress.clone();
        let sent = AtomicU64::new(0);
        let out_closed = AtomicBool::new(false);
        let deliver = |record: Record| {
            let (out, sent, out_closed, ctx) = (&out, &sent, &out_closed, &ctx);
            async move {
                if out.send(record).await.is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                } else if !out_closed.swap(true, Ordering::Relaxed) {
                    ctx.cancel.cancel();
                }
            }
        };
        let produce = async {
            let mut chunks = std::pin::pin!(chunks);
            loop {
                let next = tokio::select! {
                    biased;
                    () = ctx.cancel.cancelled() => None,
                    next = chunks.next() => next,
                };
                let Some(chunk) = next else { break };
                progress.add(|c| &c.chunks, 1);
                if let Err(Closed(chunk)) = input.submit(chunk).await {
                    deliver(Record::SetAside(self.0.cancelled(&chunk))).await;
                    break;
                }
            }
            drop(input);
        };
        let consume = async {
            while let Some(outcome) = output.recv().await {
                let record = match outcome {
                    Outcome::Done(x) => Record::Extraction(x),
                    Outcome::Failed(s) => Record::SetAside(s),
                    Outcome::Returned(chunk) => Record::SetAside(self.0.cancelled(&chunk)),
                };
                deliver(record).await;
            }
        };
        tokio::join!(produce, consume);
        let fatal = ctx.fatal.lock().ok().and_then(|mut f| f.take());
        if let Some(e) = fatal {
            return Err(e);
        }
        if out_closed.load(Ordering::Relaxed) {
            return Err(ExtractError::OutputClosed {
                sent: sent.load(Ordering::Relaxed),
            });
        }
        let mut summary = self.0.progress.snapshot().minus(&before);
        summary.cost_usd = self.0.config.prices.cost(
            &self.0.config.endpoint.model,
            summary.prompt_tokens,
            summary.completion_tokens,
        );
        summary.elapsed = started.elapsed();
        summary.final_concurrency = self.0.concurrency.limit();
        Ok(summary)
    }
}

fn set_aside(chunk: &Chunk, reason: SetAsideReason, detail: String) -> SetAside {
    SetAside {
        stage: Stage::Extract,
        item: chunk.id.to_string(),
        reason,
        detail: format!(
            "{} (chunk {} of {}): {detail}",
            chunk.id, chunk.index, chunk.source
        ),
    }
}

impl Inner {
    fn cancelled(&self, chunk: &Chunk) -> SetAside {
        self.progress.add(|c| &c.set_aside, 1);
        self.progress.add(|c| &c.cancelled, 1);
        set_aside(
            chunk,
            SetAsideReason::Cancelled,
            "the run was stopped before this chunk was extracted".into(),
        )
    }

    fn cache_key(&self, chunk: &Chunk) -> String {
        content_hash(&[
            self.config.endpoint.model.as_bytes(),
            PROMPT_VERSION.as_bytes(),
            self.schema_fingerprint.as_bytes(),
            normalise_text(&chunk.text).as_bytes(),
        ])
    }

    async fn extract_chunk(&self, chunk: Chunk, ctx: &RunCtx) -> Result<Extraction, SetAside> {
        let key = self.cache_key(&chunk);
        if let Some(answer) = self.cache.as_ref().and_then(|c| c.get(&key)) {
            self.progress.add(|c| &c.cache_hits, 1);
            return Ok(self.accept(&answer, &chunk));
        }
        let policy = &self.config.retry;
        let result = policy
            .run(
                &ctx.cancel,
                |_attempt| self.attempt(&chunk, &ctx.cancel),
                |error, retry| {
                    self.progress.add(|c| &c.retries, 1);
                    tracing::debug!(chunk = %chunk.id, attempt = retry.failed_attempt, delay_ms = retry.delay.as_millis() as u64, "retrying: {error}");
                },
            )
            .await;
        match result {
            Ok(answer) => {
                if let Some(cache) = &self.cache {
                    if let Err(e) = cache.put(&key, &answer) {
                        tracing::warn!("{e}");
                    }
                }
                Ok(self.accept(&answer, &chunk))
            }
            Err(failure) => Err(self.fail(&chunk, failure, ctx)),
        }
    }

    fn accept(&self, answer: &Value, chunk: &Chunk) -> Extraction {
        let (x, report) = validate(
            answer,
            chunk,
            &self.config.schema,
            &self.config.endpoint.model,
        );
        let p = &self.progress;
        p.add(|c| &c.extracted, 1);
        p.add(|c| &c.entities, x.entities.len() as u64);
        p.add(|c| &c.relations, x.relations.len() as u64);
        p.add(|c| &c.rejected_entities, report.rejected_entities);
        p.add(|c| &c.rejected_relations, report.rejected_relations);
        p.add(|c| &c.dropped_relations, report.dropped_relations);
        p.add(|c| &c.malformed_entries, report.malformed_entries);
        x
    }

    fn fail(&self, chunk: &Chunk, failure: RetryFailure<CallError>, ctx: &RunCtx) -> SetAside {
        let RetryFailure {
            error,
            attempts,
            gave_up,
        } = failure;
        if let CallError::Status {
            status, message, ..
        } = &error
        {
            let fatal = match status {
                401 | 403 => Some(ExtractError::Unauthorized {
                    url: self.client.url().to_string(),
                    status: *status,
                    message: message.clone(),
                }),
                404 => Some(ExtractError::NotFound {
                    url: self.client.url().to_string(),
                    model: self.config.endpoint.model.clone(),
                    message: message.clone(),
                }),
                _ => None,
            };
            if let Some(fatal) = fatal {
                if let Ok(mut slot) = ctx.fatal.lock() {
                    if slot.is_none() {
                        tracing::error!("{fatal}");
                        *slot = Some(fatal);
                    }
                }
                ctx.cancel.cancel();
            }
        }
        self.progress.add(|c| &c.set_aside, 1);
        let reason = if gave_up == GaveUp::Cancelled || matches!(error, CallError::Cancelled) {
            self.progress.add(|c| &c.cancelled, 1);
            SetAsideReason::Cancelled
        } else {
            error.reason()
        };
        set_aside(
            chunk,
            reason,
            format!("{error} (after {attempts} attempt(s))"),
        )
    }

    /// One attempt: budgets, concurrency permit, call, parse.
    async fn attempt(&self, chunk: &Chunk, cancel: &CancellationToken) -> Result<Value, CallError> {
        let estimate = (self.template.system.len() + chunk.text.len()) as u32 / 4
            + self
                .config
                .max_completion_tokens
                .unwrap_or(chunk.tokens / 2 + 64);
        let permit = tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(CallError::Cancelled),
            permit = async {
                self.limiter.acquire(estimate).await;
                self.concurrency.acquire().await
            } => permit,
        };
        let mut json_schema = self.json_schema.load(Ordering::Relaxed);
        self.progress.add(|c| &c.llm_calls, 1);
        let mut result = self
            .client
            .complete(&self.template.request(&chunk.text, json_schema))
            .await;
        if json_schema && self.config.answer_format == AnswerFormat::Auto {
            if let Err(e) = &result {
                if e.is_schema_unsupported() {
                    if self.json_schema.swap(false, Ordering::Relaxed) {
                        tracing::warn!("the server does not support json_schema answers ({e}); using JSON mode");
                    }
                    json_schema = false;
                    self.progress.add(|c| &c.llm_calls, 1);
                    result = self
                        .client
                        .complete(&self.template.request(&chunk.text, json_schema))
                        .await;
                }
            }
        }
        let completion = match result {
            Ok(c) => {
                permit.succeeded();
                c
            }
            Err(e) => {
                match &e {
                    CallError::Status { status: 429, .. } => {
                        self.progress.add(|c| &c.rate_limited, 1)
                    }
                    CallError::Status { status, .. } if *status >= 500 => {
                        self.progress.add(|c| &c.server_errors, 1)
                    }
                    CallError::Timeout(_) => self.progress.add(|c| &c.timeouts, 1),
                    CallError::Connection(_) | CallError::Malformed(_) => {
                        self.progress.add(|c| &c.connection_errors, 1)
                    }
                    _ => {}
                }
                if e.is_overload() {
                    permit.overloaded();
                }
                return Err(e);
            }
        };
        match completion.usage {
            Some((p, c)) => {
                self.progress.add(|x| &x.prompt_tokens, p);
                self.progress.add(|x| &x.completion_tokens, c);
            }
            None => {
                self.progress.add(|x| &x.usage_missing, 1);
                self.progress.add(|x| &x.prompt_tokens, u64::from(estimate));
                self.progress.add(
                    |x| &x.completion_tokens,
                    completion.content.len() as u64 / 4,
                );
            }
        }
        parse_answer(&completion.content, completion.finish_reason.as_deref()).map_err(|e| {
            self.progress.add(|c| &c.invalid_answers, 1);
            tracing::debug!(chunk = %chunk.id, "unusable answer: {e}");
            CallError::Answer(e)
        })
    }
}
