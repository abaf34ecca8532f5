//! Schema suggestion: extract a sample of chunks with the open schema, count
//! the types the LLM used, and propose an `[extract.schema]` block for the
//! user to edit (what `kg schema suggest` prints).
//!
//! [`ChunkSample`] keeps a fixed-size sample of a stream of chunks in
//! bounded memory: the `n` chunks whose text hashes lowest (a bottom-k
//! sample), so the same corpus always gives the same sample, whatever the
//! order the files were read in, and the extraction cache answers a second
//! suggestion for free. [`SchemaSuggestion`] counts entity types, relation
//! types and `(source type, relation, target type)` shapes over the sample's
//! extractions and renders them as TOML that
//! [`ExtractSchema::from_config_toml`](crate::ExtractSchema::from_config_toml)
//! reads back.

use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::fmt::Write as _;

use kg_core::{Chunk, ChunkId, Extraction};

/// A bottom-k sample of chunks by a hash of their text.
#[derive(Debug)]
pub struct ChunkSample {
    n: usize,
    seen: u64,
    heap: BinaryHeap<Ranked>,
}

#[derive(Debug)]
struct Ranked(u64, Chunk);

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0 && self.1.id == other.1.id
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.0, self.1.id.as_str()).cmp(&(other.0, other.1.id.as_str()))
    }
}

/// FNV-1a 64 of `text`, finished with splitmix64 so near-equal texts
/// spread.
fn text_hash(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

impl ChunkSample {
    /// A sample of at most `n` chunks.
    pub fn new(n: usize) -> Self {
        Self {
            n,
            seen: 0,
            heap: BinaryHeap::with_capacity(n.saturating_add(1).min(1 << 16)),
        }
    }

    /// Offers one chunk; chunks with empty text are not sampled.
    pub fn offer(&mut self, chunk: Chunk) {
        if chunk.text.trim().is_empty() || self.n == 0 {
            return;
        }
        self.seen += 1;
        let ranked = Ranked(text_hash(&chunk.text), chunk);
        if self.heap.len() < self.n {
            self.heap.push(ranked);
        } else if self.heap.peek().is_some_and(|top| ranked < *top) {
            self.heap.pop();
            self.heap.push(ranked);
        }
    }

    /// Chunks offered (with text).
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// The sample, in document order (source, then chunk index).
    pub fn into_chunks(self) -> Vec<Chunk> {
        let mut out: Vec<Chunk> = self.heap.into_iter().map(|r| r.1).collect();
        out.sort_by(|a, b| (&a.source, a.index).cmp(&(&b.source, b.index)));
        out
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Seen {
    mentions: u64,
    chunks: BTreeSet<ChunkId>,
}

impl Seen {
    fn note(&mut self, chunk: &ChunkId) {
        self.mentions += 1;
        if !self.chunks.contains(chunk) {
            self.chunks.insert(chunk.clone());
        }
    }
}

/// Counts of the types a sample's extractions used.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SchemaSuggestion {
    chunks: u64,
    entity_types: BTreeMap<String, Seen>,
    relation_types: BTreeMap<String, Seen>,
    patterns: BTreeMap<(String, String, String), Seen>,
}

/// One counted type, for callers that render their own report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeCount {
    /// The type (or `Source -TYPE-> Target` shape).
    pub name: String,
    /// Times the LLM used it.
    pub mentions: u64,
    /// Sampled chunks it appeared in.
    pub chunks: u64,
}

impl SchemaSuggestion {
    /// Counts one chunk's extraction.
    pub fn add(&mut self, x: &Extraction) {
        self.chunks += 1;
        for e in &x.entities {
            self.entity_types
                .entry(e.entity_type.as_str().to_string())
                .or_default()
                .note(&x.chunk_id);
        }
        for r in &x.relations {
            self.relation_types
                .entry(r.rel_type.as_str().to_string())
                .or_default()
                .note(&x.chunk_id);
            let ty = |id| {
                x.entities
                    .iter()
                    .find(|e| &e.id == id)
                    .map(|e| e.entity_type.as_str().to_string())
            };
            if let (Some(s), Some(t)) = (ty(&r.source_id), ty(&r.target_id)) {
                self.patterns
                    .entry((s, r.rel_type.as_str().to_string(), t))
                    .or_default()
                    .note(&x.chunk_id);
            }
        }
    }

    /// Extractions counted.
    pub fn chunks(&self) -> u64 {
        self.chunks
    }

    fn ranked<K: Clone>(map: &BTreeMap<K, Seen>, name: impl Fn(&K) -> String) -> Vec<TypeCount> {
        let mut out: Vec<TypeCount> = map
            .iter()
            .map(|(k, s)| TypeCount {
                name: name(k),
                mentions: s.mentions,
                chunks: s.chunks.len() as u64,
            })
            .collect();
        out.sort_by(|a, b| {
            (b.chunks, b.mentions)
                .cmp(&(a.chunks, a.mentions))
                .then_with(|| a.name.cmp(&b.name))
        });
        out
    }

    /// Entity types, most widespread first.
    pub fn entity_types(&self) -> Vec<TypeCount> {
        Self::ranked(&self.entity_types, String::clone)
    }

    /// Relation types, most widespread first.
    pub fn relation_types(&self) -> Vec<TypeCount> {
        Self::ranked(&self.relation_types, String::clone)
    }

    /// Shapes `Source -TYPE-> Target`, most widespread first.
    pub fn patterns(&self) -> Vec<TypeCount> {
        Self::ranked(&self.patterns, |(s, r, t)| format!("{s} -{r}-> {t}"))
    }

    /// The proposed `[extract.schema]` block: types seen in at least
    /// `min_chunks` sampled chunks, each with its counts as a comment;
    /// shapes whose types are all kept; the rest listed as comments. Reads
    /// back with `ExtractSchema::from_config_toml`.
    pub fn to_toml(&self, min_chunks: u64, sampled_from: u64) -> String {
        let min = min_chunks.max(1);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# Proposed by `kg schema suggest` from {} sampled chunk(s) of {sampled_from}.\n\
             # Counts are `mentions in chunks`. Edit it (rename, drop, describe types),\n\
             # then paste it into kg.toml or pass it with --schema.\n\
             # mode = \"strict\" drops every entity and relation outside the lists.",
            self.chunks
        );
        let entities = self.entity_types();
        let relations = self.relation_types();
        let kept_e: Vec<&TypeCount> = entities.iter().filter(|t| t.chunks >= min).collect();
        let kept_r: Vec<&TypeCount> = relations.iter().filter(|t| t.chunks >= min).collect();
        let is_kept_e = |n: &str| kept_e.iter().any(|t| t.name == n);
        let is_kept_r = |n: &str| kept_r.iter().any(|t| t.name == n);
        let mut kept_p = Vec::new();
        let mut left_p = Vec::new();
        for ((s, r, t), seen) in &self.patterns {
            let count = TypeCount {
                name: format!("{s} -{r}-> {t}"),
                mentions: seen.mentions,
                chunks: seen.chunks.len() as u64,
            };
            if count.chunks >= min && is_kept_e(s) && is_kept_e(t) && is_kept_r(r) {
                kept_p.push(count);
            } else {
                left_p.push(count);
            }
        }
        let by_spread = |a: &TypeCount, b: &TypeCount| {
            (b.chunks, b.mentions)
                .cmp(&(a.chunks, a.mentions))
                .then_with(|| a.name.cmp(&b.name))
        };
        kept_p.sort_by(by_spread);
        left_p.sort_by(by_spread);
        let _ = writeln!(out, "[extract.schema]\nmode = \"open\"");
        if !kept_p.is_empty() {
            let _ = writeln!(out, "patterns = [");
            for p in &kept_p {
                let _ = writeln!(out, "  \"{}\",  # {} in {}", p.name, p.mentions, p.chunks);
            }
            let _ = writeln!(out, "]");
        }
        for t in &kept_e {
            let _ = writeln!(
                out,
                "\n[[extract.schema.entities]]\ntype = \"{}\"  # {} in {}\ndescription = \"\"",
                t.name, t.mentions, t.chunks
            );
        }
        for t in &kept_r {
            let _ = writeln!(
                out,
                "\n[[extract.schema.relations]]\ntype = \"{}\"  # {} in {}\ndescription = \"\"",
                t.name, t.mentions, t.chunks
            );
        }
        let left: Vec<String> = entities
            .iter()
            .filter(|t| t.chunks < min)
            .map(|t| format!("entity {} ({} in {})", t.name, t.mentions, t.chunks))
            .chain(
                relations
                    .iter()
                    .filter(|t| t.chunks < min)
                    .map(|t| format!("relation {} ({} in {})", t.name, t.mentions, t.chunks)),
            )
            .chain(
                left_p
                    .iter()
                    .map(|t| format!("shape {} ({} in {})", t.name, t.mentions, t.chunks)),
            )
            .collect();
        if !left.is_empty() {
            let _ = writeln!(
                out,
                "\n# Seen in fewer than {min} sampled chunk(s), or shapes of types left out:"
            );
            for l in left {
                let _ = writeln!(out, "#   {l}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ExtractSchema;
    use kg_core::{DocumentId, EntityId, ExtractedEntity, ExtractedRelation, Label, RelType};

    fn chunk(i: u32, text: &str) -> Chunk {
        let doc = DocumentId::from_content_sha256("doc");
        Chunk {
            id: ChunkId::new(&doc, i, text),
            document_id: doc,
            index: i,
            text: text.into(),
            tokens: 1,
            source: "a.txt".into(),
            page_start: None,
            page_end: None,
        }
    }

    fn entity(name: &str, ty: &str) -> ExtractedEntity {
        let label = Label::new(ty).unwrap();
        ExtractedEntity {
            id: EntityId::new(&label, name),
            name: name.into(),
            entity_type: label,
            description: String::new(),
        }
    }

    fn extraction(i: u32, ents: &[(&str, &str)], rels: &[(&str, &str, &str)]) -> Extraction {
        let entities: Vec<ExtractedEntity> = ents.iter().map(|(n, t)| entity(n, t)).collect();
        let relations = rels
            .iter()
            .map(|(s, r, t)| {
                let find = |n: &str| entities.iter().find(|e| e.name == n).unwrap().clone();
                let (s, t) = (find(s), find(t));
                ExtractedRelation {
                    source: s.name.clone(),
                    target: t.name.clone(),
                    source_id: s.id,
                    target_id: t.id,
                    rel_type: RelType::new(r).unwrap(),
                    description: String::new(),
                    strength: 1.0,
                }
            })
            .collect();
        Extraction {
            chunk_id: chunk(i, &format!("c{i}")).id,
            entities,
            relations,
            model: "m".into(),
        }
    }

    #[test]
    fn the_sample_is_the_same_whatever_the_order_and_bounded() {
        let chunks: Vec<Chunk> = (0..500).map(|i| chunk(i, &format!("text {i}"))).collect();
        let mut a = ChunkSample::new(20);
        let mut b = ChunkSample::new(20);
        for c in &chunks {
            a.offer(c.clone());
        }
        for c in chunks.iter().rev() {
            b.offer(c.clone());
        }
        b.offer(chunk(9999, "   "));
        assert_eq!(a.seen(), 500);
        let (a, b) = (a.into_chunks(), b.into_chunks());
        assert_eq!(a.len(), 20);
        assert_eq!(
            a.iter().map(|c| &c.id).collect::<Vec<_>>(),
            b.iter().map(|c| &c.id).collect::<Vec<_>>()
        );
        // Document order, and spread over the document, not its start.
        assert!(a.windows(2).all(|w| w[0].index < w[1].index));
        assert!(
            a.iter().any(|c| c.index > 250),
            "{:?}",
            a.iter().map(|c| c.index).collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_suggestion_keeps_common_types_and_reads_back_as_a_schema() {
        let mut s = SchemaSuggestion::default();
        for i in 0..6 {
            s.add(&extraction(
                i,
                &[
                    ("Ada", "Person"),
                    ("Acme", "Organization"),
                    ("Paris", "Location"),
                ],
                &[("Ada", "WORKS_AT", "Acme"), ("Acme", "LOCATED_IN", "Paris")],
            ));
        }
        s.add(&extraction(
            6,
            &[("Zorg", "Alien"), ("Ada", "Person")],
            &[("Zorg", "WORKS_AT", "Ada")],
        ));
        let toml = s.to_toml(2, 40);
        assert!(toml.contains("from 7 sampled chunk(s) of 40"), "{toml}");
        assert!(toml.contains("type = \"Person\"  # 7 in 7"), "{toml}");
        assert!(
            toml.contains("\"Person -WORKS_AT-> Organization\",  # 6 in 6"),
            "{toml}"
        );
        assert!(toml.contains("#   entity Alien (1 in 1)"), "{toml}");
        assert!(
            toml.contains("#   shape Alien -WORKS_AT-> Person (1 in 1)"),
            "{toml}"
        );
        let schema = ExtractSchema::from_config_toml(&toml).unwrap().unwrap();
        let types: Vec<&str> = schema.entity_types().iter().map(|l| l.as_str()).collect();
        assert_eq!(types, ["Person", "Location", "Organization"]);
        assert_eq!(schema.patterns().len(), 2);
        assert!(!schema.is_strict());
    }
}
