"""bench/run's report: the machine it ran on, and BENCHMARKS.md written from one run's rows."""

from __future__ import annotations

import datetime
import shlex
import shutil
from pathlib import Path

from benchlib import BENCH, Report, run_text, table_markdown


def machine_info(tools) -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    first = lambda s: s.splitlines()[0] if s else "not installed"
    docker = shutil.which("docker")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": run_text(["nproc"]),
        "cpu": cpu,
        "kernel": run_text(["uname", "-srm"]),
        "free": run_text(["free", "-h"]),
        "load": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "rustc": first(run_text(["rustc", "-V"])),
        "nginx": first(run_text([tools["nginx"], "-v"])) if tools.get("nginx") else "nginx not installed",
        "node": first(run_text([tools["node"], "--version"])) if tools.get("node") else "not installed",
        "wrk": first(run_text([tools["wrk"], "-v"])) if tools.get("wrk") else "wrk not installed",
        "curl": first(run_text([tools["curl"], "--version"])) if tools.get("curl") else "not installed",
        "valgrind": first(run_text([tools["valgrind"], "--version"])) if tools.get("valgrind") else "not installed",
        "docker": first(run_text([docker, "version", "-f", "{{.Server.Version}}"])) if docker else "not installed",
    }


def write_markdown(path: Path, report: Report, info: dict, argv: list[str], load_after: str, nginx_conf: str) -> None:
    passes = sum(1 for r in report.rows if r.verdict.startswith("pass"))
    misses = sum(1 for r in report.rows if r.verdict.startswith("MISS"))
    nas = sum(1 for r in report.rows if r.verdict.startswith("n/a"))
    lines = [
        "# Benchmarks",
        "",
        "Written by `bench/run`; do not edit by hand (the analysis below comes from `bench/analysis.md`).",
        f"One run, {info['date']}: `{shlex.join(['bench/run', *argv])}`.",
        "Every row was measured in this run, side by side; the machine is shared, so read the ratios",
        "against nginx in the same run rather than the absolute figures. Targets are from the benchmark",
        "issue; the benchmark reports them and never fails on them.",
        "",
        f"**Targets: {passes} pass, {misses} miss, {nas} not measured.**",
        "",
        "## Results",
        "",
        table_markdown(report.rows),
        "",
    ]
    if report.notes:
        lines += ["Notes from this run:", ""] + [f"- {n}" for n in report.notes] + [""]
    analysis = BENCH / "analysis.md"
    if analysis.exists():
        lines += [analysis.read_text().rstrip(), ""]
    lines += [
        "## Machine",
        "",
        f"- CPUs (`nproc`): {info['nproc']}; model: {info['cpu']}",
        f"- Kernel: {info['kernel']}",
        f"- Load average before / after the run: {info['load']} / {load_after}",
        "- Memory (`free -h`):",
        "",
        "```",
        info["free"],
        "```",
        "",
        "## Versions",
        "",
        f"- {info['rustc']}",
        f"- {info['nginx']}",
        f"- node {info['node']}",
        f"- {info['wrk'].split(' Copyright')[0]}",
        f"- {info['curl']}",
        f"- {info['valgrind']}",
        f"- docker server {info['docker']}",
        "",
        "## How each figure is measured",
        "",
        "- **/health**: all servers run at once, idle; each wrk run loads one of them, in rounds that",
        "  cycle through the servers so noise spreads evenly; each figure is the median over rounds.",
        "  wrk shares the 2 cores with the server, as a sidecar shares them with Butler. \"req/s per",
        "  round\" is the lowest and highest ratio to nginx 2w within one round (the two ran seconds",
        "  apart): the spread this machine puts on the median ratio.",
        "- **CPU per request**: utime+stime of the server's processes (nginx: master and workers) from",
        "  `/proc/PID/stat`, read just before and just after wrk, divided by the requests wrk completed.",
        "- **Memory**: `VmRSS` from `/proc/PID/status` one second after start (idle) and one second",
        "  after the last round (after load); `VmHWM` is the peak. nginx is the sum over master and workers.",
        "- **Start-up**: from just before the spawn to the first `200` on a fresh connection, polled every",
        "  0.2 ms; a fresh port each time; the process is stopped between runs. Includes the spawn itself",
        "  (see the `true` probe row for what a spawn costs here).",
        "- **Probe**: `posix_spawn` + `wait4`: wall time, and `ru_maxrss` for peak RSS; the probes run",
        "  interleaved against one live server. Each probe is first checked to exit 0 on a 200 and",
        "  non-zero when nothing listens.",
        "- **Telemetry cycle**: callgrind's instruction count (stable on a noisy machine) for the",
        "  in-process loop of `examples/bench_telemetry_cycle.rs` (the difference between 11 cycles and",
        "  1, divided by 10) and for a whole `telemetry preview` process minus a `--help` baseline; the",
        "  same loop run natively for about one second for wall and thread CPU time (`schedstat`).",
        "",
        "## Commands",
        "",
    ]
    for what, command in report.commands:
        lines.append(f"- {what}: `{command}`")
    lines += [
        "",
        "nginx configuration (per worker count, in a temporary prefix):",
        "",
        "```nginx",
        nginx_conf,
        "```",
        "",
        "Node.js server: `bench/node/health-server.js`; Node probe: `bench/node/probe.js`.",
        "",
    ]
    path.write_text("\n".join(lines))
