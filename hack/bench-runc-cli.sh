#!/usr/bin/env bash
# The OCI runtime CLIs head to head: `pyshim-runc run` vs `runc run` vs `crun run` of a trivial
# busybox bundle (`true`), interleaved, medians and ratios; plus each CLI's bare start-up.
# crun may fail on a hybrid-cgroup host: it is then reported with its error and left out.
# Usage: hack/bench-runc-cli.sh [--rounds 50] [--variants pyshim,runc,crun] [--json FILE]  (root)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
./hack/install.sh
exec "$root/.venv/bin/python" hack/bench_runc_cli.py "$@"
