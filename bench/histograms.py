#!/usr/bin/env python3
"""Native histograms beside Prometheus 2.42 (issue #13): bytes per histogram sample in
the head and in blocks, and ingest throughput of a histogram stream.

`strata all` and a Prometheus 2.42 (`--enable-feature=native-histograms`, remote-write
receiver) are sent the same `strata tools loadgen --native-histograms` stream (one
third of the series native histograms, schema 3, the rest floats; same `--end-time`).
Then each one's chunks are read from disk and counted by encoding (XOR 1, histogram 2,
float histogram 3; the sample count is each chunk's first two bytes):

* head: Prometheus's memory-mapped head chunks (`chunks_head/`: every chunk the head
  has completed, the open one per series excepted); Strata keeps head chunks in memory,
  so its head figure is the block it flushes from the head (`POST /ingester/flush`),
  which holds the head's chunks as they were cut;
* blocks: Strata's flushed block and the block Prometheus's snapshot writes from its
  head (`/api/v1/admin/tsdb/snapshot`, the only on-demand cut).

Ingest: loadgen's samples/s and the server's CPU per million samples (`--measure-pid`),
run one system after the other on the same machine: compare ratios, not absolutes.

    cargo build --release -p strata
    python3 bench/histograms.py --strata target/release/strata --series 3000 --scrapes 480
"""

import argparse
import glob
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the side-by-side bench's process helpers)

ENCODINGS = {1: "XOR", 2: "histogram", 3: "float histogram"}


def uvarint(b, i):
    x, s = 0, 0
    while True:
        c = b[i]
        i += 1
        x |= (c & 0x7F) << s
        if c < 0x80:
            return x, i
        s += 7


def count_chunk(out, enc, n, b, i, start):
    """Count one chunk of `enc` whose `n` data bytes start at `i`; the next offset."""
    samples = int.from_bytes(b[i:i + 2], "big")
    i += n + 4  # data, CRC
    s = out.setdefault(ENCODINGS.get(enc, str(enc)), [0, 0, 0])
    s[0] += 1
    s[1] += samples
    s[2] += i - start
    return i


def head_chunk_stats(paths):
    """{encoding: [chunks, samples, bytes]} over Prometheus's `chunks_head/` files
    (series ref, mint, maxt, encoding, length, data, CRC per chunk). Bytes include the
    framing, as the files hold them."""
    out = {}
    for p in paths:
        with open(p, "rb") as f:
            b = f.read()
        i = 8  # magic, version, padding
        while i + 25 < len(b):
            start = i
            enc = b[i + 24]
            n, i = uvarint(b, i + 25)
            if enc == 0 and n == 0:
                break  # zero tail
            i = count_chunk(out, enc, n, b, i, start)
    return out


def block_chunk_stats(root):
    """The same over every block's `chunks/` files under `root` (length, encoding,
    data, CRC per chunk)."""
    out = {}
    for p in sorted(glob.glob(os.path.join(root, "**", "chunks", "0*"), recursive=True)):
        with open(p, "rb") as f:
            b = f.read()
        i = 8
        while i < len(b):
            start = i
            n, i = uvarint(b, i)
            enc = b[i]
            if n == 0 and enc == 0:
                break
            i = count_chunk(out, enc, n, b, i + 1, start)
    return out


class HistPrometheus(run.Prometheus):
    """Prometheus 2.42 with native histograms on."""

    def start(self, _, data_dir=None):
        cfg = os.path.join(self.dir, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("global: {}\n")
        self.data = data_dir or os.path.join(self.dir, "data")
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={self.data}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-remote-write-receiver",
             "--web.enable-admin-api", "--storage.tsdb.retention.time=100y",
             "--enable-feature=native-histograms"],
            stdout=self.log, stderr=self.log)
        run.wait_ready(f"{self.base}/-/ready", self.proc, self.name)
        self.write_url = f"{self.base}/api/v1/write"


def row(name, st):
    cells = []
    for enc in ("histogram", "float histogram", "XOR"):
        c, s, b = st.get(enc, [0, 0, 0])
        cells.append(f"{b / s:.1f} ({c:,} chunks, {s / max(c, 1):.0f} samples each)" if s else "–")
    return f"| {name} | " + " | ".join(cells) + " |"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strata", required=True, help="strata binary")
    ap.add_argument("--series", type=int, default=3000)
    ap.add_argument("--scrapes", type=int, default=480)
    a = ap.parse_args()
    strata_bin = os.path.abspath(a.strata)
    end = int(time.time() * 1000) - 60_000
    load = ["--native-histograms", "--series", str(a.series), "--metrics", "3",
            "--scrapes", str(a.scrapes), "--interval", "15s", "--shards", "4",
            "--end-time", str(end)]
    results, stats = {}, {}
    with tempfile.TemporaryDirectory(prefix="strata-hist-") as work:
        for cls in (run.Strata, HistPrometheus):
            s = cls(work)
            s.start(strata_bin)
            try:
                print(f"== {s.name}: ingest", file=sys.stderr)
                results[s.name] = run.ingest(s, strata_bin, load)
                if isinstance(s, run.Strata):
                    s.flush()
                    blocks = block_chunk_stats(os.path.join(s.dir, "data", "bucket"))
                    stats[s.name] = {"head": blocks, "block": blocks}
                else:
                    head = head_chunk_stats(sorted(glob.glob(os.path.join(s.data, "chunks_head", "0*"))))
                    snap = s.snapshot()
                    stats[s.name] = {"head": head, "block": block_chunk_stats(snap)}
            finally:
                s.stop()
    print("| | histogram chunks: bytes/sample | float histogram | XOR (floats) |")
    print("|---|---|---|---|")
    for where in ("head", "block"):
        for name in ("strata", "prometheus"):
            print(row(f"{name} {where}", stats[name][where]))
    print()
    print("| | samples/s | server CPU s per million samples | steady RSS bytes per series |")
    print("|---|---|---|---|")
    for name in ("strata", "prometheus"):
        r = results[name]
        print(f"| {name} | {r['samples_per_second']:,.0f} | "
              f"{r['server_cpu_seconds_per_million_samples']:.2f} | "
              f"{r['steady_rss'] / max(r['series'], 1):,.0f} |")


if __name__ == "__main__":
    main()
