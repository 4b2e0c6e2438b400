#!/usr/bin/env bash
# Regenerates proto/**/*_pb2.py from the .proto files beside them.
# Usage: hack/genproto.sh [OUT_DIR]   (OUT_DIR defaults to the project root; the staleness
# test passes a temp dir and compares). Needs grpcio-tools (the dev extra pins its version).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root}
py=${PYTHON:-python3}
cd "$root"
mapfile -t protos < <(find proto -name '*.proto' | sort)
mkdir -p "$out"
"$py" -m grpc_tools.protoc -I "$root" --python_out="$out" "${protos[@]}"
# Every directory on the way to a generated module is a package.
find "$out/proto" -type d | while read -r d; do [ -e "$d/__init__.py" ] || : > "$d/__init__.py"; done
