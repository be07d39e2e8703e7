//! What the agent's outgoing HTTP clients share (the sender to PostHog, the probe of Butler):
//! the `User-Agent`, the CA file setting's extra roots, and an error with its causes on one line.

use crate::files;

/// The `User-Agent` header: which client sent the request, as the event's `$lib` and
/// `$lib_version` name it (the package's name and version).
pub(crate) fn user_agent() -> String {
    format!("{}/{}", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
}

/// Why the HTTP client could not be built (a setting, not the network).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(pub String);

/// Reads a PEM bundle of extra root certificates (corporate proxies' CAs).
pub(crate) fn read_ca_file(
    path: &std::path::Path,
) -> Result<Vec<reqwest::Certificate>, SetupError> {
    let fail = |m: String| {
        SetupError(format!(
            "CA file {} (caFile / BUTLER_CA_FILE): {m}; point the setting at a PEM file of CA \
             certificates",
            path.display()
        ))
    };
    let pem = files::read_capped(path, files::CA_FILE_LIMIT, files::Follow::Yes)
        .map_err(|e| fail(format!("cannot read it: {}", e.reason())))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| fail(format!("not a PEM certificate bundle: {e}")))?;
    if certs.is_empty() {
        return Err(fail(
            "holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(certs)
}

/// An error and its sources on one line (reqwest's own message alone is often just
/// "error sending request").
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
