//! Names normalised for comparison.
//!
//! A name becomes a list of lower-case ASCII-folded tokens: diacritics are
//! dropped (NFKD, combining marks removed, plus the letters NFKD does not
//! split: ß, æ, ø, ł, đ, þ), apostrophes vanish ("McDonald's" =
//! "McDonalds"), `&` reads "and", `+` and `#` are kept as words ("C++" is
//! not "C"), every other punctuation mark separates tokens, so "J.R.R."
//! and "J. R. R." both give `j r r`. A leading "the" and trailing corporate
//! suffixes ("Inc.", "Corp", "Corporation", "GmbH", ...) are dropped
//! while a token remains. Tokens with a digit, and Roman numerals of two
//! letters or more, are also kept apart as the name's *numbers*: two names
//! whose numbers differ are never the same entity. A part in parentheses
//! gives two alternatives, the name without it and the part alone, which
//! [`crate::compare`] tries against a name without one.

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// Corporate suffixes dropped at the end of a name.
pub const CORPORATE_SUFFIXES: &[&str] = &[
    "inc",
    "incorporated",
    "corp",
    "corporation",
    "co",
    "company",
    "ltd",
    "limited",
    "llc",
    "llp",
    "lp",
    "plc",
    "gmbh",
    "ag",
    "sa",
    "sas",
    "spa",
    "srl",
    "bv",
    "nv",
    "oy",
    "oyj",
    "ab",
    "asa",
    "kk",
    "pty",
    "pte",
];

/// Words that do not count for initials, acronyms or blocking.
pub const STOP_WORDS: &[&str] = &[
    "of", "the", "and", "for", "a", "an", "in", "on", "at", "de", "la", "le", "du", "des", "der",
    "und", "et", "von", "van", "del", "di",
];

const ROMAN: &[&str] = &[
    "ii", "iii", "iv", "vi", "vii", "viii", "ix", "xi", "xii", "xiii", "xiv", "xv", "xvi", "xx",
];

/// A name ready for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalised {
    /// The tokens, in order (numbers included).
    pub tokens: Vec<String>,
    /// Per token: written as an abbreviation ("Inst.", "St.").
    pub abbrev: Vec<bool>,
    /// The numbers (tokens with a digit, with `v` prefixes and `.0` tails
    /// dropped; Roman numerals), sorted.
    pub numbers: Vec<String>,
    /// For a name with a part in parentheses ("Visual Studio Code (VS
    /// Code)", "Debian 11 (bullseye)"): the name without it, and the part
    /// alone. Empty otherwise.
    pub alternatives: Vec<Normalised>,
}

impl Normalised {
    /// The tokens joined with no separator ("Coca-Cola" and "CocaCola" agree).
    pub fn compact(&self) -> String {
        self.tokens.concat()
    }

    /// The tokens joined with one space.
    pub fn joined(&self) -> String {
        self.tokens.join(" ")
    }

    /// Tokens that are not stop words.
    pub fn content_tokens(&self) -> impl Iterator<Item = &str> {
        self.tokens
            .iter()
            .map(String::as_str)
            .filter(|t| !STOP_WORDS.contains(t))
    }

    /// The first letters of the content tokens ("nasa" for "National
    /// Aeronautics and Space Administration"; "jfk" for "John F. Kennedy").
    pub fn initials(&self) -> String {
        self.content_tokens()
            .filter_map(|t| t.chars().next())
            .collect()
    }
}

fn fold_char(c: char, out: &mut String) {
    match c {
        'ß' => out.push_str("ss"),
        'æ' | 'Æ' => out.push_str("ae"),
        'œ' | 'Œ' => out.push_str("oe"),
        'ø' | 'Ø' => out.push('o'),
        'ł' | 'Ł' => out.push('l'),
        'đ' | 'Đ' => out.push('d'),
        'þ' | 'Þ' => out.push_str("th"),
        'ı' => out.push('i'),
        '\'' | '’' | '‘' | '`' | '´' => {}
        '&' => out.push_str(" and "),
        '+' => out.push_str(" plus "),
        '#' => out.push_str(" sharp "),
        c if c.is_alphanumeric() => out.extend(c.to_lowercase()),
        // Dots mark abbreviations and version numbers ("3.11").
        '.' => out.push('.'),
        _ => out.push(' '),
    }
}

fn is_number(token: &str) -> bool {
    token.chars().any(|c| c.is_ascii_digit()) || ROMAN.contains(&token)
}

fn number_form(token: &str) -> String {
    let t = token
        .strip_prefix('v')
        .filter(|r| r.starts_with(|c: char| c.is_ascii_digit()));
    let mut t = t.unwrap_or(token).to_owned();
    while let Some(rest) = t.strip_suffix(".0") {
        t = rest.to_owned();
    }
    t
}

/// Splits a whitespace-separated chunk into tokens with their
/// abbreviation flag (a word followed by a dot that ends the chunk:
/// "Inst.", "St."; not "Node" in "Node.js").
fn split_chunk(chunk: &str, out: &mut Vec<(String, bool)>) {
    let numeric = |s: &str| s.chars().all(|c| c.is_ascii_digit() || c == '.');
    if numeric(chunk) {
        let t = chunk.trim_matches('.');
        if !t.is_empty() {
            out.push((t.to_owned(), false));
        }
        return;
    }
    // A word glued to a version: "python3.11", "v3.11".
    let alpha: String = chunk.chars().take_while(|c| c.is_alphabetic()).collect();
    let rest = &chunk[alpha.len()..];
    if !alpha.is_empty() && rest.starts_with(|c: char| c.is_ascii_digit()) && numeric(rest) {
        if alpha.chars().count() >= 2 {
            out.push((alpha, false));
        } else if alpha != "v" {
            out.push((chunk.trim_end_matches('.').to_owned(), false));
            return;
        }
        split_chunk(rest, out);
        return;
    }
    let parts: Vec<&str> = chunk.split('.').collect();
    let n = parts.len();
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            continue;
        }
        // Followed by a dot, and nothing but dots after it.
        let abbrev = i + 1 < n
            && parts
                .get(i + 1..)
                .is_some_and(|r| r.iter().all(|p| p.is_empty()));
        split_letters_digits(part, abbrev, out);
    }
}

/// "python3" → "python" "3", "windows10" → "windows" "10", "v3" → "3";
/// a single letter before digits stays ("x86").
fn split_letters_digits(word: &str, abbrev: bool, out: &mut Vec<(String, bool)>) {
    let alpha: String = word.chars().take_while(|c| c.is_alphabetic()).collect();
    let rest = &word[alpha.len()..];
    if !alpha.is_empty() && rest.starts_with(|c: char| c.is_ascii_digit()) {
        if alpha == "v" {
            out.push((rest.to_owned(), false));
            return;
        }
        if alpha.chars().count() >= 2 {
            out.push((alpha, false));
            out.push((rest.to_owned(), abbrev));
            return;
        }
    }
    out.push((word.to_owned(), abbrev));
}

/// The name without its parenthesised part, and that part, when it has
/// one with text on both sides of the opening parenthesis or before it.
fn parenthesised(name: &str) -> Option<(String, String)> {
    let open = name.find('(')?;
    let close = open + name.get(open..)?.find(')')?;
    let inner = name.get(open + 1..close)?.trim();
    let base = format!("{} {}", name.get(..open)?, name.get(close + 1..)?);
    (!inner.is_empty() && !base.trim().is_empty())
        .then(|| (base.trim().to_owned(), inner.to_owned()))
}

/// Normalises `name` (see the module docs).
pub fn normalise(name: &str) -> Normalised {
    let mut n = normalise_plain(name);
    if let Some((base, inner)) = parenthesised(name) {
        n.alternatives = vec![normalise_plain(&base), normalise_plain(&inner)];
    }
    n
}

fn normalise_plain(name: &str) -> Normalised {
    let mut folded = String::with_capacity(name.len());
    for c in name.nfkd().filter(|c| !is_combining_mark(*c)) {
        fold_char(c, &mut folded);
    }
    let mut toks: Vec<(String, bool)> = Vec::new();
    for chunk in folded.split_whitespace() {
        split_chunk(chunk, &mut toks);
    }
    loop {
        let before = toks.len();
        if toks.len() > 1
            && toks
                .last()
                .is_some_and(|t| CORPORATE_SUFFIXES.contains(&t.0.as_str()))
        {
            toks.pop();
        }
        // A dotted suffix: "S.A.", "N.V.", "A.G." are single letters.
        let singles = toks
            .iter()
            .rev()
            .take_while(|t| t.0.chars().count() == 1)
            .count();
        for k in (2..=singles.min(3)).rev() {
            let start = toks.len() - k;
            let joined: String = toks[start..].iter().map(|t| t.0.as_str()).collect();
            // Only after a word: "N.A.S.A." is no "N" with a suffix "ASA".
            let after_word = start > 0 && toks[start - 1].0.chars().count() > 1;
            if after_word && CORPORATE_SUFFIXES.contains(&joined.as_str()) {
                toks.truncate(start);
                break;
            }
        }
        // "& Co." at the end: "and" left alone after dropping "co".
        if toks.len() > 1 && toks.last().is_some_and(|t| t.0 == "and") {
            toks.pop();
        }
        if toks.len() == before {
            break;
        }
    }
    if toks.len() > 1 && toks.first().is_some_and(|t| t.0 == "the") {
        toks.remove(0);
    }
    let (tokens, abbrev): (Vec<String>, Vec<bool>) = toks.into_iter().unzip();
    let mut numbers: Vec<String> = tokens
        .iter()
        .filter(|t| is_number(t))
        .map(|t| number_form(t))
        .collect();
    numbers.sort();
    Normalised {
        tokens,
        abbrev,
        numbers,
        alternatives: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<String> {
        normalise(s).tokens
    }

    #[test]
    fn punctuation_initials_and_case_fold() {
        assert_eq!(toks("J. R. R. Tolkien"), toks("J.R.R. Tolkien"));
        assert_eq!(toks("J.R.R. Tolkien"), vec!["j", "r", "r", "tolkien"]);
        assert_eq!(toks("ACME Corporation"), toks("Acme Corp"));
        assert_eq!(toks("Acme, Inc."), vec!["acme"]);
        assert_eq!(toks("The Debian Project"), vec!["debian", "project"]);
        assert_eq!(toks("McDonald’s"), vec!["mcdonalds"]);
        assert_eq!(toks("Inc"), vec!["inc"]);
        assert_eq!(toks("Nestlé S.A."), vec!["nestle"]);
        assert_eq!(toks("N.A.S.A."), vec!["n", "a", "s", "a"]);
        assert_eq!(
            toks("J.P. Morgan Chase & Co."),
            vec!["j", "p", "morgan", "chase"]
        );
        let n = normalise("Massachusetts Inst. of Technology");
        assert_eq!(n.abbrev, vec![false, true, false, false]);
        assert_eq!(normalise("Node.js").abbrev, vec![false, false]);
    }

    #[test]
    fn diacritics_and_special_letters_fold() {
        assert_eq!(toks("Zürich"), vec!["zurich"]);
        assert_eq!(toks("Société Générale"), vec!["societe", "generale"]);
        assert_eq!(toks("Łódź"), vec!["lodz"]);
        assert_eq!(toks("Straße"), vec!["strasse"]);
        assert_eq!(toks("Søren Kierkegaard"), vec!["soren", "kierkegaard"]);
    }

    #[test]
    fn symbols_are_not_lost() {
        assert_ne!(toks("C++"), toks("C"));
        assert_ne!(toks("C#"), toks("C"));
        assert_eq!(toks("AT&T"), vec!["at", "and", "t"]);
    }

    #[test]
    fn numbers_and_versions() {
        assert_eq!(normalise("Python 3.11").numbers, vec!["3.11"]);
        assert_eq!(normalise("Python v3.0").numbers, vec!["3"]);
        assert_eq!(normalise("Python 3").numbers, vec!["3"]);
        assert_eq!(normalise("World War II").numbers, vec!["ii"]);
        assert_eq!(normalise("Debian GNU/Linux").numbers, Vec::<String>::new());
        assert_eq!(normalise("J.R.R. Tolkien").tokens.len(), 4, "dots split");
        assert_eq!(toks("Python3"), toks("Python 3"));
        assert_eq!(toks("Python v3"), toks("Python 3"));
        assert_eq!(toks("Windows10"), vec!["windows", "10"]);
        assert_eq!(toks("x86"), vec!["x86"]);
        assert_eq!(normalise("Python3.11").numbers, vec!["3.11"]);
        assert_eq!(toks("Python v3.11"), toks("python 3.11"));
        assert_eq!(normalise("Python 2.x").numbers, vec!["2"]);
    }

    #[test]
    fn initials_skip_stop_words() {
        assert_eq!(
            normalise("National Aeronautics and Space Administration").initials(),
            "nasa"
        );
        assert_eq!(normalise("John F. Kennedy").initials(), "jfk");
    }
}
