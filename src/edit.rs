//! Edits of `evgen.yaml` as text, so the user's comments and layout stay.
//!
//! No YAML library writes a document back with its comments, so evgen
//! finds the top-level keys by indentation and inserts lines. Every edit
//! is checked afterwards by loading the result like any catalog.

/// Byte range of the lines belonging to top-level `key:` (the key line
/// included): `(start of key line, end of block)`.
fn block(text: &str, key: &str) -> Option<(usize, usize)> {
    let mut offset = 0;
    let mut start = None;
    let mut last_content_end = 0;
    for line in text.split_inclusive('\n') {
        let top = !line.starts_with([' ', '\t', '#', '\n', '\r']) && !line.trim().is_empty();
        if let Some(s) = start {
            if top && !line.starts_with("- ") {
                return Some((s, last_content_end));
            }
        } else if top
            && line
                .trim_end()
                .strip_prefix(key)
                .is_some_and(|r| r.starts_with(':'))
        {
            start = Some(offset);
        }
        offset += line.len();
        let trimmed = line.trim();
        if !trimmed.is_empty() && !trimmed.starts_with('#') {
            last_content_end = offset;
        } else if start.is_some() && trimmed.starts_with('#') && line.starts_with([' ', '-']) {
            // An indented comment inside the block belongs to it.
            last_content_end = offset;
        }
    }
    start.map(|s| (s, last_content_end.max(s)))
}

fn ensure_newline(text: &mut String) {
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
}

/// Indentation used by the items of a block list (`  - ` or `- `).
fn item_indent(block_text: &str) -> String {
    block_text
        .lines()
        .skip(1)
        .find_map(|l| {
            let t = l.trim_start();
            t.starts_with("- ")
                .then(|| l[..l.len() - t.len()].to_string())
        })
        .unwrap_or_else(|| "  ".to_string())
}

/// Append `item` (one or more lines, unindented, the first starting with
/// `- `) to the top-level list `key`, creating the key when missing. A flow
/// list such as `key: []` or `key: [a]` is turned into a block list.
pub fn append_item(text: &str, key: &str, item: &str) -> String {
    let mut out = text.to_string();
    ensure_newline(&mut out);
    match block(&out, key) {
        None => {
            out.push_str(&format!("{key}:\n"));
            for l in item.lines() {
                out.push_str(&format!("  {l}\n"));
            }
            out
        }
        Some((start, end)) => {
            let key_line_end = out[start..].find('\n').map_or(out.len(), |i| start + i + 1);
            let key_line = out[start..key_line_end].to_string();
            let value = key_line.split_once(':').map(|x| x.1).unwrap_or("").trim();
            let value = value.split(" #").next().unwrap_or("").trim();
            if value.starts_with('[') {
                // Flow list: rewrite as a block list, keeping its items.
                let inner = value.trim_start_matches('[').trim_end_matches(']');
                let mut replacement = format!("{key}:\n");
                for v in inner.split(',').map(str::trim).filter(|v| !v.is_empty()) {
                    replacement.push_str(&format!("  - {v}\n"));
                }
                for l in item.lines() {
                    replacement.push_str(&format!("  {l}\n"));
                }
                out.replace_range(start..key_line_end, &replacement);
                return out;
            }
            let indent = item_indent(&out[start..end]);
            let mut insert = String::new();
            for l in item.lines() {
                insert.push_str(&format!("{indent}{l}\n"));
            }
            let at = end.max(key_line_end);
            out.insert_str(at, &insert);
            out
        }
    }
}

/// Set `service.<key>` to `value`, replacing the line or adding it.
pub fn set_service_key(text: &str, key: &str, value: &str) -> String {
    let mut out = text.to_string();
    ensure_newline(&mut out);
    let Some((start, end)) = block(&out, "service") else {
        return format!("service:\n  {key}: {value}\n{out}");
    };
    let mut offset = start;
    let mut indent = "  ".to_string();
    for line in out[start..end].split_inclusive('\n').skip(1) {
        let t = line.trim_start();
        if !t.is_empty() && !t.starts_with('#') {
            indent = line[..line.len() - t.len()].to_string();
        }
        offset += line.len();
        let _ = offset;
    }
    let mut pos = start;
    for line in out[start..end].split_inclusive('\n') {
        let t = line.trim_start();
        if pos != start && t.strip_prefix(key).is_some_and(|r| r.starts_with(':')) {
            let lead = &line[..line.len() - t.len()];
            let comment = t
                .find(" #")
                .map(|i| t[i..].trim_end().to_string())
                .unwrap_or_default();
            let nl = if line.ends_with('\n') { "\n" } else { "" };
            let new = format!("{lead}{key}: {value}{comment}{nl}");
            out.replace_range(pos..pos + line.len(), &new);
            return out;
        }
        pos += line.len();
    }
    let key_line_end = out[start..].find('\n').map_or(out.len(), |i| start + i + 1);
    out.insert_str(key_line_end, &format!("{indent}{key}: {value}\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAT: &str = "# my catalog\nservice:\n  name: orders # the name\n  broker: rabbitmq\n\nevents:\n  # first\n  - name: a.b\n    version: 1.0.0\n    schema: schemas/a.json\n\nproduces: [a.b]\n# trailing comment\n";

    #[test]
    fn appends_keep_comments() {
        let t = append_item(
            CAT,
            "events",
            "- name: c.d\n  version: 1.0.0\n  schema: schemas/c.json",
        );
        assert!(t.contains("    schema: schemas/a.json\n  - name: c.d\n    version: 1.0.0\n    schema: schemas/c.json\n\nproduces"));
        let t = append_item(&t, "produces", "- c.d");
        assert!(
            t.contains("produces:\n  - a.b\n  - c.d\n# trailing comment\n"),
            "{t}"
        );
        let t = append_item(&t, "consumes", "- event: c.d");
        assert!(
            t.ends_with("# trailing comment\nconsumes:\n  - event: c.d\n"),
            "{t}"
        );
        assert!(t.starts_with("# my catalog\n"));
    }

    #[test]
    fn service_keys() {
        let t = set_service_key(CAT, "name", "shop");
        assert!(t.contains("  name: shop # the name\n"));
        let t = set_service_key(&t, "outbox", "postgres");
        assert!(
            t.contains("service:\n  outbox: postgres\n  name: shop"),
            "{t}"
        );
    }
}
