"""Pure planning: OCI `linux.resources` -> the ordered cgroupfs writes that realise it.

Invariant: nothing here touches the filesystem. plan_v1/plan_v2 either return the complete
plan for a resources dict or raise InvalidSpec naming the first bad field; never a partial
plan. The order inside a plan is runc's order, and it matters (memsw raised before memory,
cfs_period retried after cfs_quota, devices.deny "a" before the allow lines). Whatever needs
to know the live state of the cgroup (which blkio weight file exists, the current memory
limit) is expressed as data on the Write (fallback/optional/retry_after) or as an argument,
so the executor stays a dumb loop.
"""

from runtime.errors import InvalidSpec
from runtime.record import Record
from runtime.record import field as _field

R = "linux.resources"
_CPU_LIST_CHARS = frozenset("0123456789,- ")
U64 = 2**64 - 1
I64 = 2**63 - 1


class Write(Record, frozen=True):
    """Write `value` to `file` in the cgroup dir of `controller` (v2: one dir; the controller
    is kept so the manager can check it is enabled). `field` names the spec field for errors."""
    controller: str
    file: str
    value: str
    optional: bool = False  # file missing (feature not in this kernel): skip silently
    fallback: tuple[str, str] | None = None  # file missing: write (file, value) instead
    retry_after: str | None = None  # EINVAL: retry once after a successful write to this file
    field: str = _field(default="", compare=False)


class DeviceRule(Record, frozen=True):
    """One OCI device cgroup rule; major/minor None = wildcard; access is canonical "rwm" order."""
    allow: bool
    type: str = "a"
    major: int | None = None
    minor: int | None = None
    access: str = "rwm"

    def v1_line(self) -> str:
        if self.type == "a":  # the kernel ignores everything after "a": it resets the list
            return "a"
        major = "*" if self.major is None else str(self.major)
        minor = "*" if self.minor is None else str(self.minor)
        return f"{self.type} {major}:{minor} {self.access}"


class DeviceFilter(Record, frozen=True):
    """v2 only: the device rules, compiled to eBPF and attached by runtime.cgroups.devices_bpf."""
    rules: tuple[DeviceRule, ...]
    controller: str = "devices"
    field: str = _field(default=f"{R}.devices", compare=False)


# --- typed accessors: every one names the JSON field it rejects ------------------------------

def _get(obj: dict, key: str, path: str, types, what: str):
    v = obj.get(key)
    # bool is an int subclass: a JSON true must not pass as a number
    if v is None or (isinstance(v, types) and not (isinstance(v, bool) and bool not in types)):
        return v
    raise InvalidSpec(f"{path}.{key}", f"must be {what}")


def _int(obj: dict, key: str, path: str, lo: int = -(2**63), hi: int = U64) -> int | None:
    v = _get(obj, key, path, (int,), "an integer")
    if v is not None and not lo <= v <= hi:
        raise InvalidSpec(f"{path}.{key}", f"must be between {lo} and {hi}, not {v}")
    return v


def _obj(obj: dict, key: str, path: str) -> dict:
    return _get(obj, key, path, (dict,), "an object") or {}


def _list(obj: dict, key: str, path: str) -> list[tuple[dict, str]]:
    """The list at obj[key] as (item, "path.key[i]") pairs, each item checked to be an object."""
    items = _get(obj, key, path, (list,), "an array") or []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidSpec(f"{path}.{key}[{i}]", "must be an object")
    return [(item, f"{path}.{key}[{i}]") for i, item in enumerate(items)]


def _dev(obj: dict, path: str) -> str:
    """"MAJ:MIN" of a blockIO device entry (both required by the spec)."""
    major = _int(obj, "major", path, 0, 2**32 - 1)
    minor = _int(obj, "minor", path, 0, 2**32 - 1)
    if major is None or minor is None:
        raise InvalidSpec(f"{path}.{'major' if major is None else 'minor'}", "is required")
    return f"{major}:{minor}"


# --- conversions (runc's, bit for bit) ----------------------------------------------------------

def shares_to_weight(shares: int) -> int:
    """cpu.shares [2, 262144] -> cpu.weight [1, 10000], runc's linear mapping."""
    return 1 + ((shares - 2) * 9999) // 262142


def blkio_weight_to_io_weight(weight: int) -> int:
    """blkio.weight [10, 1000] -> io.weight [1, 10000], runc's linear mapping."""
    return 1 + ((weight - 10) * 9999) // 990


def swap_v2(limit: int, swap: int, path: str) -> int:
    """OCI memory.swap is memory+swap; cgroup v2 memory.swap.max is swap alone.
    Returns 0 for "leave unset" and -1 for "max"."""
    if limit == -1 and swap == 0:
        return -1  # unlimited memory and swap unset: unlimited swap too, as on v1
    if swap in (-1, 0):
        return swap
    if limit in (0, -1):
        raise InvalidSpec(f"{path}.swap", "can only be set together with a memory limit")
    if swap < limit:
        raise InvalidSpec(f"{path}.swap", "is memory+swap and must be >= memory.limit")
    return swap - limit


def _max(v: int) -> str:
    return "max" if v == -1 else str(v)


# --- memory ----------------------------------------------------------------------------------

def _memory(res: dict):
    """(limit, reservation, swap, swappiness, disable_oom, path), validated; 0 = unset."""
    p = f"{R}.memory"
    m = _obj(res, "memory", R)
    limit = _int(m, "limit", p, -1, I64) or 0
    reservation = _int(m, "reservation", p, -1, I64) or 0
    swap = _int(m, "swap", p, -1, I64) or 0
    swappiness = _int(m, "swappiness", p, -1, U64)
    if swappiness is not None and swappiness > 100:
        raise InvalidSpec(f"{p}.swappiness", f"must be between 0 and 100, not {swappiness}")
    for ignored in ("kernel", "kernelTCP"):  # deprecated and gone from the kernel: typed only
        _int(m, ignored, p)
    for flag in ("useHierarchy", "checkBeforeUpdate"):
        _get(m, flag, p, (bool,), "a boolean")
    disable_oom = _get(m, "disableOOMKiller", p, (bool,), "a boolean") or False
    if swap > 0:
        swap_v2(limit, swap, p)  # the same sanity rules hold on v1 (the kernel EINVALs)
    return limit, reservation, swap, swappiness, disable_oom, p


def _memory_v1(res: dict, current_limit: int | None) -> list[Write]:
    limit, reservation, swap, swappiness, disable_oom, p = _memory(res)
    out = []
    lim = None
    if limit:
        lim = Write("memory", "memory.limit_in_bytes", str(limit), field=f"{p}.limit")
    sw = None
    if swap:
        sw = Write("memory", "memory.memsw.limit_in_bytes", str(swap), field=f"{p}.swap")
    elif limit == -1:  # unlimited memory means unlimited memsw too, if swap accounting exists
        sw = Write("memory", "memory.memsw.limit_in_bytes", "-1", optional=True, field=f"{p}.limit")
    # memsw must stay >= memory at every step: raise memsw first when it goes to -1 or above
    # the current memory limit, lower memory first otherwise.
    if lim and sw and (sw.value == "-1" or (current_limit is not None and current_limit < swap)):
        out += [sw, lim]
    else:
        out += [w for w in (lim, sw) if w]
    if reservation:
        out.append(Write("memory", "memory.soft_limit_in_bytes", str(reservation),
                         field=f"{p}.reservation"))
    if disable_oom:
        out.append(Write("memory", "memory.oom_control", "1", field=f"{p}.disableOOMKiller"))
    if swappiness is not None and swappiness != -1:
        out.append(Write("memory", "memory.swappiness", str(swappiness), field=f"{p}.swappiness"))
    return out


def _memory_v2(res: dict) -> list[Write]:
    # swappiness and disableOOMKiller have no v2 file; runc ignores them there, and so do we.
    limit, reservation, swap, _, _, p = _memory(res)
    out = []
    swap2 = swap_v2(limit, swap, p)
    if swap2 != 0 or swap > 0:  # swap == limit: swap2 is 0 and means "no swap", not "unset"
        value = _max(swap2)
        # no swap accounting in the kernel: "max"/"0" are what we already have, skip silently
        out.append(Write("memory", "memory.swap.max", value, optional=value in ("max", "0"),
                         field=f"{p}.swap"))
    if limit:
        out.append(Write("memory", "memory.max", _max(limit), field=f"{p}.limit"))
    if reservation:
        out.append(Write("memory", "memory.low", _max(reservation), field=f"{p}.reservation"))
    return out


# --- cpu, cpuset -------------------------------------------------------------------------------

def _cpu(res: dict) -> dict:
    p = f"{R}.cpu"
    c = _obj(res, "cpu", R)
    v = {"p": p,
         "shares": _int(c, "shares", p, 0, U64) or 0,
         "quota": _int(c, "quota", p, -1, I64) or 0,
         "period": _int(c, "period", p, 0, U64) or 0,
         "burst": _int(c, "burst", p, 0, U64),
         "rt_runtime": _int(c, "realtimeRuntime", p, -1, I64) or 0,
         "rt_period": _int(c, "realtimePeriod", p, 0, U64) or 0,
         "idle": _int(c, "idle", p, 0, 1),
         "cpus": _get(c, "cpus", p, (str,), "a string") or "",
         "mems": _get(c, "mems", p, (str,), "a string") or ""}
    if v["shares"] and not 2 <= v["shares"] <= 262144:
        # the kernel would clamp silently; runc reads back and fails, we fail up front
        raise InvalidSpec(f"{p}.shares", f"must be between 2 and 262144, not {v['shares']}")
    for key in ("cpus", "mems"):
        if not set(v[key]) <= _CPU_LIST_CHARS:
            raise InvalidSpec(f"{p}.{key}", f"must be a list like \"0-3,5\", not {v[key]!r}")
    return v


def _cpuset(c: dict) -> list[Write]:
    return [Write("cpuset", f"cpuset.{k}", c[k], field=f"{c['p']}.{k}")
            for k in ("cpus", "mems") if c[k]]


def _cpu_v1(c: dict) -> list[Write]:
    p, out = c["p"], []
    if c["shares"]:
        out.append(Write("cpu", "cpu.shares", str(c["shares"]), field=f"{p}.shares"))
    # A period smaller than the current one can be refused (EINVAL) until the quota is lowered:
    # retry it after the quota, as runc does. Same for the realtime pair.
    quota = "cpu.cfs_quota_us" if c["quota"] else None
    if c["period"]:
        out.append(Write("cpu", "cpu.cfs_period_us", str(c["period"]), retry_after=quota,
                         field=f"{p}.period"))
    if c["burst"] is not None:
        out.append(Write("cpu", "cpu.cfs_burst_us", str(c["burst"]), retry_after=quota,
                         field=f"{p}.burst"))
    if c["quota"]:
        out.append(Write("cpu", "cpu.cfs_quota_us", str(c["quota"]), field=f"{p}.quota"))
    if c["idle"] is not None:  # after shares: the kernel refuses shares on an idle group
        out.append(Write("cpu", "cpu.idle", str(c["idle"]), field=f"{p}.idle"))
    runtime = "cpu.rt_runtime_us" if c["rt_runtime"] else None
    if c["rt_period"]:
        out.append(Write("cpu", "cpu.rt_period_us", str(c["rt_period"]), retry_after=runtime,
                         field=f"{p}.realtimePeriod"))
    if c["rt_runtime"]:
        out.append(Write("cpu", "cpu.rt_runtime_us", str(c["rt_runtime"]),
                         field=f"{p}.realtimeRuntime"))
    return out


def _cpu_v2(c: dict) -> list[Write]:
    p, out = c["p"], []
    if c["rt_runtime"] or c["rt_period"]:
        key = "realtimeRuntime" if c["rt_runtime"] else "realtimePeriod"
        raise InvalidSpec(f"{p}.{key}", "realtime scheduling has no cgroup v2 interface")
    if c["shares"]:
        out.append(Write("cpu", "cpu.weight", str(shares_to_weight(c["shares"])),
                         field=f"{p}.shares"))
    if c["idle"] is not None:
        out.append(Write("cpu", "cpu.idle", str(c["idle"]), field=f"{p}.idle"))
    has_max = bool(c["quota"] or c["period"])
    if c["burst"] is not None:
        out.append(Write("cpu", "cpu.max.burst", str(c["burst"]),
                         retry_after="cpu.max" if has_max else None, field=f"{p}.burst"))
    if has_max:
        value = str(c["quota"]) if c["quota"] > 0 else "max"
        if c["period"]:  # no period: the kernel keeps the current one
            value += f" {c['period']}"
        out.append(Write("cpu", "cpu.max", value,
                         field=f"{p}.quota" if c["quota"] else f"{p}.period"))
    return out


# --- pids ----------------------------------------------------------------------------------------

def _pids(res: dict) -> list[Write]:
    p = f"{R}.pids"
    limit = _int(_obj(res, "pids", R), "limit", p, -(2**63), I64)
    if limit is None:
        return []
    return [Write("pids", "pids.max", str(limit) if limit > 0 else "max", field=f"{p}.limit")]


# --- block I/O -----------------------------------------------------------------------------------

_THROTTLES = (("throttleReadBpsDevice", "read_bps_device", "rbps"),
              ("throttleWriteBpsDevice", "write_bps_device", "wbps"),
              ("throttleReadIOPSDevice", "read_iops_device", "riops"),
              ("throttleWriteIOPSDevice", "write_iops_device", "wiops"))


def _weight(obj: dict, key: str, path: str) -> int | None:
    return _int(obj, key, path, 10, 1000) or None


def _blkio(res: dict) -> tuple[dict, str]:
    return _obj(res, "blockIO", R), f"{R}.blockIO"


def _blkio_v1(res: dict) -> list[Write]:
    b, p = _blkio(res)
    out = []

    def weight(file, value, field):
        # CFQ's blkio.weight is gone from modern kernels; BFQ's file takes the same values.
        return Write("blkio", f"blkio.{file}", value, fallback=(f"blkio.bfq.{file}", value),
                     field=field)
    if (w := _weight(b, "weight", p)) is not None:
        out.append(weight("weight", str(w), f"{p}.weight"))
    if (w := _weight(b, "leafWeight", p)) is not None:
        out.append(Write("blkio", "blkio.leaf_weight", str(w), field=f"{p}.leafWeight"))
    for d, dp in _list(b, "weightDevice", p):
        dev = _dev(d, dp)
        if (w := _weight(d, "weight", dp)) is not None:
            out.append(weight("weight_device", f"{dev} {w}", f"{dp}.weight"))
        if (w := _weight(d, "leafWeight", dp)) is not None:
            out.append(Write("blkio", "blkio.leaf_weight_device", f"{dev} {w}",
                             field=f"{dp}.leafWeight"))
    for key, file, _ in _THROTTLES:
        for d, dp in _list(b, key, p):
            rate = _int(d, "rate", dp, 0, U64) or 0
            out.append(Write("blkio", f"blkio.throttle.{file}", f"{_dev(d, dp)} {rate}", field=dp))
    return out


def _blkio_v2(res: dict) -> list[Write]:
    # leafWeight has no v2 equivalent (runc ignores it too).
    b, p = _blkio(res)
    out = []

    def weight(value, converted, field):
        # BFQ, when present, takes blkio-scale weights; otherwise io.weight, rescaled (runc).
        return Write("io", "io.bfq.weight", value, fallback=("io.weight", converted), field=field)
    if (w := _weight(b, "weight", p)) is not None:
        out.append(weight(str(w), str(blkio_weight_to_io_weight(w)), f"{p}.weight"))
    _weight(b, "leafWeight", p)
    for d, dp in _list(b, "weightDevice", p):
        dev = _dev(d, dp)
        _weight(d, "leafWeight", dp)
        if (w := _weight(d, "weight", dp)) is not None:
            out.append(weight(f"{dev} {w}", f"{dev} {blkio_weight_to_io_weight(w)}",
                              f"{dp}.weight"))
    limits: dict[str, list[str]] = {}  # one io.max line per device, keys in a fixed order
    fields: dict[str, str] = {}
    for key, _, name in _THROTTLES:
        for d, dp in _list(b, key, p):
            dev = _dev(d, dp)
            limits.setdefault(dev, []).append(f"{name}={_int(d, 'rate', dp, 0, U64) or 0}")
            fields.setdefault(dev, dp)
    out += [Write("io", "io.max", f"{dev} {' '.join(kv)}", field=fields[dev])
            for dev, kv in limits.items()]
    return out


# --- hugetlb, network, rdma, unified -------------------------------------------------------------

def _hugetlb(res: dict, limit_file: str, rsvd_file: str) -> list[Write]:
    out = []
    for h, hp in _list(res, "hugepageLimits", R):
        size = _get(h, "pageSize", hp, (str,), "a string")
        import re  # on use: ~5 ms of start-up
        if not size or not re.fullmatch(r"[0-9]+[KMGTP]B", size):
            raise InvalidSpec(f"{hp}.pageSize", f"must be a size like \"2MB\", not {size!r}")
        limit = _int(h, "limit", hp, 0, U64)
        if limit is None:
            raise InvalidSpec(f"{hp}.limit", "is required")
        out.append(Write("hugetlb", f"hugetlb.{size}.{limit_file}", str(limit),
                         field=f"{hp}.limit"))
        # runc also caps reservations (kernel 5.7+) at the same value when the file exists
        out.append(Write("hugetlb", f"hugetlb.{size}.{rsvd_file}", str(limit), optional=True,
                         field=f"{hp}.limit"))
    return out


def _network_v1(res: dict) -> list[Write]:
    p = f"{R}.network"
    n = _obj(res, "network", R)
    out = []
    if (cid := _int(n, "classID", p, 0, 2**32 - 1)) is not None:
        out.append(Write("net_cls", "net_cls.classid", str(cid), field=f"{p}.classID"))
    for prio, pp in _list(n, "priorities", p):
        name = _get(prio, "name", pp, (str,), "a string")
        if not name:
            raise InvalidSpec(f"{pp}.name", "is required")
        value = _int(prio, "priority", pp, 0, 2**32 - 1) or 0
        out.append(Write("net_prio", "net_prio.ifpriomap", f"{name} {value}", field=pp))
    return out


def _rdma(res: dict) -> list[Write]:
    p = f"{R}.rdma"
    out = []
    for dev, lim in _obj(res, "rdma", R).items():
        dp = f"{p}.{dev}"
        if not isinstance(lim, dict):
            raise InvalidSpec(dp, "must be an object")
        handles = _int(lim, "hcaHandles", dp, 0, 2**32 - 1)
        objects = _int(lim, "hcaObjects", dp, 0, 2**32 - 1)
        line = dev + (f" hca_handle={handles}" if handles is not None else "") \
            + (f" hca_object={objects}" if objects is not None else "")
        if line != dev:
            out.append(Write("rdma", "rdma.max", line, field=dp))
    return out


def _unified(res: dict) -> list[Write]:
    p = f"{R}.unified"
    out = []
    for key, value in _obj(res, "unified", R).items():
        kp = f"{p}[{key!r}]"
        import re  # on use: ~5 ms of start-up
        if "/" in key or not re.fullmatch(r"[a-z_]+\.[A-Za-z0-9_.]+", key):
            raise InvalidSpec(kp, "must be a cgroup file name of the form CONTROLLER.PARAMETER")
        if not isinstance(value, str):
            raise InvalidSpec(kp, "must be a string")
        # controller "" = no up-front check: some keys (cgroup.*, cpu.idle...) need no controller
        out.append(Write("", key, value, field=kp))
    return out


def _not_on_v2(res: dict) -> None:
    n = _obj(res, "network", R)
    for key in ("classID", "priorities"):
        if n.get(key) not in (None, []):
            raise InvalidSpec(f"{R}.network.{key}", "net_cls/net_prio have no cgroup v2 interface")


# --- devices -------------------------------------------------------------------------------------

def device_rules(res: dict) -> tuple[DeviceRule, ...] | None:
    """linux.resources.devices as DeviceRules; None when the key is absent (leave devices be)."""
    if res.get("devices") is None:
        return None
    rules = []
    for d, dp in _list(res, "devices", R):
        allow = _get(d, "allow", dp, (bool,), "a boolean")
        if allow is None:
            raise InvalidSpec(f"{dp}.allow", "is required")
        kind = _get(d, "type", dp, (str,), "a string") or "a"
        if kind not in ("a", "b", "c"):
            raise InvalidSpec(f"{dp}.type", f"must be \"a\", \"b\" or \"c\", not {kind!r}")
        # -1 is how some generators spell "wildcard"; absent is the spec's spelling
        major = _int(d, "major", dp, -1, 2**31 - 1)
        minor = _int(d, "minor", dp, -1, 2**31 - 1)
        access = _get(d, "access", dp, (str,), "a string")
        if not access or set(access) - set("rwm"):
            raise InvalidSpec(f"{dp}.access",
                              f"must be a non-empty subset of \"rwm\", not {access!r}")
        rules.append(DeviceRule(allow, kind, None if major in (None, -1) else major,
                                None if minor in (None, -1) else minor,
                                "".join(c for c in "rwm" if c in access)))
    return tuple(rules)


def _devices_v1(res: dict) -> list[Write]:
    rules = device_rules(res)
    if rules is None:
        return []
    f = f"{R}.devices"
    out = [Write("devices", "devices.deny", "a", field=f)]  # start from "nothing allowed"
    for i, r in enumerate(rules):
        out.append(Write("devices", "devices.allow" if r.allow else "devices.deny", r.v1_line(),
                         field=f"{f}[{i}]"))
    return out


# runc's built-in allow list (specconv.AllowedDevices), appended after the spec's own rules.
DEFAULT_DEVICE_RULES = (
    DeviceRule(True, "c", None, None, "m"),   # mknod of any char device
    DeviceRule(True, "b", None, None, "m"),   # mknod of any block device
    DeviceRule(True, "c", 1, 3, "rwm"),       # /dev/null
    DeviceRule(True, "c", 1, 8, "rwm"),       # /dev/random
    DeviceRule(True, "c", 1, 7, "rwm"),       # /dev/full
    DeviceRule(True, "c", 5, 0, "rwm"),       # /dev/tty
    DeviceRule(True, "c", 1, 5, "rwm"),       # /dev/zero
    DeviceRule(True, "c", 1, 9, "rwm"),       # /dev/urandom
    DeviceRule(True, "c", 136, None, "rwm"),  # /dev/pts/*
    DeviceRule(True, "c", 5, 2, "rwm"),       # /dev/ptmx
    DeviceRule(True, "c", 10, 200, "rwm"),    # /dev/net/tun
)


def _rule_dict(r: DeviceRule) -> dict:
    d = {"allow": r.allow, "type": r.type, "access": r.access}
    d.update({k: v for k, v in (("major", r.major), ("minor", r.minor)) if v is not None})
    return d


def with_default_devices(resources: dict | None, linux_devices=()) -> dict:
    """A copy of `resources` whose device list is what runc enforces: the spec's rules, then
    runc's built-in allow list, then rwm for every node in linux.devices (dicts or objects with
    type/major/minor; fifos need no rule, "u" is a char device)."""
    res = dict(resources or {})
    rules = list(res.get("devices") or [])
    rules += [_rule_dict(r) for r in DEFAULT_DEVICE_RULES]
    for dev in linux_devices:
        get = dev.get if isinstance(dev, dict) else (lambda k, _d=dev: getattr(_d, k, None))
        kind = get("type")
        # a node without numbers must not turn into a wildcard rule: it gets no rule at all
        if kind in ("c", "u", "b") and isinstance(get("major"), int) \
                and isinstance(get("minor"), int):
            rules.append({"allow": True, "type": "b" if kind == "b" else "c",
                          "major": get("major"), "minor": get("minor"), "access": "rwm"})
    res["devices"] = rules
    return res


# --- the plans -----------------------------------------------------------------------------------

def _check(resources) -> dict:
    if resources is None:
        return {}
    if not isinstance(resources, dict):
        raise InvalidSpec(R, "must be an object")
    return resources


def plan_v1(resources: dict | None, current_memory_limit: int | None = None) -> list[Write]:
    """cgroup v1 writes, in runc's subsystem order. `current_memory_limit` (the live
    memory.limit_in_bytes, when known) decides whether memsw or memory is written first."""
    res = _check(resources)
    if _obj(res, "unified", R):
        raise InvalidSpec(f"{R}.unified", "needs cgroup v2; this host uses cgroup v1")
    cpu = _cpu(res)
    return (_cpuset(cpu) + _devices_v1(res) + _memory_v1(res, current_memory_limit)
            + _cpu_v1(cpu) + _pids(res) + _blkio_v1(res)
            + _hugetlb(res, "limit_in_bytes", "rsvd.limit_in_bytes")
            + _network_v1(res) + _rdma(res))


def plan_v2(resources: dict | None) -> list[Write | DeviceFilter]:
    """cgroup v2 writes, in runc's order; device rules become one DeviceFilter item (an eBPF
    program, v2 has no devices files). `unified` comes last so it overrides what precedes."""
    res = _check(resources)
    _not_on_v2(res)
    cpu = _cpu(res)
    rules = device_rules(res)
    devices = [DeviceFilter(rules)] if rules is not None else []
    return (_pids(res) + _memory_v2(res) + _blkio_v2(res) + _cpu_v2(cpu) + devices
            + _cpuset(cpu) + _hugetlb(res, "max", "rsvd.max") + _rdma(res) + _unified(res))
