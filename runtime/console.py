"""The process's pseudo-terminal (process.terminal: true), made as runc makes it: INSIDE the
container, from the container's own /dev/ptmx (-> pts/ptmx of the devpts instance its /dev/pts
is mounted with, newinstance), so the terminal is /dev/pts/N of the container, not the host's.

setup() runs in the process that will exec (the init, or an exec'd process once it is inside
the container's namespaces and root), which leads its own session already (setsid):
  open /dev/ptmx, unlockpt, open the slave through the master (TIOCGPTPEER), apply
  process.consoleSize (TIOCSWINSZ, only when both sides are non-zero, like runc), chown the
  slave to process.user.uid (the kernel chose the gid: devpts' gid= option), for the init
  bind the slave on /dev/console, hand the master over (send_master: the sync socket with
  SCM_RIGHTS), close our copy of the master, make the slave our controlling terminal
  (TIOCSCTTY) and our fds 0, 1 and 2.

Invariants: the master is never left open in the container; on failure every fd opened here
is closed again and the OSError propagates (callers report step "console"); nothing here
forks. For the init, the Console op sits in the mount plan (runtime.mounts) where runc sets up
its console: after pivot_root, before anything is remounted read-only.
"""

from .record import Record
from .sys.consts import MS_BIND

DEV_CONSOLE = "/dev/console"


class Console(Record, frozen=True):
    """What setup() needs; also a mount-plan op (runtime.executor calls setup for it)."""
    uid: int
    size: tuple[int, int] | None = None  # (height, width) to set on the terminal
    dev_console: bool = False  # bind the slave on /dev/console (the init's console only)


def for_process(proc, dev_console: bool = False) -> Console | None:
    """The Console op for a spec Process; None when it has no terminal."""
    if not proc.terminal:
        return None
    size = proc.console_size
    return Console(proc.user.uid, size if size and all(size) else None, dev_console)


def setup(op: Console, sys, send_master) -> None:
    """Make the terminal (see the module docstring); send_master(fd) hands the master over."""
    master, slave, path = sys.open_pty()
    try:
        try:
            if op.size is not None:
                sys.set_winsize(master, *op.size)
            sys.fchown(slave, op.uid, -1)
            if op.dev_console:
                _bind_dev_console(path, sys)
            send_master(master)
        finally:
            sys.close(master)
        sys.set_ctty(slave)
        for target in (0, 1, 2):
            sys.dup2(slave, target)
    finally:
        if slave not in (0, 1, 2):
            sys.close(slave)


def _bind_dev_console(slave_path: str, sys) -> None:
    # An existing /dev/console (a bind-mounted host /dev) is never opened nor chmod'ed.
    if not sys.exists(DEV_CONSOLE):
        sys.touch(DEV_CONSOLE)
        sys.chmod(DEV_CONSOLE, 0o666)
    sys.mount(slave_path, DEV_CONSOLE, None, MS_BIND)
