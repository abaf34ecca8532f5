//! Descriptions kept with the mentions that gave them, and the sets the
//! description step reads and writes back.
//!
//! Every chunk's description of an entity stays on its `MENTIONS`
//! relationship (`descriptions`, a list: a merge can bring two), and every
//! chunk's description of a relation stays in the relation's own
//! `descriptions` list, each entry prefixed with its chunk id
//! ([`encode_chunk_description`]). Removing a chunk removes what it said,
//! so an entity's set of distinct descriptions is a function of the chunks
//! that remain, whatever was added or deleted before.
//!
//! Whatever changes that set (a mention written with a description, a
//! chunk removed, a merge) marks the entity or relation `description_dirty`.
//! The description step reads the dirty ones page by page
//! ([`crate::GraphStore::stale_descriptions`]), each with its distinct
//! descriptions, their [`set_key`] and the key its description was last made
//! from (`description_key`), and writes the new description back with the
//! key ([`crate::GraphStore::set_descriptions`]). A set whose key did not
//! change is skipped without any work.

use kg_core::content_hash;

/// The most distinct descriptions a [`DescriptionSet`] carries (sorted,
/// the first ones); its key covers them all.
pub const MAX_SHOWN: usize = 64;

/// What a description belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Described {
    /// An entity, by id.
    Entity(String),
    /// A relationship between two entities.
    Relation {
        /// Source entity id.
        source: String,
        /// Relationship type.
        rel_type: String,
        /// Target entity id.
        target: String,
    },
}

impl Described {
    /// The paging cursor of entities after `after`: its id, or `""` to
    /// start.
    pub(crate) fn entity_cursor(after: Option<&Described>) -> String {
        match after {
            Some(Described::Entity(id)) => id.clone(),
            _ => String::new(),
        }
    }

    /// The paging cursor of relations after `after`: (source, type,
    /// target), or empty strings to start.
    pub(crate) fn relation_cursor(after: Option<&Described>) -> (String, String, String) {
        match after {
            Some(Described::Relation {
                source,
                rel_type,
                target,
            }) => (source.clone(), rel_type.clone(), target.clone()),
            _ => Default::default(),
        }
    }
}

/// An entity or relation whose descriptions changed since its description
/// was last made ([`crate::GraphStore::stale_descriptions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescriptionSet {
    /// What it is.
    pub target: Described,
    /// The entity's name; for a relation, `source name -TYPE-> target name`.
    pub name: String,
    /// The entity's type, or the relationship type.
    pub kind: String,
    /// The description it has now.
    pub description: String,
    /// Its distinct descriptions (trimmed, sorted), at most [`MAX_SHOWN`].
    pub descriptions: Vec<String>,
    /// How many distinct descriptions it has in all.
    pub distinct: u64,
    /// [`set_key`] of all its distinct descriptions.
    pub key: String,
    /// The key its description was last made from, if any.
    pub stored_key: Option<String>,
}

impl DescriptionSet {
    /// Whether its description was made from this very set already.
    pub fn unchanged(&self) -> bool {
        self.stored_key.as_deref() == Some(self.key.as_str())
    }
}

/// A description to write back ([`crate::GraphStore::set_descriptions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescriptionUpdate {
    /// What it is for.
    pub target: Described,
    /// The new description.
    pub description: String,
    /// The set key it was made from: `Some` records it and clears the dirty
    /// mark; `None` writes the description but leaves the mark, so the next
    /// step tries again (a summary that failed, or one not asked for).
    pub key: Option<String>,
}

/// The distinct non-empty descriptions of `all`, trimmed and sorted, the
/// first [`MAX_SHOWN`] of them, how many there are, and their key.
pub fn distinct_set<I, S>(all: I) -> (Vec<String>, u64, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut set: Vec<String> = all
        .into_iter()
        .map(|d| d.as_ref().trim().to_owned())
        .filter(|d| !d.is_empty())
        .collect();
    set.sort();
    set.dedup();
    let key = set_key(&set);
    let distinct = set.len() as u64;
    set.truncate(MAX_SHOWN);
    (set, distinct, key)
}

/// The key of a set of distinct descriptions (given sorted): a content
/// hash, the same on both backends.
pub fn set_key(sorted: &[String]) -> String {
    let parts: Vec<&[u8]> = std::iter::once(b"descriptions".as_slice())
        .chain(sorted.iter().map(|d| d.as_bytes()))
        .collect();
    content_hash(&parts)
}

/// A relation's description entry: the chunk id, a space, the text.
pub fn encode_chunk_description(chunk: &str, description: &str) -> String {
    format!("{chunk} {description}")
}

/// The chunk id and text of an entry [`encode_chunk_description`] made;
/// `None` for one without a chunk.
pub fn decode_chunk_description(entry: &str) -> Option<(&str, &str)> {
    entry.split_once(' ').filter(|(c, _)| !c.is_empty())
}

/// The texts of a relation's description entries.
pub(crate) fn entry_texts(entries: &[String]) -> impl Iterator<Item = &str> {
    entries
        .iter()
        .filter_map(|e| decode_chunk_description(e).map(|(_, d)| d))
}

/// Relation entries grouped by chunk, as [`kg_core::Relation`] carries them.
pub(crate) fn entries_by_chunk(
    entries: &[String],
) -> std::collections::BTreeMap<kg_core::ChunkId, Vec<String>> {
    let mut out: std::collections::BTreeMap<kg_core::ChunkId, Vec<String>> = Default::default();
    for (c, d) in entries.iter().filter_map(|e| decode_chunk_description(e)) {
        let list = out.entry(kg_core::ChunkId::from_raw(c)).or_default();
        if !list.iter().any(|x| x == d) {
            list.push(d.to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_are_distinct_sorted_trimmed_and_keyed_by_content() {
        let (shown, n, key) = distinct_set(["b ", "a", "", "b", "  "]);
        assert_eq!(shown, vec!["a".to_owned(), "b".to_owned()]);
        assert_eq!(n, 2);
        assert_eq!(key, distinct_set(["a", "b"]).2);
        assert_ne!(key, distinct_set(["a", "b", "c"]).2);
        let many: Vec<String> = (0..100).map(|i| format!("d{i:03}")).collect();
        let (shown, n, _) = distinct_set(&many);
        assert_eq!((shown.len(), n), (MAX_SHOWN, 100));
    }

    #[test]
    fn relation_entries_round_trip_with_their_chunk() {
        let e = encode_chunk_description("c1", "founded it in 1993");
        assert_eq!(
            decode_chunk_description(&e),
            Some(("c1", "founded it in 1993"))
        );
        assert_eq!(decode_chunk_description("nochunk"), None);
        let by = entries_by_chunk(&[e.clone(), e, encode_chunk_description("c2", "x y")]);
        assert_eq!(by.len(), 2);
        assert_eq!(
            by.get(&kg_core::ChunkId::from_raw("c2")),
            Some(&vec!["x y".to_owned()])
        );
    }
}
