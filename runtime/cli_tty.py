"""pyshim-runc's terminals: the pty master the engine hands back (Stdio.console_fd) goes either to
the caller's --console-socket, or, for `run`/`exec` in the foreground, is relayed to the CLI's own
stdio, as runc does.

Invariants:
- runc's rules: a process with a terminal that the CLI will not wait for (create, run -d,
  exec -d) needs --console-socket; a console socket without a terminal is an error.
- The socket gets exactly one message: the master's name as data, the fd as SCM_RIGHTS
  (runc's utils.SendFd; containerd's console receiver reads it so). The CLI keeps no copy.
- The relay restores the caller's terminal mode whatever happens, copies the window size at
  start and on SIGWINCH, and ends when the process has exited and the master is drained.
"""

import errno
import posix
import select

import _signal as signal  # not signal: its enum wrappers cost ~4 ms of start-up

from . import ospath
from .cli import CliError

DETACH_NEEDS_SOCKET = "cannot allocate tty if runc will detach without setting console socket"
SOCKET_NEEDS_TTY = "cannot use console socket if runc will not detach or allocate tty"


def check(terminal: bool, console_socket: str | None, detach: bool) -> None:
    if terminal and detach and not console_socket:
        raise CliError(DETACH_NEEDS_SOCKET)
    if console_socket and (not terminal or not detach):
        raise CliError(SOCKET_NEEDS_TTY)


def bundle_wants_terminal(bundle: str) -> bool:
    """process.terminal of config.json; False if it cannot be read (create reports that)."""
    from . import fastjson as json
    try:
        with open(ospath.join(bundle, "config.json"), "rb") as f:
            process = json.load(f).get("process") or {}
        return process.get("terminal") is True
    except (OSError, ValueError, AttributeError):
        return False


def send_console(path: str, master: int) -> None:
    import socket
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        socket.send_fds(s, [b"/dev/ptmx"], [master])
    except OSError as e:
        raise CliError(f"--console-socket {path}: {e.strerror or e}") from None
    finally:
        s.close()


def _copy_winsize(src: int, dst: int) -> None:
    import fcntl
    import termios
    try:
        size = fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(dst, termios.TIOCSWINSZ, size)
    except OSError:
        pass


def relay(master: int, pid: int) -> None:
    """Copy stdin -> master and master -> stdout until `pid` (our child) has exited and the
    master is drained; the caller then reaps `pid`."""
    import termios
    import tty
    saved = None
    if posix.isatty(0):
        saved = termios.tcgetattr(0)
        tty.setraw(0)
        _copy_winsize(0, master)
        signal.signal(signal.SIGWINCH, lambda sig, frame: _copy_winsize(0, master))
    pidfd = posix.pidfd_open(pid)
    inputs = [master, pidfd] + ([0] if _open(0) else [])
    try:
        while True:
            ready = select.select(inputs, [], [])[0]
            if master in ready and not _pump(master, 1):
                inputs.remove(master)
            if 0 in ready:
                data = _read(0)
                if data:
                    _write_all(master, data)
                else:
                    inputs.remove(0)  # our stdin ended; the process keeps its terminal
            if pidfd in ready:
                posix.set_blocking(master, False)
                while master in inputs and _pump(master, 1):
                    pass
                return
    finally:
        posix.close(pidfd)
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
            signal.signal(signal.SIGWINCH, signal.SIG_DFL)


def _open(fd: int) -> bool:
    try:
        posix.fstat(fd)
        return True
    except OSError:
        return False


def _read(fd: int) -> bytes:
    try:
        return posix.read(fd, 65536)
    except BlockingIOError:
        return b""
    except OSError as e:
        if e.errno == errno.EIO:  # the slave side is closed: the process is gone
            return b""
        raise


def _pump(src: int, dst: int) -> bool:
    """One read from src written to dst; False at the end of src."""
    data = _read(src)
    if not data:
        return False
    _write_all(dst, data)
    return True


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            data = data[posix.write(fd, data):]
        except BrokenPipeError:
            return
