//! The chunker's cl100k counts (bpe-openai) are tiktoken's, exactly.
//!
//! Chunk boundaries are chosen by token counts and chunk ids hash the chunk
//! texts, so a count that differed from the reference by one token could
//! move a boundary, change ids and invalidate every cache keyed on them.
//! The reference is tiktoken-rs's `cl100k_base` (OpenAI's own algorithm and
//! tables), on real documents (the bundled PDFs' text, a Debian manual) and
//! on seeded random strings built to stress the pre-tokenizer: whitespace
//! runs before words and at the end, digits, contractions, CRLF, accents,
//! CJK, emoji, punctuation runs.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kg_ingest::pdf::{read_pdf, PdfOutcome};
use kg_ingest::{Chunker, PdfEngine};

mod common;
use common::{fixture, Rng};

fn reference(text: &str) -> usize {
    tiktoken_rs::cl100k_base_singleton()
        .encode_ordinary(text)
        .len()
}

/// Every prefix cut at a character boundary near each of `cuts` points,
/// every paragraph, and the whole text.
fn pieces(text: &str, cuts: usize) -> Vec<&str> {
    let mut out: Vec<&str> = text.split("\n\n").collect();
    out.push(text);
    let step = (text.len() / cuts.max(1)).max(1);
    let mut at = 0;
    while at < text.len() {
        let mut end = (at + step).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        if let Some(piece) = text.get(at..end) {
            out.push(piece);
        }
        at = end;
    }
    out
}

fn assert_same(what: &str, texts: &[&str]) -> usize {
    let chunker = Chunker::new(512, 64).unwrap();
    let mut tokens = 0;
    for text in texts {
        let (ours, theirs) = (chunker.count_tokens(text), reference(text));
        assert_eq!(
            ours,
            theirs,
            "{what}: cl100k counts differ on {:?}",
            text.chars().take(120).collect::<String>()
        );
        tokens += theirs;
    }
    tokens
}

#[test]
fn counts_equal_tiktoken_on_real_documents() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut texts: Vec<String> = Vec::new();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for pdf in ["bash.pdf", "project-history.en.pdf", "Statement.pdf"] {
        let path = fixture(&format!("pdf/{pdf}"));
        let bytes = Arc::new(std::fs::read(&path).unwrap());
        let outcome = runtime.block_on(read_pdf(
            bytes,
            pdf,
            PdfEngine::PdfOxide,
            Duration::from_secs(120),
        ));
        match outcome {
            PdfOutcome::Text(t) => texts.push(t.pages.join("\n")),
            PdfOutcome::SetAside(reason, detail) => panic!("{pdf}: set aside: {reason}: {detail}"),
        }
    }
    texts.push(std::fs::read_to_string(root.join("eval/corpus/developers-reference.txt")).unwrap());
    let mut all = 0;
    for (i, text) in texts.iter().enumerate() {
        all += assert_same(&format!("document {i}"), &pieces(text, 400));
    }
    // Real documents: hundreds of thousands of tokens compared.
    assert!(all > 200_000, "compared only {all} tokens");
}

#[test]
fn counts_equal_tiktoken_on_strings_that_stress_the_pre_tokenizer() {
    const PARTS: &[&str] = &[
        "the",
        "The",
        "maintainer",
        " ",
        "  ",
        "   ",
        "\t",
        "\n",
        "\n\n",
        "\r\n",
        " \n ",
        "'s",
        "'LL",
        "'re",
        "n't",
        "0",
        "12",
        "1234567",
        "3.14",
        "-",
        "--",
        "...",
        "!?",
        "(",
        ")]",
        "\"",
        "café",
        "naïve",
        "Ünïcödé",
        "日本語",
        "中文",
        "한국어",
        "🚀",
        "👩‍💻",
        "e\u{301}",
        "ß",
        "İ",
        "ﬁ",
        "\u{a0}",
        "\u{2028}",
        "<|endoftext|>",
        "http://x.org/a_b",
        "$x_1$",
        "#",
    ];
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut texts = Vec::new();
    for _ in 0..3_000 {
        let n = 1 + (rng.next() % 40) as usize;
        let text: String = (0..n).map(|_| rng.pick(PARTS)).collect();
        texts.push(text);
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let tokens = assert_same("random", &refs);
    assert!(tokens > 30_000, "compared only {tokens} tokens");
}
