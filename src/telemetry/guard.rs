//! The privacy guard: the last check before an event leaves the machine.
//!
//! Butler's documentation promises the event never carries server names, IP or MAC
//! addresses, container metadata, credentials or anything else from the config file. The event
//! builder is written to honour that; this module *checks* it on every send. It takes every
//! identifying value the cycle read about this host, as data in the cycle's snapshot, plus the
//! config's ([`Known::from`]), and scans the exact serialized body for each one ([`check`]): it
//! reads nothing itself. A hit refuses the send and names the kind of value (never the value
//! itself, which would put it in a log).
//!
//! # Where a value may appear
//! A plain substring scan would refuse harmless events: a host named `debian` on Debian, or a
//! config value `Debian GNU/Linux`, occurs in every event's `system_distro`. The guard knows
//! what the event carries by design, and looks at each string of the body in its place:
//! 1. values shorter than [`MIN_LEN`] characters after trimming are not looked for (`en`,
//!    `x64`, `off`: such strings occur by chance in any JSON and identify nothing);
//! 2. a field the agent fills from non-identifying facts (`api_key`, `event`, `service`,
//!    versions, `system_arch`/`platform`/`distro`/`codename`/`release` and their nested copies)
//!    is not scanned when it holds exactly the value the agent put there ([`Known::fixed_words`]:
//!    the fixed strings, the project key and this host's facts); any other value there is
//!    scanned;
//! 3. the fields whose shape is checked exactly — the `uuid`, the `timestamp` and the 64-hex
//!    instance ID — are scanned only for values of [`FULL_SCAN_LEN`] characters or more, so a
//!    config value like `2026` does not match the date while an ID derivation that leaked a
//!    machine-id or container ID would still be caught;
//! 4. every other string and number, and the endpoint names copied from the config, is free
//!    text and scanned for every value; object keys written by the agent are not.
//!
//! So a known value inside a by-design field does not block, and the same value anywhere else
//! still does. All spellings of all values go into one multi-pattern automaton (Aho-Corasick),
//! so the check is linear in the size of the body plus the number of known values.

use std::collections::HashSet;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use serde_json::Value;

use crate::config::LoadedConfig;
use crate::host;
use crate::host::identifying::NameOf;
use crate::telemetry::{Snapshot, features, payload};

/// Shorter values are not looked for (see the module doc).
pub(crate) const MIN_LEN: usize = 4;
/// Values at least this long are also looked for inside the uuid, timestamp and ID fields: a
/// chance match of 12 characters in ~150 hex digits is below one in 10^12.
pub(crate) const FULL_SCAN_LEN: usize = 12;

/// What kind of identifying value was found. Logged; the value never is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    HostName,
    ContainerHostName,
    MacAddress,
    IpAddress,
    MachineId,
    ContainerId,
    QrsHost,
    /// The Butler API URL the agent asks for Butler's version, or its host.
    ButlerApi,
    /// The kernel's boot ID (a key of the container's last-resort instance ID).
    BootId,
    /// What the kernel shows of the container's identity (cgroup path, per-container mounts,
    /// upper layer): inputs of the container's last-resort instance ID.
    ContainerIdentity,
    DockerEngineId,
    /// The total memory in bytes (a key of Butler's fallback ID).
    TotalMemory,
    /// The state directory's instance secret.
    InstanceSecret,
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
            Kind::ButlerApi => f.write_str("the Butler API URL or its host"),
            Kind::BootId => f.write_str("the boot ID"),
            Kind::ContainerIdentity => f.write_str("the container's identity"),
            Kind::DockerEngineId => f.write_str("the Docker engine ID"),
            Kind::InstanceSecret => f.write_str("the instance secret"),
            Kind::TotalMemory => f.write_str("the total memory"),
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
    /// Values the agent writes itself from non-identifying facts (see the module doc).
    pub(crate) fixed_words: Vec<String>,
    /// The values in `identifiers`, so adding one is O(1) however many there are.
    seen: HashSet<String>,
}

/// The guard's verdict when it refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("privacy guard refused to send: the event contains {kind}")]
pub struct Finding {
    pub(crate) kind: Kind,
}

impl Known {
    pub(crate) fn push(&mut self, kind: Kind, value: impl Into<String>) {
        let value = value.into().trim().to_string();
        if value.is_empty() || !self.seen.insert(value.clone()) {
            return;
        }
        self.identifiers.push(Identifier {
            kind,
            value,
            alternates: Vec::new(),
        });
    }

    fn push_with(&mut self, kind: Kind, value: String, alternates: Vec<String>) {
        if value.is_empty() || !self.seen.insert(value.clone()) {
            return;
        }
        self.identifiers.push(Identifier {
            kind,
            value,
            alternates,
        });
    }

    /// Every identifying value of one cycle's snapshot (what the host showed and what the ID
    /// learnt) and of the config, and the words the agent writes by design. Reads nothing.
    pub(crate) fn from(snapshot: &Snapshot, config: &LoadedConfig) -> Known {
        let mut k = Known {
            fixed_words: fixed_words(&config.agent.posthog_key),
            ..Known::default()
        };
        k.allow_facts(&snapshot.host);
        let seen = &snapshot.seen;

        for id in &seen.container_ids {
            k.push(Kind::ContainerId, id.clone());
            k.push(Kind::ContainerId, id[..12].to_string());
        }
        // In a container, our own host name is the container's.
        let own_name = if seen.container_ids.is_empty() {
            Kind::HostName
        } else {
            Kind::ContainerHostName
        };
        for (of, name) in &seen.host_names {
            let kind = match of {
                NameOf::Host => Kind::HostName,
                NameOf::Own => own_name.clone(),
            };
            k.push(kind, name.clone());
        }
        for text in &seen.machine_id_texts {
            k.push(Kind::MachineId, text.clone());
        }
        for mac in &seen.macs {
            k.push_mac(mac);
        }
        // The instance ID's inputs beyond those above: the host's default interface (its MAC
        // and IPv4 as the ID read them), the addresses the kernel gave for our default
        // interface, the boot ID, the container's identity, the total memory (Butler's
        // fallback key), the Docker engine ID and the state secret.
        if let Ok(h) = &seen.host_iface {
            k.push_mac(&h.mac);
            if let Ok(ip) = h.ipv4.parse() {
                k.push_ipv4(ip);
            }
        }
        if let Some((_, Some(addrs))) = &seen.default_iface {
            k.push_mac(&addrs.mac);
            if let Some(ip) = addrs.ipv4 {
                k.push_ipv4(ip);
            }
        }
        if let Some(boot) = &seen.boot_id {
            let boot = boot.trim().to_ascii_lowercase();
            let bare = boot.replace('-', "");
            k.push_with(Kind::BootId, boot, vec![bare]);
        }
        for (_, value) in &seen.own_identity {
            for line in value.lines() {
                k.push(Kind::ContainerIdentity, line);
            }
        }
        if let Some(bytes) = seen.mem_total {
            k.push(Kind::TotalMemory, bytes.to_string());
        }
        if let Some(engine) = &snapshot.engine_id {
            k.push(Kind::DockerEngineId, engine.clone());
        }
        if let Some(secret) = &snapshot.secret {
            k.push(Kind::InstanceSecret, secret.clone());
        }
        for ip in &seen.ipv4 {
            k.push_ipv4(*ip);
        }
        for ip in &seen.ipv6 {
            k.push_ipv6(*ip);
        }

        if let Some(qrs) = &config.butler.qrs_host {
            k.push(Kind::QrsHost, qrs.clone());
        }
        if let Ok(api) = crate::config::butler::api(&config.butler, &config.agent) {
            k.push_butler_api(&api.url);
        }
        let mut strings = Vec::new();
        config_strings(&config.tree, "", &mut strings);
        for (path, value) in strings {
            k.push(Kind::ConfigValue(path), value);
        }
        k
    }

    /// The host facts the event carries by design (distro, codename, release, platform,
    /// arch): read from non-identifying files, so a host named like its distro is not a leak
    /// where the distro's name sits in those fields.
    pub(crate) fn allow_facts(&mut self, facts: &host::HostFacts) {
        for fact in [
            &facts.distro,
            &facts.codename,
            &facts.release,
            &facts.platform,
            &facts.arch,
        ] {
            self.fixed_words.push(fact.clone());
        }
    }

    /// The Butler API URL and its host; a loopback or unspecified host identifies nothing.
    pub(crate) fn push_butler_api(&mut self, url: &str) {
        self.push(Kind::ButlerApi, url);
        let Some(host) = reqwest::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
        else {
            return;
        };
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let local = bare.eq_ignore_ascii_case("localhost")
            || bare
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified());
        if !local {
            self.push(Kind::ButlerApi, bare);
        }
    }

    /// A MAC in the forms it may be written: `aa:bb:..`, `aa-bb-..`, `aabb..`. The all-zero
    /// address (of `lo`, and of interfaces without a link address) identifies nothing.
    pub(crate) fn push_mac(&mut self, mac: &str) {
        let mac = mac.trim().to_ascii_lowercase();
        if mac.is_empty() || mac.bytes().all(|b| b == b'0' || b == b':') {
            return;
        }
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

/// Where a string of the event sits, and so how it is scanned.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Written by the agent from non-identifying facts: not scanned when its value is one of
    /// [`Known::fixed_words`], scanned like free text otherwise.
    ByDesign,
    /// A field whose shape is checked (UUID, timestamp, 64-hex ID): only long values are
    /// looked for in it.
    Checked,
    /// Everything else.
    Free,
}

/// The string fields the agent fills from non-identifying facts and fixed strings.
const BY_DESIGN: &[&[&str]] = &[
    &["api_key"],
    &["event"],
    &["properties", "service"],
    &["properties", "serviceVersion"],
    &["properties", "system_arch"],
    &["properties", "system_nodeVersion"],
    &["properties", "system_platform"],
    &["properties", "system_distro"],
    &["properties", "system_codename"],
    &["properties", "system_release"],
    &["properties", "$lib"],
    &["properties", "$lib_version"],
    &["properties", "telemetry_json", "system", "arch"],
    &["properties", "telemetry_json", "system", "codename"],
    &["properties", "telemetry_json", "system", "distro"],
    &["properties", "telemetry_json", "system", "nodeVersion"],
    &["properties", "telemetry_json", "system", "platform"],
    &["properties", "telemetry_json", "system", "release"],
];

/// The object whose keys are copied from the config (endpoint names).
const CONFIG_KEYS: &[&str] = &[
    "properties",
    "telemetry_json",
    "enabledFeatures",
    "feature",
    "apiEnabledEndpoints",
];

/// The identifiers' spellings compiled into two automatons: all of them, and the long ones
/// (for [`Place::Checked`] fields). One pass over a text finds any of them.
struct Matcher {
    all: AhoCorasick,
    all_ids: Vec<usize>,
    long: AhoCorasick,
    long_ids: Vec<usize>,
}

/// The first four bytes of a text, the key of the [`Matcher`]'s prefilter.
fn gram(bytes: &[u8]) -> Option<[u8; 4]> {
    bytes.get(..4)?.try_into().ok()
}

impl Matcher {
    /// Compiles the spellings that can occur in `texts`: a spelling whose first four bytes
    /// occur nowhere in them cannot match, so it is left out (the texts to scan are a few
    /// hundred bytes; the config may hold tens of thousands of values).
    fn new(known: &Known, texts: &[(Place, String)]) -> Matcher {
        let grams: HashSet<[u8; 4]> = texts
            .iter()
            .flat_map(|(_, t)| t.as_bytes().windows(4).filter_map(gram))
            .collect();
        let mut seen = HashSet::new();
        let (mut all, mut all_ids, mut long, mut long_ids) = (vec![], vec![], vec![], vec![]);
        for (idx, id) in known.identifiers.iter().enumerate() {
            if id.value.chars().count() < MIN_LEN {
                continue;
            }
            for form in std::iter::once(&id.value).chain(&id.alternates) {
                let form = form.to_lowercase();
                // Also the JSON-escaped spelling, for a body that is not JSON.
                let escaped = form
                    .bytes()
                    .any(|b| b == b'"' || b == b'\\' || b < 0x20)
                    .then(|| {
                        let e = serde_json::to_string(&form).unwrap_or_default();
                        e.get(1..e.len().saturating_sub(1))
                            .unwrap_or_default()
                            .to_string()
                    });
                for f in std::iter::once(form).chain(escaped) {
                    let n = f.chars().count();
                    if n < MIN_LEN
                        || !gram(f.as_bytes()).is_some_and(|g| grams.contains(&g))
                        || !seen.insert(f.clone())
                    {
                        continue;
                    }
                    if n >= FULL_SCAN_LEN {
                        long.push(f.clone());
                        long_ids.push(idx);
                    }
                    all.push(f);
                    all_ids.push(idx);
                }
            }
        }
        let build = |patterns: &[String]| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .kind(Some(AhoCorasickKind::NoncontiguousNFA))
                .build(patterns)
                .expect("a non-contiguous NFA has no size limit to exceed")
        };
        Matcher {
            all: build(&all),
            all_ids,
            long: build(&long),
            long_ids,
        }
    }

    /// `text` is already lowercase.
    fn find(&self, text: &str, place: Place, known: &Known) -> Result<(), Finding> {
        let (automaton, ids) = match place {
            Place::Checked => (&self.long, &self.long_ids),
            Place::ByDesign | Place::Free => (&self.all, &self.all_ids),
        };
        if ids.is_empty() {
            return Ok(());
        }
        match automaton.find(text) {
            Some(m) => Err(Finding {
                kind: known.identifiers[ids[m.pattern().as_usize()]].kind.clone(),
            }),
            None => Ok(()),
        }
    }
}

/// Scans the serialized body. `Err` names the kind of the first value found.
///
/// Every string (and number) of the body is looked at once, in its place, by one
/// multi-pattern pass: the cost is linear in the body plus the known values.
pub(crate) fn check(body: &str, known: &Known) -> Result<(), Finding> {
    let texts = match serde_json::from_str::<Value>(body) {
        Ok(parsed) => texts_to_scan(&parsed, known),
        // Not our JSON: no place is known, so look for everything everywhere.
        Err(_) => vec![(Place::Free, body.to_lowercase())],
    };
    let matcher = Matcher::new(known, &texts);
    texts
        .iter()
        .try_for_each(|(place, text)| matcher.find(text, *place, known))
}

/// The strings of the event to scan, lowercased, each with its place; by-design fields that
/// hold exactly what the agent put there, and the keys it wrote, are left out.
fn texts_to_scan(parsed: &Value, known: &Known) -> Vec<(Place, String)> {
    let fixed: HashSet<&str> = known.fixed_words.iter().map(String::as_str).collect();
    let mut texts = Vec::new();
    let mut path = Vec::new();
    walk(parsed, &mut path, &mut |path, text, is_key| {
        let place = if is_key {
            // Keys are written by the agent, except the endpoint map's, copied from the config:
            // Butler's own endpoint names are fixed words there, any other key is free text.
            if path.starts_with(CONFIG_KEYS) && !features::is_endpoint_name(text) {
                Place::Free
            } else {
                return;
            }
        } else {
            place_of(path, text)
        };
        if place == Place::ByDesign && fixed.contains(text) {
            return;
        }
        texts.push((place, text.to_lowercase()));
    });
    texts
}

fn place_of(path: &[&str], text: &str) -> Place {
    if BY_DESIGN.contains(&path) {
        return Place::ByDesign;
    }
    let is_hex64 = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let checked = match path {
        ["uuid"] => uuid::Uuid::parse_str(text).is_ok(),
        ["timestamp"] => humantime::parse_rfc3339_weak(text).is_ok(),
        ["distinct_id"]
        | ["properties", "system_id"]
        | ["properties", "telemetry_json", "system", "id"] => is_hex64(text),
        _ => false,
    };
    if checked { Place::Checked } else { Place::Free }
}

/// What [`walk`] calls: path, text, whether the text is an object key.
type Visit<'v> = dyn FnMut(&[&str], &str, bool) + 'v;

/// Calls `visit` for every object key (with the object's path, `true`) and every string or
/// number (with its own path, `false`). Array items keep their array's path.
fn walk<'a>(v: &'a Value, path: &mut Vec<&'a str>, visit: &mut Visit<'_>) {
    match v {
        Value::String(s) => visit(path, s, false),
        Value::Number(n) => visit(path, &n.to_string(), false),
        Value::Array(items) => items.iter().for_each(|item| walk(item, path, visit)),
        Value::Object(map) => {
            for (k, item) in map {
                visit(path, k, true);
                path.push(k);
                walk(item, path, visit);
                path.pop();
            }
        }
        Value::Null | Value::Bool(_) => {}
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

#[cfg(test)]
mod tests;
