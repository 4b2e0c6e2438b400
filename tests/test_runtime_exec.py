"""runtime.execproc without a container: the namespace plan and its order (runtime.namespaces,
pure and on the fake syscall layer), the checks Container.exec makes before forking, and the
exec protocol itself against a stand-in init that shares our namespaces (so nothing is
entered)."""

import errno
import os
import signal
import time

import pytest
from test_runtime_root import children, read_all

from runtime import namespaces, proc, state
from runtime.container import Container, Stdio
from runtime.errors import ContainerSetupError, InvalidSpec, InvalidState
from runtime.specgen import default_config
from runtime.sys.consts import (CLONE_NEWCGROUP, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS,
                                CLONE_NEWPID, CLONE_NEWUSER, CLONE_NEWUTS)
from runtime.sys.fake import FakeSys

HOST = {t: f"{t}:[1]" for t in namespaces.ORDER}


def test_plan_enters_every_differing_namespace_in_runcs_order():
    init = {t: f"{t}:[2]" for t in namespaces.ORDER}
    assert namespaces.namespace_plan(init, HOST) == ["user", "ipc", "uts", "network", "pid",
                                                     "mount", "cgroup", "time"]


def test_plan_skips_the_namespaces_the_container_shares_with_us():
    # e.g. a container joined to the host network, without a cgroup, time or user namespace
    init = dict(HOST, pid="pid:[9]", mount="mnt:[9]", ipc="ipc:[9]", uts="uts:[9]")
    assert namespaces.namespace_plan(init, HOST) == ["ipc", "uts", "pid", "mount"]
    assert namespaces.namespace_plan(HOST, HOST) == []


def test_plan_skips_a_type_this_kernel_lacks():
    own = {t: v for t, v in HOST.items() if t != "time"}
    init = {t: "other" for t in namespaces.ORDER}
    assert "time" not in namespaces.namespace_plan(init, own)


def test_enter_setns_on_the_fds_in_plan_order():
    f = FakeSys()
    namespaces.enter([("ipc", 5), ("uts", 6), ("network", 7), ("pid", 8), ("mount", 9),
                      ("cgroup", 10)], f)
    assert f.calls == [("setns_fd", 5, CLONE_NEWIPC), ("setns_fd", 6, CLONE_NEWUTS),
                       ("setns_fd", 7, CLONE_NEWNET), ("setns_fd", 8, CLONE_NEWPID),
                       ("setns_fd", 9, CLONE_NEWNS), ("setns_fd", 10, CLONE_NEWCGROUP)]


class EpermOnce(FakeSys):
    """setns_fd fails with EPERM for the fds in `refuse` until the user namespace is joined."""

    def __init__(self, refuse):
        super().__init__()
        self.refuse, self.in_userns = set(refuse), False

    def setns_fd(self, fd, nstype):
        if fd in self.refuse and not self.in_userns:
            raise OSError(errno.EPERM, "setns: Operation not permitted")
        self.in_userns |= nstype == CLONE_NEWUSER
        super().setns_fd(fd, nstype)


def test_enter_joins_the_user_namespace_after_the_others_then_what_needed_it():
    # runc's two passes: what we may join with our own privileges first, then the user
    # namespace, then what only its privileges let us join; then root in it.
    f = EpermOnce(refuse={8})
    namespaces.enter([("user", 4), ("ipc", 5), ("pid", 8), ("mount", 9)], f)
    assert f.calls == [("setns_fd", 5, CLONE_NEWIPC), ("setns_fd", 9, CLONE_NEWNS),
                       ("setns_fd", 4, CLONE_NEWUSER), ("setns_fd", 8, CLONE_NEWPID),
                       ("setresgid", 0), ("setgroups", []), ("setresuid", 0)]


def test_enter_failure_is_typed():
    f = FakeSys()
    f.fail[("setns_fd", "")] = errno.EPERM  # EPERM even in the second pass
    with pytest.raises(ContainerSetupError) as e:
        namespaces.enter([("mount", 9)], f)
    assert (e.value.step, e.value.path) == ("namespaces", "ns/mnt")
    assert "Operation not permitted" in str(e.value)


# --- Container.exec against a stand-in init --------------------------------------------------
@pytest.fixture
def init(tmp_path):
    """A running 'container' whose init is a child of ours in our own namespaces."""
    pid = os.fork()
    if pid == 0:
        try:
            time.sleep(30)
        finally:
            os._exit(0)
    d = tmp_path / "c1"
    d.mkdir()
    data = {"ociVersion": "1.1.0", "id": "c1", "bundle": "/b", "pid": pid,
            "pidStartTime": proc.start_time(pid), "created": "now", "annotations": {},
            "config": default_config()}
    state.write(str(d), data)
    yield Container(str(d), data, timeout=5)
    try:  # a test may have killed and reaped it already
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def process(args, **kw):
    return {"args": args, "cwd": "/", "env": ["PATH=/usr/bin:/bin"], **kw}


def wait(pid: int) -> int:
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.fixture
def subreaper():
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # the exec'd process is re-parented to us, as to the shim
    yield
    libc.prctl(36, 0, 0, 0, 0)


def test_nothing_to_enter_when_the_init_shares_our_namespaces(init):
    fds = namespaces.open_namespaces(init.pid, init.start_time)
    assert fds == []
    assert namespaces.open_namespaces(init.pid, init.start_time + 1) is None  # recycled pid


@pytest.mark.parametrize("bad, field", [
    ({"args": [], "cwd": "/"}, "process.args"),
    ({"args": ["sh"], "cwd": "rel"}, "process.cwd"),
    ({"args": ["sh"], "cwd": "/", "user": {"uid": -1, "gid": 0}}, "process.user.uid"),
    ("nope", "process"),
    ({"args": ["sh"], "cwd": "/", "execCPUAffinity": {"final": "0-"}},
     "process.execCPUAffinity.final"),
    ({"args": ["sh"], "cwd": "/", "execCPUAffinity": {"initial": 3}},
     "process.execCPUAffinity.initial"),
])
def test_a_bad_process_is_an_invalid_spec_naming_the_field(init, bad, field):
    with pytest.raises(InvalidSpec) as e:
        init.exec(bad, Stdio())
    assert e.value.field == field


def test_exec_runs_the_process_and_returns_its_pid(init, subreaper):
    r, w = os.pipe()
    try:
        pid = init.exec(process(["sh", "-c", "echo $$; echo err >&2; exit 3"]),
                        Stdio(stdout=w, stderr=w))
    finally:
        os.close(w)
    out = read_all(r).split()
    assert out == [str(pid), "err"]
    assert wait(pid) == 3


def test_a_missing_executable_fails_like_runc_and_leaves_no_process(init, subreaper):
    before = children()
    with pytest.raises(ContainerSetupError) as e:
        init.exec(process(["nope"]), Stdio())
    assert (e.value.step, str(e.value)) == ("exec lookup",
                                            'exec: "nope": executable file not found in $PATH')
    assert children() == before == {init.pid}


def test_exec_into_a_stopped_container_is_an_invalid_state(init):
    os.kill(init.pid, signal.SIGKILL)
    time.sleep(0.05)  # a zombie until the fixture reaps it: stopped all the same
    with pytest.raises(InvalidState) as e:
        init.exec(process(["true"]), Stdio())
    assert e.value.status == "stopped"


def test_exec_with_a_terminal_hands_back_its_master(init, subreaper):
    stdio = Stdio(stdout=1)  # ignored with a terminal
    pid = init.exec(process(["sh", "-c", "tty; exit 2"], terminal=True), stdio)
    master = stdio.console_fd
    try:
        assert wait(pid) == 2
        out = b""
        while True:
            try:
                chunk = os.read(master, 1024)
            except OSError as e:  # EIO once the slave has no opener left
                assert e.errno == errno.EIO
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
    assert out.decode().startswith("/dev/pts/")


# --- process.execCPUAffinity ------------------------------------------------------------------
def _cpus_allowed(text: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in text.splitlines()
                if line.startswith("Cpus_allowed_list:"))


@pytest.fixture
def two_cpus():
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs to tell affinities apart")
    return cpus


def _spy_affinity(monkeypatch, w):
    """execproc.set_affinity, reporting "<pid> <cpus or all>" on w (the children inherit it)."""
    from runtime import execproc
    real = execproc.set_affinity

    def spy(pid, cpus=None):
        cpus_text = "all" if cpus is None else ",".join(map(str, sorted(cpus)))
        os.write(w, f"{os.getpid()} {cpus_text}\n".encode())
        real(pid, cpus)
    monkeypatch.setattr(execproc, "set_affinity", spy)


def test_exec_cpu_affinity_initial_for_the_parent_final_for_the_process(init, subreaper,
                                                                        monkeypatch, two_cpus):
    """initial: what the runtime-side parent runs on, before the process joins the cgroup (the
    intermediate); final: the process's own, once inside."""
    first, last = two_cpus[0], two_cpus[-1]
    spy_r, spy_w = os.pipe()
    out_r, out_w = os.pipe()
    _spy_affinity(monkeypatch, spy_w)
    try:
        pid = init.exec(process(["cat", "/proc/self/status"],
                                execCPUAffinity={"initial": str(first), "final": str(last)}),
                        Stdio(stdout=out_w))
    finally:
        os.close(out_w)
        os.close(spy_w)
    status = read_all(out_r)
    assert wait(pid) == 0
    calls = [line.split() for line in read_all(spy_r).splitlines()]
    assert [cpus for _, cpus in calls] == [str(first), str(last)]
    assert calls[1][0] == str(pid) != calls[0][0]  # the process; before it, its parent
    assert _cpus_allowed(status) == str(last)


def test_exec_without_cpu_affinity_does_not_inherit_the_callers(init, subreaper, two_cpus):
    """As runc since 1.2: the process may run on every CPU its cgroup allows, whatever the
    affinity of the runtime (here narrowed to one CPU while it execs)."""
    out_r, out_w = os.pipe()
    try:
        os.sched_setaffinity(0, {two_cpus[0]})
        try:
            pid = init.exec(process(["cat", "/proc/self/status"]), Stdio(stdout=out_w))
        finally:
            os.sched_setaffinity(0, two_cpus)
    finally:
        os.close(out_w)
    status = read_all(out_r)
    assert wait(pid) == 0
    allowed = {int(c) for part in _cpus_allowed(status).split(",")
               for c in range(int(part.split("-")[0]), int(part.split("-")[-1]) + 1)}
    assert allowed == set(two_cpus)


@pytest.mark.parametrize("which", ["initial", "final"])
def test_exec_on_cpus_that_do_not_exist_names_the_field_and_leaves_no_process(init, subreaper,
                                                                             which):
    before = children()
    with pytest.raises(InvalidSpec) as e:
        init.exec(process(["true"], execCPUAffinity={which: "8191"}), Stdio())
    assert e.value.field == f"process.execCPUAffinity.{which}"
    assert "8191" in str(e.value)
    assert children() == before == {init.pid}
