//! The labelled set and pairwise precision and recall.
//!
//! A labelled set is a tab-separated file, one name a line:
//! `group<TAB>type<TAB>name`, where names of one group are spellings of one
//! entity; `#` starts a comment line. Scoring is pairwise over the names:
//! a predicted pair is two names that end in one entity, a true pair two
//! names of one group; precision = true predicted pairs / predicted pairs,
//! recall = true predicted pairs / true pairs.

use std::collections::{BTreeMap, HashMap};

use kg_core::{EntityId, Label};

use crate::{resolve_all, Candidate, ResolveConfig, ResolveError};

/// One labelled name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labelled {
    /// Its true group.
    pub group: String,
    /// Its type label.
    pub entity_type: String,
    /// The name.
    pub name: String,
}

/// Reads a labelled set; `Err` names the first bad line (1-based).
pub fn parse_labelled(text: &str) -> Result<Vec<Labelled>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split('\t');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(g), Some(t), Some(n), None) if !g.is_empty() && !n.trim().is_empty() => {
                Label::new(t).map_err(|e| format!("line {}: type {t:?}: {e}", i + 1))?;
                out.push(Labelled {
                    group: g.into(),
                    entity_type: t.into(),
                    name: n.trim().into(),
                });
            }
            _ => return Err(format!("line {}: want group<TAB>type<TAB>name", i + 1)),
        }
    }
    Ok(out)
}

/// Pairwise counts and figures.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PairScores {
    /// Names scored.
    pub names: usize,
    /// Pairs predicted and true.
    pub true_positives: u64,
    /// Pairs predicted, not true.
    pub false_positives: u64,
    /// True pairs not predicted.
    pub false_negatives: u64,
}

impl PairScores {
    /// Precision (1 when nothing was predicted).
    pub fn precision(&self) -> f64 {
        let p = self.true_positives + self.false_positives;
        if p == 0 {
            1.0
        } else {
            self.true_positives as f64 / p as f64
        }
    }

    /// Recall (1 when there is nothing to find).
    pub fn recall(&self) -> f64 {
        let t = self.true_positives + self.false_negatives;
        if t == 0 {
            1.0
        } else {
            self.true_positives as f64 / t as f64
        }
    }
}

/// Scores `predicted` (one cluster key per name of `set`, in order).
pub fn pairwise(set: &[Labelled], predicted: &[String]) -> PairScores {
    let mut s = PairScores {
        names: set.len(),
        ..PairScores::default()
    };
    for i in 0..set.len() {
        for j in i + 1..set.len() {
            let truth = set[i].group == set[j].group;
            let pred = predicted.get(i).is_some() && predicted.get(i) == predicted.get(j);
            match (truth, pred) {
                (true, true) => s.true_positives += 1,
                (false, true) => s.false_positives += 1,
                (true, false) => s.false_negatives += 1,
                (false, false) => {}
            }
        }
    }
    s
}

/// Scores per type and overall (key `"all"`).
pub fn score_by_type(set: &[Labelled], predicted: &[String]) -> BTreeMap<String, PairScores> {
    let mut out = BTreeMap::new();
    out.insert("all".to_string(), pairwise(set, predicted));
    let mut types: Vec<&str> = set.iter().map(|l| l.entity_type.as_str()).collect();
    types.sort_unstable();
    types.dedup();
    for t in types {
        let (sub, pred): (Vec<Labelled>, Vec<String>) = set
            .iter()
            .zip(predicted)
            .filter(|(l, _)| l.entity_type == t)
            .map(|(l, p)| (l.clone(), p.clone()))
            .unzip();
        out.insert(t.to_string(), pairwise(&sub, &pred));
    }
    out
}

/// The cluster of each name after extraction's exact key and then
/// resolution with `config`, as the graph would have it: the id of the
/// entity the name ends in. Every name counts as one mention.
pub fn predict(set: &[Labelled], config: &ResolveConfig) -> Result<Vec<String>, ResolveError> {
    let ids: Vec<String> = set
        .iter()
        .map(|l| match Label::new(&l.entity_type) {
            Ok(label) => EntityId::new(&label, &l.name).as_str().to_string(),
            Err(_) => format!("{}:{}", l.entity_type, l.name),
        })
        .collect();
    let mut seen = HashMap::new();
    for (l, id) in set.iter().zip(&ids) {
        seen.entry(id.clone()).or_insert_with(|| Candidate {
            id: id.clone(),
            entity_type: l.entity_type.clone(),
            name: l.name.clone(),
            mentions: 1,
        });
    }
    let mut cands: Vec<Candidate> = seen.into_values().collect();
    cands.sort_by(|a, b| a.id.cmp(&b.id));
    let plan = resolve_all(config, cands)?;
    let mut into: HashMap<&str, &str> = HashMap::new();
    for g in &plan.groups {
        for (id, _, _) in &g.merged {
            into.insert(id.as_str(), g.keep.as_str());
        }
    }
    Ok(ids
        .iter()
        .map(|id| into.get(id.as_str()).map_or(id.clone(), |k| k.to_string()))
        .collect())
}

/// A Markdown table of `scores` (see [`score_by_type`]).
pub fn table(scores: &BTreeMap<String, PairScores>) -> String {
    let mut out = String::from(
        "| type | names | TP | FP | FN | precision | recall |\n|---|---|---|---|---|---|---|\n",
    );
    let mut rows: Vec<(&String, &PairScores)> =
        scores.iter().filter(|(k, _)| *k != "all").collect();
    rows.extend(scores.get_key_value("all"));
    for (k, s) in rows {
        out.push_str(&format!(
            "| {k} | {} | {} | {} | {} | {:.3} | {:.3} |\n",
            s.names,
            s.true_positives,
            s.false_positives,
            s.false_negatives,
            s.precision(),
            s.recall()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairwise_counts() {
        let set = parse_labelled("# c\na\tX\tn1\na\tX\tn2\nb\tX\tn3\n").unwrap();
        let s = pairwise(&set, &["1".into(), "1".into(), "1".into()]);
        assert_eq!(
            (s.true_positives, s.false_positives, s.false_negatives),
            (1, 2, 0)
        );
        let s = pairwise(&set, &["1".into(), "2".into(), "3".into()]);
        assert_eq!((s.precision(), s.recall()), (1.0, 0.0));
        assert!(parse_labelled("a\tX").is_err());
        assert!(parse_labelled("a\tbad type!\tn").is_err());
    }
}
