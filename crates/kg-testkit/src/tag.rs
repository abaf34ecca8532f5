//! Unique run tags: isolation between tests that share one database.
//!
//! Tests run in parallel (nextest runs every test in its own process) against
//! one server, and the server outlives them. Each test stamps what it writes
//! with its own tag, and filters what it reads by it, so neither a parallel
//! test nor yesterday's run can change its results. The tag combines the
//! test's name (to find leftovers by eye), the process id, the time and a
//! per-process counter: unique across processes and across runs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A tag unique to one test run, made of `[A-Za-z0-9_]` only and starting
/// with a letter, so it also fits in a label or a property key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RunTag(String);

impl RunTag {
    /// A fresh tag for the test `name` (characters outside `[A-Za-z0-9_]`
    /// become `_`; the name is cut at 40 characters).
    pub fn new(name: &str) -> Self {
        let clean: String = name
            .chars()
            .take(40)
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        Self(format!(
            "t_{clean}_{}_{nanos:x}_{count}",
            std::process::id()
        ))
    }

    /// The tag.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `prefix` made unique to this run (`"{prefix}_{tag}"`): for ids and
    /// names that must not collide with another test's.
    pub fn scoped(&self, prefix: &str) -> String {
        format!("{prefix}_{}", self.0)
    }
}

impl std::fmt::Display for RunTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn tags_are_unique_within_a_process() {
        let tags: HashSet<RunTag> = (0..1000).map(|_| RunTag::new("same_name")).collect();
        assert_eq!(tags.len(), 1000);
    }

    #[test]
    fn tags_are_identifier_safe_and_keep_the_name() {
        let tag = RunTag::new("store::writes a-batch (über)");
        let text = tag.as_str();
        assert!(
            text.starts_with("t_store__writes_a_batch___ber__"),
            "{text}"
        );
        assert!(
            text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{text}"
        );
        assert!(text.contains(&std::process::id().to_string()));
        assert_eq!(tag.scoped("doc"), format!("doc_{text}"));
    }

    #[test]
    fn long_names_are_cut() {
        let tag = RunTag::new(&"x".repeat(500));
        assert!(tag.as_str().len() < 100, "{tag}");
    }
}
