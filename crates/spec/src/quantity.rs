//! Quantities and ranges: `8`, `8-16`, `500m`, `1.5`, `256Mi`, `2-4T`, `3w`.
//!
//! Everything is stored as integers in a base unit so that sums are exact and deterministic:
//! CPU in millicores, memory and storage in bytes, durations in hours.

use serde::Serialize;
use std::fmt;
use std::ops::{Add, Mul};

/// An inclusive range `min..=max` of a quantity in its base unit. A single value is `min == max`.
///
/// # Guarantees
/// Every constructor in this crate keeps `min <= max`; arithmetic keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize)]
pub struct Range {
    /// Lower bound, inclusive.
    pub min: u64,
    /// Upper bound, inclusive.
    pub max: u64,
}

impl Range {
    /// The zero range.
    pub const ZERO: Range = Range { min: 0, max: 0 };

    /// A range holding one value.
    pub const fn exact(v: u64) -> Self {
        Range { min: v, max: v }
    }

    /// A range `min..=max`.
    ///
    /// # Panics
    /// If `min > max`: callers validate user input before building a range.
    pub fn new(min: u64, max: u64) -> Self {
        assert!(min <= max, "range min {min} > max {max}");
        Range { min, max }
    }

    /// True when both bounds are zero.
    pub fn is_zero(&self) -> bool {
        self.max == 0
    }

    /// Multiplies by a count range (`replicas: 2-4` times `cpu: 1-2` is `2-8`).
    ///
    /// # Panics
    /// On overflow (release builds keep overflow checks on).
    pub fn times(self, count: Range) -> Range {
        Range {
            min: self.min * count.min,
            max: self.max * count.max,
        }
    }

    /// Multiplies both bounds by a scalar.
    pub fn scale(self, k: u64) -> Range {
        Range {
            min: self.min * k,
            max: self.max * k,
        }
    }

    /// Bound-wise maximum (for critical paths: the longer of two paths, per bound).
    pub fn max_each(self, other: Range) -> Range {
        Range {
            min: self.min.max(other.min),
            max: self.max.max(other.max),
        }
    }
}

impl Add for Range {
    type Output = Range;
    /// Sums of ranges add minimums and maximums separately.
    fn add(self, rhs: Range) -> Range {
        Range {
            min: self.min + rhs.min,
            max: self.max + rhs.max,
        }
    }
}

impl std::ops::AddAssign for Range {
    fn add_assign(&mut self, rhs: Range) {
        *self = *self + rhs;
    }
}

impl Mul<u64> for Range {
    type Output = Range;
    fn mul(self, k: u64) -> Range {
        self.scale(k)
    }
}

impl std::iter::Sum for Range {
    fn sum<I: Iterator<Item = Range>>(iter: I) -> Range {
        iter.fold(Range::ZERO, Add::add)
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}-{}", self.min, self.max)
        }
    }
}

/// What a quantity measures; decides which suffixes are allowed and the base unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// CPU cores; base unit millicores; suffix `m` for millicores.
    Cpu,
    /// Memory or storage; base unit bytes; suffixes `K M G T P` (decimal), `Ki Mi Gi Ti Pi` (binary).
    Bytes,
    /// Durations for the timeline; base unit hours; suffixes `h`, `d`, `w`.
    Duration,
    /// A plain count (replicas, hosts): a non-negative integer, no suffix.
    Count,
}

impl Kind {
    /// Human name of the kind, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Cpu => "a CPU quantity (cores, e.g. `4`, `1.5`, `500m`, `8-16`)",
            Kind::Bytes => {
                "a size (e.g. `256Mi`, `64G`, `2-4T`; units K M G T P or Ki Mi Gi Ti Pi)"
            }
            Kind::Duration => "a duration (e.g. `3d`, `2-3w`, `12h`)",
            Kind::Count => "a whole number or range (e.g. `3`, `2-4`)",
        }
    }
}

/// Why a quantity did not parse, with a hint for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct QuantityError {
    /// What is wrong.
    pub message: String,
    /// How to fix it, when there is something to suggest.
    pub hint: Option<String>,
}

fn qerr(message: impl Into<String>, hint: Option<String>) -> QuantityError {
    QuantityError {
        message: message.into(),
        hint,
    }
}

/// Parses one value (no range) of the given kind into its base unit.
pub fn parse_value(text: &str, kind: Kind) -> Result<u64, QuantityError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(qerr("empty quantity", Some(kind.describe().to_string())));
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    let suffix = suffix.trim();
    if num.is_empty() {
        return Err(qerr(
            format!("`{t}` is not a number"),
            Some(format!("expected {}", kind.describe())),
        ));
    }
    let multiplier: u128 = match kind {
        Kind::Cpu => match suffix {
            "" => 1000,
            "m" => 1,
            _ => {
                return Err(qerr(
                    format!("unknown CPU unit `{suffix}` in `{t}`"),
                    Some("CPU is in cores (`2`, `1.5`) or millicores (`500m`)".into()),
                ));
            }
        },
        Kind::Bytes => {
            match bytes_multiplier(suffix) {
                Some(m) => m,
                None => {
                    let hint = match suffix {
                    "k" | "kb" => "did you mean `K` (1000) or `Ki` (1024)?".to_string(),
                    "m" | "mb" => "`m` is milli; did you mean `M` (10^6 bytes) or `Mi` (2^20)?".to_string(),
                    "g" | "gb" | "Gb" | "gB" => "did you mean `G` (10^9 bytes) or `Gi` (2^30)?".to_string(),
                    "t" | "tb" | "Tb" => "did you mean `T` (10^12 bytes) or `Ti` (2^40)?".to_string(),
                    _ => "units are K M G T P (decimal) or Ki Mi Gi Ti Pi (binary); a B may follow".to_string(),
                };
                    return Err(qerr(
                        format!("unknown size unit `{suffix}` in `{t}`"),
                        Some(hint),
                    ));
                }
            }
        }
        Kind::Duration => match suffix {
            "h" => 1,
            "d" => 24,
            "w" => 168,
            "" => {
                return Err(qerr(
                    format!("duration `{t}` has no unit"),
                    Some("add `d` (days) or `w` (weeks), e.g. `3d`, `2-3w`".into()),
                ));
            }
            _ => {
                return Err(qerr(
                    format!("unknown duration unit `{suffix}` in `{t}`"),
                    Some("use `h` (hours), `d` (days) or `w` (weeks)".into()),
                ));
            }
        },
        Kind::Count => {
            if !suffix.is_empty() || num.contains('.') {
                return Err(qerr(
                    format!("`{t}` is not a whole number"),
                    Some(kind.describe().into()),
                ));
            }
            1
        }
    };
    let scaled = parse_decimal_scaled(num, multiplier).ok_or_else(|| {
        qerr(
            format!("`{t}` is not a valid number"),
            Some(format!("expected {}", kind.describe())),
        )
    })?;
    if kind == Kind::Count && scaled == 0 && num.chars().all(|c| c == '0') {
        return Ok(0);
    }
    Ok(scaled)
}

fn bytes_multiplier(suffix: &str) -> Option<u128> {
    let s = suffix.strip_suffix('B').unwrap_or(suffix);
    Some(match s {
        "" => 1,
        "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        _ => return None,
    })
}

/// `digits[.digits]` times `multiplier`, exactly; `None` when malformed, fractional below the
/// base unit, or too large.
fn parse_decimal_scaled(num: &str, multiplier: u128) -> Option<u64> {
    let (int_part, frac_part) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !int_part.chars().all(|c| c.is_ascii_digit())
        || !frac_part.chars().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    if frac_part.len() > 18 || int_part.len() > 20 {
        return None;
    }
    let int: u128 = if int_part.is_empty() {
        0
    } else {
        int_part.parse().ok()?
    };
    let frac: u128 = if frac_part.is_empty() {
        0
    } else {
        frac_part.parse().ok()?
    };
    let denom = 10u128.pow(frac_part.len() as u32);
    let whole = int.checked_mul(multiplier)?;
    let frac_scaled = frac.checked_mul(multiplier)?;
    // A fraction that does not land on a whole base unit (0.0001 cores) would be rounded
    // silently; refuse it instead.
    if frac_scaled % denom != 0 {
        return None;
    }
    u64::try_from(whole.checked_add(frac_scaled / denom)?).ok()
}

/// Parses `a` or `a-b` of the given kind. A range needs `a <= b`; a unit on only the upper
/// bound (`2-4T`) applies to both, as the seeds write them.
pub fn parse_range(text: &str, kind: Kind) -> Result<Range, QuantityError> {
    let t = text.trim();
    match t.split_once('-') {
        None => parse_value(t, kind).map(Range::exact),
        Some((a, b)) => {
            let (a, b) = (a.trim(), b.trim());
            if a.is_empty() {
                return Err(qerr(
                    format!("`{t}` is negative or has no lower bound"),
                    Some("quantities are never negative".into()),
                ));
            }
            let b_suffix_at = b
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(b.len());
            let a_has_suffix = a.chars().any(|c| !(c.is_ascii_digit() || c == '.'));
            let a_full = if a_has_suffix {
                a.to_string()
            } else {
                format!("{a}{}", &b[b_suffix_at..])
            };
            let lo = parse_value(&a_full, kind)?;
            let hi = parse_value(b, kind)?;
            if lo > hi {
                return Err(qerr(
                    format!("range `{t}` has its lower bound above its upper bound"),
                    Some(format!("write it as `{b}-{a}`, lower bound first")),
                ));
            }
            Ok(Range::new(lo, hi))
        }
    }
}

/// Formats a CPU range in cores (`0.5`, `8-16`).
pub fn fmt_cpu(r: Range) -> String {
    let one = |v: u64| {
        if v.is_multiple_of(1000) {
            format!("{}", v / 1000)
        } else {
            format!("{}", v as f64 / 1000.0)
        }
    };
    if r.min == r.max {
        one(r.min)
    } else {
        format!("{}-{}", one(r.min), one(r.max))
    }
}

/// Formats a byte range with a readable unit (`256Mi`, `1.6-6.2T`): a binary unit when the value
/// is a whole number of it (as written in specs), else a decimal unit with up to two decimals.
pub fn fmt_bytes(r: Range) -> String {
    fn one(v: u64) -> String {
        const BIN: [(&str, u64); 5] = [
            ("Pi", 1 << 50),
            ("Ti", 1 << 40),
            ("Gi", 1 << 30),
            ("Mi", 1 << 20),
            ("Ki", 1 << 10),
        ];
        const DEC: [(&str, u64); 5] = [
            ("P", 1_000_000_000_000_000),
            ("T", 1_000_000_000_000),
            ("G", 1_000_000_000),
            ("M", 1_000_000),
            ("K", 1_000),
        ];
        // Binary when the value is a whole, short number of a binary unit (specs write `256Mi`),
        // else the largest decimal unit with two decimals at most (`1.6T`, not `1562500000Ki`).
        let binary = BIN
            .iter()
            .find(|(_, m)| v >= *m && v.is_multiple_of(*m))
            .map(|(u, m)| (v / m, *u));
        match binary {
            Some((n, u)) if n < 10_000 => format!("{n}{u}"),
            _ => match DEC.iter().find(|(_, m)| v >= *m) {
                Some((u, m)) => {
                    let x = v as f64 / *m as f64;
                    let s = format!("{x:.2}");
                    format!("{}{u}", s.trim_end_matches('0').trim_end_matches('.'))
                }
                None => format!("{v}"),
            },
        }
    }
    if r.min == r.max {
        one(r.min)
    } else {
        format!("{}-{}", one(r.min), one(r.max))
    }
}

/// Formats an hour range in weeks (`2-3w`) or days when shorter than a week.
pub fn fmt_duration(r: Range) -> String {
    let w = |v: u64| {
        let x = v as f64 / 168.0;
        if (x - x.round()).abs() < 1e-9 {
            format!("{}", x.round())
        } else {
            format!("{:.1}", x)
        }
    };
    if r.max < 168 {
        let d = |v: u64| {
            if v.is_multiple_of(24) {
                format!("{}", v / 24)
            } else {
                format!("{:.1}", v as f64 / 24.0)
            }
        };
        return if r.min == r.max {
            format!("{}d", d(r.min))
        } else {
            format!("{}-{}d", d(r.min), d(r.max))
        };
    }
    if r.min == r.max {
        format!("{}w", w(r.min))
    } else {
        format!("{}-{}w", w(r.min), w(r.max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_contract_examples() {
        assert_eq!(parse_range("8", Kind::Cpu).unwrap(), Range::exact(8000));
        assert_eq!(
            parse_range("8-16", Kind::Cpu).unwrap(),
            Range::new(8000, 16000)
        );
        assert_eq!(parse_range("500m", Kind::Cpu).unwrap(), Range::exact(500));
        assert_eq!(parse_range("1.5", Kind::Cpu).unwrap(), Range::exact(1500));
        assert_eq!(
            parse_range("256Mi", Kind::Bytes).unwrap(),
            Range::exact(256 << 20)
        );
        assert_eq!(
            parse_range("2-4T", Kind::Bytes).unwrap(),
            Range::new(2_000_000_000_000, 4_000_000_000_000)
        );
        assert_eq!(
            parse_range("1.6-6.2T", Kind::Bytes).unwrap(),
            Range::new(1_600_000_000_000, 6_200_000_000_000)
        );
        assert_eq!(
            parse_range("3w", Kind::Duration).unwrap(),
            Range::exact(3 * 168)
        );
        assert_eq!(
            parse_range("3-5d", Kind::Duration).unwrap(),
            Range::new(72, 120)
        );
        assert_eq!(
            parse_range("500G-2T", Kind::Bytes).unwrap(),
            Range::new(500_000_000_000, 2_000_000_000_000)
        );
        assert_eq!(
            parse_range("64GB", Kind::Bytes).unwrap(),
            Range::exact(64_000_000_000)
        );
    }

    #[test]
    fn formats_bytes_readably() {
        assert_eq!(fmt_bytes(Range::exact(256 << 20)), "256Mi");
        assert_eq!(
            fmt_bytes(Range::new(1_600_000_000_000, 6_200_000_000_000)),
            "1.6T-6.2T"
        );
        assert_eq!(fmt_bytes(Range::exact(1_578_125_000_000)), "1.58T");
        assert_eq!(fmt_bytes(Range::exact(2_000_000_000_000)), "2T");
        assert_eq!(fmt_bytes(Range::exact(140 << 30)), "140Gi");
    }

    #[test]
    fn rejects_bad_quantities_with_hints() {
        assert!(
            parse_range("16-8", Kind::Cpu)
                .unwrap_err()
                .hint
                .unwrap()
                .contains("8-16")
        );
        assert!(
            parse_range("12gb", Kind::Bytes)
                .unwrap_err()
                .hint
                .unwrap()
                .contains("`G`")
        );
        assert!(parse_range("3", Kind::Duration).is_err());
        assert!(parse_range("abc", Kind::Cpu).is_err());
        assert!(parse_range("-3", Kind::Cpu).is_err());
        assert!(parse_range("1.5", Kind::Count).is_err());
        assert!(parse_range("0.0001", Kind::Cpu).is_err());
        assert!(parse_range("99999999999999999999999T", Kind::Bytes).is_err());
    }

    proptest! {
        #[test]
        fn sum_of_ranges_adds_bounds(a in 0u64..1<<40, b in 0u64..1<<40, c in 0u64..1<<40, d in 0u64..1<<40) {
            let x = Range::new(a.min(b), a.max(b));
            let y = Range::new(c.min(d), c.max(d));
            let s = x + y;
            prop_assert_eq!(s.min, x.min + y.min);
            prop_assert_eq!(s.max, x.max + y.max);
            prop_assert!(s.min <= s.max);
            prop_assert_eq!(x + y, y + x);
        }

        #[test]
        fn times_is_monotone_and_ordered(lo in 0u64..1<<20, span in 0u64..1<<20, n in 0u64..1000, m in 0u64..1000) {
            let r = Range::new(lo, lo + span);
            let count = Range::new(n.min(m), n.max(m));
            let p = r.times(count);
            prop_assert!(p.min <= p.max);
            prop_assert_eq!(p.min, r.min * count.min);
            prop_assert_eq!(p.max, r.max * count.max);
        }

        #[test]
        fn format_then_parse_round_trips_cpu(v in 0u64..10_000_000) {
            let r = Range::exact(v);
            prop_assert_eq!(parse_range(&fmt_cpu(r), Kind::Cpu).unwrap(), r);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,12}") {
            let _ = parse_range(&s, Kind::Bytes);
            let _ = parse_range(&s, Kind::Cpu);
            let _ = parse_range(&s, Kind::Duration);
        }
    }
}
