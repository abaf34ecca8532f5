//! The extraction schema: which entity and relation types the LLM is asked
//! for, and whether answers outside them are kept.
//!
//! A schema is built in code ([`ExtractSchema::new`] and the `with_*`
//! methods) or read from TOML ([`ExtractSchema::from_toml`] for a file of
//! its own, [`ExtractSchema::from_config_toml`] for the `[extract.schema]`
//! table of a `kg.toml`):
//!
//! ```toml
//! mode = "strict"                 # or "open" (the default)
//! patterns = ["Person -WORKS_AT-> Organization"]
//!
//! [[entities]]
//! type = "Person"
//! description = "a human being named in the text"
//! properties = ["role"]
//!
//! [[entities]]
//! type = "Organization"
//!
//! [[relations]]
//! type = "WORKS_AT"
//! description = "employment"
//! ```
//!
//! Every error names the line and column it is about: an unknown key, a
//! type that is not a valid identifier (or is reserved for the lexical
//! graph), a duplicate, a pattern that does not read `Source -TYPE->
//! Target` or that names an undeclared type.
//!
//! In strict mode, an answer's entity of another type, or relation of
//! another type or shape, is dropped and counted per type in
//! [`SchemaDrops`]; in open mode the lists guide the LLM and other types
//! are kept. Properties are asked for in the prompt: the LLM is told to
//! state them in the entity's description (they are not separate graph
//! properties).

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use kg_core::{Label, PropertyKey, RelType};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::ExtractError;

/// Whether the schema binds the LLM's answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SchemaMode {
    /// The lists guide; other types are kept.
    #[default]
    Open,
    /// Entities and relations outside the lists (or the patterns, when
    /// there are any) are dropped and counted.
    Strict,
}

impl SchemaMode {
    /// `open` or `strict`.
    pub fn as_str(self) -> &'static str {
        match self {
            SchemaMode::Open => "open",
            SchemaMode::Strict => "strict",
        }
    }
}

/// What a schema says about one entity type beyond its name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TypeNotes {
    /// What the type means, for the LLM (may be empty).
    pub description: String,
    /// Facts to state in the description of entities of this type.
    pub properties: Vec<PropertyKey>,
}

/// What the LLM may extract. Open by default: any entity and relation type
/// (validated into identifiers). With types listed and strict mode, answers
/// using other types are dropped (and counted); in open mode the lists are
/// suggestions in the prompt.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExtractSchema {
    entity_types: Vec<Label>,
    relation_types: Vec<RelType>,
    patterns: Vec<(Label, RelType, Label)>,
    entity_notes: BTreeMap<Label, TypeNotes>,
    relation_notes: BTreeMap<RelType, String>,
    strict: bool,
}

fn relation_type(raw: &str) -> Result<RelType, ExtractError> {
    let rel = RelType::new(raw).map_err(|e| ExtractError::Schema(e.to_string()))?;
    if rel.is_reserved() {
        return Err(ExtractError::Schema(format!(
            "relation type {raw:?} is reserved for the lexical graph"
        )));
    }
    Ok(rel)
}

fn entity_label(raw: &str) -> Result<Label, ExtractError> {
    let label = Label::new(raw).map_err(|e| ExtractError::Schema(e.to_string()))?;
    if label.is_reserved() {
        return Err(ExtractError::Schema(format!(
            "entity type {raw:?} is reserved for the lexical graph"
        )));
    }
    Ok(label)
}

impl ExtractSchema {
    /// No constraints: the LLM names types, kg validates them.
    pub fn open() -> Self {
        Self::default()
    }

    /// A schema from raw type names and `(source, relation, target)`
    /// patterns; every name must be a safe, non-reserved identifier, and a
    /// pattern's types must be in the lists when the lists are given.
    pub fn new(
        entity_types: &[&str],
        relation_types: &[&str],
        patterns: &[(&str, &str, &str)],
        strict: bool,
    ) -> Result<Self, ExtractError> {
        let entity_types = entity_types
            .iter()
            .map(|t| entity_label(t))
            .collect::<Result<Vec<_>, _>>()?;
        let relation_types = relation_types
            .iter()
            .map(|t| relation_type(t))
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::new();
        for (s, r, t) in patterns {
            let p = (entity_label(s)?, relation_type(r)?, entity_label(t)?);
            if !entity_types.is_empty()
                && (!entity_types.contains(&p.0) || !entity_types.contains(&p.2))
            {
                return Err(ExtractError::Schema(format!(
                    "pattern ({s}, {r}, {t}) uses an entity type not in the list"
                )));
            }
            if !relation_types.is_empty() && !relation_types.contains(&p.1) {
                return Err(ExtractError::Schema(format!(
                    "pattern ({s}, {r}, {t}) uses a relation type not in the list"
                )));
            }
            out.push(p);
        }
        Ok(Self {
            entity_types,
            relation_types,
            patterns: out,
            strict,
            ..Self::default()
        })
    }

    /// The same schema, with a description and properties for one of its
    /// entity types (ignored for a type it does not list).
    pub fn with_entity_notes(mut self, label: &Label, notes: TypeNotes) -> Self {
        if self.entity_types.contains(label) {
            self.entity_notes.insert(label.clone(), notes);
        }
        self
    }

    /// The same schema, with a description for one of its relation types
    /// (ignored for a type it does not list).
    pub fn with_relation_description(mut self, rel: &RelType, description: &str) -> Self {
        if self.relation_types.contains(rel) && !description.trim().is_empty() {
            self.relation_notes
                .insert(rel.clone(), description.trim().to_string());
        }
        self
    }

    /// Allowed (or suggested) entity types.
    pub fn entity_types(&self) -> &[Label] {
        &self.entity_types
    }

    /// Allowed (or suggested) relation types.
    pub fn relation_types(&self) -> &[RelType] {
        &self.relation_types
    }

    /// Allowed `(source type, relation, target type)` patterns.
    pub fn patterns(&self) -> &[(Label, RelType, Label)] {
        &self.patterns
    }

    /// Description and properties of an entity type, if the schema gives
    /// any.
    pub fn entity_notes(&self, label: &Label) -> Option<&TypeNotes> {
        self.entity_notes.get(label)
    }

    /// Description of a relation type, if the schema gives one.
    pub fn relation_description(&self, rel: &RelType) -> Option<&str> {
        self.relation_notes.get(rel).map(String::as_str)
    }

    /// Whether answers outside the lists are dropped.
    pub fn is_strict(&self) -> bool {
        self.strict
    }

    /// Open or strict.
    pub fn mode(&self) -> SchemaMode {
        if self.strict {
            SchemaMode::Strict
        } else {
            SchemaMode::Open
        }
    }

    /// Whether the schema lists nothing (the open schema, or a mode alone).
    pub fn is_empty(&self) -> bool {
        self.entity_types.is_empty() && self.relation_types.is_empty() && self.patterns.is_empty()
    }

    /// A stable text form of everything the prompt says about the schema;
    /// part of the cache key and of the prompt version.
    pub fn fingerprint(&self) -> String {
        let join = |v: Vec<&str>| v.join(",");
        let mut out = format!(
            "e[{}] r[{}] p[{}] strict={}",
            join(self.entity_types.iter().map(Label::as_str).collect()),
            join(self.relation_types.iter().map(RelType::as_str).collect()),
            self.patterns
                .iter()
                .map(|(s, r, t)| format!("{s}-{r}-{t}"))
                .collect::<Vec<_>>()
                .join(","),
            self.strict
        );
        // Notes were added after the first schemas were cached: a schema
        // without any keeps its old fingerprint (and cache).
        for (label, notes) in &self.entity_notes {
            let props: Vec<&str> = notes.properties.iter().map(PropertyKey::as_str).collect();
            out.push_str(&format!(
                " en[{label}:{:?}:{}]",
                notes.description,
                props.join(",")
            ));
        }
        for (rel, d) in &self.relation_notes {
            out.push_str(&format!(" rn[{rel}:{d:?}]"));
        }
        out
    }

    /// The schema as the TOML that [`Self::from_toml`] reads back.
    pub fn to_toml(&self) -> String {
        self.write_toml("")
    }

    /// The schema as the `[extract.schema]` table of a `kg.toml` (what
    /// [`Self::from_config_toml`] reads back).
    pub fn to_config_toml(&self) -> String {
        format!("[extract.schema]\n{}", self.write_toml("extract.schema."))
    }

    /// The TOML of the schema, its tables named under `prefix`.
    fn write_toml(&self, prefix: &str) -> String {
        let mut out = format!("mode = \"{}\"\n", self.mode().as_str());
        if !self.patterns.is_empty() {
            out.push_str("patterns = [\n");
            for (s, r, t) in &self.patterns {
                out.push_str(&format!("  \"{s} -{r}-> {t}\",\n"));
            }
            out.push_str("]\n");
        }
        for label in &self.entity_types {
            out.push_str(&format!("\n[[{prefix}entities]]\ntype = \"{label}\"\n"));
            if let Some(notes) = self.entity_notes.get(label) {
                if !notes.description.is_empty() {
                    out.push_str(&format!(
                        "description = {}\n",
                        toml_string(&notes.description)
                    ));
                }
                if !notes.properties.is_empty() {
                    let props: Vec<String> = notes
                        .properties
                        .iter()
                        .map(|p| format!("\"{p}\""))
                        .collect();
                    out.push_str(&format!("properties = [{}]\n", props.join(", ")));
                }
            }
        }
        for rel in &self.relation_types {
            out.push_str(&format!("\n[[{prefix}relations]]\ntype = \"{rel}\"\n"));
            if let Some(d) = self.relation_notes.get(rel) {
                out.push_str(&format!("description = {}\n", toml_string(d)));
            }
        }
        out
    }

    /// Reads a schema file: the keys of [the module docs](self) at its top
    /// level, or (as `kg schema suggest` prints it) under an
    /// `[extract.schema]` table.
    pub fn from_toml(text: &str) -> Result<Self, SchemaFileError> {
        let table: toml::Table = text
            .parse()
            .map_err(|e| SchemaFileError::from_toml(text, &e))?;
        if table.contains_key("extract") {
            return Self::from_config_toml(text)?.ok_or_else(|| SchemaFileError {
                line: 1,
                column: 1,
                message: "the file has an [extract] table but no [extract.schema] in it".into(),
            });
        }
        let raw: SchemaToml =
            toml::from_str(text).map_err(|e| SchemaFileError::from_toml(text, &e))?;
        raw.build(text)
    }

    /// Reads the `[extract.schema]` table of a `kg.toml` (other keys are
    /// not looked at); `None` when the file has none. Lines are the file's.
    pub fn from_config_toml(text: &str) -> Result<Option<Self>, SchemaFileError> {
        let raw: ConfigToml =
            toml::from_str(text).map_err(|e| SchemaFileError::from_toml(text, &e))?;
        match raw.extract.and_then(|x| x.schema) {
            Some(s) => s.build(text).map(Some),
            None => Ok(None),
        }
    }
}

/// A TOML basic string with `"` and `\` escaped.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A schema file (or `[extract.schema]` table) kg cannot use, with where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct SchemaFileError {
    /// 1-based line of the offending text.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl SchemaFileError {
    fn at(text: &str, span: Range<usize>, message: impl Into<String>) -> Self {
        let before = text.get(..span.start).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let column = before
            .rsplit('\n')
            .next()
            .map(|l| l.chars().count())
            .unwrap_or(0)
            + 1;
        Self {
            line,
            column,
            message: message.into(),
        }
    }

    fn from_toml(text: &str, e: &toml::de::Error) -> Self {
        let message = e.message().trim().to_string();
        match e.span() {
            Some(span) => Self::at(text, span, message),
            None => Self {
                line: 1,
                column: 1,
                message,
            },
        }
    }
}

#[derive(Deserialize)]
struct ConfigToml {
    #[serde(default)]
    extract: Option<ExtractToml>,
}

#[derive(Deserialize)]
struct ExtractToml {
    #[serde(default)]
    schema: Option<SchemaToml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SchemaToml {
    #[serde(default)]
    mode: Option<Spanned<String>>,
    #[serde(default)]
    entities: Vec<EntityToml>,
    #[serde(default)]
    relations: Vec<RelationToml>,
    #[serde(default)]
    patterns: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntityToml {
    #[serde(rename = "type")]
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    properties: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RelationToml {
    #[serde(rename = "type")]
    name: Spanned<String>,
    #[serde(default)]
    description: String,
}

/// Splits `Source -TYPE-> Target` (spaces optional) into its three names.
fn split_pattern(raw: &str) -> Option<(&str, &str, &str)> {
    let (source, rest) = raw.split_once('-')?;
    let (rel, target) = rest.split_once("->")?;
    let (source, rel, target) = (source.trim(), rel.trim(), target.trim());
    if source.is_empty() || rel.is_empty() || target.is_empty() {
        return None;
    }
    Some((source, rel, target))
}

impl SchemaToml {
    fn build(self, text: &str) -> Result<ExtractSchema, SchemaFileError> {
        let err = |span: Range<usize>, m: String| SchemaFileError::at(text, span, m);
        let strict = match &self.mode {
            None => false,
            Some(m) => match m.get_ref().trim() {
                "open" => false,
                "strict" => true,
                other => {
                    return Err(err(
                        m.span(),
                        format!("mode {other:?}: expected \"open\" or \"strict\""),
                    ))
                }
            },
        };
        let mut schema = ExtractSchema {
            strict,
            ..ExtractSchema::default()
        };
        for e in self.entities {
            let label = entity_label(e.name.get_ref())
                .map_err(|x| err(e.name.span(), format!("entity type: {}", schema_msg(x))))?;
            if schema.entity_types.contains(&label) {
                return Err(err(
                    e.name.span(),
                    format!("entity type {label} is declared twice"),
                ));
            }
            let mut properties = Vec::new();
            for p in &e.properties {
                let key = PropertyKey::new(p.get_ref())
                    .map_err(|x| err(p.span(), format!("property of {label}: {x}")))?;
                if !properties.contains(&key) {
                    properties.push(key);
                }
            }
            let description = e.description.trim().to_string();
            if !description.is_empty() || !properties.is_empty() {
                schema.entity_notes.insert(
                    label.clone(),
                    TypeNotes {
                        description,
                        properties,
                    },
                );
            }
            schema.entity_types.push(label);
        }
        for r in self.relations {
            let rel = relation_type(r.name.get_ref())
                .map_err(|x| err(r.name.span(), format!("relation type: {}", schema_msg(x))))?;
            if schema.relation_types.contains(&rel) {
                return Err(err(
                    r.name.span(),
                    format!("relation type {rel} is declared twice"),
                ));
            }
            if !r.description.trim().is_empty() {
                schema
                    .relation_notes
                    .insert(rel.clone(), r.description.trim().to_string());
            }
            schema.relation_types.push(rel);
        }
        for p in self.patterns {
            let span = p.span();
            let Some((s, r, t)) = split_pattern(p.get_ref()) else {
                return Err(err(
                    span,
                    format!(
                        "pattern {:?} must read `Source -RELATION-> Target`",
                        p.get_ref()
                    ),
                ));
            };
            let in_pattern =
                |x: ExtractError| format!("pattern {:?}: {}", p.get_ref(), schema_msg(x));
            let source = entity_label(s).map_err(|x| err(span.clone(), in_pattern(x)))?;
            let rel = relation_type(r).map_err(|x| err(span.clone(), in_pattern(x)))?;
            let target = entity_label(t).map_err(|x| err(span.clone(), in_pattern(x)))?;
            for label in [&source, &target] {
                if !schema.entity_types.contains(label) {
                    return Err(err(
                        span.clone(),
                        format!(
                            "pattern {:?} names entity type {label}, which is not declared in `entities`",
                            p.get_ref()
                        ),
                    ));
                }
            }
            if !schema.relation_types.contains(&rel) {
                return Err(err(
                    span.clone(),
                    format!(
                        "pattern {:?} names relation type {rel}, which is not declared in `relations`",
                        p.get_ref()
                    ),
                ));
            }
            let triple = (source, rel, target);
            if !schema.patterns.contains(&triple) {
                schema.patterns.push(triple);
            }
        }
        Ok(schema)
    }
}

fn schema_msg(e: ExtractError) -> String {
    match e {
        ExtractError::Schema(m) => m,
        other => other.to_string(),
    }
}

/// The most distinct types [`SchemaDrops`] keeps per kind; others are
/// counted under [`SchemaDrops::OTHER`].
pub const MAX_DROP_TYPES: usize = 64;

/// Answers dropped by a strict schema, per type: entity types, and relation
/// types (or, for an allowed type in a disallowed shape, the shape
/// `Source -TYPE-> Target`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SchemaDrops {
    /// Dropped entities per answered type.
    pub entities: BTreeMap<String, u64>,
    /// Dropped relations per answered type or shape.
    pub relations: BTreeMap<String, u64>,
}

impl SchemaDrops {
    /// The key types past [`MAX_DROP_TYPES`] are counted under.
    pub const OTHER: &'static str = "(other types)";

    fn bump(map: &mut BTreeMap<String, u64>, key: &str, n: u64) {
        if n == 0 {
            return;
        }
        if let Some(v) = map.get_mut(key) {
            *v += n;
        } else if map.len() < MAX_DROP_TYPES {
            map.insert(key.to_string(), n);
        } else {
            *map.entry(Self::OTHER.to_string()).or_default() += n;
        }
    }

    /// Counts one dropped entity of type `entity_type`.
    pub fn entity(&mut self, entity_type: &str) {
        Self::bump(&mut self.entities, entity_type, 1);
    }

    /// Counts one dropped relation of type (or shape) `relation`.
    pub fn relation(&mut self, relation: &str) {
        Self::bump(&mut self.relations, relation, 1);
    }

    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &SchemaDrops) {
        for (k, n) in &other.entities {
            Self::bump(&mut self.entities, k, *n);
        }
        for (k, n) in &other.relations {
            Self::bump(&mut self.relations, k, *n);
        }
    }

    /// `self` minus `before` (a run's share of lifetime counts).
    pub fn minus(&self, before: &SchemaDrops) -> SchemaDrops {
        let sub = |now: &BTreeMap<String, u64>, then: &BTreeMap<String, u64>| {
            now.iter()
                .map(|(k, n)| {
                    (
                        k.clone(),
                        n.saturating_sub(then.get(k).copied().unwrap_or(0)),
                    )
                })
                .filter(|(_, n)| *n > 0)
                .collect()
        };
        SchemaDrops {
            entities: sub(&self.entities, &before.entities),
            relations: sub(&self.relations, &before.relations),
        }
    }

    /// Whether nothing was dropped.
    pub fn is_empty(&self) -> bool {
        self.entities.is_empty() && self.relations.is_empty()
    }

    /// Dropped entities, all types.
    pub fn entity_total(&self) -> u64 {
        self.entities.values().sum()
    }

    /// Dropped relations, all types.
    pub fn relation_total(&self) -> u64 {
        self.relations.values().sum()
    }
}

impl fmt::Display for SchemaDrops {
    /// `3 entities (Planet 1, Ship 2), 1 relation (LOVES 1)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let part = |n: u64, one: &str, many: &str, map: &BTreeMap<String, u64>| {
            let list: Vec<String> = map.iter().map(|(k, v)| format!("{k} {v}")).collect();
            format!(
                "{n} {} ({})",
                if n == 1 { one } else { many },
                list.join(", ")
            )
        };
        let mut parts = Vec::new();
        if !self.entities.is_empty() {
            parts.push(part(
                self.entity_total(),
                "entity",
                "entities",
                &self.entities,
            ));
        }
        if !self.relations.is_empty() {
            parts.push(part(
                self.relation_total(),
                "relation",
                "relations",
                &self.relations,
            ));
        }
        if parts.is_empty() {
            return f.write_str("none");
        }
        f.write_str(&parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
mode = "strict"
patterns = ["Person -WORKS_AT-> Organization", "Person-FOUNDED->Organization"]

[[entities]]
type = "Person"
description = "a human being"
properties = ["role", "birth year"]

[[entities]]
type = "organization"

[[relations]]
type = "works at"
description = "employment"

[[relations]]
type = "FOUNDED"
"#;

    #[test]
    fn a_schema_file_reads_types_notes_and_patterns() {
        let s = ExtractSchema::from_toml(GOOD).unwrap();
        assert!(s.is_strict());
        let names: Vec<&str> = s.entity_types().iter().map(Label::as_str).collect();
        assert_eq!(names, ["Person", "Organization"]);
        let rels: Vec<&str> = s.relation_types().iter().map(RelType::as_str).collect();
        assert_eq!(rels, ["WORKS_AT", "FOUNDED"]);
        assert_eq!(s.patterns().len(), 2);
        let person = Label::new("Person").unwrap();
        let notes = s.entity_notes(&person).unwrap();
        assert_eq!(notes.description, "a human being");
        let props: Vec<&str> = notes.properties.iter().map(PropertyKey::as_str).collect();
        assert_eq!(props, ["role", "birth_year"]);
        let works = RelType::new("WORKS_AT").unwrap();
        assert_eq!(s.relation_description(&works), Some("employment"));
    }

    #[test]
    fn a_schema_file_may_hold_the_kg_toml_table() {
        let nested = GOOD
            .replace("[[entities]]", "[[extract.schema.entities]]")
            .replace("[[relations]]", "[[extract.schema.relations]]")
            .replace("mode = ", "[extract.schema]\nmode = ");
        assert_eq!(
            ExtractSchema::from_toml(&nested).unwrap(),
            ExtractSchema::from_toml(GOOD).unwrap()
        );
        let e = ExtractSchema::from_toml("[extract]\nx = 1\n").unwrap_err();
        assert!(e.message.contains("no [extract.schema]"), "{e}");
    }

    #[test]
    fn to_toml_reads_back_as_the_same_schema() {
        let s = ExtractSchema::from_toml(GOOD).unwrap();
        let again = ExtractSchema::from_toml(&s.to_toml()).unwrap();
        assert_eq!(s, again);
        let nested = ExtractSchema::from_config_toml(&s.to_config_toml()).unwrap();
        assert_eq!(nested.as_ref(), Some(&s));
        assert_eq!(s.fingerprint(), again.fingerprint());
    }

    #[test]
    fn the_config_table_is_read_from_a_kg_toml_and_absent_is_none() {
        let file = format!(
            "data_dir = \"x\"\n[llm]\nmodel = \"m\"\n{}",
            GOOD.replace("[[entities]]", "[[extract.schema.entities]]")
                .replace("[[relations]]", "[[extract.schema.relations]]")
                .replace("mode = ", "[extract.schema]\nmode = ")
        );
        let s = ExtractSchema::from_config_toml(&file).unwrap().unwrap();
        assert_eq!(s, ExtractSchema::from_toml(GOOD).unwrap());
        assert_eq!(
            ExtractSchema::from_config_toml("[llm]\nmodel = \"m\"\n").unwrap(),
            None
        );
    }

    fn line_of(text: &str) -> (usize, String) {
        let e = ExtractSchema::from_toml(text).unwrap_err();
        (e.line, e.message)
    }

    #[test]
    fn bad_schema_files_name_the_line() {
        // An unknown key.
        let (line, m) = line_of("mode = \"open\"\n[[entities]]\ntype = \"Person\"\ncolour = 1\n");
        assert_eq!(line, 4, "{m}");
        assert!(m.contains("colour"), "{m}");
        // A type that is not an identifier.
        let (line, m) = line_of("\n[[entities]]\ntype = \"Per$on\"\n");
        assert_eq!(line, 3, "{m}");
        assert!(m.contains("Per$on"), "{m}");
        // A reserved type.
        let (line, m) = line_of("[[entities]]\ntype = \"Chunk\"\n");
        assert_eq!(line, 2, "{m}");
        assert!(m.contains("reserved"), "{m}");
        // A pattern naming an undeclared type.
        let (line, m) = line_of(
            "[[entities]]\ntype = \"Person\"\n[[relations]]\ntype = \"KNOWS\"\n\
             [[relations]]\ntype = \"LIVES_IN\"\n\n\npatterns = []\n",
        );
        // (patterns after a table belong to it: an unknown key there)
        assert_eq!(line, 9, "{m}");
        let (line, m) = line_of(
            "patterns = [\n  \"Person -KNOWS-> Person\",\n  \"Person -LIVES_IN-> City\",\n]\n\
             [[entities]]\ntype = \"Person\"\n[[relations]]\ntype = \"KNOWS\"\n\
             [[relations]]\ntype = \"LIVES_IN\"\n",
        );
        assert_eq!(line, 3, "{m}");
        assert!(m.contains("City") && m.contains("not declared"), "{m}");
        // An undeclared relation type in a pattern.
        let (line, m) =
            line_of("patterns = [\"Person -KNOWS-> Person\"]\n[[entities]]\ntype = \"Person\"\n");
        assert_eq!(line, 1, "{m}");
        assert!(m.contains("KNOWS"), "{m}");
        // A pattern that does not parse, a bad mode, a duplicate.
        let (line, _) = line_of("\n\npatterns = [\"Person knows Person\"]\n");
        assert_eq!(line, 3);
        let (line, m) = line_of("mode = \"lenient\"\n");
        assert_eq!(line, 1);
        assert!(m.contains("lenient"), "{m}");
        let (line, m) =
            line_of("[[entities]]\ntype = \"Person\"\n[[entities]]\ntype = \"person\"\n");
        assert_eq!(line, 4);
        assert!(m.contains("twice"), "{m}");
        // Not TOML at all.
        let (line, _) = line_of("mode = \"open\"\n[[entities]\n");
        assert_eq!(line, 2);
    }

    #[test]
    fn the_fingerprint_changes_with_any_part_of_the_schema() {
        let base = ExtractSchema::from_toml(GOOD).unwrap();
        let variants = [
            GOOD.replace("strict", "open"),
            GOOD.replace("a human being", "a person"),
            GOOD.replace("\"role\", ", ""),
            GOOD.replace("description = \"employment\"\n", ""),
            GOOD.replace(", \"Person-FOUNDED->Organization\"", ""),
        ];
        for v in variants {
            let other = ExtractSchema::from_toml(&v).unwrap();
            assert_ne!(base.fingerprint(), other.fingerprint(), "{v}");
        }
        // A schema without notes keeps the fingerprint it always had.
        let plain = ExtractSchema::new(&["Person"], &["KNOWS"], &[], true).unwrap();
        assert_eq!(plain.fingerprint(), "e[Person] r[KNOWS] p[] strict=true");
    }

    #[test]
    fn drops_cap_the_number_of_types() {
        let mut d = SchemaDrops::default();
        for i in 0..100 {
            d.entity(&format!("T{i}"));
        }
        d.relation("LOVES");
        assert_eq!(d.entities.len(), MAX_DROP_TYPES + 1);
        assert_eq!(d.entities.get(SchemaDrops::OTHER), Some(&36));
        assert_eq!(d.entity_total(), 100);
        let before = d.clone();
        d.entity("T0");
        let run = d.minus(&before);
        assert_eq!(run.entities.len(), 1);
        assert_eq!(run.to_string(), "1 entity (T0 1)");
    }
}
