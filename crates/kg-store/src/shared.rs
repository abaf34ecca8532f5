//! Helpers both backends share: cosine ranking, stored media types, and
//! reading CSV-mapped properties back.
//!
//! Each backend turns its own stored values (Bolt values, JSON) into
//! [`StoredValue`]s and lets [`csv_properties`] decide what they mean, so
//! that the two read the same graph back the same way.

use std::collections::{BTreeMap, HashSet};

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
pub(crate) fn top_k(mut scored: Vec<(f32, String)>, k: usize) -> Vec<(f32, String)> {
    scored.retain(|(s, _)| !s.is_nan());
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    scored.truncate(k);
    scored
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
