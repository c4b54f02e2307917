//! The replica's block log: `data/blocks.log`, an append-only file of verified
//! [`SyncRecord`]s.
//!
//! Layout: an 8-byte magic and the genesis hash, then entries `u32 len || H(payload) ||
//! payload`, one per block in height order. A run is appended and `fsync`ed before any of it is
//! applied, so what the API has served is on disk when a `kill -9` comes. At open, a torn last
//! entry (a crash during an append) is cut off; a damaged entry with more after it is an error
//! naming the file and the offset, never a panic and never skipped.

use super::follow::SyncRecord;
use phoenix_ledger_types::crypto::Hash;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

const MAGIC: &[u8; 8] = b"PHXRLOG1";
const HEADER: u64 = 8 + 32;
/// Largest entry payload (a block at its limit with a certificate).
pub const MAX_ENTRY: usize = phoenix_ledger_types::block::MAX_BLOCK_BYTES + 128 * 1024;

/// Why the block log cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O error on the file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a block log of this genesis, or an entry in its middle is damaged.
    #[error("{} is damaged at byte {offset}: {why}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where.
        offset: u64,
        /// What is wrong.
        why: String,
    },
}

/// The open block log.
pub struct BlockLog {
    path: PathBuf,
    /// Readers use positioned reads (`pread`), so they never contend with each other.
    file: File,
    /// `(offset of payload, len)` of block `i + 1`.
    index: RwLock<Vec<(u64, u32)>>,
    /// Serialises appends.
    append: Mutex<u64>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl BlockLog {
    /// Opens (creating if absent) the log for the chain whose genesis block hash is `genesis`,
    /// and returns every stored record, in order, for replay.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] for another genesis's log or a damaged entry followed by more;
    /// I/O errors.
    pub fn open(path: &Path, genesis: Hash) -> Result<(Self, Vec<SyncRecord>), StoreError> {
        let e = io(path);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(&e)?;
        let len = file.metadata().map_err(&e)?.len();
        let corrupt = |offset: u64, why: String| StoreError::Corrupt {
            path: path.to_path_buf(),
            offset,
            why,
        };
        if len < HEADER {
            // New (or torn while writing the header): start it.
            file.set_len(0).map_err(&e)?;
            file.write_all(MAGIC).map_err(&e)?;
            file.write_all(&genesis.0).map_err(&e)?;
            file.sync_all().map_err(&e)?;
        } else {
            let mut head = [0u8; HEADER as usize];
            file.read_exact_at(&mut head, 0).map_err(&e)?;
            if &head[..8] != MAGIC {
                return Err(corrupt(0, "not a replica block log".into()));
            }
            if head[8..] != genesis.0 {
                return Err(corrupt(
                    8,
                    format!(
                        "written for the chain of genesis {}, but this home's genesis is \
                         {genesis} (remove the data directory to start afresh)",
                        Hash(head[8..].try_into().unwrap_or([0; 32]))
                    ),
                ));
            }
        }
        let mut records = Vec::new();
        let mut index = Vec::new();
        let mut pos = HEADER;
        let end = file.metadata().map_err(&e)?.len();
        let mut reader = std::io::BufReader::new(file.try_clone().map_err(&e)?);
        reader.seek(SeekFrom::Start(pos)).map_err(&e)?;
        while pos < end {
            let mut head = [0u8; 36];
            if end - pos < 36 {
                tracing::warn!(file = %path.display(), offset = pos, "cutting a torn last entry (a crash during an append)");
                break;
            }
            reader.read_exact(&mut head).map_err(&e)?;
            let n = u32::from_be_bytes(head[..4].try_into().unwrap_or([0; 4])) as usize;
            if n > MAX_ENTRY {
                return Err(corrupt(
                    pos,
                    format!("entry of {n} bytes is over the limit"),
                ));
            }
            let payload_at = pos + 36;
            if end - payload_at < n as u64 {
                tracing::warn!(file = %path.display(), offset = pos, "cutting a torn last entry (a crash during an append)");
                break;
            }
            let mut payload = vec![0u8; n];
            reader.read_exact(&mut payload).map_err(&e)?;
            let next = payload_at + n as u64;
            let sum = Hash::of(&[&payload]);
            let decoded = if sum.0[..] == head[4..] {
                SyncRecord::decode(&payload)
            } else {
                Err("checksum mismatch".into())
            };
            match decoded {
                Ok(r) => {
                    let want = index.len() as u64 + 1;
                    if r.block.header.height != want {
                        return Err(corrupt(
                            pos,
                            format!("holds block {}, expected {want}", r.block.header.height),
                        ));
                    }
                    records.push(r);
                    index.push((payload_at, n as u32));
                }
                Err(why) if next >= end => {
                    tracing::warn!(file = %path.display(), offset = pos, %why, "cutting a damaged last entry");
                    break;
                }
                Err(why) => return Err(corrupt(pos, why)),
            }
            pos = next;
        }
        if pos < end {
            file.set_len(pos).map_err(&e)?;
            file.sync_all().map_err(&e)?;
        }
        Ok((
            Self {
                path: path.to_path_buf(),
                file,
                index: RwLock::new(index),
                append: Mutex::new(pos),
            },
            records,
        ))
    }

    /// Appends records (the next heights, in order) and syncs them to disk.
    ///
    /// # Errors
    /// I/O errors (then nothing of the call counts as stored: the index is not advanced, and
    /// the next open cuts a partial tail).
    pub fn append(&self, records: &[SyncRecord]) -> Result<(), StoreError> {
        let e = io(&self.path);
        let mut end = self.append.lock().unwrap_or_else(|p| p.into_inner());
        let mut buf = Vec::new();
        let mut added = Vec::with_capacity(records.len());
        for r in records {
            let payload = r.encode();
            let n = u32::try_from(payload.len()).unwrap_or(u32::MAX);
            buf.extend_from_slice(&n.to_be_bytes());
            buf.extend_from_slice(&Hash::of(&[&payload]).0);
            added.push((*end + buf.len() as u64, n));
            buf.extend_from_slice(&payload);
        }
        self.file.write_all_at(&buf, *end).map_err(&e)?;
        self.file.sync_data().map_err(&e)?;
        *end += buf.len() as u64;
        self.index
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .extend(added);
        Ok(())
    }

    /// Highest stored height (0 when empty).
    pub fn height(&self) -> u64 {
        self.index.read().unwrap_or_else(|p| p.into_inner()).len() as u64
    }

    /// The stored record of `height`, if any.
    ///
    /// # Errors
    /// I/O errors, or an entry that no longer decodes (the disk changed under us).
    pub fn get(&self, height: u64) -> Result<Option<SyncRecord>, StoreError> {
        let Some(i) = height.checked_sub(1) else {
            return Ok(None);
        };
        let at = {
            let idx = self.index.read().unwrap_or_else(|p| p.into_inner());
            usize::try_from(i).ok().and_then(|i| idx.get(i).copied())
        };
        let Some((offset, n)) = at else {
            return Ok(None);
        };
        let mut payload = vec![0u8; n as usize];
        self.file
            .read_exact_at(&mut payload, offset)
            .map_err(io(&self.path))?;
        SyncRecord::decode(&payload)
            .map(Some)
            .map_err(|why| StoreError::Corrupt {
                path: self.path.clone(),
                offset,
                why,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use phoenix_ledger_types::block::{Block, BlockHeader};
    use phoenix_ledger_types::crypto::PublicKey;

    fn rec(height: u64) -> SyncRecord {
        SyncRecord {
            block: Block {
                header: BlockHeader {
                    chain_id: "s".into(),
                    height,
                    parent_hash: Hash::ZERO,
                    epoch: 0,
                    view: height,
                    parent_view: 0,
                    proposer: PublicKey([0; 32]),
                    timestamp_ms: height,
                    tx_root: Hash::ZERO,
                    state_root: Hash::ZERO,
                    validator_set_hash: Hash::ZERO,
                    next_validator_set_hash: Hash::ZERO,
                    audit_size: 0,
                    audit_root: Hash::ZERO,
                    tx_count: 0,
                },
                txs: vec![],
            },
            cert: None,
        }
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("phoenix-rlog-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        d.join("blocks.log")
    }

    /// A crash in the middle of an append leaves a torn last entry: it is cut, everything
    /// before it stays. Damage with entries after it is an error naming the offset. Another
    /// genesis's log is refused.
    #[test]
    fn torn_tails_are_cut_and_damage_in_the_middle_is_an_error() {
        let path = tmp("torn");
        let g = Hash([7; 32]);
        let (log, got) = BlockLog::open(&path, g).expect("new");
        assert!(got.is_empty());
        log.append(&[rec(1), rec(2)]).expect("append");
        log.append(&[rec(3)]).expect("append");
        assert_eq!(log.get(2).expect("get"), Some(rec(2)));
        assert_eq!(log.get(4).expect("get"), None);
        drop(log);
        let full = std::fs::metadata(&path).expect("meta").len();
        // Tear the last entry at every length.
        for cut in [full - 1, full - 10, full - 40] {
            let f = OpenOptions::new().write(true).open(&path).expect("open");
            f.set_len(cut).expect("cut");
            drop(f);
            let (log, got) = BlockLog::open(&path, g).expect("reopen");
            assert_eq!(got.len(), 2, "cut at {cut}");
            log.append(&[rec(3)]).expect("append again");
            assert_eq!(log.height(), 3);
        }
        // Flip a byte of entry 1's payload: entries after it exist, so it is an error.
        let bytes = std::fs::read(&path).expect("read");
        let mut bad = bytes.clone();
        bad[HEADER as usize + 40] ^= 1;
        std::fs::write(&path, &bad).expect("write");
        let err = BlockLog::open(&path, g).err().expect("refused").to_string();
        assert!(err.contains("damaged at byte 40"), "{err}");
        std::fs::write(&path, &bytes).expect("write");
        let err = BlockLog::open(&path, Hash([8; 32]))
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("written for the chain of genesis"), "{err}");
    }
}
