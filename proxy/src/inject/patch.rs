//! RFC 6902 JSON Patch, the two operations injection needs: `add` and
//! `remove`, on RFC 6901 pointers.
//!
//! The webhook answers the API server with these operations; `sidetrace
//! inject` applies the very same list to the manifest, so both ways produce
//! one result.

use serde::Serialize;

use super::value::Value;

/// One patch operation.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Op {
    /// Adds a member, inserts into a list (`/-` appends), or replaces an
    /// existing member.
    Add {
        /// Where.
        path: String,
        /// What.
        value: Value,
    },
    /// Removes a member or a list element.
    Remove {
        /// Where.
        path: String,
    },
}

/// A patch that does not fit the document.
#[derive(Debug, thiserror::Error)]
#[error("JSON patch {op} {path}: {message}")]
pub struct PatchError {
    /// `add` or `remove`.
    pub op: &'static str,
    /// The pointer.
    pub path: String,
    /// Why it does not apply.
    pub message: String,
}

/// A pointer token for `key`: `~` as `~0`, `/` as `~1`.
pub fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Applies `ops` in order.
pub fn apply(doc: &mut Value, ops: &[Op]) -> Result<(), PatchError> {
    for op in ops {
        let (name, path) = match op {
            Op::Add { path, .. } => ("add", path),
            Op::Remove { path } => ("remove", path),
        };
        let err = |message: String| PatchError {
            op: name,
            path: path.clone(),
            message,
        };
        let tokens: Vec<String> = path
            .strip_prefix('/')
            .ok_or_else(|| err("a pointer starts with /".into()))?
            .split('/')
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect();
        let (last, parents) = tokens
            .split_last()
            .ok_or_else(|| err("empty pointer".into()))?;
        let mut parent = &mut *doc;
        for t in parents {
            parent = match parent {
                Value::Object(m) => m.get_mut(t),
                Value::Array(a) => t.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
                _ => None,
            }
            .ok_or_else(|| err(format!("{t:?} does not exist")))?;
        }
        match (op, parent) {
            (Op::Add { value, .. }, Value::Object(m)) => {
                m.insert(last.clone(), value.clone());
            }
            (Op::Add { value, .. }, Value::Array(a)) => {
                let i = if last == "-" {
                    a.len()
                } else {
                    index(last, a.len() + 1).map_err(err)?
                };
                a.insert(i, value.clone());
            }
            (Op::Remove { .. }, Value::Object(m)) => {
                m.shift_remove(last)
                    .ok_or_else(|| err(format!("{last:?} does not exist")))?;
            }
            (Op::Remove { .. }, Value::Array(a)) => {
                let i = index(last, a.len()).map_err(err)?;
                a.remove(i);
            }
            (_, other) => return Err(err(format!("the parent is {}", other.type_name()))),
        }
    }
    Ok(())
}

fn index(token: &str, bound: usize) -> Result<usize, String> {
    match token.parse::<usize>() {
        Ok(i) if i < bound && (token == "0" || !token.starts_with('0')) => Ok(i),
        _ => Err(format!("{token:?} is not an index below {bound}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(json: &str) -> Value {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn add_and_remove_per_rfc_6902() {
        let mut doc = v(r#"{"metadata":{},"spec":{"containers":[{"name":"a"}]}}"#);
        let ops = vec![
            Op::Add {
                path: "/metadata/annotations".into(),
                value: v("{}"),
            },
            Op::Add {
                path: "/metadata/annotations/prometheus.io~1port".into(),
                value: "15090".into(),
            },
            Op::Add {
                path: "/spec/containers/-".into(),
                value: v(r#"{"name":"c"}"#),
            },
            Op::Add {
                path: "/spec/containers/1".into(),
                value: v(r#"{"name":"b"}"#),
            },
            Op::Remove {
                path: "/spec/containers/0".into(),
            },
        ];
        apply(&mut doc, &ops).unwrap();
        assert_eq!(
            doc,
            v(
                r#"{"metadata":{"annotations":{"prometheus.io/port":"15090"}},"spec":{"containers":[{"name":"b"},{"name":"c"}]}}"#
            )
        );
        let wire = serde_json::to_string(&ops[1]).unwrap();
        assert_eq!(
            wire,
            r#"{"op":"add","path":"/metadata/annotations/prometheus.io~1port","value":"15090"}"#
        );
    }

    #[test]
    fn refuses_pointers_that_do_not_fit() {
        let doc = v(r#"{"a":[1],"s":"x"}"#);
        for (op, needle) in [
            (Op::Remove { path: "/b".into() }, "does not exist"),
            (
                Op::Remove {
                    path: "/a/1".into(),
                },
                "not an index below 1",
            ),
            (
                Op::Add {
                    path: "/a/01".into(),
                    value: Value::Null,
                },
                "not an index",
            ),
            (
                Op::Add {
                    path: "/s/x".into(),
                    value: Value::Null,
                },
                "the parent is a string",
            ),
            (
                Op::Add {
                    path: "/x/y".into(),
                    value: Value::Null,
                },
                "\"x\" does not exist",
            ),
            (
                Op::Add {
                    path: "a".into(),
                    value: Value::Null,
                },
                "starts with /",
            ),
        ] {
            let e = apply(&mut doc.clone(), &[op]).unwrap_err();
            assert!(e.to_string().contains(needle), "{e}");
        }
    }
}
