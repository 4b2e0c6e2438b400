"""Documents pyshim-runc prints: `spec` (a starter config.json) and `features`.

Invariants:
- default_spec() is runc 1.1's specconv.Example() (and ToRootless()) field for field, in Go's
  field order, except ociVersion, which is the newest version this engine accepts.
- features() reports what the engine really does, found by asking it, not by wishing: a
  namespace is listed if runtime.spec.check_supported accepts a config asking for it; cgroups,
  seccomp and hooks only once runtime.container actually loads the module that applies them
  (runtime.cgroups, runtime.seccomp, runtime.hooks) - a spec section that is parsed but not
  applied is not a feature.
"""

import posix
import sys

from . import ospath

OCI_VERSION_MIN = "1.0.0"
OCI_VERSION_MAX = "1.1.0"
HOOKS = ["prestart", "createRuntime", "createContainer", "startContainer", "poststart",
         "poststop"]
_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


def default_spec(rootless: bool = False) -> dict:
    spec = {
        "ociVersion": OCI_VERSION_MAX,
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "TERM=xterm"],
            "cwd": "/",
            "capabilities": {s: list(_CAPS) for s in ("bounding", "effective", "permitted",
                                                       "ambient")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "runc",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
                         "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                            "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                            "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                              "/proc/sysrq-trigger"],
        },
    }
    if rootless:
        _to_rootless(spec)
    return spec


def _to_rootless(spec: dict) -> None:
    """runc's specconv.ToRootless: a user namespace mapping only the caller, no network
    namespace, /sys bound from the host, no uid=/gid= mount options, no resources."""
    linux = spec["linux"]
    namespaces = [n for n in linux["namespaces"] if n["type"] not in ("network", "user")]
    namespaces.append({"type": "user"})
    rest = {k: v for k, v in linux.items() if k not in ("resources", "namespaces")}
    linux.clear()
    linux["uidMappings"] = [{"containerID": 0, "hostID": posix.geteuid(), "size": 1}]
    linux["gidMappings"] = [{"containerID": 0, "hostID": posix.getegid(), "size": 1}]
    linux["namespaces"] = namespaces
    linux.update(rest)
    mounts = []
    for m in spec["mounts"]:
        if ospath.normpath(m["destination"]) == "/sys":
            mounts.append({"destination": "/sys", "type": "none", "source": "/sys",
                           "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
            continue
        if "options" in m:
            m["options"] = [o for o in m["options"] if not o.startswith(("gid=", "uid="))]
        mounts.append(m)
    spec["mounts"] = mounts


# --- features --------------------------------------------------------------------------------
def _namespace_supported(ns_type: str) -> bool:
    from . import spec as spec_mod
    from .errors import InvalidSpec
    namespaces = [{"type": "mount"}] + ([{"type": ns_type}] if ns_type != "mount" else [])
    config = {"ociVersion": OCI_VERSION_MAX, "root": {"path": "rootfs"},
              "process": {"args": ["true"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
              "linux": {"namespaces": namespaces}}
    if ns_type == "user":
        mapping = [{"containerID": 0, "hostID": 0, "size": 1}]
        config["linux"].update(uidMappings=mapping, gidMappings=mapping)
    try:
        spec_mod.check_supported(spec_mod.parse(config))
    except InvalidSpec:
        return False
    return True


def _mount_options() -> list[str]:
    from . import mounts
    return sorted(set(mounts._SET) | set(mounts._CLEAR) | set(mounts.PROPAGATION)
                  | set(mounts.RECURSIVE) | {"idmap", "ridmap"})


def features() -> dict:
    from . import caps
    from . import container
    container.load_engine(everything=True)  # what create/exec apply a spec with, for the checks below
    from . import idmap  # noqa: F401 - what an idmapped mount needs
    from .sys.consts import NAMESPACE_FLAGS
    wired = sys.modules
    cgroups = "runtime.cgroups" in wired
    doc = {
        "ociVersionMin": OCI_VERSION_MIN,
        "ociVersionMax": OCI_VERSION_MAX,
        "hooks": list(HOOKS) if "runtime.hooks" in wired else [],
        "mountOptions": _mount_options(),
        "linux": {
            "namespaces": [t for t in sorted(NAMESPACE_FLAGS) if _namespace_supported(t)],
            "capabilities": list(caps.NAMES),
            "cgroup": {"v1": cgroups, "v2": cgroups, "systemd": False, "systemdUser": False},
            "seccomp": _seccomp("runtime.seccomp" in wired),
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
            "intelRdt": {"enabled": False},
            # runtime-spec 1.2 (containerd reads it to allow idmapped volumes): runtime.idmap
            "mountExtensions": {"idmap": {"enabled": "runtime.idmap" in wired}},
        },
        "annotations": {"org.opencontainers.pyshim.version": _version()},
    }
    return doc


def _seccomp(enabled: bool) -> dict:
    if not enabled:
        return {"enabled": False}
    from .seccomp import profile
    return {"enabled": True, "actions": sorted(profile.ACTIONS),
            "operators": sorted(profile.OPS), "archs": sorted(profile.ARCHES)}


def _version() -> str:
    from .cli import VERSION
    return VERSION
