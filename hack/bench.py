#!/usr/bin/env python3
"""Container start-to-exit latency: pyshim vs the runc shim (and the runc shim driving crun).

Times the wall clock of `ctr run --rm [--runtime R] [--runc-binary B] IMAGE ID true` on one
private containerd, interleaving the variants (each round runs every variant once, in an
order that alternates between rounds) so drift hits them all alike, and prints each
variant's median and the ratio pyshim/runc. A variant that fails its warm-up run is
reported with its error and left out; the others are still measured.

Usage: hack/bench.py [--rounds 30] [--variants runc,crun,pyshim] [--seccomp] [--json FILE]
(as root; --seccomp runs each container with containerd's default seccomp profile)
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from integration.containerd import (BUSYBOX_IMAGE as IMAGE, PYSHIM_BINARY,  # noqa: E402
                                    PYSHIM_RUNTIME, RUNC_RUNTIME, PrivateContainerd,
                                    build_busybox_image)

VARIANTS = {
    "runc": ["--runtime", RUNC_RUNTIME],
    "crun": ["--runtime", RUNC_RUNTIME, "--runc-binary", "crun"],
    "pyshim": ["--runtime", PYSHIM_RUNTIME],
}
TIMEOUT = 60


def _raise(signum, frame):
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signum}")


class Runner:
    def __init__(self, c: PrivateContainerd, extra: list[str] = ()):
        self.c = c
        self.n = 0
        self.extra = list(extra)  # more `ctr run` flags, e.g. --seccomp

    def once(self, variant: str) -> tuple[float, subprocess.CompletedProcess]:
        self.n += 1
        cid = f"bench-{variant}-{os.getpid()}-{self.n}"
        t0 = time.perf_counter()
        r = self.c.ctr("run", "--rm", *self.extra, *VARIANTS[variant], IMAGE, cid, "true",
                       timeout=TIMEOUT)
        dt = time.perf_counter() - t0
        if r.returncode != 0:
            self.c.reap([cid])
        return dt, r


def _first_error(r: subprocess.CompletedProcess) -> str:
    lines = [l for l in (r.stderr or "").splitlines() if l.strip()]
    return (lines[-1] if lines else f"exit {r.returncode}")[:300]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--variants", default="runc,crun,pyshim",
                    help="comma-separated, from: " + ",".join(VARIANTS))
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--seccomp", action="store_true",
                    help="ctr run --seccomp: containerd's default seccomp profile, as CRI's "
                         "RuntimeDefault")
    args = ap.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        if v not in VARIANTS:
            ap.error(f"unknown variant {v!r}")
    if os.geteuid() != 0:
        print("bench: must run as root", file=sys.stderr)
        return 2
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _raise)

    shim = os.path.join(REPO, ".venv", "bin", PYSHIM_BINARY)
    errors: dict[str, str] = {}
    times: dict[str, list[float]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="pyshim-bench-") as tmp:
        tar = os.path.join(tmp, "busybox.tar")
        build_busybox_image(tar)
        with PrivateContainerd(shims={PYSHIM_BINARY: shim} if os.path.exists(shim) else None,
                               log_level="info") as c:
            c.import_image(tar)
            run = Runner(c, ["--seccomp"] if args.seccomp else [])
            live = []
            for v in variants:  # warm-up (page cache, first shim start), and a health check
                try:
                    _, r = run.once(v)
                except subprocess.TimeoutExpired:
                    errors[v] = f"warm-up run timed out after {TIMEOUT}s"
                    continue
                if r.returncode != 0:
                    errors[v] = f"warm-up run failed: {_first_error(r)}"
                else:
                    live.append(v)
            for i in range(args.rounds):
                order = live if i % 2 == 0 else live[::-1]
                for v in order:
                    if v in errors:
                        continue
                    try:
                        dt, r = run.once(v)
                    except subprocess.TimeoutExpired:
                        errors[v] = f"round {i + 1}: timed out after {TIMEOUT}s"
                        continue
                    if r.returncode != 0:
                        errors[v] = f"round {i + 1}: {_first_error(r)}"
                        continue
                    times[v].append(dt)

    flags = "--seccomp " if args.seccomp else ""
    print(f"ctr run --rm {flags}{IMAGE} ID true: {args.rounds} interleaved rounds, wall time per "
          f"run")
    result = {"rounds": args.rounds, "variants": {}}
    med = {}
    for v in variants:
        ts = times[v]
        if v in errors:
            print(f"  {v:7s} ERROR: {errors[v]}" + (f" (after {len(ts)} good runs)" if ts else ""))
            result["variants"][v] = {"error": errors[v], "runs": len(ts)}
            continue
        med[v] = statistics.median(ts)
        q = statistics.quantiles(ts, n=10) if len(ts) >= 2 else [ts[0]] * 9
        print(f"  {v:7s} median {med[v] * 1000:8.1f} ms   min {min(ts) * 1000:8.1f}   "
              f"p90 {q[8] * 1000:8.1f}   n={len(ts)}")
        result["variants"][v] = {"median_s": med[v], "min_s": min(ts), "p90_s": q[8], "runs": len(ts)}
    for a, b in (("pyshim", "runc"), ("pyshim", "crun"), ("crun", "runc")):
        if a in med and b in med:
            print(f"  ratio {a}/{b}: {med[a] / med[b]:.2f}")
            result[f"ratio_{a}_{b}"] = med[a] / med[b]
    if "pyshim" in variants and "pyshim" not in med:
        print("  ratio pyshim/runc: n/a (pyshim did not run)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0 if med else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as e:
        print(f"bench: interrupted ({e}); everything started was stopped", file=sys.stderr)
        sys.exit(130)
