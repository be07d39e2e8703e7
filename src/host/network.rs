//! The default-route interface, as Butler finds it (systeminformation takes the device of the
//! first `default` line of `ip route`; the kernel lists default routes by ascending metric, and
//! `/proc/net/route` shows the same table without needing the `ip` binary).
//!
//! The route table is read from the agent's own `/proc` (never `HOST_PROC`): `/proc/net` always
//! shows the reading process's network namespace, and the interface's addresses come from the
//! same namespace through [`Syscalls::interface`](super::Syscalls::interface).

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

#[cfg(test)]
mod tests {
    use super::*;

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
