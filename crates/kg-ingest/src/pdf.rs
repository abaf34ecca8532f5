//! PDF text, page by page, from two guarded engines.
//!
//! No Rust PDF reader handles every real file, so two are used (see
//! docs/ingest.md for the measurements behind the choice of primary):
//! `pdf_oxide` and `pdf-extract`. The primary reads the file; the fallback
//! takes over when the primary returns an error, panics, runs past the
//! per-file timeout, fails on a page, or returns implausibly little text
//! (fewer than [`PLAUSIBLE_CHARS_PER_PAGE`] letters and digits per page);
//! of two usable answers the one with more text wins.
//!
//! Each engine runs on tokio's blocking pool under `catch_unwind` and a
//! timeout. A panic is contained and reported; a timeout leaves the engine's
//! thread to finish on its own (a thread cannot be killed), but the run goes
//! on without it and the fallback gets its turn.
//!
//! Before any engine runs, cheap checks give the bad files a distinct reason:
//! - no `%%EOF` marker in the last [`EOF_WINDOW`] bytes: `truncated_pdf`;
//! - an `/Encrypt` entry in the trailer: the file is opened with lopdf and
//!   the empty user password (which many "protected" PDFs use: they forbid
//!   copying, not reading); if it opens, the engines read it with that
//!   password, otherwise it is `encrypted_pdf`. This is done here, not left
//!   to the engines, because on an encrypted file an engine may return a
//!   few garbage characters instead of an error;
//! - after extraction, a document with fewer letters or digits than pages is
//!   `no_text_layer` (a scan, or only images).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use crate::config::PdfEngine;
use crate::error::SetAsideReason;

/// How far from the end the `%%EOF` marker may be (writers append newlines
/// and, sometimes, a little junk).
pub const EOF_WINDOW: usize = 2048;

/// Below this many letters and digits per page, an engine's answer is
/// doubted and the fallback engine is asked too.
pub const PLAUSIBLE_CHARS_PER_PAGE: usize = 16;

/// The text of a PDF, one string per page.
#[derive(Debug, Clone)]
pub struct PdfText {
    /// Page texts, page 1 first, as the engine laid them out: running
    /// headers, footers and hyphenated line ends included (ingest removes
    /// and joins them with [`crate::furniture::clean_pages`]).
    pub pages: Vec<String>,
    /// The engine whose text was kept.
    pub engine: PdfEngine,
    /// True when the fallback engine's text was kept.
    pub used_fallback: bool,
    /// True when the file was encrypted and opened with the empty password.
    pub decrypted_with_empty_password: bool,
}

/// What reading a PDF came to.
#[derive(Debug)]
pub enum PdfOutcome {
    /// Text was extracted.
    Text(PdfText),
    /// The file is set aside, with a reason and a human-readable detail.
    SetAside(SetAsideReason, String),
}

/// Why an engine gave no answer.
#[derive(Debug, Clone)]
enum EngineFailure {
    Error(String),
    Panic(String),
    Timeout(Duration),
}

impl std::fmt::Display for EngineFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Error(e) => write!(f, "error: {e}"),
            Self::Panic(m) => write!(f, "panicked: {m}"),
            Self::Timeout(d) => write!(f, "timed out after {:.1} s", d.as_secs_f64()),
        }
    }
}

/// One engine's answer: page texts, how many pages failed, and how many
/// letters or digits the pages hold (counted once, when the answer is built).
#[derive(Debug)]
struct EngineText {
    pages: Vec<String>,
    failed_pages: usize,
    alnum_chars: usize,
}

impl EngineText {
    fn new(pages: Vec<String>, failed_pages: usize) -> Self {
        let alnum_chars = pages
            .iter()
            .map(|p| p.chars().filter(|c| c.is_alphanumeric()).count())
            .sum();
        Self {
            pages,
            failed_pages,
            alnum_chars,
        }
    }

    fn is_plausible(&self) -> bool {
        self.failed_pages == 0
            && self.alnum_chars >= PLAUSIBLE_CHARS_PER_PAGE * self.pages.len().max(1)
    }
}

/// True if the file ends with a `%%EOF` marker (give or take [`EOF_WINDOW`] bytes).
pub fn has_eof_marker(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(EOF_WINDOW)..];
    tail.windows(5).any(|w| w == b"%%EOF")
}

/// True if the bytes mention `/Encrypt` at all. Cheap and may over-report
/// (the word could sit in an uncompressed content stream); lopdf confirms.
fn mentions_encrypt(bytes: &[u8]) -> bool {
    bytes.windows(8).any(|w| w == b"/Encrypt")
}

/// What lopdf says about a file that mentions `/Encrypt`.
enum Encryption {
    /// Not encrypted after all.
    None,
    /// Encrypted; the empty user password opens it.
    EmptyUserPassword,
    /// Encrypted with a password we do not have.
    NeedsPassword(String),
    /// lopdf could not tell (it failed to parse the file).
    Unknown(String),
}

fn probe_encryption(bytes: &[u8]) -> Encryption {
    let options = lopdf::LoadOptions::with_password("");
    match lopdf::Document::load_mem_with_options(bytes, options) {
        Ok(doc) if doc.was_encrypted() || doc.is_encrypted() => Encryption::EmptyUserPassword,
        Ok(_) => Encryption::None,
        Err(
            e @ (lopdf::Error::InvalidPassword
            | lopdf::Error::Decryption(_)
            | lopdf::Error::UnsupportedSecurityHandler(_)),
        ) => Encryption::NeedsPassword(e.to_string()),
        Err(e) => Encryption::Unknown(e.to_string()),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Runs `work` on the blocking pool under `catch_unwind` and a timeout.
async fn guarded<T, F>(timeout: Duration, work: F) -> Result<T, EngineFailure>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, String> + Send + 'static,
{
    let task = tokio::task::spawn_blocking(move || catch_unwind(AssertUnwindSafe(work)));
    match tokio::time::timeout(timeout, task).await {
        Err(_) => Err(EngineFailure::Timeout(timeout)),
        Ok(Err(join)) => Err(EngineFailure::Panic(join.to_string())),
        Ok(Ok(Err(payload))) => Err(EngineFailure::Panic(panic_message(payload.as_ref()))),
        Ok(Ok(Ok(Err(e)))) => Err(EngineFailure::Error(e)),
        Ok(Ok(Ok(Ok(v)))) => Ok(v),
    }
}

fn run_pdf_oxide(bytes: &[u8], empty_password: bool) -> Result<EngineText, String> {
    let doc = pdf_oxide::PdfDocument::from_bytes(bytes.to_vec()).map_err(|e| e.to_string())?;
    if empty_password || doc.is_encrypted() {
        match doc.authenticate(b"") {
            Ok(true) => {}
            Ok(false) => return Err("the empty password does not open it".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
    let count = doc.page_count().map_err(|e| e.to_string())?;
    let mut pages = Vec::with_capacity(count);
    let mut failed_pages = 0;
    for index in 0..count {
        match doc.extract_chars(index) {
            Ok(chars) => pages.push(layout_chars(&chars)),
            Err(e) => {
                tracing::debug!(page = index + 1, error = %e, "pdf_oxide failed on a page");
                failed_pages += 1;
                pages.push(String::new());
            }
        }
    }
    Ok(EngineText::new(pages, failed_pages))
}

/// A gap wider than this share of the font size between two glyphs of a
/// line is a word space. Many producers (groff through Ghostscript, for
/// one) place words by position and emit no space character at all; 0.12
/// em sits between letter spacing (< 0.05 em) and the narrowest word space
/// (~0.17 em), like poppler's threshold.
const WORD_GAP_EM: f32 = 0.12;

/// Glyph origins further apart vertically than this share of the font size
/// start a new line.
const LINE_SHIFT_EM: f32 = 0.4;

/// Lays out one page's glyphs as text: glyphs in content-stream order
/// (which is reading order for the producers we met: TeX, groff,
/// LibreOffice), a new line when the baseline moves or the pen jumps back,
/// a space where the gap between glyphs is wider than [`WORD_GAP_EM`].
///
/// pdf_oxide's own `extract_text` glues words together on PDFs that
/// position words without space characters (bash.pdf: 76% agreement with
/// pdftotext); this layout gets 98% there and equals it elsewhere (see
/// docs/ingest.md).
pub(crate) fn layout_chars(chars: &[pdf_oxide::layout::TextChar]) -> String {
    let mut out = String::with_capacity(chars.len() + chars.len() / 8);
    // (baseline y, right edge x, font size) of the previous glyph.
    let mut prev: Option<(f32, f32, f32)> = None;
    for c in chars {
        if c.char.is_whitespace() {
            if !out.ends_with([' ', '\n']) && !out.is_empty() {
                out.push(' ');
            }
            continue;
        }
        if c.char.is_control() {
            continue;
        }
        let size = if c.font_size.is_finite() && c.font_size > 0.0 {
            c.font_size
        } else {
            10.0
        };
        if let Some((y, right, prev_size)) = prev {
            let em = size.max(prev_size);
            let new_line =
                (c.origin_y - y).abs() > LINE_SHIFT_EM * em || c.bbox.x < right - 2.0 * em;
            if new_line {
                while out.ends_with(' ') {
                    out.pop();
                }
                out.push('\n');
            } else if c.bbox.x - right > WORD_GAP_EM * em && !out.ends_with(' ') {
                out.push(' ');
            }
        }
        out.push(c.char);
        prev = Some((c.origin_y, c.bbox.x + c.bbox.width, size));
    }
    out
}

fn run_pdf_extract(bytes: &[u8], empty_password: bool) -> Result<EngineText, String> {
    let pages = if empty_password {
        pdf_extract::extract_text_from_mem_by_pages_encrypted(bytes, "")
    } else {
        pdf_extract::extract_text_from_mem_by_pages(bytes)
    }
    .map_err(|e| e.to_string())?;
    Ok(EngineText::new(pages, 0))
}

async fn run_engine(
    engine: PdfEngine,
    bytes: Arc<Vec<u8>>,
    empty_password: bool,
    timeout: Duration,
) -> Result<EngineText, EngineFailure> {
    guarded(timeout, move || match engine {
        PdfEngine::PdfOxide => run_pdf_oxide(&bytes, empty_password),
        PdfEngine::PdfExtract => run_pdf_extract(&bytes, empty_password),
    })
    .await
}

/// Runs one engine alone, guarded, with no fallback and no checks: the page
/// texts cleaned as ingest cleans them ([`crate::furniture::clean_pages`]:
/// page furniture removed, hyphenation joined), or why it failed. For
/// measuring engines (tests, benches, docs).
pub async fn extract_pages_with(
    engine: PdfEngine,
    bytes: Arc<Vec<u8>>,
    timeout: Duration,
) -> Result<Vec<String>, String> {
    run_engine(engine, bytes, false, timeout)
        .await
        .map(|t| crate::furniture::clean_pages(t.pages))
        .map_err(|f| format!("{}: {f}", engine.name()))
}

/// Reads a PDF's text page by page with the primary engine and, when
/// needed, the fallback. Never panics; every failure becomes a reason.
pub async fn read_pdf(
    bytes: Arc<Vec<u8>>,
    source: &str,
    primary: PdfEngine,
    timeout: Duration,
) -> PdfOutcome {
    if !has_eof_marker(&bytes) {
        return PdfOutcome::SetAside(
            SetAsideReason::TruncatedPdf,
            format!(
                "{source}: no %%EOF marker in its last {EOF_WINDOW} bytes ({} bytes in all): the file was cut short",
                bytes.len()
            ),
        );
    }

    let mut empty_password = false;
    let mut encryption_doubt = None;
    if mentions_encrypt(&bytes) {
        let probe_bytes = Arc::clone(&bytes);
        match guarded(timeout, move || Ok(probe_encryption(&probe_bytes))).await {
            Ok(Encryption::None) => {}
            Ok(Encryption::EmptyUserPassword) => empty_password = true,
            Ok(Encryption::NeedsPassword(e)) => {
                return PdfOutcome::SetAside(
                    SetAsideReason::EncryptedPdf,
                    format!(
                        "{source}: encrypted, and the empty user password does not open it ({e})"
                    ),
                );
            }
            Ok(Encryption::Unknown(e)) => encryption_doubt = Some(e),
            Err(failure) => encryption_doubt = Some(failure.to_string()),
        }
    }

    let fallback = primary.other();
    let first = run_engine(primary, Arc::clone(&bytes), empty_password, timeout).await;
    let mut failures = Vec::new();
    let mut candidates = Vec::new();
    match first {
        Ok(text) if text.is_plausible() => candidates.push((primary, text)),
        Ok(text) => {
            tracing::info!(
                source,
                engine = primary.name(),
                chars = text.alnum_chars,
                pages = text.pages.len(),
                failed_pages = text.failed_pages,
                "implausibly little text; asking the fallback engine too"
            );
            candidates.push((primary, text));
        }
        Err(failure) => {
            tracing::warn!(source, engine = primary.name(), %failure, "PDF engine failed; trying the fallback");
            failures.push(format!("{}: {failure}", primary.name()));
        }
    }
    let primary_good = candidates.first().is_some_and(|(_, t)| t.is_plausible());
    if !primary_good {
        match run_engine(fallback, Arc::clone(&bytes), empty_password, timeout).await {
            Ok(text) => candidates.push((fallback, text)),
            Err(failure) => {
                tracing::warn!(source, engine = fallback.name(), %failure, "fallback PDF engine failed");
                failures.push(format!("{}: {failure}", fallback.name()));
            }
        }
    }

    // Of the answers, keep the one with the most text (the primary on a tie).
    let best = candidates
        .into_iter()
        .enumerate()
        .max_by_key(|(i, (_, t))| (t.alnum_chars, std::cmp::Reverse(*i)))
        .map(|(_, c)| c);
    let Some((engine, text)) = best else {
        if let Some(doubt) = encryption_doubt {
            return PdfOutcome::SetAside(
                SetAsideReason::EncryptedPdf,
                format!(
                    "{source}: has an /Encrypt entry that could not be opened ({doubt}); engines: {}",
                    failures.join("; ")
                ),
            );
        }
        return PdfOutcome::SetAside(
            SetAsideReason::PdfUnreadable,
            format!(
                "{source}: no PDF engine could read it: {}",
                failures.join("; ")
            ),
        );
    };
    if text.alnum_chars < text.pages.len().max(1) {
        return PdfOutcome::SetAside(
            SetAsideReason::NoTextLayer,
            format!(
                "{source}: {} page(s) but only {} letters or digits of text: no text layer (a scan?); OCR it first",
                text.pages.len(),
                text.alnum_chars
            ),
        );
    }
    PdfOutcome::Text(PdfText {
        pages: text.pages,
        engine,
        used_fallback: engine != primary,
        decrypted_with_empty_password: empty_password,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn guard_contains_panics_errors_and_loops() {
        // Generous for the quick cases (the panic hook prints a backtrace,
        // slow on a loaded machine); short for the one that must time out.
        let timeout = Duration::from_secs(30);
        let panicked = guarded::<(), _>(timeout, || panic!("bad length of hexstring")).await;
        assert!(
            matches!(&panicked, Err(EngineFailure::Panic(m)) if m.contains("hexstring")),
            "{panicked:?}"
        );
        let failed = guarded::<(), _>(timeout, || Err("broken xref".into())).await;
        assert!(matches!(failed, Err(EngineFailure::Error(m)) if m == "broken xref"));
        let slow = guarded::<(), _>(Duration::from_millis(200), || {
            std::thread::sleep(Duration::from_secs(2));
            Ok(())
        })
        .await;
        assert!(matches!(slow, Err(EngineFailure::Timeout(_))));
        assert_eq!(guarded(timeout, || Ok(7)).await.ok(), Some(7));
    }

    #[test]
    fn eof_marker_is_looked_for_at_the_end_only() {
        let mut good = b"%PDF-1.4\n...\n%%EOF\n".to_vec();
        assert!(has_eof_marker(&good));
        good.extend(std::iter::repeat_n(b' ', EOF_WINDOW));
        assert!(!has_eof_marker(&good));
        assert!(!has_eof_marker(b""));
    }
}
