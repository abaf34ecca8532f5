//! Whether two names of one type are spellings of one entity.
//!
//! [`compare`] aligns the tokens of two [`Normalised`] names, order-free:
//! first equal tokens; then a short token of 2 to 4 letters with a run of
//! as many words of the other name it is the initials of ("JRR" ~ "John
//! Ronald Reuel", "VS" ~ "Visual Studio"); then the remaining tokens one to
//! one, best first:
//!
//! | tokens | similarity |
//! |---|---|
//! | equal | 1.0 |
//! | a single letter and a word it begins ("J" ~ "John") | 0.85 |
//! | an abbreviation (written with a dot, or 2–4 letters without a vowel) and a word with its letters in order ("Inst." ~ "Institute", "St" ~ "Saint") | 0.85 |
//! | a typo: same first letter, 6+ letters, one edit (two from 10 letters) | 1 − 0.1 × edits |
//!
//! The score is the sum of the aligned tokens' similarities on both sides
//! over the tokens of both names, where a token counts 1 except the
//! unaligned tokens of the longer name that the rules below allow: an
//! initial, a stop word or a middle word counts 0.25.
//!
//! Guards come before any score, and no threshold overrides them:
//! - **numbers**: the names' numbers (digits, versions, Roman numerals)
//!   must be the same ("Debian 11" ≠ "Debian 12", "Python 2" ≠ "Python 3",
//!   "Python" ≠ "Python 3");
//! - **distinct words on both sides**: when each name keeps a word the
//!   other lacks, they are different ("John Smith" ≠ "John Brown":
//!   a shared first name alone never merges; "Microsoft Word" ≠
//!   "Microsoft Excel");
//! - **an extra word**: the longer name may have extra initials and stop
//!   words anywhere, and extra words only in the middle, with its first
//!   and last aligned and no function words in either name ("Barack
//!   Hussein Obama" = "Barack Obama", but "University of Southern
//!   California" ≠ "University of California"); an extra word at either
//!   end is a different thing ("Google Cloud" ≠ "Google", "John Smith" ≠
//!   "John"); and a one-word name never matches a longer one
//!   ("Tolkien" ≠ "J. R. R. Tolkien").
//!
//! Two shortcuts score 1.0 and 0.9: the same letters with the spaces
//! removed ("Coca-Cola" = "CocaCola", "JRR Tolkien" = "J.R.R. Tolkien"), and
//! an acronym of three letters or more that is the initials of the other
//! name's words without stop words ("NASA", "JFK").

use crate::normalise::{Normalised, STOP_WORDS};

/// Similarity of an initial to a word starting with it.
pub const INITIAL_SIMILARITY: f64 = 0.85;
/// Score of an acronym against the name it abbreviates.
pub const ACRONYM_SCORE: f64 = 0.9;
/// Weight of an unaligned initial of the longer name.
const EXTRA_INITIAL_WEIGHT: f64 = 0.25;
/// Weight of an unaligned middle word of the longer name.
const EXTRA_MIDDLE_WEIGHT: f64 = 0.25;

/// Why two names are, or are not, one entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Same tokens (after normalisation).
    Identical,
    /// Same letters once spaces are removed.
    Compact,
    /// One is the acronym of the other.
    Acronym,
    /// Aligned tokens scored.
    Tokens,
    /// The numbers differ.
    NumbersDiffer,
    /// Each name has a word the other lacks.
    DistinctWords,
    /// The longer name has an extra word the rules do not allow (at its
    /// start or end, or in a name with function words).
    ExtraWord,
    /// Nothing aligned.
    NoOverlap,
}

impl Reason {
    /// Whether this reason rules a merge out whatever the threshold (a
    /// group holding two names with such a reason is split).
    pub fn is_guard(self) -> bool {
        matches!(
            self,
            Self::NumbersDiffer | Self::DistinctWords | Self::ExtraWord
        )
    }
}

/// The score of a pair and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    /// 0..=1; 0 when a guard applies.
    pub score: f64,
    /// What decided it.
    pub reason: Reason,
}

impl Comparison {
    fn guard(reason: Reason) -> Self {
        Self { score: 0.0, reason }
    }
}

/// Optimal string alignment distance (edits, with adjacent
/// transpositions), stopping early past `max`.
fn edit_distance(a: &[char], b: &[char], max: usize) -> usize {
    if a.len().abs_diff(b.len()) > max {
        return max + 1;
    }
    let w = b.len() + 1;
    let mut prev2 = vec![0usize; w];
    let mut prev: Vec<usize> = (0..w).collect();
    let mut cur = vec![0usize; w];
    for i in 1..=a.len() {
        cur[0] = i;
        let mut row_min = cur[0];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(prev2[j - 2] + 1);
            }
            cur[j] = v;
            row_min = row_min.min(v);
        }
        if row_min > max {
            return max + 1;
        }
        std::mem::swap(&mut prev2, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

fn is_vowel(c: char) -> bool {
    matches!(c, 'a' | 'e' | 'i' | 'o' | 'u' | 'y')
}

/// Whether `short` reads as an abbreviation of `long`: written with a dot,
/// or two to four letters without a vowel ("St", "Mt", "MS", "Inst."),
/// with the same first letter and its letters in order in `long`.
fn abbreviates(short: &[char], short_dotted: bool, long: &[char]) -> bool {
    let looks_abbreviated = short_dotted
        || (2..=4).contains(&short.len())
            && short.iter().all(|c| c.is_alphabetic() && !is_vowel(*c));
    if !looks_abbreviated
        || short.len() < 2
        || long.len() <= short.len()
        || short.first() != long.first()
    {
        return false;
    }
    let mut it = long.iter();
    short.iter().all(|c| it.any(|l| l == c))
}

/// Similarity of two tokens (see the module docs); 0 when unrelated.
/// `a_dotted`, `b_dotted`: the token was written as an abbreviation.
pub fn token_similarity(a: &str, a_dotted: bool, b: &str, b_dotted: bool) -> f64 {
    if a == b {
        return 1.0;
    }
    let (ac, bc): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let ((short, short_dotted), long) = if ac.len() <= bc.len() {
        ((&ac, a_dotted), &bc)
    } else {
        ((&bc, b_dotted), &ac)
    };
    if short.len() == 1 && short[0].is_alphabetic() && long.first() == short.first() {
        return INITIAL_SIMILARITY;
    }
    // Numbers are compared by the number guard, never fuzzily.
    if ac.iter().any(char::is_ascii_digit) || bc.iter().any(char::is_ascii_digit) {
        return 0.0;
    }
    if abbreviates(short, short_dotted, long) {
        return INITIAL_SIMILARITY;
    }
    if short.len() >= 6 && ac.first() == bc.first() {
        let max = if short.len() >= 10 { 2 } else { 1 };
        let d = edit_distance(&ac, &bc, max);
        if d <= max {
            return 1.0 - 0.1 * d as f64;
        }
    }
    0.0
}

fn acronym_of(short: &Normalised, long: &Normalised) -> bool {
    if short.tokens.len() != 1 || long.content_tokens().count() < 3 {
        return false;
    }
    let Some(t) = short.tokens.first() else {
        return false;
    };
    t.chars().count() >= 3 && t.chars().all(char::is_alphabetic) && *t == long.initials()
}

/// Aligns a short all-letter token of `x` (2 to 4 letters) with a run of
/// as many consecutive words of `y` that it is the initials of ("JRR" ~
/// "John Ronald Reuel", "VS" ~ "Visual Studio"), marking both sides.
fn align_initial_runs(x: &Normalised, y: &Normalised, cov_x: &mut [f64], cov_y: &mut [f64]) {
    for (i, t) in x.tokens.iter().enumerate() {
        let letters: Vec<char> = t.chars().collect();
        if cov_x[i] > 0.0
            || !(2..=4).contains(&letters.len())
            || !letters.iter().all(|c| c.is_alphabetic())
            || y.tokens.contains(t)
        {
            continue;
        }
        let k = letters.len();
        if y.tokens.len() < k {
            continue;
        }
        for start in 0..=y.tokens.len() - k {
            let run = start..start + k;
            let fits = run.clone().zip(&letters).all(|(j, l)| {
                cov_y[j] == 0.0 && y.tokens[j].chars().count() >= 2 && y.tokens[j].starts_with(*l)
            });
            if fits {
                cov_x[i] = INITIAL_SIMILARITY;
                for j in run {
                    cov_y[j] = INITIAL_SIMILARITY;
                }
                break;
            }
        }
    }
}

/// Compares two normalised names (of one type: types are the caller's).
/// When exactly one of them has a part in parentheses, its alternatives
/// (without the part; the part alone) are compared too and the best
/// match counts ("Visual Studio Code (VS Code)" = "VSCode"; but "Mercury
/// (planet)" ≠ "Mercury (element)").
pub fn compare(a: &Normalised, b: &Normalised) -> Comparison {
    let plain = compare_plain(a, b);
    let (with, without) = match (a.alternatives.is_empty(), b.alternatives.is_empty()) {
        (false, true) => (a, b),
        (true, false) => (b, a),
        _ => return plain,
    };
    with.alternatives
        .iter()
        .map(|alt| compare_plain(alt, without))
        .filter(|c| !c.reason.is_guard() && c.score > 0.0)
        .chain(std::iter::once(plain))
        .max_by(|x, y| x.score.total_cmp(&y.score))
        .unwrap_or(plain)
}

fn compare_plain(a: &Normalised, b: &Normalised) -> Comparison {
    if a.tokens.is_empty() || b.tokens.is_empty() {
        return Comparison::guard(Reason::NoOverlap);
    }
    if a.numbers != b.numbers {
        return Comparison::guard(Reason::NumbersDiffer);
    }
    if a.tokens == b.tokens {
        return Comparison {
            score: 1.0,
            reason: Reason::Identical,
        };
    }
    if a.compact() == b.compact() {
        return Comparison {
            score: 1.0,
            reason: Reason::Compact,
        };
    }
    if acronym_of(a, b) || acronym_of(b, a) {
        return Comparison {
            score: ACRONYM_SCORE,
            reason: Reason::Acronym,
        };
    }
    // Coverage of each token by the alignment (0: unaligned).
    let mut cov_a = vec![0.0; a.tokens.len()];
    let mut cov_b = vec![0.0; b.tokens.len()];
    // Greedy one-to-one alignment, best pairs first (ties: earlier positions).
    let dotted = |n: &Normalised, i: usize| n.abbrev.get(i).copied().unwrap_or(false);
    let mut pairs: Vec<(f64, usize, usize)> = Vec::new();
    for (i, x) in a.tokens.iter().enumerate() {
        for (j, y) in b.tokens.iter().enumerate() {
            let s = token_similarity(x, dotted(a, i), y, dotted(b, j));
            if s > 0.0 {
                pairs.push((s, i, j));
            }
        }
    }
    pairs.sort_by(|p, q| q.0.total_cmp(&p.0).then((p.1, p.2).cmp(&(q.1, q.2))));
    for (s, i, j) in pairs {
        if s < 1.0 {
            // Exact tokens first; then initial runs get their chance
            // before single initials and typos.
            break;
        }
        if cov_a[i] == 0.0 && cov_b[j] == 0.0 {
            cov_a[i] = s;
            cov_b[j] = s;
        }
    }
    align_initial_runs(a, b, &mut cov_a, &mut cov_b);
    align_initial_runs(b, a, &mut cov_b, &mut cov_a);
    let mut pairs: Vec<(f64, usize, usize)> = Vec::new();
    for (i, x) in a.tokens.iter().enumerate() {
        for (j, y) in b.tokens.iter().enumerate() {
            if cov_a[i] == 0.0 && cov_b[j] == 0.0 {
                let s = token_similarity(x, dotted(a, i), y, dotted(b, j));
                if s > 0.0 {
                    pairs.push((s, i, j));
                }
            }
        }
    }
    pairs.sort_by(|p, q| q.0.total_cmp(&p.0).then((p.1, p.2).cmp(&(q.1, q.2))));
    for (s, i, j) in pairs {
        if cov_a[i] == 0.0 && cov_b[j] == 0.0 {
            cov_a[i] = s;
            cov_b[j] = s;
        }
    }
    // Initials and abbreviations alone are no evidence: at least one word
    // must align as a word ("N" ~ "Nestlé" is not enough).
    if !cov_a.iter().any(|c| *c >= 0.9) {
        return Comparison::guard(Reason::NoOverlap);
    }
    let aligned_a = cov_a.iter().filter(|c| **c > 0.0).count();
    let aligned_b = cov_b.iter().filter(|c| **c > 0.0).count();
    if aligned_a == 0 {
        return Comparison::guard(Reason::NoOverlap);
    }
    let free = |cov: &[f64]| -> Vec<usize> { (0..cov.len()).filter(|&i| cov[i] == 0.0).collect() };
    let (free_a, free_b) = (free(&cov_a), free(&cov_b));
    let is_word = |t: &String| t.chars().count() > 1 && !STOP_WORDS.contains(&t.as_str());
    let words_a = free_a.iter().any(|&i| is_word(&a.tokens[i]));
    let words_b = free_b.iter().any(|&j| is_word(&b.tokens[j]));
    if words_a && words_b {
        return Comparison::guard(Reason::DistinctWords);
    }
    // The side with extra tokens (if any).
    let (extra, extra_free, aligned_short) = if free_a.is_empty() {
        (b, &free_b, aligned_a)
    } else {
        (a, &free_a, aligned_b)
    };
    // A one-word name against a longer one ("Tolkien", "J. R. R. Tolkien";
    // "Smith", "John Smith") is too ambiguous, whatever the extras are.
    if !extra_free.is_empty() && aligned_short < 2 {
        return Comparison::guard(Reason::ExtraWord);
    }
    // Names built with function words ("University of California") take
    // no extra word in the middle: there it is a qualifier.
    let has_stop_words = a
        .tokens
        .iter()
        .chain(&b.tokens)
        .any(|t| STOP_WORDS.contains(&t.as_str()));
    let last = extra.tokens.len() - 1;
    let mut discount = 0.0;
    for &k in extra_free {
        let t = &extra.tokens[k];
        if t.chars().count() == 1 || STOP_WORDS.contains(&t.as_str()) {
            discount += 1.0 - EXTRA_INITIAL_WEIGHT;
        } else if k == 0 || k == last || has_stop_words {
            return Comparison::guard(Reason::ExtraWord);
        } else {
            discount += 1.0 - EXTRA_MIDDLE_WEIGHT;
        }
    }
    let weight = (a.tokens.len() + b.tokens.len()) as f64 - discount;
    let covered: f64 = cov_a.iter().chain(&cov_b).sum();
    Comparison {
        score: (covered / weight).min(1.0),
        reason: Reason::Tokens,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalise::normalise;

    fn cmp(a: &str, b: &str) -> Comparison {
        let c = compare(&normalise(a), &normalise(b));
        let d = compare(&normalise(b), &normalise(a));
        assert_eq!(c.reason, d.reason, "{a} / {b} symmetric");
        assert!((c.score - d.score).abs() < 1e-9, "{a} / {b} symmetric");
        c
    }

    #[test]
    fn spelling_variants_score_high() {
        for (a, b) in [
            ("J. R. R. Tolkien", "J.R.R. Tolkien"),
            ("Acme Corp", "ACME Corporation"),
            ("Zürich", "Zurich"),
            ("Coca-Cola", "CocaCola"),
            ("JRR Tolkien", "J.R.R. Tolkien"),
            ("NASA", "National Aeronautics and Space Administration"),
            ("John F. Kennedy", "John Kennedy"),
            ("John F. Kennedy", "John Fitzgerald Kennedy"),
            ("Smith, John", "John Smith"),
            ("J.R.R. Tolkein", "J.R.R. Tolkien"),
            ("Barack Hussein Obama", "Barack Obama"),
            ("JRR Tolkien", "John Ronald Reuel Tolkien"),
            ("VS Code", "Visual Studio Code"),
            ("St. Petersburg", "Saint Petersburg"),
            (
                "Massachusetts Inst. of Technology",
                "Massachusetts Institute of Technology",
            ),
            ("Python3", "Python 3"),
            ("Visual Studio Code (VS Code)", "VSCode"),
            ("Debian 11 (bullseye)", "Debian 11"),
        ] {
            let c = cmp(a, b);
            assert!(c.score >= 0.85, "{a} / {b}: {c:?}");
        }
    }

    #[test]
    fn guards_hold() {
        for (a, b, reason) in [
            ("Debian 11", "Debian 12", Reason::NumbersDiffer),
            ("Python 2", "Python 3", Reason::NumbersDiffer),
            ("Python", "Python 3", Reason::NumbersDiffer),
            ("World War I", "World War II", Reason::NumbersDiffer),
            ("John Smith", "John Brown", Reason::DistinctWords),
            ("Microsoft Word", "Microsoft Excel", Reason::DistinctWords),
            ("Google", "Google Cloud", Reason::ExtraWord),
            ("John", "John Smith", Reason::ExtraWord),
            ("Tolkien", "J.R.R. Tolkien", Reason::ExtraWord),
            ("Austria", "Australia", Reason::NoOverlap),
            ("C", "C++", Reason::ExtraWord),
            ("N.", "Nestle", Reason::NoOverlap),
            (
                "Mercury (planet)",
                "Mercury (element)",
                Reason::DistinctWords,
            ),
            (
                "University of California",
                "University of Southern California",
                Reason::ExtraWord,
            ),
        ] {
            let c = cmp(a, b);
            assert_eq!(c.reason, reason, "{a} / {b}: {c:?}");
            assert_eq!(c.score, 0.0);
            assert!(reason.is_guard() || reason == Reason::NoOverlap);
        }
    }

    #[test]
    fn edit_distance_counts_transpositions() {
        let c = |s: &str| s.chars().collect::<Vec<_>>();
        assert_eq!(edit_distance(&c("tolkein"), &c("tolkien"), 2), 1);
        assert_eq!(edit_distance(&c("austria"), &c("australia"), 2), 2);
        assert_eq!(edit_distance(&c("abc"), &c("xyz"), 1), 2);
        assert_eq!(token_similarity("sweeden", false, "sweden", false), 0.9);
        assert_eq!(
            token_similarity("intel", false, "intex", false),
            0.0,
            "too short for a typo"
        );
        assert_eq!(
            token_similarity("st", false, "saint", false),
            INITIAL_SIMILARITY
        );
        assert_eq!(
            token_similarity("inst", true, "institute", false),
            INITIAL_SIMILARITY
        );
        assert_eq!(
            token_similarity("inst", false, "institute", false),
            0.0,
            "has a vowel, no dot"
        );
    }
}
