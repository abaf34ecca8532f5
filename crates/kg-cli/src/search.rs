//! `kg search`: the chunks nearest to a question, with their graph
//! context.

use serde::Serialize;

/// One search hit, as printed.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    /// Chunk id.
    pub chunk_id: String,
    /// Cosine similarity.
    pub score: f32,
    /// Source file.
    pub source: String,
    /// Chunk text.
    pub text: String,
    /// Entities mentioned: (name, type).
    pub entities: Vec<(String, String)>,
    /// 1-hop neighbours: (from, relation, to-name, outgoing).
    pub neighbours: Vec<(String, String, String, bool)>,
}

impl From<kg_store::SearchHit> for Hit {
    fn from(h: kg_store::SearchHit) -> Self {
        Hit {
            chunk_id: h.chunk_id,
            score: h.score,
            source: h.source,
            text: h.text,
            entities: h
                .entities
                .into_iter()
                .map(|e| (e.name, e.entity_type))
                .collect(),
            neighbours: h
                .neighbours
                .into_iter()
                .map(|n| (n.from, n.rel_type, n.entity.name, n.outgoing))
                .collect(),
        }
    }
}

/// Renders search hits for a terminal.
pub fn render_hits(query: &str, hits: &[Hit]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "search: {query:?} ({} chunks)", hits.len());
    for (i, h) in hits.iter().enumerate() {
        let _ = writeln!(
            out,
            "\n{}. {} (score {:.3}) chunk {}",
            i + 1,
            h.source,
            h.score,
            h.chunk_id
        );
        let text: String = h.text.split_whitespace().collect::<Vec<_>>().join(" ");
        let short: String = text.chars().take(300).collect();
        let ellipsis = if text.chars().count() > 300 {
            "…"
        } else {
            ""
        };
        let _ = writeln!(out, "   {short}{ellipsis}");
        if !h.entities.is_empty() {
            let list: Vec<String> = h
                .entities
                .iter()
                .map(|(n, t)| format!("{n} ({t})"))
                .collect();
            let _ = writeln!(out, "   mentions: {}", list.join(", "));
        }
        for (from, rel, to, outgoing) in &h.neighbours {
            if *outgoing {
                let _ = writeln!(out, "     {from} -[{rel}]-> {to}");
            } else {
                let _ = writeln!(out, "     {from} <-[{rel}]- {to}");
            }
        }
    }
    if hits.is_empty() {
        let _ = writeln!(
            out,
            "no chunk with an embedding in the store: run `kg run PATH...` first"
        );
    }
    out
}
