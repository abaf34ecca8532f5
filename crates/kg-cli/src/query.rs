//! kg-query's traits on kg-store's [`AnyStore`] and kg-embed's
//! [`kg_embed::Embedder`], and how hits are printed.

use std::sync::Arc;

use kg_query::{
    ChunkDoc, ChunkGraph, EntityHit, EntityRef, QueryEmbedder, QueryError, Reach, Relation,
    Retriever, ScoredId,
};
use kg_store::{AnyStore, GraphStore};

/// The store, as kg-query's [`Retriever`].
pub struct StoreRetriever<'a>(pub &'a AnyStore);

/// An embedder, as kg-query's [`QueryEmbedder`].
pub struct EmbedderQuery(pub Arc<dyn kg_embed::Embedder>);

fn store_err(e: kg_store::StoreError) -> QueryError {
    QueryError::Store(crate::logging::cause_chain(&e))
}

fn entity(e: kg_store::EntitySummary) -> EntityRef {
    EntityRef {
        id: e.id,
        name: e.name,
        entity_type: e.entity_type,
    }
}

fn scored(v: Vec<kg_store::Scored>) -> Vec<ScoredId> {
    v.into_iter()
        .map(|s| ScoredId {
            id: s.id,
            score: s.score,
        })
        .collect()
}

fn entity_hits(v: Vec<kg_store::EntityMatch>) -> Vec<EntityHit> {
    v.into_iter()
        .map(|m| EntityHit {
            entity: entity(m.entity),
            score: m.score,
        })
        .collect()
}

impl Retriever for StoreRetriever<'_> {
    async fn fulltext(&self, text: &str, k: usize) -> Result<Vec<ScoredId>, QueryError> {
        self.0
            .fulltext_chunks(text, k)
            .await
            .map(scored)
            .map_err(store_err)
    }

    async fn vector_chunks(&self, vector: &[f32], k: usize) -> Result<Vec<ScoredId>, QueryError> {
        self.0
            .vector_chunks(vector, k)
            .await
            .map(scored)
            .map_err(store_err)
    }

    async fn vector_entities(
        &self,
        vector: &[f32],
        k: usize,
    ) -> Result<Vec<EntityHit>, QueryError> {
        self.0
            .vector_entities(vector, k)
            .await
            .map(entity_hits)
            .map_err(store_err)
    }

    async fn entities_by_name(&self, text: &str, k: usize) -> Result<Vec<EntityHit>, QueryError> {
        self.0
            .entities_by_name(text, k)
            .await
            .map(entity_hits)
            .map_err(store_err)
    }

    async fn expand(
        &self,
        seeds: &[String],
        hops: u8,
        max_neighbours: usize,
        per_entity: usize,
    ) -> Result<Vec<Reach>, QueryError> {
        Ok(self
            .0
            .expand(seeds, hops, max_neighbours, per_entity)
            .await
            .map_err(store_err)?
            .into_iter()
            .map(|r| Reach {
                chunk_id: r.chunk_id,
                entity: entity(r.entity),
                seed: r.seed,
                hops: r.hops,
            })
            .collect())
    }

    async fn chunks(&self, ids: &[String]) -> Result<Vec<ChunkDoc>, QueryError> {
        Ok(self
            .0
            .chunks(ids)
            .await
            .map_err(store_err)?
            .into_iter()
            .map(|c| ChunkDoc {
                id: c.id,
                document_id: c.document_id,
                text: c.text,
                source: c.source,
                title: c.title,
                page_start: c.page_start,
                page_end: c.page_end,
            })
            .collect())
    }

    async fn chunk_graph(&self, ids: &[String]) -> Result<ChunkGraph, QueryError> {
        let g = self.0.chunk_graph(ids).await.map_err(store_err)?;
        Ok(ChunkGraph {
            mentions: g
                .mentions
                .into_iter()
                .map(|(c, e)| (c, entity(e)))
                .collect(),
            relations: g
                .relations
                .into_iter()
                .map(|r| Relation {
                    from: entity(r.from),
                    rel_type: r.rel_type,
                    to: entity(r.to),
                    description: r.description,
                })
                .collect(),
        })
    }
}

impl QueryEmbedder for EmbedderQuery {
    async fn embed_query(&self, text: &str) -> Result<Vec<f32>, QueryError> {
        kg_embed::embed_query(self.0.as_ref(), text)
            .await
            .map_err(|e| QueryError::Embed(crate::logging::cause_chain(&e)))
    }
}

/// `path p. N–M` for a chunk (pages only when known).
pub fn place(c: &ChunkDoc) -> String {
    match (c.page_start, c.page_end) {
        (Some(a), Some(b)) if a != b => format!("{} p. {a}\u{2013}{b}", c.source),
        (Some(a), _) | (None, Some(a)) => format!("{} p. {a}", c.source),
        (None, None) => c.source.clone(),
    }
}

/// Renders hits for a terminal: rank, place, chunk id, why, a short text.
pub fn render_hits(query: &str, mode: kg_query::Mode, hits: &[kg_query::Hit]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "search ({}): {query:?} ({} chunks)",
        mode.as_str(),
        hits.len()
    );
    for h in hits {
        let title = h
            .chunk
            .title
            .as_deref()
            .map(|t| format!("{t} — "))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "\n{}. {title}{} (score {:.4}) chunk {}",
            h.rank,
            place(&h.chunk),
            h.score,
            h.chunk.id
        );
        let mut why: Vec<String> = Vec::new();
        if let Some((r, s)) = h.why.vector {
            why.push(format!("vector #{r} cos {s:.3}"));
        }
        if let Some((r, s)) = h.why.fulltext {
            why.push(format!("fulltext #{r} bm25 {s:.2}"));
        }
        for e in h.why.entities.iter().take(3) {
            why.push(if e.hops == 0 {
                format!("mentions {} ({})", e.name, e.entity_type)
            } else {
                format!(
                    "mentions {} ({}), {} hop(s) from {}",
                    e.name, e.entity_type, e.hops, e.seed
                )
            });
        }
        let _ = writeln!(out, "   found by: {}", why.join("; "));
        let text: String = h
            .chunk
            .text
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let short: String = text.chars().take(300).collect();
        let ellipsis = if text.chars().count() > 300 {
            "…"
        } else {
            ""
        };
        let _ = writeln!(out, "   {short}{ellipsis}");
        if !h.mentions.is_empty() {
            let list: Vec<String> = h
                .mentions
                .iter()
                .take(8)
                .map(|e| format!("{} ({})", e.name, e.entity_type))
                .collect();
            let more = h.mentions.len().saturating_sub(8);
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            let _ = writeln!(out, "   mentions: {}{more}", list.join(", "));
        }
    }
    if hits.is_empty() {
        let _ = writeln!(
            out,
            "nothing found (an empty store? run `kg run PATH...` first)"
        );
    }
    out
}
