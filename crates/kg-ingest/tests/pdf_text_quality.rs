//! The text kg emits for a PDF (its chunks: page furniture removed,
//! hyphenation joined) agrees with pdftotext's on at least 97% of distinct
//! words, both ways, on real PDFs (Debian documentation and sample files).
//!
//! The comparison is fair to both sides: pdftotext's text in content-stream
//! order (`-raw`, the order kg reads in, with line-end hyphens kept) is
//! cleaned exactly as kg cleans its own ([`kg_ingest::furniture::clean_pages`]:
//! running headers, footers and page numbers removed, hyphenated words
//! joined where the document knows the joined word). pdftotext's default
//! mode joins every hyphenated line end, which kg deliberately does not do
//! for words it cannot confirm, so comparing against it would count each
//! such word as a disagreement of extraction.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{agreement, fixture, pdftotext, pdftotext_raw, words};
use kg_core::Record;
use kg_ingest::furniture::{clean_pages, strip_furniture};
use kg_ingest::pdf::extract_pages_with;
use kg_ingest::{ingest_to_vec, IngestConfig, PdfEngine};

const REAL_PDFS: &[&str] = &[
    "pdf/project-history.en.pdf",
    "pdf/bash.pdf",
    "pdf/Statement.pdf",
    "pdf/acmebank1.pdf",
    "pdf/a-text.pdf",
    "pdf/d-text.pdf",
    "pdf/acmebank1-encrypted-empty-user-password.pdf",
];

/// pdftotext's pages (`-raw`; it ends each with a form feed), cleaned as
/// kg cleans its own.
fn pdftotext_pages_cleaned(path: &Path) -> Vec<String> {
    let text = pdftotext_raw(path);
    let mut pages: Vec<String> = text.split('\u{c}').map(str::to_string).collect();
    if pages.last().is_some_and(|p| p.trim().is_empty()) {
        pages.pop();
    }
    clean_pages(pages)
}

#[test]
fn kg_text_agrees_with_pdftotext_both_ways() {
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("runtime: {e}"));
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for rel in REAL_PDFS {
        let path = fixture(rel);
        let bytes = Arc::new(std::fs::read(&path).unwrap_or_else(|e| panic!("{rel}: {e}")));
        let reference_pages = pdftotext_pages_cleaned(&path);
        let reference = words(&reference_pages.join("\n"));
        assert!(
            reference.len() >= 10,
            "{rel}: pdftotext found only {} words",
            reference.len()
        );

        // What ingest emits.
        let (records, summary) = ingest_to_vec(vec![path.clone()], IngestConfig::default())
            .unwrap_or_else(|e| panic!("{rel}: ingest failed: {e}"));
        assert_eq!(summary.documents, 1, "{rel}: {:?}", summary.set_aside);
        let mut chunks = Vec::new();
        for r in &records {
            match r {
                Record::Document(d) => {
                    assert_eq!(d.pages, Some(pdfinfo_pages(&path)), "{rel}: page count");
                }
                Record::Chunk(c) => chunks.push(c.text.as_str()),
                _ => {}
            }
        }
        let ours = words(&chunks.join("\n"));
        let of_ours = agreement(&ours, &reference);
        let of_theirs = agreement(&reference, &ours);

        // For the record: each engine cleaned the same way, and kg's text
        // against pdftotext's default output.
        for engine in [PdfEngine::PdfOxide, PdfEngine::PdfExtract] {
            let pages = runtime.block_on(extract_pages_with(
                engine,
                Arc::clone(&bytes),
                Duration::from_secs(120),
            ));
            match pages {
                Ok(p) => {
                    let w = words(&p.join("\n"));
                    report.push(format!(
                        "{rel} {} (cleaned): {:.4} of its words in pdftotext's, {:.4} of pdftotext's in it",
                        engine.name(),
                        agreement(&w, &reference),
                        agreement(&reference, &w)
                    ));
                }
                Err(e) => report.push(format!("{rel} {}: failed: {e}", engine.name())),
            }
        }
        let mut default_pages: Vec<String> = pdftotext(&path)
            .split('\u{c}')
            .map(str::to_string)
            .collect();
        strip_furniture(&mut default_pages);
        let default_words = words(&default_pages.join("\n"));
        report.push(format!(
            "{rel} kg ingest vs pdftotext's default output (which joins every hyphenated line end), furniture removed: {:.4} / {:.4}",
            agreement(&ours, &default_words),
            agreement(&default_words, &ours)
        ));
        report.push(format!(
            "{rel} kg ingest vs pdftotext -raw cleaned alike: {of_ours:.4} / {of_theirs:.4}, {} distinct words",
            ours.len()
        ));
        if of_ours < 0.97 || of_theirs < 0.97 {
            let extra: Vec<_> = ours.difference(&reference).take(40).collect();
            let missing: Vec<_> = reference.difference(&ours).take(40).collect();
            failures.push(format!(
                "{rel}: {of_ours:.4} of kg's words are pdftotext's, kg has {of_theirs:.4} of pdftotext's (need 0.97 both ways); kg only: {extra:?}; pdftotext only: {missing:?}"
            ));
        }
    }
    println!("{}", report.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Page count as pdfinfo reports it.
fn pdfinfo_pages(path: &Path) -> u32 {
    let out = std::process::Command::new("pdfinfo")
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("pdfinfo (poppler-utils) is required: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Pages:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("pdfinfo gave no page count for {}", path.display()))
}
