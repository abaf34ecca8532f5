//! Chat completions: what an answer is, read tolerantly.
//!
//! Requests are async-openai's `CreateChatCompletionRequest`; answers are
//! read as its `CreateChatCompletionResponse` where the server sends one
//! exactly, else by the few fields we need (llama.cpp and Ollama omit or
//! vary `usage`, `object`, `created` and other fields).

use async_openai::types::{CompletionUsage, CreateChatCompletionResponse};
use serde::Serialize;
use serde_json::Value;

use crate::CallError;

/// Token usage of one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
}

/// A completion's content and token usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The first choice's message content (empty when it had none).
    pub content: String,
    /// Why the model stopped: `stop`, `length` (the completion cap was
    /// reached: the content is cut), `content_filter`...
    pub finish_reason: Option<String>,
    /// Token usage, if the server reported it (the client's counters hold
    /// an estimate otherwise).
    pub usage: Option<Usage>,
}

impl Completion {
    /// Whether the model was stopped by the completion cap.
    pub fn is_truncated(&self) -> bool {
        self.finish_reason.as_deref() == Some("length")
    }
}

/// One piece of a streamed completion.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Delta {
    /// Text to append to the answer (may be empty).
    pub content: String,
    /// Set on the piece that ends the choice.
    pub finish_reason: Option<String>,
    /// Set on the last piece when the server reports usage
    /// (`stream_options.include_usage`); `None` otherwise: estimate it.
    pub usage: Option<Usage>,
}

fn usage_of(v: &Value) -> Option<Usage> {
    let u = v.get("usage")?;
    let p = u.get("prompt_tokens").and_then(Value::as_u64);
    let c = u.get("completion_tokens").and_then(Value::as_u64);
    match (p, c) {
        (None, None) => None,
        (p, c) => Some(Usage {
            prompt_tokens: p.unwrap_or(0),
            completion_tokens: c.unwrap_or(0),
        }),
    }
}

/// Decodes a completion, strictly by async-openai's type where possible,
/// else by the fields we need.
pub(crate) fn decode(bytes: &[u8]) -> Result<Completion, CallError> {
    if let Ok(typed) = serde_json::from_slice::<CreateChatCompletionResponse>(bytes) {
        let choice = typed
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| CallError::Malformed("no choices".into()))?;
        return Ok(Completion {
            content: choice.message.content.unwrap_or_default(),
            finish_reason: choice
                .finish_reason
                .and_then(|f| serde_json::to_value(f).ok())
                .and_then(|v| v.as_str().map(str::to_string)),
            usage: typed.usage.map(|u: CompletionUsage| Usage {
                prompt_tokens: u64::from(u.prompt_tokens),
                completion_tokens: u64::from(u.completion_tokens),
            }),
        });
    }
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| CallError::Malformed(format!("not JSON: {e}")))?;
    let choice = v
        .pointer("/choices/0")
        .ok_or_else(|| CallError::Malformed("no choices".into()))?;
    Ok(Completion {
        content: choice
            .pointer("/message/content")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        finish_reason: choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .map(str::to_string),
        usage: usage_of(&v),
    })
}

/// Decodes one streamed chunk (`data:` payload other than `[DONE]`).
pub(crate) fn decode_chunk(data: &str) -> Result<Delta, CallError> {
    let v: Value = serde_json::from_str(data)
        .map_err(|e| CallError::Malformed(format!("stream chunk is not JSON: {e}")))?;
    if let Some(message) = v.pointer("/error/message").and_then(Value::as_str) {
        return Err(CallError::Transport(format!(
            "the server reported an error mid-answer: {message}"
        )));
    }
    let choice = v.pointer("/choices/0");
    Ok(Delta {
        content: choice
            .and_then(|c| c.pointer("/delta/content"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        finish_reason: choice
            .and_then(|c| c.get("finish_reason"))
            .and_then(Value::as_str)
            .map(str::to_string),
        usage: usage_of(&v),
    })
}

/// A rough token count (4 characters a token) of a request's messages, for
/// the token budget and for answers without `usage`.
pub(crate) fn estimate_prompt_tokens(request: &Value) -> u64 {
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    messages
        .iter()
        .map(|m| {
            let chars = match m.get("content") {
                Some(Value::String(s)) => s.len(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .map(str::len)
                    .sum(),
                _ => 0,
            };
            chars as u64 / 4 + 4
        })
        .sum()
}

/// The completion cap a request carries (`max_completion_tokens`, else
/// `max_tokens`).
pub(crate) fn completion_cap(request: &Value) -> Option<u64> {
    request
        .get("max_completion_tokens")
        .and_then(Value::as_u64)
        .or_else(|| request.get("max_tokens").and_then(Value::as_u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_openai_and_lenient_shapes() {
        let openai = br#"{"id":"x","object":"chat.completion","created":1,"model":"m",
            "choices":[{"index":0,"message":{"role":"assistant","content":"{}"},"finish_reason":"stop","logprobs":null}],
            "usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}"#;
        let c = decode(openai).unwrap();
        assert_eq!(
            (c.content.as_str(), c.finish_reason.as_deref()),
            ("{}", Some("stop"))
        );
        assert_eq!(
            c.usage,
            Some(Usage {
                prompt_tokens: 10,
                completion_tokens: 5
            })
        );
        assert!(!c.is_truncated());
        // llama.cpp-like: no `object`, usage without total.
        let lenient = br#"{"choices":[{"message":{"content":"hi"},"finish_reason":"length"}],"usage":{"prompt_tokens":3}}"#;
        let c = decode(lenient).unwrap();
        assert_eq!(c.content, "hi");
        assert!(c.is_truncated());
        assert_eq!(
            c.usage,
            Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 0
            })
        );
        let no_usage = br#"{"choices":[{"message":{"content":"hi"}}]}"#;
        assert_eq!(decode(no_usage).unwrap().usage, None);
        assert!(matches!(
            decode(b"{\"choices\":[]}"),
            Err(CallError::Malformed(_))
        ));
        assert!(matches!(decode(b"<html>"), Err(CallError::Malformed(_))));
    }

    #[test]
    fn decodes_stream_chunks() {
        let d = decode_chunk(
            r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}"#,
        )
        .unwrap();
        assert_eq!(
            (d.content.as_str(), d.finish_reason, d.usage),
            ("Hel", None, None)
        );
        let d = decode_chunk(r#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#).unwrap();
        assert_eq!(d.finish_reason.as_deref(), Some("stop"));
        let d = decode_chunk(
            r#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9}}"#,
        )
        .unwrap();
        assert_eq!(
            d.usage,
            Some(Usage {
                prompt_tokens: 7,
                completion_tokens: 2
            })
        );
        assert!(matches!(
            decode_chunk(r#"{"error":{"message":"overloaded"}}"#),
            Err(CallError::Transport(m)) if m.contains("overloaded")
        ));
        assert!(matches!(decode_chunk("nope"), Err(CallError::Malformed(_))));
    }

    #[test]
    fn estimates_prompts_and_reads_caps() {
        let r = json!({"messages": [
            {"role": "system", "content": "x".repeat(400)},
            {"role": "user", "content": [{"type": "text", "text": "y".repeat(40)}]}
        ], "max_tokens": 512});
        assert_eq!(estimate_prompt_tokens(&r), 100 + 4 + 10 + 4);
        assert_eq!(completion_cap(&r), Some(512));
        let r = json!({"messages": [], "max_tokens": 512, "max_completion_tokens": 300});
        assert_eq!(completion_cap(&r), Some(300));
        assert_eq!(completion_cap(&json!({})), None);
    }
}
