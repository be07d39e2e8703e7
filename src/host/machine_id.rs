//! The machine-id (`/etc/machine-id`, else `/var/lib/dbus/machine-id`): 32 hex digits that
//! systemd or dbus write once per installation. It outlives every container on the host, so it
//! is the best anchor for a container's instance ID, but only when it is the *host's* file
//! (mounted via `HOST_ETC`/`HOST_ROOT`): a machine-id baked into an image is shared by every
//! container made from it.

use std::path::{Path, PathBuf};

/// A valid machine-id and the file it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MachineId {
    pub(crate) value: String,
    pub(crate) path: PathBuf,
}

/// Where the machine-id of an etc root may be: its own file, then dbus's copy below its parent
/// (systeminformation reads them the other way round for `osInfo().serial`, which Butler's
/// fallback ID uses).
pub(crate) fn candidates(etc: &Path) -> [PathBuf; 2] {
    let base = etc.parent().unwrap_or(etc);
    [etc.join("machine-id"), base.join("var/lib/dbus/machine-id")]
}

/// The machine-id in the text of `path` (its first line), when it is one.
pub(crate) fn from_text(path: &Path, text: &str) -> Option<MachineId> {
    let value = text
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if is_valid(&value) {
        Some(MachineId {
            value,
            path: path.to_path_buf(),
        })
    } else {
        // "uninitialized" (first boot) or an empty file in an image: not an identity.
        tracing::debug!(path = %path.display(), "machine-id present but not 32 hex digits");
        None
    }
}

/// 32 lowercase hex digits, not all zero.
pub(crate) fn is_valid(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) && s.bytes().any(|b| b != b'0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity() {
        assert!(is_valid("4c4c4544004a3510804bb4c04f4e3432"));
        assert!(!is_valid("uninitialized"));
        assert!(!is_valid("00000000000000000000000000000000"));
        assert!(!is_valid(""));
    }
}
