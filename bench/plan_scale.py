#!/usr/bin/env python3
"""Times `phoenix plan` on generated fleets of 340 sites (15 core, 75 regional, 250 edge).

    python3 bench/plan_scale.py [--instances 10000 100000] [--runs 5] [--phoenix target/release/phoenix]

For each size it writes bench/out/fleet-N.yaml, runs `phoenix plan -o json` --runs times and
prints the median and best wall time, the median CPU time (user + system: steady when other
work shares the machine) and the peak resident memory of the plan process (from
wait4's rusage, so no external tool is needed). Build first: cargo build --release -p phoenix.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def fleet_yaml(instances: int) -> str:
    """A fleet of 340 sites whose services add up to exactly `instances` instances.

    A fixed mix per 1,000 instances: 4 validator sets of 15 spread across core sites, read
    replicas spread across regional sites, light clients spread across edge sites, and apps
    packed anywhere (no spread), with dependencies chaining into a few phases.
    """
    out = [
        "phoenix: 1",
        f"name: bench-{instances}",
        "policy: { cpu_overcommit: 2 }",
        "sites:",
        "  - { name: core, tier: core, count: 15, hosts: 8, capacity: { cpu: 128, memory: 1Ti, storage: 64T } }",
        "  - { name: regional, tier: regional, count: 75, hosts: 8, capacity: { cpu: 128, memory: 1Ti, storage: 64T } }",
        "  - { name: edge, tier: edge, count: 250, hosts: 2, capacity: { cpu: 32, memory: 128Gi, storage: 8T } }",
        "projects:",
        "  - { name: chain, duration: 2-3w }",
        "  - { name: platform, depends_on: [chain], duration: 3-5w }",
        "  - { name: edge-apps, depends_on: [platform], duration: 1-2w }",
        "services:",
    ]
    per_block = 1000
    blocks, rest = divmod(instances, per_block)
    n = 0

    def svc(name, project, phase, role, replicas, placement, cpu, mem, sto, deps):
        nonlocal n
        n += replicas
        dep = f", depends_on: [{', '.join(deps)}]" if deps else ""
        out.append(
            f"  - {{ name: {name}, project: {project}, phase: {phase}, role: {role}, replicas: {replicas}, "
            f"placement: {placement}, resources: {{ cpu: {cpu}, memory: {mem}, storage: {sto} }}{dep} }}"
        )

    for b in range(blocks):
        for v in range(4):
            svc(f"val-{b}-{v}", "chain", 1, "validator", 15, "{ tier: core, spread: site }", "2-4", "4-8Gi", "100-200G", [])
        svc(f"rep-{b}", "platform", 2, "replica", 150, "{ tier: regional, spread: site }", "1-2", "2-4Gi", "50-100G", [f"val-{b}-0"])
        svc(f"light-{b}", "edge-apps", 3, "light", 500, "{ tier: edge, spread: site }", "250m", "256Mi", "1G", [f"rep-{b}"])
        svc(f"app-{b}", "platform", 2, "app", 290, "{ tier: regional }", "500m-1", "1-2Gi", "10G", [f"rep-{b}"] if b % 2 else [])
    if rest:
        svc("app-rest", "platform", 2, "app", rest, "{ tier: regional }", "500m", "1Gi", "10G", [])
    assert n == instances, (n, instances)
    return "\n".join(out) + "\n"


def run_once(phoenix: str, path: str):
    start = time.perf_counter()
    proc = subprocess.Popen([phoenix, "plan", path, "-o", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"phoenix plan failed on {path}:\n{stderr.decode()}")
    plan = json.loads(stdout)
    placed = len(plan["instances"]) if isinstance(plan.get("instances"), list) else None
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024, placed


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--phoenix", default=os.path.join(ROOT, "target", "release", "phoenix"))
    ap.add_argument("--json", action="store_true", help="print one JSON object per size")
    args = ap.parse_args()
    os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
    rows = []
    for n in args.instances:
        path = os.path.join(HERE, "out", f"fleet-{n}.yaml")
        with open(path, "w") as f:
            f.write(fleet_yaml(n))
        times, cpus, rss, placed = [], [], 0, None
        for _ in range(args.runs):
            t, c, r, placed = run_once(args.phoenix, path)
            times.append(t)
            cpus.append(c)
            rss = max(rss, r)
        row = {
            "sites": 340,
            "instances": n,
            "placed": placed,
            "median_s": round(statistics.median(times), 4),
            "best_s": round(min(times), 4),
            "median_cpu_s": round(statistics.median(cpus), 4),
            "peak_rss_mib": round(rss / (1 << 20), 1),
            "runs": args.runs,
        }
        rows.append(row)
        if args.json:
            print(json.dumps(row))
        else:
            print(f"{n:>8} instances, 340 sites: wall median {row['median_s']:.3f} s (best {row['best_s']:.3f} s), CPU median {row['median_cpu_s']:.3f} s, peak RSS {row['peak_rss_mib']} MiB (placed {placed})")
    if len(rows) >= 2 and not args.json:
        a, b = rows[0], rows[-1]
        growth = b["median_cpu_s"] / a["median_cpu_s"] if a["median_cpu_s"] else float("inf")
        print(f"growth: {b['instances'] / a['instances']:.0f}x instances -> {growth:.1f}x CPU time")


if __name__ == "__main__":
    main()
