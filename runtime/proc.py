"""Facts about host processes, PID-reuse safe.

Invariant: a process is identified by (pid, start time) where the start time is field 22 of
/proc/<pid>/stat; a pid whose start time differs is another process and is never signalled.
Signals go through a pidfd that was checked against the start time after it was opened, so a
pid recycled in between cannot be hit.
"""

import posix
import select


def _fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat from field 3 (state) on; comm may contain spaces and parentheses."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(b")") + 2:].decode().split()


def start_time(pid: int) -> int | None:
    f = _fields(pid)
    return None if f is None else int(f[19])


def is_alive(pid: int, start: int) -> bool:
    """Running or stopped but not exited: a zombie counts as dead (it only waits for a reaper)."""
    f = _fields(pid)
    return f is not None and f[0] not in ("Z", "X") and int(f[19]) == start


def open_pidfd(pid: int, start: int) -> int | None:
    """A pidfd for the live process (pid, start), or None if it is gone."""
    try:
        fd = posix.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return None
    if not is_alive(pid, start):  # checked after opening: the fd cannot change process now
        posix.close(fd)
        return None
    return fd


def wait_exit(pidfd: int, timeout: float) -> bool:
    """Wait until the process has exited (a pidfd polls readable then); never reaps it."""
    p = select.poll()
    p.register(pidfd, select.POLLIN)
    return bool(p.poll(timeout * 1000))
