//! Citations in an answer: `[n]` markers (also `[n, m]` and `[n-m]`),
//! resolved to the prompt's sources; numbers that point at no source are
//! flagged, never shown as real.

use serde::Serialize;

use crate::prompt::Source;

/// What an answer cites.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Cited {
    /// Sources cited, in order of first citation.
    pub sources: Vec<Source>,
    /// Numbers cited that are no source of the prompt (sorted, once each).
    pub invalid: Vec<usize>,
}

/// The numbers cited in `answer`, in order of appearance, each once.
pub fn cited_numbers(answer: &str) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::new();
    let mut rest = answer;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        let Some(close) = after.find(']') else { break };
        let inside = &after[..close];
        if !inside.is_empty()
            && inside.len() <= 40
            && inside
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, ',' | ' ' | '-' | '\u{2013}'))
        {
            for part in inside.split(',') {
                let part = part.trim();
                let range: Vec<&str> = part.split(['-', '\u{2013}']).map(str::trim).collect();
                let nums: Vec<usize> = range.iter().filter_map(|p| p.parse().ok()).collect();
                let expanded: Vec<usize> = match nums.as_slice() {
                    [a] => vec![*a],
                    [a, b] if a <= b && b - a < 20 => (*a..=*b).collect(),
                    _ => Vec::new(),
                };
                for n in expanded {
                    if !out.contains(&n) {
                        out.push(n);
                    }
                }
            }
        }
        rest = &after[close..];
    }
    out
}

/// Resolves `answer`'s citations against `sources`.
pub fn resolve(answer: &str, sources: &[Source]) -> Cited {
    let mut cited = Cited::default();
    for n in cited_numbers(answer) {
        match sources.iter().find(|s| s.number == n) {
            Some(s) => cited.sources.push(s.clone()),
            None => cited.invalid.push(n),
        }
    }
    cited.invalid.sort_unstable();
    cited
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(n: usize) -> Source {
        Source {
            number: n,
            chunk_id: format!("c{n}"),
            path: "/d/a.pdf".into(),
            title: None,
            page_start: Some(3),
            page_end: Some(4),
            score: 1.0,
            text: "t".into(),
        }
    }

    #[test]
    fn markers_are_read_and_resolved() {
        assert_eq!(
            cited_numbers("a [2] b [1, 3] c [4-5] d [x] e [2]"),
            [2, 1, 3, 4, 5]
        );
        let c = resolve("Yes [1][9].", &[source(1), source(2)]);
        assert_eq!(c.sources.len(), 1);
        assert_eq!(c.invalid, [9]);
        assert_eq!(c.sources[0].reference(), "/d/a.pdf p. 3\u{2013}4 (c1)");
    }
}
