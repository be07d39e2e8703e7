//! The agent's own files through the real binary: symbolic links planted at every name it
//! writes (final and temporary) never redirect a write to a victim file outside the state
//! directory; what it creates is 0600 in a 0700 directory under umask 000 and 022; a loose
//! pre-existing secret is tightened and kept; several processes creating the secret at once all
//! end with the same ID. Every agent sends to a local server or has telemetry off.

use crate::common;
use crate::common::capture::{Fault, recording_server};
use crate::common::copy_dir;

use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const VICTIM: &[u8] = b"root-owned file outside the state directory\n";

fn temp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("butler-agent-own-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir is writable");
    d
}

/// A container host tree without machine-id or Docker socket: the ID comes from the secret.
fn container_root(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hosts/docker-scratch/root"),
        &root,
    );
    root
}

/// A local capture endpoint answering 200 to every request.
fn capture_server() -> SocketAddr {
    recording_server(Fault::Healthy).addr
}

/// Runs the binary under `umask`, with only the given environment.
fn agent(umask: &str, root: &Path, env: &[(&str, String)], args: &[&str]) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!("umask {umask}; exec \"$0\" \"$@\""))
        .arg(common::AGENT)
        .arg("--root")
        .arg(root)
        .args(args)
        .env_clear()
        .envs(common::checked_env(env))
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs")
}

fn send_env(addr: SocketAddr, state: &Path, audit: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("BUTLER_POSTHOG_HOST", format!("http://{addr}")),
        ("BUTLER_STATE_DIR", state.display().to_string()),
        ("BUTLER_TELEMETRY_AUDIT_LOG", audit.display().to_string()),
        // Every send rotates, so the rotated name is written too.
        ("BUTLER_TELEMETRY_AUDIT_LOG_MAX_BYTES", "1".into()),
        ("BUTLER_TELEMETRY_RETRIES", "0".into()),
    ]
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .mode()
        & 0o777
}

fn is_link(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every name the agent writes, and every temporary name it used to use or could be guessed to
/// use, is a link to the victim (and, for the final names, a dangling link next to it).
#[test]
fn planted_links_never_redirect_a_write() {
    let dir = temp("links");
    let root = container_root(&dir);
    let victim = dir.join("victim");
    std::fs::write(&victim, VICTIM).expect("write the victim");
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let addr = capture_server();

    // 1. Links at the temporary names only: the files are created as regular files.
    // 2. Links at the final names too: the state file's link is replaced, the secret and the
    //    audit log are refused with a warning naming them; the agent goes on.
    for final_names in [false, true] {
        let state = dir.join(format!("state-{final_names}"));
        std::fs::create_dir(&state).expect("create the state dir");
        let audit = state.join("audit.jsonl");
        let mut temporary = vec![
            ".instance-secret.1".to_string(),
            ".telemetry-state.json.tmp".into(),
            ".telemetry-state.json.1".into(),
            ".instance-secret.tmp".into(),
            ".audit.jsonl.tmp".into(),
        ];
        // The old names used the PID: cover the PIDs the next processes will likely get.
        let me = std::process::id();
        temporary.extend((me..me + 200).map(|p| format!(".instance-secret.{p}")));
        for name in &temporary {
            symlink(&victim, state.join(name)).expect("plant a link");
        }
        if final_names {
            for name in [
                "instance-secret",
                "telemetry-state.json",
                "audit.jsonl",
                "audit.jsonl.1",
            ] {
                symlink(&victim, state.join(name)).expect("plant a link");
            }
        }
        for _ in 0..2 {
            let out = agent(
                "022",
                &root,
                &send_env(addr, &state, &audit),
                &["telemetry", "send"],
            );
            assert!(out.status.success(), "{}", text(&out));
            if final_names {
                let err = String::from_utf8_lossy(&out.stderr);
                for name in ["instance-secret", "audit.jsonl"] {
                    assert!(
                        err.contains(&state.join(name).display().to_string())
                            && err.contains("symbolic link"),
                        "{name} not named: {err}"
                    );
                }
            }
            let id = agent("022", &root, &send_env(addr, &state, &audit), &["id"]);
            assert!(id.status.success(), "{}", text(&id));
        }
        assert_eq!(
            std::fs::read(&victim).expect("victim"),
            VICTIM,
            "victim changed"
        );
        assert_eq!(mode(&victim), 0o644, "victim's mode changed");
        for name in &temporary {
            assert!(is_link(&state.join(name)), "{name} was replaced");
        }
        let state_file = state.join("telemetry-state.json");
        assert!(!is_link(&state_file), "the state file is still a link");
        assert_eq!(mode(&state_file), 0o600);
        if final_names {
            assert!(is_link(&state.join("instance-secret")));
            assert!(is_link(&audit));
        } else {
            for f in ["instance-secret", "audit.jsonl", "audit.jsonl.1"] {
                assert!(!is_link(&state.join(f)), "{f}");
                assert_eq!(mode(&state.join(f)), 0o600, "{f}");
            }
        }
        // Nothing but the planted links and the agent's own files.
        let extra: Vec<_> = std::fs::read_dir(&state)
            .expect("listable")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !temporary.contains(n))
            .filter(|n| {
                ![
                    "instance-secret",
                    "telemetry-state.json",
                    "audit.jsonl",
                    "audit.jsonl.1",
                ]
                .contains(&n.as_str())
            })
            .collect();
        assert!(extra.is_empty(), "left behind: {extra:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn created_files_are_private_under_any_umask() {
    let dir = temp("umask");
    let root = container_root(&dir);
    let addr = capture_server();
    for umask in ["000", "022"] {
        let state = dir.join(format!("u{umask}/new/state"));
        let audit = dir.join(format!("u{umask}/logs/audit.jsonl"));
        for _ in 0..2 {
            let out = agent(
                umask,
                &root,
                &send_env(addr, &state, &audit),
                &["telemetry", "send"],
            );
            assert!(out.status.success(), "{}", text(&out));
        }
        for d in [
            state.clone(),
            dir.join(format!("u{umask}/new")),
            dir.join(format!("u{umask}/logs")),
        ] {
            assert_eq!(mode(&d), 0o700, "umask {umask}: {}", d.display());
        }
        for f in [
            state.join("instance-secret"),
            state.join("telemetry-state.json"),
            audit.clone(),
            PathBuf::from(format!("{}.1", audit.display())),
        ] {
            assert_eq!(mode(&f), 0o600, "umask {umask}: {}", f.display());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_loose_secret_is_tightened_and_kept() {
    let dir = temp("loose");
    let root = container_root(&dir);
    let secret = "ab".repeat(32);
    let id_with = |name: &str, file_mode: u32| {
        let state = dir.join(name);
        std::fs::create_dir_all(&state).expect("create");
        let file = state.join("instance-secret");
        std::fs::write(&file, format!("{secret}\n")).expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(file_mode)).expect("chmod");
        let env = [
            ("BUTLER_STATE_DIR", state.display().to_string()),
            ("BUTLER_ANON_TELEMETRY", "false".to_string()),
        ];
        let out = agent("022", &root, &env, &["id"]);
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(
            std::fs::read_to_string(&file).expect("kept"),
            format!("{secret}\n")
        );
        (
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            mode(&file),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (tight_id, tight_mode, _) = id_with("tight", 0o600);
    let (loose_id, loose_mode, log) = id_with("loose", 0o644);
    assert_eq!(tight_mode, 0o600);
    assert_eq!(loose_mode, 0o600, "not tightened: {log}");
    assert_eq!(loose_id, tight_id, "the same secret gives the same ID");
    let (world_id, world_mode, _) = id_with("world", 0o666);
    assert_eq!((world_id.as_str(), world_mode), (tight_id.as_str(), 0o600));

    // Owned by someone else (possible to arrange only as root): a warning naming the file and
    // the fix, the secret still used.
    if nix::unistd::geteuid().is_root() {
        let state = dir.join("foreign");
        std::fs::create_dir_all(&state).expect("create");
        let file = state.join("instance-secret");
        std::fs::write(&file, format!("{secret}\n")).expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        nix::unistd::chown(&file, Some(65534.into()), Some(65534.into())).expect("chown");
        let env = [
            ("BUTLER_STATE_DIR", state.display().to_string()),
            ("BUTLER_ANON_TELEMETRY", "false".to_string()),
        ];
        let out = agent("022", &root, &env, &["id"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), tight_id);
        assert_eq!(mode(&file), 0o644);
        assert_eq!(err.matches("WARN").count(), 1, "{err}");
        assert!(
            err.contains(&file.display().to_string()) && err.contains("chmod 600"),
            "{err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn racing_processes_agree_on_one_secret() {
    let dir = temp("race");
    let root = container_root(&dir);
    for round in 0..6 {
        let state = dir.join(format!("state-{round}"));
        let env = [
            ("BUTLER_STATE_DIR", state.display().to_string()),
            ("BUTLER_ANON_TELEMETRY", "false".to_string()),
        ];
        let children: Vec<_> = (0..8)
            .map(|_| {
                common::agent_with(&env)
                    .arg("--root")
                    .arg(&root)
                    .args(["id", "--explain"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("the binary starts")
            })
            .collect();
        let outs: Vec<Output> = children
            .into_iter()
            .map(|c| c.wait_with_output().expect("the binary ends"))
            .collect();
        let ids: Vec<String> = outs
            .iter()
            .map(|o| {
                assert!(o.status.success(), "{}", text(o));
                let t = String::from_utf8_lossy(&o.stdout).into_owned();
                assert!(t.contains("state-directory secret"), "{t}");
                t.lines().next().unwrap_or_default().to_string()
            })
            .collect();
        assert!(ids.iter().all(|i| i == &ids[0]), "round {round}: {ids:?}");
        // Exactly the secret: no temporary file left by a loser.
        let names: Vec<_> = std::fs::read_dir(&state)
            .expect("created")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("instance-secret")]);
        // A later run keeps the ID.
        let again = agent("022", &root, &env, &["id", "--explain"]);
        assert_eq!(
            String::from_utf8_lossy(&again.stdout).lines().next(),
            Some(ids[0].as_str())
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
