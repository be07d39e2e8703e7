//! Shared by the robustness suites that drive the real `butler-agent run` binary: starting it
//! on a loopback port with JSON logs, reading its log and memory, probing `/health` the way a
//! container runtime does, stopping it with SIGTERM, and the per-class summary line.
//!
//! Every agent is killed when its handle is dropped, so a failing assertion leaves no process
//! behind. Summary lines are appended to `target/robustness-summary.txt` (one line per test,
//! written even when the test fails) and `scripts/test` adds them up per class, because libtest
//! hides the output of passing tests.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The one way the tests start the agent (see its docs); the suites reach it through here.
pub(crate) use crate::common;
use common::Telemetry;

pub(crate) const BIN: &str = common::AGENT;

/// The resident memory every robustness case must stay under.
pub(crate) const RSS_BOUND_KIB: u64 = 32 * 1024;

/// An agent with telemetry off, started in the temporary directory.
pub(crate) fn agent() -> Agent {
    Agent::start(&[], &[("DO_NOT_TRACK", "1")], &std::env::temp_dir())
}

/// Why `agent`'s resident memory is out of bounds `phase`, if it is (0 means unreadable).
pub(crate) fn memory_problem(agent: &Agent, phase: &str) -> Option<String> {
    let rss = agent.rss_kib();
    (rss == 0 || rss > RSS_BOUND_KIB)
        .then(|| format!("VmRSS {rss} KiB {phase} (bound {RSS_BOUND_KIB} KiB)"))
}

/// A running `butler-agent run`; killed on drop if still running.
pub(crate) struct Agent {
    child: Child,
    pub(crate) pid: u32,
    pub(crate) health: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Agent {
    /// Starts `butler-agent [args] run` with a clean environment, the health server on a
    /// loopback port chosen by the OS, JSON logs, and `env` on top (its `BUTLER_POSTHOG_HOST`
    /// must be on this machine; without one, telemetry goes nowhere: `common::checked_env`);
    /// returns once the health server has logged its address.
    pub(crate) fn start(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Agent {
        Agent::spawn(common::agent_with(env), args, env, cwd)
    }

    /// As [`Agent::start`], with the destination or opt-out given as `telemetry` (for one
    /// in the test's config file, `Telemetry::Config`).
    pub(crate) fn start_with(
        telemetry: Telemetry,
        args: &[&str],
        env: &[(&str, &str)],
        cwd: &Path,
    ) -> Agent {
        assert!(
            env.iter().all(|(k, _)| *k != "BUTLER_POSTHOG_HOST"),
            "the destination goes in `telemetry`"
        );
        Agent::spawn(common::agent(telemetry), args, env, cwd)
    }

    /// `env` last, so a test can override the defaults; its destination is already set,
    /// checked, on `cmd`.
    fn spawn(mut cmd: Command, args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Agent {
        cmd.args(args)
            .arg("run")
            .env("BUTLER_HEALTH_HOST", "127.0.0.1")
            .env("BUTLER_HEALTH_PORT", "0")
            .env("BUTLER_LOG_FORMAT", "json")
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env.iter().filter(|(k, _)| *k != "BUTLER_POSTHOG_HOST") {
            cmd.env(k, v);
        }
        Agent::from_command(cmd)
    }

    /// Starts `cmd` and returns once the health server has logged its address.
    pub(crate) fn from_command(cmd: Command) -> Agent {
        let mut agent = Agent::launch(cmd);
        let line = agent.wait_log(
            "health server listening on http://",
            Duration::from_secs(10),
        );
        agent.health = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split([' ', '"']).next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("an address in {line:?}"));
        agent
    }

    /// Starts `cmd` (stderr piped) and returns at once: for an agent that may never listen.
    /// `health` is unset (port 0).
    pub(crate) fn launch(mut cmd: Command) -> Agent {
        let mut child = cmd.spawn().expect("the agent binary starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("log lock").push(line);
            }
        });
        let pid = child.id();
        Agent {
            child,
            pid,
            health: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
        }
    }

    /// All stderr lines so far.
    pub(crate) fn log(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }

    /// The messages of log records at `level` (JSON log), e.g. `"WARN"`.
    pub(crate) fn messages(&self, level: &str) -> Vec<String> {
        self.log()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["level"] == level)
            .filter_map(|v| v["fields"]["message"].as_str().map(str::to_string))
            .collect()
    }

    /// Waits for a stderr line containing `what`; panics with the log after `limit`.
    pub(crate) fn wait_log(&mut self, what: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(l) = self.log().into_iter().find(|l| l.contains(what)) {
                return l;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // The reader thread may still be draining the pipe.
                std::thread::sleep(Duration::from_millis(100));
                if let Some(l) = self.log().into_iter().find(|l| l.contains(what)) {
                    return l;
                }
                panic!(
                    "the agent exited ({status}) before logging {what:?}:\n{}",
                    self.log().join("\n")
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "no log line with {what:?} within {limit:?}:\n{}",
                    self.log().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resident set size in KiB, from `/proc/PID/status`.
    pub(crate) fn rss_kib(&self) -> u64 {
        rss_kib(self.pid)
    }

    /// Whether the process is still running.
    pub(crate) fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and waits up to `limit` for the exit; returns the exit code (None when
    /// killed by a signal or still running after the limit, in which case it is killed).
    pub(crate) fn stop(&mut self, limit: Duration) -> Option<i32> {
        self.signal(Signal::SIGTERM, limit)
    }

    /// Sends `signal` and waits up to `limit` for the exit, as [`Agent::stop`].
    pub(crate) fn signal(&mut self, signal: Signal, limit: Duration) -> Option<i32> {
        let _ = kill(Pid::from_raw(self.pid as i32), signal);
        self.wait_exit(limit)
    }

    /// Waits up to `limit` for the exit, as [`Agent::stop`].
    pub(crate) fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(50));
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Lines that show a panic.
    pub(crate) fn panics(&self) -> Vec<String> {
        self.log()
            .into_iter()
            .filter(|l| l.contains("panicked"))
            .collect()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub(crate) fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// One `GET /health` as a probe sends it: the status and how long the answer took.
pub(crate) fn probe(addr: SocketAddr, limit: Duration) -> Result<(u16, Duration), String> {
    probe_path(addr, "/health", limit)
}

/// One `GET path` as a probe sends it: the status and how long the answer took.
pub(crate) fn probe_path(
    addr: SocketAddr,
    path: &str,
    limit: Duration,
) -> Result<(u16, Duration), String> {
    let started = Instant::now();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: probe\r\nUser-Agent: probe\r\nConnection: close\r\n\r\n"
    );
    let answer = common::http_exchange(addr, request.as_bytes(), false, limit)?;
    let took = started.elapsed();
    Ok((common::status_code(&answer)?, took))
}

/// One probe: the status and latency, or what went wrong.
pub(crate) type ProbeResult = Result<(u16, Duration), String>;

/// Probes every case waits for, so a quick case still shows the server answering.
pub(crate) const MIN_PROBES: usize = 3;

/// A well-behaved client probing `/health` every `every` on its own thread until stopped.
pub(crate) struct Prober {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<Vec<ProbeResult>>>,
}

impl Prober {
    pub(crate) fn start(addr: SocketAddr, every: Duration) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let done = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&done);
        let thread = std::thread::spawn(move || {
            let mut results = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                results.push(probe(addr, Duration::from_secs(2)));
                count.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(every);
            }
            results
        });
        Prober {
            stop,
            done,
            thread: Some(thread),
        }
    }

    /// Stops probing (after at least [`MIN_PROBES`], however quick the case was) and returns
    /// what the probes saw.
    pub(crate) fn finish(mut self) -> ProbeReport {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.done.load(Ordering::Relaxed) < MIN_PROBES && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop.store(true, Ordering::Relaxed);
        let results = self
            .thread
            .take()
            .expect("finish is called once")
            .join()
            .expect("the probe thread does not panic");
        ProbeReport::new(results)
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What a [`Prober`] saw.
#[derive(Debug)]
pub(crate) struct ProbeReport {
    pub(crate) total: usize,
    /// Probes that did not get a 200 (the error or the status).
    pub(crate) failures: Vec<String>,
    /// Latencies of the 200 answers, sorted.
    pub(crate) latencies: Vec<Duration>,
}

impl ProbeReport {
    fn new(results: Vec<ProbeResult>) -> Self {
        let total = results.len();
        let mut failures = Vec::new();
        let mut latencies = Vec::new();
        for r in results {
            match r {
                Ok((200, took)) => latencies.push(took),
                Ok((status, _)) => failures.push(format!("HTTP {status}")),
                Err(e) => failures.push(e),
            }
        }
        latencies.sort();
        ProbeReport {
            total,
            failures,
            latencies,
        }
    }

    pub(crate) fn max(&self) -> Duration {
        self.latencies.last().copied().unwrap_or_default()
    }

    pub(crate) fn median(&self) -> Duration {
        self.latencies
            .get(self.latencies.len() / 2)
            .copied()
            .unwrap_or_default()
    }

    /// `None` when every probe got 200 within `bound`; else what went wrong.
    pub(crate) fn problem(&self, bound: Duration) -> Option<String> {
        self.problem_within(bound, bound)
    }

    /// `None` when every probe got 200, the median within `median_bound` and the slowest
    /// within `max_bound`; else what went wrong.
    pub(crate) fn problem_within(
        &self,
        median_bound: Duration,
        max_bound: Duration,
    ) -> Option<String> {
        if self.total == 0 {
            return Some("no probe ran".into());
        }
        if !self.failures.is_empty() {
            return Some(format!(
                "{} of {} probes failed: {:?}",
                self.failures.len(),
                self.total,
                self.failures.iter().take(5).collect::<Vec<_>>()
            ));
        }
        (self.median() >= median_bound || self.max() >= max_bound).then(|| {
            format!(
                "probes took median {:?}, at most {:?} ({} probes); bounds: median {median_bound:?}, \
                 slowest {max_bound:?}",
                self.median(),
                self.max(),
                self.total
            )
        })
    }
}

/// Counts the cases of one robustness class and writes one line when dropped, even when the
/// test panics, so a failing case still shows in the summary as tried and not passed.
pub(crate) struct Summary {
    class: &'static str,
    test: &'static str,
    tried: usize,
    failed: Vec<String>,
}

impl Summary {
    pub(crate) fn new(class: &'static str, test: &'static str) -> Self {
        Summary {
            class,
            test,
            tried: 0,
            failed: Vec::new(),
        }
    }

    /// Records one case; `problem` is `None` when it passed.
    pub(crate) fn case(&mut self, name: &str, problem: Option<String>) {
        self.tried += 1;
        if let Some(p) = problem {
            self.failed.push(format!("{name}: {p}"));
        }
    }

    /// Panics listing every failed case (call at the end of the test).
    pub(crate) fn assert_all_passed(&self) {
        assert!(
            self.failed.is_empty(),
            "{} of {} {} cases failed:\n{}",
            self.failed.len(),
            self.tried,
            self.class,
            self.failed.join("\n")
        );
    }
}

/// `target/robustness-summary.txt`.
pub(crate) fn summary_path() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is target/tmp")
        .join("robustness-summary.txt")
}

impl Drop for Summary {
    fn drop(&mut self) {
        let passed = self.tried - self.failed.len();
        // class, tried, passed, test: scripts/test sums the first three per class.
        let line = format!(
            "{}\t{}\t{}\t{}\n",
            self.class, self.tried, passed, self.test
        );
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(summary_path())
        {
            // One short write with O_APPEND: lines from parallel tests do not interleave.
            let _ = f.write_all(line.as_bytes());
        }
        eprintln!(
            "robustness: {} ({}): {} cases tried, {passed} passed",
            self.class, self.test, self.tried
        );
    }
}

/// Whether the server has closed `c` (EOF or reset), without waiting.
pub(crate) fn closed_by_server(mut c: &TcpStream) -> bool {
    if c.set_nonblocking(true).is_err() {
        return true;
    }
    let mut b = [0u8; 256];
    let closed = match c.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    };
    let _ = c.set_nonblocking(false);
    closed
}

/// The status codes of every answer in `answer`, in order.
pub(crate) fn statuses(answer: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(answer);
    text.match_indices("HTTP/1.")
        .filter_map(|(i, _)| text[i..].split(' ').nth(1)?.parse().ok())
        .collect()
}

/// Raises the soft open-files limit to the hard one, so the flood fits; returns the soft limit.
pub(crate) fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => 1024,
    }
}

/// Why a SIGTERM did not end `agent` cleanly (a panic in its log, or not exit 0 within
/// 10 s); None when it did.
pub(crate) fn stop_problem(agent: &mut Agent) -> Option<String> {
    let panics = agent.panics();
    if !panics.is_empty() {
        return Some(format!("panicked: {panics:?}"));
    }
    match agent.stop(Duration::from_secs(10)) {
        Some(0) => None,
        other => Some(format!("exit {other:?}:\n{}", agent.log().join("\n"))),
    }
}
