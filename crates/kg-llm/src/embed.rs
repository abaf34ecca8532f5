//! Embeddings: the request and a lenient, checked reading of the answer.
//!
//! OpenAI-compatible servers (vLLM, Ollama, llama.cpp, TEI) differ in
//! optional fields (`usage`, `object`, `index`); the answer types here
//! accept their absence. What they do not accept: another number of
//! vectors than inputs, an index answered twice or out of range, an empty
//! vector.

use serde::{Deserialize, Serialize};

use crate::CallError;

#[derive(Serialize)]
pub(crate) struct EmbeddingsRequest<'a> {
    pub model: &'a str,
    pub input: &'a [String],
    pub encoding_format: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<usize>,
}

#[derive(Deserialize)]
struct EmbeddingsResponse {
    data: Vec<EmbeddingData>,
    #[serde(default)]
    usage: Option<EmbeddingsUsage>,
}

#[derive(Deserialize)]
struct EmbeddingData {
    #[serde(default)]
    index: Option<usize>,
    embedding: Vec<f32>,
}

#[derive(Deserialize)]
struct EmbeddingsUsage {
    #[serde(default)]
    prompt_tokens: u64,
}

/// The vectors of an answer to `inputs` texts, in input order, and the
/// prompt tokens the server reported (if it did, and not as 0).
pub(crate) fn decode(
    bytes: &[u8],
    inputs: usize,
) -> Result<(Vec<Vec<f32>>, Option<u64>), CallError> {
    let malformed = |detail: String| CallError::Malformed(detail);
    let answer: EmbeddingsResponse = serde_json::from_slice(bytes)
        .map_err(|e| malformed(format!("not an embeddings answer: {e}")))?;
    if answer.data.len() != inputs {
        return Err(malformed(format!(
            "{} vectors for {inputs} inputs",
            answer.data.len()
        )));
    }
    let mut vectors: Vec<Option<Vec<f32>>> = vec![None; inputs];
    for (position, item) in answer.data.into_iter().enumerate() {
        let index = item.index.unwrap_or(position);
        match vectors.get_mut(index) {
            Some(slot @ None) => *slot = Some(item.embedding),
            Some(Some(_)) => return Err(malformed(format!("index {index} answered twice"))),
            None => {
                return Err(malformed(format!(
                    "index {index} out of range for {inputs} inputs"
                )))
            }
        }
    }
    let vectors: Vec<Vec<f32>> = vectors.into_iter().flatten().collect();
    if vectors.iter().any(Vec::is_empty) {
        return Err(malformed("an empty vector".into()));
    }
    let tokens = answer.usage.map(|u| u.prompt_tokens).filter(|t| *t > 0);
    Ok((vectors, tokens))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_come_back_in_input_order() {
        let body = br#"{"object":"list","data":[
            {"index":1,"embedding":[0.0,1.0]},{"index":0,"embedding":[1.0,0.0]}],
            "usage":{"prompt_tokens":4,"total_tokens":4}}"#;
        let (v, tokens) = decode(body, 2).unwrap();
        assert_eq!(v, vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
        assert_eq!(tokens, Some(4));
        // No index, no usage: position order, tokens unknown.
        let (v, tokens) =
            decode(br#"{"data":[{"embedding":[0.5]},{"embedding":[0.25]}]}"#, 2).unwrap();
        assert_eq!((v, tokens), (vec![vec![0.5], vec![0.25]], None));
    }

    #[test]
    fn inconsistent_answers_are_malformed() {
        for (body, inputs, want) in [
            (
                r#"{"data":[{"embedding":[1.0]}]}"#,
                2,
                "1 vectors for 2 inputs",
            ),
            (
                r#"{"data":[{"index":0,"embedding":[1.0]},{"index":0,"embedding":[1.0]}]}"#,
                2,
                "index 0 answered twice",
            ),
            (
                r#"{"data":[{"index":5,"embedding":[1.0]}]}"#,
                1,
                "index 5 out of range",
            ),
            (r#"{"data":[{"embedding":[]}]}"#, 1, "an empty vector"),
            ("<html>", 1, "not an embeddings answer"),
        ] {
            match decode(body.as_bytes(), inputs) {
                Err(CallError::Malformed(m)) => assert!(m.contains(want), "{m}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }
}
