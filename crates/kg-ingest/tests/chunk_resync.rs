//! Chunk boundaries resync after an edit: for random prose-like documents
//! and a random one-paragraph edit (rewritten, inserted, deleted, or a
//! sentence inserted), the chunk texts before and after differ in at most
//! 3 chunks (the new texts that the old version did not have: what the
//! content-keyed caches downstream pay for), and every chunk respects the
//! token limit. Seeded, so a failure names its case and repeats.

use std::collections::HashMap;

use kg_core::DocumentId;
use kg_ingest::{Chunker, PagedText};

mod common;
use common::Rng;

const WORDS: &[&str] = &[
    "the",
    "package",
    "maintainer",
    "uploads",
    "a",
    "new",
    "version",
    "to",
    "archive",
    "and",
    "release",
    "team",
    "reviews",
    "it",
    "before",
    "freeze",
    "of",
    "testing",
    "bug",
    "reports",
    "are",
    "filed",
    "against",
    "source",
    "binary",
    "mirror",
    "keyring",
    "signature",
    "policy",
    "requires",
    "every",
    "build",
    "daemon",
    "queue",
    "security",
    "advisory",
    "stable",
    "when",
    "harbour",
    "lighthouse",
    "ferry",
    "island",
    "cargo",
    "tide",
    "compass",
    "anchor",
    "with",
];

fn sentence(rng: &mut Rng) -> String {
    let n = 6 + rng.below(18);
    let words: Vec<&str> = (0..n).map(|_| WORDS[rng.below(WORDS.len())]).collect();
    let mut s = words.join(" ");
    if let Some(first) = s.get(..1) {
        s = first.to_uppercase() + s.get(1..).unwrap_or_default();
    }
    // A number makes sentences distinct, as real text mostly is.
    format!("{s} {}.", rng.next() % 10_000)
}

fn paragraph(rng: &mut Rng) -> String {
    let n = 1 + rng.below(7);
    (0..n).map(|_| sentence(rng)).collect::<Vec<_>>().join(" ")
}

/// A multiset difference: texts of `after` that `before` did not have.
fn new_texts(before: &[String], after: &[String]) -> usize {
    let mut have: HashMap<&str, usize> = HashMap::new();
    for t in before {
        *have.entry(t).or_default() += 1;
    }
    after
        .iter()
        .filter(|t| match have.get_mut(t.as_str()) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        })
        .count()
}

fn chunk_texts(chunker: &Chunker, paragraphs: &[String]) -> Vec<String> {
    let id = DocumentId::from_content_sha256(&kg_core::sha256_hex(b"doc"));
    let text = PagedText::unpaged(paragraphs.join("\n\n"));
    chunker
        .chunk(&id, "doc.txt", &text)
        .into_iter()
        .map(|c| c.text)
        .collect()
}

#[test]
fn a_one_paragraph_edit_changes_at_most_three_chunks() {
    let sizes = [(512, 64), (256, 32), (128, 16), (1024, 128), (300, 0)];
    let mut worst = 0;
    let mut histogram = [0usize; 8];
    let mut cases = 0;
    let mut fill_sum = 0.0;
    let mut fill_n = 0usize;
    for (size, overlap) in sizes {
        let chunker = Chunker::new(size, overlap).unwrap();
        for seed in 0..120u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let paragraphs: Vec<String> = (0..60 + rng.below(200))
                .map(|_| paragraph(&mut rng))
                .collect();
            let before = chunk_texts(&chunker, &paragraphs);
            for t in &before {
                fill_sum += chunker.count_tokens(t) as f64 / size as f64;
                fill_n += 1;
            }
            let mut edited = paragraphs.clone();
            let at = rng.below(edited.len());
            let kind = rng.below(4);
            match kind {
                0 => edited[at] = paragraph(&mut rng),
                1 => edited.insert(at, paragraph(&mut rng)),
                2 => {
                    edited.remove(at);
                }
                _ => {
                    let s = sentence(&mut rng);
                    edited[at] = format!("{s} {}", edited[at]);
                }
            }
            let after = chunk_texts(&chunker, &edited);
            for text in &after {
                let tokens = chunker.count_tokens(text);
                assert!(
                    tokens <= size,
                    "seed {seed} size {size}: a chunk of {tokens} tokens"
                );
                assert!(!text.trim().is_empty());
            }
            let changed = new_texts(&before, &after);
            if std::env::var_os("KG_CHUNK_STATS").is_some() {
                if changed > 3 {
                    let sizes: Vec<usize> =
                        before.iter().map(|t| chunker.count_tokens(t)).collect();
                    eprintln!(
                        "size {size}/{overlap} kind {kind} changed {changed} chunks {} mean {}",
                        before.len(),
                        sizes.iter().sum::<usize>() / sizes.len().max(1)
                    );
                    let bset: std::collections::HashSet<&String> = before.iter().collect();
                    let aset: std::collections::HashSet<&String> = after.iter().collect();
                    let first = after.iter().position(|t| !bset.contains(t)).unwrap_or(0);
                    let lo = first.saturating_sub(1);
                    let show = |v: &Vec<String>,
                                other: &std::collections::HashSet<&String>,
                                from: usize|
                     -> String {
                        v.iter()
                            .enumerate()
                            .skip(from)
                            .take(7)
                            .map(|(i, t)| {
                                format!(
                                    "{}{}:{}[{}]",
                                    if other.contains(t) { " " } else { "*" },
                                    i,
                                    chunker.count_tokens(t),
                                    t.matches("\n\n").count()
                                )
                            })
                            .collect::<Vec<_>>()
                            .join(" ")
                    };
                    let bfirst = before
                        .iter()
                        .position(|t| !aset.contains(t))
                        .unwrap_or(0)
                        .saturating_sub(1);
                    eprintln!(
                        "  before {}\n  after  {}",
                        show(&before, &aset, bfirst),
                        show(&after, &bset, lo)
                    );
                }
                worst = worst.max(changed);
                histogram[changed.min(7)] += 1;
                cases += 1;
                continue;
            }
            assert!(
                changed <= 3,
                "seed {seed}, size {size}/{overlap}, edit {kind} at paragraph {at} of {}: \
                 {changed} new chunk texts ({} chunks before)",
                paragraphs.len(),
                before.len()
            );
            worst = worst.max(changed);
            histogram[changed.min(7)] += 1;
            cases += 1;
        }
    }
    eprintln!(
        "{cases} cases; new chunk texts per edit: {histogram:?}; worst {worst}; fill {:.2}",
        fill_sum / fill_n as f64
    );
}

#[test]
fn chunks_of_any_text_fit_and_say_something_new() {
    // Odd texts: no sentence ends, long words, blank runs, tiny sizes.
    let mut rng = Rng(7);
    for case in 0..200 {
        let size = 8 + rng.below(300);
        let overlap = rng.below(size / 2);
        let chunker = Chunker::new(size, overlap).unwrap();
        let mut text = String::new();
        for _ in 0..rng.below(400) {
            match rng.below(10) {
                0 => text.push_str("\n\n"),
                1 => text.push('\n'),
                2 => text.push_str(&"x".repeat(rng.below(900))),
                3 => text.push_str(". "),
                _ => {
                    text.push_str(WORDS[rng.below(WORDS.len())]);
                    text.push(' ');
                }
            }
        }
        let id = DocumentId::from_content_sha256(&kg_core::sha256_hex(text.as_bytes()));
        let chunks = chunker.chunk(&id, "odd.txt", &PagedText::unpaged(text.clone()));
        for c in &chunks {
            assert!(
                c.tokens as usize <= size,
                "case {case}: {} > {size}",
                c.tokens
            );
            assert!(!c.text.trim().is_empty(), "case {case}: an empty chunk");
        }
        // Every word of the text is in some chunk.
        for word in text.split_whitespace().filter(|w| w.len() <= 8) {
            assert!(
                chunks.iter().any(|c| c.text.contains(word)),
                "case {case}: `{word}` is in no chunk (size {size}, overlap {overlap}); text {text:?}; chunks {:?}",
                chunks.iter().map(|c| &c.text).collect::<Vec<_>>()
            );
        }
    }
}

#[test]
fn edits_of_a_real_manual_change_at_most_three_chunks() {
    // The Debian Developer's Reference as plain text (eval/corpus), 512/64
    // as `kg` chunks by default: 30 edits spread over its middle, each a
    // sentence inserted at the start of one paragraph or one paragraph
    // rewritten (its words reversed).
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../eval/corpus/developers-reference.txt"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let paragraphs: Vec<String> = text.split("\n\n").map(str::to_string).collect();
    assert!(paragraphs.len() > 500, "{} paragraphs", paragraphs.len());
    let chunker = Chunker::new(512, 64).unwrap();
    let before = chunk_texts(&chunker, &paragraphs);
    assert!(before.len() > 150, "{} chunks", before.len());
    let mut histogram = [0usize; 8];
    for k in 0..30 {
        let at = paragraphs.len() / 5 + k * (paragraphs.len() * 3 / 5) / 30;
        let mut edited = paragraphs.clone();
        edited[at] = if k % 2 == 0 {
            format!("This sentence was added by edit {k}. {}", edited[at])
        } else {
            edited[at].split(' ').rev().collect::<Vec<_>>().join(" ")
        };
        let after = chunk_texts(&chunker, &edited);
        let changed = new_texts(&before, &after);
        histogram[changed.min(7)] += 1;
        assert!(
            changed <= 3,
            "edit {k} at paragraph {at}: {changed} new chunk texts"
        );
    }
    eprintln!("new chunk texts per edit: {histogram:?}");
}
