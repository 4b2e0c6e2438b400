"""The two subcommands containerd runs: `start` and `delete`.

Invariants:
- This module imports the standard library only: `start` is on every container's critical path,
  and the lite messages, the event loop and the service load in the forked daemon, after
  `start` has answered.
- `start` prints exactly the socket address (nothing else, nothing on stderr), and the socket is
  already listening when it exits: containerd dials once, without retrying.
- The daemon keeps none of start's stdout/stderr (containerd reads them to EOF).
- `delete` is repeatable and quick: it force-kills and cleans what is left of one container and
  writes only a serialized DeleteResponse to stdout.
"""

from __future__ import annotations

import _socket  # the socket module's enum wrappers cost ~3 ms of start-up; we need none
import errno
import os
import sys
import time

try:  # the builtin module: hashlib would load OpenSSL (~2.5 ms) for one digest
    from _sha256 import sha256
except ImportError:  # pragma: no cover
    from hashlib import sha256

SOCKET_DIR = "/run/containerd/s"
SOCKET_PATH_LIMIT = 106
# Annotations that put several containers in one shim, in order of precedence (as the runc shim).
GROUP_LABELS = ("io.containerd.runc.v2.group", "io.kubernetes.cri.sandbox-id")
ENGINE_ROOT = "/run/pyshim"
VERSION = "0.1.0"


class UsageError(Exception):
    """Bad command line."""


class Flags:
    """The command line. (A plain class: dataclasses would import inspect, ~5 ms.)"""

    def __init__(self):
        self.namespace = self.address = self.publish_binary = self.id = ""
        self.bundle = self.socket = self.action = ""
        self.debug = False


_STRING_FLAGS = {"namespace", "address", "publish-binary", "id", "bundle", "socket"}
_BOOL_FLAGS = {"debug", "v", "version"}


def parse_flags(argv: list[str]) -> Flags:
    """Parse Go `flag`-style arguments: -name value, -name=value, --name, bools; flags first."""
    flags = Flags()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-") or arg in ("-", "--"):
            break
        name, eq, value = arg.lstrip("-").partition("=")
        if name in _BOOL_FLAGS:
            if name == "debug":
                flags.debug = value.lower() not in ("false", "0") if eq else True
            else:
                flags.action = "version"
        elif name in _STRING_FLAGS:
            if not eq:
                i += 1
                if i >= len(argv):
                    raise UsageError(f"flag needs an argument: -{name}")
                value = argv[i]
            setattr(flags, name.replace("-", "_"), value)
        else:
            raise UsageError(f"flag provided but not defined: -{name}")
        i += 1
    rest = argv[i:]
    if flags.action != "version":
        flags.action = rest[0] if rest else ""
    return flags


def socket_address(grpc_address: str, namespace: str, group: str) -> str:
    """containerd's shim.SocketAddress: unix:///run/containerd/s/<sha256(Join(addr, ns, group))>."""
    joined = os.path.normpath(os.path.join(grpc_address, namespace, group))
    return f"unix://{SOCKET_DIR}/{sha256(joined.encode()).hexdigest()}"


def socket_path(address: str) -> str:
    return address[len("unix://"):] if address.startswith("unix://") else address


def read_annotations(bundle: str) -> dict:
    try:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    if not any(label.encode() in raw for label in GROUP_LABELS):
        return {}  # the common case: no grouping, and no json import (~6 ms) on the start path
    import json

    try:
        spec = json.loads(raw)
    except ValueError:
        return {}
    annotations = spec.get("annotations") if isinstance(spec, dict) else None
    return annotations if isinstance(annotations, dict) else {}


NAMESPACE_GROUP = "pyshim-namespace"  # the group of every container under grouping = "namespace"


def group_id(bundle: str, container_id: str, grouping: str = "pod") -> str:
    """The shim a container belongs to, by policy: "pod" (as runc) its group annotation's
    value else its own id; "namespace" one per containerd namespace; "container" its id."""
    if grouping == "namespace":
        return NAMESPACE_GROUP  # the namespace is part of the socket address already
    if grouping == "container":
        return container_id
    annotations = read_annotations(bundle)
    for label in GROUP_LABELS:
        value = annotations.get(label)
        if isinstance(value, str) and value:
            return value
    return container_id


def can_connect(path: str) -> bool:
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        s.settimeout(1.0)
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def listen(path: str) -> _socket.socket:
    """Bind and listen on a fresh 0600 unix socket; EADDRINUSE propagates."""
    if len(path) > SOCKET_PATH_LIMIT:
        raise OSError(errno.ENAMETOOLONG, f"socket path too long: {path}")
    os.makedirs(os.path.dirname(path), mode=0o711, exist_ok=True)
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        old = os.umask(0o177)  # created 0600: no window in which others may connect
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


def write_atomic(path: str, data: bytes, mode: int = 0o644) -> None:
    tmp = os.path.join(os.path.dirname(path) or ".", "." + os.path.basename(path))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def start(flags: Flags) -> int:
    """Reuse a live shim of the same group, or listen and fork the daemon; print the address."""
    options = sys.stdin.buffer.read() if not sys.stdin.isatty() else b""
    bundle = os.getcwd()
    from shim import config

    try:
        cfg = config.load(options)
    except config.ConfigError as e:
        print(f"pyshim: {e}", file=sys.stderr)
        return 1
    flags.debug = flags.debug or cfg.log_level == "debug"
    address = socket_address(flags.address, flags.namespace,
                             group_id(bundle, flags.id, cfg.grouping))
    path = socket_path(address)
    try:
        sock = listen(path)
    except OSError as e:
        if e.errno != errno.EADDRINUSE:
            raise
        if can_connect(path):  # a live shim serves this group already
            write_atomic(os.path.join(bundle, "address"), address.encode())
            _print(address)
            return 0
        os.unlink(path)  # left by a shim that died
        sock = listen(path)
    try:
        write_atomic(os.path.join(bundle, "address"), address.encode())
        pid = _spawn_daemon(sock, flags, options, bundle, path,
                            use_forkserver=cfg.grouping != "namespace")
    except BaseException:
        sock.close()
        os.unlink(path)
        raise
    sock.close()
    write_atomic(os.path.join(bundle, "shim.pid"), str(pid).encode())
    _print(address)
    return 0


def _spawn_daemon(sock, flags: Flags, options: bytes, bundle: str, path: str,
                  use_forkserver: bool = True) -> int:
    """A daemon serving sock, forked by the fork server (ready at once, pages shared with its
    siblings). With no server up, one is launched and waited for (bounded): its imports cost
    what the daemon's own would. Only if that fails is the daemon forked here.
    Under grouping = "namespace" a daemon starts once per namespace: the server's speed would
    help once, and its memory (~10 MB) would be paid for good, so the daemon is forked here."""
    if use_forkserver and os.environ.get("PYSHIM_FORKSERVER", "1") != "0":
        from shim import forkserver

        request = {"flags": vars(flags), "options": options, "bundle": bundle, "path": path,
                   "env": dict(os.environ)}
        pid = forkserver.request_daemon(flags.address, request, sock.fileno())
        if not pid and forkserver.launch_and_wait(flags.address, sys.path):
            pid = forkserver.request_daemon(flags.address, request, sock.fileno())
        if pid:
            return pid
    pid = os.fork()
    if pid == 0:
        _become_daemon(sock, flags, options, bundle, path)  # never returns
    return pid


def _print(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _become_daemon(sock: _socket.socket, flags: Flags, options: bytes, bundle: str, path: str) -> None:
    """In the forked child: detach, then run the server. Control never returns to the caller."""
    code = 1
    try:
        os.setsid()
        _detach_stdio(bundle)
        from shim import daemon  # the heavy imports happen here, after start has answered

        code = daemon.run(sock, flags, options, bundle, path)
    except BaseException:  # pragma: no cover - last resort, logged to the bundle's log FIFO
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def _detach_stdio(bundle: str) -> None:
    """fds 0-2 -> /dev/null, then fd 2 -> the bundle's `log` FIFO that containerd reads.

    containerd holds the FIFO open read-write, so a non-blocking write-only open succeeds;
    if it is absent we keep /dev/null. Writes while containerd is down must not kill us:
    SIGPIPE is ignored (Python's default) and the logging handler drops EPIPE/EAGAIN.
    """
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    try:
        log = os.open(os.path.join(bundle, "log"), os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return
    os.dup2(log, 2)
    os.close(log)


# ---- delete ----------------------------------------------------------------------------------

def delete(flags: Flags) -> int:
    """Clean up after a shim that is gone; print a DeleteResponse{pid, 137, now}."""
    bundle = flags.bundle or os.getcwd()
    pid = 0
    try:
        pid = force_delete(engine_root(flags.namespace), flags.id)
    except Exception as e:  # warnings go to stderr, which containerd logs
        print(f"pyshim delete {flags.id}: {e}", file=sys.stderr)
    from shim.rootfs import unmount  # stdlib-only

    try:
        unmount(os.path.join(bundle, "rootfs"))
    except OSError as e:
        print(f"pyshim delete {flags.id}: {e}", file=sys.stderr)
    _remove_dead_socket(flags, bundle)
    sys.stdout.buffer.write(encode_delete_response(pid, 128 + 9, time.time_ns()))
    sys.stdout.flush()
    return 0


def force_delete(root: str, container_id: str) -> int:
    """Kill and forget the engine's container, if it still exists; return its init pid (or 0)."""
    if not os.path.isdir(os.path.join(root, container_id)):
        return 0  # the usual case: the shim's Delete cleaned up; skip importing the engine
    from runtime.container import Engine  # stdlib-only engine code
    from runtime.errors import ContainerNotFound

    try:
        container = Engine(root).load(container_id)
    except ContainerNotFound:
        return 0
    container.delete(force=True)
    return container.pid


def engine_root(namespace: str) -> str:
    return os.path.join(ENGINE_ROOT, namespace or "default")


def _remove_dead_socket(flags: Flags, bundle: str) -> None:
    try:  # the address start wrote: whatever the grouping policy was, this is the socket
        with open(os.path.join(bundle, "address")) as f:
            path = socket_path(f.read().strip())
    except OSError:
        return
    if path.startswith(SOCKET_DIR + "/") and os.path.exists(path) and not can_connect(path):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode_delete_response(pid: int, exit_status: int, exited_at_ns: int) -> bytes:
    """containerd.task.v2.DeleteResponse{1 pid, 2 exit_status, 3 exited_at Timestamp}, by hand:
    `delete` runs after every shim exit and need not pay for importing protobuf."""
    seconds, nanos = divmod(exited_at_ns, 1_000_000_000)
    ts = b""
    if seconds:
        ts += b"\x08" + _varint(seconds)
    if nanos:
        ts += b"\x10" + _varint(nanos)
    out = b""
    if pid:
        out += b"\x08" + _varint(pid)
    if exit_status:
        out += b"\x10" + _varint(exit_status)
    return out + b"\x1a" + _varint(len(ts)) + ts
