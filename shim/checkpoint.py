"""The Task service's checkpoint and restore (runtime.checkpoint does the criu work).

- Checkpoint RPC -> checkpoint(service, container, request): the init must be running (paused
  counts: containerd pauses the task around every checkpoint); request.options is a
  containerd.runc.v1.CheckpointOptions Any (or nothing: the defaults); the image goes to
  request.path (containerd always sets it), else options.image_path; criu's work dir is
  options.work_path (kept), else <bundle>/criu-work (removed afterwards; on a failure its
  dump.log is first copied to <bundle>/criu-dump.log, which the error names, as the runc
  shim). After a successful dump pyshim publishes /tasks/checkpointed
  TaskCheckpointed{container_id, checkpoint=<image dir>}; the runc shim publishes nothing:
  that difference is deliberate.
- Create with `checkpoint` set -> pending_restore(service, request): as the runc shim, Create
  only records it (the task is "created", pid 0, TaskCreate as usual) and Start restores:
  start_restored(service, container) runs criu restore instead of the exec.fifo start, with
  the task's new stdio handed to the restored processes. PendingRestore stands in for the
  engine's container until then.
- criu missing, or `criu check` failing, is FailedPrecondition with criu's own reason, at
  Checkpoint and already at Create.

criu runs as a child of the shim and is awaited on the loop (a pidfd), never blocking it; its
exit status is collected here or, if the reaper got there first, from the reaper's unclaimed
exits. While a dump runs, the init's exit is held (the init is unregistered from the reaper),
so /tasks/checkpointed always precedes the /tasks/exit of a checkpoint with `exit`.
"""

from __future__ import annotations

import os
import signal
import time

from proto import wkt_lite as wkt
from proto.containerd.events import task_lite as ev
from proto.containerd.runc.options import oci_lite as runc_options
from proto.lite import DecodeError
from runtime.errors import InvalidState, ProcessFinished
from runtime.record import Record
from shim import aio, errors
from shim.log import getLogger

log = getLogger("pyshim.checkpoint")

CHECKPOINT_OPTIONS_TYPE = "containerd.runc.v1.CheckpointOptions"
RUNC_OPTIONS_TYPE = "containerd.runc.v1.Options"
CHECKPOINTED_TOPIC = "/tasks/checkpointed"
WORK_DIR = "criu-work"  # under the bundle, when the options name none
DUMP_LOG_COPY = "criu-dump.log"
RESTORE_LOG_COPY = "criu-restore.log"


class _LazyEngineCheckpoint:
    """runtime.checkpoint, imported on first use: it pulls subprocess, shutil, datetime and
    dataclasses (~2 MB RSS) that no daemon needs until it checkpoints or restores."""

    def __getattr__(self, name):
        from runtime import checkpoint
        globals()["ck"] = checkpoint
        return getattr(checkpoint, name)


ck = _LazyEngineCheckpoint()


def criu_path(service) -> str:
    """The criu binary: the service's criu_path if it has one, $PYSHIM_CRIU, else "criu"."""
    return getattr(service, "criu_path", None) or os.environ.get("PYSHIM_CRIU") or "criu"


def _type_is(type_url: str, name: str) -> bool:
    return type_url == name or type_url.endswith("/" + name)


def decode_options(any_msg) -> ck.CheckpointOptions:
    """CheckpointTaskRequest.options -> runtime.checkpoint.CheckpointOptions (InvalidArgument
    if it is something else)."""
    if any_msg is None or (not any_msg.type_url and not any_msg.value):
        return ck.CheckpointOptions()
    if not _type_is(any_msg.type_url, CHECKPOINT_OPTIONS_TYPE):
        raise errors.invalid_argument(f"checkpoint options: unexpected type "
                                      f"{any_msg.type_url!r} (want {CHECKPOINT_OPTIONS_TYPE})")
    try:
        o = runc_options.CheckpointOptions.FromString(any_msg.value)
    except DecodeError as e:
        raise errors.invalid_argument(f"checkpoint options: {e}") from None
    opts = ck.CheckpointOptions(
        exit=o.exit, open_tcp=o.open_tcp, external_unix_sockets=o.external_unix_sockets,
        terminal=o.terminal, file_locks=o.file_locks, empty_namespaces=list(o.empty_namespaces),
        cgroups_mode=o.cgroups_mode, image_path=o.image_path, work_path=o.work_path)
    try:
        ck.validate(opts)
    except BaseException as e:
        raise errors.to_ttrpc(e) from e
    return opts


def _require_criu(criu: str) -> None:
    reason = ck.check_criu(criu)
    if reason is not None:
        raise errors.failed_precondition(f"checkpoint/restore needs criu: {reason}")


# --- waiting for criu on the loop ------------------------------------------------------------
async def wait_criu(service, job: ck.CriuJob, timeout: float) -> int | None:
    """Await the exit of criu (job.pid) without blocking the loop; its exit code. At the
    deadline (or on cancellation) criu is SIGKILLed; a deadline raises ttrpc DeadlineExceeded."""
    loop = aio.get_running_loop()
    pid = job.pid
    done = loop.create_future()
    pidfd = os.pidfd_open(pid)
    loop.add_reader(pidfd, lambda: done.done() or done.set_result(None))
    try:
        await aio.wait_for(done, timeout)
    except BaseException as e:
        _kill(pid)
        _reap(pid)
        if isinstance(e, TimeoutError):
            raise errors.TTRPCError(errors.Code.DEADLINE_EXCEEDED,
                                    str(ck.timeout_error(job, timeout))) from None
        raise
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    return _collect(service, pid)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)  # not reaped by us yet, so still criu
    except ProcessLookupError:
        pass


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)  # SIGKILLed: gone at once
    except ChildProcessError:
        pass  # the reaper had it already


def _collect(service, pid: int) -> int | None:
    try:
        got, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # the reaper's SIGCHLD callback ran first: it kept the exit
        early = service.reaper.take_unclaimed(pid)
        return early[0] if early else None
    return ck.exit_code(status) if got else None


def _copy_log(src: str, dst: str) -> str | None:
    try:
        import shutil
        shutil.copyfile(src, dst)
        return dst
    except OSError as e:
        log.warning("cannot copy criu log %s to %s: %s", src, dst, e)
        return None


# --- checkpoint ------------------------------------------------------------------------------
async def checkpoint(service, container, request) -> wkt.Empty:
    """The Checkpoint RPC for `container` (the service's Container of request.id)."""
    from shim.service import CREATED, RUNNING, STARTING

    c = container
    if c.init.state in (CREATED, STARTING):
        raise errors.failed_precondition(f"cannot checkpoint container {c.id}: the task is "
                                         "in created state")
    if c.init.state != RUNNING:
        raise errors.failed_precondition(f"cannot checkpoint container {c.id}: it is "
                                         f"{c.init.state}")
    if getattr(c, "checkpointing", False):
        raise errors.failed_precondition(f"container {c.id}: a checkpoint is already running")
    opts = decode_options(request.options)
    opts.image_path = request.path or opts.image_path
    if not opts.image_path:
        raise errors.invalid_argument("checkpoint: no image path (request.path and "
                                      "options.image_path are both empty)")
    temporary_work = not opts.work_path
    if temporary_work:
        opts.work_path = os.path.join(c.bundle, WORK_DIR)
    criu = criu_path(service)
    _require_criu(criu)
    c.checkpointing = True
    held = service._by_pid.pop(c.init.pid, None)  # its exit waits for the checkpointed event
    published = False
    try:
        try:
            job = ck.prepare_dump(c.engine, opts, criu=criu)
            ck.spawn(job)
            ck.finish_dump(job, await wait_criu(service, job, ck.DUMP_TIMEOUT))
        except ck.CriuError as e:
            if temporary_work:
                copy = _copy_log(e.log_file, os.path.join(c.bundle, DUMP_LOG_COPY))
                e = e.with_log(copy) if copy else e
            raise errors.to_ttrpc(e) from e
        except (errors.TTRPCError, aio.CancelledError):
            raise
        except BaseException as e:
            raise errors.to_ttrpc(e) from e
        service.events.publish(CHECKPOINTED_TOPIC, ev.TaskCheckpointed(
            container_id=c.id, checkpoint=opts.image_path))
        published = True
    finally:
        c.checkpointing = False
        if temporary_work:
            import shutil
            shutil.rmtree(opts.work_path, ignore_errors=True)
        if held is not None:
            service._watch(held)  # an exit reaped meanwhile is published now
    log.debug("container %s checkpointed to %s (event published: %s)", c.id, opts.image_path,
              published)
    return wkt.Empty()


# --- restore ---------------------------------------------------------------------------------
class PendingRestore(Record):
    """The engine's place in a Container created from a checkpoint, until Start restores it.
    Nothing runs yet: no pids, nothing to kill, pause, update or measure."""
    id: str
    bundle: str
    image_dir: str
    criu: str = "criu"
    work_dir: str | None = None  # None: <bundle>/criu-work, removed after the restore
    parent: str = ""
    pid = 0  # as the runc shim: a task created from a checkpoint has no pid until Start
    spec = None  # what the service reads of an engine's container after an exit

    def status(self) -> str:
        return "created"

    def pids(self) -> list[int]:
        return []

    def kill(self, sig: int, all: bool = False) -> None:
        raise ProcessFinished(self.id)

    def delete(self, force: bool = False) -> None:
        pass  # nothing exists in the engine yet

    def oom_kill_count(self) -> int:
        return 0

    def _not_started(self, *args, **kwargs):
        raise InvalidState(f"container {self.id!r} is not restored yet (start it)", self.id,
                           "created")

    pause = resume = update = stats = start = exec = _not_started


def is_pending(container) -> bool:
    """True for a service Container created from a checkpoint and not started yet."""
    return isinstance(getattr(container, "engine", None), PendingRestore)


def _create_options(any_msg) -> tuple[str | None, str | None]:
    """(criu_path, criu_work_path) from CreateTaskRequest.options when it is the runc shim's
    Options; (None, None) otherwise."""
    if any_msg is None or not any_msg.value or not _type_is(any_msg.type_url,
                                                              RUNC_OPTIONS_TYPE):
        return None, None
    try:
        o = runc_options.Options.FromString(any_msg.value)
    except DecodeError as e:
        raise errors.invalid_argument(f"runtime options: {e}") from None
    return o.criu_path or None, o.criu_work_path or None


def pending_restore(service, request) -> PendingRestore:
    """Create's part for request.checkpoint: check criu now (FailedPrecondition with its
    reason) and the image dir; return the stand-in to record as the container's engine."""
    if request.terminal:
        raise errors.failed_precondition("restoring a task with a terminal is not supported "
                                         "by pyshim yet")
    path, work = _create_options(request.options)
    criu = path or criu_path(service)
    if not request.checkpoint.startswith("/"):
        raise errors.invalid_argument(f"checkpoint: not an absolute path: "
                                      f"{request.checkpoint!r}")
    if not os.path.isdir(request.checkpoint):
        raise errors.invalid_argument(f"checkpoint {request.checkpoint}: not a directory")
    _require_criu(criu)
    return PendingRestore(request.id, request.bundle, request.checkpoint, criu, work,
                          request.parent_checkpoint)


async def start_restored(service, container) -> int:
    """Start's part for a pending restore: criu restore with the task's stdio; the container's
    engine becomes the restored runtime Container, the init gets its pid and is watched.
    On failure nothing runs: waiters are woken (no TaskExit) and the error is raised."""
    c, p = container, container.init
    pending: PendingRestore = c.engine
    temporary_work = pending.work_dir is None
    work = pending.work_dir or os.path.join(c.bundle, WORK_DIR)
    try:
        try:
            job = ck.prepare_restore(service.engine, c.id, c.bundle, pending.image_dir,
                                     p.io.child, criu=pending.criu, work_dir=work)
        except BaseException as e:
            raise errors.to_ttrpc(e) from e
        try:
            ck.spawn(job)
            status = await wait_criu(service, job, ck.RESTORE_TIMEOUT)
        except BaseException:
            ck.abort_restore(job)
            raise
        try:
            handle = ck.finish_restore(job, status)
        except ck.CriuError as e:
            if temporary_work:
                copy = _copy_log(e.log_file, os.path.join(c.bundle, RESTORE_LOG_COPY))
                e = e.with_log(copy) if copy else e
            raise errors.to_ttrpc(e) from e
        except BaseException as e:
            raise errors.to_ttrpc(e) from e
    except BaseException:
        service._publish_exit(p, 255, time.time_ns(), quiet=True)  # no process: wake waiters
        raise
    finally:
        if temporary_work:
            import shutil
            shutil.rmtree(work, ignore_errors=True)
    c.engine = handle
    p.pid = handle.pid
    p.io.started()
    service._watch(p)  # an exit reaped during the restore is claimed (held until TaskStart)
    service._watch_oom(c)
    return p.pid


def discard_pending(service, container) -> None:
    """Delete of a created-from-checkpoint task never started: nothing to kill; wake waiters
    (exit status 0, no TaskExit, as the runc shim's never-restored init)."""
    p = container.init
    if not p.exited.is_set():
        service._publish_exit(p, 0, time.time_ns(), quiet=True)
