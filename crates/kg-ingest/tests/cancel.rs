//! Cancelling a run: it returns promptly, sends nothing more, and says which
//! files it did not finish.
//!
//! The slow file is real: a named pipe called `slow.pdf` whose writer sends
//! a PDF header and then nothing, so reading it blocks for as long as the
//! test keeps the writing end open (no timer decides when the read is slow).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::fixture;
use kg_core::Record;
use kg_ingest::{ingest, CancellationToken, CsvMapping, IngestConfig, IngestSummary};
use tokio::sync::mpsc;

/// A hang guard only: a run that ignores its token would wait on the pipe
/// until this runs out (far below the 300 s PDF timeout used here).
const HANG_GUARD: Duration = Duration::from_secs(20);

fn canonical(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .display()
        .to_string()
}

/// A named pipe at `path` (mkfifo from coreutils).
fn make_fifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap_or_else(|e| panic!("mkfifo: {e}"));
    assert!(status.success(), "mkfifo {} failed", path.display());
}

/// Opens the pipe for writing on a thread: that returns only once a reader
/// (kg) has opened it. The writer then sends the start of a PDF and nothing
/// more; the returned receiver yields the open writing end, which keeps
/// kg's read blocked until it is dropped.
fn stall_reader_of(fifo: PathBuf) -> tokio::sync::oneshot::Receiver<std::fs::File> {
    let (opened_tx, opened_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut writer = std::fs::OpenOptions::new()
            .write(true)
            .open(&fifo)
            .unwrap_or_else(|e| panic!("{}: {e}", fifo.display()));
        writer
            .write_all(b"%PDF-1.7\n%\xE2\xE3\xCF\xD3\n")
            .unwrap_or_else(|e| panic!("writing the pipe: {e}"));
        let _ = opened_tx.send(writer);
    });
    opened_rx
}

/// A config whose PDF timeout is far longer than the hang guard, so that a
/// prompt return can only come from the cancellation.
fn slow_config() -> IngestConfig {
    IngestConfig {
        pdf_timeout: Duration::from_secs(300),
        parallelism: std::num::NonZeroUsize::new(4).unwrap_or(std::num::NonZeroUsize::MIN),
        ..IngestConfig::default()
    }
}

/// Awaits the run (after the test cancelled it), with the hang guard.
async fn finish(
    run: tokio::task::JoinHandle<Result<IngestSummary, kg_ingest::IngestError>>,
) -> IngestSummary {
    match tokio::time::timeout(HANG_GUARD, run).await {
        Ok(Ok(Ok(summary))) => summary,
        Ok(Ok(Err(e))) => panic!("ingest failed: {e}"),
        Ok(Err(e)) => panic!("ingest task failed: {e}"),
        Err(_) => panic!("ingest did not return within {HANG_GUARD:?} of being cancelled"),
    }
}

/// Everything still in the channel once the run has returned; `None` from
/// `recv` proves the run dropped its sender (it can send nothing more).
async fn drain(rx: &mut mpsc::Receiver<Record>) -> Vec<Record> {
    let mut rest = Vec::new();
    while let Ok(Some(r)) = tokio::time::timeout(HANG_GUARD, rx.recv()).await {
        rest.push(r);
    }
    assert!(rx.is_closed(), "the run still holds the output channel");
    rest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_cancelled_while_a_pdf_is_read_returns_at_once_and_lists_it() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let slow = dir.path().join("slow.pdf");
    make_fifo(&slow);
    let opened = stall_reader_of(slow.clone());

    let (tx, mut rx) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    let run = tokio::spawn(ingest(
        vec![slow.clone()],
        slow_config(),
        tx,
        cancel.clone(),
    ));
    // kg has opened the pipe and is blocked reading it.
    let writer = match tokio::time::timeout(HANG_GUARD, opened).await {
        Ok(Ok(w)) => w,
        other => panic!("kg never opened the pipe: {other:?}"),
    };
    assert!(!run.is_finished());

    cancel.cancel();
    let summary = finish(run).await;
    let rest = drain(&mut rx).await;

    assert!(summary.interrupted);
    assert_eq!(summary.unfinished, vec![canonical(&slow)]);
    assert!(rest.is_empty(), "records after a cancel: {rest:?}");
    assert_eq!(
        (summary.documents, summary.chunks, summary.files_read),
        (0, 0, 0)
    );
    assert_eq!(summary.set_aside_total(), 0);
    // The summary serialises like the rest of it.
    let json = serde_json::to_value(&summary).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(json["interrupted"], serde_json::Value::Bool(true));
    assert_eq!(
        json["unfinished"][0].as_str(),
        Some(canonical(&slow).as_str())
    );

    // Lets the abandoned read see the end of the pipe, so that the runtime's
    // blocking thread can end.
    drop(writer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_sent_before_the_cancel_are_not_unfinished() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let done = dir.path().join("done.md");
    std::fs::write(&done, "# Done\n\nIan Murdock founded Debian in 1993.\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let slow = dir.path().join("slow.pdf");
    make_fifo(&slow);
    let after = dir.path().join("after.txt");
    std::fs::write(&after, "Bruce Perens led the project from 1996.\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let opened = stall_reader_of(slow.clone());

    let (tx, mut rx) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    let run = tokio::spawn(ingest(
        vec![done.clone(), slow.clone(), after.clone()],
        slow_config(),
        tx,
        cancel.clone(),
    ));
    // done.md's document and its one chunk: all of its records.
    let mut received = Vec::new();
    for _ in 0..2 {
        match tokio::time::timeout(HANG_GUARD, rx.recv()).await {
            Ok(Some(r)) => received.push(r),
            other => panic!("expected done.md's records, got {other:?}"),
        }
    }
    assert!(
        matches!(&received[..], [Record::Document(d), Record::Chunk(c)]
            if d.source == canonical(&done) && c.text.contains("Ian Murdock")),
        "{received:?}"
    );
    let writer = match tokio::time::timeout(HANG_GUARD, opened).await {
        Ok(Ok(w)) => w,
        other => panic!("kg never opened the pipe: {other:?}"),
    };

    cancel.cancel();
    let summary = finish(run).await;
    let rest = drain(&mut rx).await;

    assert!(summary.interrupted);
    assert_eq!(
        summary.unfinished,
        vec![canonical(&slow), canonical(&after)]
    );
    assert!(!summary.unfinished.contains(&canonical(&done)));
    assert!(rest.is_empty(), "records after a cancel: {rest:?}");
    assert_eq!(
        (summary.documents, summary.chunks, summary.files_read),
        (1, 1, 1)
    );
    drop(writer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_being_streamed_when_cancelled_is_unfinished() {
    let mapping = CsvMapping::from_file(&fixture("csv/mapping.toml"))
        .unwrap_or_else(|e| panic!("mapping: {e}"));
    let config = IngestConfig {
        csv_mapping: Some(mapping),
        ..IngestConfig::default()
    };
    let airports = fixture("csv/airports.csv");
    // A one-record channel: the run stays a record or two ahead of us.
    let (tx, mut rx) = mpsc::channel(1);
    let cancel = CancellationToken::new();
    let run = tokio::spawn(ingest(vec![airports.clone()], config, tx, cancel.clone()));
    let mut received = 0u64;
    while received < 10 {
        match tokio::time::timeout(HANG_GUARD, rx.recv()).await {
            Ok(Some(Record::Node(_))) => received += 1,
            other => panic!("expected airport nodes, got {other:?}"),
        }
    }
    cancel.cancel();
    let summary = finish(run).await;
    received += drain(&mut rx).await.len() as u64;

    assert!(summary.interrupted);
    assert_eq!(summary.unfinished, vec![canonical(&airports)]);
    // Everything sent was counted, and nothing was sent after the cancel:
    // the channel held at most one more than the ten received (of 3,376).
    assert_eq!(summary.nodes, received);
    assert!(received <= 11, "{received} nodes sent");
    assert_eq!(summary.files_read, 0);
}
