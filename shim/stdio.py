"""A process's stdio, wired from the FIFO paths containerd passes.

Design: stdout and stderr FIFOs are handed to the container process DIRECTLY (no copy in the
shim: the fastest path, and whatever the process wrote is in the kernel's pipe when it exits, so
nothing is "drained" late or lost). The shim keeps a read end of each FIFO open and never reads
from it: that keeps the FIFO readable-for-writers, so the process gets no EPIPE/SIGPIPE while
containerd (the real reader) restarts; the data waits in the FIFO for the new reader. The shim
never holds a WRITE end after the process has it, so the reader sees EOF once every process
writing to it is gone.

stdin is copied: a reader opened on a FIFO before containerd opens its write end would see EOF at
once, so the container cannot be given the FIFO itself. The shim reads the FIFO (epoll reports
nothing until a writer appears) and writes into a pipe whose read end is the process's stdin; EOF
on the FIFO, or CloseIO, closes the pipe.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from dataclasses import dataclass, field

from runtime.container import Stdio

log = logging.getLogger("pyshim.stdio")

_CHUNK = 65536


class StdioError(Exception):
    """A stdio path could not be opened; .path names it."""

    def __init__(self, path: str, message: str):
        super().__init__(f"open {path}: {message}")
        self.path = path


@dataclass
class ProcessIO:
    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    child: Stdio = field(default_factory=Stdio)   # the fds the process gets, closed after create
    _keep: list[int] = field(default_factory=list)  # read ends held against EPIPE
    _pump: "_StdinPump | None" = None

    @classmethod
    def open(cls, stdin: str, stdout: str, stderr: str) -> "ProcessIO":
        pio = cls(stdin, stdout, stderr)
        try:
            pio.child.stdout = pio._open_output(stdout)
            pio.child.stderr = pio._open_output(stderr)
            pio.child.stdin = pio._open_input(stdin)
        except BaseException:
            pio.close()
            raise
        return pio

    def _open_output(self, path: str) -> int | None:
        if not path:
            return None
        try:
            keep = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            self._keep.append(keep)
            # Succeeds without blocking because we hold a reader; the process gets a blocking fd.
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise StdioError(path, e.strerror or str(e)) from None
        os.set_blocking(fd, True)
        return fd

    def _open_input(self, path: str) -> int | None:
        if not path:
            return None
        try:
            fifo = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise StdioError(path, e.strerror or str(e)) from None
        r, w = os.pipe2(os.O_CLOEXEC)
        self._pump = _StdinPump(fifo, w)
        return r

    def started(self) -> None:
        """The process has its copies now: drop ours and start copying stdin."""
        self._close_child()
        if self._pump:
            self._pump.start()

    def close_stdin(self) -> None:
        """CloseIO: the process gets EOF once what is already written has been copied."""
        if self._pump:
            self._pump.close_when_drained()

    def close(self) -> None:
        self._close_child()
        if self._pump:
            self._pump.close()
        for fd in self._keep:
            os.close(fd)
        self._keep.clear()

    def _close_child(self) -> None:
        for name in ("stdin", "stdout", "stderr"):
            fd = getattr(self.child, name)
            if fd is not None:
                os.close(fd)
                setattr(self.child, name, None)


class _StdinPump:
    """FIFO -> pipe copy on the event loop; non-blocking on both sides, never stalls the loop.

    close_when_drained() (CloseIO) copies what is already in the FIFO before closing: ctr calls
    CloseIO right after writing its last bytes, which may still sit in the FIFO.
    """

    def __init__(self, fifo: int, pipe: int):
        self._fifo, self._pipe = fifo, pipe
        os.set_blocking(pipe, False)
        self._pending = b""
        self._draining = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._fifo, self._on_readable)

    def close_when_drained(self) -> None:
        self._draining = True
        if self._loop is None:
            self.close()
        elif not self._pending and self._fifo >= 0:
            self._on_readable()

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fifo, _CHUNK)
        except BlockingIOError:
            if self._draining:
                self.close()
            return
        except OSError as e:
            log.warning("stdin read: %s", e)
            data = b""
        if not data:  # every writer closed the FIFO
            self.close()
            return
        self._pending = data
        self._loop.remove_reader(self._fifo)
        self._on_writable()

    def _on_writable(self) -> None:
        try:
            n = os.write(self._pipe, self._pending)
        except BlockingIOError:
            n = 0
        except OSError as e:
            if e.errno != errno.EPIPE:
                log.warning("stdin write: %s", e)
            self.close()  # the process closed its stdin: nobody will read more
            return
        self._pending = self._pending[n:]
        if self._pending:
            self._loop.add_writer(self._pipe, self._on_writable)
            return
        self._loop.remove_writer(self._pipe)
        if self._draining:
            self._on_readable()
        else:
            self._loop.add_reader(self._fifo, self._on_readable)

    def close(self) -> None:
        if self._fifo < 0:
            return
        if self._loop:
            self._loop.remove_reader(self._fifo)
            self._loop.remove_writer(self._pipe)
        os.close(self._fifo)
        os.close(self._pipe)
        self._fifo = self._pipe = -1
