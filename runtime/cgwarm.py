"""Start the kernel's cgroup-migration grace period early, in the background.

Moving a process between cgroups takes the kernel's global cgroup_threadgroup_rwsem for
writing. Its fast path is switched off through rcu_sync, which waits one RCU grace period
(5-15 ms on this kind of host) on the first move after an idle spell; moves within the next
grace period after that are instant. Every container creation pays that wait once, when its
init is moved into the container's cgroup - runc too.

start() moves the calling process into the cgroup it is already in (a no-op move that still
takes the rwsem) on a thread of its own, so the wait runs while the caller does other work
(the CLI: importing the engine, reading config.json, creating the cgroup). The real move then
finds the rwsem's fast path already off and does not wait again.

Invariants:
- It moves nothing: the process stays in its own cgroup, whatever the outcome; every error
  (not root, no cgroupfs, a threaded or vanished cgroup) is ignored - it is only a head start.
- Only os and _thread (builtins): it runs before the engine's imports, which it overlaps.
- The thread touches no Python-level lock (no import, no open()): a fork while it is blocked
  in the kernel is safe, and the child simply has no such thread.
"""

import os

# Where this process's own cgroup.procs may be, per /proc/self/cgroup line: the unified
# hierarchy (pure v2 mounts it at /sys/fs/cgroup, hybrid v1 at /sys/fs/cgroup/unified), then
# the v1 controllers' own mounts.
_ROOT = "/sys/fs/cgroup"


def candidates(proc_self_cgroup: str) -> list[str]:
    """The cgroup.procs files that hold this process, most likely first (v2, then v1)."""
    v2, v1 = [], []
    for line in proc_self_cgroup.splitlines():
        hid, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if not path.startswith("/"):
            continue
        if hid == "0" and controllers == "":
            v2 += [f"{_ROOT}{path}/cgroup.procs".replace("//", "/"),
                   f"{_ROOT}/unified{path}/cgroup.procs".replace("//", "/")]
        elif controllers and not controllers.startswith("name="):
            v1.append(f"{_ROOT}/{controllers}{path}/cgroup.procs".replace("//", "/"))
    return v2 + v1


def warm(read=None, open_=os.open, write=os.write, close=os.close) -> str | None:
    """Move this process into its own cgroup once; returns the file written, or None."""
    try:
        text = read() if read else _read("/proc/self/cgroup")
    except OSError:
        return None
    pid = str(os.getpid()).encode()
    for path in candidates(text):
        try:
            fd = open_(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            write(fd, pid)
            return path
        except OSError:
            continue
        finally:
            close(fd)
    return None


def _read(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 65536).decode()
    finally:
        os.close(fd)


def start() -> None:
    """warm() on a background thread; returns at once. A no-op unless root."""
    if os.geteuid() != 0:
        return
    import _thread
    try:
        _thread.start_new_thread(_quiet_warm, ())
    except RuntimeError:  # can't start a thread: no head start, nothing else changes
        pass


def _quiet_warm() -> None:
    try:
        warm()
    except BaseException:  # noqa: BLE001 - a head start only; never a traceback on stderr
        pass
