//! Reading and validating the LLM's answer.
//!
//! Parsing is tolerant about form and strict about content. Servers in JSON
//! mode (and models without it) wrap JSON in code fences or prose, so the
//! parser strips fences and, failing that, tries the outermost `{...}`. But
//! an answer must be an object with an `entities` array: an empty, prose,
//! truncated or off-schema answer is an [`AnswerError`], never "nothing
//! found" (that is `{"entities": []}`).
//!
//! An answer cut at the completion cap (`finish_reason: length`) is first
//! repaired where it can be ([`repair_truncated`]): what was complete is
//! kept, the element being written when the cap hit is dropped.
//!
//! Validation turns raw strings into kg-core identifiers: an entity whose
//! type is not a safe [`Label`] (or is reserved, or off a strict schema) is
//! rejected and counted; so is a relation with an invalid [`RelType`]; a
//! relation whose endpoints are not entities of the same answer is dropped
//! and counted. Nothing raw reaches an identifier.

use std::collections::{HashMap, HashSet};

use kg_core::{
    entity_key, Chunk, EntityId, ExtractedEntity, ExtractedRelation, Extraction, Label, RelType,
};
use serde_json::Value;

use crate::schema::{ExtractSchema, SchemaDrops};

/// Why an answer could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// No content at all.
    #[error("the answer is empty")]
    Empty,
    /// The model stopped at its completion cap; the JSON is cut (and was
    /// not repairable).
    #[error("the answer was cut at the completion cap (finish_reason=length)")]
    Truncated,
    /// No JSON object could be found in it.
    #[error("the answer is not JSON: {snippet:?}")]
    NotJson {
        /// The start of the answer.
        snippet: String,
    },
    /// JSON, but without an `entities` array.
    #[error("the answer is JSON but not of the schema: {snippet:?}")]
    OffSchema {
        /// The start of the answer.
        snippet: String,
    },
}

impl AnswerError {
    /// A stable snake_case reason code for a set-aside record.
    pub fn reason(&self) -> kg_core::SetAsideReason {
        use kg_core::SetAsideReason as R;
        match self {
            AnswerError::Empty => R::EmptyAnswer,
            AnswerError::Truncated => R::TruncatedAnswer,
            AnswerError::NotJson { .. } => R::UnparsableAnswer,
            AnswerError::OffSchema { .. } => R::OffSchemaAnswer,
        }
    }
}

fn snippet(s: &str) -> String {
    s.chars().take(120).collect()
}

/// Parses an answer's content into the answer JSON (an object with an
/// `entities` array), repairing fences and surrounding prose.
pub fn parse_answer(content: &str, finish_reason: Option<&str>) -> Result<Value, AnswerError> {
    let trimmed = content.trim();
    if trimmed.is_empty() {
        return Err(AnswerError::Empty);
    }
    let unfenced = strip_fences(trimmed);
    let value = serde_json::from_str::<Value>(unfenced).ok().or_else(|| {
        let start = unfenced.find('{')?;
        let end = unfenced.rfind('}')?;
        (start < end)
            .then(|| serde_json::from_str::<Value>(unfenced.get(start..=end)?).ok())
            .flatten()
    });
    let Some(value) = value else {
        if finish_reason == Some("length") {
            return Err(AnswerError::Truncated);
        }
        return Err(AnswerError::NotJson {
            snippet: snippet(trimmed),
        });
    };
    if !value.get("entities").is_some_and(Value::is_array) {
        return Err(AnswerError::OffSchema {
            snippet: snippet(trimmed),
        });
    }
    Ok(value)
}

/// Repairs an answer cut at the completion cap, or `None`.
///
/// The rule: from the first `{`, scan the JSON (strings and escapes
/// included) and remember every point where an object or array closed
/// inside another one. Cut the text at the last such point, which drops
/// the element being written when the cap hit (a half entity, half a
/// string), close what is still open (`]`, `}`) and parse; if that fails,
/// try the point before (up to 16). Only complete elements survive, never a
/// half-written one. The result is accepted only if it is an object whose
/// `entities` array kept at least one entity: a cut before the first
/// complete entity is not repairable (it is not "nothing found").
pub fn repair_truncated(content: &str) -> Option<Value> {
    let text = content.get(content.find('{')?..)?;
    let acceptable = |v: &Value| {
        v.get("entities")
            .and_then(Value::as_array)
            .is_some_and(|e| !e.is_empty())
    };
    let mut open: Vec<u8> = Vec::new();
    let mut cuts: Vec<(usize, Vec<u8>)> = Vec::new();
    let (mut in_string, mut escaped) = (false, false);
    for (i, &b) in text.as_bytes().iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => open.push(b),
            b'}' | b']' => {
                let opener = open.pop()?;
                if (opener == b'{') != (b == b'}') {
                    return None; // not JSON: nothing to repair
                }
                if open.is_empty() {
                    // The whole answer closed: it needed no repair.
                    let v: Value = serde_json::from_str(text.get(..=i)?).ok()?;
                    return acceptable(&v).then_some(v);
                }
                cuts.push((i + 1, open.clone()));
            }
            _ => {}
        }
    }
    for (end, still_open) in cuts.iter().rev().take(16) {
        let mut candidate = String::with_capacity(end + still_open.len());
        candidate.push_str(text.get(..*end)?);
        for opener in still_open.iter().rev() {
            candidate.push(if *opener == b'{' { '}' } else { ']' });
        }
        if let Ok(v) = serde_json::from_str::<Value>(&candidate) {
            if acceptable(&v) {
                return Some(v);
            }
        }
    }
    None
}

fn strip_fences(s: &str) -> &str {
    let Some(rest) = s.strip_prefix("```") else {
        return s;
    };
    let rest = rest.strip_prefix("json").unwrap_or(rest);
    rest.trim_end().strip_suffix("```").unwrap_or(rest).trim()
}

/// What validation dropped from one answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationReport {
    /// Entities whose type was not a safe, allowed, non-reserved label.
    pub rejected_entities: u64,
    /// Relations whose type was not a safe, allowed relation type, or whose
    /// pattern is not allowed by a strict schema.
    pub rejected_relations: u64,
    /// Relations whose source or target is not an entity of the answer.
    pub dropped_relations: u64,
    /// Entries that were not objects or lacked a name.
    pub malformed_entries: u64,
    /// Of the rejected entities and relations, those a strict schema
    /// dropped (valid types outside it), per type.
    pub dropped_by_schema: SchemaDrops,
}

fn str_field<'a>(v: &'a Value, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| v.get(*n).and_then(Value::as_str))
        .map(str::trim)
}

/// Validates a parsed answer for `chunk` into an [`Extraction`].
pub fn validate(
    answer: &Value,
    chunk: &Chunk,
    schema: &ExtractSchema,
    model: &str,
) -> (Extraction, ValidationReport) {
    let mut report = ValidationReport::default();
    let mut entities: Vec<ExtractedEntity> = Vec::new();
    // entity_key(name) -> index in `entities`, for relation endpoints.
    let mut by_key: HashMap<String, usize> = HashMap::new();
    // Keys of entities a strict schema dropped: their relations are schema
    // drops too.
    let mut off_schema: HashSet<String> = HashSet::new();
    let empty = Vec::new();
    for raw in answer
        .get("entities")
        .and_then(Value::as_array)
        .unwrap_or(&empty)
    {
        let (Some(name), Some(raw_type)) = (
            str_field(raw, &["name"]),
            str_field(raw, &["type", "entity_type", "label"]),
        ) else {
            report.malformed_entries += 1;
            continue;
        };
        if name.is_empty() || entity_key(name).is_empty() {
            report.malformed_entries += 1;
            continue;
        }
        let label = match Label::new(raw_type) {
            Ok(l) if l.is_reserved() => None,
            Ok(l)
                if schema.is_strict()
                    && !schema.entity_types().is_empty()
                    && !schema.entity_types().contains(&l) =>
            {
                report.dropped_by_schema.entity(l.as_str());
                off_schema.insert(entity_key(name));
                None
            }
            Ok(l) => Some(l),
            Err(_) => None,
        };
        let Some(label) = label else {
            tracing::debug!(chunk = %chunk.id, "entity type rejected: {raw_type:?}");
            report.rejected_entities += 1;
            continue;
        };
        let description = str_field(raw, &["description"]).unwrap_or("").to_string();
        let id = EntityId::new(&label, name);
        if let Some(existing) = entities.iter_mut().find(|e| e.id == id) {
            if existing.description.is_empty() {
                existing.description = description;
            }
            continue;
        }
        by_key.entry(entity_key(name)).or_insert(entities.len());
        entities.push(ExtractedEntity {
            id,
            name: name.to_string(),
            entity_type: label,
            description,
        });
    }
    let mut relations: Vec<ExtractedRelation> = Vec::new();
    for raw in answer
        .get("relations")
        .and_then(Value::as_array)
        .unwrap_or(&empty)
    {
        let (Some(source), Some(target), Some(raw_type)) = (
            str_field(raw, &["source", "from", "head"]),
            str_field(raw, &["target", "to", "tail"]),
            str_field(raw, &["type", "relation", "relation_type"]),
        ) else {
            report.malformed_entries += 1;
            continue;
        };
        let (source_key, target_key) = (entity_key(source), entity_key(target));
        let (Some(&si), Some(&ti)) = (by_key.get(&source_key), by_key.get(&target_key)) else {
            if off_schema.contains(&source_key) || off_schema.contains(&target_key) {
                let rel = RelType::new(raw_type).map(|r| r.as_str().to_string());
                report
                    .dropped_by_schema
                    .relation(rel.as_deref().unwrap_or("(invalid type)"));
                report.rejected_relations += 1;
            } else {
                report.dropped_relations += 1;
            }
            continue;
        };
        let (Some(s), Some(t)) = (entities.get(si), entities.get(ti)) else {
            report.dropped_relations += 1;
            continue;
        };
        let rel_type = match RelType::new(raw_type) {
            Ok(r) if r.is_reserved() => None,
            Ok(r) => match allowed_relation(schema, &s.entity_type, &r, &t.entity_type) {
                Allowed::Yes => Some(r),
                Allowed::NotThisType => {
                    report.dropped_by_schema.relation(r.as_str());
                    None
                }
                Allowed::NotThisShape => {
                    report
                        .dropped_by_schema
                        .relation(&format!("{} -{r}-> {}", s.entity_type, t.entity_type));
                    None
                }
            },
            Err(_) => None,
        };
        let Some(rel_type) = rel_type else {
            tracing::debug!(chunk = %chunk.id, "relation type rejected: {raw_type:?}");
            report.rejected_relations += 1;
            continue;
        };
        let strength = raw
            .get("strength")
            .and_then(|v| {
                v.as_f64()
                    .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            })
            .filter(|x| x.is_finite())
            .map(|x| x.clamp(0.0, 1.0) as f32)
            .unwrap_or(1.0);
        let rel = ExtractedRelation {
            source: s.name.clone(),
            target: t.name.clone(),
            source_id: s.id.clone(),
            target_id: t.id.clone(),
            rel_type,
            description: str_field(raw, &["description"]).unwrap_or("").to_string(),
            strength,
        };
        if let Some(existing) = relations.iter_mut().find(|r| {
            r.source_id == rel.source_id
                && r.target_id == rel.target_id
                && r.rel_type == rel.rel_type
        }) {
            existing.strength = existing.strength.max(rel.strength);
            continue;
        }
        relations.push(rel);
    }
    (
        Extraction {
            chunk_id: chunk.id.clone(),
            entities,
            relations,
            model: model.to_string(),
        },
        report,
    )
}

/// Whether a strict schema allows a relation.
enum Allowed {
    Yes,
    NotThisType,
    NotThisShape,
}

fn allowed_relation(schema: &ExtractSchema, s: &Label, r: &RelType, t: &Label) -> Allowed {
    if !schema.is_strict() {
        return Allowed::Yes;
    }
    if !schema.relation_types().is_empty() && !schema.relation_types().contains(r) {
        return Allowed::NotThisType;
    }
    if schema.patterns().is_empty()
        || schema
            .patterns()
            .iter()
            .any(|(ps, pr, pt)| ps == s && pr == r && pt == t)
    {
        Allowed::Yes
    } else {
        Allowed::NotThisShape
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kg_core::{ChunkId, DocumentId};
    use serde_json::json;

    fn chunk() -> Chunk {
        let doc = DocumentId::from_content_sha256("abc");
        Chunk {
            id: ChunkId::new(&doc, 0, "t"),
            document_id: doc,
            index: 0,
            text: "t".into(),
            tokens: 1,
            source: "t.txt".into(),
            page_start: None,
            page_end: None,
        }
    }

    #[test]
    fn tolerant_parsing_and_honest_errors() {
        let ok = r#"{"entities": [], "relations": []}"#;
        assert!(parse_answer(ok, None).is_ok());
        assert!(parse_answer(&format!("```json\n{ok}\n```"), None).is_ok());
        assert!(parse_answer(&format!("Here you go: {ok} Hope it helps!"), None).is_ok());
        assert_eq!(parse_answer("  ", None), Err(AnswerError::Empty));
        assert!(matches!(
            parse_answer("Sure! Alice, Bob", None),
            Err(AnswerError::NotJson { .. })
        ));
        assert_eq!(
            parse_answer(r#"{"entities": [{"na"#, Some("length")),
            Err(AnswerError::Truncated)
        );
        assert!(matches!(
            parse_answer(r#"{"result": 1}"#, None),
            Err(AnswerError::OffSchema { .. })
        ));
        assert!(matches!(
            parse_answer("[1, 2]", None),
            Err(AnswerError::OffSchema { .. })
        ));
    }

    #[test]
    fn validation_rejects_hostile_types_and_dangling_relations() {
        let answer = json!({
            "entities": [
                {"name": "Ada Lovelace", "type": "person", "description": "a mathematician"},
                {"name": "Charles Babbage", "type": "Person"},
                {"name": "Evil", "type": "Person`}) DETACH DELETE n //"},
                {"name": "Doc", "type": "Document"},
                {"name": "ada lovelace", "type": "PERSON", "description": "dup"},
                {"type": "Person"}
            ],
            "relations": [
                {"source": "Ada Lovelace", "target": "Charles Babbage", "type": "worked with", "strength": "0.9"},
                {"source": "Ada Lovelace", "target": "Evil", "type": "KNOWS"},
                {"source": "Ada Lovelace", "target": "Nobody", "type": "KNOWS"},
                {"source": "Charles Babbage", "target": "Ada Lovelace", "type": "x`y"},
                {"source": "Charles Babbage", "target": "Ada Lovelace", "type": "mentions"},
                {"source": "Ada Lovelace", "target": "Charles Babbage", "type": "WORKED_WITH", "strength": 7}
            ]
        });
        let (x, report) = validate(&answer, &chunk(), &ExtractSchema::open(), "m");
        let names: Vec<&str> = x.entities.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["Ada Lovelace", "Charles Babbage"]);
        assert_eq!(x.entities[0].entity_type.as_str(), "Person");
        assert_eq!(
            x.entities[0].id,
            EntityId::new(&Label::new("Person").unwrap(), "ada lovelace")
        );
        assert_eq!(x.relations.len(), 1);
        assert_eq!(x.relations[0].rel_type.as_str(), "WORKED_WITH");
        assert_eq!(
            x.relations[0].strength, 1.0,
            "merged, max strength, clamped"
        );
        assert_eq!(
            report,
            ValidationReport {
                rejected_entities: 2,
                rejected_relations: 2,
                dropped_relations: 2,
                malformed_entries: 1,
                dropped_by_schema: SchemaDrops::default(),
            }
        );
    }

    #[test]
    fn strict_schema_filters_types_and_patterns() {
        let schema = ExtractSchema::new(
            &["Person", "Organization"],
            &["WORKS_FOR", "KNOWS"],
            &[
                ("Person", "WORKS_FOR", "Organization"),
                ("Person", "KNOWS", "Person"),
            ],
            true,
        )
        .unwrap();
        let answer = json!({
            "entities": [
                {"name": "Alice", "type": "Person"},
                {"name": "Acme", "type": "Organization"},
                {"name": "Paris", "type": "Location"}
            ],
            "relations": [
                {"source": "Alice", "target": "Acme", "type": "WORKS_FOR"},
                {"source": "Acme", "target": "Alice", "type": "WORKS_FOR"},
                {"source": "Alice", "target": "Acme", "type": "LIKES"},
                {"source": "Alice", "target": "Paris", "type": "KNOWS"}
            ]
        });
        let (x, report) = validate(&answer, &chunk(), &schema, "m");
        assert_eq!(x.entities.len(), 2);
        assert_eq!(x.relations.len(), 1);
        assert_eq!(
            (report.rejected_entities, report.rejected_relations),
            (1, 3)
        );
        assert_eq!(report.dropped_relations, 0);
        // Each drop is counted under its type, or its shape when only the
        // shape is off the schema.
        assert_eq!(
            report.dropped_by_schema.to_string(),
            "1 entity (Location 1), 3 relations (KNOWS 1, LIKES 1, Organization -WORKS_FOR-> Person 1)"
        );
        // The same answer under an open schema keeps everything.
        let open = ExtractSchema::new(&["Person"], &["WORKS_FOR"], &[], false).unwrap();
        let (x, report) = validate(&answer, &chunk(), &open, "m");
        assert_eq!((x.entities.len(), x.relations.len()), (3, 4));
        assert!(report.dropped_by_schema.is_empty());
    }

    #[test]
    fn schema_rejects_reserved_and_hostile_names() {
        assert!(ExtractSchema::new(&["Chunk"], &[], &[], true).is_err());
        assert!(ExtractSchema::new(&["Person`"], &[], &[], true).is_err());
        assert!(ExtractSchema::new(&["Person"], &["mentions"], &[], true).is_err());
        assert!(ExtractSchema::new(
            &["Person"],
            &["KNOWS"],
            &[("Person", "KNOWS", "Place")],
            true
        )
        .is_err());
    }

    #[test]
    fn cut_answers_keep_their_complete_entities() {
        let full = json!({
            "entities": [
                {"name": "Ada Lovelace", "type": "Person", "description": "wrote \"notes\" {on} [engines]"},
                {"name": "Charles Babbage", "type": "Person", "description": "designed engines"},
                {"name": "London", "type": "Location", "description": "a city"}
            ],
            "relations": [
                {"source": "Ada Lovelace", "target": "Charles Babbage", "type": "WORKED_WITH", "description": "x", "strength": 0.9},
                {"source": "Charles Babbage", "target": "London", "type": "LIVED_IN", "description": "y", "strength": 0.5}
            ]
        })
        .to_string();
        // Cut at every length: a repair never invents or half-keeps anything.
        let mut repaired_at = Vec::new();
        for end in 1..full.len() {
            let cut = &full[..end];
            let Some(v) = repair_truncated(cut) else {
                continue;
            };
            repaired_at.push(end);
            let entities = v["entities"].as_array().unwrap();
            assert!(!entities.is_empty());
            for e in entities {
                assert!(
                    e["name"].is_string() && e["type"].is_string() && e["description"].is_string(),
                    "only complete entities: {e}"
                );
            }
            for r in v
                .get("relations")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                assert!(r["strength"].is_number(), "only complete relations: {r}");
            }
            let (x, _) = validate(&v, &chunk(), &ExtractSchema::open(), "m");
            assert_eq!(x.entities.len(), entities.len());
        }
        // Repairable from the end of the first entity on, not before.
        let first_entity_end = full.find("\"Person\"}").unwrap() + "\"Person\"}".len();
        assert_eq!(repaired_at.first(), Some(&first_entity_end));
        assert_eq!(repaired_at.len(), full.len() - first_entity_end);
        // Cut inside the last relation: both entities arrays intact, one relation.
        let cut = &full[..full.len() - 20];
        let v = repair_truncated(cut).unwrap();
        assert_eq!(v["entities"].as_array().unwrap().len(), 3);
        assert_eq!(v["relations"].as_array().unwrap().len(), 1);
        // Prose before the JSON, as JSON-mode servers add.
        let v = repair_truncated(&format!("Here you go: {}", &full[..full.len() - 20])).unwrap();
        assert_eq!(v["entities"].as_array().unwrap().len(), 3);
        // Not repairable: nothing complete yet, an empty list, not JSON.
        assert_eq!(repair_truncated(r#"{"entities": [{"name": "Ada"#), None);
        assert_eq!(
            repair_truncated(r#"{"entities": [], "relations": [{"sou"#),
            None
        );
        assert_eq!(repair_truncated("Sure! The entities are"), None);
        assert_eq!(repair_truncated(r#"{"entities": [}"#), None);
    }

    #[test]
    fn a_looping_answer_repairs_to_its_distinct_entities() {
        let one = r#"{"name":"Ada Lovelace","type":"Person","description":"again"},"#;
        let mut looping = String::from(r#"{"entities":["#);
        while looping.len() < 2000 {
            looping.push_str(one);
        }
        looping.truncate(2000);
        assert!(parse_answer(&looping, Some("length")) == Err(AnswerError::Truncated));
        let v = repair_truncated(&looping).unwrap();
        let (x, _) = validate(&v, &chunk(), &ExtractSchema::open(), "m");
        assert_eq!(x.entities.len(), 1, "duplicates resolve to one entity");
    }
}
