//! kg-resolve: entity resolution beyond exact names.
//!
//! Two mentions with the same [`kg_core::EntityId`] (type plus
//! [`kg_core::entity_key`] of the name) are one entity as soon as they are
//! extracted. This crate finds the entities of one type whose names are
//! still spellings of one thing ("J. R. R. Tolkien" and "JRR Tolkien",
//! "Acme Corp" and "ACME Corporation", "Zürich" and "Zurich", "NASA" and
//! "National Aeronautics and Space Administration") and plans their merges.
//! It is pure logic over names: no database, no network. The store applies
//! the plan (kg-store's `GraphStore::merge_entities`), the CLI wires the two
//! (`kg resolve`, and a step of `kg run`).
//!
//! - [`normalise`]: names as tokens (diacritics, punctuation, initials,
//!   corporate suffixes) and their numbers;
//! - [`similarity`]: the score of two names and the guards no threshold
//!   overrides (numbers and versions, a shared first name alone, an extra
//!   word at either end);
//! - [`resolver`]: sorted-neighbourhood blocking over a stream with
//!   bounded memory, matching, union-find and the [`Plan`];
//! - [`eval`]: the labelled set format and pairwise precision and recall.
//!
//! ```
//! use kg_resolve::{resolve_all, Candidate, ResolveConfig};
//! let c = |id: &str, name: &str, mentions| Candidate {
//!     id: id.into(),
//!     entity_type: "Person".into(),
//!     name: name.into(),
//!     mentions,
//! };
//! let plan = resolve_all(
//!     &ResolveConfig::default(),
//!     [c("a", "J. R. R. Tolkien", 3), c("b", "JRR Tolkien", 1), c("c", "John Brown", 1)],
//! )
//! .unwrap();
//! assert_eq!(plan.groups.len(), 1);
//! assert_eq!(plan.groups[0].name, "J. R. R. Tolkien");
//! assert_eq!(plan.groups[0].merged[0].0, "b");
//! ```

#![warn(missing_docs)]

pub mod eval;
pub mod normalise;
pub mod resolver;
pub mod similarity;

use serde::{Deserialize, Serialize};

pub use normalise::{normalise, Normalised};
pub use resolver::{resolve_all, BlockingKey, Candidate, Matches, MergeGroup, Plan, Resolver};
pub use similarity::{compare, Comparison, Reason};

/// What resolution does (kg.toml `[resolve] mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// No resolution step at all.
    Off,
    /// Only the exact key ([`kg_core::entity_key`]) that extraction applies.
    Exact,
    /// The exact key, then near-duplicate names (this crate).
    #[default]
    Fuzzy,
}

/// Resolution settings (kg.toml `[resolve]`). The defaults are the ones
/// measured on the labelled set in `eval/resolution/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResolveConfig {
    /// `off`, `exact` or `fuzzy` (default).
    pub mode: Mode,
    /// The name score at or above which two names of one type match
    /// (0..=1, default 0.85).
    pub threshold: f64,
    /// Key records each new one is compared with in the sorted stream
    /// (default 30).
    pub window: usize,
    /// Entity vectors (name + description) below this cosine veto a match
    /// (default 0.5).
    pub vector_veto: f32,
    /// A pair up to `vector_margin` below the threshold matches when its
    /// vectors are at least this close (default 0.9).
    pub vector_accept: f32,
    /// How far below the threshold vectors may rescue a pair (default 0.1).
    pub vector_margin: f64,
    /// Key records sorted in memory before a run is spilled to a temporary
    /// file (default 65,536: four per entity).
    pub sort_buffer: usize,
    /// Groups with more members are left alone and reported (default 1,000).
    pub max_group: usize,
}

impl Default for ResolveConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Fuzzy,
            threshold: 0.85,
            window: 30,
            vector_veto: 0.5,
            vector_accept: 0.9,
            vector_margin: 0.1,
            sort_buffer: 65_536,
            max_group: 1_000,
        }
    }
}

/// What can go wrong: only the temporary files of the external sort.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Writing or reading a spilled run.
    #[error("resolution sort file: {0}")]
    Io(#[from] std::io::Error),
    /// A spilled run did not read back.
    #[error("resolution sort file is corrupt: {0}")]
    Corrupt(#[from] serde_json::Error),
}
