"""Demo: a private containerd runs one container with pyshim.

    python -m integration.demo [--runtime io.containerd.pyshim.v2] [CMD ...]

Builds the busybox test image (hack/mkimage.py), starts a PrivateContainerd, imports the
image, runs `ctr run --rm --runtime RUNTIME docker.io/pyshim/busybox:latest demo CMD...`
(default CMD: echo hello from pyshim), shows its output and stops everything it started,
also on ^C or SIGTERM. Exits with the container's exit code.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile

from integration.containerd import (BUSYBOX_IMAGE, PYSHIM_BINARY, PYSHIM_RUNTIME,
                                    PrivateContainerd, build_busybox_image)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE = BUSYBOX_IMAGE


def _raise(signum, frame):
    # First signal: unwind (the with-blocks stop containerd); later ones must not cut that short.
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signum}")


def say(msg: str) -> None:
    print(f"demo: {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="run one container with pyshim on a private containerd")
    ap.add_argument("--runtime", default=PYSHIM_RUNTIME)
    ap.add_argument("--id", default="demo")
    ap.add_argument("cmd", nargs="*", default=["echo", "hello", "from", "pyshim"])
    args = ap.parse_args(argv)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _raise)
    shim = os.path.join(REPO, ".venv", "bin", PYSHIM_BINARY)
    with tempfile.TemporaryDirectory(prefix="pyshim-demo-") as tmp:
        tar = os.path.join(tmp, "busybox.tar")
        say(f"building {IMAGE} from /bin/busybox")
        build_busybox_image(tar)
        say("starting a private containerd")
        with PrivateContainerd(shims={PYSHIM_BINARY: shim} if os.path.exists(shim) else None) as c:
            say(f"containerd at {c.address}, log {c.log_path}")
            c.import_image(tar)
            cmd = ["run", "--rm", "--runtime", args.runtime, IMAGE, args.id, *args.cmd]
            say("ctr " + " ".join(cmd))
            r = c.ctr(*cmd, timeout=120)
            sys.stdout.write(r.stdout)
            sys.stdout.flush()
            if r.stderr:
                sys.stderr.write(r.stderr)
            if r.returncode != 0:
                say(f"ctr exited {r.returncode}; containerd log tail:\n{c.log_tail(30)}")
            say("stopping containerd")
        return r.returncode


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as e:
        say(f"interrupted ({e}); everything started was stopped")
        sys.exit(130)
