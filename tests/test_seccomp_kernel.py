"""Filters really loaded into forked children (no root needed: they set no_new_privs first).

Every child runs body() under try/finally os._exit, so pytest never continues in a child, and is
reaped by pid with a deadline (SIGKILL past it) so a wedged child cannot hang the suite."""

import ctypes
import errno
import fcntl
import json
import os
import resource
import select
import signal
import socket
import struct
import threading
import time
import traceback

import pytest

from runtime import seccomp
from runtime.errors import ContainerSetupError
from runtime.seccomp import kernel


def has_cap_sys_admin() -> bool:
    with open("/proc/self/status") as f:
        cap_eff = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    return bool(cap_eff & (1 << 21))  # CAP_SYS_ADMIN


libc = ctypes.CDLL(None, use_errno=True)


def start(body, nnp=True) -> int:
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGSYS would dump core
            if nnp:
                seccomp.set_no_new_privs()
            code = body()
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def reap(pid: int, timeout: float = 20) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"child {pid} did not finish in {timeout}s")


def run(body, nnp=True) -> int:
    return reap(start(body, nnp))


def exited_ok(status) -> bool:
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def load(raw) -> tuple[bytes, int]:
    """Compile in the parent, as the runtime does; children only install."""
    profile = seccomp.parse(raw)
    return seccomp.compile(profile), seccomp.filter_flags(profile)


def allow_but(*calls, **kw):
    return {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": list(calls), **kw}


def status_field(name: str, task: str = "self") -> str:
    path = "/proc/self/status" if task == "self" else f"/proc/self/task/{task}/status"
    with open(path) as f:
        return next(line.split()[1] for line in f if line.startswith(name + ":"))


def test_mkdir_answers_the_profiles_errno(tmp_path):
    program, flags = load(allow_but({"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                                     "errnoRet": errno.ENOSYS}))
    target = tmp_path / "d"

    def body():
        seccomp.install(program, flags)
        try:
            os.mkdir(target)
            return 1
        except OSError as e:
            if e.errno != errno.ENOSYS:
                return 2
        return 0 if status_field("Seccomp") == "2" and os.getpid() > 0 else 3

    assert exited_ok(run(body))
    assert not target.exists()


def test_argument_condition_on_personality():
    # personality(0xffffffff) only queries; anything else is refused with EPERM
    program, flags = load(allow_but({
        "names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM,
        "args": [{"index": 0, "value": 0xFFFFFFFF, "op": "SCMP_CMP_NE"}]}))
    libc.personality.argtypes = [ctypes.c_ulong]

    def body():
        seccomp.install(program, flags)
        current = libc.personality(0xFFFFFFFF)
        if current < 0:
            return 1
        if libc.personality(current) != -1 or ctypes.get_errno() != errno.EPERM:
            return 2  # even setting the same persona is refused: only the query passes
        return 0

    assert exited_ok(run(body))


@pytest.mark.parametrize("action", ["SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL",
                                    "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP"])
def test_killing_actions_end_a_single_threaded_child_with_sigsys(action):
    program, flags = load(allow_but({"names": ["getppid"], "action": action}))

    def body():
        seccomp.install(program, flags)
        os.getppid()
        return 0

    status = run(body)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.parametrize("action, survives", [("SCMP_ACT_KILL_THREAD", True),
                                              ("SCMP_ACT_KILL_PROCESS", False)])
def test_kill_thread_spares_the_other_threads(action, survives):
    program, flags = load(allow_but({"names": ["getppid"], "action": action}))

    def body():
        seccomp.install(program, flags)
        # through ctypes, which drops the GIL: a thread killed holding it would wedge the child
        threading.Thread(target=libc.getppid, daemon=True).start()
        deadline = time.monotonic() + 10
        while _threads() > 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        return 0 if _threads() == 1 else 1

    status = run(body)
    if survives:
        assert exited_ok(status)
    else:
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


@pytest.mark.parametrize("tsync", [True, False])
def test_tsync_puts_every_thread_under_the_filter(tsync):
    program, flags = load(allow_but({"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"},
                                    flags=["SECCOMP_FILTER_FLAG_TSYNC"] if tsync else []))
    assert bool(flags & kernel.FLAG_TSYNC) == tsync

    def body():
        stop = threading.Event()
        threading.Thread(target=stop.wait, daemon=True).start()
        seccomp.install(program, flags)
        modes = {status_field("Seccomp", t) for t in os.listdir("/proc/self/task")}
        stop.set()
        return 0 if modes == ({"2"} if tsync else {"0", "2"}) else 1

    assert exited_ok(run(body))


@pytest.mark.parametrize("spec_flags", [None, ["SECCOMP_FILTER_FLAG_LOG"],
                                        ["SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                                         "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_TSYNC"]])
def test_spec_flags_are_accepted_by_the_kernel(spec_flags):
    raw = allow_but({"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"})
    if spec_flags is not None:
        raw["flags"] = spec_flags
    program, flags = load(raw)
    assert flags
    assert exited_ok(run(lambda: 0 if seccomp.install(program, flags) is None else 1))


@pytest.mark.skipif(not has_cap_sys_admin(), reason="needs CAP_SYS_ADMIN")
def test_with_cap_sys_admin_no_new_privs_is_not_needed():
    program, flags = load(allow_but({"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}))

    def body():
        seccomp.install(program, flags)
        return 0 if (status_field("NoNewPrivs"), status_field("Seccomp")) == ("0", "2") else 1

    assert exited_ok(run(body, nnp=False))


def test_without_no_new_privs_or_cap_sys_admin_install_fails():
    program, flags = load(allow_but({"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}))

    def body():
        if has_cap_sys_admin():  # drop every capability: become nobody
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
        try:
            seccomp.install(program, flags)
        except ContainerSetupError as e:
            return 0 if e.step == "seccomp" and "no_new_privs" in str(e) else 2
        return 1

    assert exited_ok(run(body, nnp=False))


def test_filter_survives_execve(tmp_path):
    program, flags = load(allow_but({"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                                     "errnoRet": errno.ENOSYS}))
    target = tmp_path / "made-by-mkdir"
    r, w = os.pipe()

    def body():
        os.dup2(w, 2)
        seccomp.install(program, flags)
        os.execv("/bin/mkdir", ["mkdir", str(target)])

    pid = start(body)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        err = f.read().decode()
    status = reap(pid)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 1
    assert "Function not implemented" in err and not target.exists()


# --- SCMP_ACT_NOTIFY: listener fd to an agent over listenerPath --------------------------------

def _iowr(nr: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (ord("!") << 8) | nr


NOTIF_RECV = _iowr(0, 80)   # struct seccomp_notif: id, pid, flags, struct seccomp_data (64)
NOTIF_SEND = _iowr(1, 24)   # struct seccomp_notif_resp: id, val, error, flags


def _agent(server: socket.socket) -> tuple[dict, int]:
    conn, _ = server.accept()
    with conn:
        conn.settimeout(10)
        data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 1)
        while chunk := conn.recv(1 << 16):  # one state per connection, then the runtime closes
            data += chunk
    assert len(fds) == 1
    return json.loads(data), fds[0]


@pytest.mark.parametrize("spec_flags", [None, ["SECCOMP_FILTER_FLAG_TSYNC",
                                                "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]])
def test_notify_hands_the_listener_fd_to_the_agent_which_answers(tmp_path, spec_flags):
    path = str(tmp_path / "agent.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    server.settimeout(10)
    raw = allow_but({"names": ["getppid"], "action": "SCMP_ACT_NOTIFY"},
                    listenerPath=path, listenerMetadata="hello")
    if spec_flags is not None:
        raw["flags"] = spec_flags
    program, flags = load(raw)
    assert flags & kernel.FLAG_NEW_LISTENER
    state = {"ociVersion": "1.2.0", "id": "c1", "status": "creating", "pid": 0,
             "bundle": str(tmp_path)}

    def body():
        server.close()
        fd = seccomp.install(program, flags)
        seccomp.send_listener_fd(path, fd, os.getpid(), state, "hello")
        os.close(fd)
        return 0 if os.getppid() == 4242 else 1  # answered by the agent, not the kernel

    pid = start(body)
    try:
        msg, nfd = _agent(server)
        assert msg == {"ociVersion": "1.2.0", "fds": ["seccompFd"], "pid": pid,
                       "metadata": "hello", "state": state}
        assert select.select([nfd], [], [], 10)[0], "no notification arrived"
        req = bytearray(80)
        fcntl.ioctl(nfd, NOTIF_RECV, req)
        notif_id, notif_pid, _, nr, _ = struct.unpack_from("=QIIiI", req)
        assert notif_pid == pid
        assert nr == seccomp.resolve("getppid")
        fcntl.ioctl(nfd, NOTIF_SEND, struct.pack("=QqiI", notif_id, 4242, 0, 0))
        os.close(nfd)
    finally:
        server.close()
        status = reap(pid)
    assert exited_ok(status)


def test_send_listener_fd_failure_names_the_path(tmp_path):
    with pytest.raises(ContainerSetupError) as info:
        seccomp.send_listener_fd(str(tmp_path / "nobody-listens"), 0, 1, {})
    assert info.value.path == str(tmp_path / "nobody-listens")
