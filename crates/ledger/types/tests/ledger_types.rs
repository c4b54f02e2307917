//! Codec, signature, state and execution tests for the ledger types.

use phoenix_ledger_types::block::{Block, tx_root};
use phoenix_ledger_types::crypto::{Hash, Keypair, PublicKey, verify_many};
use phoenix_ledger_types::exec::*;
use phoenix_ledger_types::state::{AuthMap, verify_proof};
use phoenix_ledger_types::tx::*;
use proptest::prelude::*;

const CHAIN: &str = "test-chain";

fn kp(i: u64) -> Keypair {
    Keypair::from_test_index(i)
}

fn genesis(threshold: u32) -> Genesis {
    Genesis {
        chain_id: CHAIN.into(),
        genesis_time_ms: 0,
        epoch_length: 10,
        admin_threshold: threshold,
        validators: (100..104)
            .map(|i| Validator {
                key: kp(i).public(),
                address: format!("127.0.0.1:{}", 9000 + i),
            })
            .collect(),
        accounts: vec![
            GenesisAccount {
                key: kp(1).public(),
                roles: Role::ALL.to_vec(),
            },
            GenesisAccount {
                key: kp(2).public(),
                roles: vec![Role::Admin, Role::Verifier],
            },
            GenesisAccount {
                key: kp(3).public(),
                roles: vec![Role::Admin],
            },
        ],
    }
}

fn tx(k: &Keypair, nonce: u64, op: Operation) -> Transaction {
    TxBody {
        chain_id: CHAIN.into(),
        signer: k.public(),
        nonce,
        op,
    }
    .sign(k)
}

/// An audit record of fleet `core` whose seq and chain hash follow from `step`, so that records
/// of different steps never conflict and the same step twice is the same record.
fn audit(step: &str) -> Operation {
    let hash = Hash::of(&[b"chain", step.as_bytes()]);
    let seq = 1 + u64::from(u32::from_be_bytes(hash.0[..4].try_into().unwrap()));
    Operation::Audit(AuditRecord {
        actor: "alice".into(),
        fleet: "core".into(),
        seq,
        hash,
        revision: 7,
        plan_hash: Hash::of(&[b"plan"]),
        step: step.into(),
        outcome: Outcome::Succeeded,
        detail: "ok".into(),
    })
}

fn arb_str() -> impl Strategy<Value = String> {
    "[a-z0-9:_-]{0,24}"
}
fn arb_hash() -> impl Strategy<Value = Hash> {
    any::<[u8; 32]>().prop_map(Hash)
}
fn arb_key() -> impl Strategy<Value = PublicKey> {
    any::<[u8; 32]>().prop_map(PublicKey)
}
fn arb_role() -> impl Strategy<Value = Role> {
    prop::sample::select(Role::ALL.to_vec())
}
fn arb_module() -> impl Strategy<Value = Module> {
    prop::sample::select(Module::ALL.to_vec())
}

fn arb_op() -> impl Strategy<Value = Operation> {
    let action = prop_oneof![
        (arb_key(), arb_str(), any::<u64>()).prop_map(|(key, address, effective_epoch)| {
            GovAction::AddValidator {
                key,
                address,
                effective_epoch,
            }
        }),
        (arb_key(), any::<u64>()).prop_map(|(key, effective_epoch)| GovAction::RemoveValidator {
            key,
            effective_epoch
        }),
        (arb_key(), arb_role()).prop_map(|(account, role)| GovAction::GrantRole { account, role }),
        (arb_key(), arb_role()).prop_map(|(account, role)| GovAction::RevokeRole { account, role }),
        arb_module().prop_map(|module| GovAction::Unpause { module }),
        any::<u32>().prop_map(|threshold| GovAction::SetThreshold { threshold }),
    ];
    prop_oneof![
        (arb_str(), action)
            .prop_map(|(id, action)| Operation::Governance(GovOp::Propose { id, action })),
        arb_str().prop_map(|id| Operation::Governance(GovOp::Approve { id })),
        arb_module().prop_map(|module| Operation::Governance(GovOp::Pause { module })),
        (
            arb_str(),
            arb_key(),
            arb_hash(),
            prop::collection::btree_set(arb_role(), 0..5)
        )
            .prop_map(|(did, key, doc_hash, roles)| Operation::Identity(
                IdentityOp::Register {
                    did,
                    key,
                    doc_hash,
                    roles: roles.into_iter().collect()
                }
            )),
        (arb_str(), arb_key())
            .prop_map(|(did, new_key)| Operation::Identity(IdentityOp::RotateKey { did, new_key })),
        arb_str().prop_map(|did| Operation::Identity(IdentityOp::Revoke { did })),
        (arb_str(), arb_str(), arb_str(), arb_str(), arb_hash()).prop_map(
            |(id, tenant, site, kind, spec_hash)| {
                Operation::Provisioning(ProvOp::Request {
                    id,
                    tenant,
                    site,
                    kind,
                    spec_hash,
                })
            }
        ),
        arb_str().prop_map(|id| Operation::Provisioning(ProvOp::MarkProvisioned { id })),
        arb_str().prop_map(|id| Operation::Provisioning(ProvOp::Verify { id })),
        arb_str().prop_map(|id| Operation::Provisioning(ProvOp::Release { id })),
        (
            (arb_str(), arb_str(), any::<u64>(), arb_hash()),
            any::<u64>(),
            arb_hash(),
            arb_str(),
            0usize..4,
            arb_str()
        )
            .prop_map(
                |((actor, fleet, seq, hash), revision, plan_hash, step, o, detail)| {
                    Operation::Audit(AuditRecord {
                        actor,
                        fleet,
                        seq,
                        hash,
                        revision,
                        plan_hash,
                        step,
                        outcome: [
                            Outcome::Started,
                            Outcome::Succeeded,
                            Outcome::Failed,
                            Outcome::RolledBack,
                        ][o],
                        detail,
                    })
                }
            ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn tx_codec_roundtrips_canonically(op in arb_op(), nonce in any::<u64>(), seed in any::<u64>()) {
        let t = tx(&kp(seed), nonce, op);
        let bytes = t.encode();
        let back = Transaction::decode(&bytes).unwrap();
        prop_assert_eq!(&back, &t);
        prop_assert_eq!(back.encode(), bytes);
        prop_assert!(back.verify_signature());
    }

    #[test]
    fn decode_accepts_only_canonical_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(t) = Transaction::decode(&bytes) {
            prop_assert_eq!(t.encode(), bytes);
        }
    }

    #[test]
    fn mutated_tx_never_verifies_as_the_original(op in arb_op(), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let t = tx(&kp(1), 0, op);
        let mut bytes = t.encode();
        let i = pos.index(bytes.len());
        bytes[i] ^= 1 << bit;
        if let Ok(m) = Transaction::decode(&bytes) {
            prop_assert!(m != t);
            prop_assert!(!m.verify_signature() || m.body == t.body);
        }
    }

    #[test]
    fn state_root_is_independent_of_write_order(
        entries in prop::collection::btree_map(prop::collection::vec(any::<u8>(), 1..8), prop::collection::vec(any::<u8>(), 0..8), 0..64),
        removals in prop::collection::vec(any::<prop::sample::Index>(), 0..16),
    ) {
        let entries: Vec<_> = entries.into_iter().collect();
        let mut a = AuthMap::new();
        for (k, v) in &entries { a.insert(k, v); }
        let mut b = AuthMap::new();
        for (k, v) in entries.iter().rev() { b.insert(k, b"junk"); b.insert(k, v); }
        prop_assert_eq!(a.root_hash(), b.root_hash());
        prop_assert_eq!(a.len(), entries.len());
        // Remove some keys from `a`; a fresh map of the remainder must have the same root.
        let mut keep: std::collections::BTreeMap<_, _> = entries.iter().cloned().collect();
        if !entries.is_empty() {
            for r in &removals {
                let k = entries[r.index(entries.len())].0.clone();
                prop_assert_eq!(a.remove(&k), keep.remove(&k).is_some());
            }
        }
        let mut c = AuthMap::new();
        for (k, v) in &keep { c.insert(k, v); }
        prop_assert_eq!(a.root_hash(), c.root_hash());
        for (k, v) in &keep {
            prop_assert_eq!(a.get(k), Some(&v[..]));
            prop_assert!(verify_proof(&a.root_hash(), k, Some(v), &a.prove(k)));
            prop_assert!(!verify_proof(&a.root_hash(), k, Some(b"other-value"), &a.prove(k)));
        }
        let absent = b"definitely-absent-key";
        prop_assert!(verify_proof(&a.root_hash(), absent, None, &a.prove(absent)));
    }
}

#[test]
fn snapshots_are_independent() {
    let mut a = AuthMap::new();
    a.insert(b"x", b"1");
    let snap = a.clone();
    let root = snap.root_hash();
    a.insert(b"x", b"2");
    a.insert(b"y", b"3");
    assert_eq!(snap.root_hash(), root);
    assert_eq!(snap.get(b"x"), Some(&b"1"[..]));
    assert_ne!(a.root_hash(), root);
}

#[test]
fn signatures_single_and_batch_agree() {
    let good: Vec<Transaction> = (0..8).map(|i| tx(&kp(1), i, audit("s"))).collect();
    let mut bad = good.clone();
    bad[3].signature.0[5] ^= 1;
    let hashes: Vec<Hash> = bad.iter().map(Transaction::hash).collect();
    let items: Vec<_> = bad
        .iter()
        .zip(&hashes)
        .map(|(t, h)| (t.body.signer, &h.0[..], t.signature))
        .collect();
    let v = verify_many(&items);
    for (i, t) in bad.iter().enumerate() {
        assert_eq!(v[i], t.verify_signature());
    }
    assert!(!v[3]);
    assert_eq!(v.iter().filter(|x| **x).count(), 7);
}

#[test]
fn rejects_wrong_chain_replay_gap_and_unauthorised() {
    let mut s = LedgerState::from_genesis(&genesis(1)).unwrap();
    let mut wrong = TxBody {
        chain_id: "other".into(),
        signer: kp(1).public(),
        nonce: 0,
        op: audit("a"),
    };
    let e = s.apply_tx(&wrong.clone().sign(&kp(1)), 1).unwrap_err();
    assert!(matches!(e, TxError::WrongChain { .. }), "{e}");
    wrong.chain_id = CHAIN.into();
    let ok = wrong.sign(&kp(1));
    s.apply_tx(&ok, 1).unwrap();
    let e = s.apply_tx(&ok, 1).unwrap_err();
    assert!(e.to_string().starts_with("replayed"), "{e}");
    let e = s.apply_tx(&tx(&kp(1), 5, audit("b")), 1).unwrap_err();
    assert!(matches!(
        e,
        TxError::FutureNonce {
            expected: 1,
            got: 5
        }
    ));
    // Account 3 is admin only: it may not write audit records.
    let root = s.root();
    let e = s.apply_tx(&tx(&kp(3), 0, audit("c")), 1).unwrap_err();
    assert!(e.to_string().contains("unauthorised"), "{e}");
    assert_eq!(
        s.root(),
        root,
        "a failed transaction leaves the state unchanged"
    );
    // Unknown accounts have no roles.
    let e = s.apply_tx(&tx(&kp(77), 0, audit("d")), 1).unwrap_err();
    assert!(matches!(
        e,
        TxError::Unauthorised {
            role: Role::Auditor,
            ..
        }
    ));
}

fn chain_record(fleet: &str, seq: u64, hash: Hash) -> Operation {
    Operation::Audit(AuditRecord {
        actor: "alice".into(),
        fleet: fleet.into(),
        seq,
        hash,
        revision: 1,
        plan_hash: Hash::ZERO,
        step: format!("step-{seq}"),
        outcome: Outcome::Succeeded,
        detail: String::new(),
    })
}

#[test]
fn audit_records_are_addressed_by_fleet_and_seq_and_appended_to_the_log() {
    use phoenix_ledger_types::mlog::{MerkleLog, audit_leaf};
    let mut s = LedgerState::from_genesis(&genesis(1)).unwrap();
    let mut log = MerkleLog::new();
    for (n, (fleet, seq)) in [("core", 1u64), ("edge", 1), ("core", 2)]
        .iter()
        .enumerate()
    {
        let h = Hash::of(&[fleet.as_bytes(), &seq.to_be_bytes()]);
        s.apply_tx(&tx(&kp(1), n as u64, chain_record(fleet, *seq, h)), 4)
            .unwrap();
        log.push(audit_leaf(fleet, *seq, &h));
    }
    let e: AuditEntry = s.get("audit", "core/2").unwrap();
    assert_eq!(e, s.audit_entry("core", 2).unwrap());
    assert_eq!(e.index, 2, "third record in the log");
    assert_eq!(e.record.step, "step-2");
    assert_eq!(e.height, 4);
    assert_eq!(s.audit_entry("edge", 1).unwrap().index, 1);
    assert_eq!(s.audit_log().size, 3);
    assert_eq!(s.audit_log().root(), log.root());
    // The frontier reaches the map once per block.
    assert!(s.get_raw("audit", "log").is_none());
    s.end_block();
    let stored: phoenix_ledger_types::mlog::Frontier = s.get("audit", "log").unwrap();
    assert_eq!(&stored, s.audit_log());
}

/// The contract (`fleet-spec.md` part 2): recording is idempotent by `(fleet, seq)`. The same
/// record again commits without appending (its nonce is used, so later nonces do not stall);
/// another hash for a recorded `(fleet, seq)` is refused as a conflict, at admission too.
#[test]
fn recording_an_audit_record_twice_is_a_no_op_and_another_hash_conflicts() {
    let mut s = LedgerState::from_genesis(&genesis(1)).unwrap();
    let h = Hash([1; 32]);
    s.apply_tx(&tx(&kp(1), 0, chain_record("core", 1, h)), 1)
        .unwrap();
    let (root, size) = (s.audit_log().root(), s.audit_log().size);
    let again = tx(&kp(1), 1, chain_record("core", 1, h));
    s.precheck(&again, false).expect("a retry is admitted");
    s.precheck_audit(&again).expect("a retry is admitted");
    s.apply_tx(&again, 2).expect("a retry commits");
    assert_eq!((s.audit_log().root(), s.audit_log().size), (root, size));
    assert_eq!(
        s.audit_entry("core", 1).unwrap().height,
        1,
        "first record kept"
    );
    assert_eq!(
        s.account(&kp(1).public()).nonce,
        2,
        "the retry used its nonce"
    );

    let other = tx(&kp(1), 2, chain_record("core", 1, Hash([2; 32])));
    let e = s.precheck_audit(&other).unwrap_err();
    assert!(matches!(e, TxError::AuditConflict { seq: 1, .. }), "{e}");
    let root = s.root();
    let e = s.apply_tx(&other, 3).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("conflicts: audit record 1 of fleet \"core\""),
        "{e}"
    );
    assert_eq!(s.root(), root, "a conflict changes nothing");

    // Seq 0, and fleets a URL or a state key could not name as they are.
    for (fleet, seq) in [("core", 0), ("", 1), ("a/b", 1), ("has space", 1), ("é", 1)] {
        let e = s
            .apply_tx(&tx(&kp(1), 2, chain_record(fleet, seq, h)), 3)
            .unwrap_err();
        assert!(matches!(e, TxError::Invalid(_)), "{fleet:?} {seq}: {e}");
    }
}

/// A transaction in the audit record format before seq and hash is refused with a message
/// saying so, not decoded as something else.
#[test]
fn the_old_audit_record_format_is_refused_by_name() {
    let t = tx(&kp(1), 0, audit("x"));
    let mut bytes = t.encode();
    // Body: version, chain id (u32 length + bytes), signer, nonce, then module 3 and the op tag.
    let op_tag = 1 + 4 + CHAIN.len() + 32 + 8 + 1;
    assert_eq!(bytes[op_tag - 1], 3);
    bytes[op_tag] = 0;
    let e = Transaction::decode(&bytes).unwrap_err();
    assert!(e.to_string().contains("no longer accepted"), "{e}");
}

#[test]
fn k_of_n_proposals_pause_and_unpause() {
    let mut s = LedgerState::from_genesis(&genesis(2)).unwrap();
    // Emergency pause by a single admin.
    s.apply_tx(
        &tx(
            &kp(2),
            0,
            Operation::Governance(GovOp::Pause {
                module: Module::Audit,
            }),
        ),
        1,
    )
    .unwrap();
    let e = s.apply_tx(&tx(&kp(1), 0, audit("x")), 1).unwrap_err();
    assert_eq!(e, TxError::Paused(Module::Audit));
    // Unpause needs 2 approvals.
    let prop = Operation::Governance(GovOp::Propose {
        id: "unpause-audit".into(),
        action: GovAction::Unpause {
            module: Module::Audit,
        },
    });
    s.apply_tx(&tx(&kp(2), 1, prop), 2).unwrap();
    assert!(
        s.paused().contains(&Module::Audit),
        "one approval is not enough"
    );
    let approve = Operation::Governance(GovOp::Approve {
        id: "unpause-audit".into(),
    });
    let e = s.apply_tx(&tx(&kp(2), 2, approve.clone()), 2).unwrap_err();
    assert!(e.to_string().contains("already approved"), "{e}");
    s.apply_tx(&tx(&kp(3), 0, approve.clone()), 3).unwrap();
    assert!(!s.paused().contains(&Module::Audit));
    let p: Proposal = s.get("governance", "proposal-unpause-audit").unwrap();
    assert_eq!(p.executed_at, Some(3));
    let e = s.apply_tx(&tx(&kp(1), 0, approve), 3).unwrap_err();
    assert!(e.to_string().contains("already executed"), "{e}");
    s.apply_tx(&tx(&kp(1), 0, audit("x")), 4).unwrap();
}

#[test]
fn roles_granted_and_revoked_by_proposal() {
    let mut s = LedgerState::from_genesis(&genesis(1)).unwrap();
    let who = kp(50);
    assert!(s.apply_tx(&tx(&who, 0, audit("a")), 1).is_err());
    let grant = GovAction::GrantRole {
        account: who.public(),
        role: Role::Auditor,
    };
    s.apply_tx(
        &tx(
            &kp(2),
            0,
            Operation::Governance(GovOp::Propose {
                id: "g".into(),
                action: grant,
            }),
        ),
        1,
    )
    .unwrap();
    s.apply_tx(&tx(&who, 0, audit("a")), 1).unwrap();
    let revoke = GovAction::RevokeRole {
        account: who.public(),
        role: Role::Auditor,
    };
    s.apply_tx(
        &tx(
            &kp(2),
            1,
            Operation::Governance(GovOp::Propose {
                id: "r".into(),
                action: revoke,
            }),
        ),
        1,
    )
    .unwrap();
    assert!(s.apply_tx(&tx(&who, 1, audit("b")), 1).is_err());
}

#[test]
fn validator_changes_apply_at_their_epoch() {
    let mut s = LedgerState::from_genesis(&genesis(1)).unwrap();
    let before = s.validators().hash();
    let newv = kp(200).public();
    let add = GovAction::AddValidator {
        key: newv,
        address: "127.0.0.1:9999".into(),
        effective_epoch: 0,
    };
    let e = s
        .apply_tx(
            &tx(
                &kp(1),
                0,
                Operation::Governance(GovOp::Propose {
                    id: "v".into(),
                    action: add,
                }),
            ),
            5,
        )
        .unwrap_err();
    assert!(
        e.to_string().contains("later than the current epoch"),
        "{e}"
    );
    let add = GovAction::AddValidator {
        key: newv,
        address: "127.0.0.1:9999".into(),
        effective_epoch: 2,
    };
    s.apply_tx(
        &tx(
            &kp(1),
            0,
            Operation::Governance(GovOp::Propose {
                id: "v".into(),
                action: add,
            }),
        ),
        5,
    )
    .unwrap();
    assert_eq!(s.validators().validators.len(), 4);
    s.begin_block(10); // epoch 1: not yet
    assert_eq!(s.validators().validators.len(), 4);
    assert_eq!(s.validators().hash(), before);
    s.begin_block(20); // epoch 2
    assert_eq!(s.validators().validators.len(), 5);
    assert!(s.validators().pending.is_empty());
    assert_ne!(s.validators().hash(), before);
}

#[test]
fn hex_of_keys_and_hashes_is_lowercase_and_round_trips() {
    for i in 0..64u64 {
        let h = Hash::of(&[&i.to_be_bytes()]);
        assert_eq!(h.to_hex(), hex::encode(h.0));
        assert_eq!(Hash::from_hex(&h.to_hex()), Some(h));
        let k = kp(i).public();
        assert_eq!(k.to_hex(), hex::encode(k.0));
        assert_eq!(PublicKey::from_hex(&k.to_hex()), Some(k));
    }
}

#[test]
fn validator_set_changes_apply_in_epoch_order() {
    let (a, b) = (kp(100).public(), kp(200).public());
    let vs = ValidatorSet {
        validators: vec![Validator {
            key: a,
            address: "a:1".into(),
        }],
        // Scheduled out of epoch order: b leaves at 5 after joining at 3.
        pending: vec![
            PendingChange {
                effective_epoch: 5,
                add: None,
                key: b,
            },
            PendingChange {
                effective_epoch: 3,
                add: Some("b:1".into()),
                key: b,
            },
        ],
    };
    let keys =
        |e: u64| -> Vec<PublicKey> { vs.at_epoch(e).validators.iter().map(|v| v.key).collect() };
    assert_eq!(keys(2), vec![a]);
    assert_eq!(keys(3).len(), 2);
    assert_eq!(vs.at_epoch(3).pending.len(), 1);
    assert_eq!(keys(5), vec![a]);
    assert_eq!(keys(u64::MAX), vec![a]);
}

#[test]
fn removals_must_name_a_validator_and_leave_one() {
    let mut g = genesis(1);
    g.validators.truncate(2);
    let mut s = LedgerState::from_genesis(&g).unwrap();
    let propose = |id: &str, key: PublicKey| {
        Operation::Governance(GovOp::Propose {
            id: id.into(),
            action: GovAction::RemoveValidator {
                key,
                effective_epoch: 3,
            },
        })
    };
    let e = s
        .apply_tx(&tx(&kp(1), 0, propose("stranger", kp(999).public())), 5)
        .unwrap_err();
    assert!(e.to_string().contains("is not a validator"), "{e}");
    // The first removal is fine; the second, scheduled beside it, would empty the set.
    s.apply_tx(&tx(&kp(1), 0, propose("a", kp(100).public())), 5)
        .unwrap();
    let e = s
        .apply_tx(&tx(&kp(1), 1, propose("b", kp(101).public())), 5)
        .unwrap_err();
    assert!(e.to_string().contains("last validator"), "{e}");
    s.begin_block(30);
    assert_eq!(s.validators().validators.len(), 1);
}

#[test]
fn identity_register_rotate_revoke() {
    let mut s = LedgerState::from_genesis(&genesis(1)).unwrap();
    let (k1, k2) = (kp(60), kp(61));
    let reg = Operation::Identity(IdentityOp::Register {
        did: "did:phx:ops".into(),
        key: k1.public(),
        doc_hash: Hash::of(&[b"doc"]),
        roles: vec![Role::Auditor],
    });
    s.apply_tx(&tx(&kp(1), 0, reg.clone()), 1).unwrap();
    assert!(matches!(
        s.apply_tx(&tx(&kp(1), 1, reg), 1),
        Err(TxError::AlreadyExists(_))
    ));
    s.apply_tx(&tx(&k1, 0, audit("by-identity")), 1).unwrap();
    // Self-rotation needs no role.
    let rot = Operation::Identity(IdentityOp::RotateKey {
        did: "did:phx:ops".into(),
        new_key: k2.public(),
    });
    s.apply_tx(&tx(&k1, 1, rot), 2).unwrap();
    assert!(matches!(
        s.apply_tx(&tx(&k1, 2, audit("old key")), 2),
        Err(TxError::RetiredKey)
    ));
    s.apply_tx(&tx(&k2, 0, audit("new key")), 2).unwrap();
    let id: Identity = s.get("identity", "did:phx:ops").unwrap();
    assert_eq!(id.key, k2.public());
    assert_eq!(id.previous_keys, vec![k1.public()]);
    s.apply_tx(
        &tx(
            &kp(1),
            1,
            Operation::Identity(IdentityOp::Revoke {
                did: "did:phx:ops".into(),
            }),
        ),
        3,
    )
    .unwrap();
    assert!(s.apply_tx(&tx(&k2, 1, audit("revoked")), 3).is_err());
    // Identities may not be given admin.
    let reg_admin = Operation::Identity(IdentityOp::Register {
        did: "did:phx:evil".into(),
        key: kp(62).public(),
        doc_hash: Hash::ZERO,
        roles: vec![Role::Admin],
    });
    assert!(s.apply_tx(&tx(&kp(1), 2, reg_admin), 3).is_err());
}

#[test]
fn provisioning_lifecycle() {
    let mut s = LedgerState::from_genesis(&genesis(1)).unwrap();
    let id = "vm-42".to_string();
    let req = Operation::Provisioning(ProvOp::Request {
        id: id.clone(),
        tenant: "bank".into(),
        site: "core-1".into(),
        kind: "vm".into(),
        spec_hash: Hash::of(&[b"spec"]),
    });
    s.apply_tx(&tx(&kp(1), 0, req), 1).unwrap();
    // Verify before provisioned: invalid transition.
    let verify = Operation::Provisioning(ProvOp::Verify { id: id.clone() });
    assert!(matches!(
        s.apply_tx(&tx(&kp(2), 0, verify.clone()), 1),
        Err(TxError::Invalid(_))
    ));
    s.apply_tx(
        &tx(
            &kp(1),
            1,
            Operation::Provisioning(ProvOp::MarkProvisioned { id: id.clone() }),
        ),
        2,
    )
    .unwrap();
    // The provisioner cannot verify its own resource.
    assert!(s.apply_tx(&tx(&kp(1), 2, verify.clone()), 2).is_err());
    s.apply_tx(&tx(&kp(2), 0, verify), 3).unwrap();
    s.apply_tx(
        &tx(
            &kp(1),
            2,
            Operation::Provisioning(ProvOp::Release { id: id.clone() }),
        ),
        4,
    )
    .unwrap();
    let r: Resource = s.get("provisioning", &id).unwrap();
    assert_eq!(r.state, ResourceState::Released);
    assert_eq!(r.history.len(), 4);
    assert!(
        s.apply_tx(
            &tx(
                &kp(1),
                3,
                Operation::Provisioning(ProvOp::Release { id: id.clone() })
            ),
            5
        )
        .is_err()
    );
    // A live resource cannot be requested twice; a released one can, keeping its history
    // (an instance removed and re-created under its name).
    let again = Operation::Provisioning(ProvOp::Request {
        id: id.clone(),
        tenant: "bank".into(),
        site: "core-2".into(),
        kind: "vm".into(),
        spec_hash: Hash::of(&[b"spec 2"]),
    });
    s.apply_tx(&tx(&kp(1), 3, again.clone()), 6).unwrap();
    let r: Resource = s.get("provisioning", &id).unwrap();
    assert_eq!(
        (r.state, r.site.as_str()),
        (ResourceState::Requested, "core-2")
    );
    assert_eq!(r.history.len(), 5);
    assert!(matches!(
        s.apply_tx(&tx(&kp(1), 4, again), 7),
        Err(TxError::AlreadyExists(_))
    ));
}

#[test]
fn built_blocks_reexecute_to_the_same_header() {
    let g = genesis(1);
    let s0 = LedgerState::from_genesis(&g).unwrap();
    let gb = genesis_block(&g, &s0);
    let ctx = BlockContext {
        epoch: 0,
        view: 1,
        parent_view: 0,
        proposer: kp(100).public(),
        timestamp_ms: 10,
    };
    let mut cands: Vec<Transaction> = (0..5).map(|n| tx(&kp(1), n, audit("a"))).collect();
    cands.push(tx(&kp(3), 0, audit("unauthorised")));
    cands.push(tx(&kp(1), 0, audit("replay")));
    let built = build_block(&gb.header, &s0, ctx, cands);
    assert_eq!(built.block.txs.len(), 5);
    assert_eq!(built.rejected.len(), 2);
    let s1 = execute_block(&gb.header, &s0, &built.block).unwrap();
    assert_eq!(s1.root(), built.block.header.state_root);
    let bytes = built.block.encode();
    assert_eq!(Block::decode(&bytes).unwrap(), built.block);
    // The lengths and hashes a transaction computes once agree with encoding it.
    assert_eq!(built.block.encoded_len(), bytes.len());
    for t in &built.block.txs {
        assert_eq!(t.encoded_len(), t.encode().len());
        assert_eq!(t.hash(), t.body.hash());
        assert_eq!(Transaction::decode(&t.encode()).unwrap().hash(), t.hash());
    }
    let hashes: Vec<_> = built.block.txs.iter().map(Transaction::hash).collect();
    assert_eq!(tx_root(&hashes), built.block.header.tx_root);

    let mut bad = built.block.clone();
    bad.header.state_root = Hash::ZERO;
    assert_eq!(
        execute_block(&gb.header, &s0, &bad).unwrap_err(),
        BlockError::Header("state root mismatch")
    );
    let mut bad = built.block.clone();
    bad.txs.swap(0, 1);
    assert!(execute_block(&gb.header, &s0, &bad).is_err());
    let mut bad = built.block.clone();
    bad.header.timestamp_ms = 0;
    assert!(execute_block(&gb.header, &s0, &bad).is_err());

    // The header commits to the audit log (one record: the five transactions are one record
    // sent five times) and to the next block's validator set.
    let h = &built.block.header;
    assert_eq!(h.audit_size, 1);
    assert_eq!(h.audit_root, s1.audit_log().root());
    assert_eq!(h.next_validator_set_hash, h.validator_set_hash);
    for tamper in [
        |b: &mut Block| b.header.audit_root = Hash::ZERO,
        |b: &mut Block| b.header.audit_size = 2,
        |b: &mut Block| b.header.next_validator_set_hash = Hash::ZERO,
    ] {
        let mut bad = built.block.clone();
        tamper(&mut bad);
        assert!(execute_block(&gb.header, &s0, &bad).is_err());
    }
    // The block hash is the compact header's, which commits to every field.
    assert_eq!(h.hash(), h.compact().hash());
    let mut other = h.clone();
    other.proposer = kp(101).public();
    assert_ne!(other.hash(), h.hash());
    assert_eq!(
        phoenix_ledger_types::block::BlockHeader::decode(&h.encode()).unwrap(),
        *h
    );
}

#[test]
fn oversized_and_truncated_inputs_are_rejected() {
    let big = vec![0u8; MAX_TX_BYTES + 1];
    assert!(
        Transaction::decode(&big)
            .unwrap_err()
            .to_string()
            .contains("too long")
    );
    let t = tx(&kp(1), 0, audit("a")).encode();
    for cut in [0, 1, 10, t.len() - 1] {
        assert!(Transaction::decode(&t[..cut]).is_err());
    }
    let mut trailing = t.clone();
    trailing.push(0);
    assert!(
        Transaction::decode(&trailing)
            .unwrap_err()
            .to_string()
            .contains("trailing")
    );
}

fn propose(id: &str, action: GovAction) -> Operation {
    Operation::Governance(GovOp::Propose {
        id: id.into(),
        action,
    })
}

/// Regression: with one admin, `gov-threshold --threshold 2` (and 99) was accepted and executed,
/// after which no proposal could reach two approvals and a paused module could never be
/// unpaused. A threshold above the admins able to sign, or 0, is refused at admission
/// (`precheck`) and at execution, and leaves the state as it was.
#[test]
fn regression_threshold_above_the_admins_is_refused_so_governance_cannot_lock() {
    let mut g = genesis(1);
    g.accounts.retain(|a| a.key == kp(1).public()); // one admin
    let mut s = LedgerState::from_genesis(&g).unwrap();
    assert_eq!(s.admin_count(), 1);
    for (nonce, threshold) in [(0, 2), (0, 99), (0, 0)] {
        let t = tx(
            &kp(1),
            nonce,
            propose(
                &format!("t{threshold}"),
                GovAction::SetThreshold { threshold },
            ),
        );
        let at_admission = s.precheck(&t, true).unwrap_err();
        let root = s.root();
        let at_execution = s.apply_tx(&t, 1).unwrap_err();
        assert_eq!(at_admission, at_execution);
        assert_eq!(s.root(), root, "a refused proposal changed the state");
        if threshold == 0 {
            assert!(
                at_execution.to_string().contains("at least 1"),
                "{at_execution}"
            );
        } else {
            assert_eq!(
                at_execution,
                TxError::GovernanceLocked {
                    admins: 1,
                    threshold
                }
            );
            assert!(
                at_execution.to_string().contains("locked"),
                "{at_execution}"
            );
        }
    }
    assert_eq!(s.params().admin_threshold, 1);
    // Governance still works: pause, then unpause.
    s.apply_tx(
        &tx(
            &kp(1),
            0,
            Operation::Governance(GovOp::Pause {
                module: Module::Audit,
            }),
        ),
        1,
    )
    .unwrap();
    s.apply_tx(
        &tx(
            &kp(1),
            1,
            propose(
                "unpause",
                GovAction::Unpause {
                    module: Module::Audit,
                },
            ),
        ),
        2,
    )
    .unwrap();
    assert!(s.paused().is_empty());
    // A threshold equal to the admins is fine.
    s.apply_tx(
        &tx(
            &kp(1),
            2,
            propose("t1", GovAction::SetThreshold { threshold: 1 }),
        ),
        2,
    )
    .unwrap();
}

/// Regression (same defect, other paths): a change that leaves fewer admins than the threshold
/// is refused, whether it is a revoked admin role (refused when proposed) or an identity revoked
/// from under an admin key (refused at execution by the one post-transaction rule); the
/// refused transaction leaves the state and the signer's nonce unchanged.
#[test]
fn regression_removing_admins_below_the_threshold_is_refused() {
    // Admins kp(1), kp(2), kp(3); threshold 2.
    let mut s = LedgerState::from_genesis(&genesis(2)).unwrap();
    assert_eq!(s.admin_count(), 3);
    let revoke = |who: u64| GovAction::RevokeRole {
        account: kp(who).public(),
        role: Role::Admin,
    };
    let approve = |id: &str| Operation::Governance(GovOp::Approve { id: id.into() });
    // Down to two admins: allowed.
    s.apply_tx(&tx(&kp(1), 0, propose("r3", revoke(3))), 1)
        .unwrap();
    s.apply_tx(&tx(&kp(2), 0, approve("r3")), 1).unwrap();
    assert_eq!(s.admin_count(), 2);
    // Down to one with threshold 2: refused when proposed.
    let t = tx(&kp(1), 1, propose("r2", revoke(2)));
    assert!(matches!(
        s.precheck(&t, true),
        Err(TxError::GovernanceLocked {
            admins: 1,
            threshold: 2
        })
    ));
    assert!(matches!(
        s.apply_tx(&t, 1),
        Err(TxError::GovernanceLocked { .. })
    ));

    // An identity whose key is made an admin, then revoked: the admin goes with it.
    let mut s = LedgerState::from_genesis(&genesis(1)).unwrap();
    let id_key = kp(70);
    s.apply_tx(
        &tx(
            &kp(1),
            0,
            Operation::Identity(IdentityOp::Register {
                did: "did:phx:ops".into(),
                key: id_key.public(),
                doc_hash: Hash::ZERO,
                roles: vec![],
            }),
        ),
        1,
    )
    .unwrap();
    s.apply_tx(
        &tx(
            &kp(1),
            1,
            propose(
                "grant",
                GovAction::GrantRole {
                    account: id_key.public(),
                    role: Role::Admin,
                },
            ),
        ),
        1,
    )
    .unwrap();
    assert_eq!(s.admin_count(), 4);
    s.apply_tx(
        &tx(
            &kp(1),
            2,
            propose("t4", GovAction::SetThreshold { threshold: 4 }),
        ),
        1,
    )
    .unwrap();
    let root = s.root();
    let revoke_identity = tx(
        &kp(1),
        3,
        Operation::Identity(IdentityOp::Revoke {
            did: "did:phx:ops".into(),
        }),
    );
    assert_eq!(
        s.apply_tx(&revoke_identity, 2).unwrap_err(),
        TxError::GovernanceLocked {
            admins: 3,
            threshold: 4
        }
    );
    assert_eq!(s.root(), root, "a refused revocation changed the state");
    assert_eq!(s.admin_count(), 4);
    assert_eq!(s.account(&kp(1).public()).nonce, 3, "nonce not consumed");
}

/// Regression (same defect, at genesis): a genesis whose threshold exceeds its admin accounts is
/// refused; one without any admin (a chain without governance) is allowed.
#[test]
fn regression_genesis_threshold_above_its_admins_is_refused() {
    let e = LedgerState::from_genesis(&genesis(4)).unwrap_err();
    assert!(
        e.contains("admin_threshold 4 is more than the 3 admin"),
        "{e}"
    );
    LedgerState::from_genesis(&genesis(3)).unwrap();
    let mut g = genesis(1);
    g.accounts = vec![GenesisAccount {
        key: kp(1).public(),
        roles: vec![Role::Auditor],
    }];
    let mut s = LedgerState::from_genesis(&g).unwrap();
    assert_eq!(s.admin_count(), 0);
    s.apply_tx(&tx(&kp(1), 0, audit("no governance")), 1)
        .unwrap();
}

#[test]
fn insert_new_keeps_an_existing_value_and_the_root() {
    let mut m = AuthMap::new();
    for i in 0..200u32 {
        m.insert(&i.to_be_bytes(), b"v");
    }
    let snap = m.clone();
    let root = m.root_hash();
    assert_eq!(
        m.insert_new(&7u32.to_be_bytes(), b"other").as_deref(),
        Some(&b"v"[..])
    );
    assert_eq!(m.root_hash(), root, "nothing changed");
    assert_eq!(m.len(), 200);
    assert_eq!(m.get(&7u32.to_be_bytes()), Some(&b"v"[..]));
    assert_eq!(m.insert_new(b"new", b"x"), None);
    assert_eq!(m.get(b"new"), Some(&b"x"[..]));
    assert_eq!(m.len(), 201);
    let mut plain = snap.clone();
    plain.insert(b"new", b"x");
    assert_eq!(m.root_hash(), plain.root_hash());
    assert_eq!(snap.root_hash(), root, "the snapshot is untouched");
}
