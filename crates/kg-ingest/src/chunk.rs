//! Token-aware chunking with overlap, keeping page numbers.
//!
//! The splitter is `text-splitter` measuring size in cl100k tokens (the
//! tokenizer of OpenAI's embedding and chat models). It splits at the
//! coarsest boundary that fits (blank-line paragraphs, then lines, then
//! sentences, then words) so a chunk is rarely cut mid-sentence, and trims
//! whitespace so a chunk is never empty.
//!
//! Pages of a PDF are joined with a blank line (a paragraph boundary, so the
//! splitter prefers to cut there) and the byte offset where each page starts
//! is kept. A chunk's first and last bytes are then looked up in those
//! offsets to give its `page_start` and `page_end`.
//!
//! Chunk ids are [`ChunkId::new`] of the document id, the index and the text:
//! the same bytes in always give the same ids out.

use kg_core::{Chunk, ChunkId, DocumentId};
use text_splitter::{ChunkConfig, TextSplitter};
use tiktoken_rs::CoreBPE;

use crate::error::IngestError;

/// A document's text, with where each page starts when it has pages.
#[derive(Debug, Clone, Default)]
pub struct PagedText {
    /// The whole text; pages are separated by a blank line.
    pub text: String,
    /// Byte offset in `text` where each page starts (empty when unpaged).
    pub page_starts: Vec<usize>,
}

impl PagedText {
    /// Joins pages (in order, page 1 first).
    pub fn from_pages<S: AsRef<str>>(pages: &[S]) -> Self {
        let mut text = String::new();
        let mut page_starts = Vec::with_capacity(pages.len());
        for page in pages {
            if !text.is_empty() {
                text.push_str("\n\n");
            }
            page_starts.push(text.len());
            text.push_str(page.as_ref());
        }
        Self { text, page_starts }
    }

    /// Text without pages.
    pub fn unpaged(text: String) -> Self {
        Self {
            text,
            page_starts: Vec::new(),
        }
    }

    /// The 1-based page holding byte `offset`, or `None` when unpaged.
    fn page_at(&self, offset: usize) -> Option<u32> {
        if self.page_starts.is_empty() {
            return None;
        }
        let idx = self.page_starts.partition_point(|&s| s <= offset);
        u32::try_from(idx.max(1)).ok()
    }
}

/// Splits documents into chunks. Cheap to share: build once per run.
pub struct Chunker {
    splitter: TextSplitter<&'static CoreBPE>,
    tokenizer: &'static CoreBPE,
}

impl std::fmt::Debug for Chunker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunker").finish_non_exhaustive()
    }
}

impl Chunker {
    /// A chunker for chunks of at most `max_tokens` cl100k tokens, consecutive
    /// chunks sharing up to `overlap` tokens.
    pub fn new(max_tokens: usize, overlap: usize) -> Result<Self, IngestError> {
        let tokenizer = tiktoken_rs::cl100k_base_singleton();
        let config = ChunkConfig::new(max_tokens)
            .with_overlap(overlap)
            .map_err(|e| IngestError::InvalidConfig(e.to_string()))?
            .with_sizer(tokenizer);
        Ok(Self {
            splitter: TextSplitter::new(config),
            tokenizer,
        })
    }

    /// Number of cl100k tokens in `text`.
    pub fn count_tokens(&self, text: &str) -> usize {
        self.tokenizer.encode_ordinary(text).len()
    }

    /// The chunks of one document, in order, indexed from 0.
    pub fn chunk(&self, document_id: &DocumentId, source: &str, text: &PagedText) -> Vec<Chunk> {
        let mut chunks = Vec::new();
        for (offset, piece) in self.splitter.chunk_indices(&text.text) {
            if piece.trim().is_empty() {
                continue;
            }
            let Ok(index) = u32::try_from(chunks.len()) else {
                break;
            };
            let last_byte = offset + piece.len().saturating_sub(1);
            chunks.push(Chunk {
                id: ChunkId::new(document_id, index, piece),
                document_id: document_id.clone(),
                index,
                text: piece.to_string(),
                tokens: u32::try_from(self.count_tokens(piece)).unwrap_or(u32::MAX),
                source: source.to_string(),
                page_start: text.page_at(offset),
                page_end: text.page_at(last_byte),
            });
        }
        chunks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> DocumentId {
        DocumentId::from_content_sha256(&kg_core::sha256_hex(b"test"))
    }

    #[test]
    fn chunks_respect_size_overlap_and_pages() -> Result<(), IngestError> {
        let chunker = Chunker::new(64, 16)?;
        let pages: Vec<String> = (1..=6)
            .map(|p| {
                (0..12)
                    .map(|s| format!("Page {p} sentence {s} tells of Debian releases."))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        let text = PagedText::from_pages(&pages);
        let chunks = chunker.chunk(&doc(), "x.pdf", &text);
        assert!(chunks.len() > 6, "only {} chunks", chunks.len());
        for (i, c) in chunks.iter().enumerate() {
            assert_eq!(c.index as usize, i);
            assert!(!c.text.trim().is_empty());
            assert!(c.tokens <= 64, "chunk {i} has {} tokens", c.tokens);
            let (Some(start), Some(end)) = (c.page_start, c.page_end) else {
                panic!("chunk {i} lacks pages");
            };
            assert!(start <= end && end <= 6);
            let first_page = c.text.split_whitespace().nth(1).unwrap_or_default();
            assert_eq!(first_page, start.to_string(), "chunk {i}: {}", c.text);
        }
        assert_eq!(chunks.first().and_then(|c| c.page_start), Some(1));
        assert_eq!(chunks.last().and_then(|c| c.page_end), Some(6));
        // Overlap: some consecutive chunks share text.
        let shared = chunks.windows(2).any(|w| {
            let tail: Vec<&str> = w[0].text.split_whitespace().rev().take(3).collect();
            tail.iter().all(|t| w[1].text.contains(t))
        });
        assert!(shared, "no overlap between consecutive chunks");
        Ok(())
    }

    #[test]
    fn same_text_same_ids_and_blank_text_no_chunks() -> Result<(), IngestError> {
        let chunker = Chunker::new(32, 0)?;
        let text = PagedText::unpaged("Ian Murdock founded Debian in 1993.\n\n".repeat(20));
        let a = chunker.chunk(&doc(), "a.txt", &text);
        let b = chunker.chunk(&doc(), "a.txt", &text);
        assert!(!a.is_empty());
        assert_eq!(
            a.iter().map(|c| &c.id).collect::<Vec<_>>(),
            b.iter().map(|c| &c.id).collect::<Vec<_>>()
        );
        assert!(a.iter().all(|c| c.page_start.is_none()));
        let blank = PagedText::unpaged(" \n\n\t \n".into());
        assert!(chunker.chunk(&doc(), "b.txt", &blank).is_empty());
        Ok(())
    }

    #[test]
    fn overlap_not_below_size_is_an_error() {
        assert!(matches!(
            Chunker::new(32, 32),
            Err(IngestError::InvalidConfig(_))
        ));
    }
}
