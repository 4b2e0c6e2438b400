"""The fork server: a process with the daemon's modules already imported, that forks daemons.

Why: a new shim daemon must import the engine, its event loop and messages (~25 ms here)
before it can answer containerd's first call, and that sits on every container's start. A fork of a process
that has done the imports once is ready in about a millisecond, and its pages stay shared with
the server's (copy-on-write; gc.freeze() keeps the collector from touching them), which is also
what makes many shims cheap in memory.

Invariants:
- One fork server per containerd (keyed by its gRPC address): its command line carries
  `-address ADDR` like every shim of that containerd, and it exits when that containerd's socket
  is gone, after IDLE_EXIT seconds without requests, or when its code on disk changed.
- It never serves a request with stale code: every request re-checks the mtimes of the modules
  it loaded; on a change it answers "stale" and exits, and `start` forks the daemon itself.
- `start` never depends on it: anything other than a pid in the answer -> the direct path.
- Only peers with our uid may ask (SO_PEERCRED), over a 0600 socket in a 0700 directory.
- The client half (request_daemon, launch) imports nothing beyond the standard library's
  builtins: it runs inside `start`.
"""

from __future__ import annotations

import _socket
import marshal
import os
import sys

try:
    from _sha256 import sha256
except ImportError:  # pragma: no cover
    from hashlib import sha256

RUN_DIR = os.environ.get("PYSHIM_FORKSERVER_DIR", "/run/pyshim/forkserver")  # env: for tests
PROTOCOL = 1
IDLE_EXIT = 600.0
POLL = 5.0  # how often an idle server checks that its containerd still exists
CLIENT_TIMEOUT = 2.0
LAUNCH_TIMEOUT = 3.0  # a server's start-up (its imports) is ~0.1 s; this bounds a slow machine
_MAX_MESSAGE = 1 << 20
_FD_SIZE = 4


def _key(address: str) -> str:
    return sha256(os.path.normpath(address).encode()).hexdigest()[:24]


def socket_path(address: str) -> str:
    return os.path.join(RUN_DIR, _key(address) + ".sock")


def pid_path(address: str) -> str:
    return os.path.join(RUN_DIR, _key(address) + ".pid")


# ---- client side (inside `start`) ------------------------------------------------------------

def request_daemon(address: str, request: dict, listener_fd: int) -> int | None:
    """Ask the fork server for a daemon serving listener_fd; its pid, or None (go direct)."""
    conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    try:
        conn.settimeout(CLIENT_TIMEOUT)
        conn.connect(socket_path(address))
        request = dict(request, protocol=PROTOCOL, python=sys.version)
        conn.sendmsg([marshal.dumps(request)], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,
                                                 listener_fd.to_bytes(_FD_SIZE, sys.byteorder))])
        reply = marshal.loads(conn.recv(_MAX_MESSAGE))
    except (OSError, EOFError, ValueError, TypeError):
        return None
    finally:
        conn.close()
    pid = reply.get("pid") if isinstance(reply, dict) else None
    return pid if isinstance(pid, int) and pid > 0 else None


def launch(address: str, python_path: list[str], ready_fd: int = -1) -> None:
    """Start a fork server for `address` in the background (it exits at once if one runs).
    ready_fd, if given, is the write end of a pipe: a byte on it means "listening"."""
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)  # the middle process exits at once: no zombie, no wait on the server
        return
    try:
        if os.fork() == 0:
            # Before exec: containerd reads start's stdout/stderr to EOF, so we must not hold
            # them even for the few ms until the server's main() would redirect them.
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.chdir("/")
            if ready_fd >= 0:
                os.set_inheritable(ready_fd, True)
            code = f"import sys; sys.path[:0] = {python_path!r}; from shim.forkserver import main; main()"
            os.execv(sys.executable, [sys.executable, "-IS", "-c", code, "-address", address,
                                      "-ready-fd", str(ready_fd)])
    finally:
        os._exit(0)


def launch_and_wait(address: str, python_path: list[str], timeout: float = LAUNCH_TIMEOUT) -> bool:
    """Launch a server and wait until it says it listens (or exits: another one runs);
    False if neither happens within timeout."""
    import select

    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        launch(address, python_path, w)
        os.close(w)
        w = -1
        ready, _, _ = select.select([r], [], [], timeout)
        return bool(ready)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


# ---- server side -----------------------------------------------------------------------------

def main() -> None:
    """Entry point of the background process: `... -c <code> -address ADDR`."""
    address = sys.argv[sys.argv.index("-address") + 1]
    ready = int(sys.argv[sys.argv.index("-ready-fd") + 1]) if "-ready-fd" in sys.argv else -1
    if ready >= 0:
        os.set_inheritable(ready, False)  # the daemons it forks must not hold it
    os.setsid()
    os.makedirs(RUN_DIR, mode=0o700, exist_ok=True)
    lock = _exclusive_lock(socket_path(address) + ".lock")
    if lock is None:
        os._exit(0)  # another fork server for this containerd runs, or is starting
    os._exit(Server(address, ready).run())


def _exclusive_lock(path: str) -> int | None:
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd  # held (and inherited by nobody: CLOEXEC, closed in children) until we exit


class Server:
    def __init__(self, address: str, ready_fd: int = -1):
        self.address = address
        self.ready_fd = ready_fd
        self.path = socket_path(address)
        self.modules: dict[str, int] = {}

    def run(self) -> int:
        import gc
        import signal
        import time

        from shim import daemon  # the point: everything a daemon needs, imported once

        daemon.warm_up()
        self.modules = _our_module_mtimes()
        listener = self._listen()
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # daemons are reaped by the kernel
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # exit through the cleanup below
        gc.collect()
        gc.freeze()  # keep the collector's hands off the pages the children share
        if self.ready_fd >= 0:
            os.write(self.ready_fd, b"1")
            os.close(self.ready_fd)
        last = time.monotonic()
        try:
            while True:
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    if not os.path.exists(self.address) or time.monotonic() - last > IDLE_EXIT:
                        return 0
                    continue
                last = time.monotonic()
                with conn:
                    try:
                        if not self._serve(conn, listener):
                            return 0
                    except OSError:  # the client went away mid-request: its start falls back
                        continue
        finally:
            self._remove_files()

    def _listen(self):
        import socket

        tmp = f"{self.path}.{os.getpid()}"
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        old = os.umask(0o177)
        try:
            s.bind(tmp)
        finally:
            os.umask(old)
        s.listen(64)
        s.settimeout(POLL)
        os.rename(tmp, self.path)  # atomically replaces a dead server's socket
        with open(pid_path(self.address) + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(pid_path(self.address) + ".tmp", pid_path(self.address))
        return s

    def _remove_files(self) -> None:
        # The lock file too: a server racing us to it at worst runs unreachable until idle.
        for path in (self.path, pid_path(self.address), self.path + ".lock"):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def _serve(self, conn, listener) -> bool:
        """Handle one request; False when this server must exit (stale code)."""
        import socket
        import struct

        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, _ = struct.unpack("3i", creds)
        if uid != os.geteuid():
            return True
        try:
            data, ancdata, _, _ = conn.recvmsg(_MAX_MESSAGE, socket.CMSG_SPACE(_FD_SIZE))
            fds = [int.from_bytes(d[:_FD_SIZE], sys.byteorder)
                   for lvl, typ, d in ancdata if lvl == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS]
            request = marshal.loads(data)
        except (OSError, EOFError, ValueError) as e:
            conn.send(marshal.dumps({"error": f"bad request: {e}"}))
            return True
        if len(fds) != 1 or request.get("protocol") != PROTOCOL or request.get("python") != sys.version:
            for fd in fds:
                os.close(fd)
            conn.send(marshal.dumps({"error": "protocol mismatch"}))
            return False
        if _our_module_mtimes() != self.modules:
            os.close(fds[0])
            conn.send(marshal.dumps({"error": "stale"}))
            return False
        pid = os.fork()
        if pid == 0:
            conn.close()
            listener.close()
            _become_requested_daemon(request, fds[0])  # never returns
        os.close(fds[0])
        conn.send(marshal.dumps({"pid": pid}))
        return True


def _become_requested_daemon(request: dict, listener_fd: int) -> None:
    import signal

    from shim import bootstrap

    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the daemon is a subreaper: it must see exits
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.environ.clear()
    os.environ.update(request["env"])
    flags = bootstrap.Flags()
    for name, value in request["flags"].items():
        setattr(flags, name, value)
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, fileno=listener_fd)
    bootstrap._become_daemon(sock, flags, request["options"], request["bundle"], request["path"])


def _our_module_mtimes() -> dict[str, int]:
    """mtime of every loaded module of ours (and of the interpreter): the code identity."""
    out = {sys.executable: _mtime(sys.executable)}
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] in ("shim", "runtime", "proto"):
            path = getattr(module, "__file__", None)
            if path:
                out[path] = _mtime(path)
    return out


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return -1
