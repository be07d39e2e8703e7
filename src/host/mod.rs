//! What the agent knows about the machine it runs on: OS, VM, container.
//!
//! Every file-based fact is read below a root ([`Roots`]): `/` in production, a fixture tree in
//! tests, and the host's own files when they are mounted into a container (`HOST_ROOT`, or
//! `HOST_ETC`/`HOST_PROC`/`HOST_SYS` individually, the gopsutil/Telegraf convention). Container
//! detection always reads the agent's own view (`Roots::own`): the question is where *this
//! process* runs, not what the host looks like. Facts that only a syscall gives (interface
//! addresses, CPUID, the Docker engine's ID) sit behind [`Syscalls`], so tests replace them.
//!
//! Detection never fails: a file that cannot be read is "unknown" (logged at debug level), and
//! each fact carries the rule that decided it, so `butler-agent host` can say why.
//!
//! One file per fact: [`os`] (os-release, as systeminformation's `osInfo()` reads it), [`virt`]
//! (VM, after systemd's `detect_vm()`), [`container`] (after systemd's `detect_container()`, plus
//! Kubernetes and WSL), [`network`] (default route and its interface), [`machine_id`].

pub mod container;
pub(crate) mod identifying;
pub(crate) mod machine_id;
pub mod network;
pub mod os;
pub mod syscalls;
pub mod virt;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use crate::config::{ConfigError, Env};
pub use syscalls::{CpuidVm, Interface};
pub use syscalls::{RealSyscalls, Syscalls};

/// The host-mount variables (gopsutil/Telegraf convention).
pub(crate) const HOST_ROOT: &str = "HOST_ROOT";
pub(crate) const HOST_ETC: &str = "HOST_ETC";
pub(crate) const HOST_PROC: &str = "HOST_PROC";
pub(crate) const HOST_SYS: &str = "HOST_SYS";
/// Overrides container detection: a runtime name (`docker`, `podman`, ...), or `none`/empty for
/// "not in a container". For runtimes no rule recognises, or to correct a wrong guess.
pub(crate) const CONTAINER_OVERRIDE: &str = "BUTLER_CONTAINER_RUNTIME";
/// Set to `1`/`true` to skip the CPUID check (it is also skipped whenever `--root` is not `/`,
/// because CPUID describes the real CPU, not a fixture tree).
pub(crate) const NO_CPUID: &str = "BUTLER_HOST_NO_CPUID";

/// Where one host root came from; named in `host` and `id --explain` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Below `--root` (default `/`): the agent's own view.
    Root,
    /// Below `$HOST_ROOT`.
    HostRoot,
    /// From the individual variable (`HOST_ETC`, `HOST_PROC`, `HOST_SYS`).
    HostVar(&'static str),
}

impl Origin {
    /// True when the files are the host's, mounted into the agent's view.
    pub(crate) fn is_host_mount(&self) -> bool {
        !matches!(self, Origin::Root)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Root => f.write_str("the agent's own view"),
            Origin::HostRoot => f.write_str(HOST_ROOT),
            Origin::HostVar(v) => f.write_str(v),
        }
    }
}

/// The environment facts detection needs, captured once so detection itself reads no
/// process state (and tests pass exactly what a case needs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HostEnv {
    /// `BUTLER_CONTAINER_RUNTIME`.
    pub(crate) container_override: Option<String>,
    /// The agent's own `container` variable (authoritative only when the agent is PID 1).
    pub(crate) container_var: Option<String>,
    /// `KUBERNETES_SERVICE_HOST` is set (kubelet injects it into every pod).
    pub(crate) kubernetes_service_host: bool,
    /// `DOCKER_HOST`, for the engine ID: bytes, as a `unix://` path need not be UTF-8.
    pub(crate) docker_host: Option<std::ffi::OsString>,
    /// Whether to ask the CPU (CPUID) about a hypervisor.
    pub(crate) cpuid: bool,
    /// `HOSTNAME` (the privacy guard looks for it).
    pub(crate) hostname: Option<String>,
}

/// Where host files are read from. `own` is the agent's own view (container detection);
/// `etc`, `proc`, `sys` may point at the host's files mounted into a container.
#[derive(Debug, Clone)]
pub struct Roots {
    pub(crate) own: PathBuf,
    pub(crate) etc: PathBuf,
    pub(crate) proc: PathBuf,
    pub(crate) sys: PathBuf,
    pub(crate) etc_origin: Origin,
    pub(crate) proc_origin: Origin,
    pub(crate) sys_origin: Origin,
    pub(crate) env: HostEnv,
}

impl Roots {
    /// Everything below one root, no host mounts, no environment: `/` in production, a fixture
    /// tree in tests. CPUID is used only for the real root.
    pub fn at(root: impl AsRef<Path>) -> Self {
        let root = root.as_ref();
        Roots {
            own: root.to_path_buf(),
            etc: root.join("etc"),
            proc: root.join("proc"),
            sys: root.join("sys"),
            etc_origin: Origin::Root,
            proc_origin: Origin::Root,
            sys_origin: Origin::Root,
            env: HostEnv {
                cpuid: root == Path::new("/"),
                ..HostEnv::default()
            },
        }
    }

    /// `--root DIR` plus the environment: `HOST_ETC`/`HOST_PROC`/`HOST_SYS` win over
    /// `HOST_ROOT`, which wins over `DIR`. Host paths are taken below `DIR`, so with the default
    /// `/` they mean what they say, and a fixture tree can hold a mounted "host" too.
    ///
    /// Paths are taken as bytes (they need not be UTF-8); the agent's own text settings
    /// (`BUTLER_CONTAINER_RUNTIME`, `BUTLER_HOST_NO_CPUID`) that are not valid UTF-8 are an
    /// error naming the variable.
    pub(crate) fn from_env(root: impl AsRef<Path>, env: &dyn Env) -> Result<Self, ConfigError> {
        let mut roots = Roots::at(root.as_ref());
        let set = |k: &str| env.var_os(k).filter(|v| !crate::config::env::is_blank(v));
        let host_root = set(HOST_ROOT).map(|p| below(&roots.own, &p));
        let pick = |var: &'static str, sub: &str| match (set(var), &host_root) {
            (Some(p), _) => Some((below(&roots.own, &p), Origin::HostVar(var))),
            (None, Some(h)) => Some((h.join(sub), Origin::HostRoot)),
            (None, None) => None,
        };
        if let Some((p, o)) = pick(HOST_ETC, "etc") {
            (roots.etc, roots.etc_origin) = (p, o);
        }
        if let Some((p, o)) = pick(HOST_PROC, "proc") {
            (roots.proc, roots.proc_origin) = (p, o);
        }
        if let Some((p, o)) = pick(HOST_SYS, "sys") {
            (roots.sys, roots.sys_origin) = (p, o);
        }
        let no_cpuid = env.var(NO_CPUID)?.filter(|v| !v.trim().is_empty());
        roots.env = HostEnv {
            container_override: env.var(CONTAINER_OVERRIDE)?,
            // The container manager's variable, not a setting of the agent's: read as well as
            // it can be.
            container_var: env
                .var_os("container")
                .map(|v| v.to_string_lossy().into_owned()),
            kubernetes_service_host: set("KUBERNETES_SERVICE_HOST").is_some(),
            docker_host: set("DOCKER_HOST"),
            // Not a setting of the agent's either: the guard looks for it however it is spelt.
            hostname: env
                .var_os("HOSTNAME")
                .map(|v| v.to_string_lossy().into_owned()),
            cpuid: roots.env.cpuid
                && no_cpuid.is_none_or(|v| crate::config::settings::parse_bool(&v) != Ok(true)),
        };
        Ok(roots)
    }

    /// A path in the agent's own view, e.g. `own_path("/run/.containerenv")`.
    pub(crate) fn own_path(&self, abs: &str) -> PathBuf {
        below(&self.own, abs)
    }
}

/// `abs` taken below `root` (`/x/y` under `/fix` is `/fix/x/y`); `..` cannot climb out.
pub(crate) fn below(root: &Path, abs: impl AsRef<Path>) -> PathBuf {
    let mut out = root.to_path_buf();
    for c in abs.as_ref().components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                if out != root {
                    out.pop();
                }
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// The facts reported in the event and by `butler-agent host`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HostFacts {
    pub(crate) platform: String,
    pub(crate) arch: String,
    pub distro: String,
    pub(crate) codename: String,
    pub(crate) release: String,
    pub(crate) kernel: String,
    #[serde(rename = "virtual")]
    pub(crate) is_virtual: bool,
    pub(crate) hypervisor: Option<String>,
    pub is_running_in_docker: bool,
    pub container_runtime: Option<String>,
    pub(crate) kubernetes: bool,
    pub(crate) wsl: bool,
    /// For each key above, the rule that decided it.
    pub(crate) rules: BTreeMap<String, String>,
}

pub(crate) const UNKNOWN: &str = "unknown";

/// Detects everything with the given syscalls (tests pass fakes). Never fails.
pub(crate) fn detect_with(roots: &Roots, sys: &dyn Syscalls) -> HostFacts {
    let mut rules = BTreeMap::new();
    let mut rule = |k: &str, r: String| {
        rules.insert(k.to_string(), r);
    };

    let os = os::detect(roots);
    rule("distro", os.distro_rule);
    rule("codename", os.codename_rule);
    rule("release", os.release_rule);

    let kernel_path = roots.proc.join("sys/kernel/osrelease");
    let kernel = read_trimmed(&kernel_path);
    rule(
        "kernel",
        match &kernel {
            Some(_) => format!("{} ({})", kernel_path.display(), roots.proc_origin),
            None => format!("{} unreadable", kernel_path.display()),
        },
    );
    let kernel = kernel.unwrap_or_else(|| UNKNOWN.to_string());

    let wsl = container::is_wsl(&kernel);
    rule(
        "wsl",
        if wsl {
            "kernel release contains \"microsoft\" or \"WSL\"".to_string()
        } else {
            "kernel release names neither Microsoft nor WSL".to_string()
        },
    );

    let c = container::detect(roots, sys);
    rule("isRunningInDocker", c.runtime_rule.clone());
    rule("containerRuntime", c.runtime_rule);
    rule("kubernetes", c.kubernetes_rule);

    let mut vm = virt::detect(roots, sys);
    if vm.hypervisor.is_none() && wsl {
        vm = virt::Vm {
            hypervisor: Some("microsoft".into()),
            rule: "WSL kernel: WSL2 runs in a Hyper-V utility VM".into(),
        };
    }
    rule("virtual", vm.rule.clone());
    rule("hypervisor", vm.rule);

    rule("platform", "Node.js process.platform for this build".into());
    rule("arch", "Node.js process.arch for this build".into());

    HostFacts {
        platform: node_platform().to_string(),
        arch: node_arch().to_string(),
        distro: os.distro,
        codename: os.codename,
        release: os.release,
        kernel,
        is_virtual: vm.hypervisor.is_some(),
        hypervisor: vm.hypervisor,
        is_running_in_docker: c.runtime.is_some(),
        container_runtime: c.runtime,
        kubernetes: c.kubernetes,
        wsl,
        rules,
    }
}

/// The keys of `host --json` in display order (rules excluded).
pub(crate) const FACT_KEYS: &[&str] = &[
    "platform",
    "arch",
    "distro",
    "codename",
    "release",
    "kernel",
    "virtual",
    "hypervisor",
    "isRunningInDocker",
    "containerRuntime",
    "kubernetes",
    "wsl",
];

/// A readable table: fact, value, and the rule that decided it.
pub(crate) fn render_table(facts: &HostFacts) -> String {
    let v = serde_json::to_value(facts).expect("host facts are plain data");
    let mut out = String::new();
    for key in FACT_KEYS {
        let value = match &v[key] {
            serde_json::Value::String(s) if s.is_empty() => "\"\"".to_string(),
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => "-".to_string(),
            other => other.to_string(),
        };
        let rule = facts.rules.get(*key).map(String::as_str).unwrap_or("");
        out.push_str(&format!("{key:<18} {value:<24} {rule}\n"));
    }
    out
}

/// Reads a small text file; `None` (with a debug log) when absent or unreadable.
pub(crate) fn read_text(path: &Path) -> Option<String> {
    read_bytes(path).map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// The file's bytes, at most [`crate::files::HOST_FILE_LIMIT`] (fact files are small: mountinfo
/// on a busy Kubernetes node is a few hundred KB) ([`crate::files::read_capped`]: regular files
/// only, never blocking); `None` (with a debug log) when unreadable.
pub(crate) fn read_bytes(path: &Path) -> Option<Vec<u8>> {
    use crate::files::{self, Follow};
    match files::read_capped(path, files::HOST_FILE_LIMIT, Follow::Yes) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            tracing::debug!("host fact source not readable: {e}");
            None
        }
    }
}

/// The file's first line, trimmed; `None` when absent, unreadable or empty.
pub(crate) fn read_trimmed(path: &Path) -> Option<String> {
    read_text(path)
        .map(|s| s.lines().next().unwrap_or("").trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Whether the path exists (a permission error counts as "no", logged).
pub(crate) fn exists(path: &Path) -> bool {
    match std::fs::symlink_metadata(path) {
        Ok(_) => true,
        Err(e) => {
            log_unreadable(path, &e);
            false
        }
    }
}

fn log_unreadable(path: &Path, e: &io::Error) {
    tracing::debug!(path = %path.display(), error = %e, "host fact source not readable");
}

/// Node.js's name for the platform (`process.platform`).
pub(crate) fn node_platform() -> &'static str {
    match std::env::consts::OS {
        "macos" => "darwin",
        "windows" => "win32",
        other => other,
    }
}

/// Node.js's name for the CPU architecture (`process.arch`).
pub(crate) fn node_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x64",
        "aarch64" => "arm64",
        "x86" => "ia32",
        other => other,
    }
}

#[cfg(test)]
mod tests;
