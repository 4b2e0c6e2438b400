"""The engine's cgroups: pure planning from OCI linux.resources, thin execution on cgroupfs.

Invariant: the decision of WHAT to write (plan_v1/plan_v2, resolve_paths) is pure and fully
validated before anything is touched; the Managers only execute, through one CgroupFS.

    h = detect()                                   # v1 (legacy/hybrid) or v2, from mountinfo
    m = manager(spec.linux.cgroups_path, id, h)    # V1Manager or V2Manager
    m.create(); m.set(resources); m.apply(pid)     # with_default_devices(): runc's device list
    m.stats(); m.freeze(); m.thaw(); m.kill_all(sig); m.destroy()

Only the standard library; devices_bpf (ctypes) is imported on first use of a v2 device filter.
"""

import posix

# Each name is imported from its module on first use (PEP 562): rebuilding a container's
# Manager from state.json (every CLI command, `shim delete`) needs v1 or v2, base and fs, not
# the planning of linux.resources (plan: its regexes) nor the other version.
_LAZY = {"CgroupFS": "fs", "Hierarchy": "hierarchy", "Mount": "hierarchy", "detect": "hierarchy",
         "parse_mountinfo": "hierarchy", "parse_proc_cgroup": "hierarchy",
         "resolve_paths": "hierarchy", "CgroupError": "base", "Manager": "base",
         "DEFAULT_DEVICE_RULES": "plan", "DeviceFilter": "plan", "DeviceRule": "plan",
         "Write": "plan", "plan_v1": "plan", "plan_v2": "plan", "with_default_devices": "plan",
         "V1Manager": "v1", "V2Manager": "v2"}

__all__ = ["CgroupError", "CgroupFS", "DEFAULT_DEVICE_RULES", "DeviceFilter", "DeviceRule",
           "Hierarchy", "Manager", "Mount", "V1Manager", "V2Manager", "Write", "detect",
           "manager", "parse_mountinfo", "parse_proc_cgroup", "plan_v1", "plan_v2",
           "resolve_paths", "with_default_devices"]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(__import__(f"{__name__}.{module}", fromlist=[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


def manager(cgroups_path: str | None, container_id: str, hierarchy=None, *, fs=None,
            own: dict[str, str] | None = None, kill=posix.kill, attach_devices=None):
    """The Manager for a container's cgroup. `own` (parsed /proc/self/cgroup) is read only
    for a relative or empty cgroupsPath; see hierarchy.py for the path semantics."""
    from .hierarchy import detect, resolve_paths
    h = hierarchy or detect()
    paths = resolve_paths(cgroups_path, container_id, h, own)
    if h.mode == "v2":
        from .v2 import V2Manager
        return V2Manager(paths[""], h.mounts[""].point, fs=fs, kill=kill,
                         attach_devices=attach_devices)
    from .v1 import V1Manager
    return V1Manager(paths, h, fs=fs, kill=kill)
