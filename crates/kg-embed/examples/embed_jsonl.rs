//! kg-embed alone: kg-core records in, the same records plus an embedding
//! for every chunk out, as JSON Lines.
//!
//! ```sh
//! # A local sentence-transformers folder (see docs/embed.md for getting one):
//! KG_EMBED_MODEL=path/to/all-MiniLM-L6-v2 \
//!   cargo run -p kg-embed --example embed_jsonl -- chunks.jsonl > embedded.jsonl
//! # Or any OpenAI-compatible /v1/embeddings server (`cargo xtask fake-llm` is one):
//! KG_EMBEDDER=openai OPENAI_BASE_URL=http://127.0.0.1:8089/v1 \
//!   cargo run -p kg-embed --example embed_jsonl < chunks.jsonl > embedded.jsonl
//! ```
//!
//! Reads the file given, or stdin. Every record read goes out unchanged;
//! each chunk also gets an `embedding` record, or a `set_aside` one when its
//! batch kept failing. The settings are the `kg` CLI's environment
//! variables: `KG_EMBEDDER` (`local`, the default, or `openai`),
//! `KG_EMBED_MODEL` (the model folder, or the API's model name, default
//! `text-embedding-3-small`), `KG_EMBED_BASE_URL` or `OPENAI_BASE_URL`,
//! and `OPENAI_API_KEY`. A summary goes to stderr; a line that is not a
//! record is reported there and skipped.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use kg_core::{jsonl, Chunk, Record};
use kg_embed::{embed_chunks, EmbedOptions, Embedder, LocalEmbedder, OpenAiEmbedConfig};

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn embedder_from_env() -> anyhow::Result<Arc<dyn Embedder>> {
    match env("KG_EMBEDDER").as_deref().unwrap_or("local") {
        "local" => {
            let Some(dir) = env("KG_EMBED_MODEL") else {
                bail!("set KG_EMBED_MODEL to a sentence-transformers folder, or KG_EMBEDDER=openai")
            };
            Ok(Arc::new(LocalEmbedder::load(Path::new(&dir))?))
        }
        "openai" => {
            let Some(base) = env("KG_EMBED_BASE_URL").or_else(|| env("OPENAI_BASE_URL")) else {
                bail!("set OPENAI_BASE_URL (or KG_EMBED_BASE_URL) to the server's URL, up to /v1")
            };
            let model = env("KG_EMBED_MODEL").unwrap_or_else(|| "text-embedding-3-small".into());
            let mut config = OpenAiEmbedConfig::new(base, model);
            config.api_key = env("OPENAI_API_KEY").map(kg_core::Secret::new);
            Ok(Arc::new(kg_embed::OpenAiEmbedder::new(config)?))
        }
        other => bail!("KG_EMBEDDER is {other:?}: use local or openai"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let input = std::env::args_os().nth(1).map(PathBuf::from);
    let embedder = embedder_from_env()?;
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Record>(256);
    let (chunk_tx, mut chunk_rx) = tokio::sync::mpsc::channel::<Chunk>(256);

    // Every record passes through; chunks go to the embedder too.
    let passthrough = out_tx.clone();
    let reader = std::thread::spawn(move || -> anyhow::Result<()> {
        let (name, source): (String, Box<dyn BufRead>) = match &input {
            Some(path) => {
                let file = std::fs::File::open(path)
                    .with_context(|| format!("opening {}", path.display()))?;
                (path.display().to_string(), Box::new(BufReader::new(file)))
            }
            None => ("-".into(), Box::new(std::io::stdin().lock())),
        };
        for record in jsonl::RecordReader::new(source, name) {
            let record = match record {
                Ok(record) => record,
                Err(e) => {
                    eprintln!("not a record, passed over (the rest goes on): {e}");
                    continue;
                }
            };
            if let Record::Chunk(chunk) = &record {
                if chunk_tx.blocking_send(chunk.clone()).is_err() {
                    break;
                }
            }
            if passthrough.blocking_send(record).is_err() {
                break;
            }
        }
        Ok(())
    });

    let chunks = futures::stream::poll_fn(move |cx| chunk_rx.poll_recv(cx));
    let run = embed_chunks(embedder, chunks, EmbedOptions::default(), out_tx);
    let write = async move {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        while let Some(record) = out_rx.recv().await {
            jsonl::write_record(&mut out, &record)?;
        }
        out.flush()
    };
    let (summary, written) = tokio::join!(run, write);
    written.context("writing stdout")?;
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("the reader thread panicked"))??;
    let summary = summary?;
    eprintln!(
        "embed: {} chunks, {} embedded, {} set aside, {} batches, model {}, {} dimensions",
        summary.items,
        summary.embedded,
        summary.set_aside,
        summary.batches,
        summary.model,
        summary.dimensions.unwrap_or(0),
    );
    Ok(())
}
