//! kg-ingest alone: files in, kg-core records out as JSON Lines.
//!
//! ```sh
//! cargo run -p kg-ingest --example ingest_jsonl -- examples/corpus > records.jsonl
//! cargo run -p kg-ingest --example ingest_jsonl -- \
//!     --csv-mapping examples/csv-mapping.toml examples/csv > graph.jsonl
//! ```
//!
//! Every record goes to stdout, one per line: documents and their chunks,
//! CSV-mapped nodes and edges, and a `set_aside` record for each file or
//! row that could not be read. The run's summary goes to stderr. Ctrl-C
//! stops the run cleanly (what was sent is complete JSON Lines).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use kg_ingest::{ingest, CancellationToken, CsvMapping, IngestConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config = IngestConfig::default();
    let mut paths = Vec::new();
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--csv-mapping" {
            let file = PathBuf::from(args.next().context("--csv-mapping needs a file")?);
            config.csv_mapping = Some(CsvMapping::from_file(&file)?);
        } else {
            paths.push(PathBuf::from(arg));
        }
    }
    if paths.is_empty() {
        anyhow::bail!("usage: ingest_jsonl [--csv-mapping FILE] PATH...");
    }

    let cancel = CancellationToken::new();
    let on_ctrl_c = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_ctrl_c.cancel();
        }
    });

    let (tx, mut rx) = tokio::sync::mpsc::channel(256);
    let run = tokio::spawn(ingest(paths, config, tx, cancel));
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    while let Some(record) = rx.recv().await {
        kg_core::jsonl::write_record(&mut out, &record).context("writing stdout")?;
    }
    out.flush().context("writing stdout")?;
    let summary = run.await.context("the ingest task")??;

    eprintln!(
        "ingest: {} files read, {} documents, {} pages, {} chunks, {} nodes, {} edges, {} set aside{}",
        summary.files_read,
        summary.documents,
        summary.pages,
        summary.chunks,
        summary.nodes,
        summary.edges,
        summary.set_aside_total(),
        if summary.interrupted { " (interrupted)" } else { "" },
    );
    for (reason, n) in &summary.set_aside_by_reason {
        eprintln!("  set aside as {reason}: {n}");
    }
    Ok(())
}
