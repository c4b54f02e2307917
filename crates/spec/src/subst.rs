//! `${NAME}` substitutions in `command`, `env` and `health`.
//!
//! Built-in variables: `instance`, `service`, `site`, `data_dir`; any other name must be one of
//! the service's named ports.

/// Built-in substitution variables (besides named ports).
pub const BUILTINS: [&str; 4] = ["instance", "service", "site", "data_dir"];

/// A `${name}` reference in a template: the name and its byte offset (of the `$`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The name between the braces.
    pub name: String,
    /// Byte offset of `$` in the template.
    pub offset: usize,
    /// Byte length of the whole `${...}`.
    pub len: usize,
}

/// Every `${...}` in a template, in order. An unterminated `${` is reported with an empty
/// name running to the end.
pub fn references(template: &str) -> Vec<Reference> {
    let mut out = Vec::new();
    let mut rest = template;
    let mut base = 0;
    while let Some(i) = rest.find("${") {
        let after = &rest[i + 2..];
        match after.find('}') {
            Some(j) => {
                out.push(Reference {
                    name: after[..j].to_string(),
                    offset: base + i,
                    len: j + 3,
                });
                let consumed = i + 2 + j + 1;
                base += consumed;
                rest = &rest[consumed..];
            }
            None => {
                out.push(Reference {
                    name: String::new(),
                    offset: base + i,
                    len: rest.len() - i,
                });
                break;
            }
        }
    }
    out
}

/// Replaces every `${name}` by `lookup(name)`.
///
/// # Errors
/// The first name `lookup` does not know (validation makes this impossible for a loaded fleet).
pub fn substitute(
    template: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut last = 0;
    for r in references(template) {
        out.push_str(&template[last..r.offset]);
        match lookup(&r.name) {
            Some(v) if !r.name.is_empty() => out.push_str(&v),
            _ => return Err(r.name),
        }
        last = r.offset + r.len;
    }
    out.push_str(&template[last..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_ports_and_builtins() {
        let s = substitute("http://127.0.0.1:${port}/${instance}", |n| match n {
            "port" => Some("8080".into()),
            "instance" => Some("web-0".into()),
            _ => None,
        });
        assert_eq!(s.unwrap(), "http://127.0.0.1:8080/web-0");
        assert_eq!(substitute("${nope}", |_| None), Err("nope".to_string()));
        assert_eq!(references("a ${x").len(), 1);
    }
}
