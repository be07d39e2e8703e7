//! Every file the real binary reads, replaced by a FIFO, `/dev/zero`, a directory and a 300 MB
//! sparse file: the config file, the CA file, the state file, the instance secret and host
//! files (os-release, mountinfo). Each run ends within seconds with a message naming the file
//! and what is wrong with it (or, for host facts, simply without the fact), and the largest
//! resident size of any run stays within a few MiB of normal runs. Telemetry goes nowhere: a
//! closed local port or off.
//!
//! One test, so its child processes run one at a time and the children's peak resident size
//! (`getrusage(RUSAGE_CHILDREN)`) is theirs alone.

use crate::common;
use crate::common::copy_dir;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

/// Far above what a blocked or unbounded run would take to show, far below a test timeout.
const TIME_LIMIT: Duration = Duration::from_secs(10);
/// Peak resident size allowed above the largest normal run.
const RSS_MARGIN_KIB: i64 = 8 * 1024;
const CLOSED_PORT: &str = "http://127.0.0.1:1";

/// What a file is replaced by.
#[derive(Clone, Copy, Debug)]
enum Bad {
    Fifo,
    DevZero,
    Directory,
    Sparse300M,
}

impl Bad {
    const ALL: [Bad; 4] = [Bad::Fifo, Bad::DevZero, Bad::Directory, Bad::Sparse300M];

    /// Puts it at `path`. `own`: one of the agent's own files, which it never reads through a
    /// link, so a real character device is made there when possible (root).
    fn plant(self, path: &Path, own: bool) -> &'static str {
        let _ = std::fs::remove_file(path);
        let _ = std::fs::remove_dir_all(path);
        match self {
            Bad::Fifo => {
                nix::unistd::mkfifo(path, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
                "a FIFO (named pipe), not a regular file"
            }
            Bad::DevZero if own => {
                use nix::sys::stat::{Mode, SFlag, makedev, mknod};
                if mknod(path, SFlag::S_IFCHR, Mode::S_IRUSR, makedev(1, 5)).is_ok() {
                    "a character device, not a regular file"
                } else {
                    symlink("/dev/zero", path).expect("symlink");
                    "symbolic link"
                }
            }
            Bad::DevZero => {
                symlink("/dev/zero", path).expect("symlink");
                "a character device, not a regular file"
            }
            Bad::Directory => {
                std::fs::create_dir(path).expect("mkdir");
                "a directory, not a regular file"
            }
            Bad::Sparse300M => {
                std::fs::File::create(path)
                    .and_then(|f| f.set_len(300_000_000))
                    .expect("sparse file");
                "is larger than"
            }
        }
    }
}

struct Run {
    out: Output,
    took: Duration,
}

impl Run {
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }

    fn describe(&self) -> String {
        format!(
            "exit {:?} after {:?}\nstdout: {}\nstderr: {}",
            self.out.status.code(),
            self.took,
            String::from_utf8_lossy(&self.out.stdout),
            self.stderr()
        )
    }
}

/// Runs the binary with only `env`, killing it when it outlives [`TIME_LIMIT`].
fn run(root: &Path, env: &[(&str, String)], args: &[&str]) -> Run {
    let start = Instant::now();
    let mut child = common::agent_with(env)
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > TIME_LIMIT {
            let _ = child.kill();
            let out = child.wait_with_output().expect("killed");
            panic!(
                "{args:?} still running after {TIME_LIMIT:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("ended");
    Run {
        out,
        took: start.elapsed(),
    }
}

/// The largest peak resident size of any child waited for so far, in KiB.
fn children_peak_kib() -> i64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage")
        .max_rss()
}

fn temp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("butler-agent-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir is writable");
    d
}

#[test]
fn every_read_is_bounded_regular_and_never_blocks() {
    let dir = temp("bounded-reads");
    let root = dir.join("root");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hosts/docker-scratch/root"),
        &root,
    );
    std::fs::create_dir_all(root.join("etc")).expect("mkdir");
    std::fs::write(
        root.join("etc/os-release"),
        "NAME=\"Alpine Linux\"\nID=alpine\n",
    )
    .expect("write os-release");
    let config = dir.join("production.yaml");
    std::fs::write(&config, "Butler:\n  configQRS:\n    host: sense.example\n").expect("write");
    let state = dir.join("state");
    let off = |extra: &[(&'static str, String)]| {
        let mut env = vec![
            ("BUTLER_ANON_TELEMETRY", "false".to_string()),
            ("BUTLER_STATE_DIR", state.display().to_string()),
        ];
        env.extend_from_slice(extra);
        env
    };
    let send_env = |ca: &Path| {
        vec![
            ("BUTLER_POSTHOG_HOST", CLOSED_PORT.to_string()),
            ("BUTLER_TELEMETRY_RETRIES", "0".to_string()),
            ("BUTLER_CA_FILE", ca.display().to_string()),
            ("BUTLER_STATE_DIR", state.display().to_string()),
        ]
    };
    let cfg = config.display().to_string();

    // Normal runs of every command used below set the baseline.
    let good_ca = dir.join("ca.pem");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    std::fs::write(&good_ca, cert.cert.pem()).expect("write the CA file");
    for (env, args) in [
        (off(&[]), vec!["--config", &cfg, "id", "--explain"]),
        (off(&[]), vec!["--config", &cfg, "telemetry", "status"]),
        (off(&[]), vec!["--config", &cfg, "telemetry", "preview"]),
        (
            send_env(&good_ca),
            vec!["--config", &cfg, "telemetry", "send"],
        ),
    ] {
        let r = run(&root, &env, &args);
        assert!(r.out.status.code().is_some(), "{}", r.describe());
        assert!(!r.stderr().contains("caFile"), "{}", r.describe());
    }
    assert!(
        state.join("instance-secret").is_file() && state.join("telemetry-state.json").is_file()
    );
    let baseline = children_peak_kib();
    let mut slowest = Duration::ZERO;
    let mut check = |what: String, r: &Run, ok: bool| {
        slowest = slowest.max(r.took);
        let peak = children_peak_kib();
        assert!(
            peak <= baseline + RSS_MARGIN_KIB,
            "{what}: peak resident size {peak} KiB, normal runs {baseline} KiB"
        );
        assert!(ok, "{what}: {}", r.describe());
    };

    let bad_file = dir.join("bad");
    for bad in Bad::ALL {
        // The config file: a configuration error, exit 64, naming the file.
        let says = bad.plant(&bad_file, false);
        let bad_cfg = bad_file.display().to_string();
        let r = run(
            &root,
            &off(&[]),
            &["--config", &bad_cfg, "telemetry", "status"],
        );
        let err = r.stderr();
        check(
            format!("config as {bad:?}"),
            &r,
            r.out.status.code() == Some(64) && err.contains(&bad_cfg) && err.contains(says),
        );

        // The CA file: a configuration error naming the setting, for `send` and `run`.
        let r = run(
            &root,
            &send_env(&bad_file),
            &["--config", &cfg, "telemetry", "send"],
        );
        let err = r.stderr();
        check(
            format!("CA file as {bad:?} (send)"),
            &r,
            r.out.status.code() == Some(64)
                && err.contains("caFile / BUTLER_CA_FILE")
                && err.contains(&bad_cfg)
                && err.contains(says),
        );
        let mut run_env = send_env(&bad_file);
        run_env.push(("BUTLER_HEALTH_ENABLE", "false".into()));
        let r = run(&root, &run_env, &["--config", &cfg, "run"]);
        let err = r.stderr();
        check(
            format!("CA file as {bad:?} (run)"),
            &r,
            r.out.status.code() == Some(64)
                && err.contains("caFile / BUTLER_CA_FILE")
                && err.contains(says),
        );

        // The state file: `status` goes on without it, naming it.
        let state_file = state.join("telemetry-state.json");
        let says = bad.plant(&state_file, true);
        let r = run(&root, &off(&[]), &["--config", &cfg, "telemetry", "status"]);
        let err = r.stderr();
        check(
            format!("state file as {bad:?}"),
            &r,
            r.out.status.success()
                && err.contains(&state_file.display().to_string())
                && err.contains(says),
        );
        let _ = std::fs::remove_file(&state_file);
        let _ = std::fs::remove_dir_all(&state_file);

        // The secret: the ID falls back to the next anchor with one warning naming it.
        let secret = state.join("instance-secret");
        let saved = std::fs::read(&secret).ok();
        let says = bad.plant(&secret, true);
        let r = run(&root, &off(&[]), &["--config", &cfg, "id", "--explain"]);
        let err = r.stderr();
        check(
            format!("secret as {bad:?}"),
            &r,
            r.out.status.success()
                && String::from_utf8_lossy(&r.out.stdout).contains("own values")
                && err.matches("WARN").count() == 1
                && err.contains(&secret.display().to_string())
                && err.contains(says),
        );
        let _ = std::fs::remove_file(&secret);
        let _ = std::fs::remove_dir_all(&secret);
        if let Some(s) = saved {
            std::fs::write(&secret, s).expect("restore the secret");
        }

        // Host files: the fact is unknown, the command works.
        for host_file in ["etc/os-release", "proc/self/mountinfo", "proc/meminfo"] {
            let p = root.join(host_file);
            let saved = std::fs::read(&p).ok();
            bad.plant(&p, false);
            let r = run(
                &root,
                &off(&[]),
                &["--config", &cfg, "telemetry", "preview"],
            );
            check(
                format!("{host_file} as {bad:?}"),
                &r,
                r.out.status.success(),
            );
            let _ = std::fs::remove_file(&p);
            let _ = std::fs::remove_dir_all(&p);
            if let Some(s) = saved {
                std::fs::write(&p, s).expect("restore");
            }
        }
    }
    let peak = children_peak_kib();
    println!(
        "peak resident size: normal runs {baseline} KiB, all runs {peak} KiB; slowest run {slowest:?}"
    );
    assert!(slowest < TIME_LIMIT);
    let _ = std::fs::remove_dir_all(&dir);
}
