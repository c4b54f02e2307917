//! `phoenix ledger ...`: the command-line surface of the ledger.

use crate::api::{self, ApiState, BlockSource, EngineMetrics, Finality};
use crate::app::Cadence;
use crate::block::LedgerBlock;
use crate::config::{
    ClientConfig, Home, JoinSpec, Joined, TestnetSpec, read_key, write_join_home, write_testnet,
};
use crate::engine::{MAX_MESSAGE_SIZE, Networks, Timing, channels, start_validator};
use crate::http::Conn;
use crate::shared::Shared;
use anyhow::{Context, Result, bail};
use commonware_codec::{DecodeExt, Encode};
use commonware_consensus::types::Height;
use commonware_cryptography::{ChaCha20Poly1305, ed25519};
use commonware_p2p::authenticated::lookup;
use commonware_runtime::{Metrics, Quota, Runner as _, Supervisor as _, tokio as cw_tokio};
use commonware_stream::{
    cups::{self, Cups},
    sake::{self, Sake},
};
use commonware_utils::{NZU32, NZUsize};
use phoenix_ledger_types::crypto::{Hash, Keypair, PublicKey};
use phoenix_ledger_types::tx::{
    AuditRecord, GovAction, GovOp, IdentityOp, Module, Operation, Outcome, ProvOp, Role, TxBody,
};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::info;

/// `phoenix ledger <command>`.
#[derive(Debug, clap::Subcommand)]
pub enum LedgerCommand {
    /// Write a local testnet: DIR/node-0..N-1 (config and keys) and a client key with every role.
    /// Refuses a DIR that exists and is not empty, unless --force.
    Testnet {
        /// Number of validators.
        #[arg(long, default_value_t = 4)]
        validators: usize,
        /// Output directory (new or empty).
        #[arg(long)]
        dir: PathBuf,
        /// Replace DIR whole if it holds a testnet: its keys, genesis and block data are removed
        /// together, then a fresh testnet is written.
        #[arg(long)]
        force: bool,
        /// Node i serves its API on 127.0.0.1:(P+i).
        #[arg(long, default_value_t = 8700)]
        api_base_port: u16,
        /// Node i listens for peers on 127.0.0.1:(Q+i).
        #[arg(long, default_value_t = 9700)]
        p2p_base_port: u16,
        /// Chain id.
        #[arg(long, default_value = "phoenix-testnet")]
        chain_id: String,
        /// Interval of empty blocks when idle, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        empty_block_ms: u64,
        /// Minimum interval between blocks with transactions, in milliseconds.
        #[arg(long, default_value_t = 50)]
        min_block_ms: u64,
    },
    /// Run one node in the foreground.
    Run {
        /// The node's home directory (DIR/node-i from `testnet`).
        #[arg(long)]
        home: PathBuf,
    },
    /// Sign and submit a transaction.
    Tx {
        /// Node API URL.
        #[arg(long, default_value = "http://127.0.0.1:8700")]
        api: String,
        /// Signing key file (hex seed), e.g. DIR/client.key.
        #[arg(long)]
        key: PathBuf,
        /// Nonce (default: the account's next nonce, read from the node).
        #[arg(long)]
        nonce: Option<u64>,
        /// Chain id (default: read from the node).
        #[arg(long)]
        chain_id: Option<String>,
        /// Wait until the transaction is committed or rejected.
        #[arg(long)]
        wait: bool,
        /// Print the signed transaction (hex) instead of submitting it.
        #[arg(long)]
        dry_run: bool,
        /// The operation.
        #[command(subcommand)]
        op: TxCommand,
    },
    /// Run a read replica in the foreground: a node without a key that follows finalized blocks
    /// from validators or other replicas over HTTP, checks every finality certificate against
    /// its epoch's validator set, keeps the state and serves the read API (transactions are
    /// refused: submit to a validator). The first run, given --genesis and --from, creates the
    /// home; later runs need only --home.
    Replica {
        /// The replica's home (created on the first run).
        #[arg(long)]
        home: PathBuf,
        /// Upstream API URLs, comma-separated (validators' or replicas'); tried in turn. Saved in
        /// the home; given again, they replace the saved ones.
        #[arg(long, value_delimiter = ',')]
        from: Option<Vec<String>>,
        /// The network's genesis.json (first run; on later runs it must be the same).
        #[arg(long)]
        genesis: Option<PathBuf>,
        /// Serve the API on 127.0.0.1:P (default 8800 on the first run, then the saved one).
        #[arg(long)]
        api_port: Option<u16>,
    },
    /// Print a node's status.
    Status {
        /// Node API URL.
        #[arg(long, default_value = "http://127.0.0.1:8700")]
        api: String,
    },
    /// Create the home of a node that joins a running chain (a follower until governance adds it
    /// as a validator); prints its key and the `gov-add-validator` command an admin runs.
    Join {
        /// An existing node's home (e.g. DIR/node-0): its genesis.json and cadence are copied.
        #[arg(long)]
        from: PathBuf,
        /// The new node's home (e.g. DIR/node-4); refused if it already holds a validator key.
        #[arg(long)]
        home: PathBuf,
        /// The new node serves its API on 127.0.0.1:P.
        #[arg(long)]
        api_port: u16,
        /// The new node listens for peers on 127.0.0.1:Q.
        #[arg(long)]
        p2p_port: u16,
        /// Its validator key (hex seed, as `keygen` writes); a fresh one if omitted.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Output: text, or json (`{ "home", "key", "p2p_address", "api" }`) for scripts.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Generate a key; prints the public key and writes the secret seed to FILE.
    Keygen {
        /// Where to write the secret seed (hex).
        #[arg(long)]
        out: PathBuf,
    },
    /// Start N validators as separate processes on loopback, drive signed transactions, report.
    Bench(crate::bench::BenchArgs),
    /// Start N validators and a read replica following them as separate processes on
    /// loopback, fill the state with audit records, then measure replica queries
    /// (`/v1/state`, `/v1/tx`) from concurrent clients while the validators commit a fixed
    /// rate; report.
    BenchReplica(crate::bench_replica::BenchReplicaArgs),
    /// Fetch a proof from a node and write it to a file (it is checked by `verify-proof`).
    Prove {
        /// What to prove.
        #[command(subcommand)]
        what: ProveCommand,
    },
    /// Check a proof file against a trust file (the network's genesis.json, or a checkpoint);
    /// prints what was proven, exits 1 if the proof fails.
    VerifyProof {
        /// The proof (JSON as `prove` writes it, or its binary encoding).
        file: PathBuf,
        /// The network's genesis.json, or a checkpoint file from `checkpoint`.
        #[arg(long)]
        trust: PathBuf,
        /// Output: text, or json (`{"verified": true, "proven": ...}` or
        /// `{"verified": false, "error": ...}`).
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Write a checkpoint file (the current epoch's validator set, a certified height and its
    /// header hash) for light clients to trust instead of the genesis.
    Checkpoint {
        /// Node API URL.
        #[arg(long, default_value = "http://127.0.0.1:8700")]
        api: String,
        /// Where to write the checkpoint.
        #[arg(long)]
        out: PathBuf,
        /// Check the checkpoint from this genesis.json (or an older checkpoint) before writing
        /// it; without it the node's own genesis is fetched and trusted.
        #[arg(long)]
        trust: Option<PathBuf>,
    },
}

/// What `phoenix ledger prove` proves.
#[derive(Debug, clap::Subcommand)]
pub enum ProveCommand {
    /// An audit record: fleet FLEET's record SEQ (from 1) in its chain.
    Audit {
        /// The fleet.
        fleet: String,
        /// The record's seq in the fleet's chain.
        seq: u64,
        /// Where to fetch from and write to.
        #[command(flatten)]
        fetch: ProveArgs,
    },
    /// A state entry, e.g. `audit core/3`, `accounts KEY`, `provisioning ID` (or its absence).
    State {
        /// The module (`governance`, `identity`, `provisioning`, `audit`, `accounts`).
        module: String,
        /// The key within the module.
        key: String,
        /// Where to fetch from and write to.
        #[command(flatten)]
        fetch: ProveArgs,
    },
}

/// Where `prove` fetches from and writes to.
#[derive(Debug, clap::Args)]
pub struct ProveArgs {
    /// Node API URL.
    #[arg(long, default_value = "http://127.0.0.1:8700")]
    api: String,
    /// Where to write the proof.
    #[arg(long)]
    out: PathBuf,
    /// Carry only the validator-set changes from this epoch on (for a client that trusts a
    /// checkpoint of that epoch); 0, the default, carries every change since genesis.
    #[arg(long, default_value_t = 0)]
    since_epoch: u64,
    /// File format: json, or bin (the compact encoding an edge site receives).
    #[arg(long, value_enum, default_value_t = ProofFormat::Json)]
    format: ProofFormat,
}

/// How `prove` writes a proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProofFormat {
    /// JSON (hex hashes and signatures).
    Json,
    /// The compact binary encoding.
    Bin,
}

/// How a command prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// For people.
    Text,
    /// One JSON object, for scripts.
    Json,
}

/// Operations for `phoenix ledger tx`.
#[derive(Debug, clap::Subcommand)]
pub enum TxCommand {
    /// Record a control-plane operation (role auditor).
    Audit {
        /// Who acted.
        #[arg(long)]
        actor: String,
        /// Fleet.
        #[arg(long)]
        fleet: String,
        /// Sequence number of the record in the fleet's audit chain (from 1).
        #[arg(long)]
        seq: u64,
        /// The record's hash in the fleet's audit chain (64 hex).
        #[arg(long)]
        hash: String,
        /// Revision.
        #[arg(long, default_value_t = 0)]
        revision: u64,
        /// Plan hash (64 hex).
        #[arg(
            long,
            default_value = "0000000000000000000000000000000000000000000000000000000000000000"
        )]
        plan_hash: String,
        /// Step.
        #[arg(long)]
        step: String,
        /// started | succeeded | failed | rolled_back.
        #[arg(long)]
        outcome: String,
        /// Free text.
        #[arg(long, default_value = "")]
        detail: String,
    },
    /// Register an identity (role identity).
    IdentityRegister {
        /// DID.
        #[arg(long)]
        did: String,
        /// The identity's public key (hex).
        #[arg(long)]
        key: String,
        /// DID document hash (64 hex).
        #[arg(long)]
        doc_hash: String,
        /// Comma-separated roles.
        #[arg(long, default_value = "")]
        roles: String,
    },
    /// Rotate an identity's key.
    IdentityRotate {
        /// DID.
        #[arg(long)]
        did: String,
        /// New public key (hex).
        #[arg(long)]
        new_key: String,
    },
    /// Revoke an identity (role identity).
    IdentityRevoke {
        /// DID.
        #[arg(long)]
        did: String,
    },
    /// Request a resource (role provisioner).
    ProvisionRequest {
        /// Resource id.
        #[arg(long)]
        id: String,
        /// Tenant.
        #[arg(long)]
        tenant: String,
        /// Site.
        #[arg(long)]
        site: String,
        /// Kind.
        #[arg(long)]
        kind: String,
        /// Spec hash (64 hex).
        #[arg(long)]
        spec_hash: String,
    },
    /// Mark a resource provisioned (role provisioner).
    ProvisionMark {
        /// Resource id.
        #[arg(long)]
        id: String,
    },
    /// Verify a provisioned resource (role verifier, not the provisioner).
    ProvisionVerify {
        /// Resource id.
        #[arg(long)]
        id: String,
    },
    /// Release a resource (role provisioner).
    ProvisionRelease {
        /// Resource id.
        #[arg(long)]
        id: String,
    },
    /// Propose adding a validator from a later epoch (role admin).
    GovAddValidator {
        /// Proposal id.
        #[arg(long)]
        id: String,
        /// Validator key (hex).
        #[arg(long)]
        key: String,
        /// Peer address.
        #[arg(long)]
        address: String,
        /// First epoch it votes in.
        #[arg(long)]
        effective_epoch: u64,
    },
    /// Propose removing a validator from a later epoch (role admin).
    GovRemoveValidator {
        /// Proposal id.
        #[arg(long)]
        id: String,
        /// Validator key (hex).
        #[arg(long)]
        key: String,
        /// First epoch without it.
        #[arg(long)]
        effective_epoch: u64,
    },
    /// Propose granting a role (role admin).
    GovGrantRole {
        /// Proposal id.
        #[arg(long)]
        id: String,
        /// Account (hex).
        #[arg(long)]
        account: String,
        /// Role.
        #[arg(long)]
        role: String,
    },
    /// Propose revoking a role (role admin).
    GovRevokeRole {
        /// Proposal id.
        #[arg(long)]
        id: String,
        /// Account (hex).
        #[arg(long)]
        account: String,
        /// Role.
        #[arg(long)]
        role: String,
    },
    /// Propose lifting a pause (role admin).
    GovUnpause {
        /// Proposal id.
        #[arg(long)]
        id: String,
        /// Module.
        #[arg(long)]
        module: String,
    },
    /// Propose a new approval threshold (role admin).
    GovThreshold {
        /// Proposal id.
        #[arg(long)]
        id: String,
        /// Approvals needed: at least 1 and at most the number of admins (more would lock
        /// governance for good, so the chain refuses it).
        #[arg(long)]
        threshold: u32,
    },
    /// Approve a proposal (role admin).
    GovApprove {
        /// Proposal id.
        #[arg(long)]
        id: String,
    },
    /// Emergency-pause a module (role admin).
    GovPause {
        /// Module.
        #[arg(long)]
        module: String,
    },
}

fn hash_arg(s: &str, what: &str) -> Result<Hash> {
    Hash::from_hex(s).with_context(|| format!("--{what} must be 64 hex characters"))
}
fn key_arg(s: &str, what: &str) -> Result<PublicKey> {
    PublicKey::from_hex(s).with_context(|| format!("--{what} must be 64 hex characters"))
}
fn role_arg(s: &str) -> Result<Role> {
    Role::parse(s).with_context(|| {
        format!("unknown role {s:?} (admin, identity, provisioner, verifier, auditor)")
    })
}
fn module_arg(s: &str) -> Result<Module> {
    Module::parse(s).with_context(|| {
        format!("unknown module {s:?} (governance, identity, provisioning, audit)")
    })
}

impl TxCommand {
    /// The operation this command describes.
    ///
    /// # Errors
    /// Malformed arguments.
    pub fn operation(&self) -> Result<Operation> {
        Ok(match self {
            TxCommand::Audit {
                actor,
                fleet,
                seq,
                hash,
                revision,
                plan_hash,
                step,
                outcome,
                detail,
            } => Operation::Audit(AuditRecord {
                actor: actor.clone(),
                fleet: fleet.clone(),
                seq: *seq,
                hash: hash_arg(hash, "hash")?,
                revision: *revision,
                plan_hash: hash_arg(plan_hash, "plan-hash")?,
                step: step.clone(),
                outcome: Outcome::parse(outcome).with_context(
                    || "--outcome must be started, succeeded, failed or rolled_back",
                )?,
                detail: detail.clone(),
            }),
            TxCommand::IdentityRegister {
                did,
                key,
                doc_hash,
                roles,
            } => {
                let mut rs = roles
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(role_arg)
                    .collect::<Result<Vec<_>>>()?;
                rs.sort();
                rs.dedup();
                Operation::Identity(IdentityOp::Register {
                    did: did.clone(),
                    key: key_arg(key, "key")?,
                    doc_hash: hash_arg(doc_hash, "doc-hash")?,
                    roles: rs,
                })
            }
            TxCommand::IdentityRotate { did, new_key } => {
                Operation::Identity(IdentityOp::RotateKey {
                    did: did.clone(),
                    new_key: key_arg(new_key, "new-key")?,
                })
            }
            TxCommand::IdentityRevoke { did } => {
                Operation::Identity(IdentityOp::Revoke { did: did.clone() })
            }
            TxCommand::ProvisionRequest {
                id,
                tenant,
                site,
                kind,
                spec_hash,
            } => Operation::Provisioning(ProvOp::Request {
                id: id.clone(),
                tenant: tenant.clone(),
                site: site.clone(),
                kind: kind.clone(),
                spec_hash: hash_arg(spec_hash, "spec-hash")?,
            }),
            TxCommand::ProvisionMark { id } => {
                Operation::Provisioning(ProvOp::MarkProvisioned { id: id.clone() })
            }
            TxCommand::ProvisionVerify { id } => {
                Operation::Provisioning(ProvOp::Verify { id: id.clone() })
            }
            TxCommand::ProvisionRelease { id } => {
                Operation::Provisioning(ProvOp::Release { id: id.clone() })
            }
            TxCommand::GovAddValidator {
                id,
                key,
                address,
                effective_epoch,
            } => propose(
                id,
                GovAction::AddValidator {
                    key: key_arg(key, "key")?,
                    address: address.clone(),
                    effective_epoch: *effective_epoch,
                },
            ),
            TxCommand::GovRemoveValidator {
                id,
                key,
                effective_epoch,
            } => propose(
                id,
                GovAction::RemoveValidator {
                    key: key_arg(key, "key")?,
                    effective_epoch: *effective_epoch,
                },
            ),
            TxCommand::GovGrantRole { id, account, role } => propose(
                id,
                GovAction::GrantRole {
                    account: key_arg(account, "account")?,
                    role: role_arg(role)?,
                },
            ),
            TxCommand::GovRevokeRole { id, account, role } => propose(
                id,
                GovAction::RevokeRole {
                    account: key_arg(account, "account")?,
                    role: role_arg(role)?,
                },
            ),
            TxCommand::GovUnpause { id, module } => propose(
                id,
                GovAction::Unpause {
                    module: module_arg(module)?,
                },
            ),
            TxCommand::GovThreshold { id, threshold } => propose(
                id,
                GovAction::SetThreshold {
                    threshold: *threshold,
                },
            ),
            TxCommand::GovApprove { id } => {
                Operation::Governance(GovOp::Approve { id: id.clone() })
            }
            TxCommand::GovPause { module } => Operation::Governance(GovOp::Pause {
                module: module_arg(module)?,
            }),
        })
    }
}

fn propose(id: &str, action: GovAction) -> Operation {
    Operation::Governance(GovOp::Propose {
        id: id.to_string(),
        action,
    })
}

/// Runs a ledger command.
///
/// Builds its own runtimes; `Run` blocks until the process is killed.
///
/// # Errors
/// Whatever the command fails on, with context.
pub fn run(cmd: LedgerCommand) -> Result<ExitCode> {
    init_tracing(matches!(
        cmd,
        LedgerCommand::Run { .. } | LedgerCommand::Replica { .. }
    ));
    match cmd {
        LedgerCommand::Testnet {
            validators,
            dir,
            force,
            api_base_port,
            p2p_base_port,
            chain_id,
            empty_block_ms,
            min_block_ms,
        } => {
            let cc = write_testnet(&TestnetSpec {
                validators,
                dir: dir.clone(),
                api_base_port,
                p2p_base_port,
                chain_id,
                empty_block_interval_ms: empty_block_ms,
                min_block_interval_ms: min_block_ms,
                extra_auditors: vec![],
                worker_threads: 2,
                replace: force,
            })?;
            println!("wrote {validators} validators under {}", dir.display());
            for i in 0..validators {
                println!(
                    "  node-{i}: phoenix ledger run --home {}   (API {})",
                    dir.join(format!("node-{i}")).display(),
                    cc.apis[i]
                );
            }
            println!(
                "client key {} (roles: all) in {}",
                cc.key,
                dir.join("client.key").display()
            );
            Ok(ExitCode::SUCCESS)
        }
        LedgerCommand::Join {
            from,
            home,
            api_port,
            p2p_port,
            key,
            output,
        } => {
            let joined = write_join_home(&JoinSpec {
                from: from.clone(),
                home,
                api_port,
                p2p_port,
                key,
            })?;
            match output {
                Output::Json => println!(
                    "{}",
                    serde_json::json!({
                        "home": joined.home,
                        "key": joined.key,
                        "p2p_address": joined.p2p_address.to_string(),
                        "api": joined.api,
                    })
                ),
                Output::Text => print!("{}", join_instructions(&joined, &from)),
            }
            Ok(ExitCode::SUCCESS)
        }
        LedgerCommand::Run { home } => {
            run_node(Home::load(&home)?)?;
            Ok(ExitCode::SUCCESS)
        }
        LedgerCommand::Replica {
            home,
            from,
            genesis,
            api_port,
        } => {
            let home =
                crate::replica::ReplicaHome::prepare(&home, from, genesis.as_deref(), api_port)?;
            crate::replica::run_replica(home)?;
            Ok(ExitCode::SUCCESS)
        }
        LedgerCommand::Keygen { out } => {
            let k = crate::config::random_key();
            std::fs::write(&out, hex::encode(k.seed()) + "\n")?;
            println!("{}", k.public());
            Ok(ExitCode::SUCCESS)
        }
        LedgerCommand::Status { api } => block_on(async move {
            let r = Conn::new(&api).get("/v1/status").await?;
            println!("{}", serde_json::to_string_pretty(&r.json()?)?);
            Ok(ExitCode::SUCCESS)
        }),
        LedgerCommand::Tx {
            api,
            key,
            nonce,
            chain_id,
            wait,
            dry_run,
            op,
        } => {
            let key = read_key(&key)?;
            let op = op.operation()?;
            block_on(submit_tx(api, key, nonce, chain_id, wait, dry_run, op))
        }
        LedgerCommand::Bench(args) => crate::bench::run_bench(args),
        LedgerCommand::BenchReplica(args) => crate::bench_replica::run_bench_replica(args),
        LedgerCommand::Prove { what } => block_on(prove(what)),
        LedgerCommand::VerifyProof {
            file,
            trust,
            output,
        } => verify_proof_file(&file, &trust, output),
        LedgerCommand::Checkpoint { api, out, trust } => {
            block_on(write_checkpoint(api, out, trust))
        }
    }
}

/// Fetches `path` from the node and decodes it as a proof; the node's own refusal is the error.
async fn fetch_proof(api: &str, path: &str) -> Result<phoenix_ledger_light::Proof> {
    let r = Conn::new(api)
        .get(path)
        .await
        .with_context(|| format!("fetching {api}{path}"))?;
    let v = r.json().with_context(|| format!("{api}{path}"))?;
    if r.status != 200 {
        bail!(
            "{api}{path}: {} ({})",
            v["error"].as_str().unwrap_or("no reason given"),
            r.status
        );
    }
    phoenix_ledger_light::Proof::from_json(v)
        .with_context(|| format!("{api}{path} did not answer a proof"))
}

/// `s` with every byte but URL-unreserved ones (and `/` if `keep_slash`) percent-encoded.
fn percent_encode_path(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn prove(what: ProveCommand) -> Result<ExitCode> {
    let (path, fetch) = match &what {
        ProveCommand::Audit { fleet, seq, fetch } => (
            format!(
                "/v1/proof/audit/{}/{seq}",
                percent_encode_path(fleet, false)
            ),
            fetch,
        ),
        ProveCommand::State { module, key, fetch } => (
            format!(
                "/v1/proof/state/{}/{}",
                percent_encode_path(module, false),
                percent_encode_path(key, true)
            ),
            fetch,
        ),
    };
    let path = format!("{path}?since_epoch={}", fetch.since_epoch);
    let proof = fetch_proof(&fetch.api, &path).await?;
    let bytes = match fetch.format {
        ProofFormat::Json => {
            let mut b = serde_json::to_vec_pretty(&proof.to_json())?;
            b.push(b'\n');
            b
        }
        ProofFormat::Bin => proof.encode(),
    };
    std::fs::write(&fetch.out, &bytes)
        .with_context(|| format!("writing {}", fetch.out.display()))?;
    let size = proof.encode().len();
    let changes = proof.changes().len();
    let (what, height, epoch, signers) = match &proof {
        phoenix_ledger_light::Proof::Audit(p) => (
            format!(
                "audit record {} of fleet {:?} (hash {})",
                p.seq, p.fleet, p.hash
            ),
            p.header.height,
            p.header.epoch,
            p.certificate.votes.len(),
        ),
        phoenix_ledger_light::Proof::State(p) => (
            format!(
                "state {}/{} ({})",
                p.module,
                p.key,
                if p.value.is_some() {
                    "present"
                } else {
                    "absent"
                }
            ),
            p.header.height,
            p.header.epoch,
            p.certificate.votes.len(),
        ),
        phoenix_ledger_light::Proof::Checkpoint(p) => (
            "a checkpoint".to_string(),
            p.header.height,
            p.header.epoch,
            p.certificate.votes.len(),
        ),
    };
    println!(
        "wrote {}: {what}, in block {height} (epoch {epoch}) with {signers} signatures and {changes} \
         validator-set change(s); {size} bytes encoded",
        fetch.out.display()
    );
    println!(
        "not verified yet: phoenix ledger verify-proof {} --trust GENESIS_OR_CHECKPOINT",
        fetch.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn read_trust(path: &Path) -> Result<phoenix_ledger_light::Trust> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    phoenix_ledger_light::Trust::from_json(&bytes)
        .with_context(|| format!("trust file {}", path.display()))
}

/// What `verify-proof` prints for a proven statement.
fn describe_proven(
    p: &phoenix_ledger_light::Proven,
    trust: &phoenix_ledger_light::Trust,
) -> String {
    use phoenix_ledger_light::Proven;
    use std::fmt::Write as _;
    let mut s = String::new();
    let block = |s: &mut String, b: &phoenix_ledger_light::client::Certified| {
        let _ = writeln!(
            s,
            "  in block {} ({}) of epoch {}, finalized by {} of its {} validators",
            b.height, b.hash, b.epoch, b.signers, b.validators
        );
        if b.changes_followed > 0 {
            let _ = writeln!(
                s,
                "  after following {} certified validator-set change(s)",
                b.changes_followed
            );
        }
    };
    match p {
        Proven::Audit(a) => {
            let _ = writeln!(
                s,
                "verified: audit record {} of fleet {:?} is on chain {:?} with hash {}",
                a.seq, a.fleet, trust.chain_id, a.hash
            );
            let _ = writeln!(s, "  record {} of the ledger's audit log", a.index);
            block(&mut s, &a.block);
        }
        Proven::State(st) => {
            match &st.value {
                Some(v) => {
                    let _ = writeln!(
                        s,
                        "verified: state {}/{} on chain {:?} is {v}",
                        st.module, st.key, trust.chain_id
                    );
                }
                None => {
                    let _ = writeln!(
                        s,
                        "verified: state {}/{} is absent on chain {:?}",
                        st.module, st.key, trust.chain_id
                    );
                }
            }
            let _ = writeln!(s, "  under state root {}", st.state_root);
            block(&mut s, &st.block);
        }
        Proven::Checkpoint(c) => {
            let _ = writeln!(
                s,
                "verified: block {} ({}) of chain {:?}, epoch {}, {} validators",
                c.height,
                c.header_hash,
                c.chain_id,
                c.epoch,
                c.validators.len()
            );
        }
    }
    s
}

fn verify_proof_file(file: &Path, trust_file: &Path, output: Output) -> Result<ExitCode> {
    let trust = read_trust(trust_file)?;
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let verdict = phoenix_ledger_light::Proof::parse(&bytes)
        .and_then(|proof| phoenix_ledger_light::LightClient::new(trust.clone()).verify(&proof));
    let from = if trust.epoch == 0 && trust.height == 0 {
        format!("genesis of chain {:?}", trust.chain_id)
    } else {
        format!(
            "checkpoint of chain {:?} at height {} (epoch {})",
            trust.chain_id, trust.height, trust.epoch
        )
    };
    match (verdict, output) {
        (Ok(p), Output::Json) => {
            println!(
                "{}",
                serde_json::json!({"verified": true, "trust": from, "proven": p})
            );
            Ok(ExitCode::SUCCESS)
        }
        (Ok(p), Output::Text) => {
            print!("{}", describe_proven(&p, &trust));
            println!("  trusting the {from} ({})", trust_file.display());
            Ok(ExitCode::SUCCESS)
        }
        (Err(e), Output::Json) => {
            println!(
                "{}",
                serde_json::json!({"verified": false, "trust": from, "error": e.to_string()})
            );
            Ok(ExitCode::FAILURE)
        }
        (Err(e), Output::Text) => {
            eprintln!(
                "proof refused: {e}\n  {} checked against the {from} ({})",
                file.display(),
                trust_file.display()
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn write_checkpoint(api: String, out: PathBuf, trust: Option<PathBuf>) -> Result<ExitCode> {
    let (trust, from) = match &trust {
        Some(t) => (read_trust(t)?, t.display().to_string()),
        None => {
            let r = Conn::new(&api).get("/v1/genesis").await?;
            if r.status != 200 {
                bail!("{api}/v1/genesis answered {}", r.status);
            }
            let t = phoenix_ledger_light::Trust::from_json(&r.body)
                .with_context(|| format!("the genesis {api} serves"))?;
            eprintln!(
                "warning: checked against the genesis {api} serves; pass --trust GENESIS to \
                 check it against one you hold"
            );
            (t, format!("{api}/v1/genesis"))
        }
    };
    let since = trust.epoch;
    let proof = fetch_proof(&api, &format!("/v1/checkpoint?since_epoch={since}")).await?;
    let mut client = phoenix_ledger_light::LightClient::new(trust);
    let checkpoint = match client.verify(&proof) {
        Ok(phoenix_ledger_light::Proven::Checkpoint(c)) => c,
        Ok(_) => bail!("{api}/v1/checkpoint answered another kind of proof"),
        Err(e) => {
            eprintln!("checkpoint refused: {e}\n  {api}/v1/checkpoint checked against {from}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut bytes = serde_json::to_vec_pretty(&checkpoint)?;
    bytes.push(b'\n');
    std::fs::write(&out, bytes).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "wrote {}: chain {:?}, epoch {}, block {} ({}), {} validators (set {}), checked against {from}",
        out.display(),
        checkpoint.chain_id,
        checkpoint.epoch,
        checkpoint.height,
        checkpoint.header_hash,
        checkpoint.validators.len(),
        checkpoint.validator_set_hash
    );
    Ok(ExitCode::SUCCESS)
}

/// What `join` prints for people: the new node, how to start it, and the governance commands
/// that make it a validator.
fn join_instructions(j: &Joined, from: &Path) -> String {
    use std::fmt::Write as _;
    // `testnet` writes the admin key next to the node homes; elsewhere the admin supplies one.
    let client_key = from
        .parent()
        .map(|d| d.join("client.key"))
        .filter(|k| k.is_file())
        .map_or_else(|| "ADMIN.key".to_string(), |k| k.display().to_string());
    let id = format!("add-{}", &j.key.to_hex()[..8]);
    let threshold = j.genesis.admin_threshold;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "wrote {} (genesis of chain {:?} from {})",
        j.home.display(),
        j.genesis.chain_id,
        from.display()
    );
    let _ = writeln!(s, "  key          {}", j.key);
    let _ = writeln!(s, "  p2p address  {}", j.p2p_address);
    let _ = writeln!(s, "  api          {}", j.api);
    let _ = writeln!(
        s,
        "start it (it follows the chain, verifying without voting, until it is added):"
    );
    let _ = writeln!(s, "  phoenix ledger run --home {}", j.home.display());
    let _ = writeln!(s, "then an admin proposes adding it as a validator:");
    let _ = writeln!(
        s,
        "  phoenix ledger tx --api {} --key {client_key} --wait gov-add-validator --id {id} --key {} --address {} --effective-epoch EPOCH",
        j.from_api, j.key, j.p2p_address
    );
    let _ = writeln!(
        s,
        "  EPOCH must be later than the epoch in which the proposal passes; the current epoch \
         (`epoch` in `phoenix ledger status --api {}`) + 2 leaves the node a whole epoch ({} blocks) \
         to connect and sync before it votes",
        j.from_api, j.genesis.epoch_length
    );
    if threshold <= 1 {
        let _ = writeln!(
            s,
            "genesis admin_threshold is 1: the proposal alone adds it"
        );
    } else {
        let _ = writeln!(
            s,
            "genesis admin_threshold is {threshold}: the proposal counts as one approval; {} other \
             admin(s) then run (unless governance has changed the threshold since):",
            threshold - 1
        );
        let _ = writeln!(
            s,
            "  phoenix ledger tx --api {} --key OTHER_ADMIN.key --wait gov-approve --id {id}",
            j.from_api
        );
    }
    s
}

fn init_tracing(node: bool) {
    use std::io::IsTerminal as _;
    let default = if node { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only for a person at a terminal: a log file or pipe gets plain text (escape codes
    // there make logs unreadable and break grep). NO_COLOR (no-color.org) turns it off too.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

/// Runs a future on a fresh current-thread tokio runtime.
///
/// # Errors
/// The future's error, or failing to build the runtime.
pub fn block_on<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

async fn submit_tx(
    api: String,
    key: Keypair,
    nonce: Option<u64>,
    chain_id: Option<String>,
    wait: bool,
    dry_run: bool,
    op: Operation,
) -> Result<ExitCode> {
    let mut c = Conn::new(&api);
    let chain_id = match chain_id {
        Some(c) => c,
        None => c.get("/v1/status").await?.json()?["chain_id"]
            .as_str()
            .context("status has no chain_id")?
            .to_string(),
    };
    let nonce = match nonce {
        Some(n) => n,
        None => {
            let r = c
                .get(&format!("/v1/state/accounts/{}", key.public()))
                .await?;
            if r.status == 404 {
                0
            } else {
                r.json()?["value"]["nonce"].as_u64().unwrap_or(0)
            }
        }
    };
    let tx = TxBody {
        chain_id,
        signer: key.public(),
        nonce,
        op,
    }
    .sign(&key);
    let bytes = tx.encode();
    if dry_run {
        println!("{}", hex::encode(&bytes));
        return Ok(ExitCode::SUCCESS);
    }
    let r = c
        .request("POST", "/v1/tx", "application/octet-stream", &bytes)
        .await?;
    let v = r.json()?;
    println!("{}", serde_json::to_string(&v)?);
    if r.status >= 300 {
        return Ok(ExitCode::from(2));
    }
    if let Some(reason) = v["reason"].as_str()
        && v["status"] == "pending"
    {
        // A nonce gap: without the missing transactions this one never commits.
        eprintln!("warning: {reason}");
    }
    if wait {
        let h = tx.hash();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut pending_reason = None;
        while Instant::now() < deadline {
            let s = c.get(&format!("/v1/tx/{h}")).await?.json()?;
            match s["status"].as_str() {
                Some("committed") => {
                    println!("{}", serde_json::to_string(&s)?);
                    return Ok(ExitCode::SUCCESS);
                }
                Some("rejected") => {
                    println!("{}", serde_json::to_string(&s)?);
                    return Ok(ExitCode::from(2));
                }
                _ => {
                    pending_reason = s["reason"].as_str().map(str::to_string);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        match pending_reason {
            Some(r) => bail!("transaction {h} not committed within 30 s: still pending: {r}"),
            None => bail!("transaction {h} not committed within 30 s"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs a validator from its home directory until the process is killed, or until it must stop.
///
/// # Errors
/// Bad configuration, failing to bind, block data that does not belong to the home's genesis
/// or key ([`crate::NodeError`], naming the file), or a finalized block that does not execute
/// (the node stops rather than serve wrong data). Never a panic on what it finds on disk.
pub fn run_node(home: Home) -> Result<()> {
    let data = home.data_dir();
    // Before the runtime opens storage (whose own lock would make a second run wait for ever):
    // a home in use is refused at once, naming the pid that holds it.
    let _lock = home.lock()?;
    // Data of another genesis or key is refused outright.
    home.check_data()?;
    let cfg = cw_tokio::Config::new()
        .with_worker_threads(home.node.worker_threads.max(1))
        .with_tcp_nodelay(Some(true))
        .with_storage_directory(&data)
        .with_catch_panics(false);
    let executor = cw_tokio::Runner::new(cfg);
    let signer = ed25519::PrivateKey::decode(home.key.seed().to_vec())
        .map_err(|e| anyhow::anyhow!("validator key: {e}"))?;
    let me = home.key.public();
    // Room for the validator set to grow by governance (the network panics on a peer set above
    // this; the orchestrator trims to it). Inbound mailboxes are sized from it, so not unbounded.
    let max_peer_set = (2 * home.genesis.validators.len().max(home.node.peers.len())).max(8);
    let node = home.node.clone();
    let genesis = home.genesis.clone();
    let home_dir = home.dir.clone();
    let stopped: Result<()> = executor.start(|context| async move {
        let shared = Shared::new(genesis, me);
        let handshake = Cups::<_, ChaCha20Poly1305>::new(
            Sake {
                signer: signer.clone(),
                synchrony_bound: Duration::from_secs(5),
                max_handshake_age: Duration::from_secs(10),
                version: sake::Version::V1,
            },
            cups::Version::V1,
        );
        let mut p2p_cfg = lookup::Config::local(
            handshake,
            crate::engine::NAMESPACE,
            node.p2p_listen,
            NonZeroUsize::new(max_peer_set).expect("at least 8"),
            MAX_MESSAGE_SIZE,
            NZUsize!(4096),
        );
        p2p_cfg.peer_connection_cooldown = Duration::from_millis(500);
        p2p_cfg.dial_frequency = Duration::from_millis(250);
        p2p_cfg.ping_frequency = Duration::from_secs(2);
        // The peer set is tracked by the epoch orchestrator from the finalized validator set
        // (genesis at first), so validators added by governance are admitted too.
        let (mut network, oracle) = lookup::Network::new(context.child("p2p"), p2p_cfg);
        // Per peer and channel. The inbound mailbox is sized from this burst (times peers), so an
        // oversized quota costs gigabytes of buffer; 1,024 messages per second covers votes,
        // blocks, batched gossip and backfill at full speed.
        let quota = Quota::per_second(NZU32!(1_024));
        let nets = Networks {
            votes: network.register(channels::VOTES, quota),
            certs: network.register(channels::CERTS, quota),
            resolver: network.register(channels::RESOLVER, quota),
            broadcast: network.register(channels::BROADCAST, quota),
            backfill: network.register(channels::BACKFILL, quota),
            txs: network.register(channels::TXS, quota),
            max_peer_set,
        };
        let p2p = network.start();
        let timing = Timing::from_cadence(Cadence {
            min_block_interval: Duration::from_millis(node.min_block_interval_ms),
            empty_block_interval: Duration::from_millis(node.empty_block_interval_ms),
            ..Cadence::default()
        });
        let started = start_validator(
            context.child("ledger"),
            "ledger",
            signer,
            shared.clone(),
            timing,
            oracle.clone(),
            oracle,
            nets,
        )
        .await?;
        // The stored chain replayed on this genesis: record what the data belongs to.
        home.record_data()?;
        let marshal = started.marshal.clone();
        let blocks: BlockSource = Arc::new(move |h: u64| {
            let marshal = marshal.clone();
            Box::pin(async move {
                let b = marshal.get_block(Height::new(h)).await?;
                let b: LedgerBlock = LedgerBlock::clone(b.inner());
                let f = marshal
                    .get_finalization(Height::new(h))
                    .await
                    .map(|f| Finality {
                        view: f.proposal.round.view().get(),
                        signers: f.certificate.signatures.len(),
                        certificate_hex: hex::encode(f.encode()),
                        format: "commonware",
                    });
                Some((b, f))
            })
        });
        let certs = crate::proofs::marshal_certs(started.marshal.clone(), shared.clone());
        let marshal = started.marshal.clone();
        let sync: crate::api::SyncSource = Arc::new(move |h: u64| {
            let marshal = marshal.clone();
            Box::pin(async move {
                let b = marshal.get_block(Height::new(h)).await?;
                let block = LedgerBlock::clone(b.inner());
                // The certificate only if it is this block's own (one finalized as an ancestor
                // of another has none; the replica takes it on its descendant's).
                let cert = marshal
                    .get_finalization(Height::new(h))
                    .await
                    .map(|f| crate::proofs::light_cert(&f))
                    .and_then(|(c, finalizes)| (finalizes == block.hash()).then_some(c));
                Some(crate::replica::follow::SyncRecord {
                    block: block.block().clone(),
                    cert,
                })
            })
        });
        let metrics_ctx = context.child("metrics");
        let engine_metrics: EngineMetrics = Arc::new(move || metrics_ctx.encode());
        let state = ApiState {
            shared,
            blocks,
            certs,
            engine_metrics,
            started: Instant::now(),
            empty_block_interval_ms: node.empty_block_interval_ms,
            sync,
            replica: None,
        };
        let api_error = |source| crate::NodeError::Api {
            addr: node.api_listen,
            source,
        };
        let listener = tokio::net::TcpListener::bind(node.api_listen)
            .await
            .map_err(api_error)?;
        info!(api = %node.api_listen, p2p = %node.p2p_listen, "ledger node running");
        let halt = state.shared.clone();
        let server = tokio::spawn(async move { axum::serve(listener, api::router(state)).await });
        let _keep = (p2p, started.handles);
        tokio::select! {
            served = server => match served {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(api_error(e).into()),
                Err(e) => Err(api_error(std::io::Error::other(e)).into()),
            },
            // A finalized block that does not execute: stop, with the error, non-zero.
            e = halt.halted() => Err(anyhow::Error::new(e)),
        }
    });
    stopped.with_context(|| {
        format!(
            "ledger node {} (block data in {})",
            home_dir.display(),
            data.display()
        )
    })
}

/// Loads `client.json` from a testnet directory.
///
/// # Errors
/// Missing or malformed file.
pub fn load_client(dir: &std::path::Path) -> Result<ClientConfig> {
    Ok(serde_json::from_slice(&std::fs::read(
        dir.join("client.json"),
    )?)?)
}
