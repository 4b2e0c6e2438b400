"""shim.checkpoint against the Task service with a stub engine (no root, no real criu: a fake
`criu` script on PATH): options decoding, state checks, criu's failures as FailedPrecondition,
/tasks/checkpointed after success (before the exit of a dump with `exit`), and the restore
path's Create/Start/Delete halves."""

import os
import signal
import time

import pytest
from proto import wkt_lite

from proto.containerd.runc.options import oci_lite as runc_options
from proto.containerd.task.v2 import shim_lite as api
from runtime import checkpoint as ck
from runtime.specgen import default_config
from shim import aio
from shim import checkpoint as sck
from shim.service import STOPPED, TaskService
from shim.ttrpc import Code, TTRPCError


# --- stubs (the style of test_service.py) ----------------------------------------------------
class StubHandle:
    def __init__(self, cid, pid, bundle):
        self.id, self.pid = cid, pid
        self.calls = []
        self._data = {"ociVersion": "1.1.0", "id": cid, "bundle": bundle,
                      "rootfs": os.path.join(bundle, "rootfs"), "pid": pid, "pidStartTime": 1,
                      "created": "now", "annotations": {}, "cgroup": None,
                      "config": default_config(["sleep", "1000"])}

    def status(self):
        return "running"

    def full_state(self):
        return self._data

    def drop_config(self):
        pass

    def start(self):
        self.calls.append("start")

    def kill(self, sig, all=False):
        self.calls.append(("kill", sig))

    def pids(self):
        return [self.pid]

    def delete(self, force=False):
        self.calls.append(("delete", force))


class StubEngine:
    """Each create forks a real sleeping child as the "init" (a fake criu may kill it)."""

    def __init__(self):
        self.handles = {}

    def create(self, cid, bundle, stdio, **kw):
        pid = os.fork()
        if pid == 0:
            try:
                time.sleep(60)
            finally:
                os._exit(0)
        self.handles[cid] = StubHandle(cid, pid, bundle)
        return self.handles[cid]


class RecordingEvents:
    def __init__(self):
        self.published = []

    def publish(self, topic, event):
        self.published.append((topic, event))

    @property
    def topics(self):
        return [t for t, _ in self.published]


def make_service():
    svc = TaskService("default", StubEngine(), RecordingEvents())
    svc.signal_pid = lambda pid, sig: None  # never real pids
    return svc


def run(coro):
    return aio.run(coro)


async def reaping(svc):
    """What the installed reaper does on SIGCHLD, polled (no subreaper for the test process)."""
    while True:
        svc.reaper.reap()
        await aio.sleep(0.005)


def cleanup(svc):
    for h in svc.engine.handles.values():
        try:
            os.kill(h.pid, signal.SIGKILL)
            os.waitpid(h.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def fake_criu(tmp_path, monkeypatch, check="exit 0", dump="exit 0", restore="exit 0"):
    """`criu` on PATH: a script doing `check`, `dump` or `restore` as told; args logged."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    script = bindir / "criu"
    script.write_text(f"""#!/bin/sh
echo "$@" >> {tmp_path}/criu.args
cmd=$1; shift
for a; do
  case "$prev" in --tree) tree=$a;; --work-dir) work=$a;; --pidfile) pidfile=$a;; esac
  prev=$a
done
case $cmd in
  check) {check};;
  dump) {dump};;
  restore) {restore};;
esac
""")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.delenv("PYSHIM_CRIU", raising=False)
    return str(script)


def pack(msg):
    return wkt_lite.Any(type_url=msg.DESCRIPTOR.full_name, value=msg.SerializeToString())


async def started(svc, tmp_path, cid="c1"):
    bundle = tmp_path / cid
    bundle.mkdir()
    await svc.Create(api.CreateTaskRequest(id=cid, bundle=str(bundle)))
    await svc.Start(api.StartRequest(id=cid))
    return svc.containers[cid]


# --- options ---------------------------------------------------------------------------------
def test_decode_options():
    assert sck.decode_options(None) == ck.CheckpointOptions()
    assert sck.decode_options(wkt_lite.Any()) == ck.CheckpointOptions()
    o = runc_options.CheckpointOptions(exit=True, open_tcp=True, external_unix_sockets=True,
                                       terminal=True, file_locks=True,
                                       empty_namespaces=["network"], cgroups_mode="soft",
                                       image_path="/i", work_path="/w")
    want = ck.CheckpointOptions(True, True, True, True, True, ["network"], "soft", "/i", "/w")
    assert sck.decode_options(pack(o)) == want
    prefixed = wkt_lite.Any(type_url="type.googleapis.com/containerd.runc.v1.CheckpointOptions",
                           value=o.SerializeToString())
    assert sck.decode_options(prefixed) == want
    with pytest.raises(TTRPCError) as e:
        sck.decode_options(pack(runc_options.Options(criu_path="/x")))
    assert e.value.code == Code.INVALID_ARGUMENT and "containerd.runc.v1.Options" in str(e.value)
    with pytest.raises(TTRPCError) as e:
        sck.decode_options(pack(runc_options.CheckpointOptions(cgroups_mode="bogus")))
    assert e.value.code == Code.INVALID_ARGUMENT and "cgroups_mode" in str(e.value)


# --- checkpoint ------------------------------------------------------------------------------
def test_a_created_or_stopped_task_cannot_be_checkpointed(tmp_path):
    async def scenario():
        svc = make_service()
        (tmp_path / "c1").mkdir()
        await svc.Create(api.CreateTaskRequest(id="c1", bundle=str(tmp_path / "c1")))
        c = svc.containers["c1"]
        try:
            with pytest.raises(TTRPCError) as created:
                await sck.checkpoint(svc, c, api.CheckpointTaskRequest(id="c1", path="/i"))
            c.init.state = STOPPED
            with pytest.raises(TTRPCError) as stopped:
                await sck.checkpoint(svc, c, api.CheckpointTaskRequest(id="c1", path="/i"))
        finally:
            cleanup(svc)
        return created.value, stopped.value, svc

    created, stopped, svc = run(scenario())
    assert created.code == stopped.code == Code.FAILED_PRECONDITION
    assert "created state" in str(created) and "stopped" in str(stopped)
    assert "/tasks/checkpointed" not in svc.events.topics


def test_failing_criu_check_is_failed_precondition_with_criu_s_reason(tmp_path, monkeypatch):
    fake_criu(tmp_path, monkeypatch, check='echo "Error (criu/vdso.c:381): vdso: Unexpected rt '
                                           'vDSO area bounds" >&2; exit 1')

    async def scenario():
        svc = make_service()
        c = await started(svc, tmp_path)
        try:
            with pytest.raises(TTRPCError) as e:
                await sck.checkpoint(svc, c, api.CheckpointTaskRequest(
                    id="c1", path=str(tmp_path / "img")))
        finally:
            cleanup(svc)
        return e.value, svc

    err, svc = run(scenario())
    assert err.code == Code.FAILED_PRECONDITION
    assert "vdso: Unexpected rt vDSO area bounds" in str(err) and "criu check" in str(err)
    assert "/tasks/checkpointed" not in svc.events.topics
    assert (tmp_path / "criu.args").read_text() == "check\n"  # no dump was attempted


def test_missing_criu_is_failed_precondition(tmp_path, monkeypatch):
    monkeypatch.setenv("PYSHIM_CRIU", str(tmp_path / "nowhere" / "criu"))

    async def scenario():
        svc = make_service()
        c = await started(svc, tmp_path)
        try:
            with pytest.raises(TTRPCError) as e:
                await sck.checkpoint(svc, c, api.CheckpointTaskRequest(id="c1", path="/i"))
        finally:
            cleanup(svc)
        return e.value

    err = run(scenario())
    assert err.code == Code.FAILED_PRECONDITION and "not found" in str(err)


def test_checkpointed_is_published_after_success_and_before_the_exit(tmp_path, monkeypatch):
    # criu dump with `exit` kills the tree: its exit must follow /tasks/checkpointed
    fake_criu(tmp_path, monkeypatch, dump='kill -9 "$tree"; echo dumped > "$work/dump.log"')
    img = str(tmp_path / "img")

    async def scenario():
        svc = make_service()
        reaper = aio.get_running_loop().create_task(reaping(svc))
        try:
            c = await started(svc, tmp_path)
            await sck.checkpoint(svc, c, api.CheckpointTaskRequest(
                id="c1", path=img, options=pack(runc_options.CheckpointOptions(exit=True))))
            await aio.wait_for(c.init.exited.wait(), 5)
        finally:
            reaper.cancel()
            cleanup(svc)
        return svc, c

    svc, c = run(scenario())
    assert svc.events.topics == ["/tasks/create", "/tasks/start", "/tasks/checkpointed",
                                 "/tasks/exit"]
    event = svc.events.published[2][1]
    assert (event.container_id, event.checkpoint) == ("c1", img)
    assert svc.events.published[3][1].exit_status == 137
    args = (tmp_path / "criu.args").read_text().splitlines()
    assert args[0] == "check" and args[1].startswith(f"dump --tree {c.init.pid} --images-dir {img}")
    assert "--leave-running" not in args[1]
    work = os.path.join(c.bundle, "criu-work")
    assert f"--work-dir {work}" in args[1] and not os.path.exists(work)  # temporary: removed
    assert os.path.exists(os.path.join(img, "descriptors.json"))


def test_failed_dump_names_the_log_copy_and_keeps_the_task(tmp_path, monkeypatch):
    fake_criu(tmp_path, monkeypatch,
              dump='echo "(0.1) Error (criu/cr-dump.c:9): can not dump" > "$work/dump.log"; exit 1')

    async def scenario():
        svc = make_service()
        c = await started(svc, tmp_path)
        try:
            with pytest.raises(TTRPCError) as e:
                await sck.checkpoint(svc, c, api.CheckpointTaskRequest(
                    id="c1", path=str(tmp_path / "img")))
            registered = svc._by_pid.get(c.init.pid) is c.init
        finally:
            cleanup(svc)
        return e.value, svc, c, registered

    err, svc, c, registered = run(scenario())
    copy = os.path.join(c.bundle, "criu-dump.log")
    assert err.code == Code.UNKNOWN
    assert "can not dump" in str(err) and copy in str(err) and str(tmp_path / "img") in str(err)
    with open(copy) as f:
        assert "can not dump" in f.read()
    assert "/tasks/checkpointed" not in svc.events.topics
    assert registered  # the init's exits are watched again


def test_work_path_given_is_kept(tmp_path, monkeypatch):
    fake_criu(tmp_path, monkeypatch, dump='echo ok > "$work/dump.log"')
    work = tmp_path / "work"

    async def scenario():
        svc = make_service()
        c = await started(svc, tmp_path)
        try:
            await sck.checkpoint(svc, c, api.CheckpointTaskRequest(
                id="c1", path=str(tmp_path / "img"),
                options=pack(runc_options.CheckpointOptions(work_path=str(work)))))
        finally:
            cleanup(svc)

    run(scenario())
    assert (work / "dump.log").read_text() == "ok\n"
    assert "--leave-running" in (tmp_path / "criu.args").read_text()


# --- restore ---------------------------------------------------------------------------------
def test_create_with_a_checkpoint_checks_criu_first(tmp_path, monkeypatch):
    fake_criu(tmp_path, monkeypatch, check='echo "Error (x): no" >&2; exit 1')
    svc = make_service()
    img = tmp_path / "img"
    img.mkdir()
    req = api.CreateTaskRequest(id="c1", bundle=str(tmp_path), checkpoint=str(img))
    with pytest.raises(TTRPCError) as e:
        sck.pending_restore(svc, req)
    assert e.value.code == Code.FAILED_PRECONDITION and "Error (x): no" in str(e.value)
    with pytest.raises(TTRPCError) as e:
        sck.pending_restore(svc, api.CreateTaskRequest(id="c1", checkpoint=str(tmp_path / "no")))
    assert e.value.code == Code.INVALID_ARGUMENT


def test_pending_restore_takes_criu_settings_from_runc_options(tmp_path, monkeypatch):
    criu = fake_criu(tmp_path, monkeypatch)
    img = tmp_path / "img"
    img.mkdir()
    opts = pack(runc_options.Options(criu_path=criu, criu_work_path="/w"))
    pending = sck.pending_restore(make_service(), api.CreateTaskRequest(
        id="c1", bundle="/b", checkpoint=str(img), options=opts))
    assert (pending.criu, pending.work_dir, pending.image_dir) == (criu, "/w", str(img))
    assert pending.status() == "created" and pending.pids() == [] and pending.spec is None
    with pytest.raises(ck.InvalidState):
        pending.pause()


class RestoredHandle:
    pid = 31337


def test_start_restored_swaps_in_the_restored_container(tmp_path, monkeypatch):
    fake_criu(tmp_path, monkeypatch, restore='echo restored > "$work/restore.log"')
    calls = []

    def prepare(engine, cid, bundle, image_dir, stdio, *, criu, work_dir):
        calls.append((cid, bundle, image_dir, work_dir))
        os.makedirs(work_dir, exist_ok=True)
        return ck.CriuJob("restore", [criu, "restore", "--work-dir", work_dir], image_dir,
                          work_dir)

    monkeypatch.setattr(ck, "prepare_restore", prepare)
    monkeypatch.setattr(ck, "finish_restore", lambda job, status: RestoredHandle())

    async def scenario():
        svc = make_service()
        img = tmp_path / "img"
        img.mkdir()
        (tmp_path / "c1").mkdir()
        req = api.CreateTaskRequest(id="c1", bundle=str(tmp_path / "c1"), checkpoint=str(img))
        # what the wired Create does: the pending stand-in instead of engine.create
        from shim.service import Container, Process
        pio = svc._open_io("c1", "", "", "")
        c = Container("c1", req.bundle, Process("c1", "c1", pio),
                      sck.pending_restore(svc, req))
        svc.containers["c1"] = c
        assert sck.is_pending(c)
        c.init.transition("start")
        pid = await sck.start_restored(svc, c)
        return svc, c, pid

    svc, c, pid = run(scenario())
    assert pid == 31337 and c.init.pid == 31337 and isinstance(c.engine, RestoredHandle)
    assert svc._by_pid[31337] is c.init and not sck.is_pending(c)
    assert calls == [("c1", c.bundle, str(tmp_path / "img"), os.path.join(c.bundle, "criu-work"))]
    assert not os.path.exists(os.path.join(c.bundle, "criu-work"))


def test_failed_restore_wakes_waiters_without_an_exit_event(tmp_path, monkeypatch):
    fake_criu(tmp_path, monkeypatch)

    def prepare(*a, **kw):
        raise ck.CheckpointError("no descriptors.json: not a container checkpoint image")

    monkeypatch.setattr(ck, "prepare_restore", prepare)

    async def scenario():
        svc = make_service()
        img = tmp_path / "img"
        img.mkdir()
        from shim.service import Container, Process
        req = api.CreateTaskRequest(id="c1", bundle=str(tmp_path), checkpoint=str(img))
        c = Container("c1", str(tmp_path), Process("c1", "c1", svc._open_io("c1", "", "", "")),
                      sck.pending_restore(svc, req))
        with pytest.raises(TTRPCError) as e:
            await sck.start_restored(svc, c)
        return svc, c, e.value

    svc, c, err = run(scenario())
    assert err.code == Code.UNKNOWN and "descriptors.json" in str(err)
    assert c.init.exited.is_set() and c.init.exit_status == 255
    assert "/tasks/exit" not in svc.events.topics


def test_discarding_a_pending_restore_wakes_waiters(tmp_path, monkeypatch):
    fake_criu(tmp_path, monkeypatch)
    svc = make_service()
    from shim.service import Container, Process
    img = tmp_path / "img"
    img.mkdir()
    req = api.CreateTaskRequest(id="c1", bundle=str(tmp_path), checkpoint=str(img))
    c = Container("c1", str(tmp_path), Process("c1", "c1", svc._open_io("c1", "", "", "")),
                  sck.pending_restore(svc, req))
    sck.discard_pending(svc, c)
    assert c.init.exited.is_set() and c.init.exit_status == 0
    assert svc.events.topics == []
