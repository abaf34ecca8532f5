//! Shared by the benches that write to the Bolt test server.

use kg_store::Neo4jStore;

/// Deletes every node (and its relations) of the Bolt test server's graph,
/// 10,000 at a time.
pub async fn clear_graph(store: &Neo4jStore) {
    loop {
        let mut txn = store.graph().start_txn().await.expect("transaction");
        let mut rows = txn
            .execute(neo4rs::query(
                "MATCH (n) WITH n LIMIT 10000 DETACH DELETE n RETURN count(*) AS c",
            ))
            .await
            .expect("delete nodes");
        let n = match rows.next(txn.handle()).await {
            Ok(Some(r)) => r.get::<i64>("c").unwrap_or(0),
            _ => 0,
        };
        txn.commit().await.expect("commit");
        if n == 0 {
            return;
        }
    }
}
