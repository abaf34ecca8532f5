//! kg-store: The batch writer: kg graph records into Neo4j over Bolt, or the embedded store.
