//! Container logs as files on this host.
//!
//! Docker keeps a container's output, and loses it with the container. So that `phoenix logs`
//! (which reads and follows files, see `phoenix_provider_api::logs::print_logs`) works
//! unchanged and logs outlive their units, every `log_paths` call appends what is new in each
//! matching container's log to `<state dir>/logs/<fleet>/<unit>.log`, and `stop` does once more
//! before it removes a container. Where it got to is kept beside the copy in `<unit>.pos`: the
//! container and the timestamp of the last line copied (and how many lines had exactly that
//! timestamp), so no line is copied twice, also by two processes at once (the position file is
//! locked while copying).

use crate::error::Op;
use crate::names::{LABEL_FLEET, LABEL_INSTANCE, LABEL_UNIT};
use crate::{DockerError, DockerProvider};
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptions;
use futures_util::StreamExt;
use phoenix_provider_api::logs::selector_matches;
use phoenix_provider_api::{ProviderError, Result, is_safe_name, parse_unit_id};
use serde::{Deserialize, Serialize};
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

/// Where the copy of one unit's log got to.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Position {
    /// The container copied from (a new container of the unit starts from its beginning).
    container: String,
    /// Timestamp of the last line copied, as Docker wrote it.
    last: Option<String>,
    /// How many lines copied so far carry exactly `last`.
    at_last: u32,
}

impl DockerProvider {
    /// The copy of `unit_id`'s log.
    pub(crate) fn log_file(&self, fleet: &str, unit_id: &str) -> PathBuf {
        self.state_dir()
            .join("logs")
            .join(fleet)
            .join(format!("{unit_id}.log"))
    }

    /// `log_paths`: copies what is new from the matching containers (as far as the engine can
    /// be reached: otherwise the copies made so far), then lists the copies.
    pub(crate) fn copy_logs(&self, fleet: &str, selector: &str) -> Result<Vec<PathBuf>> {
        if !is_safe_name(fleet) {
            return Ok(Vec::new());
        }
        let copied = self.run(async {
            let d = self.docker().await?;
            for c in self.containers(&d, &[(LABEL_FLEET, fleet)]).await? {
                let labels = c.labels.unwrap_or_default();
                let (Some(id), Some(unit), Some(instance)) =
                    (c.id, labels.get(LABEL_UNIT), labels.get(LABEL_INSTANCE))
                else {
                    continue;
                };
                if selector_matches(selector, instance) {
                    self.sync_logs(&d, fleet, unit, &id).await?;
                }
            }
            Ok(())
        });
        match copied {
            Ok(()) | Err(DockerError::Unreachable { .. }) => {}
            Err(e) => return Err(e.into_provider(Op::Other)),
        }
        let dir = self.state_dir().join("logs").join(fleet);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ProviderError::io("read log dir", &dir, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let path = entry
                .map_err(|e| ProviderError::io("read log dir", &dir, e))?
                .path();
            let Some(stem) = path
                .extension()
                .filter(|x| *x == "log")
                .and(path.file_stem())
                .and_then(|s| s.to_str())
            else {
                continue;
            };
            if parse_unit_id(stem).is_some_and(|(inst, _)| selector_matches(selector, inst)) {
                out.push(path);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Appends the lines of container `id` not yet copied to the log copy of `unit_id`.
    pub(crate) async fn sync_logs(
        &self,
        d: &Docker,
        fleet: &str,
        unit_id: &str,
        id: &str,
    ) -> Result<(), DockerError> {
        let log = self.log_file(fleet, unit_id);
        let dir = log.parent().expect("log files are in a directory");
        std::fs::create_dir_all(dir).map_err(|e| DockerError::io("create log dir", dir, e))?;
        let pos_path = log.with_extension("pos");
        let mut pos_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&pos_path)
            .map_err(|e| DockerError::io("open log position", &pos_path, e))?;
        pos_file
            .lock()
            .map_err(|e| DockerError::io("lock log position", &pos_path, e))?;
        let mut text = String::new();
        pos_file
            .read_to_string(&mut text)
            .map_err(|e| DockerError::io("read log position", &pos_path, e))?;
        let mut pos: Position = serde_json::from_str(&text).unwrap_or_default();
        if pos.container != id {
            pos = Position {
                container: id.into(),
                ..Position::default()
            };
        }
        let since = pos
            .last
            .as_deref()
            .and_then(parse_timestamp)
            .map_or(0, |(secs, _)| i32::try_from(secs).unwrap_or(i32::MAX));
        let mut stream = d.logs(
            id,
            Some(LogsOptions {
                stdout: true,
                stderr: true,
                timestamps: true,
                since,
                ..Default::default()
            }),
        );
        let mut out = std::io::BufWriter::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .map_err(|e| DockerError::io("append to log copy", &log, e))?,
        );
        let mut cursor = Cursor::new(pos);
        // Written as they come (a first copy may be large); where it got to is saved below even
        // when the stream breaks, so the next copy neither repeats nor loses a line.
        let mut failed = None;
        while let Some(item) = stream.next().await {
            match item {
                Ok(LogOutput::StdOut { message } | LogOutput::StdErr { message }) => {
                    if let Some(line) = cursor.take(&message)
                        && let Err(e) = out.write_all(line)
                    {
                        failed = Some(DockerError::io("append to log copy", &log, e));
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let e = self.err("read container logs", id)(e);
                    // Removed meanwhile: nothing more to copy.
                    if !e.is_not_found() {
                        failed = Some(e);
                    }
                    break;
                }
            }
        }
        if let Err(e) = out.flush() {
            failed.get_or_insert(DockerError::io("append to log copy", &log, e));
        }
        let pos = cursor.pos;
        let json = serde_json::to_vec(&pos).expect("position serialises");
        pos_file
            .set_len(0)
            .and_then(|()| pos_file.seek(SeekFrom::Start(0)))
            .and_then(|_| pos_file.write_all(&json))
            .map_err(|e| DockerError::io("write log position", &pos_path, e))?;
        failed.map_or(Ok(()), Err)
    }
}

/// Walks the timestamped lines of a container's log (read from the second of `pos.last` on),
/// passing those that `pos` says are not copied yet, without their timestamps.
struct Cursor {
    pos: Position,
    /// Lines stamped exactly `pos.last` that an earlier copy already has.
    skip_equal: u32,
}

impl Cursor {
    fn new(pos: Position) -> Self {
        Cursor {
            skip_equal: pos.at_last,
            pos,
        }
    }

    /// The text of `message` if it is new (and moves past it), else `None`.
    fn take<'a>(&mut self, message: &'a [u8]) -> Option<&'a [u8]> {
        let (ts, line) = split_timestamp(message);
        if let Some(ts) = ts {
            let order = self
                .pos
                .last
                .as_deref()
                .map_or(std::cmp::Ordering::Greater, |last| {
                    compare_timestamps(ts, last)
                });
            match order {
                std::cmp::Ordering::Less => return None,
                std::cmp::Ordering::Equal if self.skip_equal > 0 => {
                    self.skip_equal -= 1;
                    return None;
                }
                std::cmp::Ordering::Equal => self.pos.at_last += 1,
                std::cmp::Ordering::Greater => {
                    self.pos.last = Some(ts.to_string());
                    self.pos.at_last = 1;
                    self.skip_equal = 0;
                }
            }
        }
        Some(line)
    }
}

/// `("2026-12-01T20:45:01.123456789Z", rest)` of a line Docker timestamped, or `(None, line)`.
fn split_timestamp(line: &[u8]) -> (Option<&str>, &[u8]) {
    if let Some(i) = line.iter().position(|b| *b == b' ')
        && let Ok(ts) = std::str::from_utf8(&line[..i])
        && parse_timestamp(ts).is_some()
    {
        return (Some(ts), &line[i + 1..]);
    }
    (None, line)
}

/// Orders two RFC 3339 timestamps by the instant they name (Docker trims trailing zeros of the
/// fraction, so comparing the text would not do). Unparsable ones compare as text.
fn compare_timestamps(a: &str, b: &str) -> std::cmp::Ordering {
    match (parse_timestamp(a), parse_timestamp(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

/// Seconds since the Unix epoch and nanoseconds of `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`.
fn parse_timestamp(s: &str) -> Option<(i64, u32)> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let mut n = 0u32;
        for (i, c) in frac[..digits].bytes().enumerate() {
            if i < 9 {
                n = n * 10 + u32::from(c - b'0');
            }
        }
        nanos = n * 10u32.pow(9u32.saturating_sub(digits.min(9) as u32));
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && matches!(rest.as_bytes()[0], b'+' | b'-') => {
            let h: i64 = rest.get(1..3)?.parse().ok()?;
            let m: i64 = rest.get(4..6)?.parse().ok()?;
            let o = h * 3600 + m * 60;
            if rest.starts_with('-') { -o } else { o }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some((days * 86_400 + hour * 3600 + min * 60 + sec - offset, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering;

    #[test]
    fn timestamps_parse_to_instants() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(
            parse_timestamp("2026-12-01T20:45:01.5Z"),
            Some((1_796_157_901, 500_000_000))
        );
        assert_eq!(
            parse_timestamp("2026-12-01T21:45:01.123456789+01:00"),
            Some((1_796_157_901, 123_456_789))
        );
        assert_eq!(parse_timestamp("2026-12-01 20:45:01Z"), None);
        assert_eq!(parse_timestamp("2026-13-01T20:45:01Z"), None);
        assert_eq!(parse_timestamp("2026-12-01T20:45:01.Z"), None);
    }

    #[test]
    fn trimmed_fractions_compare_by_value() {
        assert_eq!(
            compare_timestamps("2026-12-01T20:45:01.5Z", "2026-12-01T20:45:01.123456789Z"),
            Ordering::Greater
        );
        assert_eq!(
            compare_timestamps("2026-12-01T20:45:01.50Z", "2026-12-01T20:45:01.5Z"),
            Ordering::Equal
        );
    }

    fn new_lines(pos: &mut Position, messages: &[&str]) -> Vec<u8> {
        let mut c = Cursor::new(pos.clone());
        let out = messages
            .iter()
            .filter_map(|m| c.take(m.as_bytes()))
            .flatten()
            .copied()
            .collect();
        *pos = c.pos;
        out
    }

    #[test]
    fn each_line_is_copied_once() {
        let mut pos = Position::default();
        let first = ["2026-12-01T20:45:01.5Z a\n", "2026-12-01T20:45:01.5Z b\n"];
        assert_eq!(new_lines(&mut pos, &first), b"a\nb\n");
        assert_eq!(
            (pos.last.as_deref(), pos.at_last),
            (Some("2026-12-01T20:45:01.5Z"), 2)
        );
        // The next read starts at the same second: old lines again, then a third line with the
        // same stamp, then later ones.
        let again = [
            "2026-12-01T20:45:01.1Z old\n",
            "2026-12-01T20:45:01.5Z a\n",
            "2026-12-01T20:45:01.5Z b\n",
            "2026-12-01T20:45:01.5Z c\n",
            "2026-12-01T20:45:01.50Z d\n",
            "2026-12-01T20:45:02Z e\n",
        ];
        assert_eq!(new_lines(&mut pos, &again), b"c\nd\ne\n");
        assert_eq!(new_lines(&mut pos, &again), b"");
    }

    #[test]
    fn timestamps_are_split_off_lines() {
        assert_eq!(
            split_timestamp(b"2026-12-01T20:45:01.5Z hello world\n"),
            (Some("2026-12-01T20:45:01.5Z"), &b"hello world\n"[..])
        );
        assert_eq!(split_timestamp(b"no stamp\n"), (None, &b"no stamp\n"[..]));
    }
}
