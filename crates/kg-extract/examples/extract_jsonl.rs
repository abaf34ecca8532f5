//! kg-extract alone: kg-core records in, the same records plus an
//! extraction for every chunk out, as JSON Lines.
//!
//! ```sh
//! # Any OpenAI-compatible chat server; `cargo xtask fake-llm` is a fake one:
//! OPENAI_BASE_URL=http://127.0.0.1:8089/v1 KG_MODEL=gpt-4o-mini \
//!   cargo run -p kg-extract --example extract_jsonl -- chunks.jsonl > extracted.jsonl
//! ```
//!
//! Reads the file given, or stdin. Every record read goes out unchanged;
//! each chunk also gets an `extraction` record, or a `set_aside` one with
//! the reason it could not be extracted. The settings are the `kg` CLI's
//! environment variables: `OPENAI_BASE_URL` (default the OpenAI API when
//! only a key is set), `OPENAI_API_KEY`, `KG_MODEL` (default
//! `gpt-4o-mini`), `KG_CONCURRENCY` (default 8). A summary goes to stderr;
//! a line that is not a record is reported there and skipped. Ctrl-C stops
//! the run: chunks not done are set aside as `cancelled`.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use kg_core::{jsonl, Chunk, Record, Secret};
use kg_extract::{ExtractConfig, Extractor, LlmEndpoint};
use tokio_util::sync::CancellationToken;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn extractor_from_env() -> anyhow::Result<Extractor> {
    let key = env("OPENAI_API_KEY").map(Secret::new);
    let base = match (env("OPENAI_BASE_URL"), &key) {
        (Some(base), _) => base,
        (None, Some(_)) => "https://api.openai.com/v1".to_string(),
        (None, None) => bail!(
            "no LLM configured: set OPENAI_BASE_URL to an OpenAI-compatible server \
             (up to /v1; Ollama: http://localhost:11434/v1), or OPENAI_API_KEY for OpenAI"
        ),
    };
    let model = env("KG_MODEL").unwrap_or_else(|| "gpt-4o-mini".into());
    let mut endpoint = LlmEndpoint::new(base, model);
    endpoint.api_key = key;
    let mut config = ExtractConfig::new(endpoint);
    if let Some(n) = env("KG_CONCURRENCY") {
        config.concurrency = n.parse().context("KG_CONCURRENCY is not a number")?;
    }
    Ok(Extractor::new(config)?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let input = std::env::args_os().nth(1).map(PathBuf::from);
    let extractor = extractor_from_env()?;
    let cancel = CancellationToken::new();
    let on_ctrl_c = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_ctrl_c.cancel();
        }
    });
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Record>(256);
    let (chunk_tx, mut chunk_rx) = tokio::sync::mpsc::channel::<Chunk>(64);

    // Every record passes through; chunks go to the extractor too.
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
    let run = extractor.run(chunks, out_tx, cancel);
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
    let s = summary?;
    let (calls, tokens) = (s.llm_calls, s.prompt_tokens + s.completion_tokens);
    eprintln!(
        "extract: {} chunks, {} extracted, {} set aside, {} entities, {} relations, \
         {calls} LLM calls, {tokens} tokens",
        s.chunks, s.extracted, s.set_aside, s.entities, s.relations
    );
    Ok(())
}
