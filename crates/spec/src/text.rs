//! Wording shared by every message and report: counts with the noun in the right number.
//!
//! One place for the rule, so that no message says "1 instances" or "1 sites".
//!
//! ```
//! use phoenix_spec::text::{agree, count};
//! assert_eq!(count(1usize, "site"), "1 site");
//! assert_eq!(count(3u64, "instance"), "3 instances");
//! assert_eq!(count(0u32, "dependency"), "0 dependencies");
//! assert_eq!(format!("{} {}", count(2u64, "instance"), agree(2u64, "shares", "share")), "2 instances share");
//! ```

use std::fmt::Display;

/// A count: any unsigned integer.
pub trait Number: Copy + Display {
    /// True for exactly one.
    fn is_one(self) -> bool;
}

macro_rules! number {
    ($($t:ty),*) => {
        $(impl Number for $t {
            fn is_one(self) -> bool {
                self == 1
            }
        })*
    };
}
number!(u8, u16, u32, u64, u128, usize);

/// `n` and the noun, singular for one and plural otherwise (`0 sites`, `1 site`, `2 sites`).
pub fn count<N: Number>(n: N, singular: &str) -> String {
    format!("{n} {}", noun(n, singular))
}

/// The noun alone in the number that goes with `n`.
pub fn noun<N: Number>(n: N, singular: &str) -> String {
    if n.is_one() {
        singular.to_string()
    } else {
        plural(singular)
    }
}

/// One of two words (a verb, a pronoun) by number: `agree(n, "is", "are")`.
pub fn agree<N: Number>(n: N, one: &'static str, many: &'static str) -> &'static str {
    if n.is_one() { one } else { many }
}

/// The plural of an English noun as used in Phoenix's messages: `site` -> `sites`,
/// `dependency` -> `dependencies`, `process` -> `processes`; uncountable words (`info`,
/// `memory`, `storage`) stay as they are.
pub fn plural(singular: &str) -> String {
    const UNCHANGED: &[&str] = &["info", "storage", "memory", "cpu"];
    if UNCHANGED.contains(&singular) {
        return singular.to_string();
    }
    if let Some(stem) = singular.strip_suffix('y')
        && !stem.ends_with(['a', 'e', 'i', 'o', 'u'])
        && !stem.is_empty()
    {
        return format!("{stem}ies");
    }
    if ["s", "x", "z", "ch", "sh"]
        .iter()
        .any(|e| singular.ends_with(e))
    {
        return format!("{singular}es");
    }
    format!("{singular}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_is_singular_and_every_other_count_plural() {
        assert_eq!(count(0usize, "site"), "0 sites");
        assert_eq!(count(1usize, "site"), "1 site");
        assert_eq!(count(2usize, "host"), "2 hosts");
        assert_eq!(count(1u64, "instance"), "1 instance");
        assert_eq!(count(11u64, "instance"), "11 instances");
        assert_eq!(count(2u32, "info"), "2 info");
        assert_eq!(plural("dependency"), "dependencies");
        assert_eq!(plural("day"), "days");
        assert_eq!(plural("process"), "processes");
        assert_eq!(agree(1u8, "is", "are"), "is");
        assert_eq!(agree(0u8, "is", "are"), "are");
    }
}
