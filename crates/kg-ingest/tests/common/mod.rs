//! Helpers shared by the integration tests: fixture paths, the pdftotext
//! reference, the distinct-word agreement measure and a seeded generator.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `tests/fixtures/<rel>`.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// The text pdftotext (poppler-utils) extracts from `path`. Panics with an
/// install hint when pdftotext is missing: these tests must not be skipped.
pub fn pdftotext(path: &Path) -> String {
    pdftotext_with(path, &[])
}

/// pdftotext's text in content-stream order (`-raw`), which keeps words
/// hyphenated at line ends as they are (its default mode joins them all).
pub fn pdftotext_raw(path: &Path) -> String {
    pdftotext_with(path, &["-raw"])
}

fn pdftotext_with(path: &Path, options: &[&str]) -> String {
    let out = Command::new("pdftotext")
        .args(options)
        .arg("-enc")
        .arg("UTF-8")
        .arg(path)
        .arg("-")
        .output()
        .unwrap_or_else(|e| {
            panic!("pdftotext is required for this test (apt-get install -y poppler-utils): {e}")
        });
    assert!(
        out.status.success(),
        "pdftotext failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Distinct words: maximal runs of letters and digits, lower-cased, of at
/// least two characters.
pub fn words(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 2)
        .map(str::to_lowercase)
        .collect()
}

/// Share of `of`'s words that `other` has too (1.0 when `of` is empty).
pub fn agreement(of: &BTreeSet<String>, other: &BTreeSet<String>) -> f64 {
    if of.is_empty() {
        return 1.0;
    }
    of.intersection(other).count() as f64 / of.len() as f64
}

/// xorshift64*: small, seeded, good enough to draw test inputs (a failure
/// names its seed and repeats).
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// One of `from`, which must not be empty.
    pub fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
}
