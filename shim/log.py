"""The daemon's log: one logrus-style line per record on stderr, which is containerd's log FIFO.

Why not `logging`: with threading and traceback it costs ~1.6 MB of RSS in every daemon, for
the five methods the shim calls. Loggers here have logging's call shape (`log.warning("x %s",
y)`, `log.exception(...)` inside an except block) so the code reads the same.

Invariants:
- A write that fails (containerd restarting: the FIFO has no reader, EAGAIN, EPIPE) is dropped;
  logging never raises into the caller.
- Arguments are %-formatted only when the record is emitted.
- `capture()` (tests) collects records instead of writing them.
"""

from __future__ import annotations

import os
import sys
import time

DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40
_NAMES = {DEBUG: "debug", INFO: "info", WARNING: "warning", ERROR: "error"}

_level = INFO
_fd: int | None = None  # None: sys.stderr's fd at emit time
_captured: list | None = None
_loggers: dict[str, "Logger"] = {}


def configure(debug: bool = False, fd: int | None = None) -> None:
    """Emit DEBUG too when debug; write to fd (default: stderr)."""
    global _level, _fd
    _level = DEBUG if debug else INFO
    _fd = fd


def getLogger(name: str) -> "Logger":  # noqa: N802 - logging's name
    logger = _loggers.get(name)
    if logger is None:
        logger = _loggers[name] = Logger(name)
    return logger


class Logger:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802
        return level >= _level or _captured is not None

    def debug(self, msg: str, *args) -> None:
        if DEBUG >= _level or _captured is not None:
            _emit(DEBUG, self.name, msg, args)

    def info(self, msg: str, *args) -> None:
        if INFO >= _level or _captured is not None:
            _emit(INFO, self.name, msg, args)

    def warning(self, msg: str, *args) -> None:
        _emit(WARNING, self.name, msg, args)

    def error(self, msg: str, *args) -> None:
        _emit(ERROR, self.name, msg, args)

    def exception(self, msg: str, *args) -> None:
        """An error with the traceback of the exception being handled."""
        _emit(ERROR, self.name, msg, args, with_traceback=True)


def _emit(level: int, name: str, msg: str, args: tuple, with_traceback: bool = False) -> None:
    try:
        text = msg % args if args else msg
    except Exception as e:  # a bad format string must not break the caller
        text = f"{msg!r} % {args!r}: {e}"
    if with_traceback and sys.exc_info()[0] is not None:
        import traceback  # only when there is one to show
        text = f"{text}\n{traceback.format_exc().rstrip()}"
    if _captured is not None:
        _captured.append((_NAMES[level], name, text))
        return
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
    quoted = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    line = (f'time="{stamp}.{int(now % 1 * 1e9):09d}Z" level={_NAMES[level]} '
            f'msg="{quoted}" logger={name}\n')
    try:
        os.write(sys.stderr.fileno() if _fd is None else _fd, line.encode("utf-8", "replace"))
    except (OSError, ValueError, AttributeError):
        pass  # containerd's log FIFO is gone or full: drop the line, never raise


class capture:  # noqa: N801 - used as a context manager
    """`with log.capture() as records:` collects (level, logger, message) tuples."""

    def __enter__(self) -> list:
        global _captured
        self._previous = _captured
        _captured = []
        return _captured

    def __exit__(self, *exc_info) -> None:
        global _captured
        _captured = self._previous
