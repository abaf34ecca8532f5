//! The retrieval evaluation's judge, as eval/README.md defines it:
//! normalisation, relevance of a chunk to a question, recall@k and MRR@k.

use serde::Deserialize;

/// One question of `eval/retrieval/questions.jsonl`.
#[derive(Debug, Clone, Deserialize)]
pub struct Question {
    /// `hist-003`...
    pub id: String,
    /// The question.
    pub question: String,
    /// `lexical` or `paraphrase`.
    pub kind: String,
    /// The document that answers it.
    #[serde(default)]
    pub document: String,
    /// Verbatim spans; a chunk containing one is relevant.
    #[serde(default)]
    pub evidence: Vec<String>,
}

/// `normalise(s)` of eval/README.md: hyphen + line break joined, curly
/// quotes straightened, white space runs collapsed and trimmed, lowercase.
pub fn normalise(s: &str) -> String {
    // 1. Hyphen + line break (+ leading blanks of the next line) removed.
    let mut joined = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '-' && matches!(chars.peek(), Some('\n' | '\r')) {
            if chars.next() == Some('\r') && chars.peek() == Some(&'\n') {
                chars.next();
            }
            while matches!(chars.peek(), Some(' ' | '\t')) {
                chars.next();
            }
            continue;
        }
        joined.push(c);
    }
    // 2. Curly quotes.
    let straight: String = joined
        .chars()
        .map(|c| match c {
            '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' => '\'',
            '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' => '"',
            other => other,
        })
        .collect();
    // 3. White space runs; 4. lowercase.
    straight
        .split(char::is_whitespace)
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Whether a chunk with `text` is relevant to `question`.
pub fn relevant(question: &Question, text: &str) -> bool {
    let t = normalise(text);
    question
        .evidence
        .iter()
        .any(|span| t.contains(&normalise(span)))
}

/// The 1-based rank of the first relevant chunk among `texts`, if any.
pub fn first_relevant(question: &Question, texts: &[String]) -> Option<usize> {
    texts
        .iter()
        .position(|t| relevant(question, t))
        .map(|i| i + 1)
}

/// Recall@k and MRR@m accumulated over questions.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Metrics {
    /// Questions scored.
    pub questions: usize,
    /// Sum of recall@k (0 or 1 each).
    pub recall_sum: f64,
    /// Sum of reciprocal ranks (0 beyond the cut-off).
    pub rr_sum: f64,
}

impl Metrics {
    /// Adds one question whose first relevant chunk is at `rank`.
    pub fn add(&mut self, rank: Option<usize>, recall_at: usize, mrr_at: usize) {
        self.questions += 1;
        if let Some(r) = rank {
            if r <= recall_at {
                self.recall_sum += 1.0;
            }
            if r <= mrr_at {
                self.rr_sum += 1.0 / r as f64;
            }
        }
    }

    /// Mean recall.
    pub fn recall(&self) -> f64 {
        self.recall_sum / self.questions.max(1) as f64
    }

    /// Mean reciprocal rank.
    pub fn mrr(&self) -> f64 {
        self.rr_sum / self.questions.max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(evidence: &[&str]) -> Question {
        Question {
            id: "t".into(),
            question: "?".into(),
            kind: "lexical".into(),
            document: "d".into(),
            evidence: evidence.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn normalisation_follows_the_readme() {
        assert_eq!(normalise("argu-\n  ment"), "argument");
        assert_eq!(normalise("argu-\r\n\tment"), "argument");
        assert_eq!(
            normalise("\u{201C}Hi\u{201D}  it\u{2019}s\n\u{a0}OK "),
            "\"hi\" it's ok"
        );
        assert_eq!(normalise("a\u{2212}b"), "a\u{2212}b");
    }

    #[test]
    fn relevance_and_metrics() {
        let question = q(&["Named for the plastic dinosaur"]);
        let texts = vec![
            "nothing here".to_string(),
            "Rex was named   for the plastic\ndinosaur in Toy Story".to_string(),
        ];
        assert_eq!(first_relevant(&question, &texts), Some(2));
        let mut m = Metrics::default();
        m.add(Some(2), 5, 10);
        m.add(None, 5, 10);
        m.add(Some(7), 5, 10);
        assert!((m.recall() - 1.0 / 3.0).abs() < 1e-9);
        assert!((m.mrr() - (0.5 + 1.0 / 7.0) / 3.0).abs() < 1e-9);
    }
}
