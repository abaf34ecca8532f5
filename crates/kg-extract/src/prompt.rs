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

use crate::schema::ExtractSchema;

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
    let how = if schema.is_strict() {
        "Use only"
    } else {
        "Prefer"
    };
    if !schema.entity_types().is_empty() {
        s.push_str(&format!("{how} these entity types:\n"));
        for label in schema.entity_types() {
            s.push_str(&format!("- {label}"));
            if let Some(notes) = schema.entity_notes(label) {
                if !notes.description.is_empty() {
                    s.push_str(&format!(": {}", notes.description));
                }
                if !notes.properties.is_empty() {
                    let props: Vec<&str> = notes.properties.iter().map(|p| p.as_str()).collect();
                    s.push_str(&format!(
                        " (state its {} in the description when the text gives them)",
                        props.join(", ")
                    ));
                }
            }
            s.push('\n');
        }
    }
    if !schema.relation_types().is_empty() {
        s.push_str(&format!("{how} these relation types:\n"));
        for rel in schema.relation_types() {
            match schema.relation_description(rel) {
                Some(d) => s.push_str(&format!("- {rel}: {d}\n")),
                None => s.push_str(&format!("- {rel}\n")),
            }
        }
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

/// The most entities a shorter answer may have, asked for after an answer
/// was cut at the completion cap `cap`: about 100 tokens per entity with
/// its relations, between 3 and 40.
pub fn shorter_answer_entities(cap: u32) -> u32 {
    (cap / 100).clamp(3, 40)
}

/// The instruction added to the system message for a shorter answer.
pub fn shorter_answer_instruction(at_most: u32) -> String {
    format!(
        "Keep the answer short, it must fit the length limit: at most {at_most} entities \
         (the most important ones) and the relations between them, descriptions of a few \
         words, and close the JSON.\n"
    )
}

/// Which request field carries the completion cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CapField {
    /// `max_tokens`: what llama.cpp, Ollama, vLLM and older OpenAI models
    /// understand.
    MaxTokens,
    /// `max_completion_tokens`: what OpenAI's reasoning models require.
    MaxCompletionTokens,
}

/// How one request asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ask {
    /// `json_schema` (strict) rather than `json_object`.
    pub json_schema: bool,
    /// The completion cap.
    pub cap: u32,
    /// The field the cap goes in.
    pub cap_field: CapField,
    /// Ask for a shorter answer with at most this many entities.
    pub at_most: Option<u32>,
}

/// Everything of a request that does not depend on the chunk.
#[derive(Debug, Clone)]
pub(crate) struct RequestTemplate {
    pub model: String,
    pub system: String,
    pub schema: Value,
    pub temperature: f32,
}

impl RequestTemplate {
    /// The request for `chunk_text`, asking as `ask` says.
    pub fn request(&self, chunk_text: &str, ask: &Ask) -> CreateChatCompletionRequest {
        let response_format = if ask.json_schema {
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
        let mut system = self.system.clone();
        if let Some(n) = ask.at_most {
            system.push_str(&shorter_answer_instruction(n));
        }
        let (max_tokens, max_completion_tokens) = match ask.cap_field {
            CapField::MaxTokens => (Some(ask.cap), None),
            CapField::MaxCompletionTokens => (None, Some(ask.cap)),
        };
        #[allow(deprecated)] // `max_tokens` is what non-OpenAI servers understand.
        CreateChatCompletionRequest {
            model: self.model.clone(),
            messages: vec![
                ChatCompletionRequestMessage::System(ChatCompletionRequestSystemMessage {
                    content: ChatCompletionRequestSystemMessageContent::Text(system),
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
            max_tokens,
            max_completion_tokens,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_prompt_lists_types_with_their_notes() {
        let schema = ExtractSchema::from_toml(
            "mode = \"strict\"\npatterns = [\"Person -WORKS_AT-> Organization\"]\n\
             [[entities]]\ntype = \"Person\"\ndescription = \"a human\"\nproperties = [\"role\"]\n\
             [[entities]]\ntype = \"Organization\"\n\
             [[relations]]\ntype = \"WORKS_AT\"\ndescription = \"employment\"\n",
        )
        .unwrap();
        let p = system_prompt(&schema);
        assert!(p.contains("Use only these entity types:\n- Person: a human (state its role in the description when the text gives them)\n- Organization\n"), "{p}");
        assert!(
            p.contains("Use only these relation types:\n- WORKS_AT: employment\n"),
            "{p}"
        );
        assert!(p.contains("(Person, WORKS_AT, Organization)"), "{p}");
        let open = system_prompt(&ExtractSchema::open());
        assert!(
            !open.contains("Use only") && !open.contains("Prefer"),
            "{open}"
        );
    }

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
        assert!(system_prompt(&schema)
            .contains("Use only these entity types:\n- Person\n- Organization\n"));
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
        };
        let mut ask = Ask {
            json_schema: true,
            cap: 700,
            cap_field: CapField::MaxTokens,
            at_most: None,
        };
        let v = serde_json::to_value(t.request("Alice met Bob.", &ask)).unwrap();
        assert_eq!(v["response_format"]["type"], "json_schema");
        assert_eq!(v["response_format"]["json_schema"]["strict"], true);
        assert_eq!(v["messages"][0]["content"], "sys");
        assert_eq!(v["messages"][1]["role"], "user");
        assert!(v["messages"][1]["content"]
            .as_str()
            .unwrap()
            .contains("<chunk>\nAlice met Bob.\n</chunk>"));
        assert_eq!(v["max_tokens"], 700, "a cap is always sent");
        assert!(v.get("max_completion_tokens").is_none());
        ask.json_schema = false;
        ask.cap_field = CapField::MaxCompletionTokens;
        ask.at_most = Some(shorter_answer_entities(700));
        let v = serde_json::to_value(t.request("x", &ask)).unwrap();
        assert_eq!(v["response_format"], json!({"type": "json_object"}));
        assert_eq!(v["max_completion_tokens"], 700);
        assert!(v.get("max_tokens").is_none());
        let system = v["messages"][0]["content"].as_str().unwrap();
        assert!(
            system.starts_with("sys") && system.contains("at most 7 entities"),
            "{system}"
        );
    }

    #[test]
    fn shorter_answers_scale_with_the_cap() {
        assert_eq!(shorter_answer_entities(100), 3);
        assert_eq!(shorter_answer_entities(1256), 12);
        assert_eq!(shorter_answer_entities(100_000), 40);
    }
}
