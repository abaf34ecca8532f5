//! The extraction prompt and the JSON schema of its answer.
//!
//! [`PROMPT_VERSION`] is part of the cache key: change it whenever the
//! prompt or schema text changes meaning, so cached answers to the old
//! prompt are not reused.
//!
//! The chunk text goes between `<chunk>` and `</chunk>` in the user message,
//! after the instructions, so that instructions hidden in a document read as
//! text to extract from, not as orders (a mitigation, not a guarantee: the
//! answer is validated either way).

use async_openai::types::{
    ChatCompletionRequestMessage, ChatCompletionRequestSystemMessage,
    ChatCompletionRequestSystemMessageContent, ChatCompletionRequestUserMessage,
    ChatCompletionRequestUserMessageContent, CreateChatCompletionRequest, ResponseFormat,
    ResponseFormatJsonSchema,
};
use serde_json::{json, Value};

use crate::config::ExtractSchema;

/// Version of the prompt and schema text; part of the cache key.
pub const PROMPT_VERSION: &str = "kg-extract-v1";

/// The system message for `schema`.
pub fn system_prompt(schema: &ExtractSchema) -> String {
    let mut s = String::from(
        "You extract a knowledge graph from text. Find the named entities in the text \
         (people, organisations, places, products, events, concepts that the text names) \
         and the relations between them that the text states.\n\
         Answer with one JSON object and nothing else:\n\
         {\"entities\": [{\"name\": string, \"type\": string, \"description\": string}], \
         \"relations\": [{\"source\": string, \"target\": string, \"type\": string, \
         \"description\": string, \"strength\": number between 0 and 1}]}\n\
         Rules: entity names as written in the text; entity types in UpperCamelCase \
         (Person, Organization); relation types in UPPER_SNAKE_CASE (FOUNDED, WORKS_FOR); \
         every relation's source and target must be the name of an entity in your list; \
         descriptions are one short sentence based only on the text; \
         strength says how clearly the text states the relation. \
         If the text names nothing, answer {\"entities\": [], \"relations\": []}.\n",
    );
    let list = |v: Vec<&str>| v.join(", ");
    let how = if schema.is_strict() {
        "Use only"
    } else {
        "Prefer"
    };
    if !schema.entity_types().is_empty() {
        s.push_str(&format!(
            "{how} these entity types: {}.\n",
            list(schema.entity_types().iter().map(|l| l.as_str()).collect())
        ));
    }
    if !schema.relation_types().is_empty() {
        s.push_str(&format!(
            "{how} these relation types: {}.\n",
            list(schema.relation_types().iter().map(|r| r.as_str()).collect())
        ));
    }
    if !schema.patterns().is_empty() {
        s.push_str(&format!(
            "{how} relations of these shapes (source type, relation, target type): {}.\n",
            schema
                .patterns()
                .iter()
                .map(|(a, r, b)| format!("({a}, {r}, {b})"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    s
}

/// The user message for one chunk.
pub fn user_message(chunk_text: &str) -> String {
    format!("Extract entities and relations from this text:\n<chunk>\n{chunk_text}\n</chunk>")
}

/// The JSON schema of an answer (strict-mode compatible: every property
/// required, no additional properties).
pub fn answer_schema(schema: &ExtractSchema) -> Value {
    let mut entity_type = json!({"type": "string"});
    let mut relation_type = json!({"type": "string"});
    if schema.is_strict() && !schema.entity_types().is_empty() {
        entity_type["enum"] = json!(schema
            .entity_types()
            .iter()
            .map(|l| l.as_str())
            .collect::<Vec<_>>());
    }
    if schema.is_strict() && !schema.relation_types().is_empty() {
        relation_type["enum"] = json!(schema
            .relation_types()
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>());
    }
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["entities", "relations"],
        "properties": {
            "entities": {"type": "array", "items": {
                "type": "object", "additionalProperties": false,
                "required": ["name", "type", "description"],
                "properties": {
                    "name": {"type": "string"},
                    "type": entity_type,
                    "description": {"type": "string"}
                }
            }},
            "relations": {"type": "array", "items": {
                "type": "object", "additionalProperties": false,
                "required": ["source", "target", "type", "description", "strength"],
                "properties": {
                    "source": {"type": "string"},
                    "target": {"type": "string"},
                    "type": relation_type,
                    "description": {"type": "string"},
                    "strength": {"type": "number"}
                }
            }}
        }
    })
}

/// Everything of a request that does not depend on the chunk.
#[derive(Debug, Clone)]
pub(crate) struct RequestTemplate {
    pub model: String,
    pub system: String,
    pub schema: Value,
    pub temperature: f32,
    pub max_tokens: Option<u32>,
}

impl RequestTemplate {
    /// The request for `chunk_text`, asking for JSON by schema or by mode.
    pub fn request(&self, chunk_text: &str, json_schema: bool) -> CreateChatCompletionRequest {
        let response_format = if json_schema {
            ResponseFormat::JsonSchema {
                json_schema: ResponseFormatJsonSchema {
                    description: Some("Entities and relations found in the text".into()),
                    name: "kg_extraction".into(),
                    schema: Some(self.schema.clone()),
                    strict: Some(true),
                },
            }
        } else {
            ResponseFormat::JsonObject
        };
        #[allow(deprecated)] // `max_tokens` is what non-OpenAI servers understand.
        CreateChatCompletionRequest {
            model: self.model.clone(),
            messages: vec![
                ChatCompletionRequestMessage::System(ChatCompletionRequestSystemMessage {
                    content: ChatCompletionRequestSystemMessageContent::Text(self.system.clone()),
                    name: None,
                }),
                ChatCompletionRequestMessage::User(ChatCompletionRequestUserMessage {
                    content: ChatCompletionRequestUserMessageContent::Text(user_message(
                        chunk_text,
                    )),
                    name: None,
                }),
            ],
            response_format: Some(response_format),
            temperature: Some(self.temperature),
            max_tokens: self.max_tokens,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_schema_puts_enums_in_the_json_schema() {
        let schema =
            ExtractSchema::new(&["person", "organization"], &["works for"], &[], true).unwrap();
        let s = answer_schema(&schema);
        assert_eq!(
            s.pointer("/properties/entities/items/properties/type/enum"),
            Some(&json!(["Person", "Organization"]))
        );
        assert_eq!(
            s.pointer("/properties/relations/items/properties/type/enum"),
            Some(&json!(["WORKS_FOR"]))
        );
        assert!(
            system_prompt(&schema).contains("Use only these entity types: Person, Organization")
        );
        let open = answer_schema(&ExtractSchema::open());
        assert!(open
            .pointer("/properties/entities/items/properties/type/enum")
            .is_none());
    }

    #[test]
    fn requests_serialise_to_the_openai_wire_format() {
        let t = RequestTemplate {
            model: "m".into(),
            system: "sys".into(),
            schema: answer_schema(&ExtractSchema::open()),
            temperature: 0.0,
            max_tokens: None,
        };
        let v = serde_json::to_value(t.request("Alice met Bob.", true)).unwrap();
        assert_eq!(v["response_format"]["type"], "json_schema");
        assert_eq!(v["response_format"]["json_schema"]["strict"], true);
        assert_eq!(v["messages"][1]["role"], "user");
        assert!(v["messages"][1]["content"]
            .as_str()
            .unwrap()
            .contains("<chunk>\nAlice met Bob.\n</chunk>"));
        assert!(v.get("max_tokens").is_none());
        let v = serde_json::to_value(t.request("x", false)).unwrap();
        assert_eq!(v["response_format"], json!({"type": "json_object"}));
    }
}
