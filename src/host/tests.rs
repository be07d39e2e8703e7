use super::*;
use crate::config::MapEnv;

#[test]
fn host_vars_win_over_host_root_and_stay_below_root() {
    let env = MapEnv::new([("HOST_ROOT", "/host"), ("HOST_PROC", "/hostproc")]);
    let r = Roots::from_env("/fix", &env).unwrap();
    assert_eq!(r.own, Path::new("/fix"));
    assert_eq!(r.etc, Path::new("/fix/host/etc"));
    assert_eq!(r.etc_origin, Origin::HostRoot);
    assert_eq!(r.proc, Path::new("/fix/hostproc"));
    assert_eq!(r.proc_origin, Origin::HostVar(HOST_PROC));
    assert_eq!(r.sys, Path::new("/fix/host/sys"));
    assert!(!r.env.cpuid, "CPUID is off for a fixture root");
}

#[test]
fn no_variables_means_everything_below_root() {
    let r = Roots::from_env("/", &MapEnv::default()).unwrap();
    assert_eq!(r.etc, Path::new("/etc"));
    assert_eq!(r.etc_origin, Origin::Root);
    assert!(r.env.cpuid);
    let off = Roots::from_env("/", &MapEnv::new([(NO_CPUID, "1")])).unwrap();
    assert!(!off.env.cpuid);
}

#[test]
fn host_paths_are_bytes_and_own_text_settings_must_be_utf8() {
    use std::os::unix::ffi::OsStrExt;
    let env = MapEnv::default()
        .with_bytes(HOST_ETC, b"/h\xe9/etc")
        .with_bytes("DOCKER_HOST", b"unix:///r\xff/docker.sock")
        .with_bytes("container", b"lx\xff");
    let r = Roots::from_env("/fix", &env).unwrap();
    assert_eq!(r.etc.as_os_str().as_bytes(), b"/fix/h\xe9/etc");
    assert_eq!(
        r.env.docker_host.as_deref().map(|h| h.as_bytes()),
        Some(&b"unix:///r\xff/docker.sock"[..])
    );
    for var in [CONTAINER_OVERRIDE, NO_CPUID] {
        let env = MapEnv::default().with_bytes(var, b"\xff");
        let err = Roots::from_env("/", &env).unwrap_err().to_string();
        assert!(err.contains(var), "{err}");
    }
}

#[test]
fn below_cannot_climb_out() {
    assert_eq!(
        below(Path::new("/fix"), "/../../etc"),
        Path::new("/fix/etc")
    );
    assert_eq!(below(Path::new("/fix"), "a/../b"), Path::new("/fix/b"));
}

// Robustness of host detection: strange `/proc`, `/sys` and `/etc` contents and unreadable
// files never panic, and detection still answers (with "unknown" where it cannot know), and so
// does the instance ID. Bounded: a fixed number of cases.

use proptest::prelude::*;

use crate::host;
use crate::test_support::copy_dir;

/// Syscalls that know nothing, so every fact comes from the (fuzzed) files.
type NoSyscalls = crate::host::syscalls::FakeSyscalls;

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
    let facts = host::detect_with(&Roots::at(root), &NoSyscalls::default());
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
    let env = crate::config::MapEnv::new([("HOST_ROOT", "/")]);
    for roots in [Roots::at(root), Roots::from_env(root, &env).unwrap()] {
        let id = crate::instance_id::derive_with(
            &roots,
            &facts,
            crate::instance_id::IdConfig::default(),
            &NoSyscalls::default(),
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
    let facts = host::detect_with(&Roots::at(&root), &NoSyscalls::default());
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
