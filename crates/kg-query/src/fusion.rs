//! Fusing ranked lists into one.
//!
//! Two published families, both measured on eval/ (`cargo xtask eval`,
//! docs/query.md):
//!
//! - **Weighted reciprocal rank fusion** (Cormack, Clarke and Büttcher,
//!   SIGIR 2009, with a weight per list): a chunk's fused score is
//!   `Σ weight_i / (k + rank_i)` over the lists it is in, ranks from 1.
//!   Only ranks count, so a confident first hit and a coin-toss first hit
//!   weigh the same.
//! - **Convex combination of normalised scores** (Bruch, Gai and Ingber,
//!   "An Analysis of Fusion Functions for Hybrid Retrieval", ACM TOIS
//!   2023): `lexical · n(bm25) + (1 − lexical) · n(cosine)`, each score
//!   normalised within its list ([`Norm`]). Scores keep how far ahead a hit
//!   is, and the one parameter is learnt from few questions.
//!
//! A chunk missing from one list gets that list's lowest normalised score:
//! its true score is at most the list's last, and nothing says by how much.

use std::collections::HashMap;

use serde::Serialize;

use crate::source::ScoredId;

/// The `k` of reciprocal rank fusion (60 in the paper).
pub const RRF_K: f32 = 60.0;

/// One ranked list to fuse, best first, with its weight.
#[derive(Debug, Clone)]
pub struct Ranked<'a> {
    /// Ids, best first.
    pub ids: Vec<&'a str>,
    /// The list's weight.
    pub weight: f32,
}

/// Fuses `lists` by weighted RRF: `(id, score)` best first, ties by id.
pub fn rrf(lists: &[Ranked<'_>], k: f32) -> Vec<(String, f32)> {
    let mut scores: HashMap<&str, f32> = HashMap::new();
    for list in lists {
        if list.weight <= 0.0 {
            continue;
        }
        for (rank, id) in list.ids.iter().enumerate() {
            *scores.entry(id).or_default() += list.weight / (k + rank as f32 + 1.0);
        }
    }
    sorted(scores)
}

/// How a list's scores are brought to a common scale before a convex
/// combination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Norm {
    /// `(s − min) / (max − min)` over the list.
    MinMax,
    /// Theoretical min-max (Bruch et al.): `(s − m) / (max − m)` with `m`
    /// the least score the function can give (0 for BM25, −1 for a
    /// cosine), so a list of uniformly weak hits stays weak.
    TheoreticalMinMax,
    /// `(s − mean) / standard deviation` over the list.
    ZScore,
}

impl Norm {
    /// Every norm, for a sweep.
    pub const ALL: [Norm; 3] = [Norm::MinMax, Norm::TheoreticalMinMax, Norm::ZScore];

    /// The name used in reports and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Norm::MinMax => "min-max",
            Norm::TheoreticalMinMax => "theoretical-min-max",
            Norm::ZScore => "z-score",
        }
    }
}

/// What kind of score a list holds (for [`Norm::TheoreticalMinMax`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreKind {
    /// A cosine: at least −1.
    Cosine,
    /// BM25: at least 0.
    Bm25,
}

impl ScoreKind {
    fn floor(self) -> f32 {
        match self {
            ScoreKind::Cosine => -1.0,
            ScoreKind::Bm25 => 0.0,
        }
    }
}

/// Normalises a list's scores; also returns the value a chunk missing from
/// the list gets (the list's lowest).
pub fn normalise(list: &[ScoredId], kind: ScoreKind, norm: Norm) -> (Vec<f32>, f32) {
    if list.is_empty() {
        return (Vec::new(), 0.0);
    }
    let scores: Vec<f32> = list.iter().map(|s| s.score).collect();
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let min = scores.iter().copied().fold(f32::INFINITY, f32::min);
    let out: Vec<f32> = match norm {
        Norm::MinMax => {
            let span = max - min;
            scores
                .iter()
                .map(|s| if span > 0.0 { (s - min) / span } else { 1.0 })
                .collect()
        }
        Norm::TheoreticalMinMax => {
            let floor = kind.floor();
            let span = max - floor;
            scores
                .iter()
                .map(|s| if span > 0.0 { (s - floor) / span } else { 0.0 })
                .collect()
        }
        Norm::ZScore => {
            let n = scores.len() as f32;
            let mean = scores.iter().sum::<f32>() / n;
            let var = scores.iter().map(|s| (s - mean).powi(2)).sum::<f32>() / n;
            let sd = var.sqrt();
            scores
                .iter()
                .map(|s| if sd > 0.0 { (s - mean) / sd } else { 0.0 })
                .collect()
        }
    };
    let missing = out.iter().copied().fold(f32::INFINITY, f32::min);
    (out, missing)
}

/// Convex combination of the normalised scores of a vector list and a
/// fulltext list: `lexical · n(bm25) + (1 − lexical) · n(cosine)`, best
/// first, ties by id.
pub fn convex(
    vector: &[ScoredId],
    fulltext: &[ScoredId],
    lexical: f32,
    norm: Norm,
) -> Vec<(String, f32)> {
    let lexical = lexical.clamp(0.0, 1.0);
    let (nv, v_missing) = normalise(vector, ScoreKind::Cosine, norm);
    let (nf, f_missing) = normalise(fulltext, ScoreKind::Bm25, norm);
    let mut parts: HashMap<&str, (Option<f32>, Option<f32>)> = HashMap::new();
    for (s, n) in vector.iter().zip(&nv) {
        parts.entry(s.id.as_str()).or_default().0 = Some(*n);
    }
    for (s, n) in fulltext.iter().zip(&nf) {
        parts.entry(s.id.as_str()).or_default().1 = Some(*n);
    }
    let scores: HashMap<&str, f32> = parts
        .into_iter()
        .map(|(id, (v, f))| {
            let v = v.unwrap_or(v_missing);
            let f = f.unwrap_or(f_missing);
            (id, lexical * f + (1.0 - lexical) * v)
        })
        .collect();
    sorted(scores)
}

/// How hybrid mode fuses the vector and fulltext lists.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "method", rename_all = "kebab-case")]
pub enum Fusion {
    /// Weighted reciprocal rank fusion.
    Rrf {
        /// RRF's `k`.
        k: f32,
        /// Weight of the fulltext list; the vector list weighs 1.
        fulltext_weight: f32,
    },
    /// Convex combination of normalised scores.
    Convex {
        /// The share of the fulltext score, 0..=1; the vector score gets
        /// the rest.
        lexical: f32,
        /// How each list's scores are normalised.
        norm: Norm,
    },
}

impl Fusion {
    /// Equal-weight RRF with the paper's `k`: the baseline.
    pub const EQUAL_RRF: Fusion = Fusion::Rrf {
        k: RRF_K,
        fulltext_weight: 1.0,
    };

    /// Fuses a vector list (cosines) and a fulltext list (BM25), best
    /// first.
    pub fn fuse(&self, vector: &[ScoredId], fulltext: &[ScoredId]) -> Vec<(String, f32)> {
        match *self {
            Fusion::Rrf { k, fulltext_weight } => rrf(
                &[
                    Ranked {
                        ids: vector.iter().map(|s| s.id.as_str()).collect(),
                        weight: 1.0,
                    },
                    Ranked {
                        ids: fulltext.iter().map(|s| s.id.as_str()).collect(),
                        weight: fulltext_weight,
                    },
                ],
                k,
            ),
            Fusion::Convex { lexical, norm } => convex(vector, fulltext, lexical, norm),
        }
    }

    /// A short description, e.g. `convex(lexical 0.60, theoretical-min-max)`.
    pub fn describe(&self) -> String {
        match *self {
            Fusion::Rrf { k, fulltext_weight } => {
                format!("rrf(k {k}, fulltext weight {fulltext_weight:.2})")
            }
            Fusion::Convex { lexical, norm } => {
                format!("convex(lexical {lexical:.2}, {})", norm.as_str())
            }
        }
    }
}

fn sorted(scores: HashMap<&str, f32>) -> Vec<(String, f32)> {
    let mut out: Vec<(String, f32)> = scores
        .into_iter()
        .map(|(id, s)| (id.to_owned(), s))
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[(&str, f32)]) -> Vec<ScoredId> {
        items
            .iter()
            .map(|(id, score)| ScoredId {
                id: (*id).to_owned(),
                score: *score,
            })
            .collect()
    }

    #[test]
    fn a_document_in_both_lists_beats_one_in_one() {
        let fused = rrf(
            &[
                Ranked {
                    ids: vec!["a", "b"],
                    weight: 1.0,
                },
                Ranked {
                    ids: vec!["c", "b"],
                    weight: 1.0,
                },
            ],
            RRF_K,
        );
        assert_eq!(fused.first().map(|x| x.0.as_str()), Some("b"));
        assert_eq!(fused.len(), 3);
    }

    #[test]
    fn weights_tilt_the_order() {
        let lists = |w: f32| {
            vec![
                Ranked {
                    ids: vec!["a"],
                    weight: 1.0,
                },
                Ranked {
                    ids: vec!["b"],
                    weight: w,
                },
            ]
        };
        assert_eq!(rrf(&lists(2.0), RRF_K)[0].0, "b");
        assert_eq!(rrf(&lists(0.5), RRF_K)[0].0, "a");
        assert_eq!(rrf(&lists(0.0), RRF_K).len(), 1);
    }

    #[test]
    fn norms_scale_as_documented() {
        let bm25 = list(&[("a", 12.0), ("b", 6.0), ("c", 3.0)]);
        let (mm, missing) = normalise(&bm25, ScoreKind::Bm25, Norm::MinMax);
        assert_eq!(mm, vec![1.0, (6.0 - 3.0) / 9.0, 0.0]);
        assert_eq!(missing, 0.0);
        let (tmm, missing) = normalise(&bm25, ScoreKind::Bm25, Norm::TheoreticalMinMax);
        assert_eq!(tmm, vec![1.0, 0.5, 0.25]);
        assert_eq!(missing, 0.25);
        let cos = list(&[("a", 0.5), ("b", 0.0)]);
        let (tmm, _) = normalise(&cos, ScoreKind::Cosine, Norm::TheoreticalMinMax);
        assert_eq!(tmm, vec![1.0, 1.0 / 1.5]);
        let (z, missing) = normalise(&cos, ScoreKind::Cosine, Norm::ZScore);
        assert_eq!(z, vec![1.0, -1.0]);
        assert_eq!(missing, -1.0);
        // Degenerate lists never divide by zero.
        let one = list(&[("a", 2.0)]);
        for norm in Norm::ALL {
            let (n, _) = normalise(&one, ScoreKind::Bm25, norm);
            assert!(n[0].is_finite(), "{norm:?}");
        }
        assert_eq!(
            normalise(&[], ScoreKind::Bm25, Norm::MinMax),
            (Vec::new(), 0.0)
        );
    }

    #[test]
    fn convex_keeps_a_clear_lexical_winner_and_lets_the_vector_break_ties() {
        // BM25 is sure of "a"; the vector prefers "b" a little.
        let vector = list(&[("b", 0.52), ("a", 0.50), ("c", 0.30)]);
        let fulltext = list(&[("a", 20.0), ("c", 5.0), ("b", 4.9)]);
        let fused = Fusion::Convex {
            lexical: 0.5,
            norm: Norm::MinMax,
        }
        .fuse(&vector, &fulltext);
        assert_eq!(fused[0].0, "a");
        // Nearly tied in BM25: the vector decides between "b" and "c".
        assert_eq!(fused[1].0, "b");
        // Ranks alone (equal RRF) put the vector's favourite level with the
        // lexical winner's.
        let by_rank = Fusion::EQUAL_RRF.fuse(&vector, &fulltext);
        assert_eq!(by_rank.len(), 3);
        // lexical 1 and 0 are the single lists.
        let only = |lexical| {
            Fusion::Convex {
                lexical,
                norm: Norm::TheoreticalMinMax,
            }
            .fuse(&vector, &fulltext)
            .into_iter()
            .map(|(id, _)| id)
            .collect::<Vec<_>>()
        };
        assert_eq!(only(1.0), vec!["a", "c", "b"]);
        assert_eq!(only(0.0), vec!["b", "a", "c"]);
    }

    #[test]
    fn a_chunk_in_one_list_only_gets_that_lists_floor() {
        let vector = list(&[("v", 0.6), ("w", 0.4)]);
        let fulltext = list(&[("f", 10.0), ("w", 5.0)]);
        let fused = convex(&vector, &fulltext, 0.5, Norm::MinMax);
        let score = |id: &str| fused.iter().find(|(i, _)| i == id).map(|x| x.1);
        // v: vector 1, fulltext missing (0); f: fulltext 1, vector missing
        // (0); w: 0 in both.
        assert_eq!(score("v"), Some(0.5));
        assert_eq!(score("f"), Some(0.5));
        assert_eq!(score("w"), Some(0.0));
        assert!(Fusion::EQUAL_RRF.fuse(&[], &[]).is_empty());
    }
}
