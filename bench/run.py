#!/usr/bin/env python3
"""Side-by-side benchmark: Strata vs Prometheus 2.42 vs VictoriaMetrics 1.79.

Each system ingests the same remote-write load from `strata tools loadgen`
(deterministic, pre-encoded, sharded; the same samples at the same offsets from each
run's end): by default 100k series × 480 scrapes at 15 s, i.e. a 2-hour head of 480
samples per series, backfilled with timestamps ending at the moment loadgen starts.
Ingest is measured with each system alone: samples/s, CPU seconds per million samples,
RSS per active series, bytes per sample on disk.

Then, with all three running, a fixed query set runs in three states, the systems
taking turns query by query and repetition by repetition (so a busy machine slows
all of them alike); each query is timed after one warm-up, the median is reported,
and each system's memory high-water mark is sampled *during* the state's queries
(VmHWM reset through /proc/PID/clear_refs before, read after, plus VmRSS polled
every 50 ms):

  head    the 2 h of samples in the head (Prometheus's head; VictoriaMetrics after
          /internal/force_flush, its in-memory rows written as small parts);
  blocks  freshly cut local blocks: Strata after `POST /ingester/flush`; Prometheus
          has no API to cut its head on demand, so the closest is a snapshot (the head
          written as a block) served by a second Prometheus started on it; for
          VictoriaMetrics, /internal/force_merge (it has no head/block split);
  bucket  `strata querier` on the bucket the flush uploaded to (Prometheus and
          VictoriaMetrics have no object-store tier: the same block/merged states as
          above, measured again in the same turns).

Answers of Strata and Prometheus are compared point by point (timestamps relative to
each run's end); VictoriaMetrics's rate/extrapolation differs, so it is not compared.

    bench/run.py                # full run (100k series), updates BENCHMARKS.md
    bench/run.py --quick        # small smoke run: checks all three ingested, Strata
                                # answered as Prometheus did; no timing claims

`bench/query.py` measures query latency over days of data in the bucket beside
Prometheus, and 30 days with and without downsampled blocks.
"""

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYSTEMS = ("strata", "prometheus", "victoriametrics")


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


def wait_ready(url, proc, what, timeout=300):
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


def status_kb(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def rss(pid):
    return status_kb(pid, "VmRSS:")


class MemWatch:
    """Memory high-water mark of processes over a `with` block: VmHWM reset before
    (writing 5 to /proc/PID/clear_refs) and read after, and VmRSS polled every 50 ms
    (the fallback where the reset is not allowed). Bytes per name in `.peak`."""

    def __init__(self, pids):
        self.pids = dict(pids)
        self.peak = {}
        self.reset = {}
        self._stop = threading.Event()

    def __enter__(self):
        for name, pid in self.pids.items():
            try:
                with open(f"/proc/{pid}/clear_refs", "w") as f:
                    f.write("5")
                self.reset[name] = True
            except OSError:
                self.reset[name] = False
            self.peak[name] = rss(pid)
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(0.05):
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], rss(pid))

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        for name, pid in self.pids.items():
            if self.reset[name]:
                self.peak[name] = max(self.peak[name], status_kb(pid, "VmHWM:"))
        return False


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


RANGE = 2 * 3600 - 300  # the head's 2 h, less the first [5m] window
STEP = 30
# Queries are evaluated this long after a sample timestamp: loadgen stamps every series
# of a scrape alike, so window edges would fall on samples, where Prometheus 2.42's
# closed [t-5m, t] and 3.x's (t-5m, t] (Strata's) differ. Real scrapes are not aligned.
OFFSET = 1.0

# (name, query, range?) over loadgen's layout (100 metric names: counters, gauges and
# 10-series histograms; a third of the names each). Series counts are at 100k series.
QUERY_SET = [
    ("sum(rate), 1k series, range", 'sum(rate(loadgen_metric_2_bucket{namespace=~"ns-[0-4]"}[5m]))', True),
    ("sum by (namespace) (rate), 2k series, range", "sum by (namespace) (rate(loadgen_metric_2_bucket[5m]))", True),
    ("histogram_quantile, 2k series, range",
     "histogram_quantile(0.9, sum by (le) (rate(loadgen_metric_2_bucket[5m])))", True),
    ("topk(5, gauge), 1k series, range", 'topk(5, {__name__=~"loadgen_metric_(1|4|7|10)"})', True),
    ("count({__name__=~\".+\"}), 100k series, instant", 'count({__name__=~".+"})', False),
    ("sum by (job) (66k raw series), range", 'sum by (job) ({__name__=~"loadgen_metric_.*_bucket"})', True),
    ("selector, 25 series, instant", 'loadgen_metric_1{namespace="ns-1"}', False),
]


def query_url(base, q, is_range, end):
    end += OFFSET
    if is_range:
        p = {"query": q, "start": f"{end - RANGE:.3f}", "end": f"{end:.3f}", "step": STEP}
        return f"{base}/api/v1/query_range?" + urllib.parse.urlencode(p)
    return f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": q, "time": f"{end:.3f}"})


class QueryError(Exception):
    pass


def timed_get(url):
    """(seconds, body); a refused query raises QueryError with its status and error."""
    t = time.perf_counter()
    try:
        _, body = http("GET", url, timeout=900)
    except urllib.error.HTTPError as e:
        try:
            why = json.loads(e.read().decode())["error"]
        except Exception:
            why = ""
        raise QueryError(f"HTTP {e.code}: {why}") from None
    return time.perf_counter() - t, body


def normalise(body, end):
    """{labels: [(ms relative to end, value)]}."""
    v = json.loads(body)
    if v.get("status") != "success":
        sys.exit(f"query failed: {body[:500]}")
    out = {}
    for s in v["data"]["result"]:
        pts = s.get("values") or [s["value"]]
        out[json.dumps(s["metric"], sort_keys=True)] = [
            (round((float(t) - end) * 1000), float(x)) for t, x in pts]
    return out


def difference(a, b):
    """None if the answers agree (values within 1e-9 relative), else the first difference."""
    if a.keys() != b.keys():
        return f"series differ: {sorted(a.keys() ^ b.keys())[:3]}"
    for k in a:
        if len(a[k]) != len(b[k]):
            return f"{k}: {len(a[k])} vs {len(b[k])} points"
        for (t1, v1), (t2, v2) in zip(a[k], b[k]):
            if t1 != t2 or (v1 != v1) != (v2 != v2) or (
                    v1 == v1 and abs(v1 - v2) > 1e-9 * max(abs(v1), abs(v2))):
                return f"{k}: ({t1}, {v1}) vs ({t2}, {v2})"
    return None


def measure_state(state, targets, runs):
    """Run QUERY_SET against every target, taking turns; medians and memory.

    `targets`: {system: (base url, pid, end seconds)}. Returns
    {"seconds": {query: {system: median}}, "peak": {system: bytes}, "same": {query: bool}}.
    """
    order = list(targets)
    seconds, same_answer, results, errors = {}, {}, {}, {}
    with MemWatch({n: t[1] for n, t in targets.items()}) as mem:
        for name, q, is_range in QUERY_SET:
            answers, errors[name] = {}, {}
            for sysname in order:
                base, _, end = targets[sysname]
                try:
                    _, body = timed_get(query_url(base, q, is_range, end))  # warm-up
                except QueryError as e:
                    # a refused query is a result (e.g. a limit Prometheus does not hit)
                    errors[name][sysname] = str(e)
                    print(f"  {state}: {sysname}: {q}: {e}", file=sys.stderr)
                    continue
                answers[sysname] = normalise(body, end)
                if not answers[sysname]:
                    sys.exit(f"{state}: {sysname}: {q}: empty answer")
            live = [s for s in order if s in answers]
            times = {s: [] for s in live}
            for i in range(runs):
                # rotate who goes first, so no system always follows the same one
                for sysname in live[i % len(live):] + live[:i % len(live)]:
                    base, _, end = targets[sysname]
                    times[sysname].append(timed_get(query_url(base, q, is_range, end))[0])
            seconds[name] = {s: statistics.median(times[s]) if s in times else None for s in order}
            if "strata" in answers and "prometheus" in answers:
                diff = difference(answers["strata"], answers["prometheus"])
                same_answer[name] = diff is None
                if diff:
                    print(f"WARNING: {state}: Strata and Prometheus answered {q} differently: {diff}",
                          file=sys.stderr)
            results[name] = {s: sum(len(v) for v in a.values()) for s, a in answers.items()}
            print(f"  {state}: {name}: " + ", ".join(f"{s} {ms(seconds[name][s])} ms" for s in order),
                  file=sys.stderr)
    return {"seconds": seconds, "peak": dict(mem.peak), "same": same_answer, "points": results, "errors": errors}


def ms(v):
    return "refused" if v is None else f"{v * 1000:,.1f}"


class System:
    name = ""

    def __init__(self, workdir, suffix=""):
        self.dir = os.path.join(workdir, self.name + suffix)
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.log = open(os.path.join(self.dir, "log.txt"), "w")
        self.base = f"http://127.0.0.1:{self.port}"
        self.end = None  # seconds: the newest sample's timestamp

    def stop(self):
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def head_span(self):
        """(numSeries, minTime, maxTime) of the head."""
        _, body = http("GET", f"{self.base}/api/v1/status/tsdb")
        h = json.loads(body)["data"]["headStats"]
        return h["numSeries"], h["minTime"], h["maxTime"]

    def count(self):
        return self.head_span()[0]

    def newest(self, t0):
        """The newest sample's timestamp, asked at `t0` + 60 s (loadgen stamps its last
        scrape with the time it started, t0 or just after)."""
        _, body = http("GET", f"{self.base}/api/v1/query?" + urllib.parse.urlencode(
            {"query": "max(timestamp(loadgen_metric_1))", "time": f"{t0 + 60:.3f}"}))
        return float(json.loads(body)["data"]["result"][0]["value"][1])


class Strata(System):
    name = "strata"

    def start(self, strata_bin):
        self.proc = subprocess.Popen(
            [strata_bin, "all", f"--data-dir={self.dir}/data",
             f"--http-address=127.0.0.1:{self.port}", f"--grpc-address=127.0.0.1:{free_port()}",
             "--tsdb.ship-interval=1h", "--ingester.max-global-series-per-user=0"],
            stdout=self.log, stderr=self.log)
        wait_ready(f"{self.base}/-/ready", self.proc, self.name)
        self.write_url = f"{self.base}/api/v1/push"

    def flush(self):
        http("POST", f"{self.base}/ingester/flush", data=b"", timeout=900)

    def disk_bytes(self):
        return dir_size(os.path.join(self.dir, "data", "bucket"))


class StrataQuerier(System):
    """`strata querier` on the bucket a `strata all` flushed to."""
    name = "strata-querier"

    def start(self, strata_bin, bucket_dir):
        cfg = os.path.join(self.dir, "bucket.yml")
        with open(cfg, "w") as f:
            f.write(f"type: FILESYSTEM\nconfig:\n  directory: {bucket_dir}\n")
        self.proc = subprocess.Popen(
            [strata_bin, "querier", f"--http-address=127.0.0.1:{self.port}", f"--objstore.config-file={cfg}"],
            stdout=self.log, stderr=self.log)
        wait_ready(f"{self.base}/-/ready", self.proc, self.name)


class Prometheus(System):
    name = "prometheus"

    def start(self, _, data_dir=None):
        cfg = os.path.join(self.dir, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("global: {}\n")
        self.data = data_dir or os.path.join(self.dir, "data")
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={self.data}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-remote-write-receiver",
             "--web.enable-admin-api", "--storage.tsdb.retention.time=100y"],
            stdout=self.log, stderr=self.log)
        wait_ready(f"{self.base}/-/ready", self.proc, self.name)
        self.write_url = f"{self.base}/api/v1/write"

    def snapshot(self):
        """The head written as a block (Prometheus's only on-demand cut): its path."""
        _, body = http("POST", f"{self.base}/api/v1/admin/tsdb/snapshot", data=b"", timeout=900)
        return os.path.join(self.data, "snapshots", json.loads(body)["data"]["name"])


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
        wait_ready(f"{self.base}/health", self.proc, self.name)
        self.write_url = f"{self.base}/api/v1/write"

    def force_flush(self):
        http("GET", f"{self.base}/internal/force_flush")

    def force_merge(self):
        http("GET", f"{self.base}/internal/force_merge", timeout=900)
        # force_merge returns before the merge ends: wait for no active merges, twice
        quiet = 0
        for _ in range(600):
            time.sleep(0.5)
            _, body = http("GET", f"{self.base}/metrics")
            active = sum(float(l.split()[-1]) for l in body.splitlines() if l.startswith("vm_active_merges"))
            quiet = quiet + 1 if active == 0 else 0
            if quiet >= 2:
                return

    def disk_bytes(self):
        return dir_size(os.path.join(self.dir, "data", "data"))

    def count(self):
        _, body = http("GET", f"{self.base}/api/v1/series/count")
        return json.loads(body)["data"][0]

    def newest(self, t0):
        _, body = http("GET", f"{self.base}/api/v1/query?" + urllib.parse.urlencode(
            {"query": "max(tlast_over_time(loadgen_metric_1[5m]))", "time": f"{t0 + 60:.3f}"}))
        return float(json.loads(body)["data"]["result"][0]["value"][1])


def ingest(s, strata_bin, load):
    t0 = time.time()
    out = subprocess.run(
        [strata_bin, "tools", "loadgen", "--url", s.write_url, "--json", "--measure-pid", str(s.proc.pid)] + load,
        capture_output=True, text=True, timeout=7200)
    if out.returncode != 0:
        sys.exit(f"loadgen against {s.name} failed:\n{out.stderr}\n{out.stdout}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    time.sleep(5)  # steady state: background work after the last request settles
    r["steady_rss"] = rss(s.proc.pid)
    r["series_seen"] = s.count()
    if isinstance(s, Victoria):
        s.force_flush()  # make the samples searchable
    s.end = s.newest(t0)
    return r


def check_head(s, scrapes, interval_s):
    """The head holds every scrape: nothing was cut into blocks during ingest."""
    n, mint, maxt = s.head_span()
    depth = (maxt - mint) // (interval_s * 1000) + 1
    if depth < scrapes:
        sys.exit(f"{s.name}: head holds {depth} scrapes ({mint}..{maxt}), want {scrapes}")
    return depth


def fmt(v, digits=0):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}"


def ratio(a, b):
    return f"{a / b:.2f}×" if a and b else "n/a"


def ingest_table(results, title):
    hdr = ["", "Strata", "Prometheus", "VictoriaMetrics", "Strata/Prom", "Strata/VM"]
    metrics = [
        ("ingest samples/s", lambda r: r["samples_per_second"], 0),
        ("samples per CPU-second", lambda r: r["server_samples_per_cpu_second"], 0),
        ("CPU s per million samples", lambda r: r["server_cpu_seconds_per_million_samples"], 3),
        ("peak RSS bytes per active series", lambda r: r["server_peak_rss_bytes"] / max(r["series"], 1), 0),
        ("steady RSS bytes per active series", lambda r: r["steady_rss"] / max(r["series"], 1), 0),
    ]
    if all("disk_bytes" in r for r in results.values()):
        metrics.append(("bytes per sample on disk after flush",
                        lambda r: r["disk_bytes"] / max(r["samples_sent"], 1), 2))
    rows = []
    for label, f, d in metrics:
        vals = [f(results[n]) for n in SYSTEMS]
        rows.append([label] + [fmt(v, d) for v in vals] + [ratio(vals[0], vals[1]), ratio(vals[0], vals[2])])
    lines = [f"**{title}**", "", "| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def query_table(states):
    """One row per query: Strata's latency and its ratio to each peer, per state."""
    hdr = ["query"]
    for st in states:
        hdr += [f"{st}: Strata ms", "/ Prom", "/ VM"]
    hdr.append("same answer as Prom")
    lines = ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for name, _, _ in QUERY_SET:
        row = [f"`{name}`"]
        ok = True
        for st, m in states.items():
            s = m["seconds"][name]
            row += [ms(s["strata"]), ratio(s["strata"], s["prometheus"]),
                    ratio(s["strata"], s["victoriametrics"])]
            ok = ok and m["same"].get(name, True)
        row.append("yes" if ok else "**NO**")
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Absolute medians (ms), Strata / Prometheus / VictoriaMetrics:", "",
              "| query | " + " | ".join(states) + " |", "|---|" + "---|" * len(states)]
    for name, _, _ in QUERY_SET:
        cells = []
        for m in states.values():
            s = m["seconds"][name]
            cells.append(" / ".join(ms(s[x]) for x in SYSTEMS))
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    refused = [(st, name, sysname, why) for st, m in states.items()
               for name, errs in m["errors"].items() for sysname, why in errs.items()]
    if refused:
        lines += ["", "Refused queries:", ""]
        lines += [f"- {st}, `{name}`, {sysname}: {why}" for st, name, sysname, why in refused]
    lines += ["", "Memory high-water mark during each state's queries (MiB):", "",
              "| state | Strata | Prometheus | VictoriaMetrics | Strata/Prom | Strata/VM |",
              "|---|---|---|---|---|---|"]
    for st, m in states.items():
        p = [m["peak"][x] for x in SYSTEMS]
        lines.append(f"| {st} | " + " | ".join(f"{v / 2**20:,.0f}" for v in p)
                     + f" | {ratio(p[0], p[1])} | {ratio(p[0], p[2])} |")
    return "\n".join(lines)


def run_churn(workdir, strata_bin, load):
    """Ingest with churn, each system alone (no queries)."""
    results = {}
    for cls in (Strata, Prometheus, Victoria):
        print(f"== {cls.name}, churn", file=sys.stderr)
        s = cls(workdir, "-churn")
        s.start(strata_bin)
        try:
            results[cls.name] = ingest(s, strata_bin, load)
        finally:
            s.stop()
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--series", type=int, default=100_000)
    ap.add_argument("--scrapes", type=int, default=480, help="samples per series in the head (480 = 2 h at 15 s)")
    ap.add_argument("--runs", type=int, default=5, help="timed repetitions per query and system")
    ap.add_argument("--churn", type=float, default=0.02)
    ap.add_argument("--churn-scrapes", type=int, default=20)
    ap.add_argument("--no-churn", action="store_true", help="skip the churn ingest table")
    ap.add_argument("--no-write", action="store_true", help="don't update BENCHMARKS.md")
    ap.add_argument("--binary", help="the strata binary to measure (default: build the release one)")
    a = ap.parse_args()
    if a.quick:
        a.series, a.runs, a.no_churn = 1000, 1, True
    if a.binary:
        strata_bin = os.path.abspath(a.binary)
    elif a.quick:
        # the smoke run checks behaviour, not speed: the test command's debug build will do
        strata_bin = os.path.join(ROOT, "target", "debug", "strata")
        if not os.path.exists(strata_bin):
            subprocess.run(["cargo", "build", "-p", "strata"], cwd=ROOT, check=True)
    else:
        strata_bin = os.path.join(ROOT, "target", "release", "strata")
        subprocess.run(["cargo", "build", "--release", "-p", "strata"], cwd=ROOT, check=True)
    interval_s = 15
    base = ["--series", str(a.series), "--shards", "4", "--interval", f"{interval_s}s"]
    load = base + ["--scrapes", str(a.scrapes)]
    # the generator's own ceiling, against an endpoint that discards requests
    out = subprocess.run([strata_bin, "tools", "loadgen", "--url", "null", "--json"] + base + ["--scrapes", "20"],
                         capture_output=True, text=True, check=True)
    ceiling = json.loads(out.stdout.strip().splitlines()[-1])["samples_per_second"]
    sections = [f"Load generator ceiling (null endpoint): {ceiling:,.0f} samples/s."]
    systems = {}
    with tempfile.TemporaryDirectory(prefix="strata-bench-") as work:
        try:
            results = {}
            for cls in (Strata, Prometheus, Victoria):
                print(f"== {cls.name}: ingest {a.series} series × {a.scrapes} scrapes", file=sys.stderr)
                s = systems[cls.name] = cls(work)
                s.start(strata_bin)
                r = results[cls.name] = ingest(s, strata_bin, load)
                print(json.dumps(r), file=sys.stderr)
                if r["samples_sent"] != a.series * a.scrapes or r["samples_failed"]:
                    sys.exit(f"{cls.name} did not ingest everything: {r}")
                if r["series_seen"] < a.series:
                    sys.exit(f"{cls.name} reports {r['series_seen']} series, want {a.series}")
                if cls is not Victoria:
                    r["head_depth"] = check_head(s, a.scrapes, interval_s)
            st, pr, vm = systems["strata"], systems["prometheus"], systems["victoriametrics"]
            states = {}
            print("== queries over the head", file=sys.stderr)
            states["head"] = measure_state("head", {
                "strata": (st.base, st.proc.pid, st.end),
                "prometheus": (pr.base, pr.proc.pid, pr.end),
                "victoriametrics": (vm.base, vm.proc.pid, vm.end)}, a.runs)

            print("== cutting blocks", file=sys.stderr)
            st.flush()
            results["strata"]["disk_bytes"] = st.disk_bytes()
            snap = pr.snapshot()
            results["prometheus"]["disk_bytes"] = dir_size(snap)
            pr.stop()
            pb = systems["prometheus-blocks"] = Prometheus(work, "-blocks")
            pb.start(None, data_dir=snap)
            pb.end = pr.end
            vm.force_merge()
            results["victoriametrics"]["disk_bytes"] = vm.disk_bytes()
            print("== queries over fresh blocks", file=sys.stderr)
            states["blocks"] = measure_state("blocks", {
                "strata": (st.base, st.proc.pid, st.end),
                "prometheus": (pb.base, pb.proc.pid, pb.end),
                "victoriametrics": (vm.base, vm.proc.pid, vm.end)}, a.runs)

            st.stop()
            sq = systems["strata-querier"] = StrataQuerier(work)
            sq.start(strata_bin, os.path.join(st.dir, "data", "bucket"))
            print("== queries over the bucket", file=sys.stderr)
            states["bucket"] = measure_state("bucket", {
                "strata": (sq.base, sq.proc.pid, st.end),
                "prometheus": (pb.base, pb.proc.pid, pb.end),
                "victoriametrics": (vm.base, vm.proc.pid, vm.end)}, a.runs)
        finally:
            for s in systems.values():
                if hasattr(s, "proc"):
                    s.stop()
        sections.append(ingest_table(results, f"ingest: {a.series:,} series × {a.scrapes} samples, no churn"))
        sections.append(query_table(states))
        if not a.no_churn:
            churn = run_churn(work, strata_bin, base + ["--scrapes", str(a.churn_scrapes), "--churn", str(a.churn)])
            sections.append(ingest_table(churn, f"ingest: with churn {a.churn} over {a.churn_scrapes} scrapes"))
    versions = {
        "strata": subprocess.run([strata_bin, "--version"], capture_output=True, text=True).stdout.strip(),
        "prometheus": subprocess.run(["prometheus", "--version"], capture_output=True, text=True).stdout.splitlines()[0],
    }
    if which("victoria-metrics", "victoria-metrics-prod"):
        # Debian's build prints no version; ask the package manager
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "victoria-metrics"], capture_output=True, text=True)
        versions["victoriametrics"] = out.stdout.strip() or "unknown"
    cpu = ""
    try:
        cpu = re.search(r"model name\s*:\s*(.*)", open("/proc/cpuinfo").read()).group(1)
    except Exception:
        pass
    try:
        load_avg = open("/proc/loadavg").read().split()[:3]
    except OSError:
        load_avg = ["?"] * 3
    report = "\n\n".join([
        f"Workload: `strata tools loadgen {' '.join(load)}`: {a.series:,} active series × {a.scrapes} samples "
        f"at {interval_s} s (a {a.scrapes * interval_s / 3600:g} h head, timestamps backfilled to loadgen's start), "
        f"requests pre-encoded, 4 shards, 2000 samples per request. Range queries: the last "
        f"{RANGE // 60} min of the data at a {STEP} s step; instant queries at the newest sample. "
        f"Median of {a.runs} runs after one warm-up, the systems taking turns.",
        f"Machine: {os.cpu_count()} cores, {cpu}, {platform.platform()}; load average at the end "
        f"{' '.join(load_avg)}. Versions: " + "; ".join(f"{k} `{v}`" for k, v in versions.items()) + ".",
        *sections,
    ])
    print(report)
    if a.quick:
        for st, m in states.items():
            refused = {n: e for n, e in m["errors"].items() if e}
            if refused:
                sys.exit(f"quick run: {st}: refused: {refused}")
            bad = [n for n, ok in m["same"].items() if not ok]
            if bad:
                sys.exit(f"quick run: {st}: Strata and Prometheus answered differently: {bad}")
        print("quick run: all three systems ingested every sample, Strata answered as Prometheus "
              "over the head, fresh blocks and the bucket (no timing claims)")
        return
    if not a.no_write:
        path = os.path.join(ROOT, "BENCHMARKS.md")
        text = open(path).read()
        start, end = "<!-- bench:head2h:start -->", "<!-- bench:head2h:end -->"
        block = f"{start}\nMeasured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with `bench/run.py`.\n\n{report}\n{end}"
        if start in text:
            text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
        else:
            text += "\n## Side by side with a 2-hour head (issue #12)\n\n" + block + "\n"
        open(path, "w").write(text)


if __name__ == "__main__":
    main()
