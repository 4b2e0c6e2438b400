"""ttrpc client on the shim's event loop (shim.aio; unary calls only).

Invariants:
- Stream ids are odd and increase (1, 3, 5, ...) per connection.
- Any number of calls may be in flight on one connection; a reply is matched to
  its call by stream id, in whatever order replies arrive.
- Each request frame is written with a single ``write``, so frames never interleave.
- Once the connection is closed or broken, every pending and every later call
  fails with ``ConnectionClosed``; the client never reconnects by itself.
- A non-OK reply raises ``TTRPCError``; a missing status or an empty body is OK.
"""

from __future__ import annotations


from shim import aio
from shim.log import getLogger

from . import codec
from .codes import Code
from .errors import ConnectionClosed, TTRPCError

log = getLogger("pyshim.ttrpc")

_READ_SIZE = 64 * 1024
_MAX_STREAM_ID = 0xFFFFFFFF


class Client:
    """One ttrpc connection. Create with ``await Client.connect(path)``."""

    def __init__(self, stream: aio.Stream) -> None:
        self._stream = stream
        self._next_id = 1
        self._pending: dict[int, aio.Future] = {}
        self._lock = aio.Lock()
        self._closed = False
        self._close_reason = "connection closed"
        self._read_task = aio.create_task(self._read_loop())

    @classmethod
    async def connect(cls, path: str, timeout: float | None = None) -> "Client":
        """Connect to the ttrpc server listening on unix socket ``path``.

        Raises ``OSError`` if nobody listens there, ``TimeoutError`` if the
        connection is not established within ``timeout`` seconds (a server
        whose accept backlog is full never answers).
        """
        async with aio.timeout(timeout):
            stream = await aio.open_unix_connection(path)
        return cls(stream)

    @property
    def closed(self) -> bool:
        return self._closed

    async def call(
        self,
        service: str,
        method: str,
        payload: bytes = b"",
        timeout: float | None = None,
        metadata: codec.Metadata | None = None,
    ) -> bytes:
        """Send one request and return the reply payload.

        ``timeout`` (seconds) bounds the whole call and is sent to the server as
        ``timeout_nano``; on expiry raises ``TTRPCError(DEADLINE_EXCEEDED)``.
        Raises ``TTRPCError`` for a non-OK status, ``ConnectionClosed`` if the
        connection is or becomes closed before the reply arrives.
        """
        timeout_nano = 0 if timeout is None else max(1, int(timeout * 1e9))
        body = codec.encode_request(service, method, payload, timeout_nano, metadata)
        try:
            async with aio.timeout(timeout):
                reply = await self._roundtrip(body)
        except TimeoutError:
            raise TTRPCError(Code.DEADLINE_EXCEEDED, f"{service}/{method}: timed out after {timeout}s") from None
        status, payload = codec.decode_response(reply)
        if status is not None:
            raise TTRPCError.from_status(status)
        return payload

    async def _roundtrip(self, body: bytes) -> bytes:
        if self._closed:
            raise ConnectionClosed(self._close_reason)
        stream_id = self._allocate_id()
        frame = codec.encode_frame(stream_id, codec.MESSAGE_TYPE_REQUEST, body)
        future = aio.get_running_loop().create_future()
        self._pending[stream_id] = future
        try:
            await self._send(frame)
            return await future
        finally:
            # On timeout/cancel too: a late reply then finds no entry and is dropped.
            self._pending.pop(stream_id, None)
            if future.done() and not future.cancelled():
                future.exception()  # failed while we were still sending: mark it seen

    def _allocate_id(self) -> int:
        stream_id = self._next_id
        # Wrap after 2**32 ids, staying odd; only a call pending for 2**31 calls could clash.
        self._next_id = stream_id + 2 if stream_id + 2 <= _MAX_STREAM_ID else 1
        return stream_id

    async def _send(self, frame: bytes) -> None:
        async with self._lock:
            if self._closed:
                raise ConnectionClosed(self._close_reason)
            try:
                self._stream.write(frame)  # one write: header and body never split
                await self._stream.drain()
            except (ConnectionError, OSError) as exc:
                self._shutdown(f"write failed: {exc}")
                raise ConnectionClosed(self._close_reason) from exc

    async def _read_loop(self) -> None:
        decoder = codec.FrameDecoder()
        reason = "connection closed by server"
        try:
            while data := await self._stream.read(_READ_SIZE):
                for event in decoder.feed(data):
                    self._deliver(event)
        except (ConnectionError, OSError) as exc:
            reason = f"connection error: {exc}"
        except aio.CancelledError:
            reason = "client closed"
            raise
        finally:
            self._shutdown(reason)

    def _deliver(self, event: codec.Event) -> None:
        if event.type != codec.MESSAGE_TYPE_RESPONSE:
            return  # ignored for forward compatibility, as Go does
        future = self._pending.get(event.stream_id)
        if future is None or future.done():
            return  # the call timed out or was cancelled; drop the late reply
        if isinstance(event, codec.OversizedFrame):
            future.set_exception(codec.oversized_error(event.length))
        else:
            future.set_result(event.body)

    def _shutdown(self, reason: str) -> None:
        """Mark closed, close the socket and fail every pending call. Idempotent."""
        if not self._closed:
            self._closed = True
            self._close_reason = reason
        self._stream.close()
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(ConnectionClosed(self._close_reason))

    def close(self) -> None:
        """Close the connection; pending calls fail with ``ConnectionClosed``."""
        self._shutdown("client closed")
        self._read_task.cancel()

    async def wait_closed(self) -> None:
        """Wait until the connection is fully torn down (after ``close()``)."""
        await aio.gather(self._read_task, return_exceptions=True)

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()
