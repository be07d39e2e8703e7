//! What the agent knows about the machine it runs on.
//!
//! Every file-based fact is read below one root path ([`Roots`]), so each detection rule is
//! tested on fixture trees; facts from syscalls sit behind [`Syscalls`].
//!
//! This is the foundation's first version: OS facts from os-release and container detection
//! from `/.dockerenv` only. The host issue replaces `detect` with the full rule set.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Where host files are read from. `own` is the agent's own view (container detection);
/// `etc`, `proc`, `sys` may point at the host's files mounted into a container.
#[derive(Debug, Clone)]
pub struct Roots {
    pub own: PathBuf,
    pub etc: PathBuf,
    pub proc: PathBuf,
    pub sys: PathBuf,
}

impl Roots {
    /// Everything below one root: `/` in production, a fixture tree in tests.
    pub fn at(root: impl AsRef<Path>) -> Self {
        let root = root.as_ref();
        Roots {
            own: root.to_path_buf(),
            etc: root.join("etc"),
            proc: root.join("proc"),
            sys: root.join("sys"),
        }
    }
}

/// The facts reported in the event and by `butler-agent host`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HostFacts {
    pub platform: String,
    pub arch: String,
    pub distro: String,
    pub codename: String,
    pub release: String,
    pub kernel: String,
    #[serde(rename = "virtual")]
    pub is_virtual: bool,
    pub hypervisor: Option<String>,
    pub is_running_in_docker: bool,
    pub container_runtime: Option<String>,
    pub kubernetes: bool,
    pub wsl: bool,
    /// For each key above, the rule that decided it.
    pub rules: BTreeMap<String, String>,
}

const UNKNOWN: &str = "unknown";

/// First version: enough for the payload to be complete and honest.
pub fn detect(roots: &Roots) -> HostFacts {
    let os_release = std::fs::read_to_string(roots.etc.join("os-release")).unwrap_or_default();
    let field = |key: &str| {
        os_release.lines().find_map(|l| {
            l.strip_prefix(key)
                .and_then(|r| r.strip_prefix('='))
                .map(|v| v.trim_matches('"').to_string())
        })
    };
    let docker = roots.own.join(".dockerenv").exists();
    HostFacts {
        platform: node_platform().to_string(),
        arch: node_arch().to_string(),
        distro: field("NAME").unwrap_or_else(|| UNKNOWN.into()),
        codename: field("VERSION_CODENAME").unwrap_or_else(|| UNKNOWN.into()),
        release: field("VERSION_ID").unwrap_or_else(|| UNKNOWN.into()),
        kernel: std::fs::read_to_string(roots.proc.join("sys/kernel/osrelease"))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| UNKNOWN.into()),
        is_virtual: false,
        hypervisor: None,
        is_running_in_docker: docker,
        container_runtime: docker.then(|| "docker".to_string()),
        kubernetes: false,
        wsl: false,
        rules: BTreeMap::new(),
    }
}

/// Node.js's name for the platform (`process.platform`).
pub fn node_platform() -> &'static str {
    match std::env::consts::OS {
        "macos" => "darwin",
        "windows" => "win32",
        other => other,
    }
}

/// Node.js's name for the CPU architecture (`process.arch`).
pub fn node_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x64",
        "aarch64" => "arm64",
        "x86" => "ia32",
        other => other,
    }
}
