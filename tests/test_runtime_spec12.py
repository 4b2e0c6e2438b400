"""The runtime-spec 1.0.2-1.2 fields: process.scheduler, process.ioPriority,
linux.personality, the LSM fields, linux.intelRdt, linux.timeOffsets, the "rro" mount options
(and the refused idmapped ones), linux.netDevices: validation naming the field, and what the
init and the executor do with them through the fake syscall object."""

import pytest
from test_runtime_spec import DELETE, cfg, field_of  # noqa: F401

from runtime import executor, init, launch
from runtime import mounts as M
from runtime import spec as S
from runtime.errors import ContainerSetupError, InvalidSpec
from runtime.sys.fake import FakeSys


def with_process(**fields):
    c = cfg()
    c["process"].update(fields)
    return c


def with_linux(**fields):
    c = cfg()
    c["linux"].update(fields)
    return c


def refused(c) -> InvalidSpec:
    with pytest.raises(InvalidSpec) as e:
        S.check_supported(S.parse(c))
    return e.value


# --- process.scheduler -----------------------------------------------------------------------
def test_scheduler_parses_to_the_kernels_numbers():
    p = S.parse(with_process(scheduler={"policy": "SCHED_FIFO", "priority": 10, "nice": 0,
                                        "flags": ["SCHED_FLAG_RESET_ON_FORK"]})).process
    assert p.scheduler == S.Scheduler(1, 0, 10, 0x01)
    dl = S.parse(with_process(scheduler={"policy": "SCHED_DEADLINE", "runtime": 10**6,
                                         "deadline": 2 * 10**6, "period": 4 * 10**6}))
    assert dl.process.scheduler == S.Scheduler(6, 0, 0, 0, 10**6, 2 * 10**6, 4 * 10**6)


@pytest.mark.parametrize("sched,field", [
    ({}, "process.scheduler.policy"),
    ({"policy": "SCHED_NOPE"}, "process.scheduler.policy"),
    ({"policy": "SCHED_ISO"}, "process.scheduler.policy"),
    ({"policy": "SCHED_OTHER", "nice": 20}, "process.scheduler.nice"),
    ({"policy": "SCHED_OTHER", "priority": 5}, "process.scheduler.priority"),
    ({"policy": "SCHED_RR", "priority": 0}, "process.scheduler.priority"),
    ({"policy": "SCHED_FIFO", "priority": 100}, "process.scheduler.priority"),
    ({"policy": "SCHED_OTHER", "runtime": 5}, "process.scheduler.runtime"),
    ({"policy": "SCHED_BATCH", "period": 5}, "process.scheduler.period"),
    ({"policy": "SCHED_DEADLINE", "runtime": 9, "deadline": 5}, "process.scheduler.runtime"),
    ({"policy": "SCHED_OTHER", "flags": ["SCHED_FLAG_X"]}, "process.scheduler.flags[0]"),
    ({"policy": "SCHED_OTHER", "flags": "x"}, "process.scheduler.flags"),
    ("fifo", "process.scheduler"),
])
def test_bad_schedulers_name_the_field(sched, field):
    assert field_of(with_process(scheduler=sched)) == field


# --- process.ioPriority ----------------------------------------------------------------------
def test_io_priority_parses_to_ioprio_value():
    p = S.parse(with_process(ioPriority={"class": "IOPRIO_CLASS_IDLE", "priority": 4})).process
    assert p.io_priority == S.IOPriority(3, 4) and p.io_priority.value() == 3 << 13 | 4


@pytest.mark.parametrize("io,field", [({"priority": 1}, "process.ioPriority.class"),
                                      ({"class": "RT"}, "process.ioPriority.class"),
                                      ({"class": "IOPRIO_CLASS_BE", "priority": 8},
                                       "process.ioPriority.priority"),
                                      ({"class": "IOPRIO_CLASS_BE", "priority": -1},
                                       "process.ioPriority.priority")])
def test_bad_io_priorities_name_the_field(io, field):
    assert field_of(with_process(ioPriority=io)) == field


# --- process.execCPUAffinity ------------------------------------------------------------------
def test_exec_cpu_affinity_parses_cpu_lists():
    p = S.parse(with_process(execCPUAffinity={"initial": "0-3,7", "final": "5"})).process
    assert p.exec_cpu_affinity == S.ExecCPUAffinity(frozenset({0, 1, 2, 3, 7}), frozenset({5}))
    for empty in ({}, {"initial": "", "final": ""}):
        assert S.parse(with_process(execCPUAffinity=empty)).process.exec_cpu_affinity is None
    only = S.parse(with_process(execCPUAffinity={"final": "1,1-2"})).process.exec_cpu_affinity
    assert only == S.ExecCPUAffinity(None, frozenset({1, 2}))


@pytest.mark.parametrize("aff,field", [({"initial": "x"}, "process.execCPUAffinity.initial"),
                                       ({"final": "3-1"}, "process.execCPUAffinity.final"),
                                       ({"final": "1,,2"}, "process.execCPUAffinity.final"),
                                       ({"final": " 1"}, "process.execCPUAffinity.final"),
                                       ({"final": "8192"}, "process.execCPUAffinity.final"),
                                       ({"initial": 1}, "process.execCPUAffinity.initial"),
                                       ("0-1", "process.execCPUAffinity")])
def test_bad_exec_cpu_affinities_name_the_field(aff, field):
    assert field_of(with_process(execCPUAffinity=aff)) == field


# --- linux.personality -----------------------------------------------------------------------
def test_personality_domains():
    assert S.parse(with_linux(personality={"domain": "LINUX32"})).linux.personality == 8
    assert S.parse(with_linux(personality={"domain": "LINUX"})).linux.personality == 0
    assert S.parse(cfg()).linux.personality is None
    assert field_of(with_linux(personality={"domain": "BSD"})) == "linux.personality.domain"
    assert field_of(with_linux(personality={})) == "linux.personality.domain"
    assert field_of(with_linux(personality={"domain": "LINUX", "flags": ["X"]})) == \
        "linux.personality.flags"


# --- LSMs and Intel RDT: this host has neither -------------------------------------------------
@pytest.mark.parametrize("where,key,field", [
    ("process", "apparmorProfile", "process.apparmorProfile"),
    ("process", "selinuxLabel", "process.selinuxLabel")])
def test_lsm_fields_are_refused_naming_the_field_when_set(monkeypatch, where, key, field):
    monkeypatch.setattr(S, "host_lsms", lambda: set())
    c = cfg()
    c[where][key] = ""
    S.check_supported(S.parse(c))  # empty: fine
    c[where][key] = "unconfined_u:system_r:container_t:s0"
    e = refused(c)
    assert e.field == field and "not enabled on this host" in str(e)
    monkeypatch.setattr(S, "host_lsms", lambda: {"apparmor", "selinux"})
    # applied where the host has the LSM: process profiles and labels by the init before
    # execve, the mount label as the context= option of the container's mounts
    S.check_supported(S.parse(c))


def test_a_mount_label_without_selinux_is_left_out_with_a_warning(monkeypatch):
    # crun's reading (runc 1.1.5 passes it to mount(2), which fails with EINVAL).
    from runtime import log
    warnings = []
    monkeypatch.setattr(log, "sink", lambda level, msg: warnings.append((level, msg)))
    monkeypatch.setattr(S, "host_lsms", lambda: set())
    c = cfg()
    c["linux"]["mountLabel"] = "system_u:object_r:container_file_t:s0:c1,c2"
    spec = S.parse(c)
    S.check_supported(spec)
    assert spec.linux.mount_label == ""
    assert warnings == [("warning", "linux.mountLabel: SELinux is not enabled on this host; "
                         "ignoring 'system_u:object_r:container_file_t:s0:c1,c2' "
                         "(as crun does)")]
    # with SELinux it stays, for the context= option of the container's mounts
    monkeypatch.setattr(S, "host_lsms", lambda: {"selinux"})
    spec = S.parse(c)
    S.check_supported(spec)
    assert spec.linux.mount_label == "system_u:object_r:container_file_t:s0:c1,c2"
    assert len(warnings) == 1


def test_an_exec_process_with_an_apparmor_profile_is_refused(monkeypatch):
    monkeypatch.setattr(S, "host_lsms", lambda: set())
    p = S.parse_process({"args": ["sh"], "cwd": "/", "apparmorProfile": "docker-default"})
    with pytest.raises(InvalidSpec) as e:
        S.check_process_supported(p)
    assert e.value.field == "process.apparmorProfile"


def test_intel_rdt_is_refused_naming_the_field(monkeypatch):
    monkeypatch.setattr(S, "_resctrl_mounted", lambda: False)
    e = refused(with_linux(intelRdt={"closID": "x", "l3CacheSchema": "L3:0=ff"}))
    assert e.field == "linux.intelRdt" and "resctrl" in str(e)
    assert field_of(with_linux(intelRdt="x")) == "linux.intelRdt"


# --- linux.timeOffsets -------------------------------------------------------------------------
def timens(c):
    c["linux"]["namespaces"].append({"type": "time"})
    return c


def test_time_offsets_parse_and_need_a_new_time_namespace():
    offsets = {"monotonic": {"secs": 86400, "nanosecs": 5}, "boottime": {"secs": -7}}
    s = S.parse(timens(with_linux(timeOffsets=offsets)))
    assert s.linux.time_offsets == {"monotonic": (86400, 5), "boottime": (-7, 0)}
    assert launch.time_offsets_text(s.linux.time_offsets) == \
        "boottime -7 0\nmonotonic 86400 5\n"
    assert field_of(with_linux(timeOffsets=offsets)) == "linux.timeOffsets"  # no time ns
    joined = with_linux(timeOffsets=offsets)
    joined["linux"]["namespaces"].append({"type": "time", "path": "/proc/1/ns/time"})
    assert field_of(joined) == "linux.timeOffsets"
    assert field_of(timens(with_linux(timeOffsets={"realtime": {"secs": 1}}))) == \
        "linux.timeOffsets.realtime"
    assert field_of(timens(with_linux(timeOffsets={"boottime": {"nanosecs": 10**9}}))) == \
        "linux.timeOffsets.boottime.nanosecs"


def test_the_intermediate_writes_the_offsets_right_after_unsharing():
    s = S.parse(timens(with_linux(timeOffsets={"monotonic": {"secs": 3}})))
    f = FakeSys()
    launch._enter_namespaces(s, None, f)
    assert f.ops("unshare", "write_file") == [
        ("unshare", sum(S.NAMESPACE_FLAGS[n.type] for n in s.linux.namespaces)),
        ("write_file", "/proc/self/timens_offsets", "monotonic 3 0\n")]


# --- mounts: rro, and the idmapped ones refused ------------------------------------------------
def test_rro_plans_a_recursive_read_only_setattr_after_the_bind(tmp_path):
    c = cfg()
    c["mounts"].append({"destination": "/data", "type": "bind", "source": "/srv",
                        "options": ["rbind", "rro", "nosuid"]})
    s = S.parse(c)
    ops = M.plan_rootfs(s, str(tmp_path / "rootfs"), str(tmp_path), M.HostInfo())
    i = ops.index(M.Mount("/srv", "/data", None, M.MS_BIND | M.MS_REC, create="source"))
    assert ops[i + 1:i + 3] == [
        M.Mount(None, "/data", None, M.MS_NOSUID | M.MS_REMOUNT | M.MS_BIND),
        M.SetAttr("/data", M.MOUNT_ATTR_RDONLY, 0)]
    assert M.parse_mount_options(["rro", "rrw"]).attr_clr == M.MOUNT_ATTR_RDONLY


def test_the_executor_applies_setattr_recursively_inside_the_rootfs(tmp_path):
    rootfs = tmp_path / "rootfs"
    (rootfs / "data").mkdir(parents=True)
    f = FakeSys()
    executor.apply([M.SetAttr("/data", M.MOUNT_ATTR_RDONLY)], str(rootfs), f)
    assert f.ops("mount_setattr") == [("mount_setattr", str(rootfs / "data"), 1, 0, True)]
    f.fail[("mount_setattr", str(rootfs / "data"))] = 38
    with pytest.raises(ContainerSetupError) as e:
        executor.apply([M.SetAttr("/data", M.MOUNT_ATTR_RDONLY)], str(rootfs), f)
    assert (e.value.step, e.value.path) == ("mount_setattr", "/data")


# --- idmapped mounts (runtime-spec 1.1/1.2) ----------------------------------------------------
MAP = [{"containerID": 0, "hostID": 1000, "size": 1}]


def _with_bind(c, **mount):
    c["mounts"].append({"destination": "/data", "type": "bind", "source": "/srv",
                        "options": ["rbind"], **mount})
    return f"mounts[{len(c['mounts']) - 1}]"


@pytest.mark.parametrize("opt", ["idmap", "ridmap"])
def test_an_idmap_option_without_mappings_needs_the_containers(opt):
    c = cfg()
    p = _with_bind(c, options=["rbind", opt])
    assert refused(c).field == f"{p}.uidMappings"  # no user namespace mappings to take
    c["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    c["linux"]["namespaces"].append({"type": "user"})
    S.check_supported(S.parse(c))  # the container's mappings then


def test_idmapped_mounts_are_binds_with_both_mappings():
    c = cfg()
    p = _with_bind(c, uidMappings=MAP, gidMappings=MAP)
    spec = S.parse(c)
    S.check_supported(spec)
    m = spec.mounts[-1]
    assert m.idmapped() and m.uid_mappings[0].host_id == 1000
    c["mounts"][-1].pop("gidMappings")
    assert refused(c).field == f"{p}.gidMappings"
    c["mounts"][-1].update(type="tmpfs", options=["idmap"], gidMappings=MAP)
    assert refused(c).field == f"{p}.type"
    c["mounts"][-1].update(type="bind", uidMappings=[{"containerID": 0, "hostID": 1}])
    assert field_of(c) == f"{p}.uidMappings[0].size"


def test_an_idmapped_bind_is_planned_as_one_move_then_its_options():
    from runtime.mounts import IdmapBind
    c = cfg()
    _with_bind(c, options=["rbind", "ro", "ridmap"], uidMappings=MAP, gidMappings=MAP)
    spec = S.parse(c)
    ops = M.plan_rootfs(spec, "/b/rootfs", "/b", M.HostInfo())
    i = len(spec.mounts) - 1
    k = ops.index(IdmapBind(i, "/srv", "/data"))
    assert ops[k + 1] == M.Mount(None, "/data", None, M.MS_RDONLY | M.MS_REMOUNT | M.MS_BIND)
    assert not any(isinstance(op, M.Mount) and op.target == "/data" and op.source
                   for op in ops)  # no plain bind of it, and "ridmap" is no data string


def test_idmap_recursion_follows_the_options():
    from runtime import idmap
    assert [idmap.recursive(S.Mount("/d", "bind", "/s", o))
            for o in (["rbind", "ridmap"], ["rbind", "idmap"], ["rbind"], ["bind"])] == \
        [True, False, True, False]


# --- linux.netDevices --------------------------------------------------------------------------
def test_net_devices_parse_with_their_container_names():
    s = S.parse(with_linux(netDevices={"eth1": {"name": "net0"}, "eth2": {}}))
    assert s.linux.net_devices == {"eth1": "net0", "eth2": "eth2"}


@pytest.mark.parametrize("devices,field", [
    ({"eth1": {"name": "a" * 16}}, "linux.netDevices.eth1.name"),
    ({"bad/name": {}}, "linux.netDevices.bad/name"),
    ({"eth1": {"name": "x"}, "eth2": {"name": "x"}}, "linux.netDevices.eth2.name"),
    ({"eth1": "net0"}, "linux.netDevices.eth1"),
    ({"eth1": {"name": 3}}, "linux.netDevices.eth1.name")])
def test_bad_net_devices_name_the_field(devices, field):
    assert field_of(with_linux(netDevices=devices)) == field


def test_net_devices_need_a_network_namespace():
    c = with_linux(netDevices={"eth1": {}})
    c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "network"]
    assert field_of(c) == "linux.netDevices"


def test_pyroute2_is_not_imported_to_parse_or_plan():
    import sys
    S.parse(with_linux(netDevices={"eth1": {}}))
    assert "pyroute2" not in sys.modules


# --- the init: scheduler, ioPriority, personality through the syscall object ---------------------
def test_prepare_process_sets_scheduler_then_io_priority_after_the_rlimits(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "sh").write_text("")
    (tmp_path / "bin" / "sh").chmod(0o755)
    p = S.parse(with_process(scheduler={"policy": "SCHED_RR", "priority": 3},
                             ioPriority={"class": "IOPRIO_CLASS_BE", "priority": 2},
                             rlimits=[{"type": "RLIMIT_RTPRIO", "soft": 5, "hard": 5}],
                             env=["PATH=/bin"])).process
    f = FakeSys()
    f.root = str(tmp_path)
    init.prepare_process(p, f)
    assert f.ops("setrlimit", "sched_setattr", "ioprio_set") == [
        ("setrlimit", "RLIMIT_RTPRIO", 5, 5), ("sched_setattr", 2, 0, 0, 3, 0, 0, 0),
        ("ioprio_set", 2 << 13 | 2)]


def test_a_refused_scheduler_is_a_setup_error_at_create(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "sh").write_text("")
    (tmp_path / "bin" / "sh").chmod(0o755)
    p = S.parse(with_process(scheduler={"policy": "SCHED_FIFO", "priority": 1},
                             env=["PATH=/bin"])).process
    f = FakeSys()
    f.root = str(tmp_path)
    f.fail[("sched_setattr", "")] = 1
    with pytest.raises(ContainerSetupError) as e:
        init.prepare_process(p, f)
    assert e.value.step == "scheduler"


def test_lsm_profile_and_label_are_set_for_the_next_exec_right_before_it():
    from runtime import init as I
    from runtime.sys.fake import FakeSys
    p = S.parse_process({"args": ["sh"], "cwd": "/", "apparmorProfile": "docker-default",
                         "selinuxLabel": "system_u:system_r:container_t:s0"})
    f = FakeSys()
    I.become(p, f, I.Prepared("/bin/sh", {}))
    calls = f.calls
    writes = [c for c in calls if c[0] == "write_file"]
    assert writes[0][2] == "exec docker-default" and writes[0][1].startswith("/proc/thread-self/attr/")
    assert writes[1] == ("write_file", "/proc/thread-self/attr/exec",
                         "system_u:system_r:container_t:s0")
    assert calls[-1][0] == "execve" and calls.index(writes[1]) > calls.index(
        next(c for c in calls if c[0] == "reset_signals"))
