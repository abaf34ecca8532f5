//! A sentence-transformers model run in-process on the CPU: no network.
//!
//! The folder is the one `sentence-transformers` saves (`config.json`,
//! `tokenizer.json`, `model.safetensors`, optionally
//! `sentence_bert_config.json` and `1_Pooling/config.json`). The encoder is
//! a BERT forward pass written out in [`bert`] on top of the `gemm` crate;
//! the sentence vector is the mean of the token vectors (or the `[CLS]`
//! vector when the pooling config says so), L2-normalised, which is what
//! `SentenceTransformer.encode(..., normalize_embeddings=True)` returns for
//! BERT-family models.
//!
//! Design choices:
//! - **Long texts.** The model reads at most its maximum sequence length
//!   (`max_seq_length` of `sentence_bert_config.json`, 256 word pieces for
//!   MiniLM, never more than `max_position_embeddings`). By default
//!   ([`LongTexts::Windows`]) a longer text is embedded in windows of that
//!   length overlapping by [`WINDOW_STRIDE`] word pieces, and its vector is
//!   the mean of the window vectors, normalised, so every word of a chunk
//!   counts; [`LongTexts::Truncate`] embeds the beginning only, exactly
//!   like sentence-transformers. Neither ever crashes.
//! - **No padding.** A forward pass stacks the word pieces of its texts
//!   (at most `batch_size` texts and [`bert::MAX_PASS_TOKENS`] word pieces)
//!   into one matrix; attention runs per text, so a long chunk costs the
//!   short ones in its pass nothing, and no length sorting is needed.
//! - **Blocking work off the runtime.** Inference is CPU-bound, so
//!   [`LocalEmbedder::embed`] runs it in `spawn_blocking`; the matrix
//!   products and the attention heads are spread over the cores (rayon), so
//!   one batch at a time ([`BatchLimits::concurrency`] = 1) already uses the
//!   machine.
//! - **Memory.** Weights are read into memory tensor by tensor (90 MB for
//!   MiniLM; no memory map, so a file changed under a running process cannot
//!   crash it); the activation buffers are kept and reused between passes
//!   (under 40 MB for a full pass of MiniLM).

mod bert;
mod matmul;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use self::bert::{Bert, BertConfig, Sequence, Workspace};
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

struct LocalModel {
    bert: Bert,
    tokenizer: Tokenizer,
    pooling: Pooling,
    /// Activation buffers, reused by every pass (one pass at a time: each
    /// already uses every core).
    workspace: Mutex<Workspace>,
}

/// A sentence-transformers BERT model on the CPU.
#[derive(Clone)]
pub struct LocalEmbedder {
    inner: Arc<LocalModel>,
    model_id: String,
    dimensions: usize,
    max_seq_len: usize,
    batch_size: usize,
    long_texts: LongTexts,
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
            .field("long_texts", &self.long_texts)
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
        bert_config
            .validate()
            .map_err(|e| invalid(&config_path, e))?;

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
            .unwrap_or(bert_config.max_position_embeddings)
            .clamp(2, bert_config.max_position_embeddings);

        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| invalid(&tokenizer_path, format!("not a tokenizer.json: {e}")))?;
        // Our own batching pads; the file's padding settings (if any) would
        // pad to a fixed length and waste work.
        tokenizer.with_padding(None);
        // Windows are cut by `windows` below: the tokenizer's own
        // overflowing windows do not cover a long text evenly.
        let truncation = match config.long_texts {
            LongTexts::Truncate => Some(TruncationParams {
                max_length: max_seq_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }),
            LongTexts::Windows => None,
        };
        tokenizer.with_truncation(truncation).map_err(|e| {
            invalid(
                &tokenizer_path,
                format!("cannot truncate to {max_seq_len}: {e}"),
            )
        })?;
        let bert = Bert::load(&weights_path, &bert_config).map_err(|e| match e {
            bert::LoadError::File(e) => invalid(&weights_path, e),
            bert::LoadError::Mismatch(e) => invalid(
                &weights_path,
                format!("weights do not match {}: {e}", config_path.display()),
            ),
        })?;

        let mut model_id = model_id_for(dir, &config_bytes, &weights_path)?;
        if config.long_texts == LongTexts::Windows {
            model_id.push_str("+windows");
        }
        let embedder = LocalEmbedder {
            inner: Arc::new(LocalModel {
                bert,
                tokenizer,
                pooling,
                workspace: Mutex::new(Workspace::default()),
            }),
            model_id,
            dimensions: bert_config.hidden_size,
            max_seq_len,
            batch_size: config.batch_size,
            long_texts: config.long_texts,
            dir: dir.to_path_buf(),
        };
        // A forward pass on a tiny input proves the weights have the shapes
        // the config promises (a wrong hidden size only shows at run time
        // otherwise, far from the folder that caused it).
        let probe = embedder
            .embed_blocking(&["probe".to_string()])
            .map_err(|e| invalid(&weights_path, format!("test inference failed: {e}")))?;
        if probe.first().map(Vec::len) != Some(bert_config.hidden_size) {
            return Err(invalid(
                &weights_path,
                format!(
                    "model produced {:?}-dimensional vectors, config.json says hidden_size {}",
                    probe.first().map(Vec::len),
                    bert_config.hidden_size
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

    /// Maximum word pieces per forward pass of one text (special tokens
    /// included); longer texts are embedded in windows or truncated
    /// ([`LongTexts`]).
    pub fn max_seq_len(&self) -> usize {
        self.max_seq_len
    }

    /// Number of word pieces `text` becomes, special tokens included: at
    /// most [`Self::max_seq_len`] with [`LongTexts::Truncate`], all of them
    /// with [`LongTexts::Windows`].
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

    /// Embeds `texts` on the calling thread (blocking): tokenise, then run
    /// forward passes of at most `batch_size` texts and
    /// [`bert::MAX_PASS_TOKENS`] word pieces. A text longer than the
    /// sequence length is embedded in windows and pooled, or truncated
    /// ([`LongTexts`]). Vectors come back in the caller's order.
    pub fn embed_blocking(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self
            .inner
            .tokenizer
            .encode_batch(texts.iter().map(String::as_str).collect::<Vec<_>>(), true)
            .map_err(|e| self.inference_error(texts.len(), e))?;
        // A panic in another thread's pass leaves nothing half-valid behind:
        // the buffers are rewritten by every pass.
        let mut workspace = self
            .inner
            .workspace
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // (text index, word pieces, type ids) of every window.
        let mut windows: Vec<(usize, Vec<u32>, Vec<u32>)> = Vec::new();
        for (i, e) in encodings.iter().enumerate() {
            let stride = WINDOW_STRIDE.min(self.max_seq_len / 4);
            windows.extend(
                cut_windows(e, self.max_seq_len, stride)
                    .into_iter()
                    .map(|(ids, types)| (i, ids, types)),
            );
        }
        let lengths: Vec<usize> = windows.iter().map(|(_, ids, _)| ids.len()).collect();
        // Per text: the sum of its window vectors and how many there were.
        let mut sums: Vec<(Option<Vec<f32>>, usize)> = vec![(None, 0); texts.len()];
        let mut rest = windows.as_slice();
        for size in plan_passes(&lengths, self.batch_size, bert::MAX_PASS_TOKENS) {
            let (pass, tail) = rest.split_at(size.min(rest.len()));
            rest = tail;
            let seqs: Vec<Sequence<'_>> = pass
                .iter()
                .map(|(_, ids, type_ids)| Sequence { ids, type_ids })
                .collect();
            let vectors = self
                .inner
                .bert
                .embed(&seqs, self.inner.pooling, &mut workspace)
                .map_err(|e| self.inference_error(pass.len(), e))?;
            for (&(i, _, _), v) in pass.iter().zip(vectors) {
                if let Some((slot, n)) = sums.get_mut(i) {
                    *n += 1;
                    match slot {
                        Some(sum) => sum.iter_mut().zip(&v).for_each(|(a, b)| *a += b),
                        None => *slot = Some(v),
                    }
                }
            }
        }
        sums.into_iter()
            .enumerate()
            .map(|(i, (v, n))| {
                let mut v = v.ok_or_else(|| {
                    self.inference_error(texts.len(), format!("no vector for text {i}"))
                })?;
                // The mean of unit vectors, normalised. A text of one
                // window keeps the model's vector bit for bit.
                if n > 1 {
                    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                    v.iter_mut().for_each(|x| *x /= norm);
                }
                Ok(v)
            })
            .collect()
    }
}

/// The windows of one encoded text: the text itself when it has at most
/// `max_len` word pieces; else the fewest windows of exactly `max_len` word
/// pieces (the text's leading and trailing special tokens, `[CLS]` and
/// `[SEP]`, around a run of its other pieces) that cover it with at least
/// `stride` pieces shared by neighbours, their starts spread evenly, so
/// every window is full and no piece is left out.
fn cut_windows(
    e: &tokenizers::Encoding,
    max_len: usize,
    stride: usize,
) -> Vec<(Vec<u32>, Vec<u32>)> {
    let (ids, types) = (e.get_ids(), e.get_type_ids());
    if ids.len() <= max_len || types.len() != ids.len() {
        return vec![(ids.to_vec(), types.to_vec())];
    }
    let special = e.get_special_tokens_mask();
    let head = special.iter().take_while(|&&m| m == 1).count();
    let tail = special.iter().rev().take_while(|&&m| m == 1).count();
    let body = head..ids.len().saturating_sub(tail).max(head);
    let room = max_len.saturating_sub(head + tail).max(1);
    let len = body.len();
    if len <= room {
        return vec![(ids.to_vec(), types.to_vec())];
    }
    let step = room.saturating_sub(stride).max(1);
    // The fewest windows whose neighbours overlap by `stride` or more.
    let n = (len - room).div_ceil(step) + 1;
    let around = |v: &[u32], from: usize, to: usize| -> Vec<u32> {
        let mut w = Vec::with_capacity(max_len);
        w.extend_from_slice(v.get(..head).unwrap_or_default());
        w.extend_from_slice(v.get(from..to).unwrap_or_default());
        w.extend_from_slice(v.get(body.end..).unwrap_or_default());
        w
    };
    (0..n)
        .map(|k| {
            // Evenly spread: the first window starts the body, the last
            // ends it.
            let start = body.start + (k * (len - room) + (n - 1) / 2) / (n - 1);
            (
                around(ids, start, start + room),
                around(types, start, start + room),
            )
        })
        .collect()
}

/// Cuts texts of these word-piece counts, in order, into forward passes of
/// at most `max_texts` texts and `max_tokens` word pieces (a text longer than
/// `max_tokens` goes alone). Returns the number of texts of each pass.
fn plan_passes(lengths: &[usize], max_texts: usize, max_tokens: usize) -> Vec<usize> {
    let mut passes = Vec::new();
    let (mut texts, mut tokens) = (0, 0);
    for &len in lengths {
        if texts > 0 && (texts == max_texts || tokens + len > max_tokens) {
            passes.push(texts);
            (texts, tokens) = (0, 0);
        }
        texts += 1;
        tokens += len;
    }
    if texts > 0 {
        passes.push(texts);
    }
    passes
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

#[cfg(test)]
mod tests {
    use super::{cut_windows, plan_passes};

    /// An encoding like BERT's: `[CLS]` (101), the pieces 1..=n, `[SEP]`
    /// (102).
    fn encoding(n: u32) -> tokenizers::Encoding {
        let ids: Vec<u32> = std::iter::once(101)
            .chain(1..=n)
            .chain(std::iter::once(102))
            .collect();
        let len = ids.len();
        let mut special = vec![0; len];
        special[0] = 1;
        special[len - 1] = 1;
        tokenizers::Encoding::new(
            ids,
            vec![0; len],
            vec![String::new(); len],
            vec![None; len],
            vec![(0, 0); len],
            special,
            vec![1; len],
            Vec::new(),
            Default::default(),
        )
    }

    #[test]
    fn windows_are_full_cover_the_text_and_overlap() {
        // Short enough: the text itself.
        let short = cut_windows(&encoding(254), 256, 32);
        assert_eq!(short.len(), 1);
        assert_eq!(short[0].0.len(), 256);
        for n in [255u32, 300, 476, 477, 480, 1000, 5000] {
            let windows = cut_windows(&encoding(n), 256, 32);
            assert!(windows.len() >= 2, "{n}");
            let mut covered = vec![false; n as usize + 1];
            let mut previous: Option<(u32, u32)> = None;
            for (ids, types) in &windows {
                assert_eq!(ids.len(), 256, "{n}: every window is full");
                assert_eq!(types.len(), 256);
                assert_eq!((ids[0], ids[255]), (101, 102), "{n}: [CLS] .. [SEP]");
                let body = &ids[1..255];
                assert!(body.windows(2).all(|p| p[1] == p[0] + 1), "{n}: contiguous");
                body.iter().for_each(|&p| covered[p as usize] = true);
                let (first, last) = (body[0], body[253]);
                if let Some((_, previous_last)) = previous {
                    assert!(
                        previous_last + 1 >= first + 32,
                        "{n}: overlap of 32 or more"
                    );
                }
                previous = Some((first, last));
            }
            assert!(
                covered[1..].iter().all(|&c| c),
                "{n}: every piece in a window"
            );
            // No more windows than needed.
            let step = 254 - 32;
            assert_eq!(windows.len(), (n as usize - 254).div_ceil(step) + 1, "{n}");
        }
    }

    #[test]
    fn passes_respect_the_text_and_word_piece_limits() {
        assert_eq!(plan_passes(&[], 32, 4096), Vec::<usize>::new());
        // 24 texts of 256 word pieces: 16 fill the 4096 budget.
        assert_eq!(plan_passes(&[256; 24], 32, 4096), vec![16, 8]);
        // Short texts: the text limit cuts.
        assert_eq!(plan_passes(&[10; 70], 32, 4096), vec![32, 32, 6]);
        // A text over the budget goes alone, the others around it pack.
        assert_eq!(plan_passes(&[100, 5000, 100, 100], 32, 4096), vec![1, 1, 2]);
        assert_eq!(plan_passes(&[3, 4, 5], 1, 4096), vec![1, 1, 1]);
        let lengths = [7, 300, 2, 256, 256, 9, 4000, 1];
        let plan = plan_passes(&lengths, 3, 512);
        assert_eq!(plan.iter().sum::<usize>(), lengths.len());
        let mut at = 0;
        for size in plan {
            let pass = &lengths[at..at + size];
            assert!(size <= 3);
            assert!(size == 1 || pass.iter().sum::<usize>() <= 512, "{pass:?}");
            at += size;
        }
    }
}
