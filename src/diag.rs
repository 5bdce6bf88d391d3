//! Diagnostics: every problem of a run is collected, then rendered together
//! as `file:line:col`, the offending line with a caret, and the fix.

use std::fmt::Write as _;

/// A position in a source file (1-based line and column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub col: usize,
}

/// One problem found in the user's input.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    /// File the problem is in, relative to the catalog folder.
    pub file: String,
    /// Where in that file; `None` when the problem is the file as a whole.
    pub pos: Option<Pos>,
    /// How many characters to underline from `pos`.
    pub len: usize,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub help: Option<String>,
}

impl Diagnostic {
    /// A problem at a position in a file.
    pub fn at(
        file: impl Into<String>,
        pos: Option<Pos>,
        len: usize,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            file: file.into(),
            pos,
            len,
            message: message.into(),
            help: None,
        }
    }

    /// Attach the fix.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// A set of diagnostics: the error type of every stage that reads user input.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Add one.
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }
    /// True when nothing was reported.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Render all diagnostics, sorted by file and position, with source
    /// snippets looked up through `source` (file name → text).
    pub fn render(&self, source: &dyn Fn(&str) -> Option<String>) -> String {
        let mut ds = self.0.clone();
        // The gutter is as wide as the largest line number shown.
        let width = ds
            .iter()
            .filter_map(|d| d.pos)
            .map(|p| p.line.to_string().len())
            .max()
            .unwrap_or(1);
        let pad = " ".repeat(width);
        ds.sort();
        ds.dedup();
        let mut out = String::new();
        for d in &ds {
            let _ = writeln!(out, "error: {}", d.message);
            match d.pos {
                Some(p) => {
                    let _ = writeln!(out, "{pad}--> {}:{}:{}", d.file, p.line, p.col);
                    if let Some(text) = source(&d.file)
                        && let Some(line) = text.lines().nth(p.line.saturating_sub(1))
                    {
                        let num = format!("{:>width$}", p.line);
                        let shown: String = line.chars().take(200).collect();
                        let _ = writeln!(out, "{pad} |");
                        let _ = writeln!(out, "{num} | {shown}");
                        let width = d
                            .len
                            .clamp(1, shown.chars().count().saturating_sub(p.col - 1).max(1));
                        let _ = writeln!(
                            out,
                            "{pad} | {}{}",
                            " ".repeat(p.col.saturating_sub(1)),
                            "^".repeat(width)
                        );
                    }
                }
                None => {
                    let _ = writeln!(out, "{pad}--> {}", d.file);
                }
            }
            if let Some(h) = &d.help {
                let _ = writeln!(out, "{pad} = help: {h}");
            }
            out.push('\n');
        }
        let n = ds.len();
        let _ = writeln!(out, "{n} error{} found", if n == 1 { "" } else { "s" });
        out
    }
}

impl std::fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render(&|_| None))
    }
}

impl std::error::Error for Diagnostics {}

/// Find the position of a JSON pointer's value inside JSON text, for error
/// messages about schema files. Falls back to the start of the file.
pub fn locate_json_pointer(text: &str, pointer: &str) -> Pos {
    let tokens: Vec<String> = if pointer.is_empty() {
        vec![]
    } else {
        pointer
            .trim_start_matches('/')
            .split('/')
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect()
    };
    let bytes = text.as_bytes();
    let mut i = 0usize;
    let skip_ws = |i: &mut usize| {
        while *i < bytes.len() && (bytes[*i] as char).is_ascii_whitespace() {
            *i += 1;
        }
    };
    // Skip a JSON value starting at i; returns false on malformed input.
    fn skip_value(b: &[u8], i: &mut usize) -> bool {
        let mut depth = 0i32;
        let mut in_str = false;
        let start = *i;
        while *i < b.len() {
            let c = b[*i];
            if in_str {
                if c == b'\\' {
                    *i += 1;
                } else if c == b'"' {
                    in_str = false;
                    if depth == 0 {
                        *i += 1;
                        return true;
                    }
                }
            } else {
                match c {
                    b'"' => in_str = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        if depth == 0 {
                            return *i > start;
                        }
                        depth -= 1;
                        if depth == 0 {
                            *i += 1;
                            return true;
                        }
                    }
                    b',' if depth == 0 => return *i > start,
                    _ => {}
                }
            }
            *i += 1;
        }
        true
    }
    fn read_string(b: &[u8], i: &mut usize) -> Option<String> {
        if b.get(*i) != Some(&b'"') {
            return None;
        }
        let start = *i;
        *i += 1;
        while *i < b.len() && b[*i] != b'"' {
            if b[*i] == b'\\' {
                *i += 1;
            }
            *i += 1;
        }
        *i += 1;
        let raw = std::str::from_utf8(b.get(start..*i)?).ok()?;
        serde_json::from_str::<String>(raw).ok()
    }
    'tokens: for tok in &tokens {
        skip_ws(&mut i);
        match bytes.get(i) {
            Some(b'{') => {
                i += 1;
                loop {
                    skip_ws(&mut i);
                    let Some(key) = read_string(bytes, &mut i) else {
                        break 'tokens;
                    };
                    skip_ws(&mut i);
                    if bytes.get(i) != Some(&b':') {
                        break 'tokens;
                    }
                    i += 1;
                    skip_ws(&mut i);
                    if &key == tok {
                        continue 'tokens;
                    }
                    if !skip_value(bytes, &mut i) {
                        break 'tokens;
                    }
                    skip_ws(&mut i);
                    if bytes.get(i) == Some(&b',') {
                        i += 1;
                    } else {
                        break 'tokens;
                    }
                }
            }
            Some(b'[') => {
                let Ok(idx) = tok.parse::<usize>() else { break };
                i += 1;
                for _ in 0..idx {
                    skip_ws(&mut i);
                    if !skip_value(bytes, &mut i) {
                        break 'tokens;
                    }
                    skip_ws(&mut i);
                    if bytes.get(i) == Some(&b',') {
                        i += 1;
                    } else {
                        break 'tokens;
                    }
                }
                skip_ws(&mut i);
            }
            _ => break,
        }
    }
    skip_ws(&mut i);
    offset_to_pos(text, i.min(text.len()))
}

/// Convert a byte offset into a 1-based line and column.
pub fn offset_to_pos(text: &str, offset: usize) -> Pos {
    let mut off = offset.min(text.len());
    while !text.is_char_boundary(off) {
        off -= 1;
    }
    let before = &text[..off];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Pos { line, col }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_positions() {
        let t = "{\n  \"a\": 1,\n  \"b\": {\"c\": [10, {\"d\": true}]}\n}";
        assert_eq!(locate_json_pointer(t, ""), Pos { line: 1, col: 1 });
        assert_eq!(locate_json_pointer(t, "/a"), Pos { line: 2, col: 8 });
        assert_eq!(locate_json_pointer(t, "/b/c/1/d"), Pos { line: 3, col: 25 });
        // Unknown keys fall back to the deepest position found, never panic.
        let _ = locate_json_pointer(t, "/zz/yy");
        let _ = locate_json_pointer("[", "/3");
        let _ = locate_json_pointer("{\"a", "/a");
    }
}
