"""Start the kernel's cgroup-migration grace period early, in the background (cgroup v2).

Moving a process into a cgroup through cgroup.procs takes the kernel's global
cgroup_threadgroup_rwsem for writing. Its fast path is switched off through rcu_sync, which
waits one RCU grace period (5-30 ms on this kind of host) on the first move after an idle
spell; moves within the next grace period after that are instant. On a cgroup v2 host every
container creation pays that wait once, when its init is moved into the container's cgroup -
runc too. (On v1 and hybrid hosts the engine's processes move themselves through "tasks",
which takes no grace period: see cgroups.V1Manager. There is nothing to warm there, and a
warm-up would only hold cgroup_mutex, which the cgroup's mkdirs need, for a grace period.)

start() moves the calling process into the cgroup it is already in (a no-op move that still
takes the rwsem) on a thread of its own, so the wait runs while the caller does other work
(the CLI: importing the engine, reading config.json, creating the cgroup). The real move then
finds the rwsem's fast path already off and does not wait again.

The CLI starts it from its launcher (early(), before even runtime.cli is imported: ~1.5 ms
sooner than main() could), the shim when Create or Exec arrives.

Invariants:
- It moves nothing: the process stays in its own cgroup, whatever the outcome; every error
  (not root, no cgroupfs, a threaded or vanished cgroup) is ignored - it is only a head start.
- Only on a pure cgroup v2 host (no v1 controller in /proc/self/cgroup); elsewhere a no-op.
- Only builtins (posix, sys, _thread, fcntl): it runs before the engine's imports, which it
  overlaps.
- The caller's fds are not disturbed, and it leaves none behind. start() opens the
  cgroup.procs files itself, at 1000 or above (F_DUPFD), never at a number a caller's
  --preserve-fds or LISTEN_FDS could name; the thread only writes to and closes them (it may
  get the GIL late: that delays the move, not the caller). closerange() (the CLI's close of
  what it inherited) skips the fds a thread still holds; _lock orders it with their close.
- No import and no open() in the thread, and _lock is never held across the wait: a fork
  while it is blocked in the kernel is safe, and the child simply has no such thread.
"""

import fcntl
import posix
import sys
import _thread

# Where this process's own cgroup.procs is on a cgroup v2 host: /sys/fs/cgroup.
_ROOT = "/sys/fs/cgroup"


def candidates(proc_self_cgroup: str) -> list[str]:
    """The cgroup.procs file that holds this process on a pure cgroup v2 host; none when a v1
    controller is mounted (the engine joins its v1 hierarchies without a grace period)."""
    paths = []
    for line in proc_self_cgroup.splitlines():
        hid, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if controllers and not controllers.startswith("name="):
            return []  # a v1 controller: a v1 or hybrid host
        if hid == "0" and controllers == "" and path.startswith("/"):
            paths.append(f"{_ROOT}{path}/cgroup.procs".replace("//", "/"))
    return paths


_lock = _thread.allocate_lock()
_live: set[int] = set()  # the fds warm threads hold (all >= HIGH_FD), until they close them
HIGH_FD = 1000
SWITCH = 0.0001  # s: the GIL switch interval while the thread waits to run
_NORMAL_SWITCH = sys.getswitchinterval()  # what the thread puts back (the shim may start several)
started = False  # start() ran in this process as root (whatever it found: not tried again)
_COMMANDS = frozenset(("create", "run", "exec"))  # the CLI's commands that move a process


def open_targets(read=None, open_=posix.open, close=posix.close) -> list[int]:
    """Write-only fds on this process's own cgroup.procs files (candidates() order), each at
    HIGH_FD or above; [] if there are none (not root, no cgroupfs)."""
    try:
        text = read() if read else _read("/proc/self/cgroup")
    except OSError:
        return []
    fds = []
    for path in candidates(text):
        try:
            fds.append(_high(open_(path, posix.O_WRONLY | posix.O_CLOEXEC), close))
        except OSError:
            continue
    return fds


def warm(fds: list[int], write=posix.write, close=posix.close, switch=None) -> int | None:
    """Move this process into its own cgroup through the first of `fds` that takes it; close
    them all. Returns the fd written, or None. switch: the GIL switch interval to restore
    first (start() lowered it)."""
    try:
        if switch is not None:
            sys.setswitchinterval(switch)
        pid = str(posix.getpid()).encode()
        for fd in fds:
            try:
                write(fd, pid)
                return fd
            except OSError:
                continue
        return None
    finally:
        _release(fds, close)


def _release(fds: list[int], close=posix.close) -> None:
    with _lock:
        for fd in fds:
            _live.discard(fd)
            close(fd)


def _high(fd: int, close) -> int:
    """fd moved to the lowest free number >= HIGH_FD (where it already is, it stays)."""
    if fd >= HIGH_FD:
        return fd
    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, HIGH_FD)
    finally:
        close(fd)


def _read(path: str) -> str:
    fd = posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC)
    try:
        return posix.read(fd, 65536).decode()
    finally:
        posix.close(fd)


def closerange(low: int) -> None:
    """Close every fd from `low` up but those a warm thread still holds."""
    with _lock:
        for fd in sorted(f for f in _live if f >= low):
            if low < fd:
                posix.closerange(low, fd)
            low = fd + 1
        posix.closerange(low, 1 << 20)


def early(argv: list[str]) -> None:
    """The CLI launcher's call: start() if the command line may be one that moves a process
    (a container named "run" only costs a needless no-op move)."""
    if not _COMMANDS.isdisjoint(argv[1:]):
        start()


def start() -> None:
    """Open the cgroup.procs files here, then write to them on a background thread; returns
    at once. A no-op unless root."""
    global started
    if posix.geteuid() != 0:
        return
    started = True
    fds = open_targets()
    if not fds:
        return
    with _lock:
        _live.update(fds)
    # A new thread waits for the GIL until the caller's thread drops it, by default after
    # 5 ms of asking (the launcher's imports hold it): 0.1 ms here, until the thread runs.
    sys.setswitchinterval(min(_NORMAL_SWITCH, SWITCH))
    try:
        _thread.start_new_thread(_quiet_warm, (fds, _NORMAL_SWITCH))
    except RuntimeError:  # can't start a thread: no head start, nothing else changes
        sys.setswitchinterval(_NORMAL_SWITCH)
        _release(fds)


def _quiet_warm(fds: list[int], switch: float) -> None:
    try:
        warm(fds, switch=switch)
    except BaseException:  # noqa: BLE001 - a head start only; never a traceback on stderr
        pass
