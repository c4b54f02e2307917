#!/usr/bin/env python3
"""Audit throughput of real applies recorded on a real 4-validator ledger (`--ledger`).

    cargo build --release -p phoenix
    python3 bench/ledger_outbox.py [--count 50] [--runs 3] [--phoenix target/release/phoenix]

Starts `phoenix ledger testnet --validators 4` on 127.0.0.1 (ports 28500-28503 and 28600-28603)
and, side by side in each run, applies the same fleet of `count` `python3 -m http.server`
services from nothing twice: once without a ledger and once with `--ledger` (all four API URLs)
and the testnet's client key, then destroys both. It reports:

- the apply's wall time both ways (with `--ledger` the command ends once the ledger has
  finalized every record of the run and each instance's provisioning transitions);
- the records and transitions the ledger confirmed, and the records per second over the
  `--ledger` apply's wall time;
- the catch-up rate: the chain of the fleet applied without a ledger (every record of every run
  so far) sent with `phoenix history --sync`, records per second;
- the load average at the start and the end of each run.

Each record is checked afterwards by `phoenix history --verify --ledger` (exit 0 required).
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from apply_vs_ansible import fleet_yaml as ansible_fleet_yaml  # noqa: E402

API_BASE = 28500
P2P_BASE = 28600


def fleet_yaml(name: str, count: int) -> str:
    """The 50-service fleet of apply_vs_ansible.py, under another name."""
    return ansible_fleet_yaml(count).replace(f"name: bench-{count}\n", f"name: {name}\n", 1)


def run(cmd, env, **kw):
    return subprocess.run(cmd, check=True, env=env, stdin=subprocess.DEVNULL, **kw)


def timed(cmd, env):
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return elapsed, out


def ledger_counts(stderr: str):
    """(audit records, provisioning changes) from the `ledger: ...` line of a command."""
    for line in stderr.splitlines():
        if line.startswith("ledger: ") and "audit record" in line:
            words = line.split()
            return int(words[1]), int(words[5])
    sys.exit(f"no `ledger:` line in:\n{stderr}")


def loadavg() -> float:
    return os.getloadavg()[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=50)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--phoenix", default=str(ROOT / "target/release/phoenix"))
    args = ap.parse_args()
    phoenix = args.phoenix
    if not Path(phoenix).is_file():
        sys.exit(f"{phoenix} not found: cargo build --release -p phoenix")

    work = Path(tempfile.mkdtemp(prefix="pxoutbox"))
    env = dict(os.environ)
    env["PHOENIX_OPERATOR_KEY"] = str(work / "operator.key")
    for k in ("PHOENIX_STATE_URL", "PHOENIX_LEDGER_URL", "PHOENIX_LEDGER_KEY"):
        env.pop(k, None)
    nodes = []
    try:
        run([phoenix, "ledger", "testnet", "--validators", "4", "--dir", str(work / "net"),
             "--api-base-port", str(API_BASE), "--p2p-base-port", str(P2P_BASE)],
            env, stdout=subprocess.DEVNULL)
        for i in range(4):
            log = open(work / f"node-{i}.log", "w")
            nodes.append(subprocess.Popen([phoenix, "ledger", "run", "--home", str(work / f"net/node-{i}")],
                                          stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env))
        urls = ",".join(f"http://127.0.0.1:{API_BASE + i}" for i in range(4))
        key = str(work / "net/client.key")
        deadline = time.time() + 60
        while True:
            out = subprocess.run([phoenix, "ledger", "status", "--api", f"http://127.0.0.1:{API_BASE}"],
                                 capture_output=True, text=True, env=env)
            if out.returncode == 0 and json.loads(out.stdout).get("finalized_height", 0) >= 2:
                break
            if time.time() > deadline:
                sys.exit("the testnet finalized nothing within 60 s")
            time.sleep(0.3)

        plain_spec = work / "plain.yaml"
        plain_spec.write_text(fleet_yaml("outbox-plain", args.count))
        ledger_spec = work / "ledger.yaml"
        ledger_spec.write_text(fleet_yaml("outbox-ledger", args.count))
        plain_state = work / "plain-state"
        ledger_state = work / "ledger-state"
        rows = []
        for r in range(1, args.runs + 1):
            load0 = loadavg()
            t_plain, _ = timed([phoenix, "apply", str(plain_spec), "--yes", "--state-dir", str(plain_state)], env)
            t_ledger, out = timed([phoenix, "apply", str(ledger_spec), "--yes", "--state-dir", str(ledger_state),
                                   "--ledger", urls, "--ledger-key", key], env)
            records, changes = ledger_counts(out.stderr)
            _, d_out = timed([phoenix, "destroy", str(ledger_spec), "--yes", "--state-dir", str(ledger_state),
                              "--ledger", urls, "--ledger-key", key], env)
            d_records, d_changes = ledger_counts(d_out.stderr)
            timed([phoenix, "destroy", str(plain_spec), "--yes", "--state-dir", str(plain_state)], env)
            load1 = loadavg()
            row = dict(run=r, plain_s=t_plain, ledger_s=t_ledger, records=records, changes=changes,
                       destroy_records=d_records, destroy_changes=d_changes,
                       rate=records / t_ledger, load=(load0, load1))
            rows.append(row)
            print(f"run {r}: apply {t_plain:.2f} s without a ledger, {t_ledger:.2f} s with "
                  f"({t_ledger / t_plain:.2f}x); {records} records + {changes} provisioning changes "
                  f"confirmed ({records / t_ledger:.0f} records/s over the apply); destroy recorded "
                  f"{d_records} + {d_changes}; load {load0:.1f} -> {load1:.1f}", flush=True)

        verify = subprocess.run([phoenix, "history", str(ledger_spec), "--verify", "--ledger", urls,
                                 "--state-dir", str(ledger_state)], capture_output=True, text=True, env=env)
        if verify.returncode != 0:
            sys.exit(f"history --verify --ledger failed:\n{verify.stdout}\n{verify.stderr}")

        load0 = loadavg()
        t_sync, out = timed([phoenix, "history", str(plain_spec), "--sync", "--ledger", urls,
                             "--ledger-key", key, "--state-dir", str(plain_state)], env)
        synced, _ = ledger_counts(out.stderr)
        print(f"catch-up: {synced} records of the fleet applied without a ledger sent by "
              f"`history --sync` in {t_sync:.2f} s ({synced / t_sync:.0f} records/s); "
              f"load {load0:.1f} -> {loadavg():.1f}")

        med = lambda k: statistics.median(x[k] for x in rows)
        print(f"\nmedian of {len(rows)} runs, {args.count} services: apply {med('plain_s'):.2f} s without, "
              f"{med('ledger_s'):.2f} s with --ledger ({med('ledger_s') / med('plain_s'):.2f}x); "
              f"{med('rate'):.0f} records/s recorded during the apply "
              f"(min {min(x['rate'] for x in rows):.0f}, max {max(x['rate'] for x in rows):.0f}); "
              f"catch-up {synced / t_sync:.0f} records/s")
    finally:
        for spec, state in (("plain.yaml", "plain-state"), ("ledger.yaml", "ledger-state")):
            if (work / state).exists():
                subprocess.run([phoenix, "destroy", str(work / spec), "--yes", "--state-dir", str(work / state)],
                               env=env, stdin=subprocess.DEVNULL, capture_output=True)
        for n in nodes:
            n.kill()
            n.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
