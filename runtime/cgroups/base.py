"""What the v1 and v2 managers share: running a plan, listing pids, signalling, removing.

Invariant: a Manager writes only inside its own cgroup directories (self.paths) — plus, in
create(), the cpuset/subtree_control files of their ancestors — and only through self.fs.
destroy() removes the container's directories, children first, and nothing above them; it
tries every directory even when one fails, so nothing removable is left behind.
"""

import errno
import posix
import time

from _signal import SIGKILL  # not signal: its enum wrappers cost ~4 ms of start-up

from runtime.errors import CgroupError

from .. import ospath
from .fs import CgroupFS

RMDIR_DELAYS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64)  # ~1.3s for processes to drain


def _fail(op: str, path: str, e: OSError, field: str | None = None) -> CgroupError:
    what = f" (for {field})" if field else ""
    return CgroupError(f"{op} {path}{what}: {posix.strerror(e.errno or 0)}", path, field, e.errno)


class Manager:
    version = 0
    # What a process writes "0" to in each directory to move itself (open_join): v1 says
    # "tasks", see V1Manager.
    JOIN_FILE = "cgroup.procs"

    def __init__(self, paths: dict[str, str], fs: CgroupFS | None = None, kill=posix.kill):
        self.paths = dict(paths)
        self.fs = fs or CgroupFS()
        self._kill = kill  # injectable: unit tests must never signal real pids

    def dirs(self) -> list[str]:
        """The distinct cgroup directories (combined v1 mounts share one)."""
        return list(dict.fromkeys(self.paths.values()))

    def exists(self) -> bool:
        return any(self.fs.exists(d) for d in self.dirs())

    # --- processes --------------------------------------------------------------------------
    def apply(self, pid: int) -> None:
        """Move `pid` (and its threads) into the cgroup, in every hierarchy."""
        for d in self.dirs():
            path = ospath.join(d, "cgroup.procs")
            for delay in (0.03, 0.03, 0.03, 0.03, None):
                try:
                    self.fs.write(path, str(pid))
                    break
                except OSError as e:
                    # EINVAL: a task still in TASK_NEW (just forked) cannot move yet (runc retries)
                    if e.errno != errno.EINVAL or delay is None:
                        raise _fail("add pid to", path, e) from None
                    time.sleep(delay)

    def sub_dirs(self, sub: dict[str, str]) -> list[str]:
        """The distinct directories an exec'd process joins with runc's `exec --cgroup`:
        sub-cgroup `sub[controller]` (else `sub[""]`, else none) of the container's in each
        hierarchy. Sub-paths are relative and stay below the container's cgroup."""
        unknown = sorted(set(sub) - set(self.paths) - {""})
        if unknown:
            raise CgroupError(f"exec --cgroup: no {', '.join(unknown)} controller in this "
                              f"container's cgroups ({', '.join(sorted(self.paths))})", None)
        out = {}
        for ctrl, d in self.paths.items():
            rel = sub.get(ctrl, sub.get(""))
            if rel:
                clean = ospath.normpath(rel)
                if clean.startswith(("/", "..")) or clean == ".":
                    raise CgroupError(f"exec --cgroup {rel}: must be a relative path below the "
                                      "container's cgroup", None)
                d = ospath.join(d, clean)
            out[d] = None
        return list(out)

    def open_join(self, sub: dict[str, str] | None = None) -> tuple[list[int], list[str]]:
        """(fds, paths): JOIN_FILE in every hierarchy (of sub-cgroups: sub_dirs), and fds on
        them through which a process forked later moves itself, from wherever it is then
        (ctrcgroup.join_self): the kernel checks the credentials and cgroup namespace of the
        opener, not the writer's (Linux >= 5.16). On failure nothing stays open."""
        paths = [ospath.join(d, self.JOIN_FILE)
                 for d in (self.sub_dirs(sub) if sub else self.dirs())]
        fds: list[int] = []
        try:
            for path in paths:
                try:
                    fds.append(self.fs.open_write(path))
                except OSError as e:
                    raise _fail("open", path, e) from None
        except BaseException:
            for fd in fds:
                posix.close(fd)
            raise
        return fds, paths

    def _procs_dir(self) -> str:
        return self.dirs()[0]

    def pids(self) -> list[int]:
        """Every process in the cgroup and its child cgroups."""
        out: list[int] = []
        stack = [self._procs_dir()]
        while stack:
            d = stack.pop()
            try:
                out += [int(p) for p in self.fs.read(ospath.join(d, "cgroup.procs")).split()]
                stack += [ospath.join(d, c) for c in self.fs.subdirs(d)]
            except FileNotFoundError:
                continue  # a child cgroup removed while we walked
        return sorted(set(out))

    def kill_all(self, sig: int) -> None:
        """Signal every process. Frozen first when a freezer is available, so nothing forks
        out from under the walk; thawed after unless the cgroup was paused and the signal is
        not SIGKILL (a paused container stays paused; a killed one must thaw to die)."""
        try:
            was_frozen = self.freezer_state() == "FROZEN"
        except OSError:
            was_frozen = False
        try:
            self.freeze()
            frozen = True
        except CgroupError:
            frozen = False  # no freezer: signal anyway, racing forks
        try:
            for pid in self.pids():
                try:
                    self._kill(pid, sig)
                except ProcessLookupError:
                    pass
        finally:
            if frozen and not (was_frozen and sig != SIGKILL):
                self.thaw()

    def freezer_state(self) -> str:
        """"THAWED", "FREEZING", "FROZEN"; "" when there is no freezer."""
        raise NotImplementedError

    def freeze(self) -> None:
        raise NotImplementedError

    def thaw(self) -> None:
        raise NotImplementedError

    # --- executing a plan ---------------------------------------------------------------------
    def _dir(self, controller: str) -> str:
        raise NotImplementedError

    def _write(self, w) -> None:  # a plan.Write
        d = self._dir(w.controller)
        path, value = ospath.join(d, w.file), w.value
        try:
            try:
                self.fs.write(path, value)
            except FileNotFoundError:
                if not w.fallback:
                    if w.optional:
                        return
                    raise
                path, value = ospath.join(d, w.fallback[0]), w.fallback[1]
                self.fs.write(path, value)
        except OSError as e:
            raise _fail(f"write {value!r} to", path, e, w.field) from None

    def _execute(self, plan: list) -> None:
        """Run Writes in order. A Write with retry_after that fails with EINVAL is retried once,
        right after the write to that file succeeds (cfs_period vs cfs_quota)."""
        held: dict[str, list] = {}  # file -> [(Write, CgroupError)]
        for w in plan:
            try:
                self._write_item(w)
            except CgroupError as e:
                if e.errno == errno.EINVAL and w.retry_after:
                    held.setdefault(w.retry_after, []).append((w, e))
                    continue
                raise
            for later, _ in held.pop(getattr(w, "file", None), []):
                self._write_item(later)
        leftover = [e for pending in held.values() for _, e in pending]
        if leftover:
            raise leftover[0]

    def _write_item(self, item) -> None:
        self._write(item)

    # --- removal -------------------------------------------------------------------------------
    def _rmdir(self, d: str) -> None:
        """rmdir, retrying EBUSY while exiting processes drain out of the cgroup."""
        for delay in (*RMDIR_DELAYS, None):
            try:
                self.fs.rmdir(d)
                return
            except FileNotFoundError:
                return
            except OSError as e:
                if e.errno != errno.EBUSY or delay is None:
                    raise _fail("remove cgroup", d, e) from None
                time.sleep(delay)

    def _remove_tree(self, d: str) -> None:
        try:  # the common case, no child cgroup and no process left: one rmdir, no listing
            self.fs.rmdir(d)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno not in (errno.EBUSY, errno.ENOTEMPTY):  # child cgroups or exiting
                raise _fail("remove cgroup", d, e) from None  # processes (EBUSY)
        try:
            children = self.fs.subdirs(d)
        except FileNotFoundError:
            return
        for c in children:  # a cgroup with child cgroups cannot be removed: children first
            self._remove_tree(ospath.join(d, c))
        self._rmdir(d)

    def destroy(self) -> None:
        """Remove the cgroup (and any child cgroups) in every hierarchy. Processes must be gone
        (kill_all + wait) or leaving; EBUSY is retried for ~1.3s."""
        first: CgroupError | None = None
        for d in self.dirs():
            try:
                self._remove_tree(d)
            except CgroupError as e:
                first = first or e
            except OSError as e:  # listing a directory failed (EACCES...)
                first = first or _fail("remove cgroup", d, e)
        if first:
            raise first
