//! The privacy guard: the last check before an event leaves the machine.
//!
//! Butler's documentation promises the event never carries server names, IP or MAC
//! addresses, container metadata, credentials or anything else from the config file. The event
//! builder is written to honour that; this module *checks* it on every send. It collects every
//! identifying value the agent can know on this host ([`Known::gather`]) and scans the exact
//! serialized body for each one ([`check`]). A hit refuses the send and names the kind of value
//! (never the value itself, which would put it in a log).
//!
//! # The exemption rule
//! A plain substring scan would refuse harmless events: a config value `linux` or `true`
//! occurs in every event. A value is therefore not looked for when its appearance could not
//! prove a leak:
//! 1. it is shorter than [`MIN_LEN`] characters after trimming (`en`, `x64`, `off`: such strings
//!    occur by chance in any JSON and identify nothing), or
//! 2. it occurs, case-insensitively, in the event's *fixed text*: the body with every string
//!    value removed (all keys, booleans, numbers, structure) plus the closed vocabulary of
//!    values the agent writes whatever the host (`butler`, `telemetry sent`, `butler-agent`,
//!    versions, `linux`, `x64`, `unknown`, the public project key). Text the agent writes
//!    regardless of the host cannot carry information about the host.
//!
//! Fields whose shape is checked exactly — the `uuid`, the `timestamp` and the 64-hex instance
//! ID — are blanked before short values are looked for, so a config value like `2026` does not
//! match the date; values of [`FULL_SCAN_LEN`] characters or more are also looked for in those
//! fields, so an ID derivation that leaked a machine-id or container ID would still be caught.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use serde_json::Value;

use crate::config::{Env, LoadedConfig};
use crate::host::{self, Roots};
use crate::telemetry::payload;

/// Shorter values are not looked for (see the module doc).
pub(crate) const MIN_LEN: usize = 4;
/// Values at least this long are also looked for inside the uuid, timestamp and ID fields: a
/// chance match of 12 characters in ~150 hex digits is below one in 10^12.
pub(crate) const FULL_SCAN_LEN: usize = 12;
/// Host files are small; anything larger is not what we expect and is read only this far.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// What kind of identifying value was found. Logged; the value never is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    HostName,
    ContainerHostName,
    MacAddress,
    IpAddress,
    MachineId,
    ContainerId,
    QrsHost,
    /// A string value of the config file, with its key path (the path is not secret).
    ConfigValue(String),
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::HostName => f.write_str("the host name"),
            Kind::ContainerHostName => f.write_str("the container host name"),
            Kind::MacAddress => f.write_str("a MAC address"),
            Kind::IpAddress => f.write_str("an IP address"),
            Kind::MachineId => f.write_str("the machine ID"),
            Kind::ContainerId => f.write_str("the container ID"),
            Kind::QrsHost => f.write_str("Butler.configQRS.host"),
            Kind::ConfigValue(path) => write!(f, "the config value at {path}"),
        }
    }
}

/// One identifying value and the forms it may take in text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identifier {
    pub(crate) kind: Kind,
    pub(crate) value: String,
    /// Other spellings of the same value (MAC without separators, IPv6 as /proc writes it).
    pub(crate) alternates: Vec<String>,
}

/// Everything the guard looks for, plus the words it must not treat as leaks.
#[derive(Debug, Clone, Default)]
pub(crate) struct Known {
    pub(crate) identifiers: Vec<Identifier>,
    /// Values the agent writes itself (see the module doc).
    pub(crate) fixed_words: Vec<String>,
}

/// The guard's verdict when it refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub(crate) kind: Kind,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "privacy guard refused to send: the event contains {}",
            self.kind
        )
    }
}

impl std::error::Error for Finding {}

impl Known {
    pub(crate) fn push(&mut self, kind: Kind, value: impl Into<String>) {
        let value = value.into().trim().to_string();
        if value.is_empty() || self.identifiers.iter().any(|i| i.value == value) {
            return;
        }
        self.identifiers.push(Identifier {
            kind,
            value,
            alternates: Vec::new(),
        });
    }

    fn push_with(&mut self, kind: Kind, value: String, alternates: Vec<String>) {
        if self.identifiers.iter().any(|i| i.value == value) {
            return;
        }
        self.identifiers.push(Identifier {
            kind,
            value,
            alternates,
        });
    }

    /// Collects every identifying value this agent can see, reading host files below `roots`.
    pub(crate) fn gather(config: &LoadedConfig, roots: &Roots, env: &dyn Env) -> Known {
        let mut k = Known {
            identifiers: Vec::new(),
            fixed_words: fixed_words(&config.agent.posthog_key),
        };
        let read = |p: &Path| read_small(p).unwrap_or_default();

        // Container first: it decides whether our own host name is the container's.
        let mut container_ids = BTreeSet::new();
        for file in ["self/mountinfo", "self/cgroup", "1/cgroup"] {
            container_ids.extend(container_ids_in(&read(&roots.proc.join(file))));
        }
        for id in &container_ids {
            k.push(Kind::ContainerId, id.clone());
            k.push(Kind::ContainerId, id[..12].to_string());
        }
        let own_name = if container_ids.is_empty() {
            Kind::HostName
        } else {
            Kind::ContainerHostName
        };
        // When `etc` points at the host's files mounted into the container, its hostname is
        // the host's; otherwise it is our own.
        let etc_kind = if roots.etc == roots.own.join("etc") {
            own_name.clone()
        } else {
            Kind::HostName
        };
        k.push(etc_kind, read(&roots.etc.join("hostname")));
        k.push(
            own_name.clone(),
            read(&roots.proc.join("sys/kernel/hostname")),
        );
        k.push(own_name, read(&roots.own.join("etc/hostname")));
        if let Some(h) = env.var("HOSTNAME") {
            k.push(Kind::HostName, h);
        }

        for file in [
            roots.etc.join("machine-id"),
            roots.own.join("etc/machine-id"),
            roots.own.join("var/lib/dbus/machine-id"),
            roots.sys.join("class/dmi/id/product_uuid"),
            roots.sys.join("class/dmi/id/product_serial"),
            roots.sys.join("class/dmi/id/board_serial"),
        ] {
            k.push(Kind::MachineId, read(&file));
        }

        for net in [roots.sys.join("class/net"), roots.own.join("sys/class/net")] {
            let Ok(dir) = std::fs::read_dir(&net) else {
                continue;
            };
            for entry in dir.flatten() {
                if let Some(mac) = parse_mac(&read(&entry.path().join("address"))) {
                    k.push_mac(&mac);
                }
            }
        }
        for proc in [roots.proc.clone(), roots.own.join("proc")] {
            for ip in parse_fib_trie_local(&read(&proc.join("net/fib_trie"))) {
                k.push_ipv4(ip);
            }
            for ip in parse_if_inet6(&read(&proc.join("net/if_inet6"))) {
                k.push_ipv6(ip);
            }
        }

        if let Some(qrs) = &config.butler.qrs_host {
            k.push(Kind::QrsHost, qrs.clone());
        }
        let mut strings = Vec::new();
        config_strings(&config.tree, "", &mut strings);
        for (path, value) in strings {
            k.push(Kind::ConfigValue(path), value);
        }
        k
    }

    /// A MAC in the forms it may be written: `aa:bb:..`, `aa-bb-..`, `aabb..`.
    pub(crate) fn push_mac(&mut self, mac: &str) {
        let mac = mac.to_ascii_lowercase();
        let bare: String = mac.chars().filter(|c| *c != ':').collect();
        let dashed = mac.replace(':', "-");
        self.push_with(Kind::MacAddress, mac, vec![bare, dashed]);
    }

    pub(crate) fn push_ipv4(&mut self, ip: Ipv4Addr) {
        if ip.is_loopback() || ip.is_unspecified() {
            return;
        }
        self.push_with(Kind::IpAddress, ip.to_string(), Vec::new());
    }

    /// IPv6 as written canonically and as /proc writes it (32 hex digits).
    pub(crate) fn push_ipv6(&mut self, ip: Ipv6Addr) {
        if ip.is_loopback() || ip.is_unspecified() {
            return;
        }
        let raw = format!("{:032x}", u128::from(ip));
        self.push_with(Kind::IpAddress, ip.to_string(), vec![raw]);
    }
}

/// The closed vocabulary of values the agent writes whatever the host.
pub(crate) fn fixed_words(posthog_key: &str) -> Vec<String> {
    [
        payload::EVENT_NAME,
        payload::SERVICE,
        payload::LIB,
        payload::VERSION,
        payload::RUNTIME_VERSION,
        host::node_platform(),
        host::node_arch(),
        "unknown",
        posthog_key,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Scans the serialized body. `Err` names the first kind found.
pub(crate) fn check(body: &str, known: &Known) -> Result<(), Finding> {
    let Ok(parsed) = serde_json::from_str::<Value>(body) else {
        // Not our JSON: no field can be blanked, so look for everything everywhere.
        return scan(&body.to_lowercase(), &body.to_lowercase(), "", known);
    };
    let mut fixed = skeleton(&parsed);
    for w in &known.fixed_words {
        fixed.push('\n');
        fixed.push_str(w);
    }
    let masked = serde_json::to_string(&mask_checked_fields(parsed))
        .expect("serializing a JSON value cannot fail");
    scan(
        &masked.to_lowercase(),
        &body.to_lowercase(),
        &fixed.to_lowercase(),
        known,
    )
}

fn scan(masked: &str, full: &str, fixed: &str, known: &Known) -> Result<(), Finding> {
    for id in &known.identifiers {
        if id.value.chars().count() < MIN_LEN {
            continue;
        }
        let value = id.value.to_lowercase();
        if fixed.contains(&value) {
            continue;
        }
        let forms = std::iter::once(value.clone())
            .chain(id.alternates.iter().map(|a| a.to_lowercase()))
            .flat_map(|f| {
                // Also the JSON-escaped spelling, for values with quotes, backslashes or
                // control characters.
                let escaped = serde_json::to_string(&f).expect("a string serializes");
                let escaped = escaped[1..escaped.len() - 1].to_string();
                [f, escaped]
            });
        for form in forms {
            if form.chars().count() < MIN_LEN {
                continue;
            }
            let hay = if form.chars().count() >= FULL_SCAN_LEN {
                full
            } else {
                masked
            };
            if hay.contains(&form) {
                return Err(Finding {
                    kind: id.kind.clone(),
                });
            }
        }
    }
    Ok(())
}

/// The body with every string value emptied: keys, booleans, numbers and structure only.
fn skeleton(v: &Value) -> String {
    fn strip(v: &Value) -> Value {
        match v {
            Value::String(_) => Value::String(String::new()),
            Value::Array(a) => Value::Array(a.iter().map(strip).collect()),
            Value::Object(o) => {
                Value::Object(o.iter().map(|(k, v)| (k.clone(), strip(v))).collect())
            }
            other => other.clone(),
        }
    }
    serde_json::to_string(&strip(v)).expect("serializing a JSON value cannot fail")
}

/// Blanks the fields whose exact shape is verified: `uuid` (a UUID), `timestamp` (RFC 3339)
/// and the instance ID fields (64 hex digits). A field of any other shape stays, so it is
/// scanned like everything else.
fn mask_checked_fields(mut v: Value) -> Value {
    let is_hex64 = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    if let Some(o) = v.as_object_mut() {
        blank_if(o.get_mut("uuid"), |s| uuid::Uuid::parse_str(s).is_ok());
        blank_if(o.get_mut("timestamp"), |s| {
            humantime::parse_rfc3339_weak(s).is_ok()
        });
        blank_if(o.get_mut("distinct_id"), is_hex64);
        if let Some(p) = o.get_mut("properties").and_then(Value::as_object_mut) {
            blank_if(p.get_mut("system_id"), is_hex64);
            let nested = p
                .get_mut("telemetry_json")
                .and_then(|t| t.get_mut("system"))
                .and_then(|s| s.get_mut("id"));
            blank_if(nested, is_hex64);
        }
    }
    v
}

fn blank_if(field: Option<&mut Value>, ok: impl Fn(&str) -> bool) {
    if let Some(f) = field
        && f.as_str().is_some_and(&ok)
    {
        *f = Value::String(String::new());
    }
}

/// Every string leaf of the config tree with its dotted key path.
pub(crate) fn config_strings(v: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::String(s) => out.push((path.to_string(), s.clone())),
        Value::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                config_strings(item, &format!("{path}[{i}]"), out);
            }
        }
        Value::Object(o) => {
            for (k, item) in o {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                config_strings(item, &p, out);
            }
        }
        _ => {}
    }
}

/// Reads a small host file; a missing or unreadable file is simply not known.
fn read_small(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_FILE_BYTES)
        .read_to_end(&mut buf)
        .ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// A MAC address as `/sys/class/net/*/address` writes it; the all-zero address of `lo` and
/// anything not shaped like a MAC are ignored.
pub(crate) fn parse_mac(text: &str) -> Option<String> {
    let t = text.trim().to_ascii_lowercase();
    let parts: Vec<&str> = t.split(':').collect();
    let well_formed = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    (well_formed && parts.iter().any(|p| *p != "00")).then_some(t)
}

/// The local IPv4 addresses in `/proc/net/fib_trie`: a `|-- a.b.c.d` line followed by a
/// `/32 host LOCAL` line.
pub(crate) fn parse_fib_trie_local(text: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some(ip) = t.strip_prefix("|-- ") {
            last = ip.trim().parse().ok();
        } else if t.starts_with("/32 host LOCAL")
            && let Some(ip) = last
            && !out.contains(&ip)
        {
            out.push(ip);
        }
    }
    out
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
mod tests;
