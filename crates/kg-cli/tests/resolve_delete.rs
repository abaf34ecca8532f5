//! Entity resolution and deleting documents, through the `kg` binary with
//! the embedded store and the fake LLM (chat answers scripted by markers,
//! embeddings from its embeddings endpoint).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kg_core::{entity_key, Record};
use kg_fake_llm::Script;
use kg_resolve::eval::{pairwise, parse_labelled, score_by_type, table, Labelled};
use serde_json::json;

mod common;

use common::{kg_on as kg, read_graph, Llm};

fn run_ok(mut cmd: Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The graph as comparable lines: every record but documents' sources
/// (two builds in two folders differ only there), sorted.
fn canonical(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = read_graph(dir)
        .into_iter()
        .map(|r| {
            let mut v = serde_json::to_value(&r).unwrap();
            if let Some(o) = v.as_object_mut() {
                o.remove("source");
                if let Some(chunks) = o.get_mut("chunk_ids").and_then(|c| c.as_array_mut()) {
                    chunks.sort_by_key(|c| c.to_string());
                }
            }
            v.to_string()
        })
        .collect();
    out.sort();
    out
}

/// Asserts two canonical graphs are equal, showing only what differs.
fn assert_same(a: &[String], b: &[String], what: &str) {
    let (sa, sb): (BTreeSet<&String>, BTreeSet<&String>) = (a.iter().collect(), b.iter().collect());
    let short = |s: &&String| s.chars().take(400).collect::<String>();
    let only_a: Vec<String> = sa.difference(&sb).take(4).map(short).collect();
    let only_b: Vec<String> = sb.difference(&sa).take(4).map(short).collect();
    assert!(
        a == b,
        "{what}: {} vs {} lines; only left: {only_a:#?}; only right: {only_b:#?}",
        a.len(),
        b.len()
    );
}

fn labelled_set() -> Vec<Labelled> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../eval/resolution/names.tsv");
    parse_labelled(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The labelled names spread over four documents, one line per name with
/// a marker the script answers with that name (and a LISTED_IN relation to
/// a hub, so that merges have relations to carry), each name in one or
/// two chunks.
fn resolution_corpus(dir: &Path, set: &[Labelled]) -> (PathBuf, Script) {
    let docs = dir.join("names");
    std::fs::create_dir_all(&docs).unwrap();
    let mut script = String::new();
    let mut files: BTreeMap<usize, String> = BTreeMap::new();
    for (i, l) in set.iter().enumerate() {
        let marker = format!("[n{i:04}]");
        let entry = json!({
            "marker": marker,
            "entities": [
                {"name": l.name, "type": l.entity_type, "description": format!("{} of the set", l.entity_type)},
                {"name": "Reference Shelf", "type": "Collection", "description": "the hub"},
            ],
            "relations": [{
                "source": l.name, "target": "Reference Shelf", "type": "LISTED_IN",
                "description": "listed", "strength": 0.5 + (i % 5) as f64 / 10.0,
            }],
        });
        script.push_str(&entry.to_string());
        script.push('\n');
        // Paragraphs of five entries: a chunk holds a few paragraphs.
        let file = files.entry(i % 4).or_default();
        file.push_str(&format!("Entry {marker} names someone or something.\n"));
        if i % 5 == 4 {
            file.push('\n');
        }
    }
    for (n, text) in files {
        std::fs::write(docs.join(format!("part{n}.txt")), text).unwrap();
    }
    (docs, Script::parse(&script).unwrap())
}

/// Each labelled name's entity in the graph: the one with its (type, key)
/// among its name and aliases.
fn clusters(records: &[Record], set: &[Labelled]) -> Vec<String> {
    let mut by_key: HashMap<(String, String), String> = HashMap::new();
    for r in records {
        if let Record::Entity(e) = r {
            for n in std::iter::once(&e.name).chain(&e.aliases) {
                by_key.insert(
                    (e.entity_type.as_str().to_string(), entity_key(n)),
                    e.id.to_string(),
                );
            }
        }
    }
    set.iter()
        .map(|l| {
            by_key
                .get(&(l.entity_type.clone(), entity_key(&l.name)))
                .cloned()
                .unwrap_or_else(|| panic!("{:?} is not in the graph", l.name))
        })
        .collect()
}

/// Chunks citing each entity, and the LISTED_IN chunks of each, by the
/// labelled names: what a merge must keep.
fn provenance(records: &[Record], set: &[Labelled]) -> Vec<(BTreeSet<String>, BTreeSet<String>)> {
    let ids = clusters(records, set);
    let mut mentions: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut listed: HashMap<String, BTreeSet<String>> = HashMap::new();
    for r in records {
        match r {
            Record::Entity(e) => {
                mentions
                    .entry(e.id.to_string())
                    .or_default()
                    .extend(e.chunk_ids.iter().map(|c| c.to_string()));
            }
            Record::Relation(x) if x.rel_type.as_str() == "LISTED_IN" => {
                listed
                    .entry(x.source_id.to_string())
                    .or_default()
                    .extend(x.chunk_ids.iter().map(|c| c.to_string()));
            }
            _ => {}
        }
    }
    ids.iter()
        .map(|id| {
            (
                mentions.get(id).cloned().unwrap_or_default(),
                listed.get(id).cloned().unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn kg_run_resolves_the_labelled_set_and_merges_keep_provenance() {
    let set = labelled_set();
    let tmp = tempfile::tempdir().unwrap();
    let (docs, script) = resolution_corpus(tmp.path(), &set);
    let llm = Llm::scripted(script);

    // Exact keys only: the graph before resolution.
    let exact = tmp.path().join("exact");
    std::fs::create_dir_all(&exact).unwrap();
    let mut cmd = kg(&exact, &llm);
    // One LLM call at a time: chunks finish in order, so both builds store
    // the same spelling of each entity first, hence the same entity
    // vectors, which resolution consults.
    cmd.env("KG_RESOLVE_MODE", "exact")
        .args(["run", "--concurrency", "1"])
        .arg(&docs);
    run_ok(cmd);
    let before = read_graph(&exact);

    // The default: `kg run` resolves what it stored.
    let fuzzy = tmp.path().join("fuzzy");
    std::fs::create_dir_all(&fuzzy).unwrap();
    let mut cmd = kg(&fuzzy, &llm);
    cmd.args(["run", "--concurrency", "1"]).arg(&docs);
    let out = run_ok(cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("resolution merged"), "{stderr}");
    let after = read_graph(&fuzzy);

    let predicted = clusters(&after, &set);
    let scores = score_by_type(&set, &predicted);
    println!("kg run on the labelled set:\n{}", table(&scores));
    let all = scores["all"];
    assert!(all.precision() >= 0.98, "precision {:.3}", all.precision());
    assert!(all.recall() >= 0.85, "recall {:.3}", all.recall());
    let baseline = pairwise(&set, &clusters(&before, &set));
    assert!(all.recall() > baseline.recall() + 0.2, "{baseline:?}");

    // Provenance: each entity after the merges cites exactly the union of
    // the chunks of the entities it was made of, in MENTIONS and in its
    // LISTED_IN relation.
    let was = provenance(&before, &set);
    let now = provenance(&after, &set);
    let mut want: HashMap<&String, (BTreeSet<String>, BTreeSet<String>)> = HashMap::new();
    for (id, (m, l)) in predicted.iter().zip(&was) {
        let e = want.entry(id).or_default();
        e.0.extend(m.iter().cloned());
        e.1.extend(l.iter().cloned());
    }
    for (id, got) in predicted.iter().zip(&now) {
        assert_eq!(&want[id], got, "provenance of {id}");
    }
    let listed = |rs: &[Record]| {
        rs.iter()
            .filter(|r| matches!(r, Record::Relation(x) if x.rel_type.as_str() == "LISTED_IN"))
            .count()
    };
    let entities = |rs: &[Record]| rs.iter().filter(|r| matches!(r, Record::Entity(_))).count();
    assert_eq!(
        listed(&after),
        entities(&after) - 1,
        "one LISTED_IN per entity but the hub: duplicates united"
    );
    assert!(entities(&after) < entities(&before));

    // `kg resolve --dry-run` on the exact graph prints the plan and
    // changes nothing; `kg resolve` then gives the graph `kg run` gave;
    // again, it merges nothing.
    let mut cmd = kg(&exact, &llm);
    cmd.args(["resolve", "--dry-run"]);
    let out = run_ok(cmd);
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(plan.contains("<- "), "{plan}");
    assert!(plan.contains("group(s)"), "{plan}");
    assert_eq!(canonical(&exact), {
        let mut v: Vec<String> = before
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).unwrap();
                if let Some(o) = v.as_object_mut() {
                    o.remove("source");
                    if let Some(c) = o.get_mut("chunk_ids").and_then(|c| c.as_array_mut()) {
                        c.sort_by_key(|c| c.to_string());
                    }
                }
                v.to_string()
            })
            .collect();
        v.sort();
        v
    });
    let mut cmd = kg(&exact, &llm);
    cmd.arg("resolve");
    run_ok(cmd);
    // Up to the spelling among names of one exact key (extraction keeps
    // whichever mention the writer stored first: the order chunks finish).
    let by_key = |dir: &Path| -> Vec<String> {
        let mut v: Vec<String> = canonical(dir)
            .into_iter()
            .map(|line| {
                let mut v: serde_json::Value = serde_json::from_str(&line).unwrap();
                if v["kind"] == "entity" {
                    let name = entity_key(v["name"].as_str().unwrap_or(""));
                    let mut aliases: Vec<String> = v["aliases"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|a| a.as_str().map(entity_key))
                        .filter(|a| *a != name)
                        .collect();
                    aliases.sort();
                    aliases.dedup();
                    v["name"] = json!(name);
                    v["aliases"] = json!(aliases);
                }
                // An entity's vector embeds its name, so it follows that
                // spelling too: compare which entities have one.
                if v["kind"] == "embedding" && v["target"] == "entity" {
                    if let Some(o) = v.as_object_mut() {
                        o.remove("vector");
                    }
                }
                v.to_string()
            })
            .collect();
        v.sort();
        v
    };
    assert_same(&by_key(&exact), &by_key(&fuzzy), "kg resolve vs kg run");
    let mut cmd = kg(&exact, &llm);
    cmd.arg("resolve");
    let out = run_ok(cmd);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("merged 0 entities"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Three small documents with scripted entities; two of them share one.
fn three_docs(dir: &Path) -> (PathBuf, Script) {
    let docs = dir.join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let texts = [
        (
            "a.md",
            "[da] Ada Lovelace wrote notes on the Analytical Engine.\n",
        ),
        (
            "b.md",
            "[db] Charles Babbage designed the Analytical Engine.\n",
        ),
        ("c.md", "[dc] Charles Babbage met Ada Lovelace in London.\n"),
    ];
    for (f, t) in texts {
        std::fs::write(docs.join(f), t).unwrap();
    }
    let e = |n: &str, t: &str| json!({"name": n, "type": t, "description": format!("{n}")});
    let r = |a: &str, b: &str, t: &str| json!({"source": a, "target": b, "type": t, "description": "", "strength": 0.8});
    let lines = [
        json!({"marker": "[da]", "entities": [e("Ada Lovelace", "Person"), e("Analytical Engine", "Machine")], "relations": [r("Ada Lovelace", "Analytical Engine", "WROTE_ABOUT")]}),
        json!({"marker": "[db]", "entities": [e("Charles Babbage", "Person"), e("Analytical Engine", "Machine")], "relations": [r("Charles Babbage", "Analytical Engine", "DESIGNED")]}),
        json!({"marker": "[dc]", "entities": [e("Charles Babbage", "Person"), e("Ada Lovelace", "Person"), e("London", "Location")], "relations": [r("Charles Babbage", "Ada Lovelace", "MET"), r("Charles Babbage", "London", "VISITED")]}),
    ];
    let script: String = lines.iter().map(|l| format!("{l}\n")).collect();
    (docs, Script::parse(&script).unwrap())
}

#[test]
fn delete_and_prune_leave_the_graph_of_a_fresh_build_and_dry_runs_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (docs, script) = three_docs(tmp.path());
    let llm = Llm::scripted(script);
    let build = |name: &str, files: &[&str]| -> PathBuf {
        let dir = tmp.path().join(name);
        let d = dir.join("docs");
        std::fs::create_dir_all(&d).unwrap();
        for f in files {
            std::fs::copy(docs.join(f), d.join(f)).unwrap();
        }
        let mut cmd = kg(&dir, &llm);
        cmd.arg("run").arg(&d);
        run_ok(cmd);
        dir
    };
    let two = canonical(&build("fresh-ab", &["a.md", "b.md"]));
    let full = build("full", &["a.md", "b.md", "c.md"]);
    let three = canonical(&full);
    assert_ne!(two, three);
    let c = full.join("docs/c.md");

    // delete --dry-run: listed, nothing changes.
    let mut cmd = kg(&full, &llm);
    cmd.args(["delete", "--dry-run"]).arg(&c);
    let out = run_ok(cmd);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 document(s) would be removed"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(canonical(&full), three);

    // delete: the graph of a fresh build of the other two.
    let mut cmd = kg(&full, &llm);
    cmd.arg("delete").arg(&c);
    run_ok(cmd);
    assert_same(&canonical(&full), &two, "deleting c.md left traces");

    // The run state forgot it: a run adds it back (its answers cached).
    let mut cmd = kg(&full, &llm);
    cmd.arg("run").arg(full.join("docs"));
    run_ok(cmd);
    assert_eq!(canonical(&full), three);

    // prune: the file is gone from disk; --dry-run changes nothing.
    std::fs::remove_file(&c).unwrap();
    let mut cmd = kg(&full, &llm);
    cmd.args(["prune", "--dry-run"]).arg(full.join("docs"));
    let out = run_ok(cmd);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 document(s) would be removed"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(canonical(&full), three);
    let mut cmd = kg(&full, &llm);
    cmd.arg("prune").arg(full.join("docs"));
    run_ok(cmd);
    assert_same(&canonical(&full), &two, "pruning c.md left traces");

    // By id, and a later run re-adds a file that comes back.
    let b_doc = read_graph(&full)
        .into_iter()
        .find_map(|r| match r {
            Record::Document(d) if d.source.ends_with("b.md") => Some(d.id.to_string()),
            _ => None,
        })
        .unwrap();
    let mut cmd = kg(&full, &llm);
    cmd.args(["delete", "--document-id", &b_doc]);
    run_ok(cmd);
    assert!(!read_graph(&full)
        .iter()
        .any(|r| matches!(r, Record::Document(d) if d.id.as_str() == b_doc)));
    std::fs::copy(docs.join("c.md"), &c).unwrap();
    let mut cmd = kg(&full, &llm);
    cmd.arg("run").arg(full.join("docs"));
    run_ok(cmd);
    assert_eq!(canonical(&full), three);
}
