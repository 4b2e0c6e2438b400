"""ttrpc for pyshim: the containerd ttrpc protocol (v1.1 wire format), unary calls only.

Layers: ``codec`` (frames and envelopes, no I/O) under ``server`` and ``client``
(on shim.aio, the daemon's own event loop). Payloads are raw bytes here;
protobuf typing of the payload belongs to the service adapters one level up.

Wire invariants:
- A frame is a 10-byte big-endian header (length, stream id, type, flags) plus
  at most ``MAX_MESSAGE_SIZE`` (4 MiB) of body. An oversized frame's body is read
  and discarded and the stream gets RESOURCE_EXHAUSTED; the connection lives on.
- Clients use odd stream ids; an even id from a client gets INVALID_ARGUMENT.
- OK is a Response without status; an empty body is a valid OK reply.
- Unknown service/method get UNIMPLEMENTED "service <name>" / "method <name>".

Concurrency invariants:
- Requests on one connection run concurrently, one task each; replies may be
  out of order and a blocked handler never delays another.
- Every frame is written with one write under a per-connection lock.
- A request whose ``timeout_nano`` elapses gets DEADLINE_EXCEEDED and its
  handler is cancelled.
- A broken connection cancels its own handlers (server) or fails its own
  pending calls with ``ConnectionClosed`` (client), and nothing else.

Only the standard library and proto/lite messages are imported (the shim loads this on
every container start).
"""

from .client import Client
from .codec import (
    HEADER_SIZE,
    MAX_MESSAGE_SIZE,
    MESSAGE_TYPE_REQUEST,
    MESSAGE_TYPE_RESPONSE,
    Frame,
    FrameDecoder,
    OversizedFrame,
    decode_request,
    decode_response,
    encode_frame,
    encode_request,
    encode_response,
)
from .codes import Code
from .errors import ConnectionClosed, TTRPCError
from .server import Context, Handler, Server, check_peer_credentials, get_peer_credentials

__all__ = [
    "Client",
    "Code",
    "ConnectionClosed",
    "Context",
    "Frame",
    "FrameDecoder",
    "HEADER_SIZE",
    "Handler",
    "MAX_MESSAGE_SIZE",
    "MESSAGE_TYPE_REQUEST",
    "MESSAGE_TYPE_RESPONSE",
    "OversizedFrame",
    "Server",
    "TTRPCError",
    "check_peer_credentials",
    "decode_request",
    "decode_response",
    "encode_frame",
    "encode_request",
    "encode_response",
    "get_peer_credentials",
]
