//! The streaming ingest run: walk → read in parallel → emit in order.
//!
//! Three stages connected by bounded queues:
//! 1. the walk runs on the blocking pool and feeds paths into a channel of
//!    [`WALK_QUEUE`] entries, so it never runs far ahead of the readers;
//! 2. up to `parallelism` files are read at once, each in its own task (PDF
//!    engines and chunking on the blocking pool);
//! 3. results are emitted in walk order, the oldest first, into the caller's
//!    bounded channel; a slow consumer stalls the readers (backpressure)
//!    instead of letting records pile up.
//!
//! Memory is at most `parallelism` files and their records, plus one
//! directory listing per level of depth: it does not grow with the number of
//! files. CSV files are the exception to "read whole, then emit": when a CSV
//! reaches the head of the queue its rows are streamed straight into the
//! output channel, so a CSV of any size needs constant memory.
//!
//! Output order is deterministic: walk order, and within a file a `Document`
//! then its `Chunk`s in order (or the CSV's rows in file order).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kg_core::{Document, DocumentId, MediaType, Record, SetAside, Stage};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::chunk::{Chunker, PagedText};
use crate::config::IngestConfig;
use crate::csv_graph::{map_csv_file, CsvFileFailure, OutputClosed};
use crate::error::{IngestError, SetAsideReason};
use crate::pdf::{read_pdf, PdfOutcome};
use crate::summary::{IngestSummary, SkippedPath};
use crate::text::{decode_utf8, detect, looks_binary, markdown_title, FileKind};
use crate::walk::{Walk, WalkItem};

/// Paths the walk may queue ahead of the readers.
const WALK_QUEUE: usize = 256;

/// What reading one (non-CSV) file produced, in emission order.
struct FileResult {
    records: Vec<Record>,
    summary: IngestSummary,
}

/// An entry of the in-order window.
enum Pending {
    Job(PathBuf, JoinHandle<FileResult>),
    Csv(PathBuf),
    Skipped(PathBuf, &'static str),
    Unreadable(PathBuf, std::io::Error),
}

fn set_aside(item: &str, reason: SetAsideReason, detail: String) -> Record {
    Record::SetAside(SetAside {
        stage: Stage::Ingest,
        item: item.to_string(),
        reason,
        detail,
    })
}

/// The source a file is known by: its canonical absolute path. The same
/// file is then one source whichever directory kg was started from or
/// however the path was spelled, and two files never share one; the CLI
/// relies on that to replace a changed file's earlier version.
fn source_of(path: &Path) -> String {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

fn is_csv(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("csv") || e.eq_ignore_ascii_case("tsv"))
}

/// Reads one non-CSV file into its records. Never fails: problems become
/// set-aside records.
async fn read_file(path: PathBuf, config: Arc<IngestConfig>, chunker: Arc<Chunker>) -> FileResult {
    let source = source_of(&path);
    let mut summary = IngestSummary {
        files_seen: 1,
        ..IngestSummary::default()
    };
    let one = |record: Record, summary: IngestSummary| FileResult {
        records: vec![record],
        summary,
    };

    let size = match tokio::fs::metadata(&path).await {
        Ok(m) => m.len(),
        Err(e) => {
            let r = set_aside(
                &source,
                SetAsideReason::UnreadableFile,
                format!("{source}: {e}"),
            );
            return one(r, summary);
        }
    };
    if size > config.max_file_bytes {
        let detail = format!(
            "{source}: {size} bytes, above the limit of {} bytes (max_file_bytes)",
            config.max_file_bytes
        );
        return one(
            set_aside(&source, SetAsideReason::FileTooLarge, detail),
            summary,
        );
    }
    let bytes = match tokio::fs::read(&path).await {
        Ok(b) => b,
        Err(e) => {
            let r = set_aside(
                &source,
                SetAsideReason::UnreadableFile,
                format!("{source}: {e}"),
            );
            return one(r, summary);
        }
    };
    if bytes.is_empty() {
        let detail = format!("{source}: the file is empty (0 bytes)");
        return one(
            set_aside(&source, SetAsideReason::EmptyFile, detail),
            summary,
        );
    }
    summary.bytes_read = bytes.len() as u64;
    let kind = detect(&path, &bytes);
    // Shared with the PDF engines' threads and then hashed in place: never copied.
    let bytes = Arc::new(bytes);
    let (media_type, text, title, pages) = match kind {
        FileKind::Pdf => {
            match read_pdf(
                Arc::clone(&bytes),
                &source,
                config.pdf_primary,
                config.pdf_timeout,
            )
            .await
            {
                PdfOutcome::SetAside(reason, detail) => {
                    return one(set_aside(&source, reason, detail), summary)
                }
                PdfOutcome::Text(pdf) => {
                    if pdf.used_fallback {
                        summary.pdf_fallbacks += 1;
                    }
                    tracing::debug!(
                        source,
                        engine = pdf.engine.name(),
                        pages = pdf.pages.len(),
                        empty_password = pdf.decrypted_with_empty_password,
                        "PDF read"
                    );
                    let pages = u32::try_from(pdf.pages.len()).ok();
                    let text = PagedText::from_pages(&pdf.pages);
                    (MediaType::Pdf, text, None, pages)
                }
            }
        }
        FileKind::Text | FileKind::Markdown => {
            if looks_binary(&bytes) {
                let detail = format!("{source}: named as text but holds binary data (NUL bytes)");
                return one(
                    set_aside(&source, SetAsideReason::BinaryFile, detail),
                    summary,
                );
            }
            let decoded = decode_utf8(&bytes);
            if decoded.invalid_sequences > 0 {
                tracing::warn!(
                    source,
                    invalid = decoded.invalid_sequences,
                    "invalid UTF-8 replaced by U+FFFD"
                );
            }
            summary.invalid_utf8_sequences += decoded.invalid_sequences;
            let (media, title) = if kind == FileKind::Markdown {
                (MediaType::Markdown, markdown_title(&decoded.text))
            } else {
                (MediaType::Text, None)
            };
            (media, PagedText::unpaged(decoded.text), title, None)
        }
        FileKind::FakePdf => {
            let detail = format!("{source}: named .pdf but has no %PDF- header: not a PDF file");
            return one(set_aside(&source, SetAsideReason::NotAPdf, detail), summary);
        }
        FileKind::Csv | FileKind::Unsupported => {
            let detail =
                format!("{source}: kg reads PDF, text (.txt), Markdown (.md) and mapped CSV files");
            return one(
                set_aside(&source, SetAsideReason::UnsupportedFileType, detail),
                summary,
            );
        }
    };

    // Hashing and chunking are CPU work: keep them off the async workers.
    let chunk_source = source.clone();
    let built = tokio::task::spawn_blocking(move || {
        let sha256 = kg_core::sha256_hex(&bytes[..]);
        let id = DocumentId::from_content_sha256(&sha256);
        let chunks = chunker.chunk(&id, &chunk_source, &text);
        let document = Document {
            id,
            source: chunk_source,
            title,
            sha256,
            pages,
            media_type,
            bytes: bytes.len() as u64,
        };
        (document, chunks)
    })
    .await;
    match built {
        Ok((document, chunks)) => {
            summary.files_read = 1;
            let mut records = Vec::with_capacity(1 + chunks.len());
            records.push(Record::Document(document));
            records.extend(chunks.into_iter().map(Record::Chunk));
            FileResult { records, summary }
        }
        Err(e) => {
            let detail = format!("{source}: chunking failed: {e}");
            one(
                set_aside(&source, SetAsideReason::UnreadableFile, detail),
                summary,
            )
        }
    }
}

/// Streams one CSV file into `out` from the blocking pool.
async fn stream_csv(
    path: PathBuf,
    config: Arc<IngestConfig>,
    out: mpsc::Sender<Record>,
) -> Result<IngestSummary, IngestError> {
    let source = source_of(&path);
    let max_listed = config.max_listed_set_aside;
    let worker_path = path.clone();
    let joined = tokio::task::spawn_blocking(move || {
        let mut local = IngestSummary {
            files_seen: 1,
            ..IngestSummary::default()
        };
        let send = |record: Record, local: &mut IngestSummary| -> Result<(), OutputClosed> {
            local.note(&record, max_listed);
            out.blocking_send(record).map_err(|_| OutputClosed)
        };
        let Some(mapping) = config.csv_mapping.as_ref().and_then(|m| m.for_path(&path)) else {
            let detail = format!(
                "{source}: no entry for this file in the CSV mapping (--csv-mapping); CSV files become graph rows only through a mapping"
            );
            let r = set_aside(&source, SetAsideReason::CsvNotMapped, detail);
            return send(r, &mut local).map(|()| local);
        };
        let result = map_csv_file(&path, &source, mapping, &mut |r| send(r, &mut local));
        match result {
            Ok(stats) => {
                local.files_read = 1;
                local.csv_rows = stats.rows;
                local.invalid_utf8_sequences = stats.invalid_utf8_sequences;
                local.bytes_read = std::fs::metadata(&path).map_or(0, |m| m.len());
                Ok(local)
            }
            Err(CsvFileFailure::SetAside(reason, detail)) => {
                send(set_aside(&source, reason, detail), &mut local).map(|()| local)
            }
            Err(CsvFileFailure::OutputClosed) => Err(OutputClosed),
        }
    })
    .await;
    match joined {
        Ok(Ok(summary)) => Ok(summary),
        Ok(Err(OutputClosed)) => Err(IngestError::OutputClosed { records_sent: 0 }),
        Err(e) => Err(IngestError::Worker {
            path: worker_path,
            message: e.to_string(),
        }),
    }
}

/// Reads `paths` (files and directory trees) and sends their records to
/// `out`, in a deterministic order; returns the run's summary.
///
/// Per file: a [`kg_core::Record::Document`] then its chunks; for a mapped
/// CSV its nodes and edges row by row; for anything that cannot be read, one
/// [`kg_core::Record::SetAside`] with a stable reason code (see
/// [`SetAsideReason`]). Returns `Err` only for what stops the whole run: an
/// invalid configuration, a path that does not exist, or `out` being closed.
pub async fn ingest(
    paths: Vec<PathBuf>,
    config: IngestConfig,
    out: mpsc::Sender<Record>,
) -> Result<IngestSummary, IngestError> {
    config.validate()?;
    for path in &paths {
        if let Err(source) = std::fs::metadata(path) {
            return Err(IngestError::InputPath {
                path: path.clone(),
                source,
            });
        }
    }
    let (tokens, overlap) = (config.chunk_tokens, config.chunk_overlap);
    // Building the cl100k tables takes a moment the first time: off the async workers.
    let chunker = tokio::task::spawn_blocking(move || Chunker::new(tokens, overlap))
        .await
        .map_err(|e| IngestError::Worker {
            path: PathBuf::new(),
            message: e.to_string(),
        })??;
    let chunker = Arc::new(chunker);
    let config = Arc::new(config);
    let max_listed = config.max_listed_set_aside;
    let window = config.parallelism.get();

    let (walk_tx, mut walk_rx) = mpsc::channel(WALK_QUEUE);
    let walker = tokio::task::spawn_blocking(move || {
        for item in Walk::new(paths) {
            if walk_tx.blocking_send(item).is_err() {
                break;
            }
        }
    });

    let mut summary = IngestSummary::default();
    let mut sent: u64 = 0;
    let mut pending: VecDeque<Pending> = VecDeque::with_capacity(window + 1);
    let mut walk_done = false;
    loop {
        // Keep `window` file reads in flight.
        while !walk_done
            && pending
                .iter()
                .filter(|p| matches!(p, Pending::Job(..)))
                .count()
                < window
        {
            match walk_rx.recv().await {
                None => walk_done = true,
                Some(WalkItem::File(path)) if is_csv(&path) => {
                    pending.push_back(Pending::Csv(path))
                }
                Some(WalkItem::File(path)) => {
                    let job = tokio::spawn(read_file(
                        path.clone(),
                        Arc::clone(&config),
                        Arc::clone(&chunker),
                    ));
                    pending.push_back(Pending::Job(path, job));
                }
                Some(WalkItem::Skipped(path, why)) => {
                    pending.push_back(Pending::Skipped(path, why))
                }
                Some(WalkItem::Unreadable(path, e)) => {
                    pending.push_back(Pending::Unreadable(path, e))
                }
            }
        }
        let Some(next) = pending.pop_front() else {
            break;
        };
        let result = match next {
            Pending::Job(path, job) => job.await.map_err(|e| IngestError::Worker {
                path,
                message: e.to_string(),
            })?,
            Pending::Csv(path) => {
                let csv_summary = stream_csv(path, Arc::clone(&config), out.clone())
                    .await
                    .map_err(|e| match e {
                        IngestError::OutputClosed { .. } => {
                            IngestError::OutputClosed { records_sent: sent }
                        }
                        other => other,
                    })?;
                sent += csv_summary.nodes + csv_summary.edges + csv_summary.set_aside_total();
                summary.merge(csv_summary, max_listed);
                continue;
            }
            Pending::Skipped(path, why) => {
                tracing::info!(path = %path.display(), reason = why, "skipped");
                summary.skipped.push(SkippedPath {
                    path: source_of(&path),
                    reason: why.to_string(),
                });
                continue;
            }
            Pending::Unreadable(path, e) => {
                let source = source_of(&path);
                let detail = format!("{source}: {e}");
                FileResult {
                    records: vec![set_aside(&source, SetAsideReason::UnreadableFile, detail)],
                    summary: IngestSummary {
                        files_seen: 1,
                        ..IngestSummary::default()
                    },
                }
            }
        };
        summary.merge(result.summary, max_listed);
        for record in result.records {
            if let Record::SetAside(s) = &record {
                tracing::warn!(item = %s.item, reason = %s.reason, "set aside: {}", s.detail);
            }
            summary.note(&record, max_listed);
            out.send(record)
                .await
                .map_err(|_| IngestError::OutputClosed { records_sent: sent })?;
            sent += 1;
        }
    }
    // The walk has ended (its channel closed), so this returns at once.
    let _ = walker.await;
    Ok(summary)
}

/// Runs [`ingest`] on a fresh multi-threaded runtime and collects every
/// record. For tests, benches and small inputs: the records are all held in
/// memory. Must not be called from inside a tokio runtime.
pub fn ingest_to_vec(
    paths: Vec<PathBuf>,
    config: IngestConfig,
) -> Result<(Vec<Record>, IngestSummary), IngestError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.parallelism.get())
        .enable_all()
        .build()
        .map_err(|e| IngestError::Worker {
            path: PathBuf::new(),
            message: format!("cannot start a tokio runtime: {e}"),
        })?;
    runtime.block_on(async move {
        let (tx, mut rx) = mpsc::channel(1024);
        let collector = tokio::spawn(async move {
            let mut records = Vec::new();
            while let Some(r) = rx.recv().await {
                records.push(r);
            }
            records
        });
        let summary = ingest(paths, config, tx).await?;
        let records = collector.await.map_err(|e| IngestError::Worker {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        Ok((records, summary))
    })
}
