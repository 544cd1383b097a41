#!/usr/bin/env python3
"""Two strata binaries side by side over freshly cut blocks (issue #12, query speed).

Each binary runs its own `strata all` and ingests the same `strata tools loadgen` load
(backfilled, 480 samples per series = 2 h at 15 s by default); both are flushed
(`POST /ingester/flush`: local blocks, shipped to the bucket), then the queries of
`bench/run.py` run once the querier's bucket listing (10 s) shows the blocks, the two
processes taking turns query by query and repetition by repetition, so machine load
hits both alike: compare the ratio, not the absolute times. Every answer of one binary
is compared with the other's, and `stats=all` reports the series each fetched.

    cargo build --release -p strata && cp target/release/strata /tmp/strata-after
    python3 bench/fresh_blocks.py --before /tmp/strata-before --after /tmp/strata-after \\
        --series 20000 --runs 5
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the side-by-side bench's helpers and query set)


def fetched(base, q, is_range, end):
    """Series fetched per source (`stats=all`) for one run of `q`."""
    _, body = run.timed_get(run.query_url(base, q, is_range, end) + "&stats=all")
    st = json.loads(body)["data"]["stats"]["strata"]
    return st["seriesFetched"], {s["source"].split(" ")[0]: s["seriesFetched"] for s in st["sources"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="strata binary measured first")
    ap.add_argument("--after", required=True, help="strata binary compared with it")
    ap.add_argument("--series", type=int, default=20000)
    ap.add_argument("--scrapes", type=int, default=480)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    bins = {"before": os.path.abspath(a.before), "after": os.path.abspath(a.after)}
    load = ["--series", str(a.series), "--shards", "4", "--interval", "15s", "--scrapes", str(a.scrapes)]
    with tempfile.TemporaryDirectory(prefix="strata-fresh-") as work:
        procs = {}
        try:
            for name, b in bins.items():
                s = procs[name] = run.Strata(work, "-" + name)
                s.start(b)
                print(f"== {name}: ingest", file=sys.stderr)
                run.ingest(s, b, load)
            for s in procs.values():
                s.flush()
            # the querier lists the bucket every 10 s: wait until both read from it
            probe = run.QUERY_SET[-1]
            deadline = time.time() + 120
            for name, s in procs.items():
                while fetched(s.base, probe[1], probe[2], s.end)[1].get("bucket", 0) == 0:
                    if time.time() > deadline:
                        sys.exit(f"{name}: the bucket never served the flushed blocks")
                    time.sleep(1)
            rows = []
            for label, q, is_range in run.QUERY_SET:
                answers, times, series = {}, {n: [] for n in procs}, {}
                for n, s in procs.items():
                    try:
                        _, body = run.timed_get(run.query_url(s.base, q, is_range, s.end))
                        answers[n] = run.normalise(body, s.end)
                        series[n] = fetched(s.base, q, is_range, s.end)
                    except run.QueryError as e:
                        answers[n], series[n] = None, (str(e), {})
                live = [n for n in procs if answers[n] is not None]
                for i in range(a.runs):
                    for n in live[i % len(live):] + live[:i % len(live)] if live else []:
                        s = procs[n]
                        times[n].append(run.timed_get(run.query_url(s.base, q, is_range, s.end))[0])
                med = {n: statistics.median(t) if t else None for n, t in times.items()}
                same = None
                if all(answers[n] is not None for n in procs):
                    # the two ingests end at different instants: compare shapes and values
                    # relative to each one's end
                    same = run.difference(answers["before"], answers["after"]) is None
                rows.append((label, med, series, same))
                print(f"  {label}: " + ", ".join(f"{n} {run.ms(med[n])} ms" for n in procs), file=sys.stderr)
        finally:
            for s in procs.values():
                s.stop()
    print(f"{a.series:,} series × {a.scrapes} samples, flushed; median of {a.runs}, taking turns\n")
    print("| query | before ms | after ms | after / before | series fetched before → after | same answer |")
    print("|---|---|---|---|---|---|")
    for label, med, series, same in rows:
        b, f = med["before"], med["after"]
        ratio = f"{f / b:.2f}×" if b and f else "—"
        sf = " → ".join(str(series[n][0]) for n in ("before", "after"))
        print(f"| {label} | {run.ms(b)} | {run.ms(f)} | {ratio} | {sf} | {'yes' if same else same} |")


if __name__ == "__main__":
    main()
