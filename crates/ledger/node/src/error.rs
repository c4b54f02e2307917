//! The node's typed errors: one enum, variants named after the step that failed.
//!
//! Data on disk is the outside world: a home in use, block data that belongs to another genesis
//! or key, an archive that does not open, a finalized block that does not execute are all errors
//! that say which file and what is wrong, and stop the node with a non-zero exit; none is a panic.

use phoenix_ledger_types::crypto::Hash;
use phoenix_ledger_types::exec::BlockError;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Why a node cannot start or must stop.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Another process holds the home's lock (`node.lock`).
    #[error(
        "node home {} is in use by {} (another `phoenix ledger run` or `replica`); stop it first",
        home.display(),
        holder(*pid)
    )]
    HomeInUse {
        /// The home.
        home: PathBuf,
        /// The holder's pid, as it wrote it in the lock file (unknown if unreadable).
        pid: Option<u32>,
    },
    /// The home's lock file cannot be opened or locked.
    #[error("locking {}", path.display())]
    LockHome {
        /// The lock file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The block data in `data/` was written for another genesis or validator key than the
    /// home's files now name.
    #[error(
        "{} holds the block data of {what} {stored}, but {} gives {what} {current}: the keys and \
         genesis of this home do not belong to its data (restore the files that wrote it, or \
         start afresh: `phoenix ledger testnet --force`, or remove {})",
        data.display(),
        file.display(),
        data.display()
    )]
    DataMismatch {
        /// The data directory.
        data: PathBuf,
        /// The home file that disagrees (`genesis.json`, `validator.key`).
        file: PathBuf,
        /// What disagrees ("genesis", "validator key").
        what: &'static str,
        /// What the data was written with.
        stored: String,
        /// What the home file gives now.
        current: String,
    },
    /// The block data in `data/` was written in another format than this version reads.
    #[error(
        "{} holds block data of ledger format {found}, but this version reads format {expected} \
         ({}); it cannot be replayed or migrated. Keep that chain on the version that wrote it, \
         or start afresh: `phoenix ledger testnet --force`, or remove {}",
        data.display(),
        crate::config::DATA_FORMAT_CHANGE,
        data.display()
    )]
    DataFormat {
        /// The data directory.
        data: PathBuf,
        /// The format the data was written in.
        found: u32,
        /// The format this version reads.
        expected: u32,
    },
    /// The data directory's record of its chain (`data/chain.json`) cannot be read or written.
    #[error("{}: {reason}", path.display())]
    DataRecord {
        /// The record file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A durable archive of the stored chain does not open.
    #[error("opening the {archive} archive of the stored chain")]
    OpenArchive {
        /// Which archive.
        archive: &'static str,
        /// The storage error.
        #[source]
        source: commonware_storage::archive::Error,
    },
    /// A stored finalized block cannot be read.
    #[error("reading finalized block {height} from storage")]
    ReadBlock {
        /// Its height.
        height: u64,
        /// The storage error.
        #[source]
        source: commonware_storage::archive::Error,
    },
    /// A finalized block (from storage at start-up, or from consensus) does not execute on this
    /// node's finalized state. The quorum certified it, so either the chain does not belong to
    /// this node's genesis or this node's state diverged; serving on would serve wrong data.
    #[error(
        "finalized block {hash} at height {height} does not execute on this node's state (the \
         chain does not belong to this node's genesis, or its state diverged); stopping"
    )]
    FinalizedBlock {
        /// Its height.
        height: u64,
        /// Its hash.
        hash: Hash,
        /// Why execution refused it (boxed: it carries the failing transaction's error, and
        /// every `Result` of this crate would otherwise be as large).
        #[source]
        source: Box<BlockError>,
    },
    /// The HTTP API cannot bind, or stopped.
    #[error("HTTP API on {addr}")]
    Api {
        /// Its listen address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

fn holder(pid: Option<u32>) -> String {
    pid.map_or_else(|| "another process".to_string(), |p| format!("pid {p}"))
}
