//! Page furniture and line-end hyphenation, cleaned out of a PDF's page
//! texts before they are joined and chunked.
//!
//! PDF engines give each page's text with its running header, footer and
//! page number, which would otherwise land mid-sentence in chunks
//! ("... his wife, Debra. A Brief History of Debian 2 / 21 Chapter 2 ...").
//! [`clean_pages`] removes them and joins words hyphenated across line
//! breaks, page by page, so the pages keep their order and count and
//! [`crate::PagedText`] still maps every chunk to the right pages.
//!
//! # Running headers and footers
//!
//! The first and the last [`ZONE_LINES`] non-empty lines of each page are
//! its header and footer *zones*. Each zone line gets a *key*: whitespace
//! collapsed, a page-number expression at its start or end dropped (`12`,
//! `xiv`, `12 / 21`, `Page 3 of 8`), and every remaining run of digits
//! masked as `#`, so "Chapter 2 · 14" and "Chapter 2 · 15" are one key and
//! a title followed by `ii` on one page and by `3 / 21` on another too.
//! A key is furniture of the top (or bottom) zones when it occurs there on
//! at least [`MIN_PAGES`] pages and on at least half of the pages, counted
//! over all pages, or over the odd pages alone, or the even pages alone
//! (books alternate their headers: the book's title on one side, the
//! chapter's on the other).
//!
//! Each page is then peeled from the top and from the bottom: while the
//! next line (at most [`ZONE_LINES`] from that edge) is furniture of that
//! edge or a bare page number, it is removed. The first line that is
//! neither stops the peeling, so nothing below a page's first line of body
//! text (or above its last) is ever removed.
//!
//! # Page numbers
//!
//! A line that is nothing but a page number is removed at the top or the
//! bottom of any page of a document of at least two pages (the forms
//! [`is_page_number`] accepts: `12`, `- 12 -`, `[12]`, `12 / 21`,
//! `12 of 21`, `Page 12`, `p. 12`, `Page 12 of 21`, and Roman numerals
//! such as `xiv`). The page numbers of chunks do not come from this text
//! but from the pages' positions, so they are unaffected.
//!
//! # Hyphenation
//!
//! A line that ends in a letter and a hyphen (`-`, U+2010) followed by a
//! line that starts with a lower-case letter is a candidate: `inter-` /
//! `national`. The two lines are joined without the hyphen when the joined
//! word (`international`) occurs elsewhere in the document's text as a
//! whole word, ignoring case; otherwise the hyphen and the line break are
//! kept (`well-` / `known` stays as it is unless "wellknown" is a word of
//! the document). A soft hyphen (U+00AD) marks a break inside a word by
//! definition and is always joined. A word hyphenated across a page break
//! is joined onto the earlier page (the fragment moves; the rest of the
//! next page's first line stays on its page).
//!
//! # Cost
//!
//! One pass over each page's lines for the zones and the hyphen candidates,
//! keys for at most `2 × ZONE_LINES` lines a page, and, only when there are
//! candidates, one pass over the document's bytes that hashes each word as
//! it goes and lower-cases and looks up only the few that may be
//! candidates (no set of all words is built). On a 322 KB manual that is a
//! few milliseconds, small beside the PDF engines' parse and the tokenizer
//! (docs/ingest.md has the figures).

use std::collections::{HashMap, HashSet};

/// Lines at each edge of a page that can be header or footer.
pub const ZONE_LINES: usize = 3;

/// A header or footer must occur on at least this many pages (and on at
/// least half of the pages) to be removed.
pub const MIN_PAGES: usize = 3;

/// Hyphens that may end a line in the middle of a word, joined when the
/// word is known: ASCII hyphen-minus and U+2010 HYPHEN (groff's).
const HARD_HYPHENS: &[char] = &['-', '\u{2010}'];

/// U+00AD SOFT HYPHEN: a break inside a word, always joined.
const SOFT_HYPHEN: char = '\u{00AD}';

/// Words that introduce a page number, lower-cased (English, German,
/// French, Spanish, Italian, Portuguese).
const PAGE_WORDS: &[&str] = &[
    "page", "p.", "pg.", "pp.", "seite", "s.", "página", "pagina", "pág.", "pag.",
];

/// Words between a page number and the page count (`3 of 8`).
const OF_WORDS: &[&str] = &["/", "of", "von", "sur", "de", "di"];

/// Removes running headers, footers and page numbers, then joins words
/// hyphenated across line breaks (see the module documentation). Returns
/// as many pages as it was given, in the same order.
pub fn clean_pages(mut pages: Vec<String>) -> Vec<String> {
    strip_furniture(&mut pages);
    join_hyphenation(&mut pages);
    pages
}

/// Removes running headers and footers and bare page-number lines from the
/// edges of each page, in place.
pub fn strip_furniture(pages: &mut [String]) {
    if pages.len() < 2 {
        return;
    }
    let zones: Vec<Zones> = pages.iter().map(|p| Zones::of(p)).collect();
    let top = frequent_keys(&zones, |z| &z.top);
    let bottom = frequent_keys(&zones, |z| &z.bottom);
    for (page, zone) in pages.iter_mut().zip(&zones) {
        // A line without a key is a bare page number.
        let is_furniture = |k: &Option<String>, keys: &HashSet<String>| {
            k.as_ref().is_none_or(|k| keys.contains(k))
        };
        let lines = zone.spans.len();
        let peel_top = zone
            .top
            .iter()
            .take_while(|k| is_furniture(k, &top))
            .count();
        let peel_bottom = zone
            .bottom
            .iter()
            .take(lines - peel_top)
            .take_while(|k| is_furniture(k, &bottom))
            .count();
        if peel_top == 0 && peel_bottom == 0 {
            continue;
        }
        let first = zone.spans.get(peel_top);
        let last = (lines - peel_top > peel_bottom)
            .then(|| zone.spans.get(lines - 1 - peel_bottom))
            .flatten();
        match (first, last) {
            (Some(&(start, _)), Some(&(_, end))) => {
                // From the start of the first kept line to the end of the last.
                page.truncate(end);
                page.drain(..start);
            }
            _ => page.clear(),
        }
    }
}

/// A page's non-empty lines and the keys of its header and footer zones.
struct Zones {
    /// Byte spans of the non-empty lines, trimmed of surrounding whitespace.
    spans: Vec<(usize, usize)>,
    /// Keys of the first [`ZONE_LINES`] lines, top down (`None`: a bare
    /// page number).
    top: Vec<Option<String>>,
    /// Keys of the last [`ZONE_LINES`] lines, bottom up.
    bottom: Vec<Option<String>>,
}

impl Zones {
    fn of(page: &str) -> Self {
        let mut spans = Vec::new();
        let mut start = 0;
        for line in page.split('\n') {
            let trimmed = line.trim();
            if !trimmed.is_empty() {
                let lead = line.len() - line.trim_start().len();
                spans.push((start + lead, start + lead + trimmed.len()));
            }
            start += line.len() + 1;
        }
        let key_of = |&(from, to): &(usize, usize)| page.get(from..to).and_then(key);
        let top = spans.iter().take(ZONE_LINES).map(key_of).collect();
        let bottom = spans.iter().rev().take(ZONE_LINES).map(key_of).collect();
        Self { spans, top, bottom }
    }
}

/// The keys that are furniture in one zone: on at least [`MIN_PAGES`] and
/// at least half of all pages, or of the odd pages, or of the even pages.
fn frequent_keys(
    zones: &[Zones],
    zone: impl Fn(&Zones) -> &Vec<Option<String>>,
) -> HashSet<String> {
    // Per key: pages holding it in this zone, over all, odd, even pages.
    let mut counts: HashMap<&str, [usize; 3]> = HashMap::new();
    let mut seen: Vec<&str> = Vec::with_capacity(ZONE_LINES);
    for (index, z) in zones.iter().enumerate() {
        seen.clear();
        for k in zone(z).iter().flatten() {
            if seen.contains(&k.as_str()) {
                continue;
            }
            let c = counts.entry(k).or_default();
            c[0] += 1;
            // Page 1 (index 0) is odd.
            c[1 + index % 2] += 1;
            seen.push(k);
        }
    }
    let total = zones.len();
    let odd = total.div_ceil(2);
    let even = total / 2;
    let frequent = |n: usize, of: usize| n >= MIN_PAGES && 2 * n >= of;
    counts
        .into_iter()
        .filter(|(_, c)| frequent(c[0], total) || frequent(c[1], odd) || frequent(c[2], even))
        .map(|(k, _)| k.to_string())
        .collect()
}

/// The key a zone line is compared by: whitespace collapsed, a page-number
/// expression at either end dropped, digit runs masked as `#`. `None` for a
/// line that is only a page number (or empty).
fn key(line: &str) -> Option<String> {
    let tokens = tokens(line);
    if tokens.is_empty() || is_page_number_tokens(&tokens) {
        return None;
    }
    let mut body: &[&str] = &tokens;
    // The longest page-number expression at the end (it ends in a number),
    // then at the start (it starts with one or with "Page"), leaving at
    // least one token.
    fn bare<'t>(t: &&'t str) -> &'t str {
        t.trim_matches(DECORATION)
    }
    if body
        .iter()
        .rev()
        .map(bare)
        .find(|t| !t.is_empty())
        .is_some_and(is_number)
    {
        for k in (1..=4.min(body.len().saturating_sub(1))).rev() {
            if let Some((rest, tail)) = body.split_at_checked(body.len() - k) {
                if is_page_number_tokens(tail) {
                    body = rest;
                    break;
                }
            }
        }
    }
    if body
        .iter()
        .map(bare)
        .find(|t| !t.is_empty())
        .is_some_and(|t| is_number(t) || one_of(t, PAGE_WORDS))
    {
        for k in (1..=4.min(body.len().saturating_sub(1))).rev() {
            if let Some((head, rest)) = body.split_at_checked(k) {
                if is_page_number_tokens(head) {
                    body = rest;
                    break;
                }
            }
        }
    }
    let mut key = String::with_capacity(line.len());
    for (i, token) in body.iter().enumerate() {
        if i > 0 {
            key.push(' ');
        }
        let mut in_digits = false;
        for c in token.chars() {
            if c.is_ascii_digit() {
                if !in_digits {
                    key.push('#');
                }
                in_digits = true;
            } else {
                key.push(c);
                in_digits = false;
            }
        }
    }
    Some(key)
}

/// A line's words, with `/` split off as a word of its own (`3/21`).
fn tokens(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for word in line.split_whitespace() {
        let mut rest = word;
        while let Some(i) = rest.find('/') {
            if i > 0 {
                out.push(&rest[..i]);
            }
            out.push("/");
            rest = &rest[i + 1..];
        }
        if !rest.is_empty() {
            out.push(rest);
        }
    }
    out
}

/// True when the whole line is a page number: `12`, `- 12 -`, `[12]`,
/// `12 / 21`, `12 of 21`, `Page 12`, `p. 12`, `Page 12 of 21`, or a Roman
/// numeral (`xiv`, `XIV`, `ii`; of single letters only `i`, `v`, `x`).
pub fn is_page_number(line: &str) -> bool {
    is_page_number_tokens(&tokens(line))
}

/// What may surround a page number: `- 12 -`, `[12]`, `| 12`.
const DECORATION: &[char] = &['-', '–', '—', '|', '[', ']', '(', ')', '•', '·', '*'];

fn is_page_number_tokens(tokens: &[&str]) -> bool {
    // At most "Page 12 of 21" and decorations: anything longer is not one
    // (checked before any work: most lines are long).
    if tokens.is_empty() || tokens.len() > 7 {
        return false;
    }
    let mut words = tokens
        .iter()
        .map(|t| t.trim_matches(DECORATION))
        .filter(|t| !t.is_empty());
    let mut first = words.next();
    if first.is_some_and(|w| !is_number(w) && one_of(w, PAGE_WORDS)) {
        first = words.next();
    }
    if !first.is_some_and(is_number) {
        return false;
    }
    match (words.next(), words.next(), words.next()) {
        (None, _, _) => true,
        (Some(of), Some(count), None) => one_of(of, OF_WORDS) && is_number(count),
        _ => false,
    }
}

/// True when `word`, lower-cased, is one of `list` (no allocation; the
/// words of the lists keep their length in upper case).
fn one_of(word: &str, list: &[&str]) -> bool {
    list.iter()
        .any(|w| w.len() == word.len() && word.chars().flat_map(char::to_lowercase).eq(w.chars()))
}

/// A page number: 1 to 5 ASCII digits, or a Roman numeral.
fn is_number(word: &str) -> bool {
    (1..=5).contains(&word.len()) && word.bytes().all(|b| b.is_ascii_digit()) || is_roman(word)
}

/// A Roman numeral in canonical form (`iv`, not `iiii`), all lower or all
/// upper case. Of single letters only `i`, `v` and `x` count (a lone `I`,
/// `C` or `d` is more likely a word or a list label than page 1, 100, 500).
fn is_roman(word: &str) -> bool {
    if !word.bytes().all(|b| b"ivxlcdmIVXLCDM".contains(&b)) {
        return false;
    }
    let lower = word.to_ascii_lowercase();
    let one_case = word == lower || word == word.to_ascii_uppercase();
    if word.len() == 1 {
        return matches!(word, "i" | "v" | "x");
    }
    if word.is_empty() || word.len() > 12 || !one_case {
        return false;
    }
    let value = |c: char| match c {
        'i' => Some(1),
        'v' => Some(5),
        'x' => Some(10),
        'l' => Some(50),
        'c' => Some(100),
        'd' => Some(500),
        'm' => Some(1000),
        _ => None,
    };
    let Some(digits) = lower.chars().map(value).collect::<Option<Vec<u32>>>() else {
        return false;
    };
    let mut total = 0;
    for (i, &d) in digits.iter().enumerate() {
        if digits.get(i + 1).is_some_and(|&next| next > d) {
            total -= i64::from(d);
        } else {
            total += i64::from(d);
        }
    }
    (1..4000).contains(&total) && to_roman(total) == lower
}

/// The canonical lower-case Roman numeral of 1..4000.
fn to_roman(mut n: i64) -> String {
    const TABLE: &[(i64, &str)] = &[
        (1000, "m"),
        (900, "cm"),
        (500, "d"),
        (400, "cd"),
        (100, "c"),
        (90, "xc"),
        (50, "l"),
        (40, "xl"),
        (10, "x"),
        (9, "ix"),
        (5, "v"),
        (4, "iv"),
        (1, "i"),
    ];
    let mut out = String::new();
    for &(v, s) in TABLE {
        while n >= v {
            out.push_str(s);
            n -= v;
        }
    }
    out
}

/// A line break after a hyphenated word fragment.
struct Break {
    /// The page and the byte offset of the hyphen in it.
    page: usize,
    hyphen: usize,
    /// The hyphen character.
    mark: char,
    /// Where the continuation starts: the same page (the next line) or the
    /// next page (its first line), and the byte offset there.
    next_page: usize,
    next_start: usize,
    /// The joined word, lower-cased.
    word: String,
}

/// Joins words hyphenated across line breaks when the joined word is
/// known to the document (soft hyphens always), in place.
pub fn join_hyphenation(pages: &mut [String]) {
    let mut breaks = Vec::new();
    for (index, page) in pages.iter().enumerate() {
        find_breaks(page, index, &mut breaks);
    }
    // Across page breaks: the last line of a page and the first of the next.
    for index in 1..pages.len() {
        let (before, after) = (&pages[index - 1], &pages[index]);
        let Some(last) = before.trim_end().rsplit('\n').next() else {
            continue;
        };
        let last_start = before.trim_end().len() - last.len();
        let next_start = after.len() - after.trim_start().len();
        if let Some((hyphen, mark, word)) = candidate(last, &after[next_start..]) {
            breaks.push(Break {
                page: index - 1,
                hyphen: last_start + hyphen,
                mark,
                next_page: index,
                next_start,
                word,
            });
        }
    }
    if breaks.is_empty() {
        return;
    }
    let wanted: HashSet<&str> = breaks
        .iter()
        .filter(|b| b.mark != SOFT_HYPHEN)
        .map(|b| b.word.as_str())
        .collect();
    let known = known_words(pages, &wanted);
    let joins: Vec<&Break> = breaks
        .iter()
        .filter(|b| b.mark == SOFT_HYPHEN || known.contains(b.word.as_str()))
        .collect();
    apply_joins(pages, &joins);
}

/// If `line` ends with a letter and a hyphen, and `next` starts with a
/// lower-case letter: the hyphen's offset in `line`, the hyphen, and the
/// joined word, lower-cased.
fn candidate(line: &str, next: &str) -> Option<(usize, char, String)> {
    let line = line.trim_end();
    let mark = line.chars().next_back()?;
    if !HARD_HYPHENS.contains(&mark) && mark != SOFT_HYPHEN {
        return None;
    }
    let hyphen = line.len() - mark.len_utf8();
    let head = &line[..hyphen];
    let head_start = head
        .char_indices()
        .rev()
        .take_while(|(_, c)| c.is_alphabetic())
        .last()
        .map(|(i, _)| i)?;
    let tail: String = next
        .chars()
        .take_while(|c| c.is_alphabetic())
        .collect::<String>();
    if !tail.chars().next().is_some_and(char::is_lowercase) {
        return None;
    }
    let mut word = head[head_start..].to_lowercase();
    word.push_str(&tail.to_lowercase());
    Some((hyphen, mark, word))
}

/// Hyphenated line breaks inside one page.
fn find_breaks(page: &str, index: usize, out: &mut Vec<Break>) {
    let mut start = 0;
    let mut lines = page.split('\n').peekable();
    while let Some(line) = lines.next() {
        let next_start = start + line.len() + 1;
        if let Some(next) = lines.peek() {
            let lead = next.len() - next.trim_start().len();
            if let Some((hyphen, mark, word)) = candidate(line, &next[lead..]) {
                out.push(Break {
                    page: index,
                    hyphen: start + hyphen,
                    mark,
                    next_page: index,
                    next_start: next_start + lead,
                    word,
                });
            }
        }
        start = next_start;
    }
}

/// Which of `wanted` occur in the pages as whole words (runs of letters
/// and digits), ignoring case. The document's whole text goes through this
/// once, so it is one loop over bytes that hashes each word's lower-case
/// form as it goes (FNV-1a) and looks at one slot of a small table counting
/// the candidates not found yet by hash; only words that land on a
/// non-zero slot (a candidate's first occurrence, and about one word in a
/// hundred others) are lower-cased and looked up exactly.
fn known_words<'w>(pages: &[String], wanted: &HashSet<&'w str>) -> HashSet<&'w str> {
    let mut found = HashSet::new();
    if wanted.is_empty() {
        return found;
    }
    let slot = |hash: u64| (hash as usize) % HASH_SLOTS;
    let mut pending = vec![0u16; HASH_SLOTS];
    let mut by_bytes: HashMap<&[u8], (&'w str, usize)> = HashMap::with_capacity(wanted.len());
    for w in wanted {
        let s = slot(w.bytes().fold(FNV_OFFSET, fnv));
        if let Some(count) = pending.get_mut(s) {
            *count = count.saturating_add(1);
        }
        by_bytes.insert(w.as_bytes(), (*w, s));
    }
    let mut lowered = String::new();
    let mut check = |word: &str, hash: u64| {
        if pending.get(slot(hash)).is_none_or(|&n| n == 0) {
            return;
        }
        lowered.clear();
        lowered.extend(word.chars().flat_map(char::to_lowercase));
        if let Some(&(w, s)) = by_bytes.get(lowered.as_bytes()) {
            if found.insert(w) {
                if let Some(count) = pending.get_mut(s) {
                    *count = count.saturating_sub(1);
                }
            }
        }
    };
    for page in pages {
        let bytes = page.as_bytes();
        // The current word: where it starts and the hash so far.
        let mut start: Option<usize> = None;
        let mut hash = FNV_OFFSET;
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            let mut width = 1;
            let in_word = if b.is_ascii() {
                let alnum = b.is_ascii_alphanumeric();
                if alnum {
                    hash = fnv(hash, b.to_ascii_lowercase());
                }
                alnum
            } else {
                match page.get(i..).and_then(|t| t.chars().next()) {
                    Some(c) => {
                        width = c.len_utf8();
                        let alnum = c.is_alphanumeric();
                        if alnum {
                            let mut buf = [0u8; 4];
                            for l in c.to_lowercase() {
                                hash = l.encode_utf8(&mut buf).bytes().fold(hash, fnv);
                            }
                        }
                        alnum
                    }
                    // Not at a character boundary: cannot happen, as `i`
                    // only ever moves by whole characters.
                    None => false,
                }
            };
            match (in_word, start) {
                (true, None) => start = Some(i),
                (false, Some(from)) => {
                    if let Some(word) = page.get(from..i) {
                        check(word, hash);
                    }
                    start = None;
                    hash = FNV_OFFSET;
                }
                _ => {}
            }
            i += width;
        }
        if let Some(word) = start.and_then(|from| page.get(from..)) {
            check(word, hash);
        }
    }
    found
}

/// Slots of the table of candidate hashes in [`known_words`].
const HASH_SLOTS: usize = 1 << 16;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// One step of FNV-1a.
fn fnv(hash: u64, byte: u8) -> u64 {
    (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
}

/// Applies the joins. Inside a page the hyphen, the line break and the
/// next line's indentation go, so the next line continues the word (as
/// pdftotext does). Across pages the word's continuation (up to the next
/// whitespace) moves to the end of the earlier page. All edits are worked
/// out on the pages as they are, then made from the end of each page
/// backwards, so no offset moves under another edit; an edit that would
/// overlap one already made is skipped.
fn apply_joins(pages: &mut [String], joins: &[&Break]) {
    // Per page: (start, end, replacement).
    let mut edits: Vec<Vec<(usize, usize, String)>> = vec![Vec::new(); pages.len()];
    for b in joins {
        if b.next_page == b.page {
            edits[b.page].push((b.hyphen, b.next_start, String::new()));
            continue;
        }
        let next = &pages[b.next_page];
        let rest = &next[b.next_start..];
        let token_len = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let after = &rest[token_len..];
        let spaces = after.len() - after.trim_start_matches([' ', '\t']).len();
        let mut cut = b.next_start + token_len + spaces;
        // A line that was only the continuation goes with its line break.
        if spaces == 0 && next[cut..].starts_with('\n') {
            cut += 1;
        }
        let token = rest[..token_len].to_string();
        edits[b.next_page].push((0, cut, String::new()));
        edits[b.page].push((b.hyphen, pages[b.page].len(), token));
    }
    for (page, mut list) in pages.iter_mut().zip(edits) {
        list.sort_by_key(|e| std::cmp::Reverse(e.0));
        let mut limit = page.len();
        for (start, end, with) in list {
            if end > limit || start > end {
                continue;
            }
            page.replace_range(start..end, &with);
            limit = start;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Body words that differ in more than digits from page to page (body
    /// lines that differ only in digits would look like furniture).
    const WORDS: [&str; 10] = [
        "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
    ];

    fn pages(texts: &[&str]) -> Vec<String> {
        texts.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn page_numbers_in_their_usual_forms() {
        for yes in [
            "12",
            "- 12 -",
            "— 7 —",
            "[12]",
            "12 / 21",
            "12/21",
            "12 of 21",
            "Page 12",
            "PAGE 3 OF 8",
            "p. 4",
            "Seite 3 von 9",
            "xiv",
            "ii",
            "XIV",
            "v",
        ] {
            assert!(is_page_number(yes), "{yes}");
        }
        for no in [
            "",
            "I",
            "C",
            "iiii",
            "Chapter 2",
            "2 Leadership",
            "1999-2020",
            "123456",
            "12 13",
            "Page",
            "page twelve",
            "mixed",
            "(c)",
            "d",
        ] {
            assert!(!is_page_number(no), "{no}");
        }
    }

    #[test]
    fn keys_mask_digits_and_drop_page_numbers_at_the_ends() {
        assert_eq!(
            key("A Brief History of Debian   3 / 21").as_deref(),
            Some("A Brief History of Debian")
        );
        assert_eq!(
            key("A Brief History of Debian ii").as_deref(),
            Some("A Brief History of Debian")
        );
        assert_eq!(
            key("GNU Bash 5.2 2022 September 19 40").as_deref(),
            Some("GNU Bash #.# # September #")
        );
        assert_eq!(
            key("Confidential — page 3 of 8").as_deref(),
            Some("Confidential —")
        );
        assert_eq!(key("14 Chapter 2").as_deref(), Some("Chapter"));
        assert_eq!(
            key("Chapter 2 Leadership").as_deref(),
            Some("Chapter # Leadership")
        );
        assert_eq!(key("Page 3 of 8"), None);
        assert_eq!(key("   "), None);
    }

    #[test]
    fn running_headers_footers_and_numbers_are_removed() {
        let mut p: Vec<String> = (1..=6)
            .map(|n| {
                format!(
                    "ACME Annual Report 2024\n\nBody {w} starts here.\nIt goes on about {w}.\n\nConfidential — page {n} of 6\n",
                    w = WORDS[n - 1]
                )
            })
            .collect();
        strip_furniture(&mut p);
        assert_eq!(p[0], "Body alpha starts here.\nIt goes on about alpha.");
        assert_eq!(p[5], "Body zeta starts here.\nIt goes on about zeta.");
    }

    #[test]
    fn alternating_headers_are_found_on_their_side() {
        // Odd pages carry the book title, even pages the chapter title and
        // a number at the start; page 1 is a title page.
        let mut p = vec!["The Book\nby Someone".to_string()];
        for (n, word) in WORDS.iter().enumerate().skip(2) {
            let header = if n % 2 == 0 {
                format!("{n} Chapter One: Beginnings")
            } else {
                format!("A Treatise on Things {n}")
            };
            p.push(format!("{header}\n{word} is on this page.\n"));
        }
        strip_furniture(&mut p);
        assert_eq!(p[0], "The Book\nby Someone");
        assert_eq!(p.len(), 9);
        for (page, word) in p.iter().skip(1).zip(&WORDS[2..]) {
            assert_eq!(page, &format!("{word} is on this page."));
        }
    }

    #[test]
    fn body_text_and_rare_lines_are_kept() {
        // A line at the top of two pages of six is no furniture; the body's
        // own first lines differ; a number inside the body stays.
        let mut p = pages(&[
            "Introduction\nKeep 12\nmore",
            "Introduction\nsecond page",
            "third page\n12\nend",
            "fourth page",
            "fifth page",
            "sixth page",
        ]);
        let before = p.clone();
        strip_furniture(&mut p);
        assert_eq!(p, before);
        // One-page documents are left alone (a lone number may be data).
        let mut one = pages(&["Total\n12"]);
        strip_furniture(&mut one);
        assert_eq!(one, pages(&["Total\n12"]));
    }

    #[test]
    fn bare_page_numbers_go_even_when_not_repeated() {
        let mut p = pages(&["- 1 -\nfirst body\n", "second body\nPage 2", "third body"]);
        strip_furniture(&mut p);
        assert_eq!(p, pages(&["first body", "second body", "third body"]));
    }

    #[test]
    fn peeling_stops_at_the_first_body_line() {
        let mut p: Vec<String> = (1..=4)
            .map(|n| format!("Header\n{w} body\nHeader\n{w} more\n{n}", w = WORDS[n]))
            .collect();
        strip_furniture(&mut p);
        assert_eq!(p[0], "beta body\nHeader\nbeta more");
    }

    #[test]
    fn hyphenation_is_joined_only_for_known_words() {
        let mut p = pages(&[
            "an inter-\nnational meeting, well-\nknown to all\n",
            "the International office\nand a soft\u{AD}\nhyphen\n",
        ]);
        join_hyphenation(&mut p);
        assert_eq!(
            p,
            pages(&[
                "an international meeting, well-\nknown to all\n",
                "the International office\nand a softhyphen\n",
            ])
        );
        // Capitalised continuations are not joined; groff's U+2010 is.
        let mut p = pages(&["arguments and argu\u{2010}\n  ments, pre-\nDefined\n"]);
        join_hyphenation(&mut p);
        assert_eq!(p, pages(&["arguments and arguments, pre-\nDefined\n"]));
        let mut p = pages(&["arguments and argu\u{2010}\n    ment\n"]);
        join_hyphenation(&mut p);
        assert_eq!(p, pages(&["arguments and argu\u{2010}\n    ment\n"]));
        // A dash after a space is no hyphenation; chains join link by link.
        let mut p = pages(&["a - \nb, a pre-\nfix-\nless word", "prefix fixless"]);
        join_hyphenation(&mut p);
        assert_eq!(p, pages(&["a - \nb, a prefixless word", "prefix fixless"]));
    }

    #[test]
    fn hyphenation_across_a_page_break_moves_the_fragment_back() {
        let mut p = pages(&[
            "the inter-\n",
            "national, office\nmore text\n",
            "international\n",
        ]);
        join_hyphenation(&mut p);
        assert_eq!(
            p,
            pages(&[
                "the international,",
                "office\nmore text\n",
                "international\n"
            ])
        );
        let mut p = pages(&["the inter-", "national\nnext\n", "international"]);
        join_hyphenation(&mut p);
        assert_eq!(p, pages(&["the international", "next\n", "international"]));
    }

    #[test]
    fn known_words_are_whole_words_in_any_case() {
        let pages = pages(&[
            "The INTERNATIONAL office, Über-\nall,\nand überall",
            "internationals; the Straße (STRASSE)",
        ]);
        let wanted: HashSet<&str> = ["international", "überall", "straße", "nation", "strasse"]
            .into_iter()
            .collect();
        let mut found: Vec<&str> = known_words(&pages, &wanted).into_iter().collect();
        found.sort_unstable();
        assert_eq!(found, vec!["international", "strasse", "straße", "überall"]);
    }

    #[test]
    fn clean_pages_keeps_the_page_count() {
        let p: Vec<String> = (1..=5)
            .map(|n| format!("Running head\n{w} inter-\nnational {w}\n{n}", w = WORDS[n]))
            .chain(["international".to_string()])
            .collect();
        let cleaned = clean_pages(p);
        assert_eq!(cleaned.len(), 6);
        assert_eq!(cleaned[2], "delta international delta");
    }
}
