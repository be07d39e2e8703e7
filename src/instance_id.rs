//! The anonymous instance ID: 64 lowercase hex digits from a one-way HMAC-SHA256, stable across
//! restarts, different per host and per Qlik Sense server, and never carrying its inputs.
//!
//! Two derivations:
//!
//! - **Butler-compatible**, when the default-route interface is the host's own (not in a
//!   container, or a container on the host network, seen by the interface being backed by a
//!   device): exactly Butler's `initHostInfo()`, so a user moving from Butler keeps the same ID.
//!   Key = the interface's MAC (lowercase, colon-separated); message = MAC + IPv4 +
//!   `Butler.configQRS.host` + system UUID (`si.system().uuid`: `product_uuid` from DMI, lower
//!   case, empty when unreadable without root). With no such interface Butler's fallback: key =
//!   `<total memory in bytes>_`, message = OS serial (machine-id, dbus copy first) or else
//!   total memory or else OS release, + QRS host + system UUID.
//! - **Container**, when the interface is the container's own (its MAC and IP change with
//!   every re-creation, which is why Butler counts each new container as a new instance). First
//!   the host's network through the host's `/proc` and `/sys` (`HOST_PROC`/`HOST_SYS` or
//!   `HOST_ROOT`, see [`network::host_default_interface`]): Butler's algorithm on the host's
//!   default interface, so the container reports exactly Butler's ID of its host. Else an HMAC
//!   keyed by the first available of the host's machine-id (only through
//!   `HOST_ETC`/`HOST_ROOT`), the Docker engine's ID (via a reachable Docker socket, never
//!   required), or a random secret created once in the state directory; message = a fixed
//!   label, the anchor's kind and `Butler.configQRS.host`, so two instances on one host for
//!   different Sense servers differ. With none of these, `own_values`: the host's boot ID
//!   and the container's own identity as the kernel shows it (kept across restarts, new with
//!   re-creation, never shared by two containers), and one warning that names the mount or
//!   volume that makes the ID stable. Anchors that fail for a fixable reason (a state
//!   directory owned by another user, a Docker socket without its group) say how to fix it.
//!
//! Raw inputs stay in this module: [`InstanceId::inputs`] names them and their sources only.

use std::path::Path;
use std::sync::Once;

use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::Sha256;

use crate::files;
use crate::host::syscalls::{DockerEndpoint, EngineIdError};
use crate::host::{self, HostFacts, Roots, Syscalls, machine_id, network};

/// The ID and how it was made (names and sources of the inputs, never their values).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceId {
    pub id: String,
    pub method: String,
    pub inputs: Vec<String>,
}

/// Method names, as `id --explain` prints them.
pub const METHOD_BUTLER: &str = "butler-compatible";
pub(crate) const METHOD_BUTLER_FALLBACK: &str =
    "butler-compatible (no default interface: Butler's fallback)";
pub const METHOD_HOST_NETWORK: &str = "container: the host's network (Butler's ID on this host)";
pub const METHOD_MACHINE_ID: &str = "container: host machine-id";
pub const METHOD_ENGINE_ID: &str = "container: Docker engine ID";
pub const METHOD_STATE_SECRET: &str = "container: state-directory secret";
pub const METHOD_OWN_VALUES: &str =
    "container: own values (kept across restarts; new when the container is re-created)";

/// The file in the state directory that holds the secret.
pub const SECRET_FILE: &str = "instance-secret";
/// Where Docker's socket usually is.
pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// Domain separation for the container derivation: the same machine-id hashed by another
/// program never gives this ID.
const CONTAINER_LABEL: &str = "butler-agent instance id v1";

/// hex(HMAC-SHA256(key, message)).
pub(crate) fn hmac_hex(key: &[u8], message: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// Butler's inputs, as its `initHostInfo()` sees them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ButlerInputs {
    /// MAC and IPv4 (empty when none) of the default interface; `None` when there is none.
    pub interface: Option<(String, String)>,
    pub qrs_host: String,
    /// `si.system().uuid`: empty when DMI's product_uuid is unreadable.
    pub system_uuid: String,
    /// `si.osInfo().serial`: the machine-id, empty when none.
    pub os_serial: String,
    /// `si.mem().total` in bytes; `None` when unknown.
    pub mem_total: Option<u64>,
    /// `si.osInfo().release`.
    pub os_release: String,
}

/// Butler's ID from its inputs (pure).
pub fn butler_id(i: &ButlerInputs) -> String {
    if let Some((mac, ipv4)) = &i.interface {
        let message = format!("{mac}{ipv4}{}{}", i.qrs_host, i.system_uuid);
        return hmac_hex(mac.as_bytes(), message.as_bytes());
    }
    let usable = |s: &str| !s.is_empty() && s != host::UNKNOWN;
    let first = if usable(&i.os_serial) {
        i.os_serial.clone()
    } else if let Some(m) = i.mem_total {
        m.to_string()
    } else if usable(&i.os_release) {
        i.os_release.clone()
    } else {
        String::new()
    };
    let message = format!("{first}{}{}", i.qrs_host, i.system_uuid);
    let salt = match i.mem_total {
        Some(m) => format!("{m}_"),
        None => "fallback_".to_string(),
    };
    hmac_hex(salt.as_bytes(), message.as_bytes())
}

/// What anchors a container's ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anchor {
    HostMachineId(String),
    EngineId(String),
    StateSecret(String),
}

/// The container ID from its anchor (pure).
pub fn container_id(anchor: &Anchor, qrs_host: &str) -> String {
    let (kind, key) = match anchor {
        Anchor::HostMachineId(v) => ("machine-id", v),
        Anchor::EngineId(v) => ("docker-engine-id", v),
        Anchor::StateSecret(v) => ("state-secret", v),
    };
    let message = format!("{CONTAINER_LABEL}\0{kind}\0{qrs_host}");
    hmac_hex(key.as_bytes(), message.as_bytes())
}

/// What the derivation reads from the configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct IdConfig<'a> {
    /// `Butler.configQRS.host` (Butler cannot start without it; absent here means empty).
    pub qrs_host: Option<&'a str>,
    /// `Butler.butlerAgent.stateDir` / `BUTLER_STATE_DIR`.
    pub state_dir: Option<&'a Path>,
}

/// Derives the ID (see the module doc). Never fails.
pub fn derive_with(
    roots: &Roots,
    host: &HostFacts,
    cfg: IdConfig<'_>,
    sys: &dyn Syscalls,
) -> InstanceId {
    let qrs = cfg.qrs_host.unwrap_or("");
    let qrs_input = if cfg.qrs_host.is_some() {
        "Butler.configQRS.host from the config".to_string()
    } else {
        "Butler.configQRS.host (not set: empty)".to_string()
    };
    let iface = network::default_interface(roots, sys);

    let host_network = iface
        .as_ref()
        .filter(|i| network::is_device_backed(&roots.own, &i.name));
    if !host.is_running_in_docker || host_network.is_some() {
        let mut id = butler(roots, host, qrs, qrs_input, iface.as_ref(), sys);
        id.inputs.insert(
            0,
            if host.is_running_in_docker {
                "path: container on the host's network (default interface is backed by a device)"
                    .into()
            } else {
                "path: not in a container".into()
            },
        );
        return id;
    }

    let mut tried = Vec::new();
    match network::host_default_interface(roots) {
        Ok(h) => {
            let (system_uuid, uuid_input) = system_uuid(roots);
            let fib = roots.proc.join("1/net/fib_trie");
            let label = interface_label(&h.name);
            let ipv4_input = if h.ipv4.is_empty() {
                format!(
                    "IPv4 address of the host's default interface {label} (none in {}: empty)",
                    fib.display()
                )
            } else {
                format!(
                    "IPv4 address of the host's default interface {label} (local address in {})",
                    fib.display()
                )
            };
            return InstanceId {
                id: butler_id(&ButlerInputs {
                    interface: Some((h.mac, h.ipv4)),
                    qrs_host: qrs.to_string(),
                    system_uuid,
                    ..ButlerInputs::default()
                }),
                method: METHOD_HOST_NETWORK.into(),
                inputs: vec![
                    format!(
                        "MAC address of the host's default interface {} (default route in {}; \
                         address from {}/class/net/<interface>/address)",
                        interface_label(&h.name),
                        roots.proc.join("1/net/route").display(),
                        roots.sys.display()
                    ),
                    ipv4_input,
                    qrs_input,
                    uuid_input,
                ],
            };
        }
        Err(e) => tried.push(format!("host network: {e}")),
    }
    if roots.etc_origin.is_host_mount() {
        if let Some(m) = machine_id::read(&roots.etc) {
            return InstanceId {
                id: container_id(&Anchor::HostMachineId(m.value), qrs),
                method: METHOD_MACHINE_ID.into(),
                inputs: vec![
                    format!(
                        "machine-id from {} ({})",
                        roots.etc_origin,
                        m.path.display()
                    ),
                    qrs_input,
                ],
            };
        }
        tried.push(format!(
            "no valid machine-id below {} ({})",
            roots.etc.display(),
            roots.etc_origin
        ));
    } else {
        tried.push("host /etc not mounted (HOST_ETC or HOST_ROOT unset)".into());
    }

    match docker_endpoint(roots) {
        Some(ep) => match sys.docker_engine_id(&ep) {
            Ok(engine) => {
                remember_engine_id(&engine);
                return InstanceId {
                    id: container_id(&Anchor::EngineId(engine), qrs),
                    method: METHOD_ENGINE_ID.into(),
                    inputs: vec![format!("Docker engine ID from {ep}"), qrs_input],
                };
            }
            Err(e @ EngineIdError::Denied { .. }) => {
                ENGINE_DENIED_WARNING.call_once(|| {
                    tracing::warn!("the Docker engine's ID cannot anchor the instance ID: {e}");
                });
                tried.push(format!("Docker engine at {ep} did not give its ID: {e}"));
            }
            Err(e) => {
                tracing::debug!("Docker engine ID unavailable: {e}");
                tried.push(format!("Docker engine at {ep} did not give its ID"));
            }
        },
        None if roots.env.docker_host.is_some() => tried.push(
            "DOCKER_HOST has an unsupported scheme (only unix:// and tcp:// are asked)".into(),
        ),
        None => {
            tried.push("no Docker socket (DOCKER_HOST unset, /var/run/docker.sock absent)".into())
        }
    }

    match cfg.state_dir {
        Some(dir) => match state_secret(dir) {
            Ok(secret) => {
                warn_if_anonymous_volume(roots, dir);
                return InstanceId {
                    id: container_id(&Anchor::StateSecret(secret), qrs),
                    method: METHOD_STATE_SECRET.into(),
                    inputs: vec![
                        format!(
                            "secret from the state directory ({})",
                            dir.join(SECRET_FILE).display()
                        ),
                        qrs_input,
                    ],
                };
            }
            Err(e) => {
                let why = match state_dir_owner_problem(dir) {
                    Some(advice) => {
                        STATE_DIR_WARNING.call_once(|| {
                            tracing::warn!("the instance secret cannot be kept: {advice}");
                        });
                        advice
                    }
                    None => e,
                };
                tried.push(format!("state directory {} unusable: {why}", dir.display()))
            }
        },
        None => tried.push(
            "no state directory (BUTLER_STATE_DIR / Butler.butlerAgent.stateDir unset)".into(),
        ),
    }

    warn_unstable_once(&tried);
    own_values(roots, host, qrs, qrs_input, iface.as_ref(), sys, &tried)
}

/// The last resort: no anchor outlives the container. The ID is keyed by the host's boot ID and
/// covers what the kernel shows of this container's identity (its cgroup path, the runtime's
/// per-container directories in mountinfo, its root file system's upper layer): all kept across
/// a restart, all new when the container is re-created, so two containers never share an ID,
/// even where Docker gives the first container on every host the same MAC and IP. Only when no
/// such identity is visible do the container's own MAC and IP (Butler's algorithm) stand in.
/// A host reboot gives a new boot ID, so this ID changes with it: the warning names the fix.
fn own_values(
    roots: &Roots,
    host: &HostFacts,
    qrs: &str,
    qrs_input: String,
    iface: Option<&network::DefaultIface>,
    sys: &dyn Syscalls,
    tried: &[String],
) -> InstanceId {
    let boot_path = roots.own_path("/proc/sys/kernel/random/boot_id");
    let boot_id = host::read_trimmed(&boot_path);
    let identity = host::container::own_identity(roots);
    let mut inputs = vec![format!("path: container; {}", tried.join("; "))];
    inputs.push(match &boot_id {
        Some(_) => format!("HMAC key: the host's boot ID ({})", boot_path.display()),
        None => format!(
            "HMAC key: fixed (boot ID unreadable at {})",
            boot_path.display()
        ),
    });
    let mut message = format!("{CONTAINER_LABEL}\0own-values\0{qrs}");
    for (source, value) in &identity {
        message.push('\0');
        message.push_str(source);
        message.push('=');
        message.push_str(value);
        inputs.push(format!("container identity: {source}"));
    }
    if identity.is_empty() {
        let own = butler(roots, host, qrs, qrs_input.clone(), iface, sys);
        message.push_str("\0butler=");
        message.push_str(&own.id);
        inputs.extend(own.inputs.into_iter().filter(|i| *i != qrs_input));
    }
    inputs.push(qrs_input);
    let key = boot_id.unwrap_or_else(|| "no-boot-id".into());
    InstanceId {
        id: hmac_hex(key.as_bytes(), message.as_bytes()),
        method: METHOD_OWN_VALUES.into(),
        inputs,
    }
}

/// When the state directory belongs to another user and is not writable for this one, says
/// who owns it, who we are, and the three fixes. `None` when ownership is not the problem.
fn state_dir_owner_problem(dir: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    // The directory, or the nearest parent that exists (the one that refused `mkdir`).
    let (at, meta) = dir
        .ancestors()
        .find_map(|a| std::fs::metadata(a).ok().map(|m| (a, m)))?;
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    let mode = meta.mode();
    let writable = uid == 0
        || (meta.uid() == uid && mode & 0o200 != 0)
        || (meta.gid() == gid && mode & 0o020 != 0)
        || mode & 0o002 != 0;
    (!writable).then(|| {
        format!(
            "{} is owned by uid {} (mode {:o}) and this agent runs as uid {uid}, which cannot \
             write there. Run the container as its owner (docker run --user {}), give it to \
             this user (chown {uid} on the host directory or volume), or mount a named volume \
             there (-v butler-agent-state:{}), which takes the image's owner",
            at.display(),
            meta.uid(),
            mode & 0o7777,
            meta.uid(),
            dir.display()
        )
    })
}

/// `si.system().uuid` (DMI product_uuid, lower case; empty when unreadable) and its source.
fn system_uuid(roots: &Roots) -> (String, String) {
    let uuid_path = roots.sys.join("class/dmi/id/product_uuid");
    let system_uuid = host::read_trimmed(&uuid_path)
        .map(|u| clean_default(&u.to_ascii_lowercase()))
        .unwrap_or_default();
    let uuid_input = if system_uuid.is_empty() {
        format!(
            "system UUID ({} unreadable or a placeholder: empty, as in Butler without root)",
            uuid_path.display()
        )
    } else {
        format!("system UUID from {}", uuid_path.display())
    };
    (system_uuid, uuid_input)
}

fn butler(
    roots: &Roots,
    host: &HostFacts,
    qrs: &str,
    qrs_input: String,
    iface: Option<&network::DefaultIface>,
    sys: &dyn Syscalls,
) -> InstanceId {
    let (system_uuid, uuid_input) = system_uuid(roots);
    let addrs = iface.and_then(|i| sys.interface(&i.name).map(|a| (i, a)));
    if let Some((i, a)) = addrs {
        let ipv4 = a.ipv4.map(|ip| ip.to_string()).unwrap_or_default();
        let label = interface_label(&i.name);
        let inputs = vec![
            format!(
                "MAC address of the default interface {label} ({}; address from the kernel)",
                i.rule
            ),
            if ipv4.is_empty() {
                format!("IPv4 address of the default interface {label} (none: empty)")
            } else {
                format!("IPv4 address of the default interface {label} (from the kernel)")
            },
            qrs_input,
            uuid_input,
        ];
        let inputs_for_id = ButlerInputs {
            interface: Some((a.mac, ipv4)),
            qrs_host: qrs.to_string(),
            system_uuid,
            ..ButlerInputs::default()
        };
        return InstanceId {
            id: butler_id(&inputs_for_id),
            method: METHOD_BUTLER.into(),
            inputs,
        };
    }

    let serial = machine_id::read_dbus_first(&roots.etc);
    let meminfo = roots.proc.join("meminfo");
    let mem_total = host::read_text(&meminfo).and_then(|t| mem_total_bytes(&t));
    let mut inputs = Vec::new();
    if let Some(m) = &serial {
        inputs.push(format!("OS serial (machine-id from {})", m.path.display()));
    } else if mem_total.is_some() {
        inputs.push(format!("total memory from {}", meminfo.display()));
    } else if host.release != host::UNKNOWN {
        inputs.push("OS release (from the release files)".into());
    }
    inputs.push(qrs_input);
    inputs.push(uuid_input);
    inputs.push(match mem_total {
        Some(_) => format!("HMAC key: total memory from {}", meminfo.display()),
        None => "HMAC key: \"fallback_\" (total memory unknown)".into(),
    });
    InstanceId {
        id: butler_id(&ButlerInputs {
            interface: None,
            qrs_host: qrs.to_string(),
            system_uuid,
            os_serial: serial.map(|m| m.value).unwrap_or_default(),
            mem_total,
            os_release: host.release.clone(),
        }),
        method: METHOD_BUTLER_FALLBACK.into(),
        inputs,
    }
}

/// The interface's name as `id --explain` shows it (`eth0`): an interface is named, its
/// addresses never. A name that could carry an address or an identifier is not shown: one
/// with a run of 8 or more hex digits (systemd's MAC-based `enx0123456789ab`, Docker's
/// `br-<network ID>`), one that looks like an IPv4 address part (digits around a dot, beyond
/// a VLAN suffix such as `eth0.100`), or one with characters outside `[A-Za-z0-9._@-]`.
pub(crate) fn interface_label(name: &str) -> String {
    let plain = !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b));
    let longest_hex = name
        .split(|c: char| !c.is_ascii_hexdigit())
        .map(str::len)
        .max()
        .unwrap_or(0);
    let dotted_numbers = name
        .split('.')
        .filter(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
        .count();
    if plain && longest_hex < 8 && dotted_numbers < 2 {
        name.to_string()
    } else {
        "<name not shown: it could carry an address>".to_string()
    }
}

/// systeminformation's `cleanDefaults`: firmware placeholders count as empty.
fn clean_default(s: &str) -> String {
    let l = s.to_ascii_lowercase();
    if l.contains("o.e.m.") || l.contains("default string") || l == "default" {
        String::new()
    } else {
        s.to_string()
    }
}

/// `MemTotal` from `/proc/meminfo`, in bytes (as Node's `os.totalmem()`): `MemTotal:
/// 24684040 kB`; another unit or a number that is not one is no answer. The one parser of this
/// fact: the instance ID and the start-up banner both use it.
pub(crate) fn mem_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut parts = line["MemTotal:".len()..].split_whitespace();
    let kb: u64 = parts.next()?.parse().ok()?;
    match (parts.next(), parts.next()) {
        (Some("kB"), None) => kb.checked_mul(1024),
        _ => None,
    }
}

/// `DOCKER_HOST` (`unix://` or `tcp://`), else the default socket when it exists.
fn docker_endpoint(roots: &Roots) -> Option<DockerEndpoint> {
    if let Some(raw) = &roots.env.docker_host {
        use std::os::unix::ffi::OsStrExt;
        if let Some(p) = raw.as_bytes().strip_prefix(b"unix://") {
            let p = std::ffi::OsStr::from_bytes(p);
            return Some(DockerEndpoint::Unix(host::below(&roots.own, p)));
        }
        // An address is text; one that is not UTF-8 is no address.
        let Some(h) = raw.to_str() else {
            tracing::debug!("DOCKER_HOST is not a unix:// path and not UTF-8; ignored");
            return None;
        };
        if let Some(a) = h.strip_prefix("tcp://") {
            return Some(DockerEndpoint::Tcp(a.trim_end_matches('/').to_string()));
        }
        // The value may carry credentials or a host name: only its scheme is logged.
        let scheme = h.split_once("://").map_or("none", |(s, _)| s);
        tracing::debug!(
            "DOCKER_HOST has an unsupported scheme `{scheme}` (not unix or tcp); ignored"
        );
        return None;
    }
    let sock = roots.own_path(DOCKER_SOCKET);
    host::exists(&sock).then_some(DockerEndpoint::Unix(sock))
}

/// Reads the secret, or creates it once: 32 random bytes, hex, mode 0600. Creation links a
/// private temporary file to the final name, which fails when the name exists; winner and
/// losers alike then read the file back, so agents racing on one directory agree
/// ([`files::create_once`]).
pub(crate) fn state_secret(dir: &Path) -> Result<String, String> {
    let path = dir.join(SECRET_FILE);
    if let Some(s) = read_secret(&path)? {
        return Ok(s);
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no random source: {e}"))?;
    let candidate = format!("{}\n", hex::encode(bytes));
    files::create_once(&path, candidate.as_bytes())
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    read_secret(&path)?.ok_or_else(|| format!("{} vanished after creation", path.display()))
}

fn read_secret(path: &Path) -> Result<Option<String>, String> {
    match files::read_own(path, files::SECRET_LIMIT) {
        Ok(bytes) => {
            let s = String::from_utf8_lossy(&bytes);
            let s = s.trim();
            if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(Some(s.to_ascii_lowercase()))
            } else {
                Err(format!(
                    "{} is not 64 hex digits; remove it to have a new secret made",
                    path.display()
                ))
            }
        }
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(format!("cannot read {e}")),
    }
}

/// The Docker engine IDs this process has read (an engine's ID rarely changes; a few at most
/// are kept): the privacy guard looks for them in every event.
static ENGINE_IDS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
const ENGINE_IDS_KEPT: usize = 8;

pub(crate) fn remember_engine_id(id: &str) {
    let mut ids = ENGINE_IDS.lock().unwrap_or_else(|p| p.into_inner());
    if !ids.iter().any(|i| i == id) {
        if ids.len() == ENGINE_IDS_KEPT {
            ids.remove(0);
        }
        ids.push(id.to_string());
    }
}

/// The Docker engine IDs this process has read, for the privacy guard.
pub fn engine_ids_seen() -> Vec<String> {
    ENGINE_IDS.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

static UNSTABLE_WARNING: Once = Once::new();
static ENGINE_DENIED_WARNING: Once = Once::new();
static STATE_DIR_WARNING: Once = Once::new();
static ANONYMOUS_VOLUME_WARNING: Once = Once::new();

/// A state directory on an anonymous Docker volume (a plain `docker run` of the image, whose
/// `VOLUME /data` then gets a fresh volume per container) keeps the secret only as long as the
/// container: say so once, with the fix.
fn warn_if_anonymous_volume(roots: &Roots, dir: &Path) {
    let Some(mountinfo) = crate::host::read_text(&roots.own_path("/proc/self/mountinfo")) else {
        return;
    };
    let point = dir.to_string_lossy();
    if crate::host::container::is_anonymous_volume(&mountinfo, &point) {
        ANONYMOUS_VOLUME_WARNING.call_once(|| {
            tracing::warn!(
                "the state directory {point} is an anonymous Docker volume, new for every new \
                 container, so the instance ID will change when this container is re-created. \
                 Mount a named volume there (-v butler-agent-state:{point}) or mount the host's \
                 /etc (-v /etc:/host/etc:ro -e HOST_ETC=/host/etc)"
            );
        });
    }
}

fn warn_unstable_once(tried: &[String]) {
    UNSTABLE_WARNING.call_once(|| {
        tracing::warn!(
            "the instance ID may change whenever this container is re-created ({}). To make it \
             stable, mount the host's /proc and /sys read-only (-v /proc:/host/proc:ro \
             -v /sys:/host/sys:ro -e HOST_PROC=/host/proc -e HOST_SYS=/host/sys: Butler's own \
             ID of the host), or a named volume at the state directory (-v \
             butler-agent-state:/data; the image sets BUTLER_STATE_DIR=/data), or the host's \
             /etc (-v /etc:/host/etc:ro -e HOST_ETC=/host/etc)",
            tried.join("; ")
        );
    });
}

#[cfg(test)]
mod interface_label_tests {
    use super::interface_label;

    #[test]
    fn common_names_are_shown() {
        for name in [
            "eth0",
            "ens3",
            "enp0s31f6",
            "wlp2s0",
            "eth0.100",
            "bond0",
            "docker0",
            "vlan@eth0",
        ] {
            assert_eq!(interface_label(name), name);
        }
    }

    #[test]
    fn names_that_could_carry_an_address_are_not() {
        for name in [
            "enx0123456789ab",
            "enxa0cec8d1e2f3",
            "br-3f2a1b4c5d6e",
            "10.1.2.3",
            "br10.1.2",
            "eth\u{1b}[31m",
            "name with space",
            "",
            "abcdefghijklmnopq",
        ] {
            let shown = interface_label(name);
            assert!(
                !shown.contains(name) || name.is_empty(),
                "{name:?}: {shown}"
            );
            assert!(shown.contains("not shown"), "{name:?}: {shown}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total() {
        assert_eq!(
            mem_total_bytes("MemTotal:       16318412 kB\nMemFree: 1 kB\n"),
            Some(16318412 * 1024)
        );
        assert_eq!(mem_total_bytes("MemFree: 1 kB\n"), None);
        assert_eq!(
            mem_total_bytes("MemTotal:       24684040 kB\nMemFree:  1 kB\n"),
            Some(24684040 * 1024)
        );
        assert_eq!(mem_total_bytes("MemTotal: lots kB\n"), None);
        assert_eq!(mem_total_bytes("MemTotal: 1 MB\n"), None);
    }

    #[test]
    fn placeholders_are_empty() {
        assert_eq!(clean_default("default string"), "");
        assert_eq!(
            clean_default("4c4c4544-004a-3510-804b-b4c04f4e3432"),
            "4c4c4544-004a-3510-804b-b4c04f4e3432"
        );
    }

    #[test]
    fn racing_threads_agree_on_one_secret() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().expect("a temp dir");
            let state = dir.path().join("state");
            let barrier = std::sync::Barrier::new(12);
            let secrets: Vec<String> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..12)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            state_secret(&state)
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("no panic").expect("a secret"))
                    .collect()
            });
            let on_disk = std::fs::read_to_string(state.join(SECRET_FILE)).expect("written");
            assert!(secrets.iter().all(|s| s == on_disk.trim()), "{secrets:?}");
            // Losers leave no temporary file behind.
            assert_eq!(std::fs::read_dir(&state).expect("exists").count(), 1);
        }
    }

    #[test]
    fn state_secret_is_made_once() {
        let dir = std::env::temp_dir().join(format!("butler-agent-secret-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = state_secret(&dir).expect("a temp dir is writable");
        let b = state_secret(&dir).expect("the secret exists now");
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        std::fs::write(dir.join(SECRET_FILE), "garbage").expect("a temp dir is writable");
        assert!(
            state_secret(&dir)
                .unwrap_err()
                .contains("not 64 hex digits")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
