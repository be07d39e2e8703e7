//! The audit log: one JSON line per event that left the machine, so an administrator can see
//! exactly what was sent, when, and what the destination answered.
//!
//! Optional (`Butler.butlerAgent.auditLog` / `BUTLER_TELEMETRY_AUDIT_LOG`). Each line is
//! `{"time", "destination", "status", "outcome", "event"}` where `event` is the body as sent.
//! When the file would grow past the size limit it is renamed to `<file>.1` (replacing an older
//! one) and a new file is started, so the log never takes more than twice the limit.
//! Writes are plain blocking appends: a few kilobytes twice a day. The file is created 0600 (it
//! holds every event sent) and never opened through a symbolic link.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::{Value, json};

use super::payload::rfc3339_millis;
use super::retry::Attempt;
use crate::files;

/// One audit record.
pub(crate) fn line(time: SystemTime, destination: &str, attempt: &Attempt, body: &[u8]) -> String {
    let event: Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
    let record = json!({
        "time": rfc3339_millis(time),
        "destination": destination,
        "status": attempt.status(),
        "outcome": attempt.describe(),
        "event": event,
    });
    serde_json::to_string(&record).expect("serializing a JSON value cannot fail")
}

/// The rotated file's name: `<file>.1`.
pub(crate) fn rotated_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// Appends one line, rotating first when the file would pass `max_bytes`. The file is opened
/// with [`files::open_append`] (0600, never through a symbolic link, only a regular file);
/// rotation renames the name itself, so a link at `<file>.1` is replaced, never followed.
pub(crate) fn append(path: &Path, max_bytes: u64, line: &str) -> std::io::Result<()> {
    let mut f = files::open_append(path)?;
    let meta = f.metadata()?;
    let add = line.len() as u64 + 1;
    if meta.is_file() && meta.len() > 0 && meta.len() + add > max_bytes {
        std::fs::rename(path, rotated_path(path))?;
        f = files::open_append(path)?;
    }
    f.write_all(format!("{line}\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_json_line_with_time_status_and_event() {
        let t = humantime::parse_rfc3339("2026-03-01T10:00:00Z").unwrap();
        let l = line(
            t,
            "http://127.0.0.1:1/i/v0/e/",
            &Attempt::Delivered { status: 200 },
            br#"{"event":"telemetry sent"}"#,
        );
        assert!(!l.contains('\n'));
        let v: Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["time"], "2026-03-01T10:00:00.000Z");
        assert_eq!(v["status"], 200);
        assert_eq!(v["event"]["event"], "telemetry sent");
        assert_eq!(v["destination"], "http://127.0.0.1:1/i/v0/e/");
        let failed = line(
            t,
            "d",
            &Attempt::Transient {
                status: None,
                reason: "timed out".into(),
                retry_after: None,
            },
            b"{}",
        );
        let v: Value = serde_json::from_str(&failed).unwrap();
        assert!(v["status"].is_null());
        assert!(v["outcome"].as_str().unwrap().contains("timed out"));
    }

    #[test]
    fn rotates_at_the_limit_keeping_one_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/audit.jsonl");
        let record = "x".repeat(99); // 100 bytes with the newline
        for _ in 0..25 {
            append(&path, 1000, &record).unwrap();
        }
        let size = |p: &Path| std::fs::metadata(p).unwrap().len();
        assert!(size(&path) <= 1000);
        assert_eq!(size(&rotated_path(&path)), 1000);
        assert_eq!(size(&path), 500);
        // No .2: only one old file is kept.
        assert!(!dir.path().join("logs/audit.jsonl.1.1").exists());
        assert_eq!(
            std::fs::read_dir(dir.path().join("logs")).unwrap().count(),
            2
        );
    }
}
