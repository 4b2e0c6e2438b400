"""Seccomp for the engine: linux.seccomp -> Profile -> BPF bytes -> filter in the container init.

Invariant: the split follows the privilege boundary. parse()/plan() are pure; compile() runs
in the runtime (it needs libseccomp, loaded lazily on first use) and yields plain bytes plus
filter_flags(); the container init needs only install() (ctypes + seccomp(2)), and the
runtime passes a notify listener fd on with send_listener_fd().

Typical use:
    profile = parse(spec.linux.seccomp)            # None: no seccomp
    program, flags = compile(profile), filter_flags(profile)
    program = compile_cached(profile, cache_dir)   # the same, read back when compiled before
    ... in the init, last thing before execve (or before dropping caps when NNP is off):
    fd = install(program, flags)                   # an int only when the profile notifies
"""

from .cache import compile_cached
from .compiler import compile, resolve, version
from .kernel import (filter_flags, flag_supported, install, process_state, send_listener_fd,
                     set_no_new_privs)
from .profile import Arg, Profile, Rule, Syscall, action_value, parse, plan

__all__ = ["Arg", "Profile", "Rule", "Syscall", "action_value", "compile", "compile_cached",
           "filter_flags", "flag_supported", "install", "parse", "plan", "process_state",
           "resolve", "send_listener_fd", "set_no_new_privs", "version"]
