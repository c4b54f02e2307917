#!/usr/bin/env python3
"""Apply 50 local services with Phoenix and with Ansible, side by side, and print the ratio.

    cargo build --release -p phoenix
    pip install ansible-core
    python3 bench/apply_vs_ansible.py [--count 50] [--runs 3] [--phoenix target/release/phoenix]

Both sides start the same job from nothing: `count` `python3 -m http.server` processes, each on
its own port, serving its own directory, detached from the tool that started them, and wait
until every one is up. Phoenix: `phoenix apply bench/out/fleet-50.yaml --yes` (health gate: an
HTTP GET answering 200, probed every 50 ms; state in SQLite, audit log, write-ahead intents).
Ansible: bench/ansible/playbook.yml (`shell: nohup ... &` per service, then `wait_for` each
port), local connection. Everything is stopped and removed between runs; the timings cover
only the apply / the playbook run. Prints one line per run and a summary with medians.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE_PORT = 18000


def fleet_yaml(count: int) -> str:
    lines = [
        "phoenix: 1",
        f"name: bench-{count}",
        "sites:",
        "  - name: local",
        "    tier: core",
        "    capacity: { cpu: 64, memory: 64Gi, storage: 100G }",
        "services:",
    ]
    for i in range(count):
        lines += [
            f"  - name: svc-{i:02d}",
            "    command: [python3, -m, http.server, '${port}', --bind, 127.0.0.1, --directory, '${data_dir}']",
            "    ports: [port]",
            "    health: { http: 'http://127.0.0.1:${port}/', timeout: 60s, interval: 50ms }",
            "    stop_grace: 2s",
        ]
    return "\n".join(lines) + "\n"


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def phoenix_once(phoenix: str, spec: Path, parallelism: int) -> float:
    state = Path(tempfile.mkdtemp(prefix="pxb"))
    try:
        t0 = time.perf_counter()
        run([phoenix, "apply", str(spec), "--yes", "--state-dir", str(state),
             "--parallelism", str(parallelism)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        elapsed = time.perf_counter() - t0
        status = json.loads(run([phoenix, "status", str(spec), "-o", "json", "--state-dir", str(state)],
                                capture_output=True).stdout)
        up = [i for i in status["instances"] if i["state"] == "running" and i["healthy"]]
        if len(up) != len(status["instances"]):
            sys.exit(f"phoenix: only {len(up)} of {len(status['instances'])} instances up")
        return elapsed
    finally:
        subprocess.run([phoenix, "destroy", str(spec), "--yes", "--state-dir", str(state)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        shutil.rmtree(state, ignore_errors=True)


def ansible_cleanup(workdir: Path) -> None:
    for pidfile in workdir.glob("*.pid"):
        try:
            os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
        except (ValueError, ProcessLookupError):
            pass
    time.sleep(0.3)
    shutil.rmtree(workdir, ignore_errors=True)


def ansible_once(count: int) -> float:
    workdir = Path(tempfile.mkdtemp(prefix="pxa"))
    env = dict(os.environ, ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_RETRY_FILES_ENABLED="False",
               ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_LOCALHOST_WARNING="False",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="False")
    try:
        t0 = time.perf_counter()
        run(["ansible-playbook", "-i", "localhost,", "-c", "local",
             str(ROOT / "bench/ansible/playbook.yml"),
             "-e", f"count={count}", "-e", f"base_port={BASE_PORT}", "-e", f"workdir={workdir}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env)
        elapsed = time.perf_counter() - t0
        pids = list(workdir.glob("*.pid"))
        if len(pids) != count:
            sys.exit(f"ansible: {len(pids)} of {count} services started")
        return elapsed
    finally:
        ansible_cleanup(workdir)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=50)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--parallelism", type=int, default=16, help="phoenix --parallelism (its default is 16)")
    ap.add_argument("--phoenix", default=str(ROOT / "target/release/phoenix"))
    args = ap.parse_args()
    if not Path(args.phoenix).exists():
        sys.exit(f"{args.phoenix} not found: cargo build --release -p phoenix (or pass --phoenix)")
    if shutil.which("ansible-playbook") is None:
        sys.exit("ansible-playbook not found: pip install ansible-core")
    out = ROOT / "bench/out"
    out.mkdir(parents=True, exist_ok=True)
    spec = out / f"fleet-{args.count}.yaml"
    spec.write_text(fleet_yaml(args.count))
    version = subprocess.run(["ansible-playbook", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    print(f"{args.count} services, {args.runs} runs each, {os.cpu_count()} cores; {version}")
    px, an = [], []
    for r in range(1, args.runs + 1):
        p = phoenix_once(args.phoenix, spec, args.parallelism)
        a = ansible_once(args.count)
        px.append(p)
        an.append(a)
        print(f"run {r}: phoenix apply {p:6.2f} s   ansible-playbook {a:6.2f} s   ratio {a / p:5.1f}x")
    mp, ma = statistics.median(px), statistics.median(an)
    print(f"median: phoenix apply {mp:.2f} s, ansible-playbook {ma:.2f} s: phoenix is {ma / mp:.1f}x faster")


if __name__ == "__main__":
    main()
