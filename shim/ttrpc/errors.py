"""Exceptions of the ttrpc library.

``TTRPCError`` is the only way a handler chooses the status it replies with; the
client raises it for every non-OK status it receives. ``ConnectionClosed`` means
the connection is gone and no reply will ever arrive for a pending call.
"""

from __future__ import annotations

from proto.ttrpc import ttrpc_lite as messages

from .codes import Code


def _as_code(code: int) -> Code | int:
    # Keep an unknown wire value as a plain int rather than failing: a newer peer
    # may use codes we do not list, and the number is still meaningful to log.
    try:
        return Code(code)
    except ValueError:
        return int(code)


class TTRPCError(Exception):
    """A ttrpc status: ``code`` (never OK) and a human-readable ``message``."""

    def __init__(self, code: Code | int, message: str = "") -> None:
        self.code = _as_code(code)
        self.message = message
        super().__init__(code, message)

    def __str__(self) -> str:
        name = self.code.name if isinstance(self.code, Code) else str(self.code)
        return f"{name}: {self.message}"

    def __repr__(self) -> str:
        return f"TTRPCError({self.code!r}, {self.message!r})"

    @classmethod
    def from_status(cls, status: messages.Status) -> "TTRPCError":
        """Build from a wire ``Status`` (details are not kept)."""
        return cls(status.code, status.message)

    def to_status(self) -> messages.Status:
        """The wire ``Status`` for this error."""
        return messages.Status(code=int(self.code), message=self.message)


class ConnectionClosed(ConnectionError):
    """The ttrpc connection was closed (by either side) or broke.

    A ``ConnectionError`` (hence an ``OSError``) so callers that already treat
    socket errors as "peer unreachable" handle it without a special case.
    """
