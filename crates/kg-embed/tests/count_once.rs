//! The driver counts every text's tokens once, for its batch budget, and
//! hands those counts to the embedder (`Embedder::embed_counted`), so an
//! embedder that plans its requests by tokens does not count them again.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use kg_core::{Chunk, ChunkId, DocumentId, Record};
use kg_embed::{embed_chunks, BatchLimits, EmbedError, EmbedOptions, Embedder};
use tokio::sync::mpsc;

/// Counts a token per byte; remembers every call.
#[derive(Default)]
struct Counting {
    counted: AtomicUsize,
    /// The (texts, counts) of every `embed_counted` call.
    given: Mutex<Vec<(Vec<String>, Vec<usize>)>>,
    plain_calls: AtomicUsize,
}

impl Embedder for Counting {
    fn model_id(&self) -> &str {
        "counting"
    }
    fn dimensions(&self) -> Option<usize> {
        Some(2)
    }
    fn batch_limits(&self) -> BatchLimits {
        BatchLimits {
            max_inputs: 4,
            max_tokens: Some(200),
            concurrency: 2,
        }
    }
    fn count_tokens(&self, text: &str) -> usize {
        self.counted.fetch_add(1, Ordering::Relaxed);
        text.len()
    }
    fn embed<'a>(
        &'a self,
        texts: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>> {
        self.plain_calls.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move { Ok(texts.iter().map(|_| vec![1.0, 0.0]).collect()) })
    }
    fn embed_counted<'a>(
        &'a self,
        texts: &'a [String],
        tokens: &'a [usize],
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>> {
        if let Ok(mut g) = self.given.lock() {
            g.push((texts.to_vec(), tokens.to_vec()));
        }
        Box::pin(async move { Ok(texts.iter().map(|_| vec![1.0, 0.0]).collect()) })
    }
}

fn chunks(n: usize) -> Vec<Chunk> {
    let doc = DocumentId::from_content_sha256(&kg_core::sha256_hex(b"count.md"));
    (0..n)
        .map(|i| {
            let text = format!("text {i} {}", "x".repeat(i * 7 % 60));
            Chunk {
                id: ChunkId::new(&doc, i as u32, &text),
                document_id: doc.clone(),
                index: i as u32,
                text,
                tokens: 0,
                source: "count.md".into(),
                page_start: None,
                page_end: None,
            }
        })
        .collect()
}

#[tokio::test]
async fn every_text_is_counted_once_and_the_embedder_gets_the_counts() {
    let input = chunks(23);
    let embedder = Arc::new(Counting::default());
    let (tx, mut rx) = mpsc::channel(64);
    let collect = tokio::spawn(async move {
        let mut out = Vec::new();
        while let Some(r) = rx.recv().await {
            out.push(r);
        }
        out
    });
    let summary = embed_chunks(
        embedder.clone(),
        futures::stream::iter(input.clone()),
        EmbedOptions::default(),
        tx,
    )
    .await
    .expect("embedded");
    let out = collect.await.expect("collector");
    let vectors = out
        .iter()
        .filter(|r| matches!(r, Record::Embedding(_)))
        .count();
    assert_eq!(vectors, input.len(), "a vector per chunk: {summary:?}");
    assert_eq!(
        embedder.counted.load(Ordering::Relaxed),
        input.len(),
        "each text counted exactly once"
    );
    assert_eq!(embedder.plain_calls.load(Ordering::Relaxed), 0);
    let given = embedder.given.lock().expect("lock").clone();
    let mut seen = 0;
    for (texts, counts) in &given {
        assert_eq!(texts.len(), counts.len());
        assert!(texts.len() <= 4, "the batch limit holds");
        for (t, c) in texts.iter().zip(counts) {
            assert_eq!(*c, t.len(), "the count the driver made for {t:?}");
        }
        let sum: usize = counts.iter().sum();
        assert!(
            sum <= 200 || texts.len() == 1,
            "the token budget holds: {sum}"
        );
        seen += texts.len();
    }
    assert_eq!(seen, input.len());
}
