//! kg-store alone: kg-core records in as JSON Lines, a graph in the
//! embedded store out.
//!
//! ```sh
//! cargo run -p kg-ingest --example ingest_jsonl -- examples/corpus \
//!   | cargo run -p kg-store --example store_jsonl -- /tmp/kg-graph
//! cargo run -p kg-store --example store_jsonl -- /tmp/kg-graph records.jsonl
//! ```
//!
//! Reads records from the file given after DATA_DIR, or stdin, and writes
//! them with a `BatchWriter` into the embedded (SQLite) store in DATA_DIR,
//! which it creates if needed; failed batches' records go to
//! DATA_DIR/store-dead-letters.jsonl. The set-aside records (those read in,
//! and one per batch that failed) go to stdout as JSON Lines; a summary and
//! the graph's counts go to stderr. A line that is not a record is reported
//! on stderr and skipped. Ctrl-C stops the write cleanly.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

use anyhow::Context;
use kg_core::{jsonl, Record};
use kg_store::{BatchWriter, EmbeddedConfig, EmbeddedStore, GraphStore, Scope, WriterConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let data_dir = PathBuf::from(args.next().context("usage: store_jsonl DATA_DIR [FILE]")?);
    let input = args.next().map(PathBuf::from);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;

    let store = EmbeddedStore::open(&EmbeddedConfig {
        data_dir: data_dir.clone(),
    })?;
    let config = WriterConfig {
        dead_letter: data_dir.join("store-dead-letters.jsonl"),
        ..WriterConfig::default()
    };
    let on_ctrl_c = config.cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_ctrl_c.cancel();
        }
    });
    // `open` makes sure of the schema (constraints, and the vector index
    // when the first chunk vector comes).
    let writer = BatchWriter::open(store, config).await?;

    let (tx, rx) = tokio::sync::mpsc::channel::<Record>(1024);
    let reader = std::thread::spawn(move || -> anyhow::Result<u64> {
        let (name, source): (String, Box<dyn BufRead>) = match &input {
            Some(path) => {
                let file = std::fs::File::open(path)
                    .with_context(|| format!("opening {}", path.display()))?;
                (path.display().to_string(), Box::new(BufReader::new(file)))
            }
            None => ("-".into(), Box::new(std::io::stdin().lock())),
        };
        let mut bad_lines = 0;
        for record in jsonl::RecordReader::new(source, name) {
            match record {
                Ok(record) => {
                    if tx.blocking_send(record).is_err() {
                        break; // the write stopped (Ctrl-C)
                    }
                }
                Err(e) => {
                    eprintln!("not a record, passed over (the rest goes on): {e}");
                    bad_lines += 1;
                }
            }
        }
        Ok(bad_lines)
    });

    let report = writer.write_channel(rx, None).await?;
    let bad_lines = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the reader thread panicked"))??;

    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for set_aside in &report.set_aside {
        jsonl::write_record(&mut out, &Record::SetAside(set_aside.clone()))?;
    }
    out.flush()?;

    eprintln!(
        "store: {} records, {} rows in {} batches, {} failed batches, {} set aside, \
         {} cancelled, {} bad lines",
        report.records,
        report.rows,
        report.batches,
        report.failed_batches.len(),
        report.set_aside.len(),
        report.cancelled_records,
        bad_lines,
    );
    let counts = writer.sink().counts(&Scope::All).await?;
    for (label, n) in &counts.nodes {
        eprintln!("  nodes {label}: {n}");
    }
    for (rel_type, n) in &counts.relationships {
        eprintln!("  relationships {rel_type}: {n}");
    }
    if let Some(dead) = &report.dead_letter {
        eprintln!("  dead letters in {}", dead.display());
    }
    Ok(())
}
