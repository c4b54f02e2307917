//! An authenticated key-value map with O(1) snapshots.
//!
//! A radix-16 Merkle trie keyed by `H(key)` (H = BLAKE3). Nodes are shared between snapshots through
//! `Arc` and copied only on write, so every block's post-state is a cheap clone of its parent's
//! plus the paths it touched, which is what executing on top of not-yet-finalized blocks needs.
//!
//! The shape is canonical (a leaf sits at the shallowest depth at which its path prefix is unique;
//! no branch has a leaf as its only child), so the root is a function of the contents alone,
//! whatever the order of writes. Branch hashes are cached and recomputed only along written paths.
//!
//! Hashes: `leaf = H(0x00 || path || value)`, `branch = H(0x01 || bitmap16 || child hashes)`,
//! empty map = 32 zero bytes. A proof of a key is the list of sibling hashes along its path.

use crate::crypto::Hash;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, OnceLock};

#[derive(Clone)]
enum Node {
    Leaf {
        path: [u8; 32],
        key: Arc<[u8]>,
        value: Arc<[u8]>,
        hash: Hash,
    },
    Branch {
        children: Box<[Option<Arc<Node>>; 16]>,
        hash: OnceLock<Hash>,
    },
}

fn nibble(path: &[u8; 32], depth: usize) -> usize {
    let b = path[depth / 2];
    usize::from(if depth.is_multiple_of(2) {
        b >> 4
    } else {
        b & 0x0f
    })
}

fn leaf_hash(path: &[u8; 32], value: &[u8]) -> Hash {
    Hash::of(&[&[0u8], path, value])
}

impl Node {
    fn hash(&self) -> Hash {
        match self {
            Node::Leaf { hash, .. } => *hash,
            Node::Branch { children, hash } => *hash.get_or_init(|| branch_hash(children)),
        }
    }
}

fn branch_hash(children: &[Option<Arc<Node>>; 16]) -> Hash {
    let mut bitmap = 0u16;
    let mut buf = Vec::with_capacity(3 + 16 * 32);
    buf.push(1u8);
    buf.extend_from_slice(&[0, 0]);
    for (i, c) in children.iter().enumerate() {
        if let Some(c) = c {
            bitmap |= 1 << i;
            buf.extend_from_slice(&c.hash().0);
        }
    }
    buf[1..3].copy_from_slice(&bitmap.to_be_bytes());
    Hash::of(&[&buf])
}

fn empty_children() -> Box<[Option<Arc<Node>>; 16]> {
    Box::new(std::array::from_fn(|_| None))
}

/// An inclusion or exclusion proof for one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    /// For each branch on the path from the root: its child bitmap and the hashes of the present
    /// children other than the one on the path, in nibble order.
    pub branches: Vec<(u16, Vec<Hash>)>,
    /// The leaf reached (its path and value, hex in JSON) if the path ended at a different key's
    /// leaf, which proves absence.
    pub other_leaf: Option<(Hash, String)>,
}

/// The authenticated map. `Clone` is O(1).
#[derive(Clone, Default)]
pub struct AuthMap {
    root: Option<Arc<Node>>,
    len: usize,
}

impl std::fmt::Debug for AuthMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuthMap(len={}, root={:?})", self.len, self.root_hash())
    }
}

enum Removed {
    NotFound,
    Gone(Option<Arc<Node>>),
}

impl AuthMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }
    /// Number of keys.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The root hash, a commitment to every key and value.
    pub fn root_hash(&self) -> Hash {
        self.root.as_ref().map_or(Hash::ZERO, |n| n.hash())
    }
    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        let path = Hash::of(&[key]).0;
        let mut node = self.root.as_deref()?;
        let mut depth = 0;
        loop {
            match node {
                Node::Leaf { path: p, value, .. } => {
                    return (*p == path).then_some(&**value);
                }
                Node::Branch { children, .. } => {
                    node = children[nibble(&path, depth)].as_deref()?;
                    depth += 1;
                }
            }
        }
    }
    /// Sets `key` to `value`.
    pub fn insert(&mut self, key: &[u8], value: &[u8]) {
        self.insert_inner(key, value, false);
    }

    /// Sets `key` to `value` unless `key` is present: then nothing changes and its value is
    /// returned. One walk down the trie where a `get` then an `insert` would take two.
    pub fn insert_new(&mut self, key: &[u8], value: &[u8]) -> Option<Arc<[u8]>> {
        self.insert_inner(key, value, true)
    }

    fn insert_inner(&mut self, key: &[u8], value: &[u8], keep: bool) -> Option<Arc<[u8]>> {
        let path = Hash::of(&[key]).0;
        let leaf = Arc::new(Node::Leaf {
            path,
            key: key.into(),
            value: value.into(),
            hash: leaf_hash(&path, value),
        });
        let mut added = false;
        let mut kept = keep.then_some(None);
        self.root = Some(Self::insert_at(
            self.root.take(),
            leaf,
            &path,
            0,
            &mut added,
            &mut kept,
        ));
        if added {
            self.len += 1;
        }
        kept.flatten()
    }

    /// `kept` is `None` to replace an existing value, `Some(_)` to keep it (and receive it).
    fn insert_at(
        node: Option<Arc<Node>>,
        leaf: Arc<Node>,
        path: &[u8; 32],
        depth: usize,
        added: &mut bool,
        kept: &mut Option<Option<Arc<[u8]>>>,
    ) -> Arc<Node> {
        let Some(mut node) = node else {
            *added = true;
            return leaf;
        };
        match &*node {
            Node::Leaf { path: p, value, .. } if p == path => match kept {
                // The same node back: its ancestors' contents, and so the root, do not change.
                Some(k) => {
                    *k = Some(value.clone());
                    node
                }
                None => leaf,
            },
            Node::Leaf { path: p, .. } => {
                let mut children = empty_children();
                children[nibble(p, depth)] = Some(node.clone());
                let branch = Arc::new(Node::Branch {
                    children,
                    hash: OnceLock::new(),
                });
                Self::insert_at(Some(branch), leaf, path, depth, added, kept)
            }
            Node::Branch { .. } => {
                let n = Arc::make_mut(&mut node);
                let Node::Branch { children, hash } = n else {
                    unreachable!("checked above")
                };
                *hash = OnceLock::new();
                let i = nibble(path, depth);
                let child = children[i].take();
                children[i] = Some(Self::insert_at(child, leaf, path, depth + 1, added, kept));
                node
            }
        }
    }

    /// Removes `key`; returns whether it was present.
    pub fn remove(&mut self, key: &[u8]) -> bool {
        if self.get(key).is_none() {
            return false;
        }
        let path = Hash::of(&[key]).0;
        // Taking (not cloning) the root keeps nodes uniquely owned so they are edited in place.
        match Self::remove_at(self.root.take(), &path, 0) {
            Removed::NotFound => unreachable!("presence checked above"),
            Removed::Gone(n) => {
                self.root = n;
                self.len -= 1;
                true
            }
        }
    }

    fn remove_at(node: Option<Arc<Node>>, path: &[u8; 32], depth: usize) -> Removed {
        let Some(mut node) = node else {
            return Removed::NotFound;
        };
        match &*node {
            Node::Leaf { path: p, .. } => {
                if p == path {
                    Removed::Gone(None)
                } else {
                    Removed::NotFound
                }
            }
            Node::Branch { .. } => {
                let i = nibble(path, depth);
                let n = Arc::make_mut(&mut node);
                let Node::Branch { children, hash } = n else {
                    unreachable!("checked above")
                };
                *hash = OnceLock::new();
                let Removed::Gone(new_child) = Self::remove_at(children[i].take(), path, depth + 1)
                else {
                    unreachable!("presence checked by the caller")
                };
                children[i] = new_child;
                let mut present = children.iter().flatten();
                let first = present.next().cloned();
                let more = present.next().is_some();
                match (first, more) {
                    (None, _) => Removed::Gone(None),
                    // Canonical form: a branch never keeps a lone leaf.
                    (Some(only), false) if matches!(*only, Node::Leaf { .. }) => {
                        Removed::Gone(Some(only))
                    }
                    _ => Removed::Gone(Some(node)),
                }
            }
        }
    }

    /// Every `(key, value)` in path order (for snapshots and dumps).
    pub fn entries(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::with_capacity(self.len);
        fn walk(n: &Node, out: &mut Vec<(Vec<u8>, Vec<u8>)>) {
            match n {
                Node::Leaf { key, value, .. } => out.push((key.to_vec(), value.to_vec())),
                Node::Branch { children, .. } => {
                    children.iter().flatten().for_each(|c| walk(c, out))
                }
            }
        }
        if let Some(r) = &self.root {
            walk(r, &mut out);
        }
        out
    }

    /// A proof that `key` has its current value, or is absent.
    pub fn prove(&self, key: &[u8]) -> Proof {
        let path = Hash::of(&[key]).0;
        let mut branches = Vec::new();
        let mut node = self.root.as_deref();
        let mut depth = 0;
        let mut other_leaf = None;
        while let Some(n) = node {
            match n {
                Node::Leaf { path: p, value, .. } => {
                    if *p != path {
                        other_leaf = Some((Hash(*p), hex::encode(value)));
                    }
                    break;
                }
                Node::Branch { children, .. } => {
                    let i = nibble(&path, depth);
                    let mut bitmap = 0u16;
                    let mut sibs = Vec::new();
                    for (j, c) in children.iter().enumerate() {
                        if let Some(c) = c {
                            bitmap |= 1 << j;
                            if j != i {
                                sibs.push(c.hash());
                            }
                        }
                    }
                    branches.push((bitmap, sibs));
                    node = children[i].as_deref();
                    depth += 1;
                }
            }
        }
        Proof {
            branches,
            other_leaf,
        }
    }
}

/// Checks a proof against a root: `value` is `Some` to prove inclusion, `None` for absence.
pub fn verify_proof(root: &Hash, key: &[u8], value: Option<&[u8]>, proof: &Proof) -> bool {
    let path = Hash::of(&[key]).0;
    // The hash of the node at the end of the path, if any.
    let mut cur: Option<Hash> = match (value, &proof.other_leaf) {
        (Some(v), None) => Some(leaf_hash(&path, v)),
        (Some(_), Some(_)) => return false,
        (None, Some((p, v))) => {
            let Ok(v) = hex::decode(v) else { return false };
            if p.0 == path {
                return false;
            }
            Some(leaf_hash(&p.0, &v))
        }
        (None, None) => None,
    };
    for (depth, (bitmap, sibs)) in proof.branches.iter().enumerate().rev() {
        let i = nibble(&path, depth);
        let on_path = bitmap & (1 << i) != 0;
        if on_path != cur.is_some() {
            return false;
        }
        let mut buf = vec![1u8];
        buf.extend_from_slice(&bitmap.to_be_bytes());
        let mut it = sibs.iter();
        for j in 0..16 {
            if bitmap & (1 << j) == 0 {
                continue;
            }
            if j == i {
                buf.extend_from_slice(&cur.expect("checked").0);
            } else {
                let Some(h) = it.next() else { return false };
                buf.extend_from_slice(&h.0);
            }
        }
        if it.next().is_some() {
            return false;
        }
        cur = Some(Hash::of(&[&buf]));
    }
    cur.unwrap_or(Hash::ZERO) == *root
}
