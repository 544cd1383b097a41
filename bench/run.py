#!/usr/bin/env python3
"""Side-by-side benchmark: Strata vs Prometheus 2.42 vs VictoriaMetrics 1.79.

Each system runs alone on loopback with the same workload from `strata tools loadgen`
(deterministic, pre-encoded, sharded). For each: sustained ingest samples/s, CPU seconds
per million samples, peak and steady RSS per active series, bytes per sample on disk
after a flush, and the median latency of a fixed query set over the ingested data. With
--churn the same again with series churn.

    bench/run.py                # full run (100k series), updates BENCHMARKS.md
    bench/run.py --quick        # small smoke run: checks all three ingested, no timing claims

`bench/query.py` measures query latency over days of data beside Prometheus.
"""

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def http(method, url, data=None, timeout=60):
    req = urllib.request.Request(url, data=data, method=method)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read().decode()


def wait_ready(url, proc, what, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited before it was ready")
        try:
            if http("GET", url, timeout=2)[0] == 200:
                return
        except Exception:
            pass
        time.sleep(0.1)
    sys.exit(f"{what} not ready at {url}")


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def dir_size(path):
    total = 0
    for dp, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(dp, f))
            except OSError:
                pass
    return total


def which(*names):
    for n in names:
        p = shutil.which(n)
        if p:
            return p
    return None


QUERY_SET = [
    ("selector", 'loadgen_metric_1{namespace="ns-3"}'),
    ("rate sum by", "sum by (namespace) (rate(loadgen_metric_0_total[2m]))"),
    ("histogram_quantile", "histogram_quantile(0.9, sum by (le) (rate(loadgen_metric_2_bucket[2m])))"),
    ("topk", "topk(5, rate(loadgen_metric_3_total[2m]))"),
    ("count all series", 'count({job="loadgen"})'),
]


def query_latency(base, runs):
    """Median seconds per query of QUERY_SET over the ingested data (instant, now)."""
    import statistics
    import urllib.parse
    out = {}
    now = time.time()
    for name, q in QUERY_SET:
        url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": q, "time": f"{now:.3f}"})
        _, body = http("GET", url, timeout=600)  # warm-up
        if json.loads(body).get("status") != "success" or not json.loads(body)["data"]["result"]:
            sys.exit(f"{base}: {q}: no result: {body[:300]}")
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            http("GET", url, timeout=600)
            times.append(time.perf_counter() - t)
        out[name] = statistics.median(times)
    return out


class System:
    name = ""

    def __init__(self, workdir):
        self.dir = os.path.join(workdir, self.name)
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.log = open(os.path.join(self.dir, "log.txt"), "w")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Strata(System):
    name = "strata"

    def start(self, strata_bin):
        self.proc = subprocess.Popen(
            [strata_bin, "all", f"--data-dir={self.dir}/data",
             f"--http-address=127.0.0.1:{self.port}", f"--grpc-address=127.0.0.1:{free_port()}",
             "--tsdb.ship-interval=1h", "--ingester.max-global-series-per-user=0"],
            stdout=self.log, stderr=self.log)
        wait_ready(f"http://127.0.0.1:{self.port}/-/ready", self.proc, self.name)
        self.write_url = f"http://127.0.0.1:{self.port}/api/v1/push"
        self.query_url = f"http://127.0.0.1:{self.port}"

    def flush_and_size(self):
        http("POST", f"http://127.0.0.1:{self.port}/ingester/flush", data=b"", timeout=600)
        return dir_size(os.path.join(self.dir, "data", "bucket"))

    def count(self):
        _, body = http("GET", f"http://127.0.0.1:{self.port}/api/v1/status/tsdb")
        return json.loads(body)["data"]["headStats"]["numSeries"]


class Prometheus(System):
    name = "prometheus"

    def start(self, _):
        cfg = os.path.join(self.dir, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("global: {}\n")
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={self.dir}/data",
             f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-remote-write-receiver",
             "--web.enable-admin-api", "--storage.tsdb.retention.time=100y"],
            stdout=self.log, stderr=self.log)
        wait_ready(f"http://127.0.0.1:{self.port}/-/ready", self.proc, self.name)
        self.write_url = f"http://127.0.0.1:{self.port}/api/v1/write"
        self.query_url = f"http://127.0.0.1:{self.port}"

    def flush_and_size(self):
        # A snapshot writes the head as a block: the on-disk form of what was ingested.
        _, body = http("POST", f"http://127.0.0.1:{self.port}/api/v1/admin/tsdb/snapshot", data=b"", timeout=600)
        name = json.loads(body)["data"]["name"]
        return dir_size(os.path.join(self.dir, "data", "snapshots", name))

    def count(self):
        _, body = http("GET", f"http://127.0.0.1:{self.port}/api/v1/status/tsdb")
        return json.loads(body)["data"]["headStats"]["numSeries"]


class Victoria(System):
    name = "victoriametrics"

    def start(self, _):
        binary = which("victoria-metrics", "victoria-metrics-prod", "victoriametrics")
        if not binary:
            sys.exit("victoria-metrics not found: apt-get install -y victoria-metrics")
        self.proc = subprocess.Popen(
            [binary, f"-storageDataPath={self.dir}/data", f"-httpListenAddr=127.0.0.1:{self.port}",
             "-retentionPeriod=100y", "-search.disableCache", "-search.latencyOffset=0s"],
            stdout=self.log, stderr=self.log)
        wait_ready(f"http://127.0.0.1:{self.port}/health", self.proc, self.name)
        self.write_url = f"http://127.0.0.1:{self.port}/api/v1/write"
        self.query_url = f"http://127.0.0.1:{self.port}"

    def flush_and_size(self):
        http("GET", f"http://127.0.0.1:{self.port}/internal/force_flush")
        http("GET", f"http://127.0.0.1:{self.port}/internal/force_merge", timeout=600)
        time.sleep(2)  # force_merge returns before the merge finishes; no API to poll
        return dir_size(os.path.join(self.dir, "data", "data"))

    def count(self):
        _, body = http("GET", f"http://127.0.0.1:{self.port}/api/v1/series/count")
        return json.loads(body)["data"][0]


def run_one(cls, workdir, strata_bin, load, query_runs):
    s = cls(workdir)
    s.start(strata_bin)
    try:
        out = subprocess.run(
            [strata_bin, "tools", "loadgen", "--url", s.write_url, "--json", "--measure-pid", str(s.proc.pid)] + load,
            capture_output=True, text=True, timeout=3600)
        if out.returncode != 0:
            sys.exit(f"loadgen against {s.name} failed:\n{out.stderr}\n{out.stdout}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        time.sleep(5)  # steady state: background work after the last request settles
        r["steady_rss"] = rss(s.proc.pid)
        r["series_seen"] = s.count()
        if cls is Victoria:
            http("GET", f"http://127.0.0.1:{s.port}/internal/force_flush")  # make samples searchable
        r["query_seconds"] = query_latency(s.query_url, query_runs)
        r["disk_bytes"] = s.flush_and_size()
        return r
    finally:
        s.stop()


def fmt(v, digits=0):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}"


def table(results, churn):
    rows = []
    hdr = ["", "Strata", "Prometheus", "VictoriaMetrics", "Strata/Prom", "Strata/VM"]
    def ratio(a, b):
        return f"{a / b:.2f}×" if a and b else "n/a"
    metrics = [
        ("ingest samples/s", lambda r: r["samples_per_second"], 0),
        ("samples per CPU-second", lambda r: r["server_samples_per_cpu_second"], 0),
        ("CPU s per million samples", lambda r: r["server_cpu_seconds_per_million_samples"], 3),
        ("peak RSS bytes per active series", lambda r: r["server_peak_rss_bytes"] / max(r["series"], 1), 0),
        ("steady RSS bytes per active series", lambda r: r["steady_rss"] / max(r["series"], 1), 0),
        ("bytes per sample on disk after flush", lambda r: r["disk_bytes"] / max(r["samples_sent"], 1), 2),
    ]
    for name, _ in QUERY_SET:
        metrics.append((f"query latency ms: {name}", lambda r, n=name: r["query_seconds"][n] * 1000, 2))
    for label, f, d in metrics:
        vals = [f(results[n]) for n in ("strata", "prometheus", "victoriametrics")]
        rows.append([label] + [fmt(v, d) for v in vals] + [ratio(vals[0], vals[1]), ratio(vals[0], vals[2])])
    lines = [f"**{'with churn ' + str(churn) if churn else 'no churn'}**", "",
             "| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--series", type=int, default=100_000)
    ap.add_argument("--scrapes", type=int, default=20)
    ap.add_argument("--churn", type=float, default=0.02)
    ap.add_argument("--no-write", action="store_true", help="don't update BENCHMARKS.md")
    a = ap.parse_args()
    if a.quick:
        a.series, a.scrapes = 2000, 3
    if a.quick:
        # the smoke run checks behaviour, not speed: the test command's debug build will do
        strata_bin = os.path.join(ROOT, "target", "debug", "strata")
        if not os.path.exists(strata_bin):
            subprocess.run(["cargo", "build", "-p", "strata"], cwd=ROOT, check=True)
    else:
        strata_bin = os.path.join(ROOT, "target", "release", "strata")
        subprocess.run(["cargo", "build", "--release", "-p", "strata"], cwd=ROOT, check=True)
    base = ["--series", str(a.series), "--scrapes", str(a.scrapes), "--shards", "4"]
    # the generator's own ceiling, against an endpoint that discards requests
    out = subprocess.run([strata_bin, "tools", "loadgen", "--url", "null", "--json"] + base,
                         capture_output=True, text=True, check=True)
    ceiling = json.loads(out.stdout.strip().splitlines()[-1])["samples_per_second"]
    sections = [f"Load generator ceiling (null endpoint): {ceiling:,.0f} samples/s."]
    with tempfile.TemporaryDirectory(prefix="strata-bench-") as work:
        for churn in ([0.0] if a.quick else [0.0, a.churn]):
            load = base + (["--churn", str(churn)] if churn else [])
            results = {}
            for cls in (Strata, Prometheus, Victoria):
                print(f"== {cls.name}, churn {churn}", file=sys.stderr)
                results[cls.name] = run_one(cls, os.path.join(work, f"c{churn}"), strata_bin, load, 1 if a.quick else 5)
                r = results[cls.name]
                print(json.dumps(r), file=sys.stderr)
                if r["samples_sent"] != a.series * a.scrapes or r["samples_failed"]:
                    sys.exit(f"{cls.name} did not ingest everything: {r}")
                if r["series_seen"] < a.series:
                    sys.exit(f"{cls.name} reports {r['series_seen']} series, want {a.series}")
            sections.append(table(results, churn))
    versions = {
        "strata": subprocess.run([strata_bin, "--version"], capture_output=True, text=True).stdout.strip(),
        "prometheus": subprocess.run(["prometheus", "--version"], capture_output=True, text=True).stdout.splitlines()[0],
    }
    vm = which("victoria-metrics", "victoria-metrics-prod")
    if vm:
        # Debian's build prints no version; ask the package manager
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "victoria-metrics"], capture_output=True, text=True)
        versions["victoriametrics"] = out.stdout.strip() or "unknown"
    cpu = ""
    try:
        cpu = re.search(r"model name\s*:\s*(.*)", open("/proc/cpuinfo").read()).group(1)
    except Exception:
        pass
    report = "\n\n".join([
        f"Workload: `strata tools loadgen {' '.join(base)}` (+ `--churn {a.churn}` for the churn table); "
        f"{a.series:,} active series × {a.scrapes} samples, requests pre-encoded, 4 shards, 2000 samples per request.",
        f"Machine: {os.cpu_count()} cores, {cpu}, {platform.platform()}. Versions: "
        + "; ".join(f"{k} `{v}`" for k, v in versions.items()) + ".",
        *sections,
    ])
    print(report)
    if a.quick:
        print("quick run: all three systems ingested every sample (no timing claims)")
        return
    if not a.no_write:
        path = os.path.join(ROOT, "BENCHMARKS.md")
        text = open(path).read()
        start, end = "<!-- bench:ingest:start -->", "<!-- bench:ingest:end -->"
        block = f"{start}\nMeasured {time.strftime('%Y-%m-%d')} with `bench/run.py`.\n\n{report}\n{end}"
        if start in text:
            text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
        else:
            text += "\n## Side by side: ingest (`bench/run.py`)\n\n" + block + "\n"
        open(path, "w").write(text)


if __name__ == "__main__":
    main()
