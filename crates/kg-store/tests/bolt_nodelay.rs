//! Guards the vendored neo4rs patch (vendor/neo4rs/PATCH.md): the driver's
//! socket must have TCP_NODELAY set.
//!
//! How the stall happens without it: neo4rs writes a message through an
//! 8 KiB buffered stream. A bigger message (a chunk with its 1,536-float
//! embedding is ~14 KB) goes out as a tiny segment (the chunk header left in
//! the buffer) followed by the body; Nagle's algorithm holds the body until
//! the tiny segment is acknowledged, and the server delays that ACK by
//! ~40 ms because it has nothing to send yet. So every transaction carrying
//! a realistic row pays 40 ms; with the patch it takes a few milliseconds.
//!
//! This is the one timing assertion in the crate, and it is a correctness
//! check of the patch rather than a performance target: the bound (20 ms
//! on average, half the stall) sits well above the patched figure and well
//! below the unpatched one. Throughput is measured in
//! `benches/batch_writer.rs`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kg_store::Neo4jStore;
use neo4rs::query;

#[tokio::test]
async fn bolt_small_transactions_do_not_wait_on_nagle() {
    let cfg = neo4j_config();
    let store = Neo4jStore::connect(cfg).await.unwrap();
    let tag = unique_tag("nodelay");
    const N: u32 = 200;
    // Warm the connection up.
    for _ in 0..10 {
        let mut txn = store.graph().start_txn().await.unwrap();
        txn.run(query("RETURN 1")).await.unwrap();
        txn.commit().await.unwrap();
    }
    let embedding: Vec<f64> = (0..1536)
        .map(|i| ((i * 7919) % 1000) as f64 / 1000.0 - 0.5)
        .collect();
    let started = Instant::now();
    for i in 0..N {
        let mut txn = store.graph().start_txn().await.unwrap();
        txn.run(
            query("MERGE (n:Chunk {id: $id}) SET n.text = $text, n.embedding = $embedding")
                .param("id", format!("{tag}-{i}"))
                .param("text", format!("one-chunk transaction {i} of {tag}"))
                .param("embedding", embedding.clone()),
        )
        .await
        .unwrap();
        txn.commit().await.unwrap();
    }
    let per_txn = started.elapsed() / N;
    // Clean up this test's nodes.
    let mut txn = store.graph().start_txn().await.unwrap();
    txn.run(
        query("MATCH (n:Chunk) WHERE n.id STARTS WITH $tag DETACH DELETE n")
            .param("tag", tag.clone()),
    )
    .await
    .unwrap();
    txn.commit().await.unwrap();
    assert!(
        per_txn < Duration::from_millis(20),
        "{N} one-chunk transactions averaged {per_txn:?}: the driver's socket waits on Nagle's \
         algorithm (is the TCP_NODELAY patch in vendor/neo4rs still applied?)"
    );
}
