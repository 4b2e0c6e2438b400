"""Checkpoint and restore with CRIU, the way runc does it (libcontainer's Checkpoint/Restore),
through criu's command line rather than its RPC (`criu swrk`).

    argv = plan_dump(state, options, facts)        # pure: state.json document + options + facts
    argv = plan_restore(state, options, facts)     # likewise
    reason = check_criu("criu")                    # None when `criu check` passes
    job = checkpoint(container, options)           # plan, write the image metadata, run criu
    container = restore(engine, id, bundle, image_dir, stdio)

Execution is also split for callers that must not block (the shim awaits criu's exit on its
loop): prepare_dump() -> spawn() -> [wait] -> finish_dump(), prepare_restore() -> spawn() ->
[wait] -> finish_restore(); checkpoint() and restore() do the same synchronously.

What the plan contains, as runc's (criu option: why):
- dump: --tree <init pid>, --images-dir, --work-dir, --log-file dump.log -v4, --root <rootfs>,
  --manage-cgroups[=soft|full|strict] (cgroups_mode), --leave-running unless `exit`,
  --tcp-established (open_tcp), --ext-unix-sk (external_unix_sockets), --shell-job (terminal),
  --file-locks (file_locks), --empty-ns net (always: runc adds CLONE_NEWNET to the mask; the
  only value empty_namespaces may name is "network"), --freeze-cgroup <the container's freezer
  cgroup>, --external net[<inode>]:extRootNetNS / pid[<inode>]:extRootPidNS for a network or
  pid namespace joined by path, --external mnt[<dest>]:<dest> for every bind mount (and the
  bind mounts of the cgroup v1 hierarchies), mnt[<path>]:/dev/null for masked files,
  mnt[<dev>]:<dev> for devices; --config <org.criu.config annotation, else
  /etc/criu/runc.conf when it exists>.
- restore: --restore-detached --restore-sibling (the restored init becomes a child of the
  caller, which reaps it, as runc's RstSibling) --pidfile, --root <rootfs bind-mounted on
  <state>/criu-root> (criu wants a mount point whose parent is not overmounted),
  --evasive-devices, the same behaviour flags, --cgroup-root <ctrl>:<path> per cgroup v1
  controller (criu runs inside the container's new cgroup), --inherit-fd fd[N]:extRootNetNS
  for an external namespace (its file passed as fd N), --join-ns <ns>:<path> for the other
  joined namespaces, --external mnt[<dest>]:<host source> for bind mounts, mnt[/dev/null]:
  /dev/null when paths are masked, and --inherit-fd fd[N]:<key> for the stdio.
- stdio (descriptors.json, as runc: readlink of the init's fds 0-2 at dump time). A pipe
  ("pipe:[ino]") is inherited at restore from the new stdio, as runc. pyshim also gives its
  processes the FIFOs (or log files) containerd names, which live on host mounts the
  container cannot see: such an fd is dumped as an external file (--external
  file[<mnt_id hex>:<inode hex>]) and inherited at restore the same way; the keys are kept in
  pyshim-checkpoint.json, with the options the image was dumped with (a restore applies them
  again: criu needs --tcp-established etc. on both sides).
- the image dir also gets config.json (the spec the container was created with).

Not done (documented gaps): CRIU's notify scripts are an RPC feature, so the prestart and
createRuntime hooks runc runs at "setup-namespaces" are not run on restore; no pre-dump,
page server or lazy pages (containerd's task API asks for none of them).

Invariants:
- planning never touches the host: everything read from it comes in a DumpFacts/RestoreFacts
  (their probe() does the reading);
- criu runs with a bounded wait (killed at the deadline) and a failure is a CriuError naming
  the image dir and criu's log file, with the first error line of that log;
- a failed restore leaves nothing behind: no process, no cgroup, no state dir, no mount;
- criu missing or `criu check` failing is a CriuUnavailable carrying criu's own reason.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import posixpath
import shutil
import signal
import stat
import subprocess
from dataclasses import asdict, dataclass, field

from . import ctrcgroup, mounts, paths, proc, state
from . import spec as spec_mod
from .errors import ContainerExists, EngineError, InvalidSpec, InvalidState
from .sys.consts import MNT_DETACH, MS_BIND, MS_REC, MS_REMOUNT

DUMP_LOG = "dump.log"
RESTORE_LOG = "restore.log"
DESCRIPTORS = "descriptors.json"   # runc's name and format: a JSON list of 3 strings
CONFIG = "config.json"
METADATA = "pyshim-checkpoint.json"
CRIU_ROOT = "criu-root"
RESTORE_PIDFILE = "restore.pid"
DEFAULT_CRIU_CONFIG = "/etc/criu/runc.conf"  # runc's default, so a host's runc setup applies
CRIU_CONFIG_ANNOTATION = "org.criu.config"
DUMP_TIMEOUT = 300.0
RESTORE_TIMEOUT = 300.0
CHECK_TIMEOUT = 30.0

CGROUPS_MODES = ("soft", "full", "strict")
EMPTY_NAMESPACES = {"network": "net"}  # what runc's --empty-ns accepts
CRIU_NS_NAMES = {"network": "net", "pid": "pid", "mount": "mnt", "ipc": "ipc", "uts": "uts",
                 "user": "user", "cgroup": "cgroup", "time": "time"}
EXTERNAL_NAMESPACES = ("network", "pid")  # joined by path: dumped as external (runc)
_NOT_FILES = ("pipe:", "socket:", "anon_inode:")
_MAX_FD = 1 << 20


# --- errors ----------------------------------------------------------------------------------
class CheckpointError(EngineError):
    """Checkpoint/restore failed before or around criu (a missing image file, a namespace)."""


class CriuUnavailable(CheckpointError):
    """criu is missing or `criu check` fails on this machine; `reason` is criu's own."""

    def __init__(self, reason: str):
        super().__init__(f"criu is not usable here: {reason}")
        self.reason = reason


class CriuError(CheckpointError):
    """criu itself failed. `action` is "dump" or "restore"; the message names the image dir
    and the log file, and carries the first error criu logged."""

    def __init__(self, action: str, reason: str, image_dir: str, log_file: str,
                 status: int | None = None):
        super().__init__(f"criu {action} failed: {reason} (images: {image_dir}, "
                         f"log: {log_file})")
        self.action, self.reason, self.status = action, reason, status
        self.image_dir, self.log_file = image_dir, log_file

    def with_log(self, log_file: str) -> "CriuError":
        """The same error naming another copy of the log (the work dir may be removed)."""
        return CriuError(self.action, self.reason, self.image_dir, log_file, self.status)


# --- options and facts -----------------------------------------------------------------------
@dataclass
class CheckpointOptions:
    """containerd.runc.v1.CheckpointOptions, field for field."""
    exit: bool = False
    open_tcp: bool = False
    external_unix_sockets: bool = False
    terminal: bool = False
    file_locks: bool = False
    empty_namespaces: list[str] = field(default_factory=list)
    cgroups_mode: str = ""
    image_path: str = ""
    work_path: str = ""

    def behaviour(self) -> dict:
        """What a restore must repeat (saved in the image's metadata)."""
        return {"open_tcp": self.open_tcp, "external_unix_sockets": self.external_unix_sockets,
                "terminal": self.terminal, "file_locks": self.file_locks,
                "empty_namespaces": list(self.empty_namespaces),
                "cgroups_mode": self.cgroups_mode}


@dataclass
class DumpFacts:
    """What a dump plan needs from the host (DumpFacts.probe reads it)."""
    host: mounts.HostInfo = field(default_factory=mounts.HostInfo)  # cgroup hierarchies
    ns_inodes: dict[str, int] = field(default_factory=dict)  # namespace path -> inode
    masked_files: list[str] = field(default_factory=list)  # maskedPaths that are files
    descriptors: list[str] = field(default_factory=list)  # readlink of the init's fds 0-2
    external_stdio: dict[int, str] = field(default_factory=dict)  # fd -> "file[mnt:ino]"
    resolved: dict[str, str] = field(default_factory=dict)  # mount dest -> symlinks resolved
    config_file: str | None = None

    @classmethod
    def probe(cls, data: dict) -> "DumpFacts":
        spec = spec_mod.parse(data["config"])
        pid, rootfs = data["pid"], data["rootfs"]
        cgroup = ctrcgroup.from_state(data.get("cgroup"))
        host = mounts.HostInfo.probe(cgroups=any(m.type == "cgroup" for m in spec.mounts),
                                     cgroup_dirs=cgroup.dirs() if cgroup else ())
        facts = cls(host=host, config_file=_criu_config(spec.annotations, os.path.exists))
        for t in EXTERNAL_NAMESPACES:
            ns = spec.namespace(t)
            if ns is not None and ns.path:
                try:
                    facts.ns_inodes[ns.path] = os.stat(ns.path).st_ino
                except OSError as e:
                    raise CheckpointError(f"{t} namespace {ns.path}: {e.strerror}") from None
        for p in spec.linux.masked_paths:
            try:
                st = os.stat(f"/proc/{pid}/root/{p.lstrip('/')}")
            except OSError:
                continue  # missing: nothing is mounted there
            if not _is_dir(st.st_mode):
                facts.masked_files.append(p)
        facts.descriptors, facts.external_stdio = probe_stdio(pid)
        for dest, _ in bind_mounts(spec, rootfs, data["bundle"], host):
            facts.resolved[dest] = _resolve(rootfs, dest)
        return facts


@dataclass
class RestoreFacts:
    """What a restore plan needs: the paths prepared for criu and the image's metadata."""
    criu_root: str
    pidfile: str
    host: mounts.HostInfo = field(default_factory=mounts.HostInfo)
    descriptors: list[str] = field(default_factory=list)  # the image's descriptors.json
    external_stdio: dict[int, str] = field(default_factory=dict)  # from the image's metadata
    resolved: dict[str, str] = field(default_factory=dict)
    config_file: str | None = None


def _is_dir(mode: int) -> bool:
    return stat.S_ISDIR(mode)


def _resolve(rootfs: str, dest: str) -> str:
    """runc's SecureJoin(rootfs, dest) minus the rootfs: the path criu sees for a mount."""
    try:
        joined = paths.secure_join(rootfs, dest)
    except OSError:
        return dest
    rel = joined[len(rootfs.rstrip("/")):]
    return rel if rel.startswith("/") else dest


def _criu_config(annotations: dict, exists) -> str | None:
    """runc's rule: the org.criu.config annotation (empty: none), else its default file; the
    command line refuses a missing --config file, so only an existing one is passed."""
    if CRIU_CONFIG_ANNOTATION in annotations:
        path = annotations[CRIU_CONFIG_ANNOTATION]
        return path if path and exists(path) else None
    return DEFAULT_CRIU_CONFIG if exists(DEFAULT_CRIU_CONFIG) else None


def probe_stdio(pid: int, own_mounts: set[int] | None = None
                ) -> tuple[list[str], dict[int, str]]:
    """(descriptors, external keys) of pid's fds 0-2: readlink of each (runc's
    descriptors.json), and for each file on a mount outside the process's mount namespace
    (containerd's FIFOs, a log file) criu's external key file[<mnt_id hex>:<inode hex>].
    own_mounts: the mount ids that count as the process's own (default: its mountinfo)."""
    descriptors: list[str] = []
    external: dict[int, str] = {}
    if own_mounts is None:
        try:
            with open(f"/proc/{pid}/mountinfo") as f:
                own_mounts = {int(line.split()[0]) for line in f if line.strip()}
        except OSError:
            own_mounts = set()
    for fd in range(3):
        link = f"/proc/{pid}/fd/{fd}"
        try:
            target = os.readlink(link)
        except OSError:
            descriptors.append("")  # closed (or unreadable): nothing to inherit
            continue
        descriptors.append(target)
        if target.startswith(_NOT_FILES):
            continue
        mnt_id = _fdinfo_mnt_id(pid, fd)
        if mnt_id is None or mnt_id in own_mounts:
            continue
        try:
            ino = os.stat(link).st_ino
        except OSError:
            continue
        external[fd] = external_file_key(mnt_id, ino)
    return descriptors, external


def _fdinfo_mnt_id(pid: int, fd: int) -> int | None:
    try:
        with open(f"/proc/{pid}/fdinfo/{fd}") as f:
            for line in f:
                if line.startswith("mnt_id:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def external_file_key(mnt_id: int, inode: int) -> str:
    """criu's key for an external file: "file[%x:%" PRIx64 "]" (files-reg.c)."""
    return f"file[{mnt_id:x}:{inode:x}]"


# --- planning (pure) -------------------------------------------------------------------------
def validate(options: CheckpointOptions) -> None:
    if options.cgroups_mode and options.cgroups_mode not in CGROUPS_MODES:
        raise InvalidSpec("cgroups_mode", f"{options.cgroups_mode!r} is not one of "
                          f"{', '.join(CGROUPS_MODES)}")
    for i, ns in enumerate(options.empty_namespaces):
        if ns not in EMPTY_NAMESPACES:
            raise InvalidSpec(f"empty_namespaces[{i}]", f"namespace {ns!r} is not supported "
                              f"(only {', '.join(EMPTY_NAMESPACES)})")


def _dirs(options: CheckpointOptions) -> tuple[str, str]:
    if not options.image_path:
        raise InvalidSpec("image_path", "a checkpoint needs an image directory")
    if not options.image_path.startswith("/"):
        raise InvalidSpec("image_path", f"must be absolute, got {options.image_path!r}")
    if options.work_path and not options.work_path.startswith("/"):
        raise InvalidSpec("work_path", f"must be absolute, got {options.work_path!r}")
    return options.image_path, options.work_path or options.image_path


def behaviour_flags(options: CheckpointOptions) -> list[str]:
    """The flags dump and restore share."""
    argv = []
    if options.open_tcp:
        argv.append("--tcp-established")
    if options.external_unix_sockets:
        argv.append("--ext-unix-sk")
    if options.terminal:
        argv.append("--shell-job")
    if options.file_locks:
        argv.append("--file-locks")
    # runc always manages cgroups; the mode only when asked. getopt: optional arg needs "=".
    argv.append(f"--manage-cgroups={options.cgroups_mode}" if options.cgroups_mode
                else "--manage-cgroups")
    # runc always adds the network namespace to the empty-ns mask (it manages no network).
    empty = dict.fromkeys(["net"] + [EMPTY_NAMESPACES[n] for n in options.empty_namespaces])
    for ns in empty:
        argv += ["--empty-ns", ns]
    return argv


def bind_mounts(spec: spec_mod.Spec, rootfs: str, bundle: str,
                host: mounts.HostInfo) -> list[tuple[str, str]]:
    """(container destination, host source) of every bind mount the engine makes for this
    spec: the spec's own and the cgroup hierarchies' (cgroup v1, or v2 without a cgroup ns)."""
    out = []
    for op in mounts.plan_rootfs(spec, rootfs, bundle, host):
        if isinstance(op, mounts.PivotRoot):
            break
        if (isinstance(op, mounts.Mount) and op.flags & MS_BIND and op.source is not None
                and not op.host and not op.flags & MS_REMOUNT):
            out.append((op.target, op.source))
    return out


def _devices(spec: spec_mod.Spec, rootfs: str, bundle: str, host: mounts.HostInfo) -> list[str]:
    return [op.path for op in mounts.plan_rootfs(spec, rootfs, bundle, host)
            if isinstance(op, mounts.MakeDevice)]


def _freeze_cgroup(cgroup: dict | None) -> str | None:
    if not cgroup:
        return None
    if cgroup.get("version") == 2:
        return cgroup["path"]  # the v2 freezer is the cgroup itself (criu >= 3.14)
    return cgroup.get("paths", {}).get("freezer")


def _ns_key(ns_type: str) -> str:
    name = CRIU_NS_NAMES[ns_type]
    return f"extRoot{name.title()}NS"  # runc: "extRoot" + strings.Title(NsName) + "NS"


def _external(argv: list[str], seen: set, value: str) -> None:
    if value not in seen:
        seen.add(value)
        argv += ["--external", value]


def plan_dump(data: dict, options: CheckpointOptions, facts: DumpFacts | None = None, *,
              criu: str = "criu") -> list[str]:
    """The `criu dump` argv for the container whose state.json document is `data`."""
    validate(options)
    image_dir, work_dir = _dirs(options)
    if facts is None:
        facts = DumpFacts.probe(data)
    spec = spec_mod.parse(data["config"])
    rootfs, bundle = data["rootfs"], data["bundle"]
    argv = [criu, "dump", "--tree", str(data["pid"]), "--images-dir", image_dir,
            "--work-dir", work_dir, "--log-file", DUMP_LOG, "-v4", "--root", rootfs]
    if not options.exit:
        argv.append("--leave-running")
    argv += behaviour_flags(options)
    freezer = _freeze_cgroup(data.get("cgroup"))
    if freezer:
        argv += ["--freeze-cgroup", freezer]
    seen: set = set()
    for t in EXTERNAL_NAMESPACES:
        ns = spec.namespace(t)
        if ns is not None and ns.path:
            ino = facts.ns_inodes.get(ns.path)
            if ino is None:
                raise CheckpointError(f"{t} namespace {ns.path}: inode unknown")
            _external(argv, seen, f"{CRIU_NS_NAMES[t]}[{ino}]:{_ns_key(t)}")
    for dest, _source in bind_mounts(spec, rootfs, bundle, facts.host):
        d = facts.resolved.get(dest, dest)
        _external(argv, seen, f"mnt[{d}]:{d}")
    for p in facts.masked_files:
        _external(argv, seen, f"mnt[{p}]:/dev/null")
    for p in _devices(spec, rootfs, bundle, facts.host):
        _external(argv, seen, f"mnt[{p}]:{p}")
    for _fd, key in sorted(facts.external_stdio.items()):
        _external(argv, seen, key)
    if facts.config_file:
        argv += ["--config", facts.config_file]
    return argv


def inherit_keys(descriptors: list[str], external_stdio: dict[int, str]) -> dict[str, int]:
    """{criu key: container fd} of the stdio a restore must hand over: pipes (runc) and
    external files; a key shared by two fds (2>&1) is handed over once, from the first."""
    keys: dict[str, int] = {}
    for fd, d in enumerate(descriptors[:3]):
        key = external_stdio.get(fd) or (d if "pipe:" in d else None)
        if key and key not in keys:
            keys[key] = fd
    return keys


def restore_fd_layout(spec: spec_mod.Spec, descriptors: list[str],
                      external_stdio: dict[int, str]) -> tuple[dict[str, tuple[int, int]],
                                                               dict[str, int]]:
    """Which fd of criu carries what: ({stdio key: (criu fd, container fd)},
    {namespace type: criu fd}), numbered from 3 in a fixed order (0-2 are criu's own)."""
    n = 3
    stdio = {}
    for key, fd in inherit_keys(descriptors, external_stdio).items():
        stdio[key] = (n, fd)
        n += 1
    ns_fds = {}
    for t in EXTERNAL_NAMESPACES:
        ns = spec.namespace(t)
        if ns is not None and ns.path:
            ns_fds[t] = n
            n += 1
    return stdio, ns_fds


def cgroup_roots(cgroup: dict | None) -> list[str]:
    """--cgroup-root values for cgroup v1: each controller's path in its hierarchy (runc sets
    CgRoot from criu's /proc/<pid>/cgroup, criu having joined the container's cgroup)."""
    if not cgroup or cgroup.get("version") == 2:
        return []
    out = []
    for ctrl, d in sorted(cgroup.get("paths", {}).items()):
        mount = cgroup.get("mounts", {}).get(ctrl)
        if not ctrl or not mount:
            continue
        rel = posixpath.relpath(d, mount)
        out.append(f"{ctrl}:/" + ("" if rel == "." else rel))
    return out


def plan_restore(data: dict, options: CheckpointOptions, facts: RestoreFacts, *,
                 criu: str = "criu") -> list[str]:
    """The `criu restore` argv for a container about to be `data` (its state.json document;
    its pid is not known yet)."""
    validate(options)
    image_dir, work_dir = _dirs(options)
    spec = spec_mod.parse(data["config"])
    rootfs, bundle = data["rootfs"], data["bundle"]
    argv = [criu, "restore", "--images-dir", image_dir, "--work-dir", work_dir,
            "--log-file", RESTORE_LOG, "-v4", "--root", facts.criu_root,
            "--restore-detached", "--restore-sibling", "--pidfile", facts.pidfile,
            "--evasive-devices"]
    argv += behaviour_flags(options)
    for root in cgroup_roots(data.get("cgroup")):
        argv += ["--cgroup-root", root]
    stdio, ns_fds = restore_fd_layout(spec, facts.descriptors, facts.external_stdio)
    for t, fd in ns_fds.items():
        argv += ["--inherit-fd", f"fd[{fd}]:{_ns_key(t)}"]
    for ns in spec.linux.namespaces:
        if not ns.path or ns.type in EXTERNAL_NAMESPACES:
            continue
        if ns.type == "cgroup":
            raise CheckpointError("criu cannot restore into a joined cgroup namespace "
                                  f"({ns.path})")
        argv += ["--join-ns", f"{CRIU_NS_NAMES[ns.type]}:{ns.path}"]
    seen: set = set()
    for dest, source in bind_mounts(spec, rootfs, bundle, facts.host):
        _external(argv, seen, f"mnt[{facts.resolved.get(dest, dest)}]:{source}")
    if spec.linux.masked_paths:
        _external(argv, seen, "mnt[/dev/null]:/dev/null")
    for p in _devices(spec, rootfs, bundle, facts.host):
        _external(argv, seen, f"mnt[{p}]:{p}")
    for key, (fd, _container_fd) in stdio.items():
        argv += ["--inherit-fd", f"fd[{fd}]:{key}"]
    if facts.config_file:
        argv += ["--config", facts.config_file]
    return argv


# --- criu check ------------------------------------------------------------------------------
def check_criu(criu_path: str = "criu", timeout: float = CHECK_TIMEOUT) -> str | None:
    """None if `criu check` passes, else why not, in criu's words."""
    try:
        r = subprocess.run([criu_path, "check"], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=timeout)
    except FileNotFoundError:
        return f"{criu_path}: not found (is criu installed and on PATH?)"
    except PermissionError as e:
        return f"{criu_path}: {e.strerror}"
    except OSError as e:
        return f"{criu_path}: {e.strerror or e}"
    except subprocess.TimeoutExpired:
        return f"`{criu_path} check` did not finish within {timeout:g}s"
    if r.returncode == 0:
        return None
    text = (r.stderr or b"").decode(errors="replace") + (r.stdout or b"").decode(errors="replace")
    lines = list(dict.fromkeys(line.strip() for line in text.splitlines() if line.strip()))
    detail = "; ".join(lines) if lines else "no output"
    return f"`{criu_path} check` failed (exit status {r.returncode}): {detail}"


def require_criu(criu_path: str = "criu") -> None:
    reason = check_criu(criu_path)
    if reason is not None:
        raise CriuUnavailable(reason)


# --- running criu ----------------------------------------------------------------------------
@dataclass
class CriuJob:
    """One planned criu run. fds: {fd number criu gets: our fd} besides 0-2 (criu's stdin and
    stdout are /dev/null, its stderr goes to stderr_file). cgroup: a Manager criu joins before
    it execs (restore: the restored tasks are born in it)."""
    action: str
    argv: list[str]
    image_dir: str
    work_dir: str
    fds: dict[int, int] = field(default_factory=dict)
    cgroup: object | None = None
    pid: int | None = None

    @property
    def log_file(self) -> str:
        return os.path.join(self.work_dir, DUMP_LOG if self.action == "dump" else RESTORE_LOG)

    @property
    def stderr_file(self) -> str:
        return os.path.join(self.work_dir, f"criu-{self.action}.stderr")


def spawn(job: CriuJob) -> int:
    """fork + exec criu; returns its pid (the caller reaps it: wait() or its own reaper)."""
    err = os.open(job.stderr_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        pid = os.fork()
        if pid == 0:
            _exec_criu(job, err)  # never returns
    finally:
        os.close(err)
    job.pid = pid
    return pid


def _exec_criu(job: CriuJob, err: int) -> None:
    code = 127
    try:
        signal.set_wakeup_fd(-1)
        for sig in signal.valid_signals():
            if sig not in (signal.SIGKILL, signal.SIGSTOP):
                try:
                    signal.signal(sig, signal.SIG_DFL)
                except (OSError, ValueError):
                    pass
        os.dup2(err, 2)
        ctrcgroup.join(job.cgroup)
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        targets = {0: null, 1: null, 2: 2, **job.fds}
        top = max(targets) + 1
        # Copy every source above all targets first, so no dup2 overwrites a source not yet used.
        high = {t: fcntl.fcntl(src, fcntl.F_DUPFD_CLOEXEC, top) for t, src in targets.items()}
        for t, src in high.items():
            os.dup2(src, t)  # the copy at t is inheritable
        os.closerange(top, _MAX_FD)  # targets are 0..top-1: nothing else of ours reaches criu
        os.execvp(job.argv[0], job.argv)
    except BaseException as e:  # noqa: BLE001 - reported on criu's stderr file
        try:
            os.write(2, f"pyshim: cannot run {job.argv[0]}: {e}\n".encode(errors="replace"))
        except OSError:
            pass
    finally:
        os._exit(code)


def wait(job: CriuJob, timeout: float) -> int:
    """Wait (bounded) for criu and reap it; its exit code (128+N for a signal). At the
    deadline it is SIGKILLed and a CriuError is raised."""
    pid = job.pid
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        fd = None
    try:
        if fd is not None and not proc.wait_exit(fd, timeout):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise timeout_error(job, timeout)
    finally:
        if fd is not None:
            os.close(fd)
    _, status = os.waitpid(pid, 0)
    return exit_code(status)


def exit_code(wait_status: int) -> int:
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code


def timeout_error(job: CriuJob, timeout: float) -> CriuError:
    return CriuError(job.action, f"criu did not finish within {timeout:g}s (killed)",
                     job.image_dir, job.log_file)


def failure_reason(job: CriuJob, status: int | None) -> str:
    """The first error criu logged (criu's first "Error (" line is the cause, later ones
    its consequences), else the last line of its stderr, with the exit status."""
    texts = []
    for path in (job.log_file, job.stderr_file):
        try:
            with open(path, errors="replace") as f:
                texts.append([line.strip() for line in f.read().splitlines() if line.strip()])
        except OSError:
            texts.append([])
    log_lines, stderr_lines = texts
    first_error = next((line for line in log_lines + stderr_lines if "Error (" in line), None)
    detail = first_error or (stderr_lines or log_lines or [None])[-1]
    what = f"exit status {status}" if status is not None else "no exit status"
    return f"{what}: {detail}" if detail else what


def _write_json(path: str, value, mode: int = 0o600) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "w") as f:
        json.dump(value, f)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# --- checkpoint ------------------------------------------------------------------------------
def prepare_dump(container, options: CheckpointOptions, *, criu: str = "criu",
                 facts: DumpFacts | None = None) -> CriuJob:
    """Check the container can be dumped, make the dirs, plan, and write the image's metadata
    (descriptors.json, config.json, pyshim-checkpoint.json) before criu runs, as runc."""
    status = container.status()
    if status not in ("running", "paused"):
        raise InvalidState(f"cannot checkpoint a {status} container", container.id, status)
    validate(options)
    image_dir, work_dir = _dirs(options)
    data = container.full_state()
    if facts is None:
        facts = DumpFacts.probe(data)
    argv = plan_dump(data, options, facts, criu=criu)
    os.makedirs(image_dir, 0o700, exist_ok=True)
    os.makedirs(work_dir, 0o700, exist_ok=True)
    _remove(os.path.join(work_dir, DUMP_LOG))
    _write_json(os.path.join(image_dir, DESCRIPTORS), list(facts.descriptors))
    _write_json(os.path.join(image_dir, CONFIG), data["config"])
    _write_json(os.path.join(image_dir, METADATA), metadata(data, options, facts))
    return CriuJob("dump", argv, image_dir, work_dir)


def metadata(data: dict, options: CheckpointOptions, facts: DumpFacts) -> dict:
    return {"version": 1, "id": data["id"], "pid": data["pid"], "rootfs": data["rootfs"],
            "options": options.behaviour(),
            "external_stdio": {str(fd): key for fd, key in sorted(facts.external_stdio.items())}}


def finish_dump(job: CriuJob, status: int | None) -> None:
    if status != 0:
        raise CriuError("dump", failure_reason(job, status), job.image_dir, job.log_file, status)


def checkpoint(container, options: CheckpointOptions, *, criu: str = "criu",
               timeout: float = DUMP_TIMEOUT, facts: DumpFacts | None = None) -> CriuJob:
    """Dump the container into options.image_path (synchronously, bounded by timeout). Without
    options.exit it keeps running; with it criu kills it (the caller reaps the init)."""
    job = prepare_dump(container, options, criu=criu, facts=facts)
    spawn(job)
    finish_dump(job, wait(job, timeout))
    return job


# --- restore ---------------------------------------------------------------------------------
def read_image(image_dir: str) -> tuple[list[str], dict[int, str], CheckpointOptions | None]:
    """(descriptors, external stdio keys, the options it was dumped with) of an image dir; a
    runc image has no pyshim metadata (None)."""
    try:
        with open(os.path.join(image_dir, DESCRIPTORS)) as f:
            descriptors = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{image_dir}: no {DESCRIPTORS}: not a container checkpoint "
                              "image") from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{image_dir}/{DESCRIPTORS}: {e}") from None
    if not isinstance(descriptors, list) or not all(isinstance(d, str) for d in descriptors):
        raise CheckpointError(f"{image_dir}/{DESCRIPTORS}: not a list of strings")
    try:
        with open(os.path.join(image_dir, METADATA)) as f:
            meta = json.load(f)
    except FileNotFoundError:
        return descriptors, {}, None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{image_dir}/{METADATA}: {e}") from None
    external = {int(fd): key for fd, key in meta.get("external_stdio", {}).items()}
    saved = CheckpointOptions(**{k: v for k, v in meta.get("options", {}).items()
                                 if k in CheckpointOptions.__dataclass_fields__})
    return descriptors, external, saved


@dataclass
class RestoreJob(CriuJob):
    state_dir: str = ""
    data: dict = field(default_factory=dict)
    pidfile: str = ""
    criu_root: str = ""
    mounted: list[str] = field(default_factory=list)  # unmounted (detached) after criu, last first
    owned_fds: list[int] = field(default_factory=list)
    sys: object = None
    timeout: float = 10.0


def prepare_restore(engine, container_id: str, bundle: str, image_dir: str, stdio=None,
                    options: CheckpointOptions | None = None, *, criu: str = "criu",
                    work_dir: str | None = None) -> RestoreJob:
    """Everything before criu runs: the state dir, the cgroup (created and set, as at create),
    the rootfs bind-mounted on <state>/criu-root with its mount points made, the fds criu
    inherits, the plan. On failure nothing is left behind. stdio: runtime.container.Stdio."""
    from . import container as container_mod  # the engine's create-time planning

    state_dir = engine._dir(container_id)
    if os.path.lexists(state_dir):
        raise ContainerExists(container_id)
    bundle = os.path.abspath(bundle)
    if not image_dir.startswith("/"):
        raise InvalidSpec("checkpoint", f"the image dir must be absolute, got {image_dir!r}")
    descriptors, external, saved = read_image(image_dir)
    opts = options or saved or CheckpointOptions()
    opts = CheckpointOptions(**{**asdict(opts), "image_path": image_dir,
                                "work_path": work_dir or image_dir, "exit": False})
    validate(opts)
    cfg = container_mod._plan(container_id, bundle, state_dir)
    data = container_mod._state_data(container_id, bundle, cfg, 0, 0)
    os.makedirs(engine.root, 0o711, exist_ok=True)
    try:
        os.mkdir(state_dir, 0o711)
    except FileExistsError:
        raise ContainerExists(container_id) from None
    job = RestoreJob("restore", [], image_dir, opts.work_path, state_dir=state_dir, data=data,
                     pidfile=os.path.join(state_dir, RESTORE_PIDFILE),
                     criu_root=os.path.join(state_dir, CRIU_ROOT), sys=engine._sys,
                     timeout=engine._timeout)
    try:
        os.makedirs(job.work_dir, 0o700, exist_ok=True)
        _remove(job.log_file)
        ctrcgroup.setup(cfg.cgroup, cfg.spec)
        job.cgroup = cfg.cgroup
        host = mounts.HostInfo.probe(cgroups=any(m.type == "cgroup" for m in cfg.spec.mounts),
                                     cgroup_dirs=cfg.cgroup.dirs() if cfg.cgroup else ())
        _mount_criu_root(job, cfg.rootfs)
        _prepare_mountpoints(job, cfg.spec, cfg.rootfs, bundle, host)
        stdio_fds, ns_fds = restore_fd_layout(cfg.spec, descriptors, external)
        job.fds = _inherited_fds(job, cfg.spec, stdio, stdio_fds, ns_fds)
        facts = RestoreFacts(
            criu_root=job.criu_root, pidfile=job.pidfile, host=host, descriptors=descriptors,
            external_stdio=external, config_file=_criu_config(cfg.spec.annotations,
                                                              os.path.exists),
            resolved={d: _resolve(cfg.rootfs, d)
                      for d, _ in bind_mounts(cfg.spec, cfg.rootfs, bundle, host)})
        job.argv = plan_restore(data, opts, facts, criu=criu)
    except BaseException:
        abort_restore(job)
        raise
    return job


def _mount_criu_root(job: RestoreJob, rootfs: str) -> None:
    os.mkdir(job.criu_root, 0o755)
    job.sys.mount(rootfs, job.criu_root, None, MS_BIND | MS_REC)
    job.mounted.append(job.criu_root)
    job.criu_root = os.path.realpath(job.criu_root)


def _prepare_mountpoints(job: RestoreJob, spec, rootfs: str, bundle: str, host) -> None:
    """runc's prepareCriuRestoreMounts: make the mount points the create made (criu restores
    the tmpfs contents itself, so none below a tmpfs), and bind the bind mounts for the time
    of the restore so mount points inside them exist too (runc issue 2748)."""
    tmpfs = [posixpath.normpath(m.destination) for m in spec.mounts if m.type == "tmpfs"]
    binds = dict(bind_mounts(spec, rootfs, bundle, host))
    for m in spec.mounts:
        dest = posixpath.normpath(m.destination)
        if m.type == "cgroup" or any(dest.startswith(t.rstrip("/") + "/") for t in tmpfs):
            continue  # cgroup: v1 is a tmpfs criu restores, v2 appears with /sys (runc)
        target = paths.secure_join(rootfs, dest)
        source = binds.get(dest)
        if source is not None and not os.path.isdir(source):
            os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
            if not os.path.lexists(target):
                os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o755))
        else:
            os.makedirs(target, 0o755, exist_ok=True)
        if source is not None:
            job.sys.mount(source, target, None, MS_BIND | MS_REC)
            job.mounted.append(target)


def _inherited_fds(job: RestoreJob, spec, stdio, stdio_fds: dict, ns_fds: dict) -> dict[int, int]:
    fds: dict[int, int] = {}
    null = None
    given = (stdio.stdin, stdio.stdout, stdio.stderr) if stdio is not None else (None,) * 3
    for _key, (criu_fd, container_fd) in stdio_fds.items():
        src = given[container_fd]
        if src is None:
            if null is None:
                null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
                job.owned_fds.append(null)
            src = null
        fds[criu_fd] = src
    for t, criu_fd in ns_fds.items():
        path = spec.namespace(t).path
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise CheckpointError(f"the {t} namespace to restore into, {path}, cannot be "
                                  f"opened: {e.strerror}") from None
        job.owned_fds.append(fd)
        fds[criu_fd] = fd
    return fds


def _release(job: RestoreJob) -> None:
    """What only criu needed: its fds, the temporary mounts, the criu-root dir."""
    for fd in job.owned_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    job.owned_fds.clear()
    for target in reversed(job.mounted):
        try:
            job.sys.umount2(target, MNT_DETACH)
        except OSError:
            pass
    job.mounted.clear()
    try:
        os.rmdir(os.path.join(job.state_dir, CRIU_ROOT))
    except OSError:
        pass


def abort_restore(job: RestoreJob) -> None:
    """Undo prepare_restore (and whatever a failed criu left in the cgroup)."""
    _release(job)
    m = job.cgroup
    if m is not None:
        try:
            if m.pids():
                m.kill_all(signal.SIGKILL)
        except (OSError, EngineError):
            pass
        ctrcgroup.destroy_quietly(m)
    shutil.rmtree(job.state_dir, ignore_errors=True)


def finish_restore(job: RestoreJob, status: int | None):
    """After criu exited with `status`: release what it needed; on success record the restored
    init (pid from the pidfile) in state.json and return its runtime.container.Container."""
    from .container import Container

    _release(job)
    if status != 0:
        abort_restore(job)
        raise CriuError("restore", failure_reason(job, status), job.image_dir, job.log_file,
                        status)
    try:
        with open(job.pidfile) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError) as e:
        abort_restore(job)
        raise CriuError("restore", f"no pid in {job.pidfile}: {e}", job.image_dir,
                        job.log_file, status) from None
    # A restored init that already exited (and was reaped) has no start time: recorded as 0,
    # it reads as stopped, and its exit reaches the caller's reaper like any other.
    start = proc.start_time(pid) or 0
    _thaw(job.cgroup)
    data = dict(job.data, pid=pid, pidStartTime=start, created=_now())
    try:
        _remove(job.pidfile)
        state.write(job.state_dir, data)
    except BaseException:
        abort_restore(job)
        raise
    return Container(job.state_dir, data, job.sys, job.timeout)


def _thaw(m) -> None:
    """A container checkpointed while paused (containerd pauses it around every checkpoint)
    must come back running: Start means running."""
    try:
        if m is not None and m.freezer_state() == "FROZEN":
            m.thaw()
    except (OSError, EngineError):
        pass


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def restore(engine, container_id: str, bundle: str, image_dir: str, stdio=None,
            options: CheckpointOptions | None = None, *, criu: str = "criu",
            timeout: float = RESTORE_TIMEOUT, work_dir: str | None = None):
    """Restore a checkpoint as container `container_id` of `engine` (synchronously); returns its
    runtime.container.Container, running. The restored init is the caller's child."""
    job = prepare_restore(engine, container_id, bundle, image_dir, stdio, options, criu=criu,
                          work_dir=work_dir)
    try:
        spawn(job)
        status = wait(job, timeout)
    except BaseException:
        abort_restore(job)
        raise
    return finish_restore(job, status)
