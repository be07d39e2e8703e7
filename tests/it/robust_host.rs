//! Robustness of host detection and the sink's request parser: strange `/proc`, `/sys` and
//! `/etc` contents, unreadable files and arbitrary request bodies never panic, and detection
//! still answers (with "unknown" where it cannot know). Bounded: a fixed number of cases.

use crate::common::copy_dir;

use std::path::{Path, PathBuf};

use butler_agent::host::syscalls::{DockerEndpoint, EngineIdError};
use butler_agent::host::{self, CpuidVm, Interface, Roots, Syscalls};
use butler_agent::sink::capture;
use proptest::prelude::*;

/// Syscalls that know nothing, so every fact comes from the (fuzzed) files.
struct NoSyscalls;

impl Syscalls for NoSyscalls {
    fn cpuid(&self) -> Option<CpuidVm> {
        None
    }
    fn interface(&self, _name: &str) -> Option<Interface> {
        None
    }
    fn first_external_interface(&self) -> Option<String> {
        None
    }
    fn pid(&self) -> u32 {
        1
    }
    fn docker_engine_id(&self, _endpoint: &DockerEndpoint) -> Result<String, EngineIdError> {
        Err(EngineIdError::Failed("no engine in this test".into()))
    }
}

/// Every file host detection reads, relative to the root.
const FACT_FILES: &[&str] = &[
    "etc/os-release",
    "usr/lib/os-release",
    "etc/lsb-release",
    "etc/machine-id",
    "proc/self/mountinfo",
    "proc/self/cgroup",
    "proc/1/environ",
    "proc/net/route",
    "proc/sys/kernel/osrelease",
    "proc/cpuinfo",
    "proc/xen/capabilities",
    "run/systemd/container",
    "sys/class/dmi/id/sys_vendor",
    "sys/class/dmi/id/product_name",
    "sys/class/dmi/id/board_vendor",
    "sys/class/dmi/id/bios_vendor",
    "sys/class/dmi/id/product_uuid",
    "sys/hypervisor/type",
    "sys/fs/cgroup/cgroup.type",
    "proc/1/status",
    "proc/2/status",
    "proc/sys/kernel/random/boot_id",
    ".dockerenv",
];

fn fresh_dir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "butler-agent-robust-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(root: &Path, rel: &str, content: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

fn check_facts(root: &Path) {
    let facts = host::detect_with(&Roots::at(root), &NoSyscalls);
    if let Some(rt) = &facts.container_runtime {
        assert!(
            facts.is_running_in_docker,
            "runtime {rt} implies a container"
        );
    }
    // Whatever the files held, `host --json` keeps its shape: strings, booleans, a rule each.
    let v = serde_json::to_value(&facts).expect("facts serialize");
    for k in [
        "platform", "arch", "distro", "codename", "release", "kernel",
    ] {
        let s = v[k].as_str().unwrap_or_else(|| panic!("{k} is a string"));
        assert!(!s.contains('\n'), "{k} is one line: {s:?}");
    }
    for k in ["virtual", "isRunningInDocker", "kubernetes", "wsl"] {
        assert!(v[k].is_boolean(), "{k} is a boolean");
    }
    for k in ["distro", "virtual", "isRunningInDocker"] {
        assert!(v["rules"][k].is_string(), "rules.{k} is named");
    }
    // The ID is derived from the same strange files (container identity, boot ID, host mounts).
    let env = butler_agent::config::MapEnv::new([("HOST_ROOT", "/")]);
    for roots in [Roots::at(root), Roots::from_env(root, &env)] {
        let id = butler_agent::instance_id::derive_with(
            &roots,
            &facts,
            butler_agent::instance_id::IdConfig::default(),
            &NoSyscalls,
        )
        .id;
        assert!(
            id.id.len() == 64 && id.id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{id:?}"
        );
    }
}

/// Contents that look like what these files hold, with noise.
fn fact_content() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        "[A-Z_]{1,12}=\"?[ -~]{0,30}\"?(\n[A-Z_]{1,12}=[ -~]{0,20}){0,6}".prop_map(String::into_bytes),
        "([0-9]{1,3} [0-9]{1,3} [0-9]{1,3}:[0-9]{1,3} /[a-z/]{0,30} /[a-z/]{0,20} [a-z,]{0,12} - [a-z]{1,8} [a-z/]{1,20} [a-z,]{0,10}\n){0,5}".prop_map(String::into_bytes),
        "([0-9]{1,2}:[a-z,=]{0,12}:/[a-z0-9/._-]{0,60}\n){0,5}".prop_map(String::into_bytes),
        "Iface\tDestination\tGateway\tFlags\n([a-z0-9]{0,6}\t[0-9A-F]{0,8}\t[0-9A-F]{0,8}\t[0-9]{0,4}\n){0,4}".prop_map(String::into_bytes),
        "(QEMU|KVM|VMware, Inc.|innotek GmbH|Xen|Amazon EC2|m5.metal|Microsoft Corporation|Google|Apple Inc.|BHYVE|Parallels|Bochs|[ -~]{0,20})\n?".prop_map(String::into_bytes),
        "(container=[a-z-]{0,14}\0){0,3}".prop_map(String::into_bytes),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    /// A random subset of the fact files with random, plausible or garbage contents.
    #[test]
    fn strange_fact_files_never_panic(files in prop::collection::vec((0..FACT_FILES.len(), fact_content()), 0..12)) {
        let root = fresh_dir("facts");
        for (i, content) in &files {
            write(&root, FACT_FILES[*i], content);
        }
        check_facts(&root);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn line_parsers_never_panic(text in "(?s).{0,300}") {
        let _ = host::container::mountinfo_runtime(&text);
        let _ = host::container::cgroup_runtime(&text);
        let _ = host::container::container_var(&text);
        let _ = host::network::parse_default_route(&text);
        let _ = host::container::containerd_cgroup(&text);
        let _ = host::container::status_name(&text);
        let _ = host::container::root_mount(&text).map(|m| (m.fstype.len(), m.super_options.len()));
        let _ = host::network::fib_local_addresses(&text);
        let _ = host::network::interface_ipv4(&text, &text, "eth0");
        let _ = host::virt::is_metal(&text);
        let _ = host::container::is_wsl(&text);
        let _ = host::os::derive(&[("/etc/os-release".to_string(), text.clone())]);
    }

    #[test]
    fn sink_request_parser_never_panics(body in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = capture::accept(&body, 1 << 20);
    }

    #[test]
    fn sink_request_parser_on_json_shaped_bodies(
        token in "(phc_[a-zA-Z0-9]{0,40}|phx_x|[ -~]{0,10})",
        event in "[ -~]{0,20}",
        distinct in "[ -~]{0,300}",
        uuid in "([0-9a-f-]{0,36})",
        batch in any::<bool>(),
    ) {
        let one = serde_json::json!({
            "api_key": token, "event": event, "distinct_id": distinct, "uuid": uuid,
            "properties": {"x": 1}
        });
        let body = if batch {
            serde_json::json!({"api_key": token, "batch": [one.clone(), one]})
        } else {
            one
        };
        let bytes = serde_json::to_vec(&body).unwrap();
        if let Ok(accepted) = capture::accept(&bytes, 1 << 20) {
            for a in accepted {
                prop_assert!(!a.distinct_id.is_empty());
                prop_assert!(!a.token.is_empty());
            }
        }
    }
}

/// Filesystem faults: directories where files are expected, unreadable files, links to
/// endless files. Detection answers and stays bounded.
#[test]
fn filesystem_faults_give_unknown_not_errors() {
    let root = fresh_dir("faults");
    for rel in ["etc/os-release", "proc/self/mountinfo", "proc/net/route"] {
        std::fs::create_dir_all(root.join(rel)).unwrap();
    }
    // An endless file: must be read only up to the cap.
    std::fs::create_dir_all(root.join("proc/self")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", root.join("proc/self/cgroup")).unwrap();
    std::fs::create_dir_all(root.join("sys/class/dmi/id")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", root.join("sys/class/dmi/id/sys_vendor")).unwrap();
    write(&root, "etc/lsb-release", b"\xff\xfe\x00garbage");
    let facts = host::detect_with(&Roots::at(&root), &NoSyscalls);
    assert_eq!(facts.distro, "unknown");
    std::fs::remove_dir_all(&root).unwrap();
}

/// The fixture trees are the seeds: each still parses after any single file is truncated.
#[test]
fn truncated_fixture_files_never_panic() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hosts");
    for entry in std::fs::read_dir(&fixtures).unwrap() {
        let case = entry.unwrap().path();
        if !case.is_dir() {
            continue;
        }
        let root = case.join("root");
        let root = if root.is_dir() { root } else { case.clone() };
        for rel in FACT_FILES {
            let src = root.join(rel);
            let Ok(content) = std::fs::read(&src) else {
                continue;
            };
            for cut in [0, content.len() / 3, content.len() / 2] {
                let copy = fresh_dir("trunc");
                copy_dir(&root, &copy);
                std::fs::write(copy.join(rel), &content[..cut]).unwrap();
                check_facts(&copy);
                std::fs::remove_dir_all(&copy).unwrap();
            }
        }
    }
}

/// A host with a huge local address table (a 4 MiB `fib_trie`, 134,834 addresses, just under
/// the host-file cap): `telemetry preview`, which reads it through the instance ID (the host's
/// init, `HOST_PROC/1/net/fib_trie`) and the privacy guard (the agent's own and the host's
/// tables), answers within a bound far above a normal run. A parser that deduplicates by
/// scanning its list took minutes here.
#[test]
fn a_four_mib_fib_trie_is_read_in_linear_time() {
    use std::fmt::Write as _;
    const LIMIT: std::time::Duration = std::time::Duration::from_secs(20);
    let root = fresh_dir("fib");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hosts/docker-host-root/root"),
        &root,
    );
    // Every address once, then the table the host's init sees repeated: 10.0.0.0/8 is
    // eth0's connected route, so the ID looks for its address in the whole table.
    let mut fib = String::from("Local:\n  +-- 0.0.0.0/0 3 0 4\n");
    let mut count = 0u32;
    let mut entry = String::new();
    for n in 1u32.. {
        entry.clear();
        let ip = std::net::Ipv4Addr::from(0x0a00_0000 | n);
        writeln!(entry, "|-- {ip}\n/32 host LOCAL").unwrap();
        if fib.len() + entry.len() > 4 * 1024 * 1024 {
            break;
        }
        fib.push_str(&entry);
        count += 1;
    }
    assert!(count > 130_000, "{count} addresses");
    let route = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                 eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                 eth0\t0000000A\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n";
    write(&root, "proc/net/fib_trie", fib.as_bytes());
    write(&root, "host/proc/1/net/fib_trie", fib.as_bytes());
    write(&root, "host/proc/1/net/route", route.as_bytes());
    write(
        &root,
        "host/sys/class/net/eth0/address",
        b"02:00:0a:00:00:01\n",
    );

    let start = std::time::Instant::now();
    let mut child = crate::common::agent(crate::common::Telemetry::Off)
        .env("HOST_ROOT", "/host")
        .arg("--root")
        .arg(&root)
        .args(["telemetry", "preview", "--compact"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the agent binary runs");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the agent") {
            break status;
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            std::fs::remove_dir_all(&root).unwrap();
            panic!("telemetry preview with {count} local addresses took over {LIMIT:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    std::fs::remove_dir_all(&root).unwrap();
    assert!(status.success(), "{status}");
    let event: serde_json::Value = serde_json::from_str(&out).expect("the event as JSON");
    assert_eq!(event["event"], "telemetry sent");
    println!(
        "{count} local addresses: preview took {:?}",
        start.elapsed()
    );
}
