#!/usr/bin/env bash
# Regenerates proto/**/*_pb2.py from the .proto files beside them, and *_pb2_grpc.py (gRPC
# stubs, which import grpc) for containerd's gRPC services under proto/containerd/services
# (not the ttrpc ones) and the Kubernetes CRI API under proto/cri (from hack/cri_proto.py):
# only test and benchmark clients use those; the shim never imports grpc.
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
mapfile -t grpc_protos < <( { find proto/containerd/services -name '*.proto' -not -path '*/ttrpc/*'
                              find proto/cri -name '*.proto'; } | sort)
"$py" -m grpc_tools.protoc -I "$root" --grpc_python_out="$out" "${grpc_protos[@]}"
# Every directory on the way to a generated module is a package.
find "$out/proto" -type d | while read -r d; do [ -e "$d/__init__.py" ] || : > "$d/__init__.py"; done
# The daemon's pure-Python messages (proto/lite.py) from the modules just made.
"$py" "$root/hack/gen_lite.py" "$out"
