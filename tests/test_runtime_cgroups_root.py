"""Root tests of the engine's cgroups on this host's real cgroupfs: the init and exec'd
processes live in the container's cgroup from the start, resources are set, pause/resume,
update, stats, kill --all, and no cgroup directory survives delete or a failed create.
Every container gets its own /pyshim-test-<random> cgroupsPath."""

import glob
import json
import os
import secrets
import signal

import pytest
from test_runtime_exec_root import exec_output, process, running
from test_runtime_root import _reap, children, env, read_all, subreaper, write_config  # noqa: F401

from runtime.container import Engine, Stdio
from runtime.errors import CgroupError, ContainerSetupError, InvalidState

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
MiB = 1 << 20


@pytest.fixture
def cgpath():
    path = f"/pyshim-test-{secrets.token_hex(4)}"
    yield path
    left = glob.glob(f"/sys/fs/cgroup/*{path}")
    for d in left:  # a failed test must not leave them behind either
        try:
            os.rmdir(d)
        except OSError:
            pass
    assert not left, f"cgroup directories left behind: {left}"


def configure(cgpath, resources=None, **kw):
    def mutate(c):
        c["linux"]["cgroupsPath"] = cgpath
        c["linux"]["resources"].update(resources or {})
        if kw.get("no_pidns"):
            c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "pid"]
    return mutate


def cg(ctrl, cgpath, name):
    with open(f"/sys/fs/cgroup/{ctrl}{cgpath}/{name}") as f:
        return f.read().strip()


def test_init_and_exec_live_in_the_cgroup_with_its_limits(env, cgpath):
    engine, bundle = env
    write_config(bundle, ["sleep", "30"],
                 configure(cgpath, {"memory": {"limit": 64 * MiB}, "pids": {"limit": 42}}))
    c = engine.create("c1", str(bundle))
    assert cg("memory", cgpath, "memory.limit_in_bytes") == str(64 * MiB)
    assert cg("pids", cgpath, "pids.max") == "42"
    devices = cg("devices", cgpath, "devices.list").splitlines()
    assert "c 1:3 rwm" in devices and "a *:* rwm" not in devices  # runc's allowlist
    # in every hierarchy, before it ever ran user code
    own = open(f"/proc/{c.pid}/cgroup").read().splitlines()
    assert all(line.endswith(cgpath) for line in own if not line.startswith("0::"))
    assert json.load(open(os.path.join(engine.root, "c1", "state.json")))["cgroup"]["version"] == 1
    c.start()
    r, w = os.pipe()  # its stdin: it waits on it until we close w
    try:
        pid = c.exec(process(["sh", "-c", "read x"]), Stdio(stdin=r))
    finally:
        os.close(r)
    assert sorted(c.pids()) == sorted([c.pid, pid])
    stats = c.stats()
    assert stats["pids"] == {"current": 2, "limit": 42}
    assert stats["memory"]["usage"]["limit"] == 64 * MiB
    c.update({"pids": {"limit": 10}})
    assert cg("pids", cgpath, "pids.max") == "10"
    assert c.oom_kill_count() == 0
    efd = c.oom_event_fd()
    os.close(efd)
    c.kill(signal.SIGKILL, all=True)
    os.close(w)
    assert _reap(pid) == -signal.SIGKILL
    assert _reap(c.pid) == -signal.SIGKILL
    c.delete()
    assert not glob.glob(f"/sys/fs/cgroup/*{cgpath}")


def test_exec_needs_one_free_pid_like_runc(env, cgpath):
    """Only the exec'd process joins the cgroup (not the intermediate that forks it): exec into
    a container one pid below its pids.max works, and the process is in the cgroup before it
    runs anything. Even at the limit, as with runc: joining is not forking."""
    engine, bundle = env
    write_config(bundle, ["sleep", "30"], configure(cgpath, {"pids": {"limit": 2}}))
    c = engine.create("c1", str(bundle))
    try:
        c.start()
        assert cg("pids", cgpath, "pids.current") == "1"
        out, code, _ = exec_output(c, process(["cat", "/proc/self/cgroup"]))
        assert code == 0 and out, out
        assert all(line.endswith(cgpath) for line in out if not line.startswith("0::")), out
        c.update({"pids": {"limit": 1}})
        assert exec_output(c, process(["sh", "-c", "echo hi"]))[:2] == (["hi"], 0)
    finally:
        c.kill(signal.SIGKILL)
        _reap(c.pid)
        c.delete()


def test_pause_and_resume(env, cgpath):
    engine, bundle = env
    c = running(engine, bundle, mutate=configure(cgpath))
    c.pause()
    assert c.status() == c.state()["status"] == "paused"
    assert cg("freezer", cgpath, "freezer.state") == "FROZEN"
    with pytest.raises(InvalidState):
        c.exec(process(["true"]), Stdio())
    c.resume()
    assert c.status() == "running"
    c.pause()
    c.delete(force=True)  # a frozen container must still die
    assert _reap(c.pid) == -signal.SIGKILL
    assert not glob.glob(f"/sys/fs/cgroup/*{cgpath}")


def test_a_failed_create_leaves_no_cgroup(env, cgpath):
    engine, bundle = env
    write_config(bundle, ["nope"], configure(cgpath))
    before = children()
    with pytest.raises(ContainerSetupError) as e:
        engine.create("c1", str(bundle))
    assert e.value.step == "exec lookup"
    assert not glob.glob(f"/sys/fs/cgroup/*{cgpath}")
    assert engine.list() == [] and children() == before


def test_a_resource_the_kernel_refuses_fails_create_naming_the_path(env, cgpath):
    engine, bundle = env
    write_config(bundle, ["true"], configure(cgpath, {"cpu": {"cpus": "100000"}}))
    before = children()
    with pytest.raises(CgroupError) as e:
        engine.create("c1", str(bundle))
    assert e.value.path == f"/sys/fs/cgroup/cpuset{cgpath}/cpuset.cpus"
    assert e.value.path in str(e.value) and e.value.field == "linux.resources.cpu.cpus"
    assert not glob.glob(f"/sys/fs/cgroup/*{cgpath}")
    # the cgroup is set up after the fork here (launch.setup_cgroup_after_fork): the children
    # already forked are killed and reaped
    assert engine.list() == [] and children() == before


def test_the_cgroup_mount_shows_the_containers_own_cgroup(env, cgpath):
    engine, bundle = env
    write_config(bundle, ["cat", "/sys/fs/cgroup/pids/pids.max"],
                 configure(cgpath, {"pids": {"limit": 42}}), cgroup=True)
    r, w = os.pipe()
    try:
        c = engine.create("c1", str(bundle), Stdio(stdout=w, stderr=w))
    finally:
        os.close(w)
    c.start()
    assert read_all(r).strip() == "42"
    assert _reap(c.pid) == 0
    c.delete()


def test_delete_from_another_process_finds_the_cgroup(env, cgpath):
    engine, bundle = env
    c = running(engine, bundle, mutate=configure(cgpath))
    Engine(engine.root).load("c1").delete(force=True)  # as the shim's `delete` subcommand does
    assert _reap(c.pid) == -signal.SIGKILL
    assert not glob.glob(f"/sys/fs/cgroup/*{cgpath}")


def test_without_a_pid_namespace_delete_kills_what_the_init_left(env, cgpath):
    engine, bundle = env
    write_config(bundle, ["sh", "-c", "sleep 30 & echo $!"], configure(cgpath, no_pidns=True))
    r, w = os.pipe()
    try:
        c = engine.create("c1", str(bundle), Stdio(stdout=w))
    finally:
        os.close(w)
    c.start()
    orphan = int(os.read(r, 64))
    os.close(r)
    assert _reap(c.pid) == 0
    assert c.status() == "stopped" and c.pids() == [orphan]
    c.delete()
    assert _reap(orphan) == -signal.SIGKILL  # re-parented to us, the subreaper
    assert not glob.glob(f"/sys/fs/cgroup/*{cgpath}")


def test_exec_output_shows_the_cgroup(env, cgpath):
    engine, bundle = env
    c = running(engine, bundle, mutate=configure(cgpath))
    out, code, _ = exec_output(c, process(["cat", "/proc/self/cgroup"]))
    assert code == 0
    assert [line for line in out if not line.endswith(cgpath)] == ["0::/"]
    c.delete(force=True)
    _reap(c.pid)


def test_a_cgroup_setup_failing_after_the_init_was_forked_leaves_no_child(env, cgpath,
                                                                         monkeypatch):
    """The cgroup is made after the fork (launch.setup_cgroup_after_fork): if that fails once
    the intermediate has forked the init, the init is killed and reaped too (it was left to
    the subreaper, running, when only the intermediate was)."""
    import time

    from runtime import ctrcgroup
    engine, bundle = env
    write_config(bundle, ["true"], configure(cgpath))
    real_setup = ctrcgroup.setup

    def slow_failing_setup(m, spec):
        time.sleep(0.3)  # the children are well on by now: the init exists
        real_setup(m, spec)
        ctrcgroup.destroy_quietly(m)
        raise CgroupError("injected failure", None)
    monkeypatch.setattr(ctrcgroup, "setup", slow_failing_setup)
    before = children()
    with pytest.raises(CgroupError, match="injected failure"):
        engine.create("c1", str(bundle))
    assert children() == before
    assert engine.list() == [] and not glob.glob(f"/sys/fs/cgroup/*{cgpath}")
