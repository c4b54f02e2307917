//! Block header, block, and the transaction root.

use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::{Hash, PublicKey};
use crate::tx::{MAX_CHAIN_ID, MAX_TX_BYTES, Transaction};
use serde::{Deserialize, Serialize};

/// Most transactions in one block.
pub const MAX_BLOCK_TXS: usize = 8192;
/// Largest encoded block.
pub const MAX_BLOCK_BYTES: usize = 4 * 1024 * 1024;
const HEADER_DOMAIN: &[u8] = b"phoenix-ledger/header/v2\n";
const HEADER_REST_DOMAIN: &[u8] = b"phoenix-ledger/header-rest/v2\n";

/// What every block commits to. Its hash is the block's identity.
///
/// Besides the chain fields it carries the consensus context the block was proposed in
/// (`epoch`, `view`, `parent_view`, `proposer`), so that a validator that missed the proposal can
/// still check it, and the roots that read replicas and light clients need.
///
/// # Hash
/// The hash is taken in two levels, so that an audit-record proof carries 88 bytes of header
/// rather than all of it ([`CompactHeader`]): `H(domain || height || epoch || audit_size ||
/// audit_root || rest)`, where `rest` is the hash of every other field ([`Self::rest_digest`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockHeader {
    /// Chain id from the genesis file.
    pub chain_id: String,
    /// Height; genesis is 0.
    pub height: u64,
    /// Hash of the parent header (zero for genesis).
    pub parent_hash: Hash,
    /// Consensus epoch of the proposal.
    pub epoch: u64,
    /// Consensus view of the proposal.
    pub view: u64,
    /// Consensus view of the parent.
    pub parent_view: u64,
    /// The proposing validator.
    pub proposer: PublicKey,
    /// Proposer's clock, milliseconds since the Unix epoch; strictly increasing along the chain.
    pub timestamp_ms: u64,
    /// Merkle root of the transaction hashes.
    pub tx_root: Hash,
    /// Root of the authenticated state after executing this block.
    pub state_root: Hash,
    /// Hash of the validator set after executing this block: the set of this block's epoch,
    /// which certified it.
    pub validator_set_hash: Hash,
    /// Hash of the validator set that certifies the next block. It differs from
    /// `validator_set_hash` only in the last block of an epoch before a validator-set change,
    /// which is how a light client learns the next epoch's set from a block the current set
    /// certified.
    pub next_validator_set_hash: Hash,
    /// Number of audit records on the ledger after this block (the audit log's size).
    pub audit_size: u64,
    /// Root of the audit log after this block ([`crate::mlog`]).
    pub audit_root: Hash,
    /// Number of transactions.
    pub tx_count: u32,
}

/// The part of a header an audit-record proof needs, with the rest as one digest. Its
/// [`hash`](Self::hash) is the block hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactHeader {
    /// Height.
    pub height: u64,
    /// Epoch.
    pub epoch: u64,
    /// Audit log size after the block.
    pub audit_size: u64,
    /// Audit log root after the block.
    pub audit_root: Hash,
    /// [`BlockHeader::rest_digest`].
    pub rest: Hash,
}

impl CompactHeader {
    /// The block hash.
    pub fn hash(&self) -> Hash {
        Hash::of(&[
            HEADER_DOMAIN,
            &self.height.to_be_bytes(),
            &self.epoch.to_be_bytes(),
            &self.audit_size.to_be_bytes(),
            &self.audit_root.0,
            &self.rest.0,
        ])
    }
}

impl BlockHeader {
    fn write(&self, w: &mut Writer) {
        w.str(&self.chain_id);
        w.u64(self.height);
        w.fixed(&self.parent_hash.0);
        w.u64(self.epoch);
        w.u64(self.view);
        w.u64(self.parent_view);
        w.fixed(&self.proposer.0);
        w.u64(self.timestamp_ms);
        w.fixed(&self.tx_root.0);
        w.fixed(&self.state_root.0);
        w.fixed(&self.validator_set_hash.0);
        w.fixed(&self.next_validator_set_hash.0);
        w.u64(self.audit_size);
        w.fixed(&self.audit_root.0);
        w.u32(self.tx_count);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(BlockHeader {
            chain_id: r.string("chain id", MAX_CHAIN_ID)?,
            height: r.u64("height")?,
            parent_hash: Hash(r.array("parent hash")?),
            epoch: r.u64("epoch")?,
            view: r.u64("view")?,
            parent_view: r.u64("parent view")?,
            proposer: PublicKey(r.array("proposer")?),
            timestamp_ms: r.u64("timestamp")?,
            tx_root: Hash(r.array("tx root")?),
            state_root: Hash(r.array("state root")?),
            validator_set_hash: Hash(r.array("validator set hash")?),
            next_validator_set_hash: Hash(r.array("next validator set hash")?),
            audit_size: r.u64("audit size")?,
            audit_root: Hash(r.array("audit root")?),
            tx_count: r.u32("tx count")?,
        })
    }
    /// Canonical bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(256);
        self.write(&mut w);
        w.finish()
    }
    /// The hash of every field not in [`CompactHeader`].
    pub fn rest_digest(&self) -> Hash {
        let mut w = Writer::with_capacity(256);
        w.fixed(HEADER_REST_DOMAIN);
        w.str(&self.chain_id);
        w.fixed(&self.parent_hash.0);
        w.u64(self.view);
        w.u64(self.parent_view);
        w.fixed(&self.proposer.0);
        w.u64(self.timestamp_ms);
        w.fixed(&self.tx_root.0);
        w.fixed(&self.state_root.0);
        w.fixed(&self.validator_set_hash.0);
        w.fixed(&self.next_validator_set_hash.0);
        w.u32(self.tx_count);
        Hash::of(&[&w.finish()])
    }
    /// The header as an audit proof carries it.
    pub fn compact(&self) -> CompactHeader {
        CompactHeader {
            height: self.height,
            epoch: self.epoch,
            audit_size: self.audit_size,
            audit_root: self.audit_root,
            rest: self.rest_digest(),
        }
    }
    /// The block hash (see the type's documentation).
    pub fn hash(&self) -> Hash {
        self.compact().hash()
    }
    /// Decodes [`Self::encode`]'s bytes.
    ///
    /// # Errors
    /// Malformed input or trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let h = Self::read(&mut r)?;
        r.finish()?;
        Ok(h)
    }
}

/// A header and its transactions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The header.
    pub header: BlockHeader,
    /// The transactions, in execution order.
    pub txs: Vec<Transaction>,
}

impl Block {
    /// Canonical bytes: header, count, then each transaction length-prefixed.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(256 + self.txs.len() * 300);
        self.header.write(&mut w);
        w.u32(u32::try_from(self.txs.len()).expect("bounded by MAX_BLOCK_TXS"));
        for tx in &self.txs {
            w.u32(u32::try_from(tx.encoded_len()).expect("bounded by MAX_TX_BYTES"));
            tx.write(&mut w);
        }
        w.finish()
    }
    /// Length of [`Self::encode`]'s bytes, without encoding the transactions.
    pub fn encoded_len(&self) -> usize {
        let mut w = Writer::with_capacity(256);
        self.header.write(&mut w);
        w.finish().len() + 4 + self.txs.iter().map(|t| 4 + t.encoded_len()).sum::<usize>()
    }
    /// Decodes canonical bytes.
    ///
    /// # Errors
    /// Malformed input, more than [`MAX_BLOCK_TXS`] transactions, more than [`MAX_BLOCK_BYTES`],
    /// or a `tx_count` that disagrees with the list.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_BLOCK_BYTES {
            return Err(DecodeError::TooLong {
                field: "block",
                len: bytes.len(),
                max: MAX_BLOCK_BYTES,
            });
        }
        let mut r = Reader::new(bytes);
        let header = BlockHeader::read(&mut r)?;
        let n = r.u32("tx count")? as usize;
        if n > MAX_BLOCK_TXS {
            return Err(DecodeError::TooLong {
                field: "block transactions",
                len: n,
                max: MAX_BLOCK_TXS,
            });
        }
        if n != header.tx_count as usize {
            return Err(DecodeError::Invalid {
                field: "tx count",
                reason: "header and body disagree",
            });
        }
        let mut txs = Vec::with_capacity(n);
        for _ in 0..n {
            txs.push(Transaction::decode(r.bytes("transaction", MAX_TX_BYTES)?)?);
        }
        r.finish()?;
        Ok(Block { header, txs })
    }
    /// The block hash (the header's).
    pub fn hash(&self) -> Hash {
        self.header.hash()
    }
}

/// Binary Merkle root over transaction hashes (`leaf = H(0x00||h)`, `node = H(0x01||l||r)`, an
/// odd node is carried up unchanged; empty = zero).
pub fn tx_root(hashes: &[Hash]) -> Hash {
    if hashes.is_empty() {
        return Hash::ZERO;
    }
    let mut level: Vec<Hash> = hashes.iter().map(|h| Hash::of(&[&[0u8], &h.0])).collect();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|c| match c {
                [l, r] => Hash::of(&[&[1u8], &l.0, &r.0]),
                [one] => *one,
                _ => unreachable!("chunks of two"),
            })
            .collect();
    }
    level[0]
}
