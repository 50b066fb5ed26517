"""Fleet benchmark: 1, 4 and 16 simulated edge clients against a loopback Triton server that serves the shipped
bundle's last stage (NVIDIA PyTriton on CPU, ``scripts/fleet_servers.py``).

Each client is its own process (talking to this one over pipes) with its own cascade (stages 1 and 2 local, stage 3 remote through the
``triton`` backend, gRPC), classifying FashionMNIST test images in frames of ``--crops`` crops as fast as it can
for ``--seconds``; all clients start together at a barrier. For each client count it runs the remote cascade at
two deadlines and the all-local cascade (every stage on the edge), and prints:

- answers/s: answers of all clients per second of wall time;
- remote p50/p95: latency of the remote requests that answered (ms, as the edge measured them);
- fallback: share of the inputs sent to the remote stage that got the last local stage's answer instead;
- edge CPU/answer: process CPU time of the clients per answer (ms), remote vs all-local, and their ratio.

Everything (server, clients) shares this machine's cores, so the absolute figures say more about the machine than
about a deployment; the ratios within one run are the point. ``--json`` prints the rows as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))


def _images(n: int) -> np.ndarray:
    try:
        from edgeconf.datasets import load_fashion_mnist

        x, _ = load_fashion_mnist("test")
    except Exception:  # the Debian data set is absent: the sample shipped in the package
        from edgeconf import data_path

        with np.load(data_path("fashion_sample.npz")) as z:
            x = z[sorted(z.files)[0]]
    return np.asarray(x[:n])


def _client(bundle: str, seconds: float, crops: int, offset: int) -> None:
    """One simulated edge (its own process): load, warm up, say ``ready``, wait for ``go`` on stdin, classify
    frames of ``crops`` images until ``seconds`` have passed, print the result as one JSON line."""
    from edgeconf.bundle import load_bundle

    images = _images(10000)
    casc = load_bundle(bundle, memo=False, threads=1)
    frames = [list(images[(offset + i * crops + j) % len(images)] for j in range(crops)) for i in range(64)]
    casc.classify_batch(frames[0])  # warm up (first call allocates)
    casc.reset_counters()
    remote = [s.runner for s in casc.stages if getattr(s.runner, "remote", False)]
    for r in remote:
        r.stats.latency_ms.clear()
    print("ready", flush=True)
    sys.stdin.readline()  # "go": every client starts together
    answers = 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    i = 0
    while time.perf_counter() - t0 < seconds:
        answers += len(casc.classify_batch(frames[i % len(frames)]))
        i += 1
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    c = casc.counters
    print(json.dumps({"answers": answers, "wall": wall, "cpu": cpu, "remote_inputs": c.remote_inputs,
             "remote_failures": c.remote_failures, "reasons": dict(c.remote_reasons),
             "latency_ms": [float(v) for r in remote for v in r.stats.latency_ms]}), flush=True)
    casc.close()


def run_clients(bundle: str, clients: int, seconds: float, crops: int) -> Dict[str, Any]:
    # plain child processes talking over pipes (no shared-memory semaphores to share with anyone)
    procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "--client", bundle, "--seconds", str(seconds),
                               "--crops", str(crops), "--offset", str(997 * k)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for k in range(clients)]
    rows = []
    try:
        for p in procs:
            line = p.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError("a bench client failed to start (said %r)" % line)
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in procs:
            rows.append(json.loads(p.stdout.readline()))
    finally:
        for p in procs:
            p.stdin.close()
            if p.wait(60) is None:
                p.kill()
            p.stdout.close()
    answers = sum(r["answers"] for r in rows)
    wall = max(r["wall"] for r in rows)
    lat = np.asarray([v for r in rows for v in r["latency_ms"]])
    sent = sum(r["remote_inputs"] for r in rows)
    failed = sum(r["remote_failures"] for r in rows)
    reasons: Dict[str, int] = {}
    for r in rows:
        for k, v in r["reasons"].items():
            reasons[k] = reasons.get(k, 0) + v
    return {"clients": clients, "answers": answers, "answers_per_s": answers / wall if wall > 0 else None,
            "remote_requests_answered": int(lat.size),
            "remote_p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
            "remote_p95_ms": float(np.percentile(lat, 95)) if lat.size else None,
            "remote_inputs": sent, "fallbacks": failed, "fallback_rate": failed / sent if sent else None,
            "fallback_reasons": reasons, "cpu_ms_per_answer": 1e3 * sum(r["cpu"] for r in rows) / max(1, answers)}


def _fmt(v: Optional[float], spec: str) -> str:
    return "—" if v is None else spec % v


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", default="1,4,16", help="client counts (comma-separated)")
    ap.add_argument("--deadlines", default="20,200", help="two deadlines of the remote stage, ms")
    ap.add_argument("--seconds", type=float, default=5.0, help="run time of each configuration")
    ap.add_argument("--crops", type=int, default=4, help="crops per frame (one classify_batch call)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--client", help=argparse.SUPPRESS)  # run as one simulated edge client on this bundle
    ap.add_argument("--offset", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.client:
        _client(args.client, args.seconds, args.crops, args.offset)
        return 0

    from edgeconf import data_path
    from edgeconf.export.triton_repo import build_repo
    from fleet_servers import TritonProcess

    why = TritonProcess.why_unavailable()
    if why:
        print("bench_fleet: cannot start the Triton server: %s" % why, file=sys.stderr)
        return 2
    bundle = data_path("zoo", "bundle")
    work = tempfile.mkdtemp(prefix="edgeconf-bench-fleet-")
    server = None
    try:
        repo = os.path.join(work, "repo")
        build_repo(bundle, repo, kind="cpu")  # the last stage, served
        server = TritonProcess(repo, work)
        edges = {}
        for d in (float(v) for v in args.deadlines.split(",")):
            edges[d] = os.path.join(work, "edge-%g" % d)
            build_repo(bundle, os.path.join(work, "unused-%g" % d), edge=edges[d], url=server.grpc_url, deadline_ms=d)
        server.start()
        print("bench_fleet: Triton (PyTriton, CPU) on %s serving stage %s; %d cores on this machine"
              % (server.grpc_url, os.listdir(repo)[0], os.cpu_count() or 0), file=sys.stderr)
        rows = []
        for n in (int(v) for v in args.clients.split(",")):
            local = run_clients(bundle, n, args.seconds, args.crops)
            for d, edge in edges.items():
                r = run_clients(edge, n, args.seconds, args.crops)
                r.update(deadline_ms=d, local_cpu_ms_per_answer=local["cpu_ms_per_answer"],
                         local_answers_per_s=local["answers_per_s"],
                         cpu_ratio=r["cpu_ms_per_answer"] / local["cpu_ms_per_answer"])
                rows.append(r)
                print("  %2d clients, deadline %g ms: %.0f answers/s, fallback %s" % (
                    n, d, r["answers_per_s"], _fmt(r["fallback_rate"], "%.3f")), file=sys.stderr)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    head = ("clients", "deadline ms", "answers/s", "remote p50 ms", "remote p95 ms", "remote answered", "fallback rate",
            "edge CPU ms/answer", "all-local CPU ms/answer", "CPU ratio", "all-local answers/s")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---:" for _ in head) + "|")
    for r in rows:
        print("| %d | %g | %.0f | %s | %s | %d | %s | %.3f | %.3f | %.2f | %.0f |" % (
            r["clients"], r["deadline_ms"], r["answers_per_s"], _fmt(r["remote_p50_ms"], "%.1f"),
            _fmt(r["remote_p95_ms"], "%.1f"), r["remote_requests_answered"],
            _fmt(r["fallback_rate"], "%.3f") + (" (%s)" % ", ".join("%s %d" % kv for kv in sorted(r["fallback_reasons"].items()))
                                                if r["fallback_reasons"] else ""),
            r["cpu_ms_per_answer"], r["local_cpu_ms_per_answer"], r["cpu_ratio"], r["local_answers_per_s"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
