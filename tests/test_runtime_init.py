"""runtime.init: the init's create-time and start-time sequences, on the fake syscall layer."""

import errno
import json
import os
import posix
import stat
import time

import pytest

from runtime import caps as C
from runtime import init as I
from runtime import spec as S
from runtime.errors import ContainerSetupError
from runtime.mounts import HostInfo, plan_rootfs
from runtime.specgen import DEFAULT_CAPS, default_config
from runtime.sys.consts import CLOSE_RANGE_CLOEXEC, CLOSE_RANGE_MAX
from runtime.sys.fake import FakeSys


@pytest.fixture
def rootfs(tmp_path):
    r = tmp_path / "rootfs"
    (r / "bin").mkdir(parents=True)
    for name, mode in (("sh", 0o755), ("data", 0o644)):
        (r / "bin" / name).write_text("")
        (r / "bin" / name).chmod(mode)
    return r


def config(**process):
    c = default_config(["sh", "-c", "true"], hostname="box")
    c["process"].update(process)
    return c


def make(rootfs, c, ops=None) -> I.InitConfig:
    spec = S.parse(c)
    if ops is None:
        ops = plan_rootfs(spec, str(rootfs), str(rootfs.parent), HostInfo())
    return I.InitConfig(spec, str(rootfs), ops, "/state")


def fake(oom="0\n") -> FakeSys:
    return FakeSys(files={"/proc/self/oom_score_adj": oom})


def test_prepare_sequence(rootfs):
    c = config(oomScoreAdj=100)
    c["domainname"] = "example.org"
    c["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
    f = fake()
    prepared = I.prepare(make(rootfs, c), f)
    assert prepared.exe == "/bin/sh"  # found through PATH inside the new root
    calls = f.calls
    first_mount = next(i for i, call in enumerate(calls) if call[0] == "mount")
    assert calls[:first_mount] == [
        ("umask", 0),
        ("sethostname", "box"),
        ("setdomainname", "example.org"),
        ("loopback_up",),
        ("write_file", "/proc/sys/net/ipv4/ip_forward", "1"),
    ]
    assert calls[-1] == ("setrlimit", "RLIMIT_NOFILE", 1024, 1024)
    assert ("pivot_root", ".", ".") in calls
    assert not [call for call in calls if "/proc/self/oom_score_adj" in call]


def test_the_oom_score_is_set_before_the_namespaces(rootfs):
    # by the intermediate, which still has the privilege to lower it (a user namespace
    # would take that away); the init inherits it
    f = fake()
    I.before_namespaces(None, S.parse(config(oomScoreAdj=-100)).process, f)
    assert f.calls == [("write_file", "/proc/self/oom_score_adj", "-100")]


def test_prepare_skips_what_the_spec_does_not_ask(rootfs):
    c = config()
    c["hostname"] = None
    c["linux"]["namespaces"] = [{"type": "mount"}, {"type": "network", "path": "/run/netns/x"}]
    c["process"]["rlimits"] = []
    f = fake()
    I.prepare(make(rootfs, c, ops=[]), f)
    assert f.calls == [("umask", 0)]  # joined netns: its lo is not ours to touch


def test_oom_score_adj_equal_to_the_current_one_is_not_written(rootfs):
    # Lowering it needs CAP_SYS_RESOURCE, which a host may lack: rewriting the same value
    # must not turn into a failure.
    f = fake(oom="-500\n")
    I.before_namespaces(None, S.parse(config(oomScoreAdj=-500)).process, f)
    assert not [c for c in f.calls if c[0] == "write_file"]


def test_setup_failures_are_typed(rootfs):
    f = fake()
    f.fail[("sethostname", "box")] = errno.EPERM
    with pytest.raises(ContainerSetupError) as e:
        I.prepare(make(rootfs, config(), ops=[]), f)
    assert e.value.step == "hostname" and "Operation not permitted" in str(e.value)


@pytest.mark.parametrize("name, path_env, cwd, found", [
    ("sh", "/usr/bin:/bin", "/", "/bin/sh"),
    ("/bin/sh", None, "/", "/bin/sh"),
    ("./sh", None, "/bin", "/bin/./sh"),  # joined, not normalised: the kernel resolves it
    ("sh", "bin", "/", "/bin/sh"),  # a relative PATH entry is relative to cwd, as in Go
])
def test_lookup_finds(rootfs, name, path_env, cwd, found):
    f = FakeSys()
    f.root = str(rootfs)  # as after pivot_root
    assert I.lookup_executable(name, path_env, cwd, f) == found


@pytest.mark.parametrize("name, path_env, message", [
    ("foo", "/usr/bin:/bin", 'exec: "foo": executable file not found in $PATH'),
    ("sh", None, 'exec: "sh": executable file not found in $PATH'),  # no PATH: like runc
    ("data", "/bin", 'exec: "data": executable file not found in $PATH'),  # not executable
    ("/bin/foo", "/bin", 'exec: "/bin/foo": stat /bin/foo: no such file or directory'),
    ("/bin/data", "/bin", 'exec: "/bin/data": permission denied'),
    ("/bin", "/bin", 'exec: "/bin": permission denied'),
])
def test_lookup_fails_like_runc(rootfs, name, path_env, message):
    f = FakeSys()
    f.root = str(rootfs)
    with pytest.raises(ContainerSetupError) as e:
        I.lookup_executable(name, path_env, "/", f)
    assert (e.value.step, str(e.value), e.value.path) == ("exec lookup", message, name)


def test_missing_executable_fails_prepare(rootfs):
    with pytest.raises(ContainerSetupError) as e:
        I.prepare(make(rootfs, config(args=["nope"])), fake())
    assert e.value.step == "exec lookup"
    assert str(e.value) == 'exec: "nope": executable file not found in $PATH'


def test_capabilities_the_runtime_lacks_fail_create(rootfs):
    c = config()
    c["process"]["capabilities"]["permitted"].append("CAP_SYS_RESOURCE")
    c["process"]["capabilities"]["effective"].append("CAP_SYS_RESOURCE")
    f = fake()
    f.caps = (0, C.all_mask() & ~(1 << C.NUMBERS["CAP_SYS_RESOURCE"]), 0)
    with pytest.raises(ContainerSetupError) as e:
        I.prepare(make(rootfs, c, ops=[]), f)
    assert e.value.step == "capabilities" and "CAP_SYS_RESOURCE" in str(e.value)


def test_effective_must_be_permitted(rootfs):
    c = config()
    c["process"]["capabilities"]["effective"].append("CAP_SYS_ADMIN")
    with pytest.raises(ContainerSetupError, match="CAP_SYS_ADMIN"):
        I.prepare(make(rootfs, c, ops=[]), fake())


def test_finish_sequence(rootfs):
    c = config(user={"uid": 1000, "gid": 100, "umask": 0o027, "additionalGids": [10, 20]},
               env=["PATH=/bin", "A=b=c"], cwd="/work")
    caps = c["process"]["capabilities"]
    caps["inheritable"] = ["CAP_KILL", "CAP_CHOWN"]
    caps["ambient"] = ["CAP_KILL", "CAP_SYS_ADMIN"]  # SYS_ADMIN is not permitted: skipped
    cfg = make(rootfs, c, ops=[])
    f = FakeSys()
    I.finish(cfg, f, I.Prepared("/bin/sh", {"PATH": "/bin", "A": "b=c"}))
    mask = C.to_mask(DEFAULT_CAPS, "x")
    inh = C.to_mask(["CAP_KILL", "CAP_CHOWN"], "x")
    dropped = [("capbset_drop", n) for n in range(C.last_cap() + 1) if not mask >> n & 1]
    assert f.calls == [
        ("close_range", 3, CLOSE_RANGE_MAX, CLOSE_RANGE_CLOEXEC),
        *dropped,
        ("set_keepcaps", True),
        ("setgroups", [10, 20]),
        ("setresgid", 100),
        ("setresuid", 1000),
        ("capset", mask, mask, inh),
        ("ambient_raise", C.NUMBERS["CAP_KILL"]),
        ("set_no_new_privs",),
        ("umask", 0o027),
        ("chdir", "/work"),
        ("reset_signals",),
        ("execve", "/bin/sh", ["sh", "-c", "true"], {"PATH": "/bin", "A": "b=c"}),
    ]


def test_finish_without_capabilities_leaves_them_alone(rootfs):
    c = config(noNewPrivileges=False)
    del c["process"]["capabilities"]
    f = FakeSys()
    I.finish(make(rootfs, c, ops=[]), f, I.Prepared("/bin/sh", {"PATH": "/bin"}))
    assert [call[0] for call in f.calls] == ["close_range", "setgroups", "setresgid", "setresuid",
                                            "umask", "chdir", "reset_signals", "execve"]
    assert ("umask", 0o022) in f.calls


def test_finish_passes_on_the_preserved_fds_and_no_other(rootfs):
    """--preserve-fds 2: fds 3 and 4 survive the exec (inheritable even if the caller left
    them close-on-exec); everything from 5 up is marked close-on-exec."""
    c = config(noNewPrivileges=False)
    del c["process"]["capabilities"]
    cfg = make(rootfs, c, ops=[])
    cfg.preserve_fds = 2
    f = FakeSys()
    I.finish(cfg, f, I.Prepared("/bin/sh", {"PATH": "/bin"}))
    assert f.calls[:3] == [("close_range", 5, CLOSE_RANGE_MAX, CLOSE_RANGE_CLOEXEC),
                           ("set_inheritable", 3), ("set_inheritable", 4)]


def test_rlimit_infinity_is_passed_as_python_spells_it(rootfs):
    c = config(rlimits=[{"type": "RLIMIT_CORE", "soft": 2**64 - 1, "hard": 2**64 - 1}])
    f = fake()
    I.prepare(make(rootfs, c, ops=[]), f)
    assert f.calls[-1] == ("setrlimit", "RLIMIT_CORE", -1, -1)


def test_fake_and_real_syscall_layers_have_the_same_interface():
    from runtime.sys.linux import Linux
    public = lambda cls: {n for n in vars(cls) if not n.startswith("_")}  # noqa: E731
    assert public(Linux) <= public(FakeSys)
    assert not (public(FakeSys) - public(Linux)) - {"map", "ops"}


def test_real_stat_is_used_for_lookup(rootfs):
    st = os.stat(rootfs / "bin/sh")
    assert stat.S_IMODE(st.st_mode) & 0o111


def test_home_comes_from_the_containers_passwd_when_env_lacks_it(tmp_path):
    f = FakeSys(files={"/etc/passwd": "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"})
    assert I.home_directory(1000, f) == "/home/app"
    assert I.home_directory(0, f) == "/root"
    assert I.home_directory(4242, f) == "/"
    empty = FakeSys()
    empty.root = str(tmp_path)  # a rootfs with no /etc/passwd
    assert I.home_directory(0, empty) == "/"


@pytest.mark.parametrize("nnp", [True, False])
def test_seccomp_goes_last_with_no_new_privs_else_before_privileges_drop(rootfs, nnp):
    c = config(noNewPrivileges=nnp, user={"uid": 1000, "gid": 1000})
    f = FakeSys()
    cfg = make(rootfs, c, ops=[])
    cfg.seccomp = I.SeccompFilter(b"\0" * 8, 4)
    I.finish(cfg, f, I.Prepared("/bin/sh", {}))
    names = [call[0] for call in f.calls]
    assert names.count("seccomp_install") == 1
    assert ("seccomp_install", b"\0" * 8, 4) in f.calls
    if nnp:  # as late as possible: only execve runs under it
        assert names[-2:] == ["seccomp_install", "execve"]
        assert names.index("set_no_new_privs") < names.index("seccomp_install")
    else:  # needs CAP_SYS_ADMIN: before the bounding set, ids and capabilities change
        assert names[1] == "seccomp_install"
    # Inherited fds are marked close-on-exec before any filter: a profile that predates
    # close_range (runtime-tools' default) would refuse it, and the container never started.
    assert names[0] == "close_range"
    assert names.index("close_range") < names.index("seccomp_install")


def test_no_seccomp_no_install(rootfs):
    f = FakeSys()
    I.finish(make(rootfs, config(), ops=[]), f, I.Prepared("/bin/sh", {}))
    assert not f.ops("seccomp_install")


def test_close_range_refused_falls_back_to_marking_proc_self_fd(monkeypatch):
    """A kernel without close_range, or a filter answering ENOSYS/EPERM: every fd >= first in
    /proc/self/fd is marked close-on-exec instead (runc's CloseExecFrom), nothing is closed."""
    import errno

    from runtime.sys import linux as L

    r, w = os.pipe()
    try:
        os.set_inheritable(r, True)
        os.set_inheritable(w, True)
        monkeypatch.setattr(L._libc, "syscall", lambda *a: -1)
        monkeypatch.setattr(L.ffi, "get_errno", lambda: errno.ENOSYS)
        L.Linux().close_range(min(r, w), CLOSE_RANGE_MAX, CLOSE_RANGE_CLOEXEC)
        assert not os.get_inheritable(r) and not os.get_inheritable(w)
        os.fstat(r)  # still open
        monkeypatch.setattr(L.ffi, "get_errno", lambda: errno.EINVAL)
        with pytest.raises(OSError):
            L.Linux().close_range(min(r, w), CLOSE_RANGE_MAX, CLOSE_RANGE_CLOEXEC)
    finally:
        os.close(r)
        os.close(w)


def test_read_file_reads_to_the_end(tmp_path):
    """A /proc file comes a page per read(2): mountinfo on a real node is far past one read
    (a truncated one made the rootfs's mount unfindable and pivot_root fail)."""
    from runtime.sys import linux as L

    big = tmp_path / "big"
    text = "".join(f"{i} line of a long mount table\n" for i in range(20000))  # ~600 KB
    big.write_text(text)
    assert L.Linux().read_file(str(big)) == text
    with open("/proc/self/mountinfo") as f:
        first = f.readline()
    assert L.Linux().read_file("/proc/self/mountinfo").startswith(first)


def test_who_joins_the_cgroup(rootfs):
    """v1: the init moves itself (through "tasks": no RCU grace period); v2: the caller moves
    it while it sets up (the move's RCU wait then overlaps that work); neither where the init
    must already be inside: a new cgroup namespace is rooted where the unsharing process is,
    and createContainer hooks run from the init (the intermediate joins first)."""
    from runtime import launch

    class V1:
        version = 1

    class V2:
        version = 2

    def cfg_with(manager, mutate=None):
        c = config()
        if mutate:
            mutate(c)
        cfg = make(rootfs, c, ops=[])
        cfg.cgroup = manager
        return cfg

    def who(cfg):
        return launch.init_joins_cgroup(cfg), launch.caller_joins_cgroup(cfg)

    assert who(cfg_with(V1())) == (True, False)
    assert who(cfg_with(V2())) == (False, True)
    for m in (V1(), V2()):
        assert who(cfg_with(m, lambda c: c["linux"]["namespaces"].append({"type": "cgroup"}))) \
            == (False, False)
        assert who(cfg_with(m, lambda c: c.setdefault("hooks", {}).update(
            createContainer=[{"path": "/bin/true"}]))) == (False, False)
    assert who(cfg_with(None)) == (False, False)


def test_when_the_cgroup_is_made_after_the_fork(rootfs):
    """launch() creates the cgroup while the children set up whenever the caller moves the
    init (not the intermediate, which joins first thing); a cgroup mount waits for it at the
    plan's AwaitCgroup op."""
    from runtime import launch

    def cfg_with(mutate=None):
        c = config()
        c["mounts"] = [m for m in c.get("mounts", []) if m.get("type") != "cgroup"]
        if mutate:
            mutate(c)
        cfg = make(rootfs, c, ops=[])
        cfg.cgroup = object()
        return cfg

    assert launch.setup_cgroup_after_fork(cfg_with())
    assert launch.setup_cgroup_after_fork(cfg_with(lambda c: c["mounts"].append(
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup"})))
    assert not launch.setup_cgroup_after_fork(cfg_with(
        lambda c: c["linux"]["namespaces"].append({"type": "cgroup"})))


@pytest.mark.parametrize("first", ["hooks", "netdevices"])
def test_the_init_joins_its_cgroup_whichever_message_brings_its_pid(rootfs, monkeypatch, first):
    """The init may ask for the prestart hooks (or its network devices) before the intermediate
    reported its pid: the caller reads the pid then, and must still move the init into the
    cgroup - before it runs the hooks for it."""
    import _socket
    import time

    from runtime import child, launch, netdev

    c = config()
    if first == "hooks":
        c["hooks"] = {"prestart": [{"path": "/bin/true"}]}
    else:
        c["linux"]["netDevices"] = {"dummy0": {}}
    cfg = make(rootfs, c, ops=[])
    events = []
    monkeypatch.setattr(launch, "_join", lambda cgroup, pid: events.append(("join", pid)))
    monkeypatch.setattr(netdev, "move_in", lambda pid, devs: events.append(("netdev", pid)))
    mid = os.fork()
    if mid == 0:
        os._exit(0)  # the intermediate: reported, then gone
    init = os.fork()
    if init == 0:
        time.sleep(10)
        os._exit(0)
    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    kids = child.Children()
    kids.mid = mid
    try:
        for msg in ({"type": first}, {"type": "pid", "pid": init}, {"type": "ready"}):
            child.send(theirs, msg)
        launch._await_ready(ours, kids, 5.0, cfg.spec, FakeSys(),
                            lambda pid: events.append(("hooks", pid)), cgroup="the cgroup")
    finally:
        os.kill(init, 9)
        os.waitpid(init, 0)
        kids.close()
        ours.close()
        theirs.close()
    assert events == [("join", init), ("hooks" if first == "hooks" else "netdev", init)]


def test_the_caller_answers_the_inits_cgroup_request(rootfs):
    """An init about to bind its cgroup's directories, or done with its mounts, asks for its
    cgroup; launch's wait() has made it before it reads the children's messages, so
    _await_ready answers at once (v2: it moved the init by pid already)."""
    import _socket

    from runtime import child, launch

    cfg = make(rootfs, config(), ops=[])
    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    kids = child.Children()
    kids.start = 1  # as if the pid message had brought the init's start time
    try:
        child.send(theirs, {"type": "pid", "pid": os.getpid()})
        child.send(theirs, {"type": "cgroup"})
        child.send(theirs, {"type": "ready"})
        launch._await_ready(ours, kids, 5.0, cfg.spec, FakeSys(), None)
        assert json.loads(theirs.recv(4096)) == {"type": "cgroup-done"}
    finally:
        ours.close()
        theirs.close()


@pytest.mark.parametrize("order", [("pid", "cgroup", "ready"), ("ready", "pid")])
def test_the_caller_is_told_the_inits_pid_once_as_soon_as_it_is_known(rootfs, order):
    """on_pid runs when the pid arrives, before the messages after it are answered, and once
    (a second fork's init may be ready before its intermediate reports it)."""
    import _socket

    from runtime import child, launch, proc

    cfg = make(rootfs, config(), ops=[])
    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    kids = child.Children()
    told = []

    def on_pid(pid, start):
        told.append((pid, start))
        theirs.setblocking(False)
        try:  # nothing answered yet: the cgroup request after the pid is still to come
            assert theirs.recv(4096) is None
        except BlockingIOError:
            told.append("nothing answered yet")
        theirs.setblocking(True)
    try:
        for kind in order:
            child.send(theirs, {"type": kind, **({"pid": os.getpid()} if kind == "pid" else {})})
        start = launch._await_ready(ours, kids, 5.0, cfg.spec, FakeSys(), None, on_pid=on_pid)
        assert start == proc.start_time(os.getpid())
        assert told == [(os.getpid(), start), "nothing answered yet"]
    finally:
        kids.close()
        ours.close()
        theirs.close()


def test_a_failure_to_take_the_pid_fails_the_wait(rootfs):
    import _socket

    from runtime import child, launch

    cfg = make(rootfs, config(), ops=[])
    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    kids = child.Children()

    def on_pid(pid, start):
        raise OSError(28, "No space left on device")
    try:
        child.send(theirs, {"type": "pid", "pid": os.getpid()})
        child.send(theirs, {"type": "ready"})
        with pytest.raises(OSError, match="No space"):
            launch._await_ready(ours, kids, 5.0, cfg.spec, FakeSys(), None, on_pid=on_pid)
    finally:
        kids.close()
        ours.close()
        theirs.close()


def test_a_v1_init_gets_the_tasks_fds_to_join_through_with_the_answer(rootfs, tmp_path):
    """init_joins_cgroup: the answer carries one fd per hierarchy directory, on "tasks"; the
    init's join_self writes "0" through each (itself: no grace period)."""
    import _socket

    from runtime import cgroups, child, ctrcgroup, launch

    dirs = [tmp_path / "memory" / "c1", tmp_path / "cpu,cpuacct" / "c1"]
    for d in dirs:
        d.mkdir(parents=True)
        (d / "tasks").write_text("")
    h = cgroups.Hierarchy("v1", {c: cgroups.Mount(str(tmp_path / c))
                                 for c in ("memory", "cpu", "cpuacct")})
    m = cgroups.V1Manager({"memory": str(dirs[0]), "cpu": str(dirs[1]),
                           "cpuacct": str(dirs[1])}, h)
    cfg = make(rootfs, config(), ops=[])
    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    kids = child.Children()
    kids.start = 1
    before = set(os.listdir("/proc/self/fd"))
    try:
        child.send(theirs, {"type": "pid", "pid": os.getpid()})
        child.send(theirs, {"type": "cgroup"})
        child.send(theirs, {"type": "ready"})
        join = ctrcgroup.open_join(m)  # as launch's wait() opens them, before the init asks
        launch._await_ready(ours, kids, 5.0, cfg.spec, FakeSys(), None, self_join=join)
        kids.close()  # its pidfd
        for fd in join[0]:  # what wait() does once _await_ready returns
            os.close(fd)
        assert set(os.listdir("/proc/self/fd")) == before
        data, fds = child._recv_with_fds(theirs, child.MAX_FDS)
        reply = json.loads(data)
        assert reply == {"type": "cgroup-done", "paths": [str(d / "tasks") for d in dirs]}
        assert len(fds) == 2
        ctrcgroup.join_self((fds, reply["paths"]))
        assert [(d / "tasks").read_text() for d in dirs] == ["0", "0"]
        assert set(os.listdir("/proc/self/fd")) == before
    finally:
        ours.close()
        theirs.close()


def test_request_returns_the_answers_fds_and_closes_them_on_a_wrong_answer():
    import _socket

    from runtime import child

    for answer, ok in (("cgroup-done", True), ("something-else", False)):
        ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
        r, w = os.pipe()
        try:
            child.send(theirs, {"type": answer}, r, w)  # queued before the request is sent
            before = open_fds()
            if ok:
                reply, fds = child.request(ours, {"type": "cgroup"}, "cgroup-done", "cgroup",
                                           "no")
                assert reply == {"type": "cgroup-done"}
                assert len(fds) == 2 and open_fds() == before | set(fds)
                for fd in fds:
                    os.close(fd)
            else:
                with pytest.raises(ContainerSetupError):
                    child.request(ours, {"type": "cgroup"}, "cgroup-done", "cgroup", "no")
                assert open_fds() == before
            assert json.loads(theirs.recv(4096)) == {"type": "cgroup"}
        finally:
            for fd in (r, w):
                os.close(fd)
            ours.close()
            theirs.close()


def open_fds() -> set[int]:
    """The fds open in this process (without one of its own, as listing /proc/self/fd has)."""
    out = set()
    for fd in range(256):
        try:
            os.fstat(fd)
            out.add(fd)
        except OSError:
            pass
    return out


def test_the_init_awaits_the_cgroup_right_before_binding_it(rootfs):
    from runtime import mounts as M
    binds = [M.Mount("/sys/fs/cgroup/cpu/c1", "/sys/fs/cgroup/cpu", None, M.MS_BIND, create="dir")]
    ops = [M.Mount("tmpfs", "/sys/fs/cgroup", "tmpfs", 0), M.AwaitCgroup(), *binds]
    cfg = make(rootfs, config(), ops=ops)
    f = fake()
    I.prepare(cfg, f, await_cgroup=lambda: f.calls.append(("await_cgroup",)))
    names = [c[0] for c in f.calls]
    at = names.index("await_cgroup")
    mounts = [c for c in f.calls if c[0] == "mount"]
    assert f.calls.index(mounts[0]) < at < f.calls.index(mounts[1])
    assert mounts[1][1] == "/sys/fs/cgroup/cpu/c1"
    f = fake()
    I.prepare(cfg, f)  # made before the fork: nothing to wait for
    assert "await_cgroup" not in [c[0] for c in f.calls]


def test_without_a_cgroup_mount_the_init_joins_after_its_mounts_before_its_limits(rootfs):
    """No AwaitCgroup op: prepare() still awaits the cgroup (and joins it, launch's
    await_cgroup), after the mounts and before anything the cgroup may refuse or constrain:
    the rlimits, the scheduler (an RT policy needs the cgroup's RT budget)."""
    from runtime import mounts as M
    c = config(rlimits=[{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 100}],
               scheduler={"policy": "SCHED_OTHER", "nice": 1})
    cfg = make(rootfs, c, ops=[M.Mount("tmpfs", "/tmp", "tmpfs", 0)])
    f = fake()
    I.prepare(cfg, f, await_cgroup=lambda: f.calls.append(("await_cgroup",)))
    names = [n for n, *_ in f.calls]
    assert names.count("await_cgroup") == 1
    at = names.index("await_cgroup")
    assert names.index("mount") < at < names.index("setrlimit") < names.index("sched_setattr")


def test_the_init_joins_a_session_keyring_of_its_own_first(rootfs):
    """runc's default: a keyring named after the container, searchable by its user, joined
    before anything else of the setup."""
    cfg = make(rootfs, config(), ops=[])
    cfg.keyring = "_ses.c1"
    f = fake()
    I.prepare(cfg, f)
    assert f.calls[:2] == [("join_session_keyring", "_ses.c1"), ("keyring_add_search", 0x1234)]
    cfg.keyring = None  # --no-new-keyring
    f = fake()
    I.prepare(cfg, f)
    assert not [c for c in f.calls if "keyring" in c[0]]


def test_a_kernel_without_keyrings_is_no_error_but_a_refusal_fails_create(rootfs):
    cfg = make(rootfs, config(), ops=[])
    cfg.keyring = "_ses.c1"
    f = fake()
    f.fail[("join_session_keyring", "_ses.c1")] = errno.ENOSYS
    I.prepare(cfg, f)  # as runc: keyrings are best effort where the kernel has none
    f = fake()
    f.fail[("join_session_keyring", "_ses.c1")] = errno.EDQUOT
    with pytest.raises(ContainerSetupError, match="unable to join session keyring _ses.c1"):
        I.prepare(cfg, f)


def test_the_runtime_hooks_find_the_init_in_its_cgroup(rootfs):
    """prestart/createRuntime hooks get the init's pid, and may set its cgroup up by it (as
    NVIDIA's prestart hook does): the init joins before it asks the caller to run them."""
    import _socket
    import select

    from runtime import child, launch

    c = config()
    c["hooks"] = {"prestart": [{"path": "/bin/true"}]}
    cfg = make(rootfs, c, ops=[])
    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    events = []
    try:
        child.send(theirs, {"type": "hooks-done"})  # the caller's answer, queued
        launch._before_pivot(cfg, ours, 1, lambda: events.append(
            ("cgroup", "nothing asked yet" if not select.select([theirs], [], [], 0)[0]
             else "hooks asked first")))
        assert events == [("cgroup", "nothing asked yet")]
        assert json.loads(theirs.recv(4096)) == {"type": "hooks"}
        events.clear()
        launch._before_pivot(make(rootfs, config(), ops=[]), ours, 1,
                             lambda: events.append("cgroup"))
        assert events == []  # no runtime hooks: prepare() awaits it after the mounts
    finally:
        ours.close()
        theirs.close()


def test_who_makes_the_pid_namespace(rootfs):
    """The caller unshares a new pid namespace for its children, so that its one child is
    the init, except where the intermediate must make it (a user namespace must own it, a
    time namespace's offsets come before its first process) or joins it (a path)."""
    from runtime import launch

    def spec_with(*extra, pid=True):
        c = config()
        ns = [n for n in c["linux"]["namespaces"] if n["type"] != "pid"]
        if pid:
            ns.append(pid if isinstance(pid, dict) else {"type": "pid"})
        c["linux"]["namespaces"] = ns + list(extra)
        return S.parse(c) if not extra or extra[0]["type"] != "user" else None

    assert launch.caller_unshares_pid(spec_with())
    assert not launch.caller_unshares_pid(spec_with(pid=False))
    assert not launch.caller_unshares_pid(spec_with(pid={"type": "pid", "path": "/proc/1/ns/pid"}))
    assert not launch.caller_unshares_pid(spec_with({"type": "time"}))
    c = config()
    c["linux"]["namespaces"].append({"type": "user"})
    c["linux"]["uidMappings"] = c["linux"]["gidMappings"] = [
        {"containerID": 0, "hostID": 100000, "size": 65536}]
    assert not launch.caller_unshares_pid(S.parse(c))


def test_fork_in_new_pid_ns_order_and_failures(monkeypatch):
    from runtime import launch
    from runtime.sys.consts import CLONE_NEWPID

    calls = []

    class Sys:
        fail = None

        def unshare(self, flags):
            calls.append(("unshare", flags))
            if self.fail:
                raise OSError(self.fail, os.strerror(self.fail))

        def setns_fd(self, fd, nstype):
            os.fstat(fd)  # still open
            calls.append(("setns", nstype))

    def fork_child(body, after=None):
        calls.append(("fork",))
        if after is not None:
            after(4242)
        return 4242
    monkeypatch.setattr(launch, "fork_child", fork_child)
    before = open_fds()
    assert launch._fork_in_new_pid_ns(Sys())(lambda: 0) == 4242
    assert calls == [("unshare", CLONE_NEWPID), ("fork",), ("setns", CLONE_NEWPID)]
    calls.clear()  # keep_apart's move runs at the fork, before the setns
    assert launch._fork_in_new_pid_ns(Sys(), lambda pid: calls.append(("apart", pid)))(
        lambda: 0) == 4242
    assert calls == [("unshare", CLONE_NEWPID), ("fork",), ("apart", 4242),
                     ("setns", CLONE_NEWPID)]
    assert open_fds() == before

    calls.clear()
    s = Sys()
    s.fail = errno.EPERM
    with pytest.raises(ContainerSetupError) as e:
        launch._fork_in_new_pid_ns(s)(lambda: 0)
    assert e.value.step == "namespaces" and calls == [("unshare", CLONE_NEWPID)]
    assert open_fds() == before

    def no_fork(body, after=None):
        raise BlockingIOError(errno.EAGAIN, "fork")
    monkeypatch.setattr(launch, "fork_child", no_fork)
    calls.clear()
    with pytest.raises(BlockingIOError):
        launch._fork_in_new_pid_ns(Sys())(lambda: 0)
    assert calls == [("unshare", CLONE_NEWPID), ("setns", CLONE_NEWPID)]  # undone all the same
    assert open_fds() == before


def test_fork_child_runs_after_in_the_caller_only_before_it_returns():
    from runtime import child

    r, w = os.pipe()
    try:
        pid = child.fork_child(lambda: 0, lambda p: os.write(w, b"%d %d;" % (p, os.getpid())))
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        os.close(w)
        w = None
        assert os.read(r, 100) == b"%d %d;" % (pid, os.getpid())
    finally:
        os.close(r)
        if w is not None:
            os.close(w)


@pytest.fixture
def affinity(monkeypatch):
    """Our affinity is {0, 1, 2} (a set the test may shrink); posix.sched_setaffinity calls are
    recorded, the n-th raising fails[n] when that is an exception."""
    calls, fails, allowed = [], [], {0, 1, 2}

    def setaffinity(pid, cpus):
        calls.append((pid, set(cpus)))
        err = fails.pop(0) if fails else None
        if err is not None:
            raise err
    monkeypatch.setattr(posix, "sched_getaffinity", lambda pid: set(allowed))
    monkeypatch.setattr(posix, "sched_setaffinity", setaffinity)
    return calls, fails, allowed


def test_keep_apart_narrows_the_childs_affinity_off_our_cpu_then_restores_it(affinity):
    """The kernel moves a queued child only when its CPU leaves its affinity: narrowed to every
    CPU but ours, then restored at once to what it inherited (ours)."""
    from runtime import child

    calls, _, _ = affinity
    sys_ = FakeSys()
    sys_.cpu = 1
    move = child.keep_apart(sys_)  # read before the fork
    assert calls == []
    move(4321)  # right after it
    assert calls == [(4321, {0, 2}), (4321, {0, 1, 2})]


def test_keep_apart_does_nothing_on_one_cpu_or_off_our_affinity(affinity):
    from runtime import child

    calls, _, allowed = affinity
    sys_ = FakeSys()
    sys_.cpu = 7  # our affinity changed under us: no CPU of ours to keep the child off
    assert child.keep_apart(sys_) is None
    allowed.intersection_update({0})
    sys_.cpu = 0
    assert child.keep_apart(sys_) is None  # one CPU: nowhere else to go
    assert calls == []


def test_keep_apart_ignores_every_failure(affinity, monkeypatch):
    """It runs between the fork and the caller's record of the child, and is only about
    speed: when narrowing fails the child is left as it was, and a failed restore is undone
    by launch's set_affinity once the init is ready; reading our own affinity may fail too."""
    from runtime import child

    calls, fails, _ = affinity
    fails[:] = [OSError(errno.EINVAL, "Invalid argument")]
    child.keep_apart(FakeSys())(4321)
    assert calls == [(4321, {1, 2})]  # no restore: nothing changed
    calls.clear()
    for err in (ProcessLookupError(errno.ESRCH, "No such process"),
                OSError(errno.EINVAL, "Invalid argument")):
        fails[:] = [None, err]
        child.keep_apart(FakeSys())(4321)
    assert len(calls) == 4

    def no_affinity(pid):
        raise OSError(errno.EPERM, "Operation not permitted")
    monkeypatch.setattr(posix, "sched_getaffinity", no_affinity)
    assert child.keep_apart(FakeSys()) is None


def test_keep_apart_leaves_a_real_childs_affinity_as_it_was():
    """On the running kernel: whatever CPU the child was queued on, it ends with its caller's
    affinity (here narrowed to two CPUs, so a change would show)."""
    from runtime import child
    from runtime.sys.linux import LINUX

    ours = os.sched_getaffinity(0)
    if len(ours) < 2:
        pytest.skip("one CPU: keep_apart has nothing to do")
    pid = os.fork()
    if pid == 0:
        time.sleep(5)
        os._exit(0)
    try:
        child.keep_apart(LINUX)(pid)
        assert os.sched_getaffinity(pid) == ours
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def test_launch_moves_the_child_off_its_cpu_then_resets_the_inits_affinity(rootfs, monkeypatch):
    """The cgroup setup after the fork is CPU work that should run beside the child's; once
    the init is ready (in its cgroup), its affinity is all its cpuset allows, not ours."""
    from runtime import launch

    class V1:
        version = 1

    class Kids:
        mid, pid = 4321, 99

        def take_console(self):
            return None

    cfg = make(rootfs, config(), ops=[])
    cfg.cgroup = V1()
    assert launch.setup_cgroup_after_fork(cfg)
    for fail in (False, True):
        events, pipe = [], os.pipe()

        def ready(*a, fail=fail):
            events.append(("ready", a[7]))  # self_join: the fds, open by then
            if fail:
                raise ContainerSetupError("init", "it died")
            return 7
        monkeypatch.setattr(launch, "keep_apart",
                            lambda sys: lambda pid: events.append(("apart", pid)))

        def fork_child(body, after=None):
            events.append("fork")
            after(4321)  # first thing after the fork, in the caller
            return 4321
        monkeypatch.setattr(launch, "fork_child", fork_child)
        monkeypatch.setattr(launch, "_fork_in_new_pid_ns",
                            lambda sys, after=None: lambda body: fork_child(body, after))
        monkeypatch.setattr(launch.ctrcgroup, "setup", lambda cgroup, spec: events.append("setup"))
        monkeypatch.setattr(launch.ctrcgroup, "open_join",
                            lambda cgroup: events.append("open") or ([pipe[1]], ["tasks"]))
        monkeypatch.setattr(launch, "_await_ready", ready)
        monkeypatch.setattr(launch, "set_affinity", lambda pid, cpus=None: events.append(
            ("affinity", pid, cpus)))
        monkeypatch.setattr(launch, "spawn",
                            lambda intermediate, wait, fork: fork(None) and wait(None, Kids()))
        try:
            if fail:
                with pytest.raises(ContainerSetupError):
                    launch.launch(cfg, (None, None, None), FakeSys())
            else:
                assert launch.launch(cfg, (None, None, None), FakeSys()) == (99, 7, None)
            # the init's join fds are opened before it asks, and closed once it is ready
            want = ["fork", ("apart", 4321), "setup", "open", ("ready", ([pipe[1]], ["tasks"]))]
            assert events == want + ([] if fail else [("affinity", 99, None)])
            assert os.read(pipe[0], 1) == b""  # no writer left: closed, even on a failure
        finally:
            os.close(pipe[0])


def test_all_cpus_are_the_kernels_possible_ones():
    from runtime import child

    with open("/sys/devices/system/cpu/possible") as f:
        last = int(f.read().strip().split(",")[-1].split("-")[-1])
    assert child.all_cpus() == range(last + 1)
    assert os.sched_getaffinity(0) <= set(child.all_cpus())


def test_an_intermediate_that_is_the_init_is_tracked_by_the_pid_fork_gave():
    """Its own getpid() is 1 in a new pid namespace (launch.caller_unshares_pid): the caller
    takes the pid fork() returned, never one the child reports."""
    from runtime import child, proc

    kids = child.Children()
    kids.mid = os.getpid()  # as fork() would have returned it
    try:
        assert kids.take({"type": "pid", "self": True, "pid": 1})
        assert (kids.pid, kids.mid) == (os.getpid(), None)  # not reaped by launch: it is the init
        assert kids.start == proc.start_time(os.getpid())
    finally:
        kids.close()
