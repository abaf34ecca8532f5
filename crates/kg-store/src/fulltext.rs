//! Keyword search helpers shared by the backends: how user text becomes
//! query terms, how those terms are written in each backend's query syntax
//! (never as operators), and Okapi BM25 for the backend that has no
//! fulltext index of its own.
//!
//! User text is never handed to a query parser as it is: it is cut into
//! terms (runs of letters and digits, lowercased), stop words and
//! duplicates dropped, at most [`MAX_TERMS`] kept, and each term is quoted.
//! Quotes, `AND`, `OR`, `*`, `~`, `\`, `:`, brackets and 10 kB of text all
//! become plain terms or nothing: a result list or an empty one, never a
//! syntax error.

use std::collections::{HashMap, HashSet};

/// Most terms a query keeps (the first ones, in order of appearance).
pub const MAX_TERMS: usize = 48;

/// BM25's term-frequency saturation.
pub const BM25_K1: f64 = 1.2;
/// BM25's length normalisation.
pub const BM25_B: f64 = 0.75;

/// English function words that carry no topic (Lucene's English stop set
/// plus question words).
const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it",
    "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these",
    "they", "this", "to", "was", "will", "with", "what", "which", "who", "whom", "how", "why",
    "when", "where", "does", "do", "did", "can", "i", "you", "my", "we", "should", "would", "has",
    "have", "from", "its", "about", "me",
];

/// Whether `word` (lowercase) is a stop word.
pub fn is_stop_word(word: &str) -> bool {
    STOP_WORDS.contains(&word)
}

/// The words of `text`: runs of alphanumerics, lowercased. The tokenizer
/// of documents and queries alike.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// The query terms of `text`: its words, stop words and duplicates
/// dropped, at most [`MAX_TERMS`], in order of appearance. Empty when the
/// text has no word that is not a stop word.
pub fn query_terms(text: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for w in words(text) {
        if out.len() >= MAX_TERMS {
            break;
        }
        if w.chars().count() > 64 || is_stop_word(&w) || !seen.insert(w.clone()) {
            continue;
        }
        out.push(w);
    }
    out
}

/// `terms` as a Lucene query (Neo4j's `db.index.fulltext.queryNodes`):
/// each term quoted, joined by `OR`. Terms hold only letters and digits,
/// so nothing inside the quotes is syntax.
pub fn lucene_query(terms: &[String]) -> String {
    terms
        .iter()
        .map(|t| format!("\"{t}\""))
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// `terms` as an SQLite FTS5 query: each term a quoted string, joined by
/// `OR` (a double quote inside a string would be doubled; terms have none).
pub fn fts5_query(terms: &[String]) -> String {
    terms
        .iter()
        .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// Okapi BM25 over a set of candidate documents, given the collection's
/// size and average length: what a backend without a fulltext index
/// computes in the client.
#[derive(Debug, Clone)]
pub struct Bm25 {
    /// Documents in the collection.
    pub docs: u64,
    /// Their average length in words.
    pub avg_len: f64,
    /// Documents containing each term.
    pub doc_freq: HashMap<String, u64>,
}

impl Bm25 {
    /// The score of a document whose words are `doc_words` for `terms`.
    pub fn score(&self, terms: &[String], doc_words: &[String]) -> f64 {
        let len = doc_words.len() as f64;
        let mut tf: HashMap<&str, u64> = HashMap::new();
        for w in doc_words {
            *tf.entry(w.as_str()).or_default() += 1;
        }
        let n = self.docs as f64;
        let avg = if self.avg_len > 0.0 {
            self.avg_len
        } else {
            1.0
        };
        terms
            .iter()
            .map(|t| {
                let f = tf.get(t.as_str()).copied().unwrap_or(0) as f64;
                if f == 0.0 {
                    return 0.0;
                }
                let df = self.doc_freq.get(t).copied().unwrap_or(0) as f64;
                let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
                idf * f * (BM25_K1 + 1.0) / (f + BM25_K1 * (1.0 - BM25_B + BM25_B * len / avg))
            })
            .sum()
    }
}

/// Ranks candidate `(id, text)` pairs by BM25 for `terms`, with document
/// frequencies counted over the candidates (every document that contains a
/// term is a candidate, so these are exact) and the given collection size
/// and average length. Best first, ties by id; only positive scores; at
/// most `k`.
pub fn rank_bm25(
    terms: &[String],
    candidates: Vec<(String, String)>,
    docs: u64,
    avg_len: f64,
    k: usize,
) -> Vec<(f32, String)> {
    let tokenised: Vec<(String, Vec<String>)> = candidates
        .into_iter()
        .map(|(id, text)| (id, words(&text).collect()))
        .collect();
    let mut doc_freq: HashMap<String, u64> = HashMap::new();
    for (_, ws) in &tokenised {
        let present: HashSet<&String> = ws.iter().collect();
        for t in terms {
            if present.contains(t) {
                *doc_freq.entry(t.clone()).or_default() += 1;
            }
        }
    }
    let bm = Bm25 {
        docs: docs.max(tokenised.len() as u64),
        avg_len,
        doc_freq,
    };
    let mut scored: Vec<(f32, String)> = tokenised
        .iter()
        .map(|(id, ws)| (bm.score(terms, ws) as f32, id.clone()))
        .filter(|(s, _)| *s > 0.0)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    scored.truncate(k);
    scored
}

/// Whether `name` occurs in `text` as whole words (both lowercased by the
/// caller's tokenizer): the "exact" entity lookup by name.
pub fn contains_phrase(text_words: &[String], name: &str) -> bool {
    let name_words: Vec<String> = words(name).collect();
    if name_words.is_empty() || name_words.len() > text_words.len() {
        return false;
    }
    text_words
        .windows(name_words.len())
        .any(|w| w == name_words.as_slice())
}

/// Keeps the entities whose name occurs in `text` as whole words, scored
/// by the share of the text's query terms the name covers, longest names
/// first, at most `k`.
pub fn rank_name_matches(
    text: &str,
    candidates: Vec<crate::store::EntitySummary>,
    k: usize,
) -> Vec<crate::store::EntityMatch> {
    let text_words: Vec<String> = words(text).collect();
    let terms = query_terms(text);
    let mut out: Vec<crate::store::EntityMatch> = candidates
        .into_iter()
        .filter(|e| contains_phrase(&text_words, &e.name))
        .filter_map(|e| {
            let covered = words(&e.name)
                .filter(|w| terms.contains(w))
                .collect::<HashSet<_>>()
                .len();
            (covered > 0).then(|| crate::store::EntityMatch {
                score: covered as f32 / terms.len().max(1) as f32,
                entity: e,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.entity.id.cmp(&b.entity.id))
    });
    out.dedup_by(|a, b| a.entity.id == b.entity.id);
    out.truncate(k);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_becomes_plain_terms() {
        let t = query_terms(r#"foo AND "bar" OR baz* ~qux \ x:y (unbalanced [ { NOT"#);
        assert_eq!(t, ["foo", "bar", "baz", "qux", "x", "y", "unbalanced"]);
        let q = lucene_query(&t);
        assert_eq!(
            q,
            r#""foo" OR "bar" OR "baz" OR "qux" OR "x" OR "y" OR "unbalanced""#
        );
        assert!(query_terms("?? *** :: \"\"").is_empty());
        let long = "word ".repeat(2_000) + &"x".repeat(10_000);
        assert_eq!(query_terms(&long), ["word"]);
    }

    #[test]
    fn bm25_prefers_rare_terms_and_short_documents() {
        let terms = vec!["rare".to_string(), "common".to_string()];
        let cands = vec![
            ("a".to_string(), "common common words here".to_string()),
            ("b".to_string(), "rare and common".to_string()),
            ("c".to_string(), "common".to_string()),
        ];
        let r = rank_bm25(&terms, cands, 10, 4.0, 10);
        assert_eq!(r.first().map(|x| x.1.as_str()), Some("b"));
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn phrases_match_whole_words_only() {
        let text: Vec<String> = words("Who founded the Debian Project?").collect();
        assert!(contains_phrase(&text, "Debian Project"));
        assert!(contains_phrase(&text, "debian"));
        assert!(!contains_phrase(&text, "Deb"));
        assert!(!contains_phrase(&text, ""));
    }
}
