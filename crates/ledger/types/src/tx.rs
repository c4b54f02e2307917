//! Signed transactions and the typed operations of the native modules.

use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::{Hash, Keypair, PublicKey, Signature};
use serde::{Deserialize, Serialize};

/// Largest encoded transaction accepted anywhere (API, gossip, blocks).
pub const MAX_TX_BYTES: usize = 4096;
/// Largest chain id.
pub const MAX_CHAIN_ID: usize = 64;
/// Largest identifier (DID, resource id, proposal id, tenant, site, kind, actor, fleet, step).
pub const MAX_ID: usize = 256;
/// Largest free-text field (audit detail, validator address).
pub const MAX_TEXT: usize = 1024;
/// Encoding version carried first in every transaction.
pub const TX_VERSION: u8 = 1;
/// Domain separator hashed before the body: the transaction hash is what the signer signs.
const TX_DOMAIN: &[u8] = b"phoenix-ledger/tx/v1\n";
/// Operation tag of an audit record carrying its fleet chain's seq and hash (tag 0 was the
/// record format before them, refused now).
const AUDIT_RECORD_TAG: u8 = 1;

/// A role held by an account. Each operation names the role it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Governance: proposals, approvals, emergency pause.
    Admin,
    /// Identity registry management.
    Identity,
    /// Resource lifecycle: request, provision, release.
    Provisioner,
    /// Independent verification of provisioned resources.
    Verifier,
    /// Writing control-plane audit records.
    Auditor,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Identity,
        Role::Provisioner,
        Role::Verifier,
        Role::Auditor,
    ];
    fn tag(self) -> u8 {
        self as u8
    }
    fn from_tag(t: u8) -> Result<Self, DecodeError> {
        Role::ALL
            .get(usize::from(t))
            .copied()
            .ok_or(DecodeError::BadTag {
                field: "role",
                tag: t,
            })
    }
    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == s)
    }
    /// The lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Identity => "identity",
            Role::Provisioner => "provisioner",
            Role::Verifier => "verifier",
            Role::Auditor => "auditor",
        }
    }
}

/// A native module; modules can be paused by governance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Module {
    /// Validator set, roles, pause, proposals.
    Governance,
    /// Identities (keys, DID document hashes, roles).
    Identity,
    /// Resource lifecycle records.
    Provisioning,
    /// Control-plane operation records.
    Audit,
}

impl Module {
    /// Every module.
    pub const ALL: [Module; 4] = [
        Module::Governance,
        Module::Identity,
        Module::Provisioning,
        Module::Audit,
    ];
    fn from_tag(t: u8) -> Result<Self, DecodeError> {
        Module::ALL
            .get(usize::from(t))
            .copied()
            .ok_or(DecodeError::BadTag {
                field: "module",
                tag: t,
            })
    }
    /// The lowercase name, also the first segment of its state keys.
    pub fn name(self) -> &'static str {
        match self {
            Module::Governance => "governance",
            Module::Identity => "identity",
            Module::Provisioning => "provisioning",
            Module::Audit => "audit",
        }
    }
    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Option<Module> {
        Module::ALL.into_iter().find(|m| m.name() == s)
    }
}

/// A governance change that takes effect once enough admins approved its proposal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum GovAction {
    /// Add a validator from the start of `effective_epoch`.
    AddValidator {
        /// Its consensus key.
        key: PublicKey,
        /// Its peer address, `host:port`.
        address: String,
        /// First epoch in which it votes; must be later than the current epoch.
        effective_epoch: u64,
    },
    /// Remove a validator from the start of `effective_epoch`.
    RemoveValidator {
        /// Its consensus key.
        key: PublicKey,
        /// First epoch without it; must be later than the current epoch.
        effective_epoch: u64,
    },
    /// Grant a role to an account.
    GrantRole {
        /// The account.
        account: PublicKey,
        /// The role.
        role: Role,
    },
    /// Revoke a role from an account.
    RevokeRole {
        /// The account.
        account: PublicKey,
        /// The role.
        role: Role,
    },
    /// Lift an emergency pause.
    Unpause {
        /// The module.
        module: Module,
    },
    /// Change how many admin approvals a proposal needs.
    SetThreshold {
        /// Approvals needed, at least 1.
        threshold: u32,
    },
}

/// Governance module operations (role `admin`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum GovOp {
    /// Open a proposal; the proposer's approval counts. Executes at once if the threshold is 1.
    Propose {
        /// Proposal id, unique forever.
        id: String,
        /// What it does.
        action: GovAction,
    },
    /// Approve an open proposal; executes it when approvals reach the threshold.
    Approve {
        /// Proposal id.
        id: String,
    },
    /// Emergency pause of a module by a single admin (unpausing needs a proposal).
    Pause {
        /// The module (governance itself cannot be paused).
        module: Module,
    },
}

/// Identity module operations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum IdentityOp {
    /// Register an identity (role `identity`); grants `roles` (never `admin`) to `key`.
    Register {
        /// Decentralised identifier, unique.
        did: String,
        /// The identity's key (an account).
        key: PublicKey,
        /// Hash of the DID document kept off-chain.
        doc_hash: Hash,
        /// Roles the identity holds.
        roles: Vec<Role>,
    },
    /// Rotate the identity's key (signed by the current key or by role `identity`); its roles
    /// move to the new key and the old key is retired.
    RotateKey {
        /// The identity.
        did: String,
        /// The replacement key.
        new_key: PublicKey,
    },
    /// Revoke the identity (role `identity`): its key loses every role and may no longer sign.
    Revoke {
        /// The identity.
        did: String,
    },
}

/// Provisioning module operations: requested -> provisioned -> verified -> released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ProvOp {
    /// Record a resource request (role `provisioner`); a released resource may be requested
    /// again under its id, keeping its history.
    Request {
        /// Resource id, unique among resources not released.
        id: String,
        /// Tenant.
        tenant: String,
        /// Site.
        site: String,
        /// Kind (vm, validator, database, ...).
        kind: String,
        /// Hash of the resource specification.
        spec_hash: Hash,
    },
    /// Requested -> provisioned (role `provisioner`).
    MarkProvisioned {
        /// Resource id.
        id: String,
    },
    /// Provisioned -> verified (role `verifier`, and not the account that provisioned it).
    Verify {
        /// Resource id.
        id: String,
    },
    /// Any live state -> released (role `provisioner`).
    Release {
        /// Resource id.
        id: String,
    },
}

/// The outcome of a recorded control-plane step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The step began.
    Started,
    /// The step succeeded.
    Succeeded,
    /// The step failed.
    Failed,
    /// The step was rolled back.
    RolledBack,
}

impl Outcome {
    const ALL: [Outcome; 4] = [
        Outcome::Started,
        Outcome::Succeeded,
        Outcome::Failed,
        Outcome::RolledBack,
    ];
    /// Parses the snake_case name.
    pub fn parse(s: &str) -> Option<Outcome> {
        match s {
            "started" => Some(Outcome::Started),
            "succeeded" => Some(Outcome::Succeeded),
            "failed" => Some(Outcome::Failed),
            "rolled_back" => Some(Outcome::RolledBack),
            _ => None,
        }
    }
}

/// A control-plane operation record (role `auditor`): one record of a fleet's audit chain
/// (`fleet-spec.md` part 2), addressed on the ledger by `(fleet, seq)`.
///
/// Recording is idempotent by `(fleet, seq)`: the same `(fleet, seq, hash)` again commits
/// without appending anything (the transaction's nonce is used, so a retry never stalls the
/// account's later transactions); another `hash` for a recorded `(fleet, seq)` is refused
/// ([`crate::exec::TxError::AuditConflict`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Who acted (user or service).
    pub actor: String,
    /// Fleet name: 1 to [`MAX_ID`] characters of `A-Z a-z 0-9 . _ ~ -` (URL-safe, so
    /// `GET /v1/proof/audit/{fleet}/{seq}` addresses it as it is).
    pub fleet: String,
    /// Sequence number of the record in the fleet's chain, from 1.
    pub seq: u64,
    /// The record's hash in the fleet's chain.
    pub hash: Hash,
    /// Fleet revision.
    pub revision: u64,
    /// Hash of the plan being applied.
    pub plan_hash: Hash,
    /// Step name.
    pub step: String,
    /// Outcome.
    pub outcome: Outcome,
    /// Free text.
    pub detail: String,
}

/// Whether `name` may be a fleet on the ledger: 1 to [`MAX_ID`] characters of
/// `A-Z a-z 0-9 . _ ~ -` (URL-unreserved, so a proof's URL names it without escaping and a state
/// key `audit/{fleet}/{seq}` splits at its last `/` alone).
pub fn is_valid_fleet(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ID
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
}

/// One operation of one native module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "module", rename_all = "snake_case")]
pub enum Operation {
    /// Governance.
    Governance(GovOp),
    /// Identity.
    Identity(IdentityOp),
    /// Provisioning.
    Provisioning(ProvOp),
    /// Audit.
    Audit(AuditRecord),
}

impl Operation {
    /// The module the operation belongs to.
    pub fn module(&self) -> Module {
        match self {
            Operation::Governance(_) => Module::Governance,
            Operation::Identity(_) => Module::Identity,
            Operation::Provisioning(_) => Module::Provisioning,
            Operation::Audit(_) => Module::Audit,
        }
    }
}

/// The signed part of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxBody {
    /// Must equal the chain's id: a transaction for one chain is void on another.
    pub chain_id: String,
    /// The account that signs; the public key is the account id.
    pub signer: PublicKey,
    /// Must equal the account's next nonce: each transaction executes at most once.
    pub nonce: u64,
    /// What to do.
    pub op: Operation,
}

/// A transaction: a body and the signer's ed25519 signature over its hash.
///
/// Made only by [`TxBody::sign`] and [`Transaction::decode`], which compute its hash and
/// encoded length once: a validator needs them several times for each transaction (admission,
/// gossip, the mempool, building or checking a block, the index), and re-encoding and hashing
/// each time was about a tenth of the ledger's CPU under load. So a transaction is not edited
/// after it is made (edit a [`TxBody`] and sign it again); debug builds check that on every use
/// of the hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// The signed body.
    pub body: TxBody,
    /// Signature over [`Transaction::hash`].
    pub signature: Signature,
    made: Made,
}

/// What [`Transaction`] computes once from its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Made {
    hash: Hash,
    /// Length of the canonical body (the transaction's is this plus the 64-byte signature).
    body_len: usize,
}

impl Made {
    fn of(body: &TxBody) -> Made {
        let (hash, body_len) = body.hash_and_len();
        Made { hash, body_len }
    }
}

fn enc_str(w: &mut Writer, s: &str) {
    w.str(s);
}

fn enc_action(w: &mut Writer, a: &GovAction) {
    match a {
        GovAction::AddValidator {
            key,
            address,
            effective_epoch,
        } => {
            w.u8(0);
            w.fixed(&key.0);
            enc_str(w, address);
            w.u64(*effective_epoch);
        }
        GovAction::RemoveValidator {
            key,
            effective_epoch,
        } => {
            w.u8(1);
            w.fixed(&key.0);
            w.u64(*effective_epoch);
        }
        GovAction::GrantRole { account, role } => {
            w.u8(2);
            w.fixed(&account.0);
            w.u8(role.tag());
        }
        GovAction::RevokeRole { account, role } => {
            w.u8(3);
            w.fixed(&account.0);
            w.u8(role.tag());
        }
        GovAction::Unpause { module } => {
            w.u8(4);
            w.u8(*module as u8);
        }
        GovAction::SetThreshold { threshold } => {
            w.u8(5);
            w.u32(*threshold);
        }
    }
}

fn dec_action(r: &mut Reader<'_>) -> Result<GovAction, DecodeError> {
    Ok(match r.u8("gov action")? {
        0 => GovAction::AddValidator {
            key: PublicKey(r.array("validator key")?),
            address: r.string("address", MAX_TEXT)?,
            effective_epoch: r.u64("effective epoch")?,
        },
        1 => GovAction::RemoveValidator {
            key: PublicKey(r.array("validator key")?),
            effective_epoch: r.u64("effective epoch")?,
        },
        2 => GovAction::GrantRole {
            account: PublicKey(r.array("account")?),
            role: Role::from_tag(r.u8("role")?)?,
        },
        3 => GovAction::RevokeRole {
            account: PublicKey(r.array("account")?),
            role: Role::from_tag(r.u8("role")?)?,
        },
        4 => GovAction::Unpause {
            module: Module::from_tag(r.u8("module")?)?,
        },
        5 => GovAction::SetThreshold {
            threshold: r.u32("threshold")?,
        },
        tag => {
            return Err(DecodeError::BadTag {
                field: "gov action",
                tag,
            });
        }
    })
}

fn enc_op(w: &mut Writer, op: &Operation) {
    match op {
        Operation::Governance(g) => {
            w.u8(0);
            match g {
                GovOp::Propose { id, action } => {
                    w.u8(0);
                    enc_str(w, id);
                    enc_action(w, action);
                }
                GovOp::Approve { id } => {
                    w.u8(1);
                    enc_str(w, id);
                }
                GovOp::Pause { module } => {
                    w.u8(2);
                    w.u8(*module as u8);
                }
            }
        }
        Operation::Identity(i) => {
            w.u8(1);
            match i {
                IdentityOp::Register {
                    did,
                    key,
                    doc_hash,
                    roles,
                } => {
                    w.u8(0);
                    enc_str(w, did);
                    w.fixed(&key.0);
                    w.fixed(&doc_hash.0);
                    w.u8(u8::try_from(roles.len()).expect("roles are bounded"));
                    for r in roles {
                        w.u8(r.tag());
                    }
                }
                IdentityOp::RotateKey { did, new_key } => {
                    w.u8(1);
                    enc_str(w, did);
                    w.fixed(&new_key.0);
                }
                IdentityOp::Revoke { did } => {
                    w.u8(2);
                    enc_str(w, did);
                }
            }
        }
        Operation::Provisioning(p) => {
            w.u8(2);
            match p {
                ProvOp::Request {
                    id,
                    tenant,
                    site,
                    kind,
                    spec_hash,
                } => {
                    w.u8(0);
                    enc_str(w, id);
                    enc_str(w, tenant);
                    enc_str(w, site);
                    enc_str(w, kind);
                    w.fixed(&spec_hash.0);
                }
                ProvOp::MarkProvisioned { id } => {
                    w.u8(1);
                    enc_str(w, id);
                }
                ProvOp::Verify { id } => {
                    w.u8(2);
                    enc_str(w, id);
                }
                ProvOp::Release { id } => {
                    w.u8(3);
                    enc_str(w, id);
                }
            }
        }
        Operation::Audit(a) => {
            w.u8(3);
            w.u8(AUDIT_RECORD_TAG);
            enc_str(w, &a.actor);
            enc_str(w, &a.fleet);
            w.u64(a.seq);
            w.fixed(&a.hash.0);
            w.u64(a.revision);
            w.fixed(&a.plan_hash.0);
            enc_str(w, &a.step);
            w.u8(a.outcome as u8);
            enc_str(w, &a.detail);
        }
    }
}

fn dec_op(r: &mut Reader<'_>) -> Result<Operation, DecodeError> {
    let module = r.u8("module")?;
    let op = r.u8("operation")?;
    let bad = |tag| DecodeError::BadTag {
        field: "operation",
        tag,
    };
    Ok(match module {
        0 => Operation::Governance(match op {
            0 => GovOp::Propose {
                id: r.string("proposal id", MAX_ID)?,
                action: dec_action(r)?,
            },
            1 => GovOp::Approve {
                id: r.string("proposal id", MAX_ID)?,
            },
            2 => GovOp::Pause {
                module: Module::from_tag(r.u8("module")?)?,
            },
            t => return Err(bad(t)),
        }),
        1 => Operation::Identity(match op {
            0 => {
                let did = r.string("did", MAX_ID)?;
                let key = PublicKey(r.array("identity key")?);
                let doc_hash = Hash(r.array("doc hash")?);
                let n = r.u8("role count")?;
                if usize::from(n) > Role::ALL.len() {
                    return Err(DecodeError::TooLong {
                        field: "roles",
                        len: n.into(),
                        max: Role::ALL.len(),
                    });
                }
                let mut roles = Vec::with_capacity(n.into());
                for _ in 0..n {
                    let role = Role::from_tag(r.u8("role")?)?;
                    // Canonical: strictly increasing, so one set has one encoding.
                    if roles.last().is_some_and(|last| *last >= role) {
                        return Err(DecodeError::Invalid {
                            field: "roles",
                            reason: "must be strictly increasing",
                        });
                    }
                    roles.push(role);
                }
                IdentityOp::Register {
                    did,
                    key,
                    doc_hash,
                    roles,
                }
            }
            1 => IdentityOp::RotateKey {
                did: r.string("did", MAX_ID)?,
                new_key: PublicKey(r.array("new key")?),
            },
            2 => IdentityOp::Revoke {
                did: r.string("did", MAX_ID)?,
            },
            t => return Err(bad(t)),
        }),
        2 => Operation::Provisioning(match op {
            0 => ProvOp::Request {
                id: r.string("resource id", MAX_ID)?,
                tenant: r.string("tenant", MAX_ID)?,
                site: r.string("site", MAX_ID)?,
                kind: r.string("kind", MAX_ID)?,
                spec_hash: Hash(r.array("spec hash")?),
            },
            1 => ProvOp::MarkProvisioned {
                id: r.string("resource id", MAX_ID)?,
            },
            2 => ProvOp::Verify {
                id: r.string("resource id", MAX_ID)?,
            },
            3 => ProvOp::Release {
                id: r.string("resource id", MAX_ID)?,
            },
            t => return Err(bad(t)),
        }),
        3 => match op {
            0 => {
                return Err(DecodeError::Invalid {
                    field: "audit record",
                    reason: "format 1 (without the fleet chain's seq and hash) is no longer \
                             accepted; send seq and hash",
                });
            }
            AUDIT_RECORD_TAG => {
                let actor = r.string("actor", MAX_ID)?;
                let fleet = r.string("fleet", MAX_ID)?;
                let seq = r.u64("seq")?;
                let hash = Hash(r.array("chain hash")?);
                let revision = r.u64("revision")?;
                let plan_hash = Hash(r.array("plan hash")?);
                let step = r.string("step", MAX_ID)?;
                let t = r.u8("outcome")?;
                let outcome = *Outcome::ALL
                    .get(usize::from(t))
                    .ok_or(DecodeError::BadTag {
                        field: "outcome",
                        tag: t,
                    })?;
                let detail = r.string("detail", MAX_TEXT)?;
                Operation::Audit(AuditRecord {
                    actor,
                    fleet,
                    seq,
                    hash,
                    revision,
                    plan_hash,
                    step,
                    outcome,
                    detail,
                })
            }
            t => return Err(bad(t)),
        },
        t => {
            return Err(DecodeError::BadTag {
                field: "module",
                tag: t,
            });
        }
    })
}

impl TxBody {
    /// Canonical bytes of the body.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(256);
        self.write(&mut w);
        w.finish()
    }
    fn write(&self, w: &mut Writer) {
        w.u8(TX_VERSION);
        w.str(&self.chain_id);
        w.fixed(&self.signer.0);
        w.u64(self.nonce);
        enc_op(w, &self.op);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let v = r.u8("version")?;
        if v != TX_VERSION {
            return Err(DecodeError::BadTag {
                field: "version",
                tag: v,
            });
        }
        Ok(TxBody {
            chain_id: r.string("chain id", MAX_CHAIN_ID)?,
            signer: PublicKey(r.array("signer")?),
            nonce: r.u64("nonce")?,
            op: dec_op(r)?,
        })
    }
    /// The transaction hash: BLAKE3 over a domain tag and the canonical body. Signatures cover
    /// it, and it identifies the transaction in the API.
    pub fn hash(&self) -> Hash {
        self.hash_and_len().0
    }
    /// The hash and the length of the canonical body, from one encoding.
    fn hash_and_len(&self) -> (Hash, usize) {
        let bytes = self.encode();
        (Hash::of(&[TX_DOMAIN, &bytes]), bytes.len())
    }
    /// Signs the body.
    pub fn sign(self, key: &Keypair) -> Transaction {
        let made = Made::of(&self);
        let signature = key.sign(&made.hash.0);
        Transaction {
            body: self,
            signature,
            made,
        }
    }
}

impl Transaction {
    /// Canonical bytes: the body then the 64-byte signature.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(self.encoded_len());
        self.write(&mut w);
        w.finish()
    }
    /// Appends [`Self::encode`]'s bytes to `w`.
    pub fn write(&self, w: &mut Writer) {
        self.body.write(w);
        w.fixed(&self.signature.0);
    }
    /// Decodes canonical bytes, rejecting anything larger than [`MAX_TX_BYTES`].
    ///
    /// # Errors
    /// Any [`DecodeError`]; the signature is not checked here.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_TX_BYTES {
            return Err(DecodeError::TooLong {
                field: "transaction",
                len: bytes.len(),
                max: MAX_TX_BYTES,
            });
        }
        let mut r = Reader::new(bytes);
        let body = TxBody::read(&mut r)?;
        let signature = Signature(r.array("signature")?);
        r.finish()?;
        let made = Made::of(&body);
        Ok(Transaction {
            body,
            signature,
            made,
        })
    }
    /// The transaction hash (see [`TxBody::hash`]).
    pub fn hash(&self) -> Hash {
        debug_assert_eq!(
            self.made,
            Made::of(&self.body),
            "a transaction was edited after it was made"
        );
        self.made.hash
    }
    /// Length of [`Self::encode`]'s bytes, without encoding.
    pub fn encoded_len(&self) -> usize {
        self.made.body_len + 64
    }
    /// Whether the signature is the signer's over the hash.
    pub fn verify_signature(&self) -> bool {
        crate::crypto::verify(&self.body.signer, &self.hash().0, &self.signature)
    }
}
