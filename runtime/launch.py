"""Fork the container: caller --fork--> intermediate --fork--> init.

Invariants:
- The caller never changes namespace, root, cwd or signal state; only the children do. Control
  never returns from a child to the caller's Python stack: every child body runs inside
  try/finally os._exit().
- The intermediate enters/creates the namespaces (a new pid namespace only applies to its
  children, hence the second fork), reports the init's host pid and exits; the caller reaps it.
  Without a pid/time namespace there is no second fork: the intermediate becomes the init.
  Nobody but the caller's reaper waits for the init once launch() has returned.
- Children report over a SOCK_SEQPACKET socketpair, one JSON message per packet: {"type": "pid"}
  from the intermediate, then {"type": "ready"} or {"type": "error"} from the init. The caller
  reads with a deadline, so a stuck child is an error, never a hang; on any failure it kills and
  reaps whatever it forked before raising.
"""

import errno
import fcntl
import json
import os
import select
import signal
import socket
import time

from . import init as _init
from . import proc
from .errors import ContainerSetupError, EngineError, InvalidSpec
from .state import FIFO
from .sys.consts import NAMESPACE_FLAGS

Stdio3 = tuple  # (stdin, stdout, stderr): fds or None for /dev/null


# --- messages --------------------------------------------------------------------------------
def _send(sock: socket.socket, msg: dict) -> None:
    sock.send(json.dumps(msg).encode())


def _recv(sock: socket.socket, deadline: float, timeout: float) -> dict | None:
    """The next message, None at EOF (every child end closed)."""
    p = select.poll()
    p.register(sock, select.POLLIN)
    if not p.poll(max(0.0, deadline - time.monotonic()) * 1000):
        raise ContainerSetupError("timeout",
                                  f"the container's init did not answer within {timeout:g}s")
    data = sock.recv(65536)
    return json.loads(data) if data else None


def _encode_error(e: BaseException, step: str) -> dict:
    if isinstance(e, InvalidSpec):
        return {"type": "error", "kind": "InvalidSpec", "field": e.field, "message": e.reason}
    if isinstance(e, ContainerSetupError):
        return {"type": "error", "kind": "setup", "step": e.step, "path": e.path, "message": str(e)}
    if isinstance(e, OSError):
        return {"type": "error", "kind": "setup", "step": step, "path": e.filename,
                "message": e.strerror or str(e)}
    return {"type": "error", "kind": "setup", "step": step, "message": f"{type(e).__name__}: {e}"}


def _decode_error(msg: dict) -> EngineError:
    if msg.get("kind") == "InvalidSpec":
        return InvalidSpec(msg["field"], msg["message"])
    return ContainerSetupError(msg.get("step") or "init", msg["message"], msg.get("path"))


# --- children --------------------------------------------------------------------------------
def _child_signals() -> None:
    # The caller's asyncio loop owns the wakeup fd and its handlers: none of that is ours.
    # SIGPIPE/SIGXFSZ stay ignored until exec so a dead reader gives EPIPE, not a silent death.
    signal.set_wakeup_fd(-1)
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP, signal.SIGPIPE, signal.SIGXFSZ):
            continue
        try:
            # getsignal is cheap and a signal() call is not: only touch what is not default
            # (None = a handler installed outside Python, which is not ours either).
            if signal.getsignal(sig) is not signal.SIG_DFL:
                signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass


def _enter_namespaces(spec, sys) -> None:
    # Join by path first, the mount namespace last (it changes what the other paths mean);
    # then unshare the new ones. CLONE_NEWPID only affects our children: the init.
    joined = sorted((n for n in spec.linux.namespaces if n.path), key=lambda n: n.type == "mount")
    for n in joined:
        try:
            sys.setns(n.path, NAMESPACE_FLAGS[n.type])
        except OSError as e:
            raise ContainerSetupError("namespaces", e.strerror or str(e), n.path) from None
    flags = 0
    for n in spec.linux.namespaces:
        if not n.path:
            flags |= NAMESPACE_FLAGS[n.type]
    if flags:
        try:
            sys.unshare(flags)
        except OSError as e:
            raise ContainerSetupError("namespaces", e.strerror or str(e)) from None


def _needs_second_fork(spec) -> bool:
    # Entering a pid or time namespace (new or joined) only applies to children.
    return any(n.type in ("pid", "time") for n in spec.linux.namespaces)


def _intermediate(cfg, stdio: Stdio3, sock: socket.socket, sys) -> int:
    try:
        _enter_namespaces(cfg.spec, sys)
        if not _needs_second_fork(cfg.spec):
            # We can be the init ourselves: one fork fewer.
            _send(sock, {"type": "pid", "pid": os.getpid(), "self": True})
            return _init_main(cfg, stdio, sock, sys)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _init_main(cfg, stdio, sock, sys)
            finally:
                os._exit(code)
        _send(sock, {"type": "pid", "pid": pid})
        return 0
    except BaseException as e:  # noqa: BLE001 - reported to the caller, never raised here
        _send(sock, _encode_error(e, "namespaces"))
        return 1


def _dup_stdio(stdio: Stdio3) -> None:
    try:
        null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC) if None in stdio else None
        # Copy every source above 2 first, so a source that is itself 0-2 is not clobbered.
        tmp = [fcntl.fcntl(null if fd is None else fd, fcntl.F_DUPFD_CLOEXEC, 3) for fd in stdio]
    except OSError as e:
        raise ContainerSetupError("stdio", f"stdio {stdio}: {e.strerror}") from None
    for target, fd in enumerate(tmp):
        os.dup2(fd, target)  # inheritable: these survive the exec
        os.close(fd)
    if null is not None:
        os.close(null)


def _reopen_devnull(stdio: Stdio3) -> None:
    """Point the /dev/null stdio at the container's own /dev/null, like runc: the host's one is
    unreachable from inside (it shows as "/null") and pins the old root."""
    if None not in stdio:
        return
    try:
        null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return  # no /dev/null in the container: keep the host's
    for target, fd in enumerate(stdio):
        if fd is None:
            os.dup2(null, target)
    os.close(null)


def _exit_on_signal(sig, frame) -> None:
    os._exit(128 + sig)


def _die_on_termination_signals() -> None:
    """While created, the init is pid 1 of its pid namespace, and the kernel drops every signal
    such an init has no handler for: without these, `kill -TERM` of a created container would
    do nothing (runc's Go init dies of it). reset_signals() undoes this before the exec."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
                signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, _exit_on_signal)


def _init_main(cfg, stdio: Stdio3, sock: socket.socket, sys) -> int:
    try:
        os.setsid()  # out of the caller's session and process group, like runc
        _dup_stdio(stdio)
        # An O_PATH handle on the state dir still reaches exec.fifo after pivot_root.
        state_fd = os.open(cfg.state_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        prepared = _init.prepare(cfg, sys)
        _reopen_devnull(stdio)
    except BaseException as e:  # noqa: BLE001
        _send(sock, _encode_error(e, "init"))
        return 1
    try:
        _die_on_termination_signals()  # before "ready": a kill right after create must work
        _send(sock, {"type": "ready"})
        sock.close()
        fifo = os.open(FIFO, os.O_WRONLY | os.O_CLOEXEC, dir_fd=state_fd)  # blocks until start
        os.write(fifo, b"0")
        os.close(fifo)
        os.close(state_fd)
        _init.finish(cfg, sys, prepared)
    except BaseException as e:  # noqa: BLE001 - after start only the container's stderr is left
        os.write(2, f"pyshim init: {e}\n".encode(errors="replace"))
        return 127 if isinstance(e, OSError) and e.errno == errno.ENOENT else 1
    return 1


# --- caller side -----------------------------------------------------------------------------
class _Children:
    def __init__(self):
        self.mid: int | None = None  # the intermediate, until reaped
        self.pid: int | None = None  # the init
        self.pidfd: int | None = None

    def reap_mid(self) -> None:
        if self.mid is not None:
            os.waitpid(self.mid, 0)
            self.mid = None

    def got_pid(self, pid: int, is_mid: bool = False) -> int | None:
        self.pid = pid
        try:
            self.pidfd = os.pidfd_open(pid)
        except OSError:
            pass
        start = proc.start_time(pid)
        if is_mid:
            self.mid = None  # the intermediate is the init: the caller reaps it, not us
        else:
            self.reap_mid()
        return start

    def abort(self) -> None:
        if self.pidfd is not None:
            _quiet(signal.pidfd_send_signal, self.pidfd, signal.SIGKILL)
        if self.mid is not None:
            _quiet(os.kill, self.mid, signal.SIGKILL)
            self.reap_mid()
        if self.pid is not None:
            try:
                os.waitpid(self.pid, 0)  # ours: the caller is a subreaper and never saw it
            except ChildProcessError:
                if self.pidfd is not None:  # not our child: at least wait until it is gone
                    proc.wait_exit(self.pidfd, 2.0)

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


def _quiet(fn, *args) -> None:
    try:
        fn(*args)
    except OSError:
        pass


def _await_ready(sock: socket.socket, kids: _Children, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    start, ready = None, False
    while kids.pid is None or not ready:
        msg = _recv(sock, deadline, timeout)
        if msg is None:
            raise ContainerSetupError("init", "the container's init exited before reporting")
        if msg["type"] == "pid":
            start = kids.got_pid(msg["pid"], msg.get("self", False))
        elif msg["type"] == "ready":
            ready = True
        else:
            err = _decode_error(msg)
            # The init may report before the intermediate did: learn its pid to reap it.
            while kids.pid is None and kids.mid is not None:
                more = _recv(sock, deadline, timeout)
                if more is None:
                    break
                if more["type"] == "pid":
                    kids.got_pid(more["pid"])
            raise err
    if start is None:
        raise ContainerSetupError("init", "the container's init vanished during create")
    return start


def launch(cfg: "_init.InitConfig", stdio: Stdio3, sys, timeout: float = 10.0) -> tuple[int, int]:
    """Fork the init and wait until it is created. Returns (host pid, start time)."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    kids = _Children()
    try:
        kids.mid = os.fork()
        if kids.mid == 0:
            code = 1
            try:
                _child_signals()
                parent.close()
                code = _intermediate(cfg, stdio, child, sys)
            finally:
                os._exit(code)
        child.close()
        start = _await_ready(parent, kids, timeout)
        return kids.pid, start
    except BaseException:
        kids.abort()
        raise
    finally:
        kids.close()
        parent.close()
        child.close()
