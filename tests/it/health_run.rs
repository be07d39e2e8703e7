//! `butler-agent run` as a process: the health server comes up, `/readyz` turns 200, the banner
//! is logged, SIGTERM and SIGINT end it with exit code 0, and a taken port is a clear error.

use crate::common;
use crate::common::Telemetry;
use crate::robust_support::Agent;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use nix::sys::signal::Signal;

const LIMIT: Duration = Duration::from_secs(10);

/// Starts the agent with telemetry off (nothing is sent anywhere) and a clean environment, in
/// the temporary directory; returns once it listens.
fn start_agent() -> Agent {
    Agent::start_with(Telemetry::Off, &[], &[], &std::env::temp_dir())
}

/// The same command, for an agent that may never listen: `extra_env` on top.
fn launch_agent(extra_env: &[(&str, &str)]) -> Agent {
    let mut cmd = common::agent(Telemetry::Off);
    cmd.arg("run")
        .env("BUTLER_HEALTH_HOST", "127.0.0.1")
        .env("BUTLER_HEALTH_PORT", "0")
        .current_dir(std::env::temp_dir())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    Agent::launch(cmd)
}

fn http_get(addr: SocketAddr, path: &str) -> u16 {
    common::get_status(addr, path).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

fn run_until(signal: Signal) {
    let mut agent = start_agent();
    let addr = agent.health;
    assert_ne!(addr.port(), 0, "the log names the bound port");
    agent.wait_log("Instance ID", LIMIT);
    agent.wait_log("Telemetry         : off: DO_NOT_TRACK", LIMIT);
    assert_eq!(http_get(addr, "/readyz"), 200);
    assert_eq!(http_get(addr, "/health"), 200);
    assert_eq!(agent.signal(signal, LIMIT), Some(0), "{:?}", agent.log());
    agent.wait_log("received: stopping", LIMIT);
    assert!(
        TcpStream::connect(addr).is_err(),
        "the health port is closed after exit"
    );
}

#[test]
fn sigterm_stops_the_agent_with_exit_0() {
    run_until(Signal::SIGTERM);
}

#[test]
fn sigint_stops_the_agent_with_exit_0() {
    run_until(Signal::SIGINT);
}

#[test]
fn a_taken_port_is_a_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind a port to occupy");
    let port = taken
        .local_addr()
        .expect("bound listener has an address")
        .port()
        .to_string();
    let mut agent = launch_agent(&[("BUTLER_HEALTH_PORT", &port)]);
    let code = agent.wait_exit(LIMIT);
    // The reader thread may still be draining the pipe.
    let err = agent.wait_log("cannot listen on", LIMIT);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}"))
            && err.contains("BUTLER_HEALTH_PORT"),
        "{err}"
    );
}

#[test]
fn health_server_can_be_turned_off() {
    let mut agent = launch_agent(&[("BUTLER_HEALTH_ENABLE", "false")]);
    agent.wait_log("health server disabled", LIMIT);
    agent.wait_log("Health server     : disabled", LIMIT);
    assert_eq!(agent.stop(LIMIT), Some(0));
}

/// Eight kept-alive clients, five requests each, in turns: every answer is 200.
fn busy_kept_alive_clients(agent: &Agent) {
    use common::http_answer::read_kept_alive_answer;
    use std::io::Write;
    let mut clients: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(agent.health).expect("connect"))
        .collect();
    for round in 0..5 {
        for c in &mut clients {
            c.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
                .expect("send");
            let answer = read_kept_alive_answer(c, LIMIT);
            assert_eq!(
                answer.map(|a| a.0),
                Some(200),
                "round {round}: {:?}",
                agent.log()
            );
        }
    }
}

/// Probes with a new connection per request are answered by the health thread alone (the
/// second serving thread is not even started); busy kept-alive clients are shared with a second
/// thread, every request answered; SIGTERM still ends it at once with exit 0.
#[test]
fn kept_alive_clients_get_a_second_thread_and_probes_do_not() {
    let mut agent = start_agent();
    for _ in 0..20 {
        assert_eq!(http_get(agent.health, "/health"), 200);
    }
    let before = common::thread_names(agent.pid);
    assert!(before.iter().any(|t| t == "health"), "{before:?}");
    assert!(!before.iter().any(|t| t == "health-2"), "{before:?}");
    busy_kept_alive_clients(&agent);
    let after = common::thread_names(agent.pid);
    assert!(after.iter().any(|t| t == "health-2"), "{after:?}");
    assert_eq!(agent.stop(LIMIT), Some(0), "{:?}", agent.log());
}

/// A cgroup v1 `pids` group (as `docker run --pids-limit` makes), removed when dropped (once
/// the processes in it have ended).
struct PidsLimit(std::path::PathBuf);

impl PidsLimit {
    /// Puts `pid` in a group of its own whose limit is one below the threads it has now: no
    /// thread can start, and none can start later when an idle pool thread ends. `None` where
    /// the pids controller is not mounted as cgroup v1, or without root.
    fn below_current(pid: u32) -> Option<PidsLimit> {
        let root = std::path::Path::new("/sys/fs/cgroup/pids");
        if !nix::unistd::geteuid().is_root() || !root.join("cgroup.procs").exists() {
            return None;
        }
        let dir = root.join(format!("butler-agent-test-{}-{pid}", std::process::id()));
        std::fs::create_dir(&dir).ok()?;
        let group = PidsLimit(dir);
        std::fs::write(group.0.join("cgroup.procs"), pid.to_string()).ok()?;
        let current: u32 = std::fs::read_to_string(group.0.join("pids.current"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        std::fs::write(group.0.join("pids.max"), (current - 1).to_string()).ok()?;
        Some(group)
    }
}

impl Drop for PidsLimit {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Where no thread can start (a pids limit), kept-alive clients are all served by the health
/// thread: one warning names the cause, no task panics, no request fails, and SIGTERM still
/// exits 0. (A runtime built for a thread that could not start used to be dropped inside the
/// health thread's async context, which tokio answers with a panic: every kept-alive
/// connection was cut.)
#[test]
fn kept_alive_clients_are_served_on_one_thread_when_no_thread_can_start() {
    let mut agent = start_agent();
    let Some(limit) = PidsLimit::below_current(agent.pid) else {
        eprintln!(
            "skipped: needs root and cgroup v1's pids controller (.ci/run's machine has both)"
        );
        return;
    };
    busy_kept_alive_clients(&agent);
    assert!(
        !common::thread_names(agent.pid)
            .iter()
            .any(|t| t == "health-2")
    );
    let warnings: Vec<String> = agent
        .messages("WARN")
        .into_iter()
        .filter(|m| m.contains("cannot start its second thread"))
        .collect();
    assert_eq!(warnings.len(), 1, "{:?}", agent.log());
    assert!(agent.panics().is_empty(), "{:?}", agent.panics());
    assert_eq!(agent.stop(LIMIT), Some(0), "{:?}", agent.log());
    drop(limit);
}

/// Blocking work long after start-up (the config re-read SIGHUP asks for, as the next cycle's
/// would be) where no thread can start any more (a pids limit): it runs on the pool thread
/// kept since start-up. (tokio ends an idle pool thread after 10 s by default, and asking for
/// one that cannot start panics the task that asks: the schedule, so telemetry stopped.)
#[test]
fn a_reread_long_after_start_up_needs_no_new_thread() {
    // The first cycle at once (telemetry is off: it only re-reads the config), so that the
    // blocking work of start-up is all done within a second of the start.
    let mut agent = Agent::start_with(
        Telemetry::Off,
        &[],
        &[("BUTLER_TELEMETRY_START_DELAY", "0s")],
        &std::env::temp_dir(),
    );
    agent.wait_log("Instance ID", LIMIT);
    // Longer than tokio's default keep-alive of an idle blocking thread (10 s).
    std::thread::sleep(Duration::from_secs(12));
    let Some(limit) = PidsLimit::below_current(agent.pid) else {
        eprintln!(
            "skipped: needs root and cgroup v1's pids controller (.ci/run's machine has both)"
        );
        return;
    };
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent.pid as i32), Signal::SIGHUP);
    agent.wait_log("config re-read: nothing changed", LIMIT);
    assert!(agent.panics().is_empty(), "{:?}", agent.log());
    assert_eq!(http_get(agent.health, "/health"), 200);
    assert_eq!(agent.stop(LIMIT), Some(0), "{:?}", agent.log());
    drop(limit);
}
