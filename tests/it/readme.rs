//! The README's "Run it" block, run as written: each one-shot line exits 0, the line ending in
//! `&` starts in the background, and the last line (the agent) starts, answers `/health` and
//! delivers its event to the local sink, then stops with exit 0 on SIGTERM.
//!
//! The block's `cargo build --release` is the one line not run: the test works in a scratch
//! directory whose `target/release/butler-agent` is the binary under test and whose `tests/`
//! is the repository's. The block runs in a network namespace of its own with only a loopback
//! interface (`unshare -rn`) where the machine allows it, so its fixed ports cannot collide
//! with anything and nothing in it can reach another machine; otherwise on this machine's
//! loopback. Either way its agent starts through `tests/it/common` (telemetry to this machine
//! unless the block itself names a destination, which must then be local too).

use crate::common;
use crate::common::{NOWHERE, Telemetry};

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const HEALTH: &str = "127.0.0.1:12398";

/// The lines of the first `sh` block after the "Run it" heading, comments removed.
fn run_it_block() -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md readable");
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Run it"))
        .expect("README has a \"Run it\" section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the section has a sh block");
    block
        .lines()
        .map(|l| l.split(" #").next().unwrap_or_default().trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The block as one shell script with the checks between and after its lines.
fn script(lines: &[String]) -> String {
    let (agent, rest) = lines.split_last().expect("the block has lines");
    let mut s = String::from(
        "set -eu\n\
         exec >out.log 2>&1\n\
         pids=\n\
         trap 'kill $pids 2>/dev/null || true' EXIT\n",
    );
    for line in rest {
        if line.starts_with("cargo build") {
            continue;
        }
        if line.ends_with('&') {
            s += &format!("{line}\npids=\"$pids $!\"\n");
        } else {
            s += &format!("{line}\necho \"== exit $? : {}\"\n", line.replace('"', "'"));
        }
    }
    s += "echo '== agent'\n";
    s += &format!("{agent} &\nagent=$!\npids=\"$pids $agent\"\n");
    // /health answers, then the sink prints the event (after the 5 s start delay).
    s += &format!(
        "i=0; until (: <>/dev/tcp/{host}/{port}) 2>/dev/null; do i=$((i+1)); [ $i -lt 100 ] || exit 90; sleep 0.1; done\n\
         exec 3<>/dev/tcp/{host}/{port}\n\
         printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3; echo \"== health $(cat <&3 | tail -n 1)\"; exec 3<&-\n\
         i=0; until sed -n '/^== agent$/,$p' out.log | grep -q '\"event\":\"telemetry sent\"'; do i=$((i+1)); [ $i -lt 300 ] || exit 91; sleep 0.1; done\n\
         kill -TERM $agent; set +e; wait $agent; echo \"== agent exit $?\"\n",
        host = HEALTH.split(':').next().unwrap_or_default(),
        port = HEALTH.split(':').nth(1).unwrap_or_default(),
    );
    s
}

/// `unshare -rn` with a loopback interface, where the machine allows it.
fn own_network() -> bool {
    Command::new("unshare")
        .args(["-rn", "sh", "-c", "ip link set lo up"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn run_it_block_runs_as_written() {
    let lines = run_it_block();
    assert!(
        lines.iter().any(|l| l.starts_with("cargo build --release")),
        "{lines:?}"
    );
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::create_dir_all(dir.path().join("target/release")).expect("temp dir writable");
    std::os::unix::fs::symlink(
        common::AGENT,
        dir.path().join("target/release/butler-agent"),
    )
    .expect("temp dir writable");
    std::os::unix::fs::symlink(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests"),
        dir.path().join("tests"),
    )
    .expect("temp dir writable");
    let body = script(&lines);
    let netns = own_network();
    let mut cmd = if netns {
        let mut c = Command::new("unshare");
        c.args(["-rn", "bash", "-c"])
            .arg(format!("ip link set lo up\n{body}"));
        c
    } else {
        let mut c = Command::new("bash");
        c.arg("-c").arg(&body);
        c
    };
    let status = cmd
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(common::telemetry_env(Telemetry::To(NOWHERE)))
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .status()
        .expect("bash runs");
    let log = std::fs::read_to_string(dir.path().join("out.log")).unwrap_or_default();
    assert!(
        status.success(),
        "the block failed ({status}):\n{body}\n{log}"
    );
    for line in lines
        .iter()
        .filter(|l| !l.ends_with('&') && !l.starts_with("cargo build"))
    {
        if Some(line) == lines.last() {
            continue;
        }
        let line = line.replace('"', "'");
        assert!(
            log.contains(&format!("== exit 0 : {line}")),
            "{line}:\n{log}"
        );
    }
    assert!(
        log.contains(r#"== health {"statusCode":200,"status":"ok"}"#),
        "{log}"
    );
    assert!(log.contains("== agent exit 0"), "{log}");
    // Settle any background process the trap stopped.
    std::thread::sleep(Duration::from_millis(100));
}
