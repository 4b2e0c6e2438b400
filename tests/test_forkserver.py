"""The fork server: a real one in a subprocess forks a daemon that serves the Task API (no root)."""

import marshal
import os
import socket
import subprocess
import sys
import time

import pytest

from proto.containerd.task.v2 import shim_pb2 as api
from shim import aio
from shim import bootstrap, forkserver
from shim.ttrpc import Client

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A fork server for a fake containerd address (a plain file that exists)."""
    run_dir = tmp_path / "fs"
    monkeypatch.setattr(forkserver, "RUN_DIR", str(run_dir))
    address = str(tmp_path / "containerd.sock")
    open(address, "w").close()
    env = {**os.environ, "PYSHIM_FORKSERVER_DIR": str(run_dir)}
    code = f"import sys; sys.path[:0] = {sys.path!r}; from shim.forkserver import main; main()"
    proc = subprocess.Popen([sys.executable, "-IS", "-c", code, "-address", address], env=env)
    deadline = time.monotonic() + 10
    while not os.path.exists(forkserver.socket_path(address)):
        assert proc.poll() is None, "fork server exited"
        assert time.monotonic() < deadline, "fork server did not come up"
        time.sleep(0.02)
    yield address, proc
    proc.terminate()
    proc.wait(5)


def test_no_server_means_none(tmp_path, monkeypatch):
    monkeypatch.setattr(forkserver, "RUN_DIR", str(tmp_path))
    assert forkserver.request_daemon("/nowhere.sock", {}, 0) is None


def test_forked_daemon_serves_the_task_api_and_exits_on_shutdown(server, tmp_path):
    address, proc = server
    sock_path = str(tmp_path / "shim.sock")
    listener = bootstrap.listen(sock_path)
    flags = bootstrap.parse_flags(["-namespace", "fs-test", "-address", address, "-id", "c1", "start"])
    request = {"flags": vars(flags), "options": b"", "bundle": str(tmp_path), "path": sock_path,
               "env": {"TTRPC_ADDRESS": str(tmp_path / "no-events")}}
    pid = forkserver.request_daemon(address, request, listener.fileno())
    listener.close()
    assert pid and pid != proc.pid

    async def talk():
        client = await Client.connect(sock_path)
        reply = api.ConnectResponse.FromString(await client.call(
            "containerd.task.v2.Task", "Connect", api.ConnectRequest(id="c1").SerializeToString(),
            timeout=5))
        await client.call("containerd.task.v2.Task", "Shutdown",
                          api.ShutdownRequest(id="c1").SerializeToString(), timeout=5)
        client.close()
        return reply

    reply = aio.run(talk())
    assert (reply.shim_pid, reply.task_pid) == (pid, 0)
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not os.path.exists(f"/proc/{pid}"), "daemon did not exit after Shutdown"
    assert not os.path.exists(sock_path), "daemon left its socket behind"
    assert proc.poll() is None, "the fork server keeps serving"


def test_server_exits_when_its_containerd_socket_is_gone(server, monkeypatch):
    address, proc = server
    os.unlink(address)
    assert proc.wait(forkserver.POLL + 5) == 0
    assert not os.path.exists(forkserver.socket_path(address))


def _ask(server_obj, request, fd):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b:
        a.sendmsg([marshal.dumps(request)],
                  [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fd.to_bytes(4, sys.byteorder))])
        keep = server_obj._serve(b, None)
        return keep, marshal.loads(a.recv(1 << 16))


def test_stale_code_is_refused_and_the_server_quits():
    s = forkserver.Server("/x.sock")
    s.modules = {"/gone.py": 1}  # what it loaded differs from what is on disk now
    r, w = os.pipe()
    os.close(w)
    keep, reply = _ask(s, {"protocol": forkserver.PROTOCOL, "python": sys.version}, r)
    os.close(r)
    assert (keep, reply) == (False, {"error": "stale"})


def test_protocol_mismatch_is_refused():
    s = forkserver.Server("/x.sock")
    s.modules = forkserver._our_module_mtimes()
    r, w = os.pipe()
    os.close(w)
    keep, reply = _ask(s, {"protocol": forkserver.PROTOCOL + 1, "python": sys.version}, r)
    os.close(r)
    assert (keep, reply) == (False, {"error": "protocol mismatch"})


def test_launch_and_wait_returns_once_the_server_listens(tmp_path, monkeypatch):
    run_dir = tmp_path / "fs"
    monkeypatch.setattr(forkserver, "RUN_DIR", str(run_dir))
    monkeypatch.setenv("PYSHIM_FORKSERVER_DIR", str(run_dir))  # for the launched process
    address = str(tmp_path / "containerd.sock")
    open(address, "w").close()
    try:
        assert forkserver.launch_and_wait(address, sys.path, timeout=10)
        assert os.path.exists(forkserver.socket_path(address))  # listening: no polling needed
        # a second launch finds the lock taken: that process exits at once, and says so
        assert forkserver.launch_and_wait(address, sys.path, timeout=10)
    finally:
        os.unlink(address)  # the server we launched exits within POLL seconds
        with open(forkserver.pid_path(address)) as f:
            pid = int(f.read())
        os.kill(pid, 15)  # ...or now: it is ours, by pid


def test_the_fork_server_preloads_what_a_create_imports_lazily():
    # The engine imports launch/mounts/... on first use; a daemon forked without them would
    # import them on its first Create (slower, and private memory in every daemon).
    code = ("import sys; from shim import daemon; daemon.preload_engine(); "
            "need = ['runtime.launch', 'runtime.execproc', 'runtime.mounts', 'runtime.init', "
            "'runtime.hooks', 'runtime.ctrcgroup', 'runtime.cgroups.v1', 'runtime.seccomp'];"
            "print([m for m in need if m not in sys.modules]); "
            "print([m for m in sys.modules if m.startswith('runtime.cli') or m == 'pyroute2'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT)
    assert out.stdout.split("\n")[:2] == ["[]", "[]"], out.stdout + out.stderr
