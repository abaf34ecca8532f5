//! The BERT encoder of a sentence-transformers model, written out for the
//! CPU on top of the `gemm` crate.
//!
//! Why not a tensor library: for a small encoder like all-MiniLM-L6-v2 the
//! time goes into a few big matrix products and a handful of element-wise
//! passes; a generic runtime adds padding, copies between layouts and
//! temporaries per operation, and an exact `erf` that is not vectorised.
//! Here:
//! - **No padding.** The tokens of every text of a pass are stacked into one
//!   `tokens × hidden` matrix; the linear layers run once over all of them,
//!   attention runs per text and head over that text's own tokens only.
//! - **Fused steps.** The attention output and the feed-forward output are
//!   accumulated straight onto the residual stream by the matrix product
//!   (`x += h · Wᵀ`); the bias is added in the layer-norm pass; bias and GELU
//!   are one pass over the intermediate activations.
//! - **Vectorised element-wise code.** `exp` (softmax) and `erf` (GELU) are
//!   branch-free polynomials the compiler turns into AVX2/FMA code (chosen
//!   at run time, with a portable fallback); layer norm and softmax reduce
//!   with several accumulators.
//! - **Reused buffers.** The activations live in a [`Workspace`] kept
//!   between calls; a pass is capped at [`MAX_PASS_TOKENS`] tokens so that
//!   workspace stays a few tens of MB whatever the batch size.
//!
//! The numbers are those of the PyTorch model (same formulas, f32
//! throughout, exact-erf GELU to 1.5e-7); the tests check the vectors
//! against reference vectors of the previous implementation (candle's
//! `BertModel`) and of sentence-transformers.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde::Deserialize;

use super::matmul::{matmul_acc, Packed};
use super::Pooling;

/// Most tokens one forward pass holds (the sum over its texts). Bounds the
/// workspace: activations are `tokens × (hidden + 3·hidden + hidden +
/// intermediate)` floats, 9 MB per 1 000 tokens for MiniLM.
pub(crate) const MAX_PASS_TOKENS: usize = 4096;

/// What `config.json` says about the encoder.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
    #[serde(default)]
    pub model_type: Option<String>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

/// The feed-forward activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    /// `x · Φ(x)` with the exact `erf` (BERT's and MiniLM's `gelu`).
    GeluErf,
    /// The tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    Relu,
}

impl BertConfig {
    /// Checks what the forward pass relies on; the message says what is wrong.
    /// (Whether the heads divide the hidden size is checked with the
    /// weights, so that a wrong size is reported as weights not matching.)
    pub fn validate(&self) -> Result<(), String> {
        if self.max_position_embeddings < 2
            || self.hidden_size == 0
            || self.num_attention_heads == 0
            || self.vocab_size == 0
            || self.intermediate_size == 0
            || self.type_vocab_size == 0
        {
            return Err(format!(
                "hidden_size {} / num_attention_heads {} / vocab_size {} / \
                 max_position_embeddings {} / intermediate_size {} / type_vocab_size {} \
                 cannot make a model",
                self.hidden_size,
                self.num_attention_heads,
                self.vocab_size,
                self.max_position_embeddings,
                self.intermediate_size,
                self.type_vocab_size
            ));
        }
        match self.position_embedding_type.as_deref() {
            None | Some("absolute") => {}
            Some(other) => {
                return Err(format!(
                    "position_embedding_type {other:?} is not supported"
                ))
            }
        }
        self.act().map(|_| ())
    }

    fn act(&self) -> Result<Act, String> {
        match self.hidden_act.as_str() {
            "gelu" => Ok(Act::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_approximate" | "gelu_fast" => {
                Ok(Act::GeluTanh)
            }
            "relu" => Ok(Act::Relu),
            other => Err(format!("hidden_act {other:?} is not supported")),
        }
    }
}

struct Linear {
    w: Packed,
    b: Vec<f32>,
}

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

struct Layer {
    /// Query, key and value stacked: `hidden × 3·hidden`.
    qkv: Linear,
    attn_out: Linear,
    ln_attn: Norm,
    up: Linear,
    down: Linear,
    ln_out: Norm,
}

/// The weights of a BERT encoder.
pub(crate) struct Bert {
    hidden: usize,
    heads: usize,
    eps: f32,
    act: Act,
    max_positions: usize,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    ln_embed: Norm,
    layers: Vec<Layer>,
}

/// One text, as word pieces (special tokens included).
pub(crate) struct Sequence<'a> {
    pub ids: &'a [u32],
    pub type_ids: &'a [u32],
}

/// Activation buffers reused from one forward pass to the next.
#[derive(Default)]
pub(crate) struct Workspace {
    x: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
}

// ---------------------------------------------------------------------------
// Loading

/// Why the weights could not be loaded.
#[derive(Debug)]
pub(crate) enum LoadError {
    /// The file is unreadable or not a safetensors file.
    File(String),
    /// A tensor is missing or its shape is not the one the config implies.
    Mismatch(String),
}

#[derive(Debug, Deserialize)]
struct TensorInfo {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [u64; 2],
}

/// A safetensors file: its header, and the file to read tensors from one
/// at a time (so loading never holds the file's bytes and the converted
/// weights at once).
struct SafeTensors {
    file: std::fs::File,
    data_start: u64,
    data_len: u64,
    tensors: BTreeMap<String, TensorInfo>,
}

impl SafeTensors {
    fn open(path: &Path) -> Result<Self, LoadError> {
        Self::open_inner(path).map_err(LoadError::File)
    }

    fn open_inner(path: &Path) -> Result<Self, String> {
        let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
        let size = file.metadata().map_err(|e| e.to_string())?.len();
        let mut len_bytes = [0u8; 8];
        file.read_exact(&mut len_bytes)
            .map_err(|e| format!("not a safetensors file: cannot read its header: {e}"))?;
        let header_len = u64::from_le_bytes(len_bytes);
        if header_len > size.saturating_sub(8) || header_len > 100 << 20 {
            return Err(format!(
                "not a safetensors file: header of {header_len} bytes in a {size}-byte file"
            ));
        }
        let mut header = vec![0u8; header_len as usize];
        file.read_exact(&mut header)
            .map_err(|e| format!("not a safetensors file: cannot read its header: {e}"))?;
        let raw: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&header)
            .map_err(|e| format!("not a safetensors file: bad header: {e}"))?;
        let mut tensors = BTreeMap::new();
        for (name, value) in raw {
            if name == "__metadata__" {
                continue;
            }
            let info: TensorInfo = serde_json::from_value(value)
                .map_err(|e| format!("not a safetensors file: tensor {name}: {e}"))?;
            tensors.insert(name, info);
        }
        let data_start = 8 + header_len;
        Ok(Self {
            file,
            data_start,
            data_len: size - data_start,
            tensors,
        })
    }

    fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Reads tensor `name` as f32, checking it has `shape`.
    fn read(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>, LoadError> {
        let info = self
            .tensors
            .get(name)
            .ok_or_else(|| LoadError::Mismatch(format!("tensor {name} is missing")))?;
        if info.shape != shape {
            return Err(LoadError::Mismatch(format!(
                "tensor {name} has shape {:?}, expected {shape:?}",
                info.shape
            )));
        }
        self.read_data(name, shape.iter().product())
            .map_err(LoadError::File)
    }

    fn read_data(&mut self, name: &str, count: usize) -> Result<Vec<f32>, String> {
        let Some(info) = self.tensors.get(name) else {
            return Err(format!("tensor {name} is missing"));
        };
        let width = match info.dtype.as_str() {
            "F32" => 4,
            "F16" | "BF16" => 2,
            other => {
                return Err(format!(
                    "tensor {name} has dtype {other}, expected F32/F16/BF16"
                ))
            }
        };
        let [begin, end] = info.data_offsets;
        if end < begin || end > self.data_len || end - begin != (count * width) as u64 {
            return Err(format!(
                "tensor {name}: data offsets {begin}..{end} do not fit its shape or the file"
            ));
        }
        let dtype = info.dtype.clone();
        self.file
            .seek(SeekFrom::Start(self.data_start + begin))
            .map_err(|e| format!("tensor {name}: {e}"))?;
        let read_error = |e: std::io::Error| format!("tensor {name}: {e}");
        if dtype == "F32" {
            // Straight into the f32 buffer: no second copy of the weights.
            let mut out = vec![0.0f32; count];
            self.file
                .read_exact(bytemuck::cast_slice_mut(&mut out))
                .map_err(read_error)?;
            if cfg!(target_endian = "big") {
                for v in &mut out {
                    *v = f32::from_bits(v.to_bits().swap_bytes());
                }
            }
            return Ok(out);
        }
        let mut halves = vec![0u16; count];
        self.file
            .read_exact(bytemuck::cast_slice_mut(&mut halves))
            .map_err(read_error)?;
        let out = halves
            .into_iter()
            .map(u16::from_le)
            .map(|h| {
                if dtype == "F16" {
                    f16_to_f32(h)
                } else {
                    f32::from_bits(u32::from(h) << 16)
                }
            })
            .collect();
        Ok(out)
    }
}

/// IEEE half to single precision.
fn f16_to_f32(h: u16) -> f32 {
    let negative = h >> 15 == 1;
    let exp = u32::from((h >> 10) & 0x1f);
    let mant = u32::from(h & 0x3ff);
    let magnitude = match exp {
        // Zero and subnormals: mant · 2^-24.
        0 => mant as f32 * (1.0 / 16_777_216.0),
        0x1f if mant == 0 => f32::INFINITY,
        0x1f => f32::NAN,
        _ => f32::from_bits(((exp + 112) << 23) | (mant << 13)),
    };
    if negative {
        -magnitude
    } else {
        magnitude
    }
}

struct Loader {
    st: SafeTensors,
    prefix: String,
}

impl Loader {
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>, LoadError> {
        self.st.read(&format!("{}{name}", self.prefix), shape)
    }

    fn norm(&mut self, name: &str, h: usize) -> Result<Norm, LoadError> {
        Ok(Norm {
            gamma: self.tensor(&format!("{name}.weight"), &[h])?,
            beta: self.tensor(&format!("{name}.bias"), &[h])?,
        })
    }

    fn linear(&mut self, name: &str, n_out: usize, n_in: usize) -> Result<Linear, LoadError> {
        let w = self.tensor(&format!("{name}.weight"), &[n_out, n_in])?;
        Ok(Linear {
            w: Packed::from_torch(&w, n_out, n_in),
            b: self.tensor(&format!("{name}.bias"), &[n_out])?,
        })
    }

    /// Query, key and value as one `[3·h, h]` layer.
    fn qkv(&mut self, name: &str, h: usize) -> Result<Linear, LoadError> {
        let mut w = Vec::with_capacity(3 * h * h);
        let mut b = Vec::with_capacity(3 * h);
        for part in ["query", "key", "value"] {
            w.extend(self.tensor(&format!("{name}.{part}.weight"), &[h, h])?);
            b.extend(self.tensor(&format!("{name}.{part}.bias"), &[h])?);
        }
        Ok(Linear {
            w: Packed::from_torch(&w, 3 * h, h),
            b,
        })
    }
}

impl Bert {
    /// Loads the encoder's weights from a safetensors file, checking every
    /// tensor's shape against `config`. Weights may be stored with a `bert.`
    /// (or `<model_type>.`) prefix or without.
    pub fn load(path: &Path, config: &BertConfig) -> Result<Self, LoadError> {
        config.validate().map_err(LoadError::Mismatch)?;
        let act = config.act().map_err(LoadError::Mismatch)?;
        let st = SafeTensors::open(path)?;
        let mut prefixes = vec![String::new(), "bert.".to_string()];
        if let Some(model_type) = &config.model_type {
            prefixes.push(format!("{model_type}."));
        }
        let prefix = prefixes
            .into_iter()
            .find(|p| st.contains(&format!("{p}embeddings.word_embeddings.weight")))
            .ok_or_else(|| {
                LoadError::Mismatch("tensor embeddings.word_embeddings.weight is missing".into())
            })?;
        let h = config.hidden_size;
        let inter = config.intermediate_size;
        let mut ld = Loader { st, prefix };
        let ln_embed = ld.norm("embeddings.LayerNorm", h)?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            let qkv = ld.qkv(&format!("{p}.attention.self"), h)?;
            layers.push(Layer {
                qkv,
                attn_out: ld.linear(&format!("{p}.attention.output.dense"), h, h)?,
                ln_attn: ld.norm(&format!("{p}.attention.output.LayerNorm"), h)?,
                up: ld.linear(&format!("{p}.intermediate.dense"), inter, h)?,
                down: ld.linear(&format!("{p}.output.dense"), h, inter)?,
                ln_out: ld.norm(&format!("{p}.output.LayerNorm"), h)?,
            });
        }
        let word = ld.tensor("embeddings.word_embeddings.weight", &[config.vocab_size, h])?;
        let position = ld.tensor(
            "embeddings.position_embeddings.weight",
            &[config.max_position_embeddings, h],
        )?;
        let token_type = ld.tensor(
            "embeddings.token_type_embeddings.weight",
            &[config.type_vocab_size, h],
        )?;
        if !h.is_multiple_of(config.num_attention_heads) {
            return Err(LoadError::Mismatch(format!(
                "hidden_size {h} is not a multiple of num_attention_heads {}",
                config.num_attention_heads
            )));
        }
        Ok(Self {
            hidden: h,
            heads: config.num_attention_heads,
            eps: config.layer_norm_eps as f32,
            act,
            max_positions: config.max_position_embeddings,
            word,
            position,
            token_type,
            ln_embed,
            layers,
        })
    }

    /// Encodes `seqs` in one pass and pools each into a unit vector.
    /// Errors name the bad input (a word piece outside the vocabulary, a
    /// text longer than the position table).
    pub fn embed(
        &self,
        seqs: &[Sequence<'_>],
        pool: Pooling,
        ws: &mut Workspace,
    ) -> Result<Vec<Vec<f32>>, String> {
        let h = self.hidden;
        let total: usize = seqs.iter().map(|s| s.ids.len()).sum();
        let mut offsets = Vec::with_capacity(seqs.len());
        let mut at = 0;
        for s in seqs {
            offsets.push(at);
            at += s.ids.len();
        }
        resize(&mut ws.x, total * h);
        resize(&mut ws.qkv, total * 3 * h);
        resize(&mut ws.ctx, total * h);
        self.embeddings(seqs, &mut ws.x)?;
        for layer in &self.layers {
            self.layer(layer, seqs, &offsets, ws, total);
        }
        let mut out = Vec::with_capacity(seqs.len());
        for (s, &off) in seqs.iter().zip(&offsets) {
            let rows =
                ws.x.get(off * h..(off + s.ids.len()) * h)
                    .unwrap_or_default();
            let mut v = vec![0.0f32; h];
            match pool {
                Pooling::Mean => {
                    for row in rows.chunks_exact(h) {
                        for (a, &b) in v.iter_mut().zip(row) {
                            *a += b;
                        }
                    }
                    let n = (s.ids.len() as f32).max(1e-9);
                    v.iter_mut().for_each(|a| *a /= n);
                }
                Pooling::Cls => {
                    if let Some(first) = rows.get(..h) {
                        v.copy_from_slice(first);
                    }
                }
            }
            let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
            v.iter_mut().for_each(|a| *a /= norm);
            out.push(v);
        }
        Ok(out)
    }

    fn embeddings(&self, seqs: &[Sequence<'_>], x: &mut [f32]) -> Result<(), String> {
        let h = self.hidden;
        let mut rows = x.chunks_exact_mut(h);
        for (n, s) in seqs.iter().enumerate() {
            if s.ids.len() > self.max_positions {
                return Err(format!(
                    "text {n} has {} word pieces, the model takes at most {}",
                    s.ids.len(),
                    self.max_positions
                ));
            }
            for (pos, (&id, &tt)) in s.ids.iter().zip(s.type_ids).enumerate() {
                let row = rows.next().ok_or("row count mismatch")?;
                let word = self
                    .word
                    .get(id as usize * h..(id as usize + 1) * h)
                    .ok_or_else(|| format!("word piece id {id} is outside the vocabulary"))?;
                let typ = self
                    .token_type
                    .get(tt as usize * h..(tt as usize + 1) * h)
                    .ok_or_else(|| format!("token type id {tt} is outside the model's"))?;
                let position = self
                    .position
                    .get(pos * h..(pos + 1) * h)
                    .unwrap_or_default();
                for (((r, &w), &t), &p) in row.iter_mut().zip(word).zip(typ).zip(position) {
                    *r = w + t + p;
                }
                layer_norm(row, None, &self.ln_embed, self.eps);
            }
        }
        Ok(())
    }

    fn layer(
        &self,
        layer: &Layer,
        seqs: &[Sequence<'_>],
        offsets: &[usize],
        ws: &mut Workspace,
        total: usize,
    ) {
        use rayon::prelude::*;
        let h = self.hidden;
        let block = row_block(total);
        // Q, K, V for every token (bias first, the product added), a block
        // of rows per task: a core slowed by another process takes fewer
        // blocks instead of holding up the others.
        ws.x.par_chunks(block * h)
            .zip(ws.qkv.par_chunks_mut(block * 3 * h))
            .for_each(|(x, qkv)| {
                for row in qkv.chunks_exact_mut(3 * h) {
                    row.copy_from_slice(&layer.qkv.b);
                }
                matmul_acc(qkv, x, &layer.qkv.w);
            });
        // Attention per text and head, over that text's tokens only.
        self.attention(seqs, offsets, &ws.qkv, &mut ws.ctx);
        // The rest is row by row, one block of rows per task:
        // x = LayerNorm(x + ctx · Wo + bo), then
        // x = LayerNorm(x + act(x · W1 + b1) · W2 + b2).
        ws.x.par_chunks_mut(block * h)
            .zip(ws.ctx.par_chunks(block * h))
            .for_each(|(x, ctx)| {
                matmul_acc(x, ctx, &layer.attn_out.w);
                for row in x.chunks_exact_mut(h) {
                    layer_norm(row, Some(&layer.attn_out.b), &layer.ln_attn, self.eps);
                }
                INTER.with(|cell| {
                    let mut inter = cell.borrow_mut();
                    inter.clear();
                    for _ in 0..x.len() / h {
                        inter.extend_from_slice(&layer.up.b);
                    }
                    matmul_acc(&mut inter, x, &layer.up.w);
                    activation(&mut inter, self.act);
                    matmul_acc(x, &inter, &layer.down.w);
                });
                for row in x.chunks_exact_mut(h) {
                    layer_norm(row, Some(&layer.down.b), &layer.ln_out, self.eps);
                }
            });
    }

    fn attention(&self, seqs: &[Sequence<'_>], offsets: &[usize], qkv: &[f32], ctx: &mut [f32]) {
        use rayon::prelude::*;
        let h = self.hidden;
        let dh = h / self.heads;
        let scale = 1.0 / (dh as f32).sqrt();
        let ctx_len = ctx.len();
        let ctx_ptr = SendPtr(ctx.as_mut_ptr());
        let tasks: Vec<(usize, usize, usize)> = seqs
            .iter()
            .zip(offsets)
            .filter(|(s, _)| !s.ids.is_empty())
            .flat_map(|(s, &off)| (0..self.heads).map(move |head| (off, s.ids.len(), head)))
            .collect();
        tasks.par_iter().for_each(|&(off, len, head)| {
            let ctx_ptr = &ctx_ptr;
            SCORES.with(|cell| {
                let mut scores = cell.borrow_mut();
                resize(&mut scores, len * len);
                let q = qkv.get(off * 3 * h + head * dh..).unwrap_or_default();
                let k = qkv.get(off * 3 * h + h + head * dh..).unwrap_or_default();
                let v = qkv
                    .get(off * 3 * h + 2 * h + head * dh..)
                    .unwrap_or_default();
                let stride = (3 * h) as isize;
                // scores = scale · Q Kᵀ
                gemm_checked(
                    Mat::out(&mut scores, len as isize, 1),
                    Mat::of(q, stride, 1),
                    Mat::of(k, 1, stride),
                    (len, len, dh),
                    false,
                    scale,
                );
                for row in scores.chunks_exact_mut(len) {
                    softmax(row);
                }
                // ctx[rows of this text, columns of this head] = P V
                let dst_offset = off * h + head * dh;
                let needed = dst_offset + (len - 1) * h + dh;
                assert!(needed <= ctx_len, "attention output out of bounds");
                // SAFETY: every task writes rows off..off+len, columns
                // head·dh..(head+1)·dh of ctx: the (text, head) pairs are
                // distinct, so the regions are disjoint, and in bounds (just
                // checked). `ctx` outlives the parallel loop.
                unsafe {
                    gemm_raw(
                        ctx_ptr.0.add(dst_offset),
                        h as isize,
                        1,
                        Mat::of(&scores, len as isize, 1),
                        Mat::of(v, stride, 1),
                        (len, dh, len),
                        false,
                        1.0,
                    );
                }
            });
        });
    }
}

/// Rows per task of the row-wise steps: at least four tasks per thread when
/// there are enough rows (load balancing), at least [`MIN_ROW_BLOCK`] rows
/// (each task streams the layer's weights once) and at most
/// [`MAX_ROW_BLOCK`]; a multiple of 6 (the micro-kernel's height).
fn row_block(total: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    total
        .div_ceil(threads * 4)
        .next_multiple_of(6)
        .clamp(MIN_ROW_BLOCK, MAX_ROW_BLOCK)
}

const MIN_ROW_BLOCK: usize = 48;
/// Its intermediate activations (96 × 1536 floats for MiniLM, 576 KB) stay
/// in the core's L2 cache between the two feed-forward products.
const MAX_ROW_BLOCK: usize = 96;

thread_local! {
    /// Attention scores of one (text, head), per worker thread.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Feed-forward activations of one row block, per worker thread.
    static INTER: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

struct SendPtr(*mut f32);
// SAFETY: the pointer is only used for disjoint writes (see `attention`).
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

fn resize(v: &mut Vec<f32>, len: usize) {
    v.clear();
    v.resize(len, 0.0);
}

// ---------------------------------------------------------------------------
// Matrix products

/// A strided matrix view: element (i, j) is `data[i·rs + j·cs]`.
struct Mat<'a> {
    data: &'a [f32],
    rs: isize,
    cs: isize,
}

impl<'a> Mat<'a> {
    fn of(data: &'a [f32], rs: isize, cs: isize) -> Self {
        Self { data, rs, cs }
    }

    /// Whether an `rows × cols` matrix with these strides fits in `data`.
    fn fits(&self, rows: usize, cols: usize) -> bool {
        fits(self.data.len(), rows, cols, self.rs, self.cs)
    }
}

/// The mutable counterpart of [`Mat`]: a product's destination.
struct MatMut<'a> {
    data: &'a mut [f32],
    rs: isize,
    cs: isize,
}

impl Mat<'_> {
    fn out(data: &mut [f32], rs: isize, cs: isize) -> MatMut<'_> {
        MatMut { data, rs, cs }
    }
}

fn fits(len: usize, rows: usize, cols: usize, rs: isize, cs: isize) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    rs >= 0 && cs >= 0 && (rows - 1) * (rs as usize) + (cols - 1) * (cs as usize) < len
}

/// `dst (m×n) = [dst +] alpha · lhs (m×k) · rhs (k×n)`, bounds checked.
fn gemm_checked(
    dst: MatMut<'_>,
    lhs: Mat<'_>,
    rhs: Mat<'_>,
    (m, n, k): (usize, usize, usize),
    accumulate: bool,
    alpha: f32,
) {
    assert!(
        fits(dst.data.len(), m, n, dst.rs, dst.cs) && lhs.fits(m, k) && rhs.fits(k, n),
        "matrix product out of bounds"
    );
    // SAFETY: the three views are in bounds (just checked) and `dst` is
    // borrowed mutably, so it aliases neither operand.
    unsafe {
        gemm_raw(
            dst.data.as_mut_ptr(),
            dst.rs,
            dst.cs,
            lhs,
            rhs,
            (m, n, k),
            accumulate,
            alpha,
        )
    }
}

/// The `gemm` crate's product.
///
/// # Safety
/// `dst` must be valid for writes of an `m × n` matrix with strides
/// (`dst_rs`, `dst_cs`) not overlapping `lhs` or `rhs`, which must hold
/// `m × k` and `k × n` matrices.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_raw(
    dst: *mut f32,
    dst_rs: isize,
    dst_cs: isize,
    lhs: Mat<'_>,
    rhs: Mat<'_>,
    (m, n, k): (usize, usize, usize),
    accumulate: bool,
    alpha: f32,
) {
    debug_assert!(lhs.fits(m, k) && rhs.fits(k, n));
    // SAFETY: the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs,
            dst_rs,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs,
            lhs.rs,
            rhs.data.as_ptr(),
            rhs.cs,
            rhs.rs,
            1.0,
            alpha,
            false,
            false,
            false,
            // Parallelism comes from the tasks (row blocks, heads).
            gemm::Parallelism::None,
        )
    }
}

// ---------------------------------------------------------------------------
// Element-wise kernels: written once, compiled for AVX2+FMA and for the
// baseline, chosen at run time.

/// Whether to run the AVX2+FMA versions. Not in unoptimised (debug) builds:
/// there `mul_add` is not inlined and becomes a call per element.
pub(crate) fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        !cfg!(debug_assertions)
            && std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

macro_rules! dispatch {
    ($name:ident, $body:ident, ($($arg:ident: $ty:ty),*)) => {
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                fn fast($($arg: $ty),*) {
                    $body::<true>($($arg),*)
                }
                if has_avx2_fma() {
                    // SAFETY: the CPU has AVX2 and FMA (checked just now).
                    return unsafe { fast($($arg),*) };
                }
            }
            $body::<false>($($arg),*)
        }
    };
}

dispatch!(layer_norm, layer_norm_body, (row: &mut [f32], bias: Option<&[f32]>, norm: &Norm, eps: f32));
dispatch!(softmax, softmax_body, (row: &mut [f32]));
dispatch!(activation, activation_body, (x: &mut [f32], act: Act));

/// `a·b + c`, fused when the target has FMA.
#[inline(always)]
fn fmadd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Sum with 8 independent accumulators (vectorises; a plain fold does not).
#[inline(always)]
fn sum8(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    let tail: f32 = chunks.remainder().iter().sum();
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn max8(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = if v > *a { v } else { *a };
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    acc.iter().fold(tail, |m, &v| if v > m { v } else { m })
}

/// `row = LayerNorm(row + bias)` with the biased variance, like PyTorch.
#[inline(always)]
fn layer_norm_body<const FMA: bool>(row: &mut [f32], bias: Option<&[f32]>, norm: &Norm, eps: f32) {
    if let Some(bias) = bias {
        for (r, &b) in row.iter_mut().zip(bias) {
            *r += b;
        }
    }
    let n = row.len() as f32;
    let mean = sum8(row) / n;
    let mut acc = [0.0f32; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            let d = v - mean;
            *a = fmadd::<FMA>(d, d, *a);
        }
    }
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|&v| (v - mean) * (v - mean))
        .sum();
    let var = (acc.iter().sum::<f32>() + tail) / n;
    let inv = 1.0 / (var + eps).sqrt();
    for ((r, &g), &b) in row.iter_mut().zip(&norm.gamma).zip(&norm.beta) {
        *r = fmadd::<FMA>((*r - mean) * inv, g, b);
    }
}

/// In-place softmax of one row of attention scores.
#[inline(always)]
fn softmax_body<const FMA: bool>(row: &mut [f32]) {
    let max = max8(row);
    for v in row.iter_mut() {
        *v = exp::<FMA>(*v - max);
    }
    let inv = 1.0 / sum8(row);
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// `x = act(x)` (the bias is already in).
#[inline(always)]
fn activation_body<const FMA: bool>(x: &mut [f32], act: Act) {
    match act {
        Act::GeluErf => x.iter_mut().for_each(|v| *v = gelu_erf::<FMA>(*v)),
        Act::GeluTanh => x.iter_mut().for_each(|v| *v = gelu_tanh::<FMA>(*v)),
        Act::Relu => x
            .iter_mut()
            .for_each(|v| *v = if *v > 0.0 { *v } else { 0.0 }),
    }
}

/// `e^x`, relative error below 2e-7 (Cody–Waite reduction and a degree-6
/// polynomial, as in Cephes' `expf`); inputs are clamped to [-87, 88], so
/// tiny results flush to about 1.6e-38 rather than 0.
#[inline(always)]
fn exp<const FMA: bool>(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 · 2^23: adding it rounds to an integer kept in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let x = if x < -87.0 { -87.0 } else { x };
    let x = if x > 88.0 { 88.0 } else { x };
    let v = fmadd::<FMA>(x, LOG2E, MAGIC);
    let n = v - MAGIC;
    let r = fmadd::<FMA>(n, -LN2_HI, x);
    let r = fmadd::<FMA>(n, -LN2_LO, r);
    let mut p = 1.987_569_1e-4f32;
    p = fmadd::<FMA>(p, r, 1.398_199_9e-3);
    p = fmadd::<FMA>(p, r, 8.333_452e-3);
    p = fmadd::<FMA>(p, r, 4.166_579_6e-2);
    p = fmadd::<FMA>(p, r, 1.666_666_5e-1);
    p = fmadd::<FMA>(p, r, 0.5);
    let p = fmadd::<FMA>(p, r * r, r) + 1.0;
    let e = (v.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let scale = f32::from_bits((e.wrapping_add(127) as u32) << 23);
    p * scale
}

/// `x · Φ(x) = x/2 · (1 + erf(x/√2))`, with Abramowitz & Stegun's 7.1.26
/// for `erf` (absolute error below 1.5e-7), the formula PyTorch's own
/// vectorised `erf` uses.
#[inline(always)]
fn gelu_erf<const FMA: bool>(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A1: f32 = 0.254_829_6;
    const A2: f32 = -0.284_496_74;
    const A3: f32 = 1.421_413_7;
    const A4: f32 = -1.453_152;
    const A5: f32 = 1.061_405_4;
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / fmadd::<FMA>(P, z, 1.0);
    let mut poly = A5;
    poly = fmadd::<FMA>(poly, t, A4);
    poly = fmadd::<FMA>(poly, t, A3);
    poly = fmadd::<FMA>(poly, t, A2);
    poly = fmadd::<FMA>(poly, t, A1);
    poly *= t;
    let erf_abs = 1.0 - poly * exp::<FMA>(-z * z);
    let erf = if x < 0.0 { -erf_abs } else { erf_abs };
    0.5 * x * (1.0 + erf)
}

/// The tanh approximation of GELU.
#[inline(always)]
fn gelu_tanh<const FMA: bool>(x: f32) -> f32 {
    const C: f32 = 0.797_884_6; // sqrt(2/π)
    let u = C * fmadd::<FMA>(0.044_715 * x, x * x, x);
    // tanh(u) = 1 - 2 / (e^{2u} + 1)
    let tanh = 1.0 - 2.0 / (exp::<FMA>(2.0 * u) + 1.0);
    0.5 * x * (1.0 + tanh)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn erf_reference(x: f64) -> f64 {
        // Series for small |x|, continued fraction otherwise would be
        // overkill: a high-resolution Simpson integral of 2/√π e^{-t²}.
        let n = 20_000;
        let h = x / n as f64;
        let f = |t: f64| (-t * t).exp();
        let mut s = f(0.0) + f(x);
        for i in 1..n {
            s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn exp_is_accurate_over_the_softmax_range() {
        for i in -870..=880 {
            let x = i as f32 / 10.0;
            for fma in [false, true] {
                let got = if fma { exp::<true>(x) } else { exp::<false>(x) };
                let want = (x as f64).exp();
                let rel = ((got as f64 - want) / want).abs();
                assert!(rel < 3e-7, "exp({x}) = {got}, want {want}");
            }
        }
        assert!(exp::<false>(-1000.0) < 1e-37);
        assert_eq!(exp::<false>(0.0), 1.0);
    }

    #[test]
    fn gelu_matches_the_exact_erf_formula() {
        for i in -800..=800 {
            let x = i as f32 / 100.0;
            let want = 0.5 * x as f64 * (1.0 + erf_reference(x as f64 / 2f64.sqrt()));
            let got = gelu_erf::<false>(x) as f64;
            assert!((got - want).abs() < 1e-6, "gelu({x}) = {got}, want {want}");
            let tanh = gelu_tanh::<false>(x) as f64;
            assert!((tanh - want).abs() < 2e-3, "gelu_tanh({x}) = {tanh}");
        }
    }

    #[test]
    fn softmax_and_layer_norm_match_plain_formulas() {
        let mut row: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin() * 5.0).collect();
        let max = row.iter().cloned().fold(f32::MIN, f32::max);
        let sum: f64 = row.iter().map(|&v| ((v - max) as f64).exp()).sum();
        let want: Vec<f64> = row
            .iter()
            .map(|&v| ((v - max) as f64).exp() / sum)
            .collect();
        softmax(&mut row);
        for (g, w) in row.iter().zip(&want) {
            assert!((*g as f64 - w).abs() < 1e-6);
        }

        let mut x: Vec<f32> = (0..19).map(|i| i as f32 * 0.5 - 3.0).collect();
        let bias: Vec<f32> = (0..19).map(|i| i as f32 * 0.1).collect();
        let norm = Norm {
            gamma: (0..19).map(|i| 1.0 + i as f32 * 0.01).collect(),
            beta: (0..19).map(|i| i as f32 * -0.02).collect(),
        };
        let y: Vec<f64> = x.iter().zip(&bias).map(|(a, b)| (a + b) as f64).collect();
        let mean = y.iter().sum::<f64>() / 19.0;
        let var = y.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / 19.0;
        layer_norm(&mut x, Some(&bias), &norm, 1e-12);
        for (i, (g, v)) in x.iter().zip(&y).enumerate() {
            let want = (v - mean) / var.sqrt() * norm.gamma[i] as f64 + norm.beta[i] as f64;
            assert!((*g as f64 - want).abs() < 1e-5, "{g} vs {want}");
        }
    }

    #[test]
    fn strided_products_match_a_naive_loop() {
        let (m, n, k) = (13, 7, 5);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.3).cos()).collect();
        // b stored transposed: element (p, j) at j·k + p.
        let bt: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.7).sin()).collect();
        let mut c = vec![1.0f32; m * n];
        gemm_checked(
            Mat::out(&mut c, n as isize, 1),
            Mat::of(&a, k as isize, 1),
            Mat::of(&bt, 1, k as isize),
            (m, n, k),
            true,
            0.5,
        );
        for i in 0..m {
            for j in 0..n {
                let dot: f32 = (0..k).map(|p| a[i * k + p] * bt[j * k + p]).sum();
                assert!((c[i * n + j] - (1.0 + 0.5 * dot)).abs() < 1e-5);
            }
        }
        // A 3 × 4 matrix with row stride 3 reaches index 2·3 + 3 = 9.
        assert!(fits(10, 3, 4, 3, 1));
        assert!(!fits(9, 3, 4, 3, 1));
    }

    #[test]
    fn half_precision_converts() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8);
        assert!(f16_to_f32(0x7c00).is_infinite());
    }
}
