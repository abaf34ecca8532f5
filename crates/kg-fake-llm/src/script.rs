//! Scripted extraction answers: a chunk whose text contains a marker is
//! answered with the entities and relations the script gives for it.
//!
//! The script is JSON Lines, one entry a line:
//! `{"marker": "[set-17]", "entities": [{"name": "J. R. R. Tolkien",
//! "type": "Person", "description": "..."}], "relations": [...]}`
//! (entities and relations in the shape of an extraction answer). A chunk
//! containing several markers gets the entries of all of them, in script
//! order; a chunk containing none gets the usual heuristic answer. Lets a
//! test decide exactly which names an LLM "finds" in which chunk.

use serde::Deserialize;
use serde_json::{json, Value};

/// One marker and what a chunk containing it yields.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ScriptEntry {
    /// Text to look for in the chunk.
    pub marker: String,
    /// Entities to answer (`name`, `type`, `description`).
    #[serde(default)]
    pub entities: Vec<Value>,
    /// Relations to answer (`source`, `target`, `type`, `description`,
    /// `strength`).
    #[serde(default)]
    pub relations: Vec<Value>,
}

/// A scripted answer set (empty: every answer is heuristic).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Script {
    entries: Vec<ScriptEntry>,
}

impl Script {
    /// Parses JSON Lines (blank lines skipped); `Err` names the bad line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let e: ScriptEntry =
                serde_json::from_str(line).map_err(|e| format!("script line {}: {e}", i + 1))?;
            if e.marker.is_empty() {
                return Err(format!("script line {}: empty marker", i + 1));
            }
            entries.push(e);
        }
        Ok(Self { entries })
    }

    /// Reads and parses a script file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read script {}: {e}", path.display()))?;
        Self::parse(&text)
    }

    /// Entries in the script.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the script has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The scripted answer for a chunk `text`, if any marker is in it.
    pub fn answer(&self, text: &str) -> Option<Value> {
        let hits: Vec<&ScriptEntry> = self
            .entries
            .iter()
            .filter(|e| text.contains(&e.marker))
            .collect();
        if hits.is_empty() {
            return None;
        }
        let entities: Vec<Value> = hits.iter().flat_map(|e| e.entities.clone()).collect();
        let relations: Vec<Value> = hits.iter().flat_map(|e| e.relations.clone()).collect();
        Some(json!({ "entities": entities, "relations": relations }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_pick_entries() {
        let s = Script::parse(
            r#"{"marker": "[a]", "entities": [{"name": "Acme Corp", "type": "Organization", "description": "d"}]}

{"marker": "[b]", "entities": [{"name": "ACME Corporation", "type": "Organization", "description": "d"}], "relations": [{"source": "x", "target": "y", "type": "R", "description": "", "strength": 1}]}"#,
        )
        .unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s.answer("nothing here"), None);
        let one = s.answer("chunk [a] text").unwrap();
        assert_eq!(one["entities"].as_array().unwrap().len(), 1);
        assert_eq!(one["relations"].as_array().unwrap().len(), 0);
        let both = s.answer("[b] and [a]").unwrap();
        assert_eq!(both["entities"][0]["name"], "Acme Corp", "script order");
        assert_eq!(both["relations"].as_array().unwrap().len(), 1);
        assert!(Script::parse("{\"marker\": \"\"}").is_err());
        assert!(Script::parse("not json").unwrap_err().contains("line 1"));
    }
}
