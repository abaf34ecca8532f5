//! A sentence-transformers model run in-process on the CPU: no network.
//!
//! The folder is the one `sentence-transformers` saves (`config.json`,
//! `tokenizer.json`, `model.safetensors`, optionally
//! `sentence_bert_config.json` and `1_Pooling/config.json`). The encoder is
//! candle's `BertModel`; the sentence vector is the mean of the token vectors
//! over the attention mask (or the `[CLS]` vector when the pooling config says
//! so), L2-normalised, which is what `SentenceTransformer.encode(...,
//! normalize_embeddings=True)` returns for BERT-family models.
//!
//! Design choices:
//! - **Truncation.** Each text is cut to the model's maximum sequence length
//!   (`max_seq_length` of `sentence_bert_config.json`, 256 word pieces for
//!   MiniLM, never more than `max_position_embeddings`). Longer chunks embed
//!   their beginning, exactly like sentence-transformers; they never crash.
//! - **Length-sorted batches.** A batch is padded to its longest text, and
//!   attention costs grow with the square of that length, so texts are sorted
//!   by token count before they are cut into batches; one long chunk no
//!   longer makes 31 short ones pay for its padding. Answers come back in the
//!   caller's order.
//! - **Blocking work off the runtime.** Inference is CPU-bound, so
//!   [`LocalEmbedder::embed`] runs it in `spawn_blocking`; candle spreads the
//!   matrix products over the cores itself, so one batch at a time
//!   ([`BatchLimits::concurrency`] = 1) already uses the machine.
//! - **Weights are read, not memory-mapped**: the safe loader copies them into
//!   memory (90 MB for MiniLM), so no `unsafe` is needed and a file changed
//!   under a running process cannot crash it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use futures::future::BoxFuture;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::{BatchLimits, EmbedError, Embedder};

/// Texts per forward pass unless configured otherwise.
pub const DEFAULT_LOCAL_BATCH: usize = 32;

/// How token vectors become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over the tokens the attention mask keeps (sentence-transformers'
    /// default, and MiniLM's).
    Mean,
    /// The first token's (`[CLS]`) vector.
    Cls,
}

/// Options of [`LocalEmbedder::load_with`].
#[derive(Debug, Clone)]
pub struct LocalEmbedConfig {
    /// Texts per forward pass.
    pub batch_size: usize,
    /// Overrides the maximum sequence length (word pieces, special tokens
    /// included) read from the folder. Clamped to the model's positions.
    pub max_seq_len: Option<usize>,
    /// What happens to a text longer than the sequence length.
    pub long_texts: LongTexts,
}

/// What happens to a text longer than the model's sequence length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LongTexts {
    /// Embed its beginning only (sentence-transformers' behaviour).
    Truncate,
    /// Embed it in windows of the sequence length that overlap by
    /// [`WINDOW_STRIDE`] word pieces, and take the mean of the window
    /// vectors, normalised: every word of the text counts. The model id
    /// gets a `+windows` suffix, so cached vectors of the two ways never
    /// mix.
    Windows,
}

/// Word pieces two consecutive windows share.
pub const WINDOW_STRIDE: usize = 32;

impl Default for LocalEmbedConfig {
    fn default() -> Self {
        Self {
            batch_size: DEFAULT_LOCAL_BATCH,
            max_seq_len: None,
            long_texts: LongTexts::Windows,
        }
    }
}

/// The subset of `sentence_bert_config.json` we read.
#[derive(Debug, Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

/// The subset of `1_Pooling/config.json` we read.
#[derive(Debug, Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
}

/// What `config.json` must say beyond candle's `Config` for us to check the
/// weights' shapes up front.
#[derive(Debug, Deserialize)]
struct ConfigShape {
    hidden_size: usize,
    max_position_embeddings: usize,
    #[serde(default)]
    pad_token_id: Option<u32>,
}

struct LocalModel {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    pooling: Pooling,
    pad_id: u32,
}

/// A sentence-transformers BERT model on the CPU.
#[derive(Clone)]
pub struct LocalEmbedder {
    inner: Arc<LocalModel>,
    long_texts: LongTexts,
    model_id: String,
    dimensions: usize,
    max_seq_len: usize,
    batch_size: usize,
    dir: PathBuf,
}

impl std::fmt::Debug for LocalEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEmbedder")
            .field("model_id", &self.model_id)
            .field("dir", &self.dir)
            .field("dimensions", &self.dimensions)
            .field("max_seq_len", &self.max_seq_len)
            .field("batch_size", &self.batch_size)
            .field("pooling", &self.inner.pooling)
            .finish()
    }
}

fn invalid(path: &Path, detail: impl std::fmt::Display) -> EmbedError {
    EmbedError::ModelInvalid {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    }
}

fn required(dir: &Path, file: &'static str) -> Result<PathBuf, EmbedError> {
    let path = dir.join(file);
    if path.is_file() {
        Ok(path)
    } else {
        Err(EmbedError::ModelFileMissing {
            dir: dir.to_path_buf(),
            file,
        })
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, EmbedError> {
    let bytes = std::fs::read(path).map_err(|e| invalid(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| invalid(path, format!("not valid JSON: {e}")))
}

/// Reads an optional JSON file: absent is `None`, present but broken is an
/// error (a half-written config must not be silently ignored).
fn read_optional_json<T: serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<Option<T>, EmbedError> {
    if path.is_file() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

impl LocalEmbedder {
    /// Loads a sentence-transformers folder with default options.
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        Self::load_with(dir, &LocalEmbedConfig::default())
    }

    /// Loads a sentence-transformers folder.
    ///
    /// Errors name the folder or file: a missing `config.json`,
    /// `tokenizer.json` or `model.safetensors`
    /// ([`EmbedError::ModelFileMissing`]), unparsable files or weights whose
    /// names or shapes do not match `config.json`
    /// ([`EmbedError::ModelInvalid`]).
    pub fn load_with(dir: &Path, config: &LocalEmbedConfig) -> Result<Self, EmbedError> {
        let started = std::time::Instant::now();
        if config.batch_size == 0 {
            return Err(EmbedError::Config(
                "local embedder batch size must be at least 1".into(),
            ));
        }
        if !dir.is_dir() {
            return Err(EmbedError::ModelFileMissing {
                dir: dir.to_path_buf(),
                file: "(the folder itself)",
            });
        }
        let config_path = required(dir, "config.json")?;
        let tokenizer_path = required(dir, "tokenizer.json")?;
        let weights_path = required(dir, "model.safetensors")?;

        let config_bytes = std::fs::read(&config_path).map_err(|e| invalid(&config_path, e))?;
        let bert_config: BertConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| invalid(&config_path, format!("not a BERT config.json: {e}")))?;
        let shape: ConfigShape = serde_json::from_slice(&config_bytes)
            .map_err(|e| invalid(&config_path, format!("not a BERT config.json: {e}")))?;
        if shape.hidden_size == 0 || shape.max_position_embeddings < 2 {
            return Err(invalid(
                &config_path,
                format!(
                    "hidden_size {} / max_position_embeddings {} cannot make a model",
                    shape.hidden_size, shape.max_position_embeddings
                ),
            ));
        }

        let sbert: Option<SentenceBertConfig> =
            read_optional_json(&dir.join("sentence_bert_config.json"))?;
        let pooling_cfg: Option<PoolingConfig> =
            read_optional_json(&dir.join("1_Pooling").join("config.json"))?;
        let pooling = match pooling_cfg {
            Some(p) if p.pooling_mode_cls_token && !p.pooling_mode_mean_tokens => Pooling::Cls,
            _ => Pooling::Mean,
        };
        let max_seq_len = config
            .max_seq_len
            .or(sbert.and_then(|s| s.max_seq_length))
            .unwrap_or(shape.max_position_embeddings)
            .clamp(2, shape.max_position_embeddings);

        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| invalid(&tokenizer_path, format!("not a tokenizer.json: {e}")))?;
        // Our own batching pads; the file's padding settings (if any) would
        // pad to a fixed length and waste work.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_seq_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: match config.long_texts {
                    LongTexts::Truncate => 0,
                    LongTexts::Windows => WINDOW_STRIDE.min(max_seq_len / 4),
                },
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| {
                invalid(
                    &tokenizer_path,
                    format!("cannot truncate to {max_seq_len}: {e}"),
                )
            })?;
        let pad_id = shape
            .pad_token_id
            .or_else(|| tokenizer.token_to_id("[PAD]"))
            .unwrap_or(0);

        let device = Device::Cpu;
        let tensors = candle_core::safetensors::load(&weights_path, &device)
            .map_err(|e| invalid(&weights_path, format!("not a safetensors file: {e}")))?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        let model = BertModel::load(vb, &bert_config).map_err(|e| {
            invalid(
                &weights_path,
                format!("weights do not match {}: {e}", config_path.display()),
            )
        })?;

        let mut model_id = model_id_for(dir, &config_bytes, &weights_path)?;
        if config.long_texts == LongTexts::Windows {
            model_id.push_str("+windows");
        }
        let embedder = LocalEmbedder {
            inner: Arc::new(LocalModel {
                model,
                tokenizer,
                device,
                pooling,
                pad_id,
            }),
            model_id,
            dimensions: shape.hidden_size,
            max_seq_len,
            batch_size: config.batch_size,
            dir: dir.to_path_buf(),
            long_texts: config.long_texts,
        };
        // A forward pass on a tiny input proves the weights have the shapes
        // the config promises (a wrong hidden size only shows at run time
        // otherwise, far from the folder that caused it).
        let probe = embedder
            .embed_blocking(&["probe".to_string()])
            .map_err(|e| invalid(&weights_path, format!("test inference failed: {e}")))?;
        if probe.first().map(Vec::len) != Some(shape.hidden_size) {
            return Err(invalid(
                &weights_path,
                format!(
                    "model produced {:?}-dimensional vectors, config.json says hidden_size {}",
                    probe.first().map(Vec::len),
                    shape.hidden_size
                ),
            ));
        }
        tracing::info!(
            model = %embedder.model_id,
            dir = %dir.display(),
            dimensions = embedder.dimensions,
            max_seq_len,
            ?pooling,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "local embedding model loaded"
        );
        Ok(embedder)
    }

    /// The folder the model was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Maximum word pieces per text (special tokens included); longer texts
    /// are truncated.
    pub fn max_seq_len(&self) -> usize {
        self.max_seq_len
    }

    /// Number of word pieces `text` becomes, after truncation.
    pub fn token_count(&self, text: &str) -> Result<usize, EmbedError> {
        let enc = self
            .inner
            .tokenizer
            .encode(text, true)
            .map_err(|e| self.inference_error(1, e))?;
        Ok(enc.get_ids().len())
    }

    fn inference_error(&self, batch_len: usize, e: impl std::fmt::Display) -> EmbedError {
        EmbedError::Inference {
            model: self.model_id.clone(),
            batch_len,
            detail: e.to_string(),
        }
    }

    /// Embeds `texts` on the calling thread (blocking): tokenise, sort by
    /// length, run batches, restore the caller's order.
    pub fn embed_blocking(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self
            .inner
            .tokenizer
            .encode_batch(texts.iter().map(String::as_str).collect::<Vec<_>>(), true)
            .map_err(|e| self.inference_error(texts.len(), e))?;
        // (text index, window): the first window of each text, and in
        // windows mode the rest of it too.
        let mut windows: Vec<(usize, &tokenizers::Encoding)> = Vec::new();
        for (i, e) in encodings.iter().enumerate() {
            windows.push((i, e));
            if self.long_texts == LongTexts::Windows {
                windows.extend(e.get_overflowing().iter().map(|o| (i, o)));
            }
        }
        let mut order: Vec<usize> = (0..windows.len()).collect();
        order.sort_by_key(|&w| windows.get(w).map_or(0, |(_, e)| e.get_ids().len()));

        let mut out: Vec<Option<Vec<f32>>> = vec![None; texts.len()];
        for batch in order.chunks(self.batch_size) {
            let batch_encodings: Vec<&tokenizers::Encoding> = batch
                .iter()
                .filter_map(|&w| windows.get(w).map(|(_, e)| *e))
                .collect();
            let vectors = self
                .forward(&batch_encodings)
                .map_err(|e| self.inference_error(batch.len(), e))?;
            for (&w, v) in batch.iter().zip(vectors) {
                let Some(&(i, _)) = windows.get(w) else {
                    continue;
                };
                if let Some(slot) = out.get_mut(i) {
                    match slot {
                        Some(sum) => sum.iter_mut().zip(&v).for_each(|(a, b)| *a += b),
                        None => *slot = Some(v),
                    }
                }
            }
        }
        // The mean of unit vectors, normalised (a no-op for one window).
        for v in out.iter_mut().flatten() {
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            v.iter_mut().for_each(|x| *x /= norm);
        }
        out.into_iter()
            .enumerate()
            .map(|(i, v)| {
                v.ok_or_else(|| {
                    self.inference_error(texts.len(), format!("no vector for text {i}"))
                })
            })
            .collect()
    }

    /// One forward pass over encodings of similar length.
    fn forward(&self, encodings: &[&tokenizers::Encoding]) -> candle_core::Result<Vec<Vec<f32>>> {
        let m = &self.inner;
        let n = encodings.len();
        let len = encodings
            .iter()
            .map(|e| e.get_ids().len())
            .max()
            .unwrap_or(0)
            .max(1);
        let mut ids = Vec::with_capacity(n * len);
        let mut type_ids = Vec::with_capacity(n * len);
        let mut mask = Vec::with_capacity(n * len);
        for e in encodings {
            let k = e.get_ids().len();
            ids.extend_from_slice(e.get_ids());
            type_ids.extend_from_slice(e.get_type_ids());
            mask.extend(std::iter::repeat_n(1u32, k));
            let pad = len - k;
            ids.extend(std::iter::repeat_n(m.pad_id, pad));
            type_ids.extend(std::iter::repeat_n(0u32, pad));
            mask.extend(std::iter::repeat_n(0u32, pad));
        }
        let input_ids = Tensor::from_vec(ids, (n, len), &m.device)?;
        let token_type_ids = Tensor::from_vec(type_ids, (n, len), &m.device)?;
        let attention_mask = Tensor::from_vec(mask, (n, len), &m.device)?;
        // (n, len, hidden)
        let hidden = m
            .model
            .forward(&input_ids, &token_type_ids, Some(&attention_mask))?;
        let pooled = match m.pooling {
            Pooling::Mean => {
                let mask = attention_mask.to_dtype(DType::F32)?.unsqueeze(2)?;
                let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
                let counts = mask.sum(1)?.clamp(1e-9f32, f32::MAX)?;
                summed.broadcast_div(&counts)?
            }
            Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
        };
        let norms = pooled
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()?
            .clamp(1e-12f32, f32::MAX)?;
        pooled.broadcast_div(&norms)?.to_vec2::<f32>()
    }
}

/// `local/<folder name>@<fingerprint>`: readable, and different whenever the
/// weights or the config differ (the fingerprint hashes config.json, the
/// safetensors header, which lists every tensor's name, shape and offsets,
/// and the weights file's size), so the embedding cache never serves a vector
/// of another model. Reading the header only keeps loading fast.
fn model_id_for(dir: &Path, config: &[u8], weights: &Path) -> Result<String, EmbedError> {
    use std::io::Read;
    let mut file = std::fs::File::open(weights).map_err(|e| invalid(weights, e))?;
    let size = file.metadata().map_err(|e| invalid(weights, e))?.len();
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes)
        .map_err(|e| invalid(weights, format!("cannot read safetensors header: {e}")))?;
    let header_len = u64::from_le_bytes(len_bytes).min(size).min(100 << 20);
    let mut header = Vec::new();
    file.take(header_len)
        .read_to_end(&mut header)
        .map_err(|e| invalid(weights, format!("cannot read safetensors header: {e}")))?;
    let mut h = Sha256::new();
    h.update(config);
    h.update(&header);
    h.update(size.to_le_bytes());
    let fingerprint = hex::encode(&h.finalize()[..4]);

    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mut names = canonical
        .components()
        .rev()
        .filter_map(|c| c.as_os_str().to_str())
        .filter(|s| !s.is_empty() && *s != "/");
    // A folder called just `model` (as in pip-installed model packages) says
    // nothing: use its parent's name.
    let name = match names.next() {
        Some(n) if n.eq_ignore_ascii_case("model") => names.next().unwrap_or(n),
        Some(n) => n,
        None => "model",
    };
    Ok(format!("local/{name}@{fingerprint}"))
}

impl Embedder for LocalEmbedder {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn dimensions(&self) -> Option<usize> {
        Some(self.dimensions)
    }

    fn batch_limits(&self) -> BatchLimits {
        BatchLimits {
            // A driver window of several forward passes lets the length sort
            // group similar texts.
            max_inputs: self.batch_size.saturating_mul(4),
            max_tokens: None,
            concurrency: 1,
        }
    }

    fn count_tokens(&self, text: &str) -> usize {
        self.token_count(text).unwrap_or(self.max_seq_len)
    }

    fn embed<'a>(
        &'a self,
        texts: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>> {
        let this = self.clone();
        let texts = texts.to_vec();
        Box::pin(async move {
            let batch_len = texts.len();
            match tokio::task::spawn_blocking(move || this.embed_blocking(&texts)).await {
                Ok(result) => result,
                Err(join) => Err(self.inference_error(batch_len, format!("worker thread: {join}"))),
            }
        })
    }
}
