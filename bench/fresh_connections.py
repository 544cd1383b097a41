#!/usr/bin/env python3
"""Server CPU and latency of a trivial instant query (`vector(1)`) sent on a new
connection each time, to `strata all` from two binaries taking turns (A, B, A, B).
Usage: python3 bench/fresh_connections.py BINARY_A BINARY_B QUERIES"""
import os, shutil, statistics, subprocess, sys, tempfile, time, urllib.request
def cpu(pid):
    f=open(f"/proc/{pid}/stat").read().rsplit(")",1)[1].split()
    return (int(f[11])+int(f[12]))/os.sysconf("SC_CLK_TCK")
def run(binary, port):
    d=tempfile.mkdtemp()
    p=subprocess.Popen([binary,"all","--data-dir",d+"/data",f"--http-address=127.0.0.1:{port}",f"--grpc-address=127.0.0.1:{port+1}"],stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL)
    base=f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if urllib.request.urlopen(base+"/-/ready").status==200: break
        except Exception: time.sleep(0.1)
    q=base+"/api/v1/query?query=vector(1)"
    for _ in range(50): urllib.request.urlopen(q).read()
    c0=cpu(p.pid); t0=time.time(); lat=[]
    for _ in range(int(sys.argv[3])):
        s=time.perf_counter(); urllib.request.urlopen(q).read(); lat.append(time.perf_counter()-s)
    c1=cpu(p.pid); t1=time.time()
    p.kill(); p.wait()
    shutil.rmtree(d, ignore_errors=True)
    return (c1-c0)/len(lat)*1e6, statistics.median(lat)*1e3
for b,port in [(sys.argv[1],19100),(sys.argv[2],19200),(sys.argv[1],19300),(sys.argv[2],19400)]:
    cpu_us, med = run(b,port)
    print(f"{b}: server CPU {cpu_us:.0f} us/query, median latency {med:.2f} ms")
