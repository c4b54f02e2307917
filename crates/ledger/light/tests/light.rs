//! The light client against proofs built from test keys: each reason to refuse has its error, and
//! proofs built from blocks that real execution produced verify.

use phoenix_ledger_light::cert::FinalityCert;
use phoenix_ledger_light::proof::{AuditProof, CheckpointProof, Proof, StateProof};
use phoenix_ledger_light::testing::{TestSet, change, header};
use phoenix_ledger_light::{LightClient, LightError, Proven, Trust};
use phoenix_ledger_types::block::BlockHeader;
use phoenix_ledger_types::crypto::{Hash, Keypair};
use phoenix_ledger_types::exec::{
    BlockContext, GenesisAccount, LedgerState, build_block, genesis_block,
};
use phoenix_ledger_types::mlog::{MerkleLog, audit_leaf};
use phoenix_ledger_types::tx::{
    AuditRecord, GovAction, GovOp, Operation, Outcome, Role, Transaction, TxBody,
};

const CHAIN: &str = "light-test";
const L: u64 = 10;

fn chain_hash(fleet: &str, seq: u64) -> Hash {
    Hash::of(&[fleet.as_bytes(), &seq.to_be_bytes()])
}

/// An audit log of `n` records of fleet `core` (seq 1..=n).
fn log_of(n: u64) -> MerkleLog {
    let mut log = MerkleLog::new();
    for seq in 1..=n {
        log.push(audit_leaf("core", seq, &chain_hash("core", seq)));
    }
    log
}

/// A proof of record `seq` of `core` in a log of `n`, certified by `set` at `height`.
fn audit_proof(set: &TestSet, n: u64, seq: u64, height: u64) -> AuditProof {
    let log = log_of(n);
    let h = header(
        CHAIN,
        L,
        height,
        set.hash(),
        set.hash(),
        n,
        log.root(),
        Hash::ZERO,
    );
    AuditProof {
        changes: vec![],
        certificate: set.certify(height / L, h.view, &h.hash()),
        header: h.compact(),
        fleet: "core".into(),
        seq,
        hash: chain_hash("core", seq),
        index: seq - 1,
        path: log.prove(seq - 1, n).expect("in range"),
    }
}

fn client(set: &TestSet) -> LightClient {
    LightClient::new(Trust::from_genesis(&set.genesis(CHAIN, L)).expect("genesis"))
}

#[test]
fn a_valid_audit_proof_verifies_and_says_what_it_proved() {
    let set = TestSet::new(1, 4);
    let p = audit_proof(&set, 1000, 377, 25);
    let mut c = client(&set);
    let proven = c.verify_audit(&p).expect("valid");
    assert_eq!(proven.fleet, "core");
    assert_eq!(proven.seq, 377);
    assert_eq!(proven.hash, chain_hash("core", 377));
    assert_eq!(proven.index, 376);
    assert_eq!(proven.block.height, 25);
    assert_eq!(proven.block.epoch, 2);
    assert_eq!((proven.block.signers, proven.block.validators), (3, 4));
    // Both encodings carry the same proof.
    let proof = Proof::Audit(p);
    assert_eq!(Proof::decode(&proof.encode()).expect("binary"), proof);
    assert_eq!(Proof::from_json(proof.to_json()).expect("json"), proof);
    let json = serde_json::to_vec(&proof.to_json()).expect("json");
    assert_eq!(Proof::parse(&json).expect("parse json"), proof);
    assert_eq!(Proof::parse(&proof.encode()).expect("parse binary"), proof);
    assert_eq!(proof.to_json()["kind"], "audit");
    assert_eq!(proof.to_json()["version"], 1);
}

#[test]
fn a_tampered_record_or_path_is_refused_as_tampered() {
    let set = TestSet::new(1, 4);
    let good = audit_proof(&set, 1000, 377, 25);
    let tampers: [fn(&mut AuditProof); 6] = [
        |p| p.hash.0[0] ^= 1,
        |p| p.seq += 1,
        |p| p.fleet = "edge".into(),
        |p| p.index += 1,
        |p| p.path[3].0[0] ^= 1,
        |p| {
            p.path.pop();
        },
    ];
    for (i, t) in tampers.iter().enumerate() {
        let mut p = good.clone();
        t(&mut p);
        let e = client(&set).verify_audit(&p).unwrap_err();
        assert!(matches!(e, LightError::TamperedRecord { .. }), "{i}: {e}");
        assert!(e.to_string().starts_with("tampered record"), "{e}");
    }
    // A header changed after certification: the certificate no longer covers it.
    let mut p = good.clone();
    p.header.audit_root = log_of(999).root();
    let e = client(&set).verify_audit(&p).unwrap_err();
    assert!(
        matches!(e, LightError::WrongValidatorSet { .. }),
        "no signature covers another header: {e}"
    );
}

#[test]
fn a_proof_of_another_validator_set_is_refused() {
    let ours = TestSet::new(1, 4);
    let theirs = TestSet::new(50, 4);
    let p = audit_proof(&theirs, 10, 3, 5);
    let e = client(&ours).verify_audit(&p).unwrap_err();
    assert!(matches!(e, LightError::WrongValidatorSet { .. }), "{e}");
    assert!(e.to_string().starts_with("wrong validator set"), "{e}");
    // With a full header, the set it names is compared first.
    let h = header(
        CHAIN,
        L,
        5,
        theirs.hash(),
        theirs.hash(),
        0,
        Hash::ZERO,
        Hash::ZERO,
    );
    let cp = CheckpointProof {
        changes: vec![],
        certificate: theirs.certify(0, h.view, &h.hash()),
        header: h,
    };
    let e = client(&ours).verify_checkpoint(&cp).unwrap_err();
    assert!(
        matches!(&e, LightError::WrongValidatorSet { detail, .. } if detail.contains("names")),
        "{e}"
    );
}

#[test]
fn too_few_signatures_and_a_bad_signature_are_refused() {
    let set = TestSet::new(1, 4);
    let mut p = audit_proof(&set, 10, 3, 5);
    p.certificate.votes.truncate(2);
    let e = client(&set).verify_audit(&p).unwrap_err();
    assert_eq!(
        e,
        LightError::TooFewSignatures {
            height: 5,
            got: 2,
            need: 3,
            validators: 4
        }
    );
    assert!(e.to_string().starts_with("too few signatures"), "{e}");
    // One signer twice does not make a quorum.
    let mut p = audit_proof(&set, 10, 3, 5);
    p.certificate.votes[2] = p.certificate.votes[1].clone();
    let e = client(&set).verify_audit(&p).unwrap_err();
    assert!(matches!(e, LightError::BadCertificate(_)), "{e}");
    // A signer outside the set.
    let mut p = audit_proof(&set, 10, 3, 5);
    p.certificate.votes[2].signer = 4;
    let e = client(&set).verify_audit(&p).unwrap_err();
    assert!(matches!(e, LightError::BadCertificate(_)), "{e}");
    // One forged signature among good ones.
    let mut p = audit_proof(&set, 10, 3, 5);
    p.certificate.votes[1].signature.0[7] ^= 1;
    let e = client(&set).verify_audit(&p).unwrap_err();
    assert!(
        matches!(e, LightError::BadSignature { signer: 1, .. }),
        "{e}"
    );
    // All four signatures are fine too.
    let mut p = audit_proof(&set, 10, 3, 5);
    let h = header(
        CHAIN,
        L,
        5,
        set.hash(),
        set.hash(),
        10,
        log_of(10).root(),
        Hash::ZERO,
    );
    p.certificate = set.sign(0, h.view, &h.hash(), 4);
    client(&set).verify_audit(&p).expect("four of four");
}

#[test]
fn a_proof_older_than_the_trusted_epoch_is_stale() {
    let set = TestSet::new(1, 4);
    // A checkpoint in epoch 5.
    let h = header(
        CHAIN,
        L,
        52,
        set.hash(),
        set.hash(),
        0,
        Hash::ZERO,
        Hash::ZERO,
    );
    let cp = CheckpointProof {
        changes: vec![],
        certificate: set.certify(5, h.view, &h.hash()),
        header: h,
    };
    let checkpoint = client(&set).verify_checkpoint(&cp).expect("checkpoint");
    assert_eq!((checkpoint.epoch, checkpoint.height), (5, 52));
    let json = serde_json::to_vec(&checkpoint).expect("json");
    let trust = Trust::from_json(&json).expect("reads back");
    assert_eq!(trust.epoch, 5);
    let mut c = LightClient::new(trust);
    // A proof certified in epoch 3 is stale for it, though the same set signed it.
    let old = audit_proof(&set, 10, 3, 35);
    let e = c.verify_audit(&old).unwrap_err();
    assert_eq!(
        e,
        LightError::StaleEpoch {
            proof: 3,
            trusted: 5
        }
    );
    assert!(e.to_string().starts_with("stale epoch"), "{e}");
    // A proof of epoch 5 or later is fine.
    c.verify_audit(&audit_proof(&set, 10, 3, 57))
        .expect("same epoch");
    c.verify_audit(&audit_proof(&set, 10, 3, 61))
        .expect("later epoch, same set");
    // Genesis trust accepts the old one.
    client(&set).verify_audit(&old).expect("from genesis");
}

#[test]
fn a_proof_from_genesis_follows_each_certified_validator_set_change() {
    let a = TestSet::new(1, 4);
    let b = TestSet::new(10, 4);
    let c = TestSet::new(20, 5);
    // A -> B at the end of epoch 1, B -> C at the end of epoch 3; the proof is from epoch 4.
    let changes = vec![change(CHAIN, L, 1, &a, &b), change(CHAIN, L, 3, &b, &c)];
    let mut p = audit_proof(&c, 100, 42, 45);
    p.changes = changes.clone();
    let mut cl = client(&a);
    let proven = cl.verify_audit(&p).expect("follows both changes");
    assert_eq!(proven.block.changes_followed, 2);
    assert_eq!((proven.block.signers, proven.block.validators), (4, 5));
    assert_eq!(cl.trust().epoch, 4, "the client now trusts C");
    assert_eq!(cl.trust().validators, c.validators);
    // Having followed them, it verifies the next proof without the changes, and skips changes
    // older than what it trusts.
    cl.verify_audit(&audit_proof(&c, 100, 7, 46))
        .expect("C signs epoch 4");
    cl.verify_audit(&p).expect("old changes are skipped");

    // Without the changes, genesis trust does not know C.
    let mut bare = p.clone();
    bare.changes.clear();
    let e = client(&a).verify_audit(&bare).unwrap_err();
    assert!(matches!(e, LightError::WrongValidatorSet { .. }), "{e}");
    // Leaving out the first change: the second names a set genesis trust does not hold.
    let mut skip = p.clone();
    skip.changes.remove(0);
    let e = client(&a).verify_audit(&skip).unwrap_err();
    assert!(matches!(e, LightError::WrongValidatorSet { .. }), "{e}");
    // A validator list that is not the one the boundary block commits to.
    let mut forged = p.clone();
    forged.changes[1].next_validators = TestSet::new(90, 5).validators;
    let e = client(&a).verify_audit(&forged).unwrap_err();
    assert!(
        matches!(e, LightError::TamperedValidatorSet { epoch: 4, .. }),
        "{e}"
    );
    // A change signed by the set it hands over to, not the one before it.
    let mut self_signed = p.clone();
    let h = &self_signed.changes[0].header;
    self_signed.changes[0].certificate = b.certify(1, h.view, &h.hash());
    let e = client(&a).verify_audit(&self_signed).unwrap_err();
    assert!(matches!(e, LightError::WrongValidatorSet { .. }), "{e}");
    // Only an epoch's last block can change the set.
    let mut mid = p.clone();
    let mut h = mid.changes[0].header.clone();
    h.height -= 1;
    mid.changes[0].certificate = a.certify(1, h.view, &h.hash());
    mid.changes[0].header = h;
    let e = client(&a).verify_audit(&mid).unwrap_err();
    assert!(matches!(e, LightError::BadHeader(_)), "{e}");
    // Out of order.
    let mut swapped = p.clone();
    swapped.changes.swap(0, 1);
    let e = client(&a).verify_audit(&swapped).unwrap_err();
    assert!(matches!(e, LightError::BadHeader(_)), "{e}");
    // A failed proof leaves the trust as it was.
    let mut cl = client(&a);
    let _ = cl.verify_audit(&forged);
    assert_eq!(cl.trust().epoch, 0);
}

#[test]
fn trust_files_are_checked() {
    let set = TestSet::new(1, 4);
    let g = serde_json::to_vec(&set.genesis(CHAIN, L)).expect("json");
    let t = Trust::from_json(&g).expect("genesis");
    assert_eq!((t.epoch, t.height, t.validators.len()), (0, 0, 4));
    let mut cp = t.checkpoint();
    cp.validators.pop();
    let e = Trust::from_checkpoint(&cp).unwrap_err();
    assert!(matches!(e, LightError::BadTrust(_)), "{e}");
    let mut cp = t.checkpoint();
    cp.epoch = 3;
    assert!(
        Trust::from_checkpoint(&cp).is_err(),
        "height 0 is not in epoch 3"
    );
    assert!(Trust::from_json(b"{\"nope\": 1}").is_err());
    assert!(Trust::from_json(b"[").is_err());
}

/// Proofs built from blocks that `exec` built and checked: the header fields a light client reads
/// mean what it assumes (the audit root, the state root, and the next set at a boundary).
#[test]
fn proofs_of_really_executed_blocks_verify() {
    let set = TestSet::new(1, 4);
    let joiner = Keypair::from_test_index(30);
    let admin = Keypair::from_test_index(99);
    let mut g = set.genesis(CHAIN, L);
    g.accounts.push(GenesisAccount {
        key: admin.public(),
        roles: Role::ALL.to_vec(),
    });
    let mut state = LedgerState::from_genesis(&g).expect("genesis");
    let mut parent: BlockHeader = genesis_block(&g, &state).header;
    let mut nonce = 0;
    let mut sign = |op: Operation| -> Transaction {
        let t = TxBody {
            chain_id: CHAIN.into(),
            signer: admin.public(),
            nonce,
            op,
        }
        .sign(&admin);
        nonce += 1;
        t
    };
    let mut headers = Vec::new();
    let mut log = MerkleLog::new();
    let mut audit_seq = 0;
    // Epoch 0: audit records, and a validator added from epoch 1.
    for height in 1..=(L + 3) {
        let mut txs = Vec::new();
        for _ in 0..3 {
            audit_seq += 1;
            log.push(audit_leaf(
                "core",
                audit_seq,
                &chain_hash("core", audit_seq),
            ));
            txs.push(sign(Operation::Audit(AuditRecord {
                actor: "op".into(),
                fleet: "core".into(),
                seq: audit_seq,
                hash: chain_hash("core", audit_seq),
                revision: 1,
                plan_hash: Hash::ZERO,
                step: "apply".into(),
                outcome: Outcome::Succeeded,
                detail: String::new(),
            })));
        }
        if height == 2 {
            txs.push(sign(Operation::Governance(GovOp::Propose {
                id: "add".into(),
                action: GovAction::AddValidator {
                    key: joiner.public(),
                    address: "127.0.0.1:9999".into(),
                    effective_epoch: 1,
                },
            })));
        }
        let ctx = BlockContext {
            epoch: height / L,
            view: height,
            parent_view: height - 1,
            proposer: set.validators[0].key,
            timestamp_ms: parent.timestamp_ms + 1,
        };
        let built = build_block(&parent, &state, ctx, txs);
        assert!(built.rejected.is_empty(), "{:?}", built.rejected);
        state = built.state;
        parent = built.block.header.clone();
        headers.push((built.block.header, state.clone()));
    }
    let boundary = &headers[(L - 2) as usize].0;
    assert_eq!(boundary.height, L - 1);
    assert_ne!(
        boundary.next_validator_set_hash, boundary.validator_set_hash,
        "the last block of epoch 0 commits to epoch 1's set"
    );
    let next = state.validators().validators;
    assert_eq!(next.len(), 5);
    assert_eq!(
        phoenix_ledger_types::exec::validators_hash(&next),
        boundary.next_validator_set_hash
    );
    // Epoch 1's set is the four plus the joiner: test keys 1..=4 and 30.
    let mut keys: Vec<Keypair> = set.keys.clone();
    keys.push(joiner.clone());
    keys.sort_by_key(|k| k.public());
    let new_set = TestSet {
        keys,
        validators: next.clone(),
    };
    let change = phoenix_ledger_light::proof::SetChange {
        certificate: set.certify(0, boundary.view, &boundary.hash()),
        header: boundary.clone(),
        next_validators: next,
    };
    let (tip, tip_state) = headers.last().expect("blocks");
    assert_eq!(tip.epoch, 1);
    assert_eq!(tip.audit_size, log.size());
    let tip_cert: FinalityCert = new_set.certify(1, tip.view, &tip.hash());

    // The audit record seq 5 against the tip, from genesis.
    let audit = AuditProof {
        changes: vec![change.clone()],
        header: tip.compact(),
        certificate: tip_cert.clone(),
        fleet: "core".into(),
        seq: 5,
        hash: chain_hash("core", 5),
        index: state.audit_entry("core", 5).expect("recorded").index,
        path: log.prove(4, tip.audit_size).expect("in range"),
    };
    let proven = client(&set).verify_audit(&audit).expect("audit");
    assert_eq!(proven.block.changes_followed, 1);
    // The entry under the state root, and an absent one.
    let key = "core/5";
    let state_proof = StateProof {
        changes: vec![change.clone()],
        header: tip.clone(),
        certificate: tip_cert.clone(),
        module: "audit".into(),
        key: key.into(),
        value: tip_state.get_raw("audit", key).map(<[u8]>::to_vec),
        proof: tip_state.map().prove(format!("audit/{key}").as_bytes()),
    };
    let Proven::State(s) = client(&set)
        .verify(&Proof::State(state_proof.clone()))
        .expect("state")
    else {
        panic!("a state proof proves state");
    };
    assert_eq!(s.value.expect("present")["record"]["seq"], 5);
    let mut tampered = state_proof.clone();
    tampered.value = Some(b"{}".to_vec());
    let e = client(&set).verify_state(&tampered).unwrap_err();
    assert!(matches!(e, LightError::TamperedState { .. }), "{e}");
    let absent = StateProof {
        key: "core/999".into(),
        value: None,
        proof: tip_state.map().prove(b"audit/core/999"),
        ..state_proof.clone()
    };
    let s = client(&set).verify_state(&absent).expect("absence");
    assert!(s.value.is_none());
    let mut claimed = absent;
    claimed.value = Some(b"{}".to_vec());
    assert!(client(&set).verify_state(&claimed).is_err());
    // Binary form of a state proof round-trips too.
    let p = Proof::State(state_proof);
    assert_eq!(Proof::decode(&p.encode()).expect("binary"), p);
}

/// Canonical bytes: flipping any one bit of a valid proof's binary encoding makes it fail to
/// decode or to verify; none decodes to another proof that still verifies.
#[test]
fn every_single_bit_flip_of_a_binary_proof_is_refused() {
    let set = TestSet::new(1, 4);
    let mut p = audit_proof(&set, 1000, 377, 25);
    p.changes = vec![];
    let bytes = Proof::Audit(p).encode();
    let trust = Trust::from_genesis(&set.genesis(CHAIN, L)).expect("genesis");
    LightClient::new(trust.clone())
        .verify(&Proof::decode(&bytes).expect("decodes"))
        .expect("the original verifies");
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut b = bytes.clone();
            b[i] ^= 1 << bit;
            if let Ok(p) = Proof::decode(&b) {
                assert!(
                    LightClient::new(trust.clone()).verify(&p).is_err(),
                    "byte {i} bit {bit} flipped still verifies"
                );
            }
        }
    }
    // Truncated and extended bytes do not decode.
    assert!(Proof::decode(&bytes[..bytes.len() - 1]).is_err());
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(Proof::decode(&longer).is_err());
}
