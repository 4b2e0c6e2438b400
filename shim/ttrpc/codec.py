"""ttrpc wire codec. Pure: no I/O, no asyncio (the h11/grpclib "sans-I/O" style).

A frame is a 10-byte big-endian header ``>IIBB`` (body length, stream id, message
type, flags) followed by the body. Bodies of request/response frames are the
protobuf ``ttrpc.Request`` / ``ttrpc.Response`` envelopes.

Invariants:
- ``encode_frame`` never produces a body over ``MAX_MESSAGE_SIZE``.
- ``FrameDecoder`` never buffers more than one header plus ``MAX_MESSAGE_SIZE``
  bytes of body; the body of an oversized frame is dropped as it arrives and
  reported once, as ``OversizedFrame``, after its last byte.
- Events come out in wire order.
"""

from __future__ import annotations

import struct
from collections import namedtuple
from collections.abc import Iterable, Mapping


from proto.lite import DecodeError
from proto.ttrpc import ttrpc_lite as messages

from .codes import Code
from .errors import TTRPCError

HEADER = struct.Struct(">IIBB")
HEADER_SIZE = HEADER.size  # 10
MAX_MESSAGE_SIZE = 4 << 20  # 4 MiB, ttrpc's messageLengthMax
MESSAGE_TYPE_REQUEST = 1
MESSAGE_TYPE_RESPONSE = 2

# Metadata as callers give it: {"key": "v"} or {"key": ["v1", "v2"]}.
Metadata = Mapping[str, str | Iterable[str]]


# Immutable records as namedtuples: dataclasses would import inspect (~1 MB per daemon).
Frame = namedtuple("Frame", "stream_id type flags body")
Frame.__doc__ = "One complete frame whose body fitted the size limit."
OversizedFrame = namedtuple("OversizedFrame", "stream_id type flags length")
OversizedFrame.__doc__ = "A frame whose declared length exceeded the limit; its body was discarded."

Event = Frame | OversizedFrame


def oversized_error(length: int, limit: int = MAX_MESSAGE_SIZE) -> TTRPCError:
    """The ResourceExhausted status Go ttrpc uses for an oversized message."""
    return TTRPCError(
        Code.RESOURCE_EXHAUSTED,
        f"message length {length} exceed maximum message size of {limit}",
    )


def encode_frame(stream_id: int, type: int, body: bytes, flags: int = 0) -> bytes:
    """Header + body as one bytes object, so the caller can write it in one go.

    Raises ``TTRPCError(RESOURCE_EXHAUSTED)`` if the body is over the limit: the
    peer would discard it anyway, so it must never be sent.
    """
    if len(body) > MAX_MESSAGE_SIZE:
        raise oversized_error(len(body))
    return HEADER.pack(len(body), stream_id, type, flags) + body


class FrameDecoder:
    """Incremental frame parser: ``feed`` bytes in any chunking, get events out."""

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self._max = max_size
        self._buf = bytearray()  # partial header, or partial body of _header
        self._header: tuple[int, int, int, int] | None = None  # (length, id, type, flags)
        self._discard = 0  # body bytes of an oversized frame still to drop

    @property
    def idle(self) -> bool:
        """True between frames: an EOF now would not cut a frame in half."""
        return self._header is None and not self._buf

    def feed(self, data: bytes) -> list[Event]:
        """Consume all of ``data``; return every event it completes, in wire order."""
        events: list[Event] = []
        view = memoryview(data)
        while True:
            if self._discard:
                view = self._drop(view, events)
                if self._discard:
                    return events
                continue
            need = HEADER_SIZE if self._header is None else self._header[0]
            take = need - len(self._buf)
            self._buf += view[:take]
            view = view[take:]
            if len(self._buf) < need:
                return events
            if self._header is None:
                self._start_frame()
            else:
                length, stream_id, type_, flags = self._header
                events.append(Frame(stream_id, type_, flags, bytes(self._buf)))
                self._reset()

    def _start_frame(self) -> None:
        self._header = HEADER.unpack(self._buf)
        self._buf.clear()
        if self._header[0] > self._max:
            # Drop the body as it streams in instead of holding up to 4 GiB.
            self._discard = self._header[0]

    def _drop(self, view: memoryview, events: list[Event]) -> memoryview:
        n = min(self._discard, len(view))
        self._discard -= n
        if not self._discard:
            length, stream_id, type_, flags = self._header  # type: ignore[misc]
            events.append(OversizedFrame(stream_id, type_, flags, length))
            self._reset()
        return view[n:]

    def _reset(self) -> None:
        self._header = None
        self._buf.clear()


def _metadata_pairs(metadata: Metadata | None) -> list[messages.KeyValue]:
    pairs = []
    for key, values in (metadata or {}).items():
        # A bare string is one value, not an iterable of characters.
        for value in [values] if isinstance(values, str) else values:
            pairs.append(messages.KeyValue(key=key, value=value))
    return pairs


def encode_request(
    service: str,
    method: str,
    payload: bytes = b"",
    timeout_nano: int = 0,
    metadata: Metadata | None = None,
) -> bytes:
    """Serialized ``ttrpc.Request``. ``timeout_nano`` 0 means no deadline."""
    return messages.Request(
        service=service,
        method=method,
        payload=bytes(payload),
        timeout_nano=timeout_nano,
        metadata=_metadata_pairs(metadata),
    ).SerializeToString()


def decode_request(body: bytes) -> messages.Request:
    """Parse a request body; ``TTRPCError(INVALID_ARGUMENT)`` if it is not one."""
    request = messages.Request()
    try:
        request.ParseFromString(body)
    except (DecodeError, ValueError) as exc:  # ValueError: bad UTF-8 in a string
        raise TTRPCError(Code.INVALID_ARGUMENT, f"unmarshal request error: {exc}") from exc
    return request


def encode_response(
    payload: bytes | None = None, status: messages.Status | None = None
) -> bytes:
    """Serialized ``ttrpc.Response``.

    OK is expressed by leaving ``status`` unset, exactly as Go ttrpc does, so an OK
    reply with an empty payload is a zero-length body.
    """
    response = messages.Response()
    if status is not None:
        response.status.CopyFrom(status)
    if payload:
        response.payload = bytes(payload)
    return response.SerializeToString()


def decode_response(body: bytes) -> tuple[messages.Status | None, bytes]:
    """Parse a response body into ``(status, payload)``.

    ``status`` is None for OK: both an absent status (what Go sends) and an explicit
    code 0. Raises ``TTRPCError(UNKNOWN)`` if the body is not a Response.
    """
    response = messages.Response()
    try:
        response.ParseFromString(body)
    except (DecodeError, ValueError) as exc:
        raise TTRPCError(Code.UNKNOWN, f"unmarshal response error: {exc}") from exc
    ok = not response.HasField("status") or response.status.code == Code.OK
    return (None if ok else response.status), response.payload
