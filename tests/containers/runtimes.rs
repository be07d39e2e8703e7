//! The project's image under real runtimes other than plain `docker run`: rootful Podman
//! (`--network none`) and containerd's `ctr`, both loading the image from `docker save`, and a
//! Docker bridge container with the host's `/proc` and `/sys` mounted. Each test asserts what
//! `host --json` and `id --explain` say there, and what a restart and a re-creation do to the ID.
//!
//! A runtime that is absent (no binary, or its daemon does not answer) makes its test
//! `ignored`, with the reason (a harness of its own, libtest-mimic, as `tests/containers/docker.rs`);
//! `BUTLER_REQUIRE_RUNTIMES=1` (set by `.ci/run`) makes that a failure. The image is
//! `BUTLER_TEST_IMAGE` when set, else built once with `scripts/build-image` under a tag of its
//! own, `butler-agent:test-<pid>`; what this run built or loaded into Podman and containerd is
//! removed at the end. Every container comes with telemetry off (`common::docker_run`,
//! `common::telemetry_env`); the commands are `host` and `id`, which send nothing anyway.

use crate::common;
use crate::common::{Telemetry, docker_run, telemetry_env};

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use libtest_mimic::{Completion, Failed, Trial};
use serde_json::Value;

const REQUIRE_VAR: &str = "BUTLER_REQUIRE_RUNTIMES";
const IMAGE_VAR: &str = "BUTLER_TEST_IMAGE";
/// containerd namespace for these tests (ctr's own images and containers stay apart).
const CTR_NS: &str = "butler-agent-test";
/// Podman on hosts with low hard limits refuses its default rlimits; explicit ones always work.
const PODMAN_LIMITS: &[&str] = &[
    "--runtime",
    "runc",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

/// Each test, and the runtime whose absence makes it ignored.
type Test = fn(&str);
const TESTS: &[(&str, &str, &[&str], Test)] = &[
    (
        "podman_rootful_without_a_network",
        "podman",
        &["info", "--format", "{{.Host.OCIRuntime.Name}}"],
        podman_rootful_without_a_network,
    ),
    ("containerd_ctr", "ctr", &["version"], containerd_ctr),
    (
        "docker_bridge_with_host_proc_and_sys_reports_the_hosts_id",
        "docker",
        &["info", "--format", "{{.ServerVersion}}"],
        docker_bridge_with_host_proc_and_sys_reports_the_hosts_id,
    ),
];

/// This suite's trials; `main.rs` runs them with the other container suite's.
pub(crate) fn trials() -> Vec<Trial> {
    TESTS
        .iter()
        .map(|&(name, program, probe, test)| {
            Trial::ignorable_test(name, move || {
                let why = answers(program, probe)
                    .map(|w| format!("{program} unavailable: {w} ({})", fix_for(program)));
                let ready = match why {
                    Some(why) => Err(why),
                    None => image(),
                };
                match ready {
                    Ok(img) => {
                        test(img);
                        Ok(Completion::Completed)
                    }
                    Err(why) if std::env::var(REQUIRE_VAR).as_deref() == Ok("1") => Err(
                        Failed::from(format!("{why}, and {REQUIRE_VAR}=1 requires it")),
                    ),
                    Err(why) => Ok(Completion::ignored_with(format!(
                        "{why}; {REQUIRE_VAR}=1 makes this a failure"
                    ))),
                }
            })
        })
        .collect()
}

/// What to do when a runtime does not answer.
fn fix_for(program: &str) -> &'static str {
    match program {
        "ctr" => "start containerd (`containerd &` as root), or run `bash .ci/run` as root",
        "podman" => {
            "install podman and runc (`apt-get install podman runc`), or run `bash .ci/run` as root"
        }
        _ => "install it, or run `bash .ci/run` as root",
    }
}

/// What this run put in image stores: the built image, and its copies in Podman and containerd.
static BUILT: OnceLock<bool> = OnceLock::new();
static PODMAN_IMAGE: OnceLock<String> = OnceLock::new();
static CTR_IMAGE: OnceLock<String> = OnceLock::new();

pub(crate) fn remove_images() {
    let quiet = |program: &str, args: &[&str]| {
        let _ = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    };
    if let Some(id) = PODMAN_IMAGE.get() {
        quiet("podman", &["rmi", "-f", id]);
    }
    if let Some(r) = CTR_IMAGE.get() {
        quiet("ctr", &["-n", CTR_NS, "images", "rm", r]);
        // containerd removes the image's snapshots in the background; the namespace can go
        // once they are gone.
        for _ in 0..20 {
            let gone = Command::new("ctr")
                .args(["namespaces", "rm", CTR_NS])
                .stdin(Stdio::null())
                .output()
                .is_ok_and(|o| o.status.success());
            if gone {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    if let (Some(true), Ok(tag)) = (BUILT.get(), image()) {
        quiet("docker", &["image", "rm", tag]);
    }
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn cmd(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn ok(program: &str, args: &[&str]) -> String {
    let out = cmd(program, args);
    assert!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Why a command cannot be used: `None` when `program args` succeeds.
fn answers(program: &str, args: &[&str]) -> Option<String> {
    match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "`{program} {}`: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("cannot run {program}: {e}")),
    }
}

/// The image (built once), or why there is none. Docker is needed to build and `docker save`.
fn image() -> Result<&'static str, String> {
    static IMAGE: OnceLock<Result<String, String>> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            if let Some(why) = answers("docker", &["info", "--format", "{{.ServerVersion}}"]) {
                return Err(format!(
                    "no Docker engine to build and save the image: {why}"
                ));
            }
            if let Ok(img) = std::env::var(IMAGE_VAR) {
                let _ = BUILT.set(false);
                return Ok(img);
            }
            let tag = format!("butler-agent:test-{}", std::process::id());
            eprintln!("tests/containers/runtimes.rs: building {tag} with scripts/build-image ...");
            let out = Command::new(repo().join("scripts/build-image"))
                .args(["--tag", &tag])
                .current_dir(repo())
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("cannot run scripts/build-image: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "scripts/build-image failed:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            let _ = BUILT.set(true);
            Ok(tag)
        })
        .as_deref()
        .map_err(Clone::clone)
}

/// `docker save IMAGE | <program> <load args>`.
fn load_saved_image(image: &str, program: &str, load: &[&str]) {
    let mut save = Command::new("docker")
        .args(["save", image])
        .stdout(Stdio::piped())
        .spawn()
        .expect("docker save starts");
    let out = Command::new(program)
        .args(load)
        .stdin(save.stdout.take().expect("piped"))
        .output()
        .expect("the loader runs");
    assert!(save.wait().expect("docker save ends").success());
    assert!(
        out.status.success(),
        "{program} {} failed: {}",
        load.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn unique(what: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "butler-agent-test-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The ID (first line) and the method (`method: ...` line) of `id --explain` output.
fn id_and_method(text: &str) -> (String, String) {
    let id = text.lines().next().unwrap_or("").trim().to_string();
    assert!(
        id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "an ID first: {text}"
    );
    let method = text
        .lines()
        .find_map(|l| l.strip_prefix("method:"))
        .unwrap_or("")
        .trim()
        .to_string();
    (id, method)
}

/// Removes containers whatever the test's outcome.
struct Cleanup(Vec<(&'static str, Vec<String>)>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for (program, args) in self.0.iter().rev() {
            let _ = Command::new(program)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// `podman ARGS`, where ARGS is `common::docker_run`'s `run OPTIONS -e <telemetry off> IMAGE
/// ARGS` (Podman takes Docker's syntax), with `run` replaced by `verb`.
fn podman_args(verb: &str, options: &[&str], image: &str, args: &[&str]) -> Vec<String> {
    let mut opts: Vec<&str> = PODMAN_LIMITS.to_vec();
    opts.extend(options);
    let mut all = docker_run(Telemetry::Off, &opts, image, args);
    all[0] = verb.to_string();
    all
}

fn podman_ok(args: &[String]) -> String {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok("podman", &args)
}

fn podman_rootful_without_a_network(img: &str) {
    load_saved_image(img, "podman", &["load", "-q"]);
    let id = ok("docker", &["image", "inspect", "-f", "{{.Id}}", img]);
    let id = id.trim().trim_start_matches("sha256:").to_string();
    let _ = PODMAN_IMAGE.set(id.clone());

    let facts: Value = serde_json::from_str(&podman_ok(&podman_args(
        "run",
        &["--rm", "--network", "none"],
        &id,
        &["host", "--json"],
    )))
    .expect("JSON");
    assert_eq!(facts["containerRuntime"], "podman", "{facts}");
    assert_eq!(facts["isRunningInDocker"], true);
    let rule = facts["rules"]["containerRuntime"].as_str().unwrap_or("");
    assert!(
        rule.contains("container=") || rule.contains(".containerenv"),
        "{rule}"
    );

    // No network, no host mounts, and a user that cannot write the image's /data: no anchor.
    // A restart keeps the ID, a re-creation changes it, and the warning says why.
    let mut cleanup = Cleanup(Vec::new());
    let create = |name: &str| {
        podman_ok(&podman_args(
            "create",
            &["--name", name, "--network", "none", "--user", "12345"],
            &id,
            &["id", "--explain"],
        ));
    };
    let start = |name: &str| -> (String, String, String) {
        let out = cmd("podman", &["start", "-a", name]);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "podman start {name}: {stderr}");
        let (id, method) = id_and_method(&stdout);
        (id, method, stderr)
    };
    let first = unique("podman");
    let second = unique("podman");
    for n in [&first, &second] {
        cleanup
            .0
            .push(("podman", vec!["rm".into(), "-f".into(), n.clone()]));
    }
    create(&first);
    let (id1, method, stderr) = start(&first);
    assert!(method.contains("own values"), "{method}");
    assert!(
        stderr.contains("runs as uid 12345") && stderr.contains("named volume"),
        "the state directory's owner problem is named: {stderr}"
    );
    let (id1_again, _, _) = start(&first);
    assert_eq!(id1, id1_again, "a restart keeps the ID");
    create(&second);
    let (id2, _, _) = start(&second);
    assert_ne!(
        id1, id2,
        "a re-created container is a new instance, never the same ID"
    );
    drop(cleanup);
}

/// The name containerd gives an image imported from `docker save`.
fn ctr_ref(image: &str) -> String {
    let first = image.split('/').next().unwrap_or("");
    if !image.contains('/') {
        format!("docker.io/library/{image}")
    } else if first.contains('.') || first.contains(':') || first == "localhost" {
        image.to_string()
    } else {
        format!("docker.io/{image}")
    }
}

fn containerd_ctr(img: &str) {
    load_saved_image(img, "ctr", &["-n", CTR_NS, "images", "import", "-"]);
    let reference = ctr_ref(img);
    let _ = CTR_IMAGE.set(reference.clone());
    let env: Vec<String> = telemetry_env(Telemetry::Off)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mut cleanup = Cleanup(Vec::new());
    let ctr = |args: &[&str]| -> String {
        let mut a = vec!["-n", CTR_NS];
        a.extend(args);
        ok("ctr", &a)
    };
    // `ctr VERB --env K=V ... IMAGE NAME /butler-agent ARGS`
    let ctr_with = |verb: &[&str], name: &str, args: &[&str]| -> String {
        let mut a: Vec<&str> = verb.to_vec();
        for e in &env {
            a.extend(["--env", e.as_str()]);
        }
        a.extend([reference.as_str(), name, "/butler-agent"]);
        a.extend(args);
        ctr(&a)
    };
    let remove = |n: &str| -> Vec<(&'static str, Vec<String>)> {
        vec![
            (
                "ctr",
                vec![
                    "-n".into(),
                    CTR_NS.into(),
                    "containers".into(),
                    "delete".into(),
                    n.into(),
                ],
            ),
            (
                "ctr",
                vec![
                    "-n".into(),
                    CTR_NS.into(),
                    "tasks".into(),
                    "delete".into(),
                    "-f".into(),
                    n.into(),
                ],
            ),
        ]
    };

    let name = unique("ctr-host");
    cleanup.0.extend(remove(&name));
    let facts: Value =
        serde_json::from_str(&ctr_with(&["run", "--rm"], &name, &["host", "--json"]))
            .expect("JSON");
    assert_eq!(facts["containerRuntime"], "containerd", "{facts}");
    assert_eq!(facts["isRunningInDocker"], true);
    let rule = facts["rules"]["containerRuntime"].as_str().unwrap_or("");
    assert!(rule.contains("containerd snapshot"), "{rule}");

    // No network and no volume: ctr keeps /data in the container's own snapshot, so the state
    // secret lives as long as the container: kept across a restart, new with a re-creation.
    let first = unique("ctr-id");
    let second = unique("ctr-id");
    for n in [&first, &second] {
        cleanup.0.extend(remove(n));
        ctr_with(&["containers", "create"], n, &["id", "--explain"]);
    }
    let start = |n: &str| {
        let text = ctr(&["tasks", "start", n]);
        // An attached start removes the task when it ends; make sure before the next start.
        let _ = cmd("ctr", &["-n", CTR_NS, "tasks", "delete", n]);
        id_and_method(&text)
    };
    let (id1, method) = start(&first);
    assert_eq!(method, "container: state-directory secret");
    assert_eq!(start(&first).0, id1, "a restart keeps the ID");
    assert_ne!(
        start(&second).0,
        id1,
        "a re-created container is a new instance"
    );
    drop(cleanup);
}

/// A bridge container with the host's /proc and /sys mounted reports Butler's ID of the host:
/// the same as `butler-agent id` on the host itself with the same config.
fn docker_bridge_with_host_proc_and_sys_reports_the_hosts_id(img: &str) {
    let host = common::agent(Telemetry::Off)
        .args(["host", "--json"])
        .output()
        .expect("the binary runs");
    let facts: Value = serde_json::from_slice(&host.stdout).expect("JSON");
    assert!(
        facts["isRunningInDocker"] == false,
        "these tests run inside a container ({}), so there is no host-side ID to compare",
        facts["rules"]["containerRuntime"]
    );
    let on_host = common::agent(Telemetry::Off)
        .arg("id")
        .output()
        .expect("the binary runs");
    assert!(on_host.status.success());
    let on_host = String::from_utf8_lossy(&on_host.stdout).trim().to_string();

    // The same user on both sides, so the same access to the DMI product UUID.
    let uid = nix::unistd::geteuid().as_raw().to_string();
    let name = unique("hostnet");
    let _cleanup = Cleanup(vec![(
        "docker",
        vec!["rm".into(), "-f".into(), name.clone()],
    )]);
    let args = docker_run(
        Telemetry::Off,
        &[
            "--rm",
            "--name",
            &name,
            "--user",
            &uid,
            "-v",
            "/proc:/host/proc:ro",
            "-v",
            "/sys:/host/sys:ro",
            "-e",
            "HOST_PROC=/host/proc",
            "-e",
            "HOST_SYS=/host/sys",
        ],
        img,
        &["id", "--explain"],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let text = ok("docker", &args);
    let (id, method) = id_and_method(&text);
    assert_eq!(
        method, "container: the host's network (Butler's ID on this host)",
        "{text}"
    );
    assert_eq!(id, on_host, "the host's Butler ID: {text}");
}
