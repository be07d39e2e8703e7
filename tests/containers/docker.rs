//! The image in real containers: health, the probe, `docker stop`, container detection, what the
//! sink receives, the instance ID across re-creation, `--read-only`, non-root, the compose stack.
//!
//! These tests need a Docker engine. When `docker info` fails, each one is reported as ignored
//! with the reason (this file has its own harness, libtest-mimic, to decide that at run time),
//! unless `BUTLER_REQUIRE_DOCKER=1` is set (CI sets it), which makes a missing engine a failure.
//! The image is built once per run with `scripts/build-image` (a few minutes the first time)
//! under a tag of its own, `butler-agent:test-<pid>`, and removed when the run ends;
//! `BUTLER_TEST_IMAGE=name:tag` uses an image built beforehand instead (and keeps it).
//!
//! Every container comes from `common::docker_run`: telemetry off, or sent to a sink container
//! on a network the test created. Every test names its containers, networks and volumes
//! uniquely and removes them in a `Drop` guard, so a failing test leaves nothing behind.

use crate::common;
use crate::common::{Telemetry, docker_run};

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use libtest_mimic::{Completion, Failed, Trial};
use serde_json::Value;

const REQUIRE_VAR: &str = "BUTLER_REQUIRE_DOCKER";
const IMAGE_VAR: &str = "BUTLER_TEST_IMAGE";

type Test = fn(&str);

const TESTS: &[(&str, Test)] = &[
    (
        "image_is_small_and_configured_for_scratch",
        image_is_small_and_configured_for_scratch,
    ),
    ("container_becomes_healthy", container_becomes_healthy),
    (
        "probe_fails_with_a_clear_line_when_the_agent_is_down",
        probe_fails_with_a_clear_line_when_the_agent_is_down,
    ),
    (
        "docker_stop_is_quick_and_clean",
        docker_stop_is_quick_and_clean,
    ),
    (
        "host_json_detects_docker_with_any_cgroup_namespace",
        host_json_detects_docker_with_any_cgroup_namespace,
    ),
    (
        "sink_receives_an_event_without_identifying_data",
        sink_receives_an_event_without_identifying_data,
    ),
    (
        "state_volume_keeps_the_instance_id",
        state_volume_keeps_the_instance_id,
    ),
    (
        "without_volume_or_machine_id_the_id_changes_and_a_warning_says_why",
        without_volume_or_machine_id_the_id_changes_and_a_warning_says_why,
    ),
    (
        "read_only_root_and_other_non_root_users_work",
        read_only_root_and_other_non_root_users_work,
    ),
    (
        "compose_stack_comes_up_healthy_and_the_sink_gets_an_event",
        compose_stack_comes_up_healthy_and_the_sink_gets_an_event,
    ),
    (
        "readme_docker_quick_start_runs_as_written",
        readme_docker_quick_start_runs_as_written,
    ),
    (
        "binaries_in_the_image_carry_their_dependency_list",
        binaries_in_the_image_carry_their_dependency_list,
    ),
    (
        "butler_beside_the_agent_on_a_network_gives_the_event_its_version",
        butler_beside_the_agent_on_a_network_gives_the_event_its_version,
    ),
    (
        "in_butlers_network_namespace_readyz_follows_butlers_health",
        in_butlers_network_namespace_readyz_follows_butlers_health,
    ),
];

/// This suite's trials; `main.rs` runs them with the other container suite's.
pub(crate) fn trials() -> Vec<Trial> {
    TESTS
        .iter()
        .map(|&(name, test)| {
            Trial::ignorable_test(name, move || match image() {
                Image::Ready { tag, .. } => {
                    test(tag);
                    Ok(Completion::Completed)
                }
                Image::NoEngine(why) => Ok(Completion::ignored_with(why)),
                Image::Broken(e) => Err(Failed::from(e)),
            })
        })
        .collect()
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Writes past the test harness's output capture.
fn loud(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The image the tests run, decided once per run.
enum Image {
    /// `built`: made by this run (and removed at its end), not given by `BUTLER_TEST_IMAGE`.
    Ready { tag: &'static str, built: bool },
    /// No engine, and that is allowed: the tests are ignored, for this reason.
    NoEngine(String),
    /// No engine although one is required, or the build failed.
    Broken(String),
}

static IMAGE: OnceLock<Image> = OnceLock::new();

fn image() -> &'static Image {
    IMAGE.get_or_init(|| {
        let info = Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .output();
        let engine = match info {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_string()),
            Err(e) => Err(format!("cannot run docker: {e}")),
        };
        if let Err(why) = engine {
            if std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "1") {
                return Image::Broken(format!(
                    "no Docker engine ({why}) and {REQUIRE_VAR}=1 requires one"
                ));
            }
            return Image::NoEngine(format!(
                "no Docker engine ({why}); {REQUIRE_VAR}=1 makes this a failure"
            ));
        }
        if let Ok(img) = std::env::var(IMAGE_VAR) {
            return Image::Ready {
                tag: img.leak(),
                built: false,
            };
        }
        // A tag of the tests' own: never the user's butler-agent image.
        let tag = format!("butler-agent:test-{}", std::process::id());
        loud(&format!(
            "tests/containers/docker.rs: building {tag} with scripts/build-image ..."
        ));
        let out = Command::new(repo().join("scripts/build-image"))
            .args(["--tag", &tag])
            .current_dir(repo())
            .stdin(Stdio::null())
            .output();
        match out {
            Err(e) => Image::Broken(format!("cannot run scripts/build-image: {e}")),
            Ok(o) if !o.status.success() => Image::Broken(format!(
                "scripts/build-image failed:\n{}",
                String::from_utf8_lossy(&o.stderr)
            )),
            Ok(_) => Image::Ready {
                tag: tag.leak(),
                built: true,
            },
        }
    })
}

/// The Butler stand-in's image (`butler-standin/`), built once per run with
/// `scripts/build-standin-image` under a tag of the tests' own and removed at the end.
static STANDIN: OnceLock<Result<String, String>> = OnceLock::new();

fn standin_image() -> &'static str {
    let built = STANDIN.get_or_init(|| {
        let tag = format!("butler-standin:test-{}", std::process::id());
        let out = Command::new(repo().join("scripts/build-standin-image"))
            .args(["--tag", &tag])
            .current_dir(repo())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run scripts/build-standin-image: {e}"))?;
        if out.status.success() {
            Ok(tag)
        } else {
            Err(format!(
                "scripts/build-standin-image failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    match built {
        Ok(tag) => tag,
        Err(e) => panic!("{e}"),
    }
}

/// Starts a stand-in container (the stand-in's image, never the agent's): `docker run -d
/// OPTIONS IMAGE serve ARGS`.
fn run_standin(options: &[&str], args: &[&str]) {
    let mut all: Vec<String> = vec!["run".into(), "-d".into()];
    all.extend(options.iter().map(|o| o.to_string()));
    all.push(standin_image().into());
    all.push("serve".into());
    all.extend(args.iter().map(|a| a.to_string()));
    let out = docker_args(&all);
    assert!(
        out.status.success(),
        "starting the stand-in: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Removes the image this run built (its containers are gone by now).
pub(crate) fn remove_built_image() {
    if let Some(Ok(tag)) = STANDIN.get() {
        let _ = docker(&["image", "rm", tag]);
    }
    if let Some(Image::Ready { tag, built: true }) = IMAGE.get() {
        let out = docker(&["image", "rm", tag]);
        if !out.status.success() {
            loud(&format!(
                "tests/containers/docker.rs: could not remove {tag}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
}

/// Runs docker; returns the whole output whatever the exit code.
fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("docker runs (the engine answered `docker info`)")
}

/// Runs docker with owned arguments (from `docker_run`).
fn docker_args(args: &[String]) -> Output {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    docker(&args)
}

/// Starts a container of the image (see `common::docker_run`); returns trimmed stdout.
fn run_ok(telemetry: Telemetry, options: &[&str], img: &str, args: &[&str]) -> String {
    let all = docker_run(telemetry, options, img, args);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    docker_ok(&all)
}

/// Runs docker and returns trimmed stdout; panics with stderr when it fails.
fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A unique name per test and call, so parallel tests and parallel runs never collide.
fn unique(what: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "butler-agent-test-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Removes what a test created, also when the test fails.
#[derive(Default)]
struct Cleanup {
    containers: Vec<String>,
    networks: Vec<String>,
    volumes: Vec<String>,
    compose: Option<(Vec<String>, PathBuf)>,
}

impl Cleanup {
    fn container(&mut self, what: &str) -> String {
        let name = unique(what);
        self.containers.push(name.clone());
        name
    }
    fn network(&mut self, what: &str) -> String {
        let name = unique(what);
        docker_ok(&["network", "create", &name]);
        self.networks.push(name.clone());
        name
    }
    fn volume(&mut self, what: &str) -> String {
        let name = unique(what);
        docker_ok(&["volume", "create", &name]);
        self.volumes.push(name.clone());
        name
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some((cmd, dir)) = &self.compose {
            let _ = Command::new(&cmd[0])
                .args(&cmd[1..])
                .args(["down", "--volumes", "--timeout", "2"])
                .current_dir(dir)
                .output();
        }
        for c in &self.containers {
            // -v also removes the container's anonymous /data volume.
            let _ = docker(&["rm", "-f", "-v", c]);
        }
        for n in &self.networks {
            let _ = docker(&["network", "rm", n]);
        }
        for v in &self.volumes {
            let _ = docker(&["volume", "rm", "-f", v]);
        }
    }
}

/// Polls `check` every 200 ms until it returns `Some`, or panics after `limit`.
fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn health_status(container: &str) -> String {
    docker_ok(&["inspect", "--format", "{{.State.Health.Status}}", container])
}

fn logs(container: &str) -> String {
    let out = docker(&["logs", container]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Waits until the agent answers `/readyz` inside the container (the probe takes a URL).
fn wait_ready(container: &str) {
    wait_for(
        &format!("{container} to be ready"),
        Duration::from_secs(30),
        || {
            let out = docker(&[
                "exec",
                container,
                "/healthcheck",
                "http://127.0.0.1:12398/readyz",
            ]);
            out.status.success().then_some(())
        },
    );
}

/// Finds `key` anywhere in a JSON tree.
fn find_key<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Object(m) => m
            .get(key)
            .or_else(|| m.values().find_map(|x| find_key(x, key))),
        Value::Array(a) => a.iter().find_map(|x| find_key(x, key)),
        _ => None,
    }
}

fn image_is_small_and_configured_for_scratch(img: &str) {
    let size: u64 = docker_ok(&["image", "inspect", "--format", "{{.Size}}", img])
        .parse()
        .expect("image size is a number");
    assert!(size < 8 * 1024 * 1024, "image is {size} bytes, above 8 MiB");
    let config: Value = serde_json::from_str(&docker_ok(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config}}",
        img,
    ]))
    .expect("image config is JSON");
    assert_eq!(config["User"], "10001:10001");
    assert_eq!(config["WorkingDir"], "/nodeapp");
    assert_eq!(config["Entrypoint"], serde_json::json!(["/butler-agent"]));
    assert_eq!(config["Cmd"], serde_json::json!(["run"]));
    assert!(config["ExposedPorts"].get("12398/tcp").is_some());
    assert!(config["Volumes"].get("/data").is_some());
    let env: Vec<&str> = config["Env"]
        .as_array()
        .expect("Env is a list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(env.contains(&"BUTLER_STATE_DIR=/data"), "{env:?}");
    assert!(env.contains(&"NODE_ENV=production"), "{env:?}");
    assert_eq!(
        config["Healthcheck"]["Test"],
        serde_json::json!(["CMD", "/healthcheck"])
    );
    assert_eq!(config["Healthcheck"]["Interval"], 12_000_000_000u64);
    assert_eq!(
        config["Labels"]["org.opencontainers.image.title"],
        "butler-agent"
    );
    assert_eq!(config["Labels"]["org.opencontainers.image.licenses"], "MIT");
}

fn container_becomes_healthy(img: &str) {
    let mut c = Cleanup::default();
    let name = c.container("healthy");
    // The image's HEALTHCHECK command, polled every second instead of every 12 s.
    run_ok(
        Telemetry::Off,
        &["-d", "--name", &name, "--health-interval=1s"],
        img,
        &[],
    );
    wait_for(
        "the container to become healthy",
        Duration::from_secs(30),
        || (health_status(&name) == "healthy").then_some(()),
    );
    let last = docker_ok(&[
        "inspect",
        "--format",
        "{{(index .State.Health.Log 0).Output}}",
        &name,
    ]);
    assert!(
        last.starts_with("healthy: http://127.0.0.1:12398/health answered 200"),
        "{last}"
    );
    let log = logs(&name);
    assert!(log.contains("Instance ID"), "banner in the log: {log}");
    assert!(log.contains("Running in Docker : true"), "{log}");
}

fn probe_fails_with_a_clear_line_when_the_agent_is_down(img: &str) {
    let mut c = Cleanup::default();
    let name = c.container("down");
    run_ok(
        Telemetry::Off,
        &[
            "-d",
            "--name",
            &name,
            "-e",
            "BUTLER_HEALTH_ENABLE=false",
            "--health-interval=1s",
            "--health-retries=1",
            // Failures inside the image's 30 s start period do not count; shorten it.
            "--health-start-period=1s",
        ],
        img,
        &[],
    );
    let out = docker(&["exec", &name, "/healthcheck"]);
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{line}");
    assert_eq!(line.lines().count(), 1, "{line:?}");
    assert!(
        line.starts_with("unhealthy: http://127.0.0.1:12398/health: cannot connect")
            && line.contains("connection refused"),
        "{line}"
    );
    wait_for(
        "Docker to mark it unhealthy",
        Duration::from_secs(30),
        || (health_status(&name) == "unhealthy").then_some(()),
    );
}

fn docker_stop_is_quick_and_clean(img: &str) {
    let mut c = Cleanup::default();
    let name = c.container("stop");
    run_ok(Telemetry::Off, &["-d", "--name", &name], img, &[]);
    wait_ready(&name);
    let started = Instant::now();
    docker_ok(&["stop", &name]);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "docker stop took {took:?}");
    let code = docker_ok(&["inspect", "--format", "{{.State.ExitCode}}", &name]);
    assert_eq!(code, "0", "{}", logs(&name));
    let log = logs(&name);
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(log.contains("stopped"), "{log}");
}

fn host_json_detects_docker_with_any_cgroup_namespace(img: &str) {
    for extra in [None, Some("--cgroupns=host"), Some("--cgroupns=private")] {
        let mut options = vec!["--rm"];
        options.extend(extra);
        let out = docker_args(&docker_run(
            Telemetry::Off,
            &options,
            img,
            &["host", "--json"],
        ));
        let stderr = String::from_utf8_lossy(&out.stderr);
        if extra == Some("--cgroupns=private") && stderr.contains("cgroup namespaces") {
            // Engines on hosts without cgroup namespace support refuse the flag itself.
            loud(&format!("note: {stderr}"));
            continue;
        }
        assert!(out.status.success(), "{extra:?}: {stderr}");
        let facts: Value = serde_json::from_slice(&out.stdout).expect("host --json prints JSON");
        assert_eq!(facts["isRunningInDocker"], true, "{extra:?}: {facts}");
        assert_eq!(facts["containerRuntime"], "docker", "{extra:?}: {facts}");
    }
}

fn sink_receives_an_event_without_identifying_data(img: &str) {
    let mut c = Cleanup::default();
    let net = c.network("net");
    let sink = c.container("sink");
    let agent = c.container("agent");
    run_ok(
        Telemetry::Off,
        &[
            "-d",
            "--name",
            &sink,
            "--network",
            &net,
            "--network-alias",
            "sink",
        ],
        img,
        &[
            "sink",
            "--listen",
            "0.0.0.0:8080",
            "--out",
            "/data/events.jsonl",
        ],
    );
    run_ok(
        Telemetry::To("http://sink:8080"),
        &[
            "-d",
            "--name",
            &agent,
            "--network",
            &net,
            "-e",
            "BUTLER_TELEMETRY_START_DELAY=1s",
        ],
        img,
        &[],
    );
    let dir = tempdir();
    let events_file = dir.join("events.jsonl");
    let events = wait_for(
        "the sink to receive an event",
        Duration::from_secs(40),
        || {
            let src = format!("{sink}:/data/events.jsonl");
            let out = docker(&["cp", &src, &dir.to_string_lossy()]);
            if !out.status.success() {
                return None;
            }
            std::fs::read_to_string(&events_file)
                .ok()
                .filter(|t| !t.trim().is_empty())
        },
    );
    let line = events.lines().next().expect("at least one event line");
    let event: Value = serde_json::from_str(line).expect("each event line is JSON");
    assert_eq!(
        find_key(&event, "system_isRunningInDocker"),
        Some(&Value::Bool(true)),
        "{event}"
    );

    let facts = docker_ok(&[
        "inspect",
        "--format",
        "{{.Id}}\n{{.Config.Hostname}}\n{{range .NetworkSettings.Networks}}{{.IPAddress}}\n{{.MacAddress}}\n{{end}}",
        &agent,
    ]);
    let mut secrets: BTreeSet<String> = BTreeSet::new();
    for f in facts.lines().map(str::trim).filter(|f| !f.is_empty()) {
        secrets.insert(f.to_string());
        secrets.insert(f.to_uppercase());
        secrets.insert(f.replace(':', ""));
    }
    let id = facts.lines().next().expect("inspect prints the ID first");
    secrets.insert(id[..12].to_string());
    assert!(
        secrets.len() >= 4,
        "inspect gave ID, host name, IP, MAC: {facts}"
    );
    for s in &secrets {
        assert!(
            !events.to_lowercase().contains(&s.to_lowercase()),
            "the event contains {s:?} from docker inspect"
        );
    }
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(unique("tmp"));
    std::fs::create_dir_all(&dir).expect("create a temp dir");
    dir
}

/// `butler-agent id` in a fresh container; returns (id, stderr).
fn id_in_new_container(img: &str, extra: &[&str]) -> (String, String) {
    let mut options = vec!["--rm"];
    options.extend(extra);
    let out = docker_args(&docker_run(Telemetry::Off, &options, img, &["id"]));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "butler-agent id failed: {stderr}");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "{id:?}"
    );
    (id, stderr)
}

fn state_volume_keeps_the_instance_id(img: &str) {
    let mut c = Cleanup::default();
    let vol = c.volume("state");
    let mount = format!("{vol}:/data");
    let (first, _) = id_in_new_container(img, &["-v", &mount]);
    let (second, _) = id_in_new_container(img, &["-v", &mount]);
    assert_eq!(first, second, "same state volume, same ID");
    // Also with a read-only root filesystem.
    let (third, _) = id_in_new_container(img, &["--read-only", "-v", &mount]);
    assert_eq!(first, third);
}

fn without_volume_or_machine_id_the_id_changes_and_a_warning_says_why(img: &str) {
    // Each `docker run` without -v gets a fresh anonymous volume at /data: a new secret, a new ID.
    // The agent sees the anonymous volume in its mountinfo and says so.
    let (first, warn) = id_in_new_container(img, &[]);
    let (second, _) = id_in_new_container(img, &[]);
    assert_ne!(first, second, "a fresh anonymous volume gives a fresh ID");
    assert!(
        warn.contains("anonymous Docker volume") && warn.contains("butler-agent-state:/data"),
        "a warning names the anonymous volume and the fix: {warn}"
    );
    // A named volume is not warned about.
    let mut named = Cleanup::default();
    let vol = named.volume("named");
    let (_, quiet) = id_in_new_container(img, &["-v", &format!("{vol}:/data")]);
    assert!(!quiet.contains("anonymous"), "{quiet}");
    // No state directory at all: the ID comes from the container's own MAC and IP, and a warning
    // says so. Docker may hand a re-created container the same IP (and MAC), so the second
    // container is created while the first still holds its address, as after a re-deploy.
    let mut c = Cleanup::default();
    let holder = c.container("noid");
    run_ok(
        Telemetry::Off,
        &["-d", "--name", &holder, "-e", "BUTLER_STATE_DIR="],
        img,
        &[],
    );
    let held = docker_ok(&["exec", &holder, "/butler-agent", "id"]);
    let (other, warn) = id_in_new_container(img, &["-e", "BUTLER_STATE_DIR="]);
    assert_ne!(
        held, other,
        "nothing stable to derive from: the ID is the container's own"
    );
    assert!(
        warn.contains("WARN") && warn.contains("volume"),
        "a warning names the mount that would make the ID stable: {warn}"
    );
}

fn read_only_root_and_other_non_root_users_work(img: &str) {
    let mut c = Cleanup::default();
    let default_user = c.container("ro");
    run_ok(
        Telemetry::Off,
        &[
            "-d",
            "--name",
            &default_user,
            "--read-only",
            "--cap-drop=ALL",
            "--security-opt=no-new-privileges",
            "--health-interval=1s",
        ],
        img,
        &[],
    );
    let other_user = c.container("uid");
    run_ok(
        Telemetry::Off,
        &[
            "-d",
            "--name",
            &other_user,
            "--read-only",
            "--user",
            "4242:4242",
            "--health-interval=1s",
        ],
        img,
        &[],
    );
    for name in [&default_user, &other_user] {
        wait_for(
            &format!("{name} to become healthy"),
            Duration::from_secs(30),
            || (health_status(name) == "healthy").then_some(()),
        );
    }
    assert_eq!(process_uids(&default_user), ["10001"], "the image's user");
    assert_eq!(
        process_uids(&other_user),
        ["4242"],
        "the user given to docker run"
    );
}

/// The UIDs of the container's processes, from `docker top`.
fn process_uids(container: &str) -> Vec<String> {
    let top = docker_ok(&["top", container, "-o", "pid,uid"]);
    top.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(str::to_string)
        .collect()
}

/// `docker compose` when the plugin exists, else the standalone `docker-compose`.
fn compose_command() -> Option<Vec<String>> {
    let works = |cmd: &[&str]| {
        Command::new(cmd[0])
            .args(&cmd[1..])
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if works(&["docker", "compose"]) {
        Some(vec!["docker".into(), "compose".into()])
    } else if works(&["docker-compose"]) {
        Some(vec!["docker-compose".into()])
    } else {
        None
    }
}

fn compose_stack_comes_up_healthy_and_the_sink_gets_an_event(img: &str) {
    let Some(compose) = compose_command() else {
        panic!("a Docker engine answers but neither `docker compose` nor `docker-compose` runs");
    };
    let project = unique("compose").replace('-', "");
    let free_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    // Through `env`, so `down` in the cleanup sees the same variables: the tests' own image
    // (never the one a user builds) and a free health port.
    let mut base: Vec<String> = vec![
        "env".into(),
        format!("BUTLER_IMAGE={img}"),
        format!("AGENT_HEALTH_PORT={free_port}"),
    ];
    base.extend(compose);
    base.extend([
        "-p".into(),
        project,
        "-f".into(),
        "docker-compose.yml".into(),
    ]);
    let mut cleanup = Cleanup::default();
    cleanup.compose = Some((base.clone(), repo().to_path_buf()));
    let run = |args: &[&str]| {
        let out = Command::new(&base[0])
            .args(&base[1..])
            .args(args)
            .current_dir(repo())
            .stdin(Stdio::null())
            .output()
            .expect("compose runs");
        assert!(
            out.status.success(),
            "compose {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // Before anything starts: both services use the tests' image, and the agent sends to the
    // sink service, never to PostHog.
    let config: Value = serde_saphyr::from_str(&run(&["config"])).expect("compose config is YAML");
    for service in ["agent", "sink"] {
        assert_eq!(config["services"][service]["image"], img, "{config}");
    }
    let env = &config["services"]["agent"]["environment"];
    let dest = env["BUTLER_POSTHOG_HOST"].as_str().unwrap_or_default();
    assert!(
        dest == "http://sink:8080" && common::is_local(dest),
        "the compose agent sends to {dest:?}: {env}"
    );
    run(&["up", "-d"]);
    let agent = run(&["ps", "-q", "agent"]);
    let sink = run(&["ps", "-q", "sink"]);
    assert!(!agent.is_empty() && !sink.is_empty());
    // The image's 12 s interval applies here: the first check runs 12 s after start.
    wait_for(
        "the compose agent to become healthy",
        Duration::from_secs(60),
        || (health_status(&agent) == "healthy").then_some(()),
    );
    assert_eq!(health_status(&sink), "healthy");
    // No Butler runs in the demo: the first event waits up to the retry window (62 s) for
    // Butler's version at the URL the demo config derives, then says "unknown".
    let sink_log = wait_for(
        "the sink to print an event",
        Duration::from_secs(120),
        || {
            let l = logs(&sink);
            l.contains("telemetry sent").then_some(l)
        },
    );
    assert!(sink_log.contains("system_isRunningInDocker"), "{sink_log}");
    assert!(
        sink_log.contains(r#""serviceVersion":"unknown""#),
        "{sink_log}"
    );
}

/// The README's "Docker quick start" block, run as written but for what a test must not share
/// with the user: the image tag (the tests' own), the container, network and volume names
/// (unique per run, all removed afterwards), the published port (a free one) and the image
/// build (done once by this harness). The block must send to a sink of its own, never to
/// PostHog; the sink must print the event and `/health` must answer Butler's body.
fn readme_docker_quick_start_runs_as_written(img: &str) {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md readable");
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Docker quick start"))
        .expect("README has a \"Docker quick start\" section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the section has a sh block");
    assert!(
        block.contains("BUTLER_POSTHOG_HOST=http://butler-sink:8080"),
        "the quick start sends to its local sink: {block}"
    );
    let mut cleanup = Cleanup::default();
    let (agent, sink) = (cleanup.container("qs-agent"), cleanup.container("qs-sink"));
    let network = unique("qs-net");
    cleanup.networks.push(network.clone());
    let volume = unique("qs-state");
    cleanup.volumes.push(volume.clone());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let script = block
        .lines()
        .filter(|l| !l.starts_with("scripts/build-image"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace(concat!("butler-agent", ":latest"), img)
        .replace("--name butler-agent ", &format!("--name {agent} "))
        .replace("butler-sink", &sink)
        .replace("butler-demo", &network)
        .replace("butler-agent-state", &volume)
        .replace("-p 12398:12398", &format!("-p 127.0.0.1:{port}:12398"))
        .replace("127.0.0.1:12398", &format!("127.0.0.1:{port}"))
        // `curl` right after `docker run -d` would race the agent's start; the block's reader
        // types slower than that.
        .replace(
            "curl -s",
            "sleep 2; curl -s --retry 10 --retry-connrefused --retry-delay 1",
        );
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(repo())
        .stdin(Stdio::null())
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the block failed:\n{script}\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(r#"{"statusCode":200,"status":"ok"}"#),
        "{stdout}"
    );
    let sink_log = wait_for(
        "the quick start's sink to print an event",
        Duration::from_secs(30),
        || {
            let l = logs(&sink);
            l.contains("telemetry sent").then_some(l)
        },
    );
    assert!(sink_log.contains("system_isRunningInDocker"), "{sink_log}");
}

/// `[[package]]` name and version pairs of `Cargo.lock`.
fn cargo_lock() -> BTreeSet<(String, String)> {
    let text = std::fs::read_to_string(repo().join("Cargo.lock")).expect("Cargo.lock readable");
    let mut out = BTreeSet::new();
    for block in text.split("[[package]]").skip(1) {
        let field = |key: &str| {
            block.lines().find_map(|l| {
                l.strip_prefix(key)
                    .and_then(|r| r.strip_prefix(" = \""))
                    .and_then(|r| r.strip_suffix('"'))
                    .map(str::to_string)
            })
        };
        if let (Some(n), Some(v)) = (field("name"), field("version")) {
            out.insert((n, v));
        }
    }
    out
}

/// The names under `[dependencies]` in Cargo.toml: what the agent is built from.
fn direct_dependencies() -> Vec<String> {
    let text = std::fs::read_to_string(repo().join("Cargo.toml")).expect("Cargo.toml readable");
    text.split("\n[dependencies]\n")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .expect("Cargo.toml has [dependencies]")
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim().to_string()))
        .filter(|k| !k.is_empty() && !k.starts_with('#'))
        .collect()
}

/// Name and version pairs of a JSON list of objects.
fn pairs<'a>(items: impl Iterator<Item = &'a Value>) -> BTreeSet<(String, String)> {
    items
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_string(),
                p["version"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// What image scanners read: each binary in the image carries its dependency list
/// (`cargo auditable`), every crate in it is in `Cargo.lock` at the locked version, the agent's
/// list has every direct dependency, and the image's SBOM for each binary lists the same crates.
fn binaries_in_the_image_carry_their_dependency_list(img: &str) {
    let mut c = Cleanup::default();
    let name = c.container("audit");
    // Created, never started: only its files are read.
    docker_ok(&["create", "--name", &name, img]);
    let dir = tempdir();
    let lock = cargo_lock();
    for bin in ["butler-agent", "healthcheck"] {
        docker_ok(&["cp", &format!("{name}:/{bin}"), &dir.to_string_lossy()]);
        docker_ok(&[
            "cp",
            &format!("{name}:/sbom/{bin}.cdx.json"),
            &dir.to_string_lossy(),
        ]);
        let json = auditable_info::json_from_file(&dir.join(bin), Default::default())
            .unwrap_or_else(|e| panic!("/{bin} in the image carries no dependency list: {e}"));
        let audit: Value = serde_json::from_str(&json).expect("the audit data is JSON");
        let packages = audit["packages"].as_array().expect("a package list");
        let listed = pairs(packages.iter());
        for p in &listed {
            assert!(
                lock.contains(p),
                "/{bin} names {p:?}, which Cargo.lock does not have"
            );
        }
        let root: Vec<&Value> = packages.iter().filter(|p| p["root"] == true).collect();
        assert_eq!(root.len(), 1, "{bin}: {root:?}");
        assert_eq!(root[0]["name"], bin);

        let sbom: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("{bin}.cdx.json"))).expect("SBOM copied"),
        )
        .expect("the SBOM is JSON");
        assert_eq!(sbom["bomFormat"], "CycloneDX", "{sbom}");
        let mut in_sbom = pairs(sbom["components"].as_array().into_iter().flatten());
        in_sbom.insert((
            sbom["metadata"]["component"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            sbom["metadata"]["component"]["version"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ));
        let runtime = pairs(packages.iter().filter(|p| p["kind"] != "build"));
        assert!(
            runtime.is_subset(&in_sbom) && in_sbom.is_subset(&listed),
            "{bin}: the SBOM lists {in_sbom:?}, the binary {listed:?}"
        );
        if bin == "butler-agent" {
            let names: BTreeSet<&str> = listed.iter().map(|(n, _)| n.as_str()).collect();
            for dep in direct_dependencies() {
                assert!(
                    names.contains(dep.as_str()),
                    "{dep} is missing from {names:?}"
                );
            }
            assert!(listed.len() > 50, "{} crates", listed.len());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The first layout of deploy/compose: the stand-in (as Butler, answering on 0.0.0.0:8080) and
/// the agent as two containers on a user-defined network; `BUTLER_API_URL=http://<name>:8080`.
/// The event carries the stand-in's version; neither the event nor the agent's log names it.
fn butler_beside_the_agent_on_a_network_gives_the_event_its_version(img: &str) {
    let mut c = Cleanup::default();
    let net = c.network("net");
    let butler = c.container("butler");
    let sink = c.container("sink");
    let agent = c.container("agent");
    run_standin(
        &["--name", &butler, "--network", &net],
        &["--butler-version", "16.0.4"],
    );
    run_ok(
        Telemetry::Off,
        &[
            "-d",
            "--name",
            &sink,
            "--network",
            &net,
            "--network-alias",
            "sink",
        ],
        img,
        &[
            "sink",
            "--listen",
            "0.0.0.0:8080",
            "--out",
            "/data/events.jsonl",
        ],
    );
    let api = format!("BUTLER_API_URL=http://{butler}:8080");
    run_ok(
        Telemetry::To("http://sink:8080"),
        &[
            "-d",
            "--name",
            &agent,
            "--network",
            &net,
            "-e",
            "BUTLER_TELEMETRY_START_DELAY=1s",
            "-e",
            &api,
        ],
        img,
        &[],
    );
    let dir = tempdir();
    let events_file = dir.join("events.jsonl");
    let events = wait_for(
        "the sink to receive an event",
        Duration::from_secs(40),
        || {
            let src = format!("{sink}:/data/events.jsonl");
            if !docker(&["cp", &src, &dir.to_string_lossy()])
                .status
                .success()
            {
                return None;
            }
            std::fs::read_to_string(&events_file)
                .ok()
                .filter(|t| !t.trim().is_empty())
        },
    );
    let event: Value = serde_json::from_str(events.lines().next().unwrap()).unwrap();
    assert_eq!(event["properties"]["serviceVersion"], "16.0.4", "{event}");
    assert!(!events.contains(&butler), "{events}");
    let log = logs(&agent);
    assert!(log.contains("serviceVersion 16.0.4"), "{log}");
    assert!(!log.contains(&butler), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The Kubernetes layout: the agent in the stand-in's network namespace
/// (`--network container:<butler>`), requireButler on, Butler's health endpoint on loopback
/// (12398), the agent on 12399. The probe aimed at `/readyz` (the one-line compose change)
/// follows Butler going silent and coming back; `/livez` stays up.
fn in_butlers_network_namespace_readyz_follows_butlers_health(img: &str) {
    let mut c = Cleanup::default();
    let butler = c.container("butler");
    let agent = c.container("agent");
    run_standin(&["--name", &butler], &["--health-port", "12398"]);
    let dir = tempdir();
    std::fs::write(
        dir.join("production.yaml"),
        "Butler:\n  dockerHealthCheck:\n    enable: true\n    port: 12398\n  restServerConfig:\n    \
         enable: true\n    serverHost: 0.0.0.0\n    serverPort: 8080\n  \
         restServerEndpointsEnable:\n    butlerping: true\n  butlerAgent:\n    \
         requireButler: true\n    healthPort: 12399\n",
    )
    .unwrap();
    let mount = format!("{}:/nodeapp/config:ro", dir.display());
    let network = format!("container:{butler}");
    run_ok(
        Telemetry::Off,
        &["-d", "--name", &agent, "--network", &network, "-v", &mount],
        img,
        &[],
    );
    let probe = |path: &str| {
        docker(&[
            "exec",
            &agent,
            "/healthcheck",
            &format!("http://127.0.0.1:12399{path}"),
        ])
        .status
        .success()
    };
    // The check asks every 5 s and may take 2 s: 15 s is one period with ample room.
    let follow = Duration::from_secs(15);
    wait_for("/readyz to pass", follow, || probe("/readyz").then_some(()));
    docker_ok(&["exec", &butler, "/butler-standin", "silent"]);
    wait_for("/readyz to fail while Butler is silent", follow, || {
        (!probe("/readyz")).then_some(())
    });
    assert!(probe("/livez"), "/livez must not follow Butler");
    assert!(probe("/health"), "/health must not follow Butler");
    docker_ok(&["exec", &butler, "/butler-standin", "answer"]);
    wait_for("/readyz to pass again", follow, || {
        probe("/readyz").then_some(())
    });
    // The health endpoint was asked, not the REST API (stats on the stand-in).
    let stats = docker_ok(&["exec", &butler, "/butler-standin", "stats"]);
    assert!(stats.contains("health="), "{stats}");
    assert!(!stats.contains(" health=0"), "{stats}");
    let _ = std::fs::remove_dir_all(&dir);
}
