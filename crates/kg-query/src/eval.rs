//! The retrieval evaluation's judge, as eval/README.md defines it:
//! normalisation, relevance of a chunk to a question, recall@k and MRR@k;
//! and the tuning of a mode's parameters by two-fold cross-validation
//! ([`cross_validate`]): parameters are picked on one half of the
//! questions and scored on the other, so a reported figure never comes
//! from the questions its parameters were chosen on.

use std::collections::HashSet;

use serde::Deserialize;

use crate::search::Candidates;

/// Recall is measured at this rank.
pub const RECALL_AT: usize = 5;
/// MRR counts ranks up to this one.
pub const MRR_AT: usize = 10;

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

/// Metrics of a set of questions: lexical, paraphrase and all.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Report {
    /// Questions of kind `lexical`.
    pub lexical: Metrics,
    /// The other questions (`paraphrase`).
    pub paraphrase: Metrics,
    /// All questions.
    pub all: Metrics,
}

impl Report {
    /// Adds a question of `kind` whose first relevant chunk is at `rank`
    /// (recall@[`RECALL_AT`], MRR@[`MRR_AT`]).
    pub fn add(&mut self, kind: &str, rank: Option<usize>) {
        if kind == "lexical" {
            self.lexical.add(rank, RECALL_AT, MRR_AT);
        } else {
            self.paraphrase.add(rank, RECALL_AT, MRR_AT);
        }
        self.all.add(rank, RECALL_AT, MRR_AT);
    }

    /// Adds every question of `other`.
    pub fn merge(&mut self, other: &Report) {
        for (a, b) in [
            (&mut self.lexical, &other.lexical),
            (&mut self.paraphrase, &other.paraphrase),
            (&mut self.all, &other.all),
        ] {
            a.questions += b.questions;
            a.recall_sum += b.recall_sum;
            a.rr_sum += b.rr_sum;
        }
    }

    /// The order parameters are chosen by: recall@5 first, then MRR@10.
    fn key(&self) -> (f64, f64) {
        (self.all.recall(), self.all.mrr())
    }
}

/// One question with its candidate lists and the ids of the chunks (among
/// them) that are relevant to it.
#[derive(Debug, Clone)]
pub struct Case {
    /// The question.
    pub question: Question,
    /// What retrieval found before fusion.
    pub candidates: Candidates,
    /// Relevant chunk ids.
    pub relevant: HashSet<String>,
}

impl Case {
    /// The 1-based rank of the first relevant id of `ranking`.
    pub fn first_relevant(&self, ranking: &[(String, f32)]) -> Option<usize> {
        ranking
            .iter()
            .position(|(id, _)| self.relevant.contains(id))
            .map(|i| i + 1)
    }
}

/// Scores `rank` (a ranking per case) on `cases`.
pub fn score<'a>(
    cases: impl IntoIterator<Item = &'a Case>,
    rank: impl Fn(&Case) -> Vec<(String, f32)>,
) -> Report {
    let mut report = Report::default();
    for case in cases {
        report.add(&case.question.kind, case.first_relevant(&rank(case)));
    }
    report
}

/// Two halves of `cases`, stratified: the questions sorted by document,
/// kind and id go alternately to the first and the second half, so each
/// (document, kind) is split evenly (an odd one's extra question goes to
/// alternate halves). Returns the indices of each half.
pub fn halves(cases: &[Case]) -> [Vec<usize>; 2] {
    let mut order: Vec<usize> = (0..cases.len()).collect();
    let key = |i: usize| {
        cases
            .get(i)
            .map(|c| {
                (
                    c.question.document.clone(),
                    c.question.kind.clone(),
                    c.question.id.clone(),
                )
            })
            .unwrap_or_default()
    };
    order.sort_by_key(|&i| key(i));
    let mut out = [Vec::new(), Vec::new()];
    for (n, i) in order.into_iter().enumerate() {
        if let Some(half) = out.get_mut(n % 2) {
            half.push(i);
        }
    }
    out
}

/// The best of `grid` on the cases at `indices` (recall@5, then MRR@10;
/// the earlier grid entry on a tie), with its report there.
pub fn best_of<T: Clone>(
    cases: &[Case],
    indices: &[usize],
    grid: &[T],
    rank: &impl Fn(&Case, &T) -> Vec<(String, f32)>,
) -> Option<(T, Report)> {
    let mut best: Option<(T, Report)> = None;
    for p in grid {
        let report = score(indices.iter().filter_map(|&i| cases.get(i)), |c| rank(c, p));
        if best.as_ref().is_none_or(|(_, b)| report.key() > b.key()) {
            best = Some((p.clone(), report));
        }
    }
    best
}

/// What [`cross_validate`] found.
#[derive(Debug, Clone)]
pub struct CrossValidated<T> {
    /// The parameters chosen on each half.
    pub chosen: [T; 2],
    /// Each half scored with the parameters chosen on the other half,
    /// together: the figure to report.
    pub held_out: Report,
    /// The parameters best on all questions (what to ship), and their
    /// (optimistic) report.
    pub on_all: (T, Report),
}

/// Two-fold cross-validation of a parameter grid: choose on one half of
/// the questions ([`halves`]), score on the other, and the other way
/// round. `None` when the grid or the cases are empty.
pub fn cross_validate<T: Clone>(
    cases: &[Case],
    grid: &[T],
    rank: impl Fn(&Case, &T) -> Vec<(String, f32)>,
) -> Option<CrossValidated<T>> {
    let [a, b] = halves(cases);
    let (on_a, _) = best_of(cases, &a, grid, &rank)?;
    let (on_b, _) = best_of(cases, &b, grid, &rank)?;
    let mut held_out = score(b.iter().filter_map(|&i| cases.get(i)), |c| rank(c, &on_a));
    held_out.merge(&score(a.iter().filter_map(|&i| cases.get(i)), |c| {
        rank(c, &on_b)
    }));
    let all: Vec<usize> = (0..cases.len()).collect();
    let on_all = best_of(cases, &all, grid, &rank)?;
    Some(CrossValidated {
        chosen: [on_a, on_b],
        held_out,
        on_all,
    })
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

    fn case(id: &str, kind: &str, document: &str, relevant: &[&str]) -> Case {
        Case {
            question: Question {
                id: id.into(),
                question: "?".into(),
                kind: kind.into(),
                document: document.into(),
                evidence: Vec::new(),
            },
            candidates: Candidates::default(),
            relevant: relevant.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn halves_are_stratified_and_disjoint() {
        let mut cases = Vec::new();
        for doc in ["a.pdf", "b.pdf"] {
            for kind in ["lexical", "paraphrase"] {
                for n in 0..5 {
                    cases.push(case(&format!("{doc}-{kind}-{n}"), kind, doc, &[]));
                }
            }
        }
        let [one, two] = halves(&cases);
        assert_eq!(one.len() + two.len(), cases.len());
        assert_eq!(one.len(), 10);
        assert!(one.iter().all(|i| !two.contains(i)));
        for doc in ["a.pdf", "b.pdf"] {
            for kind in ["lexical", "paraphrase"] {
                let n = one
                    .iter()
                    .filter(|&&i| {
                        cases[i].question.document == doc && cases[i].question.kind == kind
                    })
                    .count();
                assert!((2..=3).contains(&n), "{doc} {kind}: {n}");
            }
        }
    }

    #[test]
    fn cross_validation_scores_each_half_with_the_other_halfs_choice() {
        // Sorted by id, a1 a3 a5 a7 make one half and a2 a4 a6 a8 the
        // other. Parameter 0 answers a1 a2 a3 a5, parameter 1 a4 a6 a7 a8:
        // each half prefers another parameter (3 of 4), and each scores 1
        // of 4 with the other half's choice.
        let cases: Vec<Case> = (1..=8)
            .map(|n| case(&format!("a{n}"), "lexical", "d", &["good"]))
            .collect();
        let rank = |c: &Case, p: &usize| -> Vec<(String, f32)> {
            let by_zero = ["a1", "a2", "a3", "a5"].contains(&c.question.id.as_str());
            let first = if by_zero == (*p == 0) { "good" } else { "bad" };
            let mut out = vec![(first.to_string(), 1.0)];
            out.extend((0..10).map(|i| (format!("other{i}"), 0.5)));
            out
        };
        let [one, two] = halves(&cases);
        let ids = |h: &[usize]| {
            h.iter()
                .map(|&i| cases[i].question.id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&one), ["a1", "a3", "a5", "a7"]);
        assert_eq!(ids(&two), ["a2", "a4", "a6", "a8"]);
        let cv = cross_validate(&cases, &[0usize, 1], rank).unwrap();
        assert_eq!(cv.chosen, [0, 1]);
        assert_eq!(cv.held_out.all.questions, 8);
        assert!((cv.held_out.all.recall() - 0.25).abs() < 1e-9);
        // On all questions the two tie; the first grid entry wins.
        assert_eq!(cv.on_all.0, 0);
        assert!((cv.on_all.1.all.recall() - 0.5).abs() < 1e-9);
        assert!(cross_validate(&cases, &[] as &[usize], |_, _| Vec::new()).is_none());
    }

    #[test]
    fn reports_keep_kinds_apart() {
        let mut r = Report::default();
        r.add("lexical", Some(1));
        r.add("paraphrase", Some(6));
        r.add("paraphrase", None);
        assert_eq!((r.lexical.questions, r.paraphrase.questions), (1, 2));
        assert_eq!(r.all.recall(), 1.0 / 3.0);
        assert!((r.paraphrase.mrr() - 1.0 / 12.0).abs() < 1e-9);
        let mut twice = r;
        twice.merge(&r);
        assert_eq!(twice.all.questions, 6);
        assert_eq!(twice.all.recall(), r.all.recall());
    }
}
