//! `kg resolve` SIGKILLed half way through a graph with many merge groups,
//! then run again: every group ends as one node, with every mention, on
//! the embedded store and over Bolt (`NEO4J_URI`: the ArcadeDB server of
//! `cargo xtask server start`).

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;
use kg_core::{Chunk, ChunkId, Document, DocumentId, Entity, EntityId, Label, MediaType, Record};
use kg_store::{AnyStore, GraphStore, Scope, StoreConfig};

/// A surname for `i`: "K" and seven pseudo-random letters, so that two
/// surnames are never one typo apart (which would rightly merge them).
fn word(i: usize) -> String {
    let mut x = (i as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut s = String::from("K");
    for _ in 0..7 {
        x ^= x >> 30;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 27;
        x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        s.push((b'a' + (x % 26) as u8) as char);
    }
    s
}

/// `groups` pairs "John Kal…ov" / "John Q. Kal…ov" (one person each; every
/// pair shares the first name with every other), all mentioned by one
/// chunk, as JSON Lines for `kg store`. Returns the file and the ids.
fn records(dir: &Path, tag: &str, groups: usize) -> (std::path::PathBuf, Vec<String>) {
    let sha = kg_core::sha256_hex(tag.as_bytes());
    let doc = DocumentId::from_content_sha256(&sha);
    let text = format!("A list of people [{tag}].");
    let chunk = ChunkId::new(&doc, 0, &text);
    let person = Label::new("Person").unwrap();
    let mut out = vec![
        Record::Document(Document {
            id: doc.clone(),
            source: format!("/kill-test/{tag}.txt"),
            title: None,
            sha256: sha,
            pages: None,
            media_type: MediaType::Text,
            bytes: text.len() as u64,
        }),
        Record::Chunk(Chunk {
            id: chunk.clone(),
            document_id: doc.clone(),
            index: 0,
            text,
            tokens: 6,
            source: format!("/kill-test/{tag}.txt"),
            page_start: None,
            page_end: None,
        }),
    ];
    let mut ids = vec![doc.to_string(), chunk.to_string()];
    for g in 0..groups {
        for name in [format!("John {}", word(g)), format!("John Q. {}", word(g))] {
            let id = EntityId::new(&person, &format!("{name} {tag}"));
            ids.push(id.to_string());
            out.push(Record::Entity(Entity {
                id,
                name: format!("{name} {tag}"),
                entity_type: person.clone(),
                description: String::new(),
                aliases: Vec::new(),
                chunk_ids: vec![chunk.clone()],
                mention_descriptions: Default::default(),
            }));
        }
    }
    let path = dir.join("records.jsonl");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    for r in &out {
        kg_core::jsonl::write_record(&mut f, r).unwrap();
    }
    f.flush().unwrap();
    (path, ids)
}

fn kg(dir: &Path, bolt: bool) -> Command {
    let mut cmd = Command::cargo_bin("kg").unwrap();
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("KG_DATA_DIR", dir.join("kg-data"))
        .current_dir(dir);
    if bolt {
        for k in [
            "NEO4J_URI",
            "NEO4J_USER",
            "NEO4J_PASSWORD",
            "NEO4J_DATABASE",
        ] {
            if let Ok(v) = std::env::var(k) {
                cmd.env(k, v);
            }
        }
    }
    cmd
}

fn store_config(dir: &Path, bolt: bool) -> StoreConfig {
    if bolt {
        StoreConfig::Neo4j(kg_store::Neo4jConfig::from_env().unwrap_or_else(|| {
            panic!("NEO4J_URI is not set: run `cargo xtask server start` and export its `env`")
        }))
    } else {
        StoreConfig::Embedded(kg_store::EmbeddedConfig {
            data_dir: dir.join("kg-data"),
        })
    }
}

/// (Person nodes, MENTIONS) among `ids`.
async fn counts(store: &AnyStore, ids: &[String]) -> (u64, u64) {
    let c = store.counts(&Scope::Ids(ids.to_vec())).await.unwrap();
    (
        c.nodes.get("Entity:Person").copied().unwrap_or(0),
        c.relationships.get("MENTIONS").copied().unwrap_or(0),
    )
}

fn killed_half_way_then_rerun(bolt: bool, groups: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let tag = format!(
        "kill{}x{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    );
    let tag = tag.replace(|c: char| c.is_ascii_digit(), "");
    let tag = format!("Zq{tag}{}", word(std::process::id() as usize));
    let (file, ids) = records(tmp.path(), &tag, groups);
    let out = kg(tmp.path(), bolt)
        .args(["store", "-i"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt
        .block_on(AnyStore::open(&store_config(tmp.path(), bolt)))
        .unwrap();
    let total = 2 * groups as u64;
    assert_eq!(rt.block_on(counts(&store, &ids)), (total, total));

    let mut child = kg(tmp.path(), bolt)
        .arg("resolve")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let (persons, _) = rt.block_on(counts(&store, &ids));
        if persons <= total - (groups as u64) / 10 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "kg resolve never got a tenth of the way"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "kg resolve ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let (persons, mentions) = rt.block_on(counts(&store, &ids));
    assert!(
        persons > groups as u64 && persons < total,
        "killed half way: {persons} of {total}"
    );
    assert_eq!(
        mentions, persons,
        "every node kept its one mention: no half-merged group"
    );

    let out = kg(tmp.path(), bolt).arg("resolve").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        rt.block_on(counts(&store, &ids)),
        (groups as u64, groups as u64),
        "one node per group, each with its mention"
    );
    let back = rt
        .block_on(store.read_all(&Scope::Ids(ids.clone())))
        .unwrap();
    let merged = back
        .iter()
        .filter(|r| matches!(r, Record::Entity(e) if e.aliases.len() == 1))
        .count();
    assert_eq!(merged, groups, "each node has its other spelling as alias");
    let again = kg(tmp.path(), bolt).arg("resolve").output().unwrap();
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("merged 0 entities"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    if bolt {
        for id in ids.iter().take(1) {
            rt.block_on(store.remove_document(&DocumentId::from_raw(id.clone())))
                .unwrap();
        }
    }
}

#[test]
fn embedded_resolve_killed_half_way_leaves_whole_groups_and_a_rerun_finishes() {
    killed_half_way_then_rerun(false, 2_000);
}

#[test]
fn bolt_resolve_killed_half_way_leaves_whole_groups_and_a_rerun_finishes() {
    killed_half_way_then_rerun(true, 600);
}
