//! Shared fixtures and checks for the store tests, run against both
//! backends: the same assertions hold for Neo4j (over Bolt) and for the
//! embedded store.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use kg_core::*;
use kg_store::{
    read_dead_letters, BatchWriter, GraphCounts, GraphStore, Neo4jConfig, Scope, Secret,
    WriterConfig,
};

/// A tag unique to this test run: every id and text carries it, so tests
/// on a shared server only ever see their own nodes.
pub fn unique_tag(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{name}{}x{nanos}", std::process::id())
}

/// The Bolt server from the environment; panics (fails the test) with a
/// clear message when `NEO4J_URI` is unset.
pub fn neo4j_config() -> Neo4jConfig {
    match Neo4jConfig::from_env() {
        Some(c) => c,
        None => panic!(
            "NEO4J_URI is not set: Bolt tests need a server (run `cargo xtask it`, or set \
             NEO4J_URI, NEO4J_USER, NEO4J_PASSWORD, NEO4J_DATABASE)"
        ),
    }
}

pub fn secret(s: &str) -> Secret {
    Secret::new(s)
}

pub fn writer_config(dir: &Path) -> WriterConfig {
    WriterConfig {
        dead_letter: dir.join("dead-letter.jsonl"),
        ..WriterConfig::default()
    }
}

fn label(s: &str) -> Label {
    Label::new(s).unwrap()
}

fn rel(s: &str) -> RelType {
    RelType::new(s).unwrap()
}

/// Writes `records` and fails the test on any failed batch.
pub async fn write_ok<S: kg_store::GraphSink>(writer: &BatchWriter<S>, records: Vec<Record>) {
    writer
        .write_records(records)
        .await
        .unwrap()
        .check()
        .unwrap();
}

/// A realistic small corpus: two documents (a PDF with pages, a Markdown
/// file), their chunks, what an LLM extracted from each chunk, the resolved
/// entities and relations, chunk and entity embeddings, and a CSV mapping
/// of airports and routes. Every id and text carries `tag`.
pub fn fixture(tag: &str) -> Vec<Record> {
    let mut out = Vec::new();
    let texts: [(&str, &[&str]); 2] = [
        (
            "debian-history.pdf",
            &[
                "Ian Murdock founded the Debian project in August 1993 while at Purdue University.",
                "Debian was sponsored by the Free Software Foundation from November 1994 to November 1995.",
                "Bruce Perens succeeded Ian Murdock as project leader in 1996.",
            ],
        ),
        (
            "notes/graphs.md",
            &[
                "Neo4j stores graphs as nodes and relationships with properties.",
                "The Bolt protocol carries Cypher queries from drivers to the server.",
            ],
        ),
    ];
    let mut chunk_ids: Vec<Vec<ChunkId>> = Vec::new();
    for (d, (source, chunks)) in texts.iter().enumerate() {
        let sha = sha256_hex(format!("{tag}:{source}").as_bytes());
        let doc = DocumentId::from_content_sha256(&sha);
        out.push(Record::Document(Document {
            id: doc.clone(),
            source: format!("{tag}/{source}"),
            title: (d == 0).then(|| format!("A history of Debian ({tag})")),
            sha256: sha,
            pages: (d == 0).then_some(3),
            media_type: if d == 0 {
                MediaType::Pdf
            } else {
                MediaType::Markdown
            },
            bytes: 48_213 + d as u64,
        }));
        let mut ids = Vec::new();
        for (i, text) in chunks.iter().enumerate() {
            let text = format!("{text} [{tag}]");
            let id = ChunkId::new(&doc, i as u32, &text);
            ids.push(id.clone());
            out.push(Record::Chunk(Chunk {
                id,
                document_id: doc.clone(),
                index: i as u32,
                tokens: text.split_whitespace().count() as u32,
                text,
                source: format!("{tag}/{source}"),
                page_start: (d == 0).then_some(i as u32 + 1),
                page_end: (d == 0).then_some(i as u32 + 1),
            }));
        }
        chunk_ids.push(ids);
    }
    let person = label("Person");
    let org = label("Organization");
    let ent = |l: &Label, name: &str| EntityId::new(l, &format!("{name} {tag}"));
    let ian = ent(&person, "Ian Murdock");
    let debian = ent(&org, "Debian");
    let fsf = ent(&org, "Free Software Foundation");
    let bruce = ent(&person, "Bruce Perens");
    let c = &chunk_ids[0];
    let xent = |id: &EntityId, l: &Label, name: &str, desc: &str| ExtractedEntity {
        id: id.clone(),
        name: format!("{name} {tag}"),
        entity_type: l.clone(),
        description: desc.into(),
    };
    let xrel = |s: &EntityId, t: &EntityId, ty: &str, strength: f32| ExtractedRelation {
        source: "s".into(),
        target: "t".into(),
        source_id: s.clone(),
        target_id: t.clone(),
        rel_type: rel(ty),
        description: format!("{ty} as the chunk says"),
        strength,
    };
    out.push(Record::Extraction(Extraction {
        chunk_id: c[0].clone(),
        entities: vec![
            xent(&ian, &person, "Ian Murdock", "founder"),
            xent(&debian, &org, "Debian", "a project"),
        ],
        relations: vec![xrel(&ian, &debian, "founded", 0.9)],
        model: "fake-llm".into(),
    }));
    out.push(Record::Extraction(Extraction {
        chunk_id: c[1].clone(),
        entities: vec![
            xent(&debian, &org, "Debian", "sponsored"),
            xent(&fsf, &org, "Free Software Foundation", "a sponsor"),
        ],
        relations: vec![xrel(&fsf, &debian, "sponsored", 0.7)],
        model: "fake-llm".into(),
    }));
    out.push(Record::Extraction(Extraction {
        chunk_id: c[2].clone(),
        entities: vec![
            xent(&bruce, &person, "Bruce Perens", "second leader"),
            xent(&ian, &person, "Ian Murdock", "first leader"),
            xent(&debian, &org, "Debian", ""),
        ],
        relations: vec![
            xrel(&bruce, &ian, "succeeded", 0.8),
            xrel(&bruce, &debian, "led", 0.6),
        ],
        model: "fake-llm".into(),
    }));
    let entity = |id: &EntityId,
                  l: &Label,
                  name: &str,
                  desc: &str,
                  aliases: Vec<String>,
                  chunks: Vec<ChunkId>| {
        Record::Entity(Entity {
            id: id.clone(),
            name: format!("{name} {tag}"),
            entity_type: l.clone(),
            description: desc.into(),
            aliases,
            chunk_ids: chunks,
            mention_descriptions: Default::default(),
        })
    };
    let sorted = |mut v: Vec<ChunkId>| {
        v.sort();
        v
    };
    out.push(entity(
        &ian,
        &person,
        "Ian Murdock",
        "Founder of Debian, first project leader.",
        vec![format!("Murdock {tag}")],
        sorted(vec![c[0].clone(), c[2].clone()]),
    ));
    out.push(entity(
        &debian,
        &org,
        "Debian",
        "A free operating system project.",
        vec![],
        sorted(vec![c[0].clone(), c[1].clone(), c[2].clone()]),
    ));
    out.push(entity(
        &fsf,
        &org,
        "Free Software Foundation",
        "Sponsor of Debian 1994-1995.",
        vec![],
        sorted(vec![c[1].clone()]),
    ));
    out.push(entity(
        &bruce,
        &person,
        "Bruce Perens",
        "Debian project leader from 1996.",
        vec![],
        sorted(vec![c[2].clone()]),
    ));
    let relation =
        |s: &EntityId, t: &EntityId, ty: &str, desc: &str, w: f32, chunks: Vec<ChunkId>| {
            Record::Relation(Relation {
                source_id: s.clone(),
                target_id: t.clone(),
                rel_type: rel(ty),
                description: desc.into(),
                weight: w,
                chunk_ids: chunks,
                chunk_descriptions: Default::default(),
            })
        };
    out.push(relation(
        &ian,
        &debian,
        "founded",
        "Ian Murdock founded Debian in 1993.",
        0.9,
        vec![c[0].clone()],
    ));
    out.push(relation(
        &fsf,
        &debian,
        "sponsored",
        "The FSF sponsored Debian.",
        0.7,
        vec![c[1].clone()],
    ));
    out.push(relation(
        &bruce,
        &ian,
        "succeeded",
        "Perens succeeded Murdock.",
        0.8,
        vec![c[2].clone()],
    ));
    out.push(relation(
        &bruce,
        &debian,
        "led",
        "Perens led Debian.",
        0.6,
        vec![c[2].clone()],
    ));
    // Embeddings: 16 dimensions; chunk i of document d points along axis
    // (d * 3 + i) of the first 8, plus a direction in the last 8 that only
    // this tag has, so search has a known answer even on a shared server.
    for (d, ids) in chunk_ids.iter().enumerate() {
        for (i, id) in ids.iter().enumerate() {
            let v = query_vector(tag, d * 3 + i);
            out.push(Record::Embedding(Embedding {
                id: id.to_string(),
                target: EmbeddingTarget::Chunk,
                vector: v,
                model: "fake-embed".into(),
            }));
        }
    }
    out.push(Record::Embedding(Embedding {
        id: debian.to_string(),
        target: EmbeddingTarget::Entity,
        vector: entity_vector(tag),
        model: "fake-embed".into(),
    }));
    // CSV: airports and routes.
    let airport = label("Airport");
    let mut airports = Vec::new();
    for (line, (iata, name, lat, hub, opened)) in [
        ("LHR", "Heathrow", 51.4706, true, "1946-05-31"),
        ("CDG", "Charles de Gaulle", 49.0097, true, "1974-03-08"),
        ("OSL", "Oslo Gardermoen", 60.1976, false, "1998-10-08"),
    ]
    .into_iter()
    .enumerate()
    {
        let key = format!("{iata}-{tag}");
        let id = NodeId::new(&airport, &key);
        airports.push(id.clone());
        let mut props = BTreeMap::new();
        props.insert(
            PropertyKey::new("name").unwrap(),
            PropertyValue::String(name.into()),
        );
        props.insert(PropertyKey::new("lat").unwrap(), PropertyValue::Float(lat));
        props.insert(PropertyKey::new("hub").unwrap(), PropertyValue::Bool(hub));
        props.insert(
            PropertyKey::new("runways").unwrap(),
            PropertyValue::Int(2 + line as i64),
        );
        props.insert(
            PropertyKey::new("opened").unwrap(),
            PropertyValue::Date(opened.into()),
        );
        out.push(Record::Node(GraphNode {
            id,
            label: airport.clone(),
            key,
            properties: props,
            source: format!("{tag}/airports.csv"),
            line: line as u64 + 2,
        }));
    }
    for (line, (a, b, km)) in [(0usize, 1usize, 344i64), (1, 2, 1343), (0, 2, 1154)]
        .into_iter()
        .enumerate()
    {
        let mut props = BTreeMap::new();
        props.insert(
            PropertyKey::new("distance_km").unwrap(),
            PropertyValue::Int(km),
        );
        out.push(Record::Edge(GraphEdge {
            rel_type: rel("route"),
            from: NodeRef {
                label: airport.clone(),
                id: airports[a].clone(),
            },
            to: NodeRef {
                label: airport.clone(),
                id: airports[b].clone(),
            },
            properties: props,
            source: format!("{tag}/routes.csv"),
            line: line as u64 + 2,
        }));
    }
    out
}

/// The vector of the fixture's Debian entity: four components from the
/// tag's hash, so on a shared server, where every earlier run left its
/// own Debian, this run's is the only one in its direction.
pub fn entity_vector(tag: &str) -> Vec<f32> {
    let h = content_hash(&[tag.as_bytes(), b"entity"]);
    (0..4)
        .map(|i| {
            let byte = h
                .get(2 * i..2 * i + 2)
                .and_then(|x| u8::from_str_radix(x, 16).ok())
                .unwrap_or(0);
            f32::from(byte) / 255.0 - 0.5 + if i == 3 { 1.0 } else { 0.0 }
        })
        .collect()
}

/// The vector of the chunk along `axis` in the fixture of `tag`.
pub fn query_vector(tag: &str, axis: usize) -> Vec<f32> {
    let mut v = vec![0.05f32; 16];
    v[axis] = 1.0;
    // The tag's own direction: 8 components from its hash, each one of 256
    // values. (One bit per component gave 256 directions in all, and on a
    // server holding a few dozen fixtures two tags shared one now and then,
    // tying for the top hit.)
    let h = content_hash(&[tag.as_bytes()]);
    for i in 0..8 {
        let byte = h
            .get(2 * i..2 * i + 2)
            .and_then(|x| u8::from_str_radix(x, 16).ok())
            .unwrap_or(0);
        v[8 + i] = f32::from(byte) / 255.0 - 0.5;
    }
    v
}

/// Every node id the records name (the scope of a test's counts).
pub fn node_ids(records: &[Record]) -> Vec<String> {
    let mut ids = Vec::new();
    for r in records {
        match r {
            Record::Document(d) => ids.push(d.id.to_string()),
            Record::Chunk(c) => ids.push(c.id.to_string()),
            Record::Entity(e) => ids.push(e.id.to_string()),
            Record::Extraction(x) => ids.extend(x.entities.iter().map(|e| e.id.to_string())),
            Record::Node(n) => ids.push(n.id.to_string()),
            Record::Edge(e) => {
                ids.push(e.from.id.to_string());
                ids.push(e.to.id.to_string());
            }
            _ => {}
        }
    }
    ids.sort();
    ids.dedup();
    ids
}

/// The graph as read back: what the fixture's resolved records say, with
/// the raw extractions folded in (each chunk's descriptions kept with it).
/// Sorted by JSON for comparison.
pub fn expected_read_back(records: &[Record]) -> Vec<String> {
    use std::collections::{BTreeMap, HashMap};
    type ByChunk = BTreeMap<ChunkId, Vec<String>>;
    let mut entities: HashMap<String, ByChunk> = HashMap::new();
    let mut relations: HashMap<(String, String, String), ByChunk> = HashMap::new();
    let add = |map: &mut ByChunk, chunk: &ChunkId, d: &str| {
        let d = d.trim();
        if !d.is_empty() {
            let list = map.entry(chunk.clone()).or_default();
            if !list.iter().any(|x| x == d) {
                list.push(d.to_owned());
            }
        }
    };
    for r in records {
        if let Record::Extraction(x) = r {
            for e in &x.entities {
                add(
                    entities.entry(e.id.to_string()).or_default(),
                    &x.chunk_id,
                    &e.description,
                );
            }
            for r in &x.relations {
                let key = (
                    r.source_id.to_string(),
                    r.rel_type.to_string(),
                    r.target_id.to_string(),
                );
                add(
                    relations.entry(key).or_default(),
                    &x.chunk_id,
                    &r.description,
                );
            }
        }
    }
    canonical(
        records
            .iter()
            .filter(|r| !matches!(r, Record::Extraction(_) | Record::SetAside(_)))
            .cloned()
            .map(|r| match r {
                Record::Entity(mut e) => {
                    if let Some(m) = entities.remove(e.id.as_str()) {
                        e.mention_descriptions = m;
                    }
                    Record::Entity(e)
                }
                Record::Relation(mut rel) => {
                    let key = (
                        rel.source_id.to_string(),
                        rel.rel_type.to_string(),
                        rel.target_id.to_string(),
                    );
                    if let Some(m) = relations.remove(&key) {
                        rel.chunk_descriptions = m;
                    }
                    Record::Relation(rel)
                }
                r => r,
            })
            .collect(),
    )
}

/// Records as sorted JSON lines (order-free comparison).
pub fn canonical(records: Vec<Record>) -> Vec<String> {
    let mut lines: Vec<String> = records
        .into_iter()
        .map(|r| serde_json::to_string(&r).unwrap())
        .collect();
    lines.sort();
    lines
}

/// The counts the fixture must produce.
pub fn expected_counts() -> GraphCounts {
    let mut c = GraphCounts::default();
    for (k, v) in [
        ("Document", 2),
        ("Chunk", 5),
        ("Entity:Person", 2),
        ("Entity:Organization", 2),
        ("Airport", 3),
    ] {
        c.nodes.insert(k.into(), v);
    }
    for (k, v) in [
        ("HAS_CHUNK", 5),
        ("NEXT_CHUNK", 3),
        ("MENTIONS", 7),
        ("FOUNDED", 1),
        ("SPONSORED", 1),
        ("SUCCEEDED", 1),
        ("LED", 1),
        ("ROUTE", 3),
    ] {
        c.relationships.insert(k.into(), v);
    }
    c
}

/// Writes the fixture and reads it back exactly; counts match.
pub async fn check_round_trip<S: GraphStore>(store: S, dir: &Path, tag: &str) {
    let records = fixture(tag);
    let scope = Scope::Ids(node_ids(&records));
    // Opened: the writer makes sure of the schema itself.
    let writer = BatchWriter::open(store, writer_config(dir)).await.unwrap();
    let report = writer.write_records(records.clone()).await.unwrap();
    report.check().unwrap();
    assert_eq!(report.records, records.len() as u64);
    assert!(report.failed_batches.is_empty());
    assert_eq!(report.success_rate(), 1.0);
    assert!(report.rows > records.len() as u64, "{report:?}");
    let counts = writer.sink().counts(&scope).await.unwrap();
    assert_eq!(counts, expected_counts());
    // Streamed back through a channel of one: the reader waits for the
    // consumer, record by record.
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let mut back = Vec::new();
    let collect = async {
        while let Some(r) = rx.recv().await {
            back.push(r);
        }
    };
    let (sent, ()) = tokio::join!(writer.sink().read_records(&scope, tx), collect);
    assert_eq!(sent.unwrap(), back.len() as u64);
    // Chunks come in document and index order, each followed by its vector.
    let order: Vec<String> = back
        .iter()
        .filter_map(|r| match r {
            Record::Chunk(c) => Some(format!("chunk {} {}", c.document_id, c.index)),
            Record::Embedding(e) if e.target == EmbeddingTarget::Chunk => Some("vector".into()),
            _ => None,
        })
        .collect();
    let mut want_order: Vec<(String, u32)> = records
        .iter()
        .filter_map(|r| match r {
            Record::Chunk(c) => Some((c.document_id.to_string(), c.index)),
            _ => None,
        })
        .collect();
    want_order.sort();
    let want_order: Vec<String> = want_order
        .into_iter()
        .flat_map(|(d, i)| [format!("chunk {d} {i}"), "vector".to_owned()])
        .collect();
    assert_eq!(order, want_order);
    // The entities alone: exactly the entity records and entity vectors of
    // the whole read, in the same order, and nothing else.
    let entity_records: Vec<Record> = back
        .iter()
        .filter(|r| match r {
            Record::Entity(_) => true,
            Record::Embedding(e) => e.target == EmbeddingTarget::Entity,
            _ => false,
        })
        .cloned()
        .collect();
    assert!(entity_records.len() >= 2, "{entity_records:?}");
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let mut entities = Vec::new();
    let collect = async {
        while let Some(r) = rx.recv().await {
            entities.push(r);
        }
    };
    let (sent, ()) = tokio::join!(writer.sink().read_entities(&scope, tx), collect);
    assert_eq!(sent.unwrap(), entities.len() as u64);
    assert_eq!(entities, entity_records);
    let got = canonical(back);
    let want = expected_read_back(&records);
    if got != want {
        for l in &want {
            if !got.contains(l) {
                eprintln!("missing: {l}");
            }
        }
        for l in &got {
            if !want.contains(l) {
                eprintln!("unexpected: {l}");
            }
        }
        panic!("read-back differs from what was written");
    }
}

/// Writing the same input twice leaves the same counts and the same graph
/// (relation chunk lists without duplicates, no property erased).
pub async fn check_idempotent<S: GraphStore>(store: S, dir: &Path, tag: &str) {
    let records = fixture(tag);
    let scope = Scope::Ids(node_ids(&records));
    let writer = BatchWriter::new(store, writer_config(dir));
    writer
        .write_records(records.clone())
        .await
        .unwrap()
        .check()
        .unwrap();
    let first = writer.sink().counts(&scope).await.unwrap();
    let first_back = canonical(writer.sink().read_all(&scope).await.unwrap());
    writer
        .write_records(records.clone())
        .await
        .unwrap()
        .check()
        .unwrap();
    let second = writer.sink().counts(&scope).await.unwrap();
    let second_back = canonical(writer.sink().read_all(&scope).await.unwrap());
    assert_eq!(first, second);
    assert_eq!(first, expected_counts());
    assert_eq!(first_back, second_back);
    // Partial records never erase: an entity update without a description
    // keeps the stored one; extraction-only rows never override resolved ones.
    let ian = records
        .iter()
        .find_map(|r| match r {
            Record::Entity(e) if e.name.starts_with("Ian") => Some(e.clone()),
            _ => None,
        })
        .unwrap();
    let mut partial = ian.clone();
    partial.description = String::new();
    partial.aliases.clear();
    partial.chunk_ids.clear();
    let before = writer
        .sink()
        .read_all(&Scope::Ids(vec![ian.id.to_string()]))
        .await
        .unwrap();
    assert!(
        before
            .iter()
            .any(|r| matches!(r, Record::Entity(e) if e.description == ian.description)),
        "{before:?}"
    );
    writer
        .write_records(vec![Record::Entity(partial)])
        .await
        .unwrap()
        .check()
        .unwrap();
    let back = writer
        .sink()
        .read_all(&Scope::Ids(vec![ian.id.to_string()]))
        .await
        .unwrap();
    assert_eq!(back, before);
}

/// Text and property values that look like Cypher are stored verbatim and
/// harm nothing: data only ever travels as parameters.
pub async fn check_hostile_data<S: GraphStore>(store: S, dir: &Path, tag: &str) {
    // Hostile names cannot become identifiers at all.
    for raw in [
        "Person`}) DETACH DELETE n //",
        "a:B",
        "x`) MATCH (m) DETACH DELETE m //",
    ] {
        assert!(Label::new(raw).is_err(), "{raw}");
        assert!(RelType::new(raw).is_err(), "{raw}");
    }
    let line = format!(
        r#"{{"kind":"node","id":"x{tag}","label":"Airport`}}) DETACH DELETE n //","key":"k","source":"f","line":1}}"#
    );
    let parsed: Vec<_> = jsonl::RecordReader::new(line.as_bytes(), "hostile.jsonl").collect();
    assert!(parsed[0].is_err());
    // Hostile data is data.
    let mut records = fixture(tag);
    let evil = format!("\"}}) MATCH (n) DETACH DELETE n // ' ` $rows {tag}");
    for r in records.iter_mut() {
        match r {
            Record::Chunk(c) => c.text.push_str(&evil),
            Record::Entity(e) => e.description = evil.clone(),
            Record::Node(n) => {
                n.properties.insert(
                    PropertyKey::new("note").unwrap(),
                    PropertyValue::String(evil.clone()),
                );
            }
            _ => {}
        }
    }
    let scope = Scope::Ids(node_ids(&records));
    let writer = BatchWriter::new(store, writer_config(dir));
    writer
        .write_records(records.clone())
        .await
        .unwrap()
        .check()
        .unwrap();
    assert_eq!(
        writer.sink().counts(&scope).await.unwrap(),
        expected_counts()
    );
    let back = canonical(writer.sink().read_all(&scope).await.unwrap());
    assert_eq!(back, expected_read_back(&records));
}

/// A batch that fails for good (the caller injected a constraint violation
/// on `failing` label nodes) is rolled back and dead-lettered; every other
/// batch lands; after the cause is removed, a re-run of the dead-letter
/// file brings the graph to the counts of an undisturbed run.
pub async fn check_failed_batch_dead_lettered<S: GraphStore>(
    writer: &BatchWriter<S>,
    tag: &str,
    failing: &Label,
    remove_cause: impl std::future::Future<Output = ()>,
) {
    let mut records = fixture(tag);
    // Two nodes of the failing label: one good, one whose `key` collides
    // with the injected constraint. They share a batch, so the good one
    // must be rolled back with it.
    let mut bad_ids = Vec::new();
    for key in [format!("ok-{tag}"), format!("dup-{tag}")] {
        let id = NodeId::new(failing, &key);
        bad_ids.push(id.to_string());
        records.push(Record::Node(GraphNode {
            id,
            label: failing.clone(),
            key,
            properties: BTreeMap::new(),
            source: format!("{tag}/gates.csv"),
            line: 2,
        }));
    }
    let dead = writer.config().dead_letter.clone();
    let report = writer.write_records(records.clone()).await.unwrap();
    assert_eq!(report.failed_batches.len(), 1, "{report:?}");
    let failed = &report.failed_batches[0];
    assert_eq!(failed.group, format!("nodes:{failing}"));
    assert_eq!(failed.rows, 2);
    assert_eq!(failed.attempts, 1, "a permanent error is not retried");
    assert!(matches!(
        report.check(),
        Err(kg_store::StoreError::BatchesFailed { count: 1, .. })
    ));
    assert!(report.has_set_aside());
    assert_eq!(
        report.set_aside[0].reason,
        kg_core::SetAsideReason::BatchFailed
    );
    // Dead-lettered: exactly the two node records.
    let dl = read_dead_letters(&dead).unwrap();
    assert_eq!(dl.len(), 2);
    assert!(dl
        .iter()
        .all(|r| matches!(r, Record::Node(n) if &n.label == failing)));
    // Rolled back: neither node exists; everything else landed.
    let fixture_scope = Scope::Ids(node_ids(&fixture(tag)));
    assert_eq!(
        writer.sink().counts(&fixture_scope).await.unwrap(),
        expected_counts()
    );
    let bad_scope = Scope::Ids(bad_ids.clone());
    assert_eq!(
        writer
            .sink()
            .counts(&bad_scope)
            .await
            .unwrap()
            .total_nodes(),
        0
    );
    // Fix the cause and re-run the dead letters.
    remove_cause.await;
    let rerun = kg_store::rerun_dead_letters(writer).await.unwrap();
    rerun.check().unwrap();
    assert_eq!(rerun.records, 2);
    assert!(!dead.exists() || read_dead_letters(&dead).unwrap().is_empty());
    let all = writer
        .sink()
        .counts(&Scope::Ids(node_ids(&records)))
        .await
        .unwrap();
    let mut want = expected_counts();
    want.nodes.insert(failing.to_string(), 2);
    assert_eq!(all, want);
    // A second re-run finds nothing to do.
    let again = kg_store::rerun_dead_letters(writer).await.unwrap();
    assert_eq!(again.records, 0);
}

/// Vector search finds the chunk nearest the query vector, scored by
/// cosine; the graph of that chunk holds its entities and the relations
/// among them.
pub async fn check_search<S: GraphStore>(store: S, dir: &Path, tag: &str) {
    let records = fixture(tag);
    let writer = BatchWriter::new(store, writer_config(dir));
    writer.sink().ensure_schema(Some(16)).await.unwrap();
    writer
        .write_records(records.clone())
        .await
        .unwrap()
        .check()
        .unwrap();
    // Axis 2 is the third chunk of the PDF: Perens succeeded Murdock.
    let q = query_vector(tag, 2);
    let hits = writer.sink().vector_chunks(&q, 3).await.unwrap();
    assert!(!hits.is_empty());
    let top = &hits[0];
    let text = |id: &str| {
        records.iter().find_map(|r| match r {
            Record::Chunk(c) if c.id.as_str() == id => Some(c.text.clone()),
            _ => None,
        })
    };
    let top_text = text(&top.id).unwrap_or_default();
    assert!(top_text.starts_with("Bruce Perens succeeded"), "{top:?}");
    assert!(top_text.contains(tag));
    assert!((top.score - 1.0).abs() < 1e-4, "{}", top.score);
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    // Every score is the cosine of the query and the chunk's vector,
    // whatever scale the server computes it on.
    let vectors: BTreeMap<String, Vec<f32>> = records
        .iter()
        .filter_map(|r| match r {
            Record::Embedding(e) if e.target == EmbeddingTarget::Chunk => {
                Some((e.id.clone(), e.vector.clone()))
            }
            _ => None,
        })
        .collect();
    // (On a shared server the lower hits may be other tests' chunks.)
    for h in hits.iter().filter(|h| vectors.contains_key(&h.id)) {
        let v = &vectors[&h.id];
        let dot: f32 = q.iter().zip(v).map(|(a, b)| a * b).sum();
        let norm = |x: &[f32]| x.iter().map(|a| a * a).sum::<f32>().sqrt();
        let want = dot / (norm(&q) * norm(v));
        assert!((h.score - want).abs() < 1e-3, "{} vs {want}", h.score);
    }
    let graph = writer
        .sink()
        .chunk_graph(std::slice::from_ref(&top.id))
        .await
        .unwrap();
    let names: Vec<&str> = graph
        .mentions
        .iter()
        .map(|(_, e)| e.name.as_str())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("Bruce Perens")));
    // Among them, Ian Murdock FOUNDED Debian.
    assert!(graph.relations.iter().any(|r| r.rel_type == "FOUNDED"
        && r.from.name.starts_with("Ian Murdock")
        && r.to.name.starts_with("Debian")));
}

/// A changed version of the fixture's PDF: same source, new content (so a
/// new document id), one chunk that mentions Ian Murdock and Debian again
/// and says FOUNDED again.
pub fn changed_pdf(tag: &str) -> (DocumentId, ChunkId, Vec<Record>) {
    let source = format!("{tag}/debian-history.pdf");
    let sha = sha256_hex(format!("{tag}:debian-history.pdf:revised").as_bytes());
    let doc = DocumentId::from_content_sha256(&sha);
    let text = format!("Ian Murdock founded the Debian project in August 1993 (revised). [{tag}]");
    let chunk = ChunkId::new(&doc, 0, &text);
    let person = label("Person");
    let org = label("Organization");
    let ian = EntityId::new(&person, &format!("Ian Murdock {tag}"));
    let debian = EntityId::new(&org, &format!("Debian {tag}"));
    let records = vec![
        Record::Document(Document {
            id: doc.clone(),
            source: source.clone(),
            title: Some(format!("A history of Debian ({tag})")),
            sha256: sha,
            pages: Some(1),
            media_type: MediaType::Pdf,
            bytes: 12_001,
        }),
        Record::Chunk(Chunk {
            id: chunk.clone(),
            document_id: doc.clone(),
            index: 0,
            tokens: text.split_whitespace().count() as u32,
            text,
            source,
            page_start: Some(1),
            page_end: Some(1),
        }),
        Record::Extraction(Extraction {
            chunk_id: chunk.clone(),
            entities: vec![
                ExtractedEntity {
                    id: ian.clone(),
                    name: format!("Ian Murdock {tag}"),
                    entity_type: person,
                    description: "founder".into(),
                },
                ExtractedEntity {
                    id: debian.clone(),
                    name: format!("Debian {tag}"),
                    entity_type: org,
                    description: "a project".into(),
                },
            ],
            relations: vec![ExtractedRelation {
                source: "s".into(),
                target: "t".into(),
                source_id: ian,
                target_id: debian,
                rel_type: rel("founded"),
                description: "founded as the chunk says".into(),
                strength: 0.9,
            }],
            model: "fake-llm".into(),
        }),
        Record::Embedding(Embedding {
            id: chunk.to_string(),
            target: EmbeddingTarget::Chunk,
            vector: query_vector(tag, 7),
            model: "fake-embed".into(),
        }),
    ];
    (doc, chunk, records)
}

/// The id of the fixture PDF's first chunk.
pub fn first_chunk_of_old_pdf(tag: &str) -> String {
    fixture(tag)
        .iter()
        .find_map(|r| match r {
            Record::Chunk(c) if c.source.ends_with("debian-history.pdf") && c.index == 0 => {
                Some(c.id.to_string())
            }
            _ => None,
        })
        .unwrap()
}

/// The fixture's documents as they are after the PDF changed.
pub fn current_after_change(tag: &str, fixture: &[Record]) -> Vec<kg_store::CurrentDocument> {
    let (pdf, _, _) = changed_pdf(tag);
    fixture
        .iter()
        .filter_map(|r| match r {
            Record::Document(d) => Some(kg_store::CurrentDocument {
                source: d.source.clone(),
                id: if d.source.ends_with("debian-history.pdf") {
                    pdf.clone()
                } else {
                    d.id.clone()
                },
            }),
            _ => None,
        })
        .collect()
}

/// The PDF of the fixture changes: after the new version is written,
/// `supersede` removes the old one (document, its 3 chunks, their
/// mentions and NEXT_CHUNK links), trims FOUNDED to the new chunk, drops
/// the three relations only old chunks cited and the two entities nothing
/// links to any more; the Markdown document, the CSV graph and the new
/// version are untouched. A second call removes nothing.
///
/// `unlink_first_old_chunk` (run after both versions are written) deletes
/// the `HAS_CHUNK` of the old version's first chunk, as a run killed
/// between a chunk and its link leaves it: that chunk must go too.
pub async fn check_supersede<S: GraphStore>(
    writer: &BatchWriter<S>,
    tag: &str,
    unlink_first_old_chunk: impl std::future::Future<Output = ()>,
) {
    let v1 = fixture(tag);
    let old_pdf = v1
        .iter()
        .find_map(|r| match r {
            Record::Document(d) if d.source.ends_with("debian-history.pdf") => Some(d.id.clone()),
            _ => None,
        })
        .unwrap();
    let (new_pdf, new_chunk, v2) = changed_pdf(tag);
    let mut all = v1.clone();
    all.extend(v2.iter().cloned());
    let scope = Scope::Ids(node_ids(&all));
    write_ok(writer, v1.clone()).await;
    write_ok(writer, v2).await;
    let before = writer.sink().counts(&scope).await.unwrap();
    assert_eq!(before.nodes["Document"], 3, "{before:?}");
    assert_eq!(before.nodes["Chunk"], 6, "{before:?}");
    unlink_first_old_chunk.await;
    let unlinked = writer.sink().counts(&scope).await.unwrap();
    assert_eq!(unlinked.relationships["HAS_CHUNK"], 5, "{unlinked:?}");

    let current = current_after_change(tag, &v1);
    let gone = writer.sink().supersede(&current).await.unwrap();
    assert_eq!(gone.documents, vec![old_pdf.clone()]);
    assert!(gone.failed.is_empty(), "{gone:?}");
    assert_eq!(
        (gone.chunks, gone.entities, gone.relations),
        (3, 2, 3),
        "{gone:?}"
    );

    let after = writer.sink().counts(&scope).await.unwrap();
    let mut want = expected_counts();
    for (k, v) in [
        ("Document", 2),
        ("Chunk", 3),
        ("Entity:Person", 1),
        ("Entity:Organization", 1),
    ] {
        want.nodes.insert(k.into(), v);
    }
    for (k, v) in [("HAS_CHUNK", 3), ("NEXT_CHUNK", 1), ("MENTIONS", 2)] {
        want.relationships.insert(k.into(), v);
    }
    for k in ["SPONSORED", "SUCCEEDED", "LED"] {
        want.relationships.remove(k);
    }
    assert_eq!(after, want);

    let back = writer.sink().read_all(&scope).await.unwrap();
    assert!(
        !back
            .iter()
            .any(|r| matches!(r, Record::Document(d) if d.id == old_pdf)),
        "the old version is still there"
    );
    let founded: Vec<&Relation> = back
        .iter()
        .filter_map(|r| match r {
            Record::Relation(x) if x.rel_type.as_str() == "FOUNDED" => Some(x),
            _ => None,
        })
        .collect();
    assert_eq!(founded.len(), 1, "{founded:?}");
    assert_eq!(founded[0].chunk_ids, vec![new_chunk.clone()]);
    let chunks: Vec<&ChunkId> = back
        .iter()
        .filter_map(|r| match r {
            Record::Chunk(c) => Some(&c.id),
            _ => None,
        })
        .collect();
    assert!(chunks.contains(&&new_chunk));
    assert!(back
        .iter()
        .any(|r| matches!(r, Record::Document(d) if d.id == new_pdf)));

    let again = writer.sink().supersede(&current).await.unwrap();
    assert_eq!(again, kg_store::Superseded::default());
    assert_eq!(writer.sink().counts(&scope).await.unwrap(), want);
}

/// `chunks` chunk records in documents of very different sizes (from one
/// chunk to 2,999; many straddle a window boundary), one document after the
/// other, as ingest sends them; short texts, so that the test is about
/// links, not bytes. (Not bigger documents: the ArcadeDB test server takes
/// time growing with a document's chunk count for each HAS_CHUNK it adds.)
pub fn long_corpus(tag: &str, chunks: usize) -> Vec<Record> {
    let sizes = [2_999usize, 1, 1_250, 40, 3, 2_000, 7, 500, 2, 1_111];
    let mut out = Vec::new();
    let (mut left, mut d) = (chunks, 0usize);
    while left > 0 {
        let n = sizes[d % sizes.len()].min(left);
        left -= n;
        let sha = sha256_hex(format!("{tag} long {d}").as_bytes());
        let doc = DocumentId::from_content_sha256(&sha);
        let source = format!("{tag}/long/{d}.txt");
        out.push(Record::Document(Document {
            id: doc.clone(),
            source: source.clone(),
            title: None,
            sha256: sha,
            pages: None,
            media_type: MediaType::Text,
            bytes: n as u64 * 20,
        }));
        for i in 0..n as u32 {
            let text = format!("chunk {i} of {d} [{tag}]");
            out.push(Record::Chunk(Chunk {
                id: ChunkId::new(&doc, i, &text),
                document_id: doc.clone(),
                index: i,
                text,
                tokens: 5,
                source: source.clone(),
                page_start: None,
                page_end: None,
            }));
        }
        d += 1;
    }
    out
}

/// Writes [`long_corpus`] (50,000 chunks) through `write_channel` with
/// windows of `window_records` (at least three of them) and checks that
/// `NEXT_CHUNK` is complete: chunks − documents links, every record
/// acknowledged committed once. `count` counts what was written, by
/// relationship type, in whatever way suits the backend.
pub async fn check_next_chunk_across_windows<S, F, Fut>(
    store: S,
    dir: &Path,
    tag: &str,
    window_records: Option<usize>,
    count: F,
) where
    S: GraphStore,
    F: FnOnce(std::sync::Arc<BatchWriter<S>>, Vec<Record>) -> Fut,
    Fut: std::future::Future<Output = GraphCounts>,
{
    let records = long_corpus(tag, 50_000);
    let documents = records
        .iter()
        .filter(|r| matches!(r, Record::Document(_)))
        .count() as u64;
    assert!(documents >= 5, "{documents} documents");
    let mut config = writer_config(dir);
    if let Some(n) = window_records {
        config.window_records = n;
    }
    let writer = std::sync::Arc::new(BatchWriter::open(store, config).await.unwrap());
    let (tx, rx) = tokio::sync::mpsc::channel(1_000);
    let (ack_tx, mut ack_rx) = tokio::sync::mpsc::channel(16);
    let input = records.clone();
    let producer = tokio::spawn(async move {
        for r in input {
            tx.send(r).await.unwrap();
        }
    });
    let acks = tokio::spawn(async move {
        let mut acks = Vec::new();
        while let Some(window) = ack_rx.recv().await {
            acks.extend(window);
        }
        acks
    });
    let report = writer.write_channel(rx, Some(ack_tx)).await.unwrap();
    producer.await.unwrap();
    report.check().unwrap();
    assert!(report.windows >= 3, "{} windows", report.windows);
    let acks = acks.await.unwrap();
    assert_eq!(acks.len(), records.len());
    assert!(acks
        .iter()
        .all(|a| a.outcome == kg_store::AckOutcome::Committed));
    let counts = count(writer, records).await;
    assert_eq!(
        counts.relationships.get("NEXT_CHUNK"),
        Some(&(50_000 - documents))
    );
    assert_eq!(counts.relationships.get("HAS_CHUNK"), Some(&50_000));
}

/// The lease contract on one store: one holder at a time; the holder
/// renews; an expired lease goes to the next taker; only the holder can
/// give it up. `name` is a lease name unique to the test (the shared test
/// server's runs hold the writer lease at the same time).
pub async fn check_lease_contract<S: GraphStore>(store: &S, name: &str) {
    use kg_store::LeaseState;
    use std::time::Duration;
    let ttl = Duration::from_secs(60);
    let t0 = kg_store::lease::now_ms();
    let a = store
        .try_lease(name, "holder-a", "kg on host a", ttl, t0)
        .await;
    assert_eq!(a.unwrap(), LeaseState::Granted);
    match store
        .try_lease(name, "holder-b", "kg on host b", ttl, t0 + 1_000)
        .await
    {
        Ok(LeaseState::Held { note, expires_in }) => {
            assert_eq!(note, "kg on host a");
            assert_eq!(expires_in, Duration::from_secs(59));
        }
        other => panic!("b was let in while a holds the lease: {other:?}"),
    }
    // a renews: its expiry moves on.
    let renewed = store
        .try_lease(name, "holder-a", "kg on host a", ttl, t0 + 30_000)
        .await;
    assert_eq!(renewed.unwrap(), LeaseState::Granted);
    let still = store
        .try_lease(name, "holder-b", "kg on host b", ttl, t0 + 61_000)
        .await;
    assert!(
        matches!(still, Ok(LeaseState::Held { ref note, .. }) if note == "kg on host a"),
        "a renewed at +30 s, so b at +61 s must wait: {still:?}"
    );
    // a stops renewing: b takes the lease once it expired.
    let late = store
        .try_lease(name, "holder-b", "kg on host b", ttl, t0 + 91_000)
        .await;
    assert_eq!(late.unwrap(), LeaseState::Granted);
    let a_back = store
        .try_lease(name, "holder-a", "kg on host a", ttl, t0 + 92_000)
        .await;
    assert!(
        matches!(a_back, Ok(LeaseState::Held { ref note, .. }) if note == "kg on host b"),
        "{a_back:?}"
    );
    // Only the holder gives it up.
    store.release_lease(name, "holder-a").await.unwrap();
    let c = store
        .try_lease(name, "holder-c", "kg on host c", ttl, t0 + 93_000)
        .await;
    assert!(matches!(c, Ok(LeaseState::Held { .. })), "{c:?}");
    store.release_lease(name, "holder-b").await.unwrap();
    let c = store
        .try_lease(name, "holder-c", "kg on host c", ttl, t0 + 94_000)
        .await;
    assert_eq!(c.unwrap(), LeaseState::Granted);
    store.release_lease(name, "holder-c").await.unwrap();
}

/// Takers that ask at the same moment through their own connections: at
/// most one is granted, every other answer is "held" or an error (an
/// optimistic store fails a conflicting transaction), and once the dust
/// settles exactly one holder has it.
pub async fn check_lease_race<S: GraphStore + 'static>(stores: Vec<S>, name: &str) {
    use kg_store::LeaseState;
    use std::sync::Arc;
    use std::time::Duration;
    let ttl = Duration::from_secs(60);
    let now = kg_store::lease::now_ms();
    let barrier = Arc::new(tokio::sync::Barrier::new(stores.len()));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, store) in stores.into_iter().enumerate() {
        let (barrier, name) = (barrier.clone(), name.to_owned());
        tasks.spawn(async move {
            barrier.wait().await;
            let holder = format!("racer-{i}");
            let got = store.try_lease(&name, &holder, &holder, ttl, now).await;
            (holder, got.map_err(|e| e.to_string()), store)
        });
    }
    let mut granted = Vec::new();
    let mut stores = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (holder, got, store) = joined.unwrap();
        match got {
            Ok(LeaseState::Granted) => granted.push(holder),
            Ok(LeaseState::Held { .. }) | Err(_) => {}
        }
        stores.push(store);
    }
    assert!(
        granted.len() <= 1,
        "two takers were granted at once: {granted:?}"
    );
    // Whoever holds it now is the one granted (or, if every taker hit a
    // conflict, nobody).
    let probe = stores[0]
        .try_lease(name, "probe", "probe", ttl, now + 1)
        .await
        .unwrap();
    match (&probe, granted.first()) {
        (LeaseState::Held { note, .. }, Some(winner)) => assert_eq!(note, winner),
        (LeaseState::Granted, None) => {}
        other => panic!("lease state after the race: {other:?}"),
    }
    for holder in granted.iter().map(String::as_str).chain(["probe"]) {
        stores[0].release_lease(name, holder).await.unwrap();
    }
}

/// [`kg_store::Lease`]: a second taker that will not wait is refused with
/// the holder named; one that waits gets it once the first gives it up;
/// a holder whose lease is taken over is told through `lost`.
pub async fn check_lease_guard<S: GraphStore + 'static>(store: std::sync::Arc<S>, name: &str) {
    use kg_store::{Lease, LeaseError, LeaseRequest};
    use std::time::Duration;
    let cancel = tokio_util::sync::CancellationToken::new();
    let request = |holder: &str, wait: bool| LeaseRequest {
        name: name.to_owned(),
        holder: holder.to_owned(),
        note: format!("kg {holder}"),
        ttl: Duration::from_secs(2),
        wait,
    };
    let first = Lease::acquire(
        store.clone(),
        "the test store",
        &request("one", false),
        &cancel,
    )
    .await
    .unwrap();
    // Renewals keep it: after twice its time to live it is still held.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!first.lost().is_cancelled(), "{:?}", first.lost_reason());
    let err = Lease::acquire(
        store.clone(),
        "the test store",
        &request("two", false),
        &cancel,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, LeaseError::Busy { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("the test store") && text.contains("kg one"),
        "{text}"
    );
    let waiter = {
        let (store, cancel, req) = (store.clone(), cancel.clone(), request("two", true));
        tokio::spawn(async move { Lease::acquire(store, "the test store", &req, &cancel).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "the waiter got a lease that is held");
    first.release(&*store).await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter never got the released lease")
        .unwrap()
        .unwrap();
    // Someone whose clock says the lease expired takes it over: the
    // holder's next renewal finds out.
    let far = kg_store::lease::now_ms() + 3_600_000;
    let taken = store
        .try_lease(name, "three", "kg three", Duration::from_secs(60), far)
        .await
        .unwrap();
    assert_eq!(taken, kg_store::LeaseState::Granted);
    tokio::time::timeout(Duration::from_secs(10), second.lost().cancelled())
        .await
        .expect("the holder was not told its lease was taken over");
    let reason = second.lost_reason().unwrap_or_default();
    assert!(reason.contains("kg three"), "{reason}");
    store.release_lease(name, "three").await.unwrap();
}

/// Merging entities (on the [`fixture`]): Bruce Perens into Ian Murdock
/// (as if resolution had found them one). Every MENTIONS moves; LED moves
/// and unites with the kept entity's own LED to Debian (chunk lists
/// united, larger weight); SUCCEEDED, from one to the other, goes; the
/// kept entity has the other name as an alias; a second run changes
/// nothing.
pub async fn check_merge_entities<S: GraphStore>(writer: &BatchWriter<S>, tag: &str) {
    let mut records = fixture(tag);
    let person = label("Person");
    let org = label("Organization");
    let ian = EntityId::new(&person, &format!("Ian Murdock {tag}"));
    let bruce = EntityId::new(&person, &format!("Bruce Perens {tag}"));
    let debian = EntityId::new(&org, &format!("Debian {tag}"));
    let first_chunk = records
        .iter()
        .find_map(|r| match r {
            Record::Chunk(c) if c.index == 0 && c.source.ends_with(".pdf") => Some(c.id.clone()),
            _ => None,
        })
        .unwrap();
    records.push(Record::Relation(Relation {
        source_id: ian.clone(),
        target_id: debian.clone(),
        rel_type: rel("LED"),
        description: "led it at first".into(),
        weight: 0.3,
        chunk_ids: vec![first_chunk.clone()],
        chunk_descriptions: Default::default(),
    }));
    let scope = Scope::Ids(node_ids(&records));
    write_ok(writer, records).await;
    let before = writer.sink().counts(&scope).await.unwrap();
    assert_eq!(before.nodes["Entity:Person"], 2, "{before:?}");
    assert_eq!(before.relationships["LED"], 2, "{before:?}");
    let led_before: Vec<ChunkId> = writer
        .sink()
        .read_all(&scope)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            Record::Relation(x) if x.rel_type.as_str() == "LED" => Some(x.chunk_ids),
            _ => None,
        })
        .flatten()
        .collect();

    let merge = kg_store::EntityMerge {
        keep: ian.to_string(),
        name: format!("Ian Murdock {tag}"),
        merged: vec![bruce.to_string()],
    };
    let done = writer.sink().merge_entities(&merge).await.unwrap();
    assert_eq!(done.entities, 1, "{done:?}");
    assert_eq!(done.self_loops, 1, "SUCCEEDED: {done:?}");
    assert_eq!(done.relations, 1, "LED: {done:?}");
    assert_eq!(done.mentions, 1, "{done:?}");

    let after = writer.sink().counts(&scope).await.unwrap();
    assert_eq!(after.nodes["Entity:Person"], 1, "{after:?}");
    assert_eq!(after.relationships["LED"], 1, "{after:?}");
    assert!(!after.relationships.contains_key("SUCCEEDED"), "{after:?}");
    assert_eq!(
        after.relationships["MENTIONS"],
        before.relationships["MENTIONS"] - 1,
        "Ian and Bruce were both mentioned by the third chunk"
    );
    let back = writer.sink().read_all(&scope).await.unwrap();
    let kept = back
        .iter()
        .find_map(|r| match r {
            Record::Entity(e) if e.id == ian => Some(e.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(kept.name, format!("Ian Murdock {tag}"));
    assert!(
        kept.aliases.contains(&format!("Bruce Perens {tag}")),
        "{kept:?}"
    );
    assert!(kept.aliases.windows(2).all(|w| w[0] < w[1]), "{kept:?}");
    assert_eq!(kept.chunk_ids.len(), 2, "{kept:?}");
    assert!(!back
        .iter()
        .any(|r| matches!(r, Record::Entity(e) if e.id == bruce)));
    let led: Vec<&Relation> = back
        .iter()
        .filter_map(|r| match r {
            Record::Relation(x) if x.rel_type.as_str() == "LED" => Some(x),
            _ => None,
        })
        .collect();
    assert_eq!(led.len(), 1);
    assert_eq!(led[0].source_id, ian);
    let mut want: Vec<ChunkId> = led_before;
    want.sort();
    want.dedup();
    assert_eq!(want.len(), 2);
    let mut got = led[0].chunk_ids.clone();
    got.sort();
    assert_eq!(got, want, "chunk lists united");
    assert!((led[0].weight - 0.6).abs() < 1e-6, "{:?}", led[0]);

    let again = writer.sink().merge_entities(&merge).await.unwrap();
    assert_eq!(again, kg_store::MergeOutcome::default());
    assert_eq!(writer.sink().counts(&scope).await.unwrap(), after);
}

/// Every own entity or relation (ids carrying `tag`'s entities) the store
/// lists as stale, page by page through the whole (possibly shared) graph.
pub async fn own_stale<S: GraphStore>(
    store: &S,
    relations: bool,
    own: &[String],
) -> Vec<kg_store::DescriptionSet> {
    let mut after: Option<kg_store::Described> = None;
    let mut out = Vec::new();
    loop {
        let page = store
            .stale_descriptions(relations, after.as_ref(), 500)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.target.clone());
        out.extend(page.into_iter().filter(|s| match &s.target {
            kg_store::Described::Entity(id) => own.contains(id),
            kg_store::Described::Relation { source, .. } => own.contains(source),
        }));
    }
    out
}

/// Descriptions stay with their chunks: distinct sets read back per
/// entity and relation, written back with their key (then no longer
/// stale), stale again when a mention is written again (with the same
/// key), when a document goes (without what it said) and after a merge
/// (with what the merged entity's chunks said); a failed update leaves
/// the mark.
pub async fn check_descriptions<S: GraphStore>(writer: &BatchWriter<S>, tag: &str) {
    use kg_store::{Described, DescriptionUpdate};
    let person = label("Person");
    let doc_a = DocumentId::from_content_sha256(&sha256_hex(format!("{tag}:a").as_bytes()));
    let doc_b = DocumentId::from_content_sha256(&sha256_hex(format!("{tag}:b").as_bytes()));
    let mut records = Vec::new();
    let mut chunk = |doc: &DocumentId, name: &str, i: u32| {
        let text = format!("{name} chunk {i} [{tag}]");
        let id = ChunkId::new(doc, i, &text);
        if i == 0 {
            records.push(Record::Document(Document {
                id: doc.clone(),
                source: format!("{tag}/{name}.md"),
                title: None,
                sha256: doc.as_str().into(),
                pages: None,
                media_type: MediaType::Markdown,
                bytes: 10,
            }));
        }
        records.push(Record::Chunk(Chunk {
            id: id.clone(),
            document_id: doc.clone(),
            index: i,
            tokens: 4,
            text,
            source: format!("{tag}/{name}.md"),
            page_start: None,
            page_end: None,
        }));
        id
    };
    let (a0, a1, a2) = (
        chunk(&doc_a, "a", 0),
        chunk(&doc_a, "a", 1),
        chunk(&doc_a, "a", 2),
    );
    let b0 = chunk(&doc_b, "b", 0);
    let ada = EntityId::new(&person, &format!("Ada {tag}"));
    let babbage = EntityId::new(&person, &format!("Babbage {tag}"));
    let lovelace = EntityId::new(&person, &format!("A Lovelace {tag}"));
    let xent = |id: &EntityId, name: &str, d: &str| ExtractedEntity {
        id: id.clone(),
        name: format!("{name} {tag}"),
        entity_type: person.clone(),
        description: d.into(),
    };
    let knew = |d: &str| ExtractedRelation {
        source: "Ada".into(),
        target: "Babbage".into(),
        source_id: ada.clone(),
        target_id: babbage.clone(),
        rel_type: rel("KNEW"),
        description: d.into(),
        strength: 0.5,
    };
    let extraction = |c: &ChunkId, entities, relations| {
        Record::Extraction(Extraction {
            chunk_id: c.clone(),
            entities,
            relations,
            model: "fake".into(),
        })
    };
    let a1_extraction = extraction(
        &a1,
        vec![xent(&ada, "Ada", "a mathematician")],
        vec![knew("corresponded")],
    );
    records.extend([
        extraction(
            &a0,
            vec![
                xent(&ada, "Ada", "wrote the notes"),
                xent(&babbage, "Babbage", "designed the engine"),
            ],
            vec![knew("met at a party")],
        ),
        a1_extraction.clone(),
        extraction(
            &a2,
            vec![
                xent(&ada, "Ada", " wrote the notes "),
                xent(&lovelace, "A Lovelace", "countess"),
            ],
            vec![],
        ),
        extraction(
            &b0,
            vec![xent(&ada, "Ada", "a countess")],
            vec![knew("worked together")],
        ),
    ]);
    let own = vec![ada.to_string(), babbage.to_string(), lovelace.to_string()];
    write_ok(writer, records).await;
    let store = writer.sink();

    let stale = own_stale(store, false, &own).await;
    let of = |sets: &[kg_store::DescriptionSet], id: &EntityId| {
        sets.iter()
            .find(|s| s.target == Described::Entity(id.to_string()))
            .cloned()
    };
    let ada_set = of(&stale, &ada).expect("Ada is stale");
    assert_eq!(
        ada_set.descriptions,
        vec!["a countess", "a mathematician", "wrote the notes"]
    );
    assert_eq!((ada_set.distinct, ada_set.stored_key.clone()), (3, None));
    assert_eq!(ada_set.kind, "Person");
    assert!(!ada_set.unchanged());
    assert_eq!(stale.len(), 3, "{stale:?}");
    let rels = own_stale(store, true, &own).await;
    assert_eq!(rels.len(), 1, "{rels:?}");
    assert_eq!(
        rels[0].descriptions,
        vec!["corresponded", "met at a party", "worked together"]
    );
    assert_eq!(rels[0].name, format!("Ada {tag} -KNEW-> Babbage {tag}"));

    // Written back with their keys: no longer stale.
    let mut updates: Vec<DescriptionUpdate> = stale
        .iter()
        .chain(&rels)
        .map(|s| DescriptionUpdate {
            target: s.target.clone(),
            description: format!("summary of {}", s.descriptions.join(" + ")),
            key: Some(s.key.clone()),
        })
        .collect();
    updates.push(DescriptionUpdate {
        target: Described::Entity(format!("gone {tag}")),
        description: "nobody".into(),
        key: Some("k".into()),
    });
    assert_eq!(store.set_descriptions(&updates).await.unwrap(), 4);
    assert!(own_stale(store, false, &own).await.is_empty());
    assert!(own_stale(store, true, &own).await.is_empty());
    let scope = Scope::Ids(own.clone());
    let back = store.read_all(&scope).await.unwrap();
    let entity = |back: &[Record], id: &EntityId| {
        back.iter()
            .find_map(|r| match r {
                Record::Entity(e) if &e.id == id => Some(e.clone()),
                _ => None,
            })
            .unwrap()
    };
    let read_ada = entity(&back, &ada);
    assert_eq!(
        read_ada.description,
        "summary of a countess + a mathematician + wrote the notes"
    );
    assert_eq!(read_ada.mention_descriptions.len(), 4, "{read_ada:?}");
    assert_eq!(
        read_ada.mention_descriptions.get(&a2),
        Some(&vec!["wrote the notes".to_owned()])
    );
    let relation = back
        .iter()
        .find_map(|r| match r {
            Record::Relation(x) if x.rel_type.as_str() == "KNEW" => Some(x.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        relation.description,
        "summary of corresponded + met at a party + worked together"
    );
    assert_eq!(
        relation.chunk_descriptions.get(&b0),
        Some(&vec!["worked together".to_owned()])
    );

    // The same mention again: stale, but with the key it was made from.
    write_ok(writer, vec![a1_extraction]).await;
    let again = own_stale(store, false, &own).await;
    assert_eq!(again.len(), 1, "{again:?}");
    assert!(again[0].unchanged(), "{again:?}");
    // An update without a key (a failed summary) leaves the mark.
    store
        .set_descriptions(&[DescriptionUpdate {
            target: Described::Entity(ada.to_string()),
            description: "joined".into(),
            key: None,
        }])
        .await
        .unwrap();
    let still = own_stale(store, false, &own).await;
    assert_eq!(still.len(), 1);
    assert_eq!(still[0].description, "joined");

    // Removing document b takes what its chunk said.
    store.remove_document(&doc_b).await.unwrap();
    let after = of(&own_stale(store, false, &own).await, &ada).unwrap();
    assert_eq!(
        after.descriptions,
        vec!["a mathematician", "wrote the notes"]
    );
    assert!(!after.unchanged());
    let rels = own_stale(store, true, &own).await;
    assert_eq!(rels.len(), 1, "{rels:?}");
    assert_eq!(rels[0].descriptions, vec!["corresponded", "met at a party"]);

    // A merge brings what the merged entity's chunks said.
    let merge = kg_store::EntityMerge {
        keep: ada.to_string(),
        name: format!("Ada {tag}"),
        merged: vec![lovelace.to_string()],
    };
    store.merge_entities(&merge).await.unwrap();
    let merged = of(&own_stale(store, false, &own).await, &ada).unwrap();
    assert_eq!(
        merged.descriptions,
        vec!["a mathematician", "countess", "wrote the notes"]
    );
    let back = store.read_all(&scope).await.unwrap();
    let mut at_a2 = entity(&back, &ada)
        .mention_descriptions
        .get(&a2)
        .cloned()
        .unwrap();
    at_a2.sort();
    assert_eq!(at_a2, vec!["countess", "wrote the notes"]);
}
