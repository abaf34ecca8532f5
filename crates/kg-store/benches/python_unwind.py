#!/usr/bin/env python3
"""The official Neo4j Python driver's UNWIND loop, for kg-store's benchmark.

Writes `--rows` chunk-like rows (the same shape and query as the Rust
benchmark: MERGE on id, SET += props) in explicit transactions of each
`--sizes` batch size, and prints one line per size:

    python-unwind size=<n> rows_per_sec=<x>

Connection settings come from NEO4J_URI, NEO4J_USER, NEO4J_PASSWORD and
NEO4J_DATABASE (the password never appears on a command line). Each run
uses fresh ids and deletes its nodes afterwards (untimed).
"""
import argparse
import os
import time

from neo4j import GraphDatabase

QUERY = "UNWIND $rows AS row MERGE (n:BenchChunk {id: row.id}) SET n += row.props"
TEXT = ("Chunk-like row for the UNWIND benchmark: a paragraph of a document, "
        "as the ingest stage would cut it, with enough text to weigh. ") * 4


def rows(tag, n):
    return [
        {
            "id": f"{tag}-{i}",
            "props": {
                "document_id": f"{tag}-doc-{i // 500}",
                "index": i,
                "text": TEXT,
                "tokens": 96,
                "source": f"bench/{tag}/{i // 500}.txt",
            },
        }
        for i in range(n)
    ]


def cleanup(session):
    while True:
        n = session.run(
            "MATCH (n:BenchChunk) WITH n LIMIT 10000 DETACH DELETE n RETURN count(*) AS c"
        ).single()["c"]
        if n == 0:
            break


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=30000)
    ap.add_argument("--sizes", default="100,500,1000,2000,5000,10000")
    args = ap.parse_args()
    uri = os.environ["NEO4J_URI"]
    auth = (os.environ.get("NEO4J_USER", "neo4j"), os.environ.get("NEO4J_PASSWORD", ""))
    db = os.environ.get("NEO4J_DATABASE", "neo4j")
    with GraphDatabase.driver(uri, auth=auth) as driver:
        with driver.session(database=db) as session:
            for size in [int(s) for s in args.sizes.split(",")]:
                tag = f"py{size}x{time.time_ns()}"
                data = rows(tag, args.rows)
                start = time.perf_counter()
                for i in range(0, len(data), size):
                    tx = session.begin_transaction()
                    tx.run(QUERY, rows=data[i:i + size]).consume()
                    tx.commit()
                took = time.perf_counter() - start
                print(f"python-unwind size={size} rows_per_sec={args.rows / took:.0f}", flush=True)
                cleanup(session)


if __name__ == "__main__":
    main()
