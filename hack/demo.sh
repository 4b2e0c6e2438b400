#!/usr/bin/env bash
# Demo: installs what is needed (hack/install.sh), starts a private containerd, builds and
# imports the busybox image, runs
#   ctr run --rm --runtime io.containerd.pyshim.v2 docker.io/pyshim/busybox:latest demo echo hello from pyshim
# shows the output, and stops everything it started (the Python side, integration/demo.py,
# stops containerd and its containers on exit, ^C or SIGTERM; this script forwards signals
# to it and waits for that cleanup).
# Usage: hack/demo.sh [--runtime io.containerd.runc.v2] [--id ID] [CMD ...]   (as root)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
./hack/install.sh

pid=""
forward() { if [[ -n $pid ]]; then kill -TERM "$pid" 2>/dev/null || true; fi; }
trap forward INT TERM HUP
trap forward EXIT

"$root/.venv/bin/python" -m integration.demo "$@" &
pid=$!
rc=0
while :; do
    wait "$pid" && rc=0 || rc=$?
    kill -0 "$pid" 2>/dev/null || break   # gone: rc is its status; else a signal interrupted wait
done
pid=""
exit "$rc"
