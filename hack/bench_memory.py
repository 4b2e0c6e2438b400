#!/usr/bin/env python3
"""Shim memory: summed PSS of the shim processes with N running containers, per runtime.

For each runtime, starts N `sleep` containers (`ctr run -d`) on one private containerd, sums the
Pss of every process of that containerd's shims (/proc/PID/smaps_rollup; for pyshim the fork
server too: it is part of what pyshim costs), then removes the containers. Optionally all N
containers carry the same io.kubernetes.cri.sandbox-id annotation (--grouped), so they share
one shim as a CRI pod's containers do; or pyshim runs under its per-namespace grouping policy
(--namespace-policy: one shim for all; the runc shim has no such policy and runs ungrouped).
Prints the totals, per-container figures and the ratio.

BENCH_MEMORY_DETAIL=1 prints each shim process's Rss/Pss/private figures to stderr.

Usage: hack/bench_memory.py [--containers 20] [--grouped | --namespace-policy] [--runtimes runc,pyshim]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from integration.containerd import (BUSYBOX_IMAGE as IMAGE, PYSHIM_BINARY,  # noqa: E402
                                    PYSHIM_RUNTIME, RUNC_RUNTIME, PrivateContainerd,
                                    build_busybox_image)

RUNTIMES = {"runc": RUNC_RUNTIME, "pyshim": PYSHIM_RUNTIME}


def pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rollup_summary(pid: int) -> str:
    """Rss, Pss and how much of it is private (dirty = heap), in MB, for one process."""
    fields = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3 and parts[2] == "kB":
                    fields[parts[0].rstrip(":")] = int(parts[1])
    except OSError:
        return "gone"
    return " ".join(f"{k}={fields.get(k, 0) / 1024:.1f}" for k in
                    ("Rss", "Pss", "Pss_Anon", "Pss_File", "Private_Dirty", "Shared_Dirty"))


def measure(c: PrivateContainerd, runtime: str, n: int, opts: list[str]) -> tuple[int, int, bool]:
    """(summed PSS in KiB, number of shim processes, fork server counted) with n containers of
    runtime running."""
    ids = [f"mem-{os.getpid()}-{runtime.split('.')[2]}-{i}" for i in range(n)]
    try:
        for cid in ids:
            r = c.ctr("run", "-d", "--runtime", runtime, *opts, IMAGE, cid, "sleep", "100000",
                      timeout=60)
            if r.returncode:
                raise RuntimeError(f"ctr run {cid}: {r.stderr.strip()}")
        time.sleep(1.0)  # let lazily-touched pages settle
        shims = c.shim_processes()
        forkserver = c.forkserver_pid()
        pids = shims + ([forkserver] if forkserver else [])
        if os.environ.get("BENCH_MEMORY_DETAIL"):
            for p in pids:
                print(f"  {runtime} pid {p}{' (fork server)' if p == forkserver else ''}: "
                      + rollup_summary(p), file=sys.stderr)
        return sum(pss_kib(p) for p in pids), len(shims), bool(forkserver)
    finally:
        c.reap(ids)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--containers", type=int, default=20)
    ap.add_argument("--grouped", action="store_true", help="one sandbox-id for all: one shim")
    ap.add_argument("--namespace-policy", action="store_true",
                    help='pyshim with grouping = "namespace" (runc: ungrouped)')
    ap.add_argument("--runtimes", default="runc,pyshim")
    args = ap.parse_args(argv)
    shim = os.path.join(REPO, ".venv", "bin", PYSHIM_BINARY)
    results = {}
    with tempfile.TemporaryDirectory(prefix="pyshim-bench-") as tmp:
        tar = os.path.join(tmp, "busybox.tar")
        build_busybox_image(tar)
        policy = os.path.join(tmp, "pyshim.toml")
        with open(policy, "w") as f:
            f.write('grouping = "namespace"\n')
        with PrivateContainerd(shims={PYSHIM_BINARY: shim}, log_level="info") as c:
            c.import_image(tar)
            for name in args.runtimes.split(","):
                opts = []
                if args.grouped:
                    opts = ["--annotation", "io.kubernetes.cri.sandbox-id=bench-pod"]
                elif args.namespace_policy and name == "pyshim":
                    opts = ["--runtime-config-path", policy]
                results[name] = measure(c, RUNTIMES[name], args.containers, opts)
    mode = ("one sandbox-id (grouped)" if args.grouped else
            "pyshim grouping=namespace, runc ungrouped" if args.namespace_policy else "ungrouped")
    print(f"summed PSS of shim processes, {args.containers} running containers, {mode}")
    for name, (kib, nshims, forkserver) in results.items():
        print(f"  {name:7s} {kib / 1024:8.1f} MB in {nshims} shim(s)"
              f"{' + fork server' if forkserver else ''}   "
              f"{kib / 1024 / args.containers:6.2f} MB per container")
    if "runc" in results and "pyshim" in results and results["runc"][0]:
        print(f"  ratio pyshim/runc: {results['pyshim'][0] / results['runc'][0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
