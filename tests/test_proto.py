"""The generated proto modules are what hack/genproto.sh makes of the .proto files today."""

import filecmp
import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _generated(tree):
    for dirpath, _, files in os.walk(os.path.join(tree, "proto")):
        for name in files:
            if name.endswith(("_pb2.py", "_pb2_grpc.py")):
                yield os.path.relpath(os.path.join(dirpath, name), tree)


@pytest.mark.skipif(importlib.util.find_spec("grpc_tools") is None, reason="grpcio-tools missing")
def test_generated_modules_are_fresh(tmp_path):
    subprocess.run(["bash", os.path.join(ROOT, "hack", "genproto.sh"), str(tmp_path)], check=True,
                   env={**os.environ, "PYTHON": sys.executable})
    fresh, committed = sorted(_generated(str(tmp_path))), sorted(_generated(ROOT))
    assert fresh == committed, "a .proto file was added or removed: run hack/genproto.sh"
    stale = [p for p in fresh if not filecmp.cmp(tmp_path / p, os.path.join(ROOT, p), shallow=False)]
    assert stale == [], f"stale generated modules (run hack/genproto.sh): {stale}"


def test_wire_names_containerd_depends_on():
    from proto.containerd.events import task_pb2
    from proto.containerd.services.events.ttrpc.v1 import events_pb2
    from proto.containerd.task.v2 import shim_pb2

    assert shim_pb2.DESCRIPTOR.services_by_name["Task"].full_name == "containerd.task.v2.Task"
    assert events_pb2.DESCRIPTOR.services_by_name["Events"].full_name == (
        "containerd.services.events.ttrpc.v1.Events")
    assert task_pb2.TaskExit.DESCRIPTOR.full_name == "containerd.events.TaskExit"
    # Field numbers containerd reads (see shim-protocol.md section 4-5).
    fields = {f.name: f.number for f in shim_pb2.StateResponse.DESCRIPTOR.fields}
    assert fields["exited_at"] == 10 and fields["exec_id"] == 11
    assert {f.name: f.number for f in shim_pb2.DeleteResponse.DESCRIPTOR.fields}["exited_at"] == 3
