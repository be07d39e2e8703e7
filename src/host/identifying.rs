//! What this host shows that could identify it, read once per cycle below the roots: the
//! instance ID's inputs (the default interface's addresses, the host's interface, machine-id,
//! boot ID, the container's own identity, total memory) and everything else the privacy guard
//! must look for in an event (host names, every MAC and local address, container IDs). The
//! instance ID derives from these values and the guard checks against them, as data: neither
//! reads the host again.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use super::machine_id::{self, MachineId};
use super::network::{self, DefaultIface, HostIface, HostNetError};
use super::{Interface, Roots, Syscalls, container, read_text};

/// Whose host name a value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameOf {
    /// The host's.
    Host,
    /// This process's own: the container's when it runs in one.
    Own,
}

/// The identifying values of this host (see the module doc). Raw values: they never leave
/// the process; the ID hashes some, the guard looks for all.
#[derive(Debug, Clone)]
pub(crate) struct Identifying {
    /// 64-hex IDs in mountinfo and cgroup (container and layer IDs).
    pub(crate) container_ids: BTreeSet<String>,
    pub(crate) host_names: Vec<(NameOf, String)>,
    /// The text of every machine-id-like file (machine-id, dbus's copy, DMI UUID and serials).
    pub(crate) machine_id_texts: Vec<String>,
    /// The machine-id of the etc root (its own file first, then dbus's copy).
    pub(crate) machine_id: Option<MachineId>,
    /// The same, dbus's copy first (systeminformation's `osInfo().serial`).
    pub(crate) os_serial: Option<MachineId>,
    /// DMI's product UUID, first line, as read (`si.system().uuid` before clean-up).
    pub(crate) product_uuid: Option<String>,
    /// Every well-formed MAC below the host's and the agent's own `/sys/class/net`.
    pub(crate) macs: Vec<String>,
    /// The local IPv4 addresses in the `fib_trie` of `/proc`, the host's init and our own.
    pub(crate) ipv4: Vec<Ipv4Addr>,
    /// The addresses in the same places' `if_inet6`.
    pub(crate) ipv6: Vec<Ipv6Addr>,
    /// The kernel's boot ID, first line.
    pub(crate) boot_id: Option<String>,
    /// The container's identity as the kernel shows it ([`container::own_identity`]).
    pub(crate) own_identity: Vec<(&'static str, String)>,
    /// The agent's own mountinfo (whether the state directory is an anonymous volume).
    pub(crate) own_mountinfo: Option<String>,
    /// `MemTotal` in bytes.
    pub(crate) mem_total: Option<u64>,
    /// The host's default interface through the host mounts.
    pub(crate) host_iface: Result<HostIface, HostNetError>,
    /// Our default-route interface and its addresses from the kernel.
    pub(crate) default_iface: Option<(DefaultIface, Option<Interface>)>,
}

impl Identifying {
    /// Reads every value once. Never fails: what cannot be read is not known.
    pub(crate) fn read(roots: &Roots, sys: &dyn Syscalls) -> Identifying {
        let text = |p: &Path| read_text(p);
        let own_cgroup = text(&roots.own_path("/proc/self/cgroup"));
        let own_mountinfo = text(&roots.own_path("/proc/self/mountinfo"));

        let mut container_ids = BTreeSet::new();
        for file in ["self/mountinfo", "self/cgroup", "1/cgroup"] {
            container_ids.extend(container_ids_in(
                &text(&roots.proc.join(file)).unwrap_or_default(),
            ));
        }

        // When `etc` points at the host's files mounted into the container, its hostname is
        // the host's; otherwise it is our own.
        let etc_name = if roots.etc == roots.own.join("etc") {
            NameOf::Own
        } else {
            NameOf::Host
        };
        let mut host_names = Vec::new();
        for (of, path) in [
            (etc_name, roots.etc.join("hostname")),
            (NameOf::Own, roots.proc.join("sys/kernel/hostname")),
            (NameOf::Own, roots.own.join("etc/hostname")),
        ] {
            host_names.extend(text(&path).map(|t| (of, t)));
        }
        if let Some(h) = &roots.env.hostname {
            host_names.push((NameOf::Host, h.clone()));
        }

        // The etc root's machine-id and dbus's copy beside it are the ID's candidates too.
        let [etc_id, dbus_id] = machine_id::candidates(&roots.etc);
        let product_uuid_path = roots.sys.join("class/dmi/id/product_uuid");
        let files: BTreeMap<PathBuf, Option<String>> = [
            etc_id.clone(),
            roots.own.join("etc/machine-id"),
            roots.own.join("var/lib/dbus/machine-id"),
            dbus_id.clone(),
            product_uuid_path.clone(),
            roots.sys.join("class/dmi/id/product_serial"),
            roots.sys.join("class/dmi/id/board_serial"),
        ]
        .into_iter()
        .map(|p| {
            let t = text(&p);
            (p, t)
        })
        .collect();
        let valid = |p: &PathBuf| {
            files
                .get(p)
                .and_then(|t| machine_id::from_text(p, t.as_deref()?))
        };
        let (etc_valid, dbus_valid) = (valid(&etc_id), valid(&dbus_id));
        let first_line = |t: &str| t.lines().next().unwrap_or("").trim().to_string();
        let product_uuid = files
            .get(&product_uuid_path)
            .and_then(|t| t.as_deref().map(first_line))
            .filter(|t| !t.is_empty());

        let mut macs = Vec::new();
        let mut host_macs = BTreeMap::new();
        for (net, is_host) in [
            (roots.sys.join("class/net"), true),
            (roots.own.join("sys/class/net"), false),
        ] {
            let Ok(dir) = std::fs::read_dir(&net) else {
                continue;
            };
            for entry in dir.flatten() {
                let Some(raw) = text(&entry.path().join("address")) else {
                    continue;
                };
                macs.extend(network::parse_mac(&raw));
                if is_host {
                    host_macs.insert(entry.file_name().to_string_lossy().into_owned(), raw);
                }
            }
        }

        let (mut ipv4, mut ipv6) = (Vec::new(), Vec::new());
        let mut init_fib = None;
        for proc in [
            roots.proc.clone(),
            roots.proc.join("1"),
            roots.own.join("proc"),
        ] {
            let fib = text(&proc.join("net/fib_trie"));
            ipv4.extend(network::fib_local_addresses(
                fib.as_deref().unwrap_or_default(),
            ));
            ipv6.extend(parse_if_inet6(
                &text(&proc.join("net/if_inet6")).unwrap_or_default(),
            ));
            if proc == roots.proc.join("1") {
                init_fib = fib;
            }
        }
        let host_iface = network::host_default_interface(
            roots,
            text(&roots.proc.join("1/net/route")).as_deref(),
            init_fib.as_deref(),
            |name| host_macs.get(name).cloned(),
        );
        let default_iface = network::default_interface(roots, sys).map(|i| {
            let addrs = sys.interface(&i.name);
            (i, addrs)
        });

        Identifying {
            container_ids,
            host_names,
            machine_id_texts: files.into_values().flatten().collect(),
            machine_id: etc_valid.clone().or_else(|| dbus_valid.clone()),
            os_serial: dbus_valid.or(etc_valid),
            product_uuid,
            macs,
            ipv4,
            ipv6,
            boot_id: text(&roots.own_path(BOOT_ID))
                .map(|t| first_line(&t))
                .filter(|t| !t.is_empty()),
            own_identity: container::own_identity(own_cgroup.as_deref(), own_mountinfo.as_deref()),
            own_mountinfo,
            mem_total: text(&roots.proc.join("meminfo")).and_then(|t| mem_total_bytes(&t)),
            host_iface,
            default_iface,
        }
    }
}

/// Where the kernel's boot ID is, in the agent's own view.
pub(crate) const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// `MemTotal` from `/proc/meminfo`, in bytes (as Node's `os.totalmem()`): `MemTotal:
/// 24684040 kB`; another unit or a number that is not one is no answer. The one parser of this
/// fact: the instance ID, the privacy guard and the start-up banner use it.
pub(crate) fn mem_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut parts = line["MemTotal:".len()..].split_whitespace();
    let kb: u64 = parts.next()?.parse().ok()?;
    match (parts.next(), parts.next()) {
        (Some("kB"), None) => kb.checked_mul(1024),
        _ => None,
    }
}

/// The IPv6 addresses in `/proc/net/if_inet6` (first field: 32 hex digits).
pub(crate) fn parse_if_inet6(text: &str) -> Vec<Ipv6Addr> {
    text.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|h| h.len() == 32)
        .filter_map(|h| u128::from_str_radix(h, 16).ok())
        .map(Ipv6Addr::from)
        .collect()
}

/// 64-hex-digit runs in mountinfo or cgroup text: Docker, containerd, CRI-O and Podman all
/// name containers this way (`/docker/<id>`, `cri-containerd-<id>.scope`, `libpod-<id>`,
/// `.../containers/<id>/hostname`). Image layer IDs of the same shape are included too; looking
/// for more identifiers only makes the guard stricter.
pub(crate) fn container_ids_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut start = None;
    for i in 0..=bytes.len() {
        let hex = i < bytes.len() && bytes[i].is_ascii_hexdigit();
        match (hex, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                if i - s == 64 {
                    out.insert(text[s..i].to_ascii_lowercase());
                }
                start = None;
            }
            _ => {}
        }
    }
    out
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
}
