"""OCI hooks: run one kind's hooks, in order, each with the container's state JSON on stdin.

Where each kind runs (runtime-spec "Lifecycle"; this is runc's choice too):
- prestart, createRuntime: the caller (runtime namespace), during create, once the init has set
  up the mounts and devices and waits before pivot_root (launch.py's "hooks" message).
- createContainer: the init itself (container namespaces; the path still resolves in the
  runtime's filesystem), right after, still before pivot_root.
- startContainer: the init, after it took the start byte, before it execs the user process.
- poststart: the caller, after start; poststop: the caller, in delete, once the container is
  gone (and after a failed create, as runc's destroy does).

Invariants:
- A hook is a child of the calling process and is waited for by ITS pid, never waitpid(-1):
  a caller that reaps every child on SIGCHLD (the shim) is not disturbed, and nothing of the
  caller's is reaped here. No signal handler is touched.
- A hook that does not read its stdin is not an error (EPIPE is ignored); its stdout and stderr
  are collected (the last OUTPUT_TAIL bytes) for the error message.
- Every hook has a deadline: its own timeout, else DEFAULT_TIMEOUT. Past it the hook is
  SIGKILLed and reaped, and it has failed. So a hook can never hang create/start/delete.
- run() raises ContainerSetupError(step="<kind> hook", path=hook path) at the first failure;
  warn() logs each failure and runs the rest (poststart, poststop).
"""

from __future__ import annotations

import posix
import select
import time

from . import fastjson as json
from . import log
from .errors import ContainerSetupError

DEFAULT_TIMEOUT = 60.0  # seconds, for a hook without a timeout (the spec's default is none)
OUTPUT_TAIL = 4096


def preload() -> None:
    """Import what running a hook needs (subprocess: ~10 ms, so not at import time), in the
    caller before it forks: the init runs startContainer hooks after pivot_root, where no
    module can be found any more."""
    import subprocess  # noqa: F401


def budget(hooks: list) -> float:
    """The longest the hooks of one kind can take, in seconds."""
    return sum(h.timeout or DEFAULT_TIMEOUT for h in hooks)


def run(kind: str, hooks: list, state: dict) -> None:
    payload = json.dumps(state).encode()
    for i, h in enumerate(hooks):
        err = _run_one(h, payload)
        if err:
            raise ContainerSetupError(f"{kind} hook", f"{kind} hook #{i} ({h.path}): {err}", h.path)


def warn(kind: str, hooks: list, state: dict) -> list[str]:
    """Run them all; log and return the failures."""
    payload = json.dumps(state).encode()
    failures = []
    for i, h in enumerate(hooks):
        err = _run_one(h, payload)
        if err:
            failures.append(f"{kind} hook #{i} ({h.path}): {err}")
            log.warning(__name__, f"container {state.get('id')}: {failures[-1]}")
    return failures


def _run_one(hook, payload: bytes) -> str | None:
    """None on success, else why it failed (with the tail of its output)."""
    timeout = hook.timeout or DEFAULT_TIMEOUT
    env = dict(e.split("=", 1) for e in hook.env) if hook.env else None  # none: inherit (runc)
    import subprocess
    try:
        p = subprocess.Popen(hook.args or [hook.path], executable=hook.path, env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, close_fds=True)
    except OSError as e:
        return e.strerror or str(e)
    try:
        out, exited = _feed_and_collect(p, payload, time.monotonic() + timeout)
    finally:
        if p.poll() is None:
            p.kill()
        code = p.wait()  # waitpid(p.pid): only ever our own hook
        p.stdout.close()
        if p.stdin:
            p.stdin.close()
    tail = out.decode(errors="replace").strip()
    tail = f", output: {tail}" if tail else ""
    if not exited:
        return f"timed out after {timeout:g}s{tail}"
    if code:
        why = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        return why + tail
    return None


def _feed_and_collect(p: subprocess.Popen, payload: bytes, deadline: float) -> tuple[bytes, bool]:
    """Write the state, read the output, until the hook exits or the deadline passes.
    Returns (output tail, exited). Output still held open by a daemonized grandchild of the
    hook does not keep us waiting once the hook itself has exited."""
    pidfd = posix.pidfd_open(p.pid)
    stdin, stdout = p.stdin.fileno(), p.stdout.fileno()
    posix.set_blocking(stdin, False)
    posix.set_blocking(stdout, False)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    poller.register(stdout, select.POLLIN)
    if payload:
        poller.register(stdin, select.POLLOUT)
    else:
        p.stdin.close()
    out, exited = b"", False
    try:
        while not exited:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for fd, ev in poller.poll(left * 1000):
                if fd == pidfd:
                    exited = True
                elif fd == stdout:
                    chunk = _read(stdout)
                    if not chunk:
                        poller.unregister(stdout)
                    out = (out + chunk)[-OUTPUT_TAIL:]
                elif fd == stdin:
                    payload = _write(stdin, payload, ev)
                    if not payload:
                        poller.unregister(stdin)
                        p.stdin.close()
        for _ in range(16):  # what it wrote before it exited (bounded: a grandchild may go on)
            chunk = _read(stdout)
            if not chunk:
                break
            out = (out + chunk)[-OUTPUT_TAIL:]
    finally:
        posix.close(pidfd)
    return out, exited


def _read(fd: int) -> bytes:
    try:
        return posix.read(fd, 65536)
    except BlockingIOError:
        return b""


def _write(fd: int, payload: bytes, events: int) -> bytes:
    """The part of payload still to write; b"" once done or the hook closed its stdin."""
    if events & (select.POLLERR | select.POLLHUP):
        return b""
    try:
        return payload[posix.write(fd, payload):]
    except BrokenPipeError:  # it did not want the state: not an error
        return b""
    except BlockingIOError:
        return payload
