#!/usr/bin/env bash
# Benchmarks, pyshim vs the runc shim side by side on one private containerd each, ratios printed:
#   1. hack/bench.py         median wall time of `ctr run --rm IMAGE ID true` (interleaved)
#   2. hack/bench_memory.py  summed PSS of the shims with 20 running containers: ungrouped,
#                            one sandbox-id (one shim), pyshim's per-namespace policy
#   3. hack/bench_io.py      1 GiB through a container's stdout to ctr, checksum verified
#   4. hack/bench_exec.py    exec latency (ctr task exec, and the gRPC API)
# Usage: hack/bench.sh [args for bench.py, e.g. --rounds 30 --variants runc,pyshim]   (as root)
#        BENCH=latency|memory|io|exec hack/bench.sh ...   runs one of them
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
./hack/install.sh
py="$root/.venv/bin/python"
which=${BENCH:-all}
if [[ $which == all || $which == latency ]]; then "$py" hack/bench.py "$@"; fi
if [[ $which == all || $which == memory ]]; then
    "$py" hack/bench_memory.py --containers 20
    "$py" hack/bench_memory.py --containers 20 --grouped
    "$py" hack/bench_memory.py --containers 20 --namespace-policy
fi
if [[ $which == all || $which == io ]]; then "$py" hack/bench_io.py --rounds 3; fi
if [[ $which == all || $which == exec ]]; then "$py" hack/bench_exec.py; fi
