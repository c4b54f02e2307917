//! `${NAME}` substitutions in `command`, `env` and `health`.
//!
//! Built-in variables: `instance`, `service`, `site`, `data_dir`; `address:SERVICE[:PORT]` and
//! `addresses:SERVICE[:PORT]` ([`address_ref`], filled in by the engine from the units that
//! run); any other name must be one of the service's named ports.

/// Built-in substitution variables (besides named ports). `spec_dir` (the absolute folder of
/// the spec file the service is written in) is filled in by the engine, the rest by providers.
pub const BUILTINS: [&str; 5] = ["instance", "service", "site", "data_dir", "spec_dir"];

/// The separator of `${addresses:SERVICE}`: `host:port,host:port`, as HAProxy, Redis Sentinel,
/// libpq (`host=a,b port=1,2` aside) and most client libraries take a list.
pub const ADDRESS_SEPARATOR: &str = ",";

/// `${address:SERVICE}` or `${address:SERVICE:PORT}` (the address of one instance of another
/// service: its lowest-numbered, `SERVICE-0` when it runs), `${addresses:SERVICE}` or
/// `${addresses:SERVICE:PORT}` (every instance's, by instance number, joined by
/// [`ADDRESS_SEPARATOR`]). Without `PORT`, the service's first named port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressRef<'a> {
    /// `addresses:` (all instances) rather than `address:` (one).
    pub all: bool,
    /// The service whose instances are meant.
    pub service: &'a str,
    /// The named port, when given.
    pub port: Option<&'a str>,
}

/// The address reference `name` (what is between `${` and `}`) stands for; `None` when it is
/// not one. A name that starts with `address:` or `addresses:` but is malformed is
/// `Some(Err(why))`.
pub fn address_ref(name: &str) -> Option<Result<AddressRef<'_>, &'static str>> {
    let (all, rest) = if let Some(r) = name.strip_prefix("addresses:") {
        (true, r)
    } else if let Some(r) = name.strip_prefix("address:") {
        (false, r)
    } else {
        return None;
    };
    let (service, port) = match rest.split_once(':') {
        Some((s, p)) => (s, Some(p)),
        None => (rest, None),
    };
    let ident = |x: &str| {
        !x.is_empty()
            && x.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    };
    if !ident(service) {
        return Some(Err("expected a service name after `address:`"));
    }
    if port.is_some_and(|p| !ident(p)) {
        return Some(Err("expected a port name after the service"));
    }
    Some(Ok(AddressRef { all, service, port }))
}

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

    #[test]
    fn address_references_name_a_service_and_maybe_a_port() {
        let one = address_ref("address:db").unwrap().unwrap();
        assert_eq!((one.all, one.service, one.port), (false, "db", None));
        let all = address_ref("addresses:app:http").unwrap().unwrap();
        assert_eq!(
            (all.all, all.service, all.port),
            (true, "app", Some("http"))
        );
        assert_eq!(address_ref("port"), None);
        assert!(address_ref("address:").unwrap().is_err());
        assert!(address_ref("addresses:db:").unwrap().is_err());
        assert!(address_ref("address:d b").unwrap().is_err());
    }
}
