"""The one door to cgroupfs.

Invariant: every read, write, mkdir, rmdir and listing the cgroups package does goes through
a CgroupFS, so tests substitute a recording subclass over a fake tree in tmp_path. A write is
ONE write(2) of the whole value to an EXISTING file: never O_CREAT (a missing cgroup file
means a missing controller or kernel feature and must surface as ENOENT), never split (the
kernel parses each write(2) as one command).
"""

import posix

from .. import ospath


class CgroupFS:
    def write(self, path: str, value: str) -> None:
        fd = posix.open(path, posix.O_WRONLY | posix.O_CLOEXEC)
        try:
            posix.write(fd, value.encode())
        finally:
            posix.close(fd)

    def open_write(self, path: str) -> int:
        """An O_WRONLY|O_CLOEXEC fd on an existing file (the caller writes and closes it)."""
        return posix.open(path, posix.O_WRONLY | posix.O_CLOEXEC)

    def read(self, path: str) -> str:
        with open(path) as f:
            return f.read()

    def mkdir(self, path: str) -> bool:
        """True if this call created the directory, False if it was already there."""
        try:
            posix.mkdir(path, 0o755)
            return True
        except FileExistsError:
            return False

    def rmdir(self, path: str) -> None:
        posix.rmdir(path)

    def exists(self, path: str) -> bool:
        return ospath.exists(path)

    def listdir(self, path: str) -> list[str]:
        return posix.listdir(path)

    def subdirs(self, path: str) -> list[str]:
        """Child cgroups of `path` (every directory in a cgroupfs dir is one)."""
        with posix.scandir(path) as it:
            return [e.name for e in it if e.is_dir(follow_symlinks=False)]
