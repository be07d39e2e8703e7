//! os-release, mountinfo, cgroup, `/proc/net/route`, `environ` and DMI string parsers on
//! arbitrary text: never a panic.
#![no_main]

use butler_agent::host::{container, network, os, virt};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = container::mountinfo_runtime(&text);
    let _ = container::cgroup_runtime(&text);
    let _ = container::container_var(&text);
    let _ = container::is_wsl(&text);
    let _ = network::parse_default_route(&text);
    let _ = virt::is_metal(&text);
    let _ = os::derive(&[("/etc/os-release".to_string(), text.into_owned())]);
});
