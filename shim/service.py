"""The Task service: containers, their processes, and the transitions containerd drives.

Invariants:
- One event-loop thread (shim.aio) owns this state; handlers never block it for long (the engine's calls are
  short and bounded; waits are awaited).
- A process moves only along TRANSITIONS; anything else is FailedPrecondition or NotFound,
  decided here, not by the engine.
- Events for one process go out create -> start -> exit -> delete (exec: exec-added ->
  exec-started -> exit): an exit reaped while its start is still being handled is held until
  the start event is queued.
- The init's exit is published after the exits of the container's running execs (containerd
  relies on it); it is held until they are reaped, bounded by INIT_EXIT_HOLD.
- Every exit reaped is published exactly once, and waiters are woken after it is published.
- An OOM kill is published (/tasks/oom) BEFORE the exit it caused: every exit first compares the
  cgroup's oom_kill count with the last one seen; the v1 eventfd covers OOMs that kill no
  process of ours.
"""

from __future__ import annotations

import os
import signal
import time

from proto import wkt_lite as wkt
from proto.containerd.events import task_lite as ev
from proto.containerd.runc.options import oci_lite as runc_options
from proto.containerd.task.v2 import shim_lite as api
from proto.containerd.types.task import task_lite as types
from runtime import cgwarm, fastjson
from runtime.container import Engine
from runtime.record import Record, field
from shim import aio, checkpoint, config, errors, metrics, rootfs
from shim.events import EventQueue
from shim.log import getLogger
from shim.reaper import Reaper
from shim.stdio import ProcessIO
from shim.ttrpc import Code, TTRPCError

log = getLogger("pyshim.service")

CREATED, STARTING, RUNNING, STOPPED, DELETED = "created", "starting", "running", "stopped", "deleted"
TRANSITIONS = {
    (CREATED, "start"): STARTING,
    (STARTING, "started"): RUNNING,
    (STARTING, "start-failed"): STOPPED,
    (CREATED, "exit"): STOPPED,
    (STARTING, "exit"): STOPPED,   # held until the start event is out: see _exited
    (RUNNING, "exit"): STOPPED,
    (CREATED, "delete"): DELETED,
    (STOPPED, "delete"): DELETED,
}
_STATUS = {CREATED: types.CREATED, STARTING: types.CREATED, RUNNING: types.RUNNING,
           STOPPED: types.STOPPED}
GO_ZERO_TIME_SECONDS = -62135596800  # time.Time{} as containerd expects for "not exited"
DELETE_KILL_TIMEOUT = 5.0
INIT_EXIT_HOLD = 5.0  # at most this long does an init exit wait for its execs' exits
PROCESS_SPEC_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process"
RESOURCES_SPEC_SUFFIX = "runtime-spec/1/LinuxResources"


class Process(Record):
    __eq__, __hash__ = object.__eq__, object.__hash__  # identity: one entry per process
    container_id: str
    id: str  # exec id, or the container id for the init process
    io: ProcessIO
    terminal: bool = False
    pid: int = 0
    state: str = CREATED
    exit_status: int = 0
    exited_at_ns: int = 0
    exited: aio.Event = field(default_factory=aio.Event)
    held_exit: tuple[int, int] | None = None
    spec: dict | None = None  # an exec's OCI process; None for the init

    def transition(self, action: str) -> None:
        nxt = TRANSITIONS.get((self.state, action))
        if nxt is None:
            raise errors.failed_precondition(f"process {self.id} is {self.state}: cannot {action}")
        self.state = nxt

    def exited_at(self, ts) -> None:
        if self.exited_at_ns:
            ts.FromNanoseconds(self.exited_at_ns)
        else:
            ts.seconds = GO_ZERO_TIME_SECONDS


class Container(Record):
    __eq__, __hash__ = object.__eq__, object.__hash__
    id: str
    bundle: str
    init: Process
    engine: object  # runtime.container.Container
    rootfs_mounted: bool = False
    execs: dict[str, Process] = field(default_factory=dict)
    paused: bool = False
    oom_kills: int = 0  # the cgroup's oom_kill count already published
    oom_fd: int | None = None

    def running_execs(self) -> list[Process]:
        return [p for p in self.execs.values() if p.state in (STARTING, RUNNING)]


class TaskService:
    def __init__(self, namespace: str, engine: Engine, events: EventQueue,
                 create_in_fork: bool = False):
        self.namespace = namespace
        self.engine = engine
        # The daemon runs engine.create in a short-lived fork (see _create): tests with a stub
        # engine keep it in-process.
        self.create_in_fork = create_in_fork
        self.events = events
        self.reaper = Reaper(self.on_exit)
        self.signal_pid = _kill_quietly  # tests replace it: they must never signal real pids
        self.containers: dict[str, Container] = {}
        self._by_pid: dict[int, Process] = {}
        self.shutdown_requested = aio.Event()

    # ---- lookups -------------------------------------------------------------------------

    def _container(self, cid: str) -> Container:
        c = self.containers.get(cid)
        if c is None:
            raise errors.not_found(f"container {cid}")
        return c

    def _process(self, cid: str, exec_id: str = "") -> Process:
        c = self._container(cid)
        if not exec_id:
            return c.init
        p = c.execs.get(exec_id)
        if p is None:
            raise errors.not_found(f"process {exec_id}")
        return p

    # ---- RPCs ----------------------------------------------------------------------------

    async def Create(self, req: api.CreateTaskRequest) -> api.CreateTaskResponse:
        if req.id in self.containers:
            raise errors.already_exists(f"container {req.id}")
        target = os.path.join(req.bundle, "rootfs")
        pio = handle = oom = None
        mounted = False
        # On a cgroup v2 host the init's cgroup move waits out an RCU grace period: start it
        # now, so that it runs while the rootfs is mounted and the config planned
        # (runtime.cgwarm; a no-op on v1, where the init moves itself without one).
        cgwarm.start()
        try:
            mounted = rootfs.mount_all(req.rootfs, target)
            pio = self._open_io(req.id, req.stdin, req.stdout, req.stderr, req.terminal)
            if req.checkpoint:  # restored at Start (criu restore), as the runc shim does
                handle = checkpoint.pending_restore(self, req)
            else:
                handle, oom = self._create(req.id, req.bundle, pio.child, req.options)
                pio.started()  # fails e.g. for a terminal containerd asked but config.json lacks
        except BaseException as e:  # leave nothing: no stdio, no container, no rootfs mount
            if oom and oom[1] is not None:
                os.close(oom[1])
            if pio:
                pio.close()
            if handle and not req.checkpoint:
                _kill_and_forget(handle)
            if mounted:
                rootfs.unmount(target)
            raise errors.to_ttrpc(e) from e
        init = Process(req.id, req.id, pio, req.terminal, pid=handle.pid)
        self.containers[req.id] = Container(req.id, req.bundle, init, handle, mounted)
        self.events.publish("/tasks/create", ev.TaskCreate(
            container_id=req.id, bundle=req.bundle, rootfs=req.rootfs, pid=init.pid,
            io=ev.TaskIO(stdin=req.stdin, stdout=req.stdout, stderr=req.stderr,
                         terminal=req.terminal),
            checkpoint=req.checkpoint))
        self._watch_oom(self.containers[req.id], oom)
        if not req.checkpoint:  # a pending restore has no process yet (start_restored watches)
            self._watch(init)  # after TaskCreate: an exit already reaped must not overtake it
        return api.CreateTaskResponse(pid=init.pid)

    def _create(self, cid: str, bundle: str, stdio, options=None) -> tuple:
        """(handle, OOM watch or None) of engine.create, run in a fork of this process when
        create_in_fork is set (_in_fork). `options`: the request's (a protobuf Any or None),
        for no_pivot_root and no_new_keyring (shim.config.container_options).

        Planning and creating a container runs most of the engine's code (spec model, mounts,
        cgroups, seccomp, launch); done in a fork, the pages it touches are not copied into
        the daemon. The daemon then loads the container's state as the command line does. The
        fork also sets up the OOM watch (the cgroup's oom_kill count and the v1 eventfd), so
        the cgroup code stays out of the daemon too."""
        def create():
            no_pivot, no_new_keyring = _container_options(options)
            return self.engine.create(cid, bundle, stdio, new_keyring=not no_new_keyring,
                                      no_pivot=no_pivot)

        if not self.create_in_fork:
            handle = create()
            handle.drop_config()
            return handle, None  # _watch_oom sets the watch up here

        def work(reply: dict, fds: list) -> None:
            handle = create()
            reply["container"] = handle.portable()  # no state to read back in the daemon
            if stdio.console_fd is not None:
                reply["console"] = len(fds)
                fds.append(stdio.console_fd)
            reply["oom_kills"], oom_fd, reply["oom_error"] = _oom_watch(handle)
            if oom_fd is not None:
                reply["oom_fd"] = len(fds)
                fds.append(oom_fd)

        reply, fds = _in_fork(work, f"create {cid}", self._helper_reaper())
        handle = self.engine.adopt(cid, reply["container"])  # without its config: read back
        # from the state only when needed (hooks, checkpoint)
        stdio.console_fd = fds[reply["console"]] if "console" in reply else None
        oom = (reply["oom_kills"], fds[reply["oom_fd"]] if "oom_fd" in reply else None,
               reply["oom_error"])
        return handle, oom

    def _helper_reaper(self):
        """Who collects an _in_fork helper: the loop's reaper once installed (the daemon),
        else (tests) _in_fork waits for it itself."""
        return self.reaper if self.reaper.installed else None

    def _exec(self, c: Container, spec: dict, stdio) -> int:
        """engine.exec (the process joins the container's namespaces and cgroup), in a fork
        like _create: the exec'd process is the fork's child, reparented to us when it exits.
        Its pid comes back, and with a terminal its master."""
        cgwarm.start()  # as in Create: the process's own cgroup move
        if not self.create_in_fork:
            return c.engine.exec(spec, stdio)

        def work(reply: dict, fds: list) -> None:
            reply["pid"] = c.engine.exec(spec, stdio)
            if stdio.console_fd is not None:
                reply["console"] = len(fds)
                fds.append(stdio.console_fd)

        reply, fds = _in_fork(work, f"exec in {c.id}", self._helper_reaper())
        stdio.console_fd = fds[reply["console"]] if "console" in reply else None
        return reply["pid"]

    async def Start(self, req: api.StartRequest) -> api.StartResponse:
        c = self._container(req.id)
        p = self._process(req.id, req.exec_id)
        if p is not c.init and c.init.state not in (RUNNING,):
            raise errors.failed_precondition(f"cannot start exec {p.id}: container {c.id} is "
                                             f"{c.init.state}")
        p.transition("start")
        try:
            if p is c.init:
                if checkpoint.is_pending(c):
                    await checkpoint.start_restored(self, c)  # criu restore, not exec.fifo
                else:
                    c.engine.start()
            else:
                p.pid = self._exec(c, p.spec, p.io.child)
                p.io.started()
                self._watch(p)
        except BaseException as e:
            p.transition("start-failed")
            if p is not c.init:  # no process of it may go on: wake waiters, publish nothing
                if p.pid:  # exec'd, but its stdio could not be wired
                    self.signal_pid(p.pid, signal.SIGKILL)
                p.io.close()
                self._publish_exit(p, 255, time.time_ns(), quiet=True)
            raise errors.to_ttrpc(e) from e
        if p.state == STARTING:
            p.transition("started")
        if p is c.init:
            self.events.publish("/tasks/start", ev.TaskStart(container_id=c.id, pid=p.pid))
        else:
            self.events.publish("/tasks/exec-started", ev.TaskExecStarted(
                container_id=c.id, exec_id=p.id, pid=p.pid))
        if p.held_exit:  # it exited while we were starting it: now its exit may follow
            self._exited(c, p, *p.held_exit)
        return api.StartResponse(pid=p.pid)

    async def Exec(self, req: api.ExecProcessRequest) -> wkt.Empty:
        c = self._container(req.id)
        if not req.exec_id:
            raise errors.invalid_argument("exec_id is required")
        if req.exec_id in c.execs:
            raise errors.already_exists(f"exec {req.exec_id}")
        if c.init.state != RUNNING or c.paused:
            state = "paused" if c.paused else c.init.state
            raise errors.failed_precondition(f"cannot exec in a {state} container {c.id}")
        spec = _process_spec(req.spec)
        try:
            pio = self._open_io(c.id, req.stdin, req.stdout, req.stderr, req.terminal)
        except BaseException as e:
            raise errors.to_ttrpc(e) from e
        c.execs[req.exec_id] = Process(c.id, req.exec_id, pio, req.terminal, spec=spec)
        self.events.publish("/tasks/exec-added", ev.TaskExecAdded(container_id=c.id,
                                                                  exec_id=req.exec_id))
        return wkt.Empty()

    async def State(self, req: api.StateRequest) -> api.StateResponse:
        c = self._container(req.id)
        p = self._process(req.id, req.exec_id)
        status = types.PAUSED if c.paused and p.state == RUNNING else _STATUS[p.state]
        resp = api.StateResponse(
            id=p.id, bundle=c.bundle, pid=p.pid, status=status, stdin=p.io.stdin,
            stdout=p.io.stdout, stderr=p.io.stderr, terminal=p.terminal,
            exit_status=p.exit_status, exec_id=req.exec_id)
        p.exited_at(resp.exited_at)
        return resp

    async def Wait(self, req: api.WaitRequest) -> api.WaitResponse:
        p = self._process(req.id, req.exec_id)
        await p.exited.wait()
        resp = api.WaitResponse(exit_status=p.exit_status)
        p.exited_at(resp.exited_at)
        return resp

    async def Kill(self, req: api.KillRequest) -> wkt.Empty:
        c = self._container(req.id)
        p = self._process(req.id, req.exec_id)
        if p.state == STOPPED:
            raise errors.not_found(f"process {p.id} already finished")
        sig = req.signal or signal.SIGTERM
        if p is c.init:
            try:
                c.engine.kill(sig, all=req.all)  # all: the whole cgroup (runc kill --all)
            except BaseException as e:
                raise errors.to_ttrpc(e) from e
        elif p.state == CREATED:
            raise errors.failed_precondition(f"exec {p.id} is not started")
        else:
            self.signal_pid(p.pid, sig)  # not reaped yet, so the pid is still this process's
        return wkt.Empty()

    async def Delete(self, req: api.DeleteRequest) -> api.DeleteResponse:
        c = self._container(req.id)
        p = self._process(req.id, req.exec_id)
        if p.state not in (CREATED, STOPPED):
            raise errors.failed_precondition(f"cannot delete {p.state} process {p.id}")
        if p is not c.init:
            del c.execs[p.id]
            p.io.close()
            resp = api.DeleteResponse(pid=p.pid, exit_status=p.exit_status)
            p.exited_at(resp.exited_at)
            return resp
        if p.state == CREATED:  # never started: kill the waiting init and collect its exit
            if checkpoint.is_pending(c):  # created from a checkpoint, never restored: no process
                checkpoint.discard_pending(self, c)
            else:
                c.engine.kill(signal.SIGKILL)
                try:
                    await aio.wait_for(p.exited.wait(), DELETE_KILL_TIMEOUT)
                except TimeoutError:
                    raise errors.failed_precondition(
                        f"process {p.id} did not exit after SIGKILL") from None
        try:
            c.engine.delete(force=True)
        except BaseException as e:
            raise errors.to_ttrpc(e) from e
        p.transition("delete")
        p.io.close()
        for e in c.execs.values():
            e.io.close()
        self._unwatch_oom(c)
        if c.rootfs_mounted:
            rootfs.unmount(os.path.join(c.bundle, "rootfs"))
        del self.containers[c.id]
        resp = api.DeleteResponse(pid=p.pid, exit_status=p.exit_status)
        p.exited_at(resp.exited_at)
        event = ev.TaskDelete(container_id=c.id, pid=p.pid, exit_status=p.exit_status, id=p.id)
        p.exited_at(event.exited_at)
        self.events.publish("/tasks/delete", event)
        return resp

    async def Pids(self, req: api.PidsRequest) -> api.PidsResponse:
        c = self._container(req.id)
        execs = {p.pid: p.id for p in c.execs.values() if p.pid}
        resp = api.PidsResponse()
        for pid in self._engine_call(c.engine.pids):
            info = resp.processes.add(pid=pid)
            if pid in execs:  # as the runc shim: exec processes say which exec they are
                details = runc_options.ProcessDetails(exec_id=execs[pid])
                info.info.type_url = details.DESCRIPTOR.full_name  # bare name, as containerd's
                info.info.value = details.SerializeToString()
        return resp

    async def Pause(self, req: api.PauseRequest) -> wkt.Empty:
        c = self._running(req.id)
        self._engine_call(c.engine.pause)
        c.paused = True
        self.events.publish("/tasks/paused", ev.TaskPaused(container_id=c.id))
        return wkt.Empty()

    async def Resume(self, req: api.ResumeRequest) -> wkt.Empty:
        c = self._container(req.id)
        if not c.paused:
            raise errors.failed_precondition(f"container {c.id} is not paused")
        self._engine_call(c.engine.resume)
        c.paused = False
        self.events.publish("/tasks/resumed", ev.TaskResumed(container_id=c.id))
        return wkt.Empty()

    async def Checkpoint(self, req: api.CheckpointTaskRequest) -> wkt.Empty:
        return await checkpoint.checkpoint(self, self._container(req.id), req)

    async def Update(self, req: api.UpdateTaskRequest) -> wkt.Empty:
        c = self._running(req.id)
        if not req.resources.value or not req.resources.type_url.endswith(RESOURCES_SPEC_SUFFIX):
            raise errors.invalid_argument(
                f"resources: want a {RESOURCES_SPEC_SUFFIX} (JSON), got {req.resources.type_url!r}")
        try:
            resources = fastjson.loads(req.resources.value)
        except ValueError as e:
            raise errors.invalid_argument(f"resources: not JSON: {e}") from None
        self._engine_call(c.engine.update, resources)
        return wkt.Empty()

    async def Stats(self, req: api.StatsRequest) -> api.StatsResponse:
        c = self._container(req.id)
        return api.StatsResponse(stats=metrics.to_any(self._engine_call(c.engine.stats)))

    def _running(self, cid: str) -> Container:
        c = self._container(cid)
        if c.init.state != RUNNING:
            raise errors.failed_precondition(f"container {cid} is {c.init.state}, not running")
        return c

    @staticmethod
    def _engine_call(fn, *args):
        try:
            return fn(*args)
        except BaseException as e:
            raise errors.to_ttrpc(e) from e

    async def Connect(self, req: api.ConnectRequest) -> api.ConnectResponse:
        c = self.containers.get(req.id)
        return api.ConnectResponse(shim_pid=os.getpid(), task_pid=c.init.pid if c else 0)

    async def Shutdown(self, req: api.ShutdownRequest) -> wkt.Empty:
        if not self.containers:
            self.shutdown_requested.set()
        return wkt.Empty()

    async def CloseIO(self, req: api.CloseIORequest) -> wkt.Empty:
        p = self._process(req.id, req.exec_id)
        if req.stdin:
            p.io.close_stdin()
        return wkt.Empty()

    async def ResizePty(self, req: api.ResizePtyRequest) -> wkt.Empty:
        p = self._process(req.id, req.exec_id)
        try:
            p.io.resize(req.width, req.height)  # a no-op without a terminal (as runc)
        except OSError as e:
            raise errors.failed_precondition(f"resize {p.id}: {e.strerror or e}") from None
        return wkt.Empty()

    def _open_io(self, cid: str, stdin: str, stdout: str, stderr: str,
                 terminal: bool = False) -> ProcessIO:
        return ProcessIO.open(stdin, stdout, stderr, terminal=terminal, container_id=cid,
                              namespace=self.namespace, watch=self.reaper.watch)

    # ---- exits ---------------------------------------------------------------------------

    def _watch(self, p: Process) -> None:
        self._by_pid[p.pid] = p
        early = self.reaper.take_unclaimed(p.pid)
        if early:
            self.on_exit(p.pid, *early)

    def on_exit(self, pid: int, status: int, when_ns: int) -> bool:
        """Reaper callback; True if the pid was ours."""
        p = self._by_pid.pop(pid, None)
        if p is None:
            return False
        if p.state == STOPPED:  # its Start failed and it was killed: nothing left to tell
            return True
        p.io.exited()  # what it left in a terminal is taken now, before its exit is told
        held = p.state == STARTING
        p.transition("exit")
        if held:
            p.held_exit = (status, when_ns)  # Start publishes it right after the start event
            return True
        c = self.containers.get(p.container_id)
        if c is None:
            return True
        self._exited(c, p, status, when_ns)
        return True

    def _exited(self, c: Container, p: Process, status: int, when_ns: int) -> None:
        """Publish p's exit in the order containerd needs: the init's after its execs'."""
        self._check_oom(c)  # an OOM kill behind this exit goes out first
        if p is c.init:
            self._init_gone(c)
        if p is c.init and c.running_execs():
            p.held_exit = (status, when_ns)
            for e in c.running_execs():  # with a private pid ns the kernel kills them anyway
                self.signal_pid(e.pid, signal.SIGKILL)
            aio.get_running_loop().call_later(INIT_EXIT_HOLD, self._release_init, c)
            return
        self._publish_exit(p, status, when_ns)
        if p is not c.init and c.init.held_exit and c.init.state == STOPPED:
            if not c.running_execs():
                self._release_init(c)

    def _watch_oom(self, c: Container, oom: tuple | None = None) -> None:
        """oom: (kills, eventfd, error) as the create fork set them up, else made here."""
        c.oom_kills, c.oom_fd, error = oom or _oom_watch(c.engine)
        if error:  # OOM reporting is best effort; the container runs anyway
            log.warning("container %s: cannot watch for OOM: %s", c.id, error)
            return
        if c.oom_fd is not None:
            aio.get_running_loop().add_reader(c.oom_fd, self._on_oom_event, c)

    def _unwatch_oom(self, c: Container) -> None:
        if c.oom_fd is not None:
            aio.get_running_loop().remove_reader(c.oom_fd)
            os.close(c.oom_fd)
            c.oom_fd = None

    def _on_oom_event(self, c: Container) -> None:
        try:
            os.read(c.oom_fd, 8)  # the eventfd counter; reading resets it
        except BlockingIOError:
            return
        except OSError:
            self._unwatch_oom(c)  # the cgroup is gone
            return
        if not self._check_oom(c):
            self._publish_oom(c)  # the event fired but the counter lags: trust the event
            c.oom_kills += 1

    def _check_oom(self, c: Container) -> bool:
        """Publish /tasks/oom if the cgroup's OOM-kill count grew; True if it did."""
        try:
            count = _oom_kill_count(c)
        except Exception:
            return False
        if count <= c.oom_kills:
            return False
        c.oom_kills = count
        self._publish_oom(c)
        return True

    def _publish_oom(self, c: Container) -> None:
        self.events.publish("/tasks/oom", ev.TaskOOM(container_id=c.id))

    def _init_gone(self, c: Container) -> None:
        """What the init's death leaves: thaw a paused container so the rest can die; without a
        private pid namespace nothing kills the rest, so do it (as the runc shim)."""
        try:
            if c.paused:
                c.engine.resume()
                c.paused = False
            spec = getattr(c.engine, "spec", None)
            if spec is not None and not spec.new_namespace("pid"):
                c.engine.kill(signal.SIGKILL, all=True)
        except Exception as e:  # cleanup after an exit must never lose the exit itself
            log.warning("container %s: cleaning up after init exit: %s", c.id, e)

    def _release_init(self, c: Container) -> None:
        if c.init.held_exit and not c.init.exited.is_set():
            self._publish_exit(c.init, *c.init.held_exit)

    def _publish_exit(self, p: Process, status: int, when_ns: int, quiet: bool = False) -> None:
        p.held_exit = None
        p.exit_status, p.exited_at_ns = status, when_ns
        if not quiet:
            event = ev.TaskExit(container_id=p.container_id, id=p.id, pid=p.pid,
                                exit_status=status)
            event.exited_at.FromNanoseconds(when_ns)
            self.events.publish("/tasks/exit", event)
        p.exited.set()


def _oom_kill_count(c: Container) -> int:
    return _kills(c.engine)


def _kills(handle) -> int:
    count = getattr(handle, "oom_kill_count", None)
    return (count() or 0) if count else 0


def _oom_watch(handle) -> tuple[int, int | None, str | None]:
    """(the cgroup's oom_kill count now, the v1 OOM eventfd or None, an error or None)."""
    try:
        fd_fn = getattr(handle, "oom_event_fd", None)
        return _kills(handle), fd_fn() if fd_fn else None, None
    except Exception as e:
        return 0, None, str(e)


def _container_options(options) -> tuple[bool, bool]:
    """(no_pivot_root, no_new_keyring) from CreateTaskRequest.options; a bad one is the
    request's fault (InvalidArgument). Read where the engine runs: in the create fork, which
    also keeps tomllib out of the daemon (shim.config itself is preloaded there)."""
    try:
        if options is None:
            return config.container_options("", b"")
        return config.container_options(options.type_url, options.value)
    except config.ConfigError as e:
        raise errors.invalid_argument(str(e)) from None


def _in_fork(work, what: str, reaper=None) -> tuple[dict, list[int]]:
    """Run work(reply, fds) in a short-lived fork of the daemon; its reply dict and the fds it
    listed, received over SCM_RIGHTS, or its error already mapped to a ttrpc code (raised).

    Why: a daemon forked from the fork server shares its pages; every object the engine's code
    touches (reference counts) copies one for good. Work done in a fork that exits leaves no
    such copies. We wait for it here, synchronously, as the same work in-process would have
    taken the loop for as long. Its exit is handed to `reaper` (Reaper.watch: collected with the
    others, later, so its teardown is not waited for here) before the loop could see it, or,
    without one, waited for here. Processes it starts are its children: when it exits the kernel
    reparents them to us, the subreaper, whose reaper then sees their exits."""
    import _socket
    import marshal
    import signal as _signal

    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    try:
        pid = os.fork()
        if pid == 0:  # the helper: never returns
            code = 1
            try:
                ours.close()
                _signal.set_wakeup_fd(-1)  # the loop's pipe is the daemon's, not ours
                _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
                reply: dict = {"ok": True}
                fds: list[int] = []
                try:
                    work(reply, fds)
                    code = 0
                except BaseException as e:
                    err = errors.to_ttrpc(e)
                    reply, fds = {"code": int(err.code), "message": err.message}, []
                theirs.sendmsg([marshal.dumps(reply)], [(
                    _socket.SOL_SOCKET, _socket.SCM_RIGHTS,
                    b"".join(fd.to_bytes(4, "little") for fd in fds))] if fds else [])
            finally:
                os._exit(code)
        theirs.close()
        try:
            data, anc, _, _ = ours.recvmsg(1 << 16, _socket.CMSG_SPACE(4 * _MAX_FORK_FDS))
        finally:
            if reaper is not None:
                reaper.watch(pid, _helper_exited)
            else:
                os.waitpid(pid, 0)
    finally:
        ours.close()
    fds = [int.from_bytes(d[i:i + 4], "little") for level, kind, d in anc
           if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS
           for i in range(0, len(d) - len(d) % 4, 4)]
    reply = marshal.loads(data) if data else {"code": int(Code.UNKNOWN),
                                              "message": f"{what}: helper died"}
    if not reply.get("ok"):
        for fd in fds:
            os.close(fd)
        raise TTRPCError(reply["code"], reply["message"])
    return reply, fds


_MAX_FORK_FDS = 2  # a terminal's master and an OOM eventfd


def _helper_exited(status: int) -> None:
    """An _in_fork helper is gone; it reported already (or its caller got "helper died")."""


def _kill_and_forget(handle) -> None:
    """Undo an engine create whose container the service will not keep."""
    try:
        handle.delete(force=True)
    except Exception as e:
        log.warning("cleaning up container %s: %s", getattr(handle, "id", "?"), e)


def _kill_quietly(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _process_spec(spec) -> dict:
    """The OCI process of an Exec request (JSON in an Any), or InvalidArgument naming it."""
    if spec is None or not spec.value:
        raise errors.invalid_argument("exec spec: missing")
    if spec.type_url and not spec.type_url.endswith("runtime-spec/1/Process"):
        raise errors.invalid_argument(f"exec spec: unexpected type {spec.type_url!r}")
    try:
        value = fastjson.loads(spec.value)
    except ValueError as e:
        raise errors.invalid_argument(f"exec spec: not JSON: {e}") from None
    if not isinstance(value, dict):
        raise errors.invalid_argument("exec spec: not a JSON object")
    return value


RPC_NAMES = ("State", "Create", "Start", "Delete", "Pids", "Pause", "Resume", "Checkpoint", "Kill",
             "Exec", "ResizePty", "CloseIO", "Update", "Wait", "Stats", "Connect", "Shutdown")
