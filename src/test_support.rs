//! Helpers the unit tests share (compiled for tests only).

use std::path::Path;

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
