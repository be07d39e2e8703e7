//! Facts that no file below a root gives: interface addresses, CPUID, the Docker engine's ID.
//!
//! Behind one small trait so tests can replace them; [`RealSyscalls`] asks the kernel, the CPU
//! and (only when asked, with a short time limit) a Docker socket.

use std::net::Ipv4Addr;
use std::time::Duration;

/// Addresses of one network interface, as Node's `os.networkInterfaces()` reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Lowercase, colon-separated; `00:00:00:00:00:00` for interfaces without a link address
    /// (Node reports those the same way).
    pub mac: String,
    /// The first IPv4 address, as systeminformation picks it (`ip4`).
    pub ipv4: Option<Ipv4Addr>,
}

/// What CPUID says about a hypervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuidVm {
    /// The hypervisor-present bit (leaf 1, ECX bit 31) is clear.
    NoHypervisor,
    /// The bit is set; the 12-byte vendor signature from leaf 0x40000000.
    Vendor(String),
}

/// Where a Docker engine may be asked for its ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerEndpoint {
    Unix(std::path::PathBuf),
    Tcp(String),
}

impl std::fmt::Display for DockerEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DockerEndpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            // The address may carry credentials or name a host: never shown.
            DockerEndpoint::Tcp(_) => f.write_str("the tcp:// address in DOCKER_HOST"),
        }
    }
}

/// Why the Docker engine gave no ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineIdError {
    /// The socket exists but refuses this user (it lacks the socket's group).
    #[error(
        "{} refuses this user (permission denied): add the socket's group, \
         `docker run --group-add {gid}` (find it with `stat -c %g {}` on the host)",
        socket.display(),
        socket.display()
    )]
    Denied {
        socket: std::path::PathBuf,
        gid: u32,
    },
    /// The endpoint could not be reached.
    #[error("cannot connect to {endpoint}: {cause}")]
    Unreachable {
        endpoint: DockerEndpoint,
        cause: String,
    },
    /// Anything else: not answering, no ID in the answer.
    #[error("{0}")]
    Failed(String),
}

/// Syscall-backed facts. Every method answers "don't know" with `None`/`Err`, never panics.
pub trait Syscalls: Send + Sync {
    /// CPUID's hypervisor answer; `None` on CPUs without CPUID (non-x86).
    fn cpuid(&self) -> Option<CpuidVm>;
    /// The addresses of the named interface; `None` when it has no address at all (Node's
    /// `os.networkInterfaces()` then does not list it either).
    fn interface(&self, name: &str) -> Option<Interface>;
    /// The first non-loopback interface that has an address (systeminformation's fallback when
    /// there is no default route).
    fn first_external_interface(&self) -> Option<String>;
    /// This process's PID (the `container` variable is authoritative only for PID 1).
    fn pid(&self) -> u32;
    /// The Docker engine's ID (`GET /info`, field `ID`). Must give up quickly.
    fn docker_engine_id(&self, endpoint: &DockerEndpoint) -> Result<String, EngineIdError>;
}

/// Time limit for the engine query: the ID is never worth delaying start-up for.
pub(crate) const DOCKER_TIMEOUT: Duration = Duration::from_millis(1500);

/// The real kernel, CPU and Docker socket.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealSyscalls;

impl Syscalls for RealSyscalls {
    fn cpuid(&self) -> Option<CpuidVm> {
        cpuid_hypervisor()
    }

    fn interface(&self, name: &str) -> Option<Interface> {
        let addrs = nix::ifaddrs::getifaddrs().ok()?;
        let mut mac = None;
        let mut ipv4 = None;
        let mut any = false;
        for a in addrs.filter(|a| a.interface_name == name) {
            let Some(addr) = a.address else { continue };
            if let Some(link) = addr.as_link_addr() {
                if let Some(m) = link.addr() {
                    mac = Some(format_mac(&m));
                }
            } else if let Some(v4) = addr.as_sockaddr_in() {
                any = true;
                ipv4 = ipv4.or(Some(v4.ip()));
            } else if addr.as_sockaddr_in6().is_some() {
                any = true;
            }
        }
        any.then(|| Interface {
            mac: mac.unwrap_or_else(|| "00:00:00:00:00:00".into()),
            ipv4,
        })
    }

    fn first_external_interface(&self) -> Option<String> {
        let addrs = nix::ifaddrs::getifaddrs().ok()?;
        for a in addrs {
            let loopback = a
                .flags
                .contains(nix::net::if_::InterfaceFlags::IFF_LOOPBACK);
            let has_ip = a
                .address
                .is_some_and(|s| s.as_sockaddr_in().is_some() || s.as_sockaddr_in6().is_some());
            if !loopback && has_ip {
                return Some(a.interface_name);
            }
        }
        None
    }

    fn pid(&self) -> u32 {
        std::process::id()
    }

    fn docker_engine_id(&self, endpoint: &DockerEndpoint) -> Result<String, EngineIdError> {
        if let DockerEndpoint::Unix(path) = endpoint {
            // bollard's error hides the cause; a plain connect names a permission problem.
            if let Err(e) = std::os::unix::net::UnixStream::connect(path) {
                if e.kind() == std::io::ErrorKind::PermissionDenied {
                    use std::os::unix::fs::MetadataExt;
                    let gid = std::fs::metadata(path).map(|m| m.gid()).unwrap_or(0);
                    return Err(EngineIdError::Denied {
                        socket: path.clone(),
                        gid,
                    });
                }
                return Err(EngineIdError::Unreachable {
                    endpoint: endpoint.clone(),
                    cause: e.to_string(),
                });
            }
        }
        let endpoint = endpoint.clone();
        // A thread of its own with its own small runtime: callers may be sync or already inside
        // a runtime (where a nested `block_on` would panic).
        std::thread::Builder::new()
            .name("docker-engine-id".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| {
                        EngineIdError::Failed(format!("no runtime for the engine query: {e}"))
                    })?;
                rt.block_on(async {
                    tokio::time::timeout(DOCKER_TIMEOUT, engine_id(&endpoint))
                        .await
                        .map_err(|_| {
                            EngineIdError::Failed(format!(
                                "{endpoint} did not answer within {DOCKER_TIMEOUT:?}"
                            ))
                        })?
                })
            })
            .map_err(|e| EngineIdError::Failed(format!("cannot start the engine query: {e}")))?
            .join()
            .map_err(|_| EngineIdError::Failed("the engine query failed unexpectedly".into()))?
    }
}

async fn engine_id(endpoint: &DockerEndpoint) -> Result<String, EngineIdError> {
    use bollard::{API_DEFAULT_VERSION, Docker};
    let secs = DOCKER_TIMEOUT.as_secs().max(1);
    let docker = match endpoint {
        DockerEndpoint::Unix(p) => {
            // bollard takes the path as text: one that is not UTF-8 is not guessed at.
            let p = p.to_str().ok_or_else(|| {
                EngineIdError::Failed(format!("{endpoint}: the socket path is not UTF-8"))
            })?;
            Docker::connect_with_unix(p, secs, API_DEFAULT_VERSION)
        }
        DockerEndpoint::Tcp(a) => {
            Docker::connect_with_http(&format!("http://{a}"), secs, API_DEFAULT_VERSION)
        }
    }
    .map_err(|e| EngineIdError::Unreachable {
        endpoint: endpoint.clone(),
        cause: e.to_string(),
    })?;
    let info = docker
        .info()
        .await
        .map_err(|e| EngineIdError::Failed(format!("{endpoint}: {e}")))?;
    info.id
        .filter(|id| !id.trim().is_empty())
        .ok_or_else(|| EngineIdError::Failed(format!("{endpoint} reported no engine ID")))
}

/// `aa:bb:cc:dd:ee:ff`, lowercase, as Node formats MACs.
pub(crate) fn format_mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
fn cpuid_hypervisor() -> Option<CpuidVm> {
    #[cfg(target_arch = "x86")]
    use std::arch::x86::__cpuid;
    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::__cpuid;

    // CPUID is always available on x86_64 and on every x86 CPU Rust targets; the intrinsic
    // is `unsafe` only on older toolchains.
    #[allow(unused_unsafe)]
    let leaf1 = unsafe { __cpuid(1) };
    if leaf1.ecx & 0x8000_0000 == 0 {
        return Some(CpuidVm::NoHypervisor);
    }
    #[allow(unused_unsafe)]
    let leaf = unsafe { __cpuid(0x4000_0000) };
    let mut sig = Vec::with_capacity(12);
    for r in [leaf.ebx, leaf.ecx, leaf.edx] {
        sig.extend_from_slice(&r.to_le_bytes());
    }
    let text: String = sig
        .iter()
        .take_while(|b| **b != 0)
        .map(|b| *b as char)
        .collect();
    Some(CpuidVm::Vendor(text))
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "x86")))]
fn cpuid_hypervisor() -> Option<CpuidVm> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_lowercase_colon_separated() {
        assert_eq!(
            format_mac(&[0x02, 0x42, 0xAC, 0x11, 0x00, 0x02]),
            "02:42:ac:11:00:02"
        );
    }

    #[test]
    fn loopback_has_zero_mac_and_127_0_0_1() {
        // Every Linux network namespace has a loopback interface, even `--network none`.
        let lo = RealSyscalls
            .interface("lo")
            .expect("this network namespace has no `lo` interface");
        assert_eq!(lo.mac, "00:00:00:00:00:00");
        assert_eq!(lo.ipv4, Some(Ipv4Addr::LOCALHOST));
    }
}

/// The one fake of the syscalls for unit tests, built as each test needs it: no hypervisor, the
/// interfaces it is given (the first is the "first external"), PID 4242 unless set, and a
/// Docker engine that answers as set (none by default). Counts the interface look-ups; clones
/// share the count.
#[cfg(test)]
#[derive(Debug, Default, Clone)]
pub(crate) struct FakeSyscalls {
    interfaces: Vec<(String, Interface)>,
    engine: FakeEngine,
    pid: Option<u32>,
    asked: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

/// How a [`FakeSyscalls`]' Docker engine answers.
#[cfg(test)]
#[derive(Debug, Default, Clone)]
pub(crate) enum FakeEngine {
    /// No engine answers.
    #[default]
    Absent,
    /// The engine gives this ID.
    Id(String),
    /// The real query ([`RealSyscalls`]), e.g. at a socket the test made.
    Real,
    /// The query panics (a bug in the cycle's work).
    Panics,
}

#[cfg(test)]
impl FakeSyscalls {
    /// An interface with a MAC and an IPv4 address.
    pub(crate) fn interface(mut self, name: &str, mac: &str, ipv4: [u8; 4]) -> Self {
        self.interfaces.push((
            name.into(),
            Interface {
                mac: mac.into(),
                ipv4: Some(ipv4.into()),
            },
        ));
        self
    }

    /// A Docker engine that gives this ID.
    pub(crate) fn engine_id(self, id: &str) -> Self {
        self.engine(FakeEngine::Id(id.into()))
    }

    pub(crate) fn engine(mut self, engine: FakeEngine) -> Self {
        self.engine = engine;
        self
    }

    pub(crate) fn pid(mut self, pid: u32) -> Self {
        self.pid = Some(pid);
        self
    }

    /// How many times an interface's addresses were asked for.
    pub(crate) fn asked(&self) -> u32 {
        self.asked.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[cfg(test)]
impl Syscalls for FakeSyscalls {
    fn cpuid(&self) -> Option<CpuidVm> {
        None
    }
    fn interface(&self, name: &str) -> Option<Interface> {
        self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.interfaces
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, i)| i.clone())
    }
    fn first_external_interface(&self) -> Option<String> {
        self.interfaces.first().map(|(n, _)| n.clone())
    }
    fn pid(&self) -> u32 {
        self.pid.unwrap_or(4242)
    }
    fn docker_engine_id(&self, endpoint: &DockerEndpoint) -> Result<String, EngineIdError> {
        match &self.engine {
            FakeEngine::Absent => Err(EngineIdError::Failed("no engine in unit tests".into())),
            FakeEngine::Id(id) => Ok(id.clone()),
            FakeEngine::Real => RealSyscalls.docker_engine_id(endpoint),
            FakeEngine::Panics => panic!("the fake engine query panics"),
        }
    }
}
