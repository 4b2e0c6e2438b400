"""config.json -> typed, validated records (runtime.record).

Invariant: parse() either returns a Spec whose every field has the right type and shape, or
raises InvalidSpec naming the JSON path of the first bad field ("mounts[2].destination").
Unknown extra fields are tolerated. linux.resources and linux.seccomp are kept as raw
dicts here; runtime.cgroups and runtime.seccomp validate them (naming the field the same way).
"""


from . import ospath
from . import caps as _caps
from . import fastjson as json
from .errors import InvalidSpec
from .record import Record, field
from .sys.consts import NAMESPACE_FLAGS

_JSON_TYPES = {str: "string", int: "integer", bool: "boolean", dict: "object", list: "array"}
_RLIMITS = {"RLIMIT_AS", "RLIMIT_CORE", "RLIMIT_CPU", "RLIMIT_DATA", "RLIMIT_FSIZE",
            "RLIMIT_LOCKS", "RLIMIT_MEMLOCK", "RLIMIT_MSGQUEUE", "RLIMIT_NICE", "RLIMIT_NOFILE",
            "RLIMIT_NPROC", "RLIMIT_RSS", "RLIMIT_RTPRIO", "RLIMIT_RTTIME", "RLIMIT_SIGPENDING",
            "RLIMIT_STACK"}
_HOOK_KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
               "poststop")
SCHED_POLICIES = {"SCHED_OTHER": 0, "SCHED_FIFO": 1, "SCHED_RR": 2, "SCHED_BATCH": 3,
                  "SCHED_ISO": 4, "SCHED_IDLE": 5, "SCHED_DEADLINE": 6}
SCHED_FLAGS = {"SCHED_FLAG_RESET_ON_FORK": 0x01, "SCHED_FLAG_RECLAIM": 0x02,
               "SCHED_FLAG_DL_OVERRUN": 0x04, "SCHED_FLAG_KEEP_POLICY": 0x08,
               "SCHED_FLAG_KEEP_PARAMS": 0x10, "SCHED_FLAG_UTIL_CLAMP_MIN": 0x20,
               "SCHED_FLAG_UTIL_CLAMP_MAX": 0x40}
IOPRIO_CLASSES = {"IOPRIO_CLASS_RT": 1, "IOPRIO_CLASS_BE": 2, "IOPRIO_CLASS_IDLE": 3}
IOPRIO_CLASS_SHIFT = 13
PERSONALITY_DOMAINS = {"LINUX": 0x0000, "LINUX32": 0x0008}
TIME_CLOCKS = ("boottime", "monotonic")
_PROPAGATIONS = ("shared", "slave", "private", "unbindable",
                 "rshared", "rslave", "rprivate", "runbindable")


class User(Record):
    uid: int = 0
    gid: int = 0
    umask: int | None = None
    additional_gids: list[int] = field(list)


class Capabilities(Record):
    """Masks (bit n = capability n) of the names caps.NAMES knows; `unknown` lists the others,
    left out, as (field, name) for check_process_supported's warning."""
    bounding: int = 0
    effective: int = 0
    inheritable: int = 0
    permitted: int = 0
    ambient: int = 0
    unknown: tuple = ()


class Rlimit(Record):
    type: str
    soft: int
    hard: int


class Scheduler(Record):
    """process.scheduler, for sched_setattr(2): policy and flags as the kernel's numbers."""
    policy: int
    nice: int = 0
    priority: int = 0
    flags: int = 0
    runtime: int = 0
    deadline: int = 0
    period: int = 0


class IOPriority(Record):
    """process.ioPriority, for ioprio_set(2): the class's number and the level (0-7)."""
    klass: int
    priority: int = 0

    def value(self) -> int:
        return self.klass << IOPRIO_CLASS_SHIFT | self.priority


class ExecCPUAffinity(Record):
    """process.execCPUAffinity (runtime-spec 1.2), for an exec'd process only: the CPUs its
    runtime-side parent runs on before it joins the container's cgroup (initial), and its own
    CPUs once inside (final; None: all the cgroup's cpuset allows, as for every process)."""
    initial: frozenset | None = None
    final: frozenset | None = None


class Process(Record):
    args: list[str]
    cwd: str
    env: list[str] = field(list)
    terminal: bool = False
    console_size: tuple[int, int] | None = None  # (height, width)
    user: User = field(User)
    capabilities: Capabilities | None = None  # None: leave the capabilities alone, like runc
    rlimits: list[Rlimit] = field(list)
    no_new_privileges: bool = False
    oom_score_adj: int | None = None
    scheduler: Scheduler | None = None
    io_priority: IOPriority | None = None
    apparmor_profile: str = ""  # applied by init.become() where the host has the LSM
    selinux_label: str = ""
    exec_cpu_affinity: ExecCPUAffinity | None = None

    def env_dict(self) -> dict[str, str]:
        return dict(e.split("=", 1) for e in self.env)


class Root(Record):
    path: str
    readonly: bool = False


class Mount(Record):
    destination: str
    type: str | None = None
    source: str | None = None
    options: list[str] = field(list)
    uid_mappings: list["IDMapping"] = field(list)  # an idmapped mount's (runtime-spec 1.1)
    gid_mappings: list["IDMapping"] = field(list)

    def idmapped(self) -> bool:
        return bool(self.uid_mappings or self.gid_mappings
                    or "idmap" in self.options or "ridmap" in self.options)


class Hook(Record):
    path: str
    args: list[str] = field(list)
    env: list[str] = field(list)
    timeout: int | None = None


class Namespace(Record):
    type: str
    path: str | None = None


class IDMapping(Record):
    container_id: int
    host_id: int
    size: int


class Device(Record):
    path: str
    type: str
    major: int = 0
    minor: int = 0
    file_mode: int = 0o666
    uid: int = 0
    gid: int = 0


class Linux(Record):
    namespaces: list[Namespace] = field(list)
    uid_mappings: list[IDMapping] = field(list)
    gid_mappings: list[IDMapping] = field(list)
    devices: list[Device] = field(list)
    cgroups_path: str | None = None
    resources: dict | None = None
    sysctl: dict[str, str] = field(dict)
    masked_paths: list[str] = field(list)
    readonly_paths: list[str] = field(list)
    rootfs_propagation: str | None = None
    seccomp: dict | None = None
    personality: int | None = None  # personality(2)'s domain (PER_LINUX, PER_LINUX32)
    time_offsets: dict[str, tuple[int, int]] = field(dict)  # clock -> (secs, nanosecs)
    net_devices: dict[str, str] = field(dict)  # host interface -> its name in the container
    mount_label: str = ""
    intel_rdt: dict | None = None


class Spec(Record):
    oci_version: str
    root: Root
    process: Process | None = None
    hostname: str | None = None
    domainname: str | None = None
    mounts: list[Mount] = field(list)
    hooks: dict[str, list[Hook]] = field(dict)
    annotations: dict[str, str] = field(dict)
    linux: Linux = field(Linux)
    raw: dict = field(dict, repr=False, compare=False)

    def namespace(self, type: str) -> Namespace | None:
        return next((n for n in self.linux.namespaces if n.type == type), None)

    def new_namespace(self, type: str) -> bool:
        """True when the container gets a fresh namespace of this type (not a joined one)."""
        ns = self.namespace(type)
        return ns is not None and ns.path is None


# --- field access ----------------------------------------------------------------------------
def _type_name(v) -> str:
    return "null" if v is None else _JSON_TYPES.get(type(v), type(v).__name__)


def _check(value, kind: type, path: str):
    # bool is an int subclass in Python but not a JSON integer.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidSpec(path, f"expected {_JSON_TYPES[kind]}, got {_type_name(value)}")
    return value


def _get(obj: dict, key: str, kind: type, path: str, default=None, required=False):
    p = f"{path}.{key}" if path else key
    if key not in obj or obj[key] is None:
        if required:
            raise InvalidSpec(p, "is required")
        return default
    return _check(obj[key], kind, p)


def _list(obj: dict, key: str, kind: type, path: str) -> list:
    p = f"{path}.{key}" if path else key
    items = _get(obj, key, list, path, default=[])
    return [_check(v, kind, f"{p}[{i}]") for i, v in enumerate(items)]


def _objects(obj: dict, key: str, path: str):
    """(item, item_path) for a list of objects."""
    p = f"{path}.{key}" if path else key
    return [(_check(v, dict, f"{p}[{i}]"), f"{p}[{i}]")
            for i, v in enumerate(_get(obj, key, list, path, default=[]))]


def _absolute(value: str, path: str) -> str:
    if not value.startswith("/"):
        raise InvalidSpec(path, f"must be an absolute path, got {value!r}")
    return value


def _str_map(obj: dict, key: str, path: str) -> dict[str, str]:
    p = f"{path}.{key}" if path else key
    m = _get(obj, key, dict, path, default={})
    return {k: _check(v, str, f"{p}.{k}") for k, v in m.items()}


# --- sections --------------------------------------------------------------------------------
def _parse_user(obj: dict, path: str) -> User:
    return User(uid=_uint(obj, "uid", path, required=True),
                gid=_uint(obj, "gid", path, required=True),
                umask=_uint(obj, "umask", path),
                additional_gids=_list(obj, "additionalGids", int, path))


def _uint(obj, key, path, required=False, default=None):
    v = _get(obj, key, int, path, default=default, required=required)
    if v is not None and v < 0:
        raise InvalidSpec(f"{path}.{key}", f"must not be negative, got {v}")
    return v


def _parse_caps(obj: dict, path: str) -> Capabilities:
    unknown: list = []
    masks = {s: _caps.to_mask(_list(obj, s, str, path), f"{path}.{s}", unknown=unknown)
             for s in _caps.SETS}
    return Capabilities(**masks, unknown=tuple(unknown))


def _parse_rlimits(obj: dict, path: str) -> list[Rlimit]:
    out, seen = [], set()
    for r, p in _objects(obj, "rlimits", path):
        t = _get(r, "type", str, p, required=True)
        if t not in _RLIMITS:
            raise InvalidSpec(f"{p}.type", f"unknown rlimit {t!r}")
        if t in seen:
            raise InvalidSpec(f"{p}.type", f"duplicate rlimit {t!r}")
        seen.add(t)
        soft, hard = _uint(r, "soft", p, required=True), _uint(r, "hard", p, required=True)
        if soft > hard:
            raise InvalidSpec(f"{p}.soft", f"soft limit {soft} exceeds hard limit {hard}")
        out.append(Rlimit(t, soft, hard))
    return out


def _int_in(obj: dict, key: str, path: str, lo: int, hi: int, default=0) -> int:
    v = _get(obj, key, int, path, default=default)
    if v is not None and not lo <= v <= hi:
        raise InvalidSpec(f"{path}.{key}", f"must be within [{lo}, {hi}], got {v}")
    return v


def _parse_scheduler(obj: dict, path: str) -> Scheduler:
    """runc's validation: nice in [-20, 19]; a priority only for SCHED_FIFO/SCHED_RR (and then
    1-99, the kernel's range); runtime/deadline/period only for SCHED_DEADLINE."""
    name = _get(obj, "policy", str, path, required=True)
    if name not in SCHED_POLICIES:
        raise InvalidSpec(f"{path}.policy", f"unknown policy {name!r}")
    flags = 0
    for i, f in enumerate(_list(obj, "flags", str, path)):
        if f not in SCHED_FLAGS:
            raise InvalidSpec(f"{path}.flags[{i}]", f"unknown flag {f!r}")
        flags |= SCHED_FLAGS[f]
    u64 = 2**64 - 1
    sched = Scheduler(SCHED_POLICIES[name], _int_in(obj, "nice", path, -20, 19),
                      _int_in(obj, "priority", path, -(2**31), 2**31 - 1), flags,
                      _int_in(obj, "runtime", path, 0, u64), _int_in(obj, "deadline", path, 0, u64),
                      _int_in(obj, "period", path, 0, u64))
    realtime = name in ("SCHED_FIFO", "SCHED_RR")
    if sched.priority and not realtime:
        raise InvalidSpec(f"{path}.priority", "can only be set for SCHED_FIFO or SCHED_RR")
    if realtime and not 1 <= sched.priority <= 99:
        raise InvalidSpec(f"{path}.priority", f"must be within [1, 99] for {name}, "
                                              f"got {sched.priority}")
    if name != "SCHED_DEADLINE":
        for key in ("runtime", "deadline", "period"):
            if getattr(sched, key):
                raise InvalidSpec(f"{path}.{key}", "can only be set for SCHED_DEADLINE")
    elif not sched.runtime <= (sched.deadline or sched.runtime) <= (sched.period or u64):
        raise InvalidSpec(f"{path}.runtime", "SCHED_DEADLINE needs runtime <= deadline <= "
                                             "period")
    if name == "SCHED_ISO":
        raise InvalidSpec(f"{path}.policy", "SCHED_ISO is not implemented by Linux")
    return sched


def _parse_io_priority(obj: dict, path: str) -> IOPriority:
    klass = _get(obj, "class", str, path, required=True)
    if klass not in IOPRIO_CLASSES:
        raise InvalidSpec(f"{path}.class", f"unknown class {klass!r}")
    return IOPriority(IOPRIO_CLASSES[klass], _int_in(obj, "priority", path, 0, 7))


MAX_CPUS = 8192  # the kernel's largest NR_CPUS


def parse_cpu_list(text: str, path: str) -> frozenset | None:
    """A kernel CPU list ("0-3,7") as the set of its CPUs; "" is None (not set)."""
    if text == "":
        return None
    cpus = set()
    for part in text.split(","):
        first, dash, last = part.partition("-")
        if not (first.isdigit() and first.isascii() and
                (not dash or last.isdigit() and last.isascii())):
            raise InvalidSpec(path, f"expected a CPU list such as \"0-3,7\", got {text!r}")
        lo, hi = int(first), int(last) if dash else int(first)
        if lo > hi or hi >= MAX_CPUS:
            raise InvalidSpec(path, f"bad CPU range {part!r} in {text!r} (CPUs are 0-"
                                    f"{MAX_CPUS - 1}, the lower first)")
        cpus.update(range(lo, hi + 1))
    return frozenset(cpus)


def _parse_exec_cpu_affinity(obj: dict, path: str) -> ExecCPUAffinity | None:
    initial = parse_cpu_list(_get(obj, "initial", str, path, default=""), f"{path}.initial")
    final = parse_cpu_list(_get(obj, "final", str, path, default=""), f"{path}.final")
    return None if initial is None and final is None else ExecCPUAffinity(initial, final)


def parse_process(obj) -> Process:
    """Validate an OCI process object: config.json's "process", or the one an exec sends.
    Errors name the field as "process.<path>" in both cases."""
    P = "process"
    _check(obj, dict, P)
    args = _list(obj, "args", str, P)
    if not args:
        raise InvalidSpec(f"{P}.args", "must be a non-empty array")
    cwd = _absolute(_get(obj, "cwd", str, P, required=True), f"{P}.cwd")
    env = _list(obj, "env", str, P)
    for i, e in enumerate(env):
        if "=" not in e:
            raise InvalidSpec(f"{P}.env[{i}]", f"expected KEY=VALUE, got {e!r}")
    size = _get(obj, "consoleSize", dict, P)
    user = _get(obj, "user", dict, P)
    caps = _get(obj, "capabilities", dict, P)
    sched = _get(obj, "scheduler", dict, P)
    ioprio = _get(obj, "ioPriority", dict, P)
    affinity = _get(obj, "execCPUAffinity", dict, P)
    oom = _get(obj, "oomScoreAdj", int, P)
    if oom is not None and not -1000 <= oom <= 1000:
        raise InvalidSpec(f"{P}.oomScoreAdj", f"must be within [-1000, 1000], got {oom}")
    return Process(
        args=args, cwd=cwd, env=env,
        terminal=_get(obj, "terminal", bool, P, default=False),
        console_size=None if size is None else (
            _uint(size, "height", f"{P}.consoleSize", required=True),
            _uint(size, "width", f"{P}.consoleSize", required=True)),
        user=User() if user is None else _parse_user(user, f"{P}.user"),
        capabilities=None if caps is None else _parse_caps(caps, f"{P}.capabilities"),
        rlimits=_parse_rlimits(obj, P),
        no_new_privileges=_get(obj, "noNewPrivileges", bool, P, default=False),
        oom_score_adj=oom,
        scheduler=None if sched is None else _parse_scheduler(sched, f"{P}.scheduler"),
        io_priority=None if ioprio is None else _parse_io_priority(ioprio, f"{P}.ioPriority"),
        apparmor_profile=_get(obj, "apparmorProfile", str, P, default=""),
        selinux_label=_get(obj, "selinuxLabel", str, P, default=""),
        exec_cpu_affinity=None if affinity is None else _parse_exec_cpu_affinity(
            affinity, f"{P}.execCPUAffinity"))


def _parse_mounts(obj: dict) -> list[Mount]:
    out = []
    for m, p in _objects(obj, "mounts", ""):
        dest = _absolute(_get(m, "destination", str, p, required=True), f"{p}.destination")
        out.append(Mount(dest, _get(m, "type", str, p), _get(m, "source", str, p),
                         _list(m, "options", str, p), _parse_mappings(m, "uidMappings", p),
                         _parse_mappings(m, "gidMappings", p)))
    return out


def _parse_hook(h: dict, p: str) -> Hook:
    timeout = _uint(h, "timeout", p)
    if timeout == 0:
        raise InvalidSpec(f"{p}.timeout", "must be greater than zero")
    return Hook(_absolute(_get(h, "path", str, p, required=True), f"{p}.path"),
                _list(h, "args", str, p), _list(h, "env", str, p), timeout)


def _parse_hooks(obj: dict) -> dict[str, list[Hook]]:
    hooks = _get(obj, "hooks", dict, "", default={})
    out = {kind: [_parse_hook(h, p) for h, p in _objects(hooks, kind, "hooks")]
           for kind in _HOOK_KINDS}
    return {k: v for k, v in out.items() if v}


def _parse_namespaces(obj: dict, path: str) -> list[Namespace]:
    out, seen = [], set()
    for n, p in _objects(obj, "namespaces", path):
        t = _get(n, "type", str, p, required=True)
        if t not in NAMESPACE_FLAGS:
            raise InvalidSpec(f"{p}.type", f"unknown namespace type {t!r}")
        if t in seen:
            raise InvalidSpec(f"{p}.type", f"duplicate namespace type {t!r}")
        seen.add(t)
        ns_path = _get(n, "path", str, p)
        out.append(Namespace(t, None if ns_path is None else _absolute(ns_path, f"{p}.path")))
    return out


_ID_LIMIT = 2**32  # ids are 32 bits; (uid_t)-1 is never valid, so a range ends at 2**32 - 1
MAX_ID_MAPPINGS = 340  # the kernel's limit on the lines of a uid_map / gid_map (Linux >= 4.15)


def _parse_mappings(obj: dict, key: str, path: str) -> list[IDMapping]:
    """What the kernel would refuse when the parent writes /proc/<pid>/uid_map, refused here
    with the field named: an empty or overflowing range, ranges overlapping on either side."""
    out = []
    items = _objects(obj, key, path)
    if len(items) > MAX_ID_MAPPINGS:
        raise InvalidSpec(f"{path}.{key}", f"at most {MAX_ID_MAPPINGS} mappings, got {len(items)}")
    for m, p in items:
        mapping = IDMapping(_uint(m, "containerID", p, required=True),
                            _uint(m, "hostID", p, required=True),
                            _uint(m, "size", p, required=True))
        if mapping.size == 0:
            raise InvalidSpec(f"{p}.size", "must be greater than zero")
        for side in ("containerID", "hostID"):
            start = mapping.container_id if side == "containerID" else mapping.host_id
            if start + mapping.size >= _ID_LIMIT:
                raise InvalidSpec(f"{p}.{side}", f"{start} + size {mapping.size} is past the "
                                  "largest id")
        for i, other in enumerate(out):
            for side, a, b in (("containerID", mapping.container_id, other.container_id),
                               ("hostID", mapping.host_id, other.host_id)):
                if a < b + other.size and b < a + mapping.size:
                    raise InvalidSpec(f"{p}.{side}", f"range overlaps {path}.{key}[{i}]")
        out.append(mapping)
    return out


def is_mapped(id_: int, mappings: list[IDMapping]) -> bool:
    return any(m.container_id <= id_ < m.container_id + m.size for m in mappings)


def _parse_devices(obj: dict, path: str) -> list[Device]:
    out = []
    for d, p in _objects(obj, "devices", path):
        dev_path = _absolute(_get(d, "path", str, p, required=True), f"{p}.path")
        t = _get(d, "type", str, p, required=True)
        if t not in ("c", "b", "u", "p"):
            raise InvalidSpec(f"{p}.type", f"unknown device type {t!r}")
        need = t != "p"  # a fifo has no device numbers
        out.append(Device(dev_path, t, _uint(d, "major", p, required=need, default=0),
                          _uint(d, "minor", p, required=need, default=0),
                          _uint(d, "fileMode", p, default=0o666),
                          _uint(d, "uid", p, default=0), _uint(d, "gid", p, default=0)))
    return out


def _parse_personality(obj: dict, path: str) -> int:
    domain = _get(obj, "domain", str, path, required=True)
    if domain not in PERSONALITY_DOMAINS:
        raise InvalidSpec(f"{path}.domain", f"unknown domain {domain!r} (LINUX or LINUX32)")
    if _list(obj, "flags", str, path):  # the spec: "currently no flag values are supported"
        raise InvalidSpec(f"{path}.flags", "no personality flag is supported")
    return PERSONALITY_DOMAINS[domain]


def _parse_time_offsets(obj: dict, path: str) -> dict[str, tuple[int, int]]:
    out = {}
    for clock, offset in _get(obj, "timeOffsets", dict, path, default={}).items():
        p = f"{path}.timeOffsets.{clock}"
        if clock not in TIME_CLOCKS:
            raise InvalidSpec(p, f"unknown clock {clock!r} (boottime or monotonic)")
        _check(offset, dict, p)
        out[clock] = (_int_in(offset, "secs", p, -(2**63), 2**63 - 1),
                      _int_in(offset, "nanosecs", p, 0, 999_999_999))
    return out


def _valid_ifname(name: str) -> bool:
    """What the kernel's dev_valid_name() accepts."""
    return (0 < len(name) < 16 and name not in (".", "..")
            and not any(c == "/" or c == ":" or c.isspace() for c in name))


def _parse_net_devices(obj: dict, path: str) -> dict[str, str]:
    out = {}
    for host, dev in _get(obj, "netDevices", dict, path, default={}).items():
        p = f"{path}.netDevices.{host}"
        if not _valid_ifname(host):
            raise InvalidSpec(p, f"{host!r} is not a valid interface name")
        name = _get(_check(dev, dict, p), "name", str, p) or host
        if not _valid_ifname(name):
            raise InvalidSpec(f"{p}.name", f"{name!r} is not a valid interface name")
        if name in out.values():
            raise InvalidSpec(f"{p}.name", f"{name!r} is given to two devices")
        out[host] = name
    return out


def _parse_linux(obj: dict) -> Linux:
    L = "linux"
    prop = _get(obj, "rootfsPropagation", str, L)
    personality = _get(obj, "personality", dict, L)
    if prop is not None and prop not in _PROPAGATIONS:
        raise InvalidSpec(f"{L}.rootfsPropagation", f"unknown propagation {prop!r}")
    return Linux(
        namespaces=_parse_namespaces(obj, L),
        uid_mappings=_parse_mappings(obj, "uidMappings", L),
        gid_mappings=_parse_mappings(obj, "gidMappings", L),
        devices=_parse_devices(obj, L),
        cgroups_path=_get(obj, "cgroupsPath", str, L),
        resources=_get(obj, "resources", dict, L),
        sysctl=_str_map(obj, "sysctl", L),
        masked_paths=[_absolute(v, f"{L}.maskedPaths[{i}]")
                      for i, v in enumerate(_list(obj, "maskedPaths", str, L))],
        readonly_paths=[_absolute(v, f"{L}.readonlyPaths[{i}]")
                        for i, v in enumerate(_list(obj, "readonlyPaths", str, L))],
        rootfs_propagation=prop,
        seccomp=_get(obj, "seccomp", dict, L),
        personality=None if personality is None else _parse_personality(personality,
                                                                         f"{L}.personality"),
        time_offsets=_parse_time_offsets(obj, L),
        net_devices=_parse_net_devices(obj, L),
        mount_label=_get(obj, "mountLabel", str, L, default=""),
        intel_rdt=_get(obj, "intelRdt", dict, L))


def parse(config: dict) -> Spec:
    """Validate a decoded config.json."""
    _check(config, dict, "")
    root = _get(config, "root", dict, "", required=True)
    process = _get(config, "process", dict, "")
    spec = Spec(
        oci_version=_get(config, "ociVersion", str, "", required=True),
        root=Root(_get(root, "path", str, "root", required=True),
                  _get(root, "readonly", bool, "root", default=False)),
        process=None if process is None else parse_process(process),
        hostname=_get(config, "hostname", str, ""),
        domainname=_get(config, "domainname", str, ""),
        mounts=_parse_mounts(config),
        hooks=_parse_hooks(config),
        annotations=_str_map(config, "annotations", ""),
        linux=_parse_linux(_get(config, "linux", dict, "", default={})),
        raw=config)
    _check_consistency(spec)
    return spec


def load(path: str) -> Spec:
    try:
        with open(path, "rb") as f:
            config = json.load(f)
    except OSError as e:
        raise InvalidSpec("", f"cannot read {path}: {e.strerror}") from None
    except ValueError as e:
        raise InvalidSpec("", f"{path} is not valid JSON: {e}") from None
    return parse(config)


# --- cross-field rules -----------------------------------------------------------------------
_IPC_SYSCTLS = {"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
                "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"}


def sysctl_path(key: str) -> str:
    """/proc/sys path of a sysctl key: dots are separators unless the key uses slashes (so an
    interface name with a dot, "net/ipv4/conf/eth0.100/forwarding", stays expressible)."""
    parts = key.split("/") if "/" in key else key.split(".")
    if any(p in ("", ".", "..") for p in parts):
        raise InvalidSpec(f"linux.sysctl.{key}", "malformed sysctl name")
    return "/proc/sys/" + "/".join(parts)


def _check_sysctl(spec: Spec) -> None:
    # Writing a sysctl that is not namespaced would change the HOST: refuse, like runc.
    for key in spec.linux.sysctl:
        sysctl_path(key)
        dotted = key.replace("/", ".")
        f = f"linux.sysctl.{key}"
        if dotted in _IPC_SYSCTLS or dotted.startswith("fs.mqueue."):
            if not spec.namespace("ipc"):
                raise InvalidSpec(f, "not allowed in the host's ipc namespace")
        elif dotted.startswith("net."):
            if not spec.namespace("network"):
                raise InvalidSpec(f, "not allowed in the host's network namespace")
        elif dotted == "kernel.domainname" and spec.namespace("uts"):
            pass
        elif dotted == "kernel.hostname":
            raise InvalidSpec(f, "use the hostname field instead")
        else:
            raise InvalidSpec(f, "not in a separate kernel namespace")


def _check_consistency(spec: Spec) -> None:
    for key in ("hostname", "domainname"):
        if getattr(spec, key) and not spec.namespace("uts"):
            raise InvalidSpec(key, "setting it requires a private UTS namespace")
    user_ns = spec.namespace("user") is not None
    for key in ("uidMappings", "gidMappings"):
        if spec.raw.get("linux", {}).get(key) and not user_ns:
            raise InvalidSpec(f"linux.{key}", "id mappings require a user namespace")
    if spec.new_namespace("user"):  # runc: "user namespaces enabled, but no ... mappings found"
        for key, mappings in (("uidMappings", spec.linux.uid_mappings),
                              ("gidMappings", spec.linux.gid_mappings)):
            if not mappings:
                raise InvalidSpec(f"linux.{key}", "a new user namespace needs id mappings")
    if spec.linux.time_offsets:
        ns = spec.namespace("time")
        if ns is None or ns.path is not None:
            raise InvalidSpec("linux.timeOffsets", "needs a new time namespace (linux.namespaces "
                                                   "type time, without a path)")
    if spec.linux.net_devices and not spec.namespace("network"):
        raise InvalidSpec("linux.netDevices", "moving network devices needs a network namespace")
    _check_sysctl(spec)


def host_lsms() -> set[str]:
    """The LSMs this host enforces that the runtime spec has fields for."""
    out = set()
    try:
        with open("/sys/module/apparmor/parameters/enabled") as f:
            if f.read().strip() == "Y":
                out.add("apparmor")
    except OSError:
        pass
    if ospath.exists("/sys/fs/selinux/enforce"):
        out.add("selinux")
    return out


def _no_lsm(field_: str, value: str, lsm: str, name: str, applied: bool = False) -> None:
    """runc refuses a label or profile the host cannot apply; so do we. applied: the engine
    applies it where the host has the LSM (process profiles and labels, in init.become)."""
    if not value:
        return
    if lsm in host_lsms():
        if applied:
            return
        raise InvalidSpec(field_, f"{name} is not supported by this engine yet")
    raise InvalidSpec(field_, f"{name} is not enabled on this host ({value!r} cannot be "
                              "applied)")


def check_process_supported(process: Process) -> None:
    """What a process (the init's, or one to exec) asks that this engine cannot do; a warning
    for the capability names it leaves out (runtime.caps)."""
    _no_lsm("process.apparmorProfile", process.apparmor_profile, "apparmor", "AppArmor",
            applied=True)
    _no_lsm("process.selinuxLabel", process.selinux_label, "selinux", "SELinux", applied=True)
    if process.capabilities is not None and process.capabilities.unknown:
        from . import log
        for field_, name in process.capabilities.unknown:
            log.warning("runtime.spec", f"{field_}: ignoring unknown capability {name!r} "
                        "(as runc and crun do)")


def _resctrl_mounted() -> bool:
    try:
        with open("/proc/self/mountinfo") as f:
            return any(" - resctrl " in line for line in f)
    except OSError:
        return False


def _check_without_mount_namespace(spec: Spec) -> None:
    """No mount namespace: as runc, the container shares the caller's filesystem and no rootfs
    setup is done (mounts and devices are ignored, see container._plan). What would have to
    change the caller's own mounts is refused, naming the field (runc: "unable to restrict sys
    entries without a private MNT namespace")."""
    why = "needs a mount namespace of its own (linux.namespaces has none)"
    if spec.linux.masked_paths:
        raise InvalidSpec("linux.maskedPaths", why)
    if spec.linux.readonly_paths:
        raise InvalidSpec("linux.readonlyPaths", why)
    if spec.root.readonly:
        raise InvalidSpec("root.readonly", why)
    if spec.linux.rootfs_propagation:
        raise InvalidSpec("linux.rootfsPropagation", why)
    if spec.process is not None and spec.process.terminal:
        raise InvalidSpec("process.terminal", why)


def _check_idmapped(i: int, m: Mount, spec: Spec) -> None:
    """An idmapped mount (runtime-spec 1.1/1.2: uidMappings/gidMappings, options idmap or
    ridmap) is a bind mount with both mappings, or, without them, takes the container's user
    namespace mappings (runtime.idmap makes it)."""
    p = f"mounts[{i}]"
    if m.type != "bind" and "bind" not in m.options and "rbind" not in m.options:
        raise InvalidSpec(f"{p}.type", "an idmapped mount must be a bind mount")
    if bool(m.uid_mappings) != bool(m.gid_mappings):
        missing = "gidMappings" if m.uid_mappings else "uidMappings"
        raise InvalidSpec(f"{p}.{missing}", "an idmapped mount needs both uidMappings and "
                                            "gidMappings")
    if not m.uid_mappings and not (spec.linux.uid_mappings and spec.linux.gid_mappings):
        raise InvalidSpec(f"{p}.uidMappings", "an idmapped mount without mappings of its own "
                          "takes the container's (linux.uidMappings), and it has none")


def check_supported(spec: Spec) -> None:
    """What this engine cannot run yet, as InvalidSpec (called by create, not by load); what
    runc and crun leave out with a warning is left out (unknown capabilities) or cleared from
    `spec` (linux.mountLabel without SELinux) the same way."""
    if spec.process is None:
        raise InvalidSpec("process", "is required to create a container")
    if not spec.namespace("mount"):
        _check_without_mount_namespace(spec)
    check_process_supported(spec.process)
    for i, m in enumerate(spec.mounts):
        if m.idmapped():
            _check_idmapped(i, m, spec)
    if spec.linux.mount_label and "selinux" not in host_lsms():
        # crun's reading: a mount label means nothing without SELinux (the kernel would refuse
        # the context= option with EINVAL), so it is left out, with a warning.
        from . import log
        log.warning("runtime.spec", f"linux.mountLabel: SELinux is not enabled on this host; "
                    f"ignoring {spec.linux.mount_label!r} (as crun does)")
        spec.linux.mount_label = ""
    if spec.linux.intel_rdt is not None:
        raise InvalidSpec("linux.intelRdt", "Intel RDT is not supported by this engine yet"
                          if _resctrl_mounted() else
                          "Intel RDT needs the resctrl filesystem, which is not mounted on this "
                          "host")
    check_process_ids(spec.process, spec)


def check_process_ids(process: Process, spec: Spec) -> None:
    """In a new user namespace, the process's ids must be mapped (setresuid and setgroups
    would fail with EINVAL after start otherwise). A joined one's mappings are not ours to
    know: the kernel checks those."""
    if not spec.new_namespace("user"):
        return
    lx, user = spec.linux, process.user
    for field_, id_, mappings, key in (
            ("process.user.uid", user.uid, lx.uid_mappings, "uidMappings"),
            ("process.user.gid", user.gid, lx.gid_mappings, "gidMappings"),
            *((f"process.user.additionalGids[{i}]", g, lx.gid_mappings, "gidMappings")
              for i, g in enumerate(user.additional_gids))):
        if not is_mapped(id_, mappings):
            raise InvalidSpec(field_, f"{id_} is not mapped by linux.{key}")


def root_path(spec: Spec, bundle: str) -> str:
    return ospath.normpath(ospath.join(bundle, spec.root.path))
