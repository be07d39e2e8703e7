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

use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::Sha256;

use crate::files;
use crate::host::identifying::{BOOT_ID, Identifying};
use crate::host::syscalls::{DockerEndpoint, EngineIdError};
use crate::host::{self, HostFacts, Roots, Syscalls, network};
use crate::random::{self, NoRandom};

/// The ID and how it was made (names and sources of the inputs, never their values).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct InstanceId {
    pub id: String,
    pub method: String,
    pub inputs: Vec<String>,
}

/// Method names, as `id --explain` prints them.
pub(crate) const METHOD_BUTLER: &str = "butler-compatible";
pub(crate) const METHOD_BUTLER_FALLBACK: &str =
    "butler-compatible (no default interface: Butler's fallback)";
pub(crate) const METHOD_HOST_NETWORK: &str =
    "container: the host's network (Butler's ID on this host)";
pub(crate) const METHOD_MACHINE_ID: &str = "container: host machine-id";
pub(crate) const METHOD_ENGINE_ID: &str = "container: Docker engine ID";
pub(crate) const METHOD_STATE_SECRET: &str = "container: state-directory secret";
pub(crate) const METHOD_OWN_VALUES: &str =
    "container: own values (kept across restarts; new when the container is re-created)";

/// The file in the state directory that holds the secret.
pub(crate) const SECRET_FILE: &str = "instance-secret";
/// Where Docker's socket usually is.
pub(crate) const DOCKER_SOCKET: &str = "/var/run/docker.sock";
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
pub(crate) struct ButlerInputs {
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
pub(crate) fn butler_id(i: &ButlerInputs) -> String {
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
pub(crate) enum Anchor {
    HostMachineId(String),
    EngineId(String),
    StateSecret(String),
}

/// The container ID from its anchor (pure).
pub(crate) fn container_id(anchor: &Anchor, qrs_host: &str) -> String {
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
pub(crate) struct IdConfig<'a> {
    /// `Butler.configQRS.host` (Butler cannot start without it; absent here means empty).
    pub qrs_host: Option<&'a str>,
    /// `Butler.butlerAgent.stateDir` / `BUTLER_STATE_DIR`.
    pub state_dir: Option<&'a Path>,
}

/// A derivation: the ID, what it learnt beyond the host's files (for the privacy guard), and
/// what the user should be told. The caller logs the warnings, once.
#[derive(Debug, Clone)]
pub(crate) struct Derivation {
    pub id: InstanceId,
    /// The Docker engine's ID, when the engine was asked and answered.
    pub(crate) engine_id: Option<String>,
    /// The state directory's secret, when the directory holds one (read or made).
    pub(crate) secret: Option<String>,
    pub warnings: Vec<Warning>,
}

/// Something about the ID the user can fix, said once by whoever logs it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Warning {
    /// No anchor outlives the container: what was tried.
    Unstable(Vec<String>),
    /// The Docker socket refuses this user: how to fix it.
    EngineDenied(String),
    /// The state directory belongs to another user: how to fix it.
    StateDirOwner(String),
    /// The state directory is an anonymous Docker volume (its mount point).
    AnonymousVolume(String),
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Warning::Unstable(tried) => write!(
                f,
                "the instance ID may change whenever this container is re-created ({}). To \
                 make it stable, mount the host's /proc and /sys read-only (-v \
                 /proc:/host/proc:ro -v /sys:/host/sys:ro -e HOST_PROC=/host/proc -e \
                 HOST_SYS=/host/sys: Butler's own ID of the host), or a named volume at the \
                 state directory (-v butler-agent-state:/data; the image sets \
                 BUTLER_STATE_DIR=/data), or the host's /etc (-v /etc:/host/etc:ro -e \
                 HOST_ETC=/host/etc)",
                tried.join("; ")
            ),
            Warning::EngineDenied(e) => {
                write!(
                    f,
                    "the Docker engine's ID cannot anchor the instance ID: {e}"
                )
            }
            Warning::StateDirOwner(advice) => {
                write!(f, "the instance secret cannot be kept: {advice}")
            }
            Warning::AnonymousVolume(point) => write!(
                f,
                "the state directory {point} is an anonymous Docker volume, new for every new \
                 container, so the instance ID will change when this container is re-created. \
                 Mount a named volume there (-v butler-agent-state:{point}) or mount the host's \
                 /etc (-v /etc:/host/etc:ro -e HOST_ETC=/host/etc)"
            ),
        }
    }
}

/// Everything the anchors look at: the host's identifying values read once, the config, and
/// the syscalls (for the Docker engine, asked only when its anchor's turn comes).
struct Context<'a> {
    roots: &'a Roots,
    host: &'a HostFacts,
    seen: &'a Identifying,
    qrs: &'a str,
    qrs_input: String,
    state_dir: Option<&'a Path>,
    sys: &'a dyn Syscalls,
}

/// What the anchors learn and say while the derivation runs.
#[derive(Default)]
struct Found {
    engine_id: Option<String>,
    secret: Option<String>,
    warnings: Vec<Warning>,
}

/// One anchor of a container's ID: the ID, or why it did not apply.
type AnchorFn = fn(&Context<'_>, &mut Found) -> Result<InstanceId, NotApplied>;

/// Why an anchor did not apply: sources and reasons, never values (`id --explain` shows it).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct NotApplied(String);

/// A container's anchors, best first: the first that applies makes the ID.
const CONTAINER_ANCHORS: &[AnchorFn] = &[host_network, host_machine_id, engine_id, state_secret];

/// Derives the ID (see the module doc), reading the host's identifying values first. Never
/// fails.
pub(crate) fn derive_with(
    roots: &Roots,
    host: &HostFacts,
    cfg: IdConfig<'_>,
    sys: &dyn Syscalls,
) -> Derivation {
    derive(roots, host, &Identifying::read(roots, sys), cfg, sys)
}

/// Derives the ID from values already read (see the module doc). Never fails.
pub(crate) fn derive(
    roots: &Roots,
    host: &HostFacts,
    seen: &Identifying,
    cfg: IdConfig<'_>,
    sys: &dyn Syscalls,
) -> Derivation {
    let ctx = Context {
        roots,
        host,
        seen,
        qrs: cfg.qrs_host.unwrap_or(""),
        qrs_input: if cfg.qrs_host.is_some() {
            "Butler.configQRS.host from the config".to_string()
        } else {
            "Butler.configQRS.host (not set: empty)".to_string()
        },
        state_dir: cfg.state_dir,
        sys,
    };
    let mut found = Found::default();
    let id = derive_in(&ctx, &mut found);
    // The secret is known to the guard whether or not it anchored this ID.
    if found.secret.is_none()
        && let Some(dir) = ctx.state_dir
    {
        found.secret = read_secret(&dir.join(SECRET_FILE)).ok().flatten();
    }
    Derivation {
        id,
        engine_id: found.engine_id,
        secret: found.secret,
        warnings: found.warnings,
    }
}

fn derive_in(ctx: &Context<'_>, found: &mut Found) -> InstanceId {
    let host_network = ctx
        .seen
        .default_iface
        .as_ref()
        .filter(|(i, _)| network::is_device_backed(&ctx.roots.own, &i.name));
    if !ctx.host.is_running_in_docker || host_network.is_some() {
        let mut id = butler(ctx);
        id.inputs.insert(
            0,
            if ctx.host.is_running_in_docker {
                "path: container on the host's network (default interface is backed by a device)"
                    .into()
            } else {
                "path: not in a container".into()
            },
        );
        return id;
    }
    let mut tried = Vec::new();
    for anchor in CONTAINER_ANCHORS {
        match anchor(ctx, found) {
            Ok(id) => return id,
            Err(why) => tried.push(why.to_string()),
        }
    }
    found.warnings.push(Warning::Unstable(tried.clone()));
    own_values(ctx, &tried)
}

/// Butler's algorithm on the host's default interface, read through the host's mounts.
fn host_network(ctx: &Context<'_>, _: &mut Found) -> Result<InstanceId, NotApplied> {
    let h = ctx
        .seen
        .host_iface
        .as_ref()
        .map_err(|e| NotApplied(format!("host network: {e}")))?;
    let (system_uuid, uuid_input) = system_uuid(ctx);
    let roots = ctx.roots;
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
    Ok(InstanceId {
        id: butler_id(&ButlerInputs {
            interface: Some((h.mac.clone(), h.ipv4.clone())),
            qrs_host: ctx.qrs.to_string(),
            system_uuid,
            ..ButlerInputs::default()
        }),
        method: METHOD_HOST_NETWORK.into(),
        inputs: vec![
            format!(
                "MAC address of the host's default interface {label} (default route in {}; \
                 address from {}/class/net/<interface>/address)",
                roots.proc.join("1/net/route").display(),
                roots.sys.display()
            ),
            ipv4_input,
            ctx.qrs_input.clone(),
            uuid_input,
        ],
    })
}

/// The host's machine-id, only through a host mount of `/etc`.
fn host_machine_id(ctx: &Context<'_>, _: &mut Found) -> Result<InstanceId, NotApplied> {
    let roots = ctx.roots;
    if !roots.etc_origin.is_host_mount() {
        return Err(NotApplied(
            "host /etc not mounted (HOST_ETC or HOST_ROOT unset)".into(),
        ));
    }
    let m = ctx.seen.machine_id.as_ref().ok_or_else(|| {
        NotApplied(format!(
            "no valid machine-id below {} ({})",
            roots.etc.display(),
            roots.etc_origin
        ))
    })?;
    Ok(InstanceId {
        id: container_id(&Anchor::HostMachineId(m.value.clone()), ctx.qrs),
        method: METHOD_MACHINE_ID.into(),
        inputs: vec![
            format!(
                "machine-id from {} ({})",
                roots.etc_origin,
                m.path.display()
            ),
            ctx.qrs_input.clone(),
        ],
    })
}

/// The Docker engine's ID, when a socket answers.
fn engine_id(ctx: &Context<'_>, found: &mut Found) -> Result<InstanceId, NotApplied> {
    let Some(ep) = docker_endpoint(ctx.roots) else {
        return Err(NotApplied(if ctx.roots.env.docker_host.is_some() {
            "DOCKER_HOST has an unsupported scheme (only unix:// and tcp:// are asked)".into()
        } else {
            "no Docker socket (DOCKER_HOST unset, /var/run/docker.sock absent)".into()
        }));
    };
    match ctx.sys.docker_engine_id(&ep) {
        Ok(engine) => {
            found.engine_id = Some(engine.clone());
            Ok(InstanceId {
                id: container_id(&Anchor::EngineId(engine), ctx.qrs),
                method: METHOD_ENGINE_ID.into(),
                inputs: vec![format!("Docker engine ID from {ep}"), ctx.qrs_input.clone()],
            })
        }
        Err(e @ EngineIdError::Denied { .. }) => {
            found.warnings.push(Warning::EngineDenied(e.to_string()));
            Err(NotApplied(format!(
                "Docker engine at {ep} did not give its ID: {e}"
            )))
        }
        Err(e) => {
            tracing::debug!("Docker engine ID unavailable: {e}");
            Err(NotApplied(format!(
                "Docker engine at {ep} did not give its ID"
            )))
        }
    }
}

/// A random secret kept in the state directory.
fn state_secret(ctx: &Context<'_>, found: &mut Found) -> Result<InstanceId, NotApplied> {
    let dir = ctx.state_dir.ok_or_else(|| {
        NotApplied(
            "no state directory (BUTLER_STATE_DIR / Butler.butlerAgent.stateDir unset)".into(),
        )
    })?;
    match keep_secret(dir) {
        Ok(secret) => {
            let point = dir.to_string_lossy();
            if ctx
                .seen
                .own_mountinfo
                .as_deref()
                .is_some_and(|m| crate::host::container::is_anonymous_volume(m, &point))
            {
                found
                    .warnings
                    .push(Warning::AnonymousVolume(point.into_owned()));
            }
            found.secret = Some(secret.clone());
            Ok(InstanceId {
                id: container_id(&Anchor::StateSecret(secret), ctx.qrs),
                method: METHOD_STATE_SECRET.into(),
                inputs: vec![
                    format!(
                        "secret from the state directory ({})",
                        dir.join(SECRET_FILE).display()
                    ),
                    ctx.qrs_input.clone(),
                ],
            })
        }
        Err(e) => {
            let why = match state_dir_owner_problem(dir) {
                Some(advice) => {
                    found.warnings.push(Warning::StateDirOwner(advice.clone()));
                    advice
                }
                None => e.to_string(),
            };
            Err(NotApplied(format!(
                "state directory {} unusable: {why}",
                dir.display()
            )))
        }
    }
}

/// The last resort: no anchor outlives the container. The ID is keyed by the host's boot ID and
/// covers what the kernel shows of this container's identity (its cgroup path, the runtime's
/// per-container directories in mountinfo, its root file system's upper layer): all kept across
/// a restart, all new when the container is re-created, so two containers never share an ID,
/// even where Docker gives the first container on every host the same MAC and IP. Only when no
/// such identity is visible do the container's own MAC and IP (Butler's algorithm) stand in.
/// A host reboot gives a new boot ID, so this ID changes with it: the warning names the fix.
fn own_values(ctx: &Context<'_>, tried: &[String]) -> InstanceId {
    let boot_path = ctx.roots.own_path(BOOT_ID);
    let boot_id = ctx.seen.boot_id.as_ref();
    let identity = &ctx.seen.own_identity;
    let qrs_input = &ctx.qrs_input;
    let mut inputs = vec![format!("path: container; {}", tried.join("; "))];
    inputs.push(match boot_id {
        Some(_) => format!("HMAC key: the host's boot ID ({})", boot_path.display()),
        None => format!(
            "HMAC key: fixed (boot ID unreadable at {})",
            boot_path.display()
        ),
    });
    let mut message = format!("{CONTAINER_LABEL}\0own-values\0{}", ctx.qrs);
    for (source, value) in identity {
        message.push('\0');
        message.push_str(source);
        message.push('=');
        message.push_str(value);
        inputs.push(format!("container identity: {source}"));
    }
    if identity.is_empty() {
        let own = butler(ctx);
        message.push_str("\0butler=");
        message.push_str(&own.id);
        inputs.extend(own.inputs.into_iter().filter(|i| i != qrs_input));
    }
    inputs.push(qrs_input.clone());
    let key = boot_id.map_or("no-boot-id", String::as_str);
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
fn system_uuid(ctx: &Context<'_>) -> (String, String) {
    let uuid_path = ctx.roots.sys.join("class/dmi/id/product_uuid");
    let system_uuid = ctx
        .seen
        .product_uuid
        .as_deref()
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

/// Butler's own algorithm on this process's default interface, or Butler's fallback.
fn butler(ctx: &Context<'_>) -> InstanceId {
    let (system_uuid, uuid_input) = system_uuid(ctx);
    let qrs_input = ctx.qrs_input.clone();
    let addrs = ctx
        .seen
        .default_iface
        .as_ref()
        .and_then(|(i, a)| a.as_ref().map(|a| (i, a)));
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
            interface: Some((a.mac.clone(), ipv4)),
            qrs_host: ctx.qrs.to_string(),
            system_uuid,
            ..ButlerInputs::default()
        };
        return InstanceId {
            id: butler_id(&inputs_for_id),
            method: METHOD_BUTLER.into(),
            inputs,
        };
    }

    let serial = ctx.seen.os_serial.as_ref();
    let meminfo = ctx.roots.proc.join("meminfo");
    let mem_total = ctx.seen.mem_total;
    let mut inputs = Vec::new();
    if let Some(m) = serial {
        inputs.push(format!("OS serial (machine-id from {})", m.path.display()));
    } else if mem_total.is_some() {
        inputs.push(format!("total memory from {}", meminfo.display()));
    } else if ctx.host.release != host::UNKNOWN {
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
            qrs_host: ctx.qrs.to_string(),
            system_uuid,
            os_serial: serial.map(|m| m.value.clone()).unwrap_or_default(),
            mem_total,
            os_release: ctx.host.release.clone(),
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
pub(crate) fn keep_secret(dir: &Path) -> Result<String, SecretError> {
    let path = dir.join(SECRET_FILE);
    if let Some(s) = read_secret(&path)? {
        return Ok(s);
    }
    let bytes: [u8; 32] = random::bytes("the instance secret")?;
    let candidate = format!("{}\n", hex::encode(bytes));
    files::create_once(&path, candidate.as_bytes()).map_err(|cause| SecretError::Create {
        path: path.clone(),
        cause,
    })?;
    read_secret(&path)?.ok_or(SecretError::Vanished(path))
}

/// Why the state directory's secret cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SecretError {
    #[error("{} is not 64 hex digits; remove it to have a new secret made", .0.display())]
    Malformed(PathBuf),
    #[error("cannot read {0}")]
    Unreadable(files::ReadError),
    #[error("cannot create {}: {cause}", path.display())]
    Create {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{} vanished after creation", .0.display())]
    Vanished(PathBuf),
    #[error(transparent)]
    NoRandom(#[from] NoRandom),
}

fn read_secret(path: &Path) -> Result<Option<String>, SecretError> {
    match files::read_own(path, files::SECRET_LIMIT) {
        Ok(bytes) => {
            let s = String::from_utf8_lossy(&bytes);
            let s = s.trim();
            if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(Some(s.to_ascii_lowercase()))
            } else {
                Err(SecretError::Malformed(path.to_path_buf()))
            }
        }
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(SecretError::Unreadable(e)),
    }
}

#[cfg(test)]
mod tests;
