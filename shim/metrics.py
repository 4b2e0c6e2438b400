"""Engine cgroup stats (plain dicts, runtime/cgroups) -> containerd's Metrics protos for Stats.

v1 -> io.containerd.cgroups.v1.Metrics, v2 -> io.containerd.cgroups.v2.Metrics, packed in an
Any whose type_url is the bare full name (as containerd's typeurl registers them). Missing
sections stay unset; values are copied, never invented.
"""

from __future__ import annotations

from proto import wkt_lite as wkt
from proto.cgroups.v1 import metrics_lite as v1
from proto.cgroups.v2 import metrics_lite as v2

# memory.stat keys -> MemoryStat fields where the names differ (v1); the rest match by name.
_V1_MEMORY_RENAMES = {"pgpgin": "pg_pg_in", "pgpgout": "pg_pg_out", "pgfault": "pg_fault",
                      "pgmajfault": "pg_maj_fault", "hierarchical_memsw_limit":
                      "hierarchical_swap_limit", "total_pgpgin": "total_pg_pg_in",
                      "total_pgpgout": "total_pg_pg_out", "total_pgfault": "total_pg_fault",
                      "total_pgmajfault": "total_pg_maj_fault"}


def to_any(stats: dict) -> wkt.Any:
    message = metrics_v2(stats) if stats.get("version") == 2 else metrics_v1(stats)
    return wkt.Any(type_url=message.DESCRIPTOR.full_name, value=message.SerializeToString())


def _fill(message, values: dict, renames: dict | None = None) -> None:
    """Copy values whose (renamed) key is a scalar field of message; ignore the rest."""
    fields = message.DESCRIPTOR.fields_by_name
    for key, value in values.items():
        name = (renames or {}).get(key, key)
        field = fields.get(name)
        if field is not None and field.message_type is None and not field.is_repeated:
            setattr(message, name, value)


def metrics_v1(stats: dict) -> v1.Metrics:
    m = v1.Metrics()
    if "pids" in stats:
        _fill(m.pids, stats["pids"])
    if "cpu" in stats:
        usage = stats["cpu"].get("usage", {})
        _fill(m.cpu.usage, usage)
        m.cpu.usage.per_cpu.extend(usage.get("per_cpu", []))
        _fill(m.cpu.throttling, stats["cpu"].get("throttling", {}))
    if "memory" in stats:
        mem = stats["memory"]
        _fill(m.memory, mem.get("stat", {}), _V1_MEMORY_RENAMES)
        for key in ("usage", "swap", "kernel", "kernel_tcp"):
            if isinstance(mem.get(key), dict):
                _fill(getattr(m.memory, key), mem[key])
    for key, entries in stats.get("blkio", {}).items():
        target = getattr(m.blkio, key, None)
        for e in entries or ():
            if target is not None:
                _fill(target.add(), e)
    for h in stats.get("hugetlb", ()):
        _fill(m.hugetlb.add(), h)
    return m


def metrics_v2(stats: dict) -> v2.Metrics:
    m = v2.Metrics()
    if "pids" in stats:
        _fill(m.pids, stats["pids"])
    if "cpu" in stats:
        _fill(m.cpu, stats["cpu"])
    if "memory" in stats:
        mem = stats["memory"]
        _fill(m.memory, mem.get("stat", {}))
        _fill(m.memory, {k: v for k, v in mem.items() if k != "stat"})
    if "memory_events" in stats:
        _fill(m.memory_events, stats["memory_events"])
    for e in stats.get("io", {}).get("usage", ()):
        _fill(m.io.usage.add(), e)
    for h in stats.get("hugetlb", ()):
        _fill(m.hugetlb.add(), h)
    return m
