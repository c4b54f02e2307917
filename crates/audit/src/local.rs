//! [`LocalLog`]: the hash-chained JSON-lines file, and its verification.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::chain::{GENESIS_HASH, canonical_json, record_hash};
use crate::{AuditEntry, AuditError, AuditRecord, Recorder};

/// The sequence number and hash of the last record of a chain: what to anchor elsewhere so
/// that a shortened or rewritten log can be detected.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChainHead {
    /// The last record's `seq`.
    pub seq: u64,
    /// The last record's `hash`.
    pub hash: String,
}

/// The result of a clean verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// How many records the log holds.
    pub records: u64,
    /// The last record; `None` for an empty log. Anchor it outside the log (state database,
    /// ledger): a log with its tail removed still verifies on its own, but not against an
    /// anchor taken before the removal.
    pub head: Option<ChainHead>,
}

/// Why a log did not verify.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The log could not be read at all.
    #[error("cannot read the audit log {path}")]
    Read {
        /// The log file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The log was altered: every problem found, in file order.
    #[error("the audit log {path} does not verify: {}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Tampered {
        /// The log file.
        path: PathBuf,
        /// How many lines were checked.
        lines: usize,
        /// Every problem found, first first.
        problems: Vec<ChainProblem>,
    },
}

/// One problem found by verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainProblem {
    /// The 1-based line of the file.
    pub line: usize,
    /// The record's own `seq`, when it could be read.
    pub seq: Option<u64>,
    /// What is wrong.
    pub kind: ProblemKind,
}

impl fmt::Display for ChainProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}", self.line)?;
        if let Some(seq) = self.seq {
            write!(f, " (seq {seq})")?;
        }
        write!(f, ": {}", self.kind)
    }
}

/// The kinds of damage verification tells apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProblemKind {
    /// The line is not JSON.
    Unparseable {
        /// The parser's message.
        reason: String,
    },
    /// The line is JSON but not a record (a field missing or of the wrong type).
    Malformed {
        /// What is wrong.
        reason: String,
    },
    /// The record's content does not match its hash: a field was edited (or added, or removed).
    Edited,
    /// The record's `seq` is not its predecessor's + 1: records were removed, inserted or
    /// reordered before it.
    OutOfSequence {
        /// The seq this line should have.
        expected: u64,
        /// The seq it has.
        found: u64,
    },
    /// The record's `prev_hash` is not the previous line's hash: the record before it was
    /// removed, inserted, replaced or moved.
    BrokenLink {
        /// The previous line's hash.
        expected: String,
        /// This record's `prev_hash`.
        found: String,
    },
    /// The file ends in the middle of a line: an append that never completed, or a cut.
    TruncatedTail {
        /// How many bytes follow the last complete line.
        bytes: usize,
    },
    /// The log ends before the anchored record: records were removed from the end.
    MissingAnchoredRecord {
        /// The anchored seq.
        anchored_seq: u64,
        /// The log's last seq (`None` if empty).
        last_seq: Option<u64>,
    },
    /// The record at the anchored seq has another hash: the log was rewritten.
    AnchorMismatch {
        /// The anchored hash.
        anchored_hash: String,
        /// The hash found at that seq.
        found: String,
    },
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unparseable { reason } => write!(f, "not a JSON record ({reason})"),
            Self::Malformed { reason } => write!(f, "malformed record ({reason})"),
            Self::Edited => write!(f, "record edited: its content does not match its hash"),
            Self::OutOfSequence { expected, found } => {
                write!(
                    f,
                    "expected seq {expected}, found {found}: records removed, inserted or reordered"
                )
            }
            Self::BrokenLink { expected, found } => write!(
                f,
                "prev_hash {found} is not the previous record's hash {expected}: \
                 a record before it was removed, inserted or replaced"
            ),
            Self::TruncatedTail { bytes } => {
                write!(f, "truncated: {bytes} bytes after the last complete record")
            }
            Self::MissingAnchoredRecord {
                anchored_seq,
                last_seq,
            } => write!(
                f,
                "the log ends at seq {} but seq {anchored_seq} was anchored: records removed from the end",
                last_seq.map_or_else(|| "0 (empty)".to_owned(), |s| s.to_string())
            ),
            Self::AnchorMismatch {
                anchored_hash,
                found,
            } => {
                write!(
                    f,
                    "hash {found} differs from the anchored {anchored_hash}: the log was rewritten"
                )
            }
        }
    }
}

/// The embedded operation log: one JSON record per line, each chained to its predecessor by
/// hash, appended and fsync'd one record at a time.
///
/// # Guarantees
/// - A record is durable when [`Recorder::record`] returns `Ok`.
/// - Appenders in one process (threads sharing a `LocalLog`) and in several processes (each
///   with its own `LocalLog` on the same file) are serialised by a mutex and an exclusive file
///   lock, so the chain never forks.
/// - A torn last line left by a crash in the middle of an append (never acknowledged) is moved
///   to `<file>.torn` before the next append, so the log keeps accepting records and the torn
///   bytes are kept for inspection.
pub struct LocalLog {
    path: PathBuf,
    inner: Mutex<Appender>,
}

impl fmt::Debug for LocalLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalLog")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

struct Appender {
    file: File,
    /// The file length and chain head as of our last append. If the length is unchanged under
    /// the file lock, nobody else appended and the head need not be read again.
    known: Option<(u64, Option<ChainHead>)>,
}

impl LocalLog {
    /// The log's file name inside a state directory.
    pub const FILE_NAME: &'static str = "audit.jsonl";

    /// Opens `state_dir/audit.jsonl`, creating the directory and the file if needed.
    ///
    /// # Errors
    /// [`AuditError::OpenLog`].
    pub fn open_in(state_dir: &Path) -> Result<Self, AuditError> {
        std::fs::create_dir_all(state_dir).map_err(|source| AuditError::OpenLog {
            path: state_dir.to_owned(),
            source,
        })?;
        Self::open(state_dir.join(Self::FILE_NAME))
    }

    /// Opens the log at `path`, creating the file if needed (its directory must exist).
    ///
    /// # Errors
    /// [`AuditError::OpenLog`].
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, AuditError> {
        let path = path.into();
        let open_error = |source| AuditError::OpenLog {
            path: path.clone(),
            source,
        };
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(open_error)?;
        if !existed {
            // Make the new directory entry durable too, or a crash could lose the whole file
            // along with records reported as recorded.
            sync_parent_dir(&path).map_err(open_error)?;
        }
        Ok(Self {
            path,
            inner: Mutex::new(Appender { file, known: None }),
        })
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every complete record, in file order. A torn last line (an append that never
    /// completed) is left out; [`LocalLog::verify`] reports it.
    ///
    /// # Errors
    /// [`AuditError::ReadLog`]; [`AuditError::CorruptLog`] for a complete line that is not a
    /// record. This does not check hashes: use [`LocalLog::verify`] for that.
    pub fn read_all(&self) -> Result<Vec<AuditRecord>, AuditError> {
        let bytes = read_shared(&self.path).map_err(|source| AuditError::ReadLog {
            path: self.path.clone(),
            source,
        })?;
        let (lines, _torn) = split_lines(&bytes);
        lines
            .iter()
            .enumerate()
            .map(|(i, line)| {
                serde_json::from_slice(line).map_err(|e| AuditError::CorruptLog {
                    path: self.path.clone(),
                    line: i + 1,
                    reason: e.to_string(),
                })
            })
            .collect()
    }

    /// Checks the whole chain: every record's hash, sequence and link to its predecessor, and
    /// a truncated last line. Returns the head to anchor elsewhere.
    ///
    /// # Errors
    /// [`VerifyError::Tampered`] with every problem found; [`VerifyError::Read`].
    pub fn verify(&self) -> Result<VerifyReport, VerifyError> {
        verify_file(&self.path, None)
    }

    /// [`LocalLog::verify`], and also checks that the record at `anchor.seq` still exists with
    /// `anchor.hash`: detects records removed from the end, or a log rewritten with fresh
    /// hashes, since the anchor was taken.
    ///
    /// # Errors
    /// As [`LocalLog::verify`].
    pub fn verify_against(&self, anchor: &ChainHead) -> Result<VerifyReport, VerifyError> {
        verify_file(&self.path, Some(anchor))
    }

    fn append(&self, entry: AuditEntry) -> Result<AuditRecord, AuditError> {
        // A panic while holding the mutex happens before or after a complete write (the write
        // itself does not panic), and the file lock is released by its guard, so the state is
        // consistent: recover the guard.
        let mut appender = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let Appender { file, known } = &mut *appender;
        file.lock().map_err(|source| AuditError::LockLog {
            path: self.path.clone(),
            source,
        })?;
        let locked = UnlockOnDrop(file);
        let file = &mut *locked.0;

        let read_error = |source| AuditError::ReadLog {
            path: self.path.clone(),
            source,
        };
        let len = file.metadata().map_err(read_error)?.len();
        let head = match known {
            Some((known_len, head)) if *known_len == len => head.clone(),
            _ => self.read_head(file, len)?,
        };
        // read_head may have cut a torn tail.
        let len = file.metadata().map_err(read_error)?.len();

        let record = AuditRecord::chain(head.as_ref(), entry)?;
        let mut line = canonical_json(&record.to_json()?);
        line.push('\n');
        // One write of the whole line: O_APPEND puts it at the end, and a crash leaves at most
        // a torn last line, which the next append sets aside.
        file.write_all(line.as_bytes()).map_err(|source| {
            *known = None;
            AuditError::AppendLog {
                path: self.path.clone(),
                source,
            }
        })?;
        file.sync_data().map_err(|source| {
            *known = None;
            AuditError::SyncLog {
                path: self.path.clone(),
                source,
            }
        })?;
        *known = Some((len + line.len() as u64, Some(record.head())));
        Ok(record)
    }

    /// Reads the last complete record's head from the end of the file, setting aside a torn
    /// tail first. Called with the file lock held.
    fn read_head(&self, file: &mut File, len: u64) -> Result<Option<ChainHead>, AuditError> {
        let tail = read_tail(file, len).map_err(|source| AuditError::ReadLog {
            path: self.path.clone(),
            source,
        })?;
        let (lines, torn) = split_lines(&tail);
        if !torn.is_empty() {
            self.set_aside_torn_tail(file, len - torn.len() as u64, torn)?;
        }
        let Some(last) = lines.last() else {
            return Ok(None);
        };
        let head = serde_json::from_slice::<Value>(last)
            .map_err(|e| e.to_string())
            .and_then(|value| {
                head_of(&value).ok_or_else(|| "the last record has no seq or hash".to_owned())
            });
        head.map(Some).map_err(|reason| AuditError::CorruptLog {
            path: self.path.clone(),
            // Only for the message: the damaged line is the last complete one.
            line: read_all_from(file).map_or(0, |bytes| split_lines(&bytes).0.len()),
            reason,
        })
    }

    fn set_aside_torn_tail(
        &self,
        file: &mut File,
        complete_len: u64,
        torn: &[u8],
    ) -> Result<(), AuditError> {
        let repair_error = |source| AuditError::RepairTornTail {
            path: self.path.clone(),
            source,
        };
        let mut aside_path = self.path.clone().into_os_string();
        aside_path.push(".torn");
        let mut aside = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&aside_path)
            .map_err(repair_error)?;
        writeln!(
            aside,
            "{{\"offset\":{complete_len},\"bytes\":{}}}",
            Value::String(String::from_utf8_lossy(torn).into_owned())
        )
        .map_err(repair_error)?;
        aside.sync_data().map_err(repair_error)?;
        file.set_len(complete_len).map_err(repair_error)?;
        file.sync_data().map_err(repair_error)?;
        Ok(())
    }
}

impl Recorder for LocalLog {
    fn record(&self, entry: AuditEntry) -> Result<AuditRecord, AuditError> {
        self.append(entry)
    }
}

/// Releases the file lock however the append ends.
struct UnlockOnDrop<'f>(&'f mut File);

impl Drop for UnlockOnDrop<'_> {
    fn drop(&mut self) {
        // Closing the file would release it too; an unlock error leaves nothing to do.
        let _ = self.0.unlock();
    }
}

/// Verifies the log at `path` (optionally against an anchor) without opening it for appends:
/// what `phoenix history --verify` runs.
///
/// # Errors
/// As [`LocalLog::verify`].
pub fn verify_file(path: &Path, anchor: Option<&ChainHead>) -> Result<VerifyReport, VerifyError> {
    let bytes = match read_shared(path) {
        Ok(bytes) => bytes,
        // A log never written is an empty chain; only an anchor can say records are missing.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            return Err(VerifyError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let (lines, torn) = split_lines(&bytes);
    let mut problems = Vec::new();
    let mut expected_seq = 1u64;
    // `None` after a line that could not be read: the next link cannot be checked.
    let mut expected_prev: Option<String> = Some(GENESIS_HASH.to_owned());
    let mut head: Option<ChainHead> = None;
    let mut anchored_found: Option<String> = None;
    let mut records = 0u64;

    for (index, line) in lines.iter().enumerate() {
        let line_number = index + 1;
        let mut problem = |seq, kind| {
            problems.push(ChainProblem {
                line: line_number,
                seq,
                kind,
            })
        };
        let value: Value = match serde_json::from_slice(line) {
            Ok(value) => value,
            Err(e) => {
                problem(
                    None,
                    ProblemKind::Unparseable {
                        reason: e.to_string(),
                    },
                );
                expected_seq += 1;
                expected_prev = None;
                continue;
            }
        };
        let seq = value.get("seq").and_then(Value::as_u64);
        let prev = value.get("prev_hash").and_then(Value::as_str);
        let hash = value.get("hash").and_then(Value::as_str);
        let (Some(seq), Some(prev), Some(hash)) = (seq, prev, hash) else {
            problem(
                seq,
                ProblemKind::Malformed {
                    reason: "seq, prev_hash or hash missing".to_owned(),
                },
            );
            expected_seq += 1;
            expected_prev = None;
            continue;
        };
        records += 1;
        if record_hash(&value) != hash {
            problem(Some(seq), ProblemKind::Edited);
        } else if let Err(e) = serde_json::from_value::<AuditRecord>(value.clone()) {
            // Hash intact but not a record: written by something else than this crate.
            problem(
                Some(seq),
                ProblemKind::Malformed {
                    reason: e.to_string(),
                },
            );
        }
        if seq != expected_seq {
            problem(
                Some(seq),
                ProblemKind::OutOfSequence {
                    expected: expected_seq,
                    found: seq,
                },
            );
        }
        if let Some(expected) = &expected_prev
            && prev != expected
        {
            problem(
                Some(seq),
                ProblemKind::BrokenLink {
                    expected: expected.clone(),
                    found: prev.to_owned(),
                },
            );
        }
        if let Some(anchor) = anchor
            && seq == anchor.seq
            && anchored_found.is_none()
        {
            anchored_found = Some(hash.to_owned());
        }
        expected_seq = seq.saturating_add(1);
        expected_prev = Some(hash.to_owned());
        head = Some(ChainHead {
            seq,
            hash: hash.to_owned(),
        });
    }

    if !torn.is_empty() {
        problems.push(ChainProblem {
            line: lines.len() + 1,
            seq: None,
            kind: ProblemKind::TruncatedTail { bytes: torn.len() },
        });
    }
    if let Some(anchor) = anchor {
        match anchored_found {
            None => problems.push(ChainProblem {
                line: lines.len(),
                seq: head.as_ref().map(|h| h.seq),
                kind: ProblemKind::MissingAnchoredRecord {
                    anchored_seq: anchor.seq,
                    last_seq: head.as_ref().map(|h| h.seq),
                },
            }),
            Some(found) if found != anchor.hash => problems.push(ChainProblem {
                line: lines
                    .iter()
                    .position(|l| {
                        serde_json::from_slice::<Value>(l)
                            .ok()
                            .and_then(|v| v.get("seq")?.as_u64())
                            == Some(anchor.seq)
                    })
                    .map_or(0, |i| i + 1),
                seq: Some(anchor.seq),
                kind: ProblemKind::AnchorMismatch {
                    anchored_hash: anchor.hash.clone(),
                    found,
                },
            }),
            Some(_) => {}
        }
    }

    if problems.is_empty() {
        Ok(VerifyReport { records, head })
    } else {
        Err(VerifyError::Tampered {
            path: path.to_owned(),
            lines: lines.len(),
            problems,
        })
    }
}

/// Complete lines (without their `\n`) and the bytes after the last `\n` (a torn line). Blank
/// lines are kept (a blank line is damage, since appends never write one) so that indexes are
/// file line numbers - 1.
fn split_lines(bytes: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    match bytes.iter().rposition(|&b| b == b'\n') {
        Some(last_newline) => (
            bytes[..last_newline].split(|&b| b == b'\n').collect(),
            &bytes[last_newline + 1..],
        ),
        None => (Vec::new(), bytes),
    }
}

/// Reads the whole file under a shared lock, so that no append is seen half-written.
fn read_shared(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    file.lock_shared()?;
    let mut bytes = Vec::new();
    let result = file.read_to_end(&mut bytes);
    let _ = file.unlock();
    result.map(|_| bytes)
}

/// Reads the whole of an already locked file.
fn read_all_from(file: &mut File) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Reads enough of the end of the file to hold its last complete line whole, and any torn
/// bytes after it. Reads more only when a line is longer than the window.
fn read_tail(file: &mut File, len: u64) -> std::io::Result<Vec<u8>> {
    let mut window: u64 = 64 * 1024;
    loop {
        let start = len.saturating_sub(window);
        file.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::new();
        (&mut *file).take(len - start).read_to_end(&mut bytes)?;
        // The last complete line is whole if the window starts at the start of the file or
        // holds the newline that ends the line before it.
        let last_newline = bytes.iter().rposition(|&b| b == b'\n');
        if start == 0 || last_newline.is_some_and(|last| bytes[..last].contains(&b'\n')) {
            return Ok(bytes);
        }
        window = window.saturating_mul(4);
    }
}

/// The head a record line names (its `seq` and `hash`), without checking the hash.
fn head_of(record: &Value) -> Option<ChainHead> {
    Some(ChainHead {
        seq: record.get("seq")?.as_u64()?,
        hash: record.get("hash")?.as_str()?.to_owned(),
    })
}

fn sync_parent_dir(path: &Path) -> std::io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}
