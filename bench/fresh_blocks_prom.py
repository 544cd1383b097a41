#!/usr/bin/env python3
"""Strata over freshly cut blocks beside Prometheus 2.42 on the same data (issue #12).

`setup` ingests the same `strata tools loadgen` load (backfilled, 480 samples per series
= 2 h at 15 s) into one `strata all` and one Prometheus, flushes Strata
(`POST /ingester/flush`: local blocks, shipped to the bucket) and snapshots Prometheus
(the head written as a block: Prometheus's only on-demand cut, as `bench/run.py` does),
then keeps both data directories. `measure` starts every named strata binary on its
own copy of the flushed data directory and a Prometheus on the snapshot, waits until
each querier's bucket listing serves the blocks, and runs `bench/run.py`'s range
queries (and, with `--all`, its instant ones) with all processes taking turns query by
query and repetition by repetition; each Strata answer is compared with Prometheus's.
`--hold` keeps the processes up afterwards (URLs and PIDs printed) for profiling, until
DIR/stop exists.

    python3 bench/fresh_blocks_prom.py setup --binary /tmp/strata-before --series 20000 --dir /tmp/fbp
    python3 bench/fresh_blocks_prom.py measure --dir /tmp/fbp --runs 7 \\
        before=/tmp/strata-before after=/tmp/strata-after
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the side-by-side bench's helpers and query set)


def setup(a):
    os.makedirs(a.dir, exist_ok=True)
    binary = os.path.abspath(a.binary)
    load = ["--series", str(a.series), "--shards", "4", "--interval", "15s", "--scrapes", str(a.scrapes)]
    st, pr = run.Strata(a.dir, "-setup"), run.Prometheus(a.dir, "-setup")
    try:
        for s in (st, pr):
            s.start(binary)
            print(f"== {s.name}: ingest", file=sys.stderr)
            run.ingest(s, binary, load)
            run.check_head(s, a.scrapes, 15)
        st.flush()
        snap = pr.snapshot()
    finally:
        for s in (st, pr):
            if hasattr(s, "proc"):
                s.stop()
    state = {"strata_data": os.path.join(st.dir, "data"), "strata_end": st.end,
             "prometheus_data": snap, "prometheus_end": pr.end, "series": a.series, "scrapes": a.scrapes}
    with open(os.path.join(a.dir, "state.json"), "w") as f:
        json.dump(state, f)
    print(json.dumps(state))


def bucket_serves(base, end):
    """The querier reads the flushed blocks from the bucket (its listing refreshes every 10 s)."""
    label, q, is_range = run.QUERY_SET[-1]
    _, body = run.timed_get(run.query_url(base, q, is_range, end) + "&stats=all")
    st = json.loads(body)["data"]["stats"]["strata"]
    return any(s["source"].startswith("bucket") and s["seriesFetched"] for s in st["sources"])


def measure(a):
    with open(os.path.join(a.dir, "state.json")) as f:
        state = json.load(f)
    names = [b.split("=", 1)[0] for b in a.binaries]
    bins = {b.split("=", 1)[0]: os.path.abspath(b.split("=", 1)[1]) for b in a.binaries}
    procs, ends = {}, {}
    queries = [q for q in run.QUERY_SET if (a.all or q[2]) and (not a.only or a.only in q[0])]
    try:
        for n in names:
            s = procs[n] = run.Strata(a.dir, "-" + n)
            shutil.rmtree(os.path.join(s.dir, "data"), ignore_errors=True)
            # the data only: a copied cluster state would name the setup's gRPC address as
            # a live ingester with this node's id, and start-up refuses that
            shutil.copytree(state["strata_data"], os.path.join(s.dir, "data"),
                            ignore=lambda d, names: ["cluster"] if d == state["strata_data"] else [])
            s.start(bins[n])
            ends[n] = state["strata_end"]
        pb = procs["prometheus"] = run.Prometheus(a.dir, "-blocks")
        pb.start(None, data_dir=state["prometheus_data"])
        ends["prometheus"] = state["prometheus_end"]
        deadline = time.time() + 120
        for n in names:
            while not bucket_serves(procs[n].base, ends[n]):
                if time.time() > deadline:
                    sys.exit(f"{n}: the bucket never served the flushed blocks")
                time.sleep(1)
        order = list(procs)
        rows = []
        for label, q, is_range in queries:
            answers = {}
            for n in order:
                _, body = run.timed_get(run.query_url(procs[n].base, q, is_range, ends[n]))  # warm-up
                answers[n] = run.normalise(body, ends[n])
            times = {n: [] for n in order}
            for i in range(a.runs):
                for n in order[i % len(order):] + order[:i % len(order)]:
                    times[n].append(run.timed_get(run.query_url(procs[n].base, q, is_range, ends[n]))[0])
            med = {n: statistics.median(t) for n, t in times.items()}
            same = {n: run.difference(answers[n], answers["prometheus"]) for n in names}
            for n, d in same.items():
                if d:
                    print(f"WARNING: {n} and Prometheus answered {q} differently: {d}", file=sys.stderr)
            rows.append((label, med, same))
            print(f"  {label}: " + ", ".join(f"{n} {run.ms(med[n])} ms" for n in order), file=sys.stderr)
        print(f"{state['series']:,} series × {state['scrapes']} samples, Strata flushed, Prometheus on a "
              f"snapshot; median of {a.runs}, taking turns; load average "
              f"{' '.join(open('/proc/loadavg').read().split()[:3])}\n")
        print("| query | " + " | ".join(f"{n} ms" for n in order) + " | "
              + " | ".join(f"{n} / Prom" for n in names) + " | same answer as Prom |")
        print("|---|" + "---|" * (len(order) + len(names) + 1))
        for label, med, same in rows:
            print(f"| `{label}` | " + " | ".join(run.ms(med[n]) for n in order) + " | "
                  + " | ".join(f"{med[n] / med['prometheus']:.2f}×" for n in names) + " | "
                  + ("yes" if not any(same.values()) else "**NO**") + " |")
        if a.hold:
            for n, s in procs.items():
                print(f"{n}: {s.base} pid {s.proc.pid} end {ends[n]}", file=sys.stderr)
            stop = os.path.join(a.dir, "stop")
            print(f"holding until {stop} exists", file=sys.stderr)
            while not os.path.exists(stop):
                time.sleep(1)
            os.remove(stop)
    finally:
        for s in procs.values():
            if hasattr(s, "proc"):
                s.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("setup")
    s.add_argument("--binary", required=True)
    s.add_argument("--dir", required=True)
    s.add_argument("--series", type=int, default=20000)
    s.add_argument("--scrapes", type=int, default=480)
    m = sub.add_parser("measure")
    m.add_argument("--dir", required=True)
    m.add_argument("--runs", type=int, default=7)
    m.add_argument("--all", action="store_true", help="the instant queries too")
    m.add_argument("--only", help="only the queries whose name contains this")
    m.add_argument("--hold", action="store_true", help="keep the processes up afterwards, until DIR/stop exists")
    m.add_argument("binaries", nargs="+", help="name=path of each strata binary")
    a = ap.parse_args()
    (setup if a.cmd == "setup" else measure)(a)


if __name__ == "__main__":
    main()
