"""Root tests of Container.exec against real busybox containers: the exec'd process is in the
container's namespaces and root, runs as the asked user, its exit is ours to reap, and a failed
exec leaves nothing behind. Skipped unless running as root."""

import os
import signal

import pytest
from test_runtime_root import _reap, children, env, read_all, subreaper, write_config  # noqa: F401

from runtime.container import Stdio
from runtime.errors import ContainerSetupError, InvalidState

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def process(args, **kw):
    return {"args": args, "cwd": "/", "env": ["PATH=/bin"], **kw}


def running(engine, bundle, cid="c1", **kw):
    write_config(bundle, ["sleep", "30"], **kw)
    c = engine.create(cid, str(bundle))
    c.start()
    return c


def stop(c) -> None:
    """SIGKILL a running container, reap its init, delete it."""
    c.kill(signal.SIGKILL)
    _reap(c.pid)
    c.delete()


def exec_output(c, proc_obj) -> tuple[list[str], int, int]:
    """(output lines, exit code, pid) of an exec whose stdout+stderr go through a pipe."""
    r, w = os.pipe()
    try:
        pid = c.exec(proc_obj, Stdio(stdout=w, stderr=w))
    finally:
        os.close(w)
    out = read_all(r).splitlines()
    return out, _reap(pid), pid


def test_exec_sees_the_containers_namespaces_and_root(env, tmp_path):
    engine, bundle = env
    (bundle / "rootfs" / "marker").write_text("inside\n")
    c = running(engine, bundle)
    out, code, pid = exec_output(c, process(
        ["sh", "-c", "echo $$; hostname; cat /marker; id; ls -l /proc/self/ns/pid; exit 4"],
        user={"uid": 1000, "gid": 1000, "additionalGids": [10]}))
    assert code == 4
    assert int(out[0]) < 100 and int(out[0]) != pid  # its pid in the container's namespace
    assert out[1:4] == ["pyshim-test", "inside", "uid=1000 gid=1000 groups=10"]
    assert out[4].endswith("-> " + os.readlink(f"/proc/{c.pid}/ns/pid")), out
    assert os.readlink(f"/proc/{c.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    stop(c)


def test_exec_env_home_cwd_and_caps_follow_the_process_object(env):
    engine, bundle = env
    (bundle / "rootfs" / "etc").mkdir()
    (bundle / "rootfs" / "tmp").mkdir()
    (bundle / "rootfs" / "etc" / "passwd").write_text("app:x:1000:1000::/home/app:/bin/sh\n")
    c = running(engine, bundle)
    out, code, _ = exec_output(c, process(
        ["sh", "-c", "echo $HOME $A; pwd; grep CapEff /proc/self/status; umask"],
        env=["PATH=/bin", "A=b"], cwd="/tmp", user={"uid": 1000, "gid": 1000, "umask": 0o027},
        capabilities={"bounding": ["CAP_KILL"], "effective": [], "permitted": []},
        noNewPrivileges=True))
    assert code == 0
    assert out == ["/home/app b", "/tmp", "CapEff:\t0000000000000000", "0027"]
    stop(c)


def test_exec_of_a_missing_executable_fails_like_runc_and_leaves_nothing(env):
    engine, bundle = env
    c = running(engine, bundle)
    before = children()
    with pytest.raises(ContainerSetupError) as e:
        c.exec(process(["foo"]), Stdio())
    assert e.value.step == "exec lookup"
    assert str(e.value) == 'exec: "foo": executable file not found in $PATH'
    assert children() == before == {c.pid}
    stop(c)


def test_exec_into_a_created_container_works(env):
    engine, bundle = env
    write_config(bundle, ["sleep", "30"])
    c = engine.create("c1", str(bundle))
    out, code, _ = exec_output(c, process(["hostname"]))
    assert (out, code) == (["pyshim-test"], 0)
    assert c.status() == "created"
    c.delete()
    _reap(c.pid)


def test_exec_into_a_stopped_container_is_an_invalid_state(env):
    engine, bundle = env
    c = running(engine, bundle)
    c.kill(signal.SIGKILL)
    _reap(c.pid)
    before = children()
    with pytest.raises(InvalidState) as e:
        c.exec(process(["true"]), Stdio())
    assert e.value.status == "stopped"
    assert children() == before
    c.delete()


def test_exec_dies_with_the_container(env):
    engine, bundle = env
    c = running(engine, bundle)
    r, w = os.pipe()
    try:
        pid = c.exec(process(["sh", "-c", "echo up; sleep 30"]), Stdio(stdout=w))
    finally:
        os.close(w)
    assert os.read(r, 3) == b"up\n"
    os.close(r)
    c.kill(signal.SIGKILL)  # the pid namespace's init: the kernel kills the rest
    assert _reap(pid) == -signal.SIGKILL
    _reap(c.pid)
    c.delete()
