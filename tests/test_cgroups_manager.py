"""V1Manager and V2Manager against a fake cgroupfs in tmp_path: every operation is recorded,
new directories are populated the way the kernel would, and failures can be injected."""

import errno
import os
import signal

import pytest

from runtime.cgroups import CgroupError, CgroupFS, V1Manager, V2Manager, parse_mountinfo
from runtime.cgroups import manager as make_manager
from runtime.cgroups import v2 as v2mod
from runtime.cgroups.plan import DeviceRule
from runtime.errors import InvalidSpec

V1_FILES = {
    "cpu,cpuacct": {"cpu.shares": "1024", "cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "-1",
                    "cpu.cfs_burst_us": "0", "cpu.idle": "0", "cpu.rt_period_us": "1000000",
                    "cpu.rt_runtime_us": "0", "cpu.stat": "", "cpuacct.usage": "0",
                    "cpuacct.usage_percpu": "", "cpuacct.stat": ""},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "memory": {"memory.limit_in_bytes": "9223372036854771712",
               "memory.memsw.limit_in_bytes": "9223372036854771712",
               "memory.soft_limit_in_bytes": "9223372036854771712", "memory.swappiness": "60",
               "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
               "memory.usage_in_bytes": "0", "memory.max_usage_in_bytes": "0",
               "memory.failcnt": "0", "memory.stat": "", "cgroup.event_control": "",
               "memory.memsw.usage_in_bytes": "0", "memory.memsw.max_usage_in_bytes": "0",
               "memory.memsw.failcnt": "0"},
    "devices": {"devices.allow": "", "devices.deny": "", "devices.list": "a *:* rwm"},
    "freezer": {"freezer.state": "THAWED"},
    "pids": {"pids.max": "max", "pids.current": "0"},
    "blkio": {"blkio.bfq.weight": "100", "blkio.bfq.weight_device": "",
              "blkio.throttle.read_bps_device": "", "blkio.throttle.io_service_bytes_recursive": "",
              "blkio.throttle.io_serviced_recursive": ""},
    "systemd": {},
}
V2_CONTROLLERS = "cpuset cpu io memory pids hugetlb"
V2_FILES = {
    "": {"cgroup.procs": "", "cgroup.controllers": "", "cgroup.subtree_control": "",
         "cgroup.freeze": "0", "cgroup.events": "populated 0\nfrozen 0\n", "cgroup.kill": "",
         "cpu.stat": "usage_usec 0\n"},
    "cpu": {"cpu.weight": "100", "cpu.max": "max 100000", "cpu.max.burst": "0", "cpu.idle": "0"},
    "memory": {"memory.max": "max", "memory.low": "0", "memory.high": "max",
               "memory.swap.max": "max",
               "memory.current": "0", "memory.stat": "", "memory.events": "oom 0\noom_kill 0\n"},
    "io": {"io.weight": "default 100", "io.max": "", "io.stat": ""},
    "pids": {"pids.max": "max", "pids.current": "0"},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "hugetlb": {"hugetlb.2MB.max": "max", "hugetlb.2MB.current": "0",
                "hugetlb.2MB.events": "max 0\n"},
}


class FakeFS(CgroupFS):
    """Records ("write"|"mkdir"|"rmdir", path relative to the tree, value); populates new
    directories; `fail[(op, relpath)]` is a list of errnos raised by the next calls."""

    def __init__(self, root, version):
        self.root, self.version, self.log, self.fail = str(root), version, [], {}

    def rel(self, path):
        return os.path.relpath(path, self.root)

    def _maybe_fail(self, op, path):
        errs = self.fail.get((op, self.rel(path)))
        if errs:
            e = errs.pop(0)
            raise OSError(e, os.strerror(e), path)

    def populate(self, d, files):
        for name, content in files.items():
            with open(os.path.join(d, name), "w") as f:
                f.write(content)

    def write(self, path, value):
        self._maybe_fail("write", path)
        if not os.path.isfile(path):
            raise FileNotFoundError(errno.ENOENT, "No such file", path)
        self.log.append(("write", self.rel(path), value))
        name = os.path.basename(path)
        if name == "cgroup.subtree_control":  # the kernel merges "+x" into the set
            enabled = set(open(path).read().split()) | {c[1:] for c in value.split()}
            value = " ".join(sorted(enabled))
        if name == "cgroup.freeze":  # an empty fake cgroup freezes at once
            events = f"populated 0\nfrozen {value}\n"
            self.populate(os.path.dirname(path), {"cgroup.events": events})
        with open(path, "w") as f:
            f.write(value)

    def mkdir(self, path):
        self._maybe_fail("mkdir", path)
        created = super().mkdir(path)
        if created:
            self.log.append(("mkdir", self.rel(path), None))
            self.populate(path, {"cgroup.procs": ""})
            if self.version == 1:
                self.populate(path, V1_FILES[self.rel(path).split("/")[0]])
            else:
                enabled = open(os.path.join(os.path.dirname(path), "cgroup.subtree_control")).read()
                self.populate(path, dict(V2_FILES[""], **{"cgroup.controllers": enabled}))
                for c in enabled.split():
                    self.populate(path, V2_FILES[c])
        return created

    def rmdir(self, path):
        self._maybe_fail("rmdir", path)
        if any(os.path.isdir(os.path.join(path, n)) for n in os.listdir(path)):
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), path)  # as the kernel's
        for name in os.listdir(path):  # the kernel's files go with the directory
            if os.path.isfile(os.path.join(path, name)):
                os.unlink(os.path.join(path, name))
        os.rmdir(path)
        self.log.append(("rmdir", self.rel(path), None))

    def writes(self, prefix=""):
        return [(p, v) for op, p, v in self.log if op == "write" and p.startswith(prefix)]


# --- v1 -------------------------------------------------------------------------------------------

@pytest.fixture
def v1(tmp_path):
    lines = []
    for i, name in enumerate(V1_FILES):
        mnt = tmp_path / name
        mnt.mkdir()
        opts = "name=systemd" if name == "systemd" else name
        lines.append(f"{30 + i} 20 0:{40 + i} / {mnt} rw - cgroup cgroup rw,{opts}")
    fs = FakeFS(tmp_path, 1)
    for name, files in V1_FILES.items():
        fs.populate(tmp_path / name, {k: v for k, v in files.items() if k != "freezer.state"})
    fs.populate(tmp_path / "cpuset", {"cpuset.cpus": "0-3", "cpuset.mems": "0"})
    fs.populate(tmp_path / "cpu,cpuacct", {"cgroup.procs": ""})
    h = parse_mountinfo("\n".join(lines))
    kills = []
    m = make_manager("/default/ctr", "ctr", h, fs=fs, kill=lambda p, s: kills.append((p, s)))
    assert isinstance(m, V1Manager)
    m.kills = kills
    return m, fs, tmp_path


def test_v1_create_makes_each_hierarchy_once_and_fills_cpuset_on_the_way(v1):
    m, fs, root = v1
    m.create()
    mkdirs = [p for op, p, _ in fs.log if op == "mkdir"]
    expected = [f"{c}/{p}" for c in V1_FILES for p in ("default", "default/ctr")]
    assert sorted(mkdirs) == sorted(expected)
    assert fs.writes("cpuset") == [("cpuset/default/cpuset.cpus", "0-3"),
                                   ("cpuset/default/cpuset.mems", "0"),
                                   ("cpuset/default/ctr/cpuset.cpus", "0-3"),
                                   ("cpuset/default/ctr/cpuset.mems", "0")]
    assert m.exists()
    m.create()  # idempotent: nothing new, cpuset already filled
    assert len([1 for op, _, _ in fs.log if op == "mkdir"]) == len(mkdirs)


def test_v1_create_does_not_overwrite_a_configured_cpuset(v1):
    m, fs, root = v1
    (root / "cpuset/default").mkdir()
    fs.populate(root / "cpuset/default", {"cpuset.cpus": "1", "cpuset.mems": "0"})
    m.create()
    assert fs.writes("cpuset") == [("cpuset/default/ctr/cpuset.cpus", "1"),
                                   ("cpuset/default/ctr/cpuset.mems", "0")]


def test_v1_create_failure_removes_what_it_created(v1):
    m, fs, root = v1
    fs.fail[("mkdir", "pids/default/ctr")] = [errno.ENOSPC]
    with pytest.raises(CgroupError, match="pids/default/ctr"):
        m.create()
    created = [p for op, p, _ in fs.log if op == "mkdir"]
    removed = [p for op, p, _ in fs.log if op == "rmdir"]
    assert sorted(created) == sorted(removed) and created
    assert not m.exists()


def test_v1_apply_writes_the_pid_in_every_hierarchy_retrying_einval(v1):
    m, fs, root = v1
    m.create()
    fs.fail[("write", "memory/default/ctr/cgroup.procs")] = [errno.EINVAL]
    m.apply(4242)
    procs = [p for p, v in fs.writes() if p.endswith("cgroup.procs") and v == "4242"]
    assert len(procs) == len(V1_FILES)  # cpu,cpuacct is one directory
    assert fs.fail[("write", "memory/default/ctr/cgroup.procs")] == []  # the EINVAL was retried
    assert (root / "memory/default/ctr/cgroup.procs").read_text() == "4242"


def test_v1_set_runs_the_plan_with_bfq_fallback(v1):
    m, fs, root = v1
    m.create()
    fs.log.clear()
    m.set({"memory": {"limit": 1 << 20, "swap": 2 << 20}, "pids": {"limit": 10},
           "cpu": {"shares": 512, "cpus": "1"}, "blockIO": {"weight": 300},
           "devices": [{"allow": False, "access": "rwm"},
                       {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]})
    d = "default/ctr"
    assert fs.writes() == [
        (f"cpuset/{d}/cpuset.cpus", "1"),
        (f"devices/{d}/devices.deny", "a"), (f"devices/{d}/devices.deny", "a"),
        (f"devices/{d}/devices.allow", "c 1:3 rwm"),
        (f"memory/{d}/memory.limit_in_bytes", "1048576"),
        (f"memory/{d}/memory.memsw.limit_in_bytes", "2097152"),
        (f"cpu,cpuacct/{d}/cpu.shares", "512"),
        (f"pids/{d}/pids.max", "10"),
        (f"blkio/{d}/blkio.bfq.weight", "300")]  # blkio.weight is missing: the BFQ file


def test_v1_set_reads_the_live_limit_to_order_memsw(v1):
    m, fs, root = v1
    m.create()
    fs.populate(root / "memory/default/ctr", {"memory.limit_in_bytes": "1000"})
    fs.log.clear()
    m.set({"memory": {"limit": 2000, "swap": 4000}})
    assert [p.split("/")[-1] for p, _ in fs.writes()] == [
        "memory.memsw.limit_in_bytes", "memory.limit_in_bytes"]


def test_v1_optional_write_skipped_when_swap_accounting_is_absent(v1):
    m, fs, root = v1
    m.create()
    os.unlink(root / "memory/default/ctr/memory.memsw.limit_in_bytes")
    fs.log.clear()
    m.set({"memory": {"limit": -1}})
    assert fs.writes() == [("memory/default/ctr/memory.limit_in_bytes", "-1")]


def test_v1_period_refused_with_einval_is_retried_after_quota(v1):
    m, fs, root = v1
    m.create()
    fs.fail[("write", "cpu,cpuacct/default/ctr/cpu.cfs_period_us")] = [errno.EINVAL]
    fs.log.clear()
    m.set({"cpu": {"quota": 5000, "period": 10000}})
    assert [(p.split("/")[-1], v) for p, v in fs.writes()] == [
        ("cpu.cfs_quota_us", "5000"), ("cpu.cfs_period_us", "10000")]


def test_v1_failed_write_names_file_and_field(v1):
    m, fs, root = v1
    m.create()
    fs.fail[("write", "pids/default/ctr/pids.max")] = [errno.EINVAL]
    with pytest.raises(CgroupError) as e:
        m.set({"pids": {"limit": 3}})
    assert e.value.field == "linux.resources.pids.limit" and e.value.errno == errno.EINVAL
    assert "pids.max" in str(e.value) and "'3'" in str(e.value)


def test_v1_requested_but_unmounted_controller_names_the_field_and_writes_nothing(v1):
    m, fs, root = v1
    m.create()
    fs.log.clear()
    with pytest.raises(InvalidSpec, match="hugetlb cgroup controller") as e:
        m.set({"pids": {"limit": 3}, "hugepageLimits": [{"pageSize": "2MB", "limit": 0}]})
    assert e.value.field == "linux.resources.hugepageLimits[0].limit"
    assert fs.writes() == []
    with pytest.raises(InvalidSpec) as e:
        m.set({"network": {"classID": 1}})
    assert e.value.field == "linux.resources.network.classID"


def test_v1_pids_are_read_recursively(v1):
    m, fs, root = v1
    m.create()
    (root / "freezer/default/ctr/sub").mkdir()
    fs.populate(root / "freezer/default/ctr", {"cgroup.procs": "10\n11\n"})
    fs.populate(root / "freezer/default/ctr/sub", {"cgroup.procs": "12\n"})
    assert m.pids() == [10, 11, 12]


def test_v1_freeze_polls_through_freezing_and_thaw(v1, monkeypatch):
    m, fs, root = v1
    m.create()
    reads = iter(["FREEZING", "FREEZING", "FROZEN"])
    real_read = fs.read
    monkeypatch.setattr(fs, "read", lambda p: next(reads) if p.endswith("freezer.state")
                        else real_read(p))
    m.freeze()
    assert [v for p, v in fs.writes("freezer")] == ["FROZEN"] * 3
    monkeypatch.setattr(fs, "read", real_read)
    m.thaw()
    assert m.freezer_state() == "THAWED"


def test_v1_freeze_gives_up_thawed_when_stuck(v1, monkeypatch):
    m, fs, root = v1
    m.create()
    monkeypatch.setattr("runtime.cgroups.v1.FREEZE_TRIES", 5)
    real_read = fs.read
    monkeypatch.setattr(fs, "read", lambda p: "FREEZING" if p.endswith("freezer.state")
                        else real_read(p))
    with pytest.raises(CgroupError, match="stuck in FREEZING"):
        m.freeze()
    assert fs.writes("freezer")[-1][1] == "THAWED"


def test_v1_kill_all_freezes_signals_every_pid_then_thaws(v1):
    m, fs, root = v1
    m.create()
    fs.populate(root / "freezer/default/ctr", {"cgroup.procs": "7\n8\n"})
    fs.log.clear()
    m.kill_all(signal.SIGTERM)
    assert m.kills == [(7, signal.SIGTERM), (8, signal.SIGTERM)]
    assert [v for _, v in fs.writes("freezer")] == ["FROZEN", "THAWED"]


def test_v1_kill_all_keeps_a_paused_container_paused_unless_sigkill(v1):
    m, fs, root = v1
    m.create()
    m.freeze()
    m.kill_all(signal.SIGTERM)
    assert m.freezer_state() == "FROZEN"
    m.kill_all(signal.SIGKILL)
    assert m.freezer_state() == "THAWED"


def test_v1_stats(v1):
    m, fs, root = v1
    m.create()
    d = "default/ctr"
    fs.populate(root / f"memory/{d}", {"memory.usage_in_bytes": "4096",
                                       "memory.limit_in_bytes": "1048576",
                                       "memory.max_usage_in_bytes": "8192", "memory.failcnt": "2",
                                       "memory.stat": "cache 10\nrss 20\n"})
    fs.populate(root / f"cpu,cpuacct/{d}", {
        "cpuacct.usage": "5000", "cpuacct.usage_percpu": "3000 2000 ",
        "cpuacct.stat": "user 2\nsystem 1\n",
        "cpu.stat": "nr_periods 4\nnr_throttled 1\nthrottled_time 77\n"})
    fs.populate(root / f"pids/{d}", {"pids.current": "3", "pids.max": "max"})
    fs.populate(root / f"blkio/{d}", {"blkio.throttle.io_service_bytes_recursive":
                                      "8:0 Read 512\n8:0 Write 1024\nTotal 1536\n"})
    s = m.stats()
    hz = os.sysconf("SC_CLK_TCK")
    assert s["version"] == 1
    assert s["pids"] == {"current": 3, "limit": 0}
    assert s["memory"]["usage"] == {"usage": 4096, "limit": 1048576, "max": 8192, "failcnt": 2}
    assert s["memory"]["stat"] == {"cache": 10, "rss": 20}
    assert s["memory"]["swap"]["limit"] == 9223372036854771712
    assert s["cpu"] == {"usage": {"total": 5000, "per_cpu": [3000, 2000],
                                  "user": 2 * 10**9 // hz, "kernel": 10**9 // hz},
                        "throttling": {"periods": 4, "throttled_periods": 1, "throttled_time": 77}}
    assert s["blkio"]["io_service_bytes_recursive"] == [
        {"major": 8, "minor": 0, "op": "Read", "value": 512},
        {"major": 8, "minor": 0, "op": "Write", "value": 1024}]
    assert s["blkio"]["io_serviced_recursive"] == []
    assert "hugetlb" not in s


def test_v1_oom_eventfd_is_registered_through_event_control(v1):
    m, fs, root = v1
    m.create()
    efd = m.oom_event_fd()
    try:
        (path, value), = fs.writes("memory/default/ctr/cgroup.event_control")
        assert value.split()[0] == str(efd) and len(value.split()) == 2
        os.eventfd_write(efd, 1)  # it is a real eventfd
        assert os.eventfd_read(efd) == 1
    finally:
        os.close(efd)
    fs.populate(root / "memory/default/ctr", {"memory.oom_control": "under_oom 0\noom_kill 3\n"})
    assert m.oom_kill_count() == 3


def test_v1_destroy_removes_children_first_everywhere_retrying_ebusy(v1, monkeypatch):
    monkeypatch.setattr("runtime.cgroups.base.RMDIR_DELAYS", (0, 0))
    m, fs, root = v1
    m.create()
    (root / "memory/default/ctr/child").mkdir()
    fs.fail[("rmdir", "pids/default/ctr")] = [errno.EBUSY, errno.EBUSY]
    fs.log.clear()
    m.destroy()
    rmdirs = [p for op, p, _ in fs.log if op == "rmdir"]
    assert rmdirs.index("memory/default/ctr/child") < rmdirs.index("memory/default/ctr")
    assert not m.exists()
    assert (root / "memory/default").is_dir()  # the parent is not ours to remove
    m.destroy()  # already gone: fine


def test_v1_destroy_lists_a_cgroup_only_when_its_rmdir_fails(v1, monkeypatch):
    """The common case, no child cgroup: one rmdir a hierarchy, no directory listing."""
    m, fs, root = v1
    m.create()
    (root / "memory/default/ctr/child").mkdir()
    listed = []
    subdirs = fs.subdirs
    monkeypatch.setattr(fs, "subdirs", lambda d: listed.append(fs.rel(d)) or subdirs(d))
    m.destroy()
    assert listed == ["memory/default/ctr"]  # not even its child, removed by one rmdir
    assert not m.exists()


def test_v1_destroy_tries_every_hierarchy_then_reports(v1, monkeypatch):
    monkeypatch.setattr("runtime.cgroups.base.RMDIR_DELAYS", (0,))
    m, fs, root = v1
    m.create()
    fs.fail[("rmdir", "cpuset/default/ctr")] = [errno.EBUSY] * 5
    with pytest.raises(CgroupError, match="cpuset/default/ctr") as e:
        m.destroy()
    assert e.value.errno == errno.EBUSY
    assert [d for d in m.dirs() if os.path.exists(d)] == [str(root / "cpuset/default/ctr")]


# --- v2 -------------------------------------------------------------------------------------------

@pytest.fixture
def v2(tmp_path):
    mnt = tmp_path / "unified"
    mnt.mkdir()
    fs = FakeFS(mnt, 2)
    fs.populate(mnt, {"cgroup.controllers": V2_CONTROLLERS, "cgroup.subtree_control": "",
                      "cgroup.procs": "1\n"})
    h = parse_mountinfo(f"30 20 0:40 / {mnt} rw - cgroup2 cgroup2 rw\n")
    attached, kills = [], []
    m = make_manager("/default/ctr", "ctr", h, fs=fs, kill=lambda p, s: kills.append((p, s)),
                     attach_devices=lambda d, rules: attached.append((fs.rel(d), rules)))
    assert isinstance(m, V2Manager)
    m.attached, m.kills = attached, kills
    return m, fs, mnt


def test_v2_create_enables_controllers_in_ancestors_only(v2):
    m, fs, mnt = v2
    m.create()
    assert fs.log == [
        ("write", "cgroup.subtree_control", "+cpuset +cpu +io +memory +pids +hugetlb"),
        ("mkdir", "default", None),
        ("write", "default/cgroup.subtree_control", "+cpuset +cpu +io +memory +pids +hugetlb"),
        ("mkdir", "default/ctr", None)]
    assert m.controllers() == set(V2_CONTROLLERS.split())


def test_v2_create_with_nothing_to_enable_only_makes_dirs(v2):
    m, fs, mnt = v2
    m.create(enable=())
    assert [op for op, _, _ in fs.log] == ["mkdir", "mkdir"]


def test_v2_refused_enable_falls_back_one_by_one(v2):
    m, fs, mnt = v2
    real_write = fs.write

    def no_rdma(path, value):  # this "kernel" has no rdma controller
        if "rdma" in value:
            raise OSError(errno.EINVAL, "Invalid argument")
        real_write(path, value)
    fs.write = no_rdma
    m.create(enable=["memory", "rdma", "pids"])
    assert fs.writes("cgroup.subtree_control") == [("cgroup.subtree_control", "+memory"),
                                                   ("cgroup.subtree_control", "+pids")]
    assert m.controllers() == {"pids", "memory"}  # "default" enabled both for ctr


def test_v2_set_writes_plan_and_attaches_device_filter(v2):
    m, fs, mnt = v2
    m.create()
    fs.log.clear()
    m.set({"memory": {"limit": 1000, "swap": 3000}, "pids": {"limit": 0},
           "cpu": {"shares": 1024, "quota": 50000, "period": 100000},
           "blockIO": {"weight": 500}, "unified": {"memory.high": "900"},
           "devices": [{"allow": False, "access": "rwm"}]})
    d = "default/ctr"
    assert fs.writes() == [(f"{d}/pids.max", "max"), (f"{d}/memory.swap.max", "2000"),
                           (f"{d}/memory.max", "1000"), (f"{d}/io.weight", "4950"),
                           (f"{d}/cpu.weight", "39"), (f"{d}/cpu.max", "50000 100000"),
                           (f"{d}/memory.high", "900")]
    assert m.attached == [(d, (DeviceRule(False, "a", None, None, "rwm"),))]


def test_v2_controller_not_enabled_names_the_field(v2):
    m, fs, mnt = v2
    m.create(enable=["memory"])
    fs.log.clear()
    with pytest.raises(InvalidSpec, match="pids cgroup controller.*controllers: memory") as e:
        m.set({"memory": {"limit": 5}, "pids": {"limit": 5}})
    assert e.value.field == "linux.resources.pids.limit"
    assert fs.writes() == []
    m.set({"memory": {"limit": 5}, "devices": []})  # devices need no controller
    assert len(m.attached) == 1


def test_v2_failing_device_attach_is_a_cgroup_error_naming_devices(v2):
    m, fs, mnt = v2
    m.create()

    def refuse(d, rules):
        raise PermissionError(errno.EPERM, "nope")
    m._attach_devices = refuse
    with pytest.raises(CgroupError) as e:
        m.set({"devices": []})
    assert e.value.field == "linux.resources.devices" and e.value.errno == errno.EPERM


def test_v2_freeze_and_thaw_follow_cgroup_events(v2):
    m, fs, mnt = v2
    m.create()
    m.freeze()
    assert m.freezer_state() == "FROZEN"
    m.thaw()
    assert m.freezer_state() == "THAWED"


def test_v2_freeze_timeout_thaws_back(v2, monkeypatch):
    m, fs, mnt = v2
    m.create()
    monkeypatch.setattr(v2mod, "FREEZE_TIMEOUT", 0.02)
    real_write = fs.write

    def stuck(path, value):  # the kernel never reports frozen
        if path.endswith("cgroup.freeze"):
            return fs.log.append(("write", fs.rel(path), value))
        real_write(path, value)
    monkeypatch.setattr(fs, "write", stuck)
    with pytest.raises(CgroupError, match="timed out"):
        m.freeze()
    assert [v for _, v in fs.writes("default/ctr/cgroup.freeze")] == ["1", "0"]


def test_v2_sigkill_uses_cgroup_kill_other_signals_freeze_and_walk(v2):
    m, fs, mnt = v2
    m.create()
    fs.populate(mnt / "default/ctr", {"cgroup.procs": "5\n"})
    fs.log.clear()
    m.kill_all(signal.SIGKILL)
    assert fs.writes() == [("default/ctr/cgroup.kill", "1")] and m.kills == []
    fs.log.clear()
    m.kill_all(signal.SIGTERM)
    assert m.kills == [(5, signal.SIGTERM)]
    assert fs.writes() == [("default/ctr/cgroup.freeze", "1"), ("default/ctr/cgroup.freeze", "0")]


def test_v2_sigkill_without_cgroup_kill_falls_back(v2):
    m, fs, mnt = v2
    m.create()
    os.unlink(mnt / "default/ctr/cgroup.kill")
    fs.populate(mnt / "default/ctr", {"cgroup.procs": "5\n6\n"})
    m.kill_all(signal.SIGKILL)
    assert m.kills == [(5, signal.SIGKILL), (6, signal.SIGKILL)]


def test_v2_stats_and_oom_count(v2):
    m, fs, mnt = v2
    m.create()
    fs.populate(mnt / "default/ctr", {
        "pids.current": "2", "pids.max": "100", "memory.current": "4096", "memory.max": "max",
        "memory.stat": "anon 100\nfile 200\n", "memory.events": "oom 1\noom_kill 2\n",
        "memory.peak": "8192", "cpu.stat": "usage_usec 10\nuser_usec 6\nsystem_usec 4\n",
        "io.stat": "8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0\n",
        "hugetlb.2MB.current": "0", "hugetlb.2MB.events": "max 3\n"})
    s = m.stats()
    assert s["pids"] == {"current": 2, "limit": 100}
    assert s["cpu"] == {"usage_usec": 10, "user_usec": 6, "system_usec": 4}
    assert s["memory"] == {"usage": 4096, "usage_limit": 2**64 - 1, "max_usage": 8192,
                           "swap_limit": 2**64 - 1, "stat": {"anon": 100, "file": 200}}
    assert s["memory_events"] == {"oom": 1, "oom_kill": 2}
    assert s["io"] == {"usage": [{"major": 8, "minor": 0, "rbytes": 1, "wbytes": 2, "rios": 3,
                                  "wios": 4, "dbytes": 0, "dios": 0}]}
    assert s["hugetlb"] == [{"pagesize": "2MB", "current": 0, "max": 2**64 - 1, "failcnt": 3}]
    assert m.oom_kill_count() == 2
    assert m.events_path().endswith("default/ctr/memory.events")


def test_v2_stats_omit_disabled_controllers(v2):
    m, fs, mnt = v2
    m.create(enable=())
    assert m.stats() == {"version": 2, "cpu": {"usage_usec": 0}}


def test_v2_destroy(v2):
    m, fs, mnt = v2
    m.create()
    (mnt / "default/ctr/a").mkdir()
    (mnt / "default/ctr/a/b").mkdir()
    fs.log.clear()
    m.destroy()
    assert [p for op, p, _ in fs.log] == ["default/ctr/a/b", "default/ctr/a", "default/ctr"]
    assert not m.exists() and (mnt / "default").is_dir()


def test_v2_pids_recursive_and_apply(v2):
    m, fs, mnt = v2
    m.create()
    m.apply(77)
    assert fs.writes("default/ctr/cgroup.procs") == [("default/ctr/cgroup.procs", "77")]
    (mnt / "default/ctr/x").mkdir()
    fs.populate(mnt / "default/ctr/x", {"cgroup.procs": "78\n"})
    assert m.pids() == [77, 78]


def test_exec_sub_cgroups_per_controller_or_everywhere(v1):
    """runc's exec --cgroup: {controller: sub} joins that sub-cgroup there and the container's
    own cgroup elsewhere; {"": sub} joins it in every hierarchy."""
    m = v1[0]
    only_pids = m.sub_dirs({"pids": "a/b"})
    assert os.path.join(m.paths["pids"], "a/b") in only_pids
    assert m.paths["memory"] in only_pids
    everywhere = m.sub_dirs({"": "x"})
    assert set(everywhere) == {os.path.join(d, "x") for d in m.dirs()}
    with pytest.raises(CgroupError, match="no nosuch controller"):
        m.sub_dirs({"nosuch": "a"})
    for bad in ("../escape", "/abs", "."):
        with pytest.raises(CgroupError, match="must be a relative path below"):
            m.sub_dirs({"": bad})
