//! Retrieval in four modes, and why each hit was found.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::fusion::{rrf, Ranked};
use crate::source::{ChunkDoc, EntityHit, QueryEmbedder, QueryError, Retriever};

/// How to retrieve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Cosine over chunk vectors.
    Vector,
    /// BM25 over chunk text.
    Fulltext,
    /// Vector and fulltext fused.
    Hybrid,
    /// Hybrid plus the chunks of the question's entities and their
    /// neighbours.
    Graph,
}

impl Mode {
    /// The mode's name, as on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Vector => "vector",
            Mode::Fulltext => "fulltext",
            Mode::Hybrid => "hybrid",
            Mode::Graph => "graph",
        }
    }

    /// Parses a mode name.
    pub fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "vector" => Mode::Vector,
            "fulltext" => Mode::Fulltext,
            "hybrid" => Mode::Hybrid,
            "graph" => Mode::Graph,
            _ => return None,
        })
    }
}

/// Retrieval settings. The defaults are the ones measured best on eval/
/// (docs/query.md).
#[derive(Debug, Clone, PartialEq)]
pub struct SearchOptions {
    /// The mode.
    pub mode: Mode,
    /// Hits to return.
    pub k: usize,
    /// Candidates each list contributes to a fusion.
    pub pool: usize,
    /// Weight of the vector list in the fusion.
    pub vector_weight: f32,
    /// Weight of the fulltext list.
    pub fulltext_weight: f32,
    /// Weight of the graph list (graph mode).
    pub graph_weight: f32,
    /// RRF's `k`.
    pub rrf_k: f32,
    /// Relationships to follow from a seed entity: 0, 1 or 2.
    pub hops: u8,
    /// Seed entities found by vector, at most.
    pub seed_entities: usize,
    /// Least cosine for an entity found by vector to be a seed.
    pub min_entity_cosine: f32,
    /// Neighbours followed per entity and hop.
    pub max_neighbours: usize,
    /// Chunks taken per entity reached.
    pub per_entity: usize,
}

impl Default for SearchOptions {
    fn default() -> Self {
        Self {
            mode: Mode::Hybrid,
            k: 10,
            pool: 50,
            vector_weight: 1.0,
            fulltext_weight: 1.0,
            graph_weight: 0.5,
            rrf_k: crate::fusion::RRF_K,
            hops: 1,
            seed_entities: 5,
            min_entity_cosine: 0.5,
            max_neighbours: 10,
            per_entity: 5,
        }
    }
}

/// An entity through which a hit was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WhyEntity {
    /// The entity the chunk mentions.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub entity_type: String,
    /// The seed entity (named in, or close to, the question).
    pub seed: String,
    /// Relationships from the seed: 0 when the chunk mentions the seed.
    pub hops: u8,
}

/// Why a hit was found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Why {
    /// The modes that found it: `vector`, `fulltext`, `graph`.
    pub modes: Vec<&'static str>,
    /// Rank and cosine in the vector list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector: Option<(usize, f32)>,
    /// Rank and BM25 score in the fulltext list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fulltext: Option<(usize, f32)>,
    /// Entities that led to it (graph mode).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub entities: Vec<WhyEntity>,
}

/// One retrieved chunk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    /// Rank, from 1.
    pub rank: usize,
    /// The mode's score: cosine, BM25, or fused RRF score.
    pub score: f32,
    /// The chunk and its document.
    #[serde(flatten)]
    pub chunk: ChunkDoc,
    /// Why it was found.
    pub why: Why,
}

/// What [`search`] found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Retrieved {
    /// The hits, best first.
    pub hits: Vec<Hit>,
    /// The best chunk cosine to the question (the relevance test of
    /// `kg ask`); `None` in fulltext mode.
    pub best_cosine: Option<f32>,
    /// The seed entities (graph mode).
    pub seeds: Vec<crate::source::EntityRef>,
}

/// Retrieves chunks for `question`.
pub async fn search<R: Retriever, E: QueryEmbedder>(
    store: &R,
    embedder: &E,
    question: &str,
    options: &SearchOptions,
) -> Result<Retrieved, QueryError> {
    let k = options.k;
    let pool = options.pool.max(k);
    let needs_vector = options.mode != Mode::Fulltext;
    let needs_fulltext = options.mode != Mode::Vector;
    let qv = if needs_vector || options.mode == Mode::Graph {
        Some(embedder.embed_query(question).await?)
    } else {
        None
    };
    let vector = match (&qv, needs_vector) {
        (Some(v), true) => store.vector_chunks(v, pool).await?,
        _ => Vec::new(),
    };
    let fulltext = if needs_fulltext {
        store.fulltext(question, pool).await?
    } else {
        Vec::new()
    };
    let best_cosine = vector.first().map(|s| s.score);
    let mut why: HashMap<String, Why> = HashMap::new();
    for (i, s) in vector.iter().enumerate() {
        let w = why.entry(s.id.clone()).or_default();
        w.modes.push("vector");
        w.vector = Some((i + 1, s.score));
    }
    for (i, s) in fulltext.iter().enumerate() {
        let w = why.entry(s.id.clone()).or_default();
        w.modes.push("fulltext");
        w.fulltext = Some((i + 1, s.score));
    }
    let mut seeds = Vec::new();
    let mut graph: Vec<(String, f32)> = Vec::new();
    if options.mode == Mode::Graph {
        let (list, found) = graph_list(store, qv.as_deref(), question, options).await?;
        for (id, entities) in &found {
            let w = why.entry(id.clone()).or_default();
            w.modes.push("graph");
            w.entities = entities.clone();
        }
        graph = list;
        seeds = found_seeds(store, qv.as_deref(), question, options).await?;
    }
    let ranked: Vec<(String, f32)> = match options.mode {
        Mode::Vector => vector.iter().map(|s| (s.id.clone(), s.score)).collect(),
        Mode::Fulltext => fulltext.iter().map(|s| (s.id.clone(), s.score)).collect(),
        Mode::Hybrid | Mode::Graph => {
            let mut lists = vec![
                Ranked {
                    ids: vector.iter().map(|s| s.id.as_str()).collect(),
                    weight: options.vector_weight,
                },
                Ranked {
                    ids: fulltext.iter().map(|s| s.id.as_str()).collect(),
                    weight: options.fulltext_weight,
                },
            ];
            if options.mode == Mode::Graph {
                lists.push(Ranked {
                    ids: graph.iter().map(|(id, _)| id.as_str()).collect(),
                    weight: options.graph_weight,
                });
            }
            rrf(&lists, options.rrf_k)
        }
    };
    let top: Vec<(String, f32)> = ranked.into_iter().take(k).collect();
    let ids: Vec<String> = top.iter().map(|(id, _)| id.clone()).collect();
    let docs = store.chunks(&ids).await?;
    let hits = top
        .into_iter()
        .filter_map(|(id, score)| {
            let chunk = docs.iter().find(|d| d.id == id)?.clone();
            Some((id, score, chunk))
        })
        .enumerate()
        .map(|(i, (id, score, chunk))| Hit {
            rank: i + 1,
            score,
            chunk,
            why: why.remove(&id).unwrap_or_default(),
        })
        .collect();
    Ok(Retrieved {
        hits,
        best_cosine,
        seeds,
    })
}

/// The seed entities: those the question names, then those whose vectors
/// are close to the question's, each once, with a score in 0..=1.
async fn seed_hits<R: Retriever>(
    store: &R,
    qv: Option<&[f32]>,
    question: &str,
    options: &SearchOptions,
) -> Result<Vec<EntityHit>, QueryError> {
    let mut out: Vec<EntityHit> = store
        .entities_by_name(question, options.seed_entities)
        .await?;
    if let Some(v) = qv {
        let near = store.vector_entities(v, options.seed_entities).await?;
        for e in near {
            if e.score >= options.min_entity_cosine
                && !out.iter().any(|o| o.entity.id == e.entity.id)
            {
                out.push(e);
            }
        }
    }
    Ok(out)
}

async fn found_seeds<R: Retriever>(
    store: &R,
    qv: Option<&[f32]>,
    question: &str,
    options: &SearchOptions,
) -> Result<Vec<crate::source::EntityRef>, QueryError> {
    Ok(seed_hits(store, qv, question, options)
        .await?
        .into_iter()
        .map(|h| h.entity)
        .collect())
}

/// The graph list: chunks reached from the seeds, scored by the seed's
/// score halved per hop (the best reach of each chunk, plus a little for
/// every other entity that reaches it), best first; and the entities
/// behind each chunk.
#[allow(clippy::type_complexity)]
async fn graph_list<R: Retriever>(
    store: &R,
    qv: Option<&[f32]>,
    question: &str,
    options: &SearchOptions,
) -> Result<(Vec<(String, f32)>, HashMap<String, Vec<WhyEntity>>), QueryError> {
    let seeds = seed_hits(store, qv, question, options).await?;
    if seeds.is_empty() {
        return Ok((Vec::new(), HashMap::new()));
    }
    let seed_score: HashMap<&str, f32> = seeds
        .iter()
        .map(|s| (s.entity.id.as_str(), s.score.clamp(0.0, 1.0)))
        .collect();
    let seed_name: HashMap<&str, &str> = seeds
        .iter()
        .map(|s| (s.entity.id.as_str(), s.entity.name.as_str()))
        .collect();
    let ids: Vec<String> = seeds.iter().map(|s| s.entity.id.clone()).collect();
    let reached = store
        .expand(
            &ids,
            options.hops.min(2),
            options.max_neighbours,
            options.per_entity,
        )
        .await?;
    let mut score: HashMap<String, f32> = HashMap::new();
    let mut why: HashMap<String, Vec<WhyEntity>> = HashMap::new();
    let mut counted: HashSet<(String, String)> = HashSet::new();
    for r in &reached {
        let s = seed_score.get(r.seed.as_str()).copied().unwrap_or(0.0)
            * 0.5f32.powi(i32::from(r.hops));
        let e = score.entry(r.chunk_id.clone()).or_default();
        if counted.insert((r.chunk_id.clone(), r.entity.id.clone())) {
            *e = e.max(s) + 0.01 * s;
            why.entry(r.chunk_id.clone()).or_default().push(WhyEntity {
                name: r.entity.name.clone(),
                entity_type: r.entity.entity_type.clone(),
                seed: seed_name
                    .get(r.seed.as_str())
                    .copied()
                    .unwrap_or_default()
                    .to_owned(),
                hops: r.hops,
            });
        }
    }
    let mut list: Vec<(String, f32)> = score.into_iter().collect();
    list.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    list.truncate(options.pool.max(options.k));
    Ok((list, why))
}
