//! Helpers the unit tests share (compiled for tests only).

pub(crate) mod http_answer;

use std::path::Path;
use std::sync::{Arc, Mutex};

/// Copies a fixture tree, keeping symbolic links as links (host facts follow them below the
/// root, so a copy must not resolve them).
pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("temp dir is writable");
    for e in std::fs::read_dir(from).expect("fixture readable").flatten() {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let meta = std::fs::symlink_metadata(&src).expect("fixture readable");
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&src).expect("link readable");
            std::os::unix::fs::symlink(target, &dst).expect("temp dir is writable");
        } else if meta.is_dir() {
            copy_dir(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).expect("temp dir is writable");
        }
    }
}

/// Log output collected in memory, for tests that check what is logged.
#[derive(Clone, Default)]
pub(crate) struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// Sends this thread's log records at `level` and above here until the guard is dropped.
    pub(crate) fn capture(&self, level: tracing::Level) -> tracing::subscriber::DefaultGuard {
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(level)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    /// Everything logged so far.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log lock")).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log lock").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
