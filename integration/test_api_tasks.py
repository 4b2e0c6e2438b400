"""Tasks through containerd's gRPC API (integration/grpc_client.py), where ctr 1.6 cannot go:
Tasks.Update, Tasks.Wait, exec with a full process spec, exec error codes, ListPids with
ProcessDetails, and the event stream. Every scenario runs with the runc shim and with pyshim
and asserts the same, except where a comment says pyshim is deliberately better.

Containers are made with `ctr run -d` (cgroupsPath /<namespace>/<id>) and removed with
`ctr container rm`; everything in between goes through the API.
"""
from __future__ import annotations

import os
import signal
import time

import grpc
import pytest

from integration.containerd import BUSYBOX_IMAGE as IMAGE, PYSHIM_RUNTIME
from integration.grpc_client import Containerd, OutputFifos, Status, status_of, tasks_pb2
from integration.test_ctr import T, gone, ok

CGROUP_ROOT = "/sys/fs/cgroup"
SLEEP = ["sleep", "1000"]


@pytest.fixture
def api(containerd):
    with Containerd(containerd.address, containerd.namespace, timeout=T) as a:
        yield a


def _run_detached(c, runtime, cid, *cmd, opts=()):
    ok(c.ctr("run", "-d", "--runtime", runtime, *opts, IMAGE, cid, *(cmd or SLEEP), timeout=T))
    return c.wait_task_status(cid, "RUNNING")[0]


def _remove(c, api, cid, exec_ids=()):
    """Kill what still runs, wait for it, delete the processes, the task and the container."""
    for e in exec_ids:
        if status_of(api.kill, cid, signal.SIGKILL, e) == grpc.StatusCode.OK:
            api.wait(cid, e)
        api.delete_process(cid, e)
    if api.get(cid).status != Status.STOPPED:
        api.kill(cid, signal.SIGKILL)
        api.wait(cid)
    api.delete(cid)
    ok(c.ctr("container", "rm", cid, timeout=T))
    gone(c, cid)


def _cgroup_file(controller: str, cid: str, v1_name: str, v2_name: str) -> str:
    """The container's cgroup file (ctr's cgroupsPath is /default/<id>), v1 or v2."""
    v1 = os.path.join(CGROUP_ROOT, controller, "default", cid, v1_name)
    if os.path.exists(v1):
        return v1
    return os.path.join(CGROUP_ROOT, "default", cid, v2_name)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def _ns(ts) -> int:
    return ts.seconds * 10**9 + ts.nanos


# ---- (a) Update ----------------------------------------------------------------------------

def test_update_memory_and_pids_limits(containerd, runtime, cid, api):
    c = containerd
    _run_detached(c, runtime, cid, opts=("--memory-limit", str(64 << 20)))
    mem = _cgroup_file("memory", cid, "memory.limit_in_bytes", "memory.max")
    pids = _cgroup_file("pids", cid, "pids.max", "pids.max")
    assert _read(mem) == str(64 << 20)
    assert _read(pids) == "max"

    api.update(cid, {"memory": {"limit": 96 << 20}, "pids": {"limit": 42}})

    assert _read(mem) == str(96 << 20)
    assert _read(pids) == "42"
    m = api.metrics(cid)  # io.containerd.cgroups.v1.Metrics (v2: memory.usage_limit)
    limit = m.memory.usage.limit if m.DESCRIPTOR.full_name.endswith("v1.Metrics") else (
        m.memory.usage_limit)
    assert limit == 96 << 20
    assert m.pids.limit == 42 and m.pids.current >= 1
    _remove(c, api, cid)


RESOURCES_URL = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"
# What the runc shim answers to bad updates (it ignores type_url and json-decodes the value).
UPDATE_ERRORS = {
    "wrong type_url": grpc.StatusCode.OK,  # runc: {} decoded as LinuxResources, nothing to do
    "not JSON": grpc.StatusCode.UNKNOWN,
    "memory limit below usage": grpc.StatusCode.UNKNOWN,  # "unable to set memory limit"
}
# Deliberately better in pyshim: resources that are not LinuxResources JSON are an
# INVALID_ARGUMENT (not a silent no-op, not UNKNOWN); a limit the kernel refuses (EBUSY) is a
# FAILED_PRECONDITION naming the file and the spec field.
UPDATE_PYSHIM_BETTER = {
    "wrong type_url": grpc.StatusCode.INVALID_ARGUMENT,
    "not JSON": grpc.StatusCode.INVALID_ARGUMENT,
    "memory limit below usage": grpc.StatusCode.FAILED_PRECONDITION,
}


def test_update_errors(containerd, runtime, cid, api):
    c = containerd
    _run_detached(c, runtime, cid, opts=("--memory-limit", str(64 << 20)))
    cases = {
        "wrong type_url": ("types.containerd.io/no/such/Type", b"{}"),
        "not JSON": (RESOURCES_URL, b"not json"),
        "memory limit below usage": (RESOURCES_URL, b'{"memory": {"limit": 4096}}'),
    }
    got = {}
    for name, (url, value) in cases.items():
        req = tasks_pb2.UpdateTaskRequest(container_id=cid)
        req.resources.type_url, req.resources.value = url, value
        got[name] = status_of(api.tasks.Update, req, metadata=api.metadata, timeout=T).name
    want = dict(UPDATE_ERRORS)
    if runtime == PYSHIM_RUNTIME:
        want.update(UPDATE_PYSHIM_BETTER)
    assert got == {k: v.name for k, v in want.items()}
    assert _read(_cgroup_file("memory", cid, "memory.limit_in_bytes", "memory.max")) == str(64 << 20)
    assert api.get(cid).status == Status.RUNNING
    _remove(c, api, cid)


def test_exec_into_a_container_one_pid_below_its_limit(containerd, runtime, cid, api):
    c = containerd
    _run_detached(c, runtime, cid)
    try:
        api.update(cid, {"pids": {"limit": 2}})  # the init, and room for one more
        status, out, _ = api.run_exec(cid, ["echo", "hi"])
    finally:
        _remove(c, api, cid)
    assert (status, out) == (0, "hi\n")


# ---- (b) Wait ------------------------------------------------------------------------------

def test_wait_returns_the_exit_status_and_exited_at(containerd, runtime, cid, api):
    c = containerd
    events = api.subscribe('topic=="/tasks/exit"')
    # pid 1 ignores SIGTERM unless it handles it: this one exits 7 on it
    _run_detached(c, runtime, cid, "sh", "-c", 'trap "exit 7" TERM; while true; do sleep 0.05; done')
    with pytest.raises(TimeoutError):
        api.wait(cid, timeout=0.5)  # still running: Wait blocks
    waiter = api.wait_future(cid)
    before = time.time_ns()
    api.kill(cid, signal.SIGTERM)
    w = waiter.result(T)
    after = time.time_ns()
    assert w.exit_status == 7
    assert before - 10**9 <= _ns(w.exited_at) <= after + 10**9, (before, w.exited_at, after)
    # every later look says the same: Wait again, Get, the exit event, Delete
    again = api.wait(cid, timeout=5)
    assert (again.exit_status, _ns(again.exited_at)) == (7, _ns(w.exited_at))
    p = api.get(cid)
    assert p.status == Status.STOPPED
    assert (p.exit_status, _ns(p.exited_at)) == (7, _ns(w.exited_at))
    exit_ev = events.wait_for(lambda evs: [e.event for e in evs if e.container_id == cid])[0]
    events.close()
    assert (exit_ev.exit_status, _ns(exit_ev.exited_at), exit_ev.id) == (7, _ns(w.exited_at), cid)
    d = api.delete(cid)
    assert (d.exit_status, _ns(d.exited_at), d.pid) == (7, _ns(w.exited_at), p.pid)
    ok(c.ctr("container", "rm", cid, timeout=T))
    gone(c, cid)


# ---- (c) Exec ------------------------------------------------------------------------------

def test_exec_with_a_full_process_spec(containerd, runtime, cid, api):
    c = containerd
    _run_detached(c, runtime, cid)
    spec = api.exec_spec(cid, ["sh", "-c", 'echo "$FOO $(pwd) $(id -u):$(id -g)"; echo err >&2; exit 5'])
    spec["env"] = spec.get("env", []) + ["FOO=from-the-spec"]
    spec["cwd"] = "/etc"
    spec["user"] = {"uid": 1000, "gid": 1000}
    with OutputFifos("e1") as io:
        api.exec(cid, "e1", spec, stdout=io.stdout, stderr=io.stderr)
        assert api.get(cid, "e1").status == Status.CREATED
        pid = api.start(cid, "e1")
        assert pid > 0
        w = api.wait(cid, "e1")
        out, err = io.output()
    assert (out, err) == ("from-the-spec /etc 1000:1000\n", "err\n")
    assert w.exit_status == 5 and _ns(w.exited_at) > 0
    p = api.get(cid, "e1")
    assert (p.status, p.pid, p.exit_status, _ns(p.exited_at)) == (
        Status.STOPPED, pid, 5, _ns(w.exited_at))
    d = api.delete_process(cid, "e1")
    assert (d.pid, d.exit_status, _ns(d.exited_at)) == (pid, 5, _ns(w.exited_at))
    assert status_of(api.get, cid, "e1") == grpc.StatusCode.NOT_FOUND
    assert api.get(cid).status == Status.RUNNING  # the init is untouched
    _remove(c, api, cid)


# What the runc shim answers, error by error (grpc codes through containerd). pyshim answers
# the same, except where PYSHIM_BETTER says otherwise.
EXEC_ERRORS = {
    "exec: duplicate id (created)": grpc.StatusCode.ALREADY_EXISTS,
    "exec: duplicate id (running)": grpc.StatusCode.ALREADY_EXISTS,
    "exec: duplicate id (stopped, not deleted)": grpc.StatusCode.ALREADY_EXISTS,
    "exec: empty id": grpc.StatusCode.INVALID_ARGUMENT,  # containerd's own check
    "kill: exec not started": grpc.StatusCode.FAILED_PRECONDITION,
    "kill: exec exited": grpc.StatusCode.NOT_FOUND,
    "kill: no such exec": grpc.StatusCode.NOT_FOUND,
    "start: no such exec": grpc.StatusCode.NOT_FOUND,
    "wait: no such exec": grpc.StatusCode.NOT_FOUND,
    "delete: no such exec": grpc.StatusCode.NOT_FOUND,
    # runc's process state machine returns untyped errors ("cannot start a running process",
    # "cannot delete a running process", "cannot exec in a stopped state"), which containerd
    # passes on as UNKNOWN.
    "start: exec already running": grpc.StatusCode.UNKNOWN,
    "delete: exec running": grpc.StatusCode.UNKNOWN,
    "start: exec exited": grpc.StatusCode.UNKNOWN,
    "exec: task stopped": grpc.StatusCode.UNKNOWN,
    "kill: task stopped": grpc.StatusCode.NOT_FOUND,
    "exec: task deleted": grpc.StatusCode.NOT_FOUND,
}
# Deliberately better in pyshim: a request the process's state does not allow is a typed
# FAILED_PRECONDITION (shim/service.py TRANSITIONS; docs/architecture.md "Errors"), so a client
# can tell "wrong state" (errdefs.IsFailedPrecondition) from a runtime failure; runc gives
# UNKNOWN for the same cases. Same message content otherwise ("cannot start", "is stopped").
PYSHIM_BETTER = {
    "start: exec already running": grpc.StatusCode.FAILED_PRECONDITION,
    "delete: exec running": grpc.StatusCode.FAILED_PRECONDITION,
    "start: exec exited": grpc.StatusCode.FAILED_PRECONDITION,
    "exec: task stopped": grpc.StatusCode.FAILED_PRECONDITION,
}


def test_exec_errors(containerd, runtime, cid, api):
    c = containerd
    _run_detached(c, runtime, cid)
    spec = api.exec_spec(cid, SLEEP)
    got = {}

    def check(name, fn, *args):
        try:
            fn(*args)
            got[name] = grpc.StatusCode.OK
        except grpc.RpcError as e:
            got[name] = e.code()

    api.exec(cid, "a", spec)
    check("exec: duplicate id (created)", api.exec, cid, "a", spec)
    check("kill: exec not started", api.kill, cid, signal.SIGKILL, "a")
    api.start(cid, "a")
    check("exec: duplicate id (running)", api.exec, cid, "a", spec)
    check("start: exec already running", api.start, cid, "a")
    check("delete: exec running", api.delete_process, cid, "a")
    api.kill(cid, signal.SIGKILL, "a")
    assert api.wait(cid, "a").exit_status == 137
    check("exec: duplicate id (stopped, not deleted)", api.exec, cid, "a", spec)
    check("kill: exec exited", api.kill, cid, signal.SIGKILL, "a")
    check("start: exec exited", api.start, cid, "a")
    api.delete_process(cid, "a")
    check("exec: empty id", api.exec, cid, "", spec)
    check("kill: no such exec", api.kill, cid, signal.SIGKILL, "nope")
    check("start: no such exec", api.start, cid, "nope")
    check("wait: no such exec", api.wait, cid, "nope")
    check("delete: no such exec", api.delete_process, cid, "nope")
    api.kill(cid, signal.SIGKILL)
    api.wait(cid)
    check("exec: task stopped", api.exec, cid, "late", spec)
    check("kill: task stopped", api.kill, cid, signal.SIGKILL)
    api.delete(cid)
    check("exec: task deleted", api.exec, cid, "late", spec)
    ok(c.ctr("container", "rm", cid, timeout=T))
    gone(c, cid)

    want = dict(EXEC_ERRORS)
    if runtime == PYSHIM_RUNTIME:
        want.update(PYSHIM_BETTER)
    assert {k: v.name for k, v in got.items()} == {k: v.name for k, v in want.items()}


def test_exec_in_a_paused_task_is_refused(containerd, runtime, cid, api, request):
    # The Exec itself is refused: runc UNKNOWN 'cannot exec in a paused state', pyshim
    # FAILED_PRECONDITION (asserted below only as "not OK", the same for both).
    c = containerd
    _run_detached(c, runtime, cid)
    api.pause(cid)
    try:
        code = status_of(api.exec, cid, "p", api.exec_spec(cid, ["true"]))
        if code == grpc.StatusCode.OK:
            api.delete_process(cid, "p")
    finally:
        api.resume(cid)
        _remove(c, api, cid)
    assert code != grpc.StatusCode.OK


# ---- (d) ListPids --------------------------------------------------------------------------

def test_list_pids_names_the_exec_processes(containerd, runtime, cid, api):
    c = containerd
    init_pid = _run_detached(c, runtime, cid)
    execs = {}
    for e in ("sleeper-a", "sleeper-b"):
        api.exec(cid, e, api.exec_spec(cid, SLEEP))
        execs[e] = api.start(cid, e)
    pids = {p.pid: p for p in api.list_pids(cid)}
    assert set(pids) == {init_pid, *execs.values()}, pids
    assert pids[init_pid].exec_id is None and pids[init_pid].info is None
    for e, pid in execs.items():
        assert pids[pid].exec_id == e
        assert type(pids[pid].info).DESCRIPTOR.full_name == "containerd.runc.v1.ProcessDetails"
    # an exec that has exited is gone from the list, its details with it
    api.kill(cid, signal.SIGKILL, "sleeper-a")
    api.wait(cid, "sleeper-a")
    assert {p.pid: p.exec_id for p in api.list_pids(cid)} == {
        init_pid: None, execs["sleeper-b"]: "sleeper-b"}
    _remove(c, api, cid, exec_ids=list(execs))


# ---- (e) the event stream ------------------------------------------------------------------

TASK_TOPICS = 'topic~="^/tasks/"'


def _until(evs, cid, topic, count=1):
    """cid's events once `count` of them have `topic` (None before)."""
    mine = [e for e in evs if e.container_id == cid]
    return mine if sum(e.topic == topic for e in mine) >= count else None


def test_events_of_a_run(containerd, runtime, cid, api):
    c = containerd
    events = api.subscribe(TASK_TOPICS)
    r = c.ctr("run", "--rm", "--runtime", runtime, IMAGE, cid, "sh", "-c", "exit 3", timeout=T)
    assert r.returncode == 3, r
    got = events.wait_for(lambda evs: _until(evs, cid, "/tasks/delete"))
    events.close()
    assert [e.topic for e in got] == ["/tasks/create", "/tasks/start", "/tasks/exit",
                                      "/tasks/delete"], got
    create, start, exit_, delete = (e.event for e in got)
    assert create.pid == start.pid == exit_.pid == delete.pid > 0
    assert (exit_.id, exit_.exit_status, delete.exit_status) == (cid, 3, 3)
    assert _ns(exit_.exited_at) == _ns(delete.exited_at) > 0
    assert [e.timestamp_ns for e in got] == sorted(e.timestamp_ns for e in got)
    gone(c, cid)


def test_events_of_an_exec(containerd, runtime, cid, api):
    c = containerd
    _run_detached(c, runtime, cid)
    events = api.subscribe(TASK_TOPICS)
    api.exec(cid, "e1", api.exec_spec(cid, ["sh", "-c", "exit 4"]))
    pid = api.start(cid, "e1")
    assert api.wait(cid, "e1").exit_status == 4
    api.delete_process(cid, "e1")
    got = events.wait_for(lambda evs: _until(evs, cid, "/tasks/exit"))
    events.close()
    assert [e.topic for e in got] == ["/tasks/exec-added", "/tasks/exec-started",
                                      "/tasks/exit"], got
    added, started, exit_ = (e.event for e in got)
    assert added.exec_id == started.exec_id == exit_.id == "e1"
    assert started.pid == exit_.pid == pid and exit_.exit_status == 4
    _remove(c, api, cid)


def test_exec_exits_come_before_the_init_exit(containerd, runtime, cid, api):
    c = containerd
    init_pid = _run_detached(c, runtime, cid)
    execs = ("e1", "e2", "e3")
    for e in execs:
        api.exec(cid, e, api.exec_spec(cid, SLEEP))
        api.start(cid, e)
    events = api.subscribe(TASK_TOPICS)
    api.kill(cid, signal.SIGKILL)  # the init only: its pid namespace takes the execs with it
    assert api.wait(cid).exit_status == 137
    for e in execs:
        assert api.wait(cid, e).exit_status == 137
    got = events.wait_for(lambda evs: _until(evs, cid, "/tasks/exit", count=4))
    events.close()
    exits = [e.event for e in got if e.topic == "/tasks/exit"]
    assert len(exits) == 4, got
    # containerd relies on it: once the init's exit is out, the task's processes are all gone
    assert sorted(x.id for x in exits[:3]) == list(execs), got
    assert (exits[3].id, exits[3].pid, exits[3].exit_status) == (cid, init_pid, 137), got
    _remove(c, api, cid, exec_ids=execs)
