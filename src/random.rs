//! The operating system's random source, and the one error for when it gives nothing.

/// The operating system gave no random bytes (no `getrandom` syscall, no `/dev/urandom`).
#[derive(Debug, thiserror::Error)]
#[error("no random source for {what}: {cause}")]
pub struct NoRandom {
    /// What the bytes were for.
    what: &'static str,
    cause: getrandom::Error,
}

/// `N` random bytes for `what` (named in the error).
pub(crate) fn bytes<const N: usize>(what: &'static str) -> Result<[u8; N], NoRandom> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|cause| NoRandom { what, cause })?;
    Ok(out)
}
