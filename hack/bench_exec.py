#!/usr/bin/env python3
"""Exec latency: pyshim vs the runc shim.

Starts one `sleep` container per runtime (`ctr run -d`) on one private containerd, then times,
in interleaved rounds (each round runs every variant once, the order alternating between
rounds so drift hits them all alike):
  ctr  the wall time of `ctr task exec --exec-id X ID true` (a process of its own: ctr's start-up,
       its FIFOs and attach are included, as a user sees it);
  api  Tasks Exec + Start + Wait + DeleteProcess of `true` through containerd's gRPC API
       (integration/grpc_client.py), no stdio: containerd and the shim's exec path alone.
Prints each variant's median, min and p90, and the ratios pyshim/runc.

Usage: hack/bench_exec.py [--rounds 30] [--runtimes runc,pyshim] [--modes ctr,api] [--seccomp]
[--json FILE] (as root; --seccomp: the containers have containerd's default seccomp profile,
which every exec into them applies too, as CRI's RuntimeDefault)
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from integration.containerd import (BUSYBOX_IMAGE as IMAGE, PYSHIM_BINARY,  # noqa: E402
                                    PYSHIM_RUNTIME, RUNC_RUNTIME, PrivateContainerd,
                                    build_busybox_image)

RUNTIMES = {"runc": RUNC_RUNTIME, "pyshim": PYSHIM_RUNTIME}
MODES = ("ctr", "api")
TIMEOUT = 60


def _raise(signum, frame):
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signum}")


class Bench:
    def __init__(self, c: PrivateContainerd, api):
        self.c = c
        self.api = api
        self.n = 0
        self.spec: dict[str, dict] = {}  # container id -> the exec's process spec (api mode)

    def exec_id(self) -> str:
        self.n += 1
        return f"bench-{self.n}"

    def ctr(self, cid: str) -> float:
        eid = self.exec_id()
        t0 = time.perf_counter()
        r = self.c.ctr("task", "exec", "--exec-id", eid, cid, "true", timeout=TIMEOUT)
        dt = time.perf_counter() - t0
        if r.returncode != 0:
            raise RuntimeError(f"ctr task exec: exit {r.returncode}: {r.stderr.strip()[-300:]}")
        return dt

    def grpc(self, cid: str) -> float:
        if cid not in self.spec:  # what ctr would send; fetched once, outside the timing
            self.spec[cid] = self.api.exec_spec(cid, ["true"])
        eid = self.exec_id()
        t0 = time.perf_counter()
        self.api.exec(cid, eid, self.spec[cid])
        try:
            self.api.start(cid, eid)
            status = self.api.wait(cid, eid, timeout=TIMEOUT).exit_status
        finally:
            self.api.delete_process(cid, eid)
        dt = time.perf_counter() - t0
        if status != 0:
            raise RuntimeError(f"api exec: exit status {status}")
        return dt

    def once(self, mode: str, cid: str) -> float:
        return self.ctr(cid) if mode == "ctr" else self.grpc(cid)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--runtimes", default="runc,pyshim")
    ap.add_argument("--modes", default="ctr,api", help="ctr (ctr task exec), api (gRPC)")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--seccomp", action="store_true",
                    help="run the containers with containerd's default seccomp profile")
    args = ap.parse_args(argv)
    runtimes = [r for r in args.runtimes.split(",") if r]
    modes = [m for m in args.modes.split(",") if m]
    for r in runtimes:
        if r not in RUNTIMES:
            ap.error(f"unknown runtime {r!r}")
    for m in modes:
        if m not in MODES:
            ap.error(f"unknown mode {m!r}")
    if os.geteuid() != 0:
        print("bench_exec: must run as root", file=sys.stderr)
        return 2
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _raise)
    if "api" in modes:
        from integration.grpc_client import Containerd
    variants = [(m, r) for m in modes for r in runtimes]
    times: dict[tuple[str, str], list[float]] = {v: [] for v in variants}
    errors: dict[tuple[str, str], str] = {}
    shim = os.path.join(REPO, ".venv", "bin", PYSHIM_BINARY)
    with tempfile.TemporaryDirectory(prefix="pyshim-bench-") as tmp:
        tar = os.path.join(tmp, "busybox.tar")
        build_busybox_image(tar)
        with PrivateContainerd(shims={PYSHIM_BINARY: shim} if os.path.exists(shim) else None,
                               log_level="info") as c:
            c.import_image(tar)
            api = Containerd(c.address, c.namespace, timeout=TIMEOUT) if "api" in modes else None
            ids = {}
            try:
                for r in runtimes:
                    cid = f"bench-exec-{r}-{os.getpid()}"
                    res = c.ctr("run", "-d", *(["--seccomp"] if args.seccomp else []),
                                "--runtime", RUNTIMES[r], IMAGE, cid,
                                "sleep", "100000", timeout=TIMEOUT)
                    if res.returncode != 0:
                        for m in modes:
                            errors[(m, r)] = f"ctr run -d: {res.stderr.strip()[-300:]}"
                        continue
                    c.wait_task_status(cid, "RUNNING")
                    ids[r] = cid
                bench = Bench(c, api)
                live = [v for v in variants if v not in errors]
                for v in list(live):  # warm-up (page cache, fork server, first exec), health check
                    try:
                        bench.once(v[0], ids[v[1]])
                    except Exception as e:  # noqa: BLE001 - reported, the others go on
                        errors[v] = f"warm-up: {e}"
                        live.remove(v)
                for i in range(args.rounds):
                    for v in (live if i % 2 == 0 else live[::-1]):
                        if v in errors:
                            continue
                        try:
                            times[v].append(bench.once(v[0], ids[v[1]]))
                        except Exception as e:  # noqa: BLE001
                            errors[v] = f"round {i + 1}: {e}"
            finally:
                if api is not None:
                    api.close()
                c.reap(list(ids.values()))

    print(f"exec of `true` into a running sleep container: {args.rounds} interleaved rounds")
    result: dict = {"rounds": args.rounds, "variants": {}}
    med = {}
    for v in variants:
        name = f"{v[0]} {v[1]}"
        ts = times[v]
        if v in errors:
            print(f"  {name:12s} ERROR: {errors[v]}" + (f" (after {len(ts)} good runs)" if ts else ""))
            result["variants"][name] = {"error": errors[v], "runs": len(ts)}
            continue
        med[v] = statistics.median(ts)
        p90 = statistics.quantiles(ts, n=10)[8] if len(ts) >= 2 else ts[0]
        print(f"  {name:12s} median {med[v] * 1000:7.1f} ms   min {min(ts) * 1000:7.1f}   "
              f"p90 {p90 * 1000:7.1f}   n={len(ts)}")
        result["variants"][name] = {"median_s": med[v], "min_s": min(ts), "p90_s": p90,
                                    "runs": len(ts)}
    for m in modes:
        a, b = (m, "pyshim"), (m, "runc")
        if a in med and b in med:
            print(f"  ratio pyshim/runc ({m}): {med[a] / med[b]:.2f}")
            result[f"ratio_{m}_pyshim_runc"] = med[a] / med[b]
    labels = {"ctr": "ctr task exec", "api": "gRPC Exec+Start+Wait+DeleteProcess"}
    print("  (" + "; ".join(f"{m}: {labels[m]}" for m in modes) + ")")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0 if med else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as e:
        print(f"bench_exec: interrupted ({e}); everything started was stopped", file=sys.stderr)
        sys.exit(130)
