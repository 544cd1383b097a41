#!/usr/bin/env python3
"""Query latency beside Prometheus, over the same blocks, in one run.

`strata tools tsdb synth` writes 7 days of 1-minute data for 10k series (loadgen's
counters, gauges and histograms) as 2h blocks; Prometheus 2.42 serves a copy of them
(compaction off), `strata querier` reads them from a FILESYSTEM bucket. Each query of a
fixed set runs 5 times against each (after one warm-up); the table shows medians.

    bench/query.py            # full run, updates BENCHMARKS.md
    bench/query.py --quick    # 200 series × 6 h: checks both answer the same, no claims
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import ROOT, free_port, http, wait_ready  # noqa: E402

END = 1_700_006_400_000  # synth's default end


def queries(days):
    end = END / 1000 - 0.999
    day = end - 86400
    span = end - days * 86400 + 600
    return [
        ("selector (instant)", {"query": 'loadgen_metric_1{namespace="ns-3"}', "time": end}),
        ("rate sum by (1 d, 1 m step)", {"query": "sum by (namespace) (rate(loadgen_metric_0_total[5m]))", "start": day, "end": end, "step": 60}),
        ("histogram_quantile (1 d, 1 m step)", {"query": "histogram_quantile(0.9, sum by (le) (rate(loadgen_metric_2_bucket[5m])))", "start": day, "end": end, "step": 60}),
        ("topk (instant)", {"query": "topk(5, rate(loadgen_metric_3_total[5m]))", "time": end}),
        (f"rate sum ({days:g} d, 1 m step)", {"query": "sum(rate(loadgen_metric_0_total[5m]))", "start": span, "end": end, "step": 60}),
        # every series: rate() over several metrics would collide once names drop
        (f"max over all series ({days:g} d, 1 m step)", {"query": 'max({job="loadgen"})', "start": span, "end": end, "step": 60}),
    ]


def run_query(base, params):
    path = "/api/v1/query_range" if "step" in params else "/api/v1/query"
    url = base + path + "?" + urllib.parse.urlencode(params)
    t = time.perf_counter()
    try:
        status, body = http("GET", url, timeout=600)
    except urllib.error.HTTPError as e:
        sys.exit(f"{base}: {params['query']}: HTTP {e.code}: {e.read().decode()[:500]}")
    dt = time.perf_counter() - t
    v = json.loads(body)
    if v.get("status") != "success":
        sys.exit(f"{base}: {params['query']}: {body[:500]}")
    return dt, v["data"]


def normalise(data):
    out = {}
    for s in data["result"]:
        m = dict(s["metric"])
        pts = s.get("values") or [s["value"]]
        out[json.dumps(m, sort_keys=True)] = [(p[0], float(p[1]) if p[1] not in ("NaN",) else None) for p in pts]
    return out


def same(a, b):
    if a.keys() != b.keys():
        return False
    for k in a:
        if len(a[k]) != len(b[k]):
            return False
        for (t1, v1), (t2, v2) in zip(a[k], b[k]):
            if t1 != t2 or (v1 is None) != (v2 is None):
                return False
            if v1 is not None and abs(v1 - v2) > 1e-9 * max(abs(v1), abs(v2)):
                return False
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--series", type=int, default=10_000)
    ap.add_argument("--days", type=float, default=7)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    if a.quick:
        a.series, a.days, a.runs = 200, 0.25, 1
        binary = os.path.join(ROOT, "target", "debug", "strata")
    else:
        subprocess.run(["cargo", "build", "--release", "-p", "strata"], cwd=ROOT, check=True)
        binary = os.path.join(ROOT, "target", "release", "strata")
    with tempfile.TemporaryDirectory(prefix="strata-qbench-") as work:
        blocks = os.path.join(work, "blocks")
        t = time.time()
        subprocess.run([binary, "tools", "tsdb", "synth", blocks, "--series", str(a.series),
                        "--duration", f"{int(a.days * 24 * 60)}m", "--interval", "60s"],
                       check=True, stderr=subprocess.DEVNULL)
        print(f"synth: {time.time() - t:.1f}s", file=sys.stderr)
        prom_dir = os.path.join(work, "prom")
        shutil.copytree(blocks, prom_dir)
        bucket = os.path.join(work, "bucket")
        shutil.copytree(blocks, os.path.join(bucket, "anonymous"))
        cfg = os.path.join(work, "bucket.yml")
        with open(cfg, "w") as f:
            f.write(f"type: FILESYSTEM\nconfig:\n  directory: {bucket}\n")
        with open(os.path.join(work, "prom.yml"), "w") as f:
            f.write("global: {}\n")
        pp, sp = free_port(), free_port()
        log = open(os.path.join(work, "log.txt"), "w")
        prom = subprocess.Popen(["prometheus", f"--config.file={work}/prom.yml", f"--storage.tsdb.path={prom_dir}",
                                 f"--web.listen-address=127.0.0.1:{pp}", "--storage.tsdb.retention.time=100y",
                                 "--storage.tsdb.min-block-duration=2h", "--storage.tsdb.max-block-duration=2h",
                                 "--query.max-samples=4000000000"],
                                stdout=log, stderr=log)
        # The 7-day all-series query holds 10k series × 10080 steps: over both systems'
        # default --query.max-samples (50M), so both get it raised.
        strata = subprocess.Popen([binary, "querier", f"--http-address=127.0.0.1:{sp}", f"--objstore.config-file={cfg}",
                                   "--query.max-samples=4000000000"],
                                  stdout=log, stderr=log)
        try:
            wait_ready(f"http://127.0.0.1:{pp}/-/ready", prom, "prometheus")
            wait_ready(f"http://127.0.0.1:{sp}/-/ready", strata, "strata querier")
            rows = []
            for name, params in queries(a.days):
                med = {}
                for sysname, base in (("strata", f"http://127.0.0.1:{sp}"), ("prometheus", f"http://127.0.0.1:{pp}")):
                    _, data = run_query(base, params)  # warm-up (index caches, page cache)
                    times = [run_query(base, params)[0] for _ in range(a.runs)]
                    med[sysname] = (statistics.median(times), data)
                ok = same(normalise(med["strata"][1]), normalise(med["prometheus"][1]))
                if not ok:
                    print(f"WARNING: answers differ for {name}", file=sys.stderr)
                rows.append((name, med["strata"][0], med["prometheus"][0], ok))
        finally:
            prom.terminate()
            strata.terminate()
            prom.wait()
            strata.wait()
    lines = [
        f"{a.series:,} series × {a.days:g} days at 1-minute samples (`strata tools tsdb synth`), 2h blocks; "
        f"Prometheus 2.42 on a copy of the blocks (compaction off), `strata querier` on a FILESYSTEM bucket; "
        f"median of {a.runs} runs after one warm-up.",
        "",
        "| query | Strata | Prometheus | Strata/Prometheus | same answer |",
        "|---|---|---|---|---|",
    ]
    for name, s, p, ok in rows:
        lines.append(f"| {name} | {s * 1000:.1f} ms | {p * 1000:.1f} ms | {s / p:.2f}× | {'yes' if ok else 'NO'} |")
    report = "\n".join(lines)
    print(report)
    if a.quick:
        if not all(r[3] for r in rows):
            sys.exit("quick run: Strata and Prometheus answered differently")
        print("quick run: both answered every query alike (no timing claims)")
        return
    path = os.path.join(ROOT, "BENCHMARKS.md")
    text = open(path).read()
    start, end = "<!-- bench:query:start -->", "<!-- bench:query:end -->"
    block = f"{start}\nMeasured {time.strftime('%Y-%m-%d')} with `bench/query.py`.\n\n{report}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text += "\n## Side by side: query latency (`bench/query.py`)\n\n" + block + "\n"
    open(path, "w").write(text)


if __name__ == "__main__":
    main()
