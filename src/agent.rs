//! The agent that `butler-agent run` runs, top to bottom.
//!
//! 1. Install the SIGTERM/SIGINT handlers (PID 1 ignores SIGTERM without one) and the SIGHUP
//!    one (re-read the config now; never a stop).
//! 2. Bind and start the health server first, so probes get answers (`/readyz` 503) while
//!    start-up work runs; with `requireButler`, start the `butler` readiness check.
//! 3. Gather host facts and the instance ID on the blocking pool: they read files and may be
//!    slow on odd hosts, and must not stall the health server.
//! 4. Release the readiness latch, log the start-up banner (Butler's lines), start the
//!    telemetry scheduler and the config file's watcher (woken by the kernel's reports of a
//!    change, and every [`WATCH_EVERY`] × [`WATCH_UNREPORTED`] anyway; a change re-reads the
//!    file as SIGHUP does, so `/readyz` follows a file that breaks or is fixed,
//!    a Kubernetes ConfigMap update included).
//! 5. Wait for a stop signal; then stop accepting, let health requests in flight finish, give
//!    the telemetry task [`AgentSettings::shutdown_grace`](crate::config::AgentSettings) to
//!    finish a send, and exit 0. A second signal cuts the grace short.
//!
//! It runs on the current-thread runtime of [`crate::runtime::block_on`]; the health server
//! on a thread and runtime of its own ([`health::serve_on_own_thread`]), and busy kept-alive
//! clients of it on a second one, started when first needed.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::butler;
use crate::config::{Env, LoadedConfig};
use crate::error::Failure;
use crate::health::{self, ButlerCheck, Limits, Readiness};
use crate::host::{RealSyscalls, Roots};
use crate::shutdown;
use crate::signals::{Hangups, Signals};
use crate::telemetry::{self, Snapshot, optout, payload, schedule};

/// Runs the agent until a stop signal.
pub(crate) fn run(config: LoadedConfig, env: Arc<dyn Env>, roots: Roots) -> Result<(), Failure> {
    crate::runtime::block_on(agent(config, env, roots))
}

async fn agent(config: LoadedConfig, env: Arc<dyn Env>, roots: Roots) -> Result<(), Failure> {
    // Shared with the start-up's host detection, then handed to the schedule: the tree is not
    // copied (a copy of the production template's tree is about a million instructions).
    let config = Arc::new(config);
    // The file's version as loaded (just read, so this stat is quick): a change during
    // start-up is seen by the watcher as a change.
    let loaded_version = config.source.path().map(file_version);
    let mut signals = Signals::install()?;
    // SIGHUP re-reads the config; installed now so that one during start-up is kept for the
    // schedule instead of stopping the agent.
    let hangups = Hangups::install()?;
    let decision = optout::decide(env.as_ref(), config.butler.anon_telemetry)?;
    if decision.enabled {
        telemetry::sender::check_ca_file(&config.agent).map_err(Failure::CaFile)?;
    }
    let (stop, stop_token) = shutdown::stop_channel();
    let readiness = Readiness::new();
    // Checked at load: with `requireButler` there is a target.
    let butler_target = config
        .agent
        .require_butler
        .then(|| crate::config::butler::readiness_target(&config.butler, &config.agent))
        .flatten();
    if let Some(target) = &butler_target {
        telemetry::sender::check_ca_file(&config.agent).map_err(Failure::CaFile)?;
        readiness.set_butler(ButlerCheck::Pending);
        match butler::probe::client(&config.agent) {
            Ok(client) => {
                tokio::spawn(butler::ready::watch(
                    target.clone(),
                    client,
                    readiness.clone(),
                    butler::ready::PERIOD,
                    stop_token.wait(),
                ));
            }
            Err(e) => {
                tracing::error!("butler check: {e}; /readyz fails");
                readiness.set_butler(ButlerCheck::Failed(e.to_string().into()));
            }
        }
    }

    let health_addr = SocketAddr::new(config.agent.health_host, config.agent.health_port);
    let mut health_bound = None;
    let health_task = if config.agent.health_enable {
        let listener = health::bind(health_addr).map_err(|source| Failure::HealthBind {
            addr: health_addr,
            source,
        })?;
        let bound = listener.local_addr().unwrap_or(health_addr);
        health_bound = Some(bound);
        tracing::info!("health server listening on http://{bound} (/health, /livez, /readyz)");
        let serving = health::serve_on_own_thread(
            listener,
            readiness.clone(),
            Limits::default(),
            stop_token.wait(),
        )
        .map_err(|source| Failure::HealthBind {
            addr: health_addr,
            source,
        })?;
        Some(serving)
    } else {
        tracing::info!("health server disabled by configuration");
        None
    };

    let gather = {
        let config = Arc::clone(&config);
        let roots = roots.clone();
        tokio::task::spawn_blocking(move || telemetry::gather(&config, &roots, &RealSyscalls))
    };
    let snapshot = tokio::select! {
        joined = gather => match joined {
            Ok(snapshot) => snapshot,
            Err(e) => {
                stop.stop();
                drain(health_task, None, config.agent.shutdown_grace, signals.recv()).await;
                return Err(Failure::Gather(e.to_string()));
            }
        },
        sig = signals.recv() => {
            tracing::info!("{sig} received during start-up: stopping");
            stop.stop();
            drain(health_task, None, config.agent.shutdown_grace, signals.recv()).await;
            return Ok(());
        }
    };
    readiness.release();
    let butler_line = butler_target.as_ref().map_or_else(
        || "not required (requireButler is off)".to_string(),
        |t| format!("required: /readyz asks {t}"),
    );
    for line in banner(
        &config,
        &snapshot,
        &roots,
        decision.explain(),
        health_bound,
        &butler_line,
    ) {
        tracing::info!("{line}");
    }

    // The file's changes reach the scheduler as SIGHUP does; one waiting covers any more.
    let hangups = match (config.source.path(), loaded_version) {
        (Some(path), Some(version)) => {
            let (changed, changes) = tokio::sync::mpsc::channel(1);
            tokio::spawn(watch_config(
                path.to_path_buf(),
                version,
                WATCH_EVERY,
                changed,
                stop_token.wait(),
            ));
            hangups.watch(changes)
        }
        _ => hangups,
    };
    let grace = config.agent.shutdown_grace;
    let scheduler = tokio::spawn(schedule::run(
        schedule::ScheduleContext {
            // The only owner left once host detection has returned: taken, not copied.
            initial: Arc::unwrap_or_clone(config),
            env,
            roots,
            hangups,
            readiness,
            sys: Arc::new(RealSyscalls),
        },
        stop_token.wait(),
    ));

    let sig = signals.recv().await;
    tracing::info!(
        "{sig} received: stopping (telemetry grace {})",
        humantime::format_duration(grace)
    );
    stop.stop();
    drain(health_task, Some(scheduler), grace, signals.recv()).await;
    Ok(())
}

/// How often the config file is looked at for a change when the kernel cannot report changes
/// (no inotify): a `stat`, no read, unless it changed.
pub(crate) const WATCH_EVERY: Duration = Duration::from_secs(2);
/// With inotify, a change is looked at as soon as it is reported, and the file is also looked
/// at this many times less often, for file systems that report nothing (NFS, some FUSE
/// mounts). An idle agent then wakes up about once a minute, not every 2 s.
const WATCH_UNREPORTED: u32 = 30;
/// After the kernel's first report of a change, how long to wait for the rest of it (a write
/// in place is a truncation, then the text; a ConfigMap update is several renames) before
/// looking once.
const WATCH_SETTLE: Duration = Duration::from_millis(100);

/// One version of the config file, as `stat` sees it through every symbolic link: a rewrite
/// changes its size or times, kubelet's swap of the `..data` link (a ConfigMap update)
/// changes the file reached, and a file that goes away or comes back changes the error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FileVersion {
    File {
        dev: u64,
        ino: u64,
        size: u64,
        mtime: (i64, i64),
        ctime: (i64, i64),
    },
    Unreadable(std::io::ErrorKind),
}

/// The version of the file at `path` now.
pub(crate) fn file_version(path: &Path) -> FileVersion {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        Ok(m) => FileVersion::File {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        },
        Err(e) => FileVersion::Unreadable(e.kind()),
    }
}

/// Looks at the config file when the kernel reports a change in the directories its path
/// goes through (inotify), and every `every` × [`WATCH_UNREPORTED`] anyway (every `every`
/// where inotify is not available), and sends on `changed` when its version differs from the
/// last one seen (at first `loaded`, the version that was loaded), until `stop` completes.
/// Watches and `stat` run on the blocking pool (a hung network mount stalls only this
/// watcher).
async fn watch_config(
    path: PathBuf,
    loaded: FileVersion,
    every: Duration,
    changed: tokio::sync::mpsc::Sender<()>,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut notes = match Notes::new() {
        Ok(notes) => Some(Arc::new(notes)),
        Err(e) => {
            tracing::debug!(
                "config file: the kernel cannot report its changes ({e}); looking every {}",
                humantime::format_duration(every)
            );
            None
        }
    };
    // The version, and whether the kernel watches the file's directory.
    let look = |path: &PathBuf, notes: Option<Arc<Notes>>| {
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            let watched = notes.is_some_and(|n| n.watch(&path));
            (file_version(&path), watched)
        })
    };
    let mut last = loaded;
    loop {
        let (now, watched) = tokio::select! {
            v = look(&path, notes.clone()) => match v { Ok(v) => v, Err(_) => return },
            () = stop.as_mut() => return,
        };
        if now != last {
            last = now;
            // Full: a change is already waiting to be read, which covers this one too.
            let _ = changed.try_send(());
        }
        // A directory that is gone, or the kernel's watch limit reached: looked at as often
        // as without inotify, until it is watched again.
        let poll = if watched {
            every.saturating_mul(WATCH_UNREPORTED)
        } else {
            every
        };
        let reported = async {
            match &notes {
                Some(n) => n.changed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = tokio::time::sleep(poll) => {}
            r = reported => match r {
                Ok(()) => tokio::select! {
                    () = tokio::time::sleep(WATCH_SETTLE) => {
                        if let Some(n) = &notes {
                            n.drain();
                        }
                    }
                    () = stop.as_mut() => return,
                },
                Err(e) => {
                    tracing::debug!(
                        "config file: the kernel's reports of changes stopped ({e}); \
                         looking every {}",
                        humantime::format_duration(every)
                    );
                    notes = None;
                }
            },
            () = stop.as_mut() => return,
        }
    }
}

/// The kernel's reports (inotify) of changes in the directories a config file's path goes
/// through: its own directory (an editor's or kubelet's rename of the file or of the `..data`
/// link of a ConfigMap) and, where links lead elsewhere, the directory of the file reached (a
/// write in place).
struct Notes(tokio::io::unix::AsyncFd<Inotify>);

/// An inotify descriptor as the runtime registers it.
struct Inotify(nix::sys::inotify::Inotify);

impl std::os::fd::AsRawFd for Inotify {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsFd;
        self.0.as_fd().as_raw_fd()
    }
}

impl Notes {
    fn new() -> std::io::Result<Self> {
        use nix::sys::inotify::InitFlags;
        let inotify =
            nix::sys::inotify::Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        // SAFETY: the inotify instance owns its descriptor (it closes it when dropped, and only
        // then), so the descriptor stays open and the same for the `AsyncFd`'s whole life.
        let registered = unsafe { tokio::io::unix::AsyncFd::register(Inotify(inotify)) }?;
        Ok(Notes(registered))
    }

    /// Watches the directories `path` goes through (again: one may have been replaced, and a
    /// ConfigMap's file is reached through a new directory after each update). A directory
    /// already watched keeps its one watch. Blocking: `stat`s and `readlink`s. Whether every
    /// directory is watched.
    fn watch(&self, path: &Path) -> bool {
        use nix::sys::inotify::AddWatchFlags as F;
        let events = F::IN_MODIFY
            | F::IN_ATTRIB
            | F::IN_CLOSE_WRITE
            | F::IN_MOVED_FROM
            | F::IN_MOVED_TO
            | F::IN_CREATE
            | F::IN_DELETE
            | F::IN_DELETE_SELF
            | F::IN_MOVE_SELF
            | F::IN_ONLYDIR;
        let dir_of = |p: &Path| match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut dirs = vec![dir_of(path)];
        if let Ok(reached) = std::fs::canonicalize(path) {
            let dir = dir_of(&reached);
            if std::fs::canonicalize(&dirs[0]).ok().as_ref() != Some(&dir) {
                dirs.push(dir);
            }
        }
        // Every directory is tried, whatever the others gave.
        let failed = dirs
            .iter()
            .filter(|dir| self.0.get_ref().0.add_watch(dir.as_path(), events).is_err())
            .count();
        failed == 0
    }

    /// Waits for the next report (of any change in a watched directory).
    async fn changed(&self) -> std::io::Result<()> {
        loop {
            let mut ready = self.0.readable().await?;
            match ready.try_io(|fd| fd.get_ref().0.read_events().map_err(std::io::Error::from)) {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Reads and forgets the reports already there (the rest of one change).
    fn drain(&self) {
        while self.0.get_ref().0.read_events().is_ok() {}
    }
}

/// Waits for the health server and the scheduler to end, at most `grace`, or until
/// `interrupt` (the next stop signal) completes, and logs which of these happened.
async fn drain(
    health: Option<impl std::future::Future<Output = bool>>,
    scheduler: Option<tokio::task::JoinHandle<()>>,
    grace: Duration,
    interrupt: impl std::future::Future<Output = &'static str>,
) {
    let both = async {
        if let Some(h) = health {
            if !h.await {
                tracing::error!("health server ended abnormally");
            }
        }
        if let Some(s) = scheduler {
            if let Err(e) = s.await {
                tracing::error!("telemetry scheduler ended abnormally: {e}");
            }
        }
    };
    tokio::select! {
        r = tokio::time::timeout(grace, both) => match r {
            Ok(()) => tracing::info!("stopped"),
            Err(_) => tracing::warn!(
                "stopped: in-flight work did not finish within {}; exiting anyway",
                humantime::format_duration(grace)
            ),
        },
        sig = interrupt => tracing::warn!("stopped at once: second {sig}"),
    }
}

/// The start-up banner, one log line each, in Butler's order and wording where they overlap.
fn banner(
    config: &LoadedConfig,
    snapshot: &Snapshot,
    roots: &Roots,
    telemetry: &str,
    health: Option<SocketAddr>,
    butler: &str,
) -> Vec<String> {
    let h = &snapshot.host;
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory =
        total_memory_bytes(&roots.proc).map_or_else(|| "unknown".to_string(), |b| b.to_string());
    let docker = match &h.container_runtime {
        Some(rt) if h.is_running_in_docker => format!("true ({rt})"),
        Some(rt) => format!("false (container runtime: {rt})"),
        None => h.is_running_in_docker.to_string(),
    };
    let health = health.map_or_else(
        || "disabled".to_string(),
        |a| format!("http://{a} (/health, /livez, /readyz)"),
    );
    let level = tracing::level_filters::LevelFilter::current().to_string();
    let rule = "--------------------------------------".to_string();
    vec![
        rule.clone(),
        "Starting butler-agent".into(),
        format!("Log level         : {}", level.to_lowercase()),
        format!("App version       : {}", env!("CARGO_PKG_VERSION")),
        format!("Instance ID       : {}", snapshot.id.id),
        format!("Running in Docker : {docker}"),
        String::new(),
        format!("Runtime version   : {}", payload::RUNTIME_VERSION),
        format!("Architecture      : {}", h.arch),
        format!("Platform          : {}", h.platform),
        format!("Release           : {}", h.release),
        format!("Distro            : {}", h.distro),
        format!("Codename          : {}", h.codename),
        format!("Virtual           : {}", h.is_virtual),
        format!("CPUs              : {cpus}"),
        format!("Total memory      : {memory}"),
        String::new(),
        format!("Config file       : {}", config.source),
        format!("Health server     : {health}"),
        format!("Butler readiness  : {butler}"),
        format!("Telemetry         : {telemetry}"),
        rule,
    ]
}

/// `MemTotal` from `<proc>/meminfo`, in bytes (Node's `os.totalmem()`, which Butler logs).
fn total_memory_bytes(proc: &Path) -> Option<u64> {
    let meminfo = crate::host::read_text(&proc.join("meminfo"))?;
    crate::host::identifying::mem_total_bytes(&meminfo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_gives_up_on_a_stuck_telemetry_task_after_the_grace() {
        let stuck = tokio::spawn(std::future::pending::<()>());
        let grace = Duration::from_millis(50);
        tokio::time::timeout(
            Duration::from_secs(5),
            drain(
                None::<std::future::Ready<bool>>,
                Some(stuck),
                grace,
                std::future::pending(),
            ),
        )
        .await
        .expect("drain returns once the grace is over, not when the task ends");
    }

    /// A directory as kubelet lays out a ConfigMap volume: `config.yaml -> ..data/config.yaml`,
    /// `..data -> ..2026_01_01`.
    fn configmap() -> tempfile::TempDir {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("..2026_01_01")).unwrap();
        std::fs::write(d.join("..2026_01_01/config.yaml"), "Butler: {}\n").unwrap();
        symlink("..2026_01_01", d.join("..data")).unwrap();
        symlink("..data/config.yaml", d.join("config.yaml")).unwrap();
        dir
    }

    /// kubelet's ConfigMap update: it writes a new timestamped directory, points `..data_tmp`
    /// at it and renames that over `..data`.
    #[test]
    fn a_configmap_swap_and_a_rewrite_are_new_versions_and_nothing_else_is() {
        use std::os::unix::fs::symlink;
        let dir = configmap();
        let d = dir.path();
        let path = d.join("config.yaml");
        let first = file_version(&path);
        assert!(matches!(first, FileVersion::File { .. }));
        assert_eq!(file_version(&path), first, "unchanged");

        // The same text, so only the file reached tells the versions apart.
        std::fs::create_dir(d.join("..2026_01_02")).unwrap();
        std::fs::write(d.join("..2026_01_02/config.yaml"), "Butler: {}\n").unwrap();
        symlink("..2026_01_02", d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        std::fs::remove_dir_all(d.join("..2026_01_01")).unwrap();
        let second = file_version(&path);
        assert!(matches!(second, FileVersion::File { .. }));
        assert_ne!(second, first, "the swap is seen");

        std::fs::write(d.join("..2026_01_02/config.yaml"), "Butler:\n  x: 1\n").unwrap();
        assert_ne!(file_version(&path), second, "a rewrite is seen");
        std::fs::remove_dir_all(d.join("..2026_01_02")).unwrap();
        assert_eq!(
            file_version(&path),
            FileVersion::Unreadable(std::io::ErrorKind::NotFound)
        );
    }

    /// With the poll an hour apart, the kernel's reports alone bring each change within 2 s:
    /// an editor's rename, a write in place, a ConfigMap's `..data` swap, and a write in place
    /// to the file a link leads to in another directory; a change to another file in the
    /// same directory is looked at and sends nothing.
    #[tokio::test]
    async fn changes_the_kernel_reports_are_seen_at_once() {
        use std::os::unix::fs::symlink;
        let dir = configmap();
        let d = dir.path();
        let plain = d.join("plain.yaml");
        std::fs::write(&plain, "Butler: {}\n").unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let target = elsewhere.path().join("config.yaml");
        std::fs::write(&target, "Butler: {}\n").unwrap();
        symlink(&target, d.join("linked.yaml")).unwrap();

        let (stop, token) = crate::shutdown::stop_channel();
        let hour = Duration::from_secs(3600);
        let mut watchers = Vec::new();
        for name in ["config.yaml", "plain.yaml", "linked.yaml"] {
            let path = d.join(name);
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            let watcher = watch_config(path.clone(), file_version(&path), hour, tx, token.wait());
            tokio::spawn(watcher);
            watchers.push(rx);
        }
        let [configmap, plain_rx, linked] = &mut watchers[..] else {
            unreachable!("three watchers");
        };
        let seen = |rx: &mut tokio::sync::mpsc::Receiver<()>| {
            let got = rx.try_recv();
            got.is_ok()
        };
        async fn within(rx: &mut tokio::sync::mpsc::Receiver<()>, what: &str) {
            let got = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await;
            assert_eq!(got.ok().flatten(), Some(()), "{what} is seen within 2 s");
        }
        // Time for the first looks, which set up the watches.
        tokio::time::sleep(Duration::from_millis(300)).await;

        let next = d.join("plain.yaml.new");
        std::fs::write(&next, "Butler:\n  anonTelemetry: false\n").unwrap();
        std::fs::rename(&next, &plain).unwrap();
        within(plain_rx, "an editor's rename").await;
        std::fs::write(&plain, "Butler:\n  anonTelemetry: true\n").unwrap();
        within(plain_rx, "a write in place").await;

        std::fs::create_dir(d.join("..2026_01_02")).unwrap();
        std::fs::write(d.join("..2026_01_02/config.yaml"), "Butler: {}\n").unwrap();
        symlink("..2026_01_02", d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        within(configmap, "a ConfigMap's swap").await;

        std::fs::write(&target, "Butler:\n  anonTelemetry: false\n").unwrap();
        within(
            linked,
            "a write in place through a link to another directory",
        )
        .await;

        // A write in place is two changes (the truncation, then the text); on a loaded
        // machine a look can fall between them and the second look sends again. Those are
        // let through first.
        tokio::time::sleep(Duration::from_millis(500)).await;
        for rx in [&mut *configmap, &mut *plain_rx, &mut *linked] {
            while seen(rx) {}
        }
        std::fs::write(d.join("other.txt"), "x").unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !seen(configmap) && !seen(plain_rx) && !seen(linked),
            "another file's change sends nothing"
        );
        stop.stop();
    }

    /// A file whose directory cannot be watched (here: not there yet) is looked at every
    /// `every`, as without inotify, not 30 times less often.
    #[tokio::test]
    async fn a_directory_that_cannot_be_watched_is_polled_often() {
        let dir = tempfile::tempdir().unwrap();
        let later = dir.path().join("later");
        let path = later.join("config.yaml");
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let (stop, token) = crate::shutdown::stop_channel();
        let every = Duration::from_millis(300);
        tokio::spawn(watch_config(
            path.clone(),
            file_version(&path),
            every,
            tx,
            token.wait(),
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::fs::create_dir(&later).unwrap();
        std::fs::write(&path, "Butler: {}\n").unwrap();
        let got = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await;
        assert_eq!(got.ok().flatten(), Some(()), "seen within 2 s, not 9");
        stop.stop();
    }

    #[tokio::test(start_paused = true)]
    async fn the_watcher_sends_once_per_change_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "Butler: {}\n").unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let (stop, token) = crate::shutdown::stop_channel();
        let every = Duration::from_secs(2);
        let watcher = tokio::spawn(watch_config(
            path.clone(),
            file_version(&path),
            every,
            tx,
            token.wait(),
        ));
        // Paused time moves only while every task waits; the stat runs on a real thread.
        let settle = || async {
            for _ in 0..20 {
                tokio::time::sleep(every).await;
                tokio::task::yield_now().await;
            }
        };
        settle().await;
        assert!(rx.try_recv().is_err(), "no change, no message");
        // One change, made atomically as editors and kubelet do: an in-place write is two
        // (the truncation, then the text), and a look between them rightly sees both.
        let next = dir.path().join("config.yaml.new");
        std::fs::write(&next, "Butler:\n  anonTelemetry: false\n").unwrap();
        std::fs::rename(&next, &path).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await;
        assert_eq!(got.ok().flatten(), Some(()), "the change is seen");
        settle().await;
        assert!(rx.try_recv().is_err(), "once");
        stop.stop();
        tokio::time::timeout(Duration::from_secs(60), watcher)
            .await
            .expect("the watcher stops")
            .unwrap();
    }

    /// The file changed between its load and the watcher's start: that is a change too.
    #[tokio::test(start_paused = true)]
    async fn a_change_during_start_up_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "Butler: {}\n").unwrap();
        let loaded = file_version(&path);
        std::fs::write(&path, "Butler:\n  anonTelemetry: false\n").unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let (_stop, token) = crate::shutdown::stop_channel();
        tokio::spawn(watch_config(
            path,
            loaded,
            Duration::from_secs(2),
            tx,
            token.wait(),
        ));
        let got = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await;
        assert_eq!(got.ok().flatten(), Some(()));
    }

    #[tokio::test]
    async fn drain_returns_as_soon_as_the_work_is_done() {
        let done = tokio::spawn(async {});
        tokio::time::timeout(
            Duration::from_secs(5),
            drain(
                None::<std::future::Ready<bool>>,
                Some(done),
                Duration::from_secs(3600),
                std::future::pending(),
            ),
        )
        .await
        .expect("a finished task does not wait for the grace");
    }
}
