#!/usr/bin/env python3
"""Peak memory and latency of the querier on the large queries of `bench/query.py`
(7 days × 10k series at 1-minute samples, `strata tools tsdb synth`, FILESYSTEM bucket),
one binary at a time, so two builds can be compared on the same blocks (issue #12,
bounded query memory).

For each query: one warm-up, then `--runs` timed runs (median); the querier's memory
high-water mark over the query's runs (VmHWM reset before them), its resident set a
second after them, and a digest of the answer (two builds must print the same).

    bench/query_memory.py --binary target/release/strata [--blocks DIR] [--runs 3]
"""

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from query import normalise, queries, run_query  # noqa: E402
from run import MemWatch, free_port, rss, wait_ready  # noqa: E402


def digest(data):
    n = normalise(data)
    return hashlib.sha256(json.dumps(n, sort_keys=True).encode()).hexdigest()[:16]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--blocks", help="blocks written by `strata tools tsdb synth` (made when missing)")
    ap.add_argument("--series", type=int, default=10_000)
    ap.add_argument("--days", type=float, default=7)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--all", action="store_true", help="every query of bench/query.py, not only the multi-day ones")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="strata-qmem-") as work:
        blocks = a.blocks or os.path.join(work, "blocks")
        if not os.path.isdir(blocks):
            subprocess.run([a.binary, "tools", "tsdb", "synth", blocks, "--series", str(a.series),
                            "--duration", f"{int(a.days * 24 * 60)}m", "--interval", "60s"],
                           check=True, stderr=subprocess.DEVNULL)
        bucket = os.path.join(work, "bucket")
        os.makedirs(bucket)
        os.symlink(os.path.abspath(blocks), os.path.join(bucket, "anonymous"))
        cfg = os.path.join(work, "bucket.yml")
        with open(cfg, "w") as f:
            f.write(f"type: FILESYSTEM\nconfig:\n  directory: {bucket}\n")
        port = free_port()
        log = open(os.path.join(work, "log.txt"), "w")
        # As bench/query.py: the all-series query needs more than the default 50M samples.
        q = subprocess.Popen([a.binary, "querier", f"--http-address=127.0.0.1:{port}",
                              f"--objstore.config-file={cfg}", "--query.max-samples=4000000000"],
                             stdout=log, stderr=log)
        rows = []
        try:
            wait_ready(f"http://127.0.0.1:{port}/-/ready", q, "strata querier")
            base = f"http://127.0.0.1:{port}"
            idle = rss(q.pid)
            for name, params in queries(a.days):
                if not a.all and f"({a.days:g} d" not in name:
                    continue
                with MemWatch({"q": q.pid}) as w:
                    _, data = run_query(base, params)
                    times = [run_query(base, params)[0] for _ in range(a.runs)]
                time.sleep(1)
                rows.append({"query": name, "median_s": statistics.median(times),
                             "peak_bytes": w.peak["q"], "rss_after_bytes": rss(q.pid),
                             "answer": digest(data)})
        finally:
            q.terminate()
            q.wait()
    print(json.dumps({"binary": a.binary, "idle_rss_bytes": idle, "rows": rows}, indent=1))
    for r in rows:
        print(f"{r['query']}: {r['median_s'] * 1000:.0f} ms, peak {r['peak_bytes'] / 2**20:.0f} MiB, "
              f"after {r['rss_after_bytes'] / 2**20:.0f} MiB, answer {r['answer']}", file=sys.stderr)


if __name__ == "__main__":
    main()
