#!/usr/bin/env python3
"""Query frontend benchmark (issue #16): a 30-day dashboard query over 10k series on a
bucket with downsampled blocks, through `strata query-frontend` in front of one
`strata querier`: cold (fresh querier and frontend), warm (every part cached), shifted by
one step (only the new edge computed), parallel split vs unsplit vs split run one part
at a time, and sharded (`--query-frontend.query-sharding-total-shards`, split and
unsplit). The cases take turns in every round; medians are printed, with the load
average and each cold case's object-store bytes and requests (from `stats=all`).

    cargo build --release -p strata
    python3 bench/frontend.py [--workdir DIR] [--rounds 5] [--binary target/release/strata]
        [--shards 4] [--querier-arg=--store.chunks-cache.max-size-bytes=0]

The bucket (synth: 10k series, 100 metric names, 30 days at 60 s; then one compactor
pass: 2h → 8h → 2d → 14d and raw → 5m → 1h) is built once per workdir and reused.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request

DAY = 86_400_000
END = 1_700_006_400_000  # synth's default end


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, timeout=600):
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=timeout) as r:
        body = r.read()
    return time.perf_counter() - t, body


def wait_ready(url, proc, what):
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited")
        try:
            with urllib.request.urlopen(url + "/-/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            time.sleep(0.1)
    sys.exit(f"{what} not ready")


def spawn(binary, args, log):
    port = free_port()
    p = subprocess.Popen(
        [binary, *args, f"--http-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, p, args[0])
    return p, url


def stop(p):
    p.terminate()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()


def build_bucket(binary, work):
    bucket = os.path.join(work, "bucket")
    done = os.path.join(work, "bucket.done")
    cfg = os.path.join(work, "bucket.yml")
    with open(cfg, "w") as f:
        f.write(f"type: FILESYSTEM\nconfig:\n  directory: {bucket}\n")
    if os.path.exists(done):
        return cfg
    shutil.rmtree(bucket, ignore_errors=True)
    t = time.time()
    subprocess.run([binary, "tools", "tsdb", "synth", "--series=10000", "--metrics=100",
                    "--duration=30d", "--interval=60s", f"--end={END}",
                    os.path.join(bucket, "anonymous")], check=True)
    print(f"synth: {time.time() - t:.0f} s", flush=True)
    t = time.time()
    subprocess.run([binary, "compactor", f"--objstore.config-file={cfg}",
                    f"--data-dir={os.path.join(work, 'compactor')}",
                    "--http-address=127.0.0.1:0"], check=True)
    print(f"compactor pass: {time.time() - t:.0f} s", flush=True)
    res = {}
    tenant = os.path.join(bucket, "anonymous")
    for b in os.listdir(tenant):
        m = os.path.join(tenant, b, "meta.json")
        if os.path.exists(m):
            meta = json.load(open(m))
            r = meta.get("thanos", {}).get("downsample", {}).get("resolution", 0)
            res[r] = res.get(r, 0) + 1
    print(f"blocks by resolution (ms): {res}", flush=True)
    open(done, "w").close()
    return cfg


RESOLUTION = ["auto"]


def range_url(base, q, start, end, step_s):
    return (f"{base}/api/v1/query_range?query={urllib.parse.quote(q)}"
            f"&start={start / 1000:.3f}&end={end / 1000:.3f}&step={step_s}"
            f"&max_source_resolution={RESOLUTION[0]}&stats=all")


def object_store(body):
    """(bytes, requests) read from the object store, as the answer's stats say."""
    s = json.loads(body)["data"].get("stats", {}).get("strata", {})
    return s.get("objectStoreBytes", 0), s.get("objectStoreRequests", 0)


def result(body):
    v = json.loads(body)
    assert v["status"] == "success", body[:300]
    return {json.dumps(s["metric"], sort_keys=True): s["values"] for s in v["data"]["result"]}


WORST = [0.0]


def check(got, want, what):
    """Same series and times; values within 1%: over downsampled blocks the querier's
    rate() depends slightly on the range it reads (raw reads agree exactly, see
    tests/tests/frontend.rs), as the downsampled test allows 1% against raw."""
    assert got.keys() == want.keys(), what
    for k, pts in want.items():
        assert [p[0] for p in got[k]] == [p[0] for p in pts], what
        for (_, a), (_, b) in zip(got[k], pts):
            a, b = float(a), float(b)
            d = abs(a - b) / max(abs(b), 1e-300)
            WORST[0] = max(WORST[0], d)
            assert d <= 0.01, f"{what}: {a} vs {b}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", default="/tmp/strata-bench-frontend")
    ap.add_argument("--binary", default="target/release/strata")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--days", type=int, default=30, help="range of the query")
    ap.add_argument("--shards", type=int, default=4,
                    help="--query-frontend.query-sharding-total-shards of the sharded cases")
    ap.add_argument("--querier-arg", action="append", default=[],
                    help="an extra flag for the querier (repeatable)")
    ap.add_argument("--resolution", default="auto",
                    help="max_source_resolution: auto, or 0s to read raw blocks only")
    a = ap.parse_args()
    binary = os.path.abspath(a.binary)
    os.makedirs(a.workdir, exist_ok=True)
    cfg = build_bucket(binary, a.workdir)
    log = open(os.path.join(a.workdir, "procs.log"), "ab")
    q_args = ["querier", f"--objstore.config-file={cfg}", "--query.log-slow-queries-over=0",
              "--query.max-samples=500000000", *a.querier_arg]
    querier, qurl = spawn(binary, q_args, log)
    query = 'sum by (namespace) (rate({job="loadgen"}[1h]))'
    step_s = 3600
    step = step_s * 1000
    end = END - 7 * step  # off the day boundary
    start = end - a.days * DAY
    RESOLUTION[0] = a.resolution
    fe_args = ["query-frontend", f"--query-frontend.downstream-url={qurl}"]
    sharded = f"--query-frontend.query-sharding-total-shards={a.shards}"
    cold_cases = {
        "cold": [],
        "cold, 1 part at a time": ["--query-frontend.max-parallelism=1"],
        f"cold, {a.shards} shards a part": [sharded],
        f"unsplit, {a.shards} shards": [sharded, "--query-range.split-interval=0"],
    }
    cases = {k: [] for k in ["unsplit", *cold_cases, "warm", "shifted"]}
    io = {k: [] for k in ["unsplit", *cold_cases]}
    want = None
    load = [os.getloadavg()[0]]
    for r in range(a.rounds):
        # Every cold case on a fresh querier: no chunk or index cached from another case.
        stop(querier)
        querier, qurl = spawn(binary, q_args, log)
        t, body = get(range_url(qurl, query, start, end, step_s))
        cases["unsplit"].append(t)
        io["unsplit"].append(object_store(body))
        want = want or result(body)
        for name, extra in cold_cases.items():
            stop(querier)
            querier, qurl = spawn(binary, q_args, log)
            fe_args[1] = f"--query-frontend.downstream-url={qurl}"
            fe, furl = spawn(binary, fe_args + extra, log)
            t, body = get(range_url(furl, query, start, end, step_s))
            cases[name].append(t)
            io[name].append(object_store(body))
            check(result(body), want, name)
            if name == "cold":
                t, body = get(range_url(furl, query, start, end, step_s))
                cases["warm"].append(t)
                check(result(body), want, "warm")
                s = (r + 1) * step
                t, body = get(range_url(furl, query, start + s, end + s, step_s))
                cases["shifted"].append(t)
                _, fresh = get(range_url(qurl, query, start + s, end + s, step_s))
                check(result(body), result(fresh), "shifted")
            stop(fe)
        load.append(os.getloadavg()[0])
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1] * 1e3:.1f} ms" for k, v in cases.items()),
              flush=True)
    stop(querier)
    med = {k: statistics.median(v) * 1e3 for k, v in cases.items()}
    print(f"\nquery: {query}, {a.days} days, step {step_s}s, max_source_resolution"
          f" {a.resolution}; {a.rounds} rounds, medians;"
          f" load average (1 min) {min(load):.1f}–{max(load):.1f};"
          f" largest difference from the unsplit answer {WORST[0]:.2e} (relative)")
    print("| case | median | vs unsplit | vs cold |")
    print("|---|---|---|---|")
    for k, v in med.items():
        print(f"| {k} | {v:.1f} ms | {med['unsplit'] / v:.2f}× | {med['cold'] / v:.1f}× |")
    print("\n| cold case | object-store bytes | object-store requests |")
    print("|---|---|---|")
    for k, v in io.items():
        b = statistics.median(x[0] for x in v)
        n = statistics.median(x[1] for x in v)
        print(f"| {k} | {b / 1e9:.2f} GB | {n:.0f} |")


if __name__ == "__main__":
    main()
