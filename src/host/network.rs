//! The default-route interface, as Butler finds it (systeminformation takes the device of the
//! first `default` line of `ip route`; the kernel lists default routes by ascending metric, and
//! `/proc/net/route` shows the same table without needing the `ip` binary).
//!
//! The route table is read from the agent's own `/proc` (never `HOST_PROC`): `/proc/net` always
//! shows the reading process's network namespace, and the interface's addresses come from the
//! same namespace through [`Syscalls::interface`](super::Syscalls::interface).

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::Path;

use super::{Roots, Syscalls, exists, read_text};

/// The interface that holds the default route, and how it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DefaultIface {
    pub(crate) name: String,
    pub(crate) rule: String,
}

/// Finds the default-route interface; falls back to the first non-loopback interface with an
/// address, as systeminformation does when it cannot ask `ip route`.
pub(crate) fn default_interface(roots: &Roots, sys: &dyn Syscalls) -> Option<DefaultIface> {
    let path = roots.own_path("/proc/net/route");
    if let Some(name) = read_text(&path).and_then(|t| parse_default_route(&t)) {
        return Some(DefaultIface {
            name,
            rule: format!("default route in {}", path.display()),
        });
    }
    sys.first_external_interface().map(|name| DefaultIface {
        name,
        rule: "no default route; first non-loopback interface with an address".into(),
    })
}

/// The interface of the IPv4 default route with the lowest metric (first on a tie).
pub fn parse_default_route(text: &str) -> Option<String> {
    const RTF_UP: u32 = 0x1;
    let mut best: Option<(u32, &str)> = None;
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [iface, dest, _gw, flags, _refcnt, _use, metric, mask, ..] = f.as_slice() else {
            continue;
        };
        let hex = |s: &str| u32::from_str_radix(s, 16).ok();
        let up = hex(flags).is_some_and(|fl| fl & RTF_UP != 0);
        if dest.eq_ignore_ascii_case("00000000") && mask.eq_ignore_ascii_case("00000000") && up {
            let metric: u32 = metric.parse().unwrap_or(u32::MAX);
            if best.is_none_or(|(m, _)| metric < m) {
                best = Some((metric, iface));
            }
        }
    }
    best.map(|(_, i)| i.to_string())
}

/// Whether the interface is backed by a device (a physical or paravirtual NIC has a
/// `device` link in sysfs; veth, bridges, tun/tap and macvlan do not). A container whose
/// default interface has one shares the host's network stack: its MAC is the host's own.
pub(crate) fn is_device_backed(own: &Path, iface: &str) -> bool {
    if iface.contains('/') || iface == ".." {
        return false;
    }
    exists(&own.join("sys/class/net").join(iface).join("device"))
}

/// The host's own default interface, read through the host's `/proc` and `/sys` mounted into a
/// container (`HOST_PROC`/`HOST_SYS` or `HOST_ROOT`). `<proc>/1/net/route` is the route table of
/// the host's init, which lives in the host's network namespace; a bind mount of the host's
/// `/sys` keeps the host's network view, so `<sys>/class/net/<if>/address` is the host NIC's MAC;
/// the interface's IPv4 is the first local address of `<proc>/1/net/fib_trie` inside one of the
/// interface's connected routes (systeminformation's `ip4` of that interface on the host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostIface {
    pub(crate) name: String,
    pub(crate) mac: String,
    /// Empty when the interface has no IPv4 address (as Butler then uses).
    pub(crate) ipv4: String,
}

/// Why the host's network could not be read (sources only, never values).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HostNetError {
    #[error("host /proc and /sys not both mounted (HOST_PROC and HOST_SYS, or HOST_ROOT)")]
    NotMounted,
    #[error("no IPv4 default route in {0}")]
    NoRoute(String),
    #[error("no MAC address in {0}")]
    NoMac(String),
    #[error("{0} unreadable")]
    Unreadable(String),
}

/// The host's default interface (see [`HostIface`]) from the host's tables as
/// [`Identifying`](super::identifying::Identifying) read them: the route table and `fib_trie` of
/// the host's init, and the MACs below the host's `/sys` (raw, by interface name).
pub(crate) fn host_default_interface(
    roots: &Roots,
    routes: Option<&str>,
    fib: Option<&str>,
    mac_file: impl Fn(&str) -> Option<String>,
) -> Result<HostIface, HostNetError> {
    if !roots.proc_origin.is_host_mount() || !roots.sys_origin.is_host_mount() {
        return Err(HostNetError::NotMounted);
    }
    let routes = routes.unwrap_or_default();
    let name = parse_default_route(routes)
        .filter(|n| !n.contains('/') && n != "..")
        .ok_or_else(|| {
            HostNetError::NoRoute(roots.proc.join("1/net/route").display().to_string())
        })?;
    let mac = mac_file(&name)
        .and_then(|text| parse_mac(&text))
        .ok_or_else(|| {
            HostNetError::NoMac(format!(
                "{}/class/net/<interface>/address",
                roots.sys.display()
            ))
        })?;
    // Unreadable is not "no address": Butler would see one, so this anchor is not used then.
    let fib = fib.ok_or_else(|| {
        HostNetError::Unreadable(roots.proc.join("1/net/fib_trie").display().to_string())
    })?;
    let ipv4 = interface_ipv4(routes, fib, &name)
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    Ok(HostIface { name, mac, ipv4 })
}

/// A MAC address as `/sys/class/net/*/address` writes it (six pairs of hex digits, colon
/// separated), lowercase; `None` for anything else. The one MAC rule: the instance ID takes what
/// it accepts, the privacy guard looks for what it accepts.
pub(crate) fn parse_mac(text: &str) -> Option<String> {
    let t = text.trim().to_ascii_lowercase();
    let parts: Vec<&str> = t.split(':').collect();
    let well_formed = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    well_formed.then_some(t)
}

/// The local (`/32 host LOCAL`) addresses of a `/proc/net/fib_trie`, in the order listed, each
/// once, loopback left out: a `|-- a.b.c.d` line followed by its `/32 host LOCAL` line. The one
/// parser of this file (the instance ID and the privacy guard both use it); linear in the size
/// of the table, which on a busy host holds a hundred thousand addresses.
pub(crate) fn fib_local_addresses(fib_trie: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut current: Option<Ipv4Addr> = None;
    for line in fib_trie.lines() {
        let t = line.trim();
        if let Some(addr) = t.strip_prefix("|-- ") {
            current = addr.trim().parse().ok();
        } else if t.starts_with("/32 host LOCAL") {
            if let Some(a) = current.filter(|a| !a.is_loopback() && seen.insert(*a)) {
                out.push(a);
            }
        } else if !t.starts_with('/') {
            current = None;
        }
    }
    out
}

/// The connected IPv4 routes (gateway 0) of an interface in a `/proc/net/route` text:
/// (network, mask) in host byte order.
fn connected_routes(route: &str, iface: &str) -> Vec<(u32, u32)> {
    route
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let [name, dest, gw, _flags, _r, _u, _m, mask, ..] = f.as_slice() else {
                return None;
            };
            // The kernel prints each address's network-order bytes as a native u32.
            let le = |s: &str| {
                u32::from_str_radix(s, 16)
                    .ok()
                    .map(|v| u32::from_be_bytes(v.to_ne_bytes()))
            };
            (*name == iface && le(gw) == Some(0))
                .then(|| Some((le(dest)?, le(mask)?)))
                .flatten()
                .filter(|(_, m)| *m != 0)
        })
        .collect()
}

/// The interface's IPv4: the first local address inside one of its connected routes.
pub(crate) fn interface_ipv4(route: &str, fib_trie: &str, iface: &str) -> Option<Ipv4Addr> {
    let nets = connected_routes(route, iface);
    fib_local_addresses(fib_trie).into_iter().find(|a| {
        let a = u32::from(*a);
        nets.iter().any(|(net, mask)| a & mask == net & mask)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIB: &str = "Main:\n  +-- 0.0.0.0/0 3 0 4\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     +-- 127.0.0.0/8 2 0 2\n        +-- 127.0.0.0/31 1 0 0\n           |-- 127.0.0.0\n              /8 host LOCAL\n           |-- 127.0.0.1\n              /32 host LOCAL\n        |-- 127.255.255.255\n           /32 link BROADCAST\n     +-- 172.17.0.0/16 2 0 2\n        +-- 172.17.0.0/31 1 0 0\n           |-- 172.17.0.0\n              /16 link UNICAST\n           |-- 172.17.0.1\n              /32 host LOCAL\n     +-- 192.0.2.0/24 2 0 2\n        +-- 192.0.2.0/30 2 0 2\n           |-- 192.0.2.0\n              /24 link UNICAST\n           |-- 192.0.2.2\n              /32 host LOCAL\n        |-- 192.0.2.255\n           /32 link BROADCAST\nLocal:\n  +-- 0.0.0.0/0 3 0 4\n           |-- 192.0.2.2\n              /32 host LOCAL\n";

    #[test]
    fn host_ipv4_from_fib_trie_and_connected_routes() {
        let route = format!(
            "{HEADER}eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\ndocker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\neth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
        );
        assert_eq!(
            fib_local_addresses(FIB),
            vec![
                std::net::Ipv4Addr::new(172, 17, 0, 1),
                std::net::Ipv4Addr::new(192, 0, 2, 2)
            ]
        );
        assert_eq!(
            interface_ipv4(&route, FIB, "eth0"),
            Some(std::net::Ipv4Addr::new(192, 0, 2, 2))
        );
        assert_eq!(
            interface_ipv4(&route, FIB, "docker0"),
            Some(std::net::Ipv4Addr::new(172, 17, 0, 1))
        );
        assert_eq!(interface_ipv4(&route, FIB, "wlan0"), None);
        assert_eq!(interface_ipv4(&route, "", "eth0"), None);
        assert_eq!(
            interface_ipv4("garbage", "|-- x\n/32 host LOCAL", "eth0"),
            None
        );
    }

    #[test]
    fn local_addresses_each_once_in_order() {
        let fib = "|-- 1.2.3.4\n/32 host LOCAL\n|-- 5.6.7.8\n/32 host LOCAL\n\
                   |-- 1.2.3.4\n/32 host LOCAL\n|-- 127.0.0.1\n/32 host LOCAL\n";
        assert_eq!(
            fib_local_addresses(fib),
            vec![Ipv4Addr::new(1, 2, 3, 4), Ipv4Addr::new(5, 6, 7, 8)]
        );
        assert!(fib_local_addresses("/32 host LOCAL\n|-- x\n").is_empty());
        // An address line not directly followed by its kind does not count.
        assert!(fib_local_addresses("|-- 1.2.3.4\n+-- 1.0.0.0/8\n/32 host LOCAL\n").is_empty());
    }

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("02:42:AC:11:00:02\n").as_deref(),
            Some("02:42:ac:11:00:02")
        );
        assert_eq!(parse_mac("02:42:ac:11:00"), None);
        assert_eq!(parse_mac(""), None);
        assert_eq!(parse_mac("garbage"), None);
        assert_eq!(parse_mac("zz:42:ac:11:00:02"), None);
    }

    const HEADER: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";

    #[test]
    fn picks_the_default_route() {
        let t = format!(
            "{HEADER}docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\neth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
        );
        assert_eq!(parse_default_route(&t).as_deref(), Some("eth0"));
    }

    #[test]
    fn lowest_metric_wins() {
        let t = format!(
            "{HEADER}wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\nenp3s0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
        );
        assert_eq!(parse_default_route(&t).as_deref(), Some("enp3s0"));
    }

    #[test]
    fn no_default_route() {
        let t = format!("{HEADER}eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n");
        assert_eq!(parse_default_route(&t), None);
        assert_eq!(parse_default_route(""), None);
    }
}
