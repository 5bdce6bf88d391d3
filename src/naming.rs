//! Every naming decision evgen makes, in one place: Rust identifiers for
//! types, fields and variants, broker names, and `///` doc sanitizing.

use heck::{ToPascalCase, ToSnakeCase};
use rustc_hash::FxHashSet;

/// Rust keywords (strict and reserved, all editions) that need `r#`,
/// sorted (looked up by binary search).
const KEYWORDS: &[&str] = &[
    "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "do", "dyn",
    "else", "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl", "in", "let",
    "loop", "macro", "match", "mod", "move", "mut", "override", "priv", "pub", "ref", "return",
    "static", "struct", "trait", "true", "try", "type", "typeof", "unsafe", "unsized", "use",
    "virtual", "where", "while", "yield",
];

/// Keywords that cannot be raw identifiers.
const NON_RAW: &[&str] = &["self", "Self", "super", "crate", "_"];

/// Keep ASCII letters, digits and `_`; everything else becomes a word break.
fn ascii_words(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { ' ' })
        .collect()
}

/// No upper-case ASCII letter: the words are the runs of ASCII lower-case
/// letters and digits (`ascii_words` turns everything else into a break,
/// and heck breaks words inside a run only at upper-case letters), so the
/// fast paths below give heck's answer.
fn is_snake_input(raw: &str) -> bool {
    !raw.bytes().any(|b| b.is_ascii_uppercase())
}

/// The words of a name without upper-case ASCII letters.
fn lower_words(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
}

/// Already PascalCase: ASCII letters and digits, an upper-case first
/// letter, and a lower-case letter between any two upper-case ones; heck
/// returns such a name unchanged.
fn is_pascal(raw: &str) -> bool {
    let mut last_upper = None;
    raw.starts_with(|c: char| c.is_ascii_uppercase())
        && raw.bytes().all(|b| {
            let ok = b.is_ascii_digit()
                || b.is_ascii_lowercase()
                || (b.is_ascii_uppercase() && last_upper != Some(true));
            if b.is_ascii_alphabetic() {
                last_upper = Some(b.is_ascii_uppercase());
            }
            ok
        })
}

/// `ascii_words(raw).to_snake_case()`, without heck's per-character
/// formatting for names that are snake case already (most of them).
fn snake_words(raw: &str) -> String {
    if !is_snake_input(raw) {
        return ascii_words(raw).to_snake_case();
    }
    let mut s = String::with_capacity(raw.len());
    for w in lower_words(raw) {
        if !s.is_empty() {
            s.push('_');
        }
        s.push_str(w);
    }
    s
}

/// `ascii_words(raw).to_pascal_case()`, likewise.
fn pascal_words(raw: &str) -> String {
    if is_pascal(raw) {
        return raw.to_string();
    }
    if !is_snake_input(raw) {
        return ascii_words(raw).to_pascal_case();
    }
    let mut s = String::with_capacity(raw.len());
    for w in lower_words(raw) {
        s.push(char::from(w.as_bytes()[0].to_ascii_uppercase()));
        s.push_str(&w[1..]);
    }
    s
}

/// A field or method name in snake_case, always a valid identifier.
pub fn field_ident(raw: &str) -> String {
    let mut s = snake_words(raw);
    if s.is_empty() {
        s = "field".to_string();
    }
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s = format!("_{s}");
    }
    escape_keyword(s)
}

/// A type or variant name in PascalCase, always a valid identifier.
pub fn type_ident(raw: &str) -> String {
    let mut s = pascal_words(raw);
    if s.is_empty() {
        s = "Empty".to_string();
    }
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s = format!("V{s}");
    }
    if NON_RAW.contains(&s.as_str()) {
        s.push('_');
    }
    s
}

fn escape_keyword(s: String) -> String {
    if NON_RAW.contains(&s.as_str()) {
        format!("{s}_")
    } else if KEYWORDS.binary_search(&s.as_str()).is_ok() {
        format!("r#{s}")
    } else {
        s
    }
}

/// The identifier without a raw prefix, for building derived names.
pub fn unraw(ident: &str) -> &str {
    ident.strip_prefix("r#").unwrap_or(ident)
}

/// Hands out unique names within one scope: the first claim of a name gets
/// it, later ones get `_2`, `_3`, … (or `2`, `3` for PascalCase names).
#[derive(Debug, Default)]
pub struct Scope {
    /// Only looked up, never iterated: hashing is fine for determinism.
    taken: FxHashSet<String>,
}

impl Scope {
    /// A scope in which `reserved` names are already taken.
    pub fn with_reserved(reserved: &[&str]) -> Self {
        Scope {
            taken: reserved.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Claim `ident`, or the first free suffixed variant of it.
    pub fn claim(&mut self, ident: &str) -> String {
        let base = unraw(ident);
        if self.taken.insert(base.to_string()) {
            return ident.to_string();
        }
        let snake = base.starts_with(|c: char| c.is_ascii_lowercase() || c == '_');
        let stem = base.trim_end_matches('_');
        for n in 2.. {
            let cand = if snake {
                format!("{stem}_{n}")
            } else {
                format!("{stem}{n}")
            };
            if self.taken.insert(cand.clone()) {
                return cand;
            }
        }
        unreachable!("an unbounded range always yields a free name")
    }
}

/// A method name for an event: `order.placed` → `order_placed`.
pub fn event_method(event: &str) -> String {
    field_ident(event)
}

/// A type name for an event: `order.placed` → `OrderPlaced`.
pub fn event_type(event: &str) -> String {
    type_ident(event)
}

/// A constant name for an event: `order.placed` → `ORDER_PLACED`.
pub fn event_const(event: &str) -> String {
    unraw(&field_ident(event))
        .trim_start_matches('_')
        .to_ascii_uppercase()
}

/// Turn free text into `///` doc lines that rustdoc and clippy accept as
/// plain prose: no doctests, links, HTML or markdown structure.
pub fn doc_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line: String = line
            .chars()
            .filter(|c| !c.is_control() || *c == '\t')
            .collect();
        let line = line.trim().replace('\t', " ");
        let mut esc = String::with_capacity(line.len());
        for c in line.chars() {
            if matches!(
                c,
                '\\' | '`' | '[' | ']' | '<' | '>' | '*' | '_' | '#' | '|' | '~'
            ) {
                esc.push('\\');
            }
            esc.push(c);
        }
        // A line that starts like a list item or numbered list would be
        // markdown structure; escape its first character.
        if esc.starts_with(['-', '+', '=']) {
            esc.insert(0, '\\');
        }
        let digits = esc.chars().take_while(|c| c.is_ascii_digit()).count();
        if digits > 0 && esc[digits..].starts_with(['.', ')']) {
            esc.insert(digits, '\\');
        }
        out.push(esc);
    }
    while out.last().is_some_and(|l| l.is_empty()) {
        out.pop();
    }
    while out.first().is_some_and(|l| l.is_empty()) {
        out.remove(0);
    }
    // Consecutive blank lines collapse to one paragraph break.
    out.dedup_by(|a, b| a.is_empty() && b.is_empty());
    out
}

/// A Rust string literal for any text.
pub fn str_lit(s: &str) -> String {
    format!("{s:?}")
}

/// A raw string literal with enough `#` for any text.
pub fn raw_str_lit(s: &str) -> String {
    let mut hashes = 1;
    while s.contains(&format!("\"{}", "#".repeat(hashes))) {
        hashes += 1;
    }
    let h = "#".repeat(hashes);
    format!("r{h}\"{s}\"{h}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields() {
        let table = [
            ("orderId", "order_id"),
            ("order_id", "order_id"),
            ("type", "r#type"),
            ("self", "self_"),
            ("Self", "self_"),
            ("crate", "crate_"),
            ("1st", "_1st"),
            ("", "field"),
            ("$$", "field"),
            ("foo-bar", "foo_bar"),
            ("HTTPServer", "http_server"),
            ("async", "r#async"),
            ("gen", "r#gen"),
            ("naïve", "na_ve"),
        ];
        for (raw, want) in table {
            assert_eq!(field_ident(raw), want, "{raw}");
        }
    }

    #[test]
    fn types() {
        let table = [
            ("order.placed", "OrderPlaced"),
            ("Self", "Self_"),
            ("self", "Self_"),
            ("result", "Result"),
            ("3d-point", "V3dPoint"),
            ("", "Empty"),
            ("--", "Empty"),
            ("box", "Box"),
        ];
        for (raw, want) in table {
            assert_eq!(type_ident(raw), want, "{raw}");
        }
    }

    /// The fast paths agree with heck on every short name over an alphabet
    /// of lower and upper case letters, digits and separators.
    #[test]
    fn fast_paths_match_heck() {
        let alphabet = ['a', 'A', '1', '_', '-', '.', 'é'];
        let mut names = vec![String::new()];
        for _ in 0..5 {
            let longer: Vec<String> = names
                .iter()
                .flat_map(|n| alphabet.iter().map(move |c| format!("{n}{c}")))
                .collect();
            names.extend(longer);
        }
        names.sort();
        names.dedup();
        for n in &names {
            assert_eq!(snake_words(n), ascii_words(n).to_snake_case(), "{n:?}");
            assert_eq!(pascal_words(n), ascii_words(n).to_pascal_case(), "{n:?}");
        }
        for n in [
            "OrderPlacedLinesItem",
            "Entity1Action2",
            "HTTPServer",
            "A1B",
            "entity12.action3",
            "naïve-ÄÖ x",
        ] {
            assert_eq!(pascal_words(n), ascii_words(n).to_pascal_case(), "{n:?}");
        }
    }

    #[test]
    fn keywords_are_sorted() {
        assert!(KEYWORDS.is_sorted());
    }

    #[test]
    fn scope_suffixes() {
        let mut s = Scope::default();
        assert_eq!(s.claim("foo_bar"), "foo_bar");
        assert_eq!(s.claim("foo_bar"), "foo_bar_2");
        assert_eq!(s.claim("r#type"), "r#type");
        assert_eq!(s.claim("r#type"), "type_2");
        assert_eq!(s.claim("Address"), "Address");
        assert_eq!(s.claim("Address"), "Address2");
    }

    #[test]
    fn docs_are_inert() {
        let d = doc_lines(
            "Has */ and \"# and `code`\n```rust\npanic!()\n```\n    indented\n- item\n1. one\n<b>[link]</b>",
        );
        assert_eq!(
            d,
            vec![
                "Has \\*/ and \"\\# and \\`code\\`",
                "\\`\\`\\`rust",
                "panic!()",
                "\\`\\`\\`",
                "indented",
                "\\- item",
                "1\\. one",
                "\\<b\\>\\[link\\]\\</b\\>",
            ]
        );
    }

    #[test]
    fn raw_strings() {
        assert_eq!(raw_str_lit("a"), "r#\"a\"#");
        assert_eq!(raw_str_lit("a\"#b"), "r##\"a\"#b\"##");
        assert_eq!(event_const("order.placed"), "ORDER_PLACED");
        assert_eq!(event_const("type.self"), "TYPE_SELF");
    }
}
