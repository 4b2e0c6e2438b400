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


V2 = "0::/user.slice/session-1.scope\n"


def test_candidates_on_a_v1_or_hybrid_host_are_none():
    # The engine's processes join v1 hierarchies through "tasks", without a grace period: a
    # warm-up there would only hold cgroup_mutex (which the cgroup's mkdirs wait for).
    assert cgwarm.candidates(HYBRID) == []
    assert cgwarm.candidates("3:cpu,cpuacct:/\n") == []


def test_candidates_on_a_pure_v2_host():
    assert cgwarm.candidates(V2) == ["/sys/fs/cgroup/user.slice/session-1.scope/cgroup.procs"]
    assert cgwarm.candidates("0::/\n") == ["/sys/fs/cgroup/cgroup.procs"]
    # a named v1 hierarchy (no controller) does not make it a v1 host
    assert cgwarm.candidates("1:name=systemd:/\n0::/\n") == ["/sys/fs/cgroup/cgroup.procs"]


def test_candidates_ignore_garbage():
    assert cgwarm.candidates("junk\n0::relative\n\n") == []


def test_targets_are_the_openable_candidates_moved_high():
    opened = []

    def open_(path, flags):
        assert flags & os.O_WRONLY
        opened.append(path)
        return os.open("/dev/null", os.O_WRONLY | os.O_CLOEXEC)  # a low fd, as open() gives

    fds = cgwarm.open_targets(read=lambda: V2, open_=open_)
    try:
        assert opened == cgwarm.candidates(V2)
        assert len(fds) == 1 and all(fd >= cgwarm.HIGH_FD for fd in fds)
    finally:
        for fd in fds:
            os.close(fd)

    def missing(path, flags):
        raise FileNotFoundError(path)
    assert cgwarm.open_targets(read=lambda: V2, open_=missing) == []
    assert cgwarm.open_targets(read=lambda: HYBRID, open_=missing) == []  # never even tried

    def unreadable():
        raise FileNotFoundError("/proc/self/cgroup")
    assert cgwarm.open_targets(read=unreadable) == []


def test_warm_writes_our_own_pid_into_the_first_that_takes_it_and_closes_all(monkeypatch):
    monkeypatch.setattr(cgwarm, "_live", {1001, 1002, 1003})
    written, closed = [], []

    def write(fd, data):
        written.append((fd, data))
        if fd == 1001:
            raise OSError(95, "threaded cgroup")
        return len(data)

    assert cgwarm.warm([1001, 1002, 1003], write=write, close=closed.append) == 1002
    assert written == [(1001, str(os.getpid()).encode()), (1002, str(os.getpid()).encode())]
    assert closed == [1001, 1002, 1003] and cgwarm._live == set()

    def refused(fd, data):
        raise PermissionError(1, "no")
    closed.clear()
    assert cgwarm.warm([1007, 1008], write=refused, close=closed.append) is None
    assert closed == [1007, 1008]  # never raises, every fd closed


def test_start_is_a_no_op_for_an_unprivileged_caller(monkeypatch):
    started = []
    monkeypatch.setattr(cgwarm.posix, "geteuid", lambda: 1000)
    import _thread
    monkeypatch.setattr(_thread, "start_new_thread", lambda *a: started.append(a))
    cgwarm.start()
    assert started == []


@pytest.mark.parametrize("command,warms", [
    (["run", "--preserve-fds", "2", "c1"], True), (["create", "c1"], True),
    (["exec", "c1", "true"], True), (["state", "c1"], False), (["kill", "c1"], False)])
def test_the_cli_closes_inherited_fds_before_it_warms(monkeypatch, command, warms):
    """Run without hack/install.sh's launcher (which warms before main), the CLI closes the
    caller's inherited fds first, then starts the warm-up."""
    events = []
    monkeypatch.setattr(cli, "exit_now", lambda rc: events.append(("exit", rc)))
    monkeypatch.setattr(cgwarm, "closerange", lambda lo: events.append(("closerange", lo)))
    monkeypatch.setattr(cgwarm, "start", lambda: events.append(("warm",)))
    monkeypatch.setattr(cgwarm, "started", False)  # not by the launcher
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


def test_launched_early_the_cli_does_not_warm_twice(monkeypatch):
    events = []
    monkeypatch.setattr(cli, "exit_now", lambda rc: None)
    monkeypatch.setattr(cgwarm, "closerange", lambda lo: events.append(("closerange", lo)))
    monkeypatch.setattr(cgwarm, "start", lambda: events.append(("warm",)))
    monkeypatch.setattr(cgwarm, "started", True)
    monkeypatch.setattr(sys, "argv", ["pyshim-runc", "--root", "/nonexistent/root", "run", "c"])
    from runtime import cli_commands
    monkeypatch.setattr(cli_commands, "run", lambda name, *a: 0)
    cli.main()
    assert events == [("closerange", 3)]


@pytest.mark.parametrize("argv,warms", [
    (["pyshim-runc", "--root", "/r", "run", "-b", "b", "c1"], True),
    (["pyshim-runc", "create", "c1"], True), (["pyshim-runc", "exec", "c1", "sh"], True),
    (["pyshim-runc", "state", "c1"], False), (["pyshim-runc", "--version"], False),
    (["run"], False)])  # argv[0] is the program
def test_early_warms_for_the_commands_that_move_a_process(monkeypatch, argv, warms):
    started = []
    monkeypatch.setattr(cgwarm, "start", lambda: started.append(True))
    cgwarm.early(argv)
    assert bool(started) == warms


def test_closerange_spares_the_fds_a_warm_thread_still_holds(monkeypatch):
    """While the thread waits in write(), the CLI closes what it inherited: not the thread's
    fds (high, where no --preserve-fds number falls); the thread closes them itself."""
    calls = []
    monkeypatch.setattr(cgwarm.posix, "closerange", lambda lo, hi: calls.append((lo, hi)))
    monkeypatch.setattr(cgwarm, "_live", {1000, 1003, 1004})
    cgwarm.closerange(5)
    assert calls == [(5, 1000), (1001, 1003), (1005, 1 << 20)]
    calls.clear()
    monkeypatch.setattr(cgwarm, "_live", set())
    cgwarm.closerange(3)
    assert calls == [(3, 1 << 20)]


def test_start_hands_the_thread_fds_it_opened_itself(monkeypatch):
    """The thread may get the GIL late (after the CLI's closerange): it must find its fds
    open, and open none of its own."""
    import _thread
    monkeypatch.setattr(cgwarm, "_live", set())
    monkeypatch.setattr(cgwarm, "started", False)
    monkeypatch.setattr(cgwarm.posix, "geteuid", lambda: 0)
    monkeypatch.setattr(cgwarm, "open_targets", lambda: [1004, 1005])
    threads = []
    monkeypatch.setattr(_thread, "start_new_thread", lambda f, args: threads.append((f, args)))
    switch = sys.getswitchinterval()
    try:
        cgwarm.start()
        # until the thread runs, the GIL changes hands within 0.1 ms; it restores the interval
        assert sys.getswitchinterval() == pytest.approx(cgwarm.SWITCH)
        cgwarm.start()  # a second one before the first ran (the shim): the same interval back
    finally:
        sys.setswitchinterval(switch)
    assert threads == [(cgwarm._quiet_warm, ([1004, 1005], cgwarm._NORMAL_SWITCH))] * 2
    assert cgwarm._NORMAL_SWITCH == pytest.approx(switch)
    assert cgwarm._live == {1004, 1005} and cgwarm.started


def test_the_thread_restores_the_switch_interval_first(monkeypatch):
    monkeypatch.setattr(cgwarm, "_live", set())
    switch = sys.getswitchinterval()
    seen = []
    try:
        sys.setswitchinterval(cgwarm.SWITCH)
        cgwarm.warm([1010], write=lambda fd, d: seen.append(sys.getswitchinterval()),
                    close=lambda fd: None, switch=0.004)
        assert seen == [pytest.approx(0.004)]
    finally:
        sys.setswitchinterval(switch)
