//! Retrieval in four modes, and why each hit was found.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::fusion::{rrf, Fusion, Norm, Ranked};
use crate::source::{ChunkDoc, EntityHit, QueryEmbedder, QueryError, Retriever, ScoredId};

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

/// The fusion of hybrid and graph mode: CombSUM of min-max normalised
/// scores with equal weights (`0.5 · n(bm25) + 0.5 · n(cosine)`), which has
/// no parameter to fit. On eval/ it beats vector and fulltext alone on
/// recall@5, and no tuned fusion did better on held-out questions
/// (two-fold cross-validation of weighted RRF and of convex combinations
/// under three normalisations: `cargo xtask eval`, docs/query.md).
pub const DEFAULT_FUSION: Fusion = Fusion::Convex {
    lexical: 0.5,
    norm: Norm::MinMax,
};

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
    /// How hybrid (and graph) mode fuses the vector and fulltext lists.
    pub fusion: Fusion,
    /// Graph mode: the weight of the graph list when it is fused, by RRF,
    /// with the hybrid ranking (which weighs 1).
    pub graph_weight: f32,
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
            fusion: DEFAULT_FUSION,
            graph_weight: 0.5,
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
    /// The mode's score: cosine, BM25, the fused score of hybrid mode
    /// (normalised CombSUM, 0..=1) or graph mode's RRF score.
    pub score: f32,
    /// The chunk and its document.
    #[serde(flatten)]
    pub chunk: ChunkDoc,
    /// Why it was found.
    pub why: Why,
    /// The entities the chunk mentions.
    pub mentions: Vec<crate::source::EntityRef>,
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

/// The ranked lists a mode fuses, before fusion: what [`search`] ranks,
/// and what the evaluation sweeps fusions over.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Candidates {
    /// The `pool` nearest chunks by cosine, best first (empty in fulltext
    /// mode).
    pub vector: Vec<ScoredId>,
    /// The `pool` best chunks by BM25, best first (empty in vector mode).
    pub fulltext: Vec<ScoredId>,
    /// Graph mode: the chunks reached from the seed entities, best first,
    /// scored by the seed's score halved per hop.
    pub graph: Vec<ScoredId>,
    /// Graph mode: the entities behind each graph chunk.
    #[serde(skip)]
    pub graph_why: HashMap<String, Vec<WhyEntity>>,
    /// Graph mode: the seed entities.
    pub seeds: Vec<crate::source::EntityRef>,
}

impl Candidates {
    /// The mode's ranking: `(chunk id, score)`, best first, all of it.
    pub fn rank(&self, options: &SearchOptions) -> Vec<(String, f32)> {
        let pairs = |list: &[ScoredId]| -> Vec<(String, f32)> {
            list.iter().map(|s| (s.id.clone(), s.score)).collect()
        };
        match options.mode {
            Mode::Vector => pairs(&self.vector),
            Mode::Fulltext => pairs(&self.fulltext),
            Mode::Hybrid => options.fusion.fuse(&self.vector, &self.fulltext),
            Mode::Graph => {
                let hybrid = options.fusion.fuse(&self.vector, &self.fulltext);
                rrf(
                    &[
                        Ranked {
                            ids: hybrid.iter().map(|(id, _)| id.as_str()).collect(),
                            weight: 1.0,
                        },
                        Ranked {
                            ids: self.graph.iter().map(|s| s.id.as_str()).collect(),
                            weight: options.graph_weight,
                        },
                    ],
                    crate::fusion::RRF_K,
                )
            }
        }
    }

    /// Why each chunk of the lists was found.
    fn why(&self) -> HashMap<String, Why> {
        let mut why: HashMap<String, Why> = HashMap::new();
        for (i, s) in self.vector.iter().enumerate() {
            let w = why.entry(s.id.clone()).or_default();
            w.modes.push("vector");
            w.vector = Some((i + 1, s.score));
        }
        for (i, s) in self.fulltext.iter().enumerate() {
            let w = why.entry(s.id.clone()).or_default();
            w.modes.push("fulltext");
            w.fulltext = Some((i + 1, s.score));
        }
        for s in &self.graph {
            let w = why.entry(s.id.clone()).or_default();
            w.modes.push("graph");
            w.entities = self.graph_why.get(&s.id).cloned().unwrap_or_default();
        }
        why
    }
}

/// The lists `options.mode` fuses for `question` (each `options.pool`
/// long, at least `k`).
pub async fn candidates<R: Retriever, E: QueryEmbedder>(
    store: &R,
    embedder: &E,
    question: &str,
    options: &SearchOptions,
) -> Result<Candidates, QueryError> {
    let pool = options.pool.max(options.k);
    let needs_vector = options.mode != Mode::Fulltext;
    let needs_fulltext = options.mode != Mode::Vector;
    let qv = if needs_vector {
        Some(embedder.embed_query(question).await?)
    } else {
        None
    };
    let vector = match &qv {
        Some(v) => store.vector_chunks(v, pool).await?,
        None => Vec::new(),
    };
    let fulltext = if needs_fulltext {
        store.fulltext(question, pool).await?
    } else {
        Vec::new()
    };
    let mut out = Candidates {
        vector,
        fulltext,
        ..Candidates::default()
    };
    if options.mode == Mode::Graph {
        let seeds = seed_hits(store, qv.as_deref(), question, options).await?;
        let (graph, why) = graph_list(store, &seeds, options).await?;
        out.graph = graph;
        out.graph_why = why;
        out.seeds = seeds.into_iter().map(|h| h.entity).collect();
    }
    Ok(out)
}

/// Retrieves chunks for `question`.
pub async fn search<R: Retriever, E: QueryEmbedder>(
    store: &R,
    embedder: &E,
    question: &str,
    options: &SearchOptions,
) -> Result<Retrieved, QueryError> {
    let found = candidates(store, embedder, question, options).await?;
    let best_cosine = found.vector.first().map(|s| s.score);
    let mut why = found.why();
    let top: Vec<(String, f32)> = found.rank(options).into_iter().take(options.k).collect();
    let ids: Vec<String> = top.iter().map(|(id, _)| id.clone()).collect();
    let docs = store.chunks(&ids).await?;
    let graph = if ids.is_empty() {
        crate::source::ChunkGraph::default()
    } else {
        store.chunk_graph(&ids).await?
    };
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
            mentions: graph
                .mentions
                .iter()
                .filter(|(chunk, _)| *chunk == id)
                .map(|(_, e)| e.clone())
                .collect(),
        })
        .collect();
    Ok(Retrieved {
        hits,
        best_cosine,
        seeds: found.seeds,
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

/// The graph list: chunks reached from the seeds, scored by the seed's
/// score halved per hop (the best reach of each chunk, plus a little for
/// every other entity that reaches it), best first; and the entities
/// behind each chunk.
async fn graph_list<R: Retriever>(
    store: &R,
    seeds: &[EntityHit],
    options: &SearchOptions,
) -> Result<(Vec<ScoredId>, HashMap<String, Vec<WhyEntity>>), QueryError> {
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
    let mut list: Vec<ScoredId> = score
        .into_iter()
        .map(|(id, score)| ScoredId { id, score })
        .collect();
    list.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
    list.truncate(options.pool.max(options.k));
    Ok((list, why))
}
