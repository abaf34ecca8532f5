//! Prometheus metrics at `--metrics-addr HOST:PORT` for as long as a command
//! runs.
//!
//! The stage libraries and this binary record through the `metrics` facade;
//! installing the Prometheus recorder here makes all of them visible at
//! `/metrics`. The names this binary records are the constants below;
//! kg-store records its own per transaction (`kg_store_transaction_seconds`,
//! `kg_store_batch_rows`, `kg_store_retries_total`) under the same recorder.

use std::net::SocketAddr;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// Items a stage is working on right now (`stage` label).
pub const IN_FLIGHT: &str = "kg_stage_in_flight";
/// Items waiting in the channel in front of a stage (`stage` label).
pub const QUEUED: &str = "kg_stage_queued";
/// Items a stage finished (`stage`, `outcome` labels).
pub const ITEMS: &str = "kg_stage_items_total";
/// LLM calls made (cache misses).
pub const LLM_CALLS: &str = "kg_llm_calls_total";
/// LLM calls that were retries of an earlier call.
pub const LLM_RETRIES: &str = "kg_llm_retries_total";
/// LLM answers that were 429 (rate limited).
pub const LLM_RATE_LIMITED: &str = "kg_llm_rate_limited_total";
/// Answers served from the extraction or embedding cache (`stage` label).
pub const CACHE_HITS: &str = "kg_cache_hits_total";
/// Tokens used (`kind` = prompt | completion).
pub const TOKENS: &str = "kg_llm_tokens_total";
/// Records per window handed to the store (histogram); the store splits a
/// window into transactions (`kg_store_batch_rows`).
pub const WINDOW_RECORDS: &str = "kg_store_window_records";
/// Time to write one window, all its transactions (histogram, seconds).
pub const WINDOW_SECONDS: &str = "kg_store_window_seconds";
/// Store batches that failed after retries.
pub const FAILED_BATCHES: &str = "kg_store_failed_batches_total";
/// Bolt connections the store holds right now (Neo4j backend only).
pub const BOLT_CONNECTIONS_IN_USE: &str = "kg_bolt_connections_in_use";
/// The Bolt connection pool's size (Neo4j backend only).
pub const BOLT_CONNECTIONS_MAX: &str = "kg_bolt_connections_max";
/// Entities and relations a strict schema dropped (`kind` = entity |
/// relation, `type` = the answered type, or shape for relations).
pub const DROPPED_BY_SCHEMA: &str = "kg_extract_dropped_by_schema_total";
/// Embedding batch sizes (histogram).
pub const EMBED_BATCH_SIZE: &str = "kg_embed_batch_chunks";

/// Sets [`DROPPED_BY_SCHEMA`] from a run's counts (at most
/// `kg_extract::schema::MAX_DROP_TYPES` types per kind, so labels stay
/// bounded).
pub fn publish_schema_drops(drops: &kg_extract::SchemaDrops) {
    for (kind, map) in [("entity", &drops.entities), ("relation", &drops.relations)] {
        for (ty, n) in map {
            metrics::counter!(DROPPED_BY_SCHEMA, "kind" => kind, "type" => ty.clone()).absolute(*n);
        }
    }
}

/// The exporter could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {addr}: {message}")]
pub struct MetricsError {
    addr: SocketAddr,
    message: String,
}

/// Starts the `/metrics` listener; must run inside the tokio runtime.
pub fn serve(addr: SocketAddr) -> Result<(), MetricsError> {
    let err = |e: &dyn std::fmt::Display| MetricsError {
        addr,
        message: e.to_string(),
    };
    // Fail early and clearly if the port is taken (the exporter would only
    // log it from its background task).
    std::net::TcpListener::bind(addr).map_err(|e| err(&e))?;
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ],
        )
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Suffix("_records".into()),
                &[
                    1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
                ],
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Suffix("_rows".into()),
                &[
                    1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0,
                ],
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Suffix("_chunks".into()),
                &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
            )
        })
        .and_then(|b| b.install())
        .map_err(|e| err(&e))?;
    describe();
    Ok(())
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(IN_FLIGHT, "items a stage is working on");
    describe_gauge!(QUEUED, "items queued in front of a stage");
    describe_counter!(ITEMS, "items a stage finished, by outcome");
    describe_counter!(
        DROPPED_BY_SCHEMA,
        "entities and relations a strict extraction schema dropped, by kind and type"
    );
    describe_counter!(LLM_CALLS, "LLM calls made (cache misses)");
    describe_counter!(LLM_RETRIES, "LLM calls that retried an earlier one");
    describe_counter!(
        LLM_RATE_LIMITED,
        "LLM answers that were 429 Too Many Requests"
    );
    describe_counter!(CACHE_HITS, "answers served from the run-state cache");
    describe_counter!(TOKENS, "LLM tokens used");
    describe_histogram!(
        WINDOW_RECORDS,
        Unit::Count,
        "records per window handed to the store"
    );
    describe_histogram!(
        WINDOW_SECONDS,
        Unit::Seconds,
        "time to write one store window"
    );
    describe_histogram!(
        kg_store::writer::TRANSACTION_SECONDS,
        Unit::Seconds,
        "time of each store transaction, by group and outcome"
    );
    describe_histogram!(
        kg_store::writer::BATCH_ROWS,
        Unit::Count,
        "rows per committed transaction, as the adaptive batch sizer chose them"
    );
    describe_counter!(
        kg_store::writer::RETRIES,
        "store transactions retried after a transient failure"
    );
    describe_counter!(FAILED_BATCHES, "store batches that failed after retries");
    describe_histogram!(EMBED_BATCH_SIZE, Unit::Count, "chunks per embedding batch");
    describe_gauge!(
        BOLT_CONNECTIONS_IN_USE,
        "Bolt connections the store holds (one per open transaction)"
    );
    describe_gauge!(BOLT_CONNECTIONS_MAX, "size of the Bolt connection pool");
}
