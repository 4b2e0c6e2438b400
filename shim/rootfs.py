"""The container's root filesystem, as containerd's snapshotter describes it (CreateTaskRequest.rootfs).

The shim mounts it on <bundle>/rootfs in the HOST mount namespace (as the runc shim does) so that
the engine finds a ready rootfs, and unmounts it at Delete; `shim delete` unmounts what a killed
shim left.
"""

from __future__ import annotations

import errno
import os


def mount_all(mounts, target: str) -> bool:
    """Mount each containerd.types.Mount on target in order; True if anything was mounted."""
    from runtime.mounts import parse_options
    from runtime.sys import linux

    done = 0
    try:
        for m in mounts:
            flags, data = parse_options(list(m.options))
            fstype = m.type
            if fstype == "bind":  # the native snapshotter hands out bind mounts
                fstype, flags = "none", flags | linux.MS_BIND
            linux.mount(m.source, target, fstype, flags, data)
            done += 1
    except BaseException:
        if done:
            unmount(target)
        raise
    return done > 0


def unmount(target: str) -> None:
    """Unmount everything stacked on target; lazily if it is busy.

    Checks /proc/self/mountinfo first, so the common nothing-to-do case imports nothing
    (`shim delete` runs after every shim exit)."""
    target = os.path.realpath(target)
    if not is_mountpoint(target):
        return
    from runtime.sys import linux

    for _ in range(16):  # bounded: a mount that refuses to go is reported, not looped on
        if not is_mountpoint(target):
            return
        try:
            linux.umount2(target, 0)
        except OSError:
            linux.umount2(target, linux.MNT_DETACH)
    raise OSError(errno.EBUSY, f"{target} is still mounted")


def is_mountpoint(path: str) -> bool:
    path = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo") as f:
            return any(line.split()[4] == path for line in f)
    except OSError:
        return False
