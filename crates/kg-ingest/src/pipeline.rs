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
//! reaches the head of the queue its rows are streamed (through a small
//! queue) into the output channel, so a CSV of any size needs constant
//! memory.
//!
//! Output order is deterministic: walk order, and within a file a `Document`
//! then its `Chunk`s in order (or the CSV's rows in file order).
//!
//! Only the run itself sends on the output channel, so once its
//! cancellation token fires nothing more is sent: the walk stops at its next
//! path, the file tasks are aborted (a PDF engine or a read already running
//! on the blocking pool cannot be stopped; it finishes unobserved and its
//! result is dropped), and the run returns what it had done, with the files
//! it had started but not completely sent.

use std::collections::VecDeque;
use std::future::Future;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kg_core::{Document, DocumentId, MediaType, Record, SetAside, Stage};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::chunk::{Chunker, PagedText};
use crate::config::IngestConfig;
use crate::csv_graph::{map_csv_file, node_keys, CsvFileFailure, KeyIndex, OutputClosed};
use crate::error::{IngestError, SetAsideReason};
use crate::furniture::clean_pages;
use crate::pdf::{read_pdf, PdfOutcome};
use crate::summary::{IngestSummary, SkippedPath};
use crate::text::{decode_utf8, detect, looks_binary, markdown_title, FileKind};
use crate::walk::{Walk, WalkItem};

/// Paths the walk may queue ahead of the readers.
const WALK_QUEUE: usize = 256;

/// Records a CSV reader may hold ahead of the output.
const CSV_QUEUE: usize = 64;

/// What reading one (non-CSV) file produced, in emission order.
struct FileResult {
    records: Vec<Record>,
    summary: IngestSummary,
}

/// A file's text as read, before it is chunked.
enum Body {
    /// A PDF's pages as the engine laid them out.
    Pages(Vec<String>),
    /// Text without pages.
    Text(String),
}

/// An entry of the in-order window.
enum Pending {
    /// A file being read; dropping the handle aborts the task.
    Job(PathBuf, AbortOnDropHandle<FileResult>),
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

/// Reads a whole file, or `None` when it holds more than `limit` bytes.
/// `size` (from its metadata) only sizes the buffer: a named pipe reports 0
/// and is read to its end, and a file that grew is still caught.
fn read_at_most(path: &Path, size: u64, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
    let file = std::fs::File::open(path)?;
    let capacity = usize::try_from(size.min(limit)).unwrap_or(0);
    let mut bytes = Vec::with_capacity(capacity.saturating_add(1));
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= limit).then_some(bytes))
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
    let (read_path, limit) = (path.clone(), config.max_file_bytes);
    let read = tokio::task::spawn_blocking(move || read_at_most(&read_path, size, limit)).await;
    let bytes = match read {
        Ok(Ok(Some(b))) => b,
        Ok(Ok(None)) => {
            let detail = format!("{source}: more than the limit of {limit} bytes (max_file_bytes)");
            return one(
                set_aside(&source, SetAsideReason::FileTooLarge, detail),
                summary,
            );
        }
        Ok(Err(e)) => {
            let r = set_aside(
                &source,
                SetAsideReason::UnreadableFile,
                format!("{source}: {e}"),
            );
            return one(r, summary);
        }
        Err(e) => {
            let r = set_aside(
                &source,
                SetAsideReason::UnreadableFile,
                format!("{source}: reading failed: {e}"),
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
                    (MediaType::Pdf, Body::Pages(pdf.pages), None, pages)
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
            (media, Body::Text(decoded.text), title, None)
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
        let text = match text {
            // Page furniture and hyphenation go before the pages are joined,
            // so every page keeps its place (and chunks their page numbers).
            Body::Pages(pages) => PagedText::from_pages(&clean_pages(pages)),
            Body::Text(text) => PagedText::unpaged(text),
        };
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

/// Reads one CSV file through its mapping on the blocking pool, sending its
/// records into `rows` (which the run forwards to the output). Returns the
/// file's counts; stops early, with `None`, when `rows` is closed (the run
/// was cancelled or failed).
fn read_csv(
    path: &Path,
    source: &str,
    config: &IngestConfig,
    keys: Option<&KeyIndex>,
    rows: &mpsc::Sender<Record>,
) -> Option<IngestSummary> {
    let mut local = IngestSummary {
        files_seen: 1,
        ..IngestSummary::default()
    };
    let mut send = |record: Record| rows.blocking_send(record).map_err(|_| OutputClosed);
    let Some(mapping) = config.csv_mapping.as_ref().and_then(|m| m.for_path(path)) else {
        let detail = format!(
            "{source}: no entry for this file in the CSV mapping (--csv-mapping); CSV files become graph rows only through a mapping"
        );
        return send(set_aside(source, SetAsideReason::CsvNotMapped, detail))
            .ok()
            .map(|()| local);
    };
    match map_csv_file(path, source, mapping, keys, &mut send) {
        Ok(stats) => {
            local.files_read = 1;
            local.csv_rows = stats.rows;
            if let Some(line) = stats.first_windows_1252_line {
                let warning = format!(
                    "{source}: not UTF-8 (first at line {line}); {} field(s) decoded as Windows-1252 (Latin-1); set `encoding = \"latin-1\"` for this file in the CSV mapping if that is what it is",
                    stats.windows_1252_fields
                );
                tracing::warn!(source, fields = stats.windows_1252_fields, "{warning}");
                local.warnings.push(warning);
            }
            local.bytes_read = std::fs::metadata(path).map_or(0, |m| m.len());
            Some(local)
        }
        Err(CsvFileFailure::SetAside(reason, detail)) => {
            send(set_aside(source, reason, detail)).ok().map(|()| local)
        }
        Err(CsvFileFailure::OutputClosed) => None,
    }
}

/// `fut`'s output, or `None` as soon as `cancel` fires (checked first, so
/// nothing more happens once it has fired).
async fn unless_cancelled<F: Future>(cancel: &CancellationToken, fut: F) -> Option<F::Output> {
    tokio::select! {
        biased;
        () = cancel.cancelled() => None,
        out = fut => Some(out),
    }
}

/// The sending end of a run: counts what it sends, stops when cancelled.
struct Output {
    out: mpsc::Sender<Record>,
    cancel: CancellationToken,
    summary: IngestSummary,
    sent: u64,
    max_listed: usize,
}

impl Output {
    /// Sends one record and counts it. `Ok(false)`: the run was cancelled
    /// and the record was not sent.
    async fn send(&mut self, record: Record) -> Result<bool, IngestError> {
        let Some(permit) = unless_cancelled(&self.cancel, self.out.reserve()).await else {
            return Ok(false);
        };
        let permit = permit.map_err(|_| IngestError::OutputClosed {
            records_sent: self.sent,
        })?;
        if let Record::SetAside(s) = &record {
            tracing::debug!(item = %s.item, reason = %s.reason, "set aside: {}", s.detail);
        }
        self.summary.note(&record, self.max_listed);
        permit.send(record);
        self.sent += 1;
        Ok(true)
    }

    /// Ends an interrupted run: `current` (the file being emitted, if any)
    /// and every file of the window are unfinished.
    /// `deferred`: CSV files held back until the node files were read.
    fn interrupted(
        mut self,
        current: Option<&Path>,
        window: VecDeque<Pending>,
        deferred: &[PathBuf],
    ) -> IngestSummary {
        let mut unfinished: Vec<String> = current.map(source_of).into_iter().collect();
        unfinished.extend(deferred.iter().map(|p| source_of(p)));
        for entry in window {
            match entry {
                Pending::Job(path, job) => {
                    job.abort();
                    unfinished.push(source_of(&path));
                }
                Pending::Csv(path) | Pending::Unreadable(path, _) => {
                    unfinished.push(source_of(&path))
                }
                Pending::Skipped(path, why) => self.summary.skipped.push(SkippedPath {
                    path: source_of(&path),
                    reason: why.to_string(),
                }),
            }
        }
        tracing::info!(
            unfinished = unfinished.len(),
            records_sent = self.sent,
            "ingest cancelled"
        );
        self.summary.interrupted = true;
        self.summary.unfinished = unfinished;
        self.summary
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
///
/// When `cancel` fires, the run stops walking and starting files, aborts the
/// file tasks in flight without waiting for them (a PDF engine already
/// running on the blocking pool finishes on its own; its result is dropped),
/// sends nothing more, and returns `Ok` at once with
/// [`IngestSummary::interrupted`] set and the files that were started or
/// queued but not completely sent in [`IngestSummary::unfinished`]. The
/// counts then cover what was sent.
pub async fn ingest(
    paths: Vec<PathBuf>,
    config: IngestConfig,
    out: mpsc::Sender<Record>,
    cancel: CancellationToken,
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
    let max_listed = config.max_listed_set_aside;
    let mut output = Output {
        out,
        cancel: cancel.clone(),
        summary: IngestSummary::default(),
        sent: 0,
        max_listed,
    };
    if let Some(mapping) = &config.csv_mapping {
        // Logged when the mapping was parsed; repeated where the run's
        // reader looks.
        let renames = mapping.renamed.iter().map(ToString::to_string);
        output.summary.warnings.extend(renames);
    }
    let (tokens, overlap) = (config.chunk_tokens, config.chunk_overlap);
    // Building the cl100k tables takes a moment the first time: off the async workers.
    let building = tokio::task::spawn_blocking(move || Chunker::new(tokens, overlap));
    let Some(chunker) = unless_cancelled(&cancel, building).await else {
        return Ok(output.interrupted(None, VecDeque::new(), &[]));
    };
    let chunker = chunker.map_err(|e| IngestError::Worker {
        path: PathBuf::new(),
        message: e.to_string(),
    })??;
    let chunker = Arc::new(chunker);
    let config = Arc::new(config);
    let window = config.parallelism.get();

    let (walk_tx, mut walk_rx) = mpsc::channel(WALK_QUEUE);
    let walk_cancel = cancel.clone();
    // Not awaited: it ends when the walk does, or at its next path once the
    // run is cancelled (or gone, which closes its channel).
    tokio::task::spawn_blocking(move || {
        for item in Walk::new(paths) {
            if walk_cancel.is_cancelled() || walk_tx.blocking_send(item).is_err() {
                break;
            }
        }
    });

    // Dropping an entry aborts its task: whatever way this function ends
    // (error, cancellation, or its future being dropped), no file task
    // outlives it.
    let mut pending: VecDeque<Pending> = VecDeque::with_capacity(window + 1);
    let mut walk_done = false;
    // CSV files whose relations check node keys, held back (paths only)
    // until every other file, the node files among them, has been read.
    let mut deferred: Vec<PathBuf> = Vec::new();
    let mut keys = config
        .csv_mapping
        .as_ref()
        .map(KeyIndex::new)
        .unwrap_or_default();
    loop {
        // Keep `window` file reads in flight.
        while !walk_done
            && pending
                .iter()
                .filter(|p| matches!(p, Pending::Job(..)))
                .count()
                < window
        {
            let Some(item) = unless_cancelled(&cancel, walk_rx.recv()).await else {
                return Ok(output.interrupted(None, pending, &deferred));
            };
            match item {
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
                    pending.push_back(Pending::Job(path, AbortOnDropHandle::new(job)));
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
        let (path, result) = match next {
            Pending::Job(path, mut job) => {
                let Some(joined) = unless_cancelled(&cancel, &mut job).await else {
                    job.abort();
                    return Ok(output.interrupted(Some(&path), pending, &deferred));
                };
                let result = joined.map_err(|e| IngestError::Worker {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                (path, result)
            }
            Pending::Csv(path) => {
                let mapped = config.csv_mapping.as_ref().and_then(|m| m.for_path(&path));
                if mapped.is_some_and(|m| m.checks_keys()) {
                    // Its relations need every node key: after the walk.
                    deferred.push(path);
                    continue;
                }
                let node_label = mapped.and_then(|m| m.node.as_ref()).map(|n| &n.label);
                let read =
                    stream_csv(&mut output, &path, &config, None, Some(&mut keys), &cancel).await?;
                match read {
                    Streamed::Cancelled => {
                        return Ok(output.interrupted(Some(&path), pending, &deferred))
                    }
                    Streamed::Read => {
                        if let Some(label) = node_label {
                            keys.file_read(label);
                        }
                    }
                    Streamed::SetAside => {}
                }
                continue;
            }
            Pending::Skipped(path, why) => {
                tracing::info!(path = %path.display(), reason = why, "skipped");
                output.summary.skipped.push(SkippedPath {
                    path: source_of(&path),
                    reason: why.to_string(),
                });
                continue;
            }
            Pending::Unreadable(path, e) => {
                let source = source_of(&path);
                let detail = format!("{source}: {e}");
                let result = FileResult {
                    records: vec![set_aside(&source, SetAsideReason::UnreadableFile, detail)],
                    summary: IngestSummary {
                        files_seen: 1,
                        ..IngestSummary::default()
                    },
                };
                (path, result)
            }
        };
        for record in result.records {
            if !output.send(record).await? {
                return Ok(output.interrupted(Some(&path), pending, &deferred));
            }
        }
        // Counted once all of the file's records are out.
        output.summary.merge(result.summary, max_listed);
    }
    if deferred.is_empty() {
        return Ok(output.summary);
    }

    // The held-back files may map nodes too (a row's own node, the target
    // of another row's relation): read their keys first.
    let node_label = |path: &Path| {
        let mapping = config.csv_mapping.as_ref()?.for_path(path)?;
        mapping.node.as_ref().map(|n| n.label.clone())
    };
    let key_paths: Vec<PathBuf> = deferred
        .iter()
        .filter(|p| node_label(p).is_some_and(|l| keys.wants(&l)))
        .cloned()
        .collect();
    let key_config = Arc::clone(&config);
    let reading = tokio::task::spawn_blocking(move || {
        let mut found = Vec::new();
        for path in &key_paths {
            let Some(mapping) = key_config
                .csv_mapping
                .as_ref()
                .and_then(|m| m.for_path(path))
            else {
                continue;
            };
            if let Some(node) = &mapping.node {
                if let Some(keys) = node_keys(path, &source_of(path), mapping) {
                    found.push((node.label.clone(), keys));
                }
            }
        }
        found
    });
    let Some(found) = unless_cancelled(&cancel, reading).await else {
        return Ok(output.interrupted(None, VecDeque::new(), &deferred));
    };
    let found = found.map_err(|e| IngestError::Worker {
        path: PathBuf::new(),
        message: e.to_string(),
    })?;
    for (label, file_keys) in found {
        keys.file_read(&label);
        for key in &file_keys {
            keys.insert(&label, key);
        }
    }
    let keys = Arc::new(keys);
    let mut rest = std::mem::take(&mut deferred);
    rest.reverse();
    while let Some(path) = rest.pop() {
        let read = stream_csv(
            &mut output,
            &path,
            &config,
            Some(Arc::clone(&keys)),
            None,
            &cancel,
        )
        .await?;
        if read == Streamed::Cancelled {
            rest.reverse();
            return Ok(output.interrupted(Some(&path), VecDeque::new(), &rest));
        }
    }
    Ok(output.summary)
}

/// How streaming one CSV file ended.
#[derive(Debug, PartialEq, Eq)]
enum Streamed {
    /// Its rows were mapped (some may have been set aside).
    Read,
    /// The whole file was set aside.
    SetAside,
    /// The run was cancelled before all its records were sent.
    Cancelled,
}

/// Streams one CSV file through its mapping into `output`: rows are
/// forwarded as they come, so a CSV of any size needs constant memory.
/// With `check`, relation ends are checked against those keys; with
/// `collect`, the keys of the nodes sent are added to it.
async fn stream_csv(
    output: &mut Output,
    path: &Path,
    config: &Arc<IngestConfig>,
    check: Option<Arc<KeyIndex>>,
    mut collect: Option<&mut KeyIndex>,
    cancel: &CancellationToken,
) -> Result<Streamed, IngestError> {
    let max_listed = output.max_listed;
    let source = source_of(path);
    let (rows_tx, mut rows_rx) = mpsc::channel(CSV_QUEUE);
    let csv_config = Arc::clone(config);
    let csv_path = path.to_path_buf();
    let reader = tokio::task::spawn_blocking(move || {
        read_csv(&csv_path, &source, &csv_config, check.as_deref(), &rows_tx)
    });
    // Once the run is cancelled, `rows_rx` is dropped and the reader stops
    // at its next row.
    loop {
        let Some(row) = unless_cancelled(cancel, rows_rx.recv()).await else {
            return Ok(Streamed::Cancelled);
        };
        let Some(record) = row else { break };
        if let (Some(keys), Record::Node(node)) = (collect.as_deref_mut(), &record) {
            if keys.wants(&node.label) {
                keys.insert(&node.label, &node.key);
            }
        }
        if !output.send(record).await? {
            return Ok(Streamed::Cancelled);
        }
    }
    // The reader has dropped its sender: it is done.
    match reader.await {
        Ok(Some(csv_summary)) => {
            let read = if csv_summary.files_read > 0 {
                Streamed::Read
            } else {
                Streamed::SetAside
            };
            output.summary.merge(csv_summary, max_listed);
            Ok(read)
        }
        // Cannot happen while `rows_rx` is held; not a panic either.
        Ok(None) => Err(IngestError::Worker {
            path: path.to_path_buf(),
            message: "the CSV reader stopped before the end".to_string(),
        }),
        Err(e) => Err(IngestError::Worker {
            path: path.to_path_buf(),
            message: e.to_string(),
        }),
    }
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
        let summary = ingest(paths, config, tx, CancellationToken::new()).await?;
        let records = collector.await.map_err(|e| IngestError::Worker {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        Ok((records, summary))
    })
}
