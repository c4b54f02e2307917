#!/usr/bin/env python3
"""Apply 50 local services with Phoenix against the floor: the bare cost of starting the same
processes with a shell loop and waiting for their ports. Interleaved runs; prints the ratio.

    cargo build --release -p phoenix
    python3 bench/apply_vs_floor.py [--count 50] [--runs 3] [--phoenix target/release/phoenix]

The same job both ways, from nothing: `count` `python3 -m http.server` processes, each on its
own port serving its own directory, detached, with output to a log file, and a wait until every
port answers an HTTP GET with 200.

- floor: one `sh` loop that mkdirs, starts each server with `nohup ... &`, then polls every port
  (curl-free: a Python poller in this script, 50 ms period, the same as Phoenix's health interval).
- phoenix: `phoenix apply FILE --yes` with a fresh state dir: allocated ports, write-ahead
  intents in SQLite, the signed audit chain, the agent started on demand, HTTP health gates.

Runs alternate (floor, phoenix, floor, phoenix, ...) so that both see the same machine load; the
load average before each run is printed. Target (docs/benchmarks.md): Phoenix's median at most
1.15x the floor's median.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE_PORT = 19000
sys.path.insert(0, str(Path(__file__).resolve().parent))
from apply_vs_ansible import fleet_yaml  # noqa: E402  (one definition of the bench fleet)


def wait_ports(ports, timeout=120.0) -> None:
    pending = set(ports)
    deadline = time.monotonic() + timeout
    while pending:
        if time.monotonic() > deadline:
            sys.exit(f"floor: ports {sorted(pending)} never answered")
        for p in list(pending):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{p}/", timeout=0.5) as r:
                    if r.status == 200:
                        pending.discard(p)
            except OSError:
                pass
        if pending:
            time.sleep(0.05)


def floor_once(count: int, py: str) -> float:
    work = Path(tempfile.mkdtemp(prefix="pxf"))
    ports = [BASE_PORT + i for i in range(count)]
    script = "\n".join(
        f"mkdir -p {work}/d{i}; nohup {py} -m http.server {p} --bind 127.0.0.1 --directory {work}/d{i}"
        f" >{work}/log{i} 2>&1 & echo $! >{work}/pid{i}"
        for i, p in enumerate(ports))
    try:
        t0 = time.perf_counter()
        subprocess.run(["sh", "-c", script], check=True)
        wait_ports(ports)
        return time.perf_counter() - t0
    finally:
        for pidfile in work.glob("pid*"):
            try:
                os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
            except (ValueError, ProcessLookupError):
                pass
        time.sleep(0.3)
        shutil.rmtree(work, ignore_errors=True)


def phoenix_once(phoenix: str, spec: Path, parallelism: int, key: Path) -> float:
    state = Path(tempfile.mkdtemp(prefix="pxb"))
    env = dict(os.environ, PHOENIX_OPERATOR_KEY=str(key))
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env)
    try:
        t0 = time.perf_counter()
        subprocess.run([phoenix, "apply", str(spec), "--yes", "--state-dir", str(state),
                        "--parallelism", str(parallelism)], check=True, **quiet)
        elapsed = time.perf_counter() - t0
        status = json.loads(subprocess.run(
            [phoenix, "status", str(spec), "-o", "json", "--state-dir", str(state)],
            capture_output=True, check=True, env=env).stdout)
        up = [i for i in status["instances"] if i["state"] == "running" and i["healthy"]]
        if len(up) != len(status["instances"]):
            sys.exit(f"phoenix: only {len(up)} of {len(status['instances'])} instances up")
        return elapsed
    finally:
        subprocess.run([phoenix, "destroy", str(spec), "--yes", "--state-dir", str(state)], **quiet)
        shutil.rmtree(state, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=50)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--parallelism", type=int, default=16, help="phoenix --parallelism (its default)")
    ap.add_argument("--phoenix", default=str(ROOT / "target/release/phoenix"))
    args = ap.parse_args()
    if not Path(args.phoenix).exists():
        sys.exit(f"{args.phoenix} not found: cargo build --release -p phoenix (or pass --phoenix)")
    out = ROOT / "bench/out"
    out.mkdir(parents=True, exist_ok=True)
    spec = out / f"fleet-{args.count}.yaml"
    spec.write_text(fleet_yaml(args.count))
    key = Path(tempfile.mkdtemp(prefix="pxk")) / "operator.key"
    # Both sides start `python3` as found on PATH (a version-manager shim, if any, costs both).
    py = "python3"
    print(f"{args.count} services, {args.runs} interleaved runs each, {os.cpu_count()} cores, {py}")
    fl, px = [], []
    for r in range(1, args.runs + 1):
        load = os.getloadavg()[0]
        f = floor_once(args.count, py)
        p = phoenix_once(args.phoenix, spec, args.parallelism, key)
        fl.append(f)
        px.append(p)
        print(f"run {r} (load {load:.2f}): floor {f:6.2f} s   phoenix apply {p:6.2f} s   ratio {p / f:4.2f}x")
    mf, mp = statistics.median(fl), statistics.median(px)
    print(f"median: floor {mf:.2f} s, phoenix apply {mp:.2f} s: {mp / mf:.2f}x the floor (target <= 1.15x); "
          f"spread floor {min(fl):.2f}-{max(fl):.2f} s, phoenix {min(px):.2f}-{max(px):.2f} s")
    shutil.rmtree(key.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
