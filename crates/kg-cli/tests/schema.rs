//! The extraction schema through the `kg` binary, with the embedded store
//! and the fake LLM: strict mode drops and counts, the prompt lists the
//! schema, a changed schema is asked again (not served from the cache), bad
//! schema files exit 2 naming the line, `kg config` shows the schema, and
//! `kg schema suggest` proposes one that reads back.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kg_core::Record;
use kg_fake_llm::Script;
use serde_json::json;

mod common;

use common::{kg_on as kg, read_graph, Llm};

fn output(mut cmd: Command) -> (Output, String) {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

fn run_ok(cmd: Command) -> String {
    let (out, text) = output(cmd);
    assert!(out.status.success(), "kg failed: {text}");
    text
}

/// Eight paragraphs, each with a marker the script answers: two people at
/// two organisations, a spaceship, a planet, and relations of allowed and
/// disallowed types and shapes.
fn corpus(dir: &Path) -> (PathBuf, Script) {
    let docs = dir.join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let mut text = String::new();
    let mut script = String::new();
    for i in 0..8 {
        let marker = format!("[m{i}]");
        let (person, org) = (format!("Person Number {i}"), format!("Company {}", i % 2));
        let entry = json!({
            "marker": marker,
            "entities": [
                {"name": person, "type": "Person", "description": "a pilot"},
                {"name": org, "type": "Organization", "description": "an employer"},
                {"name": format!("Ship {i}"), "type": "Spaceship", "description": "a ship"},
                {"name": "Mars", "type": "Planet", "description": "a planet"},
            ],
            "relations": [
                {"source": person, "target": org, "type": "WORKS_AT", "description": "works", "strength": 0.9},
                {"source": org, "target": person, "type": "WORKS_AT", "description": "backwards", "strength": 0.5},
                {"source": person, "target": format!("Ship {i}"), "type": "PILOTS", "description": "flies", "strength": 0.8},
            ],
        });
        script.push_str(&entry.to_string());
        script.push('\n');
        text.push_str(&format!(
            "Paragraph {marker}: a person works at a company and flies a ship to a planet.\n\n"
        ));
    }
    std::fs::write(docs.join("crew.txt"), text).unwrap();
    (docs, Script::parse(&script).unwrap())
}

const STRICT: &str = r#"data_dir = "kg-data"

[extract.schema]
mode = "strict"
patterns = ["Person -WORKS_AT-> Organization"]

[[extract.schema.entities]]
type = "Person"
description = "a human being"
properties = ["role"]

[[extract.schema.entities]]
type = "Organization"

[[extract.schema.relations]]
type = "WORKS_AT"
description = "employment"
"#;

#[test]
fn strict_schema_drops_and_counts_and_the_prompt_lists_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (docs, script) = corpus(tmp.path());
    let llm = Llm::scripted(script);
    std::fs::write(tmp.path().join("kg.toml"), STRICT).unwrap();
    let mut cmd = kg(tmp.path(), &llm);
    cmd.args(["run", "--concurrency", "2"]).arg(&docs);
    let text = run_ok(cmd);

    // The summary counts each drop under its type (or shape).
    let line = text
        .lines()
        .find(|l| l.contains("dropped by schema"))
        .unwrap_or_else(|| panic!("no drop line in the summary: {text}"));
    assert!(
        line.contains("16 entities (Planet 8, Spaceship 8)"),
        "{line}"
    );
    assert!(
        line.contains("16 relations (Organization -WORKS_AT-> Person 8, PILOTS 8)"),
        "{line}"
    );

    // The graph holds only the schema's types.
    let graph = read_graph(tmp.path());
    let mut types: Vec<String> = graph
        .iter()
        .filter_map(|r| match r {
            Record::Entity(e) => Some(e.entity_type.as_str().to_string()),
            _ => None,
        })
        .collect();
    types.sort();
    types.dedup();
    assert_eq!(types, ["Organization", "Person"]);
    let type_of: std::collections::HashMap<String, String> = graph
        .iter()
        .filter_map(|r| match r {
            Record::Entity(e) => Some((e.id.to_string(), e.entity_type.as_str().to_string())),
            _ => None,
        })
        .collect();
    let rels: Vec<(String, &str, &str)> = graph
        .iter()
        .filter_map(|r| match r {
            Record::Relation(x) => Some((
                x.rel_type.as_str().to_string(),
                type_of[&x.source_id.to_string()].as_str(),
                type_of[&x.target_id.to_string()].as_str(),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(rels.len(), 8, "{rels:?}");
    assert!(
        rels.iter()
            .all(|r| *r == ("WORKS_AT".to_string(), "Person", "Organization")),
        "{rels:?}"
    );

    // The prompt that reached the server lists the schema.
    let system = llm.handle().counters().last_extraction_system.unwrap();
    assert!(
        system.contains("Use only these entity types:\n- Person: a human being (state its role"),
        "{system}"
    );
    assert!(system.contains("- WORKS_AT: employment"), "{system}");
    assert!(
        system.contains("(Person, WORKS_AT, Organization)"),
        "{system}"
    );
}

#[test]
fn a_changed_schema_is_asked_again_and_the_old_one_is_served_from_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let (docs, script) = corpus(tmp.path());
    let llm = Llm::scripted(script);
    let schema_a = tmp.path().join("a.toml");
    let schema_b = tmp.path().join("b.toml");
    let body = "mode = \"strict\"\n[[entities]]\ntype = \"Person\"\n[[entities]]\ntype = \"Organization\"\n";
    std::fs::write(&schema_a, body).unwrap();
    std::fs::write(
        &schema_b,
        body.replace(
            "type = \"Person\"\n",
            "type = \"Person\"\ndescription = \"a human\"\n",
        ),
    )
    .unwrap();
    let run = |schema: &Path| {
        let mut cmd = kg(tmp.path(), &llm);
        cmd.arg("run").arg("--schema").arg(schema).arg(&docs);
        run_ok(cmd);
        llm.handle().counters().chat_requests
    };
    let first = run(&schema_a);
    assert!(first >= 1, "no call was made");
    assert_eq!(run(&schema_a), first, "the same schema made new calls");
    let second = run(&schema_b);
    assert_eq!(
        second,
        2 * first,
        "a changed schema was served from the cache"
    );
    assert_eq!(
        run(&schema_a),
        second,
        "schema a's cached answers were not reused"
    );
}

fn exit_2_naming(mut cmd: Command, want: &[&str]) {
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for w in want {
        assert!(err.contains(w), "{w:?} not in: {err}");
    }
}

#[test]
fn bad_schema_files_exit_2_naming_the_line() {
    let tmp = tempfile::tempdir().unwrap();
    let llm = Llm::scripted(Script::default());
    // In kg.toml: an unknown key on line 7.
    let toml = STRICT.replace(
        "type = \"Organization\"\n",
        "type = \"Organization\"\ncolour = \"red\"\n",
    );
    std::fs::write(tmp.path().join("kg.toml"), &toml).unwrap();
    let line = toml.lines().position(|l| l.starts_with("colour")).unwrap() + 1;
    let mut cmd = kg(tmp.path(), &llm);
    cmd.arg("config");
    exit_2_naming(
        cmd,
        &[
            "kg.toml [extract.schema]",
            &format!("line {line},"),
            "colour",
        ],
    );
    std::fs::remove_file(tmp.path().join("kg.toml")).unwrap();

    // In a --schema file: a type that is not an identifier, a pattern
    // naming an undeclared type.
    let cases = [
        ("[[entities]]\ntype = \"Person\"\n\n[[entities]]\ntype = \"Org$\"\n", "line 5,", "Org$"),
        (
            "patterns = [\"Person -KNOWS-> Robot\"]\n[[entities]]\ntype = \"Person\"\n[[relations]]\ntype = \"KNOWS\"\n",
            "line 1,",
            "Robot",
        ),
    ];
    for (i, (body, line, what)) in cases.iter().enumerate() {
        let file = tmp.path().join(format!("bad{i}.toml"));
        std::fs::write(&file, body).unwrap();
        let mut cmd = kg(tmp.path(), &llm);
        cmd.args(["run", "--schema"]).arg(&file).arg(tmp.path());
        exit_2_naming(cmd, &[&file.display().to_string(), line, what]);
    }
    assert_eq!(llm.handle().counters().chat_requests, 0);
}

#[test]
fn kg_config_shows_the_schema_and_where_it_came_from() {
    let tmp = tempfile::tempdir().unwrap();
    let llm = Llm::scripted(Script::default());
    let mut cmd = kg(tmp.path(), &llm);
    cmd.arg("config");
    let text = run_ok(cmd);
    assert!(text.contains("# extraction schema: open"), "{text}");

    std::fs::write(tmp.path().join("kg.toml"), STRICT).unwrap();
    let mut cmd = kg(tmp.path(), &llm);
    cmd.arg("config");
    let text = run_ok(cmd);
    assert!(text.contains("kg.toml [extract.schema]"), "{text}");
    assert!(
        text.contains("[extract.schema]\nmode = \"strict\""),
        "{text}"
    );
    assert!(
        text.contains("type = \"Person\"\ndescription = \"a human being\""),
        "{text}"
    );
    assert!(
        text.contains("\"Person -WORKS_AT-> Organization\""),
        "{text}"
    );
    assert!(text.contains("prompt version kg-extract-v1+"), "{text}");
}

#[test]
fn schema_suggest_proposes_a_schema_that_reads_back_and_a_rerun_is_free() {
    let tmp = tempfile::tempdir().unwrap();
    let (docs, script) = corpus(tmp.path());
    let llm = Llm::scripted(script);
    let suggest = || {
        let mut cmd = kg(tmp.path(), &llm);
        cmd.args([
            "schema",
            "suggest",
            "--sample",
            "4",
            "--chunk-tokens",
            "32",
            "--chunk-overlap",
            "0",
        ])
        .arg(&docs);
        let (out, text) = output(cmd);
        assert!(out.status.success(), "{text}");
        String::from_utf8(out.stdout).unwrap()
    };
    let toml = suggest();
    let calls = llm.handle().counters().chat_requests;
    assert_eq!(calls, 4, "{toml}");
    let schema = kg_extract::ExtractSchema::from_config_toml(&toml)
        .unwrap()
        .unwrap();
    let types: Vec<&str> = schema.entity_types().iter().map(|l| l.as_str()).collect();
    for t in ["Person", "Organization", "Spaceship", "Planet"] {
        assert!(types.contains(&t), "{t} missing: {toml}");
    }
    assert!(
        toml.contains("\"Person -WORKS_AT-> Organization\",  # 4 in 4"),
        "{toml}"
    );
    assert!(toml.contains("from 4 sampled chunk(s) of "), "{toml}");
    // The same sample again: every answer from the cache.
    assert_eq!(suggest(), toml);
    assert_eq!(llm.handle().counters().chat_requests, calls);
    // What it printed works as a --schema file.
    let file = tmp.path().join("suggested.toml");
    std::fs::write(&file, &toml).unwrap();
    let mut cmd = kg(tmp.path(), &llm);
    cmd.args(["config", "--schema"]).arg(&file);
    let text = run_ok(cmd);
    assert!(text.contains("type = \"Spaceship\""), "{text}");
}
