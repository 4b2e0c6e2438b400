"""Engine stats dicts -> containerd's cgroups Metrics protos."""

from proto.cgroups.v1 import metrics_pb2 as v1
from proto.cgroups.v2 import metrics_pb2 as v2
from shim.metrics import to_any

V1_STATS = {
    "version": 1,
    "pids": {"current": 3, "limit": 100},
    "cpu": {"usage": {"total": 900, "per_cpu": [400, 500], "user": 600, "kernel": 300},
            "throttling": {"periods": 7, "throttled_periods": 2, "throttled_time": 55}},
    "memory": {"usage": {"usage": 4096, "limit": 1 << 30, "max": 8192, "failcnt": 1},
               "swap": {"usage": 4096, "limit": 2 << 30, "max": 8192, "failcnt": 0},
               "stat": {"cache": 10, "rss": 20, "pgfault": 30, "total_pgmajfault": 4,
                        "hierarchical_memory_limit": 1 << 30, "not_a_field": 99}},
    "blkio": {"io_service_bytes_recursive": [{"major": 8, "minor": 0, "op": "Read", "value": 512}],
              "io_serviced_recursive": []},
    "hugetlb": [{"pagesize": "2MB", "usage": 0, "max": 0, "failcnt": 0}],
}


def test_v1_metrics_carry_every_section():
    any_ = to_any(V1_STATS)
    assert any_.type_url == "io.containerd.cgroups.v1.Metrics"
    m = v1.Metrics.FromString(any_.value)
    assert (m.pids.current, m.pids.limit) == (3, 100)
    assert (m.cpu.usage.total, list(m.cpu.usage.per_cpu), m.cpu.usage.user, m.cpu.usage.kernel) == (
        900, [400, 500], 600, 300)
    assert m.cpu.throttling.throttled_time == 55
    assert (m.memory.usage.usage, m.memory.usage.limit, m.memory.usage.max) == (4096, 1 << 30, 8192)
    assert m.memory.swap.limit == 2 << 30
    assert (m.memory.cache, m.memory.rss, m.memory.pg_fault, m.memory.total_pg_maj_fault) == (
        10, 20, 30, 4)
    assert m.memory.hierarchical_memory_limit == 1 << 30
    entry = m.blkio.io_service_bytes_recursive[0]
    assert (entry.major, entry.minor, entry.op, entry.value) == (8, 0, "Read", 512)
    assert m.hugetlb[0].pagesize == "2MB"


def test_v2_metrics_use_the_kernel_names():
    stats = {"version": 2, "pids": {"current": 1, "limit": 0},
             "cpu": {"usage_usec": 10, "user_usec": 6, "system_usec": 4, "nr_throttled": 1},
             "memory": {"usage": 100, "usage_limit": 2**64 - 1, "swap_usage": 0,
                        "stat": {"anon": 50, "file": 40, "pgmajfault": 2}},
             "memory_events": {"oom": 1, "oom_kill": 1, "max": 3},
             "io": {"usage": [{"major": 8, "minor": 0, "rbytes": 1, "wbytes": 2, "dbytes": 9}]}}
    any_ = to_any(stats)
    assert any_.type_url == "io.containerd.cgroups.v2.Metrics"
    m = v2.Metrics.FromString(any_.value)
    assert (m.cpu.usage_usec, m.cpu.user_usec, m.cpu.system_usec, m.cpu.nr_throttled) == (10, 6, 4, 1)
    assert (m.memory.usage, m.memory.usage_limit, m.memory.anon, m.memory.pgmajfault) == (
        100, 2**64 - 1, 50, 2)
    assert (m.memory_events.oom_kill, m.memory_events.max) == (1, 3)
    assert (m.io.usage[0].rbytes, m.io.usage[0].wbytes) == (1, 2)


def test_empty_stats_give_empty_metrics():
    assert v1.Metrics.FromString(to_any({"version": 1}).value) == v1.Metrics()
