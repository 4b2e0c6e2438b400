"""runtime.mounts (the plan), runtime.paths (confined resolution) and runtime.executor run
against the recording fake syscall layer."""

import errno
import os

import pytest

from runtime import executor, paths
from runtime import spec as S
from runtime.errors import ContainerSetupError, InvalidSpec
from runtime.mounts import (READONLY_PATH_FLAGS, AwaitCgroup, CgroupHierarchy, Chdir, Chroot, HostInfo,
                            MakeDevice,
                            MakeDirs, MaskPath, Mount, MoveRoot, Options, ParentPrivate, PivotRoot,
                            ReadonlyPath, Symlink, Umount, cgroup_hierarchies, full_proc_sys_mounts,
                            parse_mount_options, parse_options, with_mount_label,
                            plan_rootfs)
from runtime.specgen import MASKED_PATHS, READONLY_PATHS, default_config
from runtime.sys.consts import (MNT_DETACH, MS_BIND, MS_DIRSYNC, MS_MANDLOCK, MS_MOVE, MS_NOATIME,
                                MS_NODEV, MS_NODIRATIME, MS_NOEXEC, MS_NOSUID, MS_PRIVATE,
                                MS_RDONLY, MS_REC, MS_RELATIME, MS_REMOUNT, MS_SHARED, MS_SLAVE,
                                MS_STRICTATIME, MS_SYNCHRONOUS, MS_UNBINDABLE)
from runtime.sys.fake import FakeSys

R = "/b/rootfs"
HYBRID = HostInfo(kcore=False, cgroups=(
    CgroupHierarchy("/sys/fs/cgroup/cpu,cpuacct", "cgroup", "cpu,cpuacct",
                    "/sys/fs/cgroup/cpu,cpuacct/shim"),
    CgroupHierarchy("/sys/fs/cgroup/memory", "cgroup", "memory", "/sys/fs/cgroup/memory/shim"),
    CgroupHierarchy("/sys/fs/cgroup/unified", "cgroup2", None, "/sys/fs/cgroup/unified/shim"),
))
V2 = HostInfo(cgroups=(CgroupHierarchy("/sys/fs/cgroup", "cgroup2", None, "/sys/fs/cgroup/shim"),))


def parse(mutate=None, **kw):
    c = default_config(["sh"], **kw)
    if mutate:
        mutate(c)
    return S.parse(c)


# --- options ---------------------------------------------------------------------------------
def test_option_flags():
    o = parse_mount_options(["ro", "nosuid", "nodev", "noexec", "relatime", "sync", "dirsync",
                             "mand", "noatime", "nodiratime"])
    assert o == Options(MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RELATIME
                        | MS_SYNCHRONOUS | MS_DIRSYNC | MS_MANDLOCK | MS_NOATIME | MS_NODIRATIME)


def test_later_options_clear_earlier_ones():
    o = parse_mount_options(["ro", "nosuid", "nodev", "noexec", "relatime", "noatime",
                             "rw", "suid", "dev", "exec", "norelatime", "atime", "strictatime"])
    assert o.flags == MS_STRICTATIME


def test_bind_propagation_and_data():
    assert parse_mount_options(["bind"]).flags == MS_BIND
    assert parse_mount_options(["rbind", "remount"]).flags == MS_BIND | MS_REC | MS_REMOUNT
    o = parse_mount_options(["rprivate", "shared", "rslave", "unbindable", "runbindable",
                             "private", "slave", "rshared"])
    assert o.flags == 0
    assert o.propagation == (MS_PRIVATE | MS_REC, MS_SHARED, MS_SLAVE | MS_REC, MS_UNBINDABLE,
                             MS_UNBINDABLE | MS_REC, MS_PRIVATE, MS_SLAVE, MS_SHARED | MS_REC)


def test_unknown_options_become_the_data_string():
    o = parse_mount_options(["nosuid", "mode=755", "size=65536k", "newinstance", "defaults"])
    assert o == Options(MS_NOSUID, (), "mode=755,size=65536k,newinstance")
    assert parse_mount_options([]) == Options(0, (), None)


def test_parse_options_for_a_single_mount_call():
    # The shim mounts containerd's snapshot mounts with it: (flags, data), no propagation.
    assert parse_options(["ro", "lowerdir=/a:/b", "upperdir=/u", "rprivate"]) == \
        (MS_RDONLY, "lowerdir=/a:/b,upperdir=/u")
    assert parse_options(["rbind"]) == (MS_BIND | MS_REC, None)


# --- the plan for a typical containerd spec ---------------------------------------------------
def test_plan_for_a_containerd_spec_op_by_op():
    spec = parse(hostname="box", cgroup=True)
    ops = plan_rootfs(spec, R, "/b", HYBRID)
    CG = MS_NOSUID | MS_NOEXEC | MS_NODEV | MS_RELATIME | MS_RDONLY
    expected = [
        Mount(None, "/", None, MS_SLAVE | MS_REC, host=True),
        Mount(R, R, None, MS_BIND | MS_REC, host=True),
        Mount("proc", "/proc", "proc", MS_NOSUID | MS_NOEXEC | MS_NODEV, create="dir"),
        Mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k",
              create="dir"),
        Mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
              "newinstance,ptmxmode=0666,mode=0620,gid=5", create="dir"),
        Mount("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NOEXEC | MS_NODEV,
              "mode=1777,size=65536k", create="dir"),
        Mount("mqueue", "/dev/mqueue", "mqueue", MS_NOSUID | MS_NOEXEC | MS_NODEV, create="dir"),
        Mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NOEXEC | MS_NODEV | MS_RDONLY,
              create="dir"),
        # cgroup v1 without a cgroup namespace: a tmpfs, the container's own cgroup of each
        # hierarchy bound in read-only (once the caller made it: runtime.launch), co-mounted
        # controllers reachable by name.
        Mount("tmpfs", "/sys/fs/cgroup", "tmpfs", CG & ~MS_RDONLY, "mode=755", create="dir"),
        AwaitCgroup(),
        Mount("/sys/fs/cgroup/cpu,cpuacct/shim", "/sys/fs/cgroup/cpu,cpuacct", None,
              MS_BIND | MS_REC, create="dir"),
        Mount(None, "/sys/fs/cgroup/cpu,cpuacct", None, CG | MS_REMOUNT | MS_BIND),
        Symlink("cpu,cpuacct", "/sys/fs/cgroup/cpu"),
        Symlink("cpu,cpuacct", "/sys/fs/cgroup/cpuacct"),
        Mount("/sys/fs/cgroup/memory/shim", "/sys/fs/cgroup/memory", None, MS_BIND | MS_REC,
              create="dir"),
        Mount(None, "/sys/fs/cgroup/memory", None, CG | MS_REMOUNT | MS_BIND),
        Mount("/sys/fs/cgroup/unified/shim", "/sys/fs/cgroup/unified", None, MS_BIND | MS_REC,
              create="dir"),
        Mount(None, "/sys/fs/cgroup/unified", None, CG | MS_REMOUNT | MS_BIND),
        Mount("tmpfs", "/sys/fs/cgroup", "tmpfs", CG | MS_REMOUNT, "mode=755"),
        # /dev is a tmpfs from the spec: populate it.
        MakeDevice("/dev/null", "c", 1, 3),
        MakeDevice("/dev/zero", "c", 1, 5),
        MakeDevice("/dev/full", "c", 1, 7),
        MakeDevice("/dev/random", "c", 1, 8),
        MakeDevice("/dev/urandom", "c", 1, 9),
        MakeDevice("/dev/tty", "c", 5, 0),
        Symlink("pts/ptmx", "/dev/ptmx"),
        Symlink("/proc/self/fd", "/dev/fd"),
        Symlink("/proc/self/fd/0", "/dev/stdin"),
        Symlink("/proc/self/fd/1", "/dev/stdout"),
        Symlink("/proc/self/fd/2", "/dev/stderr"),
        # runc's pivot_root dance
        Chdir(R, host=True),
        PivotRoot(),
        Mount(None, ".", None, MS_SLAVE | MS_REC),
        Umount(".", MNT_DETACH),
        Chdir("/"),
        MakeDirs("/"),
        *[MaskPath(p) for p in MASKED_PATHS],
        *[ReadonlyPath(p) for p in READONLY_PATHS],
    ]
    assert ops == expected


def test_cgroup_v1_with_a_cgroup_namespace_mounts_the_hierarchies():
    spec = parse(lambda c: c["linux"]["namespaces"].append({"type": "cgroup"}), cgroup=True)
    ops = [op for op in plan_rootfs(spec, R, "/b", HYBRID)
           if isinstance(op, AwaitCgroup) or getattr(op, "target", "").startswith("/sys/fs/cgroup")]
    CG = MS_NOSUID | MS_NOEXEC | MS_NODEV | MS_RELATIME | MS_RDONLY
    assert ops == [
        Mount("tmpfs", "/sys/fs/cgroup", "tmpfs", CG & ~MS_RDONLY, "mode=755", create="dir"),
        Mount("cgroup", "/sys/fs/cgroup/cpu,cpuacct", "cgroup", CG, "cpu,cpuacct", create="dir"),
        Mount("cgroup", "/sys/fs/cgroup/memory", "cgroup", CG, "memory", create="dir"),
        Mount("cgroup2", "/sys/fs/cgroup/unified", "cgroup2", CG, None, create="dir"),
        Mount("tmpfs", "/sys/fs/cgroup", "tmpfs", CG | MS_REMOUNT, "mode=755"),
    ]


def test_cgroup_v2_only_host():
    CG = MS_NOSUID | MS_NOEXEC | MS_NODEV | MS_RELATIME | MS_RDONLY
    spec = parse(cgroup=True)
    ops = [op for op in plan_rootfs(spec, R, "/b", V2)
           if isinstance(op, AwaitCgroup) or getattr(op, "target", "").startswith("/sys/fs/cgroup")]
    assert ops == [AwaitCgroup(),
                   Mount("/sys/fs/cgroup/shim", "/sys/fs/cgroup", None, MS_BIND | MS_REC,
                         create="dir"),
                   Mount(None, "/sys/fs/cgroup", None, CG | MS_REMOUNT | MS_BIND)]
    # a new cgroup ns: the init joined the cgroup before unsharing, nothing to wait for
    spec = parse(lambda c: c["linux"]["namespaces"].append({"type": "cgroup"}), cgroup=True)
    ops = [op for op in plan_rootfs(spec, R, "/b", V2)
           if isinstance(op, AwaitCgroup) or getattr(op, "target", "").startswith("/sys/fs/cgroup")]
    assert ops == [Mount("cgroup2", "/sys/fs/cgroup", "cgroup2", CG, None, create="dir")]


def test_cgroup_mount_without_any_hierarchy_is_invalid():
    with pytest.raises(InvalidSpec) as e:
        plan_rootfs(parse(cgroup=True), R, "/b", HostInfo())
    assert e.value.field == "mounts[6]"


def test_cgroup_hierarchies_from_mountinfo():
    mountinfo = "\n".join([
        "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw",
        "31 27 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755",
        "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct",
        "33 31 0:30 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory",
        "34 31 0:31 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd",
        "35 31 0:32 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate",
        "36 27 0:30 / /mnt/again\\040there rw - cgroup cgroup rw,memory",  # seen already
    ])
    own = "4:cpu,cpuacct:/shim\n3:memory:/docker/abc/shim\n2:name=systemd:/\n0::/shim\n"
    assert list(cgroup_hierarchies(mountinfo, own)) == [
        CgroupHierarchy("/sys/fs/cgroup/cpu,cpuacct", "cgroup", "cpu,cpuacct",
                        "/sys/fs/cgroup/cpu,cpuacct/shim"),
        # the mount shows /docker/abc as its root: our /docker/abc/shim is "shim" under it
        CgroupHierarchy("/sys/fs/cgroup/memory", "cgroup", "memory",
                        "/sys/fs/cgroup/memory/shim"),
        CgroupHierarchy("/sys/fs/cgroup/systemd", "cgroup", "name=systemd",
                        "/sys/fs/cgroup/systemd"),
        CgroupHierarchy("/sys/fs/cgroup/unified", "cgroup2", None, "/sys/fs/cgroup/unified/shim"),
    ]


def test_bind_mounts():
    def mutate(c):
        c["mounts"] = [
            {"destination": "/etc/hosts", "type": "bind", "source": "/etc/hosts",
             "options": ["rbind", "ro", "rprivate"]},
            {"destination": "/data", "source": "data", "options": ["bind"]},
            {"destination": "/opt", "type": "none", "source": "/opt",
             "options": ["rbind", "nosuid"]},
        ]
    ops = plan_rootfs(parse(mutate), R, "/b", HostInfo())
    assert ops[2:9] == [
        Mount("/etc/hosts", "/etc/hosts", None, MS_BIND | MS_REC, create="source"),
        # a bind mount ignores ro on the first call: remount (without MS_REC, per mount)
        Mount(None, "/etc/hosts", None, MS_BIND | MS_RDONLY | MS_REMOUNT),
        Mount(None, "/etc/hosts", None, MS_PRIVATE | MS_REC),
        Mount("/b/data", "/data", None, MS_BIND, create="source"),  # relative to the bundle
        Mount("/opt", "/opt", None, MS_BIND | MS_REC, create="source"),
        Mount(None, "/opt", None, MS_BIND | MS_NOSUID | MS_REMOUNT),
        Chdir(R, host=True),
    ]


def test_bind_mount_needs_a_source():
    with pytest.raises(InvalidSpec) as e:
        plan_rootfs(parse(lambda c: c["mounts"].append(
            {"destination": "/x", "type": "bind", "options": ["rbind"]})), R, "/b", HostInfo())
    assert e.value.field == "mounts[6].source"


def test_mount_needs_a_type_unless_bind():
    with pytest.raises(InvalidSpec) as e:
        plan_rootfs(parse(lambda c: c["mounts"].append({"destination": "/x", "source": "x"})),
                    R, "/b", HostInfo())
    assert e.value.field == "mounts[6].type"


@pytest.mark.parametrize("dest", ["/../etc", "/dev/../../etc/passwd", "/a/b/../../../x"])
def test_destination_escaping_the_root_is_invalid(dest):
    with pytest.raises(InvalidSpec) as e:
        plan_rootfs(parse(lambda c: c["mounts"].insert(
            2, {"destination": dest, "type": "tmpfs", "source": "tmpfs"})), R, "/b", HostInfo())
    assert e.value.field == "mounts[2].destination"


def test_destination_is_cleaned_and_root_refused():
    ops = plan_rootfs(parse(lambda c: c["mounts"].append(
        {"destination": "/run/./x/../y//", "type": "tmpfs", "source": "tmpfs"})),
        R, "/b", HostInfo())
    assert Mount("tmpfs", "/run/y", "tmpfs", 0, create="dir") in ops
    with pytest.raises(InvalidSpec) as e:
        plan_rootfs(parse(lambda c: c["mounts"].append(
            {"destination": "/x/..", "type": "tmpfs", "source": "tmpfs"})), R, "/b", HostInfo())
    assert e.value.field == "mounts[6].destination"


def test_masked_and_readonly_paths_must_stay_inside():
    with pytest.raises(InvalidSpec) as e:
        plan_rootfs(parse(lambda c: c["linux"]["maskedPaths"].append("/proc/../../x")),
                    R, "/b", HostInfo())
    assert e.value.field == "linux.maskedPaths[11]"


def test_devices_without_a_dev_tmpfs():
    def mutate(c):
        c["mounts"] = [m for m in c["mounts"] if not m["destination"].startswith("/dev")]
        c["linux"]["devices"] = [{"path": "/dev/net/tun", "type": "c", "major": 10,
                                  "minor": 200, "fileMode": 0o600, "uid": 1, "gid": 2},
                                 {"path": "/dev/loop0", "type": "b", "major": 7, "minor": 0}]
    ops = plan_rootfs(parse(mutate), R, "/b", HostInfo(kcore=True))
    devs = [op for op in ops if isinstance(op, (MakeDevice, Symlink))]
    # no default devices, no /dev symlinks: only what the spec asks for
    assert devs == [MakeDevice("/dev/net/tun", "c", 10, 200, 0o600, 1, 2),
                    MakeDevice("/dev/loop0", "b", 7, 0)]


def test_spec_devices_override_defaults_and_kcore_gives_dev_core():
    ops = plan_rootfs(parse(lambda c: c["linux"].update(devices=[
        {"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o600}])),
        R, "/b", HostInfo(kcore=True))
    assert ops.count(MakeDevice("/dev/null", "c", 1, 3, 0o600)) == 1
    assert MakeDevice("/dev/null", "c", 1, 3) not in ops
    assert Symlink("/proc/kcore", "/dev/core") in ops


def test_root_propagation_and_readonly_root():
    def mutate(c):
        c["linux"]["rootfsPropagation"] = "rshared"
        c["root"]["readonly"] = True
    ops = plan_rootfs(parse(mutate), R, "/b", HostInfo())
    assert ops[:3] == [Mount(None, "/", None, MS_SHARED | MS_REC, host=True),
                       ParentPrivate(R), Mount(R, R, None, MS_BIND | MS_REC, host=True)]
    # the new root's propagation is set last, after the read-only remount (an unbindable one
    # would refuse the binds of the masked and read-only paths)
    assert ops[-2:] == [Mount(None, "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY),
                        Mount(None, "/", None, MS_SHARED | MS_REC)]


def test_readonly_dev_is_remounted_after_devices():
    ops = plan_rootfs(parse(lambda c: c["mounts"][1]["options"].append("ro")),
                      R, "/b", HostInfo())
    assert ops[3] == Mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_STRICTATIME,
                           "mode=755,size=65536k", create="dir")
    assert Mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_STRICTATIME | MS_RDONLY | MS_REMOUNT,
                 "mode=755,size=65536k") in ops[ops.index(PivotRoot()):]


# --- confined path resolution ----------------------------------------------------------------
@pytest.fixture
def rootfs(tmp_path):
    r = tmp_path / "rootfs"
    (r / "etc").mkdir(parents=True)
    (r / "usr/lib").mkdir(parents=True)
    (r / "data").symlink_to("/etc")  # absolute: must land in rootfs/etc
    (r / "up").symlink_to("../../../../..")  # climbs: must stop at rootfs
    (r / "usr/lib/rel").symlink_to("../../etc")  # relative, inside
    (r / "chain").symlink_to("data/sub")
    (r / "loop1").symlink_to("loop2")
    (r / "loop2").symlink_to("loop1")
    return str(r)


@pytest.mark.parametrize("unsafe, expected", [
    ("/etc/hosts", "/etc/hosts"),
    ("/data/hosts", "/etc/hosts"),
    ("/up/etc/passwd", "/etc/passwd"),
    ("/usr/lib/rel/x", "/etc/x"),
    ("/chain/y", "/etc/sub/y"),
    ("/../../etc", "/etc"),
    ("/missing/a/../b", "/missing/b"),
    ("/", ""),
])
def test_secure_join_stays_inside(rootfs, unsafe, expected):
    assert paths.secure_join(rootfs, unsafe) == rootfs + expected


def test_secure_join_symlink_loop(rootfs):
    with pytest.raises(OSError) as e:
        paths.secure_join(rootfs, "/loop1/x")
    assert e.value.errno == errno.ELOOP


def test_clean():
    assert paths.clean("/a/./b//c/../d/") == "/a/b/d"
    assert paths.clean("/") == "/"
    assert paths.clean("/a/../..") is None


# --- executor on the fake syscall layer ------------------------------------------------------
def test_executor_sequence(tmp_path):
    r = tmp_path / "rootfs"
    (r / "proc/acpi").mkdir(parents=True)
    (r / "proc/kcore").touch()
    (r / "dev").mkdir()
    (r / "dev/null").touch()  # what the fake binds over masked files
    (r / "etc").mkdir()
    (r / "data").symlink_to("/etc")
    (tmp_path / "hostfile").write_text("x")
    config = {
        "ociVersion": "1.1.0", "root": {"path": "rootfs", "readonly": True},
        "process": {"args": ["sh"], "cwd": "/work"},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "mode=755"]},
            {"destination": "/data/hosts", "type": "bind", "source": "hostfile",
             "options": ["rbind", "ro"]},
        ],
        "linux": {"namespaces": [{"type": "mount"}],
                  "devices": [{"path": "/dev/net/tun", "type": "c", "major": 10, "minor": 200}],
                  "maskedPaths": ["/proc/kcore", "/proc/acpi", "/proc/keys"],
                  "readonlyPaths": ["/proc/sys", "/nope"]},
    }
    rootfs, bundle = str(r), str(tmp_path)
    ops = plan_rootfs(S.parse(config), rootfs, bundle, HostInfo())
    fake = FakeSys()
    executor.apply(ops, rootfs, fake)
    chr_ = 0o20000 | 0o666
    OLD_ROOT_FD = next(c for c in fake.calls if c[0] == "fchdir")[1]  # noqa: N806
    assert fake.calls == [
        ("mount", None, "/", None, MS_SLAVE | MS_REC, None),
        ("mount", rootfs, rootfs, None, MS_BIND | MS_REC, None),
        ("mkdir", f"{rootfs}/proc"),
        ("mount", "proc", f"{rootfs}/proc", "proc", 0, None),
        ("mkdir", f"{rootfs}/dev"),
        ("mount", "tmpfs", f"{rootfs}/dev", "tmpfs", MS_NOSUID, "mode=755"),
        # /data -> /etc resolved inside the rootfs; the source is a file: a file mount point
        ("mkdir", f"{rootfs}/etc"),
        ("touch", f"{rootfs}/etc/hosts"),
        ("mount", f"{bundle}/hostfile", f"{rootfs}/etc/hosts", None, MS_BIND | MS_REC, None),
        ("mount", None, f"{rootfs}/etc/hosts", None, MS_BIND | MS_REMOUNT | MS_RDONLY, None),
        ("mknod", f"{rootfs}/dev/null", chr_, os.makedev(1, 3)),
        ("chown", f"{rootfs}/dev/null", 0, 0),
        ("mknod", f"{rootfs}/dev/zero", chr_, os.makedev(1, 5)),
        ("chown", f"{rootfs}/dev/zero", 0, 0),
        ("mknod", f"{rootfs}/dev/full", chr_, os.makedev(1, 7)),
        ("chown", f"{rootfs}/dev/full", 0, 0),
        ("mknod", f"{rootfs}/dev/random", chr_, os.makedev(1, 8)),
        ("chown", f"{rootfs}/dev/random", 0, 0),
        ("mknod", f"{rootfs}/dev/urandom", chr_, os.makedev(1, 9)),
        ("chown", f"{rootfs}/dev/urandom", 0, 0),
        ("mknod", f"{rootfs}/dev/tty", chr_, os.makedev(5, 0)),
        ("chown", f"{rootfs}/dev/tty", 0, 0),
        ("mkdir", f"{rootfs}/dev/net"),
        ("mknod", f"{rootfs}/dev/net/tun", chr_, os.makedev(10, 200)),
        ("chown", f"{rootfs}/dev/net/tun", 0, 0),
        ("symlink", "pts/ptmx", f"{rootfs}/dev/ptmx"),
        ("symlink", "/proc/self/fd", f"{rootfs}/dev/fd"),
        ("symlink", "/proc/self/fd/0", f"{rootfs}/dev/stdin"),
        ("symlink", "/proc/self/fd/1", f"{rootfs}/dev/stdout"),
        ("symlink", "/proc/self/fd/2", f"{rootfs}/dev/stderr"),
        ("chdir", rootfs),
        # leave through the old root (stacked on the new one): "." is then the OLD root, so
        # the rslave and the detach below never touch the container's own mounts
        ("open_dir", "/"),
        ("pivot_root", ".", "."),
        ("fchdir", OLD_ROOT_FD),
        ("close", OLD_ROOT_FD),
        ("mount", None, ".", None, MS_SLAVE | MS_REC, None),
        ("umount2", ".", MNT_DETACH),
        ("chdir", "/"),
        # from here paths are literal: the fake maps them under the pivoted root
        ("mkdir", "/work"),
        ("mount", "/dev/null", "/proc/kcore", None, MS_BIND, None),  # a file: /dev/null over it
        ("mount", "tmpfs", "/proc/acpi", "tmpfs", MS_RDONLY, None),  # a dir: empty ro tmpfs
        # /proc/keys, /proc/sys and /nope do not exist: skipped
        ("mount", None, "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY, None),
    ]
    assert (r / "work").is_dir() and (r / "etc/hosts").is_file()


def test_executor_readonly_path_binds_then_remounts(tmp_path):
    (tmp_path / "proc/sys").mkdir(parents=True)
    fake = FakeSys()
    ops = [Chdir(str(tmp_path), host=True), PivotRoot(), ReadonlyPath("/proc/sys")]
    executor.apply(ops, str(tmp_path), fake)
    assert fake.ops("mount") == [("mount", "/proc/sys", "/proc/sys", None, MS_BIND | MS_REC, None),
                                 ("mount", "/proc/sys", "/proc/sys", None, READONLY_PATH_FLAGS,
                                  None)]


def test_executor_errors_name_step_and_path(tmp_path):
    r = tmp_path / "rootfs"
    r.mkdir()
    fake = FakeSys()
    fake.fail[("mount", "proc")] = errno.ENODEV
    ops = [Mount("proc", "/proc", "proc", 0, create="dir")]
    with pytest.raises(ContainerSetupError) as e:
        executor.apply(ops, str(r), fake)
    assert (e.value.step, e.value.path) == ("mount", "/proc")
    assert "No such device" in str(e.value)


def test_executor_refuses_a_missing_bind_source_before_touching_the_rootfs(tmp_path):
    r = tmp_path / "rootfs"
    r.mkdir()
    ops = [Mount(str(tmp_path / "nope"), "/x", None, MS_BIND, create="source")]
    with pytest.raises(ContainerSetupError) as e:
        executor.apply(ops, str(r), FakeSys())
    assert e.value.step == "mount" and "No such file" in str(e.value)
    assert os.listdir(r) == []


def test_executor_symlink_through_an_escaping_link_stays_inside(tmp_path):
    r = tmp_path / "rootfs"
    r.mkdir()
    (r / "dev").symlink_to("/../../..")  # a hostile image: /dev points "above" the root
    fake = FakeSys()
    executor.apply([Symlink("pts/ptmx", "/dev/ptmx"), MakeDirs("/dev/pts")], str(r), fake)
    assert fake.calls == [("symlink", "pts/ptmx", f"{r}/ptmx"), ("mkdir", f"{r}/pts")]


# --- linux.mountLabel (SELinux hosts) ----------------------------------------------------------
def test_mount_label_becomes_the_context_option_of_filesystem_mounts():
    """As runc's label.FormatMountLabel: context="LABEL" joins the data of every mount the
    kernel makes for the container (tmpfs, devpts, shm, the v1 cgroup tmpfs), but not proc,
    sysfs or mqueue, and not bind mounts (they keep their source's labels)."""
    label = "system_u:object_r:container_file_t:s0:c1,c2"

    def mutate(c):
        c["linux"]["mountLabel"] = label
        c["mounts"].append({"destination": "/data", "type": "bind", "source": "/srv",
                            "options": ["rbind"]})

    spec = parse(mutate, cgroup=True)
    ops = plan_rootfs(spec, "/b/rootfs", host=HYBRID)
    by_dest = {op.target: op for op in ops if isinstance(op, Mount) and op.fstype}
    context = f'context="{label}"'
    assert by_dest["/dev"].data == f"mode=755,size=65536k,{context}"
    assert by_dest["/dev/pts"].data.endswith(f",{context}")
    assert by_dest["/dev/shm"].data.endswith(f",{context}")
    assert by_dest["/sys/fs/cgroup"].data == f"mode=755,{context}"
    for dest in ("/proc", "/sys", "/dev/mqueue"):
        assert "context=" not in (by_dest[dest].data or ""), dest
    binds = [op for op in ops if isinstance(op, Mount) and op.target == "/data"]
    assert binds and all("context=" not in (op.data or "") for op in binds)
    # and without a label nothing changes
    plain = {op.target: op for op in plan_rootfs(parse(cgroup=True), "/b/rootfs", host=HYBRID)
             if isinstance(op, Mount) and op.fstype}
    assert plain["/dev"].data == "mode=755,size=65536k"


def test_with_mount_label():
    assert with_mount_label(None, "") is None
    assert with_mount_label("mode=755", "") == "mode=755"
    assert with_mount_label(None, "l") == 'context="l"'
    assert with_mount_label("mode=755", "l") == 'mode=755,context="l"'


def test_no_mount_namespace_only_chroots():
    """Nothing is mounted (each mount would be the caller's): a chroot into the rootfs."""
    def no_mntns(c):
        c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "mount"]
    assert plan_rootfs(parse(no_mntns), "/b/rootfs", host=HYBRID) == [
        Chdir("/b/rootfs", host=True), Chroot(), Chdir("/"), MakeDirs("/")]


def test_hooks_run_before_the_root_changes_whichever_way():
    """The create-time hooks run before pivot_root, or before the chroot without a mount
    namespace, or first when no root change is planned."""
    for ops, want in (([Chdir("/b/rootfs", host=True), Chroot(), Chdir("/")],
                       ["chdir", "hooks", "chroot", "chdir"]),
                      ([], ["hooks"])):
        f = FakeSys()
        executor.apply(ops, "/b/rootfs", f, before_pivot=lambda: f._record("hooks"))
        assert [c[0] for c in f.calls] == want


# --- --no-pivot ------------------------------------------------------------------------------
def test_no_pivot_moves_the_root_instead_of_pivoting():
    spec = parse()
    pivot = plan_rootfs(spec, R, "/b", HYBRID)
    moved = plan_rootfs(spec, R, "/b", HYBRID, no_pivot=True)
    i = pivot.index(PivotRoot())
    assert pivot[i - 1:i + 4] == [Chdir(R, host=True), PivotRoot(),
                                  Mount(None, ".", None, MS_SLAVE | MS_REC),
                                  Umount(".", MNT_DETACH), Chdir("/")]
    j = moved.index(MoveRoot(R))
    assert moved[j - 1:j + 2] == [Chdir(R, host=True), MoveRoot(R), Chdir("/")]
    # everything before and after the root change is the same plan
    assert moved[:j - 1] == pivot[:i - 1] and moved[j + 2:] == pivot[i + 4:]
    assert PivotRoot() not in moved and Umount(".", MNT_DETACH) not in moved


MOUNTINFO = """\
22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:5 - proc proc rw
23 1 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:6 - sysfs sysfs rw
40 22 0:35 / /proc/sys/fs/binfmt_misc rw,relatime - binfmt_misc binfmt_misc rw
41 1 0:21 /sys /mnt/procsys rw - proc proc rw
42 1 0:40 / /b/rootfs/proc rw - proc proc rw
43 1 0:22 / /srv/my\\040sys rw - sysfs sysfs rw
44 1 0:41 / /run rw - tmpfs tmpfs rw
"""


def test_no_pivot_hides_the_whole_proc_and_sysfs_mounts_outside_the_rootfs():
    # not binfmt_misc, not a bind of part of proc, not the container's own /proc
    assert full_proc_sys_mounts(MOUNTINFO, R) == ["/proc", "/sys", "/srv/my sys"]


def test_executor_move_root(tmp_path):
    r = tmp_path / "rootfs"
    (r / "bin").mkdir(parents=True)
    fake = FakeSys(files={"/proc/self/mountinfo": MOUNTINFO.replace("/b/rootfs", str(r))})
    fake.fail[("umount2", "/sys")] = errno.EPERM  # cannot detach it: covered instead
    fake.fail[("mount", "/srv/my sys")] = errno.ENOENT  # gone with a parent already
    executor.apply([Chdir(str(r), host=True), MoveRoot(str(r)), Chdir("/"), MakeDirs("/work")],
                   str(r), fake)
    assert fake.ops("mount", "umount2", "chroot") == [
        ("mount", None, "/proc", None, MS_SLAVE | MS_REC, None),
        ("umount2", "/proc", MNT_DETACH),
        ("mount", None, "/sys", None, MS_SLAVE | MS_REC, None),
        ("mount", "tmpfs", "/sys", "tmpfs", 0, None),
        ("mount", ".", "/", None, MS_MOVE, None),
        ("chroot", "."),
    ]
    assert (r / "work").is_dir()  # after the root change, paths are the new root's


def test_executor_moves_an_idmapped_tree_in_where_the_plan_says(tmp_path):
    from runtime.mounts import IdmapBind
    r = tmp_path / "rootfs"
    r.mkdir()
    src = tmp_path / "srcdir"
    src.mkdir()
    fake = FakeSys()
    executor.apply([IdmapBind(3, str(src), "/data/d")], str(r), fake, mount_fds={3: 41})
    assert (r / "data/d").is_dir()  # a directory source: a directory mount point
    assert fake.ops("move_mount") == [("move_mount", 41, str(r / "data/d"))]
    with pytest.raises(ContainerSetupError) as e:  # no tree from the caller for it
        executor.apply([IdmapBind(4, str(src), "/x")], str(r), FakeSys(), mount_fds={3: 41})
    assert (e.value.step, e.value.path) == ("idmapped mount", "/x")


@pytest.mark.parametrize("prop,flags", [("unbindable", MS_UNBINDABLE),
                                        ("runbindable", MS_UNBINDABLE | MS_REC)])
def test_an_unbindable_root_is_made_so_after_pivot_root_only(prop, flags):
    """Set on the host's / first, it would make the bind of the rootfs on itself fail with
    EINVAL (runc 1.1 fails so): the host's mounts are made rslave, the new root unbindable."""
    ops = plan_rootfs(parse(lambda c: c["linux"].update(rootfsPropagation=prop)), R, "/b",
                      HostInfo())
    assert ops[:2] == [Mount(None, "/", None, MS_SLAVE | MS_REC, host=True),
                       Mount(R, R, None, MS_BIND | MS_REC, host=True)]
    assert ops[-1] == Mount(None, "/", None, flags)
