"""Shared parts of bench/run and bench/compare: processes, loopback HTTP, /proc figures, the
result table, the servers under test (the agent among them) and the probe launcher.

Python 3.9+ standard library only. Everything listens on 127.0.0.1; every process started
through `spawn` is stopped by `stop_all`.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
BODY = '{"statusCode":200,"status":"ok"}'
CLK_TCK = os.sysconf("SC_CLK_TCK")
# A server that does not answer /health within this long after start is reported as unavailable.
READY_TIMEOUT = 10.0
MIB = 1024 * 1024


class Unavailable(Exception):
    """A subject cannot be measured in this run (not built yet, no Docker, ...)."""


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Processes: everything started goes through here, so the exit handler can stop it.

_started: list[subprocess.Popen] = []


def spawn(argv, *, env=None, cwd=REPO, log_path: Path | None = None) -> subprocess.Popen:
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        p = subprocess.Popen(
            [str(a) for a in argv],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: nginx workers go with the master
        )
    finally:
        if log_path:
            out.close()
    _started.append(p)
    return p


def stop(p: subprocess.Popen, grace: float = 3.0) -> None:
    """SIGTERM to the process group, SIGKILL after `grace` seconds."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
    # Workers may outlive a master that died first.
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if p in _started:
        _started.remove(p)


def stop_all() -> None:
    for p in list(_started):
        stop(p, grace=2.0)


def _on_signal(signum, _frame):
    raise SystemExit(128 + signum)


# ---------------------------------------------------------------------------------------------
# Small helpers: ports, HTTP, /proc.


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(port: int, path: str = "/health", timeout: float = 1.0) -> int | None:
    """Status code of one GET on a fresh connection, None when nothing answers."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
            )
            head = b""
            while b"\r\n" not in head and len(head) < 4096:
                chunk = s.recv(4096)
                if not chunk:
                    break
                head += chunk
    except OSError:
        return None
    m = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    return int(m.group(1)) if m else None


def wait_ready(p: subprocess.Popen, port: int, path: str = "/health", timeout=READY_TIMEOUT) -> float:
    """Polls until `path` answers 200; returns the perf_counter time it did."""
    deadline = time.perf_counter() + timeout
    while True:
        status = http_status(port, path, timeout=0.5)
        if status == 200:
            return time.perf_counter()
        if status in (404, 405):  # the route does not exist: waiting will not change that
            raise Unavailable(f"{path} answers {status}")
        if p.poll() is not None:
            raise Unavailable(f"exited with code {p.returncode} before answering 200 on {path}")
        if time.perf_counter() > deadline:
            raise Unavailable(f"no 200 on {path} within {timeout:.0f} s")
        # Short enough for sub-millisecond resolution, long enough not to starve the
        # process being started of one of the two cores.
        time.sleep(0.0002)


def proc_children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[1]) == pid:
            kids.append(int(entry))
    return kids


def proc_cpu_ticks(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)


def proc_status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def run_text(argv, **kw) -> str:
    """stdout+stderr of a command, or '' when it cannot run."""
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60, **kw)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (r.stdout + r.stderr).rstrip().lstrip("\n")


def median(xs):
    return statistics.median(xs) if xs else None


# ---------------------------------------------------------------------------------------------
# Formatting.


def f_rps(x: float) -> str:
    return f"{x:,.0f} req/s"


def f_us(us: float) -> str:
    if us < 1000:
        return f"{us:.0f} µs" if us >= 10 else f"{us:.1f} µs"
    return f"{us / 1000:.2f} ms"


def f_ms(ms: float) -> str:
    return f"{ms:.2f} ms" if ms < 100 else f"{ms:.0f} ms"


def f_mib_kib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


def f_bytes(n: int) -> str:
    return f"{n / MIB:.2f} MiB ({n:,} B)"


def f_ratio(x: float) -> str:
    return f"{x:.2f}×"


# ---------------------------------------------------------------------------------------------
# The table.


@dataclass
class Row:
    measure: str
    subject: str
    result: str
    compared: str = ""
    target: str = ""
    verdict: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    commands: list[tuple[str, str]] = field(default_factory=list)  # (what, command)
    notes: list[str] = field(default_factory=list)

    def add(self, *a, **kw) -> None:
        self.rows.append(Row(*a, **kw))

    def cmd(self, what: str, command) -> None:
        if not isinstance(command, str):
            command = shlex.join(str(c) for c in command)
        command = command.replace(str(REPO) + "/", "")
        if (what, command) not in self.commands:
            self.commands.append((what, command))


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("pass" if ok else "MISS")


def table_markdown(rows: list[Row]) -> str:
    head = ["Measure", "Subject", "Result", "Compared (same run)", "Target", "Verdict"]
    cells = [[r.measure, r.subject, r.result, r.compared, r.target, r.verdict] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(head)]

    def line(cs):
        return "| " + " | ".join(c.replace("|", "\\|").ljust(w) for c, w in zip(cs, widths)) + " |"

    out = [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(c) for c in cells]
    return "\n".join(out)



def find_tool(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/sbin") / name) if p.exists()), None
    )


def is_static(path: Path) -> bool:
    """True when the ELF file has no program interpreter (no dynamic loader needed)."""
    data = path.read_bytes()[:65536]
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return False
    phoff = int.from_bytes(data[0x20:0x28], "little")
    phentsize = int.from_bytes(data[0x36:0x38], "little")
    phnum = int.from_bytes(data[0x38:0x3A], "little")
    for i in range(phnum):
        off = phoff + i * phentsize
        if int.from_bytes(data[off : off + 4], "little") == 3:  # PT_INTERP
            return False
    return True


# ---------------------------------------------------------------------------------------------
# Servers under test.


class Server:
    """One /health server: how to start it on a port, and its processes' /proc figures."""

    def __init__(self, name: str, tmp: Path):
        self.name = name
        self.tmp = tmp
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def argv(self, port: int) -> list[str]:
        raise NotImplementedError

    def prepare(self, port: int) -> None:
        """Writes whatever files the command line refers to."""

    def env(self, port: int) -> dict[str, str] | None:
        return None

    def env_overrides(self, port: int) -> dict[str, str]:
        return {}

    def describe(self) -> str:
        """The command line, for BENCHMARKS.md."""
        env = self.env_overrides(self.port or 12398)
        prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        text = (prefix + " " if prefix else "") + shlex.join(self.argv(self.port or 12398))
        text = text.replace(str(self.tmp), "$TMP").replace(str(REPO) + "/", "")
        return re.sub(rf"\b{self.port}\b", "$PORT", text) if self.port else text

    def spawn(self, port: int) -> subprocess.Popen:
        self.prepare(port)
        return spawn(self.argv(port), env=self.env(port), log_path=self.log_path())

    def log_path(self) -> Path:
        return self.tmp / f"{self.name.replace(' ', '-')}.log"

    def start(self) -> float:
        """Starts on a fresh port; returns seconds from spawn to the first 200 on /health."""
        self.port = free_port()
        t0 = time.perf_counter()
        self.proc = self.spawn(self.port)
        try:
            t1 = wait_ready(self.proc, self.port)
        except Unavailable as e:
            self.stop()
            tail = self.log_tail()
            raise Unavailable(f"{e}{': ' + tail if tail else ''}") from None
        return t1 - t0

    def log_tail(self) -> str:
        try:
            lines = self.log_path().read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1][:160] if lines else ""

    def stop(self) -> None:
        if self.proc:
            stop(self.proc)
            self.proc = None

    def pids(self) -> list[int]:
        assert self.proc, "pids() is only called on a running server"
        return [self.proc.pid, *proc_children(self.proc.pid)]

    def cpu_ticks(self) -> int:
        return sum(proc_cpu_ticks(p) for p in self.pids())

    def mem_kib(self, key: str) -> int:
        return sum(proc_status_kib(p, key) for p in self.pids())


class Agent(Server):
    def __init__(self, tmp: Path, binary: Path, config: str, sink_url: str | None):
        super().__init__("butler-agent", tmp)
        self.binary, self.config, self.sink_url = binary, config, sink_url

    def argv(self, port):
        return [str(self.binary), "--config", self.config, "run"]

    def env_overrides(self, port):
        env = {
            "BUTLER_HEALTH_HOST": "127.0.0.1",
            "BUTLER_HEALTH_PORT": str(port),
            "BUTLER_STATE_DIR": str(self.tmp / "state"),
        }
        if self.sink_url:
            env["BUTLER_POSTHOG_HOST"] = self.sink_url
        else:
            env["DO_NOT_TRACK"] = "1"
        return env

    def prepare(self, port):
        (self.tmp / "state").mkdir(exist_ok=True)

    def env(self, port):
        base = {k: v for k, v in os.environ.items() if not k.startswith("BUTLER_") and k != "DO_NOT_TRACK"}
        return {**base, **self.env_overrides(port)}



# ---------------------------------------------------------------------------------------------
# Probes: one process per check, as Docker runs it.

_launcher: str | None = None


def build_launcher(tmp: Path, report: Report) -> None:
    """Compiles bench/spawn.c, the small static launcher the probes are measured through."""
    global _launcher
    cc = shutil.which("cc") or shutil.which("gcc")
    out = tmp / "spawn"
    if cc:
        for flags in (["-static"], []):
            r = subprocess.run([cc, "-O2", *flags, "-o", str(out), str(BENCH / "spawn.c")], capture_output=True)
            if r.returncode == 0:
                _launcher = str(out)
                report.cmd("probe launcher", f"cc -O2 {' '.join(flags)} -o spawn bench/spawn.c; spawn PROBE ARGS…")
                return
    report.notes.append("No C compiler: probes were measured from Python, so their peak RSS includes "
                        "the interpreter's (a spawned child starts with its parent's peak).")


def spawn_measure(argv: list[str]) -> tuple[float, int, int]:
    """(wall seconds, peak RSS KiB, exit code) of one run, stdout and stderr discarded."""
    if _launcher:
        r = subprocess.run([_launcher, *argv], capture_output=True, text=True, timeout=30)
        try:
            ns, kib, code = (int(x) for x in r.stdout.split())
        except ValueError:
            raise Unavailable(f"launcher failed: {r.stderr.strip()[:200]}") from None
        return ns / 1e9, kib, code
    devnull = [
        (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, "/dev/null", os.O_WRONLY, 0),
    ]
    t0 = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=devnull)
    _, status, ru = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    return wall, ru.ru_maxrss, os.waitstatus_to_exitcode(status)


def probe_works(argv_for_url, url_ok: str, url_down: str) -> str | None:
    """None when the probe exits 0 on a 200 and non-zero when nothing listens; else why not."""
    _, _, ok = spawn_measure(argv_for_url(url_ok))
    _, _, down = spawn_measure(argv_for_url(url_down))
    if ok != 0:
        return f"exit {ok} against a healthy server"
    if down == 0:
        return "exit 0 with nothing listening (not a real probe yet)"
    return None


# ---------------------------------------------------------------------------------------------
# Telemetry destination for the agent while it runs: a local sink when `butler-agent sink`
# works, else telemetry off.


def start_sink(agent_bin: Path, tmp: Path) -> str | None:
    port = free_port()
    p = spawn([agent_bin, "sink", "--listen", f"127.0.0.1:{port}"], log_path=tmp / "sink.log")
    deadline = time.perf_counter() + 3
    while time.perf_counter() < deadline:
        if p.poll() is not None:
            stop(p)
            return None
        # The sink's health check is capture's status route (`/health` is 404 there, as on capture).
        if http_status(port, "/_liveness", timeout=0.5) == 200:
            return f"http://127.0.0.1:{port}"
        time.sleep(0.02)
    stop(p)
    return None

