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

/// Largest CPU quantity, in millicores: a billion cores. Far above any host or fleet, and low
/// enough that sums over many services stay exact in 64 bits.
pub const MAX_CPU_MILLICORES: u64 = 1_000_000_000 * 1_000;
/// Largest size, in bytes: 1024Pi (one exbibyte).
pub const MAX_BYTES: u64 = 1 << 60;
/// Largest duration, in hours: 10,000 weeks.
pub const MAX_DURATION_HOURS: u64 = 10_000 * 168;
/// Largest count (`replicas`): a million; the planner lists every instance.
pub const MAX_COUNT: u64 = 1_000_000;
/// Largest time (`timeout`, `interval`, `analysis`, `stop_grace`), in milliseconds: 8760h, a
/// year.
pub const MAX_TIME_MS: u64 = 8_760 * 3_600_000;

impl Kind {
    /// The largest value of this kind, in its base unit.
    pub fn max(self) -> u64 {
        match self {
            Kind::Cpu => MAX_CPU_MILLICORES,
            Kind::Bytes => MAX_BYTES,
            Kind::Duration => MAX_DURATION_HOURS,
            Kind::Count => MAX_COUNT,
        }
    }

    /// The largest value as a user writes it, with what it measures.
    fn max_written(self) -> &'static str {
        match self {
            Kind::Cpu => "the largest CPU quantity is 1000000000 cores",
            Kind::Bytes => "the largest size is 1024Pi (2^60 bytes)",
            Kind::Duration => "the longest duration is 10000w",
            Kind::Count => "the largest count is 1000000",
        }
    }

    /// The smallest step of this kind, for "finer than" messages.
    fn unit_name(self) -> &'static str {
        match self {
            Kind::Cpu => "a millicore (`1m`, 0.001 cores)",
            Kind::Bytes => "a byte",
            Kind::Duration => "an hour",
            Kind::Count => "one",
        }
    }
}

/// Why `digits[.digits]` times a multiplier gave no value.
enum Scaled {
    /// Not a decimal number.
    Malformed,
    /// Above `u64` (the caller compares with the kind's maximum).
    TooLarge,
    /// A fraction below the base unit (`0.0001` cores), which would be rounded silently.
    TooFine,
}

/// `1e308`, `2.5E3`: a decimal in exponent notation, which quantities do not use. The value
/// as `f64`, for the message, when `t` has that shape: digits, an optional fraction, `e` or
/// `E`, an optional sign and digits, then only the unit suffix.
fn exponent_form(num: &str, suffix: &str) -> Option<f64> {
    let rest = suffix.strip_prefix(['e', 'E'])?;
    let rest = rest.strip_prefix(['+', '-']).unwrap_or(rest);
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let exp_len = suffix.len() - rest.len() + digits;
    format!("{num}{}", &suffix[..exp_len]).parse::<f64>().ok()
}

/// Parses one value (no range) of the given kind into its base unit.
///
/// # Errors
/// A [`QuantityError`] saying what is wrong: not a number, an unknown unit, a fraction finer
/// than the base unit, or a value above the kind's maximum (naming the maximum).
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
    if let Some(v) = exponent_form(num, suffix) {
        // The unit after the exponent only makes the value larger, so a value too large
        // without it is too large with it.
        if !v.is_finite() || v >= kind.max() as f64 {
            return Err(qerr(
                format!("`{t}` is too large: {}", kind.max_written()),
                None,
            ));
        }
        return Err(qerr(
            format!("`{t}` is in exponent notation, which quantities do not use"),
            Some(format!(
                "write the number out: `{v}`, with its unit if it has one"
            )),
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
    scaled_value(t, num, multiplier, kind, || {
        qerr(
            format!("`{t}` is not a valid number"),
            Some(format!("expected {}", kind.describe())),
        )
    })
}

/// What a value is bounded by, for [`scaled_value`]: the largest value in base units, how to
/// say it, and the smallest step.
trait Bounds {
    fn max(&self) -> u64;
    fn max_written(&self) -> &'static str;
    fn unit_name(&self) -> &'static str;
}

impl Bounds for Kind {
    fn max(&self) -> u64 {
        Kind::max(*self)
    }
    fn max_written(&self) -> &'static str {
        Kind::max_written(*self)
    }
    fn unit_name(&self) -> &'static str {
        Kind::unit_name(*self)
    }
}

/// Times (`timeout`, ...), in milliseconds.
struct Time;

impl Bounds for Time {
    fn max(&self) -> u64 {
        MAX_TIME_MS
    }
    fn max_written(&self) -> &'static str {
        "the longest time is 8760h (a year)"
    }
    fn unit_name(&self) -> &'static str {
        "a millisecond"
    }
}

/// `num` times `multiplier`, at most the bound's maximum; `malformed` is the error for text
/// that is not a decimal number.
fn scaled_value(
    t: &str,
    num: &str,
    multiplier: u128,
    bounds: impl Bounds,
    malformed: impl FnOnce() -> QuantityError,
) -> Result<u64, QuantityError> {
    let too_large = || {
        qerr(
            format!("`{t}` is too large: {}", bounds.max_written()),
            None,
        )
    };
    match parse_decimal_scaled(num, multiplier) {
        Ok(v) if v <= bounds.max() => Ok(v),
        Ok(_) | Err(Scaled::TooLarge) => Err(too_large()),
        Err(Scaled::TooFine) => Err(qerr(
            format!(
                "`{t}` is finer than {}, the smallest step",
                bounds.unit_name()
            ),
            Some("round it to a whole number of that step".into()),
        )),
        Err(Scaled::Malformed) => Err(malformed()),
    }
}

/// Milliseconds from `500ms`, `20s`, `5m`, `1h` (decimals allowed: `1.5s`).
///
/// # Errors
/// A [`QuantityError`]: no unit or an unknown one, not a number, finer than a millisecond, or
/// longer than [`MAX_TIME_MS`].
pub fn parse_time_ms(text: &str) -> Result<u64, QuantityError> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let example = if num.is_empty() { "20" } else { num };
    let not_a_time = || {
        qerr(
            format!("`{t}` is not a time"),
            Some(format!(
                "write a number with a unit: `500ms`, `{example}s`, `5m`, `1h`"
            )),
        )
    };
    if num.is_empty() {
        return Err(not_a_time());
    }
    if let Some(v) = exponent_form(num, unit) {
        if !v.is_finite() || v >= MAX_TIME_MS as f64 {
            return Err(qerr(
                format!("`{t}` is too large: {}", Time.max_written()),
                None,
            ));
        }
        return Err(not_a_time());
    }
    let mult = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(not_a_time()),
    };
    scaled_value(t, num, mult, Time, not_a_time)
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

/// `digits[.digits]` times `multiplier`, exactly.
fn parse_decimal_scaled(num: &str, multiplier: u128) -> Result<u64, Scaled> {
    let (int_part, frac_part) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(Scaled::Malformed);
    }
    if !int_part.chars().all(|c| c.is_ascii_digit())
        || !frac_part.chars().all(|c| c.is_ascii_digit())
    {
        return Err(Scaled::Malformed);
    }
    // Leading zeros do not make a number larger, nor trailing zeros a fraction finer.
    let int_part = int_part.trim_start_matches('0');
    let frac_part = frac_part.trim_end_matches('0');
    // Bounded lengths keep the u128 arithmetic below from overflowing: 30 digits times a
    // multiplier below 2^51 is below 2^128, and so are 20 digits.
    if int_part.len() > 30 {
        return Err(Scaled::TooLarge);
    }
    if frac_part.len() > 20 {
        return Err(Scaled::TooFine);
    }
    let int: u128 = if int_part.is_empty() {
        0
    } else {
        int_part.parse().map_err(|_| Scaled::Malformed)?
    };
    let frac: u128 = if frac_part.is_empty() {
        0
    } else {
        frac_part.parse().map_err(|_| Scaled::Malformed)?
    };
    let denom = 10u128.pow(frac_part.len() as u32);
    let whole = int.checked_mul(multiplier).ok_or(Scaled::TooLarge)?;
    let frac_scaled = frac.checked_mul(multiplier).ok_or(Scaled::TooLarge)?;
    // A fraction that does not land on a whole base unit (0.0001 cores) would be rounded
    // silently; refuse it instead.
    if frac_scaled % denom != 0 {
        return Err(Scaled::TooFine);
    }
    let total = whole
        .checked_add(frac_scaled / denom)
        .ok_or(Scaled::TooLarge)?;
    u64::try_from(total).map_err(|_| Scaled::TooLarge)
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

    #[test]
    fn regression_huge_values_say_too_large_and_name_the_largest() {
        // `cpu: 1e308` said "unknown CPU unit `e308`" and `memory: 99999999Ti` "is not a valid
        // number".
        let e = parse_range("1e308", Kind::Cpu).unwrap_err();
        assert_eq!(
            e.message,
            "`1e308` is too large: the largest CPU quantity is 1000000000 cores"
        );
        let e = parse_range("99999999Ti", Kind::Bytes).unwrap_err();
        assert_eq!(
            e.message,
            "`99999999Ti` is too large: the largest size is 1024Pi (2^60 bytes)"
        );
        let e = parse_range("99999999999999999999999T", Kind::Bytes).unwrap_err();
        assert!(e.message.contains("too large"), "{}", e.message);
        let e = parse_range("2-1e999", Kind::Cpu).unwrap_err();
        assert!(e.message.contains("too large"), "{}", e.message);
        let e = parse_range("2000000", Kind::Count).unwrap_err();
        assert!(
            e.message.contains("the largest count is 1000000"),
            "{}",
            e.message
        );
        let e = parse_range("20000w", Kind::Duration).unwrap_err();
        assert!(e.message.contains("10000w"), "{}", e.message);
    }

    #[test]
    fn the_largest_values_are_accepted_and_one_more_is_not() {
        assert_eq!(parse_value("1000000000", Kind::Cpu), Ok(MAX_CPU_MILLICORES));
        assert!(parse_value("1000000000.001", Kind::Cpu).is_err());
        assert_eq!(parse_value("1024Pi", Kind::Bytes), Ok(MAX_BYTES));
        assert!(parse_value("1025Pi", Kind::Bytes).is_err());
        assert_eq!(parse_value("1000000", Kind::Count), Ok(MAX_COUNT));
        assert_eq!(
            parse_value("10000w", Kind::Duration),
            Ok(MAX_DURATION_HOURS)
        );
        assert_eq!(parse_time_ms("8760h"), Ok(MAX_TIME_MS));
        assert!(
            parse_time_ms("8761h")
                .unwrap_err()
                .message
                .contains("8760h")
        );
    }

    #[test]
    fn exponent_notation_asks_for_the_number_written_out() {
        let e = parse_value("1e3", Kind::Cpu).unwrap_err();
        assert!(e.message.contains("exponent notation"), "{}", e.message);
        assert!(e.hint.unwrap().contains("`1000`"));
        let e = parse_value("2.5E-1", Kind::Cpu).unwrap_err();
        assert!(e.hint.unwrap().contains("`0.25`"));
        assert!(
            parse_time_ms("1e20s")
                .unwrap_err()
                .message
                .contains("too large")
        );
    }

    #[test]
    fn fractions_below_the_base_unit_say_so() {
        let e = parse_value("0.0001", Kind::Cpu).unwrap_err();
        assert!(
            e.message.contains("finer than a millicore"),
            "{}",
            e.message
        );
        assert!(
            parse_value("0.5", Kind::Bytes)
                .unwrap_err()
                .message
                .contains("finer than a byte")
        );
        assert_eq!(
            parse_value("1.500000", Kind::Cpu),
            Ok(1500),
            "trailing zeros are fine"
        );
        assert_eq!(parse_value("0001.5Gi", Kind::Bytes), Ok(3 << 29));
        assert_eq!(parse_time_ms("1.5s"), Ok(1500));
        assert!(
            parse_time_ms("0.5ms")
                .unwrap_err()
                .message
                .contains("millisecond")
        );
        assert!(
            parse_time_ms("20")
                .unwrap_err()
                .hint
                .unwrap()
                .contains("`20s`")
        );
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
            let _ = parse_range(&s, Kind::Count);
            let _ = parse_time_ms(&s);
        }

        #[test]
        fn digits_with_exponents_never_panic(m in "[0-9]{0,40}(\\.[0-9]{0,40})?", e in "[eE][+-]?[0-9]{1,4}", u in "(|m|Ki|Pi|h|w|s|ms)") {
            let t = format!("{m}{e}{u}");
            for k in [Kind::Bytes, Kind::Cpu, Kind::Duration, Kind::Count] {
                let _ = parse_range(&t, k);
            }
            let _ = parse_time_ms(&t);
        }

        #[test]
        fn every_accepted_value_is_within_the_maximum(digits in "[0-9]{1,35}(\\.[0-9]{1,25})?", u in "(|m|K|Ki|Pi|P)") {
            let t = format!("{digits}{u}");
            for k in [Kind::Bytes, Kind::Cpu] {
                if let Ok(v) = parse_value(&t, k) {
                    prop_assert!(v <= k.max());
                }
            }
        }
    }
}
