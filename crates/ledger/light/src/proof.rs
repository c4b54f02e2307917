//! Proofs as the ledger serves them (`GET /v1/proof/...`) and as files carry them: JSON for
//! people and files, and a compact binary encoding for the wire to an edge site (its length is
//! what the size targets measure).
//!
//! Every proof is: the validator-set changes since some epoch ([`SetChange`], each certified by
//! the set before it), a certified header, and what that header commits to (an audit record's
//! place in the audit log, or a state entry under the state root).

use crate::cert::FinalityCert;
use crate::error::LightError;
use phoenix_ledger_types::block::{BlockHeader, CompactHeader};
use phoenix_ledger_types::codec::{Reader, Writer};
use phoenix_ledger_types::crypto::{Hash, PublicKey};
use phoenix_ledger_types::exec::Validator;
use phoenix_ledger_types::mlog::MAX_PATH;
use phoenix_ledger_types::state::Proof as TrieProof;
use phoenix_ledger_types::tx::{MAX_ID, MAX_TEXT};
use serde::{Deserialize, Serialize};

/// Version of the proof encodings (first byte of the binary form, `version` in JSON).
pub const PROOF_VERSION: u8 = 1;
/// Most validator-set changes one proof carries.
pub const MAX_CHANGES: usize = 100_000;
/// Largest header in a proof.
const MAX_HEADER_BYTES: usize = 1024;
/// Largest state value in a proof.
const MAX_VALUE_BYTES: usize = 1 << 20;

/// A validator-set change: the last block of an epoch, certified by that epoch's set, and the
/// next epoch's validators, which its `next_validator_set_hash` commits to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetChange {
    /// The boundary block's header.
    pub header: BlockHeader,
    /// Its finality certificate.
    pub certificate: FinalityCert,
    /// The validators of the next epoch, sorted by key.
    pub next_validators: Vec<Validator>,
}

/// Proof that an audit record is on the ledger: `(fleet, seq, hash)` is leaf `index` of the audit
/// log whose root a certified block commits to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditProof {
    /// Validator-set changes to follow first, oldest first.
    pub changes: Vec<SetChange>,
    /// The certified block, compacted to what the proof needs.
    pub header: CompactHeader,
    /// Its finality certificate.
    pub certificate: FinalityCert,
    /// The record's fleet.
    pub fleet: String,
    /// Its seq in the fleet's chain.
    pub seq: u64,
    /// Its hash in the fleet's chain.
    pub hash: Hash,
    /// Its position in the audit log.
    pub index: u64,
    /// The inclusion path, sibling nearest the leaf first.
    pub path: Vec<Hash>,
}

/// Proof of a state entry (`GET /v1/state/{module}/{key}`), or of its absence, under the state
/// root of a certified block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateProof {
    /// Validator-set changes to follow first, oldest first.
    pub changes: Vec<SetChange>,
    /// The certified block.
    pub header: BlockHeader,
    /// Its finality certificate.
    pub certificate: FinalityCert,
    /// The module (first segment of the key).
    pub module: String,
    /// The key within the module.
    pub key: String,
    /// The stored bytes (canonical JSON), `None` to prove absence.
    #[serde(with = "hex_opt")]
    pub value: Option<Vec<u8>>,
    /// The trie proof.
    pub proof: TrieProof,
}

/// Proof of a recent certified block, from which a checkpoint is made
/// (`phoenix ledger checkpoint`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointProof {
    /// Validator-set changes to follow first, oldest first.
    pub changes: Vec<SetChange>,
    /// The certified block.
    pub header: BlockHeader,
    /// Its finality certificate.
    pub certificate: FinalityCert,
}

/// Any proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Proof {
    /// An audit record.
    Audit(AuditProof),
    /// A state entry.
    State(StateProof),
    /// A certified block, for a checkpoint.
    Checkpoint(CheckpointProof),
}

#[derive(Serialize, Deserialize)]
struct ProofFile {
    version: u8,
    #[serde(flatten)]
    proof: Proof,
}

mod hex_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    pub(super) fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_str(&hex::encode(b)),
            None => s.serialize_none(),
        }
    }
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| hex::decode(s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

fn write_validators(w: &mut Writer, vs: &[Validator]) {
    w.varint(vs.len() as u64);
    for v in vs {
        w.fixed(&v.key.0);
        w.vstr(&v.address);
    }
}

fn read_validators(r: &mut Reader<'_>) -> Result<Vec<Validator>, LightError> {
    let n = r.varint("validator count")?;
    if n > crate::cert::MAX_VALIDATORS as u64 {
        return Err(LightError::Malformed(format!("{n} validators")));
    }
    (0..n)
        .map(|_| {
            Ok(Validator {
                key: PublicKey(r.array("validator key")?),
                address: r.vstring("validator address", MAX_TEXT)?,
            })
        })
        .collect()
}

fn write_header(w: &mut Writer, h: &BlockHeader) {
    w.vbytes(&h.encode());
}

fn read_header(r: &mut Reader<'_>) -> Result<BlockHeader, LightError> {
    Ok(BlockHeader::decode(r.vbytes("header", MAX_HEADER_BYTES)?)?)
}

fn write_changes(w: &mut Writer, changes: &[SetChange]) {
    w.varint(changes.len() as u64);
    for c in changes {
        write_header(w, &c.header);
        c.certificate.write(w);
        write_validators(w, &c.next_validators);
    }
}

fn read_changes(r: &mut Reader<'_>) -> Result<Vec<SetChange>, LightError> {
    let n = r.varint("change count")?;
    if n > MAX_CHANGES as u64 {
        return Err(LightError::Malformed(format!("{n} validator-set changes")));
    }
    (0..n)
        .map(|_| {
            Ok(SetChange {
                header: read_header(r)?,
                certificate: FinalityCert::read(r)?,
                next_validators: read_validators(r)?,
            })
        })
        .collect()
}

fn write_trie(w: &mut Writer, p: &TrieProof) {
    w.varint(p.branches.len() as u64);
    for (bitmap, sibs) in &p.branches {
        w.u16(*bitmap);
        w.varint(sibs.len() as u64);
        for h in sibs {
            w.fixed(&h.0);
        }
    }
    match &p.other_leaf {
        None => w.u8(0),
        Some((path, value)) => {
            w.u8(1);
            w.fixed(&path.0);
            // The JSON form carries hex; the wire carries the bytes.
            w.vbytes(&hex::decode(value).unwrap_or_default());
        }
    }
}

fn read_trie(r: &mut Reader<'_>) -> Result<TrieProof, LightError> {
    let n = r.varint("trie depth")?;
    if n > 64 {
        return Err(LightError::Malformed(format!("trie proof {n} levels deep")));
    }
    let mut branches = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let bitmap = r.u16("branch bitmap")?;
        let k = r.varint("sibling count")?;
        if k > 16 {
            return Err(LightError::Malformed(format!("{k} siblings in one branch")));
        }
        let sibs = (0..k)
            .map(|_| Ok(Hash(r.array("sibling")?)))
            .collect::<Result<Vec<_>, LightError>>()?;
        branches.push((bitmap, sibs));
    }
    let other_leaf = match r.u8("other leaf")? {
        0 => None,
        1 => Some((
            Hash(r.array("other leaf path")?),
            hex::encode(r.vbytes("other leaf value", MAX_VALUE_BYTES)?),
        )),
        t => return Err(LightError::Malformed(format!("other-leaf tag {t}"))),
    };
    Ok(TrieProof {
        branches,
        other_leaf,
    })
}

impl Proof {
    /// The compact binary encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(1024);
        w.u8(PROOF_VERSION);
        match self {
            Proof::Audit(p) => {
                w.u8(1);
                write_changes(&mut w, &p.changes);
                let h = &p.header;
                w.varint(h.height);
                w.varint(h.epoch);
                w.varint(h.audit_size);
                w.fixed(&h.audit_root.0);
                w.fixed(&h.rest.0);
                p.certificate.write(&mut w);
                w.vstr(&p.fleet);
                w.varint(p.seq);
                w.fixed(&p.hash.0);
                w.varint(p.index);
                w.varint(p.path.len() as u64);
                for h in &p.path {
                    w.fixed(&h.0);
                }
            }
            Proof::State(p) => {
                w.u8(2);
                write_changes(&mut w, &p.changes);
                write_header(&mut w, &p.header);
                p.certificate.write(&mut w);
                w.vstr(&p.module);
                w.vstr(&p.key);
                match &p.value {
                    None => w.u8(0),
                    Some(v) => {
                        w.u8(1);
                        w.vbytes(v);
                    }
                }
                write_trie(&mut w, &p.proof);
            }
            Proof::Checkpoint(p) => {
                w.u8(3);
                write_changes(&mut w, &p.changes);
                write_header(&mut w, &p.header);
                p.certificate.write(&mut w);
            }
        }
        w.finish()
    }

    /// Decodes [`Self::encode`]'s bytes.
    ///
    /// # Errors
    /// [`LightError::Malformed`] for another version, an unknown kind, bounds exceeded, or
    /// trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, LightError> {
        let mut r = Reader::new(bytes);
        let v = r.u8("version")?;
        if v != PROOF_VERSION {
            return Err(LightError::Malformed(format!(
                "proof version {v}, this client reads {PROOF_VERSION}"
            )));
        }
        let proof = match r.u8("kind")? {
            1 => {
                let changes = read_changes(&mut r)?;
                let header = CompactHeader {
                    height: r.varint("height")?,
                    epoch: r.varint("epoch")?,
                    audit_size: r.varint("audit size")?,
                    audit_root: Hash(r.array("audit root")?),
                    rest: Hash(r.array("header rest")?),
                };
                let certificate = FinalityCert::read(&mut r)?;
                let fleet = r.vstring("fleet", MAX_ID)?;
                let seq = r.varint("seq")?;
                let hash = Hash(r.array("chain hash")?);
                let index = r.varint("index")?;
                let n = r.varint("path length")?;
                if n > MAX_PATH as u64 {
                    return Err(LightError::Malformed(format!("path of {n} hashes")));
                }
                let path = (0..n)
                    .map(|_| Ok(Hash(r.array("path")?)))
                    .collect::<Result<Vec<_>, LightError>>()?;
                Proof::Audit(AuditProof {
                    changes,
                    header,
                    certificate,
                    fleet,
                    seq,
                    hash,
                    index,
                    path,
                })
            }
            2 => {
                let changes = read_changes(&mut r)?;
                let header = read_header(&mut r)?;
                let certificate = FinalityCert::read(&mut r)?;
                let module = r.vstring("module", MAX_ID)?;
                let key = r.vstring("key", 2 * MAX_ID)?;
                let value = match r.u8("value tag")? {
                    0 => None,
                    1 => Some(r.vbytes("value", MAX_VALUE_BYTES)?.to_vec()),
                    t => return Err(LightError::Malformed(format!("value tag {t}"))),
                };
                let proof = read_trie(&mut r)?;
                Proof::State(StateProof {
                    changes,
                    header,
                    certificate,
                    module,
                    key,
                    value,
                    proof,
                })
            }
            3 => Proof::Checkpoint(CheckpointProof {
                changes: read_changes(&mut r)?,
                header: read_header(&mut r)?,
                certificate: FinalityCert::read(&mut r)?,
            }),
            k => return Err(LightError::Malformed(format!("proof kind {k}"))),
        };
        r.finish()?;
        Ok(proof)
    }

    /// The JSON form (`{"version": 1, "kind": "audit" | "state" | "checkpoint", ...}`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(ProofFile {
            version: PROOF_VERSION,
            proof: self.clone(),
        })
        .expect("proofs serialise")
    }

    /// Reads the JSON form.
    ///
    /// # Errors
    /// [`LightError::Malformed`] for JSON that is not a proof of this version.
    pub fn from_json(v: serde_json::Value) -> Result<Self, LightError> {
        let f: ProofFile =
            serde_json::from_value(v).map_err(|e| LightError::Malformed(e.to_string()))?;
        if f.version != PROOF_VERSION {
            return Err(LightError::Malformed(format!(
                "proof version {}, this client reads {PROOF_VERSION}",
                f.version
            )));
        }
        Ok(f.proof)
    }

    /// Reads a proof file in either form (JSON if it starts with `{`, binary otherwise).
    ///
    /// # Errors
    /// [`LightError::Malformed`].
    pub fn parse(bytes: &[u8]) -> Result<Self, LightError> {
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => Self::from_json(
                serde_json::from_slice(bytes)
                    .map_err(|e| LightError::Malformed(format!("not JSON: {e}")))?,
            ),
            _ => Self::decode(bytes),
        }
    }

    /// The validator-set changes the proof carries.
    pub fn changes(&self) -> &[SetChange] {
        match self {
            Proof::Audit(p) => &p.changes,
            Proof::State(p) => &p.changes,
            Proof::Checkpoint(p) => &p.changes,
        }
    }
}
