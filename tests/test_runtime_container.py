"""runtime.container without root: status, start handshake, kill and delete against real
processes this test forks itself (standing in for a container's init), state files, and the
create checks that happen before any fork."""

import json
import os
import signal
import time

import pytest

from runtime import child, proc, state
from runtime.container import Container, Engine
from runtime.errors import (ContainerExists, ContainerNotFound, ContainerSetupError, EngineError,
                            InvalidSpec, InvalidState, ProcessFinished)
from runtime.specgen import default_config


def _child(body) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            body()
        finally:
            os._exit(0)
    return pid


def fake_init(state_dir: str, handshake: bool | None = True) -> int:
    """A process behaving like our init after create: blocks on exec.fifo, then 'runs'.
    handshake=False: exits at once; None: only sleeps (alive whatever happens to the fifo)."""
    def body():
        if handshake is None:
            time.sleep(30)
        elif handshake:
            fd = os.open(os.path.join(state_dir, state.FIFO), os.O_WRONLY)
            os.write(fd, b"0")
            os.close(fd)
            time.sleep(30)
    return _child(body)


def reap(pid: int) -> int:
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.fixture
def made(tmp_path):
    """(container, pid) for a fake init with a state dir as create leaves it."""
    pids = []

    def make(handshake=True, start_offset=0):
        d = tmp_path / "state" / "c1"
        d.mkdir(parents=True)
        os.mkfifo(d / state.FIFO)
        pid = fake_init(str(d), handshake)
        pids.append(pid)
        data = {"ociVersion": "1.1.0", "id": "c1", "bundle": "/b", "pid": pid,
                "pidStartTime": proc.start_time(pid) + start_offset, "created": "now",
                "annotations": {"k": "v"}, "config": default_config()}
        state.write(str(d), data)
        return Container(str(d), data), pid
    yield make
    for pid in pids:  # never leave a child behind, whatever the test did
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def test_lifecycle_created_running_stopped(made):
    c, pid = made()
    assert c.status() == "created"
    assert c.state() == {"ociVersion": "1.1.0", "id": "c1", "status": "created", "pid": pid,
                         "bundle": "/b", "annotations": {"k": "v"}}
    c.start()
    assert not os.path.exists(os.path.join(c._dir, state.FIFO))
    assert c.status() == "running"
    with pytest.raises(InvalidState):
        c.start()
    c.kill(signal.SIGTERM)
    assert reap(pid) == -signal.SIGTERM
    assert c.status() == "stopped"
    assert c.state()["pid"] == 0
    with pytest.raises(ProcessFinished) as e:
        c.kill(signal.SIGTERM)
    assert isinstance(e.value, ContainerNotFound)  # the shim maps it like runc's shim does
    with pytest.raises(InvalidState):
        c.start()


def test_status_counts_a_zombie_as_stopped(made):
    c, pid = made()
    c.start()
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.05)
    assert c.status() == "stopped"  # not reaped yet: still a zombie
    reap(pid)


def test_start_when_the_init_died_before_the_handshake(made):
    c, pid = made(handshake=False)
    time.sleep(0.05)  # it exits at once; a zombie until reaped
    with pytest.raises(InvalidState):
        c.start()


def test_start_notices_an_init_dying_while_it_waits(made, monkeypatch):
    # The init passes the status check, then dies before opening the fifo: start must not
    # wait forever for a writer that will never come.
    c, pid = made(handshake=False)
    monkeypatch.setattr(c, "status", lambda: "created")
    t0 = time.monotonic()
    with pytest.raises(InvalidState):
        c.start()
    assert time.monotonic() - t0 < 2


def test_pid_reuse_is_detected(made):
    # same pid, another start time: another process (one that must outlive the state dir)
    c, pid = made(handshake=None, start_offset=1)
    assert c.status() == "stopped"
    with pytest.raises(ProcessFinished):
        c.kill(signal.SIGKILL)
    assert proc.is_alive(pid, proc.start_time(pid))  # untouched
    c.delete()  # stopped: only the state dir goes
    assert not os.path.exists(c._dir)
    assert proc.is_alive(pid, proc.start_time(pid))


def test_delete(made):
    c, pid = made()
    c.start()
    with pytest.raises(InvalidState):
        c.delete()
    assert c.status() == "running"
    c.delete(force=True)
    assert not os.path.exists(c._dir)
    assert reap(pid) == -signal.SIGKILL
    c.delete()  # idempotent
    c.delete(force=True)


def test_delete_of_a_created_container_kills_it_like_runc(made):
    c, pid = made()
    c.delete()
    assert reap(pid) == -signal.SIGKILL
    assert not os.path.exists(c._dir)


def test_engine_load_and_list(made, tmp_path):
    c, pid = made()
    e = Engine(str(tmp_path / "state"))
    loaded = e.load("c1")
    assert (loaded.id, loaded.pid, loaded.bundle) == ("c1", pid, "/b")
    assert loaded.spec.process.args == ["sh"]  # the config stored at create
    assert e.list() == ["c1"]
    with pytest.raises(ContainerNotFound) as err:
        e.load("c2")
    assert err.value.id == "c2"
    assert Engine(str(tmp_path / "nothing")).list() == []


@pytest.mark.parametrize("bad", ["", "a/b", "..", ".", "a b", "../x"])
def test_invalid_ids(tmp_path, bad):
    with pytest.raises(InvalidSpec) as e:
        Engine(str(tmp_path)).load(bad)
    assert e.value.field == "id"


def test_state_write_is_atomic_and_leaves_no_temp(tmp_path):
    state.write(str(tmp_path), {"a": 1})
    state.write(str(tmp_path), {"a": 2})
    assert os.listdir(tmp_path) == [state.STATE_FILE]
    assert state.read(str(tmp_path)) == {"a": 2}
    assert state.read(str(tmp_path / "x")) is None


# --- create: what fails before any fork ------------------------------------------------------
def bundle(tmp_path, mutate=None, rootfs=True):
    b = tmp_path / "bundle"
    b.mkdir(exist_ok=True)
    if rootfs:
        (b / "rootfs").mkdir(exist_ok=True)
    c = default_config(["sh"])
    if mutate:
        mutate(c)
    (b / "config.json").write_text(json.dumps(c))
    return str(b)


@pytest.mark.parametrize("mutate, field", [
    (lambda c: c["linux"]["namespaces"].append({"type": "user"}), "linux.uidMappings"),
    (lambda c: c["process"].update(args=[]), "process.args"),
    (lambda c: c["mounts"][0].update(destination="/../proc"), "mounts[0].destination"),
])
def test_create_rejects_bad_specs_without_leaving_anything(tmp_path, mutate, field):
    root = tmp_path / "state"
    with pytest.raises(InvalidSpec) as e:
        Engine(str(root)).create("c1", bundle(tmp_path, mutate))
    assert e.value.field == field
    assert not (root / "c1").exists()


def test_create_without_config(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidSpec, match="cannot read"):
        Engine(str(tmp_path / "state")).create("c1", str(tmp_path / "empty"))


def test_create_without_rootfs(tmp_path):
    with pytest.raises(ContainerSetupError) as e:
        Engine(str(tmp_path / "state")).create("c1", bundle(tmp_path, rootfs=False))
    assert e.value.step == "rootfs"


def test_create_existing(tmp_path):
    (tmp_path / "state" / "c1").mkdir(parents=True)
    with pytest.raises(ContainerExists) as e:
        Engine(str(tmp_path / "state")).create("c1", bundle(tmp_path))
    assert e.value.id == "c1"
    assert (tmp_path / "state" / "c1").is_dir()  # someone else's: left alone


@pytest.mark.parametrize("told", [(4242, 777), (1, 2)])
def test_create_writes_the_state_aside_while_the_init_sets_up_and_publishes_it_once_ready(
        tmp_path, monkeypatch, told):
    """launch() tells create the init's pid while the init still mounts; create writes the
    state then, off the critical path, and only renames it into place once the init is ready
    (a pid that launch() then returns differently is written anew)."""
    from runtime import launch
    root = tmp_path / "state"
    seen = {}

    def fake_launch(cfg, stdio, sys, timeout, hooks, on_pid):
        on_pid(*told)
        seen["during"] = sorted(os.listdir(root / "c1"))
        seen["aside"] = json.loads((root / "c1" / ".state.json.tmp").read_text())
        return 4242, 777, None
    monkeypatch.setattr(launch, "launch", fake_launch)
    Engine(str(root)).create("c1", bundle(tmp_path), new_keyring=False)
    assert seen["during"] == [".state.json.tmp", "exec.fifo"]  # nothing published before ready
    assert seen["aside"]["pid"] == told[0] and seen["aside"]["noNewKeyring"] is True
    assert sorted(os.listdir(root / "c1")) == ["exec.fifo", "state.json"]
    data = state.read(str(root / "c1"))
    assert (data["pid"], data["pidStartTime"], data["noNewKeyring"]) == (4242, 777, True)
    if told == (4242, 777):
        assert data == seen["aside"]


def test_a_state_that_cannot_be_written_aside_fails_create_and_leaves_nothing(tmp_path,
                                                                              monkeypatch):
    from runtime import launch
    root = tmp_path / "state"

    def fake_launch(cfg, stdio, sys, timeout, hooks, on_pid):
        on_pid(4242, 777)  # launch() kills and reaps its children when this raises
        raise AssertionError("not reached")

    def full(state_dir, data):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(launch, "launch", fake_launch)
    monkeypatch.setattr(state, "prepare", full)
    with pytest.raises(OSError, match="No space"):
        Engine(str(root)).create("c1", bundle(tmp_path))
    assert not (root / "c1").exists()


def test_the_state_written_aside_is_published_whole(tmp_path):
    state.write(str(tmp_path), {"a": 1})
    state.prepare(str(tmp_path), {"a": 2})
    assert state.read(str(tmp_path)) == {"a": 1}  # readers still see the published one
    state.commit(str(tmp_path))
    assert os.listdir(tmp_path) == [state.STATE_FILE]
    assert state.read(str(tmp_path)) == {"a": 2}


# --- proc and the launch protocol ------------------------------------------------------------
def test_start_time_survives_a_hostile_comm():
    r, w = os.pipe()

    def body():
        with open("/proc/self/comm", "w") as f:
            f.write("a) (b c")
        os.write(w, b"x")
        time.sleep(30)
    before = None
    pid = _child(body)
    try:
        before = proc.start_time(pid)
        os.read(r, 1)
        assert open(f"/proc/{pid}/comm").read().strip() == "a) (b c"
        assert proc.start_time(pid) == before > 0
        assert proc.is_alive(pid, before)
    finally:
        os.kill(pid, signal.SIGKILL)
        reap(pid)
        os.close(r)
        os.close(w)
    assert proc.start_time(pid) is None and not proc.is_alive(pid, before)


def test_errors_cross_the_socket_with_their_type():
    for err in (ContainerSetupError("mount", "mount proc on /x: No such device", "/proc"),
                InvalidSpec("hostname", "needs uts"),
                OSError(1, "unshare 0x20000: Operation not permitted")):
        back = child.decode_error(json.loads(json.dumps(child.encode_error(err, "namespaces"))))
        assert isinstance(back, EngineError)
        if isinstance(err, InvalidSpec):
            assert (type(back), back.field, str(back)) == (InvalidSpec, "hostname",
                                                           "hostname: needs uts")
        elif isinstance(err, ContainerSetupError):
            assert (back.step, back.path, str(back)) == ("mount", "/proc", str(err))
        else:
            assert (back.step, str(back)) == ("namespaces", err.strerror)


def test_seccomp_is_compiled_before_any_fork_and_notify_is_refused(tmp_path):
    from runtime.container import seccomp_filter
    from runtime.spec import parse
    c = default_config()
    c["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW",
                             "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}
    f = seccomp_filter(parse(c))
    assert len(f.program) % 8 == 0 and f.program
    assert seccomp_filter(parse(default_config())) is None
    c["linux"]["seccomp"]["listenerPath"] = "/run/agent.sock"
    c["linux"]["seccomp"]["syscalls"].append({"names": ["mount"], "action": "SCMP_ACT_NOTIFY"})
    root = tmp_path / "state"
    with pytest.raises(InvalidSpec) as e:
        Engine(str(root)).create("c1", bundle(tmp_path, lambda cfg: cfg["linux"].update(
            seccomp=c["linux"]["seccomp"])))
    assert e.value.field == "linux.seccomp.syscalls[1].action"
    assert not (root / "c1").exists()


def test_drop_config_reads_it_back_from_the_state(made, tmp_path):
    """The shim keeps the (large) config out of memory: what needs it reads it back from
    the state written at create; delete still runs the poststop hooks it names."""
    marker = tmp_path / "poststop-ran"

    c, pid = made(handshake=None)
    with_hook = dict(c.full_state())
    with_hook["config"] = dict(with_hook["config"], hooks={
        "poststop": [{"path": "/bin/sh", "args": ["sh", "-c", f"touch {marker}"]}]})
    state.write(c._dir, with_hook)
    c = Container(c._dir, dict(with_hook))
    c.drop_config()
    assert "config" not in c._data
    assert c.full_state()["config"] == with_hook["config"]  # read back
    assert c.spec.process.args == with_hook["config"]["process"]["args"]
    c.drop_config()
    c.delete(force=True)
    reap(pid)
    assert marker.exists()  # the hook was found before the state was removed


def test_portable_and_adopt_carry_the_container_without_its_config(made, tmp_path):
    """The shim's create fork sends portable(); the daemon adopt()s it: same container, no
    config in memory, and the hook summary spares start a read of the state."""
    c, pid = made(handshake=None)
    portable = c.portable()
    assert "config" not in portable["data"] and portable["summary"] == {"hooks": [],
                                                                       "netDevices": False}
    adopted = Engine(str(tmp_path / "state")).adopt("c1", portable)
    assert (adopted.id, adopted.pid, adopted.status()) == ("c1", pid, "created")
    os.unlink(os.path.join(adopted._dir, state.STATE_FILE))  # no read-back may be needed...
    assert adopted._hooks("poststart") == [] and adopted._hooks("startContainer") == []
    adopted._net_devices_back()  # ...for hooks or network devices the config does not have
