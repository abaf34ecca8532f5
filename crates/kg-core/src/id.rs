//! Content-addressed ids.
//!
//! Every id is a hash of the normalised content of the thing and the id of its
//! parent, so the same input always yields the same ids and writing it twice
//! MERGEs onto the same nodes: re-runs are idempotent and an unchanged
//! document costs nothing. The hash is SHA-256 over length-prefixed parts (so
//! `("ab", "c")` and `("a", "bc")` differ), truncated to 128 bits and written
//! as 32 lowercase hex digits.
//!
//! ```
//! use kg_core::{ChunkId, DocumentId};
//! let doc = DocumentId::from_content_sha256("9f86d081884c7d65");
//! let a = ChunkId::new(&doc, 0, "Debian was founded in 1993.");
//! let b = ChunkId::new(&doc, 0, "Debian  was founded in 1993.\n");
//! assert_eq!(a, b); // whitespace is normalised away
//! assert_eq!(a.as_str().len(), 32);
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization;

use crate::ident::Label;

/// Hashes length-prefixed parts into a 32-hex-digit id.
pub fn content_hash(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let digest = h.finalize();
    hex::encode(&digest[..16])
}

/// SHA-256 of raw bytes as 64 hex digits (a document's `sha256` property).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Text normalised for hashing: Unicode NFC, whitespace runs folded to one
/// space, trimmed. Two chunks that differ only in layout get one id.
pub fn normalise_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.nfc().collect::<String>().split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// The key under which two mentions are the same entity: NFKC, lower case,
/// punctuation dropped (`+` and `#` read as words: "C++" is not "C"),
/// whitespace folded, and common company suffixes
/// ("Inc.", "Ltd", "GmbH", ...) removed. `"Acme, Inc."` and `"ACME"` share
/// one key.
pub fn entity_key(name: &str) -> String {
    const SUFFIXES: &[&str] = &[
        "inc",
        "incorporated",
        "ltd",
        "limited",
        "llc",
        "gmbh",
        "corp",
        "corporation",
        "co",
        "plc",
        "ag",
        "sa",
        "srl",
        "bv",
        "oy",
        "ab",
    ];
    // `+` and `#` are words: "C++" and "C#" are not "C".
    let mut folded = String::with_capacity(name.len());
    for c in name.nfkc().flat_map(char::to_lowercase) {
        match c {
            '+' => folded.push_str(" plus "),
            '#' => folded.push_str(" sharp "),
            c if c.is_alphanumeric() => folded.push(c),
            _ => folded.push(' '),
        }
    }
    let mut words: Vec<&str> = folded.split_whitespace().collect();
    while words.len() > 1 && words.last().is_some_and(|w| SUFFIXES.contains(w)) {
        words.pop();
    }
    if words.first() == Some(&"the") && words.len() > 1 {
        words.remove(0);
    }
    words.join(" ")
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The id as a string (32 hex digits when made by kg).
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Wraps an id read back from storage or a JSON Lines file.
            pub fn from_raw(raw: impl Into<String>) -> Self {
                Self(raw.into())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// Identifies a [`crate::Document`]: a hash of its bytes.
    DocumentId
);
id_type!(
    /// Identifies a [`crate::Chunk`]: its document, position and normalised text.
    ChunkId
);
id_type!(
    /// Identifies a resolved entity: its type and [`entity_key`].
    EntityId
);
id_type!(
    /// Identifies a node mapped from a CSV row: its label and key value.
    NodeId
);

impl DocumentId {
    /// The id of a document whose bytes hash to `sha256_hex`.
    pub fn from_content_sha256(sha256_hex: &str) -> Self {
        Self(content_hash(&[b"document", sha256_hex.as_bytes()]))
    }
}

impl ChunkId {
    /// The id of the `index`-th chunk of `document` holding `text`.
    pub fn new(document: &DocumentId, index: u32, text: &str) -> Self {
        let norm = normalise_text(text);
        Self(content_hash(&[
            b"chunk",
            document.0.as_bytes(),
            &index.to_le_bytes(),
            norm.as_bytes(),
        ]))
    }
}

impl EntityId {
    /// The id of the entity of type `label` named `name` (any spelling with
    /// the same [`entity_key`]).
    pub fn new(label: &Label, name: &str) -> Self {
        Self(content_hash(&[
            b"entity",
            label.as_str().as_bytes(),
            entity_key(name).as_bytes(),
        ]))
    }
}

impl NodeId {
    /// The id of the CSV-mapped node with `label` whose key column holds `key`.
    pub fn new(label: &Label, key: &str) -> Self {
        Self(content_hash(&[
            b"node",
            label.as_str().as_bytes(),
            key.trim().as_bytes(),
        ]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        let d1 = DocumentId::from_content_sha256(&sha256_hex(b"one"));
        let d2 = DocumentId::from_content_sha256(&sha256_hex(b"two"));
        assert_ne!(d1, d2);
        assert_eq!(d1, DocumentId::from_content_sha256(&sha256_hex(b"one")));
        let c = ChunkId::new(&d1, 0, "x");
        assert_ne!(c, ChunkId::new(&d1, 1, "x"));
        assert_ne!(c, ChunkId::new(&d2, 0, "x"));
        assert_eq!(c.as_str().len(), 32);
        assert!(c.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn length_prefix_separates_parts() {
        assert_ne!(content_hash(&[b"ab", b"c"]), content_hash(&[b"a", b"bc"]));
    }

    #[test]
    fn entity_keys_fold_spellings() {
        assert_eq!(entity_key("Acme, Inc."), "acme");
        assert_eq!(entity_key("ACME"), "acme");
        assert_eq!(entity_key("  Ian   Murdock "), "ian murdock");
        assert_eq!(entity_key("The Debian Project"), "debian project");
        assert_eq!(entity_key("Inc"), "inc");
        assert_eq!(entity_key("C++"), "c plus plus");
        assert_eq!(entity_key("C#"), "c sharp");
        assert_ne!(entity_key("C"), entity_key("C++"));
        let person = Label::new("Person").unwrap();
        assert_eq!(
            EntityId::new(&person, "Ian Murdock"),
            EntityId::new(&person, "ian murdock.")
        );
        let org = Label::new("Organization").unwrap();
        assert_ne!(
            EntityId::new(&person, "Debian"),
            EntityId::new(&org, "Debian")
        );
    }
}
