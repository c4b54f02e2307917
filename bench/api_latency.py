#!/usr/bin/env python3
"""API latency of `phoenix serve` over a 100,000-instance fleet in state, under load from wrk.

    apt-get install wrk
    cargo build --release -p phoenix
    python3 bench/api_latency.py [--instances 100000] [--runs 3] [--duration 10] [--connections 16]

The fleet is bench/plan_scale.py's (340 sites: 15 core, 75 regional, 250 edge), each service
given a command. It cannot run here, so `phoenix bench-seed` writes it into a fresh SQLite state
dir as an apply would have left it (a revision, every instance observed running), starting
nothing. Then `phoenix serve` is started on a free 127.0.0.1 port with a viewer token, and wrk
(a real HTTP load generator) drives each view in turn for --duration seconds with
--connections connections: the fleet list, the fleet view (summary with health per site), one
page of the instance view, and one instance. Each run prints wrk's p50/p90/p99 and the
request rate per view, with the load average at the start; the summary is the median of the
runs' p99. Target (issue 11): p99 under 50 ms. The server is stopped by its pid at the end.
"""
import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from plan_scale import fleet_yaml  # noqa: E402  (one definition of the bench fleet)


def runnable_fleet(instances: int) -> str:
    """plan_scale's fleet with a command on every service (apply and seeding need one)."""
    lines = []
    for line in fleet_yaml(instances).splitlines():
        if line.startswith("  - { name:") and "project:" in line:
            line = line[:-2] + ', command: ["true"] }'
        lines.append(line)
    return "\n".join(lines) + "\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def to_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(text)
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v


def wrk(url: str, token: str, duration: int, connections: int) -> dict:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-H", f"Authorization: Bearer {token}", url],
        check=True, capture_output=True, text=True).stdout
    pct = {p: to_ms(v) for p, v in re.findall(r"^\s+(50|90|99)%\s+(\S+)", out, re.M)}
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"p50_ms": pct.get("50"), "p90_ms": pct.get("90"), "p99_ms": pct.get("99"), "req_per_s": rate,
            "non_2xx": int(non2xx.group(1)) if non2xx else 0, "socket_errors": errors.group(1) if errors else None}


def get_json(url: str, token: str):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10, help="seconds of load per view and run")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--phoenix", default=os.path.join(ROOT, "target", "release", "phoenix"))
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (Debian: apt-get install wrk)")
    work = tempfile.mkdtemp(prefix="phoenix-api-bench-")
    spec = os.path.join(work, "fleet.yaml")
    with open(spec, "w") as f:
        f.write(runnable_fleet(args.instances))
    state = os.path.join(work, "state")
    env = dict(os.environ, PHOENIX_OPERATOR_KEY=os.path.join(work, "operator.key"))
    env.pop("PHOENIX_STATE_URL", None)
    t = time.perf_counter()
    subprocess.run([args.phoenix, "bench-seed", spec, "--state-dir", state], check=True, env=env)
    print(f"seeded {args.instances} instances in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    token = subprocess.run([args.phoenix, "serve", "token", "create", "bench", "--role", "viewer", "--state-dir", state],
                           check=True, capture_output=True, text=True, env=env).stdout.strip().splitlines()[-1]
    port = free_port()
    log = open(os.path.join(work, "serve.log"), "w")
    server = subprocess.Popen([args.phoenix, "serve", "--state-dir", state, "--listen", f"127.0.0.1:{port}"],
                              stdout=log, stderr=log, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{base}/health/ready", timeout=2)
                break
            except OSError:
                time.sleep(0.1)
        fleet = f"bench-{args.instances}"
        page = get_json(f"{base}/api/v1/fleets/{fleet}/instances?limit=100", token)
        items = page["instances"] if isinstance(page, dict) else page
        one = items[len(items) // 2]["instance"]
        views = {
            "fleets": f"{base}/api/v1/fleets",
            "fleet": f"{base}/api/v1/fleets/{fleet}",
            "instances (page of 100)": f"{base}/api/v1/fleets/{fleet}/instances?limit=100",
            "instance": f"{base}/api/v1/fleets/{fleet}/instances/{one}",
        }
        results = {name: [] for name in views}
        for run in range(1, args.runs + 1):
            load = os.getloadavg()[0]
            for name, url in views.items():
                r = wrk(url, token, args.duration, args.connections)
                results[name].append(r)
                print(f"run {run} (load {load:.2f}) {name:>24}: p50 {r['p50_ms']:.2f} ms, p90 {r['p90_ms']:.2f} ms, "
                      f"p99 {r['p99_ms']:.2f} ms, {r['req_per_s']:.0f} req/s, non-2xx {r['non_2xx']}")
        for name, rs in results.items():
            p99 = [r["p99_ms"] for r in rs]
            print(f"{name:>24}: p99 median {statistics.median(p99):.2f} ms (runs: {', '.join(f'{x:.2f}' for x in p99)}), "
                  f"p50 median {statistics.median(r['p50_ms'] for r in rs):.2f} ms; target p99 < 50 ms")
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
