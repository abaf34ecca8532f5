//! Reading and writing JSON Lines of [`Record`]s.
//!
//! A line that is not a valid record is an error that names the file and the
//! line number; the reader goes on with the next line, so one bad line in a
//! hand-edited file costs that line only.

use std::io::{BufRead, Write};

use crate::record::Record;

/// A line of a JSON Lines file that is not a valid record.
#[derive(Debug, thiserror::Error)]
pub enum JsonlError {
    /// The line could not be read (I/O).
    #[error("{source_name}:{line}: cannot read: {error}")]
    Io {
        /// The file (or `-` for stdin).
        source_name: String,
        /// 1-based line number.
        line: u64,
        /// The I/O error.
        #[source]
        error: std::io::Error,
    },
    /// The line is not a record kg knows.
    #[error("{source_name}:{line}: not a kg record: {error}")]
    Parse {
        /// The file (or `-` for stdin).
        source_name: String,
        /// 1-based line number.
        line: u64,
        /// The JSON error.
        #[source]
        error: serde_json::Error,
    },
}

/// Iterates the records of a JSON Lines stream, skipping blank lines.
pub struct RecordReader<R> {
    inner: R,
    source_name: String,
    line: u64,
    buf: String,
}

impl<R: BufRead> RecordReader<R> {
    /// Reads records from `inner`; `source_name` appears in errors.
    pub fn new(inner: R, source_name: impl Into<String>) -> Self {
        Self {
            inner,
            source_name: source_name.into(),
            line: 0,
            buf: String::new(),
        }
    }
}

impl<R: BufRead> Iterator for RecordReader<R> {
    type Item = Result<Record, JsonlError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.buf.clear();
            self.line += 1;
            match self.inner.read_line(&mut self.buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(error) => {
                    return Some(Err(JsonlError::Io {
                        source_name: self.source_name.clone(),
                        line: self.line,
                        error,
                    }))
                }
            }
            let text = self.buf.trim();
            if text.is_empty() {
                continue;
            }
            return Some(
                serde_json::from_str(text).map_err(|error| JsonlError::Parse {
                    source_name: self.source_name.clone(),
                    line: self.line,
                    error,
                }),
            );
        }
    }
}

/// Writes one record as one line.
pub fn write_record<W: Write>(out: &mut W, record: &Record) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, record)?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;

    #[test]
    fn round_trips_and_reports_bad_lines() {
        let doc = DocumentId::from_content_sha256("abc");
        let chunk = Chunk {
            id: ChunkId::new(&doc, 0, "hello"),
            document_id: doc,
            index: 0,
            text: "hello".into(),
            tokens: 1,
            source: "a.txt".into(),
            page_start: Some(1),
            page_end: Some(1),
        };
        let mut out = Vec::new();
        write_record(&mut out, &Record::Chunk(chunk.clone())).unwrap();
        out.extend_from_slice(b"\n{\"kind\":\"chunk\"}\n");
        let line = String::from_utf8(out.clone()).unwrap();
        assert!(line.starts_with("{\"kind\":\"chunk\",\"id\":"), "{line}");
        let got: Vec<_> = RecordReader::new(&out[..], "in.jsonl").collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].as_ref().unwrap(), &Record::Chunk(chunk));
        let err = got[1].as_ref().unwrap_err().to_string();
        assert!(err.starts_with("in.jsonl:3: not a kg record"), "{err}");
    }

    #[test]
    fn hostile_labels_in_files_are_rejected() {
        let line = br#"{"kind":"node","id":"x","label":"A`}) DELETE n //","key":"k","source":"f","line":1}"#;
        let got: Vec<_> = RecordReader::new(&line[..], "f").collect();
        assert!(got[0].is_err());
    }
}
