//! The per-run summary.

use std::collections::BTreeMap;

use kg_core::{Record, SetAside};
use serde::Serialize;

/// A path the walk skipped on purpose (hidden or system junk), with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedPath {
    /// The path.
    pub path: String,
    /// A snake_case code: `hidden`, `macos_resource_fork`, `windows_metadata`, ...
    pub reason: String,
}

/// What an ingest run did. Everything sent on the output channel is counted
/// here; nothing read is missing from it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct IngestSummary {
    /// Files the walk handed to a reader (skipped junk not included).
    pub files_seen: u64,
    /// Files that yielded a document or CSV records.
    pub files_read: u64,
    /// Documents emitted.
    pub documents: u64,
    /// PDF pages read.
    pub pages: u64,
    /// Chunks emitted.
    pub chunks: u64,
    /// CSV data rows read (good and bad).
    pub csv_rows: u64,
    /// Graph nodes emitted from CSV rows.
    pub nodes: u64,
    /// Graph relations emitted from CSV rows.
    pub edges: u64,
    /// Invalid UTF-8 sequences replaced by U+FFFD in text files (a CSV field
    /// that is not UTF-8 is decoded as Windows-1252 instead; see `warnings`).
    pub invalid_utf8_sequences: u64,
    /// PDFs whose text came from the fallback engine.
    pub pdf_fallbacks: u64,
    /// Input bytes of the files read.
    pub bytes_read: u64,
    /// Files read, but not exactly as their settings said, one line each
    /// naming the file (a CSV that is not UTF-8 and was decoded as
    /// Windows-1252). Also logged at warn level.
    pub warnings: Vec<String>,
    /// Junk skipped by the walk, with why.
    pub skipped: Vec<SkippedPath>,
    /// Number of set-aside items per reason code.
    pub set_aside_by_reason: BTreeMap<String, u64>,
    /// The set-aside items (at most `IngestConfig::max_listed_set_aside`).
    pub set_aside: Vec<SetAside>,
    /// Set-aside items counted but not kept in `set_aside`.
    pub set_aside_not_listed: u64,
    /// True when the run was cancelled before it had read everything; the
    /// counts above then cover only what was sent.
    pub interrupted: bool,
    /// When interrupted: the sources (canonical paths) of the files that were
    /// started or queued for reading but not completely sent (a file whose
    /// records were all sent is finished). Files the walk had not handed to
    /// a reader yet are not listed.
    pub unfinished: Vec<String>,
}

impl IngestSummary {
    /// Total number of set-aside items (files and rows).
    pub fn set_aside_total(&self) -> u64 {
        self.set_aside_by_reason.values().sum()
    }

    /// Counts one record that is being sent.
    pub(crate) fn note(&mut self, record: &Record, max_listed: usize) {
        match record {
            Record::Document(d) => {
                self.documents += 1;
                self.pages += u64::from(d.pages.unwrap_or(0));
            }
            Record::Chunk(_) => self.chunks += 1,
            Record::Node(_) => self.nodes += 1,
            Record::Edge(_) => self.edges += 1,
            Record::SetAside(s) => {
                *self
                    .set_aside_by_reason
                    .entry(s.reason.code().to_string())
                    .or_default() += 1;
                if self.set_aside.len() < max_listed {
                    self.set_aside.push(s.clone());
                } else {
                    self.set_aside_not_listed += 1;
                }
            }
            _ => {}
        }
    }

    /// Adds another summary's counts to this one.
    pub(crate) fn merge(&mut self, other: IngestSummary, max_listed: usize) {
        self.files_seen += other.files_seen;
        self.files_read += other.files_read;
        self.documents += other.documents;
        self.pages += other.pages;
        self.chunks += other.chunks;
        self.csv_rows += other.csv_rows;
        self.nodes += other.nodes;
        self.edges += other.edges;
        self.invalid_utf8_sequences += other.invalid_utf8_sequences;
        self.pdf_fallbacks += other.pdf_fallbacks;
        self.bytes_read += other.bytes_read;
        self.warnings.extend(other.warnings);
        self.skipped.extend(other.skipped);
        for (reason, n) in other.set_aside_by_reason {
            *self.set_aside_by_reason.entry(reason).or_default() += n;
        }
        for s in other.set_aside {
            if self.set_aside.len() < max_listed {
                self.set_aside.push(s);
            } else {
                self.set_aside_not_listed += 1;
            }
        }
        self.set_aside_not_listed += other.set_aside_not_listed;
        self.interrupted |= other.interrupted;
        self.unfinished.extend(other.unfinished);
    }
}
