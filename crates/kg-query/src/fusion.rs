//! Weighted reciprocal rank fusion (Cormack, Clarke and Büttcher, SIGIR
//! 2009, with a weight per list): a document's fused score is
//! `Σ weight_i / (k + rank_i)` over the lists it is in, ranks from 1.
//!
//! Ranks, not scores, are fused: a cosine and a BM25 score live on
//! different scales, and RRF needs no normalisation of either. The weights
//! and `k` were chosen by measurement on eval/ (`cargo xtask eval`): see
//! docs/query.md.

use std::collections::HashMap;

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
}
