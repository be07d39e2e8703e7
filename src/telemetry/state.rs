//! The state file: the last delivery attempt and its result, for `telemetry status`.
//!
//! Kept only when a state directory is set (`Butler.butlerAgent.stateDir` /
//! `BUTLER_STATE_DIR`), as `telemetry-state.json` there. Written to a temporary file and renamed,
//! so a reader never sees half a file; mode 0600 (see [`crate::files`]).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::payload::rfc3339_millis;
use crate::files;

/// File name inside the state directory.
pub(crate) const FILE_NAME: &str = "telemetry-state.json";

/// What `telemetry status` shows about the last attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LastAttempt {
    /// RFC 3339 UTC.
    pub(crate) time: String,
    /// `delivered`, `failed`, `rejected`, `refused` (privacy guard) or `error` (setup).
    pub result: String,
    /// The HTTP status of the last try, if there was one.
    pub http_status: Option<u16>,
    /// One line: what happened (never event content).
    pub(crate) detail: String,
    /// Tries made in that cycle.
    pub(crate) attempts: u32,
    pub(crate) destination: String,
}

impl LastAttempt {
    pub(crate) fn new(
        time: SystemTime,
        result: &str,
        http_status: Option<u16>,
        detail: String,
        attempts: u32,
        destination: &str,
    ) -> Self {
        LastAttempt {
            time: rfc3339_millis(time),
            result: result.to_string(),
            http_status,
            detail,
            attempts,
            destination: destination.to_string(),
        }
    }
}

pub(crate) fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

/// Writes the record atomically, mode 0600, never through a symbolic link (see [`crate::files`]).
pub(crate) fn save(state_dir: &Path, last: &LastAttempt) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(last).expect("serializing plain data cannot fail");
    files::write_atomic(&path(state_dir), text.as_bytes())
}

/// Why the state file could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    #[error("{} is not a valid state file: {cause}", path.display())]
    Invalid {
        path: PathBuf,
        cause: serde_json::Error,
    },
    #[error("cannot read the state file {0}; remove it to have a new one written")]
    Unreadable(files::ReadError),
}

/// Reads the record; `Ok(None)` when there is none yet. At most
/// [`files::STATE_FILE_LIMIT`]; never through a symbolic link, a FIFO or a device.
pub(crate) fn load(state_dir: &Path) -> Result<Option<LastAttempt>, LoadError> {
    let p = path(state_dir);
    match files::read_own(&p, files::STATE_FILE_LIMIT) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|cause| LoadError::Invalid { path: p, cause }),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(LoadError::Unreadable(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        let sd = dir.path().join("state");
        assert_eq!(load(&sd).unwrap(), None);
        let rec = LastAttempt::new(
            SystemTime::now(),
            "delivered",
            Some(200),
            "ok".into(),
            1,
            "d",
        );
        save(&sd, &rec).unwrap();
        assert_eq!(load(&sd).unwrap(), Some(rec));
        std::fs::write(path(&sd), "{").unwrap();
        assert!(
            load(&sd)
                .unwrap_err()
                .to_string()
                .contains("not a valid state file")
        );
    }
}
