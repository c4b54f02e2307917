//! Node home directory: `node.json`, `genesis.json`, `validator.key`, and `data/` (the block
//! data, with `data/chain.json` naming the genesis and key it was written with).

use crate::error::NodeError;
use anyhow::{Context, Result, bail};
use phoenix_ledger_types::crypto::{Hash, Keypair, PublicKey};
use phoenix_ledger_types::exec::{Genesis, GenesisAccount, LedgerState, Validator, genesis_block};
use phoenix_ledger_types::tx::Role;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A peer's key and address.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Peer {
    /// Consensus key.
    pub key: PublicKey,
    /// `host:port`.
    pub address: SocketAddr,
}

/// `node.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeConfig {
    /// Index in the testnet (informational).
    pub index: usize,
    /// API listen address (loopback).
    pub api_listen: SocketAddr,
    /// P2P listen address.
    pub p2p_listen: SocketAddr,
    /// The genesis validators including this one, as written by `testnet`. Only sizes the p2p
    /// peer-set limit now: the peers a node admits and dials come from the validator set in the
    /// finalized state (genesis at first, then governance changes), with its addresses.
    pub peers: Vec<Peer>,
    /// Minimum interval between blocks carrying transactions, ms.
    pub min_block_interval_ms: u64,
    /// Interval of empty blocks when idle, ms.
    pub empty_block_interval_ms: u64,
    /// Runtime worker threads.
    pub worker_threads: usize,
}

/// `client.json`, written next to the node directories by `testnet`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientConfig {
    /// Chain id.
    pub chain_id: String,
    /// The client's public key (its secret is in `client.key`).
    pub key: PublicKey,
    /// Roles granted at genesis.
    pub roles: Vec<Role>,
    /// API URLs of the nodes.
    pub apis: Vec<String>,
}

/// The format of the block data this version writes and reads (`format` in `data/chain.json`).
///
/// - 1 (records without `format`): audit records without their fleet chain's seq and hash.
/// - 2: audit records carry fleet, seq and hash and are addressed by `(fleet, seq)`; headers
///   commit to the audit log's root and to the next block's validator set. Blocks of format 1 do
///   not decode, so a home of format 1 is refused at start ([`NodeError::DataFormat`]).
pub const DATA_FORMAT: u32 = 2;

/// What changed in [`DATA_FORMAT`], for the refusal message.
pub const DATA_FORMAT_CHANGE: &str = "format 2: audit records carry their fleet chain's seq and \
     hash, and block headers commit to an audit log root";

fn format_1() -> u32 {
    1
}

/// `data/chain.json`: what the block data under `data/` was written for. Block data only means
/// something with the genesis it grew from (block 1's parent is the genesis block) and the key
/// whose votes the consensus journals hold, so a node refuses to start when its home files name
/// another genesis or key than its data, or another format than this version's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainRecord {
    /// The block data's format ([`DATA_FORMAT`]); absent in records of format 1.
    #[serde(default = "format_1")]
    pub format: u32,
    /// Chain id (for people reading the file; the genesis hash covers it).
    pub chain_id: String,
    /// Hash of the genesis block.
    pub genesis_hash: Hash,
    /// The validator key of the node that wrote the data.
    pub validator_key: PublicKey,
}

/// Name of the lock file in a node home: held (an exclusive advisory lock) by the running node,
/// and holding its pid.
pub const LOCK_FILE: &str = "node.lock";

/// The running node's hold on its home, released when dropped (or when the process exits,
/// however it exits: the OS drops the lock with the last descriptor).
#[derive(Debug)]
pub struct HomeLock {
    _file: std::fs::File,
}

/// Takes the exclusive lock on `dir/node.lock` without waiting; writes this process's pid into
/// it if `record_pid`.
pub(crate) fn lock_home(dir: &Path, record_pid: bool) -> Result<HomeLock, NodeError> {
    use std::io::{Read as _, Write as _};
    let path = dir.join(LOCK_FILE);
    let fail = |source| NodeError::LockHome {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(fail)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            // The holder writes its pid right after taking the lock; a holder caught in
            // between is "another process".
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            return Err(NodeError::HomeInUse {
                home: dir.to_path_buf(),
                pid: pid.trim().parse().ok(),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(fail(e)),
    }
    if record_pid {
        file.set_len(0).map_err(fail)?;
        writeln!(file, "{}", std::process::id()).map_err(fail)?;
    }
    Ok(HomeLock { _file: file })
}

/// Name of the chain record inside the data directory. It has a dot, which no storage partition
/// name may have, so it can never collide with stored data.
pub const CHAIN_RECORD: &str = "chain.json";

/// A loaded home directory.
#[derive(Debug)]
pub struct Home {
    /// The directory.
    pub dir: PathBuf,
    /// `node.json`.
    pub node: NodeConfig,
    /// `genesis.json`.
    pub genesis: Genesis,
    /// This validator's key.
    pub key: Keypair,
}

/// Reads a 32-byte secret seed stored as hex.
///
/// # Errors
/// Missing file or bad hex.
pub fn read_key(path: &Path) -> Result<Keypair> {
    let s = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let b = hex::decode(s.trim()).with_context(|| format!("{} is not hex", path.display()))?;
    let seed: [u8; 32] = b
        .try_into()
        .map_err(|_| anyhow::anyhow!("{} must hold 32 bytes", path.display()))?;
    Ok(Keypair::from_seed(seed))
}

fn write_secret(path: &Path, k: &Keypair) -> Result<()> {
    std::fs::write(path, hex::encode(k.seed()) + "\n")?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// A fresh random key.
pub fn random_key() -> Keypair {
    use rand::RngCore;
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    Keypair::from_seed(seed)
}

impl Home {
    /// Loads and checks a home directory.
    ///
    /// # Errors
    /// Missing or inconsistent files.
    pub fn load(dir: &Path) -> Result<Self> {
        let node: NodeConfig = serde_json::from_slice(
            &std::fs::read(dir.join("node.json"))
                .with_context(|| format!("reading {}/node.json", dir.display()))?,
        )
        .context("parsing node.json")?;
        let genesis: Genesis = serde_json::from_slice(
            &std::fs::read(dir.join("genesis.json")).context("reading genesis.json")?,
        )
        .context("parsing genesis.json")?;
        LedgerState::from_genesis(&genesis).map_err(|e| anyhow::anyhow!("genesis.json: {e}"))?;
        let key = read_key(&dir.join("validator.key"))?;
        // A key outside the genesis set is allowed: the node follows the chain without signing
        // until governance adds it to the validator set (it then signs from that epoch on).
        if !node.api_listen.ip().is_loopback() {
            bail!("api_listen must be a loopback address");
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            node,
            genesis,
            key,
        })
    }

    /// Takes the home for this process: an exclusive lock on `node.lock`, which then holds this
    /// pid. Taken before storage is opened, so a second `run` on the same home is refused at
    /// once instead of waiting on the storage directory's own lock for ever.
    ///
    /// # Errors
    /// [`NodeError::HomeInUse`] with the holder's pid, or [`NodeError::LockHome`] if the lock
    /// file cannot be opened or locked.
    pub fn lock(&self) -> Result<HomeLock, NodeError> {
        lock_home(&self.dir, true)
    }

    /// The storage directory: `data/` in the home.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// What this home's files say its block data must have been written for.
    pub fn chain_record(&self) -> ChainRecord {
        let state = LedgerState::from_genesis(&self.genesis).expect("validated by Home::load");
        ChainRecord {
            format: DATA_FORMAT,
            chain_id: self.genesis.chain_id.clone(),
            genesis_hash: genesis_block(&self.genesis, &state).hash(),
            validator_key: self.key.public(),
        }
    }

    /// Checks, before storage is opened, that the block data (if any) was written in this
    /// version's format ([`DATA_FORMAT`]) for this home's genesis and validator key.
    ///
    /// Data without a record (new, or written before records existed) passes; replaying it
    /// still checks every block against the genesis.
    ///
    /// # Errors
    /// [`NodeError::DataFormat`] for data of another format, [`NodeError::DataMismatch`] naming
    /// the file that disagrees, or [`NodeError::DataRecord`] if the record cannot be read or
    /// parsed.
    pub fn check_data(&self) -> Result<(), NodeError> {
        let data = self.data_dir();
        let path = data.join(CHAIN_RECORD);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(NodeError::DataRecord {
                    path,
                    reason: format!("cannot read it: {e}"),
                });
            }
        };
        let stored: ChainRecord =
            serde_json::from_slice(&bytes).map_err(|e| NodeError::DataRecord {
                path: path.clone(),
                reason: format!("not a chain record ({e}); it is written by `phoenix ledger run`"),
            })?;
        // First: data of another format also has another genesis hash (the header changed), and
        // "another genesis" would send the operator looking for the wrong cause.
        if stored.format != DATA_FORMAT {
            return Err(NodeError::DataFormat {
                data,
                found: stored.format,
                expected: DATA_FORMAT,
            });
        }
        let current = self.chain_record();
        if stored.genesis_hash != current.genesis_hash {
            return Err(NodeError::DataMismatch {
                data,
                file: self.dir.join("genesis.json"),
                what: "genesis",
                stored: format!("{} (chain {:?})", stored.genesis_hash, stored.chain_id),
                current: format!("{} (chain {:?})", current.genesis_hash, current.chain_id),
            });
        }
        if stored.validator_key != current.validator_key {
            return Err(NodeError::DataMismatch {
                data,
                file: self.dir.join("validator.key"),
                what: "validator key",
                stored: stored.validator_key.to_hex(),
                current: current.validator_key.to_hex(),
            });
        }
        Ok(())
    }

    /// Writes `data/chain.json` if it is absent; called once storage has opened and the stored
    /// chain has replayed, so the record names the genesis and key the data was proven to
    /// belong to.
    ///
    /// # Errors
    /// [`NodeError::DataRecord`] if it cannot be written.
    pub fn record_data(&self) -> Result<(), NodeError> {
        let data = self.data_dir();
        let path = data.join(CHAIN_RECORD);
        if path.exists() {
            return Ok(());
        }
        let fail = |e: std::io::Error| NodeError::DataRecord {
            path: path.clone(),
            reason: format!("cannot write it: {e}"),
        };
        let bytes = serde_json::to_vec_pretty(&self.chain_record()).expect("plain JSON");
        // Written whole or not at all: a torn record would stop the next start.
        let tmp = data.join(format!("{CHAIN_RECORD}.tmp"));
        std::fs::create_dir_all(&data).map_err(fail)?;
        std::fs::write(&tmp, bytes).map_err(fail)?;
        std::fs::rename(&tmp, &path).map_err(fail)
    }
}

/// Parameters of a generated testnet.
#[derive(Debug, Clone)]
pub struct TestnetSpec {
    /// Validators.
    pub validators: usize,
    /// Output directory.
    pub dir: PathBuf,
    /// First API port.
    pub api_base_port: u16,
    /// First P2P port.
    pub p2p_base_port: u16,
    /// Chain id.
    pub chain_id: String,
    /// Empty-block interval, ms.
    pub empty_block_interval_ms: u64,
    /// Minimum block interval, ms.
    pub min_block_interval_ms: u64,
    /// Extra accounts with the auditor role (for the bench).
    pub extra_auditors: Vec<PublicKey>,
    /// Worker threads per node.
    pub worker_threads: usize,
    /// Replace `dir` whole if it exists and is not empty (`--force`); otherwise refuse.
    pub replace: bool,
}

/// Writes `dir/node-0 .. node-(N-1)`, `dir/client.key` and `dir/client.json`.
///
/// # Errors
/// Every reason to refuse at once, before anything is written: `N == 0`; `dir` exists and is
/// not a directory; `dir` is not empty and `replace` is not set (fresh keys and genesis beside
/// the old block data would not belong together); `replace` is set but `dir` is not a testnet
/// directory (no `client.json`). Then I/O errors while writing.
///
/// # Guarantees
/// The testnet is written into a sibling staging directory and renamed into place, so `dir`
/// holds either what it held before or a whole new testnet, never a mix. With `replace`, the
/// old directory (keys, genesis and block data together) is removed just before the rename.
pub fn write_testnet(spec: &TestnetSpec) -> Result<ClientConfig> {
    let mut problems: Vec<String> = Vec::new();
    if spec.validators == 0 {
        problems.push("--validators must be at least 1".into());
    } else {
        let ranges = [
            ("--api-base-port", spec.api_base_port),
            ("--p2p-base-port", spec.p2p_base_port),
        ]
        .map(|(flag, base)| port_range(flag, base, spec.validators));
        for r in &ranges {
            if let Err(p) = r {
                problems.push(p.clone());
            }
        }
        if let [Ok(api), Ok(p2p)] = &ranges
            && api.start() <= p2p.end()
            && p2p.start() <= api.end()
        {
            problems.push(format!(
                "the API ports {}..={} and the p2p ports {}..={} overlap",
                api.start(),
                api.end(),
                p2p.start(),
                p2p.end()
            ));
        }
    }
    let dir = &spec.dir;
    if dir.exists() && !dir.is_dir() {
        problems.push(format!(
            "--dir {} exists and is not a directory",
            dir.display()
        ));
    } else if dir.is_dir() {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        if !names.is_empty() && !spec.replace {
            let mut shown = names.iter().take(4).cloned().collect::<Vec<_>>().join(", ");
            if names.len() > 4 {
                shown.push_str(", ...");
            }
            problems.push(format!(
                "--dir {} is not empty (it holds {shown}); writing new keys and a new genesis \
                 there would leave them beside the old block data, which belongs to the old \
                 genesis. Pass --force to replace the directory whole",
                dir.display()
            ));
        } else if !names.is_empty() && !dir.join("client.json").is_file() {
            // `--force` removes the directory: only one this command wrote.
            problems.push(format!(
                "--force replaces only a directory `phoenix ledger testnet` wrote (with \
                 client.json); {} is not one, remove it yourself if it should go",
                dir.display()
            ));
        } else {
            // Removing a home under a running node would leave it writing into deleted files.
            for name in names.iter().filter(|n| n.starts_with("node-")) {
                let home = dir.join(name);
                if home.join(LOCK_FILE).is_file()
                    && let Err(e @ NodeError::HomeInUse { .. }) = lock_home(&home, false)
                {
                    problems.push(e.to_string());
                }
            }
        }
    }
    if !problems.is_empty() {
        bail!(
            "refusing to write {} (nothing written):\n  - {}",
            dir.display(),
            problems.join("\n  - ")
        );
    }
    let name = dir
        .file_name()
        .with_context(|| format!("--dir {} has no final component", dir.display()))?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let staging = parent.join(format!(
        ".{}.partial-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&staging);
    let cc = match write_testnet_files(&staging, spec) {
        Ok(cc) => cc,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e.context(format!("writing the testnet in {}", staging.display())));
        }
    };
    if dir.exists() {
        // Empty, or `replace`: keys, genesis and block data go together.
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::rename(&staging, dir)
        .with_context(|| format!("moving {} to {}", staging.display(), dir.display()))?;
    Ok(cc)
}

/// Node `i` of `n` uses port `base + i`: the range, or which port is out of range.
fn port_range(
    flag: &str,
    base: u16,
    n: usize,
) -> std::result::Result<std::ops::RangeInclusive<u16>, String> {
    if base == 0 {
        return Err(format!("{flag} 0 is not a port (1..=65535)"));
    }
    let last = u64::from(base) + n as u64 - 1;
    match u16::try_from(last) {
        Ok(last) => Ok(base..=last),
        Err(_) => Err(format!(
            "{flag} {base} with {n} validators needs ports {base}..={last}, past the last port \
             65535 (the highest base that fits is {})",
            65_536u64.saturating_sub(n as u64)
        )),
    }
}

fn write_testnet_files(dir: &Path, spec: &TestnetSpec) -> Result<ClientConfig> {
    std::fs::create_dir_all(dir)?;
    let keys: Vec<Keypair> = (0..spec.validators).map(|_| random_key()).collect();
    // `write_testnet` checked both ranges (`port_range`), so these sums stay within u16.
    let port = |base: u16, i: usize| -> SocketAddr {
        let offset = u16::try_from(i).expect("checked by port_range");
        SocketAddr::from(([127, 0, 0, 1], base + offset))
    };
    let p2p = |i: usize| port(spec.p2p_base_port, i);
    let api = |i: usize| port(spec.api_base_port, i);
    let client = random_key();
    let mut accounts = vec![GenesisAccount {
        key: client.public(),
        roles: Role::ALL.to_vec(),
    }];
    for k in &spec.extra_auditors {
        accounts.push(GenesisAccount {
            key: *k,
            roles: vec![Role::Auditor],
        });
    }
    let genesis = Genesis {
        chain_id: spec.chain_id.clone(),
        genesis_time_ms: 0,
        epoch_length: 100_000,
        admin_threshold: 1,
        validators: keys
            .iter()
            .enumerate()
            .map(|(i, k)| Validator {
                key: k.public(),
                address: p2p(i).to_string(),
            })
            .collect(),
        accounts,
    };
    let peers: Vec<Peer> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| Peer {
            key: k.public(),
            address: p2p(i),
        })
        .collect();
    for (i, k) in keys.iter().enumerate() {
        let d = dir.join(format!("node-{i}"));
        std::fs::create_dir_all(&d)?;
        std::fs::write(d.join("genesis.json"), serde_json::to_vec_pretty(&genesis)?)?;
        write_secret(&d.join("validator.key"), k)?;
        let node = NodeConfig {
            index: i,
            api_listen: api(i),
            p2p_listen: p2p(i),
            peers: peers.clone(),
            min_block_interval_ms: spec.min_block_interval_ms,
            empty_block_interval_ms: spec.empty_block_interval_ms,
            worker_threads: spec.worker_threads,
        };
        std::fs::write(d.join("node.json"), serde_json::to_vec_pretty(&node)?)?;
    }
    write_secret(&dir.join("client.key"), &client)?;
    let cc = ClientConfig {
        chain_id: spec.chain_id.clone(),
        key: client.public(),
        roles: Role::ALL.to_vec(),
        apis: (0..spec.validators)
            .map(|i| format!("http://{}", api(i)))
            .collect(),
    };
    std::fs::write(dir.join("client.json"), serde_json::to_vec_pretty(&cc)?)?;
    Ok(cc)
}

/// What `phoenix ledger join` is asked to write.
#[derive(Debug, Clone)]
pub struct JoinSpec {
    /// An existing node's home (`DIR/node-0`): its `genesis.json` and cadence are copied.
    pub from: PathBuf,
    /// The new node's home, created.
    pub home: PathBuf,
    /// The new node serves its API on `127.0.0.1:api_port`.
    pub api_port: u16,
    /// The new node listens for peers on `127.0.0.1:p2p_port`.
    pub p2p_port: u16,
    /// Its validator key (hex seed file); a fresh one when `None`.
    pub key: Option<PathBuf>,
}

/// What `write_join_home` wrote.
#[derive(Debug, Clone)]
pub struct Joined {
    /// The new home.
    pub home: PathBuf,
    /// The new node's validator key.
    pub key: PublicKey,
    /// Its p2p address: the `--address` of `gov-add-validator`.
    pub p2p_address: SocketAddr,
    /// Its API URL.
    pub api: String,
    /// The `--from` node's API URL (where an admin submits the proposal).
    pub from_api: String,
    /// The chain's genesis (copied from `--from`).
    pub genesis: Genesis,
}

/// Writes the home of a node that joins an existing chain: `genesis.json` copied from
/// `spec.from`, a `node.json` with the given loopback ports and the `from` node's cadence and
/// worker threads, and `validator.key` (fresh, or copied from `spec.key`). The node starts as a
/// follower; governance (`gov-add-validator`) makes it a validator.
///
/// # Errors
/// Every reason to refuse at once, before anything is written: `spec.home` already holds a
/// validator key or chain data, `spec.from` is not a loadable node home, a port equals another
/// (the two given ones, a genesis validator's p2p port, the `from` node's API port), or the key
/// is already a genesis validator's. Then I/O errors while writing.
///
/// # Guarantees
/// The key is written last, so a write that fails halfway leaves no key and can be re-run.
pub fn write_join_home(spec: &JoinSpec) -> Result<Joined> {
    let mut problems: Vec<String> = Vec::new();
    let existing: Vec<&str> = ["validator.key", "data"]
        .into_iter()
        .filter(|f| spec.home.join(f).exists())
        .collect();
    if spec.home.exists() && !spec.home.is_dir() {
        problems.push(format!(
            "--home {} exists and is not a directory",
            spec.home.display()
        ));
    } else if !existing.is_empty() {
        problems.push(format!(
            "--home {} is already a node's home (it has {}); refusing to overwrite it",
            spec.home.display(),
            existing.join(" and ")
        ));
    }
    let from = match Home::load(&spec.from) {
        Ok(h) => Some(h),
        Err(e) => {
            problems.push(format!(
                "--from {} is not a node home (expected node.json, genesis.json and \
                 validator.key, as `phoenix ledger testnet` writes): {e:#}",
                spec.from.display()
            ));
            None
        }
    };
    if spec.api_port == spec.p2p_port {
        problems.push(format!(
            "--api-port and --p2p-port are both {}",
            spec.api_port
        ));
    }
    for (flag, p) in [("--api-port", spec.api_port), ("--p2p-port", spec.p2p_port)] {
        if p == 0 {
            problems.push(format!("{flag} 0 is not a port (1..=65535)"));
        }
    }
    let key = match &spec.key {
        Some(path) => match read_key(path) {
            Ok(k) => Some(k),
            Err(e) => {
                problems.push(format!("--key: {e:#}"));
                None
            }
        },
        None => Some(random_key()),
    };
    if let Some(from) = &from {
        // The new node listens on loopback beside the chain's nodes, so a genesis validator's
        // port is taken whatever host its address names.
        for v in &from.genesis.validators {
            let port = v
                .address
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok());
            for (flag, p) in [("--api-port", spec.api_port), ("--p2p-port", spec.p2p_port)] {
                if port == Some(p) {
                    problems.push(format!(
                        "{flag} {p} is the port of genesis validator {} ({})",
                        v.key, v.address
                    ));
                }
            }
            if key.as_ref().is_some_and(|k| k.public() == v.key) {
                problems.push(format!(
                    "--key {} is already a genesis validator ({}): a joining node needs its own key",
                    v.key, v.address
                ));
            }
        }
        let from_api = from.node.api_listen.port();
        for (flag, p) in [("--api-port", spec.api_port), ("--p2p-port", spec.p2p_port)] {
            if p == from_api {
                problems.push(format!(
                    "{flag} {p} is the API port of the --from node ({})",
                    from.node.api_listen
                ));
            }
        }
    }
    let (Some(from), Some(key), true) = (from, key, problems.is_empty()) else {
        bail!(
            "refusing to write {} (nothing written):\n  - {}",
            spec.home.display(),
            problems.join("\n  - ")
        );
    };

    let p2p_address = SocketAddr::from(([127, 0, 0, 1], spec.p2p_port));
    let api_listen = SocketAddr::from(([127, 0, 0, 1], spec.api_port));
    // `peers` is the genesis set plus this node, as `write_testnet` writes it (it only sizes
    // the p2p peer-set limit).
    let mut peers: Vec<Peer> = from
        .node
        .peers
        .iter()
        .filter(|p| p.key != key.public())
        .cloned()
        .collect();
    let index = peers.len();
    peers.push(Peer {
        key: key.public(),
        address: p2p_address,
    });
    let node = NodeConfig {
        index,
        api_listen,
        p2p_listen: p2p_address,
        peers,
        min_block_interval_ms: from.node.min_block_interval_ms,
        empty_block_interval_ms: from.node.empty_block_interval_ms,
        worker_threads: from.node.worker_threads,
    };
    std::fs::create_dir_all(&spec.home)
        .with_context(|| format!("creating {}", spec.home.display()))?;
    // The genesis file is copied byte for byte, not re-serialised, so it is the chain's exactly.
    std::fs::copy(
        spec.from.join("genesis.json"),
        spec.home.join("genesis.json"),
    )
    .with_context(|| format!("copying genesis.json to {}", spec.home.display()))?;
    std::fs::write(
        spec.home.join("node.json"),
        serde_json::to_vec_pretty(&node)?,
    )
    .with_context(|| format!("writing {}/node.json", spec.home.display()))?;
    write_secret(&spec.home.join("validator.key"), &key)
        .with_context(|| format!("writing {}/validator.key", spec.home.display()))?;
    Ok(Joined {
        home: spec.home.clone(),
        key: key.public(),
        p2p_address,
        api: format!("http://{api_listen}"),
        from_api: format!("http://{}", from.node.api_listen),
        genesis: from.genesis,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "phoenix-ledger-config-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn spec(dir: &Path, replace: bool) -> TestnetSpec {
        TestnetSpec {
            validators: 2,
            dir: dir.to_path_buf(),
            api_base_port: 18_700,
            p2p_base_port: 19_700,
            chain_id: "config-test".into(),
            empty_block_interval_ms: 1000,
            min_block_interval_ms: 50,
            extra_auditors: vec![],
            worker_threads: 1,
            replace,
        }
    }

    /// Every file under `dir` with its contents.
    fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).expect("read dir") {
            let path = e.expect("entry").path();
            if path.is_dir() {
                out.extend(snapshot(&path));
            } else {
                out.push((path.clone(), std::fs::read(&path).expect("read")));
            }
        }
        out.sort();
        out
    }

    /// Regression: `testnet` run again on an existing directory replaced every key and the
    /// genesis and kept the old block data, so a node then panicked replaying it ("parent hash
    /// mismatch"). Now a non-empty `--dir` is refused with nothing written, and `--force`
    /// (`replace`) removes it whole, block data included, before writing a fresh testnet.
    #[test]
    fn regression_testnet_refuses_a_non_empty_dir_and_force_replaces_it_whole() {
        let dir = tmpdir("rerun");
        let first = write_testnet(&spec(&dir, false)).expect("fresh dir");
        let data = dir.join("node-0").join("data");
        std::fs::create_dir_all(&data).expect("data");
        std::fs::write(data.join("block"), b"old chain").expect("data");
        let before = snapshot(&dir);

        let e = format!("{:#}", write_testnet(&spec(&dir, false)).unwrap_err());
        assert!(e.contains("is not empty"), "{e}");
        assert!(e.contains("--force"), "{e}");
        assert!(e.contains("nothing written"), "{e}");
        assert_eq!(snapshot(&dir), before, "a refused testnet wrote something");

        let second = write_testnet(&spec(&dir, true)).expect("--force");
        assert_ne!(first.key, second.key, "fresh keys");
        assert!(!data.exists(), "the old block data survived --force");
        let home = Home::load(&dir.join("node-0")).expect("loads");
        assert_eq!(
            home.key.public(),
            home.genesis.validators[0].key,
            "keys and genesis belong together"
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.parent().expect("parent"))
            .expect("read")
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .contains(&format!("rerun-{}.partial", std::process::id()))
            })
            .collect();
        assert!(leftovers.is_empty(), "staging dir left behind");
        let _ = std::fs::remove_dir_all(&dir);

        // `--force` only removes a directory `testnet` wrote.
        let other = tmpdir("not-a-testnet");
        std::fs::create_dir_all(&other).expect("dir");
        std::fs::write(other.join("precious.txt"), b"keep").expect("file");
        let e = format!("{:#}", write_testnet(&spec(&other, true)).unwrap_err());
        assert!(e.contains("replaces only a directory"), "{e}");
        assert!(other.join("precious.txt").exists());
        // An empty directory is fine without --force.
        std::fs::remove_file(other.join("precious.txt")).expect("rm");
        write_testnet(&spec(&other, false)).expect("empty dir");
        let _ = std::fs::remove_dir_all(&other);
    }

    /// Regression (same defect, at start-up): a node must refuse block data written for another
    /// genesis or validator key, naming the file that disagrees, before it opens storage.
    #[test]
    fn regression_node_refuses_data_of_another_genesis_or_key() {
        let dir = tmpdir("mismatch");
        write_testnet(&spec(&dir, false)).expect("testnet");
        let node0 = dir.join("node-0");
        let home = Home::load(&node0).expect("home");
        home.check_data().expect("no data yet");
        home.record_data().expect("record");
        home.check_data().expect("its own data");

        // Another testnet's genesis and key over this data (what `testnet` used to do).
        let other = tmpdir("mismatch-other");
        write_testnet(&spec(&other, false)).expect("other");
        std::fs::copy(
            other.join("node-0/genesis.json"),
            node0.join("genesis.json"),
        )
        .expect("copy");
        let e = Home::load(&node0).expect("home").check_data().unwrap_err();
        assert!(
            matches!(
                e,
                NodeError::DataMismatch {
                    what: "genesis",
                    ..
                }
            ),
            "{e}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains(&node0.join("data").display().to_string()),
            "{msg}"
        );
        assert!(msg.contains("genesis.json"), "{msg}");
        assert!(msg.contains("do not belong"), "{msg}");

        // Same genesis, another key.
        std::fs::copy(dir.join("node-1/genesis.json"), node0.join("genesis.json")).expect("copy");
        std::fs::copy(
            dir.join("node-1/validator.key"),
            node0.join("validator.key"),
        )
        .expect("copy");
        let e = Home::load(&node0).expect("home").check_data().unwrap_err();
        assert!(
            matches!(
                e,
                NodeError::DataMismatch {
                    what: "validator key",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("validator.key"), "{e}");

        // A corrupt record is an error naming it, not a panic.
        std::fs::write(node0.join("data").join(CHAIN_RECORD), b"{").expect("write");
        let e = Home::load(&node0).expect("home").check_data().unwrap_err();
        assert!(matches!(e, NodeError::DataRecord { .. }), "{e}");
        assert!(e.to_string().contains(CHAIN_RECORD), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&other);
    }

    /// Issue 10: a home written before audit records carried their fleet chain's seq and hash
    /// (its `data/chain.json` has no `format`) is refused at start with a message naming the
    /// format, not replayed (its blocks do not decode) nor called "another genesis".
    #[test]
    fn a_home_of_the_old_data_format_is_refused_naming_the_format() {
        let dir = tmpdir("old-format");
        write_testnet(&spec(&dir, false)).expect("testnet");
        let home = Home::load(&dir.join("node-0")).expect("home");
        home.record_data().expect("record");
        let path = home.data_dir().join(CHAIN_RECORD);
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        assert_eq!(written["format"], DATA_FORMAT);
        // What the previous version wrote: no `format`, and (the header changed) another
        // genesis hash.
        let old = serde_json::json!({
            "chain_id": written["chain_id"],
            "genesis_hash": Hash([9; 32]),
            "validator_key": written["validator_key"],
        });
        std::fs::write(&path, old.to_string()).expect("write");
        let e = home.check_data().unwrap_err();
        assert!(
            matches!(
                e,
                NodeError::DataFormat {
                    found: 1,
                    expected: DATA_FORMAT,
                    ..
                }
            ),
            "{e}"
        );
        let msg = e.to_string();
        assert!(msg.contains("ledger format 1"), "{msg}");
        assert!(msg.contains("reads format 2"), "{msg}");
        assert!(msg.contains("seq and hash"), "{msg}");
        assert!(msg.contains("testnet --force"), "{msg}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Regression: a second `phoenix ledger run` on a home in use waited for ever ("waiting for
    /// storage directory hold"). The home's lock is taken without waiting and names the pid
    /// that holds it; `testnet --force` refuses to remove a home in use.
    #[test]
    fn regression_a_home_in_use_is_refused_at_once_naming_the_pid() {
        let dir = tmpdir("in-use");
        write_testnet(&spec(&dir, false)).expect("testnet");
        let home = Home::load(&dir.join("node-0")).expect("home");
        let held = home.lock().expect("first lock");
        let recorded = std::fs::read_to_string(home.dir.join(LOCK_FILE)).expect("lock file");
        assert_eq!(recorded.trim(), std::process::id().to_string());
        // flock locks belong to the open file description, so a second open in this same
        // process contends exactly as a second process would.
        let e = home.lock().unwrap_err();
        assert!(
            matches!(e, NodeError::HomeInUse { pid: Some(p), .. } if p == std::process::id()),
            "{e}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains(&format!(
                "node home {} is in use by pid {}",
                home.dir.display(),
                std::process::id()
            )) && msg.contains("stop it first"),
            "{msg}"
        );
        let e = format!("{:#}", write_testnet(&spec(&dir, true)).unwrap_err());
        assert!(e.contains("is in use by pid"), "{e}");
        assert!(
            home.dir.join("validator.key").is_file(),
            "--force removed a home in use"
        );
        drop(held);
        let again = home.lock().expect("released on drop");
        drop(again);
        write_testnet(&spec(&dir, true)).expect("--force once no node runs");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Regression: `testnet --api-base-port 65534` (4 validators) panicked with an arithmetic
    /// overflow computing node 2's port. Every port range is checked first; each problem names
    /// the flag and the ports, all at once, and nothing is written.
    #[test]
    fn regression_testnet_ports_past_65535_are_refused_not_an_overflow() {
        let dir = tmpdir("ports");
        let mut s = spec(&dir, false);
        s.validators = 4;
        s.api_base_port = 65_534;
        s.p2p_base_port = 65_535;
        let e = format!("{:#}", write_testnet(&s).unwrap_err());
        assert!(
            e.contains("--api-base-port 65534 with 4 validators needs ports 65534..=65537"),
            "{e}"
        );
        assert!(e.contains("--p2p-base-port 65535"), "{e}");
        assert!(e.contains("highest base that fits is 65532"), "{e}");
        assert!(!dir.exists(), "a refused testnet wrote {}", dir.display());
        // The highest base that fits is accepted: ports 65532..=65535.
        s.api_base_port = 65_532;
        s.p2p_base_port = 30_000;
        let cc = write_testnet(&s).expect("fits");
        assert_eq!(cc.apis[3], "http://127.0.0.1:65535");
        let _ = std::fs::remove_dir_all(&dir);
        // Port 0, and ranges that overlap.
        s.api_base_port = 0;
        let e = format!("{:#}", write_testnet(&s).unwrap_err());
        assert!(e.contains("--api-base-port 0 is not a port"), "{e}");
        s.api_base_port = 30_002;
        let e = format!("{:#}", write_testnet(&s).unwrap_err());
        assert!(
            e.contains("API ports 30002..=30005 and the p2p ports 30000..=30003 overlap"),
            "{e}"
        );
        assert!(!dir.exists());
    }

    /// Same defect class for `join`: port 0 is refused with the flag named, nothing written.
    #[test]
    fn join_refuses_port_zero() {
        let dir = tmpdir("join-ports");
        write_testnet(&spec(&dir, false)).expect("testnet");
        let home = dir.join("node-9");
        let e = format!(
            "{:#}",
            write_join_home(&JoinSpec {
                from: dir.join("node-0"),
                home: home.clone(),
                api_port: 0,
                p2p_port: 31_000,
                key: None,
            })
            .unwrap_err()
        );
        assert!(e.contains("--api-port 0 is not a port"), "{e}");
        assert!(!home.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
