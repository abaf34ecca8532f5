//! A directory of good and bad PDFs, text and Markdown: the good ones are
//! ingested fully, each bad one is set aside with its own reason, no panic
//! escapes, and a second run gives byte-identical output.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{agreement, fixture, pdftotext, words};
use kg_core::{jsonl, Record};
use kg_ingest::{
    ingest, ingest_to_vec, CancellationToken, IngestConfig, IngestError, IngestSummary, PdfEngine,
};

fn run(paths: Vec<PathBuf>, config: IngestConfig) -> (Vec<Record>, IngestSummary) {
    match ingest_to_vec(paths, config) {
        Ok(out) => out,
        Err(e) => panic!("ingest failed: {e}"),
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        std::fs::copy(entry.path(), to.join(entry.file_name()))?;
    }
    Ok(())
}

/// Good PDFs, bad PDFs, a Markdown file, a text file with invalid UTF-8,
/// binary data named .txt, and macOS junk, in one tree.
fn mixed_tree() -> std::io::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    let good = dir.path().join("good");
    let bad = dir.path().join("bad");
    std::fs::create_dir_all(&good)?;
    std::fs::create_dir_all(&bad)?;
    copy_dir(&fixture("pdf"), &good)?;
    copy_dir(&fixture("bad"), &bad)?;
    std::fs::write(
        good.join("notes.md"),
        "# Debian notes\n\nIan Murdock announced Debian on 16 August 1993.\n\nBruce Perens led the project from 1996.\n",
    )?;
    std::fs::write(
        good.join("latin1.txt"),
        b"Debian caf\xE9 in K\xF6ln, still readable.\n",
    )?;
    std::fs::write(bad.join("binary.txt"), b"\x00\x01\x02\x03 not text")?;
    std::fs::write(
        dir.path().join("._project-history.en.pdf"),
        b"\x00\x05\x16\x07 AppleDouble",
    )?;
    std::fs::write(dir.path().join(".DS_Store"), b"junk")?;
    Ok(dir)
}

/// A relative path and an absolute one to the same files give the same
/// sources: canonical absolute paths (the key by which a changed file's
/// earlier version is replaced, so `./a.pdf` in two folders must differ).
#[test]
fn sources_are_canonical_absolute_paths() -> std::io::Result<()> {
    let relative = PathBuf::from("tests/fixtures/pdf/../pdf");
    let absolute = std::fs::canonicalize(fixture("pdf"))?;
    let sources = |path: PathBuf| -> Vec<String> {
        let (records, _) = run(vec![path], IngestConfig::default());
        let mut s: Vec<String> = records
            .iter()
            .filter_map(|r| match r {
                Record::Document(d) => Some(d.source.clone()),
                _ => None,
            })
            .collect();
        s.sort();
        s
    };
    let from_relative = sources(relative);
    assert!(!from_relative.is_empty());
    assert_eq!(from_relative, sources(absolute.clone()));
    for s in &from_relative {
        assert!(Path::new(s).is_absolute(), "{s}");
        assert!(s.starts_with(&*absolute.to_string_lossy()), "{s}");
        assert!(!s.contains(".."), "{s}");
    }
    Ok(())
}

#[test]
fn good_files_are_read_fully_and_bad_ones_set_aside_with_their_reason() -> std::io::Result<()> {
    let dir = mixed_tree()?;
    let (records, summary) = run(vec![dir.path().to_path_buf()], IngestConfig::default());

    let reasons: BTreeMap<String, String> = records
        .iter()
        .filter_map(|r| match r {
            Record::SetAside(s) => Path::new(&s.item).file_name().map(|n| {
                (
                    n.to_string_lossy().into_owned(),
                    s.reason.code().to_string(),
                )
            }),
            _ => None,
        })
        .collect();
    let expected: BTreeMap<String, String> = [
        ("empty.pdf", "empty_file"),
        ("encrypted-a-text-pass-peanuts.pdf", "encrypted_pdf"),
        ("not-really-a.pdf", "not_a_pdf"),
        ("scanned-no-text-layer.pdf", "no_text_layer"),
        ("truncated-project-history.pdf", "truncated_pdf"),
        ("binary.txt", "binary_file"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(reasons, expected);
    assert_eq!(summary.set_aside_total(), 6);
    assert_eq!(summary.set_aside.len(), 6);
    let skipped: Vec<&str> = summary.skipped.iter().map(|s| s.reason.as_str()).collect();
    assert_eq!(skipped, vec!["hidden", "macos_resource_fork"]);

    // Every good file became a document; every document is followed by its
    // chunks, in order, with pages inside the document.
    let documents: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            Record::Document(d) => Some(d),
            _ => None,
        })
        .collect();
    assert_eq!(documents.len(), 7 + 2, "7 PDFs, 1 Markdown, 1 text");
    assert_eq!(summary.documents, 9);
    assert_eq!(summary.files_read, 9);
    assert_eq!(summary.files_seen, 9 + 6);
    assert_eq!(summary.invalid_utf8_sequences, 2);
    let mut current: Option<(&kg_core::Document, u32)> = None;
    let mut chunks_per_doc: BTreeMap<String, u32> = BTreeMap::new();
    for r in &records {
        match r {
            Record::Document(d) => current = Some((d, 0)),
            Record::Chunk(c) => {
                let Some((doc, next)) = current.as_mut() else {
                    panic!("chunk before any document");
                };
                assert_eq!(c.document_id, doc.id);
                assert_eq!(c.index, *next);
                *next += 1;
                assert!(!c.text.trim().is_empty());
                assert!(c.tokens > 0 && c.tokens <= 512, "{} tokens", c.tokens);
                if let Some(pages) = doc.pages {
                    let (Some(s), Some(e)) = (c.page_start, c.page_end) else {
                        panic!("PDF chunk without pages");
                    };
                    assert!(1 <= s && s <= e && e <= pages);
                }
                *chunks_per_doc.entry(doc.source.clone()).or_default() += 1;
            }
            _ => {}
        }
    }
    let history = documents
        .iter()
        .find(|d| d.source.ends_with("project-history.en.pdf"))
        .unwrap_or_else(|| panic!("project-history.en.pdf missing"));
    assert_eq!(history.pages, Some(27));
    assert_eq!(history.media_type, kg_core::MediaType::Pdf);
    let history_chunks = chunks_per_doc.get(&history.source).copied().unwrap_or(0);
    assert!(history_chunks >= 20, "only {history_chunks} chunks");
    let md = documents
        .iter()
        .find(|d| d.source.ends_with("notes.md"))
        .unwrap_or_else(|| panic!("notes.md missing"));
    assert_eq!(md.title.as_deref(), Some("Debian notes"));
    assert_eq!(
        summary.pages,
        documents
            .iter()
            .map(|d| u64::from(d.pages.unwrap_or(0)))
            .sum::<u64>()
    );
    assert_eq!(
        summary.chunks,
        chunks_per_doc.values().map(|&n| u64::from(n)).sum::<u64>()
    );

    // The empty-password encrypted PDF is read, not set aside.
    assert!(documents.iter().any(|d| d
        .source
        .ends_with("acmebank1-encrypted-empty-user-password.pdf")));
    Ok(())
}

fn jsonl_bytes(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        if let Err(e) = jsonl::write_record(&mut out, r) {
            panic!("cannot serialise: {e}");
        }
    }
    out
}

#[test]
fn re_running_yields_byte_identical_output() -> std::io::Result<()> {
    let dir = mixed_tree()?;
    let config = IngestConfig {
        chunk_tokens: 200,
        chunk_overlap: 20,
        ..IngestConfig::default()
    };
    let (first, _) = run(vec![dir.path().to_path_buf()], config.clone());
    let (second, _) = run(vec![dir.path().to_path_buf()], config.clone());
    assert!(first.len() > 100, "{} records", first.len());
    assert_eq!(jsonl_bytes(&first), jsonl_bytes(&second));
    // Ids depend on content only: the same file under another name and
    // path yields the same document and chunk ids.
    let copy = tempfile::tempdir()?;
    let renamed = copy.path().join("renamed-history.pdf");
    std::fs::copy(fixture("pdf/project-history.en.pdf"), &renamed)?;
    let (alone, _) = run(vec![renamed], config);
    let ids = |records: &[Record], name: &str| -> Vec<String> {
        let mut in_doc = false;
        let mut out = Vec::new();
        for r in records {
            match r {
                Record::Document(d) => {
                    in_doc = d.source.ends_with(name);
                    if in_doc {
                        out.push(d.id.to_string());
                    }
                }
                Record::Chunk(c) if in_doc => out.push(c.id.to_string()),
                _ => {}
            }
        }
        out
    };
    let original = ids(&first, "project-history.en.pdf");
    assert!(original.len() > 20);
    assert_eq!(original, ids(&alone, "renamed-history.pdf"));
    Ok(())
}

#[test]
fn a_pdf_the_primary_engine_panics_on_is_read_by_the_fallback() {
    // pdf-extract panics in adobe-cmap-parser on this file's ToUnicode CMap
    // (an odd-length hex string); made from a-text.pdf, see fixtures/README.md.
    let path = fixture("pdf-extract-panics/a-text-odd-cmap-hexstring.pdf");
    let config = IngestConfig {
        pdf_primary: PdfEngine::PdfExtract,
        ..IngestConfig::default()
    };
    let (records, summary) = run(vec![path.clone()], config);
    assert_eq!(summary.documents, 1, "{:?}", summary.set_aside);
    assert_eq!(summary.pdf_fallbacks, 1);
    assert_eq!(summary.set_aside_total(), 0);
    let text: String = records
        .iter()
        .filter_map(|r| match r {
            Record::Chunk(c) => Some(c.text.clone()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let ours = words(&text);
    let reference = words(&pdftotext(&path));
    assert!(agreement(&ours, &reference) >= 0.97 && agreement(&reference, &ours) >= 0.97);
}

#[test]
fn config_and_paths_are_checked_before_any_work() {
    let bad_overlap = IngestConfig {
        chunk_tokens: 100,
        chunk_overlap: 100,
        ..IngestConfig::default()
    };
    assert!(matches!(
        ingest_to_vec(vec![fixture("pdf")], bad_overlap),
        Err(IngestError::InvalidConfig(_))
    ));
    assert!(matches!(
        ingest_to_vec(vec![fixture("no-such-dir")], IngestConfig::default()),
        Err(IngestError::InputPath { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_output_stops_the_run_with_an_error() {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    drop(rx);
    let result = ingest(
        vec![fixture("pdf")],
        IngestConfig::default(),
        tx,
        CancellationToken::new(),
    )
    .await;
    assert!(
        matches!(result, Err(IngestError::OutputClosed { .. })),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_gets_every_record_through_a_tiny_channel() {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let run = tokio::spawn(ingest(
        vec![fixture("pdf")],
        IngestConfig::default(),
        tx,
        CancellationToken::new(),
    ));
    let mut received = 0u64;
    while let Some(_record) = rx.recv().await {
        received += 1;
        if received.is_multiple_of(50) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    let summary = match run.await {
        Ok(Ok(s)) => s,
        other => panic!("ingest failed: {other:?}"),
    };
    assert_eq!(
        received,
        summary.documents + summary.chunks + summary.set_aside_total()
    );
    assert_eq!(summary.documents, 7);
    assert!(!summary.interrupted && summary.unfinished.is_empty());
}
