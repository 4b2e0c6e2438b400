"""Run a process inside a running container (Container.exec):
caller --fork--> intermediate --fork--> the process.

Invariants:
- The namespaces entered are exactly those in which the container's init differs from the
  caller, the user namespace first (runtime.namespaces: its order, its two passes, root in the
  user namespace). The CALLER opens them through /proc/<init>/ns and checks the init's start
  time after opening, so a recycled pid is never entered; the children only setns() on
  inherited fds.
- Only the process joins the container's cgroup, as runc's exec: the intermediate opens the
  join files (ctrcgroup.open_join: v1 "tasks", v2 "cgroup.procs") while the host's cgroupfs
  paths still mean what they say and stays in the caller's cgroup; the process writes itself
  into them ("0": no RCU grace period on v1) first thing after its fork,
  before anything else and long before it execs (a failure is reported: no user code ever
  runs outside the cgroup). So an exec needs ONE free pid under pids.max, not two.
- The process is the intermediate's child, so it is inside a pid/time namespace the
  intermediate entered. The intermediate reports its pid and exits; the caller reaps only the
  intermediate (the process is the caller's reaper's to wait for, via the subreaper).
- The process gets the container's seccomp filter (compiled by the caller), installed where
  the init installs it, with the exec'd process's own noNewPrivileges.
- With process.terminal the process makes its pty (runtime.console) from the container's
  /dev/ptmx once it is inside the container's root, and sends the master ({"type": "console"},
  SCM_RIGHTS) before it execs; run() returns it. Its stdio are then the slave, not job.stdio.
- CPU affinity (process.execCPUAffinity): the intermediate runs on .initial, so the process
  does until it has joined the cgroup; then the process sets its own, .final or by default
  every CPU its cgroup's cpuset allows (child.set_affinity), never the caller's.
- Success is EOF on the socket (the process's end is CLOEXEC, so exec closes it); failure is
  one typed error message, after which the caller kills and reaps what it forked: nothing is
  left behind. The caller reads with a deadline: never a hang.
"""

import posix
import time

import _socket as socket  # not socket: its enum wrappers cost ~2 ms of start-up

from . import console, ctrcgroup, namespaces
from . import init as _init
from .child import (Children, Stdio3, all_cpus, decode_error, dup_stdio, encode_error,
                    fork_child, recv, reopen_devnull, send, set_affinity, spawn)
from .errors import ContainerSetupError, InvalidSpec
from .record import Record
from .spec import Process


class ExecJob(Record):
    """Everything the children need, computed by the caller before the fork."""
    process: Process
    stdio: Stdio3
    namespaces: list[tuple[str, int]]
    cgroup: object | None = None  # a runtime.cgroups.Manager
    seccomp: "_init.SeccompFilter | None" = None  # the container's, compiled by the caller
    preserve_fds: int = 0  # the caller's fds 3..N+2 reach the process (Stdio.preserve_fds)
    keyring: str | None = None  # the container's session keyring to join (init.join_keyring)
    sub_cgroups: dict | None = None  # runc's exec --cgroup: {controller or "": sub-path}


# --- children --------------------------------------------------------------------------------
def _intermediate(job: ExecJob, sock: socket.socket, sys) -> int:
    try:
        # the process joins by itself (see above)
        procs = ctrcgroup.open_join(job.cgroup, job.sub_cgroups)
        affinity = job.process.exec_cpu_affinity
        if affinity is not None and affinity.initial is not None:  # inherited by the process
            _set_affinity(affinity.initial, "initial")
        _init.before_namespaces(None, job.process, sys)  # the oom score; no cgroup (above)
        dup_stdio(job.stdio)  # before setns(mnt): a /dev/null stand-in still opens here
        namespaces.enter(job.namespaces, sys)
        pid = fork_child(lambda: _process_main(job, procs, sock, sys))
        send(sock, {"type": "pid", "pid": pid})
        return 0
    except BaseException as e:  # noqa: BLE001 - reported to the caller, never raised here
        send(sock, encode_error(e, "exec"))
        return 1


def _process_main(job: ExecJob, procs: "ctrcgroup.Join", sock: socket.socket, sys) -> int:
    try:
        ctrcgroup.join_self(procs)  # first: nothing of ours runs outside the cgroup after this
        affinity = job.process.exec_cpu_affinity
        _set_affinity(affinity and affinity.final, "final")  # None: all the cpuset allows
        posix.setsid()  # its own session, like runc's exec'd processes
        _init.join_keyring(job.keyring, sys)
        terminal = console.for_process(job.process)
        if terminal is not None:  # the container's /dev/ptmx: we are in its root now
            _init.step("console", console.setup, terminal, sys,
                       lambda master: send(sock, {"type": "console"}, master))
        else:
            reopen_devnull(job.stdio)  # the container's /dev/null, now that we are in its root
        prepared = _init.prepare_process(job.process, sys)
        # returns only on failure (or with the fake)
        _init.become(job.process, sys, prepared, job.seccomp, job.preserve_fds)
    except BaseException as e:  # noqa: BLE001
        send(sock, encode_error(e, "exec"))
    return 1


def _set_affinity(cpus, which: str) -> None:
    try:
        set_affinity(0, cpus)
    except OSError as e:
        if cpus is None:
            raise ContainerSetupError("exec", f"resetting the CPU affinity: {e.strerror}") \
                from None
        raise InvalidSpec(f"process.execCPUAffinity.{which}",
                          f"cannot run on CPUs {_cpu_list(cpus)}: {e.strerror}") from None


def _cpu_list(cpus) -> str:
    return ",".join(str(c) for c in sorted(cpus))


# --- caller ----------------------------------------------------------------------------------
def _await_exec(sock: socket.socket, kids: Children, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while (msg := recv(sock, deadline, timeout, "the exec'd process")) is not None:
        if not kids.take(msg):  # "pid", "console"
            err = decode_error(msg)
            kids.await_pid(sock, deadline, timeout)
            raise err
    if kids.pid is None:
        raise ContainerSetupError("exec", "the intermediate process exited without reporting")
    return kids.pid


def run(job: ExecJob, sys, timeout: float = 10.0) -> tuple[int, int | None]:
    """Fork the process and wait until it has exec'd. Returns its host pid and the master of
    its terminal (None without one; with one, job.stdio is ignored: pass Nones)."""
    all_cpus()  # read here: the process resets its affinity to them inside the container
    return spawn(lambda sock: _intermediate(job, sock, sys),
                 lambda sock, kids: (_await_exec(sock, kids, timeout), kids.take_console()))
