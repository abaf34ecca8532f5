//! Helpers both backends share: cosine ranking, stored media types, and
//! reading CSV-mapped properties back.
//!
//! Each backend turns its own stored values (Bolt values, JSON) into
//! [`StoredValue`]s and lets [`csv_properties`] decide what they mean, so
//! that the two read the same graph back the same way.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashSet};

use kg_core::{MediaType, PropertyKey, PropertyValue};

use crate::plan::RESERVED_PROPERTY_KEYS;

/// Cosine similarity of two vectors; NaN when their lengths differ or they
/// are empty, 0 when one is all zeros.
pub(crate) fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() || a.is_empty() {
        return f32::NAN;
    }
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    (dot / (na.sqrt() * nb.sqrt())) as f32
}

/// Keeps the `k` best `(score, id)` pairs, best first (NaN scores dropped,
/// ties by id).
pub(crate) fn top_k(scored: Vec<(f32, String)>, k: usize) -> Vec<(f32, String)> {
    let mut best = TopK::new(k);
    for (score, id) in scored {
        if best.admits(score, &id) {
            best.push_owned(score, id);
        }
    }
    best.into_sorted()
}

/// A kept `(score, id)`, ordered so that the worst (lowest score, then
/// highest id) is the greatest: the top of a max-heap is the first to go.
#[derive(Debug)]
struct Kept(f32, String);

impl Ord for Kept {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .0
            .total_cmp(&self.0)
            .then_with(|| self.1.cmp(&other.1))
    }
}

impl PartialOrd for Kept {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Kept {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Kept {}

/// The `k` best `(score, id)` pairs of a stream, as [`top_k`] ranks them
/// (best score first, ties by id, NaN never kept), in a heap of at most
/// `k`: a scan asks [`TopK::admits`] with a borrowed id and allocates one
/// only for a pair that gets in.
#[derive(Debug)]
pub(crate) struct TopK {
    k: usize,
    heap: BinaryHeap<Kept>,
}

impl TopK {
    /// An empty selection of at most `k`.
    pub(crate) fn new(k: usize) -> Self {
        Self {
            k,
            heap: BinaryHeap::with_capacity(k.min(4096) + 1),
        }
    }

    /// Whether a pair with `score` could get in, whatever its id: the
    /// selection is not full, or `score` is at least the worst kept.
    pub(crate) fn admits_score(&self, score: f32) -> bool {
        if score.is_nan() || self.k == 0 {
            return false;
        }
        match self.heap.peek() {
            Some(worst) if self.heap.len() >= self.k => score.total_cmp(&worst.0).is_ge(),
            _ => true,
        }
    }

    /// Whether `(score, id)` gets in: it ranks before the worst kept, or
    /// the selection is not full.
    pub(crate) fn admits(&self, score: f32, id: &str) -> bool {
        if !self.admits_score(score) {
            return false;
        }
        match self.heap.peek() {
            Some(worst) if self.heap.len() >= self.k => {
                score.total_cmp(&worst.0).is_gt() || id < worst.1.as_str()
            }
            _ => true,
        }
    }

    /// Keeps `(score, id)`, dropping the worst if the selection is full;
    /// call it only for a pair [`TopK::admits`].
    pub(crate) fn push_owned(&mut self, score: f32, id: String) {
        if self.heap.len() >= self.k {
            self.heap.pop();
        }
        self.heap.push(Kept(score, id));
    }

    /// The kept pairs, best first.
    pub(crate) fn into_sorted(self) -> Vec<(f32, String)> {
        // Ascending in `Kept`'s order is best first.
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|Kept(score, id)| (score, id))
            .collect()
    }
}

/// The Euclidean norm of `v`, in `f64`.
pub(crate) fn norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt()
}

/// Cosine of `q` (whose norm is `q_norm`) with `v`, as [`cosine`] defines
/// it (NaN when the lengths differ or are 0, 0 when a vector is all
/// zeros), summed in eight `f32` lanes so that the compiler vectorises the
/// loop; the lanes are added up in `f64`.
pub(crate) fn cosine_with_norm(q: &[f32], q_norm: f64, v: &[f32]) -> f32 {
    if q.len() != v.len() || q.is_empty() {
        return f32::NAN;
    }
    const LANES: usize = 8;
    let (mut dot, mut nv) = ([0f32; LANES], [0f32; LANES]);
    let (qc, vc) = (q.chunks_exact(LANES), v.chunks_exact(LANES));
    let (q_rest, v_rest) = (qc.remainder(), vc.remainder());
    for (a, b) in qc.zip(vc) {
        for (((d, n), x), y) in dot.iter_mut().zip(nv.iter_mut()).zip(a).zip(b) {
            *d += x * y;
            *n += y * y;
        }
    }
    let mut d: f64 = dot.iter().map(|x| f64::from(*x)).sum();
    let mut n: f64 = nv.iter().map(|x| f64::from(*x)).sum();
    for (x, y) in q_rest.iter().zip(v_rest) {
        d += f64::from(*x) * f64::from(*y);
        n += f64::from(*y) * f64::from(*y);
    }
    if q_norm == 0.0 || n == 0.0 {
        return 0.0;
    }
    (d / (q_norm * n.sqrt())) as f32
}

/// Decodes a little-endian `f32` blob into `out` (cleared first); false,
/// leaving `out` empty, when the blob's length is not a multiple of 4.
pub(crate) fn decode_vector_into(blob: &[u8], out: &mut Vec<f32>) -> bool {
    out.clear();
    let words = blob.chunks_exact(4);
    if !words.remainder().is_empty() {
        return false;
    }
    out.extend(words.map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])));
    true
}

/// A stored media type name; anything unknown reads as text.
pub(crate) fn media_type(s: Option<&str>) -> MediaType {
    s.and_then(MediaType::from_name).unwrap_or(MediaType::Text)
}

/// A property value as a backend stored it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StoredValue {
    /// A string (a date too: `kg_date_keys` tells which).
    Str(String),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A list of strings (`kg_date_keys`).
    StrList(Vec<String>),
    /// Anything else (not a CSV property kg writes).
    Other,
}

/// The user properties, `kg_source` and `kg_line` of a CSV-mapped node or
/// relationship, from its stored property map: keys kg reserves are left
/// out, strings named in `kg_date_keys` are dates, keys that are not valid
/// identifiers and values of other types are skipped.
pub(crate) fn csv_properties(
    stored: impl IntoIterator<Item = (String, StoredValue)>,
) -> (BTreeMap<PropertyKey, PropertyValue>, String, u64) {
    let stored: Vec<(String, StoredValue)> = stored.into_iter().collect();
    let dates: HashSet<&str> = stored
        .iter()
        .find_map(|(k, v)| match (k.as_str(), v) {
            ("kg_date_keys", StoredValue::StrList(l)) => {
                Some(l.iter().map(String::as_str).collect())
            }
            _ => None,
        })
        .unwrap_or_default();
    let mut out = BTreeMap::new();
    let (mut source, mut line) = (String::new(), 0u64);
    for (key, value) in &stored {
        match (key.as_str(), value) {
            ("kg_source", StoredValue::Str(s)) => source.clone_from(s),
            ("kg_line", StoredValue::Int(i)) => line = u64::try_from(*i).unwrap_or(0),
            (k, _) if RESERVED_PROPERTY_KEYS.contains(&k) => {}
            (k, value) => {
                let Ok(pk) = PropertyKey::new(k) else {
                    continue;
                };
                let pv = match value {
                    StoredValue::Str(s) if dates.contains(k) => PropertyValue::Date(s.clone()),
                    StoredValue::Str(s) => PropertyValue::String(s.clone()),
                    StoredValue::Int(i) => PropertyValue::Int(*i),
                    StoredValue::Float(f) => PropertyValue::Float(*f),
                    StoredValue::Bool(b) => PropertyValue::Bool(*b),
                    StoredValue::StrList(_) | StoredValue::Other => continue,
                };
                out.insert(pk, pv);
            }
        }
    }
    (out, source, line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_and_top_k() {
        assert!((cosine(&[1.0, 0.0], &[1.0, 0.0]) - 1.0).abs() < 1e-6);
        assert!(cosine(&[1.0, 0.0], &[0.0, 1.0]).abs() < 1e-6);
        assert!(cosine(&[1.0], &[1.0, 0.0]).is_nan());
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
        let top = top_k(
            vec![
                (0.1, "a".into()),
                (0.9, "b".into()),
                (f32::NAN, "c".into()),
                (0.5, "d".into()),
            ],
            2,
        );
        assert_eq!(top, vec![(0.9, "b".to_string()), (0.5, "d".to_string())]);
    }

    #[test]
    fn the_lane_cosine_agrees_with_the_plain_one() {
        let q: Vec<f32> = (0..19).map(|i| (i as f32 * 0.37).sin()).collect();
        let v: Vec<f32> = (0..19).map(|i| (i as f32 * 0.11).cos()).collect();
        let fast = cosine_with_norm(&q, norm(&q), &v);
        assert!((fast - cosine(&q, &v)).abs() < 1e-6, "{fast}");
        assert!(cosine_with_norm(&q, norm(&q), &v[..18]).is_nan());
        assert_eq!(cosine_with_norm(&q, norm(&q), &[0.0; 19]), 0.0);
        assert!(cosine_with_norm(&[], 0.0, &[]).is_nan());
        let mut out = vec![9.0];
        assert!(decode_vector_into(&[0, 0, 128, 63, 0, 0, 0, 64], &mut out));
        assert_eq!(out, vec![1.0, 2.0]);
        assert!(!decode_vector_into(&[0, 0, 128], &mut out));
        assert!(out.is_empty());
    }

    #[test]
    fn top_k_keeps_the_best_and_breaks_ties_by_id() {
        let mut best = TopK::new(3);
        for (score, id) in [(0.5, "e"), (0.9, "d"), (0.5, "b"), (0.1, "a"), (0.5, "c")] {
            if best.admits(score, id) {
                best.push_owned(score, id.to_owned());
            }
        }
        assert!(!best.admits(0.5, "z"), "a tie with a later id stays out");
        assert!(best.admits(0.5, "a"), "a tie with an earlier id gets in");
        assert!(!best.admits_score(0.4));
        assert!(!best.admits(f32::NAN, "a"));
        assert_eq!(
            best.into_sorted(),
            vec![(0.9, "d".into()), (0.5, "b".into()), (0.5, "c".into())]
        );
        assert!(top_k(vec![(1.0, "a".into())], 0).is_empty());
    }

    #[test]
    fn csv_properties_read_back_typed_without_reserved_keys() {
        let s = |v: &str| StoredValue::Str(v.into());
        let (props, source, line) = csv_properties([
            ("id".to_owned(), s("n1")),
            ("key".to_owned(), s("LHR")),
            ("name".to_owned(), s("Heathrow")),
            ("opened".to_owned(), s("1946-05-31")),
            ("runways".to_owned(), StoredValue::Int(2)),
            ("lat".to_owned(), StoredValue::Float(51.47)),
            ("hub".to_owned(), StoredValue::Bool(true)),
            ("embedding".to_owned(), StoredValue::Other),
            (
                "kg_date_keys".to_owned(),
                StoredValue::StrList(vec!["opened".into()]),
            ),
            ("kg_source".to_owned(), s("airports.csv")),
            ("kg_line".to_owned(), StoredValue::Int(7)),
        ]);
        assert_eq!((source.as_str(), line), ("airports.csv", 7));
        let key = |k: &str| PropertyKey::new(k).unwrap();
        let want: BTreeMap<PropertyKey, PropertyValue> = [
            (key("name"), PropertyValue::String("Heathrow".into())),
            (key("opened"), PropertyValue::Date("1946-05-31".into())),
            (key("runways"), PropertyValue::Int(2)),
            (key("lat"), PropertyValue::Float(51.47)),
            (key("hub"), PropertyValue::Bool(true)),
        ]
        .into_iter()
        .collect();
        assert_eq!(props, want);
        assert_eq!(media_type(Some("pdf")), MediaType::Pdf);
        assert_eq!(media_type(Some("docx")), MediaType::Text);
        assert_eq!(media_type(None), MediaType::Text);
    }
}
