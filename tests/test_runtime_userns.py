"""User namespaces without a container: the spec's rules for mappings, the mount plan's answers
to a user namespace (devices bound from the host, sysfs without a network namespace), the
locked-flags retry, the parent's mapping writes, and the order in which the intermediate
enters namespaces, on the fake syscall layer."""

import errno
import json

import pytest
from test_runtime_console import pair  # noqa: F401 - a SEQPACKET socketpair

from runtime import executor, launch, namespaces
from runtime import spec as S
from runtime.errors import ContainerSetupError, InvalidSpec
from runtime.mounts import HostInfo, MakeDevice, Mount, plan_rootfs
from runtime.specgen import default_config
from runtime.sys.consts import (CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID,
                                CLONE_NEWUSER, CLONE_NEWUTS, MS_BIND, MS_NODEV, MS_NOEXEC,
                                MS_NOSUID, MS_RDONLY, MS_REC, MS_RELATIME, MS_REMOUNT,
                                MS_STRICTATIME)
from runtime.sys.fake import FakeSys

R = "/b/rootfs"
MAP = [{"containerID": 0, "hostID": 100000, "size": 65536}]


def config(mutate=None, user_ns=True) -> dict:
    c = default_config(["sh"])
    if user_ns:
        c["linux"]["namespaces"].append({"type": "user"})
        c["linux"]["uidMappings"] = [dict(m) for m in MAP]
        c["linux"]["gidMappings"] = [dict(m) for m in MAP]
    if mutate:
        mutate(c)
    return c


def parse(mutate=None, **kw) -> S.Spec:
    return S.parse(config(mutate, **kw))


# --- the spec --------------------------------------------------------------------------------
def test_a_new_user_namespace_with_mappings_is_supported():
    s = parse()
    S.check_supported(s)
    assert s.linux.uid_mappings == [S.IDMapping(0, 100000, 65536)]


@pytest.mark.parametrize("mutate, field", [
    (lambda c: c["linux"].pop("uidMappings"), "linux.uidMappings"),
    (lambda c: c["linux"].update(gidMappings=[]), "linux.gidMappings"),
    (lambda c: c["linux"]["uidMappings"][0].update(size=0), "linux.uidMappings[0].size"),
    (lambda c: c["linux"]["uidMappings"][0].update(hostID=2**32 - 10),
     "linux.uidMappings[0].hostID"),
    (lambda c: c["linux"]["gidMappings"].append({"containerID": 65535, "hostID": 0, "size": 1}),
     "linux.gidMappings[1].containerID"),  # overlaps inside
    (lambda c: c["linux"]["gidMappings"].append({"containerID": 70000, "hostID": 100001,
                                                  "size": 1}),
     "linux.gidMappings[1].hostID"),  # overlaps outside
    (lambda c: c["linux"].update(uidMappings=[
        {"containerID": i, "hostID": 1000 + i, "size": 1} for i in range(341)]),
     "linux.uidMappings"),
])
def test_bad_mappings_are_invalid_specs_naming_the_field(mutate, field):
    with pytest.raises(InvalidSpec) as e:
        parse(mutate)
    assert e.value.field == field


def test_the_whole_id_space_maps():
    parse(lambda c: c["linux"].update(uidMappings=[
        {"containerID": 0, "hostID": 0, "size": 2**32 - 1}]))


@pytest.mark.parametrize("user, field", [
    ({"uid": 70000, "gid": 0}, "process.user.uid"),
    ({"uid": 0, "gid": 65536}, "process.user.gid"),
    ({"uid": 0, "gid": 0, "additionalGids": [10, 100000]}, "process.user.additionalGids[1]"),
])
def test_the_process_ids_must_be_mapped(user, field):
    s = parse(lambda c: c["process"].update(user=user))
    with pytest.raises(InvalidSpec) as e:
        S.check_supported(s)
    assert e.value.field == field


def test_a_joined_user_namespace_needs_no_mappings():
    def join(c):
        c["linux"]["namespaces"][-1]["path"] = "/proc/1/ns/user"
        del c["linux"]["uidMappings"], c["linux"]["gidMappings"]
    s = parse(join)
    S.check_supported(s)  # its mappings are the kernel's to check
    S.check_process_ids(S.parse_process({"args": ["x"], "cwd": "/",
                                         "user": {"uid": 4242, "gid": 0}}), s)


# --- the plan --------------------------------------------------------------------------------
def test_devices_are_the_hosts_bound_in():
    def device(c):
        c["linux"]["devices"] = [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}]
    ops = plan_rootfs(parse(device), R, "/b", HostInfo())
    assert not [op for op in ops if isinstance(op, MakeDevice)]
    binds = [op for op in ops if isinstance(op, Mount) and op.target.startswith("/dev/")
             and op.flags == MS_BIND]
    assert binds == [Mount(p, p, None, MS_BIND, create="source")
                     for p in ("/dev/null", "/dev/zero", "/dev/full", "/dev/random",
                               "/dev/urandom", "/dev/tty", "/dev/fuse")]
    plain = plan_rootfs(parse(device, user_ns=False), R, "/b", HostInfo())
    assert MakeDevice("/dev/fuse", "c", 10, 229) in plain


def test_sysfs_without_a_network_namespace_is_the_hosts_read_only():
    def no_netns(c):
        c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"]
                                    if n["type"] != "network"]
    sysfs = lambda ops: [op for op in ops if getattr(op, "target", None) == "/sys"]  # noqa: E731
    flags = MS_NOSUID | MS_NOEXEC | MS_NODEV | MS_RDONLY
    assert sysfs(plan_rootfs(parse(no_netns), R, "/b", HostInfo())) == [
        Mount("/sys", "/sys", None, MS_BIND | MS_REC, create="source"),
        Mount(None, "/sys", None, flags | MS_REMOUNT | MS_BIND),
    ]
    for spec in (parse(), parse(no_netns, user_ns=False)):  # its own netns, or no userns
        assert sysfs(plan_rootfs(spec, R, "/b", HostInfo())) == [
            Mount("sysfs", "/sys", "sysfs", flags, create="dir")]


# --- the locked-flags retry ------------------------------------------------------------------
class Locked(FakeSys):
    """A bind remount is refused unless it keeps nosuid and nodev (the locked flags)."""

    def mount(self, source, target, fstype, flags, data=None):
        if flags & MS_REMOUNT and flags & MS_BIND and (flags & (MS_NOSUID | MS_NODEV)
                                                      != MS_NOSUID | MS_NODEV):
            self.calls.append(("refused", flags))
            raise OSError(errno.EPERM, f"mount on {target}: Operation not permitted")
        super().mount(source, target, fstype, flags, data)


def test_a_refused_bind_remount_is_retried_with_the_locked_flags():
    f = Locked()
    f.flags_of["/data"] = MS_NOSUID | MS_NODEV | MS_RELATIME
    executor.apply([Mount(None, "/data", None, MS_RDONLY | MS_REMOUNT | MS_BIND)], "/", f)
    want = MS_RDONLY | MS_REMOUNT | MS_BIND
    assert f.calls == [("refused", want),
                       ("mount", None, "/data", None, want | MS_NOSUID | MS_NODEV | MS_RELATIME,
                        None)]


def test_a_locked_atime_that_differs_from_the_asked_one_stays_an_error():
    f = Locked()
    f.flags_of["/data"] = MS_NOSUID | MS_NODEV | MS_RELATIME
    with pytest.raises(ContainerSetupError) as e:
        executor.apply([Mount(None, "/data", None, MS_STRICTATIME | MS_REMOUNT | MS_BIND)],
                       "/", f)
    assert (e.value.step, e.value.path) == ("mount", "/data")
    assert [c[0] for c in f.calls] == ["refused"]


def test_other_mount_failures_are_not_retried():
    f = FakeSys()
    f.fail[("mount", "tmpfs")] = errno.EPERM
    with pytest.raises(ContainerSetupError):
        executor.apply([Mount("tmpfs", "/x", "tmpfs", 0)], "/", f)
    assert f.calls == []


# --- the parent writes the mappings ----------------------------------------------------------
def test_the_parent_writes_both_maps_in_one_write_each():
    f = FakeSys()
    lx = parse(lambda c: c["linux"]["uidMappings"].append(
        {"containerID": 65536, "hostID": 1000, "size": 1})).linux
    namespaces.write_id_mappings(42, lx, f, privileged=True)
    assert f.calls == [("write_file", "/proc/42/uid_map", "0 100000 65536\n65536 1000 1\n"),
                       ("write_file", "/proc/42/gid_map", "0 100000 65536\n")]
    f = FakeSys()
    namespaces.write_id_mappings(42, lx, f, privileged=False)  # setgroups denied first
    assert f.calls[0] == ("write_file", "/proc/42/setgroups", "deny")


def test_a_refused_mapping_is_typed():
    f = FakeSys()
    f.fail[("write_file", "/proc/42/gid_map")] = errno.EPERM
    with pytest.raises(ContainerSetupError) as e:
        namespaces.write_id_mappings(42, parse().linux, f, privileged=True)
    assert (e.value.step, e.value.path) == ("user namespace", "/proc/42/gid_map")


# --- the intermediate's order ----------------------------------------------------------------
def test_a_new_user_namespace_is_unshared_alone_and_mapped_first(pair):
    parent, child = pair
    parent.send(json.dumps({"type": "idmap-done"}).encode())  # the parent's answer, queued
    f = FakeSys()
    launch._enter_namespaces(parse(), child, f)
    assert json.loads(parent.recv(100)) == {"type": "idmap"}
    rest = CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNS | CLONE_NEWNET
    assert f.calls == [("unshare", CLONE_NEWUSER),
                       ("setresgid", 0), ("setgroups", []), ("setresuid", 0),
                       ("unshare", rest)]


def test_no_mapping_no_container(pair):
    parent, child = pair
    parent.send(json.dumps({"type": "error"}).encode())
    f = FakeSys()
    with pytest.raises(ContainerSetupError) as e:
        launch._enter_namespaces(parse(), child, f)
    assert e.value.step == "user namespace"
    assert f.calls == [("unshare", CLONE_NEWUSER)]


def test_joined_namespaces_come_first_then_the_new_user_namespace(pair, tmp_path):
    parent, child = pair
    parent.send(json.dumps({"type": "idmap-done"}).encode())
    net = tmp_path / "net"
    net.write_text("")

    def join_net(c):
        next(n for n in c["linux"]["namespaces"] if n["type"] == "network")["path"] = str(net)
    f = FakeSys()
    launch._enter_namespaces(parse(join_net), child, f)
    names = [c[0] for c in f.calls]
    assert names[:2] == ["setns_fd", "unshare"] and f.calls[0][2] == CLONE_NEWNET
    assert f.calls[1] == ("unshare", CLONE_NEWUSER)


def test_a_missing_namespace_path_is_typed(pair):
    _, child = pair

    def join(c):
        c["linux"]["namespaces"][-1]["path"] = "/nonexistent/ns/user"
        del c["linux"]["uidMappings"], c["linux"]["gidMappings"]
    with pytest.raises(ContainerSetupError) as e:
        launch._enter_namespaces(parse(join), child, FakeSys())
    assert (e.value.step, e.value.path) == ("namespaces", "/nonexistent/ns/user")
