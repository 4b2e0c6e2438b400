"""Pure planning: OCI linux.resources -> ordered Write lists (v1, v2); validation; conversions."""

import pytest

from runtime.cgroups.plan import (DeviceFilter, DeviceRule, Write, blkio_weight_to_io_weight,
                                  plan_v1, plan_v2, shares_to_weight, swap_v2,
                                  with_default_devices)
from runtime.errors import InvalidSpec

W = Write


def files(plan):
    return [(w.controller, w.file, w.value) for w in plan]


# --- conversions ----------------------------------------------------------------------------------

@pytest.mark.parametrize("shares,weight", [(2, 1), (1024, 39), (512, 20), (262144, 10000)])
def test_shares_to_weight_is_runcs_linear_mapping(shares, weight):
    assert shares_to_weight(shares) == weight


@pytest.mark.parametrize("w,io", [(10, 1), (500, 4950), (1000, 10000)])
def test_blkio_weight_to_io_weight(w, io):
    assert blkio_weight_to_io_weight(w) == io


@pytest.mark.parametrize("limit,swap,expected", [
    (100, 300, 200), (100, 100, 0), (100, -1, -1), (100, 0, 0), (-1, 0, -1), (0, 0, 0)])
def test_swap_v2_is_swap_minus_limit(limit, swap, expected):
    assert swap_v2(limit, swap, "m") == expected


@pytest.mark.parametrize("limit,swap,msg", [(200, 100, ">= memory.limit"), (0, 100, "together"),
                                            (-1, 100, "together")])
def test_swap_v2_rejects_impossible_pairs_naming_swap(limit, swap, msg):
    with pytest.raises(InvalidSpec, match=msg) as e:
        swap_v2(limit, swap, "linux.resources.memory")
    assert e.value.field == "linux.resources.memory.swap"


# --- memory ---------------------------------------------------------------------------------------

def test_v1_memory_full():
    plan = plan_v1({"memory": {"limit": 1 << 20, "reservation": 1 << 19, "swap": 2 << 20,
                               "swappiness": 10, "disableOOMKiller": True, "kernel": 5}})
    assert plan == [
        W("memory", "memory.limit_in_bytes", "1048576"),
        W("memory", "memory.memsw.limit_in_bytes", "2097152"),
        W("memory", "memory.soft_limit_in_bytes", "524288"),
        W("memory", "memory.oom_control", "1"),
        W("memory", "memory.swappiness", "10")]
    assert plan[0].field == "linux.resources.memory.limit"


def test_v1_memsw_first_when_it_grows_above_the_live_limit():
    res = {"memory": {"limit": 2000, "swap": 4000}}
    assert [w.file for w in plan_v1(res, current_memory_limit=1000)] == [
        "memory.memsw.limit_in_bytes", "memory.limit_in_bytes"]
    assert [w.file for w in plan_v1(res, current_memory_limit=1 << 62)] == [
        "memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]


def test_v1_unlimited_memory_also_unlimits_memsw_when_present():
    assert plan_v1({"memory": {"limit": -1}}) == [
        W("memory", "memory.memsw.limit_in_bytes", "-1", optional=True),
        W("memory", "memory.limit_in_bytes", "-1")]


def test_v1_swappiness_minus_one_means_leave_alone():
    assert plan_v1({"memory": {"swappiness": -1}}) == []


def test_v2_memory():
    assert plan_v2({"memory": {"limit": 1000, "swap": 3000, "reservation": 500,
                               "swappiness": 5, "disableOOMKiller": True}}) == [
        W("memory", "memory.swap.max", "2000"),
        W("memory", "memory.max", "1000"),
        W("memory", "memory.low", "500")]


def test_v2_memory_equal_swap_disables_swap_and_unlimited_is_max():
    assert plan_v2({"memory": {"limit": 1000, "swap": 1000}}) == [
        W("memory", "memory.swap.max", "0", optional=True), W("memory", "memory.max", "1000")]
    assert plan_v2({"memory": {"limit": -1}}) == [
        W("memory", "memory.swap.max", "max", optional=True), W("memory", "memory.max", "max")]


@pytest.mark.parametrize("mem,field,msg", [
    ({"limit": "1G"}, "limit", "must be an integer"),
    ({"limit": True}, "limit", "must be an integer"),
    ({"limit": -2}, "limit", "between"),
    ({"swappiness": 101}, "swappiness", "between 0 and 100"),
    ({"disableOOMKiller": 1}, "disableOOMKiller", "boolean"),
    ({"limit": 10, "swap": 5}, "swap", ">= memory.limit")])
def test_memory_validation_names_the_field(mem, field, msg):
    for plan in (plan_v1, plan_v2):
        with pytest.raises(InvalidSpec, match=msg) as e:
            plan({"memory": mem})
        assert e.value.field == f"linux.resources.memory.{field}"


# --- cpu ------------------------------------------------------------------------------------------

CPU = {"shares": 1024, "quota": 50000, "period": 100000, "burst": 1000, "idle": 0,
       "cpus": "0-1", "mems": "0"}


def test_v1_cpu_and_cpuset():
    plan = plan_v1({"cpu": dict(CPU, realtimeRuntime=950, realtimePeriod=1000)})
    assert plan == [
        W("cpuset", "cpuset.cpus", "0-1"), W("cpuset", "cpuset.mems", "0"),
        W("cpu", "cpu.shares", "1024"),
        W("cpu", "cpu.cfs_period_us", "100000", retry_after="cpu.cfs_quota_us"),
        W("cpu", "cpu.cfs_burst_us", "1000", retry_after="cpu.cfs_quota_us"),
        W("cpu", "cpu.cfs_quota_us", "50000"),
        W("cpu", "cpu.idle", "0"),
        W("cpu", "cpu.rt_period_us", "1000", retry_after="cpu.rt_runtime_us"),
        W("cpu", "cpu.rt_runtime_us", "950")]


def test_v1_period_alone_has_nothing_to_retry_after():
    assert plan_v1({"cpu": {"period": 100000}}) == [W("cpu", "cpu.cfs_period_us", "100000")]
    assert plan_v1({"cpu": {"quota": -1}}) == [W("cpu", "cpu.cfs_quota_us", "-1")]


def test_v2_cpu():
    assert plan_v2({"cpu": CPU}) == [
        W("cpu", "cpu.weight", "39"), W("cpu", "cpu.idle", "0"),
        W("cpu", "cpu.max.burst", "1000", retry_after="cpu.max"),
        W("cpu", "cpu.max", "50000 100000"),
        W("cpuset", "cpuset.cpus", "0-1"), W("cpuset", "cpuset.mems", "0")]


@pytest.mark.parametrize("cpu,value", [({"quota": -1, "period": 100000}, "max 100000"),
                                       ({"period": 50000}, "max 50000"),
                                       ({"quota": 20000}, "20000")])
def test_v2_cpu_max_forms(cpu, value):
    assert plan_v2({"cpu": cpu}) == [W("cpu", "cpu.max", value)]


def test_v2_refuses_realtime():
    with pytest.raises(InvalidSpec) as e:
        plan_v2({"cpu": {"realtimeRuntime": 100}})
    assert e.value.field == "linux.resources.cpu.realtimeRuntime"


@pytest.mark.parametrize("cpu,field", [({"shares": 1}, "shares"), ({"shares": 300000}, "shares"),
                                       ({"idle": 2}, "idle"), ({"cpus": "0;1"}, "cpus"),
                                       ({"mems": 0}, "mems"), ({"quota": -5}, "quota")])
def test_cpu_validation(cpu, field):
    for plan in (plan_v1, plan_v2):
        with pytest.raises(InvalidSpec) as e:
            plan({"cpu": cpu})
        assert e.value.field == f"linux.resources.cpu.{field}"


# --- pids -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("limit,value", [(100, "100"), (0, "max"), (-1, "max")])
def test_pids(limit, value):
    assert plan_v1({"pids": {"limit": limit}}) == [W("pids", "pids.max", value)]
    assert plan_v2({"pids": {"limit": limit}}) == [W("pids", "pids.max", value)]


def test_pids_without_limit_writes_nothing():
    assert plan_v1({"pids": {}}) == plan_v2({"pids": {}}) == []


# --- block I/O ------------------------------------------------------------------------------------

BLKIO = {"weight": 500, "leafWeight": 300,
         "weightDevice": [{"major": 8, "minor": 0, "weight": 600, "leafWeight": 200}],
         "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1000}],
         "throttleWriteBpsDevice": [{"major": 8, "minor": 16, "rate": 2000}],
         "throttleReadIOPSDevice": [{"major": 8, "minor": 0, "rate": 30}],
         "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 40}]}


def test_v1_blkio():
    assert plan_v1({"blockIO": BLKIO}) == [
        W("blkio", "blkio.weight", "500", fallback=("blkio.bfq.weight", "500")),
        W("blkio", "blkio.leaf_weight", "300"),
        W("blkio", "blkio.weight_device", "8:0 600",
          fallback=("blkio.bfq.weight_device", "8:0 600")),
        W("blkio", "blkio.leaf_weight_device", "8:0 200"),
        W("blkio", "blkio.throttle.read_bps_device", "8:0 1000"),
        W("blkio", "blkio.throttle.write_bps_device", "8:16 2000"),
        W("blkio", "blkio.throttle.read_iops_device", "8:0 30"),
        W("blkio", "blkio.throttle.write_iops_device", "8:0 40")]


def test_v2_io_one_max_line_per_device_and_bfq_first():
    assert plan_v2({"blockIO": BLKIO}) == [
        W("io", "io.bfq.weight", "500", fallback=("io.weight", "4950")),
        W("io", "io.bfq.weight", "8:0 600", fallback=("io.weight", "8:0 5960")),
        W("io", "io.max", "8:0 rbps=1000 riops=30 wiops=40"),
        W("io", "io.max", "8:16 wbps=2000")]


@pytest.mark.parametrize("bio,field", [
    ({"weight": 5}, "linux.resources.blockIO.weight"),
    ({"weightDevice": [{"major": 8, "weight": 100}]},
     "linux.resources.blockIO.weightDevice[0].minor"),
    ({"throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": -1}]},
     "linux.resources.blockIO.throttleReadBpsDevice[0].rate"),
    ({"throttleReadBpsDevice": ["8:0 1"]}, "linux.resources.blockIO.throttleReadBpsDevice[0]")])
def test_blkio_validation(bio, field):
    for plan in (plan_v1, plan_v2):
        with pytest.raises(InvalidSpec) as e:
            plan({"blockIO": bio})
        assert e.value.field == field


# --- hugetlb, network, rdma, unified --------------------------------------------------------------

def test_hugetlb():
    res = {"hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}]}
    assert plan_v1(res) == [
        W("hugetlb", "hugetlb.2MB.limit_in_bytes", "4194304"),
        W("hugetlb", "hugetlb.2MB.rsvd.limit_in_bytes", "4194304", optional=True)]
    assert plan_v2(res) == [W("hugetlb", "hugetlb.2MB.max", "4194304"),
                            W("hugetlb", "hugetlb.2MB.rsvd.max", "4194304", optional=True)]


def test_hugetlb_bad_page_size():
    with pytest.raises(InvalidSpec) as e:
        plan_v1({"hugepageLimits": [{"pageSize": "2M", "limit": 1}]})
    assert e.value.field == "linux.resources.hugepageLimits[0].pageSize"


def test_network_is_v1_only():
    res = {"network": {"classID": 0x100001, "priorities": [{"name": "eth0", "priority": 5},
                                                           {"name": "lo", "priority": 1}]}}
    assert plan_v1(res) == [W("net_cls", "net_cls.classid", "1048577"),
                            W("net_prio", "net_prio.ifpriomap", "eth0 5"),
                            W("net_prio", "net_prio.ifpriomap", "lo 1")]
    with pytest.raises(InvalidSpec) as e:
        plan_v2(res)
    assert e.value.field == "linux.resources.network.classID"
    assert plan_v2({"network": {"priorities": []}}) == []


def test_rdma():
    res = {"rdma": {"mlx5_1": {"hcaHandles": 3, "hcaObjects": 10000}, "mlx4_0": {"hcaObjects": 7},
                    "none": {}}}
    expected = [W("rdma", "rdma.max", "mlx5_1 hca_handle=3 hca_object=10000"),
                W("rdma", "rdma.max", "mlx4_0 hca_object=7")]
    assert plan_v1(res) == plan_v2(res) == expected


def test_unified_is_v2_only_and_last():
    res = {"unified": {"memory.high": "1000", "cgroup.freeze": "0"}, "pids": {"limit": 5}}
    assert plan_v2(res) == [W("pids", "pids.max", "5"), W("", "memory.high", "1000"),
                            W("", "cgroup.freeze", "0")]
    with pytest.raises(InvalidSpec) as e:
        plan_v1(res)
    assert e.value.field == "linux.resources.unified"
    assert plan_v1({"unified": {}}) == []


@pytest.mark.parametrize("key", ["../memory.max", "memory/max", "nodot", ".hidden"])
def test_unified_key_must_be_a_cgroup_file_name(key):
    with pytest.raises(InvalidSpec) as e:
        plan_v2({"unified": {key: "1"}})
    assert e.value.field == f"linux.resources.unified[{key!r}]"


# --- devices --------------------------------------------------------------------------------------

DEVICES = [{"allow": False, "access": "rwm"},
           {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "mwr"},
           {"allow": True, "type": "c", "major": 136, "access": "rw"},
           {"allow": True, "type": "b", "major": -1, "minor": -1, "access": "m"},
           {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "w"}]


def test_v1_devices_deny_all_then_rules_in_order():
    assert files(plan_v1({"devices": DEVICES})) == [
        ("devices", "devices.deny", "a"),
        ("devices", "devices.deny", "a"),
        ("devices", "devices.allow", "c 1:3 rwm"),
        ("devices", "devices.allow", "c 136:* rw"),
        ("devices", "devices.allow", "b *:* m"),
        ("devices", "devices.deny", "c 1:3 w")]


def test_v1_no_devices_key_leaves_devices_alone_but_empty_list_denies_all():
    assert plan_v1({}) == []
    assert files(plan_v1({"devices": []})) == [("devices", "devices.deny", "a")]


def test_v2_devices_become_one_filter_after_cpu():
    plan = plan_v2({"devices": DEVICES, "cpu": {"shares": 2, "cpus": "0"}})
    assert plan == [W("cpu", "cpu.weight", "1"),
                    DeviceFilter((DeviceRule(False, "a", None, None, "rwm"),
                                  DeviceRule(True, "c", 1, 3, "rwm"),
                                  DeviceRule(True, "c", 136, None, "rw"),
                                  DeviceRule(True, "b", None, None, "m"),
                                  DeviceRule(False, "c", 1, 3, "w"))),
                    W("cpuset", "cpuset.cpus", "0")]


@pytest.mark.parametrize("dev,field", [
    ({"access": "rwm"}, "allow"), ({"allow": True, "access": ""}, "access"),
    ({"allow": True}, "access"), ({"allow": True, "access": "rx"}, "access"),
    ({"allow": True, "type": "u", "access": "r"}, "type"),
    ({"allow": True, "major": "1", "access": "r"}, "major")])
def test_device_rule_validation(dev, field):
    for plan in (plan_v1, plan_v2):
        with pytest.raises(InvalidSpec) as e:
            plan({"devices": [{"allow": True, "access": "r"}, dev]})
        assert e.value.field == f"linux.resources.devices[1].{field}"


def test_with_default_devices_appends_runc_list_then_linux_devices():
    class Dev:
        type, major, minor = "b", 7, 0
    res = with_default_devices({"devices": [{"allow": False, "access": "rwm"}],
                                "pids": {"limit": 1}},
                               [{"type": "c", "major": 10, "minor": 229}, {"type": "p"}, Dev()])
    assert res["pids"] == {"limit": 1}
    devs = res["devices"]
    assert devs[0] == {"allow": False, "access": "rwm"}
    assert {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"} in devs
    assert {"allow": True, "type": "c", "major": 136, "access": "rwm"} in devs
    assert devs[-2:] == [{"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rwm"},
                         {"allow": True, "type": "b", "major": 7, "minor": 0, "access": "rwm"}]
    assert len(devs) == 1 + 11 + 2
    assert len(plan_v1(res)) == 1 + len(devs) + 1  # deny a, the rules, pids


# --- whole-spec shape -----------------------------------------------------------------------------

def test_empty_and_none_resources_plan_nothing():
    assert plan_v1(None) == plan_v2(None) == plan_v1({}) == plan_v2({}) == []


def test_resources_must_be_an_object():
    with pytest.raises(InvalidSpec) as e:
        plan_v1([])
    assert e.value.field == "linux.resources"
    with pytest.raises(InvalidSpec) as e:
        plan_v2({"memory": []})
    assert e.value.field == "linux.resources.memory"


def test_v1_order_follows_runc_subsystems():
    res = {"pids": {"limit": 5}, "memory": {"limit": 10}, "cpu": {"shares": 2, "cpus": "0"},
           "devices": [], "blockIO": {"weight": 10},
           "hugepageLimits": [{"pageSize": "2MB", "limit": 0}], "network": {"classID": 1}}
    assert [w.controller for w in plan_v1(res)] == [
        "cpuset", "devices", "memory", "cpu", "pids", "blkio", "hugetlb", "hugetlb", "net_cls"]


def test_v2_order_follows_runc():
    res = {"pids": {"limit": 5}, "memory": {"limit": 10}, "cpu": {"shares": 2, "cpus": "0"},
           "devices": [], "blockIO": {"weight": 10}, "unified": {"io.latency": "1"},
           "hugepageLimits": [{"pageSize": "2MB", "limit": 0}], "rdma": {"d": {"hcaHandles": 1}}}
    assert [w.controller for w in plan_v2(res)] == [
        "pids", "memory", "io", "cpu", "devices", "cpuset", "hugetlb", "hugetlb", "rdma", ""]
