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

Log URIs (as the runc shim): `file:///path` appends stdout and stderr to one file (the process
gets the file itself); `binary:///path?k=v` starts a logger with fds 3 and 4 reading the
process's stdout and stderr pipes and fd 5 a readiness pipe (a byte or EOF = ready; waited for
at most LOGGER_READY_TIMEOUT), env CONTAINER_ID and CONTAINER_NAMESPACE, args k v from the query;
on close it gets SIGTERM, and SIGKILL LOGGER_KILL_TIMEOUT later if it is still there.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import struct
import termios

from runtime.container import Stdio
from runtime.record import Record, field
from shim import aio
from shim.log import getLogger

log = getLogger("pyshim.stdio")

_CHUNK = 65536
LOGGER_READY_TIMEOUT = 10.0
LOGGER_KILL_TIMEOUT = 12.0


class StdioError(Exception):
    """A stdio path could not be opened; .path names it."""

    def __init__(self, path: str, message: str):
        super().__init__(f"open {path}: {message}")
        self.path = path


class ProcessIO(Record):
    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    child: Stdio = field(default_factory=Stdio)   # the fds the process gets, closed after create
    _keep: list[int] = field(default_factory=list)  # read ends held against EPIPE
    _pump: "_StdinPump | None" = None
    _logger: "_Logger | None" = None
    terminal: bool = False
    console: "_Console | None" = None
    _console_out: int | None = None
    _console_in: int | None = None

    @classmethod
    def open(cls, stdin: str, stdout: str, stderr: str, *, terminal: bool = False,
             container_id: str = "", namespace: str = "", watch=None) -> "ProcessIO":
        """Open what the paths name. watch(pid, callback) reports a logger's exit.
        terminal: the engine makes a pty (child.console_fd); the shim copies between its
        master and the FIFOs (stderr is the terminal too)."""
        pio = cls(stdin, stdout, stderr, terminal=terminal)
        try:
            if terminal:
                pio._open_terminal_ends(stdin, stdout)
                return pio
            scheme, target = _parse_uri(stdout)
            if scheme == "file":
                pio._open_file(target.path)
            elif scheme == "binary":
                pio._logger = _Logger.spawn(target, container_id, namespace, pio.child, watch)
            elif scheme in ("", "fifo"):
                pio.child.stdout = pio._open_output(stdout)
                pio.child.stderr = pio._open_output(stderr)
            else:
                raise StdioError(stdout, f"unknown stdio scheme {scheme!r}")
            pio.child.stdin = pio._open_input(stdin)
        except BaseException:
            pio.close()
            raise
        return pio

    def _open_terminal_ends(self, stdin: str, stdout: str) -> None:
        if stdout:
            self._console_out = self._open_output(stdout)
            os.set_blocking(self._console_out, False)  # the shim writes it: never block the loop
        if stdin:
            try:
                self._console_in = os.open(stdin, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as e:
                raise StdioError(stdin, e.strerror or str(e)) from None

    def _open_file(self, path: str) -> None:
        try:
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise StdioError(path, e.strerror or str(e)) from None
        self.child.stdout, self.child.stderr = fd, os.dup(fd)

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
        """The process has its copies now: drop ours and start copying."""
        master = getattr(self.child, "console_fd", None)
        self.child.console_fd = None  # ours now: _close_child must not close it
        self._close_child()
        if self.terminal:
            if master is None:
                raise StdioError(self.stdout or "terminal", "the engine made no terminal")
            self.console = _Console(master, self._console_out, self._console_in)
            self._console_out = self._console_in = None
            self.console.start()
        if self._pump:
            self._pump.start()

    def exited(self) -> None:
        """The process is gone: keep nothing it left in a terminal from being lost."""
        if self.console:
            self.console.drain()

    def resize(self, width: int, height: int) -> None:
        if self.console:  # without a terminal there is nothing to resize (as runc)
            self.console.resize(width, height)

    def close_stdin(self) -> None:
        """CloseIO: the process gets EOF once what is already written has been copied."""
        if self._pump:
            self._pump.close_when_drained()
        if self.console:
            self.console.close_input()

    def close(self) -> None:
        self._close_child()
        if self._pump:
            self._pump.close()
        if self.console:
            self.console.close()
            self.console = None
        for fd in (self._console_out, self._console_in):
            if fd is not None:
                os.close(fd)
        self._console_out = self._console_in = None
        if self._logger:
            self._logger.stop()
            self._logger = None
        for fd in self._keep:
            os.close(fd)
        self._keep.clear()

    def _close_child(self) -> None:
        for name in ("stdin", "stdout", "stderr", "console_fd"):
            fd = getattr(self.child, name, None)
            if fd is not None:
                os.close(fd)
                setattr(self.child, name, None)


def _parse_uri(path: str):
    if "://" not in path:
        return "", None  # a plain FIFO path: no URL parsing (and no urllib import) needed
    from urllib.parse import urlsplit

    target = urlsplit(path)
    return target.scheme, target


class _Logger:
    """A binary:// log driver process, fed by the container's stdout/stderr pipes."""

    def __init__(self, pid: int):
        self.pid = pid
        self.exited = False

    @classmethod
    def spawn(cls, uri, container_id: str, namespace: str, child: Stdio, watch) -> "_Logger":
        from urllib.parse import parse_qsl, unquote

        argv = [unquote(uri.path)]
        seen = set()
        for key, value in parse_qsl(uri.query, keep_blank_values=True):
            if key not in seen:  # Go's url.Values: the first value of each key
                seen.add(key)
                argv += [key, value] if value else [key]
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        env = {"CONTAINER_ID": container_id, "CONTAINER_NAMESPACE": namespace}
        try:
            pid = _fork_exec(argv, env, [out_r, err_r, ready_w])
        except BaseException:
            for fd in (out_r, out_w, err_r, err_w, ready_r, ready_w):
                os.close(fd)
            raise
        for fd in (out_r, err_r, ready_w):
            os.close(fd)
        logger = cls(pid)
        if watch:
            watch(pid, logger._on_exit)
        _wait_ready(ready_r, argv[0])
        child.stdout, child.stderr = out_w, err_w
        return logger

    def _on_exit(self, status: int) -> None:
        self.exited = True
        if status:
            log.warning("log driver %d exited with status %d", self.pid, status)

    def stop(self) -> None:
        if self.exited:
            return
        _signal(self.pid, signal.SIGTERM)
        aio.get_running_loop().call_later(LOGGER_KILL_TIMEOUT, self._kill)

    def _kill(self) -> None:
        if not self.exited:
            log.warning("log driver %d ignored SIGTERM: killing it", self.pid)
            _signal(self.pid, signal.SIGKILL)


def _wait_ready(fd: int, name: str) -> None:
    try:
        ready, _, _ = select.select([fd], [], [], LOGGER_READY_TIMEOUT)
        if not ready:
            log.warning("log driver %s not ready after %.0fs: starting anyway", name,
                        LOGGER_READY_TIMEOUT)
    finally:
        os.close(fd)


def _fork_exec(argv: list[str], env: dict, fds: list[int]) -> int:
    """fork + exec with fds[i] as fd 3+i and /dev/null as 0-2; ENOENT etc. surface here."""
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD, signal.SIGTERM):
                signal.signal(sig, signal.SIG_DFL)
            # Moved above 3..3+n first, so no dup2 below overwrites a source not yet used.
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3 + len(fds)) for fd in fds]
            null = os.open(os.devnull, os.O_RDWR)
            for target in (0, 1, 2):
                os.dup2(null, target)
            for i, fd in enumerate(high):
                os.dup2(fd, 3 + i)  # dup2 clears CLOEXEC on the target
            os.execve(argv[0], argv, env)
        except BaseException as e:
            os.write(err_w, str(getattr(e, "strerror", None) or e).encode())
        finally:
            os._exit(127)
    os.close(err_w)
    try:
        failure = os.read(err_r, 4096)  # EOF: the exec succeeded (the pipe was CLOEXEC)
    finally:
        os.close(err_r)
    if failure:
        raise StdioError(argv[0], f"cannot start log driver: {failure.decode(errors='replace')}")
    return pid


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)  # unreaped (the reaper watches it), so the pid is still the logger's
    except ProcessLookupError:
        pass


class _Console:
    """The shim's end of a process's terminal: pty master -> stdout FIFO, stdin FIFO -> master.

    Output is copied with backpressure (while the FIFO is full the master is not read, so the
    process blocks, as it would on a pipe). When the process exits, drain() takes what the pty
    still holds at once, so nothing is lost; the FIFO's write end is closed (EOF for ctr) once
    everything is written and the master reported the slave gone (EIO)."""

    def __init__(self, master: int, out: int | None, stdin_fifo: int | None):
        os.set_blocking(master, False)
        self.master, self.out = master, out
        self._pending = b""
        self._eof = False
        self._loop: aio.Loop | None = None
        self._input = _StdinPump(stdin_fifo, os.dup(master)) if stdin_fifo is not None else None

    def start(self) -> None:
        self._loop = aio.get_running_loop()
        self._loop.add_reader(self.master, self._on_master)
        if self._input:
            self._input.start()

    def resize(self, width: int, height: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))

    def close_input(self) -> None:
        if self._input:
            self._input.close_when_drained()

    def drain(self) -> None:
        """The process exited: read whatever the pty still buffers, then flush it."""
        if self.master < 0 or self._eof:
            return
        while self._read_some():
            pass
        self._flush()

    def _read_some(self) -> bool:
        try:
            data = os.read(self.master, _CHUNK)
        except BlockingIOError:
            return False
        except OSError:  # EIO: no process holds the slave any more
            data = b""
        if not data:
            self._eof = True
            return False
        if self.out is not None:
            self._pending += data
        return True

    def _on_master(self) -> None:
        if self._read_some() or self._eof:
            self._loop.remove_reader(self.master)
            self._flush()

    def _flush(self) -> None:
        if self._pending and self.out is not None:
            try:
                n = os.write(self.out, self._pending)
            except BlockingIOError:
                n = 0
            except OSError as e:
                log.warning("terminal output: %s", e)
                n = len(self._pending)  # nowhere to write it: drop rather than spin
            self._pending = self._pending[n:]
        if self._pending:
            self._loop.add_writer(self.out, self._flush)
            return
        if self.out is not None:
            self._loop.remove_writer(self.out)
        if self._eof:
            self._close_output()
        else:
            self._loop.add_reader(self.master, self._on_master)

    def _close_output(self) -> None:
        if self.out is not None:
            os.close(self.out)
            self.out = None

    def close(self) -> None:
        if self.master < 0:
            return
        if self._loop:
            self._loop.remove_reader(self.master)
            if self.out is not None:
                self._loop.remove_writer(self.out)
        if self._input:
            self._input.close()
        self._close_output()
        os.close(self.master)
        self.master = -1


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
        self._loop: aio.Loop | None = None

    def start(self) -> None:
        if self._fifo < 0:
            return
        self._loop = aio.get_running_loop()
        if self._draining:  # CloseIO came before Start (ctr with no stdin does that)
            self._on_readable()
        else:
            self._loop.add_reader(self._fifo, self._on_readable)

    def close_when_drained(self) -> None:
        self._draining = True
        if self._loop is not None and not self._pending and self._fifo >= 0:
            self._on_readable()  # before start(), the copy happens when it starts

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
