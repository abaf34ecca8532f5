//! The Bolt round trip the rest of kg relies on, against the real test
//! server (`cargo xtask it` selects this file by its name): parameters in,
//! UNWIND + MERGE, values back exactly as written, idempotent re-runs, and
//! rollback that leaves nothing behind.

use kg_testkit::neo4rs::{self, query, BoltType, Graph};
use kg_testkit::{bolt_graph, RunTag, TestkitError};
use std::collections::HashMap;

/// One document row as the batch writer sends it: a map per node.
fn document_row(id: &str, title: &str, pages: i64, sha256: &str) -> BoltType {
    let mut row: HashMap<String, BoltType> = HashMap::new();
    row.insert("id".into(), id.into());
    row.insert("title".into(), title.into());
    row.insert("pages".into(), pages.into());
    row.insert("sha256".into(), sha256.into());
    row.into()
}

const MERGE_DOCUMENTS: &str = "\
UNWIND $rows AS row
MERGE (d:Document {id: row.id})
SET d.title = row.title, d.pages = row.pages, d.sha256 = row.sha256, d.run = $run";

async fn documents_of(
    graph: &Graph,
    tag: &RunTag,
) -> Result<Vec<(String, String, i64, String)>, TestkitError> {
    let mut rows = graph
        .execute(
            query(
                "MATCH (d:Document) WHERE d.run = $run \
                 RETURN d.id AS id, d.title AS title, d.pages AS pages, d.sha256 AS sha256 \
                 ORDER BY id",
            )
            .param("run", tag.as_str()),
        )
        .await?;
    let mut documents = Vec::new();
    while let Some(row) = rows.next().await? {
        let field = |e| TestkitError::Query(neo4rs::Error::DeserializationError(e));
        documents.push((
            row.get::<String>("id").map_err(field)?,
            row.get::<String>("title").map_err(field)?,
            row.get::<i64>("pages").map_err(field)?,
            row.get::<String>("sha256").map_err(field)?,
        ));
    }
    Ok(documents)
}

#[tokio::test]
async fn unwind_merge_over_bolt_reads_back_exact_values() -> Result<(), TestkitError> {
    let bolt = bolt_graph().await?;
    let graph = bolt.graph();
    let tag = RunTag::new("unwind_merge_over_bolt");
    let rows: Vec<BoltType> = vec![
        document_row(
            &tag.scoped("doc_b"),
            "Über Graphen: \"quotes\" & ünïcödé",
            12,
            "b2c3",
        ),
        document_row(&tag.scoped("doc_a"), "Annual report 2024", 1, "a1b2"),
        document_row(&tag.scoped("doc_c"), "", 0, "c3d4"),
    ];

    graph
        .run(
            query(MERGE_DOCUMENTS)
                .param("rows", rows.clone())
                .param("run", tag.as_str()),
        )
        .await?;
    // The same batch again: MERGE must land on the same nodes.
    graph
        .run(
            query(MERGE_DOCUMENTS)
                .param("rows", rows)
                .param("run", tag.as_str()),
        )
        .await?;

    let documents = documents_of(graph, &tag).await?;
    assert_eq!(
        documents,
        vec![
            (
                tag.scoped("doc_a"),
                "Annual report 2024".to_owned(),
                1,
                "a1b2".to_owned()
            ),
            (
                tag.scoped("doc_b"),
                "Über Graphen: \"quotes\" & ünïcödé".to_owned(),
                12,
                "b2c3".to_owned()
            ),
            (tag.scoped("doc_c"), String::new(), 0, "c3d4".to_owned()),
        ]
    );

    assert_eq!(bolt.delete_tagged("Document", "run", &tag).await?, 3);
    assert_eq!(documents_of(graph, &tag).await?, vec![]);
    Ok(())
}

#[tokio::test]
async fn rolled_back_bolt_transaction_leaves_nothing() -> Result<(), TestkitError> {
    let bolt = bolt_graph().await?;
    let graph = bolt.graph();
    let tag = RunTag::new("rolled_back_bolt_transaction");

    let mut txn = graph.start_txn().await?;
    txn.run(
        query(MERGE_DOCUMENTS)
            .param(
                "rows",
                vec![document_row(&tag.scoped("doc"), "draft", 3, "ffff")],
            )
            .param("run", tag.as_str()),
    )
    .await?;
    txn.rollback().await?;

    assert_eq!(documents_of(graph, &tag).await?, vec![]);

    // The same write committed is visible: the empty read above is the
    // rollback's doing, not a query that can never match.
    let mut txn = graph.start_txn().await?;
    txn.run(
        query(MERGE_DOCUMENTS)
            .param(
                "rows",
                vec![document_row(&tag.scoped("doc"), "final", 3, "ffff")],
            )
            .param("run", tag.as_str()),
    )
    .await?;
    txn.commit().await?;
    assert_eq!(
        documents_of(graph, &tag).await?,
        vec![(tag.scoped("doc"), "final".to_owned(), 3, "ffff".to_owned())]
    );
    assert_eq!(bolt.delete_tagged("Document", "run", &tag).await?, 1);
    Ok(())
}
