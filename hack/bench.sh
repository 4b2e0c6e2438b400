#!/usr/bin/env bash
# Median wall time of `ctr run --rm IMAGE ID true`: pyshim vs the runc shim (and the runc
# shim driving crun), interleaved on one private containerd. See hack/bench.py.
# Usage: hack/bench.sh [--rounds 30] [--variants runc,crun,pyshim] [--json FILE]   (as root)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
./hack/install.sh
# exec: signals reach the Python side directly, which stops what it started.
exec "$root/.venv/bin/python" "$root/hack/bench.py" "$@"
