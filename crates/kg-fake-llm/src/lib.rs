//! kg-fake-llm: an OpenAI-compatible fake LLM server for kg's tests and
//! benchmarks.
//!
//! It serves `POST /v1/chat/completions`, `POST /v1/embeddings`,
//! `GET /v1/models` and `GET /stats` on a local port, answering
//! deterministically from the request text: capitalised phrases become
//! entities, pairs in one sentence become relations (with the types of the
//! request's JSON schema `enum`s when it has them); embeddings are seeded
//! feature hashes of the words, unit length, so texts sharing words are
//! similar. Knobs in [`FakeConfig`] add latency, faults
//! (500, 429 with `Retry-After`, hangs, cut connections, malformed or hostile
//! answers, endless JSON cut at the token cap), a required API key,
//! missing `usage`, servers without `json_schema` support, and an embedding
//! dimension that changes mid-run. Chat requests with `stream: true` are
//! answered as server-sent events (`data:` chunks, then `data: [DONE]`),
//! with a final usage chunk when `stream_options.include_usage` asks for it.
//! A request to summarise descriptions (kg-extract's summariser: fenced
//! `<<<DESCRIPTION n>>>` blocks) is answered with one
//! `{"description": ...}` naming the subject, the count and the first
//! description, and counted in [`Counters::summaries`].
//! Every fault decision is a function of the seed and the request text, so a
//! test sees the same faults on every run.
//!
//! It must never be used as a real model, listen on anything but the address
//! it is given (127.0.0.1 by default), or log API keys.
//!
//! ```
//! use kg_fake_llm::{FakeConfig, FakeLlm};
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let server = FakeLlm::start(FakeConfig::default()).await.unwrap();
//! let url = format!("{}/chat/completions", server.base_url());
//! assert!(url.starts_with("http://127.0.0.1:"));
//! assert_eq!(server.counters().chat_requests, 0);
//! server.shutdown().await;
//! # });
//! ```

#![warn(missing_docs)]

mod answer;
mod fault;
pub mod script;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::Serialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

pub use fault::{Fault, FaultRates};
pub use script::{Script, ScriptEntry};

/// The completion cap an [`Fault::EndlessJson`] answer runs to when the
/// request sets neither `max_completion_tokens` nor `max_tokens` (a model's
/// own output limit).
pub const DEFAULT_ENDLESS_CAP: u64 = 16_384;

/// Everything the fake server can be told to do.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeConfig {
    /// Where to listen; port 0 picks a free one.
    pub bind: SocketAddr,
    /// Seed of every deterministic choice (types, faults, vectors, jitter).
    pub seed: u64,
    /// Fixed latency of every answer, from the request's arrival: the
    /// server's own work (parsing, building the answer) runs inside it, so
    /// a client with c requests in flight can reach c / latency.
    pub latency: Duration,
    /// Extra latency, uniformly 0..=this, drawn from the request text.
    pub latency_jitter: Duration,
    /// The key clients must send as `Authorization: Bearer KEY`; `None`
    /// accepts any request.
    pub api_key: Option<String>,
    /// Fault probabilities per request.
    pub faults: FaultRates,
    /// The first this-many requests for each distinct text get
    /// `forced_fault` (on top of the rates): a deterministic way to test
    /// that a client retries.
    pub fail_first_attempts: u32,
    /// The fault of [`Self::fail_first_attempts`].
    pub forced_fault: Fault,
    /// Probability that an otherwise good chat answer carries hostile type
    /// names (backticks, `})`, newlines).
    pub hostile_types: f64,
    /// The `Retry-After` sent with 429s.
    pub retry_after: Duration,
    /// How long a [`Fault::Timeout`] hangs before answering.
    pub hang: Duration,
    /// Leave `usage` out of answers (as some local servers do).
    pub omit_usage: bool,
    /// Answer 400 to `response_format: json_schema` (as servers without
    /// structured outputs do); `json_object` still works.
    pub reject_json_schema: bool,
    /// Answer `GET /v1/models` (as OpenAI, Ollama, vLLM and llama.cpp do);
    /// `false`: a 404, as a server without the route.
    pub models_route: bool,
    /// Embedding dimension.
    pub embedding_dim: usize,
    /// After this many embedding requests, switch to the second dimension
    /// (a model swapped under a running client).
    pub embedding_dim_switch: Option<(u64, usize)>,
    /// Answer mode (a request whose user message quotes numbered sources,
    /// as `kg ask` sends): also cite this source number, whether or not the
    /// prompt has it (to test that invented citations are flagged).
    pub invent_citation: Option<usize>,
    /// Scripted extraction answers by marker in the chunk text (see
    /// [`Script`]); empty: every answer is heuristic.
    pub script: Script,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            seed: 42,
            latency: Duration::ZERO,
            latency_jitter: Duration::ZERO,
            api_key: None,
            faults: FaultRates::default(),
            fail_first_attempts: 0,
            forced_fault: Fault::RateLimited,
            hostile_types: 0.0,
            retry_after: Duration::from_secs(1),
            hang: Duration::from_secs(30),
            omit_usage: false,
            reject_json_schema: false,
            models_route: true,
            embedding_dim: 64,
            embedding_dim_switch: None,
            invent_citation: None,
            script: Script::default(),
        }
    }
}

/// The server could not start.
#[derive(Debug, thiserror::Error)]
pub enum FakeLlmError {
    /// Binding the listening socket failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Request counters, as returned by [`FakeLlmHandle::counters`] and
/// `GET /stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Chat completion requests received (any outcome).
    pub chat_requests: u64,
    /// Embedding requests received (any outcome).
    pub embedding_requests: u64,
    /// `GET /v1/models` requests received (clients probe keys with it).
    pub models_requests: u64,
    /// Texts embedded (inputs summed over requests that were answered).
    pub embedded_inputs: u64,
    /// Responses by HTTP status (a cut connection counts as its 200).
    pub by_status: BTreeMap<u16, u64>,
    /// Faults injected, by kind (snake_case names).
    pub faults: BTreeMap<String, u64>,
    /// Answers that carried hostile type names.
    pub hostile_answers: u64,
    /// Requests rejected for a missing or wrong API key.
    pub unauthorized: u64,
    /// Requests (chat and embeddings) being handled now.
    pub in_flight: u64,
    /// The most requests ever handled at once.
    pub peak_in_flight: u64,
    /// The most requests handled at once before the first answer went out:
    /// 1 for a client that waits for one answer before sending more.
    pub peak_in_flight_before_first_answer: u64,
    /// The completion cap (`max_completion_tokens`, else `max_tokens`) of
    /// the last chat request, if it had one.
    pub last_max_tokens: Option<u64>,
    /// Chat requests that carried no completion cap at all.
    pub uncapped_chat_requests: u64,
    /// Chat requests answered as a server-sent event stream.
    pub streamed_answers: u64,
    /// Chat requests answered in answer mode (numbered sources quoted).
    pub answers: u64,
    /// The user message of the last answer-mode request.
    pub last_answer_prompt: Option<String>,
    /// The system message of the last extraction request (not answer
    /// mode), to check what a client asked for.
    pub last_extraction_system: Option<String>,
    /// Chat requests answered in summary mode (descriptions to summarise).
    pub summaries: u64,
    /// When the first chat request arrived, after the server started.
    pub first_chat_request: Option<Duration>,
    /// When the last chat answer was ready to go out (any outcome), after
    /// the server started. With [`Self::first_chat_request`]: the span in
    /// which a client kept the server busy ([`Self::chat_span`]).
    pub last_chat_answer: Option<Duration>,
    /// When the first extraction request (a chat request neither in
    /// answer nor in summary mode) arrived, after the server started.
    pub first_extraction_request: Option<Duration>,
    /// When the last extraction answer was ready to go out.
    pub last_extraction_answer: Option<Duration>,
    /// When the first embedding request arrived, after the server started.
    pub first_embedding_request: Option<Duration>,
    /// When the last embedding answer was ready to go out, after the server
    /// started.
    pub last_embedding_answer: Option<Duration>,
}

impl Counters {
    /// From the first chat request to the last chat answer, if any was
    /// answered: what a client's extraction took as the server saw it.
    pub fn chat_span(&self) -> Option<Duration> {
        Some(
            self.last_chat_answer?
                .saturating_sub(self.first_chat_request?),
        )
    }

    /// From the first extraction request to the last extraction answer:
    /// [`Self::chat_span`] without the summaries and answers a client asks
    /// for before or after its extraction (kg run's description step).
    pub fn extraction_span(&self) -> Option<Duration> {
        Some(
            self.last_extraction_answer?
                .saturating_sub(self.first_extraction_request?),
        )
    }

    /// Extraction requests: chat requests neither in answer nor in summary
    /// mode.
    pub fn extraction_requests(&self) -> u64 {
        self.chat_requests
            .saturating_sub(self.summaries)
            .saturating_sub(self.answers)
    }

    /// From the first embedding request to the last embedding answer.
    pub fn embedding_span(&self) -> Option<Duration> {
        Some(
            self.last_embedding_answer?
                .saturating_sub(self.first_embedding_request?),
        )
    }
}

/// When the server started: the origin of the [`Counters`] timestamps.
#[derive(Debug)]
struct Started(Instant);

impl Default for Started {
    fn default() -> Self {
        Self(Instant::now())
    }
}

/// The first request and the last answer of one kind, as nanoseconds after
/// [`Started`] plus one (0: none yet).
#[derive(Debug, Default)]
struct Span {
    first: AtomicU64,
    last: AtomicU64,
}

impl Span {
    fn get(at: &AtomicU64) -> Option<Duration> {
        match at.load(Ordering::SeqCst) {
            0 => None,
            n => Some(Duration::from_nanos(n - 1)),
        }
    }
}

/// Times one request: its arrival (the span's first, if it is the first)
/// now, its answer (the span's last, if it is the latest) when dropped.
struct Timed<'a> {
    span: &'a Span,
    started: &'a Started,
}

impl<'a> Timed<'a> {
    fn now(started: &Started) -> u64 {
        u64::try_from(started.0.elapsed().as_nanos()).unwrap_or(u64::MAX - 1) + 1
    }

    fn enter(span: &'a Span, started: &'a Started) -> Self {
        let _ =
            span.first
                .compare_exchange(0, Self::now(started), Ordering::SeqCst, Ordering::SeqCst);
        Self { span, started }
    }
}

impl Drop for Timed<'_> {
    fn drop(&mut self) {
        self.span
            .last
            .fetch_max(Self::now(self.started), Ordering::SeqCst);
    }
}

#[derive(Debug, Default)]
struct Live {
    chat: AtomicU64,
    embeddings: AtomicU64,
    models: AtomicU64,
    embedded_inputs: AtomicU64,
    hostile: AtomicU64,
    unauthorized: AtomicU64,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
    peak_before_first_answer: AtomicU64,
    answered: AtomicBool,
    last_max_tokens: Mutex<Option<u64>>,
    uncapped: AtomicU64,
    streamed: AtomicU64,
    answers: AtomicU64,
    summaries: AtomicU64,
    last_answer_prompt: Mutex<Option<String>>,
    last_extraction_system: Mutex<Option<String>>,
    by_status: Mutex<BTreeMap<u16, u64>>,
    faults: Mutex<BTreeMap<String, u64>>,
    /// Attempts seen per request text hash, for deterministic faults.
    attempts: Mutex<HashMap<u64, u32>>,
    started: Started,
    chat_span: Span,
    extraction_span: Span,
    embedding_span: Span,
}

impl Live {
    fn status(&self, code: StatusCode) {
        let mut map = self.by_status.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(code.as_u16()).or_insert(0) += 1;
    }

    fn fault(&self, fault: Fault) {
        let name = serde_json::to_value(fault)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let mut map = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(name).or_insert(0) += 1;
    }

    /// The attempt number (from 0) of this text.
    fn attempt(&self, key: u64) -> u32 {
        let mut map = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(key).or_insert(0);
        let seen = *n;
        *n += 1;
        seen
    }

    fn snapshot(&self) -> Counters {
        Counters {
            chat_requests: self.chat.load(Ordering::Relaxed),
            embedding_requests: self.embeddings.load(Ordering::Relaxed),
            models_requests: self.models.load(Ordering::Relaxed),
            embedded_inputs: self.embedded_inputs.load(Ordering::Relaxed),
            by_status: self
                .by_status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            faults: self
                .faults
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            hostile_answers: self.hostile.load(Ordering::Relaxed),
            unauthorized: self.unauthorized.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            peak_in_flight: self.peak_in_flight.load(Ordering::Relaxed),
            peak_in_flight_before_first_answer: self
                .peak_before_first_answer
                .load(Ordering::Relaxed),
            last_max_tokens: *self
                .last_max_tokens
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
            uncapped_chat_requests: self.uncapped.load(Ordering::Relaxed),
            streamed_answers: self.streamed.load(Ordering::Relaxed),
            answers: self.answers.load(Ordering::Relaxed),
            summaries: self.summaries.load(Ordering::Relaxed),
            last_answer_prompt: self
                .last_answer_prompt
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            last_extraction_system: self
                .last_extraction_system
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            first_chat_request: Span::get(&self.chat_span.first),
            last_chat_answer: Span::get(&self.chat_span.last),
            first_extraction_request: Span::get(&self.extraction_span.first),
            last_extraction_answer: Span::get(&self.extraction_span.last),
            first_embedding_request: Span::get(&self.embedding_span.first),
            last_embedding_answer: Span::get(&self.embedding_span.last),
        }
    }
}

/// Counts one request as in flight while it lives; its drop is the answer
/// going out (or the client going away).
struct InFlight<'a>(&'a Live);

impl<'a> InFlight<'a> {
    fn enter(live: &'a Live) -> Self {
        let now = live.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        live.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        if !live.answered.load(Ordering::SeqCst) {
            live.peak_before_first_answer
                .fetch_max(now, Ordering::SeqCst);
        }
        Self(live)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.answered.store(true, Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

struct AppState {
    config: FakeConfig,
    live: Live,
    stop: CancellationToken,
}

/// The fake server.
#[derive(Debug)]
pub struct FakeLlm;

/// A running fake server. Dropping it stops the server too.
#[derive(Debug)]
pub struct FakeLlmHandle {
    addr: SocketAddr,
    state: Arc<AppStateDebug>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// `AppState` behind a `Debug` that never prints the API key.
struct AppStateDebug(AppState);

impl std::fmt::Debug for AppStateDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeLlmState").finish_non_exhaustive()
    }
}

impl FakeLlm {
    /// Binds `config.bind` and serves until the handle is shut down or
    /// dropped. Must be called within a tokio runtime.
    pub async fn start(config: FakeConfig) -> Result<FakeLlmHandle, FakeLlmError> {
        let addr = config.bind;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| FakeLlmError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| FakeLlmError::Bind { addr, source })?;
        let stop = CancellationToken::new();
        let state = Arc::new(AppStateDebug(AppState {
            config,
            live: Live::default(),
            stop: stop.clone(),
        }));
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/embeddings", post(embeddings))
            .route("/v1/models", get(models))
            .route("/stats", get(stats))
            .with_state(Arc::clone(&state));
        let shutdown = stop.clone();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::error!("fake LLM server stopped: {e}");
            }
        });
        tracing::info!(%local, "fake LLM listening");
        Ok(FakeLlmHandle {
            addr: local,
            state,
            stop,
            task: Some(task),
        })
    }
}

impl FakeLlmHandle {
    /// The OpenAI base URL, `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The socket address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The request counters now.
    pub fn counters(&self) -> Counters {
        self.state.0.live.snapshot()
    }

    /// Stops the server: hanging requests end at once, in-flight answers
    /// are cut.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                tracing::warn!("fake LLM server did not stop within 5 s");
            }
        }
    }
}

impl Drop for FakeLlmHandle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

type Shared = Arc<AppStateDebug>;

/// An OpenAI-style error body with `status`, recorded in `live`'s status counts.
fn error_response(
    live: &Live,
    status: StatusCode,
    message: &str,
    kind: &str,
    code: &str,
) -> Response {
    live.status(status);
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    (status, Json(body)).into_response()
}

/// Checks the bearer key; `Some(response)` is the 401 to send.
fn unauthorized(state: &AppState, headers: &HeaderMap) -> Option<Response> {
    let want = state.config.api_key.as_deref()?;
    let got = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if got == Some(want) {
        return None;
    }
    state.live.unauthorized.fetch_add(1, Ordering::Relaxed);
    Some(error_response(
        &state.live,
        StatusCode::UNAUTHORIZED,
        "Incorrect API key provided.",
        "invalid_request_error",
        "invalid_api_key",
    ))
}

/// Sleeps `d` unless the server stops first.
async fn pause(state: &AppState, d: Duration) {
    if d.is_zero() {
        return;
    }
    tokio::select! {
        () = tokio::time::sleep(d) => {}
        () = state.stop.cancelled() => {}
    }
}

/// Sleeps until `due` unless the server stops first.
async fn pause_until(state: &AppState, due: tokio::time::Instant) {
    if due <= tokio::time::Instant::now() {
        return;
    }
    tokio::select! {
        () = tokio::time::sleep_until(due) => {}
        () = state.stop.cancelled() => {}
    }
}

/// The fault (if any) for this request text, and when its answer is due:
/// the latency (plus jitter) after the request `arrived`. The answer is
/// built while the latency runs and goes out when it is due, so a request
/// takes the configured latency, not the latency plus the server's own
/// work (parsing the request, building the answer): a client at
/// concurrency c can reach c / latency exactly.
fn prelude(
    state: &AppState,
    text_key: u64,
    chat: bool,
    arrived: tokio::time::Instant,
) -> (Option<Fault>, tokio::time::Instant) {
    let cfg = &state.config;
    let attempt = state.live.attempt(text_key);
    let draw = fault::hash(
        cfg.seed,
        &[text_key.to_le_bytes(), u64::from(attempt).to_le_bytes()].concat(),
    );
    let jitter = cfg
        .latency_jitter
        .mul_f64(fault::unit(fault::splitmix(draw)));
    let due = arrived + cfg.latency + jitter;
    if attempt < cfg.fail_first_attempts && (chat || !cfg.forced_fault.chat_only()) {
        return (Some(cfg.forced_fault), due);
    }
    (cfg.faults.pick(fault::unit(draw), chat), due)
}

/// The response for a transport-level fault, if `fault` is one.
async fn transport_fault(state: &AppState, fault: Fault) -> Option<Response> {
    state.live.fault(fault);
    match fault {
        Fault::ServerError => Some(error_response(
            &state.live,
            StatusCode::INTERNAL_SERVER_ERROR,
            "The server had an error while processing your request.",
            "server_error",
            "internal_error",
        )),
        Fault::RateLimited => {
            let mut r = error_response(
                &state.live,
                StatusCode::TOO_MANY_REQUESTS,
                "Rate limit reached for requests.",
                "requests",
                "rate_limit_exceeded",
            );
            let after = state.config.retry_after;
            let secs = if after.subsec_nanos() == 0 {
                after.as_secs().to_string()
            } else {
                format!("{:.3}", after.as_secs_f64())
            };
            if let Ok(v) = HeaderValue::from_str(&secs) {
                r.headers_mut().insert("retry-after", v);
            }
            if let Ok(v) = HeaderValue::from_str(&after.as_millis().to_string()) {
                r.headers_mut().insert("retry-after-ms", v);
            }
            Some(r)
        }
        Fault::Timeout => {
            pause(state, state.config.hang).await;
            None
        }
        Fault::DroppedConnection => {
            state.live.status(StatusCode::OK);
            // A body stream that fails after its first piece: hyper aborts
            // the connection, the client sees a cut answer.
            let pieces: Vec<Result<Bytes, std::io::Error>> = vec![
                Ok(Bytes::from_static(
                    b"{\"id\":\"chatcmpl-fake\",\"choices\":[",
                )),
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "dropped by fault injection",
                )),
            ];
            let mut r = Response::new(Body::from_stream(futures::stream::iter(pieces)));
            r.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            r.headers_mut()
                .insert("content-length", HeaderValue::from_static("4096"));
            Some(r)
        }
        Fault::NonJson | Fault::OffSchema | Fault::Truncated | Fault::EndlessJson => None,
    }
}

/// The request body as JSON, or the 400 OpenAI answers for a body that is not.
fn parse_request(state: &AppState, body: &[u8]) -> Result<Value, Box<Response>> {
    serde_json::from_slice::<Value>(body).map_err(|_| {
        Box::new(error_response(
            &state.live,
            StatusCode::BAD_REQUEST,
            "We could not parse the JSON body of your request.",
            "invalid_request_error",
            "invalid_json",
        ))
    })
}

/// The completion cap a chat request carries: `max_completion_tokens`,
/// else the older `max_tokens`.
fn completion_cap(request: &Value) -> Option<u64> {
    request
        .get("max_completion_tokens")
        .and_then(Value::as_u64)
        .or_else(|| request.get("max_tokens").and_then(Value::as_u64))
}

/// A model stuck in a loop: `answer`'s entities repeated in one JSON array
/// until about `cap` tokens (4 characters each), cut there.
fn endless_json(answer: &Value, cap: u64) -> String {
    let mut elements: Vec<String> = answer
        .get("entities")
        .and_then(Value::as_array)
        .map(|all| all.iter().map(Value::to_string).collect())
        .unwrap_or_default();
    if elements.is_empty() {
        elements.push(
            json!({"name": "Loop", "type": "Concept", "description": "again and again"})
                .to_string(),
        );
    }
    let limit = usize::try_from(cap.saturating_mul(4)).unwrap_or(usize::MAX);
    let mut out = String::from("{\"entities\":[");
    for element in elements.iter().cycle() {
        if out.len() >= limit {
            break;
        }
        out.push_str(element);
        out.push(',');
    }
    let mut end = limit.min(out.len());
    while !out.is_char_boundary(end) {
        end -= 1;
    }
    out.truncate(end);
    out
}

/// A chat answer as server-sent events: the content in pieces, a last
/// chunk with the finish reason, the usage chunk if asked for, `[DONE]`.
fn sse_response(
    id: &str,
    model: &str,
    content: &str,
    finish: &str,
    usage: Option<Value>,
) -> Response {
    let chunk = |delta: Value, finish: Option<&str>| {
        json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": 1_700_000_000u64,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        })
    };
    let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    let chars: Vec<char> = content.chars().collect();
    for piece in chars.chunks(24) {
        let piece: String = piece.iter().collect();
        events.push(chunk(json!({ "content": piece }), None));
    }
    events.push(chunk(json!({}), Some(finish)));
    let include_usage = usage.is_some();
    if include_usage {
        for e in &mut events {
            e["usage"] = Value::Null;
        }
    }
    if let Some(usage) = usage {
        events.push(json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": 1_700_000_000u64,
            "model": model,
            "choices": [],
            "usage": usage,
        }));
    }
    let mut pieces: Vec<Result<Bytes, std::io::Error>> = events
        .iter()
        .map(|e| Ok(Bytes::from(format!("data: {e}\n\n"))))
        .collect();
    pieces.push(Ok(Bytes::from_static(b"data: [DONE]\n\n")));
    let mut r = Response::new(Body::from_stream(futures::stream::iter(pieces)));
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-cache"));
    r
}

async fn chat(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let arrived = tokio::time::Instant::now();
    let state = &state.0;
    let _timed = Timed::enter(&state.live.chat_span, &state.live.started);
    // Set once the request is known to be an extraction; dropped with the
    // answer, as `_timed` is.
    let mut _extraction_timed: Option<Timed<'_>> = None;
    let _in_flight = InFlight::enter(&state.live);
    state.live.chat.fetch_add(1, Ordering::Relaxed);
    if let Some(r) = unauthorized(state, &headers) {
        return r;
    }
    let request = match parse_request(state, &body) {
        Ok(request) => request,
        Err(r) => return *r,
    };
    let cap = completion_cap(&request);
    *state
        .live
        .last_max_tokens
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = cap;
    if cap.is_none() {
        state.live.uncapped.fetch_add(1, Ordering::Relaxed);
    }
    let format = request
        .pointer("/response_format/type")
        .and_then(Value::as_str);
    if state.config.reject_json_schema && format == Some("json_schema") {
        return error_response(
            &state.live,
            StatusCode::BAD_REQUEST,
            "response_format of type json_schema is not supported by this server",
            "invalid_request_error",
            "unsupported_response_format",
        );
    }
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if messages.is_empty() {
        return error_response(
            &state.live,
            StatusCode::BAD_REQUEST,
            "'messages' must be a non-empty array",
            "invalid_request_error",
            "invalid_messages",
        );
    }
    let text = answer::chunk_text(&messages);
    let key = fault::hash(state.config.seed, text.as_bytes());
    let (fault, due) = prelude(state, key, true, arrived);
    if let Some(f) = fault {
        pause_until(state, due).await;
        if let Some(r) = transport_fault(state, f).await {
            return r;
        }
    }
    let hostile_draw = fault::unit(fault::hash(state.config.seed ^ 0x5eed, text.as_bytes()));
    let hostile = hostile_draw < state.config.hostile_types;
    if hostile {
        state.live.hostile.fetch_add(1, Ordering::Relaxed);
    }
    let found = state
        .config
        .script
        .answer(&text)
        .unwrap_or_else(|| answer::extraction(&request, &text, state.config.seed, hostile));
    let full = if answer::is_grounded_question(&text) {
        state.live.answers.fetch_add(1, Ordering::Relaxed);
        *state
            .live
            .last_answer_prompt
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(text.clone());
        answer::grounded_answer(&text, state.config.invent_citation)
    } else if answer::is_summary_request(&text) {
        state.live.summaries.fetch_add(1, Ordering::Relaxed);
        answer::summary(&text).to_string()
    } else {
        _extraction_timed = Some(Timed::enter(
            &state.live.extraction_span,
            &state.live.started,
        ));
        let system = messages
            .iter()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("system"))
            .and_then(|m| m.get("content"))
            .map(answer::content_string);
        *state
            .live
            .last_extraction_system
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = system;
        serde_json::to_string(&found).unwrap_or_else(|_| "{}".into())
    };
    let (content, finish) = match fault {
        Some(Fault::NonJson) => (
            format!(
                "Sure! Here are the entities I found: {}",
                text.split_whitespace()
                    .take(6)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "stop",
        ),
        Some(Fault::OffSchema) => (
            json!({"result": "ok", "items": [1, 2, 3]}).to_string(),
            "stop",
        ),
        Some(Fault::Truncated) => (
            full.chars().take(full.chars().count() / 2).collect(),
            "length",
        ),
        Some(Fault::EndlessJson) => (
            endless_json(&found, cap.unwrap_or(DEFAULT_ENDLESS_CAP)),
            "length",
        ),
        _ => (full, "stop"),
    };
    let prompt_tokens: u32 = messages
        .iter()
        .filter_map(|m| m.get("content"))
        .map(|c| answer::approx_tokens(&answer::content_string(c)))
        .sum();
    let completion_tokens = match (fault, cap) {
        (Some(Fault::EndlessJson), cap) => {
            u32::try_from(cap.unwrap_or(DEFAULT_ENDLESS_CAP)).unwrap_or(u32::MAX)
        }
        _ => (content.len() / 4) as u32 + 1,
    };
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("fake-model");
    let n = state.live.chat.load(Ordering::Relaxed);
    let id = format!("chatcmpl-fake-{n}");
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens.saturating_add(completion_tokens),
    });
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        let include_usage = request
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true);
        state.live.streamed.fetch_add(1, Ordering::Relaxed);
        state.live.status(StatusCode::OK);
        let usage = (include_usage && !state.config.omit_usage).then_some(usage);
        let response = sse_response(&id, model, &content, finish, usage);
        pause_until(state, due).await;
        return response;
    }
    let mut response = json!({
        "id": id,
        "object": "chat.completion",
        "created": 1_700_000_000u64,
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "logprobs": null,
            "finish_reason": finish,
        }],
    });
    if !state.config.omit_usage {
        response["usage"] = usage;
    }
    state.live.status(StatusCode::OK);
    let response = (StatusCode::OK, Json(response)).into_response();
    pause_until(state, due).await;
    response
}

async fn embeddings(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let arrived = tokio::time::Instant::now();
    let state = &state.0;
    let _timed = Timed::enter(&state.live.embedding_span, &state.live.started);
    let _in_flight = InFlight::enter(&state.live);
    let n = state.live.embeddings.fetch_add(1, Ordering::Relaxed) + 1;
    if let Some(r) = unauthorized(state, &headers) {
        return r;
    }
    let request = match parse_request(state, &body) {
        Ok(request) => request,
        Err(r) => return *r,
    };
    let inputs: Vec<String> = match request.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) if !items.is_empty() && items.iter().all(Value::is_string) => {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        }
        _ => {
            return error_response(
                &state.live,
                StatusCode::BAD_REQUEST,
                "'input' must be a string or a non-empty array of strings",
                "invalid_request_error",
                "invalid_input",
            );
        }
    };
    if inputs.iter().any(String::is_empty) {
        return error_response(
            &state.live,
            StatusCode::BAD_REQUEST,
            "'input' cannot contain an empty string",
            "invalid_request_error",
            "invalid_input",
        );
    }
    let key = fault::hash(state.config.seed, inputs.join("\u{1e}").as_bytes());
    let (fault, due) = prelude(state, key, false, arrived);
    if let Some(f) = fault {
        pause_until(state, due).await;
        if let Some(r) = transport_fault(state, f).await {
            return r;
        }
    }
    let mut dim = state.config.embedding_dim;
    if let Some((after, second)) = state.config.embedding_dim_switch {
        if n > after {
            dim = second;
        }
    }
    if let Some(d) = request.get("dimensions").and_then(Value::as_u64) {
        dim = d as usize;
    }
    if dim == 0 || dim > 8192 {
        return error_response(
            &state.live,
            StatusCode::BAD_REQUEST,
            "'dimensions' must be between 1 and 8192",
            "invalid_request_error",
            "invalid_dimensions",
        );
    }
    let base64 = request.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let mut prompt_tokens = 0;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            prompt_tokens += answer::approx_tokens(text);
            let v = answer::embedding(text, dim, state.config.seed);
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    state
        .live
        .embedded_inputs
        .fetch_add(inputs.len() as u64, Ordering::Relaxed);
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("fake-embedding");
    let mut response = json!({"object": "list", "data": data, "model": model});
    if !state.config.omit_usage {
        response["usage"] = json!({"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens});
    }
    state.live.status(StatusCode::OK);
    let response = (StatusCode::OK, Json(response)).into_response();
    pause_until(state, due).await;
    response
}

async fn models(State(state): State<Shared>, headers: HeaderMap) -> Response {
    state.0.live.models.fetch_add(1, Ordering::Relaxed);
    if !state.0.config.models_route {
        return error_response(
            &state.0.live,
            StatusCode::NOT_FOUND,
            "Not found.",
            "invalid_request_error",
            "not_found",
        );
    }
    if let Some(r) = unauthorized(&state.0, &headers) {
        return r;
    }
    Json(json!({"object": "list", "data": [
        {"id": "fake-model", "object": "model", "created": 1_700_000_000u64, "owned_by": "kg"},
        {"id": "fake-embedding", "object": "model", "created": 1_700_000_000u64, "owned_by": "kg"},
    ]}))
    .into_response()
}

async fn stats(State(state): State<Shared>) -> Response {
    Json(state.0.live.snapshot()).into_response()
}
