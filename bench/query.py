#!/usr/bin/env python3
"""Query latency beside Prometheus, over the same blocks, in one run.

`strata tools tsdb synth` writes 7 days of 1-minute data for 10k series (loadgen's
counters, gauges and histograms) as 2h blocks; Prometheus 2.42 serves a copy of them
(compaction off), `strata querier` reads them from a FILESYSTEM bucket. Each query of a
fixed set runs 5 times against each (after one warm-up); the table shows medians.

Then 30 days in the bucket through the querier, with and without downsampled blocks:
`synth` writes 30 days of 2h blocks, `strata compactor` (one pass at a time, until a
pass has nothing to do) compacts them to 14d blocks and downsamples them to 5m and 1h;
each query runs with `max_source_resolution=0s` (raw only) and `auto`, beside
Prometheus on the same raw blocks; the downsampled answers are checked against raw
(within 1%), and each process's memory high-water mark over its queries is reported.

    bench/query.py            # full run, updates BENCHMARKS.md
    bench/query.py --quick    # 200 series × 6 h, 20 series × 30 d at 1 m: checks
                              # answers, no claims
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
from run import ROOT, MemWatch, free_port, http, wait_ready  # noqa: E402

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


DAY = 86400


def ds_queries(end):
    """30-day dashboards at a 1 h step over loadgen's layout (`--metrics 10`)."""
    # 1 ms after the hour: window edges on samples are where Prometheus 2.42's closed
    # windows and 3.x's left-open ones (Strata's) differ. A downsampled aggregate is
    # stamped at its 5m window's last millisecond (Thanos's layout), so an hour-aligned
    # window reads aggregates one raw sample earlier than raw; further off the 5m grid
    # the shift grows to 5 minutes (Grafana aligns ranges to the step).
    end += 0.001
    span = {"start": end - 29 * DAY, "end": end, "step": 3600}
    return [
        ("sum by (le) (rate(histogram buckets[1h]))", dict(span, query="sum by (le) (rate(loadgen_metric_2_bucket[1h]))")),
        ("max_over_time(gauge[1d])", dict(span, query="max_over_time(loadgen_metric_1[1d])")),
        ("avg_over_time(gauge[1h])", dict(span, query="avg_over_time(loadgen_metric_1[1h])")),
    ]


def worst_relative(raw, got):
    """Largest relative difference over the points both answers have, and the share of
    raw's points `got` has."""
    worst, matched, total, at, over = 0.0, 0, 0, None, []
    for k, pts in raw.items():
        g = dict(got.get(k, []))
        for t, v in pts:
            total += 1
            if t in g and v is not None and g[t] is not None:
                matched += 1
                d = abs(g[t] - v) / max(abs(v), 1e-9)
                if d > 0.01:
                    over.append(t)
                if d > worst:
                    worst, at = d, (k, t, v, g[t])
    if worst > 0.05:
        print(f"downsampled vs raw: worst at {at}; {len(over)} of {total} points off by > 1%, "
              f"at {sorted(set(over))[:20]}", file=sys.stderr)
    return worst, matched / max(total, 1)


def compact_all(binary, cfg, work, log):
    """`strata compactor` passes until one does nothing; returns (passes, seconds)."""
    t = time.time()
    for n in range(1, 12):
        out = subprocess.run([binary, "compactor", f"--objstore.config-file={cfg}", f"--data-dir={work}/compactor",
                              "--delete-delay=0s", f"--http-address=127.0.0.1:{free_port()}"],
                             capture_output=True, text=True)
        log.write(out.stderr)
        if out.returncode != 0:
            sys.exit(f"compactor failed: {out.stderr[-2000:]}")
        m = re.search(r"compactions=(\d+) downsamplings=(\d+)", out.stderr + out.stdout)
        if not m:
            sys.exit(f"compactor: no pass report in its log: {out.stderr[-2000:]}")
        if m.group(1) == "0" and m.group(2) == "0":
            return n, time.time() - t
    sys.exit("compactor: still working after 11 passes")


def downsampled(binary, work, a, log):
    """30 days in a bucket: querier raw vs auto (downsampled), Prometheus on the raw blocks."""
    blocks = os.path.join(work, "ds-blocks")
    end = END // 1000
    t = time.time()
    subprocess.run([binary, "tools", "tsdb", "synth", blocks, "--series", str(a.ds_series), "--metrics", "10",
                    "--duration", "30d", "--interval", a.ds_interval], check=True, stderr=subprocess.DEVNULL)
    synth_s = time.time() - t
    bucket = os.path.join(work, "ds-bucket")
    shutil.copytree(blocks, os.path.join(bucket, "anonymous"))
    shutil.rmtree(blocks)
    cfg = os.path.join(work, "ds-bucket.yml")
    with open(cfg, "w") as f:
        f.write(f"type: FILESYSTEM\nconfig:\n  directory: {bucket}\n")
    passes, compact_s = compact_all(binary, cfg, work, log)
    print(f"30 d: synth {synth_s:.1f}s, compactor {passes} passes {compact_s:.1f}s", file=sys.stderr)
    # Prometheus reads the raw blocks (the downsampled ones hold Thanos's aggregate chunks)
    prom_dir = os.path.join(work, "ds-prom")
    os.makedirs(prom_dir)
    resolutions = {}
    tenant = os.path.join(bucket, "anonymous")
    for b in os.listdir(tenant):
        meta_path = os.path.join(tenant, b, "meta.json")
        if not os.path.exists(meta_path) or os.path.exists(os.path.join(tenant, b, "deletion-mark.json")):
            continue
        res = json.load(open(meta_path)).get("thanos", {}).get("downsample", {}).get("resolution", 0)
        resolutions[res] = resolutions.get(res, 0) + 1
        if res == 0:
            shutil.copytree(os.path.join(tenant, b), os.path.join(prom_dir, b))
    pp, sp = free_port(), free_port()
    prom = subprocess.Popen(["prometheus", f"--config.file={work}/prom.yml", f"--storage.tsdb.path={prom_dir}",
                             f"--web.listen-address=127.0.0.1:{pp}", "--storage.tsdb.retention.time=100y",
                             "--storage.tsdb.min-block-duration=2h", "--storage.tsdb.max-block-duration=2h"],
                            stdout=log, stderr=log)
    strata = subprocess.Popen([binary, "querier", f"--http-address=127.0.0.1:{sp}", f"--objstore.config-file={cfg}"],
                              stdout=log, stderr=log)
    rows = []
    try:
        wait_ready(f"http://127.0.0.1:{pp}/-/ready", prom, "prometheus")
        wait_ready(f"http://127.0.0.1:{sp}/-/ready", strata, "strata querier")
        targets = [
            ("strata raw", f"http://127.0.0.1:{sp}", strata.pid, {"max_source_resolution": "0s"}),
            ("strata auto", f"http://127.0.0.1:{sp}", strata.pid, {"max_source_resolution": "auto"}),
            ("prometheus raw", f"http://127.0.0.1:{pp}", prom.pid, {}),
        ]
        for name, params in ds_queries(end):
            med, answers, peaks = {}, {}, {}
            for tname, base, pid, extra in targets:
                p = dict(params, **extra)
                _, data = run_query(base, p)  # warm-up
                answers[tname] = normalise(data)
                with MemWatch({tname: pid}) as mem:
                    times = [run_query(base, p)[0] for _ in range(a.runs)]
                med[tname] = statistics.median(times)
                peaks[tname] = mem.peak[tname]
            raw_same = same(answers["strata raw"], answers["prometheus raw"])
            worst, share = worst_relative(answers["strata raw"], answers["strata auto"])
            rows.append((name, med, peaks, raw_same, worst, share))
    finally:
        prom.terminate()
        strata.terminate()
        prom.wait()
        strata.wait()
    lines = [
        f"{a.ds_series:,} series (`--metrics 10`) × 30 days at {a.ds_interval} (`strata tools tsdb synth`), "
        f"compacted and downsampled by `strata compactor` ({passes} passes, {compact_s:.0f} s; blocks by resolution "
        f"{dict(sorted(resolutions.items()))}); range queries over 29 days at a 1 h step through `strata querier` on "
        f"the FILESYSTEM bucket, `max_source_resolution=0s` (raw) vs `auto` (5m at a 1 h step), and Prometheus 2.42 "
        f"on the raw blocks; median of {a.runs} runs after one warm-up; memory: each process's high-water mark "
        f"over the timed runs.",
        "",
        "| query | Strata raw | Strata auto | raw/auto | Prometheus raw | auto/Prometheus | MiB: raw / auto / Prom "
        "| raw = Prometheus | auto vs raw: worst relative difference, points present |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, med, peaks, raw_same, worst, share in rows:
        r, d, p = med["strata raw"], med["strata auto"], med["prometheus raw"]
        mib = " / ".join(f"{peaks[k] / 2**20:,.0f}" for k in ("strata raw", "strata auto", "prometheus raw"))
        lines.append(f"| `{name}` | {r * 1000:,.1f} ms | {d * 1000:,.1f} ms | {r / d:.1f}× | {p * 1000:,.1f} ms "
                     f"| {d / p:.2f}× | {mib} | {'yes' if raw_same else 'NO'} | {worst * 100:.2f}%, {share * 100:.0f}% |")
    # raw must equal Prometheus; downsampled must have the points (its accuracy is a
    # figure, not a check: random data is the worst case for a one-sample shift)
    ok = all(r[3] and r[5] >= 0.95 for r in rows)
    return "\n".join(lines), ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--series", type=int, default=10_000)
    ap.add_argument("--days", type=float, default=7)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--ds-series", type=int, default=2000, help="series of the 30-day downsampling part")
    ap.add_argument("--ds-interval", default="30s", help="sample interval of the 30-day part")
    ap.add_argument("--no-downsampled", action="store_true", help="skip the 30-day part")
    ap.add_argument("--only-downsampled", action="store_true", help="only the 30-day part")
    ap.add_argument("--binary", help="the strata binary to measure (default: build the release one)")
    a = ap.parse_args()
    if a.quick:
        a.series, a.days, a.runs, a.ds_series, a.ds_interval = 200, 0.25, 1, 20, "60s"
        binary = os.path.join(ROOT, "target", "debug", "strata")
    elif not a.binary:
        subprocess.run(["cargo", "build", "--release", "-p", "strata"], cwd=ROOT, check=True)
        binary = os.path.join(ROOT, "target", "release", "strata")
    if a.binary:
        binary = os.path.abspath(a.binary)
    if a.only_downsampled:
        with tempfile.TemporaryDirectory(prefix="strata-qbench-") as work:
            with open(os.path.join(work, "prom.yml"), "w") as f:
                f.write("global: {}\n")
            ds_report, ds_ok = downsampled(binary, work, a, open(os.path.join(work, "log.txt"), "w"))
        print(ds_report)
        if a.quick and not ds_ok:
            sys.exit("quick run: 30 days: raw answers differ from Prometheus's, or downsampled ones miss points")
        if not a.quick:
            write_section("downsampled", ds_report,
                          "30 days through the querier, raw and downsampled (`bench/query.py`)")
        return
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
                med, peak = {}, {}
                for sysname, base, pid in (("strata", f"http://127.0.0.1:{sp}", strata.pid),
                                           ("prometheus", f"http://127.0.0.1:{pp}", prom.pid)):
                    with MemWatch({sysname: pid}) as mem:
                        _, data = run_query(base, params)  # warm-up (index caches, page cache)
                        times = [run_query(base, params)[0] for _ in range(a.runs)]
                    med[sysname] = (statistics.median(times), data)
                    peak[sysname] = mem.peak[sysname]
                ok = same(normalise(med["strata"][1]), normalise(med["prometheus"][1]))
                if not ok:
                    print(f"WARNING: answers differ for {name}", file=sys.stderr)
                rows.append((name, med["strata"][0], med["prometheus"][0], ok, peak))
        finally:
            prom.terminate()
            strata.terminate()
            prom.wait()
            strata.wait()
        ds_report, ds_ok = ("", True) if a.no_downsampled else downsampled(binary, work, a, log)
    lines = [
        f"{a.series:,} series × {a.days:g} days at 1-minute samples (`strata tools tsdb synth`), 2h blocks; "
        f"Prometheus 2.42 on a copy of the blocks (compaction off), `strata querier` on a FILESYSTEM bucket; "
        f"median of {a.runs} runs after one warm-up; memory: each process's high-water mark over a query's runs "
        f"(the processes stay up from query to query).",
        "",
        "| query | Strata | Prometheus | Strata/Prometheus | MiB: Strata / Prometheus | same answer |",
        "|---|---|---|---|---|---|",
    ]
    for name, s, p, ok, peak in rows:
        lines.append(f"| {name} | {s * 1000:.1f} ms | {p * 1000:.1f} ms | {s / p:.2f}× "
                     f"| {peak['strata'] / 2**20:,.0f} / {peak['prometheus'] / 2**20:,.0f} | {'yes' if ok else 'NO'} |")
    report = "\n".join(lines)
    print(report)
    print(ds_report)
    if a.quick:
        if not all(r[3] for r in rows):
            sys.exit("quick run: Strata and Prometheus answered differently")
        if not ds_ok:
            sys.exit("quick run: 30 days: raw answers differ from Prometheus's, or downsampled ones miss points")
        print("quick run: both answered every query alike, downsampled answers have raw's points (no timing claims)")
        return
    write_section("query", report, "Side by side: query latency (`bench/query.py`)")
    if ds_report:
        write_section("downsampled", ds_report, "30 days through the querier, raw and downsampled (`bench/query.py`)")


def write_section(marker, report, title):
    """Replace the text between `<!-- bench:{marker}:start/end -->` in BENCHMARKS.md (or
    append it under `title`)."""
    path = os.path.join(ROOT, "BENCHMARKS.md")
    text = open(path).read()
    start, end = f"<!-- bench:{marker}:start -->", f"<!-- bench:{marker}:end -->"
    block = f"{start}\nMeasured {time.strftime('%Y-%m-%d')} with `bench/query.py`.\n\n{report}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text += f"\n## {title}\n\n" + block + "\n"
    open(path, "w").write(text)


if __name__ == "__main__":
    main()
