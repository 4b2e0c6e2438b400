"""Root smoke tests of the engine against the real kernel: a busybox rootfs, a containerd-like
config, create/start/wait/delete. Skipped unless running as root."""

import ctypes
import json
import os
import shutil
import signal
import statistics
import time

import pytest
from test_runtime_init import open_fds

from runtime.container import Engine, Stdio
from runtime.errors import ContainerSetupError, InvalidState
from runtime.specgen import default_config

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "echo", "cat", "hostname", "id", "ls", "grep", "true", "sleep", "read")
DEV = {"fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin",
       "stdout", "tty", "urandom", "zero"}


@pytest.fixture(scope="module", autouse=True)
def subreaper():
    # The init is re-parented to us when the intermediate exits; as the shim does, we must be
    # a subreaper to reap it (pytest stays one afterwards, which is harmless).
    if os.geteuid() == 0:
        assert ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0


@pytest.fixture
def env(tmp_path):
    if not os.path.exists(BUSYBOX):
        pytest.skip("no static busybox")
    rootfs = tmp_path / "bundle" / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy(BUSYBOX, rootfs / "bin/busybox")
    for name in APPLETS:
        os.link(rootfs / "bin/busybox", rootfs / "bin" / name)
    engine = Engine(str(tmp_path / "state"))
    yield engine, tmp_path / "bundle"
    for cid in engine.list():  # a failed test must not leave a container running
        c = engine.load(cid)
        c.delete(force=True)
        _reap(c.pid)


def _reap(pid: int, timeout: float = 10.0) -> int | None:
    """Exit code of our child `pid`; a test must fail, not hang, if it does not exit."""
    import select
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    try:
        if not select.select([fd], [], [], timeout)[0]:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"process {pid} did not exit within {timeout}s")
    finally:
        os.close(fd)
    try:
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    except ChildProcessError:
        return None


def write_config(bundle, args, mutate=None, **kw):
    c = default_config(args, hostname="pyshim-test", **kw)
    if mutate:
        mutate(c)
    (bundle / "config.json").write_text(json.dumps(c))


def read_all(fd: int) -> str:
    out = b""
    while chunk := os.read(fd, 65536):
        out += chunk
    os.close(fd)
    return out.decode()


def run(engine, bundle, args, cid="c1", mutate=None, **kw):
    """create + start + wait; returns (output, exit code)."""
    write_config(bundle, args, mutate, **kw)
    return run_bundle(engine, bundle, cid)


def run_bundle(engine, bundle, cid="c1"):
    """create + start + wait + delete of the bundle as it is: (stdout and stderr, exit code)."""
    r, w = os.pipe()
    try:
        c = engine.create(cid, str(bundle), Stdio(stdout=w, stderr=w))
    finally:
        os.close(w)
    c.start()
    out = read_all(r)
    code = _reap(c.pid)
    c.delete()
    return out, code


def children() -> set[int]:
    me, kids = os.getpid(), set()
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                stat = open(f"/proc/{p}/stat").read()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == me:
                kids.add(int(p))
    return kids


def test_shell_in_a_containerd_like_container(env):
    engine, bundle = env
    script = ("read x; echo hi; hostname; id -u; cat /proc/self/status | grep CapEff; ls /dev;"
              " grep -e SigIgn -e SigBlk /proc/self/status; ls /proc/self/fd; exit 7")
    write_config(bundle, ["sh", "-c", script])
    leak = os.open("/dev/null", os.O_RDONLY)  # inheritable on purpose: must not reach inside
    os.set_inheritable(leak, True)
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    try:
        c = engine.create("c1", str(bundle), Stdio(stdin=in_r, stdout=out_w, stderr=out_w))
    finally:
        for fd in (in_r, out_w, leak):
            os.close(fd)
    assert c.status() == "created"
    assert c.state()["pid"] == c.pid > 0
    assert str(bundle) not in open("/proc/self/mountinfo").read()  # all in the child's ns
    c.start()
    assert c.status() == "running"  # blocked on read
    os.write(in_w, b"go\n")
    os.close(in_w)
    out = read_all(out_r).splitlines()
    assert _reap(c.pid) == 7
    assert c.status() == "stopped"
    assert out[:4] == ["hi", "pyshim-test", "0", "CapEff:\t00000000a80425fb"]
    assert set(out[4:4 + len(DEV)]) == DEV
    assert out[4 + len(DEV):4 + len(DEV) + 2] == ["SigBlk:\t0000000000000000",
                                                  "SigIgn:\t0000000000000000"]
    assert out[4 + len(DEV) + 2:] == ["0", "1", "2", "3"]  # 3 is ls's own directory fd
    c.delete()
    assert engine.list() == []


def test_readonly_and_masked_paths(env):
    engine, bundle = env
    out, code = run(engine, bundle, ["sh", "-c",
                    "echo 1 > /proc/sys/kernel/ns_last_pid; ls /proc/acpi | grep -c . ;"
                    " touch /sys/x; echo ok"])
    assert code == 0
    assert "Read-only file system" in out and out.rstrip().endswith("ok")
    assert "\n0\n" in out  # /proc/acpi is an empty tmpfs


def test_cgroup_mount(env):
    engine, bundle = env
    out, code = run(engine, bundle, ["sh", "-c", "ls /sys/fs/cgroup; touch /sys/fs/cgroup/x"],
                    cgroup=True)
    assert code == 1
    assert "Read-only file system" in out
    assert any(name in out.split() for name in ("memory", "cgroup.procs"))


def test_missing_executable_leaves_nothing(env):
    engine, bundle = env
    write_config(bundle, ["nope"])
    before = children()
    with pytest.raises(ContainerSetupError) as e:
        engine.create("c1", str(bundle))
    assert e.value.step == "exec lookup"
    assert str(e.value) == 'exec: "nope": executable file not found in $PATH'
    assert not os.path.exists(os.path.join(engine.root, "c1"))
    assert children() == before
    assert str(bundle) not in open("/proc/self/mountinfo").read()


def test_mount_failure_leaves_nothing(env):
    engine, bundle = env
    write_config(bundle, ["true"], lambda c: c["mounts"].append(
        {"destination": "/x", "type": "nosuchfs", "source": "x"}))
    before = children()
    with pytest.raises(ContainerSetupError) as e:
        engine.create("c1", str(bundle))
    assert (e.value.step, e.value.path) == ("mount", "/x")
    assert "No such device" in str(e.value)
    assert engine.list() == [] and children() == before


def test_kill_delete_and_exit_codes(env):
    engine, bundle = env
    write_config(bundle, ["sleep", "30"])
    c = engine.create("c1", str(bundle))
    c.start()
    with pytest.raises(InvalidState):
        c.delete()
    c.kill(signal.SIGKILL)
    assert _reap(c.pid) == -signal.SIGKILL
    c.delete()
    # a created container is killed by delete, like runc
    c = engine.create("c2", str(bundle))
    c.delete()
    assert _reap(c.pid) == -signal.SIGKILL
    assert run(engine, bundle, ["sh", "-c", "exit 3"], cid="c3")[1] == 3


def test_non_root_user(env):
    engine, bundle = env
    out, code = run(engine, bundle, ["sh", "-c", "id; grep -e CapEff -e CapBnd /proc/self/status"],
                    mutate=lambda c: c["process"].update(
                        user={"uid": 1000, "gid": 1000, "additionalGids": [10]}))
    assert code == 0
    assert out.splitlines() == ["uid=1000 gid=1000 groups=10", "CapEff:\t0000000000000000",
                                "CapBnd:\t00000000a80425fb"]


def test_timing(env):
    engine, bundle = env
    write_config(bundle, ["true"])
    times = []
    for i in range(20):
        t0 = time.perf_counter()
        c = engine.create(f"t{i}", str(bundle))
        c.start()
        code = _reap(c.pid)
        times.append(time.perf_counter() - t0)
        c.delete()
        assert code == 0
    median = statistics.median(times) * 1000
    print(f"\ncreate+start+exit of `true`: median {median:.2f} ms over 20 runs "
          f"(min {min(times) * 1000:.2f}, max {max(times) * 1000:.2f})")
    assert median < 500  # a smoke bound, not a benchmark


def _created_echoing_its_pid(engine, bundle, mutate=None):
    """A created container whose process, once started, waits for a line on its stdin and
    echoes its pid: (container, its stdin's write end, its stdout's read end)."""
    write_config(bundle, ["sh", "-c", "read x; echo $$"], mutate)
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    try:
        c = engine.create("c1", str(bundle), Stdio(stdin=in_r, stdout=out_w))
    finally:
        os.close(in_r)
        os.close(out_w)
    return c, in_w, out_r


def test_without_a_pid_namespace_the_intermediate_is_the_init(env):
    engine, bundle = env

    def mutate(c):
        c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "pid"]
    c, in_w, out_r = _created_echoing_its_pid(engine, bundle, mutate)
    assert int(open(f"/proc/{c.pid}/stat").read().split(") ")[1].split()[1]) == os.getpid()
    c.start()
    os.write(in_w, b"\n")
    os.close(in_w)
    assert read_all(out_r).strip() == str(c.pid)  # the host pid: no pid namespace
    assert _reap(c.pid) == 0
    c.delete()


def _nspids(pid: "int | str") -> list[int]:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("NSpid:"):
            return [int(x) for x in line.split()[1:]]
    raise AssertionError("no NSpid")


def test_a_new_pid_namespace_takes_one_fork_and_our_next_child_is_ours(env):
    """The caller makes the pid namespace for its children (launch.caller_unshares_pid): the
    process it forks is the init, pid 1 in it, our own child (one fork, no intermediate);
    and the caller's next children are in its own pid namespace again."""
    engine, bundle = env
    c, in_w, out_r = _created_echoing_its_pid(engine, bundle)
    try:
        assert _nspids(c.pid) == [c.pid, 1]
        assert int(open(f"/proc/{c.pid}/stat").read().split(") ")[1].split()[1]) == os.getpid()
        assert os.readlink(f"/proc/{c.pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
        assert os.readlink("/proc/self/ns/pid_for_children") == os.readlink("/proc/self/ns/pid")
        pid = os.fork()
        if pid == 0:
            os._exit(0 if _nspids("self") == [os.getpid()] else 1)
        assert os.waitpid(pid, 0)[1] == 0
        c.start()
        os.write(in_w, b"\n")
        assert read_all(out_r).strip() == "1"
        assert _reap(c.pid) == 0
    finally:
        os.close(in_w)
        c.delete(force=True)


def test_fork_in_new_pid_ns_child_is_pid_1_and_the_caller_is_restored():
    from runtime import launch
    from runtime.sys.linux import Linux

    r, w = os.pipe()

    def body():
        os.write(w, repr(_nspids("self")).encode())  # (os.getpid() is 1)
        return 0
    before = open_fds()
    pid = launch._fork_in_new_pid_ns(Linux())(body)
    os.close(w)
    assert read_all(r) == repr([pid, 1])
    assert _reap(pid) == 0
    assert os.readlink("/proc/self/ns/pid_for_children") == os.readlink("/proc/self/ns/pid")
    assert open_fds() == before - {r, w}  # (read_all closed r)


def test_joined_namespaces(env):
    engine, bundle = env
    # Join the network and uts namespaces of a first container from a second one.
    write_config(bundle, ["sleep", "30"])
    first = engine.create("first", str(bundle))
    first.start()

    def mutate(c):
        for n in c["linux"]["namespaces"]:
            if n["type"] in ("network", "uts"):
                n["path"] = f"/proc/{first.pid}/ns/{'net' if n['type'] == 'network' else 'uts'}"
        c.pop("hostname")
    out, code = run(engine, bundle, ["sh", "-c", "hostname; readlink /proc/1/ns/net"],
                    cid="second", mutate=mutate)
    assert code == 0
    assert out.split() == ["pyshim-test", os.readlink(f"/proc/{first.pid}/ns/net")]
    first.kill(signal.SIGKILL)
    _reap(first.pid)
    first.delete()


def test_inside_the_shim_loop_that_reaps_everything(env):
    """The shim's situation: one shim.aio loop thread with a wakeup fd and a SIGCHLD handler
    that reaps every child. The engine reaps its intermediate itself; the loop sees only the
    init."""
    from shim import aio
    engine, bundle = env
    write_config(bundle, ["sh", "-c", "exit 5"])
    reaped = {}

    async def main():
        loop = aio.get_running_loop()
        done = loop.create_future()

        def on_sigchld():
            while True:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    return
                if pid == 0:
                    return
                reaped[pid] = os.waitstatus_to_exitcode(status)
                if not done.done():
                    done.set_result(pid)
        loop.add_signal_handler(signal.SIGCHLD, on_sigchld)
        try:
            c = engine.create("c1", str(bundle))  # synchronous, inside a callback
            c.start()
            pid = await aio.wait_for(done, 5)
            return c, pid
        finally:
            loop.remove_signal_handler(signal.SIGCHLD)

    c, pid = aio.run(main())
    assert pid == c.pid and reaped == {c.pid: 5}
    assert c.status() == "stopped"
    c.delete()


def test_bad_stdio_fd_is_a_setup_error(env):
    engine, bundle = env
    write_config(bundle, ["true"])
    bad = 4000  # not open (a just-closed low number would be reused by create's own fds)
    with pytest.raises(OSError):
        os.fstat(bad)
    with pytest.raises(ContainerSetupError) as e:
        engine.create("c1", str(bundle), Stdio(stdout=bad))
    assert e.value.step == "stdio" and "Bad file descriptor" in str(e.value)
    assert engine.list() == []


def test_a_stuck_init_is_a_timeout_not_a_hang(env, monkeypatch):
    import runtime.init
    engine, bundle = env
    engine = Engine(engine.root, timeout=0.3)
    write_config(bundle, ["true"])
    # The forked init runs this process's (patched) code: make it hang mid-create.
    monkeypatch.setattr(runtime.init, "prepare", lambda *args: time.sleep(60))
    before = children()
    t0 = time.monotonic()
    with pytest.raises(ContainerSetupError) as e:
        engine.create("c1", str(bundle))
    assert e.value.step == "timeout"
    assert time.monotonic() - t0 < 3
    assert engine.list() == [] and children() == before


def test_failure_without_a_pid_namespace_leaves_nothing(env):
    engine, bundle = env
    write_config(bundle, ["nope"], lambda c: c["linux"].update(
        namespaces=[n for n in c["linux"]["namespaces"] if n["type"] != "pid"]))
    before = children()
    with pytest.raises(ContainerSetupError, match="executable file not found"):
        engine.create("c1", str(bundle))
    assert engine.list() == [] and children() == before


def test_sigterm_kills_a_created_container(env):
    # The waiting init is pid 1 of its namespace: it must handle SIGTERM to be killable by it.
    engine, bundle = env
    write_config(bundle, ["true"])
    c = engine.create("c1", str(bundle))
    c.kill(signal.SIGTERM)
    assert _reap(c.pid) == 128 + signal.SIGTERM
    assert c.status() == "stopped"
    with pytest.raises(InvalidState):
        c.start()
    c.delete()


def test_no_pivot_moves_the_rootfs_onto_root_instead_of_pivoting(env, tmp_path):
    """--no-pivot (for a rootfs pivot_root cannot leave, a ramdisk): the container runs the
    same, but the init moved its rootfs onto / and chrooted; the host's full proc and sysfs
    mounts are gone from its namespace. A syscall layer that logs the root change tells."""
    from runtime.sys.linux import Linux
    engine, bundle = env
    log = tmp_path / "root-change.log"

    class Logging(Linux):  # its calls happen in the forked init: logged to a file
        def _log(self, what):
            with open(log, "a") as f:
                f.write(what + "\n")

        def pivot_root(self, new_root, put_old):
            self._log("pivot_root")
            return super().pivot_root(new_root, put_old)

        def chroot(self, path):
            self._log("chroot")
            return super().chroot(path)

    logged = Engine(engine.root, sys=Logging())
    write_config(bundle, ["sh", "-c", "ls /; grep -c ' - proc ' /proc/self/mountinfo"])
    # (a host proc mount left reachable would count too)
    outs = {}
    for no_pivot in (False, True):
        log.unlink(missing_ok=True)
        r, w = os.pipe()
        try:
            c = logged.create(f"np{int(no_pivot)}", str(bundle), Stdio(stdout=w, stderr=w),
                              no_pivot=no_pivot)
        finally:
            os.close(w)
        c.start()
        outs[no_pivot] = read_all(r)
        assert _reap(c.pid) == 0
        c.delete()
        assert log.read_text() == ("chroot\n" if no_pivot else "pivot_root\n")
    # the same root and the same proc mounts (its /proc and the read-only binds of parts)
    assert outs[True] == outs[False] and outs[True].startswith("bin\ndev\nproc\nsys\n"), outs
