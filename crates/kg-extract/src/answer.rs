//! Reading and validating the LLM's answer.
//!
//! Parsing is tolerant about form and strict about content. Servers in JSON
//! mode (and models without it) wrap JSON in code fences or prose, so the
//! parser strips fences and, failing that, tries the outermost `{...}`. But
//! an answer must be an object with an `entities` array: an empty, prose,
//! truncated or off-schema answer is an [`AnswerError`], never "nothing
//! found" (that is `{"entities": []}`).
//!
//! Validation turns raw strings into kg-core identifiers: an entity whose
//! type is not a safe [`Label`] (or is reserved, or off a strict schema) is
//! rejected and counted; so is a relation with an invalid [`RelType`]; a
//! relation whose endpoints are not entities of the same answer is dropped
//! and counted. Nothing raw reaches an identifier.

use std::collections::HashMap;

use kg_core::{
    entity_key, Chunk, EntityId, ExtractedEntity, ExtractedRelation, Extraction, Label, RelType,
};
use serde_json::Value;

use crate::config::ExtractSchema;

/// Why an answer could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// No content at all.
    #[error("the answer is empty")]
    Empty,
    /// The model stopped at its token limit; the JSON is cut.
    #[error("the answer was cut at the token limit (finish_reason=length)")]
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

fn strip_fences(s: &str) -> &str {
    let Some(rest) = s.strip_prefix("```") else {
        return s;
    };
    let rest = rest.strip_prefix("json").unwrap_or(rest);
    rest.trim_end().strip_suffix("```").unwrap_or(rest).trim()
}

/// What validation dropped from one answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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
            Ok(l)
                if !l.is_reserved()
                    && (!schema.is_strict()
                        || schema.entity_types().is_empty()
                        || schema.entity_types().contains(&l)) =>
            {
                l
            }
            _ => {
                tracing::debug!(chunk = %chunk.id, "entity type rejected: {raw_type:?}");
                report.rejected_entities += 1;
                continue;
            }
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
        let (Some(&si), Some(&ti)) = (
            by_key.get(&entity_key(source)),
            by_key.get(&entity_key(target)),
        ) else {
            report.dropped_relations += 1;
            continue;
        };
        let (Some(s), Some(t)) = (entities.get(si), entities.get(ti)) else {
            report.dropped_relations += 1;
            continue;
        };
        let rel_type = match RelType::new(raw_type) {
            Ok(r)
                if !r.is_reserved()
                    && allowed_relation(schema, &s.entity_type, &r, &t.entity_type) =>
            {
                r
            }
            _ => {
                tracing::debug!(chunk = %chunk.id, "relation type rejected: {raw_type:?}");
                report.rejected_relations += 1;
                continue;
            }
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

fn allowed_relation(schema: &ExtractSchema, s: &Label, r: &RelType, t: &Label) -> bool {
    if !schema.is_strict() {
        return true;
    }
    if !schema.relation_types().is_empty() && !schema.relation_types().contains(r) {
        return false;
    }
    schema.patterns().is_empty()
        || schema
            .patterns()
            .iter()
            .any(|(ps, pr, pt)| ps == s && pr == r && pt == t)
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
                malformed_entries: 1
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
                {"source": "Alice", "target": "Acme", "type": "LIKES"}
            ]
        });
        let (x, report) = validate(&answer, &chunk(), &schema, "m");
        assert_eq!(x.entities.len(), 2);
        assert_eq!(x.relations.len(), 1);
        assert_eq!(
            (report.rejected_entities, report.rejected_relations),
            (1, 2)
        );
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
}
