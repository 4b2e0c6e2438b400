#!/usr/bin/env python3
"""OCI runtime CLI latency: `pyshim-runc run` vs `runc run` vs `crun run` of a trivial bundle.

One static-busybox bundle running `true` (ctr's default spec from runtime/specgen.py, no
terminal); each variant has its own state root. Variants are interleaved (each round runs
every variant once, the order alternating between rounds) so drift hits them all alike; the
wall clock of the whole CLI process is timed. Prints each variant's median, min and p90 and its
ratio to runc (and to crun). A variant whose warm-up run fails is reported with its error and
left out; the others are still measured. Also times the bare start-up of each CLI
(`list` on an empty root and `--version`), which is what every create/start/state/kill/delete
of containerd's runc shim pays. Next to each median: the median number of page faults of the
command's whole process tree (the CLI and, for a run, the container's init and process: all
are reaped by it, so getrusage(RUSAGE_CHILDREN) counts them), at ~2 us each on this machine.

`run` is timed three times per round: right after the previous command (`run`: the previous
variant's `--version`), right after that run of the same runtime (`run again`: a loop of
runs), and after --idle seconds without any command (`run after idle`). Moving a process
into a cgroup through cgroup.procs waits one RCU grace period (5-30 ms here) unless another
such move happened within about a grace period before, so runc's three differ by most of
that wait; runs spaced out in time (a node starting a container now and then) see the last.
pyshim's processes move themselves through v1 "tasks" files, which takes no grace period.

Usage: hack/bench_runc_cli.py [--rounds 50] [--idle 0.25] [--variants pyshim,runc,crun]
       [--json FILE]
(as root; hack/bench-runc-cli.sh installs first; PYSHIM_RUNC=path overrides the binary;
PYSHIM_RUNC_BASE=path adds the variant "base", another pyshim-runc to A/B against)
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from runtime.specgen import default_config  # noqa: E402

TIMEOUT = 60


def binaries() -> dict[str, str | None]:
    py = os.environ.get("PYSHIM_RUNC") or os.path.join(REPO, ".venv/bin/pyshim-runc")
    return {"pyshim": py if os.path.exists(py) else shutil.which("pyshim-runc"),
            "runc": shutil.which("runc"), "crun": shutil.which("crun"),
            "base": os.environ.get("PYSHIM_RUNC_BASE")}


def make_bundle(d: str) -> str:
    bundle = os.path.join(d, "bundle")
    os.makedirs(os.path.join(bundle, "rootfs", "bin"))
    shutil.copy("/bin/busybox", os.path.join(bundle, "rootfs", "bin", "busybox"))
    os.link(os.path.join(bundle, "rootfs/bin/busybox"), os.path.join(bundle, "rootfs/bin/true"))
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(default_config(["true"], hostname="bench"), f)
    return bundle


class Variant:
    def __init__(self, name: str, binary: str, tmp: str, bundle: str):
        self.name, self.binary, self.bundle = name, binary, bundle
        self.root = os.path.join(tmp, f"state-{name}")
        self.n = 0
        self.times: dict[str, list[float]] = {"run": [], "run_again": [], "run_idle": [],
                                              "list": [], "version": []}
        self.faults: dict[str, list[int]] = {what: [] for what in self.times}
        self.last_faults = 0  # of the last timed command's process tree

    def _timed(self, argv: list[str]) -> tuple[float, subprocess.CompletedProcess]:
        f0 = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
        t0 = time.perf_counter()
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT)
        dt = time.perf_counter() - t0
        self.last_faults = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt - f0
        return dt, r

    def run_once(self) -> tuple[float, subprocess.CompletedProcess]:
        self.n += 1
        cid = f"bench-{os.getpid()}-{self.n}"
        dt, r = self._timed([self.binary, "--root", self.root, "run", "--bundle", self.bundle,
                             cid])
        if r.returncode != 0:
            subprocess.run([self.binary, "--root", self.root, "delete", "--force", cid],
                           capture_output=True, timeout=TIMEOUT)
        return dt, r

    def round(self, idle: float) -> None:
        for what in ("run", "run_again", "run_idle"):
            if what == "run_idle":
                time.sleep(idle)
            dt, r = self.run_once()
            if r.returncode != 0:
                raise RuntimeError(_err(self.name, r))
            self.times[what].append(dt)
            self.faults[what].append(self.last_faults)
        for what, argv in (("list", [self.binary, "--root", self.root + "-empty", "list"]),
                           ("version", [self.binary, "--version"])):
            dt, _ = self._timed(argv)
            self.times[what].append(dt)
            self.faults[what].append(self.last_faults)


def _err(name: str, r: subprocess.CompletedProcess) -> str:
    text = (r.stderr or r.stdout or b"").decode(errors="replace").strip()
    return f"{name}: exit {r.returncode}: {text[-800:]}"


def _ms(xs: list[float]) -> str:
    q = statistics.quantiles(xs, n=10)[-1] if len(xs) >= 2 else xs[0]
    return f"median {statistics.median(xs) * 1e3:7.2f} ms  min {min(xs) * 1e3:7.2f}  " \
           f"p90 {q * 1e3:7.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--idle", type=float, default=0.25,
                    help="seconds without any command before the second timed run")
    ap.add_argument("--variants", default="pyshim,runc,crun")
    ap.add_argument("--json", help="write the raw timings here")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_runc_cli.py: must run as root", file=sys.stderr)
        return 1
    found = binaries()
    tmp = tempfile.mkdtemp(prefix="bench-runc-cli-")
    try:
        bundle = make_bundle(tmp)
        variants, failed = [], {}
        for name in a.variants.split(","):
            if not found.get(name):
                failed[name] = f"{name}: binary not found"
                continue
            v = Variant(name, found[name], tmp, bundle)
            _, r = v.run_once()  # warm-up: page cache, pyc files
            if r.returncode != 0:
                failed[name] = _err(name, r)
                continue
            variants.append(v)
        for name, why in failed.items():
            print(f"{name}: left out, its warm-up run failed:\n    {why}")
        if not variants:
            return 1
        for i in range(a.rounds):
            order = variants if i % 2 == 0 else variants[::-1]
            for v in order:
                v.round(a.idle)
        print(f"\n{a.rounds} interleaved rounds, bundle: busybox `true`, default ctr spec")
        for what, label in (("run", "run (create+start+wait+delete), right after the previous "
                                    "command"),
                            ("run_again", "run right after a run of the same runtime"),
                            ("run_idle", f"run after {a.idle:g} s idle"),
                            ("list", "start-up: list on an empty root"),
                            ("version", "start-up: --version")):
            print(f"\n{label}:")
            med = {v.name: statistics.median(v.times[what]) for v in variants}
            for v in variants:
                ratios = "  ".join(f"{med[v.name] / med[o]:5.2f}x {o}" for o in ("runc", "crun")
                                   if o in med and o != v.name)
                print(f"  {v.name:7s} {_ms(v.times[what])}  faults "
                      f"{statistics.median(v.faults[what]):5.0f}   {ratios}")
        if a.json:
            with open(a.json, "w") as f:
                json.dump({v.name: {"times": v.times, "faults": v.faults} for v in variants}
                          | {"failed": failed}, f, indent=1)
        return 0
    finally:
        for name in ("pyshim", "runc", "crun", "base"):
            root = os.path.join(tmp, f"state-{name}")
            if found.get(name) and os.path.isdir(root):
                for cid in os.listdir(root):
                    subprocess.run([found[name], "--root", root, "delete", "--force", cid],
                                   capture_output=True, timeout=TIMEOUT)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
