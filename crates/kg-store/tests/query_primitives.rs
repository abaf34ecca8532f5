//! The retrieval primitives of `GraphStore` (fulltext, vector over chunks
//! and entities, entities by name, graph expansion, chunks with their
//! documents, the graph of a set of chunks) on both backends: the
//! embedded store, and the Bolt test server (`bolt_` tests, `NEO4J_URI`).

mod common;

use common::*;
use kg_store::{
    BatchWriter, EmbeddedConfig, EmbeddedStore, GraphStore, Neo4jConfig, Neo4jStore, Scored,
};

fn embedded(dir: &std::path::Path) -> EmbeddedStore {
    EmbeddedStore::open(&EmbeddedConfig {
        data_dir: dir.join("kg-data"),
    })
    .unwrap()
}

async fn bolt() -> Neo4jStore {
    let config: Neo4jConfig = neo4j_config();
    let uri = config.uri.clone();
    match Neo4jStore::connect(config).await {
        Ok(s) => s,
        Err(e) => panic!("cannot reach the Bolt test server at {uri}: {e}"),
    }
}

/// The chunk of the fixture whose text starts with `start`.
fn chunk_id(records: &[kg_core::Record], start: &str) -> String {
    records
        .iter()
        .find_map(|r| match r {
            kg_core::Record::Chunk(c) if c.text.starts_with(start) => Some(c.id.to_string()),
            _ => None,
        })
        .unwrap()
}

fn ids(v: &[Scored]) -> Vec<&str> {
    v.iter().map(|s| s.id.as_str()).collect()
}

async fn check_retrieval<S: GraphStore + 'static>(store: S, dir: &std::path::Path, tag: &str) {
    let records = fixture(tag);
    let writer = BatchWriter::open(store, writer_config(dir)).await.unwrap();
    writer
        .write_records(records.clone())
        .await
        .unwrap()
        .check()
        .unwrap();
    let store = writer.sink();
    let bolt_chunk = chunk_id(&records, "The Bolt protocol");
    let ian_chunk = chunk_id(&records, "Ian Murdock founded");

    // A rare exact term (the tag) with "Bolt protocol": fulltext finds that
    // chunk first; the vector of another chunk's axis does not.
    let text = format!("{tag} Bolt protocol");
    let found = store.fulltext_chunks(&text, 5).await.unwrap();
    assert_eq!(ids(&found).first(), Some(&bolt_chunk.as_str()), "{found:?}");
    assert!(found[0].score > 0.0);
    let near = store.vector_chunks(&query_vector(tag, 0), 1).await.unwrap();
    assert_eq!(ids(&near), [ian_chunk.as_str()]);

    // Hostile query text: results or nothing, never an error.
    let long = format!("{} {tag}", "(\"AND OR* ~\\: [".repeat(700));
    for q in [
        "\"unbalanced",
        "AND",
        "OR OR NOT",
        "*",
        "~",
        "\\",
        "title:x",
        "(((",
        "[x TO",
        "{}",
        "",
        "   ",
        "c'est l'été",
        long.as_str(),
    ] {
        let r = store.fulltext_chunks(q, 5).await;
        assert!(r.is_ok(), "fulltext {q:.40?}: {r:?}");
        let r = store.entities_by_name(q, 5).await;
        assert!(r.is_ok(), "entities by name {q:.40?}: {r:?}");
    }
    assert!(store.fulltext_chunks("*** ::", 5).await.unwrap().is_empty());
    let tagged = store.fulltext_chunks(&long, 10).await.unwrap();
    assert!(
        !tagged.is_empty(),
        "the tag inside 10 kB of syntax still matches"
    );

    // Entities by name; expansion to a neighbour's chunks.
    let question = format!("What did Bruce Perens {tag} do?");
    let named = store.entities_by_name(&question, 5).await.unwrap();
    let bruce = named
        .iter()
        .find(|m| m.entity.name == format!("Bruce Perens {tag}"))
        .unwrap_or_else(|| panic!("{named:?}"));
    let reached = store
        .expand(std::slice::from_ref(&bruce.entity.id), 1, 10, 5)
        .await
        .unwrap();
    let via_ian = reached
        .iter()
        .find(|r| r.chunk_id == ian_chunk && r.entity.name == format!("Ian Murdock {tag}"));
    assert!(via_ian.is_some_and(|r| r.hops <= 1), "{reached:?}");
    let two = store
        .expand(std::slice::from_ref(&bruce.entity.id), 2, 10, 5)
        .await
        .unwrap();
    assert!(two.len() >= reached.len());
    assert!(two.iter().all(|r| r.hops <= 2));

    // Entity vectors are written and searched.
    let e = store.vector_entities(&entity_vector(tag), 3).await.unwrap();
    assert!(
        e.iter()
            .any(|m| m.entity.name == format!("Debian {tag}") && m.score > 0.999),
        "{e:?}"
    );

    // Chunks with their documents; the graph of a set of chunks.
    let info = store
        .chunks(&[ian_chunk.clone(), "no-such-chunk".into()])
        .await
        .unwrap();
    assert_eq!(info.len(), 1);
    assert_eq!(
        info[0].title.as_deref(),
        Some(format!("A history of Debian ({tag})").as_str())
    );
    assert_eq!((info[0].page_start, info[0].page_end), (Some(1), Some(1)));
    assert!(info[0].source.ends_with("debian-history.pdf"));
    let graph = store
        .chunk_graph(std::slice::from_ref(&ian_chunk))
        .await
        .unwrap();
    assert!(graph
        .mentions
        .iter()
        .any(|(c, e)| c == &ian_chunk && e.name == format!("Ian Murdock {tag}")));
    assert!(graph.relations.iter().any(
        |r| r.from.name == format!("Ian Murdock {tag}") && r.to.name == format!("Debian {tag}")
    ));
}

#[tokio::test]
async fn embedded_retrieval_primitives() {
    let dir = tempfile::tempdir().unwrap();
    check_retrieval(embedded(dir.path()), dir.path(), &unique_tag("q")).await;
}

#[tokio::test]
async fn bolt_retrieval_primitives() {
    let dir = tempfile::tempdir().unwrap();
    check_retrieval(bolt().await, dir.path(), &unique_tag("q")).await;
}

/// A store made before the fulltext table existed gets its chunks indexed
/// when it is opened again.
#[tokio::test]
async fn embedded_fulltext_index_is_built_for_an_older_store() {
    let dir = tempfile::tempdir().unwrap();
    let tag = unique_tag("old");
    {
        let store = embedded(dir.path());
        let writer = BatchWriter::open(store, writer_config(dir.path()))
            .await
            .unwrap();
        writer
            .write_records(fixture(&tag))
            .await
            .unwrap()
            .check()
            .unwrap();
        writer
            .sink()
            .with_connection(|c| {
                c.execute_batch(
                    "DROP TRIGGER chunks_fts_insert; DROP TRIGGER chunks_fts_delete;
                     DROP TRIGGER chunks_fts_update; DROP TABLE chunks_fts;",
                )
            })
            .unwrap()
            .unwrap();
    }
    let store = embedded(dir.path());
    let found = store
        .fulltext_chunks(&format!("{tag} Bolt"), 3)
        .await
        .unwrap();
    assert!(!found.is_empty());
}
