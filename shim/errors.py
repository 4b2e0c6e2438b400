"""The ONE place where errors become ttrpc status codes (containerd's errdefs classes).

Handlers raise typed errors; nothing here looks at message text.
"""

from __future__ import annotations

import sys

from runtime import errors as engine
from shim.stdio import StdioError
from shim.ttrpc import Code, TTRPCError


def not_found(what: str) -> TTRPCError:
    return TTRPCError(Code.NOT_FOUND, f"{what}: not found")


def already_exists(what: str) -> TTRPCError:
    return TTRPCError(Code.ALREADY_EXISTS, f"{what}: already exists")


def failed_precondition(message: str) -> TTRPCError:
    return TTRPCError(Code.FAILED_PRECONDITION, message)


def invalid_argument(message: str) -> TTRPCError:
    return TTRPCError(Code.INVALID_ARGUMENT, message)


_ENGINE_CODES: list[tuple[type[BaseException], Code]] = [
    (engine.InvalidSpec, Code.INVALID_ARGUMENT),
    (engine.ContainerNotFound, Code.NOT_FOUND),
    (engine.ContainerExists, Code.ALREADY_EXISTS),
    (engine.InvalidState, Code.FAILED_PRECONDITION),
    (engine.ContainerSetupError, Code.FAILED_PRECONDITION),
    (engine.CgroupError, Code.FAILED_PRECONDITION),
    (StdioError, Code.INVALID_ARGUMENT),
    (engine.EngineError, Code.UNKNOWN),
]


def to_ttrpc(exc: BaseException) -> TTRPCError:
    """Map an error raised below the service to the status containerd will see."""
    if isinstance(exc, TTRPCError):
        return exc
    # runtime.checkpoint is imported only by a daemon that checkpoints or restores; if it is not
    # loaded, exc cannot be one of its errors.
    criu = sys.modules.get("runtime.checkpoint")
    if criu is not None and isinstance(exc, criu.CriuUnavailable):
        return TTRPCError(Code.FAILED_PRECONDITION, str(exc))
    for cls, code in _ENGINE_CODES:
        if isinstance(exc, cls):
            return TTRPCError(code, str(exc))
    return TTRPCError(Code.UNKNOWN, str(exc) or type(exc).__name__)
