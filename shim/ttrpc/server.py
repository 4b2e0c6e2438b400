"""ttrpc server on the shim's event loop (shim.aio; unary calls only).

Invariants:
- Every request frame gets its own task, so a blocked handler (e.g. Wait) never
  holds up other requests on the same connection; replies go out in completion
  order, not request order.
- Each reply frame is written with a single ``write`` under the connection's
  write lock, so frames never interleave.
- Every request gets exactly one reply unless its connection is gone.
- A failure on one connection (reset, EOF mid-frame, garbage) closes only that
  connection and cancels only its handlers; the server keeps accepting.
- ``close()`` stops accepting, closes every connection and cancels every
  in-flight handler; ``wait_closed()`` returns once all of them have finished.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping

from shim import aio
from shim.log import getLogger

from . import codec
from .codes import Code
from .errors import TTRPCError

log = getLogger("pyshim.ttrpc")

_UCRED = struct.Struct("iII")  # struct ucred {pid_t pid; uid_t uid; gid_t gid;}
_READ_SIZE = 64 * 1024


class Context:
    """Per-request information handed to a handler.

    ``metadata`` maps each key to all its values in wire order (containerd sends
    ``containerd-namespace-ttrpc``). ``deadline`` is in ``loop.time()`` units, or
    None when the client set no timeout.
    """

    __slots__ = ("service", "method", "stream_id", "metadata", "deadline")

    def __init__(self, service: str, method: str, stream_id: int,
                 metadata: dict[str, list[str]] | None = None,
                 deadline: float | None = None) -> None:
        self.service, self.method, self.stream_id = service, method, stream_id
        self.metadata = {} if metadata is None else metadata
        self.deadline = deadline

    def get(self, key: str, default: str | None = None) -> str | None:
        """The last value sent for ``key`` (a later value overrides an earlier)."""
        values = self.metadata.get(key)
        return values[-1] if values else default

    def time_remaining(self) -> float | None:
        """Seconds left before the deadline (may be negative), None if no deadline."""
        if self.deadline is None:
            return None
        return self.deadline - aio.get_running_loop().time()


Handler = Callable[[bytes, Context], Awaitable[bytes]]


def get_peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """``(pid, uid, gid)`` of the process at the other end of a unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    return _UCRED.unpack(raw)


def check_peer_credentials(creds: tuple[int, int, int], uid: int, gid: int) -> bool:
    """True iff the peer runs as ``uid``/``gid`` (Go's UnixSocketRequireSameUser)."""
    _pid, peer_uid, peer_gid = creds
    return peer_uid == uid and peer_gid == gid


class Server:
    """ttrpc server over an already-listening unix socket."""

    def __init__(self, *, check_peer: bool = True) -> None:
        """``check_peer``: accept only peers with our effective uid and gid."""
        self._check_peer = check_peer
        # Captured once, like Go: a later seteuid must not widen who may connect.
        self._uid, self._gid = os.geteuid(), os.getegid()
        self._services: dict[str, dict[str, Handler]] = {}
        self._server: aio.Listener | None = None
        self._connections: set[_Connection] = set()
        self._tasks: set[aio.Task] = set()  # connection and request tasks
        self._closed: aio.Event | None = None
        self._closing = False

    @property
    def connection_count(self) -> int:
        """Number of open, accepted connections."""
        return len(self._connections)

    def register(self, service: str, methods: Mapping[str, Handler]) -> None:
        """Add ``service`` with its ``{method name: handler}`` table.

        A handler gets the raw request payload and a Context and returns the raw
        response payload; it raises ``TTRPCError`` to reply with a status.
        """
        if service in self._services:
            raise ValueError(f"duplicate service registration: {service}")
        self._services[service] = dict(methods)

    async def start(self, sock: socket.socket) -> None:
        """Start accepting on ``sock`` (bound and listening) and return at once.

        The server takes ownership of ``sock``: ``close()`` closes it.
        """
        if self._server is not None or self._closing:
            raise RuntimeError("server already started or closed")
        self._closed = aio.Event()
        self._server = aio.Listener(sock, self._on_connect)

    async def serve(self, sock: socket.socket) -> None:
        """Serve on ``sock`` until ``close()`` is called and everything has stopped."""
        await self.start(sock)
        await self.wait_closed()

    def close(self) -> None:
        """Stop accepting, close all connections, cancel in-flight handlers."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            conn.close()
        if self._closed is not None:
            self._closed.set()

    async def wait_closed(self) -> None:
        """Return once ``close()`` was called and every task has finished.

        A handler that suppresses its cancellation delays this until it returns.
        """
        if self._closed is None:
            return
        await self._closed.wait()
        while self._tasks:
            await aio.gather(*list(self._tasks), return_exceptions=True)

    def _track(self, task: aio.Task) -> aio.Task:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _lookup(self, service: str, method: str) -> Handler:
        methods = self._services.get(service)
        if methods is None:
            raise TTRPCError(Code.UNIMPLEMENTED, f"service {service}")
        handler = methods.get(method)
        if handler is None:
            raise TTRPCError(Code.UNIMPLEMENTED, f"method {method}")
        return handler

    def _peer_allowed(self, stream: aio.Stream) -> bool:
        if not self._check_peer:
            return True
        try:
            creds = get_peer_credentials(stream.sock)
        except (OSError, AttributeError) as exc:  # not a unix socket, or gone
            log.warning("ttrpc: cannot read peer credentials: %s", exc)
            return False
        if check_peer_credentials(creds, self._uid, self._gid):
            return True
        log.warning("ttrpc: rejected connection from pid=%d uid=%d gid=%d", *creds)
        return False

    def _on_connect(self, stream: aio.Stream) -> None:
        if self._closing or not self._peer_allowed(stream):
            stream.close()
            return
        conn = _Connection(self, stream)
        self._connections.add(conn)
        task = self._track(conn.start())
        task.add_done_callback(lambda _: self._connections.discard(conn))


class _Connection:
    """One accepted connection: a read loop plus one task per request."""

    def __init__(self, server: Server, stream: aio.Stream) -> None:
        self._server = server
        self._stream = stream
        self._lock = aio.Lock()
        self._requests: set[aio.Task] = set()
        self._task: aio.Task | None = None

    def start(self) -> aio.Task:
        """Start the read loop in its own task (kept so ``close`` can cancel it)."""
        self._task = aio.create_task(self._run())
        return self._task

    async def _run(self) -> None:
        """Read frames until EOF/error, then cancel this connection's handlers."""
        decoder = codec.FrameDecoder()
        try:
            while data := await self._stream.read(_READ_SIZE):
                for event in decoder.feed(data):
                    self._dispatch(event)
            if not decoder.idle:
                log.debug("ttrpc: connection closed mid-frame")
        except (ConnectionError, OSError) as exc:
            log.debug("ttrpc: connection error: %s", exc)
        finally:
            self.close()

    def close(self) -> None:
        """Close the socket and cancel the reader and every in-flight request."""
        self._stream.close()
        for task in list(self._requests):
            task.cancel()
        if self._task is not None and self._task is not aio.current_task():
            self._task.cancel()

    def _dispatch(self, event: codec.Event) -> None:
        if isinstance(event, codec.OversizedFrame):
            # Go replies to any oversized frame, whatever its type, and carries on.
            error = codec.oversized_error(event.length)
            self._spawn(self._reply(event.stream_id, status=error.to_status()))
        elif event.type == codec.MESSAGE_TYPE_REQUEST:
            self._spawn(self._handle(event.stream_id, event.body))
        # Other types (responses, future stream data) are ignored for forward compat.

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = self._server._track(aio.ensure_future(coro))
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    async def _handle(self, stream_id: int, body: bytes) -> None:
        try:
            payload = await self._call(stream_id, body)
        except TTRPCError as exc:
            await self._reply(stream_id, status=exc.to_status())
        else:
            await self._reply(stream_id, payload=payload)

    async def _call(self, stream_id: int, body: bytes) -> bytes:
        """Run the handler; every failure comes out as a TTRPCError."""
        if stream_id % 2 != 1:
            raise TTRPCError(Code.INVALID_ARGUMENT, "StreamID must be odd for client initiated streams")
        request = codec.decode_request(body)
        handler = self._server._lookup(request.service, request.method)
        ctx = _make_context(stream_id, request)
        # On expiry the scope cancels the handler (this task) and turns the
        # cancellation into TimeoutError once the handler has unwound.
        scope = aio.timeout_at(ctx.deadline)
        try:
            async with scope:
                result = await handler(request.payload, ctx)
            if not isinstance(result, (bytes, bytearray, memoryview)):
                raise TypeError(f"handler returned {type(result).__name__}, not bytes")
            return result
        except TTRPCError:
            raise
        except aio.CancelledError:
            if aio.current_task().cancelling():
                raise  # we are being cancelled (connection/server closing): no reply
            # The handler let a cancellation of its own escape; it is not ours.
            raise TTRPCError(Code.CANCELED, "handler cancelled") from None
        except Exception as exc:
            if isinstance(exc, TimeoutError) and scope.expired():
                raise TTRPCError(Code.DEADLINE_EXCEEDED, "deadline exceeded") from None
            log.exception("ttrpc: %s/%s failed", request.service, request.method)
            raise TTRPCError(Code.UNKNOWN, str(exc)) from exc

    async def _reply(self, stream_id: int, payload: bytes | None = None, status=None) -> None:
        body = codec.encode_response(payload, status)
        try:
            frame = codec.encode_frame(stream_id, codec.MESSAGE_TYPE_RESPONSE, body)
        except TTRPCError as exc:
            # Reply too large: Go v1.1.1 drops the connection here; a status is kinder.
            log.error("ttrpc: reply on stream %d too large: %s", stream_id, exc.message)
            body = codec.encode_response(status=exc.to_status())
            frame = codec.encode_frame(stream_id, codec.MESSAGE_TYPE_RESPONSE, body)
        async with self._lock:
            if self._stream.is_closing():
                return  # connection gone: nobody is left to read the reply
            try:
                self._stream.write(frame)  # one write: header and body never split
                await self._stream.drain()
            except (ConnectionError, OSError) as exc:
                log.debug("ttrpc: write failed: %s", exc)
                self.close()


def _make_context(stream_id: int, request) -> Context:
    metadata: dict[str, list[str]] = {}
    for kv in request.metadata:
        metadata.setdefault(kv.key, []).append(kv.value)
    deadline = None
    if request.timeout_nano > 0:
        deadline = aio.get_running_loop().time() + request.timeout_nano / 1e9
    return Context(request.service, request.method, stream_id, metadata, deadline)
