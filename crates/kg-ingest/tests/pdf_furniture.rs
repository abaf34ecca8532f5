//! Page furniture (running headers, footers, page numbers) never reaches
//! the chunks, words hyphenated across lines are joined when the document
//! knows them, and chunks keep the right page numbers: on the bundled real
//! PDFs and on a PDF generated here with a known header and footer.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{fixture, pdftotext};
use kg_core::{Chunk, Document, Record};
use kg_ingest::pdf::{extract_pages_with, read_pdf, PdfOutcome};
use kg_ingest::{ingest_to_vec, IngestConfig, PdfEngine};

fn ingest_one(path: &Path, config: IngestConfig) -> (Document, Vec<Chunk>) {
    let (records, summary) = ingest_to_vec(vec![path.to_path_buf()], config)
        .unwrap_or_else(|e| panic!("{}: ingest failed: {e}", path.display()));
    assert_eq!(summary.set_aside_total(), 0, "{:?}", summary.set_aside);
    let mut document = None;
    let mut chunks = Vec::new();
    for r in records {
        match r {
            Record::Document(d) => document = Some(d),
            Record::Chunk(c) => chunks.push(c),
            _ => {}
        }
    }
    let document = document.unwrap_or_else(|| panic!("{}: no document", path.display()));
    (document, chunks)
}

/// Byte offsets just after each occurrence of `needle` in `haystack`.
fn after_each<'h>(haystack: &'h str, needle: &str) -> Vec<&'h str> {
    haystack
        .match_indices(needle)
        .map(|(i, _)| &haystack[i + needle.len()..])
        .collect()
}

/// True when `rest` starts (after whitespace) with a page number of the
/// form `N / M`.
fn starts_with_n_of_m(rest: &str) -> bool {
    let rest = rest.trim_start();
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    digits > 0 && {
        let after = rest[digits..].trim_start();
        after.starts_with('/')
            && after[1..]
                .trim_start()
                .starts_with(|c: char| c.is_ascii_digit())
    }
}

#[test]
fn project_history_loses_its_running_header_and_page_numbers() {
    let path = fixture("pdf/project-history.en.pdf");
    // The furniture is really there: pdftotext shows it on every page.
    let reference = pdftotext(&path);
    let header = "A Brief History of Debian";
    assert!(
        reference.matches(header).count() >= 27,
        "the fixture should carry its running header"
    );
    assert!(reference.contains("2 / 21"));

    let (document, chunks) = ingest_one(&path, IngestConfig::default());
    assert_eq!(document.pages, Some(27));
    let mut remaining = 0;
    for c in &chunks {
        for rest in after_each(&c.text, header) {
            remaining += 1;
            assert!(
                !starts_with_n_of_m(rest),
                "chunk {} keeps the header with its page number: {:?}",
                c.index,
                &rest[..rest.len().min(40)]
            );
        }
    }
    // What is left is the title in the document's own collaborators table
    // (page 3), not a header: once per chunk holding it.
    assert!(
        remaining <= 2,
        "{remaining} occurrences of the header remain"
    );
    assert!(chunks
        .iter()
        .any(|c| c.text.contains("TITLE :\nA Brief History of Debian")));
    // The sentence that ended page 1 is followed by the next page's body,
    // not by the header: "... his wife, Debra. Chapter 2 Leadership".
    let joined = chunks
        .iter()
        .find(|c| c.text.contains("his wife, Debra."))
        .unwrap_or_else(|| panic!("the end of chapter 1 is missing"));
    if let Some(rest) = after_each(&joined.text, "his wife, Debra.").first() {
        assert!(
            rest.trim().is_empty() || rest.trim_start().starts_with("Chapter 2"),
            "{:?}",
            &rest[..rest.len().min(60)]
        );
    }
    assert!(chunks
        .iter()
        .any(|c| c.text.contains("Chapter 2\nLeadership")));
}

#[test]
fn bash_manual_loses_its_running_header_and_footer() {
    let path = fixture("pdf/bash.pdf");
    let reference = pdftotext(&path);
    for furniture in ["General Commands Manual", "GNU Bash 5.2"] {
        assert_eq!(reference.matches(furniture).count(), 87, "{furniture}");
    }
    let (document, chunks) = ingest_one(&path, IngestConfig::default());
    assert_eq!(document.pages, Some(87));
    assert!(chunks.len() > 100);
    for c in &chunks {
        for furniture in [
            "BASH(1) General Commands Manual BASH(1)",
            "General Commands Manual",
            "GNU Bash 5.2",
            "2022 September 19",
        ] {
            assert!(
                !c.text.contains(furniture),
                "chunk {} (pages {:?}-{:?}) holds {furniture:?}",
                c.index,
                c.page_start,
                c.page_end
            );
        }
    }
    // Body text is still there, hyphenated words the manual uses elsewhere
    // joined ("regular ex-" / "pressions" at the foot of page 6).
    let all: String = chunks
        .iter()
        .map(|c| c.text.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(all.contains("When an interactive shell that is not a login shell is started"));
    assert!(all.contains("regular expressions"));
}

/// One page of the generated report: header, body lines, footer.
struct Page {
    header: String,
    body: Vec<String>,
    footer: String,
}

/// A minimal PDF (PDF 1.4, one Helvetica font with WinAnsiEncoding, one
/// content stream per page): objects, a cross-reference table, a trailer.
fn write_pdf(pages: &[Page]) -> Vec<u8> {
    fn literal(text: &str) -> Vec<u8> {
        let mut out = vec![b'('];
        for c in text.chars() {
            match c {
                '(' | ')' | '\\' => out.extend([b'\\', c as u8]),
                '—' => out.push(0x97),
                c if c.is_ascii() => out.push(c as u8),
                c => panic!("{c:?} is not in this writer's WinAnsi subset"),
            }
        }
        out.push(b')');
        out
    }
    fn line(out: &mut Vec<u8>, y: u32, text: &str) {
        out.extend(format!("BT /F1 11 Tf 72 {y} Td ").as_bytes());
        out.extend(literal(text));
        out.extend(b" Tj ET\n");
    }
    let count = pages.len();
    let mut objects: Vec<Vec<u8>> = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        format!(
            "<< /Type /Pages /Kids [{}] /Count {count} >>",
            (0..count)
                .map(|i| format!("{} 0 R", 4 + 2 * i))
                .collect::<Vec<_>>()
                .join(" ")
        )
        .into_bytes(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
            .to_vec(),
    ];
    for (i, page) in pages.iter().enumerate() {
        let mut content = Vec::new();
        line(&mut content, 800, &page.header);
        for (n, text) in page.body.iter().enumerate() {
            line(&mut content, 740 - 16 * n as u32, text);
        }
        line(&mut content, 40, &page.footer);
        objects.push(
            format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 3 0 R >> >> /Contents {} 0 R >>",
                5 + 2 * i
            )
            .into_bytes(),
        );
        let mut stream = format!("<< /Length {} >>\nstream\n", content.len()).into_bytes();
        stream.extend(content);
        stream.extend(b"\nendstream");
        objects.push(stream);
    }
    let mut pdf = b"%PDF-1.4\n%\xE2\xE3\xCF\xD3\n".to_vec();
    let mut offsets = Vec::new();
    for (i, object) in objects.iter().enumerate() {
        offsets.push(pdf.len());
        pdf.extend(format!("{} 0 obj\n", i + 1).as_bytes());
        pdf.extend(object);
        pdf.extend(b"\nendobj\n");
    }
    let xref = pdf.len();
    pdf.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
    for offset in offsets {
        pdf.extend(format!("{offset:010} 00000 n \n").as_bytes());
    }
    pdf.extend(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    pdf
}

/// The animal each page's body is about: every body line names it, so the
/// pages a chunk's text comes from can be read off the text.
const ANIMALS: [&str; 8] = [
    "aardvark", "badger", "cheetah", "dolphin", "elephant", "flamingo", "giraffe", "hedgehog",
];

/// Eight pages under the header "ACME Annual Report 2024" and the footer
/// "Confidential — page N of 8", with three hyphenated line ends:
/// "inter-" / "national" (page 3; "international" is on page 6),
/// "docu-" / "mentation" across pages 4 and 5 ("documentation" is on page
/// 7), and "well-" / "kept" (page 5; "wellkept" is nowhere).
fn report() -> Vec<Page> {
    ANIMALS
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let n = i + 1;
            let mut body = vec![
                format!("The {a} chapter opens with notes on habitat and diet."),
                format!("Observers describe the {a} as curious, patient and quick."),
                format!("Field teams counted each {a} twice along the river."),
                format!("Later surveys of the {a} confirmed these early counts."),
                format!("A final remark on the {a} closes this part of the report."),
            ];
            match n {
                3 => {
                    body[2] = format!("Field teams from the {a} inter-");
                    body.insert(3, format!("national committee counted each {a} twice."));
                }
                4 => body.push(format!("The {a} notes end with docu-")),
                5 => {
                    body.insert(0, format!("mentation of {a} sightings."));
                    body.push(format!("The {a} census was a well-"));
                    body.push(format!("kept secret among {a} keepers."));
                }
                6 => body.push(format!("The {a} study was an international effort.")),
                7 => body.push(format!("The {a} documentation is complete.")),
                _ => {}
            }
            Page {
                header: "ACME Annual Report 2024".to_string(),
                body,
                footer: format!("Confidential — page {n} of 8"),
            }
        })
        .collect()
}

/// The 1-based pages whose animal the text names.
fn pages_named(text: &str) -> Vec<u32> {
    ANIMALS
        .iter()
        .zip(1u32..)
        .filter(|(a, _)| text.contains(*a))
        .map(|(_, n)| n)
        .collect()
}

#[test]
fn a_generated_report_loses_its_header_and_footer_and_keeps_its_pages() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("report.pdf");
    std::fs::write(&path, write_pdf(&report())).unwrap_or_else(|e| panic!("{e}"));

    // pdftotext and both engines read the file, furniture and all.
    let reference = pdftotext(&path);
    assert_eq!(reference.matches("ACME Annual Report 2024").count(), 8);
    assert!(
        reference.contains("Confidential — page 8 of 8"),
        "{reference}"
    );
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    let bytes = Arc::new(std::fs::read(&path).unwrap_or_else(|e| panic!("{e}")));
    let timeout = Duration::from_secs(60);
    let raw = runtime.block_on(read_pdf(
        Arc::clone(&bytes),
        "report.pdf",
        PdfEngine::PdfOxide,
        timeout,
    ));
    let PdfOutcome::Text(raw) = raw else {
        panic!("report.pdf set aside: {raw:?}");
    };
    assert_eq!(raw.pages.len(), 8);
    for (i, page) in raw.pages.iter().enumerate() {
        assert!(
            page.contains("ACME Annual Report 2024"),
            "page {}: {page}",
            i + 1
        );
        assert!(page.contains(&format!("page {} of 8", i + 1)), "{page}");
    }
    for engine in [PdfEngine::PdfOxide, PdfEngine::PdfExtract] {
        let pages = runtime
            .block_on(extract_pages_with(engine, Arc::clone(&bytes), timeout))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pages.len(), 8, "{}", engine.name());
        let text = pages.join("\n");
        assert!(
            !text.contains("ACME") && !text.contains("Confidential"),
            "{}: {text}",
            engine.name()
        );
        assert!(
            text.contains("Observers describe the hedgehog as curious, patient and quick."),
            "{}: {text}",
            engine.name()
        );
        assert!(
            text.contains("international committee"),
            "{}: {text}",
            engine.name()
        );
    }

    // One chunk holding everything: the text is the body, cleaned.
    let whole = IngestConfig {
        chunk_tokens: 4000,
        chunk_overlap: 0,
        ..IngestConfig::default()
    };
    let (document, chunks) = ingest_one(&path, whole);
    assert_eq!(document.pages, Some(8));
    assert_eq!(chunks.len(), 1);
    let text = &chunks[0].text;
    assert_eq!(
        (chunks[0].page_start, chunks[0].page_end),
        (Some(1), Some(8))
    );
    for furniture in ["ACME", "Annual Report", "Confidential", "of 8", "2024"] {
        assert!(!text.contains(furniture), "{furniture:?} left in {text}");
    }
    for a in ANIMALS {
        assert!(text.contains(&format!(
            "Observers describe the {a} as curious, patient and quick."
        )));
    }
    assert!(text.starts_with("The aardvark chapter opens"), "{text}");
    assert!(text.ends_with("closes this part of the report."), "{text}");
    // Joined: the document knows "international" and "documentation".
    assert!(text.contains("Field teams from the cheetah international committee counted"));
    assert!(
        text.contains("The dolphin notes end with documentation\n\nof elephant sightings."),
        "{text}"
    );
    assert!(!text.contains("inter-") && !text.contains("docu-"));
    // Kept: "wellkept" is no word of the document.
    assert!(
        text.contains("The elephant census was a well-\nkept secret"),
        "{text}"
    );

    // Small chunks: each chunk's pages are exactly the pages its text is from.
    let small = IngestConfig {
        chunk_tokens: 40,
        chunk_overlap: 0,
        ..IngestConfig::default()
    };
    let (_, chunks) = ingest_one(&path, small);
    assert!(chunks.len() >= 8, "{} chunks", chunks.len());
    let mut covered = std::collections::BTreeSet::new();
    for c in &chunks {
        let named = pages_named(&c.text);
        let (Some(&first), Some(&last)) = (named.first(), named.last()) else {
            panic!("chunk {} names no page's animal: {:?}", c.index, c.text);
        };
        assert_eq!(
            (c.page_start, c.page_end),
            (Some(first), Some(last)),
            "chunk {}: {:?}",
            c.index,
            c.text
        );
        covered.extend(first..=last);
    }
    assert_eq!(covered.len(), 8);
}
