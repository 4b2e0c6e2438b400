"""What the container's init process does, in order, through a syscall object.

Invariants:
- before_namespaces() runs in the intermediate (create's and exec's) before it enters any
  namespace: the cgroup (create's only: an exec'd process joins it itself, runtime.execproc),
  the oom score.
- prepare() runs during create, before the init reports "ready": namespaced kernel settings,
  the whole filesystem plan, linux.personality, then prepare_process(): the executable lookup
  and what would otherwise only fail after start (capabilities, rlimits, process.scheduler,
  process.ioPriority: both set on ourselves, kept across the exec). Any failure is a
  ContainerSetupError or InvalidSpec.
- finish() runs after the start byte: become() sets credentials, capabilities, umask, cwd, then
  execs. Nothing from the runtime survives the exec: every fd >= 3 is marked close-on-exec and
  every signal disposition and the mask are reset (Python ignores SIGPIPE/SIGXFSZ and exec
  keeps SIG_IGN).
- prepare_process() and become() take a spec Process, not the whole config: an exec'd process
  (runtime.execproc) goes through exactly the same two steps once it is inside the container.
- A seccomp filter (compiled by the caller) is installed by become(): before anything drops
  privileges when noNewPrivileges is false (loading it then needs CAP_SYS_ADMIN), else as the
  very last step before execve, so that as few of our own syscalls as possible run under it.
- Nothing here forks, and nothing here touches the host mount namespace.
"""

import errno
import posix
import stat

from . import ospath
from . import caps as _caps
from . import ctrcgroup, executor
from .errors import ContainerSetupError
from .record import Record
from .spec import Process, Spec, sysctl_path
from .sys.consts import CLOSE_RANGE_CLOEXEC, CLOSE_RANGE_MAX

DEFAULT_UMASK = 0o022
_RLIM_INFINITY = 2**64 - 1


class InitConfig(Record):
    """Everything the init needs, computed by the caller before the fork."""
    spec: Spec
    rootfs: str
    ops: list  # runtime.mounts plan
    state_dir: str
    cgroup: object | None = None  # runtime.cgroups.Manager the intermediate joins (ctrcgroup)
    seccomp: "SeccompFilter | None" = None
    hook_state: dict | None = None  # ociVersion, id, bundle, annotations: for in-init hooks
    preserve_fds: int = 0  # the caller's fds 3..N+2 reach the process (Stdio.preserve_fds)
    keyring: str | None = None  # the session keyring to join ("_ses.<id>"; None: keep ours)
    mount_fds: dict | None = None  # spec.mounts index -> detached idmapped mount (runtime.idmap)


class SeccompFilter(Record, frozen=True):
    """linux.seccomp compiled by the caller (runtime.seccomp.compile and filter_flags)."""
    program: bytes
    flags: int


def step(name: str, fn, *args, path: str | None = None):
    """fn(*args); an OSError from it becomes ContainerSetupError(name, ..., path)."""
    try:
        return fn(*args)
    except OSError as e:
        raise ContainerSetupError(name, e.strerror or str(e), path) from None


class Prepared(Record):
    """What prepare() resolved inside the new root for finish() to exec."""
    exe: str
    env: dict[str, str]


def prepare(cfg: InitConfig, sys, before_pivot=None, send_master=None,
            await_cgroup=None) -> Prepared:
    """Set the container up; resolve the executable and the environment. before_pivot() runs
    once the mounts are made, before pivot_root; send_master(fd) takes the terminal's master
    when the process has one; await_cgroup() returns once the cgroup exists and we are in it
    (runtime.launch): called at the plan's AwaitCgroup op, for the cgroup bind mounts (see
    executor.apply), and again after the mounts (it must make the second call a no-op)."""
    spec, proc = cfg.spec, cfg.spec.process
    join_keyring(cfg.keyring, sys, searchable=True)
    sys.umask(0)  # devices and mount points get exactly the modes the plan says
    if spec.hostname is not None:
        step("hostname", sys.sethostname, spec.hostname)
    if spec.domainname is not None:
        step("hostname", sys.setdomainname, spec.domainname)
    if spec.new_namespace("network"):
        step("network", sys.loopback_up)
    # Written through the host's /proc before the mounts: namespaced sysctls resolve against
    # the writer's namespaces, and the container's /proc/sys is usually read-only later.
    for key, value in spec.linux.sysctl.items():
        path = sysctl_path(key)
        step("sysctl", sys.write_file, path, value, path=path)
    executor.apply(cfg.ops, cfg.rootfs, sys, before_pivot, send_master, cfg.mount_fds,
                   await_cgroup)
    if await_cgroup is not None:  # (a no-op if the plan's AwaitCgroup called it)
        await_cgroup()  # in the cgroup before what it may constrain: rlimits, the scheduler
    if spec.linux.personality is not None:  # linux.personality (the init's)
        step("personality", sys.personality, spec.linux.personality)
    return prepare_process(proc, sys)


def keyring_name(container_id: str) -> str:
    return f"_ses.{container_id}"  # runc's


def join_keyring(name: str | None, sys, searchable: bool = False) -> None:
    """runc's default (unless --no-new-keyring): the container's processes get a session
    keyring of their own, named after it (an exec'd process joins the init's by that name), so
    the caller's session keyring does not reach them; the init makes it searchable by the
    container's user. No keyrings in the kernel (ENOSYS) is no error, as with runc."""
    if name is None:
        return
    try:
        serial = sys.join_session_keyring(name)
        if searchable:
            sys.keyring_add_search(serial)
    except OSError as e:
        if e.errno == errno.ENOSYS:
            return
        raise ContainerSetupError("keyring", f"unable to join session keyring {name}: "
                                             f"{e.strerror or e}") from None


def prepare_process(proc: Process, sys) -> Prepared:
    """Inside the container's root: resolve the executable and the environment, check the
    capabilities, set the rlimits (for the init at create, so a bad limit fails create rather
    than the start)."""
    env = proc.env_dict()
    exe = lookup_executable(proc.args[0], env.get("PATH"), proc.cwd, sys)
    if "HOME" not in env:  # as runc: the user's home from the container's /etc/passwd, else /
        env["HOME"] = home_directory(proc.user.uid, sys)
    _check_capabilities(proc, sys)
    for r in proc.rlimits:
        step("rlimits", sys.setrlimit, r.type, _rlim(r.soft), _rlim(r.hard))
    s = proc.scheduler
    if s is not None:  # after the rlimits: RLIMIT_RTPRIO may be what allows it
        step("scheduler", sys.sched_setattr, s.policy, s.flags, s.nice, s.priority, s.runtime,
             s.deadline, s.period)
    if proc.io_priority is not None:
        step("ioPriority", sys.ioprio_set, proc.io_priority.value())
    return Prepared(exe, env)


def home_directory(uid: int, sys) -> str:
    """The home of `uid` in the container's /etc/passwd; "/" when there is none."""
    try:
        passwd = sys.read_file("/etc/passwd")
    except OSError:
        return "/"
    for line in passwd.splitlines():
        fields = line.split(":")
        if len(fields) >= 6 and fields[2] == str(uid):
            return fields[5] or "/"
    return "/"


def before_namespaces(cgroup, proc: Process, sys) -> None:
    """What a forked intermediate does first, while the host's cgroupfs and /proc still mean
    what they say and it still has its privileges (a user namespace would take lowering the
    score away): join the container's cgroup and set process.oomScoreAdj. The process it
    forks is born in the cgroup and inherits the score."""
    ctrcgroup.join(cgroup)
    if proc.oom_score_adj is not None:
        set_oom_score_adj(proc.oom_score_adj, sys)


def set_oom_score_adj(value: int, sys) -> None:
    path = "/proc/self/oom_score_adj"
    # Lowering the score needs CAP_SYS_RESOURCE; writing the value we already have must not fail.
    if step("oom_score_adj", sys.read_file, path, path=path).strip() != str(value):
        step("oom_score_adj", sys.write_file, path, str(value), path=path)


def _rlim(v: int) -> int:
    return -1 if v >= 2**63 else v  # RLIM_INFINITY as Python's resource module spells it


def _check_capabilities(proc: Process, sys) -> None:
    caps = proc.capabilities
    if caps is None:
        return
    if caps.effective & ~caps.permitted:
        extra = _caps.to_names(caps.effective & ~caps.permitted)
        raise ContainerSetupError("capabilities", "effective capabilities not in the permitted "
                                  "set: " + ", ".join(extra))
    _, have, _ = step("capabilities", sys.capget)
    missing = (caps.effective | caps.permitted | caps.inheritable | caps.ambient) & ~have
    if missing:
        raise ContainerSetupError("capabilities", "capabilities the runtime itself does not "
                                  "hold: " + ", ".join(_caps.to_names(missing)))


def _not_executable(path: str, sys) -> str | None:
    """Why `path` cannot be executed, in Go's words (runc's messages), or None."""
    try:
        st = sys.stat(path)
    except OSError as e:
        msg = posix.strerror(e.errno)
        return f"stat {path}: {msg[0].lower()}{msg[1:]}"
    if stat.S_ISDIR(st.st_mode) or not st.st_mode & 0o111:
        return "permission denied"
    return None


def lookup_executable(name: str, path_env: str | None, cwd: str, sys) -> str:
    """Go's exec.LookPath, as runc uses it, inside the new root."""
    if "/" in name:
        full = ospath.join(cwd, name)
        why = _not_executable(full, sys)
        if why:
            raise ContainerSetupError("exec lookup", f'exec: "{name}": {why}', name)
        return full
    for d in (path_env or "").split(":"):
        full = ospath.join(cwd, d or ".", name)
        if _not_executable(full, sys) is None:
            return full
    raise ContainerSetupError("exec lookup",
                              f'exec: "{name}": executable file not found in $PATH', name)


def finish(cfg: InitConfig, sys, prepared: Prepared) -> None:
    """Become the user process. Returns only with the fake syscall object."""
    become(cfg.spec.process, sys, prepared, cfg.seccomp, cfg.preserve_fds)


def become(proc: Process, sys, prepared: Prepared, seccomp: SeccompFilter | None = None,
           preserve_fds: int = 0) -> None:
    """Credentials, capabilities, no_new_privs, umask, cwd, seccomp; then exec (see the module
    docstring for where the filter goes). fds 3..preserve_fds+2 are passed on as they are."""
    caps = proc.capabilities
    # Mark every inherited fd above 2 close-on-exec first: under a filter installed next, a
    # profile that predates close_range (runtime-tools' default, docker's older ones) answers
    # it ENOSYS and the container could never start.
    sys.close_range(3 + preserve_fds, CLOSE_RANGE_MAX, CLOSE_RANGE_CLOEXEC)
    for fd in range(3, 3 + preserve_fds):  # the caller may have left them close-on-exec
        step("preserve-fds", sys.set_inheritable, fd, path=f"fd {fd}")
    if seccomp is not None and not proc.no_new_privileges:
        sys.seccomp_install(seccomp.program, seccomp.flags)
    if caps is not None:
        for n in range(_caps.last_cap() + 1):
            if not caps.bounding >> n & 1:
                sys.capbset_drop(n)
        sys.set_keepcaps(True)  # keep the permitted set across setresuid to a non-root uid
    sys.setgroups(proc.user.additional_gids)
    sys.setresgid(proc.user.gid)
    sys.setresuid(proc.user.uid)
    if caps is not None:
        sys.capset(caps.effective, caps.permitted, caps.inheritable)
        # The kernel only lets an ambient cap in if it is permitted and inheritable (runc warns
        # and skips the others; so do we, silently).
        ambient = caps.ambient & caps.permitted & caps.inheritable
        for n in range(_caps.last_cap() + 1):
            if ambient >> n & 1:
                sys.ambient_raise(n)
    if proc.no_new_privileges:
        sys.set_no_new_privs()
    sys.umask(DEFAULT_UMASK if proc.user.umask is None else proc.user.umask)
    sys.chdir(proc.cwd)
    sys.reset_signals()
    _exec_lsm_attributes(proc, sys)
    if seccomp is not None and proc.no_new_privileges:
        sys.seccomp_install(seccomp.program, seccomp.flags)
    sys.execve(prepared.exe, proc.args, prepared.env)


# The kernel applies these at the next execve of this thread, as runc's apparmor.ApplyProfile
# and selinux.SetExecLabel do (spec.check_process_supported refused them if the host lacks the
# LSM). /proc is the container's by now.
_APPARMOR_EXEC = ("/proc/thread-self/attr/apparmor/exec", "/proc/thread-self/attr/exec")
_SELINUX_EXEC = "/proc/thread-self/attr/exec"


def _exec_lsm_attributes(proc: Process, sys) -> None:
    if proc.apparmor_profile:
        path = next((p for p in _APPARMOR_EXEC if sys.exists(p)), _APPARMOR_EXEC[-1])
        step("apparmor", sys.write_file, path, f"exec {proc.apparmor_profile}", path=path)
    if proc.selinux_label:
        step("selinux", sys.write_file, _SELINUX_EXEC, proc.selinux_label, path=_SELINUX_EXEC)
