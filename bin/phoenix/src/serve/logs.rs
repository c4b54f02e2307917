//! An instance's logs: the last lines (`GET /api/v1/fleets/{fleet}/instances/{instance}/logs`)
//! and, with `?follow=true`, the lines it writes from then on as server-sent events; the portal's
//! instance page shows the tail and follows it through `live.js`.
//!
//! The files are found as `phoenix logs` finds them (`deploy_cmd::log_reader`: the providers of
//! every site of the fleet's latest revision, so Docker and SSH logs are copied here first),
//! one file per unit (`web-0@r3`). Everything is bounded: the tail reads at most
//! [`TAIL_WINDOW`] bytes of each of the instance's [`MAX_FILES`] newest units' files, a poll at
//! most [`READ_PER_POLL`] bytes of each, a line is cut into pieces of [`MAX_LINE`] bytes, and a
//! follow ends when the client goes, after [`MAX_FOLLOW`], or once the instance has no unit
//! desired running (checked every [`UNIT_CHECK`]). Lines travel to the client through a bounded
//! channel, so a slow client slows the reading, never grows a buffer.
//!
//! A position in the logs is a [`Cursor`]: for each unit's file, the byte offset after the last
//! whole line sent. It is each event's id, so `EventSource`'s reconnect (`Last-Event-ID`)
//! resumes exactly, and the tail answers it, so the portal's page follows from where the tail
//! it rendered ends, with no line lost or repeated in between. See ADR 013.

use super::api::ApiError;
use super::{AppState, events};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use phoenix_provider_api::Provider;
use serde::Serialize;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Lines in a tail unless `?tail=` says otherwise.
pub(crate) const DEFAULT_TAIL: usize = 200;
/// The most lines one tail gives.
pub(crate) const MAX_TAIL: usize = 5_000;
/// A longer stretch without a newline is sent in pieces of this many bytes.
pub(crate) const MAX_LINE: usize = 16 * 1024;
/// The instance's newest units whose files are read (older revisions' files are left alone).
pub(crate) const MAX_FILES: usize = 8;
/// How much of the end of each file a tail reads.
pub(crate) const TAIL_WINDOW: u64 = 1024 * 1024;
/// How much of each file one poll of a follow reads at most.
pub(crate) const READ_PER_POLL: u64 = 256 * 1024;
/// How often a follow looks for new lines.
const POLL: Duration = Duration::from_millis(250);
/// How long one follow lasts at most (`EventSource` then reconnects from its last id).
pub(crate) const MAX_FOLLOW: Duration = Duration::from_secs(3600);
/// How often a follow asks whether the instance still has a unit desired running.
const UNIT_CHECK: Duration = Duration::from_secs(2);
/// Events in flight between the reading thread and the client.
const CHANNEL: usize = 256;

/// One line of a unit's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub(crate) struct LogLine {
    /// The unit that wrote it (`web-0@r3`).
    pub(crate) unit: String,
    /// The line, without its newline (invalid UTF-8 replaced).
    pub(crate) text: String,
    /// The line has no newline yet (the unit is still writing it); a follow sends it whole
    /// once it is.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) partial: bool,
}

/// The end of an instance's logs (`GET .../logs`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct LogTail {
    pub(crate) fleet: String,
    pub(crate) instance: String,
    /// The units whose files were read, oldest revision first.
    pub(crate) units: Vec<String>,
    /// The last lines, oldest first, the files one after another by revision.
    pub(crate) lines: Vec<LogLine>,
    /// Where these lines end: give it as `?after=` (with `follow=true`) to get what comes next.
    pub(crate) cursor: String,
}

/// For each unit's file, the byte offset after the last whole line sent (see the module
/// documentation). Written `web-0@r1:120,web-0@r2:64`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Cursor(BTreeMap<String, u64>);

impl Cursor {
    /// Parses a cursor as [`Cursor::render`] writes it.
    ///
    /// # Errors
    /// What is wrong with it, for a 400.
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        if s.len() > 4096 {
            return Err("a log cursor is at most 4096 characters".into());
        }
        let mut map = BTreeMap::new();
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let Some((unit, offset)) = part.rsplit_once(':') else {
                return Err(format!("`{part}` is not UNIT:OFFSET"));
            };
            if phoenix_provider_api::parse_unit_id(unit).is_none()
                || !phoenix_provider_api::is_safe_name(unit.replace('@', "-").as_str())
            {
                return Err(format!("`{unit}` is not a unit id (e.g. web-0@r3)"));
            }
            let offset = offset
                .parse::<u64>()
                .map_err(|_| format!("`{offset}` is not a byte offset"))?;
            map.insert(unit.to_string(), offset);
            if map.len() > MAX_FILES {
                return Err(format!("a log cursor names at most {MAX_FILES} units"));
            }
        }
        Ok(Cursor(map))
    }

    /// The cursor as text (`UNIT:OFFSET,...`).
    pub(crate) fn render(&self) -> String {
        self.0
            .iter()
            .map(|(u, o)| format!("{u}:{o}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A unit's log file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct UnitFile {
    pub(crate) unit: String,
    pub(crate) path: PathBuf,
}

/// The files of `instance` itself among `paths` (a provider's `log_paths` also matches
/// instances of a service named like the instance), oldest revision first, the newest
/// [`MAX_FILES`] only.
pub(crate) fn unit_files(paths: Vec<PathBuf>, instance: &str) -> Vec<UnitFile> {
    let mut found: Vec<(u64, UnitFile)> = paths
        .into_iter()
        .filter_map(|path| {
            let unit = path.file_stem()?.to_str()?.to_string();
            let (of, rev) = phoenix_provider_api::parse_unit_id(&unit)?;
            (of == instance).then_some((rev, UnitFile { unit, path }))
        })
        .collect();
    found.sort_by_key(|(rev, _)| *rev);
    let skip = found.len().saturating_sub(MAX_FILES);
    found.into_iter().skip(skip).map(|(_, f)| f).collect()
}

/// Lines in `buf` (which starts at byte `base` of its file): each whole line with the offset
/// after its newline, stretches of more than [`MAX_LINE`] bytes in pieces; and what is left
/// after the last of them (a line still being written), shorter than [`MAX_LINE`].
fn split_lines(buf: &[u8], base: u64) -> (Vec<(String, u64)>, &[u8]) {
    let mut lines = Vec::new();
    let mut start = 0usize;
    let mut i = 0usize;
    while i < buf.len() {
        if buf[i] == b'\n' {
            lines.push((line_text(&buf[start..i]), base + (i as u64) + 1));
            start = i + 1;
        } else if i - start == MAX_LINE {
            // `buf[start..i]` is a full piece; the byte at `i` starts the next one.
            lines.push((line_text(&buf[start..i]), base + i as u64));
            start = i;
        }
        i += 1;
    }
    (lines, &buf[start.min(buf.len())..])
}

/// A line's bytes as text, without a carriage return before its newline.
fn line_text(bytes: &[u8]) -> String {
    let mut text = String::from_utf8_lossy(bytes).into_owned();
    if text.ends_with('\r') {
        text.pop();
    }
    text
}

/// Reads bytes `[from, from + max)` of `path` (fewer at its end); the file's length too.
fn read_range(path: &Path, from: u64, max: u64) -> std::io::Result<(Vec<u8>, u64)> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    if from >= len {
        return Ok((Vec::new(), len));
    }
    f.seek(SeekFrom::Start(from))?;
    let mut buf = Vec::new();
    f.take(max.min(len - from)).read_to_end(&mut buf)?;
    Ok((buf, len))
}

/// The last `n` lines of `files` (and each file's unfinished line, marked partial), and the
/// cursor after the whole lines. A file that cannot be read is skipped.
pub(crate) fn tail(files: &[UnitFile], n: usize) -> (Vec<LogLine>, Cursor) {
    let mut lines: Vec<LogLine> = Vec::new();
    let mut cursor = Cursor::default();
    for file in files {
        let Ok(len) = std::fs::metadata(&file.path).map(|m| m.len()) else {
            continue;
        };
        let from = len.saturating_sub(TAIL_WINDOW);
        let Ok((buf, _)) = read_range(&file.path, from, TAIL_WINDOW) else {
            continue;
        };
        // A window that starts inside the file starts inside a line: that line's start is
        // outside it, so it begins after the first newline.
        let skip = if from > 0 {
            buf.iter().position(|b| *b == b'\n').map_or(0, |i| i + 1)
        } else {
            0
        };
        let base = from + skip as u64;
        let (whole, rest) = split_lines(&buf[skip..], base);
        cursor.0.insert(
            file.unit.clone(),
            whole.last().map_or(base, |(_, end)| *end),
        );
        lines.extend(whole.into_iter().map(|(text, _)| LogLine {
            unit: file.unit.clone(),
            text,
            partial: false,
        }));
        if !rest.is_empty() {
            lines.push(LogLine {
                unit: file.unit.clone(),
                text: String::from_utf8_lossy(rest).into_owned(),
                partial: true,
            });
        }
        // Bounded as it goes: only the last `n` whole lines (and partials) are kept.
        if lines.len() > n.saturating_mul(2) + MAX_FILES {
            let cut = lines.len() - (n + MAX_FILES);
            lines.drain(..cut);
        }
    }
    // The last `n` whole lines, with the partial lines among and after them.
    let mut whole_seen = 0usize;
    let mut keep_from = lines.len();
    for (i, l) in lines.iter().enumerate().rev() {
        if !l.partial {
            if whole_seen == n {
                break;
            }
            whole_seen += 1;
        }
        keep_from = i;
    }
    if n == 0 {
        keep_from = lines.len();
    }
    (lines.split_off(keep_from), cursor)
}

/// The lines written since `cursor` (advanced past them), at most [`READ_PER_POLL`] bytes of
/// each file. A file not in the cursor is new since it was made (a new revision's unit) and is
/// read from its start; a file shorter than its offset was truncated and is read again from
/// its start.
pub(crate) fn poll(files: &[UnitFile], cursor: &mut Cursor) -> Vec<(LogLine, String)> {
    let mut out = Vec::new();
    for file in files {
        let mut offset = cursor.0.get(&file.unit).copied().unwrap_or(0);
        let Ok((mut buf, len)) = read_range(&file.path, offset, READ_PER_POLL) else {
            continue;
        };
        if len < offset {
            offset = 0;
            cursor.0.insert(file.unit.clone(), 0);
            buf = match read_range(&file.path, 0, READ_PER_POLL) {
                Ok((b, _)) => b,
                Err(_) => continue,
            };
        }
        let (whole, _) = split_lines(&buf, offset);
        for (text, end) in whole {
            cursor.0.insert(file.unit.clone(), end);
            out.push((
                LogLine {
                    unit: file.unit.clone(),
                    text,
                    partial: false,
                },
                cursor.render(),
            ));
        }
    }
    cursor.bound(files);
    out
}

impl Cursor {
    /// Keeps at most [`MAX_FILES`] entries (a cursor is an event id, which must parse again):
    /// those of the files read, then the newest others. A file missing from one listing (a
    /// site that did not answer this time) keeps its offset while there is room, so it is not
    /// read again from its start when it is back.
    fn bound(&mut self, files: &[UnitFile]) {
        if self.0.len() <= MAX_FILES {
            return;
        }
        let mut others: Vec<(u64, String)> = self
            .0
            .keys()
            .filter(|u| !files.iter().any(|f| &f.unit == *u))
            .map(|u| {
                let rev = phoenix_provider_api::parse_unit_id(u).map_or(0, |(_, r)| r);
                (rev, u.clone())
            })
            .collect();
        // Oldest revisions first: a unit older than the newest files is never read again.
        others.sort();
        for (_, unit) in others {
            if self.0.len() <= MAX_FILES {
                break;
            }
            self.0.remove(&unit);
        }
    }
}

/// `?tail=` checked against its bounds.
///
/// # Errors
/// 400 beyond [`MAX_TAIL`].
pub(crate) fn tail_arg(tail: Option<usize>) -> Result<usize, ApiError> {
    let n = tail.unwrap_or(DEFAULT_TAIL);
    if n > MAX_TAIL {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("`tail` must be 0 to {MAX_TAIL}"),
        ));
    }
    Ok(n)
}

/// What reads the fleet's logs, made as `phoenix logs` makes it.
fn reader(state: &AppState, fleet: &str) -> Arc<dyn Provider> {
    crate::deploy_cmd::log_reader(&*state.store, fleet, &state.state_args.state_dir)
}

/// Runs `f` on a thread of its own: the providers block, and the Docker provider runs a
/// runtime of its own, which cannot start on one of the server's threads.
async fn on_thread<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("serve-{what}"))
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| ApiError::internal(format!("starting the {what}: {e}")))?;
    rx.await
        .map_err(|_| ApiError::internal(format!("the {what} stopped unexpectedly")))?
}

/// 404 unless the fleet has the instance (in its view).
pub(crate) async fn known_instance(
    state: &AppState,
    fleet: &str,
    instance: &str,
) -> Result<serde_json::Value, ApiError> {
    let (fleet, instance) = (fleet.to_string(), instance.to_string());
    super::api::with_views(state, move |store, views| {
        super::api::fleet_exists(&**store, &fleet)?;
        let view = views.get(store, &fleet)?;
        view.by_instance
            .get(&instance)
            .map(|&i| view.instance_now(i))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("no instance {instance} in fleet {fleet}"),
                )
            })
    })
    .await
}

/// The last `n` lines of the instance's logs (the instance is known to exist).
pub(crate) async fn tail_of(
    state: &AppState,
    fleet: &str,
    instance: &str,
    n: usize,
) -> Result<LogTail, ApiError> {
    let (st, fleet, instance) = (state.clone(), fleet.to_string(), instance.to_string());
    on_thread("logs", move || {
        let provider = reader(&st, &fleet);
        let paths = provider
            .log_paths(&fleet, &instance)
            .map_err(|e| ApiError::internal(format!("finding the logs of {instance}: {e}")))?;
        let files = unit_files(paths, &instance);
        let (lines, cursor) = tail(&files, n);
        Ok(LogTail {
            units: files.iter().map(|f| f.unit.clone()).collect(),
            fleet,
            instance,
            lines,
            cursor: cursor.render(),
        })
    })
    .await
}

/// What the reading thread sends the stream.
enum Message {
    Line(LogLine, String),
    End(String),
}

/// The instance's new lines as server-sent events (`event: line`, id the cursor after the
/// line; `event: end` with the reason when the follow ends), from `after` (a cursor), else
/// after the last `n` lines, which are sent first.
pub(crate) async fn follow(
    state: AppState,
    fleet: String,
    instance: String,
    n: usize,
    after: Option<Cursor>,
) -> Response {
    let Some(slot) = events::take_slot(&state) else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} event streams are open already; try again later",
                events::MAX_STREAMS
            ),
        )
        .into_response();
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Message>(CHANNEL);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("serve-follow".into())
        .spawn(move || {
            // Held until the follow ends, so open follows count against the server's bound.
            let _slot = slot;
            follow_thread(&state, &fleet, &instance, n, after, &tx, ready_tx);
        });
    if let Err(e) = spawned {
        return ApiError::internal(format!("starting to follow the logs: {e}")).into_response();
    }
    // The answer starts only once the follow knows where it starts: a line the unit writes
    // after the client has the answer's headers is then always one it gets.
    if ready_rx.await.is_err() {
        return ApiError::internal("the follow stopped before it started").into_response();
    }
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        let event = match rx.recv().await? {
            Message::Line(line, cursor) => Event::default()
                .event("line")
                .id(cursor)
                .data(serde_json::to_string(&line).unwrap_or_default()),
            Message::End(reason) => Event::default()
                .event("end")
                .data(serde_json::json!({ "reason": reason }).to_string()),
        };
        Some((Ok::<_, Infallible>(event), rx))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// Whether the instance still has a unit desired running (a destroyed fleet's, a removed
/// instance's has not). A store that does not answer counts as yes: the next check decides.
fn still_running(state: &AppState, fleet: &str, instance: &str) -> bool {
    match state.views.get(&state.store, fleet) {
        Ok(view) => view
            .by_instance
            .get(instance)
            .and_then(|&i| view.instances.get(i))
            .is_some_and(|v| v["desired"] == "running"),
        Err(_) => true,
    }
}

/// The follow's loop, on its own thread, bounded by [`MAX_FOLLOW`] from its start; `ready` is
/// told once the starting position is known.
fn follow_thread(
    state: &AppState,
    fleet: &str,
    instance: &str,
    n: usize,
    after: Option<Cursor>,
    tx: &tokio::sync::mpsc::Sender<Message>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let started = Instant::now();
    let provider = reader(state, fleet);
    // A listing that fails (a site that does not answer) reads nothing this poll; the cursor
    // keeps its offsets (`Cursor::bound`), so nothing is read twice when it answers again.
    let files =
        |p: &dyn Provider| unit_files(p.log_paths(fleet, instance).unwrap_or_default(), instance);
    let mut cursor = match after {
        Some(c) => {
            let _ = ready.send(());
            c
        }
        None => {
            let (lines, cursor) = tail(&files(&*provider), n);
            // Before the tail's lines are sent: the channel is bounded, and nothing reads it
            // until the answer has started.
            let _ = ready.send(());
            let text = cursor.render();
            for line in lines.into_iter().filter(|l| !l.partial) {
                if tx.blocking_send(Message::Line(line, text.clone())).is_err() {
                    return;
                }
            }
            cursor
        }
    };
    let mut checked = Instant::now();
    // Bounded: every pass sleeps POLL, and the loop ends at MAX_FOLLOW at the latest.
    loop {
        if tx.is_closed() {
            return;
        }
        for (line, text) in poll(&files(&*provider), &mut cursor) {
            if tx.blocking_send(Message::Line(line, text)).is_err() {
                return;
            }
        }
        if checked.elapsed() >= UNIT_CHECK {
            checked = Instant::now();
            if !still_running(state, fleet, instance) {
                // What it wrote last is read before the end is said.
                for (line, text) in poll(&files(&*provider), &mut cursor) {
                    if tx.blocking_send(Message::Line(line, text)).is_err() {
                        return;
                    }
                }
                let _ = tx.blocking_send(Message::End(format!(
                    "{instance} has no unit desired running any more"
                )));
                return;
            }
        }
        if started.elapsed() >= MAX_FOLLOW {
            let _ = tx.blocking_send(Message::End(format!(
                "a follow lasts at most {} s; reconnect with the last event id to go on",
                MAX_FOLLOW.as_secs()
            )));
            return;
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, unit: &str, text: &str) -> UnitFile {
        let path = dir.join(format!("{unit}.log"));
        std::fs::write(&path, text).unwrap();
        UnitFile {
            unit: unit.into(),
            path,
        }
    }

    #[test]
    fn cursors_round_trip_and_bad_ones_are_refused() {
        let c = Cursor::parse("web-0@r1:120,web-0@r2:64").unwrap();
        assert_eq!(c.render(), "web-0@r1:120,web-0@r2:64");
        assert_eq!(Cursor::parse("").unwrap(), Cursor::default());
        for bad in ["web-0:1", "web-0@r1", "web-0@r1:x", "../x@r1:1", "a b@r1:1"] {
            assert!(Cursor::parse(bad).is_err(), "{bad}");
        }
        let many: Vec<String> = (0..=MAX_FILES).map(|i| format!("w-0@r{i}:1")).collect();
        assert!(Cursor::parse(&many.join(",")).is_err());
    }

    #[test]
    fn only_the_instance_itself_and_its_newest_units() {
        let paths: Vec<PathBuf> = (1..=12)
            .map(|r| PathBuf::from(format!("/l/web-0@r{r}.log")))
            .chain([PathBuf::from("/l/web-0-1@r3.log")])
            .collect();
        let files = unit_files(paths, "web-0");
        assert_eq!(files.len(), MAX_FILES);
        assert_eq!(files[0].unit, "web-0@r5");
        assert_eq!(files[MAX_FILES - 1].unit, "web-0@r12");
    }

    #[test]
    fn a_tail_gives_the_last_lines_and_a_cursor_after_the_whole_ones() {
        let d = tempfile::tempdir().unwrap();
        let files = vec![
            file(d.path(), "web-0@r1", "a\nb\n"),
            file(d.path(), "web-0@r2", "c\r\nd\ne"),
        ];
        let (lines, cursor) = tail(&files, 2);
        let texts: Vec<(&str, bool)> = lines.iter().map(|l| (l.text.as_str(), l.partial)).collect();
        assert_eq!(texts, [("c", false), ("d", false), ("e", true)]);
        assert_eq!(cursor.render(), "web-0@r1:4,web-0@r2:5");
        let (none, _) = tail(&files, 0);
        assert!(none.is_empty());
    }

    #[test]
    fn a_poll_gives_what_came_since_the_cursor_and_new_files_from_their_start() {
        let d = tempfile::tempdir().unwrap();
        let one = file(d.path(), "web-0@r1", "a\nb\npart");
        let (_, mut cursor) = tail(std::slice::from_ref(&one), 10);
        assert!(poll(std::slice::from_ref(&one), &mut cursor).is_empty());
        std::fs::write(&one.path, "a\nb\npartial done\nnext\n").unwrap();
        let two = file(d.path(), "web-0@r2", "new\n");
        let got = poll(&[one.clone(), two.clone()], &mut cursor);
        let texts: Vec<&str> = got.iter().map(|(l, _)| l.text.as_str()).collect();
        assert_eq!(texts, ["partial done", "next", "new"]);
        assert_eq!(got[2].1, "web-0@r1:22,web-0@r2:4");
        // Truncated: read again from the start.
        std::fs::write(&one.path, "x\n").unwrap();
        let got = poll(&[one, two], &mut cursor);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.text, "x");
    }

    #[test]
    fn a_file_missing_from_one_listing_keeps_its_offset_and_old_units_go_first() {
        let d = tempfile::tempdir().unwrap();
        let one = file(d.path(), "web-0@r1", "a\n");
        let (_, mut cursor) = tail(std::slice::from_ref(&one), 10);
        // A listing without it (its site did not answer), then with it again: not read twice.
        assert!(poll(&[], &mut cursor).is_empty());
        assert!(poll(std::slice::from_ref(&one), &mut cursor).is_empty());
        // Bounded: past MAX_FILES entries the oldest units not read any more are dropped.
        let files: Vec<UnitFile> = (2..=(MAX_FILES as u64 + 1))
            .map(|r| file(d.path(), &format!("web-0@r{r}"), "x\n"))
            .collect();
        poll(&files, &mut cursor);
        assert_eq!(cursor.0.len(), MAX_FILES);
        assert!(!cursor.0.contains_key("web-0@r1"));
        assert!(Cursor::parse(&cursor.render()).is_ok());
    }

    #[test]
    fn long_stretches_come_in_pieces() {
        let long = "x".repeat(MAX_LINE * 2 + 10);
        let (lines, rest) = split_lines(long.as_bytes(), 0);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].0.len(), MAX_LINE);
        assert_eq!(lines[1].1, (MAX_LINE * 2) as u64);
        assert_eq!(rest.len(), 10);
    }
}
