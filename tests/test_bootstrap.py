"""The start/delete subcommands: flags, socket naming, grouping, the hand-encoded DeleteResponse."""

import json
import os
import subprocess
import sys

import pytest

from proto.containerd.task.v2 import shim_pb2
from shim import bootstrap


def test_parse_flags_as_containerd_passes_them():
    f = bootstrap.parse_flags(["-namespace", "k8s.io", "-address", "/run/containerd/containerd.sock",
                               "-publish-binary", "/usr/bin/containerd", "-id", "abc", "-debug",
                               "start"])
    assert (f.namespace, f.address, f.publish_binary, f.id, f.debug, f.action) == (
        "k8s.io", "/run/containerd/containerd.sock", "/usr/bin/containerd", "abc", True, "start")


def test_parse_flags_equals_form_and_bundle():
    f = bootstrap.parse_flags(["--namespace=default", "-id=x", "-bundle", "/b", "delete"])
    assert (f.namespace, f.id, f.bundle, f.action) == ("default", "x", "/b", "delete")


def test_parse_flags_rejects_unknown_flag_and_missing_value():
    with pytest.raises(bootstrap.UsageError, match="-bogus"):
        bootstrap.parse_flags(["-bogus", "start"])
    with pytest.raises(bootstrap.UsageError, match="-id"):
        bootstrap.parse_flags(["-id"])


def test_socket_address_matches_containerd():
    # sha256("/run/containerd/containerd.sock/default/foo"), containerd's shim.SocketAddress
    assert bootstrap.socket_address("/run/containerd/containerd.sock", "default", "foo") == (
        "unix:///run/containerd/s/"
        "0ef8ff6eee5e57db347888bf5cbc6792a6072d2620834fa5d518ce50f84567bf")


def test_socket_address_cleans_the_joined_path_like_filepath_join():
    a = bootstrap.socket_address("/run/c.sock/", "ns", "id")
    assert a == bootstrap.socket_address("/run/c.sock", "ns", "id")
    assert len(bootstrap.socket_path(a)) <= bootstrap.SOCKET_PATH_LIMIT


def test_group_id_prefers_sandbox_annotation(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(
        {"annotations": {"io.kubernetes.cri.sandbox-id": "pod1"}}))
    assert bootstrap.group_id(str(tmp_path), "ctr1") == "pod1"


def test_group_id_defaults_to_container_id(tmp_path):
    assert bootstrap.group_id(str(tmp_path), "ctr1") == "ctr1"  # no config.json at all
    (tmp_path / "config.json").write_text("{not json")
    assert bootstrap.group_id(str(tmp_path), "ctr1") == "ctr1"


@pytest.mark.parametrize("pid,status,ns", [(0, 0, 0), (1234, 137, 1_700_000_000_123_456_789),
                                           (2**31, 255, 5)])
def test_delete_response_encoding_equals_protobuf(pid, status, ns):
    expected = shim_pb2.DeleteResponse(pid=pid, exit_status=status)
    expected.exited_at.FromNanoseconds(ns)
    assert bootstrap.encode_delete_response(pid, status, ns) == expected.SerializeToString()


def test_listen_creates_a_0600_socket(tmp_path):
    path = str(tmp_path / "s" / "sock")
    sock = bootstrap.listen(path)
    try:
        assert os.stat(path).st_mode & 0o777 == 0o600
        assert bootstrap.can_connect(path)
    finally:
        sock.close()


def test_write_atomic_leaves_no_temp_file(tmp_path):
    bootstrap.write_atomic(str(tmp_path / "address"), b"unix:///x")
    assert os.listdir(tmp_path) == ["address"]
    assert (tmp_path / "address").read_bytes() == b"unix:///x"


def test_start_path_imports_only_the_standard_library():
    code = ("import sys, shim.main; "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('google', 'proto', 'asyncio', 'runtime')]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.stdout.strip() == "[]"


def test_unknown_action_is_a_clear_error(capsys):
    from shim import main
    assert main.main(["-id", "x", "frobnicate"]) == 2
    assert "unknown action 'frobnicate'" in capsys.readouterr().err


def test_the_real_binary_exits_without_the_interpreters_teardown(monkeypatch, capsys):
    """main() of the real process (argv None) flushes its output and calls os._exit with the
    status: `start` is on every new shim's critical path."""
    import os
    import sys

    from shim import main

    class Exited(Exception):
        pass

    def fake_exit(code):
        raise Exited(code)
    monkeypatch.setattr(os, "_exit", fake_exit)
    monkeypatch.setattr(sys, "argv", ["containerd-shim-pyshim-v2", "-id", "x", "frobnicate"])
    with pytest.raises(Exited) as e:
        main.main()
    assert e.value.args == (2,)
    assert "unknown action 'frobnicate'" in capsys.readouterr().err
