#!/usr/bin/env python3
"""Apply 50 containers with Phoenix against `docker-compose up -d` plus a wait for every port.

    cargo build --release -p phoenix
    apt-get install docker.io docker-compose busybox-static      # a running Docker Engine
    python3 bench/apply_vs_compose.py [--count 50] [--runs 3] [--phoenix target/release/phoenix]

The same job both ways, from nothing: `count` busybox `httpd` containers, each publishing its own
port on 127.0.0.1, and a wait until every port answers HTTP. The image is built once, before any
timing, from this host's static busybox (`FROM scratch`; nothing is pulled), and both sides run
that image by tag.

- compose: a docker-compose.yml with one service per container (`ports: ["127.0.0.1:P:P"]`),
  `docker-compose -p NAME up -d`, then a poll of every port every 50 ms.
- phoenix: a fleet with one docker site and `count` services (`image:` the same tag), each with
  an HTTP health gate probed every 50 ms: `phoenix apply FILE --yes`, fresh state dir.

Runs alternate (compose, phoenix, ...), and everything is removed between runs
(`docker-compose down`, `phoenix destroy --purge`). Target: Phoenix no slower than Compose.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "phoenix-bench/busybox:1"
BASE_PORT = 20500


def build_image() -> None:
    ctx = Path(tempfile.mkdtemp(prefix="pxi"))
    try:
        shutil.copy("/bin/busybox", ctx / "busybox")
        (ctx / "Dockerfile").write_text(
            'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n')
        subprocess.run(["docker", "build", "-q", "-t", IMAGE, str(ctx)], check=True,
                       stdout=subprocess.DEVNULL)
    finally:
        shutil.rmtree(ctx, ignore_errors=True)


def wait_ports(ports, timeout=120.0) -> None:
    pending = set(ports)
    deadline = time.monotonic() + timeout
    while pending:
        if time.monotonic() > deadline:
            sys.exit(f"compose: ports {sorted(pending)} never answered")
        for p in list(pending):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{p}/", timeout=0.5)
                pending.discard(p)
            except urllib.error.HTTPError:
                pending.discard(p)  # httpd answered (404 for an empty directory)
            except OSError:
                pass
        if pending:
            time.sleep(0.05)


def compose_once(count: int) -> float:
    work = Path(tempfile.mkdtemp(prefix="pxc"))
    ports = [BASE_PORT + i for i in range(count)]
    services = "\n".join(
        f"  s{i}:\n    image: {IMAGE}\n    command: [httpd, -f, -p, '{p}']\n    ports: ['127.0.0.1:{p}:{p}']"
        for i, p in enumerate(ports))
    (work / "docker-compose.yml").write_text(f"version: '3'\nservices:\n{services}\n")
    project = f"pxbench{os.getpid()}"
    quiet = dict(cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        t0 = time.perf_counter()
        subprocess.run(["docker-compose", "-p", project, "up", "-d"], check=True, **quiet)
        wait_ports(ports)
        return time.perf_counter() - t0
    finally:
        subprocess.run(["docker-compose", "-p", project, "down", "-t", "1"], **quiet)
        shutil.rmtree(work, ignore_errors=True)


def fleet_yaml(count: int) -> str:
    lines = ["phoenix: 1", f"name: bench-docker-{count}", "sites:", "  - name: d1", "    tier: core",
             "    provider: docker", "    capacity: { cpu: 64, memory: 64Gi, storage: 100G }", "services:"]
    for i in range(count):
        lines += [f"  - name: s{i:02d}", f"    image: '{IMAGE}'",
                  "    command: [httpd, -f, -p, '${port}']", "    ports: [port]",
                  "    health: { http: 'http://127.0.0.1:${port}/', expect_status: 404, timeout: 60s, interval: 50ms }",
                  "    stop_grace: 1s"]
    return "\n".join(lines) + "\n"


def phoenix_once(phoenix: str, spec: Path, key: Path) -> float:
    state = Path(tempfile.mkdtemp(prefix="pxd"))
    env = dict(os.environ, PHOENIX_OPERATOR_KEY=str(key))
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env)
    try:
        t0 = time.perf_counter()
        subprocess.run([phoenix, "apply", str(spec), "--yes", "--state-dir", str(state)], check=True, **quiet)
        elapsed = time.perf_counter() - t0
        status = json.loads(subprocess.run([phoenix, "status", str(spec), "-o", "json", "--state-dir", str(state)],
                                           capture_output=True, env=env).stdout)
        up = [i for i in status["instances"] if i["state"] == "running" and i["healthy"]]
        if len(up) != len(status["instances"]):
            sys.exit(f"phoenix: only {len(up)} of {len(status['instances'])} instances up")
        return elapsed
    finally:
        subprocess.run([phoenix, "destroy", str(spec), "--yes", "--purge", "--state-dir", str(state)], **quiet)
        shutil.rmtree(state, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=50)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--phoenix", default=str(ROOT / "target/release/phoenix"))
    args = ap.parse_args()
    for tool in ("docker", "docker-compose"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found (Debian: docker.io, docker-compose)")
    if not Path(args.phoenix).exists():
        sys.exit(f"{args.phoenix} not found: cargo build --release -p phoenix (or pass --phoenix)")
    build_image()
    out = ROOT / "bench/out"
    out.mkdir(parents=True, exist_ok=True)
    spec = out / f"fleet-docker-{args.count}.yaml"
    spec.write_text(fleet_yaml(args.count))
    key = Path(tempfile.mkdtemp(prefix="pxk")) / "operator.key"
    version = subprocess.run(["docker-compose", "version", "--short"], capture_output=True, text=True).stdout.strip()
    print(f"{args.count} containers, {args.runs} interleaved runs each, {os.cpu_count()} cores, docker-compose {version}")
    co, px = [], []
    for r in range(1, args.runs + 1):
        load = os.getloadavg()[0]
        c = compose_once(args.count)
        p = phoenix_once(args.phoenix, spec, key)
        co.append(c)
        px.append(p)
        print(f"run {r} (load {load:.2f}): docker-compose up + wait {c:6.2f} s   phoenix apply {p:6.2f} s   ratio {p / c:4.2f}x")
    mc, mp = statistics.median(co), statistics.median(px)
    print(f"median: compose {mc:.2f} s, phoenix apply {mp:.2f} s: {mp / mc:.2f}x compose (target <= 1.00x); "
          f"spread compose {min(co):.2f}-{max(co):.2f} s, phoenix {min(px):.2f}-{max(px):.2f} s")
    shutil.rmtree(key.parent, ignore_errors=True)
    subprocess.run(["docker", "rmi", "-f", IMAGE], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
