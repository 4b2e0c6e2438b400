"""A recording stand-in for runtime.sys.linux.Linux, for unit tests without root.

Invariant: same method names and signatures as Linux. Privileged operations only append a
tuple to .calls; filesystem operations also act on the real directory tree (normally a temp
rootfs) through a chroot emulation: absolute paths are mapped under .root, which pivot_root
moves to the current directory, so code that runs "after pivot_root" touches the temp rootfs.
Mounts change nothing on disk, but a bind mount fails like the kernel's would (ENOENT for a
missing target, ENOTDIR for a file source onto a directory), and .fail injects any errno.
"""

import errno as E
import os
import posixpath

from . import consts as C


class FakeSys:
    def __init__(self, caps: tuple[int, int, int] | None = None, files: dict | None = None):
        self.calls: list[tuple] = []
        self.root = "/"
        self.cwd = os.getcwd()
        self.caps = caps or ((1 << 41) - 1,) * 2 + (0,)
        self.files = dict(files or {})  # path -> contents served by read_file
        self.fail: dict[tuple[str, str], int] = {}  # (operation, path as given) -> errno
        self.pty = (100, 101, "/dev/pts/0")  # what open_pty returns: master, slave, path
        self.flags_of: dict[str, int] = {}  # path -> what mount_flags returns (relatime)
        self.cpu = 0  # what current_cpu returns

    # --- helpers ---------------------------------------------------------------------------
    def map(self, path: str) -> str:
        if path.startswith("/"):
            return posixpath.normpath(posixpath.join(self.root, path.lstrip("/")))
        return posixpath.normpath(posixpath.join(self.cwd, path))

    def _record(self, op: str, *args) -> None:
        path = next((a for a in args if isinstance(a, str)), "")
        if (op, path) in self.fail:
            err = self.fail[(op, path)]
            raise OSError(err, f"{op} {path}: {os.strerror(err)}")
        self.calls.append((op, *args))

    def ops(self, *names: str) -> list[tuple]:
        """The recorded calls, optionally only those named."""
        return [c for c in self.calls if not names or c[0] in names]

    # --- mounts and namespaces -------------------------------------------------------------
    def mount(self, source, target, fstype, flags, data=None) -> None:
        if flags & C.MS_BIND and not flags & C.MS_REMOUNT:
            t = self.map(target)
            s = self.map(source) if source else ""
            if not os.path.lexists(t):
                raise OSError(E.ENOENT, f"mount {source} on {target}: {os.strerror(E.ENOENT)}")
            if os.path.isdir(t) and os.path.exists(s) and not os.path.isdir(s):
                raise OSError(E.ENOTDIR, f"mount {source} on {target}: {os.strerror(E.ENOTDIR)}")
        self._record("mount", source, target, fstype, flags, data)

    def mount_flags(self, path) -> int:
        return self.flags_of.get(path, C.MS_RELATIME)

    def mount_setattr(self, target, attr_set, attr_clr=0, recursive=False) -> None:
        self._record("mount_setattr", target, attr_set, attr_clr, recursive)

    def umount2(self, target, flags) -> None:
        self._record("umount2", target, flags)

    def open_tree(self, path, recursive) -> int:
        self._record("open_tree", path, recursive)
        return 900 + len(self.calls)

    def idmap_tree(self, fd, userns_fd, recursive) -> None:
        self._record("idmap_tree", fd, userns_fd, recursive)

    def move_mount(self, fd, target) -> None:
        self._record("move_mount", fd, target)

    def pivot_root(self, new_root, put_old) -> None:
        self._record("pivot_root", new_root, put_old)
        self.root = self.map(new_root)
        self.cwd = self.root

    def open_dir(self, path) -> int:
        self._record("open_dir", path)
        return 1000 + len(self.calls)

    def fchdir(self, fd) -> None:
        self._record("fchdir", fd)

    def unshare(self, flags) -> None:
        self._record("unshare", flags)

    def setns(self, path, nstype) -> None:
        self._record("setns", path, nstype)

    def setns_fd(self, fd, nstype) -> None:
        self._record("setns_fd", fd, nstype)

    def sethostname(self, name) -> None:
        self._record("sethostname", name)

    def setdomainname(self, name) -> None:
        self._record("setdomainname", name)

    def loopback_up(self) -> None:
        self._record("loopback_up")

    # --- credentials and capabilities ------------------------------------------------------
    def capget(self):
        return self.caps

    def capset(self, effective, permitted, inheritable) -> None:
        self._record("capset", effective, permitted, inheritable)

    def capbset_drop(self, cap) -> None:
        self._record("capbset_drop", cap)

    def set_keepcaps(self, on) -> None:
        self._record("set_keepcaps", on)

    def set_child_subreaper(self) -> None:
        self._record("set_child_subreaper")

    def set_no_new_privs(self) -> None:
        self._record("set_no_new_privs")

    def ambient_raise(self, cap) -> None:
        self._record("ambient_raise", cap)

    def setgroups(self, gids) -> None:
        self._record("setgroups", list(gids))

    def setresgid(self, gid) -> None:
        self._record("setresgid", gid)

    def setresuid(self, uid) -> None:
        self._record("setresuid", uid)

    # --- process ---------------------------------------------------------------------------
    def setrlimit(self, name, soft, hard) -> None:
        self._record("setrlimit", name, soft, hard)

    def ioprio_set(self, value) -> None:
        self._record("ioprio_set", value)

    def sched_setattr(self, policy, flags, nice, priority, runtime, deadline, period) -> None:
        self._record("sched_setattr", policy, flags, nice, priority, runtime, deadline, period)

    def personality(self, persona) -> None:
        self._record("personality", persona)

    def current_cpu(self) -> int:
        return self.cpu

    def umask(self, mask) -> int:
        self._record("umask", mask)
        return 0o022

    def close_range(self, first, last, flags) -> None:
        self._record("close_range", first, last, flags)

    def set_inheritable(self, fd) -> None:
        self._record("set_inheritable", fd)

    def join_session_keyring(self, name) -> int:
        self._record("join_session_keyring", name)
        return 0x1234

    def keyring_add_search(self, serial) -> None:
        self._record("keyring_add_search", serial)

    def reset_signals(self) -> None:
        self._record("reset_signals")

    def seccomp_install(self, program, flags) -> None:
        self._record("seccomp_install", program, flags)

    def execve(self, path, args, env) -> None:
        self._record("execve", path, list(args), dict(env))

    # --- terminals and fds ------------------------------------------------------------------
    def open_pty(self):
        self._record("open_pty", "/dev/ptmx")
        return self.pty

    def set_winsize(self, fd, height, width) -> None:
        self._record("set_winsize", fd, height, width)

    def set_ctty(self, fd) -> None:
        self._record("set_ctty", fd)

    def fchown(self, fd, uid, gid) -> None:
        self._record("fchown", fd, uid, gid)

    def dup2(self, fd, target) -> None:
        self._record("dup2", fd, target)

    def close(self, fd) -> None:
        self._record("close", fd)

    # --- filesystem ------------------------------------------------------------------------
    def chroot(self, path) -> None:
        self._record("chroot", path)
        self.root = self.map(path)  # as pivot_root: later paths are the new root's

    def chdir(self, path) -> None:
        self._record("chdir", path)
        self.cwd = self.map(path)

    def makedirs(self, path, mode=0o755) -> None:
        self._record("mkdir", path)
        os.makedirs(self.map(path), mode, exist_ok=True)

    def touch(self, path) -> None:
        self._record("touch", path)
        open(self.map(path), "a").close()

    def readlink(self, path) -> str:
        return os.readlink(self.map(path))

    def isdir(self, path) -> bool:
        return os.path.isdir(self.map(path))

    def exists(self, path) -> bool:
        return os.path.lexists(self.map(path))

    def stat(self, path) -> os.stat_result:
        return os.stat(self.map(path))

    def symlink(self, target, path) -> None:
        self._record("symlink", target, path)
        os.symlink(target, self.map(path))

    def mknod(self, path, mode, device) -> None:
        self._record("mknod", path, mode, device)

    def chown(self, path, uid, gid) -> None:
        self._record("chown", path, uid, gid)

    def chmod(self, path, mode) -> None:
        self._record("chmod", path, mode)

    def read_file(self, path) -> str:
        if path in self.files:
            return self.files[path]
        with open(self.map(path)) as f:
            return f.read()

    def write_file(self, path, data) -> None:
        self._record("write_file", path, data)
