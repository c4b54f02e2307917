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
