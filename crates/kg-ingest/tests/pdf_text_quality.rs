//! kg's PDF text agrees with pdftotext's on at least 97% of distinct words,
//! both ways, on real PDFs (Debian documentation and sample files).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{agreement, fixture, pdftotext, words};
use kg_ingest::pdf::{extract_pages_with, read_pdf, PdfOutcome};
use kg_ingest::PdfEngine;

const REAL_PDFS: &[&str] = &[
    "pdf/project-history.en.pdf",
    "pdf/bash.pdf",
    "pdf/Statement.pdf",
    "pdf/acmebank1.pdf",
    "pdf/a-text.pdf",
    "pdf/d-text.pdf",
    "pdf/acmebank1-encrypted-empty-user-password.pdf",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kg_text_agrees_with_pdftotext_both_ways() {
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for rel in REAL_PDFS {
        let path = fixture(rel);
        let bytes = Arc::new(std::fs::read(&path).unwrap_or_else(|e| panic!("{rel}: {e}")));
        let reference = words(&pdftotext(&path));
        assert!(
            reference.len() >= 10,
            "{rel}: pdftotext found only {} words",
            reference.len()
        );
        let outcome = read_pdf(
            Arc::clone(&bytes),
            rel,
            PdfEngine::PdfOxide,
            Duration::from_secs(120),
        )
        .await;
        let PdfOutcome::Text(text) = outcome else {
            panic!("{rel} was set aside: {outcome:?}");
        };
        let ours = words(&text.pages.join("\n"));
        let of_ours = agreement(&ours, &reference);
        let of_theirs = agreement(&reference, &ours);
        let pages = pdftotext_pages(&path);
        assert_eq!(text.pages.len(), pages, "{rel}: page count");
        for engine in [PdfEngine::PdfOxide, PdfEngine::PdfExtract] {
            match extract_pages_with(engine, Arc::clone(&bytes), Duration::from_secs(120)).await {
                Ok(p) => {
                    let w = words(&p.join("\n"));
                    report.push(format!(
                        "{rel} {}: {:.4} of its words in pdftotext, {:.4} of pdftotext's in it",
                        engine.name(),
                        agreement(&w, &reference),
                        agreement(&reference, &w)
                    ));
                }
                Err(e) => report.push(format!("{rel} {}: failed: {e}", engine.name())),
            }
        }
        report.push(format!(
            "{rel} kg ({}): {of_ours:.4} / {of_theirs:.4}, {} distinct words",
            text.engine.name(),
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
fn pdftotext_pages(path: &std::path::Path) -> usize {
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
