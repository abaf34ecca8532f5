//! Blocking, matching and the merge plan, over a stream of entities.
//!
//! **Blocking (sorted neighbourhood).** Each entity pushed gives one key
//! record per blocking key ([`BlockingKey`]): the name's tokens in order,
//! sorted, last word first, and its initials (or the word itself for a
//! one-word name, which puts "NASA" beside "National Aeronautics and Space
//! Administration"). Key records are sorted by (type, key kind, key): in
//! memory up to [`ResolveConfig::sort_buffer`] records, beyond that in
//! sorted runs spilled to anonymous temporary files and merged back. A
//! window of the last [`ResolveConfig::window`] key records of the same
//! type and kind slides over the sorted stream; each new record is compared
//! with the window. Memory is the sort buffer, the window, and the matched
//! pairs: it does not grow with the number of entities compared.
//!
//! **Matching.** Pairs scoring at least the threshold (and, where entity
//! vectors are given, not vetoed by them) are matches; pairs a little below
//! it are kept as borderline, for vectors to decide.
//!
//! **Plan.** Matches are united (union-find over matched ids only); each
//! connected group is then checked as a whole, because matches chain
//! ("John Smith" ~ "J. Smith" ~ "Jane Smith"): its members, most mentioned
//! first (then those with most matches), join the first cluster in which one member matches them and no
//! member is ruled out by a guard; the others start a cluster. Each
//! cluster of two or more is one [`MergeGroup`], kept under its most
//! mentioned member (ties: the smaller name, then id), whose name is the
//! group's name.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};

use serde::{Deserialize, Serialize};

use crate::normalise::{normalise, Normalised};
use crate::similarity::{compare, Reason};
use crate::{ResolveConfig, ResolveError};

/// An entity as resolution sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Entity id.
    pub id: String,
    /// Type label.
    pub entity_type: String,
    /// Name.
    pub name: String,
    /// How many chunks mention it (the weight of its spelling).
    pub mentions: u64,
}

/// The blocking keys (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BlockingKey {
    /// Tokens in order.
    Name,
    /// Tokens sorted.
    Sorted,
    /// Last word first, then the tokens in order.
    LastWord,
    /// Initials of a multi-word name, or a one-word name itself.
    Initials,
}

impl BlockingKey {
    /// Every key, in sort order.
    pub const ALL: [BlockingKey; 4] = [Self::Name, Self::Sorted, Self::LastWord, Self::Initials];

    /// The key of `n` (empty for an empty name).
    pub fn key(self, n: &Normalised) -> String {
        match self {
            Self::Name => n.joined(),
            Self::Sorted => {
                let mut t: Vec<&str> = n.tokens.iter().map(String::as_str).collect();
                t.sort_unstable();
                t.join(" ")
            }
            Self::LastWord => match n.content_tokens().last() {
                Some(last) => format!("{last} {}", n.joined()),
                None => n.joined(),
            },
            Self::Initials => {
                if n.tokens.len() == 1 {
                    n.joined()
                } else {
                    format!("{} {}", n.initials(), n.joined())
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct KeyRec {
    ty: String,
    kind: u8,
    key: String,
    id: String,
    name: String,
    mentions: u64,
}

/// A pair of entities found alike.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    /// One id (the smaller).
    pub a: String,
    /// The other.
    pub b: String,
    /// The name score.
    pub score: f64,
}

#[derive(Debug, Clone)]
struct Member {
    id: String,
    name: String,
    mentions: u64,
    entity_type: String,
}

/// What the blocking pass found: the pairs to decide, and the entities in
/// them. Turn it into a [`Plan`] with [`Matches::plan`].
#[derive(Debug, Default)]
pub struct Matches {
    /// Pairs at or above the threshold, or borderline (within the vector
    /// margin below it), keyed by (smaller id, larger id).
    pub pairs: HashMap<(String, String), f64>,
    members: HashMap<String, Member>,
    /// Entities pushed.
    pub entities: u64,
    /// Pairs compared (a pair close under several keys counts each time).
    pub comparisons: u64,
    /// Sorted runs spilled to temporary files.
    pub spilled_runs: usize,
    threshold: f64,
}

/// One merge: entities of one type that are one entity.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeGroup {
    /// Their type.
    pub entity_type: String,
    /// The id kept (the most mentioned member).
    pub keep: String,
    /// The name the kept entity takes (the most mentioned spelling).
    pub name: String,
    /// The others: (id, name, score of its best match in the group).
    pub merged: Vec<(String, String, f64)>,
}

impl MergeGroup {
    /// The lowest score by which a member joined the group.
    pub fn score(&self) -> f64 {
        self.merged
            .iter()
            .map(|m| m.2)
            .fold(1.0_f64, |a, b| a.min(b))
    }
}

/// The merge plan.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// The groups, sorted by type and kept name.
    pub groups: Vec<MergeGroup>,
    /// Entities read.
    pub entities: u64,
    /// Pairs compared.
    pub comparisons: u64,
    /// Groups larger than [`ResolveConfig::max_group`], left unmerged.
    pub skipped_groups: usize,
}

impl Plan {
    /// Entities that go (merged into another).
    pub fn merged_entities(&self) -> usize {
        self.groups.iter().map(|g| g.merged.len()).sum()
    }
}

/// Sorted-neighbourhood resolution over a stream of [`Candidate`]s.
pub struct Resolver {
    config: ResolveConfig,
    buffer: Vec<KeyRec>,
    runs: Vec<File>,
    touched: Option<Touched>,
    entities: u64,
}

/// Which ids a run touched (see [`Resolver::restrict_to`]).
type Touched = Box<dyn Fn(&str) -> bool + Send>;

impl Resolver {
    /// A resolver with `config`.
    pub fn new(config: ResolveConfig) -> Self {
        Self {
            config,
            buffer: Vec::new(),
            runs: Vec::new(),
            touched: None,
            entities: 0,
        }
    }

    /// Only pairs with at least one id for which `touched` says true count
    /// (a run resolves the entities it wrote against the whole graph).
    pub fn restrict_to(&mut self, touched: impl Fn(&str) -> bool + Send + 'static) {
        self.touched = Some(Box::new(touched));
    }

    /// Adds one entity.
    pub fn push(&mut self, c: Candidate) -> Result<(), ResolveError> {
        self.entities += 1;
        let n = normalise(&c.name);
        if n.tokens.is_empty() {
            return Ok(());
        }
        for (kind, k) in BlockingKey::ALL.iter().enumerate() {
            self.buffer.push(KeyRec {
                ty: c.entity_type.clone(),
                kind: kind as u8,
                key: k.key(&n),
                id: c.id.clone(),
                name: c.name.clone(),
                mentions: c.mentions,
            });
        }
        if self.buffer.len() >= self.config.sort_buffer.max(16) {
            self.spill()?;
        }
        Ok(())
    }

    fn spill(&mut self) -> Result<(), ResolveError> {
        self.buffer.sort_unstable();
        let mut file = tempfile::tempfile()?;
        {
            let mut w = BufWriter::new(&mut file);
            for r in self.buffer.drain(..) {
                serde_json::to_writer(&mut w, &r)?;
                w.write_all(b"\n")?;
            }
            w.flush()?;
        }
        file.seek(SeekFrom::Start(0))?;
        self.runs.push(file);
        Ok(())
    }

    /// Sorts, slides the window, and returns the matched pairs.
    pub fn finish(mut self) -> Result<Matches, ResolveError> {
        let spilled_runs = self.runs.len();
        if !self.runs.is_empty() && !self.buffer.is_empty() {
            self.spill()?;
        }
        self.buffer.sort_unstable();
        let mut matches = Matches {
            entities: self.entities,
            spilled_runs,
            threshold: self.config.threshold,
            ..Matches::default()
        };
        let window = self.config.window.max(1);
        let low = self.config.threshold - self.config.vector_margin.max(0.0);
        let touched = self.touched.take();
        let mut win: VecDeque<(KeyRec, Normalised)> = VecDeque::with_capacity(window);
        let mut step = |rec: KeyRec, m: &mut Matches| {
            if win
                .back()
                .is_some_and(|(w, _)| (w.ty.as_str(), w.kind) != (rec.ty.as_str(), rec.kind))
            {
                win.clear();
            }
            let n = normalise(&rec.name);
            for (w, wn) in &win {
                if w.id == rec.id {
                    continue;
                }
                if let Some(t) = &touched {
                    if !t(&w.id) && !t(&rec.id) {
                        continue;
                    }
                }
                let pair = if w.id < rec.id {
                    (w.id.clone(), rec.id.clone())
                } else {
                    (rec.id.clone(), w.id.clone())
                };
                if m.pairs.contains_key(&pair) {
                    continue;
                }
                m.comparisons += 1;
                let c = compare(wn, &n);
                if !c.reason.is_guard() && c.score >= low && c.score > 0.0 {
                    for r in [w, &rec] {
                        m.members.entry(r.id.clone()).or_insert_with(|| Member {
                            id: r.id.clone(),
                            name: r.name.clone(),
                            mentions: r.mentions,
                            entity_type: r.ty.clone(),
                        });
                    }
                    m.pairs.insert(pair, c.score);
                }
            }
            if win.len() == window {
                win.pop_front();
            }
            win.push_back((rec, n));
        };
        if self.runs.is_empty() {
            for rec in std::mem::take(&mut self.buffer) {
                step(rec, &mut matches);
            }
        } else {
            let mut readers: Vec<std::io::Lines<BufReader<File>>> = self
                .runs
                .drain(..)
                .map(|f| BufReader::new(f).lines())
                .collect();
            let mut heap = BinaryHeap::new();
            for (i, r) in readers.iter_mut().enumerate() {
                if let Some(rec) = next_rec(r)? {
                    heap.push(Reverse((rec, i)));
                }
            }
            while let Some(Reverse((rec, i))) = heap.pop() {
                if let Some(next) = readers.get_mut(i).map(next_rec).transpose()?.flatten() {
                    heap.push(Reverse((next, i)));
                }
                step(rec, &mut matches);
            }
        }
        Ok(matches)
    }
}

fn next_rec(lines: &mut std::io::Lines<BufReader<File>>) -> Result<Option<KeyRec>, ResolveError> {
    match lines.next() {
        None => Ok(None),
        Some(line) => Ok(Some(serde_json::from_str(&line?)?)),
    }
}

fn cosine(a: &[f32], b: &[f32]) -> Option<f32> {
    if a.len() != b.len() || a.is_empty() {
        return None;
    }
    let (mut dot, mut na, mut nb) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    (na > 0.0 && nb > 0.0).then(|| dot / (na.sqrt() * nb.sqrt()))
}

struct UnionFind {
    parent: Vec<usize>,
}

impl UnionFind {
    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }
    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent[ra.max(rb)] = ra.min(rb);
        }
    }
}

impl Matches {
    /// Ids of the entities in some pair (the ones whose vectors
    /// [`Self::plan`] may use).
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.members.keys().map(String::as_str)
    }

    /// The merge plan. `vectors` holds entity vectors (name + description)
    /// where there are any: below `vector_veto` cosine a pair is not a
    /// match whatever its name score; a borderline pair (within
    /// `vector_margin` below the threshold) is one at `vector_accept` or
    /// above. Without vectors only the name score counts.
    pub fn plan(self, config: &ResolveConfig, vectors: &HashMap<String, Vec<f32>>) -> Plan {
        let threshold = self.threshold;
        let vec_cos = |a: &str, b: &str| -> Option<f32> {
            cosine(vectors.get(a)?.as_slice(), vectors.get(b)?.as_slice())
        };
        let accepted = |a: &str, b: &str, score: f64| -> bool {
            match vec_cos(a, b) {
                Some(c) if c < config.vector_veto => false,
                Some(c) if score < threshold => c >= config.vector_accept,
                _ => score >= threshold,
            }
        };
        let mut ids: Vec<&String> = self.members.keys().collect();
        ids.sort();
        let index: HashMap<&str, usize> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect();
        let mut uf = UnionFind {
            parent: (0..ids.len()).collect(),
        };
        let mut degree: HashMap<&str, usize> = HashMap::new();
        for ((a, b), score) in &self.pairs {
            if accepted(a, b, *score) {
                *degree.entry(a.as_str()).or_default() += 1;
                *degree.entry(b.as_str()).or_default() += 1;
                if let (Some(&i), Some(&j)) = (index.get(a.as_str()), index.get(b.as_str())) {
                    uf.union(i, j);
                }
            }
        }
        let mut comps: HashMap<usize, Vec<&Member>> = HashMap::new();
        for (i, id) in ids.iter().enumerate() {
            if let Some(m) = self.members.get(*id) {
                let root = uf.find(i);
                comps.entry(root).or_default().push(m);
            }
        }
        let mut plan = Plan {
            entities: self.entities,
            comparisons: self.comparisons,
            ..Plan::default()
        };
        let normals: HashMap<&str, Normalised> = self
            .members
            .values()
            .map(|m| (m.id.as_str(), normalise(&m.name)))
            .collect();
        for (_, mut comp) in comps {
            if comp.len() < 2 {
                continue;
            }
            if comp.len() > config.max_group {
                plan.skipped_groups += 1;
                continue;
            }
            let deg = |m: &Member| degree.get(m.id.as_str()).copied().unwrap_or(0);
            comp.sort_by(|a, b| {
                b.mentions
                    .cmp(&a.mentions)
                    .then_with(|| deg(b).cmp(&deg(a)))
                    .then_with(|| a.name.cmp(&b.name))
                    .then_with(|| a.id.cmp(&b.id))
            });
            // Clusters of (member, score it joined with).
            let mut clusters: Vec<Vec<(&Member, f64)>> = Vec::new();
            for m in comp {
                let Some(mn) = normals.get(m.id.as_str()) else {
                    continue;
                };
                let mut placed = false;
                for cl in clusters.iter_mut() {
                    let mut best: Option<f64> = None;
                    let mut ruled_out = false;
                    for (o, _) in cl.iter() {
                        let Some(on) = normals.get(o.id.as_str()) else {
                            continue;
                        };
                        let c = compare(on, mn);
                        let vetoed = vec_cos(&o.id, &m.id).is_some_and(|v| v < config.vector_veto);
                        if c.reason.is_guard() || vetoed || o.entity_type != m.entity_type {
                            ruled_out = true;
                            break;
                        }
                        if c.reason != Reason::NoOverlap && accepted(&o.id, &m.id, c.score) {
                            best = Some(best.map_or(c.score, |b: f64| b.max(c.score)));
                        }
                    }
                    if let (false, Some(score)) = (ruled_out, best) {
                        cl.push((m, score));
                        placed = true;
                        break;
                    }
                }
                if !placed {
                    clusters.push(vec![(m, 1.0)]);
                }
            }
            for cl in clusters {
                let mut it = cl.into_iter();
                let Some((keep, _)) = it.next() else {
                    continue;
                };
                let merged: Vec<(String, String, f64)> =
                    it.map(|(m, s)| (m.id.clone(), m.name.clone(), s)).collect();
                if merged.is_empty() {
                    continue;
                }
                plan.groups.push(MergeGroup {
                    entity_type: keep.entity_type.clone(),
                    keep: keep.id.clone(),
                    name: keep.name.clone(),
                    merged,
                });
            }
        }
        plan.groups.sort_by(|a, b| {
            (&a.entity_type, &a.name, &a.keep).cmp(&(&b.entity_type, &b.name, &b.keep))
        });
        plan
    }
}

/// Resolves `candidates` in one call (blocking, matching, plan), with no
/// vectors: for tests and small sets.
pub fn resolve_all(
    config: &ResolveConfig,
    candidates: impl IntoIterator<Item = Candidate>,
) -> Result<Plan, ResolveError> {
    let mut r = Resolver::new(config.clone());
    for c in candidates {
        r.push(c)?;
    }
    Ok(r.finish()?.plan(config, &HashMap::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(id: &str, ty: &str, name: &str, mentions: u64) -> Candidate {
        Candidate {
            id: id.into(),
            entity_type: ty.into(),
            name: name.into(),
            mentions,
        }
    }

    #[test]
    fn chains_are_split_at_guards_and_the_most_mentioned_name_wins() {
        let plan = resolve_all(
            &ResolveConfig::default(),
            [
                cand("1", "Person", "John Smith", 5),
                cand("2", "Person", "J. Smith", 1),
                cand("3", "Person", "Jane Smith", 3),
                cand("4", "Person", "Smith, John", 2),
                cand("5", "Organization", "John Smith", 1),
            ],
        )
        .unwrap();
        assert_eq!(plan.groups.len(), 1, "{plan:#?}");
        let g = &plan.groups[0];
        assert_eq!((g.keep.as_str(), g.name.as_str()), ("1", "John Smith"));
        let mut ids: Vec<&str> = g.merged.iter().map(|m| m.0.as_str()).collect();
        ids.sort();
        assert_eq!(
            ids,
            vec!["2", "4"],
            "Jane stays apart, and so does the organisation"
        );
    }

    #[test]
    fn spilled_runs_give_the_same_plan() {
        let mut cands = Vec::new();
        for i in 0..300 {
            cands.push(cand(
                &format!("a{i}"),
                "Organization",
                &format!("Company{i} Corp"),
                2,
            ));
            cands.push(cand(
                &format!("b{i}"),
                "Organization",
                &format!("COMPANY{i} Corporation"),
                1,
            ));
            cands.push(cand(
                &format!("c{i}"),
                "Organization",
                &format!("Company{i} Cloud"),
                1,
            ));
        }
        let small = ResolveConfig {
            sort_buffer: 100,
            ..ResolveConfig::default()
        };
        let mut r = Resolver::new(small.clone());
        for c in cands.iter().cloned() {
            r.push(c).unwrap();
        }
        let m = r.finish().unwrap();
        assert!(m.spilled_runs > 5, "{} runs", m.spilled_runs);
        let spilled = m.plan(&small, &HashMap::new());
        let in_memory = resolve_all(&ResolveConfig::default(), cands).unwrap();
        assert_eq!(spilled.groups, in_memory.groups);
        assert_eq!(spilled.groups.len(), 300);
        assert!(spilled
            .groups
            .iter()
            .all(|g| g.merged.len() == 1 && g.keep.starts_with('a')));
    }

    #[test]
    fn vectors_veto_and_accept() {
        let config = ResolveConfig::default();
        let run = |vectors: HashMap<String, Vec<f32>>| {
            let mut r = Resolver::new(config.clone());
            r.push(cand("1", "Person", "John Fitzgerald Kennedy", 3))
                .unwrap();
            r.push(cand("2", "Person", "John F. Kennedy", 1)).unwrap();
            r.finish().unwrap().plan(&config, &vectors)
        };
        assert_eq!(run(HashMap::new()).groups.len(), 1);
        let far = HashMap::from([
            ("1".to_string(), vec![1.0, 0.0]),
            ("2".to_string(), vec![0.0, 1.0]),
        ]);
        assert_eq!(run(far).groups.len(), 0, "orthogonal descriptions veto");
    }

    #[test]
    fn touched_restricts_pairs() {
        let config = ResolveConfig::default();
        let mut r = Resolver::new(config.clone());
        r.restrict_to(|id: &str| id == "3");
        for c in [
            cand("1", "Organization", "Acme Corp", 1),
            cand("2", "Organization", "ACME Corporation", 1),
            cand("3", "Organization", "Globex Inc", 1),
            cand("4", "Organization", "Globex", 1),
        ] {
            r.push(c).unwrap();
        }
        let plan = r.finish().unwrap().plan(&config, &HashMap::new());
        assert_eq!(plan.groups.len(), 1);
        assert!(plan.groups[0].keep == "3" || plan.groups[0].merged[0].0 == "3");
    }
}
