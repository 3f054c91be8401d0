//! Where a field sits in the YAML text, for errors found after parsing
//! (value checks such as `tracing.sampler.ratio: 1.5`), and plain words for
//! the parser's own messages.

use granit_parser::{Event, Parser};

/// One step of a field path: `routes[0].prefix` is `routes`, `0`, `prefix`.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// What the walker is doing inside one open collection.
enum Frame {
    Mapping { key: Option<String> },
    Sequence { next: usize },
}

/// The 1-based line and column of the field at `path` (`a.b[2].c`), or of
/// the deepest part of the path that the text has (a check that failed on a
/// default value points at its parent block). `None` when the text has none
/// of it or does not parse.
pub(super) fn locate(text: &str, path: &str) -> Option<(u64, u64)> {
    let target = steps(path)?;
    let mut frames: Vec<Frame> = Vec::new();
    let mut best: Option<(usize, (u64, u64))> = None;
    for event in Parser::new_from_str(text) {
        let (event, span) = event.ok()?;
        let at = (span.start.line() as u64, span.start.col() as u64 + 1);
        let starts_node = match &event {
            Event::Scalar(value, ..) => {
                if let Some(Frame::Mapping { key: key @ None }) = frames.last_mut() {
                    *key = Some(value.to_string());
                    continue;
                }
                true
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => true,
            Event::MappingEnd | Event::SequenceEnd => {
                frames.pop();
                finish_value(&mut frames);
                continue;
            }
            _ => false,
        };
        if !starts_node {
            continue;
        }
        let depth = matched_depth(&frames, &target);
        if depth == frames.len() && best.is_none_or(|(d, _)| depth >= d) {
            // Every open frame is on the path: this node is the path's
            // prefix of that length.
            let at = key_position(text, at, &frames).unwrap_or(at);
            best = Some((depth, at));
            if depth == target.len() {
                return Some(at);
            }
        }
        match event {
            Event::MappingStart(..) => frames.push(Frame::Mapping { key: None }),
            Event::SequenceStart(..) => frames.push(Frame::Sequence { next: 0 }),
            _ => finish_value(&mut frames),
        }
    }
    best.filter(|(depth, _)| *depth > 0).map(|(_, at)| at)
}

/// A value ended: its mapping waits for the next key, its sequence counts it.
fn finish_value(frames: &mut [Frame]) {
    match frames.last_mut() {
        Some(Frame::Mapping { key }) => *key = None,
        Some(Frame::Sequence { next }) => *next += 1,
        None => {}
    }
}

/// How many open frames (from the root) sit on `target`.
fn matched_depth(frames: &[Frame], target: &[Step]) -> usize {
    frames
        .iter()
        .zip(target)
        .take_while(|(frame, step)| match (frame, step) {
            (Frame::Mapping { key: Some(k) }, Step::Key(want)) => k == want,
            (Frame::Sequence { next }, Step::Index(want)) => next == want,
            _ => false,
        })
        .count()
}

/// Errors read better at the value's line, which is the key's line for a
/// scalar; a block mapping or sequence starts on the line after its key, so
/// point at the key instead.
fn key_position(text: &str, at: (u64, u64), frames: &[Frame]) -> Option<(u64, u64)> {
    let Some(Frame::Mapping { key: Some(key) }) = frames.last() else {
        return None;
    };
    let line = text
        .lines()
        .nth(usize::try_from(at.0).ok()?.checked_sub(1)?)?;
    if line[..line.len().min(at.1.saturating_sub(1) as usize)].contains(key.as_str()) {
        return None;
    }
    // The key is on an earlier line: find the nearest one that holds it.
    (1..at.0).rev().find_map(|n| {
        let line = text.lines().nth(usize::try_from(n - 1).ok()?)?;
        let col = line.find(&format!("{key}:"))?;
        Some((n, col as u64 + 1))
    })
}

fn steps(path: &str) -> Option<Vec<Step>> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            out.push(Step::Key(name.to_string()));
        }
        while let Some(inner) = rest.strip_prefix('[') {
            let end = inner.find(']')?;
            out.push(Step::Index(inner[..end].parse().ok()?));
            rest = &inner[end + 1..];
        }
    }
    (!out.is_empty()).then_some(out)
}

/// A hint when the value at `line` continues on the next line: a key
/// indented too far is read as more of the value above it.
pub(super) fn folded_line_hint(text: &str, line: u64) -> Option<String> {
    let index = usize::try_from(line).ok()?.checked_sub(1)?;
    let mut lines = text.lines().skip(index);
    let this = lines.next()?;
    let next = lines.next()?;
    let indent = |l: &str| l.len() - l.trim_start().len();
    let (key_indent, next_indent) = (indent(this), indent(next));
    let looks_like_key = next
        .trim_start()
        .split_once(':')
        .is_some_and(|(k, _)| !k.is_empty() && !k.contains(' '));
    let this_has_plain_value = this.split_once(": ").is_some_and(|(_, v)| {
        !v.trim().is_empty() && !v.trim_start().starts_with(['{', '[', '|', '>'])
    });
    (next_indent > key_indent && looks_like_key && this_has_plain_value).then(|| {
        format!(
            "line {} is indented more than line {line}, so YAML reads it as more of this value; \
             indent it like line {line} if it is a key of its own",
            line + 1
        )
    })
}

/// The parser's words for a value of the wrong kind, said plainly with the
/// value found: `invalid u64` becomes `expected a whole number, found "abc"`.
pub(super) fn plain_message(message: &str, text: &str, at: Option<(u64, u64)>) -> String {
    let expected = match message.trim() {
        m if m.starts_with("duplicate mapping key: ") => {
            let key = m["duplicate mapping key: ".len()..]
                .split(',')
                .next()
                .unwrap_or_default();
            return format!("{key} is given twice in the same block");
        }
        "invalid u64" | "invalid u32" | "invalid u16" | "invalid u8" | "invalid usize" => {
            "a whole number (0 or more)"
        }
        "invalid i64" | "invalid i32" | "invalid isize" => "a whole number",
        "invalid f64" | "invalid f32" => "a number",
        "invalid bool" | "invalid boolean" => "true or false",
        _ => return message.to_string(),
    };
    match at.and_then(|at| value_at(text, at)) {
        Some(found) => format!("expected {expected}, found {found:?}"),
        None => format!("expected {expected}"),
    }
}

/// The scalar written at `at` (1-based), up to a comment or a flow separator.
fn value_at(text: &str, (line, col): (u64, u64)) -> Option<String> {
    let line = text
        .lines()
        .nth(usize::try_from(line).ok()?.checked_sub(1)?)?;
    let rest = line.get(usize::try_from(col).ok()?.checked_sub(1)?..)?;
    let end = rest.find([',', '}', ']', '#']).unwrap_or(rest.len());
    let value = rest[..end].trim().trim_matches(['"', '\'']);
    (!value.is_empty()).then(|| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
service: { name: shop }
tracing:
  sampler: { type: ratio, ratio: 1.5 }
routes:
  - { prefix: /a, name: a }
  - prefix: api
    name: b
filters:
  - timeout: { request: 0s }
metrics:
  series_limit: 0
";

    #[test]
    fn paths_are_found_in_block_and_flow_style() {
        assert_eq!(locate(TEXT, "tracing.sampler.ratio"), Some((3, 34)));
        assert_eq!(locate(TEXT, "routes[1].prefix"), Some((6, 13)));
        assert_eq!(locate(TEXT, "routes[0].name"), Some((5, 25)));
        assert_eq!(locate(TEXT, "filters[0].timeout.request"), Some((9, 25)));
        assert_eq!(locate(TEXT, "metrics.series_limit"), Some((11, 17)));
    }

    #[test]
    fn a_missing_field_points_at_its_deepest_parent() {
        let at = locate(TEXT, "tracing.sampler.max_per_second").unwrap();
        assert_eq!(at.0, 3);
        let at = locate(TEXT, "metrics.duration_buckets").unwrap();
        assert_eq!(at.0, 10, "the metrics key");
        assert_eq!(locate(TEXT, "limits.idle_timeout"), None);
        assert_eq!(locate(TEXT, "OTEL_TRACES_SAMPLER_ARG"), None);
    }

    #[test]
    fn folded_lines_are_explained() {
        let text = "inbound:\n  listen: 0.0.0.0:15080\n   upstream: http://x\n";
        let hint = folded_line_hint(text, 2).unwrap();
        assert!(
            hint.contains("line 3 is indented more than line 2"),
            "{hint}"
        );
        assert!(folded_line_hint("a:\n  b: 1\n  c: 2\n", 2).is_none());
        assert!(folded_line_hint("a: {\n    b: 1 }\n", 1).is_none());
    }

    #[test]
    fn parser_words_become_plain() {
        let text = "inbound:\n  max_header_bytes: abc\n";
        assert_eq!(
            plain_message("invalid u64", text, Some((2, 21))),
            "expected a whole number (0 or more), found \"abc\""
        );
        assert_eq!(
            plain_message(
                "duplicate mapping key: drain_timeout, set DuplicateKeyPolicy in Options if acceptable",
                "",
                None
            ),
            "drain_timeout is given twice in the same block"
        );
        assert_eq!(plain_message("something else", "", None), "something else");
    }
}
