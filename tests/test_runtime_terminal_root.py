"""Root tests of process.terminal against the real kernel: the engine makes the pty inside the
container (its own devpts instance), hands the master back in Stdio.console_fd, and the process
has the slave as its controlling terminal and stdio. Skipped unless running as root."""

import errno
import os
import select
import time

import pytest
from test_runtime_exec_root import running, stop
from test_runtime_root import _reap, children, env, subreaper, write_config  # noqa: F401

from runtime.container import Stdio
from runtime.errors import ContainerSetupError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

SCRIPT = "tty; stty size; stat -c '%t %T' /dev/console; echo ready; read x; echo got $x"


@pytest.fixture
def tty_env(env):
    engine, bundle = env
    for name in ("tty", "stty", "stat"):
        os.link(bundle / "rootfs/bin/busybox", bundle / "rootfs/bin" / name)
    return engine, bundle


def read_until(fd: int, marker: bytes, timeout: float = 5.0) -> bytes:
    """What the terminal shows up to `marker` (EIO: nobody has the slave open any more)."""
    out = b""
    deadline = time.monotonic() + timeout
    while marker not in out:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            pytest.fail(f"no {marker!r} on the terminal, got {out!r}")
        try:
            chunk = os.read(fd, 4096)
        except OSError as e:
            if e.errno != errno.EIO:
                raise
            chunk = b""
        if not chunk:
            pytest.fail(f"the terminal closed before {marker!r}, got {out!r}")
        out += chunk
    return out


def terminal(**kw) -> dict:
    return {"terminal": True, "consoleSize": {"height": 30, "width": 100}, **kw}


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_create_with_a_terminal(tty_env):
    engine, bundle = tty_env
    write_config(bundle, ["sh", "-c", SCRIPT], lambda c: c["process"].update(terminal()))
    out_r, out_w = os.pipe()
    stdio = Stdio(stdout=out_w, stderr=out_w)  # ignored: the terminal is the stdio
    c = engine.create("c1", str(bundle), stdio)
    os.close(out_w)
    master = stdio.console_fd
    assert master is not None and os.isatty(master)
    assert os.get_inheritable(master) is False
    try:
        c.start()
        out = read_until(master, b"ready\r\n").decode()
        assert out.splitlines()[:4] == ["/dev/pts/0", "30 100", "88 0", "ready"]  # 136:0
        os.write(master, b"hello\n")
        assert b"got hello\r\n" in read_until(master, b"got hello\r\n")
        assert _reap(c.pid) == 0
    finally:
        os.close(master)
    assert select.select([out_r], [], [], 0)[0] and os.read(out_r, 100) == b""  # unused
    os.close(out_r)
    c.delete()
    assert engine.list() == []


def test_closing_the_master_hangs_the_terminal_up(tty_env):
    # The shell is pid 1 of its namespace, which ignores the kernel's SIGHUP; its read fails.
    engine, bundle = tty_env
    write_config(bundle, ["sh", "-c", "echo up; read x"], lambda c: c["process"].update(
        terminal=True))
    stdio = Stdio()
    c = engine.create("c1", str(bundle), stdio)
    c.start()
    read_until(stdio.console_fd, b"up")
    os.close(stdio.console_fd)
    assert _reap(c.pid) == 1
    c.delete()


def test_exec_with_a_terminal(tty_env):
    engine, bundle = tty_env
    c = running(engine, bundle)
    stdio = Stdio()
    pid = c.exec({"args": ["sh", "-c", "tty; stty size; stat -c %u $(tty); id -u; read x;"
                           " echo got $x; exit 3"],
                  "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 1000, "gid": 1000},
                  **terminal()}, stdio)
    master = stdio.console_fd
    try:
        out = read_until(master, b"1000\r\n1000\r\n").decode().splitlines()
        assert out[0].startswith("/dev/pts/") and out[1:4] == ["30 100", "1000", "1000"]
        os.write(master, b"there\n")
        read_until(master, b"got there")
        assert _reap(pid) == 3
    finally:
        os.close(master)
    stop(c)


def test_a_terminal_failure_is_typed_and_leaves_nothing(tty_env):
    engine, bundle = tty_env
    # No devpts: /dev/ptmx -> pts/ptmx points nowhere.
    write_config(bundle, ["true"], lambda c: (
        c["process"].update(terminal=True),
        c.update(mounts=[m for m in c["mounts"] if m["destination"] != "/dev/pts"])))
    before, fds = children(), open_fds()
    stdio = Stdio()
    with pytest.raises(ContainerSetupError) as e:
        engine.create("c1", str(bundle), stdio)
    assert e.value.step == "console" and "No such file or directory" in str(e.value)
    assert stdio.console_fd is None
    assert engine.list() == [] and children() == before and open_fds() == fds


def test_an_exec_terminal_failure_is_typed_and_leaves_nothing(tty_env):
    engine, bundle = tty_env
    c = running(engine, bundle)
    before, fds = children(), open_fds()
    stdio = Stdio()
    with pytest.raises(ContainerSetupError) as e:  # the pty is made, then the lookup fails
        c.exec({"args": ["nope"], "cwd": "/", "env": ["PATH=/bin"], "terminal": True}, stdio)
    assert e.value.step == "exec lookup"
    assert stdio.console_fd is None
    assert children() == before and open_fds() == fds
    stop(c)
