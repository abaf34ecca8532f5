//! A bag-of-words embedder for the retrieval tests and benches: each
//! lowercased word of three letters or more adds ±1 to a dimension chosen
//! by its hash; unit length. Deterministic, and close for texts that share
//! words. Included with `#[path]` by the files that use it.

/// The embedder: `dims` wide, reporting `model` as its id.
#[derive(Debug, Clone, Copy)]
pub struct BagOfWords {
    /// Dimensions.
    pub dims: usize,
    /// Model id.
    pub model: &'static str,
}

impl BagOfWords {
    /// The vector of `text`.
    pub fn vector(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0.0f32; self.dims];
        for word in text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.len() > 2)
        {
            let h = kg_core::sha256_hex(word.to_lowercase().as_bytes());
            let n = u64::from_str_radix(h.get(..16).unwrap_or("0"), 16).unwrap_or(0);
            let sign = if n & 1 == 0 { 1.0 } else { -1.0 };
            v[(n >> 1) as usize % self.dims] += sign;
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
        v.into_iter().map(|x| x / norm).collect()
    }
}

impl kg_embed::Embedder for BagOfWords {
    fn model_id(&self) -> &str {
        self.model
    }
    fn dimensions(&self) -> Option<usize> {
        Some(self.dims)
    }
    fn batch_limits(&self) -> kg_embed::BatchLimits {
        kg_embed::BatchLimits {
            max_inputs: 64,
            max_tokens: None,
            concurrency: 1,
        }
    }
    fn count_tokens(&self, text: &str) -> usize {
        text.split_whitespace().count()
    }
    fn embed<'a>(
        &'a self,
        texts: &'a [String],
    ) -> futures::future::BoxFuture<'a, Result<Vec<Vec<f32>>, kg_embed::EmbedError>> {
        Box::pin(async move { Ok(texts.iter().map(|t| self.vector(t)).collect()) })
    }
}
