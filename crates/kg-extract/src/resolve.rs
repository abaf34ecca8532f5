//! Entity resolution within a run.
//!
//! Every mention already carries its resolved id, [`kg_core::EntityId`] of
//! (type, [`kg_core::entity_key`] of the name): "Acme, Inc." and "ACME" as
//! an Organization are one entity. The [`Resolver`] folds the extractions of
//! a run into one [`Entity`] per id and one [`Relation`] per (source, type,
//! target), keeping every spelling as an alias, every distinct description,
//! and every source chunk.
//!
//! The result does not depend on the order extractions arrive in (the pool
//! finishes chunks out of order): the canonical name is the most frequent
//! spelling (ties: the smallest), descriptions are ordered by chunk, lists
//! are sorted. Memory grows with the number of distinct entities and
//! relations, not with the number of chunks.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kg_core::{ChunkId, Entity, EntityId, Extraction, Label, Record, RelType, Relation};

/// The most distinct descriptions kept per entity or relation.
const MAX_DESCRIPTIONS: usize = 8;
/// The longest merged description, in characters.
const MAX_DESCRIPTION_CHARS: usize = 2000;

#[derive(Debug)]
struct EntityAcc {
    entity_type: Label,
    spellings: BTreeMap<String, u32>,
    descriptions: BTreeMap<(ChunkId, String), ()>,
    chunks: BTreeSet<ChunkId>,
}

#[derive(Debug)]
struct RelationAcc {
    weight: f32,
    descriptions: BTreeMap<(ChunkId, String), ()>,
    chunks: BTreeSet<ChunkId>,
}

/// Folds extractions into resolved entities and relations.
#[derive(Debug, Default)]
pub struct Resolver {
    entities: HashMap<EntityId, EntityAcc>,
    relations: HashMap<(EntityId, RelType, EntityId), RelationAcc>,
}

fn merge_descriptions(descriptions: &BTreeMap<(ChunkId, String), ()>) -> String {
    let mut seen = BTreeSet::new();
    let mut out = String::new();
    for (_, d) in descriptions.keys() {
        if d.is_empty() || !seen.insert(d.as_str()) || seen.len() > MAX_DESCRIPTIONS {
            continue;
        }
        if out.chars().count() + d.chars().count() > MAX_DESCRIPTION_CHARS {
            break;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(d);
    }
    out
}

/// The kept descriptions grouped by the chunk that gave them.
fn by_chunk(descriptions: &BTreeMap<(ChunkId, String), ()>) -> BTreeMap<ChunkId, Vec<String>> {
    let mut out: BTreeMap<ChunkId, Vec<String>> = BTreeMap::new();
    for (chunk, d) in descriptions.keys() {
        out.entry(chunk.clone()).or_default().push(d.clone());
    }
    out
}

impl Resolver {
    /// An empty resolver.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one chunk's extraction.
    pub fn add(&mut self, extraction: &Extraction) {
        let chunk = &extraction.chunk_id;
        for e in &extraction.entities {
            let acc = self
                .entities
                .entry(e.id.clone())
                .or_insert_with(|| EntityAcc {
                    entity_type: e.entity_type.clone(),
                    spellings: BTreeMap::new(),
                    descriptions: BTreeMap::new(),
                    chunks: BTreeSet::new(),
                });
            *acc.spellings.entry(e.name.clone()).or_insert(0) += 1;
            if !e.description.is_empty() && acc.descriptions.len() < MAX_DESCRIPTIONS * 4 {
                acc.descriptions
                    .insert((chunk.clone(), e.description.clone()), ());
            }
            acc.chunks.insert(chunk.clone());
        }
        for r in &extraction.relations {
            let key = (r.source_id.clone(), r.rel_type.clone(), r.target_id.clone());
            let acc = self.relations.entry(key).or_insert_with(|| RelationAcc {
                weight: 0.0,
                descriptions: BTreeMap::new(),
                chunks: BTreeSet::new(),
            });
            acc.weight = acc.weight.max(r.strength);
            if !r.description.is_empty() && acc.descriptions.len() < MAX_DESCRIPTIONS * 4 {
                acc.descriptions
                    .insert((chunk.clone(), r.description.clone()), ());
            }
            acc.chunks.insert(chunk.clone());
        }
    }

    /// Distinct entities so far.
    pub fn entity_count(&self) -> usize {
        self.entities.len()
    }

    /// Distinct relations so far.
    pub fn relation_count(&self) -> usize {
        self.relations.len()
    }

    /// The resolved entities and relations, sorted by id.
    pub fn finish(self) -> (Vec<Entity>, Vec<Relation>) {
        let mut entities: Vec<Entity> = self
            .entities
            .into_iter()
            .map(|(id, acc)| {
                // Most frequent spelling; ties go to the smallest string.
                let name = acc
                    .spellings
                    .iter()
                    .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
                    .map(|(n, _)| n.clone())
                    .unwrap_or_default();
                let aliases = acc
                    .spellings
                    .keys()
                    .filter(|s| **s != name)
                    .cloned()
                    .collect();
                Entity {
                    id,
                    name,
                    entity_type: acc.entity_type,
                    description: merge_descriptions(&acc.descriptions),
                    aliases,
                    chunk_ids: acc.chunks.into_iter().collect(),
                    mention_descriptions: by_chunk(&acc.descriptions),
                }
            })
            .collect();
        entities.sort_by(|a, b| a.id.cmp(&b.id));
        let mut relations: Vec<Relation> = self
            .relations
            .into_iter()
            .map(|((source_id, rel_type, target_id), acc)| Relation {
                source_id,
                target_id,
                rel_type,
                description: merge_descriptions(&acc.descriptions),
                weight: acc.weight,
                chunk_ids: acc.chunks.into_iter().collect(),
                chunk_descriptions: by_chunk(&acc.descriptions),
            })
            .collect();
        relations.sort_by(|a, b| {
            (&a.source_id, &a.rel_type, &a.target_id).cmp(&(
                &b.source_id,
                &b.rel_type,
                &b.target_id,
            ))
        });
        (entities, relations)
    }

    /// [`Self::finish`] as records, entities first.
    pub fn into_records(self) -> impl Iterator<Item = Record> {
        let (entities, relations) = self.finish();
        entities
            .into_iter()
            .map(Record::Entity)
            .chain(relations.into_iter().map(Record::Relation))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kg_core::{DocumentId, ExtractedEntity, ExtractedRelation};

    fn mention(name: &str, ty: &str, desc: &str) -> ExtractedEntity {
        let label = Label::new(ty).unwrap();
        ExtractedEntity {
            id: EntityId::new(&label, name),
            name: name.into(),
            entity_type: label,
            description: desc.into(),
        }
    }

    fn extraction(
        i: u32,
        entities: Vec<ExtractedEntity>,
        rel: Option<(usize, usize, &str, f32)>,
    ) -> Extraction {
        let doc = DocumentId::from_content_sha256("d");
        let relations = rel
            .map(|(s, t, ty, strength)| ExtractedRelation {
                source: entities[s].name.clone(),
                target: entities[t].name.clone(),
                source_id: entities[s].id.clone(),
                target_id: entities[t].id.clone(),
                rel_type: RelType::new(ty).unwrap(),
                description: format!("said in chunk {i}"),
                strength,
            })
            .into_iter()
            .collect();
        Extraction {
            chunk_id: ChunkId::new(&doc, i, &format!("chunk {i}")),
            entities,
            relations,
            model: "m".into(),
        }
    }

    #[test]
    fn spellings_merge_into_one_entity_order_independently() {
        let xs = [
            extraction(
                0,
                vec![
                    mention("Acme, Inc.", "Organization", "makes anvils"),
                    mention("Wile E. Coyote", "Person", ""),
                ],
                Some((1, 0, "BUYS FROM", 0.4)),
            ),
            extraction(
                1,
                vec![
                    mention("ACME", "Organization", "a company"),
                    mention("wile e coyote", "Person", "a coyote"),
                ],
                Some((1, 0, "buys_from", 0.9)),
            ),
            extraction(
                2,
                vec![
                    mention("ACME", "Organization", "makes anvils"),
                    mention("Acme", "Location", "a town"),
                ],
                None,
            ),
        ];
        let mut forward = Resolver::new();
        xs.iter().for_each(|x| forward.add(x));
        let mut backward = Resolver::new();
        xs.iter().rev().for_each(|x| backward.add(x));
        let (entities, relations) = forward.finish();
        assert_eq!((entities.clone(), relations.clone()), backward.finish());
        assert_eq!(
            entities.len(),
            3,
            "Acme the company, Acme the town, the coyote"
        );
        let org = entities
            .iter()
            .find(|e| e.entity_type.as_str() == "Organization")
            .unwrap();
        assert_eq!(org.name, "ACME");
        assert_eq!(org.aliases, vec!["Acme, Inc.".to_string()]);
        assert_eq!(org.chunk_ids.len(), 3);
        assert_eq!(
            org.description.lines().count(),
            2,
            "distinct descriptions: {:?}",
            org.description
        );
        assert_eq!(relations.len(), 1);
        assert_eq!(relations[0].rel_type.as_str(), "BUYS_FROM");
        assert_eq!(relations[0].weight, 0.9);
        assert_eq!(relations[0].chunk_ids.len(), 2);
    }
}
