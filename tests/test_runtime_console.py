"""process.terminal without a container: where the Console op goes in the mount plan, what
runtime.console.setup does (on the fake syscall layer), and how the master crosses the sync
socket (runtime.child)."""

import errno
import os
import socket
import time

import pytest

from runtime import child, console, executor
from runtime import spec as S
from runtime.console import Console
from runtime.errors import ContainerSetupError
from runtime.mounts import Chdir, HostInfo, Mount, plan_rootfs
from runtime.specgen import default_config
from runtime.sys.consts import MS_BIND, MS_RDONLY, MS_REMOUNT
from runtime.sys.fake import FakeSys

R = "/b/rootfs"


def parse(mutate=None, **process):
    c = default_config(["sh"])
    c["process"].update(process)
    if mutate:
        mutate(c)
    return S.parse(c)


# --- the plan --------------------------------------------------------------------------------
def test_no_terminal_no_console_op():
    assert not [op for op in plan_rootfs(parse(), R, "/b", HostInfo()) if isinstance(op, Console)]


def test_the_console_comes_after_pivot_root_and_before_anything_read_only():
    def ro_dev(c):
        c["root"]["readonly"] = True
        next(m for m in c["mounts"] if m["destination"] == "/dev")["options"].append("ro")
    ops = plan_rootfs(parse(ro_dev, terminal=True, consoleSize={"height": 30, "width": 100},
                            user={"uid": 1000, "gid": 1000}), R, "/b", HostInfo())
    at = ops.index(Console(1000, (30, 100), dev_console=True))
    assert ops[at - 1] == Chdir("/")  # the end of the pivot_root dance
    ro = [i for i, op in enumerate(ops) if isinstance(op, Mount) and op.flags & MS_REMOUNT
          and op.flags & MS_RDONLY and i > at - 1]
    assert ops[at + 1] == Mount("tmpfs", "/dev", "tmpfs", ops[at + 1].flags, ops[at + 1].data)
    assert ro and min(ro) > at
    assert ops[-1] == Mount(None, "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY)


@pytest.mark.parametrize("size, expected", [
    (None, None), ({"height": 30, "width": 100}, (30, 100)),
    ({"height": 0, "width": 100}, None),  # like runc: only when both are set
])
def test_console_size(size, expected):
    extra = {} if size is None else {"consoleSize": size}
    assert console.for_process(parse(terminal=True, **extra).process) == Console(0, expected)
    assert console.for_process(parse(**extra).process) is None


# --- setup -----------------------------------------------------------------------------------
def test_setup_sequence_for_the_init(tmp_path):
    f = FakeSys()
    f.root = str(tmp_path)  # as after pivot_root
    (tmp_path / "dev").mkdir()
    sent = []
    console.setup(Console(1000, (30, 100), dev_console=True), f, sent.append)
    master, slave, path = f.pty
    assert sent == [master]
    assert f.calls == [
        ("open_pty", "/dev/ptmx"),
        ("set_winsize", master, 30, 100),
        ("fchown", slave, 1000, -1),
        ("touch", "/dev/console"),
        ("chmod", "/dev/console", 0o666),
        ("mount", path, "/dev/console", None, MS_BIND, None),
        ("close", master),  # before the slave becomes ours: the container never keeps it
        ("set_ctty", slave),
        ("dup2", slave, 0), ("dup2", slave, 1), ("dup2", slave, 2),
        ("close", slave),
    ]


def test_setup_for_an_exec_leaves_dev_console_alone(tmp_path):
    f = FakeSys()
    console.setup(Console(0), f, lambda fd: None)
    assert [c[0] for c in f.calls] == ["open_pty", "fchown", "close", "set_ctty", "dup2", "dup2",
                                      "dup2", "close"]


def test_an_existing_dev_console_is_only_bound_over(tmp_path):
    f = FakeSys()
    f.root = str(tmp_path)
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "console").write_text("")
    console.setup(Console(0, dev_console=True), f, lambda fd: None)
    assert not f.ops("touch", "chmod") and f.ops("mount")


@pytest.mark.parametrize("failing", ["fchown", "send"])
def test_a_failure_closes_both_ends_and_sends_nothing_more(failing):
    f = FakeSys()
    sent = []

    def send(fd):
        raise OSError(errno.EPIPE, "send: Broken pipe")
    if failing == "fchown":
        f.fail[("fchown", "")] = errno.EPERM
    with pytest.raises(OSError):
        console.setup(Console(0), f, send if failing == "send" else sent.append)
    master, slave, _ = f.pty
    assert f.ops("close") == [("close", master), ("close", slave)]
    assert not f.ops("set_ctty", "dup2") and sent == []


def test_the_executor_reports_step_console():
    f = FakeSys()
    f.fail[("open_pty", "/dev/ptmx")] = errno.ENOENT
    with pytest.raises(ContainerSetupError) as e:
        executor.apply([Console(0)], R, f, send_master=lambda fd: None)
    assert e.value.step == "console" and "No such file or directory" in str(e.value)
    with pytest.raises(ContainerSetupError) as e:  # nobody to take the master
        executor.apply([Console(0)], R, FakeSys())
    assert e.value.step == "console"


# --- the master on the sync socket ----------------------------------------------------------
@pytest.fixture
def pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    yield a, b
    a.close()
    b.close()


def receive(sock) -> dict:
    return child.recv(sock, time.monotonic() + 1, 1)


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_the_master_crosses_the_socket_close_on_exec(pair):
    a, b = pair
    r, w = os.pipe()
    child.send(a, {"type": "console"}, r)
    os.close(r)
    kids = child.Children()
    msg = receive(b)
    assert kids.take(msg) and "fds" not in msg
    got = kids.take_console()
    assert got is not None and not os.get_inheritable(got)
    os.write(w, b"x")
    assert os.read(got, 1) == b"x"
    os.close(got)
    os.close(w)
    assert kids.take_console() is None


def test_an_untaken_master_is_closed_with_the_children(pair):
    a, b = pair
    before = fd_count()
    r, w = os.pipe()
    child.send(a, {"type": "console"}, r)
    child.send(a, {"type": "ready"}, w)  # an fd on any other message is closed at once
    os.close(r)
    os.close(w)
    kids = child.Children()
    assert kids.take(receive(b))
    assert not kids.take(receive(b))
    assert fd_count() == before + 1  # the master only
    kids.close()  # what spawn() does after a failure
    assert fd_count() == before


def test_a_console_message_without_its_fd_is_an_error(pair):
    a, b = pair
    child.send(a, {"type": "console"})
    with pytest.raises(ContainerSetupError) as e:
        child.Children().take(receive(b))
    assert e.value.step == "console"
