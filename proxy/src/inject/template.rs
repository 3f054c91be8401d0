//! A reader of the small part of Go's `text/template` language that the
//! chart's shared sidecar definition (`charts/sidetrace/templates/_sidecar.tpl`)
//! is written in, so that Helm and this binary render the same file.
//!
//! What it reads, and nothing more (anything else is an error naming the
//! line, so the file cannot drift into syntax only Helm understands):
//!
//! - `{{ define "name" }} ... {{ end }}` at the top level;
//! - `{{ .a.b }}` and `{{ $.a.b }}` (a field of the dot or of the root),
//!   `{{ . }}`, each optionally piped into `toJson`;
//! - `{{ if PIPE }} ... {{ else }} ... {{ end }}` with Go's truth (false, 0,
//!   null, and empty strings, lists and maps are false);
//! - `{{ range PIPE }} ... {{ end }}` over a list, the dot being each item;
//! - `{{/* comments */}}` and the `{{- ` / ` -}}` whitespace trim markers.
//!
//! Printing follows Go: strings as they are, whole numbers without a
//! fraction, `null` as nothing; a missing field is an error here (Helm
//! prints nothing), which catches a misspelt path in the unit tests.

use std::collections::HashMap;

use super::value::Value;

/// A template file, parsed: its `define` blocks by name.
#[derive(Debug)]
pub struct Templates {
    defines: HashMap<String, Vec<Node>>,
}

/// Why a template could not be read or rendered.
#[derive(Clone, Debug, thiserror::Error)]
#[error("sidecar template, line {line}: {message}")]
pub struct TemplateError {
    /// 1-based line in the template file.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

#[derive(Debug)]
enum Node {
    Text(String),
    Print(Pipe),
    If(Pipe, Vec<Node>, Vec<Node>),
    Range(Pipe, Vec<Node>),
}

#[derive(Debug)]
struct Pipe {
    line: usize,
    from_root: bool,
    keys: Vec<String>,
    to_json: bool,
}

/// One `{{ }}` action, split into words.
#[derive(Debug)]
struct Action {
    line: usize,
    words: Vec<String>,
}

/// A block being built: what opened it and its children so far.
struct Open {
    kind: OpenKind,
    line: usize,
    nodes: Vec<Node>,
    /// For `if`: the `then` branch once `else` was seen.
    then: Option<Vec<Node>>,
}

enum OpenKind {
    Define(String),
    If(Pipe),
    Range(Pipe),
}

/// The dot while rendering: the layered root or a value below it.
#[derive(Clone, Copy)]
enum Dot<'a> {
    Root,
    Value(&'a Value),
}

struct Scope<'a> {
    /// Root objects, searched in order for the first key of a path.
    layers: &'a [&'a Value],
}

// === impl Templates ===

impl Templates {
    /// Parses a template file.
    pub fn parse(src: &str) -> Result<Self, TemplateError> {
        let mut defines = HashMap::new();
        let mut stack: Vec<Open> = Vec::new();
        let mut rest = src;
        let mut line = 1;
        let mut trim_next = false;
        let mut text_line = 1;
        while !rest.is_empty() {
            let (text, action) = match rest.find("{{") {
                Some(i) => (&rest[..i], Some(i)),
                None => (rest, None),
            };
            let Some(start) = action else {
                push_text(&mut stack, text, trim_next, false, text_line)?;
                break;
            };
            let after = &rest[start + 2..];
            let trim_left = starts_with_trim(after);
            line += text.matches('\n').count();
            let unclosed = || TemplateError {
                line,
                message: "an action is not closed with }}".into(),
            };
            // A comment runs to its */, whatever braces it holds.
            let body_start = if trim_left { 1 } else { 0 };
            let search_from = if after[body_start..].trim_start().starts_with("/*") {
                after.find("*/").ok_or_else(unclosed)? + 2
            } else {
                0
            };
            let end = after[search_from..].find("}}").ok_or_else(unclosed)? + search_from;
            let inner = &after[..end];
            let trim_right = ends_with_trim(inner);
            push_text(&mut stack, text, trim_next, trim_left, text_line)?;
            let body = inner
                .strip_prefix('-')
                .filter(|_| trim_left)
                .unwrap_or(inner);
            let body = if trim_right {
                &body[..body.len() - 1]
            } else {
                body
            };
            let action = Action {
                line,
                words: words(body.trim(), line)?,
            };
            line += inner.matches('\n').count();
            rest = &after[end + 2..];
            text_line = line;
            trim_next = trim_right;
            if !action.words.is_empty() {
                apply(&mut stack, &mut defines, action)?;
            }
        }
        if let Some(open) = stack.last() {
            return Err(TemplateError {
                line: open.line,
                message: "this block has no {{ end }}".into(),
            });
        }
        Ok(Self { defines })
    }

    /// Renders the block `name` with the dot at a root made of `layers`:
    /// `.key` is looked up in each layer in turn.
    pub fn render(&self, name: &str, layers: &[&Value]) -> Result<String, TemplateError> {
        let nodes = self.defines.get(name).ok_or_else(|| TemplateError {
            line: 0,
            message: format!("no define {name:?}"),
        })?;
        let mut out = String::with_capacity(4096);
        let scope = Scope { layers };
        render(nodes, &scope, Dot::Root, &mut out)?;
        Ok(out)
    }

    /// The names of the `define` blocks.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.defines.keys().map(String::as_str)
    }
}

/// `{{- ` opens an action that trims the text before it (Go wants a space
/// after the dash, else `{{-3}}` is a number).
fn starts_with_trim(after: &str) -> bool {
    let b = after.as_bytes();
    b.len() >= 2 && b[0] == b'-' && b[1].is_ascii_whitespace()
}

fn ends_with_trim(inner: &str) -> bool {
    let b = inner.as_bytes();
    b.len() >= 2 && b[b.len() - 1] == b'-' && b[b.len() - 2].is_ascii_whitespace()
}

fn words(body: &str, line: usize) -> Result<Vec<String>, TemplateError> {
    if body.starts_with("/*") {
        if !body.ends_with("*/") {
            return Err(TemplateError {
                line,
                message: "a comment must end with */ right before }}".into(),
            });
        }
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for w in body.split_whitespace() {
        // `.a|toJson` is legal Go; split the pipe off.
        let mut part = w;
        while let Some(i) = part.find('|') {
            if i > 0 {
                out.push(part[..i].to_string());
            }
            out.push("|".to_string());
            part = &part[i + 1..];
        }
        if !part.is_empty() {
            out.push(part.to_string());
        }
    }
    Ok(out)
}

fn push_text(
    stack: &mut [Open],
    text: &str,
    trim_start: bool,
    trim_end: bool,
    line: usize,
) -> Result<(), TemplateError> {
    let mut t = text;
    if trim_start {
        t = t.trim_start();
    }
    if trim_end {
        t = t.trim_end();
    }
    if t.is_empty() {
        return Ok(());
    }
    match stack.last_mut() {
        Some(open) => {
            open.nodes.push(Node::Text(t.to_string()));
            Ok(())
        }
        None if t.trim().is_empty() => Ok(()),
        None => Err(TemplateError {
            line,
            message: "text outside a define block".into(),
        }),
    }
}

fn apply(
    stack: &mut Vec<Open>,
    defines: &mut HashMap<String, Vec<Node>>,
    action: Action,
) -> Result<(), TemplateError> {
    let line = action.line;
    let err = |message: String| TemplateError { line, message };
    let first = action.words[0].as_str();
    match first {
        "define" => {
            if !stack.is_empty() {
                return Err(err("define inside a block".into()));
            }
            let [_, name] = action.words.as_slice() else {
                return Err(err("expected {{ define \"name\" }}".into()));
            };
            let name = name
                .strip_prefix('"')
                .and_then(|n| n.strip_suffix('"'))
                .ok_or_else(|| err(format!("the define name {name} is not a quoted string")))?;
            stack.push(Open {
                kind: OpenKind::Define(name.to_string()),
                line,
                nodes: Vec::new(),
                then: None,
            });
        }
        "if" | "range" => {
            if stack.is_empty() {
                return Err(err(format!("{first} outside a define block")));
            }
            let pipe = pipe(&action.words[1..], line)?;
            let kind = if first == "if" {
                OpenKind::If(pipe)
            } else {
                OpenKind::Range(pipe)
            };
            stack.push(Open {
                kind,
                line,
                nodes: Vec::new(),
                then: None,
            });
        }
        "else" => {
            if action.words.len() != 1 {
                return Err(err("only a plain {{ else }} is supported".into()));
            }
            match stack.last_mut() {
                Some(
                    open @ Open {
                        kind: OpenKind::If(_),
                        then: None,
                        ..
                    },
                ) => {
                    open.then = Some(std::mem::take(&mut open.nodes));
                }
                _ => return Err(err("else without its if".into())),
            }
        }
        "end" => {
            let open = stack
                .pop()
                .ok_or_else(|| err("end without a block".into()))?;
            let node = match open.kind {
                OpenKind::Define(name) => {
                    if defines.insert(name.clone(), open.nodes).is_some() {
                        return Err(err(format!("define {name:?} twice")));
                    }
                    return Ok(());
                }
                OpenKind::If(p) => match open.then {
                    Some(then) => Node::If(p, then, open.nodes),
                    None => Node::If(p, open.nodes, Vec::new()),
                },
                OpenKind::Range(p) => Node::Range(p, open.nodes),
            };
            if let Some(parent) = stack.last_mut() {
                parent.nodes.push(node);
            }
        }
        _ => {
            let pipe = pipe(&action.words, line)?;
            let open = stack
                .last_mut()
                .ok_or_else(|| err("an action outside a define block".into()))?;
            open.nodes.push(Node::Print(pipe));
        }
    }
    Ok(())
}

fn pipe(words: &[String], line: usize) -> Result<Pipe, TemplateError> {
    let err = |message: String| TemplateError { line, message };
    let (operand, to_json) = match words {
        [operand] => (operand, false),
        [operand, bar, f] if bar == "|" && f == "toJson" => (operand, true),
        _ => {
            return Err(err(format!(
                "unsupported action {:?}: expected .path or .path | toJson",
                words.join(" ")
            )))
        }
    };
    let (from_root, path) = if let Some(p) = operand.strip_prefix('$') {
        (true, p)
    } else {
        (false, operand.as_str())
    };
    if !path.is_empty() && !path.starts_with('.') {
        return Err(err(format!("unsupported operand {operand:?}")));
    }
    let keys: Vec<String> = path
        .split('.')
        .skip(1)
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .collect();
    let valid = |k: &String| k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !keys.iter().all(valid) || (path.len() > 1 && path.ends_with('.')) {
        return Err(err(format!("unsupported field path {operand:?}")));
    }
    Ok(Pipe {
        line,
        from_root,
        keys,
        to_json,
    })
}

// === rendering ===

fn render(
    nodes: &[Node],
    scope: &Scope<'_>,
    dot: Dot<'_>,
    out: &mut String,
) -> Result<(), TemplateError> {
    for node in nodes {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Print(p) => print(p, scope, dot, out)?,
            Node::If(p, then, otherwise) => {
                let branch = if truthy(lookup(p, scope, dot)) {
                    then
                } else {
                    otherwise
                };
                render(branch, scope, dot, out)?;
            }
            Node::Range(p, body) => match lookup(p, scope, dot) {
                None | Some(Value::Null) => {}
                Some(Value::Array(items)) => {
                    for item in items {
                        render(body, scope, Dot::Value(item), out)?;
                    }
                }
                Some(other) => {
                    return Err(TemplateError {
                        line: p.line,
                        message: format!("range over {}, not a list", other.type_name()),
                    })
                }
            },
        }
    }
    Ok(())
}

fn lookup<'a>(p: &Pipe, scope: &Scope<'a>, dot: Dot<'a>) -> Option<&'a Value> {
    let start = if p.from_root { Dot::Root } else { dot };
    let (mut current, keys) = match start {
        Dot::Value(v) => (v, &p.keys[..]),
        Dot::Root => {
            let (first, rest) = p.keys.split_first()?;
            let v = scope.layers.iter().find_map(|l| l.get(first))?;
            (v, rest)
        }
    };
    for k in keys {
        current = current.get(k)?;
    }
    Some(current)
}

fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(m)) => !m.is_empty(),
    }
}

fn print(p: &Pipe, scope: &Scope<'_>, dot: Dot<'_>, out: &mut String) -> Result<(), TemplateError> {
    let err = |message: String| TemplateError {
        line: p.line,
        message,
    };
    let Some(v) = lookup(p, scope, dot) else {
        let path = if p.keys.is_empty() {
            ".".to_string()
        } else {
            format!(".{}", p.keys.join("."))
        };
        return Err(err(format!("{path} has no value")));
    };
    if p.to_json {
        let json = serde_json::to_string(v).map_err(|e| err(e.to_string()))?;
        out.push_str(&json);
        return Ok(());
    }
    match v {
        Value::Null => {}
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::String(s) => out.push_str(s),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => out.push_str(&i.to_string()),
            (_, Some(u), _) => out.push_str(&u.to_string()),
            // Go prints a whole float64 without a fraction (15080, not 15080.0).
            (_, _, Some(f)) if f.fract() == 0.0 && f.abs() < 1e15 => {
                out.push_str(&format!("{f:.0}"))
            }
            _ => out.push_str(&n.to_string()),
        },
        Value::Array(_) | Value::Object(_) => {
            return Err(err(format!(
                "cannot print {} as text; pipe it into toJson",
                v.type_name()
            )))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(yaml: &str) -> Value {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn renders_values_conditions_ranges_and_trims_like_go() {
        let t = Templates::parse(
            "{{/* a comment */}}\n{{- define \"x\" -}}\nname: {{ .name | toJson }}\nport: {{ .port }}\n\
             {{- if .native }}\nrestartPolicy: Always\n{{- end }}\nenv:\n{{- range .env }}\n  - {{ . | toJson }}\n{{- end }}\n\
             {{- if .empty }}\nnever: here\n{{- else }}\nelse: {{ $.name }}\n{{- end }}\n{{- end }}\n",
        )
        .unwrap();
        let root = ctx(
            "name: \"a\\\"b\"\nport: 15080.0\nenv: [{name: A, value: '1'}, {name: B}]\nempty: ''\n",
        );
        let native = ctx("native: true\n");
        let out = t.render("x", &[&native, &root]).unwrap();
        assert_eq!(
            out,
            "name: \"a\\\"b\"\nport: 15080\nrestartPolicy: Always\nenv:\n  - {\"name\":\"A\",\"value\":\"1\"}\n  - {\"name\":\"B\"}\nelse: a\"b"
        );
        let not_native = ctx("native: false\n");
        let out = t.render("x", &[&not_native, &root]).unwrap();
        assert!(!out.contains("restartPolicy"), "{out}");
    }

    #[test]
    fn go_truth() {
        for (yaml, expected) in [
            ("v: 0", false),
            ("v: 0.0", false),
            ("v: ''", false),
            ("v: []", false),
            ("v: {}", false),
            ("v: null", false),
            ("w: 1", false),
            ("v: false", false),
            ("v: 1", true),
            ("v: x", true),
            ("v: [1]", true),
            ("v: {a: 1}", true),
        ] {
            let t =
                Templates::parse("{{ define \"t\" }}{{ if .v }}yes{{ else }}no{{ end }}{{ end }}")
                    .unwrap();
            let v = ctx(yaml);
            let out = t.render("t", &[&v]).unwrap();
            assert_eq!(out == "yes", expected, "{yaml}");
        }
    }

    #[test]
    fn refuses_what_it_does_not_read() {
        for (src, line, needle) in [
            (
                "{{ define \"a\" }}{{ include \"b\" . }}{{ end }}",
                1,
                "unsupported action",
            ),
            (
                "{{ define \"a\" }}\n{{ .a | quote }}{{ end }}",
                2,
                "unsupported action",
            ),
            (
                "{{ define \"a\" }}\n\n{{ if .a }}x{{ end }}",
                1,
                "no {{ end }}",
            ),
            (
                "{{ define \"a\" }}{{ end }}{{ end }}",
                1,
                "end without a block",
            ),
            ("stray text", 1, "outside a define"),
            (
                "{{ define \"a\" }}{{ with .a }}{{ end }}{{ end }}",
                1,
                "unsupported",
            ),
            ("{{ define \"a\" }}{{ .a", 1, "not closed"),
            ("{{ define \"a\" }}{{ else }}{{ end }}", 1, "else without"),
        ] {
            let e = Templates::parse(src).unwrap_err();
            assert_eq!(e.line, line, "{src}: {e}");
            assert!(e.to_string().contains(needle), "{src}: {e}");
        }
    }

    #[test]
    fn a_missing_field_is_an_error_naming_it() {
        let t = Templates::parse("{{ define \"a\" }}\n\n{{ .sidetrace.ports.inbund }}{{ end }}")
            .unwrap();
        let v = ctx("sidetrace: {ports: {inbound: 1}}");
        let e = t.render("a", &[&v]).unwrap_err();
        assert_eq!(e.line, 3);
        assert!(
            e.message.contains(".sidetrace.ports.inbund has no value"),
            "{e}"
        );
        let e = Templates::parse("{{ define \"a\" }}{{ .m }}{{ end }}")
            .unwrap()
            .render("a", &[&ctx("m: {a: 1}")])
            .unwrap_err();
        assert!(e.message.contains("toJson"), "{e}");
    }
}
