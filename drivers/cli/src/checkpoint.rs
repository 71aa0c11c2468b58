//! `--state-dir DIR`: one checkpoint per connection, `DIR/<name>.json`, so that a restarted process reports
//! the restart as a `restart` gap. The file holds what the connection's `Handle::receiving_since` was (the
//! start a gap would have if the process died then):
//!
//! ```json
//! {"version":1,"connection":"acme","receiving_since":"2026-12-02T04:10:03.120Z","written_at":"2026-12-02T04:10:05.002Z"}
//! ```
//!
//! `receiving_since` is `null` when nothing was at stake (a fresh start that had not connected, or a
//! connection with no topics): the next start is a fresh one too. Nothing secret is written. Files are
//! replaced atomically (a temporary file in DIR, then a rename), by one writer thread so that a fleet's
//! run loop never waits for the disk. At start, a missing file is a fresh start (no gap); a file that
//! cannot be read or parsed, or a DIR that cannot be created or written, is exit 2 before anything
//! connects.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use genesys_keepalive::time::{format_epoch_ms, parse_iso8601};
use serde::Serialize;

use crate::failure::Failure;

/// How often a running process checks its connections' checkpoints (a file is rewritten only when its
/// value changed).
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(2);

/// The format's version, written in every file and required when one is read.
const VERSION: u64 = 1;

/// A checked, writable state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

/// The file name for connection `name`: every byte outside `[A-Za-z0-9._-]` (and `%` itself) written as
/// `%XX`, so that any name is one safe file name and two names never share one.
pub fn file_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 5);
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.push_str(".json");
    out
}

impl StateDir {
    /// Creates `dir` if needed and proves it writable (a probe file written, renamed and removed); exit 2
    /// naming it otherwise.
    pub fn open(dir: &Path) -> Result<StateDir, Failure> {
        let bad = |what: &str, e: std::io::Error| {
            Failure::config(format!(
                "--state-dir {}: {what}: {e}; give a writable directory (one per replica)",
                dir.display()
            ))
        };
        std::fs::create_dir_all(dir).map_err(|e| bad("cannot create it", e))?;
        let probe = dir.join(format!(".probe-{}.tmp", std::process::id()));
        let done = probe.with_extension("done");
        write_atomically(&probe, &done, b"probe\n").map_err(|e| bad("cannot write in it", e))?;
        std::fs::remove_file(&done).map_err(|e| bad("cannot remove a file in it", e))?;
        Ok(StateDir {
            dir: dir.to_path_buf(),
        })
    }

    /// The checkpoint file of connection `name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(file_name(name))
    }

    /// The `receiving_since` of `name`'s checkpoint: `None` when there is none (a fresh start) or it says
    /// `null`; exit 2 naming the file when it cannot be read or is not a checkpoint.
    pub fn read(&self, name: &str) -> Result<Option<SystemTime>, Failure> {
        let path = self.path(name);
        let bad = |why: String| {
            Failure::config(format!(
                "cannot use the checkpoint {}: {why}; fix or delete it (deleting it starts `{name}` afresh, \
                 with no restart gap)",
                path.display()
            ))
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(bad(e.to_string())),
        };
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not JSON ({e})")))?;
        match value.get("version").and_then(|v| v.as_u64()) {
            Some(VERSION) => {}
            Some(v) => {
                return Err(bad(format!(
                    "version {v}; this build reads version {VERSION}"
                )))
            }
            None => return Err(bad("no `version`".into())),
        }
        match value.get("receiving_since") {
            Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => parse_iso8601(s)
                .map(Some)
                .ok_or_else(|| bad(format!("`receiving_since` {s:?} is not an ISO-8601 time"))),
            _ => Err(bad("no `receiving_since`".into())),
        }
    }

    /// Starts the writer thread.
    pub fn writer(&self) -> Writer {
        let (tx, rx) = mpsc::channel::<(String, Option<SystemTime>)>();
        let dir = self.clone();
        let thread = std::thread::Builder::new()
            .name("checkpoints".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    // What queued meanwhile: only the latest value per connection is written.
                    let mut batch: HashMap<String, Option<SystemTime>> = HashMap::new();
                    batch.insert(first.0, first.1);
                    batch.extend(rx.try_iter());
                    for (name, since) in batch {
                        dir.write(&name, since);
                    }
                }
            })
            .ok();
        Writer {
            tx: Some(tx),
            thread,
            sent: HashMap::new(),
            fallback: self.clone(),
        }
    }

    /// Writes `name`'s checkpoint; a failure is logged (the run goes on; the file keeps its older value,
    /// whose window is the longer one).
    fn write(&self, name: &str, since: Option<SystemTime>) {
        let path = self.path(name);
        let tmp = self.dir.join(format!("{}.tmp", file_name(name)));
        let text = checkpoint_json(name, since);
        if let Err(e) = write_atomically(&tmp, &path, text.as_bytes()) {
            tracing::warn!(
                "cannot write the checkpoint {}: {e}; a restart now reports a longer gap",
                path.display()
            );
        }
    }
}

#[derive(Serialize)]
struct CheckpointLine<'a> {
    version: u64,
    connection: &'a str,
    receiving_since: Option<String>,
    written_at: String,
}

/// The file's contents: one JSON object and a newline. The time is rounded down to the millisecond (a
/// window that starts a little earlier, never later).
pub fn checkpoint_json(name: &str, since: Option<SystemTime>) -> String {
    let line = CheckpointLine {
        version: VERSION,
        connection: name,
        receiving_since: since.map(|t| format_epoch_ms(epoch_ms(t))),
        written_at: format_epoch_ms(epoch_ms(SystemTime::now())),
    };
    let mut text = serde_json::to_string(&line).unwrap_or_default();
    text.push('\n');
    text
}

fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

/// `bytes` to `tmp`, flushed to the disk, then renamed over `path` (both in one directory): a reader sees
/// the old file or the new one, never a part.
fn write_atomically(tmp: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(tmp, path)
}

/// Hands checkpoints to the writer thread, each only when its value changed.
pub struct Writer {
    tx: Option<mpsc::Sender<(String, Option<SystemTime>)>>,
    thread: Option<JoinHandle<()>>,
    sent: HashMap<String, Option<SystemTime>>,
    /// Writes in the caller's thread if the writer thread could not start.
    fallback: StateDir,
}

impl Writer {
    /// `name`'s checkpoint is now `since`. Read it with `Handle::receiving_since` *before* printing what
    /// was queued, and call this after: whatever a crash then loses lies after `since`.
    pub fn update(&mut self, name: &str, since: Option<SystemTime>) {
        if self.sent.get(name) == Some(&since) {
            return;
        }
        self.sent.insert(name.to_string(), since);
        match (&self.tx, &self.thread) {
            (Some(tx), Some(_)) => {
                let _ = tx.send((name.to_string(), since));
            }
            _ => self.fallback.write(name, since),
        }
    }

    /// Waits until every checkpoint handed over is written.
    pub fn finish(mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(test: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("gk-checkpoint-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn any_name_is_one_safe_file_name() {
        assert_eq!(file_name("acme-01.eu_x"), "acme-01.eu_x.json");
        assert_eq!(file_name("a/b c"), "a%2Fb%20c.json");
        assert_eq!(file_name("50%"), "50%25.json");
        assert_eq!(file_name("é"), "%C3%A9.json");
        assert_ne!(file_name("a%2Fb"), file_name("a/b"));
        assert!(!file_name("../../etc/passwd").contains('/'));
    }

    #[test]
    fn a_checkpoint_reads_back_to_the_millisecond_below() {
        let dir = StateDir::open(&temp_dir("roundtrip")).unwrap();
        assert_eq!(dir.read("acme").unwrap(), None, "no file: a fresh start");
        let t = UNIX_EPOCH + Duration::from_nanos(1_780_000_000_123_456_789);
        let mut w = dir.writer();
        w.update("acme", Some(t));
        w.update("a/b", None);
        w.finish();
        assert_eq!(
            dir.read("acme").unwrap(),
            Some(UNIX_EPOCH + Duration::from_millis(1_780_000_000_123))
        );
        assert_eq!(dir.read("a/b").unwrap(), None, "null: nothing at stake");
        let text = std::fs::read_to_string(dir.path("acme")).unwrap();
        assert!(
            text.starts_with(
                r#"{"version":1,"connection":"acme","receiving_since":"2026-05-28T20:26:40.123Z""#
            ),
            "{text}"
        );
        let leftovers: Vec<_> = std::fs::read_dir(&dir.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".tmp") || n.starts_with(".probe"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_bad_checkpoint_is_refused_naming_the_file() {
        let dir = StateDir::open(&temp_dir("bad")).unwrap();
        for (i, text) in [
            "{not json",
            r#"{"receiving_since":"2026-05-28T20:26:40.123Z"}"#,
            r#"{"version":9,"receiving_since":null}"#,
            r#"{"version":1,"receiving_since":"yesterday"}"#,
            r#"{"version":1}"#,
        ]
        .iter()
        .enumerate()
        {
            let name = format!("c{i}");
            std::fs::write(dir.path(&name), text).unwrap();
            let e = dir.read(&name).unwrap_err();
            assert_eq!(e.code, 2);
            assert!(
                e.message.contains(&dir.path(&name).display().to_string()),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn a_dir_that_cannot_be_created_is_refused() {
        let file = temp_dir("not-a-dir");
        std::fs::write(&file, "x").unwrap();
        let e = StateDir::open(&file.join("sub")).unwrap_err();
        assert_eq!(e.code, 2);
        assert!(e.message.contains("--state-dir"), "{}", e.message);
    }
}
