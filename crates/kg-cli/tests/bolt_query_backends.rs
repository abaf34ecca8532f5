//! Same answers from both backends: one small graph (two documents, their
//! chunks with vectors, entities with vectors, relations) is written to the
//! embedded store and to a Bolt server, and every search mode must return
//! the same chunks from both, with the same reasons and the same `kg ask`
//! prompt; in the same order, except where hybrid's fusion of scores meets
//! BM25 scores that differ between the backends (then fused by ranks
//! too, where the order must agree).
//!
//! The Bolt side is an ArcadeDB of this test's own (kg-testkit's
//! `PrivateServer`, which drives `cargo xtask server start --fresh` on a
//! free port; `KG_XTASK` names the xtask binary): BM25 statistics and
//! nearest neighbours are corpus-wide, so only an empty database holds
//! exactly the graph the embedded store holds. On ArcadeDB, fulltext is
//! kg's own BM25 (docs/store.md) and vectors are compared by
//! `vector.similarity.cosine()`; in the embedded store FTS5's `bm25()` and
//! an exact scan.

use std::time::{Duration, Instant};

use kg_cli::query::{EmbedderQuery, StoreRetriever};
use kg_core::{
    Chunk, ChunkId, Document, DocumentId, Embedding, EmbeddingTarget, Entity, EntityId,
    ExtractedEntity, ExtractedRelation, Extraction, Label, MediaType, Record, RelType, Relation,
};
use kg_query::{Mode, SearchOptions};
use kg_store::{
    AnyStore, BatchWriter, EmbeddedConfig, EmbeddedStore, Neo4jConfig, Neo4jStore, Secret,
    WriterConfig,
};
use kg_testkit::PrivateServer;

#[path = "support/bag_of_words.rs"]
mod bag_of_words;
use bag_of_words::BagOfWords;

/// The question and chunk embedder (questions go through kg-cli's
/// `EmbedderQuery`, as in `kg search`).
const BAG: BagOfWords = BagOfWords {
    dims: 64,
    model: "test/bag-of-words",
};

const DOCS: [(&str, &str, &[&str]); 2] = [
    (
        "history.pdf",
        "A Brief History of Debian",
        &[
            "Ian Murdock founded the Debian project in August 1993 while he was a student at Purdue University.",
            "The Free Software Foundation sponsored Debian from November 1994 to November 1995.",
            "Bruce Perens succeeded Ian Murdock as project leader in April 1996 and guided the first releases.",
            "Release code names come from characters of the film Toy Story; the unstable distribution is called Sid.",
            "Debian 1.1 Buzz shipped in June 1996 with 474 packages and the ELF binary format.",
            "The Debian Social Contract and the Debian Free Software Guidelines were ratified in July 1997.",
        ],
    ),
    (
        "bash.txt",
        "GNU Bash manual",
        &[
            "The shopt builtin toggles shell options; shopt -s globstar makes ** match directories recursively.",
            "Parameter expansion ${name:-word} substitutes word when name is unset or null.",
            "The history builtin lists earlier commands; HISTSIZE limits how many the shell remembers.",
            "Brace expansion generates arbitrary strings: a{d,c,b}e expands to ade ace abe.",
            "The trap builtin runs a command when the shell receives a signal such as SIGINT.",
            "Job control lets a user suspend a process with Ctrl-Z and resume it with fg or bg.",
        ],
    ),
];

/// (name, type, description, chunks (doc, index) that mention it)
type EntitySpec = (
    &'static str,
    &'static str,
    &'static str,
    &'static [(usize, usize)],
);

/// The graph's entities.
const ENTITIES: [EntitySpec; 8] = [
    (
        "Ian Murdock",
        "Person",
        "Founder of Debian",
        &[(0, 0), (0, 2)],
    ),
    (
        "Debian",
        "Organization",
        "A free operating system project",
        &[(0, 0), (0, 1), (0, 4), (0, 5)],
    ),
    (
        "Free Software Foundation",
        "Organization",
        "Sponsor of Debian in 1994 and 1995",
        &[(0, 1)],
    ),
    (
        "Bruce Perens",
        "Person",
        "Second Debian project leader",
        &[(0, 2)],
    ),
    (
        "Toy Story",
        "Work",
        "Film whose characters name Debian releases",
        &[(0, 3)],
    ),
    ("Buzz", "Release", "Debian 1.1", &[(0, 4)]),
    (
        "Bash",
        "Software",
        "The GNU shell",
        &[(1, 0), (1, 2), (1, 4), (1, 5)],
    ),
    (
        "shopt",
        "Command",
        "Builtin that sets shell options",
        &[(1, 0)],
    ),
];

/// (from, type, to)
const RELATIONS: [(usize, &str, usize); 6] = [
    (0, "FOUNDED", 1),
    (2, "SPONSORED", 1),
    (3, "SUCCEEDED", 0),
    (4, "NAMES_RELEASES_OF", 1),
    (5, "RELEASE_OF", 1),
    (7, "BUILTIN_OF", 6),
];

fn graph(tag: &str) -> Vec<Record> {
    let mut out = Vec::new();
    let mut chunk_ids: Vec<Vec<ChunkId>> = Vec::new();
    for (d, (source, title, texts)) in DOCS.iter().enumerate() {
        let sha = kg_core::sha256_hex(format!("{tag}:{source}").as_bytes());
        let doc = DocumentId::from_content_sha256(&sha);
        out.push(Record::Document(Document {
            id: doc.clone(),
            source: format!("/corpus/{source}"),
            title: Some((*title).to_owned()),
            sha256: sha,
            pages: (d == 0).then_some(6),
            media_type: if d == 0 {
                MediaType::Pdf
            } else {
                MediaType::Text
            },
            bytes: 1_000,
        }));
        let mut ids = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            let id = ChunkId::new(&doc, i as u32, text);
            out.push(Record::Chunk(Chunk {
                id: id.clone(),
                document_id: doc.clone(),
                index: i as u32,
                tokens: text.split_whitespace().count() as u32,
                text: (*text).to_owned(),
                source: format!("/corpus/{source}"),
                page_start: (d == 0).then_some(i as u32 + 1),
                page_end: (d == 0).then_some(i as u32 + 1),
            }));
            out.push(Record::Embedding(Embedding {
                id: id.to_string(),
                target: EmbeddingTarget::Chunk,
                vector: BAG.vector(text),
                model: "test/bag-of-words".into(),
            }));
            ids.push(id);
        }
        chunk_ids.push(ids);
    }
    let entity_ids: Vec<(EntityId, Label)> = ENTITIES
        .iter()
        .map(|(name, ty, _, _)| {
            let label = Label::new(ty).unwrap();
            (EntityId::new(&label, name), label)
        })
        .collect();
    let chunk = |(d, i): (usize, usize)| chunk_ids[d][i].clone();
    // One extraction per chunk: the entities it mentions and the relations
    // among them.
    for (d, ids) in chunk_ids.iter().enumerate() {
        for i in 0..ids.len() {
            let here: Vec<usize> = (0..ENTITIES.len())
                .filter(|&e| ENTITIES[e].3.contains(&(d, i)))
                .collect();
            if here.is_empty() {
                continue;
            }
            out.push(Record::Extraction(Extraction {
                chunk_id: chunk((d, i)),
                entities: here
                    .iter()
                    .map(|&e| ExtractedEntity {
                        id: entity_ids[e].0.clone(),
                        name: ENTITIES[e].0.into(),
                        entity_type: entity_ids[e].1.clone(),
                        description: ENTITIES[e].2.into(),
                    })
                    .collect(),
                relations: RELATIONS
                    .iter()
                    .filter(|(a, _, b)| here.contains(a) && here.contains(b))
                    .map(|(a, ty, b)| ExtractedRelation {
                        source: ENTITIES[*a].0.into(),
                        target: ENTITIES[*b].0.into(),
                        source_id: entity_ids[*a].0.clone(),
                        target_id: entity_ids[*b].0.clone(),
                        rel_type: RelType::new(ty).unwrap(),
                        description: format!("{} {ty} {}", ENTITIES[*a].0, ENTITIES[*b].0),
                        strength: 0.8,
                    })
                    .collect(),
                model: "test".into(),
            }));
        }
    }
    for (e, (name, _, description, mentions)) in ENTITIES.iter().enumerate() {
        let mut chunks: Vec<ChunkId> = mentions.iter().map(|&m| chunk(m)).collect();
        chunks.sort();
        let entity = Entity {
            id: entity_ids[e].0.clone(),
            name: (*name).into(),
            entity_type: entity_ids[e].1.clone(),
            description: (*description).into(),
            aliases: Vec::new(),
            chunk_ids: chunks,
            mention_descriptions: Default::default(),
        };
        // As `kg run` embeds entities.
        out.push(Record::Embedding(Embedding {
            id: entity_ids[e].0.to_string(),
            target: EmbeddingTarget::Entity,
            vector: BAG.vector(&kg_embed::entity_text(&entity)),
            model: "test/bag-of-words".into(),
        }));
        out.push(Record::Entity(entity));
    }
    for (a, ty, b) in RELATIONS {
        let chunks: Vec<ChunkId> = ENTITIES[a]
            .3
            .iter()
            .filter(|m| ENTITIES[b].3.contains(m))
            .map(|&m| chunk(m))
            .collect();
        out.push(Record::Relation(Relation {
            source_id: entity_ids[a].0.clone(),
            target_id: entity_ids[b].0.clone(),
            rel_type: RelType::new(ty).unwrap(),
            description: format!("{} {ty} {}", ENTITIES[a].0, ENTITIES[b].0),
            weight: 0.8,
            chunk_ids: chunks,
            chunk_descriptions: Default::default(),
        }));
    }
    out
}

async fn write(store: AnyStore, dir: &std::path::Path, records: Vec<Record>) -> AnyStore {
    let config = WriterConfig {
        dead_letter: dir.join("dead-letter.jsonl"),
        ..WriterConfig::default()
    };
    let writer = BatchWriter::open(store, config).await.unwrap();
    writer
        .write_records(records)
        .await
        .unwrap()
        .check()
        .unwrap();
    writer.into_sink()
}

/// Connects, retrying while the private server finishes coming up.
async fn bolt(server: &PrivateServer) -> Neo4jStore {
    let s = server.settings();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut config = Neo4jConfig::new(
            s.uri.clone(),
            s.user.clone(),
            Secret::new(s.password.clone()),
        );
        if let Some(database) = &s.database {
            config.database = database.clone();
        }
        match Neo4jStore::connect(config).await {
            Ok(store) => return store,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("private ArcadeDB on port {}: {e}", server.port()),
        }
    }
}

/// The messages `kg ask` would send for `found` (built as kg-cli's ask
/// command builds them) and its sources' chunk ids. (A source's score is
/// left out: BM25 scores differ between backends, ranks do not.)
async fn ask_prompt(
    store: &AnyStore,
    question: &str,
    found: &kg_query::Retrieved,
) -> (String, String, Vec<String>) {
    let ids: Vec<String> = found.hits.iter().map(|h| h.chunk.id.clone()).collect();
    let graph = kg_query::Retriever::chunk_graph(&StoreRetriever(store), &ids)
        .await
        .unwrap();
    let prompt = kg_query::prompt::build(question, &found.hits, &graph);
    let sources = prompt.sources.iter().map(|s| s.chunk_id.clone()).collect();
    (prompt.system, prompt.user, sources)
}

/// What must be equal across backends: each hit's chunk, document, pages,
/// the modes that found it and the entities behind it, in rank order.
fn answer(found: &kg_query::Retrieved) -> Vec<String> {
    found
        .hits
        .iter()
        .map(|h| {
            let entities: Vec<String> = h
                .why
                .entities
                .iter()
                .map(|e| format!("{}<-{}/{}", e.name, e.seed, e.hops))
                .collect();
            format!(
                "{} {} p.{:?}-{:?} {:?} {:?}",
                h.chunk.id,
                h.chunk.source,
                h.chunk.page_start,
                h.chunk.page_end,
                h.why.modes,
                entities
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bolt_and_embedded_stores_give_the_same_hits_in_every_mode() {
    let server = PrivateServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let records = graph("same");
    let embedded = EmbeddedStore::open(&EmbeddedConfig {
        data_dir: dir.path().join("embedded"),
    })
    .unwrap();
    let embedded = write(AnyStore::Embedded(embedded), dir.path(), records.clone()).await;
    let neo4j = bolt(&server).await;
    let neo4j = write(AnyStore::Neo4j(Box::new(neo4j)), dir.path(), records).await;
    let embedder = EmbedderQuery(std::sync::Arc::new(BAG));

    let questions = [
        "Who founded the Debian project?",
        "When did the Free Software Foundation sponsor Debian?",
        "What does shopt -s globstar do?",
        "How are release code names chosen?",
        "How do I resume a suspended process?",
        "What did Bruce Perens do?",
        "${name:-word} (\"unbalanced * OR ~ \\",
    ];
    let mut compared = 0;
    let mut prompts = 0;
    // Hybrid fuses scores, and BM25 scores differ between the backends
    // (FTS5's bm25() here, kg's own BM25 over Bolt, with an estimated
    // average length): there the same chunks must be found, in an order
    // that may differ. Fused by ranks only (equal-weight RRF), every
    // mode must give the same hits in the same order.
    let fusions = [
        kg_query::DEFAULT_FUSION,
        kg_query::fusion::Fusion::EQUAL_RRF,
    ];
    for (mode, hops, fusion) in [Mode::Vector, Mode::Fulltext, Mode::Hybrid, Mode::Graph]
        .into_iter()
        .flat_map(|m| [1u8, 2].map(|h| (m, h)))
        .filter(|(m, h)| *h == 1 || *m == Mode::Graph)
        .flat_map(|(m, h)| fusions.map(|f| (m, h, f)))
    {
        {
            let options = SearchOptions {
                mode,
                k: 5,
                hops,
                fusion,
                ..SearchOptions::default()
            };
            let by_scores =
                matches!(mode, Mode::Hybrid | Mode::Graph) && fusion == kg_query::DEFAULT_FUSION;
            let sorted = |mut v: Vec<String>| {
                if by_scores {
                    v.sort();
                }
                v
            };
            for q in questions {
                let a = kg_query::search(&StoreRetriever(&embedded), &embedder, q, &options)
                    .await
                    .unwrap();
                let b = kg_query::search(&StoreRetriever(&neo4j), &embedder, q, &options)
                    .await
                    .unwrap();
                assert_eq!(
                    sorted(answer(&a)),
                    sorted(answer(&b)),
                    "{mode:?} hops {hops} {fusion:?}: {q:?} (left embedded, right Bolt)"
                );
                if mode != Mode::Fulltext {
                    let (x, y) = (a.best_cosine.unwrap(), b.best_cosine.unwrap());
                    assert!((x - y).abs() < 1e-4, "{mode:?} {q:?}: cosine {x} vs {y}");
                }
                if mode == Mode::Vector {
                    for (h, g) in a.hits.iter().zip(&b.hits) {
                        assert!((h.score - g.score).abs() < 1e-4, "{q:?}");
                    }
                }
                assert_eq!(a.seeds, b.seeds, "{mode:?} {q:?}: seed entities");
                // `kg ask` sends the same prompt: the hits, the entities
                // their chunks mention and the relations among them (when
                // the order may differ, the same sources).
                let (pa, pb) = (
                    ask_prompt(&embedded, q, &a).await,
                    ask_prompt(&neo4j, q, &b).await,
                );
                if by_scores {
                    assert_eq!(pa.0, pb.0);
                    assert_eq!(sorted(pa.2), sorted(pb.2), "{mode:?} {q:?}: sources");
                } else {
                    assert_eq!(pa, pb, "{mode:?} hops {hops}: {q:?}: ask prompt");
                }
                if !a.hits.is_empty() {
                    prompts += 1;
                }
                compared += a.hits.len();
            }
        }
    }
    // The comparison compared something: hits in every mode, and graph
    // mode reached chunks through entities.
    assert!(compared > 100, "{compared} hits compared");
    assert!(prompts > 20, "{prompts} prompts compared");
    let graph = kg_query::search(
        &StoreRetriever(&embedded),
        &embedder,
        "What did Bruce Perens do?",
        &SearchOptions {
            mode: Mode::Graph,
            k: 10,
            ..SearchOptions::default()
        },
    )
    .await
    .unwrap();
    assert!(graph.hits.iter().any(|h| h
        .why
        .entities
        .iter()
        .any(|e| e.seed == "Bruce Perens" && e.hops == 1)));
}
