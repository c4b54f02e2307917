//! The `secrets:` section and its `${secret:NAME}` / `${secret_file:NAME}` substitutions.
//!
//! A spec declares *where a value comes from* (generated, a file, an environment variable),
//! never the value. Values are resolved by the binary at apply time, stored encrypted in the
//! state store, and handed to units by the provider at start (`docs/secrets.md`, ADR 010).
//!
//! ```
//! use phoenix_spec::secrets::{reference, SecretUse};
//! assert_eq!(reference("secret:db-password"), Some((SecretUse::Value, "db-password")));
//! assert_eq!(reference("secret_file:tls"), Some((SecretUse::File, "tls")));
//! assert_eq!(reference("port"), None);
//! ```

use crate::model::Location;
use serde::Serialize;

/// Shortest generated value accepted (`generate: {length: N}`).
pub const MIN_GENERATED_LENGTH: u32 = 8;
/// Longest generated value accepted.
pub const MAX_GENERATED_LENGTH: u32 = 4096;
/// Length of a generated value when `generate:` gives none.
pub const DEFAULT_GENERATED_LENGTH: u32 = 32;

/// One declared secret (`secrets: [{name, generate | from_file | from_env}]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Secret {
    /// Name, `[a-z0-9][a-z0-9-_]*`, used as `${secret:NAME}`.
    pub name: String,
    /// Free text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Where the value comes from.
    pub source: SecretSource,
    /// Where it was declared.
    #[serde(skip)]
    pub location: Location,
}

/// Where a secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretSource {
    /// Generated at random on the first apply that needs it, then kept until rotated.
    Generate {
        /// Characters.
        length: u32,
        /// Which characters.
        alphabet: Alphabet,
    },
    /// Read from a file on every apply (relative paths are relative to the spec file that
    /// declares it; `file` is that spec file's index in [`crate::Fleet::files`]).
    File {
        /// The path as written.
        path: String,
        /// Index of the spec file it was written in.
        #[serde(skip)]
        file: usize,
    },
    /// Read from an environment variable of the `phoenix` process on every apply.
    Env {
        /// The variable's name.
        var: String,
    },
}

/// The characters a generated secret is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Alphabet {
    /// `A-Z a-z 0-9` (default): safe in URLs, shells and config files.
    #[default]
    Alphanumeric,
    /// `0-9 a-f`.
    Hex,
    /// `A-Z a-z 0-9 - _`.
    Base64url,
}

impl Alphabet {
    /// Its characters, each one byte.
    pub fn chars(self) -> &'static [u8] {
        match self {
            Alphabet::Alphanumeric => {
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
            }
            Alphabet::Hex => b"0123456789abcdef",
            Alphabet::Base64url => {
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
            }
        }
    }

    /// The names accepted in a spec.
    pub const NAMES: [&'static str; 3] = ["alphanumeric", "hex", "base64url"];

    /// Parses a spec name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "alphanumeric" => Some(Alphabet::Alphanumeric),
            "hex" => Some(Alphabet::Hex),
            "base64url" => Some(Alphabet::Base64url),
            _ => None,
        }
    }
}

// How substitutions name secrets is shared with the providers (they resolve them at the
// edge), so it lives in `phoenix-model`.
pub use phoenix_model::secret_ref::{FILE_PREFIX, SecretUse, VALUE_PREFIX, reference, referenced};

/// The secrets a service (or job) uses in `command`, `env` and `health`.
pub fn used_by(service: &crate::Service) -> Vec<String> {
    let mut templates: Vec<&str> = service.command.iter().map(String::as_str).collect();
    templates.extend(service.env.values().map(String::as_str));
    if let Some(h) = &service.health {
        for c in &h.checks {
            templates.extend(c.templates());
        }
    }
    referenced(templates)
}

/// The JSON Schema of one `secrets:` entry (for `phoenix schema`).
pub(crate) fn schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object", "additionalProperties": false, "required": ["name"],
        "description": "A secret: where its value comes from (exactly one of generate, from_file, from_env). Used as `${secret:NAME}` in env or `${secret_file:NAME}` (a 0600 file in the data dir); the value is stored encrypted in the state store.",
        "properties": {
            "name": { "type": "string", "pattern": "^[a-z0-9][a-z0-9_-]*$" },
            "description": { "type": "string" },
            "generate": {
                "description": "Generated at random on the first apply, kept until `phoenix secret rotate`.",
                "anyOf": [
                    { "const": true },
                    { "type": "object", "additionalProperties": false, "properties": {
                        "length": { "type": "integer", "minimum": MIN_GENERATED_LENGTH, "maximum": MAX_GENERATED_LENGTH, "default": DEFAULT_GENERATED_LENGTH },
                        "alphabet": { "enum": Alphabet::NAMES, "default": "alphanumeric" }
                    } }
                ]
            },
            "from_file": { "type": "string", "description": "A file read on every apply (relative to the spec file); one trailing newline is dropped." },
            "from_env": { "type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$", "description": "An environment variable of phoenix, read on every apply." }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_references_once_each() {
        assert_eq!(
            referenced(["a ${secret:b} ${secret_file:a}", "${secret:b}${port}"]),
            vec!["a".to_string(), "b".to_string()]
        );
        assert_eq!(Alphabet::Hex.chars().len(), 16);
        assert_eq!(Alphabet::Base64url.chars().len(), 64);
    }
}
