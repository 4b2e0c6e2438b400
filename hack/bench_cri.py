#!/usr/bin/env python3
"""CRI benchmarks, pyshim vs runc, on one private containerd with the CRI plugin
(integration/containerd.py, cri=True), driven through its CRI gRPC API as kubelet would:

1. pod start: RunPodSandbox + CreateContainer + StartContainer of a busybox `sleep`, host
   network (no CNI), timed per handler; the handlers are interleaved (each round runs each once,
   the order alternating) after --warmup untimed rounds; each pod is removed (untimed) before
   the next. Prints median / mean / p90 per handler, the medians of the three calls, and the
   ratio of the medians.
2. memory: --pods pods of --containers app containers each (plus each pod's sandbox) per
   handler, all running; the summed PSS of that handler's shim processes (for pyshim the fork
   server too: part of what pyshim costs). Handlers: runc, pyshim (one shim per pod, the default)
   and pyshim-ns (a second CRI handler whose runtime options point at a pyshim config with
   grouping = "namespace": one shim for all pods; measured after stopping the fork server the
   per-pod handler left, since that policy uses none).

Usage: hack/bench_cri.py [--rounds 30] [--warmup 3] [--pods 10] [--containers 3]
                         [--skip-start] [--skip-memory] [--handlers runc,pyshim,pyshim-ns]
Root; hack/install.sh first.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from integration.containerd import (BUSYBOX_IMAGE, CRI_NAMESPACE, PYSHIM_BINARY,  # noqa: E402
                                    PYSHIM_RUNTIME, PrivateContainerd, build_busybox_image)
from integration.cri import CriClient  # noqa: E402
from integration.cri_pods import remove_cgroup_tree  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_memory import pss_kib  # noqa: E402  (one reader of smaps_rollup for both benches)

CGROUP_TOP = "pyshim-cri-bench"
SLEEP = ["sleep", "100000"]


class Bench:
    def __init__(self, c: PrivateContainerd, cri: CriClient, logdir: str):
        self.c, self.cri, self.logdir = c, cri, logdir

    def pod_config(self, name: str):
        uid = uuid.uuid4().hex
        return self.cri.pod_config(name, uid=uid, log_directory=self.logdir, host_network=True,
                                   cgroup_parent=f"/{CGROUP_TOP}/pod{uid}")

    def container_config(self, name: str, pod_config):
        cfg = self.cri.container_config(name, BUSYBOX_IMAGE, SLEEP, log_path=f"{name}-{uuid.uuid4().hex[:8]}.log")
        cfg.linux.security_context.namespace_options.CopyFrom(
            pod_config.linux.security_context.namespace_options)
        return cfg

    def start_pod(self, handler: str, name: str, containers: int = 1
                  ) -> tuple[str, list[float]]:
        """RunPodSandbox + (CreateContainer + StartContainer) x containers; returns the pod
        id and the durations [run, create, start] (of the first container)."""
        pc = self.pod_config(name)
        t0 = time.perf_counter()
        pod = self.cri.run_pod(pc, handler)
        t1 = time.perf_counter()
        times = [t1 - t0]
        for i in range(containers):
            t1 = time.perf_counter()
            cid = self.cri.create_container(pod, self.container_config(f"c{i}", pc), pc)
            t2 = time.perf_counter()
            self.cri.start_container(cid)
            t3 = time.perf_counter()
            if i == 0:
                times += [t2 - t1, t3 - t2]
        return pod, times

    def remove_pod(self, pod: str) -> None:
        self.cri.stop_pod(pod, timeout=60)
        self.cri.remove_pod(pod, timeout=60)

    def wait_no_shims(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while self.c.shim_processes() and time.monotonic() < deadline:
            time.sleep(0.05)


def bench_start(b: Bench, handlers: list[str], rounds: int, warmup: int) -> dict:
    results: dict[str, list[list[float]]] = {h: [] for h in handlers}
    for r in range(warmup + rounds):
        order = handlers if r % 2 == 0 else handlers[::-1]
        for h in order:
            pod, times = b.start_pod(h, f"bench-{h}-{r}")
            b.remove_pod(pod)
            b.wait_no_shims()
            if r >= warmup:
                results[h].append(times)
    return results


def stop_forkserver(c) -> None:
    pid = c.forkserver_pid()
    if not pid:
        return
    os.kill(pid, signal.SIGTERM)  # it exits through its cleanup
    deadline = time.monotonic() + 5
    while c.forkserver_pid() and time.monotonic() < deadline:
        time.sleep(0.05)


def bench_memory(b: Bench, handler: str, pods: int, containers: int) -> tuple[int, int, int]:
    """(summed PSS in KiB, number of shims, the fork server's share of that sum)"""
    ids = []
    if handler == "pyshim-ns":
        # The namespace policy uses no fork server; one left by the per-pod handler's run on
        # this same containerd is not part of its cost: stop it (ours, by pid) first.
        stop_forkserver(b.c)
    try:
        for p in range(pods):
            pod, _ = b.start_pod(handler, f"mem-{handler}-{p}", containers)
            ids.append(pod)
        time.sleep(1.0)  # let lazily-touched pages settle
        shims = b.c.shim_processes()
        fs = b.c.forkserver_pid() if handler.startswith("pyshim") else None
        fs_kib = pss_kib(fs) if fs else 0
        return sum(pss_kib(p) for p in shims) + fs_kib, len(shims), fs_kib
    finally:
        for pod in ids:
            b.remove_pod(pod)
        b.wait_no_shims()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--pods", type=int, default=10)
    ap.add_argument("--containers", type=int, default=3)
    ap.add_argument("--handlers", default="runc,pyshim,pyshim-ns",
                    help="for the memory part; pod start times runc and pyshim")
    ap.add_argument("--skip-start", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_cri.py: run as root", file=sys.stderr)
        return 1
    shim = os.path.join(REPO, ".venv", "bin", PYSHIM_BINARY)
    with tempfile.TemporaryDirectory(prefix="pyshim-bench-cri-") as tmp:
        tar = os.path.join(tmp, "busybox.tar")
        build_busybox_image(tar)
        ns_config = os.path.join(tmp, "pyshim-ns.toml")
        with open(ns_config, "w") as f:
            f.write('grouping = "namespace"\n')
        extra = {"pyshim-ns": {"runtime_type": PYSHIM_RUNTIME, "options": {"ConfigPath": ns_config}}}
        logdir = os.path.join(tmp, "logs")
        os.makedirs(logdir)
        with PrivateContainerd(cri=True, shims={PYSHIM_BINARY: shim}, namespace=CRI_NAMESPACE,
                               log_level="warn", cri_runtimes=extra) as c:
            c.import_image(tar, namespace=CRI_NAMESPACE)
            with CriClient(c.address, timeout=60) as cri:
                b = Bench(c, cri, logdir)
                try:
                    if not args.skip_start:
                        report_start(bench_start(b, ["runc", "pyshim"], args.rounds, args.warmup),
                                     args.rounds)
                    if not args.skip_memory:
                        mem = {h: bench_memory(b, h, args.pods, args.containers)
                               for h in args.handlers.split(",")}
                        report_memory(mem, args.pods, args.containers)
                finally:
                    cri.remove_all()
        remove_cgroup_tree(CGROUP_TOP)
    return 0


def report_start(results: dict, rounds: int) -> None:
    print(f"pod start (RunPodSandbox + CreateContainer + StartContainer, host network), "
          f"{rounds} interleaved rounds, ms")
    med = {}
    for h, runs in results.items():
        total = sorted(sum(t) * 1000 for t in runs)
        med[h] = statistics.median(total)
        steps = [statistics.median(t[i] for t in runs) * 1000 for i in range(3)]
        p90 = total[min(len(total) - 1, int(round(0.9 * (len(total) - 1))))]
        print(f"  {h:7s} median {med[h]:6.1f}  mean {statistics.mean(total):6.1f}  p90 {p90:6.1f}"
              f"   (run {steps[0]:.1f}, create {steps[1]:.1f}, start {steps[2]:.1f})")
    if med.get("runc"):
        print(f"  ratio pyshim/runc (medians): {med['pyshim'] / med['runc']:.2f}")


def report_memory(mem: dict, pods: int, containers: int) -> None:
    print(f"summed PSS of shim processes, {pods} pods x {containers} containers (+ sandbox), "
          "host network")
    for h, (kib, nshims, fs) in mem.items():
        extra = f" + fork server ({fs / 1024:.1f} MB)" if fs else ""
        print(f"  {h:9s} {kib / 1024:7.1f} MB in {nshims} shim(s){extra}"
              f"   {kib / 1024 / pods:5.2f} MB per pod")
    runc = mem.get("runc", (0,))[0]
    if runc:
        for h in mem:
            if h != "runc":
                print(f"  ratio {h}/runc: {mem[h][0] / runc:.2f}")


if __name__ == "__main__":
    sys.exit(main())
