//! Deterministic "extraction" answers and embedding vectors.
//!
//! Chat: the chunk text (between `<chunk>` and `</chunk>` in the last user
//! message if present, else that whole message) is split into sentences;
//! every run of capitalised words is an entity (a leading stop word such as
//! "The" is dropped), and every pair of entities in one sentence is a
//! relation. Types come from the request's JSON schema `enum`s when it has
//! them, else from a fixed list, chosen by a hash of the name, so the same
//! name always gets the same type.
//!
//! Embeddings: feature hashing of the lower-cased words (each word adds a
//! seeded pseudo-random ±1 to a few dimensions), normalised to unit length.
//! Texts sharing words get similar vectors, so similarity search over fake
//! vectors behaves sensibly; a text with no words hashes as a whole.

use serde_json::{json, Value};

use crate::fault::{hash, splitmix, unit};

/// Words that start a sentence capitalised without naming anything.
const STOP_WORDS: &[&str] = &[
    "The", "A", "An", "In", "On", "At", "It", "This", "That", "These", "Those", "He", "She",
    "They", "We", "I", "But", "And", "Or", "If", "When", "While", "After", "Before", "Its", "His",
    "Her", "Their", "Our", "As", "Of", "For", "From", "By", "With", "To", "There",
];

const DEFAULT_ENTITY_TYPES: &[&str] = &["Person", "Organization", "Location", "Product", "Concept"];
const DEFAULT_RELATION_TYPES: &[&str] = &["RELATED_TO", "WORKS_WITH", "PART_OF", "MENTIONS"];

/// Type names that must never become identifiers.
pub(crate) const HOSTILE_TYPES: &[&str] = &[
    "Person`}) DETACH DELETE n //",
    "Org})-[:X]->(m",
    "`",
    "Label\nMATCH (n) DETACH DELETE n",
    "Robert'); DROP TABLE",
];

/// The most entities per answer, and relations per sentence.
const MAX_ENTITIES: usize = 24;
const MAX_PAIRS_PER_SENTENCE: usize = 12;

/// The text to extract from, out of a chat request's messages.
pub(crate) fn chunk_text(messages: &[Value]) -> String {
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .and_then(|m| m.get("content"))
        .map(content_string)
        .unwrap_or_default();
    match (last_user.find("<chunk>"), last_user.rfind("</chunk>")) {
        (Some(start), Some(end)) if start + 7 <= end => last_user[start + 7..end].to_string(),
        _ => last_user,
    }
}

/// A message `content`: a string, or an array of `{type: text, text}` parts.
pub(crate) fn content_string(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The `enum` of allowed values at `items.properties.type` of the schema's
/// `properties.<list>`, if the request carries a JSON schema with one.
fn schema_enum(request: &Value, list: &str) -> Option<Vec<String>> {
    let values = request
        .pointer("/response_format/json_schema/schema/properties")?
        .get(list)?
        .pointer("/items/properties/type/enum")?
        .as_array()?;
    let out: Vec<String> = values
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    (!out.is_empty()).then_some(out)
}

fn pick<'a>(options: &'a [String], seed: u64, key: &str) -> &'a str {
    let i = (hash(seed, key.as_bytes()) % options.len().max(1) as u64) as usize;
    options.get(i).map(String::as_str).unwrap_or("Concept")
}

/// Entities and relations found in `text`, as the answer JSON.
pub(crate) fn extraction(request: &Value, text: &str, seed: u64, hostile: bool) -> Value {
    let entity_types = schema_enum(request, "entities")
        .unwrap_or_else(|| DEFAULT_ENTITY_TYPES.iter().map(|s| s.to_string()).collect());
    let relation_types = schema_enum(request, "relations").unwrap_or_else(|| {
        DEFAULT_RELATION_TYPES
            .iter()
            .map(|s| s.to_string())
            .collect()
    });
    let mut names: Vec<String> = Vec::new();
    let mut entities = Vec::new();
    let mut relations = Vec::new();
    for sentence in text.split(['.', '!', '?', '\n', ';']) {
        let in_sentence = phrases(sentence);
        let mut here: Vec<String> = Vec::new();
        for name in in_sentence {
            if !here.contains(&name) {
                here.push(name.clone());
            }
            if names.contains(&name) || names.len() >= MAX_ENTITIES {
                continue;
            }
            let entity_type = pick(&entity_types, seed, &name).to_string();
            let snippet: String = sentence.trim().chars().take(120).collect();
            entities.push(json!({
                "name": name,
                "type": entity_type,
                "description": format!("{name}, as mentioned in: {snippet}"),
            }));
            names.push(name);
        }
        let mut pairs = 0;
        'pairs: for (i, a) in here.iter().enumerate() {
            for b in here.iter().skip(i + 1) {
                if pairs >= MAX_PAIRS_PER_SENTENCE {
                    break 'pairs;
                }
                if !names.contains(a) || !names.contains(b) {
                    continue;
                }
                let key = format!("{a}\u{1f}{b}");
                let strength = 0.5 + 0.5 * unit(hash(seed, key.as_bytes()));
                relations.push(json!({
                    "source": a,
                    "target": b,
                    "type": pick(&relation_types, seed, &key),
                    "description": format!("{a} and {b} appear together"),
                    "strength": (strength * 100.0).round() / 100.0,
                }));
                pairs += 1;
            }
        }
    }
    if hostile {
        let bad = HOSTILE_TYPES
            .get((hash(seed, text.as_bytes()) % HOSTILE_TYPES.len() as u64) as usize)
            .copied()
            .unwrap_or("`");
        if let Some(first) = entities.first_mut() {
            first["type"] = json!(bad);
        }
        if let Some(first) = relations.first_mut() {
            first["type"] = json!(bad);
        }
        entities.push(json!({"name": "Mallory", "type": bad, "description": "a hostile type"}));
    }
    json!({ "entities": entities, "relations": relations })
}

/// Runs of capitalised words in one sentence, leading stop words dropped.
fn phrases(sentence: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut run: Vec<&str> = Vec::new();
    let flush = |run: &mut Vec<&str>, out: &mut Vec<String>| {
        while run.first().is_some_and(|w| STOP_WORDS.contains(w)) {
            run.remove(0);
        }
        if !run.is_empty() {
            out.push(run.join(" "));
        }
        run.clear();
    };
    for raw in sentence.split_whitespace() {
        let word = raw.trim_matches(|c: char| !c.is_alphanumeric());
        let capitalised = word.chars().next().is_some_and(char::is_uppercase);
        // A comma or colon after a word ends the phrase after it.
        let ends = raw.ends_with([',', ':', ')', '"']);
        if capitalised {
            run.push(word);
            if ends {
                flush(&mut run, &mut out);
            }
        } else {
            flush(&mut run, &mut out);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// Whether a user message asks to summarise descriptions (`Summarise the
/// descriptions of ...`, then descriptions between `<<<DESCRIPTION n>>>`
/// fences, as kg-extract's summariser sends).
pub(crate) fn is_summary_request(text: &str) -> bool {
    text.starts_with("Summarise the descriptions of ")
        && text.contains("<<<DESCRIPTION ")
        && text.contains("<<<END DESCRIPTION ")
}

/// The answer to a summary request: `{"description": ...}` naming what is
/// described (the first line, up to its colon), how many descriptions came
/// and the first of them, so a test can tell summaries apart.
pub(crate) fn summary(text: &str) -> Value {
    let first_line = text.lines().next().unwrap_or_default();
    let subject = first_line
        .strip_prefix("Summarise the descriptions of ")
        .unwrap_or(first_line)
        .trim_end_matches(':');
    let count = text.matches("<<<END DESCRIPTION ").count();
    let first = text
        .split("<<<DESCRIPTION 1>>>")
        .nth(1)
        .and_then(|rest| rest.split("<<<END DESCRIPTION 1>>>").next())
        .unwrap_or_default()
        .trim();
    json!({"description": format!("Summary of {count} descriptions of {subject}, the first: {first}")})
}

/// Whether a user message is a grounded question (`Question: ...`, then
/// numbered sources quoted between `<<<SOURCE n>>>` fences, as `kg ask`
/// sends) rather than a chunk to extract from (a chunk that merely quotes
/// a fence is still extracted).
pub(crate) fn is_grounded_question(text: &str) -> bool {
    text.starts_with("Question:") && text.contains("<<<SOURCE ") && text.contains("<<<END SOURCE ")
}

/// The numbers of the sources quoted in a grounded question, in order.
fn source_numbers(text: &str) -> Vec<usize> {
    text.match_indices("<<<SOURCE ")
        .filter_map(|(i, m)| {
            let rest = text.get(i + m.len()..)?;
            let end = rest.find(">>>")?;
            rest.get(..end)?.trim().parse().ok()
        })
        .collect()
}

/// The first words of source `n`'s text (after its `document:` line).
fn source_words(text: &str, n: usize, words: usize) -> String {
    let open = format!("<<<SOURCE {n}>>>");
    let close = format!("<<<END SOURCE {n}>>>");
    let (Some(a), Some(b)) = (text.find(&open), text.find(&close)) else {
        return String::new();
    };
    let body = text.get(a + open.len()..b).unwrap_or_default();
    body.lines()
        .filter(|l| !l.starts_with("document:"))
        .flat_map(str::split_whitespace)
        .take(words)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A short answer to a grounded question that cites the first two sources
/// it saw (and `invent`, a number it may not have seen).
pub(crate) fn grounded_answer(text: &str, invent: Option<usize>) -> String {
    let seen = source_numbers(text);
    let mut out = String::new();
    match seen.as_slice() {
        [] => out.push_str("The sources do not answer the question."),
        [first, rest @ ..] => {
            out.push_str(&format!(
                "According to the sources, \"{}...\" [{first}].",
                source_words(text, *first, 12)
            ));
            if let Some(second) = rest.first() {
                out.push_str(&format!(" See also [{second}]."));
            }
        }
    }
    if let Some(n) = invent {
        out.push_str(&format!(" This is confirmed elsewhere [{n}]."));
    }
    out
}

/// A unit-length vector of `dim` dimensions for `text`.
pub(crate) fn embedding(text: &str, dim: usize, seed: u64) -> Vec<f32> {
    let mut v = vec![0f32; dim.max(1)];
    let mut any = false;
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        any = true;
        let lower = word.to_lowercase();
        let mut h = hash(seed, lower.as_bytes());
        for _ in 0..4 {
            h = splitmix(h);
            let i = (h % v.len() as u64) as usize;
            let sign = if h & (1 << 63) == 0 { 1.0 } else { -1.0 };
            if let Some(x) = v.get_mut(i) {
                *x += sign;
            }
        }
    }
    if !any {
        let mut h = hash(seed, text.as_bytes());
        for x in v.iter_mut() {
            h = splitmix(h);
            *x = (unit(h) * 2.0 - 1.0) as f32;
        }
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in v.iter_mut() {
            *x /= norm;
        }
    } else if let Some(first) = v.first_mut() {
        *first = 1.0;
    }
    v
}

/// A rough token count: words and punctuation, as a tokenizer would see
/// about 4/3 tokens per English word.
pub(crate) fn approx_tokens(text: &str) -> u32 {
    let words = text.split_whitespace().count() as u32;
    words + words / 3 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_requests_get_one_description_naming_count_and_first() {
        let text = "Summarise the descriptions of Person \"Ada\":\n\
                    <<<DESCRIPTION 1>>>\na mathematician\n<<<END DESCRIPTION 1>>>\n\
                    <<<DESCRIPTION 2>>>\nwrote notes\n<<<END DESCRIPTION 2>>>\n";
        assert!(is_summary_request(text));
        assert!(!is_summary_request("Summarise the descriptions of nothing"));
        assert_eq!(
            summary(text),
            json!({"description": "Summary of 2 descriptions of Person \"Ada\", the first: a mathematician"})
        );
    }

    #[test]
    fn grounded_questions_are_answered_citing_seen_sources() {
        let prompt = "Question: q\n<<<SOURCE 1>>>\ndocument: a.pdf p. 2 (c1)\nAlpha beta gamma\n<<<END SOURCE 1>>>\n<<<SOURCE 2>>>\ndocument: b\nDelta\n<<<END SOURCE 2>>>";
        assert!(is_grounded_question(prompt));
        assert!(!is_grounded_question("Alice met Bob."));
        assert!(!is_grounded_question(
            "Notes <<<SOURCE 1>>> x <<<END SOURCE 1>>>"
        ));
        let a = grounded_answer(prompt, None);
        assert_eq!(
            a,
            "According to the sources, \"Alpha beta gamma...\" [1]. See also [2]."
        );
        assert!(grounded_answer(prompt, Some(9)).ends_with("[9]."));
    }

    #[test]
    fn capitalised_phrases_become_entities_and_pairs_relations() {
        let text = "Ian Murdock founded Debian in 1993. The Debian Project is based in Germany, and Microsoft is not.";
        let answer = extraction(&json!({}), text, 7, false);
        let names: Vec<&str> = answer["entities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "Ian Murdock",
                "Debian",
                "Debian Project",
                "Germany",
                "Microsoft"
            ]
        );
        let rels = answer["relations"].as_array().unwrap();
        assert_eq!(rels.len(), 1 + 3);
        assert_eq!(rels[0]["source"], "Ian Murdock");
        assert_eq!(rels[0]["target"], "Debian");
    }

    #[test]
    fn schema_enums_choose_the_types() {
        let request = json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "properties": {
            "entities": {"items": {"properties": {"type": {"enum": ["Hacker"]}}}},
            "relations": {"items": {"properties": {"type": {"enum": ["KNOWS"]}}}}
        }}}}});
        let answer = extraction(&request, "Alice met Bob.", 1, false);
        assert!(answer["entities"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["type"] == "Hacker"));
        assert_eq!(answer["relations"][0]["type"], "KNOWS");
    }

    #[test]
    fn hostile_answers_carry_hostile_types() {
        let answer = extraction(&json!({}), "Alice met Bob.", 1, true);
        let types: Vec<&str> = answer["entities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap())
            .collect();
        assert!(types.iter().any(|t| HOSTILE_TYPES.contains(t)));
    }

    #[test]
    fn embeddings_are_unit_length_deterministic_and_similar_for_shared_words() {
        let a = embedding("Debian is a Linux distribution", 64, 3);
        let b = embedding("Debian is a Linux distribution", 64, 3);
        let c = embedding("Debian Linux", 64, 3);
        let d = embedding("chocolate cake recipe", 64, 3);
        assert_eq!(a, b);
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
        let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>();
        assert!(dot(&a, &c) > dot(&a, &d));
        assert_eq!(embedding("", 8, 1).len(), 8);
        assert_ne!(embedding("x", 64, 1), embedding("x", 64, 2));
    }
}
