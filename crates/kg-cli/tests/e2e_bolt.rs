//! End-to-end tests through the `kg` binary into a Bolt server: `kg run`
//! and `kg store --from-embedded` must leave in Neo4j the same graph as in
//! the embedded store, and `kg search` must find it there.
//!
//! Needs the `NEO4J_*` variables of the shared test server (`cargo xtask
//! it` / `cargo xtask test` set them; by hand, `cargo xtask server start`
//! prints them) and `KG_TEST_MODEL_DIR` (the local MiniLM model). Without
//! them the tests fail, saying what is missing; they never skip.
//!
//! # Isolation on a shared server
//!
//! Every id in the graph is a content address, and the server is shared
//! with tests running in parallel in other processes. So each test writes a
//! corpus of its own: every capitalised name in it (what the fake LLM turns
//! into entities) ends with a suffix made of this test's
//! [`kg_testkit::RunTag`], and so does the text of every document and chunk.
//! No document, chunk, entity or relation id can then be shared with another
//! test, and every read of the Bolt graph is scoped ([`Scope::Ids`]) to the
//! ids this test produced, taken from its own embedded store.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use assert_cmd::cargo::CommandCargoExt;
use kg_core::Record;
mod common;

use common::{http_get, run_ok, Llm};
use kg_fake_llm::FakeLlmHandle;
use kg_store::{
    EmbeddedConfig, EmbeddedStore, GraphCounts, GraphStore, Neo4jConfig, Neo4jStore, Scope, Secret,
};
use kg_testkit::{BoltSettings, RunTag};

fn model_dir() -> String {
    match kg_testkit::model_dir() {
        Ok(d) => d.display().to_string(),
        Err(e) => panic!("{e}"),
    }
}

fn bolt_settings() -> BoltSettings {
    match BoltSettings::from_env() {
        Ok(Some(s)) => s,
        Ok(None) => panic!(
            "NEO4J_URI is not set: these tests write into a Bolt server. `cargo xtask server start` \
             starts one and prints the NEO4J_* variables; `cargo xtask it` sets them"
        ),
        Err(e) => panic!("{e}"),
    }
}

/// The `kg` binary with a clean environment: the local model, a data dir
/// of its own, no LLM, no Neo4j.
fn kg(work: &Path, data_dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("kg").unwrap();
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", work)
        .env("KG_EMBED_MODEL", model_dir())
        .env("KG_DATA_DIR", data_dir)
        .current_dir(work);
    cmd
}

const API_KEY: &str = "sk-test-not-a-real-key-0123456789";

fn with_llm(cmd: &mut Command, llm: &FakeLlmHandle) {
    cmd.env("OPENAI_BASE_URL", llm.base_url())
        .env("OPENAI_API_KEY", API_KEY);
}

fn with_bolt(cmd: &mut Command, bolt: &BoltSettings) {
    cmd.env("NEO4J_URI", &bolt.uri)
        .env("NEO4J_USER", &bolt.user)
        .env("NEO4J_PASSWORD", &bolt.password);
    if let Some(db) = &bolt.database {
        cmd.env("NEO4J_DATABASE", db);
    }
}

/// This test's unique name suffix: the run tag's letters and digits (entity
/// keys drop punctuation, so `_` would not make names any more unique).
fn suffix(tag: &RunTag) -> String {
    tag.as_str()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect()
}

/// The relation types the fake LLM answers for `text`, asked the way
/// kg-extract asks (the text between `<chunk>` tags), over plain HTTP.
fn relation_types(llm: &FakeLlmHandle, text: &str) -> Vec<String> {
    use std::io::{Read, Write};
    let body = serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [{
            "role": "user",
            "content": format!("Extract entities and relations from this text:\n<chunk>\n{text}\n</chunk>"),
        }],
    })
    .to_string();
    let addr = llm.addr();
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Authorization: Bearer {API_KEY}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let start = answer.find("\r\n\r\n").map(|i| i + 4).unwrap_or(0);
    let json_start = answer[start..]
        .find('{')
        .map(|i| start + i)
        .unwrap_or(start);
    let reply: serde_json::Value = serde_json::Deserializer::from_str(&answer[json_start..])
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no JSON in the fake LLM's answer: {answer}"))
        .unwrap();
    let content = reply["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no content in {reply}"));
    let extraction: serde_json::Value = serde_json::from_str(content).unwrap();
    extraction["relations"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .filter_map(|r| r["type"].as_str().map(str::to_string))
        .collect()
}

/// The fake LLM with the first seed under which the corpus `texts` yields
/// relations of which at least one, but not all, is typed `MENTIONS`, and
/// how many are not.
///
/// Why: `MENTIONS` is the lexical graph's own `(:Chunk)-[:MENTIONS]->(:Entity)`.
/// An entity relation of that type used to read back from the embedded
/// store as a chunk mention (and `--from-embedded` then wrote a placeholder
/// `Chunk` into Neo4j). kg-extract now rejects reserved relation types;
/// choosing a seed that answers one keeps that a tested path: the graph
/// must hold exactly the other relations, and only chunks mention entities.
fn llm_answering_an_entity_mentions(texts: &[String]) -> (Llm, usize) {
    for seed in 0..512 {
        let llm = Llm::with_seed(seed, std::time::Duration::ZERO);
        let types: Vec<String> = texts
            .iter()
            .flat_map(|t| relation_types(llm.handle(), t))
            .collect();
        let others = types.iter().filter(|t| *t != "MENTIONS").count();
        if others > 0 && others < types.len() {
            return (llm, others);
        }
    }
    panic!("no seed of the fake LLM answers both MENTIONS and other relation types");
}

/// Two short documents (Markdown and text) whose every capitalised name,
/// hence every entity, carries `s`. Returns the folder and the texts.
fn corpus(work: &Path, s: &str) -> (PathBuf, Vec<String>) {
    let docs = work.join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let files = [
        (
            "lighthouse.md",
            format!(
                "# the lighthouse of Vardholm{s}\n\n\
                 the keeper Ingrid Solberg{s} kept the lamp of Vardholm{s} burning through the \
                 winter storms. she wrote a letter to the Northern Coast Authority{s} every week.\n\n\
                 ## supplies\n\n\
                 the supply ship Marisol{s} brought lamp oil and rye bread from Tromsvik{s} once a month.\n"
            ),
        ),
        (
            "observatory.txt",
            format!(
                "the astronomer Tomas Lindqvist{s} built a small observatory near Kallvik{s}. \
                 he measured the orbit of the comet Halvard{s} with a brass telescope. \
                 his assistant Petra Nyberg{s} catalogued forty variable stars.\n"
            ),
        ),
    ];
    for (name, text) in &files {
        std::fs::write(docs.join(name), text).unwrap();
    }
    (docs, files.into_iter().map(|(_, text)| text).collect())
}

/// A record as a comparable string (JSON, with id lists sorted: the order
/// in which a store collects mentions is not part of the graph).
fn canonical(record: &Record) -> String {
    let mut v = serde_json::to_value(record).unwrap();
    if let Some(ids) = v.get_mut("chunk_ids").and_then(|x| x.as_array_mut()) {
        ids.sort_by_key(|x| x.to_string());
    }
    v.to_string()
}

/// What a graph holds, scoped: counts and the canonical records.
#[derive(Debug, PartialEq)]
struct Snapshot {
    counts: GraphCounts,
    records: BTreeSet<String>,
}

/// `missing` and `extra` less the embedding records that differ only in
/// their vector, by a cosine of at least 0.9999 (same id, model, target).
fn without_near_equal_vectors<'a>(
    missing: Vec<&'a String>,
    extra: Vec<&'a String>,
) -> (Vec<&'a String>, Vec<&'a String>) {
    let split = |r: &String| -> Option<(serde_json::Value, Vec<f64>)> {
        let mut v: serde_json::Value = serde_json::from_str(r).ok()?;
        if v.get("kind")?.as_str()? != "embedding" {
            return None;
        }
        let vector = v
            .as_object_mut()?
            .remove("vector")?
            .as_array()?
            .iter()
            .filter_map(serde_json::Value::as_f64)
            .collect();
        Some((v, vector))
    };
    let cosine = |a: &[f64], b: &[f64]| {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        dot / (norm(a) * norm(b))
    };
    let mut matched_extra = BTreeSet::new();
    let mut kept_missing = Vec::new();
    for m in missing {
        let found = split(m).and_then(|(rest, vector)| {
            extra.iter().position(|e| {
                split(e).is_some_and(|(other, w)| {
                    other == rest && w.len() == vector.len() && cosine(&vector, &w) >= 0.9999
                })
            })
        });
        match found {
            Some(i) if matched_extra.insert(i) => {}
            _ => kept_missing.push(m),
        }
    }
    let kept_extra = extra
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !matched_extra.contains(i))
        .map(|(_, e)| e)
        .collect();
    (kept_missing, kept_extra)
}

async fn snapshot<S: GraphStore>(store: &S, scope: &Scope) -> Snapshot {
    Snapshot {
        counts: store.counts(scope).await.unwrap(),
        records: store
            .read_all(scope)
            .await
            .unwrap()
            .iter()
            .map(canonical)
            .collect(),
    }
}

/// The embedded graph of `data_dir`: every record, and the ids of its
/// documents, chunks and entities (the scope of this test in Bolt).
async fn embedded_graph(data_dir: &Path) -> (EmbeddedStore, Vec<Record>, Vec<String>) {
    let store = EmbeddedStore::open(&EmbeddedConfig {
        data_dir: data_dir.to_path_buf(),
    })
    .unwrap();
    let records = store.read_all(&Scope::All).await.unwrap();
    let mut ids: Vec<String> = records
        .iter()
        .filter_map(|r| match r {
            Record::Document(d) => Some(d.id.to_string()),
            Record::Chunk(c) => Some(c.id.to_string()),
            Record::Entity(e) => Some(e.id.to_string()),
            _ => None,
        })
        .collect();
    ids.sort();
    ids.dedup();
    (store, records, ids)
}

async fn neo4j(bolt: &BoltSettings) -> Neo4jStore {
    let mut config = Neo4jConfig::new(
        bolt.uri.clone(),
        bolt.user.clone(),
        Secret::new(bolt.password.clone()),
    );
    if let Some(db) = &bolt.database {
        config.database = db.clone();
    }
    Neo4jStore::connect(config).await.unwrap()
}

fn count(counts: &BTreeMap<String, u64>, key: &str) -> u64 {
    counts.get(key).copied().unwrap_or(0)
}

/// Checks that the embedded graph is this test's corpus, complete: two
/// documents, chunks with embeddings, tagged entities, mentions, relations.
fn check_embedded_graph(
    records: &[Record],
    all: &Snapshot,
    scoped: &Snapshot,
    s: &str,
    relations_expected: usize,
) {
    // The scope (documents, chunks, entities) covers the whole embedded
    // store: nothing this test wrote escapes its Bolt comparison.
    assert_eq!(
        all, scoped,
        "the id scope misses part of the embedded graph"
    );
    let c = &all.counts;
    assert_eq!(count(&c.nodes, "Document"), 2, "{c:?}");
    let chunks = count(&c.nodes, "Chunk");
    assert!(chunks >= 2, "{c:?}");
    assert_eq!(count(&c.relationships, "HAS_CHUNK"), chunks, "{c:?}");
    let embedded_chunks = records
        .iter()
        .filter(|r| matches!(r, Record::Embedding(e) if e.target == kg_core::EmbeddingTarget::Chunk && !e.vector.is_empty()))
        .count() as u64;
    assert_eq!(embedded_chunks, chunks, "every chunk has an embedding");
    let entities: Vec<&kg_core::Entity> = records
        .iter()
        .filter_map(|r| match r {
            Record::Entity(e) => Some(e),
            _ => None,
        })
        .collect();
    // The fake LLM's entities: every capitalised run of words, so exactly
    // the corpus's names, all of them this test's own.
    let names: BTreeSet<String> = entities.iter().map(|e| e.name.clone()).collect();
    let expected: BTreeSet<String> = [
        "Vardholm",
        "Ingrid Solberg",
        "Northern Coast Authority",
        "Marisol",
        "Tromsvik",
        "Tomas Lindqvist",
        "Kallvik",
        "Halvard",
        "Petra Nyberg",
    ]
    .iter()
    .map(|n| format!("{n}{s}"))
    .collect();
    assert_eq!(names, expected);
    assert_eq!(entities.len(), expected.len(), "{entities:?}");
    let chunk_ids: BTreeSet<&kg_core::ChunkId> = records
        .iter()
        .filter_map(|r| match r {
            Record::Chunk(c) => Some(&c.id),
            _ => None,
        })
        .collect();
    for e in &entities {
        assert!(!e.chunk_ids.is_empty(), "{e:?} is mentioned by no chunk");
        assert!(
            e.chunk_ids.iter().all(|id| chunk_ids.contains(id)),
            "{e:?} is mentioned by something that is not a chunk"
        );
    }
    // One mention per (chunk, entity): 5 in the lighthouse, 4 in the
    // observatory.
    assert_eq!(count(&c.relationships, "MENTIONS"), 9, "{c:?}");
    // One relation per pair of names in a sentence (Ingrid Solberg and
    // Vardholm, Marisol and Tromsvik, Tomas Lindqvist and Kallvik), except
    // those the fake typed MENTIONS: kg-extract rejects them (see
    // `llm_answering_an_entity_mentions`).
    let relations: Vec<&kg_core::Relation> = records
        .iter()
        .filter_map(|r| match r {
            Record::Relation(rel) => Some(rel),
            _ => None,
        })
        .collect();
    assert_eq!(relations.len(), relations_expected, "{relations:?}");
    assert!(
        relations.iter().all(|r| r.rel_type.as_str() != "MENTIONS"),
        "an extracted relation took the lexical type MENTIONS: {relations:?}"
    );
}

/// `kg run` of the same corpus into the embedded store and into Bolt builds
/// the same graph, and `kg search` over Bolt finds the chunk asked for.
#[test]
fn kg_run_into_bolt_builds_the_same_graph_as_the_embedded_store() {
    let bolt = bolt_settings();
    let tag = RunTag::new("kg_run_into_bolt");
    let s = suffix(&tag);
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let (docs, texts) = corpus(work, &s);
    let (llm, relations_expected) = llm_answering_an_entity_mentions(&texts);
    let (embedded_dir, bolt_dir) = (work.join("embedded-data"), work.join("bolt-data"));

    let mut cmd = kg(work, &embedded_dir);
    with_llm(&mut cmd, llm.handle());
    run_ok(cmd.arg("run").arg(&docs));

    let mut cmd = kg(work, &bolt_dir);
    with_llm(&mut cmd, llm.handle());
    with_bolt(&mut cmd, &bolt);
    let out = run_ok(cmd.arg("run").arg(&docs));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("kg summary"), "{stderr}");
    assert!(
        !stderr.contains(&bolt.password) && !stderr.contains(API_KEY),
        "a secret leaked: {stderr}"
    );
    // The Bolt run wrote nothing into its data dir's embedded store.
    assert!(
        !bolt_dir.join("graph.sqlite").exists(),
        "the Bolt run wrote an embedded graph"
    );
    assert!(embedded_dir.join("graph.sqlite").exists());

    let rt = tokio::runtime::Runtime::new().unwrap();
    let (records, expected_chunk) = rt.block_on(async {
        let (embedded, records, ids) = embedded_graph(&embedded_dir).await;
        let scope = Scope::Ids(ids);
        let all = snapshot(&embedded, &Scope::All).await;
        let scoped = snapshot(&embedded, &scope).await;
        check_embedded_graph(&records, &all, &scoped, &s, relations_expected);

        let neo = neo4j(&bolt).await;
        let in_bolt = snapshot(&neo, &scope).await;
        assert_eq!(in_bolt.counts, scoped.counts, "counts differ");
        let missing: Vec<_> = scoped.records.difference(&in_bolt.records).collect();
        let extra: Vec<_> = in_bolt.records.difference(&scoped.records).collect();
        // Two runs of the local model: an entity batched with other
        // neighbours rounds differently in the last bits of its vector.
        let (missing, extra) = without_near_equal_vectors(missing, extra);
        assert!(
            missing.is_empty() && extra.is_empty(),
            "Bolt graph differs from the embedded one.\nmissing in Bolt: {missing:#?}\nextra in Bolt: {extra:#?}"
        );
        let chunk = records
            .iter()
            .find_map(|r| match r {
                Record::Chunk(c) if c.text.contains("Lindqvist") => Some(c.clone()),
                _ => None,
            })
            .expect("no chunk about the observatory");
        (records, chunk)
    });

    // Search over Bolt: the chunk's own text finds it first, with the
    // entities it mentions.
    let mut cmd = kg(work, &bolt_dir);
    with_bolt(&mut cmd, &bolt);
    let out = run_ok(cmd.args(["search", &expected_chunk.text, "-k", "3", "--json"]));
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hits = found["hits"].as_array().expect("search --json holds hits");
    assert!(!hits.is_empty(), "no hit");
    let first = &hits[0];
    assert_eq!(
        first["id"].as_str(),
        Some(expected_chunk.id.as_str()),
        "{hits:#?}"
    );
    assert_eq!(first["text"].as_str(), Some(expected_chunk.text.as_str()));
    let mentioned: BTreeSet<String> = first["mentions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str().map(str::to_string))
        .collect();
    let expected_mentions: BTreeSet<String> = records
        .iter()
        .filter_map(|r| match r {
            Record::Entity(e) if e.chunk_ids.contains(&expected_chunk.id) => Some(e.name.clone()),
            _ => None,
        })
        .collect();
    assert!(
        mentioned.contains(&format!("Tomas Lindqvist{s}")),
        "{mentioned:?}"
    );
    assert_eq!(mentioned, expected_mentions);
}

/// `kg store --from-embedded` copies the embedded graph into Bolt as it is,
/// and a second copy adds nothing.
#[test]
fn kg_store_from_embedded_copies_the_graph_into_bolt_once() {
    let bolt = bolt_settings();
    let tag = RunTag::new("kg_store_from_embedded_bolt");
    let s = suffix(&tag);
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let (docs, texts) = corpus(work, &s);
    let (llm, relations_expected) = llm_answering_an_entity_mentions(&texts);
    let data = work.join("kg-data");

    let mut cmd = kg(work, &data);
    with_llm(&mut cmd, llm.handle());
    run_ok(cmd.arg("run").arg(&docs));

    let rt = tokio::runtime::Runtime::new().unwrap();
    let (embedded, records, ids) = rt.block_on(embedded_graph(&data));
    let scope = Scope::Ids(ids);
    let (all, scoped) = rt.block_on(async {
        (
            snapshot(&embedded, &Scope::All).await,
            snapshot(&embedded, &scope).await,
        )
    });
    check_embedded_graph(&records, &all, &scoped, &s, relations_expected);
    drop(embedded);

    let neo = rt.block_on(neo4j(&bolt));
    // Nothing of this test's is in Bolt before the copy.
    let before = rt.block_on(neo.counts(&scope)).unwrap();
    assert_eq!(before.total_nodes(), 0, "{before:?}");

    let mut cmd = kg(work, &data);
    with_bolt(&mut cmd, &bolt);
    let out = run_ok(cmd.args(["store", "--from-embedded"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("copied"), "{stderr}");
    assert!(
        !stderr.contains(&bolt.password),
        "password leaked: {stderr}"
    );

    let first = rt.block_on(snapshot(&neo, &scope));
    assert_eq!(first.counts, scoped.counts, "counts differ");
    let missing: Vec<_> = scoped.records.difference(&first.records).collect();
    let extra: Vec<_> = first.records.difference(&scoped.records).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "Bolt graph differs from the embedded one.\nmissing in Bolt: {missing:#?}\nextra in Bolt: {extra:#?}"
    );

    // Again: the same records merge onto the same nodes and relationships.
    let mut cmd = kg(work, &data);
    with_bolt(&mut cmd, &bolt);
    run_ok(cmd.args(["store", "--from-embedded"]));
    let second = rt.block_on(snapshot(&neo, &scope));
    assert_eq!(second, first, "a second copy changed the Bolt graph");
}

/// A wrong Neo4j password fails `kg run` with exit 1 and a message that
/// names the server, without the password.
#[test]
fn kg_run_with_a_wrong_bolt_password_fails_naming_the_uri_not_the_password() {
    let mut bolt = bolt_settings();
    let tag = RunTag::new("wrong_bolt_password");
    let s = suffix(&tag);
    bolt.password = format!("wrong-password-{s}");
    let llm = Llm::start(std::time::Duration::ZERO);
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let (docs, _) = corpus(work, &s);

    let mut cmd = kg(work, &work.join("kg-data"));
    with_llm(&mut cmd, llm.handle());
    with_bolt(&mut cmd, &bolt);
    let out = cmd.arg("run").arg(&docs).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stderr.contains(&bolt.uri), "{stderr}");
    assert!(
        !stderr.contains(&bolt.password) && !stdout.contains(&bolt.password),
        "the password leaked: {stderr}"
    );
    // It failed before any LLM call: nothing was spent on a run that could
    // not store its result.
    assert_eq!(llm.handle().counters().chat_requests, 0, "{stderr}");
}

/// The value of the unlabelled Prometheus sample `name` in `body`.
fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// `--metrics-addr` on a run into Bolt serves, while the run lasts, the
/// connection gauges (the pool size, and connections in use within it) and
/// kg-store's per-transaction histograms (batch rows, transaction time).
#[test]
fn bolt_connection_gauges_are_served_while_a_run_lasts() {
    use std::time::{Duration, Instant};
    let bolt = bolt_settings();
    let tag = RunTag::new("bolt_metrics");
    let s = suffix(&tag);
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let (docs, _) = corpus(work, &s);
    // Slow answers, one at a time: the run lasts a few seconds.
    let llm = Llm::start(Duration::from_millis(800));
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let mut cmd = kg(work, &work.join("kg-data"));
    with_llm(&mut cmd, llm.handle());
    with_bolt(&mut cmd, &bolt);
    cmd.args(["run", "--concurrency", "1", "--metrics-addr", &addr])
        .arg(&docs)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let started = Instant::now();
    let mut seen = None;
    while child.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(120) {
        if let Some(body) = http_get(&addr, "/metrics") {
            // The per-transaction histograms come from kg-store itself.
            if sample(&body, "kg_bolt_connections_max").is_some()
                && body.contains("kg_store_batch_rows_count{")
                && body.contains("kg_store_transaction_seconds_count{")
            {
                seen = Some(body);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let body = seen.expect("no Bolt connection gauges and store histograms while the run lasted");
    // The documents went in a transaction of their own or, as small
    // groups, in one shared with others (`combined`).
    assert!(
        ["documents", "combined"]
            .iter()
            .any(|g| body.contains(&format!(
                r#"kg_store_transaction_seconds_count{{group="{g}",outcome="committed"}}"#
            ))),
        "{body}"
    );
    let max = sample(&body, "kg_bolt_connections_max").unwrap();
    let in_use = sample(&body, "kg_bolt_connections_in_use")
        .unwrap_or_else(|| panic!("no kg_bolt_connections_in_use in {body}"));
    assert_eq!(max, 50.0, "the default pool size");
    assert!((0.0..=max).contains(&in_use), "{in_use} of {max}");
}

/// A data dir that built the embedded graph, then pointed at a Bolt server
/// (another store): the run writes the whole graph there, from the caches,
/// instead of skipping the documents its run state had as done.
#[test]
fn a_data_dir_switched_to_bolt_writes_the_full_graph_there() {
    let bolt = bolt_settings();
    let tag = RunTag::new("switched_to_bolt");
    let s = suffix(&tag);
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let (docs, _) = corpus(work, &s);
    let llm = Llm::start(std::time::Duration::ZERO);
    let data_dir = work.join("data");

    let mut cmd = kg(work, &data_dir);
    with_llm(&mut cmd, llm.handle());
    run_ok(cmd.arg("run").arg(&docs));
    let calls = llm.extraction_requests();

    let mut cmd = kg(work, &data_dir);
    with_llm(&mut cmd, llm.handle());
    with_bolt(&mut cmd, &bolt);
    let out = run_ok(cmd.arg("run").arg(&docs));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("another store"), "{stderr}");
    assert!(!stderr.contains(&bolt.password), "{stderr}");
    assert_eq!(
        llm.extraction_requests(),
        calls,
        "the answers came from the cache"
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (embedded, _, ids) = embedded_graph(&data_dir).await;
        let scope = Scope::Ids(ids);
        let expected = snapshot(&embedded, &scope).await;
        assert_eq!(count(&expected.counts.nodes, "Document"), 2);
        let in_bolt = snapshot(&neo4j(&bolt).await, &scope).await;
        assert_eq!(in_bolt, expected);
    });
}

/// The holder note of the store's writer lease, if anyone holds it.
async fn writer_lease_note(store: &Neo4jStore) -> Option<String> {
    let mut txn = store.graph().start_txn().await.ok()?;
    let mut rows = txn
        .execute(neo4rs::query(
            "MATCH (l:KgLease {name: 'writer'}) WHERE l.holder IS NOT NULL RETURN l.note AS note",
        ))
        .await
        .ok()?;
    let row = rows.next(txn.handle()).await.ok()??;
    row.get::<String>("note").ok()
}

/// Two data dirs (two machines, as far as kg can tell) writing one Bolt
/// store: while the first run holds the store's writer lease, a second
/// with `--no-wait` exits 1 naming the store and the holder; one that waits
/// runs after it; and the graph both leave equals a fresh build.
#[test]
fn two_data_dirs_on_one_bolt_store_write_one_at_a_time() {
    let bolt = bolt_settings();
    let tag = RunTag::new("lease_two_dirs");
    let s = suffix(&tag);
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let (docs, _) = corpus(work, &s);
    // Slow answers keep the first run busy while the others start. (Other
    // tests writing the shared server hold the lease now and then: the
    // first run may wait for them.)
    let llm = Llm::start(std::time::Duration::from_secs(4));
    let (dir_a, dir_b) = (work.join("machine-a"), work.join("machine-b"));

    let mut a = kg(work, &dir_a);
    with_llm(&mut a, llm.handle());
    with_bolt(&mut a, &bolt);
    let a = a
        .arg("run")
        .arg(&docs)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt.block_on(neo4j(&bolt));
    let a_dir = dir_a.display().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    while !rt
        .block_on(writer_lease_note(&store))
        .is_some_and(|note| note.contains(&a_dir))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the first run never took the store's writer lease"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let mut refused = kg(work, &dir_b);
    with_llm(&mut refused, llm.handle());
    with_bolt(&mut refused, &bolt);
    let out = refused
        .args(["--no-wait", "run"])
        .arg(&docs)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("another kg is writing to"), "{stderr}");
    assert!(stderr.contains(&bolt.uri), "{stderr}");
    assert!(stderr.contains("--no-wait"), "{stderr}");
    assert!(!stderr.contains(&bolt.password), "{stderr}");

    let mut waits = kg(work, &dir_b);
    with_llm(&mut waits, llm.handle());
    with_bolt(&mut waits, &bolt);
    let waits = waits.arg("run").arg(&docs).output().unwrap();
    let a = a.wait_with_output().unwrap();
    assert_eq!(
        a.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&a.stderr)
    );
    let waited = String::from_utf8_lossy(&waits.stderr);
    // Whether it still found the first run's lease depends on how fast it
    // started (the waiting itself is tested in kg-store's lease tests): it
    // must end well either way.
    assert_eq!(waits.status.code(), Some(0), "{waited}");

    // A fresh build of the same documents, in an embedded store.
    let fresh_dir = work.join("fresh");
    let mut fresh = kg(work, &fresh_dir);
    with_llm(&mut fresh, llm.handle());
    run_ok(fresh.arg("run").arg(&docs));
    rt.block_on(async {
        let (embedded, _, ids) = embedded_graph(&fresh_dir).await;
        let scope = Scope::Ids(ids);
        let expected = snapshot(&embedded, &scope).await;
        assert_eq!(count(&expected.counts.nodes, "Document"), 2);
        assert_eq!(snapshot(&store, &scope).await, expected);
        assert!(
            !writer_lease_note(&store)
                .await
                .is_some_and(|n| n.contains(&a_dir)),
            "the first run left its lease held"
        );
    });
}
