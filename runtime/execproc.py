"""Run a process inside a running container (Container.exec):
caller --fork--> intermediate --fork--> the process.

Invariants:
- The namespaces entered are exactly those in which the container's init differs from the
  caller (the user namespace excepted, unsupported for now), in runc's order (ORDER: mount late
  since it resets root and cwd). The CALLER opens them through /proc/<init>/ns and checks the
  init's start time after opening, so a recycled pid is never entered; the children only
  setns() on inherited fds.
- The intermediate joins the container's cgroup first thing, while the host's cgroupfs paths
  still mean what they say and before it forks: the process is born inside the cgroup.
- The process is the intermediate's child, so it is inside a pid/time namespace the
  intermediate entered. The intermediate reports its pid and exits; the caller reaps only the
  intermediate (the process is the caller's reaper's to wait for, via the subreaper).
- The process gets the container's seccomp filter (compiled by the caller), installed where
  the init installs it, with the exec'd process's own noNewPrivileges.
- With process.terminal the process makes its pty (runtime.console) from the container's
  /dev/ptmx once it is inside the container's root, and sends the master ({"type": "console"},
  SCM_RIGHTS) before it execs; run() returns it. Its stdio are then the slave, not job.stdio.
- Success is EOF on the socket (the process's end is CLOEXEC, so exec closes it); failure is
  one typed error message, after which the caller kills and reaps what it forked: nothing is
  left behind. The caller reads with a deadline: never a hang.
"""

import os
import socket
import time
from dataclasses import dataclass

from . import console, ctrcgroup
from . import init as _init
from . import proc
from .child import (Children, Stdio3, decode_error, dup_stdio, encode_error, fork_child, recv,
                    reopen_devnull, send, spawn)
from .errors import ContainerSetupError
from .spec import Process
from .sys.consts import NAMESPACE_FLAGS

# runc's configs.NamespaceTypes() order (user first, which we skip for now).
ORDER = ("ipc", "uts", "network", "pid", "mount", "cgroup", "time")
PROC_NS = {"ipc": "ipc", "uts": "uts", "network": "net", "pid": "pid", "mount": "mnt",
           "cgroup": "cgroup", "time": "time"}


def namespace_plan(init_links: dict[str, str], own_links: dict[str, str]) -> list[str]:
    """The namespace types to enter, in order: those where the init's /proc/<pid>/ns link
    differs from ours. A type we have no link for (an older kernel) is skipped."""
    return [t for t in ORDER if t in own_links and init_links.get(t) != own_links[t]]


def _links(pid: int | str) -> dict[str, str]:
    out = {}
    for t in ORDER:
        try:
            out[t] = os.readlink(f"/proc/{pid}/ns/{PROC_NS[t]}")
        except FileNotFoundError:
            pass
    return out


def open_namespaces(pid: int, start: int) -> list[tuple[str, int]] | None:
    """[(type, fd)] of the namespaces to enter to be where the init (pid, start) is; None if
    that process is gone. The caller closes the fds."""
    fds: list[tuple[str, int]] = []
    try:
        for t in namespace_plan(_links(pid), _links("self")):
            fds.append((t, os.open(f"/proc/{pid}/ns/{PROC_NS[t]}", os.O_RDONLY | os.O_CLOEXEC)))
    except FileNotFoundError:  # /proc/<pid> vanished: the init is gone
        close_namespaces(fds)
        return None
    except BaseException:
        close_namespaces(fds)
        raise
    if not proc.is_alive(pid, start):  # checked after opening: the fds are the init's
        close_namespaces(fds)
        return None
    return fds


def close_namespaces(fds: list[tuple[str, int]]) -> None:
    for _, fd in fds:
        os.close(fd)


def enter(namespaces: list[tuple[str, int]], sys) -> None:
    """setns() into each, in the given (planned) order."""
    for t, fd in namespaces:
        try:
            sys.setns_fd(fd, NAMESPACE_FLAGS[t])
        except OSError as e:
            raise ContainerSetupError("namespaces", e.strerror or str(e), f"ns/{PROC_NS[t]}") \
                from None


@dataclass
class ExecJob:
    """Everything the children need, computed by the caller before the fork."""
    process: Process
    stdio: Stdio3
    namespaces: list[tuple[str, int]]
    cgroup: object | None = None  # a runtime.cgroups.Manager
    seccomp: "_init.SeccompFilter | None" = None  # the container's, compiled by the caller


# --- children --------------------------------------------------------------------------------
def _intermediate(job: ExecJob, sock: socket.socket, sys) -> int:
    try:
        ctrcgroup.join(job.cgroup)
        if job.process.oom_score_adj is not None:  # inherited by the process; host /proc here
            _init.set_oom_score_adj(job.process.oom_score_adj, sys)
        dup_stdio(job.stdio)  # before setns(mnt): a /dev/null stand-in still opens here
        enter(job.namespaces, sys)
        pid = fork_child(lambda: _process_main(job, sock, sys))
        send(sock, {"type": "pid", "pid": pid})
        return 0
    except BaseException as e:  # noqa: BLE001 - reported to the caller, never raised here
        send(sock, encode_error(e, "exec"))
        return 1


def _process_main(job: ExecJob, sock: socket.socket, sys) -> int:
    try:
        os.setsid()  # its own session, like runc's exec'd processes
        terminal = console.for_process(job.process)
        if terminal is not None:  # the container's /dev/ptmx: we are in its root now
            _init.step("console", console.setup, terminal, sys,
                       lambda master: send(sock, {"type": "console"}, master))
        else:
            reopen_devnull(job.stdio)  # the container's /dev/null, now that we are in its root
        prepared = _init.prepare_process(job.process, sys)
        # returns only on failure (or with the fake)
        _init.become(job.process, sys, prepared, job.seccomp)
    except BaseException as e:  # noqa: BLE001
        send(sock, encode_error(e, "exec"))
    return 1


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
    return spawn(lambda sock: _intermediate(job, sock, sys),
                 lambda sock, kids: (_await_exec(sock, kids, timeout), kids.take_console()))
