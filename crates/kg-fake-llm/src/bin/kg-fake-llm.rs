//! `kg-fake-llm`: the fake OpenAI-compatible server as a process, for manual
//! runs and `cargo xtask fake-llm`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use kg_fake_llm::{FakeConfig, FakeLlm, Fault, FaultRates};

/// An OpenAI-compatible fake LLM: deterministic answers, configurable
/// latency and faults. Serves /v1/chat/completions, /v1/embeddings,
/// /v1/models and /stats.
#[derive(Debug, Parser)]
#[command(name = "kg-fake-llm", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Port (0 picks a free one).
    #[arg(long, default_value_t = 8089)]
    port: u16,
    /// Seed of every deterministic choice.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Fixed latency per request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Extra random latency, 0..=this many milliseconds.
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// Require this API key (`Authorization: Bearer KEY`).
    #[arg(long, env = "KG_FAKE_LLM_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Probability of HTTP 500.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Probability of HTTP 429 with Retry-After.
    #[arg(long, default_value_t = 0.0)]
    rate_limit_rate: f64,
    /// Retry-After sent with 429s, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    retry_after_ms: u64,
    /// Probability of a hang (see --hang-ms).
    #[arg(long, default_value_t = 0.0)]
    timeout_rate: f64,
    /// How long a hang lasts, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    hang_ms: u64,
    /// Probability of a connection cut mid-answer.
    #[arg(long, default_value_t = 0.0)]
    drop_rate: f64,
    /// Probability of a prose (non-JSON) chat answer.
    #[arg(long, default_value_t = 0.0)]
    non_json_rate: f64,
    /// Probability of JSON off the schema.
    #[arg(long, default_value_t = 0.0)]
    off_schema_rate: f64,
    /// Probability of truncated JSON.
    #[arg(long, default_value_t = 0.0)]
    truncated_rate: f64,
    /// Probability of an endless JSON answer cut at the request's token cap.
    #[arg(long, default_value_t = 0.0)]
    endless_json_rate: f64,
    /// Probability of hostile type names in an answer.
    #[arg(long, default_value_t = 0.0)]
    hostile_rate: f64,
    /// Leave `usage` out of answers.
    #[arg(long)]
    omit_usage: bool,
    /// Answer mode: also cite this source number (an invented citation).
    #[arg(long)]
    invent_citation: Option<usize>,
    /// Reject response_format json_schema with 400 (json_object still works).
    #[arg(long)]
    reject_json_schema: bool,
    /// Answer 404 to GET /v1/models (a server without the route).
    #[arg(long)]
    no_models_route: bool,
    /// Embedding dimension.
    #[arg(long, default_value_t = 64)]
    embedding_dim: usize,
    /// Switch the embedding dimension after N requests: `N:DIM`.
    #[arg(long, value_parser = parse_switch)]
    embedding_dim_switch: Option<(u64, usize)>,
    /// Answer 429 to the first N requests of every distinct text.
    #[arg(long, default_value_t = 0)]
    fail_first: u32,
    /// Scripted answers: JSON Lines of {"marker", "entities", "relations"};
    /// a chunk containing a marker gets that entry's entities.
    #[arg(long, value_name = "FILE")]
    script: Option<std::path::PathBuf>,
}

fn parse_switch(s: &str) -> Result<(u64, usize), String> {
    let (n, dim) = s.split_once(':').ok_or("expected N:DIM")?;
    Ok((
        n.parse().map_err(|e| format!("N: {e}"))?,
        dim.parse().map_err(|e| format!("DIM: {e}"))?,
    ))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let a = Args::parse();
    let script = match &a.script {
        None => kg_fake_llm::Script::default(),
        Some(p) => match kg_fake_llm::Script::from_file(p) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("kg-fake-llm: {e}");
                return std::process::ExitCode::from(2);
            }
        },
    };
    let config = FakeConfig {
        bind: SocketAddr::new(a.host, a.port),
        seed: a.seed,
        latency: Duration::from_millis(a.latency_ms),
        latency_jitter: Duration::from_millis(a.jitter_ms),
        api_key: a.api_key,
        faults: FaultRates {
            server_error: a.error_rate,
            rate_limited: a.rate_limit_rate,
            timeout: a.timeout_rate,
            dropped_connection: a.drop_rate,
            non_json: a.non_json_rate,
            off_schema: a.off_schema_rate,
            truncated: a.truncated_rate,
            endless_json: a.endless_json_rate,
        },
        fail_first_attempts: a.fail_first,
        forced_fault: Fault::RateLimited,
        hostile_types: a.hostile_rate,
        retry_after: Duration::from_millis(a.retry_after_ms),
        hang: Duration::from_millis(a.hang_ms),
        omit_usage: a.omit_usage,
        reject_json_schema: a.reject_json_schema,
        models_route: !a.no_models_route,
        embedding_dim: a.embedding_dim,
        embedding_dim_switch: a.embedding_dim_switch,
        invent_citation: a.invent_citation,
        script,
    };
    let server = match FakeLlm::start(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kg-fake-llm: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("kg-fake-llm listening on {}", server.base_url());
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("kg-fake-llm: cannot wait for Ctrl-C: {e}");
    }
    let counters = server.counters();
    server.shutdown().await;
    println!(
        "kg-fake-llm: served {} chat and {} embedding requests",
        counters.chat_requests, counters.embedding_requests
    );
    std::process::ExitCode::SUCCESS
}
