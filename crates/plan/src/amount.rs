//! Resource amounts as they appear in the plan's JSON contract.
//!
//! The model keeps CPU in millicores so that sums are exact; the contract (`fleet-spec.md`)
//! shows CPU in cores. The conversion happens only here, at serialisation.

use phoenix_spec::quantity::{Range, fmt_bytes, fmt_cpu};
use phoenix_spec::{Budget, Resources};
use serde::Serialize;
use serde::ser::{SerializeStruct, Serializer};

/// CPU, memory and storage, each a range: the contract's `Q`,
/// serialised as `{ "cpu": R, "memory_bytes": R, "storage_bytes": R }` with CPU in cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Amount(pub Resources);

impl Amount {
    /// Nothing.
    pub const ZERO: Amount = Amount(Resources::ZERO);

    /// A short human form: `8-16 cores, 32-64Gi memory, 1T storage`.
    pub fn human(&self) -> String {
        format!(
            "{} cores, {} memory, {} storage",
            fmt_cpu(self.0.cpu),
            fmt_bytes(self.0.memory),
            fmt_bytes(self.0.storage)
        )
    }
}

impl Amount {
    /// Like [`Amount::human`] but leaving out resources that are zero (`4 cores, 8Gi memory`);
    /// `nothing` when all are.
    pub fn human_nonzero(&self) -> String {
        let parts: Vec<String> = Resource::ALL
            .iter()
            .filter(|r| r.of(&self.0).max > 0)
            .map(|&r| match r {
                Resource::Cpu => r.fmt(r.of(&self.0)),
                _ => format!("{} {}", r.fmt(r.of(&self.0)), r.name()),
            })
            .collect();
        if parts.is_empty() {
            "nothing".to_string()
        } else {
            parts.join(", ")
        }
    }
}

impl std::ops::AddAssign for Amount {
    fn add_assign(&mut self, rhs: Amount) {
        self.0 += rhs.0;
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("Amount", 3)?;
        m.serialize_field("cpu", &Cores(self.0.cpu))?;
        m.serialize_field("memory_bytes", &self.0.memory)?;
        m.serialize_field("storage_bytes", &self.0.storage)?;
        m.end()
    }
}

/// A millicore range serialised as `{ "min": cores, "max": cores }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cores(pub Range);

impl Serialize for Cores {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("Range", 2)?;
        m.serialize_field("min", &millis_to_cores(self.0.min))?;
        m.serialize_field("max", &millis_to_cores(self.0.max))?;
        m.end()
    }
}

/// Millicores to cores. Exact for every value below 2^53 millicores.
pub fn millis_to_cores(m: u64) -> f64 {
    m as f64 / 1000.0
}

/// A budget (stated totals, each optional) in the contract's units.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct BudgetAmount {
    /// Cores.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cores>,
    /// Bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<Range>,
    /// Bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_bytes: Option<Range>,
}

impl From<&Budget> for BudgetAmount {
    fn from(b: &Budget) -> Self {
        BudgetAmount {
            cpu: b.cpu.map(Cores),
            memory_bytes: b.memory,
            storage_bytes: b.storage,
        }
    }
}

/// The three resources, for code that treats them alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// CPU (millicores internally, cores in output).
    Cpu,
    /// Memory (bytes).
    Memory,
    /// Storage (bytes).
    Storage,
}

impl Resource {
    /// All three, in display order.
    pub const ALL: [Resource; 3] = [Resource::Cpu, Resource::Memory, Resource::Storage];

    /// Lower-case name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
            Resource::Storage => "storage",
        }
    }

    /// This resource's range within `r`.
    pub fn of(self, r: &Resources) -> Range {
        match self {
            Resource::Cpu => r.cpu,
            Resource::Memory => r.memory,
            Resource::Storage => r.storage,
        }
    }

    /// This resource's stated total within a budget, if stated.
    pub fn of_budget(self, b: &Budget) -> Option<Range> {
        match self {
            Resource::Cpu => b.cpu,
            Resource::Memory => b.memory,
            Resource::Storage => b.storage,
        }
    }

    /// A range of this resource in human units (`8-16 cores`, `64Gi`).
    pub fn fmt(self, r: Range) -> String {
        match self {
            Resource::Cpu => format!("{} cores", fmt_cpu(r)),
            _ => fmt_bytes(r),
        }
    }

    /// One value of this resource in human units.
    pub fn fmt_one(self, v: u64) -> String {
        self.fmt(Range::exact(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_the_contract_shape_with_cpu_in_cores() {
        let a = Amount(Resources {
            cpu: Range::new(500, 16_000),
            memory: Range::exact(1 << 30),
            storage: Range::ZERO,
        });
        let v = serde_json::to_value(a).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "cpu": {"min": 0.5, "max": 16.0},
                "memory_bytes": {"min": 1073741824u64, "max": 1073741824u64},
                "storage_bytes": {"min": 0, "max": 0}
            })
        );
    }

    #[test]
    fn formats_each_resource_in_its_unit() {
        assert_eq!(Resource::Cpu.fmt(Range::new(8000, 16_000)), "8-16 cores");
        assert_eq!(Resource::Memory.fmt_one(64 << 30), "64Gi");
    }
}
