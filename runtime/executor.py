"""Apply a mount plan (runtime.mounts ops) through a syscall object (runtime.sys).

Invariants: every container path is resolved with paths.secure_join against the rootfs at the
moment its op runs, until PivotRoot (see runtime.mounts); every OSError becomes a
ContainerSetupError naming the step and the path. The executor decides nothing the plan did
not say, except what only the filesystem can tell (is the bind source a file? is a masked path
a directory? which flags has a mount locked?), which it learns from the syscall object so
the fake can answer too.
"""

import errno
import posix
import stat

from . import ospath
from . import console as _console
from . import mounts as M
from .errors import ContainerSetupError
from .paths import secure_join

_STEPS = {M.Mount: "mount", M.SetAttr: "mount_setattr", M.Umount: "umount", M.Chdir: "chdir",
          M.PivotRoot: "pivot_root", M.Chroot: "chroot", M.MoveRoot: "no-pivot",
          M.IdmapBind: "idmapped mount",
          M.ParentPrivate: "mount", M.MakeDevice: "mknod", M.Symlink: "symlink",
          M.MakeDirs: "mkdir", M.MaskPath: "mask", M.ReadonlyPath: "readonly",
          M.AwaitCgroup: "cgroup",
          _console.Console: "console"}
_MODE_TYPES = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}
_BIND_REMOUNT = M.MS_BIND | M.MS_REMOUNT
_ATIME = M.MS_NOATIME | M.MS_RELATIME | M.MS_STRICTATIME  # one of them, exclusively
_LOCKED_KEPT = M.MS_NODEV | M.MS_NOSUID | M.MS_NOEXEC | M.MS_NODIRATIME  # ro is never added


class _Executor:
    def __init__(self, rootfs: str, sys, send_master=None, mount_fds=None, await_cgroup=None):
        self.rootfs, self.sys, self.rooted = rootfs, sys, False
        self.send_master, self.await_cgroup = send_master, await_cgroup
        self.mount_fds = mount_fds or {}  # spec.mounts index -> detached idmapped mount

    def resolve(self, path: str, host: bool = False) -> str:
        if host or self.rooted:
            return path
        return secure_join(self.rootfs, path, self.sys.readlink)

    def resolve_parent(self, path: str) -> str:
        """Resolve all but the last component: for ops that must not follow a final symlink."""
        return ospath.join(self.resolve(ospath.dirname(path)), ospath.basename(path))

    # one method per op type -----------------------------------------------------------------
    def Mount(self, op: M.Mount) -> None:
        target = self.resolve(op.target, op.host)
        self.mount_point(op.create, op.source, target)
        self.mount(op.source, target, op.fstype, op.flags, op.data)

    def IdmapBind(self, op: M.IdmapBind) -> None:
        fd = self.mount_fds.get(op.index)
        if fd is None:
            raise OSError(errno.EBADF, f"mounts[{op.index}]: the caller made no idmapped mount")
        target = self.resolve(op.target)
        self.mount_point("source", op.source, target)
        self.sys.move_mount(fd, target)

    def mount_point(self, create: str | None, source, target: str) -> None:
        """Make the mount point: "dir", or "source": a directory or a file as the bind source
        is (an existing target is kept)."""
        if create == "source" and not self.sys.exists(source):
            # Fail before making a mount point: the rootfs (often the image) stays untouched.
            raise OSError(errno.ENOENT, f"bind source {source}: {posix.strerror(errno.ENOENT)}")
        if create == "dir" or (create == "source" and self.sys.isdir(source)):
            self.sys.makedirs(target, 0o755)
        elif create == "source" and not self.sys.exists(target):
            self.sys.makedirs(ospath.dirname(target), 0o755)
            self.sys.touch(target)

    def mount(self, source, target: str, fstype, flags: int, data=None) -> None:
        """mount(2); a bind remount the kernel refuses (EPERM) is retried once with the flags
        the mount has locked (a mount from a more privileged user namespace keeps its nodev,
        nosuid, noexec and atime flags), as runc does. A requested atime flag that differs
        from a locked one stays an error, as in runc."""
        try:
            self.sys.mount(source, target, fstype, flags, data)
            return
        except OSError as e:
            if e.errno != errno.EPERM or flags & _BIND_REMOUNT != _BIND_REMOUNT:
                raise
            locked = self.sys.mount_flags(target)
            atime = flags & _ATIME
            retry = flags | locked & _LOCKED_KEPT | (0 if atime else locked & _ATIME)
            if retry == flags or (atime and atime != locked & _ATIME):
                raise
        self.sys.mount(source, target, fstype, retry, data)

    def SetAttr(self, op: M.SetAttr) -> None:
        self.sys.mount_setattr(self.resolve(op.target), op.attr_set, op.attr_clr, True)

    def Umount(self, op: M.Umount) -> None:
        self.sys.umount2(self.resolve(op.target), op.flags)

    def Chdir(self, op: M.Chdir) -> None:
        self.sys.chdir(self.resolve(op.path, op.host))

    def PivotRoot(self, op: M.PivotRoot) -> None:
        # The old root is stacked on the new one by pivot_root(".", "."); "." from our cwd is
        # still the new root, so we leave through a descriptor of the old one (as runc): the
        # next ops make it rslave and detach it, not the container's own mounts, whose
        # propagation (rshared binds) must stay as planned.
        old_root = self.sys.open_dir("/")
        try:
            self.sys.pivot_root(".", ".")
            self.sys.fchdir(old_root)
        finally:
            self.sys.close(old_root)
        self.rooted = True

    def Chroot(self, op: M.Chroot) -> None:
        self.sys.chroot(".")
        self.rooted = True

    def MoveRoot(self, op: M.MoveRoot) -> None:
        for point in M.full_proc_sys_mounts(self.sys.read_file("/proc/self/mountinfo"),
                                            op.rootfs):
            try:  # no unmount event may reach the host
                self.sys.mount(None, point, None, M.MS_SLAVE | M.MS_REC)
            except FileNotFoundError:
                continue  # under a mount point detached already
            try:
                self.sys.umount2(point, M.MNT_DETACH)
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.EPERM):
                    raise
                self.sys.mount("tmpfs", point, "tmpfs", 0, None)  # cannot detach: cover it
        self.sys.mount(".", "/", None, M.MS_MOVE)
        self.sys.chroot(".")
        self.rooted = True

    def ParentPrivate(self, op: M.ParentPrivate) -> None:
        self.sys.mount(None, _mountpoint_of(op.rootfs, self.sys), None, M.MS_PRIVATE)

    def MakeDevice(self, op: M.MakeDevice) -> None:
        path = self.resolve_parent(op.path)
        if not self.sys.exists(ospath.dirname(path)):  # /dev/net/tun and the like
            self.sys.makedirs(ospath.dirname(path), 0o755)
        try:
            self.sys.mknod(path, _MODE_TYPES[op.kind] | op.mode, posix.makedev(op.major, op.minor))
        except OSError as e:
            if e.errno != errno.EEXIST:  # an existing node is kept, like runc
                raise
            return
        self.sys.chown(path, op.uid, op.gid)

    def Symlink(self, op: M.Symlink) -> None:
        try:
            self.sys.symlink(op.target, self.resolve_parent(op.path))
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise

    def Console(self, op: _console.Console) -> None:
        if self.send_master is None:
            raise ContainerSetupError("console", "nobody to hand the terminal's master to")
        _console.setup(op, self.sys, self.send_master)

    def AwaitCgroup(self, op: M.AwaitCgroup) -> None:
        if self.await_cgroup is not None:  # None: the cgroup was made before the fork
            self.await_cgroup()

    def MakeDirs(self, op: M.MakeDirs) -> None:
        self.sys.makedirs(self.resolve(op.path), 0o755)

    def MaskPath(self, op: M.MaskPath) -> None:
        path = self.resolve(op.path)
        try:
            self.sys.mount("/dev/null", path, None, M.MS_BIND)
        except OSError as e:
            if e.errno == errno.ENOTDIR:  # a directory: hide it under an empty read-only tmpfs
                self.sys.mount("tmpfs", path, "tmpfs", M.MS_RDONLY)
            elif e.errno != errno.ENOENT:
                raise

    def ReadonlyPath(self, op: M.ReadonlyPath) -> None:
        path = self.resolve(op.path)
        try:
            self.sys.mount(path, path, None, M.MS_BIND | M.MS_REC)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return
            raise
        self.mount(path, path, None, M.READONLY_PATH_FLAGS)


def _mountpoint_of(path: str, sys) -> str:
    """The longest mount point in our mountinfo containing `path`."""
    best = "/"
    for line in sys.read_file("/proc/self/mountinfo").splitlines():
        mp = line.split()[4]
        if (path == mp or path.startswith(mp.rstrip("/") + "/")) and len(mp) > len(best):
            best = mp
    return best


def _op_path(op) -> str | None:
    for attr in ("target", "path", "rootfs"):
        if hasattr(op, attr):
            return getattr(op, attr)
    return None


def apply(ops: list, rootfs: str, sys, before_pivot=None, send_master=None,
          mount_fds=None, await_cgroup=None) -> None:
    """Run the plan. Raises ContainerSetupError(step, message, path) on the first failure.
    before_pivot() (the create-time hooks) runs right before the PivotRoot op: mounts and
    devices are in place, the cwd is the rootfs, and the old root is still reachable.
    send_master(fd) takes the terminal's master at the Console op (runtime.console).
    mount_fds: the detached idmapped mounts the IdmapBind ops move in (runtime.idmap).
    await_cgroup() blocks until the container's cgroup exists and we are in it (AwaitCgroup
    op)."""
    ex = _Executor(rootfs, sys, send_master, mount_fds, await_cgroup)
    root_changes = (M.PivotRoot, M.Chroot, M.MoveRoot)
    if before_pivot is not None and not any(isinstance(op, root_changes) for op in ops):
        before_pivot()  # no root change planned: the hooks run first
    for op in ops:
        if before_pivot is not None and isinstance(op, root_changes):
            before_pivot()
        try:
            getattr(ex, type(op).__name__)(op)
        except OSError as e:
            step = _STEPS[type(op)]
            raise ContainerSetupError(step, e.strerror or str(e), _op_path(op)) from None
