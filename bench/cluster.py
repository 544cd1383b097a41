#!/usr/bin/env python3
"""Cluster write-path benchmark: what replication costs.

Three setups on this machine, each fed the same deterministic load by `strata tools
loadgen` (pre-encoded, sharded, through ingester 1):

  single   one `strata ingester`, no cluster: the local append baseline
  rf1      three ingesters on a ring, replication factor 1 (each series on one owner,
           two thirds of the samples forwarded)
  rf3      three ingesters on a ring, replication factor 3, quorum writes (every
           sample on three owners)

For each: samples/s as the client saw them (all acknowledged), CPU seconds of the
whole cluster (every ingester's utime + stime from /proc), cluster samples per
CPU-second, and CPU per *stored copy* of a sample (one copy per owner). The aim of
issue 11: a replicated copy costs at most 1.3x a local append.

    bench/cluster.py                 # 100k series x 20 scrapes, prints a Markdown table
    bench/cluster.py --series 20000  # smaller
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def get(url, headers=None, timeout=5):
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read().decode()


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def start_cluster(strata, work, n, rf, peers_on):
    ports = [(free_port(), free_port()) for _ in range(n)]
    peers = ",".join(f"ing-{i + 1}=127.0.0.1:{g}" for i, (_, g) in enumerate(ports))
    procs = []
    for i, (h, g) in enumerate(ports):
        d = os.path.join(work, f"ing-{i + 1}")
        os.makedirs(d, exist_ok=True)
        args = [
            strata, "ingester",
            f"--tsdb.path={d}",
            f"--http-address=127.0.0.1:{h}",
            f"--grpc-address=127.0.0.1:{g}",
            f"--cluster.node-id=ing-{i + 1}",
            "--tsdb.ship-interval=1h",
            "--distributor.ingestion-rate-limit=0",
            "--ingester.max-global-series-per-user=0",
        ]
        if peers_on:
            args += [f"--cluster.peers={peers}", f"--ingester.ring.replication-factor={rf}"]
        log = open(os.path.join(d, "strata.log"), "w")
        procs.append(subprocess.Popen(args, stdout=log, stderr=log))
    for (h, _), p in zip(ports, procs):
        deadline = time.time() + 120
        while True:
            if p.poll() is not None:
                sys.exit(f"ingester exited; see {work}")
            try:
                if get(f"http://127.0.0.1:{h}/-/ready")[0] == 200:
                    break
            except Exception:
                pass
            if time.time() > deadline:
                sys.exit("ingester not ready")
            time.sleep(0.1)
    return procs, ports


def run(strata, setup, args):
    work = tempfile.mkdtemp(prefix=f"strata-bench-cluster-{setup}-")
    n, rf, peers_on = {"single": (1, 1, False), "rf1": (3, 1, True), "rf3": (3, 3, True)}[setup]
    procs, ports = start_cluster(strata, work, n, rf, peers_on)
    try:
        url = f"http://127.0.0.1:{ports[0][0]}/api/v1/push"
        before = sum(cpu_seconds(p.pid) for p in procs)
        t0 = time.time()
        out = subprocess.run(
            [strata, "tools", "loadgen", f"--url={url}", f"--series={args.series}",
             f"--scrapes={args.scrapes}", f"--shards={args.shards}", "--json"],
            capture_output=True, text=True,
        )
        wall = time.time() - t0
        cpu = sum(cpu_seconds(p.pid) for p in procs) - before
        res = json.loads(out.stdout.strip().splitlines()[-1])
        samples = res["samples_sent"] - res["samples_failed"]
        failed = res["samples_failed"]
        copies = samples * rf
        return {
            "setup": setup,
            "samples": samples,
            "failed": failed,
            "client_samples_per_s": res["samples_per_second"],
            "wall_s": wall,
            "cluster_cpu_s": cpu,
            "samples_per_cpu_s": samples / cpu,
            "us_per_copy": cpu / copies * 1e6,
            "peak_rss_mb": [round(rss_mb(p.pid)) for p in procs],
        }
    finally:
        for p in procs:
            p.send_signal(signal.SIGKILL)
            p.wait()
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=int, default=100_000)
    ap.add_argument("--scrapes", type=int, default=20)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--strata", default=os.path.join(ROOT, "target/release/strata"))
    args = ap.parse_args()
    if not os.path.exists(args.strata):
        subprocess.run(["cargo", "build", "--release", "-p", "strata"], cwd=ROOT, check=True)
    rows = []
    for _ in range(args.runs):
        for setup in ("single", "rf1", "rf3"):
            r = run(args.strata, setup, args)
            print(json.dumps(r), flush=True)
            rows.append(r)
    def median(xs):
        xs = sorted(xs)
        n = len(xs)
        return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2

    # Runs swing ±30% on a shared VM: compare medians over interleaved runs.
    base = median([r["us_per_copy"] for r in rows if r["setup"] == "single"])
    print()
    print("| setup | samples | failed samples | client samples/s | cluster CPU s | samples per cluster CPU-s | µs CPU per stored copy | vs local append | peak RSS MB (each ingester) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['setup']} | {r['samples']:,} | {r['failed']} | {r['client_samples_per_s']:,.0f} | {r['cluster_cpu_s']:.1f} | "
            f"{r['samples_per_cpu_s']:,.0f} | {r['us_per_copy']:.2f} | {r['us_per_copy'] / base:.2f}x | {r['peak_rss_mb']} |"
        )
    print()
    print("| setup | median µs CPU per stored copy | vs local append (medians) |")
    print("|---|---|---|")
    for setup in ("single", "rf1", "rf3"):
        m = median([r["us_per_copy"] for r in rows if r["setup"] == setup])
        print(f"| {setup} | {m:.2f} | {m / base:.2f}x |")


if __name__ == "__main__":
    main()
