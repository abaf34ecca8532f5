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

/// What Windows-1252 puts at bytes 0x80..=0x9F; the five bytes it leaves
/// undefined keep their ISO-8859-1 (C1 control) meaning, as the WHATWG
/// encoding standard does. Every other byte is its ISO-8859-1 code point.
const WINDOWS_1252_HIGH: [char; 32] = [
    '\u{20AC}', '\u{81}', '\u{201A}', '\u{192}', '\u{201E}', '\u{2026}', '\u{2020}', '\u{2021}',
    '\u{2C6}', '\u{2030}', '\u{160}', '\u{2039}', '\u{152}', '\u{8D}', '\u{17D}', '\u{8F}',
    '\u{90}', '\u{2018}', '\u{2019}', '\u{201C}', '\u{201D}', '\u{2022}', '\u{2013}', '\u{2014}',
    '\u{2DC}', '\u{2122}', '\u{161}', '\u{203A}', '\u{153}', '\u{9D}', '\u{17E}', '\u{178}',
];

/// Decodes Windows-1252, the superset of ISO-8859-1 that spreadsheet
/// exports called "Latin-1" or "ANSI" actually use (`€`, curly quotes).
pub(crate) fn decode_windows_1252(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            0x80..=0x9F => WINDOWS_1252_HIGH
                .get(usize::from(b - 0x80))
                .copied()
                .unwrap_or(char::REPLACEMENT_CHARACTER),
            _ => char::from(b),
        })
        .collect()
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
    fn windows_1252_decodes_latin1_and_the_extra_signs() {
        assert_eq!(decode_windows_1252(b"M\xFCnchen"), "München");
        assert_eq!(
            decode_windows_1252(b"\x80 5, \x93quoted\x94 \x96 \x81"),
            "€ 5, \u{201C}quoted\u{201D} \u{2013} \u{81}"
        );
        assert_eq!(decode_windows_1252(b"plain"), "plain");
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
