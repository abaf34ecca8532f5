//! Entity resolution over a store: time and peak heap of `kg resolve`'s
//! plan and apply for 10,000 and 100,000 synthetic entities (2,500 pairs of
//! spelling variants, the rest distinct), on the embedded store and, with
//! `NEO4J_URI` set, over Bolt (`KG_BENCH_BOLT_SIZES`, default 10000; the
//! bench clears that server's graph before each size, as the pipeline bench
//! does: point it at a test server, as `cargo xtask bench` does).
//! Lines start with `kg-bench:`; the 100k figures are also given as ratios
//! to the 10k ones of the same run (memory must stay flat: the resolver
//! holds its sort buffer, window and matched pairs, not the entities).
//!
//! `cargo bench -p kg-cli --bench resolve`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use kg_core::{Entity, EntityId, Label, Record};
use kg_resolve::ResolveConfig;
use kg_store::{AnyStore, BatchWriter, GraphStore, Scope, StoreConfig, WriterConfig};

#[path = "support/clear_graph.rs"]
mod clear;

/// Counts live and peak heap bytes of the Rust allocator.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const FIRST: &[&str] = &[
    "John", "Mary", "Ahmed", "Wei", "Olga", "Pedro", "Aiko", "Lars", "Fatima", "Noah",
];

fn surname(i: usize, salt: u64) -> String {
    let mut x = (i as u64) ^ salt;
    let mut s = String::from("K");
    for _ in 0..7 {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        s.push((b'a' + (z % 26) as u8) as char);
    }
    s
}

/// Groups of two spellings in every run: the same number of merges at
/// every size, so that what grows is only the number of entities.
const VARIANT_GROUPS: usize = 2_500;

/// `n` entities: [`VARIANT_GROUPS`] groups of two spellings (a person with
/// and without a middle initial, a lab written apart and together), the
/// rest distinct people and labs.
fn entities(n: usize, salt: u64) -> Vec<Record> {
    let person = Label::new("Person").unwrap();
    let org = Label::new("Organization").unwrap();
    let mut out = Vec::with_capacity(n);
    let singles = n.saturating_sub(2 * VARIANT_GROUPS);
    for g in 0..VARIANT_GROUPS + singles {
        let last = surname(g, salt);
        let first = FIRST[g % FIRST.len()];
        let (label, a, b) = if g % 2 == 0 {
            (
                &person,
                format!("{first} {last}"),
                format!("{first} Q. {last}"),
            )
        } else {
            (&org, format!("{last} Labs"), format!("{last}Labs"))
        };
        let names = if g < VARIANT_GROUPS {
            vec![a, b]
        } else {
            vec![a]
        };
        for name in names {
            out.push(Record::Entity(Entity {
                id: EntityId::new(label, &name),
                name,
                entity_type: label.clone(),
                description: String::new(),
                aliases: Vec::new(),
                chunk_ids: Vec::new(),
                mention_descriptions: Default::default(),
            }));
        }
    }
    out
}

struct Figures {
    plan_s: f64,
    apply_s: f64,
    peak_mb: f64,
    merged: u64,
}

async fn measure(store: AnyStore, dir: &std::path::Path, n: usize, salt: u64) -> Figures {
    let records = entities(n, salt);
    let writer = BatchWriter::open(
        store,
        WriterConfig {
            dead_letter: dir.join("dead.jsonl"),
            ..WriterConfig::default()
        },
    )
    .await
    .unwrap();
    writer
        .write_records(records)
        .await
        .unwrap()
        .check()
        .unwrap();
    let store = writer.sink();
    let config = ResolveConfig::default();
    let cancel = tokio_util::sync::CancellationToken::new();
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let t = Instant::now();
    let plan = kg_cli::resolution::plan(store, &config, None)
        .await
        .unwrap();
    let plan_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let applied = kg_cli::resolution::apply(store, &plan, &cancel).await;
    let apply_s = t.elapsed().as_secs_f64();
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    assert!(applied.failed.is_empty(), "{:?}", applied.failed.first());
    Figures {
        plan_s,
        apply_s,
        peak_mb: peak as f64 / 1e6,
        merged: applied.entities,
    }
}

fn report(backend: &str, n: usize, f: &Figures) {
    println!(
        "kg-bench: resolve {backend} {n} entities: plan {:.2} s ({:.1} µs/entity), apply {:.2} s \
         ({} merged), peak heap {:.1} MB",
        f.plan_s,
        f.plan_s * 1e6 / n as f64,
        f.apply_s,
        f.merged,
        f.peak_mb
    );
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut embedded = Vec::new();
    for n in [10_000usize, 100_000] {
        let dir = tempfile::tempdir().unwrap();
        let store = rt
            .block_on(AnyStore::open(&StoreConfig::Embedded(
                kg_store::EmbeddedConfig {
                    data_dir: dir.path().into(),
                },
            )))
            .unwrap();
        let f = rt.block_on(measure(store, dir.path(), n, 1));
        report("embedded", n, &f);
        embedded.push(f);
    }
    if let [small, big] = embedded.as_slice() {
        println!(
            "kg-bench: resolve embedded 100k/10k: plan time per entity x{:.2}, peak heap x{:.2}",
            (big.plan_s / 100_000.0) / (small.plan_s / 10_000.0),
            big.peak_mb / small.peak_mb
        );
    }
    if let Some(cfg) = kg_store::Neo4jConfig::from_env() {
        let sizes: Vec<usize> = std::env::var("KG_BENCH_BOLT_SIZES")
            .unwrap_or_else(|_| "10000".into())
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        for (i, n) in sizes.into_iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let neo = rt
                .block_on(kg_store::Neo4jStore::connect(cfg.clone()))
                .unwrap();
            rt.block_on(clear::clear_graph(&neo));
            drop(neo);
            let store = rt
                .block_on(AnyStore::open(&StoreConfig::Neo4j(cfg.clone())))
                .unwrap();
            let before = rt
                .block_on(store.counts(&Scope::All))
                .unwrap()
                .total_nodes();
            let f = rt.block_on(measure(store, dir.path(), n, 1_000 + i as u64));
            report("bolt", n, &f);
            println!("kg-bench: resolve bolt: {before} nodes on the server before");
        }
    }
}
