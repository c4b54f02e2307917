//! The audit log: an append-only binary Merkle log of audit records, shaped like Certificate
//! Transparency's (RFC 6962 / RFC 9162 section 2.1), whose root every block header commits to.
//!
//! Why a log beside the state trie: the trie is radix-16, so proving one of a million records
//! costs about 15 sibling hashes per level over five or six levels (some 3 KB); a binary log
//! proves it with `ceil(log2 n)` hashes (640 bytes at a million records, 960 at a billion), and
//! the log only grows, so a later root still proves every earlier record. See ADR 004.
//!
//! Hashes: `leaf = H(0x00 || data)`, `node = H(0x01 || left || right)` (H = BLAKE3, as everywhere
//! in the ledger); the root of `n` leaves splits at the largest power of two below `n`, as in
//! RFC 6962; the empty log's root is 32 zero bytes.
//!
//! - [`Frontier`]: what execution keeps (the log's size and the roots of its complete subtrees,
//!   `O(log n)`), enough to append and to compute the root;
//! - [`MerkleLog`]: what a node keeps to serve proofs (every complete subtree, about two hashes a
//!   record);
//! - [`verify_inclusion`]: what a light client runs.

use crate::codec::Writer;
use crate::crypto::Hash;
use serde::{Deserialize, Serialize};

/// Longest inclusion path accepted (a log of `2^64` leaves needs 64).
pub const MAX_PATH: usize = 64;

const AUDIT_LEAF_DOMAIN: &[u8] = b"phoenix-ledger/audit-leaf/v1\n";

/// The hash of a leaf whose content is `data`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    Hash::of(&[&[0u8], data])
}

/// The hash of an inner node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Hash::of(&[&[1u8], &left.0, &right.0])
}

/// The leaf of an audit record: what the log commits to is the record's place in its fleet's
/// chain, `(fleet, seq, hash)`. The chain hash covers the whole local record (actor, step,
/// outcome, detail, signer), so these three name it exactly; the rest of the ledger's copy is in
/// the state trie under `audit/{fleet}/{seq}`.
pub fn audit_leaf(fleet: &str, seq: u64, hash: &Hash) -> Hash {
    let mut w = Writer::with_capacity(AUDIT_LEAF_DOMAIN.len() + fleet.len() + 44);
    w.fixed(AUDIT_LEAF_DOMAIN);
    w.str(fleet);
    w.u64(seq);
    w.fixed(&hash.0);
    leaf_hash(&w.finish())
}

/// The largest power of two strictly below `n` (`n >= 2`).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// The compact state of a log: its size and the roots of its complete subtrees ("peaks", one per
/// set bit of the size, largest first). Appending and the root cost `O(log n)`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frontier {
    /// Number of leaves.
    pub size: u64,
    /// Roots of the complete subtrees, largest (leftmost) first.
    pub peaks: Vec<Hash>,
}

impl Frontier {
    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut h = leaf;
        let mut s = self.size;
        // Each set low bit is a complete subtree of the same size as the carry: merge them.
        while s & 1 == 1 {
            let left = self.peaks.pop().expect("one peak per set bit of the size");
            h = node_hash(&left, &h);
            s >>= 1;
        }
        self.peaks.push(h);
        self.size += 1;
    }

    /// The root (RFC 6962 `MTH`): the peaks folded from the smallest up.
    pub fn root(&self) -> Hash {
        let mut it = self.peaks.iter().rev();
        let Some(mut acc) = it.next().copied() else {
            return Hash::ZERO;
        };
        for p in it {
            acc = node_hash(p, &acc);
        }
        acc
    }

    /// Whether the peaks fit the size (a frontier read from storage is checked with this).
    pub fn is_consistent(&self) -> bool {
        self.peaks.len() == self.size.count_ones() as usize
    }
}

/// Every complete subtree of the log, so that an inclusion proof for any leaf against the root of
/// any earlier size costs `O(log n)`. About 64 bytes a leaf.
#[derive(Debug, Clone, Default)]
pub struct MerkleLog {
    /// `levels[j][i]` is the root of leaves `i * 2^j .. (i + 1) * 2^j`.
    levels: Vec<Vec<Hash>>,
}

impl MerkleLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        self.levels[0].push(leaf);
        let mut j = 0;
        while self.levels[j].len().is_multiple_of(2) {
            let n = self.levels[j].len();
            let parent = node_hash(&self.levels[j][n - 2], &self.levels[j][n - 1]);
            if self.levels.len() == j + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[j + 1].push(parent);
            j += 1;
        }
    }

    /// The root of the first `size` leaves, or `None` if the log is shorter.
    pub fn root_at(&self, size: u64) -> Option<Hash> {
        match size {
            0 => Some(Hash::ZERO),
            s if s > self.size() => None,
            s => Some(self.subtree(0, s)),
        }
    }

    /// The root of the whole log.
    pub fn root(&self) -> Hash {
        self.root_at(self.size()).expect("its own size")
    }

    /// `MTH(D[lo..hi])` for `lo < hi <= size`: a stored node when the range is a complete aligned
    /// subtree, otherwise split as RFC 6962 does.
    fn subtree(&self, lo: u64, hi: u64) -> Hash {
        let n = hi - lo;
        if n.is_power_of_two() && lo.is_multiple_of(n) {
            let j = n.trailing_zeros() as usize;
            return self.levels[j][(lo / n) as usize];
        }
        let k = split(n);
        node_hash(&self.subtree(lo, lo + k), &self.subtree(lo + k, hi))
    }

    /// The inclusion path of leaf `index` in the log's first `size` leaves (RFC 9162 `PATH`,
    /// the sibling nearest the leaf first), or `None` if `index >= size` or the log is shorter
    /// than `size`.
    pub fn prove(&self, index: u64, size: u64) -> Option<Vec<Hash>> {
        if index >= size || size > self.size() {
            return None;
        }
        let mut out = Vec::with_capacity(64 - size.leading_zeros() as usize);
        self.path(index, 0, size, &mut out);
        Some(out)
    }

    fn path(&self, m: u64, lo: u64, hi: u64, out: &mut Vec<Hash>) {
        if hi - lo == 1 {
            return;
        }
        let k = split(hi - lo);
        if m < lo + k {
            self.path(m, lo, lo + k, out);
            out.push(self.subtree(lo + k, hi));
        } else {
            self.path(m, lo + k, hi, out);
            out.push(self.subtree(lo, lo + k));
        }
    }

    /// The compact state of the whole log.
    pub fn frontier(&self) -> Frontier {
        let size = self.size();
        let mut peaks = Vec::new();
        let mut lo = 0;
        for j in (0..64).rev() {
            let n = 1u64 << j;
            if size & n != 0 {
                peaks.push(self.subtree(lo, lo + n));
                lo += n;
            }
        }
        Frontier { size, peaks }
    }
}

/// Checks that `leaf` is leaf `index` of the log of `size` leaves whose root is `root`, given its
/// inclusion path (RFC 9162 section 2.1.3.2, with this module's hashes).
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, path: &[Hash], root: &Hash) -> bool {
    if index >= size || path.len() > MAX_PATH {
        return false;
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && r == *root
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(i: u64) -> Hash {
        leaf_hash(&i.to_be_bytes())
    }

    /// RFC 6962 `MTH`, written from the definition, to check the stored and compact forms.
    fn reference_root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => Hash::ZERO,
            1 => leaves[0],
            n => {
                let k = split(n as u64) as usize;
                node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
            }
        }
    }

    #[test]
    fn every_proof_of_every_size_verifies_and_roots_agree() {
        let mut log = MerkleLog::new();
        let mut frontier = Frontier::default();
        let mut leaves = Vec::new();
        for i in 0..70u64 {
            log.push(leaf(i));
            frontier.push(leaf(i));
            leaves.push(leaf(i));
            let size = i + 1;
            assert_eq!(log.root(), reference_root(&leaves), "size {size}");
            assert_eq!(frontier.root(), log.root(), "size {size}");
            assert_eq!(log.frontier(), frontier, "size {size}");
            assert!(frontier.is_consistent());
            for s in 1..=size {
                let root = log.root_at(s).expect("shorter");
                for idx in 0..s {
                    let path = log.prove(idx, s).expect("in range");
                    assert!(
                        path.len() <= 64 - (s - 1).leading_zeros() as usize,
                        "{idx}/{s}"
                    );
                    assert!(
                        verify_inclusion(idx, s, &leaf(idx), &path, &root),
                        "{idx}/{s}"
                    );
                    // Another leaf or index fails. (The size is not always pinned by the path
                    // alone, which is why headers commit to it beside the root.)
                    assert!(!verify_inclusion(idx, s, &leaf(idx + 100), &path, &root));
                    if s > 1 {
                        assert!(!verify_inclusion(
                            (idx + 1) % s,
                            s,
                            &leaf(idx),
                            &path,
                            &root
                        ));
                    }
                }
            }
        }
        assert_eq!(log.prove(70, 70), None);
        assert_eq!(log.prove(0, 71), None);
        assert_eq!(log.root_at(71), None);
        assert_eq!(MerkleLog::new().root(), Hash::ZERO);
    }

    #[test]
    fn a_path_of_a_million_is_twenty_hashes() {
        let mut log = MerkleLog::new();
        for i in 0..1_000_000u64 {
            log.push(leaf(i));
        }
        let path = log.prove(123_456, 1_000_000).expect("in range");
        assert_eq!(path.len(), 20);
        assert!(verify_inclusion(
            123_456,
            1_000_000,
            &leaf(123_456),
            &path,
            &log.root()
        ));
    }

    #[test]
    fn audit_leaves_separate_their_fields() {
        let h = Hash([7; 32]);
        assert_ne!(audit_leaf("a", 1, &h), audit_leaf("a", 2, &h));
        assert_ne!(audit_leaf("a", 1, &h), audit_leaf("b", 1, &h));
        assert_ne!(audit_leaf("a", 1, &h), audit_leaf("a", 1, &Hash([8; 32])));
        // The length prefix keeps the fleet from bleeding into the seq.
        assert_ne!(audit_leaf("a\0", 1, &h), audit_leaf("a", 1 << 56, &h));
    }
}
