#!/usr/bin/env python3
"""The small instant selector's fixed cost (issue #12): `bench/run.py`'s 25-series selector
against running servers, taking turns in rounds; per target and round 50 requests on one
keep-alive connection, 50 on fresh connections and 10 with `stats=all` (for the engine's
`innerEvalTime` and `execTotalTime`); prints p25 / median / p75 in ms.

    python3 bench/small_query.py 8 before=http://127.0.0.1:9090=1796419506.817 prom=...

END is the data's newest timestamp in seconds (as `bench/fresh_blocks_prom.py --hold`
prints it); the query runs at END plus `run.py`'s offset."""
import http.client
import json
import os
import statistics
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa

Q = next(q for label, q, _ in run.QUERY_SET if label.startswith("selector"))
ROUNDS = int(sys.argv[1])
targets = []
for a in sys.argv[2:]:
    n, base, end = a.split("=", 2)
    targets.append((n, base, float(end)))


def path_of(end, stats=False):
    url = run.query_url("", Q, False, end)
    return url + ("&stats=all" if stats else "")


def hostport(base):
    u = urllib.parse.urlparse(base)
    return u.hostname, u.port


res = {n: {"keep": [], "fresh": [], "inner": [], "total": []} for n, _, _ in targets}
for r in range(ROUNDS):
    order = targets[r % len(targets):] + targets[:r % len(targets)]
    for n, base, end in order:
        h, p = hostport(base)
        path = path_of(end)
        c = http.client.HTTPConnection(h, p)
        for i in range(50):
            t = time.perf_counter()
            c.request("GET", path)
            b = c.getresponse().read()
            res[n]["keep"].append(time.perf_counter() - t)
        c.close()
        for i in range(50):
            t = time.perf_counter()
            c = http.client.HTTPConnection(h, p)
            c.request("GET", path)
            b = c.getresponse().read()
            c.close()
            res[n]["fresh"].append(time.perf_counter() - t)
        c = http.client.HTTPConnection(h, p)
        for i in range(10):
            c.request("GET", path_of(end, True))
            d = json.loads(c.getresponse().read())
            assert d["status"] == "success" and len(d["data"]["result"]) > 0, d
            tm = d["data"]["stats"]["timings"]
            res[n]["inner"].append(tm["innerEvalTime"])
            res[n]["total"].append(tm.get("execTotalTime", tm["evalTotalTime"]))
        c.close()


def q(xs):
    xs = sorted(xs)
    k = len(xs)
    return f"{1000 * xs[k // 4]:.3f} / {1000 * statistics.median(xs):.3f} / {1000 * xs[3 * k // 4]:.3f}"


print(f"{ROUNDS} rounds; p25 / median / p75 ms; load {open('/proc/loadavg').read().split()[:3]}")
for n, _, _ in targets:
    x = res[n]
    print(f"{n:12} keep-alive {q(x['keep'])} (n={len(x['keep'])})  fresh {q(x['fresh'])}  "
          f"innerEval {q(x['inner'])}  total {q(x['total'])}")
