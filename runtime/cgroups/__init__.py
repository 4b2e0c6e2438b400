"""The engine's cgroups: pure planning from OCI linux.resources, thin execution on cgroupfs.

Invariant: the decision of WHAT to write (plan_v1/plan_v2, resolve_paths) is pure and fully
validated before anything is touched; the Managers only execute, through one CgroupFS.

    h = detect()                                   # v1 (legacy/hybrid) or v2, from mountinfo
    m = manager(spec.linux.cgroups_path, id, h)    # V1Manager or V2Manager
    m.create(); m.set(resources); m.apply(pid)     # with_default_devices(): runc's device list
    m.stats(); m.freeze(); m.thaw(); m.kill_all(sig); m.destroy()

Only the standard library; devices_bpf (ctypes) is imported on first use of a v2 device filter.
"""

import os

from .fs import CgroupFS
from .hierarchy import Hierarchy, Mount, detect, parse_mountinfo, parse_proc_cgroup, resolve_paths
from .base import CgroupError, Manager
from .plan import (DEFAULT_DEVICE_RULES, DeviceFilter, DeviceRule, Write, plan_v1, plan_v2,
                   with_default_devices)
from .v1 import V1Manager
from .v2 import V2Manager

__all__ = ["CgroupError", "CgroupFS", "DEFAULT_DEVICE_RULES", "DeviceFilter", "DeviceRule",
           "Hierarchy", "Manager", "Mount", "V1Manager", "V2Manager", "Write", "detect",
           "manager", "parse_mountinfo", "parse_proc_cgroup", "plan_v1", "plan_v2",
           "resolve_paths", "with_default_devices"]


def manager(cgroups_path: str | None, container_id: str, hierarchy: Hierarchy | None = None, *,
            fs: CgroupFS | None = None, own: dict[str, str] | None = None, kill=os.kill,
            attach_devices=None) -> Manager:
    """The Manager for a container's cgroup. `own` (parsed /proc/self/cgroup) is read only
    for a relative or empty cgroupsPath; see hierarchy.py for the path semantics."""
    h = hierarchy or detect()
    paths = resolve_paths(cgroups_path, container_id, h, own)
    if h.mode == "v2":
        return V2Manager(paths[""], h.mounts[""].point, fs=fs, kill=kill,
                         attach_devices=attach_devices)
    return V1Manager(paths, h, fs=fs, kill=kill)
