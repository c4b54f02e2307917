//! Log files on this host: which belong to a service or instance, and printing or following
//! them (`phoenix logs SERVICE [-f]`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::Duration;

/// Whether `instance` matches `selector`: the instance itself, or an instance
/// `<selector>-<digits>` of the service `selector`. An empty selector matches everything.
pub fn selector_matches(selector: &str, instance: &str) -> bool {
    if selector.is_empty() || selector == instance {
        return true;
    }
    instance
        .strip_prefix(selector)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The last `max_bytes` of the files at `paths`, one after another (lossy UTF-8, cut at a
/// character boundary). Only each file's tail is read, so a huge log costs `max_bytes`.
///
/// # Errors
/// [`crate::ProviderError::Io`] for a file that cannot be opened or read.
pub fn tail_of_files(paths: &[PathBuf], max_bytes: usize) -> crate::Result<String> {
    let mut out: Vec<u8> = Vec::new();
    for path in paths {
        let io = |cause| crate::ProviderError::Io {
            step: "read log",
            path: path.clone(),
            cause,
        };
        let mut f = File::open(path).map_err(io)?;
        let len = f.metadata().map_err(io)?.len();
        let want = u64::try_from(max_bytes).unwrap_or(u64::MAX).min(len);
        f.seek(SeekFrom::Start(len - want)).map_err(io)?;
        let mut buf = Vec::new();
        f.take(want).read_to_end(&mut buf).map_err(io)?;
        out.extend_from_slice(&buf);
        if out.len() > max_bytes {
            out.drain(..out.len() - max_bytes);
        }
    }
    let text = String::from_utf8_lossy(&out);
    let mut start = text.len().saturating_sub(max_bytes);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    Ok(text[start..].to_string())
}

/// Writes the content of every file `paths()` returns to `out`, each line prefixed with the
/// file's stem (the unit id for the local provider). With `follow`, keeps polling for new lines
/// and new files (a new revision's unit) every `poll` until `stop()` returns true; a file that
/// shrinks (truncated) is read again from the start.
///
/// # Errors
/// Write errors on `out` (a closed pipe ends the command). Unreadable files are skipped.
pub fn print_logs(
    mut paths: impl FnMut() -> Vec<PathBuf>,
    out: &mut dyn Write,
    follow: bool,
    poll: Duration,
    stop: &dyn Fn() -> bool,
) -> io::Result<()> {
    let mut offsets: BTreeMap<PathBuf, (u64, Vec<u8>)> = BTreeMap::new();
    loop {
        for p in paths() {
            let (offset, pending) = offsets.entry(p.clone()).or_default();
            let Ok(mut f) = File::open(&p) else { continue };
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if len < *offset {
                *offset = 0;
                pending.clear();
            }
            if f.seek(SeekFrom::Start(*offset)).is_err() {
                continue;
            }
            let mut buf = Vec::new();
            let n = f.read_to_end(&mut buf).unwrap_or(0);
            *offset += n as u64;
            pending.extend_from_slice(&buf[..n]);
            let name = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            while let Some(i) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=i).collect();
                out.write_all(format!("{name} | ").as_bytes())?;
                out.write_all(&line)?;
            }
            if !follow && !pending.is_empty() {
                out.write_all(format!("{name} | ").as_bytes())?;
                out.write_all(pending)?;
                out.write_all(b"\n")?;
                pending.clear();
            }
        }
        out.flush()?;
        if !follow || stop() {
            return Ok(());
        }
        std::thread::sleep(poll);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_match_services_and_instances() {
        assert!(selector_matches("web", "web-0"));
        assert!(selector_matches("web", "web-12"));
        assert!(selector_matches("web-0", "web-0"));
        assert!(selector_matches("", "anything"));
        assert!(!selector_matches("web", "web-api-0"));
        assert!(!selector_matches("web", "webx-0"));
        assert!(!selector_matches("web-0", "web-1"));
    }

    #[test]
    fn prints_existing_lines_with_prefix() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("web-0@r1.log");
        std::fs::write(&p, "a\nb").unwrap();
        let mut out = Vec::new();
        print_logs(|| vec![p.clone()], &mut out, false, Duration::ZERO, &|| {
            true
        })
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "web-0@r1 | a\nweb-0@r1 | b\n"
        );
    }
}
