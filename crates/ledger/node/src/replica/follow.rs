//! The pure core of a read replica: what it trusts for the next block, and whether a run of
//! blocks ending in a certified one may be applied (no I/O, no clock).
//!
//! The set that certifies block `tip + 1` is the one the (already verified) tip's header commits
//! to as `next_validator_set_hash`, with the list taken from the replica's own state after the
//! tip. Inside an epoch that is the epoch's set; at an epoch's last block it is the next
//! epoch's, so validator-set changes are followed exactly as the validators follow them (the
//! set of a height is a function of the finalized chain alone). A block that is not itself
//! certified is accepted only as an ancestor, by hash links, of a certified block of the same
//! epoch: a certificate of epoch `e + 1` never vouches for the end of epoch `e`, whose state
//! names the set that certificate is checked against.

use phoenix_ledger_light::LightError;
use phoenix_ledger_light::cert::FinalityCert;
use phoenix_ledger_types::block::{Block, BlockHeader};
use phoenix_ledger_types::codec::{DecodeError, Reader, Writer};
use phoenix_ledger_types::crypto::Hash;
use phoenix_ledger_types::exec::{LedgerState, Validator, validators_hash};

/// Most blocks a replica holds waiting for a certified descendant (and most records an
/// upstream answers at once).
pub const MAX_SEGMENT: usize = 256;

/// One finalized block as a replica receives and stores it: the block, and its own finality
/// certificate when it has one (a block finalized only as the ancestor of another has none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRecord {
    /// The block.
    pub block: Block,
    /// Its finality certificate, in the light client's form.
    pub cert: Option<FinalityCert>,
}

impl SyncRecord {
    /// The canonical encoding: `u32 len || block || u8 has_cert || [cert]`.
    pub fn encode(&self) -> Vec<u8> {
        let b = self.block.encode();
        let mut w = Writer::with_capacity(b.len() + 256);
        // Blocks are bounded far below `u32::MAX` (`MAX_BLOCK_BYTES`).
        w.bytes(&b);
        match &self.cert {
            Some(c) => {
                w.u8(1);
                c.write(&mut w);
            }
            None => w.u8(0),
        }
        w.finish()
    }

    /// Decodes [`Self::encode`]'s bytes (exactly; trailing bytes are refused).
    ///
    /// # Errors
    /// Malformed bytes: what is wrong, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut r = Reader::new(bytes);
        let raw = r
            .bytes("block", phoenix_ledger_types::block::MAX_BLOCK_BYTES)
            .map_err(|e: DecodeError| e.to_string())?;
        let block = Block::decode(raw).map_err(|e| format!("block: {e}"))?;
        let cert = match r.u8("certificate flag").map_err(|e| e.to_string())? {
            0 => None,
            1 => Some(FinalityCert::read(&mut r).map_err(|e| e.to_string())?),
            f => return Err(format!("certificate flag {f}")),
        };
        r.finish().map_err(|e| e.to_string())?;
        Ok(SyncRecord { block, cert })
    }
}

/// What the replica trusts for the next block: the verified tip and the set that certifies the
/// block after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    /// The chain.
    pub chain_id: String,
    /// Blocks per epoch (from the genesis).
    pub epoch_length: u64,
    /// The verified tip's height.
    pub height: u64,
    /// Its hash.
    pub hash: Hash,
    /// The validators that certify block `height + 1`, sorted by key.
    pub next_set: Vec<Validator>,
    /// Their hash (the tip's `next_validator_set_hash`).
    pub next_set_hash: Hash,
}

/// Why a run of blocks is refused. Every variant is evidence against the upstream that sent
/// it, never data: nothing of the run is applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FollowError {
    /// The block does not extend the verified tip (height or parent hash).
    #[error("block {height} does not extend the verified chain: {why}")]
    Unlinked {
        /// Its height.
        height: u64,
        /// What disagrees.
        why: String,
    },
    /// A header field breaks a chain rule before any signature is looked at.
    #[error("block {height}: {why}")]
    BadHeader {
        /// Its height.
        height: u64,
        /// What is wrong.
        why: String,
    },
    /// A run of blocks has no certified block of the epoch they are in.
    #[error(
        "blocks {from}..={to} carry no finality certificate of their epoch {epoch} (an \
         uncertified block is accepted only below a certified block of its own epoch)"
    )]
    Uncertified {
        /// First block of the run.
        from: u64,
        /// Last block of the run.
        to: u64,
        /// Their epoch.
        epoch: u64,
    },
    /// The certificate does not verify against the epoch's validator set.
    #[error("block {height} ({hash}): the finality certificate is refused: {source}")]
    Certificate {
        /// The certified block's height.
        height: u64,
        /// The hash the certificate must sign.
        hash: Hash,
        /// Why the light client's check refused it (boxed: it is large, and every `Result` of
        /// this module would be as large).
        #[source]
        source: Box<LightError>,
    },
    /// The block is certified but does not execute to its header on the replica's state.
    #[error("block {height} ({hash}) does not execute on the verified state: {why}")]
    Execution {
        /// Its height.
        height: u64,
        /// Its hash.
        hash: Hash,
        /// Why.
        why: String,
    },
}

impl Expect {
    /// What to expect after `header`, whose post-state is `state` (genesis, or a block this
    /// replica verified and executed).
    ///
    /// # Errors
    /// [`FollowError::Execution`] if the state's next set does not hash to the header's
    /// `next_validator_set_hash` (execution checks it, so only a bug or a corrupt store).
    pub fn after(header: &BlockHeader, state: &LedgerState) -> Result<Self, FollowError> {
        let l = state.params().epoch_length;
        let epoch = (header.height + 1) / l.max(1);
        let next_set = state.validators().at_epoch(epoch).validators;
        let next_set_hash = validators_hash(&next_set);
        if next_set_hash != header.next_validator_set_hash {
            return Err(FollowError::Execution {
                height: header.height,
                hash: header.hash(),
                why: format!(
                    "its state's next validator set hashes to {next_set_hash}, the header \
                     commits to {}",
                    header.next_validator_set_hash
                ),
            });
        }
        Ok(Expect {
            chain_id: header.chain_id.clone(),
            epoch_length: l,
            height: header.height,
            hash: header.hash(),
            next_set,
            next_set_hash,
        })
    }

    /// The epoch of block `tip + 1`.
    pub fn next_epoch(&self) -> u64 {
        (self.height + 1) / self.epoch_length.max(1)
    }
}

/// Checks a run of blocks `tip + 1 ..= tip + n` whose last one carries a certificate: hash
/// links from the tip, the chain, each block's epoch, the set each header names, and the
/// certificate against the set that `expect` trusts. Execution is the caller's next step.
///
/// # Errors
/// The first [`FollowError`] found.
pub fn check_segment(expect: &Expect, run: &[SyncRecord]) -> Result<(), FollowError> {
    let Some(last) = run.last() else {
        return Ok(());
    };
    let epoch = expect.next_epoch();
    let (mut height, mut hash) = (expect.height, expect.hash);
    for rec in run {
        let h = &rec.block.header;
        let want = height + 1;
        if h.height != want {
            return Err(FollowError::Unlinked {
                height: h.height,
                why: format!("expected height {want}"),
            });
        }
        if h.parent_hash != hash {
            // Block 1 on another parent: the upstream runs another chain (or another genesis).
            let hint = if height == 0 {
                " (the genesis block: the upstream serves a chain of another genesis)"
            } else {
                ""
            };
            return Err(FollowError::Unlinked {
                height: h.height,
                why: format!(
                    "its parent is {}, the verified block {height} is {hash}{hint}",
                    h.parent_hash
                ),
            });
        }
        if h.chain_id != expect.chain_id {
            return Err(FollowError::BadHeader {
                height: h.height,
                why: format!("chain {:?}, expected {:?}", h.chain_id, expect.chain_id),
            });
        }
        if h.epoch != h.height / expect.epoch_length.max(1) {
            return Err(FollowError::BadHeader {
                height: h.height,
                why: format!(
                    "epoch {} does not hold it ({} blocks an epoch)",
                    h.epoch, expect.epoch_length
                ),
            });
        }
        if h.epoch != epoch {
            return Err(FollowError::Uncertified {
                from: expect.height + 1,
                to: h.height,
                epoch,
            });
        }
        if h.validator_set_hash != expect.next_set_hash {
            return Err(FollowError::BadHeader {
                height: h.height,
                why: format!(
                    "names validator set {}, but epoch {epoch}'s set is {}",
                    h.validator_set_hash, expect.next_set_hash
                ),
            });
        }
        height = h.height;
        hash = rec.block.hash();
    }
    let Some(cert) = &last.cert else {
        return Err(FollowError::Uncertified {
            from: expect.height + 1,
            to: height,
            epoch,
        });
    };
    cert.verify(&expect.next_set, expect.next_set_hash, epoch, height, &hash)
        .map_err(|source| FollowError::Certificate {
            height,
            hash,
            source: Box::new(source),
        })
}

/// Splits received records into runs that each end at a certified block (the runs
/// [`check_segment`] takes), and the uncertified tail that must wait for more.
pub fn split_runs(records: Vec<SyncRecord>) -> (Vec<Vec<SyncRecord>>, Vec<SyncRecord>) {
    let mut runs = Vec::new();
    let mut cur = Vec::new();
    for r in records {
        let certified = r.cert.is_some();
        cur.push(r);
        if certified {
            runs.push(std::mem::take(&mut cur));
        }
    }
    (runs, cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use phoenix_ledger_light::testing::TestSet;
    use phoenix_ledger_types::exec::{BlockContext, Genesis, build_block, genesis_block};

    /// A chain of `n` empty blocks on a genesis of `set`, each certified by `set` unless
    /// `uncertified` lists it.
    fn chain(set: &TestSet, l: u64, n: u64, uncertified: &[u64]) -> (Genesis, Vec<SyncRecord>) {
        let g = set.genesis("follow-test", l);
        let mut state = LedgerState::from_genesis(&g).expect("genesis");
        let mut hdr = genesis_block(&g, &state).header;
        let mut out = Vec::new();
        for h in 1..=n {
            let ctx = BlockContext {
                epoch: h / l,
                view: h + 1,
                parent_view: h,
                proposer: set.validators[0].key,
                timestamp_ms: hdr.timestamp_ms + 1,
            };
            let built = build_block(&hdr, &state, ctx, vec![]);
            let block = built.block;
            let cert =
                (!uncertified.contains(&h)).then(|| set.certify(h / l, h + 1, &block.hash()));
            hdr = block.header.clone();
            state = built.state;
            out.push(SyncRecord { block, cert });
        }
        (g, out)
    }

    fn expect_at_genesis(g: &Genesis) -> Expect {
        let state = LedgerState::from_genesis(g).expect("genesis");
        Expect::after(&genesis_block(g, &state).header, &state).expect("expect")
    }

    #[test]
    fn records_round_trip_and_garbage_is_an_error_not_a_panic() {
        let set = TestSet::new(1, 4);
        let (_, recs) = chain(&set, 10, 2, &[1]);
        for r in &recs {
            let bytes = r.encode();
            assert_eq!(&SyncRecord::decode(&bytes).expect("decode"), r);
            for cut in 0..bytes.len() {
                assert!(SyncRecord::decode(&bytes[..cut]).is_err(), "cut at {cut}");
            }
            let mut long = bytes.clone();
            long.push(0);
            assert!(SyncRecord::decode(&long).is_err());
        }
        assert!(SyncRecord::decode(&[0xff; 8]).is_err());
    }

    #[test]
    fn a_certified_run_is_accepted_with_its_uncertified_ancestors() {
        let set = TestSet::new(1, 4);
        let (g, recs) = chain(&set, 10, 5, &[1, 2, 4]);
        let (runs, tail) = split_runs(recs);
        assert_eq!(runs.iter().map(Vec::len).collect::<Vec<_>>(), vec![3, 2]);
        assert!(tail.is_empty());
        let e = expect_at_genesis(&g);
        check_segment(&e, &runs[0]).expect("1..=3 under the certificate of 3");
        // A run that ends uncertified waits.
        let (g, recs) = chain(&set, 10, 2, &[2]);
        let (runs, tail) = split_runs(recs);
        assert_eq!((runs.len(), tail.len()), (1, 1));
        let e = expect_at_genesis(&g);
        let whole = [runs[0].clone(), tail].concat();
        assert!(matches!(
            check_segment(&e, &whole),
            Err(FollowError::Uncertified { from: 1, to: 2, .. })
        ));
    }

    #[test]
    fn a_tampered_block_or_certificate_is_refused_saying_why() {
        let set = TestSet::new(1, 4);
        let (g, recs) = chain(&set, 10, 1, &[]);
        let e = expect_at_genesis(&g);
        // The block changed under its certificate: the signatures no longer cover its hash.
        let mut forged = recs[0].clone();
        forged.block.header.timestamp_ms += 1;
        let err = check_segment(&e, std::slice::from_ref(&forged)).unwrap_err();
        assert!(
            matches!(err, FollowError::Certificate { height: 1, .. }),
            "{err}"
        );
        // One signature altered.
        let mut bad = recs[0].clone();
        if let Some(c) = bad.cert.as_mut() {
            c.votes[1].signature.0[5] ^= 1;
        }
        let err = check_segment(&e, std::slice::from_ref(&bad)).unwrap_err();
        assert!(
            matches!(&err, FollowError::Certificate { source, .. }
                if matches!(**source, LightError::BadSignature { .. })),
            "{err}"
        );
        // Too few signers.
        let mut short = recs[0].clone();
        if let Some(c) = short.cert.as_mut() {
            c.votes.truncate(2);
        }
        let err = check_segment(&e, std::slice::from_ref(&short)).unwrap_err();
        assert!(err.to_string().contains("too few signatures"), "{err}");
        // Another network's validators (a well-formed certificate by the wrong keys).
        let other = TestSet::new(50, 4);
        let mut foreign = recs[0].clone();
        foreign.cert = Some(other.certify(0, 2, &foreign.block.hash()));
        let err = check_segment(&e, std::slice::from_ref(&foreign)).unwrap_err();
        assert!(
            matches!(&err, FollowError::Certificate { source, .. }
                if matches!(**source, LightError::WrongValidatorSet { .. })),
            "{err}"
        );
        // A block that skips the tip.
        let (_, two) = chain(&set, 10, 2, &[]);
        let err = check_segment(&e, &two[1..]).unwrap_err();
        assert!(
            matches!(err, FollowError::Unlinked { height: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_certificate_of_the_next_epoch_never_vouches_for_the_end_of_this_one() {
        let set = TestSet::new(1, 4);
        // Epochs of 3 blocks: block 2 ends epoch 0; leave it uncertified.
        let (g, recs) = chain(&set, 3, 3, &[2]);
        let e = expect_at_genesis(&g);
        check_segment(&e, &recs[..1]).expect("block 1");
        let mut state = LedgerState::from_genesis(&g).expect("genesis");
        let mut hdr = genesis_block(&g, &state).header;
        state =
            phoenix_ledger_types::exec::execute_block(&hdr, &state, &recs[0].block).expect("exec");
        hdr = recs[0].block.header.clone();
        let e1 = Expect::after(&hdr, &state).expect("after 1");
        let err = check_segment(&e1, &recs[1..3]).unwrap_err();
        assert!(
            matches!(err, FollowError::Uncertified { epoch: 0, .. }),
            "{err}"
        );
    }
}
