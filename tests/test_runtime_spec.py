"""runtime.spec: config.json validation, errors naming the JSON field."""

import copy
import json

import pytest

from runtime import spec as S
from runtime.errors import EngineError, InvalidSpec
from runtime.specgen import default_config


def cfg(**changes):
    c = default_config(["sh", "-c", "true"], hostname="box")
    for path, value in changes.items():
        *parents, last = path.split("__")
        obj = c
        for p in parents:
            obj = obj[int(p)] if isinstance(obj, list) else obj[p]
        key = int(last) if isinstance(obj, list) else last
        if value is DELETE:
            del obj[key]
        else:
            obj[key] = value
    return c


DELETE = object()


def field_of(config) -> str:
    with pytest.raises(InvalidSpec) as e:
        S.parse(config)
    assert isinstance(e.value, EngineError)
    return e.value.field


def test_default_config_parses_into_typed_fields():
    s = S.parse(default_config(["sh"], hostname="box"))
    assert s.oci_version == "1.1.0" and s.root == S.Root("rootfs", False)
    assert s.hostname == "box"
    assert s.process.args == ["sh"] and s.process.cwd == "/"
    assert s.process.user == S.User(0, 0, None, [])
    assert s.process.rlimits == [S.Rlimit("RLIMIT_NOFILE", 1024, 1024)]
    assert s.process.no_new_privileges is True
    assert s.process.capabilities.bounding == 0xA80425FB  # docker/containerd's famous CapEff
    assert s.process.capabilities.inheritable == 0
    assert [m.destination for m in s.mounts] == ["/proc", "/dev", "/dev/pts", "/dev/shm",
                                                 "/dev/mqueue", "/sys"]
    assert s.mounts[0] == S.Mount("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"])
    assert [n.type for n in s.linux.namespaces] == ["pid", "ipc", "uts", "mount", "network"]
    assert s.new_namespace("pid") and not s.new_namespace("user")
    assert s.linux.resources == {"devices": [{"allow": False, "access": "rwm"}]}
    assert s.raw["ociVersion"] == "1.1.0"


@pytest.mark.parametrize("changes, field", [
    ({"ociVersion": DELETE}, "ociVersion"),
    ({"ociVersion": 1}, "ociVersion"),
    ({"root": DELETE}, "root"),
    ({"root__path": ["x"]}, "root.path"),
    ({"root__readonly": "yes"}, "root.readonly"),
    ({"process__args": []}, "process.args"),
    ({"process__args": DELETE}, "process.args"),
    ({"process__args": ["sh", 3]}, "process.args[1]"),
    ({"process__cwd": "relative/dir"}, "process.cwd"),
    ({"process__cwd": DELETE}, "process.cwd"),
    ({"process__env": ["PATH=/bin", "NOEQUALS"]}, "process.env[1]"),
    ({"process__user__uid": True}, "process.user.uid"),  # a JSON bool is not an integer
    ({"process__user__gid": -1}, "process.user.gid"),
    ({"process__user__uid": DELETE}, "process.user.uid"),
    ({"process__user__additionalGids": [1, "2"]}, "process.user.additionalGids[1]"),
    ({"process__capabilities__effective": ["CAP_CHOWN", 5]},
     "process.capabilities.effective[1]"),
    ({"process__capabilities__ambient": "CAP_CHOWN"}, "process.capabilities.ambient"),
    ({"process__rlimits__0__type": "RLIMIT_BOGUS"}, "process.rlimits[0].type"),
    ({"process__rlimits__0__soft": 2048}, "process.rlimits[0].soft"),
    ({"process__rlimits": [{"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
                           {"type": "RLIMIT_CORE", "soft": 0, "hard": 0}]},
     "process.rlimits[1].type"),
    ({"process__oomScoreAdj": 1001}, "process.oomScoreAdj"),
    ({"process__consoleSize": {"height": 10}}, "process.consoleSize.width"),
    ({"mounts__2__destination": "dev/pts"}, "mounts[2].destination"),
    ({"mounts__2__destination": DELETE}, "mounts[2].destination"),
    ({"mounts__1__options": "ro"}, "mounts[1].options"),
    ({"mounts__3": "tmpfs"}, "mounts[3]"),
    ({"linux__namespaces__1__type": "bogus"}, "linux.namespaces[1].type"),
    ({"linux__namespaces__1__type": "pid"}, "linux.namespaces[1].type"),
    ({"linux__namespaces__0__path": "proc/1/ns/pid"}, "linux.namespaces[0].path"),
    ({"linux__rootfsPropagation": "sideways"}, "linux.rootfsPropagation"),
    ({"linux__maskedPaths": ["/ok", "relative"]}, "linux.maskedPaths[1]"),
    ({"linux__devices": [{"path": "/dev/fuse", "type": "c", "major": 10}]},
     "linux.devices[0].minor"),
    ({"linux__devices": [{"path": "/dev/x", "type": "z", "major": 1, "minor": 1}]},
     "linux.devices[0].type"),
    ({"linux__uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]},
     "linux.uidMappings"),
    ({"annotations": {"a": "b", "n": 1}}, "annotations.n"),
    ({"hooks": {"prestart": [{"path": "hook"}]}}, "hooks.prestart[0].path"),
])
def test_errors_name_the_field(changes, field):
    assert field_of(cfg(**changes)) == field


def test_hostname_needs_a_uts_namespace():
    c = cfg()
    c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "uts"]
    assert field_of(c) == "hostname"
    c["hostname"] = None
    c["domainname"] = "example.org"
    assert field_of(c) == "domainname"


@pytest.mark.parametrize("key, drop_ns, ok", [
    ("net.ipv4.ip_forward", None, True),
    ("net.ipv4.ip_forward", "network", False),
    ("kernel.shmmax", None, True),
    ("fs.mqueue.msg_max", "ipc", False),
    ("kernel.shmmax", "ipc", False),
    ("kernel.domainname", None, True),
    ("kernel.hostname", None, False),
    ("vm.swappiness", None, False),  # not namespaced: would change the host
    ("net/ipv4/conf/eth0.100/forwarding", None, True),
    ("net.ipv4..x", None, False),
    ("net/../../etc", None, False),
])
def test_sysctl_must_be_namespaced(key, drop_ns, ok):
    c = cfg()
    c["linux"]["sysctl"] = {key: "1"}
    if drop_ns:
        c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != drop_ns]
    if ok:
        S.parse(c)
    else:
        assert field_of(c) == f"linux.sysctl.{key}"


def test_sysctl_path():
    assert S.sysctl_path("net.ipv4.ip_forward") == "/proc/sys/net/ipv4/ip_forward"
    assert S.sysctl_path("net/ipv4/conf/eth0.100/rp_filter") == \
        "/proc/sys/net/ipv4/conf/eth0.100/rp_filter"


def test_unknown_fields_are_tolerated_and_kept():
    c = cfg()
    c["vendorThing"] = {"x": 1}
    c["process"]["apparmorProfile"] = "p"
    c["linux"]["intelRdt"] = {}
    c["mounts"][0]["uidMappings"] = []
    s = S.parse(c)
    assert s.raw["vendorThing"] == {"x": 1}


def test_optional_parts_are_kept():
    c = cfg()
    c["hooks"] = {"prestart": [{"path": "/bin/hook", "args": ["hook", "x"], "timeout": 5}],
                  "poststop": [{"path": "/bin/other"}]}
    c["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ERRNO"}
    c["linux"]["cgroupsPath"] = "/pyshim/x"
    c["annotations"] = {"org.example": "v"}
    c["process"]["user"].update(umask=0o027, additionalGids=[10])
    c["linux"]["devices"] = [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}]
    s = S.parse(c)
    assert s.hooks == {"prestart": [S.Hook("/bin/hook", ["hook", "x"], [], 5)],
                       "poststop": [S.Hook("/bin/other")]}
    assert s.linux.seccomp == {"defaultAction": "SCMP_ACT_ERRNO"}
    assert s.linux.cgroups_path == "/pyshim/x"
    assert s.annotations == {"org.example": "v"}
    assert s.process.user == S.User(0, 0, 0o027, [10])
    assert s.linux.devices == [S.Device("/dev/fuse", "c", 10, 229, 0o666, 0, 0)]


def test_process_is_optional_for_parse_but_required_to_create():
    c = cfg()
    del c["process"]
    s = S.parse(c)
    assert s.process is None
    with pytest.raises(InvalidSpec) as e:
        S.check_supported(s)
    assert e.value.field == "process"


def without_mount_namespace(c):
    c["hostname"] = None
    c["linux"]["namespaces"] = [{"type": "pid"}]
    c["linux"].pop("maskedPaths", None)
    c["linux"].pop("readonlyPaths", None)


def test_no_mount_namespace_shares_the_callers_filesystem_like_runc():
    """No mount namespace is allowed (runc: the container then shares the caller's
    filesystem, and its mounts are not set up)..."""
    c = cfg()
    without_mount_namespace(c)
    S.check_supported(S.parse(c))


@pytest.mark.parametrize("mutate, field", [
    (lambda c: c["linux"].update(maskedPaths=["/proc/kcore"]), "linux.maskedPaths"),
    (lambda c: c["linux"].update(readonlyPaths=["/proc/sys"]), "linux.readonlyPaths"),
    (lambda c: c["root"].update(readonly=True), "root.readonly"),
    (lambda c: c["linux"].update(rootfsPropagation="rslave"), "linux.rootfsPropagation"),
    (lambda c: c["process"].update(terminal=True), "process.terminal"),
])
def test_no_mount_namespace_refuses_what_would_change_the_callers_mounts(mutate, field):
    """...but what would change the caller's own mounts is refused, naming the field (runc:
    "unable to restrict sys entries without a private MNT namespace")."""
    c = cfg()
    without_mount_namespace(c)
    mutate(c)
    with pytest.raises(InvalidSpec) as e:
        S.check_supported(S.parse(c))
    assert e.value.field == field and "mount namespace" in str(e.value)


def test_load_errors(tmp_path):
    with pytest.raises(InvalidSpec, match="cannot read"):
        S.load(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(InvalidSpec, match="not valid JSON"):
        S.load(str(tmp_path / "bad.json"))
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(InvalidSpec, match="expected object"):
        S.load(str(tmp_path / "list.json"))
    (tmp_path / "ok.json").write_text(json.dumps(cfg()))
    assert S.load(str(tmp_path / "ok.json")).hostname == "box"


def test_parse_does_not_modify_its_input():
    c = cfg()
    before = copy.deepcopy(c)
    S.parse(c)
    assert c == before


def test_root_path_is_relative_to_the_bundle():
    s = S.parse(cfg())
    assert S.root_path(s, "/b") == "/b/rootfs"
    s.root.path = "/abs/root"
    assert S.root_path(s, "/b") == "/abs/root"
