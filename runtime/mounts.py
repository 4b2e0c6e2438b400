"""Plan the container's filesystem as data: plan_rootfs(spec, rootfs) -> list of ops.

Invariants:
- Planning is pure: it reads nothing but its arguments (host facts come in a HostInfo), so the
  whole plan can be asserted op by op and computed in the caller before any fork.
- Until the PivotRoot op, an op's path is a CONTAINER path that the executor resolves inside the
  rootfs with paths.secure_join at the moment it applies the op (earlier mounts change what a
  path means), except ops marked host=True. From PivotRoot on, paths are used literally: the
  process root is then the container root, so the kernel itself confines them.
- A spec path that climbs above "/" with ".." is an InvalidSpec naming the field.
"""


from . import ospath
from . import paths
from .console import for_process
from .errors import InvalidSpec
from .record import Record, replace
from .spec import Spec
from .sys.consts import (MNT_DETACH, MS_BIND, MS_DIRSYNC, MS_LAZYTIME, MS_MANDLOCK, MS_MOVE,
                         MS_NOATIME, MS_NODEV, MS_NODIRATIME, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY,
                         MS_REC, MS_RELATIME, MS_REMOUNT, MS_SHARED, MS_SLAVE, MS_STRICTATIME,
                         MS_SYNCHRONOUS, MS_UNBINDABLE)


# --- ops -------------------------------------------------------------------------------------
class Mount(Record, frozen=True):
    source: str | None
    target: str
    fstype: str | None = None
    flags: int = 0
    data: str | None = None
    # Make the mount point first: "dir", or "source" (a file or a dir, like the bind source).
    create: str | None = None
    host: bool = False  # target is a host path even before PivotRoot


class IdmapBind(Record, frozen=True):
    """An idmapped bind mount of spec.mounts[index]: the caller made it, detached (open_tree
    and mount_setattr with MOUNT_ATTR_IDMAP: runtime.idmap) before the fork, and the init
    moves it onto target (move_mount); the mount point is made like a bind's."""
    index: int
    source: str
    target: str


class SetAttr(Record, frozen=True):
    """mount_setattr(2) on the mount at target, recursively: the "r" options (rro...)."""
    target: str
    attr_set: int = 0
    attr_clr: int = 0


class Umount(Record, frozen=True):
    target: str
    flags: int = 0


class Chdir(Record, frozen=True):
    path: str
    host: bool = False


class PivotRoot(Record, frozen=True):
    """pivot_root(".", "."): stack the old root under the new one, to be detached next."""


class Chroot(Record, frozen=True):
    """chroot("."): the root change when there is no mount namespace to pivot in."""


class MoveRoot(Record, frozen=True):
    """--no-pivot (runc's msMoveRoot), for a rootfs pivot_root cannot leave (a ramdisk): hide
    the host's full proc and sysfs mounts outside `rootfs` (made rslave, then detached, or
    covered by a tmpfs where detaching is refused), move the rootfs (our cwd) onto "/" and
    chroot into it. The host's other mounts stay in the namespace, out of the root's reach."""
    rootfs: str


class ParentPrivate(Record, frozen=True):
    """Make the host mount holding `rootfs` private in our namespace: pivot_root refuses a
    shared parent, and a shared rootfsPropagation would otherwise leave it shared."""
    rootfs: str


class MakeDevice(Record, frozen=True):
    path: str
    kind: str  # "c", "b", "u" (unbuffered char, same as "c") or "p" (fifo)
    major: int
    minor: int
    mode: int = 0o666
    uid: int = 0
    gid: int = 0


class Symlink(Record, frozen=True):
    target: str
    path: str


class MakeDirs(Record, frozen=True):
    path: str


class AwaitCgroup(Record, frozen=True):
    """Before the binds of the container's own cgroup directories: wait until the caller has
    made them (it may make the cgroup after the fork, while this plan runs) and join the
    cgroup (runtime.launch)."""


class MaskPath(Record, frozen=True):
    """/dev/null bound over a file, a read-only tmpfs over a directory, nothing if missing."""
    path: str


class ReadonlyPath(Record, frozen=True):
    """Bind onto itself then remount ro|nosuid|nodev|noexec; nothing if missing."""
    path: str


# --- options ---------------------------------------------------------------------------------
_SET = {"ro": MS_RDONLY, "nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC,
        "sync": MS_SYNCHRONOUS, "remount": MS_REMOUNT, "mand": MS_MANDLOCK, "dirsync": MS_DIRSYNC,
        "noatime": MS_NOATIME, "nodiratime": MS_NODIRATIME, "bind": MS_BIND,
        "rbind": MS_BIND | MS_REC, "relatime": MS_RELATIME, "strictatime": MS_STRICTATIME,
        "lazytime": MS_LAZYTIME}
_CLEAR = {"rw": MS_RDONLY, "suid": MS_NOSUID, "dev": MS_NODEV, "exec": MS_NOEXEC,
          "async": MS_SYNCHRONOUS, "nomand": MS_MANDLOCK, "atime": MS_NOATIME,
          "diratime": MS_NODIRATIME, "norelatime": MS_RELATIME, "nostrictatime": MS_STRICTATIME,
          "nolazytime": MS_LAZYTIME, "defaults": 0}
PROPAGATION = {"private": MS_PRIVATE, "rprivate": MS_PRIVATE | MS_REC,
               "shared": MS_SHARED, "rshared": MS_SHARED | MS_REC,
               "slave": MS_SLAVE, "rslave": MS_SLAVE | MS_REC,
               "unbindable": MS_UNBINDABLE, "runbindable": MS_UNBINDABLE | MS_REC}


# Recursive mount attributes (mount_setattr(2), runc's "rro" family): set, clear.
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC = 0x1, 0x2, 0x4, 0x8
RECURSIVE = {"rro": (MOUNT_ATTR_RDONLY, 0), "rrw": (0, MOUNT_ATTR_RDONLY),
             "rnosuid": (MOUNT_ATTR_NOSUID, 0), "rsuid": (0, MOUNT_ATTR_NOSUID),
             "rnodev": (MOUNT_ATTR_NODEV, 0), "rdev": (0, MOUNT_ATTR_NODEV),
             "rnoexec": (MOUNT_ATTR_NOEXEC, 0), "rexec": (0, MOUNT_ATTR_NOEXEC)}


class Options(Record, frozen=True):
    flags: int = 0
    propagation: tuple[int, ...] = ()
    data: str | None = None
    attr_set: int = 0  # recursive mount attributes (RECURSIVE)
    attr_clr: int = 0


def parse_mount_options(options: list[str]) -> Options:
    """mount(8)-style options -> flags, propagation changes (each its own mount call, since
    the kernel takes one propagation type per call) and the fs-specific data string."""
    flags, prop, data, attr_set, attr_clr = 0, [], [], 0, 0
    for opt in options:
        if opt in RECURSIVE:
            on, off = RECURSIVE[opt]
            attr_set, attr_clr = (attr_set | on) & ~off, (attr_clr | off) & ~on
        elif opt in _SET:
            flags |= _SET[opt]
        elif opt in _CLEAR:
            flags &= ~_CLEAR[opt]
        elif opt in PROPAGATION:
            prop.append(PROPAGATION[opt])
        elif opt in ("idmap", "ridmap"):
            pass  # how the mount is made (IdmapBind), not a mount(2) flag
        else:
            data.append(opt)
    return Options(flags, tuple(prop), ",".join(data) or None, attr_set, attr_clr)


def parse_options(options: list[str]) -> tuple[int, str | None]:
    """(flags, data) for a single mount(2) call. Propagation options are left out: they need
    calls of their own (parse_mount_options has them); snapshotter mounts never carry any."""
    o = parse_mount_options(options)
    return o.flags, o.data


# --- host facts ------------------------------------------------------------------------------
class CgroupHierarchy(Record, frozen=True):
    mountpoint: str  # host mount point, e.g. /sys/fs/cgroup/cpu,cpuacct
    fstype: str  # "cgroup" (v1) or "cgroup2"
    options: str | None  # super options naming a v1 hierarchy: "cpu,cpuacct", "name=systemd"
    source: str  # host directory of the container's cgroup in it (what a bind mount shows)


class HostInfo(Record, frozen=True):
    kcore: bool = False
    cgroups: tuple[CgroupHierarchy, ...] = ()

    @classmethod
    def probe(cls, cgroups: bool = True, cgroup_dirs=()) -> "HostInfo":
        """Read the host facts the plan depends on (the cgroup ones only if asked: they cost a
        mountinfo parse). `cgroup_dirs` are the container's own cgroup directories (the
        Manager's); a hierarchy without one shows the caller's cgroup (the init inherits it)."""
        hierarchies = ()
        if cgroups:
            hierarchies = tuple(with_sources(cgroup_hierarchies(
                _read("/proc/self/mountinfo"), _read("/proc/self/cgroup")), cgroup_dirs))
        return cls(kcore=ospath.exists("/proc/kcore"), cgroups=hierarchies)


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _unescape(s: str) -> str:
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        s = s.replace(code, char)
    return s


def mountinfo_entries(mountinfo: str):
    """(root, mount point, fstype, super options) of each /proc/<pid>/mountinfo line, the
    paths unescaped."""
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) >= 5 and len(tail) >= 3:
            yield _unescape(fields[3]), _unescape(fields[4]), tail[0], tail[2]


def full_proc_sys_mounts(mountinfo: str, rootfs: str) -> list[str]:
    """The mount points of whole (root "/") proc and sysfs mounts outside `rootfs`, in
    mountinfo order: what MoveRoot hides (runc's msMoveRoot selection)."""
    return [point for root, point, fstype, _ in mountinfo_entries(mountinfo)
            if fstype in ("proc", "sysfs") and root == "/"
            and not point.startswith(rootfs)]  # runc: strings.HasPrefix


def cgroup_hierarchies(mountinfo: str, proc_cgroup: str):
    """The cgroup hierarchies mounted on the host, with the bind source of our own cgroup."""
    own = {}  # frozenset(controllers) -> path; cgroup2 under frozenset()
    for line in proc_cgroup.splitlines():
        _, ctrls, path = line.split(":", 2)
        own[frozenset(c for c in ctrls.split(",") if c)] = path
    seen = set()
    for root, mountpoint, fstype, superopts in mountinfo_entries(mountinfo):
        if fstype not in ("cgroup", "cgroup2"):
            continue
        opts = set(superopts.split(","))
        key = next((k for k in own if k and k <= opts), None) if fstype == "cgroup" else frozenset()
        if key is None or key not in own or key in seen:
            continue
        seen.add(key)
        rel = ospath.relpath(own[key], root) if own[key].startswith(root) else "."
        yield CgroupHierarchy(mountpoint, fstype, ",".join(sorted(key)) or None,
                              ospath.normpath(ospath.join(mountpoint, rel)))


def with_sources(hierarchies, cgroup_dirs) -> list:
    """The hierarchies, each with its bind source set to the one of `cgroup_dirs` that lies
    in it: below its mount point and not below a longer one (a cgroup2 on /sys/fs/cgroup does
    not claim /sys/fs/cgroup/memory/x; /sys/fs/cgroup/cpu does not claim .../cpuacct/x)."""
    hierarchies = list(hierarchies)
    owner: dict[str, str] = {}
    for d in cgroup_dirs:
        points = [h.mountpoint for h in hierarchies if d.startswith(h.mountpoint.rstrip("/") + "/")]
        if points:
            owner.setdefault(max(points, key=len), d)
    return [replace(h, source=owner[h.mountpoint]) if h.mountpoint in owner else h
            for h in hierarchies]


# --- planning --------------------------------------------------------------------------------
_DEFAULT_DEVICES = (("/dev/null", 1, 3), ("/dev/zero", 1, 5), ("/dev/full", 1, 7),
                    ("/dev/random", 1, 8), ("/dev/urandom", 1, 9), ("/dev/tty", 5, 0))
_DEV_SYMLINKS = (("/proc/self/fd", "/dev/fd"), ("/proc/self/fd/0", "/dev/stdin"),
                 ("/proc/self/fd/1", "/dev/stdout"), ("/proc/self/fd/2", "/dev/stderr"))
READONLY_PATH_FLAGS = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC


def _clean(path: str, field: str) -> str:
    cleaned = paths.clean(path)
    if cleaned is None:
        raise InvalidSpec(field, f"{path!r} escapes the container root")
    return cleaned


def plan_rootfs(spec: Spec, rootfs: str, bundle: str | None = None,
                host: HostInfo | None = None, no_pivot: bool = False) -> list:
    """The container's whole filesystem setup, in execution order. Without a mount namespace
    only a chroot into the rootfs (spec.check_supported refused what would need mounts).
    no_pivot: MoveRoot instead of pivot_root (runc's --no-pivot)."""
    if spec.namespace("mount") is None:
        # Nothing is mounted: every mount would be the caller's (runc 1.1 makes them in the
        # host's namespace and leaves them behind). The process gets the rootfs as its root.
        ops: list = [Chdir(rootfs, host=True), Chroot(), Chdir("/")]
        if spec.process is not None:
            ops.append(MakeDirs(ospath.normpath(spec.process.cwd)))
        return ops
    bundle = bundle or ospath.dirname(rootfs)
    if host is None:
        host = HostInfo.probe(cgroups=any(m.type == "cgroup" for m in spec.mounts))
    prop = PROPAGATION[spec.linux.rootfs_propagation] if spec.linux.rootfs_propagation else 0
    # Nothing we mount may propagate back to the host: slave everything first, like runc. An
    # unbindable root only after pivot_root (below): set on the host's / now, it would refuse
    # the bind of the rootfs on itself (EINVAL; runc 1.1 fails so, crun does as we do).
    early = MS_SLAVE | MS_REC if not prop or prop & MS_UNBINDABLE else prop
    ops: list = [Mount(None, "/", None, early, host=True)]
    if prop & MS_SHARED:
        ops.append(ParentPrivate(rootfs))
    # pivot_root needs the new root to be a mount point.
    ops.append(Mount(rootfs, rootfs, None, MS_BIND | MS_REC, host=True))
    dev = None
    userns = spec.namespace("user") is not None
    for i, m in enumerate(spec.mounts):
        dest = _clean(m.destination, f"mounts[{i}].destination")
        if dest == "/":
            raise InvalidSpec(f"mounts[{i}].destination", "cannot mount over the container root")
        if m.type == "sysfs" and userns and not spec.new_namespace("network"):
            # The kernel mounts sysfs only for the owner of the network namespace: a user
            # namespace sharing another's gets the host's /sys, recursively and as asked (ro),
            # like runc's rootless spec (runc itself fails here with EPERM).
            m = replace(m, type="bind", source="/sys", options=["rbind", *m.options])
        if m.type == "cgroup":
            ops += _plan_cgroup(i, m, dest, spec, host)
        else:
            ops += _plan_mount(i, m, dest, bundle, spec.linux.mount_label)
        if dest == "/dev" and m.type == "tmpfs":
            dev = parse_mount_options(m.options)
    ops += _plan_devices(spec, dev is not None, host, bind=userns)
    if no_pivot:
        ops += [Chdir(rootfs, host=True), MoveRoot(rootfs), Chdir("/")]
    else:
        ops += [Chdir(rootfs, host=True), PivotRoot(), Mount(None, ".", None, MS_SLAVE | MS_REC),
                Umount(".", MNT_DETACH), Chdir("/")]
    console = for_process(spec.process, dev_console=True) if spec.process else None
    if console is not None:  # where runc makes it: in the new root, before anything is ro
        ops.append(console)
    if dev is not None and dev.flags & MS_RDONLY:  # deferred: devices were created in it
        ops.append(Mount("tmpfs", "/dev", "tmpfs", dev.flags | MS_REMOUNT,
                         with_mount_label(dev.data, spec.linux.mount_label)))
    if spec.process is not None:
        ops.append(MakeDirs(ospath.normpath(spec.process.cwd)))
    lx = spec.linux
    ops += [MaskPath(_clean(p, f"linux.maskedPaths[{i}]")) for i, p in enumerate(lx.masked_paths)]
    ops += [ReadonlyPath(_clean(p, f"linux.readonlyPaths[{i}]"))
            for i, p in enumerate(lx.readonly_paths)]
    if spec.root.readonly:
        ops.append(Mount(None, "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY))
    if prop:  # last: an unbindable tree refuses the binds of masked and read-only paths
        ops.append(Mount(None, "/", None, prop))
    return ops


# Filesystems that get no SELinux context= option (runc's mountToRootfs: proc and sysfs are
# the kernel's own; mqueue's label is set on the directory, which this engine does not do).
_UNLABELED = frozenset({"proc", "sysfs", "mqueue"})


def with_mount_label(data: str | None, label: str) -> str | None:
    """linux.mountLabel as the context= mount option, as runc's label.FormatMountLabel does
    (spec.check_supported cleared the field where the host has no SELinux)."""
    if not label:
        return data
    context = f'context="{label}"'
    return f"{data},{context}" if data else context


def _plan_mount(i: int, m, dest: str, bundle: str, mount_label: str = "") -> list:
    o = parse_mount_options(m.options)
    ops = []
    if m.type == "bind" or o.flags & MS_BIND:
        if not m.source:
            raise InvalidSpec(f"mounts[{i}].source", "a bind mount needs a source")
        src = ospath.normpath(ospath.join(bundle, m.source))
        if m.idmapped():
            ops.append(IdmapBind(i, src, dest))  # recursive or not: runtime.idmap decides
        else:
            ops.append(Mount(src, dest, None, MS_BIND | (o.flags & MS_REC), create="source"))
        # A bind mount ignores every other flag (ro included) until it is remounted.
        if o.flags & ~(MS_BIND | MS_REC | MS_REMOUNT):
            ops.append(Mount(None, dest, None, (o.flags & ~MS_REC) | MS_REMOUNT | MS_BIND))
    else:
        if not m.type:
            raise InvalidSpec(f"mounts[{i}].type", "is required unless it is a bind mount")
        flags = o.flags & ~MS_RDONLY if dest == "/dev" else o.flags  # ro /dev: remounted later
        create = None if flags & MS_REMOUNT else "dir"
        data = o.data if m.type in _UNLABELED else with_mount_label(o.data, mount_label)
        ops.append(Mount(m.source or m.type, dest, m.type, flags, data, create=create))
    ops += [Mount(None, dest, None, p) for p in o.propagation]
    if o.attr_set or o.attr_clr:
        ops.append(SetAttr(dest, o.attr_set, o.attr_clr))
    return ops


def _plan_cgroup(i: int, m, dest: str, spec: Spec, host: HostInfo) -> list:
    """cgroup v2: the cgroup2 fs itself in a new cgroup ns, else a bind of the container's own
    cgroup. v1/hybrid: a tmpfs holding one such mount (or bind) per hierarchy, like runc."""
    flags = parse_mount_options(m.options).flags & ~(MS_BIND | MS_REC)
    cgroupns = spec.new_namespace("cgroup")
    if not host.cgroups:
        raise InvalidSpec(f"mounts[{i}]", "no cgroup hierarchy is mounted on the host")
    if len(host.cgroups) == 1 and host.cgroups[0].fstype == "cgroup2":
        return ([] if cgroupns else [AwaitCgroup()]) + _cgroup_fs(host.cgroups[0], dest, flags,
                                                                  cgroupns)
    ops = [Mount("tmpfs", dest, "tmpfs", flags & ~MS_RDONLY,
                 with_mount_label("mode=755", spec.linux.mount_label), create="dir")]
    if not cgroupns:
        ops.append(AwaitCgroup())
    for h in host.cgroups:
        name = ospath.basename(h.mountpoint)
        ops += _cgroup_fs(h, ospath.join(dest, name), flags, cgroupns)
        if "," in name:  # co-mounted controllers: cpu -> cpu,cpuacct
            ops += [Symlink(name, ospath.join(dest, c)) for c in name.split(",")]
    if flags & MS_RDONLY:
        ops.append(Mount("tmpfs", dest, "tmpfs", flags | MS_REMOUNT,
                         with_mount_label("mode=755", spec.linux.mount_label)))
    return ops


def _cgroup_fs(h: CgroupHierarchy, dest: str, flags: int, cgroupns: bool) -> list:
    if cgroupns:  # a new cgroup ns makes the fs show the container's cgroup as its root
        return [Mount(h.fstype, dest, h.fstype, flags, h.options, create="dir")]
    ops = [Mount(h.source, dest, None, MS_BIND | MS_REC, create="dir")]
    if flags:
        ops.append(Mount(None, dest, None, flags | MS_REMOUNT | MS_BIND))
    return ops


def _plan_devices(spec: Spec, dev_tmpfs: bool, host: HostInfo, bind: bool = False) -> list:
    """Device nodes; bind=True (a user namespace, where mknod is refused): the host's nodes of
    the same paths bound onto empty files instead, like runc."""
    devices = {}
    if dev_tmpfs:
        devices = {p: MakeDevice(p, "c", ma, mi) for p, ma, mi in _DEFAULT_DEVICES}
    for i, d in enumerate(spec.linux.devices):
        p = _clean(d.path, f"linux.devices[{i}].path")
        devices[p] = MakeDevice(p, d.type, d.major, d.minor, d.file_mode, d.uid, d.gid)
    ops: list = [Mount(p, p, None, MS_BIND, create="source") if bind else op
                 for p, op in devices.items()]
    if dev_tmpfs:
        ops.append(Symlink("pts/ptmx", "/dev/ptmx"))
        ops += [Symlink(t, p) for t, p in _DEV_SYMLINKS]
        if host.kcore:
            ops.append(Symlink("/proc/kcore", "/dev/core"))
    return ops
