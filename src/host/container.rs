//! Is the agent in a container, and which runtime made it? Read from the agent's own view only.
//!
//! The order follows systemd's `detect_container()` (systemd `src/basic/virt.c`), because its
//! answer is what `systemd-detect-virt -c` users expect, with the markers Butler and is-docker
//! missed added after it:
//!
//! 1. `BUTLER_CONTAINER_RUNTIME` (explicit override; `none` means "not in a container");
//! 2. OpenVZ (`/proc/vz` without `/proc/bc`);
//! 3. `/run/host/container-manager`;
//! 4. `container=` in our own environment when we are PID 1, else `/run/systemd/container`,
//!    else `container=` in `/proc/1/environ` (lxc, systemd-nspawn, podman set it);
//! 5. `/run/.containerenv` → podman, then `/.dockerenv` → docker, but only when container
//!    evidence backs it ([`dockerenv_evidence`]): systemd's source warns that the file can slip
//!    into an image, and VMs whose root file system was built from a container image carry a
//!    stale, empty one;
//! 6. markers in `/proc/self/mountinfo` (`/docker/containers/<id>/`, `overlay-containers/<id>/`,
//!    containerd's state directories, a root mount that is a containerd snapshot, LXC's
//!    `/.lxc-boot-id` over the boot ID): these still work on cgroup v2 with a private cgroup
//!    namespace, where `/proc/self/cgroup` says only `0::/`;
//! 7. PID 1 is lxc's own init (`lxc-execute`, `init.lxc`), which sets no `container=`;
//! 8. cgroup v1 names in `/proc/self/cgroup` (docker, kubepods, containerd, libpod, lxc), and
//!    containerd's default `/<namespace>/<container>` path outside the initial PID namespace;
//! 9. the cgroup-namespace test (`/sys/fs/cgroup/cgroup.type` exists in any non-root cgroup)
//!    → `container-other`.
//!
//! Kubernetes is a separate fact (`KUBERNETES_SERVICE_HOST`, the service-account directory, or
//! kubelet/kubepods markers), and so is WSL ([`is_wsl`]): systemd calls WSL a container, but
//! Butler under WSL is not "running in Docker", so it is reported apart.

use super::{Roots, Syscalls, exists, read_text};

/// The container facts and the rules behind them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Container {
    pub(crate) runtime: Option<String>,
    pub(crate) runtime_rule: String,
    pub(crate) kubernetes: bool,
    pub(crate) kubernetes_rule: String,
}

/// Maps a container manager's own name (`container=` values, override values) to ours.
pub(crate) fn normalize(name: &str) -> String {
    match name.trim().to_ascii_lowercase().as_str() {
        "docker" | "moby" => "docker",
        "podman" | "libpod" => "podman",
        "containerd" | "cri-containerd" => "containerd",
        "lxc" | "lxc-libvirt" | "lxd" | "incus" => "lxc",
        "systemd-nspawn" | "nspawn" => "systemd-nspawn",
        _ => "container-other",
    }
    .to_string()
}

/// WSL kernels name themselves (`...-microsoft-standard-WSL2`, `...-Microsoft`).
pub fn is_wsl(kernel_release: &str) -> bool {
    let k = kernel_release.to_ascii_lowercase();
    k.contains("microsoft") || k.contains("wsl")
}

/// Runs the rules in order; the first that answers decides.
pub(crate) fn detect(roots: &Roots, sys: &dyn Syscalls) -> Container {
    let (runtime, runtime_rule) = runtime(roots, sys);
    let (kubernetes, kubernetes_rule) = kubernetes(roots);
    match (runtime, kubernetes) {
        (None, true) => Container {
            runtime: Some(pod_runtime(roots)),
            runtime_rule: format!("in a Kubernetes pod ({kubernetes_rule})"),
            kubernetes,
            kubernetes_rule,
        },
        (runtime, _) => Container {
            runtime,
            runtime_rule,
            kubernetes,
            kubernetes_rule,
        },
    }
}

fn runtime(roots: &Roots, sys: &dyn Syscalls) -> (Option<String>, String) {
    if let Some(v) = &roots.env.container_override {
        let v = v.trim();
        return if v.is_empty() || v.eq_ignore_ascii_case("none") {
            (
                None,
                format!("{}=none (override)", super::CONTAINER_OVERRIDE),
            )
        } else {
            // The name as it is sent, not as it was given (any text may be set there).
            let name = normalize(v);
            let rule = format!("{}={name} (override)", super::CONTAINER_OVERRIDE);
            (Some(name), rule)
        };
    }
    let own = |p: &str| roots.own_path(p);

    if exists(&own("/proc/vz")) && !exists(&own("/proc/bc")) {
        return (
            Some("container-other".into()),
            "OpenVZ: /proc/vz without /proc/bc".into(),
        );
    }
    if let Some(m) = first_line(&own("/run/host/container-manager")) {
        return translate(roots, &m, "/run/host/container-manager");
    }
    if sys.pid() == 1 {
        if let Some(v) = &roots.env.container_var {
            if v.is_empty() {
                return (
                    None,
                    "container= is empty in our environment (PID 1)".into(),
                );
            }
            return translate(roots, v, "container= in our environment (PID 1)");
        }
    } else {
        if let Some(m) = first_line(&own("/run/systemd/container")) {
            return translate(roots, &m, "/run/systemd/container");
        }
        if let Some(v) = read_text(&own("/proc/1/environ")).and_then(|t| container_var(&t)) {
            if !v.is_empty() {
                return translate(
                    roots,
                    &v,
                    "container= in PID 1's environment (/proc/1/environ)",
                );
            }
        }
    }
    if let Some(found) = container_files(roots) {
        return found;
    }
    let mountinfo = read_text(&own("/proc/self/mountinfo"));
    if let Some(found) = mountinfo.as_deref().and_then(mountinfo_runtime) {
        return found;
    }
    let pid_ns = pid_namespace(roots);
    if let Some(name) = read_text(&own("/proc/1/status")).and_then(|t| status_name(&t)) {
        if LXC_INITS.contains(&name.as_str()) && pid_ns != PidNs::Initial {
            return (
                Some("lxc".into()),
                format!("PID 1 is lxc's init ({name:?} in /proc/1/status; lxc-execute)"),
            );
        }
    }
    let cgroup = read_text(&own("/proc/self/cgroup"));
    if let Some(found) = cgroup.as_deref().and_then(cgroup_runtime) {
        return found;
    }
    if pid_ns == PidNs::Other && cgroup.as_deref().and_then(containerd_cgroup).is_some() {
        // Not the path itself: its second part is the container's name or ID.
        return (
            Some("containerd".into()),
            "a cgroup path in /proc/self/cgroup of containerd's form /<namespace>/<container>, \
             outside the initial PID namespace"
                .into(),
        );
    }
    if let Some(rule) = cgroup_namespace(roots) {
        return (Some("container-other".into()), rule);
    }
    if exists(&own("/.dockerenv")) {
        return (
            None,
            format!(
                "/.dockerenv exists but nothing backs it ({}; root file system not an overlay; \
                 cgroups name no container): a stale file from the image, ignored",
                match pid_ns {
                    PidNs::Initial => "initial PID namespace: PID 2 is kthreadd, parent 0",
                    _ => "PID namespace unknown",
                }
            ),
        );
    }
    (
        None,
        "no container marker (override, container=, /run/.containerenv, /.dockerenv, mountinfo, PID 1, cgroup, cgroup namespace)"
            .into(),
    )
}

/// Names PID 1 has when lxc-execute runs a command: lxc's own init, which passes no
/// `container=` to the command.
const LXC_INITS: &[&str] = &["lxc-execute", "init.lxc", "init.lxc.static", "lxc-init"];

/// Which PID namespace the agent is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PidNs {
    /// The host's: PID 2 is the kernel's `kthreadd`, whose parent is 0.
    Initial,
    /// Another one: `/proc` is readable and PID 2 is something else (or absent).
    Other,
    /// `/proc` is not readable.
    Unknown,
}

/// In the initial PID namespace the kernel's thread creator `kthreadd` is PID 2 with parent 0;
/// no container's PID namespace shows it.
pub(crate) fn pid_namespace(roots: &Roots) -> PidNs {
    if let Some(t) = read_text(&roots.own_path("/proc/2/status")) {
        let ppid = t
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .map(str::trim);
        if status_name(&t).as_deref() == Some("kthreadd") && ppid == Some("0") {
            return PidNs::Initial;
        }
        return PidNs::Other;
    }
    if exists(&roots.own_path("/proc/1/status")) {
        PidNs::Other
    } else {
        PidNs::Unknown
    }
}

/// The `Name:` line of a `/proc/<pid>/status` file.
pub(crate) fn status_name(status: &str) -> Option<String> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Name:"))
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
}

/// Why a `/.dockerenv` is believed: the first piece of container evidence, or `None` when the
/// file stands alone (then it is stale, copied into an image that became a host's root).
pub(crate) fn dockerenv_evidence(roots: &Roots) -> Option<String> {
    if pid_namespace(roots) == PidNs::Other {
        return Some("not the initial PID namespace (PID 2 is not kthreadd)".into());
    }
    if let Some(fs) = read_text(&roots.own_path("/proc/self/mountinfo"))
        .and_then(|t| root_mount(&t).map(|m| m.fstype.to_string()))
        .filter(|fs| is_overlay(fs))
    {
        return Some(format!("the root file system is {fs}"));
    }
    if let Some((_, rule)) =
        read_text(&roots.own_path("/proc/self/cgroup")).and_then(|t| cgroup_runtime(&t))
    {
        return Some(rule);
    }
    cgroup_namespace(roots)
}

fn is_overlay(fstype: &str) -> bool {
    matches!(
        fstype,
        "overlay" | "fuse.fuse-overlayfs" | "overlayfs" | "aufs"
    )
}

/// The root mount of a mountinfo text (the last line whose mount point is `/`).
pub(crate) struct RootMount<'a> {
    pub fstype: &'a str,
    pub super_options: &'a str,
}

pub(crate) fn root_mount(text: &str) -> Option<RootMount<'_>> {
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let point = left.split(' ').nth(4)?;
            let mut r = right.split(' ');
            let fstype = r.next()?;
            let _source = r.next();
            let super_options = r.next().unwrap_or("");
            (point == "/").then_some(RootMount {
                fstype,
                super_options,
            })
        })
        .next_back()
}

/// containerd's default cgroup path `/<namespace>/<container>` (`ctr run`, nerdctl with the
/// cgroupfs driver): the same two-part path on every hierarchy, with no systemd unit suffix.
/// Only read outside the initial PID namespace: a host service can sit in a two-part cgroup.
pub(crate) fn containerd_cgroup(text: &str) -> Option<String> {
    let mut paths = text
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .filter(|p| !p.is_empty());
    let first = paths.next()?;
    let parts: Vec<&str> = first.trim_start_matches('/').split('/').collect();
    let unit = |p: &str| {
        [".slice", ".scope", ".service"]
            .iter()
            .any(|s| p.ends_with(s))
    };
    let shaped = parts.len() == 2 && parts.iter().all(|p| !p.is_empty() && !unit(p));
    (shaped && paths.all(|p| p == first)).then(|| first.to_string())
}

fn first_line(path: &std::path::Path) -> Option<String> {
    super::read_trimmed(path)
}

fn container_files(roots: &Roots) -> Option<(Option<String>, String)> {
    if exists(&roots.own_path("/run/.containerenv")) {
        return Some((Some("podman".into()), "/run/.containerenv exists".into()));
    }
    if exists(&roots.own_path("/.dockerenv")) {
        if let Some(why) = dockerenv_evidence(roots) {
            return Some((Some("docker".into()), format!("/.dockerenv exists; {why}")));
        }
    }
    None
}

fn translate(roots: &Roots, value: &str, source: &str) -> (Option<String>, String) {
    if value.trim() == "oci" {
        // Some images hard-code container=oci, which names no manager: look at the files.
        return container_files(roots)
            .map(|(r, rule)| (r, format!("{source} says \"oci\"; {rule}")))
            .unwrap_or_else(|| {
                (
                    Some("container-other".into()),
                    format!("{source} says \"oci\""),
                )
            });
    }
    (
        Some(normalize(value)),
        format!("{source} says {:?}", value.trim()),
    )
}

/// `container=` in a NUL-separated environment block.
pub fn container_var(environ: &str) -> Option<String> {
    environ
        .split('\0')
        .find_map(|kv| kv.strip_prefix("container="))
        .map(str::to_string)
}

/// Runtime markers in `/proc/self/mountinfo`: inside a container, the bind mounts of hostname,
/// hosts and resolv.conf come from the runtime's per-container state directory, which shows in
/// the mount's *root* field (the 4th). Only that field is read: on the host the same
/// directories appear as mount *points* (e.g. Docker's per-container `shm`), which must not count.
pub fn mountinfo_runtime(text: &str) -> Option<(Option<String>, String)> {
    let has = |needle: &str| mount_sources(text).any(|root| root.contains(needle));
    let kubelet = has("/kubelet/pods/");
    let found = if has("/docker/containers/") {
        Some(("docker", "/docker/containers/<id>/"))
    } else if has("/overlay-containers/") {
        // containers/storage: podman, or CRI-O when the kubelet manages the pod.
        Some((
            if kubelet { "container-other" } else { "podman" },
            "overlay-containers/<id>/",
        ))
    } else if has("/io.containerd.") || has("/containerd/") {
        Some(("containerd", "containerd state directory"))
    } else if root_mount(text)
        .is_some_and(|m| m.super_options.contains("/io.containerd.snapshotter.v1."))
    {
        Some((
            "containerd",
            "root mount from a containerd snapshot (io.containerd.snapshotter.v1.*/snapshots/)",
        ))
    } else if text.lines().any(|l| {
        let mut f = l.split(' ').skip(3);
        f.next() == Some("/.lxc-boot-id") && f.next() == Some("/proc/sys/kernel/random/boot_id")
    }) {
        Some((
            "lxc",
            "LXC's /.lxc-boot-id over /proc/sys/kernel/random/boot_id",
        ))
    } else {
        None
    };
    found.map(|(r, marker)| {
        (
            Some(r.to_string()),
            format!("{marker} in /proc/self/mountinfo"),
        )
    })
}

/// Whether the mount at `mount_point` is an anonymous Docker volume: Docker names those by 64
/// hex digits (`.../volumes/<64 hex>/_data` in the mount's root field), named ones by their name.
/// An anonymous volume is new for every new container, so nothing kept there survives
/// re-creating the container.
pub(crate) fn is_anonymous_volume(mountinfo: &str, mount_point: &str) -> bool {
    let mount_point = mount_point.trim_end_matches('/');
    mountinfo
        .lines()
        .rev()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let root = f.nth(3)?;
            let point = f.next()?;
            Some((root, point))
        })
        // The last mount at a point is the one in effect.
        .find(|(_, point)| *point == mount_point)
        .is_some_and(|(root, _)| {
            let mut parts = root.trim_end_matches('/').rsplit('/');
            parts.next() == Some("_data")
                && parts
                    .next()
                    .is_some_and(|id| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
                && parts.next() == Some("volumes")
        })
}

/// The 4th field of each mountinfo line: the path, within its filesystem, that is mounted.
fn mount_sources(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter_map(|l| l.split(' ').nth(3))
}

#[cfg(test)]
mod volume_tests {
    use super::is_anonymous_volume;

    const ANON: &str = "1139 1120 0:52 /var/lib/docker/volumes/3f1c0e8f6b2d4a5e9c7b1a0d2e4f6a8b0c2d4e6f8a0b2c4d6e8f0a2b4c6d8e0f/_data /data rw,relatime master:1 - ext4 /dev/vda rw";
    const NAMED: &str = "1139 1120 0:52 /var/lib/docker/volumes/butler-agent-state/_data /data rw,relatime master:1 - ext4 /dev/vda rw";

    #[test]
    fn anonymous_and_named_volumes() {
        assert!(is_anonymous_volume(ANON, "/data"));
        assert!(is_anonymous_volume(ANON, "/data/"));
        assert!(!is_anonymous_volume(NAMED, "/data"));
        assert!(!is_anonymous_volume(ANON, "/state"));
        assert!(!is_anonymous_volume("", "/data"));
        assert!(!is_anonymous_volume("garbage", "/data"));
        // A named volume mounted over an anonymous one: the last mount wins.
        assert!(!is_anonymous_volume(&format!("{ANON}\n{NAMED}"), "/data"));
    }
}

/// What the kernel shows of this container's own identity, labelled by source: the cgroup path
/// (`/docker/<id>`, `libpod-<id>`, `/<namespace>/<container>`), the roots of the runtime's
/// per-container bind mounts (`.../containers/<id>/hostname`), and the root file system's upper
/// layer (one per container). All survive a restart and change with re-creation. Values stay in
/// the process: the instance ID hashes them.
pub(crate) fn own_identity(
    cgroup: Option<&str>,
    mountinfo: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(path) = cgroup.and_then(|t| {
        t.lines()
            .filter_map(|l| l.splitn(3, ':').nth(2))
            .find(|p| !p.is_empty() && *p != "/")
            .map(str::to_string)
    }) {
        out.push(("cgroup path in /proc/self/cgroup", path));
    }
    if let Some(text) = mountinfo {
        // Sorted: a runtime may order these mounts differently on each start.
        let mut binds: Vec<&str> = text
            .lines()
            .filter_map(|l| {
                let mut f = l.split(' ').skip(3);
                let root = f.next()?;
                let point = f.next()?;
                (matches!(point, "/etc/hostname" | "/etc/hosts" | "/etc/resolv.conf")
                    && root != "/")
                    .then_some(root)
            })
            .collect();
        binds.sort_unstable();
        binds.dedup();
        if !binds.is_empty() {
            out.push((
                "per-container bind mounts in /proc/self/mountinfo",
                binds.join("\n"),
            ));
        }
        if let Some(upper) = root_mount(text).and_then(|m| {
            m.super_options
                .split(',')
                .find_map(|o| o.strip_prefix("upperdir="))
                .map(str::to_string)
        }) {
            out.push((
                "root file system's upper layer in /proc/self/mountinfo",
                upper,
            ));
        }
    }
    out
}

/// Runtime names in cgroup v1 paths of `/proc/self/cgroup`.
pub fn cgroup_runtime(text: &str) -> Option<(Option<String>, String)> {
    for line in text.lines() {
        let path = line.splitn(3, ':').nth(2).unwrap_or("");
        if path == "/" || path.is_empty() {
            continue;
        }
        // The rule names the marker, never the path: it holds the container's ID (or the
        // nspawn machine's name, the pod's UID).
        const MARKERS: [(&str, &str); 8] = [
            ("/docker/", "docker"),
            ("/docker-", "docker"),
            ("cri-containerd", "containerd"),
            ("libpod", "podman"),
            ("/lxc/", "lxc"),
            ("lxc.payload", "lxc"),
            ("systemd-nspawn@", "systemd-nspawn"),
            // kubepods without a runtime name (e.g. CRI-O's crio-<id>.scope).
            ("kubepods", "container-other"),
        ];
        let Some((marker, r)) = MARKERS.iter().find(|(m, _)| path.contains(m)) else {
            continue;
        };
        return Some((
            Some((*r).into()),
            format!("a cgroup path with {marker:?} in /proc/self/cgroup"),
        ));
    }
    None
}

/// systemd's `running_in_cgroupns()`: a non-root cgroup seen as `/sys/fs/cgroup` means the
/// cgroup namespace was made for us.
fn cgroup_namespace(roots: &Roots) -> Option<String> {
    let cg = roots.own_path("/sys/fs/cgroup");
    if exists(&cg.join("cgroup.controllers")) {
        // cgroup v2: cgroup.type exists in every cgroup but the root.
        (exists(&cg.join("cgroup.events")) && exists(&cg.join("cgroup.type"))).then(|| {
            "cgroup namespace: /sys/fs/cgroup is a non-root cgroup (cgroup.type exists)".into()
        })
    } else {
        // cgroup v1: release_agent exists only in the root of the systemd hierarchy.
        (exists(&cg.join("systemd")) && !exists(&cg.join("systemd/release_agent"))).then(|| {
            "cgroup namespace: /sys/fs/cgroup/systemd has no release_agent (not the root)".into()
        })
    }
}

fn kubernetes(roots: &Roots) -> (bool, String) {
    if roots.env.kubernetes_service_host {
        return (true, "KUBERNETES_SERVICE_HOST is set".into());
    }
    for dir in [
        "/var/run/secrets/kubernetes.io/serviceaccount",
        "/run/secrets/kubernetes.io/serviceaccount",
    ] {
        if exists(&roots.own_path(dir)) {
            return (true, format!("{dir} exists"));
        }
    }
    if read_text(&roots.own_path("/proc/self/mountinfo"))
        .is_some_and(|t| mount_sources(&t).any(|r| r.contains("/kubelet/pods/")))
    {
        return (true, "/kubelet/pods/ in /proc/self/mountinfo".into());
    }
    if read_text(&roots.own_path("/proc/self/cgroup")).is_some_and(|t| t.contains("kubepods")) {
        return (true, "kubepods in /proc/self/cgroup".into());
    }
    (
        false,
        "no KUBERNETES_SERVICE_HOST, service-account directory, kubelet or kubepods marker".into(),
    )
}

/// A pod's runtime when no earlier rule named it.
fn pod_runtime(roots: &Roots) -> String {
    let text = read_text(&roots.own_path("/proc/self/mountinfo")).unwrap_or_default();
    mountinfo_runtime(&text)
        .and_then(|(r, _)| r)
        .unwrap_or_else(|| "container-other".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_ours() {
        assert_eq!(normalize("lxc"), "lxc");
        assert_eq!(normalize("systemd-nspawn"), "systemd-nspawn");
        assert_eq!(normalize("Podman"), "podman");
        assert_eq!(normalize("rkt"), "container-other");
    }

    #[test]
    fn wsl_kernels() {
        assert!(is_wsl("5.15.153.1-microsoft-standard-WSL2"));
        assert!(is_wsl("4.4.0-19041-Microsoft"));
        assert!(!is_wsl("6.8.0-45-generic"));
    }

    #[test]
    fn environ_block() {
        assert_eq!(
            container_var("PATH=/bin\0container=lxc\0").as_deref(),
            Some("lxc")
        );
        assert_eq!(container_var("PATH=/bin\0"), None);
    }

    #[test]
    fn mountinfo_markers() {
        let docker = "1234 1200 0:30 /var/lib/docker/containers/0123abcd/hostname /etc/hostname rw,relatime - ext4 /dev/sda1 rw\n";
        assert_eq!(
            mountinfo_runtime(docker).and_then(|r| r.0).as_deref(),
            Some("docker")
        );
        let podman = "1 2 0:3 /home/u/.local/share/containers/storage/overlay-containers/abc/userdata/hostname /etc/hostname rw - ext4 /dev/sda1 rw\n";
        assert_eq!(
            mountinfo_runtime(podman).and_then(|r| r.0).as_deref(),
            Some("podman")
        );
        assert_eq!(
            mountinfo_runtime("1 2 0:3 / / rw - ext4 /dev/sda1 rw\n"),
            None
        );
        // A Docker host sees each container's shm as a mount point: not a marker.
        let host =
            "700 29 0:55 / /var/lib/docker/containers/0123abcd/mounts/shm rw - tmpfs shm rw\n";
        assert_eq!(mountinfo_runtime(host), None);
    }

    #[test]
    fn cgroup_v1_names() {
        let d = "12:memory:/docker/3f1e2d\n11:cpu:/docker/3f1e2d\n";
        assert_eq!(
            cgroup_runtime(d).and_then(|r| r.0).as_deref(),
            Some("docker")
        );
        let k = "10:memory:/kubepods/burstable/pod1/cri-containerd-abc.scope\n";
        assert_eq!(
            cgroup_runtime(k).and_then(|r| r.0).as_deref(),
            Some("containerd")
        );
        assert_eq!(cgroup_runtime("0::/\n"), None);
        assert_eq!(
            cgroup_runtime("0::/user.slice/user-1000.slice/session-2.scope\n"),
            None
        );
    }
}

#[cfg(test)]
mod evidence_tests {
    use super::*;
    use crate::host::syscalls::FakeSyscalls;

    /// Only the PID matters to container detection.
    fn fake_pid(pid: u32) -> FakeSyscalls {
        FakeSyscalls::default().pid(pid)
    }

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        for (path, text) in files {
            let p = dir.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().expect("has a parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        }
        dir
    }

    const KTHREADD: &str =
        "Name:\tkthreadd\nUmask:\t0000\nState:\tS\nTgid:\t2\nPid:\t2\nPPid:\t0\n";
    const BLOCK_ROOT: &str = "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n";
    const CTR_CGROUP: &str =
        "9:name=systemd:/default/web\n4:memory:/default/web\n0::/default/web\n";

    #[test]
    fn containerd_cgroup_shape() {
        assert_eq!(
            containerd_cgroup(CTR_CGROUP).as_deref(),
            Some("/default/web")
        );
        // A host service, a session, mixed paths, the root: not containerd's shape.
        assert_eq!(containerd_cgroup("1:cpu:/system.slice/ssh.service\n"), None);
        assert_eq!(
            containerd_cgroup("0::/user.slice/user-0.slice/session-1.scope\n"),
            None
        );
        assert_eq!(containerd_cgroup("4:memory:/a/b\n1:cpu:/\n"), None);
        assert_eq!(containerd_cgroup("0::/\n"), None);
        assert_eq!(containerd_cgroup(""), None);
    }

    #[test]
    fn containerd_cgroup_counts_only_outside_the_initial_pid_namespace() {
        // A native-snapshotter container (no overlay marker): the cgroup shape decides.
        let c = tree(&[
            ("/proc/self/cgroup", CTR_CGROUP),
            ("/proc/1/status", "Name:\tsh\n"),
            ("/proc/self/mountinfo", BLOCK_ROOT),
        ]);
        let got = detect(&Roots::at(c.path()), &fake_pid(4242));
        assert_eq!(
            got.runtime.as_deref(),
            Some("containerd"),
            "{}",
            got.runtime_rule
        );
        // The same path on a host (PID 2 is kthreadd) is a host cgroup.
        let h = tree(&[
            ("/proc/self/cgroup", CTR_CGROUP),
            ("/proc/2/status", KTHREADD),
            ("/proc/self/mountinfo", BLOCK_ROOT),
        ]);
        assert_eq!(detect(&Roots::at(h.path()), &fake_pid(4242)).runtime, None);
    }

    #[test]
    fn lxc_init_as_pid_1() {
        let c = tree(&[
            ("/proc/1/status", "Name:\tinit.lxc\nPPid:\t0\n"),
            ("/proc/2/status", "Name:\tsh\nPPid:\t1\n"),
        ]);
        let got = detect(&Roots::at(c.path()), &fake_pid(2));
        assert_eq!(got.runtime.as_deref(), Some("lxc"));
        assert!(
            got.runtime_rule.contains("PID 1 is lxc's init"),
            "{}",
            got.runtime_rule
        );
    }

    #[test]
    fn dockerenv_needs_evidence() {
        // Alone on a host: stale.
        let h = tree(&[
            ("/.dockerenv", ""),
            ("/proc/2/status", KTHREADD),
            ("/proc/self/mountinfo", BLOCK_ROOT),
            ("/proc/self/cgroup", "4:memory:/init/0123abcd\n0::/\n"),
        ]);
        let got = detect(&Roots::at(h.path()), &fake_pid(77));
        assert_eq!(got.runtime, None);
        assert!(got.runtime_rule.contains("stale"), "{}", got.runtime_rule);
        // Each piece of evidence alone makes it count.
        let pidns = tree(&[("/.dockerenv", ""), ("/proc/1/status", "Name:\tsh\n")]);
        let overlay = tree(&[
            ("/.dockerenv", ""),
            ("/proc/2/status", KTHREADD),
            (
                "/proc/self/mountinfo",
                "1 0 0:40 / / rw - fuse.fuse-overlayfs fuse-overlayfs rw\n",
            ),
        ]);
        let cgroup = tree(&[
            ("/.dockerenv", ""),
            ("/proc/2/status", KTHREADD),
            ("/proc/self/cgroup", "4:memory:/docker/0123\n"),
        ]);
        for (name, t) in [
            ("pid namespace", pidns),
            ("overlay root", overlay),
            ("docker cgroup", cgroup),
        ] {
            let got = detect(&Roots::at(t.path()), &fake_pid(77));
            assert_eq!(
                got.runtime.as_deref(),
                Some("docker"),
                "{name}: {}",
                got.runtime_rule
            );
        }
    }
}

#[cfg(test)]
mod identity_tests {
    use super::*;

    #[test]
    fn identity_ignores_mount_order_and_names_sources_only() {
        let cgroup = Some("1:cpu:/libpod_parent/libpod-abc\n0::/\n");
        let hosts = "5 1 8:2 /run/containers/storage/overlay-containers/abc/userdata/hosts /etc/hosts rw - ext4 /dev/vda rw";
        let name = "6 1 8:2 /run/containers/storage/overlay-containers/abc/userdata/hostname /etc/hostname rw - ext4 /dev/vda rw";
        let root = "1 0 0:40 / / rw - overlay overlay rw,lowerdir=/l,upperdir=/var/lib/containers/storage/overlay/abc/diff,workdir=/w";
        let a = own_identity(cgroup, Some(&format!("{root}\n{hosts}\n{name}\n")));
        let b = own_identity(cgroup, Some(&format!("{root}\n{name}\n{hosts}\n")));
        assert_eq!(a, b, "a restart may reorder the mounts");
        let sources: Vec<&str> = a.iter().map(|(s, _)| *s).collect();
        assert_eq!(sources.len(), 3, "{sources:?}");
        assert!(sources.iter().all(|s| !s.contains("abc")));
        assert!(own_identity(None, None).is_empty());
    }
}
