//! Every file the agent reads or writes goes through here.
//!
//! **Reads** ([`read_capped`]) open the file non-blocking, refuse anything that is not a regular
//! file (a FIFO would block for ever, `/dev/zero` never ends, a directory has no content) and
//! read at most a documented [`Limit`], naming it when it is hit. Files under `/proc` and `/sys`
//! are regular files that report size 0; they are read up to the limit like any other.
//!
//! **The agent's own files** (state directory, instance secret, state file, audit log):
//! - the directory is created 0700 when missing ([`ensure_dir`]);
//! - a file is replaced atomically ([`write_atomic`]) through a temporary file with an
//!   unpredictable name, created with `O_CREAT|O_EXCL` (which never follows a symbolic link) in
//!   the same directory, mode 0600 whatever the umask, flushed to disk and renamed over the final
//!   name. A rename replaces a symbolic link at the final name itself, never its target;
//! - a file made once ([`create_once`], the instance secret) is linked into place without
//!   replacing anything, so of several agents racing on one directory exactly one wins and all
//!   read the winner's file back;
//! - appends ([`open_append`]) open with `O_NOFOLLOW|O_APPEND|O_NONBLOCK`, mode 0600, to a
//!   regular file (or a character device such as `/dev/null`, never changed or rotated);
//! - reading one ([`read_own`]) does not follow a symbolic link either;
//! - an existing file that group or others may read is tightened to 0600 when the agent owns
//!   it, else a warning (once per file) names it and the fix.

use std::collections::HashSet;
use std::fmt;
use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::fcntl::OFlag;

/// Mode of every file the agent creates.
pub(crate) const FILE_MODE: u32 = 0o600;
/// Mode of a state directory the agent creates.
pub(crate) const DIR_MODE: u32 = 0o700;

/// How much of a file is read at most, and what kind of file it is (for the message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limit {
    pub(crate) bytes: u64,
    pub(crate) what: &'static str,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MIB: u64 = 1024 * 1024;
        if self.bytes >= MIB && self.bytes % MIB == 0 {
            write!(f, "{} MiB", self.bytes / MIB)
        } else if self.bytes >= 1024 && self.bytes % 1024 == 0 {
            write!(f, "{} KiB", self.bytes / 1024)
        } else {
            write!(f, "{} bytes", self.bytes)
        }
    }
}

/// Butler's full config template is about 80 KB.
pub(crate) const CONFIG_LIMIT: Limit = Limit {
    bytes: 4 * 1024 * 1024,
    what: "a config file",
};
/// A bundle of every public root CA is about 250 KB.
pub(crate) const CA_FILE_LIMIT: Limit = Limit {
    bytes: 2 * 1024 * 1024,
    what: "a CA file",
};
/// The state file is a few hundred bytes.
pub(crate) const STATE_FILE_LIMIT: Limit = Limit {
    bytes: 16 * 1024,
    what: "the state file",
};
/// The secret is 65 bytes.
pub(crate) const SECRET_LIMIT: Limit = Limit {
    bytes: 4 * 1024,
    what: "the instance secret",
};
/// Host facts (os-release, `/proc`, `/sys`, ...): mountinfo on a busy Kubernetes node is a few
/// hundred KB.
pub(crate) const HOST_FILE_LIMIT: Limit = Limit {
    bytes: 4 * 1024 * 1024,
    what: "a host file",
};

/// Why a file could not be read: the path, then [`ReadError::reason`].
#[derive(Debug, thiserror::Error)]
#[error("{}: {}", self.path().display(), self.reason())]
pub(crate) enum ReadError {
    NotFound(PathBuf),
    /// A FIFO, device, socket or directory.
    NotRegular {
        path: PathBuf,
        kind: &'static str,
    },
    /// A symbolic link where the agent keeps its own files.
    Symlink(PathBuf),
    TooLarge {
        path: PathBuf,
        limit: Limit,
    },
    Io {
        path: PathBuf,
        error: io::Error,
    },
}

impl ReadError {
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, ReadError::NotFound(_))
    }

    pub(crate) fn path(&self) -> &Path {
        match self {
            ReadError::NotFound(path)
            | ReadError::Symlink(path)
            | ReadError::NotRegular { path, .. }
            | ReadError::TooLarge { path, .. }
            | ReadError::Io { path, .. } => path,
        }
    }

    /// The message without the path, for callers that name the file themselves.
    pub(crate) fn reason(&self) -> String {
        match self {
            ReadError::NotFound(_) => "it does not exist".into(),
            ReadError::NotRegular { kind, .. } => format!("it is {kind}, not a regular file"),
            ReadError::Symlink(_) => "it is a symbolic link, which the agent does not follow \
                 for its own files; remove the link"
                .into(),
            ReadError::TooLarge { limit, .. } => {
                format!("it is larger than {limit}, the limit for {}", limit.what)
            }
            ReadError::Io { error, .. } => error.to_string(),
        }
    }
}

/// Whether a read follows a symbolic link at the last component of the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Follow {
    /// Host and config files: distributions and Kubernetes use links there.
    Yes,
    /// The agent's own files.
    No,
}

/// Reads a regular file, at most `limit` bytes (see the module doc). Never blocks on a FIFO.
pub(crate) fn read_capped(path: &Path, limit: Limit, follow: Follow) -> Result<Vec<u8>, ReadError> {
    let (file, meta) = open_regular(path, follow)?;
    read_limited(file, &meta, path, limit)
}

/// Reads one of the agent's own files: not through a symbolic link, and tightened to 0600 when
/// others may read it (see [`tighten`]).
pub(crate) fn read_own(path: &Path, limit: Limit) -> Result<Vec<u8>, ReadError> {
    let (file, meta) = open_regular(path, Follow::No)?;
    tighten(&file, &meta, path);
    read_limited(file, &meta, path, limit)
}

fn read_limited(
    file: File,
    meta: &std::fs::Metadata,
    path: &Path,
    limit: Limit,
) -> Result<Vec<u8>, ReadError> {
    let too_large = || ReadError::TooLarge {
        path: path.to_path_buf(),
        limit,
    };
    // `/proc` and `/sys` files report size 0; only a larger size settles it before reading.
    if meta.len() > limit.bytes {
        return Err(too_large());
    }
    // Room for the size `stat` gave and one byte more: a file that has not changed since is
    // read in one `read`, and the next finds its end (the config file is read at every start;
    // growing the buffer from nothing took 14 reads for the production template). The file
    // may still grow or shrink meanwhile: `take` bounds what is read either way.
    let mut buf =
        Vec::with_capacity(usize::try_from(meta.len()).map_or(0, |n| n.saturating_add(1)));
    file.take(limit.bytes + 1)
        .read_to_end(&mut buf)
        .map_err(|error| ReadError::Io {
            path: path.to_path_buf(),
            error,
        })?;
    if buf.len() as u64 > limit.bytes {
        return Err(too_large());
    }
    Ok(buf)
}

fn open_regular(path: &Path, follow: Follow) -> Result<(File, std::fs::Metadata), ReadError> {
    let mut flags = OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
    if follow == Follow::No {
        flags |= OFlag::O_NOFOLLOW;
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits())
        .open(path)
        .map_err(|e| open_error(path, follow, e))?;
    let meta = file.metadata().map_err(|error| ReadError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    if let Some(kind) = not_regular(&meta) {
        return Err(ReadError::NotRegular {
            path: path.to_path_buf(),
            kind,
        });
    }
    Ok((file, meta))
}

fn open_error(path: &Path, follow: Follow, error: io::Error) -> ReadError {
    let path = path.to_path_buf();
    if error.kind() == io::ErrorKind::NotFound {
        return ReadError::NotFound(path);
    }
    if follow == Follow::No && is_symlink(&path) {
        return ReadError::Symlink(path);
    }
    match error.raw_os_error() {
        // A Unix socket cannot be opened as a file.
        Some(nix::libc::ENXIO) => ReadError::NotRegular {
            path,
            kind: "a socket or device without a reader",
        },
        _ => ReadError::Io { path, error },
    }
}

fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path)
        .map(|m| m.file_type().is_symlink())
        .unwrap_or(false)
}

/// `None` for a regular file, else what it is.
fn not_regular(meta: &std::fs::Metadata) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        Some("not a regular file")
    }
}

/// Creates the directory (and missing parents) with mode 0700 when it does not exist.
pub(crate) fn ensure_dir(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    // The umask may have taken bits the owner needs; nothing else may have any.
    std::fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A new temporary file beside `path`, mode 0600, holding `bytes`, flushed to disk.
fn temp_beside(path: &Path, bytes: &[u8]) -> io::Result<tempfile::NamedTempFile> {
    let dir = parent(path);
    ensure_dir(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .rand_bytes(16)
        .permissions(Permissions::from_mode(FILE_MODE))
        .tempfile_in(dir)?;
    let file = tmp.as_file_mut();
    // `permissions` is filtered by the umask, which may take the owner's bits.
    file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(tmp)
}

/// The directory entry is on disk after a rename (best effort: some filesystems refuse).
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Replaces `path` atomically with `bytes` (see the module doc). A symbolic link at `path` is
/// replaced itself, with a warning; its target is left alone.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_beside(path, bytes)?;
    if is_symlink(path) {
        tracing::warn!(
            "{} is a symbolic link; replacing the link itself with a regular file (its target \
             is left alone)",
            path.display()
        );
    }
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(parent(path));
    Ok(())
}

/// Creates `path` holding `bytes` unless something already has that name. `Ok(true)` when this
/// call created it, `Ok(false)` when it existed (the caller reads what is there).
pub(crate) fn create_once(path: &Path, bytes: &[u8]) -> io::Result<bool> {
    let tmp = temp_beside(path, bytes)?;
    match tmp.persist_noclobber(path) {
        Ok(_) => {
            sync_dir(parent(path));
            Ok(true)
        }
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e.error),
    }
}

/// Opens `path` for appending: created 0600 when missing, never through a symbolic link, never
/// blocking, and only when it is a regular file.
pub(crate) fn open_append(path: &Path) -> io::Result<File> {
    ensure_dir(parent(path))?;
    append_existing(path)
}

/// [`open_append`] in a directory that must already exist (a file the user named, such as the
/// sink's `--out`: a typo in its directory is an error, not a new directory).
pub(crate) fn append_existing(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(FILE_MODE)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY).bits())
        .open(path)
        .map_err(|e| match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => io::Error::other(
                "it is a symbolic link, which the agent does not follow for its own files; \
                 remove the link",
            ),
            Ok(m) => match not_appendable(&m) {
                Some(kind) => io::Error::other(format!(
                    "it is {kind}, not a regular file; point the setting at a file"
                )),
                None => e,
            },
            Err(_) => e,
        })?;
    let meta = file.metadata()?;
    if let Some(kind) = not_appendable(&meta) {
        return Err(io::Error::other(format!(
            "it is {kind}, not a regular file; point the setting at a file"
        )));
    }
    if meta.is_file() {
        tighten(&file, &meta, path);
    }
    Ok(file)
}

/// Appends go to a regular file, or to a character device such as `/dev/null` (writes to it
/// cannot block: the file is open non-blocking); never to a FIFO, socket or directory.
fn not_appendable(meta: &std::fs::Metadata) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if meta.file_type().is_char_device() {
        None
    } else {
        not_regular(meta)
    }
}

/// Files already warned about, so each loose file is named once.
static WARNED: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

/// An existing file that group or others may access is set to 0600 when the agent owns it;
/// else one warning names the file and the fix.
pub(crate) fn tighten(file: &File, meta: &std::fs::Metadata, path: &Path) {
    let mode = meta.mode() & 0o777;
    if !meta.is_file() || mode & 0o077 == 0 {
        return;
    }
    if meta.uid() == nix::unistd::geteuid().as_raw()
        && file
            .set_permissions(Permissions::from_mode(mode & 0o700))
            .is_ok()
    {
        tracing::info!(
            "{}: was mode {mode:03o}, readable by others; set to {:03o}",
            path.display(),
            mode & 0o700
        );
        return;
    }
    let mut warned = WARNED.lock().unwrap_or_else(|p| p.into_inner());
    if warned
        .get_or_insert_with(HashSet::new)
        .insert(path.to_path_buf())
    {
        tracing::warn!(
            "{} has mode {mode:03o}: other users may read it, and the agent cannot change it \
             (not its owner). Fix: chmod 600 {} (or chown it to the agent's user)",
            path.display(),
            path.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o777
    }

    #[test]
    fn limits_read_as_sizes() {
        assert_eq!(CONFIG_LIMIT.to_string(), "4 MiB");
        assert_eq!(STATE_FILE_LIMIT.to_string(), "16 KiB");
        let odd = Limit {
            bytes: 1000,
            what: "x",
        };
        assert_eq!(odd.to_string(), "1000 bytes");
    }

    #[test]
    fn reads_regular_files_and_refuses_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "hello").unwrap();
        assert_eq!(
            read_capped(&f, HOST_FILE_LIMIT, Follow::Yes).unwrap(),
            b"hello"
        );

        let e = read_capped(dir.path(), HOST_FILE_LIMIT, Follow::Yes).unwrap_err();
        assert!(
            e.to_string().contains("a directory, not a regular file"),
            "{e}"
        );

        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = read_capped(&fifo, HOST_FILE_LIMIT, Follow::Yes).unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");

        let e = read_capped(Path::new("/dev/zero"), HOST_FILE_LIMIT, Follow::Yes).unwrap_err();
        assert!(e.to_string().contains("character device"), "{e}");

        let missing = read_capped(&dir.path().join("none"), HOST_FILE_LIMIT, Follow::Yes);
        assert!(missing.unwrap_err().is_not_found());
    }

    #[test]
    fn the_limit_is_named_and_exact() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        let limit = Limit {
            bytes: 1024,
            what: "a test file",
        };
        std::fs::write(&f, vec![b'x'; 1024]).unwrap();
        assert_eq!(read_capped(&f, limit, Follow::Yes).unwrap().len(), 1024);
        std::fs::write(&f, vec![b'x'; 1025]).unwrap();
        let e = read_capped(&f, limit, Follow::Yes).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: it is larger than 1 KiB, the limit for a test file",
                f.display()
            )
        );
    }

    #[test]
    fn proc_and_sys_files_of_size_zero_are_read() {
        let meminfo = Path::new("/proc/self/status");
        assert_eq!(std::fs::metadata(meminfo).unwrap().len(), 0);
        let text = read_capped(meminfo, HOST_FILE_LIMIT, Follow::Yes).unwrap();
        assert!(String::from_utf8_lossy(&text).contains("VmHWM"));
        let mountinfo = read_capped(
            Path::new("/proc/self/mountinfo"),
            HOST_FILE_LIMIT,
            Follow::Yes,
        )
        .unwrap();
        assert!(!mountinfo.is_empty());
        let sys = Path::new("/sys/kernel/mm/transparent_hugepage/enabled");
        if sys.exists() {
            assert!(
                !read_capped(sys, HOST_FILE_LIMIT, Follow::Yes)
                    .unwrap()
                    .is_empty()
            );
        }
    }

    #[test]
    fn own_reads_do_not_follow_links_and_tighten_modes() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "x").unwrap();
        let link = dir.path().join("link");
        symlink(&target, &link).unwrap();
        let e = read_own(&link, SECRET_LIMIT).unwrap_err();
        assert!(matches!(e, ReadError::Symlink(_)), "{e}");
        assert!(e.to_string().contains("remove the link"), "{e}");
        assert_eq!(read_capped(&link, SECRET_LIMIT, Follow::Yes).unwrap(), b"x");

        std::fs::set_permissions(&target, Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read_own(&target, SECRET_LIMIT).unwrap(), b"x");
        assert_eq!(mode(&target), 0o600);
    }

    #[test]
    fn atomic_writes_replace_a_link_never_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let file = state.join("file");
        symlink(&victim, &file).unwrap();
        write_atomic(&file, b"new").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(
            !std::fs::symlink_metadata(&file)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(&file).unwrap(), b"new");
        assert_eq!(mode(&file), 0o600);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(&state).unwrap().count(), 1);
    }

    #[test]
    fn create_once_keeps_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/secret");
        assert!(create_once(&p, b"one").unwrap());
        assert!(!create_once(&p, b"two").unwrap());
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        assert_eq!(mode(&p), 0o600);
        assert_eq!(mode(&dir.path().join("sub")), 0o700);
        assert_eq!(
            std::fs::read_dir(dir.path().join("sub")).unwrap().count(),
            1
        );

        // A dangling link at the name counts as taken: its target is never created.
        let victim = dir.path().join("victim");
        let q = dir.path().join("sub/other");
        symlink(&victim, &q).unwrap();
        assert!(!create_once(&q, b"x").unwrap());
        assert!(!victim.exists());
    }

    #[test]
    fn appends_refuse_links_fifos_and_tighten() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let link = dir.path().join("log");
        symlink(&victim, &link).unwrap();
        let e = open_append(&link).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");

        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = open_append(&fifo).unwrap_err();
        assert!(
            e.to_string()
                .contains("a FIFO (named pipe), not a regular file"),
            "{e}"
        );

        let full_mode = mode(Path::new("/dev/full"));
        let e = open_append(Path::new("/dev/full"))
            .and_then(|mut f| f.write_all(b"x"))
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(nix::libc::ENOSPC), "{e}");
        assert_eq!(
            mode(Path::new("/dev/full")),
            full_mode,
            "a device is never chmod-ed"
        );

        let loose = dir.path().join("loose");
        std::fs::write(&loose, "").unwrap();
        std::fs::set_permissions(&loose, Permissions::from_mode(0o666)).unwrap();
        open_append(&loose).unwrap().write_all(b"x").unwrap();
        assert_eq!(mode(&loose), 0o600);
    }
}
