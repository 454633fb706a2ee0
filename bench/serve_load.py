"""Load test of ``hysafe serve`` on loopback: N concurrent clients for a fixed time, then stop.

    python bench/serve_load.py --report hysafe-report --clients 1 8 32 --seconds 20 --out
    bench/results/serve_cpu.json

Serves a demo report's three indexes (``hysafe serve --demo``) on a free 127.0.0.1 port; for each
``--clients`` count in turn (one server for all), runs that many threads that alternate
``POST /search`` (text, k=5, all models, HySAC with traversal) and ``POST /classify`` (4 texts) for
``--seconds``, and reports throughput, p50/p95/p99 latency per endpoint, errors, and the server's
resident memory before and after each level. ``--python`` runs the server with another
interpreter (e.g. another checkout's) to compare code versions in one run.
Bounded in count and time; traffic goes to loopback only.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

QUERIES = [
    "a small red circle at the top left on a blue background, covered in blood",
    "a large green square",
    "a yellow triangle, in a pool of blood",
    "a blue cross at the bottom right",
]


#: the models every request asks (a demo report of older code serves these three)
MODELS = ["CLIP", "Safe-CLIP", "HySAC"]


def rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def client(base: str, stop: float, out: dict, lock: threading.Lock, seed: int) -> None:
    with httpx.Client(base_url=base, timeout=60) as http:
        i = seed
        while time.time() < stop:
            endpoint = "/search" if i % 2 == 0 else "/classify"
            body = {"text": QUERIES[i % 4], "k": 5} if endpoint == "/search" else {"texts": QUERIES}
            body["models"] = MODELS  # the same work for every code version
            t = time.perf_counter()
            try:
                ok = http.post(endpoint, json=body).status_code == 200
            except httpx.HTTPError:
                ok = False
            with lock:
                out[endpoint]["latency"].append(time.perf_counter() - t)
                out[endpoint]["errors"] += 0 if ok else 1
            i += 1


def run_level(base: str, pid: int, clients: int, seconds: float) -> dict:
    """``clients`` threads for ``seconds``: requests/s, latency percentiles, errors, server RSS."""
    out = {e: {"latency": [], "errors": 0} for e in ("/search", "/classify")}
    lock, rss = threading.Lock(), {"start": rss_mib(pid)}
    stop = time.time() + seconds
    threads = [threading.Thread(target=client, args=(base, stop, out, lock, i)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rss["end"] = rss_mib(pid)
    level = {"clients": clients, "server_rss_mib": rss, "endpoints": {}}
    for endpoint, d in out.items():
        lat = sorted(d["latency"])
        level["endpoints"][endpoint] = {
            "requests": len(lat),
            "per_s": len(lat) / seconds,
            "errors": d["errors"],
            **{f"p{q}_ms": 1000 * lat[int(q / 100 * (len(lat) - 1))] for q in (50, 95, 99)},
        }
    print(json.dumps(level), flush=True)
    return level


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--report", default="hysafe-report")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--out", default="bench/results/serve_cpu.json")
    p.add_argument("--python", default=sys.executable, help="the server's interpreter")
    p.add_argument("--label", default="", help="a name for this code version in the output")
    args = p.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [args.python, "-m", "hysafe.cli", "serve", "--demo", args.report, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if server.poll() is not None:
                raise RuntimeError(
                    f"the server exited with code {server.returncode}: hysafe serve --demo {args.report}"
                )
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        httpx.post(f"{base}/search", json={"text": QUERIES[0], "k": 5}, timeout=60)  # warm-up
        levels = [run_level(base, server.pid, clients, args.seconds) for clients in args.clients]
    finally:
        server.terminate()
        server.wait(timeout=30)
    result = {"machine": machine(), "label": args.label, "seconds": args.seconds, "levels": levels}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
