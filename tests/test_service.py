"""The Task service's state table and event ordering, against a stub engine (no root)."""

import os
import signal

import pytest

from proto.containerd.task.v2 import shim_lite as api
from proto.containerd.types.task import task_lite as types
from runtime import errors as engine_errors
from shim import aio
from shim.service import GO_ZERO_TIME_SECONDS, TaskService
from shim.ttrpc import Code, TTRPCError


class StubHandle:
    def __init__(self, pid):
        self.pid = pid
        self.calls = []
        self.next_exec_pid = pid * 10

    def exec(self, process, stdio):
        self.calls.append(("exec", process["args"]))
        self.next_exec_pid += 1
        return self.next_exec_pid

    def start(self):
        self.calls.append("start")

    def portable(self):
        return {"data": {"pid": self.pid}, "summary": None}

    def drop_config(self):
        pass

    def kill(self, sig, all=False):
        self.calls.append(("kill", sig, all) if all else ("kill", sig))

    def pids(self):
        return [self.pid] + [self.pid * 10 + i for i in range(1, self.next_exec_pid - self.pid * 10 + 1)]

    def pause(self):
        self.calls.append("pause")

    def resume(self):
        self.calls.append("resume")

    def update(self, resources):
        self.calls.append(("update", resources))

    def stats(self):
        return {"version": 1, "pids": {"current": 2, "limit": 10}}

    def delete(self, force=False):
        self.calls.append(("delete", force))


class StubEngine:
    def __init__(self):
        self.next_pid = 100
        self.handles = {}
        self.fail_with = None

    def create(self, cid, bundle, stdio, new_keyring=True, no_pivot=False):
        if self.fail_with:
            raise self.fail_with
        self.created_with = {"new_keyring": new_keyring, "no_pivot": no_pivot}
        self.next_pid += 1
        self.handles[cid] = StubHandle(self.next_pid)
        return self.handles[cid]


class RecordingEvents:
    def __init__(self):
        self.published = []

    def publish(self, topic, event):
        self.published.append((topic, event))

    @property
    def topics(self):
        return [t for t, _ in self.published]


def exec_request(cid="c1", exec_id="e1", args=("true",)):
    import json

    from proto import wkt_lite
    spec = wkt_lite.Any(type_url="types.containerd.io/opencontainers/runtime-spec/1/Process",
                       value=json.dumps({"args": list(args), "cwd": "/"}).encode())
    return api.ExecProcessRequest(id=cid, exec_id=exec_id, spec=spec)


def make_service():
    svc = TaskService("default", StubEngine(), RecordingEvents())
    svc.signalled = []
    svc.signal_pid = lambda pid, sig: svc.signalled.append((pid, sig))  # never real pids
    return svc


def run(coro):
    return aio.run(coro)


async def create(svc, cid="c1", bundle="/nonexistent/bundle"):
    return await svc.Create(api.CreateTaskRequest(id=cid, bundle=bundle))


def test_lifecycle_publishes_create_start_exit_delete_in_order():
    async def scenario():
        svc = make_service()
        pid = (await create(svc)).pid
        assert (await svc.Start(api.StartRequest(id="c1"))).pid == pid
        assert svc.on_exit(pid, 3, 1_000_000_123) is True
        deleted = await svc.Delete(api.DeleteRequest(id="c1"))
        return svc, pid, deleted

    svc, pid, deleted = run(scenario())
    assert svc.events.topics == ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]
    exit_event = svc.events.published[2][1]
    assert (exit_event.container_id, exit_event.id, exit_event.pid, exit_event.exit_status) == (
        "c1", "c1", pid, 3)
    assert exit_event.exited_at.ToNanoseconds() == 1_000_000_123
    assert (deleted.pid, deleted.exit_status) == (pid, 3)
    assert "c1" not in svc.containers


def test_state_reports_status_and_go_zero_time_while_running():
    async def scenario():
        svc = make_service()
        await create(svc)
        created = await svc.State(api.StateRequest(id="c1"))
        await svc.Start(api.StartRequest(id="c1"))
        running = await svc.State(api.StateRequest(id="c1"))
        return created, running

    created, running = run(scenario())
    assert created.status == types.CREATED
    assert running.status == types.RUNNING
    assert running.exited_at.seconds == GO_ZERO_TIME_SECONDS


def test_exit_reaped_while_starting_is_held_until_start_event():
    async def scenario():
        svc = make_service()
        pid = (await create(svc)).pid
        handle = svc.engine.handles["c1"]
        handle.start = lambda: svc.on_exit(pid, 0, 5)  # the process dies inside start
        await svc.Start(api.StartRequest(id="c1"))
        return svc

    svc = run(scenario())
    assert svc.events.topics == ["/tasks/create", "/tasks/start", "/tasks/exit"]


def test_exit_reaped_before_pid_registration_is_not_lost():
    async def scenario():
        svc = make_service()
        assert svc.on_exit(101, 7, 9) is False  # unknown pid: kept as unclaimed by the reaper
        svc.reaper._unclaimed[101] = (7, 9)
        await create(svc)  # gets pid 101
        return svc

    svc = run(scenario())
    assert svc.events.topics == ["/tasks/create", "/tasks/exit"]
    assert svc.containers["c1"].init.exit_status == 7


def test_wait_blocks_until_exit_and_many_waiters_are_woken():
    async def scenario():
        svc = make_service()
        pid = (await create(svc)).pid
        await svc.Start(api.StartRequest(id="c1"))
        waiters = [aio.create_task(svc.Wait(api.WaitRequest(id="c1"))) for _ in range(5)]
        await aio.sleep(0.01)
        assert not any(w.done() for w in waiters)
        svc.on_exit(pid, 137, 42)
        return await aio.gather(*waiters)

    results = run(scenario())
    assert [r.exit_status for r in results] == [137] * 5


@pytest.mark.parametrize("rpc,req", [
    ("State", api.StateRequest(id="nope")),
    ("Start", api.StartRequest(id="nope")),
    ("Kill", api.KillRequest(id="nope", signal=9)),
    ("Delete", api.DeleteRequest(id="nope")),
    ("Wait", api.WaitRequest(id="nope")),
])
def test_unknown_container_is_not_found(rpc, req):
    with pytest.raises(TTRPCError) as e:
        run(getattr(make_service(), rpc)(req))
    assert e.value.code == Code.NOT_FOUND


def test_duplicate_create_is_already_exists():
    async def scenario():
        svc = make_service()
        await create(svc)
        await create(svc)

    with pytest.raises(TTRPCError) as e:
        run(scenario())
    assert e.value.code == Code.ALREADY_EXISTS


def test_delete_after_delete_is_not_found_and_delete_running_is_precondition():
    async def scenario():
        svc = make_service()
        pid = (await create(svc)).pid
        await svc.Start(api.StartRequest(id="c1"))
        with pytest.raises(TTRPCError) as running:
            await svc.Delete(api.DeleteRequest(id="c1"))
        svc.on_exit(pid, 0, 1)
        await svc.Delete(api.DeleteRequest(id="c1"))
        with pytest.raises(TTRPCError) as again:
            await svc.Delete(api.DeleteRequest(id="c1"))
        return running.value.code, again.value.code

    assert run(scenario()) == (Code.FAILED_PRECONDITION, Code.NOT_FOUND)


def test_kill_exited_process_is_not_found_and_start_twice_is_precondition():
    async def scenario():
        svc = make_service()
        pid = (await create(svc)).pid
        await svc.Start(api.StartRequest(id="c1"))
        with pytest.raises(TTRPCError) as twice:
            await svc.Start(api.StartRequest(id="c1"))
        await svc.Kill(api.KillRequest(id="c1", signal=15))
        svc.on_exit(pid, 143, 1)
        with pytest.raises(TTRPCError) as dead:
            await svc.Kill(api.KillRequest(id="c1", signal=9))
        return svc, twice.value.code, dead.value.code

    svc, twice, dead = run(scenario())
    assert (twice, dead) == (Code.FAILED_PRECONDITION, Code.NOT_FOUND)
    assert ("kill", 15) in svc.engine.handles["c1"].calls


def test_delete_of_created_task_kills_and_collects_the_init():
    async def scenario():
        svc = make_service()
        pid = (await create(svc)).pid
        handle = svc.engine.handles["c1"]
        handle.kill = lambda sig: aio.get_running_loop().call_soon(svc.on_exit, pid, 128 + sig, 1)
        resp = await svc.Delete(api.DeleteRequest(id="c1"))
        return svc, resp

    svc, resp = run(scenario())
    assert resp.exit_status == 128 + signal.SIGKILL
    assert svc.events.topics == ["/tasks/create", "/tasks/exit", "/tasks/delete"]


@pytest.mark.parametrize("exc,code", [
    (engine_errors.InvalidSpec("process.args", "must not be empty"), Code.INVALID_ARGUMENT),
    (engine_errors.ContainerSetupError("exec lookup",
                                       "exec: \"nope\": executable file not found in $PATH"),
     Code.FAILED_PRECONDITION),
])
def test_engine_errors_map_to_typed_codes_and_leave_nothing(exc, code):
    svc = make_service()
    svc.engine.fail_with = exc
    with pytest.raises(TTRPCError) as e:
        run(create(svc))
    assert e.value.code == code
    assert svc.containers == {} and svc.events.published == []


def test_connect_never_fails_and_shutdown_waits_for_containers():
    async def scenario():
        svc = make_service()
        unknown = await svc.Connect(api.ConnectRequest(id="nope"))
        await create(svc)
        await svc.Shutdown(api.ShutdownRequest(id="c1"))
        early = svc.shutdown_requested.is_set()
        return unknown, early

    unknown, early = run(scenario())
    assert unknown.task_pid == 0 and unknown.shim_pid > 0
    assert early is False


def test_exec_lifecycle_events_and_state():
    async def scenario():
        svc = make_service()
        await create(svc)
        await svc.Start(api.StartRequest(id="c1"))
        await svc.Exec(exec_request(args=["sh", "-c", "exit 4"]))
        created = await svc.State(api.StateRequest(id="c1", exec_id="e1"))
        pid = (await svc.Start(api.StartRequest(id="c1", exec_id="e1"))).pid
        waiter = aio.create_task(svc.Wait(api.WaitRequest(id="c1", exec_id="e1")))
        svc.on_exit(pid, 4, 77)
        waited = await waiter
        deleted = await svc.Delete(api.DeleteRequest(id="c1", exec_id="e1"))
        return svc, pid, created, waited, deleted

    svc, pid, created, waited, deleted = run(scenario())
    assert svc.events.topics == ["/tasks/create", "/tasks/start", "/tasks/exec-added",
                                 "/tasks/exec-started", "/tasks/exit"]
    started = svc.events.published[3][1]
    assert (started.exec_id, started.pid) == ("e1", pid)
    exit_event = svc.events.published[4][1]
    assert (exit_event.id, exit_event.pid, exit_event.exit_status) == ("e1", pid, 4)
    assert created.status == types.CREATED and created.exec_id == "e1"
    assert waited.exit_status == 4 and deleted.exit_status == 4
    assert svc.containers["c1"].execs == {}
    assert ("exec", ["sh", "-c", "exit 4"]) in svc.engine.handles["c1"].calls


def test_init_exit_is_published_after_the_exits_of_running_execs():
    async def scenario():
        svc = make_service()
        init_pid = (await create(svc)).pid
        await svc.Start(api.StartRequest(id="c1"))
        await svc.Exec(exec_request(exec_id="a"))
        await svc.Exec(exec_request(exec_id="b"))
        a = (await svc.Start(api.StartRequest(id="c1", exec_id="a"))).pid
        b = (await svc.Start(api.StartRequest(id="c1", exec_id="b"))).pid
        svc.on_exit(init_pid, 0, 1)  # reaped first: must wait for a and b
        svc.on_exit(b, 137, 2)
        svc.on_exit(a, 137, 3)
        return svc

    svc = run(scenario())
    exits = [(e.id, e.exit_status) for t, e in svc.events.published if t == "/tasks/exit"]
    assert exits == [("b", 137), ("a", 137), ("c1", 0)]
    assert sorted(sig for _, sig in svc.signalled) == [signal.SIGKILL] * 2  # the execs, killed


def test_exec_errors_match_the_runc_shim():
    async def scenario():
        svc = make_service()
        init_pid = (await create(svc)).pid
        codes = {}
        with pytest.raises(TTRPCError) as e:
            await svc.Exec(exec_request())
        codes["exec in created container"] = e.value.code
        await svc.Start(api.StartRequest(id="c1"))
        await svc.Exec(exec_request())
        with pytest.raises(TTRPCError) as e:
            await svc.Exec(exec_request())
        codes["duplicate exec id"] = e.value.code
        with pytest.raises(TTRPCError) as e:
            await svc.Kill(api.KillRequest(id="c1", exec_id="e1", signal=9))
        codes["kill exec not started"] = e.value.code
        with pytest.raises(TTRPCError) as e:
            await svc.State(api.StateRequest(id="c1", exec_id="nope"))
        codes["unknown exec"] = e.value.code
        svc.on_exit(init_pid, 0, 1)
        with pytest.raises(TTRPCError) as e:
            await svc.Start(api.StartRequest(id="c1", exec_id="e1"))
        codes["start exec after init exit"] = e.value.code
        return codes

    assert run(scenario()) == {
        "exec in created container": Code.FAILED_PRECONDITION,
        "duplicate exec id": Code.ALREADY_EXISTS,
        "kill exec not started": Code.FAILED_PRECONDITION,
        "unknown exec": Code.NOT_FOUND,
        "start exec after init exit": Code.FAILED_PRECONDITION,
    }


def test_exec_spec_must_be_a_json_process():
    from proto import wkt_lite

    async def scenario():
        svc = make_service()
        await create(svc)
        await svc.Start(api.StartRequest(id="c1"))
        bad = api.ExecProcessRequest(id="c1", exec_id="x", spec=wkt_lite.Any(value=b"{nope"))
        with pytest.raises(TTRPCError) as e:
            await svc.Exec(bad)
        return e.value

    err = run(scenario())
    assert err.code == Code.INVALID_ARGUMENT and "exec spec" in err.message


def test_pids_pause_resume_update_stats():
    import json

    from proto import wkt_lite

    from proto.cgroups.v1 import metrics_pb2
    from proto.containerd.runc.options import oci_pb2

    async def scenario():
        svc = make_service()
        await create(svc)
        await svc.Start(api.StartRequest(id="c1"))
        await svc.Exec(exec_request(exec_id="e1"))
        exec_pid = (await svc.Start(api.StartRequest(id="c1", exec_id="e1"))).pid
        pids = await svc.Pids(api.PidsRequest(id="c1"))
        await svc.Pause(api.PauseRequest(id="c1"))
        paused = await svc.State(api.StateRequest(id="c1"))
        await svc.Resume(api.ResumeRequest(id="c1"))
        with pytest.raises(TTRPCError) as not_paused:
            await svc.Resume(api.ResumeRequest(id="c1"))
        resources = wkt_lite.Any(type_url="types.containerd.io/opencontainers/runtime-spec/1/LinuxResources",
                                value=json.dumps({"pids": {"limit": 5}}).encode())
        await svc.Update(api.UpdateTaskRequest(id="c1", resources=resources))
        stats = await svc.Stats(api.StatsRequest(id="c1"))
        await svc.Kill(api.KillRequest(id="c1", signal=9, all=True))
        return svc, exec_pid, pids, paused, not_paused.value, stats

    svc, exec_pid, pids, paused, not_paused, stats = run(scenario())
    infos = {p.pid: p.info for p in pids.processes}
    assert exec_pid in infos and len(infos) == 2
    assert infos[exec_pid].type_url == "containerd.runc.v1.ProcessDetails"
    assert oci_pb2.ProcessDetails.FromString(infos[exec_pid].value).exec_id == "e1"
    assert paused.status == types.PAUSED
    assert not_paused.code == Code.FAILED_PRECONDITION
    handle = svc.engine.handles["c1"]
    assert ["pause", "resume", ("update", {"pids": {"limit": 5}}), ("kill", 9, True)] == [
        c for c in handle.calls if c in ("pause", "resume") or c[0] in ("update", "kill")]
    assert stats.stats.type_url == "io.containerd.cgroups.v1.Metrics"
    assert metrics_pb2.Metrics.FromString(stats.stats.value).pids.current == 2
    assert [t for t in svc.events.topics if t in ("/tasks/paused", "/tasks/resumed")] == [
        "/tasks/paused", "/tasks/resumed"]


def test_update_rejects_resources_that_are_not_linux_resources_json():
    from proto import wkt_lite

    async def scenario():
        svc = make_service()
        await create(svc)
        await svc.Start(api.StartRequest(id="c1"))
        with pytest.raises(TTRPCError) as e:
            await svc.Update(api.UpdateTaskRequest(id="c1", resources=wkt_lite.Any(type_url="x", value=b"{}")))
        return e.value

    assert run(scenario()).code == Code.INVALID_ARGUMENT


def test_oom_kill_is_published_before_the_exit_it_caused():
    async def scenario():
        svc = make_service()
        pid = (await create(svc)).pid
        handle = svc.engine.handles["c1"]
        kills = [0]
        handle.oom_kill_count = lambda: kills[0]
        svc.containers["c1"].oom_kills = 0
        await svc.Start(api.StartRequest(id="c1"))
        kills[0] = 1  # the kernel OOM-killed the init...
        svc.on_exit(pid, 137, 5)  # ...and its exit is reaped before any OOM notification
        return svc

    svc = run(scenario())
    assert svc.events.topics[-2:] == ["/tasks/oom", "/tasks/exit"]
    assert svc.events.topics.count("/tasks/oom") == 1


# ---- create in a fork (what the daemon does) -----------------------------------------------

class ForkingStubEngine(StubEngine):
    """create() runs in the helper fork: what it records there is lost, as it should be; the
    service then adopt()s the container from the portable form the fork sent back."""

    def __init__(self, console_w=None):
        super().__init__()
        self.console_w = console_w
        self.loaded = []

    def create(self, cid, bundle, stdio, **kw):
        handle = super().create(cid, bundle, stdio, **kw)
        if self.console_w is not None:
            stdio.console_fd = self.console_w
        return handle

    def adopt(self, cid, portable):
        self.loaded.append(cid)
        assert portable == {"data": {"pid": portable["data"]["pid"]}, "summary": None}
        return StubHandle(4242)


def test_create_in_fork_maps_the_helpers_error_to_its_code():
    svc = make_service()
    svc.engine = ForkingStubEngine()
    svc.engine.fail_with = engine_errors.InvalidSpec("process.args", "must not be empty")
    svc.create_in_fork = True

    async def main():
        with pytest.raises(TTRPCError) as e:
            await create(svc)
        return e.value

    err = run(main())
    assert err.code == Code.INVALID_ARGUMENT and "process.args" in err.message
    assert svc.containers == {} and svc.engine.loaded == []


def test_create_in_fork_loads_the_container_and_gets_the_terminal_master():
    from runtime.container import Stdio

    r, w = os.pipe()
    try:
        svc = make_service()
        svc.engine = ForkingStubEngine(console_w=w)
        svc.create_in_fork = True
        stdio = Stdio()
        handle, _ = svc._create("c1", "/nonexistent/bundle", stdio)
        assert handle.pid == 4242 and svc.engine.loaded == ["c1"]  # the adopted handle
        assert svc.engine.handles == {}  # what create recorded stayed in the fork
        console = stdio.console_fd
        assert console is not None and console != w  # a new fd, received over SCM_RIGHTS
        os.write(console, b"through the fork")
        assert os.read(r, 100) == b"through the fork"
        os.close(console)
    finally:
        os.close(r)
        os.close(w)


def test_create_in_fork_sets_up_the_oom_watch_there():
    """The OOM count and the v1 eventfd come from the fork too (no cgroup code in the daemon):
    the container starts from the count already there and watches the received fd."""
    r, w = os.pipe()
    try:
        svc = make_service()
        engine = svc.engine = ForkingStubEngine()
        stub_create = engine.create

        def create_with_oom(cid, bundle, stdio, **kw):
            handle = stub_create(cid, bundle, stdio, **kw)
            handle.oom_kill_count = lambda: 3
            handle.oom_event_fd = lambda: os.dup(r)
            return handle

        engine.create = create_with_oom
        svc.create_in_fork = True
        svc._watch = lambda p: None

        async def main():
            await create(svc)
            c = svc.containers["c1"]
            os.write(w, b"x")
            return c.oom_kills, c.oom_fd, os.read(c.oom_fd, 1)

        kills, fd, got = run(main())
        assert kills == 3 and fd not in (r, w) and got == b"x"  # the pipe, through the fork
        os.close(fd)
    finally:
        os.close(r)
        os.close(w)


def test_exec_in_fork_returns_the_pid_and_maps_errors():
    """Exec's engine work runs in a fork too: the pid comes back; what the fork recorded stays
    there; a failure arrives as its ttrpc code."""
    from runtime.container import Stdio

    svc = make_service()
    svc.engine = ForkingStubEngine()
    svc.create_in_fork = True

    async def main():
        await create(svc)
        return svc.containers["c1"]

    svc._watch = lambda p: None
    c = run(main())
    assert c.engine.pid == 4242
    pid = svc._exec(c, {"args": ["true"]}, Stdio())
    assert pid == 42421 and c.engine.calls == []  # computed in the fork, recorded there only

    def refuse(process, stdio):
        raise engine_errors.ContainerSetupError("exec lookup", "/bin/nope", "no such file")

    c.engine.exec = refuse
    with pytest.raises(TTRPCError) as e:
        svc._exec(c, {"args": ["nope"]}, Stdio())
    assert e.value.code == Code.FAILED_PRECONDITION and "/bin/nope" in e.value.message


def test_a_helper_that_dies_is_an_error_not_a_hang():
    """The create fork killed before it answers (OOM killer, a crash in C): Create fails with
    Unknown naming what died; nothing waits forever."""
    from runtime.container import Stdio

    svc = make_service()
    svc.engine = ForkingStubEngine()
    svc.create_in_fork = True

    def die(cid, bundle, stdio, **kw):
        os._exit(3)

    svc.engine.create = die
    with pytest.raises(TTRPCError) as e:
        svc._create("c1", "/nonexistent/bundle", Stdio())
    assert e.value.code == Code.UNKNOWN and "create c1: helper died" in e.value.message
    assert svc.engine.loaded == []


def test_create_passes_the_containers_options_to_the_engine():
    """no_pivot_root and no_new_keyring from CreateTaskRequest.options (here the runc shim's
    own Options type, as containerd sends the runtime options); a bad one is InvalidArgument."""
    from proto import wkt_lite
    from proto.containerd.runc.options import oci_lite

    async def scenario():
        svc = make_service()
        await create(svc, "plain")
        assert svc.engine.created_with == {"new_keyring": True, "no_pivot": False}
        opts = wkt_lite.Any(type_url="containerd.runc.v1.Options",
                            value=oci_lite.Options(no_pivot_root=True,
                                                   no_new_keyring=True).SerializeToString())
        await svc.Create(api.CreateTaskRequest(id="set", bundle="/nonexistent/b", options=opts))
        assert svc.engine.created_with == {"new_keyring": False, "no_pivot": True}
        bad = wkt_lite.Any(type_url="runtimeoptions.v1.Options",
                           value=b"\x1a\x0cno_pivot = 1")  # config_body with an unknown key
        with pytest.raises(TTRPCError) as e:
            await svc.Create(api.CreateTaskRequest(id="bad", bundle="/nonexistent/b",
                                                   options=bad))
        assert e.value.code == Code.INVALID_ARGUMENT and "no_pivot" in str(e.value)
        assert "bad" not in svc.containers
    run(scenario())
