"""Where the cgroup hierarchies are mounted, and where a container's cgroup lives in them.

Invariant: resolve_paths() returns directories strictly BELOW a hierarchy's mount point — a
cgroupsPath can never name the hierarchy root (or climb above it with ".."), so destroy()
can never be aimed at a cgroup the engine did not create for the container.

cgroupsPath semantics (runc's cgroupfs driver):
  * absolute ("/default/abc"): relative to each hierarchy's mount point;
  * relative ("abc/def"): relative to the caller's own cgroup (/proc/self/cgroup) on v1, and
    to the PARENT of the caller's cgroup on v2 (the caller's own cgroup holds processes, and
    v2's no-internal-processes rule would stop controllers being enabled below it);
  * empty: the container id, as a relative path (runc sets Name=id with no Parent);
  * "slice:prefix:name": systemd-driver syntax -> InvalidSpec (no systemd driver here).
"""


from runtime.errors import EngineError, InvalidSpec
from runtime.record import Record

from .. import ospath

FIELD = "linux.cgroupsPath"
V1_CONTROLLERS = frozenset({
    "cpuset", "cpu", "cpuacct", "blkio", "memory", "devices", "freezer", "net_cls",
    "perf_event", "net_prio", "hugetlb", "pids", "rdma", "misc"})


class Mount(Record, frozen=True):
    point: str  # where the hierarchy is mounted, e.g. /sys/fs/cgroup/memory
    root: str = "/"  # which cgroup of the hierarchy sits at `point` ("/" unless in a container)


class Hierarchy(Record, frozen=True):
    """mode "v1" (legacy or hybrid): mounts maps each controller (and "name=systemd") to its
    mount, combined mounts (cpu,cpuacct) sharing one. mode "v2": mounts is {"": the cgroup2
    mount}. `unified` is the cgroup2 mount a hybrid host has next to v1 (unused by v1 mode)."""
    mode: str
    mounts: dict
    unified: Mount | None = None


def _unescape(s: str) -> str:
    if "\\" not in s:
        return s
    import re
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def parse_mountinfo(text: str) -> Hierarchy:
    """The Hierarchy described by a /proc/<pid>/mountinfo text. v1 wins as soon as one real v1
    controller is mounted (hybrid hosts), as runc decides."""
    v1: dict[str, Mount] = {}
    v2: list[Mount] = []
    for line in text.splitlines():
        pre, sep, post = line.partition(" - ")
        fields, tail = pre.split(), post.split()
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        mount = Mount(_unescape(fields[4]), _unescape(fields[3]))
        if tail[0] == "cgroup2":
            v2.append(mount)
        elif tail[0] == "cgroup":
            for opt in tail[2].split(","):
                if opt in V1_CONTROLLERS or opt.startswith("name="):
                    v1.setdefault(opt, mount)  # first mount wins (later ones are bind mounts)
    unified = next((m for m in v2 if m.point == "/sys/fs/cgroup"), v2[0] if v2 else None)
    if any(c in V1_CONTROLLERS for c in v1):
        return Hierarchy("v1", v1, unified)
    if unified:
        return Hierarchy("v2", {"": unified}, unified)
    raise EngineError("no cgroup filesystem is mounted (cgroup or cgroup2 in /proc/self/mountinfo)")


def detect(mountinfo: str = "/proc/self/mountinfo") -> Hierarchy:
    with open(mountinfo) as f:
        return parse_mountinfo(f.read())


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """/proc/<pid>/cgroup -> {controller: path}; the v2 entry ("0::/x") is under key ""."""
    own = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for c in parts[1].split(",") if parts[1] else [""]:
                own[c] = parts[2]
    return own


def _components(path: str) -> list[str]:
    """Lexically clean `path` into components; ".." never climbs above the start."""
    out: list[str] = []
    for c in path.split("/"):
        if c == "..":
            if out:
                out.pop()
        elif c not in ("", "."):
            out.append(c)
    return out


def _inner(cgroups_path: str | None, container_id: str) -> tuple[bool, list[str]]:
    path = cgroups_path or ""
    # slice:prefix:name (systemd driver syntax): two colons, no slash, a non-empty name
    if path.count(":") == 2 and "/" not in path and not path.endswith(":"):
        raise InvalidSpec(FIELD, f"{path!r} is a systemd cgroup (slice:prefix:name); "
                                 "the systemd cgroup driver is not supported, use a path")
    if not path:
        if not container_id or "/" in container_id:
            raise InvalidSpec(FIELD, "is empty and the container id cannot name a cgroup")
        path = container_id  # runc: Name=id, no Parent -> relative
    parts = _components(path)
    if not parts:
        raise InvalidSpec(FIELD, f"{path!r} must name a cgroup below the hierarchy root")
    return path.startswith("/"), parts


def _own(own: dict[str, str], key: str, mount: Mount) -> list[str]:
    """The caller's cgroup in one hierarchy, relative to that hierarchy's mount point."""
    path = own.get(key, "/")
    root = mount.root.rstrip("/")
    if root and (path == root or path.startswith(root + "/")):
        path = path[len(root):]  # inside a container the mount shows only a subtree
    return _components(path)


def resolve_paths(cgroups_path: str | None, container_id: str, hierarchy: Hierarchy,
                  own: dict[str, str] | None = None) -> dict[str, str]:
    """{controller: cgroup directory} ({"": dir} on v2). `own` is the parsed
    /proc/self/cgroup, read only when the path is relative and it is not given."""
    absolute, parts = _inner(cgroups_path, container_id)
    if not absolute and own is None:
        with open("/proc/self/cgroup") as f:
            own = parse_proc_cgroup(f.read())
    paths = {}
    for ctrl, mount in hierarchy.mounts.items():
        base: list[str] = []
        if not absolute:
            base = _own(own, ctrl, mount)
            if hierarchy.mode == "v2":
                base = base[:-1]
        paths[ctrl] = ospath.join(mount.point, *base, *parts)
    return paths
