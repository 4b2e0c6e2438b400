"""What every forked child of the engine (create's init, exec's process) shares with its caller.

Invariants:
- The caller and its children talk over a SOCK_SEQPACKET socketpair, one JSON message per
  packet; EOF means every child end is closed (exited, or exec'd: the ends are CLOEXEC). The
  caller always reads with a deadline, so a stuck child is an error, never a hang.
- A message may carry fds (SCM_RIGHTS; only "console" does: a terminal's master). They arrive
  CLOEXEC, Children owns them until the caller takes them and closes them on any failure, so
  none is ever leaked.
- Errors cross the socket with their type (InvalidSpec keeps its field, ContainerSetupError its
  step and path) and come out as the same EngineError subclass on the caller's side.
- Children never return into the caller's Python stack (see fork_child), never touch the
  caller's asyncio wakeup fd, and give up the caller's signal handlers first thing.
- Children.abort() leaves nothing behind: it kills and reaps what the caller forked, the
  caller being the subreaper that inherits the grandchildren; it waits by pid, never waitpid(-1).
"""

import fcntl
import posix
import select
import time
from sys import byteorder  # not `import sys`: `sys` names the syscall layer (keep_apart)

# _signal and _socket, not signal and socket: their enum wrappers cost ~5 ms of start-up.
import _signal as signal
import _socket as socket

from . import fastjson as json
from . import proc
from .errors import ContainerSetupError, EngineError, InvalidSpec

_FD_SIZE = 4  # an fd in SCM_RIGHTS data: a native int (struct would cost ~0.3 ms of start-up)
Stdio3 = tuple  # (stdin, stdout, stderr): fds or None for /dev/null


# --- messages --------------------------------------------------------------------------------
def send(sock: socket.socket, msg: dict, *fds: int) -> None:
    """One message; `fds` travel with it (SCM_RIGHTS), the receiver gets its own copies."""
    data = json.dumps(msg).encode()
    if not fds:
        sock.send(data)
    else:
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                               b"".join(fd.to_bytes(_FD_SIZE, byteorder, signed=True)
                                        for fd in fds))])


def recv(sock: socket.socket, deadline: float, timeout: float,
         who: str = "the container's init") -> dict | None:
    """The next message, None at EOF (every child end closed). fds that came with it are in
    msg["fds"] (CLOEXEC; Children.take owns or closes them)."""
    p = select.poll()
    p.register(sock, select.POLLIN)
    if not p.poll(max(0.0, deadline - time.monotonic()) * 1000):
        raise ContainerSetupError("timeout", f"{who} did not answer within {timeout:g}s")
    data, fds = _recv_with_fds(sock)
    if not data:
        _close_all(fds)
        return None
    msg = json.loads(data)
    if fds:
        msg["fds"] = fds
    return msg


def _recv_with_fds(sock: socket.socket, max_fds: int = 4) -> tuple[bytes, list[int]]:
    # Not socket.recv_fds: it drops its flags argument (so no MSG_CMSG_CLOEXEC).
    data, ancdata, _, _ = sock.recvmsg(65536, socket.CMSG_SPACE(max_fds * 4),
                                       socket.MSG_CMSG_CLOEXEC)
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds += [int.from_bytes(payload[i:i + _FD_SIZE], byteorder, signed=True)
                    for i in range(0, len(payload) - _FD_SIZE + 1, _FD_SIZE)]
    return data, fds


def request(sock: socket.socket, msg: dict, answer: str, step: str,
            failure: str) -> tuple[dict, list[int]]:
    """In a child: send msg and block until the caller answers {"type": answer}; returns the
    answer and the fds that came with it (CLOEXEC, ours to close). No deadline here: the
    caller has one, and kills us at it."""
    send(sock, msg)
    data, fds = _recv_with_fds(sock, MAX_FDS)
    reply = json.loads(data) if data else None
    if not reply or reply.get("type") != answer:
        _close_all(fds)
        raise ContainerSetupError(step, failure)
    return reply, fds


MAX_FDS = 64  # per message: a v1 host's cgroup hierarchies at most (one join fd each)


def encode_error(e: BaseException, step: str) -> dict:
    if isinstance(e, InvalidSpec):
        return {"type": "error", "kind": "InvalidSpec", "field": e.field, "message": e.reason}
    if isinstance(e, ContainerSetupError):
        return {"type": "error", "kind": "setup", "step": e.step, "path": e.path, "message": str(e)}
    if isinstance(e, OSError):
        return {"type": "error", "kind": "setup", "step": step, "path": e.filename,
                "message": e.strerror or str(e)}
    return {"type": "error", "kind": "setup", "step": step, "message": f"{type(e).__name__}: {e}"}


def decode_error(msg: dict) -> EngineError:
    if msg.get("kind") == "InvalidSpec":
        return InvalidSpec(msg["field"], msg["message"])
    return ContainerSetupError(msg.get("step") or "init", msg["message"], msg.get("path"))


# --- in the child ----------------------------------------------------------------------------
def fork_child(body, after=None) -> int:
    """fork(); the child runs body() -> exit code and never returns. Returns the child's pid,
    after after(pid) (which must not raise) ran in the caller first thing (keep_apart)."""
    pid = posix.fork()
    if pid == 0:
        code = 1
        try:
            code = body()
        finally:
            posix._exit(code)
    if after is not None:
        after(pid)
    return pid


def reset_caller_signals() -> None:
    # The caller's asyncio loop owns the wakeup fd and its handlers: none of that is ours.
    # SIGPIPE/SIGXFSZ stay ignored until exec so a dead reader gives EPIPE, not a silent death.
    signal.set_wakeup_fd(-1)
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP, signal.SIGPIPE, signal.SIGXFSZ):
            continue
        try:
            # getsignal is cheap and a signal() call is not: only touch what is not default
            # (None = a handler installed outside Python, which is not ours either).
            if signal.getsignal(sig) != signal.SIG_DFL:
                signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass


def dup_stdio(stdio: Stdio3) -> None:
    """Make the fds (None: /dev/null) our 0, 1, 2, inheritable across exec."""
    try:
        null = posix.open("/dev/null", posix.O_RDWR | posix.O_CLOEXEC) if None in stdio else None
        # Copy every source above 2 first, so a source that is itself 0-2 is not clobbered.
        tmp = [fcntl.fcntl(null if fd is None else fd, fcntl.F_DUPFD_CLOEXEC, 3) for fd in stdio]
    except OSError as e:
        raise ContainerSetupError("stdio", f"stdio {stdio}: {e.strerror}") from None
    for target, fd in enumerate(tmp):
        posix.dup2(fd, target)  # inheritable: these survive the exec
        posix.close(fd)
    if null is not None:
        posix.close(null)


def reopen_devnull(stdio: Stdio3) -> None:
    """Point the /dev/null stdio at the container's own /dev/null, like runc: the host's one is
    unreachable from inside (it shows as "/null") and pins the old root."""
    if None not in stdio:
        return
    try:
        null = posix.open("/dev/null", posix.O_RDWR | posix.O_CLOEXEC)
    except OSError:
        return  # no /dev/null in the container: keep the host's
    for target, fd in enumerate(stdio):
        if fd is None:
            posix.dup2(null, target)
    posix.close(null)


# --- in the caller ---------------------------------------------------------------------------
def spawn(intermediate, wait, fork=fork_child):
    """Fork intermediate(sock) -> exit code with a fresh socketpair (through `fork`, a
    fork_child), then return wait(sock, kids); on any failure kill and reap what was forked
    before raising."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    kids = Children()

    def body() -> int:
        reset_caller_signals()
        parent.close()
        return intermediate(child)
    try:
        kids.mid = fork(body)
        child.close()
        return wait(parent, kids)
    except BaseException:
        kids.abort()
        raise
    finally:
        kids.close()
        parent.close()
        child.close()


_all_cpus: range | None = None


def all_cpus() -> range:
    """Every CPU the kernel may have (/sys/devices/system/cpu/possible), read once."""
    global _all_cpus
    if _all_cpus is None:
        try:
            with open("/sys/devices/system/cpu/possible") as f:
                last = max(int(part.rpartition("-")[2]) for part in f.read().split(","))
        except (OSError, ValueError):
            last = (posix.cpu_count() or 1) - 1
        _all_cpus = range(last + 1)
    return _all_cpus


def set_affinity(pid: int, cpus=None) -> None:
    """The CPUs pid may run on: `cpus`, or by default all that its cgroup's cpuset allows
    (the kernel narrows the mask to the cpuset, and keeps it as the task's own request, so a
    later cpuset change applies in full). As runc since 1.2: a container's processes do not
    inherit the affinity of whoever started the runtime."""
    posix.sched_setaffinity(pid, all_cpus() if cpus is None else cpus)


def keep_apart(sys):
    """For fork_child's `after`: a function that moves the child just forked off the caller's
    CPU if the kernel queued it there, its CPU affinity left as it was (None: nothing to do);
    for a caller with CPU work of its own to do next, beside the child's (create's cgroup
    setup while the init mounts). The kernel often queues a new child on its parent's CPU, and
    does not move it while the parent keeps running: measured here, the child then waited 1-2
    ms with the other CPU idle, the child's wake-up of its caller (a sync wake-up) bringing the
    caller back onto the child's CPU when it had blocked. Narrowing the child's affinity to
    the other CPUs moves it only if it is queued on ours; restoring it moves nothing. What it
    needs is read before the fork and it runs first thing after: every Python statement of the
    caller's after a fork costs copy-on-write faults, ~0.25 ms until wait() could do it.
    It is only about speed: a failure is ignored, and the mask it leaves is not the init's
    last (launch resets it with set_affinity once the init is in its cgroup, which also
    undoes a restore that failed)."""
    try:
        allowed = posix.sched_getaffinity(0)  # ours, so the child's: it will inherit it
        cpu = sys.current_cpu()
    except OSError:
        return None
    if len(allowed) < 2 or cpu not in allowed:
        return None
    others = allowed - {cpu}

    def move(pid: int) -> None:
        try:
            posix.sched_setaffinity(pid, others)
            posix.sched_setaffinity(pid, allowed)
        except OSError:
            pass
    return move


class Children:
    """What the caller forked: the intermediate (until reaped) and the process it reported."""

    def __init__(self):
        self.mid: int | None = None  # the intermediate, until reaped
        self.pid: int | None = None  # the init / the exec'd process
        self.pidfd: int | None = None
        self.start: int | None = None  # its start time, read once its pidfd is open
        self.console: int | None = None  # a terminal's master the process sent, until taken

    def reap_mid(self) -> None:
        if self.mid is not None:
            posix.waitpid(self.mid, 0)
            self.mid = None

    def got_pid(self, pid: int, is_mid: bool = False) -> int | None:
        """Record the reported pid (pidfd first, so it cannot be recycled under us), reap the
        intermediate unless it is that process. Returns its start time."""
        self.pid = pid
        try:
            self.pidfd = posix.pidfd_open(pid)
        except OSError:
            pass
        start = self.start = proc.start_time(pid)
        if is_mid:
            self.mid = None  # the intermediate is the init: the caller reaps it, not us
        else:
            self.reap_mid()
        return start

    def take(self, msg: dict) -> bool:
        """Record the messages every child protocol shares: "pid" (the intermediate's report)
        and "console" (a terminal's master, kept until take_console). False for any other
        message; fds it carried are closed."""
        fds = msg.pop("fds", [])
        kind = msg["type"]
        if kind == "console" and fds and self.console is None:
            self.console = fds.pop(0)
        _close_all(fds)
        if kind == "console":
            if self.console is None:
                raise ContainerSetupError("console", "the terminal's master did not arrive")
            return True
        if kind == "pid":
            if msg.get("self"):  # the intermediate is the init: fork() told us its host pid
                self.got_pid(self.mid, True)  # (its own getpid() may be 1, in a new pid ns)
            else:
                self.got_pid(msg["pid"])
            return True
        return False

    def take_console(self) -> int | None:
        """The master, now the caller's to close (None: no terminal was made)."""
        fd, self.console = self.console, None
        return fd

    def await_pid(self, sock: socket.socket, deadline: float, timeout: float) -> None:
        """After a child reported an error: read on until the intermediate reported the pid
        (the grandchild may be faster), so abort() can reap it."""
        while self.pid is None and self.mid is not None:
            more = recv(sock, deadline, timeout)
            if more is None:
                break
            self.take(more)

    def abort(self) -> None:
        if self.pidfd is not None:
            _quiet(signal.pidfd_send_signal, self.pidfd, signal.SIGKILL)
        if self.mid is not None:
            _quiet(posix.kill, self.mid, signal.SIGKILL)
            self.reap_mid()
        if self.pid is not None:
            try:
                posix.waitpid(self.pid, 0)  # ours: the caller is a subreaper and never saw it
            except ChildProcessError:
                if self.pidfd is not None:  # not our child: at least wait until it is gone
                    proc.wait_exit(self.pidfd, 2.0)

    def close(self) -> None:
        """Close what was not taken: the pidfd, and a terminal's master after a failure."""
        if self.pidfd is not None:
            posix.close(self.pidfd)
            self.pidfd = None
        _close_all([self.take_console()] if self.console is not None else [])


def _close_all(fds) -> None:
    for fd in fds:
        posix.close(fd)


def _quiet(fn, *args) -> None:
    try:
        fn(*args)
    except OSError:
        pass
