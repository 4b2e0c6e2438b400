"""runtime.cgwarm: the no-op cgroup move that starts the migration grace period early."""

import os
import sys

import pytest

from runtime import cgwarm, cli

HYBRID = """\
9:name=systemd:/
8:pids:/user.slice
4:memory:/process_api/abc
2:cpu,cpuacct:/
0::/user.slice/session-1.scope
"""


def test_candidates_unified_first_then_each_v1_controller():
    assert cgwarm.candidates(HYBRID) == [
        "/sys/fs/cgroup/user.slice/session-1.scope/cgroup.procs",  # pure v2 mount
        "/sys/fs/cgroup/unified/user.slice/session-1.scope/cgroup.procs",  # hybrid
        "/sys/fs/cgroup/pids/user.slice/cgroup.procs",
        "/sys/fs/cgroup/memory/process_api/abc/cgroup.procs",
        "/sys/fs/cgroup/cpu,cpuacct/cgroup.procs",
    ]  # name=systemd has no controller: moving there could not matter less, but skip it


def test_candidates_of_a_pure_v2_root_process():
    assert cgwarm.candidates("0::/\n") == ["/sys/fs/cgroup/cgroup.procs",
                                           "/sys/fs/cgroup/unified/cgroup.procs"]


def test_candidates_ignore_garbage():
    assert cgwarm.candidates("junk\n3:cpu:relative\n\n") == []


def test_warm_writes_our_own_pid_into_the_first_cgroup_that_takes_it():
    opened, written, closed = [], [], []

    def open_(path, flags):
        assert flags & os.O_WRONLY
        opened.append(path)
        if "unified" not in path:
            raise FileNotFoundError(path)
        return 42

    def write(fd, data):
        written.append((fd, data))
        return len(data)

    path = cgwarm.warm(read=lambda: HYBRID, open_=open_, write=write, close=closed.append)
    assert path == "/sys/fs/cgroup/unified/user.slice/session-1.scope/cgroup.procs"
    assert opened == [cgwarm.candidates(HYBRID)[0], path]
    assert written == [(42, str(os.getpid()).encode())]
    assert closed == [42]


def test_warm_goes_on_after_a_refused_write_and_never_raises():
    closed = []

    def write(fd, data):
        raise PermissionError(1, "no")

    assert cgwarm.warm(read=lambda: HYBRID, open_=lambda p, f: 7, write=write,
                       close=closed.append) is None
    assert closed == [7] * len(cgwarm.candidates(HYBRID))  # every fd it opened is closed

    def unreadable():
        raise FileNotFoundError("/proc/self/cgroup")
    assert cgwarm.warm(read=unreadable) is None


def test_start_is_a_no_op_for_an_unprivileged_caller(monkeypatch):
    started = []
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    import _thread
    monkeypatch.setattr(_thread, "start_new_thread", lambda *a: started.append(a))
    cgwarm.start()
    assert started == []


@pytest.mark.parametrize("command,warms", [
    (["run", "--preserve-fds", "2", "c1"], True), (["create", "c1"], True),
    (["exec", "c1", "true"], True), (["state", "c1"], False), (["kill", "c1"], False)])
def test_the_cli_closes_inherited_fds_before_it_warms(monkeypatch, command, warms):
    """The warm-up thread holds an fd while it waits in the kernel: the close of the caller's
    inherited fds must come first, or it would close that fd under the thread (and the
    thread's close() then hit whatever took the number next)."""
    events = []
    monkeypatch.setattr(cli, "exit_now", lambda rc: events.append(("exit", rc)))
    monkeypatch.setattr(os, "closerange", lambda lo, hi: events.append(("closerange", lo)))
    monkeypatch.setattr(cgwarm, "start", lambda: events.append(("warm",)))
    monkeypatch.setattr(sys, "argv", ["pyshim-runc", "--root", "/nonexistent/root", *command])
    from runtime import cli_commands
    # Not the command itself: as the real process it would install signal handlers here.
    monkeypatch.setattr(cli_commands, "run", lambda name, *a: events.append((name,)) or 7)
    cli.main()
    assert events[-2:] == [(command[0],), ("exit", 7)]  # the real process exits in main()
    if warms:
        keep = 3 + (2 if "--preserve-fds" in command else 0)
        assert events[:2] == [("closerange", keep), ("warm",)]
    else:
        assert ("warm",) not in events and not any(e[0] == "closerange" for e in events)
