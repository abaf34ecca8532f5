//! The extraction run: chunks in, extractions (or set-asides) out.
//!
//! Each chunk is one work item of a [`kg_core::pool::WorkerPool`]; a worker
//! looks the chunk up in the cache, and on a miss makes the call through
//! kg-llm's [`Client`]: the request/token budgets, the gate (slow start,
//! fatal latch, circuit breaker), the adaptive concurrency limit, the HTTP
//! attempt, all inside the retry policy, which also retries an unusable
//! answer. Every request carries a completion cap
//! ([`ExtractConfig::completion_cap`]); an answer cut by it is repaired
//! ([`crate::answer::repair_truncated`]), else asked again once for a
//! shorter answer, else set aside as `truncated_answer`. A chunk ends as an
//! [`Extraction`] or a [`SetAside`] with a reason code; a 401, 403 or 404,
//! or an unreachable endpoint, instead stops the whole run and
//! [`Extractor::run`] returns it as an `Err`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use kg_core::pool::{Closed, Outcome, PoolConfig, WorkerPool};
use kg_core::retry::{GaveUp, RetryDecision, RetryFailure, Retryable};
use kg_core::{
    content_hash, normalise_text, Chunk, Extraction, Record, SetAside, SetAsideReason, Stage,
};
use kg_llm::{CallError, Checked, Client, Completion};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::answer::{parse_answer, repair_truncated, validate, AnswerError};
use crate::cache::ResponseCache;
use crate::config::{AnswerFormat, ExtractConfig};
use crate::prompt::{
    answer_schema, shorter_answer_entities, system_prompt, Ask, CapField, RequestTemplate,
    PROMPT_VERSION,
};
use crate::ExtractError;

macro_rules! summary {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
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
            /// Entities and relations a strict schema dropped, per type.
            pub dropped_by_schema: crate::SchemaDrops,
        }

        impl ExtractSummary {
            /// The counts of `self` minus those of `before` (a run's share
            /// of the extractor's lifetime counters); cost, elapsed time and
            /// concurrency are kept from `self`.
            pub fn minus(mut self, before: &ExtractSummary) -> Self {
                $(self.$name = self.$name.saturating_sub(before.$name);)*
                self.dropped_by_schema = self.dropped_by_schema.minus(&before.dropped_by_schema);
                self
            }
        }
    };
}

summary!(
    /// Chunks read from the input.
    chunks,
    /// Chunks that ended as an extraction.
    extracted,
    /// Chunks set aside (failed, or handed back on cancellation).
    set_aside,
    /// Of those, chunks not done because the run was cancelled or stopped.
    cancelled,
    /// Chunks answered from the cache, without a call.
    cache_hits,
    /// HTTP calls that reached the server (answered, timed out or cut);
    /// attempts that could not connect are `connection_failures`.
    llm_calls,
    /// Retries (attempts beyond the first per chunk).
    retries,
    /// 429 answers.
    rate_limited,
    /// Calls that timed out.
    timeouts,
    /// 5xx answers.
    server_errors,
    /// Answers cut mid-way and malformed answers.
    connection_errors,
    /// Attempts that could not connect (refused, DNS, TLS): not calls.
    connection_failures,
    /// Answers that were empty, not JSON, cut (and not repairable) or off
    /// schema.
    invalid_answers,
    /// Answers cut at the completion cap and repaired (complete entities
    /// and relations kept).
    repaired_answers,
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

/// The counters kg-extract keeps itself; the call counters are kg-llm's.
#[derive(Debug, Default)]
struct Counters {
    chunks: AtomicU64,
    extracted: AtomicU64,
    set_aside: AtomicU64,
    cancelled: AtomicU64,
    cache_hits: AtomicU64,
    invalid_answers: AtomicU64,
    repaired_answers: AtomicU64,
    entities: AtomicU64,
    relations: AtomicU64,
    rejected_entities: AtomicU64,
    rejected_relations: AtomicU64,
    dropped_relations: AtomicU64,
    malformed_entries: AtomicU64,
    dropped_by_schema: std::sync::Mutex<crate::SchemaDrops>,
}

/// Live counters for a progress bar; cheap to clone, readable any time.
#[derive(Debug, Clone, Default)]
pub struct ExtractProgress {
    counters: Arc<Counters>,
    client: Option<Client>,
}

impl ExtractProgress {
    /// The counters now (lifetime totals of the extractor).
    pub fn snapshot(&self) -> ExtractSummary {
        let c = &*self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let llm = self.client.as_ref().map(Client::stats).unwrap_or_default();
        ExtractSummary {
            chunks: get(&c.chunks),
            extracted: get(&c.extracted),
            set_aside: get(&c.set_aside),
            cancelled: get(&c.cancelled),
            cache_hits: get(&c.cache_hits),
            llm_calls: llm.calls,
            retries: llm.retries,
            rate_limited: llm.rate_limited,
            timeouts: llm.timeouts,
            server_errors: llm.server_errors,
            connection_errors: llm.transport_errors + llm.malformed,
            connection_failures: llm.connection_failures,
            invalid_answers: get(&c.invalid_answers),
            repaired_answers: get(&c.repaired_answers),
            prompt_tokens: llm.prompt_tokens,
            completion_tokens: llm.completion_tokens,
            usage_missing: llm.usage_missing,
            entities: get(&c.entities),
            relations: get(&c.relations),
            rejected_entities: get(&c.rejected_entities),
            rejected_relations: get(&c.rejected_relations),
            dropped_relations: get(&c.dropped_relations),
            malformed_entries: get(&c.malformed_entries),
            dropped_by_schema: c
                .dropped_by_schema
                .lock()
                .map(|d| d.clone())
                .unwrap_or_else(|p| p.into_inner().clone()),
            cost_usd: None,
            elapsed: Duration::ZERO,
            final_concurrency: llm.concurrency_limit as usize,
        }
    }

    fn add(&self, field: fn(&Counters) -> &AtomicU64, n: u64) {
        field(&self.counters).fetch_add(n, Ordering::Relaxed);
    }
}

/// The version of what an extractor with `schema` asks: the prompt's
/// version, plus a hash of the schema when it is not the open one (see
/// [`Extractor::prompt_version`]).
pub fn prompt_version(schema: &crate::ExtractSchema) -> String {
    if *schema == crate::ExtractSchema::open() {
        return PROMPT_VERSION.to_string();
    }
    let hash = content_hash(&[schema.fingerprint().as_bytes()]);
    format!(
        "{PROMPT_VERSION}+{}",
        hash.get(..8).unwrap_or(hash.as_str())
    )
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
    /// The most completion tokens the calls can cost: the sum of their
    /// completion caps (one attempt each).
    pub completion_tokens_max: u64,
    /// Cost in US dollars, `None` for a model without a price.
    pub cost_usd: Option<f64>,
    /// The most the calls can cost (prompt tokens plus every completion at
    /// its cap), `None` for a model without a price.
    pub cost_usd_max: Option<f64>,
}

/// Why an answer was not accepted, and whether asking again may help.
#[derive(Debug, Clone, PartialEq)]
struct AnswerFault {
    error: AnswerError,
    retry: bool,
}

impl std::fmt::Display for AnswerFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl Retryable for AnswerFault {
    fn retry_decision(&self) -> RetryDecision {
        if self.retry {
            // A model may answer properly the next time; no need to back
            // off from the server for it.
            RetryDecision::Retry {
                after: Some(Duration::ZERO),
            }
        } else {
            RetryDecision::Fatal
        }
    }
}

type CallFailure = RetryFailure<Checked<AnswerFault>>;

/// A 400 that says the server lacks `json_schema` response formats.
fn is_schema_unsupported(e: &CallError) -> bool {
    match e {
        CallError::Status {
            status: 400 | 422,
            message,
            ..
        } => {
            let m = message.to_ascii_lowercase();
            m.contains("json_schema") || m.contains("response_format")
        }
        _ => false,
    }
}

/// A 400 that says the model wants `max_completion_tokens`, not
/// `max_tokens` (OpenAI's reasoning models).
fn is_max_tokens_unsupported(e: &CallError) -> bool {
    match e {
        CallError::Status {
            status: 400 | 422,
            message,
            ..
        } => {
            let m = message.to_ascii_lowercase();
            m.contains("max_tokens")
                && (m.contains("max_completion_tokens")
                    || m.contains("unsupported")
                    || m.contains("not supported"))
        }
        _ => false,
    }
}

struct Inner {
    config: ExtractConfig,
    client: Client,
    template: RequestTemplate,
    cache: Option<ResponseCache>,
    json_schema: AtomicBool,
    /// Send the cap as `max_completion_tokens` (after a server refused
    /// `max_tokens`).
    completion_field: AtomicBool,
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
        let client = config.endpoint.client(
            config.concurrency,
            config.rate_limits,
            &config.retry,
            config.breaker,
        )?;
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
        };
        Ok(Self(Arc::new(Inner {
            json_schema: AtomicBool::new(config.answer_format != AnswerFormat::JsonObject),
            completion_field: AtomicBool::new(false),
            schema_fingerprint: config.schema.fingerprint(),
            progress: ExtractProgress {
                counters: Arc::default(),
                client: Some(client.clone()),
            },
            client,
            template,
            cache,
            config,
        })))
    }

    /// The cost in US dollars of the tokens `used` counts, from the price
    /// table (`None` for a model without a price). [`Self::run`]'s summary
    /// has it already; counts read from [`Self::progress`] do not.
    pub fn cost(&self, used: &ExtractSummary) -> Option<f64> {
        self.0.config.prices.cost(
            &self.0.config.endpoint.model,
            used.prompt_tokens,
            used.completion_tokens,
        )
    }

    /// Live counters, for a progress bar (without the cost: see
    /// [`Self::cost`]).
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
        prompt_version(&self.0.config.schema)
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
    /// without any call; chunks the cache answers cost nothing. Besides the
    /// expected figures it gives an upper bound: every answer at its
    /// completion cap.
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
            est.completion_tokens_max += u64::from(self.0.config.completion_cap(chunk));
        }
        let model = &self.0.config.endpoint.model;
        let prices = &self.0.config.prices;
        est.cost_usd = prices.cost(model, est.prompt_tokens, est.completion_tokens);
        est.cost_usd_max = prices.cost(model, est.prompt_tokens, est.completion_tokens_max);
        Ok(est)
    }

    /// Extracts every chunk of `chunks`, sending one [`Record::Extraction`]
    /// or [`Record::SetAside`] per chunk to `out` as soon as it is done.
    ///
    /// Run one `run` at a time per extractor: the summary is the difference
    /// of the extractor's lifetime counters over the run.
    ///
    /// Returns the run's summary; `Err` for a fatal error (a refused key,
    /// a wrong URL or model: stops at the first answer; nothing answering
    /// at the base URL: stops when the breaker opens, after a few
    /// connection attempts), or when `out` is closed. When `cancel` fires
    /// or a fatal error stops the run, calls in flight finish and every
    /// chunk not done is set aside with reason `cancelled`.
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
        summary.cost_usd = self.cost(&summary);
        summary.elapsed = started.elapsed();
        summary.final_concurrency = self.0.client.stats().concurrency_limit as usize;
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
        match self.call(&chunk, &ctx.cancel).await {
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

    /// Asks for `chunk` until an answer is accepted or the policy gives up;
    /// switches the request format for the rest of the run (and asks again)
    /// when the server refuses `json_schema` or `max_tokens`.
    async fn call(&self, chunk: &Chunk, cancel: &CancellationToken) -> Result<Value, CallFailure> {
        let cap = self.config.completion_cap(chunk);
        let shorter = AtomicBool::new(false);
        let sent_schema = AtomicBool::new(false);
        let sent_completion_field = AtomicBool::new(false);
        let mut switches = 0;
        loop {
            let result = self
                .client
                .complete_with(
                    cancel,
                    |_attempt| {
                        let ask = Ask {
                            json_schema: self.json_schema.load(Ordering::Relaxed),
                            cap,
                            cap_field: if self.completion_field.load(Ordering::Relaxed) {
                                CapField::MaxCompletionTokens
                            } else {
                                CapField::MaxTokens
                            },
                            at_most: shorter
                                .load(Ordering::Relaxed)
                                .then(|| shorter_answer_entities(cap)),
                        };
                        sent_schema.store(ask.json_schema, Ordering::Relaxed);
                        sent_completion_field.store(
                            ask.cap_field == CapField::MaxCompletionTokens,
                            Ordering::Relaxed,
                        );
                        self.template.request(&chunk.text, &ask)
                    },
                    |completion| self.check(completion, chunk, &shorter),
                )
                .await;
            let Err(RetryFailure {
                error: Checked::Call(e),
                ..
            }) = &result
            else {
                return result;
            };
            if switches >= 2 {
                return result;
            }
            if self.config.answer_format == AnswerFormat::Auto
                && sent_schema.load(Ordering::Relaxed)
                && is_schema_unsupported(e)
            {
                if self.json_schema.swap(false, Ordering::Relaxed) {
                    tracing::warn!(
                        "the server does not support json_schema answers ({e}); using JSON mode"
                    );
                }
            } else if !sent_completion_field.load(Ordering::Relaxed) && is_max_tokens_unsupported(e)
            {
                if !self.completion_field.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "the server refuses max_tokens ({e}); sending the cap as max_completion_tokens"
                    );
                }
            } else {
                return result;
            }
            switches += 1;
        }
    }

    /// Accepts an answer, repairs one cut at the cap, or says why not and
    /// whether to ask again (a cut answer: once, for a shorter one).
    fn check(
        &self,
        completion: Completion,
        chunk: &Chunk,
        shorter: &AtomicBool,
    ) -> Result<Value, AnswerFault> {
        let error = match parse_answer(&completion.content, completion.finish_reason.as_deref()) {
            Ok(answer) => return Ok(answer),
            Err(e) => e,
        };
        if error == AnswerError::Truncated {
            if let Some(answer) = repair_truncated(&completion.content) {
                self.progress.add(|c| &c.repaired_answers, 1);
                tracing::debug!(chunk = %chunk.id, "answer cut at the completion cap: repaired");
                return Ok(answer);
            }
        }
        self.progress.add(|c| &c.invalid_answers, 1);
        tracing::debug!(chunk = %chunk.id, "unusable answer: {error}");
        let retry = error != AnswerError::Truncated || !shorter.swap(true, Ordering::Relaxed);
        Err(AnswerFault { error, retry })
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
        if !report.dropped_by_schema.is_empty() {
            let mut drops = p
                .counters
                .dropped_by_schema
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            drops.add(&report.dropped_by_schema);
        }
        x
    }

    /// The run-stopping error for a fatal call error.
    fn fatal_error(&self, e: &CallError) -> Option<ExtractError> {
        let url = self.client.chat_url().to_string();
        match e {
            CallError::Status {
                status: status @ (401 | 403),
                message,
                ..
            } => Some(ExtractError::Unauthorized {
                url,
                status: *status,
                message: message.clone(),
            }),
            CallError::Status {
                status: 404,
                message,
                ..
            } => Some(ExtractError::NotFound {
                url,
                model: self.config.endpoint.model.clone(),
                message: message.clone(),
            }),
            CallError::EndpointUnreachable {
                attempts,
                last_error,
                ..
            } => Some(ExtractError::EndpointUnreachable {
                url,
                attempts: *attempts,
                last_error: last_error.clone(),
            }),
            _ => None,
        }
    }

    fn fail(&self, chunk: &Chunk, failure: CallFailure, ctx: &RunCtx) -> SetAside {
        let RetryFailure {
            error,
            attempts,
            gave_up,
        } = failure;
        self.progress.add(|c| &c.set_aside, 1);
        if let Checked::Call(e) = &error {
            if let Some(fatal) = self.fatal_error(e) {
                if let Ok(mut slot) = ctx.fatal.lock() {
                    if slot.is_none() {
                        tracing::error!("{fatal}");
                        *slot = Some(fatal);
                    }
                }
                ctx.cancel.cancel();
                // Not this chunk's fault: the next run does it.
                self.progress.add(|c| &c.cancelled, 1);
                return set_aside(
                    chunk,
                    SetAsideReason::Cancelled,
                    format!("the run stopped before this chunk was extracted: {e}"),
                );
            }
        }
        let reason = match &error {
            _ if gave_up == GaveUp::Cancelled => SetAsideReason::Cancelled,
            Checked::Call(e) => e.chat_reason(),
            Checked::Check(a) => a.error.reason(),
        };
        if reason == SetAsideReason::Cancelled {
            self.progress.add(|c| &c.cancelled, 1);
        }
        set_aside(
            chunk,
            reason,
            format!("{error} (after {attempts} attempt(s))"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, message: &str) -> CallError {
        CallError::Status {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    #[test]
    fn format_refusals_are_recognised() {
        assert!(is_schema_unsupported(&status(
            400,
            "response_format json_schema unsupported"
        )));
        assert!(!is_schema_unsupported(&status(400, "bad")));
        assert!(!is_schema_unsupported(&status(500, "json_schema")));
        let openai = "Unsupported parameter: 'max_tokens' is not supported with this model. \
                      Use 'max_completion_tokens' instead.";
        assert!(is_max_tokens_unsupported(&status(400, openai)));
        assert!(!is_schema_unsupported(&status(400, openai)));
        assert!(!is_max_tokens_unsupported(&status(
            400,
            "max_tokens is too large: 100000 > 4096"
        )));
    }

    #[test]
    fn a_cut_answer_is_asked_again_once() {
        let unusable = AnswerFault {
            error: AnswerError::Empty,
            retry: true,
        };
        assert_eq!(
            unusable.retry_decision(),
            RetryDecision::Retry {
                after: Some(Duration::ZERO)
            }
        );
        let last = AnswerFault {
            error: AnswerError::Truncated,
            retry: false,
        };
        assert_eq!(last.retry_decision(), RetryDecision::Fatal);
    }
}
