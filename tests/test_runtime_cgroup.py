"""The engine's use of cgroups without root: runtime.ctrcgroup (setup, state round trip, the
join error), the cgroup mount's bind sources, and the Container methods over a stand-in
manager (pause status, kill --all, update, stats, delete's kill-and-destroy order)."""

import os
import signal

import pytest
from test_runtime_exec import init  # noqa: F401 - the stand-in init fixture

from runtime import cgroups, ctrcgroup, spec
from runtime.errors import CgroupError, ContainerSetupError, EngineError, InvalidSpec, InvalidState
from runtime.mounts import CgroupHierarchy, with_sources
from runtime.specgen import default_config

V1 = cgroups.Hierarchy("v1", {"memory": cgroups.Mount("/sys/fs/cgroup/memory"),
                              "cpuset": cgroups.Mount("/sys/fs/cgroup/cpuset"),
                              "cpu": cgroups.Mount("/sys/fs/cgroup/cpu,cpuacct"),
                              "cpuacct": cgroups.Mount("/sys/fs/cgroup/cpu,cpuacct")})


class FakeManager:
    """Records calls; `frozen`, `members` and `fail_set` steer it."""
    version = 1

    def __init__(self):
        self.calls, self.frozen, self.members, self.fail_set = [], False, [], None

    def create(self):
        self.calls.append(("create",))

    def set(self, resources):
        self.calls.append(("set", resources))
        if self.fail_set:
            raise self.fail_set

    def destroy(self):
        self.calls.append(("destroy",))

    def apply(self, pid):
        raise CgroupError("add pid to /x/cgroup.procs: No space left on device", "/x/cgroup.procs")

    def freezer_state(self):
        return "FROZEN" if self.frozen else "THAWED"

    def freeze(self):
        self.calls.append(("freeze",))

    def thaw(self):
        self.calls.append(("thaw",))

    def kill_all(self, sig):
        self.calls.append(("kill_all", sig))
        self.members = []

    def pids(self):
        return list(self.members)

    def stats(self):
        return {"version": 1}

    def oom_kill_count(self):
        return 3

    def dirs(self):
        return ["/x"]


# --- ctrcgroup ---------------------------------------------------------------------------------
def test_setup_sets_runcs_device_allowlist_and_the_spec_devices():
    c = default_config()
    c["linux"]["devices"] = [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}]
    m = FakeManager()
    ctrcgroup.setup(m, spec.parse(c))
    (_, res), = [call for call in m.calls if call[0] == "set"]
    assert res["devices"][0] == {"allow": False, "access": "rwm"}  # the spec's own rules first
    assert {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"} in res["devices"]
    assert res["devices"][-1] == {"allow": True, "type": "c", "major": 10, "minor": 229,
                                  "access": "rwm"}


def test_setup_removes_the_cgroup_when_setting_fails():
    m = FakeManager()
    m.fail_set = InvalidSpec("linux.resources.memory.limit", "needs the memory controller")
    with pytest.raises(InvalidSpec):
        ctrcgroup.setup(m, spec.parse(default_config()))
    assert [c[0] for c in m.calls] == ["create", "set", "destroy"]


def test_a_failed_move_by_pid_is_a_setup_error_naming_the_path():
    with pytest.raises(ContainerSetupError) as e:
        ctrcgroup.join(FakeManager(), 1234)
    assert (e.value.step, e.value.path) == ("cgroups", "/x/cgroup.procs")
    assert "/x/cgroup.procs" in str(e.value)
    ctrcgroup.join(None)  # no cgroup: nothing to do
    ctrcgroup.join(None, 1234)


def _v1_dirs(tmp_path):
    dirs = {c: tmp_path / c / "pyshim" / "c1" for c in ("memory", "pids", "cpu,cpuacct")}
    for d in dirs.values():
        d.mkdir(parents=True)
        (d / "tasks").write_text("")
        (d / "cgroup.procs").write_text("")
    m = cgroups.V1Manager({"memory": str(dirs["memory"]), "cpuset": str(dirs["pids"]),
                           "cpu": str(dirs["cpu,cpuacct"]), "cpuacct": str(dirs["cpu,cpuacct"])},
                          V1)
    return m, dirs


def test_v1_open_join_then_join_self_writes_0_to_tasks_in_every_hierarchy_and_closes(tmp_path):
    # "tasks", not cgroup.procs: a thread moving itself there takes no RCU grace period
    m, dirs = _v1_dirs(tmp_path)
    fds, paths = join = ctrcgroup.open_join(m)
    assert len(fds) == 3  # one per distinct directory
    assert sorted(paths) == sorted(str(d / "tasks") for d in dirs.values())
    ctrcgroup.join_self(join)
    assert all((d / "tasks").read_text() == "0" for d in dirs.values())
    assert all((d / "cgroup.procs").read_text() == "" for d in dirs.values())
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)
    assert ctrcgroup.open_join(None) == ([], [])


def test_a_failed_join_names_the_file_and_closes_every_fd(tmp_path):
    m, dirs = _v1_dirs(tmp_path)
    fds, paths = ctrcgroup.open_join(m)
    os.close(fds[1])
    fds[1] = os.open("/dev/null", os.O_RDONLY)  # a write there fails (EBADF)
    with pytest.raises(ContainerSetupError) as e:
        ctrcgroup.join_self((fds, paths))
    assert (e.value.step, e.value.path) == ("cgroups", paths[1])
    assert paths[1] in str(e.value)
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)


def test_join_without_a_pid_moves_the_caller_itself_the_same_way(tmp_path):
    m, dirs = _v1_dirs(tmp_path)
    before = set(os.listdir("/proc/self/fd"))
    ctrcgroup.join(m)
    assert all((d / "tasks").read_text() == "0" for d in dirs.values())
    assert set(os.listdir("/proc/self/fd")) == before


def test_v2_open_join_is_cgroup_procs(tmp_path):
    (tmp_path / "c1").mkdir()
    (tmp_path / "c1" / "cgroup.procs").write_text("")
    m = cgroups.V2Manager(str(tmp_path / "c1"), str(tmp_path))
    ctrcgroup.join_self(ctrcgroup.open_join(m))
    assert (tmp_path / "c1" / "cgroup.procs").read_text() == "0"


def test_open_join_failure_is_a_setup_error_and_leaves_no_fd_open(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "tasks").write_text("")
    m = cgroups.V1Manager({"memory": str(tmp_path / "a"), "cpu": str(tmp_path / "gone")}, V1)
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(ContainerSetupError) as e:
        ctrcgroup.open_join(m)
    assert (e.value.step, e.value.path) == ("cgroups", str(tmp_path / "gone" / "tasks"))
    assert set(os.listdir("/proc/self/fd")) == before
    with pytest.raises(ContainerSetupError):
        ctrcgroup.join(m)
    assert set(os.listdir("/proc/self/fd")) == before


def test_state_round_trip_v1_and_v2():
    v1 = cgroups.manager("/default/c1", "c1", V1)
    back = ctrcgroup.from_state(ctrcgroup.to_state(v1))
    assert (type(back), back.paths, back.mounts) == (type(v1), v1.paths, v1.mounts)
    assert back.paths["cpu"] == "/sys/fs/cgroup/cpu,cpuacct/default/c1"
    h2 = cgroups.Hierarchy("v2", {"": cgroups.Mount("/sys/fs/cgroup")})
    v2 = cgroups.manager("/default/c1", "c1", h2)
    back = ctrcgroup.from_state(ctrcgroup.to_state(v2))
    assert (back.path, back.mountpoint) == ("/sys/fs/cgroup/default/c1", "/sys/fs/cgroup")
    assert ctrcgroup.from_state(None) is None


def test_a_systemd_cgroups_path_is_refused_before_anything_exists():
    c = default_config()
    c["linux"]["cgroupsPath"] = "system.slice:pyshim:c1"
    with pytest.raises(InvalidSpec) as e:
        ctrcgroup.for_spec(spec.parse(c), "c1")
    assert e.value.field == "linux.cgroupsPath"


def test_cgroup_errors_are_engine_errors():
    assert cgroups.CgroupError is CgroupError and issubclass(CgroupError, EngineError)


# --- the cgroup mount's sources --------------------------------------------------------------
def test_each_hierarchy_binds_the_containers_own_directory():
    hs = [CgroupHierarchy("/sys/fs/cgroup", "cgroup2", None, "/sys/fs/cgroup/user"),
          CgroupHierarchy("/sys/fs/cgroup/cpu", "cgroup", "cpu", "/sys/fs/cgroup/cpu/user"),
          CgroupHierarchy("/sys/fs/cgroup/cpuacct", "cgroup", "cpuacct", "/sys/fs/cgroup/cpuacct"),
          CgroupHierarchy("/sys/fs/cgroup/systemd", "cgroup", "name=systemd", "/x")]
    out = with_sources(hs, ["/sys/fs/cgroup/cpuacct/default/c1", "/sys/fs/cgroup/cpu/default/c1"])
    assert [h.source for h in out] == ["/sys/fs/cgroup/user",  # no dir of ours lies in it
                                       "/sys/fs/cgroup/cpu/default/c1",
                                       "/sys/fs/cgroup/cpuacct/default/c1", "/x"]


# --- Container over a stand-in manager -------------------------------------------------------
@pytest.fixture
def made(init):
    init._cgroup = FakeManager()
    return init


def test_pause_resume_and_the_paused_status(made):
    c, m = made, made._cgroup
    assert c.status() == "running"
    c.pause()
    m.frozen = True
    assert c.status() == c.state()["status"] == "paused"
    with pytest.raises(InvalidState):
        c.pause()
    with pytest.raises(InvalidState):
        c.start()
    c.resume()
    m.frozen = False
    with pytest.raises(InvalidState):
        c.resume()
    assert m.calls == [("freeze",), ("thaw",)]


def test_kill_all_update_stats_and_oom(made):
    c, m = made, made._cgroup
    c.kill(signal.SIGTERM, all=True)
    c.update({"pids": {"limit": 5}, "devices": [{"allow": True, "access": "rwm"}]})
    assert m.calls == [("kill_all", signal.SIGTERM), ("set", {"pids": {"limit": 5}})]
    assert c.stats() == {"version": 1} and c.oom_kill_count() == 3
    with pytest.raises(EngineError, match="OOM eventfd"):
        c.oom_event_fd()
    with pytest.raises(InvalidSpec):
        c.update([])


def test_delete_kills_everything_in_the_cgroup_then_removes_it(made):
    c, m = made, made._cgroup
    m.members = [c.pid, 4242]
    c.delete(force=True)
    assert m.calls == [("kill_all", signal.SIGKILL), ("destroy",)]
    assert not os.path.exists(c._dir)
    assert os.waitpid(c.pid, 0)[1] == signal.SIGKILL


def test_delete_of_a_stopped_container_kills_leftovers_like_runc(made):
    c, m = made, made._cgroup
    os.kill(c.pid, signal.SIGKILL)
    os.waitpid(c.pid, 0)
    m.members = [4242]  # e.g. a daemon of an init without a pid namespace
    c.delete()
    assert m.calls == [("kill_all", signal.SIGKILL), ("destroy",)]
    with pytest.raises(InvalidState):
        c.update({})
