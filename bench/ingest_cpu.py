#!/usr/bin/env python3
"""Remote-write ingest CPU per sample (issue #12): each target in turn (round after
round, so a busy shared machine weighs on all alike) gets a fresh data directory and
the same `strata tools loadgen` load; the server's utime+stime over the load (loadgen's
`--measure-pid`) gives samples per CPU-second, and VmRSS 5 s after the last request
(as `bench/run.py`'s steady RSS) gives bytes per active series.

Targets are strata binaries (run as `strata all` with bench/run.py's flags) or `vm`
(victoria-metrics on PATH). The first binary's loadgen drives every target.

Usage: python3 bench/ingest_cpu.py [--scrapes 60] [--rounds 3] TARGET...
"""
import argparse, json, os, shutil, socket, statistics, subprocess, tempfile, time, urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(target, d):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    if target == "vm":
        cmd = ["victoria-metrics", f"-storageDataPath={d}/data", f"-httpListenAddr=127.0.0.1:{port}",
               "-retentionPeriod=100y"]
        ready, url = base + "/health", base + "/api/v1/write"
    else:
        cmd = [target, "all", f"--data-dir={d}/data", f"--http-address=127.0.0.1:{port}",
               f"--grpc-address=127.0.0.1:{free_port()}", "--tsdb.ship-interval=1h",
               "--ingester.max-global-series-per-user=0"]
        ready, url = base + "/-/ready", base + "/api/v1/push"
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            if urllib.request.urlopen(ready).status == 200:
                return p, url
        except Exception:
            time.sleep(0.1)
    p.kill()
    raise SystemExit(f"{target} did not become ready")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=int, default=100_000)
    ap.add_argument("--scrapes", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("targets", nargs="+")
    a = ap.parse_args()
    loadgen = next(t for t in a.targets if t != "vm")
    got = {t: [] for t in a.targets}
    mem = {t: [] for t in a.targets}
    for r in range(a.rounds):
        for t in a.targets:
            d = tempfile.mkdtemp(prefix="ingest-cpu-")
            p, url = start(t, d)
            try:
                out = subprocess.run(
                    [loadgen, "tools", "loadgen", "--url", url, "--series", str(a.series), "--shards", "4",
                     "--scrapes", str(a.scrapes), "--measure-pid", str(p.pid), "--json"],
                    capture_output=True, text=True, check=True)
                time.sleep(5)  # steady state, as bench/run.py: background work settles
                with open(f"/proc/{p.pid}/status") as f:
                    rss_kb = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
            finally:
                p.kill()
                p.wait()
                shutil.rmtree(d, ignore_errors=True)
            res = json.loads(out.stdout.strip().splitlines()[-1])
            if res["samples_failed"]:
                raise SystemExit(f"{t}: {res['samples_failed']} samples failed")
            got[t].append(res["server_samples_per_cpu_second"])
            mem[t].append(rss_kb * 1024 / a.series)
            print(f"round {r + 1}: {t}: {res['server_samples_per_cpu_second']:,.0f} samples per CPU-second "
                  f"({res['server_cpu_seconds']:.2f} CPU s), steady RSS {mem[t][-1]:,.0f} B/series", flush=True)
    for t, v in got.items():
        print(f"{t}: median {statistics.median(v):,.0f} samples per CPU-second "
              f"(runs: {', '.join(f'{x:,.0f}' for x in v)}); steady RSS median "
              f"{statistics.median(mem[t]):,.0f} B/series (runs: {', '.join(f'{x:,.0f}' for x in mem[t])})")


if __name__ == "__main__":
    main()
