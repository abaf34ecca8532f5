//! Descriptions from every mention, through the `kg` binary with the
//! embedded store and the fake LLM (scripted extraction answers, its
//! summary mode and its embeddings endpoint): an entity that 30 chunks
//! describe differently ends with one summary, made by one LLM call and
//! cached, and nothing calls again on a re-run or on a rebuild from the
//! caches; a relation past the bound is summarised too; one at the bound
//! keeps its descriptions joined; deleting documents makes them again
//! from what is left.

use std::path::{Path, PathBuf};

mod common;

use common::{kg_on as kg, read_graph, run_ok, Llm};
use kg_core::Record;
use kg_fake_llm::{FakeConfig, Script};
use serde_json::json;

/// (name or type, description) pairs, sorted.
type Described = Vec<(String, String)>;

/// (name, description) of every entity; (type, description) of every
/// relation.
fn descriptions(dir: &Path) -> (Described, Described) {
    let (mut entities, mut relations) = (Vec::new(), Vec::new());
    for r in read_graph(dir) {
        match r {
            Record::Entity(e) => entities.push((e.name, e.description)),
            Record::Relation(r) => relations.push((r.rel_type.to_string(), r.description)),
            _ => {}
        }
    }
    entities.sort();
    relations.sort();
    (entities, relations)
}

fn described<'a>(list: &'a [(String, String)], name: &str) -> &'a str {
    list.iter()
        .find(|(n, _)| n == name)
        .map(|(_, d)| d.as_str())
        .unwrap_or_else(|| panic!("no {name} in {list:?}"))
}

/// 30 one-chunk documents, each naming Ada Lovelace (a description of its
/// own), the Analytical Engine (the same description everywhere), a
/// WROTE_ABOUT relation (6 distinct descriptions) and, in the first 4, a
/// STUDIED relation (4 distinct).
fn corpus(dir: &Path) -> (PathBuf, Script) {
    let docs = dir.join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let mut script = String::new();
    for i in 0..30 {
        let marker = format!("[m{i:02}]");
        std::fs::write(
            docs.join(format!("note-{i:02}.md")),
            format!("{marker} Ada Lovelace and the Analytical Engine, note {i}.\n"),
        )
        .unwrap();
        let mut relations = vec![json!({
            "source": "Ada Lovelace", "target": "Analytical Engine", "type": "WROTE_ABOUT",
            "description": format!("notes, part {}", i % 6), "strength": 0.8
        })];
        if i < 4 {
            relations.push(json!({
                "source": "Ada Lovelace", "target": "Analytical Engine", "type": "STUDIED",
                "description": format!("studied it, view {i}"), "strength": 0.5
            }));
        }
        let entry = json!({
            "marker": marker,
            "entities": [
                {"name": "Ada Lovelace", "type": "Person",
                 "description": format!("Ada Lovelace, as note {i:02} describes her")},
                {"name": "Analytical Engine", "type": "Machine",
                 "description": "a mechanical computer"},
            ],
            "relations": relations,
        });
        script.push_str(&format!("{entry}\n"));
    }
    (docs, Script::parse(&script).unwrap())
}

#[test]
fn thirty_descriptions_end_as_one_cached_summary_and_a_rerun_calls_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (docs, script) = corpus(tmp.path());
    let llm = Llm::with_config(FakeConfig {
        script,
        ..FakeConfig::default()
    });
    let first = tmp.path().join("first");
    std::fs::create_dir_all(&first).unwrap();
    let mut cmd = kg(&first, &llm);
    // $1 a prompt token and $2 a completion token: the cost printed must be
    // every token of the run, the extractions' and the summaries', priced.
    cmd.env("KG_INPUT_PRICE_PER_MTOK", "1000000")
        .env("KG_OUTPUT_PRICE_PER_MTOK", "2000000");
    cmd.arg("run").arg(&docs);
    let out = run_ok(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let counters = llm.handle().counters();
    let row = |name: &str| {
        stderr
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_default()
            .to_string()
    };
    // "tokens          335088 (182619 prompt + 152469 completion)"
    let tokens: Vec<u64> = row("tokens")
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    let [total, prompt, completion] = tokens[..] else {
        panic!("tokens row: {}\n{stderr}", row("tokens"));
    };
    assert_eq!(total, prompt + completion, "{stderr}");
    assert!(prompt > 0 && completion > 0, "{stderr}");
    let cost = row("estimated cost");
    assert_eq!(
        cost.split('$').nth(1),
        Some(format!("{}.0000", prompt + 2 * completion).as_str()),
        "{stderr}"
    );
    // 30 extractions, then one summary for Ada and one for WROTE_ABOUT.
    assert_eq!(counters.summaries, 2, "{stderr}");
    assert_eq!(counters.chat_requests, 32, "{stderr}");
    assert!(
        stderr.contains("2 summaries (2 by the LLM, 0 cached; 2 LLM calls"),
        "{stderr}"
    );
    // The summary's totals count the summaries' calls with the
    // extractions': what the endpoint bills.
    let calls_row = stderr
        .lines()
        .find(|l| l.trim_start().starts_with("LLM calls"))
        .unwrap_or_default();
    assert!(
        calls_row.split_whitespace().nth(2) == Some("32"),
        "{calls_row}\n{stderr}"
    );
    let (entities, relations) = descriptions(&first);
    let ada = described(&entities, "Ada Lovelace");
    assert!(
        ada.starts_with("Summary of 30 descriptions of Person \"Ada Lovelace\""),
        "{ada}"
    );
    assert!(!ada.contains('\n'), "one summary, not joined lines: {ada}");
    assert_eq!(
        described(&entities, "Analytical Engine"),
        "a mechanical computer"
    );
    let wrote = described(&relations, "WROTE_ABOUT");
    assert!(
        wrote.starts_with("Summary of 6 descriptions of WROTE_ABOUT"),
        "{wrote}"
    );
    // At the bound (4): kept, joined in order.
    assert_eq!(
        described(&relations, "STUDIED"),
        "studied it, view 0\nstudied it, view 1\nstudied it, view 2\nstudied it, view 3"
    );
    // Every mention keeps its own description.
    let mentions: usize = read_graph(&first)
        .iter()
        .filter_map(|r| match r {
            Record::Entity(e) if e.name == "Ada Lovelace" => Some(e.mention_descriptions.len()),
            _ => None,
        })
        .sum();
    assert_eq!(mentions, 30);

    // A re-run: nothing new, no call at all.
    let mut cmd = kg(&first, &llm);
    cmd.arg("run").arg(&docs);
    run_ok(&mut cmd);
    assert_eq!(llm.handle().counters().chat_requests, 32);
    assert_eq!(descriptions(&first), (entities.clone(), relations.clone()));

    // A rebuild from nothing but the caches: the same graph, no call.
    let second = tmp.path().join("second");
    std::fs::create_dir_all(second.join("kg-data")).unwrap();
    let copy = |from: &Path, to: &Path| {
        std::fs::create_dir_all(to).unwrap();
        for f in std::fs::read_dir(from).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
        }
    };
    copy(&first.join("kg-data/cache"), &second.join("kg-data/cache"));
    let mut cmd = kg(&second, &llm);
    cmd.arg("run").arg(&docs);
    let out = run_ok(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(llm.handle().counters().chat_requests, 32, "{stderr}");
    assert!(
        stderr.contains("2 summaries (0 by the LLM, 2 cached; 0 LLM calls"),
        "{stderr}"
    );
    assert_eq!(descriptions(&second), (entities, relations));

    // Deleting all but three notes (one command, so one description step
    // after them): Ada's three descriptions, joined (no call); WROTE_ABOUT
    // keeps three.
    let mut cmd = kg(&second, &llm);
    cmd.arg("delete");
    for i in 3..30 {
        cmd.arg(docs.join(format!("note-{i:02}.md")));
    }
    let out = run_ok(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(llm.handle().counters().chat_requests, 32, "{stderr}");
    assert!(
        stderr.contains("descriptions made again for 2 entities"),
        "{stderr}"
    );
    let (entities, relations) = descriptions(&second);
    assert_eq!(
        described(&entities, "Ada Lovelace"),
        "Ada Lovelace, as note 00 describes her\nAda Lovelace, as note 01 describes her\n\
         Ada Lovelace, as note 02 describes her"
    );
    assert_eq!(
        described(&relations, "WROTE_ABOUT"),
        "notes, part 0\nnotes, part 1\nnotes, part 2"
    );
}
