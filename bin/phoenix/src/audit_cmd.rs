//! The fleet's audit chain from the CLI: the operator key, the chain in the state store
//! (wiring, anchoring, verification for `history --verify`), and `phoenix audit ...`.

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use phoenix_audit::{
    ChainHead, ChainReport, OperatorKey, Standing, StoreChain, import_legacy_log, legacy_log_path,
    verify_chain,
};
use phoenix_state::StateStore;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use crate::deploy_cmd::StateArgs;

/// Where the operator key is: `--operator-key`, else `PHOENIX_OPERATOR_KEY`, else
/// `~/.config/phoenix/operator.key`.
pub(crate) fn key_path(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    flag.map(Path::to_owned)
        .or_else(OperatorKey::default_path)
        .context(
            "no operator key: pass --operator-key FILE or set PHOENIX_OPERATOR_KEY \
             (neither HOME nor XDG_CONFIG_HOME is set, so there is no default)",
        )
}

/// The operator's key, created on first use (and said so on stderr).
pub(crate) fn operator_key(flag: Option<&Path>) -> anyhow::Result<OperatorKey> {
    let path = key_path(flag)?;
    let (key, created) = OperatorKey::load_or_create(&path)?;
    if created {
        eprintln!(
            "created your operator key {} (public key {}); it signs the audit records you write. \
             Back it up: without it you cannot sign for this identity again",
            path.display(),
            key.public_hex()
        );
    }
    Ok(key)
}

/// The fleets' audit chains in `store`, signed with the operator's key; an old `audit.jsonl`
/// of the state dir is imported first.
pub(crate) fn open_chain(
    store: Arc<dyn StateStore>,
    state_dir: &Path,
    key_flag: Option<&Path>,
    actor: &str,
) -> anyhow::Result<Arc<StoreChain>> {
    let chain = StoreChain::new(store, operator_key(key_flag)?);
    let report = import_legacy_log(&chain, state_dir, jiff::Timestamp::now(), actor)?;
    for (fleet, n) in &report.imported {
        eprintln!(
            "imported {n} record(s) of fleet {fleet} from the old audit log into the state store (marked unsigned, vouched for by your key)"
        );
    }
    if let Some(moved) = &report.moved_to {
        eprintln!("the old audit log is kept as {}", moved.display());
    }
    Ok(Arc::new(chain))
}

/// Refuses, before anything changes, an operator whose key may not sign `fleet`'s chain.
pub(crate) fn ensure_can_sign(chain: &StoreChain, fleet: &str) -> anyhow::Result<()> {
    if let Standing::NotAllowed { allowed } = chain.standing(fleet)? {
        let key = chain.key();
        bail!(
            "{}",
            phoenix_audit::AuditError::KeyNotAllowed {
                fleet: fleet.to_owned(),
                public_key: key.public_hex(),
                key_path: key.path().to_owned(),
                allowed,
            }
        );
    }
    Ok(())
}

/// Verifies `fleet`'s chain against its keys and anchor.
pub(crate) fn verify(store: &dyn StateStore, fleet: &str) -> anyhow::Result<ChainReport> {
    let rows = store.audit_records(fleet)?;
    let keys = store.audit_keys(fleet)?;
    let anchor = store.audit_anchor(fleet)?.map(|a| ChainHead {
        seq: a.seq,
        hash: a.head_hash,
    });
    Ok(verify_chain(fleet, &rows, &keys, anchor.as_ref()))
}

/// Anchors `fleet`'s chain head after a command, unless the chain no longer verifies (then the
/// evidence is kept and `history --verify` reports it).
pub(crate) fn anchor(store: &dyn StateStore, fleet: &str) {
    match verify(store, fleet) {
        Ok(report) if report.verified() => {
            if let Some(head) = report.head {
                let _ = store.anchor_audit_head(fleet, head.seq, &head.hash);
            }
        }
        Ok(report) => eprintln!(
            "warning: the audit chain of fleet {fleet} does not verify ({}); it was not anchored: see `phoenix history --verify`",
            report
                .problems
                .first()
                .map(ToString::to_string)
                .unwrap_or_default()
        ),
        Err(e) => eprintln!("warning: the audit chain of fleet {fleet} was not anchored: {e:#}"),
    }
}

/// When the state dir still has an old `audit.jsonl` that no write command has imported yet.
pub(crate) fn legacy_log_pending(state_dir: &Path) -> Option<PathBuf> {
    let path = legacy_log_path(state_dir);
    path.exists().then_some(path)
}

/// `phoenix audit ...`.
#[derive(Subcommand, Clone, Debug)]
pub(crate) enum AuditCommand {
    /// Print your operator key's public key and where the key is kept.
    ShowKey {
        /// The operator key file (default `PHOENIX_OPERATOR_KEY`, else
        /// `~/.config/phoenix/operator.key`); created if missing.
        #[arg(long, env = "PHOENIX_OPERATOR_KEY")]
        operator_key: Option<PathBuf>,
    },
    /// Allow another operator's key to sign a fleet's audit chain (signed with your key, which
    /// must be allowed).
    AllowKey(KeyArgs),
    /// Revoke a key: records it signs afterwards no longer verify.
    RevokeKey(KeyArgs),
    /// Import the state dir's old `audit.jsonl` into the state store (any apply, rollback or
    /// destroy also does).
    Import {
        #[command(flatten)]
        state: StateArgs,
    },
}

/// A key to allow or revoke in a fleet's chain.
#[derive(Args, Clone, Debug)]
pub(crate) struct KeyArgs {
    /// Spec files naming the fleet.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The other operator's public key (`phoenix audit show-key` prints it).
    #[arg(long)]
    pub public_key: String,
    /// Whose key it is, for people (allow only).
    #[arg(long, default_value = "operator")]
    pub name: String,
    #[command(flatten)]
    pub state: StateArgs,
}

pub(crate) fn run(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    let actor = phoenix_state::LockOwner::this_process("audit").who;
    match cmd {
        AuditCommand::ShowKey { operator_key: flag } => {
            let key = operator_key(flag.as_deref())?;
            crate::print_out(&format!(
                "public key: {}\nkey file:   {}\n",
                key.public_hex(),
                key.path().display()
            ))?;
        }
        AuditCommand::AllowKey(args) | AuditCommand::RevokeKey(args)
            if !phoenix_audit::is_public_key(&args.public_key) =>
        {
            bail!(
                "`{}` is not an ed25519 public key (64 hex digits; `phoenix audit show-key` prints one)",
                args.public_key
            );
        }
        AuditCommand::AllowKey(args) => {
            let (fleet, chain) = fleet_chain(&args, &actor)?;
            let r = chain.allow_key(
                jiff::Timestamp::now(),
                &actor,
                &fleet,
                &args.public_key,
                &args.name,
            )?;
            anchor(&*store_of(&args.state)?, &fleet);
            crate::print_out(&format!(
                "allowed key {} ({}) to sign fleet {fleet}'s audit chain (record {})\n",
                args.public_key, args.name, r.seq
            ))?;
        }
        AuditCommand::RevokeKey(args) => {
            let (fleet, chain) = fleet_chain(&args, &actor)?;
            let r = chain.revoke_key(jiff::Timestamp::now(), &actor, &fleet, &args.public_key)?;
            anchor(&*store_of(&args.state)?, &fleet);
            crate::print_out(&format!(
                "revoked key {} for fleet {fleet}'s audit chain (record {})\n",
                args.public_key, r.seq
            ))?;
        }
        AuditCommand::Import { state } => {
            let store = store_of(&state)?;
            if legacy_log_pending(&state.state_dir).is_none() {
                crate::print_out(&format!(
                    "nothing to import: {} has no old audit.jsonl\n",
                    state.state_dir.display()
                ))?;
                return Ok(ExitCode::SUCCESS);
            }
            open_chain(
                store,
                &state.state_dir,
                state.operator_key.as_deref(),
                &actor,
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn store_of(state: &StateArgs) -> anyhow::Result<Arc<dyn StateStore>> {
    Ok(Arc::from(
        phoenix_state::open(&state.state_dir, state.state_url.as_deref())
            .with_context(|| format!("opening the state store in {}", state.state_dir.display()))?,
    ))
}

fn fleet_chain(args: &KeyArgs, actor: &str) -> anyhow::Result<(String, Arc<StoreChain>)> {
    let fleet = crate::deploy_cmd::fleet_name(&args.files)?;
    let store = store_of(&args.state)?;
    let chain = open_chain(
        store,
        &args.state.state_dir,
        args.state.operator_key.as_deref(),
        actor,
    )?;
    ensure_can_sign(&chain, &fleet)?;
    Ok((fleet, chain))
}
