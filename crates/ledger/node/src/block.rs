//! The ledger block as the consensus engine sees it.

use bytes::{Buf, BufMut};
use commonware_codec::{EncodeSize, Error as CodecError, Read, Write};
use commonware_consensus::{
    Heightable,
    simplex::types::Context,
    types::{Epoch, Height, Round, View},
};
use commonware_cryptography::{Digestible, ed25519, sha256::Digest};
use phoenix_ledger_types::block::{Block, MAX_BLOCK_BYTES};
use phoenix_ledger_types::crypto::Hash;
use std::sync::Arc;

/// Consensus context type: round, leader and parent, all embedded in the header.
pub type Ctx = Context<Digest, ed25519::PublicKey>;

/// A [`Block`] with its hash computed once. Cheap to clone.
#[derive(Clone, Debug)]
pub struct LedgerBlock {
    inner: Arc<Block>,
    hash: Hash,
}

impl PartialEq for LedgerBlock {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash
    }
}
impl Eq for LedgerBlock {}

impl LedgerBlock {
    /// Wraps a block.
    pub fn new(block: Block) -> Self {
        let hash = block.hash();
        Self {
            inner: Arc::new(block),
            hash,
        }
    }
    /// The block.
    pub fn block(&self) -> &Block {
        &self.inner
    }
    /// The block hash.
    pub fn hash(&self) -> Hash {
        self.hash
    }
}

/// Converts our hash into the engine's digest.
pub fn to_digest(h: Hash) -> Digest {
    Digest(h.0)
}
/// Converts the engine's digest into our hash.
pub fn from_digest(d: &Digest) -> Hash {
    Hash(d.0)
}
/// Converts our public key into the engine's.
///
/// # Panics
/// If the bytes are not a valid ed25519 point (validator keys are checked when loaded).
pub fn to_engine_key(k: &phoenix_ledger_types::crypto::PublicKey) -> ed25519::PublicKey {
    use commonware_codec::DecodeExt;
    ed25519::PublicKey::decode(k.0.to_vec()).expect("validator keys are valid points")
}
/// Converts the engine's public key into ours.
pub fn from_engine_key(k: &ed25519::PublicKey) -> phoenix_ledger_types::crypto::PublicKey {
    let b: &[u8] = k.as_ref();
    phoenix_ledger_types::crypto::PublicKey(b.try_into().expect("32 bytes"))
}

impl Write for LedgerBlock {
    fn write(&self, buf: &mut impl BufMut) {
        let bytes = self.inner.encode();
        buf.put_u32(u32::try_from(bytes.len()).expect("bounded block"));
        buf.put_slice(&bytes);
    }
}

impl EncodeSize for LedgerBlock {
    fn encode_size(&self) -> usize {
        4 + self.inner.encoded_len()
    }
}

impl Read for LedgerBlock {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        if buf.remaining() < 4 {
            return Err(CodecError::EndOfBuffer);
        }
        let len = buf.get_u32() as usize;
        if len > MAX_BLOCK_BYTES {
            return Err(CodecError::InvalidLength(len));
        }
        if buf.remaining() < len {
            return Err(CodecError::EndOfBuffer);
        }
        let mut bytes = vec![0u8; len];
        buf.copy_to_slice(&mut bytes);
        let block = Block::decode(&bytes).map_err(|_| CodecError::Invalid("block", "malformed"))?;
        Ok(LedgerBlock::new(block))
    }
}

impl Digestible for LedgerBlock {
    type Digest = Digest;
    fn digest(&self) -> Digest {
        to_digest(self.hash)
    }
}

impl Heightable for LedgerBlock {
    fn height(&self) -> Height {
        Height::new(self.inner.header.height)
    }
}

impl commonware_consensus::Block for LedgerBlock {
    fn parent(&self) -> Digest {
        to_digest(self.inner.header.parent_hash)
    }
}

impl commonware_consensus::CertifiableBlock for LedgerBlock {
    type Context = Ctx;
    fn context(&self) -> Ctx {
        let h = &self.inner.header;
        Context {
            round: Round::new(Epoch::new(h.epoch), View::new(h.view)),
            leader: to_engine_key(&h.proposer),
            parent: (View::new(h.parent_view), to_digest(h.parent_hash)),
        }
    }
}

impl commonware_consensus::BoundedBlock for LedgerBlock {
    fn max_encode_size(_: &()) -> usize {
        4 + MAX_BLOCK_BYTES
    }
}
