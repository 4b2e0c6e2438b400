#!/usr/bin/env python3
"""stdout throughput: SIZE bytes through a container's stdout to `ctr run`, pyshim vs the runc shim.

Each run is `ctr run --rm IMAGE ID head -c SIZE /dev/zero`, ctr's stdout read here and checksummed
(sha256, compared with the expected digest: a lost or duplicated byte fails the run). Variants
are interleaved on one private containerd; prints the median wall time, MB/s and the ratio of
throughputs pyshim/runc (> 1 means pyshim is faster).

Usage: hack/bench_io.py [--rounds 3] [--size-mib 1024]   (as root)
"""
from __future__ import annotations

import argparse
import hashlib
import os
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

RUNTIMES = {"runc": RUNC_RUNTIME, "pyshim": PYSHIM_RUNTIME}
CHUNK = 1 << 20


def zeros_digest(size: int) -> str:
    h, block = hashlib.sha256(), bytes(CHUNK)
    for _ in range(size // CHUNK):
        h.update(block)
    h.update(bytes(size % CHUNK))
    return h.hexdigest()


def one_run(c: PrivateContainerd, runtime: str, cid: str, size: int) -> tuple[float, str, int]:
    cmd = [c.ctr_binary, "--address", c.address, "--namespace", c.namespace, "run", "--rm",
           "--runtime", runtime, IMAGE, cid, "head", "-c", str(size), "/dev/zero"]
    h, n = hashlib.sha256(), 0
    t0 = time.perf_counter()
    with subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as p:
        while chunk := p.stdout.read(CHUNK):
            h.update(chunk)
            n += len(chunk)
        p.wait(120)
    dt = time.perf_counter() - t0
    if p.returncode:
        raise RuntimeError(f"{runtime}: ctr exited {p.returncode}: {p.stderr.read().decode()[-300:]}")
    return dt, h.hexdigest(), n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size-mib", type=int, default=1024)
    args = ap.parse_args(argv)
    size = args.size_mib << 20
    expected = zeros_digest(size)
    shim = os.path.join(REPO, ".venv", "bin", PYSHIM_BINARY)
    times: dict[str, list[float]] = {name: [] for name in RUNTIMES}
    with tempfile.TemporaryDirectory(prefix="pyshim-bench-") as tmp:
        tar = os.path.join(tmp, "busybox.tar")
        build_busybox_image(tar)
        with PrivateContainerd(shims={PYSHIM_BINARY: shim}, log_level="info") as c:
            c.import_image(tar)
            for i in range(args.rounds):
                order = list(RUNTIMES) if i % 2 == 0 else list(RUNTIMES)[::-1]
                for name in order:
                    dt, digest, n = one_run(c, RUNTIMES[name], f"io-{os.getpid()}-{name}-{i}", size)
                    if (digest, n) != (expected, size):
                        print(f"{name}: CORRUPT OUTPUT: {n} bytes, sha256 {digest}", file=sys.stderr)
                        return 1
                    times[name].append(dt)
    print(f"{args.size_mib} MiB through ctr run stdout (checksum verified), {args.rounds} rounds")
    med = {name: statistics.median(ts) for name, ts in times.items()}
    for name, m in med.items():
        print(f"  {name:7s} median {m:6.2f} s   {size / m / 1e6:7.0f} MB/s")
    print(f"  throughput ratio pyshim/runc: {med['runc'] / med['pyshim']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
