//! JSON Lines between stages: reading files or stdin, writing a file or
//! stdout, on blocking threads connected to the async pipeline by bounded
//! channels (so a slow pipe slows the stage instead of buffering the input).

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use kg_core::jsonl::{write_record, RecordReader};
use kg_core::{Record, SetAside, Stage};
use tokio::sync::mpsc;

/// An input or output file problem: the command exits 1.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// An input file cannot be opened.
    #[error("cannot open input {path}: {error}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        error: std::io::Error,
    },
    /// The output cannot be created or written.
    #[error("cannot write output {name}: {error}")]
    Write {
        /// The file or `-`.
        name: String,
        /// Why.
        #[source]
        error: std::io::Error,
    },
}

/// Spawns a thread reading `inputs` (stdin if empty) into `tx`, in order. A
/// line that is not a record becomes a [`SetAside`] of `stage` (reason
/// `bad_jsonl_line`) and reading goes on.
pub fn spawn_reader(
    inputs: Vec<PathBuf>,
    stage: Stage,
    tx: mpsc::Sender<Record>,
) -> tokio::task::JoinHandle<Result<(), IoError>> {
    tokio::task::spawn_blocking(move || {
        if inputs.is_empty() {
            let stdin = std::io::stdin();
            read_into(stdin.lock(), "-", stage, &tx);
            return Ok(());
        }
        for path in &inputs {
            let file = std::fs::File::open(path).map_err(|error| IoError::Open {
                path: path.clone(),
                error,
            })?;
            if !read_into(
                BufReader::new(file),
                &path.display().to_string(),
                stage,
                &tx,
            ) {
                break;
            }
        }
        Ok(())
    })
}

fn read_into(input: impl BufRead, name: &str, stage: Stage, tx: &mpsc::Sender<Record>) -> bool {
    for item in RecordReader::new(input, name) {
        let record = match item {
            Ok(r) => r,
            Err(e) => {
                let (item, detail) = match &e {
                    kg_core::jsonl::JsonlError::Io {
                        source_name, line, ..
                    }
                    | kg_core::jsonl::JsonlError::Parse {
                        source_name, line, ..
                    } => (
                        format!("{source_name}:{line}"),
                        crate::logging::cause_chain(&e),
                    ),
                };
                tracing::error!(item = %item, "{detail}");
                let io = matches!(e, kg_core::jsonl::JsonlError::Io { .. });
                let aside = Record::SetAside(SetAside {
                    stage,
                    item,
                    reason: if io {
                        kg_core::SetAsideReason::UnreadableInput
                    } else {
                        kg_core::SetAsideReason::BadJsonlLine
                    },
                    detail,
                });
                if tx.blocking_send(aside).is_err() || io {
                    return false;
                }
                continue;
            }
        };
        if tx.blocking_send(record).is_err() {
            return false;
        }
    }
    true
}

/// Where a one-stage command writes.
pub fn open_output(path: Option<&Path>) -> Result<(String, Box<dyn Write + Send>), IoError> {
    match path {
        None => Ok(("-".into(), Box::new(std::io::stdout()))),
        Some(p) => {
            let name = p.display().to_string();
            let file = std::fs::File::create(p).map_err(|error| IoError::Write {
                name: name.clone(),
                error,
            })?;
            Ok((name, Box::new(file)))
        }
    }
}

/// Spawns a thread writing the records of `rx` to `out`; `on_record` sees
/// each one first (to count it).
pub fn spawn_writer(
    name: String,
    out: Box<dyn Write + Send>,
    mut rx: mpsc::Receiver<Record>,
    on_record: impl Fn(&Record) + Send + 'static,
) -> tokio::task::JoinHandle<Result<(), IoError>> {
    tokio::task::spawn_blocking(move || {
        let mut out = BufWriter::with_capacity(1 << 16, out);
        let err = |error| IoError::Write {
            name: name.clone(),
            error,
        };
        while let Some(record) = rx.blocking_recv() {
            on_record(&record);
            write_record(&mut out, &record).map_err(err)?;
            // Flush when the queue is empty, so a downstream stage in a pipe
            // gets records as soon as they exist, not when 64 KiB are full.
            if rx.is_empty() {
                out.flush().map_err(err)?;
            }
        }
        out.flush().map_err(err)
    })
}
