//! The typed detail of a write-ahead intent: written by the executor before a start, stop,
//! snapshot or restore, read back by recovery ([`crate::Engine::recover`]) after an apply died.
//! Stored as the same JSON object as before (`{"service", "site", "host", "stop_grace_ms",
//! "reason", "tag", "paths", "endpoint"}`), so intents written by earlier versions parse.

use serde::{Deserialize, Deserializer, Serialize};

/// What recovery needs to finish or undo an operation, and where it acts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentDetail {
    /// The unit's service (a start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The unit's site (a start): with `host`, where the unit is placed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// The unit's host within the site (a start).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "number_or_text"
    )]
    pub host: Option<u32>,
    /// Grace before a stop kills the unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grace_ms: Option<u64>,
    /// Why (a stop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The snapshot's tag (a snapshot or restore).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The paths snapshotted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// The provider endpoint the operation acts on, so that another operator's phoenix, which
    /// cannot reach it, leaves the intent alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// Grace of a stop whose intent does not say (intents of early versions).
pub const DEFAULT_STOP_GRACE_MS: u64 = 10_000;

impl IntentDetail {
    /// The detail of a stored intent. A detail this version cannot read (a field of another
    /// type) reads as empty: recovery then falls back to the defaults, as it did for a
    /// missing key.
    pub fn parse(value: &serde_json::Value) -> Self {
        serde_json::from_value(value.clone()).unwrap_or_default()
    }

    /// The JSON object stored.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// The grace of a stop, with the default.
    pub fn stop_grace_ms(&self) -> u64 {
        self.stop_grace_ms.unwrap_or(DEFAULT_STOP_GRACE_MS)
    }
}

/// A host written as `0` or as `"0"`.
fn number_or_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Host {
        Number(u32),
        Text(String),
    }
    Ok(match Option::<Host>::deserialize(d)? {
        Some(Host::Number(n)) => Some(n),
        Some(Host::Text(t)) => t.trim().parse().ok(),
        None => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn details_written_by_the_untyped_executor_still_parse() {
        let start = json!({"service": "web", "site": "local", "host": 0, "stop_grace_ms": 500,
                           "endpoint": "local://h/x"});
        let d = IntentDetail::parse(&start);
        assert_eq!(d.site.as_deref(), Some("local"));
        assert_eq!(d.host, Some(0));
        assert_eq!(d.stop_grace_ms(), 500);
        assert_eq!(d.endpoint.as_deref(), Some("local://h/x"));
        assert_eq!(d.to_value(), start, "the same keys are written back");
        let snap = IntentDetail::parse(&json!({"tag": "pre-r2", "paths": ["data"]}));
        assert_eq!(snap.tag.as_deref(), Some("pre-r2"));
        assert_eq!(IntentDetail::parse(&json!({"host": "3"})).host, Some(3));
        assert_eq!(IntentDetail::parse(&json!(null)).stop_grace_ms(), 10_000);
    }
}
