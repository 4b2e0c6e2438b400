"""Hierarchy detection from mountinfo, /proc/self/cgroup parsing, cgroupsPath resolution."""

import pytest

from runtime import cgroups
from runtime.cgroups.hierarchy import (Hierarchy, Mount, detect, parse_mountinfo,
                                       parse_proc_cgroup, resolve_paths)
from runtime.errors import EngineError, InvalidSpec

HYBRID = """\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 25 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset,clone_children
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
90 35 0:32 / /mnt/memory\\040copy rw,relatime - cgroup cgroup rw,memory
"""

UNIFIED = """\
25 30 0:23 / /sys rw - sysfs sysfs rw
31 25 0:28 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
"""

OWN_V1 = "4:memory:/user/me\n3:cpu,cpuacct:/user/me\n2:devices:/\n1:name=systemd:/user/me\n0::/x\n"


def test_hybrid_is_v1_with_combined_mount_and_named_hierarchy():
    h = parse_mountinfo(HYBRID)
    assert h.mode == "v1"
    assert h.mounts["cpu"] == h.mounts["cpuacct"] == Mount("/sys/fs/cgroup/cpu,cpuacct", "/")
    assert h.mounts["memory"].point == "/sys/fs/cgroup/memory"  # the first mount, not the bind
    assert h.mounts["name=systemd"].point == "/sys/fs/cgroup/systemd"
    assert "clone_children" not in h.mounts and "xattr" not in h.mounts
    assert h.unified == Mount("/sys/fs/cgroup/unified")


def test_unified_is_v2():
    h = parse_mountinfo(UNIFIED)
    assert h.mode == "v2" and h.mounts == {"": Mount("/sys/fs/cgroup", "/")}


def test_mount_point_escapes_are_decoded():
    h = parse_mountinfo("1 2 0:1 / /a\\040b rw - cgroup cgroup rw,pids\n")
    assert h.mounts["pids"].point == "/a b"


def test_no_cgroup_mounted_is_an_engine_error():
    with pytest.raises(EngineError, match="no cgroup"):
        parse_mountinfo("25 30 0:23 / /sys rw - sysfs sysfs rw\n")


def test_detect_reads_this_host():
    h = detect()
    assert h.mode in ("v1", "v2")
    assert h.mounts


def test_parse_proc_cgroup():
    own = parse_proc_cgroup(OWN_V1)
    assert own == {"memory": "/user/me", "cpu": "/user/me", "cpuacct": "/user/me",
                   "devices": "/", "name=systemd": "/user/me", "": "/x"}


V1 = parse_mountinfo(HYBRID)
V2 = parse_mountinfo(UNIFIED)


def test_absolute_path_is_under_each_mount_point():
    p = resolve_paths("/default/abc", "abc", V1)
    assert p["memory"] == "/sys/fs/cgroup/memory/default/abc"
    assert p["cpu"] == p["cpuacct"] == "/sys/fs/cgroup/cpu,cpuacct/default/abc"
    assert p["name=systemd"] == "/sys/fs/cgroup/systemd/default/abc"
    assert resolve_paths("/default/abc", "abc", V2) == {"": "/sys/fs/cgroup/default/abc"}


def test_relative_path_v1_is_under_own_cgroup_per_controller():
    p = resolve_paths("ctr/abc", "abc", V1, parse_proc_cgroup(OWN_V1))
    assert p["memory"] == "/sys/fs/cgroup/memory/user/me/ctr/abc"
    assert p["devices"] == "/sys/fs/cgroup/devices/ctr/abc"
    assert p["cpuset"] == "/sys/fs/cgroup/cpuset/ctr/abc"  # not listed: the root


def test_relative_path_v2_is_a_sibling_of_own_cgroup():
    own = {"": "/system.slice/containerd.service"}
    assert resolve_paths("abc", "abc", V2, own) == {"": "/sys/fs/cgroup/system.slice/abc"}


def test_empty_path_is_the_container_id_relative_like_runc():
    own = {"": "/system.slice/containerd.service"}
    assert resolve_paths("", "abc", V2, own) == {"": "/sys/fs/cgroup/system.slice/abc"}
    assert resolve_paths(None, "abc", V1, parse_proc_cgroup(OWN_V1))["memory"] == \
        "/sys/fs/cgroup/memory/user/me/abc"


def test_mount_root_is_stripped_from_own_path_inside_a_container():
    h = Hierarchy("v1", {"memory": Mount("/sys/fs/cgroup/memory", "/docker/c1")})
    assert resolve_paths("x", "x", h, {"memory": "/docker/c1/sub"}) == {
        "memory": "/sys/fs/cgroup/memory/sub/x"}


@pytest.mark.parametrize("path,expected", [("/../../etc", "/etc"), ("/a/../../b/./c", "/b/c"),
                                           ("../../x", "x"), ("//a//b/", "/a/b")])
def test_dotdot_never_climbs_above_the_mount(path, expected):
    own = {"": "/"}
    out = resolve_paths(path, "id", V2, own)[""]
    assert out == "/sys/fs/cgroup/" + expected.lstrip("/")


@pytest.mark.parametrize("path", ["/", "/..", ".", "a/.."])
def test_path_naming_the_root_is_refused(path):
    with pytest.raises(InvalidSpec) as e:
        resolve_paths(path, "id", V2, {"": "/x/y"})
    assert e.value.field == "linux.cgroupsPath"


@pytest.mark.parametrize("path", ["system.slice:docker:abc", "kubepods-pod1.slice:cri-containerd:x",
                                  ":cri:abc"])
def test_systemd_paths_are_refused_clearly(path):
    with pytest.raises(InvalidSpec, match="systemd cgroup driver is not supported") as e:
        resolve_paths(path, "abc", V1, {})
    assert e.value.field == "linux.cgroupsPath"


def test_empty_path_and_unusable_id_is_refused():
    with pytest.raises(InvalidSpec):
        resolve_paths("", "", V2, {"": "/"})


def test_manager_factory_picks_the_version():
    m1 = cgroups.manager("/a", "a", V1)
    assert isinstance(m1, cgroups.V1Manager)
    assert m1.paths["memory"] == "/sys/fs/cgroup/memory/a"
    assert len(m1.dirs()) == 5  # cpu,cpuacct share one directory
    m2 = cgroups.manager("b", "b", V2, own={"": "/p/q"})
    assert isinstance(m2, cgroups.V2Manager) and m2.path == "/sys/fs/cgroup/p/b"
    assert m2.mountpoint == "/sys/fs/cgroup"
