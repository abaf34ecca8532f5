//! Validated identifiers: node labels, relationship types and property keys.
//!
//! Labels, relationship types and property keys reach kg from outside: an LLM
//! names entity types, a CSV header names columns. Cypher cannot take them as
//! parameters, so they end up in query text. These types are the only way to
//! get such a name into a query: a value of them is, by construction, made of
//! ASCII letters, digits and `_` only, starts with a letter and is at most
//! [`MAX_IDENT_LEN`] bytes long, so it cannot close a backtick, a string, a map
//! or a comment, whatever the input was.
//!
//! Normalisation is forgiving about style and strict about content:
//! - the raw text is NFKD-decomposed and combining marks dropped (`Café` →
//!   `Cafe`);
//! - words are split on spaces, `_`, `-`, `.` and on lower→upper case changes
//!   (`worksFor` → `works`, `For`);
//! - any other character (quotes, backticks, braces, brackets, parentheses,
//!   `;`, `/`, `:`, newlines, symbols, letters with no ASCII form) makes the
//!   value invalid: such a name is garbage from the LLM or the file, and
//!   guessing at it would hide the problem.
//!
//! ```
//! use kg_core::{Label, RelType, PropertyKey};
//! assert_eq!(Label::new("person").unwrap().as_str(), "Person");
//! assert_eq!(Label::new("geo location").unwrap().as_str(), "GeoLocation");
//! assert_eq!(RelType::new("works for").unwrap().as_str(), "WORKS_FOR");
//! assert_eq!(RelType::new("worksFor").unwrap().as_str(), "WORKS_FOR");
//! assert_eq!(PropertyKey::new("Lat Degrees").unwrap().as_str(), "lat_degrees");
//! assert!(Label::new("Person`}) DETACH DELETE n //").is_err());
//! ```

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// The longest identifier kg accepts, in bytes.
pub const MAX_IDENT_LEN: usize = 64;

/// Labels the lexical graph uses itself; an entity type must not take them.
pub const RESERVED_LABELS: &[&str] = &["Document", "Chunk", "Entity"];

/// Relationship types the lexical graph uses itself; an extracted relation
/// must not take one (an entity `MENTIONS` an entity would read as a chunk
/// mentioning it).
pub const RESERVED_REL_TYPES: &[&str] = &["HAS_CHUNK", "NEXT_CHUNK", "MENTIONS"];

/// Why a raw name could not be made into an identifier. The message quotes
/// the offending value (escaped, so control characters stay visible).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentError {
    /// Nothing usable: empty, or only separators.
    #[error("{kind} {raw:?} is empty once normalised")]
    Empty {
        /// What was being made ("label", "relationship type", "property key").
        kind: &'static str,
        /// The raw input.
        raw: String,
    },
    /// A character that has no place in an identifier.
    #[error("{kind} {raw:?} contains {ch:?}, which is not allowed in an identifier")]
    BadChar {
        /// What was being made.
        kind: &'static str,
        /// The raw input.
        raw: String,
        /// The first offending character.
        ch: char,
    },
    /// Starts with a digit once normalised.
    #[error("{kind} {raw:?} must start with a letter")]
    LeadingDigit {
        /// What was being made.
        kind: &'static str,
        /// The raw input.
        raw: String,
    },
    /// Longer than [`MAX_IDENT_LEN`] once normalised.
    #[error("{kind} {raw:?} is longer than {MAX_IDENT_LEN} characters")]
    TooLong {
        /// What was being made.
        kind: &'static str,
        /// The raw input.
        raw: String,
    },
}

/// Splits a raw name into ASCII alphanumeric words, or says why it can't.
fn words(kind: &'static str, raw: &str) -> Result<Vec<String>, IdentError> {
    let mut words: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut prev_lower = false;
    for ch in raw.nfkd() {
        if is_combining_mark(ch) {
            continue;
        }
        if ch.is_ascii_alphanumeric() {
            if ch.is_ascii_uppercase() && prev_lower && !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            prev_lower = ch.is_ascii_lowercase();
            current.push(ch);
        } else if matches!(ch, ' ' | '\t' | '_' | '-' | '.') {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            prev_lower = false;
        } else {
            return Err(IdentError::BadChar {
                kind,
                raw: raw.to_owned(),
                ch,
            });
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    if words.is_empty() {
        return Err(IdentError::Empty {
            kind,
            raw: raw.to_owned(),
        });
    }
    Ok(words)
}

fn finish(kind: &'static str, raw: &str, out: String) -> Result<String, IdentError> {
    if out.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        return Err(IdentError::LeadingDigit {
            kind,
            raw: raw.to_owned(),
        });
    }
    if out.len() > MAX_IDENT_LEN {
        return Err(IdentError::TooLong {
            kind,
            raw: raw.to_owned(),
        });
    }
    Ok(out)
}

macro_rules! ident_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $build:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Normalises `raw` into this identifier, or says why it can't.
            pub fn new(raw: &str) -> Result<Self, IdentError> {
                let words = words($kind, raw)?;
                let build: fn(Vec<String>) -> String = $build;
                finish($kind, raw, build(words)).map(Self)
            }

            /// The identifier, safe to place in Cypher (see [`Self::cypher`]).
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The identifier quoted for Cypher: `` `Name` ``. The backticks are
            /// belt and braces; the content is alphanumeric and `_` only.
            pub fn cypher(&self) -> String {
                format!("`{}`", self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdentError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        /// Deserialising validates: a JSON Lines file edited by hand cannot
        /// smuggle an unsafe name past the type.
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::new(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

fn upper_camel(words: Vec<String>) -> String {
    let mut out = String::new();
    for w in words {
        let mut chars = w.chars();
        if let Some(first) = chars.next() {
            out.push(first.to_ascii_uppercase());
            out.extend(chars.map(|c| c.to_ascii_lowercase()));
        }
    }
    out
}

fn upper_snake(words: Vec<String>) -> String {
    words
        .iter()
        .map(|w| w.to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join("_")
}

fn lower_snake(words: Vec<String>) -> String {
    words
        .iter()
        .map(|w| w.to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join("_")
}

ident_type!(
    /// A node label in UpperCamel case (`Person`, `GeoLocation`).
    Label,
    "label",
    upper_camel
);
ident_type!(
    /// A relationship type in UPPER_SNAKE case (`WORKS_FOR`).
    RelType,
    "relationship type",
    upper_snake
);
ident_type!(
    /// A property key in lower_snake case (`lat_degrees`).
    PropertyKey,
    "property key",
    lower_snake
);

impl Label {
    /// Whether this label is one the lexical graph uses itself
    /// (`Document`, `Chunk`, `Entity`); an entity type must not be one.
    pub fn is_reserved(&self) -> bool {
        RESERVED_LABELS.contains(&self.0.as_str())
    }
}

impl RelType {
    /// Whether this type is one the lexical graph uses itself
    /// (`HAS_CHUNK`, `NEXT_CHUNK`, `MENTIONS`); an extracted relation must
    /// not be one.
    pub fn is_reserved(&self) -> bool {
        RESERVED_REL_TYPES.contains(&self.0.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn is_safe(s: &str, first: fn(u8) -> bool, rest: fn(u8) -> bool) -> bool {
        let b = s.as_bytes();
        !b.is_empty() && b.len() <= MAX_IDENT_LEN && first(b[0]) && b.iter().all(|&c| rest(c))
    }

    #[test]
    fn normalises_common_styles() {
        for (raw, want) in [
            ("person", "Person"),
            ("PERSON", "Person"),
            ("geo_location", "GeoLocation"),
            ("Geo-Location", "GeoLocation"),
            ("  Organisation ", "Organisation"),
            ("Café", "Cafe"),
            ("Person2", "Person2"),
        ] {
            assert_eq!(Label::new(raw).unwrap().as_str(), want, "{raw}");
        }
        for (raw, want) in [
            ("works for", "WORKS_FOR"),
            ("worksFor", "WORKS_FOR"),
            ("WORKS_FOR", "WORKS_FOR"),
            ("founded-by", "FOUNDED_BY"),
            ("is.part.of", "IS_PART_OF"),
        ] {
            assert_eq!(RelType::new(raw).unwrap().as_str(), want, "{raw}");
        }
        assert_eq!(
            PropertyKey::new("Lat Degrees").unwrap().as_str(),
            "lat_degrees"
        );
        assert_eq!(PropertyKey::new("iata").unwrap().as_str(), "iata");
    }

    #[test]
    fn rejects_hostile_strings_naming_them() {
        let hostile = [
            "Person`}) DETACH DELETE n //",
            "`",
            "Person`",
            "a'b",
            "a\"b",
            "}",
            "Person})",
            "line\nbreak",
            "x // comment",
            "a;b",
            "$param",
            "a:B",
            "(n)",
            "[r]",
            "日本",
            "\u{0}",
            "\u{202e}Person",
        ];
        for raw in hostile {
            let err = Label::new(raw).expect_err(raw);
            assert!(err.to_string().contains(&format!("{raw:?}")), "{err}");
            assert!(RelType::new(raw).is_err(), "{raw}");
            assert!(PropertyKey::new(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn rejects_empty_digit_and_long() {
        assert!(matches!(Label::new(""), Err(IdentError::Empty { .. })));
        assert!(matches!(Label::new(" _-. "), Err(IdentError::Empty { .. })));
        assert!(matches!(
            Label::new("9lives"),
            Err(IdentError::LeadingDigit { .. })
        ));
        let long = "a".repeat(MAX_IDENT_LEN + 1);
        assert!(matches!(Label::new(&long), Err(IdentError::TooLong { .. })));
    }

    #[test]
    fn reserved_labels_are_flagged() {
        assert!(Label::new("document").unwrap().is_reserved());
        assert!(!Label::new("Person").unwrap().is_reserved());
        // An LLM's "mentions" normalises onto the lexical graph's own type.
        assert!(RelType::new("mentions").unwrap().is_reserved());
        assert!(RelType::new("next chunk").unwrap().is_reserved());
        assert!(!RelType::new("mentioned_in").unwrap().is_reserved());
    }

    #[test]
    fn deserialising_validates() {
        let ok: Label = serde_json::from_str("\"person\"").unwrap();
        assert_eq!(ok.as_str(), "Person");
        assert!(serde_json::from_str::<Label>("\"a`b\"").is_err());
    }

    proptest! {
        #[test]
        fn any_string_is_rejected_or_safe(raw in any::<String>()) {
            if let Ok(l) = Label::new(&raw) {
                prop_assert!(is_safe(l.as_str(), |c| c.is_ascii_uppercase(), |c| c.is_ascii_alphanumeric()), "{:?}", l);
                prop_assert!(!l.cypher()[1..l.cypher().len() - 1].contains('`'));
            }
            if let Ok(r) = RelType::new(&raw) {
                prop_assert!(is_safe(r.as_str(), |c| c.is_ascii_uppercase(), |c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_'), "{:?}", r);
            }
            if let Ok(k) = PropertyKey::new(&raw) {
                prop_assert!(is_safe(k.as_str(), |c| c.is_ascii_lowercase(), |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_'), "{:?}", k);
            }
        }

        #[test]
        fn hostile_fragments_never_survive(
            prefix in "[A-Za-z ]{0,10}",
            bad in prop::sample::select(vec!["`", "'", "\"", "}", "{", ")", "(", "\n", "\r", "//", ";", ":", "$", "\\", "\u{0}", "]", "|"]),
            suffix in "\\PC{0,10}",
        ) {
            let raw = format!("{prefix}{bad}{suffix}");
            prop_assert!(Label::new(&raw).is_err());
            prop_assert!(RelType::new(&raw).is_err());
            prop_assert!(PropertyKey::new(&raw).is_err());
        }

        #[test]
        fn normalising_is_idempotent(raw in "[A-Za-z][A-Za-z0-9 _.-]{0,40}") {
            // Labels re-parse to a valid label (single-letter words may fold
            // case differently); relation types and keys are fixed points.
            if let Ok(l) = Label::new(&raw) {
                prop_assert!(Label::new(l.as_str()).is_ok());
            }
            if let Ok(k) = PropertyKey::new(&raw) {
                prop_assert_eq!(PropertyKey::new(k.as_str()).unwrap(), k);
            }
            if let Ok(r) = RelType::new(&raw) {
                prop_assert_eq!(RelType::new(r.as_str()).unwrap(), r);
            }
        }
    }
}
