"""Status codes carried in ttrpc ``Status.code``.

ttrpc reuses the gRPC code space (google.golang.org/grpc/codes) verbatim, so the
numbers here must never change. The whole gRPC set is listed, not only the codes
pyshim sends, because a peer (containerd) may answer with any of them.
"""

from __future__ import annotations

import enum


class Code(enum.IntEnum):
    """gRPC/ttrpc status code; ``int(code)`` is the wire value."""

    OK = 0
    CANCELED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16
