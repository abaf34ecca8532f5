//! Choosing a reader for a file, and decoding text.
//!
//! Content wins over the name: a file that starts with `%PDF-` is read as a
//! PDF whatever it is called, and a file called `.pdf` that does not is set
//! aside as `not_a_pdf` rather than read as text. Other formats have no magic
//! bytes worth trusting, so the extension decides, with a NUL-byte check so
//! that binary data named `.txt` is reported instead of chunked.

use std::path::Path;

/// The reader a file goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    /// Starts with the PDF header.
    Pdf,
    /// Named `.pdf` without the PDF header.
    FakePdf,
    /// Plain text.
    Text,
    /// Markdown.
    Markdown,
    /// CSV (or TSV) to map to the graph.
    Csv,
    /// Anything else.
    Unsupported,
}

/// Where the PDF header may start: the spec allows junk before it, and
/// readers accept it within the first kilobyte.
const PDF_HEADER_WINDOW: usize = 1024;

/// True if `%PDF-` occurs in the first kilobyte.
pub(crate) fn has_pdf_header(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(PDF_HEADER_WINDOW)];
    head.windows(5).any(|w| w == b"%PDF-")
}

fn extension(path: &Path) -> String {
    path.extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default()
}

/// Picks a reader from the first bytes of a file and its name.
pub(crate) fn detect(path: &Path, head: &[u8]) -> FileKind {
    if has_pdf_header(head) {
        return FileKind::Pdf;
    }
    match extension(path).as_str() {
        "pdf" => FileKind::FakePdf,
        "txt" | "text" | "rst" | "log" | "adoc" | "org" => FileKind::Text,
        "md" | "markdown" | "mdown" | "mkd" => FileKind::Markdown,
        "csv" | "tsv" => FileKind::Csv,
        _ => FileKind::Unsupported,
    }
}

/// True if the bytes look binary (a NUL byte in the first 8 KiB).
pub(crate) fn looks_binary(bytes: &[u8]) -> bool {
    bytes[..bytes.len().min(8192)].contains(&0)
}

/// Text decoded from UTF-8 bytes, with the number of invalid sequences that
/// were replaced by U+FFFD.
pub(crate) struct DecodedText {
    pub text: String,
    pub invalid_sequences: u64,
}

/// Decodes UTF-8, skipping a BOM and replacing invalid bytes (counted).
pub(crate) fn decode_utf8(bytes: &[u8]) -> DecodedText {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut text = String::with_capacity(bytes.len());
    let mut invalid_sequences = 0;
    for chunk in bytes.utf8_chunks() {
        text.push_str(chunk.valid());
        if !chunk.invalid().is_empty() {
            text.push(char::REPLACEMENT_CHARACTER);
            invalid_sequences += 1;
        }
    }
    DecodedText {
        text,
        invalid_sequences,
    }
}

/// Decodes ISO-8859-1: each byte is the code point of the same value.
pub(crate) fn decode_latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// The first ATX heading (`# Title`) of a Markdown text, if any.
pub(crate) fn markdown_title(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim_start)
        .find_map(|l| l.strip_prefix("# "))
        .map(|t| t.trim().trim_end_matches('#').trim().to_string())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_beats_extension() {
        assert_eq!(detect(Path::new("x.txt"), b"%PDF-1.7\n"), FileKind::Pdf);
        assert_eq!(
            detect(Path::new("x.PDF"), b"date,amount"),
            FileKind::FakePdf
        );
        assert_eq!(detect(Path::new("x.Md"), b"# Hi"), FileKind::Markdown);
        assert_eq!(detect(Path::new("x.csv"), b"a,b"), FileKind::Csv);
        assert_eq!(
            detect(Path::new("x.png"), b"\x89PNG"),
            FileKind::Unsupported
        );
    }

    #[test]
    fn invalid_utf8_is_replaced_and_counted() {
        let d = decode_utf8(b"\xEF\xBB\xBFcaf\xE9 ok \xFF\xFE end");
        assert_eq!(d.text, "caf\u{FFFD} ok \u{FFFD}\u{FFFD} end");
        assert_eq!(d.invalid_sequences, 3);
        let clean = decode_utf8("naïve".as_bytes());
        assert_eq!(clean.text, "naïve");
        assert_eq!(clean.invalid_sequences, 0);
    }

    #[test]
    fn latin1_maps_bytes_to_code_points() {
        assert_eq!(decode_latin1(b"Sa\xEFd, K\xF6ln"), "Saïd, Köln");
    }

    #[test]
    fn markdown_title_is_first_h1() {
        assert_eq!(
            markdown_title("intro\n## sub\n# The Title #\n# Other"),
            Some("The Title".into())
        );
        assert_eq!(markdown_title("no heading"), None);
    }
}
