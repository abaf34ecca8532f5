//! Token-aware chunking with overlap, keeping page numbers.
//!
//! Size is measured in cl100k tokens (the tokenizer of OpenAI's embedding
//! and chat models), counted with [`bpe_openai::cl100k_base`]: GitHub's
//! exact byte-pair encoder, which gives tiktoken's counts (a test holds the
//! two to the same counts, since chunk boundaries and so chunk ids depend
//! on them) at about 2.5 times tiktoken-rs's speed. Its tables are loaded
//! once per process (about 20 ms), not once per run or per file.
//!
//! # Algorithm: segment once, cut where the content says
//!
//! 1. The text is cut into *segments* at sentence ends, line breaks and
//!    blank lines (paragraphs). Each cut remembers its strength
//!    (paragraph > line > sentence > word). A cut sits where the whitespace
//!    after the boundary starts, so that whitespace leads the next segment,
//!    exactly as cl100k's pre-tokenizer attaches it: the token counts of
//!    consecutive segments add up to (practically) the count of their
//!    concatenation.
//! 2. Each segment is tokenized **once**. A segment longer than a chunk's
//!    body (below) is cut further at words, and a word longer than that
//!    into pieces of at most that many bytes (a token is at least one
//!    byte, so such a piece never exceeds it).
//! 3. **Content-defined boundaries.** Every boundary between two segments
//!    has a score: its strength first, then an FNV-1a hash of the text of
//!    the segment before it, never its position. Before merging, two kinds
//!    of boundary are fixed as cuts, each decided by one paragraph's own
//!    text and size:
//!    - *anchors*: the break after a paragraph of `t` tokens is an anchor
//!      candidate with probability `2·t / body` over texts (decided by its
//!      hash, the strongest first), so every paragraph of half a body or
//!      more ends in one; a candidate becomes an anchor when it lies at
//!      least 0.3 body after the previous candidate. An edit inside a
//!      paragraph moves at most the anchors around that paragraph, so the
//!      regrouping it causes stops at the next anchor on either side.
//!    - a paragraph of one to two bodies is *halved* at its strongest
//!      boundary that leaves both halves within a body (the other
//!      boundaries inside it are merged away), instead of being cut
//!      wherever its neighbours leave room.
//!
//!    Every other boundary starts as a cut, and cuts are removed *weakest
//!    first* (lowest score; equal scores, the earlier one) whenever the two
//!    pieces on either side fit together in a *body* of `size − overlap`
//!    tokens. When a boundary's turn comes, the pieces beside it lie
//!    between the nearest stronger boundaries or anchors on either side, so
//!    whether it stays a cut depends only on the text there: an edit
//!    regroups the bodies around it, and the cuts elsewhere stay where they
//!    were. The caches downstream are keyed by chunk text, so a re-run
//!    after an edit pays for the new chunk texts only.
//! 4. A chunk is an *overlap* (whole trailing segments of the previous
//!    body, at most `overlap` tokens) followed by its body, so the two
//!    always fit. Each chunk's text is trimmed (a body of whitespace only
//!    is dropped) and counted exactly once more; that exact count is the
//!    chunk's `tokens`, and should it ever exceed the size (BPE merging
//!    across a segment boundary), the overlap gives way first.
//!
//! **What it costs and guarantees.** Merging stops where the next merge
//! would not fit, and anchors cut where greedy packing would not, so chunks
//! are less full than greedy packing made them: at 512/64 the mean chunk is
//! 0.64–0.77 of the size on the bundled and evaluation documents (greedy:
//! about 0.9), so a first run makes a quarter to a half more LLM calls (the
//! text sent is the same; what grows is the prompt sent with each call).
//! In return an edit costs a few chunks: `tests/chunk_resync.rs` finds at
//! most 3 new chunk texts after each of 600 random one-paragraph edits of
//! generated prose and 30 edits of the Developer's Reference; on 2,000
//! further generated cases (other seeds) 2 edits gave 4 (docs/ingest.md
//! has the figures).
//!
//! This replaced `text-splitter`, which re-tokenized candidate chunks many
//! times per chunk: on a 400 KB manual it spent 280 ms chunking text that
//! takes 19 ms to tokenize once. Here the text is tokenized about twice
//! (segments, then each chunk for its exact count).
//!
//! Pages of a PDF are joined with a blank line (a paragraph boundary, so
//! chunks prefer to end there) and the byte offset where each page starts
//! is kept. A chunk's first and last bytes are then looked up in those
//! offsets to give its `page_start` and `page_end`.
//!
//! Chunk ids are [`ChunkId::new`] of the document id, the index and the text:
//! the same bytes in always give the same ids out (the algorithm has no
//! randomness and no dependence on threads).

use bpe_openai::Tokenizer;
use kg_core::{Chunk, ChunkId, DocumentId};

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

/// How strong the boundary at the end of a segment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Boundary {
    /// Between two words of a sentence (only inside over-long sentences).
    Word,
    /// After `.`, `!` or `?` followed by whitespace.
    Sentence,
    /// A single line break.
    Line,
    /// A blank line (also between pages), or the end of the text.
    Paragraph,
}

/// A byte range of the text with its token count, measured once.
#[derive(Debug, Clone, Copy)]
struct Segment {
    start: usize,
    end: usize,
    tokens: usize,
    /// Strength of the boundary at `end`.
    boundary: Boundary,
}

/// How a boundary between two segments is treated when bodies are formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Removed when the pieces on either side fit together, weakest first.
    Free,
    /// Removed before anything else (inside a paragraph that is halved).
    Merged,
    /// Always a cut: an anchor, or where a paragraph is halved.
    Cut,
}

/// Anchors are at least this share of a body apart from the previous
/// anchor candidate (`NUM / DEN`).
const ANCHOR_GAP_NUM: usize = 3;
/// See [`ANCHOR_GAP_NUM`].
const ANCHOR_GAP_DEN: usize = 10;

/// The process-wide cl100k tokenizer, loaded by its first caller (about 20
/// ms; [`warm_up`] starts that early on a thread of its own).
fn tokenizer() -> &'static Tokenizer {
    bpe_openai::cl100k_base()
}

/// Starts loading the cl100k tables on a thread of its own, so that they
/// are ready (or nearly) when the first document is chunked instead of
/// delaying the start of a run; a chunker that needs them sooner waits for
/// that load rather than starting a second one.
pub fn warm_up() {
    // A failed spawn only means the first chunking loads the tables.
    let _ = std::thread::Builder::new()
        .name("kg-tokenizer".into())
        .spawn(|| {
            tokenizer();
        });
}

/// Splits documents into chunks. Cheap to share: build once per run.
pub struct Chunker {
    max_tokens: usize,
    overlap: usize,
}

impl std::fmt::Debug for Chunker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunker")
            .field("max_tokens", &self.max_tokens)
            .field("overlap", &self.overlap)
            .finish_non_exhaustive()
    }
}

impl Chunker {
    /// A chunker for chunks of at most `max_tokens` cl100k tokens, consecutive
    /// chunks sharing up to `overlap` tokens.
    pub fn new(max_tokens: usize, overlap: usize) -> Result<Self, IngestError> {
        if max_tokens == 0 {
            return Err(IngestError::InvalidConfig(
                "chunk size must be at least 1 token".into(),
            ));
        }
        if overlap >= max_tokens {
            return Err(IngestError::InvalidConfig(format!(
                "chunk overlap ({overlap}) must be smaller than the chunk size ({max_tokens})"
            )));
        }
        Ok(Self {
            max_tokens,
            overlap,
        })
    }

    /// Number of cl100k tokens in `text`.
    pub fn count_tokens(&self, text: &str) -> usize {
        tokenizer().count(text)
    }

    /// The chunks of one document, in order, indexed from 0.
    pub fn chunk(&self, document_id: &DocumentId, source: &str, text: &PagedText) -> Vec<Chunk> {
        let mut chunks = Vec::new();
        for (offset, piece, tokens) in self.pieces(&text.text) {
            let Ok(index) = u32::try_from(chunks.len()) else {
                break;
            };
            let last_byte = offset + piece.len().saturating_sub(1);
            chunks.push(Chunk {
                id: ChunkId::new(document_id, index, piece),
                document_id: document_id.clone(),
                index,
                text: piece.to_string(),
                tokens: u32::try_from(tokens).unwrap_or(u32::MAX),
                source: source.to_string(),
                page_start: text.page_at(offset),
                page_end: text.page_at(last_byte),
            });
        }
        chunks
    }

    /// Most tokens of a chunk's own text (its *body*): the size less the
    /// overlap, so that body and overlap together always fit and a cut
    /// never depends on the chunk before.
    fn body_max(&self) -> usize {
        (self.max_tokens - self.overlap).max(1)
    }

    /// The trimmed, non-empty chunk texts of `text` with their byte offsets
    /// and exact token counts (see the module docs for the scheme).
    fn pieces<'t>(&self, text: &'t str) -> Vec<(usize, &'t str, usize)> {
        let segments = self.segments(text);
        let n = segments.len();
        let mut out = Vec::new();
        if n == 0 {
            return out;
        }
        // Token position of each boundary: `position[i]` is where segment
        // `i` starts, `position[n]` the end.
        let mut position = Vec::with_capacity(n + 1);
        position.push(0);
        for s in &segments {
            let last = position.last().copied().unwrap_or(0);
            position.push(last + s.tokens);
        }
        let scores: Vec<u64> = segments.iter().map(|s| boundary_score(text, s)).collect();
        let roles = self.roles(&segments, &position, &scores);
        let bodies = self.merge_weakest_first(&position, &scores, &roles);

        let mut previous: Option<(usize, usize)> = None;
        for (first, end) in bodies {
            let (_, body) = trimmed(text, segments[first].start, segments[end - 1].end);
            if body.is_empty() {
                continue;
            }
            // The overlap: whole trailing segments of the previous body.
            let mut start = first;
            if let Some((previous_first, _)) = previous {
                let mut shared = 0;
                while start > previous_first && shared + segments[start - 1].tokens <= self.overlap
                {
                    shared += segments[start - 1].tokens;
                    start -= 1;
                }
            }
            previous = Some((first, end));
            // The exact count of the trimmed text; should BPE merge
            // differently across a segment boundary, the overlap gives way.
            loop {
                let (offset, piece) = trimmed(text, segments[start].start, segments[end - 1].end);
                let tokens = self.count_tokens(piece);
                if tokens <= self.max_tokens {
                    out.push((offset, piece, tokens));
                    break;
                }
                if start < first {
                    start += 1;
                    continue;
                }
                // The body alone is over (cannot happen with segments cut
                // to the body size and counts that add up; kept as a
                // guard): one chunk per segment, in byte pieces if need be.
                for s in &segments[first..end] {
                    for (offset, part) in byte_pieces(text, s.start, s.end, self.max_tokens) {
                        let (offset, part) = trimmed(text, offset, offset + part.len());
                        if !part.is_empty() {
                            out.push((offset, part, self.count_tokens(part)));
                        }
                    }
                }
                break;
            }
        }
        out
    }

    /// What each boundary is when bodies are formed (`roles[j]` for the
    /// boundary before segment `j`; 0 is the start of the text): anchors
    /// and the cut of a paragraph halved are [`Role::Cut`], the other
    /// boundaries of a halved paragraph [`Role::Merged`], every other one
    /// [`Role::Free`] for weakest-first merging.
    fn roles(&self, segments: &[Segment], position: &[usize], scores: &[u64]) -> Vec<Role> {
        let n = segments.len();
        let body = self.body_max();
        let mut roles = vec![Role::Free; n];
        // The end of the latest anchor candidate (the start of the text at first).
        let mut previous_candidate = 0;
        let mut first = 0;
        for (last, segment) in segments.iter().enumerate() {
            if segment.boundary != Boundary::Paragraph && last + 1 < n {
                continue;
            }
            // Paragraph: segments first..=last.
            let end = last + 1;
            let tokens = position[end] - position[first];
            if tokens > body && tokens <= 2 * body {
                if let Some(cut) = halving_cut(position, scores, first, end, body) {
                    for role in &mut roles[first + 1..end] {
                        *role = Role::Merged;
                    }
                    roles[cut] = Role::Cut;
                }
            }
            if end < n && is_anchor_candidate(scores[last], tokens, body) {
                if (position[end] - position[previous_candidate]) * ANCHOR_GAP_DEN
                    >= body * ANCHOR_GAP_NUM
                {
                    roles[end] = Role::Cut;
                }
                previous_candidate = end;
            }
            first = end;
        }
        roles
    }

    /// Groups the segments into bodies of at most [`Self::body_max`]
    /// tokens: every boundary starts as a cut; the [`Role::Merged`] ones
    /// are removed first, then the [`Role::Free`] ones weakest first
    /// (lowest score) whenever the two pieces they separate fit together.
    /// [`Role::Cut`] boundaries stay. Returns the bodies as segment ranges.
    fn merge_weakest_first(
        &self,
        position: &[usize],
        scores: &[u64],
        roles: &[Role],
    ) -> Vec<(usize, usize)> {
        let n = scores.len();
        // Cut `j` (1..n) lies between segments j-1 and j; 0 and n are fixed.
        let mut prev: Vec<usize> = (0..=n).map(|j| j.saturating_sub(1)).collect();
        let mut next: Vec<usize> = (0..=n).map(|j| (j + 1).min(n)).collect();
        let merged = (1..n).filter(|&j| roles[j] == Role::Merged);
        let mut free: Vec<usize> = (1..n).filter(|&j| roles[j] == Role::Free).collect();
        // Ties (the same text twice) go to the earlier boundary.
        free.sort_by_key(|&j| (scores[j - 1], j));
        let limit = self.body_max();
        for (j, always) in merged
            .map(|j| (j, true))
            .chain(free.into_iter().map(|j| (j, false)))
        {
            let (p, q) = (prev[j], next[j]);
            if always || position[q] - position[p] <= limit {
                next[p] = q;
                prev[q] = p;
            }
        }
        let mut bodies = Vec::new();
        let mut at = 0;
        while at < n {
            bodies.push((at, next[at]));
            at = next[at];
        }
        bodies
    }

    /// Cuts `text` into segments at sentence, line and paragraph boundaries
    /// (words, then bytes, for segments above the chunk size), each counted
    /// once.
    fn segments(&self, text: &str) -> Vec<Segment> {
        let mut segments = Vec::new();
        let bytes = text.as_bytes();
        let mut start = 0;
        let mut i = 0;
        while i < bytes.len() {
            // Find the next whitespace run that follows non-whitespace.
            if !bytes[i].is_ascii_whitespace() || i == 0 || bytes[i - 1].is_ascii_whitespace() {
                i += 1;
                continue;
            }
            let run_start = i;
            let mut newlines = 0;
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                newlines += usize::from(bytes[i] == b'\n');
                i += 1;
            }
            let boundary = match newlines {
                0 if matches!(bytes[run_start - 1], b'.' | b'!' | b'?') => Boundary::Sentence,
                0 => continue,
                1 => Boundary::Line,
                _ => Boundary::Paragraph,
            };
            self.push_segment(text, start, run_start, boundary, &mut segments);
            start = run_start;
        }
        if start < text.len() {
            self.push_segment(text, start, text.len(), Boundary::Paragraph, &mut segments);
        }
        segments
    }

    /// Adds `text[start..end]` as one segment, or as word (then byte)
    /// pieces when it is above the chunk size.
    fn push_segment(
        &self,
        text: &str,
        start: usize,
        end: usize,
        boundary: Boundary,
        segments: &mut Vec<Segment>,
    ) {
        let Some(slice) = text.get(start..end) else {
            return;
        };
        let tokens = self.count_tokens(slice);
        let limit = self.body_max();
        if tokens <= limit {
            segments.push(Segment {
                start,
                end,
                tokens,
                boundary,
            });
            return;
        }
        // Words: cut where a whitespace run starts after non-whitespace.
        let bytes = slice.as_bytes();
        let mut cuts: Vec<usize> = (1..bytes.len())
            .filter(|&i| bytes[i].is_ascii_whitespace() && !bytes[i - 1].is_ascii_whitespace())
            .map(|i| start + i)
            .collect();
        cuts.push(end);
        let mut word_start = start;
        for cut in cuts {
            let is_last = cut == end;
            let word_boundary = if is_last { boundary } else { Boundary::Word };
            let Some(word) = text.get(word_start..cut) else {
                continue;
            };
            let tokens = self.count_tokens(word);
            if tokens <= limit {
                segments.push(Segment {
                    start: word_start,
                    end: cut,
                    tokens,
                    boundary: word_boundary,
                });
            } else {
                let parts = byte_pieces(text, word_start, cut, limit);
                let count = parts.len();
                for (k, (offset, part)) in parts.into_iter().enumerate() {
                    segments.push(Segment {
                        start: offset,
                        end: offset + part.len(),
                        tokens: self.count_tokens(part),
                        boundary: if k + 1 == count {
                            word_boundary
                        } else {
                            Boundary::Word
                        },
                    });
                }
            }
            word_start = cut;
        }
    }
}

/// The score of the boundary at the end of `segment`: its strength first
/// (a paragraph end beats any sentence end), then a hash of the segment's
/// own text, so the same text scores the same wherever it sits.
fn boundary_score(text: &str, segment: &Segment) -> u64 {
    let strength: u64 = match segment.boundary {
        Boundary::Word => 0,
        Boundary::Sentence => 1,
        Boundary::Line => 2,
        Boundary::Paragraph => 3,
    };
    let piece = text
        .get(segment.start..segment.end)
        .unwrap_or_default()
        .trim();
    // FNV-1a: stable across platforms and releases (the std hasher is not).
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in piece.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (strength << 62) | (hash >> 2)
}

/// Whether the paragraph break after a paragraph of `tokens` tokens whose
/// last segment scored `score` is an anchor candidate: with probability
/// `2 · tokens / body` over the texts, decided by how strong the boundary
/// is (the top of the score range first), so every paragraph of at least
/// half a body ends in a candidate and the candidates are the breaks the
/// merging would keep anyway.
fn is_anchor_candidate(score: u64, tokens: usize, body: usize) -> bool {
    const HASH_RANGE: u128 = 1 << 62;
    let weakness = HASH_RANGE - u128::from(score & ((1 << 62) - 1));
    weakness.saturating_mul(body as u128) <= (2 * tokens as u128).saturating_mul(HASH_RANGE)
}

/// The strongest boundary of segments `first..end` (a paragraph of more
/// than `body` tokens and at most twice that) that leaves both sides within
/// `body` tokens, if any.
fn halving_cut(
    position: &[usize],
    scores: &[u64],
    first: usize,
    end: usize,
    body: usize,
) -> Option<usize> {
    (first + 1..end)
        .filter(|&j| position[j] - position[first] <= body && position[end] - position[j] <= body)
        .max_by_key(|&j| (scores[j - 1], j))
}

/// `text[start..end]` without surrounding whitespace, with its offset.
fn trimmed(text: &str, start: usize, end: usize) -> (usize, &str) {
    let slice = text.get(start..end).unwrap_or_default();
    let without_front = slice.trim_start();
    let offset = start + (slice.len() - without_front.len());
    (offset, without_front.trim_end())
}

/// `text[start..end]` cut into pieces of at most `max_bytes` bytes (at least
/// one character each), at character boundaries.
fn byte_pieces(text: &str, start: usize, end: usize, max_bytes: usize) -> Vec<(usize, &str)> {
    let mut pieces = Vec::new();
    let mut at = start;
    while at < end {
        let mut cut = (at + max_bytes).min(end);
        while cut > at && !text.is_char_boundary(cut) {
            cut -= 1;
        }
        if cut == at {
            // One character wider than `max_bytes`: take it whole.
            cut = at + 1;
            while cut < end && !text.is_char_boundary(cut) {
                cut += 1;
            }
        }
        if let Some(piece) = text.get(at..cut) {
            pieces.push((at, piece));
        }
        at = cut;
    }
    pieces
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
    fn long_sentences_and_words_are_cut_within_size() -> Result<(), IngestError> {
        let chunker = Chunker::new(20, 5)?;
        // One 300-word sentence without punctuation, then a 500-byte "word"
        // (a hash dump), then an ordinary paragraph.
        let sentence = (0..300)
            .map(|w| format!("word{w}"))
            .collect::<Vec<_>>()
            .join(" ");
        let blob = "a1b2c3d4e5".repeat(50);
        let text = PagedText::from_pages(&[
            format!("{sentence}\n\n{blob}"),
            "Debian was announced in August 1993.".to_string(),
        ]);
        let chunks = chunker.chunk(&doc(), "long.pdf", &text);
        assert!(chunks.len() > 30, "only {} chunks", chunks.len());
        for c in &chunks {
            assert!(!c.text.trim().is_empty());
            assert!(c.tokens <= 20, "{} tokens: {}", c.tokens, c.text);
            assert_eq!(c.tokens as usize, chunker.count_tokens(&c.text));
        }
        // Every word of the input is in some chunk, in order.
        let joined: String = chunks
            .iter()
            .map(|c| c.text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(joined.contains("word0 ") && joined.contains("word299"));
        assert!(
            chunks
                .last()
                .is_some_and(|c| c.text.ends_with("in August 1993.") && c.page_end == Some(2)),
            "{:?}",
            chunks.last()
        );
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
