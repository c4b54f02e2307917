//! Node home directory: `node.json`, `genesis.json`, `validator.key`, and `data/`.

use anyhow::{Context, Result, bail};
use phoenix_ledger_types::crypto::{Keypair, PublicKey};
use phoenix_ledger_types::exec::{Genesis, GenesisAccount, LedgerState, Validator};
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
}

/// Writes `dir/node-0 .. node-(N-1)`, `dir/client.key` and `dir/client.json`.
///
/// # Errors
/// I/O errors, or `N == 0`.
pub fn write_testnet(spec: &TestnetSpec) -> Result<ClientConfig> {
    if spec.validators == 0 {
        bail!("--validators must be at least 1");
    }
    std::fs::create_dir_all(&spec.dir)?;
    let keys: Vec<Keypair> = (0..spec.validators).map(|_| random_key()).collect();
    let p2p = |i: usize| -> SocketAddr {
        SocketAddr::from((
            [127, 0, 0, 1],
            spec.p2p_base_port + u16::try_from(i).expect("few"),
        ))
    };
    let api = |i: usize| -> SocketAddr {
        SocketAddr::from((
            [127, 0, 0, 1],
            spec.api_base_port + u16::try_from(i).expect("few"),
        ))
    };
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
        let d = spec.dir.join(format!("node-{i}"));
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
    write_secret(&spec.dir.join("client.key"), &client)?;
    let cc = ClientConfig {
        chain_id: spec.chain_id.clone(),
        key: client.public(),
        roles: Role::ALL.to_vec(),
        apis: (0..spec.validators)
            .map(|i| format!("http://{}", api(i)))
            .collect(),
    };
    std::fs::write(
        spec.dir.join("client.json"),
        serde_json::to_vec_pretty(&cc)?,
    )?;
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
