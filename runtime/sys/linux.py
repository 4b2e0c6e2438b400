"""The real syscall layer: thin ctypes/posix wrappers, one method per operation (the C calls go
through runtime.sys.ffi: ctypes' core without the cost of importing the ctypes package).

Invariant: every failure is an OSError whose errno is the kernel's and whose strerror names
the operation and the path ("mount tmpfs on /x/dev: No such device"), so callers can report
it without knowing which call failed. Nothing here decides anything; it only executes.
"""

import errno
import fcntl
import posix
import sys as _sys

# _signal and _socket, not signal and socket: their enum wrappers cost ~5 ms of start-up.
import _signal as signal
import _socket as socket

from .. import ospath
from . import consts as C
from . import ffi

_libc = ffi.CDLL(None)  # errno kept per call (use_errno)
_str, _ulong = ffi.c_char_p, ffi.c_ulong
_libc.mount.argtypes = [_str, _str, _str, _ulong, _str]
_libc.umount2.argtypes = [ffi.c_char_p, ffi.c_int]
_libc.unshare.argtypes = [ffi.c_int]
_libc.setns.argtypes = [ffi.c_int, ffi.c_int]
_libc.sethostname.argtypes = [ffi.c_char_p, ffi.c_size_t]
_libc.setdomainname.argtypes = [ffi.c_char_p, ffi.c_size_t]
_libc.prctl.argtypes = [ffi.c_int, _ulong, _ulong, _ulong, _ulong]
_libc.syscall.restype = ffi.c_long
_SYSCALLS = C.SYSCALL_NUMBERS.get(posix.uname().machine, C.SYSCALL_NUMBERS["x86_64"])


_STATVFS_FLAGS = ((posix.ST_RDONLY, C.MS_RDONLY), (posix.ST_NOSUID, C.MS_NOSUID),
                  (posix.ST_NODEV, C.MS_NODEV), (posix.ST_NOEXEC, C.MS_NOEXEC),
                  (posix.ST_NOATIME, C.MS_NOATIME), (posix.ST_NODIRATIME, C.MS_NODIRATIME),
                  (posix.ST_RELATIME, C.MS_RELATIME))


class _CapHeader(ffi.Structure):
    _fields_ = [("version", ffi.c_uint32), ("pid", ffi.c_int)]


class _Rlimit(ffi.Structure):
    _fields_ = [("rlim_cur", ffi.c_ulong), ("rlim_max", ffi.c_ulong)]


class _CapData(ffi.Structure):
    _fields_ = [("effective", ffi.c_uint32), ("permitted", ffi.c_uint32),
                ("inheritable", ffi.c_uint32)]


# C structs by hand (the struct module would cost ~0.3 ms of every CLI start-up, and could not
# be imported by an init after pivot_root): native byte order, fields already aligned.
def _u64s(*values: int) -> bytes:
    return b"".join(v.to_bytes(8, _sys.byteorder) for v in values)


def _int(data: bytes, signed: bool = False) -> int:
    return int.from_bytes(data, _sys.byteorder, signed=signed)


def _ifreq_flags(name: bytes, flags: int) -> bytes:
    """struct ifreq with ifr_flags: 16-byte name, a short, padded to 40 bytes."""
    return name.ljust(16, b"\0") + flags.to_bytes(2, _sys.byteorder, signed=True) + bytes(22)


def _b(s: str | None) -> bytes | None:
    return None if s is None else ospath.fsencode(s)


def _fail(op: str, what: str) -> OSError:
    err = ffi.get_errno()
    return OSError(err, f"{op} {what}: {posix.strerror(err)}".replace("  ", " "))


def _wrap(op: str, what: str, fn, *args):
    """Run a posix.* call, re-raising its OSError with our message format."""
    try:
        return fn(*args)
    except OSError as e:
        raise OSError(e.errno, f"{op} {what}: {posix.strerror(e.errno)}") from None


class Linux:
    """Executes operations on the running kernel."""

    # --- mounts and namespaces -------------------------------------------------------------
    def mount(self, source: str | None, target: str, fstype: str | None, flags: int,
              data: str | None = None) -> None:
        if _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)) != 0:
            raise _fail("mount", f"{source or fstype or ''} on {target}")

    def mount_flags(self, path: str) -> int:
        """The MS_* flags of the mount holding `path` (statvfs; no atime flag: strictatime)."""
        st = _wrap("statvfs", path, posix.statvfs, path)
        flags = 0
        for st_flag, ms_flag in _STATVFS_FLAGS:
            if st.f_flag & st_flag:
                flags |= ms_flag
        if not flags & (C.MS_NOATIME | C.MS_RELATIME):
            flags |= C.MS_STRICTATIME
        return flags

    def mount_setattr(self, target: str, attr_set: int, attr_clr: int = 0,
                      recursive: bool = False) -> None:
        """mount_setattr(2) on the mount at `target` (and every mount below it: recursive)."""
        attr = _u64s(attr_set, attr_clr, 0, 0)  # struct mount_attr
        flags = C.AT_RECURSIVE if recursive else 0
        if _libc.syscall(_SYSCALLS["mount_setattr"], C.AT_FDCWD, _b(target), ffi.c_uint(flags),
                         attr, ffi.c_size_t(len(attr))) != 0:
            raise _fail("mount_setattr", target)

    def open_tree(self, path: str, recursive: bool) -> int:
        """open_tree(2) with OPEN_TREE_CLONE: a detached copy of the mount at `path` (and of
        the mounts below it: recursive), close-on-exec."""
        flags = C.OPEN_TREE_CLONE | C.OPEN_TREE_CLOEXEC | (C.AT_RECURSIVE if recursive else 0)
        fd = _libc.syscall(_SYSCALLS["open_tree"], C.AT_FDCWD, _b(path), ffi.c_uint(flags))
        if fd < 0:
            raise _fail("open_tree", path)
        return fd

    def idmap_tree(self, fd: int, userns_fd: int, recursive: bool) -> None:
        """mount_setattr(2) MOUNT_ATTR_IDMAP on a detached tree: its ids are mapped through
        the user namespace `userns_fd`'s mappings."""
        attr = _u64s(C.MOUNT_ATTR_IDMAP, 0, 0, userns_fd)  # struct mount_attr
        flags = C.AT_EMPTY_PATH | (C.AT_RECURSIVE if recursive else 0)
        if _libc.syscall(_SYSCALLS["mount_setattr"], ffi.c_int(fd), b"", ffi.c_uint(flags),
                         attr, ffi.c_size_t(len(attr))) != 0:
            raise _fail("mount_setattr MOUNT_ATTR_IDMAP", f"fd {fd}")

    def move_mount(self, fd: int, target: str) -> None:
        """move_mount(2) of a detached tree onto `target`."""
        if _libc.syscall(_SYSCALLS["move_mount"], ffi.c_int(fd), b"", C.AT_FDCWD, _b(target),
                         ffi.c_uint(C.MOVE_MOUNT_F_EMPTY_PATH)) != 0:
            raise _fail("move_mount", target)

    def umount2(self, target: str, flags: int) -> None:
        if _libc.umount2(_b(target), flags) != 0:
            raise _fail("umount", target)

    def pivot_root(self, new_root: str, put_old: str) -> None:
        if _libc.syscall(_SYSCALLS["pivot_root"], _b(new_root), _b(put_old)) != 0:
            raise _fail("pivot_root", new_root)

    def open_dir(self, path: str) -> int:
        return _wrap("open", path, posix.open, path,
                     posix.O_RDONLY | posix.O_DIRECTORY | posix.O_CLOEXEC)

    def fchdir(self, fd: int) -> None:
        posix.fchdir(fd)

    def unshare(self, flags: int) -> None:
        if _libc.unshare(flags) != 0:
            raise _fail("unshare", hex(flags))

    def setns(self, path: str, nstype: int) -> None:
        fd = _wrap("open", path, posix.open, path, posix.O_RDONLY | posix.O_CLOEXEC)
        try:
            if _libc.setns(fd, nstype) != 0:
                raise _fail("setns", path)
        finally:
            posix.close(fd)

    def setns_fd(self, fd: int, nstype: int) -> None:
        """setns(2) on an fd the caller opened (an nsfs file or a pidfd)."""
        if _libc.setns(fd, nstype) != 0:
            raise _fail("setns", f"fd {fd} ({nstype:#x})")

    def sethostname(self, name: str) -> None:
        b = name.encode()
        if _libc.sethostname(b, len(b)) != 0:
            raise _fail("sethostname", name)

    def setdomainname(self, name: str) -> None:
        b = name.encode()
        if _libc.setdomainname(b, len(b)) != 0:
            raise _fail("setdomainname", name)

    def loopback_up(self) -> None:
        # SIOCSIFFLAGS on a throwaway socket: the netlink alternative (pyroute2) costs 200 ms.
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            req = _ifreq_flags(b"lo", 0)
            try:
                flags = _int(fcntl.ioctl(s, C.SIOCGIFFLAGS, req)[16:18], signed=True)
                fcntl.ioctl(s, C.SIOCSIFFLAGS, _ifreq_flags(b"lo", flags | C.IFF_UP))
            except OSError as e:
                raise OSError(e.errno, f"set lo up: {posix.strerror(e.errno)}") from None
        finally:
            s.close()

    # --- credentials and capabilities ------------------------------------------------------
    def capget(self) -> tuple[int, int, int]:
        hdr, data = _CapHeader(C.LINUX_CAPABILITY_VERSION_3, 0), (_CapData * 2)()
        if _libc.capget(ffi.byref(hdr), data) != 0:
            raise _fail("capget", "")
        join = lambda f: getattr(data[0], f) | getattr(data[1], f) << 32  # noqa: E731
        return join("effective"), join("permitted"), join("inheritable")

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        hdr, data = _CapHeader(C.LINUX_CAPABILITY_VERSION_3, 0), (_CapData * 2)()
        for i in (0, 1):
            sh = 32 * i
            data[i].effective = (effective >> sh) & 0xFFFFFFFF
            data[i].permitted = (permitted >> sh) & 0xFFFFFFFF
            data[i].inheritable = (inheritable >> sh) & 0xFFFFFFFF
        if _libc.capset(ffi.byref(hdr), data) != 0:
            raise _fail("capset", f"eff={effective:#x} prm={permitted:#x} inh={inheritable:#x}")

    def _prctl(self, what: str, option: int, arg2: int = 0, arg3: int = 0) -> None:
        if _libc.prctl(option, arg2, arg3, 0, 0) != 0:
            raise _fail("prctl", what)

    def capbset_drop(self, cap: int) -> None:
        self._prctl(f"PR_CAPBSET_DROP {cap}", C.PR_CAPBSET_DROP, cap)

    def set_keepcaps(self, on: bool) -> None:
        self._prctl("PR_SET_KEEPCAPS", C.PR_SET_KEEPCAPS, int(on))

    def set_child_subreaper(self) -> None:
        self._prctl("PR_SET_CHILD_SUBREAPER", C.PR_SET_CHILD_SUBREAPER, 1)

    def set_no_new_privs(self) -> None:
        self._prctl("PR_SET_NO_NEW_PRIVS", C.PR_SET_NO_NEW_PRIVS, 1)

    def ambient_raise(self, cap: int) -> None:
        self._prctl(f"PR_CAP_AMBIENT_RAISE {cap}", C.PR_CAP_AMBIENT, C.PR_CAP_AMBIENT_RAISE, cap)

    def setgroups(self, gids: list[int]) -> None:
        _wrap("setgroups", str(gids), posix.setgroups, gids)

    def setresgid(self, gid: int) -> None:
        _wrap("setresgid", str(gid), posix.setresgid, gid, gid, gid)

    def setresuid(self, uid: int) -> None:
        _wrap("setresuid", str(uid), posix.setresuid, uid, uid, uid)

    # --- process ----------------------------------------------------------------------------
    def setrlimit(self, name: str, soft: int, hard: int) -> None:
        """prlimit(0: ourselves, RLIMIT_<name>, {soft, hard}, NULL); -1 is RLIM_INFINITY."""
        limits = _Rlimit(soft, hard)  # unsigned: -1 wraps to RLIM_INFINITY, as in C
        if _libc.prlimit(0, C.RLIMITS[name], ffi.byref(limits), None) != 0:
            raise _fail("setrlimit", name)

    def ioprio_set(self, value: int) -> None:
        """ioprio_set(IOPRIO_WHO_PROCESS, 0: ourselves, value)."""
        if _libc.syscall(_SYSCALLS["ioprio_set"], C.IOPRIO_WHO_PROCESS, 0, value) != 0:
            raise _fail("ioprio_set", hex(value))

    def sched_setattr(self, policy: int, flags: int, nice: int, priority: int, runtime: int,
                      deadline: int, period: int) -> None:
        """sched_setattr(0: ourselves, struct sched_attr (VER0, 48 bytes), 0)."""
        order = _sys.byteorder  # struct sched_attr: u32 u32 u64 s32 u32 u64 u64 u64
        attr = b"".join((
            (48).to_bytes(4, order), policy.to_bytes(4, order), flags.to_bytes(8, order),
            nice.to_bytes(4, order, signed=True), priority.to_bytes(4, order),
            _u64s(runtime, deadline, period)))
        if _libc.syscall(_SYSCALLS["sched_setattr"], 0, attr, 0) != 0:
            raise _fail("sched_setattr", f"policy {policy}")

    def personality(self, persona: int) -> None:
        if _libc.personality(ffi.c_ulong(persona)) == -1:
            raise _fail("personality", hex(persona))

    def current_cpu(self) -> int:
        """The CPU the calling thread runs on (sched_getcpu: vDSO, no syscall)."""
        cpu = _libc.sched_getcpu()
        if cpu < 0:
            raise _fail("sched_getcpu", "of this thread")
        return cpu

    def umask(self, mask: int) -> int:
        return posix.umask(mask)

    def close_range(self, first: int, last: int, flags: int) -> None:
        if _libc.syscall(_SYSCALLS["close_range"], ffi.c_uint(first), ffi.c_uint(last),
                         ffi.c_uint(flags)) == 0:
            return
        err = ffi.get_errno()
        if err not in (errno.ENOSYS, errno.EPERM) or flags not in (0, C.CLOSE_RANGE_CLOEXEC):
            raise _fail("close_range", f"{first}..{last}")
        # A kernel before 5.11, or a seccomp filter that refuses the call: walk /proc/self/fd
        # as runc's CloseExecFrom does.
        for name in posix.listdir("/proc/self/fd"):
            fd = int(name)
            if first <= fd <= last:
                try:
                    if flags:
                        posix.set_inheritable(fd, False)
                    else:
                        posix.close(fd)
                except OSError:
                    pass  # the directory's own fd, already gone

    def join_session_keyring(self, name: str) -> int:
        """keyctl(KEYCTL_JOIN_SESSION_KEYRING): a new session keyring called `name`, or the
        existing one of that name (if searchable); returns its serial."""
        serial = _libc.syscall(_SYSCALLS["keyctl"], ffi.c_int(C.KEYCTL_JOIN_SESSION_KEYRING),
                               _b(name))
        if serial < 0:
            raise _fail("keyctl join session keyring", name)
        return serial

    def keyring_add_search(self, serial: int) -> None:
        """Add the user's search permission to a key (runc's ModKeyringPerm(id, ~0, search)):
        its description is "type;uid;gid;perm;name", perm in hex."""
        buf = ffi.create_string_buffer(4096)
        if _libc.syscall(_SYSCALLS["keyctl"], ffi.c_int(C.KEYCTL_DESCRIBE),
                         ffi.c_int(serial), buf, ffi.c_size_t(len(buf))) < 0:
            raise _fail("keyctl describe", str(serial))
        try:
            perm = int(buf.value.decode().split(";")[3], 16)
        except (IndexError, ValueError):
            raise OSError(errno.EINVAL, f"keyctl describe {serial}: unexpected "
                                        f"{buf.value!r}") from None
        if _libc.syscall(_SYSCALLS["keyctl"], ffi.c_int(C.KEYCTL_SETPERM),
                         ffi.c_int(serial), ffi.c_uint(perm | C.KEY_USR_SEARCH)) < 0:
            raise _fail("keyctl setperm", str(serial))

    def set_inheritable(self, fd: int) -> None:
        """Clear FD_CLOEXEC: the fd survives the exec (--preserve-fds)."""
        posix.set_inheritable(fd, True)

    def reset_signals(self) -> None:
        """Every disposition back to SIG_DFL and an empty mask: exec keeps SIG_IGN and the mask,
        and Python ignores SIGPIPE and SIGXFSZ. Only what is not SIG_DFL already is touched
        (getsignal() reads Python's table, which it filled from the kernel at start-up and
        keeps in step with every change made through it; None, a disposition set outside
        Python, is reset too): one syscall per changed signal, not ~62."""
        for sig in signal.valid_signals():
            if sig not in (signal.SIGKILL, signal.SIGSTOP) and \
                    signal.getsignal(sig) != signal.SIG_DFL:
                try:
                    signal.signal(sig, signal.SIG_DFL)
                except (OSError, ValueError):
                    pass  # the glibc-reserved real-time signals
        signal.pthread_sigmask(signal.SIG_SETMASK, set())

    def seccomp_install(self, program: bytes, flags: int) -> None:
        """Load a compiled filter (runtime.seccomp.install; a ContainerSetupError on failure)."""
        # ctypes only: loading a filter needs no libseccomp. Imported on use, in the caller
        # already (container.seccomp_filter imports runtime.seccomp before any fork): this
        # runs inside the container's root, where no module can be found any more.
        from ..seccomp import kernel
        kernel.install(program, flags)

    # --- terminals and fds ------------------------------------------------------------------
    def open_pty(self) -> tuple[int, int, str]:
        """A new pty from /dev/ptmx as our root sees it, unlocked: (master, slave, slave path).
        The slave is opened through the master (TIOCGPTPEER: no path lookup), by path on
        kernels before 4.13. Both fds CLOEXEC, neither becomes our controlling terminal."""
        flags = posix.O_RDWR | posix.O_NOCTTY | posix.O_CLOEXEC
        master = _wrap("open", "/dev/ptmx", posix.open, "/dev/ptmx", flags)
        try:
            fcntl.ioctl(master, C.TIOCSPTLCK, bytes(4))  # unlockpt: int 0
            n = _int(fcntl.ioctl(master, C.TIOCGPTN, bytes(4)))
            path = f"/dev/pts/{n}"
            try:
                slave = fcntl.ioctl(master, C.TIOCGPTPEER, flags)
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.ENOTTY):
                    raise
                slave = posix.open(path, flags)
        except OSError as e:
            posix.close(master)
            raise OSError(e.errno, f"open pty /dev/ptmx: {posix.strerror(e.errno)}") from None
        return master, slave, path

    def set_winsize(self, fd: int, height: int, width: int) -> None:
        _wrap("ioctl TIOCSWINSZ", f"fd {fd}", fcntl.ioctl, fd, C.TIOCSWINSZ,
              b"".join(v.to_bytes(2, _sys.byteorder) for v in (height, width, 0, 0)))

    def set_ctty(self, fd: int) -> None:
        """Make the terminal on fd our controlling terminal (we must lead a session)."""
        _wrap("ioctl TIOCSCTTY", f"fd {fd}", fcntl.ioctl, fd, C.TIOCSCTTY, 0)

    def fchown(self, fd: int, uid: int, gid: int) -> None:
        _wrap("fchown", f"fd {fd}", posix.fchown, fd, uid, gid)

    def dup2(self, fd: int, target: int) -> None:
        """dup2, the copy inheritable across exec (it is meant to be one of 0, 1, 2)."""
        _wrap("dup2", f"fd {fd} to {target}", posix.dup2, fd, target)

    def close(self, fd: int) -> None:
        posix.close(fd)

    def execve(self, path: str, args: list[str], env: dict[str, str]) -> None:
        _wrap("exec", path, posix.execve, path, args, env)

    # --- filesystem -------------------------------------------------------------------------
    def chroot(self, path: str) -> None:
        posix.chroot(path)

    def chdir(self, path: str) -> None:
        _wrap("chdir", path, posix.chdir, path)

    def makedirs(self, path: str, mode: int = 0o755) -> None:
        _wrap("mkdir", path, ospath.makedirs, path, mode, True)

    def touch(self, path: str) -> None:
        fd = _wrap("create", path, posix.open, path,
                   posix.O_WRONLY | posix.O_CREAT | posix.O_CLOEXEC, 0o755)
        posix.close(fd)

    def readlink(self, path: str) -> str:
        # Raw posix.readlink: secure_join tells "not a link" (EINVAL) from "missing" by errno.
        return posix.readlink(path)

    def isdir(self, path: str) -> bool:
        return ospath.isdir(path)

    def exists(self, path: str) -> bool:
        return ospath.lexists(path)

    def stat(self, path: str) -> posix.stat_result:
        return _wrap("stat", path, posix.stat, path)

    def symlink(self, target: str, path: str) -> None:
        _wrap("symlink", path, posix.symlink, target, path)

    def mknod(self, path: str, mode: int, device: int) -> None:
        _wrap("mknod", path, posix.mknod, path, mode, device)

    def chown(self, path: str, uid: int, gid: int) -> None:
        _wrap("chown", path, posix.lchown, path, uid, gid)

    def chmod(self, path: str, mode: int) -> None:
        _wrap("chmod", path, posix.chmod, path, mode)

    def read_file(self, path: str) -> str:
        """The whole file. /proc files come a page per read(2) (a big mountinfo is many)."""
        fd = _wrap("open", path, posix.open, path, posix.O_RDONLY | posix.O_CLOEXEC)
        try:
            chunks = []
            while chunk := _wrap("read", path, posix.read, fd, 65536):
                chunks.append(chunk)
            return b"".join(chunks).decode()
        finally:
            posix.close(fd)

    def write_file(self, path: str, data: str) -> None:
        fd = _wrap("open", path, posix.open, path, posix.O_WRONLY | posix.O_CLOEXEC)
        try:
            _wrap("write", path, posix.write, fd, data.encode())
        finally:
            posix.close(fd)


LINUX = Linux()

# The module-level spelling, for callers that never need the fake: runtime.sys.linux.mount(...),
# runtime.sys.linux.MS_BIND.
from .consts import *  # noqa: E402,F401,F403
mount = LINUX.mount
umount2 = LINUX.umount2
mount_flags = LINUX.mount_flags
pivot_root = LINUX.pivot_root
unshare = LINUX.unshare
setns = LINUX.setns
setns_fd = LINUX.setns_fd
sethostname = LINUX.sethostname
setdomainname = LINUX.setdomainname
loopback_up = LINUX.loopback_up
capget = LINUX.capget
capset = LINUX.capset
capbset_drop = LINUX.capbset_drop
set_keepcaps = LINUX.set_keepcaps
set_child_subreaper = LINUX.set_child_subreaper
set_no_new_privs = LINUX.set_no_new_privs
ambient_raise = LINUX.ambient_raise
setgroups = LINUX.setgroups
setresgid = LINUX.setresgid
setresuid = LINUX.setresuid
setrlimit = LINUX.setrlimit
umask = LINUX.umask
mount_setattr = LINUX.mount_setattr
ioprio_set = LINUX.ioprio_set
sched_setattr = LINUX.sched_setattr
personality = LINUX.personality
close_range = LINUX.close_range
set_inheritable = LINUX.set_inheritable
join_session_keyring = LINUX.join_session_keyring
open_tree = LINUX.open_tree
idmap_tree = LINUX.idmap_tree
move_mount = LINUX.move_mount
keyring_add_search = LINUX.keyring_add_search
reset_signals = LINUX.reset_signals
execve = LINUX.execve
open_pty = LINUX.open_pty
set_winsize = LINUX.set_winsize
set_ctty = LINUX.set_ctty
fchown = LINUX.fchown
dup2 = LINUX.dup2
close = LINUX.close
seccomp_install = LINUX.seccomp_install
chdir = LINUX.chdir
makedirs = LINUX.makedirs
touch = LINUX.touch
readlink = LINUX.readlink
isdir = LINUX.isdir
exists = LINUX.exists
stat = LINUX.stat
symlink = LINUX.symlink
mknod = LINUX.mknod
chown = LINUX.chown
chmod = LINUX.chmod
read_file = LINUX.read_file
write_file = LINUX.write_file
