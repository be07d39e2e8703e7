//! Filesystem faults under the real `butler-agent run`: the config file replaced by a
//! directory while the agent runs, a state directory that cannot be created or written
//! (under a regular file; and mode 0555 when not running as root, where permissions bite), and
//! a full disk (file writes failing, simulated with `ulimit -f 0`, and the audit log on
//! `/dev/full`). In each the agent keeps serving `/health`, still delivers its event to a
//! local server, logs a clear warning naming the path, and stops with exit 0 on SIGTERM.
//!
//! Unreadable `/proc` files are covered by the host parsers' tests (`tests/it/robust_host.rs`).

use crate::common::capture::{Fault, Recorder, recording_server};
use crate::robust_support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::robust_support::common::{self, Telemetry};
use crate::robust_support::{Agent, Prober, Summary};

const CLASS: &str = "filesystem-faults";
const PROBE_BOUND: Duration = Duration::from_millis(100);

/// A capture endpoint answering 200 to every request.
fn capture_server() -> (SocketAddr, Recorder) {
    let server = recording_server(Fault::Healthy);
    (server.addr, server)
}

/// A host tree with an os-release; with `container`, a `/.dockerenv` too, so the instance ID
/// is kept in the state directory (no Docker socket exists below the tree).
fn host_tree(dir: &Path, container: bool) -> String {
    let root = dir.join(if container { "container-root" } else { "root" });
    std::fs::create_dir_all(root.join("etc")).expect("create the host tree");
    if container {
        std::fs::write(root.join(".dockerenv"), "").expect("write /.dockerenv");
        // A /.dockerenv counts only with container evidence: an overlay root file system.
        std::fs::create_dir_all(root.join("proc/self")).expect("create the host tree");
        std::fs::write(
            root.join("proc/self/mountinfo"),
            "1 0 0:42 / / rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w\n",
        )
        .expect("write mountinfo");
    }
    std::fs::write(
        root.join("etc/os-release"),
        "NAME=\"Ubuntu\"\nVERSION_ID=\"22.04\"\nVERSION_CODENAME=jammy\n",
    )
    .expect("write os-release");
    format!("--root={}", root.display())
}

/// A directory with mode 0555, and whether permissions actually stop writes into it (they
/// do not for root or with CAP_DAC_OVERRIDE, as in many CI containers).
fn read_only_dir(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir(path).expect("create the directory");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o555))
        .expect("make it read-only");
    std::fs::write(path.join("probe"), "x").is_err()
}

/// The common end of every case: the probe saw only quick 200s, nothing panicked, SIGTERM
/// gives exit 0.
fn finish(agent: &mut Agent, prober: Prober, problems: &mut Vec<String>) {
    let report = prober.finish();
    if let Some(p) = report.problem(PROBE_BOUND) {
        problems.push(format!("/health: {p}"));
    }
    let panics = agent.panics();
    if !panics.is_empty() {
        problems.push(format!("panicked: {panics:?}"));
    }
    match agent.stop(Duration::from_secs(10)) {
        Some(0) => {}
        other => problems.push(format!("exit {other:?} after SIGTERM")),
    }
    if !problems.is_empty() {
        problems.push(format!("log:\n{}", agent.log().join("\n")));
    }
}

fn verdict(problems: Vec<String>) -> Option<String> {
    (!problems.is_empty()).then(|| problems.join("\n"))
}

/// The config file becomes a directory between start and the first cycle: the cycle keeps
/// the last good config (its destination is only in the file) with one warning.
#[test]
fn config_file_replaced_by_a_directory() {
    let mut summary = Summary::new(CLASS, "config_file_replaced_by_a_directory");
    let dir = tempfile::tempdir().expect("a temp dir");
    let (server, bodies) = capture_server();
    let config = dir.path().join("production.yaml");
    std::fs::write(
        &config,
        format!(
            "Butler:\n  anonTelemetry: true\n  butlerAgent:\n    posthogHost: http://{server}\n    startDelay: 2s\n    stateDir: {}\n",
            dir.path().join("state").display()
        ),
    )
    .expect("write the config");
    let config_arg = format!("--config={}", config.display());
    let root_arg = host_tree(dir.path(), false);
    let mut agent = Agent::start_with(
        Telemetry::Config(&config),
        &[&config_arg, &root_arg],
        &[],
        dir.path(),
    );
    let prober = Prober::start(agent.health, Duration::from_millis(100));
    agent.wait_log("Telemetry         : on", Duration::from_secs(10));
    std::fs::remove_file(&config).expect("remove the config file");
    std::fs::create_dir(&config).expect("put a directory in its place");
    agent.wait_log("telemetry: delivered", Duration::from_secs(15));

    let mut problems = Vec::new();
    let warnings = agent.messages("WARN");
    let config_warnings: Vec<_> = warnings
        .iter()
        .filter(|w| w.contains("keeping the last good config"))
        .collect();
    if config_warnings.len() != 1 || warnings.len() != 1 {
        problems.push(format!(
            "expected one warning about the config, got {warnings:?}"
        ));
    }
    if !config_warnings
        .iter()
        .all(|w| w.contains(&config.display().to_string()))
    {
        problems.push(format!(
            "the warning does not name the file: {config_warnings:?}"
        ));
    }
    if bodies.requests() != 1 {
        problems.push("the event did not reach the last good destination once".into());
    }
    finish(&mut agent, prober, &mut problems);
    summary.case("config file replaced by a directory", verdict(problems));
    summary.assert_all_passed();
}

/// Runs the agent with `state_dir` (and `extra` env, and optionally under a shell wrapper)
/// against a capture server; returns the problems and the warnings.
fn run_with_state_dir(
    dir: &Path,
    state_dir: &str,
    extra: &[(&str, &str)],
    shell_prefix: Option<&str>,
    container: bool,
) -> (Vec<String>, Vec<String>) {
    let (server, bodies) = capture_server();
    let host = format!("http://{server}");
    let root_arg = host_tree(dir, container);
    let mut env: Vec<(&str, &str)> = vec![
        ("BUTLER_POSTHOG_HOST", &host),
        ("BUTLER_TELEMETRY_START_DELAY", "0s"),
        ("BUTLER_STATE_DIR", state_dir),
    ];
    env.extend_from_slice(extra);
    let mut agent = match shell_prefix {
        None => Agent::start(&[&root_arg], &env, dir),
        Some(prefix) => {
            let mut cmd = Command::new("sh");
            cmd.arg("-c")
                .arg(format!("{prefix}; exec \"$0\" \"$@\""))
                .arg(robust_support::BIN)
                .arg(&root_arg)
                .arg("run")
                .env_clear()
                .env("BUTLER_HEALTH_HOST", "127.0.0.1")
                .env("BUTLER_HEALTH_PORT", "0")
                .env("BUTLER_LOG_FORMAT", "json")
                .envs(common::checked_env(&env))
                .current_dir(dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            Agent::from_command(cmd)
        }
    };
    let prober = Prober::start(agent.health, Duration::from_millis(100));
    let mut problems = Vec::new();
    agent.wait_log("telemetry: delivered", Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(200));
    if bodies.requests() != 1 {
        problems.push("the event was not delivered once".into());
    }
    let warnings = agent.messages("WARN");
    finish(&mut agent, prober, &mut problems);
    (problems, warnings)
}

/// A state directory that cannot be made or written: the agent runs and delivers, and says
/// which directory is the trouble.
#[test]
fn unusable_state_directory() {
    let mut summary = Summary::new(CLASS, "unusable_state_directory");
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").expect("write a regular file");
    let under_file = file.join("state");
    let state = under_file.display().to_string();
    for container in [false, true] {
        let (mut problems, warnings) = run_with_state_dir(dir.path(), &state, &[], None, container);
        eprintln!("state dir under a file (container: {container}): warnings {warnings:?}");
        if !warnings
            .iter()
            .any(|w| w.contains("cannot write the state file") && w.contains(&state))
        {
            problems.push(format!(
                "no warning about the state file names {state}: {warnings:?}"
            ));
        }
        // In a container the instance ID lives there too: its warning names the directory.
        if container
            && !warnings
                .iter()
                .any(|w| w.contains("instance ID may change") && w.contains(&state))
        {
            problems.push(format!(
                "no instance ID warning names {state}: {warnings:?}"
            ));
        }
        let name = if container {
            "state directory under a regular file, in a container"
        } else {
            "state directory under a regular file"
        };
        summary.case(name, verdict(problems));
    }

    let ro = dir.path().join("read-only");
    if !read_only_dir(&ro) {
        eprintln!("read-only state directory: skipped, mode 0555 does not stop this user");
    } else {
        let state = ro.display().to_string();
        let (mut problems, warnings) = run_with_state_dir(dir.path(), &state, &[], None, true);
        if !warnings.iter().any(|w| w.contains(&state)) {
            problems.push(format!("no warning names {state}: {warnings:?}"));
        }
        summary.case("read-only (0555) state directory", verdict(problems));
    }
    summary.assert_all_passed();
}

/// A full disk: every file write fails (`ulimit -f 0`, SIGXFSZ ignored, so writes fail with
/// EFBIG as they would with ENOSPC), and the audit log sits on `/dev/full` (ENOSPC).
#[test]
fn full_disk() {
    let mut summary = Summary::new(CLASS, "full_disk");
    let dir = tempfile::tempdir().expect("a temp dir");
    let state = dir.path().join("state").display().to_string();
    let (mut problems, warnings) = run_with_state_dir(
        dir.path(),
        &state,
        &[("BUTLER_TELEMETRY_AUDIT_LOG", "/dev/full")],
        Some("trap '' XFSZ; ulimit -f 0"),
        true,
    );
    eprintln!("full disk: warnings {warnings:?}");
    if !warnings
        .iter()
        .any(|w| w.contains("audit log /dev/full") && w.contains("No space left"))
    {
        problems.push(format!("no warning about the full audit log: {warnings:?}"));
    }
    for what in ["cannot write the state file", "instance ID may change"] {
        if !warnings
            .iter()
            .any(|w| w.contains(what) && w.contains(&state))
        {
            problems.push(format!("no {what:?} warning names {state}: {warnings:?}"));
        }
    }
    // A secret cut short by the full disk would later be refused as "not 64 hex digits".
    let secret = Path::new(&state).join("instance-secret");
    if secret.exists() {
        problems.push(format!(
            "a half-written {} was left behind",
            secret.display()
        ));
    }
    summary.case("full disk (state and audit log)", verdict(problems));
    summary.assert_all_passed();
}
