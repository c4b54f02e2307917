//! The hash chain: a canonical encoding of records and the hash over it.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The predecessor hash of the first record: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Prepended to every hashed encoding, so a hash of this log can never be confused with a hash
/// of anything else, and a future format can change it.
const DOMAIN: &[u8] = b"phoenix-audit-v1\n";

/// The canonical encoding of a JSON value: object keys sorted by their bytes, no whitespace,
/// strings escaped and numbers written as `serde_json` writes them.
///
/// Sorting explicitly (rather than relying on `serde_json`'s map order) keeps the encoding the
/// same whether or not some other crate in the build enables `serde_json/preserve_order`.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(&Value::String(key.clone()), out);
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        // Scalars: serde_json's own compact form (escaping, number formatting).
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The hash of a record: SHA-256 over the domain tag and the canonical encoding of the record
/// *without* its `hash` and `signature` fields (the signature signs the hash), as lowercase
/// hex. Every other field, including `seq`, `prev_hash`, `signer` and any field an editor might
/// add, is covered.
pub fn record_hash(record: &Value) -> String {
    let mut without_hash = record.clone();
    if let Value::Object(map) = &mut without_hash {
        map.remove("hash");
        map.remove("signature");
    }
    let mut hasher = Sha256::new();
    hasher.update(DOMAIN);
    hasher.update(canonical_json(&without_hash).as_bytes());
    hex(&hasher.finalize())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let value = json!({"b": 1, "a": {"z": [1, "x\n"], "y": null}, "é": true});
        assert_eq!(
            canonical_json(&value),
            r#"{"a":{"y":null,"z":[1,"x\n"]},"b":1,"é":true}"#
        );
    }

    #[test]
    fn record_hash_ignores_only_the_hash_field() {
        let a = json!({"seq": 1, "step": "apply.start"});
        let mut b = a.clone();
        b["hash"] = json!("whatever");
        assert_eq!(record_hash(&a), record_hash(&b));
        let mut c = a.clone();
        c["seq"] = json!(2);
        assert_ne!(record_hash(&a), record_hash(&c));
        assert_eq!(record_hash(&a).len(), 64);
    }

    #[test]
    fn record_hash_is_pinned() {
        // Pins the encoding: changing it would make every existing log fail verification.
        let record = json!({"seq": 1, "prev_hash": GENESIS_HASH, "step": "apply.start"});
        let expected = {
            let mut h = Sha256::new();
            h.update(b"phoenix-audit-v1\n");
            h.update(
                format!(r#"{{"prev_hash":"{GENESIS_HASH}","seq":1,"step":"apply.start"}}"#)
                    .as_bytes(),
            );
            hex(&h.finalize())
        };
        assert_eq!(record_hash(&record), expected);
    }
}
